-- Name resolution (csrc/dns.c, lua/lxmpp/resolve.lua): SRV lookups with
-- RFC 2782 ordering, XEP-0368 direct TLS records, the RFC 6120 fallback, A and
-- AAAA, timeouts and closing, all against spec/support/dnsd.py on loopback.
local sh = require "spec.support.sh"
local LUA = require "spec.support.lua_bin"
local compat = require "lxmpp.compat"
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local resolve = require "lxmpp.resolve"
local task = lxmpp.task


-- uservalue n of a userdata of the core: 5.4's own; one table of them
-- before 5.4 (csrc/luacompat.h), the uservalue on 5.3, the environment on 5.1
local function uservalue(u, n)
  if _VERSION >= "Lua 5.4" then return debug.getuservalue(u, n) end
  local getuv = rawget(debug, "getuservalue") or rawget(debug, "getfenv")
  return getuv(u)[n]
end

local function srv(...) return { SRV = { ... } } end

local ZONE = {
  ["_xmpp-client._tcp.prio.test"] = srv({ 20, 10, 5222, "b.prio.test" }, { 10, 10, 5223, "a.prio.test" },
                                        { 30, 10, 5224, "c.prio.test" }),
  ["_xmpp-client._tcp.weights.test"] = srv({ 10, 80, 5222, "heavy.weights.test" },
                                           { 10, 20, 5222, "light.weights.test" }),
  ["_xmpp-client._tcp.dot.test"] = srv({ 0, 0, 0, "." }),
  ["_xmpps-client._tcp.nodirect.test"] = srv({ 0, 0, 0, "." }),
  ["_xmpp-client._tcp.nodirect.test"] = srv({ 5, 0, 5222, "xmpp.nodirect.test" }),
  ["_xmpps-client._tcp.dotonly.test"] = srv({ 0, 0, 0, "." }),
  ["nodata.test"] = { A = { "127.0.0.9" } },
  ["_xmpps-client._tcp.mixed.test"] = srv({ 5, 0, 443, "tls.mixed.test" }, { 20, 0, 5223, "tls2.mixed.test" }),
  ["_xmpp-client._tcp.mixed.test"] = srv({ 10, 0, 5222, "plain.mixed.test" }),
  ["_xmpps-client._tcp.tie.test"] = srv({ 10, 50, 5223, "d.tie.test" }),
  ["_xmpp-client._tcp.tie.test"] = srv({ 10, 50, 5222, "s.tie.test" }),
  ["_xmpps-client._tcp.directonly.test"] = srv({ 1, 0, 5223, "tls.directonly.test" }),
  ["_xmpp-client._tcp.servfail.test"] = "SERVFAIL",
  ["_xmpps-client._tcp.servfail.test"] = srv({ 1, 0, 5223, "tls.servfail.test" }),
  ["_xmpp-client._tcp.allfail.test"] = "SERVFAIL",
  ["_xmpps-client._tcp.allfail.test"] = "SERVFAIL",
  ["_xmpp-client._tcp.slow.test"] = "DROP",
  ["slow.test"] = "DROP",
  ["_xmpp-client._tcp.xn--xample-ova.test"] = srv({ 0, 0, 5222, "xmpp.xn--xample-ova.test" }),
  ["xmpp1.example.test"] = { A = { "127.0.0.1" }, AAAA = { "::1" } },
  ["v4only.example.test"] = { A = { "127.0.0.2", "127.0.0.3" } },
}
do -- 40 records: far over 512 bytes, so the answer comes over TCP
  local big = {}
  for i = 1, 40 do big[i] = { i, 0, 5000 + i, ("host%02d.a-rather-long-name.big.test"):format(i) } end
  ZONE["_xmpp-client._tcp.big.test"] = { SRV = big }
end

local dnsd_support = require "spec.support.dnsd"
local function start_dnsd(extra) return dnsd_support.start(ZONE, extra) end
local stop_dnsd = dnsd_support.stop

-- Queries the server has received so far.
local function queries(d)
  local n = 0
  for _ in io.lines(d.log) do n = n + 1 end
  return n
end

local assert_clean = require "spec.support.clean"

-- Handles open when run's task started (lxmpp.run's own signal watchers).
local base_handles = 0

-- Runs fn as a task and returns what it returned.
local function run(fn)
  local r
  lxmpp.run(function()
    base_handles = core.loop_handles()
    r = compat.pack(fn())
  end)
  return compat.unpack(r, 1, r.n)
end

-- Handles the resolvers hold now (inside run).
local function dns_handles() return core.loop_handles() - base_handles end

local function hosts(list)
  local out = {}
  for i, t in ipairs(list) do out[i] = ("%s:%d/%s"):format(t.host, t.port, t.tls) end
  return out
end

local function sorted(list)
  local c = { compat.unpack(list) }
  table.sort(c)
  return c
end

-- random(lo, hi) giving the listed values in turn, checking the bounds
local function sequence(...)
  local vals, i = { ... }, 0
  return function(lo, hi)
    i = i + 1
    local v = assert(vals[i], "random called more often than expected")
    assert(v >= lo and v <= hi, "value out of the requested range")
    return v
  end
end

-- a small deterministic generator with math.random's interface
local function lcg(seed)
  local s = seed
  return function(lo, hi)
    s = (s * 1103515245 + 12345) % 2147483648
    return lo + compat.rshift(s, 8) % (hi - lo + 1)
  end
end

local dnsd, silent

lazy_setup(function()
  dnsd = start_dnsd()
  silent = start_dnsd("--silent")
  resolve.configure{ servers = dnsd.addr, timeout = 1, tries = 2 }
end)

lazy_teardown(function()
  resolve.set_servers(nil)
  stop_dnsd(dnsd)
  stop_dnsd(silent)
end)

describe("core.resolver", function()
  after_each(assert_clean)

  local function ask(r, method, name)
    local w = task.waiter("ask")
    assert.is_true(r[method](r, name, w))
    return w:wait()
  end

  it("answers SRV queries with target, port, priority and weight", function()
    local recs = run(function()
      return ask(core.resolver{ servers = dnsd.addr }, "srv", "_xmpp-client._tcp.prio.test")
    end)
    table.sort(recs, function(a, b) return a.priority < b.priority end)
    assert.same({
      { target = "a.prio.test", port = 5223, priority = 10, weight = 10 },
      { target = "b.prio.test", port = 5222, priority = 20, weight = 10 },
      { target = "c.prio.test", port = 5224, priority = 30, weight = 10 },
    }, recs)
  end)

  it("answers A and AAAA in one query", function()
    local ips = run(function() return ask(core.resolver{ servers = dnsd.addr }, "addr", "xmpp1.example.test") end)
    assert.same({ "127.0.0.1", "::1" }, sorted(ips))
  end)

  it("shows the root target as \".\"", function()
    local recs = run(function()
      return ask(core.resolver{ servers = dnsd.addr }, "srv", "_xmpp-client._tcp.dot.test")
    end)
    assert.same({ { target = ".", port = 0, priority = 0, weight = 0 } }, recs)
  end)

  it("reports NXDOMAIN and no data as remote-server-not-found", function()
    run(function()
      local r = core.resolver{ servers = dnsd.addr }
      local recs, msg, cond = ask(r, "srv", "_xmpp-client._tcp.missing.test")
      assert.is_nil(recs)
      assert.matches("_xmpp%-client%._tcp%.missing%.test", msg)
      assert.equal("remote-server-not-found", cond)
      recs, msg, cond = ask(r, "srv", "nodata.test")        -- the name exists, without SRV
      assert.is_nil(recs)
      assert.is_string(msg)
      assert.equal("remote-server-not-found", cond)
      recs, msg, cond = ask(r, "addr", "missing.test")
      assert.is_nil(recs)
      assert.matches("missing%.test", msg)
      assert.equal("remote-server-not-found", cond)
    end)
  end)

  it("reports a server failure as undefined-condition", function()
    local recs, msg, cond = run(function()
      local r = core.resolver{ servers = dnsd.addr, tries = 1 }
      return ask(r, "srv", "_xmpp-client._tcp.servfail.test")
    end)
    assert.is_nil(recs)
    assert.is_string(msg)
    assert.equal("undefined-condition", cond)
  end)

  it("takes answers too long for UDP over TCP", function()
    local before = queries(dnsd)
    local recs = run(function()
      return ask(core.resolver{ servers = dnsd.addr }, "srv", "_xmpp-client._tcp.big.test")
    end)
    assert.equal(40, #recs)
    table.sort(recs, function(a, b) return a.priority < b.priority end)
    assert.same({ target = "host40.a-rather-long-name.big.test", port = 5040, priority = 40, weight = 0 }, recs[40])
    assert.equal(before + 2, queries(dnsd))                   -- once truncated, once over TCP
  end)

  it("times out quickly against a server that never answers", function()
    run(function()
      local r = core.resolver{ servers = silent.addr, timeout = 0.2, tries = 1 }
      local t0 = core.now()
      local recs, msg, cond = ask(r, "srv", "_xmpp-client._tcp.prio.test")
      assert.is_nil(recs)
      assert.matches("prio%.test", msg)
      assert.equal("timeout", cond)
      local ips, _, acond = ask(r, "addr", "xmpp1.example.test")
      assert.is_nil(ips)
      assert.equal("timeout", acond)
      assert.is_true(core.now() - t0 < 2, "took " .. (core.now() - t0) .. " s")
    end)
  end)

  it("completes queries outstanding at close with an error, and close is safe twice", function()
    run(function()
      local r = core.resolver{ servers = silent.addr, timeout = 5 }
      local w1, w2 = task.waiter("a"), task.waiter("b")
      assert.is_true(r:srv("_xmpp-client._tcp.prio.test", w1))
      assert.is_true(r:addr("xmpp1.example.test", w2))
      assert.is_true(dns_handles() > 0)                -- its timer and socket
      r:close()
      r:close()
      local t0 = core.now()
      local a, amsg, acond = w1:wait()
      local b, bmsg, bcond = w2:wait()
      assert.is_true(core.now() - t0 < 1)
      assert.is_nil(a)
      assert.matches("resolver closed", amsg)
      assert.equal("closed", acond)
      assert.is_nil(b)
      assert.matches("resolver closed", bmsg)
      assert.equal("closed", bcond)
      local ok, msg, cond = r:srv("x.test", {})
      assert.is_nil(ok)
      assert.equal("resolver is closed", msg)
      assert.equal("closed", cond)
      assert.equal("lxmpp.resolver (closed)", tostring(r))
    end)
  end)

  it("copes with a result handler that closes the resolver and asks again", function()
    local got = {}
    run(function()
      local r = core.resolver{ servers = dnsd.addr }
      local w = task.waiter("last")
      local first = {
        wake = function(_, recs)
          got[#got + 1] = recs and #recs
          r:close()                                          -- from inside the dispatch
          got[#got + 1] = select(3, r:srv("_xmpp-client._tcp.prio.test", w))
        end,
      }
      local pending = { wake = function(_, recs, msg) got[#got + 1] = recs or msg end }
      assert.is_true(r:srv("_xmpp-client._tcp.prio.test", first))
      assert.is_true(r:srv("_xmpp-client._tcp.slow.test", pending))
      lxmpp.sleep(0.5)
      w:wake("done")
      assert.equal("done", w:wait())
    end)
    assert.same({ 3, "closed", "_xmpp-client._tcp.slow.test: resolver closed" }, got)
  end)

  it("holds no handle when idle, and an unreferenced resolver is collected", function()
    local weak = setmetatable({}, { __mode = "v" })
    run(function()
      local r = core.resolver{ servers = dnsd.addr }
      weak[1] = r
      local w = task.waiter("w")
      r:srv("_xmpp-client._tcp.prio.test", w)
      r = nil -- luacheck: ignore 311
      collectgarbage()
      assert.is_not_nil(weak[1], "collected with a query outstanding")
      assert.equal(3, #w:wait())
      assert.equal(0, dns_handles())
    end)
    collectgarbage()
    collectgarbage()
    assert.is_nil(weak[1])
  end)

  it("drops, without leaking, results it cannot deliver after a handler raised", function()
    local r = core.resolver{ servers = silent.addr, timeout = 5 }
    local called = {}
    local function raiser(name)
      return { wake = function() called[#called + 1] = name error("boom") end }
    end
    local ok, err = pcall(lxmpp.run, function()
      r:srv("_xmpp-client._tcp.prio.test", raiser("first"))
      r:addr("xmpp1.example.test", raiser("second"))
      r:close()                      -- both finish now and are dispatched together
      lxmpp.sleep(5)
    end)
    task.cancel_all()                -- run left its main task sleeping
    assert.is_false(ok)
    assert.matches("boom", err)
    assert.equal(1, #called)         -- the loop stopped at the first error
    local targets = uservalue(r, 1)
    assert.is_nil(next(targets), "a target is still held")
  end)

  it("releases everything when the state closes with queries outstanding", function()
    local script = ([[
      local lxmpp = require "lxmpp"
      local core = require "lxmpp.core"
      local resolve = require "lxmpp.resolve"
      resolve.set_servers("%s")
      local r = core.resolver{ servers = "%s", timeout = 5 }
      lxmpp.spawn(function() resolve.targets("prio.test") end)
      lxmpp.spawn(function()
        r:addr("xmpp1.example.test", lxmpp.task.waiter("w"))
        lxmpp.task.waiter("forever"):wait()
      end)
      lxmpp.step(0)
      io.write(core.loop_handles(), " handles")
    ]]):format(silent.addr, silent.addr)
    local out, code = sh.popen_read((LUA .. " -e '%s' 2>&1"):format(script))
    assert.equal("4 handles", out)   -- per resolver: its timer and its socket
    assert.equal(0, code)
  end)

  it("tells numeric addresses apart", function()
    assert.equal(4, core.ip_family("192.0.2.1"))
    assert.equal(6, core.ip_family("2001:db8::1"))
    assert.equal(6, core.ip_family("::1"))
    assert.is_nil(core.ip_family("example.test"))
    assert.is_nil(core.ip_family("256.1.1.1"))
    assert.is_nil(core.ip_family("[::1]"))
  end)

  it("raises on misuse", function()
    assert.has_error(function() core.resolver{ servers = 5 } end)
    assert.has_error(function() core.resolver{ servers = "not a server list" } end)
    assert.has_error(function() core.resolver{ timeout = -1 } end)
    assert.has_error(function() core.resolver{ tries = 0 } end)
    local r = core.resolver()
    assert.has_error(function() r:srv("a.test") end)          -- no target
    assert.has_error(function() r:addr("a\0b", {}) end)
    r:close()
  end)
end)

describe("resolve.order", function()
  local function recs(...)
    local out = {}
    for i, t in ipairs{ ... } do
      out[i] = { target = t[1], priority = t[2], weight = t[3], port = 5222, tls = "starttls" }
    end
    return out
  end

  it("follows the weights: 80/20 is chosen first about 80% of the time", function()
    local rnd, n, heavy = lcg(7), 10000, 0
    local list = recs({ "heavy", 10, 80 }, { "light", 10, 20 })
    for _ = 1, n do
      if resolve.order(list, rnd)[1].host == "heavy" then heavy = heavy + 1 end
    end
    -- exact: n in [0, 100] uniform, heavy when n <= 80: 81/101
    assert.is_true(heavy / n > 0.77 and heavy / n < 0.83, "ratio " .. heavy / n)
  end)

  it("gives weight 0 a small chance beside weighted records", function()
    local rnd, n, zero = lcg(11), 11000, 0
    local list = recs({ "zero", 1, 0 }, { "ten", 1, 10 })
    for _ = 1, n do
      local out = resolve.order(list, rnd)
      assert.equal(2, #out)
      if out[1].host == "zero" then zero = zero + 1 end
    end
    -- exact: 1/11
    assert.is_true(zero / n > 0.06 and zero / n < 0.12, "ratio " .. zero / n)
  end)

  it("picks evenly among weight 0 records, and never reorders priorities", function()
    local rnd, firsts = lcg(3), {}
    local list = recs({ "p2", 2, 100 }, { "x", 1, 0 }, { "y", 1, 0 }, { "z", 1, 0 })
    for _ = 1, 3000 do
      local out = resolve.order(list, rnd)
      assert.equal("p2", out[4].host)
      firsts[out[1].host] = (firsts[out[1].host] or 0) + 1
    end
    for _, h in ipairs{ "x", "y", "z" } do
      assert.is_true(firsts[h] > 800 and firsts[h] < 1200, h .. " " .. tostring(firsts[h]))
    end
  end)

  it("is deterministic with an injected random sequence", function()
    local list = recs({ "a", 1, 10 }, { "b", 1, 20 }, { "c", 1, 30 })
    local function names(o) return { o[1].host, o[2].host, o[3].host } end
    -- running sums a:10 b:30 c:60: 25 picks b; then a:10 c:40: 40 picks c; a is left
    assert.same({ "b", "c", "a" }, names(resolve.order(list, sequence(25, 40))))
    -- 0 picks the first (a); then b:20 c:50: 1 picks b
    assert.same({ "a", "b", "c" }, names(resolve.order(list, sequence(0, 1))))
  end)
end)

describe("resolve.targets", function()
  after_each(assert_clean)

  it("orders SRV records by priority", function()
    local list = run(function() return resolve.targets("prio.test") end)
    assert.same({ "a.prio.test:5223/starttls", "b.prio.test:5222/starttls", "c.prio.test:5224/starttls" },
      hosts(list))
  end)

  it("chooses within a priority by weight, with the random function given", function()
    run(function()
      local first = resolve.targets("weights.test", { random = sequence(90) })
      assert.same({ "light.weights.test:5222/starttls", "heavy.weights.test:5222/starttls" }, hosts(first))
      local second = resolve.targets("weights.test", { random = sequence(50) })
      assert.same({ "heavy.weights.test:5222/starttls", "light.weights.test:5222/starttls" }, hosts(second))
    end)
  end)

  it("mixes xmpps-client (direct TLS) and xmpp-client records by priority", function()
    local list = run(function() return resolve.targets("mixed.test") end)
    assert.same({ "tls.mixed.test:443/direct", "plain.mixed.test:5222/starttls", "tls2.mixed.test:5223/direct" },
      hosts(list))
  end)

  it("mixes both services by weight at equal priority (XEP-0368)", function()
    run(function()
      assert.same({ "d.tie.test:5223/direct", "s.tie.test:5222/starttls" },
        hosts(resolve.targets("tie.test", { random = sequence(30) })))
      assert.same({ "s.tie.test:5222/starttls", "d.tie.test:5223/direct" },
        hosts(resolve.targets("tie.test", { random = sequence(70) })))
    end)
  end)

  it("filters by opts.tls", function()
    run(function()
      assert.same({ "plain.mixed.test:5222/starttls" }, hosts(resolve.targets("mixed.test", { tls = "starttls" })))
      assert.same({ "plain.mixed.test:5222/starttls" }, hosts(resolve.targets("mixed.test", { tls = "none" })))
      assert.same({ "tls.mixed.test:443/direct", "tls2.mixed.test:5223/direct" },
        hosts(resolve.targets("mixed.test", { tls = "direct" })))
      assert.same({ "tls.directonly.test:5223/direct" }, hosts(resolve.targets("directonly.test", { tls = "any" })))
      -- only direct TLS wanted, and the domain has none: no fallback to 5222
      local list, msg, cond = resolve.targets("prio.test", { tls = "direct" })
      assert.is_nil(list)
      assert.matches("xmpps%-client service not available", msg)
      assert.equal("remote-server-not-found", cond)
    end)
  end)

  it("treats a lone \".\" target as no service, without fallback", function()
    run(function()
      for _, mode in ipairs{ "any", "starttls" } do
        local list, msg, cond = resolve.targets("dot.test", { tls = mode })
        assert.is_nil(list)
        assert.matches("xmpp%-client service not available for dot%.test", msg)
        assert.equal("remote-server-not-found", cond)
      end
      -- "." for direct TLS only: the STARTTLS records still count
      assert.same({ "xmpp.nodirect.test:5222/starttls" }, hosts(resolve.targets("nodirect.test")))
      local list, msg, cond = resolve.targets("nodirect.test", { tls = "direct" })
      assert.is_nil(list)
      assert.matches("xmpps%-client service not available", msg)
      assert.equal("remote-server-not-found", cond)
      -- "." for direct TLS and no xmpp-client records: XEP-0368 forbids the A/AAAA fallback
      list, msg, cond = resolve.targets("dotonly.test")
      assert.is_nil(list)
      assert.matches("service not available for dotonly%.test", msg)
      assert.equal("remote-server-not-found", cond)
    end)
  end)

  it("falls back to the domain on 5222 without SRV records", function()
    run(function()
      assert.same({ { host = "missing.test", port = 5222, tls = "starttls" } }, resolve.targets("missing.test"))
      assert.same({ { host = "nodata.test", port = 5222, tls = "starttls" } }, resolve.targets("nodata.test."))
      -- a failing xmpp-client lookup: the xmpps-client records still serve...
      assert.same({ "tls.servfail.test:5223/direct" }, hosts(resolve.targets("servfail.test")))
      -- ...and with nothing else, the fallback
      assert.same({ "allfail.test:5222/starttls" }, hosts(resolve.targets("allfail.test")))
    end)
  end)

  it("with service = \"server\", asks _xmpp-server._tcp and falls back to 5269 (RFC 6120 §3.2, s2s)", function()
    run(function()
      assert.same({ { host = "missing.test", port = 5269, tls = "starttls" } },
        resolve.targets("missing.test", { service = "server", tls = "starttls" }))
      assert.same({ "s.example.test:5270/direct" },
        hosts(resolve.targets("example.test", { service = "server", host = "s.example.test", tls = "direct" })))
    end)
    local f = assert(io.open(dnsd.log))
    local log = f:read("*a")
    f:close()
    assert.truthy(log:find("_xmpp-server._tcp.missing.test", 1, true))
    assert.has_error(function() run(function() resolve.targets("example.test", { service = "peer" }) end) end)
  end)

  it("reports a timeout rather than fall back on it", function()
    local fast = core.resolver{ servers = dnsd.addr, timeout = 0.2, tries = 1 }
    local list, msg, cond = run(function() return resolve.targets("slow.test", { resolver = fast }) end)
    assert.is_nil(list)
    assert.matches("slow%.test", msg)
    assert.equal("timeout", cond)
    fast:close()
  end)

  it("skips DNS for an explicit host or port, an IP address and localhost", function()
    local before = queries(dnsd)
    run(function()
      assert.same({ "xmpp.example.test:5299/starttls" },
        hosts(resolve.targets("example.test", { host = "xmpp.example.test", port = 5299 })))
      assert.same({ "example.test:5222/starttls" }, hosts(resolve.targets("example.test", { host = "example.test" })))
      assert.same({ "example.test:5223/direct" },
        hosts(resolve.targets("example.test", { port = 5223, tls = "direct" })))
      assert.same({ "192.0.2.1:5222/starttls" }, hosts(resolve.targets("192.0.2.1")))
      assert.same({ "localhost:5222/starttls" }, hosts(resolve.targets("localhost")))
      assert.equal(0, dns_handles())
    end)
    assert.equal(before, queries(dnsd))
  end)

  it("looks up internationalized domains in their ASCII form", function()
    local list = run(function() return resolve.targets("ëxample.test", { tls = "starttls" }) end)
    assert.same({ "xmpp.xn--xample-ova.test:5222/starttls" }, hosts(list))
  end)

  it("serves many concurrent lookups from one resolver", function()
    local results = {}
    lxmpp.run(function()
      for i = 1, 20 do
        lxmpp.spawn(function() results[i] = hosts(resolve.targets(i % 2 == 0 and "prio.test" or "mixed.test")) end)
      end
    end)
    assert.equal(20, #results)
    for i = 1, 20 do
      assert.equal(i % 2 == 0 and "a.prio.test:5223/starttls" or "tls.mixed.test:443/direct", results[i][1])
    end
  end)

  it("ends a waiting lookup with an error when the servers change", function()
    local list, msg, cond = run(function()
      lxmpp.spawn(function()
        lxmpp.sleep(0.05)
        resolve.set_servers(dnsd.addr)            -- a new default resolver
      end)
      return resolve.targets("slow.test")
    end)
    assert.is_nil(list)
    assert.matches("resolver closed", msg)
    assert.equal("closed", cond)
  end)

  it("honours LXMPP_DNS_SERVERS", function()
    local script = 'local lxmpp = require "lxmpp"; local resolve = require "lxmpp.resolve"; ' ..
      'lxmpp.run(function() local t = assert(resolve.targets("prio.test")); io.write(t[1].host, ":", t[1].port) end)'
    local p = assert(io.popen(("LXMPP_DNS_SERVERS=%s " .. LUA .. " -e '%s' 2>&1"):format(dnsd.addr, script)))
    local out = p:read("*a")
    p:close()
    assert.equal("a.prio.test:5223", out)
  end)

  it("raises on misuse", function()
    local ok, err = pcall(resolve.targets, "example.test")
    assert.is_false(ok)
    assert.matches("lxmpp.resolve.targets must be called from an lxmpp task", err, 1, true)
    run(function()
      assert.has_error(function() resolve.targets(42) end)
      assert.has_error(function() resolve.targets("example.test", { tls = "sometimes" }) end)
      assert.has_error(function() resolve.targets("example.test", { port = 70000 }) end)
    end)
    assert.has_error(function() resolve.set_servers(5353) end)
    assert.has_error(function() resolve.configure{ servers = "not a server list" } end)
  end)
end)

describe("resolve.addresses", function()
  after_each(assert_clean)

  it("returns A and AAAA records", function()
    run(function()
      assert.same({ "127.0.0.1", "::1" }, sorted(resolve.addresses("xmpp1.example.test")))
      assert.same({ "127.0.0.2", "127.0.0.3" }, sorted(resolve.addresses("v4only.example.test")))
    end)
  end)

  it("reports an unknown name as remote-server-not-found", function()
    local list, msg, cond = run(function() return resolve.addresses("missing.example.test") end)
    assert.is_nil(list)
    assert.matches("missing%.example%.test", msg)
    assert.equal("remote-server-not-found", cond)
  end)

  it("times out quickly against a server that never answers", function()
    local fast = core.resolver{ servers = silent.addr, timeout = 0.2, tries = 1 }
    local t0 = core.now()
    local list, _, cond = run(function() return resolve.addresses("xmpp1.example.test", { resolver = fast }) end)
    assert.is_nil(list)
    assert.equal("timeout", cond)
    assert.is_true(core.now() - t0 < 2)
    fast:close()
  end)

  it("returns IP addresses and localhost without a query", function()
    local before = queries(dnsd)
    run(function()
      assert.same({ "192.0.2.7" }, resolve.addresses("192.0.2.7"))
      assert.same({ "2001:db8::1" }, resolve.addresses("2001:db8::1"))
      assert.same({ "::1" }, resolve.addresses("[::1]"))
      assert.same({ "127.0.0.1", "::1" }, resolve.addresses("localhost"))
      assert.same({ "127.0.0.1", "::1" }, resolve.addresses("LocalHost."))
      assert.same({ "127.0.0.1", "::1" }, resolve.addresses("xmpp.localhost"))
      assert.equal(0, dns_handles())
    end)
    assert.equal(before, queries(dnsd))
  end)
end)

-- A task cancelled while it waits for a lookup (lxmpp.task.cancel: what
-- srv:stop() and a cancelled connect do) abandons its queries at once:
-- nothing of them keeps lxmpp.run's loop alive until c-ares times out.
describe("cancelling a lookup", function()
  after_each(assert_clean)

  local slow = require "spec.support.slow"
  local LONG = 5         -- the resolvers' timeout here: far past every bound below

  -- Runs fn(r) in lxmpp.run with a resolver on silent (never answers);
  -- returns how long run took after fn returned.
  local function timed(fn, servers)
    local r = core.resolver{ servers = servers or silent.addr, timeout = LONG, tries = 2 }
    local t_end
    run(function()
      fn(r)
      t_end = core.now()
    end)
    local took = core.now() - t_end
    r:close()
    return took
  end

  it("in resolve.targets: both SRV queries end and run returns at once", function()
    local woken = false
    local took = timed(function(r)
      local t = lxmpp.spawn(function()
        resolve.targets("prio.test", { resolver = r })
        woken = true
      end)
      lxmpp.sleep(0.05)
      assert.is_true(dns_handles() > 0, "no query out")      -- its timer and socket
      assert.is_true(task.cancel(t))
      assert.is_nil(next((uservalue(r, 1))), "a target is still held")
      lxmpp.sleep(0)                                          -- (closes complete)
      assert.equal(0, dns_handles())
    end)
    assert.is_false(woken)
    assert.is_true(took < 0.5 * slow.factor, "run took " .. took .. " s more")
  end)

  it("in resolve.targets after one of its two answers came", function()
    -- dnsd answers _xmpps-client._tcp.slow.test (NXDOMAIN), drops _xmpp-client
    local took = timed(function(r)
      local t = lxmpp.spawn(function() resolve.targets("slow.test", { resolver = r }) end)
      lxmpp.sleep(0.2)
      assert.is_true(dns_handles() > 0, "no query out")
      task.cancel(t)
    end, dnsd.addr)
    assert.is_true(took < 0.5 * slow.factor, "run took " .. took .. " s more")
  end)

  it("in resolve.addresses", function()
    local took = timed(function(r)
      local t = lxmpp.spawn(function() resolve.addresses("xmpp1.example.test", { resolver = r }) end)
      lxmpp.sleep(0.05)
      assert.is_true(dns_handles() > 0, "no query out")
      task.cancel(t)
    end)
    assert.is_true(took < 0.5 * slow.factor, "run took " .. took .. " s more")
  end)

  it("leaves the resolver working: other tasks' queries still get their answers, later ones too", function()
    run(function()
      local r = core.resolver{ servers = dnsd.addr, timeout = 0.3, tries = 1 }
      local other
      local cancelled = lxmpp.spawn(function() resolve.addresses("slow.test", { resolver = r }) end)
      lxmpp.spawn(function() other = { resolve.addresses("slow.test", { resolver = r }) } end)
      lxmpp.sleep(0.05)
      task.cancel(cancelled)
      assert.is_true(dns_handles() > 0, "the other task's query ended too")
      lxmpp.sleep(1 * slow.factor)
      assert.same({ nil, "slow.test: Timeout while contacting DNS servers", "timeout" }, other)
      -- and a new lookup, after a cancel that left nothing out
      local t = lxmpp.spawn(function() resolve.targets("slow.test", { resolver = r }) end)
      lxmpp.sleep(0.05)
      task.cancel(t)
      lxmpp.sleep(0)
      assert.equal(0, dns_handles())
      assert.same({ "a.prio.test:5223/starttls", "b.prio.test:5222/starttls", "c.prio.test:5224/starttls" },
        hosts(resolve.targets("prio.test", { resolver = r, tls = "starttls" })))
      assert.same({ "127.0.0.1", "::1" }, sorted(resolve.addresses("xmpp1.example.test", { resolver = r })))
      r:close()
    end)
  end)

  it("in lxmpp.connect: a cancelled connect task leaves no query behind", function()
    resolve.configure{ servers = silent.addr, timeout = LONG, tries = 2 }
    local t_end, result
    local ok, err = pcall(run, function()
      local t = lxmpp.spawn(function()
        result = { lxmpp.connect{ jid = "alice@prio.test/r", password = "pw" } }
      end)
      lxmpp.sleep(0.05)
      assert.is_true(dns_handles() > 0, "no query out")
      assert.is_true(task.cancel(t))
      t_end = core.now()
    end)
    local took = t_end and core.now() - t_end
    resolve.configure{ servers = dnsd.addr, timeout = 1, tries = 2 }   -- (as lazy_setup left it)
    assert(ok, err)
    assert.is_nil(result)
    assert.is_true(took < 0.5 * slow.factor, "run took " .. tostring(took) .. " s more")
  end)

  it("with resolver:cancel(target): queries out, and a result not yet dispatched", function()
    run(function()
      local r = core.resolver{ servers = silent.addr, timeout = LONG }
      local woken = {}
      local function target(name) return { wake = function() woken[#woken + 1] = name end } end
      local a, b = target("a"), target("b")
      assert.is_true(r:srv("_xmpp-client._tcp.prio.test", a))
      assert.is_true(r:addr("xmpp1.example.test", a))
      assert.is_true(r:addr("127.0.0.1", b))     -- answered at once, dispatched at the next iteration
      assert.equal(2, r:cancel(a))
      assert.equal(1, r:cancel(b))
      assert.equal(0, r:cancel(a))               -- twice: nothing left
      assert.is_nil(next((uservalue(r, 1))), "a target is still held")
      lxmpp.sleep(0.05)
      assert.same({}, woken)
      assert.equal(0, dns_handles())
      r:close()
      assert.equal(0, r:cancel(a))               -- closed: still safe
      assert.has_error(function() r:cancel() end)  -- no target
    end)
  end)
end)
