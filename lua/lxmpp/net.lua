-- lxmpp.net: TCP connections as objects that tasks can wait on, over the C
-- connections of csrc/net.c: the TCP transport of lxmpp.transport. Each C event arrives through the dispatcher as
-- ("net", owner, event, ...); owner is the Lua object below, and its
-- handlers run synchronously (they must not wait: spawn a task to wait).

local core = require "lxmpp.core"
local task = require "lxmpp.task"
local transport = require "lxmpp.transport"

local setmetatable, type, error, tostring, pairs = setmetatable, type, error, tostring, pairs

local M = {}

local Conn = {}
Conn.__index = Conn

local live = setmetatable({}, { __mode = "k" })   -- open connections

local function new_conn(c)
  -- a transport (lxmpp.transport) framed as an XML document; TLS, when
  -- there is any, is started on it by the stream (STARTTLS or direct TLS)
  local conn = setmetatable({ c = c, handlers = {}, closed = false, encrypted = false, framing = transport.xml }, Conn)
  live[conn] = true
  return conn
end

--- net.abort_all(): abort every open connection (shutdown paths, specs).
function M.abort_all()
  local n = 0
  for conn in pairs(live) do
    if not conn.closed and conn.c then
      conn.c:abort()
      n = n + 1
    end
  end
  return n
end

--- net.closing() -> how many connections are closing (close() called, the
-- last bytes not flushed yet, or the peer's EOF awaited: a lingering close,
-- csrc/net_io.c lx_net_drain); net.abort_closing() cuts them (shutdown).
function M.closing()
  local n = 0
  for conn in pairs(live) do
    if conn.closing and not conn.closed then n = n + 1 end
  end
  return n
end

function M.abort_closing()
  for conn in pairs(live) do
    if conn.closing and not conn.closed and conn.c then conn.c:abort() end
  end
end

-- C events for connections and listeners
task.handle("net", function(owner, event, ...)
  if owner then return owner:net_event(event, ...) end
end)

function Conn:net_event(event, ...)
  if event == "closed" then
    self.closed = true
    live[self] = nil
    local w = self.close_waiter
    self.close_waiter = nil
    if w then w:wake(true) end
  end
  local h = self.handlers[event]
  if h then return h(...) end
  local target = self.target
  if target then
    h = self.target_events[event]
    if h then return h(target, ...) end
  end
end

--- conn:on(event, fn): fn(...) for the C events: "open" (attr), "stanza"
-- (stanza), "stream-close", "parse-error" (msg, cond), "eof", "read-error",
-- "write-error", "drain", "closed". One handler per event; it runs
-- synchronously, inside the read that produced the event.
function Conn:on(event, fn)
  if type(event) ~= "string" then error("conn:on: event must be a string", 2) end
  if fn ~= nil and type(fn) ~= "function" then error("conn:on: handler must be a function", 2) end
  self.handlers[event] = fn
  return self
end

--- conn:set_target(target, events): events[event](target, ...) for the
-- events that have no handler set with conn:on: one table of functions
-- shared by many connections (the server's streams) instead of closures
-- made for each one. A handler set with conn:on wins.
function Conn:set_target(target, events)
  if type(events) ~= "table" then error("conn:set_target: events must be a table", 2) end
  self.target, self.target_events = target, events
  return self
end

function Conn:parse(opts) return self.c:parse(opts) end
function Conn:write(bytes) return self.c:write(bytes) end
function Conn:send(stanza) return self.c:write(tostring(stanza)) end
function Conn:restart() return self.c:restart() end
function Conn:pause() return self.c:pause() end
function Conn:resume() return self.c:resume() end
function Conn:info() return self.c:info() end
function Conn:abort() return self.c:abort() end
function Conn:set_max_queue(n) return self.c:set_max_queue(n) end
function Conn:bytes_in() return self.c:bytes_in() end
function Conn:starttls(ctx, domain, ticket) return self.c:starttls(ctx, domain, ticket) end
--- conn:channel_binding(type [, probe]) -> data | nil, why; probe: true
-- when this TLS connection has that type, without computing its data
function Conn:channel_binding(t, probe) return self.c:channel_binding(t, probe) end
function Conn:tls_info() return self.c:tls_info() end
--- conn:tls_peer_is(domain) -> true when the peer's certificate verified and names domain (RFC 6125, XEP-0178)
function Conn:tls_peer_is(domain) return self.c:tls_peer_is(domain) end
--- conn:tls_ticket() -> the client's TLS session ticket (csrc/tls.h), moved out, or nil
function Conn:tls_ticket() return self.c:tls_ticket() end
--- conn:raw(): no XML parser; each read (decrypted) is a "data" (bytes) event
function Conn:raw() return self.c:raw() end
--- conn:websocket{ role = "server"|"client", max_message = bytes, buffered = bytes }:
-- WebSocket mode (RFC 6455 framing, RFC 7395 XMPP framing, all in C), usually
-- after the HTTP Upgrade was done in raw mode (buffered: the bytes read past
-- the request). Then parse(opts): "open" for <open/>, "stream-close" for
-- <close/>, "stanza" for the rest; write(bytes) sends one text message; the
-- peer's close frame gives "eof" (code, reason); a protocol violation
-- "read-error" (msg, "closed", code). csrc/net.c documents the details.
function Conn:websocket(opts) return self.c:websocket(opts) end

--- conn:shutdown([linger]): graceful close, never waiting: what is queued
-- goes out, then the socket closes ("closed" follows) once the peer has
-- closed its side (what it sends meanwhile is dropped; 2 s of silence or
-- 10 s in all once it has everything); a peer that reads none of it for
-- linger seconds (default 30) has the socket aborted.
function Conn:shutdown(linger)
  if self.closed then return true end
  self.closing = true
  self.c:close(linger)
  return true
end

--- conn:close([timeout]): graceful close; from a task it waits until the
-- socket is closed, at most timeout seconds (default 10); from a task or
-- not, a peer that reads none of what is queued for that long has the
-- socket aborted.
function Conn:close(timeout)
  if self.closed then return true end
  self.closing = true
  self.c:close(timeout or 10)
  if not task.running() then return true end   -- (an event handler: nothing to wait in)
  local w = task.waiter("conn:close", 1)
  self.close_waiter = w
  local t = core.timer(timeout or 10, w)
  -- a task cancelled meanwhile cuts the close short: no timer, no socket
  -- left behind
  w.cancel = function()
    t:stop()
    self.c:abort()
  end
  local done = w:wait()
  t:stop()
  if not done then
    self.c:abort()
    return nil, "close timed out", "timeout"
  end
  return true
end

--- net.connect(ip, port [, timeout]) -> conn | nil, message, condition
-- Waits (in a task) until the TCP connection is made; ip is numeric.
function M.connect(ip, port, timeout)
  local w = task.waiter("lxmpp.net.connect", 1)
  local conn = new_conn(nil)
  conn.handlers.connected = function() w:wake(true) end
  conn.handlers["connect-failed"] = function(msg, cond) w:wake(nil, msg, cond) end
  local c, msg, cond = core.tcp_connect(ip, port, conn)
  if not c then return nil, msg, cond end
  conn.c = c
  local t = core.timer(timeout or 30, w)
  -- a cancelled task (lxmpp.task.cancel), even one whose connect had just
  -- succeeded, leaves no attempt, connection or timer behind
  w.cancel = function() t:stop(); c:abort() end
  local ok, emsg, econd = w:wait()
  t:stop()
  conn.handlers.connected, conn.handlers["connect-failed"] = nil, nil
  if ok == nil and emsg == nil then
    c:abort()
    return nil, ("connection to %s port %d timed out"):format(ip, port), "timeout"
  end
  if not ok then return nil, emsg, econd end
  return conn
end

local Listener = {}
Listener.__index = Listener

function Listener:net_event(event, c)
  if event == "accept" then
    local conn = new_conn(c)
    c:set_owner(conn)
    return self.on_accept(conn)
  end
end

local listening = setmetatable({}, { __mode = "k" })   -- open listeners

function Listener:port() return self.l:port() end
function Listener:close()
  listening[self] = nil
  return self.l:close()
end

--- net.close_listeners() -> how many it closed: closes every listener still
-- open (shutdown paths; specs clean up with it after a failure, since an
-- open listener keeps lxmpp.run's loop alive).
function M.close_listeners()
  local n = 0
  for ls in pairs(listening) do
    ls:close()
    n = n + 1
  end
  return n
end

--- net.listen(ip, port, on_accept) -> listener | nil, message, condition
-- on_accept(conn) runs synchronously for each accepted connection.
function M.listen(ip, port, on_accept)
  if type(on_accept) ~= "function" then error("net.listen: on_accept must be a function", 2) end
  local ls = setmetatable({ on_accept = on_accept }, Listener)
  local l, msg, cond = core.tcp_listen(ip, port, ls)
  if not l then return nil, msg, cond end
  ls.l = l
  listening[ls] = true
  return ls
end

return M
