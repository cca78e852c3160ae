-- SASL2 (XEP-0388), client side, with what it carries inline: Bind2
-- (XEP-0386: the resource tag, stream management and carbons enabled in
-- the same round trip, and an inactive client state, XEP-0352; the
-- archive's XEP-0313 metadata read from <bound/>), XEP-0198
-- resumption inside <authenticate/>, and FAST tokens (XEP-0484). Used when
-- the server offers it over TLS, unless connect{ sasl2 = false }; otherwise
-- features/sasl.lua runs RFC 6120 SASL.
--
-- The password exchange is features/sasl.lua's (the same mechanism and
-- channel-binding choice, SCRAM checks, XEP-0474 downgrade check, one
-- retry without -PLUS), written with this profile's elements (WIRE below).
-- Success needs no stream restart: the server's next features come on the
-- same stream (client.lua negotiates them), and none come after an inline
-- resumption.
--
-- What a login keeps between connections is client.login: the user-agent
-- id (a UUID v4 made once, or user_agent.id) and the FAST token { token =,
-- mechanism =, expiry = }; both are saved with the stream management state
-- (features/sm.lua, SM:state) so that they outlive the process. The token
-- is a secret: it is never logged (lxmpp.redact hides every SASL2 element).

local core = require "lxmpp.core"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local sasl = require "lxmpp.features.sasl"
local datetime = require "lxmpp.datetime"
local mam = require "lxmpp.plugins.mam"
local catchup = require "lxmpp.features.catchup"
local bind = require "lxmpp.features.bind"

local ipairs, tostring, type, os_time, math_floor = ipairs, tostring, type, os.time, math.floor

local NS = "urn:xmpp:sasl:2"
local NS_BIND2 = "urn:xmpp:bind:0"
local NS_FAST = "urn:xmpp:fast:0"
local NS_SM = "urn:xmpp:sm:3"
local NS_CARBONS = "urn:xmpp:carbons:2"
local NS_CSI = "urn:xmpp:csi:0"
local NS_MAM = mam.NS_MAM

local M = { NS = NS }

-- HT mechanisms (draft-schmaus-kitten-sasl-ht) we can use, best first,
-- with the channel binding each needs (XEP-0440 names).
M.FAST_ORDER = { "HT-SHA-256-EXPR", "HT-SHA-256-ENDP", "HT-SHA-256-NONE" }
local CB_OF = { ["HT-SHA-256-EXPR"] = "tls-exporter", ["HT-SHA-256-ENDP"] = "tls-server-end-point",
  ["HT-SHA-256-NONE"] = false }

--- M.uuid4() -> a random UUID (RFC 9562 version 4), lower case.
function M.uuid4()
  local b = { core.random(16):byte(1, 16) }
  b[7] = b[7] % 16 + 0x40            -- version 4 (arithmetic: no 5.3 bit operators)
  b[9] = b[9] % 64 + 0x80            -- variant 10
  for i = 1, 16 do b[i] = ("%02x"):format(b[i]) end
  local hex = table.concat(b)
  return hex:sub(1, 8) .. "-" .. hex:sub(9, 12) .. "-" .. hex:sub(13, 16) .. "-" .. hex:sub(17, 20) .. "-"
    .. hex:sub(21)
end

local function contains(list, x)
  for _, v in ipairs(list) do if v == x then return true end end
  return false
end

-- The stream's binding data for an HT mechanism ("" for NONE), or nil.
local function cb_data(client, mech)
  local t = CB_OF[mech]
  if t == false then return "" end
  if not t or not client.tls_active then return nil end
  return client.conn:channel_binding(t)
end

-- May an HT mechanism be used, given the channel_binding option? (false:
-- only the unbound one; true or a type: only a bound one, of that type.)
local function fast_allowed(client, mech)
  local cbo, t = client.opts.channel_binding, CB_OF[mech]
  if t == nil then return false end
  if cbo == false then return t == false end
  if cbo == true then return t ~= false end
  if type(cbo) == "string" then return t == cbo end
  return true
end

-- The HT mechanism to ask a token for: the best one offered whose binding
-- this stream has (XEP-0440 order: tls-exporter, then tls-server-end-point).
local function fast_choice(client, offered)
  for _, m in ipairs(M.FAST_ORDER) do
    if contains(offered, m) and fast_allowed(client, m) and cb_data(client, m) then return m end
  end
  return nil
end

-- What goes into every <authenticate/> besides the exchange.
local function extras(client, want)
  local login = client.login
  local ua = client.opts.user_agent or {}
  local sw = ua.software or (client.opts.software and client.opts.software.name) or "lxmpp"
  local x = { "<user-agent id='", login.ua_id, "'><software>", core.xml_escape(sw), "</software>" }
  if ua.device then x[#x + 1] = "<device>" .. core.xml_escape(ua.device) .. "</device>" end
  x[#x + 1] = "</user-agent>"
  if want.resume then x[#x + 1] = client.sm:resume_xml() end
  if want.bind then
    x[#x + 1] = "<bind xmlns='" .. NS_BIND2 .. "'>"
    if client.requested_resource then x[#x + 1] = "<tag>" .. core.xml_escape(client.requested_resource) .. "</tag>" end
    if want.sm then x[#x + 1] = "<enable xmlns='" .. NS_SM .. "'" .. (client.sm.want_resume and " resume='true'" or "")
      .. "/>" end
    if want.carbons then x[#x + 1] = "<enable xmlns='" .. NS_CARBONS .. "'/>" end
    -- XEP-0386 §"Performing the bind": the session begins in that state
    if want.inactive then x[#x + 1] = "<inactive xmlns='" .. NS_CSI .. "'/>" end
    x[#x + 1] = "</bind>"
  end
  if want.request_token then x[#x + 1] = "<request-token xmlns='" .. NS_FAST .. "' mechanism='" ..
    want.request_token .. "'/>" end
  if want.fast then x[#x + 1] = "<fast xmlns='" .. NS_FAST .. "'/>" end
  return table.concat(x)
end

local function wire_for(client, want)
  local w = { ns = NS }
  function w.auth(_, mech, first)
    local ir = (first == nil or first == "") and "=" or core.base64_encode(first)
    local xml = "<authenticate xmlns='" .. NS .. "' mechanism='" .. core.xml_escape(mech) .. "'><initial-response>"
      .. ir .. "</initial-response>" .. extras(client, want) .. "</authenticate>"
    if client.debug then client:log("debug", "OUT <authenticate xmlns='%s' mechanism='%s'/> [redacted]", NS, mech) end
    return client.conn:write(xml)
  end
  function w.final_data(s) return s:get_child_text("additional-data") or "" end
  return w
end

-- One FAST exchange (XEP-0484 §3.4): one round trip, the token as an HMAC
-- key (draft-schmaus-kitten-sasl-ht §3). true, <success/> | nil, message,
-- condition, refused (true when the server sent <failure/>).
local function fast_exchange(client, wire, tok)
  local cb = cb_data(client, tok.mechanism)
  if not cb then return nil, "no channel binding for " .. tok.mechanism, "invalid-mechanism" end
  local ok, msg, cond = wire.auth(client, tok.mechanism,
    client.node .. "\0" .. core.hmac("sha256", tok.token, "Initiator" .. cb))
  if not ok then return nil, msg, cond end
  local s
  s, msg, cond = client:read()
  if not s then return nil, msg, cond end
  if s.attr.xmlns ~= NS then return nil, "unexpected <" .. s.name .. "> during SASL2", "bad-format" end
  if s.name == "failure" then
    local fcond = s.tags[1] and s.tags[1].name ~= "text" and s.tags[1].name or "not-authorized"
    return nil, "FAST token refused: " .. (s:get_child_text("text") or fcond), fcond, true
  end
  if s.name ~= "success" then
    client:write_stanza(st.stanza("abort", { xmlns = NS }))
    return nil, "unexpected <" .. s.name .. "> during FAST authentication", "bad-format"
  end
  -- the server proves it holds the token too (mutual authentication)
  local proof = core.base64_decode(wire.final_data(s)) or ""
  if not core.const_eq(proof, core.hmac("sha256", tok.token, "Responder" .. cb)) then
    return nil, "the server's FAST proof did not verify: not our server", "not-authorized"
  end
  return true, s
end

-- Keeps a token from <success/> (issued or rotated: XEP-0484 §3.3, §3.6).
local function keep_token(client, s, mech)
  local t = s:get_child("token", NS_FAST)
  if not t then return end
  local expiry = datetime.parse(t.attr.expiry or "")
  if type(t.attr.token) ~= "string" or t.attr.token == "" or not expiry or not mech then
    client:log("warn", "ignored a malformed FAST token")
    return
  end
  client.login.fast = { token = t.attr.token, mechanism = mech, expiry = math_floor(expiry) }
end

-- After <success/>: who we are, and what the inline requests gave.
local function succeeded(client, s, want)
  local authz = s:get_child_text("authorization-identifier")
  local node, domain, res = jid.split(authz or "")
  if not domain or bind.foreign(client, node, domain) then
    return client:fail("the server authorized another identity: " .. tostring(authz), "bad-format")
  end
  client.authenticated = true
  local sm = client.sm
  local resumed = s:get_child("resumed", NS_SM)
  local failed = s:get_child("failed", NS_SM)
  if want.resume and resumed then
    return sm:resumed(resumed)          -- the old stream goes on: no features come
  elseif want.resume and failed then
    sm:resume_failed(failed)
  elseif want.resume then
    sm:abandon("the server did not answer the inline resumption", "undefined-condition")
  end
  local bound = s:get_child("bound", NS_BIND2)
  if bound and want.bind then
    if not res then
      return client:fail("Bind2: the server bound no resource (" .. tostring(authz) .. ")", "bad-format")
    end
    bind.bound_as(client, jid.prep(authz) or authz)
    client.bound, client.session_done = true, true
    -- XEP-0386 §"Performing the bind": the archive as of this bind
    -- (XEP-0313 metadata), for c:mam_catch_up; nil when the server sent
    -- none, or a malformed one (logged)
    client.archive_metadata = nil
    local mdel = bound:get_child("metadata", NS_MAM)
    if mdel then
      local md, why = mam.read_metadata(mdel)
      if md then client.archive_metadata = md
      else client:log("warn", "ignored the archive metadata in <bound/>: %s", why) end
    end
    -- what the archive holds past our anchor is fetched once the session's
    -- initial presence is sent (features/catchup.lua)
    catchup.bound(client, true)
    local enabled = bound:get_child("enabled", NS_SM)
    if enabled and sm then sm:enabled_by(enabled) end
    if want.carbons and client:plugin_loaded("carbons") then client.carbons.enabled = true end
    -- the new session is inactive from its bind on: plugins/csi.lua need
    -- not say so again on this connection
    if want.inactive then client.csi.told_on = client.conn end
  end
  -- the server's features for the authenticated stream (XEP-0388 §2.6.1)
  local f, msg, cond = client:read()
  if not f then return client:fail(msg, cond) end
  if f.name ~= "features" or f.attr.xmlns ~= "http://etherx.jabber.org/streams" then
    return client:fail("expected <stream:features> after the SASL2 success, got <" .. tostring(f.name) .. ">",
      "bad-format")
  end
  client.next_features = f
  return "features"
end

function M.negotiate(client, features)
  local opts = client.opts
  if client.authenticated or opts.sasl2 == false or not client.tls_active then return nil end
  local auth = features:get_child("authentication", NS)
  if not auth or not client.node or opts.mechanism == "EXTERNAL" or opts.mechanism == "ANONYMOUS" then return nil end
  local offered, server_cb = sasl.offer(features, auth)
  local inline = auth:get_child("inline") or st.stanza("inline")
  local login = client.login
  login.ua_id = login.ua_id or M.uuid4()
  login.saved = true
  local sm = client.sm
  local bind_el = inline:get_child("bind", NS_BIND2)
  local want = {}
  want.resume = sm and sm:resumable() and inline:get_child("sm", NS_SM) ~= nil
  -- a session to resume comes first: Bind2 only beside an inline <resume/>
  -- (XEP-0198 §"SASL2 And BIND2 Interaction"), else after a classic one
  -- Bind2 makes its own resource from ours (XEP-0386 §"Resource identifier
  -- generation"): only when we asked for none, or with bind2 = true. And
  -- it has the server clear the offline messages its archive holds
  -- (XEP-0386 §"Performing the bind"): by default only when we can fetch
  -- them back, from the last archive entry we saw (features/catchup.lua);
  -- else the classic bind follows this success (XEP-0388 §2.6.1) and the
  -- server delivers them (RFC 6121 §8.5.2.1.1)
  local bind2 = opts.bind2
  if bind2 == nil then bind2 = client.requested_resource == nil and catchup.anchored(client) end
  if bind_el and bind2 and (want.resume or not (sm and sm:resumable())) then
    want.bind = true
    local bi = bind_el:get_child("inline")
    local function bind_offers(var)
      if not bi then return false end
      for f in bi:childtags("feature") do if f.attr.var == var then return true end end
      return false
    end
    want.sm = sm ~= nil and bind_offers(NS_SM)
    -- carbons, when this client had them on (a session that could not be resumed)
    want.carbons = client:plugin_loaded("carbons") and client.carbons.enabled == true and bind_offers(NS_CARBONS)
    -- an inactive client (XEP-0352, c:set_active(false)) says so in the
    -- bind request when the server lists CSI among Bind2's inline features
    -- (XEP-0386 §"Discovering support", §"Performing the bind"), rather
    -- than in a nonza after the login; ignored when a resumption succeeds
    -- (the resumed stream starts active: plugins/csi.lua says it then)
    want.inactive = client:plugin_loaded("csi") and client.csi.active == false and bind_offers(NS_CSI)
  end
  -- (an explicit mechanism is that mechanism only: no token)
  local fast_el = opts.fast ~= false and not opts.mechanism and inline:get_child("fast", NS_FAST)
  local fast_offered = {}
  if fast_el then for m in fast_el:childtags("mechanism") do fast_offered[#fast_offered + 1] = m:get_text() end end
  -- 1. a FAST token we hold, when still valid and its mechanism offered
  local tok = fast_el and login.fast
  if tok and tok.expiry <= os_time() then
    login.fast, tok = nil, nil               -- expired: of no use anywhere
  elseif tok and not (contains(fast_offered, tok.mechanism) and fast_allowed(client, tok.mechanism)) then
    tok = nil                                -- kept, not usable on this stream
  end
  if tok then
    want.fast = true
    local ok, s_or_msg, cond, refused = fast_exchange(client, wire_for(client, want), tok)
    want.fast = nil
    if ok then
      client.sasl_mechanism, client.channel_binding = tok.mechanism, CB_OF[tok.mechanism] or false
      keep_token(client, s_or_msg, tok.mechanism)    -- rotated
      if sm then sm:save() end
      return succeeded(client, s_or_msg, want)
    end
    if not refused then return client:fail(s_or_msg, cond) end
    -- refused (expired, revoked, another server): forget it, use the password
    login.fast = nil
    if sm then sm:save() end
    client:log("info", "the server refused our FAST token (%s); logging in with the password", tostring(cond))
    if type(opts.password) ~= "string" then
      return client:fail("the server refused the saved FAST token and no password was given: "
        .. "connect with a password to log in again", cond)
    end
  elseif type(opts.password) ~= "string" then
    return client:fail("no valid FAST token is saved for this server and no password was given", "not-authorized")
  end
  -- 2. the password, asking for a token on the way
  want.request_token = fast_el and fast_choice(client, fast_offered) or nil
  local ok, s_or_msg, cond = sasl.authenticate(client, offered, server_cb, wire_for(client, want))
  if not ok then return client:fail(s_or_msg, cond) end
  keep_token(client, s_or_msg, want.request_token)
  if sm then sm:save() end
  return succeeded(client, s_or_msg, want)
end

return M
