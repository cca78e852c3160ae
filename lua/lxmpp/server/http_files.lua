-- lxmpp.server.http_files: the HTTPS side of the upload service
-- (lxmpp.server.upload): PUT of a slot's file, GET of a stored one, on
-- lxmpp's own connections in raw mode and the server's TLS context.
--
-- HTTP/1.1 (and 1.0) is parsed strictly and within bounds: the request
-- line and headers fit in HEAD_MAX bytes with CRLF line ends and at most
-- MAX_HEADERS headers; a PUT needs a Content-Length (no chunked bodies:
-- 411; Transfer-Encoding with Content-Length: 400). The headers must come
-- within limits.http_timeout seconds of the connection (TLS included),
-- and a body may not stall that long; at most limits.http_connections
-- connections are open, limits.http_per_ip from one address (an IPv6
-- address counted by its /64: server/throttle.lua), so one address cannot
-- hold them all (docs/server.md, "Throttles"). One request
-- per connection: every answer closes it. Paths reach nothing but a table
-- lookup by token: /upload/TOKEN/NAME, TOKEN 32 lowercase hex digits.
-- Everything runs inside connection events; nothing waits.

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local net = require "lxmpp.net"
local throttle = require "lxmpp.server.throttle"

local setmetatable, tostring, tonumber, pairs, xpcall, debug, concat =
  setmetatable, tostring, tonumber, pairs, compat.xpcall, debug, table.concat

local M = {}

local HEAD_MAX = 8192
local MAX_HEADERS = 64
M.HEAD_MAX = HEAD_MAX

local REASONS = { [100] = "Continue", [200] = "OK", [201] = "Created", [400] = "Bad Request",
  [403] = "Forbidden", [404] = "Not Found", [405] = "Method Not Allowed", [408] = "Request Timeout",
  [410] = "Gone", [411] = "Length Required", [413] = "Content Too Large", [415] = "Unsupported Media Type",
  [431] = "Request Header Fields Too Large", [500] = "Internal Server Error", [501] = "Not Implemented",
  [505] = "HTTP Version Not Supported", [507] = "Insufficient Storage" }

-- Headers on every answer: files are shown as data, never run as a page of
-- this origin.
-- uploads are served inert: no sniffing, no scripts, no framing by
-- another page (XEP-0363 "Security Considerations")
local SAFE = "X-Content-Type-Options: nosniff\r\nContent-Security-Policy: default-src 'none'; sandbox; " ..
  "frame-ancestors 'none'\r\n"

local Conn = {}
Conn.__index = Conn

local function timer_target(fn) return { wake = fn } end

--- http_files.listen(service, ip, port) -> listener | nil, message, condition
function M.listen(svc, ip, port)
  local server = { svc = svc, conns = {}, n = 0, per_ip = {} }
  function server.close_all()
    local list = {}
    for c in pairs(server.conns) do list[#list + 1] = c end
    for _, c in pairs(list) do
      c.conn:abort()
      c:finish()
    end
  end
  svc.http = server
  return net.listen(ip, port, function(conn) M.accept(server, conn) end)
end

function M.accept(server, conn)
  local limits = server.svc.limits
  local peer = conn:info().peer
  local ip = throttle.key(peer)
  if server.n >= limits.http_connections or (server.per_ip[ip] or 0) >= limits.http_per_ip then
    server.svc.srv:log("warn", "upload: refused a connection from %s: too many", peer)
    return conn:abort()
  end
  local self = setmetatable({ server = server, conn = conn, ip = ip, buf = {}, size = 0, state = "head" }, Conn)
  server.conns[self] = true
  server.n = server.n + 1
  server.per_ip[ip] = (server.per_ip[ip] or 0) + 1
  conn:on("data", function(bytes) self:guarded(bytes) end)
  for _, ev in pairs({ "read-error", "write-error", "tls-failed", "closed" }) do
    conn:on(ev, function() self:finish() end)
  end
  conn:on("eof", function()   -- once answered, the answer still goes out
    if self.state ~= "done" then self:finish() end
  end)
  self:arm()
  conn:raw()
  local ok = conn:starttls(server.svc.srv.tls_ctx)
  if not ok then self:finish() end
end

-- (Re)starts the deadline: the whole head, or the next bytes of a body.
function Conn:arm()
  if self.timer then self.timer:stop() end
  local t = self.server.svc.limits.http_timeout
  self.timer = core.timer(t, timer_target(function()
    self.timer = nil
    if self.state == "head" or self.state == "body" then self:answer(408, "too slow") end
  end))
end

function Conn:finish()
  if self.state == "over" then return end
  self.state = "over"
  if self.timer then self.timer:stop() end
  self.timer = nil
  if self.slot and self.slot.busy == self then self.slot.busy = nil end   -- may be tried again
  self.slot, self.buf = nil, nil
  local server = self.server
  if server.conns[self] then
    server.conns[self] = nil
    server.n = server.n - 1
    local n = server.per_ip[self.ip] - 1
    server.per_ip[self.ip] = n > 0 and n or nil
  end
  if not self.conn.closed then self.conn:abort() end
end

--- Writes an answer and closes (gracefully: the answer goes out first).
function Conn:answer(status, text, headers, body)
  if self.state == "over" or self.state == "done" then return end
  body = body or (text and (text .. "\n")) or ""
  local head = ("HTTP/1.1 %d %s\r\nContent-Length: %d\r\nConnection: close\r\n%s"):format(status,
    REASONS[status], #body, SAFE)
  if not headers then head = head .. "Content-Type: text/plain; charset=utf-8\r\n" end
  self.state = "done"
  if self.slot and self.slot.busy == self then self.slot.busy = nil end
  local out = head .. (headers or "") .. "\r\n" .. body
  self.conn:set_max_queue(#out + 65536)
  self.conn:write(out)
  self.conn:close(self.server.svc.limits.http_timeout)
  -- a peer that does not read the answer does not keep its connection
  if self.timer then self.timer:stop() end
  self.timer = core.timer(self.server.svc.limits.http_timeout, timer_target(function()
    self.timer = nil
    self:finish()
  end))
end

function Conn:guarded(bytes)
  local ok, err = xpcall(self.on_data, debug.traceback, self, bytes)
  if not ok then
    self.server.svc.srv:log("error", "upload: internal error: %s", tostring(err))
    self:answer(500, "internal error")
  end
end

function Conn:on_data(bytes)
  if self.state == "head" then
    self.buf[#self.buf + 1] = bytes
    self.size = self.size + #bytes
    local all = concat(self.buf)
    self.buf = { all }
    local e = all:find("\r\n\r\n", 1, true)
    local head = e and all:sub(1, e + 1) or all           -- a bare LF is refused now, not at the deadline
    if head:find("[^\r]\n") or head:find("^\n") then return self:answer(400, "lines must end with CRLF") end
    if (e and e + 3 > HEAD_MAX) or (not e and self.size > HEAD_MAX) then
      return self:answer(431, "the request head is larger than " .. HEAD_MAX .. " bytes")
    end
    if not e then return end
    self.buf, self.size = {}, 0
    return self:request(head, all:sub(e + 4))
  elseif self.state == "body" then
    return self:body(bytes)
  end
end

-- Parses a request head (CRLF-terminated lines): method, target, headers
-- (lowercased names, repeats joined with ", ") | nil, status, text.
local function parse_head(head)
  if head:find("[^\r]\n") or head:find("\r[^\n]") or head:find("^\n") then
    return nil, 400, "lines must end with CRLF"
  end
  local line, rest = head:match("^([^\r]*)\r\n(.*)$")
  local method, target, major, minor = line:match("^(%u+) (/[!-~]*) HTTP/(%d)%.(%d)$")
  if not method then return nil, 400, "a malformed request line" end
  if major ~= "1" or (minor ~= "0" and minor ~= "1") then return nil, 505, "HTTP/1.1 only" end
  local headers, n = {}, 0
  for l in rest:gmatch("([^\r]*)\r\n") do
    n = n + 1
    if n > MAX_HEADERS then return nil, 431, "too many headers" end
    local name, value = l:match("^([!#$%%&'*+.^_`|~%w-]+):[ \t]*(.-)[ \t]*$")
    if not name or value:find("[%z\1-\8\10-\31\127]") then return nil, 400, "a malformed header" end
    name = name:lower()
    headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
  end
  return method, target, headers
end

-- The percent-decoded name of a path segment, or nil if malformed.
local function decode(s)
  if s:find("%%%X") or s:find("%%%x%X") or s:find("%%.?$") then return nil end
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

function Conn:request(head, rest)
  local method, target, headers = parse_head(head)
  if not method then return self:answer(target, headers) end
  local token, raw_name = target:match("^/upload/(%x+)/([^/]+)$")
  local name = raw_name and decode(raw_name)
  if token and (#token ~= 32 or token:find("%u")) then token = nil end
  local svc = self.server.svc
  if method == "GET" then
    local meta, data = nil, nil
    if token and name then meta, data = svc:file(token, name) end
    if not meta then return self:answer(404, "no such file") end
    local h = ("Content-Type: %s\r\nContent-Disposition: inline; filename*=UTF-8''%s\r\n"):format(
      meta.type or "application/octet-stream", require("lxmpp.server.upload").url_encode(meta.name))
    return self:answer(200, nil, h, data)
  elseif method ~= "PUT" then
    return self:answer(405, "only GET and PUT", "Allow: GET, PUT\r\nContent-Type: text/plain\r\n",
      "only GET and PUT\n")
  end
  local cl, te = headers["content-length"], headers["transfer-encoding"]
  if te and cl then return self:answer(400, "Transfer-Encoding and Content-Length together") end
  if not cl then return self:answer(411, "a Content-Length is required (no chunked uploads)") end
  local length = #cl <= 15 and cl:match("^%d+$") and compat.tointeger(tonumber(cl))
  if not length then return self:answer(400, "a malformed Content-Length") end
  if length > svc.max_size then return self:answer(413, "larger than " .. svc.max_size .. " bytes") end
  local slot = token and name and svc:usable_slot(token, name)
  if not slot then return self:answer(403, "no such slot, or it was used or expired") end
  if length ~= slot.size then
    return self:answer(length > slot.size and 413 or 400, "the length is not the size the slot was asked for")
  end
  local ct = headers["content-type"]
  if ct and not require("lxmpp.server.upload").valid_content_type(ct) then
    return self:answer(400, "a malformed Content-Type")
  end
  if slot.ctype and (not ct or ct:lower() ~= slot.ctype:lower()) then
    return self:answer(415, "the Content-Type is not the one the slot was asked for")
  end
  slot.busy = self
  self.slot, self.length, self.ctype = slot, length, slot.ctype or ct
  self.state = "body"
  if (headers.expect or ""):lower() == "100-continue" then self.conn:write("HTTP/1.1 100 Continue\r\n\r\n") end
  self:arm()
  return self:body(rest)
end

function Conn:body(bytes)
  if #bytes > 0 then
    self.buf[#self.buf + 1] = bytes
    self.size = self.size + #bytes
    self:arm()
  end
  if self.size < self.length then return end
  local data = concat(self.buf):sub(1, self.length)   -- bytes past the length are not ours
  self.buf = {}
  local slot = self.slot
  self.slot = nil
  local ok, status, why = self.server.svc:store(slot, data, self.ctype)
  if not ok then return self:answer(status, why or "the file could not be stored") end
  return self:answer(201, "stored")
end

return M
