-- Client State Indication (XEP-0352) as a stream feature of the embedded
-- server: offered once the client is authenticated (§4.1), unless the
-- server runs with csi = false. <active/> and <inactive/> are taken from
-- then on (before binding too: the state is the stream's, and only
-- matters once stanzas flow); before authentication they are not expected
-- and end the stream, as any element of a feature not offered. The policy
-- (what is held back while inactive) is lua/lxmpp/server/csi.lua.

local csi = require "lxmpp.server.csi"

local M = { name = "csi" }

function M.offer(s)
  if s.authenticated and s.srv.csi then return "<csi xmlns='" .. csi.NS .. "'/>" end
end

M.handlers = {
  [csi.NS] = function(s, el)
    if not s.authenticated or not s.srv.csi then return false end
    if el.name == "active" then
      s:set_active(true)
    elseif el.name == "inactive" then
      s:set_active(false)
    else
      return false                      -- <csi/> and the rest: not a nonza (XEP-0352 §9)
    end
    -- no answer (§4.2)
  end,
}

return M
