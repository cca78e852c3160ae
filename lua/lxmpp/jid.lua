-- lxmpp.jid - XMPP addresses: localpart@domainpart/resourcepart.
--
-- Structure and limits follow RFC 7622; the parts are prepared with the
-- RFC 6122 stringprep profiles (Nodeprep, Nameprep, Resourceprep) through
-- libidn (csrc/idn.c), as Prosody does.
--
--   split(s)            node, domain, resource (absent parts nil), or nil
--   node(s) domain(s) resource(s) bare(s)
--                       one part (or node@domain), or nil for an invalid JID
--   join(node, domain, resource)
--                       the JID string, or nil, message if the parts do not
--                       make a JID that splits back into exactly them
--   prep(s [, strict])  the normalized JID, or nil, message
--   prepped_split(s [, strict])
--                       the normalized node, domain, resource, or nil
--   equal(a, b)         true if both are valid and prepare to the same JID
--
-- split and the functions built on it are structural, like Prosody's: they
-- reject an empty part, an '@' in the domainpart, a part longer than 1023
-- bytes, invalid UTF-8 and control characters, so an invalid JID never
-- parses partially, but they do not stringprep. Prepare with prep (or
-- compare with equal) before any comparison or authorization decision.
--
-- prep prepares each part (the result of each is also limited to 1023
-- bytes). The domainpart: the IDNA dots U+3002, U+FF0E and U+FF61 are read
-- as "."; one trailing "." is dropped; an IP literal ("[2001:db8::1]",
-- lowercased) or a dotted-quad IPv4 address is kept as it is; anything else
-- must pass Nameprep and IDNA ToASCII with STD3 rules (labels of 1..63
-- characters, at most 253 in all) and is returned in its Unicode form, with
-- A-labels converted to U-labels (RFC 7622 section 3.2), so
-- "Bücher.example" and "xn--bcher-kva.example" both give "bücher.example".
-- A domain whose last label is all digits must be a valid IPv4 address.
--
-- strict = true refuses code points unassigned in Unicode 3.2 (stringprep's
-- rule for stored strings): use it for identities being created, such as an
-- account at registration. The default (a query) accepts them, so newer
-- characters such as emoji in MUC nicknames can be addressed. Whenever the
-- strict form exists it equals the default form.
--
-- Misuse (an argument that is not a string) raises an error.

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"

local type, error, tostring = type, error, tostring
local find, sub, byte, gsub, match, gmatch, lower, format =
  string.find, string.sub, string.byte, string.gsub, string.match,
  string.gmatch, string.lower, string.format
local utf8_len = compat.utf8_len
local tonumber = tonumber

local nodeprep, nameprep, resourceprep = core.nodeprep, core.nameprep, core.resourceprep
local to_ascii, to_unicode = core.to_ascii, core.to_unicode

local _ENV = nil -- luacheck: ignore 211/_ENV
-- luacheck: std none

local MAX_PART = 1023 -- bytes, per part (RFC 7622 section 3.1)
local MAX_DOMAIN_ASCII = 253 -- bytes of the ASCII form (RFC 1035)

-- Raises a "bad argument" error at the caller of the public function.
local function check_string(s, n, fname)
  if type(s) ~= "string" then
    error(format("bad argument #%d to '%s' (string expected, got %s)", n, fname, type(s)), 3)
  end
end

local function check_opt_string(s, n, fname)
  if s ~= nil and type(s) ~= "string" then
    error(format("bad argument #%d to '%s' (string or nil expected, got %s)", n, fname, type(s)), 3)
  end
end

local function check_opt_boolean(b, n, fname)
  if b ~= nil and type(b) ~= "boolean" then
    error(format("bad argument #%d to '%s' (boolean or nil expected, got %s)", n, fname, type(b)), 3)
  end
end

-- The structural parse behind split: node, domain, resource, or
-- nil, nil, nil, message.
local function parse(s)
  local head, resource = s, nil
  local slash = find(s, "/", 1, true)
  if slash then
    head, resource = sub(s, 1, slash - 1), sub(s, slash + 1)
    if resource == "" then return nil, nil, nil, "empty resourcepart" end
  end
  local node, domain = nil, head
  local at = find(head, "@", 1, true)
  if at then
    node, domain = sub(head, 1, at - 1), sub(head, at + 1)
    if node == "" then return nil, nil, nil, "empty localpart" end
  end
  if domain == "" then return nil, nil, nil, "empty domainpart" end
  if find(domain, "@", 1, true) then return nil, nil, nil, "'@' in the domainpart" end
  if node and #node > MAX_PART then return nil, nil, nil, "localpart too long" end
  if #domain > MAX_PART then return nil, nil, nil, "domainpart too long" end
  if resource and #resource > MAX_PART then return nil, nil, nil, "resourcepart too long" end
  if not utf8_len(s) then return nil, nil, nil, "invalid UTF-8" end
  if find(s, "[%z\1-\31\127]") then return nil, nil, nil, "control character" end  -- (%z: NUL, on 5.1 too)
  -- Empty labels ("a..b", ".a", "."); one trailing dot is the DNS root.
  local labels = domain
  if sub(labels, -1) == "." then labels = sub(labels, 1, -2) end
  if labels == "" or sub(labels, 1, 1) == "." or sub(labels, -1) == "." or find(labels, "..", 1, true) then
    return nil, nil, nil, "empty label in the domainpart"
  end
  return node, domain, resource
end

-- The string form of parts already known to be valid.
local function concat(node, domain, resource)
  local s = domain
  if node then s = node .. "@" .. s end
  if resource then s = s .. "/" .. resource end
  return s
end

local function valid_ipv4(s)
  local octets = { match(s, "^(%d+)%.(%d+)%.(%d+)%.(%d+)$") }
  if #octets ~= 4 then return false end
  for i = 1, 4 do
    local octet = octets[i]
    -- no leading zeros: "010" would be octal to some resolvers
    if #octet > 3 or (#octet > 1 and byte(octet, 1) == 48) or tonumber(octet) > 255 then
      return false
    end
  end
  return true
end

-- Hex groups of s ("", or h(:h)* with 1..4 hex digits each), or nil.
local function hex_groups(s)
  if s == "" then return 0 end
  local n = 0
  for group in gmatch(s .. ":", "([^:]*):") do
    if not match(group, "^%x%x?%x?%x?$") then return nil end
    n = n + 1
  end
  return n
end

-- RFC 4291 section 2.2 text forms, without zone identifiers.
local function valid_ipv6(a)
  if find(a, ".", 1, true) then -- a trailing IPv4 part counts as two groups
    local head, v4 = match(a, "^(.*:)([^:]*)$")
    if not head or not valid_ipv4(v4) then return false end
    a = head .. "0:0"
  end
  if find(a, ":::", 1, true) then return false end
  local left, right = match(a, "^(.*)::(.*)$")
  if left then
    if find(left, "::", 1, true) or find(right, "::", 1, true) then return false end
    local l, r = hex_groups(left), hex_groups(right)
    return l ~= nil and r ~= nil and l + r <= 7
  end
  return hex_groups(a) == 8
end

-- The prepared domainpart, or nil, message.
local function prep_domain(domain, strict)
  domain = gsub(domain, "\227\128\130", ".") -- U+3002 IDEOGRAPHIC FULL STOP
  domain = gsub(domain, "\239\188\142", ".") -- U+FF0E FULLWIDTH FULL STOP
  domain = gsub(domain, "\239\189\161", ".") -- U+FF61 HALFWIDTH IDEOGRAPHIC FULL STOP
  if sub(domain, -1) == "." then domain = sub(domain, 1, -2) end
  if domain == "" then return nil, "empty domainpart" end
  if byte(domain, 1) == 91 then -- "["
    local addr = match(domain, "^%[([%x:.]+)%]$")
    if not addr or not valid_ipv6(addr) then return nil, "invalid IP literal in the domainpart" end
    return lower(domain)
  end
  local prepped, err = nameprep(domain, strict)
  if not prepped then return nil, "invalid domainpart: " .. err end
  -- An all-numeric last label (RFC 1123 section 2.1): an IPv4 address, or
  -- nothing ("1.2.3", "010.0.0.1" and "256.1.1.1" would be read as
  -- addresses, differently, by different resolvers).
  if find(prepped, "^%d+$", (find(prepped, "[^.]*$"))) then
    if valid_ipv4(prepped) then return prepped end
    return nil, "numeric top-level label that is not an IPv4 address"
  end
  local ascii
  ascii, err = to_ascii(prepped, strict)
  if not ascii then return nil, "invalid domainpart: " .. err end
  if #ascii > MAX_DOMAIN_ASCII then return nil, "domainpart too long" end
  local unicode
  unicode, err = to_unicode(ascii, strict)
  if not unicode then return nil, "invalid domainpart: " .. err end
  if #unicode > MAX_PART then return nil, "domainpart too long" end
  return unicode
end

local function prep_part(fn, part, strict, what)
  local prepped, err = fn(part, strict)
  if not prepped then return nil, "invalid " .. what .. ": " .. tostring(err) end
  if prepped == "" then return nil, "empty " .. what end
  if #prepped > MAX_PART then return nil, what .. " too long" end
  return prepped
end

-- node, domain, resource prepared, or nil, nil, nil, message.
local function prep_parts_uncached(s, strict)
  local node, domain, resource, err = parse(s)
  if not domain then return nil, nil, nil, err end
  if node then
    node, err = prep_part(nodeprep, node, strict, "localpart")
    if not node then return nil, nil, nil, err end
  end
  domain, err = prep_domain(domain, strict)
  if not domain then return nil, nil, nil, err end
  if resource then
    resource, err = prep_part(resourceprep, resource, strict, "resourcepart")
    if not resource then return nil, nil, nil, err end
  end
  return node, domain, resource
end

-- Preparation (stringprep and IDNA in libidn) costs microseconds, and the
-- same few JIDs are prepared again and again (every plugin looks at who
-- sent each stanza), so results are remembered: per mode, up to
-- CACHE_MAX inputs, the whole cache dropped when it is full (hostile input
-- can only make it forget, never grow). Results are strings, so sharing
-- them is safe.
local CACHE_MAX = 512
local cache = { [false] = {}, [true] = {} }
local cached = { [false] = 0, [true] = 0 }

local function prep_parts(s, strict)
  strict = strict == true
  local c = cache[strict]
  local hit = c[s]
  if hit then return hit[1], hit[2], hit[3], hit[4] end
  local node, domain, resource, err = prep_parts_uncached(s, strict)
  if cached[strict] >= CACHE_MAX then
    c = {}
    cache[strict], cached[strict] = c, 0
  end
  c[s] = { node, domain, resource, err }
  cached[strict] = cached[strict] + 1
  return node, domain, resource, err
end

local function split(s)
  check_string(s, 1, "split")
  local node, domain, resource = parse(s)
  if not domain then return nil end
  return node, domain, resource
end

local function node_of(s)
  check_string(s, 1, "node")
  local node, domain = parse(s)
  if not domain then return nil end
  return node
end

local function domain_of(s)
  check_string(s, 1, "domain")
  local _, domain = parse(s)
  return domain
end

local function resource_of(s)
  check_string(s, 1, "resource")
  local _, domain, resource = parse(s)
  if not domain then return nil end
  return resource
end

local function bare(s)
  check_string(s, 1, "bare")
  local node, domain = parse(s)
  if not domain then return nil end
  return concat(node, domain, nil)
end

local function join(node, domain, resource)
  check_opt_string(node, 1, "join")
  check_string(domain, 2, "join")
  check_opt_string(resource, 3, "join")
  local s = concat(node, domain, resource)
  local n, d, r, err = parse(s)
  if not d then return nil, err end
  if n ~= node or d ~= domain or r ~= resource then
    return nil, "the parts do not form a JID"
  end
  return s
end

local function prep(s, strict)
  check_string(s, 1, "prep")
  check_opt_boolean(strict, 2, "prep")
  local node, domain, resource, err = prep_parts(s, strict)
  if not domain then return nil, err end
  return concat(node, domain, resource)
end

local function prepped_split(s, strict)
  check_string(s, 1, "prepped_split")
  check_opt_boolean(strict, 2, "prepped_split")
  local node, domain, resource = prep_parts(s, strict)
  if not domain then return nil end
  return node, domain, resource
end

local function equal(a, b)
  check_string(a, 1, "equal")
  check_string(b, 2, "equal")
  local pa = prep(a)
  return pa ~= nil and pa == prep(b)
end

return {
  split = split;
  node = node_of;
  domain = domain_of;
  resource = resource_of;
  bare = bare;
  join = join;
  prep = prep;
  prepped_split = prepped_split;
  equal = equal;
}
