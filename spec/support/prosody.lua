-- A real Prosody (Debian's package) for interop specs, started on loopback
-- in a temporary directory with a generated configuration and certificates
-- from the suite's own test CA (spec/support/pki.lua). CI runs as root, so
-- the config sets run_as_root. A missing Prosody is an error, never a skip.
--
--   local prosody = require "spec.support.prosody"
--   local srv = prosody.start{ users = { alice = "secret" }, require_encryption = true }
--   srv.port, srv.direct_tls_port, srv.component_port, srv.domain, srv.ca
--   (s2s = true: federation on srv.s2s_port, certificates of the suite's CA
--   required of peers: s2s_secure_auth; mod_dialback loaded as in Debian's
--   default configuration.
--   s2s = { secure_auth = false, suite_ca = false, cert = "selfsigned" }:
--   dialback accepted, peers' certificates checked against the system's CAs
--   only, Prosody's own certificate one of spec/support/pki's (srv.ca is
--   then what verifies it))
--   dns = { zone as spec/support/dnsd.lua takes }: Prosody resolves with
--   that zone only. Prosody 0.12 without lua-unbound reads the nameserver
--   lines of /etc/resolv.conf and asks port 53, so it runs in a private
--   mount namespace (unshare -m, needs root) where a resolv.conf of its
--   own names a random 127.x.y.z, on whose port 53 dnsd answers. The
--   machine's files are not changed. No root or no unshare: an error.
--   srv:stop()

local pki = require "spec.support.pki"
local socket = require "socket"

local io, os, error, tostring, pairs, ipairs, assert, setmetatable =
  io, os, error, tostring, pairs, ipairs, assert, setmetatable

local M = {}

M.DOMAIN = "example.test"
M.COMPONENT = "gw.example.test"
M.COMPONENT_SECRET = "gateway-secret"

local q, sh = pki.q, pki.sh

local free_port = require "spec.support.free_port"

local function lua_string(s) return ("%q"):format(s) end

local Server = {}
Server.__index = Server

function Server:stop()
  if self.dnsd then
    require("spec.support.dnsd").stop(self.dnsd)
    self.dnsd = nil
  end
  if self.pid then
    os.execute("kill " .. self.pid .. " 2>/dev/null")
    for _ = 1, 50 do
      if not os.execute("kill -0 " .. self.pid .. " 2>/dev/null") then break end
      socket.sleep(0.1)
    end
    os.execute("kill -9 " .. self.pid .. " 2>/dev/null")
    self.pid = nil
  end
  if self.dir then
    os.execute("rm -rf " .. q(self.dir))
    self.dir = nil
  end
end

function Server:log()
  local f = io.open(self.dir .. "/prosody.log")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

--- start{ users = {name = password}, require_encryption = true, modules = {...}, https = true,
--          components = { { "conference.example.test", "muc", "extra = 'config line'" }, ... },
--          config = { "smacks_hibernation_time = 3", ... } (extra global lines) }
local function start(opts, made)
  if not os.execute("command -v prosody >/dev/null 2>&1") then
    error("prosody is not installed: run `make deps` (Debian package prosody)")
  end
  local p = pki.get()
  local dir = sh("mktemp -d /tmp/lxmpp-prosody.XXXXXX"):gsub("%s+$", "")
  local self = setmetatable({ dir = dir, domain = M.DOMAIN, ca = p.ca,
    component = M.COMPONENT, component_secret = M.COMPONENT_SECRET }, Server)
  made(self)
  local s2s = opts.s2s == true and {} or opts.s2s
  local good = p.certs[s2s and s2s.cert or "good"]
  if s2s and s2s.cert == "selfsigned" then self.ca = good.cert end
  self.port, self.direct_tls_port, self.component_port = free_port(), free_port(), free_port()
  if opts.https then self.https_port = free_port() end     -- mod_http over TLS (srv.https_port)
  if opts.s2s then self.s2s_port = free_port() end
  os.execute("mkdir -p " .. q(dir .. "/data") .. " " .. q(dir .. "/certs"))
  if opts.dns then self.dnsd = require("spec.support.dnsd").private(opts.dns, dir, "prosody.start{ dns = ... }") end
  -- also where Prosody looks by name (the direct TLS port uses these)
  sh("cp " .. q(good.cert) .. " " .. q(dir .. "/certs/" .. M.DOMAIN .. ".crt") .. " && cp " .. q(good.key)
    .. " " .. q(dir .. "/certs/" .. M.DOMAIN .. ".key"))
  local modules = { "roster", "saslauth", "tls", "disco", "ping", "version", "time", "uptime",
    "register", "private", "carbons", "smacks", "vcard_legacy", "blocklist", "lastactivity" }
  if s2s then modules[#modules + 1] = "dialback" end
  for _, m in pairs(opts.modules or {}) do modules[#modules + 1] = m end
  local mods = {}
  for _, m in pairs(modules) do mods[#mods + 1] = lua_string(m) end
  local cfg = {
    "run_as_root = true",
    "pidfile = " .. lua_string(dir .. "/prosody.pid"),
    "data_path = " .. lua_string(dir .. "/data"),
    "log = { { levels = { min = " .. lua_string(opts.log_level or "debug") .. " }, to = 'file', filename = "
      .. lua_string(dir .. "/prosody.log") .. " } }",
    "interfaces = { '127.0.0.1' }",
    "local_interfaces = { '127.0.0.1' }",
    "c2s_ports = { " .. self.port .. " }",
    "c2s_direct_tls_ports = { " .. self.direct_tls_port .. " }",
    "legacy_ssl_ports = { }",
    "s2s_ports = { " .. (self.s2s_port or "") .. " }",
    "component_ports = { " .. self.component_port .. " }",
    "component_interface = '127.0.0.1'",
    "modules_enabled = { " .. table.concat(mods, ", ") .. " }",
    s2s and "modules_disabled = { 'admin_shell', 'posix' }" or "modules_disabled = { 's2s', 'admin_shell', 'posix' }",
    s2s and ("s2s_require_encryption = true; s2s_secure_auth = " .. tostring(s2s.secure_auth ~= false)) or "",
    s2s and s2s.suite_ca ~= false and ("ssl = { cafile = " .. lua_string(p.ca) .. " }") or "",
    "authentication = 'internal_hashed'",
    "c2s_require_encryption = " .. tostring(opts.require_encryption ~= false),
    "allow_registration = " .. tostring(opts.registration == true),
    "certificates = " .. lua_string(dir .. "/certs"),
    opts.https and ("https_ports = { " .. self.https_port .. " }; http_ports = { }; "
      .. "https_interfaces = { '127.0.0.1' }; http_interfaces = { '127.0.0.1' }; "
      .. "https_ssl = { certificate = " .. lua_string(good.cert) .. ", key = " .. lua_string(good.key) .. " }") or "",
  }
  -- extra global settings, e.g. { "smacks_hibernation_time = 3" }
  for _, line in ipairs(opts.config or {}) do cfg[#cfg + 1] = line end
  for _, line in ipairs({
    "VirtualHost " .. lua_string(M.DOMAIN),
    "  ssl = { certificate = " .. lua_string(good.cert) .. ", key = " .. lua_string(good.key) .. " }",
    "Component " .. lua_string(M.COMPONENT),
    "  component_secret = " .. lua_string(M.COMPONENT_SECRET),
  }) do cfg[#cfg + 1] = line end
  -- extra internal components: opts.components = { { "conference.example.test", "muc", "option = value" ... } }
  for _, comp in pairs(opts.components or {}) do
    cfg[#cfg + 1] = "Component " .. lua_string(comp[1]) .. " " .. lua_string(comp[2])
    for i = 3, #comp do cfg[#cfg + 1] = "  " .. comp[i] end
  end
  local cfgpath = dir .. "/prosody.cfg.lua"
  local f = assert(io.open(cfgpath, "w"))
  f:write(table.concat(cfg, "\n"), "\n")
  f:close()
  self.config = cfgpath
  for name, password in pairs(opts.users or {}) do
    sh("prosodyctl --config " .. q(cfgpath) .. " register " .. q(name) .. " " .. q(M.DOMAIN) .. " " .. q(password))
  end
  local cmd = "prosody --config " .. q(cfgpath) .. " -F"
  if opts.dns then
    -- the same pid throughout
    cmd = self.dnsd.wrap(cmd)
  end
  local pidf = assert(io.popen(pki.NO_PRELOAD .. cmd .. " >"
    .. q(dir .. "/stdout.log") .. " 2>&1 & echo $!", "r"))
  self.pid = pidf:read("*l")
  pidf:close()
  -- ready when its c2s port accepts connections
  for _ = 1, 100 do
    local c = socket.connect("127.0.0.1", self.port)
    if c then
      c:close()
      return self
    end
    socket.sleep(0.1)
  end
  local log = self:log()
  local so = io.open(dir .. "/stdout.log")
  local out = so and so:read("*a") or ""
  if so then so:close() end
  error("prosody did not start:\n" .. out .. log, 0)
end

function M.start(opts)
  opts = opts or {}
  local self
  local ok, res = pcall(function()
    return start(opts, function(s) self = s end)
  end)
  if not ok then
    if self then self:stop() end
    error(res, 0)
  end
  return res
end

return M
