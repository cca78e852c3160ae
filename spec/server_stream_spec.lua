-- The embedded server's stream layer (server/stream.lua, the restarts in
-- server/c2s.lua), in raw bytes: stream errors on a restarted stream, the
-- negotiation deadline against the caps on unauthenticated streams, and
-- whitespace before a restarted stream's header.
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local serve = require "spec.support.serve"
local raw = require "spec.support.raw"

local USERS = { alice = "alice-pw", bob = "bob-pw" }
local NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
local NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
local PLAIN = "<auth xmlns='" .. NS_SASL .. "' mechanism='PLAIN'>" ..
  core.base64_encode("\0alice\0alice-pw") .. "</auth>"

-- Raw client up to the point where it must send a new stream header:
-- "tls" right after the TLS handshake that followed <proceed/>, "sasl"
-- right after <success/> (over TLS).
local function up_to_restart(port, point)
  local r = raw.connect(port)
  if point == "tls" then
    r:send(raw.header())
    assert.equal("features", assert(r:stanza()).name)
    r:send("<starttls xmlns='" .. NS_TLS .. "'/>")
    assert.equal("proceed", assert(r:stanza()).name)
    r.conn:starttls(assert(core.tls_context({ mode = "client", cafile = serve.pki().ca })), serve.DOMAIN)
    local ev = r:next()
    assert(ev and ev.tls, "TLS did not complete")
  else
    r:negotiate_tls(serve.pki().ca)
    r:send(PLAIN)
    assert.equal("success", assert(r:stanza()).name)
    r.conn:restart()
  end
  return r
end

-- Everything the server sends until it closes: the events of raw.lua.
local function until_closed(r, timeout)
  local evs = {}
  while true do
    local ev = r:next(timeout)
    assert(ev, "the server did not close the stream")
    evs[#evs + 1] = ev
    if ev.closed then return evs end
  end
end

-- The server opened the new stream, then sent <stream:error/> with cond,
-- then closed it: RFC 6120 §4.9.1.2.
local function assert_opened_then_error(evs, cond)
  local open = evs[1] and evs[1].open
  assert(open, "the first thing after the restart is not a stream header")
  assert.equal(serve.DOMAIN, open.from)
  assert.equal("1.0", open.version)
  assert.is_string(open.id)
  local s = evs[2] and evs[2].stanza
  assert(s and s.name == "error" and s.attr.xmlns == raw.NS_STREAMS, "no stream error after the header")
  assert.truthy(s:get_child(cond, raw.NS_ERRORS), "expected <" .. cond .. "/>")
  assert.truthy(evs[3] and (evs[3].close or evs[3].closed), "the stream was not closed after the error")
  for i = 2, #evs do assert.is_nil(evs[i].open, "a second stream header") end
end

describe("embedded server: stream errors on a restarted stream open the stream first", function()
  for _, point in ipairs({ "tls", "sasl" }) do
    local after = point == "tls" and "after STARTTLS" or "after SASL success"

    it(after .. ", a deadline before the client's new header", function()
      serve.run({ users = USERS, limits = { negotiation_timeout = 2 } }, function(_, port)
        local r = up_to_restart(port, point)
        assert_opened_then_error(until_closed(r, 5), "connection-timeout")
      end)
    end)

    it(after .. ", bytes that are not XML instead of the new header", function()
      serve.run({ users = USERS }, function(_, port)
        local r = up_to_restart(port, point)
        r:send("<<<>>>")
        assert_opened_then_error(until_closed(r), "not-well-formed")
      end)
    end)

    it(after .. ", a new header in the wrong namespace", function()
      serve.run({ users = USERS }, function(_, port)
        local r = up_to_restart(port, point)
        r:send("<stream:stream xmlns='jabber:server' xmlns:stream='" .. raw.NS_STREAMS ..
          "' to='example.test' version='1.0'>")
        assert_opened_then_error(until_closed(r), "invalid-namespace")
      end)
    end)
  end

  it("does not open the stream twice when the error follows the answered header", function()
    serve.run({ users = USERS }, function(_, port)
      local r = up_to_restart(port, "sasl")
      r:send(raw.header())
      assert.equal("features", assert(r:stanza()).name)
      r:send("<<<")
      local evs = until_closed(r)
      for _, ev in ipairs(evs) do assert.is_nil(ev.open, "a second stream header") end
      local s = evs[1].stanza
      assert.truthy(s and s:get_child("not-well-formed", raw.NS_ERRORS))
    end)
  end)
end)

describe("embedded server: whitespace before a restarted stream's header", function()
  -- go-xmpp writes "</auth>\n", then the new "<?xml version='1.0'?>"
  for _, how in ipairs({ "in the same segment as <auth/>", "on its own before the header" }) do
    it("is taken " .. how, function()
      serve.run({ users = USERS }, function(_, port)
        local r = raw.connect(port)
        r:negotiate_tls(serve.pki().ca)
        if how:match("same") then
          r:send(PLAIN .. "\r\n \t\n")
        else
          r:send(PLAIN)
        end
        assert.equal("success", assert(r:stanza()).name)
        r.conn:restart()
        if not how:match("same") then
          r:send("\n")
          lxmpp.sleep(0.05)
        end
        r:send(raw.header())
        local f = assert(r:stanza())
        assert.equal("features", f.name)
        assert.truthy(f:get_child("bind", "urn:ietf:params:xml:ns:xmpp-bind"))
        r:close()
      end)
    end)
  end

  it("still refuses junk before the restarted header", function()
    serve.run({ users = USERS }, function(_, port)
      local r = up_to_restart(port, "sasl")
      r:send("\n.\n" .. raw.header())
      assert_opened_then_error(until_closed(r), "not-well-formed")
    end)
  end)
end)
