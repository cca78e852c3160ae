-- lxmpp.server.httpd: the HTTP/1.1 listener under WebSocket, BOSH, host-meta
-- and the static folder, driven by raw bytes over real loopback TCP (and TLS
-- with the suite's CA once): methods, keep-alive, pipelining with a late
-- answer, bodies, strict parsing, deadlines, connection limits, static files
-- and traversal attempts, CORS, the upgrade hand-over and its leftover bytes.
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local net = require "lxmpp.net"
local httpd = require "lxmpp.server.httpd"
local pki = require "spec.support.pki"
local slow = require "spec.support.slow"
local clean = require "spec.support.clean"
local http_raw = require "spec.support.http_raw"

local F = slow.factor

local until_true = http_raw.until_true

-- Runs fn(server, port, log) in a task on a listener with handler and opts.
local function run(handler, opts, fn)
  lxmpp.run(function()
    opts = opts or {}
    local log = {}
    opts.ip, opts.port, opts.handler = "127.0.0.1", 0, handler
    opts.log = function(level, fmt, ...) log[#log + 1] = level .. " " .. fmt:format(...) end
    local server = assert(httpd.listen(opts))
    local ok, err = xpcall(fn, debug.traceback, server, server:port(), log)
    server:close()
    net.abort_all()
    lxmpp.sleep(0.02)
    if not ok then error(err, 0) end
  end)
  clean()
end

local client = http_raw.client

local function echo(req, res)
  res:send(200, { ["Content-Type"] = "text/plain" }, req.method .. " " .. req.path .. " " .. #req.body)
end

local function get(path, extra) return "GET " .. path .. " HTTP/1.1\r\nHost: x\r\n" .. (extra or "") .. "\r\n" end

describe("httpd", function()
  it("answers GET and HEAD, and what the handler says for others (404, 405)", function()
    local function handler(req, res)
      if req.path ~= "/here" then return res:send(404, nil, "nothing\n") end
      if req.method ~= "GET" and req.method ~= "HEAD" then
        return res:send(405, { Allow = "GET, HEAD" }, "no\n")
      end
      res:send(200, { ["Content-Type"] = "text/plain" }, "hello")
    end
    run(handler, nil, function(_, port)
      local c = client(port)
      c:send(get("/here"))
      local a = assert(c:answer())
      assert.same({ 200, "hello", "5", "text/plain", "nosniff" }, { a.status, a.body, a.headers["content-length"],
        a.headers["content-type"], a.headers["x-content-type-options"] })
      assert.truthy(a.headers.date)
      c:send("HEAD /here HTTP/1.1\r\nHost: x\r\n\r\n")
      a = assert(c:answer(nil, true))
      assert.same({ 200, "5" }, { a.status, a.headers["content-length"] })
      c:send(get("/missing"))
      assert.equal(404, c:answer().status)
      c:send("DELETE /here HTTP/1.1\r\nHost: x\r\n\r\n")
      a = c:answer()
      assert.same({ 405, "GET, HEAD" }, { a.status, a.headers.allow })
      lxmpp.sleep(0.05)
      assert.equal("", c.buf)                       -- HEAD had no body after all
      assert.is_false(c.closed)
      c:close()
    end)
  end)

  it("keeps a connection for three requests, and closes on Connection: close and for HTTP/1.0", function()
    local peers = {}
    run(function(req, res)
      peers[#peers + 1] = req.conn
      echo(req, res)
    end, nil, function(server, port)
      local c = client(port)
      for i = 1, 3 do
        c:send(get("/r" .. i))
        local a = assert(c:answer())
        assert.same({ 200, "GET /r" .. i .. " 0" }, { a.status, a.body })
        assert.is_nil(a.headers.connection)
      end
      assert.is_true(peers[1] == peers[2] and peers[2] == peers[3])
      assert.equal(1, server:count())
      c:send(get("/last", "Connection: close\r\n"))
      local a = assert(c:answer())
      assert.same({ 200, "close" }, { a.status, a.headers.connection })
      assert.is_true(c:wait_closed())
      local old = client(port)
      old:send("GET /old HTTP/1.0\r\n\r\n")                -- no Host needed in 1.0
      a = assert(old:answer())
      assert.same({ 200, "GET /old 0", "close" }, { a.status, a.body, a.headers.connection })
      assert.is_true(old:wait_closed())
      assert.is_true(until_true(function() return server:count() == 0 end))
    end)
  end)

  it("closes after requests_per_connection answers", function()
    run(echo, { limits = { requests_per_connection = 2 } }, function(_, port)
      local c = client(port)
      c:send(get("/1") .. get("/2") .. get("/3"))
      assert.equal("GET /1 0", c:answer().body)
      local a = c:answer()
      assert.same({ "GET /2 0", "close" }, { a.body, a.headers.connection })
      assert.is_true(c:wait_closed())
      assert.is_nil(c:take())
    end)
  end)

  it("answers pipelined requests in order while the first is answered late", function()
    local seen = {}
    run(function(req, res)
      seen[#seen + 1] = req.path
      if req.path == "/slow" then
        core.timer(0.5 * F, { wake = function() res:send(200, nil, "slow") end })
      else
        res:send(200, nil, "fast " .. req.path)
      end
    end, nil, function(_, port)
      local c = client(port)
      c:send(get("/slow") .. get("/a") .. get("/b"))
      assert.is_true(until_true(function() return #seen == 3 end))
      lxmpp.sleep(0.05)
      assert.equal("", c.buf)                          -- /a and /b wait for /slow
      assert.equal("slow", c:answer().body)
      assert.equal("fast /a", c:answer().body)
      assert.equal("fast /b", c:answer().body)
      -- after the late answer, the connection goes on
      c:send(get("/c"))
      assert.equal("fast /c", c:answer().body)
      c:close()
    end)
  end)

  it("stops reading ahead after `pipeline` unanswered requests, and goes on when they are answered", function()
    local pending = {}
    run(function(req, res) pending[#pending + 1] = { req, res } end, { limits = { pipeline = 2 } }, function(_, port)
      local c = client(port)
      c:send(get("/1") .. get("/2") .. get("/3") .. get("/4"))
      assert.is_true(until_true(function() return #pending == 2 end))
      lxmpp.sleep(0.1)
      assert.equal(2, #pending)
      pending[1][2]:send(200, nil, "one")
      assert.is_true(until_true(function() return #pending == 3 end))
      for i = 2, 3 do pending[i][2]:send(200, nil, tostring(i)) end
      assert.is_true(until_true(function() return #pending == 4 end))
      pending[4][2]:send(200, nil, "4")
      for _, want in ipairs({ "one", "2", "3", "4" }) do assert.equal(want, c:answer().body) end
      c:close()
    end)
  end)

  it("stops reading ahead while max_unsent bytes of answers wait for a late one", function()
    local pending, calls = nil, 0
    run(function(req, res)
      calls = calls + 1
      if req.path == "/late" then pending = res; return end
      res:send(200, nil, ("x"):rep(400000))
    end, nil, function(server, port)
      local c = client(port)
      c:send(get("/late") .. get("/a"):rep(10))
      assert.is_true(until_true(function() return calls == 4 end))
      lxmpp.sleep(0.1)
      assert.equal(4, calls)                            -- 3 x 400000 bytes wait (over 1 MiB): no fifth request
      local unsent = next(server.conns).unsent          -- (with their heads)
      assert.truthy(unsent > 1200000 and unsent < 1201000, unsent)
      pending:send(200, nil, "late")
      assert.equal("late", c:answer().body)
      for _ = 1, 10 do assert.equal(400000, #c:answer().body) end
      assert.equal(11, calls)
      c:close()
    end)
  end)

  it("reads bodies by Content-Length, across writes, and refuses what is over max_body with 413", function()
    local bodies = {}
    run(function(req, res)
      bodies[#bodies + 1] = req.body
      echo(req, res)
    end, { limits = { max_body = 100 } }, function(_, port)
      local c = client(port)
      c:send("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel")
      lxmpp.sleep(0.05)
      c:send("lo" .. get("/after"))                   -- the rest of the body, and the next request
      assert.equal("POST /p 5", c:answer().body)
      assert.equal("GET /after 0", c:answer().body)
      c:send("POST /full HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" .. ("z"):rep(100))
      assert.equal("POST /full 100", c:answer().body)
      assert.same({ "hello", "", ("z"):rep(100) }, bodies)
      c:send("POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n")
      local a = c:answer()
      assert.same({ 413, "close" }, { a.status, a.headers.connection })
      assert.is_true(c:wait_closed())
      assert.equal(3, #bodies)                          -- the handler never saw it
      -- Expect: 100-continue is answered before the body comes
      c = client(port)
      c:send("PUT /e HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
      assert.is_true(until_true(function() return c.buf:find("\r\n\r\n", 1, true) ~= nil end))
      assert.equal("HTTP/1.1 100 Continue\r\n\r\n", c.buf)
      c.buf = ""
      c:send("ok")
      assert.equal("PUT /e 2", c:answer().body)
      c:close()
    end)
  end)

  it("a client still sending the body a 413 refused reads the answer and an EOF, not a reset", function()
    -- the answer closes the connection; the server drops the body that
    -- keeps coming until the client closes (a lingering close, csrc/net_io.c):
    -- before, it closed on unread input and its RST cut the client's send
    local linger_peer = require "spec.support.linger_peer"
    run(echo, { limits = { max_body = 100 } }, function(_, port)
      local r = linger_peer.run(port, { mode = "block", rcvbuf = 4096,
        header = "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 8388608\r\n\r\n",
        payload = ("z"):rep(8388608) })
      assert.equal("none", r.send_error)
      assert.equal("eof", r["end"])
      assert.matches("^HTTP/1.1 413 ", r.last)
    end)
  end)

  it("refuses malformed requests with 400, 411, 431, 501 and 505, and the handler never sees them", function()
    local called = 0
    run(function(req, res)
      called = called + 1
      echo(req, res)
    end, nil, function(_, port)
      local cases = {
        { "\1\2garbage\r\n\r\n", 400 },
        { "GET /x HTTP/1.1\nHost: x\n\n", 400 },                          -- bare LF
        { "GET /x HTTP/1.1\r\nHost: x\rY: z\r\n\r\n", 400 },             -- bare CR
        { "GET  /x HTTP/1.1\r\nHost: x\r\n\r\n", 400 },
        { "GET /x HTTP/1.1 \r\nHost: x\r\n\r\n", 400 },
        { "GET x HTTP/1.1\r\nHost: x\r\n\r\n", 400 },
        { "GET /x HTTP/1.1\r\n\r\n", 400 },                               -- no Host
        { "GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400 },
        { "GET /x HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n", 400 },
        { "GET /x HTTP/1.1\r\nHost : x\r\n\r\n", 400 },                   -- space before the colon
        { "GET /x HTTP/1.1\r\nHost: x\r\nX: a\1b\r\n\r\n", 400 },
        { "GET /x HTTP/1.1\r\nHost: x\r\nX-Long: a\r\n b\r\n\r\n", 400 },  -- obs-fold
        { "GET /x HTTP/1.1\r\nHost: x\r\nX-Long: a\r\n\tb\r\n\r\n", 400 },
        { "GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400 },
        { "GET /a%00b HTTP/1.1\r\nHost: x\r\n\r\n", 400 },
        { "GET /x?a=%g1 HTTP/1.1\r\nHost: x\r\n\r\n", 400 },
        { "GET /x?a=%00 HTTP/1.1\r\nHost: x\r\n\r\n", 400 },
        { "GET ftp://x/y HTTP/1.1\r\nHost: x\r\n\r\n", 400 },
        { "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc", 400 },
        { "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400 },
        { "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc", 400 },
        { "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\nabc", 400 },
        { "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc", 400 },
        { "POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400 },
        { "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 411 },
        { "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501 },
        { "CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", 501 },
        { "GET /x HTTP/2.0\r\nHost: x\r\n\r\n", 505 },
        { "GET /x HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n", 417 },
        { "GET /x HTTP/1.1\r\nHost: x\r\nX: " .. ("a"):rep(9000) .. "\r\n\r\n", 431 },
        { "GET /x HTTP/1.1\r\nHost: x\r\nX: " .. ("a"):rep(9000), 431 },  -- too large before its end
        { "GET /x HTTP/1.1\r\nHost: x\r\n" .. ("A: b\r\n"):rep(64) .. "\r\n", 431 },
      }
      for _, case in ipairs(cases) do
        local c = client(port)
        c:send(case[1])
        local a = c:answer()
        assert.equal(case[2], a and a.status, case[1]:sub(1, 70))
        assert.equal("close", a.headers.connection)
        assert.is_true(c:wait_closed(), case[1]:sub(1, 60))
      end
      assert.equal(0, called)
      -- the limits themselves are fine: 63 headers, a head of 8192 bytes, absolute-form, empty lines first
      local c = client(port)
      c:send("GET /ok HTTP/1.1\r\nHost: x\r\n" .. ("A: b\r\n"):rep(62) .. "\r\n")
      assert.equal(200, c:answer().status)
      local pad = httpd.HEAD_MAX - #"GET /ok HTTP/1.1\r\nHost: x\r\nX: \r\n\r\n"
      c:send("GET /ok HTTP/1.1\r\nHost: x\r\nX: " .. ("p"):rep(pad) .. "\r\n\r\n")
      assert.equal(200, c:answer().status)
      c:send("\r\n\r\nGET http://example.test/abs?q=1 HTTP/1.1\r\nHost: other\r\n\r\n")
      assert.equal("GET /abs 0", c:answer().body)
      c:close()
    end)
  end)

  it("reads a head however it is cut, and still finds a bare LF at a cut", function()
    run(echo, nil, function(_, port)
      local function dribble(c, bytes, size)
        for i = 1, #bytes, size do
          c.conn:write(bytes:sub(i, i + size - 1))
          lxmpp.sleep(0.002)
        end
      end
      local c = client(port)
      local two = "POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" .. get("/e")
      for _, size in ipairs({ 1, 2, 3, 5 }) do
        dribble(c, two, size)
        assert.equal("POST /d 3", c:answer().body, size)
        assert.equal("GET /e 0", c:answer().body, size)
      end
      c:close()
      for _, cut in ipairs({ { "GET /x HTTP/1.1\r\nHost: x\r\nA: b", "\nB: c\r\n\r\n" },
        { "GET /x HTTP/1.1\r\nHost: x\r\n", "\n" } }) do
        c = client(port)
        c:send(cut[1])
        lxmpp.sleep(0.05)
        c:send(cut[2])
        assert.equal(400, c:answer().status)
        c:close()
      end
    end)
  end)

  it("gives the handler the method, paths, query, lowercased headers, peer and conn", function()
    local got
    run(function(req, res)
      got = req
      res:send(204)
    end, nil, function(_, port)
      local c = client(port)
      c:send("GET /a%20b/c?x=1&y=two+words&x=2&z=%26 HTTP/1.1\r\nHost: h\r\nX-Thing: one\r\nx-thing: two\r\n\r\n")
      local a = c:answer()
      assert.same({ 204, nil }, { a.status, a.headers["content-length"] })
      assert.same({ "GET", "/a%20b/c", "/a b/c", "x=1&y=two+words&x=2&z=%26", { x = "1", y = "two words", z = "&" },
        "one, two", "h", "127.0.0.1", "1.1", "" },
        { got.method, got.raw_path, got.path, got.query_string, got.query, got.headers["x-thing"], got.headers.host,
          got.peer, got.version, got.body })
      assert.equal("table", type(got.conn))
      c:close()
    end)
  end)

  it("answers 500 when the handler fails, logs it, and keeps serving", function()
    run(function(req, res)
      if req.path == "/bug" then error("boom") end
      echo(req, res)
    end, nil, function(_, port, log)
      local c = client(port)
      c:send(get("/bug"))
      local a = c:answer()
      assert.same({ 500, "close" }, { a.status, a.headers.connection })
      assert.matches("boom", table.concat(log, "\n"))
      c = client(port)
      c:send(get("/fine"))
      assert.equal(200, c:answer().status)
      c:close()
    end)
  end)

  it("answers 408 to a slow head and a stalled body, closes idle connections, and cuts silent ones", function()
    run(echo, { limits = { head_timeout = 0.3 * F, body_timeout = 0.6 * F, idle_timeout = 0.3 * F } },
      function(server, port)
        local c = client(port)
        c:send("GET /x HTTP/1.1\r\nHost: x\r\n")
        local drips = 0
        while not c.closed and drips < 10 do          -- dripping does not extend the deadline
          lxmpp.sleep(0.1 * F)
          if not c.closed then c.conn:write("X-Drip: " .. drips .. "\r\n") end
          drips = drips + 1
        end
        assert.is_true(drips < 10, "the head deadline moved with the drip")
        local a = c:answer(3)
        assert.equal(408, a and a.status)
        assert.is_true(c:wait_closed())
        c = client(port)
        c:send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        assert.equal(408, c:answer(3).status)
        -- a body that keeps coming, slower in all than the deadline, is taken
        c = client(port)
        c:send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n")
        for _, b in ipairs({ "a", "b", "c" }) do
          lxmpp.sleep(0.15 * F)
          c:send(b)
        end
        assert.equal("POST /x 3", c:answer(3).body)
        -- idle after an answer: closed without a word
        assert.is_true(c:wait_closed(3))
        assert.equal("", c.buf)
        -- connected, never a byte: cut, no answer
        c = client(port)
        assert.is_true(c:wait_closed(3))
        assert.equal("", c.buf)
        assert.is_true(until_true(function() return server:count() == 0 end))
      end)
  end)

  it("cuts a peer that does not read its answers within send_timeout", function()
    local big = ("x"):rep(16 * 1048576)
    run(function(_, res) res:send(200, nil, big) end, { limits = { send_timeout = 0.3 * F } },
      function(server, port, log)
        local c = assert(net.connect("127.0.0.1", port))   -- never reads: no raw(), no parser
        assert(c:write(get("/1") .. get("/2") .. get("/3")))
        assert.is_true(until_true(function() return server:count() == 1 end))
        assert.is_true(until_true(function() return server:count() == 0 end, 3))
        assert.matches("does not read", table.concat(log, "\n"))
        c:abort()
      end)
  end)

  it("bounds connections per address and in all, and counts them back when they close", function()
    run(echo, { limits = { per_ip = 2, connections = 3 } }, function(server, port, log)
      local a, b = client(port), client(port)
      assert.is_true(until_true(function() return server:count() == 2 end))
      local third = client(port)
      assert.is_true(third:wait_closed(2))
      assert.matches("too many", table.concat(log, "\n"))
      assert.equal(2, server:count())
      a:close()
      assert.is_true(until_true(function() return server:count() == 1 end))
      local again = client(port)
      again:send(get("/again"))
      assert.equal(200, again:answer().status)
      b:close()
      again:close()
      assert.is_true(until_true(function() return server:count() == 0 end))
    end)
    run(echo, { limits = { per_ip = 5, connections = 2 } }, function(server, port)
      local a, b = client(port), client(port)
      assert.is_true(until_true(function() return server:count() == 2 end))
      local third = client(port)
      assert.is_true(third:wait_closed(2))
      a:close()
      b:close()
    end)
  end)

  it("hands an upgraded connection over with the bytes read past the request", function()
    local taken, leftover, more, after = nil, nil, {}, nil
    local refused
    run(function(req, res)
      if req.path == "/not-ws" then
        refused = { res:upgrade() }
        return echo(req, res)
      end
      if req.upgrade ~= "websocket" then return echo(req, res) end
      local key = req.headers["sec-websocket-key"]
      if not key then return res:send(400, nil, "no key\n") end
      taken, leftover = res:upgrade()
      after = select(2, pcall(res.upgrade, res))
      taken:on("data", function(b) more[#more + 1] = b end)
      taken:write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        .. "Sec-WebSocket-Accept: " .. httpd.websocket_accept(key) .. "\r\n\r\n")
    end, { limits = { idle_timeout = 0.2 * F, head_timeout = 0.2 * F } }, function(server, port)
      -- a request without Upgrade cannot be taken over
      local c = client(port)
      c:send(get("/not-ws"))
      assert.equal(200, c:answer().status)
      assert.same({ nil, "not an upgrade request (req.upgrade)", "bad-request" }, refused)
      c:close()
      -- an upgrade refused by the handler: the connection stays HTTP
      c = client(port)
      c:send(get("/ws", "Connection: Upgrade\r\nUpgrade: websocket\r\n") .. get("/plain"))
      assert.equal(400, c:answer().status)
      assert.equal("GET /plain 0", c:answer().body)
      c:close()
      c = client(port)
      c:send(get("/ws", "Connection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n"
        .. "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n") .. "\129\133frame-bytes GET / HTTP/1.1\r\n\r\n")
      local a = c:answer()
      assert.same({ 101, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" }, { a.status, a.headers["sec-websocket-accept"] })
      assert.equal("\129\133frame-bytes GET / HTTP/1.1\r\n\r\n", leftover)
      assert.matches("already answered", tostring(after))
      assert.equal(0, server:count())                 -- no longer counted
      c:send("later")
      assert.is_true(until_true(function() return table.concat(more) == "later" end))
      lxmpp.sleep(0.4 * F)                              -- httpd's deadlines no longer apply
      assert.is_false(c.closed)
      assert.is_false(taken.closed)
      server:close()                                   -- nor does closing the listener
      lxmpp.sleep(0.05)
      assert.is_false(taken.closed)
      taken:abort()
      c:close()
    end)
  end)

  it("computes Sec-WebSocket-Accept as RFC 6455 §1.3 shows", function()
    assert.equal("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", httpd.websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="))
  end)

  describe("static", function()
    local dir, outside
    local HUGE = 2 * 1048576
    setup(function()
      dir = os.tmpname()
      os.remove(dir)
      outside = dir .. "-outside"
      assert(os.execute((pki.NO_PRELOAD .. "mkdir -p %s/sub/deeper %s/.git %s/emptydir %s"):format(dir, dir, dir, outside)))
      local function write(path, text)
        local f = assert(io.open(path, "wb"))
        f:write(text)
        f:close()
      end
      write(dir .. "/index.html", "<h1>root</h1>")
      write(dir .. "/app.js", "console.log(1)")
      write(dir .. "/style.css", "a{}")
      write(dir .. "/data.JSON", "{}")
      write(dir .. "/logo.svg", "<svg/>")
      write(dir .. "/m.wasm", "\0asm")
      write(dir .. "/f.woff2", "wOF2")
      write(dir .. "/blob.xyz", "\1\2")
      write(dir .. "/empty.txt", "")
      write(dir .. "/big.bin", ("b"):rep(2000))
      write(dir .. "/huge.bin", ("h"):rep(HUGE))
      write(dir .. "/sub/index.html", "<h1>sub</h1>")
      write(dir .. "/sub/deeper/page.html", "deep")
      write(dir .. "/.git/config", "secret")
      write(dir .. "/.env", "secret")
      write(outside .. "/secret.txt", "secret")
      assert(os.execute((pki.NO_PRELOAD .. "ln -s %s/secret.txt %s/link.txt && ln -s %s %s/linkdir"):format(outside, dir, outside, dir)))
    end)
    teardown(function() os.execute((pki.NO_PRELOAD .. "rm -rf %s %s"):format(dir, outside)) end)

    it("serves files with their type, index.html for folders, GET and HEAD only", function()
      run(assert(httpd.static(dir, { max_file = 1000 })), nil, function(_, port)
        local c = client(port)
        local function fetch(path, method)
          c:send((method or "GET") .. " " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n")
          return c:answer(nil, method == "HEAD")
        end
        local types = { ["/app.js"] = "text/javascript; charset=utf-8", ["/style.css"] = "text/css; charset=utf-8",
          ["/data.JSON"] = "application/json", ["/logo.svg"] = "image/svg+xml", ["/m.wasm"] = "application/wasm",
          ["/f.woff2"] = "font/woff2", ["/blob.xyz"] = "application/octet-stream",
          ["/index.html"] = "text/html; charset=utf-8", ["/empty.txt"] = "text/plain; charset=utf-8" }
        for path, ct in pairs(types) do
          local a = fetch(path)
          assert.same({ 200, ct, "nosniff" }, { a.status, a.headers["content-type"],
            a.headers["x-content-type-options"] }, path)
          assert.is_nil(a.headers["content-security-policy"], path)   -- pages must run their scripts
        end
        assert.equal("", fetch("/empty.txt").body)
        assert.equal("<h1>root</h1>", fetch("/").body)
        assert.equal("<h1>sub</h1>", fetch("/sub/").body)
        assert.equal("deep", fetch("/sub/deeper/page.html?v=3").body)
        assert.equal("console.log(1)", fetch("/app%2Ejs").body)          -- an encoded dot is just a dot
        local a = fetch("/sub?x=1")
        assert.same({ 301, "/sub/?x=1" }, { a.status, a.headers.location })
        a = fetch("/app.js", "HEAD")
        assert.same({ 200, "14" }, { a.status, a.headers["content-length"] })
        a = fetch("/app.js", "POST")
        assert.same({ 405, "GET, HEAD" }, { a.status, a.headers.allow })
        assert.equal(404, fetch("/nope.html").status)
        assert.equal(404, fetch("/emptydir/").status)                    -- no index.html, no listing
        assert.equal(403, fetch("/big.bin").status)                      -- over max_file
        c:close()
      end)
    end)

    -- pipe.py of the audit: pipelined GETs of a large file, nothing read;
    -- the listener used to read all `pipeline` of them into answers
    it("reads no further request while an answer waits for a peer that does not read", function()
      local static, calls = assert(httpd.static(dir)), 0
      run(function(req, res)
        calls = calls + 1
        return static(req, res)
      end, nil, function(server, port)
        local c = client(port)
        c.conn:pause()                                   -- reads nothing
        c:send(get("/huge.bin"):rep(16))
        local conn
        assert.is_true(until_true(function()
          conn = next(server.conns)
          return conn ~= nil and conn.waiting_drain == true
        end))
        lxmpp.sleep(0.2)
        local held = 0
        for _, res in ipairs(conn.queue) do held = held + #(res.out or "") end
        -- (a file is sent as the peer reads: a chunk of it at most, not the file)
        assert.truthy(held <= httpd.CHUNK + 1024, ("%d bytes of answers held for %d requests"):format(held, calls))
        assert.equal(held, conn.unsent)
        assert.truthy(calls < 16, calls)
        c.conn:resume()                                  -- it reads: every answer comes, in order
        for i = 1, 16 do
          local a = c:answer(10)
          assert.equal(HUGE, a and #a.body, "answer " .. i)
        end
        assert.equal(16, calls)
        c:close()
      end)
    end)

    it("sends a large file in chunks as the peer reads, HEAD without it, and cuts a file that shrank", function()
      run(assert(httpd.static(dir)), nil, function(_, port)
        local c = client(port)
        c:send("HEAD /huge.bin HTTP/1.1\r\nHost: x\r\n\r\n" .. get("/huge.bin") .. get("/app.js"))
        local a = c:answer(nil, true)
        assert.same({ 200, tostring(HUGE) }, { a.status, a.headers["content-length"] })
        a = c:answer(10)
        assert.same({ 200, HUGE, "application/octet-stream" }, { a.status, #a.body, a.headers["content-type"] })
        assert.equal(("h"):rep(HUGE), a.body)
        assert.equal("console.log(1)", c:answer().body)
        c:close()
      end)
      local log_seen
      run(function(_, res)
        local f = assert(io.open(dir .. "/huge.bin", "rb"))
        res:send_file(200, nil, f, HUGE + 10)          -- more than there is: the length cannot be kept
      end, nil, function(_, port, log)
        local c = client(port)
        c:send(get("/x"))
        assert.is_true(c:wait_closed(10))
        assert.equal(HUGE, #c.buf - #c.buf:match("^.-\r\n\r\n"))   -- all there was, then the cut
        log_seen = table.concat(log, "\n")
      end)
      assert.matches("ended 10 bytes before its size", log_seen, nil, true)
    end)

    it("refuses traversal, dot files, encoded separators and symbolic links", function()
      run(assert(httpd.static(dir .. "/sub")), nil, function(_, port)
        local c = client(port)
        for _, path in ipairs({ "/../index.html", "/..", "/%2e%2e/index.html", "/%2E%2E/%2e%2e/etc/passwd",
          "/deeper/..%2f..%2findex.html", "/deeper%2fpage.html", "/deeper%2Fpage.html", "/..%5cindex.html",
          "/deeper%5cpage.html", "/./index.html", "/deeper/./page.html", "//index.html", "/deeper//page.html",
          "/.%2e/index.html" }) do
          c:send(get(path))
          local a = c:answer()
          assert.equal(404, a and a.status, path)
          assert.not_matches("root", a.body, nil, true)
        end
        c:send(get("/deeper/page.html"))
        assert.equal("deep", c:answer().body)
        c:close()
      end)
      run(assert(httpd.static(dir)), nil, function(_, port)
        local c = client(port)
        for _, path in ipairs({ "/.git/config", "/.env", "/%2eenv", "/link.txt", "/linkdir/secret.txt", "/linkdir/",
          "/sub/../../" .. outside:match("[^/]+$") .. "/secret.txt" }) do
          c:send(get(path))
          local a = c:answer()
          assert.equal(404, a and a.status, path)
          assert.not_matches("secret", a.body, nil, true)
        end
        c:close()
      end)
    end)

    it("is refused without a folder, or without LuaFileSystem unless links may be followed", function()
      local h, _, cond = httpd.static(dir .. "/nope")
      assert.same({ nil, "item-not-found" }, { h, cond })
      h, _, cond = httpd.static(dir, { lfs = false })
      assert.same({ nil, "feature-not-implemented" }, { h, cond })
      h = assert(httpd.static(dir, { lfs = false, follow_symlinks = true }))
      run(h, nil, function(_, port)
        local c = client(port)
        c:send(get("/sub/") .. get("/style.css") .. get("/%2e%2e/x"))
        assert.equal("<h1>sub</h1>", c:answer().body)
        assert.equal("a{}", c:answer().body)
        assert.equal(404, c:answer().status)
        c:close()
      end)
    end)
  end)

  it("answers CORS preflights and adds Access-Control-Allow-Origin", function()
    local handler = httpd.cors({ origins = { "https://app.example" } }, echo)
    run(handler, nil, function(_, port)
      local c = client(port)
      c:send("OPTIONS /http-bind HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n"
        .. "Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n\r\n")
      local a = c:answer()
      assert.same({ 204, "https://app.example", "GET, HEAD, POST, OPTIONS", "Content-Type", "Origin" },
        { a.status, a.headers["access-control-allow-origin"], a.headers["access-control-allow-methods"],
          a.headers["access-control-allow-headers"], a.headers.vary })
      c:send("POST /http-bind HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nContent-Length: 2\r\n\r\nhi")
      a = c:answer()
      assert.same({ 200, "POST /http-bind 2", "https://app.example" },
        { a.status, a.body, a.headers["access-control-allow-origin"] })
      c:send("POST /http-bind HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\nContent-Length: 2\r\n\r\nhi")
      a = c:answer()
      assert.same({ 200, nil }, { a.status, a.headers["access-control-allow-origin"] })
      c:send("OPTIONS /http-bind HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\n"
        .. "Access-Control-Request-Method: POST\r\n\r\n")
      assert.equal(403, c:answer().status)
      c:close()
    end)
    run(httpd.cors(nil, echo), nil, function(_, port)
      local c = client(port)
      c:send(get("/x", "Origin: https://anyone.example\r\n"))
      assert.equal("*", c:answer().headers["access-control-allow-origin"])
      c:close()
    end)
  end)

  it("serves over TLS with a given context, verified against the test CA", function()
    local p = pki.get()
    local sctx = assert(core.tls_context({ mode = "server", cert = p.certs.good.cert, key = p.certs.good.key }))
    local cctx = assert(core.tls_context({ mode = "client", cafile = p.ca }))
    local secure
    run(function(req, res)
      secure = req.secure
      echo(req, res)
    end, { tls_ctx = sctx }, function(_, port)
      local c = client(port, cctx)
      assert.is_true(c.conn:tls_info().verified)
      c:send(get("/tls") .. get("/again"))
      assert.equal("GET /tls 0", c:answer().body)
      assert.equal("GET /again 0", c:answer().body)
      assert.is_true(secure)
      c:close()
      -- plaintext to the TLS port gets nothing
      local plain = client(port)
      plain:send(get("/plain"))
      assert.is_true(plain:wait_closed())
      assert.is_nil(plain.buf:match("^HTTP"))
    end)
    sctx:close()
    cctx:close()
  end)

  it("cuts every connection when the listener closes, telling unanswered requests", function()
    local told = 0
    run(function(_, res) res:on_close(function() told = told + 1 end) end, nil, function(server, port)
      local a, b = client(port), client(port)
      a:send(get("/poll"))
      b:send(get("/poll"))
      assert.is_true(until_true(function() return server:count() == 2 end))
      lxmpp.sleep(0.05)
      server:close()
      assert.equal(2, told)
      assert.equal(0, server:count())
      assert.is_true(a:wait_closed())
      assert.is_true(b:wait_closed())
      assert.is_nil(net.connect("127.0.0.1", port, 1))
    end)
  end)

  it("validates its options", function()
    assert.has_error(function() httpd.listen() end)
    assert.has_error(function() httpd.listen({ ip = "127.0.0.1", port = 0 }) end)
    assert.has_error(function() httpd.listen({ ip = "127.0.0.1", port = 0, handler = echo, limits = { colour = 1 } }) end)
    assert.has_error(function() httpd.listen({ ip = "127.0.0.1", port = 0, handler = echo, limits = { max_body = -1 } }) end)
    lxmpp.run(function()
      local first = assert(httpd.listen({ ip = "127.0.0.1", port = 0, handler = echo }))
      local r, msg = httpd.listen({ ip = "127.0.0.1", port = first:port(), handler = echo })
      assert.is_nil(r)
      assert.is_string(msg)
      first:close()
    end)
    clean()
  end)
end)
