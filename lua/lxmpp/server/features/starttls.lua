-- STARTTLS (RFC 6120 §5), server side: offered, and required unless the
-- server is configured insecure_plaintext, on a stream whose transport is
-- not protected already (lxmpp.transport: TCP before TLS).

local NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"

local M = { name = "starttls" }

function M.offer(s)
  if s.secure or s.authenticated then return nil end
  return "<starttls xmlns='" .. NS_TLS .. "'>" .. (s.srv.insecure_plaintext and "" or "<required/>") .. "</starttls>"
end

M.handlers = {
  [NS_TLS .. " starttls"] = function(s)
    if s.secure or s.authenticated then
      return s:stream_error("policy-violation", "TLS is already negotiated")
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
