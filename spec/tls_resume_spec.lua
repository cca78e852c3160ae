-- TLS session resumption (csrc/tls.c, tls.h "Session resumption"): the
-- engine in memory (tickets issued, kept, offered, refused), channel
-- binding on resumed sessions, and the lxmpp client reconnecting to the
-- embedded server with a resumed handshake (docs/api.md, docs/server.md).
local core = require "lxmpp.core"
local pkimod = require "spec.support.pki"
local serve = require "spec.support.serve"
local raw = require "spec.support.raw"
local slow = require "spec.support.slow"
local events = require "spec.support.events"

local pump = require("spec.support.tls_pair").handshake

local pki

-- A handshake between a session of cctx for domain (offering ticket) and
-- one of sctx, then one byte each way so that a TLS 1.3 ticket, which
-- comes after the handshake, has arrived. Returns cs, ss.
local function connect(cctx, sctx, domain, ticket)
  local cs, ss = cctx:session(domain or "example.test", ticket), sctx:session()
  local c, s = pump(cs, ss)
  assert.same({ "done", n = 1 }, c)
  assert.same({ "done", n = 1 }, s)
  assert(ss:send("s"))
  assert(cs:recv(ss:take()))
  assert.equal("s", (cs:read()))
  assert(cs:send("c"))
  assert(ss:recv(cs:take()))
  assert.equal("c", (ss:read()))
  return cs, ss
end

local function server_ctx(name, extra)
  local o = { mode = "server", cert = pki.certs[name].cert, key = pki.certs[name].key }
  for k, v in pairs(extra or {}) do o[k] = v end
  return assert(core.tls_context(o))
end

local function client_ctx(extra)
  local o = { mode = "client", cafile = pki.ca }
  for k, v in pairs(extra or {}) do o[k] = v end
  return assert(core.tls_context(o))
end

describe("TLS session resumption", function()
  setup(function() pki = pkimod.get() end)
  after_each(function() collectgarbage() end)

  describe("in memory", function()
    for _, v in ipairs({ "1.3", "1.2" }) do
      it("resumes a TLS " .. v .. " session with the ticket of the last handshake", function()
        local sctx, cctx = server_ctx("good"), client_ctx({ max_version = v })
        local cs, ss = connect(cctx, sctx)
        assert.is_false(cs:info().resumed)
        assert.is_false(ss:info().resumed)
        local ticket = cs:ticket()
        assert.equal("userdata", type(ticket))
        assert.is_nil(cs:ticket())                   -- moved out, once
        assert.equal("lxmpp.tls_ticket", tostring(ticket))
        local cs2, ss2 = connect(cctx, sctx, nil, ticket)
        assert.is_true(cs2:info().resumed)
        assert.is_true(ss2:info().resumed)
        assert.equal("TLSv" .. v, cs2:info().version)
        -- the identity verified when the ticket was issued still stands
        assert.is_true(cs2:info().verified)
        assert.equal("CN=example.test", cs2:info().peer_subject)
        -- and the resumed session gives a ticket again
        local t2 = cs2:ticket()
        assert.truthy(t2)
        assert.is_true(connect(cctx, sctx, nil, t2):info().resumed)
        ticket:close()
        ticket:close()                               -- safe twice
        t2:close()
        for _, s in ipairs({ cs, ss, cs2, ss2 }) do s:close() end
      end)
    end

    it("resumes after the connection was dropped without close_notify (RFC 4346 §7.2.1)", function()
      local sctx, cctx = server_ctx("good"), client_ctx()
      local cs, ss = connect(cctx, sctx)
      local ticket = assert(cs:ticket())
      cs:close()
      ss:close()
      collectgarbage()
      assert.is_true(connect(cctx, sctx, nil, ticket):info().resumed)
    end)

    it("keeps no ticket from a handshake that was not verified (insecure)", function()
      local sctx = server_ctx("wrongname")
      local cctx = client_ctx({ insecure = true })
      local cs = connect(cctx, sctx)
      assert.is_false(cs:info().verified)
      assert.is_nil(cs:ticket())
      -- with a verified certificate, an insecure context keeps one
      local cs2 = connect(cctx, server_ctx("good"))
      assert.truthy(cs2:ticket())
    end)

    it("does not offer a ticket to another domain, even on the same server and certificate", function()
      local sctx, cctx = server_ctx("wildcard"), client_ctx()
      local cs = connect(cctx, sctx, "a.example.test")
      local ticket = assert(cs:ticket())
      assert.is_false(connect(cctx, sctx, "b.example.test", ticket):info().resumed)
      assert.is_true(connect(cctx, sctx, "A.example.test", ticket):info().resumed)
    end)

    it("does not offer a ticket to a session of another context (other verification settings)", function()
      local sctx = server_ctx("good")
      local cctx, other = client_ctx(), client_ctx()
      local ticket = assert(connect(cctx, sctx):ticket())
      assert.is_false(connect(other, sctx, nil, ticket):info().resumed)
      assert.is_true(connect(cctx, sctx, nil, ticket):info().resumed)
    end)

    it("falls back to a full handshake with a server that cannot decrypt the ticket", function()
      local cctx = client_ctx()
      local ticket = assert(connect(cctx, server_ctx("good")):ticket())
      local cs = connect(cctx, server_ctx("good"), nil, ticket)   -- new keys
      assert.is_false(cs:info().resumed)
      assert.is_true(cs:info().verified)
    end)

    it("issues no ticket with resumption = false on the server, keeps none with it on the client", function()
      local cs = connect(client_ctx(), server_ctx("good", { resumption = false }))
      assert.is_nil(cs:ticket())
      cs = connect(client_ctx({ max_version = "1.2" }), server_ctx("good", { resumption = false }))
      assert.is_nil(cs:ticket())
      cs = connect(client_ctx({ resumption = false }), server_ctx("good"))
      assert.is_nil(cs:ticket())
      assert.has_error(function() core.tls_context({ mode = "client", resumption = "yes" }) end,
        "option resumption must be a boolean")
    end)

    it("keeps resumption working when the server asks for client certificates (cafile)", function()
      local sctx = server_ctx("good", { cafile = pki.ca })
      local cctx = client_ctx()
      local ticket = assert(connect(cctx, sctx):ticket())
      assert.is_true(connect(cctx, sctx, nil, ticket):info().resumed)
      -- a client certificate verified in the full handshake is still the
      -- session's after resumption (SASL EXTERNAL, XEP-0178)
      local mine = client_ctx({ cert = pki.certs.wrongname.cert, key = pki.certs.wrongname.key })
      local cs, ss = connect(mine, sctx)
      assert.is_true(ss:info().verified)
      local cs2, ss2 = connect(mine, sctx, nil, assert(cs:ticket()))
      assert.is_true(cs2:info().resumed)
      assert.is_true(ss2:info().verified)
      assert.equal("CN=other.test", ss2:info().peer_subject)
    end)

    it("refuses tls-unique on a resumed TLS 1.2 session (triple handshake), keeps the other bindings", function()
      local sctx, cctx = server_ctx("good"), client_ctx({ max_version = "1.2" })
      local full_c, full_s = connect(cctx, sctx)
      assert.truthy(full_c:channel_binding("tls-unique"))
      local cs, ss = connect(cctx, sctx, nil, assert(full_c:ticket()))
      assert.is_true(cs:info().resumed)
      for _, s in ipairs({ cs, ss }) do
        local v, why = s:channel_binding("tls-unique")
        assert.is_nil(v)
        assert.matches("resumed", why)
      end
      assert.equal(assert(full_s:channel_binding("tls-server-end-point")),
        assert(ss:channel_binding("tls-server-end-point")))
      assert.equal(cs:channel_binding("tls-server-end-point"), ss:channel_binding("tls-server-end-point"))
    end)

    it("gives equal tls-exporter values on a resumed TLS 1.3 session, new ones per connection", function()
      local sctx, cctx = server_ctx("good"), client_ctx()
      local full = connect(cctx, sctx)
      local cs, ss = connect(cctx, sctx, nil, assert(full:ticket()))
      assert.is_true(cs:info().resumed)
      local ce = assert(cs:channel_binding("tls-exporter"))
      assert.equal(ce, ss:channel_binding("tls-exporter"))
      assert.not_equal(full:channel_binding("tls-exporter"), ce)
      assert.is_nil((cs:channel_binding("tls-unique")))
      assert.equal(cs:channel_binding("tls-server-end-point"), ss:channel_binding("tls-server-end-point"))
    end)

    it("a ticket outlives its session and context, and frees what it holds", function()
      local sctx, cctx = server_ctx("good"), client_ctx()
      local cs, ss = connect(cctx, sctx)
      local ticket = assert(cs:ticket())
      cs:close(); ss:close(); cctx:close()
      collectgarbage()
      assert.equal("lxmpp.tls_ticket", tostring(ticket))
      ticket:close()
      assert.equal("lxmpp.tls_ticket (closed)", tostring(ticket))
      -- a closed ticket is like none
      local cctx2 = client_ctx()
      assert.is_false(connect(cctx2, sctx, nil, ticket):info().resumed)
      -- one left to the garbage collector
      local leak = connect(cctx2, sctx):ticket()
      assert.truthy(leak)
    end)
  end)

  describe("the lxmpp client and the embedded server", function()
    local WAIT = 10 * slow.factor

    -- Drops c's connection and waits until it is back; the new tls_info.
    local function bounce(c)
      local back = events.collect(c, "reconnected")
      c.conn:abort()
      assert(serve.until_true(function() return #back > 0 end, WAIT), "no reconnection")
      return assert(c:tls_info())
    end

    local function login(port, extra)
      local o = { reconnect = { delay = 0.01, max_delay = 0.05 } }
      for k, v in pairs(extra or {}) do o[k] = v end
      return assert(serve.login(port, "alice", "pw", "r", o))
    end

    it("resumes the TLS session when the client reconnects, and SCRAM-PLUS still binds", function()
      serve.run({ users = { alice = "pw" } }, function(srv, port)
        -- without a FAST token (XEP-0484), so that the reconnection runs
        -- SCRAM-PLUS over the resumed session
        local c = login(port, { fast = false })
        local i = assert(c:tls_info())
        assert.is_false(i.resumed)
        assert.is_true(i.verified)
        i = bounce(c)
        assert.is_true(i.resumed)
        assert.is_true(i.verified)
        assert.equal("TLSv1.3", i.version)
        -- the resumed connection authenticated with a binding to itself
        assert.equal("SCRAM-SHA-256-PLUS", c.sasl_mechanism)
        assert.equal("tls-exporter", c.channel_binding)
        -- the server's side of the connection says so too
        local ss = assert(srv:session(c.jid))
        assert.is_true(ss.conn:tls_info().resumed)
        -- and again, with the ticket the resumed handshake gave
        assert.is_true(bounce(c).resumed)
        assert.truthy(c.tls_resume)
        c:close()
        assert.is_nil(c.tls_resume)                  -- forgotten on close
        assert.is_nil(c.tls_ctxs)
      end)
    end)

    it("offers the ticket to the address and port it came from only", function()
      -- one server (one ticket key) on two ports: only the client's own
      -- record of where the ticket came from keeps it from the other one
      serve.run({ users = { alice = "pw" }, listen = { "127.0.0.1:0", "127.0.0.1:0" } }, function(srv)
        local ports = {}
        for _, a in ipairs(srv:addresses()) do
          if a.kind == "c2s" then ports[#ports + 1] = a.port end
        end
        assert.equal(2, #ports)
        local c = login(ports[1])
        assert.is_true(bounce(c).resumed)
        c.opts.port = ports[2]
        assert.is_false(bounce(c).resumed)
        assert.is_true(bounce(c).resumed)            -- the new ticket is port 2's
        c:close()
      end)
    end)

    it("does not resume with tls_resumption = false on the client", function()
      serve.run({ users = { alice = "pw" } }, function(_, port)
        local c = login(port, { tls_resumption = false })
        assert.is_false(bounce(c).resumed)
        assert.is_nil(c.tls_resume)
        c:close()
        assert.has_error(function() require("lxmpp.client").new({ jid = "a@b", password = "p", tls_resumption = 1 }) end)
      end)
    end)

    it("does not resume with tls = { resumption = false } on the server", function()
      local p = pkimod.get()
      serve.run({ users = { alice = "pw" }, tls = { cert = p.certs.good.cert, key = p.certs.good.key, resumption = false } },
        function(_, port)
          local c = login(port)
          assert.is_false(bounce(c).resumed)
          c:close()
        end)
      assert.has_error(function() require("lxmpp").server({ domain = "x.test", tls = { resumption = "no" } }) end,
        "lxmpp.server: tls.resumption must be a boolean")
    end)

    it("keeps no ticket from the self-signed certificate of a server without cert (tls = { resumption = true })", function()
      serve.run({ users = { alice = "pw" }, tls = { resumption = true } }, function(_, port)
        local r = raw.connect(port)
        local ctx = assert(core.tls_context({ mode = "client", insecure = true }))
        r:negotiate_tls(nil, "example.test", { ctx = ctx })
        assert.is_false(r.conn:tls_info().verified)
        assert.is_nil(r.conn:tls_ticket())           -- unverified: never kept
        r:close()
      end)
    end)

    it("advertises no tls-unique on a resumed TLS 1.2 connection (XEP-0440), tls-server-end-point still", function()
      serve.run({ users = { alice = "pw" } }, function(_, port)
        local ctx = assert(core.tls_context({ mode = "client", cafile = pki.ca, max_version = "1.2" }))
        local function types(ticket)
          local r = raw.connect(port)
          local f = r:negotiate_tls(pki.ca, "example.test", { ctx = ctx, ticket = ticket })
          local list = {}
          local cb = f:get_child("sasl-channel-binding", "urn:xmpp:sasl-cb:0")
          for t in (cb and cb:childtags("channel-binding") or function() end) do list[#list + 1] = t.attr.type end
          local resumed, nt = r.conn:tls_info().resumed, r.conn:tls_ticket()
          r:close()
          return list, resumed, nt
        end
        local full, resumed, ticket = types(nil)
        assert.is_false(resumed)
        assert.same({ "tls-server-end-point", "tls-unique" }, full)
        local again
        again, resumed = types(assert(ticket))
        assert.is_true(resumed)
        assert.same({ "tls-server-end-point" }, again)
      end)
    end)
  end)
end)
