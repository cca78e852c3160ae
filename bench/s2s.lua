-- bench/s2s.lua: messages routed across server-to-server streams (RFC 6120
-- s2s) per server CPU second, the embedded server against Prosody as the
-- receiving server, configured alike, in one run (normally via
-- `make bench-s2s`).
--
--   lua5.4 bench/s2s.lua [N]
--
-- N                        messages sent across (default 20000)
-- LXMPP_BENCH_WINDOW       messages on the way at once (default 200)
-- LXMPP_BENCH_ROUNDS       rounds (default 2): each server is measured this
--                          many times, freshly started, lxmpp and Prosody in
--                          turn; the lowest CPU per message of each is shown
-- LXMPP_BENCH_ONLY         development only: "lxmpp" or "prosody"
--
-- Method, per round and receiving server:
--  * B, the server under test, serves example.test in its own process on
--    127.0.0.1 with the suite's test-CA certificate for example.test
--    (spec/support/pki.lua), STARTTLS required on c2s and s2s, peers'
--    certificates verified against the same CA, SASL EXTERNAL between
--    servers. lxmpp: bench/server_lx.lua with LXMPP_BENCH_S2S_CA (memory
--    storage, no archives, Prosody's GC parameters, default limits).
--    Prosody: Debian's 0.12 on the same Lua 5.4, modules roster, saslauth,
--    tls (s2s core), s2s_secure_auth, ssl.cafile the CA, storage in memory
--    but accounts, no mod_limits, offline, admin modules, log level warn,
--    epoll backend.
--  * A, the sending server, is always lxmpp (other.test, the CA's
--    certificate for other.test, bench/server_lx.lua with s2s.hosts
--    pointing example.test at B's s2s port): its own process too.
--  * A client on A (snd1@other.test) and one on B (rcv1@example.test), both
--    in this process; one warm-up message brings the route up (the
--    outgoing stream A→B: TLS, EXTERNAL). Then the client on A writes N
--    chat messages to rcv1@example.test/b, at most WINDOW not yet received
--    by the client on B (flow control here, no extra stanzas); each goes
--    client → A (c2s) → B (s2s) → client (c2s).
--  * CPU: utime+stime of B's and of A's process (/proc/PID/stat) when both
--    have settled before the first message and once the last one arrived.
--    Shown: messages per CPU second of B (the comparison), and of A (the
--    same lxmpp sending either way: how much its side costs, and whether
--    the receiving server changes it), wall time.

local N = math.tointeger(tonumber(arg[1] or "20000"))
local WINDOW = math.tointeger(tonumber(os.getenv("LXMPP_BENCH_WINDOW") or "200"))
local ROUNDS = math.tointeger(tonumber(os.getenv("LXMPP_BENCH_ROUNDS") or "2"))
local ONLY = os.getenv("LXMPP_BENCH_ONLY")
local LUA = arg[-1] or "lua5.4"
local B_DOMAIN, A_DOMAIN = "example.test", "other.test"
local PASSWORD = "bench-secret"
local SALT = "lxmpp-bench-salt"
local TEXT = "Across the federation: a chat message of about the usual size, routed between two servers."

local script_dir = (arg[0] or ""):match("^(.*)/[^/]*$") or "."
local common = dofile(script_dir .. "/common.lua")
local die, q, first_line = common.dier("bench/s2s.lua"), common.quote, common.first_line

for name, v in pairs({ N = N, LXMPP_BENCH_WINDOW = WINDOW, LXMPP_BENCH_ROUNDS = ROUNDS }) do
  if not v or v < 1 then die("%s must be a positive integer", name) end
end
if ONLY and ONLY ~= "lxmpp" and ONLY ~= "prosody" then die("LXMPP_BENCH_ONLY must be lxmpp or prosody") end

local ok_load, core = pcall(require, "lxmpp.core")
if not ok_load then die("cannot load lxmpp (set LUA_PATH/LUA_CPATH, or run `make bench-s2s`):\n%s", core) end
local lxmpp = require "lxmpp"
local socket = require "socket"
local pki = require("spec.support.pki")
local free_port = require "spec.support.free_port"
local CLK_TCK = tonumber(first_line("getconf CLK_TCK") or "")
if not CLK_TCK or CLK_TCK <= 0 then die("getconf CLK_TCK failed") end

local tmpdir = first_line("mktemp -d /tmp/lxmpp-bench-s2s.XXXXXX") or die("mktemp -d failed")
local P = common.processes(tmpdir, CLK_TCK)
local read_file = common.read_file

---------------------------------------------------------------------------
-- servers

-- extra: environment for bench/server_lx.lua
local function start_lxmpp(domain, cert, env, account)
  local cmd = "env " .. env .. " " .. q(LUA) .. " " .. q(script_dir .. "/server_lx.lua") .. " " .. q(domain) .. " "
    .. q(cert.cert) .. " " .. q(cert.key) .. " " .. q(PASSWORD) .. " " .. q(SALT) .. " " .. q(account .. ":1")
  local wrapper, log = P.start("lxmpp-" .. domain, cmd)
  P.wait_log(wrapper, log, "\ns2s %d+\n", 120, "the lxmpp server for " .. domain)
  local text = read_file(log)
  local port, pid = text:match("ready (%d+) (%d+)")
  P.adopt(pid)
  return { name = "lxmpp", pid = pid, port = tonumber(port), s2s_port = tonumber(text:match("\ns2s (%d+)\n")),
    log = log, stop = function() P.kill(pid); P.kill(wrapper) end }
end

local function lua_string(s) return ("%q"):format(s) end

local function start_prosody(p)
  if not os.execute("command -v prosody >/dev/null 2>&1") then
    error("prosody is not installed: run `make deps` (Debian package prosody)", 0)
  end
  local dir = tmpdir .. "/prosody-" .. P.count()
  local port, s2s_port = free_port(), free_port()
  local good = p.certs.good
  local ssl = "{ certificate = " .. lua_string(good.cert) .. ", key = " .. lua_string(good.key) .. " }"
  local cfg = table.concat({
    "run_as_root = true",
    "pidfile = " .. lua_string(dir .. "/prosody.pid"),
    "data_path = " .. lua_string(dir .. "/data"),
    "log = { { levels = { min = 'warn' }, to = 'file', filename = " .. lua_string(dir .. "/prosody.log") .. " } }",
    "network_backend = 'epoll'",
    "interfaces = { '127.0.0.1' }",
    "local_interfaces = { '127.0.0.1' }",
    "c2s_ports = { " .. port .. " }",
    "s2s_ports = { " .. s2s_port .. " }",
    "c2s_direct_tls_ports = { }", "legacy_ssl_ports = { }", "component_ports = { }",
    "http_ports = { }", "https_ports = { }",
    "modules_enabled = { 'roster', 'saslauth', 'tls' }",
    "modules_disabled = { 'offline', 'admin_shell', 'admin_socket', 'posix' }",
    "authentication = 'internal_hashed'",
    "default_storage = 'memory'",
    "storage = { accounts = 'internal' }",
    "c2s_require_encryption = true",
    "s2s_require_encryption = true",
    "s2s_secure_auth = true",
    "ssl = { cafile = " .. lua_string(p.ca) .. " }",
    "allow_registration = false",
    "certificates = " .. lua_string(dir .. "/certs"),
    "VirtualHost " .. lua_string(B_DOMAIN),
    "  ssl = " .. ssl,
  }, "\n") .. "\n"
  os.execute("mkdir -p " .. q(dir .. "/certs") .. " " .. q(dir .. "/data"))
  local cfgpath = dir .. "/prosody.cfg.lua"
  local f = assert(io.open(cfgpath, "w"))
  f:write(cfg)
  f:close()
  if not os.execute("unset LD_PRELOAD; prosodyctl --config " .. q(cfgpath) .. " register rcv1 " .. q(B_DOMAIN)
      .. " " .. q(PASSWORD) .. " >/dev/null 2>&1") then
    error("prosodyctl register failed", 0)
  end
  local pid, log = P.start("prosody", "prosody --config " .. q(cfgpath) .. " -F")
  local deadline = socket.gettime() + 30
  while true do
    local c = socket.connect("127.0.0.1", port)
    local s = c and socket.connect("127.0.0.1", s2s_port)
    if c then c:close() end
    if s then s:close() end
    if s then break end
    if not P.running(pid) or socket.gettime() > deadline then
      error("prosody did not start:\n" .. read_file(log) .. read_file(dir .. "/prosody.log"), 0)
    end
    socket.sleep(0.1)
  end
  if not read_file("/proc/" .. pid .. "/cmdline"):find("prosody", 1, true) then
    error("pid " .. pid .. " is not Prosody: cannot measure it", 0)
  end
  return { name = "prosody", pid = pid, port = port, s2s_port = s2s_port, log = dir .. "/prosody.log",
    stop = function() P.kill(pid) end }
end

---------------------------------------------------------------------------
-- one measurement: B receiving from A

local function measure(p, b)
  local a = start_lxmpp(A_DOMAIN, p.certs.wrongname, "LXMPP_BENCH_S2S_CA=" .. q(p.ca)
    .. " LXMPP_BENCH_S2S_HOSTS=" .. q(B_DOMAIN .. "=127.0.0.1:" .. b.s2s_port), "snd")
  local res, failure
  local ok, err = pcall(lxmpp.run, function()
    -- as bench/server_load.lua's clients: no XEP-0198 (Prosody has no
    -- mod_smacks here, and the counting below, past the session, would
    -- never answer the server's <r/>: it would hold everything past
    -- limits.sm_queue), no keepalive (the session sees no traffic)
    local function login(address, port)
      return assert(lxmpp.connect({ jid = address, password = PASSWORD, host = "127.0.0.1", port = port,
        cafile = p.ca, stream_management = false, keepalive = false }))
    end
    local rcv = login("rcv1@" .. B_DOMAIN .. "/b", b.port)
    local snd = login("snd1@" .. A_DOMAIN .. "/a", a.port)
    rcv:send_presence()
    local got = 0
    local waiter
    local function wake() if waiter then local w = waiter; waiter = nil; w:wake(true) end end
    rcv.conn:on("stanza", function(s)
      if s.name ~= "message" then return end
      if s.attr.type == "error" then failure = failure or "error message: " .. tostring(s) end
      got = got + 1
      wake()
    end)
    snd.conn:on("stanza", function(s)
      if s.name == "message" and s.attr.type == "error" then
        failure = failure or "error message: " .. tostring(s)
        wake()
      end
    end)
    local msg = ("<message to='rcv1@%s/b' type='chat'><body>%s</body></message>"):format(B_DOMAIN, TEXT)
    local conn = snd.conn.c
    -- until got reaches n: waits, waking on each message (or a failure)
    local function wait_for(n, what)
      local last, since = got, core.now()
      while got < n and not failure do
        waiter = lxmpp.task.waiter(what)
        local t = core.timer(1, waiter)
        waiter:wait()
        t:stop()
        if got ~= last then last, since = got, core.now() end
        if core.now() - since > 30 then failure = ("%s: %d of %d after 30 s without progress"):format(what, got, n) end
      end
      if failure then error(failure, 0) end
    end
    -- warm-up: the route A → B comes up
    assert(conn:write(msg))
    local sent = 1
    wait_for(1, "warm-up")
    P.settle(a.pid)
    P.settle(b.pid)
    local a0, b0, t0 = P.cpu(a.pid), P.cpu(b.pid), core.now()
    local total = N + 1
    while sent < total do
      local n = math.min(WINDOW - (sent - got), total - sent)
      if n > 0 then
        assert(conn:write(string.rep(msg, n)))
        sent = sent + n
      end
      wait_for(math.min(sent, got + math.max(1, WINDOW // 2)), "routing")
    end
    wait_for(total, "routing")
    local wall = core.now() - t0
    local a1, b1 = P.cpu(a.pid), P.cpu(b.pid)
    if not a1 or not b1 then error("a server is gone", 0) end
    res = { n = N, wall = wall, b_cpu = b1 - b0, a_cpu = a1 - a0 }
    rcv:close()
    snd:close()
  end)
  local alog = read_file(a.log)
  a.stop()
  if not ok then error(tostring(err) .. "\nsending server's log:\n" .. alog:sub(-3000), 0) end
  res.per_cpu_s, res.a_per_cpu_s, res.rate = N / res.b_cpu, N / res.a_cpu, N / res.wall
  return res
end

local function with_receiver(name, p)
  local b = name == "lxmpp" and start_lxmpp(B_DOMAIN, p.certs.good, "LXMPP_BENCH_S2S_CA=" .. q(p.ca), "rcv")
    or start_prosody(p)
  local ok, res = pcall(measure, p, b)
  local warnings = {}
  for line in read_file(b.log):gmatch("[^\n]+") do
    if line:match("warn") or line:match("error") then warnings[#warnings + 1] = line end
  end
  if ok and not P.running(b.pid) then ok, res = false, name .. " died:\n" .. read_file(b.log) end
  b.stop()
  if not ok then error(name .. ": " .. tostring(res) .. "\nits log:\n" .. read_file(b.log):sub(-3000), 0) end
  res.warnings = warnings
  return res
end

local function main()
  local load_before = (read_file("/proc/loadavg"):match("^(%S+ %S+ %S+)"))
  local p = pki.get()
  local names = {}
  if ONLY ~= "prosody" then names[#names + 1] = "lxmpp" end
  if ONLY ~= "lxmpp" then names[#names + 1] = "prosody" end
  local best, all = {}, {}
  for _ = 1, ROUNDS do
    for _, name in ipairs(names) do
      local r = with_receiver(name, p)
      all[name] = all[name] or {}
      table.insert(all[name], r)
      if not best[name] or r.b_cpu < best[name].b_cpu then best[name] = r end
    end
  end

  local cpu_model, ncpu = common.cpu()
  local grouped = common.grouped
  print("lxmpp s2s benchmark (bench/s2s.lua)")
  print(("  %s, lxmpp %s; Prosody %s (Debian); %s, %d logical CPUs; load before: %s"):format(
    common.lua_version(LUA), tostring(lxmpp.VERSION), first_line("dpkg-query -W -f='${Version}' prosody") or "?",
    cpu_model or "?", ncpu, load_before or "?"))
  print(("  client -> lxmpp %s -> (s2s: STARTTLS + SASL EXTERNAL) -> B %s -> client; %s messages, window %d;"
    .. " best of %d round(s)"):format(A_DOMAIN, B_DOMAIN, grouped(N), WINDOW, ROUNDS))
  print()
  print(("  %-16s | %10s %8s | %10s %12s | %10s %12s"):format("receiving B", "messages/s", "wall s", "B CPU s",
    "B msgs/CPU s", "A CPU s", "A msgs/CPU s"))
  for _, name in ipairs(names) do
    local r = best[name]
    print(("  %-16s | %10s %8.2f | %10.2f %12s | %10.2f %12s"):format(name, grouped(r.rate), r.wall, r.b_cpu,
      grouped(r.per_cpu_s), r.a_cpu, grouped(r.a_per_cpu_s)))
  end
  for _, name in ipairs(names) do
    local list = {}
    for i, r in ipairs(all[name]) do list[i] = grouped(r.per_cpu_s) end
    print(("  %s: B msgs/CPU s in each round: %s; %d warning/error line(s) in its log"):format(name,
      table.concat(list, " "), #best[name].warnings))
    for i = 1, math.min(5, #best[name].warnings) do print("    " .. best[name].warnings[i]) end
  end
  if best.lxmpp and best.prosody then
    print()
    print(("  messages received across s2s per server CPU second, lxmpp/Prosody: %.2fx"):format(
      best.lxmpp.per_cpu_s / best.prosody.per_cpu_s))
  end
end

local ok, err = xpcall(main, debug.traceback)
P.cleanup()
if not ok then die("%s", err) end
