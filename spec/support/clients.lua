-- Every client the specs create, so that a failing spec cannot leave one
-- behind that reconnects forever (which would keep the next spec's
-- lxmpp.run from returning): after_each calls kill_all() before the
-- clean-up check.
local client = require "lxmpp.client"

local M = {}
local made = setmetatable({}, { __mode = "k" })

local new = client.new
client.new = function(...)
  local c = new(...)
  made[c] = true
  return c
end

--- Stops every client still alive: no reconnection, no timers, no link.
function M.kill_all()
  for c in pairs(made) do
    c.closing, c.reconnect_opts, c.online = true, nil, false
    require("lxmpp.reconnect").internal.stop_keepalive(c)
    if c.sm then c.sm:link_lost() end
    if c.backoff_waiter then c.backoff_waiter:wake() end
    if c.conn and not c.conn.closed then c.conn:abort() end
    made[c] = nil
  end
end

return M
