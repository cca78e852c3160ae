-- A raw XMPP client for specs that speak to the embedded server byte by
-- byte (hostile clients, registration, stream-level checks). It reads
-- stream events into a queue that a task waits on.
--
--   local r = raw.connect(port [, host])        -- in a task (host: 127.0.0.1)
--   local r = raw.wrap(conn)                    -- a connection accepted by net.listen
--   r:send("<stream:stream ...>")               -- any bytes
--   local ev = r:next()                         -- { open = attr } | { stanza = s }
--                                               -- | { close = true } | { closed = true }
--   local cond, text = r:stream_error()         -- waits for <stream:error/>
--   r:negotiate_tls(cafile [, to [, { ctx =, ticket = }]]) -- header, STARTTLS, new header
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local net = require "lxmpp.net"

local M = {}

M.NS_STREAMS = "http://etherx.jabber.org/streams"
M.NS_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"

local function header(to)
  return "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='" ..
    M.NS_STREAMS .. "' to='" .. (to or "example.test") .. "' version='1.0'>"
end
M.header = header

local Raw = {}
Raw.__index = Raw

function M.connect(port, host)
  return M.wrap(assert(net.connect(host or "127.0.0.1", port)))
end

--- raw.wrap(conn) -> the same over a connection the spec has, e.g. one a
-- net.listen callback accepted (a hostile server that we connect to)
function M.wrap(conn)
  local r = setmetatable({ conn = conn, q = {} }, Raw)
  local function push(ev)
    r.q[#r.q + 1] = ev
    local w = r.w
    r.w = nil
    if w then w:wake() end
  end
  conn:on("open", function(attr) push({ open = attr }) end)
  conn:on("stanza", function(s) push({ stanza = s }) end)
  conn:on("stream-close", function() push({ close = true }) end)
  conn:on("parse-error", function(msg, cond) push({ parse_error = cond, msg = msg }) end)
  conn:on("tls-done", function() push({ tls = true }) end)
  conn:on("tls-failed", function(msg) push({ tls_failed = msg }) end)
  conn:on("eof", function() push({ closed = true }) end)
  conn:on("closed", function() push({ closed = true }) end)
  conn:parse()
  return r
end

function Raw:send(bytes) return self.conn:write(bytes) end

--- The next event (nil after `timeout` seconds, default 5).
function Raw:next(timeout)
  if #self.q == 0 then
    local w = lxmpp.task.waiter("raw:next")
    self.w = w
    local t = core.timer(timeout or 5, w)
    w:wait()
    t:stop()
    if self.w == w then self.w = nil end
    if #self.q == 0 then return nil end
  end
  return table.remove(self.q, 1)
end

--- The next stanza (skipping the stream header), or nil, what came instead.
function Raw:stanza(timeout)
  while true do
    local ev = self:next(timeout)
    if not ev then return nil, "timeout" end
    if ev.stanza then return ev.stanza end
    if not ev.open and not ev.tls then return nil, ev end
  end
end

--- Waits for <stream:error/>: its condition and text (nil if none came).
function Raw:stream_error(timeout)
  while true do
    local ev = self:next(timeout)
    if not ev then return nil, "no stream error came" end
    if ev.closed then return nil, "closed without a stream error" end
    local s = ev.stanza
    if s and s.name == "error" and s.attr.xmlns == M.NS_STREAMS then
      local cond, text
      for c in s:childtags(nil, M.NS_ERRORS) do
        if c.name == "text" then text = c:get_text() else cond = cond or c.name end
      end
      return cond, text
    end
  end
end

--- Waits until the server has closed the connection (true), or timeout.
function Raw:wait_closed(timeout)
  while true do
    local ev = self:next(timeout)
    if not ev then return false end
    if ev.closed then return true end
  end
end

--- Opens the stream, does STARTTLS (verifying with cafile) and reopens:
-- returns the features offered over TLS. opts (optional): ctx, a client
-- core.tls_context to use instead of a new one, and ticket, a TLS session
-- ticket to offer (r.conn:tls_ticket() of an earlier connection of ctx).
function Raw:negotiate_tls(cafile, to, opts)
  opts = opts or {}
  self:send(header(to))
  local f = assert(self:stanza())
  assert(f.name == "features", "expected features")
  self:send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
  local p = assert(self:stanza())
  assert(p.name == "proceed", "expected proceed, got " .. tostring(p.name))
  local ctx = opts.ctx or assert(core.tls_context({ mode = "client", cafile = cafile }))
  self.conn:starttls(ctx, to or "example.test", opts.ticket)
  local ev = self:next()
  assert(ev and ev.tls, "TLS did not complete")
  self:send(header(to))
  local f2 = assert(self:stanza())
  assert(f2.name == "features", "expected features after TLS")
  return f2
end

function Raw:close() self.conn:abort() end

--- TLS, SASL PLAIN and, unless bind is false, a bound resource (bind may
-- name it; default "raw"): a raw stream ready for stanzas.
function M.login(port, cafile, user, pw, bind)
  local r = M.connect(port)
  r:negotiate_tls(cafile)
  r:send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" ..
    core.base64_encode("\0" .. user .. "\0" .. pw) .. "</auth>")
  local s = assert(r:stanza())
  assert(s.name == "success", "authentication failed: " .. tostring(s.name))
  r.conn:restart()
  r:send(header())
  local f = assert(r:stanza())
  assert(f.name == "features", "expected features after authentication")
  r.features = f
  if bind ~= false then
    r:send("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>" ..
      (bind or "raw") .. "</resource></bind></iq>")
    local b = assert(r:stanza())
    assert(b.attr.type == "result", "bind failed")
  end
  return r
end

return M
