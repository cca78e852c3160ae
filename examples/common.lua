-- Shared by the examples: connection options from the command line or the
-- environment, so each example runs against any server:
--
--   lua5.4 examples/dictbot.lua JID PASSWORD [HOST [PORT]]
--   LXMPP_JID=... LXMPP_PASSWORD=... [LXMPP_HOST=...] [LXMPP_PORT=...]
--   [LXMPP_CAFILE=path] [LXMPP_INSECURE=1] [LXMPP_TLS=starttls|direct|none]
--   [LXMPP_DEBUG=1] [LXMPP_MECHANISM=SCRAM-SHA-256|PLAIN|...]
--   [LXMPP_CHANNEL_BINDING=auto|false|true|tls-exporter|tls-server-end-point]
--
-- LXMPP_MECHANISM and LXMPP_CHANNEL_BINDING are the client's mechanism and
-- channel_binding options (docs/api.md, "Authentication and channel
-- binding"); unset, lxmpp picks and binds as it does by default.

local M = {}

function M.options(args)
  local getenv = os.getenv
  local o = {
    jid = args[1] or getenv("LXMPP_JID"),
    password = args[2] or getenv("LXMPP_PASSWORD"),
    host = args[3] or getenv("LXMPP_HOST"),
    port = tonumber(args[4] or getenv("LXMPP_PORT") or ""),
    cafile = getenv("LXMPP_CAFILE"),
    insecure = getenv("LXMPP_INSECURE") == "1",
    tls = getenv("LXMPP_TLS"),
    debug = getenv("LXMPP_DEBUG") == "1",
    mechanism = getenv("LXMPP_MECHANISM") ~= "" and getenv("LXMPP_MECHANISM") or nil,
  }
  local sasl = require "lxmpp.features.sasl"
  local parsed, cb = sasl.parse_channel_binding(getenv("LXMPP_CHANNEL_BINDING"))
  local bad = cb
  if parsed then bad = sasl.check_options(cb, o.mechanism) end
  if bad then
    io.stderr:write("LXMPP_CHANNEL_BINDING, LXMPP_MECHANISM: ", bad, "\n")
    os.exit(2)
  end
  o.channel_binding = cb
  if not o.jid or not o.password then
    io.stderr:write("usage: ", arg and arg[0] or "example", " JID PASSWORD [HOST [PORT]]\n",
      "   or: set LXMPP_JID and LXMPP_PASSWORD (and LXMPP_HOST, LXMPP_PORT, LXMPP_CAFILE)\n")
    os.exit(2)
  end
  return o
end

--- common.connect(opts) -> the client; or says why not and exits with 1.
function M.connect(opts)
  local c, message, condition = require("lxmpp").connect(opts)
  if not c then
    M.say("cannot connect as %s: %s (%s)", tostring(opts.jid), message, condition)
    os.exit(1)
  end
  return c
end

--- common.need_env(name, what) -> the variable's value; or says what it is
-- for and exits with 2.
function M.need_env(name, what)
  local value = os.getenv(name)
  if not value or value == "" then
    io.stderr:write("set ", name, " to ", what, "\n")
    os.exit(2)
  end
  return value
end

function M.say(fmt, ...)
  io.stdout:write(os.date("%H:%M:%S "), fmt:format(...), "\n")
  io.stdout:flush()
end

return M
