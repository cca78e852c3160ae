-- lxmpp.run/spawn/sleep/step/stop: the coroutine runtime on libuv.
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"

local assert_clean = require "spec.support.clean"

describe("tasks", function()
  after_each(assert_clean)

  it("run drives the main task and returns its completion", function()
    local done = false
    lxmpp.run(function() done = true end)
    assert.is_true(done)
  end)

  it("task.running names the running task, and nil where there is none", function()
    local task = require "lxmpp.task"
    assert.is_nil(task.running())
    local seen = {}
    local t = core.timer(0, { wake = function() seen.event = task.running() or false end })
    lxmpp.run(function()
      seen.main = task.running()
      seen.current = task.current()
      seen.inner = coroutine.wrap(function() return task.running() or false end)()
      lxmpp.sleep(0.01)
    end)
    t:stop()
    assert.is_not_nil(seen.main)
    assert.equal(seen.current, seen.main)
    assert.is_false(seen.inner)     -- a plain coroutine inside a task is not the task
    assert.is_false(seen.event)     -- a C event's handler runs outside every task
    assert.is_nil(task.running())
  end)

  it("passes arguments to run and spawn", function()
    local got = {}
    lxmpp.run(function(a, b)
      got[1], got[2] = a, b
      lxmpp.spawn(function(c) got[3] = c end, "z")
    end, "x", "y")
    assert.same({ "x", "y", "z" }, got)
  end)

  it("runs spawned tasks in order, after the spawner waits", function()
    local log = {}
    lxmpp.run(function()
      log[#log + 1] = "main"
      lxmpp.spawn(function() log[#log + 1] = "a" end)
      lxmpp.spawn(function() log[#log + 1] = "b" end)
      log[#log + 1] = "main again"
      lxmpp.task.yield()
      log[#log + 1] = "main last"
    end)
    assert.same({ "main", "main again", "a", "b", "main last" }, log)
  end)

  it("a task that keeps yielding does not starve timers and I/O", function()
    local fired, spins = false, 0
    lxmpp.run(function()
      lxmpp.spawn(function() lxmpp.sleep(0.02) fired = true end)
      while not fired and spins < 1e7 do
        spins = spins + 1
        lxmpp.task.yield()
      end
    end)
    assert.is_true(fired)
  end)

  it("wakes sleepers in order of their deadlines", function()
    local log = {}
    lxmpp.run(function()
      for _, d in ipairs({ 0.06, 0.02, 0.04 }) do
        lxmpp.spawn(function() lxmpp.sleep(d) log[#log + 1] = d end)
      end
    end)
    assert.same({ 0.02, 0.04, 0.06 }, log)
  end)

  it("sleeps about as long as asked (within a tolerance)", function()
    local elapsed
    lxmpp.run(function()
      local t0 = core.now()
      lxmpp.sleep(0.1)
      elapsed = core.now() - t0
    end)
    assert.is_true(elapsed >= 0.095, "woke early: " .. elapsed)
    assert.is_true(elapsed < 0.5, "woke late: " .. elapsed)
  end)

  it("run waits for every spawned task, not just the main one", function()
    local finished = false
    lxmpp.run(function()
      lxmpp.spawn(function() lxmpp.sleep(0.03) finished = true end)
    end)
    assert.is_true(finished)
  end)

  it("re-raises the main task's error with its traceback", function()
    local ok, err = pcall(lxmpp.run, function()
      lxmpp.sleep(0.001)
      local function inner() error("boom in main") end
      inner()
    end)
    assert.is_false(ok)
    assert.matches("boom in main", err)
    assert.matches("stack traceback", err)
    assert.matches("inner", err)
  end)

  it("reports an error in another task with its traceback and keeps running", function()
    local reported, after
    lxmpp.task.on_error(function(_, msg) reported = msg end)
    lxmpp.run(function()
      lxmpp.spawn(function() error("child failed") end)
      lxmpp.sleep(0.01)
      after = true
    end)
    lxmpp.task.on_error(nil)
    assert.matches("child failed", reported)
    assert.matches("stack traceback", reported)
    assert.is_true(after)
  end)

  it("refuses waiting calls outside a task with a clear error at the caller", function()
    local ok, err = pcall(lxmpp.sleep, 0.01)
    assert.is_false(ok)
    assert.matches("must be called from an lxmpp task", err)
    local ok2, err2 = pcall(function() lxmpp.sleep(1) end)
    assert.is_false(ok2)
    assert.matches("task_spec.lua", err2)
  end)

  it("refuses waiting calls from a foreign coroutine inside a task", function()
    local err
    lxmpp.run(function()
      local co = coroutine.create(function() lxmpp.sleep(0.01) end)
      local _, e = coroutine.resume(co)
      err = e
    end)
    assert.matches("must be called from an lxmpp task", err)
  end)

  it("refuses run inside a task and bad arguments", function()
    local err
    lxmpp.run(function()
      local _, e = pcall(lxmpp.run, function() end)
      err = e
    end)
    assert.matches("inside a task", err)
    assert.has_error(function() lxmpp.run(42) end)
    assert.has_error(function() lxmpp.spawn("x") end)
    lxmpp.run(function() assert.has_error(function() lxmpp.sleep("1") end) end)
  end)

  it("stop() makes run return with tasks still waiting", function()
    local reached = false
    lxmpp.run(function()
      lxmpp.spawn(function() lxmpp.sleep(0.02) lxmpp.stop() end)
      lxmpp.sleep(30)
      reached = true
    end)
    assert.is_false(reached)
    -- what stop() left behind: the sleeping main task and its timer
    assert.equal(1, lxmpp.task.count())
    lxmpp.task.cancel_all()
    lxmpp.step(0)     -- lets the stopped timer's close complete
  end)

  describe("step", function()
    it("with a zero timeout never blocks", function()
      lxmpp.spawn(function() lxmpp.sleep(0.2) end)
      local t0 = core.now()
      for _ = 1, 100 do lxmpp.step(0) end
      assert.is_true(core.now() - t0 < 0.1, "step(0) blocked")
      while lxmpp.step(0.05) do end
    end)

    it("waits at most its timeout", function()
      lxmpp.spawn(function() lxmpp.sleep(1) end)
      local t0 = core.now()
      assert.is_true(lxmpp.step(0.05))
      local dt = core.now() - t0
      assert.is_true(dt < 0.5, "step blocked for " .. dt)
      while lxmpp.step(0.5) do end
    end)

    it("drives tasks from a host loop at a frame rate and reports when idle", function()
      local ticks = 0
      lxmpp.spawn(function()
        for _ = 1, 5 do lxmpp.sleep(0.01) ticks = ticks + 1 end
      end)
      local frames = 0
      while lxmpp.step(1 / 60) do frames = frames + 1 end
      assert.equal(5, ticks)
      assert.is_true(frames >= 3)
      assert.is_false(lxmpp.step(0))
    end)

    it("refuses to be called from inside a task", function()
      lxmpp.run(function() assert.has_error(function() lxmpp.step(0) end) end)
    end)
  end)

  describe("timers", function()
    it("a stopped timer never fires and stop is safe twice", function()
      local fired = false
      lxmpp.task.handle("spec-timer", function() fired = true end)
      lxmpp.run(function()
        local t = core.timer(0.01, "x")
        t:stop()
        t:stop()
        assert.is_false(t:active())
        lxmpp.sleep(0.03)
      end)
      assert.is_false(fired)
    end)
  end)
end)
