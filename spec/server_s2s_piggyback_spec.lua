-- Multiplexing several domains over one server-to-server stream (XEP-0220
-- §2.6, "piggybacking"). Sending: example.test, whose certificate does
-- not verify (dialback), carries its MUC domain's stanzas over the stream
-- its main domain opened, or a stream of its own when the peer refuses.
-- Receiving (raw hostile streams): after its first domain, a remote
-- server claims more (from, to) pairs with <db:result/> on the same
-- stream; each is checked like the first, a refused one is answered for
-- itself (type='invalid' / type='error', XEP-0220 §2.4) and the pairs
-- already valid keep working; stanzas must come from an authenticated
-- domain; limits.s2s_pairs caps the pairs of one stream.
-- The authoritative servers are stubbed (fed.dialback_verify answers per
-- domain): spec/server_s2s_hostile_spec.lua and server_s2s_multi_spec.lua
-- check real verification connections.
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local pki = require "spec.support.pki"
local serve = require "spec.support.serve"
local st = require "lxmpp.stanza"
local slow = require "spec.support.slow"

local s2sh = require "spec.support.s2s"

local A, B = s2sh.A, s2sh.B
local MUC, EVIL = "muc.example.test", "evil.test"
local NS_SASL = s2sh.NS_SASL
local NS_TLS, NS_DB = s2sh.NS_TLS, s2sh.NS_DB -- luacheck: ignore 211
local T = 5 * slow.factor
local port_of = s2sh.port_of

-- other.test (dialback on, a MUC service), whose dialback checks answer
-- answers[domain] ("valid" / "invalid"; none: "error"); stanzas it
-- accepts from s2s are recorded in routed
local function with_b(extra, fn)
  s2sh.with(function()
    local b = s2sh.start(B, "wrongname", { dialback = true, bidi = false },
      { muc = "rooms." .. B, users = { bob = "bob-pw" } }, extra)
    local answers, asked, routed = {}, {}, {}
    b.s2s.dialback_verify = function(_, domain, _, _, to, done)
      asked[#asked + 1] = domain .. " " .. to
      done(answers[domain] or "error")
    end
    local route = b.route
    b.route = function(self, s, ...)
      routed[#routed + 1] = s.attr.from
      return route(self, s, ...)
    end
    return { b }, { { b = b, port = port_of(b, "s2s"), answers = answers, asked = asked, routed = routed } }
  end, fn)
end

local function s2s_header(from)
  return s2sh.header(from, B, true)
end

-- a raw stream from `from` after STARTTLS with a certificate that does not verify
local function raw_tls(port, from, certname)
  local r, f = s2sh.raw_tls(port, { from = from, cert = certname or "untrusted", db = true })
  return r, f
end

-- claims from -> to (default other.test) and returns the answer
local function claim(r, from, to)
  s2sh.claim(r, from, to)
  local res = assert(r:stanza(T))
  assert.same({ "result", to or B, from }, { res.name, res.attr.from, res.attr.to })
  local cond = res.tags[1] and res.tags[1].tags[1]
  return res.attr.type, cond and cond.name
end

local function presence(r, from, to)
  r:send("<presence from='someone@" .. from .. "/x' to='" .. (to or ("bob@" .. B)) .. "'/>")
end

-- the domains of the stanzas other.test took from s2s (not its own answers)
local function remote_froms(env)
  local got = {}
  for _, f in ipairs(env.routed) do
    local d = f:match("@([^/]+)") or f
    if d ~= B and not d:find("%." .. B:gsub("%.", "%%.") .. "$") then got[#got + 1] = d end
  end
  return got
end

-- stanzas from these domains were routed, in this order
local function routed_from(env, list)
  local deadline = core.now() + T
  while #remote_froms(env) < #list and core.now() < deadline do lxmpp.sleep(0.02) end
  assert.same(list, remote_froms(env))
end

describe("s2s: several domains over one incoming stream (XEP-0220 §2.6)", function()
  it("a second claim for another domain of the peer and another domain here is checked and added", function()
    with_b(nil, function(env)
      env.answers[A], env.answers[MUC] = "valid", "valid"
      local r = raw_tls(env.port, A)
      assert.equal("valid", (claim(r, A)))
      assert.equal("valid", (claim(r, MUC)))
      assert.equal("valid", (claim(r, MUC, "rooms." .. B)))
      assert.same({ A .. " " .. B, MUC .. " " .. B, MUC .. " rooms." .. B }, env.asked)
      presence(r, A)
      presence(r, MUC)
      presence(r, MUC, "room@rooms." .. B .. "/n")
      routed_from(env, { A, MUC, MUC })
      assert.is_nil(r:stanza(0.1))          -- no stream error
    end)
  end)

  it("a claim the authoritative server says invalid gets type='invalid'; the pairs already valid go on", function()
    with_b(nil, function(env)
      env.answers[A], env.answers[EVIL] = "valid", "invalid"
      local r = raw_tls(env.port, A)
      assert.equal("valid", (claim(r, A)))
      assert.equal("invalid", (claim(r, EVIL)))
      -- no answer from the authority: type='error' for that pair only
      assert.same({ "error", "remote-server-not-found" }, { claim(r, "silent.test") })
      presence(r, A)
      routed_from(env, { A })
      -- the refused domain may not send
      presence(r, EVIL)
      assert.equal("invalid-from", (r:stream_error()))
      assert.same({ A }, remote_froms(env))
    end)
  end)

  it("a claim refused with an error leaves the stream open, no pair valid yet: the peer claims other pairs over it",
    function()
    with_b(nil, function(env)
      env.answers[A], env.answers[EVIL] = "valid", "invalid"
      local r = raw_tls(env.port, A)
      -- no pair valid yet: each error is answered and the stream goes on
      -- (XEP-0220 §2.4: a dialback error is not fatal to the stream)
      assert.same({ "error", "item-not-found" }, { claim(r, A, "nowhere.test") })
      assert.same({ "error", "remote-server-not-found" }, { claim(r, "silent.test") })
      assert.is_nil(next(env.b.s2s.incoming))            -- not authenticated
      assert.equal("valid", (claim(r, A)))
      -- type='invalid' with another pair valid: that pair goes on
      assert.equal("invalid", (claim(r, EVIL)))
      presence(r, A)
      routed_from(env, { A })
      assert.same({ "silent.test " .. B, A .. " " .. B, EVIL .. " " .. B }, env.asked)
      -- the refused domain still may not send
      presence(r, EVIL)
      assert.equal("invalid-from", (r:stream_error()))
      assert.same({ A }, remote_froms(env))
    end)
  end)

  it("a first claim refused type='invalid', no other pair valid or under way, closes the stream (XEP-0220 §2.2.1)",
    function()
    with_b(nil, function(env)
      env.answers[A] = "invalid"
      local r = raw_tls(env.port, A)
      assert.equal("invalid", (claim(r, A)))
      local ev = r:next(2)
      while ev and not (ev.close or ev.closed) do ev = r:next(2) end
      assert.truthy(ev, "the stream was not closed")
      assert.same({}, remote_froms(env))
    end)
  end)

  it("a stanza after a refused claim, before any pair is valid, gets not-authorized", function()
    with_b(nil, function(env)
      local r = raw_tls(env.port, A)
      assert.same({ "error", "remote-server-not-found" }, { claim(r, "silent.test") })
      assert.same({ nil, "timeout" }, { r:stanza(0.1) })
      presence(r, "silent.test")
      assert.equal("not-authorized", (r:stream_error()))
      assert.same({}, remote_froms(env))
    end)
  end)

  it("a stanza from a domain not claimed on a multiplexed stream gets invalid-from", function()
    with_b(nil, function(env)
      env.answers[A], env.answers[MUC] = "valid", "valid"
      local r = raw_tls(env.port, A)
      assert.equal("valid", (claim(r, A)))
      assert.equal("valid", (claim(r, MUC)))
      presence(r, "pubsub." .. A)
      assert.equal("invalid-from", (r:stream_error()))
      assert.same({}, remote_froms(env))
    end)
  end)

  it("a claim to a domain not served here, or from a blocked domain, is refused for that pair only", function()
    with_b({ s2s = { cafile = pki.get().ca, dialback = true, bidi = false, block = { EVIL } } }, function(env)
      env.answers[A], env.answers[EVIL] = "valid", "valid"
      local r = raw_tls(env.port, A)
      assert.equal("valid", (claim(r, A)))
      assert.same({ "error", "item-not-found" }, { claim(r, MUC, "nowhere.test") })
      assert.same({ "error", "policy-violation" }, { claim(r, EVIL) })
      assert.same({ A .. " " .. B }, env.asked)    -- neither was asked about
      presence(r, A)
      routed_from(env, { A })
    end)
  end)

  it("limits.s2s_pairs caps the pairs of one stream: one more gets resource-constraint", function()
    with_b({ limits = { s2s_pairs = 2 } }, function(env)
      env.answers[A], env.answers[MUC], env.answers["pubsub." .. A] = "valid", "valid", "valid"
      local r = raw_tls(env.port, A)
      assert.equal("valid", (claim(r, A)))
      assert.equal("valid", (claim(r, MUC)))
      assert.same({ "error", "resource-constraint" }, { claim(r, "pubsub." .. A) })
      assert.equal(2, #env.asked)
      presence(r, MUC)
      routed_from(env, { MUC })
    end)
  end)

  it("a stream authenticated by certificate adds a domain its certificate names without asking", function()
    for _, c in ipairs({ { "multidomain", {}, "valid" }, { "good", { MUC .. " " .. B }, "error" } }) do
      with_b(nil, function(env)
        -- no authority answers: only the certificate can make a claim valid
        local r = raw_tls(env.port, A, c[1])
        r:send("<auth xmlns='" .. NS_SASL .. "' mechanism='EXTERNAL'>=</auth>")
        assert.equal("success", assert(r:stanza()).name)
        r.conn:restart()
        r:send(s2s_header(A))
        assert.truthy(r:next().open)
        assert(r:stanza())
        assert.equal(c[3], (claim(r, MUC)))
        assert.same(c[2], env.asked)
        presence(r, MUC)
        if c[3] == "valid" then
          routed_from(env, { MUC })
        else
          assert.equal("invalid-from", (r:stream_error()))
        end
      end)
    end
  end)

  it("the same pair claimed twice on one stream is a policy-violation", function()
    with_b(nil, function(env)
      env.answers[A], env.answers[MUC] = "valid", "valid"
      local r = raw_tls(env.port, A)
      assert.equal("valid", (claim(r, A)))
      assert.equal("valid", (claim(r, MUC)))
      r:send("<db:result from='" .. MUC .. "' to='" .. B .. "'>" .. ("ab"):rep(32) .. "</db:result>")
      assert.equal("policy-violation", (r:stream_error()))
    end)
  end)

  -- two embedded servers: example.test (MUC service; a certificate that
  -- does not verify, so dialback) sends to other.test
  local function two(fn, eb)
    s2sh.two(fn, { A, "untrusted", { dialback = true, bidi = false }, { muc = MUC } },
      { B, "wrongname", { dialback = true, bidi = false }, eb }, { MUC })
  end

  -- alice@example.test, then the MUC domain, send bob@other.test a message
  local function both_reach(a, b, res)
    res = res or "r"
    local alice = assert(lxmpp.connect({ jid = "alice@" .. A .. "/" .. res, password = "alice-pw", host = "127.0.0.1",
      port = port_of(a, "c2s"), insecure = true }))
    local bob = assert(lxmpp.connect({ jid = "bob@" .. B .. "/" .. res, password = "bob-pw", host = "127.0.0.1",
      port = port_of(b, "c2s"), cafile = pki.get().ca }))
    assert(bob:send_presence())
    alice:send(st.message({ to = "bob@" .. B .. "/" .. res, id = "m1" }):tag("body"):text("x"):up())
    assert(serve.expect(bob, "message", function(m) return m.attr.id == "m1" end, T), "alice's message")
    a:route(st.message({ from = "lobby@" .. MUC, to = "bob@" .. B .. "/" .. res, id = "m2" }):tag("body"):text("y"):up())
    local m = serve.expect(bob, "message", function(x) return x.attr.id == "m2" end, T)
    assert(m, "the MUC domain's message did not arrive")
    assert.equal("lobby@" .. MUC, m.attr.from)
  end

  local function count(t)
    local n = 0
    for _ in pairs(t) do n = n + 1 end
    return n
  end

  it("sending: a second local domain claims its pair over the stream up to the same remote domain", function()
    two(function(a, b)
      both_reach(a, b)
      local main, muc = assert(a.s2s:route_to(B)), assert(a.s2s:route_to(B, MUC))
      assert.equal(main.out, muc.out)                  -- one stream ...
      assert.equal(A, main.out.local_domain)
      assert.equal(1, count(b.s2s.incoming))           -- ... one connection at other.test
      local s = next(b.s2s.incoming)
      assert.is_true(s.froms[A] and s.froms[MUC])
      -- the shared stream ending ends both routes; the next stanzas open them again
      main.out:close()
      assert.is_true(serve.until_true(function() return a.s2s:route_to(B, MUC) == nil end, T))
      both_reach(a, b, "again")
      assert.equal(a.s2s:route_to(B).out, a.s2s:route_to(B, MUC).out)
    end)
  end)

  it("sending: a pair the peer refuses on the shared stream gets a stream of its own", function()
    two(function(a, b)
      both_reach(a, b)
      local main, muc = assert(a.s2s:route_to(B)), assert(a.s2s:route_to(B, MUC))
      assert.are_not.equal(main.out, muc.out)
      assert.equal(MUC, muc.out.local_domain)
      assert.equal(2, count(b.s2s.incoming))
    end, { limits = { s2s_pairs = 1 } })
  end)

  -- other.test's checks of the MUC domain's key answer answers[n] for
  -- the n-th claim (as the stub of with_b; "busy": resource-constraint);
  -- those of example.test are real. Returns what it was asked (stream ids)
  -- and the stanzas from the MUC domain that example.test bounced.
  local function refusing(a, b, answers)
    local verify, asked = b.s2s.dialback_verify, {}
    b.s2s.dialback_verify = function(fed, domain, key, id, to, done)
      if domain ~= MUC then return verify(fed, domain, key, id, to, done) end
      asked[#asked + 1] = id
      done(answers[#asked] or "valid")
    end
    local bounced, bounce = {}, a.bounce
    a.bounce = function(srv, s, etype, cond, text)
      if s.attr.from == "lobby@" .. MUC then bounced[#bounced + 1] = { s.attr.id, etype, cond } end
      return bounce(srv, s, etype, cond, text)
    end
    return asked, bounced
  end

  -- the main domain's route up (a message to bob), then two messages of
  -- the MUC domain, which claims its pair over that stream
  local function muc_sends(a, b)
    local alice = assert(lxmpp.connect({ jid = "alice@" .. A .. "/r", password = "alice-pw", host = "127.0.0.1",
      port = port_of(a, "c2s"), insecure = true }))
    local bob = assert(lxmpp.connect({ jid = "bob@" .. B .. "/r", password = "bob-pw", host = "127.0.0.1",
      port = port_of(b, "c2s"), cafile = pki.get().ca }))
    assert(bob:send_presence())
    alice:send(st.message({ to = "bob@" .. B .. "/r", id = "m1" }):tag("body"):text("x"):up())
    assert(serve.expect(bob, "message", function(m) return m.attr.id == "m1" end, T), "alice's message")
    for _, id in ipairs({ "m2", "m3" }) do
      a:route(st.message({ from = "lobby@" .. MUC, to = "bob@" .. B .. "/r", id = id }):tag("body"):text("y"):up())
    end
    return bob
  end

  it("sending: a multiplexed pair refused type='invalid' gets one stream of its own; invalid there too, "
    .. "what waited bounces with remote-server-not-found", function()
    two(function(a, b)
      local asked, bounced = refusing(a, b, { "invalid", "invalid" })
      local bob = muc_sends(a, b)
      local got = serve.collect(bob, "message")
      assert.is_true(serve.until_true(function() return #bounced == 2 end, T))
      assert.same({ { "m2", "cancel", "remote-server-not-found" }, { "m3", "cancel", "remote-server-not-found" } },
        bounced)
      -- claimed twice: over the shared stream, then over a stream of its own (another stream id)
      assert.equal(2, #asked)
      assert.are_not.equal(asked[1], asked[2])
      lxmpp.sleep(0.3)
      assert.equal(2, #asked)                        -- and no more
      assert.is_nil(a.s2s:route_to(B, MUC))
      assert.truthy(a.s2s:route_to(B).ready)          -- the shared stream goes on
      assert.equal(0, #got)
    end)
  end)

  it("sending: the stream a pair refused type='invalid' gets is its one retry: resource-constraint there "
    .. "fails it (remote-server-timeout), no third connection", function()
    two(function(a, b)
      local asked, bounced = refusing(a, b, { "invalid", "busy" })
      muc_sends(a, b)
      assert.is_true(serve.until_true(function() return #bounced == 2 end, T))
      assert.same({ { "m2", "wait", "remote-server-timeout" }, { "m3", "wait", "remote-server-timeout" } }, bounced)
      lxmpp.sleep(0.3)
      assert.equal(2, #asked)
      assert.is_nil(a.s2s:route_to(B, MUC))
      -- the next stanza opens a new route: over the shared stream again, valid this time
      a:route(st.message({ from = "lobby@" .. MUC, to = "bob@" .. B .. "/r", id = "m4" }):tag("body"):text("z"):up())
      assert.is_true(serve.until_true(function()
        local r = a.s2s:route_to(B, MUC)
        return r ~= nil and r.ready
      end, T))
      assert.equal(a.s2s:route_to(B).out, a.s2s:route_to(B, MUC).out)
    end)
  end)

  it("sending: a pair the peer refuses with another error (XEP-0220 §2.4) fails with it, no new connection",
    function()
      two(function(a, b)
        local failed = {}
        local fail = a.s2s.fail
        a.s2s.fail = function(fed, route, cond, text)
          if route.from == MUC then failed[#failed + 1] = cond end
          return fail(fed, route, cond, text)
        end
        local alice = assert(lxmpp.connect({ jid = "alice@" .. A .. "/r", password = "alice-pw", host = "127.0.0.1",
          port = port_of(a, "c2s"), insecure = true }))
        local bob = assert(lxmpp.connect({ jid = "bob@" .. B .. "/r", password = "bob-pw", host = "127.0.0.1",
          port = port_of(b, "c2s"), cafile = pki.get().ca }))
        assert(bob:send_presence())
        alice:send(st.message({ to = "bob@" .. B .. "/r", id = "m1" }):tag("body"):text("x"):up())
        assert(serve.expect(bob, "message", function(m) return m.attr.id == "m1" end, T), "alice's message")
        a:route(st.message({ from = "lobby@" .. MUC, to = "bob@" .. B .. "/r", id = "m2" }):tag("body"):text("y"):up())
        -- other.test blocks the MUC domain: type='error' with policy-violation
        -- for that pair; a stream of its own would get the same refusal
        assert.is_true(serve.until_true(function() return #failed > 0 end, T))
        assert.same({ "remote-server-timeout" }, failed)      -- (what waited returns with it, XEP-0220 §2.4)
        assert.is_nil(a.s2s:route_to(B, MUC))
        assert.equal(1, count(b.s2s.incoming))
        assert.truthy(a.s2s:route_to(B).ready)            -- the shared stream goes on
      end, { s2s = { cafile = pki.get().ca, dialback = true, bidi = false, block = { MUC } } })
    end)
end)
