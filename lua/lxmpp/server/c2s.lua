-- lxmpp.server.c2s: one client stream of the embedded server, from the
-- stream header to a bound resource (RFC 6120 §4–§7): STARTTLS (required
-- unless the server is configured insecure_plaintext), SASL (SCRAM-SHA-1/256
-- and their -PLUS variants with channel binding, the types advertised with
-- XEP-0440, PLAIN over TLS only, or a host application's auth callback),
-- in-band registration when enabled,
-- resource binding, then stanzas handed to the IM core with a `from` the
-- server stamps. Nothing is routed before a resource is bound.

local core = require "lxmpp.core"
local task = require "lxmpp.task"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local stream = require "lxmpp.server.stream"
local sm = require "lxmpp.server.sm"
local redact = require "lxmpp.redact"
local throttle = require "lxmpp.server.throttle"

local setmetatable, tostring, ipairs, pcall, type = setmetatable, tostring, ipairs, pcall, type

local M = {}

local NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
local NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
local NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
local NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
local NS_REGISTER = "jabber:iq:register"
local NS_SASL_CB = "urn:xmpp:sasl-cb:0"   -- XEP-0440
M.NS_SASL = NS_SASL

local C2S = setmetatable({}, { __index = stream.Stream })
C2S.__index = C2S
M.C2S = C2S

--- c2s.accept(srv, conn, direct_tls): a new client stream on an accepted
-- connection (direct_tls: XEP-0368, TLS from the first byte).
function M.accept(srv, conn, direct_tls)
  local self = setmetatable({ kind = "c2s", secure = false, sasl_failures = 0, cb_refusals = 0 }, C2S)
  stream.Stream.init(self, srv, conn, "jabber:client")
  conn:on("tls-done", function()
    self.secure = true
    self.starting_tls = false
    self.mechs = nil                -- over TLS: PLAIN and -PLUS become possible
  end)
  conn:parse({ max_stanza_size = srv.limits.max_stanza_size })
  if direct_tls then
    self.starting_tls = true
    conn:starttls(srv.tls_ctx)
  end
  return self
end

---------------------------------------------------------------------------
-- the stream header and features

function C2S:on_open(attr)
  if self.ended then return end
  if attr.xmlns ~= "jabber:client" then
    return self:stream_error("invalid-namespace", "the stream namespace must be jabber:client")
  end
  if attr.version ~= "1.0" then
    return self:stream_error("unsupported-version", "only XMPP 1.0 streams are served")
  end
  local to = attr.to and jid.prep(attr.to)
  if to ~= self.srv.domain then
    return self:stream_error("host-unknown", "this server serves " .. self.srv.domain)
  end
  self.lang = attr["xml:lang"]
  self:send_header({ from = self.srv.domain, version = "1.0", ["xml:lang"] = "en" })
  self:write(self:features())
end

-- What we offer at this stage of the negotiation.
function C2S:features()
  local srv, f = self.srv, { "<stream:features>" }
  if not self.secure and not self.authenticated then
    f[#f + 1] = "<starttls xmlns='" .. NS_TLS .. "'>" ..
      (srv.insecure_plaintext and "" or "<required/>") .. "</starttls>"
  end
  if not self.authenticated and (self.secure or srv.insecure_plaintext) then
    f[#f + 1] = "<mechanisms xmlns='" .. NS_SASL .. "'>"
    for _, m in ipairs(self:mechanisms()) do
      f[#f + 1] = "<mechanism>" .. m .. "</mechanism>"
    end
    f[#f + 1] = "</mechanisms>"
    if self.cb then      -- XEP-0440: the types a -PLUS exchange may use here
      f[#f + 1] = "<sasl-channel-binding xmlns='" .. NS_SASL_CB .. "'>"
      for _, t in ipairs(self.cb_list) do
        f[#f + 1] = "<channel-binding type='" .. t .. "'/>"
      end
      f[#f + 1] = "</sasl-channel-binding>"
    end
    if srv.registration then
      f[#f + 1] = "<register xmlns='http://jabber.org/features/iq-register'/>"
    end
  elseif self.authenticated then
    f[#f + 1] = "<bind xmlns='" .. NS_BIND .. "'/><session xmlns='" .. NS_SESSION ..
      "'><optional/></session><ver xmlns='urn:xmpp:features:rosterver'/>"
    if srv.sm_features then f[#f + 1] = srv.sm_features(self) end
  end
  f[#f + 1] = "</stream:features>"
  return table.concat(f)
end

-- Channel-binding data of this TLS connection, by type, for the types the
-- server is configured with (srv.cb_types, best first) that this TLS
-- version defines (docs/server.md, "Channel binding"); and their list.
function C2S:binding_data()
  if not self.secure then return nil end
  local cb, list = {}, {}
  for _, t in ipairs(self.srv.cb_types) do
    local data = self.conn:channel_binding(t)
    if data then cb[t], list[#list + 1] = data, t end
  end
  if #list == 0 then return nil end
  return cb, list
end

-- SASL mechanisms, strongest first. With a host auth callback only PLAIN
-- can work (it needs the password), and PLAIN is never offered without TLS.
function C2S:mechanisms()
  if self.mechs then return self.mechs end
  local list = {}
  if not self.srv.auth then
    self.cb, self.cb_list = self:binding_data()
    if self.cb then
      list[#list + 1] = "SCRAM-SHA-256-PLUS"
      list[#list + 1] = "SCRAM-SHA-1-PLUS"
    end
    list[#list + 1] = "SCRAM-SHA-256"
    list[#list + 1] = "SCRAM-SHA-1"
  end
  if self.secure then list[#list + 1] = "PLAIN" end
  self.mechs = list
  return list
end

---------------------------------------------------------------------------
-- stanzas

local negotiation = {}   -- [xmlns][name] = handler(self, s)

function C2S:on_stanza(s)
  if self.ended then return end
  self:check_rate()
  local ns, name = s.attr.xmlns, s.name
  if self.srv.debug then self:log("debug", "IN %s", redact.text(s)) end
  if ns == stream.NS_STREAMS and name == "error" then
    return self:finish("the client sent a stream error")
  end
  if self.bound then
    if (ns == nil or ns == "jabber:client") and (name == "message" or name == "presence" or name == "iq") then
      local from = s.attr.from
      if from and from ~= self.full then
        local p = jid.prep(from)
        if p ~= self.full and p ~= self.bare then
          return self:stream_error("invalid-from", "the from address is not this session's")
        end
      end
      s.attr.from = self.full
      if self.sm then sm.inbound(self) end
      return self.srv.im:from_client(self, s)
    end
    local h = self.srv.stream_handlers[ns or ""]
    if h and h(self, s) then return end
    -- stanza/<xmlns>:<name>: other top-level elements, for the host application
    if self.srv:fire("stanza/" .. (ns or "") .. ":" .. name, { origin = self, stanza = s }) then return end
    return self:stream_error("unsupported-stanza-type", "<" .. name .. "/> is not a stanza")
  end
  if self.authenticated then                -- XEP-0198 <resume/> comes before binding
    local h = self.srv.stream_handlers[ns or ""]
    if h and h(self, s) then return end
  end
  local byns = negotiation[ns or "jabber:client"]
  local h = byns and byns[name]
  if h then return h(self, s) end
  if (ns == nil or ns == "jabber:client") and (name == "message" or name == "presence" or name == "iq") then
    return self:stream_error("not-authorized", "authenticate and bind a resource first")
  end
  return self:stream_error("unsupported-stanza-type", "<" .. name .. "/> is not expected here")
end

negotiation[NS_TLS] = {
  starttls = function(self)
    if self.secure or self.authenticated then
      return self:stream_error("policy-violation", "TLS is already negotiated")
    end
    self:write("<proceed xmlns='" .. NS_TLS .. "'/>")
    self.starting_tls = true
    self:restarted()
    local _, discarded = self.conn:starttls(self.srv.tls_ctx)
    if discarded and discarded > 0 then
      -- plaintext pipelined after <starttls/>: never parsed (RFC 6120 §5.4.3.3)
      self:log("warn", "dropped %d bytes sent in plaintext after <starttls/>", discarded)
    end
  end,
}

---------------------------------------------------------------------------
-- SASL

-- forgive: a refusal that costs no try (an unsupported channel-binding type).
local function sasl_failure(self, cond, text, forgive)
  self.sasl = nil
  if not forgive then self.sasl_failures = self.sasl_failures + 1 end
  self:write("<failure xmlns='" .. NS_SASL .. "'><" .. cond .. "/>" ..
    (text and ("<text>" .. core.xml_escape(text) .. "</text>") or "") .. "</failure>")
  if self.sasl_failures >= self.srv.limits.sasl_attempts then
    return self:stream_error("policy-violation", "too many failed authentication attempts")
  end
end

-- The SASL conditions a failure may carry (RFC 6120 §6.5).
local SASL_CONDS = {
  aborted = true, ["account-disabled"] = true, ["credentials-expired"] = true,
  ["encryption-required"] = true, ["incorrect-encoding"] = true, ["invalid-authzid"] = true,
  ["invalid-mechanism"] = true, ["malformed-request"] = true, ["mechanism-too-weak"] = true,
  ["not-authorized"] = true, ["temporary-auth-failure"] = true,
}

local function sasl_success(self, user, final)
  self.sasl = nil
  self.authenticated = true
  self.user = user
  self.bare = user .. "@" .. self.srv.domain
  self.srv:account_auth(self)
  self:log("info", "authenticated as %s", self.bare)
  self:write("<success xmlns='" .. NS_SASL .. "'>" ..
    (final and final ~= "" and core.base64_encode(final) or "") .. "</success>")
  self.conn:restart()
  self:restarted()
end

-- A checked password: the answer (success, or the failure cond with
-- text) goes out when the address's throttle lets it (server/throttle.lua,
-- docs/server.md "Throttles"), success and failure alike; meanwhile
-- nothing is read from the client. user: the account name tried (nil when
-- the name was not valid); final: SCRAM's server-final message.
local function checked(self, user, ok, cond, text, final)
  if type(self.sasl) == "userdata" then self.sasl:close() end
  self.sasl = "held"
  local now = core.now()
  local at = self.srv.auth_throttle:verdict(throttle.key(self.ip), user, not ok, now)
  if at > now then self:log("info", "the answer to a login waits %.2f s (failures from this address)", at - now) end
  return self:answer_at(at, function()
    self.sasl = nil
    if ok then return sasl_success(self, user, final) end
    return sasl_failure(self, cond or "not-authorized", text)
  end)
end

-- A SASL username as an account name (nodeprep), or nil.
local function account_name(self, username)
  local node = username ~= "" and jid.prepped_split(username .. "@" .. self.srv.domain)
  return node or nil
end

local function decode_payload(s)
  local text = s:get_text() or ""
  if text == "" then return "" end
  if text == "=" then return "" end
  return core.base64_decode(text)
end

local function check_plain(self, data)
  local authzid, authcid, password = data:match("^([^%z]*)%z([^%z]+)%z([^%z]+)$")
  if not authcid then return sasl_failure(self, "malformed-request") end
  local name = core.saslprep(authcid)
  password = core.saslprep(password)
  local user = name and account_name(self, name)
  if authzid ~= "" and (not user or jid.prep(authzid) ~= user .. "@" .. self.srv.domain) then
    return sasl_failure(self, "invalid-authzid")
  end
  if not user or not password then return checked(self, user, false) end
  if self.srv.auth then
    -- a host application's check may wait (a database call): run it as a
    -- task, reading nothing from this client meanwhile
    self:pause_reading("auth")
    self.sasl = "plain-pending"
    task.spawn(function()
      local ok, res = pcall(self.srv.auth, user, password)
      password = nil
      if self.ended then return end
      self:resume_reading("auth")
      if not ok then
        self:log("error", "the auth callback failed: %s", tostring(res))
        return sasl_failure(self, "temporary-auth-failure")
      end
      return checked(self, user, res == true)
    end)
    return
  end
  return checked(self, user, self.srv:check_password(user, password))
end

local function scram_step(self, data)
  local out, done, cond, server_error = self.sasl:step(data)
  if not out then
    -- a channel-binding failure is named with its RFC 5802 §7
    -- server-error-value, the only way XMPP's <failure/> can carry it
    -- (RFC 6120 §6.4.5: a text, no additional data). A type we cannot
    -- check is refused before any password work and proves nothing, so
    -- it does not count against limits.sasl_attempts: the client may go
    -- on to a type or mechanism it has (once per -PLUS mechanism offered)
    local forgive = false
    if server_error == "unsupported-channel-binding-type" then
      local plus = 0
      for _, m in ipairs(self:mechanisms()) do
        if m:match("%-PLUS$") then plus = plus + 1 end
      end
      forgive = self.cb_refusals < plus
      if forgive then self.cb_refusals = self.cb_refusals + 1 end
    end
    cond = SASL_CONDS[cond] and cond or "not-authorized"
    if self.sasl_tried and cond == "not-authorized" then   -- a proof was checked: a guess
      return checked(self, self.sasl_user, false, cond, server_error)
    end
    return sasl_failure(self, cond, server_error, forgive)
  end
  if done then
    local user = account_name(self, self.sasl:username() or "")
    return checked(self, user, user ~= nil, nil, nil, out)
  end
  self:write("<challenge xmlns='" .. NS_SASL .. "'>" .. core.base64_encode(out) .. "</challenge>")
end

negotiation[NS_SASL] = {
  auth = function(self, s)
    if self.authenticated or self.sasl then
      return self:stream_error("policy-violation", "authentication is already under way or done")
    end
    if not self.secure and not self.srv.insecure_plaintext then
      return self:stream_error("policy-violation", "STARTTLS is required before authentication")
    end
    local mech = s.attr.mechanism
    self.mechanism = mech
    local offered = false
    for _, m in ipairs(self:mechanisms()) do offered = offered or m == mech end
    if not offered then return sasl_failure(self, "invalid-mechanism") end
    local data = decode_payload(s)
    if not data then return sasl_failure(self, "incorrect-encoding") end
    if mech == "PLAIN" then
      if data == "" then
        self.sasl = "plain"
        return self:write("<challenge xmlns='" .. NS_SASL .. "'/>")
      end
      return check_plain(self, data)
    end
    local srv = self.srv
    self.sasl_tried, self.sasl_user = false, nil
    self.sasl = core.sasl_server({
      mechanism = mech, secret = srv.sasl_secret, iterations = srv.iterations,
      cb = mech:match("%-PLUS$") and self.cb or nil, offers_plus = self.cb ~= nil,
      lookup = function(username, hash)
        -- from here on the exchange checks a proof for this name
        self.sasl_tried, self.sasl_user = true, account_name(self, username)
        return srv:scram_credentials(self.sasl_user, hash)
      end,
    })
    if data == "" then return self:write("<challenge xmlns='" .. NS_SASL .. "'/>") end
    return scram_step(self, data)
  end,
  response = function(self, s)
    if self.sasl ~= "plain" and type(self.sasl) ~= "userdata" then
      return self:stream_error("policy-violation", "no authentication exchange is under way")
    end
    local data = decode_payload(s)
    if not data then return sasl_failure(self, "incorrect-encoding") end
    if self.sasl == "plain" then
      self.sasl = nil
      return check_plain(self, data)
    end
    return scram_step(self, data)
  end,
  abort = function(self)
    if self.sasl == "held" or self.sasl == "plain-pending" then
      return self:stream_error("policy-violation", "the authentication is being checked")
    end
    if type(self.sasl) == "userdata" then self.sasl:close() end
    return sasl_failure(self, "aborted")
  end,
}

---------------------------------------------------------------------------
-- binding (and what a client may ask before: registration)

local function bind(self, iq)
  local b = iq.tags[1]
  local res = b:get_child_text("resource")
  if res then
    local full = jid.prep(self.bare .. "/" .. res)
    if not full or res == "" then
      return self:send(st.error_reply(iq, "modify", "bad-request", "invalid resource"))
    end
    res = jid.resource(full)
  else
    res = "lx" .. core.sha1_hex(core.random(8)):sub(1, 12)
  end
  local full, cond, text = self.srv:bind(self, res)
  if not full then
    return self:send(st.error_reply(iq, cond == "resource-constraint" and "wait" or "cancel", cond, text))
  end
  self:set_ready()
  self:send(st.reply(iq):tag("bind", { xmlns = NS_BIND }):text_tag("jid", full))
end

negotiation["jabber:client"] = {
  iq = function(self, iq)
    local child, typ = iq.tags[1], iq.attr.type
    local xmlns = child and child.attr.xmlns
    if self.authenticated and typ == "set" and xmlns == NS_BIND and child.name == "bind" then
      return bind(self, iq)
    end
    if not self.authenticated and xmlns == NS_REGISTER and self.srv.registration and
        (self.secure or self.srv.insecure_plaintext) and (typ == "get" or typ == "set") then
      return self.srv.im:register_iq(self, iq)
    end
    return self:stream_error("not-authorized", "authenticate and bind a resource first")
  end,
}

function C2S:on_end(reason)
  if type(self.sasl) == "userdata" then self.sasl:close() end
  self.sasl = nil
  if self.bound and not sm.stream_ended(self) then self.srv:unbind(self, reason) end
end

--- True while what was sent waits: unread by the peer, or held back by
-- stream management until acknowledgements make room.
function C2S:congested()
  return stream.Stream.congested(self) or (self.sm ~= nil and self.sm.held.n > 0)
end

--- Sends a stanza; with stream management it is also kept until the
-- client acknowledges it (and queued while the session hibernates).
function C2S:send(stanza)
  if self.sm then
    local xml = tostring(stanza)              -- once: its size counts against the SM queue's bytes
    local now = sm.outbound(self, stanza, #xml)
    if not now then return nil end
    if now == "held" or self.ended then return true end
    return stream.Stream.send(self, stanza, xml)
  end
  return stream.Stream.send(self, stanza)
end

return M
