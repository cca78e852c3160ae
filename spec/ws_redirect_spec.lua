-- RFC 7395 §3.6.1 see-other-uri, both sides of lxmpp: the embedded server
-- answers a client's <open/> with <close see-other-uri='...'/> and the
-- WebSocket closing handshake (web.see_other_uri), or redirects one stream
-- (s:redirect); the client follows to the new endpoint and logs in there,
-- keeps it for its reconnections (XEP-0198 resumption included), and
-- refuses a redirect from wss:// down to ws://, to another scheme, or past
-- websocket.MAX_REDIRECTS in a row. A <close/> without the attribute ends
-- the stream as before.
local lxmpp = require "lxmpp"
local http = require "lxmpp.http"
local ws = require "lxmpp.websocket"
local serve = require "spec.support.serve"
local slow = require "spec.support.slow"
local compat = require "lxmpp.compat"
local wsf = require "spec.support.ws_frames"
local frame, unframe = wsf.frame, wsf.unframe
local pcall, xpcall = compat.pcall, compat.xpcall   -- waits inside them on Lua 5.1 too

local USERS = { alice = "alice-pw", bob = "bob-pw" }
local FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
local OPEN = "<open xmlns='" .. FRAMING .. "' to='example.test' version='1.0'/>"
local WAIT = 10 * slow.factor

local function ports_of(srv)
  local p = {}
  for _, a in ipairs(srv:addresses()) do p[a.kind] = p[a.kind] or a.port end
  return p
end

local function ws_url(port) return ("ws://127.0.0.1:%d/xmpp-websocket"):format(port) end

-- A second embedded server, in the current task; stopped by the caller.
local function other_server(opts)
  local p = serve.pki()
  opts.domain = opts.domain or serve.DOMAIN
  opts.listen = opts.listen or "127.0.0.1:0"
  opts.tls = opts.tls or { cert = p.certs.good.cert, key = p.certs.good.key }
  opts.log_level = opts.log_level or "error"
  local srv = lxmpp.server(opts)
  assert(srv:start())
  return srv
end

-- a client's frames are masked (RFC 6455 §5.3)
local KEY = "\017\034\051\068"
local function cframe(payload, op) return frame({ payload, op = op, key = KEY }) end

-- lxmpp.run(fn) for specs with redirectors: whatever fn does, the listeners
-- and connections it leaves are closed, so a failure fails the spec
-- instead of keeping the loop (and the suite) running.
local listeners = {}
local function run(fn)
  lxmpp.run(function()
    local ok, err = xpcall(fn, debug.traceback)
    for i = #listeners, 1, -1 do
      listeners[i]:close()
      listeners[i] = nil
    end
    require("lxmpp.net").abort_all()
    if not ok then error(err, 0) end
  end)
end

-- A test endpoint on a bare HTTP listener: each WebSocket connection gets
-- answer(n, url) (n: its number, url: this endpoint's own URL) written as
-- one message after the client's <open/>: a redirector. Returns the
-- listener, its URL and the connection count (a function).
local function redirector(answer)
  local httpd = require "lxmpp.server.httpd"
  local n, url = 0, nil
  local l = assert(httpd.listen({ ip = "127.0.0.1", port = 0, handler = function(req, res)
    local conn, leftover = res:upgrade()
    n = n + 1
    local mine = n
    conn:write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
      "Sec-WebSocket-Accept: " .. ws.accept(req.headers["sec-websocket-key"]) ..
      "\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n")
    conn:websocket({ role = "server", buffered = leftover })
    conn:on("open", function()
      for _, m in ipairs(answer(mine, url)) do conn:write(m) end
      conn:close()
    end)
    conn:parse()
  end }))
  listeners[#listeners + 1] = l
  url = ws_url(l:port())
  return l, url, function() return n end
end

describe("RFC 7395 §3.6.1 see-other-uri: the server", function()
  it("answers <open/> with exactly <close see-other-uri/> and a close frame, and keeps no stream", function()
    local to = "wss://other.example:5443/xmpp-websocket?a=1&b='2'"
    serve.run({ users = USERS, http = "127.0.0.1:0", web = { consider_secure = true, see_other_uri = to } },
      function(srv)
        local status, _, _, conn, rest = http.request({ url = ("http://127.0.0.1:%d/xmpp-websocket"):format(
          ports_of(srv).http), upgrade = true, timeout = WAIT, headers = { Upgrade = "websocket",
          ["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ==", ["Sec-WebSocket-Version"] = "13",
          ["Sec-WebSocket-Protocol"] = "xmpp" } })
        assert.equal(101, status)
        local got = { rest }
        conn:on("data", function(b) got[#got + 1] = b end)
        conn:on("eof", function() got.eof = true end)
        conn:on("closed", function() got.closed = true end)
        conn:raw()
        conn:write(cframe(OPEN))
        assert(serve.until_true(function() return #unframe(table.concat(got)) >= 2 end, WAIT))
        local fs = unframe(table.concat(got))
        assert.equal(2, #fs)
        assert.same({ op = 1, fin = true, masked = false, payload = "<close xmlns='" .. FRAMING ..
          "' see-other-uri='wss://other.example:5443/xmpp-websocket?a=1&amp;b=&apos;2&apos;'/>" }, fs[1])
        assert.same({ op = 8, fin = true, masked = false, payload = "\003\232" }, fs[2])   -- RFC 6455 §5.5.1, normal closure
        conn:write(cframe("\003\232", 8))
        assert(serve.until_true(function() return got.eof or got.closed end, WAIT))
        conn:close()
        local left = 0
        for _ in srv:each_session() do left = left + 1 end
        assert.equal(0, left)
        assert.equal(0, srv.unauth)
      end)
  end)

  it("refuses a web.see_other_uri that is not a ws:// or wss:// URL, at configuration", function()
    for _, bad in ipairs({ "https://other.example/xmpp-websocket", "ws://", "wss:///path", "wss://a b/x",
      "wss://a\n/x", "other.example", 42, true }) do
      local ok, err = pcall(lxmpp.server, { domain = "example.test", http = "127.0.0.1:0",
        web = { see_other_uri = bad } })
      assert.is_false(ok, tostring(bad))
      assert.matches("web%.see_other_uri must be a ws:// or wss:// URL", err)
    end
    assert.truthy(lxmpp.server({ domain = "example.test", http = "127.0.0.1:0",
      web = { see_other_uri = "ws://127.0.0.1:5280/xmpp-websocket" } }))
  end)

  it("s:redirect() is for WebSocket streams and ws:// or wss:// URLs only", function()
    serve.run({ users = USERS }, function(srv, port)
      local c = assert(serve.login(port, "alice", USERS.alice, "tcp", { reconnect = false }))
      local sess = srv:session("alice@example.test/tcp")
      local ok, msg = sess:redirect("wss://other.example/xmpp-websocket")
      assert.is_nil(ok)
      assert.matches("only WebSocket streams", msg)
      assert.has_error(function() sess:redirect("https://other.example/") end)
      assert.truthy(srv:session("alice@example.test/tcp"))
      c:close()
    end)
  end)
end)

describe("RFC 7395 §3.6.1 see-other-uri: the client", function()
  it("follows the redirect to a second server and logs in there", function()
    serve.run({ users = USERS, http = "127.0.0.1:0", web = { consider_secure = true } }, function(srv_b)
      local b_url = ws_url(ports_of(srv_b).http)
      local log = {}
      local srv_a = other_server({ http = "127.0.0.1:0", web = { consider_secure = true, see_other_uri = b_url },
        log_level = "info", logger = function(_, m) log[#log + 1] = m end })
      local a_url = ws_url(ports_of(srv_a).http)
      local c, msg = lxmpp.connect({ jid = "alice@example.test/web", password = USERS.alice, url = a_url,
        tls = "none", reconnect = false })
      srv_a:stop()
      assert.truthy(c, msg)
      assert.equal("alice@example.test/web", c.jid)
      assert.equal("websocket", srv_b:session("alice@example.test/web").framing.name)
      assert.truthy(serve.logged(log, "redirected to " .. b_url:gsub("%p", "%%%0")))
      c:close()
    end)
  end)

  it("goes to the new endpoint when an established session is redirected, and resumes its session there", function()
    serve.run({ users = USERS, http = { "127.0.0.1:0", "127.0.0.1:0" }, web = { consider_secure = true } },
      function(srv, port)
        local first, second
        for _, a in ipairs(srv.listeners) do
          if a.kind == "http" then
            if first then second = second or a else first = a end
          end
        end
        local c = assert(lxmpp.connect({ jid = "alice@example.test/web", password = USERS.alice,
          url = ws_url(first.port), tls = "none", reconnect = { delay = 0.05 } }))
        local gone, back = nil, nil
        c:on("disconnected", function(m, cond, retry) gone = { m, cond, retry } end)
        c:on("reconnected", function(resumed) back = { resumed } end)
        first.l:close()             -- from now on, only the second listener answers
        assert(srv:session("alice@example.test/web"):redirect(ws_url(second.port)))
        assert(serve.until_true(function() return back ~= nil end, WAIT))
        assert.equal("see-other-host", gone[2])
        assert.is_true(gone[3])
        assert.is_true(back[1])      -- the XEP-0198 session, resumed through the new endpoint
        -- the session works there
        local b = assert(serve.login(port, "bob", USERS.bob))
        local seen = serve.collect(c, "message")
        b:send_message("alice@example.test/web", "after the move")
        assert(serve.until_true(function() return #seen == 1 end, WAIT))
        b:close()
        c:close()
      end)
  end)

  it("refuses a redirect from wss:// down to ws://, and verifies the new host's certificate", function()
    serve.run({ users = USERS, https = "127.0.0.1:0", http = "127.0.0.1:0" }, function(srv)
      local p = ports_of(srv)
      local srv_a = other_server({ https = "127.0.0.1:0", web = { see_other_uri = ws_url(p.http) } })
      local url = ("wss://example.test:%d/xmpp-websocket"):format(ports_of(srv_a).https)
      local c, msg, cond = lxmpp.connect({ jid = "alice@example.test/web", password = USERS.alice, url = url,
        host = "127.0.0.1", cafile = serve.pki().ca, reconnect = false })
      srv_a:stop()
      assert.is_nil(c)
      assert.matches("would lower the connection from wss:// to ws://", msg)
      assert.equal("see-other-host", cond)
      -- wss:// to wss://: the certificate is verified for the new URL's
      -- host (127.0.0.1, which the example.test certificate does not name)
      srv_a = other_server({ https = "127.0.0.1:0",
        web = { see_other_uri = ("wss://127.0.0.1:%d/xmpp-websocket"):format(p.https) } })
      url = ("wss://example.test:%d/xmpp-websocket"):format(ports_of(srv_a).https)
      c, msg, cond = lxmpp.connect({ jid = "alice@example.test/web", password = USERS.alice, url = url,
        host = "127.0.0.1", cafile = serve.pki().ca, reconnect = false })
      srv_a:stop()
      assert.is_nil(c, msg)
      assert.equal("tls-verify-failed", cond)
    end)
  end)

  it("refuses a redirect to another scheme, and more than websocket.MAX_REDIRECTS in a row", function()
    run(function()
      local l, _, count = redirector(function() return { ws.see_other("https://elsewhere.example/") } end)
      local c, msg, cond = lxmpp.connect({ jid = "a@example.test/x", password = "pw", url = ws_url(l:port()),
        tls = "none", reconnect = false, timeout = WAIT })
      assert.is_nil(c)
      assert.matches("not a ws:// or wss:// URL", msg)
      assert.equal("see-other-host", cond)
      assert.equal(1, count())
      -- an endpoint that sends every client back to itself
      local _, loop_url, n = redirector(function(_, url) return { ws.see_other(url) } end)
      c, msg, cond = lxmpp.connect({ jid = "a@example.test/x", password = "pw", url = loop_url,
        tls = "none", reconnect = false, timeout = WAIT })
      assert.is_nil(c)
      assert.matches("more than 5 WebSocket redirects", msg)
      assert.equal("see-other-host", cond)
      assert.equal(1 + ws.MAX_REDIRECTS, n())
    end)
  end)

  it("a <close/> without see-other-uri ends the stream as before", function()
    run(function()
      -- at login: the stream is over, nothing is followed
      local l, _, count = redirector(function()
        return { "<open xmlns='" .. FRAMING .. "' from='example.test' id='x' version='1.0'/>",
          "<close xmlns='" .. FRAMING .. "'/>" }
      end)
      local c, msg, cond = lxmpp.connect({ jid = "a@example.test/x", password = "pw", url = ws_url(l:port()),
        tls = "none", reconnect = false, timeout = WAIT })
      assert.is_nil(c)
      assert.matches("closed the stream", msg)
      assert.equal("closed", cond)
      assert.equal(1, count())
    end)
    -- on an established session: lost as "closed", reconnected to the same endpoint
    serve.run({ users = USERS, http = "127.0.0.1:0", web = { consider_secure = true } }, function(srv)
      local c = assert(lxmpp.connect({ jid = "alice@example.test/web", password = USERS.alice,
        url = ws_url(ports_of(srv).http), tls = "none", reconnect = { delay = 0.05 } }))
      local gone, back = nil, false
      c:on("disconnected", function(m, cond, retry) gone = { m, cond, retry } end)
      c:on("reconnected", function() back = true end)
      srv:session("alice@example.test/web"):close()
      assert(serve.until_true(function() return back end, WAIT))
      assert.equal("closed", gone[2])
      assert.is_nil(c.ws_url)
      c:close()
    end)
  end)
end)
