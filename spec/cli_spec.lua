-- The command line (bin/lxmpp) and `make demo`'s script, run as a user runs
-- them: --version/--help, clear errors for bad flags, `serve` printing where
-- it listens and which accounts exist, `send` delivering through it, `run`,
-- `parse`, and the scripted conversations of examples/demo.lua and demo_web.lua.
local LUA = require "spec.support.lua_bin"
local sh = require "spec.support.sh"
local lxmpp = require "lxmpp"
local compat = require "lxmpp.compat"

local ROOT = debug.getinfo(1, "S").source:match("^@(.*)/spec/") or "."
local BIN = ROOT .. "/bin/lxmpp"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Runs a command: its output (stdout and stderr) and exit code.
local function run(cmd)
  return sh.popen_read(cmd .. " 2>&1")
end

local function lxmpp_cmd(args) return run(LUA .. " " .. q(BIN) .. " " .. args) end

local read = require("spec.support.pki").read_file

-- Waits (polling, in a task) until the file contains pattern.
local function wait_for(path, pattern, seconds)
  for _ = 1, (seconds or 10) * 20 do
    local s = read(path)
    if s:match(pattern) then return s:match(pattern), s end
    lxmpp.sleep(0.05)
  end
  return nil, read(path)
end

describe("bin/lxmpp", function()
  it("prints its version and help", function()
    local out, code = lxmpp_cmd("--version")
    assert.equal(0, code)
    assert.equal("lxmpp " .. lxmpp.VERSION .. "\n", out)
    out, code = lxmpp_cmd("--help")
    assert.equal(0, code)
    assert.matches("serve %[%-%-domain D%]", out)
    assert.matches("send %-%-jid J %-%-password P", out)
    assert.matches("%[%-%-channel%-binding on|off|TYPE,...%]", out)
    assert.matches("[--mechanism NAME] [--channel-binding auto|false|true|TYPE]", out, 1, true)
  end)

  it("refuses bad commands and flags with exit code 2 and a clear message", function()
    local cases = {
      { "frobnicate", "unknown command 'frobnicate'" },
      { "serve --bogus", "serve: unknown option '%-%-bogus'" },
      { "serve --listen nonsense", "bad listen address \"nonsense\"" },
      -- the message ends where it ends (no count from gsub after it)
      { "serve --http nowhere", "bad http address \"nowhere\" %(expected IP:PORT%)\n$" },
      { "serve --user alice", "serve: %-%-user expects NAME:VALUE" },
      { "serve --cert x.pem", "%-%-cert and %-%-key go together" },
      { "serve --domain", "serve: %-%-domain needs a value" },
      { "serve --channel-binding tls-unique,,tls-exporter", "serve: %-%-channel%-binding expects on, off or TYPE,..." },
      { "serve --channel-binding tls-bogus", "serve: lxmpp.server: channel_binding must be true, false or a list of" },
      { "send bob@localhost hi", "send: %-%-jid and %-%-password are required" },
      { "send --jid a@localhost --password p bob@localhost", "send: expected TO and MESSAGE" },
      { "send --jid a@localhost --password p --port x bob@localhost hi", "send: %-%-port must be a number" },
      { "send --jid a@localhost --password p --channel-binding maybe bob@localhost hi",
        "send: %-%-channel%-binding: channel binding must be auto, false, true, tls%-exporter or "
        .. "tls%-server%-end%-point, not \"maybe\"" },
      { "send --jid a@localhost --password p --channel-binding false --mechanism SCRAM-SHA-1-PLUS bob@localhost hi",
        "send: mechanism SCRAM%-SHA%-1%-PLUS binds to the channel, but channel_binding is false" },
      { "send --jid a@localhost --password p --channel-binding true --mechanism PLAIN bob@localhost hi",
        "send: channel_binding needs a SCRAM mechanism, not PLAIN" },
    }
    for _, c in ipairs(cases) do
      local out, code = lxmpp_cmd(c[1])
      assert.equal(2, code, c[1])
      assert.matches(c[2], out, 1, false, c[1])
    end
  end)

  it("runs scripts with their arguments and parses streams", function()
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write("print(arg[0] ~= nil, ...)\n")
    f:close()
    local out, code = lxmpp_cmd("run " .. q(script) .. " a b")
    assert.equal(0, code)
    assert.equal("true\ta\tb\n", out)
    os.remove(script)
    out, code = run("printf '<message><body>hi</body></message>' | " .. LUA .. " " .. q(BIN) .. " parse")
    assert.equal(0, code)
    assert.matches("<body>hi</body>", out)
  end)

  it("serves, says where and for whom, and `send` delivers through it", function()
    local log = os.tmpname()
    local pidf = assert(io.popen(LUA .. " " .. q(BIN) .. " serve --domain localhost --listen 127.0.0.1:0 " ..
      "--user alice:alice-pw --user bob:bob-pw >" .. q(log) .. " 2>&1 & echo $!"))
    local pid = pidf:read("*l")
    pidf:close()
    lxmpp.run(function()
      local port, text = wait_for(log, "listening: c2s 127%.0%.0%.1:(%d+)")
      assert(port, "serve did not say where it listens:\n" .. text)
      assert.matches("accounts: alice@localhost bob@localhost", text)
      assert.matches("ready", text)
      local bob = assert(lxmpp.connect({ jid = "bob@localhost/b", password = "bob-pw",
        host = "127.0.0.1", port = tonumber(port), insecure = true }))
      bob:send_presence()
      local got = lxmpp.task.waiter()
      bob:on("message", function(m) if m:get_child_text("body") then got:wake(m) end end)
      lxmpp.sleep(0.1)
      local out, code = lxmpp_cmd("send --jid alice@localhost --password alice-pw --host 127.0.0.1 --port " ..
        port .. " --insecure bob@localhost 'hello from the command line'")
      assert.equal(0, code, out)
      local t = lxmpp.core.timer(10, got)
      local m = got:wait()
      t:stop()
      assert.truthy(m, "bob got nothing")
      assert.equal("hello from the command line", m:get_child_text("body"))
      assert.matches("^alice@localhost/", m.attr.from)
      out, code = lxmpp_cmd("send --jid alice@localhost --password wrong --host 127.0.0.1 --port " ..
        port .. " --insecure bob@localhost hi")
      assert.equal(1, code)
      assert.matches("send: cannot log in: .*not%-authorized", out)
      -- a verified connection refuses the self-signed certificate
      out, code = lxmpp_cmd("send --jid alice@localhost --password alice-pw --host 127.0.0.1 --port " ..
        port .. " bob@localhost hi")
      assert.equal(1, code)
      assert.matches("tls%-verify%-failed", out)
      bob:close()
    end)
    os.execute("kill " .. pid)
    os.remove(log)
  end)

  it("serve --channel-binding sets the -PLUS types offered (XEP-0440)", function()
    local core = require "lxmpp.core"
    local raw = require "spec.support.raw"
    -- features over TLS (the self-signed certificate of localhost) of a
    -- server started with flag: its mechanisms and XEP-0440 types
    local function offered(flag)
      local log = os.tmpname()
      local pidf = assert(io.popen(LUA .. " " .. q(BIN) .. " serve --domain localhost --listen 127.0.0.1:0 " ..
        "--channel-binding " .. flag .. " >" .. q(log) .. " 2>&1 & echo $!"))
      local pid = pidf:read("*l")
      pidf:close()
      local mechs, types = {}, {}
      lxmpp.run(function()
        local port, text = wait_for(log, "listening: c2s 127%.0%.0%.1:(%d+)")
        assert(port, text)
        local r = raw.connect(tonumber(port))
        r:send(raw.header("localhost"))
        assert(r:stanza())
        r:send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        assert(r:stanza())
        r.conn:starttls(assert(core.tls_context({ mode = "client", insecure = true })), "localhost")
        assert(r:next().tls)
        r:send(raw.header("localhost"))
        local f = assert(r:stanza())
        for m in f:get_child("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl"):childtags("mechanism") do
          mechs[#mechs + 1] = m:get_text()
        end
        local cb = f:get_child("sasl-channel-binding", "urn:xmpp:sasl-cb:0")
        for c in (cb and cb:childtags("channel-binding") or function() end) do types[#types + 1] = c.attr.type end
        r:close()
      end)
      os.execute("kill " .. pid)
      os.remove(log)
      return table.concat(mechs, " "), table.concat(types, " ")
    end
    assert.same({ "SCRAM-SHA-256-PLUS SCRAM-SHA-1-PLUS SCRAM-SHA-256 SCRAM-SHA-1 PLAIN",
      "tls-exporter tls-server-end-point tls-unique" }, { offered("on") })
    assert.same({ "SCRAM-SHA-256-PLUS SCRAM-SHA-1-PLUS SCRAM-SHA-256 SCRAM-SHA-1 PLAIN",
      "tls-server-end-point tls-unique" }, { offered("tls-unique,tls-server-end-point") })
    assert.same({ "SCRAM-SHA-256 SCRAM-SHA-1 PLAIN", "" }, { offered("off") })
  end)

  it("serve reads a Lua config file, and flags override it", function()
    local conf = os.tmpname()
    local f = assert(io.open(conf, "w"))
    f:write('domain = "conf.example"\nusers = { carol = "pw" }\nlisten = { "127.0.0.1:0" }\n')
    f:close()
    local log = os.tmpname()
    local pidf = assert(io.popen(LUA .. " " .. q(BIN) .. " serve --config " .. q(conf) ..
      " --user dave:pw2 >" .. q(log) .. " 2>&1 & echo $!"))
    local pid = pidf:read("*l")
    pidf:close()
    lxmpp.run(function()
      local accounts, text = wait_for(log, "accounts: ([^\n]*)")
      assert(accounts, text)
      assert.equal("carol@conf.example dave@conf.example", accounts)
      assert.matches("domain: conf.example", text)
    end)
    os.execute("kill " .. pid)
    os.remove(log)
    os.remove(conf)
    local out, code = lxmpp_cmd("serve --config /nonexistent/x.lua")
    assert.equal(1, code)
    assert.matches("serve: cannot open /nonexistent/x.lua", out)
  end)
end)

describe("lxmpp serve --s2s-*", function()
  -- other.test served by `lxmpp serve` (its own process) federates with
  -- example.test, an embedded server here: both directions use the flags
  -- (--s2s-listen where example.test connects, --s2s-host where other.test
  -- connects, --s2s-cafile for SASL EXTERNAL with the suite's CA)
  it("federates with another server both ways", function()
    local pki = require("spec.support.pki").get()
    local slow = require "spec.support.slow"
    local log = os.tmpname()
    lxmpp.run(function()
      local a = lxmpp.server({ domain = "example.test", listen = "127.0.0.1:0", s2s_listen = "127.0.0.1:0",
        tls = { cert = pki.certs.good.cert, key = pki.certs.good.key }, s2s = { cafile = pki.ca },
        users = { alice = "alice-pw" }, log_level = "error" })
      assert(a:start())
      local ports = {}
      for _, l in ipairs(a:addresses()) do ports[l.kind] = l.port end
      local pidf = assert(io.popen(LUA .. " " .. q(BIN) .. " serve --domain other.test --listen 127.0.0.1:0 " ..
        "--cert " .. q(pki.certs.wrongname.cert) .. " --key " .. q(pki.certs.wrongname.key) ..
        " --s2s-listen 127.0.0.1:0 --s2s-cafile " .. q(pki.ca) ..
        " --s2s-host example.test:127.0.0.1:" .. ports.s2s .. " --user bob:bob-pw --log-level error >" ..
        q(log) .. " 2>&1 & echo $!"))
      local pid = pidf:read("*l")
      pidf:close()
      local ok, err = compat.pcall(function()    -- waits inside: yield-safe on 5.1
        local s2s_port, text = wait_for(log, "listening: s2s 127%.0%.0%.1:(%d+)", 10 * slow.factor)
        assert(s2s_port, "serve did not say where it listens for servers:\n" .. text)
        local c2s_port = assert(text:match("listening: c2s 127%.0%.0%.1:(%d+)"))
        assert(wait_for(log, "ready", 10 * slow.factor))
        a:s2s_host("other.test", "127.0.0.1:" .. s2s_port)
        local function inbox(c)
          local box = { waiter = lxmpp.task.waiter("inbox") }
          c:on("message", function(m)
            if m:get_child_text("body") then box.m = m; box.waiter:wake() end
          end)
          return function()
            local t = lxmpp.core.timer(15 * slow.factor, box.waiter)
            if not box.m then box.waiter:wait() end
            t:stop()
            local m = box.m
            box.m, box.waiter = nil, lxmpp.task.waiter("inbox")
            return m
          end
        end
        local bob = assert(lxmpp.connect({ jid = "bob@other.test/b", password = "bob-pw",
          host = "127.0.0.1", port = tonumber(c2s_port), cafile = pki.ca }))
        local bob_next = inbox(bob)
        bob:send_presence()
        local alice = assert(lxmpp.connect({ jid = "alice@example.test/a", password = "alice-pw",
          host = "127.0.0.1", port = ports.c2s, cafile = pki.ca }))
        local alice_next = inbox(alice)
        alice:send_presence()
        alice:send_message("bob@other.test/b", "over s2s")
        local m = bob_next()
        assert(m, "bob got nothing from example.test")
        assert.equal("over s2s", m:get_child_text("body"))
        assert.equal("alice@example.test/a", m.attr.from)
        bob:send_message("alice@example.test/a", "and back")
        m = alice_next()
        assert(m, "alice got nothing from other.test")
        assert.equal("and back", m:get_child_text("body"))
        assert.equal("bob@other.test/b", m.attr.from)
        alice:close()
        bob:close()
      end)
      os.execute("kill " .. pid)
      a:stop()
      if not ok then error(tostring(err) .. "\n" .. read(log), 0) end
    end)
    os.remove(log)
    local out, code = lxmpp_cmd("serve --s2s-host nowhere")
    assert.equal(2, code)
    assert.matches("serve: %-%-s2s%-host expects NAME:VALUE", out)
    out, code = lxmpp_cmd("serve --s2s-host other.test:nowhere")
    assert.equal(2, code)
    assert.matches("bad s2s%.hosts address \"nowhere\"", out)
  end)
end)

describe("make demo (examples/demo.lua)", function()
  it("starts the server, runs the bot, asks three words and tells how to connect", function()
    local out, code = run("LXMPP_DEMO_PORT=0 LXMPP_DEMO_EXIT=1 timeout 60 " .. LUA .. " " .. q(ROOT .. "/examples/demo.lua"))
    assert.equal(0, code, out)
    assert.matches("embedded server for localhost listening on 127.0.0.1 port %d+", out)
    assert.matches("dictbot < xmpp: the Extensible Messaging and Presence Protocol", out)
    assert.matches("dictbot < jid: a Jabber ID", out)
    assert.matches("dictbot < don't know about unicorn", out)
    assert.matches("account  you@localhost   password you%-secret", out)
    assert.matches("demo finished", out)
  end)
end)

describe("make demo-web (examples/demo_web.lua)", function()
  it("serves the web side, talks to the bot over WebSocket and prints the page to open", function()
    local out, code = run("LXMPP_DEMO_HTTP_PORT=0 LXMPP_DEMO_EXIT=1 timeout 60 " .. LUA .. " " ..
      q(ROOT .. "/examples/demo_web.lua"))
    assert.equal(0, code, out)
    local base = out:match("web side on (http://127%.0%.0%.1:%d+)")
    assert.truthy(base, out)
    assert.matches("you@localhost is online over WebSocket", out)
    assert.matches("dictbot < xmpp: the Extensible Messaging and Presence Protocol", out)
    assert.truthy(out:find("  " .. base .. "/converse.html?websocket_url=ws%3A%2F%2F127.0.0.1%3A", 1, true), out)
    assert.matches("demo finished", out)
  end)
end)
