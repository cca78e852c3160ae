-- A Jabber-RPC (XEP-0009) service: Lua functions other entities call with
-- XML-RPC over XMPP. Only the JIDs in LXMPP_RPC_ALLOW (comma separated)
-- and the bot's own account may call.
--
--   LXMPP_RPC_ALLOW=alice@example.org lua5.4 examples/rpc_service.lua svc@example.org secret [HOST [PORT]]
--
-- Methods: time.now() -> dateTime; math.sum(numbers...) -> number;
-- text.upper(s) -> s; kv.set(key, value) -> true; kv.get(key) -> value or
-- a fault 404; kv.keys() -> array.

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local lxmpp = require "lxmpp"
local rpc = require "lxmpp.plugins.rpc"
local common = require "common"

local opts = common.options(arg)
local allow = {}
for j in (os.getenv("LXMPP_RPC_ALLOW") or ""):gmatch("[^,%s]+") do allow[#allow + 1] = j end

local store = {}
local methods = {
  ["time.now"] = function() return rpc.datetime(os.time()) end,
  ["math.sum"] = function(...)
    local total = 0
    for i = 1, select("#", ...) do
      local x = select(i, ...)
      if type(x) ~= "number" then error(rpc.fault(400, "math.sum takes numbers")) end
      total = total + x
    end
    return total
  end,
  ["text.upper"] = function(s)
    if type(s) ~= "string" then error(rpc.fault(400, "text.upper takes a string")) end
    return s:upper()
  end,
  ["kv.set"] = function(key, value)
    if type(key) ~= "string" then error(rpc.fault(400, "keys are strings")) end
    store[key] = value
    return true
  end,
  ["kv.get"] = function(key)
    local v = store[key]
    if v == nil then error(rpc.fault(404, "no such key: " .. tostring(key))) end
    return v
  end,
  ["kv.keys"] = function()
    local keys = rpc.array()
    for k in pairs(store) do keys[#keys + 1] = k end
    table.sort(keys)
    return keys
  end,
}

lxmpp.run(function()
  local c = common.connect(opts)
  for name, fn in pairs(methods) do
    c:rpc_expose(name, function(...)
      common.say("call %s", name)
      return fn(...)
    end, { allow = allow })
  end
  c:send_presence()
  common.say("serving Jabber-RPC as %s for %s", c.jid, #allow > 0 and table.concat(allow, ", ") or "itself")
end)
