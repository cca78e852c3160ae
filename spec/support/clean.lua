-- What every async spec checks when it ends: no task
-- still running, no libuv handle still open. When a failed spec left
-- something behind (tasks, connections, listeners), it is cleaned up first
-- (so the next spec starts clean) and then reported as a failure.
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local net = require "lxmpp.net"
local assert = require "luassert"

return function()
  collectgarbage()
  local tasks, handles = lxmpp.task.count(), core.loop_handles()
  if tasks > 0 or handles > 0 then
    lxmpp.task.cancel_all()
    net.abort_all()
    net.close_listeners()
    for _ = 1, 50 do if not lxmpp.step(0.01) then break end end
  end
  collectgarbage()
  assert.equal(0, tasks, "tasks left running")
  assert.equal(0, handles, "handles left open")
  assert.equal(0, core.loop_handles(), "handles still open after cleaning up")
end
