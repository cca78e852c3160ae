-- lxmpp.signal: POSIX signals as loop events, and the clean shutdown that
-- lxmpp.run does on Ctrl-C (SIGINT) and SIGTERM.
--
-- Signals are watched by libuv signal handles (csrc/signal.c): the signal
-- handler only wakes the loop, and handlers run as tasks from the loop,
-- never in the signal context. Watchers do not keep the loop alive.
--
-- Who handles what (docs/api.md, "Signals"):
--   * lxmpp.on_signal(name, fn): the program's own handler; while one is
--     registered for a signal, lxmpp's default for it stands aside.
--   * lxmpp.run watches the default signals (INT and TERM; see
--     default_signals) for its duration: the first one starts
--     lxmpp.shutdown(); it is watched "oneshot", so a second one ends the
--     process at once by the default action, even if Lua is stuck.
--   * lxmpp.step (a host with its own main loop) watches nothing by itself:
--     a host's own handlers are never replaced unless it asks (on_signal).

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local task = require "lxmpp.task"
local net = require "lxmpp.net"

local setmetatable, type, error, pairs, ipairs, pcall, tostring, next =
  setmetatable, type, error, pairs, ipairs, compat.pcall, tostring, next

local M = {}

-- What a shutdown ends: client and component sessions (session.lua tracks
-- them when made) and started servers (server/init.lua). Weak: an object
-- nobody can reach any more has nothing left to close.
local sessions = setmetatable({}, { __mode = "k" })
local servers = setmetatable({}, { __mode = "k" })

function M.track_session(s) sessions[s] = true end
function M.track_server(srv, on) servers[srv] = on and true or nil end

---------------------------------------------------------------------------
-- the program's own handlers

local users = {}              -- canonical name -> number of open user watchers

local Watcher = {}
Watcher.__index = Watcher

function Watcher:deliver(name) task.spawn(self.fn, name) end

--- w:stop(): the handler no longer runs; safe twice (also its __close).
function Watcher:stop()
  local h = self.h
  if not h then return end
  self.h = nil
  users[self.name] = users[self.name] - 1
  h:close()
end
Watcher.__close = Watcher.stop

--- lxmpp.on_signal(name, fn) -> watcher: fn(name) runs as a task each time
-- the signal arrives ("int", "SIGINT", "term", "hup", "usr1", ...).
function M.on(name, fn)
  if type(name) ~= "string" then error("lxmpp.on_signal: name must be a string like \"int\"", 2) end
  if type(fn) ~= "function" then error("lxmpp.on_signal: expected a function", 2) end
  local canon = core.signal_name(name)
  if not canon then error(("lxmpp.on_signal: unknown signal %q"):format(name), 2) end
  local w = setmetatable({ name = canon, fn = fn }, Watcher)
  local h, msg = core.signal(canon, w)
  if not h then error("lxmpp.on_signal: " .. tostring(msg), 2) end
  w.h = h
  users[canon] = (users[canon] or 0) + 1
  return w
end

task.handle("signal", function(target, name) return target:deliver(name) end)

---------------------------------------------------------------------------
-- shutdown

local shutting_down = false

-- Waits (in a task) until pred() holds, at most until deadline.
local function wait_until(pred, deadline)
  while not pred() and core.now() < deadline do task.sleep(0.01) end
  return pred()
end

local function run_shutdown(timeout)
  local deadline = core.now() + timeout
  -- clients and components: each ends its stream (</stream:stream>) and
  -- waits for the server's, all at once
  local left = 0
  for s in pairs(sessions) do
    -- (connect_waiter: its first lxmpp.connect is under way, in any phase;
    -- reconnecting: the same for a reconnection; reconnect.lua's close()
    -- cuts either short)
    if (s.conn and not s.conn.closed) or s.reconnecting or s.connect_waiter then
      left = left + 1
      task.spawn(function()
        pcall(s.close, s, timeout)
        left = left - 1
      end)
    end
  end
  wait_until(function() return left == 0 end, deadline)
  -- servers: <system-shutdown/> to every stream, listeners closed, storage closed
  for srv in pairs(servers) do
    local ok, err = pcall(srv.stop, srv)
    if not ok then io.stderr:write("lxmpp: stopping a server failed: ", tostring(err), "\n") end
  end
  -- what is still flushing its last bytes gets until the deadline
  if not wait_until(function() return net.closing() == 0 end, deadline) then net.abort_closing() end
  shutting_down = false
  task.stop()
end

--- Whether lxmpp.shutdown() is under way (lxmpp.connect refuses to start
-- a connection then: session.lua I.connect).
function M.shutting_down() return shutting_down end

--- lxmpp.shutdown([timeout]): ends every client and component stream
-- cleanly, stops every server (system-shutdown), then makes lxmpp.run
-- return; at most timeout seconds (default 5) before what is left is cut.
-- Returns false when a shutdown is already under way.
function M.shutdown(timeout)
  if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0) then
    error("lxmpp.shutdown: timeout must be a number of seconds", 2)
  end
  if shutting_down then return false end
  shutting_down = true
  task.spawn(run_shutdown, timeout or 5)
  return true
end

---------------------------------------------------------------------------
-- lxmpp.run's defaults

local defaults = { "int", "term" }
local received = nil          -- the signal that started a default shutdown

--- lxmpp.default_signals([list]) -> previous list: the signals lxmpp.run
-- answers with a clean shutdown (default { "int", "term" }; {} or false:
-- none).
function M.default_signals(list)
  local prev = {}
  for i, n in ipairs(defaults) do prev[i] = n end
  if list == nil then return prev end
  if list == false then list = {} end
  if type(list) ~= "table" then error("lxmpp.default_signals: expected a list of signal names", 2) end
  local new = {}
  for i, n in ipairs(list) do
    local canon = type(n) == "string" and core.signal_name(n)
    if not canon then error(("lxmpp.default_signals: unknown signal %q"):format(tostring(n)), 2) end
    new[i] = canon
  end
  defaults = new
  return prev
end

local Default = {}
Default.__index = Default

function Default:deliver(name)
  if (users[name] or 0) > 0 then return end   -- the program handles it
  if received then
    -- another signal while shutting down: the program must end now. The
    -- watcher was oneshot, so the default action is back: raise it again.
    self.fired[name] = true
    core.kill(core.getpid(), name)
    return
  end
  received = name
  self.fired[name] = true
  M.shutdown()
end

--- Called by lxmpp.run: watches the default signals until the returned
-- value is closed (its close(), or as a to-be-closed variable). Once a default
-- shutdown happened, no later run watches them again: the signal keeps
-- its default action and the next one ends the process.
function M.run_guard()
  if received then return nil end
  local g = setmetatable({ handles = {}, fired = {} }, Default)
  for _, name in ipairs(defaults) do
    if (users[name] or 0) == 0 then
      local h = core.signal(name, g, true)
      if h then g.handles[name] = h end
    end
  end
  if next(g.handles) == nil then return nil end
  local function close()
    for name, h in pairs(g.handles) do h:close(not g.fired[name]) end
  end
  return setmetatable({ close = close }, { __close = close })
end

return M
