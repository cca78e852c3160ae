-- The command-line senders people already run, with their defaults:
-- Debian's go-sendxmpp (go-xmpp inside) and sendxmpp (Perl, Net::XMPP).
-- Each runs with a HOME of its own in a temporary directory (no user
-- configuration is read) and is told to trust the server the way a user of
-- a self-signed demo server would: go-sendxmpp has no CA option, so it
-- skips verification (-n); sendxmpp is given the CA file (-a). A missing
-- program is an error (run `make deps`), never a skip.
--
--   local r = senders.go_sendxmpp(port, "alice@example.test", "pw", "bob@example.test", "hi")
--   r.code, r.out, r.err, r.text (all of it, for an assertion message)
local pki = require "spec.support.pki"
local proc = require "spec.support.proc"

local q = pki.q

local M = {}

local function need(program, package)
  if not os.execute("command -v " .. program .. " >/dev/null 2>&1") then
    error(program .. " is not installed: run `make deps` (Debian package " .. package .. ")", 3)
  end
end

local function write(path, text, mode)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  if mode then pki.sh("chmod " .. mode .. " " .. q(path)) end
end

-- Runs argv(dir) with HOME=dir (a fresh temporary directory, removed
-- after): proc's result, with a text to show.
local function run(argv_of)
  local dir = (pki.sh("mktemp -d /tmp/lxmpp-sendxmpp.XXXXXX"):gsub("%s+$", ""))
  local argv = argv_of(dir)
  local full = { "env", "HOME=" .. dir }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  local r = proc.start(full):wait(30)
  pki.sh("rm -rf " .. q(dir))
  r.text = ("%s\nexit %s\nstdout:\n%s\nstderr:\n%s"):format(table.concat(argv, " "), tostring(r.code), r.out, r.err)
  return r
end

--- go-sendxmpp logs in as jid on 127.0.0.1:port and sends body to `to`.
function M.go_sendxmpp(port, jid, password, to, body)
  need("go-sendxmpp", "go-sendxmpp")
  return run(function(dir)
    write(dir .. "/message.txt", body)
    return { "go-sendxmpp", "-u", jid, "-p", password, "-j", "127.0.0.1:" .. port, "-n",
      "-m", dir .. "/message.txt", to }
  end)
end

--- sendxmpp likewise, trusting the suite's test CA; its configuration file
-- (mode 0600, as sendxmpp demands) holds the account and the server.
function M.sendxmpp(port, jid, password, to, body)
  need("sendxmpp", "sendxmpp")
  local user, domain = jid:match("^([^@]+)@([^/]+)")
  return run(function(dir)
    write(dir .. "/message.txt", body)
    write(dir .. "/sendxmpprc", "username: " .. user .. "\njserver: 127.0.0.1\nport: " .. port ..
      "\npassword: " .. password .. "\ncomponent: " .. domain .. "\n", "600")
    return { "sendxmpp", "-f", dir .. "/sendxmpprc", "-t", "-a", pki.get().ca,
      "-m", dir .. "/message.txt", to }
  end)
end

return M
