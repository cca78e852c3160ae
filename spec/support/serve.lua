-- Runs the embedded server for a spec: domain example.test, a certificate
-- from the suite's test CA, any free loopback port (for components too);
-- clients log in with lxmpp.connect verifying against that CA.
--
--   serve.run({ users = { alice = "pw" } }, function(srv, port) ... end)
--   local c = serve.login(port, "alice", "pw" [, resource [, extra opts]])
--   local s = serve.expect(c, "message", function(m) return ... end)
--   serve.run_logged({ users = ..., cert = "wrongname" }, function(srv, port, log) ... end)
local compat = require "lxmpp.compat"
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local pki = require "spec.support.pki"
local clean = require "spec.support.clean"
require "spec.support.clients"     -- tracks every client made, from now on

local M = {}
M.DOMAIN = "example.test"

function M.pki() return pki.get() end

function M.run(opts, fn)
  local p = pki.get()
  lxmpp.run(function()
    opts.domain = opts.domain or M.DOMAIN
    opts.listen = opts.listen or "127.0.0.1:0"
    -- never a default port (5347 for components): it may be in use
    if opts.components and not opts.component_listen then opts.component_listen = "127.0.0.1:0" end
    if opts.tls == nil then
      local cert = p.certs[opts.cert or "good"]
      opts.tls = { cert = cert.cert, key = cert.key }
    end
    opts.cert = nil
    if opts.tls == false then opts.tls = nil end
    opts.log_level = opts.log_level or "error"
    local srv = lxmpp.server(opts)
    assert(srv:start())
    local ports = {}
    for _, a in ipairs(srv:addresses()) do ports[a.kind] = ports[a.kind] or a.port end
    local ok, err = compat.xpcall(fn, function(e)   -- (compat: fn waits, on 5.1 too)
      if type(e) == "table" then e = tostring(e.message or e[1] or e) end
      return debug.traceback(e, 2)
    end, srv, ports.c2s, ports)
    -- clients the spec left open must not reconnect forever once the
    -- server is gone (lxmpp.run would never return)
    require("spec.support.clients").kill_all()
    require("lxmpp.net").abort_all()
    srv:stop()
    lxmpp.sleep(0.05)
    if not ok then error(err, 0) end
  end)
  clean()
end

--- serve.run_logged(opts, fn): as run, keeping the server's log (info and
-- up) as "level message" lines: fn(srv, port, log). A failure's message
-- ends with the log. opts.cert names a pki certificate ("good" unless told).
function M.run_logged(opts, fn)
  local log = {}
  opts.log_level = opts.log_level or "info"
  opts.logger = function(level, msg) log[#log + 1] = level .. " " .. msg end
  local ok, err = pcall(M.run, opts, function(srv, port) return fn(srv, port, log) end)
  if not ok then error(tostring(err) .. "\nserver log:\n" .. table.concat(log, "\n"), 0) end
end

--- serve.logged(log, pattern) -> the first log line matching pattern, or nil
function M.logged(log, pattern)
  for _, line in ipairs(log) do
    if line:find(pattern) then return line end
  end
  return nil
end

--- serve.count_logged(log, pattern) -> how many log lines match pattern
function M.count_logged(log, pattern)
  local n = 0
  for _, line in ipairs(log) do
    if line:find(pattern) then n = n + 1 end
  end
  return n
end

function M.login(port, user, pw, res, extra)
  local o = { jid = user .. "@" .. M.DOMAIN .. "/" .. (res or "r"), password = pw,
    host = "127.0.0.1", port = port, cafile = pki.get().ca }
  for k, v in pairs(extra or {}) do o[k] = v end
  return lxmpp.connect(o)
end

--- Waits (at most timeout s) for an event on a client whose stanza passes
-- the filter; returns it, or nil on timeout.
function M.expect(c, event, filter, timeout)
  local args = require("spec.support.events").expect(c, event, filter, timeout)
  return args and args[1]
end

--- A collector: every stanza of `event` on c, kept in order.
function M.collect(c, event)
  local list = {}
  c:on(event, function(s) list[#list + 1] = s end)
  return list
end

--- Waits until pred() is true (polling), at most timeout seconds.
function M.until_true(pred, timeout)
  local deadline = core.now() + (timeout or 5)
  while not pred() do
    if core.now() > deadline then return false end
    lxmpp.sleep(0.02)
  end
  return true
end

return M
