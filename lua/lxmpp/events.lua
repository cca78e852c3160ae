-- lxmpp.events: a small ordered event bus. Handlers run by priority (higher
-- first, then in the order they were added); a handler that returns a value
-- other than nil stops the event there, and fire() returns that value.
-- Negotiation features, plugins and the session core hook in here.

local setmetatable, type, error, pairs, table_insert, table_remove =
  setmetatable, type, error, pairs, table.insert, table.remove

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
  local list = self.lists[event]
  if not list then
    list = {}
    self.lists[event] = list
  end
  local entry = { id = self.next_id, fn = fn, priority = priority }
  local pos = #list + 1
  for i = 1, #list do
    if list[i].priority < priority then
      pos = i
      break
    end
  end
  table_insert(list, pos, entry)
  return entry.id
end

--- bus:remove(id) -> true if it was there
function Bus:remove(id)
  for _, list in pairs(self.lists) do
    for i = 1, #list do
      if list[i].id == id then
        table_remove(list, i)
        return true
      end
    end
  end
  return false
end

--- bus:fire(event, ...) -> the first non-nil handler result
function Bus:fire(event, ...)
  local list = self.lists[event]
  if not list then return nil end
  local n = #list
  if n == 1 then return list[1].fn(...) end
  -- a snapshot: handlers may add or remove handlers while it runs
  local snapshot = {}
  for i = 1, n do snapshot[i] = list[i].fn end
  for i = 1, n do
    local r = snapshot[i](...)
    if r ~= nil then return r end
  end
  return nil
end

--- bus:handlers(event) -> the handler functions in order (a snapshot), for
-- callers that run them their own way (the session spawns a task for each)
function Bus:handlers(event)
  local list = self.lists[event]
  local out = {}
  if list then for i = 1, #list do out[i] = list[i].fn end end
  return out
end

--- bus:has(event) -> true when some handler listens
function Bus:has(event)
  local list = self.lists[event]
  return list ~= nil and #list > 0
end

return { new = new }
