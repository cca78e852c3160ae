-- lxmpp.server.blocking: XEP-0191 blocking command on the embedded server.
--
-- Each account has a block list (prepared JIDs), kept in the server's
-- storage under kind "blocklist" (so SQLite keeps it across restarts, and
-- removing the account removes it) and cached in memory. Resources read it
-- with an IQ get, which also subscribes them to the pushes every change
-- sends; the list holds at most limits.max_blocklist items.
--
-- Enforcement sits on the server's router (srv:route), the one path every
-- stanza between two addresses takes:
--  * from a blocked JID to our user: presence and IQ results/errors are
--    dropped, IQ get/set and messages answered <service-unavailable/>
--    (XEP-0191 §3.3), nothing delivered, stored offline or copied (the IM
--    core also skips offline messages kept before the block); a
--    subscribed, unsubscribe or unsubscribed presence still updates the
--    user's roster (pushed, the presence itself not delivered), so that the
--    roster stays true to what the contact allows (refuse_inbound);
--  * from our user to a JID it blocks: not routed; messages and IQ
--    requests get <not-acceptable/> with <blocked xmlns=
--    'urn:xmpp:blocking:errors'/>, presence (broadcasts included) is
--    dropped.
--  * a mediated MUC invitation or decline (XEP-0045 §7.8.2) comes from
--    the room's address but on behalf of the occupant or invitee named in
--    its <invite from=.../> or <decline from=.../>: when our user blocks
--    that original sender, it is dropped, silently (the room is not the
--    one blocked, and telling it would tell the sender). A direct
--    invitation (XEP-0249) is a message from the sender itself, refused as
--    above.
-- Items match as XEP-0016 says: a full JID only itself, a bare JID its
-- resources, a domain itself, its users, resources and subdomains.
-- Stanzas within one account, and to or from the server's own domain, are
-- never blocked (an account cannot cut itself off from its server).
--
-- Blocking a contact sends it our unavailable presence (when it could see
-- our presence); unblocking sends our current presence again.

local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local split = require("lxmpp.server").split

local setmetatable, pairs, ipairs, next, tostring, table_sort =
  setmetatable, pairs, ipairs, next, tostring, table.sort

local M = {}
local NS = "urn:xmpp:blocking"
local NS_ERRORS = "urn:xmpp:blocking:errors"
local NS_MUC_USER = "http://jabber.org/protocol/muc#user"
M.NS = NS

local KIND = "blocklist"
local CACHE_MAX = 10000          -- accounts whose list is kept decoded in memory

local B = {}
B.__index = B

-- Hooks every routed stanza (route), the account's own requests, disco,
-- and the removal of an account.
function M.new(im)
  local self = setmetatable({ im = im, srv = im.srv, domain = im.srv.domain, cache = {}, cached = 0, push_id = 0 }, B)
  local srv = self.srv
  im:hook("route", function(ev)
    if srv.store and self:refuses(ev.stanza, ev.node, ev.host, ev.resource) then return true end
  end)
  im:hook("iq/self/" .. NS, function(ev) self:iq(ev.origin, ev.stanza); return true end)
  im:hook("disco-info/host", function(ev) ev.reply:tag("feature", { var = NS }):up() end)
  im:hook("user-removed", function(ev) self:forget(ev.node) end)
  return self
end

---------------------------------------------------------------------------
-- the lists

-- The block list of user as a set { [jid] = true } (cached).
function B:set_of(user)
  local set = self.cache[user]
  if set then return set end
  set = {}
  for _, j in ipairs(self.srv.store:get(KIND, user) or {}) do set[j] = true end
  if self.cached >= CACHE_MAX then self.cache, self.cached = {}, 0 end
  self.cache[user], self.cached = set, self.cached + 1
  return set
end

--- Forgets the cached list of user (its account was removed).
function B:forget(user)
  if self.cache[user] then self.cache[user], self.cached = nil, self.cached - 1 end
end

-- Does the set block the JID with these (prepared) parts? XEP-0191 §3.3
-- and XEP-0016: node@host/res, node@host, host/res, host and its parents.
local function matches(set, node, host, res)
  if not host or next(set) == nil then return false end
  local bare = node and (node .. "@" .. host) or host
  if res and set[bare .. "/" .. res] then return true end
  if node and set[bare] then return true end
  local d = host
  while d do
    if set[d] then return true end
    d = d:match("^[^.]+%.(.+)$")          -- the parent domain
  end
  return false
end
M.matches = matches

--- Does user block the JID j (a string)?
function B:blocked(user, j)
  return matches(self:set_of(user), split(j or ""))
end

--- Would our user's own block list stop a stanza from it to `to` (refuses,
-- outbound side)? Its own account and the server's domain are never blocked.
function B:blocks_outbound(user, to)
  local node, host, res = split(to or "")
  if not host or (node == user and host == self.domain) or (not node and host == self.domain) then
    return false
  end
  return matches(self:set_of(user), node, host, res)
end

-- Stores user's list (a set) and refreshes the cache; true or nil, message.
function B:save(user, set)
  local list = {}
  for j in pairs(set) do list[#list + 1] = j end
  table_sort(list)
  local ok, err = self.srv.store:set(KIND, user, #list > 0 and list or nil, user)
  if not ok then return nil, err end
  self:forget(user)
  return true
end

---------------------------------------------------------------------------
-- routing (srv:route calls refuses for every stanza)

-- Routes s past the block checks (our own answers to a blocked peer).
function B:route_through(s)
  self.passing = s
  self.srv:route(s)
  self.passing = nil
end

local function is_request(s) return s.name == "iq" and (s.attr.type == "get" or s.attr.type == "set") end

-- Our user `from` sent s to a JID it blocks.
local function refuse_outbound(self, s)
  local t = s.attr.type
  if s.name == "presence" or t == "error" or (s.name == "iq" and t == "result") then return true end
  local r = st.error_reply(s, { type = "cancel", condition = "not-acceptable",
    text = "you have blocked this address", extra = { namespace = NS_ERRORS, condition = "blocked" } })
  local node, host, res = split(s.attr.from)
  local sess = host == self.domain and res and self.srv:session(node .. "@" .. host, res)
  if sess then sess:send(r) end
  return true
end

-- Subscription presences from a blocked JID that still change the user's
-- roster (quietly): see refuse_inbound.
local KEEPS_ROSTER_TRUE = { subscribed = true, unsubscribe = true, unsubscribed = true }

-- s comes to our user (node@host) from a JID the user blocks. A
-- subscription-state presence (subscribed, unsubscribe, unsubscribed) is
-- applied to the user's roster, pushed, but not delivered as a presence
-- (XEP-0191 §3.3: nothing from the blocked JID reaches the user's
-- resources; RFC 6121 §3.2, §3.3: the contact's side of the subscription
-- is the contact's to end). Dropping it left the roster saying the user
-- sees the contact after the contact revoked that, which the contact's
-- server never honours, and ours must not either once the block goes.
-- A new request (subscribe) from a blocked JID is dropped: nothing is
-- kept pending.
local function refuse_inbound(self, s, node, host)
  local t = s.attr.type
  if is_request(s) or (s.name == "message" and t ~= "error" and t ~= "groupchat") then
    self:route_through(st.error_reply(s, "cancel", "service-unavailable"))
  elseif s.name == "presence" and KEEPS_ROSTER_TRUE[t] and self.srv:user_exists(node) then
    self.im.presence:inbound_subscription(s, node, node .. "@" .. host, t, jid.bare(s.attr.from), true)
  end
  return true
end

-- Whom a relayed MUC invitation or decline speaks for (XEP-0045 §7.8.2):
-- the 'from' of its <invite/> or <decline/>, or nil.
local function relayed_from(s)
  if s.name ~= "message" or s.attr.type == "error" then return nil end
  local x = s:get_child("x", NS_MUC_USER)
  local el = x and (x:get_child("invite") or x:get_child("decline"))
  return el and el.attr.from
end

--- true when s (to node@host/res) must not be routed; the refusal has
-- been handled then.
function B:refuses(s, node, host, res)
  if self.passing == s then return false end
  local fnode, fhost, fres = split(s.attr.from or "")
  if not fhost or (fnode == node and fhost == host) then return false end   -- within one account
  local domain = self.domain
  if fnode and fhost == domain and (node or host ~= domain) and
      matches(self:set_of(fnode), node, host, res) then
    return refuse_outbound(self, s)
  end
  if node and host == domain and (fnode or fhost ~= domain) and
      matches(self:set_of(node), fnode, fhost, fres) then
    return refuse_inbound(self, s, node, host)
  end
  local original = node and host == domain and relayed_from(s)
  if original then
    local onode, ohost, ores = split(original)
    if ohost and not (onode == node and ohost == host) and matches(self:set_of(node), onode, ohost, ores) then
      return true
    end
  end
  return false
end

---------------------------------------------------------------------------
-- presence on block and unblock

-- Addresses that can see sess's presence: subscribed contacts and those
-- it sent directed presence to.
local function watchers(sess, roster)
  local out = {}
  for contact, item in pairs(roster.items) do
    if item.subscription == "from" or item.subscription == "both" then out[contact] = true end
  end
  for to in pairs(sess.directed or {}) do out[to] = true end
  return out
end

-- After user blocked the items `added`: unavailable to each watcher now blocked.
function B:hide(user, added)
  local bare = user .. "@" .. self.domain
  local roster = self.srv.store:get_roster(user)
  for _, sess in pairs(self.srv:sessions_of(bare)) do
    if sess.available then
      for to in pairs(watchers(sess, roster)) do
        if matches(added, split(to)) then
          self:route_through(st.presence({ type = "unavailable", from = sess.full, to = to }))
          if sess.directed then sess.directed[to] = nil end
        end
      end
    end
  end
end

-- After user unblocked the items `removed`: our presence to each
-- subscribed contact that was blocked and is not any more.
function B:show(user, removed)
  local bare = user .. "@" .. self.domain
  local roster = self.srv.store:get_roster(user)
  local now = self:set_of(user)
  for _, sess in pairs(self.srv:sessions_of(bare)) do
    if sess.available then
      for contact, item in pairs(roster.items) do
        if (item.subscription == "from" or item.subscription == "both") and
            matches(removed, split(contact)) and not matches(now, split(contact)) then
          local p = st.clone(sess.presence)
          p.attr.from, p.attr.to = sess.full, contact
          self.srv:route(p)
        end
      end
    end
  end
end

---------------------------------------------------------------------------
-- the IQs (from our own resources)

local function bad(sess, iq, etype, cond, text) return sess:send(st.error_reply(iq, etype, cond, text)) end

-- The prepared JIDs of el's items, or nil, condition, text.
local function items_of(el)
  local list, seen = {}, {}
  for it in el:childtags("item") do
    local j = it.attr.jid and jid.prep(it.attr.jid)
    if not j then return nil, "jid-malformed", "not a valid JID: " .. tostring(it.attr.jid) end
    if not seen[j] then
      seen[j] = true
      list[#list + 1] = j
    end
  end
  return list
end

-- Sends the change to every resource of user that asked for the list.
function B:push(user, name, list)
  for _, sess in pairs(self.srv:sessions_of(user .. "@" .. self.domain)) do
    if sess.blocklist_wanted then
      self.push_id = self.push_id + 1
      local iq = st.iq({ type = "set", id = "block" .. self.push_id, to = sess.full }):tag(name, { xmlns = NS })
      for _, j in ipairs(list) do iq:tag("item", { jid = j }):up() end
      sess:send(iq)
    end
  end
end

local function get(self, sess, iq)
  sess.blocklist_wanted = true
  local list = {}
  for j in pairs(self:set_of(sess.user)) do list[#list + 1] = j end
  table_sort(list)
  local r = st.reply(iq):tag("blocklist", { xmlns = NS })
  for _, j in ipairs(list) do r:tag("item", { jid = j }):up() end
  return sess:send(r)
end

-- Stores the new list, answers, pushes the change, then hides our presence
-- from the newly blocked or shows it to the unblocked ("hide" or "show"
-- on `changed`; after the pushes).
local function commit(self, sess, iq, set, action, list, changed, presence_fn)
  local ok = self:save(sess.user, set)
  if not ok then return bad(sess, iq, "wait", "internal-server-error", "the block list could not be stored") end
  sess:send(st.reply(iq))
  self:push(sess.user, action, list)
  if next(changed) then self[presence_fn](self, sess.user, changed) end
end

local function block(self, sess, iq, list)
  if #list == 0 then return bad(sess, iq, "modify", "bad-request", "block at least one JID") end
  local old, set, n, added = self:set_of(sess.user), {}, 0, {}
  for j in pairs(old) do set[j], n = true, n + 1 end
  for _, j in ipairs(list) do
    if j == sess.bare then return bad(sess, iq, "modify", "not-acceptable", "an account cannot block itself") end
    if not set[j] then set[j], n, added[j] = true, n + 1, true end
  end
  if n > self.srv.limits.max_blocklist then
    return bad(sess, iq, "wait", "resource-constraint",
      ("a block list holds at most %d JIDs"):format(self.srv.limits.max_blocklist))
  end
  return commit(self, sess, iq, set, "block", list, added, "hide")
end

local function unblock(self, sess, iq, list)
  local old, set, removed = self:set_of(sess.user), {}, {}
  for j in pairs(old) do set[j] = true end
  if #list == 0 then
    removed, set = set, {}
  else
    for _, j in ipairs(list) do
      if set[j] then set[j], removed[j] = nil, true end
    end
  end
  return commit(self, sess, iq, set, "unblock", list, removed, "show")
end

--- A urn:xmpp:blocking IQ from one of our resources.
function B:iq(sess, iq)
  local q, t = iq.tags[1], iq.attr.type
  if t == "get" and q.name == "blocklist" then return get(self, sess, iq) end
  if t ~= "set" or (q.name ~= "block" and q.name ~= "unblock") then
    return bad(sess, iq, "modify", "bad-request", "get <blocklist/>, or set <block/> or <unblock/>")
  end
  local list, cond, text = items_of(q)
  if not list then return bad(sess, iq, "modify", cond, text) end
  if q.name == "block" then return block(self, sess, iq, list) end
  return unblock(self, sess, iq, list)
end

return M
