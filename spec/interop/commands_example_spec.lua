-- examples/commands.lua run as its users run it (its own process, options
-- from the environment) against Prosody, driven through Prosody by a user
-- who lists its commands, steps through the two-stage reminder (back and
-- forth), gets the reminder, and stops the bot with "quit".
local lxmpp = require "lxmpp"
local prosody = require "spec.support.prosody"
local listen = require "spec.support.listen"

local ROOT = debug.getinfo(1, "S").source:match("^@(.*)/spec/") or "."

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function read(path)
  local f = io.open(path)
  local s = f and f:read("*a") or ""
  if f then f:close() end
  return s
end

-- (sh.execute: os.execute's result differs between Lua versions)
local function running(pid) return (require("spec.support.sh").execute("kill -0 " .. pid .. " 2>/dev/null")) end

describe("examples/commands.lua against Prosody", function()
  local srv
  setup(function()
    srv = prosody.start({ users = { bot = "bot-secret", user = "user-secret", other = "other-secret" } })
  end)
  teardown(function() if srv then srv:stop() end end)

  it("offers a two-stage reminder and quit to its owner only", function()
    local log = os.tmpname()
    local env = { LXMPP_JID = "bot@example.test/example", LXMPP_PASSWORD = "bot-secret",
      LXMPP_HOST = "127.0.0.1", LXMPP_PORT = tostring(srv.port), LXMPP_CAFILE = srv.ca,
      LXMPP_OWNER = "user@example.test",
      LUA_PATH = os.getenv("LUA_PATH") or "", LUA_CPATH = os.getenv("LUA_CPATH") or "" }
    local parts = {}
    for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. q(v) end
    local lua = require "spec.support.lua_bin"   -- the Lua the suite runs under
    local f = assert(io.popen(table.concat(parts, " ") .. " " .. lua .. " " .. q(ROOT .. "/examples/commands.lua")
      .. " >" .. q(log) .. " 2>&1 & echo $!"))
    local pid = f:read("*l")
    f:close()
    local ok, err = pcall(lxmpp.run, function()
      local function login(name)
        return assert(lxmpp.connect({ jid = name .. "@example.test/user", password = name .. "-secret",
          host = "127.0.0.1", port = srv.port, cafile = srv.ca }))
      end
      local u, other = login("user"), login("other")
      local bot = "bot@example.test/example"
      local list
      for _ = 1, 50 do
        list = u:commands(bot)
        if list and #list > 0 then break end
        lxmpp.sleep(0.1)
      end
      local nodes = {}
      for _, it in ipairs(assert(list)) do nodes[#nodes + 1] = it.node end
      table.sort(nodes)
      assert.same({ "quit", "remind" }, nodes)
      assert.same({}, assert(other:commands(bot)))
      assert.equal("forbidden", select(3, other:execute(bot, "quit")))

      local r = assert(u:execute(bot, "remind"))
      assert.equal("New reminder", r.form.title)
      r = assert(r:next({ text = "water the plants", delay = "3600" }))
      assert.equal("Confirm", r.form.title)
      assert.matches("in 3600 seconds", r.form[1].value)
      r = assert(r:prev())                         -- change of mind: now
      assert.equal("New reminder", r.form.title)
      r = assert(r:next({ text = "water the plants", delay = "0" }))
      local inbox = listen(u, "message", function(m) return m:get_child("body") ~= nil end)
      r = assert(r:complete({ confirm = true }))
      assert.equal("completed", r.status)
      assert.equal("Reminder set.", r.notes[1].text)
      assert.equal("Reminder: water the plants", inbox:next():get_child_text("body"))

      r = assert(u:execute(bot, "quit"))
      assert.equal("Bye.", r.notes[1].text)
      u:close()
      other:close()
    end)
    for _ = 1, 50 do
      if not running(pid) then break end
      os.execute("sleep 0.1")
    end
    local out = read(log)
    if running(pid) then os.execute("kill " .. pid) end
    os.remove(log)
    if not ok then error(tostring(err) .. "\n" .. out, 0) end
    assert.matches("reminder for user@example.test/user in 0 s", out, 1, true)
    assert.matches("quit requested by user@example.test/user", out, 1, true)
    assert.is_falsy(running(pid))
  end)
end)
