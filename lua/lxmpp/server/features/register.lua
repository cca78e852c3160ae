-- In-band registration before authentication (XEP-0077 §3), server side:
-- offered as a stream feature when the server's `registration` option is
-- on and the stream is protected (or the server insecure_plaintext); the
-- requests go to the registration service, lua/lxmpp/server/register.lua.

local NS_REGISTER = "jabber:iq:register"

local M = { name = "register" }

-- (not while a SASL exchange is under way: then only its elements may
-- come, XEP-0388 §2.4)
local function allowed(s)
  return s.srv.registration and not s.authenticated and s.sasl == nil and (s.secure or s.srv.insecure_plaintext)
end

function M.offer(s)
  if allowed(s) then return "<register xmlns='http://jabber.org/features/iq-register'/>" end
end

M.handlers = {
  ["iq " .. NS_REGISTER] = function(s, iq)
    local typ = iq.attr.type
    if not allowed(s) or (typ ~= "get" and typ ~= "set") then return false end
    return s.srv.im.register:iq(s, iq)
  end,
}

return M
