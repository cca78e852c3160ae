-- Messaging extras between lxmpp clients on the embedded server: receipts
-- (XEP-0184), chat states (XEP-0085), corrections (XEP-0308), markers
-- (XEP-0333), origin and stanza ids (XEP-0359), delay stamps (XEP-0203), and
-- archive results accepted only from the archive queried (XEP-0313).
local lxmpp = require "lxmpp"
local st = lxmpp.stanza
local serve = require "spec.support.serve"
local listen = require "spec.support.listen"
local delay = require "lxmpp.plugins.delay"
local datetime = require "lxmpp.datetime"

local USERS = { alice = "alice-pw", bob = "bob-pw", carol = "carol-pw", mallory = "mallory-pw" }

local function login(port, user, res)
  return assert(serve.login(port, user, user .. "-pw", res))
end

describe("XEP-0184 receipts", function()
  it("asks for receipts once told to, answers by default those allowed to see its presence, and reports "
    .. "them only from the recipient", function()
    serve.run({ users = USERS }, function(_, port)
      local alice, bob, mallory = login(port, "alice"), login(port, "bob"), login(port, "mallory")
      local receipts = listen(alice, "receipt")
      local inbox = listen(bob, "message", function(m) return m:get_child("body") ~= nil end)
      -- by default nothing asks (a receipt is one more stanza per message)
      assert(alice:send_message(bob.jid, "not asking"))
      assert.is_nil(inbox:next():get_child("request", "urn:xmpp:receipts"))
      alice:set_receipts{ request = true }
      -- bob does not tell a stranger he is online (XEP-0184 §"Security Considerations")
      assert(alice:send_message(bob.jid, "are you there?"))
      assert.truthy(inbox:next():get_child("request", "urn:xmpp:receipts"))
      receipts:none(0.3)
      -- once alice may see bob's presence (bob approved her subscription), he answers
      local asked = listen(bob, "subscription")
      assert(bob:roster_get())              -- (pushes go to resources that asked for the roster)
      assert(bob:send_presence())           -- (requests to available resources)
      assert(alice:subscribe(bob.jid))
      assert.equal("subscribe", (asked:next()))
      assert(bob:approve(alice.jid))
      assert.is_true(serve.until_true(function()
        local item = bob.roster.items and bob.roster.items["alice@example.test"]
        return item ~= nil and item.subscription == "from"
      end))
      assert(alice:send_message(bob.jid, "did you get this?"))
      local m = inbox:next()
      assert.truthy(m:get_child("request", "urn:xmpp:receipts"))
      local id, from = receipts:next()
      assert.equal(m.attr.id, id)
      assert.equal(bob.jid, from)
      -- mallory claims to have received a message alice sent to carol
      assert(alice:send_message("carol@example.test", "for carol only"))
      local sent = next(alice.receipts.waiting.map)
      assert(mallory:send(st.message({ to = alice.jid }):tag("received", { xmlns = "urn:xmpp:receipts", id = sent })))
      -- and a receipt for nothing alice sent
      assert(bob:send(st.message({ to = alice.jid }):tag("received", { xmlns = "urn:xmpp:receipts", id = "nope" })))
      receipts:none(0.3)
      -- no requests when turned off; none answered either
      alice:set_receipts{ request = false }
      bob:set_receipts{ answer = false }
      assert(alice:send_message(bob.jid, "no receipt please"))
      assert.is_nil(inbox:next():get_child("request", "urn:xmpp:receipts"))
      alice:set_receipts{ request = true }
      assert(alice:send_message(bob.jid, "requested, not answered"))
      assert.truthy(inbox:next():get_child("request", "urn:xmpp:receipts"))
      receipts:none(0.3)
      -- answer = "all": strangers too; never to a groupchat message
      bob:set_receipts{ answer = "all" }
      local acks = listen(mallory, "message", function(ack) return ack:get_child("received", "urn:xmpp:receipts") end)
      for _, typ in ipairs({ "groupchat", "chat" }) do
        assert(mallory:send(st.message({ to = bob.jid, id = "m-" .. typ, type = typ }, "hi")
          :tag("request", { xmlns = "urn:xmpp:receipts" }):up()))
      end
      assert.equal("m-chat", acks:next():get_child("received", "urn:xmpp:receipts").attr.id)
      acks:none(0.2)
      bob:set_receipts{ answer = true }
      assert(mallory:send(st.message({ to = bob.jid, id = "m-again", type = "chat" }, "hi")
        :tag("request", { xmlns = "urn:xmpp:receipts" }):up()))
      acks:none(0.3)
      for _, bad in ipairs({ "contacts", 1 }) do
        assert.has_error(function() bob:set_receipts{ answer = bad } end,
          "set_receipts: answer must be true (those allowed to see our presence), false or \"all\"")
      end
      for _, c in ipairs({ alice, bob, mallory }) do c:close() end
    end)
  end)
end)

describe("chat states, corrections, markers, stanza ids", function()
  it("sends and reports chat states", function()
    serve.run({ users = USERS }, function(_, port)
      local alice, bob = login(port, "alice"), login(port, "bob")
      local states = listen(bob, "chat-state")
      assert(alice:send_chat_state(bob.jid, "composing"))
      assert(alice:send_chat_state(bob.jid, "paused"))
      local from, state, m = states:next()
      assert.equal(alice.jid, from)
      assert.equal("composing", state)
      assert.truthy(m:get_child("no-store", "urn:xmpp:hints"))
      assert.equal("paused", select(2, states:next()))
      assert.has_error(function() alice:send_chat_state(bob.jid, "dancing") end)
      alice:close()
      bob:close()
    end)
  end)

  it("sends corrections and markers, and reports them", function()
    serve.run({ users = USERS }, function(_, port)
      local alice, bob = login(port, "alice"), login(port, "bob")
      local inbox = listen(bob, "message", function(m) return m:get_child("body") ~= nil end)
      local corrections = listen(bob, "correction")
      local markers = listen(alice, "marker")
      -- not markable unless asked
      assert(alice:send_message(bob.jid, "plain"))
      assert.is_nil(inbox:next():get_child("markable", "urn:xmpp:chat-markers:0"))
      alice:set_markable(true)
      assert(alice:send_message(bob.jid, "teh text"))
      local first = inbox:next()
      assert.truthy(first:get_child("markable", "urn:xmpp:chat-markers:0"))
      assert.has_error(function() alice:set_markable("yes") end)
      local new_id = assert(alice:correct(bob.jid, first.attr.id, "the text"))
      local from, replaced, body, m = corrections:next()
      assert.equal(alice.jid, from)
      assert.equal(first.attr.id, replaced)
      assert.equal("the text", body)
      assert.equal(new_id, m.attr.id)
      assert(bob:mark_displayed(first))
      local kind, id, mfrom = markers:next()
      assert.equal("displayed", kind)
      assert.equal(first.attr.id, id)
      assert.equal(bob.jid, mfrom)
      -- a message that is not markable cannot be marked
      local plain = st.message({ from = alice.jid, id = "x1" }, "hi")
      local ok, _, cond = bob:mark_displayed(plain)
      assert.is_nil(ok)
      assert.equal("not-acceptable", cond)
      alice:close()
      bob:close()
    end)
  end)

  it("puts an origin-id on sent messages once asked and trusts a stanza-id only from the expected entity", function()
    serve.run({ users = USERS }, function(_, port)
      local alice, bob = login(port, "alice"), login(port, "bob")
      local inbox = listen(bob, "message")
      assert(alice:send_message(bob.jid, "no origin id"))
      assert.is_nil(bob:origin_id(inbox:next()))
      alice:set_origin_id(true)
      assert(alice:send_message(bob.jid, "with an origin id"))
      local m = inbox:next()
      assert.equal(m.attr.id, bob:origin_id(m))
      assert(alice:send(st.message({ to = bob.jid }, "forged")
        :tag("stanza-id", { xmlns = "urn:xmpp:sid:0", by = "bob@example.test", id = "forged-1" }):up()
        :tag("stanza-id", { xmlns = "urn:xmpp:sid:0", by = "room@conference.example.test", id = "room-7" }):up()))
      m = inbox:next()
      -- any sender can write one: the application asks for the entity it trusts
      assert.equal("room-7", bob:stanza_id(m, "room@conference.example.test"))
      assert.is_nil(bob:stanza_id(m, "other@example.test"))
      local own = st.message({ to = bob.jid }):tag("stanza-id", { xmlns = "urn:xmpp:sid:0",
        by = "mallory@example.test", id = "m-1" }):up()
      assert.is_nil(bob:stanza_id(own))
      alice:close()
      bob:close()
    end)
  end)

  it("reads delay stamps as Unix time (offline messages from the server)", function()
    serve.run({ users = USERS }, function(_, port)
      local alice = login(port, "alice")
      local before = os.time()
      assert(alice:send_message("carol@example.test", "while you were out"))
      lxmpp.sleep(0.2)
      local carol = login(port, "carol")
      local inbox = listen(carol, "message")
      carol:send_presence()
      local m = inbox:next()
      local stamp, from = carol:delay_of(m)
      assert.is_number(stamp)
      assert.is_true(stamp >= before - 1 and stamp <= os.time() + 1)
      assert.equal("example.test", from)
      assert.is_nil(carol:delay_of(st.message({}, "now")))
      alice:close()
      carol:close()
    end)
  end)
end)

describe("XEP-0203 and XEP-0082 helpers", function()
  it("reads and writes stamps with and without fractions and zones", function()
    local cases = {
      { "2002-09-10T23:08:25Z", 1031699305 },
      { "2002-09-10T23:08:25.5Z", 1031699305.5 },
      { "1969-07-21T02:56:15-04:00", -14144625 },
      { "2000-02-29T12:00:00+01:00", 951822000 },
    }
    for _, c in ipairs(cases) do assert.equal(c[2], datetime.parse(c[1]), c[1]) end
    for _, bad in ipairs({ "2002-09-10", "2002-13-10T23:08:25Z", "2001-02-29T00:00:00Z", "2002-09-10T23:08:25",
      "2002-09-10T23:08:25.Z", "x" }) do
      assert.is_nil(datetime.parse(bad), bad)
    end
    assert.equal("2002-09-10T23:08:25Z", datetime.format(1031699305))
    assert.equal("2002-09-10T23:08:25.250Z", datetime.format(1031699305.25))
    assert.equal("-05:30", datetime.tzo(-19800))
    local m = delay.add(st.message({}, "old"), 1031699305, "example.org")
    local stamp, from = delay.of(m)
    assert.equal(1031699305, stamp)
    assert.equal("example.org", from)
    m = st.message({}):tag("delay", { xmlns = "urn:xmpp:delay", stamp = "yesterday" }):up()
    assert.is_nil(delay.of(m))
  end)

  it("reads fractions only after a dot, and zones only as Z or ±hh:mm in range (XEP-0082 §3.2)", function()
    local good = {
      { "2002-09-10T23:08:25.123Z", 1031699305.123 },
      { "2002-09-10T23:08:25.000001Z", 1031699305.000001 },
      { "2002-09-10T23:08:25.9999999999Z", 1031699305.9999999999 },
      { "2002-09-10T23:08:25.5+02:00", 1031699305.5 - 7200 },
      { "2002-09-10T23:08:25-23:59", 1031699305 + 23 * 3600 + 59 * 60 },
      { "2002-09-10T23:08:25+00:00", 1031699305 },
      { "2002-09-10T23:08:60Z", 1031699340 },                   -- a leap second
    }
    for _, c in ipairs(good) do assert.near(c[2], assert(datetime.parse(c[1]), c[1]), 1e-6, c[1]) end
    for _, bad in ipairs({
      "2002-09-10T23:08:2599Z",                                 -- digits without the dot: not 99 more seconds
      "2002-09-10T23:08:25999999999999999999999999Z",
      "2002-09-10T23:08:25999+02:00",
      "2002-09-10T23:08:25.5.5Z", "2002-09-10T23:08:25..5Z", "2002-09-10T23:08:25.+02:00",
      "2002-09-10T23:08:25.5", "2002-09-10T23:08:25z", "2002-09-10T23:08:25+0200", "2002-09-10T23:08:25+02",
      "2002-09-10T23:08:25+24:00", "2002-09-10T23:08:25-02:60", "2002-09-10T23:08:25Z ", "2002-09-10T23:08:61Z",
    }) do
      local t, msg = datetime.parse(bad)
      assert.is_nil(t, bad)
      assert.is_string(msg, bad)
    end
  end)
end)

describe("XEP-0313 results", function()
  it("accepts results only from the archive queried, for the query asked", function()
    serve.run({ users = USERS }, function(_, port)
      local alice, archive, mallory = login(port, "alice"), login(port, "bob", "archive"), login(port, "mallory")
      local seen_query = lxmpp.task.waiter()
      -- bob's resource plays an archive: two results, then (later) the end
      archive:handle_iq("urn:xmpp:mam:2", function(iq)
        local q = iq.tags[1]
        seen_query:wake(q.attr.queryid)
        for i = 1, 2 do
          archive:send(st.message({ to = iq.attr.from }):tag("result", { xmlns = "urn:xmpp:mam:2",
            queryid = q.attr.queryid, id = "a" .. i }):tag("forwarded", { xmlns = "urn:xmpp:forward:0" })
            :tag("delay", { xmlns = "urn:xmpp:delay", stamp = "2020-01-0" .. i .. "T00:00:00Z" }):up()
            :tag("message", { xmlns = "jabber:client", from = "carol@example.test/x", to = "bob@example.test" })
            :text_tag("body", "archived " .. i))
        end
        lxmpp.sleep(0.3)
        return st.reply(iq):tag("fin", { xmlns = "urn:xmpp:mam:2", complete = "false" })
          :tag("set", { xmlns = "http://jabber.org/protocol/rsm" }):text_tag("first", "a1"):text_tag("last", "a2")
          :text_tag("count", "5")
      end)
      local forged = listen(alice, "message")
      local logged = {}
      alice.logger = function(level, msg) logged[#logged + 1] = level .. " " .. msg end
      local result
      lxmpp.spawn(function()
        result = { alice:mam_query{ to = archive.jid, with = "carol@example.test", max = 2 } }
      end)
      local queryid = seen_query:wait()
      -- mallory knows the query id and injects a result of her own
      assert(mallory:send(st.message({ to = alice.jid }):tag("result", { xmlns = "urn:xmpp:mam:2",
        queryid = queryid, id = "evil" }):tag("forwarded", { xmlns = "urn:xmpp:forward:0" })
        :tag("message", { xmlns = "jabber:client", from = "carol@example.test/x" }):text_tag("body", "evil")))
      assert.is_true(serve.until_true(function() return result ~= nil end))
      local page = assert(result[1], result[2])
      assert.equal(2, #page.messages)
      assert.equal("a1", page.messages[1].id)
      assert.equal("archived 2", page.messages[2].message:get_child_text("body"))
      assert.equal(datetime.parse("2020-01-02T00:00:00Z"), page.messages[2].stamp)
      assert.is_false(page.complete)
      assert.equal("a2", page.last)
      assert.equal(5, page.count)
      forged:none(0.1)                  -- the forgery is dropped, not delivered as a message
      assert.matches("warn ignored an archive result from mallory@example.test", table.concat(logged, "\n"))
      -- the query carried the filters and paging asked for
      assert.has_error(function() alice:mam_query{ with = "not a jid@@" } end)
      assert.has_error(function() alice:mam_query{ colour = "red" } end)
      for _, c in ipairs({ alice, archive, mallory }) do c:close() end
    end)
  end)

  it("takes our own archive's results without a from (RFC 6120 §8.1.2.1), asked with or without to", function()
    local smserver = require "spec.support.smserver"
    local RESULT = "<message to='anon@example.test/r'%s><result xmlns='urn:xmpp:mam:2' queryid='%s' id='a1'>" ..
      "<forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='2020-01-01T00:00:00Z'/>" ..
      "<message xmlns='jabber:client' from='juliet@example.test/b' to='anon@example.test'><body>archived</body>" ..
      "</message></forwarded></result></message>"
    smserver.run(function()
      local srv
      srv = smserver.start({ stanza = function(conn, s)
        local q = s.name == "iq" and s:get_child("query", "urn:xmpp:mam:2")
        if not q then return end
        -- the account's own data: no from; then one from someone else
        conn:write(RESULT:format("", q.attr.queryid))
        conn:write(RESULT:format(" from='mallory@example.test'", q.attr.queryid):gsub("id='a1'", "id='m1'"))
        conn:write(tostring(st.reply(s):tag("fin", { xmlns = "urn:xmpp:mam:2", complete = "true" })))
      end })
      local logged = {}
      local c = assert(lxmpp.connect(srv:client_opts({ jid = "anon@example.test/r", reconnect = false,
        logger = function(level, msg) logged[#logged + 1] = level .. " " .. msg end })))
      for _, to in ipairs({ false, "anon@example.test", "ANON@example.test" }) do
        local page = assert(c:mam_query({ to = to or nil, timeout = 5 }))
        assert.equal(1, #page.messages, tostring(to))
        assert.equal("a1", page.messages[1].id)
        assert.equal("archived", page.messages[1].message:get_child_text("body"))
      end
      assert.equal(3, select(2, table.concat(logged, "\n"):gsub("ignored an archive result from mallory", "")))
      c:close()
      srv:close()
    end)
  end)
end)
