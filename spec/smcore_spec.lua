-- lxmpp.smcore, the XEP-0198 counting core of client and server: strict
-- h parsing, 32-bit wraparound, acknowledging part of the queue (the items
-- given back), handled-count-too-high, and byte accounting.
local smcore = require "lxmpp.smcore"

local MOD = 4294967296

describe("smcore", function()
  describe("parse_h", function()
    for s, want in pairs({ ["0"] = 0, ["7"] = 7, ["4294967295"] = 4294967295, ["0000000001"] = 1 }) do
      it("reads " .. s, function() assert.equal(want, smcore.parse_h(s)) end)
    end
    for _, s in ipairs({ "", "-1", "+1", " 1", "1 ", "1e3", "0x10", "1.0", "abc", "4294967296",
      "99999999999", "00000000001", "１" }) do
      it("refuses '" .. s .. "'", function() assert.is_nil(smcore.parse_h(s)) end)
    end
    it("refuses what is not a string", function()
      assert.is_nil(smcore.parse_h(nil))
      assert.is_nil(smcore.parse_h(5))
    end)
  end)

  it("counts handled stanzas and wraps at 2^32", function()
    local t = smcore.init({}, MOD - 1)
    smcore.handled(t)
    assert.equal(0, t.handled)
    smcore.handled(t)
    assert.equal(1, t.handled)
    assert.equal(5, smcore.init({}, MOD + 5, 2 * MOD + 3).handled)
  end)

  it("an ack of part of the queue gives back the acknowledged items, oldest first", function()
    local t = smcore.init({})
    for i = 1, 5 do smcore.sent(t, "s" .. i) end
    assert.same({ "s1", "s2", "s3" }, smcore.ack(t, "3"))
    assert.equal(3, t.acked)
    assert.same({ "s4", "s5" }, t.q:list())
    assert.same({}, smcore.ack(t, "3"))              -- the same h again: nothing new
    assert.same({ "s4", "s5" }, smcore.ack(t, "5"))
    assert.equal(0, t.q.n)
    assert.equal(5, smcore.sent_count(t))
  end)

  it("acknowledges across the 2^32 wrap", function()
    local t = smcore.init({}, 0, MOD - 2)
    for i = 1, 4 do smcore.sent(t, i) end
    assert.equal(2, smcore.sent_count(t))            -- 2^32 - 2 + 4, wrapped
    assert.same({ 1, 2, 3 }, smcore.ack(t, "1"))
    assert.equal(1, t.acked)
    assert.same({ 4 }, t.q:list())
    -- an h "behind" acked is, modulo 2^32, far more than was sent
    local ok, cond = smcore.ack(t, tostring(MOD - 1))
    assert.is_nil(ok)
    assert.equal("undefined-condition", cond)
  end)

  it("an h above what was sent is handled-count-too-high, and changes nothing", function()
    local t = smcore.init({}, 0, 10)
    smcore.sent(t, "a", 1)
    smcore.sent(t, "b", 1)
    local ok, cond, text, extra = smcore.ack(t, "13")
    assert.is_nil(ok)
    assert.equal("undefined-condition", cond)
    assert.equal("the peer acknowledged 13 stanzas, 12 were sent", text)
    assert.equal("<handled-count-too-high xmlns='urn:xmpp:sm:3' h='13' send-count='12'/>", extra)
    assert.same({ 10, 2, 2 }, { t.acked, t.q.n, t.q.bytes })
    assert.is_nil(smcore.covers(t, 13))
    assert.equal(2, smcore.covers(t, 12))
  end)

  it("a garbage h is bad-format, and changes nothing", function()
    local t = smcore.init({})
    smcore.sent(t, "a")
    for _, h in ipairs({ "x", "-1", "1e0", "4294967296", "" }) do
      local ok, cond, text = smcore.ack(t, h)
      assert.is_nil(ok)
      assert.equal("bad-format", cond)
      assert.equal("h must be a 32-bit count in digits", text)
    end
    local ok, cond = smcore.ack(t, nil)
    assert.same({ nil, "bad-format" }, { ok, cond })
    assert.same({ 0, 1 }, { t.acked, t.q.n })
  end)

  it("counts the bytes of what waits for an ack, and frees them on ack", function()
    local t = smcore.init({})
    smcore.sent(t, "m1", 100)
    smcore.sent(t, "m2", 250)
    smcore.sent(t, "m3", 50)
    assert.equal(400, t.q.bytes)
    smcore.ack(t, "2")
    assert.equal(50, t.q.bytes)
    smcore.ack(t, "3")
    assert.equal(0, t.q.bytes)
  end)
end)
