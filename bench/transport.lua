-- bench/transport.lua: stanzas through a TLS connection pair on loopback,
-- lxmpp's whole transport (conn:write -> TLS encrypt -> libuv -> socket ->
-- TLS decrypt -> stream parser -> one Lua call per stanza), against what
-- OpenSSL's own bulk cipher does for the negotiated cipher (`openssl speed`).
--
--   lua5.4 bench/transport.lua [MB]           (normally via `make bench-transport`)
--
-- MB                         megabytes (10^6 bytes) of serialized stanzas to
--                            send (default 200)
-- LXMPP_BENCH_STANZA         serialized size of every stanza, bytes (default 1024)
-- LXMPP_BENCH_BATCH          stanzas per conn:write (default 1: one write per
--                            stanza, what Session:send does)
-- LXMPP_BENCH_TLS            highest TLS version both ends allow, "1.2" or
--                            "1.3" (default: the library's highest)
-- LXMPP_BENCH_REPS           runs, best kept, for lxmpp and for each
--                            `openssl speed` figure (default 3)
-- LXMPP_BENCH_SPEED_SECONDS  seconds per `openssl speed` run (default 2)
-- LXMPP_SKIP_SPEED=1         development only: no `openssl speed` (no ceiling)
-- LXMPP_BENCH_PERF_CTL       a perf control FIFO: "enable" is written to it
--                            right before the timed part, "disable" right
--                            after, so only the transfer is profiled:
--   mkfifo /tmp/ctl && perf record -D -1 --control fifo:/tmp/ctl -e cpu-clock -g \
--     env LXMPP_BENCH_PERF_CTL=/tmp/ctl LXMPP_SKIP_SPEED=1 lua5.4 bench/transport.lua 50
--
-- Method: one process, one lxmpp.run. A listener on 127.0.0.1 (port 0)
-- starts TLS on the connection it accepts (conn.c:starttls with the test
-- PKI's example.test certificate, spec/support/pki.lua) and parses it; a
-- client connects, starts TLS for "example.test" trusting the test CA, waits
-- for "tls-done", then writes a stream header and the stanzas. The stanzas
-- are chat messages built with lxmpp.stanza (to/from/type/id, a body with
-- escaped and non-ASCII text, an XEP-0085 <active/>), all of exactly the
-- same serialized size; 64 of them, with different ids, are serialized once
-- before timing and sent in turn. The client respects backpressure: when
-- conn:write returns nil with "resource-constraint" (the bounded output
-- queue is full) it waits for the "drain" event, then goes on. The server's
-- stanza handler counts stanzas and checks each id (the order), and the
-- bodies of the first 64. This is done LXMPP_BENCH_REPS times, each time
-- with a new client connection and TLS session; the fastest run is reported.
--
-- Timing: wall (core.now, a monotonic clock) and CPU (os.clock: user + system
-- time of the whole process) from just before the first byte is written
-- (after the handshake and a full garbage collection) to the moment the
-- server's handler sees the last stanza. The client encrypts, the server
-- decrypts and parses, and the kernel copies the bytes across loopback, all
-- in this process and on this one thread. MB/s counts the plaintext stanza
-- bytes only (not the stream header nor TLS overhead).
--
-- Ceiling: `openssl speed -evp <cipher> -bytes 16384` for the cipher that
-- was negotiated (aes-256-gcm for TLS_AES_256_GCM_SHA384, ...): 16384 bytes
-- is the largest TLS record; bytes per second of user CPU time, one core,
-- best of LXMPP_BENCH_REPS. It only encrypts; every byte here is encrypted
-- once and decrypted once on the same core, so the fair ceiling is half of
-- it. Both ratios are printed. The 1024-byte figure is printed too, for
-- reference: each conn:write becomes its own TLS record.
--
-- Everything is closed at the end: the benchmark fails if any loop handle
-- or task is left (core.loop_handles(), task.count()).

local MB = tonumber(arg[1] or "200")
local STANZA = math.tointeger(tonumber(os.getenv("LXMPP_BENCH_STANZA") or "1024"))
local BATCH = math.tointeger(tonumber(os.getenv("LXMPP_BENCH_BATCH") or "1"))
local TLS_MAX = os.getenv("LXMPP_BENCH_TLS")
local REPS = math.tointeger(tonumber(os.getenv("LXMPP_BENCH_REPS") or "3"))
local SPEED_SECONDS = math.tointeger(tonumber(os.getenv("LXMPP_BENCH_SPEED_SECONDS") or "2"))
local SKIP_SPEED = os.getenv("LXMPP_SKIP_SPEED") == "1"
local PERF_CTL = os.getenv("LXMPP_BENCH_PERF_CTL")
local DOMAIN = "example.test"
local RING_MIN = 64          -- distinct stanzas sent in turn
local TIMEOUT = 60           -- seconds any single wait may take before the run fails

local function die(fmt, ...)
  io.stderr:write("bench/transport.lua: ", string.format(fmt, ...), "\n")
  os.exit(1, true)   -- closes the Lua state: the test PKI removes its directory
end

if not MB or MB <= 0 then die("MB must be a positive number, got %q", tostring(arg[1])) end
if not STANZA or STANZA < 300 then die("LXMPP_BENCH_STANZA must be an integer >= 300") end
if not BATCH or BATCH < 1 or BATCH > 1024 then die("LXMPP_BENCH_BATCH must be an integer in 1..1024") end
if TLS_MAX and TLS_MAX ~= "1.2" and TLS_MAX ~= "1.3" then die("LXMPP_BENCH_TLS must be 1.2 or 1.3") end
if not REPS or REPS < 1 then die("LXMPP_BENCH_REPS must be a positive integer") end
if not SPEED_SECONDS or SPEED_SECONDS < 1 then die("LXMPP_BENCH_SPEED_SECONDS must be a positive integer") end

local common = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/common.lua")

local first_line = common.first_line

---------------------------------------------------------------------------
-- Loading. Anything missing is fatal.

local ok_load, lxmpp = pcall(require, "lxmpp")
if not ok_load then
  die("cannot load lxmpp (set LUA_PATH/LUA_CPATH, or run `make bench-transport`):\n%s", lxmpp)
end
local core = require "lxmpp.core"
local net = require "lxmpp.net"
local task = lxmpp.task

local ok_pki, pki = pcall(function() return require("spec.support.pki").get() end)
if not ok_pki then
  die("cannot make the test PKI (spec/support/pki.lua, needs the openssl command; run from the repository root):\n%s",
    pki)
end

---------------------------------------------------------------------------
-- The stanzas: RING chat messages of exactly STANZA bytes each, serialized
-- once; they go out in units of BATCH stanzas (one conn:write each).

local RING = BATCH * ((RING_MIN + BATCH - 1) // BATCH)
local N = math.ceil(MB * 1e6 / STANZA)
N = BATCH * ((N + BATCH - 1) // BATCH)

local HEADER = "<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
  .. " xmlns:stream='http://etherx.jabber.org/streams' to='" .. DOMAIN .. "' version='1.0'>"
local FOOTER = "</stream:stream>"

local ids, bodies, wire = {}, {}, {}
do
  local prefix = "Ça & ça, <tout> va — 好 🙂. "
  local filler = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor. ")
    :rep(STANZA // 40 + 2)
  local function build(k, body)
    return lxmpp.stanza.message({
      to = "romeo@" .. DOMAIN .. "/orchard", from = "juliet@" .. DOMAIN .. "/balcony",
      type = "chat", id = ("bench-%06d"):format(k),
    }, body):tag("active", { xmlns = "http://jabber.org/protocol/chatstates" }):up()
  end
  for k = 1, RING do
    local base = #tostring(build(k, prefix))
    local body = prefix .. filler:sub(1, STANZA - base)
    local xml = tostring(build(k, body))
    if #xml ~= STANZA then die("stanza %d is %d bytes, wanted %d", k, #xml, STANZA) end
    ids[k], bodies[k], wire[k] = ("bench-%06d"):format(k), body, xml
  end
end
local units = {}
for u = 1, RING // BATCH do
  units[u] = table.concat(wire, "", (u - 1) * BATCH + 1, u * BATCH)
end
local NUNITS = N // BATCH

-- perf_ctl("enable"/"disable"): tells `perf record --control` (if asked for).
local perf_ctl = function() end
if PERF_CTL and PERF_CTL ~= "" then
  local f = io.open(PERF_CTL, "w")
  if not f then die("cannot open LXMPP_BENCH_PERF_CTL %s", PERF_CTL) end
  f:setvbuf("no")
  perf_ctl = function(cmd) f:write(cmd, "\n") end
end

---------------------------------------------------------------------------
-- The runs: one listener, REPS clients one after the other, each on a
-- fresh connection and TLS session (the handshake is not timed).

local function transfers()
  -- handlers kick the main task or fail; a wait fails after TIMEOUT s
  local watch = common.watch(TIMEOUT, function(msg) error(msg, 0) end)
  local kick, fail, wait_until = watch.kick, watch.fail, watch.wait_until

  local server_ctx = assert(core.tls_context({
    mode = "server", cert = pki.certs.good.cert, key = pki.certs.good.key, max_version = TLS_MAX,
  }))
  local client_ctx = assert(core.tls_context({ mode = "client", cafile = pki.ca, max_version = TLS_MAX }))

  -- server side: srv is the state of the current run's accepted connection
  local srv
  local listener = assert(net.listen("127.0.0.1", 0, function(conn)
    if not srv or srv.conn then conn:abort() return end   -- only the benchmark's client
    local me = srv
    me.conn = conn
    conn:on("tls-failed", function(msg, cond) fail(("server: TLS failed: %s (%s)"):format(msg, cond)) end)
    conn:on("open", function() me.opened = true end)
    conn:on("stanza", function(s)
      local n = me.n + 1
      me.n = n
      local k = (n - 1) % RING + 1
      if s.attr.id ~= ids[k] then
        fail(("server: stanza %d has id %s, expected %s"):format(n, tostring(s.attr.id), ids[k]))
      elseif n <= RING and s:get_child_text("body") ~= bodies[k] then
        fail(("server: stanza %d has the wrong body"):format(n))
      end
      if n == N then
        me.t1, me.c1 = core.now(), os.clock()
        kick()
      end
    end)
    conn:on("parse-error", function(msg, cond) fail(("server: parse error: %s (%s)"):format(msg, cond)) end)
    conn:on("read-error", function(msg) fail("server: read error: " .. tostring(msg)) end)
    conn:on("stream-close", function() me.stream_closed = true; conn:close() end)
    conn:on("eof", function() conn:close() end)
    conn:on("closed", function() me.gone = true; kick() end)
    local ok, msg = conn.c:starttls(server_ctx)
    if not ok then fail("server: starttls: " .. tostring(msg)) return end
    conn:parse()
  end))

  local function one_run()
    local r = {}
    srv = { n = 0 }
    local c = assert(net.connect("127.0.0.1", listener:port()))
    local tls_done = false
    local drained            -- set by "drain" after a refused write
    c:on("tls-done", function() tls_done = true; kick() end)
    c:on("tls-failed", function(msg, cond) fail(("client: TLS failed: %s (%s)"):format(msg, cond)) end)
    c:on("write-error", function(msg) fail("client: write error: " .. tostring(msg)) end)
    c:on("drain", function() drained = true; kick() end)
    local ok, msg = c.c:starttls(client_ctx, DOMAIN)
    if not ok then error("client: starttls: " .. tostring(msg), 0) end
    wait_until(function() return tls_done end, "TLS handshake")
    wait_until(function() return srv.conn ~= nil end, "accepting")
    r.tls = assert(c.c:tls_info(), "no tls_info after tls-done")

    -- the timed part
    local stalls = 0
    local info0 = c:info()
    collectgarbage("collect")
    collectgarbage("collect")
    perf_ctl("enable")
    local t0, c0 = core.now(), os.clock()
    assert(c:write(HEADER))
    local u = 0
    while u < NUNITS do
      local wok, wmsg, wcond = c:write(units[u % #units + 1])
      if wok then
        u = u + 1
      elseif wcond == "resource-constraint" then
        stalls = stalls + 1
        drained = false
        wait_until(function() return drained end, "waiting for drain")
      else
        error(("client: write failed: %s (%s)"):format(tostring(wmsg), tostring(wcond)), 0)
      end
    end
    wait_until(function() return srv.t1 ~= nil end, "waiting for the last stanza")
    perf_ctl("disable")
    r.wall, r.cpu = srv.t1 - t0, srv.c1 - c0
    r.stalls = stalls

    local info = c:info()
    r.writes = info.writes - info0.writes
    r.wire_bytes = info.bytes_out - info0.bytes_out
    r.stanzas = srv.n
    r.opened = srv.opened

    -- closing: the client ends the stream and closes (waits until its socket
    -- is closed); the server closes on </stream:stream>
    assert(c:write(FOOTER))
    local cok, cmsg = c:close()
    if not cok then error("client: close: " .. tostring(cmsg), 0) end
    wait_until(function() return srv.gone end, "waiting for the server side to close")
    r.stream_closed = srv.stream_closed
    srv = nil
    return r
  end

  local runs = {}
  for i = 1, REPS do runs[i] = one_run() end
  listener:close()
  server_ctx:close()
  client_ctx:close()
  return runs
end

---------------------------------------------------------------------------
-- The ceiling: `openssl speed -evp`

-- The EVP cipher `openssl speed -evp` takes for a TLS cipher suite name
-- (TLS 1.3 "TLS_AES_256_GCM_SHA384" or TLS 1.2 "ECDHE-ECDSA-AES256-GCM-SHA384").
local function evp_name(suite)
  local s = suite:upper()
  if s:find("CHACHA20", 1, true) then return "chacha20-poly1305" end
  local bits = s:match("AES_?(%d+)[_%-]GCM")
  if bits then return "aes-" .. bits .. "-gcm" end
  bits = s:match("AES_?(%d+)[_%-]CCM")
  if bits then return "aes-" .. bits .. "-ccm" end
  return nil
end

-- Bytes/s of `openssl speed -evp name -bytes size`, best of REPS runs; and
-- the command.
local function openssl_speed(name, size)
  local cmd = ("openssl speed -evp %s -bytes %d -seconds %d"):format(name, size, SPEED_SECONDS)
  local best = 0
  for _ = 1, REPS do
    local p = assert(io.popen(cmd .. " 2>/dev/null"))
    local out = p:read("*a")
    local ok = p:close()
    local sizes, v = {}, nil
    for line in out:gmatch("[^\n]+") do
      if line:match("^type%s") then
        for n in line:gmatch("(%d+) bytes") do sizes[#sizes + 1] = tonumber(n) end
      elseif #sizes > 0 and line:lower():find(name, 1, true) == 1 then
        local i = 0
        for num, k in line:sub(#name + 1):gmatch("(%d+%.?%d*)(k?)") do
          i = i + 1
          if sizes[i] == size then v = tonumber(num) * (k == "k" and 1000 or 1) end
        end
      end
    end
    if not ok or not v then error(("`%s` gave no %d-byte figure:\n%s"):format(cmd, size, out), 0) end
    if v > best then best = v end
  end
  return best, cmd
end

---------------------------------------------------------------------------
-- Main

local function main()
  local load_before
  do
    local f = io.open("/proc/loadavg")
    if f then load_before = f:read("*l"):match("^(%S+ %S+ %S+)"); f:close() end
  end

  local runs
  lxmpp.run(function() runs = transfers() end)
  collectgarbage("collect")
  collectgarbage("collect")
  if core.loop_handles() ~= 0 then error(("%d loop handle(s) left open"):format(core.loop_handles()), 0) end
  if task.count() ~= 0 then error(("%d task(s) left running"):format(task.count()), 0) end
  local best
  for i, r in ipairs(runs) do
    if r.stanzas ~= N then error(("run %d: the server parsed %d stanzas, %d were sent"):format(i, r.stanzas, N), 0) end
    if not r.opened then error(("run %d: the server never saw the stream header"):format(i), 0) end
    if not r.stream_closed then error(("run %d: the server never saw </stream:stream>"):format(i), 0) end
    if not best or r.wall < best.wall then best = r end
  end

  local suite = best.tls.cipher or "?"
  local evp = evp_name(suite)
  local speed, speed1k, speed_cmd
  if not SKIP_SPEED then
    if not evp then error("no `openssl speed` cipher known for " .. suite, 0) end
    speed, speed_cmd = openssl_speed(evp, 16384)
    speed1k = openssl_speed(evp, 1024)
  end

  -- report
  local lua_version = common.lua_version()
  local cpu, ncpu = common.cpu()
  local ossl = first_line("openssl version") or "openssl ?"

  local grouped = common.grouped
  local bytes = N * STANZA
  local function mbs(s) return bytes / 1e6 / s end
  local all_wall = {}
  for i, r in ipairs(runs) do all_wall[i] = string.format("%.1f", mbs(r.wall)) end

  print("lxmpp transport benchmark (bench/transport.lua)")
  print(string.format("  %s; lxmpp %s; %s", lua_version, tostring(lxmpp.VERSION), ossl))
  if cpu then
    print(string.format("  CPU: %s, %d logical CPUs; load average before the runs: %s", cpu, ncpu,
      load_before or "?"))
  end
  print(string.format("  TLS: %s %s over 127.0.0.1, certificate verified: %s",
    tostring(best.tls.version), suite, tostring(best.tls.verified)))
  print(string.format("  sent: %s chat messages of %s bytes (%d distinct), %d per conn:write,"
    .. " %.1f MB of stanzas", grouped(N), grouped(STANZA), RING, BATCH, bytes / 1e6))
  print(string.format("  wire: %.1f MB of TLS records in %s socket writes (avg %.0f KiB);"
    .. " %d waits for \"drain\"", best.wire_bytes / 1e6, grouped(best.writes),
    best.wire_bytes / math.max(best.writes, 1) / 1024, best.stalls))
  print("  one process, one thread: the client encrypts, the server decrypts and parses,")
  print("  and the kernel copies across loopback, all on the same core.")
  print(string.format("  best of %d runs (MB/s, wall: %s), each a new connection; handshake not timed",
    REPS, table.concat(all_wall, ", ")))
  print()
  print(string.format("  %-44s %9s %12s %9s", "lxmpp, first byte to last stanza parsed", "MB/s", "stanzas/s", "s"))
  print(string.format("  %-44s %9.1f %12s %9.3f", "  wall time", mbs(best.wall), grouped(N / best.wall), best.wall))
  print(string.format("  %-44s %9.1f %12s %9.3f", ("  CPU time (%.0f%% of wall)"):format(100 * best.cpu / best.wall),
    mbs(best.cpu), grouped(N / best.cpu), best.cpu))
  print()
  if speed then
    local ceil = speed / 1e6
    print(string.format("  ceiling: `%s`, best of %d", speed_cmd, REPS))
    print("  (one core, encryption only, per second of user CPU time)")
    print(string.format("  %-44s %9.1f", "  16384-byte blocks", ceil))
    print(string.format("  %-44s %9.1f", "  1024-byte blocks (for reference)", speed1k / 1e6))
    print(string.format("  %-44s %9.1f", "  half: encrypt + decrypt on one core", ceil / 2))
    print()
    print(string.format("  %-44s %9s %9s", "ratio lxmpp / ceiling", "wall", "CPU"))
    print(string.format("  %-44s %8.1f%% %8.1f%%", "  / openssl speed",
      100 * mbs(best.wall) / ceil, 100 * mbs(best.cpu) / ceil))
    print(string.format("  %-44s %8.1f%% %8.1f%%", "  / (openssl speed / 2)  (the fair one)",
      200 * mbs(best.wall) / ceil, 200 * mbs(best.cpu) / ceil))
  else
    print(string.format("  ceiling: skipped (LXMPP_SKIP_SPEED=1); would be `openssl speed -evp %s`", tostring(evp)))
  end
  print()
  print("  closed cleanly: 0 loop handles, 0 tasks left")
end

local ok, err = xpcall(main, debug.traceback)
if not ok then die("%s", err) end
