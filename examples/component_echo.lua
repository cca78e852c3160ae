-- An external component (XEP-0114) that echoes messages sent to any
-- address at its domain, from that address: the skeleton of a gateway.
--
--   lua5.4 examples/component_echo.lua echo.example.org SECRET HOST PORT
--   (or LXMPP_COMPONENT, LXMPP_SECRET, LXMPP_HOST, LXMPP_PORT)

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local lxmpp = require "lxmpp"
local common = require "common"

local domain = arg[1] or os.getenv("LXMPP_COMPONENT")
local secret = arg[2] or os.getenv("LXMPP_SECRET")
local host = arg[3] or os.getenv("LXMPP_HOST") or "127.0.0.1"
local port = tonumber(arg[4] or os.getenv("LXMPP_PORT") or "5347")
if not domain or not secret then
  io.stderr:write("usage: component_echo.lua DOMAIN SECRET [HOST [PORT]]\n")
  os.exit(2)
end

lxmpp.run(function()
  local comp = lxmpp.component({ jid = domain, secret = secret, host = host, port = port })
  local ok, message, condition = comp:connect()
  if not ok then
    common.say("cannot connect the component %s: %s (%s)", domain, message, condition)
    os.exit(1)
  end
  common.say("component %s online", domain)
  comp:on("message", function(m)
    local body = m:get_child_text("body")
    if body and m.attr.type ~= "error" then
      common.say("%s -> %s: %s", m.attr.from, m.attr.to, body)
      comp:send(lxmpp.stanza.message({ to = m.attr.from, from = m.attr.to, type = m.attr.type }, body))
    end
  end)
end)
