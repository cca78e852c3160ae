-- Reconnection and liveness against a scripted server
-- (spec/support/smserver.lua): backoff with jitter and a cap, no retry
-- after conflict or not-authorized, close() stopping it all, the queue of
-- stanzas sent while reconnecting, handlers that stay, and dead links found
-- by the keepalive (XEP-0198 acks, or XEP-0199 pings without them).
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local st = lxmpp.stanza
local smserver = require "spec.support.smserver"
local SLOW = require("spec.support.slow").factor
local blackhole = require "spec.support.blackhole"

local wait_for = smserver.wait_for

local run = smserver.run

local function watch(c)
  local ev = { disconnected = {}, reconnected = {}, unacked = {} }
  c:on("disconnected", function(msg, cond, again)
    table.insert(ev.disconnected, { msg = msg, cond = cond, again = again })
  end)
  c:on("reconnected", function(resumed) table.insert(ev.reconnected, resumed) end)
  c:on("unacked", function(list, reason, cond)
    for _, s in ipairs(list) do
      table.insert(ev.unacked, { body = s:get_child_text("body"), reason = reason, cond = cond })
    end
  end)
  return ev
end

-- The server ends the stream with a stream error.
-- Sends n messages of 64 KiB ("i:xxx..."), waiting for the output to
-- drain whenever the queue is full.
local function send_big(c, n)
  local big = ("x"):rep(64 * 1024)
  for i = 1, n do
    local body = i .. ":" .. big
    local sent, _, cond = c:send_message("x@example.test", body)
    if not sent then
      assert.equal("resource-constraint", cond)
      assert(c:wait_drain(5 * SLOW))
      assert.is_true(c:send_message("x@example.test", body))
    end
  end
end

local function kick(srv, cond)
  local conn = srv:session().conn
  conn:write("<stream:error><" .. cond .. " xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>" ..
    "</stream:stream>")
  conn:close()
end

describe("reconnection", function()
  after_each(smserver.cleanup)

  it("comes back with the same handlers, sending what waited meanwhile in order", function()
    run(function()
      local srv = smserver.start()
      local c = assert(lxmpp.connect(srv:client_opts()))
      local ev = watch(c)
      local got = {}
      c:on("message", function(m) got[#got + 1] = m:get_child_text("body") end)
      srv.opts.refuse = true
      srv:kill()
      assert(wait_for(function() return #ev.disconnected == 1 end, 2))
      assert.same({ "closed", true }, { ev.disconnected[1].cond, ev.disconnected[1].again })
      for i = 1, 3 do assert.is_true(c:send_message("x@example.test", "q" .. i)) end
      srv.opts.refuse = nil
      assert(wait_for(function() return #ev.reconnected == 1 end, 2))
      assert.is_true(ev.reconnected[1])
      assert(wait_for(function() return #srv:grep("message q3") == 1 end, 2))
      local msgs = srv:grep("message q")
      assert.same({ "q1", "q2", "q3" }, { msgs[1]:match("q%d"), msgs[2]:match("q%d"), msgs[3]:match("q%d") })
      assert.equal(msgs[1]:match("^%d+"), tostring(srv.nconn))          -- on the new connection
      srv:push(st.message({ to = c.jid }, "after"))
      assert(wait_for(function() return got[1] == "after" end, 2))
      assert.same({}, ev.unacked)
      c:close()
      srv:close()
    end)
  end)

  it("waits longer after each failure, with jitter, up to the cap", function()
    run(function()
      local srv = smserver.start()
      local base, cap = 0.1 * SLOW, 0.4 * SLOW
      local c = assert(lxmpp.connect(srv:client_opts({ reconnect = { delay = base, max_delay = cap } })))
      local ev = watch(c)
      srv.opts.refuse = true
      srv:kill()
      assert(wait_for(function() return #srv.attempts >= 8 end, 10 * SLOW))
      srv.opts.refuse = nil
      assert(wait_for(function() return #ev.reconnected == 1 end, 2))
      -- a[1] is the first connection; attempt k waits d * (0.5 .. 1), d = min(0.4, 0.1 * 2^(k-1))
      -- (upper bounds with slack for a loaded machine; without the cap they would pass 0.8)
      local a, below = srv.attempts, 0
      for k = 1, 6 do
        local d = math.min(cap, base * 2 ^ (k - 1))
        local gap = a[k + 2] - a[k + 1]
        assert(gap >= 0.5 * d - 0.01 and gap <= d + 0.3 * SLOW, ("attempt %d after %.3f s, expected %.3f-%.3f"):format(
          k + 1, gap, 0.5 * d, d))
        if d == cap and gap < 0.95 * cap then below = below + 1 end
      end
      assert.is_true(below > 0, "no jitter")
      c:close()
      srv:close()
    end)
  end)

  it("gives up after max_attempts and says so", function()
    run(function()
      local srv = smserver.start({ ack = function() return false end })
      local c = assert(lxmpp.connect(srv:client_opts({ reconnect = { delay = 0.01, max_attempts = 3 } })))
      local ev = watch(c)
      c:send_message("x@example.test", "m1")
      assert(wait_for(function() return #srv:grep("message m1") == 1 end, 2))
      srv.opts.refuse = true
      srv:kill()
      assert(wait_for(function() return #ev.disconnected == 2 end, 2))
      assert.is_true(ev.disconnected[1].again)
      assert.is_false(ev.disconnected[2].again)
      assert.equal(4, #srv.attempts)
      assert.same({ "m1" }, { ev.unacked[1] and ev.unacked[1].body })
      assert.same({}, ev.reconnected)
      c:close()
      srv:close()
    end)
  end)

  it("does not fight another client for its resource (conflict)", function()
    run(function()
      local srv = smserver.start()
      local c = assert(lxmpp.connect(srv:client_opts()))
      local ev = watch(c)
      kick(srv, "conflict")
      assert(wait_for(function() return #ev.disconnected == 1 end, 2))
      assert.same({ "conflict", false }, { ev.disconnected[1].cond, ev.disconnected[1].again })
      lxmpp.sleep(0.2)
      assert.equal(1, #srv.attempts)
      local ok, _, cond = c:send_message("x@example.test", "late")
      assert.same({ nil, "closed" }, { ok, cond })
      c:close()
      srv:close()
    end)
  end)

  it("stops when the server refuses the credentials on a reconnection", function()
    run(function()
      local srv = smserver.start()
      local c = assert(lxmpp.connect(srv:client_opts()))
      local ev = watch(c)
      srv.opts.refuse_auth = true
      srv:kill()
      assert(wait_for(function() return #ev.disconnected == 2 end, 2))
      assert.same({ "not-authorized", false }, { ev.disconnected[2].cond, ev.disconnected[2].again })
      lxmpp.sleep(0.2)
      assert.equal(2, #srv.attempts)
      c:close()
      srv:close()
    end)
  end)

  it("close() stops reconnecting and reports what waited", function()
    run(function()
      local srv = smserver.start()
      local c = assert(lxmpp.connect(srv:client_opts({ reconnect = { delay = 0.05, max_delay = 0.05 } })))
      local ev = watch(c)
      srv.opts.refuse = true
      srv:kill()
      assert(wait_for(function() return #srv.attempts >= 3 end, 2))
      c:send_message("x@example.test", "never")
      local t0 = core.now()
      assert.is_true(c:close())
      assert.is_true(core.now() - t0 < 0.5)
      local n = #srv.attempts
      lxmpp.sleep(0.2)
      assert.equal(n, #srv.attempts)
      assert(wait_for(function() return #ev.unacked == 1 end, 1))
      assert.equal("never", ev.unacked[1].body)
      assert.equal(1, #ev.disconnected)
      srv:close()
    end)
  end)

  it("close() during a reconnection's DNS lookup returns at once, leaving no query behind", function()
    local dnsd = require "spec.support.dnsd"
    local resolve = require "lxmpp.resolve"
    local silent = dnsd.start({}, "--silent")
    local closed_at, took
    local ok, err = pcall(run, function()
      local srv = smserver.start()
      local c = assert(lxmpp.connect(srv:client_opts({ reconnect = { delay = 0.01, max_delay = 0.01 } })))
      local ev = watch(c)
      -- the reconnection looks the domain up, as a client without host
      -- does (tls = "none" needs a loopback host at connect, a test-only
      -- mode, hence the host dropped afterwards), on a DNS server that
      -- never answers (5 s, twice)
      c.opts.host, c.opts.port = nil, nil
      resolve.configure{ servers = silent.addr, timeout = 5, tries = 2 }
      srv:kill()
      assert(wait_for(function()
        local f = assert(io.open(silent.log))
        local asked = f:read("*a"):find("_xmpp-client._tcp.example.test", 1, true)
        f:close()
        return asked
      end, 2), "the reconnection is not resolving")
      local t0 = core.now()
      assert.is_true(c:close())
      took = core.now() - t0
      closed_at = core.now()
      assert.is_false(c.reconnecting)
      assert.equal(1, #ev.disconnected)
      srv:close()
    end)
    local run_took = closed_at and core.now() - closed_at
    resolve.set_servers(nil)
    dnsd.stop(silent)
    assert(ok, err)
    assert.is_true(took < 0.5 * SLOW, "close() took " .. tostring(took) .. " s")
    assert.is_true(run_took < 0.5 * SLOW, "run took " .. tostring(run_took) .. " s more")
  end)

  -- c:close() while a reconnection attempt waits on a peer that never
  -- answers: prepare(c) points the client's next attempts at it and
  -- returns a predicate that holds once the attempt waits in the phase
  -- under test, and a clean-up run after (outside the loop). close() must
  -- return at once, the attempt's connection must be gone, and lxmpp.run
  -- must return at once too (no timer or socket left to keep it going);
  -- before, each of these waited for connect_timeout or opts.timeout
  -- (3 s here).
  local function close_during(prepare)
    local took, closed_at, cleanup, phase_reached
    local ok, err = pcall(run, function()
      local srv = smserver.start()
      local c = assert(lxmpp.connect(srv:client_opts({ reconnect = { delay = 0.01, max_delay = 0.01 },
        connect_timeout = 3 * SLOW, timeout = 3 * SLOW })))
      local ev = watch(c)
      local in_phase, gone
      in_phase, gone, cleanup = prepare(c)
      srv:kill()
      phase_reached = wait_for(in_phase, 2)
      assert(phase_reached, "the reconnection did not reach the phase under test")
      assert.is_true(c:send_message("x@example.test", "queued"))   -- waits for the reconnection
      local t0 = core.now()
      assert.is_true(c:close())
      took = core.now() - t0
      assert.is_false(c.reconnecting)
      -- what never went out is in "unacked" by the time close() returns,
      -- as when close() ends a reconnection between its attempts
      assert.same({ "queued" }, (function()
        local bodies = {}
        for i, u in ipairs(ev.unacked) do bodies[i] = u.body end
        return bodies
      end)())
      assert.equal(1, #ev.disconnected)
      assert.same({}, ev.reconnected)
      if gone then assert(wait_for(gone, 0.5), "the attempt's connection is still open") end
      closed_at = core.now()
      srv:close()
      if cleanup then cleanup("in loop") end
    end)
    local run_took = closed_at and core.now() - closed_at
    if cleanup then cleanup() end
    assert(ok, err)
    assert.is_true(took < 0.5 * SLOW, "close() took " .. tostring(took) .. " s")
    assert.is_true(run_took < 0.5 * SLOW, "run took " .. tostring(run_took) .. " s more")
  end

  it("close() during a reconnection's TCP connect to a peer that never answers returns at once", function()
    local hole = blackhole.tcp()
    close_during(function(c)
      c.opts.port = hole.port
      return function() return hole:attempt_open() end,
        function() return hole:attempt_closed() end,
        function(in_loop) if not in_loop then hole:close() end end
    end)
  end)

  it("close() during a reconnection's TLS handshake with a peer that never answers returns at once", function()
    close_during(function(c)
      local silent = blackhole.silent()
      c.opts.port = silent.port
      c.tls_mode = "direct"                     -- the ClientHello goes out first
      return function() return silent:bytes_in() > 0 end,
        function() return silent.conns[1].eof end,
        function(in_loop) if in_loop then silent:close() end end
    end)
  end)

  it("close() during a reconnection's XEP-0156 lookup of a peer that never answers returns at once", function()
    close_during(function(c)
      local silent = blackhole.silent()
      -- host-meta over HTTPS from the silent peer: its TLS handshake hangs
      c.opts.port, c.opts.discover = silent.port, true
      return function() return silent:bytes_in() > 0 end,
        function() return silent.conns[1].eof end,
        function(in_loop) if in_loop then silent:close() end end
    end)
  end)

  it("close() while the resend after a reconnection waits for a server that reads nothing returns at once", function()
    -- messages the server never acknowledges, on a session it cannot
    -- resume: the reconnection sends them again (resend_unacked) on the
    -- new session, whose server reads nothing once stream management is
    -- enabled, so the resend waits for the output to drain (more than the
    -- output queue, 4 MB, and the socket buffers hold). close() then must
    -- cut the link at once (nothing more can reach the server, not even
    -- the end of our stream), report every message in "unacked" before it
    -- returns, and leave nothing behind; before, the resend waited 30 s
    -- for the drain (lxmpp.run with it), its messages reported only once
    -- the close had waited out its own timeouts.
    local n, took, closed_at, blocked = 300, nil, nil, nil
    local ok, err = pcall(run, function()
      local srv = smserver.start({ no_resume = true, ack = function() return false end,
        stop_reading = function(conn_n) return conn_n == 2 end })
      local c = assert(lxmpp.connect(srv:client_opts({ reconnect = { delay = 0.01, max_delay = 0.01 } })))
      local ev = watch(c)
      send_big(c, n)
      srv:kill()
      blocked = wait_for(function() return c.flushing and c.drain_waiters ~= nil end, 5)
      assert(blocked, "the resend is not waiting for the server to read")
      assert.equal(2, srv.nconn)
      assert.same({}, ev.unacked)                         -- all of them wait to be sent again
      local t0 = core.now()
      assert.is_true(c:close())
      took = core.now() - t0
      closed_at = core.now()
      assert.equal(n, #ev.unacked)
      for i, u in ipairs(ev.unacked) do
        assert.equal(tostring(i), u.body:match("^(%d+):"))
        assert.equal("closed", u.cond)
      end
      assert.is_false(c.flushing)
      assert.same({}, ev.reconnected)                     -- closed before the resend was done
      -- (the server, reading nothing, does not see it go)
      assert(wait_for(function() return c.conn.closed end, 0.5), "the client's connection is still open")
      srv:close()
    end)
    local run_took = closed_at and core.now() - closed_at
    assert(ok, err)
    assert.is_true(took < 0.5 * SLOW, "close() took " .. tostring(took) .. " s")
    assert.is_true(run_took < 0.5 * SLOW, "run took " .. tostring(run_took) .. " s more")
  end)

  it("drops a link whose server reads nothing of the resend for keepalive seconds, and resends on the next", function()
    -- as above, but the server keeps writing (so the link is not silent:
    -- the keepalive alone would not find it dead) and is not closed: after
    -- `keepalive` seconds without reading, the link is dead, and the
    -- messages go out in order on the next session; before, the resend
    -- waited 30 s whatever the client's timeouts, then left the rest in
    -- the queue while later stanzas went out before it
    local n = 300
    run(function()
      local srv = smserver.start({ no_resume = true, ack = function() return false end,
        stop_reading = function(conn_n) return conn_n == 2 end })
      local ka = 0.6 * SLOW
      local c = assert(lxmpp.connect(srv:client_opts({ reconnect = { delay = 0.01, max_delay = 0.01 },
        keepalive = ka })))
      local ev = watch(c)
      send_big(c, n)
      srv:kill()
      assert(wait_for(function() return c.flushing and c.drain_waiters ~= nil end, 5),
        "the resend is not waiting for the server to read")
      local t0 = core.now()
      -- the stalled server still talks (while that link lasts, at most
      -- 3 s): the link is not silent
      lxmpp.spawn(function()
        while srv.nconn == 2 and core.now() < t0 + 3 * SLOW do
          srv:push(st.message({ to = c.jid }, "still here"))
          lxmpp.sleep(ka / 10)
        end
      end)
      assert(wait_for(function() return #ev.disconnected == 2 end, 3), "the stalled link was not dropped")
      local took = core.now() - t0
      assert.equal("timeout", ev.disconnected[2].cond)
      assert.matches("read nothing", ev.disconnected[2].msg)
      assert.is_true(ev.disconnected[2].again)
      assert.is_true(took >= ka * 0.9 and took < ka + 1 * SLOW, "dropped after " .. took .. " s")
      -- the next session gets every message, in order
      assert(wait_for(function() return #ev.reconnected == 1 end, 5))
      assert(wait_for(function() return #srv:grep("^3 message %d") == n end, 5))
      for i, line in ipairs(srv:grep("^3 message %d")) do assert.equal("3 message " .. i .. ":", line:sub(1, #tostring(i) + 11)) end
      assert.same({}, ev.unacked)
      c:close(0.1)
      srv:close()
    end)
  end)

  it("ends c:wait_drain() at once when the link is lost, with the reason", function()
    -- before, a wait_drain whose link was gone waited for its whole timeout
    run(function()
      local srv = smserver.start({ stop_reading = function() return true end, ack = function() return false end })
      local c = assert(lxmpp.connect(srv:client_opts({ reconnect = false })))
      local big = ("x"):rep(64 * 1024)
      local full = false
      for _ = 1, 1000 do
        local sent, _, cond = c:send_message("x@example.test", big)
        if not sent then
          assert.equal("resource-constraint", cond)
          full = true
          break
        end
      end
      assert.is_true(full, "the output queue never filled up")
      local got, took
      lxmpp.spawn(function()
        local t0 = core.now()
        got = { c:wait_drain(10 * SLOW) }
        took = core.now() - t0
      end)
      lxmpp.sleep(0.05)
      assert.is_nil(got)                                   -- waiting
      srv:kill()                                           -- the link goes (reset)
      assert(wait_for(function() return got ~= nil end, 1), "wait_drain still waits")
      assert.is_nil(got[1])
      assert.equal("closed", got[3])
      assert.is_true(took < 0.5 * SLOW)
      c:close()
      srv:close()
    end)
  end)

  it("bounds the stanzas waiting for a reconnection", function()
    run(function()
      local srv = smserver.start({ refuse = false })
      local c = assert(lxmpp.connect(srv:client_opts({ max_queued = 2 })))
      local ev = watch(c)
      srv.opts.refuse = true
      srv:kill()
      assert(wait_for(function() return #ev.disconnected == 1 end, 2))
      assert.is_true(c:send_message("x@example.test", "a"))
      assert.is_true(c:send_message("x@example.test", "b"))
      local ok, _, cond = c:send_message("x@example.test", "c")
      assert.same({ nil, "resource-constraint" }, { ok, cond })
      c:close()
      assert.equal(2, #ev.unacked)
      srv:close()
    end)
  end)

  it("is off with reconnect = false", function()
    run(function()
      local srv = smserver.start()
      local c = assert(lxmpp.connect(srv:client_opts({ reconnect = false })))
      local ev = watch(c)
      srv:kill()
      assert(wait_for(function() return #ev.disconnected == 1 end, 2))
      assert.is_false(ev.disconnected[1].again)
      lxmpp.sleep(0.1)
      assert.equal(1, #srv.attempts)
      c:close()
      srv:close()
    end)
  end)
end)

describe("liveness", function()
  after_each(smserver.cleanup)

  it("finds a dead link by unanswered stream management acks, then reconnects", function()
    run(function()
      local srv = smserver.start()
      local c = assert(lxmpp.connect(srv:client_opts({ keepalive = 0.4 * SLOW })))
      local ev = watch(c)
      lxmpp.sleep(1 * SLOW)                                        -- answered probes keep it up
      assert.same({}, ev.disconnected)
      assert.is_true(#srv:grep("^1 r$") >= 1)
      srv.opts.ack = function() return false end          -- the link goes silent
      local t0 = core.now()
      assert(wait_for(function() return #ev.disconnected == 1 end, 2))
      assert.is_true(core.now() - t0 <= (0.4 * 1.25 + 0.15) * SLOW)
      assert.equal("timeout", ev.disconnected[1].cond)
      srv.opts.ack = nil
      assert(wait_for(function() return #ev.reconnected == 1 end, 2))
      c:close()
      srv:close()
    end)
  end)

  it("uses XEP-0199 pings without stream management", function()
    run(function()
      local answer = true
      local srv = smserver.start({ no_sm = true, stanza = function(conn, s)
        if answer and s.name == "iq" and s.attr.type == "get" and s:get_child("ping", "urn:xmpp:ping") then
          conn:send(st.reply(s))
        end
      end })
      local c = assert(lxmpp.connect(srv:client_opts({ keepalive = 0.4 * SLOW })))
      local ev = watch(c)
      assert.same({ nil, "feature-not-implemented" }, { select(1, c:wait_acked(1)), select(3, c:wait_acked(1)) })
      lxmpp.sleep(1 * SLOW)
      assert.same({}, ev.disconnected)
      assert.is_true(#srv:grep("^1 iq get") >= 1)
      answer = false
      assert(wait_for(function() return #ev.disconnected == 1 end, 2))
      assert.equal("timeout", ev.disconnected[1].cond)
      assert(wait_for(function() return #ev.reconnected == 1 end, 2))
      assert.is_false(ev.reconnected[1])                  -- no stream management: a new session
      c:close()
      srv:close()
    end)
  end)
end)
