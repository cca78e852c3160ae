-- SASL (RFC 6120 §6), client side, over the C engine (csrc/sasl.c): the
-- strongest mechanism the server offers and we can do (SCRAM-*-PLUS with
-- channel binding, SCRAM-*, PLAIN only over TLS, EXTERNAL, ANONYMOUS when
-- asked). Payloads are never logged, the password never leaves this
-- exchange.
--
-- Channel binding (docs/api.md, "Authentication and channel binding"):
-- M.plan decides the mechanism and binding before anything is sent. When
-- the server lists the types it accepts (XEP-0440) we bind with the best
-- one we share (tls-exporter, RFC 9266, then tls-server-end-point, RFC
-- 5929). When it does not say, we try -PLUS with our best type; servers
-- that only know tls-unique (ejabberd before 23.04) refuse it, so on a
-- refusal that is about the binding, and only then, the exchange is
-- retried once with plain SCRAM and the gs2 flag "y" ("I could bind, I
-- think you cannot", RFC 5802 §6): a server that does support binding
-- must then fail the login, so a man in the middle gains nothing by
-- making the -PLUS attempt fail. The retry is never to PLAIN, never when
-- a mechanism or channel binding was asked for explicitly, and never for a
-- refusal of the password's proof that does not name the binding.

local core = require "lxmpp.core"
local st = require "lxmpp.stanza"

local type, ipairs, tostring, assert, table = type, ipairs, tostring, assert, table

local NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
local NS_SASL_CB = "urn:xmpp:sasl-cb:0"     -- XEP-0440

local M = {}

--- The channel binding types lxmpp can use, best first.
M.CB_TYPES = { "tls-exporter", "tls-server-end-point" }

local function payload(data)
  if data == nil or data == "" then return "=" end      -- RFC 6120 §6.4.2
  return core.base64_encode(data)
end

local function decode(s)
  s = s or ""
  if s == "" or s == "=" then return "" end
  return core.base64_decode(s)
end

local function is_plus(mech) return mech:match("%-PLUS$") ~= nil end

local function contains(list, x)
  for _, v in ipairs(list) do if v == x then return true end end
  return false
end

--- M.check_options(channel_binding, mechanism) -> nil, or why they are
-- wrong: channel_binding is nil, true, false or one of M.CB_TYPES, and a
-- SCRAM mechanism asked for must agree with it (client.lua raises).
function M.check_options(cb, mech)
  if cb ~= nil and type(cb) ~= "boolean" and not (type(cb) == "string" and contains(M.CB_TYPES, cb)) then
    return "channel_binding must be nil, true, false, \"tls-exporter\" or \"tls-server-end-point\""
  end
  if mech and mech:match("^SCRAM%-") then
    if cb == false and is_plus(mech) then
      return "mechanism " .. mech .. " binds to the channel, but channel_binding is false"
    end
    if cb and not is_plus(mech) then
      return "channel_binding asks for binding, but mechanism " .. mech .. " does not bind"
    end
  elseif mech and cb then
    return "channel_binding needs a SCRAM mechanism, not " .. mech
  end
  return nil
end

--- M.parse_channel_binding(s) -> true, value | nil, message: the
-- channel_binding option from a word (command line, environment): "auto"
-- (or "" or nil) -> nil, "false" -> false, "true" -> true, a type name ->
-- itself.
function M.parse_channel_binding(s)
  if s == nil or s == "" or s == "auto" then return true, nil end
  if s == "false" then return true, false end
  if s == "true" then return true, true end
  if contains(M.CB_TYPES, s) then return true, s end
  return nil, "channel binding must be auto, false, true, tls-exporter or tls-server-end-point, not \"" .. s .. "\""
end

--- M.plan(offered, server_cb, caps) -> plan | nil, reason, condition
-- What to try, decided before anything is sent. offered: the mechanism
-- names the server offers; server_cb: the channel binding types it lists
-- (XEP-0440), nil when it lists none; caps: { password = bool, tls = bool,
-- cb_types = what this TLS connection can give (best first), mechanism =,
-- channel_binding = (the client's options) }.
-- plan = { mechanism =, cb_type =, offers_plus =, fallback = nil |
-- { mechanism =, cb_type =, offers_plus = false } }: cb_type is the
-- binding for -PLUS, or with plain SCRAM the one that makes the gs2 flag
-- "y" when offers_plus is false ("n" otherwise).
function M.plan(offered, server_cb, caps)
  local want, cbo = caps.mechanism, caps.channel_binding
  local cb_types = caps.cb_types or {}
  if cbo == false then
    cb_types = {}
  elseif type(cbo) == "string" then
    cb_types = contains(cb_types, cbo) and { cbo } or {}
  end
  local required = cbo == true or type(cbo) == "string" or (want ~= nil and is_plus(want))
  if required and #cb_types == 0 then
    return nil, "channel binding " .. (type(cbo) == "string" and cbo .. " " or "") .. "is required, but "
      .. (not caps.tls and "the stream is not encrypted"
        or cbo == "tls-exporter" and "tls-exporter needs TLS 1.3 (RFC 9266)"
        or "this TLS connection gives no binding data"), "invalid-mechanism"
  end
  local list, any_plus = {}, false
  for _, name in ipairs(offered) do
    any_plus = any_plus or is_plus(name)
    -- an explicitly asked mechanism is the only candidate (never a fallback)
    if (not want or name == want) and (not required or is_plus(name)) then list[#list + 1] = name end
  end
  if want and #list == 0 then
    return nil, "the server does not offer the " .. want .. " mechanism", "invalid-mechanism"
  end
  if required and #list == 0 then
    return nil, "channel binding is required, but the server offers no SCRAM -PLUS mechanism", "invalid-mechanism"
  end
  if required and server_cb then
    local common = false
    for _, t in ipairs(cb_types) do common = common or contains(server_cb, t) end
    if not common then
      return nil, "channel binding is required, but the server accepts none of our types (XEP-0440: "
        .. table.concat(server_cb, ", ") .. ")", "invalid-mechanism"
    end
  end
  local choice = {
    password = caps.password,
    tls = caps.tls,
    anonymous = want == "ANONYMOUS",
    client_cert = want == "EXTERNAL",
    cb_types = cb_types,
    server_cb_types = server_cb,
  }
  local mech, cb_type, offers_plus = core.sasl_choose(list, choice)
  if not mech then return nil, tostring(cb_type), "invalid-mechanism" end   -- cb_type: the reason
  -- a SCRAM without -PLUS while the server offers -PLUS: the client says
  -- 'n' (it chose not to bind), never 'y' (which claims the server offers
  -- no binding, and a server rightly takes for a downgrade)
  local plan = { mechanism = mech, cb_type = cb_type, offers_plus = offers_plus or any_plus }
  if cbo == nil and not want and not server_cb and is_plus(mech) then
    local rest = {}
    for _, name in ipairs(offered) do
      if not is_plus(name) then rest[#rest + 1] = name end
    end
    choice.server_cb_types = nil
    local fm, fcb = core.sasl_choose(rest, choice)
    -- SCRAM only: the gs2 flag is what keeps the retry safe, PLAIN has none
    if fm and fm:match("^SCRAM%-") and fcb then
      plan.fallback = { mechanism = fm, cb_type = fcb, offers_plus = false }
    end
  end
  return plan
end

-- What we can bind to on this connection (RFC 9266 needs TLS 1.3).
local function binding_types(client)
  local out = {}
  if not client.tls_active then return out end
  for _, t in ipairs(M.CB_TYPES) do
    if client.conn:channel_binding(t) then out[#out + 1] = t end
  end
  return out
end

-- How an exchange is written (RFC 6120 §6.4 or XEP-0388 §2.4): the
-- first element, the namespace of the rest, where the server's final data
-- is. features/sasl2.lua makes the other wire.
local CLASSIC = { ns = NS_SASL }
function CLASSIC.auth(client, mech, first)
  return client:write_stanza(st.stanza("auth", { xmlns = NS_SASL, mechanism = mech }):text(payload(first)))
end
function CLASSIC.final_data(s) return s:get_text() end
M.CLASSIC = CLASSIC

--- M.ssdp_hash(mechs, cb_types, hash): XEP-0474 §"Server Sends Downgrade
-- Protection Hash": base64 of the hash of the mechanism names, sorted and
-- joined by %x1E, then (when XEP-0440 types were advertised) %x1F and the
-- types sorted and joined alike.
function M.ssdp_hash(mechs, cb_types, hash)
  local function sorted(list)
    local out = {}
    for i, v in ipairs(list) do out[i] = v end
    table.sort(out)
    return table.concat(out, "\30")
  end
  local s = sorted(mechs)
  if cb_types then s = s .. "\31" .. sorted(cb_types) end
  return core.base64_encode(core.hash(hash, s))
end

-- XEP-0474: when the server-first message of a SCRAM exchange carries h=,
-- it must be the hash of what the features showed us; anything else means
-- someone removed mechanisms or channel-binding types on the way.
local function ssdp_check(mech, data, seen)
  local h = data:match("^[^,]*,") and data:match(",h=([^,]*)")
  if not h or not seen then return true end
  local alg = mech:match("^SCRAM%-SHA%-(%d+)")
  alg = alg and (alg == "1" and "sha1" or "sha" .. alg)
  if not alg then return true end
  local ok, want = pcall(M.ssdp_hash, seen.offered, seen.server_cb, alg)
  if ok and want == h then return true end
  return nil, "downgrade detected (XEP-0474): the mechanisms or channel-binding types the server signed are "
    .. "not those its features showed; someone altered them on the way", "not-authorized"
end

-- One SASL exchange over `wire` (CLASSIC or features/sasl2.lua's). true,
-- the final element, or nil, message, condition [, refusal] where refusal
-- = { text =, condition =, proof_sent = } when the server sent <failure/>
-- (rather than our side giving up). seen: { offered =, server_cb = } for
-- the XEP-0474 check.
local function exchange(client, mech, cb_type, offers_plus, wire, seen)
  wire = wire or CLASSIC
  local NS = wire.ns
  local opts = client.opts
  local cb_data
  if cb_type then cb_data = assert(client.conn:channel_binding(cb_type)) end
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
  ok, msg, cond = wire.auth(client, mech, first)
  if not ok then return nil, msg, cond end
  local responses = 0
  while true do
    local s
    s, msg, cond = client:read()
    if not s then return nil, msg, cond end
    if s.attr.xmlns ~= NS then return nil, "unexpected <" .. s.name .. "> during SASL", "bad-format" end
    if s.name == "challenge" then
      local data, derr = decode(s:get_text())
      if not data then
        client:write_stanza(st.stanza("abort", { xmlns = NS }))
        return nil, "malformed base64 in the server's challenge: " .. tostring(derr), "incorrect-encoding"
      end
      if responses == 0 and mech:match("^SCRAM%-") then
        ok, msg, cond = ssdp_check(mech, data, seen)
        if not ok then
          client:write_stanza(st.stanza("abort", { xmlns = NS }))
          return nil, msg, cond
        end
      end
      local resp
      resp, msg, cond = sasl:step(data)
      if not resp then
        client:write_stanza(st.stanza("abort", { xmlns = NS }))
        return nil, msg, cond
      end
      responses = responses + 1
      client:write_stanza(st.stanza("response", { xmlns = NS }):text(payload(resp)))
    elseif s.name == "success" then
      local data, derr = decode(wire.final_data(s))
      if not data then return nil, "malformed base64 in <success/>: " .. tostring(derr), "incorrect-encoding" end
      -- SCRAM: the server's signature must verify, or this is not our server
      ok, msg, cond = sasl:finish(data ~= "" and data or nil)
      if not ok then return nil, msg, cond end
      client.scram_keys = sasl.keys and sasl:keys() or nil
      return true, s
    elseif s.name == "failure" then
      local fcond = s.tags[1] and s.tags[1].name ~= "text" and s.tags[1].name or "not-authorized"
      local text = s:get_child_text("text")
      -- SCRAM's proof goes in our second message (RFC 5802 §3)
      return nil, "authentication failed: " .. (text or fcond), fcond,
        { text = text, condition = fcond, proof_sent = responses > 0 }
    else
      -- (SASL2's <continue/>: we take on no tasks, XEP-0388 §2.5)
      client:write_stanza(st.stanza("abort", { xmlns = NS }))
      return nil, "unexpected <" .. s.name .. "> during SASL", "bad-format"
    end
  end
end

--- M.binding_refused(refusal) -> true when a server's <failure/> to a
-- -PLUS exchange is about the channel binding: its text says so, or it
-- came before our proof of the password (only the gs2 header and the
-- user name were there to refuse).
function M.binding_refused(refusal)
  if not refusal then return false end
  local text = (refusal.text or ""):lower()
  if text:find("channel.?binding") or text:find("cbind") then return true end
  return not refusal.proof_sent and refusal.condition ~= "account-disabled"
    and refusal.condition ~= "temporary-auth-failure" and refusal.condition ~= "credentials-expired"
end

--- M.offer(features, list) -> offered mechanism names, XEP-0440 types
-- (nil when the server lists none): list is the element holding the
-- <mechanism/>s (<mechanisms/>, or SASL2's <authentication/>).
function M.offer(features, list)
  local offered = {}
  for m in list:childtags("mechanism") do offered[#offered + 1] = m:get_text() end
  local server_cb
  local cbt = features:get_child("sasl-channel-binding", NS_SASL_CB)
  if cbt then
    server_cb = {}
    for c in cbt:childtags("channel-binding") do server_cb[#server_cb + 1] = c.attr.type end
  end
  return offered, server_cb
end

M.binding_types = binding_types

--- M.authenticate(client, offered, server_cb, wire) -> true, final element
-- | nil, message, condition: the password exchange of either profile,
-- with the same choice of mechanism and channel binding (M.plan) and the
-- same single retry without -PLUS.
function M.authenticate(client, offered, server_cb, wire)
  local opts = client.opts
  local plan, reason, pcond = M.plan(offered, server_cb, {
    password = type(opts.password) == "string",
    tls = client.tls_active,
    cb_types = binding_types(client),
    mechanism = opts.mechanism,
    channel_binding = opts.channel_binding,
  })
  if not plan then return nil, reason, pcond end
  local seen = { offered = offered, server_cb = server_cb }
  local mech, cb_type = plan.mechanism, plan.cb_type
  if client.debug then
    client:log("debug", "SASL mechanism %s%s", mech, is_plus(mech) and (" bound to " .. tostring(cb_type)) or "")
  end
  client.channel_binding_refused = nil
  local ok, msg, cond, refusal = exchange(client, mech, cb_type, plan.offers_plus, wire, seen)
  if not ok and plan.fallback and M.binding_refused(refusal) then
    if not client.told_binding_refused then     -- once per client, not on every reconnection
      client.told_binding_refused = true
      client:log("info", "the server refused %s bound to %s (%s) and does not list the channel binding types it "
        .. "accepts (XEP-0440): retrying once with %s and the gs2 flag y (RFC 5802 section 6)",
        mech, cb_type, tostring(refusal.text or refusal.condition), plan.fallback.mechanism)
    end
    client.channel_binding_refused = cb_type
    mech, cb_type = plan.fallback.mechanism, plan.fallback.cb_type
    ok, msg, cond = exchange(client, mech, cb_type, false, wire, seen)
  end
  if not ok then return nil, msg, cond end
  client.sasl_mechanism = mech
  client.channel_binding = is_plus(mech) and cb_type or false
  return true, msg
end

function M.negotiate(client, features)
  if client.authenticated then return nil end
  local mechs = features:get_child("mechanisms", NS_SASL)
  if not mechs then return client:fail("the server offers no SASL authentication", "undefined-condition") end
  local offered, server_cb = M.offer(features, mechs)
  local o = client.opts
  if o.password == nil and o.mechanism ~= "EXTERNAL" and o.mechanism ~= "ANONYMOUS" then
    -- started with a saved FAST token only (features/sasl2.lua)
    return client:fail("no password was given, and the server offers no SASL2 to use the saved FAST token with",
      "not-authorized")
  end
  local ok, msg, cond = M.authenticate(client, offered, server_cb, CLASSIC)
  if not ok then return client:fail(msg, cond) end
  client.authenticated = true
  return "restart"
end

return M
