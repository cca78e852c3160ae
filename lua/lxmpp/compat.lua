-- lxmpp.compat: what lxmpp's Lua code needs that differs between Lua 5.1,
-- LuaJIT 2.1, 5.3 and 5.4 (README.md, "Lua versions"), in one place, so the
-- rest of lua/ parses and runs on all four. Each value is the standard
-- function where the running Lua has it, else a replacement with the 5.4
-- meaning (or the nearest that version allows, as noted).
--
-- Source that only 5.3+ can parse (bitwise operators, //) is compiled here
-- with load() on 5.3+ only, so 5.1 and LuaJIT never see it.

local math, string, table, type, select, tostring, load, pcall, require, xpcall, error, ipairs, setmetatable, debug =
  math, string, table, type, select, tostring, load, pcall, require, xpcall, error, ipairs, setmetatable, debug
local floor = math.floor
local coroutine = coroutine

local M = {}

local native53 = math.type ~= nil          -- 5.3, 5.4: integers and their operators
M.luajit = type(rawget(_G, "jit")) == "table"

--- compat.unpack(t, i, j), compat.pack(...): table.unpack / table.pack
M.unpack = table.unpack or rawget(_G, "unpack")
M.pack = table.pack or function(...) return { n = select("#", ...), ... } end

-- 2^53: the integers a double holds exactly (all numbers are doubles before 5.3)
local MAX_EXACT = 9007199254740992

--- compat.math_type(x): math.type; before 5.3 a number is "integer" when it
-- has no fraction and is exact in a double (so 1.0 is an integer there).
M.math_type = math.type or function(x)
  if type(x) ~= "number" then return nil end
  if x == 0 and 1 / x < 0 then return "float" end       -- -0.0 (an integer 0 has no sign)
  if x == floor(x) and x >= -MAX_EXACT and x <= MAX_EXACT then return "integer" end
  return "float"
end
local math_type = M.math_type

--- compat.tointeger(x): math.tointeger (nil for anything but an integral number)
M.tointeger = math.tointeger and function(x)
  if type(x) ~= "number" then return nil end -- (5.4.0 to 5.4.2 raise on non-numbers)
  return math.tointeger(x)
end or function(x)
  if math_type(x) == "integer" then return x end
  return nil
end

--- compat.rawlen(t): rawlen (before 5.2 # never calls a table's __len)
M.rawlen = rawget(_G, "rawlen") or function(t) return #t end

--- compat.maxinteger, compat.mininteger: math.maxinteger / mininteger, or
-- the exact range of a double before 5.3
M.maxinteger = math.maxinteger or MAX_EXACT
M.mininteger = math.mininteger or -MAX_EXACT

--- compat.idiv(a, b): a // b (floor division)
M.idiv = native53 and load("return function(a, b) return a // b end")()
  or function(a, b) return floor(a / b) end

--- compat.band/bor/bxor/lshift/rshift: bitwise operations on non-negative
-- integers below 2^32 (what lxmpp uses them for); the results are the same
-- non-negative integers on every version.
if native53 then
  local ops = load([[return
    function(a, b) return a & b end, function(a, b) return a | b end,
    function(a, b) return a ~ b end,
    function(a, n) return (a << n) & 0xFFFFFFFF end, function(a, n) return a >> n end]])
  M.band, M.bor, M.bxor, M.lshift, M.rshift = ops()
else
  local ok, bit = pcall(require, M.luajit and "bit" or "bit32")
  if ok and M.luajit then
    -- LuaJIT's bit gives signed 32-bit results: bring them back to 0..2^32-1
    local function u(x) if x < 0 then return x + 4294967296 end return x end
    local band, bor, bxor, lshift, rshift = bit.band, bit.bor, bit.bxor, bit.lshift, bit.rshift
    M.band = function(a, b) return u(band(a, b)) end
    M.bor = function(a, b) return u(bor(a, b)) end
    M.bxor = function(a, b) return u(bxor(a, b)) end
    M.lshift = function(a, n) return u(lshift(a, n)) end
    M.rshift = function(a, n) return u(rshift(a, n)) end
  elseif ok then
    M.band, M.bor, M.bxor, M.lshift, M.rshift = bit.band, bit.bor, bit.bxor, bit.lshift, bit.rshift
  else
    -- plain Lua 5.1 without bit32: bit by bit
    local function op(a, b, f)
      local r, p = 0, 1
      for _ = 1, 32 do
        local x, y = a % 2, b % 2
        if f(x, y) then r = r + p end
        a, b, p = (a - x) / 2, (b - y) / 2, p * 2
      end
      return r
    end
    M.band = function(a, b) return op(a, b, function(x, y) return x == 1 and y == 1 end) end
    M.bor = function(a, b) return op(a, b, function(x, y) return x == 1 or y == 1 end) end
    M.bxor = function(a, b) return op(a, b, function(x, y) return x ~= y end) end
    M.lshift = function(a, n) return (a * 2 ^ n) % 4294967296 end
    M.rshift = function(a, n) return floor((a % 4294967296) / 2 ^ n) end
  end
end

--- compat.load(chunk, name, mode, env), compat.loadfile(path, mode, env):
-- load / loadfile with an environment (plain 5.1's take none: setfenv)
local setfenv, loadstring, loadfile = rawget(_G, "setfenv"), rawget(_G, "loadstring"), loadfile
if M.luajit or native53 or not setfenv then
  M.load, M.loadfile = load, loadfile
else
  M.load = function(chunk, name, _, env)
    local f, err
    if type(chunk) == "string" then f, err = loadstring(chunk, name) else f, err = load(chunk, name) end
    if f and env then setfenv(f, env) end
    return f, err
  end
  M.loadfile = function(path, _, env)
    local f, err = loadfile(path)
    if f and env then setfenv(f, env) end
    return f, err
  end
end

--- compat.coroutine_close(co): coroutine.close; before 5.4 a suspended
-- coroutine has no to-be-closed variables to close, so dropping it is all
M.coroutine_close = coroutine.close or function(co)
  if coroutine.status(co) == "dead" or coroutine.status(co) == "suspended" then return true end
  error("cannot close a " .. coroutine.status(co) .. " coroutine", 2)
end

--- compat.pcall(f, ...), compat.xpcall(f, msgh, ...), compat.co_running():
-- pcall, xpcall and coroutine.running. Plain Lua 5.1 cannot yield across
-- pcall (LuaJIT and 5.2+ can), and lxmpp's waiting calls yield the task:
-- there f runs in a coroutine of its own whose yields are passed on to the
-- caller's resumer and the answers back, and co_running names the
-- coroutine that called pcall, so a task stays itself inside it. (An
-- xpcall handler other than debug.traceback sees the caller's stack.)
local plain51 = not M.luajit and _VERSION == "Lua 5.1"
if not plain51 then
  M.pcall, M.xpcall, M.co_running = pcall, xpcall, coroutine.running
else
  local co_create, co_resume, co_yield, co_status, co_running =
    coroutine.create, coroutine.resume, coroutine.yield, coroutine.status, coroutine.running
  local parent = setmetatable({}, { __mode = "k" })   -- helper coroutine -> the one it runs for
  local function outer(co)
    local p = parent[co]
    while p do co, p = p, parent[p] end
    return co
  end
  M.co_running = function() local co = co_running(); return co and outer(co) end
  local function step(co, ok, ...)
    if co_status(co) == "dead" then return ok, ... end
    return step(co, co_resume(co, co_yield(...)))    -- f yielded: pass it on
  end
  M.pcall = function(f, ...)
    local me = co_running()
    if not me then return pcall(f, ...) end          -- the main thread: nothing can yield
    local co = co_create(function(...) return f(...) end)
    parent[co] = me
    return step(co, co_resume(co, ...))
  end
  local traceback = debug.traceback
  M.xpcall = function(f, msgh, ...)
    local args = M.pack(...)
    local function call() return f(M.unpack(args, 1, args.n)) end
    local me = co_running()
    if not me then return xpcall(call, msgh) end
    local co = co_create(call)
    parent[co] = me
    local function finish(ok, ...)
      if co_status(co) ~= "dead" then return finish(co_resume(co, co_yield(...))) end
      if ok then return true, ... end
      local err = ...
      if msgh == traceback and type(err) == "string" then return false, traceback(co, err) end
      return false, msgh(err)
    end
    return finish(co_resume(co))
  end
end

--- compat.fmt_number(n): a number as 5.4's tostring writes it ("1" for the
-- integer 1, "1.5", "1e+20"), the same on every version for integers
M.fmt_number = function(n)
  if native53 or math_type(n) ~= "integer" then return tostring(n) end
  return string.format("%d", n)
end

-- UTF-8 (RFC 3629): the strict decoder of 5.3's utf8.len (no surrogates,
-- nothing over U+10FFFF, no overlong forms)
local byte = string.byte
local function char_end(s, i, n)
  local c = byte(s, i)
  if c < 0x80 then return i end
  local len, min, cp
  if c >= 0xC2 and c <= 0xDF then len, min, cp = 1, 0x80, c - 0xC0
  elseif c >= 0xE0 and c <= 0xEF then len, min, cp = 2, 0x800, c - 0xE0
  elseif c >= 0xF0 and c <= 0xF4 then len, min, cp = 3, 0x10000, c - 0xF0
  else return nil end
  if i + len > n then return nil end
  for k = i + 1, i + len do
    local d = byte(s, k)
    if d < 0x80 or d > 0xBF then return nil end
    cp = cp * 64 + (d - 0x80)
  end
  if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then return nil end
  return i + len
end

local utf8 = rawget(_G, "utf8")

--- compat.utf8_len(s): utf8.len(s) (the count, or nil and the position of
-- the first invalid byte)
-- (5.3's utf8.len lets surrogates through, 5.4's does not: on 5.3 an
-- encoded surrogate, ED A0..BF xx, is refused after it)
local utf8_len53 = utf8 and _VERSION == "Lua 5.3" and function(s)
  local n, bad = utf8.len(s)
  if not n then return n, bad end
  local at = s:find("\237[\160-\191]")
  if at then return nil, at end
  return n
end
M.utf8_len = utf8_len53 or utf8 and utf8.len or function(s)
  local i, n, count = 1, #s, 0
  while i <= n do
    local e = char_end(s, i, n)
    if not e then return nil, i end
    count = count + 1
    i = e + 1
  end
  return count
end

--- compat.utf8_char(...): utf8.char (code points to UTF-8)
M.utf8_char = utf8 and utf8.char or function(...)
  local out = {}
  for i = 1, select("#", ...) do
    local c = select(i, ...)
    if c < 0x80 then out[i] = string.char(c)
    elseif c < 0x800 then out[i] = string.char(0xC0 + floor(c / 64), 0x80 + c % 64)
    elseif c < 0x10000 then
      out[i] = string.char(0xE0 + floor(c / 4096), 0x80 + floor(c / 64) % 64, 0x80 + c % 64)
    else
      out[i] = string.char(0xF0 + floor(c / 262144), 0x80 + floor(c / 4096) % 64,
        0x80 + floor(c / 64) % 64, 0x80 + c % 64)
    end
  end
  return table.concat(out)
end

--- compat.utf8_offset(s, n): utf8.offset(s, n) for n >= 1: where the n-th
-- character starts (#s + 1 just after the last; nil past that)
M.utf8_offset = utf8 and utf8.offset or function(s, n)
  local i, len = 1, #s
  while n > 1 do
    if i > len then return nil end
    i = i + 1
    while i <= len and byte(s, i) >= 0x80 and byte(s, i) <= 0xBF do i = i + 1 end
    n = n - 1
  end
  if i > len + 1 then return nil end
  return i
end

--- compat.string_pack(fmt, ...), compat.string_unpack(fmt, s, pos):
-- string.pack / string.unpack; before 5.3 the little-endian subset lxmpp's
-- storage codec uses ("<" then c1, I4, i8, s4, d), byte for byte the
-- same, so data stored by one Lua reads in another. (Before 5.3 an i8 is
-- exact only within +-2^53, the integers a double holds.)
if string.pack then
  M.string_pack, M.string_unpack = string.pack, string.unpack
else
  local char, sub = string.char, string.sub
  local frexp, ldexp = rawget(math, "frexp"), rawget(math, "ldexp")
  local TWO32 = 4294967296
  local function u32(n)
    return char(n % 256, floor(n / 256) % 256, floor(n / 65536) % 256, floor(n / 16777216) % 256)
  end
  local function read_u32(s, pos)
    local a, b, c, d = byte(s, pos, pos + 3)
    if not d then error("data string too short", 3) end
    return a + b * 256 + c * 65536 + d * 16777216
  end
  local function f64(x)
    local sign, e, m = 0, 0, 0
    if x < 0 or (x == 0 and 1 / x < 0) then sign, x = 1, -x end
    if x ~= x then sign, e, m = 1, 2047, 2 ^ 51    -- NaN (as 0/0 is on x86)
    elseif x == math.huge then e = 2047
    elseif x ~= 0 then
      local mant, exp = frexp(x)                    -- x = mant * 2^exp, 0.5 <= mant < 1
      e = exp + 1022
      if e <= 0 then e, m = 0, ldexp(x, 1074)       -- subnormal
      else m = (mant * 2 - 1) * 2 ^ 52 end
    end
    return u32(m % TWO32) .. u32(sign * 2147483648 + e * 1048576 + floor(m / TWO32))
  end
  local function read_f64(s, pos)
    local lo, hi = read_u32(s, pos), read_u32(s, pos + 4)
    local sign = hi >= 2147483648 and -1 or 1
    local e = floor(hi / 1048576) % 2048
    local m = (hi % 1048576) * TWO32 + lo
    if e == 2047 then return m == 0 and sign * math.huge or 0 / 0 end
    if e == 0 then return sign * ldexp(m, -1074) end
    return sign * ldexp(m + 2 ^ 52, e - 1075)
  end
  local function i64(n)
    local hi = floor(n / TWO32)
    local lo = n - hi * TWO32
    if hi < 0 then hi = hi + TWO32 end
    return u32(lo) .. u32(hi)
  end
  local function read_i64(s, pos)
    local lo, hi = read_u32(s, pos), read_u32(s, pos + 4)
    if hi >= 2147483648 then hi = hi - TWO32 end
    return hi * TWO32 + lo
  end
  local function items(fmt)
    if sub(fmt, 1, 1) ~= "<" then error("compat.string_pack: only little-endian formats", 3) end
    local list = {}
    for f in fmt:sub(2):gmatch("%a%d*") do list[#list + 1] = f end
    return list
  end
  M.string_pack = function(fmt, ...)
    local out = {}
    for i, f in ipairs(items(fmt)) do
      local v = select(i, ...)
      if f == "c1" then out[i] = v
      elseif f == "I4" then out[i] = u32(v)
      elseif f == "s4" then out[i] = u32(#v) .. v
      elseif f == "i8" then out[i] = i64(v)
      elseif f == "d" then out[i] = f64(v)
      else error("compat.string_pack: format " .. f .. " not supported", 2) end
    end
    return table.concat(out)
  end
  M.string_unpack = function(fmt, s, pos)
    pos = pos or 1
    local r = {}
    for i, f in ipairs(items(fmt)) do
      if f == "c1" then r[i], pos = sub(s, pos, pos), pos + 1
      elseif f == "I4" then r[i], pos = read_u32(s, pos), pos + 4
      elseif f == "s4" then
        local n = read_u32(s, pos)
        r[i], pos = sub(s, pos + 4, pos + 3 + n), pos + 4 + n
      elseif f == "i8" then r[i], pos = read_i64(s, pos), pos + 8
      elseif f == "d" then r[i], pos = read_f64(s, pos), pos + 8
      else error("compat.string_unpack: format " .. f .. " not supported", 2) end
    end
    r[#r + 1] = pos
    return M.unpack(r)
  end
end

return M
