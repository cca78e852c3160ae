-- bench/server_lx.lua: the lxmpp server of bench/server.lua, in a process of
-- its own (so that its CPU time and memory can be read from /proc).
--
--   lua5.4 bench/server_lx.lua DOMAIN CERT KEY PASSWORD SALT ACCOUNTS...
--
-- ACCOUNTS are "PREFIX:COUNT" (accounts PREFIX1 .. PREFIXCOUNT), all with
-- PASSWORD. Their SCRAM keys are derived once, with SALT, and stored for
-- every account (deriving 4096-iteration keys for thousands of accounts
-- would take minutes; Prosody gets the same keys in its account files).
-- Listens on 127.0.0.1, a free port, with STARTTLS required and CERT/KEY;
-- limits on connections per address and unauthenticated connections are
-- raised for the load clients, message archives off as Prosody's are here
-- (LXMPP_BENCH_ARCHIVE=1 keeps them), nothing else is changed. Prints
-- "ready PORT PID" and serves until it is killed; every half second it
-- prints "lua_kib N", the size of its Lua heap (collectgarbage "count").
-- LXMPP_BENCH_WEB=https: also an HTTPS listener on 127.0.0.1 (a free port,
-- the same CERT/KEY) serving XMPP over WebSocket (RFC 7395) at
-- /xmpp-websocket (docs/server.md, "The web: WebSocket, BOSH, host-meta"),
-- its per-address and total connection limits raised as the XMPP ones;
-- "ready PORT PID HTTPSPORT" then. LXMPP_BENCH_DIRECT=1: also a direct TLS
-- (XEP-0368) c2s listener on a free port, told on a line "direct PORT"
-- right after the ready line. LXMPP_BENCH_S2S_CA=FILE: federation on
-- (bench/s2s.lua): an s2s listener on a free port, told on a line "s2s PORT"
-- right after the ready line, peers' certificates verified against FILE
-- (SASL EXTERNAL); LXMPP_BENCH_S2S_HOSTS="DOMAIN=IP:PORT,..." is its
-- s2s.hosts.

local DOMAIN, CERT, KEY, PASSWORD, SALT = arg[1], arg[2], arg[3], arg[4], arg[5]
if not (DOMAIN and CERT and KEY and PASSWORD and SALT) or not arg[6] then
  io.stderr:write("usage: server_lx.lua DOMAIN CERT KEY PASSWORD SALT PREFIX:COUNT...\n")
  os.exit(1)
end

local WEB = os.getenv("LXMPP_BENCH_WEB") == "https"
local DIRECT = os.getenv("LXMPP_BENCH_DIRECT") == "1"
local S2S_CA = os.getenv("LXMPP_BENCH_S2S_CA")
local S2S_HOSTS = {}
for d, a in (os.getenv("LXMPP_BENCH_S2S_HOSTS") or ""):gmatch("([^=,]+)=([^,]+)") do S2S_HOSTS[d] = a end
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"

-- The Lua garbage collector as Prosody 0.12 sets it up by default
-- (util/startup.lua: incremental, threshold 105, speed 500), so that both
-- servers keep garbage alike; LXMPP_BENCH_GC=lua keeps Lua's defaults.
if os.getenv("LXMPP_BENCH_GC") ~= "lua" then collectgarbage("incremental", 105, 500) end

local function pid()
  local f = assert(io.open("/proc/self/stat"))
  local p = f:read("*n")
  f:close()
  return math.tointeger(p)
end

lxmpp.run(function()
  local srv = lxmpp.server({
    domain = DOMAIN, listen = "127.0.0.1:0", tls = { cert = CERT, key = KEY },
    limits = { max_per_ip = 100000, max_unauthenticated = 100000 },
    -- no XEP-0313 archives, as Prosody runs here without mod_mam
    archive = os.getenv("LXMPP_BENCH_ARCHIVE") == "1",
    log_level = "warn",
    https = WEB and "127.0.0.1:0" or nil,
    web = WEB and { limits = { per_ip = 100000, connections = 100000 } } or nil,
    tls_listen = DIRECT and "127.0.0.1:0" or nil,
    s2s_listen = S2S_CA and "127.0.0.1:0" or nil,
    s2s = S2S_CA and { cafile = S2S_CA, hosts = S2S_HOSTS } or nil,
  })
  assert(srv:start())
  local rec = {}
  for _, h in ipairs({ "SHA-1", "SHA-256" }) do
    rec["SCRAM-" .. h] = assert(core.sasl_credentials(PASSWORD, h, srv.iterations, SALT))
  end
  for i = 6, #arg do
    local prefix, count = arg[i]:match("^(%w+):(%d+)$")
    if not prefix then error("bad account spec " .. arg[i]) end
    for n = 1, tonumber(count) do assert(srv.store:set_account(prefix .. n, rec)) end
  end
  collectgarbage("collect")
  local web_port, direct_port, c2s_port, s2s_port
  for _, a in ipairs(srv:addresses()) do
    if a.kind == "https" then web_port = a.port end
    if a.kind == "s2s" then s2s_port = a.port end
    if a.kind == "c2s-tls" then direct_port = a.port end
    if a.kind == "c2s" then c2s_port = c2s_port or a.port end
  end
  io.stdout:write(("ready %d %d%s\n"):format(c2s_port, pid(), web_port and " " .. web_port or ""))
  if direct_port then io.stdout:write(("direct %d\n"):format(direct_port)) end
  if s2s_port then io.stdout:write(("s2s %d\n"):format(s2s_port)) end
  io.stdout:flush()
  while true do
    lxmpp.sleep(0.5)
    io.stdout:write(("lua_kib %.0f\n"):format(collectgarbage("count")))
    io.stdout:flush()
  end
end)
