-- Client negotiation paths that Prosody does not take by default, against a
-- scripted server on loopback (tls = "none" is allowed there only): SASL
-- ANONYMOUS, a bind conflict answered with a fresh resource, legacy
-- session establishment when the server still requires it, and `timeout`
-- as the deadline of the whole negotiation against servers that stall.
local lxmpp = require "lxmpp"
local net = require "lxmpp.net"
local st = lxmpp.stanza

local NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
local NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
local NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
local HEADER = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' " ..
  "xmlns:stream='http://etherx.jabber.org/streams' from='example.test' id='%s' version='1.0'>"

local clean = require "spec.support.clean"
local core = require "lxmpp.core"
local SLOW = require("spec.support.slow").factor

-- A minimal server: ANONYMOUS, then bind (refusing `taken` resources with
-- conflict), then a required session. It records what the client did.
local function scripted_server(taken, session_required)
  local log = {}
  local l = assert(net.listen("127.0.0.1", 0, function(conn)
    log.server_conn = conn
    local authed, n = false, 0
    conn:on("open", function()
      n = n + 1
      conn:write(HEADER:format("s" .. n))
      if not authed then
        conn:write("<stream:features><mechanisms xmlns='" .. NS_SASL .. "'><mechanism>ANONYMOUS</mechanism>" ..
          "</mechanisms></stream:features>")
      else
        conn:write("<stream:features><bind xmlns='" .. NS_BIND .. "'/>" ..
          (session_required and ("<session xmlns='" .. NS_SESSION .. "'/>") or "") .. "</stream:features>")
      end
    end)
    conn:on("stanza", function(s)
      if s.name == "auth" then
        log[#log + 1] = "auth " .. s.attr.mechanism
        authed = true
        conn:write("<success xmlns='" .. NS_SASL .. "'/>")
        conn:restart()
      elseif s.name == "iq" and s:get_child("bind", NS_BIND) then
        local res = s:get_child("bind", NS_BIND):get_child_text("resource")
        log[#log + 1] = "bind " .. tostring(res)
        if res and taken[res] then
          conn:send(st.error_reply(s, "cancel", "conflict"))
        else
          conn:send(st.reply(s):tag("bind", { xmlns = NS_BIND })
            :text_tag("jid", "anon@example.test/" .. (res or "server-chosen")))
        end
      elseif s.name == "iq" and s:get_child("session", NS_SESSION) then
        log[#log + 1] = "session"
        conn:send(st.reply(s))
      elseif s.name == "message" then
        log[#log + 1] = "message " .. tostring(s:get_child_text("body"))
      end
    end)
    conn:on("stream-close", function() conn:write("</stream:stream>") conn:close() end)
    conn:on("eof", function() conn:abort() end)
    conn:parse()
  end))
  return l, log
end

describe("negotiation paths", function()
  after_each(clean)

  it("logs in with ANONYMOUS, retries a conflicting resource, establishes a required session", function()
    lxmpp.run(function()
      local l, log = scripted_server({ desk = true }, true)
      local c = assert(lxmpp.connect({ jid = "example.test/desk", mechanism = "ANONYMOUS",
        host = "127.0.0.1", port = l:port(), tls = "none" }))
      assert.equal("ANONYMOUS", c.sasl_mechanism)
      assert.matches("^anon@example%.test/desk%-", c.jid)
      c:send_message("someone@example.test", "hi")
      c:close()
      assert.equal("auth ANONYMOUS", log[1])
      assert.equal("bind desk", log[2])
      assert.matches("^bind desk%-", log[3])
      assert.equal("session", log[4])
      assert.equal("message hi", log[5])
      l:close()
    end)
  end)

  it("lets the server choose the resource and skips an optional session", function()
    lxmpp.run(function()
      local l, log = scripted_server({}, false)
      local c = assert(lxmpp.connect({ jid = "example.test", mechanism = "ANONYMOUS",
        host = "127.0.0.1", port = l:port(), tls = "none" }))
      assert.equal("anon@example.test/server-chosen", c.jid)
      c:close()
      assert.same({ "auth ANONYMOUS", "bind nil" }, { log[1], log[2], log[3] })
      l:close()
    end)
  end)

  it("wait_drain waits for a peer that stopped reading, then sending goes on", function()
    lxmpp.run(function()
      local l, log = scripted_server({}, false)
      local c = assert(lxmpp.connect({ jid = "example.test", mechanism = "ANONYMOUS",
        host = "127.0.0.1", port = l:port(), tls = "none" }))
      c.conn:set_max_queue(64 * 1024)
      log.server_conn:pause()                                -- the server stops reading
      local body = ("x"):rep(4000)
      local full
      for _ = 1, 5000 do
        local ok, _, cond = c:send_message("someone@example.test", body)
        if not ok then full = cond break end
        lxmpp.task.yield()
      end
      assert.equal("resource-constraint", full)
      lxmpp.spawn(function() lxmpp.sleep(0.05) log.server_conn:resume() end)
      assert.is_true(c:wait_drain(10))
      assert.is_true(c:send_message("someone@example.test", "after the drain"))
      c:close()
      l:close()
    end)
  end)

  -- connect{timeout=} is one deadline for TCP, TLS, SASL and binding; a
  -- server that answers slowly, byte by byte, cannot stretch it
  for _, case in ipairs({
    { "stalls after its stream header", "none", function() end },
    { "dribbles its features a byte at a time", "none", function(conn, state)
      local bytes = "<stream:features><mechanisms xmlns='" .. NS_SASL .. "'>"
      lxmpp.spawn(function()
        local i = 0
        while not state.gone do
          i = i + 1
          conn:write(i <= #bytes and bytes:sub(i, i) or " ")     -- then spaces, forever
          lxmpp.sleep(0.02)
        end
      end)
    end },
  }) do
    it("gives up at connect's timeout when the server " .. case[1] .. ", and closes the socket", function()
      lxmpp.run(function()
        local state = {}
        local l = assert(net.listen("127.0.0.1", 0, function(conn)
          conn:on("open", function()
            conn:write(HEADER:format("slow"))
            case[3](conn, state)
          end)
          conn:on("eof", function() state.gone = true conn:abort() end)
          conn:on("closed", function() state.gone = true end)
          conn:parse()
        end))
        local timeout = 0.5 * SLOW
        local t0 = core.now()
        local c, msg, cond = lxmpp.connect({ jid = "alice@example.test", password = "secret",
          host = "127.0.0.1", port = l:port(), tls = case[2], insecure = true, timeout = timeout,
          reconnect = false })
        local took = core.now() - t0
        assert.is_nil(c)
        assert.equal("timeout", cond, msg)
        assert.is_true(took < timeout + 1 * SLOW, ("connect returned after %.2f s"):format(took))
        for _ = 1, 100 do
          if state.gone then break end
          lxmpp.sleep(0.02 * SLOW)
        end
        assert.is_true(state.gone, "the client left its socket open")
        l:close()
      end)
    end)
  end

  it("refuses a timeout that is not a positive number", function()
    for _, bad in ipairs({ 0, -1, "5" }) do
      assert.has_error(function() lxmpp.connect({ jid = "a@example.test", password = "x", timeout = bad }) end,
        "lxmpp.connect: timeout must be a positive number")
    end
  end)

  it("refuses a max_stanza_size the stream parser cannot take", function()
    for _, bad in ipairs({ 0, -1, 1.5, "4096", 2 ^ 31 }) do
      assert.has_error(function()
        lxmpp.connect({ jid = "a@example.test", password = "x", max_stanza_size = bad })
      end, "lxmpp.connect: max_stanza_size must be an integer from 1 to 2^30")
    end
  end)

  it("never uses PLAIN without TLS, even when it is all the server offers", function()
    lxmpp.run(function()
      local l = assert(net.listen("127.0.0.1", 0, function(conn)
        conn:on("open", function()
          conn:write(HEADER:format("p") .. "<stream:features><mechanisms xmlns='" .. NS_SASL ..
            "'><mechanism>PLAIN</mechanism></mechanisms></stream:features>")
        end)
        conn:on("stanza", function(s) if s.name == "auth" then error("PLAIN was sent in the clear") end end)
        conn:on("eof", function() conn:abort() end)
        conn:parse()
      end))
      local c, _, cond = lxmpp.connect({ jid = "alice@example.test", password = "secret",
        host = "127.0.0.1", port = l:port(), tls = "none" })
      assert.is_nil(c)
      assert.equal("invalid-mechanism", cond)
      l:close()
    end)
  end)
end)
