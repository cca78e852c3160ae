-- lxmpp.fifo: order, sizes counted in q.bytes, O(1) pops that leave no
-- holes behind, and the copies (list, take, clear).
local compat = require "lxmpp.compat"
local fifo = require "lxmpp.fifo"

describe("fifo", function()
  it("gives items back in the order they came, nil when empty", function()
    local q = fifo.new()
    assert.is_nil(q:pop())
    assert.is_nil(q:peek())
    for i = 1, 5 do q:push("i" .. i) end
    assert.equal(5, q.n)
    assert.equal("i1", q:peek())
    assert.equal(5, q.n)
    for i = 1, 5 do assert.equal("i" .. i, q:pop()) end
    assert.equal(0, q.n)
    assert.is_nil(q:pop())
  end)

  it("counts sizes in q.bytes and returns each item's size", function()
    local q = fifo.new()
    q:push("abc", 3)
    q:push("de", 2)
    q:push("x")                       -- no size: counts nothing
    assert.equal(5, q.bytes)
    local item, size = q:pop()
    assert.same({ "abc", 3 }, { item, size })
    assert.equal(2, q.bytes)
    item, size = q:peek()
    assert.same({ "de", 2 }, { item, size })
    q:pop()
    item, size = q:pop()
    assert.same({ "x" }, { item, size })
    assert.equal(0, q.bytes)
  end)

  it("keeps no popped item and starts again at 1 once empty", function()
    local q = fifo.new()
    for round = 1, 3 do
      for i = 1, 1000 do q:push(i, 1) end
      for _ = 1, 999 do q:pop() end
      assert.equal(1, q.n)
      assert.equal(1000, q:peek())
      local slots = 0
      for k in pairs(q) do if compat.math_type(k) == "integer" then slots = slots + 1 end end
      assert.equal(1, slots, "round " .. round)
      q:pop()
      assert.equal(1, q.first)
      assert.same({}, q.sizes)
    end
  end)

  it("interleaves pushes and pops (a ring in steady state)", function()
    local q, want = fifo.new(), 1
    for i = 1, 10000 do
      q:push(i)
      if i % 3 ~= 0 then
        assert.equal(want, q:pop())
        want = want + 1
      end
    end
    assert.equal(10000 - want + 1, q.n)
    assert.equal(want, q:at(1))
    assert.equal(10000, q:at(q.n))
    assert.is_nil(q:at(0))
    assert.is_nil(q:at(q.n + 1))
  end)

  it("push_front puts items back before the oldest, even below index 1", function()
    local q = fifo.new()
    q:push("c", 1)
    q:push_front("b", 2)
    q:push_front("a", 4)
    assert.same({ "a", "b", "c" }, q:list())
    assert.equal(7, q.bytes)
    assert.same({ "a", 4 }, { q:pop() })
    q:push_front("a2")
    assert.same({ "a2", "b", "c" }, q:clear())
    assert.same({ 0, 0 }, { q.n, q.bytes })
  end)

  it("take removes the oldest k, list copies, clear empties", function()
    local q = fifo.new()
    for i = 1, 6 do q:push(i, 10) end
    assert.same({ 1, 2 }, q:take(2))
    assert.same({}, q:take(0))
    assert.equal(4, q.n)
    assert.equal(40, q.bytes)
    assert.same({ 3, 4, 5, 6 }, q:list())
    assert.equal(4, q.n)
    assert.same({ 3, 4, 5, 6 }, q:clear())
    assert.same({ 0, 0, 1 }, { q.n, q.bytes, q.first })
    assert.is_nil(q:pop())
    q:push("again", 5)
    assert.same({ "again" }, q:list())
    assert.equal(5, q.bytes)
  end)
end)
