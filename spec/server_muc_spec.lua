-- The embedded server's MUC service (lxmpp.server.muc), driven through a fake
-- server: route() records what the service sends, a memory store keeps
-- persistent rooms. Each exchange is transcript-like: deliver a stanza,
-- look at what came out.

local st = require "lxmpp.stanza"
local muc = require "lxmpp.server.muc"
local mh = require "spec.support.muc_harness"

local NS_MUC, NS_USER, NS_ADMIN, NS_OWNER, NS_X = mh.NS_MUC, mh.NS_USER, mh.NS_ADMIN, mh.NS_OWNER, mh.NS_X
local SERVICE, ROOM, OWNER, admin_query = mh.SERVICE, mh.ROOM, mh.OWNER, mh.admin_query
local memory_store, harness, user_x, codes, item = mh.memory_store, mh.harness, mh.user_x, mh.codes, mh.item
local only, to, error_condition = mh.only, mh.to, mh.error_condition
local presence, groupchat, iq, submit = mh.presence, mh.groupchat, mh.iq, mh.submit
local configured_room, join = mh.configured_room, mh.join

describe("lxmpp.server.muc", function ()
  describe("creating a room", function ()
    it("creates a locked room on first join: 201 and 110 on the owner's own presence, last", function ()
      local h = harness()
      local out = h:send(presence(OWNER, ROOM .. "/boss"))
      local pres = {}
      for _, s in ipairs(out) do if s.name == "presence" then pres[#pres + 1] = s end end
      assert.equal(1, #pres)
      local p = pres[1]
      assert.equal(ROOM .. "/boss", p.attr.from)
      assert.equal(OWNER, p.attr.to)
      assert.is_true(codes(p)["201"] and codes(p)["110"])
      assert.same({ affiliation = "owner", role = "moderator", jid = OWNER }, item(p).attr)
      -- then the (empty) subject, last
      assert.equal("", out[#out]:get_child_text("subject"))
      -- locked: nobody else may enter yet
      local got = join(h, "bob@localhost/a", "bob")
      assert.equal("item-not-found", (error_condition(got[1])))
    end)

    it("unlocks on an empty submitted form (an instant room)", function ()
      local h = harness()
      h:send(presence(OWNER, ROOM .. "/boss"))
      local out = h:send(iq(OWNER, "set", ROOM, "<query xmlns='" .. NS_OWNER .. "'><x xmlns='" .. NS_X
        .. "' type='submit'/></query>"))
      assert.equal("result", out[1].attr.type)
      local got = join(h, "bob@localhost/a", "bob")
      local self_p = got[#got - 1]
      assert.is_true(codes(self_p)["110"])
      assert.is_nil(codes(self_p)["201"])
      assert.same({ affiliation = "none", role = "participant", jid = "bob@localhost/a" }, item(self_p).attr)
    end)

    it("destroys a new room whose owner cancels the configuration", function ()
      local h = harness()
      h:send(presence(OWNER, ROOM .. "/boss"))
      local out = h:send(iq(OWNER, "set", ROOM, "<query xmlns='" .. NS_OWNER .. "'><x xmlns='" .. NS_X
        .. "' type='cancel'/></query>"))
      local p = only(out, function (s) return s.name == "presence" end)
      assert.equal("unavailable", p.attr.type)
      assert.is_not_nil(user_x(p):get_child("destroy"))
      assert.is_nil(h.host.rooms[ROOM])
    end)

    it("lets only local users create rooms by default, and bounds the number of rooms", function ()
      local h = harness({ max_rooms = 1 })
      local out = h:send(presence("eve@elsewhere.example/x", ROOM .. "/eve"))
      assert.equal("not-allowed", (error_condition(out[1])))
      h:send(presence(OWNER, ROOM .. "/boss"))
      out = h:send(presence(OWNER, "other@" .. SERVICE .. "/boss"))
      assert.same({ "resource-constraint", "wait" }, { error_condition(out[1]) })
      local h2 = harness({ create = "anyone" })
      out = h2:send(presence("eve@elsewhere.example/x", ROOM .. "/eve"))
      assert.is_true(codes(out[1])["201"])
    end)

    it("bounds the rooms one bare JID created (max_rooms_created), the rest of max_rooms stays open", function ()
      local h = harness({ max_rooms_created = 2 })
      local function room(i) return ("r%d@%s"):format(i, SERVICE) end
      configured_room(h, {}, room(1))
      configured_room(h, { persistentroom = "1" }, room(2))
      local out = h:send(presence(OWNER, room(3) .. "/boss"))
      assert.same({ "resource-constraint", "wait" }, { error_condition(out[1]) })
      assert.matches("max_rooms_created", out[1]:get_child("error"):get_child_text("text",
        "urn:ietf:params:xml:ns:xmpp-stanzas"))
      assert.is_nil(h.host.rooms[room(3)])
      -- another session of the same account counts the same; other accounts create
      out = h:send(presence("owner@localhost/phone", room(3) .. "/boss2"))
      assert.equal("resource-constraint", (error_condition(out[1])))
      assert.is_true(codes(h:send(presence("bob@localhost/a", room(4) .. "/bob"))[1])["201"])
      -- a temporary room that empties, and a destroyed one, free their places
      h:send("<presence from='" .. OWNER .. "' to='" .. room(1) .. "/boss' type='unavailable'/>")
      assert.is_nil(h.host.rooms[room(1)])
      assert.is_true(codes(h:send(presence(OWNER, room(5) .. "/boss"))[1])["201"])
      h:send(iq(OWNER, "set", room(2), "<query xmlns='" .. NS_OWNER .. "'><destroy/></query>"))
      assert.is_nil(h.host.rooms[room(2)])
      assert.is_true(codes(h:send(presence(OWNER, room(6) .. "/boss"))[1])["201"])
    end)

    it("counts a persistent room against its creator across a restart", function ()
      local store = memory_store()
      local h = harness({ max_rooms_created = 1 }, store)
      configured_room(h, { persistentroom = "1" })
      h:send("<presence from='" .. OWNER .. "' to='" .. ROOM .. "/boss' type='unavailable'/>")
      assert.is_not_nil(h.host.rooms[ROOM])
      h.host:close()
      local h2 = harness({ max_rooms_created = 1 }, store)
      assert.is_not_nil(h2.host.rooms[ROOM])
      local out = h2:send(presence(OWNER, "other@" .. SERVICE .. "/boss"))
      assert.equal("resource-constraint", (error_condition(out[1])))
    end)

    it("forgets a removed account as a room's creator in storage too", function ()
      -- the creator handed the room over and dropped its own affiliation,
      -- then its account went: a new account of that name, after a
      -- restart, is not charged for the room
      local store = memory_store()
      local h = harness({ max_rooms_created = 1 }, store)
      configured_room(h, { persistentroom = "1" })
      local out = h:send(iq(OWNER, "set", ROOM, "<query xmlns='" .. NS_ADMIN ..
        "'><item affiliation='owner' jid='bob@localhost'/></query>"))
      assert.equal("result", out[1].attr.type)
      h:send(iq(OWNER, "set", ROOM, "<query xmlns='" .. NS_ADMIN .. "'><item affiliation='none' jid='owner@localhost'/></query>"))
      h:send("<presence from='" .. OWNER .. "' to='" .. ROOM .. "/boss' type='unavailable'/>")
      assert.is_nil(h.host.rooms[ROOM].affiliations["owner@localhost"])
      h.host:account_removed("owner@localhost")
      h.host:close()
      local h2 = harness({ max_rooms_created = 1 }, store)
      assert.is_not_nil(h2.host.rooms[ROOM])
      assert.is_nil(h2.host.created["owner@localhost"])
      out = h2:send(presence(OWNER, "other@" .. SERVICE .. "/boss"))
      assert.equal("presence", out[1].name)
      assert.is_nil(out[1].attr.type, "the room was not created: " .. tostring(out[1]))
    end)

    it("bounds the rooms one bare JID is in (max_rooms_joined), its sessions on one nickname once", function ()
      local h = harness({ max_rooms_joined = 2 })
      local rooms = {}
      for i = 1, 3 do             -- persistent rooms their owner left
        rooms[i] = ("r%d@%s"):format(i, SERVICE)
        configured_room(h, { persistentroom = "1" }, rooms[i])
        h:send("<presence from='" .. OWNER .. "' to='" .. rooms[i] .. "/boss' type='unavailable'/>")
      end
      assert.is_nil(h.host.joined["owner@localhost"])
      join(h, "bob@localhost/a", "bob", nil, rooms[1])
      join(h, "bob@localhost/b", "bob", nil, rooms[1])        -- one occupant, two sessions
      assert.equal(1, h.host.joined["bob@localhost"])
      join(h, "bob@localhost/a", "bob", nil, rooms[2])
      assert.equal(2, h.host.joined["bob@localhost"])
      local _, out = join(h, "bob@localhost/c", "bob", nil, rooms[3])
      assert.same({ "resource-constraint", "wait" }, { error_condition(out[1]) })
      assert.matches("max_rooms_joined", out[1]:get_child("error"):get_child_text("text",
        "urn:ietf:params:xml:ns:xmpp-stanzas"))
      assert.is_nil(h.host.rooms[rooms[3]].occupants.bob)
      -- a new room would count too: creating it is refused, and it is not kept
      _, out = join(h, "bob@localhost/a", "bob", nil, "fresh@" .. SERVICE)
      assert.equal("resource-constraint", (error_condition(out[1])))
      assert.is_nil(h.host.rooms["fresh@" .. SERVICE])
      -- leaving (every session) and being kicked make room
      h:send("<presence from='bob@localhost/a' to='" .. rooms[1] .. "/bob' type='unavailable'/>")
      assert.equal(2, h.host.joined["bob@localhost"])           -- bob/b is still there
      h:send("<presence from='bob@localhost/b' to='" .. rooms[1] .. "/bob' type='unavailable'/>")
      assert.equal(1, h.host.joined["bob@localhost"])
      join(h, "bob@localhost/a", "bob", nil, rooms[3])
      assert.equal(2, h.host.joined["bob@localhost"])
      join(h, OWNER, "boss", nil, rooms[3])
      h:send(iq(OWNER, "set", rooms[3], admin_query .. "<item nick='bob' role='none'/></query>"))
      assert.equal(1, h.host.joined["bob@localhost"])
      h:send(iq(OWNER, "set", rooms[2], "<query xmlns='" .. NS_OWNER .. "'><destroy/></query>"))
      assert.is_nil(h.host.joined["bob@localhost"])
    end)

    it("refuses a presence it would keep larger than max_presence_bytes, keeping the last one", function ()
      local h = harness({ max_presence_bytes = 512 })
      local big = "<status>" .. ("s"):rep(600) .. "</status><x xmlns='" .. NS_MUC .. "'/>"
      local out = h:send(presence(OWNER, ROOM .. "/boss", big))
      assert.same({ "policy-violation", "modify" }, { error_condition(out[1]) })
      assert.matches("max_presence_bytes", out[1]:get_child("error"):get_child_text("text",
        "urn:ietf:params:xml:ns:xmpp-stanzas"))
      assert.is_nil(h.host.rooms[ROOM])
      assert.is_nil(h.host.created["owner@localhost"])
      configured_room(h)
      join(h, "bob@localhost/a", "bob", "<status>here</status><x xmlns='" .. NS_MUC .. "'/>")
      out = h:send(presence("bob@localhost/a", ROOM .. "/bob", "<status>" .. ("s"):rep(600) .. "</status>"))
      assert.equal(1, #out)
      assert.equal("policy-violation", (error_condition(out[1])))
      local occ = h.host.rooms[ROOM].occupants.bob
      assert.equal("here", occ.presence["bob@localhost/a"]:get_child_text("status"))
      -- a nickname change carrying it too
      out = h:send(presence("bob@localhost/a", ROOM .. "/robert", "<status>" .. ("s"):rep(600) .. "</status>"))
      assert.equal("policy-violation", (error_condition(out[1])))
      assert.is_not_nil(h.host.rooms[ROOM].occupants.bob)
      -- what fits goes through
      out = h:send(presence("bob@localhost/a", ROOM .. "/bob", "<status>" .. ("s"):rep(300) .. "</status>"))
      for _, s in ipairs(out) do assert.not_equal("error", s.attr.type) end
      assert.equal(("s"):rep(300), occ.presence["bob@localhost/a"]:get_child_text("status"))
    end)

    it("refuses a join without a nickname, and invisible or unpreparable nicknames", function ()
      local h = harness()
      local out = h:send(presence(OWNER, ROOM))
      assert.equal("jid-malformed", (error_condition(out[1])))
      out = h:send(presence(OWNER, ROOM .. "/   "))
      assert.equal("not-acceptable", (error_condition(out[1])))
      assert.is_nil(h.host.rooms[ROOM])
      out = h:send(presence(OWNER, ROOM .. "/" .. ("n"):rep(1024)))
      assert.equal("jid-malformed", (error_condition(out[1])))
      out = h:send(st.presence({ from = OWNER, to = ROOM .. "/a\238\128\128b" })) -- private use: prohibited
      assert.equal("jid-malformed", (error_condition(out[1])))
      out = h:send(presence(OWNER, ROOM .. "/" .. ("n"):rep(1023)))
      assert.is_true(codes(out[1])["110"])
    end)
  end)

  describe("occupants", function ()
    local h
    before_each(function ()
      h = harness()
      configured_room(h)
    end)

    it("sends a newcomer everyone's presence, then its own (110) last, then the subject", function ()
      join(h, "bob@localhost/a", "bob")
      local got, all = join(h, "carol@localhost/c", "carol",
        "<x xmlns='" .. NS_MUC .. "'/><show>away</show><status>out</status>")
      local froms = {}
      for _, s in ipairs(got) do froms[#froms + 1] = s.attr.from end
      assert.equal(ROOM .. "/carol", froms[#froms - 1])
      assert.is_true(codes(got[#got - 1])["110"])
      assert.equal("away", got[#got - 1]:get_child_text("show"))
      assert.is_not_nil(got[#got]:get_child("subject"))
      local seen = {}
      for i = 1, #got - 2 do seen[got[i].attr.from] = item(got[i]).attr end
      assert.same({ affiliation = "owner", role = "moderator" }, seen[ROOM .. "/boss"])
      assert.same({ affiliation = "none", role = "participant" }, seen[ROOM .. "/bob"])
      -- the others see carol; the moderator sees her real JID, bob does not
      local to_boss = only(to(all, OWNER), function () return true end)
      assert.equal("carol@localhost/c", item(to_boss).attr.jid)
      local to_bob = only(to(all, "bob@localhost/a"), function () return true end)
      assert.is_nil(item(to_bob).attr.jid)
      assert.equal("out", to_bob:get_child_text("status"))
      assert.is_nil(to_bob:get_child("x", NS_MUC)) -- the client's join element is not reflected
    end)

    it("refuses a nickname in use by someone else (409 conflict)", function ()
      join(h, "bob@localhost/a", "bob")
      local got = join(h, "mallory@localhost/m", "bob")
      assert.same({ "conflict", "cancel" }, { error_condition(got[1]) })
    end)

    it("lets the same bare JID join one nickname from two sessions", function ()
      join(h, "bob@localhost/a", "bob")
      local got, all = join(h, "bob@localhost/b", "bob")
      assert.is_true(codes(got[#got - 1])["110"])
      -- messages to bob reach both sessions
      local out = h:send(groupchat(OWNER, "hi"))
      assert.equal(1, #to(out, "bob@localhost/a"))
      assert.equal(1, #to(out, "bob@localhost/b"))
      assert.is_true(#all >= #got)
      -- one session leaving keeps bob in the room
      out = h:send("<presence type='unavailable' from='bob@localhost/a' to='" .. ROOM .. "/bob'/>")
      assert.equal(1, #to(out, "bob@localhost/a"))
      assert.equal("unavailable", to(out, "bob@localhost/a")[1].attr.type)
      assert.is_not_nil(h.host.rooms[ROOM].occupants.bob)
      out = h:send(groupchat(OWNER, "still there?"))
      assert.equal(0, #to(out, "bob@localhost/a"))
      assert.equal(1, #to(out, "bob@localhost/b"))
    end)

    it("changes nicknames with 303 then the new presence, 110 for the occupant", function ()
      join(h, "bob@localhost/a", "bob")
      local out = h:send(presence("bob@localhost/a", ROOM .. "/robert", ""))
      local mine = to(out, "bob@localhost/a")
      assert.equal(2, #mine)
      assert.equal("unavailable", mine[1].attr.type)
      assert.equal(ROOM .. "/bob", mine[1].attr.from)
      assert.is_true(codes(mine[1])["303"] and codes(mine[1])["110"])
      assert.equal("robert", item(mine[1]).attr.nick)
      assert.equal(ROOM .. "/robert", mine[2].attr.from)
      assert.is_true(codes(mine[2])["110"])
      local boss = to(out, OWNER)
      assert.is_true(codes(boss[1])["303"])
      assert.is_nil(codes(boss[1])["110"])
      -- and into a nickname in use: conflict
      out = h:send(presence("bob@localhost/a", ROOM .. "/boss", ""))
      assert.equal("conflict", (error_condition(out[1])))
    end)

    it("tells everyone when an occupant leaves, with its status, and ignores non-occupants", function ()
      join(h, "bob@localhost/a", "bob")
      local out = h:send("<presence type='unavailable' from='bob@localhost/a' to='" .. ROOM
        .. "/bob'><status>bye</status></presence>")
      local to_boss = only(to(out, OWNER), function () return true end)
      assert.equal("unavailable", to_boss.attr.type)
      assert.equal("bye", to_boss:get_child_text("status"))
      assert.same({ affiliation = "none", role = "none", jid = "bob@localhost/a" }, item(to_boss).attr)
      local self_p = only(to(out, "bob@localhost/a"), function () return true end)
      assert.is_true(codes(self_p)["110"])
      assert.equal("bob@localhost/a", item(self_p).attr.jid) -- one's own JID is always shown
      out = h:send("<presence type='unavailable' from='bob@localhost/a' to='" .. ROOM .. "/bob'/>")
      assert.same({}, out)
      -- probes and subscriptions are not joins
      out = h:send("<presence type='probe' from='bob@localhost/a' to='" .. ROOM .. "/bob'/>")
      assert.same({}, out)
    end)

    it("removes an occupant whose client bounces the room's stanzas (ghost)", function ()
      join(h, "bob@localhost/a", "bob")
      local out = h:send("<message type='error' from='bob@localhost/a' to='" .. ROOM
        .. "/boss'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>")
      assert.is_true(codes(to(out, OWNER)[1])["333"])
      assert.is_nil(h.host.rooms[ROOM].occupants.bob)
    end)

    it("passes a presence change to everyone", function ()
      join(h, "bob@localhost/a", "bob")
      local out = h:send(presence("bob@localhost/a", ROOM .. "/bob", "<show>dnd</show>"))
      assert.equal("dnd", to(out, OWNER)[1]:get_child_text("show"))
      assert.is_true(codes(to(out, "bob@localhost/a")[1])["110"])
    end)
  end)

  describe("messages", function ()
    local h
    before_each(function ()
      h = harness()
      configured_room(h)
      join(h, "bob@localhost/a", "bob")
    end)

    it("broadcasts groupchat from room/nick to every occupant, sender included", function ()
      local out = h:send(groupchat("bob@localhost/a", "hello"))
      assert.equal(2, #out)
      for _, m in ipairs(out) do
        assert.equal(ROOM .. "/bob", m.attr.from)
        assert.equal("groupchat", m.attr.type)
        assert.equal("hello", m:get_child_text("body"))
        assert.equal("g1", m.attr.id)
      end
    end)

    it("refuses groupchat from non-occupants (not-acceptable)", function ()
      local out = h:send(groupchat("carol@localhost/c", "let me in"))
      assert.equal(1, #out)
      assert.equal("carol@localhost/c", out[1].attr.to)
      assert.same({ "not-acceptable", "modify" }, { error_condition(out[1]) })
    end)

    it("refuses non-groupchat messages to the room and groupchat to an occupant (bad-request)", function ()
      local out = h:send("<message from='bob@localhost/a' to='" .. ROOM .. "' type='chat'><body>x</body></message>")
      assert.equal("bad-request", (error_condition(out[1])))
      out = h:send(groupchat("bob@localhost/a", "x", ROOM .. "/boss"))
      assert.equal("bad-request", (error_condition(out[1])))
    end)

    it("answers a message to a room that does not exist with item-not-found", function ()
      local out = h:send(groupchat("bob@localhost/a", "x", "nowhere@" .. SERVICE))
      assert.equal("item-not-found", (error_condition(out[1])))
    end)

    it("relays private messages through room/nick, marked with muc#user", function ()
      local out = h:send("<message from='bob@localhost/a' to='" .. ROOM
        .. "/boss' type='chat' id='p1'><body>psst</body></message>")
      local m = only(out, function () return true end)
      assert.equal(OWNER, m.attr.to)
      assert.equal(ROOM .. "/bob", m.attr.from)
      assert.equal("psst", m:get_child_text("body"))
      assert.is_not_nil(user_x(m))
      out = h:send("<message from='bob@localhost/a' to='" .. ROOM .. "/nobody' type='chat'><body>x</body></message>")
      assert.equal("item-not-found", (error_condition(out[1])))
      out = h:send("<message from='carol@localhost/c' to='" .. ROOM .. "/boss' type='chat'><body>x</body></message>")
      assert.equal("not-acceptable", (error_condition(out[1])))
    end)

    it("lets only moderators change the subject unless changesubject is on", function ()
      local subject = "<message from='%s' to='" .. ROOM .. "' type='groupchat'><subject>%s</subject></message>"
      local out = h:send(subject:format("bob@localhost/a", "mine"))
      assert.same({ "forbidden", "auth" }, { error_condition(out[1]) })
      out = h:send(subject:format(OWNER, "Welcome"))
      assert.equal(2, #out)
      assert.equal("Welcome", out[1]:get_child_text("subject"))
      assert.equal(ROOM .. "/boss", out[1].attr.from)
      h:send(iq(OWNER, "set", ROOM, submit({ changesubject = "1" })))
      out = h:send(subject:format("bob@localhost/a", "ours"))
      assert.equal(2, #out)
      -- newcomers get the subject after the history, from whoever set it
      h:send(groupchat("bob@localhost/a", "before carol"))
      local got = join(h, "carol@localhost/c", "carol")
      assert.equal("ours", got[#got]:get_child_text("subject"))
      assert.equal(ROOM .. "/bob", got[#got].attr.from)
      assert.equal("before carol", got[#got - 1]:get_child_text("body"))
    end)

    it("obeys allowpm", function ()
      h:send(iq(OWNER, "set", ROOM, submit({ allowpm = "moderators" })))
      local pm = "<message from='%s' to='" .. ROOM .. "/%s' type='chat'><body>x</body></message>"
      local out = h:send(pm:format("bob@localhost/a", "boss"))
      assert.same({ "forbidden", "auth" }, { error_condition(out[1]) })
      out = h:send(pm:format(OWNER, "bob"))
      assert.equal("bob@localhost/a", out[1].attr.to)
      h:send(iq(OWNER, "set", ROOM, submit({ allowpm = "none" })))
      out = h:send(pm:format(OWNER, "bob"))
      assert.equal("forbidden", (error_condition(out[1])))
    end)

    it("forwards mediated invitations from the room", function ()
      local out = h:send("<message from='bob@localhost/a' to='" .. ROOM .. "'><x xmlns='" .. NS_USER
        .. "'><invite to='dave@localhost'><reason>join us</reason></invite></x></message>")
      local m = only(out, function () return true end)
      assert.equal("dave@localhost", m.attr.to)
      assert.equal(ROOM, m.attr.from)
      local inv = user_x(m):get_child("invite")
      assert.equal("bob@localhost/a", inv.attr.from)
      assert.equal("join us", inv:get_child_text("reason"))
      -- and dave's answer goes back to bob
      out = h:send("<message from='dave@localhost/d' to='" .. ROOM .. "'><x xmlns='" .. NS_USER
        .. "'><decline to='bob@localhost/a'><reason>busy</reason></decline></x></message>")
      m = only(out, function () return true end)
      assert.equal("bob@localhost/a", m.attr.to)
      assert.equal(ROOM, m.attr.from)
      local decline = user_x(m):get_child("decline")
      assert.equal("dave@localhost", decline.attr.from)
      assert.equal("busy", decline:get_child_text("reason"))
      -- invitations from outside the room are refused
      out = h:send("<message from='eve@localhost/e' to='" .. ROOM .. "'><x xmlns='" .. NS_USER
        .. "'><invite to='dave@localhost'/></x></message>")
      assert.equal("not-acceptable", (error_condition(out[1])))
    end)

    -- issue 13: a decline is relayed from the room's address, so the room
    -- relays only the one answer to an invitation it forwarded itself
    local function invite(from, invitee)
      return h:send("<message from='" .. from .. "' to='" .. ROOM .. "'><x xmlns='" .. NS_USER
        .. "'><invite to='" .. invitee .. "'/></x></message>")
    end
    local function decline(from, inviter, body)
      return h:send("<message from='" .. from .. "' to='" .. ROOM .. "'><x xmlns='" .. NS_USER
        .. "'><decline" .. (inviter and (" to='" .. inviter .. "'") or "") .. "><reason>" .. (body or "no")
        .. "</reason></decline></x></message>")
    end

    it("relays a decline only from an invitee, to its inviter, once", function ()
      -- nobody invited eve: her "decline" to carol is not relayed
      local out = decline("eve@remote.example/e", "carol@localhost", "buy cheap pills")
      assert.equal(1, #out)
      assert.equal("eve@remote.example/e", out[1].attr.to)
      assert.same({ "not-acceptable", "modify" }, { error_condition(out[1]) })
      invite("bob@localhost/a", "dave@localhost")
      -- dave may not use his invitation to reach someone other than bob
      out = decline("dave@localhost/d", "carol@localhost")
      assert.equal("dave@localhost/d", out[1].attr.to)
      assert.equal("not-acceptable", (error_condition(out[1])))
      -- nor may someone else use dave's invitation
      out = decline("eve@remote.example/e", "bob@localhost/a")
      assert.equal("not-acceptable", (error_condition(out[1])))
      -- dave's one decline to bob (bare or full) goes through, a second does not
      out = decline("dave@localhost/other", "bob@localhost")
      assert.equal(1, #out)
      assert.equal("bob@localhost", out[1].attr.to)
      assert.equal("dave@localhost", user_x(out[1]):get_child("decline").attr.from)
      out = decline("dave@localhost/d", "bob@localhost/a")
      assert.equal("not-acceptable", (error_condition(out[1])))
    end)

    it("sends a decline without 'to' to the inviter of the latest invitation", function ()
      invite("bob@localhost/a", "dave@localhost")
      local out = decline("dave@localhost/d", nil)
      assert.equal(1, #out)
      assert.equal("bob@localhost/a", out[1].attr.to)
      assert.equal(ROOM, out[1].attr.from)
    end)

    it("keeps at most max_pending_invitations per room, forgetting the oldest", function ()
      h = harness({ max_pending_invitations = 2 })
      configured_room(h)
      join(h, "bob@localhost/a", "bob")
      for i = 1, 3 do invite("bob@localhost/a", "guest" .. i .. "@localhost") end
      assert.equal(2, #h.host.rooms[ROOM].invitations)
      assert.equal("not-acceptable", (error_condition(decline("guest1@localhost/x", "bob@localhost/a")[1])))
      assert.equal("bob@localhost/a", decline("guest3@localhost/x", "bob@localhost/a")[1].attr.to)
      assert.equal("bob@localhost/a", decline("guest2@localhost/x", "bob@localhost/a")[1].attr.to)
      -- inviting the same person again keeps one entry
      for _ = 1, 5 do invite("bob@localhost/a", "guest1@localhost") end
      assert.equal(1, #h.host.rooms[ROOM].invitations)
      -- a non-occupant's invitation is refused and not remembered
      local out = invite("eve@remote.example/e", "guest9@localhost")
      assert.equal("not-acceptable", (error_condition(out[1])))
      assert.equal("not-acceptable", (error_condition(decline("guest9@localhost/x", "eve@remote.example/e")[1])))
    end)

    it("makes an admin's invitee a member of a members-only room", function ()
      h:send(iq(OWNER, "set", ROOM, submit({ membersonly = "1" })))
      local out = h:send("<message from='" .. OWNER .. "' to='" .. ROOM .. "'><x xmlns='" .. NS_USER
        .. "'><invite to='dave@localhost'/></x></message>")
      assert.equal("dave@localhost", out[1].attr.to)
      assert.equal("member", h.host.rooms[ROOM].affiliations["dave@localhost"])
    end)

    it("refuses an invitation to a members-only room whose member list is full (max_affiliations)", function ()
      local h2 = harness({ max_affiliations = 3 })
      configured_room(h2, { membersonly = "1", persistentroom = "1" })
      local function inv(invitee)
        return h2:send("<message from='" .. OWNER .. "' to='" .. ROOM .. "'><x xmlns='" .. NS_USER
          .. "'><invite to='" .. invitee .. "'/></x></message>")
      end
      assert.equal("g1@localhost", inv("g1@localhost")[1].attr.to)
      assert.equal("g2@localhost", inv("g2@localhost")[1].attr.to)
      local room = h2.host.rooms[ROOM]
      assert.equal(3, room:affiliation_count())                 -- the owner and two members
      local out = inv("g3@localhost")
      assert.equal(1, #out)                                      -- the refusal, no invitation
      assert.equal(OWNER, out[1].attr.to)
      assert.same({ "resource-constraint", "wait" }, { error_condition(out[1]) })
      assert.matches("max_affiliations", out[1]:get_child("error"):get_child_text("text",
        "urn:ietf:params:xml:ns:xmpp-stanzas"))
      assert.is_nil(room.affiliations["g3@localhost"])
      assert.equal(3, room:affiliation_count())
      assert.is_nil(h2.srv.store.data.muc_room[ROOM].affiliations["g3@localhost"])
      -- inviting someone already a member adds nobody, so it still goes out
      assert.equal("g1@localhost", inv("g1@localhost")[1].attr.to)
    end)
  end)

  describe("history", function ()
    local h
    before_each(function ()
      h = harness({ max_history = 5 })
      configured_room(h)
      for i = 1, 8 do
        h.now = h.now + 10
        h:send(groupchat(OWNER, "m" .. i))
      end
    end)

    local function bodies(got)
      local list = {}
      for _, s in ipairs(got) do
        if s.name == "message" and s:get_child("body") then list[#list + 1] = s:get_child_text("body") end
      end
      return list
    end

    it("sends the kept history (capped) with XEP-0203 delays from the room, before the subject", function ()
      local got = join(h, "bob@localhost/a", "bob")
      assert.same({ "m4", "m5", "m6", "m7", "m8" }, bodies(got))
      local first = got[#got - 5]
      assert.equal(ROOM .. "/boss", first.attr.from)
      local delay = first:get_child("delay", "urn:xmpp:delay")
      assert.equal(ROOM, delay.attr.from)
      assert.equal(os.date("!%Y-%m-%dT%H:%M:%SZ", 1000000040), delay.attr.stamp)
      assert.is_not_nil(got[#got]:get_child("subject"))
    end)

    it("honours maxstanzas, maxchars, seconds and since", function ()
      local function with(attrs)
        local got = join(h, "bob@localhost/a", "bob", "<x xmlns='" .. NS_MUC .. "'><history " .. attrs .. "/></x>")
        h:send("<presence type='unavailable' from='bob@localhost/a' to='" .. ROOM .. "/bob'/>")
        return bodies(got)
      end
      assert.same({ "m7", "m8" }, with("maxstanzas='2'"))
      assert.same({}, with("maxstanzas='0'"))
      assert.same({}, with("maxchars='0'"))
      local one = #tostring(h.host.rooms[ROOM].history[5].stanza)
      assert.same({ "m8" }, with("maxchars='" .. (one + 10) .. "'"))
      assert.same({ "m6", "m7", "m8" }, with("seconds='25'"))
      assert.same({ "m7", "m8" }, with("since='" .. os.date("!%Y-%m-%dT%H:%M:%SZ", 1000000065) .. "'"))
      assert.same({ "m7", "m8" }, with("since='" .. os.date("!%Y-%m-%dT%H:%M:%S", 1000000065 + 3600) .. "+01:00'"))
      assert.same({ "m4", "m5", "m6", "m7", "m8" }, with("maxstanzas='999'"))
      assert.same({ "m4", "m5", "m6", "m7", "m8" }, with("since='yesterday' maxstanzas='-1'")) -- ignored
    end)
  end)

  describe("entry rules", function ()
    it("asks for the password of a password-protected room (not-authorized)", function ()
      local h = harness()
      configured_room(h, { passwordprotectedroom = "1", roomsecret = "s3cret" })
      local got = join(h, "bob@localhost/a", "bob")
      assert.same({ "not-authorized", "auth" }, { error_condition(got[1]) })
      got = join(h, "bob@localhost/a", "bob", "<x xmlns='" .. NS_MUC .. "'><password>wrong</password></x>")
      assert.equal("not-authorized", (error_condition(got[1])))
      got = join(h, "bob@localhost/a", "bob", "<x xmlns='" .. NS_MUC .. "'><password>s3cret</password></x>")
      assert.is_true(codes(got[#got - 1])["110"])
    end)

    it("refuses a password-protected room without a password", function ()
      local h = harness()
      h:send(presence(OWNER, ROOM .. "/boss"))
      local out = h:send(iq(OWNER, "set", ROOM, submit({ passwordprotectedroom = "1" })))
      assert.equal("not-acceptable", (error_condition(out[1])))
    end)

    it("lets only members into a members-only room (registration-required)", function ()
      local h = harness()
      configured_room(h, { membersonly = "1" })
      local got = join(h, "bob@localhost/a", "bob")
      assert.same({ "registration-required", "auth" }, { error_condition(got[1]) })
      local out = h:send(iq(OWNER, "set", ROOM, "<query xmlns='" .. NS_ADMIN
        .. "'><item affiliation='member' jid='bob@localhost'/></query>"))
      assert.equal("result", out[1].attr.type)
      got = join(h, "bob@localhost/a", "bob")
      assert.same({ affiliation = "member", role = "participant", jid = "bob@localhost/a" }, item(got[#got - 1]).attr)
    end)

    it("refuses a full room (service-unavailable), but not to admins", function ()
      local h = harness()
      configured_room(h, { maxusers = "2" })
      join(h, "bob@localhost/a", "bob")
      local got = join(h, "carol@localhost/c", "carol")
      assert.same({ "service-unavailable", "wait" }, { error_condition(got[1]) })
      h:send(iq(OWNER, "set", ROOM, admin_query .. "<item affiliation='admin' jid='carol@localhost'/></query>"))
      got = join(h, "carol@localhost/c", "carol")
      assert.is_true(codes(got[#got - 1])["110"])
    end)

    it("caps occupants per room whatever the configuration", function ()
      local h = harness({ max_occupants = 2 })
      configured_room(h)
      join(h, "bob@localhost/a", "bob")
      local got = join(h, "carol@localhost/c", "carol")
      assert.equal("service-unavailable", (error_condition(got[1])))
      local out = h:send(iq(OWNER, "set", ROOM, submit({ maxusers = "100" })))
      assert.equal("not-acceptable", (error_condition(out[1])))
    end)

    it("puts newcomers without affiliation in a moderated room as visitors, who may not speak", function ()
      local h = harness()
      configured_room(h, { moderatedroom = "1" })
      local got = join(h, "bob@localhost/a", "bob")
      assert.equal("visitor", item(got[#got - 1]).attr.role)
      local out = h:send(groupchat("bob@localhost/a", "hear me"))
      assert.same({ "forbidden", "auth" }, { error_condition(out[1]) })
      -- a moderator grants voice
      out = h:send(iq(OWNER, "set", ROOM, admin_query .. "<item nick='bob' role='participant'/></query>"))
      assert.equal("result", only(out, function (s) return s.name == "iq" end).attr.type)
      assert.equal("participant", item(to(out, "bob@localhost/a")[1]).attr.role)
      out = h:send(groupchat("bob@localhost/a", "hear me"))
      assert.equal(2, #out)
    end)
  end)

  describe("moderation (muc#admin)", function ()
    local h
    local function admin(from, items)
      return h:send(iq(from, "set", ROOM, admin_query .. "" .. items .. "</query>"))
    end
    before_each(function ()
      h = harness()
      configured_room(h)
      join(h, "bob@localhost/a", "bob")
      join(h, "carol@localhost/c", "carol")
    end)

    it("kicks with status 307, actor and reason, to everyone", function ()
      local out = admin(OWNER, "<item nick='bob' role='none'><reason>spam</reason></item>")
      local kicked = only(to(out, "bob@localhost/a"), function () return true end)
      assert.equal("unavailable", kicked.attr.type)
      assert.is_true(codes(kicked)["307"] and codes(kicked)["110"])
      assert.equal("spam", item(kicked):get_child_text("reason"))
      assert.equal("boss", item(kicked):get_child("actor").attr.nick)
      local seen = only(to(out, "carol@localhost/c"), function () return true end)
      assert.is_true(codes(seen)["307"])
      assert.equal("none", item(seen).attr.role)
      assert.equal("result", only(to(out, OWNER), function (s) return s.name == "iq" end).attr.type)
      assert.is_nil(h.host.rooms[ROOM].occupants.bob)
    end)

    it("lets no participant kick, and no moderator kick an owner", function ()
      local out = admin("bob@localhost/a", "<item nick='carol' role='none'/>")
      assert.same({ "forbidden", "auth" }, { error_condition(out[1]) })
      admin(OWNER, "<item jid='carol@localhost' affiliation='admin'/>")
      out = admin("carol@localhost/c", "<item nick='boss' role='none'/>")
      assert.same({ "not-allowed", "cancel" }, { error_condition(out[1]) })
      out = admin("carol@localhost/c", "<item nick='bob' role='moderator'/>")
      assert.equal("result", only(to(out, "carol@localhost/c"), function (s) return s.name == "iq" end).attr.type)
      assert.equal("moderator", item(to(out, "bob@localhost/a")[1]).attr.role)
      out = admin("carol@localhost/c", "<item nick='nobody' role='none'/>")
      assert.equal("item-not-found", (error_condition(out[1])))
      out = admin(OWNER, "<item nick='bob' role='none' affiliation='none'/>")
      assert.equal("bad-request", (error_condition(out[1])))
    end)

    it("bans with status 301; the outcast cannot come back (forbidden)", function ()
      local out = admin(OWNER, "<item affiliation='outcast' jid='bob@localhost'><reason>bye</reason></item>")
      local banned = only(to(out, "bob@localhost/a"), function () return true end)
      assert.is_true(codes(banned)["301"])
      assert.equal("outcast", item(banned).attr.affiliation)
      local got = join(h, "bob@localhost/b", "bobby")
      assert.same({ "forbidden", "auth" }, { error_condition(got[1]) })
      -- the ban list
      out = h:send(iq(OWNER, "get", ROOM, admin_query .. "<item affiliation='outcast'/></query>"))
      local listed = out[1]:get_child("query", NS_ADMIN):get_child("item")
      assert.same({ jid = "bob@localhost", affiliation = "outcast" }, listed.attr)
    end)

    it("applies the affiliation rules: admins manage members and outcasts, owners everything", function ()
      admin(OWNER, "<item affiliation='admin' jid='carol@localhost'/>")
      local out = admin("carol@localhost/c", "<item affiliation='member' jid='bob@localhost'/>")
      assert.equal("result", only(to(out, "carol@localhost/c"), function (s) return s.name == "iq" end).attr.type)
      assert.equal("member", item(to(out, "bob@localhost/a")[1]).attr.affiliation)
      out = admin("carol@localhost/c", "<item affiliation='admin' jid='bob@localhost'/>")
      assert.same({ "forbidden", "auth" }, { error_condition(out[1]) })
      out = admin("carol@localhost/c", "<item affiliation='outcast' jid='owner@localhost'/>")
      assert.same({ "not-allowed", "cancel" }, { error_condition(out[1]) })
      out = admin("bob@localhost/a", "<item affiliation='outcast' jid='carol@localhost'/>")
      assert.equal("forbidden", (error_condition(out[1])))
      out = admin(OWNER, "<item affiliation='none' jid='owner@localhost'/>")
      assert.same({ "conflict", "cancel" }, { error_condition(out[1]) })
      out = admin(OWNER, "<item affiliation='member' jid='not a jid@@'/>")
      assert.equal("jid-malformed", (error_condition(out[1])))
      -- all items or none
      out = admin(OWNER, "<item affiliation='member' jid='x@localhost'/><item affiliation='bogus' jid='y@localhost'/>")
      assert.equal("bad-request", (error_condition(out[1])))
      assert.is_nil(h.host.rooms[ROOM].affiliations["x@localhost"])
      -- an admin is a moderator; revoking the affiliation demotes
      assert.equal("moderator", h.host.rooms[ROOM].occupants.carol.role)
      out = admin(OWNER, "<item affiliation='none' jid='carol@localhost'/>")
      assert.same({ affiliation = "none", role = "participant" }, item(to(out, "bob@localhost/a")[1]).attr)
    end)

    it("refuses an admin or owner banning himself with conflict, another owner or not (§9.1)", function ()
      admin(OWNER, "<item affiliation='owner' jid='other@localhost'/><item affiliation='admin' jid='carol@localhost'/>")
      local out = admin(OWNER, "<item affiliation='outcast' jid='owner@localhost'/>")
      assert.same({ "conflict", "cancel" }, { error_condition(out[1]) })
      assert.equal("owner", h.host.rooms[ROOM].affiliations["owner@localhost"])
      out = admin("carol@localhost/c", "<item affiliation='outcast' jid='carol@localhost'><reason>me</reason></item>")
      assert.same({ "conflict", "cancel" }, { error_condition(out[1]) })
      assert.equal("admin", h.host.rooms[ROOM].affiliations["carol@localhost"])
      -- giving up ownership while another owner stays is still allowed
      out = admin(OWNER, "<item affiliation='member' jid='owner@localhost'/>")
      assert.equal("result", only(to(out, OWNER), function (s) return s.name == "iq" end).attr.type)
    end)

    it("lets no moderator revoke voice from a user of its affiliation or above (§8.4)", function ()
      h = harness()
      configured_room(h, { moderatedroom = "1" })
      admin(OWNER, "<item affiliation='member' jid='m1@localhost'/><item affiliation='member' jid='m2@localhost'/>")
      join(h, "m1@localhost/a", "m1")
      join(h, "m2@localhost/a", "m2")
      join(h, "bob@localhost/a", "bob")                            -- no affiliation
      admin(OWNER, "<item role='moderator' nick='m1'/>")
      assert.equal("moderator", h.host.rooms[ROOM].occupants.m1.role)
      local out = admin("m1@localhost/a", "<item role='visitor' nick='m2'/>")
      assert.same({ "not-allowed", "cancel" }, { error_condition(out[1]) })
      assert.equal("participant", h.host.rooms[ROOM].occupants.m2.role)
      -- below its affiliation it may
      out = admin("m1@localhost/a", "<item role='visitor' nick='bob'/>")
      assert.equal("result", only(to(out, "m1@localhost/a"), function (s) return s.name == "iq" end).attr.type)
      assert.equal("visitor", h.host.rooms[ROOM].occupants.bob.role)
      -- an owner revokes a member's voice
      admin(OWNER, "<item role='visitor' nick='m2'/>")
      assert.equal("visitor", h.host.rooms[ROOM].occupants.m2.role)
    end)

    it("lists roles to moderators and affiliations to admins", function ()
      local out = h:send(iq("bob@localhost/a", "get", ROOM, admin_query .. "<item role='participant'/></query>"))
      assert.equal("forbidden", (error_condition(out[1])))
      out = h:send(iq(OWNER, "get", ROOM, admin_query .. "<item role='participant'/></query>"))
      local n = 0
      for it_ in out[1]:get_child("query", NS_ADMIN):childtags("item") do
        n = n + 1
        assert.is_not_nil(it_.attr.jid)
      end
      assert.equal(2, n)
      out = h:send(iq(OWNER, "get", ROOM, admin_query .. "<item affiliation='owner'/></query>"))
      assert.equal("owner@localhost", out[1]:get_child("query", NS_ADMIN):get_child("item").attr.jid)
    end)

    it("removes non-members when the room becomes members-only (322)", function ()
      admin(OWNER, "<item affiliation='member' jid='carol@localhost'/>")
      local out = h:send(iq(OWNER, "set", ROOM, submit({ membersonly = "1" })))
      local gone = only(to(out, "bob@localhost/a"), function (s) return s.name == "presence" end)
      assert.is_true(codes(gone)["322"])
      assert.is_nil(h.host.rooms[ROOM].occupants.bob)
      assert.is_not_nil(h.host.rooms[ROOM].occupants.carol)
      -- and config change notices (104) go to those who stay
      local notice = only(to(out, "carol@localhost/c"), function (s) return s.name == "message" end)
      assert.is_true(codes(notice)["104"])
    end)
  end)

  describe("owner", function ()
    it("serves the muc#roomconfig form to owners only, with the current values", function ()
      local h = harness()
      configured_room(h, { roomname = "Lobby" })
      join(h, "bob@localhost/a", "bob")
      local out = h:send(iq("bob@localhost/a", "get", ROOM, "<query xmlns='" .. NS_OWNER .. "'/>"))
      assert.same({ "forbidden", "auth" }, { error_condition(out[1]) })
      out = h:send(iq(OWNER, "get", ROOM, "<query xmlns='" .. NS_OWNER .. "'/>"))
      local form = assert(require("lxmpp.forms").parse(out[1]:get_child("query", NS_OWNER):get_child("x", NS_X)))
      assert.equal("http://jabber.org/protocol/muc#roomconfig", form.form_type)
      assert.equal("Lobby", form.values["muc#roomconfig_roomname"])
      assert.equal(false, form.values["muc#roomconfig_persistentroom"])
      assert.equal("moderators", form.values["muc#roomconfig_whois"])
      assert.equal("none", form.values["muc#roomconfig_maxusers"])
      for _, var in ipairs({ "roomdesc", "publicroom", "membersonly", "moderatedroom", "passwordprotectedroom",
        "roomsecret", "changesubject", "allowpm" }) do
        assert.is_not_nil(form.values["muc#roomconfig_" .. var], var)
      end
      -- a bad value is refused and changes nothing
      out = h:send(iq(OWNER, "set", ROOM, submit({ whois = "everyone", roomname = "X" })))
      assert.equal("bad-request", (error_condition(out[1])))
      assert.equal("Lobby", h.host.rooms[ROOM].config.name)
    end)

    it("makes a room non-anonymous (172): real JIDs to everyone, 100 on join", function ()
      local h = harness()
      configured_room(h)
      join(h, "bob@localhost/a", "bob")
      local out = h:send(iq(OWNER, "set", ROOM, submit({ whois = "anyone" })))
      assert.is_true(codes(only(to(out, "bob@localhost/a"), function () return true end))["172"])
      local got, all = join(h, "carol@localhost/c", "carol")
      assert.is_true(codes(got[#got - 1])["100"])
      assert.equal("carol@localhost/c", item(to(all, "bob@localhost/a")[1]).attr.jid)
    end)

    it("destroys a room: each occupant gets one unavailable presence with <destroy/>", function ()
      local h = harness()
      configured_room(h, { persistentroom = "1" })
      join(h, "bob@localhost/a", "bob")
      local out = h:send(iq("bob@localhost/a", "set", ROOM, "<query xmlns='" .. NS_OWNER .. "'><destroy/></query>"))
      assert.same({ "forbidden", "auth" }, { error_condition(out[1]) })
      out = h:send(iq(OWNER, "set", ROOM, "<query xmlns='" .. NS_OWNER
        .. "'><destroy jid='new@" .. SERVICE .. "'><reason>moved</reason></destroy></query>"))
      local p = only(to(out, "bob@localhost/a"), function () return true end)
      assert.equal("unavailable", p.attr.type)
      local d = user_x(p):get_child("destroy")
      assert.equal("new@" .. SERVICE, d.attr.jid)
      assert.equal("moved", d:get_child_text("reason"))
      assert.equal("result", only(to(out, OWNER), function (s) return s.name == "iq" end).attr.type)
      assert.is_nil(h.host.rooms[ROOM])
      assert.is_nil(h.srv.store:get("muc_room", ROOM))
    end)
  end)

  describe("discovery", function ()
    it("describes the service and lists its public, unlocked rooms", function ()
      local h = harness()
      configured_room(h, { roomname = "The Lobby" })
      configured_room(h, { publicroom = "0" }, "secret@" .. SERVICE)
      h:send(presence(OWNER, "locked@" .. SERVICE .. "/boss"))
      local out = h:send(iq("bob@localhost/a", "get", SERVICE, "<query xmlns='http://jabber.org/protocol/disco#info'/>"))
      local q = out[1]:get_child("query", "http://jabber.org/protocol/disco#info")
      assert.same({ category = "conference", type = "text", name = "Chatrooms" }, q:get_child("identity").attr)
      assert.is_not_nil(q:get_child_with_attr("feature", nil, "var", NS_MUC))
      out = h:send(iq("bob@localhost/a", "get", SERVICE, "<query xmlns='http://jabber.org/protocol/disco#items'/>"))
      local items = {}
      local q_items = out[1]:get_child("query", "http://jabber.org/protocol/disco#items")
      for i in q_items:childtags("item") do items[#items + 1] = i.attr end
      assert.same({ { jid = ROOM, name = "The Lobby" } }, items)
      out = h:send(iq("bob@localhost/a", "set", SERVICE, "<query xmlns='jabber:iq:register'/>"))
      assert.equal("service-unavailable", (error_condition(out[1])))
    end)

    it("describes a room with its features and muc#roominfo", function ()
      local h = harness()
      configured_room(h, { persistentroom = "1", membersonly = "1", roomdesc = "Talk" })
      local out = h:send(iq("bob@localhost/a", "get", ROOM, "<query xmlns='http://jabber.org/protocol/disco#info'/>"))
      local q = out[1]:get_child("query", "http://jabber.org/protocol/disco#info")
      local features = {}
      for f in q:childtags("feature") do features[f.attr.var] = true end
      for _, f in ipairs({ NS_MUC, "muc_persistent", "muc_membersonly", "muc_public", "muc_unmoderated",
        "muc_semianonymous", "muc_unsecured" }) do
        assert.is_true(features[f], f)
      end
      assert.is_nil(features.muc_temporary)
      local info = require("lxmpp.forms").parse(q:get_child("x", NS_X))
      assert.equal("http://jabber.org/protocol/muc#roominfo", info.form_type)
      assert.equal("Talk", info.values["muc#roominfo_description"])
      assert.equal("1", info.values["muc#roominfo_occupants"])
      out = h:send(iq("bob@localhost/a", "get", "nowhere@" .. SERVICE,
        "<query xmlns='http://jabber.org/protocol/disco#info'/>"))
      assert.equal("item-not-found", (error_condition(out[1])))
    end)
  end)

  describe("lifetime", function ()
    it("destroys a temporary room with its last occupant", function ()
      local h = harness()
      configured_room(h)
      h:send("<presence type='unavailable' from='" .. OWNER .. "' to='" .. ROOM .. "/boss'/>")
      assert.is_nil(h.host.rooms[ROOM])
      -- the next join creates a new room
      local out = h:send(presence("bob@localhost/a", ROOM .. "/bob"))
      assert.is_true(codes(out[1])["201"])
    end)

    it("restores persistent rooms (config, affiliations, subject) from the store", function ()
      local store = memory_store()
      local h = harness(nil, store)
      configured_room(h, { persistentroom = "1", roomname = "Kept", passwordprotectedroom = "1", roomsecret = "pw" })
      h:send(iq(OWNER, "set", ROOM, admin_query .. "<item affiliation='member' jid='bob@localhost'/>"
        .. "<item affiliation='outcast' jid='eve@localhost'/></query>"))
      h:send("<message from='" .. OWNER .. "' to='" .. ROOM
        .. "' type='groupchat'><subject>Kept topic</subject></message>")
      h:send("<presence type='unavailable' from='" .. OWNER .. "' to='" .. ROOM .. "/boss'/>")
      assert.is_not_nil(h.host.rooms[ROOM]) -- persistent rooms outlive their occupants
      h.host:close()

      local h2 = harness(nil, store)
      local room = h2.host.rooms[ROOM]
      assert.is_not_nil(room)
      assert.equal("Kept", room.config.name)
      assert.is_true(room.config.persistent)
      assert.equal("pw", room.config.password)
      assert.same({ ["owner@localhost"] = "owner", ["bob@localhost"] = "member", ["eve@localhost"] = "outcast" },
        room.affiliations)
      local got = join(h2, "eve@localhost/e", "eve", "<x xmlns='" .. NS_MUC .. "'><password>pw</password></x>")
      assert.equal("forbidden", (error_condition(got[1])))
      got = join(h2, "bob@localhost/a", "bob", "<x xmlns='" .. NS_MUC .. "'><password>pw</password></x>")
      assert.equal("Kept topic", got[#got]:get_child_text("subject"))
      assert.is_nil(codes(got[#got - 1])["201"])
      -- turning persistence off removes the stored copy
      h2:send(iq(OWNER, "set", ROOM, submit({ persistentroom = "0" })))
      assert.is_nil(store:get("muc_room", ROOM))
    end)

    it("tells occupants the service is shutting down (332) on close", function ()
      local h = harness()
      configured_room(h)
      join(h, "bob@localhost/a", "bob")
      h.out = {}
      h.host:close()
      local p = only(to(h.out, "bob@localhost/a"), function () return true end)
      assert.equal("unavailable", p.attr.type)
      assert.is_true(codes(p)["332"])
      assert.same({}, h:send(groupchat("bob@localhost/a", "anyone?")))
    end)

    it("logs a failing store (raising or returning nil, message) and keeps the room", function ()
      local store = memory_store()
      function store.set() error("disk full") end
      local h = harness(nil, store)
      configured_room(h, { persistentroom = "1" })
      assert.is_not_nil(h.host.rooms[ROOM])
      assert.matches("disk full", h.logs[1])
      function store.set() return nil, "database is locked" end
      h:send(iq(OWNER, "set", ROOM, submit({ roomname = "x" })))
      assert.matches("database is locked", h.logs[2])
    end)

    it("restores only well-formed rooms of its own domain, logging unreadable ones", function ()
      local store = memory_store()
      store:set("muc_room", "other@elsewhere.localhost", { config = { name = "not ours" } })
      store:set("muc_room", "good@" .. SERVICE, { config = { name = "ok", max_users = "lots", public = false },
        affiliations = { ["a@localhost"] = "owner", ["b@localhost"] = "emperor" } })
      store:set("muc_room", "bad@" .. SERVICE, "garbage")
      local get = store.get
      function store.get(s, kind, key)
        if key == "broken@" .. SERVICE then error("corrupt value") end
        return get(s, kind, key)
      end
      store.data.muc_room["broken@" .. SERVICE] = {}
      local h = harness(nil, store)
      assert.same({ "good@" .. SERVICE }, (function ()
        local l = {} for k in pairs(h.host.rooms) do l[#l + 1] = k end return l end)())
      local room = h.host.rooms["good@" .. SERVICE]
      assert.equal("ok", room.config.name)
      assert.equal(0, room.config.max_users) -- a value of the wrong type is ignored
      assert.is_false(room.config.public)
      assert.same({ ["a@localhost"] = "owner" }, room.affiliations)
      assert.equal(2, #h.logs)
    end)

    it("never writes temporary rooms to the store", function ()
      local store = memory_store()
      local h = harness(nil, store)
      configured_room(h)
      h:send("<message from='" .. OWNER .. "' to='" .. ROOM .. "' type='groupchat'><subject>t</subject></message>")
      h:send(iq(OWNER, "set", ROOM, admin_query .. "<item affiliation='member' jid='x@localhost'/></query>"))
      assert.equal(0, store.sets)
    end)

    it("bounds the history by bytes as well as by count", function ()
      local h = harness({ max_history_bytes = 2000 })
      configured_room(h)
      for i = 1, 20 do h:send(groupchat(OWNER, ("x"):rep(300) .. i)) end
      local room = h.host.rooms[ROOM]
      assert.is_true(room.history_bytes <= 2000)
      assert.is_true(#room.history >= 3 and #room.history < 20)
      assert.matches("20$", room.history[#room.history].stanza:get_child_text("body"))
      local h0 = harness({ max_history = 0 })
      configured_room(h0)
      h0:send(groupchat(OWNER, "gone"))
      assert.equal(0, #h0.host.rooms[ROOM].history)
    end)

    it("keeps no message larger than the whole history budget (broadcast, not kept)", function ()
      local h = harness({ max_history_bytes = 2000 })
      configured_room(h)
      h:send(groupchat(OWNER, "small"))
      local out = h:send(groupchat(OWNER, ("y"):rep(3000)))
      assert.is_true(#out >= 1)                          -- the occupants got it
      local room = h.host.rooms[ROOM]
      assert.equal(1, #room.history)                     -- the earlier message stays
      assert.equal("small", room.history[1].stanza:get_child_text("body"))
      assert.is_true(room.history_bytes <= 2000)
    end)

    it("bounds the affiliations of a room", function ()
      local h = harness({ max_affiliations = 3 })
      configured_room(h)
      local out = h:send(iq(OWNER, "set", ROOM, admin_query .. "<item affiliation='member' jid='a@localhost'/>"
        .. "<item affiliation='outcast' jid='b@localhost'/></query>"))
      assert.equal("result", out[1].attr.type)
      out = h:send(iq(OWNER, "set", ROOM, admin_query .. "<item affiliation='member' jid='c@localhost'/></query>"))
      assert.same({ "resource-constraint", "wait" }, { error_condition(out[1]) })
      -- removing one is always possible
      out = h:send(iq(OWNER, "set", ROOM, admin_query .. "<item affiliation='none' jid='b@localhost'/></query>"))
      assert.equal("result", out[1].attr.type)
    end)

    it("bounds the items of one muc#admin request", function ()
      local h = harness({ max_admin_items = 3 })
      configured_room(h)
      local out = h:send(iq(OWNER, "set", ROOM, admin_query .. ("<item affiliation='member' jid='x@localhost'/>"):rep(4)
        .. "</query>"))
      assert.equal("policy-violation", (error_condition(out[1])))
    end)

    it("refuses bad options", function ()
      assert.has_error(function () muc.new({}, SERVICE) end)
      assert.has_error(function () muc.new({ route = function () end }, "not a domain@") end)
      assert.has_error(function () muc.new({ route = function () end }, SERVICE, { max_rooms = -1 }) end)
    end)
  end)

  describe("iq to occupants", function ()
    it("answers XEP-0410 self-pings and forwards other iqs under the room's own id", function ()
      local h = harness()
      configured_room(h)
      join(h, "bob@localhost/a", "bob")
      local ping = "<ping xmlns='urn:xmpp:ping'/>"
      local out = h:send(iq("bob@localhost/a", "get", ROOM .. "/bob", ping))
      assert.equal("result", out[1].attr.type)
      out = h:send(iq("carol@localhost/c", "get", ROOM .. "/bob", ping))
      assert.equal("not-acceptable", (error_condition(out[1])))
      out = h:send(iq("bob@localhost/a", "get", ROOM .. "/boss", "<vCard xmlns='vcard-temp'/>", "v1"))
      local fwd = out[1]
      assert.equal(OWNER, fwd.attr.to)
      assert.equal(ROOM .. "/bob", fwd.attr.from)
      assert.not_equal("v1", fwd.attr.id)
      -- a spoofed answer from someone else is dropped
      assert.same({}, h:send(iq("bob@localhost/a", "result", ROOM .. "/bob", "", fwd.attr.id)))
      out = h:send(iq(OWNER, "result", ROOM .. "/bob", "<vCard xmlns='vcard-temp'/>", fwd.attr.id))
      assert.equal("bob@localhost/a", out[1].attr.to)
      assert.equal(ROOM .. "/boss", out[1].attr.from)
      assert.equal("v1", out[1].attr.id)
      assert.same({}, h:send(iq(OWNER, "result", ROOM .. "/bob", "", fwd.attr.id))) -- once only
    end)
  end)
end)
