-- lxmpp.http: a small HTTPS/1.1 client on lxmpp's own connections and TLS
-- (lxmpp.net in raw mode, core.tls_context), for what XMPP hands to HTTP:
-- XEP-0363 uploads, the WebSocket handshake, BOSH.
--
--   local status, headers, body = http.request{
--     method = "PUT", url = "https://upload.example.org/slot/file.txt",
--     headers = { ["Content-Type"] = "text/plain" }, body = "...",
--     cafile = nil, insecure = false,   -- certificates verified against the URL's host
--     address = nil,                    -- connect here instead of resolving the host
--     timeout = 30, max_response = 1 MiB }
--   -> status (integer), headers (lowercased names), body | nil, message, condition
--
-- http.request makes one request on its own connection (Connection: close).
-- A persistent connection (RFC 9112 §9.3) carries several, one after the
-- other (no pipelining), to the URL's origin:
--
--   local hc = http.open(url, { cafile =, insecure =, address =, timeout = })
--   hc:request{ method =, path = (the URL's), headers =, body =, timeout =, max_response = }
--   hc.served     -- requests answered on it so far
--   hc:usable()   -- can it carry the next request? (false once the server
--                 -- said Connection: close, closed it, or a request failed)
--   hc:close()    -- at once; a request waiting on it returns nil, message, "closed"
--
-- With upgrade = true (a WebSocket handshake, RFC 6455 §4.1) the request
-- says Connection: Upgrade, and a 101 answer returns status, headers, "",
-- conn, rest: the connection stays open in raw mode with no handlers, and
-- rest holds what the server sent after its answer's head.
--
-- A task cancelled while it connects, shakes hands or waits for an answer
-- closes that connection at once and leaves no timer (lxmpp.task.cancel).
--
-- Only https URLs (plain http only to a loopback address). Header names and
-- values with CR, LF or NUL are refused (no request smuggling through
-- headers a server handed us). The response is bounded by max_response.

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local task = require "lxmpp.task"
local net = require "lxmpp.net"

local setmetatable, type, error, tostring, tonumber, pairs, ipairs, concat =
  setmetatable, type, error, tostring, tonumber, pairs, ipairs, table.concat

local M = {}

--- http.parse_url(url) -> { scheme, host, port, path } | nil, message
function M.parse_url(url)
  if type(url) ~= "string" then return nil, "the URL is not a string" end
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  scheme = scheme and scheme:lower()
  if scheme ~= "https" and scheme ~= "http" then return nil, "not an http(s) URL: " .. url end
  local authority, path = rest:match("^([^/?#]*)(.*)$")
  if authority:find("@", 1, true) then return nil, "credentials in URLs are refused" end
  local host, port = authority:match("^%[([%x:.]+)%]:?(%d*)$")
  if not host then host, port = authority:match("^([^:]+):?(%d*)$") end
  if not host or host == "" then return nil, "no host in " .. url end
  port = port ~= "" and compat.tointeger(tonumber(port)) or (scheme == "https" and 443 or 80)
  if not port or port < 1 or port > 65535 then return nil, "bad port in " .. url end
  path = path:gsub("#.*$", "")
  if path == "" then path = "/" end
  if path:find("[%c ]") then return nil, "the URL's path has spaces or control characters" end
  return { scheme = scheme, host = host:lower(), port = port, path = path }
end

local function is_loopback(ip) return ip == "::1" or ip:match("^127%.") ~= nil end

local function check_header(name, value)
  if type(name) ~= "string" or not name:match("^[!#$%%&'*+.^_`|~%w-]+$") then
    return nil, "bad header name " .. tostring(name)
  end
  if type(value) ~= "string" or value:find("[\r\n%z]") then return nil, "bad value for header " .. name end
  return true
end

local function check_headers(headers)
  for name, value in pairs(headers or {}) do
    local ok, herr = check_header(name, value)
    if not ok then return nil, herr end
  end
  return true
end

-- Parses the status line and headers of `head`; status, headers, minor
-- version | nil, msg.
local function parse_head(head)
  local minor, status = head:match("^HTTP/1%.([01]) (%d%d%d)[^\r\n]*\r\n")
  if not status then return nil, "not an HTTP/1.x response" end
  local headers = {}
  for line in head:gmatch("\r\n([^\r\n]+)") do
    local name, value = line:match("^([^:%s]+):%s*(.-)%s*$")
    if not name then return nil, "a malformed response header" end
    name = name:lower()
    headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
  end
  return compat.tointeger(tonumber(status)), headers, minor
end

-- Decodes a chunked body starting at pos of s (RFC 9112 §7.1): the body
-- and the position after its trailer section, or nil while incomplete, or
-- false, msg.
local function dechunk(s, pos)
  local out = {}
  while true do
    local size_hex, after = s:match("^(%x+)[^\r\n]*\r\n()", pos)
    if not size_hex then
      if #s - pos > 64 and not s:find("\r\n", pos, true) then return false, "a malformed chunk" end
      return nil
    end
    local size = tonumber(size_hex, 16)
    if size == 0 then
      if #s < after + 1 then return nil end
      if s:sub(after, after + 1) == "\r\n" then return concat(out), after + 2 end
      local e = s:find("\r\n\r\n", after, true)           -- trailer fields, then an empty line
      if not e then return nil end
      return concat(out), e + 4
    end
    if #s < after + size + 1 then return nil end
    out[#out + 1] = s:sub(after, after + size - 1)
    if s:sub(after + size, after + size + 1) ~= "\r\n" then return false, "a malformed chunk" end
    pos = after + size + 2
  end
end

-- The response in `all` (what was read so far; `ended`: the connection
-- ended after it): nil while incomplete; or status, headers, body, keep
-- (the connection can carry another request), rest (what followed the
-- head); or false, msg[, cond].
local function response(all, ended, method)
  local head_end = all:find("\r\n\r\n", 1, true)
  if not head_end then
    if #all > 65536 then return false, "a malformed HTTP response" end
    if ended then return false, "the connection closed before the answer", "closed" end
    return nil
  end
  local status, headers, minor = parse_head(all:sub(1, head_end + 1))
  if not status then return false, headers end
  local start = head_end + 4
  if status >= 100 and status < 200 and status ~= 101 then     -- interim (RFC 9110 §15.2): the answer follows
    return response(all:sub(start), ended, method)
  end
  local keep = minor == "1" and not (headers.connection or ""):lower():find("close", 1, true)
  local te, cl = headers["transfer-encoding"], headers["content-length"]
  local body, stop
  if method == "HEAD" or status == 204 or status == 304 or status == 101 then
    body, stop = "", start
  elseif te and te:lower():find("chunked", 1, true) then
    local derr
    body, derr = dechunk(all, start)
    if body == false then return false, derr end
    stop = derr
  elseif cl then
    local n = cl:match("^%d+$") and tonumber(cl)
    if not n then return false, "a malformed Content-Length" end
    if #all - start + 1 >= n then body, stop = all:sub(start, start + n - 1), start + n end
  elseif ended then                   -- delimited by the end of the connection
    body, stop, keep = all:sub(start), #all + 1, false
  end
  if not body then
    if ended then return false, "the connection closed in the middle of the response", "closed" end
    return nil
  end
  -- bytes past the answer we asked for: the connection cannot be trusted
  if stop <= #all then keep = false end
  return status, headers, body, keep, all:sub(head_end + 4)
end

-- The address to connect to for the parsed URL u: ip | nil, msg, cond
local function address_of(u, opts)
  local ip = opts.address
  if not ip then
    if u.host:match("^[%d.]+$") or u.host:find(":", 1, true) then ip = u.host
    else
      local ips, msg, cond = require("lxmpp.resolve").addresses(u.host)
      if not ips then return nil, msg, cond end
      ip = ips[1]
    end
  end
  if u.scheme == "http" and not is_loopback(ip) then
    return nil, "plain http is refused (use https)", "not-acceptable"
  end
  return ip
end

-- A connection to u's origin: TCP, then for https TLS verified against
-- u.host, within timeout seconds. conn | nil, msg, cond
local function dial(u, opts, timeout)
  local ip, amsg, acond = address_of(u, opts)
  if not ip then return nil, amsg, acond end
  local conn, msg, cond = net.connect(ip, u.port, timeout)
  if not conn then return nil, msg, cond end
  if u.scheme == "https" then
    local ctx, cmsg, ccond = core.tls_context({ mode = "client", cafile = opts.cafile,
      insecure = opts.insecure == true, alpn = "http/1.1" })
    if not ctx then conn:abort() return nil, cmsg, ccond end
    local w = task.waiter("http.request", 2)
    -- the peer closing the connection ends the wait too
    conn:on("tls-done", function() w:wake(true) end)
    conn:on("tls-failed", function(m, c) w:wake(nil, m, c) end)
    conn:on("eof", function() w:wake(nil, "the connection closed during the TLS handshake", "closed") end)
    conn:on("read-error", function(m) w:wake(nil, m, "closed") end)
    local ok, serr = conn:starttls(ctx, core.to_ascii(u.host) or u.host)
    if not ok then conn:abort() return nil, serr, "tls-failed" end
    local t = core.timer(timeout, w)
    -- a cancelled task (its own, or a client's c:close() ending its
    -- connection attempt) leaves no timer and no connection behind
    w.cancel = function()
      t:stop()
      conn:abort()
    end
    local done, emsg, econd = w:wait()
    t:stop()
    for _, ev in ipairs({ "tls-done", "tls-failed", "eof", "read-error" }) do conn:on(ev, nil) end
    if not done then
      conn:abort()
      return nil, emsg or "the TLS handshake timed out", econd or "timeout"
    end
  end
  return conn
end

---------------------------------------------------------------------------
-- persistent connections

local Conn = {}
Conn.__index = Conn

-- Ends the current wait, if a request waits.
local function poke(self, ...)
  local w = self.w
  if w then
    self.w = nil
    w:wake(...)
  end
end

--- http.open(url [, opts]) -> hc | nil, message, condition: a connection
-- to the URL's origin for requests one after the other (the header above).
-- opts: cafile, insecure, address, timeout (connecting, default 30).
function M.open(url, opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("http.open: options must be a table", 2) end
  local u, uerr = M.parse_url(url)
  if not u then return nil, uerr, "bad-request" end
  task.current("http.open", 1)
  local conn, msg, cond = dial(u, opts, opts.timeout or 30)
  if not conn then return nil, msg, cond end
  local self = setmetatable({ conn = conn, u = u, buf = {}, size = 0, max = 0, ended = false, closed = false,
    busy = false, keep = true, served = 0 }, Conn)
  conn:on("data", function(bytes)
    if not self.busy then        -- nothing asked: a server that talks out of turn
      self.keep = false
      return
    end
    self.size = self.size + #bytes
    self.buf[#self.buf + 1] = bytes
    if self.size > self.max then
      return poke(self, nil, "the response is larger than " .. self.max .. " bytes", "resource-constraint")
    end
    poke(self, "data")
  end)
  conn:on("eof", function() self.ended = true; poke(self, "eof") end)
  conn:on("read-error", function(m) self.ended = true; poke(self, nil, m, "closed") end)
  conn:on("closed", function() self.ended, self.closed = true, true; poke(self, "eof") end)
  conn:raw()
  return self
end

--- hc:usable() -> can this connection carry another request now?
function Conn:usable()
  return not self.closed and not self.ended and self.keep and not self.busy
end

--- hc:close(): closes the connection at once; a request waiting on it
-- returns nil, message, "closed".
function Conn:close()
  if not self.closed then
    self.closed = true
    self.conn:abort()
  end
  poke(self, nil, "the HTTP connection was closed", "closed")
end

local function fail(self, t, ...)
  t:stop()
  self.busy, self.keep = false, false
  if not self.closed then
    self.closed = true
    self.conn:abort()
  end
  return ...
end

--- hc:request{ method =, path =, headers =, body =, timeout =, max_response =,
-- close = (send Connection: close), upgrade = } -> status, headers, body |
-- nil, message, condition. One request at a time: misuse raises.
function Conn:request(o)
  if type(o) ~= "table" then error("hc:request: expected an options table", 2) end
  if self.busy then error("hc:request: a request is already under way on this connection", 2) end
  local method = o.method or "GET"
  if type(method) ~= "string" or not method:match("^%u+$") then error("http.request: bad method", 2) end
  local body = o.body or ""
  if type(body) ~= "string" then error("http.request: body must be a string", 2) end
  local hok, herr = check_headers(o.headers)
  if not hok then return nil, herr, "bad-request" end
  if not self:usable() then return nil, "the HTTP connection cannot take another request", "closed" end
  local u = self.u
  local lines = { ("%s %s HTTP/1.1"):format(method, o.path or u.path),
    "Host: " .. (u.host:find(":", 1, true) and ("[" .. u.host .. "]") or u.host)
      .. ((u.port == 443 and u.scheme == "https") and "" or (":" .. u.port)),
    "Content-Length: " .. #body, "User-Agent: lxmpp" }
  if o.upgrade then lines[#lines + 1] = "Connection: Upgrade"
  elseif o.close then lines[#lines + 1] = "Connection: close" end
  for name, value in pairs(o.headers or {}) do
    local lname = name:lower()
    if lname ~= "host" and lname ~= "content-length" and lname ~= "connection" then
      lines[#lines + 1] = name .. ": " .. value
    end
  end
  local timeout = o.timeout or 30
  self.busy, self.buf, self.size, self.max = true, {}, 0, o.max_response or 1024 * 1024
  local w, t
  -- a cancelled task (its own, or a client's c:close() ending an XEP-0156
  -- lookup or a WebSocket handshake) closes the connection: a request cut
  -- short leaves it in no state to carry another, and no timer behind
  local function wait_for_more()
    w = task.waiter("http.request", 2)
    self.w = w
    t = core.timer(timeout, w)
    w.cancel = function()
      t:stop()
      self.w = nil
      fail(self, t)
    end
  end
  wait_for_more()
  local ok, msg, cond = self.conn:write(concat(lines, "\r\n") .. "\r\n\r\n" .. body)
  if not ok then return fail(self, t, nil, msg, cond) end
  while true do
    local what, emsg, econd = w:wait()
    t:stop()
    if not what then return fail(self, t, nil, emsg or "no answer in time", econd or "timeout") end
    local all = concat(self.buf)
    self.buf = { all }
    local status, headers, rbody, keep, rest = response(all, self.ended, method)
    if status == false then return fail(self, t, nil, headers, rbody or "bad-format") end
    if status then
      if o.upgrade and status == 101 then   -- the connection is the caller's now
        local conn = self.conn
        for _, ev in ipairs({ "data", "eof", "read-error", "closed" }) do conn:on(ev, nil) end
        self.busy, self.keep, self.closed = false, false, true
        return status, headers, "", conn, rest
      end
      self.busy, self.buf, self.served = false, {}, self.served + 1
      if not keep or o.close or o.upgrade then
        self.keep = false
        if not self.closed then self.closed = true; self.conn:abort() end
      end
      return status, headers, rbody
    end
    wait_for_more()
  end
end

--- http.request{...} (see the header): one request on its own connection.
function M.request(opts)
  if type(opts) ~= "table" then error("http.request: expected an options table", 2) end
  local method = opts.method or "GET"
  if type(method) ~= "string" or not method:match("^%u+$") then error("http.request: bad method", 2) end
  if opts.body ~= nil and type(opts.body) ~= "string" then error("http.request: body must be a string", 2) end
  local u, uerr = M.parse_url(opts.url)
  if not u then return nil, uerr, "bad-request" end
  task.current("http.request", 1)
  local hok, herr = check_headers(opts.headers)
  if not hok then return nil, herr, "bad-request" end
  local hc, msg, cond = M.open(opts.url, { cafile = opts.cafile, insecure = opts.insecure, address = opts.address,
    timeout = opts.timeout })
  if not hc then return nil, msg, cond end
  local status, headers, body, conn, rest = hc:request({ method = method, headers = opts.headers, body = opts.body,
    timeout = opts.timeout, max_response = opts.max_response, close = true, upgrade = opts.upgrade })
  if not conn then hc:close() end
  return status, headers, body, conn, rest
end

return M
