-- Federation (server/s2s.lua, s2s_out.lua, s2s_in.lua): two embedded
-- servers in one process on loopback, example.test and other.test, each
-- with a certificate of the suite's CA for its domain, route stanzas to
-- each other over jabber:server streams (STARTTLS, SASL EXTERNAL);
-- routes that fail bounce what waited with the right condition; raw
-- hostile server streams get the stream errors RFC 6120 names.
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local net = require "lxmpp.net"
local st = require "lxmpp.stanza"
local pki = require "spec.support.pki"
local raw = require "spec.support.raw"
local serve = require "spec.support.serve"
local clean = require "spec.support.clean"
local slow = require "spec.support.slow"
local s2sh = require "spec.support.s2s"

local A, B = s2sh.A, s2sh.B
local NS_TLS, NS_SASL = s2sh.NS_TLS, s2sh.NS_SASL
local port_of, login, message, condition = s2sh.port_of, s2sh.login, s2sh.message, s2sh.condition

-- A started server of domain with certificate certname ("good" names
-- example.test, "wrongname" other.test); extra: options on top.
local function start(domain, certname, extra)
  return s2sh.start(domain, certname, nil, extra)
end

-- Runs fn(a, b) with example.test (a) and other.test (b) federating;
-- ea, eb: extra options of each.
local function two(fn, ea, eb)
  s2sh.two(fn, { A, (ea or {}).cert_name or "good", nil, ea and ea.opts },
    { B, (eb or {}).cert_name or "wrongname", nil, eb and eb.opts })
end

-- the bounce of the stanza with this id, on c
local function bounce_of(c, id, timeout)
  return serve.expect(c, "message", function(m) return m.attr.id == id and m.attr.type == "error" end,
    timeout or 5 * slow.factor)
end

describe("s2s: two embedded servers", function()
  it("route messages both ways over certificate-authenticated streams", function()
    two(function(a, b)
      local alice, bob = login(a, "alice"), login(b, "bob")
      alice:send(message("bob@" .. B .. "/r", "hello from A", "m1"))
      local got = serve.expect(bob, "message", function(m) return m.attr.id == "m1" end, 5 * slow.factor)
      assert(got, "bob did not get alice's message")
      assert.equal("alice@" .. A .. "/r", got.attr.from)
      assert.equal("hello from A", got:get_child_text("body"))
      assert.is_nil(got.attr.xmlns)
      -- the outgoing stream is ours: only alice's connection counts for
      -- 127.0.0.1 at example.test, and nothing is unauthenticated
      assert.equal(1, a.per_ip["127.0.0.1"])
      assert.equal(0, a:stats().unauthenticated)
      bob:send(message("alice@" .. A .. "/r", "hello from B", "m2"))
      got = serve.expect(alice, "message", function(m) return m.attr.id == "m2" end, 5 * slow.factor)
      assert(got, "alice did not get bob's reply")
      assert.equal("bob@" .. B .. "/r", got.attr.from)
      -- a route each way (other.test's over the stream example.test opened:
      -- XEP-0288, spec/server_s2s_bidi_spec.lua)
      assert.is_true(a.s2s.routes[B].ready)
      assert.is_true(b.s2s.routes[A].ready)
    end)
  end)

  it("route over direct TLS (XEP-0368) to an s2s_tls_listen port, \"tls:IP:PORT\" in s2s.hosts", function()
    two(function(a, b)
      a:s2s_host(B, "tls:127.0.0.1:" .. port_of(b, "s2s-tls"))
      local alice, bob = login(a, "alice"), login(b, "bob")
      alice:send(message("bob@" .. B .. "/r", "direct", "t1"))
      local got = serve.expect(bob, "message", function(m) return m.attr.id == "t1" end, 5 * slow.factor)
      assert(got, "bob did not get alice's message")
      assert.is_true(a.s2s.routes[B].out.direct)
      assert.is_true(a.s2s.routes[B].out.authenticated)      -- EXTERNAL over the direct TLS
      assert.equal("xmpp-server", a.s2s.routes[B].out.conn:tls_info().alpn)   -- XEP-0368 §3
    end, nil, { opts = { s2s_tls_listen = "127.0.0.1:0" } })
  end)

  it("bounce a stanza for a missing account back to the remote sender, never an error", function()
    two(function(a, b)
      local bob = login(b, "bob")
      local got = serve.collect(bob, "message")
      bob:send(st.message({ to = "nobody@" .. A .. "/r", type = "error", id = "x0" }))
      bob:send(message("nobody@" .. A .. "/r", "anyone?", "x1"))
      assert.is_true(serve.until_true(function() return #got >= 1 end, 5 * slow.factor))
      lxmpp.sleep(0.2)
      assert.equal(1, #got)
      assert.equal("x1", got[1].attr.id)
      assert.equal("error", got[1].attr.type)
      assert.equal("service-unavailable", condition(got[1]))
      assert.equal("nobody@" .. A .. "/r", got[1].attr.from)
      assert.is_true(a.s2s.routes[B].ready)      -- the bounce went back over a route of its own
    end)
  end)

  it("carry a presence subscription and then presence across domains (RFC 6121 §3, §4)", function()
    two(function(a, b)
      local alice, bob = login(a, "alice"), login(b, "bob")
      local to_alice = serve.collect(alice, "presence")
      local to_bob = serve.collect(bob, "presence")
      alice:send(st.presence())
      bob:send(st.presence())
      alice:send(st.presence({ to = "bob@" .. B, type = "subscribe" }))
      assert.is_true(serve.until_true(function()
        for _, p in ipairs(to_bob) do
          if p.attr.type == "subscribe" and p.attr.from == "alice@" .. A then return true end
        end
      end, 5 * slow.factor), "bob got no subscription request; pending: " ..
        tostring(b.store:get_pending("bob", "alice@" .. A)) .. " route " .. tostring(a.s2s.routes[B]))
      bob:send(st.presence({ to = "alice@" .. A, type = "subscribed" }))
      bob:send(st.presence())                       -- a new broadcast: goes to alice, now subscribed
      assert.is_true(serve.until_true(function()
        for _, p in ipairs(to_alice) do
          if p.attr.from == "bob@" .. B .. "/r" and p.attr.type == nil then return true end
        end
      end, 5 * slow.factor), "alice did not get bob's presence")
      -- both rosters say so (RFC 6121 §3.1.5, §3.1.6)
      assert.equal("from", b.store:get_roster_item("bob", "alice@" .. A).subscription)
      assert.is_true(serve.until_true(function()
        local it = a.store:get_roster_item("alice", "bob@" .. B)
        return it and it.subscription == "to"
      end))
    end)
  end)

  it("queue what is sent while the route comes up, and deliver it in order", function()
    two(function(a, b)
      local alice, bob = login(a, "alice"), login(b, "bob")
      local got = serve.collect(bob, "message")
      for i = 1, 5 do alice:send(message("bob@" .. B .. "/r", "n" .. i, "q" .. i)) end
      assert.is_true(serve.until_true(function() return #got >= 5 end, 5 * slow.factor))
      for i = 1, 5 do assert.equal("n" .. i, got[i]:get_child_text("body")) end
    end)
  end)

  it("close an idle route, and open a new one for the next stanza", function()
    two(function(a, b)
      local alice, bob = login(a, "alice"), login(b, "bob")
      alice:send(message("bob@" .. B .. "/r", "one", "i1"))
      assert(serve.expect(bob, "message", function(m) return m.attr.id == "i1" end, 5 * slow.factor))
      local first = a.s2s.routes[B]
      assert.is_true(serve.until_true(function()
        return a.s2s.routes[B] == nil and next(b.s2s.incoming) == nil
      end, 5 * slow.factor), "the idle route was not closed")
      alice:send(message("bob@" .. B .. "/r", "two", "i2"))
      assert(serve.expect(bob, "message", function(m) return m.attr.id == "i2" end, 5 * slow.factor))
      assert.is_not.equal(first, a.s2s.routes[B])
    end, { opts = { limits = { s2s_idle = 1 } } })
  end)
end)

describe("s2s: DNS", function()
  it("finds the remote server through its _xmpp-server._tcp SRV record (RFC 6120 §3.2.1)", function()
    local dnsd = require "spec.support.dnsd"
    local resolve = require "lxmpp.resolve"
    local d
    -- dnsd must stop whatever happens (its pipe would keep busted waiting)
    local run_ok, run_err = pcall(lxmpp.run, function()
      local b = start(B, "wrongname")
      d = dnsd.start({
        ["_xmpp-server._tcp." .. B] = { SRV = { { 10, 0, port_of(b, "s2s"), "xmpp." .. B } } },
        ["xmpp." .. B] = { A = { "127.0.0.1" } },
      })
      resolve.configure({ servers = d.addr, timeout = 1, tries = 2 })
      local a = start(A, "good")               -- no s2s.hosts entry for other.test
      b:s2s_host(A, "127.0.0.1:" .. port_of(a, "s2s"))
      local ok, err = pcall(function()
        local alice, bob = login(a, "alice"), login(b, "bob")
        alice:send(message("bob@" .. B .. "/r", "found you", "s1"))
        assert(serve.expect(bob, "message", function(m) return m.attr.id == "s1" end, 5 * slow.factor))
        local f = assert(io.open(d.log))
        local log = f:read("*a")
        f:close()
        assert.truthy(log:find("_xmpp-server._tcp." .. B, 1, true))
      end)
      require("spec.support.clients").kill_all()
      net.abort_all()
      a:stop()
      b:stop()
      resolve.set_servers(nil)
      lxmpp.sleep(0.05)
      if not ok then error(err, 0) end
    end)
    dnsd.stop(d)
    if not run_ok then error(run_err, 0) end
    clean()
  end)
end)

-- srv:stop() while a lookup of the server's waits on a DNS server that
-- never answers (5 s and 2 tries: c-ares alone would keep the loop for 15
-- s): start() makes the server, provoke(srv) makes it ask for the SRV name
-- `asked`; lxmpp.run must return at once after stop(), with no query, timer
-- or socket of the lookup left.
local function stop_during_silent_lookup(asked, start_server, provoke)
  local dnsd = require "spec.support.dnsd"
  local resolve = require "lxmpp.resolve"
  local d = dnsd.start({}, "--silent")
  local stopped_at
  local run_ok, run_err = pcall(lxmpp.run, function()
    resolve.configure({ servers = d.addr, timeout = 5, tries = 2 })
    local srv = start_server()
    local ok, err = pcall(function()
      provoke(srv)
      local f = assert(io.open(d.log))
      local log = f:read("*a")
      f:close()
      assert.truthy(log:find(asked, 1, true), "no SRV query was sent")
    end)
    require("spec.support.clients").kill_all()
    net.abort_all()
    srv:stop()
    stopped_at = core.now()
    if not ok then error(err, 0) end
  end)
  local took = stopped_at and core.now() - stopped_at
  resolve.set_servers(nil)
  dnsd.stop(d)
  if not run_ok then error(run_err, 0) end
  assert.is_true(took < 1 * slow.factor, "run took " .. tostring(took) .. " s after stop()")
  clean()
end

describe("s2s: DNS that never answers", function()
  it("ends at srv:stop() while the route's lookup waits: run returns at once, far before c-ares' timeout", function()
    stop_during_silent_lookup("_xmpp-server._tcp." .. B, function()
      return start(A, "good", { limits = { s2s_timeout = 60 } })    -- no s2s.hosts entry for other.test
    end, function(a)
      local alice = login(a, "alice")
      alice:send(message("bob@" .. B, "hi", "d1"))
      lxmpp.sleep(0.3)
      local route = a.s2s.routes[B]
      assert.truthy(route and route.task and not route.out, "the route is not resolving")
    end)
  end)
end)

describe("s2s: failing routes bounce what waited", function()
  it("with remote-server-not-found when nothing listens, and never bounce an error", function()
    lxmpp.run(function()
      local a = start(A, "good")
      local l = assert(net.listen("127.0.0.1", 0, function(c) c:abort() end))
      local dead = l:port()
      l:close()
      a:s2s_host(B, "127.0.0.1:" .. dead)
      local ok, err = pcall(function()
        local alice = login(a, "alice")
        local got = serve.collect(alice, "message")
        alice:send(st.message({ to = "bob@" .. B, type = "error", id = "e1" }):tag("body"):text("x"):up())
        alice:send(message("bob@" .. B, "hi", "n1"))
        local m = bounce_of(alice, "n1")
        assert(m, "no bounce")
        assert.equal("remote-server-not-found", condition(m))
        assert.equal("bob@" .. B, m.attr.from)
        lxmpp.sleep(0.2)
        for _, s in ipairs(got) do assert.is_not.equal("e1", s.attr.id) end
        -- the failed route is gone: the next stanza tries again (and bounces again)
        assert.is_nil(a.s2s.routes[B])
        alice:send(st.iq({ to = B, type = "get", id = "q1" }):tag("query", { xmlns = "jabber:iq:version" }):up())
        local r = serve.expect(alice, "iq", function(s) return s.attr.id == "q1" end, 5 * slow.factor)
        assert.equal("remote-server-not-found", condition(r))
      end)
      require("spec.support.clients").kill_all()
      net.abort_all()
      a:stop()
      lxmpp.sleep(0.05)
      if not ok then error(err, 0) end
    end)
    clean()
  end)

  it("with remote-server-timeout when the peer never answers, past the queue bound with resource-constraint",
  function()
    lxmpp.run(function()
      local a = start(A, "good", { limits = { s2s_timeout = 1 * slow.factor, s2s_queue = 2 } })
      local held = {}
      local l = assert(net.listen("127.0.0.1", 0, function(c) held[#held + 1] = c end))  -- accepts, says nothing
      a:s2s_host(B, "127.0.0.1:" .. l:port())
      local ok, err = pcall(function()
        local alice = login(a, "alice")
        local got = serve.collect(alice, "message")
        local function cond_of(id)
          for _, m in ipairs(got) do
            if m.attr.id == id and m.attr.type == "error" then return condition(m) end
          end
        end
        for i = 1, 4 do alice:send(message("bob@" .. B, "m" .. i, "t" .. i)) end
        assert.is_true(serve.until_true(function() return cond_of("t3") and cond_of("t4") end))
        assert.equal("resource-constraint", cond_of("t3"))
        assert.equal("resource-constraint", cond_of("t4"))
        assert.is_nil(cond_of("t1"))
        assert.is_true(serve.until_true(function() return cond_of("t1") and cond_of("t2") end, 5 * slow.factor))
        assert.equal("remote-server-timeout", cond_of("t1"))
        assert.equal("remote-server-timeout", cond_of("t2"))
      end)
      require("spec.support.clients").kill_all()
      net.abort_all()
      l:close()
      a:stop()
      lxmpp.sleep(0.05)
      if not ok then error(err, 0) end
    end)
    clean()
  end)

  it("past limits.s2s_routes remote domains at once, with resource-constraint", function()
    lxmpp.run(function()
      local a = start(A, "good", { limits = { s2s_routes = 2 } })
      local held = {}
      local l = assert(net.listen("127.0.0.1", 0, function(c) held[#held + 1] = c end))  -- accepts, says nothing
      for i = 1, 3 do a:s2s_host("d" .. i .. ".test", "127.0.0.1:" .. l:port()) end
      local ok, err = pcall(function()
        local alice = login(a, "alice")
        local got = serve.collect(alice, "message")
        for i = 1, 3 do alice:send(message("bob@d" .. i .. ".test", "hi", "r" .. i)) end
        assert.is_true(serve.until_true(function() return #got >= 1 end))
        lxmpp.sleep(0.1)
        assert.equal(1, #got)
        assert.same({ "r3", "resource-constraint" }, { got[1].attr.id, condition(got[1]) })
        assert.equal(2, a.s2s.nroutes)
      end)
      require("spec.support.clients").kill_all()
      net.abort_all()
      l:close()
      a:stop()
      lxmpp.sleep(0.05)
      if not ok then error(err, 0) end
    end)
    clean()
  end)

  it("end at srv:stop() even while the TCP connect hangs", function()
    -- a listener whose accept queue is full: Linux drops further SYNs, so
    -- a connect to it waits (loopback only)
    local socket = require "socket"
    local l = assert(socket.tcp())
    assert(l:bind("127.0.0.1", 0))
    assert(l:listen(0))
    local _, lport = l:getsockname()
    local fill = {}
    for i = 1, 3 do
      fill[i] = socket.tcp()
      fill[i]:settimeout(0)
      fill[i]:connect("127.0.0.1", lport)
    end
    local stopped_at
    local ok, err = pcall(lxmpp.run, function()
      local a = start(A, "good", { limits = { s2s_timeout = 60 } })
      a:s2s_host(B, "127.0.0.1:" .. lport)
      local inner_ok, inner_err = pcall(function()
        local alice = login(a, "alice")
        alice:send(message("bob@" .. B, "hi", "h1"))
        lxmpp.sleep(0.3)
        local route = a.s2s.routes[B]
        assert.truthy(route and route.task and not route.out, "the route is not connecting")
      end)
      require("spec.support.clients").kill_all()
      net.abort_all()
      a:stop()
      stopped_at = core.now()
      if not inner_ok then error(inner_err, 0) end
    end)
    for _, c in ipairs(fill) do c:close() end
    l:close()
    if not ok then error(err, 0) end
    -- lxmpp.run returned: no connect attempt or timer of the route was left
    assert.is_true(core.now() - stopped_at < 5)
    clean()
  end)

  it("with remote-server-not-found when the remote certificate does not verify", function()
    two(function(a, b)
      local alice = login(a, "alice")
      alice:send(message("bob@" .. B .. "/r", "hi", "c1"))
      assert.equal("remote-server-not-found", condition(bounce_of(alice, "c1")))
      assert.is_nil(b.s2s.routes[A])
    end, nil, { cert_name = "untrusted" })     -- other.test serves example.test's certificate of an unknown CA
  end)

  it("when our certificate does not name our domain: the peer offers no EXTERNAL", function()
    two(function(a, b)
      local alice = login(a, "alice", true)     -- (its c2s certificate is the wrong one too)
      alice:send(message("bob@" .. B .. "/r", "hi", "c2"))
      assert.equal("remote-server-not-found", condition(bounce_of(alice, "c2")))
      assert.is_nil(next(b.s2s.incoming))
    end, { cert_name = "wrongname" })           -- example.test shows other.test's certificate
  end)
end)

---------------------------------------------------------------------------
-- raw hostile server streams against other.test

local function s2s_header(from, to)
  return s2sh.header(from, to)
end

-- A raw server stream to port claiming domain `from`, through STARTTLS with
-- certificate certname; returns it and the features after TLS. to: the
-- server's domain (default other.test).
local function raw_tls(port, from, certname, to)
  local r, f = s2sh.raw_tls(port, { from = from, to = to, cert = certname, check_starttls = true })
  return r, f
end

-- ... and authenticated as example.test with its certificate
local function raw_authenticated(port)
  local r, f = raw_tls(port, A, "good")
  local mechs = f:get_child("mechanisms", NS_SASL)
  assert.equal("EXTERNAL", mechs and mechs:get_child_text("mechanism"))
  s2sh.external(r, A)
  return r
end

describe("s2s: hostile server streams", function()
  local function with_b(fn)
    s2sh.one(fn, { B, "wrongname", nil, { muc = "rooms." .. B } })
  end

  it("a stanza from another domain than the authenticated one gets invalid-from", function()
    with_b(function(b, port)
      local bob = login(b, "bob")
      local got = serve.collect(bob, "message")
      local r = raw_authenticated(port)
      r:send("<message from='alice@" .. A .. "/x' to='bob@" .. B .. "/r' id='ok1'><body>fine</body></message>")
      r:send("<message from='mallory@evil.test/x' to='bob@" .. B .. "/r' id='bad1'><body>spoof</body></message>")
      assert.equal("invalid-from", (r:stream_error()))
      assert.is_true(serve.until_true(function() return #got >= 1 end))
      lxmpp.sleep(0.1)
      assert.equal(1, #got)
      assert.equal("ok1", got[1].attr.id)
      assert.equal("alice@" .. A .. "/x", got[1].attr.from)
    end)
  end)

  it("a stanza to a domain not served here gets host-unknown (no relaying)", function()
    with_b(function(_, port)
      local r = raw_authenticated(port)
      r:send("<message from='alice@" .. A .. "' to='someone@third.test' id='r1'><body>relay me</body></message>")
      assert.equal("host-unknown", (r:stream_error()))
    end)
  end)

  it("a stanza without from gets improper-addressing", function()
    with_b(function(_, port)
      local r = raw_authenticated(port)
      r:send("<message to='bob@" .. B .. "' id='r2'><body>who?</body></message>")
      assert.equal("improper-addressing", (r:stream_error()))
    end)
  end)

  it("a stanza before authentication gets not-authorized", function()
    with_b(function(_, port)
      local r = raw_tls(port, A, "good")
      r:send("<message from='alice@" .. A .. "' to='bob@" .. B .. "' id='r3'><body>early</body></message>")
      assert.equal("not-authorized", (r:stream_error()))
    end)
  end)

  it("a certificate that does not name the header's domain gets no EXTERNAL", function()
    with_b(function(_, port)
      -- example.test's certificate, claiming to be third.test
      local r, f = raw_tls(port, "third.test", "good")
      assert.is_nil(f:get_child("mechanisms", NS_SASL))
      r:send("<auth xmlns='" .. NS_SASL .. "' mechanism='EXTERNAL'>=</auth>")
      local fail = assert(r:stanza())
      assert.equal("failure", fail.name)
      assert.truthy(fail:get_child("not-authorized"))
    end)
  end)

  -- RFC 6125 (and RFC 6120 §13.7.1.4) on the receiving side, through
  -- conn:tls_peer_is: which client certificates let a peer claim which domain
  local CERTS = {
    { "good", A, true },
    { "good", "third.test", false },
    { "xmppaddr", A, true },              -- an id-on-xmppAddr SAN only
    { "wildcard", "a.example.test", true },
    { "wildcard", A, false },             -- *.example.test does not cover example.test
    { "wildcard", "b.a.example.test", false },
    { "partial", "c1.example.test", false },  -- no partial wildcards
    { "cn_other_san", A, false },         -- the CN does not count once there is a SAN
    { "cn_other_san", "other2.test", false },
    { "expired", A, false },
    { "notyet", A, false },
    { "untrusted", A, false },
    { "selfsigned", A, false },
  }
  for _, c in ipairs(CERTS) do
    local certname, claim, ok = c[1], c[2], c[3]
    it(("the certificate %s %s EXTERNAL for %s"):format(certname, ok and "gets" or "gets no", claim), function()
      with_b(function(_, port)
        local r, f = raw_tls(port, claim, certname)
        local mechs = f:get_child("mechanisms", NS_SASL)
        assert.equal(ok and "EXTERNAL" or nil, mechs and mechs:get_child_text("mechanism"))
        r:send("<auth xmlns='" .. NS_SASL .. "' mechanism='EXTERNAL'>=</auth>")
        assert.equal(ok and "success" or "failure", assert(r:stanza()).name)
      end)
    end)
  end

  it("an authorization identity other than the domain gets invalid-authzid", function()
    with_b(function(_, port)
      local r = raw_tls(port, A, "good")
      r:send("<auth xmlns='" .. NS_SASL .. "' mechanism='EXTERNAL'>" .. core.base64_encode("third.test") .. "</auth>")
      local fail = assert(r:stanza())
      assert.equal("failure", fail.name)
      assert.truthy(fail:get_child("invalid-authzid"))
    end)
  end)

  it("a header from a domain served here, or without from, gets invalid-from", function()
    with_b(function(_, port)
      local r = raw.connect(port)
      r:send(s2s_header(B))
      assert.equal("invalid-from", (r:stream_error()))
      r = raw.connect(port)
      r:send(s2s_header("rooms." .. B))              -- our MUC service
      assert.equal("invalid-from", (r:stream_error()))
      r = raw.connect(port)
      r:send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='" .. raw.NS_STREAMS ..
        "' to='" .. B .. "' version='1.0'>")
      assert.equal("invalid-from", (r:stream_error()))
    end)
  end)

  it("server connections count against max_per_ip, refused in a jabber:server stream", function()
    lxmpp.run(function()
      local b = start(B, "wrongname", { limits = { max_per_ip = 1 } })
      local ok, err = pcall(function()
        local port = port_of(b, "s2s")
        local r1 = raw.connect(port)
        r1:send(s2s_header(A))
        assert.truthy(r1:next().open)
        local r2 = raw.connect(port)
        local open = r2:next().open
        assert.equal("jabber:server", open and open.xmlns)
        assert.equal("policy-violation", (r2:stream_error()))
      end)
      net.abort_all()
      b:stop()
      lxmpp.sleep(0.05)
      if not ok then error(err, 0) end
    end)
    clean()
  end)

  it("STARTTLS is required: plaintext <auth/> is refused", function()
    with_b(function(_, port)
      local r = raw.connect(port)
      r:send(s2s_header(A))
      assert.truthy(r:next().open)
      assert.truthy(assert(r:stanza()):get_child("starttls", NS_TLS))
      r:send("<auth xmlns='" .. NS_SASL .. "' mechanism='EXTERNAL'>=</auth>")
      assert.equal("unsupported-stanza-type", (r:stream_error()))
    end)
  end)
end)

---------------------------------------------------------------------------
-- Server Dialback (XEP-0220), where certificates do not verify


-- options of a server with dialback on (s2s.cafile as start() gives it)
local function with_dialback(cert_name, extra)
  local opts = { s2s = { cafile = pki.get().ca, dialback = true } }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return { cert_name = cert_name, opts = opts }
end

describe("s2s: Server Dialback", function()
  it("authenticates both ways when neither certificate names its domain", function()
    two(function(a, b)
      local alice, bob = login(a, "alice", true), login(b, "bob", true)
      alice:send(message("bob@" .. B .. "/r", "by dialback", "d1"))
      local got = serve.expect(bob, "message", function(m) return m.attr.id == "d1" end, 5 * slow.factor)
      assert(got, "bob did not get alice's message")
      assert.equal("alice@" .. A .. "/r", got.attr.from)
      bob:send(message("alice@" .. A .. "/r", "back", "d2"))
      assert(serve.expect(alice, "message", function(m) return m.attr.id == "d2" end, 5 * slow.factor))
      assert.is_true(a.s2s.routes[B].out.authenticated)
    end, with_dialback("wrongname"), with_dialback("untrusted"))
  end)

  it("is not used unless s2s.dialback is set on the receiving side", function()
    two(function(a)
      local alice = login(a, "alice", true)
      alice:send(message("bob@" .. B .. "/r", "hi", "d3"))
      assert.equal("remote-server-not-found", condition(bounce_of(alice, "d3", 5 * slow.factor)))
    end, with_dialback("wrongname"))
  end)

  it("refuses a forged key: the authoritative server says invalid", function()
    two(function(_, b)
      local bob = login(b, "bob")
      local got = serve.collect(bob, "message")
      -- claims example.test, with example.test's certificate of an unknown CA
      local r, f = raw_tls(port_of(b, "s2s"), A, "untrusted")
      assert.truthy(f:get_child("dialback", "urn:xmpp:features:dialback"))
      assert.is_nil(f:get_child("mechanisms", NS_SASL))
      r:send("<db:result xmlns:db='jabber:server:dialback' from='" .. A .. "' to='" .. B .. "'>" ..
        ("ab"):rep(32) .. "</db:result>")
      local res = assert(r:stanza(5 * slow.factor))
      assert.same({ "result", "invalid" }, { res.name, res.attr.type })
      r:send("<message from='alice@" .. A .. "' to='bob@" .. B .. "/r' id='f1'><body>late</body></message>")
      assert.is_true(r:wait_closed())
      assert.is_nil(next(b.s2s.incoming))
      lxmpp.sleep(0.1)
      assert.equal(0, #got)
    end, with_dialback("good"), with_dialback("wrongname"))
  end)

  it("answers the authoritative server's question with the key it made, and only that one", function()
    two(function(a, b)
      local r = raw_tls(port_of(a, "s2s"), B, "untrusted", A)
      local key = a.s2s:dialback_key(B, A, "stream-1")
      local q = "<db:verify xmlns:db='jabber:server:dialback' from='" .. B .. "' to='" .. A .. "' id='%s'>%s</db:verify>"
      r:send(q:format("stream-1", key))
      local v = assert(r:stanza())
      assert.same({ "verify", "valid", "stream-1", A, B }, { v.name, v.attr.type, v.attr.id, v.attr.from, v.attr.to })
      r:send(q:format("stream-2", key))             -- the key of another stream
      assert.equal("invalid", assert(r:stanza()).attr.type)
      r:send(q:format("stream-1", b.s2s:dialback_key(B, A, "stream-1")))   -- another server's secret
      assert.equal("invalid", assert(r:stanza()).attr.type)
    end, with_dialback("good"), with_dialback("wrongname"))
  end)

  it("answers error when the authoritative server cannot be reached", function()
    lxmpp.run(function()
      local b = start(B, "wrongname", { s2s = { cafile = pki.get().ca, dialback = true } })
      local l = assert(net.listen("127.0.0.1", 0, function(c) c:abort() end))
      b:s2s_host(A, "127.0.0.1:" .. l:port())
      l:close()
      local ok, err = pcall(function()
        local r = raw_tls(port_of(b, "s2s"), A, "untrusted")
        r:send("<db:result xmlns:db='jabber:server:dialback' from='" .. A .. "' to='" .. B .. "'>" ..
          ("ab"):rep(32) .. "</db:result>")
        local res = assert(r:stanza(5 * slow.factor))
        assert.equal("error", res.attr.type)
        local e = res.tags[1]
        assert.equal("error", e and e.name)
        assert.equal("remote-server-not-found", e.tags[1] and e.tags[1].name)
      end)
      net.abort_all()
      b:stop()
      lxmpp.sleep(0.05)
      if not ok then error(err, 0) end
    end)
    clean()
  end)

  it("ends its check of a key at srv:stop() while the authoritative server's lookup gets no answer", function()
    stop_during_silent_lookup("_xmpp-server._tcp." .. A, function()
      -- no s2s.hosts entry for example.test: the check looks it up
      return start(B, "wrongname", { s2s = { cafile = pki.get().ca, dialback = true } })
    end, function(b)
      local r = raw_tls(port_of(b, "s2s"), A, "untrusted")
      r:send("<db:result xmlns:db='jabber:server:dialback' from='" .. A .. "' to='" .. B .. "'>" ..
        ("ab"):rep(32) .. "</db:result>")
      lxmpp.sleep(0.3)
      assert.equal(1, b.s2s.nchecks, "no check under way")
    end)
  end)

  it("is refused before TLS", function()
    lxmpp.run(function()
      local a = start(A, "good", { s2s = { cafile = pki.get().ca, dialback = true } })
      local ok, err = pcall(function()
        local r = raw.connect(port_of(a, "s2s"))
        r:send(s2s_header(B, A))
        assert.truthy(r:next().open)
        assert(r:stanza())
        r:send("<db:verify xmlns:db='jabber:server:dialback' from='" .. B .. "' to='" .. A .. "' id='x'>ab</db:verify>")
        assert.equal("unsupported-stanza-type", (r:stream_error()))
      end)
      net.abort_all()
      a:stop()
      lxmpp.sleep(0.05)
      if not ok then error(err, 0) end
    end)
    clean()
  end)
end)
