-- The embedded server with a C client nobody here wrote: libstrophe
-- (Debian's libstrophe-dev), through spec/support/strophe_client.c, which
-- this spec compiles into build/. libstrophe checks the server's
-- certificate against the suite's test CA (xmpp_conn_set_cafile) for the
-- JID's domain. The second account is an lxmpp client in this process, so
-- the spec sees both ends of the exchange. A missing libstrophe fails,
-- never skips.
local lxmpp = require "lxmpp"
local pki = require "spec.support.pki"
local proc = require "spec.support.proc"
local server = require "spec.support.serve"
local assert_clean = require "spec.support.clean"

local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec/interop"
local ROOT = HERE .. "/../.."
local SOURCE = ROOT .. "/spec/support/strophe_client.c"
local BINARY = ROOT .. "/build/strophe_client"

local USERS = { alice = "alice-pw", bob = "bob-pw" }

local q = pki.q

-- Runs the C client as alice; its records, split on tabs.
local function strophe(port, password, peer, body)
  local r = proc.start({ BINARY, "alice@example.test", password, "127.0.0.1", tostring(port),
    pki.get().ca, peer, body }):wait(40)
  r.recs = {}
  for line in r.out:gmatch("[^\n]+") do
    local f = {}
    for field in (line .. "\t"):gmatch("([^\t]*)\t") do f[#f + 1] = field end
    r.recs[#r.recs + 1] = f
    r[f[1]] = r[f[1]] or f    -- the first record of each kind
  end
  r.text = ("exit %s\nstdout:\n%s\nstderr:\n%s"):format(tostring(r.code), r.out, r.err)
  return r
end

describe("embedded server with a libstrophe client", function()
  setup(function()
    -- built here, so a missing libstrophe-dev fails the spec
    pki.sh("pkg-config --exists libstrophe || { echo 'libstrophe-dev is not installed:"
      .. " run `make deps`'; exit 1; }")
    pki.sh("mkdir -p " .. q(ROOT .. "/build") .. " && ${CC:-cc} -std=c99 -Wall -Wextra -pedantic -Werror -O1 -o "
      .. q(BINARY) .. " " .. q(SOURCE) .. " $(pkg-config --cflags --libs libstrophe)")
  end)
  after_each(assert_clean)

  it("logs in with SCRAM over verified TLS and exchanges messages with another account", function()
    server.run_logged({ users = USERS }, function(_, port, log)
      local bob = assert(lxmpp.connect({ jid = "bob@example.test/lx", password = USERS.bob,
        host = "127.0.0.1", port = port, cafile = pki.get().ca }))
      local received
      bob:on("message", function(m)
        local body = m:get_child_text("body")
        if not body then return end
        received = m
        bob:send_message(m.attr.from, "re: " .. body, "chat")
      end)
      bob:send_presence()
      local r = strophe(port, USERS.alice, "bob@example.test", "hello from libstrophe")
      bob:close()
      assert.equal(0, r.code, r.text)
      -- libstrophe 0.12 has no -PLUS: the strongest SCRAM it knows
      assert.same({ "mech", "SCRAM-SHA-256" }, r.mech, r.text)
      assert.matches("^alice@example%.test/.+", r.online[2])
      assert.equal("secured 1", r.online[3])
      assert.truthy(server.logged(log, "authenticated as alice@example%.test"))
      -- bob's side: alice's message, from her bound JID, as she sent it
      assert.is_table(received, r.text)
      assert.equal(r.online[2], received.attr.from)
      assert.equal("bob@example.test", received.attr.to)   -- as addressed: to the bare JID
      assert.equal("chat", received.attr.type)
      assert.equal("strophe1", received.attr.id)
      assert.equal("hello from libstrophe", received:get_child_text("body"))
      -- alice's side: bob's reply
      assert.same({ "got", "bob@example.test/lx", "re: hello from libstrophe" }, r.got, r.text)
    end)
  end)

  it("is refused by libstrophe when the certificate does not name the domain", function()
    -- proves the CA file is really used for verification
    server.run_logged({ users = USERS, cert = "wrongname" }, function(srv, port, log)
      local r = strophe(port, USERS.alice, "-", "")
      assert.equal(1, r.code, r.text)
      assert.is_table(r.certfail, r.text)
      assert.is_nil(r.online, r.text)
      assert.is_nil(server.logged(log, "authenticated as"))
      assert.equal(0, srv:stats().sessions)
    end)
  end)

  it("refuses a wrong password", function()
    server.run_logged({ users = USERS }, function(srv, port, log)
      local r = strophe(port, "not-the-password", "-", "")
      assert.equal(1, r.code, r.text)
      assert.is_table(r.mech, r.text)          -- it did try
      assert.matches("^SCRAM%-", r.mech[2])
      assert.is_nil(r.online, r.text)
      assert.is_table(r.disconnected, r.text)
      assert.is_nil(server.logged(log, "authenticated as"))
      assert.equal(0, srv:stats().sessions)
    end)
  end)
end)
