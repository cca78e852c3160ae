-- The embedded server's event bus (docs/server.md, "Adding a server
-- feature"): a host application adds a feature from a file of its own
-- (examples/server_feature.lua) with srv:hook, real clients use it, it goes
-- with srv:unhook, a failing handler costs one stanza and never the server
-- or the client's stream, and the session accessors see what is bound.
local lxmpp = require "lxmpp"
local st = lxmpp.stanza
local serve = require "spec.support.serve"
local feature = require "examples.server_feature"

local USERS = { alice = "alice-pw", bob = "bob-pw" }
local A, B = "alice@example.test", "bob@example.test"

local function fortune(c)
  return c:request(st.iq({ type = "get", to = "example.test" }):tag("fortune", { xmlns = feature.NS }))
end

-- The bodies of the messages of list (serve.collect) but errors, and the errors.
local function bodies(list)
  local out, errors = {}, {}
  for _, m in ipairs(list) do
    if m.attr.type == "error" then
      errors[#errors + 1] = m
    elseif m:get_child_text("body") then
      out[#out + 1] = m:get_child_text("body")
    end
  end
  return out, errors
end

local function inbox(c) return serve.collect(c, "message") end
local function got(list, n) return serve.until_true(function() return #bodies(list) >= n end) end

describe("server event bus", function()
  it("runs a feature from its own file: an IQ handler and a message filter, until unhooked", function()
    serve.run({ users = USERS }, function(srv, port)
      local unhook = feature.setup(srv, { banned = { "spam" } })
      local a, b = assert(serve.login(port, "alice", USERS.alice)), assert(serve.login(port, "bob", USERS.bob))
      b:send_presence()
      local a_in, b_in = inbox(a), inbox(b)
      -- the IQ handler answers the client
      local r = assert(fortune(a))
      assert.equal("A fine day for a release.", r:get_child_text("fortune", feature.NS))
      -- the filter: the banned message is refused, the next one delivered
      assert(serve.until_true(function() return srv:session(B .. "/r") and srv:session(B .. "/r").available end))
      a:send_message(B, "buy SPAM now", "chat")
      a:send_message(B .. "/r", "more spam", "chat")
      a:send_message(B, "hello", "chat")
      assert(got(b_in, 1))
      assert(serve.until_true(function() return #select(2, bodies(a_in)) >= 2 end))
      assert.same({ "hello" }, bodies(b_in))
      local refused = select(2, bodies(a_in))[1]
      assert.truthy(refused:get_child("error"):get_child("not-acceptable", "urn:ietf:params:xml:ns:xmpp-stanzas"))
      -- unhooked: the namespace is unknown again, and nothing is filtered
      unhook()
      local none, _, cond = fortune(a)
      assert.is_nil(none)
      assert.equal("service-unavailable", cond)
      a:send_message(B, "spam is fine now", "chat")
      assert(got(b_in, 2))
      assert.same({ "hello", "spam is fine now" }, bodies(b_in))
    end)
  end)

  it("fires Prosody-shaped names: iq/<kind>/<xmlns>:<name> before iq/<kind>/<xmlns>, by priority", function()
    serve.run({ users = USERS }, function(srv, port)
      local seen = {}
      -- above the server's own ping handler (priority -10): answers instead of it
      srv:hook("iq/host/urn:xmpp:ping:ping", function(ev)
        seen[#seen + 1] = "host:" .. ev.stanza.attr.from
        srv:reply(ev, st.error_reply(ev.stanza, "cancel", "not-allowed", "no pings today"))
        return true
      end)
      local low = function() seen[#seen + 1] = "low" end
      srv:hook("iq/self/jabber:iq:version", low, -100)        -- after the server's handler: never runs
      srv:hook("iq/bare/urn:xmpp:ping", function(ev)           -- someone's account, before the server's
        seen[#seen + 1] = "bare:" .. ev.bare
      end, 5)
      srv:hook("message/full", function(ev) seen[#seen + 1] = "full:" .. ev.resource end)
      local a = assert(serve.login(port, "alice", USERS.alice))
      local b = assert(serve.login(port, "bob", USERS.bob, "phone"))
      local _, _, cond = a:request(st.iq({ type = "get", to = "example.test" }):tag("ping", { xmlns = "urn:xmpp:ping" }))
      assert.equal("not-allowed", cond)
      assert(a:request(st.iq({ type = "get" }):tag("query", { xmlns = "jabber:iq:version" })))
      assert(a:request(st.iq({ type = "get", to = B }):tag("ping", { xmlns = "urn:xmpp:ping" })))
      local b_in = inbox(b)
      a:send_message(B .. "/phone", "hi", "chat")
      assert(got(b_in, 1))
      assert.same({ "host:" .. A .. "/r", "bare:" .. B, "full:phone" }, seen)
      assert.is_true(srv:unhook("iq/self/jabber:iq:version", low))
      assert.is_false(srv:unhook("iq/self/jabber:iq:version", low))
    end)
  end)

  it("fires pre-presence, presence and stanza/<xmlns>:<name> events", function()
    serve.run({ users = USERS }, function(srv, port)
      local seen = {}
      srv:hook("pre-presence/bare", function(ev) seen[#seen + 1] = "pre-presence/bare " .. ev.origin.full end)
      srv:hook("presence/full", function(ev)
        if ev.stanza.attr.from == A .. "/r" then seen[#seen + 1] = "presence/full " .. ev.resource end
      end)
      srv:hook("stanza/urn:example:top:hello", function(ev)
        seen[#seen + 1] = "stanza " .. ev.origin.full
        ev.origin:send(st.message({ to = ev.origin.full, type = "headline" }, "hello to you"))
        return true
      end)
      local b = assert(serve.login(port, "bob", USERS.bob, "b"))
      local a = assert(serve.login(port, "alice", USERS.alice))
      local a_in = inbox(a)
      a:send(st.presence({ to = B .. "/b" }))                 -- directed
      a:send_presence()
      -- a top-level element that is no stanza: without a handler, a stream error
      a.conn.c:write("<hello xmlns='urn:example:top'/>")
      assert(got(a_in, 1))
      assert.same({ "hello to you" }, bodies(a_in))
      assert(a:request(st.iq({ type = "get", to = "example.test" }):tag("ping", { xmlns = "urn:xmpp:ping" })))
      assert.same({ "presence/full b", "pre-presence/bare " .. A .. "/r", "stanza " .. A .. "/r" }, seen)
      assert(b)
    end)
  end)

  it("logs a failing handler: the IQ and the message get internal-server-error, the stream goes on", function()
    serve.run_logged({ users = USERS }, function(srv, port, log)
      srv:hook("iq/host/urn:example:boom", function() error("boom in an iq handler") end)
      srv:hook("pre-message/bare", function(ev)
        if ev.stanza:get_child_text("body") == "explode" then error("boom in a message filter") end
      end)
      local a, b = assert(serve.login(port, "alice", USERS.alice)), assert(serve.login(port, "bob", USERS.bob))
      b:send_presence()
      local b_in = inbox(b)
      local r, _, cond = a:request(st.iq({ type = "get", to = "example.test" }):tag("x", { xmlns = "urn:example:boom" }))
      assert.is_nil(r)
      assert.equal("internal-server-error", cond)
      assert(serve.until_true(function() return srv:session(B, "r") and srv:session(B, "r").available end))
      local bounced = {}
      a:on("message", function(m) if m.attr.type == "error" then bounced[#bounced + 1] = m end end)
      a:send_message(B, "explode", "chat")
      a:send_message(B, "after", "chat")
      assert(got(b_in, 1))
      assert.same({ "after" }, bodies(b_in))
      -- the sender is told the message was not delivered
      assert.truthy(serve.until_true(function() return #bounced == 1 end))
      assert.equal("internal-server-error", bounced[1]:get_child("error").tags[1].name)
      -- alice's stream is still up, and the server answers
      assert(a:request(st.iq({ type = "get", to = "example.test" }):tag("ping", { xmlns = "urn:xmpp:ping" })))
      assert.truthy(serve.logged(log, "^error a handler of iq/host/urn:example:boom failed: .*boom in an iq handler"))
      assert.truthy(serve.logged(log, "^error a handler of pre%-message/bare failed: .*boom in a message filter"))
      -- an event without a stanza goes on past a failing handler: the
      -- account is removed all the same, and later handlers still run
      local after = {}
      srv:hook("user-removing", function() error("boom in a removal handler") end, 50)
      srv:hook("user-removing", function(ev) after[#after + 1] = "removing " .. ev.bare end, -100)
      srv:hook("user-removed", function(ev) after[#after + 1] = "removed " .. ev.bare end, -100)
      assert(srv:remove_user("bob"))
      assert.same({ "removing " .. B, "removed " .. B }, after)
      assert.is_false(srv:user_exists("bob"))
      assert.truthy(serve.logged(log, "^error a handler of user%-removing failed: .*boom in a removal handler"))
    end)
  end)

  it("reads bound sessions through sessions_of, session and each_session", function()
    serve.run({ users = USERS }, function(srv, port)
      assert.same({}, srv:sessions_of(A))
      assert.has_error(function() srv:sessions_of(A).x = 1 end)
      local a1 = assert(serve.login(port, "alice", USERS.alice, "one"))
      assert(serve.login(port, "alice", USERS.alice, "two"))
      assert(serve.login(port, "bob", USERS.bob, "b"))
      local list = srv:sessions_of(A)
      assert.equal(A .. "/one", list.one.full)
      assert.equal(A .. "/two", list.two.full)
      assert.equal(list.one, srv:session(A .. "/one"))
      assert.equal(list.two, srv:session(A, "two"))
      assert.is_nil(srv:session(A .. "/three"))
      assert.is_nil(srv:session(A))
      local all = {}
      for s in srv:each_session() do all[#all + 1] = s.full end
      table.sort(all)
      assert.same({ A .. "/one", A .. "/two", B .. "/b" }, all)
      assert.equal(3, srv:stats().sessions)
      a1:close()
      assert(serve.until_true(function() return srv:session(A .. "/one") == nil end))
    end)
  end)
end)
