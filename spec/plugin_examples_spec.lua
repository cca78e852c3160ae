-- The plugin examples (examples/muc_bot.lua, rpc_service.lua, ibb_file.lua,
-- pubsub_news.lua), run as their users run them -- a separate process,
-- options from the environment -- against the embedded server (pubsub_news
-- also against Prosody), driven by a scripted user.
local sh = require "spec.support.sh"
local compat = require "lxmpp.compat"
local LUA = require "spec.support.lua_bin"
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local rpc = require "lxmpp.plugins.rpc"
local serve = require "spec.support.serve"
local prosody = require "spec.support.prosody"
local ev = require "spec.support.events"

local ROOT = debug.getinfo(1, "S").source:match("^@(.*)/spec/") or "."
local USERS = { bot = "bot-pw", user = "user-pw" }

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function start_example(script, env)
  local log = os.tmpname()
  local parts = {}
  for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. q(v) end
  parts[#parts + 1] = "LUA_PATH=" .. q(os.getenv("LUA_PATH") or "")
  parts[#parts + 1] = "LUA_CPATH=" .. q(os.getenv("LUA_CPATH") or "")
  parts[#parts + 1] = LUA .. " " .. q(ROOT .. "/examples/" .. script)
  local f = assert(io.popen(table.concat(parts, " ") .. " >" .. q(log) .. " 2>&1 & echo $!"))
  local pid = f:read("*l")
  f:close()
  return pid, log
end

local function read(path)
  local f = io.open(path, "rb")
  local s = f and f:read("*a") or ""
  if f then f:close() end
  return s
end

local function running(pid) return sh.execute("kill -0 " .. pid .. " 2>/dev/null") end
local function stop(pid) if running(pid) then os.execute("kill " .. pid) end end

-- waits (in a task) until the process has ended or the log shows `text`
local function wait_log(log, text, timeout)
  return serve.until_true(function() return read(log):find(text, 1, true) ~= nil end, timeout or 10)
end

local function env_for(user, port, ca, extra)
  local e = { LXMPP_JID = user .. "@example.test/example", LXMPP_PASSWORD = USERS[user],
    LXMPP_HOST = "127.0.0.1", LXMPP_PORT = tostring(port), LXMPP_CAFILE = ca }
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

describe("plugin examples on the embedded server", function()
  it("muc_bot answers commands in its room", function()
    local pid, log
    serve.run({ users = USERS, muc = "conference.example.test" }, function(_, port)
      pid, log = start_example("muc_bot.lua", env_for("bot", port, serve.pki().ca,
        { LXMPP_ROOM = "lobby@conference.example.test", LXMPP_NICK = "helper" }))
      assert.is_true(wait_log(log, "in lobby@conference.example.test as helper"), read(log))
      local u = assert(serve.login(port, "user", USERS.user))
      local room = assert(u:muc_join("lobby@conference.example.test", "ann"))
      assert.equal("owner", room.occupants.helper.affiliation)       -- the bot made the room
      lxmpp.spawn(function() lxmpp.sleep(0.1); room:say("!ping") end)
      local got = ev.expect(u, "muc-message", function(_, m) return m.nick == "helper" end)
      assert.equal("ann: pong", got[2].body)
      lxmpp.spawn(function() lxmpp.sleep(0.1); room:say("!who") end)
      got = ev.expect(u, "muc-message", function(_, m) return m.nick == "helper" end)
      assert.equal("ann: 2 here: ann (participant), helper (moderator)", got[2].body)
      lxmpp.spawn(function() lxmpp.sleep(0.1); room:say("!whoami") end)
      got = ev.expect(u, "muc-private")
      assert.equal("you are ann, participant and none", got[2].body)
      -- the bot made ann nothing more than a participant, so ann cannot kick it
      local r, _, cond = room:kick("helper")
      assert.is_nil(r)
      assert.is_true(cond == "forbidden" or cond == "not-allowed")
      u:close()
    end)
    stop(pid)
    assert.matches("ann: !ping -> pong", read(log), 1, true)
  end)

  it("rpc_service serves its methods to the JIDs it allows", function()
    local pid, log
    serve.run({ users = USERS }, function(_, port)
      pid, log = start_example("rpc_service.lua", env_for("bot", port, serve.pki().ca,
        { LXMPP_RPC_ALLOW = "user@example.test" }))
      assert.is_true(wait_log(log, "serving Jabber-RPC"), read(log))
      local u = assert(serve.login(port, "user", USERS.user))
      local to = "bot@example.test/example"
      assert.equal(6.5, u:rpc_call(to, "math.sum", 1, 2, 3.5))
      assert.equal("LOUD", u:rpc_call(to, "text.upper", "loud"))
      assert.is_true(u:rpc_call(to, "kv.set", "k", { 1, 2 }))
      assert.same({ 1, 2 }, { compat.unpack(u:rpc_call(to, "kv.get", "k")) })
      local r, msg, cond, code = u:rpc_call(to, "kv.get", "missing")
      assert.is_nil(r)
      assert.equal("no such key: missing", msg)
      assert.equal("rpc-fault", cond)
      assert.equal(404, code)
      assert.equal("rpc.datetime", getmetatable(u:rpc_call(to, "time.now")).__name)
      assert.is_true(getmetatable(u:rpc_call(to, "kv.keys")) == getmetatable(rpc.array()))
      u:close()
    end)
    stop(pid)
    assert.matches("call math.sum", read(log), 1, true)
  end)

  it("ibb_file receives a file from its trusted sender, and sends one", function()
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. q(dir))
    local parts = {}
    for i = 1, 40 do parts[i] = core.random(256) end
    local data = table.concat(parts)
    local rpid, rlog, spid, slog
    serve.run({ users = USERS }, function(_, port)
      rpid, rlog = start_example("ibb_file.lua", env_for("bot", port, serve.pki().ca,
        { LXMPP_ACCEPT_FROM = "user@example.test", LXMPP_SAVE_DIR = dir, LXMPP_RECEIVE_COUNT = "1" }))
      assert.is_true(wait_log(rlog, "receiving files"), read(rlog))
      local u = assert(serve.login(port, "user", USERS.user))
      local ok, sha = u:ibb_send("bot@example.test/example", data, { name = "../../etc/evil name.bin" })
      assert.is_true(ok, sha)
      assert.is_true(wait_log(rlog, "verified"), read(rlog))
      -- and the sending side
      u:ibb_receive(function(offer) return offer.from == "bot@example.test/example" end)
      local got = lxmpp.task.waiter()
      u:on("ibb-received", function(t) got:wake(t) end)
      local file = dir .. "/to-send.txt"
      local f = assert(io.open(file, "wb"))
      f:write(("line\n"):rep(3000))
      f:close()
      spid, slog = start_example("ibb_file.lua", env_for("bot", port, serve.pki().ca,
        { LXMPP_SEND_TO = "user@example.test/r", LXMPP_FILE = file }))
      local t = got:wait()
      assert.equal(("line\n"):rep(3000), t.data)
      assert.equal("to-send.txt", t.file.name)
      assert.is_true(wait_log(slog, "sent to-send.txt"), read(slog))
      u:close()
    end)
    stop(rpid); stop(spid)
    local saved = read(dir .. "/__.._etc_evil_name.bin")       -- never a path from the peer
    assert.equal(#data, #saved, read(rlog))
    assert.is_true(saved == data)
    os.execute("rm -rf " .. q(dir))
  end)
end)

-- publisher (bot) and reader (user) of examples/pubsub_news.lua on `port`:
-- the reader hears what is published after it subscribed, then stops.
local function pubsub_news(port, ca, service)
  local env = { LXMPP_PUBSUB = service, LXMPP_NODE = "headlines" }
  local function with(extra)
    local e = {}
    for k, v in pairs(env) do e[k] = v end
    for k, v in pairs(extra) do e[k] = v end
    return e
  end
  local ppid, plog = start_example("pubsub_news.lua", env_for("bot", port, ca, with({ LXMPP_PUBLISH = "first" })))
  local rpid, rlog, ppid2, plog2
  local ok, err = pcall(function()
    assert.is_true(wait_log(plog, "published"), read(plog))
    rpid, rlog = start_example("pubsub_news.lua", env_for("user", port, ca, with({ LXMPP_COUNT = "2" })))
    assert.is_true(wait_log(rlog, "subscribed to headlines"), read(rlog))
    ppid2, plog2 = start_example("pubsub_news.lua", env_for("bot", port, ca, with({ LXMPP_PUBLISH = "second|third" })))
    assert.is_true(wait_log(rlog, ": third"), read(rlog) .. read(plog2))
    serve.until_true(function() return not running(rpid) end, 5)
  end)
  for _, p in ipairs({ ppid, rpid, ppid2 }) do if p then stop(p) end end
  if not ok then error(err, 0) end
  local out = read(rlog)
  assert.matches(": second", out, 1, true)
  assert.not_matches(": first", out, 1, true)
  assert.matches("created node headlines", read(plog), 1, true)
  assert.is_falsy(running(rpid))
end

describe("pubsub_news on the embedded server's pubsub service", function()
  it("a reader prints what the publisher publishes", function()
    serve.run({ users = USERS, pubsub = "pubsub.example.test" }, function(srv, port)
      pubsub_news(port, serve.pki().ca, "pubsub.example.test")
      local node = srv.hosts["pubsub.example.test"].service.nodes.headlines
      assert.same({ "bot@example.test" }, node:owners())
      assert.equal("Headlines", node.config.title)
      assert.equal(3, #node.items)
    end)
  end)
end)

describe("pubsub_news against Prosody", function()
  local srv
  setup(function()
    srv = prosody.start({ users = USERS, components = { { "pubsub.example.test", "pubsub",
      "admins = { \"bot@example.test\" }" } } })
  end)
  teardown(function() if srv then srv:stop() end end)

  it("a reader prints what the publisher publishes", function()
    local ok, err = pcall(lxmpp.run, function() pubsub_news(srv.port, srv.ca, "pubsub.example.test") end)
    if not ok then error(err, 0) end
  end)
end)
