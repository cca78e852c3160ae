-- lxmpp.server.fast: XEP-0484 FAST tokens on the embedded server, and the
-- HT mechanisms that use them (draft-schmaus-kitten-sasl-ht: one round
-- trip, the token as an HMAC key, never sent again).
--
-- A token is issued in a SASL2 <success/> (server/features/sasl2.lua) to
-- a client that asked with <request-token/> and named its installation
-- with <user-agent id=.../>; it is bound to the account, that user-agent
-- id and the HT mechanism asked for, and it expires (limits.fast_lifetime).
-- Tokens live server-side only, in the store (kind "fast", one row per
-- account, owned by it: removing the account removes them); changing the
-- password revokes them all (docs/server.md, "SASL2, Bind2 and FAST").
-- Per user-agent two slots, as XEP-0484 §"Implementation Notes" suggests:
-- `new` (issued, not used yet) and `current` (the one last used); using
-- `new` retires `current`. At most limits.fast_clients user-agents of one
-- account hold tokens: a further one pushes out the one expiring first.
-- Proofs are compared in constant time; token values are never logged.

local core = require "lxmpp.core"
local datetime = require "lxmpp.datetime"

local os_time, pairs, ipairs, type = os.time, pairs, ipairs, type

local M = { NS = "urn:xmpp:fast:0" }
local KIND = "fast"

-- HT-SHA-256 mechanisms by channel-binding type (false: none), best first.
M.ORDER = { "HT-SHA-256-EXPR", "HT-SHA-256-UNIQ", "HT-SHA-256-ENDP", "HT-SHA-256-NONE" }
local CB_OF = {
  ["HT-SHA-256-EXPR"] = "tls-exporter", ["HT-SHA-256-UNIQ"] = "tls-unique",
  ["HT-SHA-256-ENDP"] = "tls-server-end-point", ["HT-SHA-256-NONE"] = false,
}

--- True when mech is an HT mechanism (offered or not).
function M.is_mechanism(mech)
  return CB_OF[mech] ~= nil
end

--- The HT mechanisms this stream can use: those whose channel binding
-- the stream has (self.cb_has, from server/features/sasl.lua), and NONE.
-- Kept on the stream (self.fast_mechs) once its SASL mechanisms are known
-- (self.mechs: the channel bindings do not change after that); the offer
-- and each login ask for it several times.
function M.mechanisms(self)
  if self.fast_mechs and self.mechs then return self.fast_mechs end
  local list = {}
  for _, m in ipairs(M.ORDER) do
    local t = CB_OF[m]
    if t == false or (self.cb_has and self.cb_has[t]) then list[#list + 1] = m end
  end
  if self.mechs then self.fast_mechs = list end
  return list
end

local function offered(self, mech)
  for _, m in ipairs(M.mechanisms(self)) do
    if m == mech then return true end
  end
  return false
end
M.offered = offered

-- The channel-binding data an HT mechanism hashes ("" for -NONE), or nil
-- when the stream cannot give it (computed on first use: sasl.lua).
local function cb_data(self, mech)
  local t = CB_OF[mech]
  if not t then return "" end
  return self.cb and self.cb[t] or nil
end

local function load(srv, user)
  local rec = srv.store:get(KIND, user)
  return type(rec) == "table" and rec or {}
end

-- Drops expired tokens and empty slots; keeps at most `max` user-agents
-- (those whose newest token expires last). True when it dropped any.
local function prune(rec, now, max)
  local ids, dropped = {}, false
  for id, slot in pairs(rec) do
    for _, k in ipairs({ "new", "current" }) do
      if slot[k] and slot[k].expiry <= now then slot[k], dropped = nil, true end
    end
    if not slot.new and not slot.current then
      rec[id] = nil
    else
      ids[#ids + 1] = id
    end
  end
  if #ids <= max then return dropped end
  -- the newest token of a user-agent: (expiry, serial) to compare
  local function last(id)
    local s = rec[id]
    local a, b = s.new or s.current, s.current or s.new
    if b.expiry > a.expiry or (b.expiry == a.expiry and (b.serial or 0) > (a.serial or 0)) then a = b end
    return a
  end
  table.sort(ids, function(x, y)
    local a, b = last(x), last(y)
    return a.expiry < b.expiry or (a.expiry == b.expiry and (a.serial or 0) < (b.serial or 0))
  end)
  for i = 1, #ids - max do rec[ids[i]] = nil end
  return true
end

local function save(srv, user, rec)
  if next(rec) == nil then return srv.store:set(KIND, user, nil) end
  return srv.store:set(KIND, user, rec, user)
end

--- Issues a token for mech to the authenticated stream self (user-agent
-- id ua): the <token/> for its <success/>. It waits in the `new` slot
-- (replacing an unused one: XEP-0484 §"Server initiates token rotation").
function M.issue(self, ua, mech)
  local srv = self.srv
  local now = os_time()
  local expiry = now + srv.limits.fast_lifetime
  local token = core.base64_encode(core.random(24))
  local rec = load(srv, self.user)
  local serial = 0                   -- issue order, for ties of expiry
  for _, sl in pairs(rec) do
    for _, t in pairs(sl) do serial = math.max(serial, t.serial or 0) end
  end
  local slot = rec[ua] or {}
  rec[ua] = slot
  slot.new = { token = token, expiry = expiry, mech = mech, serial = serial + 1 }
  prune(rec, now, srv.limits.fast_clients)
  save(srv, self.user, rec)
  return "<token xmlns='" .. M.NS .. "' expiry='" .. datetime.format(expiry) .. "' token='" .. token .. "'/>"
end

--- Checks an HT initial response (authcid NUL HMAC(token, "Initiator" ||
-- cb-data)) for the user-agent id ua. Returns the account name (nil when
-- not a valid one), then on success the server's proof (HMAC(token,
-- "Responder" || cb-data)) and rotate (true when the token used is past
-- half its life: a new one goes out); on failure nil and the condition.
-- invalidate: XEP-0484 §"Client requests token invalidation".
function M.verify(self, mech, data, ua, invalidate)
  local authcid, proof = data:match("^([^%z]+)%z(.+)$")
  if not authcid then return nil, nil, "malformed-request" end
  local name = core.saslprep(authcid)
  local user = name and self.srv:account_name(name)
  if not user or not ua or not offered(self, mech) then return user, nil, "not-authorized" end
  local srv = self.srv
  local now = os_time()
  local rec = load(srv, user)
  local slot = rec[ua]
  local cb = cb_data(self, mech)
  if not cb then return user, nil, "not-authorized" end
  local hit, expired
  -- both slots are always checked: the time taken does not say which matched
  for _, k in ipairs({ "new", "current" }) do
    local t = slot and slot[k]
    local ok = t ~= nil and t.mech == mech and core.const_eq(core.hmac("sha256", t.token, "Initiator" .. cb), proof)
    if ok and t.expiry <= now then expired = true elseif ok and not hit then hit = k end
  end
  if not hit then
    if expired then
      prune(rec, now, srv.limits.fast_clients)
      save(srv, user, rec)
    end
    return user, nil, expired and "credentials-expired" or "not-authorized"
  end
  local t = slot[hit]
  if hit == "new" then slot.current, slot.new = t, nil end   -- the older token is retired
  local rotate = not invalidate and t.expiry - now < srv.limits.fast_lifetime / 2
  if invalidate then slot.current = nil end
  -- (the common case, the current token again, writes nothing)
  if prune(rec, now, srv.limits.fast_clients) or hit == "new" or invalidate then save(srv, user, rec) end
  return user, core.hmac("sha256", t.token, "Responder" .. cb), rotate
end

--- Revokes every token of an account (a password change).
function M.revoke(srv, user)
  if srv.store and srv.store:get(KIND, user) ~= nil then srv.store:set(KIND, user, nil) end
end

return M
