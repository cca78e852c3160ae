-- XEP-0184 message delivery receipts: once asked to (request = true), every
-- message with a body we send (not groupchat) asks for a receipt; a receipt is reported as a "receipt"
-- event only when it comes from the entity the message went to (bare JIDs
-- compared) and names a message we sent; messages that ask for a receipt
-- are answered automatically, but only to senders allowed to see our
-- presence (XEP-0184 §"Security Considerations": a receipt tells that we
-- are online): our own account, a roster contact with a subscription
-- "from" or "both" (RFC 6121 §3), a room we are in and its occupants
-- (they see our presence there). Groupchat messages are never answered
-- (XEP-0184 §5.3 "Groupchat": NOT RECOMMENDED).
--
--   c:on("receipt", function(id, from, stanza) end)
--   c:set_receipts{ request = true, answer = true }
--   (request defaults to false: each receipt is one more stanza per message;
--   answer defaults to true, as the XEP asks of whoever supports it, to
--   those allowed to see our presence; answer = "all" answers everyone,
--   answer = false no one)

local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local session = require "lxmpp.session"
local bounded = require "lxmpp.bounded"

local type, error, tostring = type, error, tostring

local NS_RECEIPTS = "urn:xmpp:receipts"
local MAX_WAITING = 1024     -- sent messages whose receipt we still accept

local M = { NS_RECEIPTS = NS_RECEIPTS }

session.add_event("receipt")

-- The plugin object, c.receipts (docs/api.md "Plugins"): .request and
-- .answer (c:set_receipts: answer is true, false or "all"), .waiting the
-- ids of messages sent with a request (bounded), by id -> the recipient's
-- bare JID.
M.forwards = { set_receipts = "set" }
M.events = { "receipt" }

--- c:set_receipts{ request = bool, answer = true | false | "all" }
function M:set(opts)
  if type(opts) ~= "table" then error("set_receipts: expected a table", 2) end
  local answer = opts.answer
  if answer ~= nil and answer ~= true and answer ~= false and answer ~= "all" then
    error("set_receipts: answer must be true (those allowed to see our presence), false or \"all\"", 2)
  end
  if opts.request ~= nil then self.request = opts.request == true end
  if answer ~= nil then self.answer = answer end
end

local function remember(self, id, to)
  local w = self.waiting
  if w:get(id) == nil then w:put(id, jid.bare(to)) end
end

-- May `from` (prepared) learn that we received its message? XEP-0184
-- §"Security Considerations": only if it may see our presence.
local function may_know(self, c, from)
  if self.answer == "all" then return true end
  local bare = jid.bare(from)
  if c.bare_jid and jid.equal(bare, c.bare_jid) then return true end
  -- a room we are in, and its occupants, see our presence in it
  -- (XEP-0045 §7.2.3); a private message comes from an occupant JID
  if c:plugin_loaded("muc") then
    local room = c.muc.rooms[bare]
    if room then return room.joined == true end
  end
  local items = c:plugin_loaded("roster") and c.roster.items
  local item = items and items[bare]
  return item ~= nil and (item.subscription == "from" or item.subscription == "both")
end

local function on_message(self, c, m)
  local from = m.attr.from and jid.prep(m.attr.from)
  local received = m:get_child("received", NS_RECEIPTS)
  if received and from then
    local id = received.attr.id
    local to = id and self.waiting:get(id)
    if to and jid.equal(to, jid.bare(from)) then
      self.waiting:delete(id)
      c:fire_user("receipt", id, from, m)
    else
      if c.debug then c:log("debug", "ignored a receipt for %s from %s", tostring(id), from) end
    end
  end
  if self.answer and from and m.attr.id and m:get_child("request", NS_RECEIPTS)
      and m.attr.type ~= "groupchat" and m.attr.type ~= "error" then
    if not may_know(self, c, from) then
      if c.debug then c:log("debug", "no receipt to %s: not allowed to see our presence", from) end
      return
    end
    c:send(st.message({ to = from, id = session.new_id(), type = m.attr.type })
      :tag("received", { xmlns = NS_RECEIPTS, id = m.attr.id }):up())
  end
end

function M:init(c)
  self.request, self.answer = false, true
  self.waiting = bounded.new(MAX_WAITING)
  c:add_feature(NS_RECEIPTS)
  c.bus:add("stanza-out", function(s)
    if s.name == "message" and self.request and s.attr.to and s.attr.type ~= "groupchat"
        and s.attr.type ~= "error" and s:get_child("body") and not s:get_child("request", NS_RECEIPTS) then
      if not s.attr.id then s.attr.id = session.new_id() end
      s:add_direct_child(st.stanza("request", { xmlns = NS_RECEIPTS }))
      remember(self, s.attr.id, s.attr.to)
    end
  end)
  c:hook_child("message", NS_RECEIPTS, function(s) on_message(self, c, s) end)
end

return M
