-- Resource binding (RFC 6120 §7), server side, after authentication; the
-- legacy session feature (RFC 3921 §3) is announced <optional/> (RFC 6121
-- Appendix E), and roster versioning (RFC 6121 §2.6) with it.

local core = require "lxmpp.core"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"

local NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
local NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"

local M = { name = "bind" }

function M.offer(s)
  if not s.authenticated or s.bound then return nil end
  return "<bind xmlns='" .. NS_BIND .. "'/><session xmlns='" .. NS_SESSION ..
    "'><optional/></session><ver xmlns='urn:xmpp:features:rosterver'/>"
end

--- A random resource, when the client names none (RFC 6120 §7.6.2.1).
function M.random_resource(prefix)
  return (prefix or "lx") .. core.sha1_hex(core.random(8)):sub(1, 12)
end

--- A client's resource choice, prepared (RFC 7622 §3.4), or nil when it
-- is not a valid resource of this account.
function M.prep_resource(s, res)
  local full = res ~= "" and jid.prep(s.bare .. "/" .. res)
  return full and jid.resource(full) or nil
end

--- Binds res on the authenticated stream s and ends its negotiation:
-- the full JID, or nil, condition, text (RFC 6120 §7.6.2). Also for
-- XEP-0386 (server/features/sasl2.lua).
function M.bind_resource(s, res)
  local full, cond, text = s.srv:bind(s, res)
  if not full then return nil, cond, text end
  s:set_ready()
  return full
end

local function bind(s, iq)
  local b = iq.tags[1]
  local res = b:get_child_text("resource")
  if res then
    res = M.prep_resource(s, res)
    if not res then
      return s:send(st.error_reply(iq, "modify", "bad-request", "invalid resource"))
    end
  else
    res = M.random_resource()
  end
  local full, cond, text = M.bind_resource(s, res)
  if not full then
    return s:send(st.error_reply(iq, cond == "resource-constraint" and "wait" or "cancel", cond, text))
  end
  s:send(st.reply(iq):tag("bind", { xmlns = NS_BIND }):text_tag("jid", full))
end

M.handlers = {
  ["iq " .. NS_BIND] = function(s, iq)
    if not s.authenticated or iq.attr.type ~= "set" or iq.tags[1].name ~= "bind" then return false end
    return bind(s, iq)
  end,
}

return M
