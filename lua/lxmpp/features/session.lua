-- Session establishment (RFC 3921 §3), for the servers that still ask for
-- it: only when offered and not marked <optional/> (RFC 6121 Appendix E).

local st = require "lxmpp.stanza"
local session = require "lxmpp.session"

local NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"

local M = {}

function M.negotiate(client, features)
  if not client.bound or client.session_done then return nil end
  local offer = features:get_child("session", NS_SESSION)
  client.session_done = true
  if not offer or offer:get_child("optional") then return nil end
  local id = session.new_id()
  local ok, msg, cond = client:write_stanza(st.iq({ type = "set", id = id, to = client.domain })
    :tag("session", { xmlns = NS_SESSION }))
  if not ok then return client:fail(msg, cond) end
  while true do
    local reply
    reply, msg, cond = client:read()
    if not reply then return client:fail(msg, cond) end
    if reply.name == "iq" and reply.attr.id == id then
      if reply.attr.type == "result" then return nil end
      local _, econd, etext = reply:get_error()
      return client:fail("session establishment failed: " .. tostring(etext or econd), econd)
    end
  end
end

return M
