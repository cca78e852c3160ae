-- lxmpp.bosh, the client side of BOSH (XEP-0124/0206), against the
-- embedded server's /http-bind through an in-process relay
-- (spec/support/tcp_relay.lua) that counts TCP connections and breaks
-- chosen requests or answers: kept-alive connections (at most `requests`,
-- §11), requests sent again with their rid after a broken connection or
-- a timeout (§14.3) and the link reported lost after the retries, a
-- terminate with a condition as that error, keys (§15), and a close that
-- cancels the held poll and leaves nothing behind.
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local serve = require "spec.support.serve"
local slow = require "spec.support.slow"
local tcp_relay = require "spec.support.tcp_relay"

local F = slow.factor
local USERS = { alice = "alice-pw", bob = "bob-pw" }

local function http_port(srv)
  for _, a in ipairs(srv:addresses()) do
    if a.kind == "http" then return a.port end
  end
end

-- alice over BOSH through a relay in front of the server's /http-bind
local function bosh_login(relay, extra)
  local o = { jid = "alice@example.test/bosh", password = USERS.alice, tls = "none", stream_management = false,
    reconnect = false, url = ("http://127.0.0.1:%d/http-bind"):format(relay.port) }
  for k, v in pairs(extra or {}) do o[k] = v end
  return lxmpp.connect(o)
end

-- The server with a plain HTTP listener taken as protected (loopback), a
-- relay in front of it, and bob over TCP.
local function run(fn)
  serve.run({ users = USERS, http = "127.0.0.1:0", web = { consider_secure = true } }, function(srv, port)
    local relay = tcp_relay.start(http_port(srv))
    local bob = assert(serve.login(port, "bob", USERS.bob))
    local ok, err = xpcall(fn, debug.traceback, srv, relay, bob)
    bob:close()
    relay:close()
    if not ok then error(err, 0) end
  end)
end

local function ping(c)
  return c:request(lxmpp.stanza.iq({ type = "get", to = "example.test" }):tag("ping", { xmlns = "urn:xmpp:ping" }))
end

local function message(to, body) return lxmpp.stanza.message({ to = to, type = "chat" }, body) end

describe("BOSH client (XEP-0124/0206)", function()
  it("keeps its HTTP/1.1 connections: a whole session over at most `requests` of them (§11)", function()
    run(function(srv, relay, bob)
      local a = assert(bosh_login(relay))
      local to_a, to_b = serve.collect(a, "message"), serve.collect(bob, "message")
      for i = 1, 5 do
        a:send(message("bob@example.test/r", "to bob " .. i))
        bob:send(message("alice@example.test/bosh", "to alice " .. i))
        assert(ping(a))
      end
      assert(serve.until_true(function() return #to_a == 5 and #to_b == 5 end, 10 * F))
      -- login alone is a dozen requests; every one went over the same two
      -- (the session's `requests`: hold 1 + 1)
      assert.truthy(relay.accepted <= 2, relay.accepted .. " TCP connections")
      assert.truthy(relay.max_open <= 2, relay.max_open .. " open at once")
      local t = a.conn
      local info = t:info()
      assert.equal(2, info.requests)
      assert.equal(relay.accepted, info.opened)
      a:close()
      assert.equal(0, t:info().connections)
      assert(serve.until_true(function() return srv:session("alice@example.test/bosh") == nil end))
    end)
  end)

  it("sends a request again with its rid when its connection breaks before the server saw it", function()
    run(function(_, relay, bob)
      local a = assert(bosh_login(relay))
      local to_b = serve.collect(bob, "message")
      relay:on_text("up", "cut this request", "cut")
      a:send(message("bob@example.test/r", "cut this request"))
      assert(serve.until_true(function() return #to_b == 1 end, 10 * F))
      assert.equal("cut this request", to_b[1]:get_child_text("body"))
      assert(ping(a))                      -- the session goes on
      lxmpp.sleep(0.2)
      assert.equal(1, #to_b)               -- once
      a:close()
    end)
  end)

  it("sends a request again with its rid when the answer is lost: the server answers from its cache (§14.3)", function()
    run(function(_, relay, bob)
      local a = assert(bosh_login(relay))
      local to_a = serve.collect(a, "message")
      relay:on_text("down", "lost answer", "cut")
      bob:send(message("alice@example.test/bosh", "lost answer"))
      assert(serve.until_true(function() return #to_a == 1 end, 10 * F))
      assert.equal("lost answer", to_a[1]:get_child_text("body"))
      assert(ping(a))
      lxmpp.sleep(0.2)
      assert.equal(1, #to_a)
      a:close()
    end)
  end)

  it("sends a request again when no answer comes in time (wait + margin)", function()
    run(function(_, relay, bob)
      local a = assert(bosh_login(relay, { bosh = { wait = 1, margin = 1 * F } }))
      local to_b = serve.collect(bob, "message")
      relay:on_text("up", "stalled request", "stall")
      a:send(message("bob@example.test/r", "stalled request"))
      assert(serve.until_true(function() return #to_b == 1 end, 10 * F))
      assert(ping(a))
      a:close()
    end)
  end)

  it("reports the link lost after its retries, and reconnects then (XEP-0198 resumes)", function()
    run(function(srv, relay, bob)
      local a = assert(bosh_login(relay, { bosh = { backoff = 0.05 } }))
      local gone
      a:on("disconnected", function(msg, cond, retry) gone = { msg, cond, retry } end)
      local before = relay.accepted
      relay.refuse = true
      for link in pairs(relay.links) do relay:cut(link) end     -- the held poll's connection breaks
      assert(serve.until_true(function() return gone ~= nil end, 10 * F))
      assert.matches("BOSH request failed", gone[1])
      assert.equal(false, gone[3])
      -- 1 + 3 attempts of the held poll, each on a new connection
      assert.truthy(relay.accepted - before >= 1 + 3, (relay.accepted - before) .. " attempts")
      -- with stream management and reconnection, the same failure is a resumption
      relay.refuse = false
      local c = assert(bosh_login(relay, { jid = "alice@example.test/sm", stream_management = true,
        reconnect = { delay = 0.05 }, bosh = { backoff = 0.05 } }))
      local back, lost, seen = false, nil, serve.collect(c, "message")
      c:on("reconnected", function() back = true end)
      c:on("disconnected", function(_, _, retry) lost = retry end)
      relay.refuse = true
      for link in pairs(relay.links) do relay:cut(link) end
      assert(serve.until_true(function() return lost ~= nil end, 10 * F))
      assert.equal(true, lost)             -- reconnecting
      bob:send(message("alice@example.test/sm", "while away"))
      relay.refuse = false
      assert(serve.until_true(function() return back and #seen == 1 end, 15 * F))
      assert.truthy(c.resumed)
      c:close()
      assert.truthy(srv)
    end)
  end)

  it("ends with the terminate's condition as a stream error (system-shutdown)", function()
    run(function(srv, relay)
      local a = assert(bosh_login(relay))
      local gone
      a:on("disconnected", function(msg, cond) gone = { msg, cond } end)
      srv.web.bosh_service:close_all("system-shutdown")
      assert(serve.until_true(function() return gone ~= nil end, 10 * F))
      assert.equal("system-shutdown", gone[2])
    end)
  end)

  it("sends keys (§15) over http:// unless told not to; the server checks them", function()
    run(function(_, relay)
      local a = assert(bosh_login(relay))
      assert(ping(a))
      a:close()
      local sent = relay:sent()
      assert.matches(" newkey='%x+'", sent)
      assert.matches(" key='%x+'", sent)
      local relay2 = tcp_relay.start(relay.target)
      local b = assert(bosh_login(relay2, { bosh_keys = false }))
      assert(ping(b))
      b:close()
      assert.is_nil(relay2:sent():find("key=", 1, true))
      relay2:close()
    end)
  end)

  it("closes at once: the terminate goes out, the held poll is cancelled, nothing is left behind", function()
    run(function(srv, relay)
      local a = assert(bosh_login(relay))
      assert(ping(a))
      lxmpp.sleep(0.1)
      local t = a.conn
      relay:stall_busy()                 -- the held poll's answer will never come
      local started = core.now()
      a:close()
      local took = core.now() - started
      assert.truthy(took < 3 * F, ("close took %.1f s"):format(took))
      assert.equal(0, t:info().connections)
      assert.is_nil(next(t.outstanding))     -- no request task left
      assert(serve.until_true(function() return srv:session("alice@example.test/bosh") == nil end))
    end)
  end)
end)

-- The client's modern login over BOSH: over https:// the session is
-- protected, so SASL2 (XEP-0388) with Bind2 (XEP-0386) is used, with no
-- stream restart (no second <open/>, hence no xmpp:restart: XEP-0206 §5 is
-- for RFC 6120 SASL), and the FAST token (XEP-0484) it gets logs in the
-- next time without the password. BOSH spans several TLS connections, so
-- there is no channel binding: SCRAM without -PLUS, HT-SHA-256-NONE.
describe("BOSH client with SASL2, Bind2 and FAST", function()
  it("logs in with SASL2 and Bind2 without a restart, then with its FAST token and no password", function()
    serve.run({ users = USERS, https = "127.0.0.1:0" }, function(srv)
      local hp
      for _, a in ipairs(srv:addresses()) do if a.kind == "https" then hp = a.port end end
      local box, log = {}, {}
      -- (bind2 = true: by default a client with no archive anchor binds
      -- classically after SASL2, features/catchup.lua)
      local o = { jid = "alice@example.test", password = USERS.alice, reconnect = false, debug = true, bind2 = true,
        url = ("https://example.test:%d/http-bind"):format(hp), host = "127.0.0.1", cafile = serve.pki().ca,
        logger = function(level, msg) log[#log + 1] = level .. " " .. msg end,
        stream_management = { save = function(s) box.state = s end } }
      local c = assert(lxmpp.connect(o))
      local function count(pattern)
        local n = 0
        for _, l in ipairs(log) do if l:find(pattern) then n = n + 1 end end
        return n
      end
      assert.equal(1, count("OUT <authenticate xmlns='urn:xmpp:sasl:2' mechanism='SCRAM%-SHA%-256'"))
      assert.equal(1, count("OUT <open "))                   -- the session's creation only: no restart
      assert.equal(0, count("urn:ietf:params:xml:ns:xmpp%-bind"))
      assert.matches("^alice@example%.test/lx%x+$", c.jid)              -- no tag: the server's part only
      assert.same({}, c.archive_metadata)                    -- <bound/>'s, over BOSH too
      assert.truthy(srv:session(c.jid))
      assert(ping(c))
      assert.equal("HT-SHA-256-NONE", box.state.fast.mechanism)
      c:close()
      -- the token, no password: one round trip, the server's proof checked
      o.password, o.stream_management = nil, { state = box.state, save = function(s) box.state = s end }
      log = {}
      local c2 = assert(lxmpp.connect(o))
      assert.equal("HT-SHA-256-NONE", c2.sasl_mechanism)
      assert.equal(1, count("OUT <open "))
      assert(ping(c2))
      c2:close()
    end)
  end)
end)
