-- Federation with a real ejabberd 23.01 (Debian's package) on loopback, both
-- directions: the embedded server serves other.test (and its MUC service
-- rooms.other.test), ejabberd example.test (and its mod_muc,
-- conference.example.test). We find ejabberd's domains through s2s.hosts;
-- ejabberd finds ours through DNS: its VM runs in a private mount
-- namespace whose resolv.conf names spec/support/dnsd on a loopback
-- address (spec/support/ejabberd.lua, option s2s.dns; root and unshare -m,
-- else the spec fails), which answers _xmpp-server._tcp (or, for XEP-0368,
-- _xmpps-server._tcp) for other.test and rooms.other.test. ejabberd's
-- configuration is its defaults plus what Debian's ejabberd.yml sets for
-- federation (s2s_use_starttls: required, mod_s2s_dialback, mod_muc) and
-- what the setup needs (ports, hosts, certificates, ca_file).
--
-- Two setups:
-- * certificates: both servers have certificates of the suite's CA and
--   trust it: SASL EXTERNAL (RFC 6120 §6.3.4, XEP-0178) both ways.
-- * dialback (XEP-0220): ejabberd's certificate is self-signed (it does
--   not verify for us), ejabberd trusts the system's CAs only (ours does
--   not verify for it); we enable s2s.dialback.
local lxmpp = require "lxmpp"
local net = require "lxmpp.net"
local pki = require "spec.support.pki"
local ejabberd = require "spec.support.ejabberd"
local clean = require "spec.support.clean"
local slow = require "spec.support.slow"
local free_port = require "spec.support.free_port"
local interop = require "spec.support.s2s_interop"

local A, B = "other.test", "example.test"     -- ours, ejabberd's
local MUC = ejabberd.MUC                     -- ejabberd's mod_muc
local OUR_MUC = "rooms." .. A
local T = 10 * slow.factor
local logged = interop.logged

-- federate(mode, fn, o): ejabberd and the embedded server federating in
-- mode "certs" or "dialback"; fn(ctx) with ctx as spec/support/s2s_interop
-- takes, plus ctx.ej (ejabberd). o.direct: ejabberd finds only
-- _xmpps-server records for our domains (XEP-0368: TLS from the first
-- byte, our s2s_tls_listen). Returns ejabberd's log and ours (a string);
-- both end the message of a failure.
local function federate(mode, fn, o)
  o = o or {}
  local p = pki.get()
  local our_s2s, our_tls = free_port(), free_port()
  local srv_name = o.direct and "_xmpps-server._tcp." or "_xmpp-server._tcp."
  local port = o.direct and our_tls or our_s2s
  local zone = {
    [srv_name .. A] = { SRV = { { 0, 0, port, "xmpp." .. A } } },
    [srv_name .. OUR_MUC] = { SRV = { { 0, 0, port, "xmpp." .. A } } },
    ["xmpp." .. A] = { A = { "127.0.0.1" } },
  }
  local s2s = { dns = zone }
  if mode == "dialback" then s2s.cert, s2s.suite_ca = "selfsigned", false end
  local ej = ejabberd.start({ users = { juliet = "juliet-pw" }, s2s = s2s })
  local log = {}
  local ok, err = pcall(lxmpp.run, function()
    local cert = p.certs.othermulti      -- other.test and *.other.test (our MUC)
    local srv = lxmpp.server({ domain = A, muc = OUR_MUC, listen = "127.0.0.1:0",
      s2s_listen = "127.0.0.1:" .. our_s2s, s2s_tls_listen = "127.0.0.1:" .. our_tls,
      log_level = "info", tls = { cert = cert.cert, key = cert.key }, users = { romeo = "romeo-pw" },
      logger = function(level, msg) log[#log + 1] = level .. " " .. msg end,
      s2s = { cafile = p.ca, dialback = mode == "dialback", hosts = {
        [B] = "127.0.0.1:" .. ej.s2s_port, [MUC] = "127.0.0.1:" .. ej.s2s_port } } })
    assert(srv:start())
    local inner_ok, inner_err = pcall(function()
      local juliet = assert(lxmpp.connect({ jid = "juliet@" .. B .. "/r", password = "juliet-pw",
        host = "127.0.0.1", port = ej.port, cafile = ej.ca, logger = function() end }))
      local romeo = assert(lxmpp.connect({ jid = "romeo@" .. A .. "/r", password = "romeo-pw",
        host = "127.0.0.1", port = srv:addresses()[1].port, cafile = p.ca }))
      fn({ juliet = juliet, romeo = romeo, srv = srv, ej = ej, log = log, ours = A, peer = B, T = T })
    end)
    require("spec.support.clients").kill_all()
    net.abort_all()
    srv:stop()
    lxmpp.sleep(0.05)
    if not inner_ok then error(inner_err, 0) end
  end)
  local elog = ej:log()
  ej:stop()
  if not ok then
    error(tostring(err) .. "\nour log:\n" .. table.concat(log, "\n"):sub(-4000)
      .. "\nejabberd log:\n" .. elog:sub(-8000), 0)
  end
  clean()
  return elog, table.concat(log, "\n")
end

-- ejabberd's log lines for an authenticated s2s stream (ejabberd_s2s_in,
-- ejabberd_s2s_out): mech EXTERNAL or dialback
local function ej_in(mech, from, to) return "Accepted inbound s2s " .. mech .. " authentication " .. from .. " -> " .. to end
local function ej_out(mech, from, to)
  return "Accepted outbound s2s " .. mech .. " authentication " .. from .. " -> " .. to
end

describe("s2s interop with ejabberd", function()
  describe("with certificates of the suite's CA", function()
    it("carries messages both ways, authenticated with SASL EXTERNAL both ways", function()
      local elog = federate("certs", function(ctx)
        interop.messages_both_ways(ctx)
        assert.truthy(logged(ctx.log, "s2sin .* " .. B .. ": authenticated by certificate"),
          "ejabberd did not authenticate to us with EXTERNAL")
        assert.is_nil(logged(ctx.log, "dialback"))
      end)
      assert.truthy(elog:find(ej_out("EXTERNAL", B, A), 1, true), "ejabberd did not use EXTERNAL toward us")
      assert.truthy(elog:find(ej_in("EXTERNAL", A, B), 1, true), "ejabberd did not take our EXTERNAL")
      assert.is_nil(elog:find("dialback", 1, true))
    end)

    it("carries presence subscriptions both ways: rosters on both sides, then presence", function()
      federate("certs", interop.subscriptions_both_ways)
    end)

    it("lets our user join a room on ejabberd's mod_muc: presence and groupchat both ways", function()
      local elog = federate("certs", function(ctx) interop.our_user_in_peer_room(ctx, "verona@" .. MUC) end)
      assert.truthy(elog:find(ej_in("EXTERNAL", A, MUC), 1, true), "we did not reach " .. MUC .. " with EXTERNAL")
    end)

    it("lets an ejabberd user join a room on our MUC service (its own route, EXTERNAL for the MUC domain)", function()
      local elog = federate("certs", function(ctx)
        interop.peer_user_in_our_room(ctx, "capulet@" .. OUR_MUC)
        local r = assert(ctx.srv.s2s:route_to(B, OUR_MUC))
        assert.is_true(r.ready and r.out.authenticated)
        assert.equal(OUR_MUC, r.out.local_domain)
        assert.is_nil(logged(ctx.log, "dialback"))
      end)
      assert.truthy(elog:find(ej_out("EXTERNAL", B, OUR_MUC), 1, true), "ejabberd did not reach " .. OUR_MUC)
      assert.truthy(elog:find(ej_in("EXTERNAL", OUR_MUC, B), 1, true), "our MUC's route did not use EXTERNAL")
    end)

    it("is reached by ejabberd over direct TLS (XEP-0368, _xmpps-server records only)", function()
      local elog = federate("certs", function(ctx)
        interop.messages_both_ways(ctx)
        -- (the zone has no other record for other.test, nor an address
        -- for other.test itself: the only way in is our s2s-tls listener)
        assert.truthy(logged(ctx.log, "s2sin .* " .. B .. ": authenticated by certificate"))
      end, { direct = true })
      assert.truthy(elog:find(ej_out("EXTERNAL", B, A), 1, true))
    end)
  end)

  describe("with dialback (certificates that do not verify)", function()
    it("carries messages both ways, authenticated by dialback both ways", function()
      local elog = federate("dialback", function(ctx)
        interop.messages_both_ways(ctx)
        assert.truthy(logged(ctx.log, "s2sin .* " .. B .. ": authenticated by dialback"),
          "ejabberd did not authenticate to us by dialback")
        assert.truthy(logged(ctx.log, "s2sout " .. B .. ": authenticated by dialback"),
          "we did not authenticate to ejabberd by dialback")
        assert.is_nil(logged(ctx.log, "authenticated by certificate"))
        -- ejabberd offers EXTERNAL before it checks our certificate, then
        -- refuses it: we go on with dialback over the same stream (XEP-0178 §3)
        assert.truthy(logged(ctx.log, "s2sout " .. B .. ": " .. B
          .. " refused our certificate %(not%-authorized%): dialback on the same stream"))
      end)
      assert.truthy(elog:find(ej_out("dialback", B, A), 1, true), "ejabberd did not use dialback toward us")
      assert.truthy(elog:find(ej_in("dialback", A, B), 1, true), "ejabberd did not take our dialback")
      assert.is_nil(elog:find("Accepted %a+ s2s EXTERNAL"))
    end)

    it("lets our user join a room on ejabberd's mod_muc, our stream to the MUC domain authenticated by dialback",
      function()
        local elog = federate("dialback", function(ctx)
          interop.our_user_in_peer_room(ctx, "verona@" .. MUC)
          assert.truthy(logged(ctx.log, "s2sout " .. MUC:gsub("%p", "%%%0") .. ": authenticated by dialback"))
          assert.is_nil(logged(ctx.log, "authenticated by certificate"))
        end)
        assert.truthy(elog:find(ej_in("dialback", A, MUC), 1, true), "we did not reach " .. MUC .. " by dialback")
      end)

    it("lets an ejabberd user join a room on our MUC service, the MUC domain authenticated by dialback", function()
      local elog = federate("dialback", function(ctx)
        interop.peer_user_in_our_room(ctx, "capulet@" .. OUR_MUC)
        assert.is_nil(logged(ctx.log, "authenticated by certificate"))
      end)
      assert.truthy(elog:find(ej_in("dialback", OUR_MUC, B), 1, true), "our MUC's route did not use dialback")
      assert.truthy(elog:find(ej_out("dialback", B, OUR_MUC), 1, true), "ejabberd did not reach " .. OUR_MUC)
    end)
  end)
end)
