-- lxmpp.stream_error: the one writer of <stream:error/> (RFC 6120 §4.9),
-- for the client session and every stream of the embedded server.

local core = require "lxmpp.core"

local M = {}

M.NS = "urn:ietf:params:xml:ns:xmpp-streams"

local OPEN_TEXT = "<text xmlns='" .. M.NS .. "'>"

--- stream_error.xml(cond, text, extra) -> the bytes of a stream error and
-- the end of the stream (</stream:stream>: a stream error is unrecoverable,
-- RFC 6120 §4.9.1.1). cond: a defined condition (§4.9.3); text: an
-- optional human-readable explanation (escaped here); extra: the XML of an
-- optional application-specific condition element (§4.9.4), written as is.
function M.xml(cond, text, extra)
  return "<stream:error><" .. cond .. " xmlns='" .. M.NS .. "'/>" ..
    (text and (OPEN_TEXT .. core.xml_escape(text) .. "</text>") or "") ..
    (extra or "") .. "</stream:error></stream:stream>"
end

return M
