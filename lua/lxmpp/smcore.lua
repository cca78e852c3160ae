-- lxmpp.smcore: the counting core of stream management (XEP-0198), shared
-- by the client (features/sm.lua) and the embedded server (server/sm.lua),
-- which keep their own policies (when to ask for acks, what to do with a
-- full queue, resumption) on top of it.
--
-- A counting state is a table with three fields, kept in the owner's own
-- object: handled (stanzas we handled from the peer: the h we report),
-- acked (the last h the peer reported) and q (a lxmpp.fifo of what we sent
-- and the peer has not acknowledged, oldest first; sizes in bytes when the
-- owner gives them, q.bytes their sum). Counters are xs:unsignedInt and
-- wrap at 2^32 (XEP-0198 §4, §5).

local compat = require "lxmpp.compat"
local fifo = require "lxmpp.fifo"

local type, tonumber, math_tointeger, string_format = type, tonumber, compat.tointeger, string.format

local NS = "urn:xmpp:sm:3"
local MOD = 4294967296                          -- 2^32: counters wrap here

local M = { NS = NS, MOD = MOD }

--- smcore.parse_h(s) -> integer in [0, 2^32), or nil: digits only (no
-- sign, space, exponent or fraction), at most ten of them.
function M.parse_h(s)
  if type(s) ~= "string" or #s == 0 or #s > 10 or s:find("[^0-9]") then return nil end
  local n = math_tointeger(tonumber(s))
  if not n or n >= MOD then return nil end
  return n
end
local parse_h = M.parse_h

--- smcore.init(t[, handled, acked]) -> t, with the counting fields set
-- (fresh counters by default) and an empty queue.
function M.init(t, handled, acked)
  t.handled, t.acked, t.q = (handled or 0) % MOD, (acked or 0) % MOD, fifo.new()
  return t
end

--- smcore.handled(t): one more stanza handled from the peer.
function M.handled(t)
  t.handled = (t.handled + 1) % MOD
end

--- smcore.sent(t, item[, bytes]): one more stanza sent, kept until acknowledged.
function M.sent(t, item, bytes)
  t.q:push(item, bytes)
end

--- smcore.sent_count(t) -> the counter of what we sent (mod 2^32).
function M.sent_count(t)
  return (t.acked + t.q.n) % MOD
end

--- smcore.covers(t, h) -> how many queued stanzas the (parsed) h
-- acknowledges, or nil when it acknowledges more than were sent.
function M.covers(t, h)
  local n = (h - t.acked) % MOD
  if n > t.q.n then return nil end
  return n
end
local covers = M.covers

--- smcore.too_high(t, h) -> condition, text, extra: the stream error for
-- an h that acknowledges more than was sent (XEP-0198 §4: undefined-condition
-- with <handled-count-too-high/>, carrying the h received and our count).
function M.too_high(t, h)
  local sent = M.sent_count(t)
  return "undefined-condition",
    string_format("the peer acknowledged %d stanzas, %d were sent", h, sent),
    string_format("<handled-count-too-high xmlns='%s' h='%d' send-count='%d'/>", NS, h, sent)
end

--- smcore.ack(t, hs) -> the list of the items acknowledged (oldest first,
-- removed from the queue; empty when none), or nil, condition, text[, extra]:
-- the stream error for an h that is not a 32-bit count in digits
-- (bad-format) or that acknowledges more than was sent (see too_high).
-- Nothing changes on an error.
function M.ack(t, hs)
  local h = parse_h(hs)
  if not h then
    return nil, "bad-format", "h must be a 32-bit count in digits"
  end
  local n = covers(t, h)
  if not n then return nil, M.too_high(t, h) end
  t.acked = h
  return t.q:take(n)
end

return M
