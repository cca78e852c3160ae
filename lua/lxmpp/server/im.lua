-- lxmpp.server.im: the host of the server's own domain (RFC 6121 §8):
-- stanzas from our clients, delivery to our accounts (full JIDs, bare JIDs
-- by priority, message type rules), offline storage with XEP-0203 delay
-- stamps, and the IQs the server answers itself or on behalf of an account
-- (disco, ping, version, time, vCard, roster, in-band registration).

local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local presence = require "lxmpp.server.presence"
local mam = require "lxmpp.server.mam"
local carbons = require "lxmpp.server.carbons"
local blocking = require "lxmpp.server.blocking"
local private = require "lxmpp.server.private"
local bookmarks = require "lxmpp.server.bookmarks"

local setmetatable, tostring, pairs, ipairs, pcall, os_date, os_time =
  setmetatable, tostring, pairs, ipairs, pcall, os.date, os.time

local M = {}

local NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
local NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
local NS_REGISTER = "jabber:iq:register"
local NS_VCARD = "vcard-temp"

local IM = {}
IM.__index = IM

function M.new(srv)
  local self = setmetatable({ srv = srv, domain = srv.domain, started = os_time(), offline_pumps = {} }, IM)
  self.presence = presence.new(self)
  self.mam = mam.new(self)
  self.carbons, self.blocking = carbons.new(self), blocking.new(self)
  self.private, self.bookmarks = private.new(self), bookmarks.new(self)
  return self
end

---------------------------------------------------------------------------
-- from our clients

--- A stanza from a bound session; its 'from' is the session's full JID.
function IM:from_client(sess, s)
  local name = s.name
  if name == "presence" then return self.presence:outbound(sess, s) end
  if not s.attr.to then
    if name == "iq" then return self:account_iq(sess, s) end
    s.attr.to = sess.bare            -- a message to no one: to our own account
  end
  if name == "message" then self.mam:outgoing(sess, s) end
  if name == "message" then self.carbons:sent(sess, s) end
  return self.srv:route(s)
end

---------------------------------------------------------------------------
-- delivery to our domain

local function available_sessions(list)
  local best, top = {}, nil
  for _, sess in pairs(list or {}) do
    if sess.available and sess.priority >= 0 then
      if not top or sess.priority > top then
        best, top = { sess }, sess.priority
      elseif sess.priority == top then
        best[#best + 1] = sess
      end
    end
  end
  return best
end
IM.available_sessions = available_sessions

--- host:deliver(stanza, node, domain, resource), called by srv:route.
function IM:deliver(s, node, _, res)
  local name, srv = s.name, self.srv
  if not node then
    if name == "iq" then return self:server_iq(s) end
    return                                   -- presence/messages to the server itself
  end
  local bare = node .. "@" .. self.domain
  if name == "presence" then return self.presence:inbound(s, node, bare, res) end
  if name == "message" then self.mam:incoming(s, node, bare, not self:offline_full(node, bare, res)) end
  if name == "message" then self.carbons:received(s, bare, res) end
  if res then
    local sess = (srv.sessions[bare] or {})[res]
    if sess then return sess:send(s) end
    if name == "iq" then return srv:bounce(s, "cancel", "service-unavailable") end
    if name == "message" then
      local t = s.attr.type
      if t == "groupchat" then return srv:bounce(s, "cancel", "service-unavailable") end
      if t == "error" then return end
    end
  end
  if not srv:user_exists(node) then
    return srv:bounce(s, "cancel", "service-unavailable")
  end
  if name == "message" then return self:message_to_bare(s, node, bare) end
  if name == "iq" then return self:bare_iq(s, node, bare) end
end

-- RFC 6121 §8.5.2: a message to a bare JID, by type.
-- Would a message for node now go to its offline store, and is that full
-- (so that it bounces, and is not archived either)?
function IM:offline_full(node, bare, res)
  local list = self.srv.sessions[bare]
  if res and list and list[res] then return false end
  if #available_sessions(list) > 0 then return false end
  local n, bytes = self.srv.store:count_offline(node)
  local limits = self.srv.limits
  return n >= limits.max_offline or bytes >= limits.max_offline_bytes
end

function IM:message_to_bare(s, node, bare)
  local srv, t = self.srv, s.attr.type or "normal"
  if t == "groupchat" then return srv:bounce(s, "cancel", "service-unavailable") end
  local list = srv.sessions[bare]
  if t == "headline" then
    for _, sess in pairs(list or {}) do
      if sess.available and sess.priority >= 0 then sess:send(s) end
    end
    return
  end
  local best = available_sessions(list)
  if #best > 0 then
    for _, sess in ipairs(best) do sess:send(s) end
    return
  end
  if t == "error" then return end
  return self:store_offline(s, node)
end

function IM:store_offline(s, node)
  local srv, store = self.srv, self.srv.store
  if not srv:user_exists(node) then          -- removed (maybe a moment ago): never kept
    return srv:bounce(s, "cancel", "service-unavailable")
  end
  if not s:get_child("body") and not s:get_child(nil, "jabber:x:conference") and
      not s:get_child("x", "jabber:x:data") then
    return                                    -- chat states and receipts are not kept
  end
  local c = st.clone(s)
  c:tag("delay", { xmlns = "urn:xmpp:delay", from = self.domain,
    stamp = os_date("!%Y-%m-%dT%H:%M:%SZ") }):up()
  local xml = tostring(c)
  local n, bytes = store:count_offline(node)
  if n >= srv.limits.max_offline or bytes + #xml > srv.limits.max_offline_bytes then
    return srv:bounce(s, "wait", "resource-constraint", "the recipient's offline storage is full")
  end
  store:push_offline(node, xml)
end

--- Sends the offline messages of sess's account as fast as the client
-- reads them, and forgets each once it is written to the connection, or,
-- with XEP-0198, once the session keeps it until acknowledged (what is not
-- acknowledged goes back offline when the session ends). A session that
-- ends in the middle leaves the rest stored for the next one; one session
-- of an account receives them at a time.
function IM:send_offline(sess)
  local store, user = self.srv.store, sess.user
  local pumps = self.offline_pumps
  local busy = pumps[user]
  if busy and not busy.ended then return end
  local list = store:get_offline(user)
  if #list == 0 then return end
  pumps[user] = sess
  local i, unsent_upto = 1, nil
  local pump
  local function forget(upto)
    if upto then store:delete_offline(user, upto) end
  end
  pump = function()
    forget(unsent_upto)                      -- written to the connection by now
    unsent_upto = nil
    local last
    while i <= #list and not sess.ended do
      local m = list[i]
      i = i + 1
      local s = st.parse(m.data)
      if s and not self.blocking:blocked(user, s.attr.from) then   -- blocked since it was kept
        s.attr.to = sess.full
        if not sess:send(s) then break end
      end
      last = m.id
      if sess:congested() then break end
    end
    if sess.ended then
      if pumps[user] == sess then pumps[user] = nil end
      return
    end
    if sess.sm or not sess:congested() then forget(last) else unsent_upto = last end
    if i <= #list or unsent_upto then
      sess:when_writable(pump)
    elseif pumps[user] == sess then
      pumps[user] = nil
    end
  end
  pump()
end

--- The account `user` was removed: what is kept in memory about it goes.
function IM:account_removed(user)
  self.offline_pumps[user] = nil
  self.blocking:forget(user)
  self.presence.last_seen:delete(user .. "@" .. self.domain)
end

--- A session ended: presence goes unavailable.
function IM:session_ended(sess)
  if self.offline_pumps[sess.user] == sess then self.offline_pumps[sess.user] = nil end
  self.presence:session_ended(sess)
end

---------------------------------------------------------------------------
-- IQs

-- Answers iq with fn(iq) -> reply stanza | nil (empty result) | false (error sent).
local function answer(send, iq, fn)
  local ok, r = pcall(fn, iq)
  if not ok then
    send(st.error_reply(iq, "wait", "internal-server-error"))
    error(r, 0)
  end
  if r == false then return end
  send(r or st.reply(iq))
end

local function is_request(iq) return iq.attr.type == "get" or iq.attr.type == "set" end

-- disco#info of the server itself
local function server_info(self, iq)
  local q = iq.tags[1]
  if q.attr.node then return st.error_reply(iq, "cancel", "item-not-found") end
  local r = st.reply(iq):tag("query", { xmlns = NS_DISCO_INFO })
    :tag("identity", { category = "server", type = "im", name = "lxmpp" }):up()
  local features = { NS_DISCO_INFO, NS_DISCO_ITEMS, "urn:xmpp:ping", "jabber:iq:version",
    "urn:xmpp:time", "jabber:iq:last", "msgoffline", NS_VCARD, "jabber:iq:roster" }
  if self.srv.registration then features[#features + 1] = NS_REGISTER end
  features[#features + 1], features[#features + 2] = carbons.NS, blocking.NS
  -- XEP-0313 §6.1: clients (profanity) look for MAM on the server as well
  -- as on the account; the archive itself is the account's
  features[#features + 1], features[#features + 2] = mam.NS, private.NS
  for _, f in ipairs(features) do r:tag("feature", { var = f }):up() end
  return r
end

local function server_items(self, iq)
  if iq.tags[1].attr.node then return st.error_reply(iq, "cancel", "item-not-found") end
  local r = st.reply(iq):tag("query", { xmlns = NS_DISCO_ITEMS })
  local domains = {}
  for d in pairs(self.srv.hosts) do
    if d ~= self.domain and not self.srv.components[d] then domains[#domains + 1] = d end
  end
  for d in pairs(self.srv.components) do domains[#domains + 1] = d end  -- connected or not
  table.sort(domains)
  for _, d in ipairs(domains) do r:tag("item", { jid = d }):up() end
  return r
end

local SERVER_IQ = {
  [NS_DISCO_INFO] = server_info,
  [NS_DISCO_ITEMS] = server_items,
  ["urn:xmpp:ping"] = function() end,
  ["urn:ietf:params:xml:ns:xmpp-session"] = function() end,
  ["jabber:iq:version"] = function(_, iq)
    if iq.attr.type ~= "get" then return st.error_reply(iq, "cancel", "bad-request") end
    return st.reply(iq):tag("query", { xmlns = "jabber:iq:version" })
      :text_tag("name", "lxmpp"):text_tag("version", require("lxmpp").VERSION)
  end,
  ["urn:xmpp:time"] = function(_, iq)
    return st.reply(iq):tag("time", { xmlns = "urn:xmpp:time" })
      :text_tag("tzo", "+00:00"):text_tag("utc", os_date("!%Y-%m-%dT%H:%M:%SZ"))
  end,
  ["jabber:iq:last"] = function(self, iq)   -- a server's last activity is its uptime
    return st.reply(iq):tag("query", { xmlns = "jabber:iq:last", seconds = tostring(os_time() - self.started) })
  end,
}

--- An IQ to the server's own domain.
function IM:server_iq(iq)
  if not is_request(iq) then return end
  local q = iq.tags[1]
  local xmlns = q and q.attr.xmlns
  local srv = self.srv
  local send = function(r) srv:route(r) end
  local from = iq.attr.from
  local node, host = jid.prepped_split(from or "")
  if xmlns == NS_REGISTER and host == self.domain and node then
    local sess = (srv.sessions[node .. "@" .. host] or {})[jid.resource(from)]
    if sess then return self:register_iq(sess, iq) end
  end
  local fn = xmlns and SERVER_IQ[xmlns]
  if not fn then return srv:bounce(iq, "cancel", "service-unavailable") end
  return answer(send, iq, function(i) return fn(self, i) end)
end

-- vCard (vcard-temp) of an account: stored as XML under kind "vcard".
local function vcard_get(self, iq, node)
  local xml = self.srv.store:get("vcard", node)
  local v = xml and st.parse(xml)
  local r = st.reply(iq)
  r:add_child(v or st.stanza("vCard", { xmlns = NS_VCARD }))
  return r
end

-- disco#info of an account (XEP-0030), with its PEP service (XEP-0163)
local function account_info(self, iq, bare, owner)
  local r = st.reply(iq):tag("query", { xmlns = NS_DISCO_INFO })
    :tag("identity", { category = "account", type = "registered" }):up()
  if self.srv.pep then
    self.srv.pep:disco_identity(r, bare)
  else
    r:tag("feature", { var = NS_DISCO_INFO }):up()
  end
  -- the archive is the owner's alone
  if owner then for _, f in ipairs(mam.FEATURES) do r:tag("feature", { var = f }):up() end end
  if owner and self.srv.pep then for _, f in ipairs(bookmarks.FEATURES) do r:tag("feature", { var = f }):up() end end
  return r
end

--- An IQ from our user to its own account (no 'to', or its bare JID).
function IM:account_iq(sess, iq)
  if not is_request(iq) then return end
  local q = iq.tags[1]
  local xmlns = q and q.attr.xmlns
  local send = function(r) sess:send(r) end
  if xmlns == presence.NS_ROSTER and q.name == "query" then
    return self.presence:roster_iq(sess, iq)
  end
  if xmlns == NS_VCARD and q.name == "vCard" then
    return answer(send, iq, function(i)
      if i.attr.type == "get" then return vcard_get(self, i, sess.user) end
      self.srv.store:set("vcard", sess.user, tostring(q), sess.user)
    end)
  end
  if xmlns == NS_REGISTER then return self:register_iq(sess, iq) end
  if xmlns == mam.NS then return self.mam:iq(sess, iq) end
  if xmlns == private.NS then return self.private:iq(sess, iq) end
  local pep = self.srv.pep
  if pep and self.bookmarks:handles_pep(iq) then return self.bookmarks:pep_iq(sess, iq) end  -- XEP-0048 on PEP
  if pep and pep.handles(q) then return pep:iq(iq, sess.bare, send) end
  if xmlns == carbons.NS then return self.carbons:iq(sess, iq) end
  if xmlns == blocking.NS then return self.blocking:iq(sess, iq) end
  if xmlns == NS_DISCO_INFO then
    return answer(send, iq, function(i) return account_info(self, i, sess.bare, true) end)
  end
  local fn = xmlns and SERVER_IQ[xmlns]
  if fn and xmlns ~= NS_DISCO_ITEMS then return answer(send, iq, function(i) return fn(self, i) end) end
  return sess:send(st.error_reply(iq, "cancel", "service-unavailable"))
end

--- An IQ from someone else to one of our accounts' bare JID: the server
-- answers on the account's behalf (RFC 6121 §8.5.1).
function IM:bare_iq(iq, node, bare)
  if not is_request(iq) then return end
  local from_bare = iq.attr.from and jid.bare(iq.attr.from)
  if from_bare == bare then
    local sess = (self.srv.sessions[bare] or {})[jid.resource(iq.attr.from)]
    if sess then return self:account_iq(sess, iq) end
  end
  local q = iq.tags[1]
  local xmlns = q and q.attr.xmlns
  local send = function(r) self.srv:route(r) end
  if xmlns == NS_VCARD and iq.attr.type == "get" then
    return answer(send, iq, function(i) return vcard_get(self, i, node) end)
  end
  if xmlns == "urn:xmpp:ping" then return answer(send, iq, function() end) end
  if xmlns == mam.NS then return self.srv:bounce(iq, "auth", "forbidden", "only its owner may read an archive") end
  if xmlns == private.NS then   -- XEP-0049 §3
    return self.srv:bounce(iq, "cancel", "forbidden", "private storage is its owner's alone")
  end
  local pep = self.srv.pep
  if pep and pep.handles(q) then return pep:iq(iq, bare, send) end
  if xmlns == NS_DISCO_INFO and iq.attr.type == "get" then
    return answer(send, iq, function(i) return account_info(self, i, bare) end)
  end
  return self.srv:bounce(iq, "cancel", "service-unavailable")
end

---------------------------------------------------------------------------
-- in-band registration (XEP-0077)

local function register_form(iq, instructions)
  return st.reply(iq):tag("query", { xmlns = NS_REGISTER })
    :text_tag("instructions", instructions):tag("username"):up():tag("password"):up()
end

--- jabber:iq:register on a stream: before authentication (only when
-- registration is enabled) it creates accounts; after, it changes the
-- password or removes the account.
function IM:register_iq(sess, iq)
  local srv, q = self.srv, iq.tags[1]
  local send = function(r) sess:send(r) end
  if iq.attr.type == "get" then
    if sess.authenticated then
      local r = register_form(iq, "Change your password or remove your account.")
      r:tag("registered"):up()
      return send(r)
    end
    return send(register_form(iq, "Choose a user name and password."))
  end
  if sess.authenticated then
    if q:get_child("remove") then
      send(st.reply(iq))
      srv:remove_user(sess.user)
      return
    end
    local user, pw = q:get_child_text("username"), q:get_child_text("password")
    if not pw or pw == "" or (user and srv:account_name(user) ~= sess.user) then
      return send(st.error_reply(iq, "modify", "bad-request", "give your own user name and a new password"))
    end
    local ok, err = srv:set_password(sess.user, pw, sess)   -- the other sessions end
    if not ok then return send(st.error_reply(iq, "modify", "not-acceptable", err)) end
    return send(st.reply(iq))
  end
  if srv.auth then
    return send(st.error_reply(iq, "cancel", "not-allowed", "accounts are managed by the host application"))
  end
  local user, pw = q:get_child_text("username"), q:get_child_text("password")
  local node = user and srv:account_name(user)
  if not node or not pw or pw == "" then
    return send(st.error_reply(iq, "modify", "not-acceptable", "a valid user name and a password are required"))
  end
  if srv.reserved[node] then   -- (docs/server.md, "Throttles")
    return send(st.error_reply(iq, "cancel", "conflict", "that user name is reserved"))
  end
  if srv.store:get_account(node) then
    return send(st.error_reply(iq, "cancel", "conflict", "that user name is taken"))
  end
  -- registrations per address and time (server/throttle.lua); a refused
  -- name costs nothing, only an account made counts
  local addr, now = require("lxmpp.server.throttle").key(sess.ip), require("lxmpp.core").now()
  local allowed, wait = srv.registrations:allowed(addr, now)
  if not allowed then
    srv:log("warn", "refused a registration from %s: too many from that address", sess.ip)
    return send(st.error_reply(iq, "wait", "resource-constraint",
      ("too many accounts registered from your address: try again in %d seconds"):format(math.ceil(wait))))
  end
  local ok, err = srv:add_user(node, pw)
  if not ok then return send(st.error_reply(iq, "modify", "not-acceptable", err)) end
  srv.registrations:count(addr, now)
  srv:log("info", "registered %s@%s from %s", node, self.domain, sess.ip)
  return send(st.reply(iq))
end

return M
