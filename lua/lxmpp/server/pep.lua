-- lxmpp.server.pep: Personal Eventing Protocol (XEP-0163) for the accounts
-- of the embedded server. Each account's bare JID is a pubsub service
-- (lxmpp.server.pubsub, kind "pep"): the account creates nodes by
-- publishing to them; notifications go to the account's own available
-- resources, to its contacts with a presence subscription ("from" or
-- "both") and to explicit subscribers, as headline messages from the
-- account's bare JID. The server keeps no XEP-0115 caps, so it cannot
-- filter by "+notify" interest: every available resource of such a contact
-- gets the notifications (lxmpp clients ignore those they have no handler
-- for). When a resource becomes available it gets the last item of each
-- node it may read of its contacts' (and its own) PEP services.
--
-- The IM host (lxmpp.server.im) hands over pubsub requests to an account
-- and disco of its PEP nodes; presence (lxmpp.server.presence) calls
-- came_online.

local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local pubsub = require "lxmpp.server.pubsub"
local pubsub_node = require "lxmpp.server.pubsub_node"

local setmetatable, pairs, ipairs = setmetatable, pairs, ipairs
local sort = table.sort

local M = {}
local WE_SEE = { to = true, both = true }       -- contacts whose presence we get
local NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
local NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"

local Pep = {}
Pep.__index = Pep

--- The PEP services of srv's accounts; stored nodes come back.
function M.new(srv)
  local self = setmetatable({ srv = srv, services = {} }, Pep)
  pubsub_node.restore(srv, function(at)
    local user, domain, res = jid.prepped_split(at)
    return user and domain == srv.domain and not res and "pep"
  end, function(at, _, make)
    local service = self:service(at, true)
    service:add_node(make(service))
  end)
  self:setup()
  return self
end

-- Hooks requests to the PEP service of an account, from itself (iq/self)
-- or others (iq/bare), the accounts' disco#info, a resource becoming
-- available and the removal of an account.
function Pep:setup()
  local srv = self.srv
  local function handler(ev)
    local iq = ev.stanza
    if not Pep.handles(iq.tags[1]) then return nil end
    self:iq(iq, ev.bare, function(r) srv:reply(ev, r) end)
    return true
  end
  for _, ns in ipairs({ pubsub.NS, pubsub.NS_OWNER, NS_DISCO_INFO, NS_DISCO_ITEMS }) do
    srv:hook_builtin("iq/self/" .. ns, handler)
    srv:hook_builtin("iq/bare/" .. ns, handler)
  end
  srv:hook_builtin("disco-info/account", function(ev)
    self:disco_identity(ev.reply, ev.bare)
    ev.disco_listed = true
  end, -5)
  srv:hook_builtin("presence/initial", function(ev) self:came_online(ev.origin) end)
  srv:hook_builtin("user-removing", function(ev) self:account_removed(ev.bare) end, -5)
end

--- The PEP service of an account (bare JID), made when `create`.
function Pep:service(bare, create)
  local s = self.services[bare]
  if not s and create then
    s = pubsub.service(self.srv, bare, "pep", jid.node(bare))
    self.services[bare] = s
  end
  return s
end

--- The account `bare` is being removed: its own nodes are deleted (their
-- subscribers are told, XEP-0060 §8.4; the store rows would go with the
-- account anyway), and it loses its affiliations and subscriptions with
-- the nodes of every other account's PEP service.
function Pep:account_removed(bare)
  local own = self.services[bare]
  if own then
    local names = {}
    for name in pairs(own.nodes) do names[#names + 1] = name end
    sort(names)
    for _, name in ipairs(names) do own:delete(own.nodes[name]) end
    self.services[bare] = nil
  end
  for _, service in pairs(self.services) do service:account_removed(bare) end
end

--- Does the IM host hand this request (its first child) to PEP?
function Pep.handles(q)
  local ns = q and q.attr.xmlns
  if q and q.name == "pubsub" and (ns == pubsub.NS or ns == pubsub.NS_OWNER) then return true end
  return ns == NS_DISCO_ITEMS or (ns == NS_DISCO_INFO and q.attr.node ~= nil)
end

--- A request to the PEP service of account `bare`; send(reply).
function Pep:iq(iq, bare, send)
  local q = iq.tags[1]
  local service = self:service(bare, jid.bare(iq.attr.from) == bare)
  if not service then service = pubsub.service(self.srv, bare, "pep", jid.node(bare)) end  -- no nodes yet
  if q.attr.xmlns == NS_DISCO_INFO or q.attr.xmlns == NS_DISCO_ITEMS then
    if iq.attr.type ~= "get" then return send(st.error_reply(iq, "cancel", "bad-request")) end
    return send(q.attr.xmlns == NS_DISCO_INFO and service:disco_info(iq) or service:disco_items(iq))
  end
  return service:handle_iq(iq, send)
end

--- Adds PEP's identity and features to an account's disco#info reply
-- (the <query/> is open in r).
function Pep:disco_identity(r, bare)
  r:tag("identity", { category = "pubsub", type = "pep" }):up()
  local service = self.services[bare] or pubsub.service(self.srv, bare, "pep", jid.node(bare))
  service:features(r)
end

--- sess (one of our resources) became available: the last item of each
-- node of its contacts' PEP services it may read, and of its own.
function Pep:came_online(sess)
  local bares = { sess.bare }
  for _, contact in ipairs(self.srv.store:roster_contacts(sess.user, WE_SEE)) do
    if self.services[contact] then bares[#bares + 1] = contact end
  end
  for _, bare in ipairs(bares) do
    local service = self.services[bare]
    if service then
      local names = {}
      for name in pairs(service.nodes) do names[#names + 1] = name end
      sort(names)
      for _, name in ipairs(names) do
        local node = service.nodes[name]
        if service:can_access(node, sess.bare) then service:send_last(node, sess.full, "presence") end
      end
    end
  end
end

return M
