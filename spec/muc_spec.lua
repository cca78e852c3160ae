-- The MUC client (lua/lxmpp/plugins/muc.lua, muc_admin.lua) against the
-- embedded server's MUC service and against Prosody's mod_muc: the same
-- scenarios run on both.
local lxmpp = require "lxmpp"
local st = require "lxmpp.stanza"
local serve = require "spec.support.serve"
local prosody = require "spec.support.prosody"
local ev = require "spec.support.events"

local USERS = { alice = "alice-pw", bob = "bob-pw", carol = "carol-pw" }
local SERVICE = "conference.example.test"

local function scenarios(env)
  local n = 0
  local function room_name()
    n = n + 1
    return ("room%d-%s@%s"):format(n, env.name, SERVICE)
  end

  it("creates a room, tracks occupants with roles and affiliations, carries groupchat both ways", function()
    env.run(function(login)
      local a, b = login("alice"), login("bob")
      local rj = room_name()
      local room = assert(a:muc_join(rj, "Alice"))
      assert.is_true(room.created)
      assert.is_true(room.joined)
      assert.equal("owner", room.self.affiliation)
      assert.equal("moderator", room.self.role)
      local joined = ev.collect(a, "muc-occupant")
      local broom = assert(b:muc_join(rj, "Bob"))
      assert.is_false(broom.created)
      assert.equal("participant", broom.self.role)
      assert.equal("none", broom.self.affiliation)
      assert.equal("owner", broom.occupants.Alice.affiliation)    -- learned while joining
      assert.is_true(serve.until_true(function() return #joined == 1 end))
      assert.equal("joined", joined[1][3])
      assert.equal("Bob", joined[1][2].nick)
      assert.equal("participant", room.occupants.Bob.role)
      assert.equal("bob@example.test/r", room.occupants.Bob.jid)  -- a moderator sees real JIDs
      assert.is_nil(broom.occupants.Alice.jid)                    -- a participant does not
      -- groupchat both ways, with our own echo marked
      local got = ev.expect(b, "muc-message", function(_, m) return m.body == "hello all" end)
      assert.is_nil(got)                                         -- nothing sent yet
      lxmpp.spawn(function() lxmpp.sleep(0.05); room:say("hello all") end)
      got = ev.expect(b, "muc-message", function(_, m) return m.body == "hello all" end)
      assert.is_true(broom == got[1])
      assert.equal("Alice", got[2].nick)
      assert.is_false(got[2].self)
      assert.is_false(got[2].delayed)
      lxmpp.spawn(function() lxmpp.sleep(0.05); broom:say("hi Alice") end)
      got = ev.expect(b, "muc-message", function(_, m) return m.body == "hi Alice" end)
      assert.is_true(got[2].self)
      -- private message through the room
      lxmpp.spawn(function() lxmpp.sleep(0.05); broom:private("Alice", "psst") end)
      got = ev.expect(a, "muc-private", function(_, m) return m.body == "psst" end)
      assert.is_true(room == got[1])
      assert.equal("Bob", got[2].nick)
      -- subject
      lxmpp.spawn(function() lxmpp.sleep(0.05); room:set_subject("Today: specs") end)
      got = ev.expect(b, "muc-subject", function(_, s) return s == "Today: specs" end)
      assert.equal("Alice", got[3])
      assert.equal("Today: specs", broom.subject)
      assert.is_true(a:muc_room(rj) == room)
      a:close(); b:close()
    end)
  end)

  it("sends history as asked and marks it delayed", function()
    env.run(function(login)
      local a, c = login("alice"), login("carol")
      local rj = room_name()
      local room = assert(a:muc_join(rj, "Alice"))
      for i = 1, 3 do assert(room:say("line " .. i)) end
      assert(ev.expect(a, "muc-message", function(_, m) return m.body == "line 3" end))
      local seen = ev.collect(c, "muc-message")
      assert(c:muc_join(rj, "Carol", { history = { maxstanzas = 2 } }))
      ev.settle(0.3)
      local bodies = {}
      for _, e in ipairs(seen) do
        assert.is_true(e[2].delayed)
        bodies[#bodies + 1] = e[2].body
      end
      assert.same({ "line 2", "line 3" }, bodies)
      local c2 = login("carol", "two")
      local none = ev.collect(c2, "muc-message")
      assert(c2:muc_join(rj, "Carol2", { history = { maxstanzas = 0 } }))
      ev.settle(0.3)
      assert.equal(0, #none)
      a:close(); c:close(); c2:close()
    end)
  end)

  it("reports a nickname conflict on join and on nick change, and renames occupants", function()
    env.run(function(login)
      local a, b = login("alice"), login("bob")
      local rj = room_name()
      local room = assert(a:muc_join(rj, "Alice"))
      local r, msg, cond = b:muc_join(rj, "Alice")
      assert.is_nil(r)
      assert.equal("conflict", cond)
      assert.is_string(msg)
      assert.is_nil(b:muc_room(rj))                    -- nothing left behind
      local broom = assert(b:muc_join(rj, "Bob"))
      r, msg, cond = broom:change_nick("Alice")
      assert.is_nil(r)
      assert.is_string(msg)
      assert.equal("conflict", cond)
      assert.equal("Bob", broom.nick)
      assert(ev.expect(a, "muc-occupant", function(_, o, what) return what == "joined" and o.nick == "Bob" end, 0.5)
        or room.occupants.Bob)
      local renamed = ev.collect(a, "muc-occupant")
      assert.is_true(broom:change_nick("Robert"))
      assert.equal("Robert", broom.nick)
      assert.equal("Robert", broom.self.nick)
      assert.is_true(serve.until_true(function() return room.occupants.Robert ~= nil end))
      assert.is_nil(room.occupants.Bob)
      assert.is_true(serve.until_true(function() return #renamed > 0 end))
      assert.equal("nick", renamed[1][3])
      assert.equal("Bob", renamed[1][4].old_nick)
      -- the same nickname again is no change at all
      assert.is_true(broom:change_nick("Robert"))
      a:close(); b:close()
    end)
  end)

  it("configures a room through its form: password, members list, bad settings refused", function()
    env.run(function(login)
      local a, b = login("alice"), login("bob")
      local rj = room_name()
      local room = assert(a:muc_join(rj, "Alice"))
      local form = assert(room:get_config())
      assert.equal("http://jabber.org/protocol/muc#roomconfig", form.form_type)
      assert.is_not_nil(form.values["muc#roomconfig_roomname"] ~= nil or form.values["muc#roomconfig_persistentroom"])
      local r, _, cond = room:configure({ ["no#such_setting"] = "x" })
      assert.is_nil(r)
      assert.equal("bad-request", cond)
      local settings = { ["muc#roomconfig_roomname"] = "Secret room", ["muc#roomconfig_roomsecret"] = "s3cret" }
      for _, f in ipairs(form) do     -- Prosody has no separate switch: a secret protects the room
        if f.var == "muc#roomconfig_passwordprotectedroom" then settings[f.var] = true end
      end
      assert.is_true(room:configure(settings))
      r, _, cond = b:muc_join(rj, "Bob")
      assert.is_nil(r)
      assert.equal("not-authorized", cond)
      r, _, cond = b:muc_join(rj, "Bob", { password = "wrong" })
      assert.is_nil(r)
      assert.equal("not-authorized", cond)
      local broom = assert(b:muc_join(rj, "Bob", { password = "s3cret" }))
      assert.is_true(broom.joined)
      assert.is_true(room:set_affiliation("carol@example.test", "member", "welcome"))
      local members = assert(room:affiliations("member"))
      assert.equal(1, #members)
      assert.equal("carol@example.test", members[1].jid)
      -- misuse raises
      assert.has_error(function() room:set_affiliation("carol@example.test", "king") end)
      assert.has_error(function() room:configure("yes") end)
      a:close(); b:close()
    end)
  end)

  it("configures a room it creates, or leaves it locked; a second join is the same room", function()
    env.run(function(login)
      local a, b = login("alice"), login("bob")
      local rj = room_name()
      local room = assert(a:muc_join(rj, "Alice", { config = { ["muc#roomconfig_roomname"] = "Made at once" } }))
      assert.is_true(room.created)
      assert.equal("Made at once", assert(room:get_config()).values["muc#roomconfig_roomname"])
      assert.is_true(a:muc_join(rj, "Alice") == room)
      local r, _, cond = a:muc_join(rj, "Other")
      assert.is_nil(r)
      assert.equal("conflict", cond)
      -- config = false: locked until its owner configures it
      local locked = room_name()
      local lroom = assert(a:muc_join(locked, "Alice", { config = false }))
      assert.is_true(lroom.created)
      r, _, cond = b:muc_join(locked, "Bob", { timeout = 5 })
      assert.is_nil(r)
      assert.equal("item-not-found", cond)
      assert.is_true(lroom:configure())
      assert(b:muc_join(locked, "Bob"))
      a:close(); b:close()
    end)
  end)

  it("reports messages the room refuses", function()
    env.run(function(login)
      local a, b = login("alice"), login("bob")
      local rj = room_name()
      assert(a:muc_join(rj, "Alice", { config = { ["muc#roomconfig_changesubject"] = false } }))
      local broom = assert(b:muc_join(rj, "Bob"))
      lxmpp.spawn(function() lxmpp.sleep(0.05); broom:set_subject("mine now") end)
      local e = ev.expect(b, "muc-error")
      assert.is_true(e[1] == broom)
      assert.equal("forbidden", e[3])
      assert.is_true(broom.subject ~= "mine now")
      a:close(); b:close()
    end)
  end)

  it("kicks, bans and changes roles; the target learns why", function()
    env.run(function(login)
      local a, b, c = login("alice"), login("bob"), login("carol")
      local rj = room_name()
      local room = assert(a:muc_join(rj, "Alice"))
      local broom = assert(b:muc_join(rj, "Bob"))
      assert(c:muc_join(rj, "Carol"))
      assert.is_true(serve.until_true(function() return room.occupants.Carol and room.occupants.Bob end))
      -- a participant may not kick
      local r, _, cond = broom:kick("Carol")
      assert.is_nil(r)
      assert.is_true(cond == "forbidden" or cond == "not-allowed", cond)
      -- role change seen by everyone
      assert.is_true(room:set_role("Bob", "visitor", "quiet please"))
      assert.is_true(serve.until_true(function() return broom.self.role == "visitor" end))
      assert.is_true(serve.until_true(function() return room.occupants.Bob.role == "visitor" end))
      assert.is_true(room:set_role("Bob", "participant"))
      -- kick
      local gone = ev.collect(a, "muc-occupant")
      lxmpp.spawn(function() lxmpp.sleep(0.05); assert(room:kick("Bob", "flooding")) end)
      local left = ev.expect(b, "muc-left")
      assert.is_true(broom == left[1])
      assert.equal("kicked", left[2].reason)
      assert.equal("flooding", left[2].text)
      assert.is_false(broom.joined)
      assert.is_nil(b:muc_room(rj))
      assert.is_true(serve.until_true(function()
        for _, e in ipairs(gone) do if e[3] == "left" and e[2].nick == "Bob" then return e[4].reason == "kicked" end end
      end))
      assert.is_nil(room.occupants.Bob)
      -- ban, then the banned user cannot come back
      lxmpp.spawn(function() lxmpp.sleep(0.05); assert(room:ban("carol@example.test", "spam")) end)
      left = ev.expect(c, "muc-left")
      assert.equal("banned", left[2].reason)
      r, _, cond = c:muc_join(rj, "Carol")
      assert.is_nil(r)
      assert.equal("forbidden", cond)
      local outcasts = assert(room:affiliations("outcast"))
      assert.equal("carol@example.test", outcasts[1].jid)
      -- bob may come back after a kick
      assert(b:muc_join(rj, "Bob"))
      a:close(); b:close(); c:close()
    end)
  end)

  it("invites directly and through the room, and hears declines", function()
    env.run(function(login)
      local a, b = login("alice"), login("bob")
      local rj = room_name()
      local room = assert(a:muc_join(rj, "Alice"))
      lxmpp.spawn(function() lxmpp.sleep(0.05); room:invite("bob@example.test", "come in") end)
      local inv = ev.expect(b, "muc-invite")
      assert.equal(rj, inv[1].room)
      -- the inviter: alice's JID (Prosody shows her occupant JID instead)
      assert.is_true(inv[1].from:match("^alice@example%.test") ~= nil or inv[1].from:find(rj, 1, true) == 1)
      assert.equal("come in", inv[1].reason)
      assert.is_false(inv[1].direct)
      lxmpp.spawn(function() lxmpp.sleep(0.05); b:muc_decline(rj, "alice@example.test", "busy") end)
      local d = ev.expect(a, "muc-decline")
      assert.is_true(room == d[1])
      assert.equal("busy", d[2].reason)
      lxmpp.spawn(function() lxmpp.sleep(0.05); a:muc_invite("bob@example.test", rj, { reason = "direct", password = "pw" }) end)
      inv = ev.expect(b, "muc-invite")
      assert.equal(rj, inv[1].room)
      assert.is_true(inv[1].direct)
      assert.equal("pw", inv[1].password)
      assert.equal("alice@example.test/r", inv[1].from)
      a:close(); b:close()
    end)
  end)

  it("leaves; others see it; destroy tells every occupant", function()
    env.run(function(login)
      local a, b = login("alice"), login("bob")
      local rj = room_name()
      local room = assert(a:muc_join(rj, "Alice"))
      local broom = assert(b:muc_join(rj, "Bob"))
      assert.is_true(serve.until_true(function() return room.occupants.Bob ~= nil end))
      assert.is_true(broom:leave("bye"))
      assert.is_false(broom.joined)
      assert.is_nil(b:muc_room(rj))
      assert.is_true(serve.until_true(function() return room.occupants.Bob == nil end))
      broom = assert(b:muc_join(rj, "Bob"))
      assert.is_true(broom.joined)
      lxmpp.spawn(function() lxmpp.sleep(0.05); assert(room:destroy("closing", "other@" .. SERVICE)) end)
      local left = ev.expect(b, "muc-left")
      assert.equal("destroyed", left[2].reason)
      assert.equal("closing", left[2].text)
      assert.equal("other@" .. SERVICE, left[2].alternate)
      assert.is_true(serve.until_true(function() return a:muc_room(rj) == nil end))
      assert.is_false(room.joined)
      a:close(); b:close()
    end)
  end)

  it("joins every room again after a reconnection that lost the session", function()
    env.run(function(login)
      -- bob's sessions cannot be resumed: a lost link loses the session
      local a = login("alice")
      local b = login("bob", nil, { stream_management = { resume = false }, reconnect = { delay = 0.1 } })
      local rj = room_name()
      local room = assert(a:muc_join(rj, "Alice"))
      local broom = assert(b:muc_join(rj, "Bob", { status = "here" }))
      assert.is_true(serve.until_true(function() return room.occupants.Bob ~= nil end))
      -- a resumed session keeps its rooms: nothing is sent
      b:fire_user("reconnected", true)
      ev.settle(0.2)
      assert.is_true(broom.joined)
      -- bob's link drops: the server takes him out of the room, lxmpp's
      -- reconnection logs in on a new session, and the plugin joins again
      b.conn:abort()
      local re = ev.expect(b, "muc-rejoined", nil, 10)
      assert.is_true(broom == re[1])
      assert.is_true(re[2])
      assert.is_true(broom.joined)
      assert.equal("owner", broom.occupants.Alice.affiliation)
      assert.is_true(serve.until_true(function() return room.occupants.Bob ~= nil end))
      assert.equal("here", room.occupants.Bob.status)
      a:close(); b:close()
    end)
  end)

  it("ignores MUC-looking presence and messages from outside its rooms", function()
    env.run(function(login)
      local a, b = login("alice"), login("bob")
      local rj = room_name()
      local room = assert(a:muc_join(rj, "Alice"))
      local events = {}
      for _, e in ipairs({ "muc-message", "muc-occupant", "muc-left", "muc-invite", "muc-subject" }) do
        events[e] = ev.collect(a, e)
      end
      -- bob pretends to be an occupant, the room and an inviting room
      local fake = st.presence({ to = a.jid }):tag("x", { xmlns = "http://jabber.org/protocol/muc#user" })
        :tag("item", { affiliation = "owner", role = "moderator" }):up():tag("status", { code = "110" }):up()
      assert(b:send(fake))
      assert(b:send(st.presence({ to = a.jid, type = "unavailable" }):tag("x",
        { xmlns = "http://jabber.org/protocol/muc#user" }):tag("status", { code = "307" }):up()))
      assert(b:send(st.message({ to = a.jid, type = "groupchat" }, "fake groupchat")))
      assert(b:send(st.message({ to = a.jid, type = "groupchat" }):text_tag("subject", "fake")))
      assert(b:send(st.message({ to = a.jid }):tag("x", { xmlns = "http://jabber.org/protocol/muc#user" })
        :tag("invite", { from = "x@example.test" }):up()))                -- a user is no room
      assert(b:send(st.message({ to = a.jid }):tag("x", { xmlns = "jabber:x:conference", jid = "not a jid@@" })))
      ev.settle(0.3)
      for name, list in pairs(events) do assert.equal(0, #list, name) end
      assert.is_true(room.joined)
      assert.is_nil(room.occupants.r)
      assert.is_true(room.subject ~= "fake")
      a:close(); b:close()
    end)
  end)

  it("keeps the state of at most max_occupants occupants, ours always, and warns once; an occupant's avatar "
    .. "hash goes when it leaves", function()
    env.run(function(login)
      local a, b, c = login("alice"), login("bob"), login("carol")
      local logged = {}
      a.logger = function(level, msg) logged[#logged + 1] = level .. " " .. msg end
      local rj = room_name()
      assert.has_error(function() a:muc_join(rj, "Alice", { max_occupants = 0 }) end,
        "muc_join: max_occupants must be a positive integer")
      local room = assert(a:muc_join(rj, "Alice", { max_occupants = 2 }))
      assert.equal(room.self, room.occupants.Alice)
      local seen = ev.collect(a, "muc-occupant")
      b.vcard.hash = ("ab"):rep(20)                          -- bob's presence carries an avatar hash
      local broom = assert(b:muc_join(rj, "Bob"))
      assert.is_true(serve.until_true(function() return room.occupants.Bob ~= nil end))
      assert.is_true(serve.until_true(function() return a.vcard.hashes:get(rj .. "/Bob") ~= nil end))
      assert(c:muc_join(rj, "Carol"))
      ev.settle(0.3)
      assert.is_nil(room.occupants.Carol)                    -- the third one: not kept
      assert.equal(2, room.noccupants)
      assert.equal(1, #seen)                                 -- and no event for her
      assert.same({ "warn " .. rj .. ": more than 2 occupants: not keeping the state of new ones" }, logged)
      -- bob leaves: his state and his avatar hash go, and there is room again
      assert.is_true(broom:leave())
      assert.is_true(serve.until_true(function() return room.occupants.Bob == nil end))
      assert.is_nil(a.vcard.hashes:get(rj .. "/Bob"))
      assert.equal(1, room.noccupants)
      assert(c:send(st.presence({ to = rj .. "/Carol" }):text_tag("show", "away")))
      assert.is_true(serve.until_true(function() return room.occupants.Carol ~= nil end))
      assert.equal(2, room.noccupants)
      assert.equal(1, #logged)
      a:close(); b:close(); c:close()
    end)
  end)

  it("answers receipts of occupants' private messages (they see our presence), never of groupchat", function()
    env.run(function(login)
      local a, b = login("alice"), login("bob")
      local rj = room_name()
      local room = assert(a:muc_join(rj, "Alice"))
      assert(b:muc_join(rj, "Bob"))
      assert.is_true(serve.until_true(function() return room.occupants.Bob ~= nil end))
      local receipts = ev.collect(a, "receipt")
      local acks = ev.collect(a, "message")
      a:set_receipts{ request = true }
      assert(room:private("Bob", "psst"))                    -- bob has no roster entry for alice
      assert.is_true(serve.until_true(function() return #receipts == 1 end))
      assert.equal(rj .. "/Bob", receipts[1][2])
      -- a groupchat message asking for one gets none (XEP-0184 §5.3: NOT RECOMMENDED)
      assert(a:send(st.message({ to = rj, type = "groupchat", id = "g1" }, "all of you")
        :tag("request", { xmlns = "urn:xmpp:receipts" }):up()))
      ev.settle(0.4)
      for _, m in ipairs(acks) do
        local r = m[1]:get_child("received", "urn:xmpp:receipts")
        assert.is_true(r == nil or r.attr.id ~= "g1")
      end
      assert.equal(1, #receipts)
      a:close(); b:close()
    end)
  end)

  it("refuses misuse", function()
    env.run(function(login)
      local a = login("alice")
      assert.has_error(function() a:muc_join("no-node.example.test", "x") end)
      assert.has_error(function() a:muc_join("r@" .. SERVICE .. "/res", "x") end)
      assert.has_error(function() a:muc_join("r@" .. SERVICE, "") end)
      assert.has_error(function() a:muc_join("r@" .. SERVICE, "x", { history = { maxstanzas = -1 } }) end)
      assert.has_error(function() a:muc_join("r@" .. SERVICE, "x", { password = 5 }) end)
      assert.has_error(function() a:muc_invite("bob@example.test", "bad") end)
      -- a room that does not answer times out
      local r, _, cond = a:muc_join("room@nowhere.example.test", "x", { timeout = 0.5 })
      assert.is_nil(r)
      assert.is_string(cond)
      a:close()
    end)
  end)
end

describe("MUC client on the embedded server", function()
  scenarios({
    name = "lx",
    run = function(fn)
      serve.run({ users = USERS, muc = SERVICE }, function(_, port)
        fn(function(user, res, extra)
          local c = assert(serve.login(port, user, USERS[user], res, extra))
          assert(c:send_presence())
          return c
        end)
      end)
    end,
  })
end)

describe("MUC client on Prosody", function()
  local srv
  setup(function()
    srv = prosody.start({ users = USERS, components = { { SERVICE, "muc", "muc_room_default_public = false" } } })
  end)
  teardown(function() if srv then srv:stop() end end)
  scenarios({
    name = "pr",
    run = function(fn)
      local ok, err = pcall(lxmpp.run, function()
        fn(function(user, res, extra)
          local o = { jid = user .. "@example.test/" .. (res or "r"), password = USERS[user],
            host = "127.0.0.1", port = srv.port, cafile = srv.ca }
          for k, v in pairs(extra or {}) do o[k] = v end
          local c = assert(lxmpp.connect(o))
          assert(c:send_presence())
          return c
        end)
        require("lxmpp.net").abort_all()
      end)
      if not ok then error(err, 0) end
      require "spec.support.clean" ()
    end,
  })
end)
