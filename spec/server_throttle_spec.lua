-- The embedded server's per-address throttles (lua/lxmpp/server/throttle.lua,
-- docs/server.md "Throttles"): in-band registrations per address and time
-- and reserved names, failed logins (SASL and the XEP-0114 handshake) that
-- slow the answers to one address while another address gets in at once,
-- and HTTPS upload connections per address.
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local net = require "lxmpp.net"
local serve = require "spec.support.serve"
local raw = require "spec.support.raw"
local slow = require("spec.support.slow").factor
local throttle = require "lxmpp.server.throttle"

local USERS = { alice = "alice-pw", bob = "bob-pw" }
local NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"

-- The ports a server listens on for kind, by address: { v4 =, v6 = }.
local function ports_of(srv, kind)
  local out = {}
  for _, a in ipairs(srv:addresses()) do
    if a.kind == kind then
      if a.ip == "::1" or a.ip == "::" then out.v6 = a.port end
      if a.ip ~= "::1" then out.v4 = out.v4 or a.port end
    end
  end
  return out
end

-- An in-band registration on a new stream from host: the answer stanza.
local function register(port, host, user)
  local r = raw.connect(port, host)
  r:negotiate_tls(serve.pki().ca)
  r:send("<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>" .. user ..
    "</username><password>pw-" .. user .. "</password></query></iq>")
  local s = assert(r:stanza())
  r:close()
  return s
end

local function error_of(s)
  local e = s:get_child("error")
  local _, cond = s:get_error()
  return e and e.attr.type, cond
end

describe("throttle (unit)", function()
  it("counts IPv4 as is, IPv6 by its /64, IPv4-mapped IPv6 as IPv4", function()
    assert.equal("192.0.2.7", throttle.key("192.0.2.7"))
    assert.equal("192.0.2.7", throttle.key("::ffff:192.0.2.7"))
    assert.equal("2001:db8:1:2::/64", throttle.key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"))
    assert.equal("2001:db8:1:2::/64", throttle.key("2001:db8:1:2::1"))
    assert.equal("2001:db8:0:0::/64", throttle.key("2001:db8::5"))
    assert.equal("fe80:0:0:0::/64", throttle.key("fe80::1%eth0"))
    assert.equal("::1", throttle.key("::1"))
  end)

  it("keeps at most 2 x max entries, the least recently used going first", function()
    local m = throttle.map(100)
    m:put("keep", 1)
    for i = 1, 10000 do
      m:put("addr" .. i, i)
      if i % 50 == 0 then assert.equal(1, m:get("keep")) end   -- in use: kept
      assert.is_true(m:size() <= 200)
    end
    assert.equal(1, m:get("keep"))
    assert.is_nil(m:get("addr1"))
    assert.equal(10000, m:get("addr10000"))
  end)

  it("holds answers to an address over its thresholds, doubling, capped, one at a time", function()
    local limits = { auth_failures = 3, auth_address_failures = 5, auth_delay = 1, auth_delay_max = 4,
      auth_forget = 100 }
    local a = throttle.auth(limits)
    local now = 1000
    -- three failures for alice from A are answered at once, then each waits
    for _ = 1, 3 do assert.equal(now, a:verdict("A", "alice", true, now)) end
    assert.equal(now + 1, a:verdict("A", "alice", true, now))
    assert.equal(now + 3, a:verdict("A", "alice", true, now))       -- queued behind it: 2 s more
    assert.equal(now + 7, a:verdict("A", "alice", true, now))       -- 4 s: the cap
    assert.equal(now + 11, a:verdict("A", "alice", false, now))     -- the right password waits too
    -- alice from B, and bob from A (the address has 6 failures: over 5), are not alice-at-A
    assert.equal(now, a:verdict("B", "alice", false, now))
    assert.equal(now + 13, a:verdict("A", "bob", false, now))       -- A is over its own threshold: 2 s
    assert.equal(now, a:verdict("C", "bob", true, now))
    -- a success cleared alice-at-A, not A; after auth_forget A starts over
    now = now + 200
    assert.equal(now, a:verdict("A", "alice", true, now))
  end)

  it("counts registrations per address in a window", function()
    local r = throttle.registrations({ max_registrations = 2, register_interval = 10 })
    assert.is_true(r:allowed("A", 0))
    r:count("A", 0); r:count("A", 1)
    local ok, wait = r:allowed("A", 5)
    assert.is_false(ok)
    assert.equal(5, wait)
    assert.is_true(r:allowed("B", 5))
    assert.is_true(r:allowed("A", 10))
  end)
end)

describe("embedded server: registration throttle", function()
  it("registers one account per address per 10 minutes by default, loopback included", function()
    serve.run({ users = USERS, registration = true, listen = { "127.0.0.1:0", "[::1]:0" } }, function(srv)
      local p = ports_of(srv, "c2s")
      assert.equal("result", register(p.v4, nil, "first").attr.type)
      local s = register(p.v4, nil, "second")
      assert.same({ "wait", "resource-constraint" }, { error_of(s) })
      assert.matches("too many accounts registered from your address", select(3, s:get_error()))
      assert.is_nil(srv.store:get_account("second"))
      -- a name already taken is answered conflict, as before, and costs nothing
      assert.equal("conflict", select(2, register(p.v6, "::1", "first"):get_error()))
      assert.equal("result", register(p.v6, "::1", "third").attr.type)   -- another address
      assert.equal("resource-constraint", select(2, register(p.v6, "::1", "fourth"):get_error()))
      assert.truthy(srv.store:get_account("third"))
    end)
  end)

  it("refuses reserved names (case-insensitively) with conflict; reserved_names replaces the list", function()
    serve.run({ users = USERS, registration = true, limits = { max_registrations = 10 } }, function(srv, port)
      for _, name in ipairs({ "admin", "Administrator", "ROOT", "postmaster", "abuse", "noreply", "Info" }) do
        local s = register(port, nil, name)
        assert.same({ "cancel", "conflict" }, { error_of(s) }, name)
        assert.matches("reserved", select(3, s:get_error()))
        assert.is_nil(srv.store:get_account(name:lower()))
      end
      assert.equal("result", register(port, nil, "adminx").attr.type)
      -- the host application may still make them
      assert(srv:add_user("admin", "admin-pw"))
    end)
    serve.run({ users = USERS, registration = true, reserved_names = { "Boss" }, limits = { max_registrations = 10 } },
      function(_, port)
        assert.equal("conflict", select(2, register(port, nil, "BOSS"):get_error()))
        assert.equal("result", register(port, nil, "admin").attr.type)
      end)
    assert.has_error(function() lxmpp.server({ reserved_names = { "a@b" } }) end)
    assert.has_error(function() lxmpp.server({ reserved_names = "admin" }) end)
  end)
end)

-- Guesses PLAIN passwords for alice from 127.0.0.1 until stop(): new
-- streams as the server ends them (limits.sasl_attempts); each answer's
-- time goes to `answers`.
local function sasl_guesser(port, answers, state)
  lxmpp.spawn(function()
    local n = 0
    while not state.stop do
      local r = raw.connect(port)
      r:negotiate_tls(serve.pki().ca)
      while not state.stop do
        n = n + 1
        r:send("<auth xmlns='" .. NS_SASL .. "' mechanism='PLAIN'>" ..
          core.base64_encode("\0alice\0guess-" .. n) .. "</auth>")
        local s = r:stanza(30 * slow)
        if not s or s.name ~= "failure" then break end
        answers[#answers + 1] = core.now()
      end
      r:close()
    end
    state.done = (state.done or 0) + 1
  end)
end

-- Answers in [from, to).
local function between(list, from, to)
  local n = 0
  for _, t in ipairs(list) do if t >= from and t < to then n = n + 1 end end
  return n
end

describe("embedded server: login throttle", function()
  it("slows a guessing loop from one address to one answer per auth_delay_max; another address logs in at once", function()
    local delay = 0.1 * slow
    local limits = { auth_failures = 3, auth_address_failures = 6, auth_delay = delay / 2, auth_delay_max = delay }
    serve.run({ users = USERS, listen = { "127.0.0.1:0", "[::1]:0" }, limits = limits }, function(srv)
      local p = ports_of(srv, "c2s")
      local answers, state = {}, {}
      for _ = 1, 3 do sasl_guesser(p.v4, answers, state) end   -- three streams at once
      assert.is_true(serve.until_true(function() return #answers >= 12 end, 10 * slow))
      local t0 = core.now()
      -- the owner, from the other address: not held at all
      local c = assert(serve.login(p.v6, "alice", "alice-pw", "v6", { host = "::1" }))
      local took = core.now() - t0
      assert.is_true(took < 0.5 * slow, "login from ::1 took " .. took .. " s")
      c:close()
      -- the right password from the guessing address waits like a guess
      t0 = core.now()
      local c4 = assert(serve.login(p.v4, "alice", "alice-pw", "v4"))
      took = core.now() - t0
      assert.is_true(took >= delay * 0.9, "login from 127.0.0.1 answered after " .. took .. " s")
      c4:close()
      -- a window of 2 s: at most one answer per `delay` (10 + the edges)
      local w0 = core.now()
      lxmpp.sleep(20 * delay)
      local n = between(answers, w0, w0 + 20 * delay)
      state.stop = true
      assert.is_true(n <= 22, n .. " guesses answered in " .. 20 * delay .. " s")
      assert.is_true(n >= 10, "only " .. n .. " answers: the loop stalled")
      assert.is_true(serve.until_true(function() return state.done == 3 end, 10 * slow))
    end)
  end)
end)

-- Tries wrong component handshakes for gw.example.test from 127.0.0.1.
local function handshake_guesser(port, answers, state)
  lxmpp.spawn(function()
    while not state.stop do
      local r = raw.connect(port)
      r:send("<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='" ..
        raw.NS_STREAMS .. "' to='gw.example.test'>")
      local ev = r:next(5 * slow)
      if not ev or not ev.open then r:close(); break end
      r:send("<handshake>" .. ("0"):rep(40) .. "</handshake>")
      local cond = r:stream_error(30 * slow)
      r:close()
      if cond ~= "not-authorized" then break end
      answers[#answers + 1] = core.now()
    end
    state.done = (state.done or 0) + 1
  end)
end

describe("embedded server: component handshake throttle", function()
  it("slows wrong handshakes from one address; the component connects from another at once", function()
    local delay = 0.1 * slow
    local limits = { auth_failures = 3, auth_address_failures = 6, auth_delay = delay / 2, auth_delay_max = delay }
    serve.run({ users = USERS, components = { ["gw.example.test"] = "s3cret" },
        component_listen = { "127.0.0.1:0", "[::1]:0" }, limits = limits }, function(srv)
      local p = ports_of(srv, "component")
      local answers, state = {}, {}
      for _ = 1, 3 do handshake_guesser(p.v4, answers, state) end
      assert.is_true(serve.until_true(function() return #answers >= 12 end, 10 * slow))
      local t0 = core.now()
      local comp = lxmpp.component({ jid = "gw.example.test", secret = "s3cret", host = "::1", port = p.v6 })
      assert(comp:connect())
      local took = core.now() - t0
      assert.is_true(took < 0.5 * slow, "the component from ::1 took " .. took .. " s")
      comp:close()
      local w0 = core.now()
      lxmpp.sleep(20 * delay)
      local n = between(answers, w0, w0 + 20 * delay)
      state.stop = true
      assert.is_true(n <= 22, n .. " handshakes answered in " .. 20 * delay .. " s")
      assert.is_true(n >= 10, "only " .. n .. " answers: the loop stalled")
      assert.is_true(serve.until_true(function() return state.done == 3 end, 10 * slow))
    end)
  end)
end)

-- A TLS connection to the upload port from host: true once TLS is up,
-- false if the server cut it first.
local function https(host, port)
  local conn = assert(net.connect(host, port))
  local w = lxmpp.task.waiter("https", 1)
  conn:on("tls-done", function() w:wake(true) end)
  for _, e in ipairs({ "tls-failed", "eof", "closed", "read-error" }) do conn:on(e, function() w:wake(false) end) end
  local ctx = assert(core.tls_context({ mode = "client", cafile = serve.pki().ca }))
  conn:starttls(ctx, serve.DOMAIN)
  local t = core.timer(5 * slow, w)
  local ok = w:wait()
  t:stop()
  return ok, conn, ctx
end

describe("embedded server: upload connections per address", function()
  it("refuses a connection over http_per_ip from one address while another address gets in", function()
    serve.run({ users = USERS, upload = { domain = "upload.example.test", listen = "[::]:0" },
        limits = { http_per_ip = 2 } }, function(srv)
      local hp = ports_of(srv, "upload").v6
      local held = {}
      for i = 1, 2 do
        local ok, conn, ctx = https("127.0.0.1", hp)
        assert.is_true(ok, "connection " .. i)
        held[#held + 1] = { conn, ctx }
      end
      local ok, conn, ctx = https("127.0.0.1", hp)     -- a third from the same address: cut
      assert.is_false(ok)
      conn:abort(); ctx:close()
      ok, conn, ctx = https("::1", hp)                  -- another address gets in and is served
      assert.is_true(ok)
      conn:raw()
      local got = {}
      conn:on("data", function(b) got[#got + 1] = b end)
      conn:write("GET /upload/" .. ("0"):rep(32) .. "/x HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.is_true(serve.until_true(function() return table.concat(got):find("\r\n\r\n", 1, true) ~= nil end))
      assert.matches("^HTTP/1%.1 404 ", table.concat(got))
      conn:abort(); ctx:close()
      for _, h in ipairs(held) do h[1]:abort(); h[2]:close() end
      lxmpp.sleep(0.1)
      ok, conn, ctx = https("127.0.0.1", hp)            -- once they are gone, 127.0.0.1 again
      assert.is_true(ok)
      conn:abort(); ctx:close()
    end)
  end)
end)
