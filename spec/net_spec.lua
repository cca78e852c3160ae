-- TCP connections (csrc/net.c, lua/lxmpp/net.lua) on loopback: the receive
-- path into the stream parser, restarts, pausing, bounded and coalesced
-- writes, clean closes.
local LUA = require "spec.support.lua_bin"
local compat = require "lxmpp.compat"
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local net = require "lxmpp.net"
local st = lxmpp.stanza

local HDR = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='x'>"

local assert_clean = require "spec.support.clean"
local blackhole = require "spec.support.blackhole"
local sh = require "spec.support.sh"

-- A listener whose accepted connections parse and record stanza names.
local function recorder()
  local rec = { conns = {}, names = {}, events = {} }
  rec.listener = assert(net.listen("127.0.0.1", 0, function(conn)
    rec.conns[#rec.conns + 1] = conn
    conn:on("open", function(attr) rec.events[#rec.events + 1] = "open " .. tostring(attr.to) end)
    conn:on("stanza", function(s)
      rec.names[#rec.names + 1] = s.name
      if rec.on_stanza then rec.on_stanza(conn, s) end
    end)
    conn:on("parse-error", function(_, cond) rec.events[#rec.events + 1] = "error " .. cond; conn:abort() end)
    conn:on("eof", function() conn:close() end)
    conn:parse()
  end))
  return rec
end

local function wait_until(pred, timeout)
  local t0 = core.now()
  while not pred() do
    if core.now() - t0 > (timeout or 5) then error("timed out waiting", 2) end
    lxmpp.sleep(0.005)
  end
end

describe("tcp connections", function()
  after_each(assert_clean)

  it("delivers stanzas in order, whatever the segmenting", function()
    lxmpp.run(function()
      local rec = recorder()
      local c = assert(net.connect("127.0.0.1", rec.listener:port()))
      local big = st.message({ to = "a@b" }, ("x"):rep(100000))
      c:write(HDR)
      for i = 1, 50 do c:write("<m" .. i .. "/>") end
      c:send(big)
      c:write("<last/>")
      wait_until(function() return #rec.names == 52 end)
      assert.equal("m1", rec.names[1])
      assert.equal("m50", rec.names[50])
      assert.equal("message", rec.names[51])
      assert.equal("last", rec.names[52])
      assert.same({ "open x" }, rec.events)
      c:close()
      rec.listener:close()
    end)
  end)

  it("reports a refused connection with connection-refused", function()
    lxmpp.run(function()
      local l = assert(net.listen("127.0.0.1", 0, function() end))
      local port = l:port()
      l:close()
      lxmpp.sleep(0.01)
      local c, msg, cond = net.connect("127.0.0.1", port)
      assert.is_nil(c)
      assert.equal("connection-refused", cond)
      assert.is_string(msg)
    end)
  end)

  it("times a connection out when the peer never answers", function()
    -- a listener that never accepts, its backlog filled: further SYNs are
    -- dropped, so the connection hangs until our deadline
    local socket = require "socket"
    local srv = assert(socket.tcp())
    assert(srv:bind("127.0.0.1", 0))
    assert(srv:listen(0))
    local _, port = srv:getsockname()
    port = compat.tointeger(tonumber(port))
    local fill = {}
    for i = 1, 4 do
      fill[i] = socket.tcp()
      fill[i]:settimeout(0)
      fill[i]:connect("127.0.0.1", port)
    end
    lxmpp.run(function()
      local t0 = core.now()
      local c, msg, cond = net.connect("127.0.0.1", port, 0.3)
      assert.is_nil(c)
      assert.equal("timeout", cond)
      assert.matches("timed out", msg)
      assert.is_true(core.now() - t0 < 3)
    end)
    for _, f in ipairs(fill) do f:close() end
    srv:close()
  end)

  it("a pending connect closed or aborted closes its socket at once, with no outcome, safely twice", function()
    -- C level (csrc/net.c): uv_close on a connecting handle hands
    -- UV_ECANCELED to the connect callback, which must report nothing (the
    -- conn is closed), and the close callback frees it once: "closed" is
    -- the only event, and no handle is left
    local hole = blackhole.tcp()
    local ok, err = pcall(lxmpp.run, function()
      for _, how in ipairs({ "abort", "close" }) do
        local events = {}
        local owner = { net_event = function(_, event) events[#events + 1] = event end }
        local before = core.loop_handles()
        local c = core.tcp_connect("127.0.0.1", hole.port, owner)
        lxmpp.sleep(0.05)                          -- the SYN is out, and unanswered
        assert.same({}, events)
        c[how](c)
        c:abort()
        c:close()
        assert.same({ nil, "connection is closed", "closed" }, { c:write("x") })
        assert.equal(before, core.loop_handles(), how)  -- closing: no longer counted
        lxmpp.sleep(0.05)
        assert.same({ "closed" }, events, how)
        c:abort()
        assert.is_false(c:info().open)
      end
    end)
    hole:close()
    assert(ok, err)
  end)

  it("an event that cannot be built (out of memory) is raised after libuv returns, never through it", function()
    -- (spec/support/oom_host.c: a Lua host whose allocations fail on
    -- request, built here for the Lua the suite runs under; it runs
    -- spec/support/oom_event.lua with the suite's module paths)
    local lua = rawget(_G, "jit") and "luajit" or ("lua" .. _VERSION:match("%d+%.%d+"))
    local bin = "build/oom_host-" .. lua
    local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
    -- (the compiler never under make check's sanitizer preload: LeakSanitizer
    -- fails gcc's own cc1)
    local out, code = sh.popen_read("unset LD_PRELOAD; mkdir -p build && ${CC:-cc} -std=c99 -Wall -Wextra -pedantic -Werror -O1 -o "
      .. q(bin) .. " spec/support/oom_host.c $(pkg-config --cflags --libs " .. lua .. ") 2>&1")
    assert.equal(0, code, out)
    -- (not under Valgrind's preloaded malloc: the host is not run by it)
    local env = require("spec.support.slow").valgrind and "env -u LD_PRELOAD " or ""
    out, code = sh.popen_read(env .. q(bin) .. " spec/support/oom_event.lua " .. q(package.path) .. " "
      .. q(package.cpath) .. " 2>&1")
    assert.equal(0, code, out)
    assert.matches("first\tfalse\tnot enough memory", out)
    assert.matches("again\ttrue", out)
  end)

  it("a graceful close toward a peer that reads nothing is aborted after its linger time", function()
    -- 16 MiB queued: more than loopback's socket buffers take (the
    -- receiver's 128 KiB plus the sender's 4 MiB here), so bytes stay in the
    -- queue; before, such a closing connection stayed open for as long as
    -- the peer kept it, from an event handler or with conn:shutdown()
    local slow = require("spec.support.slow").factor
    lxmpp.run(function()
      local peer
      local l = assert(net.listen("127.0.0.1", 0, function(conn) peer = conn; conn:raw(); conn:pause() end))
      for _, how in ipairs({ "shutdown", "close" }) do
        local c = assert(net.connect("127.0.0.1", l:port()))
        wait_until(function() return peer end)
        local closed = false
        c:on("closed", function() closed = true end)
        c:set_max_queue(compat.lshift(32, 20))
        assert(c:write(("x"):rep(compat.lshift(16, 20))))
        lxmpp.sleep(0.1)
        assert.truthy(c:info().queued > 0, how .. ": bytes wait in the queue")
        local t0 = core.now()
        if how == "shutdown" then
          assert.is_true(c:shutdown(0.3))
        else
          c.c:close(0.3)     -- what conn:close(0.3) does outside a task
        end
        assert.is_true(core.now() - t0 < 0.2, how .. " does not wait")
        wait_until(function() return closed end, 2 * slow + 1)
        assert.is_true(core.now() - t0 >= 0.25, how .. ": the linger time was given")
        peer:abort()
        peer = nil
      end
      l:close()
    end)
  end)

  it("a graceful close toward a slow peer that keeps reading is not cut by its linger time", function()
    -- the linger time counts from the peer's last progress (what the
    -- kernel still holds unsent included), not from the close: the peer
    -- takes about 1 MiB every 0.25 s, so 12 MiB take about 3 s, past the
    -- 1 s linger time, which an absolute deadline cut at 1 to 1.25 s (the
    -- sweep's period), and every byte arrives
    local slow = require("spec.support.slow").factor
    lxmpp.run(function()
      local total = compat.lshift(12, 20)
      local got, eof, peer = 0, false, nil
      local l = assert(net.listen("127.0.0.1", 0, function(conn)
        peer = conn
        local burst = 0
        conn:on("data", function(bytes)
          got = got + #bytes
          burst = burst + 1
          if burst == 16 then            -- about 1 MiB, then a pause shorter than the linger time
            burst = 0
            conn:pause()
            lxmpp.spawn(function() lxmpp.sleep(0.25); if not conn.closed then conn:resume() end end)
          end
        end)
        conn:on("eof", function() eof = true end)
        conn:raw()
        conn:pause()
      end))
      local c = assert(net.connect("127.0.0.1", l:port()))
      wait_until(function() return peer end)
      c:set_max_queue(compat.lshift(16, 20))
      assert(c:write(("y"):rep(total)))
      local t0 = core.now()
      c:shutdown(1)
      peer:resume()
      wait_until(function() return eof end, 30 * slow)
      assert.is_true(core.now() - t0 > 1.5, "the transfer outlasted the linger time")
      assert.equal(total, got)
      peer:abort()
      l:close()
    end)
  end)

  it("conn:close and conn:shutdown refuse a negative or NaN linger time", function()
    lxmpp.run(function()
      local l = assert(net.listen("127.0.0.1", 0, function(conn) conn:abort() end))
      local c = assert(net.connect("127.0.0.1", l:port()))
      assert.has_error(function() c.c:close(-1) end)
      assert.has_error(function() c.c:close(0 / 0) end)
      c:abort()
      l:close()
    end)
  end)

  it("refuses a non-numeric address as misuse", function()
    lxmpp.run(function()
      assert.has_error(function() net.connect("localhost", 5222) end)
    end)
  end)

  it("a restart from a handler hands the rest of the read to the new stream", function()
    lxmpp.run(function()
      local rec = recorder()
      rec.on_stanza = function(conn, s) if s.name == "success" then conn:restart() end end
      local c = assert(net.connect("127.0.0.1", rec.listener:port()))
      -- one segment: a stanza that restarts the stream, then the new header and a stanza
      c:write(HDR .. "<success/>" .. HDR:gsub("to='x'", "to='y'") .. "<after/>")
      wait_until(function() return #rec.names == 2 end)
      assert.same({ "success", "after" }, rec.names)
      assert.same({ "open x", "open y" }, rec.events)
      c:close()
      rec.listener:close()
    end)
  end)

  it("pause inside a handler keeps the rest of the read until resume", function()
    lxmpp.run(function()
      local rec = recorder()
      local paused_conn
      rec.on_stanza = function(conn, s)
        if s.name == "pause" then conn:pause() paused_conn = conn end
      end
      local c = assert(net.connect("127.0.0.1", rec.listener:port()))
      c:write(HDR .. "<a/><pause/><b/><c/>")
      wait_until(function() return paused_conn ~= nil end)
      lxmpp.sleep(0.05)
      assert.same({ "a", "pause" }, rec.names)
      paused_conn:resume()
      wait_until(function() return #rec.names == 4 end)
      assert.same({ "a", "pause", "b", "c" }, rec.names)
      c:close()
      rec.listener:close()
    end)
  end)

  it("reports parse errors with their condition", function()
    lxmpp.run(function()
      local rec = recorder()
      local c = assert(net.connect("127.0.0.1", rec.listener:port()))
      c:write(HDR .. "<ok/><bad><!-- x --></bad><never/>")
      wait_until(function() return #rec.events == 2 end)
      assert.same({ "open x", "error restricted-xml" }, rec.events)
      assert.same({ "ok" }, rec.names)
      c:close()
      rec.listener:close()
    end)
  end)

  it("coalesces the writes of one loop iteration into one system call", function()
    lxmpp.run(function()
      local rec = recorder()
      local c = assert(net.connect("127.0.0.1", rec.listener:port()))
      local before = c:info().writes
      c:write(HDR)
      for i = 1, 200 do c:write("<m" .. i .. "/>") end
      wait_until(function() return #rec.names == 200 end)
      assert.equal(1, c:info().writes - before)
      c:close()
      rec.listener:close()
    end)
  end)

  it("bounds the output queue for a peer that stops reading, then drains", function()
    lxmpp.run(function()
      local server_conn
      local l = assert(net.listen("127.0.0.1", 0, function(conn) server_conn = conn end))
      local c = assert(net.connect("127.0.0.1", l:port()))
      wait_until(function() return server_conn ~= nil end)
      c:set_max_queue(256 * 1024)
      local drained = false
      c:on("drain", function() drained = true end)
      local chunk = ("z"):rep(16384)
      assert(c:write(HDR .. "<m>"))   -- all that follows is the text of <m>
      local refused, cond
      for _ = 1, 100000 do
        local ok, _, co = c:write(chunk)
        if not ok then refused, cond = true, co break end
        lxmpp.task.yield()           -- let the loop flush what it can
      end
      assert.is_true(refused, "the queue never filled")
      assert.equal("resource-constraint", cond)
      assert.is_true(c:info().queued <= 256 * 1024)
      -- the peer starts reading: everything queued goes out and drain fires
      local perr
      server_conn:on("parse-error", function(m) perr = m end)
      server_conn:parse({ max_stanza_size = compat.lshift(1, 30) })
      wait_until(function() return drained end, 10)
      assert.equal(0, c:info().queued)
      assert.is_nil(perr)
      c:abort()
      server_conn:abort()
      l:close()
      lxmpp.sleep(0.01)
    end)
  end)

  it("parses with every limit conn:parse is given, as the stream parser does", function()
    lxmpp.run(function()
      local got, errs, conns, clients = {}, {}, {}, {}
      local opts = { max_depth = 3, max_attributes = 2, max_children = 4 }
      local l = assert(net.listen("127.0.0.1", 0, function(conn)
        conns[#conns + 1] = conn
        conn:on("stanza", function(s) got[#got + 1] = s.name end)
        conn:on("parse-error", function(msg, cond) errs[#errs + 1] = cond .. " " .. msg; conn:abort() end)
        conn:parse(opts)
      end))
      -- (a failure still closes everything, so that the loop can end)
      local ok, err = compat.pcall(function()
        local cases = {
          "<ok a='1' b='2'><x><y/></x></ok>",         -- within all three
          "<deep><a><b><c/></b></a></deep>",           -- depth 4
          "<attrs a='1' b='2' c='3'/>",                -- 3 attributes
          "<kids><a/><b/><c/><d/><e/></kids>",         -- 5 children
        }
        for i, xml in ipairs(cases) do
          local c = assert(net.connect("127.0.0.1", l:port()))
          clients[#clients + 1] = c
          c:write(HDR .. xml)
          wait_until(function() return #got + #errs == i end)
        end
        assert.same({ "ok" }, got)
        assert.equal(3, #errs)
        for _, e in ipairs(errs) do assert.matches("^policy%-violation", e) end
        -- a limit out of range is an error, not a silent default
        assert.has_error(function() conns[1]:parse({ max_depth = 0 }) end,
          "option max_depth must be an integer from 1 to 1024")
      end)
      for _, c in ipairs(clients) do c:abort() end
      for _, c in ipairs(conns) do c:abort() end
      l:close()
      lxmpp.sleep(0.01)
      assert(ok, err)
    end)
  end)

  it("set_target hands events to one shared table of functions, and a conn:on handler wins", function()
    lxmpp.run(function()
      local seen = {}
      local events = {
        open = function(t, attr) seen[#seen + 1] = t.name .. " open " .. attr.to end,
        stanza = function(t, s) seen[#seen + 1] = t.name .. " stanza " .. s.name end,
        eof = function(t) t.conn:close() end,
        closed = function(t) seen[#seen + 1] = t.name .. " closed" end,
      }
      local n = 0
      local l = assert(net.listen("127.0.0.1", 0, function(conn)
        n = n + 1
        local ok, err = pcall(conn.set_target, conn, {}, "events")
        assert.is_false(ok)
        assert.matches("events must be a table", err)
        assert.equal(conn, conn:set_target({ name = "t" .. n, conn = conn }, events))
        if n == 2 then conn:on("stanza", function(s) seen[#seen + 1] = "handler " .. s.name end) end
        conn:parse()
      end))
      for i = 1, 2 do
        local c = assert(net.connect("127.0.0.1", l:port()))
        c:write(HDR .. "<m" .. i .. "/>")
        wait_until(function() return #seen == 3 * i - 1 end)
        c:abort()
        wait_until(function() return #seen == 3 * i end)
      end
      assert.same({ "t1 open x", "t1 stanza m1", "t1 closed", "t2 open x", "handler m2", "t2 closed" }, seen)
      l:close()
    end)
  end)

  it("net.close_listeners closes the listeners still open, and only those", function()
    lxmpp.run(function()
      local a = assert(net.listen("127.0.0.1", 0, function(conn) conn:abort() end))
      local b = assert(net.listen("127.0.0.1", 0, function(conn) conn:abort() end))
      local port = a:port()
      b:close()
      assert.equal(1, net.close_listeners())
      assert.equal(0, net.close_listeners())
      local ok, _, cond = net.connect("127.0.0.1", port)
      assert.is_nil(ok)
      assert.equal("connection-refused", cond)
    end)
  end)

  it("close is graceful, safe twice, and refuses later writes", function()
    lxmpp.run(function()
      local rec = recorder()
      local c = assert(net.connect("127.0.0.1", rec.listener:port()))
      c:write(HDR .. "<bye/>")
      assert.is_true(c:close())
      assert.is_true(c:close())
      local ok, _, cond = c:write("<x/>")
      assert.is_nil(ok)
      assert.equal("closed", cond)
      wait_until(function() return #rec.names == 1 end)
      assert.same({ "bye" }, rec.names)
      rec.listener:close()
      lxmpp.sleep(0.02)
    end)
  end)

  -- regression: writing to a connection the peer had reset killed the
  -- whole process with SIGPIPE (a hostile client could stop the server).
  -- In a process of its own, with SIGPIPE at its default (the spec runner's
  -- may be ignoring it, and children inherit that).
  it("writes to a connection the peer reset fail; the process lives on", function()
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write([[
local lxmpp = require "lxmpp"
local net = require "lxmpp.net"
lxmpp.run(function()
  local l = assert(net.listen("127.0.0.1", 0, function(conn) conn:abort() end))
  local c = assert(net.connect("127.0.0.1", l:port()))
  c:raw()
  lxmpp.sleep(0.05)
  local last
  for _ = 1, 5 do
    last = c:write(("x"):rep(1000))
    lxmpp.sleep(0.02)
  end
  assert(last == nil, "writes to a reset connection still succeed")
  c:abort()
  l:close()
end)
io.write("survived")
]])
    f:close()
    local p = assert(io.popen("env --default-signal=PIPE " .. LUA .. " " .. script .. " 2>&1"))
    local out = p:read("*a")
    local ok, _, code = p:close()
    os.remove(script)
    assert.equal("survived", out)
    assert.is_true(ok, "exit " .. tostring(code))
  end)
end)

-- The lingering close (csrc/net_io.c, lx_net_drain): after close() what the
-- peer sends is read and dropped, and after our FIN the socket waits,
-- bounded, for the peer's EOF. Closing on unread input made the kernel
-- answer with a RST, which lost what we had sent last (a stream error,
-- RFC 6120 §4.9) and reset the peer's connection.
describe("tcp connections: lingering close", function()
  after_each(assert_clean)
  local linger_peer = require "spec.support.linger_peer"
  local slow = require("spec.support.slow").factor
  local REPLY = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='s1'>"
  local ERR = "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
    .. "</stream:stream>"

  it("a peer still sending, whose reading lags, gets everything queued before the close, not a reset", function()
    -- the peer's receive buffer is small, so most of the 512 KiB wait in
    -- our queue and our kernel's send buffer when it sends 64 KiB more
    -- after our close; it reads everything only 0.3 s later
    lxmpp.run(function()
      local fill = "<message><body>" .. ("x"):rep(512 * 1024) .. "</body></message>"
      local stanzas = 0
      local l = assert(net.listen("127.0.0.1", 0, function(conn)
        conn:on("stanza", function() stanzas = stanzas + 1 end)
        conn:on("open", function()
          assert(conn:write(REPLY .. fill))
          assert(conn:write(ERR))
          conn:shutdown(10)
        end)
        conn:parse()
      end))
      local r = linger_peer.run(l:port(), { header = HDR, payload = ("<presence/>"):rep(6000),
        mode = "nowait", rcvbuf = 4096 })
      assert.truthy(r.sent > 0, "the peer sent after our close")
      assert.equal("none", r.send_error)
      assert.equal("eof", r["end"])
      assert.equal(#REPLY + #fill + #ERR, r.received)
      assert.equal(ERR, r.last:sub(-#ERR))
      assert.equal(0, stanzas, "what came after the close was never parsed")
      l:close()
    end)
  end)

  it("a peer that keeps sending after our close holds the socket no longer than the bound", function()
    -- conn:shutdown(linger): once the peer has all we sent, at most 2 s
    -- (LINGER_QUIET_MS) without a byte from it and 10 s (LINGER_TIME_MS)
    -- in all, each at most linger: a peer sending all along keeps it
    -- open for linger (3 s here, not the 2 s of a quiet one), no longer
    -- (give or take the idle sweep's period, 0.25 s, twice)
    lxmpp.run(function()
      for _, case in ipairs({ { name = "sending", min = 2.6, max = 3.7 }, { name = "quiet", min = 1.9, max = 2.7 } }) do
        local peer
        local l = assert(net.listen("127.0.0.1", 0, function(conn) peer = conn; conn:raw() end))
        local c = assert(net.connect("127.0.0.1", l:port()))
        c:raw()
        wait_until(function() return peer end)
        local peer_eof, data, closed_at = false, 0, nil
        peer:on("eof", function() peer_eof = true end)
        local t0
        c:on("data", function() if t0 then data = data + 1 end end)
        c:on("closed", function() closed_at = core.now() end)
        local writer = case.name == "sending" and lxmpp.spawn(function()
          while not peer.closed do
            peer:write(("z"):rep(16384))
            lxmpp.sleep(0.01)
          end
        end)
        lxmpp.sleep(0.05)
        assert(c:write("bye"))
        t0 = core.now()
        c:shutdown(3)
        local before = c:info().bytes_in
        wait_until(function() return closed_at end, 5 * slow + 1)
        local took = closed_at - t0
        assert.is_true(peer_eof, case.name .. ": the peer saw our FIN while we lingered")
        assert.is_true(took >= case.min, case.name .. ": lingered " .. took .. " s")
        assert.is_true(took <= case.max * slow, case.name .. ": lingered " .. took .. " s")
        assert.equal(0, data, case.name .. ": nothing read after the close reached Lua")
        if writer then
          assert.truthy(c:info().bytes_in > before + 16384, "what the peer sent was read, and dropped")
        end
        peer:abort()
        if writer then wait_until(function() return lxmpp.task.count() == 1 end) end
        l:close()
      end
    end)
  end)

  it("abort() while lingering closes at once; close() again changes nothing", function()
    lxmpp.run(function()
      local peer
      local l = assert(net.listen("127.0.0.1", 0, function(conn) peer = conn; conn:raw() end))
      local c = assert(net.connect("127.0.0.1", l:port()))
      c:raw()
      wait_until(function() return peer end)
      local peer_eof = false
      peer:on("eof", function() peer_eof = true end)
      c:shutdown(30)
      wait_until(function() return peer_eof end)
      lxmpp.sleep(0.3)
      assert.falsy(c.closed, "our FIN is out, the peer's EOF awaited")
      c.c:close()
      assert.falsy(c.closed)
      local t0 = core.now()
      c:abort()
      wait_until(function() return c.closed end)
      assert.is_true(core.now() - t0 < 0.1)
      peer:abort()
      l:close()
    end)
  end)

  it("nothing read after close() reaches Lua: no data, no stanza, not even the rest of the same read", function()
    lxmpp.run(function()
      for _, mode in ipairs({ "parse", "raw" }) do
        local seen, server = {}, nil
        local l = assert(net.listen("127.0.0.1", 0, function(conn)
          server = conn
          conn:on("data", function(bytes)
            seen[#seen + 1] = bytes
            conn:shutdown(5)
          end)
          conn:on("stanza", function(s)
            seen[#seen + 1] = s.name
            conn:shutdown(5)
          end)
          if mode == "raw" then conn:raw() else conn:parse() end
        end))
        local c = assert(net.connect("127.0.0.1", l:port()))
        c:raw()
        local eof = false
        c:on("eof", function() eof = true end)
        -- one write: the server closes on its first stanza, in the middle of the read
        assert(c:write(mode == "raw" and "a" or HDR .. "<first/><second/><third/>"))
        wait_until(function() return #seen > 0 end)
        local before = server:info().bytes_in
        for _ = 1, 8 do
          c:write(mode == "raw" and ("b"):rep(16384) or ("<more/>"):rep(2000))
          lxmpp.sleep(0.01)
        end
        wait_until(function() return eof or c.closed end)
        assert.same({ mode == "raw" and "a" or "first" }, seen)
        assert.truthy(server:info().bytes_in >= before + 8 * 14000, mode .. ": the server read on after its close")
        assert.falsy(server.closed, mode .. ": the server waits for our EOF")
        c:close()
        wait_until(function() return server.closed end)
        l:close()
      end
    end)
  end)
end)
