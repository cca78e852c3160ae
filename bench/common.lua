-- Helpers the benchmarks share: quoting for the shell, reading one line of a
-- command's output, and describing the machine in the report.
local io, string, tostring = io, string, tostring

local M = {}

--- A die(fmt, ...) for script `name`: prints to stderr and exits 1, closing
-- the Lua state (so temporary directories of spec supports are removed).
function M.dier(name)
  return function(fmt, ...)
    io.stderr:write(name, ": ", string.format(fmt, ...), "\n")
    os.exit(1, true)
  end
end

function M.quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

function M.first_line(cmd)
  local f = io.popen(cmd .. " 2>/dev/null")
  if not f then return nil end
  local l = f:read("l")
  f:close()
  return l
end

--- "Lua 5.4.4" of the interpreter running the benchmark
function M.lua_version(lua_cmd)
  local v = M.first_line(M.quote(lua_cmd or arg[-1] or "lua5.4") .. " -v") or _VERSION
  return v:match("^(Lua %S+)") or v
end

--- the CPU model (nil if unknown) and the number of processors, from /proc/cpuinfo
function M.cpu()
  local model, n = nil, 0
  local f = io.open("/proc/cpuinfo")
  if f then
    for line in f:lines() do
      model = model or line:match("^model name%s*:%s*(.-)%s*$")
      if line:match("^processor%s*:") then n = n + 1 end
    end
    f:close()
  end
  return model, n
end

--- 1234567 -> "1,234,567"
function M.grouped(x)
  local s = string.format("%.0f", x)
  local k
  repeat s, k = s:gsub("^(%d+)(%d%d%d)", "%1,%2") until k == 0
  return s
end

return M
