-- A bot that sits in a multi-user chat room (XEP-0045) and answers
-- commands said there: !ping, !who, !roll N, !time, !help. It ignores the
-- room's history and its own messages, answers "!whoami" privately, and
-- comes back when it is kicked (not when it is banned).
--
--   LXMPP_ROOM=lobby@conference.example.org [LXMPP_NICK=bot] [LXMPP_ROOM_PASSWORD=...] \
--     lua5.4 examples/muc_bot.lua bot@example.org secret [HOST [PORT]]

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local lxmpp = require "lxmpp"
local common = require "common"

local opts = common.options(arg)
local room_jid = common.need_env("LXMPP_ROOM", "the room's JID (room@conference.example.org)")
local nick = os.getenv("LXMPP_NICK") or "bot"

local commands = {}

function commands.ping() return "pong" end

function commands.time() return os.date("!%Y-%m-%d %H:%M:%S UTC") end

function commands.who(room)
  local nicks = {}
  for n, occupant in pairs(room.occupants) do nicks[#nicks + 1] = n .. " (" .. occupant.role .. ")" end
  table.sort(nicks)
  return #nicks .. " here: " .. table.concat(nicks, ", ")
end

function commands.roll(_, _, arg)
  local sides = tonumber(arg or "") or 6
  if sides < 2 or sides > 1000000 then return "roll: sides from 2 to 1000000" end
  return ("rolled %d (1-%d)"):format(math.random(sides), sides)
end

function commands.help()
  return "commands: !ping, !who, !roll [N], !time, !whoami (private), !help"
end

lxmpp.run(function()
  local c = common.connect(opts)
  c:send_presence()
  local join_opts = { password = os.getenv("LXMPP_ROOM_PASSWORD"), history = { maxstanzas = 0 } }
  local room, message, condition = c:muc_join(room_jid, nick, join_opts)
  if not room then
    common.say("cannot join %s: %s (%s)", room_jid, message, condition)
    c:close()
    os.exit(1)
  end
  common.say("in %s as %s%s", room.jid, room.nick, room.created and " (created the room)" or "")

  c:on("muc-message", function(r, m)
    if m.self or m.delayed or not m.nick then return end   -- our echo, history, the room itself
    local cmd, rest = m.body:match("^!(%a+)%s*(.-)%s*$")
    if cmd == "whoami" then
      local occupant = r.occupants[m.nick]
      r:private(m.nick, ("you are %s, %s and %s"):format(m.nick, occupant and occupant.role or "?",
        occupant and occupant.affiliation or "?"))
      return
    end
    local fn = cmd and commands[cmd:lower()]
    if fn then
      local answer = fn(r, m.nick, rest ~= "" and rest or nil)
      common.say("%s: !%s -> %s", m.nick, cmd, answer)
      r:say(m.nick .. ": " .. answer)
    end
  end)

  c:on("muc-occupant", function(r, occupant, what)
    if what == "joined" then common.say("%s joined %s", occupant.nick, r.jid) end
  end)

  c:on("muc-left", function(r, info)
    common.say("removed from %s: %s %s", r.jid, tostring(info.reason), info.text or "")
    if info.reason == "kicked" then
      lxmpp.sleep(1)
      local again, msg, cond = c:muc_join(room_jid, nick, join_opts)
      if again then common.say("back in %s", again.jid) return end
      common.say("cannot rejoin: %s (%s)", msg, cond)
    end
    c:close()
  end)
end)
