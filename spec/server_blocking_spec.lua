-- XEP-0191 blocking command on the embedded server, with lxmpp's own
-- client: the list (get, block, unblock, unblock all, pushes to the
-- resources that asked for it), its errors and size limit, enforcement both
-- ways (nothing from a blocked JID is delivered, stored offline or copied;
-- IQ requests and messages answered service-unavailable; our stanzas to it
-- refused with not-acceptable and <blocked/>), JID matching, presence on
-- block and unblock, and the list kept across a restart with SQLite.
--
-- Negative cases end with a stanza that is delivered: stanzas between two
-- clients travel in order, so when the marker arrives a wrong one would
-- have too.
local lxmpp = require "lxmpp"
local st = lxmpp.stanza
local serve = require "spec.support.serve"
local blocking = require "lxmpp.server.blocking"

local USERS = { alice = "alice-pw", bob = "bob-pw", carol = "carol-pw" }
local NS = "urn:xmpp:blocking"
local ALICE, BOB, CAROL = "alice@example.test", "bob@example.test", "carol@example.test"

local function login(port, user, res) return assert(serve.login(port, user, USERS[user], res)) end

local function wait_for(list, n) assert.truthy(serve.until_true(function() return #list >= n end), "timed out") end

local function bodies(list)
  local out = {}
  for _, m in ipairs(list) do out[#out + 1] = m:get_child_text("body") end
  return out
end

-- Messages with a body a client gets (errors included), in order.
local function inbox(c)
  local list = {}
  c:on("message", function(m) if m:get_child_text("body") or m.attr.type == "error" then list[#list + 1] = m end end)
  return list
end

local function pushes_of(c)
  local list = {}
  c:on("blocklist", function(action, jids) list[#list + 1] = { action, jids } end)
  return list
end

-- Makes a and b (bare JIDs an, bn) subscribed to each other.
local function befriend(srv, a, an, b, bn)
  for _, pair in ipairs({ { a, bn, b, an }, { b, an, a, bn } }) do
    pair[1]:send(st.presence({ to = pair[2], type = "subscribe" }))
    assert.truthy(serve.expect(pair[3], "presence", function(p) return p.attr.type == "subscribe" end))
    pair[3]:send(st.presence({ to = pair[4], type = "subscribed" }))
  end
  assert.truthy(serve.until_true(function()
    local ia = srv.store:get_roster(an:match("^[^@]+")).items[bn]
    local ib = srv.store:get_roster(bn:match("^[^@]+")).items[an]
    return ia and ib and ia.subscription == "both" and ib.subscription == "both"
  end))
end

describe("embedded server: block list", function()
  it("advertises urn:xmpp:blocking, keeps the list and pushes changes to resources that asked", function()
    serve.run({ users = USERS }, function(srv, port)
      local a1, a2, a3 = login(port, "alice", "a1"), login(port, "alice", "a2"), login(port, "alice", "a3")
      assert.is_true(assert(a1:disco_info()).features[NS])
      assert.same({}, assert(a1:blocklist()))
      assert.same({}, assert(a2:blocklist()))
      local p1, p2, p3 = pushes_of(a1), pushes_of(a2), pushes_of(a3)
      assert(a1:block({ "Mallory@Evil.Example", "spam.example", BOB .. "/b1" }))
      wait_for(p2, 1)
      wait_for(p1, 1)
      assert.same({ "block", { "mallory@evil.example", "spam.example", BOB .. "/b1" } }, p2[1])
      assert.same({ BOB .. "/b1", "mallory@evil.example", "spam.example" }, assert(a3:blocklist()))
      assert.same({ BOB .. "/b1", "mallory@evil.example", "spam.example" }, srv.store:get("blocklist", "alice"))
      assert(a2:unblock({ "spam.example" }))
      wait_for(p1, 2)
      wait_for(p3, 1)                       -- a3 asked for the list meanwhile
      assert.same({ "unblock", { "spam.example" } }, p3[1])   -- its first push: none before it asked
      assert.same({ "unblock", { "spam.example" } }, p1[2])
      assert.same({ BOB .. "/b1", "mallory@evil.example" }, assert(a1:blocklist()))
      assert(a1:unblock())
      wait_for(p2, 3)
      assert.same({ "unblock", {} }, p2[3])
      assert.same({}, assert(a2:blocklist()))
      assert.is_nil(srv.store:get("blocklist", "alice"))
      for _, c in ipairs({ a1, a2, a3 }) do c:close() end
    end)
  end)

  it("answers bad requests, malformed JIDs and blocking oneself with errors, changing nothing", function()
    serve.run({ users = USERS }, function(_, port)
      local a = login(port, "alice", "a")
      assert(a:block({ "keep@example.org" }))
      local function try(iq)
        local r, _, cond = a:request(iq)
        assert.is_nil(r)
        return cond
      end
      assert.equal("bad-request", try(st.iq({ type = "set" }):tag("block", { xmlns = NS })))
      assert.equal("jid-malformed", try(st.iq({ type = "set" }):tag("block", { xmlns = NS })
        :tag("item", { jid = "ok@example.org" }):up():tag("item", { jid = "a@b@c" }):up()))
      assert.equal("jid-malformed", try(st.iq({ type = "set" }):tag("block", { xmlns = NS }):tag("item"):up()))
      assert.equal("jid-malformed", try(st.iq({ type = "set" }):tag("unblock", { xmlns = NS })
        :tag("item", { jid = "@example.org" }):up()))
      assert.equal("not-acceptable", try(st.iq({ type = "set" }):tag("block", { xmlns = NS })
        :tag("item", { jid = ALICE }):up()))
      assert.equal("bad-request", try(st.iq({ type = "get" }):tag("block", { xmlns = NS })))
      assert.equal("bad-request", try(st.iq({ type = "set" }):tag("blocklist", { xmlns = NS })))
      assert.same({ "keep@example.org" }, assert(a:blocklist()))
      a:close()
    end)
  end)

  it("refuses to grow past limits.max_blocklist, never truncating", function()
    serve.run({ users = USERS, limits = { max_blocklist = 3 } }, function(_, port)
      local a = login(port, "alice", "a")
      assert(a:block({ "one@example.org", "two@example.org" }))
      local ok, _, cond = a:block({ "three@example.org", "four@example.org" })
      assert.is_nil(ok)
      assert.equal("resource-constraint", cond)
      assert.same({ "one@example.org", "two@example.org" }, assert(a:blocklist()))
      assert(a:block({ "three@example.org", "one@example.org" }))   -- one more: now full
      assert.same({ "one@example.org", "three@example.org", "two@example.org" }, assert(a:blocklist()))
      assert.is_nil((a:block({ "four@example.org" })))
      a:close()
    end)
  end)

  it("lets nobody else change an account's list", function()
    serve.run({ users = USERS }, function(srv, port)
      local a, b = login(port, "alice", "a"), login(port, "bob", "b")
      assert.same({}, assert(a:blocklist()))
      local r, _, cond = b:request(st.iq({ type = "set", to = ALICE }):tag("block", { xmlns = NS })
        :tag("item", { jid = CAROL }):up())
      assert.is_nil(r)
      assert.equal("service-unavailable", cond)
      -- a forged push to alice's client is refused by the client
      r, _, cond = b:request(st.iq({ type = "set", to = ALICE .. "/a" }):tag("block", { xmlns = NS })
        :tag("item", { jid = CAROL }):up())
      assert.is_nil(r)
      assert.equal("service-unavailable", cond)
      assert.is_nil(srv.store:get("blocklist", "alice"))
      assert.is_nil(a.blocked[CAROL])
      a:close()
      b:close()
    end)
  end)

  it("keeps the list across a restart with SQLite, and forgets it with the account", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    local path = dir .. "/lxmpp.db"
    serve.run({ users = USERS, storage = path }, function(_, port)
      local a = login(port, "alice", "a")
      assert(a:block({ BOB, "spam.example" }))
      a:close()
    end)
    serve.run({ storage = path }, function(srv, port)
      local a, b = login(port, "alice", "a"), login(port, "bob", "b")
      assert.same({ BOB, "spam.example" }, assert(a:blocklist()))
      local r, _, cond = b:request(st.iq({ type = "get", to = ALICE .. "/a" }):query("urn:xmpp:ping"))
      assert.is_nil(r)
      assert.equal("service-unavailable", cond)
      a:close()
      assert(srv:remove_user("alice"))
      assert(srv:add_user("alice", USERS.alice))
      a = login(port, "alice", "again")
      assert.same({}, assert(a:blocklist()))
      assert(a:request(st.iq({ type = "get", to = BOB .. "/b" }):query("urn:xmpp:ping")))
      a:close()
      b:close()
    end)
    os.execute("rm -rf " .. dir)
  end)
end)

describe("embedded server: blocking", function()
  it("delivers nothing from a blocked JID and answers its messages and IQs service-unavailable", function()
    serve.run({ users = USERS }, function(_, port)
      local a1, a2 = login(port, "alice", "a1"), login(port, "alice", "a2")
      local b, c = login(port, "bob", "b"), login(port, "carol", "c")
      a1:send_presence()
      assert(a2:enable_carbons())
      assert(a1:block({ BOB }))
      local got, copies = inbox(a1), {}
      a2:on("carbon-received", function(m) copies[#copies + 1] = m end)
      local back = inbox(b)
      b:send(st.message({ to = ALICE .. "/a1", type = "chat" }, "to the full JID"))
      b:send(st.message({ to = ALICE, type = "chat" }, "to the bare JID"))
      b:send(st.presence({ to = ALICE .. "/a1" }))
      local r, _, cond = b:request(st.iq({ type = "get", to = ALICE .. "/a1" }):query("urn:xmpp:ping"))
      assert.is_nil(r)
      assert.equal("service-unavailable", cond)
      c:send(st.message({ to = ALICE .. "/a1", type = "chat" }, "marker"))
      wait_for(got, 1)
      wait_for(back, 2)
      lxmpp.sleep(0.05)
      assert.same({ "marker" }, bodies(got))
      assert.same({ "marker" }, bodies(copies))
      for _, m in ipairs(back) do
        assert.equal("error", m.attr.type)
        local _, econd = m:get_error()
        assert.equal("service-unavailable", econd)
      end
      for _, cl in ipairs({ a1, a2, b, c }) do cl:close() end
    end)
  end)

  it("stores nothing offline from a blocked JID, and delivers nothing kept before the block", function()
    serve.run({ users = USERS }, function(srv, port)
      local a = login(port, "alice", "a")
      assert(a:block({ BOB }))
      a:close()
      local b, c = login(port, "bob", "b"), login(port, "carol", "c")
      b:send_message(ALICE, "while you were out")
      c:send_message(ALICE, "from carol")
      assert.truthy(serve.until_true(function() return srv.store:count_offline("alice") == 1 end))
      lxmpp.sleep(0.05)
      assert.equal(1, srv.store:count_offline("alice"))
      c:send_message(ALICE, "carol again")
      a = login(port, "alice", "a")
      assert(a:unblock())
      b:send_message(ALICE, "kept, then blocked")
      assert.truthy(serve.until_true(function() return srv.store:count_offline("alice") == 3 end))
      assert(a:block({ BOB }))
      local got = inbox(a)
      a:send_presence()                       -- offline messages come now
      wait_for(got, 2)
      lxmpp.sleep(0.05)
      assert.same({ "from carol", "carol again" }, bodies(got))
      assert.equal(0, srv.store:count_offline("alice"))
      a:close()
      b:close()
      c:close()
    end)
  end)

  -- a room relays invitations and declines from its own address: the block
  -- applies to whom they speak for (the 'from' of <invite/>, <decline/>)
  it("drops MUC invitations and declines from a blocked JID, and its direct invitations", function()
    local ROOM = "r@conference.example.test"
    local NS_USER = "http://jabber.org/protocol/muc#user"
    serve.run({ users = USERS, muc = "conference.example.test" }, function(_, port)
      local a, b, c = login(port, "alice", "a"), login(port, "bob", "b"), login(port, "carol", "c")
      a:send_presence()                          -- invitations to the bare JID
      assert(a:block({ BOB }))
      local got = {}
      a:on("stanza", function(s)
        local x = s.name == "message" and s:get_child("x", NS_USER)
        local el = x and (x:get_child("invite") or x:get_child("decline"))
        if el then got[#got + 1] = el.name .. " " .. el.attr.from end
        if s:get_child("x", "jabber:x:conference") then got[#got + 1] = "direct " .. s.attr.from end
      end)
      assert(c:muc_join(ROOM, "carol"))
      assert(b:muc_join(ROOM, "bob"))
      assert(a:muc_join(ROOM, "alice"))
      local function mediated(from, what, to)
        from:send(st.message({ to = ROOM }):tag("x", { xmlns = NS_USER }):tag(what, { to = to }))
        -- the room has relayed it once the server answers a later request
        assert(from:request(st.iq({ type = "get", to = "example.test" }):query("urn:xmpp:ping")))
      end
      assert(a:muc_room(ROOM):leave())             -- invitations go to rooms one is not in
      mediated(b, "invite", ALICE)
      b:send(st.message({ to = ALICE }):tag("x", { xmlns = "jabber:x:conference", jid = ROOM }))
      assert(b:request(st.iq({ type = "get", to = ALICE .. "/a" }):query("urn:xmpp:ping")) == nil)
      mediated(c, "invite", ALICE)
      wait_for(got, 1)
      assert(a:muc_join(ROOM, "alice"))
      mediated(a, "invite", BOB)
      mediated(a, "invite", CAROL)
      mediated(b, "decline", ALICE .. "/a")
      mediated(c, "decline", ALICE .. "/a")
      wait_for(got, 2)
      lxmpp.sleep(0.05)
      assert.same({ "invite " .. CAROL .. "/c", "decline " .. CAROL }, got)
      for _, cl in ipairs({ a, b, c }) do cl:close() end
    end)
  end)

  it("refuses what we send to a blocked JID with not-acceptable and <blocked/>, without carbons", function()
    serve.run({ users = USERS }, function(_, port)
      local a1, a2 = login(port, "alice", "a1"), login(port, "alice", "a2")
      local b = login(port, "bob", "b")
      assert(a2:enable_carbons())
      local sent = {}
      a2:on("carbon-sent", function(m) sent[#sent + 1] = m end)
      local at_b = inbox(b)
      local errors = inbox(a1)
      assert(a1:block({ BOB }))
      a1:send(st.message({ to = BOB .. "/b", type = "chat" }, "you are blocked"))
      local r, _, cond, err = a1:request(st.iq({ type = "get", to = BOB .. "/b" }):query("urn:xmpp:ping"))
      assert.is_nil(r)
      assert.equal("not-acceptable", cond)
      assert.truthy(err:get_child("error"):get_child("blocked", "urn:xmpp:blocking:errors"))
      wait_for(errors, 1)
      local etype, econd, _, extra = errors[1]:get_error()
      assert.equal("cancel", etype)
      assert.equal("not-acceptable", econd)
      assert.equal("blocked", extra.name)
      assert.equal("urn:xmpp:blocking:errors", extra.attr.xmlns)
      assert(a1:unblock({ BOB }))
      a1:send(st.message({ to = BOB .. "/b", type = "chat" }, "marker"))
      wait_for(at_b, 1)
      wait_for(sent, 1)
      assert.same({ "marker" }, bodies(at_b))
      assert.same({ "marker" }, bodies(sent))
      for _, cl in ipairs({ a1, a2, b }) do cl:close() end
    end)
  end)

  it("matches a full JID, a bare JID and a domain with its subdomains; the server stays reachable", function()
    local m = blocking.matches
    local set = { ["bob@example.test/b1"] = true, ["spam.example"] = true, ["only.example/res"] = true,
      ["eve@evil.example"] = true }
    local cases = {
      { "bob", "example.test", "b1", true }, { "bob", "example.test", "b2", false }, { "bob", "example.test", nil, false },
      { "eve", "evil.example", "x", true }, { "eve", "evil.example", nil, true }, { nil, "evil.example", nil, false },
      { "x", "spam.example", "r", true }, { nil, "spam.example", nil, true }, { nil, "muc.spam.example", "n", true },
      { nil, "notspam.example", nil, false }, { nil, "only.example", "res", true }, { nil, "only.example", "other", false },
      { "u", "only.example", "res", false },
    }
    for _, c in ipairs(cases) do
      assert.equal(c[4], m(set, c[1], c[2], c[3]), table.concat({ c[1] or "", c[2], c[3] or "" }, "|"))
    end
    serve.run({ users = USERS }, function(_, port)
      local a = login(port, "alice", "a")
      local b1, b2, c = login(port, "bob", "b1"), login(port, "bob", "b2"), login(port, "carol", "c")
      local got = inbox(a)
      assert(a:block({ BOB .. "/b1" }))
      b1:send_message(ALICE .. "/a", "from b1")
      b2:send_message(ALICE .. "/a", "from b2")
      wait_for(got, 1)
      assert(a:unblock())
      assert(a:block({ "example.test" }))             -- every other account here
      c:send_message(ALICE .. "/a", "from carol")
      b2:send_message(ALICE .. "/a", "from b2 again")
      assert(a:request(st.iq({ type = "get", to = "example.test" }):query("urn:xmpp:ping")))
      assert.truthy(assert(a:disco_info()).features[NS])
      assert(a:unblock())
      c:send_message(ALICE .. "/a", "marker")
      wait_for(got, 2)
      lxmpp.sleep(0.05)
      assert.same({ "from b2", "marker" }, bodies(got))
      for _, cl in ipairs({ a, b1, b2, c }) do cl:close() end
    end)
  end)

  it("sends unavailable presence to a contact it blocks, nothing meanwhile, and presence again on unblock", function()
    serve.run({ users = USERS }, function(srv, port)
      local a, b = login(port, "alice", "a"), login(port, "bob", "b")
      assert(a:request(st.iq({ type = "get" }):query("jabber:iq:roster")))
      assert(b:request(st.iq({ type = "get" }):query("jabber:iq:roster")))
      a:send_presence()
      b:send_presence()
      befriend(srv, a, ALICE, b, BOB)
      lxmpp.sleep(0.1)                                 -- the presence the subscriptions bring
      local at_b, at_a = {}, {}
      b:on("presence", function(p) if p.attr.from == ALICE .. "/a" then at_b[#at_b + 1] = p end end)
      a:on("presence", function(p) if p.attr.from == BOB .. "/b" then at_a[#at_a + 1] = p end end)
      assert(a:block({ BOB }))
      wait_for(at_b, 1)
      assert.equal("unavailable", at_b[1].attr.type)
      a:send_presence({ status = "hidden from bob" })
      b:send_presence({ status = "bob is here" })    -- alice does not see it
      lxmpp.sleep(0.1)
      assert(a:unblock({ BOB }))
      wait_for(at_b, 2)
      assert.is_nil(at_b[2].attr.type)
      assert.equal("hidden from bob", at_b[2]:get_child_text("status"))
      b:send_presence({ status = "marker" })
      wait_for(at_a, 1)
      assert.same({ "marker" }, { at_a[1]:get_child_text("status") })
      a:close()
      b:close()
    end)
  end)

  it("applies a blocked contact's revocation to our roster, silently, so unblocking shows nothing", function()
    serve.run({ users = USERS }, function(srv, port)
      -- XEP-0191 §3.3 keeps the blocked contact's stanzas from us, but
      -- RFC 6121 §3.2, §3.3 makes ending its side of a subscription the
      -- contact's call: our roster follows, pushed, without the presence
      srv.store:set_roster_item("alice", BOB, { subscription = "both", groups = {} })
      srv.store:set_roster_item("bob", ALICE, { subscription = "both", groups = {} })
      local b1 = login(port, "bob", "b1")
      assert(b1:request(st.iq({ type = "get" }):query("jabber:iq:roster")))
      local pushed = {}
      b1:on("iq", function(iq)
        local q = iq:get_child("query", "jabber:iq:roster")
        local it = q and q:get_child("item")
        if it and it.attr.jid == ALICE then pushed[#pushed + 1] = it.attr.subscription end
      end)
      local seen = serve.collect(b1, "presence")
      b1:send_presence()
      assert(b1:block({ ALICE }))
      local a = login(port, "alice", "a")
      a:send_presence({ status = "secret" })
      assert(a:send(st.presence({ to = BOB, type = "unsubscribed" })))
      assert(a:send(st.presence({ to = BOB, type = "unsubscribe" })))
      assert.truthy(serve.until_true(function()
        local i = srv.store:get_roster("bob").items[ALICE]
        return i and i.subscription == "none"
      end), "bob's roster follows alice's revocation")
      assert.equal("none", srv.store:get_roster("alice").items[BOB].subscription)
      wait_for(pushed, 2)
      assert.same({ "from", "none" }, pushed)
      for _, p in ipairs(seen) do assert.not_equal(ALICE, (p.attr.from or ""):match("^[^/]+")) end
      assert(b1:unblock({ ALICE }))
      local b2 = login(port, "bob", "b2")
      local at_b2 = serve.collect(b2, "presence")
      b2:send_presence()
      assert.truthy(serve.until_true(function() return #at_b2 >= 1 end))
      lxmpp.sleep(0.2)
      for _, p in ipairs(at_b2) do assert.not_equal(ALICE .. "/a", p.attr.from) end
      for _, p in ipairs(seen) do assert.not_equal(ALICE, (p.attr.from or ""):match("^[^/]+")) end
      a:close(); b1:close(); b2:close()
    end)
  end)

  it("hides a blocked contact's presence and pending request when we log in", function()
    serve.run({ users = USERS }, function(srv, port)
      local a, b = login(port, "alice", "a"), login(port, "bob", "b")
      a:send_presence()
      b:send_presence()
      befriend(srv, a, ALICE, b, BOB)
      assert(a:block({ BOB }))
      a:close()
      local c = login(port, "carol", "c")
      c:send(st.presence({ to = ALICE, type = "subscribe" }))   -- kept until alice logs in
      assert.truthy(serve.until_true(function() return srv.store:get_roster("alice").pending[CAROL] end))
      a = login(port, "alice", "again")
      assert(a:block({ CAROL }))
      local seen = {}
      a:on("presence", function(p) seen[#seen + 1] = p.attr.from end)
      a:send_presence()
      wait_for(seen, 1)                       -- our own presence comes back; the rest would follow
      lxmpp.sleep(0.1)
      assert.same({ ALICE .. "/again" }, seen)
      a:close()
      b:close()
      c:close()
    end)
  end)
end)
