-- XEP-0288 with a real Prosody (Debian's package, with its mod_s2s_bidi
-- enabled): the embedded server (other.test) opens the one
-- connection, asks for bidi, and Prosody's answer comes back over it;
-- Prosody could not otherwise reach other.test (no DNS for it here).
local lxmpp = require "lxmpp"
local net = require "lxmpp.net"
local st = require "lxmpp.stanza"
local pki = require "spec.support.pki"
local prosody = require "spec.support.prosody"
local serve = require "spec.support.serve"
local clean = require "spec.support.clean"
local slow = require "spec.support.slow"

describe("s2s interop with Prosody, XEP-0288", function()
  it("carries Prosody's answer back over the stream the embedded server opened", function()
    local pro = prosody.start({ users = { juliet = "juliet-pw" }, s2s = true, modules = { "s2s_bidi" } })
    local ok, err = pcall(lxmpp.run, function()
      local p = pki.get()
      local cert = p.certs.wrongname       -- names other.test
      local srv = lxmpp.server({ domain = "other.test", listen = "127.0.0.1:0", log_level = "error",
        tls = { cert = cert.cert, key = cert.key }, users = { romeo = "romeo-pw" },
        s2s = { cafile = p.ca, hosts = { ["example.test"] = "127.0.0.1:" .. pro.s2s_port } } })
      assert(srv:start())
      local inner_ok, inner_err = pcall(function()
        local juliet = assert(lxmpp.connect({ jid = "juliet@example.test/r", password = "juliet-pw",
          host = "127.0.0.1", port = pro.port, cafile = p.ca }))
        local romeo = assert(lxmpp.connect({ jid = "romeo@other.test/r", password = "romeo-pw",
          host = "127.0.0.1", port = srv:addresses()[1].port, cafile = p.ca }))
        romeo:send(st.message({ to = "juliet@example.test/r", type = "chat", id = "b1" }):tag("body"):text("hi"):up())
        assert(serve.expect(juliet, "message", function(m) return m.attr.id == "b1" end, 10 * slow.factor),
          "juliet did not get romeo's message")
        assert.is_true(srv.s2s.routes["example.test"].out.bidi)       -- Prosody offered it, we asked
        juliet:send(st.message({ to = "romeo@other.test/r", type = "chat", id = "b2" }):tag("body"):text("ho"):up())
        local got = serve.expect(romeo, "message", function(m) return m.attr.id == "b2" end, 10 * slow.factor)
        assert(got, "romeo did not get juliet's answer")
        assert.equal("juliet@example.test/r", got.attr.from)
        assert.is_nil(next(srv.s2s.incoming))        -- Prosody did not connect to us
      end)
      require("spec.support.clients").kill_all()
      net.abort_all()
      srv:stop()
      lxmpp.sleep(0.05)
      if not inner_ok then error(inner_err, 0) end
    end)
    local log = pro:log()
    pro:stop()
    if not ok then error(tostring(err) .. "\nprosody log:\n" .. log:sub(-6000), 0) end
    clean()
  end)
end)
