-- XEP-0115 entity capabilities: our verification string (§5.1, with the
-- data-form rules of §5.4), sent in every available presence we broadcast,
-- and others' capabilities, learned from their presence: a ver we have not
-- seen is asked for once (disco#info on node#ver), its hash recomputed, and
-- the answer cached by ver only when it matches; a malformed or lying answer
-- is never cached.
--
--   caps.ver(query [, "sha-1"]) -> ver | nil, message   (a disco#info <query/>)
--   c:caps_info(full_jid) -> info | nil                 (verified, cached)
--   c:on("caps", function(from, info) end)

local core = require "lxmpp.core"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local task = require "lxmpp.task"
local session = require "lxmpp.session"
local disco = require "lxmpp.plugins.disco"
local bounded = require "lxmpp.bounded"

local type, error, ipairs, pairs, tostring, table_sort, concat =
  type, error, ipairs, pairs, tostring, table.sort, table.concat

local NS_CAPS = "http://jabber.org/protocol/caps"
local NS_FORMS = "jabber:x:data"
local DEFAULT_NODE = "https://luarocks.org/modules/lxmpp/lxmpp"

local M = { NS_CAPS = NS_CAPS }

local HASHES = { ["sha-1"] = "sha1", ["sha-256"] = "sha256", ["sha-512"] = "sha512" }

local MAX_CACHE = 1024       -- verified vers kept (process-wide: a ver names one answer)
local MAX_INFLIGHT = 16      -- verifications running at once, per client

session.add_event("caps")

local function less_identity(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  if a[2] ~= b[2] then return a[2] < b[2] end
  return a[3] < b[3]
end

local function field_values(field)
  local values = {}
  for v in field:childtags("value") do values[#values + 1] = v:get_text() or "" end
  return values
end

-- The extension forms' part of S, or nil, message when §5.4 says to ignore
-- the whole answer (two forms with one FORM_TYPE, a FORM_TYPE with two
-- different values). Forms without a hidden FORM_TYPE are skipped.
local function forms_string(query)
  local list, seen = {}, {}
  for x in query:childtags("x", NS_FORMS) do
    local form_type, hidden, fields = nil, false, {}
    for f in x:childtags("field") do
      local var = f.attr.var
      if var == "FORM_TYPE" then
        local vals = field_values(f)
        for i = 2, #vals do
          if vals[i] ~= vals[1] then return nil, "a FORM_TYPE with different values" end
        end
        form_type, hidden = vals[1], f.attr.type == "hidden"
      elseif var then
        local vals = field_values(f)
        table_sort(vals)
        fields[#fields + 1] = { var = var, values = vals }
      end
    end
    if form_type and hidden then
      if seen[form_type] then return nil, "two extension forms with FORM_TYPE " .. form_type end
      seen[form_type] = true
      table_sort(fields, function(a, b) return a.var < b.var end)
      local parts = { form_type, "<" }
      for _, f in ipairs(fields) do
        parts[#parts + 1] = f.var .. "<"
        for _, v in ipairs(f.values) do parts[#parts + 1] = v .. "<" end
      end
      list[#list + 1] = { form_type = form_type, s = concat(parts) }
    end
  end
  table_sort(list, function(a, b) return a.form_type < b.form_type end)
  local out = {}
  for i, f in ipairs(list) do out[i] = f.s end
  return concat(out)
end

--- caps.string(query) -> S (§5.1) | nil, message (§5.4: do not cache)
function M.string(query)
  if not st.is_stanza(query) then error("caps.string: expected a disco#info <query/>", 2) end
  local ids, seen = {}, {}
  for id in query:childtags("identity") do
    local a = id.attr
    local t = { a.category or "", a.type or "", a["xml:lang"] or "", a.name or "" }
    local key = concat(t, "/")
    if seen[key] then return nil, "a duplicate identity " .. key end
    seen[key] = true
    ids[#ids + 1] = t
  end
  table_sort(ids, less_identity)
  local parts = {}
  for _, t in ipairs(ids) do parts[#parts + 1] = concat(t, "/") .. "<" end
  local features, fseen = {}, {}
  for f in query:childtags("feature") do
    local var = f.attr.var or ""
    if fseen[var] then return nil, "a duplicate feature " .. var end
    fseen[var] = true
    features[#features + 1] = var
  end
  table_sort(features)
  for _, v in ipairs(features) do parts[#parts + 1] = v .. "<" end
  local fs, msg = forms_string(query)
  if not fs then return nil, msg end
  parts[#parts + 1] = fs
  return concat(parts)
end

--- caps.ver(query [, hash]) -> the verification string | nil, message
function M.ver(query, hash)
  local algo = HASHES[hash or "sha-1"]
  if not algo then error("caps.ver: unsupported hash " .. tostring(hash), 2) end
  local s, msg = M.string(query)
  if not s then return nil, msg end
  return core.base64_encode(core.hash(algo, s))
end

-- process-wide cache of verified answers: ver -> info
local cache = bounded.new(MAX_CACHE)
local function cache_put(key, info)
  if cache:get(key) == nil then cache:put(key, info) end
end

--- caps.cached(hash, ver) -> info | nil (for specs and tools)
function M.cached(hash, ver) return cache:get((hash or "sha-1") .. " " .. tostring(ver)) end

-- A ver as the XEP makes it: base64 of a digest of the hash's length.
local function well_formed(hash, ver)
  local raw = type(ver) == "string" and #ver <= 128 and core.base64_decode(ver)
  if not raw then return false end
  local sizes = { ["sha-1"] = 20, ["sha-256"] = 32, ["sha-512"] = 64 }
  return #raw == sizes[hash] and core.base64_encode(raw) == ver
end

-- The plugin object, c.caps (docs/api.md "Plugins"): .node is the node we
-- announce (opts.caps_node or lxmpp's), .of maps full JIDs to the "hash
-- ver" they announced, .inflight the vers being verified.
M.forwards = { caps_ver = "ver_of_own", caps_info = "info" }
M.events = { "caps" }

--- c.caps:ver_of_own() -> our current ver (sha-1) (c:caps_ver)
function M:ver_of_own()
  return (M.ver(disco.info_query(self.client:own_info())))
end

--- c.caps:info(full_jid) -> the verified info that jid announced, or nil
function M:info(who)
  if type(who) ~= "string" then error("caps_info: expected a JID string", 2) end
  local j = jid.prep(who)
  local key = j and self.of[j]
  return key and cache:get(key) or nil
end

-- verifies one announcement (in its own task) and caches what matches
local function verify(self, from, hash, node, ver)
  local key = hash .. " " .. ver
  local c = self.client
  if self.inflight[key] then return end
  local n = 0
  for _ in pairs(self.inflight) do n = n + 1 end
  if n >= MAX_INFLIGHT then return end
  self.inflight[key] = true
  task.spawn(function()
    local info, q = c:disco_info(from, node .. "#" .. ver)
    self.inflight[key] = nil
    if not info then return end
    local got, msg = M.ver(q, hash)
    if got ~= ver then
      c:log("warn", "caps from %s: the disco#info answer does not hash to %s (%s)", from, ver,
        msg or ("got " .. tostring(got)))
      return
    end
    cache_put(key, info)
    if self.of[from] == key then c:fire_user("caps", from, info) end
  end)
end

local function on_presence(self, s)
  local from = s.attr.from and jid.prep(s.attr.from)
  if not from then return end
  if s.attr.type == "unavailable" then
    self.of[from] = nil
    return
  end
  if s.attr.type ~= nil then return end
  local el = s:get_child("c", NS_CAPS)
  local hash, ver, node = el and el.attr.hash, el and el.attr.ver, el and el.attr.node
  if not (el and HASHES[hash] and type(node) == "string" and well_formed(hash, ver)) then
    self.of[from] = nil
    return
  end
  local key = hash .. " " .. ver
  self.of[from] = key
  if cache:get(key) then
    self.client:fire_user("caps", from, cache:get(key))
  else
    verify(self, from, hash, node, ver)
  end
end

--- c.caps:node_ver() -> "node#ver", the disco#info node our caps name
function M:node_ver() return self.node .. "#" .. self:ver_of_own() end

function M:init(c)
  self.of, self.inflight = {}, {}      -- full jid -> "hash ver"; "hash ver" -> true
  self.node = c.opts and c.opts.caps_node or DEFAULT_NODE
  rawset(c, "caps_node", self.node)      -- the name docs/api.md always gave it
  c:add_feature(NS_CAPS)
  c.bus:add("stanza-out", function(s)
    -- available presence, broadcast or directed: announce what we do
    if s.name == "presence" and s.attr.type == nil and not s:get_child("c", NS_CAPS) then
      s:add_direct_child(st.stanza("c", { xmlns = NS_CAPS, hash = "sha-1", node = self.node,
        ver = self:ver_of_own() }))
    end
  end)
  -- every presence: an unavailable one or one without caps forgets them
  c.bus:add("stanza-in", function(s)
    if s.name == "presence" then on_presence(self, s) end
  end)
end

return M
