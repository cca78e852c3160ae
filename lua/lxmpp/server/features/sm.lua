-- Stream management (XEP-0198) as a stream feature of the embedded server:
-- offered once the client is authenticated (<resume/> comes before binding,
-- <enable/> after); its elements go to lua/lxmpp/server/sm.lua, which
-- holds the policy (acks, queues, hibernation, resumption).

local sm = require "lxmpp.server.sm"

local M = { name = "sm" }

function M.offer(s)
  if s.authenticated then return "<sm xmlns='" .. sm.NS .. "'/>" end
end

-- every element of the namespace, before binding and after
M.handlers = {
  [sm.NS] = function(s, el)
    if not s.authenticated then return false end
    return sm.handle(s, el)
  end,
}

return M
