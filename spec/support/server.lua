-- The embedded server for interop specs with clients of other projects:
-- domain example.test, a certificate for it from the suite's own test CA
-- (spec/support/pki.lua) so clients verify it normally, a free loopback
-- port, and its log kept for the spec to read.
--
--   local server = require "spec.support.server"
--   server.run({ users = { alice = "pw" } }, function(srv, port, log) ... end)
--   -- log: list of "level message" lines; srv:stop() is done for you,
--   -- also when fn fails, and the failure is raised after lxmpp.run.
local lxmpp = require "lxmpp"
local pki = require "spec.support.pki"

local pairs, ipairs, pcall, error, assert, tostring, table = pairs, ipairs, pcall, error, assert, tostring, table

local M = {}

M.DOMAIN = "example.test"

--- server.run(opts, fn): opts are lxmpp.server options over the defaults
-- here (opts.cert = a pki.certs name, "good" unless told).
function M.run(opts, fn)
  local p = pki.get()
  local cert = p.certs[opts.cert or "good"]
  local log = {}
  local o = { domain = M.DOMAIN, listen = "127.0.0.1:0", log_level = "info",
    tls = { cert = cert.cert, key = cert.key },
    logger = function(level, msg) log[#log + 1] = level .. " " .. msg end }
  for k, v in pairs(opts) do if k ~= "cert" then o[k] = v end end
  local ok, err = pcall(lxmpp.run, function()
    local srv = lxmpp.server(o)
    assert(srv:start())
    local fine, ferr = pcall(fn, srv, srv:addresses()[1].port, log)
    srv:stop()
    if not fine then error(ferr, 0) end
  end)
  -- whatever a failure left behind is ended before the next spec
  lxmpp.task.cancel_all()
  require("lxmpp.net").abort_all()
  for _ = 1, 20 do if not lxmpp.step(0.01) then break end end
  if not ok then error(tostring(err) .. "\nserver log:\n" .. table.concat(log, "\n"), 0) end
end

--- server.logged(log, pattern) -> the first log line matching pattern, or nil
function M.logged(log, pattern)
  for _, line in ipairs(log) do
    if line:find(pattern) then return line end
  end
  return nil
end

return M
