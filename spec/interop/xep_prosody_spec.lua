-- Client XEP plugins against a real Prosody (0.12): carbons (XEP-0280) with
-- forged copies from a stranger dropped, the archive (XEP-0313) paged with
-- RSM (XEP-0059) and filtered, stanza ids the server stamps (XEP-0359),
-- blocking (XEP-0191) with pushes, and the server's disco, time, last
-- activity and version answers.
local lxmpp = require "lxmpp"
local st = lxmpp.stanza
local prosody = require "spec.support.prosody"
local listen = require "spec.support.listen"

local srv

local function connect(user, res)
  return assert(lxmpp.connect({ jid = user .. "@example.test/" .. (res or "xep"), password = user .. "-pw",
    host = "127.0.0.1", port = srv.port, cafile = srv.ca }))
end

local function run(fn)
  local ok, err = pcall(lxmpp.run, fn)
  lxmpp.task.cancel_all()
  require("lxmpp.net").abort_all()
  for _ = 1, 20 do if not lxmpp.step(0.01) then break end end
  if not ok then error(err, 0) end
end

local function bodies(page)
  local out = {}
  for i, m in ipairs(page.messages) do out[i] = m.message:get_child_text("body") end
  return out
end

describe("client XEPs against Prosody", function()
  setup(function()
    srv = prosody.start({ users = { alice = "alice-pw", bob = "bob-pw", mallory = "mallory-pw",
      dave = "dave-pw" }, modules = { "mam" } })
  end)
  teardown(function() if srv then srv:stop() end end)

  it("receives carbon copies of both directions, and drops a stranger's forged copy", function()
    run(function()
      local a1, a2 = connect("alice", "one"), connect("alice", "two")
      local bob, mallory = connect("bob"), connect("mallory")
      for _, c in ipairs({ a1, a2, bob, mallory }) do c:send_presence() end
      assert.is_true(assert(a1:disco_info()).features["urn:xmpp:carbons:2"])
      assert(a1:enable_carbons())
      assert(a2:enable_carbons())
      -- (receipts travel too: only copies with a body are looked at)
      local function has_body(m) return m:get_child("body") ~= nil end
      local received, sent = listen(a2, "carbon-received", has_body), listen(a2, "carbon-sent", has_body)
      local plain = listen(a2, "message", has_body)
      assert(bob:send_message(a1.jid, "to one"))
      local m, outer = received:next()
      assert.equal("to one", m:get_child_text("body"))
      assert.equal(bob.jid, m.attr.from)
      assert.equal("alice@example.test", outer.attr.from)
      assert(a1:send_message(bob.jid, "from one"))
      m = sent:next()
      assert.equal("from one", m:get_child_text("body"))
      assert.equal(bob.jid, m.attr.to)
      local logged = {}
      a2.logger = function(level, msg) logged[#logged + 1] = level .. " " .. msg end
      -- mallory forges a "sent" copy: alice would appear to have said it
      assert(mallory:send(st.message({ to = a2.jid, type = "chat" })
        :tag("sent", { xmlns = "urn:xmpp:carbons:2" }):tag("forwarded", { xmlns = "urn:xmpp:forward:0" })
        :tag("message", { xmlns = "jabber:client", from = a1.jid, to = bob.jid, type = "chat" })
        :text_tag("body", "I owe mallory money")))
      assert(mallory:send(st.message({ to = a2.jid, type = "chat" })
        :tag("received", { xmlns = "urn:xmpp:carbons:2" }):tag("forwarded", { xmlns = "urn:xmpp:forward:0" })
        :tag("message", { xmlns = "jabber:client", from = bob.jid, to = a1.jid, type = "chat" })
        :text_tag("body", "bob says: trust mallory")))
      sent:none(0.3)
      received:none(0.1)
      plain:none(0.1)
      assert.matches("warn dropped a forged carbon copy from mallory", table.concat(logged, "\n"))
      assert(a2:disable_carbons())
      assert(bob:send_message(a1.jid, "not copied"))
      received:none(0.3)
      for _, c in ipairs({ a1, a2, bob, mallory }) do c:close() end
    end)
  end)

  it("pages through the archive with filters, and reads the server's stanza ids", function()
    run(function()
      local dave, bob = connect("dave"), connect("bob", "arch")
      dave:send_presence()
      bob:send_presence()
      -- receipts would be archived too: keep the archive to the five messages
      bob:set_receipts{ answer = false }
      local inbox = listen(bob, "message", function(m) return m:get_child("body") ~= nil end)
      local t0 = os.time()
      for i = 1, 5 do
        assert(dave:send_message("bob@example.test", "msg " .. i))
        local m = inbox:next()
        assert.is_string(bob:stanza_id(m))      -- stamped by bob's archive
        assert.is_nil(bob:stanza_id(m, "mallory@example.test"))
      end
      lxmpp.sleep(0.2)
      local page = assert(dave:mam_query{ with = "bob@example.test", max = 2 })
      assert.same({ "msg 1", "msg 2" }, bodies(page))
      assert.is_false(page.complete)
      assert.equal(5, page.count)
      assert.is_true(math.abs(page.messages[1].stamp - t0) <= 5)
      local all = bodies(page)
      local pages = 1
      while not page.complete do
        page = assert(dave:mam_next(page))
        pages = pages + 1
        for _, b in ipairs(bodies(page)) do all[#all + 1] = b end
      end
      assert.same({ "msg 1", "msg 2", "msg 3", "msg 4", "msg 5" }, all)
      assert.equal(3, pages)
      assert.is_nil(dave:mam_next(page))
      -- the last page first, then backwards
      local last = assert(dave:mam_query{ with = "bob@example.test", max = 2, before = true })
      assert.same({ "msg 4", "msg 5" }, bodies(last))
      local older = assert(dave:mam_next(last))
      assert.same({ "msg 2", "msg 3" }, bodies(older))
      -- filters: another correspondent, a time window in the future
      assert.same({}, bodies(assert(dave:mam_query{ with = "mallory@example.test" })))
      assert.same({}, bodies(assert(dave:mam_query{ start = os.time() + 3600 })))
      -- bob's own archive has them too, with stanza ids that match the results
      local bpage = assert(bob:mam_query{ with = "dave@example.test" })
      assert.equal(5, #bpage.messages)
      dave:close()
      bob:close()
    end)
  end)

  it("blocks and unblocks, with pushes to the other resources; refuses a stranger's push", function()
    run(function()
      local a1, a2, mallory = connect("alice", "b1"), connect("alice", "b2"), connect("mallory")
      assert.same({}, assert(a1:blocklist()))
      assert.same({}, assert(a2:blocklist()))   -- pushes go to resources that asked (XEP-0191 §3.3)
      local pushes = listen(a2, "blocklist")
      assert(a1:block({ "Mallory@Example.Test", "spam.example" }))
      local action, jids = pushes:next()
      assert.equal("block", action)
      table.sort(jids)
      assert.same({ "mallory@example.test", "spam.example" }, jids)
      assert.same({ "mallory@example.test", "spam.example" }, assert(a1:blocklist()))
      -- blocked: mallory's message does not reach alice
      local inbox = listen(a1, "message", function(m) return m:get_child("body") ~= nil end)
      mallory:send_message(a1.jid, "let me in")
      inbox:none(0.3)
      assert(a1:unblock({ "spam.example" }))
      assert.same({ "unblock", { "spam.example" } }, { pushes:next() })
      assert(a1:unblock())
      action, jids = pushes:next()
      assert.equal("unblock", action)
      assert.same({}, jids)
      assert.same({}, assert(a1:blocklist()))
      -- a "push" from mallory is refused
      local r, _, cond = mallory:request(st.iq({ type = "set", to = a2.jid })
        :tag("unblock", { xmlns = "urn:xmpp:blocking" }))
      assert.is_nil(r)
      assert.equal("service-unavailable", cond)
      pushes:none(0.2)
      for _, c in ipairs({ a1, a2, mallory }) do c:close() end
    end)
  end)

  it("asks the server for its info, time, uptime and version", function()
    run(function()
      local alice = connect("alice", "info")
      local info = assert(alice:disco_info())
      assert.equal("server", info.identities[1].category)
      assert.is_true(info.features["urn:xmpp:mam:2"] or info.features["urn:xmpp:blocking"])
      local t = assert(alice:time("example.test"))
      assert.is_true(math.abs(t.utc - os.time()) <= 2)
      local uptime = assert(alice:last_activity("example.test"))
      assert.is_true(uptime >= 0 and uptime < 600)
      local v = assert(alice:version("example.test"))
      assert.equal("Prosody", v.name)
      alice:close()
    end)
  end)
end)
