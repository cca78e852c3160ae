-- lxmpp.websocket: XMPP over WebSocket (RFC 7395), the handshake both sides
-- share and the client's transport. The framing itself (RFC 6455 frames,
-- one element per message) is in C (csrc/ws.c, conn:websocket); once the
-- handshake is done a WebSocket connection is an lxmpp.transport like a TCP
-- one, framed with transport.websocket, and the one stream layer runs over
-- it unchanged.

local core = require "lxmpp.core"
local transport = require "lxmpp.transport"

local type, tostring = type, tostring

local M = {}

M.GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"   -- RFC 6455 §1.3
M.PROTOCOL = "xmpp"                                  -- RFC 7395 §3.1

--- websocket.accept(key) -> the Sec-WebSocket-Accept value for a
-- Sec-WebSocket-Key (RFC 6455 §4.2.2: base64 of the SHA-1 of key .. GUID).
function M.accept(key)
  return core.base64_encode(core.hash("sha1", key .. M.GUID))
end

--- websocket.has_token(value, token) -> does a comma-separated header
-- value list the token (case-insensitively, RFC 9110 §5.6.1)?
function M.has_token(value, token)
  if type(value) ~= "string" then return false end
  token = token:lower()
  for item in value:gmatch("[^,]+") do
    if item:match("^%s*(.-)%s*$"):lower() == token then return true end
  end
  return false
end

--- websocket.url(url) -> { secure = bool, http = the http(s) URL } | nil,
-- message: a ws:// or wss:// URL, as the HTTP request that opens it.
function M.url(url)
  if type(url) ~= "string" then return nil, "the URL is not a string" end
  local scheme, rest = url:match("^(%a+)://(.+)$")
  scheme = scheme and scheme:lower()
  if scheme ~= "ws" and scheme ~= "wss" then return nil, "not a ws:// or wss:// URL: " .. url end
  return { secure = scheme == "wss", http = (scheme == "wss" and "https://" or "http://") .. rest }
end

--- websocket.MAX_REDIRECTS: how many see-other-uri redirects (RFC 7395
-- §3.6.1) one connection attempt of a client follows.
M.MAX_REDIRECTS = 5

--- websocket.redirect_url(url) -> the parsed URL (as websocket.url) | nil,
-- message: is url fit for a see-other-uri (RFC 7395 §3.6.1): ws:// or
-- wss://, a host, no space or control character?
function M.redirect_url(url)
  local u, why = M.url(url)
  if not u then return nil, why end
  if url:find("[%s%c]") or not url:match("^%a+://[^/?#]") then
    return nil, "not a usable ws:// or wss:// URL: " .. url
  end
  return u
end

--- websocket.see_other(url) -> the <close/> that sends a client to another
-- endpoint (RFC 7395 §3.6.1), url escaped.
function M.see_other(url)
  return "<close xmlns='" .. transport.NS_FRAMING .. "' see-other-uri='" .. core.xml_escape(url) .. "'/>"
end

--- websocket.check_redirect(url, secure) -> nil | message: may a client
-- that connected over wss:// (secure true) or ws:// follow a see-other-uri
-- to url? Only to ws:// or wss://, and never from wss:// to ws:// (RFC
-- 7395 §3.6.1: no lower security context than the original one).
function M.check_redirect(url, secure)
  local u, why = M.redirect_url(url)
  if not u then return "the server's see-other-uri: " .. why end
  if secure and not u.secure then
    return "the server's see-other-uri " .. url .. " would lower the connection from wss:// to ws:// (RFC 7395 §3.6.1)"
  end
end

--- websocket.discover(domain, opts) -> url | nil, message, condition: the
-- WebSocket endpoint a domain advertises (XEP-0156 §3: the XRD at
-- https://DOMAIN/.well-known/host-meta, rel urn:xmpp:alt-connections:websocket),
-- from a task. Only over HTTPS, its certificate verified for the domain
-- (XEP-0156 §6: a plain-HTTP answer could send us anywhere), and only a
-- wss:// endpoint (ws:// only on a loopback address). opts: cafile,
-- insecure, address and port (where to fetch it instead of the domain's
-- address and 443), timeout.
function M.discover(domain, opts)
  opts = opts or {}
  local where = "https://" .. domain .. (opts.port and (":" .. opts.port) or "") .. "/.well-known/host-meta"
  local status, headers, body = require("lxmpp.http").request({ method = "GET", url = where,
    cafile = opts.cafile, insecure = opts.insecure, address = opts.address, timeout = opts.timeout,
    max_response = 65536 })
  if not status then return nil, "XEP-0156 discovery: " .. tostring(headers), body end
  if status ~= 200 then
    return nil, ("XEP-0156 discovery: %s's host-meta answered HTTP %d"):format(domain, status),
      "remote-server-not-found"
  end
  local xrd = core.parse_element((body:gsub("^%s*<%?xml[^>]*%?>", "")))
  if not xrd or xrd.name ~= "XRD" then
    return nil, "XEP-0156 discovery: the host-meta document is not an XRD", "bad-format"
  end
  for link in xrd:childtags("Link") do
    local href = link.attr.href
    if link.attr.rel == "urn:xmpp:alt-connections:websocket" and M.url(href) then
      local host = href:match("^ws://%[?([^/%]:]+)")
      if href:match("^wss://") or host == "localhost" or host == "::1" or (host and host:match("^127%.")) then
        return href
      end
    end
  end
  return nil, "XEP-0156 discovery: " .. domain .. " advertises no usable WebSocket endpoint", "remote-server-not-found"
end

--- websocket.connect(url, opts) -> transport | nil, message, condition:
-- opens the WebSocket (the HTTP Upgrade with the xmpp subprotocol, RFC
-- 7395 §3.1), from a task. opts: cafile, insecure (certificates are
-- verified against the URL's host), address (connect there instead of
-- resolving the host), timeout (seconds, 30), max_message (bytes of one
-- message, 262144). ws:// only to a loopback address, as lxmpp.http.
function M.connect(url, opts)
  opts = opts or {}
  local u, uerr = M.url(url)
  if not u then return nil, uerr, "bad-request" end
  local key = core.base64_encode(core.random(16))
  local status, headers, _, conn, rest = require("lxmpp.http").request({
    method = "GET", url = u.http, upgrade = true, timeout = opts.timeout, cafile = opts.cafile,
    insecure = opts.insecure, address = opts.address,
    headers = { Upgrade = "websocket", ["Sec-WebSocket-Key"] = key, ["Sec-WebSocket-Version"] = "13",
      ["Sec-WebSocket-Protocol"] = M.PROTOCOL },
  })
  if not status then return nil, headers, _ end
  local function refuse(why)
    if conn then conn:abort() end
    return nil, url .. ": " .. why, "remote-connection-failed"
  end
  if status ~= 101 then return refuse("the server answered HTTP " .. tostring(status) .. ", not a WebSocket") end
  if not M.has_token(headers.upgrade, "websocket") or not M.has_token(headers.connection, "upgrade") then
    return refuse("the answer does not upgrade to WebSocket")
  end
  if headers["sec-websocket-accept"] ~= M.accept(key) then
    return refuse("the answer's Sec-WebSocket-Accept does not match our key")
  end
  -- RFC 7395 §3.1: without the xmpp subprotocol there is no XMPP connection
  if headers["sec-websocket-protocol"] ~= M.PROTOCOL then
    return refuse("the server did not agree to the xmpp subprotocol")
  end
  local ok, err = pcall(conn.websocket, conn, { role = "client", max_message = opts.max_message, buffered = rest })
  if not ok then return refuse(tostring(err)) end
  conn.framing = transport.websocket
  conn.encrypted = u.secure
  return conn
end

return M
