-- Starts spec/support/dnsd.py (a tiny authoritative DNS server, Python
-- standard library only) on a free loopback port with the given zone:
--
--   local d = dnsd.start({ ["_xmpp-client._tcp.example.test"] = { SRV = {{10, 0, 5222, "x.example.test"}} },
--                          ["x.example.test"] = { A = { "127.0.0.1" } } })
--   d.addr ("127.0.0.1:PORT"), d.log (queries received)   dnsd.stop(d)
--   dnsd.start(zone, nil, { bind = "127.0.9.7", port = 53 }): another loopback
--   address and a fixed port (for resolvers that only ask port 53; root)
--   dnsd.private(zone, dir, who): for a peer server that resolves through
--   /etc/resolv.conf and port 53 only (Prosody's net.dns, Erlang's inet_res
--   and libc's getaddrinfo): dnsd on port 53 of a random 127.x.y.z and
--   dir/resolv.conf naming it, which the peer gets in a private mount
--   namespace (d.wrap(cmd): `unshare -m` bind-mounts it over
--   /etc/resolv.conf, then execs cmd: the same pid). The machine's files
--   are not changed. Needs root and util-linux unshare: else an error.

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

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

function M.private(zone, dir, who)
  who = who or "the peer server"
  if not os.execute(NO_PRELOAD .. "unshare -m true 2>/dev/null") then
    error(who .. ": `unshare -m` failed: the private resolv.conf needs root and util-linux unshare "
      .. "(the s2s interop specs cannot run without them)")
  end
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
  local last
  for _ = 1, 10 do
    local ip = ("127.%d.%d.%d"):format(math.random(1, 254), math.random(0, 255), math.random(1, 254))
    local ok, d = pcall(M.start, zone, nil, { bind = ip, port = 53 })
    if ok then
      d.resolv_conf = dir .. "/resolv.conf"
      local f = assert(io.open(d.resolv_conf, "w"))
      f:write("nameserver ", ip, "\n")
      f:close()
      -- (sh -c: unshare execs sh, which execs cmd)
      d.wrap = function(cmd)
        return "unshare -m sh -c " .. q("mount --bind " .. q(d.resolv_conf) .. " /etc/resolv.conf && exec " .. cmd)
      end
      return d
    end
    last = d
  end
  error(who .. ": no DNS server on port 53 of a loopback address: " .. tostring(last))
end

M.NO_PRELOAD = NO_PRELOAD
return M
