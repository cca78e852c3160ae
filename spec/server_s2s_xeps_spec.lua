-- Federation details of XEP-0368 (direct TLS SRV records for servers),
-- XEP-0220 §2.4 (dialback errors on the initiating side) and the bounds a
-- hostile peer meets on one stream (limits.s2s_verifies, limits.rate):
-- two embedded servers in one process on loopback, example.test and
-- other.test, and raw server streams.
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local net = require "lxmpp.net"
local pki = require "spec.support.pki"
local serve = require "spec.support.serve"
local slow = require "spec.support.slow"
local s2sh = require "spec.support.s2s"

local A, B = s2sh.A, s2sh.B
local T = 5 * slow.factor
local port_of, login, message = s2sh.port_of, s2sh.login, s2sh.message

-- a started server of domain with certificate certname ("good" names
-- example.test, "wrongname" other.test, "untrusted" is of another CA),
-- extra's options on top
local function start(domain, certname, extra)
  return s2sh.start(domain, certname, nil, extra)
end

local function error_of(s)
  local e = s and s:get_child("error")
  return e and e.attr.type, e and e.tags[1] and e.tags[1].name
end

-- runs fn(list) in lxmpp.run, then stops the servers (and closes the
-- listeners) fn put in list, whatever happened
local function run(fn)
  s2sh.with(function()
    local list = {}
    return list, { list }
  end, fn)
end

describe("s2s: XEP-0368 _xmpps-server._tcp SRV records", function()
  -- other.test with a STARTTLS and a direct TLS listener, published by
  -- zone(b) in spec/support/dnsd; example.test resolves through it (no
  -- s2s.hosts entry for other.test) and sends alice's message to bob
  local function through_dns(zone, check)
    local dnsd = require "spec.support.dnsd"
    local resolve = require "lxmpp.resolve"
    local d
    -- dnsd must stop whatever happens (its pipe would keep busted waiting)
    local ok, err = pcall(run, function(list)
      local b = start(B, "wrongname", { s2s_tls_listen = "127.0.0.1:0" })
      list[#list + 1] = b
      d = dnsd.start(zone(port_of(b, "s2s"), port_of(b, "s2s-tls")))
      resolve.configure({ servers = d.addr, timeout = 1, tries = 2 })
      local ran, e = pcall(function()
        local a = start(A, "good")
        list[#list + 1] = a
        b:s2s_host(A, "127.0.0.1:" .. port_of(a, "s2s"))
        local alice, bob = login(a, "alice"), login(b, "bob")
        alice:send(message("bob@" .. B .. "/r", "found you", "x1"))
        assert(serve.expect(bob, "message", function(m) return m.attr.id == "x1" end, T), "bob got nothing")
        local out = a.s2s.routes[B].out
        assert.is_true(out.authenticated)
        local f = assert(io.open(d.log))
        local log = f:read("*a")
        f:close()
        check(out, log)
      end)
      resolve.set_servers(nil)
      if not ran then error(e, 0) end
    end)
    dnsd.stop(d)
    if not ok then error(err, 0) end
  end

  it("reaches a domain published only with _xmpps-server: TLS from the first byte, ALPN xmpp-server", function()
    through_dns(function(_, tls_port)
      return { ["_xmpps-server._tcp." .. B] = { SRV = { { 10, 0, tls_port, "xmpps." .. B } } },
        ["xmpps." .. B] = { A = { "127.0.0.1" } } }
    end, function(out, log)
      assert.is_true(out.direct)
      assert.equal("xmpp-server", out.conn:tls_info().alpn)    -- XEP-0368 §3
      assert.truthy(log:find("_xmpps-server._tcp." .. B, 1, true))
    end)
  end)

  -- both services mixed by priority (RFC 2782: the lowest first;
  -- XEP-0368 §3 merges _xmpps-server with _xmpp-server records): both
  -- records reach other.test, the kind of the route's stream tells which
  -- was tried first
  for _, case in ipairs({ { direct_prio = 5, plain_prio = 10, direct = true },
                          { direct_prio = 20, plain_prio = 10, direct = false } }) do
    it(("with both services, tries the lower priority first (%s)"):format(case.direct and "direct TLS" or "STARTTLS"),
      function()
        through_dns(function(port, tls_port)
          return {
            ["_xmpps-server._tcp." .. B] = { SRV = { { case.direct_prio, 0, tls_port, "xmpps." .. B } } },
            ["_xmpp-server._tcp." .. B] = { SRV = { { case.plain_prio, 0, port, "xmpp." .. B } } },
            ["xmpps." .. B] = { A = { "127.0.0.1" } },
            ["xmpp." .. B] = { A = { "127.0.0.1" } } }
        end, function(out, log)
          assert.equal(case.direct, out.direct == true)
          if case.direct then
            assert.equal("xmpp-server", out.conn:tls_info().alpn)
          else
            assert.is_nil(out.conn:tls_info().alpn)
          end
          assert.truthy(log:find("_xmpps-server._tcp." .. B, 1, true))
          assert.truthy(log:find("_xmpp-server._tcp." .. B, 1, true))
        end)
      end)
  end
end)

-- a raw stream from `from` to other.test (dialback prefix declared)
-- after STARTTLS with certname's certificate -> it, the features after TLS
local function raw_tls(port, from, certname)
  return s2sh.raw_tls(port, { from = from, cert = certname, db = true })
end

-- the same, authenticated with SASL EXTERNAL ("good" names example.test)
local function raw_authenticated(port)
  local r = raw_tls(port, A, "good")
  s2sh.external(r, A)
  return r
end

describe("s2s: XEP-0220 §2.4 errors on the initiating side", function()
  it("<db:result type='error'/> with resource-constraint: one more connection, then queued stanzas bounce", function()
    run(function(list)
      local p = pki.get()
      local a = start(A, "wrongname", { s2s = { cafile = p.ca, dialback = true } })
      list[1] = a
      local b = start(B, "untrusted", { s2s = { cafile = p.ca, dialback = true } })
      list[2] = b
      -- other.test verifies no dialback key at all (no check may start;
      -- the option must be positive): it answers every claim type='error'
      -- with resource-constraint
      b.limits.s2s_checks = 0
      a:s2s_host(B, "127.0.0.1:" .. port_of(b, "s2s"))
      b:s2s_host(A, "127.0.0.1:" .. port_of(a, "s2s"))
      local connects = 0
      local connect_route = a.s2s.connect_route
      a.s2s.connect_route = function(fed, route)
        connects = connects + 1
        return connect_route(fed, route)
      end
      local alice = login(a, "alice", true)
      local got = serve.collect(alice, "message")
      alice:send(message("bob@" .. B .. "/r", "one", "e1"))
      alice:send(message("bob@" .. B .. "/r", "two", "e2"))
      assert.is_true(serve.until_true(function() return #got >= 2 end, T))
      for i, id in ipairs({ "e1", "e2" }) do
        assert.same({ id, "error" }, { got[i].attr.id, got[i].attr.type })
        -- "the Initiating Server MUST return queued stanzas to the
        -- respective senders with a <remote-server-timeout/> stanza error"
        assert.same({ "wait", "remote-server-timeout" }, { error_of(got[i]) })
      end
      -- resource-constraint: one new TCP connection, given up on the same error there
      assert.equal(2, connects)
      assert.is_nil(a.s2s.routes[B])             -- the next stanza tries again
    end)
  end)
end)

describe("s2s: bounds on one hostile stream", function()
  it("answers at most limits.s2s_verifies <db:verify/> questions a minute, then policy-violation", function()
    run(function(list)
      local b = start(B, "wrongname", { s2s = { cafile = pki.get().ca, dialback = true },
        limits = { s2s_verifies = 3 } })
      list[1] = b
      local r = raw_tls(port_of(b, "s2s"), A, "untrusted")
      local q = "<db:verify from='" .. A .. "' to='" .. B .. "' id='id%d'>" .. ("ab"):rep(32) .. "</db:verify>"
      for i = 1, 3 do
        r:send(q:format(i))
        local v = assert(r:stanza(T))
        assert.same({ "verify", "invalid", "id" .. i }, { v.name, v.attr.type, v.attr.id })
      end
      r:send(q:format(4))
      assert.equal("policy-violation", (r:stream_error(T)))
      -- another stream has its own count
      local r2 = raw_tls(port_of(b, "s2s"), A, "untrusted")
      r2:send(q:format(5))
      assert.equal("invalid", assert(r2:stanza(T)).attr.type)
    end)
  end)

  it("reads an authenticated stream no faster than limits.rate, as a client's", function()
    run(function(list)
      local b = start(B, "wrongname", { limits = { rate = 20000 } })
      list[1] = b
      local bob = login(b, "bob")
      local got = serve.collect(bob, "message")
      local r = raw_authenticated(port_of(b, "s2s"))
      local m = "<message from='alice@" .. A .. "/r' to='bob@" .. B .. "/r' type='chat'><body>flood</body></message>"
      local t0 = core.now()
      r:send(m:rep(4000))                          -- ~370 KB at once
      local incoming = next(b.s2s.incoming)
      assert.truthy(incoming, "no authenticated incoming stream")
      assert.is_true(serve.until_true(function() return incoming.pauses and incoming.pauses.rate end, T),
        "reading never paused")
      assert.is_true(serve.until_true(function() return #got > 0 end, T), "nothing delivered")
      -- about 20 KB a second are read (one read buffer over it at most):
      -- far fewer than 4000 messages
      local n, elapsed = #got, core.now() - t0
      assert.is_true(n * #m < (elapsed + 2) * 20000 + 65536, ("delivered %d messages in %.1f s"):format(n, elapsed))
      assert.is_true(n < 4000)
    end)
  end)
end)

describe("s2s: XEP-0344 (dialback over TLS)", function()
  it("a first dialback claim whose verified certificate names the domain is valid at once (§2.4)", function()
    run(function(list)
      local b = start(B, "wrongname", { s2s = { cafile = pki.get().ca, dialback = true } })
      list[1] = b
      -- example.test's "authoritative server" never answers: only the
      -- certificate can make the claim valid
      local held = {}
      local l = assert(net.listen("127.0.0.1", 0, function(c) held[#held + 1] = c end))
      list[2] = l
      b:s2s_host(A, "127.0.0.1:" .. l:port())
      local r = raw_tls(port_of(b, "s2s"), A, "good")
      r:send("<db:result from='" .. A .. "' to='" .. B .. "'>" .. ("ab"):rep(32) .. "</db:result>")
      local res = assert(r:stanza(T), "no answer to the claim")
      assert.same({ "result", "valid", B, A }, { res.name, res.attr.type, res.attr.from, res.attr.to })
      assert.equal(0, #held)                       -- no verification connection
      -- and the stream carries example.test's stanzas
      local bob = login(b, "bob")
      r:send("<message from='alice@" .. A .. "/r' to='bob@" .. B .. "/r' id='c1'><body>hi</body></message>")
      assert(serve.expect(bob, "message", function(m) return m.attr.id == "c1" end, T), "bob got nothing")
    end)
  end)

  it("a claim over a certificate that does not name the domain is still checked with its server", function()
    run(function(list)
      local b = start(B, "wrongname", { s2s = { cafile = pki.get().ca, dialback = true } })
      list[1] = b
      local held = {}
      local l = assert(net.listen("127.0.0.1", 0, function(c) held[#held + 1] = c end))
      list[2] = l
      b:s2s_host(A, "127.0.0.1:" .. l:port())
      local r = raw_tls(port_of(b, "s2s"), A, "untrusted")
      r:send("<db:result from='" .. A .. "' to='" .. B .. "'>" .. ("ab"):rep(32) .. "</db:result>")
      assert.is_true(serve.until_true(function() return #held == 1 end, T))
      assert.is_nil(r:stanza(0.1))                 -- waits for the authoritative server
      for _, c in ipairs(held) do c:abort() end
    end)
  end)
end)

describe("s2s: XEP-0178 §3, a receiving server that refuses our certificate after offering EXTERNAL", function()
  -- a raw receiving server playing other.test (as ejabberd 23.01 does, it
  -- offers EXTERNAL before it checks the certificate, then answers
  -- <failure/>); offer_db: whether its features offer dialback too.
  -- fn(r, alice, a) once example.test got the <failure/>
  local function refused(offer_db, fn)
    local raw = require "spec.support.raw"
    run(function(list)
      local p = pki.get()
      local a = start(A, "good", { s2s = { cafile = p.ca, dialback = true } })
      list[1] = a
      local conns = {}
      local l = assert(net.listen("127.0.0.1", 0, function(c) conns[#conns + 1] = raw.wrap(c) end))
      list[2] = l
      a:s2s_host(B, "127.0.0.1:" .. l:port())
      local alice = login(a, "alice", true)
      alice:send(message("bob@" .. B .. "/r", "first", "f1"))
      assert.is_true(serve.until_true(function() return conns[1] ~= nil end, T))
      local r = conns[1]
      local function open(id)
        while true do
          local ev = assert(r:next(T), "no header")
          if ev.open then break end
          assert(ev.tls, "unexpected event")
        end
        r:send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='" .. raw.NS_STREAMS ..
          "' xmlns:db='" .. s2sh.NS_DB .. "' from='" .. B .. "' to='" .. A .. "' id='" .. id .. "' version='1.0'>")
      end
      open("s1")
      r:send("<stream:features><starttls xmlns='" .. s2sh.NS_TLS .. "'><required/></starttls></stream:features>")
      assert.equal("starttls", assert(r:stanza(T)).name)
      r:send("<proceed xmlns='" .. s2sh.NS_TLS .. "'/>")
      local cert = p.certs.wrongname
      r.conn:starttls(assert(core.tls_context({ mode = "server", cert = cert.cert, key = cert.key })))
      open("s2")
      r:send("<stream:features><mechanisms xmlns='" .. s2sh.NS_SASL .. "'><mechanism>EXTERNAL</mechanism>" ..
        "</mechanisms>" .. (offer_db and ("<dialback xmlns='" .. s2sh.NS_DB_FEATURE .. "'><errors/></dialback>")
        or "") .. "</stream:features>")
      assert.equal("auth", assert(r:stanza(T)).name)
      r:send("<failure xmlns='" .. s2sh.NS_SASL .. "'><not-authorized/></failure>")
      fn(r, alice, a)
    end)
  end

  it("that offered dialback gets our claim on the same stream, and the route comes up when it is valid", function()
    refused(true, function(r, _, a)
      local claim = assert(r:stanza(T), "no dialback claim after the <failure/>")
      assert.same({ "result", s2sh.NS_DB, A, B }, { claim.name, claim.attr.xmlns, claim.attr.from, claim.attr.to })
      -- the key is example.test's for this stream: its server says so (XEP-0220 §2.3)
      local v = s2sh.raw_tls(port_of(a, "s2s"), { from = B, to = A, cert = "wrongname", db = true })
      v:send("<db:verify from='" .. B .. "' to='" .. A .. "' id='s2'>" .. claim:get_text() .. "</db:verify>")
      assert.equal("valid", assert(v:stanza(T)).attr.type)
      r:send("<db:result from='" .. B .. "' to='" .. A .. "' type='valid'/>")
      local m = assert(r:stanza(T), "the queued message did not come")
      assert.same({ "message", "f1" }, { m.name, m.attr.id })
      assert.is_true(a.s2s.routes[B].out.authenticated)
    end)
  end)

  it("that offered no dialback fails the route: what waited bounces with remote-server-not-found", function()
    refused(false, function(_, alice)
      local e = serve.expect(alice, "message", function(m) return m.attr.id == "f1" end, T)
      assert(e, "no bounce")
      assert.same({ "error", "remote-server-not-found" }, { e.attr.type, select(2, error_of(e)) })
    end)
  end)
end)

describe("s2s: documentation", function()
  it("lists limits.s2s_verifies with its default in docs/server.md", function()
    local f = assert(io.open("docs/server.md"))
    local doc = f:read("*a")
    f:close()
    local n = require("lxmpp.server").DEFAULT_LIMITS.s2s_verifies
    assert.truthy(doc:find("| `s2s_verifies` | " .. n .. " |", 1, true))
  end)
end)

describe("s2s: bounces between two embedded servers", function()
  it("a message between two missing accounts bounces once, and the bounce is never answered", function()
    run(function(list)
      local a, b = start(A, "good"), start(B, "wrongname")
      list[1], list[2] = a, b
      a:s2s_host(B, "127.0.0.1:" .. port_of(b, "s2s"))
      b:s2s_host(A, "127.0.0.1:" .. port_of(a, "s2s"))
      -- every stanza each server sends the other
      local sent = { [A] = {}, [B] = {} }
      for _, srv in ipairs({ a, b }) do
        local send = srv.s2s.send
        srv.s2s.send = function(fed, s, host)
          local t = sent[srv.domain]
          t[#t + 1] = s.name .. "/" .. tostring(s.attr.type)
          return send(fed, s, host)
        end
      end
      -- ghost@other.test (no such account) to nobody@example.test (none either)
      local m = message("nobody@" .. A .. "/r", "anyone?", "g1")
      m.attr.from = "ghost@" .. B .. "/r"
      b:route(m)
      assert.is_true(serve.until_true(function() return #sent[A] >= 1 end, T), "no bounce")
      lxmpp.sleep(0.3 * slow.factor)
      assert.same({ "message/chat" }, sent[B])       -- the message, nothing after the bounce
      assert.same({ "message/error" }, sent[A])      -- exactly one bounce
    end)
  end)
end)
