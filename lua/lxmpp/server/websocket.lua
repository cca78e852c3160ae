-- lxmpp.server.websocket: XMPP over WebSocket (RFC 7395) on the embedded
-- server's web listener (lxmpp.server.web, at /xmpp-websocket). The HTTP
-- Upgrade is checked here (RFC 6455 §4.2.1, RFC 7395 §3.1: the xmpp
-- subprotocol is required); then the connection leaves the HTTP listener,
-- is switched to WebSocket framing in C, and becomes an ordinary c2s
-- stream (srv:accept), with the same limits as one over TCP: connections
-- per address, unauthenticated connections, stanza size (a message larger
-- than limits.max_stanza_size is closed with 1009), the negotiation deadline.

local ws = require "lxmpp.websocket"
local transport = require "lxmpp.transport"

local tostring, pairs = tostring, pairs

local M = {}

local function refuse(res, status, text, extra)
  local headers = { ["Content-Type"] = "text/plain; charset=utf-8", ["Connection"] = "close" }
  for k, v in pairs(extra or {}) do headers[k] = v end
  return res:send(status, headers, text .. "\n")
end

--- websocket.upgrade(srv, req, res, secure, see_other_uri): answers a
-- request to the WebSocket endpoint. secure: the connection is protected
-- below the stream (https, or web.consider_secure), so no STARTTLS is
-- offered on it. see_other_uri (web.see_other_uri): the stream answers the
-- client's <open/> with a redirect there (RFC 7395 §3.6.1, Stream:redirect).
function M.upgrade(srv, req, res, secure, see_other_uri)
  if req.method ~= "GET" then return refuse(res, 405, "WebSocket needs GET", { Allow = "GET" }) end
  local h = req.headers
  if not ws.has_token(h.upgrade, "websocket") or not ws.has_token(h.connection, "upgrade") then
    return refuse(res, 426, "this endpoint speaks XMPP over WebSocket only", { Upgrade = "websocket" })
  end
  if h["sec-websocket-version"] ~= "13" then
    return refuse(res, 426, "WebSocket version 13 only", { ["Sec-WebSocket-Version"] = "13" })
  end
  local key = h["sec-websocket-key"]
  local raw = key and key:match("^[%w+/]+=*$") and require("lxmpp.core").base64_decode(key)
  if not raw or #raw ~= 16 then return refuse(res, 400, "a bad Sec-WebSocket-Key") end
  if not ws.has_token(h["sec-websocket-protocol"], ws.PROTOCOL) then
    return refuse(res, 400, "the xmpp subprotocol is required (RFC 7395)")
  end
  local conn, leftover = res:upgrade()
  if not conn then return refuse(res, 400, tostring(leftover)) end
  conn:write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
    "Sec-WebSocket-Accept: " .. ws.accept(key) .. "\r\nSec-WebSocket-Protocol: " .. ws.PROTOCOL .. "\r\n\r\n")
  conn:websocket({ role = "server", max_message = srv.limits.max_stanza_size, buffered = leftover })
  conn.framing = transport.websocket
  conn.encrypted = secure == true
  conn.see_other_uri = see_other_uri
  return srv:accept(conn, "c2s")
end

return M
