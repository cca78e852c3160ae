-- lxmpp.fifo: the one first-in first-out queue of the library (ready tasks,
-- stanzas read while negotiating, a stream's output backlog, stream
-- management's unacknowledged and held back stanzas).
--
-- Items sit at integer keys first .. first + n - 1 of the queue table
-- itself: push and pop are O(1) (never table.remove(t, 1), which moves
-- every item). An item may carry a size (bytes): q.bytes is their sum, so
-- a queue can be bounded in bytes as well as in items. Reading q.n and
-- q.bytes directly is part of the interface (hot paths test them).

local setmetatable = setmetatable

local Fifo = {}
Fifo.__index = Fifo

local M = { Fifo = Fifo }

--- fifo.new() -> an empty queue.
function M.new()
  return setmetatable({ first = 1, n = 0, bytes = 0, sizes = {} }, Fifo)
end

--- q:push(item[, size]): adds item (not nil) at the end; size, a number
-- of bytes, counts in q.bytes until the item leaves.
function Fifo:push(item, size)
  local i = self.first + self.n
  self[i] = item
  self.n = self.n + 1
  if size then
    self.sizes[i] = size
    self.bytes = self.bytes + size
  end
end

--- q:push_front(item[, size]): puts item back before the oldest one (it
-- is popped next); O(1), the indexes may go below 1.
function Fifo:push_front(item, size)
  local i = self.first - 1
  self[i] = item
  self.first, self.n = i, self.n + 1
  if size then
    self.sizes[i] = size
    self.bytes = self.bytes + size
  end
end

--- q:pop() -> the oldest item and its size, removed; nil when empty.
function Fifo:pop()
  local n = self.n
  if n == 0 then return nil end
  local i = self.first
  local item, size = self[i], self.sizes[i]
  self[i] = nil
  if size then
    self.sizes[i] = nil
    self.bytes = self.bytes - size
  end
  if n == 1 then
    self.first, self.n = 1, 0         -- empty: start again at 1
  else
    self.first, self.n = i + 1, n - 1
  end
  return item, size
end

--- q:peek() -> the oldest item and its size, left in place; nil when empty.
function Fifo:peek()
  if self.n == 0 then return nil end
  local i = self.first
  return self[i], self.sizes[i]
end

--- q:at(k) -> the k-th oldest item (1 is the oldest), or nil.
function Fifo:at(k)
  if k < 1 or k > self.n then return nil end
  return self[self.first + k - 1]
end

--- q:take(k) -> a list of the k oldest items, removed (k at most q.n).
function Fifo:take(k)
  local out, first, sizes, gone = {}, self.first, self.sizes, 0
  for j = 1, k do
    local i = first + j - 1
    out[j], self[i] = self[i], nil
    local size = sizes[i]
    if size then
      sizes[i] = nil
      gone = gone + size
    end
  end
  self.bytes = self.bytes - gone
  if k == self.n then
    self.first, self.n = 1, 0
  else
    self.first, self.n = first + k, self.n - k
  end
  return out
end

--- q:list() -> a list of every item, oldest first; the queue is unchanged.
function Fifo:list()
  local out, first = {}, self.first
  for j = 1, self.n do out[j] = self[first + j - 1] end
  return out
end

--- q:clear() -> a list of every item, oldest first; the queue is empty after.
function Fifo:clear()
  local out = self:list()
  for j = self.first, self.first + self.n - 1 do self[j] = nil end
  self.first, self.n, self.bytes, self.sizes = 1, 0, 0, {}
  return out
end

return M
