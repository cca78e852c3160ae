-- lxmpp.datetime: XEP-0082 date-times ("2002-09-10T23:08:25.123Z",
-- "1969-07-21T02:56:15-04:00") to and from Unix time (seconds, a float when
-- there are fractions). Pure arithmetic: no os.time, so the local time zone
-- never leaks in.
--
--   datetime.parse("2002-09-10T23:08:25Z") -> 1031699305 | nil, message
--   datetime.format(1031699305) -> "2002-09-10T23:08:25Z"
--   datetime.tzo(seconds) -> "+02:00"

local type, tonumber, error, floor, format = type, tonumber, error, math.floor, string.format

local M = {}

-- days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local d = doy - floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local DAYS = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

--- datetime.parse(s) -> Unix seconds | nil, message
function M.parse(s)
  if type(s) ~= "string" or #s > 64 then return nil, "not a date-time" end
  -- XEP-0082 §3.2: CCYY-MM-DDThh:mm:ss[.sss]TZD, the fraction a '.' and
  -- at least one digit, TZD "Z" or [+-]hh:mm
  local y, mo, d, h, mi, sec, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)(.*)$")
  if not y then return nil, "not an XEP-0082 date-time: " .. s end
  local frac, zone = rest:match("^(%.%d+)(.*)$")
  if not frac then
    if rest:sub(1, 1) == "." then return nil, "empty fraction of a second: " .. s end
    frac, zone = "", rest
  end
  y, mo, d, h, mi, sec = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(sec)
  local leap = y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0)
  if mo < 1 or mo > 12 or d < 1 or d > DAYS[mo] or (mo == 2 and d == 29 and not leap)
      or h > 23 or mi > 59 or sec > 60 then
    return nil, "date-time out of range: " .. s
  end
  local offset = 0
  if zone ~= "Z" then
    local sign, zh, zm = zone:match("^([+-])(%d%d):(%d%d)$")
    if not sign then return nil, "date-time without a valid time zone: " .. s end
    zh, zm = tonumber(zh), tonumber(zm)
    if zh > 23 or zm > 59 then return nil, "time zone offset out of range: " .. s end
    offset = (zh * 60 + zm) * 60
    if sign == "-" then offset = -offset end
  end
  local t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset
  if frac ~= "" then t = t + tonumber("0" .. frac) end
  return t
end

--- datetime.format(t) -> "YYYY-MM-DDThh:mm:ss[.mmm]Z" (UTC)
function M.format(t)
  if type(t) ~= "number" then error("datetime.format: expected a number of seconds", 2) end
  local whole = floor(t)
  local ms = floor((t - whole) * 1000 + 0.5)
  if ms == 1000 then whole, ms = whole + 1, 0 end
  local days = floor(whole / 86400)
  local rest = whole - days * 86400
  local y, m, d = civil_from_days(days)
  local s = format("%04d-%02d-%02dT%02d:%02d:%02d", y, m, d, floor(rest / 3600), floor(rest % 3600 / 60), rest % 60)
  if ms > 0 then s = s .. format(".%03d", ms) end
  return s .. "Z"
end

--- datetime.tzo(offset_seconds) -> "+hh:mm" / "-hh:mm"
function M.tzo(offset)
  local sign = offset < 0 and "-" or "+"
  offset = floor(offset < 0 and -offset or offset)
  return format("%s%02d:%02d", sign, floor(offset / 3600), floor(offset % 3600 / 60))
end

--- datetime.local_offset([t]) -> this machine's UTC offset in seconds at t
function M.local_offset(t)
  t = floor(t or os.time())
  local l, u = os.date("*t", t), os.date("!*t", t)
  local lsec = days_from_civil(l.year, l.month, l.day) * 86400 + l.hour * 3600 + l.min * 60 + l.sec
  local usec = days_from_civil(u.year, u.month, u.day) * 86400 + u.hour * 3600 + u.min * 60 + u.sec
  return lsec - usec
end

return M
