-- Starts spec/support/dnsd.py (a tiny authoritative DNS server, Python
-- standard library only) on a free loopback port with the given zone:
--
--   local d = dnsd.start({ ["_xmpp-client._tcp.example.test"] = { SRV = {{10, 0, 5222, "x.example.test"}} },
--                          ["x.example.test"] = { A = { "127.0.0.1" } } })
--   d.addr ("127.0.0.1:PORT"), d.log (queries received)   dnsd.stop(d)
--   dnsd.start(zone, nil, { bind = "127.0.9.7", port = 53 }): another loopback
--   address and a fixed port (for resolvers that only ask port 53; root)

local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec/support"
local DNSD = HERE .. "/dnsd.py"
-- `make check` preloads the sanitizer runtime: not for python or kill
local NO_PRELOAD = "unset LD_PRELOAD; "

local M = {}

-- just enough JSON for a zone
local function json(v)
  if type(v) == "string" then return '"' .. v .. '"' end
  if type(v) == "number" then return tostring(v) end
  local out = {}
  if v[1] ~= nil then
    for i, x in ipairs(v) do out[i] = json(x) end
    return "[" .. table.concat(out, ",") .. "]"
  end
  for k, x in pairs(v) do out[#out + 1] = json(k) .. ":" .. json(x) end
  return "{" .. table.concat(out, ",") .. "}"
end

function M.start(zone, extra, where)
  where = where or {}
  local bind = where.bind or "127.0.0.1"
  if where.bind then extra = (extra or "") .. " --bind " .. bind end
  local d = { zone = os.tmpname(), log = os.tmpname() }
  local f = assert(io.open(d.zone, "w"))
  f:write(json(zone))
  f:close()
  d.pipe = assert(io.popen(("%sexec /usr/bin/python3 %s %d %s --log %s %s"):format(
    NO_PRELOAD, DNSD, where.port or 0, d.zone, d.log, extra or ""), "r"))
  d.port = tonumber(d.pipe:read("*l"))
  d.pid = tonumber((d.pipe:read("*l") or ""):match("^pid (%d+)$"))
  if not (d.port and d.pid) then
    d.pipe:close()
    os.remove(d.zone)
    os.remove(d.log)
    error("dnsd.py did not start on " .. bind .. ":" .. tostring(where.port or 0))
  end
  d.addr = bind .. ":" .. d.port
  return d
end

function M.stop(d)
  if not d then return end
  os.execute(NO_PRELOAD .. "kill " .. d.pid)
  d.pipe:close()
  os.remove(d.zone)
  os.remove(d.log)
end

M.NO_PRELOAD = NO_PRELOAD
return M
