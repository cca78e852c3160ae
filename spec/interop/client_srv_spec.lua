-- The client finds its server the way RFC 6120 §3.2 and XEP-0368 say, against
-- a DNS server of the suite's own (spec/support/dnsd.py) and a real Prosody:
-- SRV targets in priority order, the next one when a target refuses, direct
-- TLS records, and the A/AAAA fallback on port 5222 only when there is no SRV.
local lxmpp = require "lxmpp"
local resolve = require "lxmpp.resolve"
local prosody = require "spec.support.prosody"
local dnsd = require "spec.support.dnsd"
local assert_clean = require "spec.support.clean"

local srv, dns, closed_port

describe("client service discovery", function()
  setup(function()
    srv = prosody.start({ users = { alice = "alice-pw" } })
    closed_port = require("spec.support.free_port")()   -- (nothing listens there)
    dns = dnsd.start({
      -- example.test: the best target refuses, the next one is Prosody
      ["_xmpp-client._tcp.example.test"] = { SRV = { { 5, 0, closed_port, "down.example.test" },
                                                     { 10, 0, srv.port, "up.example.test" } } },
      ["_xmpps-client._tcp.example.test"] = { SRV = { { 20, 0, srv.direct_tls_port, "up.example.test" } } },
      ["down.example.test"] = { A = { "127.0.0.1" } },
      ["up.example.test"] = { A = { "127.0.0.1" } },
    })
    resolve.configure({ servers = dns.addr, timeout = 1, tries = 2 })
  end)
  teardown(function()
    resolve.set_servers(nil)
    dnsd.stop(dns)
    if srv then srv:stop() end
  end)
  after_each(assert_clean)

  it("tries SRV targets in order and moves on when one refuses", function()
    lxmpp.run(function()
      local c = assert(lxmpp.connect({ jid = "alice@example.test/srv", password = "alice-pw", cafile = srv.ca }))
      assert.equal("alice@example.test/srv", c.jid)
      assert.equal(srv.port, c.conn:info().port)
      assert.is_true(c.conn.c:tls_info().verified)   -- identity: the JID's domain, not the SRV target
      c:close()
    end)
  end)

  it("walks the SRV targets in order again when it reconnects", function()
    lxmpp.run(function()
      local c = assert(lxmpp.connect({ jid = "alice@example.test/srv", password = "alice-pw", cafile = srv.ca,
        reconnect = { delay = 0.01, max_delay = 0.05 } }))
      local back, order = nil, {}
      c:on("reconnected", function(resumed) back = resumed order[#order + 1] = "up" end)
      -- the best target now answers, and hangs up at once
      local net = require "lxmpp.net"
      local down = assert(net.listen("127.0.0.1", closed_port, function(conn)
        order[#order + 1] = "down"
        conn:abort()
      end))
      c.conn:abort()                                  -- the link drops
      for _ = 1, 200 do
        if back ~= nil then break end
        lxmpp.sleep(0.02)
      end
      down:close()
      assert.is_true(back)                            -- resumed, through the SRV records again
      assert.same({ "down", "up" }, order)
      assert.equal(srv.port, c.conn:info().port)
      assert.is_true(c.conn.c:tls_info().verified)
      c:close()
    end)
  end)

  it("uses the xmpps-client (direct TLS) records when asked for direct TLS", function()
    lxmpp.run(function()
      local c = assert(lxmpp.connect({ jid = "alice@example.test/srv", password = "alice-pw",
        cafile = srv.ca, tls = "direct" }))
      assert.equal(srv.direct_tls_port, c.conn:info().port)
      c:close()
    end)
  end)
end)
