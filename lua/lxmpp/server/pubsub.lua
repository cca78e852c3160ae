-- lxmpp.server.pubsub: publish-subscribe (XEP-0060) for the embedded
-- server. A Service is one pubsub service: the service on its own domain
-- (option `pubsub = "pubsub.localhost"`, mounted as a host by the server
-- core), or an account's PEP service (lxmpp.server.pep, kind "pep"). Both
-- share the nodes (lxmpp.server.pubsub_node) and the protocol
-- (lxmpp.server.pubsub_iq); they differ in who may create nodes, in the
-- defaults, and in who hears about items (a PEP service also tells the
-- account's own resources and its contacts).
--
-- From srv it uses srv:route, srv.store, srv.limits (max_pubsub_nodes per
-- service, max_pubsub_items the cap of pubsub#max_items,
-- max_pubsub_subscriptions and max_pubsub_affiliations per node,
-- max_pubsub_bytes per service of item XML and ids, node names, titles
-- and affiliated JIDs), srv.domain and srv:log.

local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local core = require "lxmpp.core"
local pubsub_node = require "lxmpp.server.pubsub_node"
local domain_service = require "lxmpp.server.service"

local type, pairs, ipairs, setmetatable, tostring, error = type, pairs, ipairs, setmetatable, tostring, error
local sort = table.sort

local M = {}
local NS = "http://jabber.org/protocol/pubsub"
local NS_EVENT = NS .. "#event"
local NS_ERRORS = NS .. "#errors"
local NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
local NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
local SEES_OWNER = { from = true, both = true }   -- roster items of who sees the owner's presence
M.NS, M.NS_OWNER, M.NS_EVENT, M.NS_ERRORS = NS, NS .. "#owner", NS_EVENT, NS_ERRORS

-- The pubsub#features this implementation has (disco#info).
M.FEATURES = { "access-open", "access-presence", "access-whitelist", "config-node", "create-and-configure",
  "create-nodes", "delete-items", "delete-nodes", "instant-nodes", "item-ids", "last-published",
  "modify-affiliations", "persistent-items", "publish", "publish-options", "publisher-affiliation",
  "purge-nodes", "retract-items", "retrieve-affiliations", "retrieve-default", "retrieve-items",
  "retrieve-subscriptions", "subscribe", "rsm" }

--- An error: the stanza error, with pubsub's own condition (`app`) or an
-- unsupported feature.
function M.err(etype, cond, text, app, feature)
  return { etype = etype, cond = cond, text = text, app = app, feature = feature }
end
local err = M.err

function M.error_reply(iq, e)
  local r = st.error_reply(iq, e.etype, e.cond, e.text)
  if e.feature then
    r:tag("unsupported", { xmlns = NS_ERRORS, feature = e.feature }):up()
  elseif e.app then
    r:tag(e.app, { xmlns = NS_ERRORS }):up()
  end
  return r
end

---------------------------------------------------------------------------
-- services

local Service = {}
Service.__index = Service
M.Service = Service

--- A service at address `at` of kind "service" or "pep" (for PEP, `at` is
-- the account's bare JID and owner_user its user name).
function M.service(srv, at, kind, owner_user)
  return setmetatable({ srv = srv, jid = at, kind = kind, nodes = {}, nnodes = 0, owner_user = owner_user,
    owner_bare = kind == "pep" and at or nil, ids = 0, bytes = 0,
    created = {} }, Service)        -- created[bare]: nodes it created that exist (max_pubsub_user_nodes)
end

function Service:limit(name) return self.srv.limits[name] end

function Service:add_node(node)
  if node.config.max_items > self:limit("max_pubsub_items") then  -- the limit was lowered since
    node.config.max_items = self:limit("max_pubsub_items")
    node:trim()
  end
  self.nodes[node.name] = node
  self.nnodes = self.nnodes + 1
  node:recount()
  if node.creator then self:count_created(node.creator, 1) end
end

function Service:count_created(bare, n)
  local v = (self.created[bare] or 0) + n
  self.created[bare] = v > 0 and v or nil
end

--- Would `extra` more bytes pass limits.max_pubsub_bytes? nil, or the error.
function Service:too_big(extra)
  if extra > 0 and self.bytes + extra > self:limit("max_pubsub_bytes") then
    return err("wait", "resource-constraint", "this service holds too much data (limits.max_pubsub_bytes): "
      .. "retract or purge items, or delete nodes")
  end
end

function Service.new_id(_)
  return core.sha1_hex(core.random(12)):sub(1, 20)
end

--- May `bare` create nodes here? PEP: the account alone; the service: users
-- of the server's domain and its subdomains.
function Service:may_create(bare)
  if self.kind == "pep" then return bare == self.owner_bare end
  local domain, main = jid.domain(bare), self.srv.domain
  return domain == main or domain:sub(-#main - 1) == "." .. main
end

--- Creates a node (name nil: an instant node) owned by owner_bare, with
-- `config` (nil: the defaults). Returns it or nil, error.
function Service:create(name, owner_bare, config)
  if name and self.nodes[name] then return nil, err("cancel", "conflict", "the node exists") end
  if self.nnodes >= self:limit("max_pubsub_nodes") then
    return nil, err("wait", "resource-constraint", "this service has too many nodes", "max-nodes-exceeded")
  end
  -- the service's nodes are shared by every account: one may not take
  -- them all (a PEP service is its account's alone, max_pubsub_nodes is its share)
  local max_own = self:limit("max_pubsub_user_nodes")
  if self.kind ~= "pep" and (self.created[owner_bare] or 0) >= max_own then
    return nil, err("wait", "resource-constraint",
      ("you created %d nodes here already (limits.max_pubsub_user_nodes): delete one first"):format(max_own),
      "max-nodes-exceeded")
  end
  while not name or self.nodes[name] do name = self:new_id() end
  local node = pubsub_node.new(self, name, config or pubsub_node.defaults(self.kind))
  if self.kind ~= "pep" then node.creator = owner_bare end
  node.affiliations[owner_bare] = "owner"
  if self.owner_bare then node.affiliations[self.owner_bare] = "owner" end
  local e = self:too_big(node:meta_bytes())     -- its name and title count as items do
  if e then return nil, e end
  self:add_node(node)
  node:save()
  return node
end

--- Deletes a node; its subscribers hear of it (unless notify_delete is false).
function Service:delete(node, redirect)
  if node.config.notify_delete then
    local e = st.stanza("delete", { node = node.name })
    if redirect then e:tag("redirect", { uri = redirect }):up() end
    self:notify(node, e)
  end
  node:destroy()
  self.nodes[node.name] = nil
  self.nnodes = self.nnodes - 1
  self.bytes = self.bytes - (node.meta or 0)
  if node.creator then self:count_created(node.creator, -1) end
end

--- The account `bare` was removed: it loses its affiliations with the
-- nodes of this service and its subscriptions (bare or full JID). A node it
-- was the last owner of is deleted (its subscribers are told, XEP-0060
-- §8.4): a node without an owner could never be configured or deleted, and
-- a later account of the same name must not inherit it.
function Service:account_removed(bare)
  local names = {}
  for name in pairs(self.nodes) do names[#names + 1] = name end
  sort(names)
  for _, name in ipairs(names) do
    local node, changed = self.nodes[name], false
    if node.creator == bare then       -- a later account of that name starts afresh
      node.creator, changed = nil, true
      self:count_created(bare, -1)
    end
    for who in pairs(node.subscriptions) do
      if jid.bare(who) == bare then
        node.subscriptions[who], node.nsubs, changed = nil, node.nsubs - 1, true
      end
    end
    if node.affiliations[bare] then
      node.affiliations[bare], changed = nil, true
      if #node:owners() == 0 then
        self:delete(node)
        changed = false
      else
        node:recount()
      end
    end
    if changed then node:save() end
  end
end

---------------------------------------------------------------------------
-- access

-- Is `who` (bare) subscribed to the presence of `owner` (a local account)?
function Service:has_presence_of(owner, who)
  local user, domain = jid.prepped_split(owner)
  if not user or domain ~= self.srv.domain then return false end
  -- one cached lookup, not the whole roster: a listing asks once per node
  local item = self.srv.store:get_roster_item(user, who)
  return item ~= nil and (item.subscription == "from" or item.subscription == "both")
end

--- May `bare` subscribe to and read `node`? true, or false and the error.
function Service:can_access(node, bare)
  local a = node:affiliation(bare)
  if a == "owner" or a == "publisher" then return true end
  if a == "outcast" then return false, err("auth", "forbidden", "you are banned from this node") end
  local model = node.config.access_model
  if model == "open" then return true end
  if model == "whitelist" then
    if a == "member" then return true end
    return false, err("cancel", "not-allowed", "only the node's whitelist may use it", "closed-node")
  end
  for _, owner in ipairs(node:owners()) do               -- "presence"
    if self:has_presence_of(owner, bare) then return true end
  end
  return false, err("auth", "not-authorized", "a presence subscription to the node's owner is required",
    "presence-subscription-required")
end

--- May `bare` publish to (and retract from) `node`?
function Service:can_publish(node, bare)
  local a = node:affiliation(bare)
  if a == "owner" or a == "publisher" then return true end
  local model = node.config.publish_model
  if a ~= "outcast" and (model == "open" or (model == "subscribers" and self:is_subscribed(node, bare))) then
    return true
  end
  return false, err("auth", "forbidden", "you may not publish to this node")
end

--- May `bare`, who may publish to `node`, replace or retract `item`? The
-- node's owners and publishers may change any item (XEP-0060 §4.1, the
-- affiliation table); whoever else the publish model lets in (open,
-- subscribers) only the items it published itself. An item with no
-- publisher recorded (kept by an older version) is the owners' and
-- publishers' alone. true, or false and the error.
function Service.may_change_item(_, node, bare, item)
  local a = node:affiliation(bare)
  if a == "owner" or a == "publisher" or (item.publisher ~= nil and item.publisher == bare) then return true end
  return false, err("auth", "forbidden", "this item was published by someone else")
end

function Service.is_subscribed(_, node, bare)
  for who in pairs(node.subscriptions) do
    if jid.bare(who) == bare then return true end
  end
  return false
end

---------------------------------------------------------------------------
-- notifications

-- Who hears about `node`: its subscribers, and for PEP the account itself
-- and its contacts with a presence subscription on this server; each
-- still allowed to read the node. Full JIDs of an account that gets a
-- bare-JID notification anyway are left out.
function Service:targets(node)
  local set = {}
  for who in pairs(node.subscriptions) do set[who] = true end
  if self.kind == "pep" then
    set[self.owner_bare] = true
    local hosts = self.srv.hosts
    for _, contact in ipairs(self.srv.store:roster_contacts(self.owner_user, SEES_OWNER)) do
      if hosts[jid.domain(contact)] then set[contact] = true end
    end
  end
  local list = {}
  for who in pairs(set) do
    local bare = jid.bare(who)
    if (who == bare or not set[bare]) and self:can_access(node, bare) then list[#list + 1] = who end
  end
  sort(list)
  return list
end

--- Sends <event> with `child` (an element) about `node` to its audience
-- (or to `only`, a list of JIDs). headline messages: delivered to the
-- available resources of an account, never kept offline.
function Service:notify(node, child, only)
  for _, to in ipairs(only or self:targets(node)) do
    self.ids = self.ids + 1
    local m = st.message({ from = self.jid, to = to, type = "headline", id = "ps" .. self.ids })
      :tag("event", { xmlns = NS_EVENT }):add_child(child):up()
    self.srv:route(m)
  end
end

--- The <items> element of a notification of `item`.
function Service.item_event(_, node, item)
  local e = st.stanza("items", { node = node.name }):tag("item", { id = item.id, publisher = item.publisher })
  if node.config.deliver_payloads and item.payload then e:add_child(item.payload) end
  return e:up()
end

--- Sends the node's last item to `to`, when the node says so for `when`
-- ("sub": on subscription, "presence": a contact came online).
function Service:send_last(node, to, when)
  local mode, last = node.config.send_last_published_item, node:last_item()
  if not last or mode == "never" or (when == "presence" and mode ~= "on_sub_and_presence") then return end
  self:notify(node, self:item_event(node, last), { to })
end

---------------------------------------------------------------------------
-- disco

-- The reply's <query/> of a disco request, and the node it asks about when
-- it names one the asker may see; or the error reply.
function Service:disco_query(iq, xmlns)
  local q = iq.tags[1]
  local r = st.reply(iq):tag("query", { xmlns = xmlns, node = q.attr.node })
  if not q.attr.node then return r end
  local node = self.nodes[q.attr.node]
  if not node or not self:can_access(node, jid.bare(iq.attr.from)) then
    return nil, st.error_reply(iq, "cancel", "item-not-found")
  end
  return r, node
end

function Service:disco_info(iq)
  local r, node = self:disco_query(iq, NS_DISCO_INFO)
  if not r then return node end
  if node then
    r:tag("identity", { category = "pubsub", type = "leaf" }):up()
    r:tag("feature", { var = NS }):up()
    return r
  end
  r:tag("identity", { category = "pubsub", type = self.kind == "pep" and "pep" or "service" }):up()
  self:features(r)
  return r
end

function Service:features(r)
  for _, f in ipairs({ NS_DISCO_INFO, NS_DISCO_ITEMS, NS }) do r:tag("feature", { var = f }):up() end
  for _, f in ipairs(M.FEATURES) do r:tag("feature", { var = NS .. "#" .. f }):up() end
  if self.kind == "pep" then r:tag("feature", { var = NS .. "#auto-create" }):up() end
end

function Service:disco_items(iq)
  local r, node = self:disco_query(iq, NS_DISCO_ITEMS)
  if not r then return node end
  if node then
    for _, it in ipairs(node.items) do r:tag("item", { jid = self.jid, name = it.id }):up() end
    return r
  end
  local names, from = {}, jid.bare(iq.attr.from)
  for name, n in pairs(self.nodes) do
    if self:can_access(n, from) then names[#names + 1] = name end
  end
  sort(names)
  for _, name in ipairs(names) do
    local title = self.nodes[name].config.title
    r:tag("item", { jid = self.jid, node = name, name = title ~= "" and title or nil }):up()
  end
  return r
end

require("lxmpp.server.pubsub_iq").install(M)

---------------------------------------------------------------------------
-- the service on its own domain

local Host = {}
Host.__index = Host
M.Host = Host

--- The host of the pubsub service on `domain`; its nodes come back from
-- the store.
function M.new_host(srv, domain)
  local d = type(domain) == "string" and jid.prep(domain)
  if not d or jid.node(d) or jid.resource(d) then
    error("lxmpp.server.pubsub: invalid pubsub domain " .. tostring(domain), 2)
  end
  local service = M.service(srv, d, "service")
  pubsub_node.restore(srv, function(at) return at == d and "service" end, function(_, _, make)
    service:add_node(make(service))
  end)
  srv:hook_builtin("user-removing", function(ev) service:account_removed(ev.bare) end, -13)
  return setmetatable({ srv = srv, domain = d, service = service }, Host)
end

function Host:deliver(s, node, _, res)
  local t, _, ns = domain_service.request(self.srv, s, node, res)
  if not t then return end
  local send = function(r) self.srv:route(r) end
  if t == "get" and ns == NS_DISCO_INFO then return send(self.service:disco_info(s)) end
  if t == "get" and ns == NS_DISCO_ITEMS then return send(self.service:disco_items(s)) end
  if t == "get" and ns == "urn:xmpp:ping" then return send(st.reply(s)) end
  return self.service:handle_iq(s, send)
end

return M
