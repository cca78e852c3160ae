-- @xmpp/client (xmpp.js 0.14, under Node.js) against the embedded server
-- with its defaults: over TCP with STARTTLS it logs in with SASL2 (XEP-0388)
-- and Bind2 (XEP-0386), asks for a FAST token (XEP-0484), then logs in
-- again with the token (HT-SHA-256-NONE); each time it exchanges a message
-- with an lxmpp client (web/sasl2_client.mjs). A missing Node.js or
-- web/node_modules is a failure, never a skip (`make deps`).
local lxmpp = require "lxmpp"
local serve = require "spec.support.serve"
local proc = require "spec.support.proc"
local peers = require "spec.support.web_peers"

local USERS = { carol = "carol-pw", bot = "bot-pw" }

describe("@xmpp/client against the embedded server: SASL2, Bind2, FAST", function()
  it("logs in with SCRAM in SASL2 with Bind2, gets a token, logs in again with it", function()
    peers.check()
    serve.run({ users = USERS }, function(srv, port)
      local bot = assert(serve.login(port, "bot", "bot-pw", "echo"))
      bot:on("message", function(m)
        local body = m:get_child_text("body")
        if body and m.attr.type ~= "error" then bot:send_message(m.attr.from, "echo: " .. body) end
      end)
      local argv = { "env", "NODE_EXTRA_CA_CERTS=" .. serve.pki().ca, peers.NODE, peers.WEB .. "/sasl2_client.mjs",
        "--service", "xmpp://127.0.0.1:" .. port, "--domain", "example.test",
        "--username", "carol", "--password", "carol-pw", "--to", "bot@example.test/echo",
        "--body", "hello", "--expect", "echo: hello", "--timeout", tostring(peers.DRIVER_TIMEOUT) }
      local r = proc.start(argv):wait(peers.WAIT)
      local report = peers.report(nil, r, "sasl2_client.mjs")
      assert.equal(0, r.code, report)
      -- the first login: SCRAM in SASL2, bound inline, a token issued
      local mech1, jid1, bound1, token1 = r.out:match("ok login1 (%S+) (%S+) bound=(%a+) token=(%a+)")
      assert.equal("SCRAM-SHA-1", mech1, report)
      assert.matches("^carol@example.test/xmppjs%.%x+$", jid1, report)
      assert.same({ "yes", "yes" }, { bound1, token1 }, report)
      -- the second: the token (one round trip), the same installation's resource
      local mech2, jid2, bound2 = r.out:match("ok login2 (%S+) (%S+) bound=(%a+)")
      assert.equal("HT-SHA-256-NONE", mech2, report)
      assert.equal(jid1, jid2, report)
      assert.equal("yes", bound2, report)
      assert.truthy(r.out:find("ok reply2 ", 1, true), report)
      -- the token is kept for carol's account, server-side only
      assert.truthy(srv.store:get("fast", "carol"))
      bot:close()
      lxmpp.sleep(0.05)
    end)
  end)
end)
