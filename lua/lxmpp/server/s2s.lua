-- lxmpp.server.s2s: federation (RFC 6120 server-to-server) for the embedded
-- server: one route per (local domain, remote domain). A route is the
-- outgoing stream that carries the stanzas of one domain served here (the
-- main one, MUC, pubsub, a component) to one remote domain
-- (server/s2s_out.lua), authenticated for that local domain (or another
-- local domain's stream to the same remote domain, multiplexed with
-- dialback: XEP-0220 §2.6, fed:shared_stream), the bounded
-- queue of stanzas that wait while it comes up, and its idle timer;
-- stanzas from the remote domain arrive over its own stream
-- (server/s2s_in.lua), or, with XEP-0288, over ours (and ours over its:
-- fed:bidi_route).
--
-- Options (docs/server.md, "Federation (s2s)"):
--   s2s = { hosts = { ["other.example"] = "192.0.2.7:5269" },  -- domain -> address
--           cafile = "ca.pem",       -- trust anchors for peer certificates
--           dialback = false,        -- XEP-0220 where certificates do not verify
--           bidi = true,             -- XEP-0288: offer and use bidirectional streams
--           domains = { ["x.example"] = { block =, dialback =, require_valid_cert = } },
--           block = { "spam.example" } }   -- per remote domain policies (fed:policy)
--   s2s_listen = "0.0.0.0:5269"      -- where remote servers connect
-- A route that fails bounces what waited with remote-server-not-found
-- (nothing to connect to, connection or TLS or authentication refused) or
-- remote-server-timeout (not up within limits.s2s_timeout, or a dialback
-- error answer: XEP-0220 §2.4, s2s_out.lua), never an error
-- or a result (Server:bounce), so bounces cannot be used for amplification.

local core = require "lxmpp.core"
local jid = require "lxmpp.jid"
local task = require "lxmpp.task"
local fifo = require "lxmpp.fifo"

local setmetatable, getmetatable, type, error, pairs, tostring, ipairs =
  setmetatable, getmetatable, type, error, pairs, tostring, ipairs

local M = {}

M.NS = "jabber:server"

-- a domain as an option names it, prepared, or nil
local function domain_of(d)
  local pd = type(d) == "string" and jid.prep(d)
  if not pd or jid.node(pd) or jid.resource(pd) then return nil end
  return pd
end

-- the settings one entry of s2s.domains may have (docs/server.md,
-- "Federation policies")
local POLICY_KEYS = { block = true, dialback = true, require_valid_cert = true }

--- s2s.check(opts) -> the s2s options, normalized, or nil when federation
-- is off; raises on a bad option (called from lxmpp.server(opts)).
function M.check(opts, parse_address)
  local o = opts.s2s
  if o == nil and opts.s2s_listen == nil and opts.s2s_tls_listen == nil then return nil end
  if o ~= nil and type(o) ~= "table" then error("lxmpp.server: option s2s must be a table", 3) end
  o = o or {}
  for k in pairs(o) do
    if k ~= "hosts" and k ~= "cafile" and k ~= "dialback" and k ~= "domains" and k ~= "block" and k ~= "bidi"
      and k ~= "certs" then
      error(("lxmpp.server: unknown s2s option %q"):format(tostring(k)), 3)
    end
  end
  if o.cafile ~= nil and type(o.cafile) ~= "string" then error("lxmpp.server: s2s.cafile must be a file name", 3) end
  if o.dialback ~= nil and type(o.dialback) ~= "boolean" then
    error("lxmpp.server: s2s.dialback must be a boolean", 3)
  end
  if o.bidi ~= nil and type(o.bidi) ~= "boolean" then error("lxmpp.server: s2s.bidi must be a boolean", 3) end
  local hosts = {}
  if o.hosts ~= nil and type(o.hosts) ~= "table" then error("lxmpp.server: s2s.hosts must be a table", 3) end
  for d, addr in pairs(o.hosts or {}) do
    local pd = domain_of(d)
    if not pd then error(("lxmpp.server: s2s.hosts: %q is not a domain"):format(tostring(d)), 3) end
    hosts[pd] = M.host_address(addr, parse_address, "s2s.hosts")
  end
  -- per remote domain policies: s2s.domains = { [domain] = { block =,
  -- dialback =, require_valid_cert = } } and s2s.block = { domain, ... }
  local domains = {}
  if o.domains ~= nil and type(o.domains) ~= "table" then
    error("lxmpp.server: s2s.domains must be a table of domain = { settings }", 3)
  end
  for d, pol in pairs(o.domains or {}) do
    local pd = domain_of(d)
    if not pd then error(("lxmpp.server: s2s.domains: %q is not a domain"):format(tostring(d)), 3) end
    if type(pol) ~= "table" then error(("lxmpp.server: s2s.domains[%q] must be a table"):format(pd), 3) end
    for k, v in pairs(pol) do
      if not POLICY_KEYS[k] then
        error(("lxmpp.server: unknown setting %q in s2s.domains[%q] (block, dialback, require_valid_cert)")
          :format(tostring(k), pd), 3)
      end
      if type(v) ~= "boolean" then error(("lxmpp.server: s2s.domains[%q].%s must be a boolean"):format(pd, k), 3) end
    end
    domains[pd] = { block = pol.block, dialback = pol.dialback, require_valid_cert = pol.require_valid_cert }
  end
  if o.block ~= nil and type(o.block) ~= "table" then error("lxmpp.server: s2s.block must be a list of domains", 3) end
  for i, d in ipairs(o.block or {}) do
    local pd = domain_of(d)
    if not pd then error(("lxmpp.server: s2s.block[%d]: %q is not a domain"):format(i, tostring(d)), 3) end
    domains[pd] = domains[pd] or {}
    if domains[pd].block == false then
      error(("lxmpp.server: %s is in s2s.block and has block = false in s2s.domains"):format(pd), 3)
    end
    domains[pd].block = true
  end
  -- s2s.certs = { [local domain] = { cert =, key = } }: the certificate a
  -- domain served here shows to remote servers (by SNI on streams to it,
  -- as its client certificate on its routes), instead of tls.cert
  local certs
  if o.certs ~= nil and type(o.certs) ~= "table" then
    error("lxmpp.server: s2s.certs must be a table of domain = { cert =, key = }", 3)
  end
  for d, c in pairs(o.certs or {}) do
    local pd = domain_of(d)
    if not pd then error(("lxmpp.server: s2s.certs: %q is not a domain"):format(tostring(d)), 3) end
    if type(c) ~= "table" or type(c.cert) ~= "string" or type(c.key) ~= "string" then
      error(("lxmpp.server: s2s.certs[%q] needs cert and key file names"):format(pd), 3)
    end
    certs = certs or {}
    certs[pd] = { cert = c.cert, key = c.key }
  end
  -- the outgoing TLS context must continue past a certificate that does
  -- not verify wherever dialback may be used (XEP-0220 §2.1 trusts DNS)
  local any_dialback = o.dialback == true
  for _, pol in pairs(domains) do
    if pol.dialback then any_dialback = true end
  end
  return { hosts = hosts, cafile = o.cafile, dialback = o.dialback == true, domains = domains,
    any_dialback = any_dialback, bidi = o.bidi ~= false, certs = certs }
end

--- An s2s.hosts address: "IP:PORT" (STARTTLS) or "tls:IP:PORT" (TLS from
-- the first byte, XEP-0368) -> { ip =, port =, direct = boolean }.
function M.host_address(addr, parse_address, what)
  local direct = false
  if type(addr) == "string" and addr:sub(1, 4) == "tls:" then
    addr, direct = addr:sub(5), true
  end
  local a = parse_address(addr, what)
  a.direct = direct
  return a
end

local S2S = {}
S2S.__index = S2S

local targets     -- where to connect for a domain (below)

--- s2s.new(srv, conf) -> the federation core of a started server, with its
-- TLS contexts: the server one asks for client certificates (verified
-- against conf.cafile; without it no peer can use SASL EXTERNAL) and
-- picks s2s.certs ones by SNI; the client ones (one pair per
-- certificate: STARTTLS and direct TLS) verify the servers we connect to
-- and show our certificate for the stream's local domain.
function M.new(srv, conf)
  local topts = srv.opts.tls or {}
  local sctx, msg, cond
  -- ALPN xmpp-server (XEP-0368 §3): selected when a direct TLS peer offers it
  if topts.cert then
    sctx, msg, cond = core.tls_context({ mode = "server", cert = topts.cert, key = topts.key, cafile = conf.cafile,
      alpn = "xmpp-server", sni = conf.certs })
  else
    sctx, msg, cond = core.tls_context({ mode = "server", domain = srv.domain, cafile = conf.cafile,
      alpn = "xmpp-server", sni = conf.certs })
  end
  if not sctx then return nil, "s2s TLS: " .. tostring(msg), cond end
  -- with dialback, a server whose certificate does not verify is still
  -- talked to (XEP-0220 §2.1 trusts DNS there); s2s_out.lua checks
  -- conn:tls_peer_is itself for the domains whose policy needs a valid
  -- certificate (fed:policy)
  local made = {}
  local function client_pair(cert, key)
    local copts = { mode = "client", cafile = conf.cafile, cert = cert, key = key, insecure = conf.any_dialback }
    local c, m, k = core.tls_context(copts)
    if not c then return nil, m, k end
    made[#made + 1] = c
    -- the same, offering ALPN xmpp-server, for direct TLS (XEP-0368 §3)
    copts.alpn = "xmpp-server"
    local d
    d, m, k = core.tls_context(copts)
    if not d then return nil, m, k end
    made[#made + 1] = d
    return { starttls = c, direct = d }
  end
  local per_domain = {}
  local main
  main, msg, cond = client_pair(topts.cert, topts.key)
  for d, c in pairs(conf.certs or {}) do
    if not main then break end
    per_domain[d], msg, cond = client_pair(c.cert, c.key)
    if not per_domain[d] then main = nil end
  end
  if not main then
    sctx:close()
    for _, c in ipairs(made) do c:close() end
    return nil, "s2s TLS: " .. tostring(msg), cond or "tls-failed"
  end
  local cctx, dctx = main.starttls, main.direct
  return setmetatable({ srv = srv, conf = conf, server_ctx = sctx, client_ctx = cctx, direct_ctx = dctx,
    domain_ctx = per_domain,   -- local domain with a certificate of its own -> { starttls =, direct = }
    all_ctx = made,
    routes = {},       -- fed:route_key(local domain, remote domain) -> route
    nroutes = 0,       -- how many (limits.s2s_routes)
    incoming = {},     -- authenticated incoming stream -> its domain
    checks = {},       -- dialback keys being verified (fed:dialback_verify) -> true
    nchecks = 0,       -- how many (limits.s2s_checks)
    domain_checks = {},   -- claimed domain -> how many of them (limits.s2s_domain_checks)
    dialback_secret = core.random(32),   -- XEP-0185 keys; new at each start
  }, S2S)
end

--- fed:client_context(local_domain, direct) -> the TLS context for a
-- stream that speaks for local_domain (its s2s.certs certificate, else
-- tls.cert); direct: XEP-0368 TLS from the first byte (ALPN xmpp-server).
function S2S:client_context(d, direct)
  local pair = self.domain_ctx[d]
  if pair then return direct and pair.direct or pair.starttls end
  return direct and self.direct_ctx or self.client_ctx
end

--- fed:policy(domain) -> what applies to a remote domain: { block =,
-- dialback =, require_valid_cert = } (s2s.domains[domain] over the
-- defaults: not blocked, dialback as s2s.dialback, a valid certificate
-- required unless dialback is allowed).
function S2S:policy(domain)
  local p = self.conf.domains[domain]
  local dialback = self.conf.dialback
  if p and p.dialback ~= nil then dialback = p.dialback end
  local valid = not dialback
  if p and p.require_valid_cert ~= nil then valid = p.require_valid_cert or not dialback end
  return { block = (p and p.block) == true, dialback = dialback, require_valid_cert = valid }
end

---------------------------------------------------------------------------
-- Server Dialback (XEP-0220): keys (XEP-0185) and the verification of a
-- key a remote server gave us, with its authoritative server

M.NS_DB = "jabber:server:dialback"
M.NS_DB_FEATURE = "urn:xmpp:features:dialback"
M.NS_BIDI = "urn:xmpp:bidi"                        -- XEP-0288
M.NS_BIDI_FEATURE = "urn:xmpp:features:bidi"

local function hex(b) return (b:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

--- fed:dialback_key(receiving, originating, stream_id) -> the XEP-0185
-- key: hex(HMAC-SHA256(SHA256(secret), receiving .. " " .. originating ..
-- " " .. stream_id)).
function S2S:dialback_key(receiving, originating, id)
  local k = core.hash("sha256", self.dialback_secret)
  return hex(core.hmac("sha256", k, receiving .. " " .. originating .. " " .. id))
end

--- fed:dialback_verify(domain, key, id, receiving, done): asks domain's
-- authoritative server (a connection of its own, found as routes are)
-- whether key is the one it made for stream id to receiving, a domain
-- served here (XEP-0220 §2.3);
-- done(result) runs once: "valid", "invalid" or "error" (no answer within
-- limits.s2s_timeout, no connection), or at once "busy" past
-- limits.s2s_checks checks under way, or limits.s2s_domain_checks for
-- domain: each check connects to the claimed domain's server, so
-- unauthenticated streams must not make us connect there without bound.
function S2S:dialback_verify(domain, key, id, receiving, done)
  local srv = self.srv
  local per_domain = self.domain_checks[domain] or 0
  if self.nchecks >= srv.limits.s2s_checks or per_domain >= srv.limits.s2s_domain_checks then
    return done("busy")
  end
  self.nchecks, self.domain_checks[domain] = self.nchecks + 1, per_domain + 1
  local over = false
  local check = { domain = domain, key = key, id = id, from = receiving }
  local function finish(result)
    if over then return end
    over = true
    self.checks[check] = nil
    self.nchecks = self.nchecks - 1
    local n = self.domain_checks[domain] - 1
    self.domain_checks[domain] = n > 0 and n or nil
    if check.task then task.cancel(check.task); check.task = nil end
    if check.timer then check.timer:stop(); check.timer = nil end
    local out = check.out
    check.out = nil
    if out and not out.ended then out:close() end
    return done(result)
  end
  check.finish = finish
  check.timer = core.timer(srv.limits.s2s_timeout, { wake = function()
    check.timer = nil
    finish("error")
  end })
  self.checks[check] = true
  check.task = task.spawn(function()
    local list = targets(self, domain)
    for _, t in ipairs(list or {}) do
      if over then return end
      local conn = require("lxmpp.net").connect(t.ip, t.port, srv.limits.s2s_timeout)
      if conn then
        if over then return conn:abort() end
        check.task = nil
        check.out = require("lxmpp.server.s2s_out").start_verify(self, check, conn, t.direct)
        return
      end
    end
    check.task = nil
    finish("error")
  end)
end

---------------------------------------------------------------------------
-- idle timers: a stream with no stanza either way for limits.s2s_idle
-- seconds closes (checked lazily: one timer per stream, re-armed for what
-- is left of the period when there was traffic)

--- s2s.touch(stream): a stanza went through stream.
function M.touch(s) s.last_stanza = core.now() end

function M.arm_idle(s)
  local idle = s.srv.limits.s2s_idle
  s.last_stanza = core.now()
  local function check()
    s.idle_timer = nil
    if s.ended then return end
    local left = s.last_stanza + idle - core.now()
    if left > 0 then
      s.idle_timer = core.timer(left, { wake = check })
      return
    end
    s:log("info", "idle for %g seconds: closing", idle)
    s:close()
  end
  s.idle_timer = core.timer(idle, { wake = check })
end

function M.stop_idle(s)
  if s.idle_timer then s.idle_timer:stop(); s.idle_timer = nil end
end

---------------------------------------------------------------------------
-- routes

-- Where to connect for a domain, in order: the s2s.hosts map, else the
-- _xmpp-server._tcp SRV records (RFC 6120 §3.2.1) mixed with XEP-0368's
-- _xmpps-server._tcp ones (direct TLS) by priority and weight (RFC 2782),
-- else the domain on port 5269 (§3.2.2), each target's addresses in the
-- resolver's order. In a task.
function targets(self, domain)
  local a = self.conf.hosts[domain]
  if a then return { { ip = a.ip, port = a.port, direct = a.direct } } end
  local resolve = require "lxmpp.resolve"
  local list, msg, cond = resolve.targets(domain, { service = "server", tls = "any" })
  if not list then return nil, msg, cond end
  local out = {}
  for _, t in ipairs(list) do
    local ips = resolve.addresses(t.host)
    for _, ip in ipairs(ips or {}) do out[#out + 1] = { ip = ip, port = t.port, direct = t.tls == "direct" } end
    if #out >= 16 then break end      -- enough to try within s2s_timeout
  end
  if #out == 0 then return nil, "no address for " .. domain, "remote-server-not-found" end
  return out
end

-- A stanza as it goes out on a jabber:server stream: one that carries the
-- jabber:client namespace itself (a WebSocket client's) loses it there.
local function for_server(s)
  local ns = s.attr.xmlns
  if ns == nil then return s end
  if ns ~= "jabber:client" then return s end
  local copy = setmetatable({}, getmetatable(s))
  for k, v in pairs(s) do copy[k] = v end
  local attr = {}
  for k, v in pairs(s.attr) do attr[k] = v end
  attr.xmlns = nil
  copy.attr = attr
  return copy
end

--- fed:serves(domain) -> true when domain is served here: our main
-- domain, a host (MUC, pubsub) or a component's.
function S2S:serves(d)
  local srv = self.srv
  return d ~= nil and (srv.hosts[d] ~= nil or (srv.components ~= nil and srv.components[d] ~= nil))
end

--- fed:route_key(from, to) -> the key of the route from local domain from
-- to remote domain to in fed.routes: the remote domain alone for our main
-- domain's route, "to from" for another local domain's (a space is in no
-- domain).
function S2S:route_key(from, to)
  if from == self.srv.domain then return to end
  return to .. " " .. from
end

--- fed:route_to(remote [, from]) -> the route from local domain from (our
-- main domain by default) to remote, or nil.
function S2S:route_to(remote, from)
  return self.routes[self:route_key(from or self.srv.domain, remote)]
end

--- s2s:send(stanza, host): a stanza (from trusted, to a domain that no
-- local host serves) to its remote domain, over the route of the domain
-- of its `from` (each local domain authenticates its own stream: the
-- remote server checks that a stanza's from is of the stream's domain):
-- at once over a ready route, else queued while the route comes up
-- (bounced with resource-constraint past limits.s2s_queue stanzas).
function S2S:send(s, host)
  local srv = self.srv
  local from = srv.domain                          -- a stanza of the server itself
  if s.attr.from then
    from = jid.domain(s.attr.from)
    if not self:serves(from) then
      -- another domain's stanza to another domain: we relay for nobody
      -- (on any stream of ours the remote server would answer it with
      -- invalid-from and drop the route)
      srv:log("warn", "s2s: not relaying a <%s/> from %s to %s", s.name, tostring(s.attr.from), host)
      return
    end
  end
  local key = self:route_key(from, host)
  local route = self.routes[key]
  if route and route.out and route.ready then
    M.touch(route.out)
    return route.out:send(for_server(s))
  end
  if not route then
    if self:serves(host) then
      return srv:bounce(s, "cancel", "remote-server-not-found", "no route to a domain served here")
    end
    if self:policy(host).block then
      return srv:bounce(s, "cancel", "policy-violation", "this server does not federate with " .. host)
    end
    if self.nroutes >= srv.limits.s2s_routes then
      return srv:bounce(s, "wait", "resource-constraint", "too many remote domains at once")
    end
    route = self:open_route(host, from)
  end
  if route.queue.n >= srv.limits.s2s_queue then
    return srv:bounce(s, "wait", "resource-constraint", "too many stanzas wait for the route to " .. host)
  end
  route.queue:push(s)
end

-- A new route from local domain from to host: resolve and connect in a
-- task, then the outgoing stream negotiates; limits.s2s_timeout bounds all
-- of it.
function S2S:open_route(host, from)
  local srv = self.srv
  local key = self:route_key(from, host)
  local route = { domain = host, from = from, key = key, queue = fifo.new(), ready = false }
  self.routes[key] = route
  self.nroutes = self.nroutes + 1
  local timeout = srv.limits.s2s_timeout
  route.timer = core.timer(timeout, { wake = function()
    route.timer = nil
    if self.routes[key] == route and not route.ready then
      self:fail(route, "remote-server-timeout", ("the route to %s was not up within %g seconds"):format(host, timeout))
    end
  end })
  -- an authenticated stream of ours to host (for another local domain)
  -- may carry this domain too (XEP-0220 §2.6): no new connection
  local via = self:shared_stream(host)
  if via then
    srv:log("info", "s2s: asking %s to take %s over the stream of %s", host, from, via.local_domain)
    via:piggyback(route)
    return route
  end
  self:connect_route(route)
  srv:log("info", "s2s: opening a route from %s to %s", from, host)
  return route
end

--- fed:shared_stream(host) -> an outgoing stream to host, up and
-- authenticated, over which another local domain may claim its pair with
-- dialback (XEP-0220 §2.6 multiplexing): only where host's policy allows
-- dialback and the receiving server offered it with <errors/> (so a
-- refusal is an answer for that pair, not the end of the stream,
-- XEP-0220 §2.4), within limits.s2s_pairs domains per stream.
function S2S:shared_stream(host)
  if not self:policy(host).dialback then return nil end
  local limit = self.srv.limits.s2s_pairs
  for _, r in pairs(self.routes) do
    local out = r.out
    if r.domain == host and r.ready and out and not r.bidi and not r.via and out.kind == "s2sout"
      and out.db_errors and not out.ended and out.stage == "ready" and (out.nshared or 0) + 1 < limit then
      return out
    end
  end
  return nil
end

--- fed:connect_route(route): resolves and connects route's own stream
-- (also when a stream it asked to share refused it or ended).
function S2S:connect_route(route)
  local srv, host, key = self.srv, route.domain, route.key
  local timeout = srv.limits.s2s_timeout
  if route.failed or self.routes[key] ~= route then return end
  route.via = nil
  route.task = task.spawn(function()
    local list, msg = targets(self, host)
    if self.routes[key] ~= route then return end
    if not list then return self:fail(route, "remote-server-not-found", ("%s: %s"):format(host, tostring(msg))) end
    local last
    for _, t in ipairs(list) do
      local conn, cmsg, ccond = require("lxmpp.net").connect(t.ip, t.port, timeout)
      if self.routes[key] ~= route then
        if conn then conn:abort() end
        return
      end
      if conn then
        route.task = nil
        route.out = require("lxmpp.server.s2s_out").start(self, route, conn, t.direct)
        return
      end
      last = ccond == "timeout" and "remote-server-timeout" or "remote-server-not-found"
      srv:log("info", "s2s: cannot connect to %s at %s port %d: %s", host, t.ip, t.port, tostring(cmsg))
    end
    route.task = nil
    self:fail(route, last or "remote-server-not-found", "cannot connect to " .. host)
  end)
end

--- fed:bidi_route(s, from, to): s, an incoming stream whose peer (remote
-- domain to) asked for XEP-0288 bidirectionality and is authenticated,
-- carries our stanzas from local domain from to it, unless a route of
-- ours exists already (or the route cap is reached: then the next
-- stanza for to bounces as any other past it). Such a route is ready at
-- once and ends with its stream (s2s_in.lua, In:on_end).
function S2S:bidi_route(s, from, to)
  local key = self:route_key(from, to)
  if self.routes[key] or self.nroutes >= self.srv.limits.s2s_routes then return nil end
  local route = { domain = to, from = from, key = key, queue = fifo.new(), ready = true, out = s, bidi = true }
  self.routes[key] = route
  self.nroutes = self.nroutes + 1
  self.srv:log("info", "s2s: the stream from %s carries our stanzas from %s too (bidi)", to, from)
  return route
end

--- The outgoing stream of route finished its negotiation: what waited goes.
function S2S:route_ready(route)
  if self.routes[route.key] ~= route then return end
  route.ready = true
  if route.timer then route.timer:stop(); route.timer = nil end
  self.srv:log("info", "s2s: route from %s to %s is up", route.from, route.domain)
  local q, out = route.queue, route.out
  route.queue = fifo.new()
  while q.n > 0 and not out.ended do out:send(for_server(q:pop())) end
  if not route.via then M.arm_idle(out) end     -- (a shared stream has its timer)
end

--- The route failed (or its stream ended): it is gone, and whatever still
-- waited for it bounces with cond; the next stanza opens a new route.
function S2S:fail(route, cond, text)
  if route.failed then return end
  route.failed = true
  if self.routes[route.key] == route then
    self.routes[route.key] = nil
    self.nroutes = self.nroutes - 1
  end
  if route.timer then route.timer:stop(); route.timer = nil end
  -- a resolution or connect under way stops (never the running task: a
  -- failure it reports itself)
  if route.task then task.cancel(route.task); route.task = nil end
  local out = route.out
  route.out = nil
  if route.via then
    -- a domain over another route's stream: that stream goes on
    route.via:unshare(route)
    route.via = nil
  elseif out and not out.ended then
    out:close()
  end
  local q = route.queue
  route.queue = fifo.new()
  if not route.ready or q.n > 0 then
    self.srv:log("info", "s2s: route to %s failed (%s): %s", route.domain, cond, tostring(text))
  end
  -- (a load, or a peer that could not answer: worth retrying later,
  -- RFC 6120 §8.3.3.16, §8.3.3.18)
  local etype = (cond == "resource-constraint" or cond == "remote-server-timeout") and "wait" or "cancel"
  while q.n > 0 do self.srv:bounce(q:pop(), etype, cond, text) end
end

--- Stops every route and closes the TLS contexts (srv:stop(); the
-- streams themselves are closed with the server's other streams).
function S2S:close()
  local list = {}
  for _, r in pairs(self.routes) do list[#list + 1] = r end
  for _, r in ipairs(list) do self:fail(r, "remote-server-not-found", "the server is stopping") end
  local checks = {}
  for c in pairs(self.checks) do checks[#checks + 1] = c end
  for _, c in ipairs(checks) do c.finish("error") end
  self.server_ctx:close()
  for _, c in ipairs(self.all_ctx) do c:close() end
end

M.S2S = S2S

return M
