-- Hostile remote servers against other.test's federation (server/s2s*.lua):
-- dialback claims that would make us connect to a victim without bound
-- (limits.s2s_checks, s2s_domain_checks), repeated claims on one stream,
-- unauthenticated server connections past max_unauthenticated, and error
-- ping-pong between two servers (bounces are never bounced).
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local net = require "lxmpp.net"
local raw = require "spec.support.raw"
local serve = require "spec.support.serve"
local clean = require "spec.support.clean"
local slow = require "spec.support.slow"

local s2sh = require "spec.support.s2s"

local A, B = s2sh.A, s2sh.B
local NS_SASL = s2sh.NS_SASL
local NS_TLS, NS_DB = s2sh.NS_TLS, s2sh.NS_DB -- luacheck: ignore 211
local T = 5 * slow.factor
local port_of, claim = s2sh.port_of, s2sh.claim

-- other.test (dialback on, bob its only user); extra: options on top
local function start(extra)
  return s2sh.start(B, "wrongname", { dialback = true }, { users = { bob = "bob-pw" } }, extra)
end

local function with_b(extra, fn)
  s2sh.with(function()
    local b = start(extra)
    return { b }, { b, port_of(b, "s2s") }
  end, fn)
end

local function s2s_header(from)
  return s2sh.header(from, B, true)
end

-- a raw stream claiming from, after STARTTLS with certname's certificate
local function raw_tls(port, from, certname)
  local r, f = s2sh.raw_tls(port, { from = from, cert = certname, db = true })
  return r, f
end

describe("s2s: hostile remote servers", function()
  it("dialback claims connect to the claimed domain's server within limits, the rest get resource-constraint",
    function()
    with_b({ limits = { s2s_checks = 3, s2s_domain_checks = 2 } }, function(b, port)
      -- the "authoritative servers": a listener that accepts and never answers
      local held = {}
      local l = assert(net.listen("127.0.0.1", 0, function(c) held[#held + 1] = c end))
      for _, d in ipairs({ A, "third.test", "fourth.test" }) do b:s2s_host(d, "127.0.0.1:" .. l:port()) end
      local streams = {}
      for i, d in ipairs({ A, A, A, "third.test", "fourth.test" }) do
        streams[i] = raw_tls(port, d, "untrusted")
        claim(streams[i], d)
      end
      -- the third claim for example.test (s2s_domain_checks) and the fifth
      -- in all (s2s_checks) are refused at once; a dialback error is not a
      -- stream error (XEP-0220 §2.2.1): their streams go on
      for _, i in ipairs({ 3, 5 }) do
        local res = assert(streams[i]:stanza(T))
        assert.same({ "result", "error" }, { res.name, res.attr.type })
        assert.equal("resource-constraint", res.tags[1] and res.tags[1].tags[1] and res.tags[1].tags[1].name)
      end
      for _, i in ipairs({ 3, 5 }) do assert.same({ nil, "timeout" }, { streams[i]:stanza(0.1) }) end
      assert.is_true(serve.until_true(function() return #held == 3 end, T))
      lxmpp.sleep(0.1)
      assert.equal(3, #held)                       -- one connection per check under way, no more
      assert.equal(3, b.s2s.nchecks)
      -- the others still wait for their answer
      for _, i in ipairs({ 1, 2, 4 }) do assert.is_nil(streams[i]:stanza(0.05)) end
      -- a check that ends frees its place
      streams[1]:close()
      held[1]:abort()
      assert.is_true(serve.until_true(function() return b.s2s.nchecks == 2 end, T))
      local again = raw_tls(port, "fourth.test", "untrusted")
      claim(again, "fourth.test")
      assert.is_true(serve.until_true(function() return #held == 4 end, T))
      l:close()
    end)
  end)

  it("a second dialback claim on one stream gets policy-violation", function()
    with_b(nil, function(b, port)
      local held = {}
      local l = assert(net.listen("127.0.0.1", 0, function(c) held[#held + 1] = c end))
      b:s2s_host(A, "127.0.0.1:" .. l:port())
      local r = raw_tls(port, A, "untrusted")
      claim(r, A)
      claim(r, A)
      assert.equal("policy-violation", (r:stream_error()))
      -- the first claim's check connected; its authority hangs up
      assert.is_true(serve.until_true(function() return #held == 1 end, T))
      held[1]:abort()
      assert.is_true(serve.until_true(function() return b.s2s.nchecks == 0 end, T))
      l:close()
    end)
  end)

  -- the next events of r up to a stream error: how many <db:result/>
  -- answers came before it, and its condition (nil: none within T)
  local function answers_then_error(r)
    local n = 0
    while true do
      local ev = r:next(T)
      if not ev or ev.closed then return n, nil end
      local s = ev.stanza
      if s and s.name == "result" then n = n + 1 end
      if s and s.name == "error" and s.attr.xmlns == raw.NS_STREAMS then
        for c in s:childtags(nil, raw.NS_ERRORS) do
          if c.name ~= "text" then return n, c.name end
        end
      end
    end
  end

  it("refused dialback claims keep the stream up to limits.s2s_refused_claims, then policy-violation", function()
    with_b({ limits = { s2s_refused_claims = 3 } }, function(b, port)
      -- example.test's "authoritative server" hangs up on each check
      local held = 0
      local l = assert(net.listen("127.0.0.1", 0, function(c)
        held = held + 1
        c:abort()
      end))
      b:s2s_host(A, "127.0.0.1:" .. l:port())
      -- not authenticated: each refusal is answered (remote-server-not-found,
      -- item-not-found) and the stream goes on, up to three
      local r = raw_tls(port, A, "untrusted")
      for _, to in ipairs({ B, "nowhere.test", B }) do
        claim(r, A, to)
        local res = assert(r:stanza(T))
        assert.same({ "result", "error" }, { res.name, res.attr.type })
      end
      assert.equal(2, held)
      claim(r, A)                                 -- a fourth: no check, the stream ends
      assert.equal("policy-violation", (r:stream_error(T)))
      lxmpp.sleep(0.1)
      assert.equal(2, held)
      -- authenticated (SASL EXTERNAL): its valid pair does not lift the bound
      r = raw_tls(port, A, "good")
      r:send("<auth xmlns='" .. NS_SASL .. "' mechanism='EXTERNAL'>=</auth>")
      assert.equal("success", assert(r:stanza()).name)
      r.conn:restart()
      r:send(s2s_header(A))
      assert.truthy(r:next().open)
      assert(r:stanza())
      assert.truthy(next(b.s2s.incoming))
      for i = 1, 3 do
        claim(r, A, "nowhere" .. i .. ".test")
        assert.equal("error", assert(r:stanza(T)).attr.type)
      end
      claim(r, A, "nowhere4.test")
      assert.equal("policy-violation", (r:stream_error(T)))
      assert.is_nil(next(b.s2s.incoming))
      l:close()
    end)
  end)

  it("a burst of thousands of refused claims is cut off at the default limit", function()
    with_b(nil, function(b, port)
      local limit = require("lxmpp.server").DEFAULT_LIMITS.s2s_refused_claims
      assert.equal(limit, b.limits.s2s_refused_claims)
      local r = raw_tls(port, A, "untrusted")
      local burst = {}
      for i = 1, 1000 do
        burst[i] = "<db:result from='" .. A .. "' to='n" .. i .. ".test'>abab</db:result>"
      end
      r:send(table.concat(burst))
      assert.same({ limit, "policy-violation" }, { answers_then_error(r) })
      assert.is_true(r:wait_closed(T))
    end)
  end)

  it("srv:stop() just as a dialback check connects leaves nothing running (no connect timer)", function()
    local stopped
    lxmpp.run(function()
      local b = start()
      local held = {}
      local l = assert(net.listen("127.0.0.1", 0, function(c) held[#held + 1] = c end))
      b:s2s_host(A, "127.0.0.1:" .. l:port())
      local ok, err = pcall(function()
        local r = raw_tls(port_of(b, "s2s"), A, "untrusted")
        claim(r, A)
        claim(r, A)                   -- (the stream ends; its check goes on)
        assert.equal("policy-violation", (r:stream_error()))
        -- the authority accepted
        while #held == 0 do lxmpp.sleep(0.02) end
      end)
      stopped = core.now()
      b:stop()
      l:close()
      for _, c in ipairs(held) do c:abort() end
      if not ok then error(err, 0) end
    end)
    -- the loop ended at once, not after limits.s2s_timeout (30 s)
    assert.is_true(core.now() - stopped < 5 * slow.factor, "lxmpp.run went on for " .. (core.now() - stopped) .. " s")
    net.abort_all()
    clean()
  end)

  it("unauthenticated server connections past max_unauthenticated are refused in a jabber:server stream", function()
    with_b({ limits = { max_unauthenticated = 2 } }, function(_, port)
      local r1, r2 = raw.connect(port), raw.connect(port)
      r1:send(s2s_header(A))
      r2:send(s2s_header("third.test"))
      assert.truthy(r1:next().open)
      assert.truthy(r2:next().open)
      local r3 = raw.connect(port)
      local open = r3:next().open
      assert.equal("jabber:server", open and open.xmlns)
      assert.equal("policy-violation", (r3:stream_error()))
    end)
  end)

  it("errors are never answered: no ping-pong between two servers", function()
    with_b(nil, function(_, port)
      -- example.test, authenticated, with bidi: other.test's answers come back here
      local r, f = raw_tls(port, A, "good")
      assert.truthy(f:get_child("bidi", "urn:xmpp:features:bidi"))
      r:send("<bidi xmlns='urn:xmpp:bidi'/><auth xmlns='" .. NS_SASL .. "' mechanism='EXTERNAL'>=</auth>")
      assert.equal("success", assert(r:stanza()).name)
      r.conn:restart()
      r:send(s2s_header(A))
      assert.truthy(r:next().open)
      assert(r:stanza())
      -- a message to nobody: one bounce
      r:send("<message from='ghost@" .. A .. "/x' to='nobody@" .. B .. "/r' id='p1'><body>?</body></message>")
      local e = assert(r:stanza(T))
      assert.same({ "message", "error", "p1" }, { e.name, e.attr.type, e.attr.id })
      -- the bounce of the bounce (as a careless server would send it), an
      -- error for an error, an iq error and a presence error: no answer
      r:send("<message type='error' from='ghost@" .. A .. "/x' to='nobody@" .. B .. "/r' id='p1'>" ..
        "<error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>")
      r:send("<iq type='error' from='ghost@" .. A .. "/x' to='nobody@" .. B .. "/r' id='p2'/>")
      r:send("<iq type='result' from='ghost@" .. A .. "/x' to='nobody@" .. B .. "/r' id='p3'/>")
      r:send("<presence type='error' from='ghost@" .. A .. "/x' to='nobody@" .. B .. "'/>")
      r:send("<presence from='ghost@" .. A .. "/x' to='nobody@" .. B .. "/r'/>")
      assert.is_nil(r:stanza(0.3))
    end)
  end)
end)
