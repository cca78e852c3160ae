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
-- The series alternate in rounds of 50 so that all see the same machine.
-- Wall time is the client's, from connect to <resumed/>; the client's own
-- SCRAM work (PBKDF2) is in it, as a real client's is.

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

-- nanoseconds the process has run on a CPU
local function cpu_ns(pid)
  local f = io.open("/proc/" .. pid .. "/schedstat")
  if not f then die("no /proc/%s/schedstat", pid) end
  local ns = f:read("n")
  f:close()
  return ns
end

local p = pki.get()
local server = assert(io.popen("exec " .. q(arg[-1] or "lua5.4") .. " " .. q(script_dir .. "/server_lx.lua") .. " " ..
  q(DOMAIN) .. " " .. q(p.certs.good.cert) .. " " .. q(p.certs.good.key) .. " " .. q(PASSWORD) .. " " ..
  q("bench-salt-0123456789") .. " u:1"))
local port, pid = (server:read("l") or ""):match("^ready (%d+) (%d+)")
if not port then die("the server did not start") end
port = math.tointeger(tonumber(port))

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

local function fast()
  local r = raw.connect(port)
  r:negotiate_tls(p.ca)
  local ir = core.base64_encode("u1\0" .. core.hmac("sha256", token, "Initiator"))
  r:send("<authenticate xmlns='" .. NS2 .. "' mechanism='HT-SHA-256-NONE'><initial-response>" .. ir ..
    "</initial-response>" .. UA .. "<fast xmlns='" .. NS_FAST .. "'/><resume xmlns='" .. NS_SM .. "' previd='" ..
    previd .. "' h='0'/></authenticate>")
  local s = expect(r, "success")
  if not s:get_child("resumed", NS_SM) then die("not resumed: %s", tostring(s)) end
  r:close()
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
  c:on("reconnected", function(resumed)
    if not resumed then die("the lxmpp client did not resume") end
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

local KINDS = { classic = classic, fast = fast, tls = tls_only, ["lx-classic"] = lx_classic, ["lx-fast"] = lx_fast }
local ORDER = { "classic", "fast", "tls", "lx-classic", "lx-fast" }
local TRIPS = { classic = 7, fast = 4, tls = 3, ["lx-classic"] = 7, ["lx-fast"] = 4 }
local totals = {}
for _, k in ipairs(ORDER) do totals[k] = { cpu = 0, wall = 0 } end
lxmpp.run(function()
  first_login()
  clients.fast, clients.classic = lx_client(nil), lx_client(false)
  if not clients.fast.c.login.fast then die("the lxmpp client got no FAST token") end
  for _ = 1, 5 do classic(); fast(); lx_classic(); lx_fast() end          -- warm up
  if not clients.fast.c.sasl_mechanism:match("^HT%-") then die("the lxmpp client did not use its token") end
  local done = 0
  while done < N do
    local n = math.min(ROUND, N - done)
    for _, kind in ipairs(ORDER) do
      local fn = KINDS[kind]
      lxmpp.sleep(0.2)                          -- the server has closed the last one
      local c0, t0 = cpu_ns(pid), core.now()
      for _ = 1, n do fn() end
      lxmpp.sleep(0.2)
      totals[kind].wall = totals[kind].wall + (core.now() - t0 - 0.2)
      totals[kind].cpu = totals[kind].cpu + (cpu_ns(pid) - c0)
    end
    done = done + n
  end
  clients.fast.c:close()
  clients.classic.c:close()
end)
os.execute("kill " .. pid)
server:close()

local model, ncpu = common.cpu()
print(("reconnect: %d reconnections of each kind, %s, %s (%d CPUs)"):format(N, common.lua_version(),
  model or "unknown CPU", ncpu))
print(("%-10s %5s %22s %20s"):format("kind", "trips", "server CPU/reconnect", "wall/reconnect"))
for _, kind in ipairs(ORDER) do
  local t = totals[kind]
  print(("%-10s %5d %19.3f ms %17.3f ms"):format(kind, TRIPS[kind], t.cpu / N / 1e6, t.wall / N * 1e3))
end
local c, f, t = totals.classic.cpu, totals.fast.cpu, totals.tls.cpu
print(("server CPU: classic / fast = %.2f; beyond TLS (authentication and resumption): classic / fast = %.1f"):format(
  c / f, (c - t) / math.max(f - t, 1)))
local lc, lf = totals["lx-classic"], totals["lx-fast"]
print(("lxmpp client: server CPU lx-classic / lx-fast = %.2f, wall lx-classic / lx-fast = %.2f"):format(
  lc.cpu / lf.cpu, lc.wall / lf.wall))
