-- No spec needs a well-known port: `make test` must pass on a machine where
-- something already listens on 5222, 5269, 5280, 5281 or 5347 (a local
-- Prosody, another run of the suite). Every spec listens on port 0 or on a
-- port it checked free (spec/support/serve.lua, prosody.lua, faultproxy.lua).
-- Here those ports are held busy while specs that once bound a default
-- port run.
local LUA = require "spec.support.lua_bin"
local socket = require "socket"
local lxmpp = require "lxmpp"
local serve = require "spec.support.serve"

local DEFAULT_PORTS = { 5222, 5269, 5280, 5281, 5347 }

-- Holds each port busy: listening on it ourselves, or it is taken already
-- (then it is busy for the specs too). Returns the sockets to close.
local function hold_busy()
  local held = {}
  for _, port in ipairs(DEFAULT_PORTS) do
    local s = socket.bind("127.0.0.1", port)
    if s then
      held[#held + 1] = s
    else
      local probe = socket.tcp()
      assert(not probe:bind("127.0.0.1", port), "port " .. port .. " is neither free nor busy")
      probe:close()
    end
  end
  return held
end

local function release(held)
  for _, s in ipairs(held) do s:close() end
end

describe("specs with the well-known ports busy", function()
  local held
  before_each(function() held = hold_busy() end)
  after_each(function() release(held) end)

  it("serve.run gives components a free port when the spec names none", function()
    serve.run({ users = { alice = "alice-pw" }, components = { ["gw.example.test"] = "s3cret" } },
      function(srv, _, ports)
        assert.is_number(ports.component)
        assert.are_not.equal(5347, ports.component)
        local comp = lxmpp.component({ jid = "gw.example.test", secret = "s3cret", host = "127.0.0.1",
          port = ports.component })
        assert(comp:connect())
        assert.truthy(serve.until_true(function() return srv.hosts["gw.example.test"] ~= nil end))
        comp:close()
      end)
  end)

  it("spec/server_spec.lua's server IQs (once on 5347) pass", function()
    -- run as its own busted process, in this environment (LUA_PATH, and the
    -- sanitizer's LD_PRELOAD under `make check`)
    -- (a pattern without spaces: busted --lua runs itself again, unquoted)
    local cmd = "busted --lua=" .. LUA .. " --filter=server%sIQs%sand%sregistration spec/server_spec.lua 2>&1"
    local f = assert(io.popen(cmd, "r"))
    local out = f:read("*a")
    local ok = f:close()
    assert.is_true(ok == true, out)
    assert.matches("[1-9]%d* successes? / 0 failures / 0 errors", out)
  end)
end)
