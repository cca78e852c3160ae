-- Waiting for client events that carry several arguments (plugins' events:
-- "muc-message" gives room and message, ...), for specs.
--
--   local ev = require "spec.support.events"
--   local args = ev.expect(c, "muc-message", function(room, m) return m.body == "hi" end)
--   -- args = table.pack(room, m), or nil after the timeout (5 s)
--   local list = ev.collect(c, "muc-occupant")   -- every event's arguments, packed
local compat = require "lxmpp.compat"
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"

local M = {}

function M.expect(c, event, filter, timeout)
  local w = lxmpp.task.waiter("expect")
  local id = c:on(event, function(...)
    if not filter or filter(...) then w:wake(compat.pack(...)) end
  end)
  local t = core.timer(timeout or 5, w)
  local args = w:wait()
  t:stop()
  c:off(id)
  return args
end

function M.collect(c, event)
  local list = {}
  list.id = c:on(event, function(...) list[#list + 1] = compat.pack(...) end)
  return list
end

--- Lets the loop run for a moment (to see that something does NOT happen).
function M.settle(seconds)
  lxmpp.sleep(seconds or 0.2)
end

return M
