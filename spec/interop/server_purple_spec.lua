-- The embedded server with Pidgin's engine, libpurple 2.14 (Debian's
-- libpurple-dev), through spec/support/purple_client.c, a headless client
-- this spec compiles into build/ (spec/support/purple.lua drives it: its
-- records on stdout, commands on stdin). STARTTLS is required; libpurple
-- verifies the certificate against the suite's test CA, put into its CA
-- pool, for the JID's domain, and logs in with the mechanisms it picks by
-- default (Debian builds it with Cyrus SASL). The other end of each
-- exchange is lxmpp: a client in this process, and the dictionary bot
-- (examples/dictbot.lua) as a program of its own. A missing libpurple
-- fails, never skips.
local pki = require "spec.support.pki"
local proc = require "spec.support.proc"
local purple = require "spec.support.purple"
local server = require "spec.support.serve"
local assert_clean = require "spec.support.clean"

local USERS = { alice = "alice-pw", bob = "bob-pw", bot = "bot-pw" }
local ALICE = "alice@example.test/pidgin"

local function bob_login(port)
  return assert(server.login(port, "bob", USERS.bob, "lx"))
end

describe("embedded server with libpurple (Pidgin's engine)", function()
  setup(function()
    purple.build()
  end)
  after_each(function()
    purple.kill_all()
    assert_clean()
  end)

  it("logs in over verified STARTTLS with libpurple's default SASL and fetches the roster", function()
    server.run_logged({ users = USERS }, function(srv, port, log)
      -- alice's roster, as another client of hers left it
      local a = assert(server.login(port, "alice", USERS.alice, "setup"))
      assert(a:roster_set("bob@example.test", "Bob B.", { "Friends" }))
      a:close()
      local p = purple.start(port, ALICE, USERS.alice)
      local on, text = p:expect("connected")
      assert.is_table(on, text)
      assert.equal("alice@example.test/pidgin", on[2])
      -- how it got in: STARTTLS, and the mechanism libpurple chose
      local sess = srv:session("alice@example.test", "pidgin")
      assert.is_table(sess)
      assert.is_true(sess.secure)
      -- (Debian builds it with Cyrus SASL, which has no channel binding
      -- here: the strongest mechanism without -PLUS)
      assert.equal("SCRAM-SHA-256", sess.mechanism)
      local b = p:expect("buddy-added", function(r) return r[2] == "bob@example.test" end)
      assert.is_table(b, p:text())
      p:send("roster")
      local item = p:expect("roster")
      assert.same({ "roster", "bob@example.test", "Bob B.", "Friends" }, item, p:text())
      assert.is_table(p:expect("roster-end"), p:text())
      local r = p:finish()
      assert.equal(0, r.code, r.text)
      local auth = server.logged(log, "authenticated as alice@example%.test")
      assert.truthy(auth, table.concat(log, "\n"))
      assert.equal(0, srv:stats().sessions)
    end)
  end)

  it("talks to the dictionary bot and to an lxmpp client, text kept as typed", function()
    local bot
    finally(function()
      if bot then bot:kill(); bot:cleanup() end
    end)
    server.run_logged({ users = USERS }, function(srv, port)
      bot = proc.lua({ proc.ROOT .. "/examples/dictbot.lua", "bot@example.test/dict", USERS.bot,
        "127.0.0.1", tostring(port) }, { "LXMPP_CAFILE=" .. pki.get().ca })
      local bob = bob_login(port)
      local got = server.collect(bob, "message")
      bob:send_presence()
      assert.is_true(server.until_true(function() return srv:session("bot@example.test", "dict") ~= nil end, 20))
      local p = purple.start(port, ALICE, USERS.alice)
      assert.is_table(p:expect("connected"), p:text())

      -- the bot: a word, its definition
      p:send("send bot@example.test Jabber")
      local def = p:expect("im", function(r) return r[2]:find("^bot@example%.test") end)
      assert.is_table(def, p:text())
      assert.equal("bot@example.test/dict", def[2])
      assert.equal("jabber: the original name of XMPP, created by Jeremie Miller in 1998", def[3])
      p:send("send bot@example.test quasar")
      def = p:expect("im", function(r) return r[2]:find("^bot@example%.test") end)
      assert.same({ "im", "bot@example.test/dict", "don't know about quasar" }, def, p:text())

      -- an lxmpp client: markup characters arrive as text, and the reply back
      p:send("send bob@example.test <b>fish & chips</b> \"now\"")
      assert.is_true(server.until_true(function() return #got > 0 end, 10), p:text())
      local m = got[1]
      assert.equal("alice@example.test/pidgin", m.attr.from)
      assert.equal("bob@example.test", m.attr.to)
      assert.equal("chat", m.attr.type)
      assert.equal('<b>fish & chips</b> "now"', m:get_child_text("body"))
      bob:send_message(m.attr.from, "re: " .. m:get_child_text("body") .. " <ok>", "chat")
      local back = p:expect("im", function(r) return r[2]:find("^bob@example%.test") end)
      assert.same({ "im", "bob@example.test/lx", 're: <b>fish & chips</b> "now" <ok>' }, back, p:text())

      local r = p:finish()
      assert.equal(0, r.code, r.text)
      bob:close()
    end)
  end)

  it("subscribes both ways: libpurple adds a contact who approves, and approves a request", function()
    server.run_logged({ users = USERS }, function(_, port)
      local bob = bob_login(port)
      local subs = {}
      bob:on("subscription", function(kind, from) subs[#subs + 1] = kind .. " " .. from end)
      bob:send_presence({ status = "at the desk" })
      local p = purple.start(port, ALICE, USERS.alice)
      assert.is_table(p:expect("connected"), p:text())

      -- libpurple asks: a roster item in a group, and subscribe
      p:send("add bob@example.test Friends")
      assert.is_true(server.until_true(function() return subs[1] ~= nil end, 10), p:text())
      assert.equal("subscribe alice@example.test", subs[1])
      assert(bob:approve("alice@example.test"))
      local pres = p:expect("presence", function(r) return r[2] == "bob@example.test" and r[3] == "available" end)
      assert.is_table(pres, p:text())
      assert.equal("at the desk", pres[4])

      -- bob asks back: libpurple shows the request, alice authorizes
      assert(bob:subscribe("alice@example.test"))
      local req = p:expect("authorize-request", function(r) return r[2] == "bob@example.test" end)
      assert.is_table(req, p:text())
      assert.equal("on-list", req[3])
      local alice_presence
      bob:on("presence", function(pr)
        if pr.attr.from == "alice@example.test/pidgin" and not pr.attr.type then alice_presence = pr end
      end)
      p:send("authorize bob@example.test")
      assert.is_true(server.until_true(function()
        for _, e in ipairs(subs) do if e == "subscribed alice@example.test" then return true end end
      end, 10), table.concat(subs, ", ") .. "\n" .. p:text())
      assert.is_true(server.until_true(function() return alice_presence ~= nil end, 10), p:text())
      assert.equal("libpurple here", alice_presence:get_child_text("status"))

      -- both ways now, in the rosters the server keeps: libpurple's item
      -- with its group, as libpurple asked for it
      local items = assert(bob:roster_get())
      assert.equal("both", items["alice@example.test"].subscription)
      p:send("roster")
      assert.same({ "roster", "bob@example.test", "", "Friends" }, p:expect("roster"), p:text())
      local a = assert(server.login(port, "alice", USERS.alice, "check"))
      local mine = assert(a:roster_get())["bob@example.test"]
      assert.equal("both", mine.subscription)
      assert.same({ "Friends" }, mine.groups)
      a:close()
      local r = p:finish()
      assert.equal(0, r.code, r.text)
      bob:close()
    end)
  end)

  it("refuses a wrong password with a clean authentication failure", function()
    server.run_logged({ users = USERS }, function(srv, port, log)
      local p = purple.start(port, ALICE, "not-the-password")
      local err = p:expect("connection-error")
      assert.is_table(err, p:text())
      -- libpurple tried every mechanism it could (five: spec/server_sasl_spec.lua)
      -- and ran out at the fifth failure, which it reads before the stream
      -- error that follows it (limits.sasl_attempts): what Pidgin shows a
      -- person, not a network error it would retry
      assert.same({ "connection-error", "authentication-failed", "Incorrect username or password" }, err, p:text())
      local r = p:finish(false)
      assert.equal(1, r.code, r.text)
      assert.is_nil(server.logged(log, "authenticated as"))
      assert.equal(0, srv:stats().sessions)
    end)
  end)

  it("fetches a contact's vCard", function()
    server.run_logged({ users = USERS }, function(_, port)
      local bob = bob_login(port)
      assert(bob:vcard_set({ fn = "Bob Builder", nickname = "bobby", url = "https://bob.example.test/" }))
      local p = purple.start(port, ALICE, USERS.alice)
      assert.is_table(p:expect("connected"), p:text())
      p:send("info bob@example.test")
      local info = p:expect("userinfo")
      assert.is_table(info, p:text())
      assert.equal("bob@example.test", info[2])
      assert.matches("Full Name: Bob Builder", info[3], 1, true)
      assert.matches("Nickname: bobby", info[3], 1, true)
      local r = p:finish()
      assert.equal(0, r.code, r.text)
      bob:close()
    end)
  end)

  it("joins a room, and talks there with an lxmpp client", function()
    local ROOM = "lobby@conference.example.test"
    server.run_logged({ users = USERS, muc = "conference.example.test" }, function(_, port)
      local bob = bob_login(port)
      local room = assert(bob:muc_join(ROOM, "bob"))
      local said = {}
      bob:on("muc-message", function(_, m) if not m.self then said[#said + 1] = m end end)
      local p = purple.start(port, ALICE, USERS.alice)
      assert.is_table(p:expect("connected"), p:text())
      p:send("join " .. ROOM .. " alice")
      local joined = p:expect("chat-joined")
      assert.same({ "chat-joined", ROOM }, joined, p:text())
      assert.is_table(p:expect("chat-user", function(r) return r[3] == "bob" end), p:text())
      assert.is_true(server.until_true(function() return room.occupants.alice ~= nil end, 10), p:text())
      p:send("say " .. ROOM .. " hello <room> & all")
      assert.is_true(server.until_true(function() return said[1] ~= nil end, 10), p:text())
      assert.equal("alice", said[1].nick)
      assert.equal("hello <room> & all", said[1].body)
      room:say("hi alice")
      local heard = p:expect("chat", function(r) return r[3] == "bob" end)
      assert.same({ "chat", ROOM, "bob", "hi alice" }, heard, p:text())
      local r = p:finish()
      assert.equal(0, r.code, r.text)
      bob:close()
    end)
  end)

  for _, case in ipairs({
    { cert = "wrongname", why = "does not name the domain" },
    { cert = "untrusted", why = "comes from a CA it does not trust" },
  }) do
    it("is refused by libpurple when the certificate " .. case.why, function()
      -- proves the CA pool and the name check are really used
      server.run_logged({ users = USERS, cert = case.cert }, function(srv, port, log)
        local p = purple.start(port, ALICE, USERS.alice)
        local ask = p:expect("request")
        assert.is_table(ask, p:text())
        assert.equal("SSL Certificate Verification", ask[3])
        assert.matches("example.test", ask[4], 1, true)
        local err = p:expect("connection-error")
        assert.is_table(err, p:text())
        assert.matches("^cert%-", err[2])
        local r = p:finish(false)
        assert.equal(1, r.code, r.text)
        assert.is_nil(p:find("connected"), r.text)
        assert.is_nil(server.logged(log, "authenticated as"))
        assert.equal(0, srv:stats().sessions)
      end)
    end)
  end
end)
