-- XEP-0115 entity capabilities: our verification string (§5.1, with the
-- data-form rules of §5.4), sent in every available presence we broadcast,
-- and others' capabilities, learned from their presence: a ver we have not
-- seen is asked for once (disco#info on node#ver), its hash recomputed, and
-- the answer cached by ver only when it matches; a malformed or lying answer
-- is never cached, nor one whose strings could make another answer's S
-- (a '<' in them), and what is cached is only what the hash covers.
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
-- full JIDs whose announced ver a client remembers (c.caps.of): beyond
-- this, the one announced longest ago is forgotten (its c:caps_info is nil
-- until it announces again). Read when a client loads the plugin.
M.MAX_PEERS = 10000

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

-- The extension forms §5.4 hashes: { form_type =, fields = { { var =,
-- values = { sorted } } sorted by var } } sorted by FORM_TYPE, or nil,
-- message when §5.4 says to ignore the whole answer (two forms with one
-- FORM_TYPE, a FORM_TYPE with two different values). Forms without a
-- hidden FORM_TYPE are skipped (§5.4 step 3.6), as are fields without a var.
local function hashed_forms(query)
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
      list[#list + 1] = { form_type = form_type, fields = fields }
    end
  end
  table_sort(list, function(a, b) return a.form_type < b.form_type end)
  return list
end

-- The extension forms' part of S, or nil, message (hashed_forms).
local function forms_string(query)
  local list, msg = hashed_forms(query)
  if not list then return nil, msg end
  local parts = {}
  for _, form in ipairs(list) do
    parts[#parts + 1] = form.form_type .. "<"
    for _, f in ipairs(form.fields) do
      parts[#parts + 1] = f.var .. "<"
      for _, v in ipairs(f.values) do parts[#parts + 1] = v .. "<" end
    end
  end
  return concat(parts)
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

-- What makes an answer unverifiable although it may hash to the ver: S
-- (§5.1) joins its strings with '<' and an identity's four parts with '/',
-- so a '<' inside a string (or a '/' inside a category, type or lang)
-- lets another answer give the same S, and its info would be cached under
-- a ver that names a legitimate answer (features hidden, others added).
-- An identity's category and type are required (XEP-0030 §3.1): an empty
-- one lets an identity pose as a feature ("http:" / "" / "jabber.org" /
-- "protocol/caps" is S's "http://jabber.org/protocol/caps"), as a feature
-- without a var would pose as nothing. Returns a message, or nil when the
-- answer can be cached. Forms §5.4 ignores are not looked at (nor cached).
local function ambiguous(query)
  -- XEP-0030 §3.1: at least one identity. With none, a feature may stand
  -- for one: S's last identity and first feature are joined as any two
  -- features are, so a feature "client/pc//Gajim" and an identity of
  -- those parts give the same S; nor is a feature that reads as an
  -- identity (two non-empty parts before its second '/') taken. URIs
  -- ("http://...") have an empty second part.
  if not query:get_child("identity") then return "no identity" end
  for id in query:childtags("identity") do
    local a = id.attr
    for _, k in ipairs({ "category", "type", "xml:lang" }) do
      local v = a[k]
      if k ~= "xml:lang" and (v == nil or v == "") then return "an identity without a " .. k end
      if v and v:find("[</]") then return "a '<' or '/' in an identity's " .. k end
    end
    if a.name and a.name:find("<", 1, true) then return "a '<' in an identity's name" end
  end
  for f in query:childtags("feature") do
    local var = f.attr.var
    if var == nil or var == "" then return "a feature without a var" end
    if var:find("<", 1, true) then return "a '<' in a feature" end
    if var:find("^[^/]+/[^/]+/[^/]*/") then return "a feature that reads as an identity" end
  end
  for _, form in ipairs(hashed_forms(query) or {}) do
    if form.form_type:find("<", 1, true) then return "a '<' in a FORM_TYPE" end
    -- an extension form of its FORM_TYPE alone is, in S, a last feature
    -- (another answer's feature hidden as an empty form)
    if #form.fields == 0 then return "an extension form with no field but its FORM_TYPE" end
    for _, f in ipairs(form.fields) do
      if f.var:find("<", 1, true) then return "a '<' in a form field's var" end
      for _, v in ipairs(f.values) do
        if v:find("<", 1, true) then return "a '<' in a form field's value" end
      end
    end
  end
  return nil
end

-- The info a verified answer is cached as: only what the hash covers
-- (§5.1, §5.4): the identities, the features, and the extension forms with
-- a hidden FORM_TYPE, each field with its var and values (in S's order)
-- and nothing else (no type, label, description, options, title: a field
-- with several values reads as a list, one value as a string, forms.parse's
-- rule for a result form). A form §5.4 ignores is no part of it: the cache
-- is shared by every client in the process, and what the hash does not
-- cover is whatever the first entity asked said.
local function covered_info(query)
  local q = st.stanza("query", { xmlns = disco.NS_INFO })
  for id in query:childtags("identity") do
    local a = id.attr
    q:tag("identity", { category = a.category, type = a.type, ["xml:lang"] = a["xml:lang"], name = a.name }):up()
  end
  for f in query:childtags("feature") do q:tag("feature", { var = f.attr.var }):up() end
  for _, form in ipairs(hashed_forms(query) or {}) do
    q:tag("x", { xmlns = NS_FORMS, type = "result" })
      :tag("field", { var = "FORM_TYPE", type = "hidden" }):text_tag("value", form.form_type):up()
    for _, f in ipairs(form.fields) do
      q:tag("field", { var = f.var })
      for _, v in ipairs(f.values) do q:text_tag("value", v) end
      q:up()
    end
    q:up()
  end
  return disco.read_info(q)
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
-- ver" they announced (an lxmpp.bounded map of M.MAX_PEERS: .of:get(jid)),
-- .inflight the vers being verified.
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
  local key = j and self.of:get(j)
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
    local why = ambiguous(q)
    if why then
      c:log("warn", "caps from %s: not caching the answer for %s, which hashes to it but is ambiguous (%s)",
        from, ver, why)
      return
    end
    cache_put(key, covered_info(q))
    if self.of:get(from) == key then c:fire_user("caps", from, cache:get(key)) end
  end)
end

local function on_presence(self, s)
  local from = s.attr.from and jid.prep(s.attr.from)
  if not from then return end
  if s.attr.type == "unavailable" then
    self.of:delete(from)
    return
  end
  if s.attr.type ~= nil then return end
  local el = s:get_child("c", NS_CAPS)
  local hash, ver, node = el and el.attr.hash, el and el.attr.ver, el and el.attr.node
  if not (el and HASHES[hash] and type(node) == "string" and well_formed(hash, ver)) then
    self.of:delete(from)
    return
  end
  local key = hash .. " " .. ver
  self.of:put(from, key)
  if cache:get(key) then
    self.client:fire_user("caps", from, cache:get(key))
  else
    verify(self, from, hash, node, ver)
  end
end

--- c.caps:node_ver() -> "node#ver", the disco#info node our caps name
function M:node_ver() return self.node .. "#" .. self:ver_of_own() end

function M:init(c)
  -- full jid -> "hash ver" (bounded: a hostile server or room may announce
  -- any number of full JIDs; the oldest are forgotten first); "hash ver" -> true
  self.of, self.inflight = bounded.new(M.MAX_PEERS), {}
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
