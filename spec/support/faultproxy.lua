-- The fault-injection proxy (spec/support/faultproxy.py) as the specs use
-- it: started between lxmpp and a server on loopback, driven by commands.
--
--   local faultproxy = require "spec.support.faultproxy"
--   local p = faultproxy.start{ target_port = srv.port, seed = 7 }
--   p.port                        -- where clients connect
--   p:cmd("cut 2000 20000")       -- see faultproxy.py for the commands
--   p:status().cuts               -- counters, read from its status file
--   p:stop()

local socket = require "socket"
local pki = require "spec.support.pki"

local io, os, assert, error, tonumber, setmetatable = io, os, assert, error, tonumber, setmetatable

local M = {}

local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec/support"

local free_port = require "spec.support.free_port"

local Proxy = {}
Proxy.__index = Proxy

--- p:cmd(line): one command (written at once; the proxy acts on it
-- asynchronously, within milliseconds).
function Proxy:cmd(line)
  self.pipe:write(line, "\n")
  self.pipe:flush()
end

--- p:status() -> { accepted=, cuts=, stalls=, refusals=, open=, listening= }
function Proxy:status()
  local f = io.open(self.status_path)
  if not f then return {} end
  local out = {}
  for line in f:lines() do
    local k, v = line:match("^(%w+)=(%d+)$")
    if k then out[k] = tonumber(v) end
  end
  f:close()
  return out
end

function Proxy:stop()
  if self.pipe then
    self:cmd("quit")
    self.pipe:close()       -- waits for the proxy to exit
    self.pipe = nil
  end
  os.remove(self.status_path)
end

--- start{ target_port =, seed = } -> proxy (listening when it returns)
function M.start(opts)
  local port = free_port()
  local status = os.tmpname()
  os.remove(status)
  local cmd = ("%s/usr/bin/python3 %s/faultproxy.py --listen %d --target 127.0.0.1:%d --seed %d --status %s"):format(
    pki.NO_PRELOAD, pki.q(HERE), port, opts.target_port, opts.seed or 1, pki.q(status))
  local self = setmetatable({ port = port, status_path = status }, Proxy)
  self.pipe = assert(io.popen(cmd, "w"))
  for _ = 1, 100 do
    if (self:status().listening or 0) == 1 then return self end
    socket.sleep(0.05)
  end
  self:stop()
  error("the fault proxy did not start")
end

return M
