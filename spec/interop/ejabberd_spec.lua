-- The lxmpp client at its defaults against a real ejabberd (Debian's 23.01,
-- spec/support/ejabberd.lua), started once for this file: login (channel
-- binding as docs/api.md "Authentication and channel binding" describes),
-- the channel_binding and mechanism options, roster, messages between two
-- clients, a component (XEP-0114), and stream management (XEP-0198):
-- enable, ack, and resume after the link is cut.
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local ejabberd = require "spec.support.ejabberd"
local faultproxy = require "spec.support.faultproxy"
local clients = require "spec.support.clients"
local assert_clean = require "spec.support.clean"
local pki = require "spec.support.pki"
local scenarios = require "spec.support.server_scenarios"

local USERS = { alice = "alice-secret", bob = "bob-secret", carol = "carol-secret" }
local srv

-- The client's defaults plus what the test setup needs: where the server
-- is and the test CA, and a logger that keeps the retry's info line out of
-- the spec output (the specs that read it pass their own). `extra` adds
-- (or overrides) options.
local function opts(user, extra)
  local o = { jid = user .. "@example.test/spec", password = USERS[user], host = "127.0.0.1",
    port = srv.port, cafile = srv.ca, logger = function() end }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- A logger that keeps the lines (level and text) for the spec to read.
local function recorder()
  local lines = {}
  return lines, function(level, msg) lines[#lines + 1] = level .. " " .. msg end
end

local function run(fn)
  local ok, err = pcall(lxmpp.run, fn)
  if not ok then error(err, 0) end
end

local function wait_for(cond, seconds)
  local deadline = core.now() + seconds
  while not cond() do
    if core.now() > deadline then return false end
    lxmpp.sleep(0.05)
  end
  return true
end

describe("client against ejabberd", function()
  setup(function()
    srv = ejabberd.start({ users = USERS })
  end)
  teardown(function() if srv then srv:stop() end end)
  after_each(function()
    clients.kill_all()
    assert_clean()
  end)

  describe("login at the defaults", function()
    -- ejabberd 23.01 offers SCRAM-SHA-1-PLUS but binds only to tls-unique
    -- (undefined on TLS 1.3, RFC 9266) and lists no types (XEP-0440): our
    -- tls-exporter is refused, and the one retry is plain SCRAM with gs2
    -- flag y
    it("logs in over STARTTLS: -PLUS is refused, the retry is SCRAM-SHA-1 with flag y", function()
      local lines, logger = recorder()
      run(function()
        local c = assert(lxmpp.connect(opts("alice", { logger = logger })))
        assert.equal("alice@example.test/spec", c.jid)
        local info = c.conn.c:tls_info()
        assert.is_true(info.verified)
        assert.equal("TLSv1.3", info.version)
        assert.equal("SCRAM-SHA-1", c.sasl_mechanism)
        assert.is_false(c.channel_binding)
        assert.equal("tls-exporter", c.channel_binding_refused)
        assert.is_true(c:close())
      end)
      local all = table.concat(lines, "\n")
      assert.matches("info the server refused SCRAM-SHA-1-PLUS bound to tls-exporter (Invalid channel binding)",
        all, 1, true)
      assert.matches("retrying once with SCRAM-SHA-1 and the gs2 flag y", all, 1, true)
      assert.is_nil(all:find("alice-secret", 1, true))
    end)

    it("logs in over direct TLS (XEP-0368) the same way", function()
      run(function()
        local c = assert(lxmpp.connect(opts("alice", { tls = "direct", port = srv.direct_tls_port })))
        assert.is_true(c.conn.c:tls_info().verified)
        assert.equal("SCRAM-SHA-1", c.sasl_mechanism)
        assert.equal("tls-exporter", c.channel_binding_refused)
        c:close()
      end)
    end)

    it("fails with not-authorized on a wrong password (after its one retry)", function()
      run(function()
        local c, msg, cond = lxmpp.connect(opts("alice", { password = "wrong", reconnect = false }))
        assert.is_nil(c)
        assert.equal("not-authorized", cond)
        assert.matches("authentication failed", msg)
      end)
    end)
  end)

  describe("channel_binding and mechanism options", function()
    it("channel_binding = false: plain SCRAM at once, no refusal, no retry", function()
      local lines, logger = recorder()
      run(function()
        local c = assert(lxmpp.connect(opts("alice", { channel_binding = false, logger = logger })))
        assert.equal("SCRAM-SHA-1", c.sasl_mechanism)
        assert.is_false(c.channel_binding)
        assert.is_nil(c.channel_binding_refused)
        c:close()
      end)
      assert.is_nil(table.concat(lines, "\n"):find("retrying", 1, true))
    end)

    for _, cb in ipairs({ true, "tls-exporter", "tls-server-end-point" }) do
      it("channel_binding = " .. tostring(cb) .. ": binding is required, so the refusal ends the login", function()
        run(function()
          local c, msg, cond = lxmpp.connect(opts("alice", { channel_binding = cb, reconnect = false }))
          assert.is_nil(c)
          assert.equal("not-authorized", cond)
          assert.matches("Invalid channel binding", msg, 1, true)
        end)
      end)
    end

    it("mechanism = SCRAM-SHA-1-PLUS: the asked mechanism only, never a retry", function()
      run(function()
        local c, msg, cond = lxmpp.connect(opts("alice", { mechanism = "SCRAM-SHA-1-PLUS", reconnect = false }))
        assert.is_nil(c)
        assert.equal("not-authorized", cond)
        assert.matches("Invalid channel binding", msg, 1, true)
      end)
    end)

    it("mechanism = SCRAM-SHA-1 and PLAIN log in as asked", function()
      run(function()
        for _, mech in ipairs({ "SCRAM-SHA-1", "PLAIN" }) do
          local c = assert(lxmpp.connect(opts("alice", { mechanism = mech })))
          assert.equal(mech, c.sasl_mechanism)
          assert.is_nil(c.channel_binding_refused)
          c:close()
        end
      end)
    end)
  end)

  it("`lxmpp send` delivers at its defaults; --channel-binding and --mechanism reach the client", function()
    local bin = (debug.getinfo(1, "S").source:match("^@(.*)/spec/") or ".") .. "/bin/lxmpp"
    local function send(flags, body)
      -- (the Lua the suite runs under; sh.popen_read: the exit code on every Lua)
      local out, code = require("spec.support.sh").popen_read(require("spec.support.lua_bin") .. " "
        .. pki.q(bin) .. " send --jid alice@example.test --password alice-secret"
        .. " --host 127.0.0.1 --port " .. srv.port .. " --cafile " .. pki.q(srv.ca) .. " " .. flags
        .. " bob@example.test " .. pki.q(body) .. " 2>&1")
      return code, out
    end
    run(function()
      local bob = assert(lxmpp.connect(opts("bob")))
      bob:send_presence()
      local bodies = {}
      bob:on("message", function(m) bodies[#bodies + 1] = m:get_child_text("body") end)
      lxmpp.sleep(0.1)
      -- the commands block this task: bob's messages wait in his socket meanwhile
      local code, out = send("", "at the defaults")
      assert.equal(0, code, out)
      assert.matches("retrying once with SCRAM-SHA-1 and the gs2 flag y", out, 1, true)
      code, out = send("--channel-binding false --mechanism SCRAM-SHA-1", "never bound")
      assert.equal(0, code, out)
      assert.equal("", out)
      code, out = send("--channel-binding true", "bound or nothing")
      assert.equal(1, code)
      assert.matches("send: cannot log in: authentication failed: Invalid channel binding (not-authorized)", out, 1, true)
      assert(wait_for(function() return #bodies == 2 end, 5))
      assert.same({ "at the defaults", "never bound" }, bodies)
      bob:close()
    end)
  end)

  it("gets, sets and removes roster items, with pushes from the server", function()
    run(function()
      local alice = assert(lxmpp.connect(opts("alice")))
      assert.same({}, assert(alice:roster_get()))
      local pushes = {}
      local pushed = lxmpp.task.waiter()
      alice:on("roster", function(item)
        pushes[#pushes + 1] = item
        pushed:wake()
      end)
      assert.is_true(alice:roster_set("carol@example.test", "Carol", { "Friends" }))
      assert(wait_for(function() return #pushes >= 1 end, 5))
      assert.equal("carol@example.test", pushes[1].jid)
      assert.equal("Carol", pushes[1].name)
      assert.same({ "Friends" }, pushes[1].groups)
      local items = assert(alice:roster_get())
      assert.equal("Carol", items["carol@example.test"].name)
      assert.equal("none", items["carol@example.test"].subscription)
      assert.is_true(alice:roster_remove("carol@example.test"))
      assert(wait_for(function() return #pushes >= 2 end, 5))
      assert.equal("remove", pushes[2].subscription)
      assert.is_nil(assert(alice:roster_get())["carol@example.test"])
      alice:close()
    end)
  end)

  it("exchanges messages between two clients", function()
    run(function()
      local alice = assert(lxmpp.connect(opts("alice")))
      local bob = assert(lxmpp.connect(opts("bob")))
      local got = lxmpp.task.waiter()
      bob:on("message", function(m) if m:get_child_text("body") then got:wake(m) end end)
      assert.is_true(alice:send_message(bob.jid, "hello bob"))
      local m = got:wait()
      assert.equal("hello bob", m:get_child_text("body"))
      assert.equal(alice.jid, m.attr.from)
      local back = lxmpp.task.waiter()
      alice:on("message", function(r) if r:get_child_text("body") then back:wake(r) end end)
      assert.is_true(bob:send_message(m.attr.from, "hello alice"))
      local r = back:wait()
      assert.equal("hello alice", r:get_child_text("body"))
      assert.equal(bob.jid, r.attr.from)
      alice:close()
      bob:close()
    end)
  end)

  describe("component (XEP-0114)", function()
    it("authenticates with the handshake and exchanges stanzas both ways", function()
      run(function() scenarios.component_round_trip(srv, opts("alice")) end)
    end)

    it("fails with not-authorized on a wrong secret", function() run(function() scenarios.component_wrong_secret(srv) end) end)
  end)

  it("stream management: enabled, acks, and resumes the session after the link is cut", function()
    local proxy = faultproxy.start({ target_port = srv.port, seed = 1 })
    local ok, err = pcall(run, function()
      local alice = assert(lxmpp.connect(opts("alice", { port = proxy.port })))
      local bob = assert(lxmpp.connect(opts("bob")))
      assert.is_true(alice.sm.enabled)
      assert.is_true(alice.sm:resumable())
      local inbox = {}
      bob:on("message", function(m) inbox[#inbox + 1] = m:get_child_text("body") end)
      local alice_inbox = {}
      alice:on("message", function(m) alice_inbox[#alice_inbox + 1] = m:get_child_text("body") end)
      local reconnected = {}
      alice:on("reconnected", function(resumed) reconnected[#reconnected + 1] = resumed end)
      assert.is_true(alice:send_message(bob.jid, "before the cut"))
      assert.is_true(alice.sm:wait_acked(5))
      assert.equal(0, alice.sm:unacked())
      local jid = alice.jid
      proxy:cmd("cutnow")
      -- while alice is away, ejabberd keeps her session for resumption
      assert.is_true(bob:send_message(jid, "while cut"))
      assert(wait_for(function() return #reconnected == 1 end, 15), "alice did not reconnect")
      assert.is_true(reconnected[1])                 -- resumed, not a new session
      assert.is_true(alice.resumed)
      assert.equal(jid, alice.jid)
      assert.is_true(alice:send_message(bob.jid, "after the cut"))
      assert(wait_for(function() return #inbox == 2 and #alice_inbox == 1 end, 5))
      assert.same({ "before the cut", "after the cut" }, inbox)
      assert.same({ "while cut" }, alice_inbox)
      assert.is_true(alice.sm:wait_acked(5))
      assert.is_true(proxy:status().cuts >= 1)
      alice:close()
      bob:close()
    end)
    proxy:stop()
    if not ok then error(err, 0) end
  end)
end)
