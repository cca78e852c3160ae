-- The embedded server's stream layer (server/stream.lua, the restarts in
-- server/c2s.lua), in raw bytes: stream errors on a restarted stream, the
-- negotiation deadline against the caps on unauthenticated streams, and
-- whitespace before a restarted stream's header.
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local serve = require "spec.support.serve"
local raw = require "spec.support.raw"

local USERS = { alice = "alice-pw", bob = "bob-pw" }
local NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
local NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
local PLAIN = "<auth xmlns='" .. NS_SASL .. "' mechanism='PLAIN'>" ..
  core.base64_encode("\0alice\0alice-pw") .. "</auth>"

-- Raw client up to the point where it must send a new stream header:
-- "tls" right after the TLS handshake that followed <proceed/>, "sasl"
-- right after <success/> (over TLS).
local function up_to_restart(port, point)
  local r = raw.connect(port)
  if point == "tls" then
    r:send(raw.header())
    assert.equal("features", assert(r:stanza()).name)
    r:send("<starttls xmlns='" .. NS_TLS .. "'/>")
    assert.equal("proceed", assert(r:stanza()).name)
    r.conn:starttls(assert(core.tls_context({ mode = "client", cafile = serve.pki().ca })), serve.DOMAIN)
    local ev = r:next()
    assert(ev and ev.tls, "TLS did not complete")
  else
    r:negotiate_tls(serve.pki().ca)
    r:send(PLAIN)
    assert.equal("success", assert(r:stanza()).name)
    r.conn:restart()
  end
  return r
end

-- Everything the server sends until it closes: the events of raw.lua.
local function until_closed(r, timeout)
  local evs = {}
  while true do
    local ev = r:next(timeout)
    assert(ev, "the server did not close the stream")
    evs[#evs + 1] = ev
    if ev.closed then return evs end
  end
end

-- The server opened the new stream, then sent <stream:error/> with cond,
-- then closed it: RFC 6120 §4.9.1.2.
local function assert_opened_then_error(evs, cond)
  local open = evs[1] and evs[1].open
  assert(open, "the first thing after the restart is not a stream header")
  assert.equal(serve.DOMAIN, open.from)
  assert.equal("1.0", open.version)
  assert.is_string(open.id)
  local s = evs[2] and evs[2].stanza
  assert(s and s.name == "error" and s.attr.xmlns == raw.NS_STREAMS, "no stream error after the header")
  assert.truthy(s:get_child(cond, raw.NS_ERRORS), "expected <" .. cond .. "/>")
  assert.truthy(evs[3] and (evs[3].close or evs[3].closed), "the stream was not closed after the error")
  for i = 2, #evs do assert.is_nil(evs[i].open, "a second stream header") end
end

describe("embedded server: stream errors on a restarted stream open the stream first", function()
  for _, point in ipairs({ "tls", "sasl" }) do
    local after = point == "tls" and "after STARTTLS" or "after SASL success"

    it(after .. ", a deadline before the client's new header", function()
      serve.run({ users = USERS, limits = { negotiation_timeout = 2 } }, function(_, port)
        local r = up_to_restart(port, point)
        assert_opened_then_error(until_closed(r, 5), "connection-timeout")
      end)
    end)

    it(after .. ", bytes that are not XML instead of the new header", function()
      serve.run({ users = USERS }, function(_, port)
        local r = up_to_restart(port, point)
        r:send("<<<>>>")
        assert_opened_then_error(until_closed(r), "not-well-formed")
      end)
    end)

    it(after .. ", a new header in the wrong namespace", function()
      serve.run({ users = USERS }, function(_, port)
        local r = up_to_restart(port, point)
        r:send("<stream:stream xmlns='jabber:server' xmlns:stream='" .. raw.NS_STREAMS ..
          "' to='example.test' version='1.0'>")
        assert_opened_then_error(until_closed(r), "invalid-namespace")
      end)
    end)
  end

  it("does not open the stream twice when the error follows the answered header", function()
    serve.run({ users = USERS }, function(_, port)
      local r = up_to_restart(port, "sasl")
      r:send(raw.header())
      assert.equal("features", assert(r:stanza()).name)
      r:send("<<<")
      local evs = until_closed(r)
      for _, ev in ipairs(evs) do assert.is_nil(ev.open, "a second stream header") end
      local s = evs[1].stanza
      assert.truthy(s and s:get_child("not-well-formed", raw.NS_ERRORS))
    end)
  end)
end)

describe("embedded server: whitespace before a restarted stream's header", function()
  -- go-xmpp writes "</auth>\n", then the new "<?xml version='1.0'?>"
  for _, how in ipairs({ "in the same segment as <auth/>", "on its own before the header" }) do
    it("is taken " .. how, function()
      serve.run({ users = USERS }, function(_, port)
        local r = raw.connect(port)
        r:negotiate_tls(serve.pki().ca)
        if how:match("same") then
          r:send(PLAIN .. "\r\n \t\n")
        else
          r:send(PLAIN)
        end
        assert.equal("success", assert(r:stanza()).name)
        r.conn:restart()
        if not how:match("same") then
          r:send("\n")
          lxmpp.sleep(0.05)
        end
        r:send(raw.header())
        local f = assert(r:stanza())
        assert.equal("features", f.name)
        assert.truthy(f:get_child("bind", "urn:ietf:params:xml:ns:xmpp-bind"))
        r:close()
      end)
    end)
  end

  it("still refuses junk before the restarted header", function()
    serve.run({ users = USERS }, function(_, port)
      local r = up_to_restart(port, "sasl")
      r:send("\n.\n" .. raw.header())
      assert_opened_then_error(until_closed(r), "not-well-formed")
    end)
  end)
end)

describe("embedded server: the negotiation deadline and the caps on unauthenticated streams", function()
  local slow = require("spec.support.slow").factor

  it("by default gives a person at a certificate prompt more than two minutes", function()
    local default = require("lxmpp.server").DEFAULT_LIMITS.negotiation_timeout
    assert.is_true(default >= 150, "negotiation_timeout is " .. default .. " s")
    serve.run({ users = USERS }, function(srv)
      assert.equal(default, srv.limits.negotiation_timeout)
    end)
  end)

  it("lets in a client that waits at the prompt for most of the deadline, then stops timing it", function()
    -- the default's proportions: 120 s at the prompt of 180 s
    local deadline, prompt = 1.5 * slow, 1.0 * slow
    serve.run({ users = USERS, limits = { negotiation_timeout = deadline } }, function(_, port)
      local r = up_to_restart(port, "tls")
      lxmpp.sleep(prompt)                       -- the person reads the certificate
      r:send(raw.header())
      assert.equal("features", assert(r:stanza()).name)
      r:send(PLAIN)
      assert.equal("success", assert(r:stanza()).name)
      r.conn:restart()
      r:send(raw.header())
      assert.equal("features", assert(r:stanza()).name)
      r:send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
      assert.equal("result", assert(r:stanza()).attr.type)
      lxmpp.sleep(deadline - prompt + 0.3 * slow)  -- past the deadline: bound, so no longer timed
      r:send("<iq type='get' id='p' to='example.test'><ping xmlns='urn:xmpp:ping'/></iq>")
      local pong = assert(r:stanza())
      assert.equal("result", pong.attr.type)
      r:close()
    end)
  end)

  it("counts the deadline from accept, not from the last byte (a slowloris dribbling bytes)", function()
    local deadline = 0.8 * slow
    serve.run({ users = USERS, limits = { negotiation_timeout = deadline } }, function(_, port)
      local r = raw.connect(port)
      local h, t0, i = raw.header(), core.now(), 0
      while #r.q == 0 and i < #h do              -- one byte every 50 ms: 7 s for the header
        i = i + 1
        r:send(h:sub(i, i))
        lxmpp.sleep(0.05 * slow)                 -- (the header outlasts the deadline under Valgrind too)
      end
      assert.equal("connection-timeout", (r:stream_error()))
      local took = core.now() - t0
      assert.is_true(took >= deadline - 0.05 and took < deadline + 1 * slow, "cut after " .. took .. " s")
      assert.is_true(i < #h, "the whole header went through")
    end)
  end)

  it("holds what slowloris streams can keep within the caps, per address and in all, with the long deadline", function()
    -- the default deadline: what bounds the attack is the caps, not time
    serve.run({ users = USERS, listen = { "127.0.0.1:0", "[::1]:0" }, limits = { max_per_ip = 4, max_unauthenticated = 6 } },
      function(srv)
        local v4, v6
        for _, a in ipairs(srv:addresses()) do
          if a.ip == "::1" then v6 = a.port else v4 = v4 or a.port end
        end
        local alice = raw.login(v4, serve.pki().ca, "alice", "alice-pw")   -- counts per address only
        local partial = raw.header():sub(1, 40)   -- an unfinished header, then nothing
        local held = {}
        local function hold(port, host)
          local r = raw.connect(port, host)
          r:send(partial)
          held[#held + 1] = r
          return r
        end
        for _ = 1, 3 do hold(v4) end
        assert.truthy(serve.until_true(function() return srv:stats().unauthenticated == 3 end))
        local cond, text = hold(v4):stream_error()    -- alice's and 3: the address is full
        assert.equal("policy-violation", cond)
        assert.matches("your address", text)
        for _ = 1, 3 do hold(v6, "::1") end
        assert.truthy(serve.until_true(function() return srv:stats().unauthenticated == 6 end))
        cond, text = hold(v6, "::1"):stream_error()   -- 6 unauthenticated in all
        assert.equal("policy-violation", cond)
        assert.matches("try again later", text)
        assert.equal(6, srv:stats().unauthenticated)
        assert.same({ ["127.0.0.1"] = 4, ["::1"] = 3 }, srv.per_ip)
        -- the authenticated session is not held up
        alice:send("<iq type='get' id='p' to='example.test'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert.equal("result", assert(alice:stanza()).attr.type)
        for _, r in ipairs(held) do r:close() end
        assert.truthy(serve.until_true(function() return srv:stats().unauthenticated == 0 end))
        assert.same({ ["127.0.0.1"] = 1 }, srv.per_ip)
        local c = assert(serve.login(v4, "bob", "bob-pw"))
        c:close()
        alice:close()
      end)
  end)
end)

describe("per-address connection counts", function()
  -- Loopback offers one IPv6 address, so the peers are a conn's stand-in:
  -- what Server:accept reads of a connection (info, framing) and what its
  -- refusal writes.
  local transport = require "lxmpp.transport"
  local function fake_conn(peer)
    local c = { framing = transport.xml, out = {} }
    function c.info() return { peer = peer, port = 5555 } end
    function c.write(_, s) c.out[#c.out + 1] = s return true end
    function c.close() c.closed = true end
    function c.abort() c.closed = true end
    return c
  end

  it("count an IPv6 peer by its /64, an IPv4 one (mapped too) by its address", function()
    serve.run({ users = USERS, limits = { max_per_ip = 2 } }, function(srv)
      local streams = {}
      for _, ip in ipairs({ "2001:db8:1:2::1", "2001:db8:1:2:ffff::9" }) do
        local s = { ip = ip }
        srv:account_open(s)
        streams[#streams + 1] = s
      end
      assert.same({ ["2001:db8:1:2::/64"] = 2 }, srv.per_ip)
      -- a third address of the same /64 is over the limit
      local c = fake_conn("2001:db8:1:2:abcd::77")
      srv:accept(c, "c2s")
      assert.is_true(c.closed)
      local out = table.concat(c.out)
      assert.matches("policy-violation", out, 1, true)
      assert.matches("too many connections from your address", out, 1, true)
      -- IPv4 and its mapped form are one address
      for _, ip in ipairs({ "192.0.2.7", "::ffff:192.0.2.7" }) do
        local s = { ip = ip }
        srv:account_open(s)
        streams[#streams + 1] = s
      end
      assert.equal(2, srv.per_ip["192.0.2.7"])
      local v4 = fake_conn("192.0.2.7")
      srv:accept(v4, "c2s")
      assert.is_true(v4.closed)
      -- closing releases the counts
      for _, s in ipairs(streams) do srv:account_close(s) end
      assert.same({}, srv.per_ip)
    end)
  end)
end)

describe("embedded server: stream headers", function()
  -- Each header's bytes are made once per server, framing and attributes
  -- (server/stream.lua, header_parts): what goes out must still be what the
  -- framing makes for this stream, with this server's domain and a new id.
  local net = require "lxmpp.net"
  local transport = require "lxmpp.transport"

  -- The server's bytes up to its first '>' after "<stream:stream", for a
  -- client header naming `to`; and the id in them.
  local function header_of(port, to)
    local conn = assert(net.connect("127.0.0.1", port))
    conn:raw()
    local got = {}
    conn:on("data", function(b) got[#got + 1] = b end)
    conn:write(raw.header(to))
    assert.is_true(serve.until_true(function()
      return table.concat(got):find("<stream:stream[^>]*>") ~= nil
    end, 5 * require("spec.support.slow").factor))
    conn:abort()
    local bytes = table.concat(got):match("^(.-<stream:stream[^>]*>)")
    return bytes, bytes:match(" id='([^']*)'")
  end

  it("are the framing's bytes, with this server's domain and a new id each time", function()
    local p = serve.pki()
    serve.run({ users = USERS }, function(_, port)
      local other = lxmpp.server({ domain = "other.test", listen = "127.0.0.1:0", log_level = "error",
        tls = { cert = p.certs.good.cert, key = p.certs.good.key } })
      assert(other:start())
      local other_port = other:addresses()[1].port
      local ids = {}
      for _ = 1, 2 do
        for _, srv in ipairs({ { port, serve.DOMAIN }, { other_port, "other.test" } }) do
          local bytes, id = header_of(srv[1], srv[2])
          assert.matches("^%x+$", id)
          assert.equal(24, #id)
          assert.is_nil(ids[id], "a stream id given twice")
          ids[id] = true
          assert.equal(transport.xml.open("jabber:client",
            { id = id, from = srv[2], version = "1.0", ["xml:lang"] = "en" }), bytes)
          -- the header that opens a stream error (here: a domain not served) has no xml:lang
          bytes, id = header_of(srv[1], "nowhere.test")
          assert.equal(transport.xml.open("jabber:client", { id = id, from = srv[2], version = "1.0" }), bytes)
        end
      end
      other:stop()
    end)
  end)

  it("of a framing that writes the id otherwise are made each time, with the id", function()
    local Stream = require("lxmpp.server.stream").Stream
    local framing = { name = "test", open = function(ns, attr)
      return "<open ns='" .. ns .. "' from='" .. attr.from .. "'>" .. attr.id .. "</open>"
    end }
    local out = {}
    local s = setmetatable({ framing = framing, default_ns = "jabber:client" }, { __index = Stream })
    function s.write(_, bytes) out[#out + 1] = bytes; return true end
    for i = 1, 3 do
      s:send_header({ from = "example.test" })
      assert.equal("<open ns='jabber:client' from='example.test'>" .. s.stream_id .. "</open>", out[i])
    end
    assert.are_not.equal(out[1], out[2])
  end)
end)

describe("embedded server: accepting a connection", function()
  -- srv:accept reads the peer's address for its limits (a getpeername
  -- system call and a table); the stream it starts takes it from there
  -- instead of reading it again, for every kind of listener.
  local net = require "lxmpp.net"

  it("reads the peer's address once per connection, c2s, s2s and component alike", function()
    serve.run({ users = USERS, s2s_listen = "127.0.0.1:0",
      components = { ["gw.example.test"] = "s3cret" }, component_listen = "127.0.0.1:0" }, function(_, _, ports)
      local probe = assert(net.connect("127.0.0.1", ports.c2s))
      local Conn = getmetatable(probe)
      probe:abort()
      local info, calls = Conn.info, 0
      Conn.info = function(self) calls = calls + 1; return info(self) end
      local ok, err = require("lxmpp.compat").pcall(function()
        for _, kind in ipairs({ "c2s", "s2s", "component" }) do
          assert.is_number(ports[kind], "no " .. kind .. " listener")
          calls = 0
          local r = raw.connect(ports[kind])
          local ns = ({ s2s = "jabber:server", component = "jabber:component:accept" })[kind]
          local to = kind == "component" and "gw.example.test" or serve.DOMAIN
          r:send(ns and raw.header(to):gsub("jabber:client", ns) or raw.header(to))
          local ev = r:next()
          assert(ev and ev.open, kind .. ": the server did not answer the header")
          assert.equal(1, calls, kind .. ": conn:info() calls for one accepted connection")
          r:close()
        end
      end)
      Conn.info = info
      assert(ok, err)
    end)
  end)
end)

describe("embedded server: a stream it ends with an error", function()
  it("leaves the client's c:close() nothing to wait for", function()
    -- the account removed, the server ends the stream (not-authorized);
    -- the client closes its connection on the stream error and reads
    -- nothing after it, its TCP close lingering for the server's EOF
    -- (csrc/net_io.c, lx_net_drain): c:close() must not wait 10 s for a
    -- </stream:stream> it can no longer read
    serve.run({ users = USERS, registration = true }, function(_, port)
      local c = assert(serve.login(port, "bob", "bob-pw", "r"))
      assert.is_true(c:unregister())
      local t0 = core.now()
      c:close()
      assert.is_true(core.now() - t0 < 1, "c:close() took " .. (core.now() - t0) .. " s")
    end)
  end)
end)
