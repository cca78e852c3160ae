-- XEP-0288 bidirectional server-to-server streams (server/s2s_in.lua,
-- s2s_out.lua, fed:bidi_route in s2s.lua): the receiving server offers
-- <bidi/>, the initiating one asks for it before authenticating, and the
-- one TCP connection then carries both servers' stanzas. Two embedded
-- servers on loopback, a raw hostile initiating server and a raw hostile
-- receiving server (a listener the spec drives).
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local net = require "lxmpp.net"
local st = require "lxmpp.stanza"
local pki = require "spec.support.pki"
local raw = require "spec.support.raw"
local serve = require "spec.support.serve"
local clean = require "spec.support.clean"
local slow = require "spec.support.slow"

local A, B = "example.test", "other.test"
local NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
local NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
local NS_BIDI, NS_BIDI_FEATURE = "urn:xmpp:bidi", "urn:xmpp:features:bidi"
local T = 5 * slow.factor

local function port_of(srv, kind)
  for _, a in ipairs(srv:addresses()) do
    if a.kind == kind then return a.port end
  end
end

local function start(domain, certname, s2s)
  local p = pki.get()
  local cert = p.certs[certname]
  s2s = s2s or {}
  s2s.cafile = p.ca
  local srv = lxmpp.server({ domain = domain, listen = "127.0.0.1:0", s2s_listen = "127.0.0.1:0",
    tls = { cert = cert.cert, key = cert.key }, s2s = s2s,
    users = { alice = "alice-pw", bob = "bob-pw" }, log_level = "error" })
  assert(srv:start())
  return srv
end

-- fn(a, b) with example.test (certificate ca, s2s settings sa) and
-- other.test (cb, sb) knowing where the other is
local function two(fn, ca, sa, cb, sb)
  lxmpp.run(function()
    local a, b = start(A, ca or "good", sa), start(B, cb or "wrongname", sb)
    a:s2s_host(B, "127.0.0.1:" .. port_of(b, "s2s"))
    b:s2s_host(A, "127.0.0.1:" .. port_of(a, "s2s"))
    local ok, err = xpcall(fn, debug.traceback, a, b)
    require("spec.support.clients").kill_all()
    net.abort_all()
    a:stop()
    b:stop()
    lxmpp.sleep(0.05)
    if not ok then error(err, 0) end
  end)
  clean()
end

local function login(srv, user)
  return assert(lxmpp.connect({ jid = user .. "@" .. srv.domain .. "/r", password = user .. "-pw",
    host = "127.0.0.1", port = port_of(srv, "c2s"), cafile = pki.get().ca, insecure = true }))
end

local function message(to, id, from)
  return st.message({ to = to, from = from, type = "chat", id = id }):tag("body"):text("hi"):up()
end

local function condition(s)
  local e = s and s:get_child("error")
  return e and e.tags[1] and e.tags[1].name
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
  return "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='" .. raw.NS_STREAMS ..
    "' from='" .. from .. "' to='" .. to .. "' version='1.0'>"
end

local function raw_tls(port)
  local p = pki.get()
  local r = raw.connect(port)
  r:send(s2s_header(A, B))
  assert.truthy(r:next().open)
  local f0 = assert(r:stanza())
  r:send("<starttls xmlns='" .. NS_TLS .. "'/>")
  assert.equal("proceed", assert(r:stanza()).name)
  local cert = p.certs.good
  r.conn:starttls(assert(core.tls_context({ mode = "client", cafile = p.ca, cert = cert.cert, key = cert.key })), B)
  assert.truthy(r:next().tls)
  r:send(s2s_header(A, B))
  assert.truthy(r:next().open)
  return r, assert(r:stanza()), f0
end

local function authenticate(r)
  r:send("<auth xmlns='" .. NS_SASL .. "' mechanism='EXTERNAL'>=</auth>")
  assert.equal("success", assert(r:stanza()).name)
  r.conn:restart()
  r:send(s2s_header(A, B))
  assert.truthy(r:next().open)
  assert.equal("features", assert(r:stanza()).name)
end

-- fn(b, bob, port) with other.test, bob logged in, example.test unreachable
-- except through the raw streams the spec opens
local function with_b(fn, s2s)
  lxmpp.run(function()
    local b = start(B, "wrongname", s2s)
    local l = assert(net.listen("127.0.0.1", 0, function(c) c:abort() end))
    b:s2s_host(A, "127.0.0.1:" .. l:port())
    l:close()
    local ok, err = pcall(function() fn(b, login(b, "bob"), port_of(b, "s2s")) end)
    require("spec.support.clients").kill_all()
    net.abort_all()
    b:stop()
    lxmpp.sleep(0.05)
    if not ok then error(err, 0) end
  end)
  clean()
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
