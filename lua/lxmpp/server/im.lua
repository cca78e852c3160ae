-- lxmpp.server.im: the host of the server's own domain (RFC 6121 §8):
-- stanzas from our clients, delivery to our accounts (full JIDs, bare JIDs
-- by priority, message type rules), offline storage with XEP-0203 delay
-- stamps. It routes and fires the server's stanza events on the way
-- (docs/server.md, "Adding a server feature"); every feature (archive,
-- carbons, blocking, PEP, private storage, registration, disco, vCard, the
-- small IQs below) hooks them in its own setup.

local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local split = require("lxmpp.server").split
local presence = require "lxmpp.server.presence"
local mam = require "lxmpp.server.mam"
local carbons = require "lxmpp.server.carbons"
local blocking = require "lxmpp.server.blocking"
local private = require "lxmpp.server.private"
local bookmarks = require "lxmpp.server.bookmarks"
local register = require "lxmpp.server.register"

local setmetatable, tostring, pairs, ipairs, os_date, os_time =
  setmetatable, tostring, pairs, ipairs, os.date, os.time

local M = {}

local NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
local NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
local NS_VCARD = "vcard-temp"

-- event names by stanza name, made once (routing fires them constantly)
local function names(fmt)
  return { message = fmt:format("message"), presence = fmt:format("presence"), iq = fmt:format("iq") }
end
local PRE = { full = names("pre-%s/full"), bare = names("pre-%s/bare"), host = names("pre-%s/host") }
local ON_FULL, ON_BARE, ON_HOST = names("%s/full"), names("%s/bare"), names("%s/host")

local IM = {}
IM.__index = IM

function M.new(srv)
  local self = setmetatable({ srv = srv, domain = srv.domain, started = os_time(), offline_pumps = {} }, IM)
  self.presence = presence.new(self)
  self.mam = mam.new(self, self.srv.opts.archive ~= false)
  self.carbons, self.blocking = carbons.new(self), blocking.new(self)
  self.private, self.bookmarks = private.new(self), bookmarks.new(self)
  self.register = register.new(self)
  self:setup()
  return self
end

--- im:hook(name, fn [, priority]): a handler of the server's own features
-- (priority -10 unless given: after the host application's), unhooked
-- when the server stops.
function IM:hook(name, fn, priority)
  return self.srv:hook_builtin(name, fn, priority)
end

---------------------------------------------------------------------------
-- from our clients

-- "full", "bare" or "host": the kind of address s goes to (no 'to': the
-- sender's own account).
local function to_kind(to)
  if not to then return "bare" end
  local node, host, res = split(to)
  if res then return "full" end
  if node or not host then return "bare" end
  return "host"
end

--- A stanza from a bound session; its 'from' is the session's full JID.
--- pre-<name>/<kind> fires first: a handler that returns non-nil has
--- handled (or dropped) it.
function IM:from_client(sess, s)
  local name = s.name
  if name == "message" and not s.attr.to then
    s.attr.to = sess.bare            -- a message to no one: to our own account
  end
  local ev = { origin = sess, stanza = s }
  if self.srv:fire(PRE[to_kind(s.attr.to)][name], ev) then return end
  if name == "presence" then return self.presence:outbound(sess, s) end
  if not s.attr.to and name == "iq" then return self:account_iq(sess, s) end
  return self.srv:route(s, ev)
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

--- host:deliver(stanza, node, domain, resource, event), called by
--- srv:route; fires <name>/full, <name>/bare or <name>/host with event
--- (its bare filled in) before the delivery that RFC 6121 §8 asks.
function IM:deliver(s, node, _, res, ev)
  local name, srv = s.name, self.srv
  ev = ev or { stanza = s, node = node, host = self.domain, resource = res }
  if not node then
    if name == "iq" then return self:server_iq(s, ev) end
    srv:fire(ON_HOST[name], ev)              -- presence/messages to the server itself: dropped unless hooked
    return
  end
  local bare = node .. "@" .. self.domain
  ev.bare = bare
  if srv:fire((res and ON_FULL or ON_BARE)[name], ev) then return end
  if name == "presence" then return self.presence:inbound(s, node, bare, res) end
  if res then
    local sess = srv:session(bare, res)
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
  if name == "iq" then return self:bare_iq(s, node, bare, ev) end
end

-- RFC 6121 §8.5.2: a message to a bare JID, by type.
-- Would a message for node now go to its offline store, and is that full
-- (so that it bounces, and is not archived either)?
function IM:offline_full(node, bare, res)
  local list = self.srv:sessions_of(bare)
  if res and list[res] then return false end
  if #available_sessions(list) > 0 then return false end
  local n, bytes = self.srv.store:count_offline(node)
  local limits = self.srv.limits
  return n >= limits.max_offline or bytes >= limits.max_offline_bytes
end

function IM:message_to_bare(s, node, bare)
  local srv, t = self.srv, s.attr.type or "normal"
  if t == "groupchat" then return srv:bounce(s, "cancel", "service-unavailable") end
  local list = srv:sessions_of(bare)
  if t == "headline" then
    for _, sess in pairs(list) do
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
  -- XEP-0203: the time this server first kept it. A message read from
  -- offline storage that comes back from a session that never acknowledged
  -- it (XEP-0198) has that delay already (send_offline marks it: a sender's
  -- own delay element proves nothing), and a second would say it came later.
  if not s.kept_offline then
    c:tag("delay", { xmlns = "urn:xmpp:delay", from = self.domain,
      stamp = os_date("!%Y-%m-%dT%H:%M:%SZ") }):up()
  end
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
      if s then s.kept_offline = true end       -- (store_offline: it has our delay)
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


--- A session ended: presence goes unavailable.
function IM:session_ended(sess)
  if self.offline_pumps[sess.user] == sess then self.offline_pumps[sess.user] = nil end
  self.presence:session_ended(sess)
end

---------------------------------------------------------------------------
-- IQs: each request fires iq/<kind>/<xmlns>:<name>, then iq/<kind>/<xmlns>
-- (kind: host for the server's domain, self for an account's own, bare for
-- someone else's account); nobody handles it: service-unavailable.

local function is_request(iq) return iq.attr.type == "get" or iq.attr.type == "set" end

-- Fires the iq events of kind for the request iq; true if handled.
local function fire_iq(srv, kind, iq, ev)
  local q = iq.tags[1]
  local xmlns = q and q.attr.xmlns
  if not xmlns then return nil end
  local prefix = "iq/" .. kind .. "/" .. xmlns
  return srv:fire(prefix .. ":" .. q.name, ev) or srv:fire(prefix, ev)
end

--- An IQ to the server's own domain.
function IM:server_iq(iq, ev)
  if not is_request(iq) then return end
  local srv = self.srv
  if fire_iq(srv, "host", iq, ev or { stanza = iq }) then return end
  return srv:bounce(iq, "cancel", "service-unavailable")
end

--- An IQ from our user to its own account (no 'to', or its bare JID).
function IM:account_iq(sess, iq)
  if not is_request(iq) then return end
  local ev = { origin = sess, stanza = iq, node = sess.user, bare = sess.bare, host = self.domain, owner = true }
  if fire_iq(self.srv, "self", iq, ev) then return end
  return sess:send(st.error_reply(iq, "cancel", "service-unavailable"))
end

--- An IQ from someone else to one of our accounts' bare JID: the server
-- answers on the account's behalf (RFC 6121 §8.5.1).
function IM:bare_iq(iq, node, bare, ev)
  if not is_request(iq) then return end
  local from_bare = iq.attr.from and jid.bare(iq.attr.from)
  if from_bare == bare then
    local sess = self.srv:session(bare, jid.resource(iq.attr.from))
    if sess then return self:account_iq(sess, iq) end
  end
  ev = ev or { stanza = iq }
  ev.node, ev.bare = node, bare
  if fire_iq(self.srv, "bare", iq, ev) then return end
  return self.srv:bounce(iq, "cancel", "service-unavailable")
end

--- im:answer(event, fn): answers the iq of event with fn(iq) -> a reply
--- stanza | nil (an empty result) | false (fn replied itself); true.
function IM:answer(ev, fn)
  local r = fn(ev.stanza)
  if r ~= false then self.srv:reply(ev, r or st.reply(ev.stanza)) end
  return true
end

-- disco#info of the server itself: its features come from the features'
-- handlers of disco-info/host (ev.reply, the <query/> open)
local function server_info(self, ev)
  local iq = ev.stanza
  if iq.tags[1].attr.node then return st.error_reply(iq, "cancel", "item-not-found") end
  local r = st.reply(iq):tag("query", { xmlns = NS_DISCO_INFO })
    :tag("identity", { category = "server", type = "im", name = "lxmpp" }):up()
  for _, f in ipairs({ NS_DISCO_INFO, NS_DISCO_ITEMS, "urn:xmpp:ping", "jabber:iq:version",
      "urn:xmpp:time", "jabber:iq:last", "msgoffline", NS_VCARD, "jabber:iq:roster" }) do
    r:tag("feature", { var = f }):up()
  end
  self.srv:fire("disco-info/host", { request = iq, reply = r })
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

-- The small IQs the server answers itself (and to its accounts, but for
-- disco#items, which is their PEP's).
local SERVER_IQ = {
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

-- vCard (vcard-temp) of an account: stored as XML under kind "vcard".
local function vcard_get(self, iq, node)
  local xml = self.srv.store:get("vcard", node)
  local v = xml and st.parse(xml)
  local r = st.reply(iq)
  r:add_child(v or st.stanza("vCard", { xmlns = NS_VCARD }))
  return r
end

-- disco#info of an account (XEP-0030): the features' handlers of
-- disco-info/account add to it (ev.reply; ev.owner when the account asks;
-- PEP, which lists disco#info itself, sets ev.disco_listed)
local function account_info(self, iq, bare, owner)
  local r = st.reply(iq):tag("query", { xmlns = NS_DISCO_INFO })
    :tag("identity", { category = "account", type = "registered" }):up()
  local ev = { request = iq, reply = r, bare = bare, owner = owner }
  self.srv:fire("disco-info/account", ev)
  if not ev.disco_listed then r:tag("feature", { var = NS_DISCO_INFO }):up() end
  return r
end

-- The IM core's own IQ handlers: disco, vCard, ping, version, time, last.
function IM:setup()
  local function answer(fn) return function(ev) return self:answer(ev, fn) end end
  for ns, fn in pairs(SERVER_IQ) do
    local h = answer(function(iq) return fn(self, iq) end)
    self:hook("iq/host/" .. ns, h)
    self:hook("iq/self/" .. ns, h)
  end
  self:hook("iq/bare/urn:xmpp:ping", answer(function() end))
  self:hook("iq/host/" .. NS_DISCO_INFO, function(ev)
    return self:answer(ev, function() return server_info(self, ev) end)
  end)
  self:hook("iq/host/" .. NS_DISCO_ITEMS, answer(function(iq) return server_items(self, iq) end))
  self:hook("iq/self/" .. NS_DISCO_INFO, function(ev)   -- with a node: PEP's (without PEP: ours)
    return self:answer(ev, function(iq) return account_info(self, iq, ev.bare, true) end)
  end, -20)
  self:hook("iq/bare/" .. NS_DISCO_INFO, function(ev)
    if ev.stanza.attr.type ~= "get" then return nil end
    return self:answer(ev, function(iq) return account_info(self, iq, ev.bare) end)
  end, -20)
  self:hook("iq/self/" .. NS_VCARD .. ":vCard", function(ev)
    return self:answer(ev, function(iq)
      if iq.attr.type == "get" then return vcard_get(self, iq, ev.node) end
      self.srv.store:set("vcard", ev.node, tostring(iq.tags[1]), ev.node)
    end)
  end)
  self:hook("iq/bare/" .. NS_VCARD, function(ev)
    if ev.stanza.attr.type ~= "get" then return nil end
    return self:answer(ev, function(iq) return vcard_get(self, iq, ev.node) end)
  end)
  self:hook("user-removed", function(ev) self.offline_pumps[ev.node] = nil end)
end

return M
