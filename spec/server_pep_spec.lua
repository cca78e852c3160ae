-- Personal eventing (XEP-0163) on the embedded server (lxmpp.server.pep):
-- nodes made by publishing, notifications to the account's resources and
-- its contacts (not to strangers), access, the last item on coming online
-- and on subscription, disco, persistence in SQLite and removal with the
-- account. Real lxmpp clients through the pubsub plugin.
local compat = require "lxmpp.compat"
local lxmpp = require "lxmpp"
local st = require "lxmpp.stanza"
local serve = require "spec.support.serve"
local ev = require "spec.support.events"

local USERS = { alice = "alice-pw", bob = "bob-pw", carol = "carol-pw" }
local ALICE = "alice@example.test"
local NODE = "urn:example:mood"
local NS_ERRORS = "http://jabber.org/protocol/pubsub#errors"

local function mood(text) return st.stanza("mood", { xmlns = NODE }):text(text) end

local function login(port, user, res, silent)
  local c = assert(serve.login(port, user, USERS[user], res))
  if not silent then assert(c:send_presence()) end
  return c
end

-- `follower` subscribes to `owner`'s presence and owner approves.
local function befriend(follower, owner)
  lxmpp.spawn(function() lxmpp.sleep(0.05); follower:subscribe(owner.bare_jid) end)
  assert(ev.expect(owner, "subscription", function(kind) return kind == "subscribe" end))
  assert(owner:approve(follower.bare_jid))
  assert(ev.expect(follower, "subscription", function(kind) return kind == "subscribed" end))
end

local function app_error(s)
  for _, child in ipairs(assert(s and s:get_child("error"), "no error stanza").tags) do
    if child.attr.xmlns == NS_ERRORS then return child.name end
  end
end

describe("embedded server: PEP", function()
  it("makes nodes on publish and tells the account's resources and contacts, not strangers", function()
    serve.run({ users = USERS }, function(_, port)
      local a1, a2 = login(port, "alice", "one"), login(port, "alice", "two")
      local b, c = login(port, "bob"), login(port, "carol")
      befriend(b, a1)
      local h_a2, h_b, h_c = ev.collect(a2, "pubsub-item"), ev.collect(b, "pubsub-item"), ev.collect(c, "pubsub-item")
      assert.equal("current", a1:pep_publish(NODE, mood("happy"), "current"))
      assert.is_true(serve.until_true(function() return #h_a2 == 1 and #h_b == 1 end))
      for _, h in ipairs({ h_a2, h_b }) do
        local service, node, item, s = compat.unpack(h[1], 1, 4)
        assert.same({ ALICE, NODE, "current" }, { service, node, item.id })
        assert.equal("happy", item.payload:get_text())
        assert.same({ ALICE, "headline" }, { s.attr.from, s.attr.type })
      end
      ev.settle(0.2)
      assert.equal(0, #h_c)
      -- reading: the contact may, the stranger may not (presence access model)
      local items = assert(b:pep_items(ALICE, NODE))
      assert.same({ "current", "happy" }, { items[1].id, items[1].payload:get_text() })
      local r, _, cond, s = c:pep_items(ALICE, NODE)
      assert.is_nil(r)
      assert.equal("not-authorized", cond)
      assert.equal("presence-subscription-required", app_error(s))
      -- only the account publishes or creates there
      r, _, cond = b:pubsub_publish(ALICE, NODE, mood("hacked"))
      assert.is_nil(r)
      assert.equal("forbidden", cond)
      r, _, cond = b:pubsub_publish(ALICE, "urn:example:new", mood("x"))
      assert.is_nil(r)
      assert.equal("item-not-found", cond)
      r, _, cond = b:pubsub_create(ALICE, "urn:example:new")
      assert.is_nil(r)
      assert.equal("forbidden", cond)
      -- publish-options configure a new node, and are preconditions after
      assert(a1:pep_publish("urn:example:open", mood("for all"), "x", { ["pubsub#access_model"] = "open" }))
      assert.equal("for all", assert(c:pep_items(ALICE, "urn:example:open"))[1].payload:get_text())
      r, _, cond, s = a1:pep_publish(NODE, mood("x"), nil, { ["pubsub#access_model"] = "open" })
      assert.is_nil(r)
      assert.equal("conflict", cond)
      assert.equal("precondition-not-met", app_error(s))
      -- one item kept by default: the new one replaces the old
      assert(a1:pep_publish(NODE, mood("calm"), "later"))
      items = assert(a1:pep_items(ALICE, NODE))
      assert.same({ "later" }, { items[1].id, items[2] })
      a1:close(); a2:close(); b:close(); c:close()
    end)
  end)

  it("shows the PEP service and its nodes in the account's disco", function()
    serve.run({ users = USERS }, function(_, port)
      local a, b, c = login(port, "alice"), login(port, "bob"), login(port, "carol")
      befriend(b, a)
      assert(a:pep_publish(NODE, mood("happy")))
      for _, who in ipairs({ a, c }) do
        local info = assert(who:disco_info(ALICE))
        local pep = false
        for _, id in ipairs(info.identities) do pep = pep or (id.category == "pubsub" and id.type == "pep") end
        assert.is_true(pep)
        assert.is_true(info.features["http://jabber.org/protocol/pubsub#auto-create"])
      end
      assert.same({ NODE }, { assert(a:disco_items(ALICE))[1].node })
      assert.same({ NODE }, { assert(b:disco_items(ALICE))[1].node })
      assert.equal(0, #assert(c:disco_items(ALICE)))           -- carol may not see it
      a:close(); b:close(); c:close()
    end)
  end)

  it("sends the last item when a resource comes online and on subscription", function()
    serve.run({ users = USERS }, function(_, port)
      local a, b = login(port, "alice"), login(port, "bob")
      befriend(b, a)
      assert(a:pep_publish(NODE, mood("happy"), "m1"))
      assert(a:pep_publish("urn:example:open", mood("open"), "o1", { ["pubsub#access_model"] = "open" }))
      local b2 = login(port, "bob", "later", true)
      local c2 = login(port, "carol", "later", true)
      local a2 = login(port, "alice", "later", true)
      local hb, hc, ha = ev.collect(b2, "pubsub-item"), ev.collect(c2, "pubsub-item"), ev.collect(a2, "pubsub-item")
      assert(b2:send_presence()); assert(c2:send_presence()); assert(a2:send_presence())
      assert.is_true(serve.until_true(function() return #hb == 2 and #ha == 2 end))
      local ids = {}
      for _, h in ipairs(hb) do ids[#ids + 1] = h[3].id end
      table.sort(ids)
      assert.same({ "m1", "o1" }, ids)
      ev.settle(0.2)
      assert.equal(0, #hc)                      -- carol does not see alice's presence
      -- an explicit subscription to an open node gets the last item, then the news
      assert(c2:pubsub_subscribe(ALICE, "urn:example:open"))
      assert.is_true(serve.until_true(function() return #hc == 1 end))
      assert.equal("o1", hc[1][3].id)
      assert(a:pep_publish("urn:example:open", mood("news"), "o2"))
      assert.is_true(serve.until_true(function() return #hc == 2 end))
      assert.equal("news", hc[2][3].payload:get_text())
      a:close(); a2:close(); b:close(); b2:close(); c2:close()
    end)
  end)

  it("keeps PEP nodes in SQLite across a restart, and removes them with the account", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    local path = dir .. "/lxmpp.db"
    serve.run({ users = USERS, storage = path }, function(_, port)
      local a, b = login(port, "alice"), login(port, "bob")
      befriend(b, a)
      assert(a:pep_publish(NODE, mood("kept"), "k"))
      a:close(); b:close()
    end)
    serve.run({ storage = path }, function(srv, port)
      local b = login(port, "bob")
      local items = assert(b:pep_items(ALICE, NODE))
      assert.same({ "k", "kept" }, { items[1].id, items[1].payload:get_text() })
      assert.is_true(srv:remove_user("alice"))
      assert.same({}, srv.store:keys("pubsub_node"))
      assert.same({}, srv.store:keys("pubsub_item"))
      assert(srv:add_user("alice", USERS.alice))
      local r, _, cond = b:pep_items(ALICE, NODE)
      assert.is_nil(r)
      assert.equal("item-not-found", cond)
      b:close()
    end)
    os.execute("rm -rf " .. dir)
  end)

  it("counts node names, titles, affiliations and item ids against limits.max_pubsub_bytes", function()
    serve.run({ users = USERS, limits = { max_pubsub_bytes = 1024 } }, function(srv, port)
      local a = login(port, "alice")
      local service = srv.pep:service(ALICE, true)
      local function total()                  -- what the service holds, recounted
        local n = 0
        for name, node in pairs(service.nodes) do
          n = n + #name + #node.config.title
          for who in pairs(node.affiliations) do n = n + #who end
          for _, it in ipairs(node.items) do n = n + #it.xml + #it.id end
        end
        return n
      end
      -- a name, or a title, larger than what is left is refused; nothing is made
      local r, _, cond = a:pubsub_create(ALICE, "n" .. ("x"):rep(2000))
      assert.is_nil(r)
      assert.equal("resource-constraint", cond)
      r, _, cond = a:pubsub_create(ALICE, "titled", { ["pubsub#title"] = ("t"):rep(2000) })
      assert.is_nil(r)
      assert.equal("resource-constraint", cond)
      assert.equal(0, service.nnodes)
      assert.equal(0, service.bytes)
      assert(a:pubsub_create(ALICE, "titled", { ["pubsub#title"] = ("t"):rep(300) }))
      assert.equal(total(), service.bytes)
      -- a longer title past the limit is refused, a shorter one frees bytes
      r, _, cond = a:pubsub_configure(ALICE, "titled", { ["pubsub#title"] = ("t"):rep(1500) })
      assert.is_nil(r)
      assert.equal("resource-constraint", cond)
      assert.equal(300, #service.nodes.titled.config.title)
      assert.is_true(a:pubsub_configure(ALICE, "titled", { ["pubsub#title"] = "short" }))
      assert.equal(total(), service.bytes)
      -- many nodes with long names stop at the limit, whatever their items
      local made = 0
      for i = 1, 20 do
        if not a:pubsub_create(ALICE, ("node%02d-"):format(i) .. ("y"):rep(100)) then break end
        made = made + 1
      end
      assert.is_true(made >= 5 and made < 20, "made " .. made)
      assert.is_true(service.bytes <= 1024)
      assert.equal(total(), service.bytes)
      -- an item's id counts too
      r, _, cond = a:pep_publish(NODE, mood("m"), ("i"):rep(1024))
      assert.is_nil(r)
      assert.equal("resource-constraint", cond)
      -- deleting frees what the node held
      for i = 1, made do assert(a:pubsub_delete(ALICE, ("node%02d-"):format(i) .. ("y"):rep(100))) end
      assert.equal(total(), service.bytes)
      assert.equal("m1", a:pep_publish(NODE, mood("m"), "m1"))
      assert.equal(total(), service.bytes)
      a:close()
    end)
  end)

  it("is off with pep = false", function()
    serve.run({ users = USERS, pep = false }, function(_, port)
      local a = login(port, "alice")
      local r, _, cond = a:pep_publish(NODE, mood("x"))
      assert.is_nil(r)
      assert.equal("service-unavailable", cond)
      a:close()
    end)
  end)
end)
