-- Cancelling a task that connects (lxmpp.task.cancel of a task inside
-- lxmpp.connect or lxmpp.http.request) ends its attempt at once in every
-- phase: the connection attempt's socket is closed, no timer stays behind,
-- so the loop has nothing left to do at once. And a peer that closes the
-- connection during the TLS handshake ends lxmpp.connect at once. The
-- same for an aborted BOSH transport's requests, and for a task cancelled
-- while it closes a connection or a client gracefully. The peers never
-- answer (spec/support/blackhole.lua, loopback only); before, a cancelled
-- attempt left its connection open and its timer running (connect_timeout,
-- opts.timeout, the HTTP and close timeouts).
local compat = require "lxmpp.compat"
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local net = require "lxmpp.net"
local http = require "lxmpp.http"
local blackhole = require "spec.support.blackhole"
local assert_clean = require "spec.support.clean"
local SLOW = require("spec.support.slow").factor

-- polls (in a task) until pred() holds, at most `seconds` (x SLOW)
local wait_for = require("spec.support.smserver").wait_for

-- In a task: setup() -> fn, ready, after [, stop]; starts fn as a task,
-- waits until ready() holds, cancels it (or calls stop() instead), then
-- runs after() (checks, clean-up of the peers). Then the loop must have nothing left to do at once: one
-- still busy 1 s (x SLOW) after the cancel is cut and the spec fails,
-- rather than waiting for whatever timer was left.
local function cancel_when(setup)
  local cancelled_at, failure
  local main = lxmpp.spawn(function()
    local ok, err = compat.xpcall(function()
      local fn, ready, after, stop = setup()
      local t = lxmpp.spawn(fn)
      assert(wait_for(ready, 2), "the task never reached the phase under test")
      if stop then
        stop()
      else
        assert.is_true(lxmpp.task.alive(t), "the task ended before it was cancelled")
        assert.is_true(lxmpp.task.cancel(t))
      end
      cancelled_at = core.now()
      if after then after() end
    end, debug.traceback)
    if not ok then failure = err end
  end)
  local limit = core.now() + 10 * SLOW
  while lxmpp.task.alive(main) and core.now() < limit do lxmpp.step(0.01) end
  local idle = false
  if not failure and cancelled_at then
    limit = core.now() + 1 * SLOW
    repeat idle = not lxmpp.step(0.01) until idle or core.now() > limit
  end
  local busy = cancelled_at and core.now() - cancelled_at
  if not idle then                        -- what was left behind is cut, then reported
    lxmpp.task.cancel_all()
    net.abort_all()
    net.close_listeners()
    for _ = 1, 100 do if not lxmpp.step(0.01) then break end end
  end
  assert(not failure, failure)
  assert(cancelled_at, "the task was never cancelled")
  assert(idle, "the loop was still busy " .. tostring(busy) .. " s after the cancel")
  return busy
end

-- after(): the silent peer saw its connection closed, then goes away.
local function closed_then_gone(silent)
  return function()
    assert(wait_for(function() return silent.conns[1] and silent.conns[1].eof end, 0.5),
      "the cancelled attempt's connection is still open")
    silent:close()
  end
end

describe("a cancelled connect", function()
  after_each(assert_clean)

  it("closes its pending TCP connect at once", function()
    -- (this phase could already be cancelled: lxmpp.net.connect's own wait)
    local hole = blackhole.tcp()
    local ok, err = pcall(cancel_when, function()
      return function()
        lxmpp.connect({ jid = "example.test/r", mechanism = "ANONYMOUS", host = "127.0.0.1", port = hole.port,
          tls = "none", connect_timeout = 5 * SLOW, logger = function() end })
      end, function() return hole:attempt_open() end, function()
        assert.is_true(hole:attempt_closed())
      end
    end)
    hole:close()
    assert(ok, err)
  end)

  -- a client connecting to a peer that reads and never answers
  local function connect_to_silent(tls)
    return function()
      local silent = blackhole.silent()
      return function()
        lxmpp.connect({ jid = "example.test/r", mechanism = "ANONYMOUS", host = "127.0.0.1", port = silent.port,
          tls = tls, timeout = 5 * SLOW, logger = function() end })
      end, function() return silent:bytes_in() > 0 end, closed_then_gone(silent)
    end
  end

  it("woken (connected) but not yet resumed when cancelled still closes the connection it made", function()
    -- a task the listener's accept handler starts cancels the connecting
    -- task in the same loop round as its connect succeeds: the task's
    -- wait is over, it has not run yet; before, its waiter's cancel was
    -- skipped and the connected socket stayed open with nothing referring
    -- to it
    lxmpp.run(function()
      local peer, connecting, closed
      local l = assert(net.listen("127.0.0.1", 0, function(conn)
        peer = conn
        conn:on("closed", function() closed = true end)
        conn:on("eof", function() closed = true end)
        conn:raw()
        lxmpp.spawn(function() lxmpp.task.cancel(connecting) end)
      end))
      local made
      connecting = lxmpp.spawn(function() made = net.connect("127.0.0.1", l:port()) end)
      assert.truthy(wait_for(function() return peer end, 2), "no connection accepted")
      assert.truthy(wait_for(function() return closed end, 1), "the cancelled task's connection is still open")
      assert.is_nil(made)
      assert.is_false(lxmpp.task.alive(connecting))
      peer:abort()
      l:close()
    end)
  end)

  it("during its TLS handshake closes the connection and stops its timer", function()
    cancel_when(connect_to_silent("direct"))           -- the ClientHello is never answered
  end)

  it("during its stream negotiation closes the connection and stops its timer", function()
    cancel_when(connect_to_silent("none"))             -- the stream header is never answered
  end)

  it("ends at once when the server closes the connection during the TLS handshake", function()
    lxmpp.run(function()
      local l = assert(net.listen("127.0.0.1", 0, function(conn)
        conn:on("data", function() conn:close() end)      -- reads the ClientHello, hangs up
        conn:raw()
      end))
      local t0 = core.now()
      local c, msg, cond = lxmpp.connect({ jid = "example.test/r", mechanism = "ANONYMOUS", host = "127.0.0.1",
        port = l:port(), tls = "direct", timeout = 5 * SLOW, logger = function() end })
      local took = core.now() - t0
      l:close()
      assert.is_nil(c)
      assert.equal("closed", cond)
      assert.matches("closed", msg)
      assert.is_true(took < 0.5 * SLOW, "lxmpp.connect took " .. took .. " s")
    end)
  end)
end)

describe("a cancelled HTTP request", function()
  after_each(assert_clean)

  local function request_to_silent(scheme)
    return function()
      local silent = blackhole.silent()
      return function()
        http.request({ url = scheme .. "://127.0.0.1:" .. silent.port .. "/x", timeout = 5 * SLOW })
      end, function() return silent:bytes_in() > 0 end, closed_then_gone(silent)
    end
  end

  it("waiting for the answer closes its connection and stops its timer", function()
    cancel_when(request_to_silent("http"))             -- the request is never answered
  end)

  it("during its TLS handshake closes its connection and stops its timer", function()
    cancel_when(request_to_silent("https"))            -- the ClientHello is never answered
  end)
end)

describe("an aborted BOSH transport", function()
  after_each(assert_clean)

  it("ends its request still connecting to a host that never answers at once", function()
    local bosh = require "lxmpp.bosh"
    local hole = blackhole.tcp()
    local t
    local ok, err = pcall(cancel_when, function()
      t = bosh.connect("http://127.0.0.1:" .. hole.port .. "/http-bind", { connect_timeout = 5 * SLOW })
      return function()
        t:parse()
        assert(t:write("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.test' version='1.0'/>"))
      end, function() return hole:attempt_open() end, function()
        assert.is_true(hole:attempt_closed())
      end, function() t:abort() end
    end)
    hole:close()
    assert(ok, err)
  end)
end)

describe("a cancelled close", function()
  after_each(assert_clean)

  it("of a connection whose peer reads nothing aborts it and stops its timer", function()
    local l, peer
    cancel_when(function()
      -- an accepted connection never parses nor reads: what we send fills
      -- the socket buffers and the graceful close can never flush it
      l = assert(net.listen("127.0.0.1", 0, function(conn) peer = conn end))
      local c = assert(net.connect("127.0.0.1", l:port()))
      c:set_max_queue(64 * 1024 * 1024)
      local chunk = ("z"):rep(1024 * 1024)
      for _ = 1, 32 do assert(c:write(chunk)) end
      local closing = false
      return function()
        closing = true
        c:close(5 * SLOW)
      end, function() return closing and peer ~= nil end, function()
        assert.is_true(c.closed or not c:info().open)
        peer:abort()
        l:close()
      end
    end)
  end)

  it("of a client whose server never ends its stream aborts the connection and stops the timer", function()
    local smserver = require "spec.support.smserver"
    local srv
    cancel_when(function()
      srv = smserver.start()
      local c = assert(lxmpp.connect(srv:client_opts({ reconnect = false })))
      -- the server no longer answers our </stream:stream>
      for conn in pairs(srv.conns) do conn:on("stream-close", function() end) end
      return function() c:close(5 * SLOW) end, function() return c.closing end, function()
        assert(wait_for(function() return next(srv.conns) == nil end, 0.5), "the client's connection is still open")
        srv:close()
      end
    end)
  end)
end)
