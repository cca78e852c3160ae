-- lxmpp.server.bosh: BOSH (XEP-0124/0206) sessions as transports of the
-- embedded server's c2s streams, driven with raw HTTP POSTs over loopback
-- (the listener routes POST /http-bind to the service, as `lxmpp serve
-- --http` does): a whole session (create, SASL PLAIN, restart, bind, a
-- message each way through held requests, terminate), and what hostile
-- clients get: unknown sid, replayed and out-of-window rids, out-of-order
-- requests, oversize and malformed bodies, polling too fast, too many
-- sessions from one address, an abandoned session.
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local st = require "lxmpp.stanza"
local httpd = require "lxmpp.server.httpd"
local bosh = require "lxmpp.server.bosh"
local serve = require "spec.support.serve"
local http_raw = require "spec.support.http_raw"
local slow = require "spec.support.slow"

local F = slow.factor
local NS = "http://jabber.org/protocol/httpbind"

local until_true = http_raw.until_true

-- Bytes (a whole request) on a new connection; :answer() waits for the
-- reply: { status, head, raw = the body's text, body = the parsed <body/> }.
local Req = {}
Req.__index = Req

local function bosh_answer(a)
  if not a then return nil end
  return { status = a.status, head = a.head, raw = a.body, body = a.body ~= "" and st.parse(a.body) or nil }
end

local function open(port, bytes)
  local c = http_raw.client(port)
  c:send(bytes)
  return setmetatable({ c = c }, Req)
end

-- The answer, or nil after timeout seconds; the connection is closed then.
function Req:answer(timeout)
  local a = self.c:answer(timeout)
  self.c:close()
  return bosh_answer(a)
end

function Req:pending() return self.c:pending() end

local function post(port, xml)
  return open(port, ("POST /http-bind HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml; charset=utf-8\r\n"
    .. "Content-Length: %d\r\n\r\n%s"):format(#xml, xml))
end

local function request(port, xml, timeout) return post(port, xml):answer(timeout) end

-- Any request (method, headers) on its own connection.
local function raw(port, bytes) return open(port, bytes):answer() end

-- A client's BOSH bookkeeping: sid and the next rid.
local Client = {}
Client.__index = Client

local function create(port, extra, rid, hold)
  rid = rid or 1000
  local xml = ("<body xmlns='%s' xmlns:xmpp='urn:xmpp:xbosh' to='example.test' xml:lang='en' ver='1.11' "
    .. "wait='60' hold='%d' rid='%d' xmpp:version='1.0'%s/>"):format(NS, hold or 1, rid, extra or "")
  local a = request(port, xml)
  local c = setmetatable({ port = port, rid = rid, answer0 = a }, Client)
  c.sid = a and a.body and a.body.attr.sid
  return c, a
end

-- Sends a body with payload (and attributes) as the next rid; returns the Req.
function Client:send(payload, extra, rid)
  if not rid then
    self.rid = self.rid + 1
    rid = self.rid
  end
  local xml = ("<body xmlns='%s' xmlns:xmpp='urn:xmpp:xbosh' sid='%s' rid='%d'%s>%s</body>"):format(
    NS, self.sid, rid, extra or "", payload or "")
  return post(self.port, xml)
end

function Client:ask(payload, extra) return self:send(payload, extra):answer() end

-- create, SASL PLAIN, restart, bind: the session is alice@example.test/r
local function login(port, user)
  user = user or "alice"
  local c, a = create(port)
  assert(c.sid, "no sid in " .. tostring(a and a.raw))
  local auth = core.base64_encode("\0" .. user .. "\0pw")
  a = c:ask("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" .. auth .. "</auth>")
  assert(a.body:get_child("success", "urn:ietf:params:xml:ns:xmpp-sasl"), a.raw)
  a = c:ask("", " xmpp:restart='true'")
  assert(a.raw:find("urn:ietf:params:xml:ns:xmpp-bind", 1, true), a.raw)
  a = c:ask("<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
    .. "<resource>r</resource></bind></iq>")
  assert(a.raw:find(user .. "@example.test/r", 1, true), a.raw)
  return c
end

-- The server with the BOSH service behind an HTTP listener on loopback.
local function run(bosh_opts, fn, srv_opts)
  srv_opts = srv_opts or {}
  srv_opts.users = srv_opts.users or { alice = "pw", bob = "pw" }
  serve.run(srv_opts, function(srv, port)
    bosh_opts = bosh_opts or {}
    if bosh_opts.consider_secure == nil then bosh_opts.consider_secure = true end
    local service = bosh.new(srv, bosh_opts)
    local l = assert(httpd.listen({ ip = "127.0.0.1", port = 0, limits = bosh_opts.http_limits,
      handler = function(req, res)
        if req.path == "/http-bind" then return service:handle(req, res) end
        res:send(404, nil, "no\n")
      end }))
    local ok, err = xpcall(fn, debug.traceback, srv, l:port(), port, service)
    service:close_all()
    l:close()
    if not ok then error(err, 0) end
  end)
end

local function terminated(a, cond)
  return a and a.body and a.body.attr.type == "terminate" and a.body.attr.condition == cond
end

describe("server BOSH", function()
  it("carries a client session: create, SASL PLAIN, restart, bind, messages both ways, terminate", function()
    run(nil, function(srv, hport, xport, service)
      local c, a = create(hport)
      assert.equal(200, a.status)
      assert.truthy(a.head:find("Content-Type: text/xml; charset=utf-8", 1, true))
      local b = a.body
      assert.same({ "2", "1", "60", "example.test", "1.0" },
        { b.attr.requests, b.attr.hold, b.attr.wait, b.attr.from, b.attr["urn:xmpp:xbosh\1version"] })
      assert.truthy(#c.sid >= 32)
      assert.truthy(b.attr.authid and #b.attr.authid > 0)
      local features = b:get_child("features", "http://etherx.jabber.org/streams")
      assert.truthy(features, a.raw)
      assert.truthy(a.raw:find(">PLAIN<", 1, true), "PLAIN offered: the session counts as encrypted")
      assert.falsy(a.raw:find("xmpp-tls", 1, true), "no STARTTLS over BOSH")
      assert.equal(1, service:count())
      c = login(hport)                    -- a second session; the first one stays
      assert.equal(2, service:count())
      assert.truthy(srv:session("alice@example.test/r"))
      local bob = assert(serve.login(xport, "bob", "pw"))
      -- a held request carries what arrives for alice
      local held = c:send("")
      lxmpp.sleep(0.1)
      assert.truthy(held:pending(), "an empty request is held")
      bob:send(st.message({ to = "alice@example.test/r", type = "chat", id = "m1" }):tag("body"):text("hi alice"):up())
      a = held:answer()
      local m = a.body:get_child("message", "jabber:client")
      assert.truthy(m, a.raw)
      assert.same({ "hi alice", "bob@example.test/r" }, { m:get_child_text("body"), m.attr.from })
      -- and alice's message reaches bob
      local got
      bob:on("message", function(s) got = s end)
      local r2 = c:send("<message xmlns='jabber:client' to='bob@example.test/r' type='chat'><body>hi bob</body></message>")
      assert.truthy(until_true(function() return got ~= nil end))
      assert.same({ "hi bob", "alice@example.test/r" }, { got:get_child_text("body"), got.attr.from })
      -- terminate: the held request and the terminating one are answered
      local r3 = c:send("", " type='terminate'")
      assert.equal(200, r2:answer().status)
      a = r3:answer()
      assert.equal("terminate", a.body.attr.type, a.raw)
      assert.truthy(until_true(function() return srv:session("alice@example.test/r") == nil end))
      assert.equal(1, service:count())
      a = c:ask("")
      assert.truthy(terminated(a, "item-not-found"), "the sid is forgotten")
      bob:close()
    end)
  end)

  it("loses nothing when a held request's connection drops (XEP-0124 §14.3)", function()
    run(nil, function(_, hport, xport)
      local c = login(hport)
      local bob = assert(serve.login(xport, "bob", "pw"))
      local held = c:send("")
      local lost = c.rid
      lxmpp.sleep(0.1)
      held.c:close()
      lxmpp.sleep(0.2)
      bob:send(st.message({ to = "alice@example.test/r", type = "chat" }):tag("body"):text("still here"):up())
      lxmpp.sleep(0.2)
      -- the client repeats the request whose answer it did not get: the
      -- message is in that answer (written to the dead connection, kept in
      -- the cache), or, when the listener saw the connection go first, in
      -- the next one
      local a = c:send("", nil, lost):answer()
      assert.equal(200, a.status)
      assert.falsy(a.body.attr.type, a.raw)
      if not a.body.tags[1] then a = c:ask("") end
      local m = a.body:get_child("message", "jabber:client")
      assert.equal("still here", m and m:get_child_text("body"), a.raw)
      bob:close()
    end)
  end)

  it("forwards payloads in rid order when requests arrive out of order", function()
    run(nil, function(_, hport)
      local c = login(hport)
      local base = c.rid
      local later = c:send("<iq xmlns='jabber:client' type='get' id='second'><ping xmlns='urn:xmpp:ping'/></iq>", nil, base + 2)
      lxmpp.sleep(0.1)
      assert.truthy(later:pending())
      local first = c:send("<iq xmlns='jabber:client' type='get' id='first'><ping xmlns='urn:xmpp:ping'/></iq>", nil, base + 1)
      c.rid = base + 2
      local a = first:answer()
      local i1, i2 = a.raw:find("id='first'", 1, true), a.raw:find("id='second'", 1, true)
      assert.truthy(i1 and i2 and i1 < i2, a.raw)
    end)
  end)

  it("answers an unknown sid, a replayed rid (its cached answer) and a rid beyond the window", function()
    run(nil, function(_, hport, _, service)
      local a = request(hport, ("<body xmlns='%s' sid='nope' rid='5'/>"):format(NS))
      assert.equal(200, a.status)
      assert.truthy(terminated(a, "item-not-found"), a.raw)
      local c = create(hport)
      local auth = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" ..
        core.base64_encode("\0alice\0pw") .. "</auth>"
      local first = c:ask(auth)
      assert.truthy(first.body:get_child("success", "urn:ietf:params:xml:ns:xmpp-sasl"), first.raw)
      local again = c:send(auth, nil, c.rid):answer()
      assert.equal(first.raw, again.raw, "the replay gets the cached answer, not a second authentication")
      local replay0 = c:send("", nil, 1000):answer()
      assert.equal(c.answer0.raw, replay0.raw)
      a = c:send("", nil, c.rid + 3):answer()
      assert.truthy(terminated(a, "item-not-found"), a.raw)
      assert.equal(0, service:count())
      a = c:send("", nil, c.rid + 1):answer()
      assert.truthy(terminated(a, "item-not-found"), a.raw)
    end)
  end)

  it("refuses bodies too large or not well-formed, and what is not a BOSH body", function()
    run({ limits = { max_body = 1000 } }, function(_, hport, _, service)
      local a = request(hport, ("<body xmlns='%s' rid='1' to='example.test'>%s</body>"):format(NS, ("x"):rep(2000)))
      assert.equal(413, a.status)
      a = request(hport, ("<body xmlns='%s' rid='1' to='example.test'><a></b></body>"):format(NS))
      assert.equal(400, a.status)
      assert.truthy(terminated(a, "bad-request"))
      a = request(hport, ("<body xmlns='%s' rid='1' to='example.test'><!-- c --></body>"):format(NS))
      assert.equal(400, a.status)
      a = request(hport, "<body rid='1' to='example.test'/>")
      assert.equal(400, a.status)
      a = request(hport, ("<body xmlns='%s' rid='x1' to='example.test'/>"):format(NS))
      assert.equal(400, a.status)
      a = request(hport, ("<body xmlns='%s' rid='1' to='elsewhere.test' hold='1' wait='5'/>"):format(NS))
      assert.truthy(terminated(a, "host-unknown"), a.raw)
      assert.equal(0, service:count())
    end)
  end)

  it("ends a session that polls faster than 'polling' (XEP-0124 §11-§12)", function()
    run({ limits = { polling = 30 } }, function(_, hport, _, service)
      local c2 = create(hport, nil, nil, 0)
      assert.truthy(c2.sid)
      assert.same({ "0", "1" }, { c2.answer0.body.attr.hold, c2.answer0.body.attr.requests })
      -- hold='0': every request is answered at once
      local r = c2:ask("")
      assert.equal(200, r.status)
      assert.falsy(r.body.attr.type)
      r = c2:ask("")
      assert.truthy(terminated(r, "policy-violation"), r.raw)
      assert.equal(0, service:count())
    end)
  end)

  it("answers CORS preflights when configured, and only POST otherwise", function()
    run({ cors = { origins = { "https://web.test" } } }, function(_, hport)
      local a = raw(hport, "OPTIONS /http-bind HTTP/1.1\r\nHost: x\r\nOrigin: https://web.test\r\n"
        .. "Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n\r\n")
      assert.equal(204, a.status)
      assert.truthy(a.head:find("Access-Control-Allow-Origin: https://web.test", 1, true), a.head)
      local xml = ("<body xmlns='%s' xmlns:xmpp='urn:xmpp:xbosh' to='example.test' wait='60' hold='1' rid='1' "
        .. "xmpp:version='1.0'/>"):format(NS)
      a = raw(hport, ("POST /http-bind HTTP/1.1\r\nHost: x\r\nOrigin: https://web.test\r\nContent-Length: %d\r\n\r\n%s")
        :format(#xml, xml))
      assert.equal(200, a.status)
      assert.truthy(a.body.attr.sid)
      assert.truthy(a.head:find("Access-Control-Allow-Origin: https://web.test", 1, true), a.head)
      a = raw(hport, "GET /http-bind HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.equal(405, a.status)
    end)
  end)

  it("acknowledges requests when the client asked for acks (XEP-0124 §9.1)", function()
    run(nil, function(_, hport)
      local c, a = create(hport, " ack='1'")
      assert.equal("1000", a.body.attr.ack, a.raw)
      local held = c:send("")
      lxmpp.sleep(0.1)
      assert.truthy(held:pending())
      local later = c:send("")
      a = held:answer()
      assert.equal(tostring(c.rid), a.body.attr.ack, a.raw)
      assert.truthy(later:pending())
      local d = create(hport)
      assert.falsy(d.answer0.body.attr.ack)
    end)
  end)

  it("close_all answers held requests with system-shutdown and ends the streams", function()
    run(nil, function(srv, hport, _, service)
      local c = login(hport)
      local held = c:send("")
      lxmpp.sleep(0.1)
      service:close_all()
      local a = held:answer()
      assert.truthy(terminated(a, "system-shutdown"), a.raw)
      assert.truthy(until_true(function() return srv:session("alice@example.test/r") == nil end))
      local _, b = create(hport)
      assert.truthy(terminated(b, "system-shutdown"), b.raw)
    end)
  end)

  it("limits sessions per address", function()
    run({ limits = { per_ip = 2 } }, function(_, hport, _, service)
      assert.truthy(create(hport).sid)
      assert.truthy(create(hport).sid)
      local c, a = create(hport)
      assert.falsy(c.sid)
      assert.truthy(terminated(a, "policy-violation"), a.raw)
      assert.equal(2, service:count())
    end)
  end)

  it("ends an abandoned session after 'inactivity' seconds: the resource is unbound", function()
    run({ limits = { inactivity = 2 * F } }, function(srv, hport, _, service)
      local c = login(hport)
      assert.truthy(srv:session("alice@example.test/r"))
      assert.truthy(until_true(function() return srv:session("alice@example.test/r") == nil end, 5))
      assert.equal(0, service:count())
      local a = c:ask("")
      assert.truthy(terminated(a, "item-not-found"), a.raw)
    end)
  end)
end)

describe("server BOSH, the stream's side", function()
  it("answers a held request empty after 'wait' seconds", function()
    run(nil, function(_, hport)
      -- a session asking wait='1' (the others here ask 60)
      local xml = ("<body xmlns='%s' xmlns:xmpp='urn:xmpp:xbosh' to='example.test' wait='1' hold='1' rid='7' "
        .. "xmpp:version='1.0'/>"):format(NS)
      local e = setmetatable({ port = hport, rid = 7 }, Client)
      e.sid = request(hport, xml).body.attr.sid
      local t0 = core.now()
      local a = e:ask("")
      assert.equal(200, a.status)
      assert.falsy(a.body.attr.type)
      assert.falsy(a.body.tags[1], a.raw)
      assert.truthy(core.now() - t0 >= 0.9, "held about a second")
    end)
  end)

  it("delivers a stream error in a terminate body (remote-stream-error)", function()
    run(nil, function(srv, hport, _, service)
      local c = create(hport)
      local a = c:ask("<message xmlns='jabber:client' to='bob@example.test'><body>early</body></message>")
      assert.truthy(terminated(a, "remote-stream-error"), a.raw)
      local e = a.body:get_child("error", "http://etherx.jabber.org/streams")
      assert.truthy(e and e:get_child("not-authorized", "urn:ietf:params:xml:ns:xmpp-streams"), a.raw)
      assert.equal(0, service:count())
      assert.equal(0, srv:stats().c2s or 0)
    end)
  end)

  it("ends the stream on a stanza over max_stanza_size (policy-violation)", function()
    run(nil, function(srv, hport)
      local c = login(hport)
      local a = c:ask("<message xmlns='jabber:client' to='bob@example.test'><body>" .. ("x"):rep(3000)
        .. "</body></message>")
      assert.truthy(terminated(a, "remote-stream-error"), a.raw)
      assert.truthy(a.raw:find("policy-violation", 1, true), a.raw)
      assert.truthy(until_true(function() return srv:session("alice@example.test/r") == nil end))
    end, { limits = { max_stanza_size = 2000 } })
  end)

  it("over plain HTTP without consider_secure: no PLAIN, no STARTTLS, and <starttls/> ends the session", function()
    run({ consider_secure = false }, function(_, hport, _, service)
      local c, a = create(hport)
      assert.truthy(c.sid, a.raw)
      assert.falsy(a.raw:find(">PLAIN<", 1, true), a.raw)
      assert.falsy(a.raw:find("xmpp-tls", 1, true), a.raw)      -- TLS is HTTPS's, never STARTTLS
      a = c:ask("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
      if a.body.attr.type ~= "terminate" then a = c:ask("") end
      assert.equal("terminate", a.body.attr.type, a.raw)
      assert.truthy(until_true(function() return service:count() == 0 end))
    end)
  end)

  it("lets output beyond max_queue wait for the next polls, in order (drain)", function()
    run(nil, function(_, hport, xport)
      local c = login(hport)
      local bob = assert(serve.login(xport, "bob", "pw"))
      for i = 1, 10 do
        bob:send(st.message({ to = "alice@example.test/r", type = "chat" }):tag("body"):text(("%d %s"):format(i, ("y"):rep(500))):up())
      end
      lxmpp.sleep(0.3)
      local got = {}
      for _ = 1, 20 do
        if #got == 10 then break end
        local a = c:ask("")
        for _, m in ipairs(a.body.tags) do got[#got + 1] = tonumber(m:get_child_text("body"):match("^%d+")) end
      end
      assert.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, got)
      bob:close()
    end, { limits = { max_queue = 2048 } })
  end)

  -- past max_queue the stream keeps a backlog and holds its senders back;
  -- a peer that reads nothing for write_timeout is cut (docs/server.md)
  it("cuts a session that does not poll while its output piles up (the write bound)", function()
    run(nil, function(srv, hport, xport, service)
      local c = login(hport)
      local bob = assert(serve.login(xport, "bob", "pw"))
      for i = 1, 40 do
        bob:send(st.message({ to = "alice@example.test/r", type = "chat" }):tag("body"):text(("%d %s"):format(i, ("y"):rep(400))):up())
      end
      assert.truthy(until_true(function() return srv:session("alice@example.test/r") == nil end))
      local a = c:ask("")
      assert.equal("terminate", a.body.attr.type, a.raw)
      assert.equal(0, service:count())
      bob:close()
    end, { limits = { max_queue = 2048, max_unread = 4096, write_timeout = 1 } })
  end)

  it("checks keys (XEP-0124 §15): the sequence, a switch to a new one, repeats, and a wrong key ends the session", function()
    run(nil, function(_, hport, _, service)
      local function chain(seed, n)
        local k = { core.sha1_hex(seed) }
        for i = 2, n do k[i] = core.sha1_hex(k[i - 1]) end
        return k
      end
      local old, new = chain("first seed", 3), chain("second seed", 3)
      local c = create(hport, (" newkey='%s'"):format(old[3]))
      assert.truthy(c.sid)
      -- each request arrives while the one before it is held: it is
      -- answered (hold is 1), so every key below was taken
      local r1 = c:send("", (" key='%s'"):format(old[2]))
      local r2 = c:send("", (" key='%s' newkey='%s'"):format(old[1], new[3]))     -- the last key: switch (§15.5)
      local a1 = r1:answer()
      assert.equal(200, a1.status)
      assert.falsy(a1.body.attr.type, a1.raw)
      local r3 = c:send("", (" key='%s'"):format(new[2]))
      local a2 = r2:answer()
      assert.falsy(a2.body.attr.type, a2.raw)
      -- a repeat carries the key it had; with another one it is refused
      local again = c:send("", (" key='%s' newkey='%s'"):format(old[1], new[3]), c.rid - 1):answer()
      assert.equal(a2.raw, again.raw)
      assert.equal(1, service:count())
      -- a key that does not hash to the last one: not processed, the session ends
      local bad = c:send("", (" key='%s'"):format(old[3])):answer(2)
      assert.truthy(terminated(bad, "item-not-found"), bad and bad.raw)
      assert.truthy(until_true(function() return service:count() == 0 end))
      r3:answer()
      -- without a key at all, likewise
      local d = create(hport, (" newkey='%s'"):format(new[3]))
      local none = d:send(""):answer(2)
      assert.truthy(terminated(none, "item-not-found"), none and none.raw)
      assert.truthy(until_true(function() return service:count() == 0 end))
    end)
  end)
end)

-- SASL2 (XEP-0388) over BOSH (XEP-0206): the <authentication/> feature in
-- the session's first features, Bind2 (XEP-0386) and a FAST token
-- (XEP-0484) in the same request, and no stream restart: the new features
-- follow <success/> on the same session (XEP-0388 §2.6.1), so an
-- xmpp:restart (XEP-0206 §5, for RFC 6120 SASL) is refused after it. The
-- token then logs a second BOSH session in with HT-SHA-256-NONE (a
-- consider_secure session has no TLS channel binding to offer).
describe("server BOSH with SASL2, Bind2 and FAST", function()
  local NS2 = "urn:xmpp:sasl:2"
  local NS_BIND2 = "urn:xmpp:bind:0"
  local NS_FAST = "urn:xmpp:fast:0"
  local NS_STREAMS = "http://etherx.jabber.org/streams"
  local UA = "d4f2c3a1-7b6e-4c1d-9f8a-0123456789ab"

  -- The elements of answers to c's requests until one named `name` came
  -- (an empty request held for each further answer): that one and all.
  local function until_element(c, first, name)
    local all, a = {}, first
    for _ = 1, 5 do
      assert.equal(200, a.status)
      assert.falsy(a.body.attr.type, a.raw)
      for _, el in ipairs(a.body.tags) do all[#all + 1] = el end
      for _, el in ipairs(all) do if el.name == name then return el, all end end
      a = c:ask("")
    end
    error("no <" .. name .. "/> in the answers")
  end

  local function authenticate(mech, ir, inline)
    return "<authenticate xmlns='" .. NS2 .. "' mechanism='" .. mech .. "'><initial-response>" ..
      core.base64_encode(ir) .. "</initial-response><user-agent id='" .. UA .. "'><software>spec</software>" ..
      "</user-agent>" .. (inline or "") .. "</authenticate>"
  end

  it("logs in, binds and gets a token in one request, with no restart; the token logs in again", function()
    run(nil, function(srv, hport)
      local c, a = create(hport)
      local f = a.body:get_child("features", NS_STREAMS)
      local auth = assert(f:get_child("authentication", NS2), a.raw)
      local inline = auth:get_child("inline")
      assert.truthy(inline:get_child("bind", NS_BIND2))
      local fast = assert(inline:get_child("fast", NS_FAST), a.raw)
      assert.equal("HT-SHA-256-NONE", fast:get_child_text("mechanism"))
      a = c:ask(authenticate("PLAIN", "\0alice\0pw", "<bind xmlns='" .. NS_BIND2 .. "'><tag>web</tag>" ..
        "<enable xmlns='urn:xmpp:sm:3'/></bind><request-token xmlns='" .. NS_FAST ..
        "' mechanism='HT-SHA-256-NONE'/>"))
      local features, all = until_element(c, a, "features")
      local success = all[1]
      assert.equal("success", success.name, a.raw)
      local full = success:get_child_text("authorization-identifier")
      assert.matches("^alice@example%.test/web%.%x+$", full)
      local bound = assert(success:get_child("bound", NS_BIND2))
      assert.truthy(bound:get_child("metadata", "urn:xmpp:mam:2"))
      assert.truthy(bound:get_child("enabled", "urn:xmpp:sm:3"))
      local token = assert(success:get_child("token", NS_FAST)).attr.token
      assert.truthy(token and #token > 0)
      -- the features of the authenticated stream, on the same session: no
      -- <authentication/>, no resource binding (Bind2 did it)
      assert.equal(NS_STREAMS, features.attr.xmlns)
      assert.is_nil(features:get_child("authentication", NS2))
      assert.is_nil(features:get_child("bind", "urn:ietf:params:xml:ns:xmpp-bind"))
      local sess = assert(srv:session(full))
      assert.equal(UA, sess.user_agent)
      -- the session carries stanzas as it is
      a = c:ask("<iq xmlns='jabber:client' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
      local pong = until_element(c, a, "iq")
      assert.same({ "result", "p1" }, { pong.attr.type, pong.attr.id })
      -- XEP-0388 §2.6.1: no restart after a SASL2 success
      a = c:ask("", " xmpp:restart='true'")
      assert.truthy(terminated(a, "bad-request"), a.raw)
      assert.truthy(until_true(function() return srv:session(full) == nil end))
      -- a second session logs in with the token: one message, the server's proof back
      local c2 = create(hport)
      a = c2:ask(authenticate("HT-SHA-256-NONE", "alice\0" .. core.hmac("sha256", token, "Initiator"),
        "<bind xmlns='" .. NS_BIND2 .. "'><tag>web</tag></bind><fast xmlns='" .. NS_FAST .. "'/>"))
      success = select(2, until_element(c2, a, "features"))[1]
      assert.equal("success", success.name, a.raw)
      assert.equal(core.hmac("sha256", token, "Responder"),
        core.base64_decode(success:get_child_text("additional-data")))
      assert.equal(full, success:get_child_text("authorization-identifier"))   -- the same installation
      assert.truthy(srv:session(full))
      -- a wrong token is refused like a wrong password
      local c3 = create(hport)
      a = c3:ask(authenticate("HT-SHA-256-NONE", "alice\0" .. core.hmac("sha256", "not the token", "Initiator")))
      local failure = until_element(c3, a, "failure")
      assert.truthy(failure:get_child("not-authorized", "urn:ietf:params:xml:ns:xmpp-sasl"), a.raw)
    end)
  end)

  it("runs a SCRAM exchange over several requests, then takes stanzas without a restart", function()
    run(nil, function(srv, hport)
      local c = create(hport)
      local sc = assert(core.sasl_client({ mechanism = "SCRAM-SHA-256", username = "bob", password = "pw" }))
      local a = c:ask(authenticate("SCRAM-SHA-256", assert(sc:step()), "<bind xmlns='" .. NS_BIND2 .. "'/>"))
      local ch = until_element(c, a, "challenge")
      a = c:ask("<response xmlns='" .. NS2 .. "'>" ..
        core.base64_encode(assert(sc:step(core.base64_decode(ch:get_text())))) .. "</response>")
      local _, all = until_element(c, a, "features")
      local success = all[1]
      assert.equal("success", success.name)
      assert.truthy(sc:finish(core.base64_decode(success:get_child_text("additional-data"))))
      local full = success:get_child_text("authorization-identifier")
      assert.truthy(srv:session(full))
      a = c:ask("<iq xmlns='jabber:client' type='get' id='p2'><ping xmlns='urn:xmpp:ping'/></iq>")
      assert.equal("result", until_element(c, a, "iq").attr.type)
    end)
  end)
end)

-- A TCP stream that pauses its reading stops reading the socket; a BOSH
-- session cannot, so while its stream does not read (here: a host auth
-- callback that takes its time) it holds its client back instead: no early
-- answers, what waits kept as bytes within a bound, and an overactive
-- client ends with policy-violation (docs/server.md, "BOSH").
describe("server BOSH while the stream does not read", function()
  local release                      -- set to true: the auth callback answers
  local function slow_auth(user, password)
    while not release do lxmpp.sleep(0.02) end
    return user == "alice" and password == "pw"
  end
  local function auth_body(user, pw)
    return "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
      .. core.base64_encode("\0" .. user .. "\0" .. pw) .. "</auth>"
  end
  -- a body of many small elements: its tree is many times its bytes (b2.py of the audit)
  local stuffing = ("<m>" .. ("<a/>"):rep(30) .. "</m>"):rep(3500)

  it("keeps what waits as bytes within a bound, answers nothing early, and ends an overactive client", function()
    release = false
    run(nil, function(srv, hport, _, service)
      local c = create(hport)
      local s = service.sessions[c.sid]
      local r1 = c:send(auth_body("alice", "pw"))
      assert.truthy(until_true(function() return s.paused end))
      collectgarbage("collect")
      local before = collectgarbage("count")
      local r2 = c:send(stuffing)
      assert.truthy(until_true(function() return s.rid == c.rid end))
      collectgarbage("collect")
      local grew = collectgarbage("count") - before
      -- what waits is bytes, not trees (about 30 MiB), within the bound; nothing answered early
      assert.truthy(grew < 4096, ("the server grew by %.0f KiB while the stream did not read"):format(grew))
      lxmpp.sleep(0.1)
      assert.truthy(r1:pending(), "the request held first is not answered early")
      assert.truthy(r2:pending())
      local max_n, max_bytes = s:inbox_bounds()
      assert.same({ 0, 3500 }, { s.inbox.trees, s.inbox.n })
      assert.truthy(s.inbox.bytes <= max_bytes and s.inbox.n <= max_n, s.inbox.bytes)
      -- a third simultaneous request (requests='2'): overactive (XEP-0124 §11)
      local a = c:send(stuffing):answer()
      assert.truthy(terminated(a, "policy-violation"), a and a.raw)
      assert.truthy(terminated(r1:answer(), "policy-violation"))
      assert.truthy(terminated(r2:answer(), "policy-violation"))
      assert.truthy(until_true(function() return service:count() == 0 and srv:stats().streams == 0 end))
      release = true
    end, { auth = slow_auth })
  end)

  it("ends a client whose requests, answered by 'wait', bring more than the bound", function()
    release = false
    run({ limits = { max_body = 65536 } }, function(_, hport, _, service)
      local xml = ("<body xmlns='%s' xmlns:xmpp='urn:xmpp:xbosh' to='example.test' wait='1' hold='1' rid='7' "
        .. "xmpp:version='1.0'/>"):format(NS)
      local c = setmetatable({ port = hport, rid = 7 }, Client)
      c.sid = request(hport, xml).body.attr.sid
      local s = service.sessions[c.sid]
      local r1 = c:send(auth_body("alice", "pw"))
      assert.truthy(until_true(function() return s.paused end))
      local chunk = ("<m>" .. ("<a/>"):rep(30) .. "</m>"):rep(400)      -- about 52 KB
      local a
      for _ = 1, 6 do                    -- each waits its 'wait' second, then the next comes
        a = c:send(chunk):answer(3)
        if terminated(a, "policy-violation") then break end
        assert.truthy(a and a.status == 200 and not a.body.attr.type, a and a.raw)
        assert.truthy(s.inbox.bytes <= 2 * 65536)
      end
      assert.truthy(terminated(a, "policy-violation"), a and a.raw)
      assert.equal(200, r1:answer().status)                -- (answered empty after its 'wait')
      assert.truthy(until_true(function() return service:count() == 0 end))
      release = true
    end, { auth = slow_auth })
  end)

  it("lets a client that waits for its answers go on once the stream reads again", function()
    release = false
    run(nil, function(_, hport, _, service)
      local c = create(hport)
      local s = service.sessions[c.sid]
      local r1 = c:send(auth_body("alice", "pw"))
      assert.truthy(until_true(function() return s.paused end))
      local r2 = c:send("")                        -- a poll while it waits
      lxmpp.sleep(0.1)
      assert.truthy(r1:pending())
      release = true
      local a = r1:answer()                         -- the oldest held request has the answer
      assert.truthy(a.body:get_child("success", "urn:ietf:params:xml:ns:xmpp-sasl"), a.raw)
      assert.truthy(r2:pending())
      -- and goes on as usual: a request beyond 'hold' has the oldest answered, with what was written
      local r3 = c:send("", " xmpp:restart='true'")
      a = r2:answer()
      assert.truthy(a.raw:find("urn:ietf:params:xml:ns:xmpp-bind", 1, true), a.raw)
      local r4 = c:send("<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        .. "<resource>r</resource></bind></iq>")
      a = r3:answer()
      assert.truthy(a.raw:find("alice@example.test/r", 1, true), a.raw)
      assert.truthy(r4:pending())
      r4.c:close()
    end, { auth = slow_auth })
  end)
end)
