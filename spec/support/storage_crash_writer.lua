-- The child process of the crash-safety spec (spec/server_storage_spec.lua).
--
--   lua5.4 storage_crash_writer.lua PATH ROUND
--
-- Writes to the SQLite store at PATH in a loop, and after each write has
-- returned (the acknowledged point) prints one line and flushes:
--   o ROUND I ID    an offline message was pushed, with this id
--   k ROUND I       a key/value pair was set
--   r ROUND I VER   a roster item was added, the roster is now at VER
-- until the spec kills it with SIGKILL (or, as a guard, after 60 seconds).
-- What each write holds is a function of ROUND and I (expected_* below), so
-- the spec can tell a complete write from a half-written one.

local compat = require "lxmpp.compat"
local storage = require "lxmpp.server.storage"

local writer = {}

function writer.offline_xml(round, i)
  return ("<message id='%d.%d'><body>%s</body></message>"):format(round, i, ("x"):rep(i % 300))
end

function writer.kv_key(round, i)
  return round .. "." .. i
end

function writer.kv_value(round, i)
  return { round = round, i = i, half = i + 0.5, bin = ("\0\255'\""):rep(i % 64), nested = { { i } } }
end

function writer.contact(round, i)
  return ("c%d.%d@example.org"):format(round, i)
end

function writer.roster_item(round, i)
  return { name = "contact " .. round .. "." .. i, subscription = "both", groups = { "g" .. i % 3 } }
end

writer.USER = "crash"

local function main(path, round)
  round = assert(compat.tointeger(tonumber(round)), "round must be an integer")
  local store = assert(storage.open(path))
  local deadline = os.time() + 60
  local i = 0
  while os.time() < deadline do
    i = i + 1
    local id = assert(store:push_offline(writer.USER, writer.offline_xml(round, i)))
    io.stdout:write(("o %d %d %d\n"):format(round, i, id))
    io.stdout:flush()
    assert(store:set(writer.USER, writer.kv_key(round, i), writer.kv_value(round, i)))
    io.stdout:write(("k %d %d\n"):format(round, i))
    io.stdout:flush()
    local ver = assert(store:set_roster_item(writer.USER, writer.contact(round, i), writer.roster_item(round, i)))
    io.stdout:write(("r %d %d %d\n"):format(round, i, ver))
    io.stdout:flush()
  end
  store:close()
end

if arg and arg[0] and arg[0]:match("storage_crash_writer%.lua$") and arg[1] then
  main(arg[1], arg[2])
end

return writer
