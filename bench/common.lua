-- Helpers the benchmarks share: quoting for the shell, reading one line of a
-- command's output, and describing the machine in the report. Like the
-- benchmarks, it runs on Lua 5.4 and on LuaJIT (README.md, "Lua versions").
local io, string, tostring, tonumber, math = io, string, tostring, tonumber, math

local M = {}

-- math.tointeger, or before 5.3 (no integer subtype) a whole number within 2^53
local tointeger = math.tointeger or function(n)
  if n == math.floor(n) and n >= -2 ^ 53 and n <= 2 ^ 53 then return n end
end

--- The integer a string holds ("20000"), or nil: on every Lua the benchmarks
-- run on (math.tointeger(tonumber(s)) on 5.3 and 5.4)
function M.integer(s)
  local n = tonumber(s)
  return n and tointeger(n) or nil
end

--- Did the shell command succeed (exit status 0)? os.execute gives true on
-- 5.2+ and the raw status, 0 for success, on LuaJIT and 5.1.
function M.execute(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end

--- Is x a number with a fraction (what 5.3+ would call a float worth its
-- decimals)? For printing results the same way on every Lua.
function M.has_fraction(x)
  return type(x) == "number" and x ~= math.floor(x)
end

--- A die(fmt, ...) for script `name`: prints to stderr and exits 1, closing
-- the Lua state (so temporary directories of spec supports are removed).
function M.dier(name)
  return function(fmt, ...)
    io.stderr:write(name, ": ", string.format(fmt, ...), "\n")
    os.exit(1, true)
  end
end

--- A watch for a benchmark's main task, which blocks while handlers do the
-- work: handlers call w.kick() when something the main task may wait for
-- happened and w.fail(msg) when something went wrong (the first failure is
-- kept). w.wait_until(pred, what [, progress [, max_wait]]) blocks the main
-- task until pred() holds; it calls raise(message) on a failure, or when
-- progress() (default: never moves) did not change for `timeout` seconds.
-- Between kicks it looks again every max_wait seconds (default 1).
function M.watch(timeout, raise)
  local core, task = require "lxmpp.core", require("lxmpp").task
  local w = { failure = nil }
  local blocked            -- the waiter the main task is blocked on, if any
  function w.kick()
    local b = blocked
    if b then blocked = nil; b:wake(true) end
  end
  function w.fail(msg)
    w.failure = w.failure or msg
    w.kick()
  end
  function w.wait_until(pred, what, progress, max_wait)
    progress = progress or function() return 0 end
    local last, moved_at = progress(), core.now()
    while not pred() do
      if w.failure then raise(w.failure) end
      local p = progress()
      if p ~= last then last, moved_at = p, core.now() end
      if core.now() - moved_at > timeout then
        raise(("%s: nothing happened for %d s"):format(what, timeout))
      end
      local b = task.waiter(what)
      blocked = b
      local t = core.timer(max_wait or 1, b)
      b:wait()
      t:stop()
      blocked = nil
    end
    if w.failure then raise(w.failure) end
  end
  return w
end

function M.quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

function M.first_line(cmd)
  local f = io.popen(cmd .. " 2>/dev/null")
  if not f then return nil end
  local l = f:read("*l")
  f:close()
  return l
end

--- "Lua 5.4.4" or "LuaJIT 2.1.0-beta3" of the interpreter running the benchmark
function M.lua_version(lua_cmd)
  local v = M.first_line(M.quote(lua_cmd or arg[-1] or "lua5.4") .. " -v") or _VERSION
  return v:match("^(Lua %S+)") or v:match("^(LuaJIT %S+)") or v
end

--- the CPU model (nil if unknown) and the number of processors, from /proc/cpuinfo
function M.cpu()
  local model, n = nil, 0
  local f = io.open("/proc/cpuinfo")
  if f then
    for line in f:lines() do
      model = model or line:match("^model name%s*:%s*(.-)%s*$")
      if line:match("^processor%s*:") then n = n + 1 end
    end
    f:close()
  end
  return model, n
end

--- A file's contents ("" when it cannot be read: a log not written yet).
function M.read_file(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

--- Background processes of a benchmark, their logs in tmpdir (removed by
-- cleanup, which also kills every process still known):
--   P.start(name, cmd) -> pid, log   (`exec`: the pid is cmd's own)
--   P.adopt(pid)       a process started by one of ours, killed at cleanup
--   P.kill(pid), P.running(pid), P.count() (processes started so far)
--   P.cpu(pid)         utime + stime in seconds (/proc/PID/stat), nil when gone
--   P.settle(pid)      waits until its CPU time stays the same for 0.5 s
--   P.wait_log(pid, log, pattern, seconds, what)  raises when pid exits or
--                      the time is over before the log matches pattern
--   P.cleanup()
function M.processes(tmpdir, clk_tck)
  local socket = require "socket"
  local P, children, started = {}, {}, 0
  function P.running(pid) return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true end
  function P.adopt(pid) children[pid] = true end
  function P.count() return started end
  function P.kill(pid)
    if pid and P.running(pid) then os.execute("kill " .. pid .. " 2>/dev/null") end
    for _ = 1, 50 do
      if not pid or not P.running(pid) then break end
      socket.sleep(0.1)
    end
    if pid and P.running(pid) then os.execute("kill -9 " .. pid .. " 2>/dev/null") end
    if pid then children[pid] = nil end
  end
  function P.cleanup()
    for pid in pairs(children) do P.kill(pid) end
    os.execute("rm -rf " .. M.quote(tmpdir))
  end
  function P.start(name, cmd)
    started = started + 1
    local log = ("%s/%s-%d.log"):format(tmpdir, name, started)
    local f = assert(io.popen("unset LD_PRELOAD; ( exec " .. cmd .. " ) >" .. M.quote(log) .. " 2>&1 & echo $!"))
    local pid = f:read("*l")
    f:close()
    if not pid or not pid:match("^%d+$") then error("could not start " .. cmd, 0) end
    children[pid] = true
    return pid, log
  end
  function P.cpu(pid)
    local rest = M.read_file("/proc/" .. pid .. "/stat"):match("^%d+ %b() (.*)$")
    if not rest then return nil end
    local f = {}
    for x in rest:gmatch("%S+") do f[#f + 1] = x end
    return (tonumber(f[12]) + tonumber(f[13])) / clk_tck
  end
  function P.settle(pid)
    local last = P.cpu(pid)
    for _ = 1, 120 do
      socket.sleep(0.5)
      local now = P.cpu(pid)
      if now == last then return end
      last = now
    end
  end
  function P.wait_log(pid, log, pattern, limit, what)
    local deadline = socket.gettime() + limit
    while not M.read_file(log):match(pattern) do
      if not P.running(pid) then error(("%s exited:\n%s"):format(what, M.read_file(log)), 0) end
      if socket.gettime() > deadline then
        error(("%s: not ready after %d s:\n%s"):format(what, limit, M.read_file(log)), 0)
      end
      socket.sleep(0.05)
    end
  end
  return P
end

--- 1234567 -> "1,234,567"
function M.grouped(x)
  local s = string.format("%.0f", x)
  local k
  repeat s, k = s:gsub("^(%d+)(%d%d%d)", "%1,%2") until k == 0
  return s
end

return M
