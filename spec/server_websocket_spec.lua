-- XMPP over WebSocket (RFC 7395), both sides of lxmpp: the embedded
-- server's /xmpp-websocket endpoint and lxmpp.connect{ url = ... }. A
-- WebSocket stream is an ordinary c2s stream over another transport: it
-- logs in, routes to and from TCP clients, resumes with XEP-0198; and the
-- endpoint refuses every handshake RFC 6455 §4.2.1 and RFC 7395 §3.1 rule out.
local lxmpp = require "lxmpp"
local http = require "lxmpp.http"
local ws = require "lxmpp.websocket"
local serve = require "spec.support.serve"

local USERS = { alice = "alice-pw", bob = "bob-pw" }

local function ports_of(srv)
  local p = {}
  for _, a in ipairs(srv:addresses()) do p[a.kind] = p[a.kind] or a.port end
  return p
end

local function ws_login(url, user, extra)
  local o = { jid = user .. "@example.test/web", password = USERS[user], url = url, cafile = serve.pki().ca }
  for k, v in pairs(extra or {}) do o[k] = v end
  return lxmpp.connect(o)
end

-- An upgrade request with these headers (nil drops a default one).
local function handshake(port, headers, method)
  local h = { Upgrade = "websocket", ["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ==",
    ["Sec-WebSocket-Version"] = "13", ["Sec-WebSocket-Protocol"] = "xmpp" }
  for k, v in pairs(headers) do h[k] = v or nil end    -- false drops the header
  local status, rh, body, conn = http.request({ method = method or "GET",
    url = ("http://127.0.0.1:%d/xmpp-websocket"):format(port), upgrade = true, headers = h, timeout = 10 })
  if conn then conn:abort() end
  return status, rh, body
end

describe("XMPP over WebSocket", function()
  it("logs in over ws:// (web.consider_secure on loopback), talks with a TCP client, and closes cleanly", function()
    serve.run({ users = USERS, http = "127.0.0.1:0", web = { consider_secure = true } }, function(srv, port)
      local url = ("ws://127.0.0.1:%d/xmpp-websocket"):format(ports_of(srv).http)
      local a = assert(ws_login(url, "alice", { tls = "none" }))
      assert.equal("alice@example.test/web", a.jid)
      local sess = srv:session("alice@example.test/web")
      assert.equal("websocket", sess.framing.name)
      local b = assert(serve.login(port, "bob", USERS.bob))
      local to_a, to_b = serve.collect(a, "message"), serve.collect(b, "message")
      a:send_message("bob@example.test/r", "from the web")
      b:send_message("alice@example.test/web", "from TCP")
      assert(serve.until_true(function() return #to_a == 1 and #to_b == 1 end))
      assert.equal("from the web", to_b[1]:get_child_text("body"))
      assert.equal("alice@example.test/web", to_b[1].attr.from)
      assert.equal("from TCP", to_a[1]:get_child_text("body"))
      assert(a:request(lxmpp.stanza.iq({ type = "get", to = "example.test" }):tag("ping", { xmlns = "urn:xmpp:ping" })))
      a:close()
      assert(serve.until_true(function() return srv:session("alice@example.test/web") == nil end))
      assert.equal("stream closed by the peer", sess.end_reason)
      b:close()
    end)
  end)

  it("logs in over wss:// with the server's certificate and channel binding, and resumes after the link dies", function()
    serve.run({ users = USERS, https = "127.0.0.1:0" }, function(srv, port)
      local url = ("wss://example.test:%d/xmpp-websocket"):format(ports_of(srv).https)
      local a = assert(ws_login(url, "alice", { host = "127.0.0.1", reconnect = { delay = 0.05 } }))
      assert.matches("^SCRAM%-SHA%-256%-PLUS$", a.sasl_mechanism)   -- bound to the wss:// TLS
      local b = assert(serve.login(port, "bob", USERS.bob))
      local back = false
      a:on("reconnected", function() back = true end)
      srv:session("alice@example.test/web").conn:abort()
      local seen = serve.collect(a, "message")
      b:send_message("alice@example.test/web", "while away")
      assert(serve.until_true(function() return #seen == 1 and back end, 10))
      assert.equal("while away", seen[1]:get_child_text("body"))
      assert.truthy(a.resumed)
      a:close()
      b:close()
    end)
  end)

  it("finds the endpoint with XEP-0156 (discover = true) over HTTPS, and refuses what is not advertised", function()
    serve.run({ users = USERS, https = "127.0.0.1:0" }, function(srv)
      local https = ports_of(srv).https
      local a = assert(lxmpp.connect({ jid = "alice@example.test/found", password = USERS.alice, discover = true,
        host = "127.0.0.1", port = https, cafile = serve.pki().ca }))
      assert.equal("websocket", srv:session("alice@example.test/found").framing.name)
      a:close()
      local url = assert(ws.discover("example.test", { address = "127.0.0.1", port = https, cafile = serve.pki().ca }))
      assert.equal(("wss://example.test:%d/xmpp-websocket"):format(https), url)
      -- a host-meta that is not there, or over a certificate that does not verify
      local none, msg = ws.discover("example.test", { address = "127.0.0.1", port = ports_of(srv).c2s, timeout = 3,
        cafile = serve.pki().ca })
      assert.is_nil(none)
      assert.matches("XEP%-0156 discovery", msg)
      local bad, _, cond = ws.discover("example.test", { address = "127.0.0.1", port = https, timeout = 5 })
      assert.is_nil(bad)
      assert.equal("tls-verify-failed", cond)
      assert.has_error(function() lxmpp.connect({ jid = "a@b", password = "x", discover = true, url = "wss://b/" }) end)
    end)
  end)

  it("offers neither STARTTLS nor authentication over plain ws:// unless told it is protected", function()
    serve.run({ users = USERS, http = "127.0.0.1:0" }, function(srv)
      local url = ("ws://127.0.0.1:%d/xmpp-websocket"):format(ports_of(srv).http)
      local c, msg = ws_login(url, "alice", { tls = "none", reconnect = false })
      assert.is_nil(c)
      assert.matches("no SASL", msg)
    end)
  end)

  it("refuses handshakes RFC 6455 and RFC 7395 rule out", function()
    serve.run({ users = USERS, http = "127.0.0.1:0", web = { consider_secure = true } }, function(srv)
      local port = ports_of(srv).http
      local status, headers = handshake(port, { ["Sec-WebSocket-Protocol"] = false })
      assert.equal(400, status)                          -- no xmpp subprotocol
      assert.is_nil(headers["sec-websocket-accept"])   -- no switch
      assert.equal(400, (handshake(port, { ["Sec-WebSocket-Protocol"] = "chat, superchat" })))
      assert.equal(400, (handshake(port, { ["Sec-WebSocket-Key"] = "c2hvcnQ=" })))          -- 5 bytes, not 16
      assert.equal(400, (handshake(port, { ["Sec-WebSocket-Key"] = false })))
      status, headers = handshake(port, { ["Sec-WebSocket-Version"] = "8" })
      assert.equal(426, status)
      assert.equal("13", headers["sec-websocket-version"])
      assert.equal(426, (handshake(port, { Upgrade = false })))
      assert.equal(405, (handshake(port, {}, "POST")))
      -- a plain GET is not a WebSocket
      assert.equal(426, (http.request({ url = ("http://127.0.0.1:%d/xmpp-websocket"):format(port), timeout = 10 })))
      -- the accepted one: 101 with the RFC 6455 §1.3 answer and the subprotocol
      status, headers = handshake(port, {})
      assert.equal(101, status)
      assert.equal("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", headers["sec-websocket-accept"])
      assert.equal("xmpp", headers["sec-websocket-protocol"])
    end)
  end)

  it("the client refuses a server that does not agree to the xmpp subprotocol or answers wrong", function()
    lxmpp.run(function()
      local httpd = require "lxmpp.server.httpd"
      local taken = {}       -- the connections the handler upgraded: closed at the end
      local answers = {
        function(res) res:send(200, {}, "hello") end,
        function(res, key)   -- a 101 without the subprotocol
          local conn = res:upgrade()
          taken[#taken + 1] = conn
          conn:write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
            "Sec-WebSocket-Accept: " .. ws.accept(key) .. "\r\n\r\n")
        end,
        function(res)        -- a 101 with a wrong accept value
          local conn = res:upgrade()
          taken[#taken + 1] = conn
          conn:write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
            "Sec-WebSocket-Accept: AAAA\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n")
        end,
      }
      local n = 0
      local l = assert(httpd.listen({ ip = "127.0.0.1", port = 0, handler = function(req, res)
        n = n + 1
        answers[n](res, req.headers["sec-websocket-key"])
      end }))
      local url = ("ws://127.0.0.1:%d/xmpp-websocket"):format(l:port())
      for _, want in ipairs({ "HTTP 200", "xmpp subprotocol", "Sec%-WebSocket%-Accept" }) do
        local t, msg, cond = ws.connect(url, { timeout = 5 })
        assert.is_nil(t)
        assert.matches(want, msg)
        assert.equal("remote-connection-failed", cond)
      end
      l:close()
      for _, conn in ipairs(taken) do conn:abort() end
      -- and a URL that is neither WebSocket nor BOSH is misuse
      assert.has_error(function() lxmpp.connect({ jid = "a@b", password = "x", url = "ftp://b/ws" }) end)
    end)
  end)
end)

describe("a client over BOSH (XEP-0206)", function()
  it("logs in to the server's /http-bind, talks with a TCP client, and terminates on close", function()
    serve.run({ users = USERS, http = "127.0.0.1:0", web = { consider_secure = true } }, function(srv, port)
      local url = ("http://127.0.0.1:%d/http-bind"):format(ports_of(srv).http)
      local a = assert(lxmpp.connect({ jid = "alice@example.test/bosh", password = USERS.alice, url = url,
        tls = "none", stream_management = false, reconnect = false }))
      assert.equal("alice@example.test/bosh", a.jid)
      local b = assert(serve.login(port, "bob", USERS.bob))
      local to_a, to_b = serve.collect(a, "message"), serve.collect(b, "message")
      a:send_message("bob@example.test/r", "over BOSH")
      b:send_message("alice@example.test/bosh", "to BOSH")
      assert(serve.until_true(function() return #to_a == 1 and #to_b == 1 end, 10))
      assert.equal("over BOSH", to_b[1]:get_child_text("body"))
      assert.equal("to BOSH", to_a[1]:get_child_text("body"))
      assert(a:request(lxmpp.stanza.iq({ type = "get", to = "example.test" }):tag("ping", { xmlns = "urn:xmpp:ping" })))
      a:close()
      assert(serve.until_true(function() return srv:session("alice@example.test/bosh") == nil end))
      assert.equal(0, srv.web.bosh_service:count())
      b:close()
    end)
  end)

  it("fails clearly on an endpoint that answers no <body/> or an HTTP error", function()
    lxmpp.run(function()
      local httpd = require "lxmpp.server.httpd"
      local answers = {
        function(res) res:send(200, { ["Content-Type"] = "text/xml" }, "<html/>") end,
        function(res) res:send(404, {}, "no BOSH here") end,
      }
      local n = 0
      local l = assert(httpd.listen({ ip = "127.0.0.1", port = 0, handler = function(_, res)
        n = n + 1
        answers[n](res)
      end }))
      local url = ("http://127.0.0.1:%d/http-bind"):format(l:port())
      for _, want in ipairs({ "not a <body/>", "HTTP 404" }) do
        local c, msg = lxmpp.connect({ jid = "a@example.test/x", password = "pw", url = url, tls = "none",
          reconnect = false, timeout = 10 })
        assert.is_nil(c)
        assert.truthy(msg:find(want, 1, true), msg)
      end
      l:close()
    end)
  end)
end)
