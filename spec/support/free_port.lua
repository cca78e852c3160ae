-- A TCP port on 127.0.0.1 that was free a moment ago, for the peers the
-- suite starts (Prosody, ejabberd, the fault proxy) that must be told a
-- port before they listen.
--
-- Chosen at random below the kernel's ephemeral range
-- (/proc/sys/net/ipv4/ip_local_port_range), then checked by binding it: a
-- port the kernel handed out for bind(0) and that was closed again may be
-- handed out again at once, to a listener or as the source port of a
-- connection of a spec running beside this one (make test runs two spec
-- files at a time), and Prosody then found its port taken or our client
-- reached another spec's server. The kernel never picks ports below that
-- range by itself, so only another explicit choice could collide.
local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local socket = require "socket"

local function ephemeral_low()
  local f = io.open("/proc/sys/net/ipv4/ip_local_port_range")
  local low = f and tonumber((f:read("*l") or ""):match("^(%d+)"))
  if f then f:close() end
  return low or 32768
end

local LOW = 10000
local HIGH = ephemeral_low() - 1

local function random_port()
  local b = core.random(2)         -- (not math.random: Lua 5.1 and LuaJIT seed it the same in every process)
  return LOW + (b:byte(1) * 256 + b:byte(2)) % (HIGH - LOW + 1)
end

-- ports this process handed out already: a spec asks for several before
-- anything listens on them (its server's, then ejabberd's or Prosody's),
-- and the bind check cannot see a port handed out but not bound yet
local given = {}

return function()
  if HIGH > LOW then
    for _ = 1, 64 do
      local port = random_port()
      if not given[port] then
        local s = socket.bind("127.0.0.1", port)
        if s then
          s:close()
          given[port] = true
          return port
        end
      end
    end
  end
  -- (an unusual ephemeral range: what the kernel gives)
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return compat.tointeger(tonumber(port))
end
