-- Prosody (spec/support/prosody.lua) with its HTTP side on for the web
-- peers of web/: XMPP over WebSocket (RFC 7395, mod_websocket) and BOSH
-- (XEP-0124/0206, mod_bosh) on one plain-HTTP loopback port, a MUC service,
-- and web/ served by mod_http_files from the same origin, so the Converse.js
-- page and its WebSocket/BOSH endpoint need no CORS.
--
--   local web_prosody = require "spec.support.web_prosody"
--   local srv = web_prosody.start{ users = { alice = "pw", bot = "pw" },
--     rosters = { alice = { ["bot@example.test"] = "Dictionary bot" } } }
--   srv.http_port, srv.ws_url, srv.bosh_url, srv.muc, srv:page_url{ websocket_url = srv.ws_url }
--   srv:stop()
--
-- Prosody 0.12 settings this needs (docs/server.md, "Web peers"):
--   consider_websocket_secure / consider_bosh_secure: the HTTP port is plain
--     on loopback; without them c2s_require_encryption refuses the session
--     and PLAIN is not offered.
--   http_default_host: the page is asked for as http://127.0.0.1:PORT/, and
--     Prosody routes HTTP by Host header; without it nothing answers.
--   http_interfaces / https_ports = {}: loopback only, and no second port
--     on 5281 that would collide with a parallel run.
local prosody = require "spec.support.prosody"
local free_port = require "spec.support.free_port"
local proc = require "spec.support.proc"

local io, os, pairs, assert, table = io, os, pairs, assert, table

local M = {}

M.DOMAIN = prosody.DOMAIN
M.MUC = "conference." .. prosody.DOMAIN
M.WEB_DIR = proc.ROOT .. "/web"

local function lua_string(s) return ("%q"):format(s) end

-- Prosody's internal storage file name for a node or host: every byte
-- outside [%w] written as %xx (util/datamanager.lua's encode)
local function encode(s)
  return (s:gsub("%W", function(c) return ("%%%02x"):format(c:byte()) end))
end

--- srv:page_url(params) -> the Converse.js page on this server, its query
-- built from params (websocket_url, bosh_service_url, jid, view_mode...)
local function page_url(self, params)
  return self.http_base .. "/files/converse.html" .. require("spec.support.web_peers").query(params)
end

--- web_prosody.start{ users =, rosters = { user = { [jid] = name } }, config = {...} }
-- Rosters are written to Prosody's storage before anyone logs in: each
-- entry with subscription "both", so presence flows both ways at once.
function M.start(opts)
  opts = opts or {}
  local http_port = free_port()
  local config = {
    "http_ports = { " .. http_port .. " }",
    "http_interfaces = { '127.0.0.1' }",
    "https_ports = { }",
    "https_interfaces = { }",
    "http_default_host = " .. lua_string(M.DOMAIN),
    "http_files_dir = " .. lua_string(M.WEB_DIR),
    "consider_websocket_secure = true",
    "consider_bosh_secure = true",
  }
  for _, line in pairs(opts.config or {}) do config[#config + 1] = line end
  local srv = prosody.start({
    users = opts.users, log_level = opts.log_level,
    modules = { "http", "websocket", "bosh", "http_files" },
    components = { { M.MUC, "muc", "restrict_room_creation = false" } },
    config = config,
  })
  srv.http_port = http_port
  srv.http_base = "http://127.0.0.1:" .. http_port
  srv.ws_url = "ws://127.0.0.1:" .. http_port .. "/xmpp-websocket"
  srv.bosh_url = srv.http_base .. "/http-bind"
  srv.muc = M.MUC
  for user, items in pairs(opts.rosters or {}) do
    local dir = srv.dir .. "/data/" .. encode(M.DOMAIN) .. "/roster"
    os.execute("mkdir -p '" .. dir .. "'")
    local lines = { "return {", "  [false] = { version = 1, pending = {} };" }
    for jid, name in pairs(items) do
      lines[#lines + 1] = "  [" .. lua_string(jid) .. "] = { subscription = 'both', groups = {}, name = "
        .. lua_string(name) .. " };"
    end
    lines[#lines + 1] = "};"
    local f = assert(io.open(dir .. "/" .. encode(user) .. ".dat", "w"))
    f:write(table.concat(lines, "\n"), "\n")
    f:close()
  end
  -- ready when its HTTP port serves the page
  local socket = require "socket"
  for _ = 1, 100 do
    local c = socket.connect("127.0.0.1", http_port)
    if c then
      c:close()
      break
    end
    socket.sleep(0.1)
  end
  srv.page_url = page_url
  return srv
end

return M
