-- The setup the federation specs share (spec/server_s2s*_spec.lua):
-- embedded servers on loopback with certificates of the suite's CA
-- (spec/support/pki.lua), two of them knowing each other's s2s port,
-- clients of their domains, and the steps of a raw hostile server stream
-- (header, STARTTLS, SASL EXTERNAL, a dialback claim). Each spec keeps
-- thin local names for what it uses, with its own defaults.
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local net = require "lxmpp.net"
local st = require "lxmpp.stanza"
local compat = require "lxmpp.compat"
local pki = require "spec.support.pki"
local raw = require "spec.support.raw"
local clean = require "spec.support.clean"
local assert = require "luassert"

local M = {}

M.A, M.B = "example.test", "other.test"
M.NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
M.NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
M.NS_DB = "jabber:server:dialback"
M.NS_DB_FEATURE = "urn:xmpp:features:dialback"
M.NS_BIDI, M.NS_BIDI_FEATURE = "urn:xmpp:bidi", "urn:xmpp:features:bidi"

local B = M.B

--- The port srv listens on for kind ("c2s", "s2s", "s2s-tls").
function M.port_of(srv, kind)
  for _, a in ipairs(srv:addresses()) do
    if a.kind == kind then return a.port end
  end
end

--- Options of a server of domain with certificate certname ("good" names
-- example.test, "wrongname" other.test): c2s and s2s on loopback, users
-- alice and bob, log level "error"; s2s: the s2s settings (s2s.cafile is
-- set in that table); then each table of ... on top, in order.
function M.options(domain, certname, s2s, ...)
  local p = pki.get()
  local cert = p.certs[certname]
  s2s = s2s or {}
  s2s.cafile = p.ca
  local opts = { domain = domain, listen = "127.0.0.1:0", s2s_listen = "127.0.0.1:0",
    tls = { cert = cert.cert, key = cert.key }, s2s = s2s,
    users = { alice = "alice-pw", bob = "bob-pw" }, log_level = "error" }
  for i = 1, select("#", ...) do
    for k, v in pairs((select(i, ...)) or {}) do opts[k] = v end
  end
  return opts
end

--- A started server of M.options(domain, certname, s2s, ...).
function M.start(domain, certname, s2s, ...)
  local srv = lxmpp.server(M.options(domain, certname, s2s, ...))
  assert(srv:start())
  return srv
end

--- In lxmpp.run: servers, args = setup(); fn(unpack(args)); then every
-- client, connection and server (or listener) of servers goes (fn may
-- still add to servers), and fn's error (with
-- its traceback) is raised; clean() checks nothing is left.
function M.with(setup, fn)
  lxmpp.run(function()
    local servers, args = setup()
    local ok, err = xpcall(fn, debug.traceback, compat.unpack(args, 1, args.n or #args))
    require("spec.support.clients").kill_all()
    net.abort_all()
    for _, srv in ipairs(servers) do
      if srv.stop then srv:stop() else srv:close() end    -- a server, or a listener
    end
    lxmpp.sleep(0.05)
    if not ok then error(err, 0) end
  end)
  clean()
end

--- fn(a, b) with two servers federating: a = M.start(unpack(sa)) and
-- b = M.start(unpack(sb)) (argument lists of M.start), each told where
-- the other's domain is; also: more domains of a that b is told of.
function M.two(fn, sa, sb, also)
  M.with(function()
    local a = M.start(compat.unpack(sa, 1, 5))
    local b = M.start(compat.unpack(sb, 1, 5))
    local pa = "127.0.0.1:" .. M.port_of(a, "s2s")
    a:s2s_host(b.domain, "127.0.0.1:" .. M.port_of(b, "s2s"))
    b:s2s_host(a.domain, pa)
    for _, d in ipairs(also or {}) do b:s2s_host(d, pa) end
    return { a, b }, { a, b }
  end, fn)
end

--- fn(srv, s2s_port) with one server, M.start(unpack(args)).
function M.one(fn, args)
  M.with(function()
    local srv = M.start(compat.unpack(args, 1, 5))
    return { srv }, { srv, M.port_of(srv, "s2s") }
  end, fn)
end

--- A client of srv's domain, user with password user .. "-pw".
function M.login(srv, user, insecure)
  return assert(lxmpp.connect({ jid = user .. "@" .. srv.domain .. "/r", password = user .. "-pw",
    host = "127.0.0.1", port = M.port_of(srv, "c2s"), cafile = pki.get().ca, insecure = insecure }))
end

function M.message(to, body, id, from)
  return st.message({ to = to, from = from, type = "chat", id = id }):tag("body"):text(body):up()
end

--- The name of the condition of error stanza s (RFC 6120 §8.3.2).
function M.condition(s)
  local e = s and s:get_child("error")
  return e and e.tags[1] and e.tags[1].name
end

--- A jabber:server stream header from `from` to `to` (default other.test),
-- declaring the dialback prefix db when db.
function M.header(from, to, db)
  return "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='" .. raw.NS_STREAMS ..
    "' " .. (db and ("xmlns:db='" .. M.NS_DB .. "' ") or "") ..
    "from='" .. from .. "' to='" .. (to or B) .. "' version='1.0'>"
end

--- A raw server stream to port (o.from, to o.to, default other.test; o.db:
-- dialback prefix declared) through STARTTLS with certificate o.cert
-- (the server's verified with the suite's CA, or not at all with
-- o.insecure). Returns the stream, the features after TLS, the header
-- after TLS and the features before.
function M.raw_tls(port, o)
  local p = pki.get()
  local to = o.to or B
  local r = raw.connect(port)
  r:send(M.header(o.from, to, o.db))
  assert.truthy(r:next().open)
  local f0 = assert(r:stanza())
  if o.check_starttls then assert.truthy(f0:get_child("starttls", M.NS_TLS)) end
  r:send("<starttls xmlns='" .. M.NS_TLS .. "'/>")
  assert.equal("proceed", assert(r:stanza()).name)
  local cert = p.certs[o.cert]
  local ctx = { mode = "client", cert = cert.cert, key = cert.key }
  if o.insecure then ctx.insecure = true else ctx.cafile = p.ca end
  r.conn:starttls(assert(core.tls_context(ctx)), to)
  assert.truthy(r:next().tls)
  r:send(M.header(o.from, to, o.db))
  local open = r:next().open
  assert.truthy(open)
  return r, assert(r:stanza()), open, f0
end

--- SASL EXTERNAL on raw stream r after TLS (RFC 6120 §6.4, XEP-0178),
-- then the restarted stream from `from` to `to`; returns its features.
function M.external(r, from, to)
  r:send("<auth xmlns='" .. M.NS_SASL .. "' mechanism='EXTERNAL'>=</auth>")
  assert.equal("success", assert(r:stanza()).name)
  r.conn:restart()
  r:send(M.header(from, to))
  assert.truthy(r:next().open)
  local f = assert(r:stanza())
  assert.equal("features", f.name)
  return f
end

--- A dialback claim (XEP-0220 §2.1.1) for from -> to (default other.test).
function M.claim(r, from, to)
  r:send("<db:result from='" .. from .. "' to='" .. (to or B) .. "'>" .. ("ab"):rep(32) .. "</db:result>")
end

return M
