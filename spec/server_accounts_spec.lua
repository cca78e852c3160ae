-- Accounts and their sessions in the embedded server (docs/server.md,
-- "Removing an account, changing a password"): removing an account ends
-- every session of it, XEP-0198 sessions waiting for resumption included,
-- and leaves nothing that refers to it (contacts' subscriptions, MUC and
-- pubsub affiliations and subscriptions, stored data), so a later account
-- of the same name starts empty and receives nothing meant for the old
-- one; a password change ends the account's other sessions with <reset/>.
local lxmpp = require "lxmpp"
local st = lxmpp.stanza
local serve = require "spec.support.serve"
local raw = require "spec.support.raw"

local D = "@example.test"
local MUC = "conference.example.test"
local PUBSUB = "pubsub.example.test"
local NS_SM = "urn:xmpp:sm:3"
local NS_MUC = "http://jabber.org/protocol/muc"
local NS_PS = "http://jabber.org/protocol/pubsub"
local STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"

local function login(port, user, pw, res)
  return assert(serve.login(port, user, pw, res, { reconnect = false }))
end

-- A raw stream of `user` with a resumable XEP-0198 session on resource
-- `res`, then dropped without a clean close: the session hibernates.
local function detached(srv, port, user, pw, res)
  local r = raw.login(port, serve.pki().ca, user, pw, res)
  r:send("<enable xmlns='" .. NS_SM .. "' resume='true'/>")
  local e = assert(r:stanza())
  assert.equal("enabled", e.name)
  r:send("<presence/>")
  r:close()
  assert.truthy(serve.until_true(function()
    local s = (srv.sessions[user .. D] or {})[res]
    return s ~= nil and s.hibernation ~= nil
  end), "the session hibernates")
  return e.attr.id
end

local function picked(list, typ, from)
  local out = {}
  for _, p in ipairs(list) do
    if p.attr.type == typ and p.attr.from == from then out[#out + 1] = p end
  end
  return out
end

local function pushed(list, contact, subscription)
  for _, iq in ipairs(list) do
    local item = iq:find("{jabber:iq:roster}query/item")
    if item and item.attr.jid == contact and item.attr.subscription == subscription then return true end
  end
  return false
end

local function error_condition(s)
  local e = s and s:get_child("error")
  for c in (e and e:childtags(nil, STANZAS) or function() end) do
    if c.name ~= "text" then return c.name end
  end
end

-- Joins a MUC room as its first occupant and accepts the default
-- configuration but persistent: c owns the room.
local function own_room(c, room, nick)
  local got = serve.collect(c, "presence")
  assert(c:send(st.presence({ to = room .. "/" .. nick }):tag("x", { xmlns = NS_MUC }):up()))
  assert.truthy(serve.until_true(function() return #picked(got, nil, room .. "/" .. nick) > 0 end))
  assert(c:request(st.iq({ type = "set", to = room }):query(NS_MUC .. "#owner")
    :tag("x", { xmlns = "jabber:x:data", type = "submit" })
    :tag("field", { var = "FORM_TYPE" }):text_tag("value", NS_MUC .. "#roomconfig"):up()
    :tag("field", { var = "muc#roomconfig_persistentroom" }):text_tag("value", "1"):up()))
end

local function set_room_affiliation(c, room, who, aff)
  return c:request(st.iq({ type = "set", to = room }):query(NS_MUC .. "#admin")
    :tag("item", { jid = who, affiliation = aff }))
end

local function set_node_affiliation(c, node, who, aff)
  return c:request(st.iq({ type = "set", to = PUBSUB }):tag("pubsub", { xmlns = NS_PS .. "#owner" })
    :tag("affiliations", { node = node }):tag("affiliation", { jid = who, affiliation = aff }))
end

-- What the server keeps that refers to alice@example.test.
local function traces_of_alice(srv)
  local found = {}
  local bare = "alice" .. D
  for room_jid, room in pairs(srv.muc.rooms) do
    if room.affiliations[bare] then found[#found + 1] = "affiliation with room " .. room_jid end
  end
  local services = { srv.pubsub.service }
  for _, service in pairs(srv.pep.services) do services[#services + 1] = service end
  for _, service in ipairs(services) do
    if service.jid == bare then found[#found + 1] = "a PEP service" end
    for name, node in pairs(service.nodes) do
      local where = service.jid .. " node " .. name
      if node.affiliations[bare] then found[#found + 1] = "affiliation with " .. where end
      for who in pairs(node.subscriptions) do
        if who:sub(1, #bare) == bare then found[#found + 1] = "subscription to " .. where end
      end
    end
  end
  local r = srv.store:get_roster("alice")
  if next(r.items) or next(r.pending) then found[#found + 1] = "a roster" end
  if srv.store:count_offline("alice") > 0 then found[#found + 1] = "offline messages" end
  if srv.store:archive_query("alice", { max = 1 }).count > 0 then found[#found + 1] = "an archive" end
  if srv.store:get("vcard", "alice") then found[#found + 1] = "a vCard" end
  if srv.store:get("private", "alice") then found[#found + 1] = "private XML" end
  for _, key in ipairs(srv.store:keys("pubsub_node")) do
    if key:find(bare, 1, true) == 1 then found[#found + 1] = "PEP node " .. key:gsub("%z", "/") end
  end
  local bob = srv.store:get_roster("bob").items[bare]
  if bob and (bob.subscription ~= "none" or bob.ask) then found[#found + 1] = "bob's subscription" end
  if srv.sessions[bare] then found[#found + 1] = "sessions" end
  for _, s in pairs(srv.sm_sessions) do
    if s.bare == bare then found[#found + 1] = "a resumable session" end
  end
  return found
end

local BACKENDS = { { "memory" }, { "sqlite", true } }

describe("embedded server: removing an account", function()
  for _, backend in ipairs(BACKENDS) do
    it("leaves nothing a new account of the same name inherits (" .. backend[1] .. " storage)", function()
      local path = backend[2] and os.tmpname() or nil
      if path then os.remove(path) end
      local opts = { users = { bob = "bob-pw" }, muc = MUC, pubsub = PUBSUB, storage = path,
        registration = true }
      serve.run(opts, function(srv, port)
        assert(srv:add_user("alice", "old-pw"))
        -- subscribed both ways
        srv.store:set_roster_item("alice", "bob" .. D, { subscription = "both" })
        srv.store:set_roster_item("bob", "alice" .. D, { subscription = "both" })
        local b = login(port, "bob", "bob-pw", "b")
        local pushes = serve.collect(b, "iq")
        local seen = serve.collect(b, "presence")
        local bob_msgs = serve.collect(b, "message")
        assert(b:request(st.iq({ type = "get" }):query("jabber:iq:roster")))
        assert(b:send(st.presence()))
        local a = login(port, "alice", "old-pw", "a")
        assert(a:send(st.presence()))
        assert.truthy(serve.until_true(function() return #picked(seen, nil, "alice" .. D .. "/a") == 1 end))
        -- data of her own: a vCard, private XML, an archived message, a PEP node
        assert(a:request(st.iq({ type = "set" }):tag("vCard", { xmlns = "vcard-temp" }):text_tag("FN", "Alice")))
        assert(a:request(st.iq({ type = "set" }):query("jabber:iq:private")
          :tag("secret", { xmlns = "urn:example:secret" }):text("old alice's")))
        assert(a:pubsub_publish("alice" .. D, "urn:example:mood", st.stanza("mood", { xmlns = "urn:example:mood" })))
        b:send_message("alice" .. D, "archived for old alice")
        -- rooms: one she alone owns, one she owns with bob
        own_room(a, "solo@" .. MUC, "alice")
        own_room(a, "shared@" .. MUC, "alice")
        assert(set_room_affiliation(a, "shared@" .. MUC, "bob" .. D, "owner"))
        -- nodes: one she owns, and bob's, to which she subscribes as a publisher
        assert(a:pubsub_create(PUBSUB, "alice-node"))
        assert(b:pubsub_create(PUBSUB, "bob-node"))
        assert(set_node_affiliation(b, "bob-node", "alice" .. D, "publisher"))
        assert(a:pubsub_subscribe(PUBSUB, "bob-node"))
        -- and to bob's PEP node, explicitly
        assert(b:pubsub_publish("bob" .. D, "urn:example:tune", st.stanza("tune", { xmlns = "urn:example:tune" })))
        assert(a:pubsub_subscribe("bob" .. D, "urn:example:tune"))
        -- a session waiting for resumption
        detached(srv, port, "alice", "old-pw", "phone")
        local unbound = raw.login(port, serve.pki().ca, "alice", "old-pw", false)

        -- in-band removal (XEP-0077 §3.2) from session a
        local removed = a:request(st.iq({ type = "set" }):query("jabber:iq:register"):tag("remove"))
        assert.truthy(removed)
        assert.equal("not-authorized", (unbound:stream_error()))
        assert.truthy(serve.until_true(function() return srv.sessions["alice" .. D] == nil end))

        -- bob: unsubscribe and unsubscribed from alice's bare JID, his
        -- roster changed and pushed to him
        assert.truthy(serve.until_true(function()
          return #picked(seen, "unsubscribe", "alice" .. D) == 1 and #picked(seen, "unsubscribed", "alice" .. D) == 1
        end), "bob is told of both subscriptions' end")
        assert.truthy(serve.until_true(function() return pushed(pushes, "alice" .. D, "none") end), "bob's roster push")
        assert.equal("none", srv.store:get_roster("bob").items["alice" .. D].subscription)
        assert.is_nil(srv.muc.rooms["solo@" .. MUC], "the room she alone owned is destroyed")
        assert.equal("owner", srv.muc.rooms["shared@" .. MUC].affiliations["bob" .. D])
        assert.is_nil(srv.pubsub.service.nodes["alice-node"], "the node she alone owned is deleted")
        assert.same({}, traces_of_alice(srv))

        -- what is sent to the old account now bounces, never waits for a new one
        for _, to in ipairs({ "alice" .. D .. "/phone", "alice" .. D }) do
          b:send(st.message({ to = to, type = "chat", id = "late" .. to }):text_tag("body", "for old alice"))
        end
        assert.truthy(serve.until_true(function()
          local n = 0
          for _, m in ipairs(bob_msgs) do
            if m.attr.type == "error" and error_condition(m) == "service-unavailable" then n = n + 1 end
          end
          return n == 2
        end), "both messages bounce")

        -- a new alice: nothing of the old one
        assert(srv:add_user("alice", "new-pw"))
        local a2 = login(port, "alice", "new-pw", "new")
        local got = serve.collect(a2, "message")
        local roster = assert(a2:request(st.iq({ type = "get" }):query("jabber:iq:roster")))
        assert.is_nil(roster:find("{jabber:iq:roster}query/item"))
        assert(a2:send(st.presence()))
        local vcard = assert(a2:request(st.iq({ type = "get" }):tag("vCard", { xmlns = "vcard-temp" })))
        assert.is_nil(vcard:find("{vcard-temp}vCard/FN"))
        -- not the owner of the room she (the old one) shared with bob
        local self_presence = serve.collect(a2, "presence")
        assert(a2:send(st.presence({ to = "shared@" .. MUC .. "/alice2" }):tag("x", { xmlns = NS_MUC }):up()))
        assert.truthy(serve.until_true(function()
          return #picked(self_presence, nil, "shared@" .. MUC .. "/alice2") == 1
        end))
        local item = picked(self_presence, nil, "shared@" .. MUC .. "/alice2")[1]:find("{" .. NS_MUC .. "#user}x/item")
        assert.equal("none", item.attr.affiliation)
        lxmpp.sleep(0.3)
        for _, m in ipairs(got) do
          assert.is_nil(m:get_child("body"), "the new alice got " .. tostring(m))
        end
        a2:close()
        b:close()
      end)
      if path then
        -- what was stored says the same after a restart
        serve.run({ users = { bob = "bob-pw" }, muc = MUC, pubsub = PUBSUB, storage = path }, function(srv)
          assert.same({}, traces_of_alice(srv))
          assert.equal("owner", srv.muc.rooms["shared@" .. MUC].affiliations["bob" .. D])
          assert.truthy(srv.pubsub.service.nodes["bob-node"])
          assert.truthy(srv.pep.services["bob" .. D].nodes["urn:example:tune"])
        end)
        os.remove(path)
        os.remove(path .. "-wal")
        os.remove(path .. "-shm")
      end
    end)
  end

  it("srv:remove_user ends a detached session at once: what was sent to it never reaches a new account", function()
    serve.run({ users = { bob = "bob-pw", alice = "old-pw" }, limits = { sm_timeout = 0.5 } }, function(srv, port)
      local b = login(port, "bob", "bob-pw", "b")
      local bob_msgs = serve.collect(b, "message")
      local id = detached(srv, port, "alice", "old-pw", "phone")
      -- queued for the hibernating session before the removal
      b:send(st.message({ to = "alice" .. D .. "/phone", type = "chat", id = "early" }):text_tag("body", "before"))
      assert.truthy(serve.until_true(function()
        local s = (srv.sessions["alice" .. D] or {}).phone
        return s and s.sm.q.n == 1
      end))
      local r = raw.login(port, serve.pki().ca, "alice", "old-pw", "desk")
      assert(srv:remove_user("alice"))
      local cond, text = r:stream_error()
      assert.equal("not-authorized", cond)
      assert.truthy(text)
      assert.is_nil(srv.sessions["alice" .. D])
      assert.is_nil(srv.sm_sessions[id])
      -- sent to the detached session's full JID after the removal
      b:send(st.message({ to = "alice" .. D .. "/phone", type = "chat", id = "late" }):text_tag("body", "after"))
      local bounced = {}
      assert.truthy(serve.until_true(function()
        for _, m in ipairs(bob_msgs) do
          if m.attr.type == "error" then bounced[m.attr.id] = error_condition(m) end
        end
        return bounced.early ~= nil and bounced.late ~= nil
      end))
      assert.same({ early = "service-unavailable", late = "service-unavailable" }, bounced)
      assert(srv:add_user("alice", "new-pw"))
      lxmpp.sleep(0.8)                                   -- past sm_timeout
      assert.equal(0, srv.store:count_offline("alice"))
      -- the old session cannot be resumed by the new account
      local r2 = raw.login(port, serve.pki().ca, "alice", "new-pw", false)
      r2:send("<resume xmlns='" .. NS_SM .. "' previd='" .. id .. "' h='0'/>")
      local f = assert(r2:stanza())
      assert.equal("failed", f.name)
      r2:close()
      local a2 = login(port, "alice", "new-pw", "new")
      local got = serve.collect(a2, "message")
      assert(a2:send(st.presence()))
      lxmpp.sleep(0.3)
      assert.same({}, got)
      a2:close()
      b:close()
    end)
  end)

  it("a contact that blocks the account still loses its subscription", function()
    serve.run({ users = { bob = "bob-pw", alice = "alice-pw" } }, function(srv, port)
      srv.store:set_roster_item("alice", "bob" .. D, { subscription = "both" })
      srv.store:set_roster_item("bob", "alice" .. D, { subscription = "both" })
      local b = login(port, "bob", "bob-pw", "b")
      local pushes = serve.collect(b, "iq")
      local seen = serve.collect(b, "presence")
      assert(b:request(st.iq({ type = "get" }):query("jabber:iq:roster")))
      assert(b:request(st.iq({ type = "set" }):tag("block", { xmlns = "urn:xmpp:blocking" })
        :tag("item", { jid = "alice" .. D })))
      assert(srv:remove_user("alice"))
      assert.equal("none", srv.store:get_roster("bob").items["alice" .. D].subscription)
      assert.truthy(serve.until_true(function() return pushed(pushes, "alice" .. D, "none") end))
      lxmpp.sleep(0.2)
      assert.same({}, picked(seen, "unsubscribe", "alice" .. D), "blocked: the presence itself is not delivered")
      b:close()
    end)
  end)
end)

describe("embedded server: XEP-0198 and the server's own requests", function()
  it("a contact's session that ends with a roster push unacknowledged ends cleanly", function()
    -- removing alice pushes bob's changed roster; bob never acknowledges it
    -- and is not resumed: there is nobody to answer the push's error to
    serve.run({ users = { bob = "bob-pw", alice = "alice-pw" }, limits = { sm_timeout = 0.2 } }, function(srv, port)
      srv.store:set_roster_item("alice", "bob" .. D, { subscription = "both" })
      srv.store:set_roster_item("bob", "alice" .. D, { subscription = "both" })
      local r = raw.login(port, serve.pki().ca, "bob", "bob-pw", "b")
      r:send("<enable xmlns='" .. NS_SM .. "' resume='true'/>")
      assert.equal("enabled", assert(r:stanza()).name)
      r:send("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>")
      assert.equal("roster", assert(r:stanza()).attr.id)
      assert(srv:remove_user("alice"))
      local push
      repeat push = assert(r:stanza()) until push.name == "iq"
      assert.equal("set", push.attr.type)
      r:close()
      assert.truthy(serve.until_true(function() return srv.sessions["bob" .. D] == nil end))
      lxmpp.sleep(0.1)
    end)
  end)
end)

describe("embedded server: changing a password", function()
  it("in-band: the account's other sessions end with <reset/>, detached ones too; the changing one stays", function()
    serve.run({ users = { alice = "old-pw" } }, function(srv, port)
      local a = login(port, "alice", "old-pw", "a")
      local other = raw.login(port, serve.pki().ca, "alice", "old-pw", "other")
      local id = detached(srv, port, "alice", "old-pw", "phone")
      local r = a:request(st.iq({ type = "set" }):query("jabber:iq:register")
        :text_tag("username", "alice"):text_tag("password", "new-pw"))
      assert.truthy(r)
      local cond, text = other:stream_error()
      assert.equal("reset", cond)
      assert.truthy(text)
      assert.is_nil(srv.sm_sessions[id])
      local list = {}
      for res in pairs(srv.sessions["alice" .. D]) do list[#list + 1] = res end
      assert.same({ "a" }, list)
      assert.truthy(a:request(st.iq({ type = "get", to = "example.test" }):tag("ping", { xmlns = "urn:xmpp:ping" })))
      -- the old password is refused, the new one works
      assert.is_nil(serve.login(port, "alice", "old-pw", "x", { reconnect = false }))
      login(port, "alice", "new-pw", "y"):close()
      a:close()
    end)
  end)

  it("by the host application: every session ends with <reset/>", function()
    serve.run({ users = { alice = "old-pw" } }, function(srv, port)
      local r1 = raw.login(port, serve.pki().ca, "alice", "old-pw", "one")
      local id = detached(srv, port, "alice", "old-pw", "phone")
      assert(srv:set_password("alice", "new-pw"))
      assert.equal("reset", (r1:stream_error()))
      assert.is_nil(srv.sessions["alice" .. D])
      assert.is_nil(srv.sm_sessions[id])
      local r2 = raw.login(port, serve.pki().ca, "alice", "new-pw", "two")
      assert(srv:add_user("alice", "newer-pw"))          -- add_user replacing a password: the same
      assert.equal("reset", (r2:stream_error()))
    end)
  end)
end)
