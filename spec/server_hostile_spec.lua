-- Hostile clients against the embedded server, in raw bytes: each
-- server-side rule of docs/server.md gets its stream error (or its refusal),
-- and the server keeps serving everyone else afterwards.
local compat = require "lxmpp.compat"
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local serve = require "spec.support.serve"
local raw = require "spec.support.raw"
local slow = require("spec.support.slow").factor

local USERS = { alice = "alice-pw", bob = "bob-pw" }
local NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"

local function raw_login(port, user, pw, bind) return raw.login(port, serve.pki().ca, user, pw, bind) end

-- A normal client still logs in and talks to itself.
local function still_serving(port)
  local c = assert(serve.login(port, "bob", "bob-pw", "check" .. math.random(1e6)))
  assert(c:request(lxmpp.stanza.iq({ type = "get", to = serve.DOMAIN }):query("urn:xmpp:ping")))
  c:close()
end

local function stream_case(name, bytes, want, opts)
  it(name .. " -> " .. want, function()
    serve.run(opts or { users = USERS }, function(_, port)
      local r = raw.connect(port)
      r:send(bytes)
      assert.equal(want, (r:stream_error()))
      assert.is_true(r:wait_closed())
      still_serving(port)
    end)
  end)
end

local H = raw.header()

describe("embedded server: hostile stream openings", function()
  stream_case("a stream in the wrong namespace",
    "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='example.test' version='1.0'>",
    "invalid-namespace")
  stream_case("a stream to another host", raw.header("elsewhere.example"), "host-unknown")
  stream_case("a stream without version 1.0",
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.test'>",
    "unsupported-version")
  stream_case("bytes that are not XML", "<<<>>>", "not-well-formed")
  stream_case("a DTD", "<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaa'>]>" .. H, "restricted-xml")
  stream_case("a message before authentication", H .. "<message to='bob@example.test'><body>x</body></message>",
    "not-authorized")
  stream_case("SASL before STARTTLS", H .. "<auth xmlns='" .. NS_SASL .. "' mechanism='PLAIN'>AGFsaWNlAGFsaWNlLXB3</auth>",
    "policy-violation")
  stream_case("an unknown top-level element", H .. "<foo xmlns='urn:example:foo'/>", "unsupported-stanza-type")
  stream_case("a stanza over the size limit", H .. "<message><body>" .. ("x"):rep(5000) .. "</body></message>",
    "policy-violation", { users = USERS, limits = { max_stanza_size = 4096 } })
  stream_case("nesting beyond the depth limit", H .. ("<a>"):rep(200), "policy-violation")
end)

describe("embedded server: hostile authenticated clients", function()
  it("a message before binding -> not-authorized", function()
    serve.run({ users = USERS }, function(_, port)
      local r = raw_login(port, "alice", "alice-pw", false)
      r:send("<message to='bob@example.test'><body>x</body></message>")
      assert.equal("not-authorized", (r:stream_error()))
      still_serving(port)
    end)
  end)

  it("a forged from -> invalid-from, and nothing reaches the victim", function()
    serve.run({ users = USERS }, function(_, port)
      local b = assert(serve.login(port, "bob", "bob-pw", "b"))
      local got = serve.collect(b, "message")
      b:send_presence()
      local r = raw_login(port, "alice", "alice-pw")
      r:send("<message from='admin@example.test/x' to='bob@example.test/b'><body>forged</body></message>")
      assert.equal("invalid-from", (r:stream_error()))
      lxmpp.sleep(0.2)
      assert.equal(0, #got)
      b:close()
      still_serving(port)
    end)
  end)

  it("a bare from of its own account is accepted and replaced by the full JID", function()
    serve.run({ users = USERS }, function(_, port)
      local b = assert(serve.login(port, "bob", "bob-pw", "b"))
      b:send_presence()
      local r = raw_login(port, "alice", "alice-pw")
      r:send("<message from='alice@example.test' to='bob@example.test/b'><body>ok</body></message>")
      local m = serve.expect(b, "message")
      assert.equal("alice@example.test/raw", m.attr.from)
      r:close()
      b:close()
    end)
  end)

  it("too many failed authentications -> policy-violation", function()
    serve.run({ users = USERS }, function(_, port)
      local r = raw.connect(port)
      r:negotiate_tls(serve.pki().ca)
      for i = 1, 5 do   -- limits.sasl_attempts
        r:send("<auth xmlns='" .. NS_SASL .. "' mechanism='PLAIN'>" ..
          core.base64_encode("\0alice\0wrong" .. i) .. "</auth>")
        local f = assert(r:stanza())
        assert.equal("failure", f.name)
        assert.truthy(f:get_child("not-authorized"))
      end
      assert.equal("policy-violation", (r:stream_error()))
      still_serving(port)
    end)
  end)

  it("malformed SASL payloads get SASL failures, not crashes", function()
    serve.run({ users = USERS }, function(_, port)
      local r = raw.connect(port)
      r:negotiate_tls(serve.pki().ca)
      r:send("<auth xmlns='" .. NS_SASL .. "' mechanism='PLAIN'>%%%not base64</auth>")
      assert.truthy(assert(r:stanza()):get_child("incorrect-encoding"))
      r:send("<auth xmlns='" .. NS_SASL .. "' mechanism='SCRAM-SHA-256'>" .. core.base64_encode("garbage") .. "</auth>")
      assert.equal("failure", assert(r:stanza()).name)
      r:close()
      still_serving(port)
    end)
  end)
end)

describe("embedded server: connection limits", function()
  it("ends a negotiation that takes too long -> connection-timeout", function()
    serve.run({ users = USERS, limits = { negotiation_timeout = 0.3 } }, function(srv, port)
      local r = raw.connect(port)
      r:send(H)                            -- and then nothing
      assert.equal("connection-timeout", (r:stream_error(3)))
      srv.limits.negotiation_timeout = 30  -- others (slow under valgrind) get the usual time
      still_serving(port)
    end)
  end)

  it("refuses connections over the per-address limit", function()
    serve.run({ users = USERS, limits = { max_per_ip = 3 } }, function(srv, port)
      local held = {}
      for i = 1, 3 do held[i] = raw.connect(port) end
      assert.truthy(serve.until_true(function() return srv:stats().streams == 3 end))
      local r = raw.connect(port)
      assert.equal("policy-violation", (r:stream_error()))
      for _, h in ipairs(held) do h:close() end
      assert.truthy(serve.until_true(function() return srv:stats().streams == 0 end))
      still_serving(port)
    end)
  end)

  it("refuses new connections over the unauthenticated limit, counting only those", function()
    serve.run({ users = USERS, limits = { max_unauthenticated = 2 } }, function(srv, port)
      local authed = raw_login(port, "alice", "alice-pw")
      local held = { raw.connect(port), raw.connect(port) }
      assert.truthy(serve.until_true(function() return srv:stats().unauthenticated == 2 end))
      local r = raw.connect(port)
      assert.equal("policy-violation", (r:stream_error()))
      held[1]:close()
      assert.truthy(serve.until_true(function() return srv:stats().unauthenticated == 1 end))
      held[2]:close()
      authed:close()
      still_serving(port)
    end)
  end)

  it("drops a client that stops reading once its output waits write_timeout", function()
    -- (more answers than the kernel's socket buffers hold: those are read
    -- as far as the server can tell)
    serve.run({ users = USERS, limits = { max_queue = 65536, write_timeout = 1, rate = compat.lshift(1, 30) } }, function(srv, port)
      local r = raw_login(port, "alice", "alice-pw")
      r.conn:pause()                                  -- reads nothing more
      local ping = "<iq type='get' id='p' to='example.test'><ping xmlns='urn:xmpp:ping'/></iq>"
      local version = "<iq type='get' id='v' to='example.test'><query xmlns='jabber:iq:version'/></iq>"
      r:send((ping .. version):rep(40000))
      -- (answering 80,000 requests takes minutes under Valgrind)
      assert.truthy(serve.until_true(function() return srv.sessions["alice@example.test"] == nil end, 10 * slow))
      still_serving(port)
      r:close()
    end)
  end)

  it("pauses reading from a client that sends faster than the rate", function()
    serve.run({ users = USERS, limits = { rate = 20000 } }, function(_, port)
      local r = raw_login(port, "alice", "alice-pw")
      local ping = "<iq type='get' id='p' to='example.test'><ping xmlns='urn:xmpp:ping'/></iq>"
      r:send(ping:rep(4000))                         -- ~300 KB at once
      local t0, n = core.now(), 0
      while core.now() - t0 < 1 do
        local s = r:stanza(0.2)
        if s then n = n + 1 end
      end
      -- about 20 KB per second are read: far fewer than 4000 answers
      assert.is_true(n > 0)
      assert.is_true(n * #ping < 3 * 20000 + 65536, "answered " .. n .. " pings in one second")
      still_serving(port)
      r:close()
    end)
  end)

  it("returns to where it was after a flood of connections closes", function()
    serve.run({ users = USERS, limits = { max_per_ip = 1000 } }, function(srv, port)
      collectgarbage()
      local before = collectgarbage("count")
      do
        local list = {}
        for i = 1, 200 do
          list[i] = raw.connect(port)
          list[i]:send(H)
        end
        assert.truthy(serve.until_true(function() return srv:stats().streams == 200 end))
        for _, r in ipairs(list) do r:close() end
      end
      assert.truthy(serve.until_true(function() return srv:stats().streams == 0 end))
      lxmpp.sleep(0.1)
      collectgarbage()
      collectgarbage()
      assert.same({}, srv.per_ip)
      assert.equal(0, srv.unauth)
      assert.is_true(collectgarbage("count") < before + 256, "Lua memory grew by " ..
        (collectgarbage("count") - before) .. " KiB")
      still_serving(port)
    end)
  end)
end)

describe("embedded server: hostile components", function()
  local function comp_header()
    return "<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='gw.example.test'>"
  end
  it("a stanza before the handshake -> not-authorized; a wrong handshake too", function()
    serve.run({ users = USERS, components = { ["gw.example.test"] = "s3cret" }, component_listen = "127.0.0.1:0" },
      function(_, port, ports)
        local r = raw.connect(ports.component)
        r:send(comp_header() .. "<message from='x@gw.example.test' to='alice@example.test'/>")
        assert.equal("not-authorized", (r:stream_error()))
        local r2 = raw.connect(ports.component)
        r2:send(comp_header() .. "<handshake>0000</handshake>")
        assert.equal("not-authorized", (r2:stream_error()))
        local r3 = raw.connect(ports.component)
        r3:send("<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='other.example.test'>")
        assert.equal("host-unknown", (r3:stream_error()))
        still_serving(port)
      end)
  end)
end)

describe("embedded server: its own errors", function()
  it("a bug while handling a stanza ends that stream only (internal-server-error), never the server", function()
    local logged = {}
    serve.run({ users = USERS, logger = function(level, msg) logged[#logged + 1] = level .. " " .. msg end },
      function(srv, port)
      local im = srv.im
      local real = im.server_iq
      im.server_iq = function(self, iq)
        if iq.tags[1] and iq.tags[1].attr.xmlns == "urn:example:boom" then error("boom") end
        return real(self, iq)
      end
      local r = raw_login(port, "alice", "alice-pw")
      r:send("<iq type='get' id='x' to='example.test'><q xmlns='urn:example:boom'/></iq>")
      assert.equal("internal-server-error", (r:stream_error()))
      still_serving(port)
    end)
    assert.matches("^error .*boom", logged[#logged])
  end)
end)

-- A client still sending when the server ends its stream reads the stream
-- error and </stream:stream>, then the server's EOF (RFC 6120 §4.4, §4.9):
-- the server reads and drops what it sends meanwhile and closes its socket
-- after the client's EOF (a lingering close, csrc/net_io.c lx_net_drain).
-- Before, it closed on unread input, and its kernel answered with a RST:
-- the client's send failed with ECONNRESET and the error could be lost.
describe("embedded server: closing on a client that is still sending", function()
  local linger_peer = require "spec.support.linger_peer"
  local ERRNS = "xmlns='urn:ietf:params:xml:ns:xmpp-streams'"

  it("a client in the middle of an oversize stanza reads its policy-violation, not a reset", function()
    serve.run({ users = USERS, limits = { max_stanza_size = 4096 } }, function(_, port)
      local r = linger_peer.run(port, { header = raw.header(), mode = "block", rcvbuf = 4096,
        payload = "<message><body>" .. ("x"):rep(2 * 1024 * 1024) .. "</body></message>" })
      assert.equal("none", r.send_error)
      assert.equal("eof", r["end"])
      assert.truthy(r.last:find("<stream:error><policy-violation " .. ERRNS .. "/>", 1, true), r.last)
      assert.equal("</stream:stream>", r.last:sub(-16))
      still_serving(port)
    end)
  end)

  it("srv:stop() while a client is sending: it reads its system-shutdown, not a reset", function()
    serve.run({ users = USERS }, function(srv, port)
      lxmpp.spawn(function()
        -- once the client is sending (the server has read 64 KiB of it),
        -- its stream stops reading for a moment, as the server's read
        -- pausing (limits.rate, an output backlog) does, so that the
        -- client is still sending when the server stops
        local t0 = core.now()
        while core.now() - t0 < 10 * slow do
          for s in pairs(srv.streams) do
            if s.conn and s.conn:bytes_in() > 65536 then
              s.conn:pause()
              lxmpp.sleep(0.2)
              return srv:stop()
            end
          end
          lxmpp.sleep(0.01)
        end
      end)
      -- whitespace between stanzas, 16 MiB: more than the socket buffers hold
      local r = linger_peer.run(port, { header = raw.header(), mode = "block", rcvbuf = 4096,
        payload = (" "):rep(16 * 1024 * 1024) })
      assert.equal("none", r.send_error)
      assert.equal("eof", r["end"])
      assert.truthy(r.last:find("<stream:error><system-shutdown " .. ERRNS .. "/>", 1, true), r.last)
      assert.equal("</stream:stream>", r.last:sub(-16))
    end)
  end)
end)
