-- bench/echo_lx.lua: one client of bench/echo.lua, written with lxmpp: the
-- echo bot or the pinger. bench/echo_slix.py is the same program with slixmpp;
-- the two speak the same little protocol and print the same result line.
--
--   lua5.4 bench/echo_lx.lua echo JID PASSWORD PORT CAFILE
--   lua5.4 bench/echo_lx.lua ping JID PASSWORD PORT CAFILE N ECHO_JID
--
-- Both connect to 127.0.0.1:PORT (STARTTLS, the server's certificate
-- verified against CAFILE, SCRAM), send initial presence and print "online".
--
-- echo  echoes every chat message back to its sender, as examples/echo.lua
--       does. "bench:start" (not echoed) starts its CPU count, "bench:quit"
--       stops it; then it prints its result line and closes.
-- ping  sends "bench:warmup" until it comes back (the echo bot is there),
--       then "bench:start", then N messages "<i> <text>" back to back
--       without waiting for echoes (pipelined; when the output queue is full
--       it waits for it to drain, nothing is dropped). It counts the echoes,
--       each i exactly once, until all N are back, then sends "bench:quit",
--       prints its result line and closes.
--
-- The result line: "result lib=lxmpp role=ping n=N wall=S cpu=S cpu_total=S
-- ...": cpu is user+system CPU seconds of this process (os.clock, i.e.
-- clock(3): CLOCK_PROCESS_CPUTIME_ID, what getrusage(RUSAGE_SELF) sums) from
-- "bench:start" to the last echo (ping) or to "bench:quit" (echo); cpu_total
-- is the whole process, start-up and login included; wall (ping only) is
-- from just before the first of the N messages to the arrival of the last
-- echo, on a monotonic clock. Any failure: a message on stderr, exit status 1.

local common = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/common.lua")
local ROLE, JID, PASSWORD, PORT, CAFILE = arg[1], arg[2], arg[3], common.integer(arg[4] or ""), arg[5]
local N = common.integer(arg[6] or "")
local PEER = arg[7]
local TIMEOUT = 60            -- seconds without progress before a wait fails
-- the text after the number in every message (same in echo_slix.py)
local TEXT = "the quick brown fox jumps over the lazy dog, then naps by the river bank"

local function die(fmt, ...)
  io.stderr:write("bench/echo_lx.lua ", tostring(ROLE), ": ", string.format(fmt, ...), "\n")
  os.exit(1)
end

if ROLE ~= "echo" and ROLE ~= "ping" then
  die("usage: echo_lx.lua echo JID PASSWORD PORT CAFILE | ping JID PASSWORD PORT CAFILE N ECHO_JID")
end
if not JID or not PASSWORD or not PORT or not CAFILE then die("missing arguments") end
if ROLE == "ping" and (not N or N < 1 or not PEER) then die("ping needs N >= 1 and ECHO_JID") end

local ok_load, lxmpp = pcall(require, "lxmpp")
if not ok_load then die("cannot load lxmpp (set LUA_PATH/LUA_CPATH as the Makefile does):\n%s", lxmpp) end
local core = require "lxmpp.core"

-- handlers kick the main task when something it waits for happens, or fail;
-- a wait fails after TIMEOUT seconds without progress
local watch = common.watch(TIMEOUT, function(msg) die("%s", msg) end)
local kick, fail, wait_until = watch.kick, watch.fail, watch.wait_until

-- Sends a chat message, waiting while the output queue is full (the
-- connection's "drain" event, or at worst max_wait).
local drained = false
local stalls = 0
local function send(c, to, body, typ)
  while true do
    local ok, msg, cond = c:send_message(to, body, typ)
    if ok then return end
    if cond ~= "resource-constraint" then die("send failed: %s (%s)", tostring(msg), tostring(cond)) end
    stalls = stalls + 1
    drained = false
    wait_until(function() return drained end, "waiting for the output queue to drain", nil, 0.01)
  end
end

local result = {}
local closing = false   -- we are ending the stream ourselves

local function connect()
  local c, msg, cond = lxmpp.connect({
    jid = JID, password = PASSWORD, host = "127.0.0.1", port = PORT, cafile = CAFILE,
  })
  if not c then die("cannot connect as %s: %s (%s)", JID, tostring(msg), tostring(cond)) end
  c.conn:on("drain", function() drained = true; kick() end)
  c:on("disconnected", function(why) if not closing then fail("disconnected: " .. tostring(why)) end end)
  c:send_presence()
  local tls = c.conn.c:tls_info() or {}
  io.stdout:write(("online %s %s %s %s\n"):format(tostring(c.jid), tostring(c.sasl_mechanism),
    tostring(tls.version), tostring(tls.cipher)))
  io.stdout:flush()
  return c
end

local function echo_bot()
  local c = connect()
  local counting, done = false, false
  local echoed, cpu0, cpu1 = 0, nil, nil
  c:on("message", function(m)
    local body = m:get_child_text("body")
    if not body or m.attr.type == "error" then return end
    if body == "bench:start" then
      counting, echoed, cpu0 = true, 0, os.clock()
    elseif body == "bench:quit" then
      cpu1 = os.clock()
      counting, done = false, true
      kick()
    else
      if counting then echoed = echoed + 1 end
      local ok, msg, cond = c:send_message(m.attr.from, body, m.attr.type)
      while not ok do     -- the queue is full: wait a little and try again, never drop
        if cond ~= "resource-constraint" then return fail(("echo failed: %s (%s)"):format(msg, cond)) end
        stalls = stalls + 1
        lxmpp.sleep(0.001)
        ok, msg, cond = c:send_message(m.attr.from, body, m.attr.type)
      end
    end
  end)
  wait_until(function() return done end, "waiting for bench:quit", function() return echoed end, 5)
  if not cpu0 then die("bench:quit came before bench:start") end
  result = { role = "echo", echoed = echoed, cpu = cpu1 - cpu0, stalls = stalls }
  return c
end

local function pinger()
  local c = connect()
  local seen, got, dups, warm = {}, 0, 0, false
  local t1, cpu1
  c:on("message", function(m)
    local body = m:get_child_text("body")
    if not body then return end
    if m.attr.type == "error" then return fail("error message: " .. tostring(m)) end
    local i = common.integer(body:match("^%d+"))
    if i then
      if i < 1 or i > N then return fail("echo of an unknown message: " .. body) end
      if seen[i] then
        dups = dups + 1
        return fail("echo of message " .. i .. " arrived twice")
      end
      seen[i] = true
      got = got + 1
      if got == N then
        t1, cpu1 = core.now(), os.clock()
        kick()
      end
    elseif body == "bench:warmup" then
      warm = true
      kick()
    else
      fail("unexpected message: " .. body)
    end
  end)
  -- the echo bot answers
  for _ = 1, 20 do
    send(c, PEER, "bench:warmup")
    local deadline = core.now() + 1
    wait_until(function() return warm or core.now() > deadline end, "warm-up", nil, 0.2)
    if warm then break end
  end
  if not warm then die("the echo bot %s does not answer", PEER) end

  -- the timed part
  collectgarbage("collect")
  send(c, PEER, "bench:start")
  local t0, cpu0 = core.now(), os.clock()
  for i = 1, N do send(c, PEER, i .. " " .. TEXT) end
  wait_until(function() return got == N end, "waiting for the echoes", function() return got end, 5)
  send(c, PEER, "bench:quit")
  result = { role = "ping", n = N, echoes = got, dups = dups, wall = t1 - t0, cpu = cpu1 - cpu0, stalls = stalls }
  return c
end

lxmpp.run(function()
  local c = ROLE == "echo" and echo_bot() or pinger()
  result.cpu_total = os.clock()
  closing = true
  c:close()
end)

local keys = {}
for k in pairs(result) do keys[#keys + 1] = k end
table.sort(keys)
local parts = { "result", "lib=lxmpp" }
for _, k in ipairs(keys) do
  local v = result[k]
  parts[#parts + 1] = k .. "=" .. (common.has_fraction(v) and ("%.6f"):format(v) or tostring(v))
end
io.stdout:write(table.concat(parts, " "), "\n")
io.stdout:flush()
os.exit(0)
