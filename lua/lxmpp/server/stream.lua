-- lxmpp.server.stream: the receiving side of one XML stream, shared by
-- client (c2s) and component sessions of the embedded server, over any
-- transport (lxmpp.transport: TCP, direct TLS, in-process pipes): the stream
-- header we answer with, stream errors (RFC 6120 §4.9), writing with flow
-- control and a bound on what the peer has not read, the negotiation deadline, per-address and
-- unauthenticated connection accounting, and read pausing for floods.
-- Everything here runs synchronously inside connection events: nothing
-- waits, so one process holds many thousands of streams.

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local st = require "lxmpp.stanza"
local fifo = require "lxmpp.fifo"
local stream_error = require "lxmpp.stream_error"
local transport = require "lxmpp.transport"

local tostring, pairs, type, xpcall, debug = tostring, pairs, type, compat.xpcall, debug

local M = {}

M.NS_STREAMS = transport.NS_STREAMS
M.NS_STREAM_ERRORS = stream_error.NS

local Stream = {}
Stream.__index = Stream
M.Stream = Stream

-- A one-shot timer target: the dispatcher calls wake() when it fires.
local function timer_target(fn) return { wake = fn } end
M.timer_target = timer_target

--- What each transport event does to a stream: functions of (stream,
-- ...) shared by every stream (conn:set_target, lxmpp.net), not closures
-- made for each one (docs/performance.md, "Where a reconnection's
-- instructions go"). A kind of stream with events of its own has its
-- table in its class's conn_events (server/c2s.lua).
local EVENTS = {
  open = function(self, attr) self:guarded(self.on_open, attr) end,
  stanza = function(self, s) self:guarded(self.on_stanza, s) end,
  ["stream-close"] = function(self) self:on_stream_close() end,
  ["parse-error"] = function(self, msg, cond) self:stream_error(cond, msg) end,
  eof = function(self) self:finish("the peer closed the connection") end,
  ["read-error"] = function(self, msg) self:finish(msg) end,
  ["write-error"] = function(self, msg) self:finish(msg) end,
  ["tls-failed"] = function(self, msg) self:finish("TLS failed: " .. tostring(msg)) end,
  closed = function(self) self:finish("connection closed") end,
  drain = function(self) self:guarded(self.on_drain) end,
}
M.EVENTS = EVENTS

--- Stream.init(self, srv, conn, default_ns [, peer]): common state of a new
-- stream; peer: the transport's conn:info().peer when the caller has read it
-- already (srv:accept does, for its limits: one read per connection).
function Stream.init(self, srv, conn, default_ns, peer)
  if peer == nil then peer = conn:info().peer end
  self.srv, self.conn, self.default_ns = srv, conn, default_ns
  self.framing = conn.framing
  self.ip = peer ~= "" and peer or "?"
  self.header_sent = false
  self.authenticated = false
  self.ended = false
  srv:account_open(self)
  conn:set_max_queue(srv.limits.max_queue)
  local events = self.conn_events or EVENTS
  if conn.set_target then
    conn:set_target(self, events)
  else                  -- a transport without it (lxmpp.transport): a closure per event
    for event, fn in pairs(events) do
      conn:on(event, function(...) return fn(self, ...) end)
    end
  end
  local deadline = srv.limits.negotiation_timeout
  self.deadline = core.timer(deadline, timer_target(function()
    if not self.ended and not self.ready then
      self:stream_error("connection-timeout", ("negotiation not finished within %g seconds"):format(deadline))
    end
  end))
end

-- Runs a handler of this stream's input: an error in the server's own code
-- ends this stream (internal-server-error) and is logged, and never reaches
-- the loop, where it would stop the whole server.
function Stream:guarded(fn, arg)
  local ok, err = xpcall(fn, debug.traceback, self, arg)
  if not ok then
    self:log("error", "internal error: %s", tostring(err))
    self:stream_error("internal-server-error")
  end
end

function Stream:log(level, fmt, ...)
  local srv = self.srv
  if not srv:logs(level) then return end     -- (not even the format: most levels are off)
  return srv:log(level, "%s %s: " .. fmt, self.kind, self.ip, ...)
end

-- Output flow control. The connection takes bytes until limits.max_queue
-- wait in it (one write larger than that is taken alone); past that, what
-- the server writes waits here, in order, and goes to the connection as it
-- drains. Nothing written is dropped while the peer reads: it is cut off
-- only when it stops reading, that is when limits.max_unread bytes wait
-- here, or when nothing drained for limits.write_timeout seconds while
-- bytes waited (docs/server.md: bounded outgoing queues). Producers that can
-- wait (offline delivery, archive pages) pace themselves with
-- s:congested() and s:when_writable(fn) instead of filling the backlog.

-- Moves the backlog into the connection while it takes it; true when the
-- backlog is empty.
local function flush_backlog(self)
  local bl = self.backlog
  local conn = self.conn
  while bl.n > 0 do
    if not conn:write((bl:peek())) then return false end
    bl:pop()
  end
  return true
end

local function stop_stall(self)
  if self.stall then self.stall:stop(); self.stall = nil end
end

local function arm_stall(self)
  stop_stall(self)
  local timeout = self.srv.limits.write_timeout
  self.stall = core.timer(timeout, timer_target(function()
    self.stall = nil
    if self.ended or not self.backlog then return end
    self:log("warn", "the peer read nothing for %g seconds (%d bytes waiting): closing", timeout, self.backlog.bytes)
    self.backlog = nil
    self.conn:abort()
    self:finish("the peer stopped reading")
  end))
end

-- The connection drained: more of the backlog goes out; producers waiting
-- for room run once nothing waits any more.
function Stream:on_drain()
  if self.ended then return end
  if self.backlog then
    if not flush_backlog(self) then
      arm_stall(self)                 -- progress: the peer reads, give it time again
      return
    end
    self.backlog = nil
    stop_stall(self)
    self:resume_reading("output")
  end
  self:run_writable()
end

--- True while written bytes wait for the peer to read (a producer that can
-- wait should stop and resume from s:when_writable).
function Stream:congested()
  return self.backlog ~= nil
end

--- Runs fn() once the stream is writable again (at once when it is); fn
-- is dropped if the stream ends first.
function Stream:when_writable(fn)
  local w = self.writable_waiters
  if not w then
    w = fifo.new()
    self.writable_waiters = w
  end
  w:push(fn)
  if not self:congested() then self:run_writable() end
end

-- Runs the producers waiting for room, in order, while there is room.
function Stream:run_writable()
  local w = self.writable_waiters
  while w and w.n > 0 and not self.ended and not self:congested() do
    local fn = w:pop()
    fn()
    w = self.writable_waiters
  end
end

--- Closes the connection gracefully: what waits in the backlog goes out
-- first, and a peer that does not read it within limits.write_timeout is
-- cut off.
function Stream:close_connection()
  local conn, bl = self.conn, self.backlog
  self.backlog = nil
  stop_stall(self)
  if bl and bl.n > 0 then
    local limits = self.srv.limits
    conn:set_max_queue(limits.max_queue + bl.bytes)
    self.backlog = bl
    flush_backlog(self)
    self.backlog = nil
    core.timer(limits.write_timeout, timer_target(function()
      if not conn.closed then conn:abort() end
    end))
  end
  -- never waits, even in a task (srv:stop() ends every stream from one):
  -- what is queued goes out for at most write_timeout seconds, then the
  -- socket is aborted, so a peer that reads nothing cannot hold it open
  conn:shutdown(self.srv.limits.write_timeout)
end

--- Writes bytes. They go to the connection, or wait in the backlog while
-- the peer has not read what went before; a peer with limits.max_unread
-- bytes waiting has stopped reading and loses its connection.
function Stream:write(bytes)
  if self.ended then return nil end
  local bl = self.backlog
  if not bl then
    local ok, msg, cond = self.conn:write(bytes)
    if ok then return true end
    if cond ~= "resource-constraint" then return nil, msg, cond end
    bl = fifo.new()
    self.backlog = bl
    arm_stall(self)
    -- what it asks for waits for it to read: its requests wait too
    self:pause_reading("output")
  end
  if bl.bytes + #bytes > self.srv.limits.max_unread then
    self:log("warn", "%d bytes wait for a peer that does not read: closing", bl.bytes + #bytes)
    self.backlog = nil
    self.conn:abort()
    self:finish("output queue full")
    return nil, "output queue full: the peer is not reading", "resource-constraint"
  end
  bl:push(bytes, #bytes)
  return true
end

--- A stanza's bytes as this stream sends them: serialized by the C
-- serializer; framed per element (transport.websocket: RFC 7395 §3.3.3,
-- BOSH) it declares the framing's stanza namespace on its top element
-- when it has none (lxmpp.transport).
function Stream:serialize(stanza)
  return self.framing.serialize(stanza)
end

--- Sends a stanza; xml, when given, is Stream:serialize(stanza).
function Stream:send(stanza, xml)
  if self.srv.debug then self:log("debug", "OUT %s", require("lxmpp.redact").text(stanza)) end
  return self:write(xml or self:serialize(stanza))
end

-- Our stream headers are the same few for every stream of a server (its
-- domain, version, language) but for their ids, so each one's bytes
-- before and after the id are made once, by framing, namespace and those
-- attributes (docs/performance.md, "Where a reconnection's instructions
-- go"). Only headers made of the KEPT attributes are kept (not an s2s
-- header, which names the peer), at most MAX_HEADERS of them.
local MAX_HEADERS = 32
local headers, n_headers = {}, 0          -- framing -> key -> { before, after }
local KEPT = { from = 1, version = 2, ["xml:lang"] = 3 }
local ID_MARK = "lxmpp.stream.id"

-- The bytes of the header of ns with extra's attributes around its id, or
-- nil when that header is not kept.
local function header_parts(framing, ns, extra)
  local vals = { ns }
  for k, v in pairs(extra) do
    local i = KEPT[k]
    if not i or type(v) ~= "string" then return nil end
    vals[i + 1] = v
  end
  local key = (vals[2] or "") .. "\0" .. (vals[3] or "") .. "\0" .. (vals[4] or "") .. "\0" .. ns
  local known = headers[framing]
  local parts = known and known[key]
  if parts ~= nil then
    if parts then return parts[1], parts[2] end
    return nil                  -- (a framing that does not write the id as " id='...'")
  end
  if n_headers >= MAX_HEADERS then return nil end
  local attr = { id = ID_MARK }
  for k, v in pairs(extra) do attr[k] = v end
  local xml = framing.open(ns, attr)
  local i, j = xml:find(" id='" .. ID_MARK .. "'", 1, true)
  parts = false
  if i and xml:find(ID_MARK, 1, true) == i + 5 and not xml:find(ID_MARK, j, true) then
    parts = { xml:sub(1, i + 4), xml:sub(j) }
  end
  if not known then
    known = {}
    headers[framing] = known
  end
  known[key], n_headers = parts, n_headers + 1
  if parts then return parts[1], parts[2] end
  return nil
end

--- Our stream header, answering the peer's (new id each time: RFC 6120
-- §4.7.3), framed as the transport frames streams (lxmpp.transport).
function Stream:send_header(extra)
  local id = core.sha1_hex(core.random(16)):sub(1, 24)
  self.stream_id = id
  self.header_sent = true
  local before, after = header_parts(self.framing, self.default_ns, extra)
  if before then return self:write(before .. id .. after) end
  local attr = { id = id }
  for k, v in pairs(extra) do attr[k] = v end
  return self:write(self.framing.open(self.default_ns, attr))
end

--- The stream restarts (after STARTTLS, after SASL success: RFC 6120
-- §4.3.3): the header we sent belongs to the old stream, so a stream error
-- before we answer the peer's new header must open the new stream first
-- (§4.9.1.2), or clients (Pidgin, go-xmpp) see an error with no stream.
function Stream:restarted()
  self.header_sent = false
end

--- Sends <stream:error/> and closes (a header first when none was sent on
-- this stream, restarts included). extra: the XML of an application-specific
-- condition element, or nil.
function Stream:stream_error(cond, text, extra)
  if self.ended then return end
  self.clean_end = true
  if not self.header_sent then self:send_header({ from = self.srv.domain, version = "1.0" }) end
  self:log("info", "stream error %s: %s", cond, tostring(text))
  local xml, close = self.framing.error(cond, text, extra)
  self:write(xml)
  if close then self:write(close) end
  self:close_connection()
  self:finish(cond .. (text and (": " .. text) or ""))
end

--- The peer closed its stream: close ours too.
function Stream:on_stream_close()
  if self.ended then return end
  self.clean_end = true
  self:write(self.framing.close)
  self:close_connection()
  self:finish("stream closed by the peer")
end

--- s:redirect(url) -> true | nil, message: sends the client of a WebSocket
-- stream to another endpoint (RFC 7395 §3.6.1): <close/> with its
-- see-other-uri, then the WebSocket closing handshake (RFC 6455 §5.5.1),
-- at any point of the stream. url: ws:// or wss:// (else an error is
-- raised); nil, message on a stream that is not over WebSocket or has ended.
-- Not a clean end: a session the client may resume (XEP-0198) stays
-- resumable, through the new endpoint when it reaches this server.
function Stream:redirect(url)
  local ws = require "lxmpp.websocket"
  local ok, why = ws.redirect_url(url)
  if not ok then error("redirect: " .. why, 2) end
  if self.framing ~= transport.websocket then
    return nil, "see-other-uri redirects only WebSocket streams (RFC 7395 §3.6.1)"
  end
  if self.ended then return nil, "the stream has ended" end
  self:log("info", "redirected to %s", url)
  self:write(ws.see_other(url))
  self:close_connection()
  self:finish("redirected to " .. url)
  return true
end

--- Closes the stream cleanly from our side (server shutdown, account removal).
function Stream:close(cond, text)
  if cond then return self:stream_error(cond, text) end
  if self.ended then return end
  self.clean_end = true
  self:write(self.framing.close)
  self:close_connection()
  self:finish("closed by the server")
end

--- The stream is over (whatever the reason): runs once.
function Stream:finish(reason)
  if self.ended then return end
  self.ended = true
  self.end_reason = reason
  if self.deadline then self.deadline:stop() end
  if self.held then self.held:stop(); self.held = nil end
  self.writable_waiters = nil
  if not self.conn.closed then self:close_connection() end
  self.srv:account_close(self)
  if self.on_end then self:on_end(reason) end
end

--- Negotiation is over: the deadline no longer applies.
function Stream:set_ready()
  self.ready = true
  if self.deadline then self.deadline:stop() end
end

--- s:pause_reading(reason) / s:resume_reading(reason): reading stops while
-- any reason holds (a flood's window, a pending auth callback, a recipient
-- that is behind with its acks); a reason is any value used as a key.
function Stream:pause_reading(reason)
  local pauses = self.pauses
  if not pauses then
    pauses = {}
    self.pauses = pauses
  end
  if pauses[reason] then return end
  pauses[reason] = true
  if next(pauses, nil) == reason and next(pauses, reason) == nil then self.conn:pause() end
end

function Stream:resume_reading(reason)
  local pauses = self.pauses
  if not pauses or not pauses[reason] then return end
  pauses[reason] = nil
  if next(pauses) == nil and not self.ended then self.conn:resume() end
end

--- s:answer_at(at, fn): runs fn(self) at time `at` (core.now() clock: a
-- throttle's verdict, server/throttle.lua), at once when it has come.
-- Meanwhile nothing is read from the peer, and fn is dropped if the
-- stream ends first; one timer per stream, so what an attacker makes wait
-- is bounded by its connections.
function Stream:answer_at(at, fn)
  local wait = at - core.now()
  if wait <= 0 then return fn(self) end
  self:pause_reading("throttle")
  self.held = core.timer(wait, timer_target(function()
    self.held = nil
    if self.ended then return end
    self:resume_reading("throttle")
    self:guarded(fn)
  end))
end

--- Read pausing for floods, checked on every stanza: above the rate
-- (bytes read per second, over a one-second window) reading pauses until
-- the window has passed.
function Stream:check_rate()
  local limit = self.srv.limits.rate
  if not limit or (self.pauses and self.pauses.rate) then return end
  local now, read = core.now(), self.conn:bytes_in()
  if not self.rate_start or now - self.rate_start >= 1 then
    self.rate_start, self.rate_base = now, read
    return
  end
  if read - self.rate_base > limit then
    self:pause_reading("rate")
    local wait = 1 - (now - self.rate_start)
    core.timer(wait > 0.05 and wait or 0.05, timer_target(function()
      self.rate_start = nil
      self:resume_reading("rate")
    end))
  end
end

--- An error reply to a stanza we will not process (never to an error).
function Stream:bounce(s, etype, cond, text)
  if s.attr.type == "error" or (s.name == "iq" and s.attr.type == "result") then return end
  local r = st.error_reply(s, etype, cond, text)
  r.attr.from = r.attr.from or self.srv.domain
  return self:send(r)
end

return M
