-- The web peers of web/ (issue 15's harness) against a real server first:
-- Prosody 0.12 with mod_websocket, mod_bosh and a MUC service on loopback
-- (spec/support/web_prosody.lua), the dictionary bot (examples/dictbot.lua,
-- an lxmpp client over TCP) and an lxmpp client in a room. Each peer is a
-- program nobody here wrote, run as its users run it:
--   - @xmpp/client over WebSocket asks the bot a word (web/xmpp_client.mjs);
--   - Converse.js in Debian's headless Chromium (web/converse_drive.mjs),
--     once over WebSocket and once over BOSH: logs in through its form,
--     finds the bot in its roster, asks it a word, joins a room and gets an
--     answer there from the lxmpp client; and once from another origin
--     (web/serve_static.mjs) over BOSH, through Prosody's CORS headers.
-- The same drivers are to be pointed at lxmpp's own server later.
-- LXMPP_WEB_SHOTS=DIR keeps Converse's screenshots there. A missing
-- Chromium, Node.js or web/node_modules is a failure, never a skip
-- (`make deps` installs them).
local lxmpp = require "lxmpp"
local proc = require "spec.support.proc"
local slow = require "spec.support.slow"
local web_prosody = require "spec.support.web_prosody"
local peers = require "spec.support.web_peers"

local srv, bot

-- The page's address on a static server of web/'s own (serve_static.mjs),
-- another origin than Prosody's; params as for srv:page_url.
local function other_origin(base, params)
  return base .. "converse.html" .. peers.query(params)
end

describe("web peers against Prosody (WebSocket, BOSH)", function()
  setup(function()
    peers.check()
    srv = web_prosody.start({
      users = { alice = "alice-pw", bot = "bot-pw", carol = "carol-pw", dave = "dave-pw" },
      rosters = { alice = { ["bot@example.test"] = "Dictionary bot" }, bot = { ["alice@example.test"] = "Alice" } },
    })
    bot = peers.start_bot(srv)
  end)

  teardown(function()
    peers.stop(bot)
    if srv then srv:stop() end
  end)

  it("@xmpp/client over WebSocket logs in and gets the bot's answer", function()
    peers.xmpp_client(srv, srv.ws_url, "stanza", "stanza: a unit of XMPP")
  end)

  -- lxmpp's own client over both: the client side of RFC 7395 and XEP-0206
  -- against another implementation
  for _, t in ipairs({ { "ws", "mod_websocket", "ws_url" }, { "bosh", "mod_bosh", "bosh_url" } }) do
    it("lxmpp.connect{ url = ... } logs in to " .. t[2] .. " and gets the bot's answer", function()
      lxmpp.run(function()
        local c = assert(lxmpp.connect({ jid = "dave@example.test/" .. t[1], password = "dave-pw", url = srv[t[3]],
          tls = "none", reconnect = false }))
        local got = lxmpp.task.waiter("answer")
        c:on("message", function(m)
          if m:get_child_text("body") then got:wake(m:get_child_text("body")) end
        end)
        c:send_message("bot@example.test", "jid")
        local timer = require("lxmpp.core").timer(20, got)
        local answer = got:wait()
        timer:stop()
        -- a request and its reply over the same transport
        local pong = c:request(lxmpp.stanza.iq({ type = "get", to = "example.test" }):tag("ping", { xmlns = "urn:xmpp:ping" }))
        c:close()
        assert.equal("jid: a Jabber ID", (answer or ""):match("^jid: a Jabber ID"))
        assert.truthy(pong)
      end)
    end)
  end

  it("Converse.js over WebSocket: login form, roster, chat with the bot, a room", function()
    peers.converse(srv, "websocket", { params = { websocket_url = srv.ws_url }, word = "xmpp",
      expect = "xmpp: the Extensible Messaging", room = "ws-lounge", shot_name = "converse-prosody" })
  end)

  it("Converse.js over BOSH: login form, roster, chat with the bot, a room", function()
    peers.converse(srv, "bosh", { params = { bosh_service_url = srv.bosh_url }, word = "jid",
      expect = "jid: a Jabber ID", room = "bosh-lounge", shot_name = "converse-prosody" })
  end)

  it("Converse.js served from another origin talks BOSH through the server's CORS headers", function()
    local static, base
    lxmpp.run(function()
      static = proc.start({ peers.NODE, peers.WEB .. "/serve_static.mjs" })
      base = static:wait_output("listening on (http://%S+)", 10 * slow.factor)
    end)
    local ok, err = pcall(function()
      assert(base, "serve_static.mjs did not start")
      assert.not_equal(srv.http_base .. "/", base)
      peers.converse(srv, "bosh from another origin", { url = other_origin(base, { bosh_service_url = srv.bosh_url }),
        word = "roster", expect = "roster: an XMPP contact list", shot_name = "converse-prosody" })
    end)
    static:kill()
    static:cleanup()
    assert(ok, err)
  end)
end)
