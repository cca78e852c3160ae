-- Server-side stream management (XEP-0198) of the embedded server, in raw
-- bytes: enabling, counting both ways (32-bit, wrapping), ack requests,
-- strict h, handled-count-too-high, resumption with every unacknowledged
-- stanza sent again, resumption only by the session's own account, and
-- messages of a session nobody resumed going to offline storage.
local lxmpp = require "lxmpp"
local st = lxmpp.stanza
local serve = require "spec.support.serve"
local raw = require "spec.support.raw"

local USERS = { alice = "alice-pw", bob = "bob-pw", eve = "eve-pw" }
local NS = "urn:xmpp:sm:3"

local function login(port, user, bind)
  return raw.login(port, serve.pki().ca, user, USERS[user], bind)
end

local function enable(r)
  r:send("<enable xmlns='" .. NS .. "' resume='true'/>")
  local e = assert(r:stanza())
  assert.equal("enabled", e.name)
  return e.attr.id
end

-- Stanzas read until `n` of name arrived (SM elements kept aside).
local function read_until(r, name, n)
  local got, other = {}, {}
  while #got < n do
    local s = r:stanza()
    if not s then break end
    if s.name == name then got[#got + 1] = s else other[#other + 1] = s end
  end
  return got, other
end

describe("embedded server: stream management", function()
  it("advertises sm:3 after authentication, enables with resumption and answers <r/>", function()
    serve.run({ users = USERS }, function(_, port)
      local r = login(port, "alice")
      assert.truthy(r.features:get_child("sm", NS))
      local id = enable(r)
      assert.matches("^%x+$", id)
      r:send("<presence/><iq type='get' id='p' to='example.test'><ping xmlns='urn:xmpp:ping'/></iq>")
      r:send("<r xmlns='" .. NS .. "'/>")
      local a
      repeat a = assert(r:stanza()) until a.name == "a"
      assert.equal("2", a.attr.h)
      r:close()
    end)
  end)

  it("refuses enable before binding", function()
    serve.run({ users = USERS }, function(_, port)
      local r = login(port, "alice", false)
      r:send("<enable xmlns='" .. NS .. "'/>")
      local f = assert(r:stanza())
      assert.equal("failed", f.name)
      assert.truthy(f:get_child("unexpected-request", "urn:ietf:params:xml:ns:xmpp-stanzas"))
      r:close()
    end)
  end)

  it("asks for acks after a few stanzas, and drops what the client acknowledged", function()
    serve.run({ users = USERS }, function(srv, port)
      local r = login(port, "alice")
      enable(r)
      local b = assert(serve.login(port, "bob", "bob-pw"))
      for i = 1, 5 do b:send_message("alice@example.test/raw", "m" .. i) end
      local msgs, other = read_until(r, "message", 5)
      assert.equal(5, #msgs)
      local asked = other[1] and other[1].name == "r"
      if not asked then asked = (assert(r:stanza()).name == "r") end
      assert.is_true(asked)
      local sess = srv.sessions["alice@example.test"].raw
      assert.equal(5, sess.sm.q.n)
      r:send("<a xmlns='" .. NS .. "' h='3'/>")
      assert.truthy(serve.until_true(function() return sess.sm.q.n == 2 end))
      b:close()
      r:close()
    end)
  end)

  for _, h in ipairs({ "abc", "-1", "4294967296", "1e3", "" }) do
    it("an h of '" .. h .. "' is a stream error", function()
      serve.run({ users = USERS }, function(_, port)
        local r = login(port, "alice")
        enable(r)
        r:send("<a xmlns='" .. NS .. "' h='" .. h .. "'/>")
        assert.equal("bad-format", (r:stream_error()))
      end)
    end)
  end

  it("an ack for more than was sent ends the stream with handled-count-too-high", function()
    serve.run({ users = USERS }, function(_, port)
      local r = login(port, "alice")
      enable(r)
      r:send("<a xmlns='" .. NS .. "' h='7'/>")
      local e
      repeat e = r:stanza() until not e or e.name == "error"
      assert.truthy(e)
      local too_high = e:get_child("handled-count-too-high", NS)
      assert.truthy(too_high)
      -- the h received and what was really sent (XEP-0198 §4)
      assert.same({ "7", "0" }, { too_high.attr.h, too_high.attr["send-count"] })
      assert.truthy(e:get_child("undefined-condition", raw.NS_ERRORS))
    end)
  end)

  it("counters wrap at 2^32", function()
    serve.run({ users = USERS }, function(srv, port)
      local r = login(port, "alice")
      enable(r)
      local sess = srv.sessions["alice@example.test"].raw
      sess.sm.acked = 4294967294                -- as if 2^32 - 2 stanzas had been acknowledged
      sess.sm.handled = 4294967295
      local b = assert(serve.login(port, "bob", "bob-pw"))
      b:send_message("alice@example.test/raw", "one")
      b:send_message("alice@example.test/raw", "two")
      read_until(r, "message", 2)
      r:send("<a xmlns='" .. NS .. "' h='0'/>")      -- 2^32 - 2 + 2, wrapped
      assert.truthy(serve.until_true(function() return sess.sm.q.n == 0 end))
      r:send("<presence/><r xmlns='" .. NS .. "'/>")
      local a
      repeat a = assert(r:stanza()) until a.name == "a"
      assert.equal("0", a.attr.h)
      b:close()
      r:close()
    end)
  end)

  it("resumes a dropped session and sends every unacknowledged stanza again", function()
    serve.run({ users = USERS }, function(srv, port)
      local b = assert(serve.login(port, "bob", "bob-pw"))
      local r = login(port, "alice")
      local id = enable(r)
      r:send("<presence/>")
      b:send_message("alice@example.test/raw", "before")
      read_until(r, "message", 1)
      r:close()                                 -- the link dies, nothing acknowledged
      assert.truthy(serve.until_true(function()
        local s = srv.sessions["alice@example.test"].raw
        return s and s.hibernation ~= nil
      end))
      b:send_message("alice@example.test/raw", "during")
      b:send(st.message({ to = "alice@example.test", type = "chat" }, "to the bare JID"))
      lxmpp.sleep(0.1)
      local r2 = login(port, "alice", false)
      r2:send("<resume xmlns='" .. NS .. "' previd='" .. id .. "' h='0'/>")
      local resumed = assert(r2:stanza())
      assert.equal("resumed", resumed.name)
      assert.equal(id, resumed.attr.previd)
      assert.equal("1", resumed.attr.h)          -- it had handled our <presence/>
      local msgs = read_until(r2, "message", 3)
      local bodies = {}
      for _, m in ipairs(msgs) do bodies[#bodies + 1] = m:get_child_text("body") end
      assert.same({ "before", "during", "to the bare JID" }, bodies)
      -- the session works on: a new message arrives on the new stream
      b:send_message("alice@example.test/raw", "after")
      local more = read_until(r2, "message", 1)
      assert.equal("after", more[1]:get_child_text("body"))
      b:close()
      r2:close()
    end)
  end)

  it("lets only the session's own account resume it", function()
    serve.run({ users = USERS }, function(_, port)
      local r = login(port, "alice")
      local id = enable(r)
      r:close()
      lxmpp.sleep(0.1)
      local e = login(port, "eve", false)
      e:send("<resume xmlns='" .. NS .. "' previd='" .. id .. "' h='0'/>")
      local f = assert(e:stanza())
      assert.equal("failed", f.name)
      assert.truthy(f:get_child("item-not-found", "urn:ietf:params:xml:ns:xmpp-stanzas"))
      e:close()
    end)
  end)

  it("holds a burst back beyond sm_queue and sends it on as acks arrive", function()
    serve.run({ users = USERS, limits = { sm_queue = 10 } }, function(srv, port)
      local r = login(port, "alice")
      enable(r)
      local b = assert(serve.login(port, "bob", "bob-pw"))
      for i = 1, 25 do b:send_message("alice@example.test/raw", "m" .. i) end
      local sess = srv.sessions["alice@example.test"].raw
      assert.truthy(serve.until_true(function() return sess.sm.held.n == 15 end))
      local bodies = {}
      local function take(n)
        for _, m in ipairs((read_until(r, "message", n))) do bodies[#bodies + 1] = m:get_child_text("body") end
      end
      take(10)
      -- nothing more until we acknowledge
      local extra = r:stanza(0.3)
      assert.is_true(extra == nil or extra.name == "r")
      assert.equal(10, sess.sm.q.n)
      r:send("<a xmlns='" .. NS .. "' h='10'/>")
      take(10)
      r:send("<a xmlns='" .. NS .. "' h='20'/>")
      take(5)
      local want = {}
      for i = 1, 25 do want[i] = "m" .. i end
      assert.same(want, bodies)
      r:send("<a xmlns='" .. NS .. "' h='25'/>")
      assert.truthy(serve.until_true(function() return sess.sm.q.n == 0 and sess.sm.held.n == 0 end))
      assert.is_falsy(sess.ended)
      b:close()
      r:close()
    end)
  end)

  it("ends a session that acknowledges nothing once four sm_queues wait, keeping the messages offline", function()
    serve.run({ users = USERS, limits = { sm_queue = 5 } }, function(srv, port)
      local r = login(port, "alice")
      enable(r)
      local b = assert(serve.login(port, "bob", "bob-pw"))
      for i = 1, 21 do b:send_message("alice@example.test/raw", "m" .. i) end
      assert.equal("resource-constraint", (r:stream_error()))
      assert.truthy(serve.until_true(function() return srv.sessions["alice@example.test"] == nil end))
      -- 5 sent and unacknowledged, 15 held back, the 21st: all kept
      assert.equal(21, srv.store:count_offline("alice"))
      b:close()
    end)
  end)

  it("stores the unacknowledged messages offline when nobody resumes in time", function()
    serve.run({ users = USERS, limits = { sm_timeout = 0.3 } }, function(srv, port)
      local b = assert(serve.login(port, "bob", "bob-pw"))
      local r = login(port, "alice")
      enable(r)
      r:send("<presence/>")
      b:send_message("alice@example.test/raw", "unacknowledged")
      read_until(r, "message", 1)
      r:close()
      assert.truthy(serve.until_true(function() return srv.sessions["alice@example.test"] == nil end))
      assert.equal(1, srv.store:count_offline("alice"))
      local a = assert(serve.login(port, "alice", "alice-pw", "later"))
      local got = serve.collect(a, "message")
      a:send_presence()
      assert.truthy(serve.until_true(function() return #got == 1 end))
      assert.equal("unacknowledged", got[1]:get_child_text("body"))
      a:close()
      b:close()
    end)
  end)

  it("stores an offline message it sent unacknowledged back with its first delay only (XEP-0203)", function()
    serve.run({ users = USERS, limits = { sm_timeout = 0.3 } }, function(srv, port)
      local b = assert(serve.login(port, "bob", "bob-pw"))
      b:send_message("alice@example.test", "while you were away")
      assert.truthy(serve.until_true(function() return srv.store:count_offline("alice") == 1 end))
      local first = srv.store:get_offline("alice")[1].data
      local r = login(port, "alice")
      enable(r)
      r:send("<presence/>")
      local got = read_until(r, "message", 1)
      local delays = {}
      for d in got[1]:childtags("delay", "urn:xmpp:delay") do delays[#delays + 1] = d.attr.stamp end
      assert.equal(1, #delays)
      r:close()                                   -- nothing acknowledged, nobody resumes
      assert.truthy(serve.until_true(function()
        return srv.sessions["alice@example.test"] == nil and srv.store:count_offline("alice") == 1
      end))
      local again = srv.store:get_offline("alice")[1].data
      local el = assert(st.parse(again))
      local stamps = {}
      for d in el:childtags("delay", "urn:xmpp:delay") do stamps[#stamps + 1] = d.attr.stamp end
      assert.same(delays, stamps, again .. " (first stored as " .. first .. ")")
      b:close()
    end)
  end)
end)
