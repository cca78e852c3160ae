-- lxmpp.events: a small ordered event bus. Handlers run by priority (higher
-- first, then in the order they were added); a handler that returns a value
-- other than nil stops the event there, and fire() returns that value.
-- Negotiation features, plugins and the session core hook in here.
--
-- A list of handlers is never changed in place: add and remove make a new
-- one, so fire walks the list it started with, whatever its handlers add or
-- remove meanwhile, without copying it on every event.

local compat = require "lxmpp.compat"
local setmetatable, type, error, pairs, table_insert, table_remove, table_unpack =
  setmetatable, type, error, pairs, table.insert, table.remove, compat.unpack

local Bus = {}
Bus.__index = Bus

local function new()
  return setmetatable({ lists = {}, next_id = 0 }, Bus)
end

--- bus:add(event, fn [, priority]) -> id
function Bus:add(event, fn, priority)
  if type(event) ~= "string" then error("events: event name must be a string", 2) end
  if type(fn) ~= "function" then error("events: handler must be a function", 2) end
  priority = priority or 0
  self.next_id = self.next_id + 1
  local old = self.lists[event] or {}
  local entry = { id = self.next_id, fn = fn, priority = priority }
  local pos = #old + 1
  for i = 1, #old do
    if old[i].priority < priority then
      pos = i
      break
    end
  end
  local list = { table_unpack(old) }
  table_insert(list, pos, entry)
  self.lists[event] = list
  return entry.id
end

--- bus:remove(id) -> true if it was there
function Bus:remove(id)
  for event, old in pairs(self.lists) do
    for i = 1, #old do
      if old[i].id == id then
        local list = { table_unpack(old) }
        table_remove(list, i)
        self.lists[event] = list
        return true
      end
    end
  end
  return false
end

--- bus:remove_handler(event, fn) -> true if fn was a handler of event (the
-- first such entry goes)
function Bus:remove_handler(event, fn)
  local old = self.lists[event]
  for i = 1, old and #old or 0 do
    if old[i].fn == fn then return self:remove(old[i].id) end
  end
  return false
end

--- bus:fire(event, ...) -> the first non-nil handler result
function Bus:fire(event, ...)
  local list = self.lists[event]
  if not list then return nil end
  for i = 1, #list do
    local r = list[i].fn(...)
    if r ~= nil then return r end
  end
  return nil
end

--- bus:list(event) -> the handler entries ({ fn =, priority =, id = }) in
-- order, or nil: the list itself, which is never changed in place, for
-- callers that run the handlers their own way (the session spawns a task
-- for each) or pick lists by event (child namespaces)
function Bus:list(event)
  return self.lists[event]
end

--- bus:has(event) -> true when some handler listens
function Bus:has(event)
  local list = self.lists[event]
  return list ~= nil and #list > 0
end

return { new = new }
