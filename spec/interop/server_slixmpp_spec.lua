-- The embedded server with a client nobody here wrote: slixmpp (Debian's
-- python3-slixmpp, run by /usr/bin/python3 through spec/support/slix.py).
-- slixmpp verifies the server's certificate normally against the suite's
-- test CA. Covered: SCRAM-PLUS login with slixmpp's defaults (its
-- tls-unique, on TLS 1.3 and 1.2), logins with channel binding off or
-- restricted, a wrong password refused, roster and the
-- subscription handshake between two accounts ending in both, presence,
-- messages both ways, and a message to an offline account delivered with a
-- XEP-0203 delay at its next login, a MUC room joined by two with groupchat
-- both ways; a probe answered, a roster removal ending a subscription, the
-- member list of a non-anonymous members-only room read by a member. A
-- missing slixmpp fails, never skips.
local pki = require "spec.support.pki"
local proc = require "spec.support.proc"
local server = require "spec.support.serve"
local assert_clean = require "spec.support.clean"

local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec/interop"
local SLIX = HERE .. "/../support/slix.py"
local PYTHON = "/usr/bin/python3"

local USERS = { alice = "alice-pw", bob = "bob-pw" }
local ALICE, BOB = "alice@example.test", "bob@example.test"

-- Runs one slix.py scenario against port; its records, split on tabs.
local function slix(port, ...)
  local r = proc.start({ PYTHON, SLIX, "--port", tostring(port), "--ca", pki.get().ca, ... }):wait(50)
  local recs = {}
  for line in r.out:gmatch("[^\n]+") do
    local f = {}
    for field in (line .. "\t"):gmatch("([^\t]*)\t") do f[#f + 1] = field end
    recs[#recs + 1] = f
  end
  r.recs = recs
  r.text = ("exit %s\nstdout:\n%s\nstderr:\n%s"):format(tostring(r.code), r.out, r.err)
  return r
end

-- The records of one kind.
local function records(r, kind)
  local out = {}
  for _, f in ipairs(r.recs) do
    if f[1] == kind then out[#out + 1] = f end
  end
  return out
end

describe("embedded server with slixmpp", function()
  setup(function()
    local ok = os.execute(pki.NO_PRELOAD .. PYTHON .. " -c 'import slixmpp' 2>/dev/null")
    if not ok then
      error("slixmpp is not installed for " .. PYTHON .. ": run `make deps` (Debian package python3-slixmpp)")
    end
  end)
  after_each(assert_clean)

  it("logs in with its defaults: SCRAM-SHA-256-PLUS bound with tls-unique, over TLS 1.3 it verified", function()
    -- stock slixmpp 1.8.3 (Debian 12's; no patch) binds with tls-unique on
    -- every TLS version: on TLS 1.3 the server takes the client Finished
    -- as its value (docs/server.md, "Channel binding"), so the first,
    -- strongest attempt succeeds and is bound to this TLS connection
    server.run_logged({ users = USERS }, function(srv, port, log)
      local r = slix(port, "login", ALICE, USERS.alice)
      assert.equal(0, r.code, r.text)
      assert.same({ "mech", "SCRAM-SHA-256-PLUS" }, records(r, "mech")[1], r.text)
      assert.equal("TLSv1.3", records(r, "tls")[1][2])
      assert.equal("example.test", records(r, "cert")[1][2])   -- the certificate it checked
      assert.matches("^alice@example%.test/.+", records(r, "jid")[1][2])
      assert.truthy(server.logged(log, "authenticated as alice@example%.test"))
      assert.truthy(server.logged(log, "bound " .. records(r, "jid")[1][2]:gsub("%p", "%%%0")))
      assert.equal(0, srv:stats().sessions)
    end)
  end)

  it("logs in with its defaults over TLS 1.2: tls-unique is the client Finished there (RFC 5929)", function()
    server.run_logged({ users = USERS }, function(_, port, log)
      local r = slix(port, "--tls12", "login", ALICE, USERS.alice)
      assert.equal(0, r.code, r.text)
      assert.same({ "mech", "SCRAM-SHA-256-PLUS" }, records(r, "mech")[1], r.text)
      assert.equal("TLSv1.2", records(r, "tls")[1][2])
      assert.truthy(server.logged(log, "authenticated as alice@example%.test"))
    end)
  end)

  it("gets in however channel_binding is set: without -PLUS, or past refused types", function()
    -- channel_binding = false: no -PLUS, so its "y" is no downgrade (RFC 5802 §6)
    server.run_logged({ users = USERS, channel_binding = false }, function(_, port, log)
      local r = slix(port, "login", ALICE, USERS.alice)
      assert.equal(0, r.code, r.text)
      assert.same({ "mech", "SCRAM-SHA-256" }, records(r, "mech")[1], r.text)
      assert.truthy(server.logged(log, "authenticated as alice@example%.test"))
    end)
    -- tls-unique not offered: both -PLUS attempts are refused with
    -- unsupported-channel-binding-type without costing a try, its "y" is
    -- refused as a downgrade (two tries), and its own next choice, PLAIN
    -- over TLS, is the third try and succeeds
    server.run_logged({ users = USERS, channel_binding = { "tls-exporter" } }, function(_, port, log)
      local r = slix(port, "login", ALICE, USERS.alice)
      assert.equal(0, r.code, r.text)
      assert.same({ "mech", "PLAIN" }, records(r, "mech")[1], r.text)
      assert.is_nil(server.logged(log, "too many failed authentication attempts"))
      assert.truthy(server.logged(log, "authenticated as alice@example%.test"))
    end)
  end)

  it("is refused by slixmpp when its certificate does not name the domain", function()
    -- proves slixmpp really verifies: the same server with a certificate
    -- for other.test from the same trusted CA is not accepted
    server.run_logged({ users = USERS, cert = "wrongname" }, function(srv, port, log)
      local r = slix(port, "login", ALICE, USERS.alice)
      assert.equal(0, #records(r, "mech"), r.text)
      assert.equal(0, #records(r, "jid"), r.text)
      local failed = records(r, "tls_failed")[1]
      assert.is_table(failed, r.text)
      assert.matches("Hostname mismatch", failed[2])
      assert.is_nil(server.logged(log, "authenticated as"))
      assert.equal(0, srv:stats().sessions)
    end)
  end)

  it("refuses a wrong password", function()
    server.run_logged({ users = USERS }, function(srv, port, log)
      local r = slix(port, "login", ALICE, "not-the-password")
      assert.equal(0, #records(r, "mech"), r.text)
      local failed = records(r, "auth_failed")[1]
      assert.is_table(failed, r.text)
      assert.matches("not%-authorized", failed[2])
      assert.is_nil(server.logged(log, "authenticated as"))
      assert.equal(0, srv:stats().sessions)
    end)
  end)

  it("runs roster add and the subscription handshake to both, then presence, messages, leaving", function()
    server.run_logged({ users = USERS }, function(srv, port)
      local r = slix(port, "pair", ALICE, USERS.alice, BOB, USERS.bob)
      assert.equal(0, r.code, r.text)
      local roster = {}
      for _, f in ipairs(records(r, "roster")) do roster[f[2]] = f end
      assert.same({ "roster", ALICE, BOB, "both", "Bob", "Friends" }, roster[ALICE], r.text)
      assert.same({ "roster", BOB, ALICE, "both", "", "" }, roster[BOB], r.text)
      -- and so the server keeps it
      local a_item = srv.store:get_roster("alice").items[BOB]
      local b_item = srv.store:get_roster("bob").items[ALICE]
      assert.equal("both", a_item.subscription)
      assert.equal("Bob", a_item.name)
      assert.equal("both", b_item.subscription)
      -- presence: each saw the other's, show and status intact
      local seen = {}
      for _, f in ipairs(records(r, "presence")) do seen[f[2] .. " " .. f[5]] = f end
      local a_saw = assert(seen[ALICE .. " bob here"], r.text)
      assert.matches("^bob@example%.test/", a_saw[3])
      assert.equal("away", a_saw[4])
      local b_saw = assert(seen[BOB .. " alice here"], r.text)
      assert.matches("^alice@example%.test/", b_saw[3])
      assert.equal("chat", b_saw[4])
      -- messages both ways, from the sender's full JID
      local got = {}
      for _, f in ipairs(records(r, "message")) do got[f[2]] = f end
      assert.equal("hello bob", got[BOB][4])
      assert.matches("^alice@example%.test/", got[BOB][3])
      assert.equal("hello alice", got[ALICE][4])
      assert.matches("^bob@example%.test/", got[ALICE][3])
      -- and when alice leaves, bob sees her go
      assert.same({ "unavailable", BOB, got[BOB][3] }, records(r, "unavailable")[1], r.text)
    end)
  end)

  it("serves a MUC room: an instant room created, joined by two, groupchat both ways", function()
    local ROOM = "lobby@conference.example.test"
    server.run_logged({ users = USERS, muc = "conference.example.test" }, function(_, port)
      local r = slix(port, "muc", ALICE, USERS.alice, BOB, USERS.bob, ROOM)
      assert.equal(0, r.code, r.text)
      local joined = {}
      for _, f in ipairs(records(r, "joined")) do joined[f[2]] = f end
      -- the creator is owner and moderator, told the room is new (201) and
      -- which presence is its own (110); the next one is a participant
      assert.same({ "joined", ALICE, ROOM .. "/alice", "owner", "moderator", "110,201" }, joined[ALICE], r.text)
      assert.same({ "joined", BOB, ROOM .. "/bob", "none", "participant", "110" }, joined[BOB], r.text)
      local occupants = {}
      for _, f in ipairs(records(r, "occupant")) do occupants[f[2] .. " " .. f[3]] = true end
      assert.is_true(occupants[BOB .. " " .. ROOM .. "/alice"], r.text)
      assert.is_true(occupants[ALICE .. " " .. ROOM .. "/bob"], r.text)
      -- every occupant, the sender too, gets each message from the sender's room JID
      local got = {}
      for _, f in ipairs(records(r, "groupchat")) do got[#got + 1] = table.concat(f, " ", 2) end
      table.sort(got)
      assert.same({
        ALICE .. " " .. ROOM .. "/alice hi room from alice",
        ALICE .. " " .. ROOM .. "/bob hi room from bob",
        BOB .. " " .. ROOM .. "/alice hi room from alice",
        BOB .. " " .. ROOM .. "/bob hi room from bob",
      }, got, r.text)
    end)
  end)

  it("answers slixmpp's probe, and its roster removal ends the subscription with unavailable both ways", function()
    server.run_logged({ users = USERS }, function(srv, port)
      srv.store:set_roster_item("alice", BOB, { subscription = "both", groups = {} })
      srv.store:set_roster_item("bob", ALICE, { subscription = "both", groups = {} })
      local r = slix(port, "unroster", ALICE, USERS.alice, BOB, USERS.bob)
      assert.equal(0, r.code, r.text)
      local probed = assert(records(r, "probed")[1], r.text)
      assert.equal("bob here", probed[4])                 -- RFC 6121 §4.3: answered, not dropped
      local gone = {}
      for _, f in ipairs(records(r, "unavailable")) do gone[f[2]] = f[3] end
      assert.matches("^alice@example%.test/", gone[BOB], r.text)   -- RFC 6121 §2.5.2
      assert.matches("^bob@example%.test/", gone[ALICE], r.text)   -- RFC 6121 §3.3.3
      assert.same({ "roster", BOB, ALICE, "none" }, records(r, "roster")[1], r.text)
      assert.is_nil(srv.store:get_roster("alice").items[BOB])
      assert.equal("none", srv.store:get_roster("bob").items[ALICE].subscription)
    end)
  end)

  it("lets a member read the member list of a non-anonymous members-only room, announced with 172", function()
    local ROOM = "club@conference.example.test"
    server.run_logged({ users = USERS, muc = "conference.example.test" }, function(_, port)
      local r = slix(port, "members", ALICE, USERS.alice, BOB, USERS.bob, ROOM)
      assert.equal(0, r.code, r.text)
      -- XEP-0045 §10.2.1: the first configuration made it non-anonymous
      assert.same({ "config_status", ALICE, "104,172" }, records(r, "config_status")[1], r.text)
      -- §9.5: bob, a member but not in the room, reads the member list
      assert.same({ "members", BOB, BOB }, records(r, "members")[1], r.text)
      assert.same({ "refused", BOB, "owner", "forbidden" }, records(r, "refused")[1], r.text)
    end)
  end)

  it("keeps a message for an offline account and delivers it with a delay stamp at login", function()
    server.run_logged({ users = USERS }, function(srv, port)
      local before = os.time()
      local s = slix(port, "send", ALICE, USERS.alice, BOB, "while you were away")
      assert.equal(0, s.code, s.text)
      assert.equal(1, srv.store:count_offline("bob"))
      local r = slix(port, "receive", BOB, USERS.bob, "1")
      assert.equal(0, r.code, r.text)
      local m = records(r, "message")
      assert.equal(1, #m, r.text)
      assert.equal("while you were away", m[1][4])
      assert.matches("^alice@example%.test/", m[1][3])
      -- XEP-0203: a stamp of when the server kept it, from the server
      local y, mo, d, h, mi, sec = m[1][5]:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)")
      assert.is_string(y, r.text)
      local stamp = os.time({ year = y, month = mo, day = d, hour = h, min = mi, sec = sec, isdst = false })
      local utc_now = os.time(os.date("!*t", os.time()))   -- both read as local: the offset cancels
      local age = utc_now - stamp
      assert.is_true(age >= 0 and age <= os.time() - before + 2, "stamp " .. m[1][5])
      assert.equal("example.test", m[1][6])
      assert.equal(0, srv.store:count_offline("bob"))
    end)
  end)
end)
