-- lxmpp.session: one XML stream over a connection, as clients and components
-- share it: opening and closing the stream, reading stanzas one at a time
-- while features are negotiated, then routing them (IQ replies matched by id
-- and sender, get/set to handle_iq handlers, everything to user handlers,
-- each in its own task), and sending.
--
-- While negotiating, the connection is paused after each stanza, so a
-- decision taken on one stanza (STARTTLS, a SASL restart) takes effect
-- before another byte is parsed (RFC 6120 §5.4.3.3: nothing from before TLS).

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local task = require "lxmpp.task"
local events = require "lxmpp.events"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local redact = require "lxmpp.redact"
local fifo = require "lxmpp.fifo"
local stream_error = require "lxmpp.stream_error"
local sm_feature = require "lxmpp.features.sm"

local setmetatable, type, error, tostring, pairs, ipairs, select, string_format, io =
  setmetatable, type, error, tostring, pairs, ipairs, select, string.format, io

local M = {}

M.NS_STREAMS = "http://etherx.jabber.org/streams"
M.NS_STREAM_ERRORS = stream_error.NS
M.NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"

-- Events user handlers may subscribe to; plugins add theirs (M.add_event).
local USER_EVENTS = {
  message = true, presence = true, iq = true, stanza = true,
  online = true, disconnected = true, reconnected = true,
}
M.USER_EVENTS = USER_EVENTS

--- session.add_event(name): lets plugins offer an event to on().
function M.add_event(name) USER_EVENTS[name] = true end

local Session = {}
Session.__index = Session
M.Session = Session

-- The session's own steps (attaching a transport, the way in and the way
-- out, losing the link): functions of this table, not methods, so that a
-- client's public table holds only the API (docs/api.md). The client's
-- other modules (client.lua, reconnect.lua, component.lua, features/) reach
-- them as session.internal.NAME(c, ...).
local I = {}
M.internal = I

--- session.random_uint(n) -> an integer of n random bytes (1 to 6: exact
-- on every Lua), from OpenSSL's generator (core.random), drawn 256 bytes
-- at a time: stanza ids, the BOSH client's first rid, the SRV weighted
-- choice, the reconnection jitter. Never math.random: Lua 5.1 and LuaJIT
-- start it unseeded, so every process would draw the same, and the host's
-- own sequence (a game's, seeded for replays) is not ours to move.
local random_pool, random_at = "", 1
local function random_uint(n)
  if random_at + n - 1 > #random_pool then random_pool, random_at = core.random(256), 1 end
  local v = 0
  for i = random_at, random_at + n - 1 do v = v * 256 + random_pool:byte(i) end
  random_at = random_at + n
  return v
end
M.random_uint = random_uint
local function random16() return random_uint(2) end
M.random16 = random16

local id_prefix = ("%04x%04x"):format(random16(), random16())
local id_counter = 0
--- A fresh stanza id: unique in this process, not guessable from outside.
function M.new_id()
  id_counter = id_counter + 1
  return ("lx%s%x%04x"):format(id_prefix, id_counter, random16())
end

local function default_logger(level, msg)
  io.stderr:write("lxmpp [", level, "] ", msg, "\n")
end

--- session.new{ default_ns = "jabber:client", logger = fn, debug = bool }
function M.new(opts)
  local self = setmetatable({
    default_ns = opts.default_ns or "jabber:client",
    bus = events.new(),           -- features and plugins
    child_hooks = {},             -- stanza name -> a bus whose events are child namespaces
    user = events.new(),          -- user handlers, each run as a task
    iq_handlers = {},             -- xmlns -> fn(iq) -> reply
    pending = {},                 -- iq id -> { to = prepared jid or false, waiter = w }
    queue = fifo.new(),           -- stanzas read while negotiating
    negotiating = false,
    framing = require("lxmpp.transport").xml,   -- the current transport's (I.attach)
    logger = opts.logger or default_logger,
    debug = opts.debug or false,
  }, Session)
  require("lxmpp.signal").track_session(self)   -- lxmpp.shutdown closes it
  return self
end

function Session:log(level, fmt, ...)
  local msg = select("#", ...) > 0 and string_format(fmt, ...) or fmt
  self.logger(level, msg)
end

-- What debug mode prints of a stanza: never a SASL payload or a password
-- (lxmpp.redact).
function I.describe(_, stanza)
  return redact.text(stanza)
end

---------------------------------------------------------------------------
-- the connection

--- Attaches a connected transport (lxmpp.transport: a TCP connection of
-- lxmpp.net, or any other) and starts parsing.
function I.attach(self, conn, parse_opts)
  -- a new stream: nothing of an earlier connection carries over, and the
  -- late events of an earlier connection (its "closed") are ignored
  self.conn = conn
  self.framing = conn.framing
  self.closed_reason = nil
  self.lost_reason = nil
  self.remote_closed = false
  self.queue, self.reader = fifo.new(), nil
  self.stream_attr = nil
  self.last_rx = core.now()
  local function on(event, fn)
    conn:on(event, function(...) if self.conn == conn then return fn(...) end end)
  end
  on("open", function(attr) I.on_open(self, attr) end)
  conn:on("stanza", function(s) if self.conn == conn then I.on_stanza(self, s) end end)   -- the hot path
  on("stream-close", function(attr) I.on_stream_close(self, attr) end)
  on("parse-error", function(msg, cond) I.stream_error(self, cond, msg) end)
  on("eof", function() I.lost(self, "the server closed the connection", "closed") end)
  on("read-error", function(msg) I.lost(self, msg, "closed") end)
  on("write-error", function(msg) I.lost(self, msg, "closed") end)
  on("closed", function() I.lost(self, self.closed_reason or "connection closed", "closed") end)
  on("drain", function()
    local ws = self.drain_waiters
    self.drain_waiters = nil
    for _, w in ipairs(ws or {}) do w:wake(true) end
  end)
  conn:parse(parse_opts)
end

--- Writes the opening stream header (also after a restart), as the
-- transport frames it (lxmpp.transport: RFC 6120 §4.2 or RFC 7395 §3.4).
function I.open_stream(self, attr)
  local header = self.conn.framing.open(self.default_ns, attr)
  if self.debug then self:log("debug", "OUT %s", header) end
  return self.conn:write(header)
end

--- The XML of a stanza to send (an iq gets an id if it has none); raises
-- for what is not a stanza, at the caller's caller.
function I.serialize(self, stanza)
  if not st.is_stanza(stanza) then error("send: expected a stanza", 3) end
  if stanza.name == "iq" and not stanza.attr.id then stanza.attr.id = M.new_id() end
  -- as the framing writes it (lxmpp.transport: framed per element, the
  -- stanza declares its namespace itself)
  local ok, xml = compat.pcall(self.framing.serialize, stanza)
  if not ok then error(xml, 3) end
  if self.debug then self:log("debug", "OUT %s", I.describe(self, stanza)) end
  return xml
end

-- The XML on the current connection, if there is one.
local function write_conn(self, xml)
  if not self.conn or self.conn.closed then return nil, "not connected", "closed" end
  return self.conn:write(xml)
end

--- Writes a stanza on the current connection, whatever the session's
-- state (negotiation features use this); true, or nil, message, condition.
function Session:write_stanza(stanza)
  return write_conn(self, I.serialize(self, stanza))
end

--- Is `from` our own account (no from, our bare JID or our full JID)?
-- Roster and block-list pushes are accepted only from there (RFC 6121 §2.1.6).
function Session:from_own_account(from)
  return from == nil or jid.equal(from, self.bare_jid or "") or jid.equal(from, self.jid or "")
end

-- c:refuse_foreign_push(iq, what) -> nil | error reply: nil when the push
-- comes from our own account; otherwise logs the refusal (`what` names the
-- push, "roster push") and returns the service-unavailable error to answer
-- with, as RFC 6121 §2.1.6 asks of a push from anyone else.
function Session:refuse_foreign_push(iq, what)
  local from = iq.attr.from
  if self:from_own_account(from) then return nil end
  self:log("warn", "refused a %s from %s", what, tostring(from))
  return st.error_reply(iq, "cancel", "service-unavailable")
end

---------------------------------------------------------------------------
-- The way out: every stanza a session sends takes this one path.
--
--   c:send(stanza)
--   1. "stanza-out" handlers on the session's bus may add children to it
--      (XEP-0115 caps, XEP-0153 avatar hashes, XEP-0359 origin-ids,
--      XEP-0184 requests, XEP-0012's idle clock);
--   2. ids: an iq always gets one, and a message too (a message sent again
--      after a failed XEP-0198 resumption keeps its id: the receiver's only
--      way to tell it from the first copy);
--   3. serialization, and the debug log (Session:serialize);
--   4. output (Session:output): a client's broadcast presence is kept, to
--      be restored on a new session; then XEP-0198's queue when stream
--      management is enabled and the stanza counts, the reconnection's
--      queue while the link is being restored, or the connection.
-- Negotiation steps write with write_stanza (3, then the connection).

--- c:send(stanza) -> true | nil, message, condition.
function Session:send(stanza)
  if not st.is_stanza(stanza) then error("send: expected a stanza", 2) end
  local bus = self.bus
  if bus and bus:has("stanza-out") then bus:fire("stanza-out", stanza) end
  if stanza.name == "message" and not stanza.attr.id then stanza.attr.id = M.new_id() end
  return I.output(self, I.serialize(self, stanza), stanza)
end

--- Writes on the established stream: through stream management when it is
-- enabled and the stanza counts (kept until acknowledged), else straight.
function I.write_now(self, xml, stanza)
  local sm = self.sm
  if sm and sm.enabled and sm_feature.counts(stanza) then return sm:send(xml) end
  return self.conn:write(xml)
end

--- The output stage of c:send (above).
function I.output(self, xml, stanza)
  local offline = self.offline
  if offline == nil then return write_conn(self, xml) end   -- no reconnection (components)
  if stanza.name == "presence" and not stanza.attr.to
      and (stanza.attr.type == nil or stanza.attr.type == "unavailable") then
    self.last_presence = stanza.attr.type == nil and { xml, stanza } or nil
  end
  if self.online and not self.flushing then return I.write_now(self, xml, stanza) end
  if self.reconnecting or self.flushing then
    if offline.n >= self.max_queued then
      return nil, "too many stanzas wait for the reconnection", "resource-constraint"
    end
    offline:push({ xml, stanza })
    return true
  end
  if self.negotiating and not self.closing then
    return nil, "not connected yet (lxmpp.connect has not returned)", "closed"
  end
  return nil, "not connected", "closed"
end

---------------------------------------------------------------------------
-- reading while negotiating

function I.push(self, item)
  self.queue:push(item)
  local w = self.reader
  if w then
    self.reader = nil
    w:wake()
  end
end

function I.on_open(self, attr)
  if self.debug then self:log("debug", "IN stream header from %s id %s", tostring(attr.from), tostring(attr.id)) end
  self.stream_attr = attr
  if self.negotiating then
    self.conn:pause()
    I.push(self, { open = attr })
  end
end

-- attr: over WebSocket, <close/>'s attributes; one with see-other-uri
-- sends us to another endpoint (RFC 7395 §3.6.1): the link is lost with
-- condition see-other-host, and the client's establish() (or its
-- reconnection) follows it (lua/lxmpp/client.lua).
function I.on_stream_close(self, attr)
  local uri = attr and attr["see-other-uri"]
  if self.debug then
    self:log("debug", "IN %s", uri and ("<close see-other-uri='" .. uri .. "'/>") or "</stream:stream>")
  end
  self.remote_closed = true
  if uri then
    local msg = "the server redirects to " .. uri .. " (RFC 7395 §3.6.1)"
    self.see_other_uri = uri
    self.closed_reason = msg
    I.lost(self, msg, "see-other-host")
  else
    if self.close_waiter then self.close_waiter:wake(true) end
    if self.negotiating then I.push(self, { error = "the server closed the stream", condition = "closed" }) end
  end
  if self.conn then self.conn:close() end
end

--- Next thing read while negotiating: a stanza, or nil, message, condition
-- (the stream header is returned as { open = attr }).
function Session:read(timeout)
  if self.queue.n == 0 then
    if not self.conn or self.conn.closed then return nil, "connection closed", "closed" end
    local w = task.waiter("session:read", 1)
    self.reader = w
    local conn = self.conn
    local t = core.timer(timeout or 30, w)
    -- a cancelled task (lxmpp.task.cancel: a cancelled lxmpp.connect, or
    -- c:close() during a reconnection) leaves neither the timer nor, when
    -- negotiating, a half-negotiated connection behind: nothing could use
    -- the stream from where it stopped
    w.cancel = function()
      t:stop()
      if self.reader == w then self.reader = nil end
      if self.negotiating and not conn.closed then conn:abort() end
    end
    conn:resume()
    w:wait()
    t:stop()
    if self.reader == w then
      self.reader = nil
      return nil, "timed out waiting for the server", "timeout"
    end
  end
  local item = self.queue:pop()
  if item.error then return nil, item.error, item.condition end
  return item.open and item or item.stanza
end

---------------------------------------------------------------------------
-- errors and the end of the stream

--- Sends a stream error and closes (RFC 6120 §4.9). extra: the XML of an
-- application-specific condition element, or nil.
function I.stream_error(self, cond, text, extra)
  if not self.conn or self.conn.closed then return end
  local xml, close = self.conn.framing.error(cond, text, extra)
  self:log("warn", "stream error %s: %s", cond, tostring(text))
  self.conn:write(xml)
  if close then self.conn:write(close) end
  self.closed_reason = text or cond
  I.lost(self, text or cond, cond)
  self.conn:close()
end

-- The connection ended (or must end): fail what waits on it, once. A
-- session that will resume its stream (on_lost returns true) keeps its
-- pending requests: their replies come on the resumed stream.
function I.lost(self, msg, cond)
  if self.lost_reason then return end
  self.lost_reason = { msg, cond }
  if self.negotiating then I.push(self, { error = msg, condition = cond }) end
  if self.close_waiter then self.close_waiter:wake(true) end
  -- nothing will drain any more (wait_drain)
  local ws = self.drain_waiters
  self.drain_waiters = nil
  for _, w in ipairs(ws or {}) do w:wake(nil, msg, cond) end
  local keep = self.on_lost and self.on_lost(msg, cond)
  if not keep then I.fail_pending(self, msg, cond) end
end

--- Fails every request still waiting for a reply.
function I.fail_pending(self, msg, cond)
  for id, p in pairs(self.pending) do
    self.pending[id] = nil
    p.waiter:wake(nil, msg, cond)
  end
end

--- Ends the stream cleanly: sends the end of our stream (</stream:stream>,
-- or <close/> over WebSocket), waits (bounded) for the peer's, then closes
-- the connection.
---------------------------------------------------------------------------
-- a connection attempt that close() cuts short (clients: the first
-- lxmpp.connect and each reconnection's attempt, reconnect.lua; components:
-- comp:connect)

-- close() during an establish() under way in task t (a reconnection's
-- attempt, or a first connection's: I.connect). An attempt may wait for a
-- long time in any of its phases (DNS up to the resolver's timeout, a TCP
-- connect or an XEP-0156 lookup up to connect_timeout, the TLS handshake
-- and the stream negotiation up to opts.timeout): the task ends here, and
-- each of those waits, cancelled, releases what it holds (lookups
-- abandoned, the connection attempt's socket closed, timers stopped).
-- false when no establish() is under way in t (or t is the running task,
-- which cannot be cancelled).
function I.cut_establish(self, t)
  if not (t and self.establishing and task.cancel(t)) then return false end
  self.establishing, self.deadline, self.redirect = nil, nil, nil
  self.negotiating = false
  return true
end

-- Why an attempt that close() cut short failed: lxmpp.shutdown's doing,
-- or the program's.
local function cut_reason()
  if require("lxmpp.signal").shutting_down() then
    return "lxmpp.shutdown() ended the connection attempt", "system-shutdown"
  end
  return "the client was closed while connecting", "closed"
end

--- I.connect(self [, establish]): the first connection (lxmpp.connect,
-- lxmpp.register, comp:connect): establish(self) (default self:establish())
-- runs in a task of its own, as a
-- reconnection's attempt does, so that close() (lxmpp.shutdown closes
-- every session) cuts it short in any phase the same way (I.cut_connect);
-- the caller's task cancelled meanwhile (lxmpp.task.cancel) cuts it too.
-- true, or nil, message, condition. While lxmpp.shutdown() is under way, a
-- new connection is refused at once (it would escape the shutdown, which
-- has already closed the sessions it knew).
function I.connect(self, establish)
  if require("lxmpp.signal").shutting_down() then
    -- (after a yield: a task that retries at once in a loop lets the
    -- shutdown go on)
    task.yield()
    return nil, "lxmpp.shutdown() is under way: no new connection", "system-shutdown"
  end
  local w = task.waiter("lxmpp.connect", 2)
  local t = task.spawn(function()
    local r = compat.pack(compat.pcall(establish or self.establish, self))
    self.establishing = nil
    -- (close() from inside the attempt, which could not cancel it)
    if r[1] and r[2] and self.closing then self.conn:abort() end
    w:wake(r)
  end)
  self.establishing, self.connect_task, self.connect_waiter = true, t, w
  w.cancel = function()
    self.connect_task, self.connect_waiter = nil, nil
    if not I.cut_establish(self, t) and self.conn and not self.conn.closed then self.conn:abort() end
  end
  local r = w:wait()
  self.connect_task, self.connect_waiter = nil, nil
  if not r[1] then error(r[2], 0) end              -- raised in the attempt: raised here
  if self.closing then
    -- closed once establish() was over, before this task ran again
    if r[2] and self.conn and not self.conn.closed then self.conn:abort() end
    return nil, cut_reason()
  end
  return compat.unpack(r, 2, r.n)
end

--- I.cut_connect(self) -> true when a first connection (I.connect) was
-- under way and close() has cut it short (self.closing already set): the
-- connect returns nil, message, condition.
function I.cut_connect(self)
  local first = self.connect_waiter
  if not first then return false end
  if not I.cut_establish(self, self.connect_task) and self.conn and not self.conn.closed then
    self.conn:abort()
  end
  first:wake(compat.pack(true))
  return true
end

function Session:close(timeout)
  local conn = self.conn
  if not conn or conn.closed then return true end
  self.closing = true
  -- (a connection closing already, after a stream error, reads nothing
  -- more: no </stream:stream> of the server's can come to wait for)
  if not self.remote_closed and not conn.closing then
    conn:write(conn.framing.close)
    local ok = compat.pcall(task.current)
    if ok then
      local w = task.waiter("close", 1)
      self.close_waiter = w
      local t = core.timer(timeout or 10, w)
      -- a task cancelled meanwhile cuts the close short: no timer, no
      -- connection left behind
      w.cancel = function()
        t:stop()
        if self.close_waiter == w then self.close_waiter = nil end
        conn:abort()
      end
      w:wait()
      t:stop()
      self.close_waiter = nil
    end
  end
  self.closed_reason = "closed by us"
  return conn:close(timeout)
end

---------------------------------------------------------------------------
-- routing once online

function I.on_stanza(self, s)
  self.last_rx = core.now()
  if self.debug then self:log("debug", "IN %s", I.describe(self, s)) end
  if s.name == "error" and s.attr.xmlns == M.NS_STREAMS then
    local cond, text, data = stream_error.parse(s)
    if cond == "see-other-host" then self.see_other_host = data end
    self.closed_reason = text or cond
    I.lost(self, ("stream error: %s%s"):format(cond, text and (" (" .. text .. ")") or ""), cond)
    if self.conn then self.conn:close() end
    return
  end
  if self.negotiating then
    self.conn:pause()
    I.push(self, { stanza = s })
    return
  end
  I.incoming(self, s)
end

--- s:hook_child(stanza_name, xmlns, fn [, priority]) -> id: fn(stanza) runs
-- for each incoming stanza of that name with a child element in namespace
-- xmlns (once per stanza, however many such children it has), after the
-- "stanza-in" handlers; a result other than nil ends the stanza's handling
-- there. Hooks run by priority (higher first: wrappers such as carbons
-- decide before anyone reads the outer stanza), then in the order of the
-- children. Plugins that care about one extension hook here instead of
-- looking at every stanza themselves.
function Session:hook_child(name, xmlns, fn, priority)
  local by_ns = self.child_hooks[name]
  if not by_ns then
    by_ns = events.new()
    self.child_hooks[name] = by_ns
  end
  return by_ns:add(xmlns, fn, priority)
end

--- A stanza of the established stream: plugins first (the "stanza-in"
-- handlers, then the hooks of its children's namespaces), then routing.
function I.incoming(self, s)
  if self.bus:fire("stanza-in", s) then return end
  local by_ns = self.child_hooks[s.name]
  if by_ns then
    local tags = s.tags
    local found, nfound = nil, 0    -- the hooked namespaces, each once
    for i = 1, #tags do
      local ns = tags[i].attr.xmlns
      if ns ~= nil and by_ns:list(ns) ~= nil then
        local seen = false
        for j = 1, nfound do
          if found[j] == ns then seen = true break end
        end
        if not seen then
          found = found or {}
          nfound = nfound + 1
          found[nfound] = ns
        end
      end
    end
    if nfound > 1 then
      -- stable: by priority, then in the order of the children
      local order = {}
      for i = 1, nfound do order[i] = i end
      table.sort(order, function(a, b)
        local pa, pb = by_ns:list(found[a])[1].priority, by_ns:list(found[b])[1].priority
        if pa ~= pb then return pa > pb end
        return a < b
      end)
      local sorted = {}
      for i = 1, nfound do sorted[i] = found[order[i]] end
      found = sorted
    end
    for i = 1, nfound do
      if by_ns:fire(found[i], s) ~= nil then return end
    end
  end
  I.route(self, s)
end

--- Ends the negotiation: what was read meanwhile and not consumed by a
-- feature is handled as usual, then reading goes on.
function I.finish_negotiation(self)
  self.negotiating = false
  for _, item in ipairs(self.queue:clear()) do
    if item.stanza then I.incoming(self, item.stanza) end
  end
  if self.conn then self.conn:resume() end
end

-- Is `from` the entity a request to `to` was sent to? (RFC 6120 §8.2.3: IQ
-- replies are matched by id and by the address the request went to.)
function I.reply_from_ok(self, to, from)
  if not to or (self.bare_jid and jid.equal(to, self.bare_jid)) then
    -- sent to our account or our server: the reply comes from there
    return from == nil or jid.equal(from, self.bare_jid or "") or
      jid.equal(from, self.jid or "") or jid.equal(from, self.domain or "")
  end
  return from ~= nil and jid.equal(from, to)
end

function I.route(self, s)
  local name, typ = s.name, s.attr.type
  if name == "iq" and (typ == "result" or typ == "error") then
    local p = s.attr.id and self.pending[s.attr.id]
    if p and I.reply_from_ok(self, p.to, s.attr.from) then
      self.pending[s.attr.id] = nil
      if typ == "result" then
        p.waiter:wake(s)
      else
        local etype, cond, text = s:get_error()
        p.waiter:wake(nil, text or cond or "error", cond or "undefined-condition", s, etype)
      end
      return
    end
    if p then
      self:log("warn", "ignored an IQ reply with id %s from the wrong sender %s",
        s.attr.id, tostring(s.attr.from))
    end
  end
  self:fire_user("stanza", s)
  if name == "message" or name == "presence" or name == "iq" then self:fire_user(name, s) end
  if name == "iq" and (typ == "get" or typ == "set") then I.answer_iq(self, s) end
end

function I.answer_iq(self, iq)
  local from = iq.attr.from
  if from ~= nil and not jid.prep(from) then
    -- no answer to an address that is none (a server would not have sent
    -- it; whatever it is, it gets nothing from us)
    self:log("warn", "ignored an IQ %s from an invalid JID", tostring(iq.attr.type))
    return
  end
  local child = iq.tags[1]
  local h = child and self.iq_handlers[child.attr.xmlns or ""]
  if not h then
    self:send(st.error_reply(iq, "cancel", "service-unavailable"))
    return
  end
  task.spawn(function()
    local ok, reply = compat.pcall(h, iq)
    if not ok then
      self:log("error", "handle_iq handler for %s failed: %s", tostring(child.attr.xmlns), tostring(reply))
      self:send(st.error_reply(iq, "wait", "internal-server-error"))
    elseif st.is_stanza(reply) then
      self:send(reply)
    elseif reply == nil then
      self:send(st.reply(iq))
    else
      self:log("error", "handle_iq handler for %s returned a %s", tostring(child.attr.xmlns), type(reply))
      self:send(st.error_reply(iq, "wait", "internal-server-error"))
    end
  end)
end

---------------------------------------------------------------------------
-- user API

--- on(event, fn) -> id: fn runs as its own task for each event.
function Session:on(event, fn)
  if not USER_EVENTS[event] then error("on: unknown event '" .. tostring(event) .. "'", 2) end
  if type(fn) ~= "function" then error("on: handler must be a function", 2) end
  local id = self.user:add(event, fn)
  if self.on_added then self:on_added(event) end
  return id
end

--- off(id): remove a handler; true if it existed.
function Session:off(id)
  return self.user:remove(id)
end

-- Starts a task per handler of event, in the order they were added.
function Session:fire_user(event, ...)
  local list = self.user:list(event)
  if not list then return end
  for i = 1, #list do task.spawn(list[i].fn, ...) end
end

--- wait_drain([timeout]): after send returned "resource-constraint" (the
-- peer reads slower than we write), waits until the output queue drains.
-- true, or nil, message, condition (the link lost meanwhile ends the wait
-- at once with its reason).
function Session:wait_drain(timeout)
  if not self.conn or self.conn.closed or self.lost_reason then return nil, "not connected", "closed" end
  local info = self.conn:info()
  if info and info.queued == 0 then return true end     -- nothing waits for the peer
  local w = task.waiter("wait_drain", 1)
  self.drain_waiters = self.drain_waiters or {}
  self.drain_waiters[#self.drain_waiters + 1] = w
  local t = core.timer(timeout or 30, w)
  w.cancel = function() t:stop() end       -- (a cancelled task leaves no timer)
  local ok, msg, cond = w:wait()
  t:stop()
  if ok then return true end
  if msg then return nil, msg, cond end
  return nil, "the output queue did not drain in time", "timeout"
end

--- handle_iq(xmlns, fn): fn(iq) answers get/set whose payload has xmlns;
-- it returns the reply (nil: an empty result).
function Session:handle_iq(xmlns, fn)
  if type(xmlns) ~= "string" then error("handle_iq: xmlns must be a string", 2) end
  if fn ~= nil and type(fn) ~= "function" then error("handle_iq: handler must be a function", 2) end
  self.iq_handlers[xmlns] = fn
end

--- request(iq, timeout) -> result | nil, message, condition, error_stanza
function Session:request(iq, timeout)
  if not st.is_stanza(iq) or iq.name ~= "iq" then error("request: expected an iq stanza", 2) end
  if iq.attr.type ~= "get" and iq.attr.type ~= "set" then error("request: the iq must be of type get or set", 2) end
  if timeout ~= nil and (type(timeout) ~= "number" or timeout <= 0) then
    error("request: timeout must be a positive number", 2)
  end
  local w = task.waiter("request", 1)
  local id = iq.attr.id
  if not id or self.pending[id] then
    id = M.new_id()
    iq.attr.id = id
  end
  local to = iq.attr.to and (jid.prep(iq.attr.to) or iq.attr.to) or false
  self.pending[id] = { to = to or nil, waiter = w }
  local ok, msg, cond = self:send(iq)
  if not ok then
    self.pending[id] = nil
    return nil, msg, cond
  end
  local t = core.timer(timeout or 30, w)
  local r, emsg, econd, estanza, etype = w:wait()
  t:stop()
  if r == nil and emsg == nil then
    self.pending[id] = nil
    return nil, "no reply within " .. tostring(timeout or 30) .. " seconds", "timeout"
  end
  return r, emsg, econd, estanza, etype
end

return M
