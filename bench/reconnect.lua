-- bench/reconnect.lua: what one reconnection of a mobile client costs the
-- embedded server, the classic way against XEP-0388/0484/0198 inline, in
-- one run (issue 17; docs/performance.md, "Reconnection").
--
--   lua5.4 bench/reconnect.lua [N]        (N reconnections of each kind, default 300)
--
-- The server is bench/server_lx.lua in a process of its own (STARTTLS
-- required, the suite's test certificate, SCRAM keys with 4096
-- iterations, memory storage); its CPU time is read from
-- /proc/PID/schedstat (nanoseconds on the CPU) around each series. One
-- account logs in once with SASL2 (SCRAM-SHA-256), Bind2 with XEP-0198
-- enabled (resumable) and a FAST token request; then its connection is
-- dropped, and each reconnection resumes that session and drops it again:
--   classic: STARTTLS, SCRAM-SHA-256 (RFC 6120 SASL), stream restart,
--            <resume/> (7 round trips)
--   fast:    STARTTLS, one SASL2 <authenticate/> with HT-SHA-256-NONE and
--            an inline <resume/> (4 round trips)
--   tls:     STARTTLS only, then closed: the part both share (3 round trips)
--   lx-classic, lx-fast: the same two through the lxmpp client's own
--            reconnection (lxmpp.connect with sasl2 = false, and with its
--            defaults: SASL2, the FAST token, inline resumption)
-- and the same with the TLS handshake resumed (csrc/tls.h, "Session
-- resumption"): the raw client keeps one client TLS context and offers
-- the ticket its previous connection of that kind got:
--   fast_r:  fast, the TLS session resumed (4 round trips)
--   tls_r:   tls, the TLS session resumed (3 round trips)
--   fast_d:  fast over direct TLS (XEP-0368, a second listener), resumed:
--            TLS, then <authenticate/> (2 round trips)
-- The series alternate in rounds of 50 so that all see the same machine.
-- Last, the TLS engine alone: the server side of TLS 1.3 handshakes over
-- memory BIOs in this process (os.clock), full and resumed.
-- Wall time is the client's, from connect to <resumed/>; the client's own
-- SCRAM work (PBKDF2) is in it, as a real client's is.
--
-- Instruction counts (docs/performance.md, "Where a reconnection's
-- instructions go"): LXMPP_BENCH_CALLGRIND=DIR runs the server under
-- valgrind --tool=callgrind and measures each kind in one series of N
-- (zeroing the counts before it with callgrind_control -z, dumping them
-- after it with -d into DIR/callgrind.out.PID.*), then prints the
-- instructions per reconnection of each; the wall and CPU columns are then
-- those of the slowed-down server. LXMPP_BENCH_KINDS=classic,fast_d keeps
-- only those kinds (either mode).

local N = math.tointeger(tonumber(arg[1] or "300"))
local script_dir = (arg[0] or ""):match("^(.*)/[^/]*$") or "."
local common = dofile(script_dir .. "/common.lua")
local die, q = common.dier("bench/reconnect.lua"), common.quote
if not N or N < 1 then die("N must be a positive integer") end

local ok_load, core = pcall(require, "lxmpp.core")
if not ok_load then die("cannot load lxmpp (set LUA_PATH/LUA_CPATH):\n%s", core) end
local lxmpp = require "lxmpp"
local pki = require "spec.support.pki"
local raw = require "spec.support.raw"

local DOMAIN, PASSWORD = "example.test", "bench-pw"
local NS2, NS_SASL = "urn:xmpp:sasl:2", "urn:ietf:params:xml:ns:xmpp-sasl"
local NS_SM, NS_FAST = "urn:xmpp:sm:3", "urn:xmpp:fast:0"
local UA = "<user-agent xmlns='" .. NS2 .. "' id='5b0c1a2e-3d4f-4a6b-8c7d-9e0f1a2b3c4d'/>"
local ROUND = 50

-- user and system CPU time of the process in clock ticks (fields 14 and 15
-- of /proc/PID/stat; the command name before them is in parentheses)
local function user_sys(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then die("no /proc/%s/stat", pid) end
  local line = f:read("l")
  f:close()
  local rest = line:match("%) (.*)$")
  local fields = {}
  for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
  return tonumber(fields[12]), tonumber(fields[13])   -- fields 14, 15 of the whole line
end

-- nanoseconds the process has run on a CPU
local function cpu_ns(pid)
  local f = io.open("/proc/" .. pid .. "/schedstat")
  if not f then die("no /proc/%s/schedstat", pid) end
  local ns = f:read("n")
  f:close()
  return ns
end

local CG_DIR = os.getenv("LXMPP_BENCH_CALLGRIND")
if CG_DIR == "" then CG_DIR = nil end
local wrap = ""
if CG_DIR then
  wrap = "valgrind --tool=callgrind --callgrind-out-file=" .. q(CG_DIR .. "/callgrind.out.%p") .. " "
end

local p = pki.get()
local server = assert(io.popen("exec env LXMPP_BENCH_DIRECT=1 " .. wrap .. q(arg[-1] or "lua5.4") .. " " ..
  q(script_dir .. "/server_lx.lua") .. " " .. q(DOMAIN) .. " " .. q(p.certs.good.cert) .. " " ..
  q(p.certs.good.key) .. " " .. q(PASSWORD) .. " " ..
  q("bench-salt-0123456789") .. " u:1"))
local port, pid = (server:read("l") or ""):match("^ready (%d+) (%d+)")
if not port then die("the server did not start") end
port = math.tointeger(tonumber(port))
local direct_port = math.tointeger(tonumber((server:read("l") or ""):match("^direct (%d+)") or ""))
if not direct_port then die("the server has no direct TLS listener") end

local function expect(r, name)
  local s = r:stanza()
  if not s or s.name ~= name then
    die("expected <%s/>, got %s", name, s and tostring(s) or "nothing")
  end
  return s
end

local function scram_client()
  return assert(core.sasl_client({ mechanism = "SCRAM-SHA-256", username = "u1", password = PASSWORD,
    tls = true, server_offers_plus = true }))
end

-- SCRAM in either profile: wrap(b64) makes the first element; returns the success.
local function scram(r, ns, first)
  local c = scram_client()
  r:send(first(core.base64_encode(assert(c:step()))))
  local ch = expect(r, "challenge")
  r:send("<response xmlns='" .. ns .. "'>" .. core.base64_encode(assert(c:step(core.base64_decode(ch:get_text()))))
    .. "</response>")
  return expect(r, "success")
end

local previd, token

local function first_login()
  local r = raw.connect(port)
  r:negotiate_tls(p.ca)
  local s = scram(r, NS2, function(ir)
    return "<authenticate xmlns='" .. NS2 .. "' mechanism='SCRAM-SHA-256'><initial-response>" .. ir ..
      "</initial-response>" .. UA .. "<bind xmlns='urn:xmpp:bind:0'><tag>bench</tag><enable xmlns='" .. NS_SM ..
      "' resume='true'/></bind><request-token xmlns='" .. NS_FAST .. "' mechanism='HT-SHA-256-NONE'/></authenticate>"
  end)
  previd = s:get_child("bound", "urn:xmpp:bind:0"):get_child("enabled", NS_SM).attr.id
  token = s:get_child("token", NS_FAST).attr.token
  r:close()
end

-- TLS session resumption: one client context, one ticket per kind (each
-- offered once, replaced by the one its connection got)
local cctx = assert(core.tls_context({ mode = "client", cafile = p.ca }))
local tickets, resumed = {}, {}

-- STARTTLS (or direct TLS when `direct`) offering kind's ticket; keeps the
-- new ticket and counts resumed handshakes.
local function tls_resumed(kind, direct)
  local r = raw.connect(direct and direct_port or port)
  local ticket = tickets[kind]
  tickets[kind] = nil
  if direct then
    r.conn:starttls(cctx, DOMAIN, ticket)
    local ev = r:next()
    if not (ev and ev.tls) then die("direct TLS did not complete") end
    r:send(raw.header(DOMAIN))
    expect(r, "features")
  else
    r:negotiate_tls(p.ca, DOMAIN, { ctx = cctx, ticket = ticket })
  end
  if ticket then ticket:close() end
  if r.conn:tls_info().resumed then resumed[kind] = (resumed[kind] or 0) + 1 end
  tickets[kind] = r.conn:tls_ticket()     -- came before the features
  return r
end

local function classic()
  local r = raw.connect(port)
  r:negotiate_tls(p.ca)
  scram(r, NS_SASL, function(ir)
    return "<auth xmlns='" .. NS_SASL .. "' mechanism='SCRAM-SHA-256'>" .. ir .. "</auth>"
  end)
  r.conn:restart()
  r:send(raw.header())
  expect(r, "features")
  r:send("<resume xmlns='" .. NS_SM .. "' previd='" .. previd .. "' h='0'/>")
  expect(r, "resumed")
  r:close()
end

local function fast_over(r)
  local ir = core.base64_encode("u1\0" .. core.hmac("sha256", token, "Initiator"))
  r:send("<authenticate xmlns='" .. NS2 .. "' mechanism='HT-SHA-256-NONE'><initial-response>" .. ir ..
    "</initial-response>" .. UA .. "<fast xmlns='" .. NS_FAST .. "'/><resume xmlns='" .. NS_SM .. "' previd='" ..
    previd .. "' h='0'/></authenticate>")
  local s = expect(r, "success")
  if not s:get_child("resumed", NS_SM) then die("not resumed: %s", tostring(s)) end
  r:close()
end

local function fast()
  local r = raw.connect(port)
  r:negotiate_tls(p.ca)
  fast_over(r)
end

-- the part both share: TCP, stream header, STARTTLS, TLS handshake, header again
local function tls_only()
  local r = raw.connect(port)
  r:negotiate_tls(p.ca)
  r:close()
end

-- The lxmpp client itself (lxmpp.connect), its link dropped and restored
-- by its own reconnection: with SASL2, its FAST token and an inline
-- <resume/> ("lx-fast"), or with sasl2 = false: RFC 6120 SASL, a stream
-- restart and <resume/> ("lx-classic"). Wall time: from the drop to the
-- "reconnected" event (resumed).
local clients = {}
local function lx_client(sasl2)
  local c = assert(lxmpp.connect({ jid = "u1@" .. DOMAIN, password = PASSWORD, host = "127.0.0.1", port = port,
    cafile = p.ca, sasl2 = sasl2, reconnect = { delay = 0.001, max_delay = 0.01 } }))
  local w
  c:on("reconnected", function(session_resumed)
    if not session_resumed then die("the lxmpp client did not resume") end
    if w then w:wake() end
  end)
  return { c = c, bounce = function()
    w = lxmpp.task.waiter("bench")
    c.conn:abort()
    w:wait()
  end }
end
local function lx_fast() clients.fast.bounce() end
local function lx_classic() clients.classic.bounce() end


-- The TLS engine alone, in this process over memory BIOs: CPU time of the
-- server side of n TLS 1.3 handshakes (with the certificate of the server
-- process), full and resumed; what the series above pay for TLS itself.
local function tls_engine_ms(n)
  local sctx = assert(core.tls_context({ mode = "server", cert = p.certs.good.cert, key = p.certs.good.key }))
  local cctx2 = assert(core.tls_context({ mode = "client", cafile = p.ca }))
  local function one(ticket)
    local cs, clock = cctx2:session(DOMAIN, ticket), os.clock
    local t0 = clock()
    local ss = sctx:session()
    local spent = clock() - t0
    for _ = 1, 10 do
      cs:handshake()
      local x = cs:take()
      t0 = clock()
      if x ~= "" then ss:recv(x) end
      ss:handshake()
      local y = ss:take()
      spent = spent + clock() - t0
      if y ~= "" then cs:recv(y) end
      if x == "" and y == "" then break end
    end
    cs:read()                                 -- the ticket
    local was_resumed, next_ticket = cs:info().resumed, cs:ticket()
    ss:close()
    cs:close()
    return spent, was_resumed, next_ticket
  end
  local full, res, ticket = 0, 0, nil
  for _ = 1, n do
    local spent, _, t = one(nil)
    full = full + spent
    if ticket then ticket:close() end
    ticket = t
  end
  for _ = 1, n do
    local spent, was_resumed, t = one(ticket)
    if not was_resumed then die("the TLS engine did not resume") end
    res = res + spent
    ticket:close()
    ticket = t
  end
  if ticket then ticket:close() end
  sctx:close()
  cctx2:close()
  return full / n * 1e3, res / n * 1e3
end

local KINDS = {
  classic = classic, fast = fast, tls = tls_only,
  fast_r = function() fast_over(tls_resumed("fast_r")) end,
  tls_r = function() tls_resumed("tls_r"):close() end,
  fast_d = function() fast_over(tls_resumed("fast_d", true)) end,
  ["lx-classic"] = lx_classic, ["lx-fast"] = lx_fast,
}
local ORDER = { "classic", "fast", "tls", "fast_r", "tls_r", "fast_d", "lx-classic", "lx-fast" }
if os.getenv("LXMPP_BENCH_KINDS") then
  local keep = {}
  for k in os.getenv("LXMPP_BENCH_KINDS"):gmatch("[^,%s]+") do
    if not KINDS[k] then die("unknown kind %s", k) end
    keep[#keep + 1] = k
  end
  ORDER = keep
end
if CG_DIR then ROUND = N end                  -- callgrind: one series per kind
-- callgrind_control -z / -d (the dump named after the kind); the dump's
-- "totals:" line is the instructions (Ir) since the zeroing
local instr = {}
local function cg(what, kind)
  local cmd = ("callgrind_control %s %s >/dev/null"):format(what == "dump" and "-d " .. q(kind) or "-z", pid)
  if not os.execute(cmd) then die("%s failed", cmd) end
  if what ~= "dump" then return end
  local newest
  for f in io.popen("ls -t " .. q(CG_DIR) .. "/callgrind.out." .. pid .. ".* 2>/dev/null"):lines() do
    newest = newest or f
  end
  local fh = newest and io.open(newest)
  local text = fh and fh:read("a") or ""
  if fh then fh:close() end
  local total = text:match("\ntotals: (%d+)") or text:match("\nsummary: (%d+)")
  if not total then die("no totals in %s", tostring(newest)) end
  instr[kind] = (instr[kind] or 0) + tonumber(total)
end
local TRIPS = { classic = 7, fast = 4, tls = 3, fast_r = 4, tls_r = 3, fast_d = 2, ["lx-classic"] = 7, ["lx-fast"] = 4 }
local totals = {}
for k in pairs(KINDS) do totals[k] = { cpu = 0, wall = 0, user = 0, sys = 0 } end
lxmpp.run(function()
  first_login()
  local lx = false
  for _, kind in ipairs(ORDER) do lx = lx or kind:match("^lx") ~= nil end
  if lx then
    clients.fast, clients.classic = lx_client(nil), lx_client(false)
    if not clients.fast.c.login.fast then die("the lxmpp client got no FAST token") end
  end
  for _ = 1, 5 do                                                      -- warm up, first tickets
    for _, kind in ipairs(ORDER) do KINDS[kind]() end
  end
  if lx and not clients.fast.c.sasl_mechanism:match("^HT%-") then die("the lxmpp client did not use its token") end
  for k in pairs(resumed) do resumed[k] = 0 end
  local done = 0
  while done < N do
    local n = math.min(ROUND, N - done)
    for _, kind in ipairs(ORDER) do
      local fn = KINDS[kind]
      lxmpp.sleep(CG_DIR and 1 or 0.2)          -- the server has closed the last one
      if CG_DIR then cg("zero") end
      local c0, t0 = cpu_ns(pid), core.now()
      local u0, s0 = user_sys(pid)
      for _ = 1, n do fn() end
      lxmpp.sleep(CG_DIR and 1 or 0.2)
      if CG_DIR then cg("dump", kind) end
      totals[kind].wall = totals[kind].wall + (core.now() - t0 - 0.2)
      totals[kind].cpu = totals[kind].cpu + (cpu_ns(pid) - c0)
      local u1, s1 = user_sys(pid)
      totals[kind].user, totals[kind].sys = totals[kind].user + u1 - u0, totals[kind].sys + s1 - s0
    end
    done = done + n
  end
  if lx then
    clients.fast.c:close()
    clients.classic.c:close()
  end
end)
for _, t in pairs(tickets) do t:close() end
cctx:close()
os.execute("kill " .. pid)
server:close()

local model, ncpu = common.cpu()
print(("reconnect: %d reconnections of each kind, %s, %s (%d CPUs)"):format(N, common.lua_version(),
  model or "unknown CPU", ncpu))
print(("%-10s %5s %22s %10s %18s %12s%s"):format("kind", "trips", "server CPU/reconnect", "sys share",
  "wall/reconnect", "TLS resumed", CG_DIR and "   instructions/reconnect" or ""))
for _, kind in ipairs(ORDER) do
  local t = totals[kind]
  print(("%-10s %5d %19.3f ms %9.0f%% %15.3f ms %12s%s"):format(kind, TRIPS[kind], t.cpu / N / 1e6,
    100 * t.sys / math.max(t.user + t.sys, 1), t.wall / N * 1e3,
    resumed[kind] and ("%d/%d"):format(resumed[kind], N) or "-",
    instr[kind] and ("%25.0f"):format(instr[kind] / N) or ""))
end
-- a ratio of two kinds' figures, when both were measured
local function ratio(tbl, a, b)
  local x, y = tbl[a], tbl[b]
  if type(x) == "table" then x, y = x.cpu, y and y.cpu end
  if not (x and y) or y == 0 or (x == 0 and y == 0) then return "-" end
  return ("%.2f"):format(x / y)
end
local c, f, t = totals.classic.cpu, totals.fast.cpu, totals.tls.cpu
if c > 0 and f > 0 and t > 0 then
  print(("server CPU: classic / fast = %.2f; beyond TLS (authentication and resumption): classic / fast = %.1f"):format(
    c / f, (c - t) / math.max(f - t, 1)))
end
local lc, lf = totals["lx-classic"], totals["lx-fast"]
if lc.cpu > 0 and lf.cpu > 0 then
  print(("lxmpp client: server CPU lx-classic / lx-fast = %.2f, wall lx-classic / lx-fast = %.2f"):format(
    lc.cpu / lf.cpu, lc.wall / lf.wall))
end
print(("server CPU with the TLS session resumed: classic / fast_r = %s, classic / fast_d = %s"):format(
  ratio(totals, "classic", "fast_r"), ratio(totals, "classic", "fast_d")))
if CG_DIR then
  print(("instructions: classic / fast_r = %s, classic / fast_d = %s"):format(
    ratio(instr, "classic", "fast_r"), ratio(instr, "classic", "fast_d")))
else
  local full_ms, resumed_ms = tls_engine_ms(math.max(N, 100))
  print(("the TLS engine alone (server side, memory BIOs): full handshake %.3f ms, resumed %.3f ms"):format(
    full_ms, resumed_ms))
end
