-- Room archives of the embedded server's MUC service (XEP-0313 §6 on
-- XEP-0045 rooms; lua/lxmpp/server/muc_mam.lua) with real lxmpp clients:
-- what is archived (groupchat with a body, not subjects nor private
-- messages), the room's stanza ids (forged ones dropped), real JIDs shown
-- only to whom the room shows them, queries to the
-- room with paging and its metadata, who may query (members-only, password-protected,
-- outcasts), disco, and what happens to the archive when the room goes or
-- the server restarts (SQLite).
local lxmpp = require "lxmpp"
local st = lxmpp.stanza
local serve = require "spec.support.serve"

local NS = "urn:xmpp:mam:2"
local NS_SID = "urn:xmpp:sid:0"
local NS_MUC = "http://jabber.org/protocol/muc"
local USERS = { alice = "alice-pw", bob = "bob-pw", carol = "carol-pw" }
local MUC = "conference.example.test"
local ROOM = "tea@" .. MUC

local function sync(c)
  assert(c:request(st.iq({ type = "get" }):tag("ping", { xmlns = "urn:xmpp:ping" })))
end

local function join(c, room, nick, password)
  local p = st.presence({ to = room .. "/" .. nick }):tag("x", { xmlns = NS_MUC })
  if password then p:text_tag("password", password) end
  c:send(p)
  assert(serve.expect(c, "presence", function(s)
    return s.attr.from == room .. "/" .. nick and s.attr.type ~= "error"
  end, 5), nick .. " could not join " .. room)
end

local function configure(c, room, fields)
  local x = st.stanza("x", { xmlns = "jabber:x:data", type = "submit" })
    :tag("field", { var = "FORM_TYPE" }):text_tag("value", "http://jabber.org/protocol/muc#roomconfig"):up()
  for var, v in pairs(fields) do x:tag("field", { var = "muc#roomconfig_" .. var }):text_tag("value", v):up() end
  assert(c:request(st.iq({ type = "set", to = room }):tag("query", { xmlns = NS_MUC .. "#owner" }):add_child(x)))
end

local qn = 0
-- Queries room's archive: the forwarded messages in order and <fin/>, or
-- nil, condition. fields: a form's { var = value or { values } }; flip:
-- <flip-page/>.
local function query(c, room, max, after, fields, flip)
  qn = qn + 1
  local qid = "rq" .. qn
  local iq = st.iq({ type = "set", to = room }):tag("query", { xmlns = NS, queryid = qid })
  if fields then
    iq:tag("x", { xmlns = "jabber:x:data", type = "submit" })
      :tag("field", { var = "FORM_TYPE", type = "hidden" }):text_tag("value", NS):up()
    for var, v in pairs(fields) do
      iq:tag("field", { var = var })
      for _, value in ipairs(type(v) == "table" and v or { v }) do iq:text_tag("value", value) end
      iq:up()
    end
    iq:up()
  end
  if flip then iq:tag("flip-page"):up() end
  if max or after then
    iq:tag("set", { xmlns = "http://jabber.org/protocol/rsm" })
    if max then iq:text_tag("max", tostring(max)) end
    if after then iq:text_tag("after", after) end
    iq:up()
  end
  local got = {}
  local id = c:on("message", function(m)
    local r = m:get_child("result", NS)
    if r and r.attr.queryid == qid then
      assert.equal(room, m.attr.from)
      got[#got + 1] = { id = r.attr.id,
        msg = r:get_child("forwarded", "urn:xmpp:forward:0"):get_child("message", "jabber:client") }
    end
  end)
  local r, _, cond = c:request(iq, 5)
  c:off(id)
  if not r then return nil, cond end
  return got, r:get_child("fin", NS)
end

local function bodies(got)
  local out = {}
  for i, g in ipairs(got) do out[i] = g.msg.attr.from .. ": " .. g.msg:get_child_text("body") end
  return out
end

describe("server room archives (XEP-0313 on MUC)", function()
  it("archives groupchat with a body under the room's stanza ids, and answers queries to the room", function()
    serve.run({ users = USERS, muc = MUC }, function(_, port)
      local a = assert(serve.login(port, "alice", "alice-pw"))
      local b = assert(serve.login(port, "bob", "bob-pw"))
      join(a, ROOM, "al")
      configure(a, ROOM, {})   -- an instant room (XEP-0045 §10.1.2)
      join(b, ROOM, "bo")
      local seen = {}
      b:on("message", function(m) if m.attr.type == "groupchat" then seen[#seen + 1] = m end end)
      a:send(st.message({ to = ROOM, type = "groupchat" }):text_tag("subject", "Tea time"))
      a:send(st.message({ to = ROOM, type = "groupchat" }, "one")
        :tag("stanza-id", { xmlns = NS_SID, by = ROOM, id = "forged" }):up())
      sync(a)   -- two connections: keep the order of the room's messages known
      b:send(st.message({ to = ROOM, type = "groupchat" }, "two"))
      b:send(st.message({ to = ROOM .. "/al", type = "chat" }, "private"))
      sync(b)
      a:send(st.message({ to = ROOM, type = "groupchat" }, "not kept")
        :tag("no-store", { xmlns = "urn:xmpp:hints" }):up())
      a:send(st.message({ to = ROOM, type = "groupchat" }):tag("composing", {
        xmlns = "http://jabber.org/protocol/chatstates" }):up())
      a:send(st.message({ to = ROOM, type = "groupchat" }, "three"))
      sync(a)
      sync(b)
      -- what occupants got carries the room's id, the forged one is gone
      local ids = {}
      for _, m in ipairs(seen) do
        local sids = {}
        for s in m:childtags("stanza-id", NS_SID) do sids[#sids + 1] = s end
        if m:get_child_text("body") and not m:get_child("no-store", "urn:xmpp:hints") then
          assert.equal(1, #sids, tostring(m))
          assert.equal(ROOM, sids[1].attr.by)
          assert.not_equal("forged", sids[1].attr.id)
          ids[#ids + 1] = sids[1].attr.id
        else
          assert.equal(0, #sids, tostring(m))
        end
      end
      assert.equal(3, #ids)
      local got, fin = query(b, ROOM)
      assert(got, fin)
      assert.same({ ROOM .. "/al: one", ROOM .. "/bo: two", ROOM .. "/al: three" }, bodies(got))
      assert.same(ids, { got[1].id, got[2].id, got[3].id })
      assert.equal("true", fin.attr.complete)
      for _, g in ipairs(got) do
        assert.equal("groupchat", g.msg.attr.type)
        assert.is_nil(tostring(g.msg):find("example.test/r", 1, true), "a real JID in the archive")
      end
      -- real JIDs: the owner sees them (semi-anonymous room), a participant does not
      local function real(g)
        local x = g.msg:get_child("x", NS_MUC .. "#user")
        return x and x:get_child("item") and x:get_child("item").attr.jid or "-"
      end
      local seen_by_owner = assert(query(a, ROOM))
      assert.same({ "alice@example.test", "bob@example.test", "alice@example.test" },
        { real(seen_by_owner[1]), real(seen_by_owner[2]), real(seen_by_owner[3]) })
      assert.same({ "-", "-", "-" }, { real(got[1]), real(got[2]), real(got[3]) })
      configure(a, ROOM, { whois = "anyone" })   -- non-anonymous: everyone sees them
      local now = assert(query(b, ROOM))
      assert.equal("bob@example.test", real(now[2]))
      configure(a, ROOM, { whois = "moderators" })
      -- paging
      local page, pfin = query(b, ROOM, 2)
      assert.same({ ROOM .. "/al: one", ROOM .. "/bo: two" }, bodies(page))
      assert.equal("false", pfin.attr.complete)
      page = query(b, ROOM, 2, page[2].id)
      assert.same({ ROOM .. "/al: three" }, bodies(page))
      -- the room archive's metadata (XEP-0313 §"Archive metadata"): its first and last ids
      local md = assert(b:request(st.iq({ type = "get", to = ROOM }):tag("metadata", { xmlns = NS })))
      md = assert(md:get_child("metadata", NS))
      assert.same({ ids[1], ids[3] }, { md:get_child("start").attr.id, md:get_child("end").attr.id })
      assert.truthy(require("lxmpp.datetime").parse(md:get_child("start").attr.timestamp))
      assert.truthy(require("lxmpp.datetime").parse(md:get_child("end").attr.timestamp))
      -- disco: the room says it archives
      local info = assert(b:request(st.iq({ type = "get", to = ROOM })
        :tag("query", { xmlns = "http://jabber.org/protocol/disco#info" })))
      local features = {}
      for f in info:get_child("query", "http://jabber.org/protocol/disco#info"):childtags("feature") do
        features[f.attr.var] = true
      end
      assert.is_true(features[NS])
      assert.is_true(features[NS .. "#extended"])   -- XEP-0313 §"Determining support"
      assert.is_true(features[NS_SID])
      -- the account archive keeps the private message, not the groupchat
      local own = assert(query(b, "bob@example.test"))
      assert.same({ "bob@example.test/r: private" }, bodies(own))
      assert.equal("chat", own[1].msg.attr.type)
      a:close()
      b:close()
    end)
  end)

  -- XEP-0313 §"Limiting results by id" and §"Flipped pages" on a room, on both stores
  for _, backend in ipairs({ "memory", "sqlite" }) do
    it("answers #extended queries to a room, and knows no id of another archive (" .. backend .. ")", function()
      local path = backend == "sqlite" and os.tmpname() or nil
      if path then os.remove(path) end
      serve.run({ users = USERS, muc = MUC, storage = path }, function(_, port)
        local a = assert(serve.login(port, "alice", "alice-pw"))
        join(a, ROOM, "al")
        configure(a, ROOM, {})
        local other = "coffee@" .. MUC
        join(a, other, "al")
        configure(a, other, {})
        for i = 1, 5 do a:send(st.message({ to = ROOM, type = "groupchat" }, "t" .. i)) end
        a:send(st.message({ to = other, type = "groupchat" }, "elsewhere"))
        a:send(st.message({ to = "bob@example.test", type = "chat" }, "private"))
        sync(a)
        local all = {}
        for i, g in ipairs(assert(query(a, ROOM))) do all[i] = g.id end
        assert.equal(5, #all)
        local elsewhere = assert(query(a, other))[1].id
        local own = assert(query(a, "alice@example.test"))[1].id
        local function got(...)
          local r, fin = query(a, ROOM, ...)
          assert(r, fin)
          local out = {}
          for i, g in ipairs(r) do out[i] = g.msg:get_child_text("body") end
          return out, fin
        end
        assert.same({ "t2", "t3", "t4" }, (got(nil, nil, { ["after-id"] = all[1], ["before-id"] = all[5] })))
        local r, fin = got(2, nil, { ["after-id"] = all[1] })
        assert.same({ "t2", "t3" }, r)
        assert.equal("4", fin:get_child("set", "http://jabber.org/protocol/rsm"):get_child_text("count"))
        assert.same({ "t4", "t5" }, (got(2, all[3], { ["after-id"] = all[1] })))
        assert.same({ "t1", "t4" }, (got(nil, nil, { ids = { all[4], all[1] } })))
        assert.same({ "t5", "t4", "t3", "t2" }, (got(nil, nil, { ["after-id"] = all[1] }, true)))
        -- ids of another room's archive, or of the account's, are not in this one
        for _, id in ipairs({ elsewhere, own, "no-such-id" }) do
          for _, var in ipairs({ "after-id", "before-id", "ids" }) do
            assert.same({ nil, "item-not-found" }, { query(a, ROOM, nil, nil, { [var] = id }) }, var)
          end
        end
        assert.same({ nil, "item-not-found" }, { query(a, "alice@example.test", nil, nil, { ids = { all[1] } }) })
        a:close()
      end)
      if path then
        for _, f in ipairs({ path, path .. "-wal", path .. "-shm" }) do os.remove(f) end
      end
    end)
  end

  it("lets only those the room allows query it", function()
    serve.run({ users = USERS, muc = MUC }, function(_, port)
      local a = assert(serve.login(port, "alice", "alice-pw"))
      local c = assert(serve.login(port, "carol", "carol-pw"))
      join(a, ROOM, "al")
      configure(a, ROOM, { membersonly = "1" })
      a:send(st.message({ to = ROOM, type = "groupchat" }, "members only"))
      sync(a)
      local got, cond = query(c, ROOM)
      assert.is_nil(got)
      assert.equal("forbidden", cond)
      assert(a:request(st.iq({ type = "set", to = ROOM }):tag("query", { xmlns = NS_MUC .. "#admin" })
        :tag("item", { jid = "carol@example.test", affiliation = "member" })))
      got = assert(query(c, ROOM))
      assert.same({ ROOM .. "/al: members only" }, bodies(got))
      -- banned: never
      assert(a:request(st.iq({ type = "set", to = ROOM }):tag("query", { xmlns = NS_MUC .. "#admin" })
        :tag("item", { jid = "carol@example.test", affiliation = "outcast" })))
      got, cond = query(c, ROOM)
      assert.is_nil(got)
      assert.equal("forbidden", cond)
      -- password-protected: occupants (who gave the password) only
      local room2 = "secret@" .. MUC
      join(a, room2, "al")
      configure(a, room2, { passwordprotectedroom = "1", roomsecret = "pw" })
      local b = assert(serve.login(port, "bob", "bob-pw"))
      got, cond = query(b, room2)
      assert.is_nil(got)
      assert.equal("forbidden", cond)
      join(b, room2, "bo", "pw")
      assert(query(b, room2))
      a:close()
      b:close()
      c:close()
    end)
  end)

  it("drops a temporary room's archive with the room, keeps a persistent one across a restart", function()
    local path = os.tmpname()
    os.remove(path)
    serve.run({ users = USERS, muc = MUC, storage = path }, function(_, port)
      local a = assert(serve.login(port, "alice", "alice-pw"))
      join(a, ROOM, "al")
      a:send(st.message({ to = ROOM, type = "groupchat" }, "gone with the room"))
      sync(a)
      a:send(st.presence({ to = ROOM .. "/al", type = "unavailable" }))
      sync(a)
      join(a, ROOM, "al")
      assert.same({}, bodies(assert(query(a, ROOM))))
      configure(a, ROOM, { persistentroom = "1" })
      a:send(st.message({ to = ROOM, type = "groupchat" }, "kept on disk"))
      local temp = "temp@" .. MUC
      join(a, temp, "al")
      a:send(st.message({ to = temp, type = "groupchat" }, "temporary"))
      sync(a)
      a:close()
    end)
    serve.run({ users = USERS, muc = MUC, storage = path }, function(_, port)
      local a = assert(serve.login(port, "alice", "alice-pw"))
      assert.same({ ROOM .. "/al: kept on disk" }, bodies(assert(query(a, ROOM))))
      join(a, "temp@" .. MUC, "al")   -- the same name, a new room: no old history
      assert.same({}, bodies(assert(query(a, "temp@" .. MUC))))
      -- destroying the room drops its archive
      assert(a:request(st.iq({ type = "set", to = ROOM }):tag("query", { xmlns = NS_MUC .. "#owner" })
        :tag("destroy"):up()))
      join(a, ROOM, "al")
      assert.same({}, bodies(assert(query(a, ROOM))))
      a:close()
    end)
    os.remove(path)
  end)
end)
