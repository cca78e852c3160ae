-- WebSocket mode of C connections (csrc/ws.c, csrc/net_ws.c, the framed
-- mode of csrc/stream.c): RFC 6455 framing and RFC 7395 XMPP framing over
-- real loopback TCP pairs of lxmpp conns. Hostile input is written as raw
-- bytes by a peer conn that is not in WebSocket mode, and what the
-- WebSocket side answers is read raw.
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local net = require "lxmpp.net"
local slow = require "spec.support.slow"

local assert_clean = require "spec.support.clean"

-- Listeners of the current test, closed after it whatever happened: a
-- failed test must not leave one behind to keep the next test's loop
-- running (support/clean.lua aborts conns, not listeners).
local listeners = {}
local function listen(ip, port, on_accept)
  local l = assert(net.listen(ip, port, on_accept))
  listeners[#listeners + 1] = l
  return l
end
local function close_listeners()
  for i = #listeners, 1, -1 do
    listeners[i]:close()
    listeners[i] = nil
  end
  for _ = 1, 5 do lxmpp.step(0.01) end
end

local FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
local OPEN = "<open xmlns='" .. FRAMING .. "' to='example.test' version='1.0'/>"
local CLOSE = "<close xmlns='" .. FRAMING .. "'/>"
local TIMEOUT = 5 * slow.factor

local function wait_until(pred, what)
  local t0 = core.now()
  while not pred() do
    if core.now() - t0 > TIMEOUT then error("timed out waiting for " .. (what or "?"), 2) end
    lxmpp.sleep(0.005)
  end
end

local wsf = require "spec.support.ws_frames"
local frame, unframe, be_bytes, be_number = wsf.frame, wsf.unframe, wsf.be_bytes, wsf.be_number

local function close_code(f)
  if #f.payload < 2 then return nil end
  return (be_number(f.payload, 1, 2))
end

-- Records the events of a conn in WebSocket mode.
local function recorder(conn)
  local rec = { events = {}, stanzas = {}, opens = {} }
  local function add(s) rec.events[#rec.events + 1] = s end
  conn:on("open", function(attr) rec.opens[#rec.opens + 1] = attr; add("open") end)
  conn:on("stanza", function(s) rec.stanzas[#rec.stanzas + 1] = s; add("stanza " .. s.name) end)
  conn:on("stream-close", function() add("stream-close") end)
  conn:on("parse-error", function(msg, cond) rec.perr = msg; add("parse-error " .. cond) end)
  conn:on("eof", function(code, reason) rec.eof = { code = code, reason = reason }; add("eof") end)
  conn:on("read-error", function(msg, cond, code)
    rec.rerr = msg
    add("read-error " .. tostring(cond) .. " " .. tostring(code))
  end)
  conn:on("closed", function() rec.closed = true end)
  return rec
end

-- A listener whose one accepted conn goes to WebSocket mode with opts; the
-- peer conn, connected to it, reads raw. Returns server record, peer, and
-- the bytes the peer received (a function).
local function ws_server_and_raw_peer(opts, parse_opts)
  local srv = {}
  srv.listener = listen("127.0.0.1", 0, function(conn)
    srv.conn = conn
    srv.rec = recorder(conn)
    assert(conn:websocket(opts or { role = "server" }))
    assert(conn:parse(parse_opts))
  end)
  local peer = assert(net.connect("127.0.0.1", srv.listener:port()))
  local got = {}
  peer:on("data", function(b) got[#got + 1] = b end)
  peer:on("eof", function() got.eof = true end)
  peer:on("closed", function() got.closed = true end)
  peer:raw()
  wait_until(function() return srv.rec end, "accept")
  return srv, peer, got
end

-- The peer's view: frames received so far.
local function frames_of(got) return (unframe(table.concat(got))) end

local function last_close(got)
  local fs = frames_of(got)
  for i = #fs, 1, -1 do if fs[i].op == 8 then return fs[i] end end
end

local KEY = "\018\052\086\120"

-- A frame as a client writes it (masked).
local function cframe(payload, t)
  t = t or {}
  t[1] = payload
  if t.key == nil then t.key = KEY end
  return frame(t)
end

describe("WebSocket conns (RFC 6455, RFC 7395)", function()
  after_each(function()
    close_listeners()
    assert_clean()
  end)

  it("round trip between a server-role and a client-role conn: open, stanzas, close, restart", function()
    lxmpp.run(function()
      local s = {}
      local listener = listen("127.0.0.1", 0, function(conn)
        s.conn = conn
        s.rec = recorder(conn)
        conn:on("stanza", function(st)
          s.rec.stanzas[#s.rec.stanzas + 1] = st
          s.rec.events[#s.rec.events + 1] = "stanza " .. st.name
          if st.name == "auth" then conn:restart() end
          if st.name == "message" then conn:write(tostring(st)) end   -- echo
        end)
        conn:on("stream-close", function()
          s.rec.events[#s.rec.events + 1] = "stream-close"
          conn:write(CLOSE)
          conn:close()
        end)
        assert(conn:websocket{ role = "server" })
        assert(conn:parse())
      end)
      local c = assert(net.connect("127.0.0.1", listener:port()))
      local crec = recorder(c)
      assert(c:websocket{ role = "client" })
      assert(c:parse())
      assert(c:write(OPEN))
      wait_until(function() return s.rec and #s.rec.opens == 1 end, "open")
      local attr = s.rec.opens[1]
      assert.equal("example.test", attr.to)
      assert.equal("1.0", attr.version)
      assert.equal("jabber:client", attr.xmlns)
      assert(s.conn:write("<open xmlns='" .. FRAMING .. "' from='example.test' id='s1' version='1.0'/>"))
      wait_until(function() return #crec.opens == 1 end, "open back")
      assert.equal("s1", crec.opens[1].id)
      -- stanzas: jabber:client by default; a declared one is kept; a big one
      local body = ("é"):rep(40000)
      assert(c:write("<message xmlns='jabber:client' to='a@b'><body>" .. body .. "</body></message>"))
      assert(c:write("<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>"))
      assert(c:write("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'/>"))
      wait_until(function() return #s.rec.stanzas == 3 end, "stanzas")
      local m, iq, auth = s.rec.stanzas[1], s.rec.stanzas[2], s.rec.stanzas[3]
      assert.is_nil(m.attr.xmlns)
      assert.equal(body, m:get_child_text("body"))
      assert.is_nil(iq.attr.xmlns)
      assert.equal("urn:xmpp:ping", iq.tags[1].attr.xmlns)
      assert.equal("urn:ietf:params:xml:ns:xmpp-sasl", auth.attr.xmlns)
      -- the echo came back as one text message
      wait_until(function() return #crec.stanzas == 1 end, "echo")
      assert.equal(body, crec.stanzas[1]:get_child_text("body"))
      -- after the restart the client opens again (RFC 6120 §6.4.6)
      assert(c:write(OPEN))
      assert(c:write("<iq type='set' id='2'/>"))
      wait_until(function() return #s.rec.opens == 2 and #s.rec.stanzas == 4 end, "new stream")
      -- <close/>, then the closing handshake
      assert(c:write(CLOSE))
      wait_until(function() return crec.eof end, "close back")
      -- <close/> came first, then the server's close frame (RFC 7395 §3.6)
      assert.same({ "open", "stanza message", "stream-close", "eof" }, crec.events)
      assert.equal(1000, crec.eof.code)
      assert.is_true(c:close())
      wait_until(function() return s.rec.closed end, "server conn closed")
      assert.same({ "open", "stanza message", "stanza iq", "stanza auth", "open", "stanza iq", "stream-close" },
        s.rec.events)
      -- the server's close() waited for the client's answer to its close frame
      assert.is_nil(s.rec.eof)
      listener:close()
    end)
  end)

  it("decodes frames whatever the segmenting, byte by byte included", function()
    lxmpp.run(function()
      local srv, peer = ws_server_and_raw_peer()
      local bytes = cframe(OPEN) ..
        cframe("<message><bo", { fin = false }) ..           -- fragmented,
        cframe("", { op = 9 }) ..                             -- a ping between fragments
        cframe("dy>hi</body>", { op = 0, fin = false }) ..
        cframe("</message>", { op = 0 }) ..
        cframe(("<a/>"), { len16 = false }) ..
        cframe("<b>" .. ("x"):rep(300) .. "</b>") ..          -- 16-bit length
        cframe("<c>" .. ("y"):rep(70000) .. "</c>")           -- 64-bit length
      for i = 1, 600 do peer:write(bytes:sub(i, i)); lxmpp.sleep(0) end
      peer:write(bytes:sub(601))
      wait_until(function() return #srv.rec.stanzas == 4 end, "stanzas")
      assert.equal("hi", srv.rec.stanzas[1]:get_child_text("body"))
      assert.same({ "message", "a", "b", "c" },
        { srv.rec.stanzas[1].name, srv.rec.stanzas[2].name, srv.rec.stanzas[3].name, srv.rec.stanzas[4].name })
      assert.equal(70000, #srv.rec.stanzas[4][1])
      srv.conn:abort()
      peer:close()
      srv.listener:close()
    end)
  end)

  it("answers a ping with a pong carrying its payload, unmasked from a server", function()
    lxmpp.run(function()
      local srv, peer, got = ws_server_and_raw_peer()
      peer:write(cframe("are you there", { op = 9 }))
      wait_until(function() return #frames_of(got) == 1 end, "pong")
      local f = frames_of(got)[1]
      assert.equal(10, f.op)
      assert.is_false(f.masked)
      assert.equal("are you there", f.payload)
      assert.same({}, srv.rec.events)
      srv.conn:abort()
      peer:close()
      srv.listener:close()
    end)
  end)

  it("keeps bytes read past the handshake in raw mode (buffered)", function()
    lxmpp.run(function()
      local s = {}
      local listener = listen("127.0.0.1", 0, function(conn)
        s.conn = conn
        s.rec = recorder(conn)
        local req = ""
        conn:on("data", function(b)
          req = req .. b
          local e = req:find("\r\n\r\n", 1, true)
          if e then
            conn:on("data", nil)
            assert(conn:websocket{ role = "server", buffered = req:sub(e + 4) })
            assert(conn:parse())
          end
        end)
        conn:raw()
      end)
      local peer = assert(net.connect("127.0.0.1", listener:port()))
      -- the request and the first frames in one write, as a fast client does
      peer:write("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n" .. cframe(OPEN) .. cframe("<presence/>"))
      wait_until(function() return s.rec and #s.rec.stanzas == 1 end, "stanza")
      assert.same({ "open", "stanza presence" }, s.rec.events)
      s.conn:abort()
      peer:close()
      listener:close()
    end)
  end)

  it("works over TLS: the handshake bytes and frames of one TLS record, a pong, the closing handshake", function()
    local pki = require "spec.support.pki"
    local p = pki.get()
    lxmpp.run(function()
      local sctx = assert(core.tls_context{ mode = "server", cert = p.certs.good.cert, key = p.certs.good.key })
      local cctx = assert(core.tls_context{ mode = "client", cafile = p.ca })
      local s = {}
      local listener = listen("127.0.0.1", 0, function(conn)
        s.conn = conn
        s.rec = recorder(conn)
        local req = ""
        conn:on("tls-done", function() conn:raw() end)
        conn:on("data", function(b)
          req = req .. b
          local e = req:find("\r\n\r\n", 1, true)
          if e then
            conn:on("data", nil)
            assert(conn:websocket{ role = "server", buffered = req:sub(e + 4) })
            assert(conn:parse())
          end
        end)
        assert(conn.c:starttls(sctx))
      end)
      local c = assert(net.connect("127.0.0.1", listener:port()))
      local got = {}
      c:on("data", function(b) got[#got + 1] = b end)
      c:on("eof", function() got.eof = true end)
      c:on("tls-done", function()
        c:write("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n" .. cframe(OPEN) .. cframe("<presence/>") ..
          cframe("hello", { op = 9 }))
      end)
      c:raw()
      assert(c.c:starttls(cctx, "example.test"))
      wait_until(function() return s.rec and #s.rec.stanzas == 1 end, "stanza")
      assert.same({ "open", "stanza presence" }, s.rec.events)
      assert.is_truthy(s.conn:tls_info())
      wait_until(function() return #frames_of(got) == 1 end, "pong")
      assert.equal("hello", frames_of(got)[1].payload)
      lxmpp.spawn(function() s.closed_ok = s.conn:close() end)
      wait_until(function() return last_close(got) end, "close frame")
      c:write(cframe(be_bytes(1000, 2), { op = 8 }))
      wait_until(function() return s.rec.closed and got.eof end, "closed")
      assert.is_true(s.closed_ok)
      c:close()
      listener:close()
      sctx:close()
      cctx:close()
    end)
  end)

  it("close(): sends a close frame (1000), waits for the peer's, then closes", function()
    lxmpp.run(function()
      local srv, peer, got = ws_server_and_raw_peer()
      peer:write(cframe(OPEN))
      wait_until(function() return #srv.rec.events == 1 end, "open")
      lxmpp.spawn(function() srv.closed_ok = srv.conn:close() end)
      wait_until(function() return last_close(got) end, "close frame")
      assert.equal(1000, close_code(last_close(got)))
      lxmpp.sleep(0.05)
      assert.is_nil(got.closed)                     -- still waiting for ours
      assert.is_nil(srv.rec.closed)
      peer:write(cframe("<message/>"))              -- data while closing: dropped
      peer:write(cframe(be_bytes(1000, 2), { op = 8 }))
      local t0 = core.now()
      wait_until(function() return srv.rec.closed and got.eof end, "socket closed")
      -- the closing handshake is done: the socket does not linger for the
      -- peer's EOF as a TCP close does (csrc/net_io.c, lx_net_drain)
      assert.is_true(core.now() - t0 < 1, "closed without lingering")
      assert.is_true(srv.closed_ok)
      assert.same({ "open" }, srv.rec.events)
      peer:close()
      srv.listener:close()
    end)
  end)

  it("a peer's close frame: answered with its code, \"eof\" code reason, socket closed", function()
    lxmpp.run(function()
      local srv, peer, got = ws_server_and_raw_peer()
      peer:write(cframe(OPEN) .. cframe(CLOSE) .. cframe(be_bytes(1001, 2) .. "going away", { op = 8 }))
      wait_until(function() return srv.rec.closed and got.eof end, "closed")
      assert.same({ "open", "stream-close", "eof" }, srv.rec.events)
      assert.same({ code = 1001, reason = "going away" }, srv.rec.eof)
      assert.equal(1001, close_code(last_close(got)))
      peer:close()
      srv.listener:close()
    end)
  end)

  -- Protocol violations: the WebSocket side closes with the status code of
  -- RFC 6455 §7.4.1 and reports "read-error" msg "closed" code; nothing
  -- after the violation is delivered.
  local hostile = {
    { "an unmasked frame to a server", frame{ "<a/>" }, 1002, "unmasked" },
    { "RSV bits without an extension", cframe("<a/>", { rsv = 4 }), 1002, "RSV" },
    { "a reserved opcode", cframe("<a/>", { op = 3 }), 1002, "reserved opcode" },
    { "a reserved control opcode", cframe("", { op = 0xB }), 1002, "reserved opcode" },
    { "a binary frame", cframe("<a/>", { op = 2 }), 1003, "binary" },
    { "a fragmented control frame", cframe("", { op = 9, fin = false }), 1002, "fragmented control" },
    { "a control frame over 125 bytes", cframe(("p"):rep(126), { op = 9 }), 1002, "125 bytes" },
    { "a continuation without a message", cframe("<a/>", { op = 0 }), 1002, "continuation" },
    { "a new message inside a fragmented one", cframe("<a>", { fin = false }) .. cframe("</a>"), 1002, "inside" },
    { "a non-minimal 16-bit length", cframe("<a/>", { len16 = true }), 1002, "minimal" },
    { "a non-minimal 64-bit length", cframe("<a/>", { len64 = true }), 1002, "minimal" },
    { "bad UTF-8 in a text message", cframe("<a>\192\175</a>"), 1007, "UTF%-8" },
    { "bad UTF-8 across fragments", cframe("<a>\226\130", { fin = false }) .. cframe("</a>", { op = 0 }), 1007, "UTF%-8" },
    { "a 1-byte close payload", cframe("x", { op = 8 }), 1002, "1%-byte" },
    { "a close code nobody may send", cframe(be_bytes(1005, 2), { op = 8 }), 1002, "1005" },
    { "a message over max_message", cframe("<a>" .. ("z"):rep(2000) .. "</a>"), 1009, "larger than 1000" },
    { "fragments adding up over max_message",
      cframe("<a>" .. ("z"):rep(600), { fin = false }) .. cframe(("z"):rep(600) .. "</a>", { op = 0 }),
      1009, "larger than 1000" },
  }
  for _, case in ipairs(hostile) do
    local name, bytes, code, pattern = case[1], case[2], case[3], case[4]
    it("fails " .. name .. " with close " .. code, function()
      lxmpp.run(function()
        local srv, peer, got = ws_server_and_raw_peer({ role = "server", max_message = 1000 })
        peer:write(cframe(OPEN) .. bytes .. cframe("<after/>"))
        wait_until(function() return srv.rec.closed and got.eof end, "closed")
        assert.same({ "open", "read-error closed " .. code }, srv.rec.events)
        assert.matches(pattern, srv.rec.rerr)
        local f = last_close(got)
        assert.equal(code, close_code(f))
        peer:close()
        srv.listener:close()
      end)
    end)
  end

  it("a client-role conn fails a masked frame from the server (1002), masks what it sends", function()
    lxmpp.run(function()
      local s = {}
      local listener = listen("127.0.0.1", 0, function(conn)
        s.conn = conn
        s.got = {}
        conn:on("data", function(b) s.got[#s.got + 1] = b end)
        conn:on("eof", function() s.eof = true end)
        conn:raw()
      end)
      local c = assert(net.connect("127.0.0.1", listener:port()))
      local rec = recorder(c)
      assert(c:websocket{ role = "client" })
      assert(c:parse())
      assert(c:write(OPEN))
      wait_until(function() return s.got and #frames_of(s.got) == 1 end, "open frame")
      local f = frames_of(s.got)[1]
      assert.is_true(f.masked)
      assert.equal(OPEN, f.payload)
      s.conn:write(frame{ OPEN } .. frame{ "<message/>", key = KEY })
      wait_until(function() return rec.closed end, "closed")
      assert.same({ "open", "read-error closed 1002" }, rec.events)
      assert.matches("masked frame from a server", rec.rerr)
      wait_until(function() return s.eof end, "eof")
      assert.equal(1002, close_code(last_close(s.got)))
      s.conn:close()
      listener:close()
    end)
  end)

  -- RFC 7395 framing: each message one element, the stream opened by
  -- <open/> in the framing namespace. "parse-error" msg cond, as on TCP.
  local framing = {
    { "two elements in one message", { OPEN, "<a/><b/>" }, "bad-format", "exactly one" },
    { "text after the element", { OPEN, "<a/>junk" }, "bad-format", "exactly one" },
    { "an element and the start of another", { OPEN, "<a/><b" }, "bad-format", "bytes after it" },
    { "an element and a character reference", { OPEN, "<a/>&#65;" }, "bad-format", "exactly one" },
    { "a partial element", { OPEN, "<message><body>" }, "bad-format", "exactly one" },
    { "an unfinished tag", { OPEN, "<message to='x'" }, "bad-format", "exactly one" },
    { "text before the element", { OPEN, "hi<a/>" }, "bad-format", "start with '<'" },
    { "an empty message", { OPEN, "" }, "bad-format", "start with '<'" },
    { "<open/> in the wrong namespace", { "<open xmlns='jabber:client' to='x'/>" }, "invalid-namespace", "framing" },
    { "<stream:stream> instead of <open/>",
      { "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>" }, "invalid-namespace", "framing" },
    { "a stanza before <open/>", { "<message/>" }, "bad-format", "start with <open/>" },
    { "<open/> twice without a restart", { OPEN, OPEN }, "bad-format", "restart" },
    { "<open/> with children", { "<open xmlns='" .. FRAMING .. "'><x/></open>" }, "bad-format", "no children" },
    { "a message after <close/>", { OPEN, CLOSE, "<message/>" }, "bad-format", "after <close/>" },
    { "mismatched tags", { OPEN, "<a></b>" }, "not-well-formed", "mismatched" },
    { "a comment", { OPEN, "<a><!-- x --></a>" }, "restricted-xml", "comments" },
    { "a stanza over max_stanza_size", { OPEN, "<a>" .. ("x"):rep(600) .. "</a>" }, "policy-violation", "larger" },
    { "XML 1.1", { OPEN, "<?xml version='1.1'?><a/>" }, "not-well-formed", "1.0 only" },
    { "another encoding", { OPEN, "<?xml version='1.0' encoding='ISO-8859-1'?><a/>" },
      "unsupported-encoding", "UTF%-8 only" },
    { "a malformed XML declaration", { OPEN, "<?xml encoding='UTF-8' version='1.0'?><a/>" },
      "not-well-formed", "malformed XML declaration" },
    { "a prefix declared in an earlier message", { OPEN, "<a xmlns:p='urn:p'><p:x/></a>", "<p:y/>" },
      "not-well-formed", "unbound prefix" },
  }
  for _, case in ipairs(framing) do
    local name, msgs, cond, pattern = case[1], case[2], case[3], case[4]
    it("parse-error " .. cond .. " for " .. name .. ", nothing of it delivered", function()
      lxmpp.run(function()
        local srv, peer, got = ws_server_and_raw_peer(nil, { max_stanza_size = 500 })
        local out, expected = {}, {}
        for i, m in ipairs(msgs) do
          out[i] = cframe(m)
          if i < #msgs then expected[i] = m == OPEN and "open" or m == CLOSE and "stream-close" or "stanza a" end
        end
        expected[#expected + 1] = "parse-error " .. cond
        peer:write(table.concat(out) .. cframe("<after/>"))
        wait_until(function() return srv.rec.perr end, "parse-error")
        lxmpp.sleep(0.02)
        assert.same(expected, srv.rec.events)
        assert.matches(pattern, srv.rec.perr)
        -- the stream-level answer still goes out, then the closing handshake
        assert(srv.conn:write("<stream:error xmlns:stream='http://etherx.jabber.org/streams'/>"))
        lxmpp.spawn(function() srv.conn:close() end)
        wait_until(function() return last_close(got) end, "close frame")
        local fs = frames_of(got)
        assert.equal(1, fs[#fs - 1].op)
        peer:write(cframe(be_bytes(1000, 2), { op = 8 }))
        wait_until(function() return srv.rec.closed end, "closed")
        peer:close()
        srv.listener:close()
      end)
    end)
  end

  it("takes an XML declaration per message (RFC 7395 §3.3.3), and goes on after the parser went idle", function()
    lxmpp.run(function()
      local srv, peer = ws_server_and_raw_peer()
      peer:write(cframe(OPEN) .. cframe("<?xml version='1.0' encoding='utf-8'?>\n<message to='a'/>") ..
        cframe("<?xml version=\"1.0\" standalone='yes' ?><iq/>\r\n"))
      wait_until(function() return #srv.rec.stanzas == 2 end, "stanzas")
      -- quiet for more than two sweep periods: the parser gives its memory back
      wait_until(function() return srv.conn:info().parser_idle end, "idle parser")
      peer:write(cframe("<presence xmlns:p='urn:p'><p:x/></presence>"))
      wait_until(function() return #srv.rec.stanzas == 3 end, "stanza after idle")
      assert.same({ "open", "stanza message", "stanza iq", "stanza presence" }, srv.rec.events)
      assert.equal("urn:p", srv.rec.stanzas[3].tags[1].attr.xmlns)
      srv.conn:abort()
      peer:close()
      srv.listener:close()
    end)
  end)

  it("write() refuses bytes that are not UTF-8; info() tells the mode", function()
    lxmpp.run(function()
      local srv, peer = ws_server_and_raw_peer()
      local ok, msg, cond = srv.conn:write("<a>\255</a>")
      assert.is_nil(ok)
      assert.matches("UTF%-8", msg)
      assert.equal("bad-format", cond)
      assert.is_true(srv.conn:info().websocket)
      assert.is_false(peer:info().websocket)
      srv.conn:abort()
      peer:close()
      srv.listener:close()
    end)
  end)
end)

describe("framed <close/> (RFC 7395 §3.6.1)", function()
  after_each(function()
    close_listeners()
    assert_clean()
  end)

  -- The close event's argument: <close/>'s attributes, for a client to
  -- read see-other-uri; a close before <open/> is how a redirecting server
  -- answers the client's <open/>.
  for _, case in ipairs({
    { "after <open/>", { OPEN } },
    { "before <open/>", {} },
  }) do
    it("gives stream-close <close/>'s attributes " .. case[1], function()
      lxmpp.run(function()
        local srv, peer = ws_server_and_raw_peer()
        local closes = {}
        srv.conn:on("stream-close", function(attr) closes[#closes + 1] = attr or false end)
        local out = {}
        for i, m in ipairs(case[2]) do out[i] = cframe(m) end
        out[#out + 1] = cframe("<close xmlns='" .. FRAMING .. "' see-other-uri='wss://b.example/x?a=1&amp;b=2' " ..
          "xml:lang='en'/>")
        peer:write(table.concat(out))
        wait_until(function() return #closes == 1 end, "stream-close")
        assert.same({ ["see-other-uri"] = "wss://b.example/x?a=1&b=2", ["xml:lang"] = "en" }, closes[1])
        -- still the end of the stream: nothing may follow
        peer:write(cframe("<message/>"))
        wait_until(function() return srv.rec.perr end, "parse-error")
        assert.matches("after <close/>", srv.rec.perr)
        srv.conn:abort()
        peer:close()
        srv.listener:close()
      end)
    end)
  end

  it("gives a plain <close/> an empty attribute table", function()
    lxmpp.run(function()
      local srv, peer = ws_server_and_raw_peer()
      local closes = {}
      srv.conn:on("stream-close", function(attr) closes[#closes + 1] = attr or false end)
      peer:write(cframe(OPEN) .. cframe(CLOSE))
      wait_until(function() return #closes == 1 end, "stream-close")
      assert.same({}, closes[1])
      srv.conn:abort()
      peer:close()
      srv.listener:close()
    end)
  end)

  it("bounds <close/>'s attributes like any element's", function()
    lxmpp.run(function()
      local srv, peer, got = ws_server_and_raw_peer()
      local attrs = {}
      for i = 1, 65 do attrs[i] = (" a%d='%d'"):format(i, i) end   -- one over the default limit
      peer:write(cframe(OPEN) .. cframe("<close xmlns='" .. FRAMING .. "'" .. table.concat(attrs) .. "/>"))
      wait_until(function() return srv.rec.perr end, "parse-error")
      assert.same({ "open", "parse-error policy-violation" }, srv.rec.events)
      assert.matches("more than 64 attributes", srv.rec.perr)
      lxmpp.spawn(function() srv.conn:close() end)
      wait_until(function() return last_close(got) end, "close frame")
      peer:write(cframe("\003\232", { op = 8 }))
      wait_until(function() return srv.rec.closed end, "closed")
      peer:close()
      srv.listener:close()
    end)
  end)
end)
