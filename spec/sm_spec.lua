-- Stream management (XEP-0198), client side, against a scripted server
-- (spec/support/smserver.lua): enabling after binding, acks both ways,
-- strict h, 32-bit wrapping, handled-count-too-high, resumption before
-- binding with exactly the unacknowledged stanzas re-sent, previd checks,
-- <failed h=.../>, requests across a resumption, and a saved state that
-- resumes the session after a restart.
local lxmpp = require "lxmpp"
local st = lxmpp.stanza
local sm = require "lxmpp.features.sm"
local smserver = require "spec.support.smserver"

local wait_for = smserver.wait_for

local run = smserver.run

local function bodies(list)
  local out = {}
  for _, s in ipairs(list) do out[#out + 1] = s:get_child_text("body") end
  return out
end

local function unacked_events(c)
  local got = {}
  c:on("unacked", function(list, reason, cond)
    got[#got + 1] = { bodies = bodies(list), reason = reason, cond = cond }
  end)
  return got
end

describe("stream management", function()
  after_each(smserver.cleanup)

  describe("h", function()
    local good = { ["0"] = 0, ["7"] = 7, ["007"] = 7, ["4294967295"] = 4294967295 }
    for s, n in pairs(good) do
      it("parses " .. s, function() assert.equal(n, sm.parse_h(s)) end)
    end
    for _, bad in ipairs({ "", "-1", "+1", " 1", "1 ", "1.0", "0x1", "1e3", "4294967296", "12345678901",
        "\239\188\145" }) do
      it("refuses " .. ("%q"):format(bad), function() assert.is_nil(sm.parse_h(bad)) end)
    end
    it("refuses what is not a string", function() assert.is_nil(sm.parse_h(nil)) end)
  end)

  it("enables after binding, answers <r/>, and asks for acks every ack_every stanzas", function()
    run(function()
      local srv = smserver.start()
      local c = assert(lxmpp.connect(srv:client_opts({ stream_management = { ack_every = 3, ack_delay = 30 } })))
      assert.same({ "1 auth ANONYMOUS", "1 bind r", "1 enable resume=true" }, srv.log)
      assert.is_true(c.sm.enabled)
      srv:push(st.message({ to = c.jid }, "one"))
      srv:push(st.message({ to = c.jid }, "two"))
      srv:session().conn:write("<r xmlns='urn:xmpp:sm:3'/>")
      assert(wait_for(function() return #srv:grep("a h=2") == 1 end, 2))
      for i = 1, 3 do c:send_message("x@example.test", "m" .. i) end
      assert(wait_for(function() return c.sm:unacked() == 0 end, 2))
      assert.equal(1, #srv:grep("^1 r$"))               -- one request, after the third
      c:close()
      srv:close()
    end)
  end)

  it("asks for an ack after ack_delay when fewer stanzas were sent", function()
    run(function()
      local srv = smserver.start()
      local c = assert(lxmpp.connect(srv:client_opts({ stream_management = { ack_every = 100, ack_delay = 0.05 } })))
      c:send_message("x@example.test", "lonely")
      assert.equal(1, c.sm:unacked())
      assert(wait_for(function() return c.sm:unacked() == 0 end, 1))
      c:close()
      srv:close()
    end)
  end)

  for _, bad in ipairs({ "-1", "1.5", "4294967296", "x" }) do
    it("ends the stream on an invalid h " .. bad .. " and reports what was not acknowledged", function()
      run(function()
        local srv = smserver.start({ ack = function() return bad end })
        local c = assert(lxmpp.connect(srv:client_opts({ reconnect = false, stream_management = { ack_every = 1 } })))
        local got = unacked_events(c)
        c:send_message("x@example.test", "m1")
        -- the server reads the client's stream error on a later loop turn
        -- than the client reports: wait for both
        assert(wait_for(function() return #got == 1 and #srv:grep("stream%-error bad%-format") == 1 end, 2))
        assert.same({ "m1" }, got[1].bodies)
        c:close()
        srv:close()
      end)
    end)
  end

  it("detects handled-count-too-high", function()
    run(function()
      local srv = smserver.start({ ack = function() return "5" end })
      local c = assert(lxmpp.connect(srv:client_opts({ reconnect = false, stream_management = { ack_every = 2 } })))
      local got = unacked_events(c)
      local gone = {}
      c:on("disconnected", function(msg, cond, again) gone[#gone + 1] = { msg, cond, again } end)
      c:send_message("x@example.test", "m1")
      c:send_message("x@example.test", "m2")
      assert(wait_for(function()
        return #got == 1 and #gone == 1 and #srv:grep("stream%-error%-extra") == 1
      end, 2))
      assert.same({ "m1", "m2" }, got[1].bodies)
      assert.same({ "2 stream-error undefined-condition" }, { "2" .. srv:grep("stream%-error ")[1]:sub(2) })
      assert.equal(1, #srv:grep("stream%-error%-extra handled%-count%-too%-high h=5 send%-count=2"))
      assert.equal("undefined-condition", gone[1][2])
      assert.is_false(gone[1][3])
      c:close()
      srv:close()
    end)
  end)

  it("counts past 2^32 and wraps", function()
    run(function()
      local srv = smserver.start()
      -- a session near the end of the 32-bit range, as a restart would restore it
      srv.sessions.old = { id = "old", handled = 4294967294, out = 4294967295, acked = 4294967295, outq = {},
        jid = "anon@example.test/r" }
      srv.nsess = 1
      local state = { id = "old", jid = "anon@example.test/r", inbound = 4294967295, acked = 4294967294, queue = {} }
      local c = assert(lxmpp.connect(srv:client_opts({ stream_management = { state = state, ack_every = 3 } })))
      assert.is_true(c.resumed)
      assert.same({ "1 auth ANONYMOUS", "1 resume previd=old h=4294967295" }, srv.log)
      for i = 1, 3 do c:send_message("x@example.test", "m" .. i) end
      assert(wait_for(function() return c.sm:unacked() == 0 end, 2))
      assert.equal(1, c.sm.acked)                        -- 4294967294 + 3, wrapped
      srv:push(st.message({ to = c.jid }, "a"))
      srv:push(st.message({ to = c.jid }, "b"))
      srv:session().conn:write("<r xmlns='urn:xmpp:sm:3'/>")
      assert(wait_for(function() return #srv:grep("a h=1$") == 1 end, 2))
      c:close()
      srv:close()
    end)
  end)

  it("resumes before binding and re-sends exactly what the server did not handle", function()
    run(function()
      -- the server "loses" m4 and m5 (never counts them), then the link dies
      local srv = smserver.start({ count = function(s)
        local b = s:get_child_text("body")
        return not (b == "m4" or b == "m5")
      end })
      local c = assert(lxmpp.connect(srv:client_opts({ stream_management = { ack_every = 100, ack_delay = 30 } })))
      local ev = {}
      c:on("disconnected", function(_, cond, again) ev[#ev + 1] = "disconnected " .. cond .. " " .. tostring(again) end)
      c:on("reconnected", function(resumed) ev[#ev + 1] = "reconnected " .. tostring(resumed) end)
      local got = unacked_events(c)
      for i = 1, 5 do c:send_message("x@example.test", "m" .. i) end
      assert(wait_for(function() return #srv:grep("message m5") == 1 end, 2))
      srv.opts.count = nil
      srv:kill()
      assert(wait_for(function() return #ev == 2 end, 2))
      assert.same({ "disconnected closed true", "reconnected true" }, ev)
      assert.same({}, srv:grep("^2 bind"))                 -- resumed, not bound again
      assert.same({ "2 resume previd=sm1 h=0", "2 message m4", "2 message m5" },
        { srv:grep("^2 resume")[1], srv:grep("^2 message")[1], srv:grep("^2 message")[2] })
      assert.equal(2, #srv:grep("^2 message"))
      assert.equal("anon@example.test/r", c.jid)
      assert.same({}, got)
      c:close()
      srv:close()
    end)
  end)

  it("answers a request() sent before the link died, on the resumed stream", function()
    run(function()
      local srv
      srv = smserver.start({ count = function(s) return s.name ~= "iq" or srv.nconn > 1 end,
        stanza = function(conn, s)
        if s.name == "iq" and s.attr.type == "get" and srv.nconn > 1 then
          conn:send(st.reply(s):tag("pong", { xmlns = "urn:example" }))
        end
      end })
      local c = assert(lxmpp.connect(srv:client_opts()))
      local result
      lxmpp.spawn(function()
        result = c:request(st.iq({ type = "get", to = "example.test" }):tag("ping", { xmlns = "urn:example" }), 5)
      end)
      assert(wait_for(function() return #srv:grep("^1 iq get") == 1 end, 2))
      srv:kill()                                            -- no reply on the first connection
      assert(wait_for(function() return result ~= nil end, 3))
      assert.equal("result", result.attr.type)
      assert.is_true(c.resumed)
      c:close()
      srv:close()
    end)
  end)

  it("refuses a <resumed/> for another session and starts a new one, reporting the rest (resend_unacked = false)", function()
    run(function()
      local srv = smserver.start({ ack = function() return false end,
        resumed = function(sess) return sess and ("<resumed xmlns='urn:xmpp:sm:3' previd='other' h='0'/>") end })
      local c = assert(lxmpp.connect(srv:client_opts({ resend_unacked = false })))
      local got = unacked_events(c)
      local back
      c:on("reconnected", function(resumed) back = resumed end)
      c:send_message("x@example.test", "m1")
      assert(wait_for(function() return #srv:grep("message m1") == 1 end, 2))
      srv:kill()
      assert(wait_for(function() return back ~= nil end, 3))
      assert.is_false(back)
      assert.same({ "m1" }, got[1].bodies)
      assert.equal(2, #srv:grep("^%d+ bind"))                -- the first session's, the new one's
      assert.equal(0, #srv:grep("^%d+ message m1$") - 1)     -- never sent twice
      srv.opts.ack = nil                                  -- acks again: close is quick
      c:close()
      srv:close()
    end)
  end)

  it("by default sends again, on the new session and with their ids, the messages <failed h/> says were not handled", function()
    run(function()
      local ids = {}
      local srv
      srv = smserver.start({ ack = function() return false end, resumed = function()
        return "<failed xmlns='urn:xmpp:sm:3' h='2'>" ..
          "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
      end, stanza = function(_, s)
        if s.name == "message" then
          local b = s:get_child_text("body")
          ids[b] = ids[b] or {}
          table.insert(ids[b], srv.nconn .. ":" .. tostring(s.attr.id))
        end
      end })
      local c = assert(lxmpp.connect(srv:client_opts()))
      local got = unacked_events(c)
      local back
      c:on("reconnected", function(resumed) back = resumed end)
      c:send_presence({ status = "here" })
      for i = 1, 3 do c:send_message("x@example.test", "m" .. i) end
      -- a stanza without an id gets one, so that its copy can be recognised
      c:send(st.message({ to = "x@example.test", type = "chat" }, "m4"))
      assert(wait_for(function() return #srv:grep("message m4") == 1 end, 2))
      srv:kill()
      assert(wait_for(function() return back ~= nil end, 3))
      assert.is_false(back)
      -- the new session's stream: presence restored, then what was lost, in order, and nothing else
      c:send_message("x@example.test", "after")
      assert(wait_for(function() return #srv:grep("^2 message after") == 1 end, 2))
      local second = {}
      for _, l in ipairs(srv:grep("^2 ")) do
        if l:match("^2 message") or l:match("^2 presence") then second[#second + 1] = l end
      end
      assert.same({ "2 presence ", "2 message m2", "2 message m3", "2 message m4", "2 message after" }, second)
      for _, b in ipairs({ "m2", "m3", "m4" }) do
        assert.equal(2, #ids[b])
        assert.equal(ids[b][1]:match(":(.*)"), ids[b][2]:match(":(.*)"))
        assert.not_equal("nil", ids[b][1]:match(":(.*)"))
      end
      assert.equal(1, #ids.m1)                              -- the server had it
      assert.same({}, got)                                 -- nothing for the application to decide
      srv.opts.ack = nil                                  -- acks again: close is quick
      c:close()
      assert.same({}, got)
      srv:close()
    end)
  end)

  it("reports only what <failed h=.../> says the server did not handle (resend_unacked = false)", function()
    run(function()
      local srv = smserver.start({ ack = function() return false end, resumed = function()
        return "<failed xmlns='urn:xmpp:sm:3' h='2'>" ..
          "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
      end })
      local c = assert(lxmpp.connect(srv:client_opts({ resend_unacked = false })))
      local got = unacked_events(c)
      local back
      c:on("reconnected", function(resumed) back = resumed end)
      c:send_presence({ status = "here" })
      for i = 1, 3 do c:send_message("x@example.test", "m" .. i) end
      assert(wait_for(function() return #srv:grep("message m3") == 1 end, 2))
      srv:kill()
      assert(wait_for(function() return back ~= nil end, 3))
      assert.is_false(back)
      assert.same({ "m2", "m3" }, got[1].bodies)            -- presence and m1 were handled
      assert.equal("item-not-found", got[1].cond)
      assert.same({ "2 bind r", "2 enable resume=true" }, { srv:grep("^2 bind")[1], srv:grep("^2 enable")[1] })
      -- a new session: the presence is restored
      assert(wait_for(function() return #srv:grep("^2 presence") == 1 end, 2))
      srv.opts.ack = nil                                  -- acks again: close is quick
      c:close()
      srv:close()
    end)
  end)

  it("saves its state, so a restarted client resumes the session", function()
    run(function()
      local srv = smserver.start({ ack = function() return false end })
      local saved
      local c = assert(lxmpp.connect(srv:client_opts({ reconnect = false,
        stream_management = { save = function(state) saved = state end } })))
      srv:push(st.message({ to = c.jid }, "in1"))
      c:send_message("x@example.test", "m1")
      c:send_message("x@example.test", "m2")
      assert(wait_for(function() return #srv:grep("message m2") == 1 and saved and saved.inbound == 1 end, 2))
      assert.same({ "sm1", 1, 0 }, { saved.id, saved.inbound, saved.acked })
      assert.equal(2, #saved.queue)
      -- the process "dies": its connection is gone without a close
      srv.sessions.sm1.handled = 1                        -- the server only handled m1
      c.on_lost = nil
      c.online = false
      require("lxmpp.reconnect").internal.stop_keepalive(c)
      c.sm:link_lost()
      c.conn:abort()
      srv.opts.ack = nil
      local c2 = assert(lxmpp.connect(srv:client_opts({ stream_management = { state = saved,
        save = function(state) saved = state end } })))
      assert.is_true(c2.resumed)
      assert.equal("anon@example.test/r", c2.jid)
      assert.equal("2 resume previd=sm1 h=1", srv:grep("^2 resume")[1])
      assert(wait_for(function() return #srv:grep("^2 message m2") == 1 end, 2))
      assert.equal(0, #srv:grep("^2 message m1"))
      assert(wait_for(function() return c2.sm:unacked() == 0 end, 3))
      c2:close()
      assert.is_nil(saved)                                -- a closed session is forgotten
      srv:close()
    end)
  end)

  it("refuses a saved state that is not one, or is another account's", function()
    assert.has_error(function()
      require("lxmpp.client").new({ jid = "example.test", mechanism = "ANONYMOUS", host = "127.0.0.1", tls = "none",
        stream_management = { state = { id = 1 } } })
    end, "lxmpp.connect: stream_management.state is not a state saved by lxmpp")
    assert.has_error(function()
      require("lxmpp.client").new({ jid = "alice@example.test", password = "x", host = "127.0.0.1", tls = "none",
        stream_management = { state = { id = "s", jid = "mallory@example.test/r", inbound = 0, acked = 0,
          queue = {} } } })
    end, "lxmpp.connect: stream_management.state belongs to mallory@example.test/r, not alice@example.test")
  end)
end)

describe("a client without an account name of its own (SASL ANONYMOUS)", function()
  -- Its JID is the domain until the server binds one; from then on that
  -- bare JID is its account: roster pushes (RFC 6121 §2.1.6) and carbons
  -- (XEP-0280 §11) from it are the server's, for this account.
  it("takes the bare JID it was bound to as its own account", function()
    run(function()
      local srv = smserver.start({})
      local c = assert(lxmpp.connect(srv:client_opts({ reconnect = false })))
      assert.equal("anon@example.test/r", c.jid)
      assert.equal("anon@example.test", c.bare_jid)
      local pushed, carbons = {}, {}
      c:on("roster", function(item) pushed[#pushed + 1] = item.jid end)
      c:on("carbon-received", function(m) carbons[#carbons + 1] = m:get_child_text("body") end)
      local conn = srv:session().conn
      conn:write("<iq type='set' id='rp' from='anon@example.test'><query xmlns='jabber:iq:roster'>" ..
        "<item jid='friend@example.test'/></query></iq>")
      conn:write("<message from='anon@example.test'><received xmlns='urn:xmpp:carbons:2'>" ..
        "<forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' from='boss@example.test/a' " ..
        "to='anon@example.test/other'><body>copied</body></message></forwarded></received></message>")
      -- and still not from anyone else
      conn:write("<iq type='set' id='rp2' from='mallory@example.test'><query xmlns='jabber:iq:roster'>" ..
        "<item jid='evil@example.test'/></query></iq>")
      assert.is_true(wait_for(function() return #pushed > 0 and #carbons > 0 end, 2))
      lxmpp.sleep(0.1)
      assert.same({ "friend@example.test" }, pushed)
      assert.same({ "copied" }, carbons)
      c:close()
      srv:close()
    end)
  end)

  it("refuses to be bound to a JID of another domain", function()
    run(function()
      local srv = smserver.start({ bind_jid = function(res) return "victim@other.test/" .. res end })
      local c, msg, cond = lxmpp.connect(srv:client_opts({ reconnect = false }))
      assert.is_nil(c)
      assert.matches("another domain", msg)
      assert.equal("bad-format", cond)
      srv:close()
    end)
  end)
end)

describe("an IQ request nobody handles", function()
  -- RFC 6120 §8.4: answered with service-unavailable; but never to a from
  -- that is not a JID (RFC 7622 §3: an invalid JID is no address at all)
  it("is answered with service-unavailable, unless its from is no JID", function()
    run(function()
      local answers = {}
      local srv = smserver.start({ stanza = function(_, s)
        if s.name == "iq" and s.attr.type == "error" then answers[#answers + 1] = s.attr.to end
      end })
      local c = assert(lxmpp.connect(srv:client_opts({ reconnect = false })))
      local conn = srv:session().conn
      conn:write("<iq type='get' id='q1' from='mallory@@evil.example'><query xmlns='urn:example:none'/></iq>")
      conn:write("<iq type='get' id='q2' from='bob@example.test/x'><query xmlns='urn:example:none'/></iq>")
      assert.is_true(wait_for(function() return #answers > 0 end, 2))
      lxmpp.sleep(0.1)
      assert.same({ "bob@example.test/x" }, answers)
      c:close()
      srv:close()
    end)
  end)
end)
