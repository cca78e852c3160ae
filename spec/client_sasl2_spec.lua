-- The client's modern login against the embedded server: SASL2 (XEP-0388)
-- when offered, Bind2 (XEP-0386) with stream management enabled inline,
-- XEP-0198 resumption inside <authenticate/> (and Bind2 in the same
-- exchange when it fails), FAST tokens (XEP-0484: request, keep in the
-- saved state, use, rotate, invalidate, token-only logins), the XEP-0474
-- downgrade check, the XEP-0440 choice, and the classic path with
-- sasl2 = false.
local lxmpp = require "lxmpp"
local serve = require "spec.support.serve"
local slow = require "spec.support.slow"

local USERS = { alice = "alice-pw", bob = "bob-pw" }

-- Logs in alice with a debug logger; returns the client (or nil, msg,
-- cond) and the log lines.
local function login(port, extra, res)
  local log = {}
  local o = { bind2 = true, debug = true, logger = function(level, msg) log[#log + 1] = level .. " " .. msg end }
  for k, v in pairs(extra or {}) do o[k] = v end
  if o.auto_bind then o.bind2, o.auto_bind = nil, nil end
  local pw = USERS.alice
  if o.password == false then
    pw, o.password = nil, nil
  end
  local c, msg, cond = serve.login(port, "alice", pw, res or "phone", o)
  return c, log, msg, cond
end

local logged = serve.logged

local count = serve.count_logged

-- Drops the link and waits for the "reconnected" event: resumed or not.
local function bounce(c)
  local w = lxmpp.task.waiter()
  local id = c:on("reconnected", function(resumed) w:wake(resumed) end)
  c.conn:abort()
  local t = lxmpp.core.timer(10 * slow.factor, w)
  local resumed = w:wait()
  t:stop()
  c:off(id)
  assert(resumed ~= nil, "no reconnection")
  return resumed
end

local function saver()
  local box = {}
  box.save = function(s) box.state = s end
  return box
end

describe("client: SASL2, Bind2 and inline stream management", function()
  it("logs in with SASL2 and binds with Bind2 and inline <enable/>, no restart, no <bind/> iq", function()
    serve.run({ users = USERS }, function(srv, port)
      local box = saver()
      local c, log = login(port, { stream_management = { save = box.save } })
      assert.truthy(c)
      assert.truthy(logged(log, "OUT <authenticate xmlns='urn:xmpp:sasl:2' mechanism='SCRAM%-SHA%-256%-PLUS'"))
      -- XEP-0440 on TLS 1.3: tls-exporter
      assert.equal("tls-exporter", c.channel_binding)
      -- the resource is the tag and the server's part; c.jid from <authorization-identifier/>
      assert.matches("^alice@example%.test/phone%.", c.jid)
      assert.equal(0, count(log, "urn:ietf:params:xml:ns:xmpp%-bind"))
      assert.equal(0, count(log, "OUT <enable"))
      -- one stream restart (after STARTTLS), none after SASL2
      assert.equal(2, count(log, "OUT <%?xml"))
      assert.is_true(c.sm.enabled)
      assert.truthy(c.sm.id)
      -- the server knows our installation's user-agent id, and it was saved
      local ua = box.state.ua_id
      assert.matches("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x+$", ua)
      assert.equal(ua, srv:session(c.jid).user_agent)
      -- it works
      local p = assert(c:ping())
      assert.truthy(p)
      c:close()
    end)
  end)

  it("keeps an asked-for resource (SASL2, then RFC 6120 bind) unless bind2 = true; Bind2 when none is asked "
    .. "and an archive anchor is known", function()
    serve.run({ users = USERS }, function(_, port)
      local c, log = login(port, { auto_bind = true })
      assert.truthy(c)
      assert.equal("alice@example.test/phone", c.jid)
      assert.truthy(logged(log, "OUT <authenticate"))
      assert.truthy(logged(log, "urn:ietf:params:xml:ns:xmpp%-bind"))
      assert.is_true(c.sm.enabled)
      c:close()
      -- no anchor to catch up from (features/catchup.lua): the classic bind
      local c2, log2 = login(port, { auto_bind = true, jid = "alice@example.test" })
      assert.truthy(c2)
      assert.matches("^alice@example%.test/", c2.jid)
      assert.truthy(logged(log2, "urn:ietf:params:xml:ns:xmpp%-bind"))
      c2:close()
      local state = { inbound = 0, acked = 0, queue = {}, archive = { id = "seen-before" } }
      local c3, log3 = login(port, { auto_bind = true, jid = "alice@example.test",
        stream_management = { state = state } })
      assert.truthy(c3)
      assert.matches("^alice@example%.test/", c3.jid)
      assert.is_nil(logged(log3, "urn:ietf:params:xml:ns:xmpp%-bind"))
      c3:close()
    end)
  end)

  it("uses user_agent.id, and keeps a saved one across starts", function()
    serve.run({ users = USERS }, function(srv, port)
      local id = "0f1e2d3c-4b5a-4697-8877-665544332211"
      local c = assert(login(port, { user_agent = { id = id, software = "spec", device = "loopback" } }))
      assert.equal(id, srv:session(c.jid).user_agent)
      c:close()
      local box = saver()
      local c2 = assert(login(port, { stream_management = { save = box.save } }))
      local first = box.state.ua_id
      c2:close()
      local c3 = assert(login(port, { stream_management = { state = box.state, save = box.save }, fast = false }))
      assert.equal(first, srv:session(c3.jid).user_agent)
      assert.equal(first, box.state.ua_id)
      c3:close()
    end)
  end)

  it("takes the classic path with sasl2 = false", function()
    serve.run({ users = USERS }, function(srv, port)
      local c, log = login(port, { sasl2 = false })
      assert.truthy(c)
      assert.equal("alice@example.test/phone", c.jid)
      assert.is_nil(logged(log, "OUT <authenticate"))
      assert.is_nil(srv:session(c.jid).user_agent)
      assert.is_true(c.sm.enabled)
      c:close()
    end)
  end)

  it("takes the classic path when the server offers no SASL2", function()
    serve.run({ users = USERS, sasl2 = false }, function(_, port)
      local box = saver()
      local c, log = login(port, { stream_management = { save = box.save } })
      assert.truthy(c)
      assert.equal("alice@example.test/phone", c.jid)
      assert.is_nil(logged(log, "OUT <authenticate"))
      assert.is_nil(box.state.ua_id)
      c:close()
    end)
  end)

  it("resumes inside <authenticate/> on reconnection and resends what was not acknowledged", function()
    serve.run({ users = USERS }, function(_, port)
      local bob = assert(serve.login(port, "bob", USERS.bob, "b"))
      bob:send_presence()
      local c, log = login(port)
      assert.truthy(c)
      local jid = c.jid
      c.sm.ack_every, c.sm.ack_delay = 1000, 1000     -- nothing acknowledged before the link drops
      local n0 = count(log, "OUT <authenticate")
      -- a stanza counted as sent that never reached the server (lost with the link)
      local lost = lxmpp.stanza.message({ to = bob.jid, type = "chat", id = "lost1" }, "kept")
      require("lxmpp.smcore").sent(c.sm, tostring(lost))
      local got
      local w = lxmpp.task.waiter()
      bob:on("message", function(m) if m:get_child_text("body") == "kept" then got = m; w:wake() end end)
      assert.is_true(bounce(c))
      local t = lxmpp.core.timer(5 * slow.factor, w)
      w:wait()
      t:stop()
      assert.truthy(got, "the unacknowledged stanza was not sent again after the inline resumption")
      assert.equal(jid, c.jid)
      assert.equal(n0 + 1, count(log, "OUT <authenticate"))
      assert.is_nil(logged(log, "OUT <resume"))              -- not the classic <resume/>
      assert.truthy(c.sasl_mechanism:match("^HT%-SHA%-256"))  -- with the FAST token
      assert.truthy(c:ping())
      c:close()
      bob:close()
    end)
  end)

  it("binds with Bind2 in the same exchange when the inline resumption fails", function()
    serve.run({ users = USERS }, function(_, port)
      local c, log = login(port)
      assert.truthy(c)
      local unacked = {}
      c:on("unacked", function(list) for _, s in ipairs(list) do unacked[#unacked + 1] = s end end)
      c.sm.id = "no-such-session"
      local n0 = count(log, "OUT <authenticate")
      assert.is_false(bounce(c))
      assert.equal(n0 + 1, count(log, "OUT <authenticate"))
      assert.equal(0, count(log, "OUT <enable"))
      assert.matches("^alice@example%.test/phone%.", c.jid)
      assert.is_true(c.sm.enabled)
      assert.truthy(c.sm.id ~= "no-such-session")
      assert.truthy(c:ping())
      c:close()
    end)
  end)
end)

describe("client: carbons inline in Bind2", function()
  it("enables carbons again inside Bind2 when the session they were on could not be resumed", function()
    serve.run({ users = USERS }, function(srv, port)
      local c, log = login(port)
      assert.truthy(c)
      assert.truthy(c:enable_carbons())
      local iqs = count(log, "OUT <iq[^\n]*urn:xmpp:carbons:2")
      c.sm.id = "no-such-session"
      assert.is_false(bounce(c))
      assert.is_true(srv:session(c.jid).carbons == true)
      assert.equal(iqs, count(log, "OUT <iq[^\n]*urn:xmpp:carbons:2"))   -- no second <enable/> iq
      assert.is_true(c.carbons.enabled)
      c:close()
    end)
  end)
end)

-- XEP-0386 §"Performing the bind" with XEP-0313 §"Archive metadata":
-- <bound/>'s <metadata/> as c.archive_metadata, and c:mam_catch_up using
-- it to fetch what the archive held at the bind, and nothing after it
describe("client: the archive metadata of Bind2's <bound/>", function()
  local function archived(srv, user)
    local page = srv.store:archive_query(user, { max = 100 })
    local ids = {}
    for i, item in ipairs(page.items) do ids[i] = item.id end
    return ids
  end

  local function bodies(list)
    local out = {}
    for i, m in ipairs(list) do out[i] = m.message:get_child_text("body") end
    return out
  end

  it("reads it into c.archive_metadata; c:mam_catch_up fetches up to it, only once, in bounded parts", function()
    serve.run({ users = USERS }, function(srv, port)
      local c0 = assert(login(port))
      assert.same({}, c0.archive_metadata)                 -- an empty archive: no start, no end
      c0:close()
      local bob = assert(serve.login(port, "bob", USERS.bob, "desk"))
      for i = 1, 3 do assert(bob:send_message("alice@example.test", "old " .. i)) end
      assert.truthy(serve.until_true(function() return srv.store:count_offline("alice") == 3 end))
      local c, log = login(port)
      local ids = archived(srv, "alice")
      local md = c.archive_metadata
      assert.equal(ids[1], md.start.id)
      assert.equal(ids[3], md["end"].id)
      assert.is_true(math.abs(md["end"].stamp - os.time()) < 60)
      -- Bind2 cleared the offline messages: the archive has them
      local got = serve.collect(c, "message")
      c:send_presence()
      assert(bob:send_message("alice@example.test", "live"))
      assert.truthy(serve.until_true(function() return #got == 1 end))
      lxmpp.sleep(0.2 * slow.factor)
      assert.same({ "live" }, { got[1]:get_child_text("body"), got[2] })
      -- the catch-up stops at the bind: "live" is in the archive too, and came live
      local r = assert(c:mam_catch_up())
      assert.same({ "old 1", "old 2", "old 3" }, bodies(r.messages))
      assert.is_true(r.complete)
      assert.equal(ids[3], r.last)
      assert.equal(4, #archived(srv, "alice"))
      -- what came live carries its archive id: a catch-up after it finds nothing
      local live_id = c:stanza_id(got[1])
      assert.equal(archived(srv, "alice")[4], live_id)
      r = assert(c:mam_catch_up{ after = live_id })
      assert.same({ {}, true, live_id }, { r.messages, r.complete, r.last })
      -- from the newest seen: no query at all
      local iqs = count(log, "OUT <iq")
      r = assert(c:mam_catch_up{ after = ids[3] })
      assert.same({}, r.messages)
      assert.is_true(r.complete)
      assert.equal(iqs, count(log, "OUT <iq"))
      -- at most max, going on after last, a page at a time
      r = assert(c:mam_catch_up{ after = ids[1], max = 1 })
      assert.same({ "old 2" }, bodies(r.messages))
      assert.is_false(r.complete)
      r = assert(c:mam_catch_up{ after = r.last, page = 1 })
      assert.same({ "old 3" }, bodies(r.messages))
      assert.is_true(r.complete)
      -- an id the archive does not know
      local none, _, cond = c:mam_catch_up{ after = "no-such-id" }
      assert.is_nil(none)
      assert.equal("item-not-found", cond)
      assert.error_matches(function() c:mam_catch_up{ after = 5 } end, "after must be an archive id")
      assert.error_matches(function() c:mam_catch_up{ max = 0 } end, "max must be a positive integer")
      assert.error_matches(function() c:mam_catch_up{ since = 1 } end, "unknown option since")
      c:close()
      bob:close()
    end)
  end)

  it("has none after a classic bind; c:mam_metadata asks, and c:mam_catch_up uses that", function()
    serve.run({ users = USERS }, function(srv, port)
      local bob = assert(serve.login(port, "bob", USERS.bob, "desk"))
      assert(bob:send_message("alice@example.test", "one"))
      assert(bob:send_message("alice@example.test", "two"))
      assert.truthy(serve.until_true(function() return #archived(srv, "alice") == 2 end))
      local c = assert(login(port, { bind2 = false }))
      assert.equal("alice@example.test/phone", c.jid)
      assert.is_nil(c.archive_metadata)
      local ids = archived(srv, "alice")
      local md = assert(c:mam_metadata())
      assert.same({ ids[1], ids[2] }, { md.start.id, md["end"].id })
      local r = assert(c:mam_catch_up())
      assert.same({ "one", "two" }, bodies(r.messages))
      assert.is_true(r.complete)
      c:close()
      bob:close()
    end)
    serve.run({ users = USERS, archive = false }, function(_, port)
      local c = assert(login(port))
      assert.is_nil(c.archive_metadata)                    -- the server sent none
      local none, _, cond = c:mam_catch_up()
      assert.is_nil(none)
      assert.equal("service-unavailable", cond)
      c:close()
    end)
  end)

  it("reads <metadata/> strictly: ids required, start and end together, bad stamps left out", function()
    local mam = require "lxmpp.plugins.mam"
    local function md(inner)
      return mam.read_metadata(lxmpp.stanza.parse("<metadata xmlns='urn:xmpp:mam:2'>" .. inner .. "</metadata>"))
    end
    assert.same({}, md(""))
    assert.same({ start = { id = "a", stamp = 1219439344 }, ["end"] = { id = "b" } },
      md("<start id='a' timestamp='2008-08-22T21:09:04Z'/><end id='b' timestamp='yesterday'/>"))
    assert.same({ nil, "<start/> has no id" }, { md("<start/><end id='b'/>") })
    assert.same({ nil, "<end/> has no id" }, { md("<start id='a'/><end id=''/>") })
    assert.same({ nil, "<start/> and <end/> come together" }, { md("<end id='b'/>") })
    assert.same({ nil, "not an XEP-0313 <metadata/>" },
      { mam.read_metadata(lxmpp.stanza.parse("<metadata xmlns='urn:xmpp:mam:1'/>")) })
    assert.same({ nil, "not an XEP-0313 <metadata/>" }, { mam.read_metadata(nil) })
  end)
end)

describe("client: FAST tokens (XEP-0484)", function()
  it("requests a token, keeps it with its expiry in the state, and never logs it", function()
    serve.run({ users = USERS }, function(_, port)
      local box = saver()
      local c, log = login(port, { stream_management = { save = box.save } })
      assert.truthy(c)
      local f = box.state.fast
      assert.truthy(f)
      assert.equal("HT-SHA-256-EXPR", f.mechanism)     -- bound to the channel (tls-exporter)
      assert.truthy(f.expiry > os.time() + 86400)
      assert.truthy(#f.token >= 16)
      c:close()
      -- a restart with the saved state: the token, no password
      local c2, log2 = login(port, { password = false, stream_management = { state = box.state, save = box.save } })
      assert.truthy(c2)
      assert.truthy(logged(log2, "mechanism='HT%-SHA%-256%-EXPR'"))
      c2:close()
      for _, l in ipairs(log) do assert.is_nil(l:find(f.token, 1, true)) end
      for _, l in ipairs(log2) do assert.is_nil(l:find(f.token, 1, true)) end
    end)
  end)

  it("asks for HT-SHA-256-NONE when the stream has no channel binding", function()
    serve.run({ users = USERS, channel_binding = false }, function(_, port)
      local box = saver()
      local c = assert(login(port, { stream_management = { save = box.save } }))
      assert.equal("HT-SHA-256-NONE", box.state.fast.mechanism)
      c:close()
      local c2 = assert(login(port, { password = false, stream_management = { state = box.state } }))
      assert.equal("HT-SHA-256-NONE", c2.sasl_mechanism)
      c2:close()
    end)
  end)

  it("keeps the token the server rotates", function()
    serve.run({ users = USERS }, function(srv, port)
      local box = saver()
      local c = assert(login(port, { stream_management = { save = box.save } }))
      c:close()
      local old = box.state.fast.token
      -- the server's copy is past half its life: the next use rotates it
      local rec = srv.store:get("fast", "alice")
      for _, slot in pairs(rec) do
        for _, t in pairs(slot) do t.expiry = os.time() + 60 end
      end
      srv.store:set("fast", "alice", rec, "alice")
      local c2 = assert(login(port, { password = false, stream_management = { state = box.state, save = box.save } }))
      c2:close()
      assert.truthy(box.state.fast.token ~= old)
      local c3 = assert(login(port, { password = false, stream_management = { state = box.state, save = box.save } }))
      assert.truthy(c3.sasl_mechanism:match("^HT%-"))
      c3:close()
    end)
  end)

  it("forgets a refused token and logs in with the password in the same stream", function()
    serve.run({ users = USERS }, function(srv, port)
      local box = saver()
      local c = assert(login(port, { stream_management = { save = box.save } }))
      c:close()
      local old = box.state.fast.token
      srv:set_password("alice", USERS.alice)          -- revokes every token
      local c2, log = login(port, { stream_management = { state = box.state, save = box.save } })
      assert.truthy(c2)
      assert.truthy(logged(log, "refused our FAST token"))
      assert.truthy(c2.sasl_mechanism:match("^SCRAM"))
      assert.equal(2, count(log, "OUT <%?xml"))       -- one stream: the retry needed no new connection
      assert.truthy(box.state.fast and box.state.fast.token ~= old)   -- and a new token
      c2:close()
    end)
  end)

  it("fails clearly when the token is refused and no password is held", function()
    serve.run({ users = USERS }, function(srv, port)
      local box = saver()
      local c = assert(login(port, { stream_management = { save = box.save } }))
      c:close()
      srv:set_password("alice", "changed")
      local state = box.state
      local c2, _, msg, cond = login(port, { password = false, reconnect = false,
        stream_management = { state = state, save = box.save } })
      assert.is_nil(c2)
      assert.equal("not-authorized", cond)
      assert.matches("no password", msg)
      assert.is_nil(box.state.fast)                    -- invalidated
    end)
  end)

  it("keeps the state in a file of mode 0600 (lxmpp.state_file) and logs in from it after a restart", function()
    serve.run({ users = USERS }, function(_, port)
      local sf = require "lxmpp.state_file"
      local path = os.tmpname()
      os.remove(path)
      local c = assert(login(port, { stream_management = sf.open(path) }))
      c:close()
      local p = io.popen("stat -c %a " .. path)
      local mode = p:read("*l")
      p:close()
      assert.equal("600", mode)
      local state = assert(sf.load(path))
      assert.truthy(state.fast and state.fast.token)
      local f = assert(io.open(path, "rb"))
      local bytes = f:read("*a")
      f:close()
      assert.is_nil(bytes:find("return", 1, true))    -- data, not Lua code
      local c2 = assert(login(port, { password = false, stream_management = sf.open(path) }))
      assert.truthy(c2.sasl_mechanism:match("^HT%-"))
      c2:close()
      os.remove(path)
    end)
  end)

  it("follows channel_binding and mechanism: NONE with channel_binding = false, no token with a mechanism", function()
    serve.run({ users = USERS }, function(_, port)
      local box = saver()
      local c = assert(login(port, { channel_binding = false, stream_management = { save = box.save } }))
      assert.equal("HT-SHA-256-NONE", box.state.fast.mechanism)
      c:close()
      local c2 = login(port, { mechanism = "SCRAM-SHA-1", stream_management = { state = box.state } })
      assert.truthy(c2)
      assert.equal("SCRAM-SHA-1", c2.sasl_mechanism)
      c2:close()
    end)
  end)

  it("fails clearly with a token and no password where the server offers no SASL2", function()
    local box = saver()
    serve.run({ users = USERS }, function(_, port)
      local c = assert(login(port, { stream_management = { save = box.save } }))
      c:close()
    end)
    serve.run({ users = USERS, sasl2 = false }, function(_, port)
      local c, _, msg, cond = login(port, { password = false, reconnect = false,
        stream_management = { state = box.state } })
      assert.is_nil(c)
      assert.equal("not-authorized", cond)
      assert.matches("no SASL2", msg)
    end)
  end)

  it("does not use a token with fast = false", function()
    serve.run({ users = USERS }, function(_, port)
      local box = saver()
      local c = assert(login(port, { stream_management = { save = box.save } }))
      c:close()
      local c2, log = login(port, { fast = false, stream_management = { state = box.state } })
      assert.truthy(c2)
      assert.is_nil(logged(log, "mechanism='HT%-"))
      assert.truthy(c2.sasl_mechanism:match("^SCRAM"))
      c2:close()
    end)
  end)
end)

describe("client: SCRAM downgrade protection (XEP-0474)", function()
  -- A man in the middle who takes the strongest mechanisms out of the
  -- features (here: on an in-process pipe, where the server signs what it
  -- advertised into the SCRAM exchange with h=).
  local function tampering(srv)
    return function()
      local t = srv:pipe()
      local on = t.on
      t.on = function(self, event, fn)
        if event ~= "stanza" or not fn then return on(self, event, fn) end
        return on(self, event, function(s)
          if s.name == "features" then
            for _, ns in ipairs({ "urn:ietf:params:xml:ns:xmpp-sasl", "urn:xmpp:sasl:2" }) do
              local list = s:get_child(ns == "urn:xmpp:sasl:2" and "authentication" or "mechanisms", ns)
              if list then
                list:maptags(function(m)
                  if m.name == "mechanism" and m:get_text():match("^SCRAM%-SHA%-256") then return nil end
                  return m
                end)
              end
            end
          end
          return fn(s)
        end)
      end
      return t
    end
  end

  it("hashes as XEP-0474's example does", function()
    assert.equal("G6k/rBLDqgOhRRaCuuatSDFkJ08=", require("lxmpp.features.sasl").ssdp_hash(
      { "SCRAM-SHA-1-PLUS", "SCRAM-SHA-1" }, { "tls-server-end-point", "tls-exporter" }, "sha1"))
  end)

  for _, sasl2 in ipairs({ true, false }) do
    it("aborts the login when mechanisms were removed (" .. (sasl2 and "SASL2" or "RFC 6120 SASL") .. ")", function()
      serve.run({ users = USERS }, function(srv)
        local c, msg, cond = lxmpp.connect({ jid = "alice@example.test/r", password = USERS.alice,
          transport = tampering(srv), sasl2 = sasl2, reconnect = false })
        assert.is_nil(c)
        assert.equal("not-authorized", cond)
        assert.matches("downgrade", msg)
      end)
    end)
  end

  it("logs in over the same pipe untouched", function()
    serve.run({ users = USERS }, function(srv)
      local log = {}
      local c = assert(lxmpp.connect({ jid = "alice@example.test/r", password = USERS.alice,
        transport = function() return srv:pipe() end, reconnect = false, debug = true,
        logger = function(_, m) log[#log + 1] = m end }))
      assert.equal("SCRAM-SHA-256", c.sasl_mechanism)
      assert.truthy(logged(log, "OUT <authenticate"))
      c:close()
    end)
  end)
end)

describe("client: a hostile SASL2 server", function()
  local transport = require "lxmpp.transport"
  local core = require "lxmpp.core"
  local NS2 = "urn:xmpp:sasl:2"
  local FEATURES = "<stream:features><authentication xmlns='" .. NS2 .. "'><mechanism>PLAIN</mechanism>" ..
    "<inline><bind xmlns='urn:xmpp:bind:0'/><sm xmlns='urn:xmpp:sm:3'/><fast xmlns='urn:xmpp:fast:0'>" ..
    "<mechanism>HT-SHA-256-NONE</mechanism></fast></inline></authentication></stream:features>"

  -- A scripted server on an in-process pipe: answer(s) -> the XML to write
  -- back to each element the client sends. seen: what it got.
  local function scripted(answer, seen)
    return function()
      local a, b = transport.pipe()
      b:on("open", function()
        b:write("<?xml version='1.0'?><stream:stream xmlns='jabber:client' " ..
          "xmlns:stream='http://etherx.jabber.org/streams' from='example.test' id='s1' version='1.0'>" .. FEATURES)
      end)
      b:on("stanza", function(s)
        seen[#seen + 1] = s
        local out = answer(s)
        if out then b:write(out) end
      end)
      b:parse()
      return a
    end
  end

  local function connect(answer, seen, extra)
    local o = { jid = "alice@example.test", password = "pw", transport = scripted(answer, seen), reconnect = false }
    for k, v in pairs(extra or {}) do o[k] = v end
    local c, msg, cond
    lxmpp.run(function() c, msg, cond = lxmpp.connect(o) end)
    return c, msg, cond
  end

  it("refuses a success for another account", function()
    local seen = {}
    local c, msg, cond = connect(function(s)
      if s.name == "authenticate" then
        return "<success xmlns='" .. NS2 .. "'><authorization-identifier>mallory@example.test/x" ..
          "</authorization-identifier></success>"
      end
    end, seen)
    assert.is_nil(c)
    assert.equal("bad-format", cond)
    assert.matches("another identity", msg)
  end)

  it("refuses a FAST success without the server's proof of the token", function()
    local seen = {}
    local state = { inbound = 0, acked = 0, queue = {}, ua_id = "0f1e2d3c-4b5a-4697-8877-665544332211",
      fast = { token = "secret-token", mechanism = "HT-SHA-256-NONE", expiry = os.time() + 3600 } }
    local c, msg, cond = connect(function(s)
      if s.name == "authenticate" then
        return "<success xmlns='" .. NS2 .. "'><additional-data>" .. core.base64_encode("not the proof") ..
          "</additional-data><authorization-identifier>alice@example.test/x</authorization-identifier></success>"
      end
    end, seen, { stream_management = { state = state } })
    assert.is_nil(c)
    assert.equal("not-authorized", cond)
    assert.matches("FAST proof", msg)
    assert.equal("HT-SHA-256-NONE", seen[1].attr.mechanism)
  end)

  it("logs in despite a malformed archive metadata in <bound/>, and leaves c.archive_metadata nil", function()
    local log, c = {}, nil
    lxmpp.run(function()
      c = lxmpp.connect{ jid = "alice@example.test", password = "pw", reconnect = false, bind2 = true,
        logger = function(level, msg) log[#log + 1] = level .. " " .. msg end,
        transport = scripted(function(s)
          if s.name == "authenticate" then
            return "<success xmlns='" .. NS2 .. "'><authorization-identifier>alice@example.test/t.1" ..
              "</authorization-identifier><bound xmlns='urn:xmpp:bind:0'><metadata xmlns='urn:xmpp:mam:2'>" ..
              "<start timestamp='2008-08-22T21:09:04Z'/><end id='x'/></metadata></bound></success>" ..
              "<stream:features/>"
          end
        end, {}) }
      if c then c.conn:abort() end
    end)
    assert.truthy(c)
    assert.equal("alice@example.test/t.1", c.jid)
    assert.is_nil(c.archive_metadata)
    assert.truthy(logged(log, "^warn ignored the archive metadata in <bound/>: <start/> has no id"))
  end)

  it("aborts when the server asks for a task it never offered", function()
    local seen = {}
    local c, msg, cond = connect(function(s)
      if s.name == "authenticate" then
        return "<continue xmlns='" .. NS2 .. "'><tasks><task>HOTP-EXAMPLE</task></tasks></continue>"
      end
    end, seen)
    assert.is_nil(c)
    assert.equal("bad-format", cond)
    assert.matches("continue", msg)
  end)
end)
