-- lxmpp.state_file: a client's saved state in a file of its own, for
-- connect{ stream_management = require("lxmpp.state_file").open(path) }.
-- The state (features/sm.lua, SM:state) holds the XEP-0198 session, the
-- XEP-0388 user-agent id and the XEP-0484 FAST token, a secret that logs in
-- as the account until it expires: the file is created with mode 0600 (a
-- new file is made with that mode, core.write_private, then renamed over
-- the old one, so a reader never sees half a state) and holds data, never
-- code (the server's storage codec, lxmpp.server.codec, read by a strict
-- decoder).
--
--   local sf = require "lxmpp.state_file"
--   local c = lxmpp.connect{ jid = ..., password = ..., stream_management = sf.open("bot.state") }

local codec = require "lxmpp.server.codec"
local core = require "lxmpp.core"

local io_open, os_rename, os_remove, type, pcall, tostring, pairs, error =
  io.open, os.rename, os.remove, type, pcall, tostring, pairs, error

local M = {}

--- state_file.load(path) -> the saved state, or nil (no file, or not a
-- state: nil, message).
function M.load(path)
  local f = io_open(path, "rb")
  if not f then return nil end
  local bytes = f:read("*a")
  f:close()
  if bytes == "" then return nil end
  local ok, v = pcall(codec.decode, bytes)
  if not ok or type(v) ~= "table" then return nil, path .. " does not hold a saved state" end
  return v
end

--- state_file.write(path, state) -> true | nil, message: state nil removes
-- the file. Mode 0600.
function M.write(path, state)
  if state == nil then
    os_remove(path)
    return true
  end
  local bytes = codec.encode(state)
  local tmp = path .. ".new"
  os_remove(tmp)
  -- a new file, mode 0600 from its creation (no shell, no umask dance: this
  -- runs for every stanza the session counts)
  local ok, err = core.write_private(tmp, bytes)
  if not ok then return nil, err end
  local rok, rerr = os_rename(tmp, path)
  if not rok then return nil, "cannot replace " .. path .. ": " .. tostring(rerr) end
  return true
end

--- state_file.open(path [, opts]) -> a stream_management option table: {
-- state = what the file holds, save = writes it } (opts: more fields of
-- that option, ack_every =, ...). A failed write raises, so that the
-- client logs it (stream_management.save).
function M.open(path, opts)
  if type(path) ~= "string" then error("state_file.open: path must be a string", 2) end
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.state = M.load(path)
  o.save = function(state)
    local ok, err = M.write(path, state)
    if not ok then error(err) end
  end
  return o
end

return M
