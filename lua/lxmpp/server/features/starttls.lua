-- STARTTLS (RFC 6120 §5), server side: offered, and required unless the
-- server is configured insecure_plaintext, on a TCP stream not protected
-- already (lxmpp.transport).

local NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"

local M = { name = "starttls" }

-- Only on an XML-framed stream (TCP): over WebSocket, TLS is the wss://
-- connection's (RFC 7395 §3.7), and BOSH's the https:// one.
local function possible(s)
  return not s.secure and not s.authenticated and s.framing.name == "xml"
end

local OFFER = "<starttls xmlns='" .. NS_TLS .. "'><required/></starttls>"
local OFFER_OPTIONAL = "<starttls xmlns='" .. NS_TLS .. "'></starttls>"

function M.offer(s)
  if not possible(s) then return nil end
  return s.srv.insecure_plaintext and OFFER_OPTIONAL or OFFER
end

M.handlers = {
  [NS_TLS .. " starttls"] = function(s)
    if not possible(s) then
      return s:stream_error("policy-violation",
        s.secure and "TLS is already negotiated" or "STARTTLS is not possible here")
    end
    s:write("<proceed xmlns='" .. NS_TLS .. "'/>")
    s.starting_tls = true
    s:restarted()
    local _, discarded = s.conn:starttls(s.srv.tls_ctx)
    if discarded and discarded > 0 then
      -- plaintext pipelined after <starttls/>: never parsed (RFC 6120 §5.4.3.3)
      s:log("warn", "dropped %d bytes sent in plaintext after <starttls/>", discarded)
    end
  end,
}

return M
