-- A LÖVE 11 game with an XMPP chat: LÖVE owns the main loop and lxmpp gets
-- a slice of every frame, lxmpp.step(0) in love.update (docs/api.md,
-- `lxmpp.step`), so the network never holds a frame up; the same pattern
-- as examples/game_loop.lua for a plain Lua loop. A few players wander
-- across the window; the chat shows what arrives, Enter sends the typed
-- line to LXMPP_TO, and "!players" or "!time" sent to us is answered.
--
-- LÖVE 11 on Debian runs LuaJIT, so it loads lxmpp built for LuaJIT
-- (`make build LUA=luajit`, into build-luajit/). From the checkout:
--
--   LUA_PATH="$PWD/lua/?.lua;$PWD/lua/?/init.lua;;" LUA_CPATH="$PWD/build-luajit/?.so;;" \
--     LXMPP_TO=friend@example.org love examples/love player@example.org secret [HOST [PORT]]
--
-- Connection options come from the arguments or the environment as for the
-- other examples (examples/common.lua: LXMPP_JID, LXMPP_PASSWORD, LXMPP_HOST,
-- LXMPP_PORT, LXMPP_CAFILE, LXMPP_INSECURE...).
--
-- LXMPP_SMOKE=1 makes it a test (spec/interop/game_loops_spec.lua runs it
-- under Xvfb): once connected it says hello to LXMPP_TO, and it quits with
-- status 0 as soon as it has both received a message and answered one,
-- with status 1 if it could not connect or LXMPP_SMOKE_SECONDS (default 30)
-- passed first. Either way it prints one line saying what happened.

local source = love.filesystem.getSource()           -- this directory
package.path = source .. "/../?.lua;" .. package.path  -- examples/common.lua
local lxmpp = require "lxmpp"
local common = require "common"

local SMOKE = os.getenv("LXMPP_SMOKE") == "1"
local SMOKE_SECONDS = tonumber(os.getenv("LXMPP_SMOKE_SECONDS") or "") or 30
local TO = os.getenv("LXMPP_TO")

local players = { { name = "ada", x = 40, y = 80 }, { name = "linus", x = 200, y = 140 },
  { name = "grace", x = 360, y = 200 } }
local chat = {}                     -- the last lines shown
local typed = ""
local bot, failure
local received, answered, sent = 0, 0, 0
local clock, frames = 0, 0

local function show(fmt, ...)
  local line = fmt:format(...)
  chat[#chat + 1] = line
  if #chat > 12 then table.remove(chat, 1) end
  print(line)
end

-- quits with a status and a line on the console saying why (the smoke
-- test reads both)
local function finish(status, fmt, ...)
  print(fmt:format(...))
  love.event.quit(status)
end

local function answer(body)
  if body == "!players" then
    local where = {}
    for _, p in ipairs(players) do where[#where + 1] = ("%s@%.1f"):format(p.name, p.x) end
    return table.concat(where, " ")
  elseif body == "!time" then
    return ("%d frames in %.1f s"):format(frames, clock)
  end
end

function love.load(args)
  local opts = common.options(args)
  lxmpp.spawn(function()
    local c, message, condition = lxmpp.connect(opts)
    if not c then
      failure = ("%s (%s)"):format(tostring(message), tostring(condition))
      return
    end
    bot = c
    show("connected as %s", tostring(c.jid))
    c:send_presence({ status = "in game" })
    c:on("message", function(m)
      local body = m:get_child_text("body")
      if not body or m.attr.type == "error" then return end
      received = received + 1
      show("<%s> %s", tostring(m.attr.from), body)
      local reply = answer(body)
      if reply then
        c:send_message(m.attr.from, reply, "chat")
        answered = answered + 1
      end
    end)
    if SMOKE and TO then
      c:send_message(TO, "hello from LÖVE", "chat")
      sent = sent + 1
    end
  end)
end

function love.update(dt)
  clock, frames = clock + dt, frames + 1
  for _, p in ipairs(players) do p.x = (p.x + dt * 30) % 600 end
  lxmpp.step(0)                     -- lxmpp's slice of the frame: never blocks
  if failure then
    finish(1, "could not connect: %s", failure)
    failure = nil
  elseif SMOKE and received > 0 and answered > 0 then
    SMOKE = false
    finish(0, "smoke test passed: sent %d, received %d, answered %d, %d frames in %.1f s",
      sent, received, answered, frames, clock)
  elseif SMOKE and clock > SMOKE_SECONDS then
    SMOKE = false
    finish(1, "smoke test failed after %.1f s: connected %s, sent %d, received %d, answered %d",
      clock, tostring(bot ~= nil), sent, received, answered)
  end
end

function love.draw()
  for _, p in ipairs(players) do
    love.graphics.rectangle("fill", p.x, p.y, 16, 16)
    love.graphics.print(p.name, p.x, p.y + 18)
  end
  for i, line in ipairs(chat) do love.graphics.print(line, 10, 230 + (i - 1) * 10) end
  love.graphics.print("> " .. typed, 10, 345)
end

function love.textinput(text) typed = typed .. text end

function love.keypressed(key)
  if key == "backspace" then
    typed = typed:sub(1, -2)                  -- (ASCII: a real game would use utf8.offset)
  elseif key == "return" and typed ~= "" and bot and TO then
    bot:send_message(TO, typed, "chat")
    show("<me> %s", typed)
    typed = ""
  elseif key == "escape" then
    love.event.quit(0)
  end
end

-- leaving: the bot ends its stream cleanly, for at most two seconds
function love.quit()
  if bot then
    lxmpp.spawn(function() bot:close() end)
    local deadline = love.timer.getTime() + 2
    while lxmpp.step(0.05) and love.timer.getTime() < deadline do end
  end
end
