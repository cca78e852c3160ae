-- Memory bounded in bytes: every per-account and per-session store of the
-- embedded server has a byte budget besides its count (docs/server.md,
-- "Limits"): offline messages (max_offline_bytes), the archive
-- (mam_max_bytes), a XEP-0198 queue (sm_queue_bytes) and the directed
-- presences of a session (max_directed). A MUC history entry larger than
-- the room's budget is not kept (spec/server_muc_spec.lua).
local serve = require "spec.support.serve"
local raw = require "spec.support.raw"

local USERS = { alice = "alice-pw", bob = "bob-pw" }
local D = serve.DOMAIN
local NS_SM = "urn:xmpp:sm:3"

local function chat(to, body, id)
  return ("<message type='chat' to='%s' id='%s'><body>%s</body></message>"):format(to, id, body)
end

-- The next stanza named `name` on r (others skipped), or nil.
local function next_named(r, name, timeout)
  for _ = 1, 200 do
    local s = r:stanza(timeout or 5)
    if not s then return nil end
    if s.name == name then return s end
  end
end

describe("embedded server: byte budgets", function()
  it("bounces an offline message once the account's stored ones reach max_offline_bytes", function()
    serve.run({ users = USERS, limits = { max_offline_bytes = 8000 } }, function(srv, port)
      local a = raw.login(port, serve.pki().ca, "alice", "alice-pw")
      local body = ("x"):rep(1000)
      for i = 1, 7 do a:send(chat("bob@" .. D, body, "m" .. i)) end
      local err = next_named(a, "message")
      assert.truthy(err, "no bounce")
      assert.equal("error", err.attr.type)
      local e = err:get_child("error")
      assert.equal("wait", e.attr.type)
      assert.truthy(e:get_child("resource-constraint", "urn:ietf:params:xml:ns:xmpp-stanzas"))
      local n, bytes = srv.store:count_offline("bob")
      assert.is_true(n >= 5 and n < 7, n .. " kept")
      assert.is_true(bytes <= 8000, bytes .. " bytes kept")
      -- what was kept is delivered, and then there is room again
      local c = assert(serve.login(port, "bob", "bob-pw", "r"))
      local got = 0
      c:on("message", function(m) if m:get_child_text("body") == body then got = got + 1 end end)
      c:send_presence()
      assert.truthy(serve.until_true(function() return got == n end, 5))
      c:close()
      assert.truthy(serve.until_true(function() return srv.store:count_offline("bob") == 0 end, 5))
      a:close()
    end)
  end)

  it("keeps an account's archive within mam_max_bytes, the oldest going first", function()
    serve.run({ users = USERS, limits = { mam_max_bytes = 20000 } }, function(srv, port)
      local a = raw.login(port, serve.pki().ca, "alice", "alice-pw")
      local body = ("y"):rep(1000)
      for i = 1, 40 do a:send(chat("bob@" .. D, body, "m" .. i)) end
      a:send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
      assert.truthy(next_named(a, "iq"))
      for _, user in ipairs({ "alice", "bob" }) do
        local page = assert(srv.store:archive_query(user, { max = 100 }))
        local bytes = 0
        for _, it in ipairs(page.items) do bytes = bytes + #it.data end
        assert.is_true(bytes <= 20000, user .. ": " .. bytes .. " bytes archived")
        assert.is_true(page.count >= 10 and page.count < 40, user .. ": " .. page.count .. " archived")
        assert.matches("id='m40'", page.items[#page.items].data)   -- the newest stays
      end
      a:close()
    end)
  end)

  it("ends a hibernating XEP-0198 session whose queue passes sm_queue_bytes, storing the rest offline", function()
    serve.run({ users = USERS, limits = { sm_queue_bytes = 20000, sm_timeout = 60 } }, function(srv, port)
      local b = raw.login(port, serve.pki().ca, "bob", "bob-pw", "r")
      b:send("<enable xmlns='" .. NS_SM .. "' resume='true'/>")
      assert.equal("enabled", next_named(b, "enabled").name)
      b:send("<presence/>")
      b:close()                                       -- gone without a word: hibernates
      assert.truthy(serve.until_true(function()
        local s = srv.sessions["bob@" .. D] and srv.sessions["bob@" .. D].r
        return s and s.hibernation ~= nil
      end, 5))
      local a = raw.login(port, serve.pki().ca, "alice", "alice-pw")
      local body = ("z"):rep(1000)
      -- 10 KB go into the queue; past 20 KB the session ends and the rest is stored
      for i = 1, 30 do a:send(chat("bob@" .. D .. "/r", body, "m" .. i)) end
      a:send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
      assert.truthy(next_named(a, "iq"))
      assert.truthy(serve.until_true(function() return srv.sessions["bob@" .. D] == nil end, 5))
      -- nothing lost: all 30 wait offline for bob's next session
      assert.truthy(serve.until_true(function() return srv.store:count_offline("bob") == 30 end, 5))
      a:close()
    end)
  end)

  it("holds back, and does not cut, a reading client whose unacknowledged stanzas pass sm_queue_bytes", function()
    serve.run({ users = USERS, limits = { sm_queue_bytes = 10000 } }, function(srv, port)
      local b = raw.login(port, serve.pki().ca, "bob", "bob-pw", "r")
      b:send("<enable xmlns='" .. NS_SM .. "'/>")
      assert.equal("enabled", next_named(b, "enabled").name)
      local a = raw.login(port, serve.pki().ca, "alice", "alice-pw")
      local body = ("w"):rep(1000)
      for i = 1, 30 do a:send(chat("bob@" .. D .. "/r", body, "m" .. i)) end
      -- bob reads but acknowledges nothing: about 10 KB come, then an <r/>
      local got, asked = 0, false
      for _ = 1, 60 do
        local s = b:stanza(1)
        if not s then break end
        if s.name == "message" then got = got + 1 elseif s.name == "r" then asked = true end
      end
      assert.is_true(asked)
      assert.is_true(got >= 9 and got <= 12, got .. " sent before an ack")
      b:send("<a xmlns='" .. NS_SM .. "' h='" .. got .. "'/>")   -- acknowledged: the rest comes
      for _ = 1, 200 do
        if got == 30 then break end
        local s = b:stanza(2)
        if not s then break end
        if s.name == "message" then
          got = got + 1
        elseif s.name == "r" then
          b:send("<a xmlns='" .. NS_SM .. "' h='" .. got .. "'/>")
        end
      end
      assert.equal(30, got)
      assert.truthy(srv.sessions["bob@" .. D], "bob was cut off")
      a:close()
      b:close()
    end)
  end)

  it("refuses directed presence past max_directed, and still tells those it reached when it leaves", function()
    serve.run({ users = USERS, limits = { max_directed = 3 } }, function(srv, port)
      local a = raw.login(port, serve.pki().ca, "alice", "alice-pw")
      for i = 1, 3 do a:send("<presence to='svc" .. i .. ".example.net'/>") end
      a:send("<presence to='svc4.example.net' id='over'/>")
      local err = next_named(a, "presence")
      assert.truthy(err)
      assert.same({ "error", "over" }, { err.attr.type, err.attr.id })
      assert.truthy(err:get_child("error"):get_child("resource-constraint", "urn:ietf:params:xml:ns:xmpp-stanzas"))
      local sess = srv.sessions["alice@" .. D].raw
      local n = 0
      for _ in pairs(sess.directed) do n = n + 1 end
      assert.equal(3, n)
      -- unavailable to one makes room for another
      a:send("<presence type='unavailable' to='svc1.example.net'/>")
      a:send("<presence to='svc4.example.net' id='now'/>")
      a:send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
      local s = next_named(a, "iq")
      assert.truthy(s)
      assert.truthy(sess.directed["svc4.example.net"])
      assert.is_nil(sess.directed["svc1.example.net"])
      a:close()
    end)
  end)

  it("documents every budget with its default", function()
    local f = assert(io.open("docs/server.md"))
    local doc = f:read("*a")
    f:close()
    local limits = require("lxmpp.server").DEFAULT_LIMITS
    for _, k in ipairs({ "max_offline_bytes", "mam_max_bytes", "sm_queue_bytes", "max_directed" }) do
      assert.truthy(doc:find("| `" .. k .. "` |", 1, true), k .. " is not in docs/server.md's table")
      assert.is_number(limits[k], k)
    end
  end)
end)
