-- Client plugins as objects (docs/api.md "Plugins"): one object per plugin
-- and client, reached as c.NAME or c:plugin(NAME), loaded on first use or
-- by connect{plugins = ...}, the default set with the client; state kept in
-- the object, never in the client's fields; third-party plugins through
-- lxmpp.register_plugin.
local lxmpp = require "lxmpp"
local client = require "lxmpp.client"
local st = lxmpp.stanza
local serve = require "spec.support.serve"

local NS_EVENT = "http://jabber.org/protocol/pubsub#event"
local NS_HELLO = "urn:example:hello"

local function new_client()
  return client.new({ jid = "alice@example.test/r", password = "pw" })
end

local function hooked(c, name, ns)
  local bus = c.child_hooks[name]
  return bus ~= nil and bus:has(ns)
end

-- Two third-party plugins with a field of the same name, and one that
-- answers an iq: registered once for the whole file (the registry is global).
local inits = 0
lxmpp.register_plugin("spec_alpha", {
  init = function(p) p.state = "alpha" end,
  get = function(p) return p.state end,
})
lxmpp.register_plugin("spec_beta", {
  init = function(p) p.state = "beta" end,
})
lxmpp.register_plugin("spec_hello", {
  forwards = { spec_hello_ask = "ask" },
  init = function(p, c)
    inits = inits + 1
    p.greeting = "hello"
    c:handle_iq(NS_HELLO, function(iq)
      return st.reply(iq):tag("hello", { xmlns = NS_HELLO }):text(p.greeting .. " " .. iq.attr.from)
    end)
  end,
  ask = function(p, to)
    local r, msg, cond = p.client:request(st.iq({ type = "get", to = to }):tag("hello", { xmlns = NS_HELLO }))
    if not r then return nil, msg, cond end
    return r:get_child_text("hello", NS_HELLO)
  end,
})

describe("plugin objects", function()
  it("are one object per client, c.NAME == c:plugin(NAME)", function()
    local a, b = new_client(), new_client()
    for _, name in ipairs({ "roster", "pubsub", "carbons", "time", "muc", "vcard", "disco", "caps", "presence" }) do
      assert.is_table(a[name], name)
      assert.equal(a[name], a:plugin(name), name)
      assert.not_equal(a[name], b[name], name)
      assert.equal(a, a:plugin(name).client, name)
    end
  end)

  it("load the default set with the client, the others when first used", function()
    local c = new_client()
    for _, name in ipairs({ "roster", "time", "carbons" }) do assert.is_true(c:plugin_loaded(name), name) end
    -- a default plugin answers from the start: carbons' hook is there
    assert.is_true(hooked(c, "message", "urn:xmpp:carbons:2"))
    -- pubsub is not in the default set: no handler until it is used
    assert.is_false(c:plugin_loaded("pubsub"))
    assert.is_false(hooked(c, "message", NS_EVENT))
    local ps = c.pubsub                  -- the object, still to be loaded
    assert.is_false(c:plugin_loaded("pubsub"))
    ps.timeout = 5                       -- a first use
    assert.is_true(c:plugin_loaded("pubsub"))
    assert.is_true(hooked(c, "message", NS_EVENT))
    assert.equal(5, c.pubsub.timeout)
    assert.equal(ps, c.pubsub)
    -- c:plugin(NAME) loads too, and so does subscribing to a plugin's event
    local d = new_client()
    d:plugin("pubsub")
    assert.is_true(hooked(d, "message", NS_EVENT))
    local e = new_client()
    e:on("pubsub-item", function() end)
    assert.is_true(hooked(e, "message", NS_EVENT))
  end)

  it("are preloaded when listed in connect{plugins = ...}", function()
    local c = client.new({ jid = "alice@example.test/r", password = "pw", plugins = { "pubsub", "spec_alpha" } })
    assert.is_true(c:plugin_loaded("pubsub"))
    assert.is_true(hooked(c, "message", NS_EVENT))
    assert.equal("alpha", rawget(c.spec_alpha, "state"))
  end)

  it("keep their state apart: a field of the same name in two plugins", function()
    local c = new_client()
    assert.equal("alpha", c.spec_alpha:get())
    assert.equal("beta", c.spec_beta.state)
    c.spec_beta.state = "changed"
    assert.equal("alpha", c.spec_alpha.state)
    assert.is_nil(rawget(c, "state"))
    -- the built-in ones too: the roster lives in c.roster, not in the client
    c.roster.items = { ["bob@example.test"] = { jid = "bob@example.test", subscription = "both" } }
    assert.is_function(c.roster.get)       -- the roster's methods are still there
    assert.is_nil(rawget(c, "roster_ver"))
  end)

  it("refuse unknown names clearly", function()
    local c = new_client()
    assert.has_error(function() c:plugin("nope") end,
      "plugin: no plugin named 'nope' (lxmpp.register_plugin adds one)")
    local ok, err = pcall(client.new, { jid = "a@example.test", password = "pw", plugins = { "nope" } })
    assert.is_false(ok)
    assert.matches("no plugin named 'nope'", err)
    assert.has_error(function() lxmpp.register_plugin("send", {}) end, "register_plugin: 'send' is a client field or method")
    assert.has_error(function() lxmpp.register_plugin("muc", {}) end, "register_plugin: a plugin named 'muc' exists")
    assert.has_error(function() lxmpp.register_plugin("bus", {}) end, "register_plugin: 'bus' is a client field or method")
    assert.has_error(function() lxmpp.register_plugin("x y", {}) end, "register_plugin: the name must be a Lua identifier")
  end)

  it("lets a third-party plugin answer and ask over the wire", function()
    serve.run({ users = { alice = "alice-pw", bob = "bob-pw" } }, function(_, port)
      local before = inits
      local alice = assert(serve.login(port, "alice", "alice-pw", "r", { plugins = { "spec_hello" } }))
      local bob = assert(serve.login(port, "bob", "bob-pw"))
      assert.equal(before + 1, inits)       -- alice loaded it at connect, bob not yet
      -- bob's forward loads his; alice's object answers
      assert.equal("hello bob@example.test/r", bob:spec_hello_ask(alice.jid))
      assert.equal(before + 2, inits)
      alice.spec_hello.greeting = "hi"
      assert.equal("hi bob@example.test/r", bob.spec_hello:ask(alice.jid))
      alice:close()
      bob:close()
    end)
  end)
end)
