-- lxmpp.server.carbons: XEP-0280 message carbons on the embedded server.
--
-- A resource turns copies on and off with <enable/> and <disable/>; the
-- state lives on its session (XEP-0198 resumption carries it over). Which
-- messages are copied follows XEP-0280 §6: type "chat", or "normal" with a
-- body; never errors, groupchat or headlines, never a message sent by a MUC
-- room or occupant (it carries a muc#user <x/>), and never a message
-- marked <private/> (carbons) or <no-copy/> (XEP-0334 hints). A private message from our user to a room
-- occupant is an ordinary sent message and is copied.
--
-- Copies go only to carbons-enabled resources that did not get the
-- original: received ones to the recipient's other resources, sent ones to
-- the sender's other resources. The copy is from the account's bare JID to
-- the resource's full JID, the original inside <received/> or <sent/> and
-- a XEP-0297 <forwarded/>. The receiving side removes <private/> from what
-- it delivers (§7).

local st = require "lxmpp.stanza"
local split = require("lxmpp.server").split

local setmetatable, ipairs, pairs, next = setmetatable, ipairs, pairs, next

local M = {}
local NS = "urn:xmpp:carbons:2"
local NS_FORWARD = "urn:xmpp:forward:0"
local NS_HINTS = "urn:xmpp:hints"
local NS_MUC_USER = "http://jabber.org/protocol/muc#user"
M.NS = NS

local C = {}
C.__index = C

--- carbons.new(im): im.available_sessions(list) is the IM core's choice
-- of resources for a message to a bare JID (RFC 6121 §8.5.2).
-- Hooks messages sent (pre-message/*, after the archive's) and received
-- (message/full, message/bare), the <enable/>/<disable/> requests.
function M.new(im)
  local self = setmetatable({ im = im, srv = im.srv, domain = im.srv.domain }, C)
  local function sent(ev) self:sent(ev.origin, ev.stanza) end
  for _, kind in ipairs({ "full", "bare", "host" }) do im:hook("pre-message/" .. kind, sent, -20) end
  local function received(ev) self:received(ev.stanza, ev.bare, ev.resource) end
  im:hook("message/full", received, -20)
  im:hook("message/bare", received, -20)
  im:hook("iq/self/" .. NS, function(ev) self:iq(ev.origin, ev.stanza); return true end)
  im:hook("disco-info/host", function(ev) ev.reply:tag("feature", { var = NS }):up() end)
  return self
end

--- <enable/> or <disable/> from one of our resources (an IQ set).
function C.iq(_, sess, iq)
  local q = iq.tags[1]
  if iq.attr.type ~= "set" or (q.name ~= "enable" and q.name ~= "disable") then
    return sess:send(st.error_reply(iq, "modify", "bad-request", "send <enable/> or <disable/> in an IQ set"))
  end
  sess.carbons = q.name == "enable" or nil
  return sess:send(st.reply(iq))
end

-- XEP-0280 §6 for one message: may it be copied at all?
local function eligible(s)
  local t = s.attr.type or "normal"
  if t ~= "chat" and not (t == "normal" and s:get_child("body")) then return false end
  if s:get_child("private", NS) or s:get_child("no-copy", NS_HINTS) then return false end
  return true
end

-- Copies s (wrapped in <which/>) to every carbons-enabled resource of bare
-- except those in `skip`.
local function copy_to(self, s, bare, which, skip)
  local inner
  for _, sess in pairs(self.srv:sessions_of(bare)) do
    if sess.carbons and not skip[sess] then
      if not inner then
        inner = st.clone(s)
        inner.attr.xmlns = "jabber:client"
      end
      local m = st.message({ from = bare, to = sess.full, type = s.attr.type })
        :tag(which, { xmlns = NS }):tag("forwarded", { xmlns = NS_FORWARD })
      m:add_child(inner)
      sess:send(m)
    end
  end
end

--- A message one of our resources sends (before it is routed): <sent/>
-- copies to our other enabled resources, unless the message is refused
-- because we block its recipient.
function C:sent(sess, s)
  if not eligible(s) then return end
  local to = s.attr.to
  local node, host = split(to or "")
  if not host or (node == sess.user and host == self.domain) then
    return                      -- to our own account: the received copies cover it
  end
  if self.im.blocking:blocked(sess.user, to) then return end
  copy_to(self, s, sess.bare, "sent", { [sess] = true })
end

-- Was this message sent by a MUC room or occupant (§6)? Rooms mark what
-- they send with a muc#user <x/> (XEP-0045 §7.5; ours always do).
local function from_muc(s)
  return s:get_child("x", NS_MUC_USER) ~= nil
end

--- A message for our account `bare` (before it is delivered to the
-- resource res, or by the bare JID rules): <received/> copies to the
-- enabled resources that will not get the original; <private/> is removed.
function C:received(s, bare, res)
  if s:get_child("private", NS) then
    s:remove_children("private", NS)
    return
  end
  if not eligible(s) or from_muc(s) then return end
  local list = self.srv:sessions_of(bare)
  if next(list) == nil then return end
  local skip = {}
  local target = res and list[res]
  if target then
    skip[target] = true
  else
    for _, sess in ipairs(self.im.available_sessions(list)) do skip[sess] = true end
  end
  copy_to(self, s, bare, "received", skip)
end

return M
