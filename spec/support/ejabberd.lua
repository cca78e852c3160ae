-- A real ejabberd (Debian's package, 23.01 on Debian 12) for interop specs,
-- started on loopback in a temporary directory: a generated ejabberd.yml,
-- a certificate from the suite's test CA (spec/support/pki.lua), and its
-- own Mnesia spool, log and crash dump in that directory. A missing
-- ejabberd is an error, never a skip.
--
--   local ejabberd = require "spec.support.ejabberd"
--   local srv = ejabberd.start{ users = { alice = "secret" } }
--   srv.port, srv.direct_tls_port, srv.component_port, srv.domain, srv.ca,
--   srv.component, srv.component_secret, srv:log()
--   srv:stop()
--
-- Federation (spec/interop/s2s_ejabberd_spec.lua):
--   ejabberd.start{ s2s = { cert = "multidomain", suite_ca = true, dns = zone } }
-- adds an ejabberd_s2s_in listener on srv.s2s_port and what Debian's
-- ejabberd.yml has for s2s: `s2s_use_starttls: required`, mod_s2s_dialback
-- and mod_muc (rooms on srv.muc, conference.example.test). cert: which
-- certificate of spec/support/pki ejabberd shows (default "multidomain":
-- example.test and *.example.test, the MUC's name; "selfsigned": one that
-- verifies for nobody, srv.ca is then that certificate). suite_ca = false:
-- ejabberd trusts the system's CAs only (ca_file left at its default), so
-- our certificate does not verify for it: it offers SASL EXTERNAL, then
-- answers <failure/> once it has checked the certificate.
-- dns: the zone ejabberd resolves with, and nothing else: Erlang's
-- inet_res (SRV) reads /etc/resolv.conf and libc's getaddrinfo (the SRV
-- targets' addresses) too, so the VM runs in a private mount namespace
-- with a resolv.conf of its own naming spec/support/dnsd on port 53 of a
-- random loopback address (dnsd.private: root and unshare, else an error).
--
-- The Erlang VM is started directly (not through ejabberdctl, which
-- switches to the `ejabberd` system user when run as root and shares
-- /var/lib/ejabberd), as whoever runs the suite, root in CI included. It
-- runs without Erlang distribution (node nonode@nohost): no epmd is
-- started or used and no node name or cookie can clash between parallel
-- runs. Users are registered by an -eval run once ejabberd has started
-- (the same ejabberd_auth call `ejabberdctl register` makes), which then
-- prints a marker the start waits for. The VM runs in a session of its own
-- (setsid), so stop() ends it and every helper it started (erl_child_setup,
-- inet_gethost) by signalling the process group.

local compat = require "lxmpp.compat"
local pki = require "spec.support.pki"
local socket = require "socket"

local io, os, error, tostring, pairs, ipairs, assert, setmetatable, tonumber, table =
  io, os, error, tostring, pairs, ipairs, assert, setmetatable, tonumber, table

local M = {}

M.DOMAIN = "example.test"
M.COMPONENT = "gw.example.test"
M.COMPONENT_SECRET = "gateway-secret"
M.MUC = "conference.example.test"      -- mod_muc's default host, conference.@HOST@

local q, sh, read_file = pki.q, pki.sh, pki.read_file
local READY = "lxmpp-ejabberd-ready"

local free_port = require "spec.support.free_port"

-- YAML double-quoted scalar and Erlang binary literal of a string.
local function yq(s) return '"' .. tostring(s):gsub('[\\"]', "\\%0") .. '"' end
local function erl_bin(s) return '<<"' .. tostring(s):gsub('[\\"]', "\\%0") .. '"/utf8>>' end

-- Where Debian's ejabberd keeps its Erlang applications: ejabberdctl's
-- ERL_LIBS (it differs per architecture).
local function erl_libs()
  local ctl = sh("command -v ejabberdctl || true"):gsub("%s+$", "")
  if ctl == "" then
    error("ejabberd is not installed: run `make deps` (Debian package ejabberd)")
  end
  local libs = read_file(ctl):match("\nERL_LIBS='([^']+)'")
  if not libs then error("cannot find ERL_LIBS in " .. ctl) end
  return libs
end

local Server = {}
Server.__index = Server

function Server:log()
  return read_file(self.dir .. "/log/ejabberd.log") .. read_file(self.dir .. "/stdout.log")
end

-- pid: a process; "-" .. pid: its process group
-- (sh.execute: os.execute's result differs between Lua versions)
local function alive(target)
  return (require("spec.support.sh").execute(pki.NO_PRELOAD .. "kill -0 " .. target .. " 2>/dev/null"))
end

--- srv:stop(): ends the VM and everything in its process group (TERM,
-- then KILL after 5 s), then removes the directory. The VM's own pid is
-- signalled too: a start that failed at once may stop it before setsid
-- has made the group.
function Server:stop()
  local pg = self.pgid
  if pg then
    os.execute(pki.NO_PRELOAD .. "kill -TERM -" .. pg .. " 2>/dev/null; kill -TERM " .. pg .. " 2>/dev/null")
    for _ = 1, 50 do
      if not alive("-" .. pg) and not alive(pg) then break end
      socket.sleep(0.1)
    end
    os.execute(pki.NO_PRELOAD .. "kill -KILL -" .. pg .. " 2>/dev/null; kill -KILL " .. pg .. " 2>/dev/null")
    self.pgid = nil
  end
  if self.dnsd then
    require("spec.support.dnsd").stop(self.dnsd)
    self.dnsd = nil
  end
  if self.dir then
    os.execute(pki.NO_PRELOAD .. "rm -rf " .. q(self.dir))
    self.dir = nil
  end
end

local function config(self, opts, good)
  local s2s = opts.s2s
  local y = {
    "hosts:",
    "  - " .. yq(M.DOMAIN),
    "loglevel: " .. (opts.log_level or "info"),
    "log_rotate_count: 0",
    "certfiles:",
    "  - " .. yq(good.cert),
    "  - " .. yq(good.key),
    (s2s and s2s.suite_ca == false) and "" or ("ca_file: " .. yq(pki.get().ca)),
    -- Debian's ejabberd.yml: salted SCRAM keys, not passwords
    "auth_method: internal",
    "auth_password_format: scram",
    "listen:",
    "  -",
    "    port: " .. self.port,
    "    ip: \"127.0.0.1\"",
    "    module: ejabberd_c2s",
    "    max_stanza_size: 262144",
    "    access: c2s",
    "    starttls_required: true",
    "  -",
    "    port: " .. self.direct_tls_port,
    "    ip: \"127.0.0.1\"",
    "    module: ejabberd_c2s",
    "    max_stanza_size: 262144",
    "    access: c2s",
    "    tls: true",
    "  -",
    "    port: " .. self.component_port,
    "    ip: \"127.0.0.1\"",
    "    module: ejabberd_service",
    "    hosts:",
    "      " .. yq(M.COMPONENT) .. ":",
    "        password: " .. yq(M.COMPONENT_SECRET),
    -- (Debian's ejabberd.yml: the s2s listener's max_stanza_size)
    s2s and ("  -\n    port: " .. self.s2s_port .. "\n    ip: \"127.0.0.1\"\n    module: ejabberd_s2s_in"
      .. "\n    max_stanza_size: 524288") or "",
    -- (ejabberd's own default is false: no TLS at all, which we refuse)
    s2s and "s2s_use_starttls: required" or "",
    "acl:",
    "  local:",
    "    user_regexp: \"\"",
    "access_rules:",
    "  local:",
    "    allow: local",
    "  c2s:",
    "    allow: all",
    "modules:",
    "  mod_roster: {}",
    "  mod_disco: {}",
    "  mod_ping: {}",
    "  mod_caps: {}",
    "  mod_version: {}",
    "  mod_stream_mgmt:",
    "    resume_timeout: 60",
    s2s and "  mod_s2s_dialback: {}\n  mod_muc: {}" or "",
  }
  for _, line in ipairs(opts.config or {}) do y[#y + 1] = line end
  return table.concat(y, "\n") .. "\n"
end

--- start{ users = { name = password }, log_level = "info",
--          s2s = { cert =, suite_ca =, dns = } (above),
--          config = { extra ejabberd.yml lines (appended) } } -> server
function M.start(opts)
  opts = opts or {}
  local libs = erl_libs()
  local p = pki.get()
  local s2s = opts.s2s
  local cert = p.certs[s2s and (s2s.cert or "multidomain") or "good"]
  local dir = sh("mktemp -d /tmp/lxmpp-ejabberd.XXXXXX"):gsub("%s+$", "")
  local self = setmetatable({ dir = dir, domain = M.DOMAIN, ca = p.ca,
    component = M.COMPONENT, component_secret = M.COMPONENT_SECRET }, Server)
  if s2s and s2s.cert == "selfsigned" then self.ca = cert.cert end
  self.port, self.direct_tls_port, self.component_port = free_port(), free_port(), free_port()
  if s2s then self.s2s_port, self.muc = free_port(), M.MUC end
  sh("mkdir -p " .. q(dir .. "/spool") .. " " .. q(dir .. "/log"))
  if s2s and s2s.dns then
    local ok, d = pcall(require("spec.support.dnsd").private, s2s.dns, dir, "ejabberd.start{ s2s = { dns = ... } }")
    if not ok then
      self:stop()
      error(d, 0)
    end
    self.dnsd = d
  end
  local cfgpath = dir .. "/ejabberd.yml"
  local f = assert(io.open(cfgpath, "w"))
  f:write(config(self, opts, cert))
  f:close()
  -- registration once ejabberd has started (-s runs before -eval)
  local regs = {}
  for name, password in pairs(opts.users or {}) do
    regs[#regs + 1] = "ejabberd_auth:try_register(" .. erl_bin(name) .. ", " .. erl_bin(M.DOMAIN) .. ", "
      .. erl_bin(password) .. ")"
  end
  local eval = "R = [" .. table.concat(regs, ", ") .. "], "
    .. "case lists:all(fun(X) -> X =:= ok end, R) of "
    .. "true -> io:format(\"" .. READY .. "~n\"); "
    .. "false -> io:format(\"registration failed: ~p~n\", [R]) end."
  local env = table.concat({
    "HOME=" .. q(dir),
    "ERL_LIBS=" .. q(libs),
    "EJABBERD_CONFIG_PATH=" .. q(cfgpath),
    "EJABBERD_LOG_PATH=" .. q(dir .. "/log/ejabberd.log"),
    "ERL_CRASH_DUMP=" .. q(dir .. "/log/erl_crash.dump"),
  }, " ")
  local erl = "erl -noinput -noshell -mnesia dir " .. q('"' .. dir .. '/spool"') .. " -s ejabberd -eval " .. q(eval)
  -- setsid, unshare and sh exec: the VM keeps setsid's pid
  if self.dnsd then erl = self.dnsd.wrap(erl) end
  local cmd = "cd " .. q(dir) .. "; " .. env .. " setsid " .. erl
    .. " >" .. q(dir .. "/stdout.log") .. " 2>&1 </dev/null & echo $!"
  local pf = assert(io.popen(pki.NO_PRELOAD .. cmd, "r"))
  -- setsid makes the background job the leader of a new process group
  self.pgid = compat.tointeger(tonumber(pf:read("*l")))
  pf:close()
  -- ready when the users are registered and each listener is ours
  local want = { self.port, self.direct_tls_port, self.component_port, self.s2s_port }
  for _ = 1, 300 do
    local out, log = read_file(dir .. "/stdout.log"), read_file(dir .. "/log/ejabberd.log")
    if out:find("registration failed", 1, true) or not alive(self.pgid) then break end   -- the VM itself
    if out:find(READY, 1, true) then
      local all = true
      for _, port in ipairs(want) do
        all = all and log:find("connections at 127.0.0.1:" .. port .. " ", 1, true) ~= nil
      end
      if all then return self end
    end
    socket.sleep(0.1)
  end
  local log = self:log()
  self:stop()
  error("ejabberd did not start:\n" .. log)
end

return M
