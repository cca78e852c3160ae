-- lxmpp.server.s2s_out: the stream this server opens to a remote domain
-- (RFC 6120 §4.2, as the initiating entity), to send it our stanzas. On a
-- TCP connection server/s2s.lua made: our jabber:server header from one
-- of our domains to theirs, STARTTLS (required: RFC 6120 §5.3.1, the remote
-- certificate verified for the remote domain as a client does), SASL
-- EXTERNAL with our certificate (RFC 6120 §6.3.4, XEP-0178), the restart,
-- and from then on the route is up. With s2s.dialback, Server Dialback
-- (XEP-0220) where the receiving server does not take our certificate.
-- The same stream, in "verify" mode, asks a remote authoritative server
-- whether a dialback key is its own (s2s.lua, fed:dialback_verify).
-- Each stream speaks for one domain served here (local_domain: the
-- route's, its header's from); once up, it may carry other local domains'
-- routes to the same remote domain, each claimed with dialback over it
-- (XEP-0220 §2.6: Out:piggyback, fed:shared_stream). Where the receiving server offers XEP-0288,
-- we ask for it, and its stanzas to that domain then come back over here
-- (Out:bidi_stanza).

local stream = require "lxmpp.server.stream"
local s2s = require "lxmpp.server.s2s"
local redact = require "lxmpp.redact"

local core = require "lxmpp.core"
local jid = require "lxmpp.jid"

local ipairs, pairs, setmetatable, tostring = ipairs, pairs, setmetatable, tostring

local M = {}

local NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
local NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"

local Out = setmetatable({}, { __index = stream.Stream })
Out.__index = Out
M.Out = Out

-- route or check: what the stream serves (set before anything can fail)
local function new(fed, conn, remote, direct, route, check)
  local srv = fed.srv
  -- local_domain: the domain served here this stream speaks for (its
  -- header's from; the one the remote server authenticates)
  local self = setmetatable({ kind = "s2sout", fed = fed, remote = remote, route = route, check = check,
    local_domain = (route or check).from or srv.domain, policy = fed:policy(remote),
    secure = false, stage = "header", outgoing = true }, Out)
  -- outgoing: ours, not a peer's connection: neither per-address nor
  -- unauthenticated accounting counts it (Server:account_open)
  stream.Stream.init(self, srv, conn, s2s.NS)
  conn:on("tls-done", function()
    self.secure = true
    -- the TLS context lets a certificate that does not verify through
    -- when dialback may be used with some domain (s2s.lua): here the
    -- policy of this one decides
    if self.policy.require_valid_cert and not conn:tls_peer_is(remote) then
      return self:fail_route("the certificate of " .. remote .. " does not verify for it, which we require",
        "policy-violation")
    end
    self:guarded(self.open_stream)
  end)
  conn:on("tls-failed", function(msg) self:fail_route("TLS with " .. self.remote .. " failed: " .. tostring(msg)) end)
  conn:parse({ max_stanza_size = srv.limits.max_stanza_size })
  if direct then
    -- XEP-0368: TLS from the first byte, our header once it is up
    self.direct = true
    self.stage = "tls"
    local ok, msg = conn:starttls(fed:client_context(self.local_domain, true), remote)
    if not ok then self:fail_route("TLS with " .. remote .. " failed: " .. tostring(msg)) end
    return self
  end
  self:open_stream()
  return self
end

--- s2s_out.start(fed, route, conn, direct) -> the route's stream, its
-- header sent (direct: XEP-0368 TLS first, the header once it is up).
function M.start(fed, route, conn, direct)
  return new(fed, conn, route.domain, direct, route, nil)
end

--- s2s_out.start_verify(fed, check, conn) -> a stream that asks check.domain
-- whether check.key is its key for stream check.id (XEP-0220 §2.3), then
-- calls check.finish("valid" | "invalid" | "error") and closes.
function M.start_verify(fed, check, conn, direct)
  return new(fed, conn, check.domain, direct, nil, check)
end

-- Our header (RFC 6120 §4.7: from and to, no id from the initiator).
function Out:open_stream()
  self.stage = "header"
  self.header_sent = true
  local attr = { from = self.local_domain, to = self.remote, version = "1.0" }
  if self.policy.dialback then attr["xmlns:db"] = s2s.NS_DB end
  return self:write(self.framing.open(s2s.NS, attr))
end

function Out:log(level, fmt, ...)
  return self.srv:log(level, "s2sout %s: " .. fmt, self.remote, ...)
end

-- The route cannot come up: the stream ends (with the stream error cond,
-- if any), what waited bounces with bounce_cond (remote-server-not-found
-- by default).
function Out:fail_route(text, cond, bounce_cond)
  self:log("info", "%s", text)
  self.bounce_cond = bounce_cond          -- (for Out:on_end, which the close runs)
  if not self.ended then self:close(cond, text) end
  if self.check then return self.check.finish("error") end
  self.fed:fail(self.route, bounce_cond or "remote-server-not-found", text)
end

-- the stanza error condition in a <db:result type='error'/> (XEP-0220
-- §2.4), or nil
local function db_error_condition(el)
  local c
  for _, e in ipairs(el.tags) do
    if e.name == "error" then c = e.tags[1] and e.tags[1].name end
  end
  return c
end

function Out:on_open(attr)
  if self.ended then return end
  if attr.xmlns ~= s2s.NS then
    return self:fail_route("the remote stream is not jabber:server", "invalid-namespace")
  end
  if attr.version ~= "1.0" then
    return self:fail_route("the remote server does not speak XMPP 1.0 streams", "unsupported-version")
  end
  self.stream_id = attr.id
  self.stage = "features"
end

local function mechanisms(features)
  local m = features:get_child("mechanisms", NS_SASL)
  local set = {}
  for el in (m and m:childtags("mechanism") or function() end) do set[el:get_text() or ""] = true end
  return set
end

-- Whether we may authenticate this stream by dialback (XEP-0220): our
-- policy for the remote domain allows it, the receiving server offered it
-- (its stream features), and its header gave the stream id the key needs.
function Out:may_claim()
  return self.policy.dialback and self.db_offered and self.stream_id ~= nil
end

-- Our dialback claim for (local_domain, remote) (XEP-0220 §2.1.1).
function Out:claim()
  self.stage = "dialback"
  local key = self.fed:dialback_key(self.remote, self.local_domain, self.stream_id)
  return self:write(("<db:result xmlns:db='%s' from='%s' to='%s'>%s</db:result>"):format(s2s.NS_DB,
    core.xml_escape(self.local_domain), core.xml_escape(self.remote), key))
end

function Out:on_stanza(el)
  if self.ended then return end
  local name, ns = el.name, el.attr.xmlns
  if self.srv.debug then self:log("debug", "IN %s", redact.text(el)) end
  if ns == stream.NS_STREAMS and name == "error" then
    local cond = el.tags[1] and el.tags[1].name or "undefined-condition"
    return self:fail_route("the remote server sent the stream error " .. cond)
  end
  local stage = self.stage
  if stage == "features" and ns == stream.NS_STREAMS and name == "features" then
    if not self.secure then
      if not el:get_child("starttls", NS_TLS) then
        return self:fail_route(self.remote .. " offers no STARTTLS, which we require", "policy-violation")
      end
      self.stage = "proceed"
      return self:write("<starttls xmlns='" .. NS_TLS .. "'/>")
    end
    if self.check then              -- verify mode: no authentication (XEP-0220 §2.3.1)
      local c = self.check
      self.stage = "verify"
      return self:write(("<db:verify xmlns:db='%s' from='%s' to='%s' id='%s'>%s</db:verify>"):format(s2s.NS_DB,
        core.xml_escape(self.local_domain), core.xml_escape(c.domain), core.xml_escape(c.id), core.xml_escape(c.key)))
    end
    if not self.authenticated then
      -- XEP-0288 §2.2: bidirectionality before authentication, no answer
      if self.fed.conf.bidi and not self.bidi and el:get_child("bidi", s2s.NS_BIDI_FEATURE) then
        self.bidi = true
        self:write("<bidi xmlns='" .. s2s.NS_BIDI .. "'/>")
      end
      -- XEP-0220 §2.4/§2.6: with <errors/>, more domains may be claimed
      -- over this stream later, each refused on its own (fed:shared_stream)
      local db = el:get_child("dialback", s2s.NS_DB_FEATURE)
      self.db_errors = db ~= nil and db:get_child("errors") ~= nil
      self.db_offered = db ~= nil
      if not mechanisms(el).EXTERNAL then
        if self:may_claim() then return self:claim() end
        return self:fail_route(self.remote .. " does not accept our certificate (no SASL EXTERNAL" ..
          (self.policy.dialback and ", no dialback)" or ")"), "policy-violation")
      end
      self.stage = "sasl"
      -- no authorization identity: the one of our certificate, our domain (XEP-0178 §4)
      return self:write("<auth xmlns='" .. NS_SASL .. "' mechanism='EXTERNAL'>=</auth>")
    end
    self.stage = "ready"
    self:set_ready()
    return self.fed:route_ready(self.route)
  end
  if stage == "proceed" and ns == NS_TLS then
    if name ~= "proceed" then return self:fail_route(self.remote .. " refused STARTTLS") end
    self.stage = "tls"
    local ok, msg = self.conn:starttls(self.fed:client_context(self.local_domain, false), self.remote)
    if not ok then return self:fail_route("TLS with " .. self.remote .. " failed: " .. tostring(msg)) end
    return
  end
  if stage == "sasl" and ns == NS_SASL then
    if name ~= "success" then
      local why = el.tags[1] and el.tags[1].name or "failure"
      -- XEP-0178 §3: the receiving server that does not take our
      -- certificate either closes the connection or goes on with dialback;
      -- the stream stays open after <failure/> (RFC 6120 §6.4.5). ejabberd
      -- offers EXTERNAL before it has checked the certificate.
      if name == "failure" and self:may_claim() then
        self:log("info", "%s refused our certificate (%s): dialback on the same stream", self.remote, why)
        return self:claim()
      end
      return self:fail_route(self.remote .. " refused our certificate (" .. why .. ")")
    end
    self.authenticated = true
    self.conn:restart()
    return self:open_stream()
  end
  if stage == "dialback" and ns == s2s.NS_DB and name == "result" then
    if el.attr.from ~= self.remote or el.attr.to ~= self.local_domain then
      return self:fail_route("a dialback answer for another domain pair from " .. self.remote, "invalid-from")
    end
    if el.attr.type == "error" then
      -- XEP-0220 §2.4: resource-constraint: one new TCP connection, and
      -- we give up on the same error there; any other error (or that
      -- one again, or on the stream a multiplexed pair refused over a
      -- shared one got, Out:shared_result): what waited returns to its
      -- senders with remote-server-timeout, as the XEP says
      local given = db_error_condition(el)
      local route = self.route
      if given == "resource-constraint" and not route.retried then
        self:log("info", "%s has no room for our claim (resource-constraint): one new connection", self.remote)
        route.retried = true
        self.handed_over = true                 -- (Out:on_end leaves the route alone)
        self:close()
        return self.fed:connect_route(route)
      end
      return self:fail_route(self.remote .. " refused our dialback claim (" .. tostring(given) .. ")", nil,
        "remote-server-timeout")
    end
    if el.attr.type ~= "valid" then
      return self:fail_route(self.remote .. " refused our dialback key (" .. tostring(el.attr.type) .. ")")
    end
    self.authenticated = true
    self.stage = "ready"
    self:set_ready()
    self:log("info", "authenticated by dialback")
    return self.fed:route_ready(self.route)
  end
  if stage == "verify" and ns == s2s.NS_DB and name == "verify" then
    local c = self.check
    if el.attr.id ~= c.id or el.attr.from ~= c.domain or el.attr.to ~= self.local_domain then
      return self:fail_route("a dialback answer for another stream from " .. self.remote, "invalid-id")
    end
    local t = el.attr.type
    c.finish((t == "valid" or t == "invalid") and t or "error")
    return self:close()
  end
  if stage == "ready" then
    if ns == s2s.NS_DB and name == "result" and self.shared then return self:shared_result(el) end
    if self.bidi then return self:bidi_stanza(el) end
    -- one direction per connection without XEP-0288: the receiving
    -- server sends us nothing here
    return self:stream_error("unsupported-stanza-type", "this stream carries stanzas the other way only")
  end
  return self:fail_route("unexpected <" .. name .. "/> from " .. self.remote .. " during negotiation",
    "unsupported-stanza-type")
end

-- A stanza the receiving server sends back over a bidirectional stream
-- (XEP-0288 §2.2): only from the domain we connected to (the one its
-- certificate or our dialback check stands for), only to the domain we
-- authenticated as; else the stream errors s2s_in.lua gives.
function Out:bidi_stanza(s)
  self:check_rate()
  local ns, name = s.attr.xmlns, s.name
  if not ((ns == nil or ns == s2s.NS) and (name == "message" or name == "presence" or name == "iq")) then
    return self:stream_error("unsupported-stanza-type", "<" .. name .. "/> is not a stanza")
  end
  local from, to = s.attr.from and jid.prep(s.attr.from), s.attr.to and jid.prep(s.attr.to)
  if not from or not to then
    return self:stream_error("improper-addressing", "a stanza between servers needs valid 'from' and 'to'")
  end
  if jid.domain(from) ~= self.remote then
    return self:stream_error("invalid-from", "this stream carries stanzas of " .. self.remote .. " only")
  end
  if jid.domain(to) ~= self.local_domain then
    return self:stream_error("host-unknown", "this stream carries stanzas to " .. self.local_domain .. " only")
  end
  s.attr.from, s.attr.to, s.attr.xmlns = from, to, nil
  s2s.touch(self)
  return self.srv:route(s)
end

-- Multiplexing (XEP-0220 §2.6): route, of another local domain to the
-- same remote domain, asks to go over this stream; its <db:result/>
-- answer comes in Out:shared_result.
function Out:piggyback(route)
  self.shared = self.shared or {}
  self.shared[route.from] = route
  self.nshared = (self.nshared or 0) + 1
  route.via = self
  local key = self.fed:dialback_key(self.remote, route.from, self.stream_id)
  return self:write(("<db:result xmlns:db='%s' from='%s' to='%s'>%s</db:result>"):format(s2s.NS_DB,
    core.xml_escape(route.from), core.xml_escape(self.remote), key))
end

-- route no longer goes over this stream (it failed)
function Out:unshare(route)
  if self.shared and self.shared[route.from] == route then
    self.shared[route.from] = nil
    self.nshared = self.nshared - 1
  end
end

-- The receiving server's answer for a domain we multiplexed: valid, the
-- route is up over this stream; type='invalid' or resource-constraint,
-- one connection of its own; any other error, the route fails.
function Out:shared_result(el)
  local to = el.attr.to and jid.prep(el.attr.to)
  local route = to and self.shared[to]
  if not route or route.out or jid.prep(el.attr.from or "") ~= self.remote then
    return self:stream_error("unsupported-stanza-type", "a dialback answer for no pending claim")
  end
  if el.attr.type == "valid" then
    route.out = self
    self:log("info", "%s goes over the stream of %s (dialback)", to, self.local_domain)
    return self.fed:route_ready(route)
  end
  self:unshare(route)
  local given = db_error_condition(el)
  if el.attr.type == "error" and given ~= "resource-constraint" then
    -- XEP-0220 §2.4: refused for that pair with a reason (a policy, a
    -- domain not served there, its authoritative server not reached):
    -- another connection would get the same answer, so the route fails,
    -- what waited returning with remote-server-timeout. resource-constraint
    -- (the peer's room on this stream): a new TCP connection, given up on
    -- the same error there (route.retried)
    route.via = nil
    return self.fed:fail(route, "remote-server-timeout", self.remote .. " refused " .. to .. " (" ..
      tostring(given) .. ")")
  end
  -- type='invalid' (XEP-0220 §2.2.1: the authoritative server the peer
  -- found for our domain did not take the key): a stream of its own may
  -- still succeed, with SASL EXTERNAL and that domain's certificate
  -- (s2s.certs) or a check the peer makes afresh. Either way that
  -- stream is the route's one retry (route.retried): refused there too
  -- (invalid, or resource-constraint again), the route fails and what
  -- waited bounces (Out:on_stanza, stage "dialback"); nothing connects
  -- again until the next stanza opens a new route.
  route.retried = true
  self:log("info", "%s refused %s over this stream (%s): a stream of its own", self.remote, to,
    tostring(given or el.attr.type))
  return self.fed:connect_route(route)
end

function Out:on_end(reason)
  s2s.stop_idle(self)
  if self.check then return self.check.finish("error") end    -- (nothing once it has run)
  -- the domains multiplexed here: those up fail with the stream (the next
  -- stanza opens a route again), those still asking get a stream of their own
  local shared = self.shared
  self.shared = nil
  for _, r in pairs(shared or {}) do
    if r.out == self then
      r.via = nil          -- (fed:fail must not close this stream again)
      r.out = nil
      self.fed:fail(r, "remote-server-not-found", "the stream to " .. self.remote .. " ended: " .. tostring(reason))
    else
      self.fed:connect_route(r)
    end
  end
  local route = self.route
  if self.handed_over then return end       -- (its route connects again: XEP-0220 §2.4 resource-constraint)
  if route.out == self or not route.ready then
    self.fed:fail(route, self.bounce_cond or "remote-server-not-found", "the stream to " .. self.remote ..
      " ended: " .. tostring(reason))
  end
end

return M
