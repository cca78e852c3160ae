-- slixmpp (a client nobody here wrote, with its XEP-0045 plugin) in a room of
-- lxmpp's embedded server: room creation and configuration through the
-- muc#roomconfig form, disco, history on join, groupchat, private messages,
-- subject and kick, over real c2s streams with verified TLS. The client
-- script is spec/interop/muc_slixmpp.py; it prints "ok <step>" per step.

local lxmpp = require "lxmpp"
local pki = require "spec.support.pki"

local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec/interop"
local STEPS = {
  "created", "configured", "disco", "echo", "history", "groupchat", "private", "subject", "kick", "offline",
}

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local read = require("spec.support.pki").read_file

describe("MUC interop: slixmpp on the embedded server", function ()
  it("creates, configures and talks in a room", function ()
    local p = pki.get()
    local out, rc = os.tmpname(), os.tmpname()
    os.remove(rc)
    local srv, pid
    lxmpp.run(function ()
      srv = lxmpp.server{
        domain = "example.test", listen = { "127.0.0.1:0" },
        tls = { cert = p.certs.good.cert, key = p.certs.good.key },
        users = { alice = "pw-alice", bob = "pw-bob" },
        muc = "conference.example.test",
      }
      assert(srv:start())
      local port = srv:addresses()[1].port
      -- in the background, so this loop serves it meanwhile
      local f = assert(io.popen(pki.NO_PRELOAD .. "( timeout 80 /usr/bin/python3 " .. q(HERE .. "/muc_slixmpp.py")
        .. " 127.0.0.1 " .. port .. " example.test lounge@conference.example.test " .. q(p.ca)
        .. " >" .. q(out) .. " 2>&1; echo $? >" .. q(rc) .. ".tmp; mv " .. q(rc) .. ".tmp " .. q(rc)
        .. " ) >/dev/null 2>&1 & echo $!"))
      pid = f:read("*l")
      f:close()
      local deadline = os.time() + 90
      while not io.open(rc) and os.time() < deadline do lxmpp.sleep(0.1) end
      srv:stop()
    end)
    local status = read(rc)
    if status == "" then os.execute("kill " .. pid .. " 2>/dev/null") end
    local log = read(out)
    os.remove(out)
    os.remove(rc)
    local done = {}
    for step in log:gmatch("ok (%w+)") do done[#done + 1] = step end
    assert.same(STEPS, done, log)
    assert.equal("0", status:match("%d+"), log)
  end)
end)
