-- lxmpp.transport: the interface the one stream layer runs over (docs/api.md
-- "Transports"), its two framings, and a second transport beside TCP, the
-- in-process pipe: client and server streams negotiate, exchange stanzas,
-- reconnect and resume over it exactly as over TCP.
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local transport = require "lxmpp.transport"
local net = require "lxmpp.net"
local st = lxmpp.stanza
local serve = require "spec.support.serve"

local USERS = { alice = "alice-pw", bob = "bob-pw" }

describe("transport framings", function()
  it("writes an XML stream header, its end and a stream error (RFC 6120 §4)", function()
    local h = transport.xml.open("jabber:client", { to = "example.test", version = "1.0", id = "a'b" })
    assert.equal("<?xml version='1.0'?><stream:stream xmlns='jabber:client' " ..
      "xmlns:stream='http://etherx.jabber.org/streams' id='a&apos;b' to='example.test' version='1.0'>", h)
    assert.equal("</stream:stream>", transport.xml.close)
    local e, extra = transport.xml.error("host-unknown", "no <such> host")
    assert.is_nil(extra)
    assert.equal("<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" ..
      "<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>no &lt;such&gt; host</text></stream:error></stream:stream>", e)
    assert.is_nil(transport.xml.check_open({ xmlns = "jabber:client" }, "jabber:client"))
    assert.equal("invalid-namespace", (transport.xml.check_open({ xmlns = "jabber:server" }, "jabber:client")))
  end)

  it("writes RFC 7395 <open/>, <close/>, and an error that declares its prefix", function()
    local ws = transport.websocket
    assert.equal("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.test' version='1.0'/>",
      ws.open("jabber:client", { to = "example.test", version = "1.0" }))
    assert.equal("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>", ws.close)
    assert.equal("<stream:features xmlns:stream='http://etherx.jabber.org/streams'>", ws.features)
    local e, close = ws.error("policy-violation")
    assert.equal("<stream:error xmlns:stream='http://etherx.jabber.org/streams'>" ..
      "<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>", e)
    assert.equal(ws.close, close)
    -- each is one well-formed element on its own (one WebSocket message)
    for _, xml in ipairs({ ws.open("jabber:client", { to = "x" }), ws.close, e }) do
      assert.truthy(core.parse_element(xml))
    end
    -- stanzas declare jabber:client themselves; one that names its own
    -- namespace, or only mentions xmlns in a value, is told apart
    assert.equal("<message xmlns='jabber:client' to='a'><body>x</body></message>",
      ws.qualify("<message to='a'><body>x</body></message>"))
    assert.equal("<iq xmlns='jabber:client'/>", ws.qualify("<iq/>"))
    assert.equal("<presence xmlns='jabber:client'>", ws.qualify("<presence>"))
    assert.equal("<r xmlns='urn:xmpp:sm:3'/>", ws.qualify("<r xmlns='urn:xmpp:sm:3'/>"))
    assert.equal("<message xmlns='jabber:client' id='a xmlns=&apos;b'/>", ws.qualify("<message id='a xmlns=&apos;b'/>"))
    assert.is_nil(transport.xml.qualify)
    assert.is_nil(ws.check_open({ xmlns = "jabber:client" }, "jabber:client"))
    assert.equal("invalid-namespace", (ws.check_open({ xmlns = "jabber:server" }, "jabber:client")))
  end)
end)

describe("transport.check", function()
  it("accepts TCP connections and pipes, and names what another object lacks", function()
    local a = transport.pipe()
    assert.equal(a, transport.check(a))
    lxmpp.run(function()
      local l = assert(net.listen("127.0.0.1", 0, function(c) c:close() end))
      local c = assert(net.connect("127.0.0.1", l:port()))
      assert.equal(c, transport.check(c))
      c:abort()
      l:close()
    end)
    local ok, why = transport.check({ write = function() end })
    assert.is_nil(ok)
    assert.matches("no method", why)
    local t = transport.pipe()
    t.framing = {}
    assert.is_nil((transport.check(t)))
    assert.is_nil((transport.check("tcp")))
  end)
end)

describe("transport.pipe", function()
  local function wait_for(pred)
    for _ = 1, 200 do
      if pred() then return true end
      lxmpp.sleep(0.005)
    end
    return pred()
  end

  it("carries a stream both ways, later and in order, with pause, restart and close", function()
    lxmpp.run(function()
      local a, b = transport.pipe("test")
      local got = {}
      b:on("open", function(attr) got[#got + 1] = "open " .. attr.to end)
      b:on("stanza", function(s)
        got[#got + 1] = s.name .. " " .. (s:get_text() or "")
        if s.name == "restart" then b:restart() end
      end)
      b:on("stream-close", function() got[#got + 1] = "close" end)
      b:on("eof", function() got[#got + 1] = "eof" end)
      b:parse({ max_stanza_size = 1000 })
      assert(a:write(transport.xml.open("jabber:client", { to = "x" })))
      assert(a:write("<message>one</message>"))
      assert.same({}, got)                 -- never inside the writer's call
      assert(wait_for(function() return #got == 2 end))
      b:pause()
      a:write("<message>two</message>")
      lxmpp.sleep(0.05)
      assert.equal(2, #got)                -- paused: nothing read
      b:resume()
      -- a restart inside a write: what follows belongs to the new stream
      a:write("<restart/>" .. transport.xml.open("jabber:client", { to = "y" }) .. "<message>three</message>")
      a:write(transport.xml.close)
      a:close()
      assert(wait_for(function() return got[#got] == "eof" end))
      assert.same({ "open x", "message one", "message two", "restart ", "open y", "message three", "close", "eof" }, got)
      assert.equal("test", b:info().peer)
      assert.is_nil((a:write("late")))
    end)
  end)

  it("bounds the writer's queue: resource-constraint, then drain once the reader reads", function()
    lxmpp.run(function()
      local a, b = transport.pipe()
      local header = transport.xml.open("jabber:client", {})
      local chunk = "<m>" .. ("x"):rep(40) .. "</m>"
      a:set_max_queue(#header + #chunk + 10)   -- room for the header and one chunk
      local drained = false
      a:on("drain", function() drained = true end)
      b:on("stanza", function() end)
      b:pause()
      b:parse()
      assert(a:write(header))
      assert(a:write(chunk))
      local ok, _, cond = a:write(chunk)
      assert.is_nil(ok)
      assert.equal("resource-constraint", cond)
      assert.equal(false, drained)
      b:resume()
      assert(wait_for(function() return drained end))
      assert(a:write(chunk))
      assert.equal(#chunk, a:info().queued)
    end)
  end)

  it("reports bad XML as a parse error with its condition", function()
    lxmpp.run(function()
      local a, b = transport.pipe()
      local err
      b:on("parse-error", function(msg, cond) err = { msg, cond } end)
      b:parse({ max_stanza_size = 64 })
      a:write(transport.xml.open("jabber:client", {}))
      a:write("<message>" .. ("x"):rep(100) .. "</message>")
      assert(wait_for(function() return err end))
      assert.equal("policy-violation", err[2])
    end)
  end)
end)

describe("a client of the embedded server over an in-process pipe", function()
  it("logs in without TCP or STARTTLS, and talks with a TCP client", function()
    serve.run({ users = USERS }, function(srv, port)
      local a = assert(lxmpp.connect{ jid = "alice@example.test/pipe", password = USERS.alice,
        transport = function() return srv:pipe("in-process") end })
      assert.equal("alice@example.test/pipe", a.jid)
      local sess = srv:session("alice@example.test/pipe")
      assert.equal("in-process", sess.ip)
      assert.is_true(sess.conn.encrypted)
      local b = assert(serve.login(port, "bob", USERS.bob))
      local to_a, to_b = serve.collect(a, "message"), serve.collect(b, "message")
      a:send_message("bob@example.test/r", "over a pipe")
      b:send_message("alice@example.test/pipe", "over TCP")
      assert(serve.until_true(function() return #to_a == 1 and #to_b == 1 end))
      assert.equal("over a pipe", to_b[1]:get_child_text("body"))
      assert.equal("alice@example.test/pipe", to_b[1].attr.from)
      assert.equal("over TCP", to_a[1]:get_child_text("body"))
      assert.equal("bob@example.test/r", to_a[1].attr.from)
      -- an IQ round trip through the server
      assert(a:request(st.iq({ type = "get", to = "example.test" }):tag("ping", { xmlns = "urn:xmpp:ping" })))
      a:close()
      b:close()
      assert(serve.until_true(function() return srv:session("alice@example.test/pipe") == nil end))
    end)
  end)

  it("reconnects and resumes its XEP-0198 session through the transport function", function()
    serve.run({ users = USERS }, function(srv, port)
      local made = 0
      local a = assert(lxmpp.connect{ jid = "alice@example.test/pipe", password = USERS.alice,
        reconnect = { delay = 0.05 }, transport = function() made = made + 1; return srv:pipe() end })
      local b = assert(serve.login(port, "bob", USERS.bob))
      local back = false
      a:on("reconnected", function() back = true end)
      srv:session("alice@example.test/pipe").conn:abort()     -- the link dies, not the session
      local seen = serve.collect(a, "message")
      b:send_message("alice@example.test/pipe", "while away")
      assert(serve.until_true(function() return #seen == 1 end))
      assert.equal("while away", seen[1]:get_child_text("body"))
      assert(serve.until_true(function() return back end))
      assert.equal(2, made)
      assert.truthy(a.resumed)
      a:close()
      b:close()
    end)
  end)

  it("refuses a transport function that returns something else, with a clear error", function()
    serve.run({ users = USERS }, function()
      local c, msg, cond = lxmpp.connect{ jid = "alice@example.test/x", password = USERS.alice,
        reconnect = false, transport = function() return { write = function() end } end }
      assert.is_nil(c)
      assert.equal("bad-request", cond)
      assert.matches("opts.transport: the transport has no method", msg)
      assert.has_error(function() lxmpp.connect{ jid = "a@b", password = "x", transport = "pipe" } end)
    end)
  end)
end)
