-- lxmpp demo (`make demo`): nothing else to install.
--
--   1. starts lxmpp's embedded XMPP server on 127.0.0.1 (port 5222, or any
--      free port when 5222 is taken) with three demo accounts;
--   2. runs examples/dictbot.lua, the classic dictionary bot, against it as
--      its own process;
--   3. logs in as a scripted user, asks the bot three words and prints the
--      answers;
--   4. prints how to connect a desktop client (Gajim, Dino, Conversations...)
--      and keeps the server running until Ctrl-C.
--
-- Environment: LXMPP_DEMO_PORT (default 5222; 0 = any free port),
-- LXMPP_DEMO_EXIT=1 to stop after the conversation (the test suite does).

local lxmpp = require "lxmpp"

local DOMAIN = "localhost"
local ACCOUNTS = { dictbot = "dictbot-secret", user = "user-secret", you = "you-secret" }
local WORDS = { "xmpp", "jid", "unicorn" }

-- examples/demo_support.lua, beside this script wherever it is run from
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local demo = require "demo_support"
local say = demo.say

local function start_server()
  local want = tonumber(os.getenv("LXMPP_DEMO_PORT") or "5222") or 5222
  local srv = lxmpp.server({ domain = DOMAIN, listen = "127.0.0.1:" .. want, users = ACCOUNTS })
  local ok, err = srv:start()
  if not ok and want ~= 0 then
    say("(port %d is not available: %s; using a free port)", want, err)
    srv = lxmpp.server({ domain = DOMAIN, listen = "127.0.0.1:0", users = ACCOUNTS })
    ok, err = srv:start()
  end
  if not ok then error("cannot start the embedded server: " .. tostring(err), 0) end
  return srv, srv:addresses()[1].port
end

-- The bot runs as its own process, as a user would run it; its stdin is
-- a pipe we hold, and Ctrl-C reaches it as it reaches us.
local function start_bot(port)
  return demo.start_bot("dictbot@" .. DOMAIN, ACCOUNTS.dictbot, port, "user@" .. DOMAIN)
end

lxmpp.run(function()
  local srv, port = start_server()
  say("lxmpp %s: embedded server for %s listening on 127.0.0.1 port %d", lxmpp.VERSION, DOMAIN, port)
  say("accounts: dictbot@%s, user@%s, you@%s", DOMAIN, DOMAIN, DOMAIN)
  local bot = start_bot(port)

  -- a self-signed certificate was made at start: the demo accepts it
  local u = assert(lxmpp.connect({ jid = "user@" .. DOMAIN .. "/demo", password = ACCOUNTS.user,
    host = "127.0.0.1", port = port, insecure = true }))
  say("user@%s is online; asking the bot %d words (messages wait offline until the bot logs in)",
    DOMAIN, #WORDS)
  local answers = {}
  local waiter
  u:on("message", function(m)
    local body = m:get_child_text("body")
    if body and lxmpp.jid.bare(m.attr.from or "") == "dictbot@" .. DOMAIN then
      answers[#answers + 1] = body
      if waiter then waiter:wake() end
    end
  end)
  u:send_presence()
  for i, word in ipairs(WORDS) do
    say("  user    > %s", word)
    waiter = lxmpp.task.waiter("demo")
    u:send_message("dictbot@" .. DOMAIN, word)
    local t = lxmpp.core.timer(30, waiter)
    waiter:wait()
    t:stop()
    if not answers[i] then error("the bot did not answer within 30 seconds", 0) end
    say("  dictbot < %s", answers[i])
  end

  say("")
  say("Connect a desktop XMPP client (Gajim, Dino, Psi...) to talk to the bot yourself:")
  say("  account  you@%s   password %s", DOMAIN, ACCOUNTS.you)
  say("  server   127.0.0.1   port %d   (STARTTLS; accept the self-signed certificate)", port)
  say("  then send a word to dictbot@%s", DOMAIN)

  if os.getenv("LXMPP_DEMO_EXIT") == "1" then
    u:send_message("dictbot@" .. DOMAIN, "quit")   -- the bot's owner asks it to leave
    lxmpp.sleep(0.5)
    u:close()
    bot:close()
    srv:stop()
    say("demo finished")
    return
  end
  u:close()
  say("The server keeps running; Ctrl-C stops it (and the bot).")
end)
