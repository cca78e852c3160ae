-- The embedded server's pubsub service (lxmpp.server.pubsub on option
-- `pubsub`), driven by real lxmpp clients through the pubsub plugin: node
-- life cycle, configuration, publishing and notifications, items and
-- paging, permissions, access models, limits, errors, and persistence in
-- SQLite across a restart.
local compat = require "lxmpp.compat"
local st = require "lxmpp.stanza"
local serve = require "spec.support.serve"
local ev = require "spec.support.events"

local USERS = { alice = "alice-pw", bob = "bob-pw", carol = "carol-pw" }
local SERVICE = "pubsub.example.test"
local NS = "http://jabber.org/protocol/pubsub"
local NS_OWNER = NS .. "#owner"
local NS_ERRORS = NS .. "#errors"
local NS_ENTRY = "urn:example:entry"

local function entry(text) return st.stanza("entry", { xmlns = NS_ENTRY }):text(text) end

local function login(port, user, res)
  local c = assert(serve.login(port, user, USERS[user], res))
  assert(c:send_presence())              -- notifications go to available resources
  return c
end

-- pubsub#errors condition of an error stanza (the 4th value of a failed call)
local function app_error(s)
  local e = assert(s and s:get_child("error"), "no error stanza")
  for _, child in ipairs(e.tags) do
    if child.attr.xmlns == NS_ERRORS then return child.name, child.attr.feature end
  end
end

-- Runs fn(srv, port) on a server with the pubsub service.
local function run(fn, opts)
  opts = opts or {}
  opts.users, opts.pubsub = opts.users or USERS, SERVICE
  serve.run(opts, fn)
end

local function owner_iq(c, typ, child)
  return c:request(st.iq({ type = typ, to = SERVICE }):tag("pubsub", { xmlns = NS_OWNER }):add_child(child):reset())
end

describe("embedded server: pubsub service", function()
  it("shows itself and its nodes in disco", function()
    run(function(_, port)
      local a = login(port, "alice")
      assert.equal(SERVICE, assert(a:disco_items()) [1].jid)   -- listed by the server
      local info = assert(a:disco_info(SERVICE))
      assert.same({ category = "pubsub", type = "service" },
        { category = info.identities[1].category, type = info.identities[1].type })
      for _, f in ipairs({ NS, NS .. "#publish", NS .. "#instant-nodes", NS .. "#retrieve-items", NS .. "#rsm" }) do
        assert.is_true(info.features[f], f)
      end
      assert.is_nil(info.features[NS .. "#auto-create"])       -- only PEP creates on publish
      assert(a:pubsub_create(SERVICE, "b-node", { ["pubsub#title"] = "Bees" }))
      assert(a:pubsub_create(SERVICE, "a-node"))
      local items = assert(a:disco_items(SERVICE))
      assert.equal(2, #items)
      assert.same({ "a-node", "b-node" }, { items[1].node, items[2].node })
      assert.equal("Bees", items[2].name)
      assert.equal("leaf", assert(a:disco_info(SERVICE, "a-node")).identities[1].type)
      local r, _, cond = a:disco_info(SERVICE, "nowhere")
      assert.is_nil(r)
      assert.equal("item-not-found", cond)
      a:close()
    end)
  end)

  it("creates named and instant nodes, configures them, and refuses what it should", function()
    run(function(_, port)
      local a, b = login(port, "alice"), login(port, "bob")
      assert.equal("news", a:pubsub_create(SERVICE, "news", { ["pubsub#title"] = "News", ["pubsub#max_items"] = 5 }))
      local r, _, cond = b:pubsub_create(SERVICE, "news")
      assert.is_nil(r)
      assert.equal("conflict", cond)
      local i1, i2 = assert(a:pubsub_create(SERVICE)), assert(a:pubsub_create(SERVICE))
      assert.is_string(i1)
      assert.not_equal(i1, i2)
      local form = assert(a:pubsub_get_config(SERVICE, "news"))
      assert.equal(NS .. "#node_config", form.form_type)
      assert.equal("News", form.values["pubsub#title"])
      assert.equal("5", form.values["pubsub#max_items"])
      assert.equal("open", form.values["pubsub#access_model"])
      assert.equal("publishers", form.values["pubsub#publish_model"])
      assert.is_true(form.values["pubsub#persist_items"])
      assert.is_true(a:pubsub_configure(SERVICE, "news", { ["pubsub#title"] = "Daily", ["pubsub#notify_retract"] = false }))
      form = assert(a:pubsub_get_config(SERVICE, "news"))
      assert.equal("Daily", form.values["pubsub#title"])
      assert.is_false(form.values["pubsub#notify_retract"])
      -- only the owner configures, deletes or purges
      for _, call in ipairs({
        function() return b:pubsub_get_config(SERVICE, "news") end,
        function() return b:pubsub_configure(SERVICE, "news", { ["pubsub#title"] = "Mine" }) end,
        function() return b:pubsub_delete(SERVICE, "news") end,
        function() return b:pubsub_purge(SERVICE, "news") end,
      }) do
        r, _, cond = call()
        assert.is_nil(r)
        assert.equal("forbidden", cond)
      end
      assert.equal("Daily", assert(a:pubsub_get_config(SERVICE, "news")).values["pubsub#title"])
      -- values the service refuses; a setting it does not have
      r, _, cond = a:pubsub_configure(SERVICE, "news", { ["pubsub#max_items"] = "100000" })
      assert.is_nil(r)
      assert.equal("not-acceptable", cond)
      r, _, cond = a:pubsub_configure(SERVICE, "news", { ["pubsub#access_model"] = "authorize" })
      assert.is_nil(r)
      assert.equal("not-acceptable", cond)
      assert.equal("5", assert(a:pubsub_get_config(SERVICE, "news")).values["pubsub#max_items"])
      -- node_config fields this service does not know are ignored (XEP-0004
      -- §3.3), on create and configure alike; the known ones still apply
      assert(a:pubsub_create(SERVICE, "odd", { ["pubsub#colour"] = "red", ["pubsub#title"] = "Odd",
        ["pubsub#type"] = "urn:example:odd" }))
      local odd = assert(a:pubsub_get_config(SERVICE, "odd"))
      assert.equal("Odd", odd.values["pubsub#title"])
      assert.is_nil(odd.values["pubsub#colour"])
      -- (lxmpp's own pubsub_configure only sends fields the node's form has,
      -- so this one is written by hand, as another client would)
      local function configure(fields)
        local x = st.stanza("x", { xmlns = "jabber:x:data", type = "submit" })
          :tag("field", { var = "FORM_TYPE", type = "hidden" }):text_tag("value", NS .. "#node_config"):up()
        for _, f in ipairs(fields) do
          x:tag("field", { var = f[1] })
          for i = 2, #f do x:text_tag("value", f[i]) end
          x:up()
        end
        return owner_iq(a, "set", st.stanza("configure", { node = "news" }):add_child(x))
      end
      assert(configure({ { "x-example#shade", "blue" }, { "pubsub#max_items", "4" } }))
      assert.equal("4", assert(a:pubsub_get_config(SERVICE, "news")).values["pubsub#max_items"])
      -- as XEP-0060's example submits it: untyped, one field with several values
      assert(configure({ { "pubsub#roster_groups_allowed", "friends", "servants", "courtiers" },
        { "pubsub#title", "Princely Musings" } }))
      assert.equal("Princely Musings", assert(a:pubsub_get_config(SERVICE, "news")).values["pubsub#title"])
      -- a bad value of a known field is still refused, with or without strangers around it
      r, _, cond = configure({ { "pubsub#colour", "red" }, { "pubsub#max_items", "0" } })
      assert.is_nil(r)
      assert.equal("not-acceptable", cond)
      assert.equal("4", assert(a:pubsub_get_config(SERVICE, "news")).values["pubsub#max_items"])
      -- the default configuration, for the owner namespace
      local d = assert(owner_iq(a, "get", st.stanza("default")))
      assert.truthy(d:find("{" .. NS_OWNER .. "}pubsub/default/{jabber:x:data}x"))
      a:close(); b:close()
    end)
  end)

  it("notifies subscribers of items with their payloads, and lets them read items", function()
    run(function(_, port)
      local a, b, c = login(port, "alice"), login(port, "bob"), login(port, "carol")
      assert(a:pubsub_create(SERVICE, "news"))
      local sub = assert(b:pubsub_subscribe(SERVICE, "news"))
      assert.same({ jid = "bob@example.test", node = "news", subscription = "subscribed" }, sub)
      local heard, unheard = ev.collect(b, "pubsub-item"), ev.collect(c, "pubsub-item")
      assert.equal("one", a:pubsub_publish(SERVICE, "news", entry("first"), "one"))
      local auto = assert(a:pubsub_publish(SERVICE, "news", entry("second")))
      assert.matches("^%x+$", auto)
      assert.is_true(serve.until_true(function() return #heard == 2 end))
      local service, node, item, s = compat.unpack(heard[1], 1, 4)
      assert.same({ SERVICE, "news", "one", "alice@example.test" }, { service, node, item.id, item.publisher })
      assert.equal("first", item.payload:get_text())
      assert.equal(NS_ENTRY, item.payload.attr.xmlns)
      assert.equal("headline", s.attr.type)
      assert.equal(auto, heard[2][3].id)
      ev.settle(0.1)
      assert.equal(0, #unheard)                                -- carol did not subscribe
      -- items: all (oldest first), by id, the latest, paged
      local items = assert(c:pubsub_items(SERVICE, "news"))
      assert.same({ "one", auto }, { items[1].id, items[2].id })
      assert.equal("alice@example.test", items[1].publisher)
      items = assert(c:pubsub_items(SERVICE, "news", { ids = { auto, "missing" } }))
      assert.same({ auto }, { items[1].id, items[2] })
      items = assert(c:pubsub_items(SERVICE, "news", { max = 1 }))
      assert.same({ auto }, { items[1].id, items[2] })
      assert(a:pubsub_publish(SERVICE, "news", entry("third"), "three"))
      local page
      items, page = assert(c:pubsub_items(SERVICE, "news", { max = 2, page = true }))
      assert.same({ "one", auto }, { items[1].id, items[2].id })
      assert.same({ first = "one", last = auto, count = 3 }, page)
      items, page = assert(c:pubsub_items(SERVICE, "news", { max = 2, after = page.last }))
      assert.same({ "three" }, { items[1].id, items[2] })
      assert.equal(3, page.count)
      items = assert(c:pubsub_items(SERVICE, "news", { max = 1, before = "three" }))
      assert.same({ auto }, { items[1].id, items[2] })
      local r, _, cond = c:pubsub_items(SERVICE, "news", { max = 1, after = "nope" })
      assert.is_nil(r)
      assert.equal("item-not-found", cond)
      -- republishing an id replaces the item, which becomes the newest
      assert(a:pubsub_publish(SERVICE, "news", entry("first, again"), "one"))
      items = assert(c:pubsub_items(SERVICE, "news"))
      assert.same({ auto, "three", "one" }, { items[1].id, items[2].id, items[3].id })
      assert.equal("first, again", items[3].payload:get_text())
      -- unsubscribed: no more news
      assert.is_true(b:pubsub_unsubscribe(SERVICE, "news"))
      local before = #heard
      assert(a:pubsub_publish(SERVICE, "news", entry("fourth")))
      ev.settle(0.2)
      assert.equal(before, #heard)
      a:close(); b:close(); c:close()
    end)
  end)

  it("notifies a full-JID subscription at that resource only, and leaves out payloads when told", function()
    run(function(_, port)
      local a, b1, b2 = login(port, "alice"), login(port, "bob", "one"), login(port, "bob", "two")
      assert(a:pubsub_create(SERVICE, "quiet", { ["pubsub#deliver_payloads"] = false }))
      assert.equal("bob@example.test/two", assert(b2:pubsub_subscribe(SERVICE, "quiet", b2.jid)).jid)
      local h1, h2 = ev.collect(b1, "pubsub-item"), ev.collect(b2, "pubsub-item")
      assert(a:pubsub_publish(SERVICE, "quiet", entry("secret"), "x"))
      assert.is_true(serve.until_true(function() return #h2 == 1 end))
      assert.equal("x", h2[1][3].id)
      assert.is_nil(h2[1][3].payload)                          -- deliver_payloads false
      assert.equal("secret", assert(b1:pubsub_items(SERVICE, "quiet"))[1].payload:get_text())
      ev.settle(0.1)
      assert.equal(0, #h1)
      a:close(); b1:close(); b2:close()
    end)
  end)

  it("lets only publishers publish and retract, and only yourself (un)subscribe", function()
    run(function(_, port)
      local a, b = login(port, "alice"), login(port, "bob")
      assert(a:pubsub_create(SERVICE, "news"))
      assert(a:pubsub_publish(SERVICE, "news", entry("x"), "x"))
      local r, _, cond = b:pubsub_publish(SERVICE, "news", entry("spam"))
      assert.is_nil(r)
      assert.equal("forbidden", cond)
      r, _, cond = b:pubsub_retract(SERVICE, "news", "x")
      assert.is_nil(r)
      assert.equal("forbidden", cond)
      local s
      r, _, cond, s = b:pubsub_subscribe(SERVICE, "news", "alice@example.test")
      assert.is_nil(r)
      assert.equal("bad-request", cond)
      assert.equal("invalid-jid", app_error(s))
      assert(a:pubsub_subscribe(SERVICE, "news"))
      r, _, cond = b:pubsub_unsubscribe(SERVICE, "news", { jid = "alice@example.test" })
      assert.is_nil(r)
      assert.equal("forbidden", cond)
      r, _, cond, s = b:pubsub_unsubscribe(SERVICE, "news")
      assert.is_nil(r)
      assert.equal("unexpected-request", cond)
      assert.equal("not-subscribed", app_error(s))
      -- an open publish model lets anyone publish
      assert(a:pubsub_configure(SERVICE, "news", { ["pubsub#publish_model"] = "open" }))
      assert.equal("b1", b:pubsub_publish(SERVICE, "news", entry("by bob"), "b1"))
      assert.equal("bob@example.test", assert(a:pubsub_items(SERVICE, "news", { ids = { "b1" } }))[1].publisher)
      -- no such node or item; no payload
      r, _, cond = a:pubsub_publish(SERVICE, "nowhere", entry("x"))
      assert.is_nil(r)
      assert.equal("item-not-found", cond)
      r, _, cond = a:pubsub_retract(SERVICE, "news", "never")
      assert.is_nil(r)
      assert.equal("item-not-found", cond)
      r, _, cond, s = a:request(st.iq({ type = "set", to = SERVICE }):tag("pubsub", { xmlns = NS })
        :tag("publish", { node = "news" }):tag("item"):reset())
      assert.is_nil(r)
      assert.equal("bad-request", cond)
      assert.equal("payload-required", app_error(s))
      a:close(); b:close()
    end)
  end)

  -- an open publish model lets anyone add items, not take others' away
  it("lets an open publisher retract and overwrite only its own items; owners and publishers any", function()
    run(function(srv, port)
      local a, b, c = login(port, "alice"), login(port, "bob"), login(port, "carol")
      assert(a:pubsub_create(SERVICE, "wall", { ["pubsub#publish_model"] = "open" }))
      assert(b:pubsub_publish(SERVICE, "wall", entry("bob's"), "b1"))
      assert(c:pubsub_publish(SERVICE, "wall", entry("carol's"), "c1"))
      local r, _, cond = c:pubsub_retract(SERVICE, "wall", "b1")
      assert.is_nil(r)
      assert.equal("forbidden", cond)
      r, _, cond = c:pubsub_publish(SERVICE, "wall", entry("defaced"), "b1")
      assert.is_nil(r)
      assert.equal("forbidden", cond)
      local item = assert(a:pubsub_items(SERVICE, "wall", { ids = { "b1" } }))[1]
      assert.same({ "bob's", "bob@example.test" }, { item.payload:get_text(), item.publisher })
      -- one's own items: overwritten and retracted
      assert.equal("c1", c:pubsub_publish(SERVICE, "wall", entry("carol's, edited"), "c1"))
      assert.is_true(c:pubsub_retract(SERVICE, "wall", "c1"))
      -- the owner changes anyone's, and so does a publisher
      assert(b:pubsub_publish(SERVICE, "wall", entry("bob's second"), "b2"))
      assert.is_true(a:pubsub_retract(SERVICE, "wall", "b2"))
      assert(owner_iq(a, "set", st.stanza("affiliations", { node = "wall" })
        :tag("affiliation", { jid = "carol@example.test", affiliation = "publisher" }):up()))
      assert.equal("b1", c:pubsub_publish(SERVICE, "wall", entry("moderated"), "b1"))
      assert.equal("carol@example.test", assert(a:pubsub_items(SERVICE, "wall", { ids = { "b1" } }))[1].publisher)
      -- an item with no publisher recorded (stored by an older version) is
      -- the owners' and publishers' alone
      assert(b:pubsub_publish(SERVICE, "wall", entry("old"), "legacy"))
      srv.pubsub.service.nodes.wall.by_id.legacy.publisher = nil
      r, _, cond = b:pubsub_retract(SERVICE, "wall", "legacy")
      assert.is_nil(r)
      assert.equal("forbidden", cond)
      assert.is_true(c:pubsub_retract(SERVICE, "wall", "legacy"))
      a:close(); b:close(); c:close()
    end)
  end)

  it("notifies retractions, purges and deletion, and keeps max_items items", function()
    run(function(_, port)
      local a, b = login(port, "alice"), login(port, "bob")
      assert(a:pubsub_create(SERVICE, "news", { ["pubsub#max_items"] = 2 }))
      assert(b:pubsub_subscribe(SERVICE, "news"))
      for i = 1, 3 do assert(a:pubsub_publish(SERVICE, "news", entry("n" .. i), "i" .. i)) end
      local items = assert(b:pubsub_items(SERVICE, "news"))
      assert.same({ "i2", "i3" }, { items[1].id, items[2].id })   -- the oldest went
      local retracted = ev.collect(b, "pubsub-retract")
      assert.is_true(a:pubsub_retract(SERVICE, "news", "i2"))
      assert.is_true(serve.until_true(function() return #retracted == 1 end))
      assert.same({ SERVICE, "news", "i2" }, { retracted[1][1], retracted[1][2], retracted[1][3] })
      -- notify_retract false: silent, unless the retract asks to notify
      assert(a:pubsub_configure(SERVICE, "news", { ["pubsub#notify_retract"] = false }))
      assert(a:pubsub_publish(SERVICE, "news", entry("n4"), "i4"))
      assert.is_true(a:pubsub_retract(SERVICE, "news", "i4"))
      ev.settle(0.2)
      assert.equal(1, #retracted)
      assert.is_true(a:pubsub_retract(SERVICE, "news", "i3", true))
      assert.is_true(serve.until_true(function() return #retracted == 2 end))
      assert.equal("i3", retracted[2][3])
      local purged, deleted = ev.collect(b, "pubsub-purge"), ev.collect(b, "pubsub-delete")
      assert(a:pubsub_publish(SERVICE, "news", entry("n5")))
      assert.is_true(a:pubsub_purge(SERVICE, "news"))
      assert.is_true(serve.until_true(function() return #purged == 1 end))
      assert.same({ SERVICE, "news" }, { purged[1][1], purged[1][2] })
      assert.equal(0, #assert(b:pubsub_items(SERVICE, "news")))
      assert.is_true(a:pubsub_delete(SERVICE, "news"))
      assert.is_true(serve.until_true(function() return #deleted == 1 end))
      assert.same({ SERVICE, "news" }, { deleted[1][1], deleted[1][2] })
      local r, _, cond = b:pubsub_items(SERVICE, "news")
      assert.is_nil(r)
      assert.equal("item-not-found", cond)
      assert.equal(0, #assert(a:disco_items(SERVICE)))
      a:close(); b:close()
    end)
  end)

  it("checks publish-options as preconditions", function()
    run(function(_, port)
      local a = login(port, "alice")
      assert(a:pubsub_create(SERVICE, "news", { ["pubsub#max_items"] = 3 }))
      assert.equal("ok", a:pubsub_publish(SERVICE, "news", entry("x"), "ok",
        { ["pubsub#max_items"] = "3", ["pubsub#access_model"] = "open" }))
      local r, _, cond, s = a:pubsub_publish(SERVICE, "news", entry("x"), "no", { ["pubsub#access_model"] = "whitelist" })
      assert.is_nil(r)
      assert.equal("conflict", cond)
      assert.equal("precondition-not-met", app_error(s))
      -- an unknown precondition cannot be met (XEP-0060 §7.1.5: reject it)
      r, _, cond, s = a:pubsub_publish(SERVICE, "news", entry("x"), "odd", { ["pubsub#colour"] = "red" })
      assert.is_nil(r)
      assert.equal("conflict", cond)
      assert.equal("precondition-not-met", app_error(s))
      assert.same({ "ok" }, { assert(a:pubsub_items(SERVICE, "news"))[1].id, assert(a:pubsub_items(SERVICE, "news"))[2] })
      a:close()
    end)
  end)

  it("applies whitelist and presence access models, and shows the owner subscriptions and affiliations", function()
    run(function(srv, port)
      local a, b = login(port, "alice"), login(port, "bob")
      assert(a:pubsub_create(SERVICE, "club", { ["pubsub#access_model"] = "whitelist" }))
      local r, _, cond, s = b:pubsub_subscribe(SERVICE, "club")
      assert.is_nil(r)
      assert.equal("not-allowed", cond)
      assert.equal("closed-node", app_error(s))
      r, _, cond = b:pubsub_items(SERVICE, "club")
      assert.is_nil(r)
      assert.equal("not-allowed", cond)
      assert(owner_iq(a, "set", st.stanza("affiliations", { node = "club" })
        :tag("affiliation", { jid = "bob@example.test", affiliation = "member" }):up()))
      assert(b:pubsub_subscribe(SERVICE, "club"))
      local aff = assert(owner_iq(a, "get", st.stanza("affiliations", { node = "club" })))
      local got = {}
      for e in aff:get_child("pubsub", NS_OWNER):get_child("affiliations"):childtags("affiliation") do
        got[e.attr.jid] = e.attr.affiliation
      end
      assert.same({ ["alice@example.test"] = "owner", ["bob@example.test"] = "member" }, got)
      local subs = assert(owner_iq(a, "get", st.stanza("subscriptions", { node = "club" })))
      local sub = subs:find("{" .. NS_OWNER .. "}pubsub/subscriptions/subscription")
      assert.same({ "bob@example.test", "subscribed" }, { sub.attr.jid, sub.attr.subscription })
      r, _, cond = owner_iq(b, "get", st.stanza("subscriptions", { node = "club" }))
      assert.is_nil(r)
      assert.equal("forbidden", cond)
      -- bob's own view
      local mine = assert(b:request(st.iq({ type = "get", to = SERVICE }):tag("pubsub", { xmlns = NS })
        :tag("affiliations"):reset()))
      assert.equal("member", mine:find("{" .. NS .. "}pubsub/affiliations/affiliation@affiliation"))
      -- an outcast loses the subscription and the access
      assert(owner_iq(a, "set", st.stanza("affiliations", { node = "club" })
        :tag("affiliation", { jid = "bob@example.test", affiliation = "outcast" }):up()))
      r, _, cond = b:pubsub_items(SERVICE, "club")
      assert.is_nil(r)
      assert.equal("forbidden", cond)
      assert.is_nil(next(srv.hosts[SERVICE].service.nodes.club.subscriptions))
      -- presence: only who sees the owner's presence
      assert(a:pubsub_create(SERVICE, "friends", { ["pubsub#access_model"] = "presence" }))
      r, _, cond, s = b:pubsub_items(SERVICE, "friends")
      assert.is_nil(r)
      assert.equal("not-authorized", cond)
      assert.equal("presence-subscription-required", app_error(s))
      srv.store:set_roster_item("alice", "bob@example.test", { subscription = "from" })
      assert.equal(0, #assert(b:pubsub_items(SERVICE, "friends")))
      a:close(); b:close()
    end)
  end)

  it("keeps to its limits and says what it does not implement", function()
    run(function(_, port)
      local a, b, c = login(port, "alice"), login(port, "bob"), login(port, "carol")
      assert(a:pubsub_create(SERVICE, "one"))
      assert(a:pubsub_create(SERVICE, "two"))
      local r, _, cond, s = a:pubsub_create(SERVICE, "three")
      assert.is_nil(r)
      assert.equal("resource-constraint", cond)
      assert.equal("max-nodes-exceeded", app_error(s))
      assert(b:pubsub_subscribe(SERVICE, "one"))
      r, _, cond, s = c:pubsub_subscribe(SERVICE, "one")
      assert.is_nil(r)
      assert.equal("policy-violation", cond)
      assert.equal("too-many-subscriptions", app_error(s))
      r, _, cond = a:pubsub_configure(SERVICE, "one", { ["pubsub#max_items"] = "4" })
      assert.is_nil(r)
      assert.equal("not-acceptable", cond)
      assert.is_true(a:pubsub_configure(SERVICE, "one", { ["pubsub#max_items"] = "max" }))
      assert.equal("3", assert(a:pubsub_get_config(SERVICE, "one")).values["pubsub#max_items"])
      local feature
      r, _, cond, s = c:pubsub_subscribe(SERVICE, "two", nil, { ["pubsub#deliver"] = true })
      assert.is_nil(r)
      assert.equal("feature-not-implemented", cond)
      assert.equal("unsupported", app_error(s))
      _, feature = app_error(s)
      assert.equal("subscription-options", feature)
      -- the bytes of items the service keeps
      local big = ("x"):rep(100)
      assert(a:pubsub_publish(SERVICE, "two", entry(big), "big"))
      r, _, cond = a:pubsub_publish(SERVICE, "two", entry(big), "big2")
      assert.is_nil(r)
      assert.equal("resource-constraint", cond)
      assert(a:pubsub_publish(SERVICE, "two", entry(big .. "y"), "big"))  -- a replacement fits
      assert.is_true(a:pubsub_retract(SERVICE, "two", "big"))
      assert.equal("big2", a:pubsub_publish(SERVICE, "two", entry(big), "big2"))
      a:close(); b:close(); c:close()
    end, { limits = { max_pubsub_nodes = 2, max_pubsub_subscriptions = 1, max_pubsub_items = 3,
      max_pubsub_bytes = 200 } })
  end)

  it("keeps a node's affiliations to limits.max_pubsub_affiliations, changing nothing beyond", function()
    local function affs(c, node, list)
      local x = st.stanza("affiliations", { node = node })
      for _, a in ipairs(list) do x:tag("affiliation", { jid = a[1], affiliation = a[2] }):up() end
      return owner_iq(c, "set", x)
    end
    local function held(srv)
      local n = 0
      for _ in pairs(srv.pubsub.service.nodes.one.affiliations) do n = n + 1 end
      return n
    end
    run(function(srv, port)
      local a = login(port, "alice")
      assert(a:pubsub_create(SERVICE, "one"))
      assert(affs(a, "one", { { "u1@x.example", "member" }, { "u2@x.example", "publisher" } }))
      assert.equal(3, held(srv))
      -- one more (with a change of an existing one in the same request)
      local r, _, cond, s = affs(a, "one", { { "u1@x.example", "outcast" }, { "u3@x.example", "member" } })
      assert.is_nil(r)
      assert.equal("resource-constraint", cond)
      assert.matches("max_pubsub_affiliations", s:get_child("error"):get_child_text("text",
        "urn:ietf:params:xml:ns:xmpp-stanzas"))
      assert.equal(3, held(srv))
      assert.equal("member", srv.pubsub.service.nodes.one.affiliations["u1@x.example"])
      -- a swap keeps the count; changing existing ones is never refused
      assert(affs(a, "one", { { "u1@x.example", "none" }, { "u3@x.example", "member" } }))
      assert(affs(a, "one", { { "u3@x.example", "outcast" } }))
      assert.equal(3, held(srv))
      -- many at once: refused whole
      local many = {}
      for i = 1, 50 do many[i] = { ("m%d@x.example"):format(i), "member" } end
      r, _, cond = affs(a, "one", many)
      assert.is_nil(r)
      assert.equal("resource-constraint", cond)
      assert.equal(3, held(srv))
      a:close()
    end, { limits = { max_pubsub_affiliations = 3 } })
    local limits = require("lxmpp.server").DEFAULT_LIMITS
    assert.equal(1000, limits.max_pubsub_affiliations)
    local f = assert(io.open("docs/server.md", "rb"))
    local doc = f:read("*a")
    f:close()
    assert.matches("\n| `max_pubsub_affiliations` | 1000 |[^\n]*resource%-constraint", doc)
  end)

  it("bounds the nodes one account creates (limits.max_pubsub_user_nodes), not the others'", function()
    run(function(srv, port)
      local a, b = login(port, "alice"), login(port, "bob")
      assert(a:pubsub_create(SERVICE, "a1"))
      assert(a:pubsub_create(SERVICE))                               -- an instant node counts too
      local r, _, cond, s = a:pubsub_create(SERVICE, "a3")
      assert.is_nil(r)
      assert.equal("resource-constraint", cond)
      assert.equal("max-nodes-exceeded", app_error(s))
      assert.matches("max_pubsub_user_nodes", s:get_child("error"):get_child_text("text",
        "urn:ietf:params:xml:ns:xmpp-stanzas"))
      assert.is_nil(srv.pubsub.service.nodes.a3)
      assert(b:pubsub_create(SERVICE, "b1"))
      -- owning a node someone else created does not count
      assert(owner_iq(b, "set", st.stanza("affiliations", { node = "b1" })
        :tag("affiliation", { jid = "alice@example.test", affiliation = "owner" }):up()))
      assert.is_true(a:pubsub_delete(SERVICE, "a1"))
      assert(a:pubsub_create(SERVICE, "a3"))
      assert.equal(2, srv.pubsub.service.created["alice@example.test"])
      -- a removed account's count goes with it
      a:close()
      assert.is_true(srv:remove_user("alice"))
      assert.is_nil(srv.pubsub.service.created["alice@example.test"])
      assert.equal(1, srv.pubsub.service.created["bob@example.test"])
      b:close()
    end, { limits = { max_pubsub_user_nodes = 2 } })
  end)

  it("keeps nodes, items and subscriptions in SQLite across a restart", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    local path = dir .. "/lxmpp.db"
    run(function(_, port)
      local a, b = login(port, "alice"), login(port, "bob")
      assert(a:pubsub_create(SERVICE, "news", { ["pubsub#title"] = "Kept", ["pubsub#max_items"] = 2 }))
      assert(a:pubsub_create(SERVICE, "fleeting", { ["pubsub#persist_items"] = false }))
      assert(b:pubsub_subscribe(SERVICE, "news"))
      for i = 1, 3 do assert(a:pubsub_publish(SERVICE, "news", entry("n" .. i), "i" .. i)) end
      assert(a:pubsub_publish(SERVICE, "fleeting", entry("gone"), "g"))
      assert.equal(1, #assert(a:pubsub_items(SERVICE, "fleeting")))
      a:close(); b:close()
    end, { storage = path })
    run(function(_, port)
      local a, b = login(port, "alice"), login(port, "bob")
      assert.equal("Kept", assert(a:pubsub_get_config(SERVICE, "news")).values["pubsub#title"])
      local items = assert(b:pubsub_items(SERVICE, "news"))
      assert.same({ "i2", "i3" }, { items[1].id, items[2].id })
      assert.equal("n3", items[2].payload:get_text())
      assert.equal(0, #assert(a:pubsub_items(SERVICE, "fleeting")))
      local heard = ev.collect(b, "pubsub-item")               -- still subscribed
      assert(a:pubsub_publish(SERVICE, "news", entry("n4"), "i4"))
      assert.is_true(serve.until_true(function() return #heard == 1 end))
      items = assert(b:pubsub_items(SERVICE, "news"))          -- still at most 2, in order
      assert.same({ "i3", "i4" }, { items[1].id, items[2].id })
      a:close(); b:close()
    end, { users = {}, storage = path })
    os.execute("rm -rf " .. dir)
  end)
end)
