-- The client's side of client state indication (XEP-0352) against the
-- embedded server: c:set_active tells the server, which then holds back
-- presence; a server without CSI refuses it; and an inactive client says
-- so again after a reconnection, resumed (the stream resumption inside
-- SASL2 brings no stream features: Bind2's inline list tells CSI is there)
-- or not, since every stream starts active (§5.2).
local lxmpp = require "lxmpp"
local st = lxmpp.stanza
local serve = require "spec.support.serve"
local slow = require("spec.support.slow").factor

local USERS = { alice = "alice-pw", bob = "bob-pw" }

local function session_of(srv)
  local list = srv.sessions["alice@example.test"]
  return list and list.r
end

local function inactive_on_server(srv)
  return serve.until_true(function()
    local s = session_of(srv)
    return s ~= nil and s.csi ~= nil and not s.ended
  end, 5 * slow)
end

describe("client state indication (XEP-0352), client side", function()
  it("tells the server, which holds presence back until the client is active again", function()
    serve.run({ users = USERS }, function(srv, port)
      local a = assert(serve.login(port, "alice", USERS.alice))
      local b = assert(serve.login(port, "bob", USERS.bob))
      assert.is_true(a.csi.active)
      assert.is_true(a:set_active(false))
      assert.is_false(a.csi.active)
      assert.truthy(inactive_on_server(srv))
      local got = {}
      a:on("presence", function(p) got[#got + 1] = p:get_child_text("status") end)
      b:send(st.presence({ to = a.jid }):text_tag("status", "later"))
      assert.truthy(serve.until_true(function() return session_of(srv).csi.n == 1 end, 5 * slow))
      lxmpp.sleep(0.1 * slow)
      assert.same({}, got)
      assert.is_true(a:set_active(true))
      assert.truthy(serve.until_true(function() return got[1] == "later" end, 5 * slow))
      assert.is_nil(session_of(srv).csi)
      assert.has_error(function() a:set_active("no") end, "set_active: expected a boolean")
      a:close()
      b:close()
    end)
  end)

  it("refuses when the server does not offer CSI", function()
    serve.run({ users = USERS, csi = false }, function(srv, port)
      local a = assert(serve.login(port, "alice", USERS.alice))
      local ok, msg, cond = a:set_active(false)
      assert.is_nil(ok)
      assert.matches("does not offer client state indication", msg)
      assert.equal("feature-not-implemented", cond)
      assert.is_true(a.csi.active)
      assert.is_nil(session_of(srv).csi)
      assert.is_false(session_of(srv).ended)      -- nothing was sent that would end the stream
      a:close()
    end)
  end)

  for _, case in ipairs({
    { name = "a resumed stream (SASL2 inline resumption)", opts = {}, resumed = true },
    { name = "a resumed stream (classic SASL)", opts = { sasl2 = false }, resumed = true },
    { name = "a new session (no stream management)", opts = { stream_management = false }, resumed = false },
  }) do
    it("says it is inactive again on " .. case.name, function()
      serve.run({ users = USERS }, function(srv, port)
        local o = { reconnect = { delay = 0.05 * slow, max_delay = 0.1 * slow } }
        for k, v in pairs(case.opts) do o[k] = v end
        local a = assert(serve.login(port, "alice", USERS.alice, nil, o))
        local back = {}
        a:on("reconnected", function(resumed) back[#back + 1] = resumed end)
        assert.is_true(a:set_active(false))
        assert.truthy(inactive_on_server(srv))
        local old = session_of(srv)
        old.conn:abort()                          -- the link dies
        assert.truthy(serve.until_true(function() return #back == 1 end, 5 * slow))
        assert.equal(case.resumed, back[1])
        assert.truthy(inactive_on_server(srv))
        assert.is_false(a.csi.active)
        assert.is_true(a:set_active(true))
        assert.truthy(serve.until_true(function() return session_of(srv).csi == nil end, 5 * slow))
        a:close()
      end)
    end)
  end
end)
