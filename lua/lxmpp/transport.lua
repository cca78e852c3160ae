-- lxmpp.transport: what carries an XML stream, under the one stream layer.
--
-- The stream layer (lua/lxmpp/session.lua for clients and components,
-- lua/lxmpp/server/stream.lua for the embedded server's streams) opens,
-- restarts and closes streams, writes stream errors and runs the features
-- chain; it never touches a socket. It talks to a *transport*: bytes in
-- (already parsed into top-level elements), bytes out, close. TCP (plain,
-- STARTTLS, direct TLS: lxmpp.net over csrc/net.c) is one transport;
-- M.pipe below (in-process) is another; WebSocket (conn:websocket, csrc/ws.c;
-- client lua/lxmpp/websocket.lua) and BOSH (lua/lxmpp/bosh.lua, server
-- lua/lxmpp/server/bosh.lua) are the others.
--
-- A transport t has:
--   t:on(event, fn)        one handler per event, run synchronously:
--     "open" (attr)          the peer opened or restarted its stream
--     "stanza" (element)     a complete top-level element
--     "stream-close"         the peer closed its stream
--     "parse-error" (msg, cond)   the peer's bytes are not a valid stream
--     "eof" | "read-error" (msg) | "write-error" (msg) | "closed"
--     "drain"                what waited to be written has gone out
--     "tls-done" | "tls-failed" (msg)   (transports that can start TLS)
--   t:set_target(target, events)   optional (lxmpp.net has it):
--                          events[event](target, ...) for the events
--                          with no t:on handler
--   t:parse(opts)          start delivering elements (opts: the stream
--                          parser's limits, docs/api.md "The stream parser")
--   t:restart()            the next bytes are a new stream (RFC 6120 §4.3.3)
--   t:write(bytes)         -> true | nil, message, condition; condition
--                          "resource-constraint" when the output queue is
--                          full (the bytes were not taken; "drain" follows)
--   t:pause() t:resume()   stop and restart reading
--   t:close([timeout])     graceful close; from a task, waits until closed
--   t:shutdown([linger])   graceful close, never waiting; a peer that reads
--                          nothing of what is queued for linger seconds is cut
--   t:abort()              at once, unsent bytes lost; t.closed
--   t:info()               -> { peer = address or "", queued = bytes, ... }
--   t:bytes_in()           bytes read so far
--   t:set_max_queue(n)     output queue bound, bytes
--   t:starttls(ctx, domain) t:channel_binding(type)   TLS (may return nil)
--   t.encrypted            true when the bytes are protected below the
--                          stream (in-process; later wss:// and https://):
--                          no STARTTLS is offered or asked for
--   t.framing              how stream headers, closes, errors and stanzas
--                          are written: M.xml (RFC 6120 §4) or M.websocket
--                          (one element per message, RFC 7395 §3.3; BOSH
--                          bodies carry elements the same way)

local core = require "lxmpp.core"
local stream_error = require "lxmpp.stream_error"
local fifo = require "lxmpp.fifo"

local setmetatable, type, error, tostring, pairs, ipairs, concat =
  setmetatable, type, error, tostring, pairs, ipairs, table.concat

local M = {}

local NS_STREAMS = "http://etherx.jabber.org/streams"
local NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
M.NS_STREAMS, M.NS_FRAMING = NS_STREAMS, NS_FRAMING

--- The methods every transport has (M.check).
M.METHODS = {
  "on", "parse", "restart", "write", "pause", "resume", "close", "shutdown", "abort",
  "info", "bytes_in", "set_max_queue", "starttls", "channel_binding",
}

--- transport.check(t) -> t | nil, message: does t have the interface?
function M.check(t)
  if type(t) ~= "table" then return nil, "a transport must be a table, got " .. type(t) end
  for _, m in ipairs(M.METHODS) do
    if type(t[m]) ~= "function" then return nil, "the transport has no method " .. m end
  end
  local f = t.framing
  if f ~= M.xml and f ~= M.websocket then
    return nil, "the transport's framing is neither transport.xml nor transport.websocket"
  end
  return t
end

-- attributes as XML, escaped, in a stable order (the header's bytes do not
-- depend on table order)
local function attributes(attr)
  local keys = {}
  for k in pairs(attr) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = (" %s='%s'"):format(k, core.xml_escape(tostring(attr[k]))) end
  return concat(parts)
end

---------------------------------------------------------------------------
-- framings

--- transport.xml: one XML document per stream (RFC 6120 §4.2–§4.4).
M.xml = {
  name = "xml",
  --- a top-level stanza's bytes: the stream header gives its namespace
  serialize = function(stanza) return tostring(stanza) end,
  --- the header opening (or reopening) a stream whose content namespace is ns
  open = function(ns, attr)
    return "<?xml version='1.0'?><stream:stream xmlns='" .. core.xml_escape(ns) ..
      "' xmlns:stream='" .. NS_STREAMS .. "'" .. attributes(attr) .. ">"
  end,
  --- nil, or the stream error's condition and text when the peer's header
  -- (its attributes, as the parser gives them) does not open a stream of ns
  check_open = function(attr, ns)
    if attr.xmlns ~= ns then return "invalid-namespace", "the stream namespace must be " .. ns end
  end,
  features = "<stream:features>",
  close = "</stream:stream>",
  --- the bytes of a stream error, which also end the stream (§4.9.1.1)
  error = function(cond, text, extra) return stream_error.xml(cond, text, extra) end,
}

-- A top-level stanza as its own document: with no stream header to give a
-- default namespace, it declares jabber:client itself (RFC 7395 §3.3.3;
-- XEP-0206 §8, BOSH). The serializer escapes ' and > in attribute values,
-- so " xmlns='" in the start tag can only be the attribute.
local function qualify(xml)
  local tag = xml:match("^<[^>]*>")
  if not tag or tag:find(" xmlns='", 1, true) then return xml end
  return (xml:gsub("^<([^%s/>]+)", "<%1 xmlns='jabber:client'", 1))
end

--- transport.websocket: one element per message (RFC 7395 §3.3): the
-- stream opens with <open/> and closes with <close/> in the framing
-- namespace, and an element of the streams namespace declares it itself.
M.websocket = {
  name = "websocket",
  open = function(_, attr)
    return "<open xmlns='" .. NS_FRAMING .. "'" .. attributes(attr) .. "/>"
  end,
  -- the framed parser (csrc/ws.c) gives <open/>'s attributes with xmlns
  -- set to the content namespace, as the XML parser gives a header's
  check_open = function(attr, ns)
    if attr.xmlns ~= ns then return "invalid-namespace", "the stream's content namespace must be " .. ns end
  end,
  features = "<stream:features xmlns:stream='" .. NS_STREAMS .. "'>",
  close = "<close xmlns='" .. NS_FRAMING .. "'/>",
  --- a serialized top-level stanza as it goes out: qualified (above); the
  -- xml framing has no qualify (its stream header gives the namespace)
  qualify = qualify,
  --- a top-level stanza's bytes: jabber:client declared on its top element
  -- when it has none (core.serialize(stanza, ns)), which gives qualify's
  -- bytes without a second pass over them
  serialize = function(stanza) return core.serialize(stanza, "jabber:client") end,
  -- RFC 7395 §3.6.1: the error, then <close/>, each its own message
  error = function(cond, text, extra)
    return stream_error.element(cond, text, extra, NS_STREAMS), "<close xmlns='" .. NS_FRAMING .. "'/>"
  end,
}

---------------------------------------------------------------------------
-- transport.pipe(): two connected in-process endpoints

local Pipe = {}
Pipe.__index = Pipe

local DEFAULT_MAX_QUEUE = 1024 * 1024

-- Delivery runs from a zero-delay timer, never inside the writer's call:
-- a write answered by a write does not recurse, and events arrive as they
-- do from a socket, one read at a time.
local function schedule(self)
  if self.scheduled or self.closed then return end
  self.scheduled = true
  core.timer(0, { wake = function()
    self.scheduled = false
    self:deliver()
  end })
end

local function emit(self, event, ...)
  local h = self.handlers[event]
  if h then return h(...) end
end

function Pipe:on(event, fn)
  if type(event) ~= "string" then error("transport:on: event must be a string", 2) end
  if fn ~= nil and type(fn) ~= "function" then error("transport:on: handler must be a function", 2) end
  self.handlers[event] = fn
  return self
end

function Pipe:parse(opts)
  local p = core.stream_parser({
    stream_open = function(attr) emit(self, "open", attr) end,
    stanza = function(s) emit(self, "stanza", s) end,
    stream_close = function() emit(self, "stream-close") end,
  }, opts)
  self.parser = p
  schedule(self)
  return true
end

function Pipe:restart()
  if self.parser then self.parser:reset() end
  return true
end

-- Feeds what the peer wrote to the parser, one write at a time, while not
-- paused; what follows a restart inside a write is kept for the new stream.
function Pipe:deliver()
  local p = self.parser
  while p and not self.closed and not self.paused do
    local chunk = self.rest
    if chunk then
      self.rest = nil
    else
      if self.inbox.n == 0 then break end
      chunk = self.inbox:pop()
      self.read = self.read + #chunk
      local peer = self.peer
      peer.queued = peer.queued - #chunk
      if peer.blocked and peer.queued < peer.max_queue then
        peer.blocked = false
        if not peer.closed then emit(peer, "drain") end
      end
    end
    local ok, left, cond = p:feed(chunk)
    if not ok then
      emit(self, "parse-error", left, cond or "bad-format")
      return
    end
    if left and left ~= "" then self.rest = left end
    if self.parser ~= p then p = self.parser end
  end
  if self.peer_gone and self.inbox.n == 0 and not self.rest and not self.closed then
    self:finish("eof")
  end
end

function Pipe:write(bytes)
  if self.closed then return nil, "the transport is closed", "closed" end
  local peer = self.peer
  if peer.closed then return nil, "the peer closed the transport", "closed" end
  if self.queued > 0 and self.queued + #bytes > self.max_queue then
    self.blocked = true
    return nil, "the output queue is full", "resource-constraint"
  end
  self.queued = self.queued + #bytes
  peer.inbox:push(bytes)
  schedule(peer)
  return true
end

function Pipe:pause() self.paused = true end

function Pipe:resume()
  if not self.paused then return end
  self.paused = false
  schedule(self)
end

-- This end is over: the peer reads what was written, then sees eof.
function Pipe:finish(event)
  if self.closed then return end
  self.closed = true
  if self.parser then self.parser:close() end
  local peer = self.peer
  if not peer.closed then
    peer.peer_gone = true
    schedule(peer)
  end
  if event then emit(self, event) end
  emit(self, "closed")
end

function Pipe:close()
  self:finish(nil)
  return true
end
Pipe.shutdown = Pipe.close

-- Like a reset connection: what is still unread on either side is lost.
function Pipe:abort()
  self.inbox, self.rest = fifo.new(), nil
  if not self.peer.closed then self.peer.inbox, self.peer.rest = fifo.new(), nil end
  self:finish(nil)
  return true
end

function Pipe:info() return { peer = self.name, queued = self.queued } end
function Pipe:bytes_in() return self.read end
function Pipe:set_max_queue(n) self.max_queue = n end
function Pipe.starttls() return nil, "an in-process pipe has no TLS", "feature-not-implemented" end
function Pipe.channel_binding() return nil end
function Pipe.tls_info() return nil end

local function endpoint(name)
  return setmetatable({
    name = name, handlers = {}, inbox = fifo.new(), queued = 0, read = 0,
    max_queue = DEFAULT_MAX_QUEUE, closed = false, encrypted = true, framing = M.xml,
  }, Pipe)
end

--- transport.pipe([name]) -> a, b: two transports joined in this process:
-- what one writes, the other reads (later, from the loop). Nothing leaves
-- the process, so both count as encrypted. name: the peer address both
-- report in info() (default "pipe").
function M.pipe(name)
  local a, b = endpoint(name or "pipe"), endpoint(name or "pipe")
  a.peer, b.peer = b, a
  return a, b
end

return M
