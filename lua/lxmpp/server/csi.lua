-- lxmpp.server.csi: Client State Indication (XEP-0352) on the server side.
--
-- A stream starts active (§5); a client that sends <inactive/> is not
-- looking at its screen, and the server then holds back what can wait
-- (§3.2 lists such optimisations, and leaves the choice to the server):
--
--   * urgent, delivered at once: every IQ, every stanza of type error,
--     every message with a <body/> or a <subject/>, and every other
--     message that carries anything besides the elements listed below
--     (encrypted payloads, invitations, pubsub events, carbons...);
--     presence subscription requests and answers (RFC 6121 §3: they ask
--     the user something). What was held goes out first, so the client
--     sees everything in the order it was routed.
--   * held: available and unavailable presence, only the newest one per
--     sender (its full JID: the older one is dropped), and messages with
--     nothing but chat states (XEP-0085), receipts (XEP-0184), chat
--     markers (XEP-0333) and their metadata (thread, delay, stanza ids,
--     hints), in order.
--
-- <active/> sends what was held, in order, before anything the client
-- sends after it is processed (§5.1, in-order processing). The queue is
-- bounded (limits.csi_queue stanzas, limits.csi_queue_bytes bytes):
-- beyond, everything held goes out, as if the client had become active
-- for a moment. Held stanzas never reached stream management (XEP-0198,
-- server/sm.lua): they are neither counted nor acknowledged. When the
-- stream ends they become stream management's unsent stanzas (sent again
-- on resumption, or handled as unacknowledged ones when the session ends:
-- presence dropped, bodiless messages dropped, server/sm.lua), or, without
-- stream management, they go with the stream. A resumed stream starts
-- active again (§5.2).

local ipairs, type = ipairs, type

local M = {}

local NS = "urn:xmpp:csi:0"
M.NS = NS

-- Children of a message that may wait (with the message's namespace).
local HOLDABLE = {
  ["http://jabber.org/protocol/chatstates"] = true,   -- XEP-0085
  ["urn:xmpp:receipts"] = true,                       -- XEP-0184
  ["urn:xmpp:chat-markers:0"] = true,                 -- XEP-0333
  ["urn:xmpp:delay"] = true,                          -- XEP-0203
  ["urn:xmpp:sid:0"] = true,                          -- XEP-0359
  ["urn:xmpp:hints"] = true,                          -- XEP-0334
}

local HELD_PRESENCE = { available = true, unavailable = true }

--- csi.urgent(stanza) -> true when it must go out at once (see above).
function M.urgent(s)
  local t = s.attr.type
  if t == "error" or s.name == "iq" then return true end
  if s.name == "presence" then return not HELD_PRESENCE[t or "available"] end
  if s.name ~= "message" then return true end
  for _, c in ipairs(s.tags) do
    local ns = c.attr.xmlns
    if ns == nil or ns == "jabber:client" then
      if c.name ~= "thread" then return true end         -- body, subject, anything else
    elseif not HOLDABLE[ns] then
      return true
    end
  end
  return false
end

-- The held queue: slots[first .. last], each { stanza, xml } or false (a
-- presence replaced by a newer one); by_from: sender -> slot of its
-- presence; n, bytes: the live stanzas and their bytes.
local function new_queue()
  return { slots = {}, first = 1, last = 0, by_from = {}, n = 0, bytes = 0 }
end

-- Moves the live slots to the front (replaced presences leave holes: a
-- sender that changes its status a thousand times must not leave a
-- thousand of them).
local function compact(q)
  local slots, by_from = {}, {}
  local k = 0
  for i = q.first, q.last do
    local e = q.slots[i]
    if e then
      k = k + 1
      slots[k] = e
      if e[3] then by_from[e[3]] = k end
    end
  end
  q.slots, q.by_from, q.first, q.last = slots, by_from, 1, k
end

--- csi.set(sess, active): the client's state; a session that becomes
-- active gets what was held, in order. send(sess, stanza, xml) is how a
-- stanza goes on (c2s.lua: stream management, then the stream).
function M.set(sess, active, send)
  if active then
    local q = sess.csi
    sess.csi = nil
    if q then M.flush(sess, q, send) end
  elseif not sess.csi then
    sess.csi = new_queue()
  end
end

--- Sends everything held in q, in order.
function M.flush(sess, q, send)
  local slots = q.slots
  local first, last = q.first, q.last
  q.slots, q.first, q.last, q.by_from, q.n, q.bytes = {}, 1, 0, {}, 0, 0
  for i = first, last do
    local e = slots[i]
    if e then send(sess, e[1], e[2]) end
  end
end

--- csi.hold(sess, stanza, send) -> true when the inactive session keeps
-- the stanza back; false when it is to be sent now (what was held has
-- been sent first). Call only while sess.csi is set.
function M.hold(sess, s, send)
  local q = sess.csi
  if M.urgent(s) then
    if q.n > 0 then M.flush(sess, q, send) end
    return false
  end
  local xml = sess:serialize(s)
  local limits = sess.srv.limits
  local key = s.name == "presence" and (s.attr.from or "") or nil
  local old = key and q.by_from[key]
  if old then                                -- the newest presence of a sender only
    local e = q.slots[old]
    q.slots[old] = false
    q.n, q.bytes = q.n - 1, q.bytes - #e[2]
  end
  if q.n + 1 > limits.csi_queue or q.bytes + #xml > limits.csi_queue_bytes then
    sess:log("debug", "CSI queue full (%d stanzas, %d bytes): sending it", q.n, q.bytes)
    M.flush(sess, q, send)
    send(sess, s, xml)
    return true
  end
  q.last = q.last + 1
  q.slots[q.last] = { s, xml, key }
  if key then q.by_from[key] = q.last end
  q.n, q.bytes = q.n + 1, q.bytes + #xml
  if q.last - q.first + 1 > 2 * limits.csi_queue then compact(q) end
  return true
end

--- The stream ended: what is held goes to stream management as unsent
-- (server/sm.lua: unsent), or with the stream; the state does not outlive
-- it (a resumed stream starts active, XEP-0352 §5.2).
function M.stream_ended(sess, unsent)
  local q = sess.csi
  sess.csi = nil
  if not q or q.n == 0 then return end
  if type(unsent) == "function" then
    M.flush(sess, q, function(_, s, xml) unsent(s, #xml) end)
  end
end

return M
