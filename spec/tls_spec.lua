-- The TLS engine (csrc/tls.c, csrc/tls_lua.c): client and server sessions
-- paired in memory, every certificate rule (RFC 6125, RFC 7590), and real
-- OpenSSL peers (`openssl s_server`, `openssl s_client`) on loopback, driven
-- over blocking LuaSocket connections.
local close = require "spec.support.close"
local core = require "lxmpp.core"
local pkimod = require "spec.support.pki"
local socket = require "socket"

local handshake_pair = require("spec.support.tls_pair").handshake

local pki


-- A client session for `domain` and a server session, handshaken.
local function connect(copts, sopts, domain)
  copts.mode, sopts.mode = "client", "server"
  local cctx = assert(core.tls_context(copts))
  local sctx = assert(core.tls_context(sopts))
  local cs, ss = cctx:session(domain or "example.test"), sctx:session()
  local c, s = handshake_pair(cs, ss)
  return cs, ss, c, s
end

local function serve(name)
  local cert = pki.certs[name]
  return { cert = cert.cert, key = cert.key }
end

-- from:send(data), the ciphertext moved, what `to` reads.
local function transfer(from, to, data)
  assert(from:send(data))
  assert(to:recv(from:take()))
  return (to:read())
end

-- ---- real OpenSSL peers on loopback -------------------------------------

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function slurp(path)
  local f = io.open(path, "r")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

local function wait_for(pred, what, timeout)
  local deadline = socket.gettime() + (timeout or 10)
  while true do
    local v = pred()
    if v then return v end
    if socket.gettime() > deadline then error("timed out waiting for " .. what, 2) end
    socket.sleep(0.02)
  end
end

local peer_seq = 0
-- Starts `openssl <args>` with its stdin a pipe we hold (s_server and
-- s_client quit on EOF), its output in a log. peer:stop() kills it.
local function openssl_peer(args)
  peer_seq = peer_seq + 1
  local base = ("%s/peer%d"):format(pki.dir, peer_seq)
  local peer = { log = base .. ".log" }
  peer.pipe = assert(io.popen((pkimod.NO_PRELOAD .. "echo $$ > %s; exec stdbuf -oL openssl %s > %s 2>&1")
    :format(q(base .. ".pid"), args, q(peer.log)), "w"))
  peer.pid = wait_for(function() return slurp(base .. ".pid"):match("%d+") end, "pid")
  function peer:write(s)
    self.pipe:write(s)
    self.pipe:flush()
  end
  function peer:output() return slurp(self.log) end
  function peer:stop()
    if self.pipe then
      os.execute(pkimod.NO_PRELOAD .. "kill " .. self.pid .. " 2>/dev/null")
      self.pipe:close()
      self.pipe = nil
    end
  end
  return peer
end

-- `openssl s_server` on 127.0.0.1 with a free port it picked and announced.
local function s_server(name, extra)
  local cert = pki.certs[name]
  local args = ("s_server -accept 127.0.0.1:0 -cert %s -key %s %s %s"):format(
    q(cert.leaf), q(cert.key),
    cert.intermediate and "-cert_chain " .. q(cert.intermediate) or "", extra or "")
  local peer = openssl_peer(args)
  peer.port = tonumber(wait_for(function()
    return peer:output():match("ACCEPT 127%.0%.0%.1:(%d+)")
  end, "s_server to listen"))
  return peer
end

-- Reads what arrived within `wait` seconds into sess (""/nil, err).
local function pump_in(sess, sock, wait)
  sock:settimeout(wait or 0.05)
  local data, err, partial = sock:receive(65536)
  data = data or partial
  if data and data ~= "" then sess:recv(data) end
  return err
end

local function flush(sess, sock)
  local out = sess:take()
  if out ~= "" then assert(sock:send(out)) end
end

-- Drives sess's handshake over a connected blocking socket.
local function tcp_handshake(sess, sock)
  local deadline = socket.gettime() + 10
  while true do
    local st, msg, cond = sess:handshake()
    flush(sess, sock)
    if st ~= "want" then return st, msg, cond end
    if pump_in(sess, sock) == "closed" then        -- what came last still counts
      st, msg, cond = sess:handshake()
      flush(sess, sock)
      if st == "want" then return nil, "connection closed", "closed" end
      return st, msg, cond
    end
    if socket.gettime() > deadline then error("handshake timed out") end
  end
end

-- Reads plaintext until pred(all) is true or read() fails; returns all
-- plaintext and the failure (nil, msg, cond) if any.
local function tcp_read_until(sess, sock, pred, timeout)
  local got, deadline = "", socket.gettime() + (timeout or 10)
  while true do
    local data, msg, cond = sess:read()
    flush(sess, sock)
    if not data then return got, msg, cond end
    got = got .. data
    if pred(got) then return got end
    if socket.gettime() > deadline then return got, "timed out", "timeout" end
    if pump_in(sess, sock) == "closed" and sess:read() == "" then
      return got, "connection closed", "closed"
    end
  end
end

local function tcp_connect(port)
  local sock = assert(socket.tcp())
  sock:settimeout(5)
  assert(sock:connect("127.0.0.1", port))
  return sock
end

-- Connects our client to an s_server serving `name`.
local function against_s_server(name, copts, domain, extra)
  local srv = s_server(name, extra)
  local sock = tcp_connect(srv.port)
  copts.mode = "client"
  local sess = assert(core.tls_context(copts)):session(domain or "example.test")
  local st, msg, cond = tcp_handshake(sess, sock)
  return srv, sock, sess, st, msg, cond
end

-- ---- the certificate cases ----------------------------------------------

-- { certificate, domain the client wants, nil (passes) or the reason }
local CASES = {
  { "good", "example.test" },
  { "good", "EXAMPLE.Test" },
  { "good384", "example.test" },
  { "wildcard", "chat.example.test" },
  { "xmppaddr", "example.test" },
  { "expired", "example.test", "certificate has expired" },
  { "notyet", "example.test", "certificate is not yet valid" },
  { "selfsigned", "example.test", "self%-signed certificate" },
  { "untrusted", "example.test", "unable to get local issuer certificate" },
  { "wrongname", "example.test", "hostname mismatch" },
  { "good", "other.test", "hostname mismatch" },
  { "good", "127.0.0.1", "IP address mismatch" },
  { "wildcard", "example.test", "hostname mismatch" },
  { "wildcard", "a.b.example.test", "hostname mismatch" },
  { "partial", "chat.example.test", "hostname mismatch" },
  { "xmppaddr", "other.test", "hostname mismatch" },
  { "cn_other_san", "example.test", "hostname mismatch" },
}

describe("TLS engine", function()
  setup(function() pki = pkimod.get() end)
  after_each(function() collectgarbage() end)

  describe("client and server in memory", function()
    it("handshake with TLS 1.3 and data both ways", function()
      local cs, ss, c, s = connect({ cafile = pki.ca }, serve("good"))
      assert.same({ "done", n = 1 }, c)
      assert.same({ "done", n = 1 }, s)
      assert.equal("hello server", transfer(cs, ss, "hello server"))
      assert.equal("hello client", transfer(ss, cs, "hello client"))
      local ci, si = cs:info(), ss:info()
      assert.equal("TLSv1.3", ci.version)
      assert.equal("TLSv1.3", si.version)
      assert.equal(ci.cipher, si.cipher)
      assert.is_true(ci.verified)
      assert.equal("CN=example.test", ci.peer_subject)
      assert.equal("example.test", ci.server_name)
      assert.equal("example.test", si.server_name)
      assert.is_false(si.verified)            -- the server asked for no certificate
      assert.is_nil(si.peer_subject)
    end)

    it("moves a megabyte each way across many records", function()
      local cs, ss = connect({ cafile = pki.ca }, serve("good"))
      local big = ("0123456789abcdef"):rep(65536)
      assert.equal(big, transfer(cs, ss, big))
      assert.equal(big:reverse(), transfer(ss, cs, big:reverse()))
      assert.equal("", cs:read())
      assert.equal("", cs:take())
    end)

    it("forced TLS 1.2 works, and max_version 1.3 is the default", function()
      local cs, ss, c = connect({ cafile = pki.ca, max_version = "1.2" }, serve("good"))
      assert.equal("done", c[1])
      assert.equal("TLSv1.2", cs:info().version)
      assert.equal("TLSv1.2", ss:info().version)
      assert.equal("over 1.2", transfer(cs, ss, "over 1.2"))
      local cs3 = connect({ cafile = pki.ca, max_version = "1.3" }, serve("good"))
      assert.equal("TLSv1.3", cs3:info().version)
    end)

    it("negotiates ALPN xmpp-client, and carries on without a common protocol", function()
      local cs, ss = connect({ cafile = pki.ca, alpn = "xmpp-client" },
        { cert = pki.certs.good.cert, key = pki.certs.good.key, alpn = { "xmpp-server", "xmpp-client" } })
      assert.equal("xmpp-client", cs:info().alpn)
      assert.equal("xmpp-client", ss:info().alpn)
      local cs2, ss2, c2 = connect({ cafile = pki.ca, alpn = { "xmpp-client" } },
        { cert = pki.certs.good.cert, key = pki.certs.good.key, alpn = "xmpp-server" })
      assert.equal("done", c2[1])
      assert.is_nil(cs2:info().alpn)
      assert.is_nil(ss2:info().alpn)
    end)

    it("gives equal channel bindings of the right lengths on both sides (TLS 1.3)", function()
      local cs, ss = connect({ cafile = pki.ca }, serve("good"))
      local ce, se = cs:channel_binding("tls-exporter"), ss:channel_binding("tls-exporter")
      assert.equal(32, #ce)
      assert.equal(ce, se)
      local cp, sp = cs:channel_binding("tls-server-end-point"), ss:channel_binding("tls-server-end-point")
      assert.equal(32, #cp)
      assert.equal(cp, sp)
      assert.equal(pkimod.fingerprint(pki.certs.good.leaf, "sha256"), cp)
      -- another session, another exporter value
      local cs2 = connect({ cafile = pki.ca }, serve("good"))
      assert.not_equal(ce, cs2:channel_binding("tls-exporter"))
    end)

    it("hashes tls-server-end-point with the certificate's own signature hash", function()
      local cs, ss = connect({ cafile = pki.ca }, serve("good384"))
      local cp = cs:channel_binding("tls-server-end-point")
      assert.equal(48, #cp)
      assert.equal(cp, ss:channel_binding("tls-server-end-point"))
      assert.equal(pkimod.fingerprint(pki.certs.good384.leaf, "sha384"), cp)
    end)

    it("refuses tls-exporter on TLS 1.2 but gives tls-server-end-point", function()
      local cs, ss = connect({ cafile = pki.ca, max_version = "1.2" }, serve("good"))
      local v, msg = cs:channel_binding("tls-exporter")
      assert.is_nil(v)
      assert.matches("TLS 1.3", msg)
      assert.is_nil((ss:channel_binding("tls-exporter")))
      local cp = cs:channel_binding("tls-server-end-point")
      assert.equal(32, #cp)
      assert.equal(cp, ss:channel_binding("tls-server-end-point"))
    end)

    it("refuses channel bindings before the handshake and of unknown types", function()
      local cs = assert(core.tls_context{ cafile = pki.ca }):session("example.test")
      local v, msg = cs:channel_binding("tls-exporter")
      assert.is_nil(v)
      assert.matches("not finished", msg)
      local cs2 = connect({ cafile = pki.ca }, serve("good"))
      v, msg = cs2:channel_binding("tls-bogus")
      assert.is_nil(v)
      assert.matches("unsupported", msg)
    end)

    it("gives tls-unique, the client Finished, on TLS 1.2 with the extended master secret and on TLS 1.3", function()
      -- RFC 5929 §3: the first Finished of the handshake, the client's in a
      -- full TLS 1.2 one; TLS 1.3 (undefined by RFC 9266): the client
      -- Finished, as OpenSSL clients (CPython, slixmpp) give it
      for _, v in ipairs({ "1.2", "1.3" }) do
        local cs, ss = connect({ cafile = pki.ca, max_version = v }, serve("good"))
        local cu, su = assert(cs:channel_binding("tls-unique")), assert(ss:channel_binding("tls-unique"))
        assert.equal(cu, su)
        assert.equal(v == "1.2" and 12 or cs:info().cipher:match("SHA384") and 48 or 32, #cu)
        local cs2 = connect({ cafile = pki.ca, max_version = v }, serve("good"))
        assert.not_equal(cu, cs2:channel_binding("tls-unique"))
      end
    end)

    it("refuses tls-unique on TLS 1.2 without the extended master secret (RFC 7627)", function()
      local cs, ss = connect({ cafile = pki.ca, max_version = "1.2", no_ems = true }, serve("good"))
      assert.equal("TLSv1.2", cs:info().version)
      local v, msg = cs:channel_binding("tls-unique")
      assert.is_nil(v)
      assert.matches("extended master secret", msg)
      assert.is_nil((ss:channel_binding("tls-unique")))
      assert.truthy(ss:channel_binding("tls-server-end-point"))
    end)

    it("picks the server certificate by SNI", function()
      local sopts = { cert = pki.certs.wrongname.cert, key = pki.certs.wrongname.key,
        sni = { ["example.test"] = serve("good"), ["chat.example.test"] = serve("wildcard") } }
      local cs, ss, c = connect({ cafile = pki.ca }, sopts, "example.test")
      assert.equal("done", c[1])
      assert.equal("CN=example.test", cs:info().peer_subject)
      assert.equal("example.test", ss:info().server_name)
      cs, ss, c = connect({ cafile = pki.ca }, sopts, "chat.example.test")
      assert.equal("done", c[1])
      assert.equal("CN=*.example.test", cs:info().peer_subject)
      assert.equal("chat.example.test", ss:info().server_name)
      -- the server binds to the certificate it chose
      assert.equal(pkimod.fingerprint(pki.certs.wildcard.leaf, "sha256"),
        ss:channel_binding("tls-server-end-point"))
      assert.equal(cs:channel_binding("tls-server-end-point"), ss:channel_binding("tls-server-end-point"))
      -- unknown name: the default certificate
      cs, ss, c = connect({ cafile = pki.ca }, sopts, "other.test")
      assert.equal("done", c[1])
      assert.equal("CN=other.test", cs:info().peer_subject)
      assert.equal("other.test", ss:info().server_name)
    end)

    it("fails the handshake when SNI matches nothing and there is no default", function()
      local _, ss, c, s = connect({ cafile = pki.ca }, { sni = { ["example.test"] = serve("good") } },
        "other.test")
      assert.is_nil(c[1])
      assert.equal("tls-failed", c[3])
      assert.matches("unrecognized name", c[2])
      assert.is_nil(s[1])
      assert.equal("tls-failed", s[3])
      assert.is_nil(ss:info().version)
    end)

    it("lets a client present a certificate the server verifies (SASL EXTERNAL)", function()
      local cs, ss, c, s = connect({ cafile = pki.ca, cert = pki.certs.good.cert, key = pki.certs.good.key },
        { cert = pki.certs.wrongname.cert, key = pki.certs.wrongname.key, cafile = pki.ca }, "other.test")
      assert.equal("done", c[1])
      assert.equal("done", s[1])
      local si = ss:info()
      assert.is_true(si.verified)
      assert.equal("CN=example.test", si.peer_subject)
      assert.is_true(cs:info().verified)
      -- an untrusted client certificate does not fail the handshake; it is just not verified
      local _, ss2, _, s2 = connect({ cafile = pki.ca, cert = pki.certs.untrusted.cert, key = pki.certs.untrusted.key },
        { cert = pki.certs.wrongname.cert, key = pki.certs.wrongname.key, cafile = pki.ca }, "other.test")
      assert.equal("done", s2[1])
      assert.is_false(ss2:info().verified)
      assert.equal("CN=example.test", ss2:info().peer_subject)
    end)

    it("sends close_notify and reports the peer's close", function()
      local cs, ss = connect({ cafile = pki.ca }, serve("good"))
      assert.is_true(transfer(cs, ss, "bye") == "bye")
      assert.is_true(cs:shutdown())
      local notify = cs:take()
      assert.is_true(#notify > 0)
      ss:recv(notify)
      local data, closed = ss:read()
      assert.equal("", data)
      assert.is_true(closed)
    end)

    it("closes safely, twice, and raises on use after close", function()
      local ctx = assert(core.tls_context{ cafile = pki.ca })
      local cs = ctx:session("example.test")
      assert.matches("handshaking", tostring(cs))
      cs:close()
      cs:close()
      assert.matches("closed", tostring(cs))
      assert.has_error(function() cs:handshake() end, "TLS session is closed")
      close.scope(ctx:session("example.test"))   -- a to-be-closed value
      ctx:close()
      ctx:close()
      assert.has_error(function() ctx:session("example.test") end, "TLS context is closed")
    end)

    it("keeps the context alive for its sessions", function()
      local ss = assert(core.tls_context{ mode = "server", cert = pki.certs.good.cert,
        key = pki.certs.good.key }):session()
      local cctx = assert(core.tls_context{ cafile = pki.ca })
      local cs = cctx:session("example.test")
      cctx:close()                 -- the session keeps what it needs
      collectgarbage()
      collectgarbage()
      local c, s = handshake_pair(cs, ss)
      assert.equal("done", c[1])
      assert.equal("done", s[1])
      assert.equal("still here", transfer(cs, ss, "still here"))
    end)

    it("raises on misuse", function()
      assert.has_error(function() core.tls_context{ mode = "peer" } end)
      assert.has_error(function() core.tls_context{ mode = "server" } end,
        "a server context needs cert, domain or sni")
      assert.has_error(function() core.tls_context{ cafile = 42 } end, "option cafile must be a string")
      assert.has_error(function() core.tls_context{ max_version = "1.1" } end)
      assert.has_error(function() core.tls_context{ alpn = {} } end)
      assert.has_error(function() core.tls_context{ alpn = "" } end, "option alpn: bad protocol name")
      assert.has_error(function() core.tls_context{ alpn = { "a,b" } } end, "option alpn: bad protocol name")
      assert.has_error(function() core.tls_context{ sni = {} } end, "option sni is for servers")
      local ctx = assert(core.tls_context{})
      assert.has_error(function() ctx:session() end)
      assert.has_error(function() ctx:session("") end)
      assert.has_error(function() ctx:session("a\0b") end)
      local cs = ctx:session("example.test")
      assert.has_error(function() cs:send("too early") end, "TLS handshake not finished")
    end)

    it("returns nil, message, tls-failed for unusable files", function()
      local ctx, msg, cond = core.tls_context{ mode = "server", cert = pki.dir .. "/nope.pem" }
      assert.is_nil(ctx)
      assert.matches("cannot read certificate file .*nope%.pem", msg)
      assert.equal("tls-failed", cond)
      ctx, msg, cond = core.tls_context{ mode = "server", cert = pki.certs.good.cert, key = pki.certs.wrongname.key }
      assert.is_nil(ctx)
      assert.matches("do not match", msg)
      assert.equal("tls-failed", cond)
      ctx, msg, cond = core.tls_context{ mode = "server", cert = pki.certs.sha1.cert, key = pki.certs.sha1.key }
      assert.is_nil(ctx)
      assert.matches("md too weak", msg)
      assert.equal("tls-failed", cond)
      ctx, msg, cond = core.tls_context{ cafile = pki.dir .. "/nope.pem" }
      assert.is_nil(ctx)
      assert.matches("cannot load CA file", msg)
      assert.equal("tls-failed", cond)
      ctx, msg, cond = core.tls_context{ mode = "server", domain = "x.test",
        sni = { ["example.test"] = { cert = pki.certs.good.key } } }
      assert.is_nil(ctx)
      assert.matches("no certificate in", msg)
      assert.equal("tls-failed", cond)
    end)
  end)

  describe("certificate verification (in memory)", function()
    for _, case in ipairs(CASES) do
      local name, domain, reason = case[1], case[2], case[3]
      if not reason then
        it(("accepts %s for %s"):format(name, domain), function()
          local cs, _, c, s = connect({ cafile = pki.ca }, serve(name), domain)
          assert.same({ "done", n = 1 }, c)
          assert.equal("done", s[1])
          assert.is_true(cs:info().verified)
        end)
      else
        it(("refuses %s for %s: %s"):format(name, domain, reason), function()
          local cs, _, c, s = connect({ cafile = pki.ca }, serve(name), domain)
          assert.is_nil(c[1])
          assert.equal("tls-verify-failed", c[3])
          assert.matches("certificate verification failed", c[2])
          assert.matches(reason, c[2])
          -- the server hears about it through our alert
          assert.is_nil(s[1])
          assert.equal("tls-failed", s[3])
          -- and the session stays failed
          local again, msg2, cond2 = cs:handshake()
          assert.is_nil(again)
          assert.equal(c[2], msg2)
          assert.equal("tls-verify-failed", cond2)
          assert.is_nil(cs:read())
        end)
        it(("passes %s for %s only with insecure = true, unverified"):format(name, domain), function()
          local cs, ss, c = connect({ cafile = pki.ca, insecure = true }, serve(name), domain)
          assert.equal("done", c[1])
          assert.is_false(cs:info().verified)
          assert.equal("works anyway", transfer(cs, ss, "works anyway"))
        end)
      end
    end

    it("uses the system store without a cafile, which does not trust the test CA", function()
      local _, _, c = connect({}, serve("good"))
      assert.is_nil(c[1])
      assert.equal("tls-verify-failed", c[3])
      assert.matches("unable to get local issuer certificate", c[2])
    end)
  end)

  describe("against a real openssl s_server", function()
    it("connects to a valid certificate, with ALPN, and exchanges data", function()
      local srv, sock, sess, st, msg = against_s_server("good",
        { cafile = pki.ca, alpn = "xmpp-client" }, "example.test", "-alpn xmpp-client")
      finally(function() sock:close(); srv:stop() end)
      assert.equal("done", st, msg)
      local info = sess:info()
      assert.is_true(info.verified)
      assert.equal("TLSv1.3", info.version)
      assert.equal("xmpp-client", info.alpn)
      assert(sess:send("<stream:stream to='example.test'>\n"))
      flush(sess, sock)
      wait_for(function() return srv:output():find("<stream:stream to='example.test'>", 1, true) end,
        "s_server to print our data")
      srv:write("<stream:features/>\n")
      local got, err = tcp_read_until(sess, sock, function(s) return s:find("\n") end)
      assert.is_nil(err)
      assert.equal("<stream:features/>\n", got)
    end)

    it("gives the same tls-server-end-point as the certificate's fingerprint", function()
      local srv, sock, sess, st = against_s_server("good", { cafile = pki.ca })
      finally(function() sock:close(); srv:stop() end)
      assert.equal("done", st)
      assert.equal(pkimod.fingerprint(pki.certs.good.leaf, "sha256"),
        sess:channel_binding("tls-server-end-point"))
      assert.equal(32, #sess:channel_binding("tls-exporter"))
    end)

    for _, case in ipairs(CASES) do
      local name, domain, reason = case[1], case[2], case[3]
      if reason and domain ~= "127.0.0.1" then
        it(("fails on %s for %s with tls-verify-failed"):format(name, domain), function()
          local srv, sock, _, st, msg, cond = against_s_server(name, { cafile = pki.ca }, domain)
          finally(function() sock:close(); srv:stop() end)
          assert.is_nil(st)
          assert.equal("tls-verify-failed", cond)
          assert.matches(reason, msg)
        end)
      end
    end

    it("accepts the wildcard and the XmppAddr certificates", function()
      for _, c in ipairs({ { "wildcard", "chat.example.test" }, { "xmppaddr", "example.test" } }) do
        local srv, sock, sess, st, msg = against_s_server(c[1], { cafile = pki.ca }, c[2])
        sock:close()
        srv:stop()
        assert.equal("done", st, msg)
        assert.is_true(sess:info().verified)
      end
    end)

    it("hashes a SHA-1-signed certificate with SHA-256 for tls-server-end-point", function()
      local weak = "-cipher DEFAULT@SECLEVEL=0"  -- lets s_server use the weak certificate
      local srv, sock, sess, st, msg = against_s_server("sha1", { cafile = pki.ca, insecure = true },
        "example.test", weak)
      finally(function() sock:close(); srv:stop() end)
      assert.equal("done", st, msg)
      assert.is_false(sess:info().verified)
      assert.equal(pkimod.fingerprint(pki.certs.sha1.leaf, "sha256"),
        sess:channel_binding("tls-server-end-point"))
      local srv2, sock2, _, st2, msg2, cond2 = against_s_server("sha1", { cafile = pki.ca }, "example.test", weak)
      sock2:close()
      srv2:stop()
      assert.is_nil(st2)
      assert.equal("tls-verify-failed", cond2)
      assert.matches("too weak", msg2)
    end)

    it("refuses a TLS 1.1 server", function()
      local srv, sock, _, st, msg, cond = against_s_server("good", { cafile = pki.ca }, "example.test",
        "-tls1_1 -cipher ALL@SECLEVEL=0")
      finally(function() sock:close(); srv:stop() end)
      assert.is_nil(st)
      assert.equal("tls-failed", cond)
      assert.matches("protocol version", msg)
    end)
  end)

  describe("renegotiation", function()
    it("is refused when an s_server asks for it (TLS 1.2)", function()
      local srv, sock, sess, st, msg = against_s_server("good", { cafile = pki.ca }, "example.test", "-tls1_2")
      finally(function() sock:close(); srv:stop() end)
      assert.equal("done", st, msg)
      assert.equal("TLSv1.2", sess:info().version)
      srv:write("before\n")
      assert.equal("before\n", (tcp_read_until(sess, sock, function(s) return s:find("\n") end)))
      srv:write("r\n")                  -- s_server: renegotiate now
      local got, err, cond = tcp_read_until(sess, sock, function() return false end, 5)
      assert.equal("", got)
      assert.equal("tls-failed", cond)
      assert.matches("renegotiat", err)
      assert.is_nil(sess:read())        -- failed for good
    end)

    it("is refused when an s_client asks our server for it (TLS 1.2)", function()
      local listener = assert(socket.bind("127.0.0.1", 0))
      local _, port = listener:getsockname()
      local cli = openssl_peer(("s_client -connect 127.0.0.1:%d -tls1_2 -servername example.test -CAfile %s")
        :format(port, q(pki.ca)))
      listener:settimeout(10)
      local sock = assert(listener:accept())
      finally(function() sock:close(); listener:close(); cli:stop() end)
      local ctx = assert(core.tls_context{ mode = "server", cert = pki.certs.good.cert, key = pki.certs.good.key })
      local sess = ctx:session()
      assert.equal("done", (tcp_handshake(sess, sock)))
      assert.equal("TLSv1.2", sess:info().version)
      cli:write("hi\n")
      assert.equal("hi\n", (tcp_read_until(sess, sock, function(s) return s:find("\n") end)))
      cli:write("R\n")                  -- s_client: renegotiate now
      local got, err, cond = tcp_read_until(sess, sock, function() return false end, 5)
      assert.equal("", got)
      assert.equal("tls-failed", cond)
      assert.matches("renegotiat", err)
    end)

    it("is not confused with a TLS 1.3 key update", function()
      local srv, sock, sess, st, msg = against_s_server("good", { cafile = pki.ca })
      finally(function() sock:close(); srv:stop() end)
      assert.equal("done", st, msg)
      assert.equal("TLSv1.3", sess:info().version)
      srv:write("K\n")                    -- s_server: KeyUpdate, update requested
      wait_for(function() return srv:output():find("SSL_do_handshake -> 1", 1, true) end, "s_server's key update")
      srv:write("after the key update\n")
      local got, err = tcp_read_until(sess, sock, function(s) return s:find("\n") end)
      assert.is_nil(err)
      assert.equal("after the key update\n", got)
      assert(sess:send("still talking\n"))
      flush(sess, sock)
      wait_for(function() return srv:output():find("still talking", 1, true) end, "s_server to print our data")
    end)
  end)

  describe("self-signed certificate made in memory", function()
    local function dev_server() return { domain = "dev.test" } end

    it("works with a client that trusts nothing but insecure = true", function()
      local cs, ss, c, s = connect({ insecure = true }, dev_server(), "dev.test")
      assert.equal("done", c[1])
      assert.equal("done", s[1])
      local info = cs:info()
      assert.is_false(info.verified)
      assert.equal("CN=dev.test", info.peer_subject)
      assert.equal("ping", transfer(cs, ss, "ping"))
      assert.equal(32, #cs:channel_binding("tls-server-end-point"))
    end)

    it("fails verification otherwise", function()
      for _, copts in ipairs({ {}, { cafile = pki.ca } }) do
        local _, _, c = connect(copts, dev_server(), "dev.test")
        assert.is_nil(c[1])
        assert.equal("tls-verify-failed", c[3])
        assert.matches("self%-signed certificate", c[2])
      end
    end)

    it("is made fresh for each context", function()
      local a = connect({ insecure = true }, dev_server(), "dev.test")
      local b = connect({ insecure = true }, dev_server(), "dev.test")
      assert.not_equal(a:channel_binding("tls-server-end-point"), b:channel_binding("tls-server-end-point"))
    end)
  end)

  describe("bytes around the handshake", function()
    local INJECTED = "<stream:features><mechanisms/></stream:features>"

    local function started()
      local cctx = assert(core.tls_context{ cafile = pki.ca })
      local sctx = assert(core.tls_context{ mode = "server", cert = pki.certs.good.cert, key = pki.certs.good.key })
      local cs, ss = cctx:session("example.test"), sctx:session()
      assert.equal("want", cs:handshake())
      ss:recv(cs:take())
      assert.equal("want", ss:handshake())
      return cs, ss
    end

    it("never decrypts plaintext that precedes the server's first flight", function()
      local cs, ss = started()
      cs:recv(INJECTED .. ss:take())
      assert.equal("", cs:read())        -- nothing before the handshake is done
      local st, msg, cond = cs:handshake()
      assert.is_nil(st)
      assert.equal("tls-failed", cond)
      assert.matches("TLS handshake failed", msg)
      assert.is_nil(cs:read())
    end)

    it("never returns plaintext appended to the handshake as data (client)", function()
      local cs, ss = started()
      cs:recv(ss:take() .. INJECTED)
      local seen = {}
      seen[#seen + 1] = cs:read()
      local st = cs:handshake()
      local data, msg, cond = cs:read()
      seen[#seen + 1] = data
      for _, s in ipairs(seen) do assert.is_nil(s:find("features", 1, true)) end
      assert.equal("done", st)          -- the handshake itself was whole
      assert.is_nil(data)
      assert.equal("tls-failed", cond)
      assert.matches("TLS failed", msg)
    end)

    it("never returns plaintext injected after the client's Finished (server)", function()
      local cs, ss = started()
      cs:recv(ss:take())
      assert.equal("done", cs:handshake())
      ss:recv(cs:take() .. "<message><body>evil</body></message>")
      assert.equal("done", ss:handshake())
      local data, msg, cond = ss:read()
      assert.is_nil(data)
      assert.equal("tls-failed", cond)
      assert.is_string(msg)
      -- genuine data after that cannot revive the session
      assert.is_true(cs:send("genuine"))
      ss:recv(cs:take())
      assert.is_nil(ss:read())
    end)

    it("returns nothing from read() while the handshake is unfinished", function()
      local cs, ss = started()
      ss:recv("plain text pretending to be a stream")
      local data, closed = ss:read()
      assert.equal("", data)
      assert.is_false(closed)
      cs:recv(ss:take())
      assert.equal("", cs:read())
    end)
  end)
end)
