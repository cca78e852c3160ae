-- The examples, run as their users run them (a separate process, options
-- from the environment), against a real Prosody, driven by a scripted user.
local lxmpp = require "lxmpp"
local prosody = require "spec.support.prosody"

local ROOT = debug.getinfo(1, "S").source:match("^@(.*)/spec/") or "."
local srv

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Starts an example in the background; returns its pid and log path.
local function start_example(script, env, args)
  local log = os.tmpname()
  -- the environment is inherited as is: under `make check` the example runs
  -- with the sanitizer runtime preloaded, like the suite itself
  local parts = {}
  for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. q(v) end
  parts[#parts + 1] = "LUA_PATH=" .. q(os.getenv("LUA_PATH") or "")
  parts[#parts + 1] = "LUA_CPATH=" .. q(os.getenv("LUA_CPATH") or "")
  parts[#parts + 1] = require("spec.support.lua_bin") .. " " .. q(ROOT .. "/examples/" .. script)
  for _, a in ipairs(args or {}) do parts[#parts + 1] = q(a) end
  local f = assert(io.popen(table.concat(parts, " ") .. " >" .. q(log) .. " 2>&1 & echo $!"))
  local pid = f:read("*l")
  f:close()
  return pid, log
end

local read = require("spec.support.pki").read_file

-- (sh.execute: os.execute's result differs between Lua versions)
local function running(pid) return (require("spec.support.sh").execute("kill -0 " .. pid .. " 2>/dev/null")) end

-- Waits up to `seconds` for an example to exit; its output. One still
-- running then is killed.
local function ended(pid, log, seconds)
  for _ = 1, seconds * 10 do
    if not running(pid) then break end
    os.execute("sleep 0.1")
  end
  local out = read(log)
  if running(pid) then os.execute("kill " .. pid) end
  return out
end

local function client_env(user, password)
  return { LXMPP_JID = user .. "@example.test/example", LXMPP_PASSWORD = password,
    LXMPP_HOST = "127.0.0.1", LXMPP_PORT = tostring(srv.port), LXMPP_CAFILE = srv.ca }
end

local function user(name, password)
  return assert(lxmpp.connect({ jid = name .. "@example.test/user", password = password,
    host = "127.0.0.1", port = srv.port, cafile = srv.ca }))
end

-- Asks something and waits for the answer from `from_prefix`.
local function ask(c, to, text, timeout)
  local w = lxmpp.task.waiter()
  local id = c:on("message", function(m)
    if m:get_child_text("body") then w:wake(m:get_child_text("body")) end
  end)
  local t = require("lxmpp.core").timer(timeout or 10, w)
  c:send_message(to, text)
  local answer = w:wait()
  t:stop()
  c:off(id)
  return answer
end

-- The bot is online once a message to it is answered.
local function ask_until_online(c, to, text)
  for _ = 1, 40 do
    local a = ask(c, to, text, 0.5)
    if a then return a end
  end
end

describe("examples against Prosody", function()
  setup(function()
    srv = prosody.start({ users = { bot = "bot-secret", user = "user-secret" } })
  end)
  teardown(function() if srv then srv:stop() end end)

  it("dictbot answers three words and quits on its owner's request", function()
    -- as the README runs it: JID and password as arguments; where the
    -- server is and which CA it uses from the environment
    local env = client_env("bot", "bot-secret")
    env.LXMPP_JID, env.LXMPP_PASSWORD = nil, nil
    env.LXMPP_OWNER = "user@example.test"
    local pid, log = start_example("dictbot.lua", env, { "bot@example.test/example", "bot-secret" })
    local answers = {}
    lxmpp.run(function()
      local u = user("user", "user-secret")
      local bot = "bot@example.test/example"
      answers[1] = ask_until_online(u, bot, "xmpp")
      answers[2] = ask(u, bot, "Roster")
      answers[3] = ask(u, bot, "flibbertigibbet")
      u:send_message(bot, "quit")
      lxmpp.sleep(0.3)
      u:close()
    end)
    local out = ended(pid, log, 5)
    assert.matches("^xmpp: the Extensible Messaging", answers[1] or "", nil, false)
    assert.matches("^roster: an XMPP contact list", answers[2] or "")
    assert.equal("don't know about flibbertigibbet", answers[3])
    assert.matches("online as bot@example.test/example", out, 1, true)
    assert.matches("quit requested by user@example.test", out, 1, true)
    assert.is_falsy(running(pid))
  end)

  it("game_loop's bot answers without holding a frame up", function()
    local env = client_env("bot", "bot-secret")
    env.LXMPP_FRAMES = "240"
    local pid, log = start_example("game_loop.lua", env)
    local answer
    lxmpp.run(function()
      local u = user("user", "user-secret")
      answer = ask_until_online(u, "bot@example.test/example", "!players")
      u:close()
    end)
    local out = ended(pid, log, 30)   -- (4 s at 60 Hz; far more when the machine is busy)
    assert.matches("ada@", answer or "", 1, true)
    local frames, work, answered = out:match("(%d+) frames in .-work per frame avg ([%d.]+) ms.-(%d+) messages answered")
    assert.equal("240", frames, out)
    -- lxmpp never held a frame up: its slice (lxmpp.step(0)) and the game's
    -- work took well under a 60 Hz frame on average. (Not the frame rate
    -- itself: on a busy machine, CI's Valgrind stage beside the LuaJIT
    -- suite, the process wakes late for every frame whatever lxmpp does.)
    assert.is_true(tonumber(work) < 1000 / 60, out)
    assert.is_true(tonumber(answered) >= 1, out)
  end)

  it("take the mechanism and channel binding from LXMPP_MECHANISM and LXMPP_CHANNEL_BINDING", function()
    -- each run ends at login, so its exit status and output say what was used
    local function finish(env)
      local pid, log = start_example("echo.lua", env)
      local out = ended(pid, log, 10)
      os.remove(log)
      return out
    end
    local env = client_env("bot", "bot-secret")
    -- Prosody 0.12 offers no -PLUS on TLS 1.3: required binding cannot be had
    env.LXMPP_CHANNEL_BINDING = "true"
    assert.matches("cannot connect as bot@example.test/example: channel binding is required, but the server "
      .. "offers no SCRAM -PLUS mechanism (invalid-mechanism)", finish(env), 1, true)
    env.LXMPP_CHANNEL_BINDING, env.LXMPP_MECHANISM = nil, "SCRAM-SHA-512"
    assert.matches("the server does not offer the SCRAM-SHA-512 mechanism (invalid-mechanism)", finish(env), 1, true)
    env.LXMPP_CHANNEL_BINDING, env.LXMPP_MECHANISM = "sometimes", nil
    assert.matches("LXMPP_CHANNEL_BINDING, LXMPP_MECHANISM: channel binding must be auto, false, true, "
      .. "tls-exporter or tls-server-end-point, not \"sometimes\"", finish(env), 1, true)
  end)

  it("component_echo echoes from the address it was sent to", function()
    local pid, log = start_example("component_echo.lua", { LXMPP_HOST = "127.0.0.1" },
      { srv.component, srv.component_secret, "127.0.0.1", tostring(srv.component_port) })
    local answer
    lxmpp.run(function()
      local u = user("user", "user-secret")
      answer = ask_until_online(u, "parrot@" .. srv.component, "polly")
      u:close()
    end)
    os.execute("kill " .. pid)
    assert.equal("polly", answer, read(log))
  end)
end)
