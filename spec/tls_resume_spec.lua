-- TLS session resumption (csrc/tls.c, tls.h "Session resumption"): the
-- engine in memory (tickets issued, kept, offered, refused), channel
-- binding on resumed sessions, and the lxmpp client reconnecting to the
-- embedded server with a resumed handshake (docs/api.md, docs/server.md).
local core = require "lxmpp.core"
local pkimod = require "spec.support.pki"

local pki

-- Pumps ciphertext between two sessions until neither has more to say.
local function pump(cs, ss)
  local c, s
  for _ = 1, 50 do
    c = table.pack(cs:handshake())
    s = table.pack(ss:handshake())
    local x, y = cs:take(), ss:take()
    if x ~= "" then ss:recv(x) end
    if y ~= "" then cs:recv(y) end
    if x == "" and y == "" then break end
  end
  return c, s
end

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
end)
