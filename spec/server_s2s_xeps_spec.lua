-- Federation details of XEP-0368 (direct TLS SRV records for servers),
-- XEP-0220 §2.4 (dialback errors on the initiating side) and the bounds a
-- hostile peer meets on one stream (limits.s2s_verifies, limits.rate):
-- two embedded servers in one process on loopback, example.test and
-- other.test, and raw server streams.
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local net = require "lxmpp.net"
local st = require "lxmpp.stanza"
local pki = require "spec.support.pki"
local raw = require "spec.support.raw"
local serve = require "spec.support.serve"
local clean = require "spec.support.clean"
local slow = require "spec.support.slow"

local A, B = "example.test", "other.test"
local NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
local NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
local NS_DB = "jabber:server:dialback"
local T = 5 * slow.factor

local function port_of(srv, kind)
  for _, a in ipairs(srv:addresses()) do
    if a.kind == kind then return a.port end
  end
end

-- a started server of domain with certificate certname ("good" names
-- example.test, "wrongname" other.test, "untrusted" is of another CA)
local function start(domain, certname, extra)
  local p = pki.get()
  local cert = p.certs[certname]
  local opts = { domain = domain, listen = "127.0.0.1:0", s2s_listen = "127.0.0.1:0",
    tls = { cert = cert.cert, key = cert.key }, s2s = { cafile = p.ca },
    users = { alice = "alice-pw", bob = "bob-pw" }, log_level = "error" }
  for k, v in pairs(extra or {}) do opts[k] = v end
  local srv = lxmpp.server(opts)
  assert(srv:start())
  return srv
end

local function login(srv, user, insecure)
  return assert(lxmpp.connect({ jid = user .. "@" .. srv.domain .. "/r", password = user .. "-pw",
    host = "127.0.0.1", port = port_of(srv, "c2s"), cafile = pki.get().ca, insecure = insecure }))
end

local function message(to, body, id)
  return st.message({ to = to, type = "chat", id = id }):tag("body"):text(body):up()
end

local function error_of(s)
  local e = s and s:get_child("error")
  return e and e.attr.type, e and e.tags[1] and e.tags[1].name
end

-- runs fn() in lxmpp.run, then stops the servers in list (filled by fn)
local function run(fn)
  local list = {}
  lxmpp.run(function()
    local ok, err = xpcall(fn, debug.traceback, list)
    require("spec.support.clients").kill_all()
    net.abort_all()
    for _, s in ipairs(list) do s:stop() end
    lxmpp.sleep(0.05)
    if not ok then error(err, 0) end
  end)
  clean()
end

describe("s2s: XEP-0368 _xmpps-server._tcp SRV records", function()
  -- other.test with a STARTTLS and a direct TLS listener, published by
  -- zone(b) in spec/support/dnsd; example.test resolves through it (no
  -- s2s.hosts entry for other.test) and sends alice's message to bob
  local function through_dns(zone, check)
    local dnsd = require "spec.support.dnsd"
    local resolve = require "lxmpp.resolve"
    local d
    -- dnsd must stop whatever happens (its pipe would keep busted waiting)
    local ok, err = pcall(run, function(list)
      local b = start(B, "wrongname", { s2s_tls_listen = "127.0.0.1:0" })
      list[#list + 1] = b
      d = dnsd.start(zone(port_of(b, "s2s"), port_of(b, "s2s-tls")))
      resolve.configure({ servers = d.addr, timeout = 1, tries = 2 })
      local ran, e = pcall(function()
        local a = start(A, "good")
        list[#list + 1] = a
        b:s2s_host(A, "127.0.0.1:" .. port_of(a, "s2s"))
        local alice, bob = login(a, "alice"), login(b, "bob")
        alice:send(message("bob@" .. B .. "/r", "found you", "x1"))
        assert(serve.expect(bob, "message", function(m) return m.attr.id == "x1" end, T), "bob got nothing")
        local out = a.s2s.routes[B].out
        assert.is_true(out.authenticated)
        local f = assert(io.open(d.log))
        local log = f:read("a")
        f:close()
        check(out, log)
      end)
      resolve.set_servers(nil)
      if not ran then error(e, 0) end
    end)
    dnsd.stop(d)
    if not ok then error(err, 0) end
  end

  it("reaches a domain published only with _xmpps-server: TLS from the first byte, ALPN xmpp-server", function()
    through_dns(function(_, tls_port)
      return { ["_xmpps-server._tcp." .. B] = { SRV = { { 10, 0, tls_port, "xmpps." .. B } } },
        ["xmpps." .. B] = { A = { "127.0.0.1" } } }
    end, function(out, log)
      assert.is_true(out.direct)
      assert.equal("xmpp-server", out.conn:tls_info().alpn)    -- XEP-0368 §3
      assert.truthy(log:find("_xmpps-server._tcp." .. B, 1, true))
    end)
  end)

  -- both services mixed by priority (RFC 2782: the lowest first;
  -- XEP-0368 §3 merges _xmpps-server with _xmpp-server records): both
  -- records reach other.test, the kind of the route's stream tells which
  -- was tried first
  for _, case in ipairs({ { direct_prio = 5, plain_prio = 10, direct = true },
                          { direct_prio = 20, plain_prio = 10, direct = false } }) do
    it(("with both services, tries the lower priority first (%s)"):format(case.direct and "direct TLS" or "STARTTLS"),
      function()
        through_dns(function(port, tls_port)
          return {
            ["_xmpps-server._tcp." .. B] = { SRV = { { case.direct_prio, 0, tls_port, "xmpps." .. B } } },
            ["_xmpp-server._tcp." .. B] = { SRV = { { case.plain_prio, 0, port, "xmpp." .. B } } },
            ["xmpps." .. B] = { A = { "127.0.0.1" } },
            ["xmpp." .. B] = { A = { "127.0.0.1" } } }
        end, function(out, log)
          assert.equal(case.direct, out.direct == true)
          if case.direct then
            assert.equal("xmpp-server", out.conn:tls_info().alpn)
          else
            assert.is_nil(out.conn:tls_info().alpn)
          end
          assert.truthy(log:find("_xmpps-server._tcp." .. B, 1, true))
          assert.truthy(log:find("_xmpp-server._tcp." .. B, 1, true))
        end)
      end)
  end
end)
