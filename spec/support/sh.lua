-- Exit codes of shell commands the same way on every Lua: 5.1 and LuaJIT's
-- os.execute return the raw wait status and their popen handles' close()
-- no status at all, where 5.2+ return (true | nil, "exit", code).
local io, os, type, tonumber = io, os, type, tonumber

local M = {}

--- sh.execute(cmd) -> ok, code: os.execute as Lua 5.2+ reports it
function M.execute(cmd)
  local a, _, code = os.execute(cmd)
  if type(a) == "number" then
    code = a >= 256 and a / 256 or a
    return code == 0 or nil, code
  end
  return a, code
end

--- sh.popen_read(cmd) -> output, code: the command's whole stdout and its
-- exit code (the shell writes the code after the output, taken off here)
function M.popen_read(cmd)
  local f = assert(io.popen("{ " .. cmd .. "\n}; printf '\\001%d' $?", "r"))
  local out = f:read("*a")
  f:close()
  local body, code = out:match("^(.*)\1(%d+)$")
  if not body then return out, nil end
  return body, tonumber(code)
end

return M
