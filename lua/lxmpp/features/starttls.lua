-- STARTTLS (RFC 6120 §5), client side. Required unless tls = "none": a
-- server that does not offer it, answers <failure/>, or whose handshake
-- fails ends the connection; there is never a plaintext continuation.

local NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
local st = require "lxmpp.stanza"

local M = {}

function M.negotiate(client, features)
  if client.tls_active or client.tls_mode == "none" then return nil end
  if not features:get_child("starttls", NS_TLS) then
    return client:fail("the server does not offer STARTTLS; refusing to continue in plaintext", "tls-failed")
  end
  local ok, msg, cond = client:write_stanza(st.stanza("starttls", { xmlns = NS_TLS }))
  if not ok then return client:fail(msg, cond) end
  local reply
  reply, msg, cond = client:read()
  if not reply then return client:fail(msg, cond) end
  if reply.name == "failure" and reply.attr.xmlns == NS_TLS then
    return client:fail("the server refused STARTTLS", "tls-failed")
  end
  if reply.name ~= "proceed" or reply.attr.xmlns ~= NS_TLS then
    return client:fail("expected <proceed/>, got <" .. tostring(reply.name) .. ">", "bad-format")
  end
  ok, msg, cond = client:start_tls(false)
  if not ok then return client:fail(msg, cond) end
  return "restart"
end

return M
