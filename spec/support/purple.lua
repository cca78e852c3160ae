-- Drives spec/support/purple_client.c, a headless client on libpurple
-- (Pidgin's engine), from a spec: builds it into build/ (a missing
-- libpurple-dev fails, never skips), starts it with commands on a FIFO and
-- reads its records (tab-separated lines) as they come.
--
--   local purple = require "spec.support.purple"
--   purple.build()
--   local p = purple.start(port, "alice@example.test/pidgin", "pw")
--   local rec = p:expect("connected")          -- { "connected", "alice@..." }
--   p:send("send bob@example.test hello")
--   local r = p:finish()                       -- quit; r.code, r.recs, r.text
local proc = require "spec.support.proc"
local pki = require "spec.support.pki"
local slow = require "spec.support.slow"
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"

local q = pki.q

local M = {}

M.SOURCE = proc.ROOT .. "/spec/support/purple_client.c"
M.BINARY = proc.ROOT .. "/build/purple_client"

--- purple.build(): compiles the client (libpurple's headers are not
-- -pedantic clean: an enumerator of 0xFFFF0000 in certificate.h).
function M.build()
  pki.sh("pkg-config --exists purple glib-2.0 || { echo 'libpurple-dev is not installed:"
    .. " run `make deps`'; exit 1; }")
  pki.sh("mkdir -p " .. q(proc.ROOT .. "/build") .. " && ${CC:-cc} -std=c99 -Wall -Wextra -Werror -O1 -o "
    .. q(M.BINARY) .. " " .. q(M.SOURCE) .. " $(pkg-config --cflags --libs purple glib-2.0)")
end

local function split(line)
  local f = {}
  for field in (line .. "\t"):gmatch("([^\t]*)\t") do
    f[#f + 1] = field:gsub("\\(.)", { t = "\t", n = "\n", ["\\"] = "\\" })
  end
  return f
end

local Client = {}
Client.__index = Client

local running = {}   -- clients started and not finished yet

--- purple.start(port, jid, password [, opts]) -> client. opts.cafile (the
-- suite's CA unless told), opts.timeout (s, the program's own limit).
function M.start(port, jid, password, opts)
  opts = opts or {}
  local dir = pki.sh("mktemp -d /tmp/lxmpp-purple-spec.XXXXXX"):gsub("%s+$", "")
  local fifo = dir .. "/in"
  pki.sh("mkfifo " .. q(fifo))
  -- read and write: opening never blocks, and the program sees the end of
  -- its input only when we close it
  local input = assert(io.open(fifo, "r+"))
  local timeout = math.floor(60 * slow.factor)
  -- (TMPDIR: libpurple's profile directory goes in ours, so it goes with it
  -- even when the program is killed)
  local p = proc.start({ "env", "LXMPP_PURPLE_TIMEOUT=" .. timeout, "TMPDIR=" .. dir,
    M.BINARY, jid, password, "127.0.0.1", tostring(port), opts.cafile or pki.get().ca }, { stdin = fifo })
  local c = setmetatable({ p = p, dir = dir, input = input, seen = 0, recs = {}, used = {}, timeout = timeout },
    Client)
  running[c] = true
  return c
end

--- purple.kill_all(): ends the clients a failed spec left running, and
-- removes their files (an after_each).
function M.kill_all()
  for c in pairs(running) do
    if c.input then c.input:close(); c.input = nil end
    c.p:kill()
    c.p:cleanup()
    os.execute(pki.NO_PRELOAD .. "rm -rf " .. q(c.dir))
    running[c] = nil
  end
end

-- reads what the program wrote since the last look
function Client:poll()
  if not self.p.dir then return end
  local out = pki.read_file(self.p.dir .. "/out")
  local lines = {}
  for line in out:gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  for i = self.seen + 1, #lines do self.recs[#self.recs + 1] = split(lines[i]) end
  self.seen = #lines
end

--- client:send(line): one command on the program's standard input.
function Client:send(line)
  self.input:write(line, "\n")
  self.input:flush()
end

--- client:expect(kind [, pred [, timeout]]) -> the first record of that
-- kind that pred accepts and no earlier expect returned, or nil and
-- everything seen so far. Waits, polling, while the loop runs.
function Client:expect(kind, pred, timeout)
  local deadline = core.now() + (timeout or 20) * slow.factor
  while true do
    self:poll()
    for _, r in ipairs(self.recs) do
      if not self.used[r] and r[1] == kind and (not pred or pred(r)) then
        self.used[r] = true
        return r
      end
    end
    if core.now() > deadline or pki.read_file(self.p.dir .. "/rc") ~= "" then
      return nil, self:text()
    end
    lxmpp.sleep(0.05)
  end
end

--- client:find(kind [, pred]) -> the first record of that kind so far (any
-- position), or nil.
function Client:find(kind, pred)
  self:poll()
  for _, r in ipairs(self.recs) do
    if r[1] == kind and (not pred or pred(r)) then return r end
  end
  return nil
end

function Client:text()
  local lines = {}
  for i, r in ipairs(self.recs) do lines[i] = table.concat(r, " | ") end
  local err = self.p.dir and pki.read_file(self.p.dir .. "/err") or ""
  return "records:\n" .. table.concat(lines, "\n") .. "\nstderr:\n" .. err
end

--- client:finish([quit]) -> { code, recs, text }: says quit (unless quit
-- is false), closes the input and waits for the program to end.
function Client:finish(quit)
  if quit ~= false then pcall(self.send, self, "quit") end
  self:poll()
  if self.input then self.input:close(); self.input = nil end
  local r = self.p:wait(20 * slow.factor)
  -- the records from the output the wait just read
  local recs = {}
  for line in (r.out or ""):gmatch("([^\n]*)\n") do recs[#recs + 1] = split(line) end
  self.recs, self.seen = recs, #recs
  os.execute(pki.NO_PRELOAD .. "rm -rf " .. q(self.dir))
  running[self] = nil
  r.recs = recs
  r.text = ("exit %s\n%s\nstderr:\n%s"):format(tostring(r.code), self:text(), r.err)
  return r
end

return M
