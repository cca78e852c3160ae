-- Federation with a real Prosody (Debian's package) on loopback: the
-- embedded server (other.test) sends to Prosody (example.test) over a
-- jabber:server stream, STARTTLS and SASL EXTERNAL with certificates of the
-- suite's CA (Prosody with s2s_secure_auth: nothing else would do).
-- The other direction needs Prosody to find other.test in DNS: next
-- (S2S_STATUS.md).
local lxmpp = require "lxmpp"
local net = require "lxmpp.net"
local st = require "lxmpp.stanza"
local pki = require "spec.support.pki"
local prosody = require "spec.support.prosody"
local serve = require "spec.support.serve"
local clean = require "spec.support.clean"
local slow = require "spec.support.slow"

describe("s2s interop with Prosody", function()
  it("delivers a message from the embedded server to a Prosody account, authenticated by certificate", function()
    local pro = prosody.start({ users = { juliet = "juliet-pw" }, s2s = true })
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
        romeo:send(st.message({ to = "juliet@example.test/r", type = "chat", id = "p1" }):tag("body"):text("hi"):up())
        local got = serve.expect(juliet, "message", function(m) return m.attr.id == "p1" end, 10 * slow.factor)
        assert(got, "juliet did not get romeo's message")
        assert.equal("romeo@other.test/r", got.attr.from)
        assert.equal("hi", got:get_child_text("body"))
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
