-- What desktop clients look for on the embedded server (issue 12, point 8):
-- MAM on the server's own disco#info, XEP-0049 private XML storage with its
-- bounds, and XEP-0048 bookmarks in private storage kept as one set with
-- XEP-0402's urn:xmpp:bookmarks:1 PEP node (lua/lxmpp/server/private.lua,
-- bookmarks.lua), with real lxmpp clients.
local lxmpp = require "lxmpp"
local st = lxmpp.stanza
local serve = require "spec.support.serve"

local NS_PRIVATE = "jabber:iq:private"
local NS_BM = "urn:xmpp:bookmarks:1"
local NS_PUBSUB = "http://jabber.org/protocol/pubsub"
local USERS = { alice = "alice-pw", bob = "bob-pw" }
local A, B = "alice@example.test", "bob@example.test"

local function features(r)
  local out = {}
  for f in r:get_child("query", "http://jabber.org/protocol/disco#info"):childtags("feature") do
    out[f.attr.var] = true
  end
  return out
end

local function private_set(c, el)
  return c:request(st.iq({ type = "set" }):tag("query", { xmlns = NS_PRIVATE }):add_child(el))
end

local function private_get(c, name, ns, to)
  local r, msg, cond = c:request(st.iq({ type = "get", to = to }):tag("query", { xmlns = NS_PRIVATE })
    :tag(name, { xmlns = ns }))
  if not r then return nil, cond, msg end
  return r:get_child("query", NS_PRIVATE).tags[1]
end

local function legacy(rooms)
  local s = st.stanza("storage", { xmlns = "storage:bookmarks" })
  for _, r in ipairs(rooms) do
    s:tag("conference", { jid = r.jid, name = r.name, autojoin = r.autojoin })
    if r.nick then s:text_tag("nick", r.nick) end
    if r.password then s:text_tag("password", r.password) end
    s:up()
  end
  return s
end

-- The items of alice's urn:xmpp:bookmarks:1 node, id -> <conference/>.
local function native(c)
  local r, _, cond = c:request(st.iq({ type = "get" }):tag("pubsub", { xmlns = NS_PUBSUB })
    :tag("items", { node = NS_BM }))
  if not r then return nil, cond end
  local out = {}
  for it in r:get_child("pubsub", NS_PUBSUB):get_child("items"):childtags("item") do
    out[it.attr.id] = it:get_child("conference", NS_BM)
  end
  return out
end

describe("server disco for desktop clients", function()
  it("advertises MAM and private storage on the server's own disco#info, and #compat on the account", function()
    serve.run({ users = USERS }, function(_, port)
      local c = assert(serve.login(port, "alice", "alice-pw"))
      local f = features(assert(c:request(st.iq({ type = "get", to = "example.test" })
        :tag("query", { xmlns = "http://jabber.org/protocol/disco#info" }))))
      assert.is_true(f["urn:xmpp:mam:2"])
      assert.is_true(f[NS_PRIVATE])
      local own = features(assert(c:request(st.iq({ type = "get", to = A })
        :tag("query", { xmlns = "http://jabber.org/protocol/disco#info" }))))
      assert.is_true(own["urn:xmpp:mam:2"])
      assert.is_true(own[NS_BM .. "#compat"])
      assert.is_true(own[NS_BM .. "#compat-pep"])
      c:close()
    end)
  end)
end)

describe("server private XML storage (XEP-0049)", function()
  it("stores one element per namespace, replaces it, and gives back an empty one for nothing stored", function()
    serve.run({ users = USERS }, function(_, port)
      local c = assert(serve.login(port, "alice", "alice-pw"))
      local empty = assert(private_get(c, "notes", "storage:rosternotes"))
      assert.equal("notes", empty.name)
      assert.equal(0, #empty)
      assert(private_set(c, st.stanza("notes", { xmlns = "storage:rosternotes" })
        :text_tag("note", "first", { jid = B })))
      assert(private_set(c, st.stanza("roster", { xmlns = "roster:delimiter" }):text("::")))
      assert(private_set(c, st.stanza("notes", { xmlns = "storage:rosternotes" })
        :text_tag("note", "second", { jid = B })))
      local got = assert(private_get(c, "notes", "storage:rosternotes"))
      assert.equal("second", got:get_child_text("note"))
      assert.equal("::", assert(private_get(c, "roster", "roster:delimiter")):get_text())
      c:close()
      -- the same account from another connection sees it; bob does not
      local c2 = assert(serve.login(port, "alice", "alice-pw", "other"))
      assert.equal("second", assert(private_get(c2, "notes", "storage:rosternotes")):get_child_text("note"))
      local b = assert(serve.login(port, "bob", "bob-pw"))
      assert.equal(0, #assert(private_get(b, "notes", "storage:rosternotes")))
      local none, cond = private_get(b, "notes", "storage:rosternotes", A)
      assert.is_nil(none)
      assert.equal("forbidden", cond)
      c2:close()
      b:close()
    end)
  end)

  it("refuses queries without exactly one namespaced element", function()
    serve.run({ users = USERS }, function(_, port)
      local c = assert(serve.login(port, "alice", "alice-pw"))
      local _, _, cond = c:request(st.iq({ type = "set" }):tag("query", { xmlns = NS_PRIVATE }))
      assert.equal("not-acceptable", cond)
      _, _, cond = c:request(st.iq({ type = "set" }):tag("query", { xmlns = NS_PRIVATE })
        :tag("a", { xmlns = "x:a" }):up():tag("b", { xmlns = "x:b" }))
      assert.equal("not-acceptable", cond)
      _, _, cond = c:request(st.iq({ type = "get" }):tag("query", { xmlns = NS_PRIVATE }):tag("a"))
      assert.equal("not-acceptable", cond)
      c:close()
    end)
  end)

  it("bounds bytes and namespaces per account, keeping what was there", function()
    serve.run({ users = USERS, limits = { max_private_bytes = 200, max_private_items = 2 } }, function(_, port)
      local c = assert(serve.login(port, "alice", "alice-pw"))
      assert(private_set(c, st.stanza("a", { xmlns = "x:a" }):text("kept")))
      local r, msg, cond = private_set(c, st.stanza("a", { xmlns = "x:a" }):text(("z"):rep(300)))
      assert.is_nil(r)
      assert.equal("resource-constraint", cond)
      assert.matches("200 bytes", msg)
      assert.equal("kept", assert(private_get(c, "a", "x:a")):get_text())
      assert(private_set(c, st.stanza("b", { xmlns = "x:b" })))
      r, msg, cond = private_set(c, st.stanza("c", { xmlns = "x:c" }))
      assert.is_nil(r)
      assert.equal("resource-constraint", cond)
      assert.matches("2 namespaces", msg)
      assert.equal(0, #assert(private_get(c, "c", "x:c")))
      -- replacing within the bounds still works
      assert(private_set(c, st.stanza("b", { xmlns = "x:b" }):text("new")))
      assert.equal("new", assert(private_get(c, "b", "x:b")):get_text())
      c:close()
    end)
  end)

  it("persists in SQLite across a restart and goes with the account", function()
    local path = os.tmpname()
    os.remove(path)
    serve.run({ users = USERS, storage = path }, function(_, port)
      local c = assert(serve.login(port, "alice", "alice-pw"))
      assert(private_set(c, st.stanza("a", { xmlns = "x:a" }):text("on disk")))
      c:close()
    end)
    serve.run({ users = USERS, storage = path }, function(srv, port)
      local c = assert(serve.login(port, "alice", "alice-pw"))
      assert.equal("on disk", assert(private_get(c, "a", "x:a")):get_text())
      c:close()
      assert(srv:remove_user("alice"))
      assert(srv:add_user("alice", "alice-pw"))
      c = assert(serve.login(port, "alice", "alice-pw"))
      assert.equal(0, #assert(private_get(c, "a", "x:a")))
      c:close()
    end)
    os.remove(path)
  end)
end)

describe("server bookmarks (XEP-0048 in private storage and XEP-0402)", function()
  it("turns private-storage bookmarks into urn:xmpp:bookmarks:1 items and back", function()
    serve.run({ users = USERS }, function(_, port)
      local c = assert(serve.login(port, "alice", "alice-pw"))
      local s = legacy({
        { jid = "tea@conference.example.test", name = "Tea", autojoin = "true", nick = "al", password = "pw" },
        { jid = "Cake@Conference.example.test", name = "Cake" },
      })
      s:tag("url", { name = "Site", url = "https://example.test/" }):up()
      assert(private_set(c, s))
      local items = assert(native(c))
      local tea = assert(items["tea@conference.example.test"])
      assert.equal("Tea", tea.attr.name)
      assert.equal("true", tea.attr.autojoin)
      assert.equal("al", tea:get_child_text("nick"))
      assert.equal("pw", tea:get_child_text("password"))
      assert.is_nil(assert(items["cake@conference.example.test"]).attr.autojoin)
      -- the node is the account's alone (XEP-0402 §3: whitelist)
      local b = assert(serve.login(port, "bob", "bob-pw"))
      local _, _, cond = b:request(st.iq({ type = "get", to = A }):tag("pubsub", { xmlns = NS_PUBSUB })
        :tag("items", { node = NS_BM }))
      assert.equal("not-allowed", cond)   -- XEP-0060 §6.5.9.6: <closed-node/>
      b:close()
      -- a XEP-0402 client adds a room: XEP-0048 clients see it
      assert(c:request(st.iq({ type = "set" }):tag("pubsub", { xmlns = NS_PUBSUB })
        :tag("publish", { node = NS_BM }):tag("item", { id = "pie@conference.example.test" })
        :tag("conference", { xmlns = NS_BM, name = "Pie", autojoin = "1" }):text_tag("nick", "a2"):up():up():up()
        :tag("publish-options"):tag("x", { xmlns = "jabber:x:data", type = "submit" })
        :tag("field", { var = "FORM_TYPE", type = "hidden" })
        :text_tag("value", "http://jabber.org/protocol/pubsub#publish-options"):up()
        :tag("field", { var = "pubsub#access_model" }):text_tag("value", "whitelist"):up()))
      -- a XEP-0402 client pins tea: <extensions/> survive XEP-0048 writes
      assert(c:request(st.iq({ type = "set" }):tag("pubsub", { xmlns = NS_PUBSUB })
        :tag("publish", { node = NS_BM }):tag("item", { id = "tea@conference.example.test" })
        :tag("conference", { xmlns = NS_BM, name = "Tea", autojoin = "true" }):text_tag("nick", "al")
        :text_tag("password", "pw"):tag("extensions")
        :tag("pinned", { xmlns = "urn:xmpp:bookmarks-pinning:0" }):up():up():up():up():up()
        :tag("publish-options"):tag("x", { xmlns = "jabber:x:data", type = "submit" })
        :tag("field", { var = "FORM_TYPE", type = "hidden" })
        :text_tag("value", "http://jabber.org/protocol/pubsub#publish-options"):up()
        :tag("field", { var = "pubsub#access_model" }):text_tag("value", "whitelist"):up()))
      local got = assert(private_get(c, "storage", "storage:bookmarks"))
      local byjid = {}
      for conf in got:childtags("conference") do byjid[conf.attr.jid] = conf end
      assert.equal("true", byjid["pie@conference.example.test"].attr.autojoin)
      assert.equal("a2", byjid["pie@conference.example.test"]:get_child_text("nick"))
      assert.equal("false", byjid["cake@conference.example.test"].attr.autojoin)
      assert.equal("pw", byjid["tea@conference.example.test"]:get_child_text("password"))
      assert.equal("https://example.test/", got:get_child("url").attr.url)
      -- a XEP-0048 client writes a smaller set: the rooms it left out go
      local retracted = {}
      c:on("message", function(m)
        local e = m:get_child("event", NS_PUBSUB .. "#event")
        local its = e and e:get_child("items")
        if its and its.attr.node == NS_BM then
          for r in its:childtags("retract") do retracted[#retracted + 1] = r.attr.id end
        end
      end)
      c:send_presence()
      assert(private_set(c, legacy({ { jid = "tea@conference.example.test", name = "Tea 2" } })))
      items = assert(native(c))
      assert.equal("Tea 2", items["tea@conference.example.test"].attr.name)
      assert.truthy(items["tea@conference.example.test"]:get_child("extensions", NS_BM)
        :get_child("pinned", "urn:xmpp:bookmarks-pinning:0"))
      assert.is_nil(items["cake@conference.example.test"])
      assert.is_nil(items["pie@conference.example.test"])
      assert(c:request(st.iq({ type = "get" }):tag("ping", { xmlns = "urn:xmpp:ping" })))
      table.sort(retracted)   -- XEP-0402 clients hear of the retractions
      assert.same({ "cake@conference.example.test", "pie@conference.example.test" }, retracted)
      got = assert(private_get(c, "storage", "storage:bookmarks"))
      assert.is_nil(got:get_child("url"))
      local n = 0
      for _ in got:childtags("conference") do n = n + 1 end
      assert.equal(1, n)
      c:close()
    end)
  end)

  it("refuses a conference without a room JID, and too many rooms, changing nothing", function()
    serve.run({ users = USERS, limits = { max_pubsub_items = 2 } }, function(_, port)
      local c = assert(serve.login(port, "alice", "alice-pw"))
      assert(private_set(c, legacy({ { jid = "tea@conference.example.test", name = "Tea" } })))
      local r, _, cond = private_set(c, legacy({ { jid = "not a jid@@" } }))
      assert.is_nil(r)
      assert.equal("bad-request", cond)
      r, _, cond = private_set(c, legacy({ { jid = "a@c.example.test" }, { jid = "b@c.example.test" },
        { jid = "c@c.example.test" } }))
      assert.is_nil(r)
      assert.equal("resource-constraint", cond)
      local items = assert(native(c))
      assert.equal("Tea", items["tea@conference.example.test"].attr.name)
      assert.is_nil(items["a@c.example.test"])
      c:close()
    end)
  end)

  it("keeps XEP-0048 over PEP (storage:bookmarks node) the same set as the other two", function()
    serve.run({ users = USERS }, function(_, port)
      local c = assert(serve.login(port, "alice", "alice-pw"))
      assert(private_set(c, legacy({ { jid = "old@conference.example.test", name = "Old" } })))
      local s = legacy({ { jid = "pep@conference.example.test", name = "Pep", autojoin = "true", nick = "p" } })
      assert(c:request(st.iq({ type = "set" }):tag("pubsub", { xmlns = NS_PUBSUB })
        :tag("publish", { node = "storage:bookmarks" }):tag("item", { id = "current" }):add_child(s):up():up()
        :tag("publish-options"):tag("x", { xmlns = "jabber:x:data", type = "submit" })
        :tag("field", { var = "FORM_TYPE", type = "hidden" })
        :text_tag("value", "http://jabber.org/protocol/pubsub#publish-options"):up()
        :tag("field", { var = "pubsub#access_model" }):text_tag("value", "whitelist"):up()))
      local items = assert(native(c))
      assert.equal("p", assert(items["pep@conference.example.test"]):get_child_text("nick"))
      assert.is_nil(items["old@conference.example.test"])
      local got = assert(private_get(c, "storage", "storage:bookmarks"))
      assert.equal("pep@conference.example.test", got:get_child("conference").attr.jid)
      -- a XEP-0402 change shows in the PEP view
      assert(c:request(st.iq({ type = "set" }):tag("pubsub", { xmlns = NS_PUBSUB })
        :tag("retract", { node = NS_BM }):tag("item", { id = "pep@conference.example.test" })))
      local r = assert(c:request(st.iq({ type = "get" }):tag("pubsub", { xmlns = NS_PUBSUB })
        :tag("items", { node = "storage:bookmarks" })))
      local storage = r:get_child("pubsub", NS_PUBSUB):get_child("items"):get_child("item")
        :get_child("storage", "storage:bookmarks")
      assert.is_nil(storage:get_child("conference"))
      -- a publish that holds no <storage/> is refused
      local _, _, cond = c:request(st.iq({ type = "set" }):tag("pubsub", { xmlns = NS_PUBSUB })
        :tag("publish", { node = "storage:bookmarks" }):tag("item"):tag("x", { xmlns = "x:y" }))
      assert.equal("bad-request", cond)
      c:close()
    end)
  end)

  it("keeps XEP-0223 private PEP data (whitelist from publish-options) from everyone else", function()
    serve.run({ users = USERS }, function(_, port)
      local c = assert(serve.login(port, "alice", "alice-pw"))
      local b = assert(serve.login(port, "bob", "bob-pw"))
      -- bob is subscribed to alice's presence: PEP's default access lets him read
      b:send(st.presence({ to = A, type = "subscribe" }))
      assert(b:request(st.iq({ type = "get" }):tag("ping", { xmlns = "urn:xmpp:ping" })))
      c:send(st.presence({ to = B, type = "subscribed" }))
      assert(c:request(st.iq({ type = "get" }):tag("ping", { xmlns = "urn:xmpp:ping" })))
      assert(c:request(st.iq({ type = "set" }):tag("pubsub", { xmlns = NS_PUBSUB })
        :tag("publish", { node = "urn:example:open" }):tag("item", { id = "current" })
        :tag("data", { xmlns = "urn:example:open" }):text("public")))
      local open = assert(b:request(st.iq({ type = "get", to = A }):tag("pubsub", { xmlns = NS_PUBSUB })
        :tag("items", { node = "urn:example:open" })))
      assert.equal("public", open:get_child("pubsub", NS_PUBSUB):get_child("items"):get_child("item")
        :get_child_text("data", "urn:example:open"))
      local function publish(access)
        return c:request(st.iq({ type = "set" }):tag("pubsub", { xmlns = NS_PUBSUB })
          :tag("publish", { node = "urn:example:private" }):tag("item", { id = "current" })
          :tag("data", { xmlns = "urn:example:private" }):text("secret data"):up():up():up()
          :tag("publish-options"):tag("x", { xmlns = "jabber:x:data", type = "submit" })
          :tag("field", { var = "FORM_TYPE", type = "hidden" })
          :text_tag("value", "http://jabber.org/protocol/pubsub#publish-options"):up()
          :tag("field", { var = "pubsub#persist_items" }):text_tag("value", "true"):up()
          :tag("field", { var = "pubsub#access_model" }):text_tag("value", access):up())
      end
      assert(publish("whitelist"))
      local function items(client, to)
        local r, _, cond = client:request(st.iq({ type = "get", to = to }):tag("pubsub", { xmlns = NS_PUBSUB })
          :tag("items", { node = "urn:example:private" }))
        if not r then return nil, cond end
        return r:get_child("pubsub", NS_PUBSUB):get_child("items"):get_child("item")
      end
      assert.equal("secret data", assert(items(c)):get_child_text("data", "urn:example:private"))
      local none, cond = items(b, A)
      assert.is_nil(none)
      assert.equal("not-allowed", cond)
      -- asking for another access model on that node fails its precondition
      local r, _, pcond = publish("presence")
      assert.is_nil(r)
      assert.equal("conflict", pcond)
      c:close()
      b:close()
    end)
  end)
end)
