-- lxmpp.server.sm: stream management (XEP-0198) on the server side.
--
-- A bound client may <enable/> it: from then on both sides count the
-- stanzas they handled (32-bit counters that wrap), the server keeps what
-- it sent until the client acknowledges it (a bounded queue), asks for
-- acks after a few stanzas or a short idle time, and answers <r/>. A burst
-- (offline messages at login, a fast sender) does not overrun the queue:
-- once sm_queue stanzas wait for their ack, further ones are held back,
-- unsent, and go out as acks arrive; only when HOLD_FACTOR times that many
-- wait does the session end, as a client that never acknowledges must. When
-- the connection drops without a clean close, a resumable session
-- hibernates: it stays bound and available, stanzas for it are queued,
-- and a new stream of the same account can <resume/> it before binding,
-- getting every unacknowledged stanza again. A session nobody resumes in
-- time ends then: its unacknowledged messages go to offline storage (or
-- back to their sender as errors), never silently away.

local core = require "lxmpp.core"
local st = require "lxmpp.stanza"
local stream = require "lxmpp.server.stream"
local smcore = require "lxmpp.smcore"
local fifo = require "lxmpp.fifo"

local tostring, string_format = tostring, string.format

local M = {}
local NS = smcore.NS
M.NS = NS

local ACK_EVERY = 5              -- unacknowledged stanzas before we ask
local ACK_IDLE = 1               -- seconds of quiet before we ask anyway
local HOLD_FACTOR = 4            -- held back + unacknowledged, in sm_queues, before we give up

-- XEP-0198 counters are xs:unsignedInt, written in digits only.
local parse_h = smcore.parse_h
M.parse_h = parse_h

--- The <failed/> element with a stanza error condition and text.
function M.failed_xml(cond, text)
  return "<failed xmlns='" .. NS .. "'><" .. cond ..
    " xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>" ..
    (text and ("<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>" .. core.xml_escape(text) .. "</text>") or "") ..
    "</failed>"
end


---------------------------------------------------------------------------
-- counting and acknowledging

local function request_ack(sess)
  local sm = sess.sm
  sm.requested = true
  if not sess.ended then sess:write("<r xmlns='" .. NS .. "'/>") end
end

local function arm_idle(sess)
  local sm = sess.sm
  if sm.idle or sm.requested or sess.ended then return end
  sm.idle = core.timer(ACK_IDLE, stream.timer_target(function()
    sm.idle = nil
    if sess.sm == sm and sm.q.n > 0 and not sm.requested then request_ack(sess) end
  end))
end

-- The counters and the unacknowledged stanzas (q, with the bytes of each:
-- q.bytes in all) are smcore's; the held back ones wait in held (held.bytes),
-- oldest first.
local function new_state()
  return smcore.init({ held = fifo.new() })
end

-- Counts a stanza of `bytes` bytes as sent: kept until acknowledged, an ack
-- asked for now and then.
local function keep(sess, stanza, bytes)
  local sm = sess.sm
  smcore.sent(sm, stanza, bytes)
  if sm.q.n % ACK_EVERY == 0 and not sm.requested then request_ack(sess) else arm_idle(sess) end
end

--- A stanza (of `bytes` bytes serialized) sent to an SM session: counted
-- and kept until acknowledged; true when it is to be written now, "held"
-- when it waits for acks, false when the session ended over it (the stanza
-- went on to offline storage or an error). The queue is bounded in
-- stanzas (limits.sm_queue) and in bytes (limits.sm_queue_bytes).
function M.outbound(sess, stanza, bytes)
  local sm = sess.sm
  local q, held = sm.q, sm.held
  local limits = sess.srv.limits
  local limit, blimit = limits.sm_queue, limits.sm_queue_bytes
  local waiting, wbytes = q.n + held.n, q.bytes + held.bytes
  if (sess.hibernation and (waiting >= limit or wbytes >= blimit))
      or waiting >= HOLD_FACTOR * limit or wbytes >= HOLD_FACTOR * blimit then
    sess:log("warn", "stream management queue full (%d unacknowledged, %d held back, %d bytes): closing",
      q.n, held.n, wbytes)
    sm.resumable = false
    if sess.hibernation then
      sess.srv:unbind(sess, "too many stanzas while waiting for resumption")
    else
      sess:close("resource-constraint", "too many unacknowledged stanzas")
    end
    sess.srv:route(stanza)          -- the session is gone: offline storage or an error
    return false
  end
  if sess.hibernation or (held.n == 0 and q.n < limit and q.bytes < blimit) then
    keep(sess, stanza, bytes)
    return true
  end
  held:push(stanza, bytes)
  if not sm.requested then request_ack(sess) end
  -- (not paused: pausing the sender's reading would also stop reading its
  -- acks, and two clients sending to each other would wait forever)
  return "held"
end

--- A stanza that never went out (client state indication held it back,
-- server/csi.lua, until its stream ended) joins what the session keeps:
-- after what is held back already, so that the order stays; counted as
-- sent once it is in the unacknowledged queue. No limit is checked here:
-- the CSI queue is bounded (limits.csi_queue), and a session that goes on
-- receiving while it hibernates meets sm_queue in M.outbound.
function M.unsent(sess, stanza, bytes)
  local sm = sess.sm
  if sm.held.n > 0 then
    sm.held:push(stanza, bytes)
  else
    smcore.sent(sm, stanza, bytes)
  end
end

-- Sends held back stanzas while the queue has room.
local function release(sess)
  local sm = sess.sm
  local q, held = sm.q, sm.held
  local limit, blimit = sess.srv.limits.sm_queue, sess.srv.limits.sm_queue_bytes
  while held.n > 0 and q.n < limit and q.bytes < blimit and not sess.ended do
    local s, bytes = held:pop()
    keep(sess, s, bytes)
    stream.Stream.send(sess, s)
  end
  if held.n > 0 then
    if not sm.requested then request_ack(sess) end
  elseif not sess.ended then
    sess:run_writable()             -- producers waiting for room go on
  end
end

--- One stanza handled from the client.
function M.inbound(sess)
  smcore.handled(sess.sm)
end

-- The client's h (a string) was not a count or acknowledged more than was
-- sent (smcore.ack): the stream ends, and the session with it.
local function bad_ack(sess, cond, text, extra)
  sess.sm.resumable = false
  return sess:stream_error(cond, text, extra)
end

---------------------------------------------------------------------------
-- elements

local handlers = {}

--- Enables stream management on a bound session (resume: it may be
-- resumed): the <enabled/> to answer with, or the <failed/>. Also for
-- XEP-0386's inline <enable/> (server/features/sasl2.lua).
function M.enable(sess, resume)
  if not sess.bound then return M.failed_xml("unexpected-request", "bind a resource first") end
  if sess.sm then return M.failed_xml("unexpected-request", "stream management is already enabled") end
  local srv = sess.srv
  sess.sm = new_state()
  local attrs = ""
  if resume then
    local id = core.sha1_hex(core.random(16))
    sess.sm.id, sess.sm.resumable = id, true
    srv.sm_sessions[id] = sess
    attrs = string_format(" id='%s' resume='true' max='%d'", id, math.ceil(srv.limits.sm_timeout))
  end
  return "<enabled xmlns='" .. NS .. "'" .. attrs .. "/>"
end

function handlers.enable(sess, el)
  sess:write(M.enable(sess, el.attr.resume == "true" or el.attr.resume == "1"))
end

function handlers.r(sess)
  if not sess.sm then return sess:stream_error("unsupported-stanza-type", "stream management is not enabled") end
  sess:write("<a xmlns='" .. NS .. "' h='" .. tostring(sess.sm.handled) .. "'/>")
end

function handlers.a(sess, el)
  if not sess.sm then return sess:stream_error("unsupported-stanza-type", "stream management is not enabled") end
  local acked, cond, text, extra = smcore.ack(sess.sm, el.attr.h)
  if not acked then return bad_ack(sess, cond, text, extra) end
  sess.sm.requested = false
  release(sess)
  if sess.sm.q.n > 0 then arm_idle(sess) end
end

-- What a resumed session's new stream takes from the old one.
local TAKEN = { "user", "bare", "resource", "full", "available", "priority", "presence",
  "interested", "directed", "ndirected", "sm", "mechanism", "carbons", "blocklist_wanted" }

-- Moves the hibernating (or still connected) session old into the new
-- stream sess, which then stands for it.
local function take_over(sess, old)
  local srv = sess.srv
  old.resumed_by = sess
  if old.hibernation then old.hibernation:stop() end
  if not old.ended then
    old.conn:abort()
    old:finish("resumed on another connection")
  end
  for i = 1, #TAKEN do
    local k = TAKEN[i]
    sess[k] = old[k]
  end
  sess.bound = true
  local list = srv.sessions[sess.bare] or {}
  srv.sessions[sess.bare] = list
  list[sess.resource] = sess
  srv.sm_sessions[sess.sm.id] = sess
  sess:set_ready()
end

--- Resumes the session previd (its client acknowledged h, a string) on
-- the authenticated, unbound stream sess: the <resumed/> to answer with,
-- or nil, the <failed/> (the stream may go on and bind). Then, once the
-- answer is written, M.resent(sess) sends what was not acknowledged. Also
-- for XEP-0198 §"SASL2 and BIND2 interaction" (server/features/sasl2.lua);
-- a bad h ends the stream (nil, nil).
function M.resume(sess, previd, h_attr)
  local srv = sess.srv
  if not sess.authenticated or sess.bound then
    return nil, M.failed_xml("unexpected-request", "resume after authentication and before binding")
  end
  local h = parse_h(h_attr)
  local old = previd and srv.sm_sessions[previd]
  -- only the account that owns a session may resume it (XEP-0198 §5, §9)
  if not h or not old or old.bare ~= sess.bare or old.resumed_by then
    return nil, M.failed_xml("item-not-found", "no such session to resume")
  end
  take_over(sess, old)
  local sm = sess.sm
  local acked, cond, text, extra = smcore.ack(sm, h_attr)
  if not acked then
    bad_ack(sess, cond, text, extra)
    return nil, nil
  end
  sm.requested = false
  return "<resumed xmlns='" .. NS .. "' previd='" .. sm.id .. "' h='" .. tostring(sm.handled) .. "'/>"
end

--- After <resumed/>: every unacknowledged stanza again, held back ones as
-- room allows, and offline messages the old stream did not deliver.
function M.resent(sess)
  local srv, sm = sess.srv, sess.sm
  local q = sm.q
  for k = 1, q.n do
    if not sess:write(tostring(q:at(k))) then break end
  end
  if q.n > 0 then request_ack(sess) end
  release(sess)
  sess:log("info", "resumed %s (%d stanzas sent again)", sess.full, q.n)
  -- offline messages whose delivery the old stream did not finish
  if sess.available and sess.priority >= 0 then srv.im:send_offline(sess) end
end

function handlers.resume(sess, el)
  local resumed, failed = M.resume(sess, el.attr.previd, el.attr.h)
  if resumed then
    sess:write(resumed)
    return M.resent(sess)
  end
  if failed then return sess:write(failed) end
end

--- The stream handler for the SM namespace (c2s calls it).
function M.handle(sess, el)
  local h = handlers[el.name]
  if not h then return false end
  h(sess, el)
  return true
end

---------------------------------------------------------------------------
-- the end of a session

-- Unacknowledged stanzas of a session that is over: messages are stored
-- offline (or bounced), IQ requests answered with an error.
local function flush_unacked(sess)
  local sm, srv = sess.sm, sess.srv
  local q = sm.q:clear()
  for _, s in ipairs(sm.held:clear()) do q[#q + 1] = s end
  for _, s in ipairs(q) do
    local t = s.attr.type
    if s.name == "message" and t ~= "error" and t ~= "groupchat" and t ~= "headline" then
      srv.im:store_offline(s, sess.user)
    elseif s.name == "iq" and (t == "get" or t == "set") and s.attr.from then
      -- (the server's own requests, roster pushes, have no sender to answer)
      local r = st.error_reply(s, "wait", "recipient-unavailable")
      r.attr.from = sess.full
      srv:route(r)
    end
  end
end

--- Called by c2s when a stream ends: true when the session hibernates
-- (it stays bound until resumed or timed out).
function M.stream_ended(sess)
  local sm = sess.sm
  if not sm then return false end
  if sm.idle then sm.idle:stop(); sm.idle = nil end
  if sess.resumed_by then return true end             -- it lives on elsewhere
  if sm.resumable and not sess.clean_end and sess.srv.started then
    local srv = sess.srv
    sess:log("info", "%s hibernates for %d seconds", sess.full, srv.limits.sm_timeout)
    sess.hibernation = core.timer(srv.limits.sm_timeout, stream.timer_target(function()
      sess.hibernation = nil
      if sess.resumed_by then return end
      sm.resumable = false
      srv:unbind(sess, "not resumed in time")
    end))
    return true
  end
  return false
end

--- The session is really over: forget its id, hand over what is unacknowledged.
function M.session_over(sess)
  local sm = sess.sm
  if not sm or sess.resumed_by then return end
  if sm.id and sess.srv.sm_sessions[sm.id] == sess then sess.srv.sm_sessions[sm.id] = nil end
  if sess.hibernation then sess.hibernation:stop(); sess.hibernation = nil end
  flush_unacked(sess)
end

return M
