-- Publish-subscribe (XEP-0060) and personal eventing (XEP-0163, PEP) for
-- clients. `service` is a pubsub service's JID ("pubsub.example.org"), an
-- account's bare JID (its PEP service), or nil for our own PEP service.
--
--   c:pubsub_create(service, node [, config])       -> node | nil, msg, cond
--   c:pubsub_get_config(service, node)              -> form (lxmpp.forms.parse)
--   c:pubsub_configure(service, node, values)       -> true
--   c:pubsub_delete(service, node)  c:pubsub_purge(service, node)
--   c:pubsub_publish(service, node, payload [, id [, options]]) -> item id
--   c:pubsub_retract(service, node, id [, notify])
--   c:pubsub_subscribe(service, node [, jid])       -> { jid, node, subscription, subid }
--   c:pubsub_unsubscribe(service, node [, { jid =, subid = }])
--   c:pubsub_items(service, node [, { max =, ids =, after =, before = }])
--       -> items ({ id =, payload =, publisher = }...), page ({ first =, last =, count = }
--          when the service pages with XEP-0059, else nil)
--   c:pep_publish(node, payload [, id [, options]])  c:pep_items(jid, node [, opts])
--   events: "pubsub-item" (service, node, item, stanza), "pubsub-retract"
--   (service, node, id), "pubsub-purge" (service, node), "pubsub-delete"
--   (service, node, redirect), "pubsub-config" (service, node)
--
-- Notifications are accepted from bare JIDs and domains only (pubsub and
-- PEP services never send from a full JID), and `service` is who sent it,
-- as the server stamped it: a handler decides whose news it wants. One
-- without a from is our own account's; one whose from is no valid JID is
-- dropped (logged).

local compat = require "lxmpp.compat"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local forms = require "lxmpp.forms"
local session = require "lxmpp.session"

local type, error, tostring, tonumber, pairs, ipairs, math_type =
  type, error, tostring, tonumber, pairs, ipairs, compat.math_type

local NS = "http://jabber.org/protocol/pubsub"
local NS_OWNER = NS .. "#owner"
local NS_EVENT = NS .. "#event"
local NS_RSM = "http://jabber.org/protocol/rsm"
local FORM_CONFIG = NS .. "#node_config"
local FORM_PUBLISH = NS .. "#publish-options"
local FORM_SUBSCRIBE = NS .. "#subscribe_options"

local M = { xmlns = NS }

for _, e in ipairs({ "pubsub-item", "pubsub-retract", "pubsub-purge", "pubsub-delete", "pubsub-config" }) do
  session.add_event(e)
end

local function check_service(service, fname)
  if service == nil then return nil end
  local p = type(service) == "string" and jid.prep(service)
  if not p or jid.resource(p) then error(fname .. ": invalid service JID " .. tostring(service), 3) end
  return p
end

local function check_node(node, fname, optional)
  if node == nil and optional then return nil end
  if type(node) ~= "string" or node == "" then error(fname .. ": node must be a non-empty string", 3) end
  return node
end

-- A submit form of `form_type` from plain values, typed by their Lua types.
local function values_form(form_type, values, fname)
  local layout = { { var = "FORM_TYPE", type = "hidden", value = form_type } }
  for var, v in pairs(values) do
    if type(var) ~= "string" then error(fname .. ": option names must be strings", 3) end
    local t = type(v) == "boolean" and "boolean" or type(v) == "table" and "list-multi" or "text-single"
    if t == "text-single" and type(v) ~= "string" and type(v) ~= "number" then
      error(fname .. ": option " .. var .. " must be a string, number, boolean or list", 3)
    end
    layout[#layout + 1] = { var = var, type = t, value = v, open = true }
  end
  return forms.new(layout):form(nil, "submit")
end

local function request(self, typ, service, ns, build, timeout)
  local iq = st.iq({ type = typ, to = service }):tag("pubsub", { xmlns = ns })
  build(iq)
  return self.client:request(iq:reset(), timeout or self.timeout)
end

local function parse_item(item)
  return { id = item.attr.id, publisher = item.attr.publisher, payload = item.tags[1] }
end

--- Incoming notifications --------------------------------------------------

local function on_event(self, s)
  local ev = s:get_child("event", NS_EVENT)
  if not ev or s.attr.type == "error" then return end
  local from
  if s.attr.from == nil then
    from = self.bare_jid          -- from our own account's PEP (RFC 6120 §8.1.2.1)
  else
    from = jid.prep(s.attr.from)
    if not from then
      -- not a JID: nobody's news, and certainly not our own account's
      self:log("warn", "ignored a pubsub notification from an invalid JID %s", tostring(s.attr.from))
      return
    end
  end
  if jid.resource(from) then
    self:log("warn", "ignored a pubsub notification from a full JID %s", tostring(from))
    return
  end
  for child in ev:childtags() do
    local node = child.attr.node
    if node then
      if child.name == "items" then
        for it in child:childtags() do
          if it.name == "item" then
            self:fire_user("pubsub-item", from, node, parse_item(it), s)
          elseif it.name == "retract" and it.attr.id then
            self:fire_user("pubsub-retract", from, node, it.attr.id)
          end
        end
      elseif child.name == "purge" then
        self:fire_user("pubsub-purge", from, node)
      elseif child.name == "delete" then
        local r = child:get_child("redirect")
        self:fire_user("pubsub-delete", from, node, r and r.attr.uri)
      elseif child.name == "configuration" then
        self:fire_user("pubsub-config", from, node)
      end
    end
  end
end

-- The plugin object, c.pubsub (docs/api.md "Plugins"): c.pubsub:publish(...)
-- is c:pubsub_publish(...), and so on; c.pubsub.timeout, when set, is the
-- requests' timeout.
M.forwards = {
  pubsub_create = "create", pubsub_get_config = "get_config", pubsub_configure = "configure",
  pubsub_delete = "delete", pubsub_purge = "purge", pubsub_publish = "publish", pubsub_retract = "retract",
  pubsub_subscribe = "subscribe", pubsub_unsubscribe = "unsubscribe", pubsub_items = "items",
  pep_publish = "pep_publish", pep_items = "pep_items",
}
M.events = { "pubsub-item", "pubsub-retract", "pubsub-purge", "pubsub-delete", "pubsub-config" }

--- c.pubsub:create(service, node [, config]) -> node | nil, message, condition
function M:create(service, node, config)
  service = check_service(service, "pubsub_create")
  node = check_node(node, "pubsub_create", true)           -- nil: an instant node
  if config ~= nil and type(config) ~= "table" then error("pubsub_create: config must be a table", 2) end
  local r, msg, cond, es = request(self, "set", service, NS, function(iq)
    iq:tag("create", { node = node }):up()
    if config then iq:tag("configure"):add_child(values_form(FORM_CONFIG, config, "pubsub_create")):up() end
  end)
  if not r then return nil, msg, cond, es end
  local created = r:find("{" .. NS .. "}pubsub/create@node")
  return created or node
end

--- c.pubsub:get_config(service, node) -> form | nil, message, condition
function M:get_config(service, node)
  service, node = check_service(service, "pubsub_get_config"), check_node(node, "pubsub_get_config")
  local r, msg, cond, es = request(self, "get", service, NS_OWNER,
    function(iq) iq:tag("configure", { node = node }) end)
  if not r then return nil, msg, cond, es end
  local ps = r:get_child("pubsub", NS_OWNER)
  local conf = ps and ps:get_child("configure")
  local x = conf and conf:get_child("x", forms.xmlns)
  if not x then return nil, "the service sent no configuration form", "bad-request" end
  return forms.parse(x)
end

--- c.pubsub:configure(service, node, values) -> true | nil, message, condition
function M:configure(service, node, values)
  if type(values) ~= "table" then error("pubsub_configure: values must be a table", 2) end
  local form, msg, cond, es = self:get_config(service, node)
  if not form then return nil, msg, cond, es end
  local layout = forms.new(form)
  for var in pairs(values) do
    if not layout.by_var[var] then return nil, "the node has no setting " .. tostring(var), "bad-request" end
  end
  -- the service declared the fields' types: values that do not fit them are
  -- refused here (nothing sent), not raised out of the call
  local ok, x = pcall(layout.form, layout, values, "submit")
  if not ok then
    return nil, "the values do not fit the node's configuration form: " .. tostring(x):gsub("^.-lxmpp%.forms: ", ""),
      "not-acceptable"
  end
  local r
  r, msg, cond, es = request(self, "set", check_service(service, "pubsub_configure"), NS_OWNER, function(iq)
    iq:tag("configure", { node = node }):add_child(x)
  end)
  if not r then return nil, msg, cond, es end
  return true
end

local function owner_action(name)
  return function(self, service, node)
    service, node = check_service(service, "pubsub_" .. name), check_node(node, "pubsub_" .. name)
    local r, msg, cond, es = request(self, "set", service, NS_OWNER, function(iq) iq:tag(name, { node = node }) end)
    if not r then return nil, msg, cond, es end
    return true
  end
end
--- c.pubsub:delete(service, node), c:pubsub_purge(service, node) -> true | nil, message, condition
M.delete = owner_action("delete")
M.purge = owner_action("purge")

--- c.pubsub:publish(service, node, payload [, id [, options]]) -> item id | nil, message, condition
function M:publish(service, node, payload, id, options)
  service, node = check_service(service, "pubsub_publish"), check_node(node, "pubsub_publish")
  if not st.is_stanza(payload) then error("pubsub_publish: payload must be a stanza element", 2) end
  if id ~= nil and (type(id) ~= "string" or id == "") then error("pubsub_publish: id must be a string", 2) end
  if options ~= nil and type(options) ~= "table" then error("pubsub_publish: options must be a table", 2) end
  local r, msg, cond, es = request(self, "set", service, NS, function(iq)
    iq:tag("publish", { node = node }):tag("item", { id = id }):add_child(payload):up():up()
    if options then
      iq:tag("publish-options"):add_child(values_form(FORM_PUBLISH, options, "pubsub_publish")):up()
    end
  end)
  if not r then return nil, msg, cond, es end
  return r:find("{" .. NS .. "}pubsub/publish/item@id") or id
end

--- c.pubsub:retract(service, node, id [, notify]) -> true | nil, message, condition
function M:retract(service, node, id, notify)
  service, node = check_service(service, "pubsub_retract"), check_node(node, "pubsub_retract")
  if type(id) ~= "string" or id == "" then error("pubsub_retract: id must be a string", 2) end
  local r, msg, cond, es = request(self, "set", service, NS, function(iq)
    iq:tag("retract", { node = node, notify = notify and "true" or nil }):tag("item", { id = id })
  end)
  if not r then return nil, msg, cond, es end
  return true
end

--- c.pubsub:subscribe(service, node [, jid [, options]]) -> subscription | nil, message, condition
function M:subscribe(service, node, who, options)
  service, node = check_service(service, "pubsub_subscribe"), check_node(node, "pubsub_subscribe")
  who = who or jid.bare(self.client.jid)
  if type(who) ~= "string" or not jid.prep(who) then error("pubsub_subscribe: invalid JID " .. tostring(who), 2) end
  local r, msg, cond, es = request(self, "set", service, NS, function(iq)
    iq:tag("subscribe", { node = node, jid = who }):up()
    if options then iq:tag("options"):add_child(values_form(FORM_SUBSCRIBE, options, "pubsub_subscribe")):up() end
  end)
  if not r then return nil, msg, cond, es end
  local sub = r:find("{" .. NS .. "}pubsub/subscription")
  if not sub then return { jid = who, node = node, subscription = "subscribed" } end   -- an empty result: done
  return { jid = sub.attr.jid or who, node = sub.attr.node or node, subscription = sub.attr.subscription,
    subid = sub.attr.subid }
end

--- c.pubsub:unsubscribe(service, node [, { jid =, subid = }]) -> true | nil, message, condition
function M:unsubscribe(service, node, opts)
  service, node = check_service(service, "pubsub_unsubscribe"), check_node(node, "pubsub_unsubscribe")
  opts = opts or {}
  local r, msg, cond, es = request(self, "set", service, NS, function(iq)
    iq:tag("unsubscribe", { node = node, jid = opts.jid or jid.bare(self.client.jid), subid = opts.subid })
  end)
  if not r then return nil, msg, cond, es end
  return true
end

--- c.pubsub:items(service, node [, opts]) -> items, page | nil, message, condition
function M:items(service, node, opts)
  service, node = check_service(service, "pubsub_items"), check_node(node, "pubsub_items")
  opts = opts or {}
  if type(opts) ~= "table" then error("pubsub_items: opts must be a table", 2) end
  if opts.max ~= nil and (math_type(opts.max) ~= "integer" or opts.max < 1) then
    error("pubsub_items: max must be a positive integer", 2)
  end
  local paged = opts.after ~= nil or opts.before ~= nil or opts.page
  local r, msg, cond, es = request(self, "get", service, NS, function(iq)
    iq:tag("items", { node = node, max_items = (not paged and opts.max) and tostring(opts.max) or nil })
    for _, id in ipairs(opts.ids or {}) do iq:tag("item", { id = id }):up() end
    iq:up()
    if paged then
      iq:tag("set", { xmlns = NS_RSM })
      if opts.max then iq:text_tag("max", tostring(opts.max)) end
      if opts.after then iq:text_tag("after", opts.after) end
      if opts.before then iq:text_tag("before", opts.before) end
      iq:up()
    end
  end)
  if not r then return nil, msg, cond, es end
  local ps = r:get_child("pubsub", NS)
  local items = ps and ps:get_child("items")
  if not items then return nil, "the reply has no <items/>", "bad-request" end
  local list = {}
  for it in items:childtags("item") do list[#list + 1] = parse_item(it) end
  local set = ps:get_child("set", NS_RSM)
  local page
  if set then
    local count = set:get_child_text("count")
    page = { first = set:get_child_text("first"), last = set:get_child_text("last"),
      count = count and count:match("^%d+$") and tonumber(count) or nil }
    if count and not page.count then return nil, "a malformed <count/> in the page", "bad-request" end
  end
  return list, page
end

--- c.pubsub:pep_publish(node, payload [, id [, options]]): to our own PEP service
function M:pep_publish(node, payload, id, options)
  return self:publish(nil, node, payload, id, options)
end

--- c.pubsub:pep_items(jid, node [, opts]): an account's PEP items
function M:pep_items(who, node, opts)
  return self:items(jid.bare(who), node, opts)
end

function M.init(_, c)
  c:hook_child("message", NS_EVENT, function(s) on_event(c, s) end)
end

return M
