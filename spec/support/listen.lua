-- Collects a client's events in order, so a spec can act first and then
-- wait for what followed, with a deadline (a missing event fails the spec
-- instead of hanging it).
--
--   local inbox = listen(c, "receipt")
--   ... act ...
--   local id, from = inbox:next()        -- the next event's arguments, or an error after 5 s
--   inbox:none(0.2)                      -- asserts nothing more arrives within 0.2 s
local compat = require "lxmpp.compat"
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"

local Inbox = {}
Inbox.__index = Inbox

function Inbox:next(timeout)
  if #self.items == 0 then
    local w = lxmpp.task.waiter("inbox")
    self.waiter = w
    local t = core.timer(timeout or 5, w)
    w:wait()
    t:stop()
    self.waiter = nil
    if #self.items == 0 then error("no '" .. self.event .. "' event within " .. (timeout or 5) .. " s", 2) end
  end
  local item = table.remove(self.items, 1)
  return compat.unpack(item, 1, item.n)
end

function Inbox:none(timeout)
  lxmpp.sleep(timeout or 0.2)
  if #self.items > 0 then error("unexpected '" .. self.event .. "' event", 2) end
end

return function(c, event, filter)
  local self = setmetatable({ items = {}, event = event }, Inbox)
  c:on(event, function(...)
    if filter and not filter(...) then return end
    self.items[#self.items + 1] = compat.pack(...)
    if self.waiter then self.waiter:wake() end
  end)
  return self
end
