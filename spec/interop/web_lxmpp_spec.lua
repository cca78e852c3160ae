-- Browser and Node clients against lxmpp's own server, as a new user runs
-- it: `lxmpp serve --http ... --static web --web-secure --muc ...` (the
-- program itself, bin/lxmpp), with the dictionary bot (examples/dictbot.lua)
-- logged in over TCP and an lxmpp client in a room. The peers are programs
-- nobody here wrote (spec/support/web_peers.lua): Converse.js in Debian's
-- headless Chromium, served by `lxmpp serve --static` from the same origin,
-- over WebSocket and over BOSH, and @xmpp/client under Node.js over
-- WebSocket. A missing Chromium, Node.js or npm package is a failure, never
-- a skip (`make deps`). LXMPP_WEB_SHOTS=DIR keeps Converse's screenshots;
-- the README's picture (docs/img/converse-lxmpp.png) comes from this run.
local compat = require "lxmpp.compat"
local lxmpp = require "lxmpp"
local pki = require "spec.support.pki"
local proc = require "spec.support.proc"
local peers = require "spec.support.web_peers"

local USERS = { alice = "alice-pw", bot = "bot-pw", carol = "carol-pw", dave = "dave-pw" }

local srv, serve_proc, bot

local function start_server()
  local p = pki.get()
  local argv = { proc.ROOT .. "/bin/lxmpp", "serve", "--domain", "example.test", "--listen", "127.0.0.1:0",
    "--http", "127.0.0.1:0", "--static", peers.WEB, "--web-secure", "--muc", "conference.example.test",
    "--cert", p.certs.good.cert, "--key", p.certs.good.key }
  for name, pw in pairs(USERS) do
    argv[#argv + 1] = "--user"
    argv[#argv + 1] = name .. ":" .. pw
  end
  serve_proc = proc.lua(argv)
  local c2s, http
  lxmpp.run(function()
    local out
    c2s, out = serve_proc:wait_output("listening: c2s 127%.0%.0%.1:(%d+)")
    assert(c2s, "lxmpp serve did not start:\n" .. tostring(out))
    http = assert(serve_proc:wait_output("listening: http 127%.0%.0%.1:(%d+)"))
    assert(serve_proc:wait_output("ready"), "lxmpp serve is not ready")
  end)
  local base = "http://127.0.0.1:" .. http
  srv = {
    port = compat.tointeger(tonumber(c2s)), ca = p.ca, muc = "conference.example.test",
    http_base = base, ws_url = "ws://127.0.0.1:" .. http .. "/xmpp-websocket",
    bosh_url = base .. "/http-bind",
    page_url = function(_, params) return base .. "/converse.html" .. peers.query(params) end,
    log = function() return "" end,
  }
end

-- alice and the bot in each other's roster, subscribed both ways, as two
-- people who added each other would be
local function befriend()
  lxmpp.run(function()
    local alice = peers.user_client(srv, "alice", USERS.alice)
    local botc = peers.user_client(srv, "bot", USERS.bot)
    assert(alice:roster_set("bot@example.test", "Dictionary bot", {}))
    assert(botc:roster_set("alice@example.test", "Alice", {}))
    -- each asks, the other approves the request it got (RFC 6121 §3.1)
    alice:subscribe("bot@example.test")
    lxmpp.sleep(0.2)
    botc:approve("alice@example.test")
    botc:subscribe("alice@example.test")
    lxmpp.sleep(0.2)
    alice:approve("bot@example.test")
    local function both(c, who)
      for _ = 1, 50 do
        local item = (c:roster_get() or {})[who]
        if item and item.subscription == "both" then return true end
        lxmpp.sleep(0.1)
      end
    end
    local ok = both(alice, "bot@example.test")
    alice:close()
    botc:close()
    assert(ok, "alice and the bot did not subscribe to each other")
  end)
end

describe("web clients against lxmpp serve (WebSocket, BOSH)", function()
  setup(function()
    peers.check()
    start_server()
    befriend()
    bot = peers.start_bot(srv)
  end)

  teardown(function()
    peers.stop(bot)
    if serve_proc then
      serve_proc:signal("INT")
      lxmpp.run(function() serve_proc:wait(10) end)
      serve_proc:kill()
      serve_proc:cleanup()
    end
  end)

  it("@xmpp/client over WebSocket logs in and gets the bot's answer", function()
    peers.xmpp_client(srv, srv.ws_url, "stanza", "stanza: a unit of XMPP")
  end)

  it("Converse.js over WebSocket, served by lxmpp serve --static: login, roster, the bot, a room", function()
    local keep = os.getenv("LXMPP_README_SHOT")   -- make readme-shot: docs/img/converse-lxmpp.png
    peers.converse(srv, "websocket", { params = { websocket_url = srv.ws_url }, word = "xmpp",
      expect = "xmpp: the Extensible Messaging", room = "ws-lounge", shot_name = "converse-lxmpp",
      keep_shot = keep ~= "" and keep or nil })
  end)

  it("Converse.js over BOSH: login, roster, the bot, a room", function()
    peers.converse(srv, "bosh", { params = { bosh_service_url = srv.bosh_url }, word = "jid",
      expect = "jid: a Jabber ID", room = "bosh-lounge", shot_name = "converse-lxmpp" })
  end)
end)
