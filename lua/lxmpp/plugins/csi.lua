-- XEP-0352 client state indication (1.0.0): c:set_active(false) tells the
-- server the user is not looking (a phone's screen went off), so that it
-- may hold back what can wait (presence, chat states) until
-- c:set_active(true). Only when the server offers it: <csi/> in the stream
-- features after authentication (§4.1), or among Bind2's inline features
-- (XEP-0386), the only place that says so on a stream resumed inside
-- SASL2. Every stream starts active, a resumed one too (§5, §5.2): after
-- each reconnection an inactive client says so again, inside the Bind2
-- request when the server lists CSI among Bind2's inline features
-- (XEP-0386 §"Performing the bind": the new session begins inactive;
-- features/sasl2.lua), else in an <inactive/> once the session is back.
--
--   assert(c:set_active(false))      -- c.csi.active == false
--   assert(c:set_active(true))

local session = require "lxmpp.session"

local type, error, rawget = type, error, rawget

local NS = "urn:xmpp:csi:0"
local NS_SASL2 = "urn:xmpp:sasl:2"
local NS_BIND2 = "urn:xmpp:bind:0"

local M = { NS_CSI = NS }

-- The plugin object, c.csi (docs/api.md "Plugins"): .active, the state we
-- told the server (true until c:set_active(false)); .told_on, the
-- connection on whose Bind2 request an inactive state went (set by
-- features/sasl2.lua).
M.forwards = { set_active = "set_active" }

-- Does the server offer CSI on the client's stream (the features it last
-- sent)?
local function offered(c)
  local f = rawget(c, "stream_features")
  if not f then return false end
  if f:get_child("csi", NS) then return true end
  local auth = f:get_child("authentication", NS_SASL2)
  local inline = auth and auth:get_child("inline")
  local bind = inline and inline:get_child("bind", NS_BIND2)
  local bi = bind and bind:get_child("inline")
  if bi then
    for feat in bi:childtags("feature") do
      if feat.attr.var == NS then return true end
    end
  end
  return false
end

local function tell(c, active)
  if c.debug then c:log("debug", "OUT <%s xmlns='%s'/>", active and "active" or "inactive", NS) end
  return c.conn:write("<" .. (active and "active" or "inactive") .. " xmlns='" .. NS .. "'/>")
end

--- c:set_active(active) -> true | nil, message, condition: active (a
-- boolean) is the state the server is told (XEP-0352 §4.2); while the
-- client reconnects it is only remembered, and told once the session is
-- back. nil, message, "feature-not-implemented" when the server does not
-- offer CSI (the state is then unchanged).
function M:set_active(active)
  if type(active) ~= "boolean" then error("set_active: expected a boolean", 2) end
  local c = self.client
  if not offered(c) then
    return nil, "the server does not offer client state indication (XEP-0352)", "feature-not-implemented"
  end
  self.active = active
  if not c.online then return true end
  local ok, msg, cond = tell(c, active)
  if not ok then return nil, msg, cond end
  return true
end

function M.init(self, c)
  self.active = true
  -- a new or resumed stream is active (§5, §5.2): say it again, unless
  -- the Bind2 request of this connection already did
  session.Session.on(c, "reconnected", function()
    if self.active == false and c.online and self.told_on ~= c.conn and offered(c) then tell(c, false) end
  end)
end

return M
