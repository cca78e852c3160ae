-- The embedded server with the command-line senders people already run:
-- Debian's go-sendxmpp (go-xmpp inside) and sendxmpp (Perl, Net::XMPP).
-- Each runs with its defaults (STARTTLS, the mechanism it picks), given its
-- account on the command line and a HOME of its own in a temporary
-- directory (no user configuration is read), and is told to trust the test
-- CA the way a user of a self-signed demo server would: go-sendxmpp has no
-- CA option, so it skips verification (-n); sendxmpp is given the CA file
-- (-a). The message must reach a recipient connected with lxmpp.
--
-- go-xmpp writes "</auth>\n" and then the restarted stream's
-- "<?xml version='1.0'?>": the server must take the whitespace before the
-- new header (csrc/stream.c skip_space). A missing program fails, never
-- skips.
local pki = require "spec.support.pki"
local proc = require "spec.support.proc"
local serve = require "spec.support.serve"
local assert_clean = require "spec.support.clean"

local USERS = { alice = "alice-pw", bob = "bob-pw" }
local q = pki.q

local function need(program, package)
  if not os.execute("command -v " .. program .. " >/dev/null 2>&1") then
    error(program .. " is not installed: run `make deps` (Debian package " .. package .. ")")
  end
end

-- A temporary directory (HOME for the program, and its message file).
local function tempdir()
  return (pki.sh("mktemp -d /tmp/lxmpp-sendxmpp.XXXXXX"):gsub("%s+$", ""))
end

local function write(path, text, mode)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  if mode then pki.sh("chmod " .. mode .. " " .. q(path)) end
end

-- Runs argv with HOME=dir; the result of proc's wait, with a text to show.
local function run(dir, argv)
  local full = { "env", "HOME=" .. dir }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  local r = proc.start(full):wait(30)
  r.text = ("%s\nexit %s\nstdout:\n%s\nstderr:\n%s"):format(table.concat(argv, " "), tostring(r.code), r.out, r.err)
  return r
end

-- bob is online (available) with lxmpp; send(port, dir, body) runs the program; the
-- message must arrive from alice with that body.
local function delivers(send)
  serve.run_logged({ users = USERS }, function(_, port, log)
    local bob = assert(serve.login(port, "bob", USERS.bob, "desk"))
    assert(bob:send_presence())           -- available: a message to the bare JID comes here
    local dir = tempdir()
    local body = "hello from the command line " .. math.random(1e6)
    local got = serve.collect(bob, "message")
    local r = send(port, dir, body)
    pki.sh("rm -rf " .. q(dir))
    serve.until_true(function() return #got > 0 end, 5)
    local m = got[1]
    assert.truthy(m, "the message did not arrive\n" .. r.text .. "\nserver log:\n" .. table.concat(log, "\n"))
    assert.equal(body, m:get_child_text("body"))
    assert.equal(0, r.code, r.text)
    assert.equal("alice@example.test", (m.attr.from:match("^[^/]+")))
    assert.is_nil(serve.logged(log, "not%-well%-formed"), table.concat(log, "\n"))
    bob:close()
  end)
end

describe("embedded server with command-line senders", function()
  after_each(assert_clean)

  it("takes a message from go-sendxmpp (go-xmpp: whitespace before the restarted stream)", function()
    need("go-sendxmpp", "go-sendxmpp")
    delivers(function(port, dir, body)
      write(dir .. "/message.txt", body)
      return run(dir, { "go-sendxmpp", "-u", "alice@example.test", "-p", USERS.alice,
        "-j", "127.0.0.1:" .. port, "-n", "-m", dir .. "/message.txt", "bob@example.test" })
    end)
  end)

  it("takes a message from sendxmpp (Net::XMPP)", function()
    need("sendxmpp", "sendxmpp")
    delivers(function(port, dir, body)
      write(dir .. "/message.txt", body)
      -- its configuration file (mode 0600, as sendxmpp demands): the server
      -- and port; the account on the command line
      write(dir .. "/sendxmpprc", "username: alice\njserver: 127.0.0.1\nport: " .. port ..
        "\npassword: " .. USERS.alice .. "\ncomponent: example.test\n", "600")
      return run(dir, { "sendxmpp", "-f", dir .. "/sendxmpprc", "-t", "-a", pki.get().ca,
        "-m", dir .. "/message.txt", "bob@example.test" })
    end)
  end)
end)
