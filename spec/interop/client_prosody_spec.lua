-- lxmpp.connect against a real Prosody on loopback (spec/support/prosody.lua):
-- STARTTLS and direct TLS with certificate checks, SCRAM, binding, messages,
-- IQ requests matched by id and sender, handle_iq, components, clean closes.
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local st = lxmpp.stanza
local prosody = require "spec.support.prosody"
local scenarios = require "spec.support.server_scenarios"

local srv

local function opts(user, extra)
  local o = { jid = user .. "@example.test/spec", password = srv.users[user], host = "127.0.0.1",
    port = srv.port, cafile = srv.ca }
  for k, v in pairs(extra or {}) do o[k] = v end
  if o.cafile == false then o.cafile = nil end   -- false: the system store
  return o
end

local function run(fn)
  local ok, err = pcall(lxmpp.run, fn)
  if not ok then error(err, 0) end
end

local assert_clean = require "spec.support.clean"

describe("client against Prosody", function()
  setup(function()
    srv = prosody.start({ users = { alice = "alice-secret", bob = "bob-secret", carol = "carol-secret" } })
    srv.users = { alice = "alice-secret", bob = "bob-secret", carol = "carol-secret" }
  end)
  teardown(function() if srv then srv:stop() end end)
  after_each(assert_clean)

  it("negotiates STARTTLS, SCRAM and binds the requested resource", function()
    run(function()
      local c = assert(lxmpp.connect(opts("alice")))
      assert.equal("alice@example.test/spec", c.jid)
      assert.matches("^SCRAM%-SHA%-", c.sasl_mechanism)
      local info = c.conn.c:tls_info()
      assert.is_true(info.verified)
      assert.matches("TLSv1%.[23]", info.version)
      assert.is_true(c:close())
    end)
  end)

  -- Prosody 0.12 binds only to tls-unique, which RFC 9266 leaves undefined
  -- on TLS 1.3: it offers no -PLUS there, so the defaults log in with plain
  -- SCRAM (flag y: we could bind) and nothing is refused or retried
  it("logs in at the defaults without channel binding, with nothing refused or retried", function()
    local lines = {}
    run(function()
      local c = assert(lxmpp.connect(opts("alice", {
        logger = function(level, msg) lines[#lines + 1] = level .. " " .. msg end })))
      assert.equal("TLSv1.3", c.conn.c:tls_info().version)
      assert.equal("SCRAM-SHA-1", c.sasl_mechanism)
      assert.is_false(c.channel_binding)
      assert.is_nil(c.channel_binding_refused)
      c:close()
    end)
    assert.same({}, lines)
  end)

  it("channel_binding = false logs in; true fails before authenticating, as -PLUS is not offered", function()
    run(function()
      local c = assert(lxmpp.connect(opts("alice", { channel_binding = false })))
      assert.equal("SCRAM-SHA-1", c.sasl_mechanism)
      c:close()
      local none, msg, cond = lxmpp.connect(opts("alice", { channel_binding = true }))
      assert.is_nil(none)
      assert.equal("invalid-mechanism", cond)
      assert.matches("offers no SCRAM %-PLUS", msg)
    end)
  end)

  it("lets the server pick the resource when none is asked", function()
    run(function()
      local o = opts("alice")
      o.jid = "alice@example.test"
      local c = assert(lxmpp.connect(o))
      assert.matches("^alice@example%.test/.+", c.jid)
      c:close()
    end)
  end)

  it("connects with direct TLS (XEP-0368)", function()
    run(function()
      local c = assert(lxmpp.connect(opts("alice", { tls = "direct", port = srv.direct_tls_port })))
      assert.equal("alice@example.test/spec", c.jid)
      assert.is_true(c.conn.c:tls_info().verified)
      c:close()
    end)
  end)

  for _, mech in ipairs({ "SCRAM-SHA-1", "PLAIN" }) do
    it("logs in with " .. mech .. " when asked (over TLS)", function()
      run(function()
        local c = assert(lxmpp.connect(opts("alice", { mechanism = mech })))
        assert.equal(mech, c.sasl_mechanism)
        c:close()
      end)
    end)
  end

  it("never falls back when the asked mechanism is not offered", function()
    run(function()
      local c, msg, cond = lxmpp.connect(opts("alice", { mechanism = "SCRAM-SHA-512" }))
      assert.is_nil(c)
      assert.equal("invalid-mechanism", cond)
      assert.matches("SCRAM%-SHA%-512", msg)
    end)
  end)

  it("follows see-other-host to the real server, which must still prove the domain", function()
    run(function()
      local net = require "lxmpp.net"
      local l = assert(net.listen("127.0.0.1", 0, function(conn)
        conn:on("open", function()
          conn:write("<?xml version='1.0'?><stream:stream xmlns='jabber:client' " ..
            "xmlns:stream='http://etherx.jabber.org/streams' id='r' version='1.0'><stream:error>" ..
            "<see-other-host xmlns='urn:ietf:params:xml:ns:xmpp-streams'>127.0.0.1:" .. srv.port ..
            "</see-other-host></stream:error></stream:stream>")
        end)
        conn:on("eof", function() conn:abort() end)
        conn:parse()
      end))
      local c = assert(lxmpp.connect(opts("alice", { port = l:port() })))
      assert.equal("alice@example.test/spec", c.jid)
      assert.is_true(c.conn.c:tls_info().verified)
      c:close()
      l:close()
    end)
  end)

  it("reports disconnected with the reason when the server ends the session", function()
    run(function()
      local first = assert(lxmpp.connect(opts("alice")))
      local gone = lxmpp.task.waiter()
      first:on("disconnected", function(msg, cond) gone:wake(msg, cond) end)
      -- the same full JID logs in again: Prosody ends the first session
      local second = assert(lxmpp.connect(opts("alice")))
      local msg, cond = gone:wait()
      assert.equal("conflict", cond)
      assert.matches("conflict", msg)
      second:close()
    end)
  end)

  it("fails with not-authorized on a wrong password", function()
    run(function()
      local c, msg, cond = lxmpp.connect(opts("alice", { password = "wrong" }))
      assert.is_nil(c)
      assert.equal("not-authorized", cond)
      assert.matches("authentication failed", msg)
    end)
  end)

  it("refuses a certificate the system store does not trust", function()
    run(function()
      local c, msg, cond = lxmpp.connect(opts("alice", { cafile = false }))
      assert.is_nil(c)
      assert.equal("tls-verify-failed", cond)
      assert.matches("example.test", msg)
    end)
  end)

  it("connects to an untrusted certificate only with insecure = true", function()
    run(function()
      local c = assert(lxmpp.connect(opts("alice", { cafile = false, insecure = true })))
      assert.is_false(c.conn.c:tls_info().verified)
      c:close()
    end)
  end)

  it("exchanges messages; each handler runs as its own task", function()
    run(function()
      local alice = assert(lxmpp.connect(opts("alice")))
      local bob = assert(lxmpp.connect(opts("bob")))
      local got = lxmpp.task.waiter()
      bob:on("message", function(m)
        lxmpp.sleep(0.01)       -- a handler may wait: it is a task
        got:wake(m)
      end)
      assert.is_true(alice:send_message("bob@example.test/spec", "hello bob"))
      local m = got:wait()
      assert.equal("hello bob", m:get_child_text("body"))
      assert.equal("alice@example.test/spec", m.attr.from)
      assert.equal("chat", m.attr.type)
      -- and back
      local back = lxmpp.task.waiter()
      alice:on("message", function(r) back:wake(r) end)
      assert.is_true(bob:send_message(m.attr.from, "hello alice"))
      local r = back:wait()
      assert.equal("hello alice", r:get_child_text("body"))
      assert.equal("bob@example.test/spec", r.attr.from)
      alice:close()
      bob:close()
    end)
  end)

  it("answers ping and version, and service-unavailable for what nobody handles", function()
    run(function()
      local alice = assert(lxmpp.connect(opts("alice")))
      local bob = assert(lxmpp.connect(opts("bob", { software = { name = "dictbot", version = "2.0" } })))
      local r = assert(alice:request(st.iq({ type = "get", to = bob.jid }):tag("ping", { xmlns = "urn:xmpp:ping" })))
      assert.equal("result", r.attr.type)
      r = assert(alice:request(st.iq({ type = "get", to = bob.jid }):tag("query", { xmlns = "jabber:iq:version" })))
      assert.equal("dictbot", r.tags[1]:get_child_text("name"))
      assert.equal("2.0", r.tags[1]:get_child_text("version"))
      local res, msg, cond, err = alice:request(st.iq({ type = "get", to = bob.jid })
        :tag("x", { xmlns = "urn:nobody" }))
      assert.is_nil(res)
      assert.equal("service-unavailable", cond)
      assert.is_string(msg)
      assert.equal("error", err.attr.type)
      alice:close()
      bob:close()
    end)
  end)

  it("matches IQ replies by id and sender: a forged reply is ignored", function()
    run(function()
      local alice = assert(lxmpp.connect(opts("alice")))
      local bob = assert(lxmpp.connect(opts("bob")))
      local carol = assert(lxmpp.connect(opts("carol")))
      bob:handle_iq("urn:test:slow", function(iq)
        lxmpp.sleep(0.3)
        return st.reply(iq):tag("answer", { xmlns = "urn:test:slow" }):text("from bob")
      end)
      lxmpp.spawn(function()
        lxmpp.sleep(0.1)
        -- carol knows the id and forges bob's answer
        carol:send(st.iq({ type = "result", id = "fixed-id-1", to = alice.jid })
          :tag("answer", { xmlns = "urn:test:slow" }):text("forged"))
      end)
      local r = assert(alice:request(st.iq({ type = "get", id = "fixed-id-1", to = bob.jid })
        :tag("q", { xmlns = "urn:test:slow" }), 5))
      assert.equal("from bob", r:get_child_text("answer", "urn:test:slow"))
      assert.equal(bob.jid, r.attr.from)
      alice:close()
      bob:close()
      carol:close()
    end)
  end)

  it("times a request out with condition timeout", function()
    run(function()
      local alice = assert(lxmpp.connect(opts("alice")))
      local bob = assert(lxmpp.connect(opts("bob")))
      bob:handle_iq("urn:test:never", function() lxmpp.sleep(1) end)
      local t0 = core.now()
      local r, msg, cond = alice:request(st.iq({ type = "get", to = bob.jid })
        :tag("q", { xmlns = "urn:test:never" }), 0.2)
      assert.is_nil(r)
      assert.equal("timeout", cond)
      assert.matches("0.2", msg)
      assert.is_true(core.now() - t0 < 1)
      lxmpp.sleep(1)     -- bob's handler finishes before the spec ends
      alice:close()
      bob:close()
    end)
  end)

  it("logs stanzas in debug mode through the logger, never the password or SASL payloads", function()
    local lines = {}
    run(function()
      local c = assert(lxmpp.connect(opts("alice", { debug = true,
        logger = function(level, msg) lines[#lines + 1] = level .. " " .. msg end })))
      c:close()
    end)
    local all = table.concat(lines, "\n")
    assert.matches("OUT <starttls", all, 1, true)
    assert.matches("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/> [redacted]", all, 1, true)
    assert.is_nil(all:find("alice-secret", 1, true))
    assert.is_nil(all:find(core.base64_encode("alice-secret"), 1, true))
    assert.is_nil(all:find("n,,n=alice", 1, true))
    assert.is_nil(all:find(core.base64_encode("n,,n=alice"), 1, true))
    assert.is_nil(all:find(core.base64_encode("y,,n=alice"), 1, true))
  end)

  it("refuses misuse with clear errors", function()
    assert.has_error(function() lxmpp.connect({ jid = "alice@example.test", password = "x" }) end)
    run(function()
      assert.has_error(function() lxmpp.connect({ jid = "not a jid@", password = "x" }) end)
      assert.has_error(function() lxmpp.connect({ jid = "alice@example.test" }) end)
      assert.has_error(function() lxmpp.connect({ jid = "a@example.test", password = "x", tls = "none",
        host = "192.0.2.1" }) end)
      assert.has_error(function() lxmpp.connect({ jid = "a@example.test", password = "x", port = 0 }) end)
    end)
  end)

  describe("component (XEP-0114)", function()
    it("authenticates with the handshake and exchanges stanzas", function()
      run(function() scenarios.component_round_trip(srv, opts("alice")) end)
    end)

    it("fails with not-authorized on a wrong secret", function() run(function() scenarios.component_wrong_secret(srv) end) end)
  end)
end)
