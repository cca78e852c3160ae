-- A map that holds at most `max` keys and forgets the oldest first, every
-- operation in constant time (a ring of keys beside the map). For what a
-- peer can make us remember: ids of messages awaiting a receipt, verified
-- capabilities, and the like.
--
--   local b = bounded.new(1024)
--   b:put(key, value)  b:get(key)  b:delete(key)  b:count()  b:oldest()

local compat = require "lxmpp.compat"
local setmetatable, error = setmetatable, error
local math_type = compat.math_type

local Bounded = {}
Bounded.__index = Bounded

local M = {}

--- bounded.new(max) -> an empty map for at most max keys (max >= 1)
function M.new(max)
  if math_type(max) ~= "integer" or max < 1 then error("bounded.new: max must be a positive integer", 2) end
  -- map: key -> value; slot: key -> its place in the ring; ring: place -> key
  return setmetatable({ max = max, map = {}, slot = {}, ring = {}, head = 1, tail = 0, n = 0 }, Bounded)
end

function Bounded:get(key) return self.map[key] end

function Bounded:count() return self.n end

--- The oldest key still held, or nil.
function Bounded:oldest()
  return self.ring[self.head]
end

-- Moves the head past the places of deleted keys (each place is passed
-- once, so this is constant time on average).
local function trim(self)
  local ring = self.ring
  while self.head <= self.tail and ring[self.head] == nil do self.head = self.head + 1 end
end

function Bounded:delete(key)
  if key == nil or self.map[key] == nil then return end
  self.ring[self.slot[key]] = nil     -- a hole: the ring keeps only live keys
  self.map[key], self.slot[key] = nil, nil
  self.n = self.n - 1
  trim(self)
end

--- b:put(key, value): value nil deletes. Putting a key again keeps its place.
function Bounded:put(key, value)
  if key == nil then error("bounded: nil key", 2) end
  if value == nil then return self:delete(key) end
  local map = self.map
  if map[key] ~= nil then map[key] = value return end
  if self.n >= self.max then self:delete(self.ring[self.head]) end
  local tail = self.tail + 1
  self.tail = tail
  self.ring[tail], self.slot[key], map[key] = key, tail, value
  self.n = self.n + 1
end

-- next(b.map) and pairs(b.map) see the keys held (for specs and tools)

return M
