-- lxmpp.compat: the same results on Lua 5.1, LuaJIT, 5.3 and 5.4 (docs/api.md,
-- "Lua versions"). The expected values are 5.4's, so `make test-unit
-- LUA=...` checks each version's replacement against them.
local compat = require "lxmpp.compat"

local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

describe("lxmpp.compat", function()
  it("tells integers from other numbers, and converts like math.tointeger", function()
    assert.equal("integer", compat.math_type(3))
    assert.equal("integer", compat.math_type(-9007199254740992))
    assert.equal("float", compat.math_type(1.5))
    assert.equal("float", compat.math_type(1 / 0))
    assert.equal("float", compat.math_type(0 / 0))
    assert.equal("float", compat.math_type(-1 / (1 / 0)))          -- -0.0 keeps its sign in storage
    assert.equal("integer", compat.math_type(0))
    assert.is_nil(compat.math_type("3"))
    assert.equal(42, compat.tointeger(42))
    assert.is_nil(compat.tointeger(4.5))
    assert.is_nil(compat.tointeger("42"))
    assert.is_nil(compat.tointeger(nil))
  end)

  it("does floor division and bit operations on 32-bit values", function()
    assert.equal(3, compat.idiv(7, 2))
    assert.equal(-4, compat.idiv(-7, 2))
    assert.equal(0x0F, compat.band(0xFF, 0x0F))
    assert.equal(0xFF, compat.bor(0xF0, 0x0F))
    assert.equal(0xFFFFFFFF, compat.bxor(0xFFFF0000, 0x0000FFFF))   -- non-negative, even on LuaJIT
    assert.equal(0x80000000, compat.lshift(1, 31))
    assert.equal(0x00000000, compat.lshift(0x80000000, 1))         -- 32 bits kept
    assert.equal(1, compat.rshift(0x80000000, 31))
  end)

  it("checks UTF-8 strictly, as 5.4's utf8.len does", function()
    assert.equal(3, compat.utf8_len("a\195\169\226\130\172"))       -- a, é, €
    assert.equal(1, compat.utf8_len("\240\159\152\128"))            -- U+1F600
    assert.is_nil(compat.utf8_len("a\237\160\128"))                 -- surrogate U+D800 (5.3 lets it by)
    assert.is_nil(compat.utf8_len("\192\175"))                      -- overlong
    assert.is_nil(compat.utf8_len("\244\144\128\128"))              -- above U+10FFFF
    assert.is_nil(compat.utf8_len("\195"))                          -- cut short
    assert.equal("a\195\169\240\159\152\128", compat.utf8_char(97, 0xE9, 0x1F600))
    assert.equal(2, compat.utf8_offset("a\195\169b", 2))
    assert.equal(4, compat.utf8_offset("a\195\169b", 3))
  end)

  it("packs the storage codec's formats byte for byte as string.pack", function()
    local cases = {
      { "<c1I4", { "t", 70000 }, "74701101 00" },
      { "<c1s4", { "s", "hi" }, "73020000 006869" },
      { "<c1i8", { "i", -2 }, "69feffff ffffffff ff" },
      { "<c1i8", { "i", 9007199254740992 }, "69000000 00000020 00" },
      { "<c1d", { "d", 1.5 }, "64000000 000000f8 3f" },
      { "<c1d", { "d", -2.5e-8 }, "6448afbc 9af2d75a be" },
      { "<c1d", { "d", 5e-324 }, "64010000 00000000 00" },
      { "<c1d", { "d", 1 / 0 }, "64000000 000000f0 7f" },
    }
    for _, c in ipairs(cases) do
      local packed = compat.string_pack(c[1], compat.unpack(c[2]))
      assert.equal((c[3]:gsub(" ", "")), hex(packed), c[1])
      local a, b, nextpos = compat.string_unpack(c[1], packed)
      assert.same({ c[2][1], c[2][2], #packed + 1 }, { a, b, nextpos }, c[1])
    end
  end)

  it("loads chunks with an environment", function()
    local env = { x = 2 }
    local f = assert(compat.load("y = x * 21", "=chunk", "t", env))
    f()
    assert.equal(42, env.y)
    assert.is_nil(rawget(_G, "y"))
  end)

  it("lets a coroutine yield inside compat.pcall and compat.xpcall, and stay itself there", function()
    local co
    co = coroutine.create(function(a)
      local ok, v = compat.pcall(function(x)
        assert.equal(co, compat.co_running())
        return coroutine.yield(x + 1) * 2
      end, a)
      local ok2, err = compat.xpcall(function(x)
        coroutine.yield(x)
        error("boom")
      end, debug.traceback, 7)
      return ok, v, ok2, err
    end)
    assert.same({ true, 2 }, { coroutine.resume(co, 1) })
    assert.same({ true, 7 }, { coroutine.resume(co, 10) })
    local ok, pok, v, xok, err = coroutine.resume(co)
    assert.is_true(ok)
    assert.same({ true, 20, false }, { pok, v, xok })
    assert.matches("boom", err)
    assert.matches("traceback", err)
    assert.same({ false, "x" }, { compat.pcall(error, "x", 0) })
    assert.same({ true, 3 }, { compat.xpcall(function(a, b) return a + b end, debug.traceback, 1, 2) })
  end)
end)
