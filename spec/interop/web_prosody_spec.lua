-- The web peers of web/ (issue 15's harness) against a real server first:
-- Prosody 0.12 with mod_websocket, mod_bosh and a MUC service on loopback
-- (spec/support/web_prosody.lua), the dictionary bot (examples/dictbot.lua,
-- an lxmpp client over TCP) and an lxmpp client in a room. Each peer is a
-- program nobody here wrote, run as its users run it:
--   - @xmpp/client over WebSocket asks the bot a word (web/xmpp_client.mjs);
--   - Converse.js in Debian's headless Chromium (web/converse_drive.mjs),
--     once over WebSocket and once over BOSH: logs in through its form,
--     finds the bot in its roster, asks it a word, joins a room and gets an
--     answer there from the lxmpp client; and once from another origin
--     (web/serve_static.mjs) over BOSH, through Prosody's CORS headers.
-- The same drivers are to be pointed at lxmpp's own server later.
-- LXMPP_WEB_SHOTS=DIR keeps Converse's screenshots there. A missing
-- Chromium, Node.js or web/node_modules is a failure, never a skip
-- (`make deps` installs them).
local lxmpp = require "lxmpp"
local proc = require "spec.support.proc"
local slow = require "spec.support.slow"
local web_prosody = require "spec.support.web_prosody"

local WEB = proc.ROOT .. "/web"
local NODE = (function()
  local f = io.popen(require("spec.support.pki").NO_PRELOAD .. "command -v node")
  local path = f and f:read("l")
  if f then f:close() end
  return path or "node"
end)()
local CHROMIUM = "/usr/bin/chromium"
-- each driver's own overall timeout (it exits non-zero by itself then),
-- and how long the spec waits for it beyond that
local DRIVER_TIMEOUT = 60 * slow.factor
local WAIT = DRIVER_TIMEOUT + 15

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

local srv, bot

local function user_client(name, password)
  return assert(lxmpp.connect({ jid = name .. "@example.test/lua", password = password,
    host = "127.0.0.1", port = srv.port, cafile = srv.ca }))
end

-- the bot is online once a message to it is answered
local function wait_bot(c)
  for _ = 1, 40 do
    local w = lxmpp.task.waiter()
    local id = c:on("message", function(m)
      if m:get_child_text("body") then w:wake(m:get_child_text("body")) end
    end)
    local t = require("lxmpp.core").timer(0.5, w)
    c:send_message("bot@example.test", "lua")
    local answer = w:wait()
    t:stop()
    c:off(id)
    if answer then return answer end
  end
end

local function report(r, what)
  return what .. " exited " .. tostring(r.code) .. "\n--- stdout\n" .. r.out .. "\n--- stderr\n" .. r.err
    .. (srv and ("\n--- prosody log (tail)\n" .. srv:log():sub(-3000)) or "")
end

-- The page's address on a static server of web/'s own (serve_static.mjs),
-- another origin than Prosody's; params as for srv:page_url.
local function other_origin(base, params)
  local url = srv:page_url(params)
  return base .. "converse.html" .. (url:match("%?.*$") or "")
end

-- Converse through one transport (o.params: the page's query; o.page_base:
-- serve the page from there instead of from Prosody); o.room: an lxmpp
-- client waits in that room and answers Converse there.
local function converse_run(transport, o)
  local shot = os.tmpname() .. ".png"
  local say, answer = "hello from converse over " .. transport, "hello back from lxmpp over " .. transport
  local url = o.page_base and other_origin(o.page_base, o.params) or srv:page_url(o.params)
  local argv = { NODE, WEB .. "/converse_drive.mjs", "--url", url,
    "--jid", "alice@example.test", "--password", "alice-pw",
    "--contact", "bot@example.test", "--contact-name", "Dictionary bot",
    "--bot", "bot@example.test", "--word", o.word, "--expect", o.expect,
    "--screenshot", shot, "--timeout", tostring(DRIVER_TIMEOUT) }
  local r
  lxmpp.run(function()
    local carol, room
    if o.room then
      local room_jid = o.room .. "@" .. srv.muc
      carol = user_client("carol", "carol-pw")
      room = assert(carol:muc_join(room_jid, "carol"))
      carol:on("muc-message", function(rm, m)
        if rm == room and not m.self and not m.delayed and m.body == say then room:say(answer) end
      end)
      for _, a in ipairs({ "--muc", room_jid, "--nick", "alice", "--muc-say", say, "--muc-expect", answer }) do
        argv[#argv + 1] = a
      end
    end
    r = proc.start(argv):wait(WAIT)
    if carol then carol:close() end
  end)
  local png = require("spec.support.pki").read_file(shot) or ""
  -- LXMPP_WEB_SHOTS=DIR keeps the screenshots, to look at what Converse showed
  local keep = os.getenv("LXMPP_WEB_SHOTS")
  if keep and keep ~= "" then
    os.execute("cp '" .. shot .. "' '" .. keep .. "/converse-prosody-" .. transport .. ".png' 2>/dev/null")
  end
  os.remove(shot)
  assert.equal(0, r.code, report(r, "converse_drive.mjs over " .. transport))
  for _, step in ipairs({ "page", "login", "roster", "chat", o.room and "muc" or nil, "screenshot" }) do
    assert.truthy(r.out:find("ok " .. step .. " ", 1, true), report(r, "step " .. step))
  end
  assert.equal("\137PNG", png:sub(1, 4), "no screenshot")
  assert.truthy(#png > 10000, "a blank screenshot")
end

describe("web peers against Prosody (WebSocket, BOSH)", function()
  setup(function()
    assert(NODE:sub(1, 1) == "/" and exists(NODE), "node is not installed: run `make deps` (Node.js with npm)")
    assert(exists(CHROMIUM), "chromium is not installed: run `make deps` (Debian package chromium)")
    for _, m in ipairs({ "converse.js/dist/converse.min.js", "playwright-core/package.json", "@xmpp/client/package.json" }) do
      assert(exists(WEB .. "/node_modules/" .. m), "web/node_modules/" .. m .. " is missing: run `make web-deps`")
    end
    srv = web_prosody.start({
      users = { alice = "alice-pw", bot = "bot-pw", carol = "carol-pw", dave = "dave-pw" },
      rosters = { alice = { ["bot@example.test"] = "Dictionary bot" }, bot = { ["alice@example.test"] = "Alice" } },
    })
    bot = proc.lua({ proc.ROOT .. "/examples/dictbot.lua", "bot@example.test/dict", "bot-pw" },
      { "LXMPP_HOST=127.0.0.1", "LXMPP_PORT=" .. srv.port, "LXMPP_CAFILE=" .. srv.ca })
    lxmpp.run(function()
      local c = user_client("dave", "dave-pw")
      assert(wait_bot(c), "the dictionary bot did not come online")
      c:close()
    end)
  end)

  teardown(function()
    if bot then
      bot:kill()
      bot:cleanup()
    end
    if srv then srv:stop() end
  end)

  it("@xmpp/client over WebSocket logs in and gets the bot's answer", function()
    local r
    lxmpp.run(function()
      r = proc.start({ NODE, WEB .. "/xmpp_client.mjs", "--service", srv.ws_url, "--domain", "example.test",
        "--username", "carol", "--password", "carol-pw", "--to", "bot@example.test",
        "--body", "stanza", "--expect", "stanza: a unit of XMPP", "--timeout", tostring(DRIVER_TIMEOUT) }):wait(WAIT)
    end)
    assert.equal(0, r.code, report(r, "xmpp_client.mjs"))
    assert.truthy(r.out:find("reply: stanza: a unit of XMPP", 1, true), report(r, "xmpp_client.mjs"))
  end)

  it("Converse.js over WebSocket: login form, roster, chat with the bot, a room", function()
    converse_run("websocket", { params = { websocket_url = srv.ws_url }, word = "xmpp",
      expect = "xmpp: the Extensible Messaging", room = "ws-lounge" })
  end)

  it("Converse.js over BOSH: login form, roster, chat with the bot, a room", function()
    converse_run("bosh", { params = { bosh_service_url = srv.bosh_url }, word = "jid",
      expect = "jid: a Jabber ID", room = "bosh-lounge" })
  end)

  it("Converse.js served from another origin talks BOSH through the server's CORS headers", function()
    local static, base
    lxmpp.run(function()
      static = proc.start({ NODE, WEB .. "/serve_static.mjs" })
      base = static:wait_output("listening on (http://%S+)", 10 * slow.factor)
    end)
    local ok, err = pcall(function()
      assert(base, "serve_static.mjs did not start")
      assert.not_equal(srv.http_base .. "/", base)
      converse_run("bosh from another origin", { page_base = base, params = { bosh_service_url = srv.bosh_url },
        word = "roster", expect = "roster: an XMPP contact list" })
    end)
    static:kill()
    static:cleanup()
    assert(ok, err)
  end)
end)
