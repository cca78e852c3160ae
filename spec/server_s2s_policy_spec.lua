-- Per remote domain federation policies (server/s2s.lua fed:policy;
-- docs/server.md "Federation policies"): s2s.domains[d] = { block,
-- dialback, require_valid_cert } and the s2s.block list, checked at
-- lxmpp.server(opts), applied both ways between two embedded servers on
-- loopback and against raw hostile server streams.
local lxmpp = require "lxmpp"
local raw = require "spec.support.raw"
local serve = require "spec.support.serve"
local slow = require "spec.support.slow"

local s2sh = require "spec.support.s2s"

local A, B = s2sh.A, s2sh.B
local NS_SASL = s2sh.NS_SASL
local NS_TLS, NS_DB = s2sh.NS_TLS, s2sh.NS_DB -- luacheck: ignore 211
local NS_DB_FEATURE = s2sh.NS_DB_FEATURE
local T = 5 * slow.factor
local port_of, options, condition = s2sh.port_of, s2sh.options, s2sh.condition
local start = s2sh.start -- luacheck: ignore 211

-- fn(a, b): example.test (certificate ca, s2s settings sa) and other.test
-- (cb, sb), each knowing where the other is
local function two(fn, ca, sa, cb, sb)
  s2sh.two(fn, { A, ca, sa }, { B, cb, sb })
end

local function login(srv, user)
  return s2sh.login(srv, user, true)
end

local function message(to, id)
  return s2sh.message(to, "hi", id)
end

-- what c gets back for the message with this id: the message itself
-- (delivered) on the other side, or its bounce
local function bounce_of(c, id)
  return serve.expect(c, "message", function(m) return m.attr.id == id and m.attr.type == "error" end, T)
end

local function delivered(c, id)
  return serve.expect(c, "message", function(m) return m.attr.id == id and m.attr.type ~= "error" end, T)
end

describe("s2s policies: options", function()
  local function refused(s2s, pattern)
    local ok, err = pcall(lxmpp.server, options(A, "good", s2s))
    assert.is_false(ok)
    assert.matches(pattern, tostring(err))
  end

  it("are checked with clear errors", function()
    refused({ domains = "x" }, "s2s.domains must be a table")
    refused({ domains = { ["a@b.test"] = {} } }, "s2s.domains: \"a@b.test\" is not a domain")
    refused({ domains = { [B] = true } }, "s2s.domains%[\"other.test\"%] must be a table")
    refused({ domains = { [B] = { blocked = true } } }, "unknown setting \"blocked\" in s2s.domains%[\"other.test\"%]")
    refused({ domains = { [B] = { dialback = "yes" } } }, "s2s.domains%[\"other.test\"%].dialback must be a boolean")
    refused({ block = B }, "s2s.block must be a list of domains")
    refused({ block = { B, "x/y" } }, "s2s.block%[2%]: \"x/y\" is not a domain")
    refused({ block = { B }, domains = { [B] = { block = false } } }, "other.test is in s2s.block and has block = false")
    assert(lxmpp.server(options(A, "good", { block = { "Other.TEST" },
      domains = { ["third.test"] = { dialback = true, require_valid_cert = true } } })))
  end)

  it("apply to one domain over the defaults", function()
    local srv = lxmpp.server(options(A, "good", { dialback = true, block = { "evil.test" },
      domains = { [B] = { require_valid_cert = true }, ["old.test"] = { dialback = false, require_valid_cert = false } } }))
    assert(srv:start())
    local ok, err = pcall(function()
      assert.same({ block = false, dialback = true, require_valid_cert = false }, srv.s2s:policy("any.test"))
      assert.same({ block = true, dialback = true, require_valid_cert = false }, srv.s2s:policy("evil.test"))
      assert.same({ block = false, dialback = true, require_valid_cert = true }, srv.s2s:policy(B))
      -- without dialback a valid certificate is the only way in
      assert.same({ block = false, dialback = false, require_valid_cert = true }, srv.s2s:policy("old.test"))
    end)
    srv:stop()
    if not ok then error(err, 0) end
  end)
end)

describe("s2s policies: blocked domains", function()
  it("a stanza to a blocked domain bounces with policy-violation, and no connection is made", function()
    two(function(a, b)
      local alice = login(a, "alice")
      alice:send(message("bob@" .. B .. "/r", "b1"))
      local e = bounce_of(alice, "b1")
      assert.equal("policy-violation", condition(e))
      assert.equal("cancel", e:get_child("error").attr.type)
      assert.is_nil(a.s2s.routes[B])
      assert.is_nil(next(b.s2s.incoming))
    end, "good", { domains = { [B] = { block = true } } }, "wrongname")
  end)

  it("a stream from a blocked domain gets policy-violation, so its stanzas never arrive; none go to it", function()
    two(function(a, b)
      local alice, bob = login(a, "alice"), login(b, "bob")
      local got = serve.collect(bob, "message")
      alice:send(message("bob@" .. B .. "/r", "b2"))
      assert.equal("remote-server-not-found", condition(bounce_of(alice, "b2")))
      assert.equal(0, #got)
      -- a raw stream claiming the blocked domain
      local r = raw.connect(port_of(b, "s2s"))
      r:send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='" .. raw.NS_STREAMS ..
        "' from='" .. A .. "' to='" .. B .. "' version='1.0'>")
      assert.equal("policy-violation", (r:stream_error()))
      -- and nothing goes the other way either
      bob:send(message("alice@" .. A .. "/r", "b3"))
      assert.equal("policy-violation", condition(bounce_of(bob, "b3")))
      assert.is_nil(b.s2s.routes[A])
    end, "good", nil, "wrongname", { block = { A } })
  end)
end)

---------------------------------------------------------------------------
-- dialback and certificates, per domain

local function s2s_header(from, to) -- luacheck: ignore 211
  return s2sh.header(from, to, true)
end

-- a raw stream to port from `from`, after STARTTLS with certname's
-- certificate; returns it and the features (the hostile side does not
-- care who the server is)
local function raw_tls(port, from, to, certname)
  local r, f = s2sh.raw_tls(port, { from = from, to = to, cert = certname, db = true, insecure = true,
    check_starttls = true })
  return r, f
end

local function with_b(s2s, fn)
  s2sh.one(fn, { B, "wrongname", s2s })
end

describe("s2s policies: dialback per domain", function()
  it("dialback allowed for one domain only authenticates that domain, both ways", function()
    two(function(a, b)
      local alice, bob = login(a, "alice"), login(b, "bob")
      alice:send(message("bob@" .. B .. "/r", "d1"))
      assert(delivered(bob, "d1"), "bob did not get alice's message")
      bob:send(message("alice@" .. A .. "/r", "d2"))
      assert(delivered(alice, "d2"), "alice did not get bob's message")
      -- another domain claiming other.test's peer gets no dialback there
      local r, f = raw_tls(port_of(b, "s2s"), "third.test", B, "untrusted")
      assert.is_nil(f:get_child("dialback", NS_DB_FEATURE))
      r:send("<db:result from='third.test' to='" .. B .. "'>" .. ("ab"):rep(32) .. "</db:result>")
      assert.equal("policy-violation", (r:stream_error()))
    end, "wrongname", { domains = { [B] = { dialback = true } } },
      "untrusted", { domains = { [A] = { dialback = true } } })
  end)

  it("require_valid_cert: dialback only over a certificate that verifies for the peer", function()
    with_b({ dialback = true, domains = { [A] = { require_valid_cert = true } } }, function(_, port)
      -- example.test's certificate from an unknown CA: no dialback offered
      local r, f = raw_tls(port, A, B, "untrusted")
      assert.is_nil(f:get_child("dialback", NS_DB_FEATURE))
      r:send("<db:result from='" .. A .. "' to='" .. B .. "'>" .. ("ab"):rep(32) .. "</db:result>")
      assert.equal("policy-violation", (r:stream_error()))
      -- a valid one: dialback next to EXTERNAL
      local _, f2 = raw_tls(port, A, B, "good")
      assert.truthy(f2:get_child("dialback", NS_DB_FEATURE))
      assert.truthy(f2:get_child("mechanisms", NS_SASL))
      -- any other domain: dialback without a valid certificate, as s2s.dialback says
      local _, f3 = raw_tls(port, "third.test", B, "untrusted")
      assert.truthy(f3:get_child("dialback", NS_DB_FEATURE))
    end)
  end)

  it("require_valid_cert on the initiating side: a peer whose certificate does not verify is not talked to", function()
    local hits = 0
    two(function(a)
      local alice = login(a, "alice")
      alice:send(message("bob@" .. B .. "/r", "v1"))
      assert.equal("remote-server-not-found", condition(bounce_of(alice, "v1")))
      hits = hits + 1
    end, "good", { dialback = true, domains = { [B] = { require_valid_cert = true } } },
      "untrusted", { dialback = true })
    assert.equal(1, hits)
  end)

  it("without the policy the same peer is reached by dialback (the control of the case above)", function()
    two(function(a, b)
      local alice, bob = login(a, "alice"), login(b, "bob")
      alice:send(message("bob@" .. B .. "/r", "v2"))
      assert(delivered(bob, "v2"))
    end, "good", { dialback = true }, "untrusted", { dialback = true })
  end)
end)
