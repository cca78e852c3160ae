-- Bind2 (XEP-0386) and inline stream resumption (XEP-0198 §"SASL2 And
-- BIND2 Interaction") on the embedded server, from a raw SASL2 client:
-- the inline features advertised, the resource (tag, sanitised, and a
-- part derived from the user-agent id: one installation, one resource,
-- its earlier session replaced whatever its tag), carbons and SM enabled in the same round
-- trip, a resumed session in <success/> with its queue sent again and no
-- features, a failed resumption reported inside <success/> while Bind2
-- still binds, and stanzas a host sends at bind time kept until after
-- <success/>; the account archive's XEP-0313 metadata in <bound/>.
local lxmpp = require "lxmpp"
local st = lxmpp.stanza
local serve = require "spec.support.serve"
local raw = require "spec.support.raw"
local sasl2 = require "spec.support.sasl2"
local slow = require("spec.support.slow").factor

local USERS = sasl2.USERS
local NS_BIND2 = "urn:xmpp:bind:0"
local NS_SM = "urn:xmpp:sm:3"
local NS_MAM = "urn:xmpp:mam:2"
local UA2 = "0b9e1d3c-5a7f-4e2b-8c6d-abcdefabcdef"

local function bind_xml(tag, extra)
  return "<bind xmlns='" .. NS_BIND2 .. "'>" .. (tag and ("<tag>" .. tag .. "</tag>") or "") .. (extra or "") .. "</bind>"
end

-- SASL2 with Bind2 (o.tag, o.extra inside <bind/>, o.ua): the <success/>.
local function login2(port, o)
  o = o or {}
  local r = sasl2.open(port)
  local s = sasl2.auth2(r, { user = o.user, ua = o.ua, inline = (o.inline or "") .. bind_xml(o.tag, o.extra) })
  assert.equal("success", s.name)
  return r, s
end

local function resource_of(s)
  return s:get_child_text("authorization-identifier"):match("/(.*)$")
end

-- Stanzas read until one named `name` arrived: it, and those before it.
local function read_until(r, name)
  local before = {}
  while true do
    local s = r:stanza()
    if not s then return nil, before end
    if s.name == name then return s, before end
    before[#before + 1] = s
  end
end

describe("embedded server: Bind2 (XEP-0386)", function()
  it("is advertised inside SASL2's <inline/>, with carbons, SM and CSI, and SM resumption beside it", function()
    serve.run({ users = USERS }, function(_, port)
      local r, f = sasl2.open(port)
      local inline = f:get_child("authentication", sasl2.NS):get_child("inline")
      local b = assert(inline:get_child("bind", NS_BIND2))
      local vars = {}
      for feat in b:get_child("inline"):childtags("feature") do vars[#vars + 1] = feat.attr.var end
      assert.same({ "urn:xmpp:carbons:2", NS_SM, "urn:xmpp:csi:0" }, vars)
      assert.truthy(inline:get_child("sm", NS_SM))
      r:close()
    end)
  end)

  it("binds tag.<id part>, the same for the same user-agent, replacing the stale session", function()
    serve.run({ users = USERS }, function(srv, port)
      local r1, s1 = login2(port, { tag = "AwesomeXMPP" })
      local res = resource_of(s1)
      assert.matches("^AwesomeXMPP%.%x+$", res)
      local bound = s1:get_child("bound", NS_BIND2)
      assert.truthy(bound)
      -- features follow (no restart), without resource binding now
      local f = assert(r1:stanza())
      assert.equal("features", f.name)
      assert.is_nil(f:get_child("bind", "urn:ietf:params:xml:ns:xmpp-bind"))
      -- bound: stanzas are routed with the full JID
      assert.truthy(srv:session("alice@example.test", res))
      r1:send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
      local pong = assert(r1:stanza())
      assert.equal("result", pong.attr.type)
      -- the same installation again: the same resource, the old stream gets conflict
      local r2, s2 = login2(port, { tag = "AwesomeXMPP" })
      assert.equal(res, resource_of(s2))
      assert.equal("conflict", (r1:stream_error()))
      -- another installation: another resource, and r2 stays
      local r3, s3 = login2(port, { tag = "AwesomeXMPP", ua = UA2 })
      assert.not_equal(res, resource_of(s3))
      -- the same installation with another tag: another resource, the same
      -- id part, and the installation's earlier session (r2) ends
      local r4, s4 = login2(port, { tag = "Other" })
      assert.matches("^Other%.", resource_of(s4))
      assert.equal(res:match("%.(.*)$"), resource_of(s4):match("%.(.*)$"))
      assert.equal("conflict", (r2:stream_error()))
      assert.truthy(srv:session("alice@example.test", resource_of(s3)))
      -- another account with the same user-agent id: not the same id part
      local r5, s5 = login2(port, { user = "bob", tag = "AwesomeXMPP" })
      assert.not_equal(res, resource_of(s5))
      for _, r in ipairs({ r2, r3, r4, r5 }) do r:close() end
    end)
  end)

  it("sanitises the tag, and makes a random resource without a user-agent id", function()
    serve.run({ users = USERS }, function(_, port)
      local r1, s1 = login2(port, { tag = "my client/1 &amp; more" .. ("x"):rep(100), ua = false })
      local res1 = resource_of(s1)
      assert.matches("^myclient1more" .. ("x"):rep(19) .. "%.%x+$", res1)
      local r2, s2 = login2(port, { ua = false })
      local r3, s3 = login2(port, { ua = false })
      assert.matches("^lx%x+$", resource_of(s2))
      assert.not_equal(resource_of(s2), resource_of(s3))
      for _, r in ipairs({ r1, r2, r3 }) do r:close() end
    end)
  end)

  it("enables carbons and stream management inline: <enabled/> inside <bound/>", function()
    serve.run({ users = USERS }, function(srv, port)
      local r, s = login2(port, { tag = "t", extra = "<enable xmlns='urn:xmpp:carbons:2'/><enable xmlns='" .. NS_SM ..
        "' resume='true'/>" })
      local enabled = s:get_child("bound", NS_BIND2):get_child("enabled", NS_SM)
      assert.truthy(enabled)
      assert.equal("true", enabled.attr.resume)
      assert.truthy(enabled.attr.id)
      local sess = srv:session("alice@example.test", resource_of(s))
      assert.is_true(sess.carbons)
      assert.truthy(sess.sm)
      assert.equal("features", assert(r:stanza()).name)
      r:send("<r xmlns='" .. NS_SM .. "'/>")
      local a = assert(r:stanza())
      assert.equal("a", a.name)
      assert.equal("0", a.attr.h)
      r:close()
      -- without the enables: neither
      local r2, s2 = login2(port, { tag = "u" })
      assert.is_nil(s2:get_child("bound", NS_BIND2):get_child("enabled", NS_SM))
      local sess2 = srv:session("alice@example.test", resource_of(s2))
      assert.is_nil(sess2.carbons)
      assert.is_nil(sess2.sm)
      r2:close()
    end)
  end)

  -- XEP-0386 §"Performing the bind": <bound/> tells the archive's first
  -- and last entries (XEP-0313 §"Archive metadata"), an empty <metadata/>
  -- for an empty archive, and nothing without account archives
  it("puts the archive's metadata in <bound/>: empty, then its first and last entries", function()
    serve.run({ users = USERS }, function(srv, port)
      local r1, s1 = login2(port, { tag = "t", extra = "<enable xmlns='" .. NS_SM .. "'/>" })
      local bound = s1:get_child("bound", NS_BIND2)
      local md = assert(bound:get_child("metadata", NS_MAM))
      assert.same({}, md.tags)
      assert.truthy(bound:get_child("enabled", NS_SM))         -- beside the other answers
      r1:close()
      srv.store:archive_add("alice", { id = "first-id", time = 1219439344, with = "bob@example.test", data = "<m/>" })
      srv.store:archive_add("alice", { id = "mid-id", time = 1300000000, with = "bob@example.test", data = "<m/>" })
      srv.store:archive_add("alice", { id = "last-id", time = 1587393261, with = "bob@example.test", data = "<m/>" })
      srv.store:archive_add("bob", { id = "bobs-id", time = 1, with = "alice@example.test", data = "<m/>" })
      local r2, s2 = login2(port, { tag = "t" })
      md = assert(s2:get_child("bound", NS_BIND2):get_child("metadata", NS_MAM))
      assert.equal(2, #md.tags)
      assert.same({ id = "first-id", timestamp = "2008-08-22T21:09:04Z" }, md:get_child("start").attr)
      assert.same({ id = "last-id", timestamp = "2020-04-20T14:34:21Z" }, md:get_child("end").attr)
      r2:close()
    end)
    serve.run({ users = USERS, archive = false }, function(_, port)
      local r, s = login2(port, { tag = "t" })
      local bound = assert(s:get_child("bound", NS_BIND2))
      assert.is_nil(bound:get_child("metadata", NS_MAM))
      r:close()
    end)
  end)

  -- XEP-0386 §"Performing the bind": the server MUST "clear the offline
  -- messages for this user, if any, without sending them (as they will be
  -- provided by MAM)": those the archive holds go, unsent; what it does
  -- not hold (a bodiless invitation, a <no-store/> hint) is still sent at
  -- the initial presence, as is what arrives after the bind
  it("clears the archived offline messages at bind time; the unarchived and later ones still come", function()
    serve.run({ users = USERS }, function(srv, port)
      local b = raw.login(port, serve.pki().ca, "bob", "bob-pw")
      b:send("<message to='alice@example.test' type='chat' id='m1'><body>archived</body></message>")
      b:send("<message to='alice@example.test' id='m2'><x xmlns='jabber:x:conference' " ..
        "jid='room@conference.example.test'/></message>")
      b:send("<message to='alice@example.test' type='chat' id='m3'><body>not kept</body>" ..
        "<no-store xmlns='urn:xmpp:hints'/></message>")
      assert.truthy(serve.until_true(function() return srv.store:count_offline("alice") == 3 end))
      local r, s = login2(port, { tag = "t" })
      local md = s:get_child("bound", NS_BIND2):get_child("metadata", NS_MAM)
      local last = srv.store:archive_query("alice", { max = 10 }).items[1].id
      assert.equal(last, md:get_child("end").attr.id)            -- the archived one: MAM's to give
      assert.equal(2, (srv.store:count_offline("alice")))
      assert.equal("features", assert(r:stanza()).name)
      -- after the bind: offline storage as usual (it is after <metadata/>'s end)
      b:send("<message to='alice@example.test' type='chat' id='m4'><body>later</body></message>")
      assert.truthy(serve.until_true(function() return srv.store:count_offline("alice") == 3 end))
      r:send("<presence/>")
      local ids = {}
      while #ids < 3 do
        local m = assert(read_until(r, "message"))
        ids[#ids + 1] = m.attr.id
      end
      assert.same({ "m2", "m3", "m4" }, ids)
      assert.is_nil(r:stanza(0.2 * slow))
      assert.equal(0, (srv.store:count_offline("alice")))
      r:close()
      b:close()
    end)
  end)

  it("keeps an offline message whose archive entry has gone since (mam_max_messages)", function()
    serve.run({ users = USERS, limits = { mam_max_messages = 2 } }, function(srv, port)
      local b = raw.login(port, serve.pki().ca, "bob", "bob-pw")
      for i = 1, 3 do
        b:send("<message to='alice@example.test' type='chat' id='m" .. i .. "'><body>" .. i .. "</body></message>")
      end
      assert.truthy(serve.until_true(function() return srv.store:count_offline("alice") == 3 end))
      local r = login2(port, { tag = "t" })
      assert.equal(1, (srv.store:count_offline("alice")))       -- m1: no longer in the archive
      assert.equal("features", assert(r:stanza()).name)
      r:send("<presence/>")
      assert.equal("m1", assert(read_until(r, "message")).attr.id)
      assert.is_nil(r:stanza(0.2 * slow))
      r:close()
      b:close()
    end)
  end)

  it("clears nothing for a classic resource binding, nor without account archives", function()
    for _, archive in ipairs({ true, false }) do
      serve.run({ users = USERS, archive = archive }, function(srv, port)
        local b = raw.login(port, serve.pki().ca, "bob", "bob-pw")
        b:send("<message to='alice@example.test' type='chat' id='m1'><body>one</body></message>")
        b:send("<message to='alice@example.test' type='chat' id='m2'><body>two</body></message>")
        assert.truthy(serve.until_true(function() return srv.store:count_offline("alice") == 2 end))
        local r
        if archive then
          r = raw.login(port, serve.pki().ca, "alice", "alice-pw")       -- RFC 6120 binding
        else
          r = login2(port, { tag = "t" })
          assert.equal("features", assert(r:stanza()).name)
        end
        assert.equal(2, (srv.store:count_offline("alice")))
        r:send("<presence/>")
        local ids = {}
        while #ids < 2 do ids[#ids + 1] = assert(read_until(r, "message")).attr.id end
        assert.same({ "m1", "m2" }, ids)
        r:close()
        b:close()
      end)
    end
  end)

  it("sends what a host sends at bind time after the <success/>, not before", function()
    serve.run({ users = USERS }, function(srv, port)
      srv:hook("resource-bind", function(ev)
        ev.origin:send(st.message({ to = ev.origin.full, from = "example.test" }, "welcome"))
      end)
      local r = login2(port, { tag = "t" })   -- (login2 asserts <success/> came first)
      local m, before = read_until(r, "message")
      assert.equal("welcome", m:get_child_text("body"))
      assert.equal("features", before[1].name)
      r:close()
    end)
  end)
end)

describe("embedded server: inline stream resumption (XEP-0198 in SASL2)", function()
  it("resumes in <success/>: <resumed/>, no <bound/>, no features, the queue sent again", function()
    serve.run({ users = USERS }, function(srv, port)
      local b = raw.login(port, serve.pki().ca, "bob", "bob-pw")
      local r, s = login2(port, { tag = "t", extra = "<enable xmlns='" .. NS_SM .. "' resume='true'/>" })
      local full = s:get_child_text("authorization-identifier")
      local id = s:get_child("bound", NS_BIND2):get_child("enabled", NS_SM).attr.id
      assert.equal("features", assert(r:stanza()).name)
      r:send("<presence/>")
      b:send("<message to='" .. full .. "' type='chat'><body>before</body></message>")
      assert.truthy(read_until(r, "message"))
      r:close()                                  -- the link dies, nothing acknowledged
      assert.truthy(serve.until_true(function()
        local sess = srv:session("alice@example.test", resource_of(s))
        return sess and sess.hibernation ~= nil
      end))
      b:send("<message to='" .. full .. "' type='chat'><body>during</body></message>")
      lxmpp.sleep(0.1)
      local r2 = sasl2.open(port)
      local s2 = sasl2.auth2(r2, { inline = "<resume xmlns='" .. NS_SM .. "' previd='" .. id .. "' h='0'/>" ..
        bind_xml("t") })
      assert.equal("success", s2.name)
      assert.equal(full, s2:get_child_text("authorization-identifier"))
      local resumed = assert(s2:get_child("resumed", NS_SM))
      assert.equal(id, resumed.attr.previd)
      assert.equal("1", resumed.attr.h)            -- our <presence/>
      assert.is_nil(s2:get_child("bound", NS_BIND2))
      local bodies = {}
      for _ = 1, 2 do
        local m, before = read_until(r2, "message")
        for _, x in ipairs(before) do assert.not_equal("features", x.name) end
        bodies[#bodies + 1] = m:get_child_text("body")
      end
      assert.same({ "before", "during" }, bodies)
      b:close()
      r2:close()
    end)
  end)

  it("reports a failed resumption inside <success/> and binds as asked", function()
    serve.run({ users = USERS }, function(_, port)
      -- bob's session cannot be resumed by alice
      local rb, sb = login2(port, { user = "bob", tag = "t", extra = "<enable xmlns='" .. NS_SM .. "' resume='true'/>" })
      local bob_id = sb:get_child("bound", NS_BIND2):get_child("enabled", NS_SM).attr.id
      rb:close()
      lxmpp.sleep(0.1)
      for _, previd in ipairs({ bob_id, "no-such-session" }) do
        local r = sasl2.open(port)
        local s = sasl2.auth2(r, { inline = "<resume xmlns='" .. NS_SM .. "' previd='" .. previd .. "' h='0'/>" ..
          bind_xml("t") })
        assert.equal("success", s.name)
        local failed = assert(s:get_child("failed", NS_SM))
        assert.truthy(failed:get_child("item-not-found", "urn:ietf:params:xml:ns:xmpp-stanzas"))
        assert.truthy(s:get_child("bound", NS_BIND2))
        assert.matches("^alice@example.test/t%.", s:get_child_text("authorization-identifier"))
        assert.equal("features", assert(r:stanza()).name)
        r:close()
      end
    end)
  end)

  it("ends the stream when the inline resumption acknowledges more than was sent", function()
    serve.run({ users = USERS }, function(srv, port)
      local r, s = login2(port, { tag = "t", extra = "<enable xmlns='" .. NS_SM .. "' resume='true'/>" })
      local id = s:get_child("bound", NS_BIND2):get_child("enabled", NS_SM).attr.id
      r:close()
      assert.truthy(serve.until_true(function()
        local sess = srv:session("alice@example.test", resource_of(s))
        return sess and sess.hibernation ~= nil
      end))
      local r2 = sasl2.open(port)
      r2:send("<authenticate xmlns='" .. sasl2.NS .. "' mechanism='PLAIN'><initial-response>" ..
        lxmpp.core.base64_encode("\0alice\0alice-pw") .. "</initial-response><resume xmlns='" .. NS_SM ..
        "' previd='" .. id .. "' h='5'/></authenticate>")
      assert.equal("undefined-condition", (r2:stream_error()))
    end)
  end)

  it("ignores inline features of a failed authentication", function()
    serve.run({ users = USERS }, function(srv, port)
      local r = sasl2.open(port)
      local s = sasl2.auth2(r, { password = "wrong", inline = bind_xml("t") })
      assert.equal("failure", s.name)
      assert.same({}, srv:sessions_of("alice@example.test"))
      r:close()
    end)
  end)
end)
