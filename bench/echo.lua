-- bench/echo.lua: chat messages through a real Prosody, a pinger and an echo
-- bot, as two lxmpp clients and as two slixmpp clients, in one run.
--
--   lua5.4 bench/echo.lua [N]                 (normally via `make bench-echo`)
--
-- N                      messages per library (default 20000; the issue asks
--                        for at least 20000, smaller N is for quick checks)
-- LXMPP_BENCH_PYTHON     the Python with Debian's python3-slixmpp
--                        (default /usr/bin/python3)
-- LXMPP_BENCH_REPS       rounds (default 1); each round runs both libraries,
--                        the round with the least client CPU is reported per
--                        library (for a machine that is not quiet)
-- LXMPP_BENCH_ONLY       development only: "lxmpp" or "slixmpp", run just one
-- LXMPP_BENCH_LX_WRAP    development only: a command prefix for the two lxmpp
--                        client processes, "%s" replaced by the role (echo,
--                        ping), for profiling:
--   LXMPP_BENCH_ONLY=lxmpp LXMPP_BENCH_LX_WRAP='perf record -q -e cpu-clock -g -o /tmp/%s.data' \
--     lua5.4 bench/echo.lua 20000
--
-- Method: one Prosody (spec/support/prosody.lua: Debian's package on
-- loopback, the suite's test CA, STARTTLS required, log level "warn") with
-- four accounts. mod_limits is not loaded, so no c2s rate limit applies
-- (checked in the generated configuration; nothing else in Prosody 0.12
-- throttles a c2s stream). For each library, in turn and against that same
-- server, two separate processes: the echo bot (started first, waited for
-- until it is online) and the pinger (bench/echo_lx.lua, with lua5.4;
-- bench/echo_slix.py, with Python). Both do STARTTLS with certificate
-- verification and SCRAM, and send initial presence. The pinger makes sure
-- the echo bot answers, sends "bench:start", then N chat messages (a number
-- and 72 bytes of text) back to back without waiting for echoes, counts the
-- echoes (each number exactly once, all N, or the run fails), and sends
-- "bench:quit". Messages go to the echo bot's full JID.
--
-- Figures: messages/s is N round trips over the pinger's wall time, from
-- just before the first message to the arrival of the last echo. Client CPU
-- is user+system time each process measures itself (getrusage/clock(3)):
-- the pinger from "bench:start" to the last echo, the echo bot from
-- "bench:start" to "bench:quit" (it idles before and after); per 10,000
-- messages, pinger and echo bot together. "whole process" adds start-up,
-- imports, TLS and login. Prosody's CPU comes from /proc/PID/stat (clock
-- ticks) before the pinger starts and after it exits. The acceptance target
-- (the issue): lxmpp's client CPU per message at most a third of slixmpp's.
-- One round by default; the machine should otherwise be idle: client CPU
-- per message grows when the processes compete for cores (fewer messages
-- per wakeup), so on a busy machine use LXMPP_BENCH_REPS.

local common = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/common.lua")
local N = common.integer(arg[1] or "20000")
local PYTHON = os.getenv("LXMPP_BENCH_PYTHON") or "/usr/bin/python3"
local ONLY = os.getenv("LXMPP_BENCH_ONLY")
local REPS = common.integer(os.getenv("LXMPP_BENCH_REPS") or "1")
local LX_WRAP = os.getenv("LXMPP_BENCH_LX_WRAP")
local LUA = arg[-1] or "lua5.4"
local USERS = { lxping = "lxping-secret", lxecho = "lxecho-secret", slping = "slping-secret", slecho = "slecho-secret" }
local RESOURCE = "bench"

local function die(fmt, ...)
  io.stderr:write("bench/echo.lua: ", string.format(fmt, ...), "\n")
  os.exit(1, true)   -- closes the Lua state: the test PKI removes its directory
end

if not N or N < 1 then die("N must be a positive integer, got %q", tostring(arg[1])) end
if not REPS or REPS < 1 then die("LXMPP_BENCH_REPS must be a positive integer") end
if ONLY and ONLY ~= "lxmpp" and ONLY ~= "slixmpp" then die("LXMPP_BENCH_ONLY must be lxmpp or slixmpp") end

local script_dir = (arg[0] or ""):match("^(.*)[/\\][^/\\]*$") or "."

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local first_line = common.first_line

local function read_file(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

---------------------------------------------------------------------------
-- Loading. Anything missing is fatal: a benchmark that quietly leaves a
-- column out is worse than none.

local ok_load, lxmpp = pcall(require, "lxmpp")
if not ok_load then die("cannot load lxmpp (set LUA_PATH/LUA_CPATH, or run `make bench-echo`):\n%s", lxmpp) end
local ok_sock, socket = pcall(require, "socket")
if not ok_sock then die("cannot load LuaSocket (Debian package lua-socket):\n%s", socket) end
local ok_pro, prosody = pcall(require, "spec.support.prosody")
if not ok_pro then die("cannot load spec/support/prosody.lua (run from the repository root):\n%s", prosody) end

local slix_version = ONLY ~= "lxmpp" and first_line(q(PYTHON) .. " -c " ..
  q("import sys, slixmpp; print(slixmpp.__version__, sys.version.split()[0])")) or nil
if ONLY ~= "lxmpp" and not slix_version then
  die("%s cannot import slixmpp (Debian package python3-slixmpp; set LXMPP_BENCH_PYTHON)", PYTHON)
end
local CLK_TCK = tonumber(first_line("getconf CLK_TCK") or "")
if not CLK_TCK or CLK_TCK <= 0 then die("getconf CLK_TCK failed") end

---------------------------------------------------------------------------
-- Processes

-- utime + stime of a process, seconds (nil when it is gone).
local function proc_cpu(pid)
  local s = read_file("/proc/" .. pid .. "/stat")
  if s == "" then return nil end
  -- fields after the command name, which is in parentheses and may hold spaces
  local rest = s:match("^%d+ %b() (.*)$")
  local f = {}
  for x in rest:gmatch("%S+") do f[#f + 1] = x end
  -- rest starts at field 3 (state): utime is field 14, stime field 15
  return (tonumber(f[12]) + tonumber(f[13])) / CLK_TCK
end

local function running(pid) return common.execute("kill -0 " .. pid .. " 2>/dev/null") end

local tmpdir = first_line("mktemp -d /tmp/lxmpp-bench-echo.XXXXXX")
if not tmpdir then die("mktemp -d failed") end

local srv
local children = {}     -- pids to kill if we fail

local function cleanup()
  for pid in pairs(children) do
    if running(pid) then os.execute("kill " .. pid .. " 2>/dev/null") end
  end
  if srv then srv:stop() end
  os.execute("rm -rf " .. q(tmpdir))
end

-- Starts a client in the background under `timeout`; returns pid, log path.
local function start(lib, role, args, limit)
  local cmd
  if lib == "lxmpp" then
    cmd = q(LUA) .. " " .. q(script_dir .. "/echo_lx.lua")
    if LX_WRAP and LX_WRAP ~= "" then cmd = LX_WRAP:gsub("%%s", role) .. " " .. cmd end
  else
    cmd = q(PYTHON) .. " " .. q(script_dir .. "/echo_slix.py")
  end
  local parts = { "timeout -k 5", tostring(limit), cmd, role }
  for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
  local log = ("%s/%s-%s.log"):format(tmpdir, lib, role)
  local f = assert(io.popen("unset LD_PRELOAD; " .. table.concat(parts, " ") .. " >" .. q(log) .. " 2>&1 & echo $!"))
  local pid = f:read("*l")
  f:close()
  if not pid or not pid:match("^%d+$") then error("could not start " .. cmd) end
  children[pid] = true
  return pid, log
end

-- "result k=v ..." from a client's log -> table (numbers converted).
local function result_of(log, what)
  local text = read_file(log)
  local line = text:match("\nresult ([^\n]*)") or text:match("^result ([^\n]*)")
  if not line then error(("%s printed no result:\n%s"):format(what, text), 0) end
  local r = {}
  for k, v in line:gmatch("(%S+)=(%S+)") do r[k] = tonumber(v) or v end
  r.online = text:match("online ([^\n]*)")
  return r
end

-- Waits until pid has exited (at most `limit` seconds, then fails).
local function wait_exit(pid, limit, what, log)
  local deadline = socket.gettime() + limit
  while running(pid) do
    if socket.gettime() > deadline then
      os.execute("kill " .. pid .. " 2>/dev/null")
      error(("%s did not finish within %d s:\n%s"):format(what, limit, read_file(log)), 0)
    end
    socket.sleep(0.05)
  end
  children[pid] = nil
end

---------------------------------------------------------------------------
-- One library: the echo bot, then the pinger, through srv.

local function run_pair(lib)
  local pre = lib == "lxmpp" and "lx" or "sl"
  local echo_jid = ("%secho@%s/%s"):format(pre, srv.domain, RESOURCE)
  local ping_jid = ("%sping@%s/%s"):format(pre, srv.domain, RESOURCE)
  local port, ca = tostring(srv.port), srv.ca
  -- generous: a few thousand messages a second is slow for either
  local limit = 120 + math.floor(N / 100)

  local epid, elog = start(lib, "echo", { echo_jid, USERS[pre .. "echo"], port, ca }, limit + 60)
  local deadline = socket.gettime() + 30
  while not read_file(elog):match("online ") do
    if not running(epid) then error(("%s echo bot exited:\n%s"):format(lib, read_file(elog)), 0) end
    if socket.gettime() > deadline then
      error(("%s echo bot not online after 30 s:\n%s"):format(lib, read_file(elog)), 0)
    end
    socket.sleep(0.02)
  end

  local p0 = proc_cpu(srv.pid)
  local ppid, plog = start(lib, "ping", { ping_jid, USERS[pre .. "ping"], port, ca, tostring(N), echo_jid }, limit)
  wait_exit(ppid, limit + 10, lib .. " pinger", plog)
  local p1 = proc_cpu(srv.pid)
  wait_exit(epid, 30, lib .. " echo bot", elog)
  if not p0 or not p1 then error("Prosody (pid " .. srv.pid .. ") is gone:\n" .. srv:log(), 0) end

  local ping = result_of(plog, lib .. " pinger")
  local echo = result_of(elog, lib .. " echo bot")
  if ping.role ~= "ping" or echo.role ~= "echo" then error(lib .. ": result lines of the wrong role", 0) end
  if ping.echoes ~= N then error(("%s: %s of %d echoes arrived"):format(lib, tostring(ping.echoes), N), 0) end
  if echo.echoed ~= N then error(("%s: the echo bot echoed %s of %d"):format(lib, tostring(echo.echoed), N), 0) end
  for _, k in ipairs({ "wall", "cpu", "cpu_total" }) do
    if type(ping[k]) ~= "number" then error(lib .. " pinger: no " .. k, 0) end
  end
  for _, k in ipairs({ "cpu", "cpu_total" }) do
    if type(echo[k]) ~= "number" then error(lib .. " echo bot: no " .. k, 0) end
  end
  return { lib = lib, ping = ping, echo = echo, prosody_cpu = p1 - p0 }
end

---------------------------------------------------------------------------
-- Main

local function main()
  local load_before
  do
    local f = io.open("/proc/loadavg")
    if f then load_before = f:read("*l"):match("^(%S+ %S+ %S+)"); f:close() end
  end

  srv = prosody.start({ users = USERS, log_level = "warn" })
  -- nothing may rate-limit the streams
  local cfg = read_file(srv.config)
  local mods = cfg:match("modules_enabled = (%b{})") or ""
  if mods:find("limits", 1, true) then error("the Prosody configuration loads mod_limits: " .. mods, 0) end
  local cmdline = read_file("/proc/" .. srv.pid .. "/cmdline")
  if not cmdline:find("prosody", 1, true) then
    error(("pid %s is not Prosody (%q): cannot measure its CPU"):format(srv.pid, cmdline), 0)
  end

  local libs = {}
  if ONLY ~= "slixmpp" then libs[#libs + 1] = "lxmpp" end
  if ONLY ~= "lxmpp" then libs[#libs + 1] = "slixmpp" end
  local runs, rounds = {}, {}
  for rep = 1, REPS do
    rounds[rep] = {}
    for i, lib in ipairs(libs) do
      local r = run_pair(lib)
      r.both = r.ping.cpu + r.echo.cpu
      rounds[rep][i] = r
      if not runs[i] or r.both < runs[i].both then runs[i] = r end
    end
  end
  local warnings = 0
  for line in srv:log():gmatch("[^\n]+") do
    if line:match("%s(warn)%s") or line:match("%s(error)%s") then warnings = warnings + 1 end
  end
  local prosody_log = srv:log()

  -- report
  local lua_version = common.lua_version(LUA)
  local cpu_model, ncpu = common.cpu()
  local prosody_version = first_line("dpkg-query -W -f='${Version}' prosody") or "?"

  local grouped = common.grouped
  local function per10k(s) return s / N * 1e4 end

  print("lxmpp echo benchmark (bench/echo.lua)")
  print(string.format("  %s, lxmpp %s; Python %s, slixmpp %s; Prosody %s (Debian)", lua_version,
    tostring(lxmpp.VERSION), slix_version and slix_version:match("%S+$") or "-",
    slix_version and slix_version:match("^%S+") or "-", prosody_version))
  if cpu_model then
    print(string.format("  CPU: %s, %d logical CPUs; load average before the runs: %s", cpu_model, ncpu,
      load_before or "?"))
  end
  print(string.format("  %d chat messages per library, pipelined, pinger -> Prosody -> echo bot -> Prosody -> pinger",
    N))
  if REPS > 1 then
    print(string.format("  %d rounds; per library the round with the least client CPU", REPS))
  end
  for _, r in ipairs(runs) do
    print(string.format("  %-8s pinger %s", r.lib, r.ping.online or "?"))
    print(string.format("  %-8s echo   %s", "", r.echo.online or "?"))
  end
  print()
  print(string.format("  %-9s %12s %8s | %-26s | %-17s | %s", "", "", "",
    "client CPU s per 10k msgs", "client CPU s,", "Prosody"))
  print(string.format("  %-9s %12s %8s | %-26s | %-17s | %s", "", "", "",
    "(the exchange)", "whole process", "(pinger's run)"))
  print(string.format("  %-9s %12s %8s | %8s %8s %8s | %8s %8s | %8s %6s", "library", "messages/s", "wall s",
    "pinger", "echo", "both", "pinger", "echo", "CPU s", "busy"))
  for _, r in ipairs(runs) do
    print(string.format("  %-9s %12s %8.3f | %8.3f %8.3f %8.3f | %8.3f %8.3f | %8.2f %5.0f%%", r.lib,
      grouped(N / r.ping.wall), r.ping.wall, per10k(r.ping.cpu), per10k(r.echo.cpu), per10k(r.both),
      r.ping.cpu_total, r.echo.cpu_total, r.prosody_cpu, 100 * r.prosody_cpu / r.ping.wall))
  end
  for _, r in ipairs(runs) do
    if (tonumber(r.ping.stalls) or 0) + (tonumber(r.echo.stalls) or 0) > 0 then
      print(string.format("  %s: the output queue was full %s time(s) in the pinger, %s in the echo bot"
        .. " (waited, nothing dropped)", r.lib, tostring(r.ping.stalls), tostring(r.echo.stalls)))
    end
  end
  if #runs == 2 then
    local lx, sl = runs[1], runs[2]
    local ratio = sl.both / lx.both
    print()
    print(string.format("  ratio slixmpp/lxmpp, client CPU per message: %.2fx (pinger %.2fx, echo %.2fx);"
      .. " whole process %.2fx", ratio, sl.ping.cpu / lx.ping.cpu, sl.echo.cpu / lx.echo.cpu,
      (sl.ping.cpu_total + sl.echo.cpu_total) / (lx.ping.cpu_total + lx.echo.cpu_total)))
    print(string.format("  ratio lxmpp/slixmpp, messages/s: %.2fx", sl.ping.wall / lx.ping.wall))
    if REPS > 1 then
      print("  each round, client CPU s per 10k msgs (both) lxmpp / slixmpp = ratio; messages/s lxmpp / slixmpp:")
      for rep = 1, REPS do
        local a, b = rounds[rep][1], rounds[rep][2]
        print(string.format("    %d: %.3f / %.3f = %.2fx; %s / %s", rep, per10k(a.both), per10k(b.both),
          b.both / a.both, grouped(N / a.ping.wall), grouped(N / b.ping.wall)))
      end
    end
    print(string.format("  target (lxmpp at most a third of slixmpp's client CPU per message, ratio >= 3): %s",
      ratio >= 3 and "met" or "NOT met"))
  end
  print(string.format("  Prosody: mod_limits not loaded (no c2s rate limits); %d warning/error line(s) in its log",
    warnings))
  print("  Prosody CPU: from the pinger's start to its exit (its login included); busy = that / the pinger's wall")
  if warnings > 0 then
    local shown = 0
    for line in prosody_log:gmatch("[^\n]+") do
      if shown < 5 and (line:match("%swarn%s") or line:match("%serror%s")) then
        print("    " .. line)
        shown = shown + 1
      end
    end
  end
end

local ok, err = xpcall(main, debug.traceback)
cleanup()
if not ok then die("%s", err) end
