-- Stanza ids (session.new_id), a BOSH session's first rid (XEP-0124
-- §14.1, "Unpredictable SID and RID") and the SRV weighted choice come from OpenSSL's generator, not
-- from math.random: Lua 5.1 and LuaJIT start math.random unseeded, so two
-- processes drew the same ids and rids, and the host's own sequence (a
-- game seeds it for replays) is not lxmpp's to move.
local session = require "lxmpp.session"
local bosh = require "lxmpp.bosh"
local proc = require "spec.support.proc"

describe("random ids", function()
  it("leave the host's math.random sequence alone", function()
    math.randomseed(42)
    local want = { math.random(), math.random(1000) }
    math.randomseed(42)
    for _ = 1, 300 do session.new_id() end
    assert(bosh.connect("https://example.test/http-bind"))
    -- nor do the reconnection's jitter (a client that loses its link and
    -- retries) and the weighted choice among SRV records (RFC 2782)
    require("spec.support.smserver").run(function()
      local srv = require("spec.support.smserver").start({})
      local c = assert(require("lxmpp").connect(srv:client_opts({})))
      local again = false
      c:on("reconnected", function() again = true end)
      srv:kill()
      assert.is_true(require("spec.support.smserver").wait_for(function() return again end, 5))
      c:close()
      srv:close()
    end)
    local order = require("lxmpp.resolve").order({ { host = "a", port = 1, priority = 0, weight = 5 },
      { host = "b", port = 1, priority = 0, weight = 7 }, { host = "c", port = 1, priority = 0, weight = 0 } })
    assert.equal(3, #order)
    assert.same(want, { math.random(), math.random(1000) })
  end)

  it("differ between processes of the same Lua, as does a BOSH session's first rid", function()
    local code = [[
      local session = require "lxmpp.session"
      local t = assert(require("lxmpp.bosh").connect("https://example.test/http-bind"))
      io.write(session.new_id(), " ", session.new_id(), " ", string.format("%.0f", t.rid), "\n")
    ]]
    local function run()
      local r
      require("lxmpp").run(function() r = proc.lua({ "-e", code }):wait(10) end)
      local a, b, rid = r.out:match("^(%S+) (%S+) (%d+)\n$")
      assert(a, "unexpected output: " .. r.out .. r.err)
      return a, b, tonumber(rid)
    end
    local a1, b1, rid1 = run()
    local a2, b2, rid2 = run()
    assert.are_not.equal(a1, a2)
    assert.are_not.equal(b1, b2)
    assert.are_not.equal(a1, b1)
    assert.are_not.equal(rid1, rid2)
    for _, rid in ipairs({ rid1, rid2 }) do
      assert.is_true(rid >= 2 ^ 20 and rid < 2 ^ 40, "rid out of range: " .. rid)
    end
  end)
end)
