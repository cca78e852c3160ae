-- lxmpp.http: a small HTTPS/1.1 client on lxmpp's own connections and TLS
-- (lxmpp.net in raw mode, core.tls_context), for what XMPP hands to HTTP:
-- XEP-0363 uploads. One request per connection (Connection: close).
--
--   local status, headers, body = http.request{
--     method = "PUT", url = "https://upload.example.org/slot/file.txt",
--     headers = { ["Content-Type"] = "text/plain" }, body = "...",
--     cafile = nil, insecure = false,   -- certificates verified against the URL's host
--     address = nil,                    -- connect here instead of resolving the host
--     timeout = 30, max_response = 1 MiB }
--   -> status (integer), headers (lowercased names), body | nil, message, condition
--
-- With upgrade = true (a WebSocket handshake, RFC 6455 §4.1) the request
-- says Connection: Upgrade, and a 101 answer returns status, headers, "",
-- conn, rest: the connection stays open in raw mode with no handlers, and
-- rest holds what the server sent after its answer's head.
--
-- Only https URLs (plain http only to a loopback address). Header names and
-- values with CR, LF or NUL are refused (no request smuggling through
-- headers a server handed us). The response is bounded by max_response.

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local task = require "lxmpp.task"
local net = require "lxmpp.net"

local type, error, tostring, tonumber, pairs, ipairs, concat =
  type, error, tostring, tonumber, pairs, ipairs, table.concat

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

-- Parses the status line and headers of `head`; status, headers | nil, msg.
local function parse_head(head)
  local status = head:match("^HTTP/1%.[01] (%d%d%d)[^\r\n]*\r\n")
  if not status then return nil, "not an HTTP/1.x response" end
  local headers = {}
  for line in head:gmatch("\r\n([^\r\n]+)") do
    local name, value = line:match("^([^:%s]+):%s*(.-)%s*$")
    if not name then return nil, "a malformed response header" end
    name = name:lower()
    headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
  end
  return compat.tointeger(tonumber(status)), headers
end

-- Decodes a chunked body; the body, or nil while incomplete, or false, msg.
local function dechunk(s)
  local out, pos = {}, 1
  while true do
    local size_hex, after = s:match("^(%x+)[^\r\n]*\r\n()", pos)
    if not size_hex then
      if #s - pos > 64 and not s:find("\r\n", pos, true) then return false, "a malformed chunk" end
      return nil
    end
    local size = tonumber(size_hex, 16)
    if size == 0 then return concat(out) end
    if #s < after + size + 1 then return nil end
    out[#out + 1] = s:sub(after, after + size - 1)
    if s:sub(after + size, after + size + 1) ~= "\r\n" then return false, "a malformed chunk" end
    pos = after + size + 2
  end
end

--- http.request{...} (see the header)
function M.request(opts)
  if type(opts) ~= "table" then error("http.request: expected an options table", 2) end
  local method = opts.method or "GET"
  if type(method) ~= "string" or not method:match("^%u+$") then error("http.request: bad method", 2) end
  local body = opts.body or ""
  if type(body) ~= "string" then error("http.request: body must be a string", 2) end
  local u, uerr = M.parse_url(opts.url)
  if not u then return nil, uerr, "bad-request" end
  task.current("http.request", 1)
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
  local lines = { ("%s %s HTTP/1.1"):format(method, u.path),
    "Host: " .. (u.host:find(":", 1, true) and ("[" .. u.host .. "]") or u.host)
      .. ((u.port == 443 and u.scheme == "https") and "" or (":" .. u.port)),
    "Content-Length: " .. #body, opts.upgrade and "Connection: Upgrade" or "Connection: close", "User-Agent: lxmpp" }
  for name, value in pairs(opts.headers or {}) do
    local ok, herr = check_header(name, value)
    if not ok then return nil, herr, "bad-request" end
    local lname = name:lower()
    if lname ~= "host" and lname ~= "content-length" and lname ~= "connection" then
      lines[#lines + 1] = name .. ": " .. value
    end
  end
  local request = concat(lines, "\r\n") .. "\r\n\r\n" .. body
  local timeout = opts.timeout or 30
  local conn, msg, cond = net.connect(ip, u.port, timeout)
  if not conn then return nil, msg, cond end
  local w = task.waiter("http.request", 1)
  local t = core.timer(timeout, w)
  local function finish(...)
    t:stop()
    conn:abort()
    return ...
  end
  if u.scheme == "https" then
    local ctx, cmsg, ccond = core.tls_context({ mode = "client", cafile = opts.cafile,
      insecure = opts.insecure == true, alpn = "http/1.1" })
    if not ctx then return finish(nil, cmsg, ccond) end
    conn:on("tls-done", function() w:wake(true) end)
    conn:on("tls-failed", function(m, c) w:wake(nil, m, c) end)
    local ok, serr = conn:starttls(ctx, core.to_ascii(u.host) or u.host)
    if not ok then return finish(nil, serr, "tls-failed") end
    local done, emsg, econd = w:wait()
    if not done then return finish(nil, emsg or "the TLS handshake timed out", econd or "timeout") end
    w = task.waiter("http.request", 1)
    t:stop()
    t = core.timer(timeout, w)
  end
  local max = opts.max_response or 1024 * 1024
  local buf, size, ended = {}, 0, false
  conn:on("data", function(bytes)
    size = size + #bytes
    buf[#buf + 1] = bytes
    if size > max then w:wake(nil, "the response is larger than " .. max .. " bytes", "resource-constraint") end
    w:wake("data")
  end)
  conn:on("eof", function() ended = true; w:wake("eof") end)
  conn:on("read-error", function(m) w:wake(nil, m, "closed") end)
  conn:on("closed", function() ended = true; w:wake("eof") end)
  local ok
  ok, msg, cond = conn:write(request)
  if not ok then return finish(nil, msg, cond) end
  conn:raw()
  while true do
    local what, emsg, econd = w:wait()
    if not what then return finish(nil, emsg or "no answer in time", econd or "timeout") end
    w = task.waiter("http.request", 1)
    t:stop()
    t = core.timer(timeout, w)
    local all = concat(buf)
    buf = { all }
    local head_end = all:find("\r\n\r\n", 1, true)
    if not head_end and (#all > 65536 or ended) then return finish(nil, "a malformed HTTP response", "bad-format") end
    if head_end then
      local status, headers = parse_head(all:sub(1, head_end + 1))
      if not status then return finish(nil, headers, "bad-format") end
      local rest = all:sub(head_end + 4)
      if opts.upgrade and status == 101 then   -- the connection is the caller's now
        t:stop()
        for _, ev in ipairs({ "data", "eof", "read-error", "closed", "tls-done", "tls-failed" }) do conn:on(ev, nil) end
        return status, headers, "", conn, rest
      end
      local te, cl = headers["transfer-encoding"], headers["content-length"]
      if te and te:lower():find("chunked", 1, true) then
        local decoded, derr = dechunk(rest)
        if decoded == false then return finish(nil, derr, "bad-format") end
        if decoded then return finish(status, headers, decoded) end
      elseif cl then
        local n = cl:match("^%d+$") and tonumber(cl)
        if not n then return finish(nil, "a malformed Content-Length", "bad-format") end
        if #rest >= n then return finish(status, headers, rest:sub(1, n)) end
      elseif ended or method == "HEAD" or status == 204 or status == 304 then
        return finish(status, headers, method == "HEAD" and "" or rest)
      end
      if ended then return finish(nil, "the connection closed in the middle of the response", "closed") end
    end
  end
end

return M
