-- A TCP port on 127.0.0.1 that was free a moment ago, for the peers the
-- suite starts (Prosody, ejabberd, the fault proxy) that must be told a
-- port before they listen: bind port 0, read what the kernel chose, close.
local compat = require "lxmpp.compat"
local socket = require "socket"

return function()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return compat.tointeger(tonumber(port))
end
