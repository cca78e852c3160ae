-- Signals (lua/lxmpp/signal.lua, csrc/signal.c) and Ctrl-C (issue 12,
-- point 7): handlers run as tasks from the loop; lxmpp.run turns SIGINT and
-- SIGTERM into a clean shutdown (clients close their streams, the server
-- sends <system-shutdown/> and closes its storage) and a second signal ends
-- the process at once; lxmpp.step takes no signal from its host.
--
-- In-process specs use SIGUSR1/SIGUSR2 and look at SIGTERM's disposition;
-- INT and TERM are sent only to programs the spec starts (bin/lxmpp serve,
-- the example bots, small scripts), through spec/support/proc.lua.
local compat = require "lxmpp.compat"
local close = require "spec.support.close"
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local proc = require "spec.support.proc"
local serve = require "spec.support.serve"
local raw = require "spec.support.raw"
local pki = require "spec.support.pki"
local clean = require "spec.support.clean"

local ROOT = proc.ROOT

-- Every program a spec started: killed after it, whatever happened.
local started = {}
local function kill_started()
  for _, p in ipairs(started) do
    p:kill()
    p:cleanup()
  end
  started = {}
end

-- Starts `lua5.4 args...` with lxmpp on its paths (and env: "NAME=value").
local function start_lua(args, env)
  local p = proc.lua(args, env)
  started[#started + 1] = p
  return p
end

-- A script in a temporary file.
local function script(text)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

-- Waits for the program to end: the result and how long it took.
local function ended(p, timeout)
  local t0 = core.now()
  local r = p:wait(timeout or 5)
  return r, core.now() - t0
end

local function no_traceback(r)
  assert.not_matches("traceback", r.err)
  assert.not_matches("interrupted", r.err)
  assert.not_matches("%.lua:%d+:", r.err)
end

describe("lxmpp.on_signal", function()
  after_each(function()
    kill_started()
    clean()
  end)

  it("runs its handler as a task from the loop, each time the signal comes", function()
    local before = core.signal_disposition("usr1")
    local got = {}
    lxmpp.run(function()
      local w = lxmpp.on_signal("SIGUSR1", function(name)
        lxmpp.sleep(0)                   -- a task: it may wait
        got[#got + 1] = name
      end)
      assert.equal("handler", core.signal_disposition("usr1"))
      for i = 1, 3 do
        assert(core.kill(core.getpid(), "usr1"))
        assert.is_true(serve.until_true(function() return #got == i end, 2), "delivery " .. i)
      end
      w:stop()
      w:stop()                           -- safe twice
    end)
    assert.same({ "usr1", "usr1", "usr1" }, got)
    assert.equal(before, core.signal_disposition("usr1"))
  end)

  it("does not keep lxmpp.run alive, and is a to-be-closed value", function()
    local w
    local t0 = core.now()
    lxmpp.run(function() w = lxmpp.on_signal("usr2", function() end) end)
    assert.is_true(core.now() - t0 < 1)
    assert.equal(1, core.loop_handles())
    close.scope(w)                    -- __close stops it
    lxmpp.step(0)
    assert.equal(0, core.loop_handles())
  end)

  it("reports a handler's error like any task's, and the loop goes on", function()
    local reported
    lxmpp.task.on_error(function(_, msg) reported = msg end)
    local ok, err = pcall(lxmpp.run, function()
      local w = lxmpp.on_signal("usr1", function() error("handler broke") end)
      core.kill(core.getpid(), "usr1")
      assert.is_true(serve.until_true(function() return reported ~= nil end, 2))
      lxmpp.sleep(0.01)                  -- the loop still runs
      w:stop()
    end)
    lxmpp.task.on_error(nil)
    assert.is_true(ok, tostring(err))
    assert.matches("handler broke", reported)
  end)

  it("refuses what is not a signal name or a function, clearly", function()
    assert.has_error(function() lxmpp.on_signal("bogus", function() end) end,
      'lxmpp.on_signal: unknown signal "bogus"')
    assert.has_error(function() lxmpp.on_signal("kill", function() end) end,
      'lxmpp.on_signal: unknown signal "kill"')
    assert.has_error(function() lxmpp.on_signal("int") end, "lxmpp.on_signal: expected a function")
    assert.has_error(function() lxmpp.default_signals({ "nope" }) end,
      'lxmpp.default_signals: unknown signal "nope"')
    assert.has_error(function() lxmpp.shutdown("soon") end,
      "lxmpp.shutdown: timeout must be a number of seconds")
    local r, msg, cond = core.kill(2 ^ 22 + 12345, "usr1")
    assert.is_nil(r)
    assert.matches("kill", msg)
    assert.equal("item-not-found", cond)
  end)
end)

describe("who owns SIGINT and SIGTERM", function()
  after_each(function()
    kill_started()
    clean()
  end)

  it("lxmpp.step takes none; lxmpp.run takes them while it runs, then gives them back", function()
    local before = core.signal_disposition("term")
    lxmpp.spawn(function() lxmpp.sleep(0.02) end)
    local during_step = {}
    while lxmpp.step(0.005) do during_step[core.signal_disposition("term")] = true end
    assert.same({ [before] = true }, during_step)
    local during_run
    lxmpp.run(function() during_run = core.signal_disposition("term") end)
    assert.equal("handler", during_run)
    assert.equal(before, core.signal_disposition("term"))
    -- a program that wants its own handling turns the defaults off
    local prev = lxmpp.default_signals(false)
    lxmpp.run(function() during_run = core.signal_disposition("term") end)
    assert.same({}, lxmpp.default_signals(prev))
    assert.same({ "int", "term" }, prev)
    assert.equal(before, during_run)
  end)

  it("puts Lua's own Ctrl-C handler back when run returns", function()
    local path = script([[
      local lxmpp = require "lxmpp"
      lxmpp.run(function() end)
      io.write("ready\n") io.flush()
      local t = os.clock() while os.clock() - t < 20 do end
    ]])
    local p = start_lua({ path })
    lxmpp.run(function()
      assert(p:wait_output("ready"), "the script did not start")
      p:signal("INT")
      local r = ended(p, 10)
      assert.equal(1, r.code)
      assert.matches("interrupted!", r.err)   -- lua5.4's handler, as without lxmpp
    end)
    os.remove(path)
  end)

  it("a second SIGINT ends the process at once, even when Lua is stuck", function()
    local path = script([[
      local lxmpp = require "lxmpp"
      lxmpp.run(function()
        io.write("ready\n") io.flush()
        local t = os.clock() while os.clock() - t < 20 do end
        io.write("not interrupted\n")
      end)
    ]])
    local p = start_lua({ path })
    lxmpp.run(function()
      assert(p:wait_output("ready"), "the script did not start")
      p:signal("INT")
      lxmpp.sleep(0.3)
      assert.equal("", pki.read_file(p.dir .. "/rc"), "the first SIGINT already ended it")
      p:signal("INT")
      local r, took = ended(p, 5)
      assert.equal(130, r.code)               -- killed by SIGINT, as sh reports it
      assert.is_true(took < 2)
      assert.equal("ready\n", r.out)
    end)
    os.remove(path)
  end)
end)

describe("a shutdown a peer holds up", function()
  after_each(function()
    kill_started()
    clean()
  end)

  -- A program whose client is online with a server (here, the scripted
  -- spec/support/smserver.lua) that never answers its </stream:stream>:
  -- its shutdown waits for that, which never comes. (A client still
  -- negotiating is not waited for: its connect is cut short at once, see
  -- "lxmpp.shutdown during a connect" below.)
  local function start_stuck_client(fn)
    local smserver = require "spec.support.smserver"
    lxmpp.run(function()
      local srv = smserver.start({ no_close_reply = true })
      local path = script(([[
        local lxmpp = require "lxmpp"
        lxmpp.run(function()
          assert(lxmpp.connect({ jid = "example.test/r", mechanism = "ANONYMOUS", tls = "none",
            host = "127.0.0.1", port = %d, logger = function() end }))
          io.write("online\n") io.flush()
          lxmpp.sleep(3600)
        end)
        io.write("run returned\n")
      ]]):format(srv.port))
      local p = start_lua({ path })
      assert(p:wait_output("online"), "the client did not come online")
      fn(p, function() return #srv:grep("^1 close$") == 1 end)
      srv:close()
      os.remove(path)
    end)
  end

  it("is cut after its time, and the program still ends with status 0", function()
    start_stuck_client(function(p, closed_its_stream)
      p:signal("INT")
      local r, took = ended(p, 15)
      assert.equal(0, r.code, r.err)
      assert.equal("online\nrun returned\n", r.out)
      assert.is_true(took > 4 and took < 8, "took " .. took .. " s")
      assert.is_true(closed_its_stream(), "the client did not close its stream")
    end)
  end)

  it("ends at once on a SIGTERM that comes meanwhile", function()
    start_stuck_client(function(p)
      p:signal("INT")
      lxmpp.sleep(0.5)
      assert.equal("", pki.read_file(p.dir .. "/rc"), "the shutdown did not wait for the peer")
      p:signal("TERM")
      local r, took = ended(p, 5)
      assert.equal(143, r.code)                -- killed by SIGTERM, as sh reports it
      assert.is_true(took < 2)
      assert.equal("online\n", r.out)
    end)
  end)
end)

describe("lxmpp.shutdown during a connect", function()
  local net = require "lxmpp.net"
  local blackhole = require "spec.support.blackhole"
  local smserver = require "spec.support.smserver"
  local SLOW = require("spec.support.slow").factor

  after_each(clean)

  -- polls (in a task) until pred() holds, at most `seconds` (x SLOW)
  local wait_for = smserver.wait_for

  -- The first lxmpp.connect of a client waits on a peer that never
  -- answers (prepare(), in the loop, returns the connect's options, a
  -- predicate that holds once it waits in the phase under test, one that
  -- holds once the peer saw its connection closed, and a clean-up, called
  -- in the loop with true, then outside it), when lxmpp.shutdown() comes
  -- (with a long timeout, 5 s, that must not be used). The connect must
  -- return nil, a message and "system-shutdown" at once, lxmpp.run must
  -- return at once, with no connection still closing, and nothing may be
  -- left behind: no task, no socket, no timer (after_each: clean). Before,
  -- a client was closed only once its stream was established: a connect
  -- still in its TCP connect went on after the shutdown (lxmpp.run
  -- returned without it, its task and its socket left), one negotiating
  -- had its </stream:stream> sent and waited the whole timeout for the
  -- peer's.
  local function shutdown_during(prepare)
    local res, took, shut_at, run_took, cleanup, gone, peer_gone
    local ok, err = pcall(lxmpp.run, function()
      local opts, in_phase
      opts, in_phase, gone, cleanup = prepare()
      lxmpp.spawn(function()
        -- (opts may be the connect itself: a component's)
        if type(opts) == "function" then res = compat.pack(opts()) else res = compat.pack(lxmpp.connect(opts)) end
        took = core.now() - shut_at
      end)
      assert(wait_for(in_phase, 2), "the connect did not reach the phase under test")
      shut_at = core.now()
      assert.is_true(lxmpp.shutdown(5 * SLOW))
    end)
    run_took = shut_at and core.now() - shut_at
    local closing = net.closing()
    lxmpp.run(function()
      peer_gone = wait_for(gone, 0.5)
      if cleanup then cleanup(true) end
    end)
    if cleanup then cleanup() end
    assert(ok, err)
    assert.is_truthy(res, "the connect did not return")
    assert.same({ n = 3, [3] = "system-shutdown" }, { n = res.n, [1] = res[1], [3] = res[3] })
    assert.matches("lxmpp.shutdown", res[2], 1, true)
    assert.is_true(took < 0.5 * SLOW, "the connect returned after " .. tostring(took) .. " s")
    assert.is_true(run_took < 0.5 * SLOW, "lxmpp.run returned after " .. tostring(run_took) .. " s")
    assert.equal(0, closing, "connections still closing")
    assert.is_true(peer_gone, "the attempt's connection is still open")
  end

  local function quiet(port, tls)
    return { jid = "example.test/r", mechanism = "ANONYMOUS", host = "127.0.0.1", port = port, tls = tls,
      timeout = 5 * SLOW, connect_timeout = 5 * SLOW, reconnect = { delay = 0.01 }, logger = function() end }
  end

  it("ends it at once in its TCP connect to a host that never answers", function()
    shutdown_during(function()
      local hole = blackhole.tcp()
      return quiet(hole.port, "none"), function() return hole:attempt_open() end,
        function() return hole:attempt_closed() end,
        function(in_loop) if not in_loop then hole:close() end end
    end)
  end)

  for _, phase in ipairs({ { "its TLS handshake", "direct" }, { "its stream negotiation", "none" } }) do
    it("ends it at once in " .. phase[1] .. " with a peer that never answers", function()
      shutdown_during(function()
        local silent = blackhole.silent()
        return quiet(silent.port, phase[2]), function() return silent:bytes_in() > 0 end,
          function() return silent.conns[1].eof end,
          function(in_loop) if in_loop then silent:close() end end
      end)
    end)
  end

  for _, step in ipairs({ "auth", "bind" }) do
    it("ends it at once when the server never answers its " .. step, function()
      shutdown_during(function()
        local srv = smserver.start({ stall = function(s) return s == step end })
        return srv:client_opts({ timeout = 5 * SLOW }), function() return #srv:grep("^1 " .. step) == 1 end,
          function() return next(srv.conns) == nil end,
          function(in_loop) if in_loop then srv:close() end end
      end)
    end)
  end

  it("ends a component's connect at once, its server never answering the stream header", function()
    local comp
    shutdown_during(function()
      local silent = blackhole.silent()
      comp = lxmpp.component({ jid = "gw.example.test", secret = "s3cret", host = "127.0.0.1", port = silent.port,
        timeout = 5 * SLOW, logger = function() end })
      return function() return comp:connect() end, function() return silent:bytes_in() > 0 end,
        function() return silent.conns[1].eof end,
        function(in_loop) if in_loop then silent:close() end end
    end)
    assert.is_nil(comp.connect_waiter)
  end)

  it("lets comp:close() end a component's connect at once, and connect again after it", function()
    local res, took
    local ok, err = pcall(lxmpp.run, function()
      local silent = blackhole.silent()
      local comp = lxmpp.component({ jid = "gw.example.test", secret = "s3cret", host = "127.0.0.1",
        port = silent.port, timeout = 5 * SLOW, logger = function() end })
      lxmpp.spawn(function()
        local t0 = core.now()
        res = compat.pack(comp:connect())
        took = core.now() - t0
      end)
      assert(wait_for(function() return silent:bytes_in() > 0 end, 2), "the component did not send its header")
      assert.is_true(comp:close())
      assert(wait_for(function() return res ~= nil end, 0.5), "comp:connect() did not return")
      assert(wait_for(function() return silent.conns[1].eof end, 0.5), "the attempt's connection is still open")
      -- a new connect after the close is a new attempt (a gateway's own retry loop)
      local second = #silent.conns
      lxmpp.spawn(function() comp:connect() end)
      assert(wait_for(function() return #silent.conns > second end, 2), "the component did not connect again")
      comp:close()
      silent:close()
    end)
    assert(ok, err)
    assert.same({ n = 3, [3] = "closed" }, { n = res.n, [1] = res[1], [3] = res[3] })
    assert.is_true(took < 0.5 * SLOW, "comp:connect() returned after " .. took .. " s")
  end)

  it("ends a client's reconnection at once, in the attempt's TLS handshake", function()
    local unacked, disconnected, c, shut_at, run_took, silent
    local ok, err = pcall(lxmpp.run, function()
      local srv = smserver.start()
      c = assert(lxmpp.connect(srv:client_opts({ reconnect = { delay = 0.01, max_delay = 0.01 },
        timeout = 5 * SLOW, connect_timeout = 5 * SLOW })))
      unacked, disconnected = {}, {}
      c:on("unacked", function(list) for _, s in ipairs(list) do unacked[#unacked + 1] = s:get_child_text("body") end end)
      c:on("disconnected", function(_, cond, again) disconnected[#disconnected + 1] = { cond, again } end)
      -- the next attempts go to a peer that reads the ClientHello and never answers
      silent = blackhole.silent()
      c.opts.port, c.tls_mode = silent.port, "direct"
      srv:close()
      assert(wait_for(function() return silent:bytes_in() > 0 end, 2), "the reconnection is not in its TLS handshake")
      assert.is_true(c:send_message("x@example.test", "queued"))    -- waits for the reconnection
      shut_at = core.now()
      assert.is_true(lxmpp.shutdown(5 * SLOW))
    end)
    run_took = shut_at and core.now() - shut_at
    local closing, peer_gone = net.closing(), nil
    lxmpp.run(function()
      peer_gone = wait_for(function() return silent.conns[1].eof end, 0.5)
      silent:close()
    end)
    assert(ok, err)
    assert.is_true(run_took < 0.5 * SLOW, "lxmpp.run returned after " .. tostring(run_took) .. " s")
    assert.equal(0, closing)
    assert.is_true(peer_gone, "the attempt's connection is still open")
    assert.is_false(c.reconnecting)
    assert.same({ "queued" }, unacked)
    assert.same({ { "closed", true } }, disconnected)
  end)

  it("refuses a connect started while it is under way, and allows one after it", function()
    local res, took, attempts
    lxmpp.run(function()
      -- a client whose server never answers its </stream:stream> keeps the
      -- shutdown going for its timeout (1 s)
      local srv = smserver.start({ no_close_reply = true })
      assert(lxmpp.connect(srv:client_opts()))
      assert.is_true(lxmpp.shutdown(1 * SLOW))
      assert.is_false(lxmpp.shutdown())
      assert(wait_for(function() return #srv:grep("^1 close$") == 1 end, 1), "the shutdown did not close the client")
      local t0 = core.now()
      res = compat.pack(lxmpp.connect(srv:client_opts()))
      took = core.now() - t0
      attempts = #srv.attempts
      srv:close()
    end)
    assert.same({ n = 3, [3] = "system-shutdown" }, { n = res.n, [1] = res[1], [3] = res[3] })
    assert.matches("lxmpp.shutdown() is under way", res[2], 1, true)
    assert.is_true(took < 0.1 * SLOW, "the refusal took " .. took .. " s")
    assert.equal(1, attempts, "the refused connect reached the server")
    -- the shutdown over, a new run connects again
    lxmpp.run(function()
      local srv = smserver.start()
      local c = assert(lxmpp.connect(srv:client_opts()))
      assert.is_true(c:close())
      srv:close()
    end)
  end)
end)

describe("bin/lxmpp serve", function()
  after_each(function()
    kill_started()
    clean()
  end)

  local function start_serve(extra)
    local args = { ROOT .. "/bin/lxmpp", "serve", "--listen", "127.0.0.1:0", "--user", "alice:pw" }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    local p = start_lua(args)
    local port, out = p:wait_output("listening: c2s 127%.0%.0%.1:(%d+)")
    assert(port, "serve did not start:\n" .. tostring(out))
    assert(p:wait_output("ready"))
    return p, compat.tointeger(tonumber(port))
  end

  for _, sig in ipairs({ "INT", "TERM" }) do
    it("stops at once when idle on SIG" .. sig .. ", with status 0 and no traceback", function()
      lxmpp.run(function()
        local p = start_serve()
        p:signal(sig)
        local r, took = ended(p, 5)
        assert.equal(0, r.code, r.err)
        assert.is_true(took < 2, "took " .. took .. " s")
        no_traceback(r)
        assert.matches("ready %(Ctrl%-C stops%)\nstopped\n$", r.out)
      end)
    end)

    it("on SIG" .. sig .. " sends <system-shutdown/> then </stream:stream> to every stream, raw or logged in", function()
      lxmpp.run(function()
        local p, port = start_serve()
        local c = raw.connect(port)
        c:send(raw.header("localhost"))
        local f = assert(c:stanza())
        assert.equal("features", f.name)
        -- and a logged-in client over TLS (serve's certificate is self-signed)
        local alice = assert(lxmpp.connect({ jid = "alice@localhost/a", password = "pw",
          host = "127.0.0.1", port = port, insecure = true, reconnect = false }))
        local gone = lxmpp.task.waiter()
        alice:on("disconnected", function(msg, cond) gone:wake(cond, msg) end)
        p:signal(sig)
        local cond = c:stream_error(3)
        assert.equal("system-shutdown", cond)
        local ev = c:next(3)
        assert.is_true(ev and ev.close, "no </stream:stream> after the stream error")
        assert.is_true(c:wait_closed(3))
        -- our side closes too (RFC 6120 §4.4): the server waits, a bounded
        -- time, for that before it closes its socket (a lingering close)
        c.conn:shutdown()
        local t = core.timer(3, gone)
        assert.equal("system-shutdown", (gone:wait()))
        t:stop()
        local r, took = ended(p, 5)
        assert.equal(0, r.code, r.err)
        assert.is_true(took < 2)
        no_traceback(r)
        c:close()
      end)
    end)
  end

  it("closes its storage on SIGINT (the SQLite write-ahead log is folded back)", function()
    local db = os.tmpname()
    os.remove(db)
    lxmpp.run(function()
      local p = start_serve({ "--storage", db })
      assert.truthy(io.open(db .. "-wal", "rb"), "the store has no WAL open")
      p:signal("INT")
      local r = ended(p, 5)
      assert.equal(0, r.code, r.err)
      assert.is_nil(io.open(db .. "-wal", "rb"), "the store was not closed")
      -- and the account it made is there for the next start
      local p2 = start_serve({ "--storage", db })
      p2:signal("INT")
      assert.equal(0, ended(p2, 5).code)
    end)
    for _, f in ipairs({ db, db .. "-wal", db .. "-shm" }) do os.remove(f) end
  end)
end)

describe("the example bots on Ctrl-C", function()
  after_each(function()
    kill_started()
    clean()
  end)

  -- game_loop pumps the loop itself (lxmpp.step) and asks for Ctrl-C
  for _, example in ipairs({ "echo", "dictbot", "game_loop" }) do
    it(example .. ".lua exits promptly and closes its stream cleanly", function()
      serve.run_logged({ users = { bot = "bot-pw" } }, function(srv, port, log)
        local p = start_lua({ ROOT .. "/examples/" .. example .. ".lua" }, {
          "LXMPP_JID=bot@" .. serve.DOMAIN .. "/b", "LXMPP_PASSWORD=bot-pw", "LXMPP_HOST=127.0.0.1",
          "LXMPP_PORT=" .. port, "LXMPP_CAFILE=" .. pki.get().ca, "LXMPP_FRAMES=36000",
        })
        assert(p:wait_output("online as"), "the bot did not come online")
        assert.is_true(serve.until_true(function()
          return srv.sessions["bot@" .. serve.DOMAIN] ~= nil
        end, 5))
        p:signal("INT")
        local r, took = ended(p, 5)
        assert.equal(0, r.code, r.err)
        assert.is_true(took < 2, "took " .. took .. " s")
        no_traceback(r)
        assert.is_true(serve.until_true(function()
          return serve.logged(log, "left: stream closed by the peer") ~= nil
        end, 2), "the server did not see the stream closed")
        assert.is_nil(serve.logged(log, "hibernates"))
        if example == "game_loop" then assert.matches("Ctrl%-C: stopping the game", r.out) end
      end)
    end)
  end
end)
