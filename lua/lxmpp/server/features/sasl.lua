-- SASL (RFC 6120 §6), server side: SCRAM-SHA-1/256 and their -PLUS
-- variants with channel binding (the types advertised with XEP-0440, and
-- both lists signed into the exchange with XEP-0474's h=), PLAIN
-- over a protected stream only, or a host application's auth callback
-- (PLAIN only: it needs the password). Answers wait for the address's
-- throttle (server/throttle.lua); too many failures end the stream.

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local task = require "lxmpp.task"
local jid = require "lxmpp.jid"
local throttle = require "lxmpp.server.throttle"

local tostring, ipairs, pcall, type = tostring, ipairs, compat.pcall, type

local NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
local NS_SASL_CB = "urn:xmpp:sasl-cb:0"   -- XEP-0440

local M = { name = "sasl", NS = NS_SASL }

-- Channel-binding data of this TLS connection, by type, for the types the
-- server is configured with (srv.cb_types, best first) that this TLS
-- version defines (docs/server.md, "Channel binding"); and their list.
-- Which types exist is probed (no data computed: a FAST login with
-- HT-SHA-256-NONE, the usual reconnection, binds to none); a type's data
-- is computed when first asked for (cb[type]), and cb_all gives them all;
-- the third value is the set of the listed types.
local function binding_data(self)
  if not self.secure then return nil end
  local conn, list, listed = self.conn, {}, {}
  for _, t in ipairs(self.srv.cb_types) do
    if conn:channel_binding(t, true) then list[#list + 1], listed[t] = t, true end
  end
  if #list == 0 then return nil end
  local cb = setmetatable({}, { __index = function(cb, t)
    if not listed[t] then return nil end
    local data = conn:channel_binding(t)
    rawset(cb, t, data or false)    -- (false: computing it failed after all)
    return data
  end })
  return cb, list, listed
end

-- All of the stream's channel-binding data, as a plain table (for the
-- SCRAM engine, which reads the table itself), or nil.
local function cb_all(self)
  if not self.cb then return nil end
  local all = {}
  for _, t in ipairs(self.cb_list) do all[t] = self.cb[t] or nil end
  return all
end

-- SASL mechanisms, strongest first. With a host auth callback only PLAIN
-- can work (it needs the password), and PLAIN is never offered without TLS.
local function mechanisms(self)
  if self.mechs then return self.mechs end
  local list = {}
  if not self.srv.auth then
    self.cb, self.cb_list, self.cb_has = binding_data(self)
    if self.cb then
      list[#list + 1] = "SCRAM-SHA-256-PLUS"
      list[#list + 1] = "SCRAM-SHA-1-PLUS"
    end
    list[#list + 1] = "SCRAM-SHA-256"
    list[#list + 1] = "SCRAM-SHA-1"
  end
  if self.secure then list[#list + 1] = "PLAIN" end
  self.mechs = list
  return list
end

-- The <mechanisms/> element (and XEP-0440's) for a mechanism list and a
-- channel-binding list: the same for most streams, so each is made once
-- (at most MAX_OFFERS distinct ones kept; docs/performance.md, "Where a
-- reconnection's instructions go").
local MAX_OFFERS = 32
local offers, n_offers = {}, 0

local function offer_xml(mechs, cb_list)
  local key = table.concat(mechs, " ") .. "|" .. (cb_list and table.concat(cb_list, " ") or "-")
  local xml = offers[key]
  if xml then return xml end
  local f = { "<mechanisms xmlns='" .. NS_SASL .. "'>" }
  for _, m in ipairs(mechs) do
    f[#f + 1] = "<mechanism>" .. m .. "</mechanism>"
  end
  f[#f + 1] = "</mechanisms>"
  if cb_list then      -- XEP-0440: the types a -PLUS exchange may use here
    f[#f + 1] = "<sasl-channel-binding xmlns='" .. NS_SASL_CB .. "'>"
    for _, t in ipairs(cb_list) do
      f[#f + 1] = "<channel-binding type='" .. t .. "'/>"
    end
    f[#f + 1] = "</sasl-channel-binding>"
  end
  xml = table.concat(f)
  if n_offers < MAX_OFFERS then offers[key], n_offers = xml, n_offers + 1 end
  return xml
end

--- <mechanisms/> (and XEP-0440's types) until authenticated, once the
-- stream is protected (or the server insecure_plaintext).
function M.offer(self)
  if self.authenticated or not (self.secure or self.srv.insecure_plaintext) then return nil end
  local mechs = mechanisms(self)
  return offer_xml(mechs, self.cb and self.cb_list or nil)
end

-- How an exchange's steps are written: RFC 6120 §6.4's elements here
-- (the classic profile); XEP-0388's in server/features/sasl2.lua. Each
-- exchange keeps its wire in self.sasl_wire, so a <response/> of the other
-- profile is not taken for it.
--   challenge(self, data)       data: raw bytes (may be "")
--   success(self, final)        after self.authenticated is set; final: the
--                               mechanism's additional data, or nil
--   failure(self, cond, text)   cond: an RFC 6120 §6.5 condition
local CLASSIC = { name = "sasl" }
M.CLASSIC = CLASSIC

function CLASSIC.challenge(self, data)
  self:write("<challenge xmlns='" .. NS_SASL .. "'>" .. core.base64_encode(data) .. "</challenge>")
end

function CLASSIC.success(self, final)
  self:write("<success xmlns='" .. NS_SASL .. "'>" ..
    (final and final ~= "" and core.base64_encode(final) or "") .. "</success>")
  self.conn:restart()
  self:restarted()
end

function CLASSIC.failure(self, cond, text)
  self:write("<failure xmlns='" .. NS_SASL .. "'><" .. cond .. "/>" ..
    (text and ("<text>" .. core.xml_escape(text) .. "</text>") or "") .. "</failure>")
end

-- forgive: a refusal that costs no try (an unsupported channel-binding type).
local function sasl_failure(self, cond, text, forgive)
  self.sasl = nil
  if not forgive then self.sasl_failures = self.sasl_failures + 1 end
  local wire = self.sasl_wire or CLASSIC
  self.sasl_wire = nil
  wire.failure(self, cond, text)
  if self.sasl_failures >= self.srv.limits.sasl_attempts then
    return self:stream_error("policy-violation", "too many failed authentication attempts")
  end
end

-- The SASL conditions a failure may carry (RFC 6120 §6.5).
local SASL_CONDS = {
  aborted = true, ["account-disabled"] = true, ["credentials-expired"] = true,
  ["encryption-required"] = true, ["incorrect-encoding"] = true, ["invalid-authzid"] = true,
  ["invalid-mechanism"] = true, ["malformed-request"] = true, ["mechanism-too-weak"] = true,
  ["not-authorized"] = true, ["temporary-auth-failure"] = true,
}

local function sasl_success(self, user, final)
  self.sasl = nil
  self.authenticated = true
  self.user = user
  self.bare = user .. "@" .. self.srv.domain
  self.srv:account_auth(self)
  self:log("info", "authenticated as %s", self.bare)
  local wire = self.sasl_wire or CLASSIC
  self.sasl_wire = nil
  return wire.success(self, final)
end

-- A checked password: the answer (success, or the failure cond with
-- text) goes out when the address's throttle lets it (server/throttle.lua,
-- docs/server.md "Throttles"), success and failure alike; meanwhile
-- nothing is read from the client. user: the account name tried (nil when
-- the name was not valid); final: SCRAM's server-final message.
local function checked(self, user, ok, cond, text, final)
  if type(self.sasl) == "userdata" then self.sasl:close() end
  self.sasl = "held"
  local now = core.now()
  local at = self.srv.auth_throttle:verdict(throttle.key(self.ip), user, not ok, now)
  if at > now then self:log("info", "the answer to a login waits %.2f s (failures from this address)", at - now) end
  return self:answer_at(at, function()
    self.sasl = nil
    if ok then return sasl_success(self, user, final) end
    return sasl_failure(self, cond or "not-authorized", text)
  end)
end

-- A SASL username as an account name (nodeprep), or nil.
local function account_name(self, username)
  local node = username ~= "" and jid.prepped_split(username .. "@" .. self.srv.domain)
  return node or nil
end

local function decode_payload(s)
  local text = s:get_text() or ""
  if text == "" then return "" end
  if text == "=" then return "" end
  return core.base64_decode(text)
end

local function check_plain(self, data)
  local authzid, authcid, password = data:match("^([^%z]*)%z([^%z]+)%z([^%z]+)$")
  if not authcid then return sasl_failure(self, "malformed-request") end
  local name = core.saslprep(authcid)
  password = core.saslprep(password)
  local user = name and account_name(self, name)
  if authzid ~= "" and (not user or jid.prep(authzid) ~= user .. "@" .. self.srv.domain) then
    return sasl_failure(self, "invalid-authzid")
  end
  if not user or not password then return checked(self, user, false) end
  if self.srv.auth then
    -- a host application's check may wait (a database call): run it as a
    -- task, reading nothing from this client meanwhile
    self:pause_reading("auth")
    self.sasl = "plain-pending"
    task.spawn(function()
      local ok, res = pcall(self.srv.auth, user, password)
      password = nil
      if self.ended then return end
      self:resume_reading("auth")
      if not ok then
        self:log("error", "the auth callback failed: %s", tostring(res))
        return sasl_failure(self, "temporary-auth-failure")
      end
      return checked(self, user, res == true)
    end)
    return
  end
  return checked(self, user, self.srv:check_password(user, password))
end

local function scram_step(self, data)
  local out, done, cond, server_error = self.sasl:step(data)
  if not out then
    -- a channel-binding failure is named with its RFC 5802 §7
    -- server-error-value, the only way XMPP's <failure/> can carry it
    -- (RFC 6120 §6.4.5: a text, no additional data). A type we cannot
    -- check is refused before any password work and proves nothing, so
    -- it does not count against limits.sasl_attempts: the client may go
    -- on to a type or mechanism it has (once per -PLUS mechanism offered)
    local forgive = false
    if server_error == "unsupported-channel-binding-type" then
      local plus = 0
      for _, m in ipairs(mechanisms(self)) do
        if m:match("%-PLUS$") then plus = plus + 1 end
      end
      forgive = self.cb_refusals < plus
      if forgive then self.cb_refusals = self.cb_refusals + 1 end
    end
    cond = SASL_CONDS[cond] and cond or "not-authorized"
    if self.sasl_tried and cond == "not-authorized" then   -- a proof was checked: a guess
      return checked(self, self.sasl_user, false, cond, server_error)
    end
    return sasl_failure(self, cond, server_error, forgive)
  end
  if done then
    local user = account_name(self, self.sasl:username() or "")
    return checked(self, user, user ~= nil, nil, nil, out)
  end
  return self.sasl_wire.challenge(self, out)
end

--- XEP-0474 (SSDP) §"Server Sends Downgrade Protection Hash": the one
-- function both sides use (the client checks what we send with it).
M.ssdp_hash = require("lxmpp.features.sasl").ssdp_hash

-- The h= value for a SCRAM exchange of mech on this stream, or nil (the
-- `ssdp` option off). Classic SASL and SASL2 offer the same mechanisms,
-- so one list serves both (XEP-0474: the profile the client uses).
local function ssdp_of(self, mech)
  if not self.srv.ssdp then return nil end
  local hash = mech:match("^SCRAM%-SHA%-256") and "sha256" or "sha1"
  return M.ssdp_hash(mechanisms(self), self.cb and self.cb_list or nil, hash)
end

-- Exports for the other profile (server/features/sasl2.lua), which runs
-- the same exchanges, checks, throttles and attempt limits.
M.mechanisms, M.failure, M.checked, M.decode_payload = mechanisms, sasl_failure, checked, decode_payload

--- True when an exchange is under way (or its answer is being checked).
function M.busy(self)
  return self.sasl ~= nil
end

--- Starts an exchange of mechanism mech with the initial response data
-- (raw bytes; nil: none), written with `wire`. The caller has checked
-- that the stream may authenticate now.
function M.start(self, wire, mech, data)
  self.mechanism = mech
  self.sasl_wire = wire
  local offered = false
  for _, m in ipairs(mechanisms(self)) do offered = offered or m == mech end
  if not offered then return sasl_failure(self, "invalid-mechanism") end
  if mech == "PLAIN" then
    if data == nil or data == "" then
      self.sasl = "plain"
      return wire.challenge(self, "")
    end
    return check_plain(self, data)
  end
  local srv = self.srv
  self.sasl_tried, self.sasl_user = false, nil
  self.sasl = core.sasl_server({
    mechanism = mech, secret = srv.sasl_secret, iterations = srv.iterations,
    cb = mech:match("%-PLUS$") and cb_all(self) or nil, offers_plus = self.cb ~= nil, ssdp = ssdp_of(self, mech),
    lookup = function(username, hash)
      -- from here on the exchange checks a proof for this name
      self.sasl_tried, self.sasl_user = true, account_name(self, username)
      return srv:scram_credentials(self.sasl_user, hash)
    end,
  })
  if data == nil or data == "" then return wire.challenge(self, "") end
  return scram_step(self, data)
end

--- The client's response (raw bytes, or nil when not valid base64) in the
-- exchange of `wire`; false when no such exchange waits for one.
function M.respond(self, wire, data)
  if (self.sasl ~= "plain" and type(self.sasl) ~= "userdata") or self.sasl_wire ~= wire then return false end
  if not data then return sasl_failure(self, "incorrect-encoding") end
  if self.sasl == "plain" then
    self.sasl = nil
    return check_plain(self, data)
  end
  return scram_step(self, data)
end

--- Ends the exchange under way (if any) with a failure written with
-- `wire` (counted); while its answer is being checked, ends the stream.
function M.cancel(self, wire, cond, text)
  if self.sasl == "held" or self.sasl == "plain-pending" then
    return self:stream_error("policy-violation", "the authentication is being checked")
  end
  if type(self.sasl) == "userdata" then self.sasl:close() end
  self.sasl_wire = wire
  return sasl_failure(self, cond, text)
end

--- The client aborts the exchange (or, with none under way, says so).
function M.abort(self, wire)
  return M.cancel(self, wire, "aborted")
end

M.handlers = {
  [NS_SASL .. " auth"] = function(self, s)
    if self.authenticated or self.sasl then
      return self:stream_error("policy-violation", "authentication is already under way or done")
    end
    if not self.secure and not self.srv.insecure_plaintext then
      return self:stream_error("policy-violation", "STARTTLS is required before authentication")
    end
    local data = decode_payload(s)
    if not data then
      self.sasl_wire = CLASSIC
      return sasl_failure(self, "incorrect-encoding")
    end
    return M.start(self, CLASSIC, s.attr.mechanism, data)
  end,
  [NS_SASL .. " response"] = function(self, s)
    if M.respond(self, CLASSIC, decode_payload(s)) == false then
      return self:stream_error("policy-violation", "no authentication exchange is under way")
    end
  end,
  [NS_SASL .. " abort"] = function(self) return M.abort(self, CLASSIC) end,
}

return M
