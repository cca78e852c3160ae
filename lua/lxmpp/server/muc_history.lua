-- lxmpp.server.muc_history: a room's discussion history (XEP-0045 §7.2.15):
-- what a room keeps (bounded by count and by bytes of XML, each message
-- stamped with an XEP-0203 delay from the room) and what it sends a session
-- that enters, as its <history maxstanzas maxchars seconds since/> asks.
-- install(Room) adds Room:add_history(msg) and Room:send_history(occ, to, req).

local tonumber, tostring = tonumber, tostring
local math_floor, math_min, os_date, remove = math.floor, math.min, os.date, table.remove

local NS_DELAY = "urn:xmpp:delay"

local function days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = math_floor(y / 400)
  local yoe = y - era * 400
  local doy = math_floor((153 * (m + (m > 2 and -3 or 9)) + 2) / 5) + d - 1
  local doe = yoe * 365 + math_floor(yoe / 4) - math_floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- Seconds since the epoch of an XEP-0082 DateTime, or nil.
local function parse_datetime(s)
  local y, mo, d, h, mi, sec, tz = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)%.?%d*(.*)$")
  if not y then return nil end
  local offset = 0
  if tz ~= "Z" then
    local sign, oh, om = tz:match("^([+-])(%d%d):(%d%d)$")
    if not sign then return nil end
    offset = (tonumber(oh) * 3600 + tonumber(om) * 60) * (sign == "-" and -1 or 1)
  end
  return days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400
    + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec) - offset
end

local function stamp(t)
  return os_date("!%Y-%m-%dT%H:%M:%SZ", math_floor(t))
end

local function non_negative(s)
  local n = s and s:match("^%d+$") and tonumber(s)
  return n
end

local function install(Room)
  function Room:add_history(msg)
    local limits = self.service.limits
    if limits.max_history == 0 then return end
    local now = self.service.clock()
    local h = msg:clone()
    h:tag("delay", { xmlns = NS_DELAY, from = self.jid, stamp = stamp(now) }):up()
    local entry = { stanza = h, time = now, bytes = #tostring(h) }
    -- one message larger than the whole budget is broadcast but not
    -- kept: max_history_bytes bounds every room's history, not "all
    -- but the last message"
    if entry.bytes > limits.max_history_bytes then return end
    local history = self.history
    history[#history + 1] = entry
    self.history_bytes = self.history_bytes + entry.bytes
    while #history > limits.max_history or self.history_bytes > limits.max_history_bytes do
      self.history_bytes = self.history_bytes - remove(history, 1).bytes
    end
  end

  -- Sends session `to` of occ the history <history/> asks for (XEP-0045
  -- §7.2.15): at most maxstanzas messages (default: all kept), at most
  -- maxchars bytes of XML, none older than `seconds` or `since`.
  function Room:send_history(occ, to, req)
    local history = self.history
    local max, maxchars, oldest = #history, nil, nil
    if req then
      local a = req.attr
      max = math_min(max, non_negative(a.maxstanzas) or max)
      maxchars = non_negative(a.maxchars)
      local seconds = non_negative(a.seconds)
      if seconds then oldest = self.service.clock() - seconds end
      local since = a.since and parse_datetime(a.since)
      if since and (not oldest or since > oldest) then oldest = since end
    end
    local first, chars = #history + 1, 0
    while first > 1 and #history - first + 1 < max do
      local entry = history[first - 1]
      if oldest and entry.time < oldest then break end
      chars = chars + entry.bytes
      if maxchars and chars > maxchars then break end
      first = first - 1
    end
    for i = first, #history do self:send_to(occ, history[i].stanza, to) end
  end
end

return { install = install, parse_datetime = parse_datetime }
