-- External programs (slixmpp scripts, a libstrophe client) run from inside
-- lxmpp.run without blocking its loop: the program runs in the background
-- in a process group of its own, its output goes to files, and the waiting
-- task polls for its exit status with lxmpp.sleep, so an embedded server
-- in the same process keeps serving it meanwhile.
--
--   local proc = require "spec.support.proc"
--   local p = proc.start({ "/usr/bin/python3", "script.py", "arg" })
--   local r = p:wait(20)   -- r.code (nil on timeout: then killed), r.out, r.err
local LUA = require "spec.support.lua_bin"
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local pki = require "spec.support.pki"

local io, os, error, tonumber, table, ipairs, setmetatable, assert =
  io, os, error, tonumber, table, ipairs, setmetatable, assert

local q = pki.q

local M = {}

local read = pki.read_file

local Proc = {}
Proc.__index = Proc

--- proc.start(argv [, opts]) -> process. Starts at once; never yields.
-- opts.stdin: a file (a FIFO) the program reads instead of /dev/null.
function M.start(argv, opts)
  local dir = pki.sh("mktemp -d /tmp/lxmpp-proc.XXXXXX"):gsub("%s+$", "")
  local words = {}
  for i, a in ipairs(argv) do words[i] = q(a) end
  -- the exit status lands in rc only once the program is done (rename)
  local script = table.concat(words, " ") .. " >" .. q(dir .. "/out") .. " 2>" .. q(dir .. "/err")
    .. " <" .. q(opts and opts.stdin or "/dev/null")
    .. "; echo $? >" .. q(dir .. "/rc.tmp") .. "; mv " .. q(dir .. "/rc.tmp") .. " " .. q(dir .. "/rc")
  -- setsid: a process group of its own, so a timeout kills the program too
  local f = assert(io.popen(pki.NO_PRELOAD .. "setsid sh -c " .. q(script)
    .. " >/dev/null 2>&1 </dev/null & echo $!", "r"))
  local pid = tonumber(f:read("*l"))
  f:close()
  if not pid then error("could not start " .. argv[1]) end
  return setmetatable({ pid = pid, dir = dir, argv = argv }, Proc)
end

-- The project's root, and lxmpp's paths in it for a `lua5.4` we start.
local ROOT = debug.getinfo(1, "S").source:match("^@(.*)/spec/support/") or "."
if ROOT:sub(1, 1) ~= "/" then ROOT = os.getenv("PWD") .. "/" .. ROOT end
M.ROOT = ROOT

--- proc.lua(args [, env]) -> process: `lua5.4 args...` (the Lua the specs
-- run under: spec/support/lua_bin.lua) with this tree's
-- lxmpp on its paths (and env: a list of "NAME=value"), e.g.
-- proc.lua({ proc.ROOT .. "/bin/lxmpp", "serve", ... }).
function M.lua(args, env)
  local argv = { "env", "LUA_PATH=" .. ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;;",
    "LUA_CPATH=" .. ROOT .. "/" .. (LUA == "lua5.4" and "build" or "build-" .. LUA) .. "/?.so;;" }  -- (make LUA=...)
  if (os.getenv("LXMPP_ROCK_TREE") or "") ~= "" then
    argv = { "env" }   -- tools/test-rocks: the installed rock's paths, inherited
  end
  for _, e in ipairs(env or {}) do argv[#argv + 1] = e end
  argv[#argv + 1] = LUA
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return M.start(argv)
end

--- p:wait(timeout) -> { code =, out =, err = }; code is nil when the
-- program did not end in time (it is then killed). Yields while waiting.
function Proc:wait(timeout)
  local deadline = core.now() + (timeout or 30)
  local rc
  while true do
    rc = read(self.dir .. "/rc")
    if rc == "" then rc = nil end                 -- not written (completely) yet
    if rc or core.now() > deadline then break end
    lxmpp.sleep(0.05)
  end
  if rc then self.pid = nil else self:kill() end   -- (an ended pid may be reused)
  local r = { code = tonumber(rc), out = read(self.dir .. "/out") or "", err = read(self.dir .. "/err") or "" }
  self:cleanup()
  return r
end

--- p:signal(name): sends a signal ("INT", "TERM", ...) to the program (the
-- children of the shell that waits for it to write its exit status).
function Proc:signal(name)
  if self.pid then os.execute(pki.NO_PRELOAD .. "pkill -" .. name .. " -P " .. self.pid .. " 2>/dev/null") end
end

--- p:wait_output(pattern, timeout) -> the first capture of pattern in what
-- the program has written to stdout so far (polling), or nil, the output.
function Proc:wait_output(pattern, timeout)
  local deadline = core.now() + (timeout or 10)
  while true do
    local out = read(self.dir .. "/out") or ""
    local found = out:match(pattern)
    if found then return found, out end
    if core.now() > deadline or (read(self.dir .. "/rc") or "") ~= "" then return nil, out end
    lxmpp.sleep(0.05)
  end
end

--- p:kill(): ends the program and everything it started.
function Proc:kill()
  if self.pid then
    os.execute(pki.NO_PRELOAD .. "kill -KILL -" .. self.pid .. " 2>/dev/null")
    self.pid = nil
  end
end

function Proc:cleanup()
  if self.dir then
    os.execute(pki.NO_PRELOAD .. "rm -rf " .. q(self.dir))
    self.dir = nil
  end
end

return M
