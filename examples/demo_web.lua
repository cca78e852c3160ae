-- lxmpp web demo (`make demo-web`): chat with the dictionary bot from a
-- browser, nothing else to install.
--
--   1. starts lxmpp's embedded server on 127.0.0.1 with its web side: XMPP
--      over WebSocket (/xmpp-websocket), BOSH (/http-bind), XEP-0156
--      host-meta, and the web/ folder served from the same origin (the
--      Converse.js page that `make deps` installed under web/node_modules);
--      a chat room service, and demo accounts;
--   2. runs examples/dictbot.lua, the classic dictionary bot, as its own
--      process, in your roster already;
--   3. asks the bot a word over WebSocket, as the browser will, and prints
--      the answer;
--   4. prints the address to open in a browser, and keeps running until
--      Ctrl-C.
--
-- Environment: LXMPP_DEMO_HTTP_PORT (default 5280; 0 = any free port),
-- LXMPP_DEMO_EXIT=1 to stop after the scripted part (the test suite does).

local lxmpp = require "lxmpp"

local DOMAIN = "localhost"
local ACCOUNTS = { dictbot = "dictbot-secret", you = "you-secret" }

-- examples/demo_support.lua, beside this script wherever it is run from
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local demo = require "demo_support"
local say = demo.say

local WEB = demo.DIR .. "/../web"

local function start_server()
  local want = tonumber(os.getenv("LXMPP_DEMO_HTTP_PORT") or "5280") or 5280
  local function try(http)
    -- the web side on loopback counts as protected: nothing leaves the machine
    local srv = lxmpp.server({ domain = DOMAIN, listen = "127.0.0.1:0", http = "127.0.0.1:" .. http,
      static = WEB, web = { consider_secure = true }, muc = "conference." .. DOMAIN, users = ACCOUNTS })
    local ok, err = srv:start()
    return ok and srv, err
  end
  local srv, err = try(want)
  if not srv and want ~= 0 then
    say("(port %d is not available: %s; using a free port)", want, err)
    srv, err = try(0)
  end
  if not srv then error("cannot start the embedded server: " .. tostring(err), 0) end
  local ports = {}
  for _, a in ipairs(srv:addresses()) do ports[a.kind] = ports[a.kind] or a.port end
  return srv, ports.c2s, ports.http
end

local function start_bot(port)
  return demo.start_bot("dictbot@" .. DOMAIN, ACCOUNTS.dictbot, port, "you@" .. DOMAIN)
end

-- you and the bot in each other's roster, subscribed both ways
local function befriend(port)
  local function login(user)
    return assert(lxmpp.connect({ jid = user .. "@" .. DOMAIN .. "/setup", password = ACCOUNTS[user],
      host = "127.0.0.1", port = port, insecure = true }))
  end
  local you, bot = login("you"), login("dictbot")
  assert(you:roster_set("dictbot@" .. DOMAIN, "Dictionary bot", {}))
  you:subscribe("dictbot@" .. DOMAIN)
  lxmpp.sleep(0.2)
  bot:approve("you@" .. DOMAIN)
  bot:subscribe("you@" .. DOMAIN)
  lxmpp.sleep(0.2)
  you:approve("dictbot@" .. DOMAIN)
  lxmpp.sleep(0.2)
  you:close()
  bot:close()
end

lxmpp.run(function()
  local srv, port, http = start_server()
  local base = "http://127.0.0.1:" .. http
  local ws = "ws://127.0.0.1:" .. http .. "/xmpp-websocket"
  say("lxmpp %s: embedded server for %s; web side on %s", lxmpp.VERSION, DOMAIN, base)
  befriend(port)
  local bot = start_bot(port)

  -- what the browser will do: XMPP over WebSocket
  local you = assert(lxmpp.connect({ jid = "you@" .. DOMAIN .. "/demo", password = ACCOUNTS.you,
    url = ws, tls = "none" }))
  say("you@%s is online over WebSocket (%s)", DOMAIN, ws)
  local got = lxmpp.task.waiter("demo")
  you:on("message", function(m)
    local body = m:get_child_text("body")
    if body and lxmpp.jid.bare(m.attr.from or "") == "dictbot@" .. DOMAIN then got:wake(body) end
  end)
  you:send_presence()
  say("  you     > xmpp")
  you:send_message("dictbot@" .. DOMAIN, "xmpp")
  local t = lxmpp.core.timer(30, got)
  local answer = got:wait()
  t:stop()
  if not answer then error("the bot did not answer within 30 seconds", 0) end
  say("  dictbot < %s", answer)

  local page = base .. "/converse.html?websocket_url=" .. ws:gsub("[:/]", function(c)
    return ("%%%02X"):format(c:byte())
  end) .. "&jid=you%40" .. DOMAIN
  say("")
  say("Open this in a browser (Converse.js, served by lxmpp itself):")
  say("  %s", page)
  say("  log in as you@%s with password %s, then send a word to the Dictionary bot;", DOMAIN, ACCOUNTS.you)
  say("  rooms: conference.%s. BOSH is at %s/http-bind.", DOMAIN, base)

  if os.getenv("LXMPP_DEMO_EXIT") == "1" then
    you:send_message("dictbot@" .. DOMAIN, "quit")
    lxmpp.sleep(0.5)
    you:close()
    bot:close()
    srv:stop()
    say("demo finished")
    return
  end
  you:close()
  say("The server keeps running; Ctrl-C stops it (and the bot).")
end)
