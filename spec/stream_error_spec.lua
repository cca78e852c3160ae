-- lxmpp.stream_error: the one <stream:error/> writer (condition, escaped
-- text, application-specific element, end of stream) and the one list of
-- fatal conditions, which stops a reconnection that would fail forever
-- (here: a server certificate that no longer verifies).
local stream_error = require "lxmpp.stream_error"
local serve = require "spec.support.serve"
local pki = require "spec.support.pki"
local SLOW = require("spec.support.slow").factor

describe("stream_error", function()
  it("writes condition, escaped text and application element, in RFC 6120 §4.9.2 order, then ends the stream", function()
    assert.equal("<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>",
      stream_error.xml("conflict"))
    local x = stream_error.xml("undefined-condition", "a < b & 'c'", "<app xmlns='urn:x'/>")
    assert.equal("<stream:error><undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" ..
      "<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>a &lt; b &amp; &apos;c&apos;</text>" ..
      "<app xmlns='urn:x'/></stream:error></stream:stream>", x)
  end)

  it("lists as fatal what fails the same way again, and not what ends one stream only", function()
    for _, c in ipairs({ "conflict", "not-authorized", "account-disabled", "credentials-expired",
      "encryption-required", "invalid-mechanism", "tls-verify-failed" }) do
      assert.is_true(stream_error.FATAL[c], c)
    end
    for _, c in ipairs({ "system-shutdown", "reset", "connection-timeout", "see-other-host",
      "policy-violation", "timeout", "closed", "tls-failed" }) do
      assert.is_nil(stream_error.FATAL[c], c)
    end
  end)

  it("a reconnection stops when the server's certificate no longer verifies", function()
    serve.run({ users = { alice = "alice-pw" } }, function(srv, port)
      local c = assert(serve.login(port, "alice", "alice-pw", "r",
        { reconnect = { delay = 0.01, max_delay = 0.05 }, logger = function() end }))
      local gone = {}
      c:on("disconnected", function(_, cond, again) gone[#gone + 1] = { cond = cond, again = again } end)
      c.opts.cafile = pki.get().untrusted_ca          -- as if the server's certificate changed
      srv.sessions["alice@" .. serve.DOMAIN].r.conn:abort()
      assert.truthy(serve.until_true(function() return #gone >= 2 end, 3 * SLOW))
      assert.is_true(gone[1].again)
      assert.same({ "tls-verify-failed", false }, { gone[2].cond, gone[2].again })
      c:close()
    end)
  end)

  it("a client with tls = \"none\" does not follow see-other-host away from loopback", function()
    local lxmpp = require "lxmpp"
    local net = require "lxmpp.net"
    lxmpp.run(function()
      local hits = 0
      local l = assert(net.listen("127.0.0.1", 0, function(conn)
        hits = hits + 1
        conn:raw()
        conn:write("<?xml version='1.0'?><stream:stream xmlns='jabber:client' " ..
          "xmlns:stream='http://etherx.jabber.org/streams' from='example.test' id='x' version='1.0'>" ..
          stream_error.xml("see-other-host", nil, nil):gsub("/></stream:error>",
            ">192.0.2.1:5222</see-other-host></stream:error>"))
        conn:close()
      end))
      local c, msg, cond = lxmpp.connect({ jid = "example.test/r", mechanism = "ANONYMOUS", host = "127.0.0.1",
        port = l:port(), tls = "none", reconnect = false, timeout = 5 * SLOW, logger = function() end })
      l:close()
      assert.is_nil(c)
      assert.matches("not following see-other-host to 192.0.2.1:5222", msg, 1, true)
      assert.equal("see-other-host", cond)
      assert.equal(1, hits)
    end)
  end)
end)
