-- The embedded server's debug log (log_level "debug", `lxmpp serve
-- --log-level debug`; lua/lxmpp/redact.lua): every stanza in and
-- out is printed, and no secret ever is: SASL payloads, XEP-0077 passwords
-- (registration and password change), room passwords, data form password
-- fields.
local sh = require "spec.support.sh"
local LUA = require "spec.support.lua_bin"
local lxmpp = require "lxmpp"
local st = lxmpp.stanza
local core = require "lxmpp.core"
local serve = require "spec.support.serve"
local redact = require "lxmpp.redact"

local ROOT = debug.getinfo(1, "S").source:match("^@(.*)/spec/") or "."
local BIN = ROOT .. "/bin/lxmpp"
local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local read = require("spec.support.pki").read_file

-- Fails when any of the secrets (or their base64) is in text.
local function assert_no_secret(text, secrets)
  for _, s in ipairs(secrets) do
    assert.is_nil(text:find(s, 1, true), "secret " .. s .. " logged:\n" .. text)
    local b = core.base64_encode(s)
    assert.is_nil(text:find(b:sub(1, #b - 4), 1, true), "base64 of " .. s .. " logged")
  end
  assert.is_nil(text:find(core.base64_encode("\0alice\0alice-pw-1"), 1, true))
end

describe("server debug log", function()
  it("prints stanzas in and out with every secret redacted", function()
    serve.run_logged({ users = { alice = "alice-pw-1", bob = "bob-pw" }, registration = true,
        muc = "conference.example.test", log_level = "debug" }, function(_, port, log)
      for _, mech in ipairs({ "PLAIN", "SCRAM-SHA-256" }) do
        -- RFC 6120 SASL (the client would use SASL2, as the next login does)
        local c = assert(serve.login(port, "alice", "alice-pw-1", mech, { mechanism = mech, sasl2 = false }))
        c:close()
      end
      local c = assert(serve.login(port, "alice", "alice-pw-1"))
      c:send_presence()
      assert(c:request(st.iq({ type = "set", to = "example.test" }):tag("query", { xmlns = "jabber:iq:register" })
        :text_tag("username", "alice"):text_tag("password", "changed-secret-2")))
      -- a room with a password, entered with it
      local room = "tea@conference.example.test"
      c:send(st.presence({ to = room .. "/al" }):tag("x", { xmlns = "http://jabber.org/protocol/muc" }))
      assert(serve.expect(c, "presence", function(p) return p.attr.from == room .. "/al" end, 5))
      assert(c:request(st.iq({ type = "set", to = room })
        :tag("query", { xmlns = "http://jabber.org/protocol/muc#owner" })
        :tag("x", { xmlns = "jabber:x:data", type = "submit" })
        :tag("field", { var = "FORM_TYPE" }):text_tag("value", "http://jabber.org/protocol/muc#roomconfig"):up()
        :tag("field", { var = "muc#roomconfig_passwordprotectedroom" }):text_tag("value", "1"):up()
        :tag("field", { var = "muc#roomconfig_roomsecret" }):text_tag("value", "room-secret-3"):up()))
      local b = assert(serve.login(port, "bob", "bob-pw"))
      b:send_presence()
      b:send(st.presence({ to = room .. "/bo" }):tag("x", { xmlns = "http://jabber.org/protocol/muc" })
        :text_tag("password", "room-secret-3"))
      assert(serve.expect(b, "presence", function(p) return p.attr.from == room .. "/bo" end, 5))
      c:send_message("bob@example.test", "hello in the log", "chat")
      assert(b:request(st.iq({ type = "get" }):tag("ping", { xmlns = "urn:xmpp:ping" })))
      c:close()
      b:close()
      local text = table.concat(log, "\n")
      assert.truthy(serve.logged(log, "^debug c2s [^ ]+: IN <message[^\n]*hello in the log"), text)
      assert.truthy(serve.logged(log, "^debug c2s [^ ]+: OUT <message[^\n]*hello in the log"), text)
      assert.truthy(serve.logged(log, "IN <auth xmlns='urn:ietf:params:xml:ns:xmpp%-sasl'/> %[redacted"), text)
      assert.truthy(serve.logged(log, "IN <response xmlns='urn:ietf:params:xml:ns:xmpp%-sasl'/> %[redacted"), text)
      assert.truthy(serve.logged(log, "IN <authenticate xmlns='urn:xmpp:sasl:2'/> %[redacted"), text)
      assert.truthy(serve.logged(log, "IN <iq[^\n]*jabber:iq:register[^\n]*<password>%[redacted%]</password>"), text)
      assert.truthy(serve.logged(log, "roomsecret'><value>%[redacted%]</value>"), text)
      assert_no_secret(text, { "alice-pw-1", "changed-secret-2", "room-secret-3" })
    end)
  end)

  it("prints what a component sends, its handshake redacted", function()
    serve.run_logged({ users = { alice = "alice-pw-1" }, components = { ["gw.example.test"] = "comp-secret-5" },
        component_listen = "127.0.0.1:0", log_level = "debug" }, function(srv, _, log)
      local cport
      for _, a in ipairs(srv:addresses()) do if a.kind == "component" then cport = a.port end end
      local comp = lxmpp.component({ jid = "gw.example.test", secret = "comp-secret-5", host = "127.0.0.1",
        port = cport })
      assert(comp:connect())
      assert(comp:request(st.iq({ type = "get", to = "example.test", from = "gw.example.test" })
        :tag("ping", { xmlns = "urn:xmpp:ping" })))
      comp:close()
      local text = table.concat(log, "\n")
      assert.truthy(serve.logged(log, "^debug component [^ ]+: IN <handshake xmlns='jabber:component:accept'/> %[redacted%]"),
        text)
      assert.truthy(serve.logged(log, "^debug component [^ ]+: IN <iq[^\n]*urn:xmpp:ping"), text)
      assert.is_nil(text:find("comp-secret-5", 1, true))
    end)
  end)

  it("redacts without changing the stanza, and only what is secret", function()
    local s = st.iq({ type = "set" }):tag("query", { xmlns = "jabber:iq:register" })
      :text_tag("username", "u"):text_tag("password", "p<&>w"):up()
      :tag("x", { xmlns = "jabber:x:data", type = "submit" })
      :tag("field", { var = "password" }):tag("desc"):text("d"):up():text_tag("value", "v1"):up()
      :tag("field", { var = "username" }):text_tag("value", "u"):up()
    local before = tostring(s)
    local text = redact.text(s)
    assert.equal(before, tostring(s))
    assert.matches("<username>u</username><password>%[redacted%]</password>", text)
    assert.matches("<field var='password'><desc>d</desc><value>%[redacted%]</value></field>", text)
    assert.matches("<field var='username'><value>u</value></field>", text)
    assert.is_nil(text:find("v1", 1, true))
    local plain = st.message({ to = "a@b" }, "nothing secret")
    assert.equal(tostring(plain), redact.text(plain))
  end)

  it("`lxmpp serve --log-level debug` prints stanzas, and a bad level is refused", function()
    local log = os.tmpname()
    local pidf = assert(io.popen(LUA .. " " .. q(BIN) .. " serve --domain localhost --listen 127.0.0.1:0 " ..
      "--user alice:cli-secret-4 --log-level debug >" .. q(log) .. " 2>&1 & echo $!"))
    local pid = pidf:read("*l")
    pidf:close()
    lxmpp.run(function()
      local port
      for _ = 1, 200 do
        port = read(log):match("listening: c2s 127%.0%.0%.1:(%d+)")
        if port then break end
        lxmpp.sleep(0.05)
      end
      assert(port, read(log))
      local c = assert(lxmpp.connect({ jid = "alice@localhost/x", password = "cli-secret-4", mechanism = "PLAIN",
        host = "127.0.0.1", port = tonumber(port), insecure = true }))
      c:send_message("alice@localhost", "printed by serve", "chat")
      assert(c:request(st.iq({ type = "get" }):tag("ping", { xmlns = "urn:xmpp:ping" })))
      c:close()
    end)
    os.execute("kill " .. pid)
    local text = read(log)
    os.remove(log)
    assert.matches("IN <message[^\n]*printed by serve", text)
    assert.matches("OUT <iq[^\n]*type='result'", text)
    assert.is_nil(text:find("cli-secret-4", 1, true))
    assert.is_nil(text:find(core.base64_encode("\0alice\0cli-secret-4"), 1, true))
    local out, code = sh.popen_read(LUA .. " " .. q(BIN) .. " serve --log-level loud 2>&1")
    assert.equal(2, code)
    assert.matches("log_level must be debug, info, warn or error", out)
  end)
end)

describe("server log levels", function()
  it("srv:logs says which levels are written, and a stream's log writes only those", function()
    local lines = {}
    local srv = lxmpp.server({ domain = "example.test", log_level = "warn",
      logger = function(level, msg) lines[#lines + 1] = level .. " " .. msg end })
    assert.is_false(srv:logs("debug"))
    assert.is_false(srv:logs("info"))
    assert.is_true(srv:logs("warn"))
    assert.is_true(srv:logs("error"))
    local s = setmetatable({ srv = srv, kind = "c2s", ip = "192.0.2.1" }, require("lxmpp.server.stream").Stream)
    s:log("info", "not written %d", {})     -- (never formatted: a table is no %d)
    s:log("warn", "written %s", "arg")
    assert.same({ "warn c2s 192.0.2.1: written arg" }, lines)
    assert.has_error(function() s:log("warn", "formatted %d", {}) end)
  end)
end)
