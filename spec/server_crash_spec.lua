-- The embedded server with persistent storage killed with SIGKILL while a
-- client sends: every message the server acknowledged (XEP-0198 <a h=.../>)
-- to an offline account is there after a restart on the same store, once.
local LUA = require "spec.support.lua_bin"
local lxmpp = require "lxmpp"
local pki = require "spec.support.pki"
local raw = require "spec.support.raw"
local serve = require "spec.support.serve"

local ROOT = debug.getinfo(1, "S").source:match("^@(.*)/spec/") or "."
local q = pki.q
local NS = "urn:xmpp:sm:3"

-- Starts `lxmpp serve` on the store; returns pid and port.
local function start_server(path, log)
  local p = pki.get()
  local f = assert(io.popen(LUA .. " " .. q(ROOT .. "/bin/lxmpp") .. " serve --domain example.test" ..
    " --listen 127.0.0.1:0 --cert " .. q(p.certs.good.cert) .. " --key " .. q(p.certs.good.key) ..
    " --storage " .. q(path) .. " --user alice:alice-pw --user bob:bob-pw >" .. q(log) .. " 2>&1 & echo $!"))
  local pid = f:read("*l")
  f:close()
  for _ = 1, 200 do
    local port = pki.read_file(log):match("listening: c2s 127%.0%.0%.1:(%d+)")
    if port then return pid, tonumber(port) end
    lxmpp.sleep(0.05)
  end
  error("the server did not start:\n" .. pki.read_file(log))
end

describe("embedded server: persistent storage under SIGKILL", function()
  it("keeps every acknowledged offline message, once", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. q(dir)))
    local path, log = dir .. "/store.db", dir .. "/server.log"
    math.randomseed(tonumber(os.getenv("LXMPP_CRASH_SEED") or "") or 20261124)
    local acked, sent = 0, 0
    lxmpp.run(function()
      local pid, port = start_server(path, log)
      local r = raw.login(port, pki.get().ca, "alice", "alice-pw")
      r:send("<enable xmlns='" .. NS .. "'/>")
      assert.equal("enabled", assert(r:stanza()).name)
      local kill_after = math.random(40, 160)
      while true do
        sent = sent + 1
        r:send("<message to='bob@example.test' type='chat'><body>m" .. sent .. "</body></message>")
        if sent % 10 == 0 then r:send("<r xmlns='" .. NS .. "'/>") end
        local ev = r:next(0)
        while ev do
          if ev.stanza and ev.stanza.name == "a" then acked = tonumber(ev.stanza.attr.h) end
          ev = r:next(0)
        end
        if sent >= kill_after then break end
        lxmpp.sleep(0.002)
      end
      os.execute("kill -9 " .. pid)
      r:wait_closed(5)
      r:close()
      -- restart on the same store: bob gets every acknowledged message
      local pid2, port2 = start_server(path, log .. ".2")
      local bob = assert(serve.login(port2, "bob", "bob-pw", "b", { cafile = pki.get().ca }))
      local got = serve.collect(bob, "message")
      bob:send_presence()
      lxmpp.sleep(1)
      local seen = {}
      for _, m in ipairs(got) do
        local n = tonumber((m:get_child_text("body") or ""):match("^m(%d+)$"))
        assert.is_nil(seen[n], "message " .. tostring(n) .. " delivered twice")
        seen[n] = true
      end
      for n = 1, acked do assert.is_true(seen[n] == true, "acknowledged message m" .. n .. " lost") end
      assert.is_true(acked > 0, "nothing was acknowledged before the kill")
      bob:close()
      os.execute("kill " .. pid2)
    end)
    os.execute("rm -rf " .. q(dir))
  end)
end)
