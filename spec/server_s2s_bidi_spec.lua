-- XEP-0288 bidirectional server-to-server streams (server/s2s_in.lua,
-- s2s_out.lua, fed:bidi_route in s2s.lua): the receiving server offers
-- <bidi/>, the initiating one asks for it before authenticating, and the
-- one TCP connection then carries both servers' stanzas. Two embedded
-- servers on loopback, a raw hostile initiating server and a raw hostile
-- receiving server (a listener the spec drives).
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local net = require "lxmpp.net"
local pki = require "spec.support.pki"
local raw = require "spec.support.raw"
local serve = require "spec.support.serve"
local clean = require "spec.support.clean"
local slow = require "spec.support.slow"

local s2sh = require "spec.support.s2s"

local A, B = s2sh.A, s2sh.B
local NS_TLS, NS_SASL = s2sh.NS_TLS, s2sh.NS_SASL
local NS_BIDI, NS_BIDI_FEATURE = s2sh.NS_BIDI, s2sh.NS_BIDI_FEATURE
local T = 5 * slow.factor
local port_of, start, condition = s2sh.port_of, s2sh.start, s2sh.condition

-- fn(a, b) with example.test (certificate ca, s2s settings sa) and
-- other.test (cb, sb) knowing where the other is
local function two(fn, ca, sa, cb, sb)
  s2sh.two(fn, { A, ca or "good", sa }, { B, cb or "wrongname", sb })
end

local function login(srv, user)
  return s2sh.login(srv, user, true)
end

local function message(to, id, from)
  return s2sh.message(to, "hi", id, from)
end

local function got(c, id)
  return serve.expect(c, "message", function(m) return m.attr.id == id end, T)
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

-- one exchange each way; returns what each server's route to the other is
local function both_ways(a, b)
  local alice, bob = login(a, "alice"), login(b, "bob")
  alice:send(message("bob@" .. B .. "/r", "m1"))
  assert(got(bob, "m1"), "bob did not get alice's message")
  bob:send(message("alice@" .. A .. "/r", "m2"))
  local back = got(alice, "m2")
  assert(back, "alice did not get bob's answer")
  assert.equal("bob@" .. B .. "/r", back.attr.from)
  return a.s2s.routes[B], b.s2s.routes[A], alice, bob
end

describe("s2s: XEP-0288 bidirectional streams", function()
  it("carry both servers' stanzas over the one connection example.test opened", function()
    two(function(a, b)
      local ra, rb, alice, bob = both_ways(a, b)
      assert.is_true(ra.out.bidi)                      -- asked for
      assert.equal("s2sout", ra.out.kind)
      assert.is_true(rb.bidi)                          -- other.test's route is the stream from example.test
      assert.equal("s2sin", rb.out.kind)
      assert.equal(0, count(a.s2s.incoming))          -- other.test never connected to example.test
      assert.equal(1, count(b.s2s.incoming))
      -- the stream ending ends other.test's route with it; the next stanza connects again
      ra.out:close()
      assert.is_true(serve.until_true(function() return b.s2s.routes[A] == nil end, T))
      bob:send(message("alice@" .. A .. "/r", "m3"))
      assert(got(alice, "m3"))
      assert.equal("s2sout", b.s2s.routes[A].out.kind)
    end)
  end)

  it("also after dialback (neither certificate names its domain)", function()
    local db = { dialback = true }
    two(function(a, b)
      local ra, rb = both_ways(a, b)
      assert.is_true(ra.out.bidi)
      assert.equal("s2sin", rb.out.kind)
      assert.equal(0, count(a.s2s.incoming))
    end, "wrongname", db, "untrusted", { dialback = true })
  end)

  it("are not used when the receiving server does not offer them (s2s.bidi = false)", function()
    two(function(a, b)
      local ra, rb = both_ways(a, b)
      assert.is_nil(ra.out.bidi)
      assert.equal("s2sout", rb.out.kind)              -- other.test opened its own
      assert.equal(1, count(a.s2s.incoming))
    end, nil, nil, nil, { bidi = false })
  end)

  it("are not asked for when the initiating server has them off", function()
    two(function(a, b)
      local ra, rb = both_ways(a, b)
      assert.is_nil(ra.out.bidi)
      assert.equal("s2sout", rb.out.kind)
    end, nil, { bidi = false })
  end)
end)

---------------------------------------------------------------------------
-- a raw initiating server (claiming example.test) against other.test

local function s2s_header(from, to)
  return s2sh.header(from, to)
end

local function raw_tls(port)
  local r, f, _, f0 = s2sh.raw_tls(port, { from = A, to = B, cert = "good" })
  return r, f, f0
end

local function authenticate(r)
  s2sh.external(r, A, B)
end

-- fn(b, bob, port) with other.test, bob logged in, example.test unreachable
-- except through the raw streams the spec opens
local function with_b(fn, s2s)
  s2sh.with(function()
    local b = start(B, "wrongname", s2s)
    local l = assert(net.listen("127.0.0.1", 0, function(c) c:abort() end))
    b:s2s_host(A, "127.0.0.1:" .. l:port())
    l:close()
    return { b }, { b, port_of(b, "s2s") }
  end, function(b, port) fn(b, login(b, "bob"), port) end)
end

describe("s2s: XEP-0288, a raw initiating server", function()
  it("that asks for bidi before authenticating gets our stanzas to its domain over its stream", function()
    with_b(function(b, bob, port)
      local r, f, f0 = raw_tls(port)
      assert.is_nil(f0:get_child("bidi", NS_BIDI_FEATURE))       -- not offered before TLS
      assert.truthy(f:get_child("bidi", NS_BIDI_FEATURE))
      r:send("<bidi xmlns='" .. NS_BIDI .. "'/>")
      authenticate(r)
      bob:send(message("alice@" .. A .. "/r", "o1"))
      local m = assert(r:stanza(T))
      assert.same({ "message", "o1", "bob@" .. B .. "/r", "alice@" .. A .. "/r" },
        { m.name, m.attr.id, m.attr.from, m.attr.to })
      assert.is_true(b.s2s.routes[A].bidi)
      -- and its own stanzas still come in over it
      local to_bob = serve.collect(bob, "message")
      r:send("<message from='alice@" .. A .. "/r' to='bob@" .. B .. "/r' id='o2'><body>back</body></message>")
      assert.is_true(serve.until_true(function() return #to_bob == 1 end, T))
    end)
  end)

  it("that does not ask for it gets nothing over its stream: we connect ourselves", function()
    with_b(function(_, bob, port)
      local r = raw_tls(port)
      authenticate(r)
      bob:send(message("alice@" .. A .. "/r", "o3"))
      assert.equal("remote-server-not-found", condition(got(bob, "o3")))   -- example.test is unreachable
      assert.is_nil(r:stanza(0.2))
    end)
  end)

  it("that sends <bidi/> after authentication, or where it is not offered, gets a stream error", function()
    with_b(function(_, _, port)
      local r = raw_tls(port)
      authenticate(r)
      r:send("<bidi xmlns='" .. NS_BIDI .. "'/>")
      assert.equal("unsupported-stanza-type", (r:stream_error()))
      r = raw.connect(port)                                      -- before TLS
      r:send(s2s_header(A, B))
      assert.truthy(r:next().open)
      assert(r:stanza())
      r:send("<bidi xmlns='" .. NS_BIDI .. "'/>")
      assert.equal("unsupported-stanza-type", (r:stream_error()))
    end)
    with_b(function(_, _, port)
      local r, f = raw_tls(port)
      assert.is_nil(f:get_child("bidi", NS_BIDI_FEATURE))
      r:send("<bidi xmlns='" .. NS_BIDI .. "'/>")
      assert.equal("unsupported-stanza-type", (r:stream_error()))
    end, { bidi = false })
  end)
end)

---------------------------------------------------------------------------
-- a raw receiving server (a listener playing other.test) that example.test
-- connects to

-- Drives the receiving side of r up to authentication; offer: whether
-- <bidi/> is among the features. Returns whether the initiator asked.
local function receive(r, offer)
  local p = pki.get()
  local function header(id)
    r:send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='" .. raw.NS_STREAMS ..
      "' from='" .. B .. "' to='" .. A .. "' id='" .. id .. "' version='1.0'>")
  end
  local function open()
    while true do
      local ev = assert(r:next(T), "no header")
      if ev.open then return ev.open end
      assert(ev.tls, "unexpected event")
    end
  end
  open()
  header("s1")
  r:send("<stream:features><starttls xmlns='" .. NS_TLS .. "'><required/></starttls></stream:features>")
  assert.equal("starttls", assert(r:stanza(T)).name)
  r:send("<proceed xmlns='" .. NS_TLS .. "'/>")
  local cert = p.certs.wrongname
  r.conn:starttls(assert(core.tls_context({ mode = "server", cert = cert.cert, key = cert.key })))
  open()
  header("s2")
  r:send("<stream:features><mechanisms xmlns='" .. NS_SASL .. "'><mechanism>EXTERNAL</mechanism></mechanisms>" ..
    (offer and "<bidi xmlns='" .. NS_BIDI_FEATURE .. "'/>" or "") .. "</stream:features>")
  local s = assert(r:stanza(T))
  local asked = false
  if s.name == "bidi" and s.attr.xmlns == NS_BIDI then
    asked = true
    s = assert(r:stanza(T))
  end
  assert.equal("auth", s.name)
  r:send("<success xmlns='" .. NS_SASL .. "'/>")
  r.conn:restart()
  open()
  header("s3")
  r:send("<stream:features/>")
  return asked
end

-- fn(a, alice, r): example.test's route to other.test goes to a raw
-- listener, negotiated by receive(r, offer); alice's first message (id
-- "first") has come through it
local function with_fake_b(offer, fn)
  lxmpp.run(function()
    local a = start(A, "good")
    local conns = {}
    local l = assert(net.listen("127.0.0.1", 0, function(c) conns[#conns + 1] = raw.wrap(c) end))
    a:s2s_host(B, "127.0.0.1:" .. l:port())
    local ok, err = pcall(function()
      local alice = login(a, "alice")
      alice:send(message("bob@" .. B .. "/r", "first"))
      assert.is_true(serve.until_true(function() return conns[1] ~= nil end, T))
      local r = conns[1]
      assert.equal(offer, receive(r, offer))
      assert.equal("first", assert(r:stanza(T)).attr.id)
      fn(a, alice, r)
    end)
    require("spec.support.clients").kill_all()
    net.abort_all()
    l:close()
    a:stop()
    lxmpp.sleep(0.05)
    if not ok then error(err, 0) end
  end)
  clean()
end

describe("s2s: XEP-0288, a raw receiving server", function()
  it("that offered bidi may send its domain's stanzas to ours over our stream", function()
    with_fake_b(true, function(_, alice, r)
      r:send(tostring(message("alice@" .. A .. "/r", "back", "bob@" .. B .. "/r")))
      local m = got(alice, "back")
      assert(m, "alice did not get the stanza sent back over the bidirectional stream")
      assert.equal("bob@" .. B .. "/r", m.attr.from)
    end)
  end)

  it("that offered bidi may not send another domain's stanzas (invalid-from)", function()
    with_fake_b(true, function(_, _, r)
      r:send(tostring(message("alice@" .. A .. "/r", "spoof", "mallory@evil.test/x")))
      assert.equal("invalid-from", (r:stream_error()))
    end)
  end)

  it("that offered bidi may not relay to a third domain (host-unknown)", function()
    with_fake_b(true, function(_, _, r)
      r:send(tostring(message("carol@third.test/r", "relay", "bob@" .. B .. "/r")))
      assert.equal("host-unknown", (r:stream_error()))
    end)
  end)

  it("that did not offer bidi may send nothing over our stream", function()
    with_fake_b(false, function(a, alice, r)
      local seen = serve.collect(alice, "message")
      r:send(tostring(message("alice@" .. A .. "/r", "unasked", "bob@" .. B .. "/r")))
      assert.equal("unsupported-stanza-type", (r:stream_error()))
      assert.is_true(serve.until_true(function() return a.s2s.routes[B] == nil end, T))
      lxmpp.sleep(0.05)
      assert.equal(0, #seen)
    end)
  end)
end)
