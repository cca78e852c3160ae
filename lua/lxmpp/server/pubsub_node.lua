-- lxmpp.server.pubsub_node: one publish-subscribe node (XEP-0060) of the
-- embedded server, for the pubsub service (lxmpp.server.pubsub) and for
-- accounts' PEP services (lxmpp.server.pep): its configuration (and the
-- node_config form that shows and changes it), affiliations, subscriptions
-- and items, and how all of that is kept in the server's storage.
--
-- A node holds:
--   service  the Service it belongs to (its jid, srv, limits, owner_user)
--   name, config (see DEFAULTS)
--   creator  the bare JID that created it (the pubsub service's nodes only:
--            limits.max_pubsub_user_nodes)
--   affiliations[bare JID] = "owner" | "publisher" | "member" | "outcast"
--   subscriptions[JID as subscribed, bare or full] = true
--   items    array, oldest first: { id =, seq =, publisher =, payload =
--            element or nil, xml = its text }; by_id[id] = item
--
-- Storage (kind "pubsub_node", key service .. "\0" .. node): the config,
-- affiliations and subscriptions; kind "pubsub_item", key service .. "\0"
-- .. node .. "\0" .. id: { seq, publisher, xml } of each item while
-- pubsub#persist_items is true. Neither JIDs nor XML text hold a NUL, so the
-- keys split back unambiguously. Rows of a PEP service are owned by its
-- account: removing the account removes them.

local compat = require "lxmpp.compat"
local st = require "lxmpp.stanza"
local forms = require "lxmpp.forms"

local type, pairs, ipairs, pcall, tostring, setmetatable, math_type, tonumber =
  type, pairs, ipairs, compat.pcall, tostring, setmetatable, compat.math_type, tonumber
local remove, sort = table.remove, table.sort

local M = {}

local NS = "http://jabber.org/protocol/pubsub"
local FORM_CONFIG = NS .. "#node_config"
local FORM_PUBLISH = NS .. "#publish-options"
local NODE_KIND, ITEM_KIND = "pubsub_node", "pubsub_item"

-- Field var -> { key in config, kind, allowed values }. Values restore()
-- finds in the store are kept only when they have the default's type.
local FIELDS = {
  { var = "pubsub#title", key = "title", type = "text-single", label = "A friendly name for the node" },
  { var = "pubsub#max_items", key = "max_items", type = "text-single",
    label = "Items to keep (a number, or max)" },
  { var = "pubsub#persist_items", key = "persist_items", type = "boolean", label = "Keep items in storage" },
  { var = "pubsub#access_model", key = "access_model", type = "list-single", label = "Who may subscribe and read",
    options = { "open", "presence", "whitelist" } },
  { var = "pubsub#publish_model", key = "publish_model", type = "list-single", label = "Who may publish",
    options = { "publishers", "subscribers", "open" } },
  { var = "pubsub#deliver_payloads", key = "deliver_payloads", type = "boolean",
    label = "Send payloads with notifications" },
  { var = "pubsub#notify_retract", key = "notify_retract", type = "boolean",
    label = "Notify subscribers when items are removed" },
  { var = "pubsub#notify_delete", key = "notify_delete", type = "boolean",
    label = "Notify subscribers when the node is deleted" },
  { var = "pubsub#notify_config", key = "notify_config", type = "boolean",
    label = "Notify subscribers when the configuration changes" },
  { var = "pubsub#send_last_published_item", key = "send_last_published_item", type = "list-single",
    label = "When to send the last published item", options = { "never", "on_sub", "on_sub_and_presence" } },
}
local BY_VAR = {}
for _, f in ipairs(FIELDS) do BY_VAR[f.var] = f end
M.FIELDS = FIELDS

local DEFAULTS = {
  service = { title = "", max_items = 10, persist_items = true, access_model = "open",
    publish_model = "publishers", deliver_payloads = true, notify_retract = true, notify_delete = true,
    notify_config = false, send_last_published_item = "never" },
  pep = { title = "", max_items = 1, persist_items = true, access_model = "presence",
    publish_model = "publishers", deliver_payloads = true, notify_retract = true, notify_delete = true,
    notify_config = false, send_last_published_item = "on_sub_and_presence" },
}

--- The default configuration of a node of a service of `kind` ("service"
-- or "pep"), a fresh table.
function M.defaults(kind)
  local c = {}
  for k, v in pairs(DEFAULTS[kind]) do c[k] = v end
  return c
end

local function layout(form_type)
  local l = { title = "Node configuration", { var = "FORM_TYPE", type = "hidden", value = form_type } }
  for _, f in ipairs(FIELDS) do
    -- options are checked here, not by lxmpp.forms, so that a wrong one
    -- gets pubsub's own error
    l[#l + 1] = { var = f.var, type = f.type, label = f.label, options = f.options, open = true }
  end
  return forms.new(l)
end
local LAYOUT = layout(FORM_CONFIG)
local LAYOUTS = { [FORM_CONFIG] = LAYOUT, [FORM_PUBLISH] = layout(FORM_PUBLISH) }

--- The node_config form (type "form", or "result") showing `config`.
function M.config_form(config, form_type)
  local values = {}
  for _, f in ipairs(FIELDS) do
    local v = config[f.key]
    values[f.var] = f.key == "max_items" and tostring(v) or v
  end
  return LAYOUT:form(values, form_type or "form")
end

local function is_option(f, v)
  for _, o in ipairs(f.options) do if o == v then return true end end
  return false
end

-- The typed value of one field as the config keeps it, or nil, message.
local function field_value(f, v, max_items)
  if f.key == "max_items" then
    if v == "max" then return max_items end
    local n = type(v) == "string" and v:match("^%d+$") and compat.tointeger(tonumber(v))
    if not n or n < 1 then return nil, "pubsub#max_items must be a positive number or max" end
    if n > max_items then return nil, "pubsub#max_items is at most " .. max_items .. " here" end
    return n
  elseif f.options and not is_option(f, v) then
    return nil, ("%s cannot be %s (one of: %s)"):format(f.var, tostring(v), table.concat(f.options, ", "))
  end
  return v
end

--- Reads a submitted node_config (or publish-options) form against
-- `base` (a config): returns the changed copy and the set of keys the form
-- gave, or nil, message, condition ("bad-request" for a malformed form, or
-- an unknown field in publish-options, "not-acceptable" for a value this
-- service refuses). A node_config field this service does not know is
-- ignored (XEP-0004 §3.3, type "submit": the form-processing entity MUST
-- ignore fields it does not understand); publish-options are preconditions,
-- and XEP-0060 §7.1.5 says to reject a publish naming an unknown one.
function M.read_form(x, base, max_items)
  local peer, msg = forms.parse(x)
  if not peer then return nil, msg, "bad-request" end
  local form_type = peer.form_type or FORM_CONFIG
  local form_layout = LAYOUTS[form_type]
  if not form_layout then return nil, "not a node configuration form", "bad-request" end
  if form_type == FORM_PUBLISH then
    for var in pairs(peer.values) do
      if var ~= "FORM_TYPE" and not BY_VAR[var] then
        return nil, "this service has no node setting " .. var, "bad-request"
      end
    end
  end
  local values, err = form_layout:data(x)
  if not values then return nil, err, "bad-request" end
  local c, given = {}, {}
  for k, v in pairs(base) do c[k] = v end
  for var, v in pairs(values) do
    local f = BY_VAR[var]
    if f then
      local typed, why = field_value(f, v, max_items)
      if typed == nil then return nil, why, "not-acceptable" end
      c[f.key], given[f.key] = typed, true
    end
  end
  return c, given
end

--- Nodes ----------------------------------------------------------------

local Node = {}
Node.__index = Node
M.Node = Node

function M.new(service, name, config)
  return setmetatable({ service = service, name = name, config = config, affiliations = {},
    subscriptions = {}, nsubs = 0, items = {}, by_id = {}, seq = 0 }, Node)
end

--- Bytes a node holds besides its items, counted with them against
-- limits.max_pubsub_bytes: its name, the free text of its configuration
-- (pubsub#title; the other fields are numbers, booleans and options) and
-- the JIDs of its affiliations (which its owners set). `config` and
-- `affiliations` default to the node's own.
function Node:meta_bytes(config, affiliations)
  local n = #self.name + #((config or self.config).title or "")
  for who in pairs(affiliations or self.affiliations) do n = n + #who end
  return n
end

--- Brings the service's byte count in line with the node's metadata (after
-- a change of it); node.meta is what was counted.
function Node:recount()
  local now = self:meta_bytes()
  self.service.bytes = self.service.bytes + now - (self.meta or 0)
  self.meta = now
end

function Node:affiliation(bare)
  return self.affiliations[bare] or "none"
end

function Node:owners()
  local list = {}
  for who, a in pairs(self.affiliations) do
    if a == "owner" then list[#list + 1] = who end
  end
  sort(list)
  return list
end

function Node:last_item()
  return self.items[#self.items]
end

-- The store, or nil; a failing write is logged and the node goes on in memory.
local function store_set(service, kind, key, value)
  local store = service.srv.store
  if not store then return end
  local ok, res, err = pcall(store.set, store, kind, key, value, value ~= nil and service.owner_user or nil)
  if not ok or (res == nil and err ~= nil) then
    service.srv:log("error", "pubsub: cannot save %s %s: %s", kind, key:gsub("%z", "/"), tostring(ok and err or res))
  end
end

function Node:key() return self.service.jid .. "\0" .. self.name end

--- Writes the node's configuration, affiliations and subscriptions.
function Node:save()
  local subs = {}
  for who in pairs(self.subscriptions) do subs[#subs + 1] = who end
  store_set(self.service, NODE_KIND, self:key(), { config = self.config, affiliations = self.affiliations,
    subscriptions = subs, creator = self.creator })
end

function Node:save_item(item)
  if not self.config.persist_items then return end
  store_set(self.service, ITEM_KIND, self:key() .. "\0" .. item.id,
    { seq = item.seq, publisher = item.publisher, xml = item.xml })
end

function Node:forget_item(item)
  if self.config.persist_items then store_set(self.service, ITEM_KIND, self:key() .. "\0" .. item.id, nil) end
end

--- Changes the configuration; items beyond a smaller max_items go, and a
-- change of persist_items stores or unstores the items.
function Node:set_config(c)
  local old = self.config
  if old.persist_items and not c.persist_items then
    for _, it in ipairs(self.items) do self:forget_item(it) end
  end
  self.config = c
  self:recount()
  if c.persist_items and not old.persist_items then
    for _, it in ipairs(self.items) do self:save_item(it) end
  end
  self:trim()
  self:save()
end

-- The service counts the bytes of its items' XML and ids (limits.max_pubsub_bytes).
local function item_bytes(item) return #item.xml + #item.id end
M.item_bytes = item_bytes
local function account(self, item, sign)
  self.service.bytes = self.service.bytes + sign * item_bytes(item)
end

-- Drops the oldest items beyond max_items; returns them.
function Node:trim()
  local gone = {}
  while #self.items > self.config.max_items do
    local it = remove(self.items, 1)
    account(self, it, -1)
    self.by_id[it.id] = nil
    self:forget_item(it)
    gone[#gone + 1] = it
  end
  return gone
end

--- Adds (or replaces: the item becomes the newest) an item; returns it.
function Node:publish(id, payload, publisher, xml)
  local old = self.by_id[id]
  if old then
    for i, it in ipairs(self.items) do
      if it == old then remove(self.items, i) break end
    end
    account(self, old, -1)
  end
  self.seq = self.seq + 1
  local item = { id = id, seq = self.seq, publisher = publisher, payload = payload,
    xml = xml or (payload and tostring(payload)) or "" }
  self.items[#self.items + 1] = item
  self.by_id[id] = item
  account(self, item, 1)
  self:save_item(item)
  self:trim()
  return item
end

--- Removes one item; false when there is none by that id.
function Node:retract(id)
  local it = self.by_id[id]
  if not it then return false end
  for i, x in ipairs(self.items) do
    if x == it then remove(self.items, i) break end
  end
  self.by_id[id] = nil
  account(self, it, -1)
  self:forget_item(it)
  return true
end

function Node:purge()
  for _, it in ipairs(self.items) do
    account(self, it, -1)
    self:forget_item(it)
  end
  self.items, self.by_id = {}, {}
end

--- Removes the node and its items from the store.
function Node:destroy()
  self:purge()
  store_set(self.service, NODE_KIND, self:key(), nil)
end

function Node:subscribe(who)
  if not self.subscriptions[who] then
    self.subscriptions[who] = true
    self.nsubs = self.nsubs + 1
    self:save()
  end
end

function Node:unsubscribe(who)
  if not self.subscriptions[who] then return false end
  self.subscriptions[who] = nil
  self.nsubs = self.nsubs - 1
  self:save()
  return true
end

--- Restoring ------------------------------------------------------------

local function split(key)
  local parts = {}
  for p in (key .. "\0"):gmatch("([^%z]*)%z") do parts[#parts + 1] = p end
  return parts
end

-- A stored config with each value checked against the default's type.
local function restore_config(kind, stored)
  local c = M.defaults(kind)
  for k, v in pairs(type(stored) == "table" and stored or {}) do
    if c[k] ~= nil and math_type(c[k]) == math_type(v) and type(c[k]) == type(v) then c[k] = v end
  end
  return c
end

--- Every stored node whose service passes want(service_jid) -> kind:
-- calls add(service_jid, name, function(service) -> node) for each.
-- Unreadable rows are logged and left alone.
function M.restore(srv, want, add)
  local store = srv.store
  if not store then return end
  local items = {}
  for _, key in ipairs(store:keys(ITEM_KIND)) do
    local p = split(key)
    if #p == 3 and want(p[1]) then
      local nk = p[1] .. "\0" .. p[2]
      items[nk] = items[nk] or {}
      items[nk][#items[nk] + 1] = { key = key, id = p[3] }
    end
  end
  for _, key in ipairs(store:keys(NODE_KIND)) do
    local p = split(key)
    local kind = #p == 2 and want(p[1])
    local ok, data = false, nil
    if kind then ok, data = pcall(store.get, store, NODE_KIND, key) end
    if kind and ok and type(data) == "table" then
      add(p[1], p[2], function(service)
        local node = M.new(service, p[2], restore_config(kind, data.config))
        if type(data.creator) == "string" then node.creator = data.creator end
        for who, a in pairs(type(data.affiliations) == "table" and data.affiliations or {}) do
          if type(who) == "string" and (a == "owner" or a == "publisher" or a == "member" or a == "outcast") then
            node.affiliations[who] = a
          end
        end
        for _, who in ipairs(type(data.subscriptions) == "table" and data.subscriptions or {}) do
          if type(who) == "string" and not node.subscriptions[who] then
            node.subscriptions[who], node.nsubs = true, node.nsubs + 1
          end
        end
        local list = {}
        for _, row in ipairs(items[key] or {}) do
          local rok, it = pcall(store.get, store, ITEM_KIND, row.key)
          local payload = rok and type(it) == "table" and type(it.xml) == "string" and
            (it.xml == "" or st.parse(it.xml))
          if payload and math_type(it.seq) == "integer" then
            list[#list + 1] = { id = row.id, seq = it.seq, xml = it.xml,
              publisher = type(it.publisher) == "string" and it.publisher or nil,
              payload = payload ~= true and payload or nil }
          else
            srv:log("error", "pubsub: cannot restore item %s", (row.key:gsub("%z", "/")))
          end
        end
        sort(list, function(a, b) return a.seq < b.seq end)
        for _, it in ipairs(list) do
          node.items[#node.items + 1] = it
          node.by_id[it.id] = it
          account(node, it, 1)
          if it.seq > node.seq then node.seq = it.seq end
        end
        return node
      end)
    elseif kind then
      srv:log("error", "pubsub: cannot restore node %s: %s", (key:gsub("%z", "/")), tostring(data))
    end
  end
end

M.NODE_KIND, M.ITEM_KIND = NODE_KIND, ITEM_KIND
return M
