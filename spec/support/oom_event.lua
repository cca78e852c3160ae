-- Run by spec/support/oom_host.c for spec/net_spec.lua: a connection's
-- "data" event cannot be built (its string cannot be allocated) inside
-- libuv's read callback. The error must come out of core.loop_run after
-- uv_run has returned, and leave the loop usable; an error unwinding
-- through libuv would leave the loop marked as running.
-- arg: package.path, package.cpath (the suite's, so the same core is used)
package.path, package.cpath = arg[1], arg[2]
local core = require "lxmpp.core"
local lxmpp = require "lxmpp"
local net = require "lxmpp.net"
local socket = require "socket"

local server
local l = assert(net.listen("127.0.0.1", 0, function(conn)
  server = conn
  conn:on("data", function() end)
  conn:raw()
end))
local s = assert(socket.tcp())
assert(s:connect("127.0.0.1", l:port()))
local deadline = core.now() + 5
while not server and core.now() < deadline do lxmpp.step(0.01) end
assert(server, "no connection accepted")
lxmpp.step(0.01)
assert(s:send(("x"):rep(4000)))          -- one read's worth, waiting in the socket
collectgarbage()
collectgarbage()
fail_allocations(true)                    -- luacheck: ignore (oom_host.c's)
local ok, err = pcall(core.loop_run, "once")
fail_allocations(false)                   -- luacheck: ignore
print("first", tostring(ok), tostring(err))
ok, err = pcall(core.loop_run, "nowait")
print("again", tostring(ok), tostring(err))
s:close()
server:abort()
l:close()
for _ = 1, 100 do if not lxmpp.step(0.01) then break end end
