-- Value encoding for the server's storage: plain Lua values <-> bytes.
--
-- A stored value is data, never code: this is a small binary format read by a
-- strict decoder (no load(), no string evaluation), so whatever bytes a
-- stored string holds, it comes back as that string.
--
--   value  := "\1" item                     (format version 1)
--   item   := "T" | "F"                      true, false
--           | "i" int64 (little endian)     an integer
--           | "d" double (little endian)    a float (1.0 stays a float)
--           | "s" u32 length, bytes         a string, any bytes
--           | "t" u32 count, count * (key item, value item)
--                                            a table; keys are integers or
--                                            strings, written in sorted order
--
-- Encoding refuses what would not come back the same: functions, userdata,
-- threads, tables with a metatable (a stanza: store its XML), keys that are
-- not strings or integers, cycles, and nesting deeper than MAX_DEPTH.

local compat = require "lxmpp.compat"
local type, pairs, error, tostring = type, pairs, error, tostring
local math_type = compat.math_type
local spack, sunpack = compat.string_pack, compat.string_unpack
local concat, sort = table.concat, table.sort
local getmetatable = getmetatable

local VERSION = "\1"
local MAX_DEPTH = 64

local codec = { MAX_DEPTH = MAX_DEPTH }

-- Integers first (by value), then strings (bytewise), so one value always
-- has one encoding.
local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta == "number" end
  return a < b
end

local function where(path)
  return path == "" and "the value" or "value" .. path
end

local function key_path(path, k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return path .. "." .. k end
  if type(k) == "string" then return ("%s[%q]"):format(path, k) end
  return path .. "[" .. tostring(k) .. "]"
end

local encode_item

local function encode_table(t, out, path, open, depth)
  if getmetatable(t) ~= nil then
    error(("storage: cannot store %s: a table with a metatable (store plain tables; a stanza as its XML)")
      :format(where(path)), 0)
  end
  if open[t] then error(("storage: cannot store %s: it contains itself (a cycle)"):format(where(path)), 0) end
  if depth > MAX_DEPTH then
    error(("storage: cannot store %s: nested deeper than %d"):format(where(path), MAX_DEPTH), 0)
  end
  local keys = {}
  for k in pairs(t) do
    if type(k) ~= "string" and math_type(k) ~= "integer" then
      error(("storage: cannot store %s: key %s is a %s (only string and integer keys)")
        :format(where(path), tostring(k), math_type(k) or type(k)), 0)
    end
    keys[#keys + 1] = k
  end
  sort(keys, key_order)
  open[t] = true
  out[#out + 1] = spack("<c1I4", "t", #keys)
  for i = 1, #keys do
    local k = keys[i]
    encode_item(k, out, path, open, depth + 1)
    encode_item(t[k], out, key_path(path, k), open, depth + 1)
  end
  open[t] = nil
end

function encode_item(v, out, path, open, depth)
  local tv = type(v)
  if tv == "string" then
    out[#out + 1] = spack("<c1s4", "s", v)
  elseif tv == "boolean" then
    out[#out + 1] = v and "T" or "F"
  elseif tv == "number" then
    if math_type(v) == "integer" then
      out[#out + 1] = spack("<c1i8", "i", v)
    else
      out[#out + 1] = spack("<c1d", "d", v)
    end
  elseif tv == "table" then
    encode_table(v, out, path, open, depth)
  else
    error(("storage: cannot store %s: a %s is not plain data"):format(where(path), tv), 0)
  end
end

--- Encodes a plain value (string, number, boolean, table of those) into
-- bytes. Raises a message naming the offending part for anything else.
function codec.encode(value)
  if value == nil then error("storage: cannot store nil (nil deletes)", 0) end
  local out = { VERSION }
  encode_item(value, out, "", {}, 1)
  return concat(out)
end

-- Decoding: every read checks the bytes left first, so truncated or
-- garbled input is reported, never half-read. Tags are compared as bytes
-- and the checks written out, not called: the server decodes a record on
-- every FAST login (docs/performance.md, "Where a reconnection's
-- instructions go").

local sbyte, ssub = string.byte, string.sub
local TAG_S, TAG_I, TAG_D, TAG_T, TAG_F, TAG_TABLE = 115, 105, 100, 84, 70, 116   -- s i d T F t

local decode_item

local function decode_table(s, pos, depth)
  if depth > MAX_DEPTH then error("nested too deep", 0) end
  if pos + 3 > #s then error("truncated", 0) end
  local count
  count, pos = sunpack("<I4", s, pos)
  -- each entry takes at least two bytes: a forged count cannot make us loop
  if count * 2 > #s - pos + 1 then error("truncated", 0) end
  local t = {}
  for _ = 1, count do
    local k
    k, pos = decode_item(s, pos, depth + 1)
    if type(k) ~= "string" and math_type(k) ~= "integer" then error("bad table key", 0) end
    if t[k] ~= nil then error("duplicate table key", 0) end
    t[k], pos = decode_item(s, pos, depth + 1)
  end
  return t, pos
end

function decode_item(s, pos, depth)
  local tag = sbyte(s, pos)
  if not tag then error("truncated", 0) end
  pos = pos + 1
  if tag == TAG_S then
    local n = #s
    if pos + 3 > n then error("truncated", 0) end
    local last = pos + 3 + sunpack("<I4", s, pos)
    if last > n then error("truncated", 0) end
    return ssub(s, pos + 4, last), last + 1
  elseif tag == TAG_I then
    if pos + 7 > #s then error("truncated", 0) end
    return sunpack("<i8", s, pos)
  elseif tag == TAG_D then
    if pos + 7 > #s then error("truncated", 0) end
    return sunpack("<d", s, pos)
  elseif tag == TAG_T then
    return true, pos
  elseif tag == TAG_F then
    return false, pos
  elseif tag == TAG_TABLE then
    return decode_table(s, pos, depth)
  end
  error("unknown tag " .. ("%q"):format(ssub(s, pos - 1, pos - 1)), 0)
end

--- Decodes bytes made by encode. Returns the value, or nil and a message
-- when the bytes are not a complete, valid encoding.
function codec.decode(s)
  if type(s) ~= "string" then return nil, "not a string" end
  if s:sub(1, 1) ~= VERSION then return nil, "unknown format version" end
  local ok, value, pos = compat.pcall(decode_item, s, 2, 1)
  if not ok then return nil, value end
  if pos ~= #s + 1 then return nil, "trailing bytes" end
  return value
end

return codec
