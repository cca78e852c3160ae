-- A game server's main loop at 60 frames per second that embeds a chat bot:
-- the host owns the loop and calls lxmpp.step(0) once per frame, so lxmpp
-- never blocks a frame. The bot answers "!players" and "!time" while the
-- simulation runs; at the end (or on Ctrl-C, which this host asks lxmpp
-- to watch) the frame statistics are printed and the bot leaves cleanly.
--
--   lua5.4 examples/game_loop.lua bot@example.org secret [HOST [PORT]]
--   LXMPP_FRAMES=600 (how many frames to run; default 600 = 10 s)

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local common = require "common"

local opts = common.options(arg)
local FRAMES = tonumber(os.getenv("LXMPP_FRAMES") or "600")
local FRAME = 1 / 60

-- the "game": a few players wandering about
local players = { { name = "ada", x = 0 }, { name = "linus", x = 10 }, { name = "grace", x = 20 } }
local function simulate(dt)
  for _, p in ipairs(players) do p.x = p.x + dt * 3 end
end

local bot, failure
local answered = 0
lxmpp.spawn(function()
  local c, message, condition = lxmpp.connect(opts)
  if not c then failure = message .. " (" .. condition .. ")" return end
  bot = c
  common.say("bot online as %s", c.jid)
  c:send_presence({ status = "in game" })
  c:on("message", function(m)
    local body = m:get_child_text("body")
    if not body or m.attr.type == "error" then return end
    local reply
    if body == "!players" then
      local names = {}
      for _, p in ipairs(players) do names[#names + 1] = ("%s@%.1f"):format(p.name, p.x) end
      reply = table.concat(names, " ")
    elseif body == "!time" then
      reply = ("frame time is %.1f ms"):format(FRAME * 1000)
    else
      reply = "commands: !players !time"
    end
    answered = answered + 1
    c:send_message(m.attr.from, reply, "chat")
  end)
end)

-- The host owns its signals: lxmpp.step takes none. This host asks for
-- Ctrl-C, which ends the game at the next frame (and the bot cleanly).
local quit = false
local ctrl_c = lxmpp.on_signal("int", function() quit = true end)

-- the host's loop: simulate, then give lxmpp its slice without blocking
local worst, total, frame = 0, 0, 0
local start = core.now()
while frame < FRAMES and not failure and not quit do
  local t0 = core.now()
  simulate(FRAME)
  lxmpp.step(0)
  local spent = core.now() - t0
  worst = math.max(worst, spent)
  total = total + spent
  frame = frame + 1
  -- idle until the next frame; lxmpp handles what arrives meanwhile, and
  -- step(timeout) never waits longer than asked
  local rest = start + frame * FRAME - core.now()
  if rest > 0 then lxmpp.step(rest) end
end
ctrl_c:stop()
if failure then
  common.say("bot could not connect: %s", failure)
  os.exit(1)
end
if quit then common.say("Ctrl-C: stopping the game") end
local elapsed = core.now() - start
common.say("%d frames in %.2f s (%.1f fps); work per frame avg %.2f ms, worst %.2f ms; %d messages answered",
  frame, elapsed, frame / elapsed, total / frame * 1000, worst * 1000, answered)
if bot then
  lxmpp.spawn(function() bot:close() end)
  while lxmpp.step(0.05) do end
end
