-- The client's side of client state indication (XEP-0352) against the
-- embedded server: c:set_active tells the server, which then holds back
-- presence; a server without CSI refuses it; and an inactive client says
-- so again after a reconnection, resumed (the stream resumption inside
-- SASL2 brings no stream features: Bind2's inline list tells CSI is there)
-- or not, since every stream starts active (§5.2); inside the Bind2
-- request (XEP-0386) when the server lists CSI among its inline features.
local lxmpp = require "lxmpp"
local st = lxmpp.stanza
local serve = require "spec.support.serve"
local slow = require("spec.support.slow").factor

local USERS = { alice = "alice-pw", bob = "bob-pw" }

-- alice's session ("r", or the one resource Bind2 made)
local function session_of(srv)
  local list = srv.sessions["alice@example.test"]
  if not list then return nil end
  if list.r then return list.r end
  local only
  for _, s in pairs(list) do
    if only then return nil end
    only = s
  end
  return only
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
  -- XEP-0386 §"Performing the bind": with Bind2 (and no stream to resume),
  -- the <inactive/> goes inside the <bind/> request; the session begins
  -- inactive and no separate nonza follows. The server's debug log
  -- records every element it reads ("IN ..."), nonzas too.
  it("says it is inactive inside the Bind2 request of a new session", function()
    serve.run_logged({ users = USERS, log_level = "debug" }, function(srv, port, log)
      local o = { bind2 = true, stream_management = false,
        reconnect = { delay = 0.05 * slow, max_delay = 0.1 * slow } }
      local a = assert(serve.login(port, "alice", USERS.alice, nil, o))
      local at_bind = {}
      a:on("reconnected", function(resumed)
        -- as soon as the client is back, before it could send anything
        -- else, the server's session is already inactive
        local s = session_of(srv)
        at_bind[#at_bind + 1] = { resumed = resumed, inactive = s ~= nil and s.csi ~= nil }
      end)
      assert.is_true(a:set_active(false))
      assert.truthy(inactive_on_server(srv))
      assert.truthy(serve.logged(log, "IN <inactive xmlns='urn:xmpp:csi:0'/>"))   -- the nonza of set_active
      for i = #log, 1, -1 do log[i] = nil end
      session_of(srv).conn:abort()
      assert.truthy(serve.until_true(function() return #at_bind == 1 end, 5 * slow))
      assert.same({ resumed = false, inactive = true }, at_bind[1])
      lxmpp.sleep(0.1 * slow)
      assert.truthy(serve.logged(log, "IN <authenticate"))
      assert.is_nil(serve.logged(log, "IN <inactive"))
      assert.is_false(a.csi.active)
      assert.truthy(inactive_on_server(srv))
      -- and active again with a nonza, as before
      assert.is_true(a:set_active(true))
      assert.truthy(serve.until_true(function() return session_of(srv).csi == nil end, 5 * slow))
      a:close()
    end)
  end)
end)
