-- The "stanza-out" hook: plugins that add something to what the client
-- sends (XEP-0115 caps in presence, XEP-0359 origin-id and XEP-0184
-- requests in messages, XEP-0012's idle clock) hook the client's bus under
-- "stanza-out"; each handler gets the stanza before it is serialized and may
-- add children to it. Installed once, whatever number of plugins use it.

local st = require "lxmpp.stanza"

local M = {}

function M.install(Client)
  if Client.outgoing_hook_installed then return Client end
  Client.outgoing_hook_installed = true
  local base_send = Client.send
  --- c:send(stanza): fires "stanza-out" on the plugin bus, then sends.
  function Client:send(stanza)
    if self.bus:has("stanza-out") and st.is_stanza(stanza) then
      self.bus:fire("stanza-out", stanza)
    end
    return base_send(self, stanza)
  end
  return Client
end

return M
