-- The embedded server with Pidgin's engine, libpurple 2.14 (Debian's
-- libpurple-dev), through spec/support/purple_client.c, a headless client
-- this spec compiles into build/ (spec/support/purple.lua drives it: its
-- records on stdout, commands on stdin). STARTTLS is required; libpurple
-- verifies the certificate against the suite's test CA, put into its CA
-- pool, for the JID's domain, and logs in with the mechanisms it picks by
-- default (Debian builds it with Cyrus SASL). The other end of each
-- exchange is lxmpp: a client in this process, and the dictionary bot
-- (examples/dictbot.lua) as a program of its own. A missing libpurple
-- fails, never skips.
local lxmpp = require "lxmpp"
local pki = require "spec.support.pki"
local proc = require "spec.support.proc"
local purple = require "spec.support.purple"
local server = require "spec.support.serve"
local assert_clean = require "spec.support.clean"

local USERS = { alice = "alice-pw", bob = "bob-pw", bot = "bot-pw" }
local ALICE = "alice@example.test/pidgin"

local function bob_login(port)
  return assert(server.login(port, "bob", USERS.bob, "lx"))
end

describe("embedded server with libpurple (Pidgin's engine)", function()
  setup(function()
    purple.build()
  end)
  after_each(assert_clean)

  it("logs in over verified STARTTLS with libpurple's default SASL and fetches the roster", function()
    server.run_logged({ users = USERS }, function(srv, port, log)
      -- alice's roster, as another client of hers left it
      local a = assert(server.login(port, "alice", USERS.alice, "setup"))
      assert(a:roster_set("bob@example.test", "Bob B.", { "Friends" }))
      a:close()
      local p = purple.start(port, ALICE, USERS.alice)
      local on, text = p:expect("connected")
      assert.is_table(on, text)
      assert.equal("alice@example.test/pidgin", on[2])
      -- how it got in: STARTTLS, and the mechanism libpurple chose
      local sess = srv:session("alice@example.test", "pidgin")
      assert.is_table(sess)
      assert.is_true(sess.secure)
      -- (Debian builds it with Cyrus SASL, which has no channel binding
      -- here: the strongest mechanism without -PLUS)
      assert.equal("SCRAM-SHA-256", sess.mechanism)
      local b = p:expect("buddy-added", function(r) return r[2] == "bob@example.test" end)
      assert.is_table(b, p:text())
      p:send("roster")
      local item = p:expect("roster")
      assert.same({ "roster", "bob@example.test", "Bob B.", "Friends" }, item, p:text())
      assert.is_table(p:expect("roster-end"), p:text())
      local r = p:finish()
      assert.equal(0, r.code, r.text)
      local auth = server.logged(log, "authenticated as alice@example%.test")
      assert.truthy(auth, table.concat(log, "\n"))
      assert.equal(0, srv:stats().sessions)
    end)
  end)
end)
