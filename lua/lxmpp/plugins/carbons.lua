-- XEP-0280 message carbons: enabling and disabling, and the copies the
-- server forwards. A copy is accepted only from our own bare JID (RFC 6120
-- lets the server send it without a from, or from the account): anyone else
-- could otherwise make us believe we said or received anything (XEP-0280 §11);
-- such a forgery is dropped and logged, never delivered.
--
--   assert(c:enable_carbons())
--   c:on("carbon-received", function(message, outer) end)  -- a message to another resource
--   c:on("carbon-sent", function(message, outer) end)      -- one our other resource sent

local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local session = require "lxmpp.session"

local tostring = tostring

local NS_CARBONS = "urn:xmpp:carbons:2"
local NS_FORWARD = "urn:xmpp:forward:0"

local M = { NS_CARBONS = NS_CARBONS }

session.add_event("carbon-received")
session.add_event("carbon-sent")

-- The plugin object, c.carbons (docs/api.md "Plugins"): .enabled once the
-- server said yes to c:enable_carbons().
M.forwards = { enable_carbons = "enable", disable_carbons = "disable" }
M.events = { "carbon-received", "carbon-sent" }

local function set(self, which, timeout)
  local r, msg, cond = self.client:request(st.iq({ type = "set" }):tag(which, { xmlns = NS_CARBONS }), timeout)
  if not r then return nil, msg, cond end
  self.enabled = which == "enable"
  return true
end

--- c.carbons:enable([timeout]) -> true | nil, message, condition (c:enable_carbons)
function M:enable(timeout) return set(self, "enable", timeout) end
--- c.carbons:disable([timeout]) -> true | nil, message, condition (c:disable_carbons)
function M:disable(timeout) return set(self, "disable", timeout) end

local function on_message(self, m)
  local wrapper
  for child in m:childtags(nil, NS_CARBONS) do
    if child.name == "received" or child.name == "sent" then
      wrapper = child
      break
    end
  end
  if not wrapper then return nil end
  local from = m.attr.from
  if from ~= nil and not jid.equal(from, self.bare_jid) then
    self:log("warn", "dropped a forged carbon copy from %s", tostring(from))
    return true
  end
  local fwd = wrapper:get_child("forwarded", NS_FORWARD)
  local inner = fwd and fwd:get_child("message", "jabber:client")
  if not inner then
    self:log("warn", "dropped a carbon copy without a forwarded message")
    return true
  end
  self:fire_user("carbon-" .. wrapper.name, inner, m)
  return true
end

function M.init(_, c)
  c:add_feature(NS_CARBONS)
  c:hook_child("message", NS_CARBONS, function(s) return on_message(c, s) end, 10)
end

return M
