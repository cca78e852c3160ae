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

local function bind(s, iq)
  local b = iq.tags[1]
  local res = b:get_child_text("resource")
  if res then
    local full = jid.prep(s.bare .. "/" .. res)
    if not full or res == "" then
      return s:send(st.error_reply(iq, "modify", "bad-request", "invalid resource"))
    end
    res = jid.resource(full)
  else
    res = "lx" .. core.sha1_hex(core.random(8)):sub(1, 12)
  end
  local full, cond, text = s.srv:bind(s, res)
  if not full then
    return s:send(st.error_reply(iq, cond == "resource-constraint" and "wait" or "cancel", cond, text))
  end
  s:set_ready()
  s:send(st.reply(iq):tag("bind", { xmlns = NS_BIND }):text_tag("jid", full))
end

M.handlers = {
  ["iq " .. NS_BIND] = function(s, iq)
    if not s.authenticated or iq.attr.type ~= "set" or iq.tags[1].name ~= "bind" then return false end
    return bind(s, iq)
  end,
}

return M
