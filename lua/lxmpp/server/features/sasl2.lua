-- SASL2 (XEP-0388), server side, with what it carries inline: Bind2
-- (XEP-0386: a resource, carbons, stream management and an inactive client
-- state, XEP-0352, in the same round trip, the archive's XEP-0313
-- metadata in <bound/>), stream resumption (XEP-0198 §"SASL2 And BIND2 Interaction") and
-- FAST tokens (XEP-0484, server/fast.lua). The exchanges themselves are
-- classic SASL's (server/features/sasl.lua: the same mechanisms, checks,
-- throttle and limits.sasl_attempts), written with this profile's
-- elements; success needs no stream restart. Offered only on a protected
-- stream (XEP-0388 §"Security Considerations"), beside <mechanisms/>.
-- We offer no tasks: <next/> and any other element of the namespace get
-- a <failure/>. Policy and limits: docs/server.md, "SASL2, Bind2 and FAST".

local core = require "lxmpp.core"
local sasl = require "lxmpp.server.features.sasl"
local bind = require "lxmpp.server.features.bind"
local sm = require "lxmpp.server.sm"
local fast = require "lxmpp.server.fast"

local ipairs, pairs, pcall, tostring = ipairs, pairs, pcall, tostring

local NS = "urn:xmpp:sasl:2"
local NS_BIND2 = "urn:xmpp:bind:0"
local NS_CARBONS = "urn:xmpp:carbons:2"
local NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
local NS_SM = sm.NS
local NS_FAST = fast.NS
local NS_CSI = "urn:xmpp:csi:0"

local M = { name = "sasl2", NS = NS }

local MAX_UA_TEXT = 256      -- bytes of <software/> and <device/>
local MAX_TAG = 32           -- bytes of a Bind2 <tag/> kept in the resource

local function possible(self)
  return self.secure and not self.authenticated and self.srv.sasl2
end

local function fast_on(self)
  sasl.mechanisms(self)              -- (learns the stream's channel bindings: self.cb)
  return self.srv.fast and #fast.mechanisms(self) > 0
end

-- The <authentication/> element for a SASL and an HT mechanism list (nil:
-- no FAST), made once each (at most MAX_OFFERS kept), as sasl.lua's.
local MAX_OFFERS = 32
local offers, n_offers = {}, 0

local function offer_xml(mechs, fast_mechs, csi)
  local key = table.concat(mechs, " ") .. "|" .. (fast_mechs and table.concat(fast_mechs, " ") or "-") ..
    (csi and "|csi" or "")
  local xml = offers[key]
  if xml then return xml end
  local f = { "<authentication xmlns='" .. NS .. "'>" }
  for _, m in ipairs(mechs) do f[#f + 1] = "<mechanism>" .. m .. "</mechanism>" end
  f[#f + 1] = "<inline><bind xmlns='" .. NS_BIND2 .. "'><inline><feature var='" .. NS_CARBONS ..
    "'/><feature var='" .. NS_SM .. "'/>" .. (csi and ("<feature var='" .. NS_CSI .. "'/>") or "") ..
    "</inline></bind><sm xmlns='" .. NS_SM .. "'/>"
  if fast_mechs then
    f[#f + 1] = "<fast xmlns='" .. NS_FAST .. "'>"
    for _, m in ipairs(fast_mechs) do f[#f + 1] = "<mechanism>" .. m .. "</mechanism>" end
    f[#f + 1] = "</fast>"
  end
  f[#f + 1] = "</inline></authentication>"
  xml = table.concat(f)
  if n_offers < MAX_OFFERS then offers[key], n_offers = xml, n_offers + 1 end
  return xml
end

function M.offer(self)
  if not possible(self) then return nil end
  local mechs = sasl.mechanisms(self)
  return offer_xml(mechs, fast_on(self) and fast.mechanisms(self) or nil, self.srv.csi)
end

---------------------------------------------------------------------------
-- the wire: how sasl.lua's exchange is written in this profile

local WIRE = { name = "sasl2" }
M.WIRE = WIRE

function WIRE.challenge(self, data)
  self:write("<challenge xmlns='" .. NS .. "'>" .. core.base64_encode(data) .. "</challenge>")
end

function WIRE.failure(self, cond, text)
  self.sasl2_req = nil
  self:write("<failure xmlns='" .. NS .. "'><" .. cond .. " xmlns='" .. NS_SASL .. "'/>" ..
    (text and ("<text>" .. core.xml_escape(text) .. "</text>") or "") .. "</failure>")
end

-- A Bind2 resource (XEP-0386 §"Resource identifier generation"): the
-- client's tag (only letters, digits and "-._", cut to MAX_TAG) and a dot,
-- then a part of our own: derived from the account and the user-agent id
-- when the client sent one, so one installation keeps one resource (and a
-- new login replaces its stale session), else random.
local function resource_for(self, tag, ua)
  tag = (tag or ""):gsub("[^%w%-%._]", ""):sub(1, MAX_TAG)
  local prefix = tag ~= "" and tag .. "." or nil
  local res
  if ua then
    res = (prefix or "lx") .. core.sha1_hex("bind2\0" .. self.bare .. "\0" .. ua):sub(1, 12)
  else
    res = bind.random_resource(prefix)
  end
  return bind.prep_resource(self, res) or bind.random_resource()
end

-- The account archive's <metadata/> for <bound/> (XEP-0386 §"Performing
-- the bind": the server SHOULD say what its archive holds at the time of
-- binding, as XEP-0313 §"Archive metadata"; empty for an empty archive),
-- or "" when the server keeps no account archives or the store fails.
local function archive_metadata(self)
  local im = self.srv.im
  local archive = im and im.mam
  if not (archive and archive.enabled) then return "" end
  local ok, el = pcall(archive.metadata, archive, self.user)
  if not ok then
    self:log("warn", "no archive metadata for Bind2: %s", tostring(el))
    return ""
  end
  return tostring(el)
end

-- XEP-0386 §"Performing the bind": the offline messages the archive
-- holds are cleared without being sent (the client catches up with MAM
-- from the <metadata/> of <bound/>); taken at the same moment as that
-- metadata, so what arrives later is offline storage's to send as usual.
local function drop_offline(self)
  local im = self.srv.im
  local archive = im and im.mam
  if not (archive and archive.enabled) then return end
  local ok, n = pcall(archive.drop_offline, archive, self.user, self.bare)
  if not ok then
    self:log("warn", "offline messages not cleared for Bind2: %s", tostring(n))
  elseif n > 0 then
    self:log("debug", "Bind2: %d offline messages left to the archive", n)
  end
end

-- XEP-0386: binds, clears the archived offline messages, enables carbons
-- and stream management, and makes the client inactive (XEP-0352) when it
-- asks; the <bound/>, with the archive's metadata.
local function bind2(self, b, ua)
  local full, cond, text = bind.bind_resource(self, resource_for(self, b.tag, ua))
  if not full then
    -- authenticated all the same: the client sees a bare authorization
    -- identifier and no <bound/>, and may bind as RFC 6120 §7 says
    self:log("info", "Bind2 failed (%s: %s)", cond, text)
    return ""
  end
  if ua then
    -- XEP-0386 §"Performing the bind": earlier sessions of the same
    -- client (user-agent id) end, whatever their tag
    local old = {}
    for _, s in pairs(self.srv:sessions_of(self.bare)) do
      if s ~= self and s.user_agent == ua then old[#old + 1] = s end
    end
    for _, s in ipairs(old) do self.srv:replace_session(s, "replaced by a new login of the same client") end
  end
  if b.carbons then self.carbons = true end
  if b.inactive and self.srv.csi then self:set_active(false) end
  drop_offline(self)
  local out = "<bound xmlns='" .. NS_BIND2 .. "'>" .. archive_metadata(self)
  if b.sm then out = out .. sm.enable(self, b.sm.attr.resume == "true" or b.sm.attr.resume == "1") end
  return out .. "</bound>"
end

-- The FAST token for the <success/>, if any (XEP-0484 §3.3, §3.5, §3.6).
local function token_for(self, req)
  if not req.ua or not self.srv.fast then return "" end
  local mech = req.request_token
  if not (mech and fast.offered(self, mech)) then
    mech = req.rotate and self.mechanism or nil       -- rotation: a new token of the same kind
  end
  if not mech then return "" end
  return fast.issue(self, req.ua, mech)
end

-- Stanzas the session sends while it binds (a host's resource-bind hook)
-- go out after the <success/> they would otherwise come before.
local function flush_held(self)
  local held = self.held_out
  self.held_out = nil
  for _, s in ipairs(held or {}) do self:send(s) end
end

function WIRE.success(self, final)
  local req = self.sasl2_req or {}
  self.sasl2_req = nil
  self.user_agent = req.ua           -- for this server only (XEP-0388 §2.3)
  self.held_out = {}
  local inline = {}
  local resumed
  if req.resume then                 -- first, and a success skips Bind2 (XEP-0198 §9)
    local failed
    resumed, failed = sm.resume(self, req.resume.attr.previd, req.resume.attr.h)
    if not resumed and not failed then                 -- a bad h ended the stream
      self.held_out = nil
      return
    end
    inline[#inline + 1] = resumed or failed
  end
  if req.bind and not resumed then inline[#inline + 1] = bind2(self, req.bind, req.ua) end
  inline[#inline + 1] = token_for(self, req)
  self:write("<success xmlns='" .. NS .. "'>" ..
    (final and final ~= "" and ("<additional-data>" .. core.base64_encode(final) .. "</additional-data>") or "") ..
    "<authorization-identifier>" .. core.xml_escape(self.full or self.bare) .. "</authorization-identifier>" ..
    table.concat(inline) .. "</success>")
  if resumed then
    sm.resent(self)                  -- the old stream goes on: no features
  else
    self:write(self:features())      -- no restart (XEP-0388 §2.6.1)
  end
  flush_held(self)
end

---------------------------------------------------------------------------
-- <authenticate/>

-- A user-agent id: a UUID (XEP-0388 §2.3), or at least something shaped
-- like one: 1 to 64 hex digits and dashes.
local function valid_ua_id(id)
  return #id <= 64 and id:match("^[%x%-]+$") ~= nil
end

-- What the <authenticate/> asks for besides the exchange, or nil, why.
local function request_of(el)
  local req = {}
  local seen = {}
  for _, c in ipairs(el.tags) do
    local key = (c.attr.xmlns or NS) .. " " .. c.name
    if seen[key] then return nil, "<" .. c.name .. "/> more than once" end
    seen[key] = true
    if key == NS .. " user-agent" then
      local id = c.attr.id
      if id and not valid_ua_id(id) then return nil, "the user-agent id is not a UUID" end
      for _, k in ipairs({ "software", "device" }) do
        local t = c:get_child_text(k)
        if t and #t > MAX_UA_TEXT then return nil, "<" .. k .. "/> is longer than " .. MAX_UA_TEXT .. " bytes" end
      end
      req.ua = id and id:lower()
    elseif key == NS_BIND2 .. " bind" then
      req.bind = { tag = c:get_child_text("tag"), carbons = c:get_child("enable", NS_CARBONS) ~= nil,
        sm = c:get_child("enable", NS_SM), inactive = c:get_child("inactive", NS_CSI) ~= nil }
    elseif key == NS_SM .. " resume" then
      req.resume = c
    elseif key == NS_FAST .. " request-token" then
      req.request_token = c.attr.mechanism
    elseif key == NS_FAST .. " fast" then
      local inv = c.attr.invalidate
      req.fast = { invalidate = inv == "true" or inv == "1" }
    end
    -- anything else: a feature we do not offer, ignored (XEP-0388 §2.3)
  end
  return req
end

-- A FAST exchange: one round trip, answered through sasl.lua's throttle
-- and attempt count like any other.
local function authenticate_fast(self, mech, data, req)
  if not data then return sasl.failure(self, "malformed-request", "an HT mechanism needs an initial response") end
  if not fast_on(self) or not fast.offered(self, mech) then return sasl.failure(self, "invalid-mechanism") end
  local invalidate = req.fast and req.fast.invalidate
  local user, proof, rotate = fast.verify(self, mech, data, req.ua, invalidate)
  if not proof then
    if rotate == "malformed-request" then return sasl.failure(self, rotate) end
    return sasl.checked(self, user, false, rotate)
  end
  req.rotate = rotate
  return sasl.checked(self, user, true, nil, nil, proof)
end

M.handlers = {
  [NS .. " authenticate"] = function(self, el)
    if self.authenticated or sasl.busy(self) then
      -- XEP-0388 §4.8: after success, a stream error
      return self:stream_error("policy-violation", "authentication is already under way or done")
    end
    if not possible(self) then
      return self:stream_error("policy-violation", "SASL2 is offered only over TLS")
    end
    self.sasl_wire = WIRE
    local req, why = request_of(el)
    if not req then return sasl.failure(self, "malformed-request", why) end
    local data
    local ir = el:get_child("initial-response")
    if ir then
      local text = ir:get_text() or ""
      data = text == "" and "" or core.base64_decode(text)
      if not data then return sasl.failure(self, "incorrect-encoding") end
    end
    self.sasl2_req = req
    local mech = el.attr.mechanism or ""
    if fast.is_mechanism(mech) then
      self.mechanism = mech
      return authenticate_fast(self, mech, data, req)
    end
    return sasl.start(self, WIRE, mech, data)
  end,
  [NS .. " response"] = function(self, el)
    local text = el:get_text() or ""
    if sasl.respond(self, WIRE, text == "" and "" or core.base64_decode(text)) == false then
      return self:stream_error("policy-violation", "no SASL2 exchange is under way")
    end
  end,
  [NS .. " abort"] = function(self)
    if self.authenticated then return self:stream_error("policy-violation", "already authenticated") end
    return sasl.abort(self, WIRE)
  end,
  -- <next/>, <task-data/> and the rest: no task was offered
  [NS] = function(self, el)
    if self.authenticated then
      return self:stream_error("policy-violation", "<" .. el.name .. "/> after authentication")
    end
    return sasl.cancel(self, WIRE, "malformed-request", "<" .. el.name .. "/> is not expected: no task was offered")
  end,
}

return M
