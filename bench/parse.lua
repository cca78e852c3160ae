-- bench/parse.lua: stream parsing and stanza serialization, lxmpp against
-- Prosody (util.xmppstream / util.stanza, same Lua) and a bare C expat loop.
--
--   lua5.4 bench/parse.lua [N] [FLOOR_BINARY]        (normally via `make bench`)
--
-- N                    stanzas in the generated stream (default 100000)
-- FLOOR_BINARY         compiled bench/expat_floor.c; default $LXMPP_EXPAT_FLOOR,
--                      else it is compiled into a temporary directory with $CC (cc)
-- LXMPP_BENCH_REPS     repetitions per measurement, best one kept (default 5)
-- LXMPP_BENCH_SEED     generator seed (default 42)
-- LXMPP_BENCH_GC       "default" (Lua's own settings, the default) or "prosody":
--                      incremental with pause 105, step multiplier 500, what
--                      Prosody's startup sets; either way the same for all
-- LXMPP_SKIP=1         skip the lxmpp rows (development; and the Prosody run below)
-- LXMPP_PROSODY_LUA    the Lua 5.4 that measures Prosody when this script runs
--                      under another Lua (default lua5.4)
--
-- On LuaJIT (`make bench-parse LUA=luajit`): lxmpp is measured on LuaJIT,
-- Prosody on Lua 5.4, the Lua it runs on (its C helpers are built for 5.4):
-- this script runs itself under LXMPP_PROSODY_LUA with LXMPP_SKIP=1 on the
-- same stream (same N and seed) and reports that run's Prosody rows beside
-- lxmpp's; each run also times the floor program, so both are on one scale.
--
-- Method: the stream (bench/gen_stream.lua) is generated once, written to a
-- temporary file for the floor program, and split into 16 KiB chunks before
-- any timing. Every parser gets the same bytes in the same chunks. The runs
-- are interleaved: each of LXMPP_BENCH_REPS rounds runs the floor program,
-- Prosody and lxmpp once (the two Lua parsers in alternating order), so a
-- shared machine that slows down for a while slows all of them alike; each
-- figure is the best round, CPU time (os.clock in Lua, clock() in C), with a
-- full garbage collection before each run; the garbage a run creates is
-- collected during the run and counts against it. Timed parse runs only count
-- stanzas; the stanzas used for the serialization runs come from separate,
-- untimed parses.

local common = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/common.lua")
local N = common.integer(arg[1] or "100000")
local floor_bin = arg[2] or os.getenv("LXMPP_EXPAT_FLOOR")
local REPS = common.integer(os.getenv("LXMPP_BENCH_REPS") or "5")
local SEED = common.integer(os.getenv("LXMPP_BENCH_SEED") or "42")
local SKIP_LXMPP = os.getenv("LXMPP_SKIP") == "1"
local GC = os.getenv("LXMPP_BENCH_GC") or "default"
local CHUNK = 16 * 1024
local STANZA_SIZE_LIMIT = 262144 -- as lxmpp's option below and Prosody's c2s_stanza_size_limit default

local function die(fmt, ...)
  io.stderr:write("bench/parse.lua: ", string.format(fmt, ...), "\n")
  os.exit(1)
end

if not N or N < 1 then die("N must be a positive integer, got %q", tostring(arg[1])) end
if not REPS or REPS < 1 then die("LXMPP_BENCH_REPS must be a positive integer") end
if not SEED then die("LXMPP_BENCH_SEED must be an integer") end
if GC ~= "default" and GC ~= "prosody" then die("LXMPP_BENCH_GC must be default or prosody") end

local script_dir = (arg[0] or ""):match("^(.*)[/\\][^/\\]*$") or "."

local shell_quote = common.quote

local first_line = common.first_line

---------------------------------------------------------------------------
-- Loading. Anything missing is fatal: a benchmark that quietly leaves a
-- column out is worse than none.

-- Prosody in this process only on Lua 5.4; else in a run of its own (above)
local PROSODY_HERE = _VERSION == "Lua 5.4" and not rawget(_G, "jit")
local PROSODY_LUA = os.getenv("LXMPP_PROSODY_LUA") or "lua5.4"
if not PROSODY_HERE and SKIP_LXMPP then die("LXMPP_SKIP=1 measures only Prosody: run it under Lua 5.4") end

local lxmpp
if not SKIP_LXMPP then
  local ok, mod = pcall(require, "lxmpp")
  if not ok then die("cannot load lxmpp (set LUA_PATH/LUA_CPATH, or run `make bench`):\n%s", mod) end
  lxmpp = mod
end

-- Prosody's modules are named "util.xmppstream" etc. below /usr/lib/prosody;
-- its C helpers (util/encodings.so, ...) sit beside them. Prepended, so that no
-- other "util.*" on the path can shadow them. lxp (LuaExpat) comes from the
-- ordinary Lua 5.4 cpath.
local PROSODY = os.getenv("LXMPP_PROSODY_DIR") or "/usr/lib/prosody"
local xmppstream, lxp
if PROSODY_HERE then
  package.path = PROSODY .. "/?.lua;" .. package.path
  package.cpath = PROSODY .. "/?.so;" .. package.cpath
  local prosody_ok
  prosody_ok, xmppstream = pcall(require, "util.xmppstream")
  if not prosody_ok then die("cannot load Prosody's util.xmppstream from %s:\n%s", PROSODY, xmppstream) end
  require "util.stanza" -- its __tostring is the serializer measured
  lxp = require "lxp"
end

local gen_ok, gen = pcall(dofile, script_dir .. "/gen_stream.lua")
if not gen_ok then die("cannot load %s/gen_stream.lua: %s", script_dir, gen) end

---------------------------------------------------------------------------
-- Input

local t_gen = os.clock()
local xml, kinds = gen(N, SEED)
t_gen = os.clock() - t_gen

local chunks = {}
for i = 1, #xml, CHUNK do chunks[#chunks + 1] = xml:sub(i, i + CHUNK - 1) end

local tmpfile = os.tmpname()
local tmpdir -- for a floor binary compiled here
local function cleanup()
  os.remove(tmpfile)
  if tmpdir then
    os.remove(tmpdir .. "/expat_floor")
    os.remove(tmpdir)
  end
end

local function main()
  do
    local f = assert(io.open(tmpfile, "wb"))
    assert(f:write(xml))
    assert(f:close())
  end

  ---------------------------------------------------------------------------
  -- Floor: the C program, run on the same file.

  if not floor_bin or floor_bin == "" then
    tmpdir = first_line("mktemp -d")
    if not tmpdir then error("mktemp -d failed") end
    floor_bin = tmpdir .. "/expat_floor"
    local cc = os.getenv("CC") or "cc"
    local cmd = string.format("%s -O2 -std=c99 -Wall -Wextra -pedantic -Werror %s -o %s -lexpat",
      cc, shell_quote(script_dir .. "/expat_floor.c"), shell_quote(floor_bin))
    if not common.execute(cmd) then error("compiling the floor program failed: " .. cmd) end
  end
  -- One run of the floor program: it parses the file `reps` times and reports
  -- the best.
  local function run_floor(reps)
    local out = {}
    local p = assert(io.popen(shell_quote(floor_bin) .. " " .. shell_quote(tmpfile) .. " " .. reps))
    for line in p:lines() do
      local k, v = line:match("^([%w_]+)=(.*)$")
      if k then out[k] = v end
    end
    local ok, how, code = p:close()
    if not ok then error(string.format("floor program %s failed (%s %s)", floor_bin, how, code)) end
    if not out.floor_best_sec then error("floor program printed no floor_best_sec") end
    if tonumber(out.floor_stanzas) ~= N then
      error(string.format("floor counted %s stanzas, generated %d", tostring(out.floor_stanzas), N))
    end
    return out
  end
  local floor = run_floor(1) -- warm-up, and the counts for the report

  ---------------------------------------------------------------------------
  -- Timing: rounds of interleaved runs. runs maps a name to fn() returning a
  -- count that must not change (or, for "floor", to a function returning its
  -- own best time and count); the best time of each is kept.

  if GC == "prosody" then collectgarbage("incremental", 105, 500) end

  local function interleaved(order, runs)
    local best, count = {}, {}
    for round = 1, REPS do
      local names = {}
      for i = 1, #order do names[i] = order[i] end
      if round % 2 == 0 then -- the last two (the Lua parsers or serializers) swap every other round
        local a, b = #names - 1, #names
        names[a], names[b] = names[b], names[a]
      end
      for _, what in ipairs(names) do
        local dt, c
        if what == "floor" then
          dt, c = runs[what]()
        else
          collectgarbage("collect")
          collectgarbage("collect")
          local t0 = os.clock()
          c = runs[what]()
          dt = os.clock() - t0
        end
        if count[what] and c ~= count[what] then
          error(string.format("%s: count changed between runs (%d, then %d)", what, count[what], c))
        end
        count[what] = c
        if not best[what] or dt < best[what] then best[what] = dt end
      end
    end
    for what, dt in pairs(best) do if dt <= 0 then best[what] = 1e-6 end end
    return best, count
  end

  ---------------------------------------------------------------------------
  -- lxmpp

  local function lxmpp_parse(keep)
    local n, opened, closed = 0, false, false
    local out = keep and {} or nil
    local on_stanza
    if keep then
      on_stanza = function(s) n = n + 1; out[n] = s end
    else
      on_stanza = function() n = n + 1 end
    end
    local p = lxmpp.stream_parser({
      stream_open = function() opened = true end,
      stanza = on_stanza,
      stream_close = function() closed = true end,
    }, { max_stanza_size = STANZA_SIZE_LIMIT })
    for i = 1, #chunks do
      local ok, msg, cond = p:feed(chunks[i])
      if not ok then
        error(string.format("lxmpp: feed failed at chunk %d: %s (%s)", i, tostring(msg), tostring(cond)))
      end
    end
    if not opened then error("lxmpp: stream_open never called") end
    if not closed then error("lxmpp: stream_close never called") end
    return n, out
  end

  ---------------------------------------------------------------------------
  -- Prosody, set up as mod_c2s does it: default_ns jabber:client, the c2s
  -- stanza size limit and max_elements, session.notopen until the header.

  local function prosody_parse(keep)
    local n, opened, closed = 0, false, false
    local out = keep and {} or nil
    local session = { notopen = true }
    local callbacks = {
      default_ns = "jabber:client",
      streamopened = function(sess) sess.notopen = nil; opened = true end,
      streamclosed = function() closed = true end,
      error = function(_, err, data)
        error("prosody: stream error: " .. tostring(err) .. (data and ": " .. tostring(data) or ""), 0)
      end,
    }
    if keep then
      callbacks.handlestanza = function(_, s) n = n + 1; out[n] = s end
    else
      callbacks.handlestanza = function() n = n + 1 end
    end
    local stream = xmppstream.new(session, callbacks, STANZA_SIZE_LIMIT, { max_elements = 25000 })
    for i = 1, #chunks do
      local ok, err = stream:feed(chunks[i])
      if not ok then error(string.format("prosody: feed failed at chunk %d: %s", i, tostring(err))) end
    end
    if not opened then error("prosody: streamopened never called") end
    if not closed then error("prosody: streamclosed never called") end
    return n, out
  end

  local function serialize(list)
    return function()
      local bytes = 0
      for i = 1, #list do bytes = bytes + #tostring(list[i]) end
      return bytes
    end
  end

  ---------------------------------------------------------------------------
  -- Runs

  local r = {}

  local parse_runs = {
    floor = function() -- two parses per round: the first warms the process up
      local out = run_floor(2)
      return tonumber(out.floor_best_sec), tonumber(out.floor_stanzas)
    end,
    prosody = function() return (prosody_parse(false)) end,
    lxmpp = function() return (lxmpp_parse(false)) end,
  }
  local order = { "floor" }
  if PROSODY_HERE then order[#order + 1] = "prosody" end
  if lxmpp then order[#order + 1] = "lxmpp" end
  local best, count = interleaved(order, parse_runs)
  floor.floor_best_sec = best.floor

  -- Prosody on Lua 5.4 in a run of its own, when this is another Lua
  local other
  if not PROSODY_HERE then
    local cmd = string.format("LXMPP_SKIP=1 LXMPP_BENCH_EMIT=1 LXMPP_BENCH_REPS=%d LXMPP_BENCH_SEED=%d"
      .. " LXMPP_BENCH_GC=%s %s %s %d %s", REPS, SEED, GC, shell_quote(PROSODY_LUA),
      shell_quote(script_dir .. "/parse.lua"), N, shell_quote(floor_bin))
    local p = assert(io.popen(cmd))
    other = {}
    for line in p:lines() do
      local k, v = line:match("^emit ([%w_]+)=(.*)$")
      if k then other[k] = v end
    end
    p:close()
    if not other.prosody_parse_s then error("the Prosody run printed no figures: " .. cmd) end
    count.prosody = common.integer(other.prosody_n)
    r.prosody_lua, r.prosody_floor_s = other.lua, tonumber(other.floor_s)
    best.prosody = tonumber(other.prosody_parse_s)
  end
  r.prosody_parse_s, r.prosody_n = best.prosody, count.prosody
  if r.prosody_n ~= N then error(string.format("prosody saw %d stanzas, generated %d", r.prosody_n, N)) end

  local lx_stanzas
  if lxmpp then
    r.lxmpp_parse_s, r.lxmpp_n = best.lxmpp, count.lxmpp
    if r.lxmpp_n ~= r.prosody_n then
      error(string.format("stanza counts differ: lxmpp %d, prosody %d", r.lxmpp_n, r.prosody_n))
    end
    local n
    n, lx_stanzas = lxmpp_parse(true)
    if n ~= N then error("lxmpp: keeping run saw " .. n .. " stanzas") end
  end

  local pr_stanzas
  if PROSODY_HERE then
    pr_stanzas = select(2, prosody_parse(true))
    -- util.xmppstream copies the stream's xml:lang onto every top-level stanza
    -- that lacks one. The generator puts none on stanzas, so drop it again:
    -- both serializers then write what was read.
    for i = 1, #pr_stanzas do pr_stanzas[i].attr["xml:lang"] = nil end
  end

  order = {}
  if pr_stanzas then order[#order + 1] = "prosody" end
  if lx_stanzas then order[#order + 1] = "lxmpp" end
  best, count = interleaved(order,
    { prosody = pr_stanzas and serialize(pr_stanzas), lxmpp = lx_stanzas and serialize(lx_stanzas) })
  if other then
    best.prosody, count.prosody = tonumber(other.prosody_ser_s), common.integer(other.prosody_ser_bytes)
  end
  r.prosody_ser_s, r.prosody_ser_bytes = best.prosody, count.prosody
  r.lxmpp_ser_s, r.lxmpp_ser_bytes = best.lxmpp, count.lxmpp

  ---------------------------------------------------------------------------
  -- Report

  local lua_version = common.lua_version()
  local cpu = common.cpu()

  local grouped = common.grouped
  local function ratio(a, b) return string.format("%.2fx", a / b) end
  local mb = #xml / 1e6

  local floor_s = floor.floor_best_sec
  local floor_sps = N / floor_s
  local pr_sps = N / r.prosody_parse_s
  local lx_sps = r.lxmpp_parse_s and N / r.lxmpp_parse_s

  local kind_list = {}
  for k, v in pairs(kinds) do kind_list[#kind_list + 1] = string.format("%s %d", k, v) end
  table.sort(kind_list)

  print("lxmpp parse/serialize benchmark (bench/parse.lua)")
  if PROSODY_HERE then
    print(string.format("  %s; lxmpp %s; Prosody util.xmppstream on %s (%s); floor %s",
      lua_version, lxmpp and tostring(lxmpp._VERSION or "loaded") or "SKIPPED (LXMPP_SKIP=1)",
      lxp._VERSION, lxp._EXPAT_VERSION, floor.expat_version or "?"))
  else
    print(string.format("  lxmpp %s on %s; Prosody util.xmppstream on %s (%s, %s; floor %.3f s there)"
      .. "; floor %s", tostring(lxmpp._VERSION or "loaded"), lua_version, tostring(r.prosody_lua),
      tostring(other.lxp), tostring(other.expat), r.prosody_floor_s, floor.expat_version or "?"))
  end
  if cpu then print(string.format("  CPU: %s", cpu)) end
  print(string.format("  stream: %d stanzas, %s elements, %.1f MB, seed %d, %d KiB chunks"
    .. " (generated in %.2f s, untimed)",
    N, grouped(tonumber(floor.floor_elements)), mb, SEED, CHUNK / 1024, t_gen))
  print("  mix: " .. table.concat(kind_list, ", "))
  print(string.format("  best of %d interleaved rounds, CPU time; full GC before each run; GC settings: %s",
    REPS, GC == "prosody" and "Prosody's (incremental, pause 105, stepmul 500)" or "Lua's defaults"))
  print()
  print(string.format("  %-34s %14s %9s %10s", "parse", "stanzas/s", "MB/s", "best s"))
  local function row(name, s, sps)
    if s then
      print(string.format("  %-34s %14s %9.1f %10.3f", name, grouped(sps), mb / s, s))
    else
      print(string.format("  %-34s %14s %9s %10s", name, "skipped", "-", "-"))
    end
  end
  row("lxmpp stream_parser", r.lxmpp_parse_s, lx_sps)
  local pr_name = PROSODY_HERE and "Prosody util.xmppstream" or "Prosody util.xmppstream (5.4)"
  row(pr_name, r.prosody_parse_s, pr_sps)
  row("expat floor (C, counts elements)", floor_s, floor_sps)
  print(string.format("  %-34s %14s", "ratio lxmpp/prosody", lx_sps and ratio(lx_sps, pr_sps) or "-"))
  print(string.format("  %-34s %14s", "ratio lxmpp/floor", lx_sps and ratio(lx_sps, floor_sps) or "-"))
  print(string.format("  %-34s %14s", "ratio prosody/floor", ratio(pr_sps, floor_sps)))
  print()
  print(string.format("  %-34s %14s %9s %10s", "serialize (tostring)", "stanzas/s", "MB/s", "best s"))
  local function srow(name, s, bytes)
    if s then
      print(string.format("  %-34s %14s %9.1f %10.3f", name, grouped(N / s), bytes / 1e6 / s, s))
    else
      print(string.format("  %-34s %14s %9s %10s", name, "skipped", "-", "-"))
    end
  end
  srow("lxmpp stanza __tostring", r.lxmpp_ser_s, r.lxmpp_ser_bytes)
  srow(PROSODY_HERE and "Prosody util.stanza __tostring" or "Prosody util.stanza (5.4)", r.prosody_ser_s,
    r.prosody_ser_bytes)
  print(string.format("  %-34s %14s", "ratio lxmpp/prosody",
    r.lxmpp_ser_s and ratio(r.prosody_ser_s, r.lxmpp_ser_s) or "-"))
  print(string.format("  output bytes: lxmpp %s, prosody %s (input stanzas: %s)",
    r.lxmpp_ser_bytes and grouped(r.lxmpp_ser_bytes) or "-", grouped(r.prosody_ser_bytes),
    grouped(#xml - #chunks[1]:match("^.-<stream:stream[^>]*>") - #"</stream:stream>")))

  -- for a run under another Lua that asked this one for Prosody's figures
  if os.getenv("LXMPP_BENCH_EMIT") == "1" then
    local emit = { prosody_parse_s = r.prosody_parse_s, prosody_n = r.prosody_n, prosody_ser_s = r.prosody_ser_s,
      prosody_ser_bytes = r.prosody_ser_bytes, floor_s = floor_s, lua = lua_version,
      lxp = lxp and lxp._VERSION, expat = lxp and lxp._EXPAT_VERSION }
    for _, k in ipairs({ "prosody_parse_s", "prosody_n", "prosody_ser_s", "prosody_ser_bytes", "floor_s", "lua",
      "lxp", "expat" }) do
      print(("emit %s=%s"):format(k, type(emit[k]) == "number" and ("%.17g"):format(emit[k]) or tostring(emit[k])))
    end
  end
end

local ok, err = xpcall(main, debug.traceback)
cleanup()
if not ok then die("%s", err) end
