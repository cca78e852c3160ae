-- The client loses no message sent while it was offline, whatever bind it
-- makes (features/catchup.lua): without an archive anchor it binds
-- classically after SASL2 and the server delivers its offline messages;
-- with one it binds with Bind2 (XEP-0386: the server clears the offline
-- messages its archive holds) and fetches them from the archive
-- (XEP-0313) once its initial presence is sent, delivered as "message"
-- events with a <delay/>, in order, before the live ones, once each. The
-- anchor outlives the process in a state file, and a reconnection that
-- could not resume in memory; an anchor the archive dropped falls back to
-- its time; mam_catch_up = false turns it off; a hostile server cannot
-- slip messages in or keep the client paging.
local lxmpp = require "lxmpp"
local serve = require "spec.support.serve"
local slow = require "spec.support.slow"
local sf = require "lxmpp.state_file"
local catchup = require "lxmpp.features.catchup"

local USERS = { alice = "alice-pw", bob = "bob-pw" }
local NS_DELAY = "urn:xmpp:delay"

-- alice, with no resource asked for (Bind2 allowed), a debug log
local function alice(port, extra)
  local log = {}
  local o = { jid = "alice@example.test", debug = true,
    logger = function(level, msg) log[#log + 1] = level .. " " .. msg end }
  for k, v in pairs(extra or {}) do o[k] = v end
  local c = assert(serve.login(port, "alice", USERS.alice, nil, o))
  return c, log
end

local count = serve.count_logged

local CLASSIC_BIND = "OUT <iq[^>]*><bind xmlns='urn:ietf:params:xml:ns:xmpp%-bind'"
-- (the <authenticate/> that carries a Bind2 request is redacted in the
-- log: only a Bind2 <bound/> sets c.archive_metadata)
local function bind2(c) return c.archive_metadata ~= nil end

local function bodies(list)
  local out = {}
  for i, m in ipairs(list) do out[i] = m:get_child_text("body") end
  return out
end

local function delayed(list)
  local out = {}
  for i, m in ipairs(list) do out[i] = m:get_child("delay", NS_DELAY) ~= nil end
  return out
end

local function tmp()
  local path = os.tmpname()
  os.remove(path)
  return path
end

-- bob sends bodies to alice's bare JID, and they are stored offline
local function send_offline(srv, bob, list)
  local n0 = srv.store:count_offline("alice")
  for _, b in ipairs(list) do assert(bob:send_message("alice@example.test", b)) end
  assert.truthy(serve.until_true(function() return srv.store:count_offline("alice") == n0 + #list end,
    5 * slow.factor))
end

-- a first login with no anchor: classic bind; a live message gives one
local function first_login(port, bob, extra)
  local c, log = alice(port, extra)
  assert.equal(1, count(log, CLASSIC_BIND))
  local got = serve.collect(c, "message")
  c:send_presence()
  lxmpp.sleep(0.1 * slow.factor)
  assert(bob:send_message("alice@example.test", "seen"))
  assert.truthy(serve.until_true(function() return #got == 1 end, 5 * slow.factor))
  local id = assert(c:stanza_id(got[1]))
  assert.equal(id, c.login.archive.id)
  return c, id
end

describe("client: no offline message lost by default (Bind2 and the archive catch-up)", function()
  it("binds classically after SASL2 without an anchor, and gets the offline messages (a fresh client)", function()
    serve.run({ users = USERS }, function(srv, port)
      local bob = assert(serve.login(port, "bob", USERS.bob, "desk"))
      send_offline(srv, bob, { "one", "two" })
      local c, log = alice(port)
      assert.equal(1, count(log, "OUT <authenticate xmlns='urn:xmpp:sasl:2'"))
      assert.is_false(bind2(c))
      assert.equal(1, count(log, CLASSIC_BIND))
      assert.equal(2, srv.store:count_offline("alice"))      -- nothing cleared
      local got = serve.collect(c, "message")
      c:send_presence()
      assert.truthy(serve.until_true(function() return #got == 2 end, 5 * slow.factor))
      assert.same({ "one", "two" }, bodies(got))
      assert.same({ true, true }, delayed(got))
      -- what came carried our archive's ids: the anchor of a later Bind2 login
      assert.equal(c:stanza_id(got[2]), c.login.archive.id)
      c:close()
      bob:close()
    end)
  end)

  it("after a restart from a state file: Bind2, then the catch-up delivers the offline messages once, in order, "
    .. "with a delay, before a live one", function()
    serve.run({ users = USERS }, function(srv, port)
      local path = tmp()
      local bob = assert(serve.login(port, "bob", USERS.bob, "desk"))
      local c, seen_id = first_login(port, bob, { stream_management = sf.open(path) })
      c:close()
      assert.equal(seen_id, assert(sf.load(path)).archive.id)          -- saved with the state (mode 0600)
      send_offline(srv, bob, { "old 1", "old 2", "old 3" })
      -- a new process: what it knows is what the file holds
      local c2, log = alice(port, { stream_management = sf.open(path) })
      assert.is_true(bind2(c2))
      assert.equal(0, count(log, CLASSIC_BIND))
      assert.equal(0, srv.store:count_offline("alice"))      -- Bind2 cleared them: the archive has them
      local got = serve.collect(c2, "message")
      c2:send_presence()
      lxmpp.sleep(0.2 * slow.factor)          -- (sooner, the server may yet store it offline)
      assert(bob:send_message("alice@example.test", "live"))
      assert.truthy(serve.until_true(function() return #got >= 4 end, 5 * slow.factor))
      lxmpp.sleep(0.3 * slow.factor)
      assert.same({ "old 1", "old 2", "old 3", "live" }, bodies(got))
      assert.same({ true, true, true, false }, delayed(got))
      assert.equal(c2:stanza_id(got[4]), c2.login.archive.id)
      assert.truthy(serve.until_true(function() return sf.load(path).archive.id == c2.login.archive.id end))
      c2:close()
      -- once more: nothing new, nothing again, no query
      local c3, log3 = alice(port, { stream_management = sf.open(path) })
      assert.is_true(bind2(c3))
      local got3 = serve.collect(c3, "message")
      c3:send_presence()
      lxmpp.sleep(0.3 * slow.factor)
      assert.same({}, got3)
      assert.equal(0, count(log3, "<query xmlns='urn:xmpp:mam:2'"))
      c3:close()
      bob:close()
      os.remove(path)
    end)
  end)

  it("catches up after a reconnection the server could not resume, in the same process", function()
    serve.run({ users = USERS, limits = { sm_timeout = 0.2 } }, function(srv, port)
      local bob = assert(serve.login(port, "bob", USERS.bob, "desk"))
      local c = first_login(port, bob, { reconnect = { delay = 2 * slow.factor } })
      local got = serve.collect(c, "message")
      local w = lxmpp.task.waiter()
      c:on("reconnected", function(resumed) w:wake(resumed) end)
      c.conn:abort()
      -- the hibernating session ends (sm_timeout): these go offline
      assert.truthy(serve.until_true(function() return srv:session(c.jid) == nil end, 5 * slow.factor))
      send_offline(srv, bob, { "while away 1", "while away 2" })
      local t = lxmpp.core.timer(10 * slow.factor, w)
      local resumed = w:wait()
      t:stop()
      assert.is_false(resumed)
      assert.is_true(bind2(c))                   -- (Bind2 beside the failed inline resumption)
      assert.truthy(serve.until_true(function() return #got >= 2 end, 5 * slow.factor))
      assert(bob:send_message("alice@example.test", "after"))
      assert.truthy(serve.until_true(function() return #got >= 3 end, 5 * slow.factor))
      lxmpp.sleep(0.2 * slow.factor)
      assert.same({ "while away 1", "while away 2", "after" }, bodies(got))
      assert.same({ true, true, false }, delayed(got))
      assert.equal(0, srv.store:count_offline("alice"))
      c:close()
      bob:close()
    end)
  end)

  it("an incomplete catch-up pins the anchor: live messages do not move it, the next login (after a restart) "
    .. "gets the rest, and not what came live again", function()
    local keep = catchup.MAX_MESSAGES
    local ok, err = pcall(serve.run, { users = USERS }, function(srv, port)
      local path = tmp()
      local bob = assert(serve.login(port, "bob", USERS.bob, "desk"))
      local c = first_login(port, bob, { stream_management = sf.open(path) })
      c:close()
      send_offline(srv, bob, { "old 1", "old 2", "old 3", "old 4" })
      catchup.MAX_MESSAGES = 2
      local c2 = alice(port, { stream_management = sf.open(path) })
      assert.is_true(bind2(c2))
      local got = serve.collect(c2, "message")
      local incomplete = {}
      c2:on("catch-up-incomplete", function(id, why) incomplete[#incomplete + 1] = { id, why } end)
      c2:send_presence()
      assert.truthy(serve.until_true(function() return #incomplete == 1 end, 5 * slow.factor))
      assert.same({ "old 1", "old 2" }, bodies(got))
      -- the archive: "seen", "old 1", "old 2"...
      local pinned = assert(srv.store:archive_query("alice", { max = 10 }).items[3].id)
      assert.same({ pinned, "stopped after 2 messages" }, incomplete[1])
      assert.same({ id = pinned, gap = true }, { id = c2.login.archive.id, gap = c2.login.archive.gap })
      assert(bob:send_message("alice@example.test", "live"))
      assert.truthy(serve.until_true(function() return #got == 3 end, 5 * slow.factor))
      local live_id = assert(c2:stanza_id(got[3]))
      -- saved: the pinned anchor, and the id that came live since
      assert.truthy(serve.until_true(function()
        local a = sf.load(path).archive
        return a.id == pinned and a.gap == true and a.seen and a.seen[#a.seen] == live_id end, 5 * slow.factor))
      c2:close()
      catchup.MAX_MESSAGES = keep
      -- a new process: the rest, not "live" again; the pin is gone
      local c3 = alice(port, { stream_management = sf.open(path) })
      assert.is_true(bind2(c3))
      local got3 = serve.collect(c3, "message")
      local stanzas3 = {}
      c3:on("stanza", function(x) if x.name == "message" then stanzas3[#stanzas3 + 1] = x end end)
      c3:send_presence()
      assert.truthy(serve.until_true(function() return #got3 >= 2 end, 5 * slow.factor))
      assert.truthy(serve.until_true(function() return c3.catchup == nil end, 5 * slow.factor))
      lxmpp.sleep(0.2 * slow.factor)
      assert.same({ "old 3", "old 4" }, bodies(got3))
      assert.same({ "old 3", "old 4" }, bodies(stanzas3))
      assert.same({ id = live_id }, sf.load(path).archive and { id = sf.load(path).archive.id,
        gap = sf.load(path).archive.gap })
      c3:close()
      bob:close()
      os.remove(path)
    end)
    catchup.MAX_MESSAGES = keep
    assert(ok, err)
  end)

  it("falls back to the anchor's time when the archive dropped it; without a time, warns and fetches nothing",
    function()
    serve.run({ users = USERS, limits = { mam_max_messages = 3 } }, function(srv, port)
      local bob = assert(serve.login(port, "bob", USERS.bob, "desk"))
      local box = {}
      local c, seen_id = first_login(port, bob, { stream_management = { save = function(s) box.state = s end } })
      c:close()
      assert.equal(seen_id, box.state.archive.id)
      assert.truthy(box.state.archive.stamp)
      send_offline(srv, bob, { "old 1", "old 2", "old 3", "old 4" })
      assert.is_false(srv.store:archive_has("alice", seen_id))     -- the cap dropped it (and "old 1")
      local c2, log = alice(port, { stream_management = { state = box.state, save = function(s) box.state = s end } })
      assert.is_true(bind2(c2))
      local got = serve.collect(c2, "message")
      c2:send_presence()
      assert.truthy(serve.until_true(function() return #got >= 4 end, 5 * slow.factor))
      lxmpp.sleep(0.3 * slow.factor)
      -- from the archive, from the anchor's time on; then "old 1", which the
      -- archive no longer held, from the server's offline storage
      assert.same({ "old 2", "old 3", "old 4", "old 1" }, bodies(got))
      assert.truthy(count(log, "no longer holds entry") >= 1)
      c2:close()
      -- an anchor of unknown time that the archive does not hold: a warning,
      -- one query, nothing delivered, and the login goes on
      send_offline(srv, bob, { "lost 1" })
      local state = { inbound = 0, acked = 0, queue = {}, archive = { id = "never-heard-of" } }
      local c3, log3 = alice(port, { stream_management = { state = state } })
      assert.is_true(bind2(c3))
      local got3 = serve.collect(c3, "message")
      local incomplete = {}
      c3:on("catch-up-incomplete", function(id, why) incomplete[#incomplete + 1] = { id or "nil", why } end)
      c3:send_presence()
      assert.truthy(serve.until_true(function()
        return count(log3, "^warn the archive catch%-up after the Bind2 login did not finish") == 1 end, 5 * slow.factor))
      lxmpp.sleep(0.2 * slow.factor)
      assert.same({}, got3)
      assert.equal(1, count(log3, "OUT <iq.*<query xmlns='urn:xmpp:mam:2'"))
      -- nothing to go on from: no pin (it would hold the anchor for ever)
      assert.same({ { "nil", "the archive no longer holds entry never-heard-of and its time is unknown" } }, incomplete)
      assert.is_nil(c3.login.archive.gap)
      assert.truthy(c3:ping())
      c3:close()
      bob:close()
    end)
  end)

  it("mam_catch_up = false: the classic bind by default; with bind2 = true, Bind2 and no catch-up", function()
    serve.run({ users = USERS }, function(srv, port)
      local bob = assert(serve.login(port, "bob", USERS.bob, "desk"))
      local c, seen_id = first_login(port, bob)
      c:close()
      send_offline(srv, bob, { "one" })
      local anchor = { inbound = 0, acked = 0, queue = {}, archive = { id = seen_id } }
      local c2, log = alice(port, { mam_catch_up = false, stream_management = { state = anchor } })
      assert.is_false(bind2(c2))
      assert.equal(1, count(log, CLASSIC_BIND))
      local got = serve.collect(c2, "message")
      c2:send_presence()
      assert.truthy(serve.until_true(function() return #got == 1 end, 5 * slow.factor))
      assert.same({ "one" }, bodies(got))         -- from the server's offline storage
      c2:close()
      send_offline(srv, bob, { "two" })
      local c3, log3 = alice(port, { mam_catch_up = false, bind2 = true, stream_management = { state = anchor } })
      assert.is_true(bind2(c3))
      local got3 = serve.collect(c3, "message")
      c3:send_presence()
      lxmpp.sleep(0.3 * slow.factor)
      assert.same({}, got3)                       -- the user's own c:mam_catch_up, then
      assert.equal(0, count(log3, "<query xmlns='urn:xmpp:mam:2'"))
      local r = assert(c3:mam_catch_up{ after = seen_id })
      assert.equal(2, #r.messages)
      c3:close()
      bob:close()
      assert.error_matches(function() require("lxmpp.client").new{ jid = "a@b.c", password = "p", mam_catch_up = "no" } end,
        "mam_catch_up must be a boolean")
      -- a saved anchor that is not one lxmpp saves
      for _, a in ipairs({ { id = "x", gap = "yes" }, { id = "x", seen = { "y" } }, { id = "x", gap = true, seen = "y" },
          { id = "x", gap = true, seen = { 1 } }, { id = "x", gap = true, seen = { "" } } }) do
        assert.error_matches(function()
          require("lxmpp.client").new{ jid = "alice@example.test", password = "p",
            stream_management = { state = { inbound = 0, acked = 0, queue = {}, archive = a } } }
        end, "stream_management.state is not a state saved by lxmpp")
      end
    end)
  end)
end)

describe("client: the archive catch-up against a hostile server", function()
  local transport = require "lxmpp.transport"
  local st = lxmpp.stanza
  local NS2 = "urn:xmpp:sasl:2"
  local FEATURES = "<stream:features><authentication xmlns='" .. NS2 .. "'><mechanism>PLAIN</mechanism>" ..
    "<inline><bind xmlns='urn:xmpp:bind:0'/></inline></authentication></stream:features>"
  local SUCCESS = "<success xmlns='" .. NS2 .. "'><authorization-identifier>alice@example.test/t.1" ..
    "</authorization-identifier><bound xmlns='urn:xmpp:bind:0'><metadata xmlns='urn:xmpp:mam:2'>" ..
    "<start id='a0' timestamp='2026-01-01T00:00:00Z'/><end id='z9' timestamp='2026-01-02T00:00:00Z'/>" ..
    "</metadata></bound></success><stream:features/>"

  local function result(queryid, id, body, extra)
    return "<result xmlns='urn:xmpp:mam:2' queryid='" .. queryid .. "' id='" .. id .. "'>" ..
      "<forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='2026-01-01T10:00:00Z'/>" ..
      "<message xmlns='jabber:client' to='alice@example.test' from='bob@example.test/desk' type='chat'>" ..
      "<body>" .. body .. "</body>" .. (extra or "") .. "</message></forwarded></result>"
  end

  -- A scripted server: on_query(iq, query, n) -> the XML answering the
  -- n-th archive query; every other iq gets an empty result.
  local function run(on_query, extra_opts, success, on_metadata)
    local log, got, queries, c, stanzas, incomplete = {}, {}, 0, nil, {}, {}
    local function server()
      local a, b = transport.pipe()
      b:on("open", function()
        b:write("<?xml version='1.0'?><stream:stream xmlns='jabber:client' " ..
          "xmlns:stream='http://etherx.jabber.org/streams' from='example.test' id='s1' version='1.0'>" .. FEATURES)
      end)
      b:on("stanza", function(s)
        if s.name == "authenticate" then return b:write(success or SUCCESS) end
        if s.name ~= "iq" then return end
        if on_metadata and s:get_child("metadata", "urn:xmpp:mam:2") then return b:write(on_metadata(s)) end
        local q = s:get_child("query", "urn:xmpp:mam:2")
        if q then
          queries = queries + 1
          return b:write(on_query(s, q, queries))
        end
        b:write(tostring(st.reply(s)))
      end)
      b:parse()
      return a
    end
    lxmpp.run(function()
      local o = { jid = "alice@example.test", password = "pw", reconnect = false, transport = server,
        logger = function(level, msg) log[#log + 1] = level .. " " .. msg end,
        stream_management = { state = { inbound = 0, acked = 0, queue = {}, archive = { id = "a0" } } } }
      for k, v in pairs(extra_opts or {}) do o[k] = v end
      c = assert(lxmpp.connect(o))
      c:on("message", function(m) got[#got + 1] = m end)
      c:on("stanza", function(x) if x.name == "message" then stanzas[#stanzas + 1] = x end end)
      c:on("catch-up-incomplete", function(id, why) incomplete[#incomplete + 1] = { id, why } end)
      c:send_presence()
      serve.until_true(function() return c.catchup == nil end, 5 * slow.factor)
      lxmpp.sleep(0.05)
      c.conn:abort()
    end)
    return c, got, queries, log, stanzas, incomplete
  end

  local function fin(iq, complete, last)
    return "<iq type='result' id='" .. iq.attr.id .. "'><fin xmlns='urn:xmpp:mam:2' complete='" .. complete ..
      "'><set xmlns='http://jabber.org/protocol/rsm'>" .. (last and ("<last>" .. last .. "</last>") or "") ..
      "</set></fin></iq>"
  end

  it("delivers only the results of its own query from its own archive, each once, as \"message\" and \"stanza\" "
    .. "alike; a stanza-id by another is no anchor",
    function()
    local c, got, queries, log, stanzas = run(function(iq, q)
      local qid = q.attr.queryid
      return "<message from='mallory@evil.test'>" .. result(qid, "f1", "forged by mallory") .. "</message>" ..
        "<message from='alice@example.test'>" .. result("not-ours", "f2", "not our query") .. "</message>" ..
        "<message from='example.test/x'>" .. result(qid, "f3", "from another JID") .. "</message>" ..
        "<message from='alice@example.test'>" .. result(qid, "a1", "real 1",
          "<stanza-id xmlns='urn:xmpp:sid:0' by='mallory@evil.test' id='evil'/>") .. "</message>" ..
        "<message>" .. result(qid, "z9", "real 2") .. "</message>" ..
        -- a live message with a stanza-id by someone else: neither anchor nor archive id
        "<message from='carol@example.test/x' to='alice@example.test' type='chat'><body>live</body>" ..
        "<stanza-id xmlns='urn:xmpp:sid:0' by='carol@example.test' id='carol-id'/></message>" ..
        -- a live copy of an entry fetched (a server that also sends it offline): not again
        "<message from='bob@example.test/desk' to='alice@example.test' type='chat'><body>real 1 again</body>" ..
        "<stanza-id xmlns='urn:xmpp:sid:0' by='alice@example.test' id='a1'/></message>" ..
        fin(iq, "true", "z9")
    end)
    assert.equal(1, queries)
    assert.same({ "real 1", "real 2", "live" }, bodies(got))
    assert.same({ true, true, false }, delayed(got))
    for i, m in ipairs(got) do assert.equal(m, stanzas[i]) end       -- the same events, held alike
    assert.equal(#got, #stanzas)
    -- the anchor's time: the archive's (the server's clock), not ours
    assert.same({ id = "z9", stamp = require("lxmpp.datetime").parse("2026-01-01T10:00:00Z") },
      c.login.archive)
    assert.truthy(count(log, "^warn ignored an archive result from mallory@evil.test") == 1)
    assert.truthy(count(log, "^warn ignored an archive result for no query of ours") == 1)
    assert.truthy(count(log, "^warn ignored an archive result from example.test/x") == 1)
  end)

  it("stamps what it delivers with the archive's <delay/> first, the one c:delay_of reads; a sender's "
    .. "<delay/> claiming our server or account is dropped, others kept after it", function()
    local function forged(from, stamp)
      return "<delay xmlns='urn:xmpp:delay' from='" .. from .. "' stamp='" .. stamp .. "'>Offline Storage</delay>"
    end
    local c, got = run(function(iq, q)
      local qid = q.attr.queryid
      return "<message>" .. result(qid, "a1", "forged ours", forged("example.test", "2001-01-01T00:00:00Z")) ..
        "</message><message>" .. result(qid, "a2", "forged account",
          forged("alice@example.test", "2001-01-01T00:00:00Z") .. forged("EXAMPLE.TEST/x", "2002-01-01T00:00:00Z")) ..
        "</message><message>" .. result(qid, "a3", "relayed", forged("elsewhere.example", "2003-01-01T00:00:00Z")) ..
        "</message><message>" .. result(qid, "z9", "plain") .. "</message>" .. fin(iq, "true", "z9")
    end)
    assert.same({ "forged ours", "forged account", "relayed", "plain" }, bodies(got))
    local archived = require("lxmpp.datetime").parse("2026-01-01T10:00:00Z")
    for _, m in ipairs(got) do
      local stamp, from = c:delay_of(m)
      assert.equal(archived, stamp, m:get_child_text("body"))
      assert.equal("example.test", from)
    end
    local function delays(m)
      local out = {}
      for d in m:childtags("delay", NS_DELAY) do out[#out + 1] = tostring(d.attr.from) .. " " .. d.attr.stamp end
      return out
    end
    assert.same({ "example.test 2026-01-01T10:00:00Z" }, delays(got[1]))
    assert.same({ "example.test 2026-01-01T10:00:00Z" }, delays(got[2]))
    assert.same({ "example.test 2026-01-01T10:00:00Z", "elsewhere.example 2003-01-01T00:00:00Z" }, delays(got[3]))
    assert.same({ "example.test 2026-01-01T10:00:00Z" }, delays(got[4]))
  end)

  it("asks for the archive's metadata when <bound/> has none; none at all: no catch-up", function()
    local bare = "<success xmlns='" .. NS2 .. "'><authorization-identifier>alice@example.test/t.1" ..
      "</authorization-identifier><bound xmlns='urn:xmpp:bind:0'/></success><stream:features/>"
    local asked = 0
    local c, got, queries = run(function(iq, q)
      return "<message>" .. result(q.attr.queryid, "a1", "r1") .. "</message>" .. fin(iq, "true", "a1")
    end, nil, bare, function(iq)
      asked = asked + 1
      return "<iq type='result' id='" .. iq.attr.id .. "'><metadata xmlns='urn:xmpp:mam:2'>" ..
        "<start id='a0'/><end id='a1'/></metadata></iq>"
    end)
    assert.same({ 1, 1 }, { asked, queries })
    assert.same({ "r1" }, bodies(got))
    assert.equal("a1", c.login.archive.id)
    local c2, got2, queries2, log2 = run(function() error("no query expected") end, nil, bare, function(iq)
      return "<iq type='error' id='" .. iq.attr.id .. "'><error type='cancel'><service-unavailable " ..
        "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    end)
    assert.same({ 0, {} }, { queries2, got2 })
    assert.equal("a0", c2.login.archive.id)
    assert.equal(1, count(log2, "^info no archive to catch up from after the Bind2 login"))
  end)

  it("stamps a live anchor with our time minus CLOCK_MARGIN (no server time on it)", function()
    local before = os.time()
    local c = run(function(iq, q)
      return "<message>" .. result(q.attr.queryid, "z9", "r1") .. "</message>" ..
        "<message from='bob@example.test/desk' to='alice@example.test' type='chat'><body>live</body>" ..
        "<stanza-id xmlns='urn:xmpp:sid:0' by='alice@example.test' id='l1'/></message>" .. fin(iq, "true", "z9")
    end)
    assert.equal("l1", c.login.archive.id)
    local stamp = c.login.archive.stamp
    assert.truthy(stamp >= before - catchup.CLOCK_MARGIN and stamp <= os.time() - catchup.CLOCK_MARGIN)
  end)

  it("goes on from a pinned anchor without delivering again what came live while pinned, and unpins", function()
    local pinned = { inbound = 0, acked = 0, queue = {}, archive = { id = "a0", gap = true, seen = { "a1" } } }
    local c, got, _, _, _, incomplete = run(function(iq, q)
      assert.equal("a0", q:get_child("set", "http://jabber.org/protocol/rsm"):get_child_text("after"))
      return "<message>" .. result(q.attr.queryid, "a1", "came live before") .. "</message>" ..
        "<message>" .. result(q.attr.queryid, "z9", "missed") .. "</message>" .. fin(iq, "true", "z9")
    end, { stream_management = { state = pinned } })
    assert.same({ "missed" }, bodies(got))
    assert.same({}, incomplete)
    assert.equal("z9", c.login.archive.id)
    assert.is_nil(c.login.archive.gap)
    assert.is_nil(c.login.archive.seen)
    -- a pinned anchor that is the archive's newest: nothing to fetch, unpinned
    local at_end = { inbound = 0, acked = 0, queue = {}, archive = { id = "z9", gap = true } }
    local c2, got2, queries2 = run(function() error("no query expected") end,
      { stream_management = { state = at_end } })
    assert.same({ 0, {} }, { queries2, got2 })
    assert.same({ id = "z9" }, c2.login.archive)
    -- a pinned anchor the archive lost, of unknown time: unpinned (else no later login could go on)
    local lost = { inbound = 0, acked = 0, queue = {}, archive = { id = "gone", gap = true, seen = { "x" } } }
    local c3, got3, queries3, _, _, incomplete3 = run(function(iq)
      return "<iq type='error' id='" .. iq.attr.id .. "'><error type='cancel'><item-not-found " ..
        "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    end, { stream_management = { state = lost } })
    assert.same({ 1, {} }, { queries3, got3 })
    assert.same({ id = "gone" }, c3.login.archive)
    assert.same({ { nil, "the archive no longer holds entry gone and its time is unknown" } }, incomplete3)
  end)

  it("holds at most MAX_HELD live messages while it runs", function()
    local keep = catchup.MAX_HELD
    catchup.MAX_HELD = 2
    local ok, err = pcall(function()
      local function live(b)
        return "<message from='bob@example.test/desk' to='alice@example.test' type='chat'><body>" .. b ..
          "</body></message>"
      end
      local _, got, _, log = run(function(iq, q)
        return "<message>" .. result(q.attr.queryid, "a1", "r1") .. "</message>" ..
          live("l1") .. live("l2") .. live("l3") ..
          "<message>" .. result(q.attr.queryid, "z9", "r2") .. "</message>" .. fin(iq, "true", "z9")
      end)
      assert.same({ "l3", "r1", "r2", "l1", "l2" }, bodies(got))
      assert.equal(1, count(log, "^warn more than 2 messages came during the archive catch%-up"))
    end)
    catchup.MAX_HELD = keep
    assert(ok, err)
  end)

  it("stops a server that pages forever, and one whose paging does not advance", function()
    local c, got, queries, log, _, incomplete = run(function(iq, q, n)
      return "<message>" .. result(q.attr.queryid, "p" .. n, "page " .. n) .. "</message>" ..
        fin(iq, "false", "p" .. n)
    end)
    assert.equal(catchup.MAX_PAGES, queries)
    assert.equal(catchup.MAX_PAGES, #got)
    -- pinned where it stopped, and the application told
    assert.same({ "p" .. catchup.MAX_PAGES, true }, { c.login.archive.id, c.login.archive.gap })
    assert.same({ { "p" .. catchup.MAX_PAGES, "stopped after " .. catchup.MAX_PAGES .. " queries" } }, incomplete)
    assert.equal(1, count(log, "did not finish: stopped after " .. catchup.MAX_PAGES .. " queries"))
    local _, got2, queries2, log2 = run(function(iq, q)
      return "<message>" .. result(q.attr.queryid, "same", "same") .. "</message>" .. fin(iq, "false", "same")
    end)
    assert.equal(2, queries2)
    assert.same({ "same" }, bodies(got2))            -- (once: the second page held it again)
    assert.equal(1, count(log2, "paging does not advance"))
  end)
end)
