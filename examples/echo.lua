-- Echoes every chat message back to its sender.
--
--   lua5.4 examples/echo.lua bot@example.org secret [HOST [PORT]]

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local lxmpp = require "lxmpp"
local common = require "common"

local opts = common.options(arg)

lxmpp.run(function()
  local c = common.connect(opts)
  common.say("online as %s", c.jid)
  c:send_presence()
  c:on("message", function(m)
    local body = m:get_child_text("body")
    if body and m.attr.type ~= "error" then
      common.say("echo to %s: %s", m.attr.from, body)
      c:send_message(m.attr.from, body, m.attr.type)
    end
  end)
end)
