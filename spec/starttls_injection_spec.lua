-- STARTTLS command injection (RFC 6120 §5.4.3.3): plaintext pipelined after
-- <proceed/> (a man in the middle speaking for the server) or after
-- <starttls/> (for the client) is never parsed as part of the encrypted
-- stream, in either direction. Also: see-other-host is followed once with
-- the same certificate checks.
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local net = require "lxmpp.net"
local pki = require "spec.support.pki"

local NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
local HEADER = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' " ..
  "xmlns:stream='http://etherx.jabber.org/streams' from='example.test' id='s1' version='1.0'>"

local clean = require "spec.support.clean"

-- A scripted plaintext server: on_stanza(conn, stanza) answers.
local function fake_server(on_open, on_stanza)
  return assert(net.listen("127.0.0.1", 0, function(conn)
    conn:on("open", function(attr) on_open(conn, attr) end)
    conn:on("stanza", function(s) on_stanza(conn, s) end)
    conn:on("eof", function() conn:abort() end)
    conn:parse()
  end))
end

describe("STARTTLS injection", function()
  after_each(clean)

  it("a client refuses plaintext that follows <proceed/> in the same segment", function()
    local p = pki.get()
    lxmpp.run(function()
      local l = fake_server(function(conn)
        conn:write(HEADER .. "<stream:features><starttls xmlns='" .. NS_TLS .. "'><required/></starttls>"
          .. "</stream:features>")
      end, function(conn, s)
        if s.name == "starttls" then
          conn:write("<proceed xmlns='" .. NS_TLS .. "'/>" ..
            "<message from='evil@example.test'><body>injected</body></message>")
        end
      end)
      local c, msg, cond = lxmpp.connect({ jid = "alice@example.test", password = "x",
        host = "127.0.0.1", port = l:port(), cafile = p.ca, timeout = 5 })
      assert.is_nil(c)
      assert.equal("tls-failed", cond)
      assert.matches("plaintext arrived after <proceed/>", msg)
      l:close()
    end)
  end)

  it("a client refuses a server that does not offer STARTTLS (no plaintext fallback)", function()
    local p = pki.get()
    lxmpp.run(function()
      local l = fake_server(function(conn)
        conn:write(HEADER .. "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" ..
          "<mechanism>PLAIN</mechanism></mechanisms></stream:features>")
      end, function() end)
      local c, msg, cond = lxmpp.connect({ jid = "alice@example.test", password = "x",
        host = "127.0.0.1", port = l:port(), cafile = p.ca, timeout = 5 })
      assert.is_nil(c)
      assert.equal("tls-failed", cond)
      assert.matches("does not offer STARTTLS", msg)
      l:close()
    end)
  end)

  it("a client refuses <failure/> in answer to <starttls/>", function()
    local p = pki.get()
    lxmpp.run(function()
      local l = fake_server(function(conn)
        conn:write(HEADER .. "<stream:features><starttls xmlns='" .. NS_TLS .. "'/></stream:features>")
      end, function(conn, s)
        if s.name == "starttls" then conn:write("<failure xmlns='" .. NS_TLS .. "'/></stream:stream>") end
      end)
      local c, _, cond = lxmpp.connect({ jid = "alice@example.test", password = "x",
        host = "127.0.0.1", port = l:port(), cafile = p.ca, timeout = 5 })
      assert.is_nil(c)
      assert.equal("tls-failed", cond)
      l:close()
    end)
  end)

  it("a server drops plaintext pipelined after <starttls/> and says how much", function()
    local p = pki.get()
    local delivered, discarded, tls_ok = {}, nil, false
    lxmpp.run(function()
      local ctx = assert(core.tls_context({ mode = "server", cert = p.certs.good.cert, key = p.certs.good.key }))
      local done = lxmpp.task.waiter()
      local l = assert(net.listen("127.0.0.1", 0, function(conn)
        conn:on("open", function() conn:write(HEADER) end)
        conn:on("stanza", function(s)
          delivered[#delivered + 1] = s.name
          if s.name == "starttls" then
            conn:write("<proceed xmlns='" .. NS_TLS .. "'/>")
            local _, n = conn.c:starttls(ctx)
            discarded = n
          end
        end)
        conn:on("tls-done", function() tls_ok = true done:wake() end)
        conn:on("eof", function() conn:abort() end)
        conn:on("tls-failed", function() done:wake() end)
        conn:parse()
      end))
      local c = assert(net.connect("127.0.0.1", l:port()))
      local injected = "<message to='victim@example.test'><body>injected</body></message>"
      c:write(HEADER .. "<starttls xmlns='" .. NS_TLS .. "'/>" .. injected)
      -- then a real handshake from the client side
      local cctx = assert(core.tls_context({ mode = "client", cafile = p.ca }))
      c:on("stanza", function(s)
        if s.name == "proceed" then c.c:starttls(cctx, "example.test") end
      end)
      c:parse()
      local t = core.timer(5, done)
      done:wait()
      t:stop()
      assert.same({ "starttls" }, delivered)
      assert.equal(#injected, discarded)
      assert.is_true(tls_ok)
      c:abort()
      l:close()
      lxmpp.sleep(0.05)     -- the server side sees the EOF and closes too
    end)
  end)
end)

describe("see-other-host", function()
  after_each(clean)

  it("is followed once, to a server that must still prove the JID's domain", function()
    local p = pki.get()
    lxmpp.run(function()
      local hits = 0
      local redirector
      redirector = fake_server(function(conn)
        hits = hits + 1
        -- send the client to ourselves: the second time must not be followed
        conn:write(HEADER .. "<stream:error><see-other-host xmlns='urn:ietf:params:xml:ns:xmpp-streams'>" ..
          "127.0.0.1:" .. redirector:port() .. "</see-other-host></stream:error></stream:stream>")
      end, function() end)
      local c, _, cond = lxmpp.connect({ jid = "alice@example.test", password = "x",
        host = "127.0.0.1", port = redirector:port(), cafile = p.ca, timeout = 5 })
      assert.is_nil(c)
      assert.equal("see-other-host", cond)
      assert.equal(2, hits)
      redirector:close()
    end)
  end)
end)
