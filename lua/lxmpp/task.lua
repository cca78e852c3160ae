-- lxmpp.task: the coroutine runtime. Every piece of user code runs as a task
-- (a coroutine); waiting calls (sleep, connect, request, ...) yield the
-- running task and the event that ends the wait resumes it. Events come from
-- C through a single dispatcher (csrc/loop.c); ready tasks are resumed here,
-- in Lua, never from inside a libuv callback, so C never yields.

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local fifo = require "lxmpp.fifo"

local coroutine, debug, error, type, tostring, io, setmetatable, pcall, pairs, ipairs =
  coroutine, debug, error, type, tostring, io, setmetatable, compat.pcall, pairs, ipairs
local co_create, co_resume, co_running, co_status, co_yield =
  coroutine.create, coroutine.resume, compat.co_running, coroutine.status, coroutine.yield
local pack, unpack = compat.pack, compat.unpack

local M = {}

local live = setmetatable({}, { __mode = "k" }) -- task -> true while not finished
local nlive = 0
local ready = fifo.new()                  -- ready tasks: { task, args }
local current = nil                       -- the task running now
local waiting = setmetatable({}, { __mode = "k" }) -- task -> its waiter
-- task -> the waiter that woke it, until the task runs again: a task
-- cancelled in between still has that waiter's cancel run, which releases
-- what the outcome brought (a connection just made, a timer)
local woken = setmetatable({}, { __mode = "k" })
local stopped = false
local main_task, main_error

-- What happens to an error raised in a task other than run's main task.
local function default_error_handler(task, err)
  io.stderr:write("lxmpp: error in task ", tostring(task), ": ", tostring(err), "\n")
end
local error_handler = default_error_handler

--- lxmpp.task.on_error(fn): fn(task, message_with_traceback) replaces the
-- default report to stderr for errors in tasks other than run's main task.
function M.on_error(fn)
  if fn ~= nil and type(fn) ~= "function" then error("on_error: expected a function", 2) end
  error_handler = fn or default_error_handler
end

local function schedule(task, ...)
  ready:push({ task, pack(...) })
end

local function finish(task, ok, err)
  live[task] = nil
  nlive = nlive - 1
  if not ok then
    local msg = debug.traceback(task, tostring(err))
    if task == main_task then
      main_error = msg
    else
      local hok, herr = pcall(error_handler, task, msg)
      if not hok then io.stderr:write("lxmpp: error handler failed: ", tostring(herr), "\n") end
    end
  end
end

local function resume(task, args)
  woken[task] = nil
  if not live[task] then return end        -- cancelled while it was queued
  local prev = current
  current = task
  local ok, err = co_resume(task, unpack(args, 1, args.n))
  current = prev
  if co_status(task) == "dead" then finish(task, ok, err) end
end

-- Runs the tasks that are ready now. Tasks they make ready (a yield()
-- included) wait for the next round, after the loop has polled for I/O:
-- a task that keeps yielding cannot starve the network.
local function run_ready()
  for _ = 1, ready.n do                   -- (ready.n as it is now)
    local item = ready:pop()
    resume(item[1], item[2])
    if stopped then break end
  end
end

--- lxmpp.spawn(fn, ...) -> task: start fn(...) as a new task (it first runs
-- when the current task waits or ends, or at the next step of the loop).
function M.spawn(fn, ...)
  if type(fn) ~= "function" then error("lxmpp.spawn: expected a function, got " .. type(fn), 2) end
  local task = co_create(fn)
  live[task] = true
  nlive = nlive + 1
  schedule(task, ...)
  return task
end

--- The running task, or an error naming `what` when called outside one.
-- depth: how many lxmpp functions stand between the user's call and this
-- one, so the error points at the user's line.
function M.current(what, depth)
  local co = co_running()
  if current == nil or co ~= current then
    error((what or "this function") .. " must be called from an lxmpp task " ..
      "(inside lxmpp.run or lxmpp.spawn)", (depth or 0) + 2)
  end
  return current
end

-- A waiter is how C events and other tasks end a task's wait: exactly one
-- wake() counts; later ones (a reply after its timeout) are ignored.
local Waiter = {}
Waiter.__index = Waiter

--- lxmpp.task.waiter(what) -> w : w:wait() yields the current task until
-- w:wake(...) and returns wake's arguments.
function M.waiter(what, depth)
  return setmetatable({ task = M.current(what, (depth or 0) + 1), done = false }, Waiter)
end

function Waiter:wake(...)
  if self.done then return false end
  self.done = true
  if waiting[self.task] == self then
    waiting[self.task] = nil
    woken[self.task] = self
    schedule(self.task, ...)
  else
    self.early = pack(...)      -- woken before it started waiting
  end
  return true
end

function Waiter:wait()
  if co_running() ~= self.task then error("a waiter belongs to the task that made it", 2) end
  if self.early then
    local e = self.early
    self.early = nil
    return unpack(e, 1, e.n)
  end
  waiting[self.task] = self
  return co_yield()
end

--- lxmpp.sleep(seconds): yield the current task for that long.
function M.sleep(seconds)
  if type(seconds) ~= "number" then error("lxmpp.sleep: expected a number of seconds", 2) end
  local w = M.waiter("lxmpp.sleep", 1)
  local t = core.timer(seconds, w)
  w.cancel = function() t:stop() end
  w:wait()
end

--- lxmpp.task.cancel(task): end a task that is waiting or ready: its wait is
-- cancelled (timers stopped), its to-be-closed variables are closed.
function M.cancel(task)
  if not live[task] or task == current then return false end
  -- the wait under way, or the one whose outcome the task has not seen
  local w = waiting[task] or woken[task]
  if w then
    waiting[task], woken[task] = nil, nil
    w.done = true
    if w.cancel then w.cancel() end
  end
  compat.coroutine_close(task)
  finish(task, true)
  return true
end

--- lxmpp.task.cancel_all(): cancel every task (for shutdown and specs).
function M.cancel_all()
  local all = {}
  for t in pairs(live) do all[#all + 1] = t end
  for _, t in ipairs(all) do M.cancel(t) end
end

--- lxmpp.task.yield(): let the other ready tasks run, then continue.
function M.yield()
  schedule(M.current("lxmpp.task.yield", 1))
  return co_yield()
end

-- C events: dispatch(kind, target, ...). Modules register their kinds here.
local handlers = {}
function handlers.timer(w) w:wake() end

--- lxmpp.task.handle(kind, fn): route C events of that kind to fn(target, ...).
function M.handle(kind, fn) handlers[kind] = fn end

core.set_dispatcher(function(kind, target, ...)
  local h = handlers[kind]
  if h then return h(target, ...) end
end)

local function pending()
  return ready.n > 0
end

--- lxmpp.step(timeout) -> more: run what is ready, waiting at most timeout
-- seconds for an event (0: never block). True while anything is pending.
function M.step(timeout)
  if current then error("lxmpp.step: called from inside a task", 2) end
  if timeout ~= nil and type(timeout) ~= "number" then error("lxmpp.step: timeout must be a number", 2) end
  stopped = false
  run_ready()
  core.loop_step(pending() and 0 or (timeout or 0))
  run_ready()
  return pending() or nlive > 0 or core.loop_alive()
end

local function run_loop(fn, ...)
  main_task = M.spawn(fn, ...)
  while not stopped and not main_error do
    run_ready()
    if stopped or main_error then break end
    local alive = core.loop_alive()
    if not pending() and not alive then break end  -- nothing can happen any more
    core.loop_run(pending() and "nowait" or "once")
  end
end

--- lxmpp.run(fn, ...): run fn(...) as the main task and drive the loop until
-- every task and connection is done or lxmpp.stop() is called. An error in fn
-- is raised again here with its traceback.
function M.run(fn, ...)
  if current then error("lxmpp.run: called from inside a task (use lxmpp.spawn)", 2) end
  if type(fn) ~= "function" then error("lxmpp.run: expected a function, got " .. type(fn), 2) end
  stopped = false
  main_error = nil
  -- Ctrl-C and SIGTERM end the run cleanly while it lasts (lxmpp.signal,
  -- loaded here: it builds on this module)
  -- (closed on every way out, as a to-be-closed variable would be: Lua 5.1
  -- and 5.3 have none)
  local signals = require("lxmpp.signal").run_guard()
  local ok, err = pcall(run_loop, fn, ...)
  if signals then signals:close() end
  if not ok then error(err, 0) end
  main_task = nil
  if main_error then
    local e = main_error
    main_error = nil
    error(e, 0)
  end
end

--- lxmpp.stop(): make run() return (and step() report nothing pending now).
function M.stop()
  stopped = true
  core.loop_stop()
end

--- Tasks not finished yet (specs check that none is left behind).
function M.count() return nlive end

--- Is x a task that has not finished?
function M.alive(x) return live[x] == true end

--- The running task, or nil outside one: M.current without the error,
-- for code that waits only when it can (conn:close, lxmpp.net).
function M.running()
  if current ~= nil and co_running() == current then return current end
  return nil
end

return M
