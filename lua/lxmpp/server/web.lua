-- lxmpp.server.web: the embedded server's HTTP side, for browsers and
-- HTTP-only networks (docs/server.md, "The web: WebSocket, BOSH, host-meta"):
-- the listeners of the `http` and `https` options (lxmpp.server.httpd),
-- XEP-0156 discovery (/.well-known/host-meta and host-meta.json, with CORS
-- so a page of any origin may read them), XMPP over WebSocket (RFC 7395) at
-- /xmpp-websocket (lxmpp.server.websocket) and BOSH (XEP-0124/0206) at
-- /http-bind (lxmpp.server.bosh), and a static folder (`static`) so a web
-- client can be served from the same origin. A WebSocket or BOSH stream is
-- an ordinary c2s stream over another transport (lxmpp.transport).

local httpd = require "lxmpp.server.httpd"
local xml_escape = require("lxmpp.core").xml_escape

local setmetatable, type, error, tostring, ipairs, pairs, concat =
  setmetatable, type, error, tostring, ipairs, pairs, table.concat

local M = {}

M.WEBSOCKET_PATH = "/xmpp-websocket"
M.BOSH_PATH = "/http-bind"

local REL_WS = "urn:xmpp:alt-connections:websocket"   -- XEP-0156 §3
local REL_BOSH = "urn:xmpp:alt-connections:xbosh"

--- web.check(opts): raises (at the caller of lxmpp.server) on a bad `web`
-- or `static` option; returns the web options with defaults.
function M.check(opts)
  local w = opts.web
  if w ~= nil and type(w) ~= "table" then error("lxmpp.server: web must be a table", 3) end
  w = w or {}
  for k, v in pairs(w) do
    if k == "consider_secure" then
      if type(v) ~= "boolean" then error("lxmpp.server: web.consider_secure must be a boolean", 3) end
    elseif k == "public_url" then
      if type(v) ~= "string" or not v:match("^https?://[^/]+/?$") then
        error("lxmpp.server: web.public_url must be http(s)://HOST[:PORT]/", 3)
      end
    elseif k == "see_other_uri" then
      local ok, why = require("lxmpp.websocket").redirect_url(v)
      if not ok then error("lxmpp.server: web.see_other_uri must be a ws:// or wss:// URL (" .. why .. ")", 3) end
    elseif k == "limits" then
      if type(v) ~= "table" then error("lxmpp.server: web.limits must be a table", 3) end
    elseif k ~= "cors_origins" then
      error("lxmpp.server: unknown web option '" .. tostring(k) .. "'", 3)
    end
  end
  if w.cors_origins ~= nil and w.cors_origins ~= "*" and type(w.cors_origins) ~= "table" then
    error("lxmpp.server: web.cors_origins must be \"*\" or a list of origins", 3)
  end
  if opts.static ~= nil and type(opts.static) ~= "string" then
    error("lxmpp.server: static must be the path of a folder", 3)
  end
  return w
end

-- The base URL a request reached us by: web.public_url, else its Host
-- header and whether it came over TLS.
local function base_of(self, req)
  local pub = self.opts.public_url
  if pub then return (pub:gsub("/$", "")) end
  return (req.secure and "https://" or "http://") .. (req.headers.host or "localhost")
end

-- The connection methods this server offers, as XEP-0156 links.
local function links(self, req)
  local base = base_of(self, req)
  local out = {}
  if self.websocket then
    out[#out + 1] = { rel = REL_WS, href = base:gsub("^http", "ws") .. M.WEBSOCKET_PATH }
  end
  if self.bosh then out[#out + 1] = { rel = REL_BOSH, href = base .. M.BOSH_PATH } end
  return out
end


local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' elseif c == "\\" then return "\\\\" end
    return ("\\u%04x"):format(c:byte())
  end) .. '"'
end

--- XEP-0156 §3: the XRD document and its JSON form.
function M.host_meta(list, json)
  local parts = {}
  if json then
    for i, l in ipairs(list) do
      parts[i] = '{"rel":' .. json_string(l.rel) .. ',"href":' .. json_string(l.href) .. "}"
    end
    return '{"links":[' .. concat(parts, ",") .. "]}"
  end
  for i, l in ipairs(list) do
    parts[i] = "<Link rel='" .. xml_escape(l.rel) .. "' href='" .. xml_escape(l.href) .. "'/>"
  end
  return "<?xml version='1.0' encoding='utf-8'?><XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>" ..
    concat(parts) .. "</XRD>"
end

local Web = {}
Web.__index = Web

-- GET /.well-known/host-meta(.json): readable from any origin (XEP-0156
-- §3.2: a web client on another host discovers the endpoints).
function Web:serve_host_meta(req, res, json)
  if req.method ~= "GET" and req.method ~= "HEAD" then
    return res:send(405, { ["Allow"] = "GET, HEAD" }, "")
  end
  local body = M.host_meta(links(self, req), json)
  return res:send(200, {
    ["Content-Type"] = json and "application/json" or "application/xrd+xml; charset=utf-8",
    ["Access-Control-Allow-Origin"] = "*",
    ["Cache-Control"] = "max-age=300",
  }, body)
end

function Web:handle(req, res)
  local path = req.path
  if path == "/.well-known/host-meta" then return self:serve_host_meta(req, res, false) end
  if path == "/.well-known/host-meta.json" then return self:serve_host_meta(req, res, true) end
  if path == M.WEBSOCKET_PATH and self.websocket then return self.websocket(req, res) end
  if path == M.BOSH_PATH and self.bosh then return self.bosh(req, res) end
  if self.static then return self.static(req, res) end
  return res:send(404, { ["Content-Type"] = "text/plain; charset=utf-8" }, "not found\n")
end

--- web.start(srv) -> the web side (with :close()) | nil, message, condition:
-- listens on srv.http_listen (plain) and srv.https_listen (TLS with the
-- server's certificate), adding them to srv.listeners as "http"/"https".
function M.start(srv)
  local opts = srv.web_opts
  local self = setmetatable({ srv = srv, opts = opts, listeners = {} }, Web)
  if srv.opts.static then
    local h, msg, cond = httpd.static(srv.opts.static)
    if not h then return nil, "static: " .. tostring(msg), cond end
    self.static = h
  end
  local secure_always = opts.consider_secure == true
  local ws = require "lxmpp.server.websocket"
  self.websocket = function(req, res)
    return ws.upgrade(srv, req, res, req.secure or secure_always, opts.see_other_uri)
  end
  -- BOSH answers CORS preflights itself: pages of other origins use it
  local service = require("lxmpp.server.bosh").new(srv, { consider_secure = secure_always,
    cors = { origins = opts.cors_origins or "*" } })
  self.bosh_service = service
  self.bosh = function(req, res) return service:handle(req, res) end
  local handler = function(req, res) return self:handle(req, res) end
  local log = function(level, fmt, ...) return srv:log(level, "http: " .. fmt, ...) end
  for _, spec in ipairs({ { srv.http_listen, "http", nil }, { srv.https_listen, "https", srv.tls_ctx } }) do
    for _, a in ipairs(spec[1]) do
      local l, msg, cond = httpd.listen({ ip = a.ip, port = a.port, tls_ctx = spec[3], limits = opts.limits,
        log = log, handler = handler })
      if not l then
        self:close()
        return nil, msg, cond
      end
      self.listeners[#self.listeners + 1] = l
      srv.listeners[#srv.listeners + 1] = { l = l, kind = spec[2], ip = a.ip, port = l:port() }
    end
  end
  return self
end

--- Closes the listeners and every HTTP connection; the streams they carried
-- end with the server's other streams.
function Web:close()
  for _, l in ipairs(self.listeners) do l:close() end
  self.listeners = {}
  if self.bosh_service then self.bosh_service:close_all() end
end

return M
