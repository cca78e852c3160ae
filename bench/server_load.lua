-- bench/server_load.lua: a load client of bench/server.lua, many lxmpp
-- client connections in one process. The same program drives both servers.
--
--   lua5.4 bench/server_load.lua idle  PORT CAFILE DOMAIN PASSWORD PREFIX FIRST COUNT
--   lua5.4 bench/server_load.lua route PORT CAFILE DOMAIN PASSWORD PREFIX FIRST PAIRS K WINDOW GOFILE
--
-- Every connection goes to 127.0.0.1:PORT with STARTTLS (the certificate
-- verified against CAFILE), SASL SCRAM (the strongest variant the server
-- offers), binds resource "b" and sends initial presence; accounts are
-- PREFIX<i>@DOMAIN, all with PASSWORD. At most 64 logins are in flight.
--
-- idle   logs in accounts FIRST .. FIRST+COUNT-1, prints "ready COUNT",
--        then keeps the connections open, reading nothing but what comes,
--        until it is killed.
-- route  logs in PAIRS pairs (accounts FIRST+2p and FIRST+2p+1), prints
--        "ready", and when GOFILE exists each client sends K chat messages
--        to its partner's full JID (both directions), at most WINDOW of its
--        messages on the way at any time (the partner is in this process:
--        its count of received messages opens the window, no extra
--        traffic). Every message is the same bytes for both servers. When
--        every client has received all K it prints "result received=N
--        wall=S cpu=S" (wall from seeing GOFILE) and exits.
-- Any failure: a message on stderr, exit status 1.
--
-- LXMPP_BENCH_URL=wss://DOMAIN:P/xmpp-websocket (or ws://...): XMPP over
-- WebSocket (RFC 7395) to that URL instead of TCP with STARTTLS: the TCP
-- connection still goes to 127.0.0.1 (PORT is then ignored), wss://
-- certificates are verified against CAFILE and the URL's host; ws:// is
-- plain (tls = "none", loopback only). Routing then writes each message as
-- its own WebSocket message (one element per message, RFC 7395 §3.3.3), the
-- stanza declaring xmlns='jabber:client' as the framing asks (the only
-- difference in its bytes from the TCP case); over TCP a window's messages
-- go out in one write.

local MODE = arg[1]
local PORT = math.tointeger(tonumber(arg[2] or ""))
local CAFILE, DOMAIN, PASSWORD, PREFIX = arg[3], arg[4], arg[5], arg[6]
local FIRST = math.tointeger(tonumber(arg[7] or ""))
local COUNT = math.tointeger(tonumber(arg[8] or ""))
local K = math.tointeger(tonumber(arg[9] or ""))
local WINDOW = math.tointeger(tonumber(arg[10] or ""))
local GOFILE = arg[11]
local IN_FLIGHT = 64
local RESOURCE = "b"
local URL = os.getenv("LXMPP_BENCH_URL")
if URL == "" then URL = nil end
local TEXT = "the quick brown fox jumps over the lazy dog, then naps by the river bank"

local function die(fmt, ...)
  io.stderr:write("bench/server_load.lua ", tostring(MODE), ": ", string.format(fmt, ...), "\n")
  os.exit(1)
end

if (MODE ~= "idle" and MODE ~= "route") or not PORT or not CAFILE or not DOMAIN or not PASSWORD or not PREFIX
    or not FIRST or not COUNT or COUNT < 1 then
  die("usage: see the head of this file")
end
if MODE == "route" and (not K or K < 1 or not WINDOW or WINDOW < 1 or not GOFILE) then
  die("route needs K >= 1, WINDOW >= 1 and GOFILE")
end

local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local transport = require "lxmpp.transport"

-- Logs in accounts first .. first+n-1 (at most IN_FLIGHT at a time);
-- returns the clients by index.
local ROUTE_KEEPALIVE = nil
if MODE == "route" then ROUTE_KEEPALIVE = false end

local function login_all(first, n)
  local clients, next_i, running, failed = {}, first, 0, nil
  local done = lxmpp.task.waiter("logins")
  local function one(i)
    local c, msg, cond = lxmpp.connect({
      jid = ("%s%d@%s/%s"):format(PREFIX, i, DOMAIN, RESOURCE), password = PASSWORD,
      host = "127.0.0.1", port = not URL and PORT or nil, cafile = CAFILE, timeout = 120,
      url = URL, tls = URL and URL:match("^ws:") and "none" or nil,
      -- no XEP-0198, as against Prosody (no mod_smacks there): the routing
      -- clients count stanzas in the connection's own handler, past the
      -- session, which would never answer the server's <r/>; the server
      -- then holds everything past limits.sm_queue and routing stops
      stream_management = false,
      -- the same handler never updates the session's last receive time, so
      -- its keepalive would call the link dead 60 s after login, mid-routing
      -- whenever a phase runs that long (Prosody under load, Valgrind)
      keepalive = ROUTE_KEEPALIVE,
    })
    if not c then
      failed = failed or ("%s%d: %s (%s)"):format(PREFIX, i, tostring(msg), tostring(cond))
    else
      c:send_presence()
      clients[i] = c
    end
  end
  local function worker()
    while next_i < first + n and not failed do
      local i = next_i
      next_i = next_i + 1
      one(i)
    end
    running = running - 1
    if running == 0 then done:wake(true) end
  end
  for _ = 1, math.min(IN_FLIGHT, n) do
    running = running + 1
    lxmpp.spawn(worker)
  end
  done:wait()
  if failed then die("login failed: %s", failed) end
  return clients
end

local function idle()
  local clients = login_all(FIRST, COUNT)
  for _, c in pairs(clients) do
    c:on("disconnected", function(why) die("%s disconnected: %s", tostring(c.jid), tostring(why)) end)
  end
  local _, c1 = next(clients)
  io.stdout:write(("ready %d %s %s\n"):format(COUNT, tostring(c1.sasl_mechanism),
    tostring((c1.conn.c:tls_info() or {}).cipher)))
  io.stdout:flush()
  while true do lxmpp.sleep(3600) end
end

local function route()
  local clients = login_all(FIRST, 2 * COUNT)
  local total, received = 2 * COUNT * K, 0
  local finished = lxmpp.task.waiter("route")
  local failure
  -- per client i: sent[i] messages written, got[i] received from its partner
  local sent, got, msg_of, conn_of, partner = {}, {}, {}, {}, {}
  for p = 0, COUNT - 1 do
    local a, b = FIRST + 2 * p, FIRST + 2 * p + 1
    partner[a], partner[b] = b, a
  end
  local function fill(i)
    local n = WINDOW - (sent[i] - got[partner[i]])
    if sent[i] + n > K then n = K - sent[i] end
    if n <= 0 then return end
    local ok, msg, cond
    if URL then
      for _ = 1, n do
        ok, msg, cond = conn_of[i]:write(msg_of[i])
        if not ok then break end
      end
    else
      ok, msg, cond = conn_of[i]:write(string.rep(msg_of[i], n))
    end
    if not ok then
      failure = failure or ("write failed: %s (%s)"):format(tostring(msg), tostring(cond))
      return finished:wake(true)
    end
    sent[i] = sent[i] + n
  end
  for i, c in pairs(clients) do
    sent[i], got[i] = 0, 0
    conn_of[i] = c.conn.c
    msg_of[i] = ("<message to='%s%d@%s/%s' type='chat'><body>%s</body></message>"):format(
      PREFIX, partner[i], DOMAIN, RESOURCE, TEXT)
    if URL then msg_of[i] = transport.websocket.qualify(msg_of[i]) end
    local from = partner[i]
    c:on("disconnected", function(why)
      failure = failure or ("%s disconnected: %s"):format(tostring(c.jid), tostring(why))
      finished:wake(true)
    end)
    -- past login only chat messages arrive: count them in the connection's
    -- stanza event, without the client's dispatch
    c.conn:on("stanza", function(s)
      if s.name ~= "message" then return end
      if s.attr.type == "error" then
        failure = failure or ("error message: " .. tostring(s))
        return finished:wake(true)
      end
      got[i] = got[i] + 1
      received = received + 1
      if got[i] > K then failure = failure or "more messages than sent" end
      if received == total then return finished:wake(true) end
      -- our partner's window: refill when half of it has arrived
      if WINDOW - (sent[from] - got[i]) >= WINDOW // 2 then fill(from) end
    end)
  end
  io.stdout:write("ready\n")
  io.stdout:flush()
  while not io.open(GOFILE) do lxmpp.sleep(0.002) end
  local t0, cpu0 = core.now(), os.clock()
  for i in pairs(clients) do fill(i) end
  local t = core.timer(600, finished)
  finished:wait()
  t:stop()
  if failure then die("%s", failure) end
  local wall, cpu = core.now() - t0, os.clock() - cpu0
  io.stdout:write(("result received=%d wall=%.6f cpu=%.6f\n"):format(received, wall, cpu))
  io.stdout:flush()
  os.exit(0)
end

lxmpp.run(MODE == "idle" and idle or route)
