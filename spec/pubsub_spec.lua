-- Publish-subscribe (lua/lxmpp/plugins/pubsub.lua) against Prosody's
-- mod_pubsub (a component) and mod_pep; paging and hostile notifications
-- with a scripted peer on the embedded server.
local lxmpp = require "lxmpp"
local st = require "lxmpp.stanza"
local prosody = require "spec.support.prosody"
local serve = require "spec.support.serve"
local ev = require "spec.support.events"

local USERS = { alice = "alice-pw", bob = "bob-pw" }
local SERVICE = "pubsub.example.test"
local NS_ENTRY = "urn:example:entry"

local function entry(text) return st.stanza("entry", { xmlns = NS_ENTRY }):text(text) end

describe("pubsub against Prosody", function()
  local srv
  setup(function()
    srv = prosody.start({ users = USERS, modules = { "pep" },
      components = { { SERVICE, "pubsub", "admins = { \"alice@example.test\" }" } } })
  end)
  teardown(function() if srv then srv:stop() end end)

  local function run(fn)
    local ok, err = pcall(lxmpp.run, function()
      local function login(user)
        local c = assert(lxmpp.connect({ jid = user .. "@example.test/r", password = USERS[user],
          host = "127.0.0.1", port = srv.port, cafile = srv.ca }))
        assert(c:send_presence())            -- notifications go to available resources
        return c
      end
      fn(login)
      require("lxmpp.net").abort_all()
    end)
    if not ok then error(err, 0) end
    require "spec.support.clean" ()
  end

  it("creates, configures, publishes, notifies, pages, retracts and deletes", function()
    run(function(login)
      local a, b = login("alice"), login("bob")
      assert.equal("news", a:pubsub_create(SERVICE, "news", { ["pubsub#title"] = "News", ["pubsub#max_items"] = "10" }))
      local r, _, cond = a:pubsub_create(SERVICE, "news")
      assert.is_nil(r)
      assert.equal("conflict", cond)
      r, _, cond = b:pubsub_create(SERVICE, "bobs")
      assert.is_nil(r)
      assert.equal("forbidden", cond)
      local form = assert(a:pubsub_get_config(SERVICE, "news"))
      assert.equal("http://jabber.org/protocol/pubsub#node_config", form.form_type)
      assert.equal("News", form.values["pubsub#title"])
      assert.is_true(a:pubsub_configure(SERVICE, "news", { ["pubsub#title"] = "Daily news" }))
      assert.equal("Daily news", assert(a:pubsub_get_config(SERVICE, "news")).values["pubsub#title"])
      r, _, cond = a:pubsub_configure(SERVICE, "news", { ["pubsub#colour"] = "red" })
      assert.is_nil(r)
      assert.equal("bad-request", cond)
      -- bob subscribes and hears what alice publishes
      local sub = assert(b:pubsub_subscribe(SERVICE, "news"))
      assert.equal("subscribed", sub.subscription)
      assert.equal("bob@example.test", sub.jid)
      local heard = ev.collect(b, "pubsub-item")
      local id = assert(a:pubsub_publish(SERVICE, "news", entry("first"), "one"))
      assert.equal("one", id)
      local auto = assert(a:pubsub_publish(SERVICE, "news", entry("second")))
      assert.is_string(auto)
      assert.is_true(serve.until_true(function() return #heard == 2 end))
      assert.equal(SERVICE, heard[1][1])
      assert.equal("news", heard[1][2])
      assert.equal("one", heard[1][3].id)
      assert.equal("first", heard[1][3].payload:get_text())
      assert.equal(NS_ENTRY, heard[1][3].payload.attr.xmlns)
      -- items: all, the last one, by id
      local items = assert(b:pubsub_items(SERVICE, "news"))
      assert.equal(2, #items)
      items = assert(b:pubsub_items(SERVICE, "news", { max = 1 }))
      assert.equal(1, #items)
      items = assert(b:pubsub_items(SERVICE, "news", { ids = { "one" } }))
      assert.equal(1, #items)
      assert.equal("first", items[1].payload:get_text())
      -- retract, with notification
      local retracted = ev.collect(b, "pubsub-retract")
      assert.is_true(a:pubsub_retract(SERVICE, "news", "one", true))
      assert.is_true(serve.until_true(function() return #retracted == 1 end))
      assert.equal("one", retracted[1][3])
      assert.equal(1, #assert(b:pubsub_items(SERVICE, "news")))
      -- unsubscribe: no more news
      assert.is_true(b:pubsub_unsubscribe(SERVICE, "news"))
      assert(a:pubsub_publish(SERVICE, "news", entry("third"), "three"))
      ev.settle(0.3)
      assert.equal(2, #heard)
      -- purge and delete
      assert(b:pubsub_subscribe(SERVICE, "news"))
      local deleted = ev.collect(b, "pubsub-delete")
      assert.is_true(a:pubsub_purge(SERVICE, "news"))
      assert.equal(0, #assert(b:pubsub_items(SERVICE, "news")))
      assert.is_true(a:pubsub_delete(SERVICE, "news"))
      assert.is_true(serve.until_true(function() return #deleted == 1 end))
      r, _, cond = b:pubsub_items(SERVICE, "news")
      assert.is_nil(r)
      assert.equal("item-not-found", cond)
      assert.has_error(function() a:pubsub_publish(SERVICE, "news", "not a stanza") end)
      assert.has_error(function() a:pubsub_create("x@y/z", "n") end)
      assert.has_error(function() a:pubsub_items(SERVICE, "n", { max = 0 }) end)
      a:close(); b:close()
    end)
  end)

  it("publishes to PEP and lets contacts read and follow it", function()
    run(function(login)
      local a, b = login("alice"), login("bob")
      -- bob and alice share presence (PEP's default access model)
      lxmpp.spawn(function() lxmpp.sleep(0.1); b:subscribe("alice@example.test") end)
      local req = ev.expect(a, "subscription", function(kind) return kind == "subscribe" end)
      assert(req)
      assert(a:approve("bob@example.test"))
      ev.settle(0.3)
      local node = "urn:example:mood"
      assert.equal("current", a:pep_publish(node, entry("happy"), "current"))
      local items = assert(b:pep_items("alice@example.test", node))
      assert.equal(1, #items)
      assert.equal("happy", items[1].payload:get_text())
      assert(b:pubsub_subscribe("alice@example.test", node))
      local heard = ev.collect(b, "pubsub-item")
      assert(a:pep_publish(node, entry("sleepy"), "current"))
      assert.is_true(serve.until_true(function() return #heard >= 1 end))
      assert.equal("alice@example.test", heard[1][1])
      assert.equal("sleepy", heard[1][3].payload:get_text())
      a:close(); b:close()
    end)
  end)
end)

describe("pubsub with a scripted service", function()
  it("pages with RSM, and ignores notifications from full JIDs", function()
    serve.run({ users = USERS, components = { ["ps.example.test"] = "s" }, component_listen = "127.0.0.1:0" },
      function(_, port, ports)
      local a = assert(serve.login(port, "alice", USERS.alice))
      local b = assert(serve.login(port, "bob", USERS.bob))
      assert(b:send_presence())
      -- a component plays a pubsub service that pages with XEP-0059
      local comp = lxmpp.component({ jid = "ps.example.test", secret = "s", host = "127.0.0.1", port = ports.component })
      assert(comp:connect())
      local asked
      comp:handle_iq("http://jabber.org/protocol/pubsub", function(iq)
        asked = iq
        return st.reply(iq):tag("pubsub", { xmlns = "http://jabber.org/protocol/pubsub" })
          :tag("items", { node = "n" }):tag("item", { id = "i3" }):add_child(entry("3")):up()
          :tag("item", { id = "i4" }):add_child(entry("4")):up():up()
          :tag("set", { xmlns = "http://jabber.org/protocol/rsm" }):text_tag("first", "i3"):text_tag("last", "i4")
          :text_tag("count", "10")
      end)
      local items, page = assert(b:pubsub_items("ps.example.test", "n", { max = 2, after = "i2" }))
      assert.equal(2, #items)
      assert.equal("4", items[2].payload:get_text())
      assert.same({ first = "i3", last = "i4", count = 10 }, page)
      local set = asked:get_child("pubsub", "http://jabber.org/protocol/pubsub")
        :get_child("set", "http://jabber.org/protocol/rsm")
      assert.equal("2", set:get_child_text("max"))
      assert.equal("i2", set:get_child_text("after"))
      -- the service's notifications are heard; alice's (a full JID) are not
      local heard = ev.collect(b, "pubsub-item")
      local function event(from, text)
        return st.message({ to = "bob@example.test", from = from }):tag("event",
          { xmlns = "http://jabber.org/protocol/pubsub#event" }):tag("items", { node = "n" })
          :tag("item", { id = "x" }):add_child(entry(text)):up():up():up()
      end
      assert(a:send(event(nil, "fake")))
      assert(comp:send(event("ps.example.test", "real")))
      assert.is_true(serve.until_true(function() return #heard == 1 end))
      ev.settle(0.2)
      assert.equal(1, #heard)
      assert.equal("ps.example.test", heard[1][1])
      assert.equal("real", heard[1][3].payload:get_text())
      comp:close(); a:close(); b:close()
    end)
  end)

  -- a scripted server (spec/support/smserver.lua) that sends what no real
  -- server would route: notifications from invalid JIDs, a node
  -- configuration form whose declared types do not fit the values
  it("drops notifications whose from is no JID (not our own PEP's), takes a missing from as ours; "
    .. "values that do not fit the service's form types give not-acceptable", function()
    local smserver = require "spec.support.smserver"
    smserver.run(function()
      local sent = {}
      local srv = smserver.start({ stanza = function(conn, s)
        local ps = s.name == "iq" and s:get_child("pubsub", "http://jabber.org/protocol/pubsub#owner")
        if not ps then return end
        if s.attr.type == "set" then
          sent[#sent + 1] = s
          return conn:write(tostring(st.reply(s)))
        end
        -- the service declares max_items a boolean
        conn:write(tostring(st.reply(s):tag("pubsub", { xmlns = "http://jabber.org/protocol/pubsub#owner" })
          :tag("configure", { node = "n" }):tag("x", { xmlns = "jabber:x:data", type = "form" })
          :tag("field", { var = "FORM_TYPE", type = "hidden" })
          :text_tag("value", "http://jabber.org/protocol/pubsub#node_config"):up()
          :tag("field", { var = "pubsub#max_items", type = "boolean" }):up()
          :tag("field", { var = "pubsub#title", type = "text-single" }):up()))
      end })
      local logged = {}
      local c = assert(lxmpp.connect(srv:client_opts({ jid = "anon@example.test/r", reconnect = false,
        logger = function(level, msg) logged[#logged + 1] = level .. " " .. msg end })))
      c:plugin("pubsub")
      local heard = ev.collect(c, "pubsub-item")
      local function event(from, node)
        return "<message" .. (from and (" from='" .. from .. "'") or "") .. "><event " ..
          "xmlns='http://jabber.org/protocol/pubsub#event'><items node='" .. node .. "'><item id='x'>" ..
          "<p xmlns='urn:test'/></item></items></event></message>"
      end
      srv:session().conn:write(event("mallory@@evil.example", "urn:xmpp:avatar:metadata") ..
        event("a@b/c/../", "n2") .. event(nil, "mine") .. event("pubsub.example.test", "theirs"))
      assert.is_true(smserver.wait_for(function() return #heard == 2 end, 5))
      ev.settle(0.2)
      assert.equal(2, #heard)
      assert.same({ "anon@example.test", "mine" }, { heard[1][1], heard[1][2] })
      assert.same({ "pubsub.example.test", "theirs" }, { heard[2][1], heard[2][2] })
      local log = table.concat(logged, "\n")
      assert.matches("warn ignored a pubsub notification from an invalid JID mallory@@evil.example", log, 1, true)
      assert.matches("warn ignored a pubsub notification from a full JID a@b/c/../", log, 1, true)
      -- the service's form types against our values: an answer, not an error raised
      for _, values in ipairs({ { ["pubsub#max_items"] = "10" }, { ["pubsub#title"] = { "a", "b" } } }) do
        local ok, msg, cond = c:pubsub_configure("pubsub.example.test", "n", values)
        assert.is_nil(ok)
        assert.equal("not-acceptable", cond)
        assert.matches("^the values do not fit the node's configuration form: value of", msg)
      end
      assert.equal(0, #sent)
      assert.is_true(c:pubsub_configure("pubsub.example.test", "n", { ["pubsub#max_items"] = true }))
      assert.equal(1, #sent)
      c:close()
      srv:close()
    end)
  end)
end)
