-- The "stanza-out" hook: plugins that add something to what the client
-- sends (XEP-0115 caps in presence, XEP-0359 origin-id and XEP-0184
-- requests in messages, XEP-0012's idle clock) hook the client's bus under
-- "stanza-out"; each handler gets the stanza before it is serialized and may
-- add children to it. Installed once, whatever number of plugins use it.
--
-- The hook wraps the send method a client has when it is created (not when
-- this file is loaded), so a send defined later in client.lua (stream
-- management queues, say) or another plugin's wrapper (XEP-0153 avatar
-- hashes) is wrapped too, not replaced.

local st = require "lxmpp.stanza"

local error = error

local M = {}

function M.install(Client)
  if Client.outgoing_hook_installed then return Client end
  Client.outgoing_hook_installed = true
  Client.add_setup(function(self)
    local inner_send = self.send          -- the class's, or another plugin's wrapper
    --- c:send(stanza): fires "stanza-out" on the plugin bus, then sends.
    self.send = function(c, stanza)
      if not st.is_stanza(stanza) then error("send: expected a stanza", 2) end
      if c.bus:has("stanza-out") then c.bus:fire("stanza-out", stanza) end
      return inner_send(c, stanza)
    end
  end)
  return Client
end

return M
