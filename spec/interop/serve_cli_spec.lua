-- `lxmpp serve` itself (the program a new user starts, bin/lxmpp), with its
-- defaults plus --muc, driven by the clients people already run: stock
-- slixmpp (Debian 12's 1.8.3, no patch), poezio's connection class,
-- go-sendxmpp and sendxmpp, and slixmpp's MUC plugin in a room of the
-- --muc service. Only the certificate is the suite's (--cert/--key, from
-- its test CA, which the clients are told to trust), so that they verify
-- TLS as they do for any server. A missing client fails, never skips.
local compat = require "lxmpp.compat"
local lxmpp = require "lxmpp"
local pki = require "spec.support.pki"
local proc = require "spec.support.proc"
local senders = require "spec.support.senders"
local serve = require "spec.support.serve"
local assert_clean = require "spec.support.clean"

local PYTHON = "/usr/bin/python3"
local SUPPORT = proc.ROOT .. "/spec/support"
local USERS = { alice = "pw-alice", bob = "pw-bob" }   -- (muc_slixmpp.py logs in with these)

-- The records (tab-separated lines) a client script printed.
local function records(r)
  local recs = {}
  for line in r.out:gmatch("[^\n]+") do
    local f = {}
    for field in (line .. "\t"):gmatch("([^\t]*)\t") do f[#f + 1] = field end
    recs[#recs + 1] = f
  end
  r.text = ("exit %s\nstdout:\n%s\nstderr:\n%s"):format(tostring(r.code), r.out, r.err)
  return recs
end

local function find(recs, kind, ...)
  local want = { ... }
  for _, f in ipairs(recs) do
    if f[1] == kind then
      local ok = true
      for i, v in ipairs(want) do if f[i + 1] ~= v then ok = false end end
      if ok then return f end
    end
  end
end

-- Runs fn(port, p) with `lxmpp serve` started as a user would, plus --muc.
local function with_serve(fn)
  local p = pki.get()
  local srv = proc.lua({ proc.ROOT .. "/bin/lxmpp", "serve", "--domain", "example.test",
    "--listen", "127.0.0.1:0", "--user", "alice:" .. USERS.alice, "--user", "bob:" .. USERS.bob,
    "--cert", p.certs.good.cert, "--key", p.certs.good.key, "--muc", "conference.example.test" })
  local ok, err = pcall(lxmpp.run, function()
    local port, out = srv:wait_output("listening: c2s 127%.0%.0%.1:(%d+)")
    assert(port, "serve did not start:\n" .. tostring(out))
    assert(srv:wait_output("ready"), "serve is not ready")
    fn(compat.tointeger(tonumber(port)), p)
    srv:signal("INT")
    local r = srv:wait(10)
    assert.equal(0, r.code, "serve did not stop cleanly:\n" .. r.out .. r.err)
    assert.is_nil(r.err:find("traceback", 1, true), r.err)
  end)
  srv:kill()
  srv:cleanup()
  if not ok then error(err, 0) end
end

describe("lxmpp serve (defaults, --muc) with the clients people run", function()
  setup(function()
    for _, m in ipairs({ "slixmpp", "poezio.connection" }) do
      if not os.execute(pki.NO_PRELOAD .. PYTHON .. " -c 'import " .. m .. "' 2>/dev/null") then
        error(m .. " is not importable by " .. PYTHON .. ": run `make deps` (python3-slixmpp, poezio)")
      end
    end
  end)
  after_each(assert_clean)

  it("lets stock slixmpp, poezio, go-sendxmpp and sendxmpp log in and exchange messages", function()
    with_serve(function(port, p)
      -- slixmpp: two accounts, roster and subscriptions, a message each way
      local r = proc.start({ PYTHON, SUPPORT .. "/slix.py", "--port", tostring(port), "--ca", p.ca,
        "pair", "alice@example.test/s", USERS.alice, "bob@example.test/s", USERS.bob }):wait(50)
      local recs = records(r)
      assert.equal(0, r.code, r.text)
      assert.truthy(find(recs, "message", "bob@example.test", "alice@example.test/s", "hello bob"), r.text)
      assert.truthy(find(recs, "message", "alice@example.test", "bob@example.test/s", "hello alice"), r.text)
      -- poezio, as it connects: its defaults, channel binding included
      local dir = (pki.sh("mktemp -d /tmp/lxmpp-poezio.XXXXXX"):gsub("%s+$", ""))
      r = proc.start({ PYTHON, SUPPORT .. "/poezio_login.py", "--port", tostring(port), "--ca", p.ca,
        "--dir", dir, "alice@example.test", USERS.alice }):wait(50)
      pki.sh("rm -rf " .. pki.q(dir))
      recs = records(r)
      assert.equal(0, r.code, r.text)
      assert.truthy(find(recs, "mech", "SCRAM-SHA-256-PLUS"), r.text)
      -- the command-line senders, to bob online with lxmpp
      local bob = assert(lxmpp.connect({ jid = "bob@example.test/desk", password = USERS.bob,
        host = "127.0.0.1", port = port, cafile = p.ca, reconnect = false }))
      assert(bob:send_presence())
      local got = serve.collect(bob, "message")
      for _, send in ipairs({ senders.go_sendxmpp, senders.sendxmpp }) do
        local body = "from the command line " .. math.random(1e6)
        r = send(port, "alice@example.test", USERS.alice, "bob@example.test", body)
        assert.equal(0, r.code, r.text)
        assert.truthy(serve.until_true(function()
          for _, m in ipairs(got) do if m:get_child_text("body") == body then return true end end
        end, 5), "did not arrive:\n" .. r.text)
      end
      bob:close()
    end)
  end)

  it("hosts a room of its --muc service for slixmpp's XEP-0045 plugin", function()
    with_serve(function(port, p)
      local r = proc.start({ PYTHON, proc.ROOT .. "/spec/interop/muc_slixmpp.py", "127.0.0.1", tostring(port),
        "example.test", "lounge@conference.example.test", p.ca }):wait(80)
      r.text = ("exit %s\nstdout:\n%s\nstderr:\n%s"):format(tostring(r.code), r.out, r.err)
      assert.equal(0, r.code, r.text)
      for _, step in ipairs({ "created", "configured", "history", "groupchat", "private", "subject", "kick" }) do
        assert.truthy(r.out:find("ok " .. step, 1, true), "step " .. step .. " missing:\n" .. r.text)
      end
    end)
  end)
end)
