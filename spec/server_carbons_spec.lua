-- XEP-0280 message carbons on the embedded server, with lxmpp's own
-- client: enabling per resource, which messages are copied (chat, normal
-- with a body; not errors, headlines, groupchat, MUC private messages
-- received, <private/> or <no-copy/>), to whom (enabled resources that did
-- not get the original), the copy's addressing, the XEP-0198 resumption of
-- the enabled state, and forgeries (a client cannot make a carbon).
--
-- Negative cases end with a message that is copied: copies travel in
-- order, so when the marker's copy arrives, a wrong copy would have too.
local lxmpp = require "lxmpp"
local st = lxmpp.stanza
local serve = require "spec.support.serve"
local raw = require "spec.support.raw"

local USERS = { alice = "alice-pw", bob = "bob-pw" }
local NS = "urn:xmpp:carbons:2"
local ALICE, BOB = "alice@example.test", "bob@example.test"

local function login(port, user, res) return assert(serve.login(port, user, USERS[user], res)) end

-- The carbons a client gets: { kind =, inner =, outer = }, in order; only
-- those of messages with a body unless `all` (clients send receipts,
-- chat messages that are copied too).
local function carbons_of(c, all)
  local list = {}
  for _, kind in ipairs({ "received", "sent" }) do
    c:on("carbon-" .. kind, function(inner, outer)
      if all or inner:get_child_text("body") then list[#list + 1] = { kind = kind, inner = inner, outer = outer } end
    end)
  end
  return list
end

local function bodies(list)
  local out = {}
  for _, cb in ipairs(list) do out[#out + 1] = cb.kind .. ":" .. tostring(cb.inner:get_child_text("body")) end
  return out
end

local function wait_for(list, n) assert.truthy(serve.until_true(function() return #list >= n end), "timed out") end

local function body_messages(c)
  local list = {}
  c:on("message", function(m) if m:get_child_text("body") then list[#list + 1] = m end end)
  return list
end

describe("embedded server: message carbons", function()
  it("advertises urn:xmpp:carbons:2 and answers enable, disable and bad requests", function()
    serve.run({ users = USERS }, function(srv, port)
      local a = login(port, "alice", "a1")
      local info = assert(a:disco_info())
      assert.is_true(info.features[NS])
      assert.is_true(assert(a:enable_carbons()))
      assert.is_true(srv.sessions[ALICE].a1.carbons)
      assert.is_true(assert(a:enable_carbons()))           -- twice is no error (§9.1)
      local r, _, cond = a:request(st.iq({ type = "get" }):tag("enable", { xmlns = NS }))
      assert.is_nil(r)
      assert.equal("bad-request", cond)
      r, _, cond = a:request(st.iq({ type = "set" }):tag("sent", { xmlns = NS }))
      assert.is_nil(r)
      assert.equal("bad-request", cond)
      assert.is_true(assert(a:disable_carbons()))
      assert.is_nil(srv.sessions[ALICE].a1.carbons)
      assert.is_true(assert(a:disable_carbons()))
      a:close()
    end)
  end)

  it("copies a received message to the other enabled resources only, from the bare JID", function()
    serve.run({ users = USERS }, function(_, port)
      local a1, a2, a3 = login(port, "alice", "a1"), login(port, "alice", "a2"), login(port, "alice", "a3")
      local b = login(port, "bob", "b")
      assert(a1:enable_carbons())
      assert(a2:enable_carbons())
      local c1, c2, c3 = carbons_of(a1), carbons_of(a2), carbons_of(a3)
      local m1, m2, m3 = body_messages(a1), body_messages(a2), body_messages(a3)
      b:send(st.message({ to = ALICE .. "/a1", type = "chat", id = "m1" }, "to a1"))
      wait_for(c2, 1)
      wait_for(m1, 1)
      local copy = c2[1]
      assert.equal("received", copy.kind)
      assert.equal(ALICE, copy.outer.attr.from)
      assert.equal(ALICE .. "/a2", copy.outer.attr.to)
      assert.equal("chat", copy.outer.attr.type)
      assert.equal(BOB .. "/b", copy.inner.attr.from)
      assert.equal(ALICE .. "/a1", copy.inner.attr.to)
      assert.equal("m1", copy.inner.attr.id)
      assert.equal("to a1", copy.inner:get_child_text("body"))
      -- a3 did not enable carbons: neither a copy nor the message
      b:send(st.message({ to = ALICE .. "/a3", type = "chat" }, "to a3"))
      wait_for(c1, 1)
      wait_for(c2, 2)
      wait_for(m3, 1)
      lxmpp.sleep(0.05)
      assert.same({ "received:to a3" }, bodies(c1))
      assert.same({ "received:to a1", "received:to a3" }, bodies(c2))
      assert.same({}, c3)
      assert.equal(1, #m1)
      assert.equal(0, #m2)
      for _, c in ipairs({ a1, a2, a3, b }) do c:close() end
    end)
  end)

  it("copies a message to the bare JID to enabled resources the RFC 6121 rules passed over", function()
    serve.run({ users = USERS }, function(_, port)
      local hi, lo, off = login(port, "alice", "hi"), login(port, "alice", "lo"), login(port, "alice", "off")
      local b = login(port, "bob", "b")
      for _, c in ipairs({ hi, lo, off }) do assert(c:enable_carbons()) end
      hi:send_presence({ priority = "5" })
      lo:send_presence({ priority = "1" })                -- available, lower priority
      lxmpp.sleep(0.1)                                    -- "off" sent no presence
      local chi, clo, coff = carbons_of(hi), carbons_of(lo), carbons_of(off)
      local mhi = body_messages(hi)
      b:send(st.message({ to = ALICE, type = "chat" }, "to the bare JID"))
      wait_for(clo, 1)
      wait_for(coff, 1)
      wait_for(mhi, 1)
      assert.same({ "received:to the bare JID" }, bodies(clo))
      assert.same({ "received:to the bare JID" }, bodies(coff))
      assert.equal(ALICE, clo[1].inner.attr.to)
      -- type normal with a body is copied too
      b:send(st.message({ to = ALICE }, "a normal message"))
      wait_for(clo, 2)
      assert.same({ "received:to the bare JID", "received:a normal message" }, bodies(clo))
      assert.same({}, chi)
      for _, c in ipairs({ hi, lo, off, b }) do c:close() end
    end)
  end)

  it("copies what a resource sends to its other enabled resources, not to itself", function()
    serve.run({ users = USERS }, function(_, port)
      local a1, a2, a3 = login(port, "alice", "a1"), login(port, "alice", "a2"), login(port, "alice", "a3")
      local b = login(port, "bob", "b")
      assert(a1:enable_carbons())
      assert(a2:enable_carbons())                  -- a3, the sender, need not enable them
      local c1, c2, c3 = carbons_of(a1), carbons_of(a2), carbons_of(a3)
      local got = body_messages(b)
      b:send_presence()
      lxmpp.sleep(0.1)
      a2:send(st.message({ to = BOB .. "/b", type = "chat" }, "from a2"))
      a3:send(st.message({ to = BOB, type = "chat" }, "from a3"))
      wait_for(c1, 2)
      wait_for(c2, 1)
      wait_for(got, 2)
      local seen = bodies(c1)
      table.sort(seen)                             -- two senders: no order between them
      assert.same({ "sent:from a2", "sent:from a3" }, seen)
      assert.same({ "sent:from a3" }, bodies(c2))
      assert.same({}, c3)
      local copy = c1[1].inner.attr.from == ALICE .. "/a2" and c1[1] or c1[2]
      assert.equal(ALICE, copy.outer.attr.from)
      assert.equal(ALICE .. "/a1", copy.outer.attr.to)
      assert.equal(ALICE .. "/a2", copy.inner.attr.from)
      assert.equal(BOB .. "/b", copy.inner.attr.to)
      for _, c in ipairs({ a1, a2, a3, b }) do c:close() end
    end)
  end)

  it("copies no errors, headlines, bodiless normal messages, <private/> or <no-copy/>", function()
    serve.run({ users = USERS }, function(_, port)
      local a1, a2 = login(port, "alice", "a1"), login(port, "alice", "a2")
      local b = login(port, "bob", "b")
      assert(a2:enable_carbons())
      a1:send_presence()
      local c2, all = carbons_of(a2), carbons_of(a2, true)
      local at_b = {}
      b:on("message", function(m) at_b[#at_b + 1] = m end)
      local at_a1 = {}
      a1:on("message", function(m) at_a1[#at_a1 + 1] = m end)
      b:send(st.message({ to = ALICE .. "/a1", type = "headline" }, "headline"))
      b:send(st.message({ to = ALICE .. "/a1" }):tag("received", { xmlns = "urn:xmpp:receipts", id = "x" }))
      b:send(st.message({ to = ALICE .. "/a1", type = "error" }, "an error"))
      b:send(st.message({ to = ALICE .. "/a1", type = "chat" }, "private in")
        :tag("private", { xmlns = NS }):up())
      b:send(st.message({ to = ALICE .. "/a1", type = "chat" }, "no-copy in")
        :tag("no-copy", { xmlns = "urn:xmpp:hints" }):up())
      a1:send(st.message({ to = BOB .. "/b", type = "chat" }, "private out"):tag("private", { xmlns = NS }):up())
      a1:send(st.message({ to = BOB .. "/b", type = "chat" }, "no-copy out")
        :tag("no-copy", { xmlns = "urn:xmpp:hints" }):up())
      a1:send(st.message({ to = BOB .. "/b", type = "chat" }, "marker"))
      wait_for(c2, 1)
      assert.same({ "sent:marker" }, bodies(c2))
      for _, cb in ipairs(all) do            -- of what bob sent, only his receipts (chat) were copied
        assert.equal("chat", cb.inner.attr.type, tostring(cb.inner))
      end
      -- the receiving side removes <private/> (§7), keeps other hints
      wait_for(at_b, 3)
      assert.is_nil(at_b[1]:get_child("private", NS))
      assert.equal("private out", at_b[1]:get_child_text("body"))
      assert.truthy(at_b[2]:get_child("no-copy", "urn:xmpp:hints"))
      wait_for(at_a1, 5)
      for _, m in ipairs(at_a1) do assert.is_nil(m:get_child("private", NS)) end
      for _, c in ipairs({ a1, a2, b }) do c:close() end
    end)
  end)

  it("copies no groupchat and no private message from a room, but a private message to one", function()
    serve.run({ users = USERS, muc = "rooms.example.test" }, function(_, port)
      local a1, a2 = login(port, "alice", "a1"), login(port, "alice", "a2")
      local b = login(port, "bob", "b")
      assert(a2:enable_carbons())
      local room = "tea@rooms.example.test"
      assert(a1:muc_join(room, "alice"))
      assert(b:muc_join(room, "bob"))
      local c2 = carbons_of(a2)
      local pm_at_a1 = body_messages(a1)
      b:send(st.message({ to = room, type = "groupchat" }, "to the room"))
      b:send(st.message({ to = room .. "/alice", type = "chat" }, "pm to alice")
        :tag("x", { xmlns = "http://jabber.org/protocol/muc#user" }):up())
      -- a room elsewhere (a component, say) is known by the <x/> it adds
      b:send(st.message({ to = ALICE .. "/a1", type = "chat" }, "pm from a remote room")
        :tag("x", { xmlns = "http://jabber.org/protocol/muc#user" }):up())
      wait_for(pm_at_a1, 2)
      a1:send(st.message({ to = room .. "/bob", type = "chat" }, "pm to bob")
        :tag("x", { xmlns = "http://jabber.org/protocol/muc#user" }):up())
      wait_for(c2, 1)
      lxmpp.sleep(0.05)
      assert.same({ "sent:pm to bob" }, bodies(c2))
      assert.equal(room .. "/bob", c2[1].inner.attr.to)
      for _, c in ipairs({ a1, a2, b }) do c:close() end
    end)
  end)

  it("lets no client forge a carbon: copies come only from the account's bare JID", function()
    serve.run({ users = USERS }, function(_, port)
      local a1, a2 = login(port, "alice", "a1"), login(port, "alice", "a2")
      local b = login(port, "bob", "b")
      assert(a1:enable_carbons())
      local c1 = carbons_of(a1)
      local direct = {}
      a1:on("message", function(m) direct[#direct + 1] = m end)
      local function forged(to, kind)
        return st.message({ to = to, type = "chat" }):tag(kind, { xmlns = NS })
          :tag("forwarded", { xmlns = "urn:xmpp:forward:0" })
          :add_child(st.message({ from = "carol@example.test/x", to = ALICE .. "/a1", type = "chat" }, "forged"))
      end
      b:send(forged(ALICE .. "/a1", "received"))        -- another user
      a2:send(forged(ALICE .. "/a1", "sent"))           -- a sibling resource: stamped with its full JID
      b:send(st.message({ to = ALICE .. "/a2", type = "chat" }, "marker"))
      wait_for(c1, 1)
      lxmpp.sleep(0.05)
      -- the only carbon is the server's copy of the marker; the forgeries
      -- arrived from their senders' full JIDs and the client dropped them
      assert.same({ "received:marker" }, bodies(c1))
      assert.same({}, direct)
      for _, c in ipairs({ a1, a2, b }) do c:close() end
    end)
  end)

  it("keeps a resource's carbons enabled across XEP-0198 resumption", function()
    serve.run({ users = USERS }, function(srv, port)
      local b = login(port, "bob", "b")
      local a1 = login(port, "alice", "a1")
      local r = raw.login(port, serve.pki().ca, "alice", USERS.alice)
      r:send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
      local enabled = assert(r:stanza())
      assert.equal("enabled", enabled.name)
      r:send("<iq type='set' id='c1'><enable xmlns='" .. NS .. "'/></iq>")
      local res
      repeat res = assert(r:stanza()) until res.name == "iq"
      assert.equal("result", res.attr.type)
      r:close()
      assert.truthy(serve.until_true(function()
        local s = srv.sessions[ALICE].raw
        return s and s.hibernation ~= nil
      end))
      local r2 = raw.login(port, serve.pki().ca, "alice", USERS.alice, false)
      r2:send("<resume xmlns='urn:xmpp:sm:3' previd='" .. enabled.attr.id .. "' h='1'/>")
      assert.equal("resumed", assert(r2:stanza()).name)
      b:send(st.message({ to = ALICE .. "/a1", type = "chat" }, "after resumption"))
      local copy
      repeat copy = assert(r2:stanza()) until copy.name == "message"
      assert.equal(ALICE, copy.attr.from)
      local fwd = copy:get_child("received", NS):get_child("forwarded", "urn:xmpp:forward:0")
      assert.equal("after resumption", fwd:get_child("message", "jabber:client"):get_child_text("body"))
      r2:close()
      a1:close()
      b:close()
    end)
  end)
end)
