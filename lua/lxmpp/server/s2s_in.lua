-- lxmpp.server.s2s_in: a stream a remote server opens to us (RFC 6120 §4.2,
-- as the receiving entity), to send us its stanzas. The header names both
-- domains (to: one served here, our main domain, MUC, pubsub or a
-- component's; from: the peer's, RFC 6120 §4.7.1; a domain blocked by
-- policy gets policy-violation, s2s.lua fed:policy); STARTTLS is
-- required; the peer then authenticates as that domain with SASL EXTERNAL
-- (RFC 6120 §6.3.4, §13.7.1.2, XEP-0178), offered only when its TLS client
-- certificate verified against s2s.cafile and names the domain (RFC 6125;
-- conn:tls_peer_is, csrc/tls.c). After the restart, every stanza must come
-- from that domain (else invalid-from), be addressed to a domain served
-- here (else host-unknown: we relay for nobody), and carry both addresses
-- (else improper-addressing); it is then routed as ours are.
--
-- With s2s.dialback, Server Dialback (XEP-0220, over TLS only as XEP-0344
-- asks) is offered too: a <db:result/> key is checked with the peer
-- domain's authoritative server (s2s.lua, fed:dialback_verify), and the
-- <db:verify/> questions of servers checking our keys are answered.
-- A peer may multiplex more (from, to) domain pairs over the stream with
-- further <db:result/> (XEP-0220 §2.6; In:on_db_result, limits.s2s_pairs):
-- stanzas may then come from any domain of a valid pair. A refused claim
-- is answered for its pair and the stream goes on, up to
-- limits.s2s_refused_claims refusals (refuse, below).
-- With XEP-0288 (s2s.bidi), a peer that asked for it before authenticating
-- gets our stanzas from the header's `to` to its domain over this stream
-- (fed:bidi_route).

local core = require "lxmpp.core"
local jid = require "lxmpp.jid"
local stream = require "lxmpp.server.stream"
local s2s = require "lxmpp.server.s2s"
local redact = require "lxmpp.redact"

local next, pairs, setmetatable, tostring = next, pairs, setmetatable, tostring

local M = {}

local NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
local NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"

local In = setmetatable({}, { __index = stream.Stream })
In.__index = In
M.In = In

--- s2s_in.accept(srv, conn, direct_tls [, peer]): a remote server's stream
-- (direct_tls: XEP-0368, TLS from the first byte; peer: conn:info().peer,
-- as srv:accept read it for its limits).
function M.accept(srv, conn, direct_tls, peer)
  local self = setmetatable({ kind = "s2sin", fed = srv.s2s, secure = conn.encrypted == true }, In)
  stream.Stream.init(self, srv, conn, s2s.NS, peer)
  conn:on("tls-done", function()
    self.secure = true
    self.starting_tls = false
  end)
  conn:parse({ max_stanza_size = srv.limits.max_stanza_size })
  if direct_tls then
    self.starting_tls = true
    conn:starttls(self.fed.server_ctx)
  end
  return self
end

function In:log(level, fmt, ...)
  return self.srv:log(level, "s2sin %s %s: " .. fmt, self.ip, self.peer or "?", ...)
end

-- the peer can authenticate as self.peer with its certificate
local function external_ok(self)
  return self.secure and self.peer ~= nil and self.conn.tls_peer_is ~= nil and self.conn:tls_peer_is(self.peer)
end

-- the peer may authenticate by dialback: its domain's policy allows it,
-- and a certificate that verifies for it when the policy wants one
-- (s2s.domains[d].require_valid_cert: dialback over authenticated TLS only)
local function dialback_ok(self)
  local p = self.policy
  return p ~= nil and p.dialback and (not p.require_valid_cert or external_ok(self))
end

function In:on_open(attr)
  if self.ended then return end
  local bad, why = self.framing.check_open(attr, s2s.NS)
  if bad then return self:stream_error(bad, why) end
  if attr.version ~= "1.0" then
    return self:stream_error("unsupported-version", "only XMPP 1.0 streams are served")
  end
  -- to: any domain served here (our main one, MUC, pubsub, a component):
  -- each has its streams (s2s.lua keys routes by local and remote domain)
  local to = attr.to and jid.prep(attr.to)
  if not to or not self.fed:serves(to) then
    return self:stream_error("host-unknown", tostring(to) .. " is not served here")
  end
  if self.local_domain and to ~= self.local_domain then
    return self:stream_error("host-unknown", "the stream was opened to " .. self.local_domain)
  end
  self.local_domain = to
  local from = attr.from and jid.prep(attr.from)
  if not from or jid.node(from) or jid.resource(from) then
    return self:stream_error("invalid-from", "the stream header must name the sending server's domain")
  end
  -- a domain served here (ours, MUC, pubsub, a component) is never a peer's
  local srv = self.srv
  if from == srv.domain or srv.hosts[from] or (srv.components and srv.components[from]) then
    return self:stream_error("invalid-from", from .. " is served here")
  end
  -- a blocked domain (s2s.domains[d].block, s2s.block) gets nothing
  local policy = self.fed:policy(from)
  if policy.block then
    return self:stream_error("policy-violation", "this server does not federate with " .. from)
  end
  if self.authenticated and from ~= self.peer then
    return self:stream_error("invalid-from", "the stream was authenticated for " .. self.peer)
  end
  self.peer = from
  self.policy = policy
  local dialback = policy.dialback
  self:send_header({ from = to, to = from, version = "1.0", ["xmlns:db"] = dialback and s2s.NS_DB or nil })
  local f = { self.framing.features }
  if not self.secure then
    f[#f + 1] = "<starttls xmlns='" .. NS_TLS .. "'><required/></starttls>"
  elseif not self.authenticated then
    if external_ok(self) then
      f[#f + 1] = "<mechanisms xmlns='" .. NS_SASL .. "'><mechanism>EXTERNAL</mechanism></mechanisms>"
    end
    if dialback_ok(self) then f[#f + 1] = "<dialback xmlns='" .. s2s.NS_DB_FEATURE .. "'><errors/></dialback>" end
    -- XEP-0288 §2.1: the peer may ask for our stanzas over this connection
    if self.fed.conf.bidi then f[#f + 1] = "<bidi xmlns='" .. s2s.NS_BIDI_FEATURE .. "'/>" end
  end
  f[#f + 1] = "</stream:features>"
  self:write(table.concat(f))
end

local function sasl_failure(self, cond, text)
  self:log("info", "SASL EXTERNAL refused: %s", text)
  self:write("<failure xmlns='" .. NS_SASL .. "'><" .. cond .. "/></failure>")
  return self:close()
end

function In:on_auth(el)
  if el.attr.mechanism ~= "EXTERNAL" then
    return sasl_failure(self, "invalid-mechanism", "only EXTERNAL is offered")
  end
  if not external_ok(self) then
    return sasl_failure(self, "not-authorized", "no verified certificate for " .. tostring(self.peer))
  end
  -- the authorization identity, when given, is the domain itself (XEP-0178 §4)
  local text = el:get_text() or ""
  local authzid = ""
  if text ~= "" and text ~= "=" then
    authzid = core.base64_decode(text)
    if not authzid then return sasl_failure(self, "incorrect-encoding", "bad base64") end
  end
  if authzid ~= "" and jid.prep(authzid) ~= self.peer then
    return sasl_failure(self, "invalid-authzid", "the authorization identity is not " .. self.peer)
  end
  self:authenticated_as()
  self:write("<success xmlns='" .. NS_SASL .. "'/>")
  self.conn:restart()
  self:restarted()
  self:log("info", "authenticated by certificate")
end

-- The peer is authenticated as self.peer (SASL EXTERNAL or dialback; for
-- dialback, the first valid (from, to) pair of the stream, s.peer and
-- s.local_domain are then that pair's).
function In:authenticated_as()
  self.authenticated = true
  self.pairs = self.pairs or {}
  if not self.pairs[self.peer .. " " .. self.local_domain] then
    self.pairs[self.peer .. " " .. self.local_domain] = true
    self.npairs = (self.npairs or 0) + 1
  end
  self.froms = self.froms or {}
  self.froms[self.peer] = true
  self.srv:account_auth(self)
  self:set_ready()
  self.fed.incoming[self] = self.peer
  s2s.arm_idle(self)
  -- XEP-0288 §2.2: once the peer is authenticated, our stanzas from the
  -- domain it connected to, to its domain, may go back over this stream
  if self.bidi then self.bidi_route = self.fed:bidi_route(self, self.local_domain, self.peer) end
end

-- our answer to the claim of (from: the peer's domain, to: ours)
local function db_result(self, from, to, typ, cond)
  local err = cond and ("<error type='cancel'><" .. cond ..
    " xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>") or ""
  return self:write(("<db:result xmlns:db='%s' from='%s' to='%s' type='%s'>%s</db:result>"):format(s2s.NS_DB,
    core.xml_escape(to), core.xml_escape(from), typ, err))
end

-- a (from, to) pair is valid on this stream
local function pair_valid(self, from, to)
  if not self.authenticated then
    -- the first valid pair authenticates the stream: it becomes the
    -- stream's peer and local domain (the header's unless the peer
    -- multiplexed other domains first)
    self.peer, self.local_domain, self.policy = from, to, self.fed:policy(from)
    self:authenticated_as()
    return
  end
  self.pairs[from .. " " .. to] = true
  self.npairs = self.npairs + 1
  self.froms[from] = true
end

-- A claim refused: answered type='invalid' (cond nil) or type='error'
-- with cond. A dialback error is not fatal to the stream (XEP-0220
-- §2.4), so it goes on, authenticated or not. After type='invalid' with
-- no other valid pair and none under way, the stream is closed, as
-- §2.2.1 requires of the receiving server; with other pairs it goes on
-- (a multiplexing peer, §2.6, may be misconfigured for one domain only:
-- the refused domain's stanzas get invalid-from, RFC 6120 §4.9.3.10).
-- An unauthenticated stream still ends at negotiation_timeout. At most
-- limits.s2s_refused_claims refusals are answered on a stream: one more
-- (of a claim under way then) ends it with policy-violation, and so does
-- any claim after them, before it costs a check (too_many_refused): a peer
-- that only makes refused claims must not keep a connection or make us
-- verify keys without bound.
local function too_many_refused(self)
  local limit = self.srv.limits.s2s_refused_claims
  if (self.refused or 0) < limit then return false end
  self:stream_error("policy-violation", limit .. " dialback claims were refused on this stream")
  return true
end

local function refuse(self, from, to, cond)
  if too_many_refused(self) then return end
  self.refused = (self.refused or 0) + 1
  db_result(self, from, to, cond and "error" or "invalid", cond)
  if not cond and not self.authenticated and not next(self.pending) then return self:close() end
end

-- <db:result/>: the peer claims a domain with a key (XEP-0220 §2.1.1),
-- the first on the stream or another (from, to) pair over the same stream
-- (XEP-0220 §2.6, multiplexing): each pair is checked like the first with
-- its own authoritative server, or accepted at once when the stream's
-- verified TLS certificate names the claimed domain (as SASL EXTERNAL
-- would, RFC 6120 §13.7.1.2; XEP-0344 §2.4 "dialback without
-- dialback"). A failed pair is answered type='invalid' or type='error'
-- (XEP-0220 §2.4, we offer <errors/>) and leaves the stream and its other
-- pairs as they were (refuse). At most limits.s2s_pairs pairs (valid or
-- under way) per stream.
function In:on_db_result(el)
  local from, to = el.attr.from and jid.prep(el.attr.from), el.attr.to and jid.prep(el.attr.to)
  if not from or not to or jid.node(from) or jid.resource(from) then
    return self:stream_error("improper-addressing", "a dialback claim needs valid 'from' and 'to' domains")
  end
  local key = el:get_text() or ""
  if not key:match("^%x+$") or #key > 128 then return self:stream_error("not-authorized", "not a dialback key") end
  if too_many_refused(self) then return end
  local pair = from .. " " .. to
  self.pending = self.pending or {}
  if self.pending[pair] or (self.pairs and self.pairs[pair]) then
    return self:stream_error("policy-violation", "one dialback request per domain pair")
  end
  -- to: one of our domains (XEP-0220 §2.4: item-not-found otherwise)
  if not self.fed:serves(to) then
    self:log("info", "dialback claim to %s: not served here", to)
    return refuse(self, from, to, "item-not-found")
  end
  -- from: a peer's domain we federate with by dialback
  local srv = self.srv
  local policy = self.fed:policy(from)
  local cert = self.conn.tls_peer_is ~= nil and self.conn:tls_peer_is(from)
  if from == srv.domain or srv.hosts[from] or (srv.components and srv.components[from])
    or policy.block or not policy.dialback or (policy.require_valid_cert and not cert) then
    self:log("info", "dialback claim for %s refused by policy", from)
    return refuse(self, from, to, "policy-violation")
  end
  local n = (self.npairs or 0)
  for _ in pairs(self.pending) do n = n + 1 end
  if n >= srv.limits.s2s_pairs then
    self:log("info", "dialback claim for %s: %d domain pairs on this stream already", from, n)
    return refuse(self, from, to, "resource-constraint")
  end
  if cert then
    -- XEP-0344 §2.4, "dialback without dialback": the certificate,
    -- verified now (not only at the handshake: XEP-0344 §3), names the
    -- claimed domain: valid without asking its authoritative server, for
    -- the first pair as for a multiplexed one
    self:log("info", "%s -> %s valid by certificate", from, to)
    pair_valid(self, from, to)
    return db_result(self, from, to, "valid")
  end
  self.pending[pair] = true
  self:log("info", "dialback: asking %s about its key", from)
  self.fed:dialback_verify(from, key, self.stream_id, to, function(result)
    self.pending[pair] = nil
    if self.ended then return end
    if result == "valid" then
      if self.authenticated then
        self:log("info", "%s -> %s added by dialback", from, to)
      else
        self:log("info", "authenticated by dialback")
      end
      pair_valid(self, from, to)
      return db_result(self, from, to, "valid")
    end
    self:log("info", "dialback for %s refused: %s", from, result)
    if result == "invalid" then return refuse(self, from, to, nil) end
    -- busy: too many checks under way (limits.s2s_checks, s2s_domain_checks)
    return refuse(self, from, to, result == "busy" and "resource-constraint" or "remote-server-not-found")
  end)
end

-- <db:verify/>: a server checking a key we gave it (XEP-0220 §2.3.2): we
-- are the authoritative server of the domain in its 'to'
-- At most limits.s2s_verifies questions per stream in any 60 seconds:
-- each costs us an HMAC, and a peer that only asks (its own keys are
-- checked over connections of their own) has no need for more; past
-- that, the stream error policy-violation.
function In:on_db_verify(el)
  local now, limit = core.now(), self.srv.limits.s2s_verifies
  if not self.verify_start or now - self.verify_start >= 60 then self.verify_start, self.nverifies = now, 0 end
  self.nverifies = self.nverifies + 1
  if self.nverifies > limit then
    return self:stream_error("policy-violation", "more than " .. limit .. " dialback questions a minute")
  end
  local from, to, id = el.attr.from and jid.prep(el.attr.from), el.attr.to and jid.prep(el.attr.to), el.attr.id
  if from ~= self.peer and not (self.froms and self.froms[from]) then
    return self:stream_error("invalid-from", "a dialback question for another domain")
  end
  if not id or id == "" then return self:stream_error("invalid-id", "a dialback question needs the stream id") end
  local valid = to ~= nil and self.fed:serves(to)
    and core.const_eq(el:get_text() or "", self.fed:dialback_key(from, to, id))
  return self:write(("<db:verify xmlns:db='%s' from='%s' to='%s' id='%s' type='%s'/>"):format(s2s.NS_DB,
    core.xml_escape(to or self.local_domain), core.xml_escape(from), core.xml_escape(id),
    valid and "valid" or "invalid"))
end

function In:on_stanza(s)
  if self.ended then return end
  self:check_rate()
  local ns, name = s.attr.xmlns, s.name
  if self.srv.debug then self:log("debug", "IN %s", redact.text(s)) end
  if ns == stream.NS_STREAMS and name == "error" then
    return self:finish("the remote server sent a stream error")
  end
  local stanza = (ns == nil or ns == s2s.NS) and (name == "message" or name == "presence" or name == "iq")
  if self.authenticated then
    if ns == s2s.NS_DB and name == "verify" and self.policy.dialback then
      return self:on_db_verify(s)    -- a question may come over an authenticated stream too (XEP-0220 §2.3)
    end
    -- another (from, to) pair over this stream (XEP-0220 §2.6): its policy is checked in on_db_result
    if ns == s2s.NS_DB and name == "result" then return self:on_db_result(s) end
    if not stanza then
      return self:stream_error("unsupported-stanza-type", "<" .. name .. "/> is not a stanza")
    end
    local from, to = s.attr.from and jid.prep(s.attr.from), s.attr.to and jid.prep(s.attr.to)
    if not from or not to then
      return self:stream_error("improper-addressing", "a stanza between servers needs valid 'from' and 'to'")
    end
    -- from: a domain authenticated on this stream (the first, or one
    -- multiplexed with dialback, XEP-0220 §2.6)
    if not self.froms[jid.domain(from)] then
      return self:stream_error("invalid-from", jid.domain(from) .. " is not authenticated on this stream")
    end
    local host = jid.domain(to)
    local srv = self.srv
    if not srv.hosts[host] and not (srv.components and srv.components[host]) then
      return self:stream_error("host-unknown", host .. " is not served here")
    end
    s.attr.from, s.attr.to, s.attr.xmlns = from, to, nil
    s2s.touch(self)
    return srv:route(s)
  end
  if not self.starting_tls and ns == NS_TLS and name == "starttls" and not self.secure then
    self:write("<proceed xmlns='" .. NS_TLS .. "'/>")
    self.starting_tls = true
    self:restarted()
    local _, discarded = self.conn:starttls(self.fed.server_ctx)
    if discarded and discarded > 0 then
      self:log("warn", "dropped %d bytes sent in plaintext after <starttls/>", discarded)
    end
    return
  end
  if ns == s2s.NS_BIDI and name == "bidi" and self.secure and self.fed.conf.bidi and not self.bidi then
    self.bidi = true                -- no answer (XEP-0288 §2.2); takes effect with authentication
    return
  end
  if ns == NS_SASL and name == "auth" and self.secure then return self:on_auth(s) end
  if ns == s2s.NS_DB and self.secure and self.policy then
    -- a question about our key: from a domain we may use dialback with
    if name == "verify" and self.policy.dialback then return self:on_db_verify(s) end
    if name == "result" and dialback_ok(self) then return self:on_db_result(s) end
    return self:stream_error("policy-violation", "no dialback with " .. tostring(self.peer) .. " here")
  end
  if stanza then return self:stream_error("not-authorized", "authenticate first") end
  return self:stream_error("unsupported-stanza-type", "<" .. name .. "/> is not expected here")
end

function In:on_end(reason)
  s2s.stop_idle(self)
  if self.fed then self.fed.incoming[self] = nil end
  local route = self.bidi_route
  self.bidi_route = nil
  if route then self.fed:fail(route, "remote-server-not-found", "the stream from " .. self.peer .. " ended: " ..
    tostring(reason)) end
end

return M
