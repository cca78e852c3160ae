-- Loopback peers that never answer, for the specs that time how promptly a
-- connection attempt, a TLS handshake or a stream negotiation is cut short.
--
--   local bh = blackhole.tcp()     -- a TCP connect to 127.0.0.1:bh.port stays
--   bh:close()                     -- pending (no SYN-ACK) until it is given up
--   bh:attempt_open()              -- lxmpp's last connect to it is pending
--   bh:attempt_closed()            -- ... and has been closed since
--
--   local s = blackhole.silent()   -- accepts (in this loop), reads, never writes
--   s.port  s.conns  s:bytes_in()  s:close()
--   -- s.conns[i].eof: that connection was closed by the other end
--
-- blackhole.tcp: a listening socket (LuaSocket, outside lxmpp's loop) with
-- a backlog of 0 that nobody accepts from, filled with connections; the
-- kernel then drops further SYNs (its accept queue is full), so a connect
-- gets no answer at all, as with a host that does not answer. Loopback only.
local compat = require "lxmpp.compat"
local net = require "lxmpp.net"

local M = {}

local Hole = {}
Hole.__index = Hole

-- lxmpp's C connection of its last attempt to this port, kept by a spy on
-- core.tcp_connect from blackhole.tcp() to Hole:close()
function Hole:attempt_open() return self.attempt ~= nil and self.attempt:info().open end
function Hole:attempt_closed() return self.attempt ~= nil and not self.attempt:info().open end

function Hole:close()
  if self.unspy then self.unspy() end
  self.unspy = nil
  for _, f in ipairs(self.fill) do f:close() end
  self.fill = {}
  if self.srv then self.srv:close() end
  self.srv = nil
end

function M.tcp()
  local socket = require "socket"
  local srv = assert(socket.tcp())
  assert(srv:bind("127.0.0.1", 0))
  assert(srv:listen(0))
  local _, port = srv:getsockname()
  local self = setmetatable({ srv = srv, port = compat.tointeger(tonumber(port)), fill = {} }, Hole)
  local core = require "lxmpp.core"
  local tcp_connect = core.tcp_connect
  local function spy(ip, p, owner)
    local conn, msg, cond = tcp_connect(ip, p, owner)
    if p == self.port then self.attempt = conn end
    return conn, msg, cond
  end
  core.tcp_connect = spy
  self.unspy = function() if core.tcp_connect == spy then core.tcp_connect = tcp_connect end end
  for i = 1, 4 do
    local f = assert(socket.tcp())
    f:settimeout(0)
    f:connect("127.0.0.1", self.port)
    self.fill[i] = f
  end
  return self
end

local Silent = {}
Silent.__index = Silent

function Silent:bytes_in()
  local n = 0
  for _, rec in ipairs(self.conns) do n = n + rec.conn:bytes_in() end
  return n
end

function Silent:close()
  for _, rec in ipairs(self.conns) do
    if not rec.conn.closed then rec.conn:abort() end
  end
  if self.listener then self.listener:close() end
  self.listener = nil
end

--- blackhole.silent() -> a listener (lxmpp.net, so from inside lxmpp.run)
-- whose connections read everything and never write a byte.
function M.silent()
  local self = setmetatable({ conns = {} }, Silent)
  self.listener = assert(net.listen("127.0.0.1", 0, function(conn)
    local rec = { conn = conn, eof = false }
    self.conns[#self.conns + 1] = rec
    conn:on("data", function() end)
    conn:on("eof", function()
      rec.eof = true
      conn:abort()
    end)
    conn:on("read-error", function()
      rec.eof = true
      conn:abort()
    end)
    conn:raw()
  end))
  self.port = self.listener:port()
  return self
end

return M
