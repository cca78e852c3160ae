-- The embedded server's message archives (XEP-0313 with XEP-0059 paging,
-- XEP-0359 stanza ids; lua/lxmpp/server/mam.lua, storage_archive.lua) with
-- real lxmpp clients: what is archived on each side, paging both ways with
-- exact contents, filters, limits and errors, who may query, forged stanza
-- ids, retention, SQLite across a restart, and the client plugin on top.
local lxmpp = require "lxmpp"
local st = lxmpp.stanza
local serve = require "spec.support.serve"
local storage = require "lxmpp.server.storage"
local datetime = require "lxmpp.datetime"

local NS = "urn:xmpp:mam:2"
local NS_SID = "urn:xmpp:sid:0"
local USERS = { alice = "alice-pw", bob = "bob-pw", carol = "carol-pw" }
local A, B, C = "alice@example.test", "bob@example.test", "carol@example.test"

-- Entries get the time the spec sets (h.now), not the wall clock.
local function fake_clock(srv, t)
  local h = { now = t or 1000 }
  srv.im.mam.clock = function() return h.now end
  return h
end

-- A round trip: the server has handled everything c sent before.
local function sync(c)
  assert(c:request(st.iq({ type = "get" }):tag("ping", { xmlns = "urn:xmpp:ping" })))
end

local qn = 0
-- A raw query: o = { to, fields = { var = value or { values } }, form_type,
-- max, after, before (string, "" for empty), flip (<flip-page/>) }. Returns
-- the result messages in order and <fin/>, or nil, condition, message.
local function query(c, o)
  qn = qn + 1
  local qid = "q" .. qn
  local iq = st.iq({ type = "set", to = o.to }):tag("query", { xmlns = NS, queryid = qid })
  if o.fields then
    iq:tag("x", { xmlns = "jabber:x:data", type = "submit" })
      :tag("field", { var = "FORM_TYPE", type = "hidden" }):text_tag("value", o.form_type or NS):up()
    for var, v in pairs(o.fields) do
      iq:tag("field", { var = var })
      for _, value in ipairs(type(v) == "table" and v or { v }) do iq:text_tag("value", value) end
      iq:up()
    end
    iq:up()
  end
  if o.max or o.after or o.before then
    iq:tag("set", { xmlns = "http://jabber.org/protocol/rsm" })
    if o.max then iq:text_tag("max", tostring(o.max)) end
    if o.after then iq:text_tag("after", o.after) end
    if o.before then iq:text_tag("before", o.before) end
    iq:up()
  end
  if o.flip then iq:tag("flip-page"):up() end
  local got = {}
  local id = c:on("message", function(m)
    local r = m:get_child("result", NS)
    if r and r.attr.queryid == qid then got[#got + 1] = m end
  end)
  local r, msg, cond = c:request(iq, 5)
  c:off(id)
  if not r then return nil, cond, msg end
  return got, r:get_child("fin", NS)
end

local function forwarded(m)
  local f = m:get_child("result", NS):get_child("forwarded", "urn:xmpp:forward:0")
  return f:get_child("message", "jabber:client"), f:get_child("delay", "urn:xmpp:delay")
end

local function bodies(results)
  local out = {}
  for i, m in ipairs(results) do out[i] = forwarded(m):get_child_text("body") end
  return out
end

local function ids(results)
  local out = {}
  for i, m in ipairs(results) do out[i] = m:get_child("result", NS).attr.id end
  return out
end

-- <fin/> as { complete, first, index, last, count }
local function fin_set(fin)
  local set = fin:get_child("set", "http://jabber.org/protocol/rsm")
  local first = set:get_child("first")
  return { complete = fin.attr.complete, first = first and first:get_text(), index = first and first.attr.index,
    last = set:get_child_text("last"), count = set:get_child_text("count") }
end

local function bodies_of(page)
  local out = {}
  for i, m in ipairs(page.messages) do out[i] = m.message:get_child_text("body") end
  return out
end

local function sids(m)
  local out = {}
  for s in m:childtags("stanza-id", NS_SID) do out[#out + 1] = s.attr.by .. " " .. s.attr.id end
  return out
end

describe("embedded server archives (XEP-0313)", function()
  it("keeps chat and normal messages with a body for sender and recipient, the recipient's copy stamped", function()
    serve.run({ users = USERS }, function(srv, port)
      local h = fake_clock(srv, 1000)
      local a = assert(serve.login(port, "alice", "alice-pw"))
      local b = assert(serve.login(port, "bob", "bob-pw"))
      b:send_presence()
      sync(b)
      local inbox = serve.collect(b, "message")
      a:send_message(B, "one")
      sync(a)
      h.now = 1060
      a:send(st.message({ to = B .. "/r" }, "two"))          -- type normal, to the full JID
      sync(a)
      assert.truthy(serve.until_true(function() return #inbox == 2 end))
      local mine = assert(query(a, {}))
      assert.same({ "one", "two" }, bodies(mine))
      local theirs = assert(query(b, {}))
      assert.same({ "one", "two" }, bodies(theirs))
      -- what bob got carries bob's archive ids, by bob's bare JID, one each
      for i = 1, 2 do
        assert.same({ B .. " " .. ids(theirs)[i] }, sids(inbox[i]))
        assert.equal(ids(theirs)[i], b:stanza_id(inbox[i]))
      end
      assert.are_not.equal(ids(mine)[1], ids(theirs)[1])
      assert.truthy(ids(mine)[1]:match("^%x+$") and #ids(mine)[1] >= 24)
      -- results come from the account, forwarded with the time they were kept
      local m, delay = forwarded(theirs[2])
      assert.equal(B, theirs[2].attr.from)
      assert.equal(A .. "/r", m.attr.from)
      assert.equal(B .. "/r", m.attr.to)
      assert.equal(datetime.format(1060), delay.attr.stamp)
      assert.equal(datetime.format(1000), select(2, forwarded(mine[1])).attr.stamp)
      assert.equal("true", fin_set(select(2, query(a, {}))).complete)
      a:close()
      b:close()
    end)
  end)

  it("keeps no groupchat, headline, error, body-less or no-store messages, and a message to oneself once", function()
    serve.run({ users = USERS }, function(_, port)
      local a = assert(serve.login(port, "alice", "alice-pw"))
      local a2 = assert(serve.login(port, "alice", "alice-pw", "r2"))
      local b = assert(serve.login(port, "bob", "bob-pw"))
      b:send_presence()
      sync(b)
      local inbox = {}            -- every message, also those plugins consume (chat states)
      b:on("stanza", function(s) if s.name == "message" then inbox[#inbox + 1] = s end end)
      a:send(st.message({ to = B, type = "chat" }):tag("active", { xmlns = "http://jabber.org/protocol/chatstates" }))
      a:send(st.message({ to = B, type = "headline" }, "headline"))
      a:send(st.message({ to = B .. "/r", type = "groupchat" }, "groupchat"))
      a:send(st.message({ to = B, type = "error" }, "error"))
      a:send(st.message({ to = B, type = "chat" }, "no-store"):tag("no-store", { xmlns = "urn:xmpp:hints" }))
      a:send(st.message({ to = B, type = "chat" }, "no-permanent-store")
        :tag("no-permanent-store", { xmlns = "urn:xmpp:hints" }))
      a:send_message(A .. "/r2", "to myself")
      a:send_message(B, "kept")
      sync(a)
      assert.truthy(serve.until_true(function() return #inbox == 7 end))
      assert.same({ "to myself", "kept" }, bodies(assert(query(a, {}))))
      assert.same({ "to myself", "kept" }, bodies(assert(query(a2, {}))))   -- one archive per account
      assert.same({ "kept" }, bodies(assert(query(b, {}))))
      for i = 1, 6 do assert.same({}, sids(inbox[i])) end                  -- not kept: no id
      assert.equal(1, #sids(inbox[7]))
      a:close()
      a2:close()
      b:close()
    end)
  end)

  it("archives a message for an offline recipient, who gets it later with the archive's stanza-id", function()
    serve.run({ users = USERS }, function(_, port)
      local a = assert(serve.login(port, "alice", "alice-pw"))
      a:send_message(B, "while you were away")
      sync(a)
      local b = assert(serve.login(port, "bob", "bob-pw"))
      local inbox = serve.collect(b, "message")
      b:send_presence()
      assert.truthy(serve.until_true(function() return #inbox == 1 end))
      local kept = assert(query(b, {}))
      assert.same({ "while you were away" }, bodies(kept))
      assert.equal(ids(kept)[1], b:stanza_id(inbox[1]))
      a:close()
      b:close()
    end)
  end)

  it("does not keep a message that bounces because the recipient's offline store is full", function()
    serve.run({ users = USERS, limits = { max_offline = 1 } }, function(_, port)
      local a = assert(serve.login(port, "alice", "alice-pw"))
      local errors = serve.collect(a, "message")
      a:send_message(B, "kept offline")
      a:send_message(B, "bounced")
      sync(a)
      assert.truthy(serve.until_true(function() return #errors == 1 end))
      assert.equal("error", errors[1].attr.type)
      local b = assert(serve.login(port, "bob", "bob-pw"))
      assert.same({ "kept offline" }, bodies(assert(query(b, {}))))
      a:close()
      b:close()
    end)
  end)

  it("does not keep a message the sender's own block list refuses (never routed)", function()
    serve.run({ users = USERS }, function(srv, port)
      local a = assert(serve.login(port, "alice", "alice-pw", "a"))
      assert(a:block({ B }))
      local errors = serve.collect(a, "message")
      a:send_message(B, "never delivered")
      assert.truthy(serve.until_true(function() return #errors == 1 end))
      assert.equal("error", errors[1].attr.type)
      assert.equal("not-acceptable", errors[1]:get_child("error").tags[1].name)
      sync(a)
      assert.equal(0, srv.store:archive_query("alice", { max = 10 }).count)
      assert.equal(0, srv.store:archive_query("bob", { max = 10 }).count)
      -- unblocked, the same message is kept on both sides
      assert(a:unblock({ B }))
      a:send_message(B, "delivered")
      sync(a)
      assert.truthy(serve.until_true(function() return srv.store:archive_query("bob", { max = 10 }).count == 1 end))
      assert.same({ "delivered" }, bodies(assert(query(a, {}))))
      a:close()
    end)
  end)

  it("strips stanza-ids that claim to be by the recipient, so nobody can forge one", function()
    serve.run({ users = USERS }, function(_, port)
      local a = assert(serve.login(port, "alice", "alice-pw"))
      local b = assert(serve.login(port, "bob", "bob-pw"))
      b:send_presence()
      sync(b)
      local inbox = serve.collect(b, "message")
      local function forged(body)
        local m = st.message({ to = B, type = "chat" }, body)
        m:tag("stanza-id", { xmlns = NS_SID, by = B, id = "forged" }):up()
        m:tag("stanza-id", { xmlns = NS_SID, by = "BOB@Example.Test", id = "forged-too" }):up()
        m:tag("stanza-id", { xmlns = NS_SID, by = "room@muc.example.test", id = "theirs" }):up()
        return m
      end
      a:send(forged("with a body"))
      local no_body = forged(nil)
      a:send(no_body:remove_children("body"))
      sync(a)
      assert.truthy(serve.until_true(function() return #inbox == 2 end))
      local kept = assert(query(b, {}))
      assert.same({ "room@muc.example.test theirs", B .. " " .. ids(kept)[1] }, sids(inbox[1]))
      assert.same({ "room@muc.example.test theirs" }, sids(inbox[2]))
      assert.is_nil(b:stanza_id(inbox[2]))
      assert.same({ "room@muc.example.test theirs" }, sids((forwarded(kept[1]))))   -- nor in the archive
      a:close()
      b:close()
    end)
  end)

  it("pages forward and back (XEP-0059) with exact contents, through the client plugin too", function()
    serve.run({ users = USERS }, function(srv, port)
      local h = fake_clock(srv, 1000)
      local a = assert(serve.login(port, "alice", "alice-pw"))
      for i = 1, 7 do
        h.now = 1000 + i
        a:send_message(B, "m" .. i)
        sync(a)
      end
      local r, fin = query(a, { max = 3 })
      assert.same({ "m1", "m2", "m3" }, bodies(r))
      local all = ids(assert(query(a, {})))
      assert.same({ complete = "false", first = all[1], index = "0", last = all[3], count = "7" }, fin_set(fin))
      r, fin = query(a, { max = 3, after = all[3] })
      assert.same({ "m4", "m5", "m6" }, bodies(r))
      assert.same({ complete = "false", first = all[4], index = "3", last = all[6], count = "7" }, fin_set(fin))
      r, fin = query(a, { max = 3, after = all[6] })
      assert.same({ "m7" }, bodies(r))
      assert.same({ complete = "true", first = all[7], index = "6", last = all[7], count = "7" }, fin_set(fin))
      r, fin = query(a, { max = 3, before = "" })                       -- the last page
      assert.same({ "m5", "m6", "m7" }, bodies(r))
      assert.same({ complete = "false", first = all[5], index = "4", last = all[7], count = "7" }, fin_set(fin))
      r, fin = query(a, { max = 3, before = all[2] })
      assert.same({ "m1" }, bodies(r))
      assert.same({ complete = "true", first = all[1], index = "0", last = all[1], count = "7" }, fin_set(fin))
      r, fin = query(a, { max = 0 })                                    -- just the count
      assert.same({}, r)
      assert.same({ complete = "false", count = "7" }, fin_set(fin))
      -- the client plugin: forward to the end, then back from the end
      local page = assert(a:mam_query{ max = 3 })
      local seen = {}
      while page do
        for _, b in ipairs(bodies_of(page)) do seen[#seen + 1] = b end
        page = a:mam_next(page)
      end
      assert.same({ "m1", "m2", "m3", "m4", "m5", "m6", "m7" }, seen)
      page = assert(a:mam_query{ max = 3, before = true })
      local pages = {}
      while page do
        pages[#pages + 1] = table.concat(bodies_of(page), ",")
        assert.equal(7, page.count)
        page = a:mam_next(page)
      end
      assert.same({ "m5,m6,m7", "m2,m3,m4", "m1" }, pages)
      a:close()
    end)
  end)

  it("filters by with (bare or full JID), start and end", function()
    serve.run({ users = USERS }, function(srv, port)
      local h = fake_clock(srv, 1000)
      local a = assert(serve.login(port, "alice", "alice-pw"))
      local function send(t, to, body)
        h.now = t
        a:send_message(to, body)
        sync(a)
      end
      send(1000, B, "to bob")
      send(2000, C, "to carol")
      send(3000, B .. "/phone", "to bob's phone")
      local function q(fields) return bodies(assert(query(a, { fields = fields }))) end
      assert.same({ "to bob", "to bob's phone" }, q{ with = B })
      assert.same({ "to bob's phone" }, q{ with = B .. "/phone" })
      assert.same({ "to carol" }, q{ with = C })
      assert.same({ "to carol", "to bob's phone" }, q{ start = datetime.format(2000) })
      assert.same({ "to bob", "to carol" }, q{ ["end"] = datetime.format(2000) })
      assert.same({ "to carol" }, q{ start = "1970-01-01T00:33:20Z", ["end"] = "1970-01-01T01:33:20+01:00" })
      assert.same({ "to bob's phone" }, q{ with = B, start = "1970-01-01T00:16:40.5Z" })
      assert.same({}, q{ start = datetime.format(3001) })
      -- the client plugin sends the same form
      assert.same({ "to bob's phone" }, bodies_of(assert(a:mam_query{ with = B, start = 1500 })))
      a:close()
    end)
  end)

  -- XEP-0313 §"Archive metadata"
  it("answers the archive's metadata: empty, then the first and last entries", function()
    serve.run({ users = USERS }, function(srv, port)
      local h = fake_clock(srv, 1000)
      local a = assert(serve.login(port, "alice", "alice-pw"))
      local function metadata(type)
        local r, _, cond = a:request(st.iq({ type = type or "get" }):tag("metadata", { xmlns = NS }), 5)
        if not r then return nil, cond end
        return assert(r:get_child("metadata", NS))
      end
      local md = metadata()
      assert.same({}, md.tags)
      for i, t in ipairs({ 1000, 2000, 3000 }) do
        h.now = t
        a:send_message(B, "m" .. i)
        sync(a)
      end
      local all = ids(assert(query(a, {})))
      assert.equal(3, #all)
      md = metadata()
      assert.equal(2, #md.tags)
      assert.same({ id = all[1], timestamp = datetime.format(1000) }, md:get_child("start").attr)
      assert.same({ id = all[3], timestamp = datetime.format(3000) }, md:get_child("end").attr)
      assert.same({ nil, "bad-request" }, { metadata("set") })
      -- another account's metadata is not ours to read
      local r, _, cond = a:request(st.iq({ type = "get", to = B }):tag("metadata", { xmlns = NS }), 5)
      assert.is_nil(r)
      assert.equal("forbidden", cond)
      a:close()
    end)
  end)

  it("caps pages, and refuses unknown ids, bad dates, bad forms and unknown fields", function()
    serve.run({ users = USERS, limits = { mam_max_page = 2 } }, function(_, port)
      local a = assert(serve.login(port, "alice", "alice-pw"))
      for i = 1, 3 do a:send_message(B, "m" .. i) end
      sync(a)
      local r, fin = query(a, { max = 50 })
      assert.same({ "m1", "m2" }, bodies(r))
      assert.equal("false", fin.attr.complete)
      assert.same({ "m1", "m2" }, bodies((query(a, {}))))          -- no <set/>: the cap too
      local function cond(o) return select(2, query(a, o)) end
      assert.equal("item-not-found", cond{ after = "no-such-id" })
      assert.equal("item-not-found", cond{ before = "no-such-id" })
      assert.equal("bad-request", cond{ fields = { start = "yesterday" } })
      assert.equal("bad-request", cond{ fields = { ["end"] = "2024-02-30T00:00:00Z" } })
      assert.equal("bad-request", cond{ fields = { with = "not a jid@@" } })
      assert.equal("bad-request", cond{ fields = {}, form_type = "urn:example:other" })
      assert.equal("feature-not-implemented", cond{ fields = { ["{urn:example}search"] = "hi" } })
      assert.equal("bad-request", cond{ max = "lots" })
      assert.equal("bad-request", cond{ after = "" })
      a:close()
    end)
  end)

  it("keeps no account archives with archive = false: no stanza-id, no MAM, nothing advertised", function()
    assert.has_error(function() lxmpp.server({ archive = "no" }) end)
    serve.run({ users = USERS, archive = false }, function(srv, port)
      local a = assert(serve.login(port, "alice", "alice-pw"))
      local b = assert(serve.login(port, "bob", "bob-pw"))
      b:send_presence()
      sync(b)
      local inbox = serve.collect(b, "message")
      a:send_message(B, "unkept")
      sync(a)
      assert.truthy(serve.until_true(function() return #inbox == 1 end))
      assert.equal("unkept", inbox[1]:get_child_text("body"))
      assert.same({}, sids(inbox[1]))
      assert.equal(0, srv.store:archive_query("alice", { max = 10 }).count)
      assert.equal(0, srv.store:archive_query("bob", { max = 10 }).count)
      assert.equal("service-unavailable", select(2, query(a, {})))
      local info = assert(a:disco_info(A))
      assert.is_nil(info.features[NS])
      assert.is_nil(info.features[NS .. "#extended"])
      assert.is_nil(info.features[NS_SID])
      assert.is_nil(assert(a:disco_info("example.test")).features[NS])
      assert.is_nil(assert(a:disco_info("example.test")).features[NS .. "#extended"])
      a:close()
      b:close()
    end)
  end)

  it("lets only the owner query an archive, and advertises it to the owner", function()
    serve.run({ users = USERS }, function(_, port)
      local a = assert(serve.login(port, "alice", "alice-pw"))
      local b = assert(serve.login(port, "bob", "bob-pw"))
      a:send_message(B, "private")
      sync(a)
      assert.equal("forbidden", select(2, query(b, { to = A })))
      assert.equal("forbidden", select(2, query(a, { to = B })))
      assert.same({ "private" }, bodies(assert(query(a, { to = A }))))
      local info = assert(a:disco_info(A))
      assert.is_true(info.features[NS])
      assert.is_true(info.features[NS_SID])
      -- XEP-0313 §"Determining support": the extended queries, on the account and (as mam:2) the server
      assert.is_true(info.features[NS .. "#extended"])
      assert.is_true(assert(a:disco_info("example.test")).features[NS .. "#extended"])
      assert.is_nil(assert(b:disco_info(A)).features[NS .. "#extended"])   -- the archive is alice's alone
      local form = assert(a:request(st.iq({ type = "get" }):tag("query", { xmlns = NS })))
      local vars, ids_field = {}, nil
      for f in form:get_child("query", NS):get_child("x", "jabber:x:data"):childtags("field") do
        vars[#vars + 1] = f.attr.var .. ":" .. f.attr.type
        if f.attr.var == "ids" then ids_field = f end
      end
      assert.same({ "FORM_TYPE:hidden", "with:jid-single", "start:text-single", "end:text-single",
        "before-id:text-single", "after-id:text-single", "ids:list-multi" }, vars)
      -- §"Retrieving form fields": 'ids' lists no values, and says it is open (XEP-0122)
      assert.is_nil(ids_field:get_child("option"))
      local validate = assert(ids_field:get_child("validate", "http://jabber.org/protocol/xdata-validate"))
      assert.equal("xs:string", validate.attr.datatype)
      assert.truthy(validate:get_child("open"))
      a:close()
      b:close()
    end)
  end)

  -- XEP-0313 §"Limiting results by id" and §"Flipped pages", on both stores
  for _, backend in ipairs({ "memory", "sqlite" }) do
    it("answers #extended queries (before-id, after-id, ids, flip-page) with filters and paging (" .. backend .. ")",
      function()
      local path = backend == "sqlite" and os.tmpname() or nil
      if path then os.remove(path) end
      serve.run({ users = USERS, storage = path }, function(srv, port)
        local h = fake_clock(srv, 1000)
        local a = assert(serve.login(port, "alice", "alice-pw"))
        for i = 1, 7 do                                   -- m2, m4, m6 to carol, the others to bob
          h.now = 1000 + i
          a:send_message(i % 2 == 0 and C or B, "m" .. i)
          sync(a)
        end
        local all = ids(assert(query(a, {})))
        assert.equal(7, #all)
        local function q(o)
          local r, fin = query(a, o)
          assert(r, fin)
          return bodies(r), fin_set(fin)
        end
        -- after-id and before-id bound the result set, not including themselves
        local got, fin = q{ fields = { ["after-id"] = all[2], ["before-id"] = all[6] } }
        assert.same({ "m3", "m4", "m5" }, got)
        assert.same({ complete = "true", first = all[3], index = "0", last = all[5], count = "3" }, fin)
        -- RSM pages within that set: <max/>, <after/>, and an <after/> before the set starts
        got, fin = q{ fields = { ["after-id"] = all[2] }, max = 2 }
        assert.same({ "m3", "m4" }, got)
        assert.same({ complete = "false", first = all[3], index = "0", last = all[4], count = "5" }, fin)
        got, fin = q{ fields = { ["after-id"] = all[2] }, max = 2, after = all[4] }
        assert.same({ "m5", "m6" }, got)
        assert.same({ complete = "false", first = all[5], index = "2", last = all[6], count = "5" }, fin)
        assert.same({ "m5", "m6", "m7" }, (q{ fields = { ["after-id"] = all[4] }, after = all[1] }))
        -- before-id does not page back (RSM <before/> does): the oldest first, unless <before/> asks
        got, fin = q{ fields = { ["before-id"] = all[6] }, max = 2 }
        assert.same({ "m1", "m2" }, got)
        assert.same({ complete = "false", first = all[1], index = "0", last = all[2], count = "5" }, fin)
        got, fin = q{ fields = { ["before-id"] = all[6] }, max = 2, before = "" }
        assert.same({ "m4", "m5" }, got)
        assert.same({ complete = "false", first = all[4], index = "3", last = all[5], count = "5" }, fin)
        -- with the other filters
        assert.same({ "m4", "m6" }, (q{ fields = { ["after-id"] = all[2], with = C } }))
        assert.same({ "m5", "m6", "m7" }, (q{ fields = { ["after-id"] = all[1], start = datetime.format(1005) } }))
        -- an empty range is a result, not an error
        got, fin = q{ fields = { ["after-id"] = all[5], ["before-id"] = all[3] } }
        assert.same({}, got)
        assert.same({ complete = "true", count = "0" }, fin)
        -- ids: those entries, in archive order whatever the order asked, each once
        got, fin = q{ fields = { ids = { all[6], all[2], all[4], all[2] } } }
        assert.same({ "m2", "m4", "m6" }, got)
        assert.same({ complete = "true", first = all[2], index = "0", last = all[6], count = "3" }, fin)
        got, fin = q{ fields = { ids = { all[6], all[2], all[4] } }, max = 1, after = all[2] }
        assert.same({ "m4" }, got)
        assert.same({ complete = "false", first = all[4], index = "1", last = all[4], count = "3" }, fin)
        assert.same({ "m1" }, (q{ fields = { ids = { all[1], all[2] }, with = B } }))   -- m2 went to carol
        assert.same({ "m7" }, (q{ fields = { ids = { all[7] } } }))                     -- a single item
        -- flip-page: the same page, newest first; <first/> and <last/> unchanged
        got, fin = q{ max = 3, before = "", flip = true }
        assert.same({ "m7", "m6", "m5" }, got)
        assert.same({ complete = "false", first = all[5], index = "4", last = all[7], count = "7" }, fin)
        got, fin = q{ fields = { ["after-id"] = all[2] }, max = 2, flip = true }
        assert.same({ "m4", "m3" }, got)
        assert.same({ complete = "false", first = all[3], index = "0", last = all[4], count = "5" }, fin)
        -- the client plugin sends them, and pages on within the set
        local page = assert(a:mam_query{ after_id = all[2], before_id = all[7], max = 2, flip_page = true })
        assert.same({ "m4", "m3" }, bodies_of(page))
        assert.same({ all[3], all[4], 4 }, { page.first, page.last, page.count })
        page = assert(a:mam_next(page))
        assert.same({ "m6", "m5" }, bodies_of(page))
        assert.is_true(page.complete)
        assert.same({ "m2", "m6" }, bodies_of(assert(a:mam_query{ ids = { all[6], all[2] } })))
        assert.equal("item-not-found", select(3, a:mam_query{ after_id = "no-such-id" }))
        a:close()
      end)
      if path then
        for _, f in ipairs({ path, path .. "-wal", path .. "-shm" }) do os.remove(f) end
      end
    end)
  end

  it("refuses unknown, foreign, malformed and too many ids in #extended queries", function()
    serve.run({ users = USERS, limits = { mam_max_page = 3 } }, function(_, port)
      local a = assert(serve.login(port, "alice", "alice-pw"))
      local b = assert(serve.login(port, "bob", "bob-pw"))
      a:send_message(B, "m1")
      a:send_message(B, "m2")
      sync(a)
      local mine, bobs = ids(assert(query(a, {}))), ids(assert(query(b, {})))
      assert.equal(2, #mine)
      assert.equal(2, #bobs)
      local function cond(fields) return select(2, query(a, { fields = fields })) end
      -- XEP-0313 §"Limiting results by id": an id not in the archive is item-not-found, and
      -- bob's ids are not in alice's archive (the same messages, kept under other ids)
      for _, var in ipairs({ "after-id", "before-id", "ids" }) do
        assert.equal("item-not-found", cond{ [var] = "no-such-id" }, var)
        assert.equal("item-not-found", cond{ [var] = bobs[1] }, var)
        assert.equal("item-not-found", cond{ [var] = bobs[2] }, var)
      end
      assert.equal("item-not-found", cond{ ids = { mine[1], "no-such-id", mine[2] } })   -- any one of them
      assert.equal("item-not-found", cond{ ["after-id"] = mine[1], ["before-id"] = bobs[2] })
      -- at most mam_max_page ids (3 here), duplicates counted
      local _, c, text = query(a, { fields = { ids = { mine[1], mine[2], mine[1], mine[2] } } })
      assert.equal("policy-violation", c)
      assert.matches("at most 3 ids", text)
      assert.same({ "m1", "m2" }, bodies(assert(query(a, { fields = { ids = { mine[1], mine[2], mine[1] } } }))))
      -- malformed: an empty id in the list, two values of a single id
      assert.equal("bad-request", cond{ ids = { mine[1], "" } })
      assert.equal("bad-request", cond{ ["after-id"] = { mine[1], mine[2] } })
      assert.equal("bad-request", cond{ ["before-id"] = { mine[1], mine[2] } })
      -- a field twice (which after-id?), or one without a var
      for _, second in ipairs({ { var = "after-id" }, {} }) do
        local x = st.stanza("x", { xmlns = "jabber:x:data", type = "submit" })
          :tag("field", { var = "FORM_TYPE" }):text_tag("value", NS):up()
          :tag("field", { var = "after-id" }):text_tag("value", mine[1]):up()
          :tag("field", second):text_tag("value", mine[2]):up()
        local r, _, c2 = a:request(st.iq({ type = "set" }):tag("query", { xmlns = NS }):add_child(x), 5)
        assert.is_nil(r)
        assert.equal("bad-request", c2)
      end
      -- empty fields filter nothing (clients may send the whole form back)
      assert.same({ "m1", "m2" }, bodies(assert(query(a, { fields = { ["after-id"] = "", ["before-id"] = "",
        ids = {} } }))))
      -- the client plugin checks its options
      assert.error_matches(function() a:mam_query{ after_id = "" } end, "after_id must be a non%-empty string")
      assert.error_matches(function() a:mam_query{ before_id = 7 } end, "before_id must be a non%-empty string")
      for _, bad in ipairs({ {}, { "x", "" }, "x" }) do
        assert.error_matches(function() a:mam_query{ ids = bad } end, "ids must be a non%-empty list")
      end
      assert.error_matches(function() a:mam_query{ flip_page = "yes" } end, "flip_page must be a boolean")
      a:close()
      b:close()
    end)
  end)

  it("keeps at most mam_max_messages per account, dropping the oldest", function()
    serve.run({ users = USERS, limits = { mam_max_messages = 3 } }, function(_, port)
      local a = assert(serve.login(port, "alice", "alice-pw"))
      a:send_message(B, "m1")
      sync(a)
      local first = ids(assert(query(a, {})))[1]
      for i = 2, 5 do a:send_message(B, "m" .. i) end
      sync(a)
      local r, fin = query(a, {})
      assert.same({ "m3", "m4", "m5" }, bodies(r))
      assert.equal("3", fin_set(fin).count)
      assert.equal("item-not-found", select(2, query(a, { after = first })))
      a:close()
    end)
  end)

  it("sends at most half the output queue per page; paging goes on where it stopped", function()
    serve.run({ users = USERS, limits = { max_queue = 40000 } }, function(_, port)
      local a = assert(serve.login(port, "alice", "alice-pw"))
      local big = ("x"):rep(6000)
      for i = 1, 7 do a:send_message(B, i .. big) end
      sync(a)
      local r, fin = query(a, {})
      assert.equal(3, #r)
      assert.equal("false", fin.attr.complete)
      local got = {}
      local page = assert(a:mam_query{ before = true })
      while page do
        assert.is_true(#page.messages <= 3)
        for i = #page.messages, 1, -1 do got[#got + 1] = page.messages[i].message:get_child_text("body"):sub(1, 1) end
        page = a:mam_next(page)
      end
      assert.same({ "7", "6", "5", "4", "3", "2", "1" }, got)
      a:close()
    end)
  end)

  it("keeps archives in SQLite across a restart, and removes them with the account", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    local path = dir .. "/lxmpp.db"
    local before
    serve.run({ users = USERS, storage = path }, function(_, port)
      local a = assert(serve.login(port, "alice", "alice-pw"))
      a:send_message(B, "kept on disk")
      a:send_message(C, "also kept")
      sync(a)
      before = ids(assert(query(a, {})))
      a:close()
    end)
    serve.run({ storage = path }, function(srv, port)
      local a = assert(serve.login(port, "alice", "alice-pw"))
      a:send_message(B, "after the restart")
      sync(a)
      local r = assert(query(a, {}))
      assert.same({ "kept on disk", "also kept", "after the restart" }, bodies(r))
      assert.same(before, { ids(r)[1], ids(r)[2] })
      local b = assert(serve.login(port, "bob", "bob-pw"))
      assert.same({ "kept on disk", "after the restart" }, bodies(assert(query(b, {}))))
      assert.same({ "after the restart" }, bodies(assert(query(b, { max = 1, after = ids(query(b, { max = 1 }))[1] }))))
      a:close()
      b:close()
      srv:remove_user("bob")
      assert.equal(0, srv.store:archive_query("bob", { max = 10 }).count)
      assert.equal(3, srv.store:archive_query("alice", { max = 10 }).count)
    end)
    os.execute("rm -rf " .. dir)
  end)
end)

describe("archive storage, memory and SQLite alike", function()
  local function with_stores(fn)
    local path = os.tmpname()
    local m = assert(storage.open(nil))
    os.remove(path)
    local s = assert(storage.open(path))
    fn(m, "memory")
    fn(s, "sqlite")
    m:close()
    s:close()
    os.remove(path)
    os.remove(path .. "-wal")
    os.remove(path .. "-shm")
  end

  it("pages, filters and caps the same way", function()
    with_stores(function(store, name)
      for i = 1, 6 do
        assert(store:archive_add("u", { id = "id" .. i, time = 100 * i, with = i % 2 == 0 and "b@x/r" or "c@x",
          data = "<m>" .. i .. "</m>" }, 5))
      end
      local function list(q)
        local p = assert(store:archive_query("u", q))
        local out = {}
        for i, it in ipairs(p.items) do out[i] = it.id end
        return table.concat(out, ","), p.count, p.index, p.complete
      end
      assert.same({ "id2,id3", 5, 0, false }, { list{ max = 2 } }, name)
      assert.same({ "id5,id6", 5, 3, true }, { list{ max = 2, after = "id4" } }, name)
      assert.same({ "id3,id4", 5, 1, false }, { list{ max = 2, before = "id5" } }, name)
      assert.same({ "id2,id4,id6", 3, 0, true }, { list{ max = 9, with = "b@x" } }, name)
      assert.same({ "id4", 1, 0, true }, { list{ max = 9, with = "b@x/r", start = 350.5, ["end"] = 450 } }, name)
      assert.same({ "", 0, nil, true }, { list{ max = 9, start = 1e300 } }, name)
      assert.same({ nil, "no entry id1 in the archive", "item-not-found" },
        { store:archive_query("u", { max = 1, after = "id1" }) }, name)
      assert.is_nil((store:archive_add("u", { id = "id6", time = 1, with = "c@x", data = "" })), name)
      assert.has_error(function() store:archive_add("u", { id = "x", time = 1.5, with = "c@x", data = "" }) end)
      assert.has_error(function() store:archive_query("u", { max = -1 }) end)
      store:remove_account("u")
      assert.same({ "", 0, nil, true }, { list{ max = 9 } }, name)
    end)
  end)

  it("bounds a query by after_id and before_id, keeps it to ids, and finds only the user's ids", function()
    with_stores(function(store, name)
      for i = 1, 6 do
        assert(store:archive_add("u", { id = "id" .. i, time = 100 * i, with = i % 2 == 0 and "b@x/r" or "c@x",
          data = "<m>" .. i .. "</m>" }))
      end
      assert(store:archive_add("v", { id = "theirs", time = 1, with = "c@x", data = "<m/>" }))
      local function list(q)
        local p = assert(store:archive_query("u", q))
        local out = {}
        for i, it in ipairs(p.items) do out[i] = it.id end
        return table.concat(out, ","), p.count, p.index, p.complete
      end
      assert.same({ "id3,id4", 3, 0, false }, { list{ max = 2, after_id = "id2", before_id = "id6" } }, name)
      assert.same({ "id5", 3, 2, true }, { list{ max = 2, after_id = "id2", before_id = "id6", after = "id4" } }, name)
      assert.same({ "id4,id5", 3, 1, false }, { list{ max = 2, after_id = "id2", before_id = "id6", before = true } },
        name)
      assert.same({ "id3,id4", 4, 0, false }, { list{ max = 2, after_id = "id2", after = "id1" } }, name)
      assert.same({ "id2,id5", 2, 0, true }, { list{ max = 9, ids = { "id5", "id2", "id5" } } }, name)
      assert.same({ "id2", 1, 0, true }, { list{ max = 9, ids = { "id5", "id2" }, with = "b@x" } }, name)
      assert.same({ "id5", 1, 0, true }, { list{ max = 9, ids = { "id5", "id2" }, after_id = "id3" } }, name)
      assert.same({ "", 0, nil, true }, { list{ max = 9, after_id = "id5", before_id = "id2" } }, name)
      for _, k in ipairs({ "after_id", "before_id" }) do
        assert.same({ nil, "no entry theirs in the archive", "item-not-found" },
          { store:archive_query("u", { max = 1, [k] = "theirs" }) }, name)
      end
      assert.same({ nil, "no entry theirs in the archive", "item-not-found" },
        { store:archive_query("u", { max = 1, ids = { "id1", "theirs" } }) }, name)
      assert.same({ nil, "no entry id1 in the archive", "item-not-found" },
        { store:archive_query("v", { max = 1, ids = { "id1" } }) }, name)
      assert.has_error(function() store:archive_query("u", { max = 1, ids = {} }) end)
      assert.has_error(function() store:archive_query("u", { max = 1, ids = "id1" }) end)
      assert.has_error(function() store:archive_query("u", { max = 1, ids = { "id1", "" } }) end)
      assert.has_error(function() store:archive_query("u", { max = 1, after_id = "" }) end)
      store:remove_account("u")
      store:remove_account("v")
    end)
  end)

  it("tells the oldest and newest entry (archive metadata), nil for an empty archive", function()
    with_stores(function(store, name)
      assert.is_nil(store:archive_metadata("u"), name)
      assert(store:archive_add("u", { id = "one", time = 7, with = "c@x", data = "<m/>" }))
      assert.same({ start = { id = "one", time = 7 }, ["end"] = { id = "one", time = 7 } },
        store:archive_metadata("u"), name)
      assert(store:archive_add("v", { id = "other", time = 1, with = "c@x", data = "<m/>" }))
      for i = 2, 5 do
        assert(store:archive_add("u", { id = "id" .. i, time = 10 * i, with = "c@x", data = "<m/>" }, 3))
      end
      -- the cap dropped "one" and "id2": the oldest kept is id3
      assert.same({ start = { id = "id3", time = 30 }, ["end"] = { id = "id5", time = 50 } },
        store:archive_metadata("u"), name)
      assert.same({ start = { id = "other", time = 1 }, ["end"] = { id = "other", time = 1 } },
        store:archive_metadata("v"), name)
      assert.has_error(function() store:archive_metadata("") end, "storage: user must be a non-empty string")
      store:remove_account("u")
      assert.is_nil(store:archive_metadata("u"), name)
      store:remove_account("v")
    end)
  end)

  it("tells whether an archive holds an entry, of that user only, and not once the cap dropped it", function()
    with_stores(function(store, name)
      assert.is_false(store:archive_has("u", "one"), name)
      assert(store:archive_add("u", { id = "one", time = 1, with = "c@x", data = "<m/>" }))
      assert(store:archive_add("v", { id = "two", time = 2, with = "c@x", data = "<m/>" }))
      assert.same({ true, false, false }, { store:archive_has("u", "one"), store:archive_has("u", "two"),
        store:archive_has("v", "one") }, name)
      assert(store:archive_add("u", { id = "three", time = 3, with = "c@x", data = "<m/>" }, 1))
      assert.same({ false, true }, { store:archive_has("u", "one"), store:archive_has("u", "three") }, name)
      assert.has_error(function() store:archive_has("u", "") end, "storage: archive id must be a non-empty string")
      assert.has_error(function() store:archive_has("u", 5) end, "storage: archive id must be a non-empty string")
      store:remove_account("u")
      store:remove_account("v")
      assert.is_false(store:archive_has("u", "three"), name)
    end)
  end)

  it("caps an archive in bytes, the oldest going first and the newest always kept", function()
    with_stores(function(store, name)
      local function kept_ids()
        local out = {}
        for i, it in ipairs(assert(store:archive_query("u", { max = 99 })).items) do out[i] = it.id end
        return table.concat(out, ",")
      end
      local m = ("x"):rep(96)                            -- 100 bytes with <m></m>
      for i = 1, 5 do
        assert(store:archive_add("u", { id = "b" .. i, time = i, with = "c@x", data = "<m>" .. m .. "</m>" }, 99, 350))
      end
      assert.equal("b3,b4,b5", kept_ids(), name)              -- 300 of 350 bytes
      -- a bigger one pushes out as many as it needs
      assert(store:archive_add("u", { id = "big", time = 9, with = "c@x", data = "<m>" .. m:rep(3) .. "</m>" }, 99, 350))
      assert.equal("big", kept_ids(), name)
      -- one larger than the whole budget still stays (the newest is kept), alone
      assert(store:archive_add("u", { id = "huge", time = 9, with = "c@x", data = ("y"):rep(400) }, 99, 350))
      assert.equal("huge", kept_ids(), name)
      assert(store:archive_add("u", { id = "after", time = 9, with = "c@x", data = "<m/>" }, 99, 350))
      assert.equal("after", kept_ids(), name)
      -- the budget holds across a removal and a new archive under the name
      store:remove_account("u")
      for i = 1, 3 do
        assert(store:archive_add("u", { id = "n" .. i, time = i, with = "c@x", data = "<m>" .. m .. "</m>" }, 99, 250))
      end
      assert.equal("n2,n3", kept_ids(), name)
      store:remove_account("u")
    end)
  end)

  it("adds the archive table to a SQLite store made before archives", function()
    local path = os.tmpname()
    os.remove(path)
    local s = assert(storage.open(path))
    s:set("k", "v", "kept")
    s:close()
    local env = require("luasql.sqlite3").sqlite3()
    local conn = assert(env:connect(path))
    assert(conn:execute("DROP TABLE archive"))
    conn:close()
    env:close()
    s = assert(storage.open(path))
    assert.equal("kept", s:get("k", "v"))
    assert(s:archive_add("u", { id = "a", time = 1, with = "b@x", data = "<m/>" }))
    assert.equal(1, s:archive_query("u", { max = 1 }).count)
    s:close()
    os.remove(path)
    os.remove(path .. "-wal")
    os.remove(path .. "-shm")
  end)
end)
