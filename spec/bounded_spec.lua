-- lxmpp.bounded: a map of at most max keys that forgets the oldest first.
local bounded = require "lxmpp.bounded"

describe("lxmpp.bounded", function()
  it("holds at most max keys, forgetting the oldest first", function()
    local b = bounded.new(3)
    for i = 1, 5 do b:put("k" .. i, i) end
    assert.equal(3, b:count())
    assert.is_nil(b:get("k1"))
    assert.is_nil(b:get("k2"))
    assert.same({ 3, 4, 5 }, { b:get("k3"), b:get("k4"), b:get("k5") })
    assert.equal("k3", b:oldest())
  end)

  it("keeps a key's place when it is put again, and deletes by nil", function()
    local b = bounded.new(2)
    b:put("a", 1)
    b:put("b", 2)
    b:put("a", 10)                  -- still the oldest
    b:put("c", 3)
    assert.same({ nil, 2, 3 }, { b:get("a"), b:get("b"), b:get("c") })
    b:put("b", nil)
    assert.equal(1, b:count())
    assert.equal("c", b:oldest())
  end)

  it("skips deleted keys when it forgets, and its ring does not grow with churn", function()
    local b = bounded.new(3)
    b:put("old", true)               -- never deleted: stays the oldest
    for i = 1, 10000 do
      b:put(i, true)
      b:delete(i)
    end
    assert.equal(1, b:count())
    assert.equal("old", b:oldest())
    local live = 0
    for _ in pairs(b.ring) do live = live + 1 end
    assert.equal(1, live)            -- only live keys have places
    b:put("x", 1)
    b:put("y", 2)
    b:put("z", 3)                    -- full: "old" goes, not a deleted key
    assert.is_nil(b:get("old"))
    assert.same({ 1, 2, 3 }, { b:get("x"), b:get("y"), b:get("z") })
    b:delete("y")
    b:put("w", 4)                    -- room after the delete: nothing forgotten
    assert.same({ 1, 3, 4 }, { b:get("x"), b:get("z"), b:get("w") })
  end)

  it("refuses a bad size and a nil key", function()
    assert.has_error(function() bounded.new(0) end)
    assert.has_error(function() bounded.new(1.5) end)
    assert.has_error(function() bounded.new(2):put(nil, 1) end)
  end)
end)
