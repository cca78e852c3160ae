-- The web peers of web/ (Converse.js in Debian's headless Chromium,
-- @xmpp/client under Node.js), as the interop specs drive them against a
-- server: Prosody (spec/interop/web_prosody_spec.lua) or lxmpp's own
-- (spec/interop/web_lxmpp_spec.lua). The server object `srv` gives:
--   srv.port (c2s TCP), srv.ca, srv.muc, srv:page_url(params), srv:log()
-- A missing Chromium, Node.js or web/node_modules is a failure, never a
-- skip (`make deps` installs them).
local lxmpp = require "lxmpp"
local proc = require "spec.support.proc"
local slow = require "spec.support.slow"
local pki = require "spec.support.pki"
local assert = require "luassert"

local M = {}

M.WEB = proc.ROOT .. "/web"
M.NODE = (function()
  local f = io.popen(pki.NO_PRELOAD .. "command -v node")
  local path = f and f:read("*l")
  if f then f:close() end
  return path or "node"
end)()
M.CHROMIUM = "/usr/bin/chromium"
-- each driver's own overall timeout (it exits non-zero by itself then),
-- and how long the spec waits for it beyond that
M.DRIVER_TIMEOUT = 60 * slow.factor
M.WAIT = M.DRIVER_TIMEOUT + 15

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

--- web_peers.check(): raises naming what is missing.
function M.check()
  assert(M.NODE:sub(1, 1) == "/" and exists(M.NODE), "node is not installed: run `make deps` (Node.js with npm)")
  assert(exists(M.CHROMIUM), "chromium is not installed: run `make deps` (Debian package chromium)")
  for _, m in ipairs({ "converse.js/dist/converse.min.js", "playwright-core/package.json", "@xmpp/client/package.json" }) do
    assert(exists(M.WEB .. "/node_modules/" .. m), "web/node_modules/" .. m .. " is missing: run `make web-deps`")
  end
end

--- web_peers.query(params) -> "?k=v&..." (sorted, percent-encoded), or ""
function M.query(params)
  local parts = {}
  for k, v in pairs(params or {}) do
    parts[#parts + 1] = k .. "=" .. tostring(v):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end)
  end
  table.sort(parts)
  return #parts > 0 and ("?" .. table.concat(parts, "&")) or ""
end

function M.user_client(srv, name, password)
  return assert(lxmpp.connect({ jid = name .. "@example.test/lua", password = password,
    host = "127.0.0.1", port = srv.port, cafile = srv.ca }))
end

--- web_peers.wait_bot(c) -> the bot's first answer: the bot is online once
-- a message to it is answered
function M.wait_bot(c)
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

--- web_peers.start_bot(srv) -> the dictionary bot (examples/dictbot.lua)
-- as its own process, logged in as bot@example.test (password bot-pw) over
-- TCP; returns once it answers (asked by dave, password dave-pw).
function M.start_bot(srv)
  local bot = proc.lua({ proc.ROOT .. "/examples/dictbot.lua", "bot@example.test/dict", "bot-pw" },
    { "LXMPP_HOST=127.0.0.1", "LXMPP_PORT=" .. srv.port, "LXMPP_CAFILE=" .. srv.ca })
  lxmpp.run(function()
    local c = M.user_client(srv, "dave", "dave-pw")
    local answered = M.wait_bot(c)
    c:close()
    assert(answered, "the dictionary bot did not come online")
  end)
  return bot
end

--- web_peers.stop(p): kills a process started by proc and removes its files.
function M.stop(p)
  if not p then return end
  p:kill()
  p:cleanup()
end

function M.report(srv, r, what)
  local log = srv and srv.log and srv:log() or ""
  return what .. " exited " .. tostring(r.code) .. "\n--- stdout\n" .. r.out .. "\n--- stderr\n" .. r.err
    .. (log ~= "" and ("\n--- server log (tail)\n" .. log:sub(-3000)) or "")
end

--- web_peers.converse(srv, transport, o): Converse through one transport
-- (o.params: the page's query; o.url: the page's address, else
-- srv:page_url(o.params)); logs in through its form as alice, finds the bot
-- in the roster, asks it o.word and waits for o.expect; with o.room an
-- lxmpp client (carol) waits in that room of srv.muc and answers Converse
-- there. o.shot_name: the screenshot's name under LXMPP_WEB_SHOTS, and
-- o.keep_shot: a path to copy it to.
function M.converse(srv, transport, o)
  local shot = os.tmpname() .. ".png"
  local say, answer = "hello from converse over " .. transport, "hello back from lxmpp over " .. transport
  local url = o.url or srv:page_url(o.params)
  local argv = { M.NODE, M.WEB .. "/converse_drive.mjs", "--url", url,
    "--jid", "alice@example.test", "--password", "alice-pw",
    "--contact", "bot@example.test", "--contact-name", "Dictionary bot",
    "--bot", "bot@example.test", "--word", o.word, "--expect", o.expect,
    "--screenshot", shot, "--timeout", tostring(M.DRIVER_TIMEOUT) }
  local r
  lxmpp.run(function()
    local carol, room
    if o.room then
      local room_jid = o.room .. "@" .. srv.muc
      carol = M.user_client(srv, "carol", "carol-pw")
      room = assert(carol:muc_join(room_jid, "carol"))
      carol:on("muc-message", function(rm, m)
        if rm == room and not m.self and not m.delayed and m.body == say then room:say(answer) end
      end)
      for _, a in ipairs({ "--muc", room_jid, "--nick", "alice", "--muc-say", say, "--muc-expect", answer }) do
        argv[#argv + 1] = a
      end
    end
    r = proc.start(argv):wait(M.WAIT)
    if carol then carol:close() end
  end)
  local png = pki.read_file(shot) or ""
  -- LXMPP_WEB_SHOTS=DIR keeps the screenshots, to look at what Converse showed
  local keep = os.getenv("LXMPP_WEB_SHOTS")
  if keep and keep ~= "" then
    os.execute("cp '" .. shot .. "' '" .. keep .. "/" .. (o.shot_name or "converse") .. "-" ..
      transport:gsub("%W+", "-") .. ".png' 2>/dev/null")
  end
  if o.keep_shot and r.code == 0 then os.execute("cp '" .. shot .. "' '" .. o.keep_shot .. "'") end
  os.remove(shot)
  assert.equal(0, r.code, M.report(srv, r, "converse_drive.mjs over " .. transport))
  for _, step in ipairs({ "page", "login", "roster", "chat", o.room and "muc" or nil, "screenshot" }) do
    assert.truthy(r.out:find("ok " .. step .. " ", 1, true), M.report(srv, r, "step " .. step))
  end
  assert.equal("\137PNG", png:sub(1, 4), "no screenshot")
  assert.truthy(#png > 10000, "a blank screenshot")
end

--- web_peers.xmpp_client(srv, service, word, expect): @xmpp/client over
-- WebSocket logs in as carol and asks the bot
function M.xmpp_client(srv, service, word, expect)
  local r
  lxmpp.run(function()
    r = proc.start({ M.NODE, M.WEB .. "/xmpp_client.mjs", "--service", service, "--domain", "example.test",
      "--username", "carol", "--password", "carol-pw", "--to", "bot@example.test",
      "--body", word, "--expect", expect, "--timeout", tostring(M.DRIVER_TIMEOUT) }):wait(M.WAIT)
  end)
  assert.equal(0, r.code, M.report(srv, r, "xmpp_client.mjs"))
  assert.truthy(r.out:find("reply: " .. expect, 1, true), M.report(srv, r, "xmpp_client.mjs"))
end

return M
