-- SASL (RFC 6120 §6), client side, over the C engine (csrc/sasl.c): the
-- strongest mechanism the server offers and we can do (SCRAM-*-PLUS with
-- channel binding, SCRAM-*, PLAIN only over TLS, EXTERNAL, ANONYMOUS when
-- asked), and no fallback to a weaker one after a failure. Payloads are
-- never logged, the password never leaves this exchange.

local core = require "lxmpp.core"
local st = require "lxmpp.stanza"

local NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
local NS_SASL_CB = "urn:xmpp:sasl-cb:0"     -- XEP-0440

local M = {}

local function payload(data)
  if data == nil or data == "" then return "=" end      -- RFC 6120 §6.4.2
  return core.base64_encode(data)
end

local function decode(s)
  s = s or ""
  if s == "" or s == "=" then return "" end
  return core.base64_decode(s)
end

-- What we can bind to on this connection (RFC 9266 needs TLS 1.3).
local function binding_types(client)
  local out = {}
  if not client.tls_active then return out end
  for _, t in ipairs({ "tls-exporter", "tls-server-end-point" }) do
    if client.conn.c:channel_binding(t) then out[#out + 1] = t end
  end
  return out
end

local function exchange(client, mech, cb_type, offers_plus)
  local opts = client.opts
  local cb_data
  if cb_type then cb_data = assert(client.conn.c:channel_binding(cb_type)) end
  local sasl, msg, cond = core.sasl_client({
    mechanism = mech, username = client.node, password = opts.password,
    cb_type = cb_type, cb_data = cb_data, server_offers_plus = offers_plus,
    tls = client.tls_active,
  })
  if not sasl then return nil, msg, cond end
  local first
  first, msg, cond = sasl:step(nil)
  if not first then return nil, msg, cond end
  local ok
  ok, msg, cond = client:write_stanza(st.stanza("auth", { xmlns = NS_SASL, mechanism = mech }):text(payload(first)))
  if not ok then return nil, msg, cond end
  while true do
    local s
    s, msg, cond = client:read()
    if not s then return nil, msg, cond end
    if s.attr.xmlns ~= NS_SASL then return nil, "unexpected <" .. s.name .. "> during SASL", "bad-format" end
    if s.name == "challenge" then
      local data, derr = decode(s:get_text())
      if not data then
        client:write_stanza(st.stanza("abort", { xmlns = NS_SASL }))
        return nil, "malformed base64 in the server's challenge: " .. tostring(derr), "incorrect-encoding"
      end
      local resp
      resp, msg, cond = sasl:step(data)
      if not resp then
        client:write_stanza(st.stanza("abort", { xmlns = NS_SASL }))
        return nil, msg, cond
      end
      client:write_stanza(st.stanza("response", { xmlns = NS_SASL }):text(payload(resp)))
    elseif s.name == "success" then
      local data, derr = decode(s:get_text())
      if not data then return nil, "malformed base64 in <success/>: " .. tostring(derr), "incorrect-encoding" end
      -- SCRAM: the server's signature must verify, or this is not our server
      ok, msg, cond = sasl:finish(data ~= "" and data or nil)
      if not ok then return nil, msg, cond end
      client.scram_keys = sasl.keys and sasl:keys() or nil
      return true
    elseif s.name == "failure" then
      local fcond = s.tags[1] and s.tags[1].name ~= "text" and s.tags[1].name or "not-authorized"
      local text = s:get_child_text("text")
      return nil, "authentication failed: " .. (text or fcond), fcond
    else
      return nil, "unexpected <" .. s.name .. "> during SASL", "bad-format"
    end
  end
end

function M.negotiate(client, features)
  if client.authenticated then return nil end
  local mechs = features:get_child("mechanisms", NS_SASL)
  if not mechs then return client:fail("the server offers no SASL authentication", "undefined-condition") end
  local offered = {}
  local want = client.opts.mechanism
  local any_plus = false
  for m in mechs:childtags("mechanism") do
    local name = m:get_text()
    any_plus = any_plus or (name or ""):match("%-PLUS$") ~= nil
    -- an explicitly asked mechanism is the only candidate (never a fallback)
    if not want or name == want then offered[#offered + 1] = name end
  end
  if want and #offered == 0 then
    return client:fail("the server does not offer the " .. want .. " mechanism", "invalid-mechanism")
  end
  local server_cb
  local cbt = features:get_child("sasl-channel-binding", NS_SASL_CB)
  if cbt then
    server_cb = {}
    for c in cbt:childtags("channel-binding") do server_cb[#server_cb + 1] = c.attr.type end
  end
  local mech, cb_type, offers_plus = core.sasl_choose(offered, {
    password = type(client.opts.password) == "string",
    tls = client.tls_active,
    anonymous = client.opts.mechanism == "ANONYMOUS",
    client_cert = client.opts.mechanism == "EXTERNAL",
    cb_types = binding_types(client),
    server_cb_types = server_cb,
  })
  if not mech then
    return client:fail("no usable SASL mechanism: " .. tostring(cb_type), "invalid-mechanism")
  end
  client.sasl_mechanism = mech
  -- an explicitly asked SCRAM without -PLUS, while the server offers -PLUS:
  -- the client says 'n' (it chose not to bind), never 'y' (which claims the
  -- server offers no binding, and a server rightly takes for a downgrade)
  offers_plus = offers_plus or any_plus
  if client.debug then
    client:log("debug", "SASL mechanism %s%s", mech,
      mech:match("%-PLUS$") and (" bound to " .. tostring(cb_type)) or "")
  end
  client.hide_payloads = client.hide_payloads + 1
  local ok, msg, cond = exchange(client, mech, cb_type, offers_plus)
  client.hide_payloads = client.hide_payloads - 1
  if not ok then return client:fail(msg, cond) end
  client.authenticated = true
  return "restart"
end

return M
