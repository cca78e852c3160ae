-- lxmpp.stream_error: the one writer of <stream:error/> (RFC 6120 §4.9),
-- for the client session and every stream of the embedded server.

local core = require "lxmpp.core"

local M = {}

M.NS = "urn:ietf:params:xml:ns:xmpp-streams"

local OPEN_TEXT = "<text xmlns='" .. M.NS .. "'>"

--- stream_error.FATAL: the conditions after which connecting again would
-- fail the same way, on this server and on every other server of the
-- domain, or would fight another client; a client neither reconnects
-- after them nor tries the next server. Stream errors (RFC 6120 §4.9.3):
--   conflict        §4.9.3.3: a new session with our resource replaced us;
--                   coming back would replace it in turn, forever.
--   not-authorized  §4.9.3.12: the account is gone or may not log in (the
--                   embedded server ends an account removal with it).
-- The other §4.9.3 conditions are not here: they end one stream, not the
-- account's chances (system-shutdown, reset, connection-timeout,
-- see-other-host and the rest allow a new connection, and a server may
-- well accept it). SASL failures (§6.5.x) meet the same test when an
-- attempt to log in ends with them: account-disabled, credentials-expired,
-- encryption-required, invalid-mechanism (and not-authorized, above). One
-- of our own: tls-verify-failed, the server's certificate does not verify.
M.FATAL = {
  conflict = true, ["not-authorized"] = true,
  ["account-disabled"] = true, ["credentials-expired"] = true,
  ["encryption-required"] = true, ["invalid-mechanism"] = true,
  ["tls-verify-failed"] = true,
}

--- stream_error.xml(cond, text, extra) -> the bytes of a stream error and
-- the end of the stream (</stream:stream>: a stream error is unrecoverable,
-- RFC 6120 §4.9.1.1). cond: a defined condition (§4.9.3); text: an
-- optional human-readable explanation (escaped here); extra: the XML of an
-- optional application-specific condition element (§4.9.4), written as is.
function M.xml(cond, text, extra)
  return M.element(cond, text, extra) .. "</stream:stream>"
end

--- stream_error.element(cond, text, extra [, ns_streams]) -> the
-- <stream:error/> element alone; ns_streams declares the stream: prefix
-- on it, for framings where no stream header encloses it (RFC 7395 §3.6.1).
function M.element(cond, text, extra, ns_streams)
  return (ns_streams and ("<stream:error xmlns:stream='" .. ns_streams .. "'><") or "<stream:error><") ..
    cond .. " xmlns='" .. M.NS .. "'/>" ..
    (text and (OPEN_TEXT .. core.xml_escape(text) .. "</text>") or "") ..
    (extra or "") .. "</stream:error>"
end

--- stream_error.parse(element) -> condition, text, data: what a received
-- <stream:error/> says (the first defined condition, its <text/>, and the
-- condition element's own text, such as see-other-host's address).
function M.parse(s)
  local cond, text, data
  for child in s:childtags(nil, M.NS) do
    if child.name == "text" then
      text = child:get_text()
    elseif not cond then
      cond, data = child.name, child:get_text()
    end
  end
  return cond or "undefined-condition", text, data
end

return M
