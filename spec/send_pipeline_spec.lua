-- The way out of a session (lua/lxmpp/session.lua, "The way out"): one
-- c:send for clients and components, written once, in stages: "stanza-out"
-- handlers, ids, serialization, output (stream management, the
-- reconnection's queue, or the connection). Before, plugins/outgoing.lua
-- replaced each client's send with a wrapper at setup, reconnect.lua
-- defined another, and which ran first depended on load order.
local lxmpp = require "lxmpp"
local client = require "lxmpp.client"
local session = require "lxmpp.session"
local st = lxmpp.stanza
local serve = require "spec.support.serve"

local USERS = { alice = "alice-pw", bob = "bob-pw" }
local NS_MARK = "urn:example:mark"

describe("the send pipeline", function()
  it("is the session's one send method, never a per-client wrapper", function()
    local c = client.new({ jid = "alice@example.test/r", password = "pw" })
    assert.is_nil(rawget(c, "send"))
    assert.equal(session.Session.send, c.send)
    assert.equal(session.Session.send, client.Client.send)
    assert.has_error(function() c:send("<message/>") end, "send: expected a stanza")
  end)

  it("runs stanza-out handlers, then ids, then output: what the peer gets carries both", function()
    serve.run({ users = USERS }, function(_, port)
      local a = assert(serve.login(port, "alice", USERS.alice))
      local b = assert(serve.login(port, "bob", USERS.bob))
      b:send_presence()
      local inbox = serve.collect(b, "message")
      local seen = {}
      a.bus:add("stanza-out", function(s)
        -- the handler runs before the id is given and before serialization
        seen[#seen + 1] = s.name .. " " .. tostring(s.attr.id)
        if s.name == "message" then s:tag("mark", { xmlns = NS_MARK }):up() end
      end)
      local m = st.message({ to = "bob@example.test/r", type = "chat" }, "hi")
      assert(a:send(m))
      assert.is_string(m.attr.id)                 -- given by the pipeline
      assert.same({ "message nil" }, seen)
      assert.truthy(serve.until_true(function() return #inbox == 1 end))
      assert.truthy(inbox[1]:get_child("mark", NS_MARK))
      assert.equal(m.attr.id, inbox[1].attr.id)
      -- a request through the same path: its iq got an id, the handler saw it first
      assert(a:request(st.iq({ type = "get", to = "example.test" }):tag("ping", { xmlns = "urn:xmpp:ping" })))
      assert.equal("iq", seen[2]:match("^%a+"))
      a:close()
      b:close()
    end)
  end)

  it("goes through stream management when it is enabled: what is sent is counted and kept until acknowledged", function()
    serve.run({ users = USERS }, function(_, port)
      local a = assert(serve.login(port, "alice", USERS.alice))
      assert.is_true(a.sm.enabled)
      local before = a.sm:unacked()
      assert(a:send(st.message({ to = "bob@example.test", type = "chat" }, "counted")))
      assert.equal(before + 1, a.sm:unacked())
      assert.is_true(a.sm:wait_acked(5))
      assert.equal(0, a.sm:unacked())
      -- nothing left for the peer to read: wait_drain has nothing to wait for
      -- (it used to wait the whole timeout and report "timeout")
      assert.is_true(a:wait_drain(3))
      a:close()
    end)
  end)
end)
