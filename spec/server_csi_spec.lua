-- Client State Indication (XEP-0352) on the embedded server, from raw
-- clients: the feature offered only once authenticated (and not with
-- csi = false), presence (newest per sender) and chat states held back
-- while inactive, an urgent stanza sending what was held first, <active/>
-- sending it before what follows it is answered (§5.1), the bounded queue,
-- stream management counting only what was sent and resuming with what
-- was held, and Bind2's inline <inactive/>.
local lxmpp = require "lxmpp"
local st = lxmpp.stanza
local serve = require "spec.support.serve"
local raw = require "spec.support.raw"
local sasl2 = require "spec.support.sasl2"
local slow = require("spec.support.slow").factor

local USERS = { alice = "alice-pw", bob = "bob-pw" }
local NS = "urn:xmpp:csi:0"
local NS_SM = "urn:xmpp:sm:3"
local NS_CS = "http://jabber.org/protocol/chatstates"
local ALICE = "alice@example.test/raw"

local function login(port, bind)
  return raw.login(port, serve.pki().ca, "alice", USERS.alice, bind)
end

local function session_of(srv)
  local list = srv.sessions["alice@example.test"]
  return list and list.raw
end

-- bob's stanzas to alice's raw session
local function presence(b, status)
  return b:send(st.presence({ to = ALICE }):text_tag("status", status))
end
local function chat_state(b, id, state)
  return b:send(st.message({ to = ALICE, type = "chat", id = id }):tag(state or "composing", { xmlns = NS_CS }))
end

-- Waits until alice's session holds n stanzas back.
local function held(srv, n)
  return serve.until_true(function()
    local s = session_of(srv)
    return s and s.csi and s.csi.n == n
  end, 5 * slow)
end

-- A short name for each stanza read: "presence:status", "composing:id",
-- "message:body", "iq:id".
local function label(s)
  if s.name == "presence" then return "presence:" .. tostring(s:get_child_text("status")) end
  if s.name == "message" then
    local b = s:get_child_text("body")
    if b then return "message:" .. b end
    local c = s.tags[1]
    return (c and c.name or "?") .. ":" .. tostring(s.attr.id)
  end
  return s.name .. ":" .. tostring(s.attr.id)
end

-- Labels of the stanzas read until `last` (a label) came.
local function read_until(r, last)
  local out = {}
  repeat
    local s = assert(r:stanza(5 * slow), "expected " .. last .. " after " .. table.concat(out, " "))
    if s.attr.xmlns ~= NS_SM then out[#out + 1] = label(s) end
  until out[#out] == last
  return out
end

describe("embedded server: client state indication (XEP-0352)", function()
  it("offers csi only once the client is authenticated", function()
    serve.run({ users = USERS }, function(_, port)
      local r = raw.connect(port)
      local f = r:negotiate_tls(serve.pki().ca)
      assert.is_nil(f:get_child("csi", NS))
      r:send("<inactive xmlns='" .. NS .. "'/>")
      assert.equal("unsupported-stanza-type", (r:stream_error()))
      r:close()
      local a = login(port, false)
      assert.truthy(a.features:get_child("csi", NS))
      a:send("<inactive xmlns='" .. NS .. "'/><active xmlns='" .. NS .. "'/>")
      a:send("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
      assert.equal("result", assert(a:stanza()).attr.type)    -- no answer to the nonzas (§4.2)
      a:close()
    end)
  end)

  it("is neither offered nor accepted with csi = false", function()
    serve.run({ users = USERS, csi = false }, function(_, port)
      local r = login(port)
      assert.is_nil(r.features:get_child("csi", NS))
      r:send("<inactive xmlns='" .. NS .. "'/>")
      assert.equal("unsupported-stanza-type", (r:stream_error()))
      r:close()
      local r2, f = sasl2.open(port)
      local b = f:get_child("authentication", sasl2.NS):get_child("inline"):get_child("bind", "urn:xmpp:bind:0")
      for feat in b:get_child("inline"):childtags("feature") do assert.not_equal(NS, feat.attr.var) end
      r2:close()
    end)
  end)

  it("ends the stream on an element of the namespace that is no nonza", function()
    serve.run({ users = USERS }, function(_, port)
      local r = login(port)
      r:send("<csi xmlns='" .. NS .. "'/>")
      assert.equal("unsupported-stanza-type", (r:stream_error()))
      r:close()
    end)
  end)

  it("holds presence (the newest per sender) and chat states, and sends them before a message", function()
    serve.run({ users = USERS }, function(srv, port)
      local r = login(port)
      local b = assert(serve.login(port, "bob", USERS.bob))
      r:send("<inactive xmlns='" .. NS .. "'/>")
      assert.truthy(serve.until_true(function() return session_of(srv).csi ~= nil end))
      presence(b, "one")
      chat_state(b, "c1")
      presence(b, "two")                    -- replaces "one", and comes after c1
      chat_state(b, "c2", "paused")
      b:send(st.message({ to = ALICE, type = "chat", id = "r1" }):tag("received", { xmlns = "urn:xmpp:receipts",
        id = "x" }))
      assert.truthy(held(srv, 4))
      assert.is_nil(r:stanza(0.2 * slow))
      b:send_message(ALICE, "hello")
      assert.same({ "composing:c1", "presence:two", "paused:c2", "received:r1", "message:hello" },
        read_until(r, "message:hello"))
      assert.equal(0, session_of(srv).csi.n)   -- still inactive, nothing held
      -- errors do not wait, even without a body
      chat_state(b, "c3")
      assert.truthy(held(srv, 1))
      b:send(st.message({ to = ALICE, type = "error", id = "e1" }):tag("error", { type = "cancel" })
        :tag("item-not-found", { xmlns = "urn:ietf:params:xml:ns:xmpp-stanzas" }))
      assert.same({ "composing:c3", "error:e1" }, read_until(r, "error:e1"))
      b:close()
      r:close()
    end)
  end)

  it("sends what was held on <active/>, before answering what follows (§5.1)", function()
    serve.run({ users = USERS }, function(srv, port)
      local r = login(port)
      local b = assert(serve.login(port, "bob", USERS.bob))
      r:send("<inactive xmlns='" .. NS .. "'/>")
      assert.truthy(serve.until_true(function() return session_of(srv).csi ~= nil end))
      chat_state(b, "c1")
      presence(b, "away")
      assert.truthy(held(srv, 2))
      r:send("<active xmlns='" .. NS .. "'/><iq type='get' id='ping' to='example.test'>" ..
        "<ping xmlns='urn:xmpp:ping'/></iq>")
      assert.same({ "composing:c1", "presence:away", "iq:ping" }, read_until(r, "iq:ping"))
      assert.is_nil(session_of(srv).csi)
      chat_state(b, "c2")                     -- active: at once
      assert.same({ "composing:c2" }, read_until(r, "composing:c2"))
      b:close()
      r:close()
    end)
  end)

  it("an IQ while inactive goes out at once, after what was held", function()
    serve.run({ users = USERS }, function(srv, port)
      local r = login(port)
      local b = assert(serve.login(port, "bob", USERS.bob))
      r:send("<inactive xmlns='" .. NS .. "'/>")
      assert.truthy(serve.until_true(function() return session_of(srv).csi ~= nil end))
      presence(b, "p")
      assert.truthy(held(srv, 1))
      r:send("<iq type='get' id='ping' to='example.test'><ping xmlns='urn:xmpp:ping'/></iq>")
      assert.same({ "presence:p", "iq:ping" }, read_until(r, "iq:ping"))
      b:close()
      r:close()
    end)
  end)

  it("bounds what it holds: beyond limits.csi_queue everything goes out, in order", function()
    serve.run({ users = USERS, limits = { csi_queue = 3 } }, function(srv, port)
      local r = login(port)
      local b = assert(serve.login(port, "bob", USERS.bob))
      r:send("<inactive xmlns='" .. NS .. "'/>")
      assert.truthy(serve.until_true(function() return session_of(srv).csi ~= nil end))
      for i = 1, 3 do chat_state(b, "c" .. i) end
      assert.truthy(held(srv, 3))
      assert.is_nil(r:stanza(0.2 * slow))
      chat_state(b, "c4")
      assert.same({ "composing:c1", "composing:c2", "composing:c3", "composing:c4" },
        read_until(r, "composing:c4"))
      assert.truthy(held(srv, 0))
      -- a sender changing its status without end: one presence held, and
      -- the queue's slots stay bounded
      for i = 1, 200 do presence(b, "s" .. i) end
      assert.truthy(serve.until_true(function()
        local q = session_of(srv).csi
        return q.n == 1 and q.slots[q.last] and q.slots[q.last][1]:get_child_text("status") == "s200"
      end, 5 * slow))
      local q = session_of(srv).csi
      assert.truthy(q.last - q.first + 1 <= 2 * 3 + 1)
      assert.is_nil(r:stanza(0.1 * slow))
      b:send_message(ALICE, "flush")
      assert.same({ "presence:s200", "message:flush" }, read_until(r, "message:flush"))
      b:close()
      r:close()
    end)
  end)

  it("does not count held stanzas for XEP-0198, and a resumed stream gets them, active again (§5.2)", function()
    serve.run({ users = USERS }, function(srv, port)
      local r = login(port)
      local b = assert(serve.login(port, "bob", USERS.bob))
      r:send("<enable xmlns='" .. NS_SM .. "' resume='true'/>")
      local e = assert(r:stanza())
      assert.equal("enabled", e.name)
      local id = e.attr.id
      r:send("<inactive xmlns='" .. NS .. "'/>")
      assert.truthy(serve.until_true(function() return session_of(srv).csi ~= nil end))
      presence(b, "p1")
      chat_state(b, "c1")
      assert.truthy(held(srv, 2))
      local sess = session_of(srv)
      assert.equal(0, sess.sm.q.n)              -- not sent: not counted
      b:send_message(ALICE, "m1")
      assert.same({ "presence:p1", "composing:c1", "message:m1" }, read_until(r, "message:m1"))
      assert.equal(3, sess.sm.q.n)
      r:send("<a xmlns='" .. NS_SM .. "' h='3'/>")
      assert.truthy(serve.until_true(function() return sess.sm.q.n == 0 end))
      presence(b, "p2")
      assert.truthy(held(srv, 1))
      assert.equal(0, sess.sm.q.n)
      r:close()                                 -- the link dies with p2 held
      assert.truthy(serve.until_true(function() return sess.hibernation ~= nil end))
      assert.is_nil(sess.csi)
      assert.equal(1, sess.sm.q.n)              -- p2 waits for the resumption
      local r2 = login(port, false)
      r2:send("<resume xmlns='" .. NS_SM .. "' previd='" .. id .. "' h='3'/>")
      local resumed = assert(r2:stanza())
      assert.equal("resumed", resumed.name)
      assert.same({ "presence:p2" }, read_until(r2, "presence:p2"))
      local sess2 = session_of(srv)
      assert.is_nil(sess2.csi)                  -- a resumed stream starts active
      chat_state(b, "c2")
      assert.same({ "composing:c2" }, read_until(r2, "composing:c2"))
      r2:send("<a xmlns='" .. NS_SM .. "' h='5'/><r xmlns='" .. NS_SM .. "'/>")
      local a
      repeat a = assert(r2:stanza()) until a.name == "a"
      assert.equal(0, sess2.sm.q.n)             -- h = 5 was right: the server counted p2 and c2
      assert.is_false(sess2.ended)
      b:close()
      r2:close()
    end)
  end)

  it("calls urgent exactly what may not wait", function()
    local csi = require "lxmpp.server.csi"
    local function m(attr) return st.message(attr) end
    local urgent = {
      st.iq({ type = "result", id = "1" }),
      st.presence({ type = "subscribe" }), st.presence({ type = "unsubscribed" }), st.presence({ type = "error" }),
      st.message({}, "body"), m({ type = "groupchat" }):text_tag("subject", "topic"),
      m({}):tag("x", { xmlns = "jabber:x:conference", jid = "room@muc" }):up(),
      m({}):tag("encrypted", { xmlns = "eu.siacs.conversations.axolotl" }):up(),
      m({}):tag("event", { xmlns = "http://jabber.org/protocol/pubsub#event" }):up(),
      m({ type = "error" }):tag("composing", { xmlns = NS_CS }):up(),
    }
    for i, s in ipairs(urgent) do assert.is_true(csi.urgent(s), "urgent #" .. i .. ": " .. tostring(s)) end
    local can_wait = {
      st.presence({}), st.presence({ type = "unavailable" }),
      m({ type = "chat" }):tag("composing", { xmlns = NS_CS }):up():text_tag("thread", "t"),
      m({}):tag("received", { xmlns = "urn:xmpp:receipts", id = "x" }):up(),
      m({}):tag("displayed", { xmlns = "urn:xmpp:chat-markers:0", id = "x" }):up()
        :tag("store", { xmlns = "urn:xmpp:hints" }):up(),
    }
    for i, s in ipairs(can_wait) do assert.is_false(csi.urgent(s), "can wait #" .. i .. ": " .. tostring(s)) end
  end)

  it("takes Bind2's inline <inactive/> and lists csi among Bind2's inline features", function()
    serve.run({ users = USERS }, function(srv, port)
      local r, f = sasl2.open(port)
      local bind = f:get_child("authentication", sasl2.NS):get_child("inline"):get_child("bind", "urn:xmpp:bind:0")
      local vars = {}
      for feat in bind:get_child("inline"):childtags("feature") do vars[feat.attr.var] = true end
      assert.is_true(vars[NS])
      local s = sasl2.auth2(r, { inline = "<bind xmlns='urn:xmpp:bind:0'><tag>raw</tag><inactive xmlns='" ..
        NS .. "'/></bind>" })
      assert.equal("success", s.name)
      local full = s:get_child_text("authorization-identifier")
      local features = assert(r:stanza())
      assert.equal("features", features.name)
      assert.truthy(features:get_child("csi", NS))
      local sess = srv:session(full)
      assert.truthy(sess and sess.csi)
      local b = assert(serve.login(port, "bob", USERS.bob))
      b:send(st.presence({ to = full }):text_tag("status", "held"))
      assert.truthy(serve.until_true(function() return sess.csi.n == 1 end, 5 * slow))
      assert.is_nil(r:stanza(0.2 * slow))
      b:send_message(full, "now")
      assert.same({ "presence:held", "message:now" }, read_until(r, "message:now"))
      b:close()
      r:close()
    end)
  end)
end)
