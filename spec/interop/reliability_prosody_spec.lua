-- Never lose a message (XEP-0198, reconnection, liveness), proven under
-- injected faults: a real Prosody with mod_smacks, and between it and each
-- lxmpp client a fault proxy (spec/support/faultproxy.py, seeded) that cuts
-- links at random byte offsets (mid-stanza and mid-TLS-record included),
-- stalls them, and refuses new connections for a while.
local compat = require "lxmpp.compat"
local lxmpp = require "lxmpp"
local st = lxmpp.stanza
local prosody = require "spec.support.prosody"
local faultproxy = require "spec.support.faultproxy"
local assert_clean = require "spec.support.clean"
local clients = require "spec.support.clients"

local SPEC = debug.getinfo(1, "S").source:match("^@(.*)/interop/[^/]*$") or "spec"
if SPEC:sub(1, 1) ~= "/" then SPEC = assert(io.popen("pwd")):read("*l") .. "/" .. SPEC end
local MODULES = SPEC .. "/support/prosody_modules"
local slow = require "spec.support.slow"
local SLOW = slow.factor
local HIBERNATION = 5 * SLOW   -- Prosody's resumption window here (seconds)
-- 5,000 messages and 20+ cuts; under Valgrind (tens of times slower) a
-- tenth of it, which still cuts links mid-stanza and resumes
local N = slow.valgrind and 500 or 5000
local MIN_CUTS = slow.valgrind and 2 or 20

local srv
local users = { alice = "alice-secret", bob = "bob-secret", carol = "carol-secret" }

local function run(fn)
  local ok, err = pcall(lxmpp.run, fn)
  if not ok then error(err, 0) end
end

local function client_opts(user, port, extra)
  local o = { jid = user .. "@example.test/rel", password = users[user], host = "127.0.0.1", port = port,
    cafile = srv.ca, reconnect = { delay = 0.02, max_delay = 0.3 }, keepalive = 10 * SLOW }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- Waits (polling) until cond() holds; false after `seconds`.
local function wait_for(cond, seconds)
  local deadline = lxmpp.core.now() + seconds * SLOW
  while not cond() do
    if lxmpp.core.now() > deadline then return false end
    lxmpp.sleep(0.02)
  end
  return true
end

-- A receiver that counts each body it gets.
local function receiver(c)
  local got = { n = 0, dup = 0, count = {} }
  c:on("message", function(m)
    local body = m:get_child_text("body")
    if not body then return end
    local k = got.count[body]
    if k then got.dup = got.dup + 1 else got.n = got.n + 1 end
    got.count[body] = (k or 0) + 1
  end)
  return got
end

-- Sends m1..mN at a steady pace (a batch, then a short pause), calling
-- at(i) before message i when given.
local function send_all(c, to, at)
  for i = 1, N do
    if at then at(i) end
    assert(c:send_message(to, "m" .. i))
    if i % 50 == 0 then lxmpp.sleep(0.01) end
  end
end

-- The send_all callback of the specs where a session outlives the
-- resumption window: at 40 % of the messages a half-open link swallows what
-- is sent next, then the link stays down longer than the server keeps the
-- session, then random cuts go on. The stall must find a live link: a
-- random cut may just have happened.
local function past_the_window(pa, alice)
  return function(i)
    if i == compat.idiv(N * 2, 5) then
      pa:cmd("cut 0 0")
      for _ = 1, 10 do
        assert(wait_for(function() return alice.online and not alice.reconnecting end, 10))
        pa:cmd("stall")
        if wait_for(function() return pa:status().stalls >= 1 end, 1) then break end
      end
      assert(pa:status().stalls >= 1, "no link was stalled")
      lxmpp.sleep(0.3)
    elseif i == compat.idiv(N * 23, 50) then
      pa:cmd("down " .. (HIBERNATION + 2))
    elseif i == compat.idiv(N * 12, 25) then
      pa:cmd("cut 6000 40000")
    end
  end
end

local function events(c)
  local ev = { disconnected = {}, reconnected = {}, unacked = {} }
  c:on("disconnected", function(msg, cond, again) table.insert(ev.disconnected, { msg, cond, again }) end)
  c:on("reconnected", function(resumed) table.insert(ev.reconnected, resumed) end)
  c:on("unacked", function(list, reason)
    for _, s in ipairs(list) do table.insert(ev.unacked, { s, reason }) end
  end)
  return ev
end

-- Runs fn(proxy1, proxy2, ...) in lxmpp.run with one fault proxy in front
-- of the server per seed, and stops the proxies whatever happened.
local function with_proxies(seeds, fn)
  local proxies = {}
  for i, seed in ipairs(seeds) do proxies[i] = faultproxy.start({ target_port = srv.port, seed = seed }) end
  local ok, err = pcall(run, function() fn(compat.unpack(proxies)) end)
  for _, p in ipairs(proxies) do p:stop() end
  assert(ok, err)
end

-- alice (through pa) sends m1..mN to bob while her links are cut at random
-- and once stay down past the resumption window; returns when all is acked.
local function send_past_the_window(pa, alice, bob)
  pa:cmd("cut 6000 40000")
  pa:cmd("cutnow")
  send_all(alice, bob.jid, past_the_window(pa, alice))
  assert.is_true(alice:wait_acked(60 * SLOW))
end

-- How many of the reconnections (events(c).reconnected) began a new session.
local function new_sessions(ev)
  local fresh = 0
  for _, resumed in ipairs(ev.reconnected) do if not resumed then fresh = fresh + 1 end end
  return fresh
end

local function assert_cut_often(pa)
  assert.is_true(pa:status().cuts >= MIN_CUTS, "only " .. pa:status().cuts .. " cuts")
end

describe("reliability against Prosody through a fault proxy", function()
  setup(function()
    -- mod_smacks_resume_fix: see spec/support/prosody_modules (a Prosody
    -- 0.12 bug after a link cut in mid-stanza)
    srv = prosody.start({ users = users, log_level = "info", modules = { "smacks_resume_fix" }, config = {
      "plugin_paths = { " .. ("%q"):format(MODULES) .. " }",
      "smacks_hibernation_time = " .. HIBERNATION,
      "smacks_max_queue_size = 20000",
    } })
  end)
  teardown(function() if srv then srv:stop() end end)
  after_each(function()
    clients.kill_all()
    assert_clean()
  end)

  it("delivers 5,000 messages exactly once while both links are cut at random 20+ times", function()
    with_proxies({ 1001, 2002 }, function(pa, pb)
      local alice = assert(lxmpp.connect(client_opts("alice", pa.port)))
      local bob = assert(lxmpp.connect(client_opts("bob", pb.port)))
      local ea, eb = events(alice), events(bob)
      local got = receiver(bob)
      -- every connection from now on dies after 10-120 KB (TLS and login included)
      pa:cmd("cut 10000 120000")
      pb:cmd("cut 10000 120000")
      pa:cmd("cutnow")
      pb:cmd("cutnow")
      send_all(alice, bob.jid)
      assert(wait_for(function() return got.n >= N end, 60), ("bob got %d of %d"):format(got.n, N))
      assert.is_true(alice:wait_acked(20 * SLOW))
      local cuts = pa:status().cuts + pb:status().cuts
      pa:cmd("cut 0 0")
      pb:cmd("cut 0 0")
      assert.equal(N, got.n)
      assert.equal(0, got.dup)
      for i = 1, N do assert(got.count["m" .. i] == 1, "m" .. i) end
      assert.is_true(cuts >= MIN_CUTS, "only " .. cuts .. " cuts")
      assert.same({}, ea.unacked)
      assert.same({}, eb.unacked)
      -- every disconnection was followed by a resumption, never a new session
      assert.is_true(#ea.reconnected + #eb.reconnected >= MIN_CUTS)
      for _, resumed in ipairs(ea.reconnected) do assert.is_true(resumed) end
      for _, resumed in ipairs(eb.reconnected) do assert.is_true(resumed) end
      alice:close()
      bob:close()
    end)
  end)

  it("by default sends again what a resumption past the window left unacknowledged: every message arrives", function()
    with_proxies({ 3003 }, function(pa)
      local alice = assert(lxmpp.connect(client_opts("alice", pa.port)))
      local bob = assert(lxmpp.connect(client_opts("bob", srv.port)))
      local ea = events(alice)
      local got = receiver(bob)
      local ids = {}
      bob:on("message", function(m)
        local body = m:get_child_text("body")
        if body then
          ids[body] = ids[body] or {}
          table.insert(ids[body], m.attr.id)
        end
      end)
      send_past_the_window(pa, alice, bob)
      assert(wait_for(function() return got.n >= N end, 20), ("bob got %d of %d"):format(got.n, N))
      local missing = {}
      for i = 1, N do if not got.count["m" .. i] then missing[#missing + 1] = "m" .. i end end
      assert.same({}, missing)                            -- none lost, none left to the application
      assert.same({}, ea.unacked)
      -- a copy (the server had it but its ack was lost with the link) keeps
      -- the original's id, so bob can tell
      for body, list in pairs(ids) do
        for k = 2, #list do assert.equal(list[1], list[k], body) end
      end
      assert.equal(1, new_sessions(ea))                   -- the window passed once
      assert_cut_often(pa)
      alice:close()
      bob:close()
    end)
  end)

  it("reports every unacknowledged message when the link stays down past the resumption window (resend_unacked = false)", function()
    with_proxies({ 3003 }, function(pa)
      local alice = assert(lxmpp.connect(client_opts("alice", pa.port, { resend_unacked = false })))
      local bob = assert(lxmpp.connect(client_opts("bob", srv.port)))
      local ea = events(alice)
      local got = receiver(bob)
      send_past_the_window(pa, alice, bob)
      local reported = {}
      for _, u in ipairs(ea.unacked) do
        local body = u[1]:get_child_text("body")
        assert.is_nil(reported[body], "reported twice: " .. tostring(body))
        reported[body] = true
      end
      assert(wait_for(function()
        local n = got.n
        for b in pairs(reported) do if not got.count[b] then n = n + 1 end end
        return n >= N
      end, 20))
      assert.equal(0, got.dup)
      local missing, both = {}, 0
      for i = 1, N do
        local b = "m" .. i
        if not got.count[b] and not reported[b] then missing[#missing + 1] = b end
        if got.count[b] and reported[b] then both = both + 1 end
      end
      assert.same({}, missing)                            -- none vanished
      assert.equal(0, both)                               -- the server's h said exactly what it had
      assert.is_true(next(reported) ~= nil, "nothing was reported")
      -- one new session, after the window; resumptions otherwise
      local reasons = {}
      for _, u in ipairs(ea.unacked) do reasons[u[2]] = true end
      assert.equal(1, new_sessions(ea), "new sessions; reasons: " .. table.concat((function()
        local l = {} for r in pairs(reasons) do l[#l + 1] = r end return l end)(), "; "))
      assert_cut_often(pa)
      alice:close()
      bob:close()
    end)
  end)

  it("finds a half-open link within the keepalive interval, and a waiting request gets its reply", function()
    with_proxies({ 4004 }, function(pa)
      local alice = assert(lxmpp.connect(client_opts("alice", pa.port, { keepalive = SLOW })))
      local ea = events(alice)
      pa:cmd("stall")
      local t0 = lxmpp.core.now()
      local reply, msg = alice:request(st.iq({ type = "get", to = "example.test" })
        :tag("ping", { xmlns = "urn:xmpp:ping" }), 10 * SLOW)
      assert(reply, msg)
      assert.equal("result", reply.attr.type)
      assert.equal(1, #ea.disconnected)
      assert.equal("timeout", ea.disconnected[1][2])
      assert.is_true(lxmpp.core.now() - t0 < (1.25 + 1.5) * SLOW)
      assert.same({ true }, ea.reconnected)
      assert.same({}, ea.unacked)
      alice:close()
    end)
  end)

  it("backs off while new connections are refused, then resumes and delivers what waited", function()
    with_proxies({ 5005 }, function(pa)
      local alice = assert(lxmpp.connect(client_opts("alice", pa.port)))
      local bob = assert(lxmpp.connect(client_opts("bob", srv.port)))
      local ea = events(alice)
      local got = receiver(bob)
      pa:cmd("down 1.5")
      assert(wait_for(function() return #ea.disconnected == 1 end, 2))
      for i = 1, 20 do assert(alice:send_message(bob.jid, "w" .. i)) end
      assert(wait_for(function() return #ea.reconnected == 1 end, 5))
      assert.same({ true }, ea.reconnected)
      assert.equal(1, pa:status().refusals)
      assert(wait_for(function() return got.n == 20 end, 5))
      assert.equal(0, got.dup)
      alice:close()
      bob:close()
    end)
  end)

  it("a bot restarted within the window resumes its session from a saved state", function()
    with_proxies({ 6006 }, function(pa)
      local saved
      local function store(state) saved = state end
      local alice = assert(lxmpp.connect(client_opts("alice", pa.port, { reconnect = false,
        stream_management = { save = store } })))
      local bob = assert(lxmpp.connect(client_opts("bob", srv.port)))
      local got = receiver(bob)
      pa:cmd("stall")                                     -- these three never reach the server
      for i = 1, 3 do assert(alice:send_message(bob.jid, "s" .. i)) end
      assert.equal(3, #saved.queue)
      -- the process dies: no close, no reconnection; its link goes down
      alice.on_lost = nil
      alice.online = false
      require("lxmpp.reconnect").internal.stop_keepalive(alice)
      alice.sm:link_lost()
      alice.conn:abort()
      pa:cmd("cutnow")
      local restarted = assert(lxmpp.connect(client_opts("alice", srv.port,
        { stream_management = { state = saved, save = store } })))
      assert.is_true(restarted.resumed)
      assert(wait_for(function() return got.n == 3 end, 5))
      assert.same({ 1, 1, 1 }, { got.count.s1, got.count.s2, got.count.s3 })
      assert.is_true(restarted:wait_acked(5 * SLOW))
      restarted:close()
      assert.is_nil(saved)
      bob:close()
    end)
  end)

  it("does not reconnect when another client takes its resource", function()
    run(function()
      local first = assert(lxmpp.connect(client_opts("carol", srv.port)))
      local ev = events(first)
      local second = assert(lxmpp.connect(client_opts("carol", srv.port)))
      assert(wait_for(function() return #ev.disconnected == 1 end, 5))
      assert.same({ "conflict", false }, { ev.disconnected[1][2], ev.disconnected[1][3] })
      lxmpp.sleep(0.5)
      assert.same({}, ev.reconnected)
      assert.equal("carol@example.test/rel", second.jid)
      assert.is_true(second.online)
      first:close()
      second:close()
    end)
  end)
end)
