-- The embedded server's presence rules that a peer server's transcript
-- tests found wrong, driven by lxmpp clients: removing a roster item ends
-- the subscriptions and takes our presence from a contact that could see it
-- (RFC 6121 §2.5.2, §3.2.2, §3.3.3), and presence probes sent by clients
-- are answered, never dropped (RFC 6121 §4.3, §4.3.2).
local lxmpp = require "lxmpp"
local st = lxmpp.stanza
local serve = require "spec.support.serve"
local ev = require "spec.support.events"

local USERS = { alice = "alice-pw", bob = "bob-pw", carol = "carol-pw" }
local D = "@example.test"

local function login(port, user, res, status)
  local c = assert(serve.login(port, user, USERS[user], res))
  local p = st.presence()
  if status then p:text_tag("status", status) end
  assert(c:send(p))
  return c
end

-- Both sides of a subscription, written straight to the store before anyone
-- logs in: `user` has `contact` with subscription `sub`, and the contact has
-- the mirror image.
local MIRROR = { none = "none", to = "from", from = "to", both = "both" }
local function subscribed(srv, user, contact, sub)
  srv.store:set_roster_item(user, contact .. D, { subscription = sub, groups = {} })
  srv.store:set_roster_item(contact, user .. D, { subscription = MIRROR[sub], groups = {} })
end

local function remove_item(c, contact)
  return c:request(st.iq({ type = "set" }):query("jabber:iq:roster")
    :tag("item", { jid = contact, subscription = "remove" }))
end

-- The presence stanzas of `list` that pass (type, from), in order.
local function picked(list, typ, from)
  local out = {}
  for _, p in ipairs(list) do
    if p.attr.type == typ and p.attr.from == from then out[#out + 1] = p end
  end
  return out
end

local function roster_item(srv, user, contact)
  return srv.store:get_roster(user).items[contact .. D]
end

describe("embedded server: removing a roster item (RFC 6121 §2.5.2)", function()
  it("cancels both subscriptions and sends the contact unavailable from each available resource", function()
    serve.run({ users = USERS }, function(srv, port)
      subscribed(srv, "alice", "bob", "both")
      local b = login(port, "bob", "b")
      assert(b:request(st.iq({ type = "get" }):query("jabber:iq:roster")))   -- interested: gets pushes
      local seen = serve.collect(b, "presence")
      local pushes = serve.collect(b, "iq")
      local a1, a2 = login(port, "alice", "one"), login(port, "alice", "two")
      local a2_seen = serve.collect(a2, "presence")
      assert.truthy(serve.until_true(function()
        return #picked(seen, nil, "alice" .. D .. "/one") == 1 and #picked(seen, nil, "alice" .. D .. "/two") == 1
      end))
      assert(remove_item(a1, "bob" .. D))
      assert.truthy(serve.until_true(function()
        return #picked(seen, "unavailable", "alice" .. D .. "/one") == 1
          and #picked(seen, "unavailable", "alice" .. D .. "/two") == 1
      end), "bob sees both of alice's resources go")
      assert.equal(1, #picked(seen, "unsubscribe", "alice" .. D))
      assert.equal(1, #picked(seen, "unsubscribed", "alice" .. D))
      -- bob's side: no subscription left, pushed to bob
      assert.truthy(serve.until_true(function()
        local it = roster_item(srv, "bob", "alice")
        return it and it.subscription == "none" and not it.ask
      end))
      assert.truthy(serve.until_true(function()
        for _, iq in ipairs(pushes) do
          local item = iq:find("{jabber:iq:roster}query/item")
          if item and item.attr.jid == "alice" .. D and item.attr.subscription == "none" then return true end
        end
      end), "bob's roster push")
      assert.is_nil(roster_item(srv, "alice", "bob"))
      -- and alice's resources see bob go too (bob's server answers the
      -- unsubscribe with his unavailable, RFC 6121 §3.3.3)
      assert.truthy(serve.until_true(function() return #picked(a2_seen, "unavailable", "bob" .. D .. "/b") == 1 end))
      a1:close(); a2:close(); b:close()
    end)
  end)

  it("sends unavailable only to a contact that could see us", function()
    serve.run({ users = USERS }, function(srv, port)
      subscribed(srv, "alice", "bob", "to")     -- alice sees bob, bob does not see alice
      subscribed(srv, "alice", "carol", "from") -- carol sees alice, alice does not see carol
      local b, c = login(port, "bob", "b"), login(port, "carol", "c")
      local bob_seen, carol_seen = serve.collect(b, "presence"), serve.collect(c, "presence")
      local a = login(port, "alice", "one")
      assert.truthy(serve.until_true(function() return #picked(carol_seen, nil, "alice" .. D .. "/one") == 1 end))
      assert(remove_item(a, "bob" .. D))
      assert(remove_item(a, "carol" .. D))
      assert.truthy(serve.until_true(function() return #picked(carol_seen, "unavailable", "alice" .. D .. "/one") == 1 end))
      assert.equal(1, #picked(carol_seen, "unsubscribed", "alice" .. D))
      assert.equal(0, #picked(carol_seen, "unsubscribe", "alice" .. D))
      assert.truthy(serve.until_true(function() return #picked(bob_seen, "unsubscribe", "alice" .. D) == 1 end))
      ev.settle(0.1)
      assert.equal(0, #picked(bob_seen, "unavailable", "alice" .. D .. "/one"))
      assert.equal(0, #picked(bob_seen, "unsubscribed", "alice" .. D))
      assert.equal("none", roster_item(srv, "bob", "alice").subscription)
      assert.equal("none", roster_item(srv, "carol", "alice").subscription)
      a:close(); b:close(); c:close()
    end)
  end)
end)

describe("embedded server: presence probes from clients (RFC 6121 §4.3)", function()
  local function probe(c, to)
    assert(c:send(st.presence({ type = "probe", to = to, id = "pr1" })))
  end

  it("answers a subscribed prober with the contact's presence, to the resource that asked", function()
    serve.run({ users = USERS }, function(srv, port)
      subscribed(srv, "alice", "bob", "to")
      local b1, b2 = login(port, "bob", "b1", "busy"), login(port, "bob", "b2", "around")
      local a = login(port, "alice", "one")
      local a_other = login(port, "alice", "two")
      lxmpp.sleep(0.1)
      local seen, other_seen = serve.collect(a, "presence"), serve.collect(a_other, "presence")
      probe(a, "bob" .. D)
      assert.truthy(serve.until_true(function()
        return #picked(seen, nil, "bob" .. D .. "/b1") == 1 and #picked(seen, nil, "bob" .. D .. "/b2") == 1
      end), "alice gets bob's presence")
      assert.equal("busy", picked(seen, nil, "bob" .. D .. "/b1")[1]:get_child_text("status"))
      assert.equal("alice" .. D .. "/one", picked(seen, nil, "bob" .. D .. "/b1")[1].attr.to)
      -- a probe to a full JID is about the account too
      probe(a, "bob" .. D .. "/b2")
      assert.truthy(serve.until_true(function() return #picked(seen, nil, "bob" .. D .. "/b1") == 2 end))
      ev.settle(0.1)
      assert.equal(0, #picked(other_seen, nil, "bob" .. D .. "/b1"))   -- only the asker
      -- bob gone: one unavailable from his bare JID, dated (XEP-0203) from
      -- when his last resource left
      b1:close(); b2:close()
      assert.truthy(serve.until_true(function() return #picked(seen, "unavailable", "bob" .. D .. "/b2") == 1 end))
      probe(a, "bob" .. D)
      assert.truthy(serve.until_true(function() return #picked(seen, "unavailable", "bob" .. D) == 1 end))
      local delay = picked(seen, "unavailable", "bob" .. D)[1]:get_child("delay", "urn:xmpp:delay")
      assert.is_not_nil(delay, "a delay stamp")
      assert.equal("example.test", delay.attr.from)
      assert.equal(os.date("!%Y-%m-%d"), delay.attr.stamp:sub(1, 10))
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", delay.attr.stamp)
      -- carol never came online since the server started: undated
      srv.store:set_roster_item("carol", "alice" .. D, { subscription = "from", groups = {} })
      srv.store:set_roster_item("alice", "carol" .. D, { subscription = "to", groups = {} })
      probe(a, "carol" .. D)
      assert.truthy(serve.until_true(function() return #picked(seen, "unavailable", "carol" .. D) == 1 end))
      assert.is_nil(picked(seen, "unavailable", "carol" .. D)[1]:get_child("delay", "urn:xmpp:delay"))
      -- the prober's subscription is untouched
      assert.equal("to", roster_item(srv, "alice", "bob").subscription)
      a:close(); a_other:close()
    end)
  end)

  it("answers an unsubscribed prober with unsubscribed, and reveals nothing", function()
    serve.run({ users = USERS }, function(srv, port)
      local b = login(port, "bob", "b", "secret plans")
      local c = login(port, "carol", "c")
      local seen = serve.collect(c, "presence")
      probe(c, "bob" .. D)
      ev.settle(0.2)
      assert.equal(0, #picked(seen, nil, "bob" .. D .. "/b"))
      assert.is_nil(roster_item(srv, "bob", "carol"))
      -- the answer is unsubscribed, which ends a subscription only the
      -- prober believes in (RFC 6121 §3.2.3 delivers it then); the same for
      -- an account that does not exist
      srv.store:set_roster_item("carol", "bob" .. D, { subscription = "to", groups = {} })
      srv.store:set_roster_item("carol", "nobody" .. D, { subscription = "to", groups = {} })
      probe(c, "bob" .. D)
      probe(c, "nobody" .. D)
      assert.truthy(serve.until_true(function()
        return #picked(seen, "unsubscribed", "bob" .. D) == 1 and #picked(seen, "unsubscribed", "nobody" .. D) == 1
      end))
      assert.equal("none", roster_item(srv, "carol", "bob").subscription)
      assert.equal("none", roster_item(srv, "carol", "nobody").subscription)
      assert.equal(0, #picked(seen, nil, "bob" .. D .. "/b"))
      assert.is_nil(roster_item(srv, "bob", "carol"))
      b:close(); c:close()
    end)
  end)

  it("keeps a pending subscription request of the prober pending", function()
    serve.run({ users = USERS }, function(srv, port)
      local b = login(port, "bob", "b")
      local c = login(port, "carol", "c")
      local seen = serve.collect(c, "presence")
      assert(c:send(st.presence({ type = "subscribe", to = "bob" .. D })))
      assert.truthy(serve.until_true(function() return srv.store:get_roster("bob").pending["carol" .. D] ~= nil end))
      probe(c, "bob" .. D)
      ev.settle(0.2)
      assert.equal(0, #picked(seen, "unsubscribed", "bob" .. D))
      assert.equal("subscribe", roster_item(srv, "carol", "bob").ask)
      b:close(); c:close()
    end)
  end)

  it("answers a probe of one's own account with one's other resources, and refuses malformed ones", function()
    serve.run({ users = USERS }, function(_, port)
      local a1, a2 = login(port, "alice", "one"), login(port, "alice", "two", "upstairs")
      lxmpp.sleep(0.1)
      local seen = serve.collect(a1, "presence")
      probe(a1, "alice" .. D)
      assert.truthy(serve.until_true(function() return #picked(seen, nil, "alice" .. D .. "/two") == 1 end))
      assert.equal("upstairs", picked(seen, nil, "alice" .. D .. "/two")[1]:get_child_text("status"))
      probe(a1, "bad@@jid")
      assert.truthy(serve.until_true(function() return #picked(seen, "error", "bad@@jid") == 1 end))
      assert.equal("jid-malformed", select(2, picked(seen, "error", "bad@@jid")[1]:get_error()))
      -- a presence type RFC 6121 §4.7.1 does not define: bad-request
      assert(a1:send(st.presence({ type = "shout", to = "bob" .. D })))
      assert.truthy(serve.until_true(function() return #picked(seen, "error", "bob" .. D) == 1 end))
      assert.equal("bad-request", select(2, picked(seen, "error", "bob" .. D)[1]:get_error()))
      a1:close(); a2:close()
    end)
  end)
end)

describe("embedded server: initial presence (RFC 6121 §4.3.2)", function()
  it("gets a local contact's presence only when the contact's own roster lets us see it", function()
    serve.run({ users = USERS }, function(srv, port)
      -- alice's roster says she sees bob, bob's says she does not (a
      -- revocation her side never applied); carol's subscription is real
      srv.store:set_roster_item("alice", "bob" .. D, { subscription = "both", groups = {} })
      srv.store:set_roster_item("bob", "alice" .. D, { subscription = "none", groups = {} })
      subscribed(srv, "carol", "bob", "to")
      local b = login(port, "bob", "b", "secret plans")
      local a = assert(serve.login(port, "alice", USERS.alice, "a"))
      local c = assert(serve.login(port, "carol", USERS.carol, "c"))
      local at_a, at_c = serve.collect(a, "presence"), serve.collect(c, "presence")
      assert(a:send(st.presence()))
      assert(c:send(st.presence()))
      assert.truthy(serve.until_true(function() return #picked(at_c, nil, "bob" .. D .. "/b") == 1 end))
      assert.truthy(serve.until_true(function() return #picked(at_a, nil, "alice" .. D .. "/a") == 1 end))
      -- and, as a probe would have, "unsubscribed" sets alice's roster right
      assert.truthy(serve.until_true(function() return #picked(at_a, "unsubscribed", "bob" .. D) == 1 end))
      assert.equal("from", roster_item(srv, "alice", "bob").subscription)
      ev.settle(0.2)
      assert.equal(0, #picked(at_a, nil, "bob" .. D .. "/b"))
      assert.equal("secret plans", picked(at_c, nil, "bob" .. D .. "/b")[1]:get_child_text("status"))
      assert.equal("to", roster_item(srv, "carol", "bob").subscription)
      a:close(); b:close(); c:close()
    end)
  end)
end)

describe("embedded server: a full roster (limits.max_roster, RFC 6121 §2.3.3)", function()
  local NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
  local ELSEWHERE = "@elsewhere.test"

  -- n contacts elsewhere in user's roster, written straight to the store
  local function fill(srv, user, n)
    for i = 1, n do srv.store:set_roster_item(user, "c" .. i .. ELSEWHERE, { subscription = "none", groups = {} }) end
  end

  local function size(srv, user) return (srv.store:roster_size(user)) end

  it("refuses a roster set that adds a contact past the limit, and still changes and removes items", function()
    serve.run({ users = USERS, limits = { max_roster = 3 } }, function(srv, port)
      fill(srv, "alice", 3)
      local a = login(port, "alice", "one")
      local ok, msg, cond, e = a:request(st.iq({ type = "set" }):query("jabber:iq:roster")
        :tag("item", { jid = "new" .. ELSEWHERE, name = "New" }))
      assert.is_nil(ok)
      assert.equal("resource-constraint", cond)
      assert.matches("at most 3 contacts", msg)
      assert.equal("cancel", e:get_child("error").attr.type)
      assert.is_nil(srv.store:get_roster_item("alice", "new" .. ELSEWHERE))
      assert(a:roster_set("c1" .. ELSEWHERE, "Renamed", { "g" }))          -- a change is no new item
      assert.equal("Renamed", srv.store:get_roster_item("alice", "c1" .. ELSEWHERE).name)
      assert(a:roster_remove("c2" .. ELSEWHERE))
      assert(a:roster_set("new" .. ELSEWHERE, "New"))                      -- room again
      assert.equal(3, size(srv, "alice"))
      a:close()
    end)
  end)

  it("refuses a subscription request that would add a contact to a full roster", function()
    serve.run({ users = USERS, limits = { max_roster = 2 } }, function(srv, port)
      fill(srv, "alice", 2)
      local b = login(port, "bob", "b")
      local b_subs = serve.collect(b, "subscription")
      local a = login(port, "alice", "one")
      local seen = serve.collect(a, "presence")
      assert(a:subscribe("bob" .. D))
      assert.truthy(serve.until_true(function() return #picked(seen, "error", "bob" .. D) == 1 end))
      local err = picked(seen, "error", "bob" .. D)[1]:get_child("error")
      assert.equal("cancel", err.attr.type)
      assert.is_not_nil(err:get_child("resource-constraint", NS_STANZAS))
      ev.settle(0.1)
      assert.equal(0, #b_subs)                                    -- never sent on
      assert.is_nil(srv.store:get_pending("bob", "alice" .. D))
      assert.is_nil(roster_item(srv, "alice", "bob"))
      assert.equal(2, size(srv, "alice"))
      a:close(); b:close()
    end)
  end)

  -- an inbound request is no roster item (limits.max_pending bounds those):
  -- it is kept and shown; approving it would add an item, so that waits
  -- for room, and the request stays until then
  it("keeps a request to a full roster and refuses approving it until there is room", function()
    serve.run({ users = USERS, limits = { max_roster = 2 } }, function(srv, port)
      fill(srv, "alice", 2)
      local a = login(port, "alice", "one")
      local a_subs = serve.collect(a, "subscription")
      local seen = serve.collect(a, "presence")
      local b = login(port, "bob", "b")
      local b_subs = serve.collect(b, "subscription")
      assert(b:subscribe("alice" .. D))
      assert.truthy(serve.until_true(function() return #a_subs == 1 end), "alice is asked")
      assert.equal("subscribe", a_subs[1])
      assert.is_not_nil(srv.store:get_pending("alice", "bob" .. D))
      assert(a:approve("bob" .. D))
      assert.truthy(serve.until_true(function() return #picked(seen, "error", "bob" .. D) == 1 end))
      assert.is_not_nil(picked(seen, "error", "bob" .. D)[1]:get_child("error")
        :get_child("resource-constraint", NS_STANZAS))
      ev.settle(0.1)
      assert.equal(0, #b_subs)
      assert.is_not_nil(srv.store:get_pending("alice", "bob" .. D))   -- still there
      assert.equal("subscribe", roster_item(srv, "bob", "alice").ask)
      assert(a:roster_remove("c1" .. ELSEWHERE))
      assert(a:approve("bob" .. D))
      assert.truthy(serve.until_true(function() return #b_subs == 1 end), "bob is approved")
      assert.equal("subscribed", b_subs[1])
      assert.equal("from", roster_item(srv, "alice", "bob").subscription)
      assert.equal("to", roster_item(srv, "bob", "alice").subscription)
      assert.equal(2, size(srv, "alice"))
      a:close(); b:close()
    end)
  end)

  it("serves a roster stored larger than the limit: read, changed, shrunk, not grown", function()
    serve.run({ users = USERS, limits = { max_roster = 2 } }, function(srv, port)
      fill(srv, "alice", 5)
      srv.store:set_roster_item("alice", "bob" .. D, { subscription = "both", groups = {} })
      srv.store:set_roster_item("bob", "alice" .. D, { subscription = "both", groups = {} })
      local b = login(port, "bob", "b")
      local b_seen = serve.collect(b, "presence")
      local a = login(port, "alice", "one")
      local items = assert(a:roster_get())
      local n = 0
      for _ in pairs(items) do n = n + 1 end
      assert.equal(6, n)
      assert.truthy(serve.until_true(function() return #picked(b_seen, nil, "alice" .. D .. "/one") == 1 end),
        "its presence reaches its contacts")
      assert(a:roster_set("c1" .. ELSEWHERE, "Changed"))
      assert(a:roster_remove("c2" .. ELSEWHERE))
      local ok, _, cond = a:roster_set("new" .. ELSEWHERE)
      assert.is_nil(ok)
      assert.equal("resource-constraint", cond)
      assert.equal(5, size(srv, "alice"))
      a:close(); b:close()
    end)
  end)

  it("is a documented limit, 1000 by default", function()
    local limits = require("lxmpp.server").DEFAULT_LIMITS
    assert.equal(1000, limits.max_roster)
    local f = assert(io.open("docs/server.md", "rb"))
    local doc = f:read("*a")
    f:close()
    local row = doc:match("\n| `max_roster` | ([^\n]*)")
    assert.is_not_nil(row, "docs/server.md has no max_roster row in its limits table")
    assert.matches("^1000 |", row)
    assert.matches("resource%-constraint", row)
  end)
end)
