-- XEP-0030 service discovery for clients: asking others (disco#info and
-- disco#items, with nodes) and answering about ourselves. A client answers
-- disco#info with its identity and the features its plugins register
-- (c:add_feature), plus XEP-0128 extension forms; nodes (ad-hoc commands,
-- the XEP-0115 caps node) are answered by handlers registered with
-- c:disco_node.
--
--   local info = c:disco_info("example.org" [, node])
--   info.identities[1].category, info.features["urn:xmpp:ping"], info.forms
--   local items = c:disco_items("example.org" [, node])  -- { {jid=, node=, name=} }

local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local forms = require "lxmpp.forms"

local type, error, ipairs, pairs, table_sort = type, error, ipairs, pairs, table.sort

local NS_INFO = "http://jabber.org/protocol/disco#info"
local NS_ITEMS = "http://jabber.org/protocol/disco#items"

local M = { NS_INFO = NS_INFO, NS_ITEMS = NS_ITEMS }

local MAX_ITEMS = 10000   -- items read from one disco#items answer

--- disco.read_info(query) -> info: a disco#info <query/> as Lua tables:
-- { node=, identities = { {category=, type=, name=, lang=} }, features =
-- { [var] = true }, feature_list = { sorted vars }, forms = { parsed forms } }
function M.read_info(query)
  local info = { node = query.attr.node, identities = {}, features = {}, feature_list = {}, forms = {} }
  for id in query:childtags("identity") do
    info.identities[#info.identities + 1] = { category = id.attr.category, type = id.attr.type,
      name = id.attr.name, lang = id.attr["xml:lang"] }
  end
  for f in query:childtags("feature") do
    local var = f.attr.var
    if type(var) == "string" and not info.features[var] then
      info.features[var] = true
      info.feature_list[#info.feature_list + 1] = var
    end
  end
  table_sort(info.feature_list)
  for x in query:childtags("x", forms.xmlns) do
    local form = forms.parse(x)
    if form then info.forms[#info.forms + 1] = form end
  end
  return info
end

--- disco.info_query(info) -> <query xmlns=disco#info/>, built from tables
-- shaped as read_info returns them (features as a set or a list; forms as
-- <x/> elements).
function M.info_query(info, node)
  local q = st.stanza("query", { xmlns = NS_INFO, node = node })
  for _, id in ipairs(info.identities or {}) do
    q:tag("identity", { category = id.category, type = id.type, name = id.name, ["xml:lang"] = id.lang }):up()
  end
  local vars = {}
  if info.features and info.features[1] then
    for _, v in ipairs(info.features) do vars[#vars + 1] = v end
  else
    for v in pairs(info.features or {}) do vars[#vars + 1] = v end
  end
  table_sort(vars)
  for _, v in ipairs(vars) do q:tag("feature", { var = v }):up() end
  for _, x in ipairs(info.forms or {}) do q:add_child(x) end
  return q
end

local function check_to(to, fname)
  if to ~= nil and type(to) ~= "string" then error(fname .. ": to must be a JID string", 3) end
end
local function check_node(node, fname)
  if node ~= nil and type(node) ~= "string" then error(fname .. ": node must be a string", 3) end
end

-- Asks `to` (our server when nil) for a disco <query/> of namespace ns
-- (at node) and returns the answer's <query/>, or nil, message, condition.
local function query(c, ns, what, to, node, timeout)
  local r, msg, cond = c:request(st.iq({ type = "get", to = to or c.domain })
    :tag("query", { xmlns = ns, node = node }), timeout)
  if not r then return nil, msg, cond end
  local q = r:get_child("query", ns)
  if not q then return nil, "the " .. what .. " answer has no query", "bad-request" end
  return q
end

-- The plugin object, c.disco (docs/api.md "Plugins"): .features (a set of
-- vars), .identities, .forms and .nodes (node -> handler) are what we answer.
M.forwards = { disco_info = "info", disco_items = "items", add_feature = "add_feature",
remove_feature = "remove_feature", set_identity = "set_identity", add_info_form = "add_info_form",
disco_node = "node", own_info = "own_info" }

--- c.disco:info([to [, node [, timeout]]]) -> info | nil, message, condition
function M:info(to, node, timeout)
  check_to(to, "disco_info")
  check_node(node, "disco_info")
  local q, msg, cond = query(self.client, NS_INFO, "disco#info", to, node, timeout)
  if not q then return nil, msg, cond end
  return M.read_info(q), q
end

--- c.disco:items([to [, node [, timeout]]]) -> { {jid=, node=, name=} } | nil, message, condition
function M:items(to, node, timeout)
  check_to(to, "disco_items")
  check_node(node, "disco_items")
  local q, msg, cond = query(self.client, NS_ITEMS, "disco#items", to, node, timeout)
  if not q then return nil, msg, cond end
  local items = {}
  for it in q:childtags("item") do
    local j = it.attr.jid and jid.prep(it.attr.jid)
    if j then
      if #items >= MAX_ITEMS then break end
      items[#items + 1] = { jid = j, node = it.attr.node, name = it.attr.name }
    end
  end
  return items
end

--- c:add_feature(var): announce a feature (disco#info, caps)
function M:add_feature(var)
  if type(var) ~= "string" or var == "" then error("add_feature: var must be a non-empty string", 2) end
      self.features[var] = true
end

--- c:remove_feature(var)
function M:remove_feature(var)
  if type(var) ~= "string" then error("remove_feature: var must be a string", 2) end
  self.features[var] = nil
end

--- c:set_identity{ category=, type=, name=, lang= } (default client/bot)
function M:set_identity(id)
  if type(id) ~= "table" or type(id.category) ~= "string" or type(id.type) ~= "string" then
    error("set_identity: expected { category = string, type = string [, name =] [, lang =] }", 2)
  end
  self.identities = { { category = id.category, type = id.type, name = id.name, lang = id.lang } }
end

--- c:add_info_form(x): an XEP-0128 extension form in our disco#info
function M:add_info_form(x)
  if not st.is_stanza(x) or x.name ~= "x" or x.attr.xmlns ~= forms.xmlns then
    error("add_info_form: expected a jabber:x:data <x/> element", 2)
  end
      self.forms[#self.forms + 1] = x
end

--- c.disco:node(node, handler): handler(from, kind) answers disco queries
-- on node; kind is "info" (return { identities =, features = }) or
-- "items" (return { {jid=, node=, name=} }); nil answers item-not-found
function M:node(node, handler)
  if type(node) ~= "string" then error("disco_node: node must be a string", 2) end
  if handler ~= nil and type(handler) ~= "function" then error("disco_node: handler must be a function", 2) end
      self.nodes[node] = handler
end

--- c:own_info() -> our disco#info as tables (what we answer)
function M:own_info()
  local features = {}
  for v in pairs(self.features) do features[#features + 1] = v end
  table_sort(features)
  return { identities = self.identities, features = features, forms = self.forms }
end

local function node_answer(self, iq, kind)
  local q = iq.tags[1]
  local node = q.attr.node
  local h = node and self.nodes[node]
  local r = h and h(iq.attr.from, kind, node)
  if r == nil then return st.error_reply(iq, "cancel", "item-not-found") end
  if kind == "info" then return st.reply(iq):add_child(M.info_query(r, node)) end
  local reply = st.reply(iq):tag("query", { xmlns = NS_ITEMS, node = node })
  for _, it in ipairs(r) do reply:tag("item", { jid = it.jid, node = it.node, name = it.name }):up() end
  return reply
end

function M:init(c)
  self.features, self.forms, self.nodes = {}, {}, {}
  self.identities = { { category = "client", type = "bot", name = "lxmpp" } }
  for _, v in ipairs({ NS_INFO, NS_ITEMS, "urn:xmpp:ping", "jabber:iq:version" }) do self:add_feature(v) end
  c:handle_iq(NS_INFO, function(iq)
    if iq.attr.type ~= "get" then return st.error_reply(iq, "cancel", "bad-request") end
    local node = iq.tags[1].attr.node
    if node == nil or (c:plugin_loaded("caps") and node == c.caps:node_ver()) then
      return st.reply(iq):add_child(M.info_query(self:own_info(), node))
    end
    return node_answer(self, iq, "info")
  end)
  c:handle_iq(NS_ITEMS, function(iq)
    if iq.attr.type ~= "get" then return st.error_reply(iq, "cancel", "bad-request") end
    if iq.tags[1].attr.node == nil then return st.reply(iq):tag("query", { xmlns = NS_ITEMS }) end
    return node_answer(self, iq, "items")
  end)
end

return M
