-- lxmpp.server.httpd: a small, strict HTTP/1.1 server on lxmpp's own
-- connections (lxmpp.net in raw mode), plain or over TLS, for what the
-- embedded server serves over HTTP: WebSocket upgrades (RFC 7395 over RFC
-- 6455), BOSH (XEP-0124/0206), XEP-0156 host-meta, a static folder. Limits
-- and defaults: docs/server.md, "HTTP listener".
--
-- Requests are parsed strictly and within bounds (RFC 9112): the request
-- line and headers fit in HEAD_MAX bytes with CRLF line ends and at most
-- MAX_HEADERS headers, no obs-fold, Host required in HTTP/1.1, bodies by
-- Content-Length only (chunked: 411, another coding: 501, both framings:
-- 400; RFC 9112 §6.1, §6.3) and at most limits.max_body bytes (413).
-- Connections persist (HTTP/1.1) and may pipeline: answers leave in the
-- order of the requests, whenever each handler answers. HTTP/1.0 gets one
-- answer per connection. Everything runs inside connection events and
-- timers; nothing waits.
--
-- Ownership: the listener owns its connections until they close or a
-- handler takes one with res:upgrade(); from then on the connection, its
-- events and its deadlines are the handler's.

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local net = require "lxmpp.net"
local throttle = require "lxmpp.server.throttle"

local setmetatable, type, error, tostring, tonumber, pairs, ipairs, xpcall, pcall, require =
  setmetatable, type, error, tostring, tonumber, pairs, ipairs, compat.xpcall, compat.pcall, require
local concat, remove, traceback, char, os_date, io_open, math_type =
  table.concat, table.remove, debug.traceback, string.char, os.date, io.open, compat.math_type

local M = {}

M.HEAD_MAX = 8192      -- request line and headers, CRLFs included
M.MAX_HEADERS = 64

-- docs/server.md, "HTTP listener"
M.DEFAULTS = {
  connections = 256,               -- open connections, all addresses together
  per_ip = 16,                     -- open connections from one address (an IPv6 one by its /64)
  head_timeout = 10,               -- seconds: a request head, from its first byte (the first from the connection on)
  body_timeout = 10,               -- seconds a body may stall
  idle_timeout = 30,               -- seconds a connection may wait for its next request
  send_timeout = 30,               -- seconds an answer may wait for the peer to read
  max_body = 524288,               -- bytes of a request body
  requests_per_connection = 1000,  -- then the connection closes after its answer
  pipeline = 16,                   -- requests read ahead of their answers; then reading pauses
  max_unsent = 1048576,            -- bytes of answers waiting to be written; beyond, reading pauses
}

M.GUID = require("lxmpp.websocket").GUID   -- RFC 6455 §1.3

M.REASONS = {
  [100] = "Continue", [101] = "Switching Protocols", [200] = "OK", [201] = "Created", [204] = "No Content",
  [206] = "Partial Content", [301] = "Moved Permanently", [302] = "Found", [304] = "Not Modified",
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
  [405] = "Method Not Allowed", [408] = "Request Timeout", [409] = "Conflict", [411] = "Length Required",
  [413] = "Content Too Large", [414] = "URI Too Long", [415] = "Unsupported Media Type",
  [417] = "Expectation Failed", [426] = "Upgrade Required", [429] = "Too Many Requests",
  [431] = "Request Header Fields Too Large", [500] = "Internal Server Error", [501] = "Not Implemented",
  [502] = "Bad Gateway", [503] = "Service Unavailable", [505] = "HTTP Version Not Supported",
}

local TOKEN = "[!#$%%&'*+.^_`|~%w-]"

---------------------------------------------------------------------------
-- parsing (pure functions)

--- httpd.decode(s) -> s with %XX decoded, or nil if a % is not followed by
-- two hex digits.
function M.decode(s)
  if s:find("%", 1, true) and (s:find("%%%X") or s:find("%%%x%X") or s:find("%%.?$")) then return nil end
  return (s:gsub("%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end
local decode = M.decode

-- A query string as a table (application/x-www-form-urlencoded: "+" is a
-- space; the first of repeated names wins), or nil if malformed.
local function parse_query(q)
  local t = {}
  for pair in q:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k, v = decode((k:gsub("%+", " "))), decode((v:gsub("%+", " ")))
    if not k or not v or k:find("%z") or v:find("%z") then return nil end
    if t[k] == nil then t[k] = v end
  end
  return t
end

--- httpd.parse_head(head) -> request | nil, status, text
-- head: a request line and headers, each line ending in CRLF (the blank
-- line not included). The request: { method, target, version ("1.0" or
-- "1.1"), headers (names lowercased, repeats joined with ", "), raw_path,
-- path (percent-decoded), query_string, query }.
function M.parse_head(head)
  if head:find("[^\r]\n") or head:find("^\n") or head:find("\r[^\n]") or head:find("\r$") then
    return nil, 400, "lines must end with CRLF"
  end
  local line, rest = head:match("^([^\r]*)\r\n(.*)$")
  if not line then return nil, 400, "a malformed request line" end
  local method, target, major, minor = line:match("^(" .. TOKEN .. "+) ([!-~]+) HTTP/(%d)%.(%d)$")
  if not method or #method > 32 then return nil, 400, "a malformed request line" end
  if major ~= "1" then return nil, 505, "HTTP/1.x only" end
  local version = minor == "0" and "1.0" or "1.1"       -- a later 1.x is answered as 1.1 (RFC 9110 §2.5)
  local headers, n, seen = {}, 0, {}
  for l in rest:gmatch("([^\r]*)\r\n") do
    n = n + 1
    if n > M.MAX_HEADERS then return nil, 431, "more than " .. M.MAX_HEADERS .. " headers" end
    if l:find("^[ \t]") then return nil, 400, "obsolete line folding" end   -- RFC 9112 §5.2
    local name, value = l:match("^(" .. TOKEN .. "+):[ \t]*(.-)[ \t]*$")
    if not name or value:find("[%z\1-\8\10-\31\127]") then return nil, 400, "a malformed header" end
    name = name:lower()
    if seen[name] and (name == "host" or name == "content-length") then
      return nil, 400, "a repeated " .. name .. " header"
    end
    seen[name] = true
    headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
  end
  if method == "CONNECT" then return nil, 501, "not a proxy" end
  local path_query
  if target:sub(1, 1) == "/" then
    path_query = target
  elseif target == "*" and method == "OPTIONS" then
    path_query = "*"
  else   -- absolute-form (RFC 9112 §3.2.2): its authority wins over Host
    local scheme, authority, p = target:match("^(%a[%w+.-]*)://([^/?#@]+)(.*)$")
    if not scheme or (scheme:lower() ~= "http" and scheme:lower() ~= "https") then
      return nil, 400, "a malformed request target"
    end
    if p == "" then p = "/" end
    if p:sub(1, 1) ~= "/" then return nil, 400, "a malformed request target" end
    headers.host, path_query = authority, p
  end
  if version == "1.1" and not headers.host then return nil, 400, "HTTP/1.1 needs a Host header" end
  if path_query:find("#", 1, true) then return nil, 400, "a fragment in the request target" end
  local raw_path, qs = path_query:match("^([^?]*)%??(.*)$")
  local path = decode(raw_path)
  if not path or path:find("%z") then return nil, 400, "a malformed path" end
  local query = parse_query(qs)
  if not query then return nil, 400, "a malformed query" end
  return { method = method, target = target, version = version, headers = headers, raw_path = raw_path,
    path = path, query_string = qs, query = query }
end

-- The comma-separated tokens of a header, lowercased, as a set.
local function tokens(value)
  local set = {}
  for t in (value or ""):gmatch("[^,%s]+") do set[t:lower()] = true end
  return set
end

--- httpd.body_length(req) -> bytes of the body | nil, status, text
-- Content-Length only (RFC 9112 §6.3): chunked 411, another transfer
-- coding 501, both framings (a smuggling attempt) 400.
function M.body_length(req)
  local cl, te = req.headers["content-length"], req.headers["transfer-encoding"]
  if te then
    if cl then return nil, 400, "Transfer-Encoding and Content-Length together" end
    if req.version == "1.0" then return nil, 400, "Transfer-Encoding in HTTP/1.0" end   -- RFC 9112 §6.1
    if tokens(te).chunked then return nil, 411, "a Content-Length is required (no chunked bodies)" end
    return nil, 501, "transfer coding not implemented"
  end
  if not cl then return 0 end
  local length = #cl <= 15 and cl:match("^%d+$") and compat.tointeger(tonumber(cl))
  if not length then return nil, 400, "a malformed Content-Length" end
  return length
end

--- httpd.websocket_accept(key) -> the Sec-WebSocket-Accept value for a
-- Sec-WebSocket-Key (RFC 6455 §4.2.2: base64 of the SHA-1 of key .. GUID).
function M.websocket_accept(key)
  if type(key) ~= "string" then error("websocket_accept: key must be a string", 2) end
  return require("lxmpp.websocket").accept(key)
end

---------------------------------------------------------------------------
-- answers

local function http_date() return os_date("!%a, %d %b %Y %H:%M:%S GMT") end

local function check_header(name, value)
  if type(name) ~= "string" or not name:find("^" .. TOKEN .. "+$") then
    error("res:send: a malformed header name " .. tostring(name), 3)
  end
  local lname = name:lower()
  if lname == "content-length" or lname == "transfer-encoding" then
    error("res:send: " .. name .. " is set by httpd", 3)
  end
  value = tostring(value)
  if value:find("[%z\1-\8\10-\31\127]") then error("res:send: a malformed value for " .. name, 3) end
  return lname, value
end

-- The bytes of an answer: status line, headers, body (none for HEAD, 1xx, 204, 304).
local function render(status, headers, body, head_only, close, length)
  local out, have = { ("HTTP/1.1 %d %s\r\n"):format(status, M.REASONS[status] or "Unknown") }, {}
  for name, value in pairs(headers) do
    local values = type(value) == "table" and value or { value }
    for _, v in ipairs(values) do
      local lname, s = check_header(name, v)
      if lname == "connection" then
        if tokens(s).close then close = true end
      else
        have[lname] = true
        out[#out + 1] = name .. ": " .. s .. "\r\n"
      end
    end
  end
  if not have.date then out[#out + 1] = "Date: " .. http_date() .. "\r\n" end
  if not have["x-content-type-options"] then out[#out + 1] = "X-Content-Type-Options: nosniff\r\n" end
  local bodyless = status == 204 or status == 304
  if not bodyless then out[#out + 1] = "Content-Length: " .. (length or #body) .. "\r\n" end
  if close then out[#out + 1] = "Connection: close\r\n" end
  out[#out + 1] = "\r\n"
  if not head_only and not bodyless then out[#out + 1] = body end
  return concat(out), close
end

local Res = {}
Res.__index = Res

--- res:send(status, headers, body) -> true | nil, message, "closed"
-- Answers the request, now or later (from a timer, another connection's
-- event...); answers leave in request order. headers: name -> value (or a
-- list of values); Content-Length is computed, "Connection: close" closes
-- the connection after this answer. Sending twice raises.
function Res:send(status, headers, body)
  return self:answer(status, headers, body, nil, 3)
end

--- res:send_file(status, headers, file, size) -> true | nil, message, "closed"
-- As res:send, with the body read from file (an open file, at the
-- position to send from) as the peer reads: size bytes, in CHUNK pieces,
-- never the whole file in memory. The file is closed once sent, or when
-- the connection ends first (and at once for HEAD, 204, 304).
function Res:send_file(status, headers, file, size)
  if math_type(size) ~= "integer" or size < 0 then error("res:send_file: size must be an integer", 2) end
  if not file then error("res:send_file: file must be an open file", 2) end
  return self:answer(status, headers, "", { file = file, size = size }, 3)
end

local CHUNK = 65536          -- bytes of a file read at a time (res:send_file)
M.CHUNK = CHUNK

function Res:answer(status, headers, body, file, level)
  if self.answered then error("res:send: this request was already answered", level) end
  if math_type(status) ~= "integer" or status < 200 or status > 599 then
    error("res:send: status must be an integer from 200 to 599", level)
  end
  if headers ~= nil and type(headers) ~= "table" then error("res:send: headers must be a table", level) end
  body = body == nil and "" or body
  if type(body) ~= "string" then error("res:send: body must be a string", level) end
  local merged = {}
  for k, v in pairs(self.headers) do merged[k] = v end
  local lower = {}
  for k in pairs(merged) do lower[k:lower()] = k end
  for k, v in pairs(headers or {}) do
    local old = type(k) == "string" and lower[k:lower()]
    if old then merged[old] = nil end
    merged[k] = v
  end
  local c = self.c
  local head_only = self.req.method == "HEAD"
  local ok, bytes, close = pcall(render, status, merged, body, head_only, self.req.close, file and file.size)
  if not ok then
    if file then file.file:close() end
    error(bytes, level)
  end
  self.answered, self.status = true, status
  if file and (head_only or status == 204 or status == 304 or file.size == 0 or c.state == "over") then
    file.file:close()
    file = nil
  end
  if c.state == "over" then return nil, "the connection is closed", "closed" end
  self.out, self.close = bytes, close
  c.unsent = c.unsent + #bytes
  if file then
    self.file, self.left = file.file, file.size
    c.files = c.files + 1
  end
  if close and (c.state == "ready" or c.state == "blocked" or c.state == "body") then
    c.state, c.buf, c.body = "stopped", "", nil       -- requests after this one are not answered
  end
  if c.blocker == self then   -- not upgraded: what follows is HTTP again
    c.blocker = nil
    if c.state == "blocked" then c.state = "ready" end
  end
  c:flush()
  return true
end

--- res:upgrade() -> conn, leftover | nil, message, condition
-- Hands the connection over (a WebSocket upgrade): httpd stops its
-- deadlines, stops counting it against its limits and removes its event
-- handlers now; the caller sets its own (conn:on) before it returns to the
-- loop, writes the 101 answer itself, and owns the connection from here.
-- leftover: the bytes read after this request, not to be lost. Possible
-- only for a request with req.upgrade, once every earlier answer has been
-- written.
function Res:upgrade()
  local c = self.c
  if self.answered then error("res:upgrade: this request was already answered", 2) end
  if c.state == "over" then return nil, "the connection is closed", "closed" end
  if c.blocker ~= self then return nil, "not an upgrade request (req.upgrade)", "bad-request" end
  if c.queue[1] ~= self or c.waiting_drain then
    return nil, "earlier answers on this connection are still pending", "resource-constraint"
  end
  self.answered, self.status = true, 101
  remove(c.queue, 1)
  local leftover = c.buf
  c.buf = ""
  local conn = c.conn
  c:release()
  for _, ev in ipairs({ "data", "eof", "read-error", "write-error", "tls-failed", "closed", "drain" }) do
    conn:on(ev, nil)
  end
  conn:resume()
  return conn, leftover
end

--- res:on_close(fn): fn() runs if the connection ends before this answer
-- was written (a long poll whose client went away).
function Res:on_close(fn)
  if type(fn) ~= "function" then error("res:on_close: fn must be a function", 2) end
  self.closed_fn = fn
end

---------------------------------------------------------------------------
-- connections

local Conn = {}
Conn.__index = Conn

local function timer_target(fn) return { wake = fn } end

function Conn:log(level, fmt, ...) return self.server.log(level, fmt, ...) end

-- Runs fn(self, ...) so that an error is logged and the connection cut,
-- never unwound into the loop.
function Conn:guard(fn, ...)
  local ok, err = xpcall(fn, traceback, self, ...)
  if not ok then
    self:log("error", "http: internal error: %s", tostring(err))
    self:finish()
  end
end

-- Stops any deadline and starts `kind` (unless it runs already and
-- restart is false).
function Conn:deadline(kind, secs, restart)
  if self.tkind == kind and not restart then return end
  if self.timer then self.timer:stop() end
  self.timer, self.tkind = nil, nil
  if not kind then return end
  local tag = {}
  self.tkind, self.ttag = kind, tag
  self.timer = core.timer(secs, timer_target(function()
    if self.ttag ~= tag then return end
    self.timer, self.tkind = nil, nil
    self:guard(Conn.expired, kind)
  end))
end

function Conn:expired(kind)
  if self.state == "over" then return end
  if kind == "head" or kind == "body" then
    if self.buf ~= "" or kind == "body" then
      self:log("info", "http: %s too slow, from %s", kind, self.peer)
      return self:fail(408, "the request took too long")
    end
    return self:finish()                    -- nothing at all came: no answer
  elseif kind == "idle" then
    return self:shutdown()
  end
  -- "drain", "linger": the peer does not read
  self:log("info", "http: %s does not read its answers", self.peer)
  return self:finish()
end

-- The deadline that fits the state (docs/server.md, "HTTP listener").
function Conn:retime()
  local lim = self.server.limits
  if self.state == "over" or self.state == "closing" then return end
  if self.waiting_drain then return self:deadline("drain", lim.send_timeout) end
  if self.state == "body" then return self:deadline("body", lim.body_timeout) end
  if self.state == "ready" and #self.queue < lim.pipeline and not self:backlogged() then
    if self.buf ~= "" or self.nreq == 0 then return self:deadline("head", lim.head_timeout) end
    if #self.queue == 0 then return self:deadline("idle", lim.idle_timeout) end
  end
  return self:deadline(nil)
end

-- Forgets the connection: deadlines and counts. The conn itself stays.
function Conn:release()
  self.state = "over"
  self:deadline(nil)
  local server = self.server
  if server.conns[self] then
    server.conns[self] = nil
    server.n = server.n - 1
    local n = server.per_ip[self.ip] - 1
    server.per_ip[self.ip] = n > 0 and n or nil
  end
end

-- The end: everything unanswered is told, the conn cut if still open.
function Conn:finish()
  if self.state == "over" then return end
  self:release()
  local queue = self.queue
  self.queue, self.buf, self.body, self.unsent = {}, "", nil, 0
  for _, res in ipairs(queue) do
    if res.file then
      res.file:close()
      res.file = nil
    end
    if not res.out and res.closed_fn then
      local ok, err = xpcall(res.closed_fn, traceback)
      if not ok then self:log("error", "http: internal error in on_close: %s", tostring(err)) end
    end
  end
  if not self.conn.closed then self.conn:abort() end
end

-- Graceful close: what is queued goes out first; a peer that does not
-- read it within send_timeout is cut.
function Conn:shutdown()
  if self.state == "over" or self.state == "closing" then return end
  self.state = "closing"
  self.conn:shutdown(self.server.limits.send_timeout)
  self:deadline("linger", self.server.limits.send_timeout)
end

-- Answers with an error and stops reading (the rest of the input is not
-- trusted); the answer waits for the earlier ones.
function Conn:fail(status, text)
  if self.state == "over" or self.state == "closing" then return end
  self.state, self.buf, self.body = "stopped", "", nil
  self.conn:pause()
  local res = setmetatable({ c = self, req = { method = "GET", close = true }, headers = {} }, Res)
  res.answered, res.status = true, status
  res.out = render(status, { ["Content-Type"] = "text/plain; charset=utf-8",
    ["Content-Security-Policy"] = "default-src 'none'; sandbox" }, text .. "\n", false, true)
  res.close = true
  self.unsent = self.unsent + #res.out
  self.queue[#self.queue + 1] = res
  self:flush()
end

-- Writes what is left of an answer: its bytes, then its file's, a CHUNK
-- at a time. "done"; "wait" when the connection's queue is full (the peer
-- does not read: "drain" goes on), and whether bytes went out before; "short" when the file gave less than
-- its size (the promised length cannot be kept); "fail" when the
-- connection broke.
function Conn:write_answer(res)
  local progress = false
  while true do
    local bytes = res.out
    if bytes == "" then
      local f = res.file
      if not f then return "done" end
      bytes = f:read(res.left < CHUNK and res.left or CHUNK)
      if not bytes or bytes == "" then
        self:log("warn", "http: a file ended %d bytes before its size while it was sent to %s", res.left, self.peer)
        return "short"
      end
      res.left = res.left - #bytes
      if res.left == 0 then
        f:close()
        res.file, self.files = nil, self.files - 1
      end
      res.out, self.unsent = bytes, self.unsent + #bytes
    end
    local ok, _, cond = self.conn:write(bytes)
    if not ok then return cond == "resource-constraint" and "wait" or "fail", progress end
    self.unsent = self.unsent - #bytes
    res.out, progress = "", true
  end
end

-- Writes the answers that are ready, in order.
function Conn:flush()
  if self.flushing then return end
  self.flushing = true
  local queue = self.queue
  while self.state ~= "over" and self.state ~= "closing" and queue[1] and queue[1].out do
    local res = queue[1]
    local done, progress = self:write_answer(res)
    if done == "fail" then self.flushing = false; return self:finish() end
    if done == "short" then        -- what was written goes out, then the close tells the body was cut
      self.flushing = false
      return self:shutdown()
    end
    if done == "wait" then
      self.waiting_drain = true                  -- "drain" calls flush again
      if progress then self:deadline(nil) end    -- the peer reads: send_timeout starts again
      break
    end
    self.waiting_drain = false
    remove(queue, 1)
    if res.close then
      self.flushing = false
      return self:shutdown()
    end
  end
  self.flushing = false
  if self.state == "over" or self.state == "closing" then return end
  if self.eof and #queue == 0 then return self:shutdown() end
  self:read_more()
end

-- True while answers wait: the peer does not read what was written
-- (the connection's queue is full), more than max_unsent bytes of answers
-- wait for an earlier one, or a file is being sent (one open file per
-- connection). No further request is read then, so a peer that pipelines
-- requests and reads nothing holds at most one answer here (and the
-- connection's queue), not `pipeline` of them.
function Conn:backlogged()
  return self.waiting_drain or self.files > 0 or self.unsent > self.server.limits.max_unsent
end

-- Parses what is buffered, while requests may be read.
function Conn:read_more()
  if self.parsing then self.again = true; return end
  self.parsing = true
  repeat
    self.again = false
    self:parse()
  until not self.again or self.state == "over"
  self.parsing = false
  if self.state == "over" or self.state == "closing" then return end
  local lim = self.server.limits
  local stop = self.state == "blocked" or self.state == "stopped" or #self.queue >= lim.pipeline
    or self:backlogged()
  if stop and not self.paused then
    self.paused = true
    self.conn:pause()
  elseif not stop and self.paused and self.state ~= "stopped" then
    self.paused = false
    self.conn:resume()
  end
  self:retime()
end

function Conn:on_data(bytes)
  if self.state == "over" or self.state == "closing" or self.state == "stopped" then return end
  if self.state == "body" then
    local b = self.body
    b[#b + 1] = bytes
    b.size = b.size + #bytes
    if b.size < b.need then return self:deadline("body", self.server.limits.body_timeout, true) end
    local all = concat(b)
    self.body = nil
    self.buf, self.scanned = all:sub(b.need + 1), 1
    self.state = "ready"
    self:dispatch(b.req, all:sub(1, b.need))
  else
    self.buf = self.buf .. bytes
  end
  self:read_more()
end

function Conn:on_eof()
  if self.state == "over" or self.state == "closing" then return end
  self.eof = true
  if self.state == "body" or #self.queue == 0 then return self:finish() end
  self.state, self.buf = "stopped", ""       -- the answers still go out, then it closes
end

-- Reads requests from the buffer while it holds whole ones.
function Conn:parse()
  local lim = self.server.limits
  while self.state == "ready" and #self.queue < lim.pipeline and not self:backlogged() do
    local buf = self.buf
    if buf:sub(1, 2) == "\r\n" then
      repeat buf = buf:sub(3) until buf:sub(1, 2) ~= "\r\n"   -- RFC 9112 §2.2: empty lines before a request
      self.scanned = 1
    end
    self.buf = buf
    if buf == "" then return end
    -- a head that comes in small pieces is scanned once, not once per piece
    local from = self.scanned
    local e = buf:find("\r\n\r\n", from > 3 and from - 3 or 1, true)
    local new = buf:sub(from > 1 and from - 1 or 1, e and e + 1 or #buf)
    if new:find("[^\r]\n") or buf:find("^\n") then return self:fail(400, "lines must end with CRLF") end
    if (e and e + 3 > M.HEAD_MAX) or (not e and #buf > M.HEAD_MAX) then
      return self:fail(431, "the request head is larger than " .. M.HEAD_MAX .. " bytes")
    end
    if not e then
      self.scanned = #buf + 1
      return
    end
    local head = buf:sub(1, e + 1)
    self.buf, self.scanned = buf:sub(e + 4), 1
    self:deadline(nil)                              -- the head is in: its deadline is met
    local req, status, text = M.parse_head(head)
    if not req then return self:fail(status, text) end
    local length
    length, status, text = M.body_length(req)
    if not length then return self:fail(status, text) end
    if length > lim.max_body then return self:fail(413, "the body is larger than " .. lim.max_body .. " bytes") end
    local expect = req.headers.expect
    if expect then
      if expect:lower() ~= "100-continue" then return self:fail(417, "only 100-continue is expected") end
      if length > #self.buf and #self.queue == 0 then self.conn:write("HTTP/1.1 100 Continue\r\n\r\n") end
    end
    if length > #self.buf then
      self.body = { self.buf, size = #self.buf, need = length, req = req }
      self.buf, self.state = "", "body"
      return self:deadline("body", lim.body_timeout, true)
    end
    local body = self.buf:sub(1, length)
    self.buf = self.buf:sub(length + 1)
    self:dispatch(req, body)
  end
end

-- Hands a complete request to the handler.
function Conn:dispatch(req, body)
  local server = self.server
  self.nreq = self.nreq + 1
  req.body, req.peer, req.port, req.conn, req.secure = body, self.peer, self.peer_port, self.conn, self.secure
  local conn_tokens = tokens(req.headers.connection)
  req.close = req.version == "1.0" or conn_tokens.close or self.nreq >= server.limits.requests_per_connection
    or server.closed or nil
  if req.headers.upgrade and conn_tokens.upgrade and req.version == "1.1" then
    req.upgrade = req.headers.upgrade:lower()
  end
  local res = setmetatable({ c = self, req = req, headers = {} }, Res)
  self.queue[#self.queue + 1] = res
  if req.close then
    self.state, self.buf = "stopped", ""            -- nothing after this request is read
  elseif req.upgrade then
    self.state, self.blocker = "blocked", res       -- the bytes after it may not be HTTP
  end
  local ok, err = xpcall(server.handler, traceback, req, res)
  if not ok then
    self:log("error", "http: the handler failed on %s %s: %s", req.method, req.raw_path, tostring(err))
    if not res.answered and self.state ~= "over" then
      res.headers = {}
      res:send(500, { ["Content-Type"] = "text/plain; charset=utf-8", Connection = "close" }, "internal error\n")
    end
  end
end

---------------------------------------------------------------------------
-- listener

local Server = {}
Server.__index = Server

function Server:accept(conn)
  local lim = self.limits
  local info = conn:info()
  local ip = throttle.key(info.peer)
  if self.closed or self.n >= lim.connections or (self.per_ip[ip] or 0) >= lim.per_ip then
    self.log("warn", "http: refused a connection from %s: too many", info.peer)
    return conn:abort()
  end
  local c = setmetatable({ server = self, conn = conn, ip = ip, peer = info.peer, peer_port = info.port,
    buf = "", scanned = 1, queue = {}, unsent = 0, files = 0, nreq = 0, state = "ready",
    secure = self.tls_ctx ~= nil }, Conn)
  self.conns[c] = true
  self.n = self.n + 1
  self.per_ip[ip] = (self.per_ip[ip] or 0) + 1
  conn:on("data", function(bytes) c:guard(Conn.on_data, bytes) end)
  conn:on("drain", function()
    if c.waiting_drain then c:guard(Conn.flush) end
  end)
  conn:on("eof", function() c:guard(Conn.on_eof) end)
  for _, ev in ipairs({ "read-error", "write-error", "tls-failed", "closed" }) do
    conn:on(ev, function() c:guard(Conn.finish) end)
  end
  c:retime()
  conn:raw()
  if self.tls_ctx and not conn:starttls(self.tls_ctx) then c:finish() end
end

--- listener:port() -> the port it listens on
function Server:port() return self.l:port() end

--- listener:count() -> connections open (upgraded ones not counted)
function Server:count() return self.n end

--- listener:close(): stops listening and cuts every connection it holds
-- (answers not yet written are told through res:on_close).
function Server:close()
  if self.closed then return end
  self.closed = true
  self.l:close()
  local list = {}
  for c in pairs(self.conns) do list[#list + 1] = c end
  for _, c in ipairs(list) do c:finish() end
end

local function check_limits(given)
  local limits = {}
  for k, v in pairs(M.DEFAULTS) do limits[k] = v end
  for k, v in pairs(given or {}) do
    if M.DEFAULTS[k] == nil then error("httpd.listen: unknown limit " .. tostring(k), 3) end
    if type(v) ~= "number" or v ~= v or v <= 0 then error("httpd.listen: limit " .. k .. " must be positive", 3) end
    limits[k] = v
  end
  return limits
end

--- httpd.listen{ ip=, port=, tls_ctx=, limits=, log=, handler= } ->
-- listener | nil, message, condition. handler(req, res) runs for each
-- request, inside the event that completed it; see docs/server.md.
function M.listen(opts)
  if type(opts) ~= "table" then error("httpd.listen: options must be a table", 2) end
  if type(opts.handler) ~= "function" then error("httpd.listen: handler must be a function", 2) end
  if type(opts.ip) ~= "string" then error("httpd.listen: ip must be a string", 2) end
  if math_type(opts.port) ~= "integer" then error("httpd.listen: port must be an integer", 2) end
  if opts.log ~= nil and type(opts.log) ~= "function" then error("httpd.listen: log must be a function", 2) end
  local server = setmetatable({ handler = opts.handler, tls_ctx = opts.tls_ctx, limits = check_limits(opts.limits),
    log = opts.log or function() end, conns = {}, n = 0, per_ip = {} }, Server)
  local l, msg, cond = net.listen(opts.ip, opts.port, function(conn)
    local ok, err = xpcall(server.accept, traceback, server, conn)
    if not ok then
      server.log("error", "http: internal error: %s", tostring(err))
      conn:abort()
    end
  end)
  if not l then return nil, msg, cond end
  server.l = l
  return server
end

---------------------------------------------------------------------------
-- CORS (https://fetch.spec.whatwg.org/#http-cors-protocol)

--- httpd.cors(opts, handler) -> handler answering CORS preflights and
-- adding Access-Control-Allow-Origin to handler's answers.
-- opts: origins ("*" or a list of origins, default "*"), methods (default
-- "GET, HEAD, POST, OPTIONS"), headers (request headers allowed, default
-- "Content-Type"), max_age (seconds a preflight is cached, default 7200).
function M.cors(opts, handler)
  opts = opts or {}
  if type(handler) ~= "function" then error("httpd.cors: handler must be a function", 2) end
  local origins = opts.origins or "*"
  local allowed
  if origins ~= "*" then
    if type(origins) ~= "table" then error("httpd.cors: origins must be \"*\" or a list", 2) end
    allowed = {}
    for _, o in ipairs(origins) do allowed[o] = true end
  end
  local methods = opts.methods or "GET, HEAD, POST, OPTIONS"
  local allow_headers = opts.headers or "Content-Type"
  local max_age = tostring(opts.max_age or 7200)
  return function(req, res)
    local origin = req.headers.origin
    local allow = origin and (allowed == nil and "*" or (allowed[origin] and origin))
    if allowed then res.headers.Vary = "Origin" end
    if allow then res.headers["Access-Control-Allow-Origin"] = allow end
    if req.method == "OPTIONS" and origin and req.headers["access-control-request-method"] then
      if not allow then return res:send(403, { ["Content-Type"] = "text/plain" }, "origin not allowed\n") end
      return res:send(204, { ["Access-Control-Allow-Methods"] = methods,
        ["Access-Control-Allow-Headers"] = allow_headers, ["Access-Control-Max-Age"] = max_age })
    end
    return handler(req, res)
  end
end

---------------------------------------------------------------------------
-- static files

M.TYPES = {
  html = "text/html; charset=utf-8", htm = "text/html; charset=utf-8", css = "text/css; charset=utf-8",
  js = "text/javascript; charset=utf-8", mjs = "text/javascript; charset=utf-8",
  json = "application/json", map = "application/json", txt = "text/plain; charset=utf-8",
  xml = "application/xml", svg = "image/svg+xml", png = "image/png", jpg = "image/jpeg", jpeg = "image/jpeg",
  gif = "image/gif", webp = "image/webp", ico = "image/x-icon", wasm = "application/wasm",
  woff = "font/woff", woff2 = "font/woff2", ttf = "font/ttf", otf = "font/otf", mp3 = "audio/mpeg",
  ogg = "audio/ogg", mp4 = "video/mp4", webm = "video/webm", pdf = "application/pdf",
  webmanifest = "application/manifest+json",
}

local function lfs_or_nil()
  local ok, lfs = pcall(require, "lfs")
  return ok and type(lfs) == "table" and lfs.symlinkattributes and lfs or nil
end

local function plain(res, status, text, extra)
  local h = { ["Content-Type"] = "text/plain; charset=utf-8" }
  for k, v in pairs(extra or {}) do h[k] = v end
  return res:send(status, h, text .. "\n")
end

--- httpd.static(dir [, opts]) -> handler | nil, message, condition
-- Serves the regular files under dir to GET and HEAD: no "..", no dot
-- files, no encoded "/" or "\", no NUL; with LuaFileSystem, no symbolic
-- links below dir (without it: nil, unless opts.follow_symlinks). A
-- folder's index.html answers for the folder. opts: index (default
-- "index.html"), max_file (bytes, default 16 MiB), follow_symlinks, lfs
-- (a LuaFileSystem to use, for tests).
function M.static(dir, opts)
  opts = opts or {}
  if type(dir) ~= "string" or dir == "" then error("httpd.static: dir must be a string", 2) end
  local lfs = opts.lfs
  if lfs == nil then lfs = lfs_or_nil() end
  if not lfs and not opts.follow_symlinks then
    return nil, "httpd.static needs LuaFileSystem (lfs) to refuse symbolic links (or follow_symlinks = true)",
      "feature-not-implemented"
  end
  dir = dir:gsub("/+$", "")
  if dir == "" then dir = "/" end
  local index = opts.index or "index.html"
  local max_file = opts.max_file or 16 * 1048576

  -- "file", "directory", or nil (absent, a link, anything else)
  local function kind(path, below)
    if lfs then
      local mode = (below and not opts.follow_symlinks) and lfs.symlinkattributes(path, "mode")
        or lfs.attributes(path, "mode")
      return (mode == "file" or mode == "directory") and mode or nil
    end
    local f = io_open(path, "rb")
    if not f then return nil end
    local ok, _, code = f:read(0)
    f:close()
    if ok or code == nil then return "file" end     -- "" or, at the end of an empty file, nil
    return code == 21 and "directory" or nil        -- EISDIR
  end
  if kind(dir, false) ~= "directory" then return nil, "no such folder: " .. dir, "item-not-found" end

  return function(req, res)
    if req.method ~= "GET" and req.method ~= "HEAD" then
      return plain(res, 405, "only GET and HEAD", { Allow = "GET, HEAD" })
    end
    if req.raw_path:sub(1, 1) ~= "/" then return plain(res, 404, "not found") end
    local path, segs = dir, {}
    for seg in req.raw_path:sub(2):gmatch("([^/]*)/") do segs[#segs + 1] = seg end
    local last = req.raw_path:match("[^/]*$")
    for i, seg in ipairs(segs) do
      local name = decode(seg)
      if not name or name == "" or name:find("^%.") or name:find("[/\\%z]") then return plain(res, 404, "not found") end
      path = path .. "/" .. name
      if kind(path, true) ~= "directory" then return plain(res, 404, "not found") end
      segs[i] = name
    end
    local k = "directory"
    if last ~= "" then
      local name = decode(last)
      if not name or name:find("^%.") or name:find("[/\\%z]") then return plain(res, 404, "not found") end
      path = path .. "/" .. name
      k = kind(path, true)
      if k == "directory" then   -- relative links in its index need the slash
        local loc = req.raw_path .. "/" .. (req.query_string ~= "" and ("?" .. req.query_string) or "")
        return plain(res, 301, "moved", { Location = loc })
      end
    end
    if k == "directory" then
      path = path .. "/" .. index
      k = kind(path, true)
    end
    if k ~= "file" then return plain(res, 404, "not found") end
    local f = io_open(path, "rb")
    if not f then return plain(res, 404, "not found") end
    local size = f:seek("end")
    if not size or size > max_file then
      f:close()
      return plain(res, 403, "too large to serve")
    end
    f:seek("set", 0)
    local ext = path:match("%.([%w]+)$")
    local headers = { ["Content-Type"] = M.TYPES[ext and ext:lower() or ""] or "application/octet-stream",
      ["Cache-Control"] = "no-cache" }
    if size > CHUNK then return res:send_file(200, headers, f, size) end   -- read as the peer reads
    local data = f:read("*a") or ""
    f:close()
    return res:send(200, headers, data)
  end
end

return M
