-- lxmpp.server.presence: rosters, presence subscriptions and presence
-- broadcast of the embedded server (RFC 6121 §2–§4 and Appendix A): the
-- subscription state machine on both sides (outbound from our user, inbound
-- to our user), roster pushes to interested resources with versioning,
-- initial/unavailable presence broadcast to subscribers and own resources,
-- probes, directed presence, and pending requests kept until the contact
-- logs in.

local compat = require "lxmpp.compat"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local bounded = require "lxmpp.bounded"

local setmetatable, tostring, pairs, ipairs, type, tonumber, math_floor, os_date =
  setmetatable, tostring, pairs, ipairs, type, tonumber, math.floor, os.date

-- Accounts whose last resource went offline, remembered (stamp only) to
-- date the answer to a probe; at most this many, the oldest forgotten.
local MAX_LAST_SEEN = 10000

local M = {}
local NS_ROSTER = "jabber:iq:roster"
M.NS_ROSTER = NS_ROSTER

local P = {}
P.__index = P

-- Hooks the account's roster requests (RFC 6121 §2) and the removal of an
-- account; fires presence/initial when a resource becomes available.
function M.new(im)
  local self = setmetatable({ im = im, srv = im.srv, domain = im.srv.domain, push_id = 0,
    last_seen = bounded.new(MAX_LAST_SEEN) }, P)
  im:hook("iq/self/" .. NS_ROSTER .. ":query", function(ev) self:roster_iq(ev.origin, ev.stanza); return true end)
  im:hook("user-removing", function(ev) self:account_removed(ev.node) end)
  im:hook("user-removed", function(ev) self.last_seen:delete(ev.bare) end)
  return self
end

---------------------------------------------------------------------------
-- roster items and pushes

local function item_element(contact, item)
  local e = st.stanza("item", { jid = contact, name = item.name,
    subscription = item.subscription, ask = item.ask })
  for _, g in ipairs(item.groups or {}) do e:text_tag("group", g) end
  return e
end

-- Sends a roster push (RFC 6121 §2.1.6) to each interested resource.
function P:push(user, contact, item, ver)
  for _, sess in pairs(self.srv:sessions_of(user .. "@" .. self.domain)) do
    if sess.interested then
      self.push_id = self.push_id + 1
      local iq = st.iq({ type = "set", id = "push" .. self.push_id, to = sess.full })
        :tag("query", { xmlns = NS_ROSTER, ver = tostring(ver) })
      iq:add_child(item and item_element(contact, item) or
        st.stanza("item", { jid = contact, subscription = "remove" }))
      sess:send(iq)
    end
  end
end

-- Stores an item (nil removes) and pushes it.
function P:set_item(user, contact, item)
  local ver = self.srv.store:set_roster_item(user, contact, item)
  self:push(user, contact, item, ver)
end

-- Is user's roster full (limits.max_roster items, or more stored before
-- the limit was lowered)? Then no item may be added to it; the items it
-- has may still change or go.
function P:roster_full(user)
  return self.srv.store:roster_size(user) >= self.srv.limits.max_roster
end

-- The text of a refusal because the roster is full.
function P:full_text()
  return ("a roster holds at most %d contacts"):format(self.srv.limits.max_roster)
end

local SEES_US = { from = true, both = true }       -- who gets our presence
local WE_SEE = { to = true, both = true }          -- whose presence we get

-- Delivers to every available resource of a local account.
function P:to_available(bare, s)
  for _, sess in pairs(self.srv:sessions_of(bare)) do
    if sess.available then
      local c = st.clone(s)
      c.attr.to = sess.full
      sess:send(c)
    end
  end
end

-- to_available, unless quiet.
function P:notify(bare, s, quiet)
  if not quiet then return self:to_available(bare, s) end
end

-- Unavailable presence from each available resource of `bare` to
-- `contact`: what a contact that could see us gets when the subscription
-- that let it see us ends (RFC 6121 §3.2.2, §3.3.3).
function P:unavailable_to(bare, contact)
  for _, other in pairs(self.srv:sessions_of(bare)) do
    if other.available then
      self.srv:route(st.presence({ type = "unavailable", from = other.full, to = contact }))
    end
  end
end

---------------------------------------------------------------------------
-- the roster IQ (RFC 6121 §2)

local function bad(sess, iq, cond, text) return sess:send(st.error_reply(iq, "modify", cond, text)) end

function P:roster_iq(sess, iq)
  local q, store = iq.tags[1], self.srv.store
  if iq.attr.type == "get" then
    sess.interested = true
    if q.attr.ver and q.attr.ver == tostring(store:roster_version(sess.user)) then
      return sess:send(st.reply(iq))        -- unchanged: pushes follow
    end
    local roster = store:get_roster(sess.user)
    local r = st.reply(iq):tag("query", { xmlns = NS_ROSTER, ver = tostring(roster.ver) })
    for contact, item in pairs(roster.items) do r:add_child(item_element(contact, item)) end
    return sess:send(r)
  end
  local items = {}
  for it in q:childtags("item") do items[#items + 1] = it end
  if #items ~= 1 then return bad(sess, iq, "bad-request", "a roster set carries exactly one item") end
  local it = items[1]
  local contact = it.attr.jid and jid.prep(it.attr.jid)
  if not contact or jid.resource(contact) then return bad(sess, iq, "jid-malformed", "the item needs a bare JID") end
  if contact == sess.bare then return bad(sess, iq, "not-allowed", "an account cannot be its own contact") end
  local sub = it.attr.subscription
  if sub == "remove" then
    local item = store:get_roster_item(sess.user, contact)
    if not item then return sess:send(st.error_reply(iq, "cancel", "item-not-found")) end
    local from, pending = sess.bare, store:get_pending(sess.user, contact)
    if item.subscription == "to" or item.subscription == "both" or item.ask then
      self.srv:route(st.presence({ type = "unsubscribe", from = from, to = contact }))
    end
    if item.subscription == "from" or item.subscription == "both" or pending then
      self.srv:route(st.presence({ type = "unsubscribed", from = from, to = contact }))
    end
    -- RFC 6121 §2.5.2 and §3.2.2: a contact that could see our presence
    -- sees us go, from every resource it saw
    if item.subscription == "from" or item.subscription == "both" then self:unavailable_to(from, contact) end
    if pending then store:set_pending(sess.user, contact, nil) end
    self:set_item(sess.user, contact, nil)
    return sess:send(st.reply(iq))
  end
  if sub ~= nil and sub ~= "none" and sub ~= "both" and sub ~= "to" and sub ~= "from" then
    return bad(sess, iq, "bad-request", "unknown subscription value")
  end
  local groups, seen = {}, {}
  for g in it:childtags("group") do
    local name = g:get_text() or ""
    if name == "" or seen[name] then return bad(sess, iq, "bad-request", "empty or duplicate group") end
    seen[name] = true
    groups[#groups + 1] = name
  end
  local old = store:get_roster_item(sess.user, contact)
  -- RFC 6121 §2.3.3: the server may refuse a roster set; a new contact
  -- past limits.max_roster is refused (changing or removing one is not)
  if not old and self:roster_full(sess.user) then
    return sess:send(st.error_reply(iq, "cancel", "resource-constraint", self:full_text()))
  end
  self:set_item(sess.user, contact, {
    name = it.attr.name ~= "" and it.attr.name or nil, groups = groups,
    subscription = old and old.subscription or "none", ask = old and old.ask or nil,
  })
  return sess:send(st.reply(iq))
end

---------------------------------------------------------------------------
-- subscriptions (RFC 6121 §3, state tables of Appendix A)

local function new_item() return { subscription = "none", groups = {} } end

-- Outbound: our user `user` sends `typ` to contact (a bare JID).
function P:outbound_subscription(sess, s, typ, contact)
  local srv, store, user, bare = self.srv, self.srv.store, sess.user, sess.bare
  local item = store:get_roster_item(user, contact)
  local pending = store:get_pending(user, contact)
  -- a subscription that would add a contact to a full roster is refused
  -- (the request stays pending for a "subscribed" that is refused)
  if not item and (typ == "subscribe" or (typ == "subscribed" and pending)) and self:roster_full(user) then
    return sess:bounce(s, "cancel", "resource-constraint", self:full_text())
  end
  s.attr.from, s.attr.to = bare, contact
  if typ == "subscribe" then
    item = item or new_item()
    if item.subscription ~= "to" and item.subscription ~= "both" and item.ask ~= "subscribe" then
      item.ask = "subscribe"
      self:set_item(user, contact, item)
    end
    return srv:route(s)
  elseif typ == "subscribed" then
    if not pending then return end   -- no pre-approvals
    store:set_pending(user, contact, nil)
    item = item or new_item()
    item.subscription = (item.subscription == "to" or item.subscription == "both") and "both" or "from"
    self:set_item(user, contact, item)
    srv:route(s)
    for _, other in pairs(srv:sessions_of(bare)) do   -- our current presence
      if other.available then
        local p = st.clone(other.presence)
        p.attr.from, p.attr.to = other.full, contact
        srv:route(p)
      end
    end
  elseif typ == "unsubscribe" then
    if not item or not (item.subscription == "to" or item.subscription == "both" or item.ask) then return end
    item.ask = nil
    item.subscription = item.subscription == "both" and "from" or (item.subscription == "from" and "from" or "none")
    self:set_item(user, contact, item)
    return srv:route(s)
  elseif typ == "unsubscribed" then
    if pending then
      store:set_pending(user, contact, nil)
      return srv:route(s)                            -- a denial
    end
    if not item or not (item.subscription == "from" or item.subscription == "both") then return end
    item.subscription = item.subscription == "both" and "to" or "none"
    self:set_item(user, contact, item)
    srv:route(s)
    self:unavailable_to(bare, contact)
  end
end

-- What is kept of a subscription request until the user answers it: who
-- and the status text and nickname (XEP-0172) a person reads, each cut to
-- MAX_REQUEST_TEXT characters; whatever else it carried is not stored, so a
-- stored request is small whatever was sent (it is delivered whole to the
-- user's available resources when it arrives).
local MAX_REQUEST_TEXT = 1024
local function cut(text)
  local e = compat.utf8_offset(text, MAX_REQUEST_TEXT + 1)      -- whole characters only
  return e and text:sub(1, e - 1) or text
end

local function pending_request(s)
  local r = st.presence({ type = "subscribe", from = s.attr.from, to = s.attr.to, id = s.attr.id })
  local status = s:get_child_text("status")
  if status then r:text_tag("status", cut(status)) end
  local nick = s:get_child_text("nick", "http://jabber.org/protocol/nick")
  if nick then r:text_tag("nick", cut(nick), { xmlns = "http://jabber.org/protocol/nick" }) end
  return tostring(r)
end

-- Inbound: `typ` from contact (bare) to our user `user`; quiet: the
-- roster changes (and is pushed) but the user's resources do not get the
-- presence itself (the user blocks the contact).
function P:inbound_subscription(s, user, bare, typ, contact, quiet)
  local srv, store = self.srv, self.srv.store
  local item = store:get_roster_item(user, contact)
  local pending = store:get_pending(user, contact)
  s.attr.from, s.attr.to = contact, bare
  if typ == "subscribe" then
    if item and (item.subscription == "from" or item.subscription == "both") then
      return srv:route(st.presence({ type = "subscribed", from = bare, to = contact }))
    end
    -- kept pending even when the roster is full: a request is no roster
    -- item (limits.max_pending bounds them); approving it adds one, and
    -- that is what a full roster refuses (outbound_subscription)
    if not pending then
      local _, n = store:roster_size(user)
      if n >= srv.limits.max_pending then
        local e = st.error_reply(s, "wait", "resource-constraint", "too many subscription requests wait for this user")
        e.attr.from = bare
        return srv:route(e)
      end
      store:set_pending(user, contact, pending_request(s))
    end
    return self:notify(bare, s, quiet)
  elseif typ == "subscribed" then
    if not item or item.ask ~= "subscribe" then return end
    item.ask = nil
    item.subscription = item.subscription == "from" and "both" or "to"
    self:set_item(user, contact, item)
    return self:notify(bare, s, quiet)
  elseif typ == "unsubscribe" then
    if pending then store:set_pending(user, contact, nil) end
    if not item or not (item.subscription == "from" or item.subscription == "both") then return end
    item.subscription = item.subscription == "both" and "to" or "none"
    self:set_item(user, contact, item)
    self:notify(bare, s, quiet)
    self:unavailable_to(bare, contact)
  elseif typ == "unsubscribed" then
    if not item or not (item.subscription == "to" or item.subscription == "both" or item.ask) then return end
    item.ask = nil
    item.subscription = item.subscription == "both" and "from" or (item.subscription == "from" and "from" or "none")
    self:set_item(user, contact, item)
    return self:notify(bare, s, quiet)
  end
end

---------------------------------------------------------------------------
-- presence

local SUBSCRIPTION = { subscribe = true, subscribed = true, unsubscribe = true, unsubscribed = true }

-- Presence our server sends for a local contact's available resources to
-- `to` (answering a probe or an initial presence).
function P:current_presence(contact_bare, to, send)
  for _, other in pairs(self.srv:sessions_of(contact_bare)) do
    if other.available then
      local p = st.clone(other.presence)
      p.attr.from, p.attr.to = other.full, to
      send(p)
    end
  end
end

-- Presence broadcast from a session (no 'to'): available or unavailable.
function P:broadcast(sess, s)
  local srv = self.srv
  local available = s.attr.type ~= "unavailable"
  local first = available and not sess.available
  if not available and not sess.available then return end
  if available then
    local prio = math_floor(tonumber(s:get_child_text("priority")) or 0)
    sess.priority = prio < -128 and -128 or (prio > 127 and 127 or prio)
    sess.presence = st.clone(s)
  end
  sess.available = available
  local store = srv.store
  for _, contact in ipairs(store:roster_contacts(sess.user, SEES_US)) do
    local p = st.clone(s)
    p.attr.to = contact
    srv:route(p)
    if sess.directed then sess.directed[contact] = nil end
  end
  for _, other in pairs(srv:sessions_of(sess.bare)) do
    if other.available or other == sess then
      local p = st.clone(s)
      p.attr.to = other.full
      other:send(p)
    end
  end
  if not available then
    self:went_offline(sess.bare)
    for to in pairs(sess.directed or {}) do
      srv:route(st.presence({ type = "unavailable", from = sess.full, to = to }))
    end
    sess.directed = nil
    return
  end
  if not first then return end
  local send = function(p) srv:route(p) end   -- routed: block lists apply
  for _, contact in ipairs(store:roster_contacts(sess.user, WE_SEE)) do
    if srv.hosts[jid.domain(contact)] == self.im then
      -- RFC 6121 §4.3.2: the contact's server decides, from the contact's
      -- roster, as inbound_probe does; our user's own roster may say
      -- to/both after the contact revoked (a revocation its side never
      -- applied), and that never lets it see the contact's presence. As
      -- a probe would, "unsubscribed" then brings our user's roster in
      -- line (not while the contact has our user's request to answer).
      local node = jid.node(contact)
      local exists = node and srv:user_exists(node)
      local item = exists and store:get_roster_item(node, sess.bare)
      if item and SEES_US[item.subscription] then
        self:current_presence(contact, sess.full, send)
      elseif not (exists and store:get_pending(node, sess.bare)) then
        srv:route(st.presence({ type = "unsubscribed", from = contact, to = sess.bare }))
      end
    else
      srv:route(st.presence({ type = "probe", from = sess.bare, to = contact }))
    end
  end
  for contact, request in pairs(store:get_pending_requests(sess.user)) do
    local p = type(request) == "string" and st.parse(request) or
      st.presence({ type = "subscribe", from = contact, to = sess.bare })
    p.attr.to = sess.full
    if not self.im.blocking:blocked(sess.user, contact) then sess:send(p) end
  end
  for _, other in pairs(srv:sessions_of(sess.bare)) do
    if other ~= sess and other.available then
      local p = st.clone(other.presence)
      p.attr.from, p.attr.to = other.full, sess.full
      sess:send(p)
    end
  end
  srv:fire("presence/initial", { origin = sess })
  if sess.priority >= 0 then self.im:send_offline(sess) end
end

-- Is there room for one more directed presence (limits.max_directed) in
-- sess's set? sess.ndirected counts the additions, an upper bound (what
-- unavailable presence removes is not subtracted), recounted when it
-- reaches the limit.
function P:directed_room(sess, directed)
  local max = self.srv.limits.max_directed
  local n = sess.ndirected or 0
  if n >= max then
    n = 0
    for _ in pairs(directed) do n = n + 1 end
  end
  if n >= max then
    sess.ndirected = n
    return false
  end
  sess.ndirected = n + 1
  return true
end

--- Presence from one of our clients (from = its full JID).
function P:outbound(sess, s)
  local typ, to = s.attr.type, s.attr.to
  if SUBSCRIPTION[typ] then
    local contact = to and jid.prep(to)
    if not contact then return sess:bounce(s, "modify", "jid-malformed", "a subscription needs a valid 'to'") end
    return self:outbound_subscription(sess, s, typ, jid.bare(contact))
  end
  if typ == "probe" then return self:outbound_probe(sess, s) end
  if typ ~= nil and typ ~= "unavailable" and typ ~= "error" then
    return sess:bounce(s, "modify", "bad-request", "unknown presence type")
  end
  if not to then
    if typ == "error" then return end
    return self:broadcast(sess, s)
  end
  if typ == nil then
    local directed = sess.directed or {}
    if not directed[to] and not self:directed_room(sess, directed) then
      return sess:bounce(s, "wait", "resource-constraint",
        "too many directed presences from this session (limits.max_directed)")
    end
    sess.directed = directed
    directed[to] = true
  elseif typ == "unavailable" and sess.directed then
    sess.directed[to] = nil
  end
  return self.srv:route(s)
end

--- Presence to one of our accounts (bare, resource or nil).
function P:inbound(s, node, bare, res)
  local typ = s.attr.type
  local from = s.attr.from
  if not from then return end
  if SUBSCRIPTION[typ] then
    if not self.srv:user_exists(node) then return end
    return self:inbound_subscription(s, node, bare, typ, jid.bare(from))
  end
  if typ == "probe" then return self:inbound_probe(s, node, bare) end
  if res then
    local sess = self.srv:session(bare, res)
    if sess then sess:send(s) end
    return
  end
  return self:to_available(bare, s)
end

-- Remembers when `bare` had no available resource left (RFC 6121 §4.3.2:
-- the answer to a probe then says since when, as a XEP-0203 delay).
function P:went_offline(bare)
  for _, other in pairs(self.srv:sessions_of(bare)) do
    if other.available then return end
  end
  self.last_seen:delete(bare)                  -- to the young end of the ring
  self.last_seen:put(bare, os_date("!%Y-%m-%dT%H:%M:%SZ"))
end

--- A probe from one of our clients (RFC 6121 §4.3: clients SHOULD NOT
-- send them, but the server routes or processes one and never answers it
-- with an error just for being sent). It goes out from the client's full
-- JID, so the answers come back to the resource that asked. To the
-- account's own bare JID (or with no 'to'), the answer is the presence of
-- its available resources: an account always sees itself.
function P:outbound_probe(sess, s)
  local to = s.attr.to and jid.prep(s.attr.to)
  if s.attr.to and not to then return sess:bounce(s, "modify", "jid-malformed", "a probe needs a valid 'to'") end
  if not to or jid.bare(to) == sess.bare then
    return self:current_presence(sess.bare, sess.full, function(p) sess:send(p) end)
  end
  s.attr.to = to
  return self.srv:route(s)
end

-- A probe to our account `node` (to its bare or a full JID: either way
-- about the account, RFC 6121 §4.3.2), answered on its behalf:
--  * the prober is subscribed (from/both): the last presence of each
--    available resource, or an unavailable from the bare JID when none is,
--    dated (XEP-0203) when the account went offline since the server started;
--  * it is not, or the account does not exist: "unsubscribed", which ends
--    a subscription the prober's side still believes in (not sent while
--    the prober's own subscription request awaits an answer here: it would
--    cancel that request on the prober's side, RFC 6121 §3.1.3 keeps it);
--  * its 'from' is blocked by the account: nothing (the router drops it).
function P:inbound_probe(s, node, bare)
  local from = s.attr.from
  local prober = jid.bare(from)
  if prober == bare then return end   -- our own account, answered at outbound_probe
  local exists = self.srv:user_exists(node)
  local item = exists and self.srv.store:get_roster_item(node, prober)
  local route = function(p) self.srv:route(p) end
  if item and (item.subscription == "from" or item.subscription == "both") then
    local n = 0
    self:current_presence(bare, from, function(p) n = n + 1; route(p) end)
    if n == 0 then
      local p = st.presence({ type = "unavailable", from = bare, to = from, id = s.attr.id })
      local stamp = self.last_seen:get(bare)
      if stamp then p:tag("delay", { xmlns = "urn:xmpp:delay", from = self.domain, stamp = stamp }):up() end
      route(p)
    end
  elseif not (exists and self.srv.store:get_pending(node, prober)) then
    route(st.presence({ type = "unsubscribed", from = bare, to = prober, id = s.attr.id }))
  end
end

--- The account `user` is being removed (its sessions have ended): every
-- contact it had a subscription with, or a request pending, is told as
-- when a user cancels or revokes a subscription (RFC 6121 §3.2, §3.3):
-- `unsubscribed` to those who could see its presence (from, both) or asked
-- to, `unsubscribe` to those whose presence it could see (to, both) or
-- asked to see. A local contact's roster is updated here and pushed to its
-- interested resources, whatever the block lists say: a subscription to a
-- removed account must not survive for a later account of the same name.
function P:account_removed(user)
  local srv = self.srv
  local bare = user .. "@" .. self.domain
  local roster = srv.store:get_roster(user)
  local tell = {}
  for contact, item in pairs(roster.items) do
    local sub = item.subscription
    tell[contact] = { unsubscribe = sub == "to" or sub == "both" or item.ask ~= nil,
      unsubscribed = sub == "from" or sub == "both" }
  end
  for contact in pairs(roster.pending) do
    tell[contact] = tell[contact] or {}
    tell[contact].unsubscribed = true
  end
  for contact, what in pairs(tell) do
    for _, typ in ipairs({ "unsubscribe", "unsubscribed" }) do
      if what[typ] then
        local p = st.presence({ type = typ, from = bare, to = contact })
        local node, host, res = jid.prepped_split(contact)
        if node and not res and srv.hosts[host] == self.im then
          if srv:user_exists(node) then
            self:inbound_subscription(p, node, contact, typ, bare, self.im.blocking:blocked(node, bare))
          end
        elseif host then
          self.im.blocking:route_through(p)       -- its own block list no longer matters
        end
      end
    end
  end
end

--- A session ended: it goes unavailable for everyone who saw it.
function P:session_ended(sess)
  if sess.available then
    self:broadcast(sess, st.presence({ type = "unavailable", from = sess.full }))
  end
end

return M
