-- IM basics (RFC 6121) against Prosody: roster get/set/remove and pushes,
-- a push from anyone but the account refused, the subscription handshake,
-- presence, ping and version.
local compat = require "lxmpp.compat"
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local st = lxmpp.stanza
local prosody = require "spec.support.prosody"

local srv

local function connect(user)
  return assert(lxmpp.connect({ jid = user .. "@example.test/im", password = user .. "-pw",
    host = "127.0.0.1", port = srv.port, cafile = srv.ca }))
end

local function run(fn)
  local ok, err = pcall(lxmpp.run, fn)
  lxmpp.task.cancel_all()
  require("lxmpp.net").abort_all()
  for _ = 1, 20 do if not lxmpp.step(0.01) then break end end
  if not ok then error(err, 0) end
end

-- waits for the next event of `event` on c matching pred
local function next_event(c, event, pred, timeout)
  local w = lxmpp.task.waiter()
  local id = c:on(event, function(...) if not pred or pred(...) then w:wake(true, ...) end end)
  local t = core.timer(timeout or 5, w)
  local r = compat.pack(w:wait())
  t:stop()
  c:off(id)
  return compat.unpack(r, 1, r.n)
end

describe("IM basics against Prosody", function()
  setup(function()
    srv = prosody.start({ users = { alice = "alice-pw", bob = "bob-pw", mallory = "mallory-pw" } })
  end)
  teardown(function() if srv then srv:stop() end end)

  it("gets, sets and removes roster items, with pushes from the server", function()
    run(function()
      local alice = connect("alice")
      local items = assert(alice:roster_get())
      assert.same({}, items)
      local push_seen = lxmpp.task.waiter()
      alice:on("roster", function(item) push_seen:wake(item) end)
      assert.is_true(alice:roster_set("Carol@Example.Test", "Carol", { "Friends", "Work" }))
      local pushed = push_seen:wait()
      assert.equal("carol@example.test", pushed.jid)
      assert.equal("Carol", pushed.name)
      assert.same({ "Friends", "Work" }, pushed.groups)
      items = assert(alice:roster_get())
      assert.equal("Carol", items["carol@example.test"].name)
      assert.equal("none", items["carol@example.test"].subscription)
      local removed = lxmpp.task.waiter()
      alice:on("roster", function(item) removed:wake(item) end)
      assert.is_true(alice:roster_remove("carol@example.test"))
      assert.equal("remove", removed:wait().subscription)
      assert.is_nil(assert(alice:roster_get())["carol@example.test"])
      alice:close()
    end)
  end)

  it("refuses a roster push from anyone but the account", function()
    run(function()
      local alice = connect("alice")
      local mallory = connect("mallory")
      assert(alice:roster_get())
      local fired = false
      alice:on("roster", function() fired = true end)
      local r, _, cond = mallory:request(st.iq({ type = "set", to = alice.jid })
        :tag("query", { xmlns = "jabber:iq:roster" })
        :tag("item", { jid = "evil@example.test", name = "trust me", subscription = "both" }))
      assert.is_nil(r)
      assert.equal("service-unavailable", cond)
      lxmpp.sleep(0.1)
      assert.is_false(fired)
      assert.is_nil((alice.roster.items or {})["evil@example.test"])
      alice:close()
      mallory:close()
    end)
  end)

  it("runs the subscription handshake and then sees presence", function()
    run(function()
      local alice = connect("alice")
      local bob = connect("bob")
      -- requesting the roster makes a resource "interested" (RFC 6121 §1.3):
      -- the server delivers subscription stanzas and pushes to it
      assert(alice:roster_get())
      assert(bob:roster_get())
      alice:send_presence()
      bob:send_presence()
      lxmpp.spawn(function() alice:subscribe("bob@example.test") end)
      local _, kind, from = next_event(bob, "subscription", function(k) return k == "subscribe" end)
      assert.equal("subscribe", kind)
      assert.equal("alice@example.test", from)
      lxmpp.spawn(function() bob:approve(from) end)
      local _, kind2, from2 = next_event(alice, "subscription", function(k) return k == "subscribed" end)
      assert.equal("subscribed", kind2)
      assert.equal("bob@example.test", from2)
      -- bob's presence now reaches alice, with show and status
      lxmpp.spawn(function()
        lxmpp.sleep(0.05)
        bob:send_presence({ show = "away", status = "lunch", priority = 5 })
      end)
      local _, p = next_event(alice, "presence", function(s)
        return s:get_child_text("status") == "lunch"
      end)
      assert.equal("away", p:get_child_text("show"))
      assert.equal("5", p:get_child_text("priority"))
      assert.equal("bob@example.test/im", p.attr.from)
      local items = assert(alice:roster_get())
      assert.equal("to", items["bob@example.test"].subscription)
      -- and cancelled
      lxmpp.spawn(function() alice:unsubscribe("bob@example.test") end)
      local _, kind3 = next_event(bob, "subscription", function(k) return k == "unsubscribe" end)
      assert.equal("unsubscribe", kind3)
      alice:close()
      bob:close()
    end)
  end)

  it("sends directed presence", function()
    run(function()
      local alice = connect("alice")
      local bob = connect("bob")
      lxmpp.spawn(function() alice:send_presence({ to = bob.jid, status = "just for you" }) end)
      local _, p = next_event(bob, "presence", function(s) return s:get_child_text("status") == "just for you" end)
      assert.equal(alice.jid, p.attr.from)
      alice:close()
      bob:close()
    end)
  end)

  it("pings and queries versions", function()
    run(function()
      local alice = connect("alice")
      local bob = connect("bob")
      local rtt = assert(alice:ping())
      assert.is_true(rtt >= 0 and rtt < 5)
      assert.is_number(assert(alice:ping(bob.jid)))
      local v = assert(alice:version(bob.jid))
      assert.equal("lxmpp", v.name)
      assert.equal(lxmpp.VERSION, v.version)
      local sv = assert(alice:version("example.test"))
      assert.equal("Prosody", sv.name)
      alice:close()
      bob:close()
    end)
  end)
end)
