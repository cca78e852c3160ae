-- lxmpp.server.throttle: per-address throttles of the embedded server
-- (docs/server.md, "Throttles"): failed authentications (SASL and the
-- XEP-0114 handshake) slow further attempts from the same address, and
-- in-band registrations (XEP-0077) are counted per address and window.
--
-- Everything is kept in bounded maps (M.map) whose entries also expire, so
-- an attacker with many addresses cannot grow the server's memory: at most
-- 2 × `max` entries live, and the least recently used go first. Nothing
-- here waits: a caller gets a time to answer at and holds the answer with
-- a timer (server/c2s.lua, server/component.lua).

local setmetatable, pairs, ipairs, tonumber, math_min, math_max, math_floor =
  setmetatable, pairs, ipairs, tonumber, math.min, math.max, math.floor

local M = {}

M.MAX_TRACKED = 10000   -- entries per generation of each map (2 generations live)

---------------------------------------------------------------------------
-- addresses

-- An IPv6 address as 8 numbers, or nil.
local function ipv6_groups(ip)
  ip = ip:gsub("%%.*$", "")                        -- a zone (fe80::1%eth0)
  local head, v4 = ip:match("^(.*:)(%d+%.%d+%.%d+%.%d+)$")
  if head then                                       -- ::ffff:1.2.3.4 and the like
    local a, b, c, d = v4:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    ip = head .. ("%x:%x"):format(tonumber(a) * 256 + tonumber(b), tonumber(c) * 256 + tonumber(d))
  end
  local left, right = ip:match("^(.-)::(.*)$")
  local function groups(s)
    local out = {}
    if s == "" then return out end
    for g in (s .. ":"):gmatch("([^:]*):") do
      if not g:match("^%x%x?%x?%x?$") then return nil end
      out[#out + 1] = tonumber(g, 16)
    end
    return out
  end
  local l, r
  if left then
    l, r = groups(left), groups(right)
    if not l or not r or #l + #r > 7 then return nil end
  else
    l, r = groups(ip), {}
    if not l or #l ~= 8 then return nil end
  end
  local all = {}
  for _, g in ipairs(l) do all[#all + 1] = g end
  for _ = 1, 8 - #l - #r do all[#all + 1] = 0 end
  for _, g in ipairs(r) do all[#all + 1] = g end
  return all
end

--- throttle.key(ip) -> the string a throttle counts an address under: an
-- IPv4 address as it is (an IPv4-mapped IPv6 address as IPv4), an IPv6
-- address by its /64 prefix (one subscriber usually holds a whole /64),
-- anything else as it is.
function M.key(ip)
  if not ip:find(":", 1, true) then return ip end
  local g = ipv6_groups(ip)
  if not g then return ip end
  if g[1] == 0 and g[2] == 0 and g[3] == 0 and g[4] == 0 and g[5] == 0 and g[6] == 0xffff then
    return ("%d.%d.%d.%d"):format(math_floor(g[7] / 256), g[7] % 256, math_floor(g[8] / 256), g[8] % 256)
  end
  if g[1] == 0 and g[2] == 0 and g[3] == 0 and g[4] == 0 and g[5] == 0 and g[6] == 0 and g[7] == 0
      and g[8] == 1 then
    return "::1"                                     -- loopback is one host, not a /64
  end
  return ("%x:%x:%x:%x::/64"):format(g[1], g[2], g[3], g[4])
end

---------------------------------------------------------------------------
-- bounded maps

local Map = {}
Map.__index = Map

--- throttle.map(max) -> a map of at most 2 × max entries: m:get(key),
-- m:put(key, value), m:delete(key). Two generations: new entries go to the
-- current one, and when it holds `max` the older generation is dropped and
-- the current one becomes it (an entry read from the older generation
-- moves back to the current one), so what goes is what was not used for
-- the longest.
function M.map(max)
  return setmetatable({ max = max or M.MAX_TRACKED, cur = {}, old = {}, n = 0 }, Map)
end

function Map:get(key)
  local v = self.cur[key]
  if v ~= nil then return v end
  v = self.old[key]
  if v ~= nil then
    self.old[key] = nil
    self:put(key, v)
  end
  return v
end

function Map:put(key, value)
  if self.cur[key] == nil then
    if self.n >= self.max then
      self.old, self.cur, self.n = self.cur, {}, 0
    end
    self.n = self.n + 1
  end
  self.cur[key] = value
  self.old[key] = nil
end

function Map:delete(key)
  if self.cur[key] ~= nil then
    self.cur[key] = nil
    self.n = self.n - 1
  end
  self.old[key] = nil
end

--- The number of entries kept (both generations).
function Map:size()
  local n = self.n
  for _ in pairs(self.old) do n = n + 1 end
  return n
end

---------------------------------------------------------------------------
-- failed authentications

local Auth = {}
Auth.__index = Auth
M.Auth = Auth

--- throttle.auth(limits [, max]) -> a throttle of failed authentications
-- (one for SASL, one for component handshakes). limits: auth_failures,
-- auth_address_failures, auth_delay, auth_delay_max, auth_forget (the
-- server's `limits`, read at each use).
function M.auth(limits, max)
  return setmetatable({ limits = limits, by_addr = M.map(max), by_account = M.map(max) }, Auth)
end

-- The live record of a key (a fresh one when it is unknown or forgotten).
local function record(map, key, now, forget)
  local r = map:get(key)
  if r and now - r.last > forget then r = nil end
  if not r then
    r = { n = 0, last = now, free = 0 }
    map:put(key, r)
  end
  return r
end

-- The wait of a record over its threshold (0 below it): auth_delay,
-- doubling with each further failure, at most auth_delay_max.
local function wait_of(r, threshold, limits)
  if r.n < threshold then return 0 end
  return math_min(limits.auth_delay * 2 ^ math_min(r.n - threshold, 60), limits.auth_delay_max)
end

--- a:verdict(addr, account, failed, now) -> the time (core.now() clock) at
-- which the answer to this attempt may go out: `now` unless the address,
-- or this account at this address, is over its threshold of failures.
-- Then the answers to that address go out one at a time, each the
-- current wait after the previous one, whether the attempt failed or not
-- (an early success would tell a guesser what a slow answer means).
-- failed: the attempt failed (it counts for both records); a success
-- clears the account's record at that address (never the address's).
function Auth:verdict(addr, account, failed, now)
  local limits = self.limits
  local forget = limits.auth_forget
  local ra = record(self.by_addr, addr, now, forget)
  local rk = record(self.by_account, (account or "") .. "\0" .. addr, now, forget)
  local wa, wk = wait_of(ra, limits.auth_address_failures, limits), wait_of(rk, limits.auth_failures, limits)
  local at = now
  if wa > 0 or wk > 0 then
    local start = now
    if wa > 0 then start = math_max(start, ra.free) end
    if wk > 0 then start = math_max(start, rk.free) end
    at = start + math_max(wa, wk)
    if wa > 0 then ra.free = at end
    if wk > 0 then rk.free = at end
  end
  if failed then
    ra.n, ra.last = ra.n + 1, now
    rk.n, rk.last = rk.n + 1, now
  else
    self.by_account:delete((account or "") .. "\0" .. addr)
  end
  return at
end

---------------------------------------------------------------------------
-- registrations

local Reg = {}
Reg.__index = Reg
M.Registrations = Reg

--- throttle.registrations(limits [, max]) -> counts in-band registrations
-- per address: at most limits.max_registrations in limits.register_interval
-- seconds (a window that opens with the address's first registration).
function M.registrations(limits, max)
  return setmetatable({ limits = limits, map = M.map(max) }, Reg)
end

--- r:allowed(addr, now) -> true, or false, seconds until the window ends.
function Reg:allowed(addr, now)
  local w = self.map:get(addr)
  if not w or now - w.start >= self.limits.register_interval then return true end
  if w.n < self.limits.max_registrations then return true end
  return false, w.start + self.limits.register_interval - now
end

--- r:count(addr, now): one more registration from addr.
function Reg:count(addr, now)
  local w = self.map:get(addr)
  if not w or now - w.start >= self.limits.register_interval then
    w = { start = now, n = 0 }
    self.map:put(addr, w)
  end
  w.n = w.n + 1
end

return M
