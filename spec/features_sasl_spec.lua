-- The client's SASL plan (lua/lxmpp/features/sasl.lua): which mechanism and
-- channel binding it tries, with and without the server's XEP-0440 list,
-- under the channel_binding and mechanism options, and when the one retry
-- without -PLUS (gs2 flag y, RFC 5802 §6) is allowed. The exchanges
-- themselves run against real servers in spec/interop/ejabberd_spec.lua
-- and spec/interop/client_prosody_spec.lua.
local sasl = require "lxmpp.features.sasl"
local lxmpp = require "lxmpp"

local BOTH = { "tls-exporter", "tls-server-end-point" }      -- TLS 1.3 with a server certificate
local EJABBERD = { "PLAIN", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-1", "X-OAUTH2" }   -- 23.01, Debian's defaults
local FULL = { "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN" }

local function caps(extra)
  local c = { password = true, tls = true, cb_types = BOTH }
  for k, v in pairs(extra or {}) do c[k] = v end
  return c
end

-- the gs2 flag the plan's first attempt sends (sasl_client's rule)
local function flag(p)
  if p.mechanism:match("%-PLUS$") then return "p=" .. p.cb_type end
  return (p.cb_type and not p.offers_plus) and "y" or "n"
end

describe("SASL plan", function()
  describe("the server lists no channel binding types (no XEP-0440)", function()
    it("binds -PLUS to our best type, with one retry planned: the best plain SCRAM, flag y", function()
      local p = assert(sasl.plan(EJABBERD, nil, caps()))
      assert.equal("SCRAM-SHA-1-PLUS", p.mechanism)
      assert.equal("tls-exporter", p.cb_type)
      assert.same({ mechanism = "SCRAM-SHA-1", cb_type = "tls-exporter", offers_plus = false }, p.fallback)
      assert.equal("y", flag(p.fallback))
    end)

    it("on TLS 1.2 (no tls-exporter, RFC 9266) binds to tls-server-end-point", function()
      local p = assert(sasl.plan(FULL, nil, caps({ cb_types = { "tls-server-end-point" } })))
      assert.equal("SCRAM-SHA-256-PLUS", p.mechanism)
      assert.equal("tls-server-end-point", p.cb_type)
      assert.equal("SCRAM-SHA-256", p.fallback.mechanism)
    end)

    it("plans no retry to PLAIN: only SCRAM carries the flag that detects a downgrade", function()
      local p = assert(sasl.plan({ "SCRAM-SHA-1-PLUS", "PLAIN" }, nil, caps()))
      assert.equal("SCRAM-SHA-1-PLUS", p.mechanism)
      assert.is_nil(p.fallback)
    end)

    it("without -PLUS offered: plain SCRAM with flag y, nothing to retry", function()
      local p = assert(sasl.plan({ "SCRAM-SHA-1", "PLAIN" }, nil, caps()))   -- Prosody 0.12 on TLS 1.3
      assert.equal("SCRAM-SHA-1", p.mechanism)
      assert.equal("y", flag(p))
      assert.is_nil(p.fallback)
    end)
  end)

  describe("the server lists its types (XEP-0440)", function()
    it("binds to the best type both sides have, and never plans a retry", function()
      local p = assert(sasl.plan(FULL, { "tls-server-end-point", "tls-exporter" }, caps()))
      assert.equal("SCRAM-SHA-256-PLUS", p.mechanism)
      assert.equal("tls-exporter", p.cb_type)
      assert.is_nil(p.fallback)
      p = assert(sasl.plan(FULL, { "tls-unique", "tls-server-end-point" }, caps()))
      assert.equal("tls-server-end-point", p.cb_type)
      assert.is_nil(p.fallback)
    end)

    it("no common type: plain SCRAM with flag n (the server can bind, we cannot with it)", function()
      local p = assert(sasl.plan(EJABBERD, { "tls-unique" }, caps()))
      assert.equal("SCRAM-SHA-1", p.mechanism)
      assert.equal("n", flag(p))
      assert.is_nil(p.fallback)
    end)
  end)

  describe("channel_binding option", function()
    it("false: never binds; flag n whether or not -PLUS is offered", function()
      for _, offered in ipairs({ EJABBERD, { "SCRAM-SHA-1" } }) do
        local p = assert(sasl.plan(offered, nil, caps({ channel_binding = false })))
        assert.equal("SCRAM-SHA-1", p.mechanism)
        assert.equal("n", flag(p))
        assert.is_nil(p.fallback)
      end
    end)

    it("true: binds with our best type and plans no retry", function()
      local p = assert(sasl.plan(EJABBERD, nil, caps({ channel_binding = true })))
      assert.equal("SCRAM-SHA-1-PLUS", p.mechanism)
      assert.equal("tls-exporter", p.cb_type)
      assert.is_nil(p.fallback)
    end)

    it("true: fails before sending anything when binding is impossible", function()
      local cases = {
        { { "SCRAM-SHA-1", "PLAIN" }, nil, caps(), "offers no SCRAM %-PLUS" },
        { EJABBERD, { "tls-unique" }, caps(), "accepts none of our types %(XEP%-0440: tls%-unique%)" },
        { EJABBERD, nil, caps({ tls = false, cb_types = {} }), "not encrypted" },
        { EJABBERD, nil, caps({ cb_types = {} }), "gives no binding data" },
      }
      for _, c in ipairs(cases) do
        c[3].channel_binding = true
        local p, msg, cond = sasl.plan(c[1], c[2], c[3])
        assert.is_nil(p)
        assert.equal("invalid-mechanism", cond)
        assert.matches(c[4], msg)
      end
    end)

    it("a type name: binds with that type only, and no retry", function()
      local p = assert(sasl.plan(EJABBERD, nil, caps({ channel_binding = "tls-server-end-point" })))
      assert.equal("SCRAM-SHA-1-PLUS", p.mechanism)
      assert.equal("tls-server-end-point", p.cb_type)
      assert.is_nil(p.fallback)
      local none, msg = sasl.plan(EJABBERD, { "tls-exporter" }, caps({ channel_binding = "tls-server-end-point" }))
      assert.is_nil(none)
      assert.matches("accepts none of our types", msg)
      none, msg = sasl.plan(EJABBERD, nil, caps({ channel_binding = "tls-exporter",
        cb_types = { "tls-server-end-point" } }))
      assert.is_nil(none)
      assert.matches("tls%-exporter needs TLS 1%.3", msg)
    end)
  end)

  describe("mechanism option", function()
    it("the asked mechanism only, with no retry", function()
      local p = assert(sasl.plan(EJABBERD, nil, caps({ mechanism = "SCRAM-SHA-1-PLUS" })))
      assert.equal("SCRAM-SHA-1-PLUS", p.mechanism)
      assert.is_nil(p.fallback)
      p = assert(sasl.plan(EJABBERD, nil, caps({ mechanism = "SCRAM-SHA-1" })))
      assert.equal("SCRAM-SHA-1", p.mechanism)
      assert.equal("n", flag(p))           -- chose not to bind though -PLUS is offered
      local none, msg, cond = sasl.plan(EJABBERD, nil, caps({ mechanism = "SCRAM-SHA-256" }))
      assert.is_nil(none)
      assert.equal("invalid-mechanism", cond)
      assert.matches("does not offer the SCRAM%-SHA%-256 mechanism", msg)
    end)
  end)

  describe("which refusals of a -PLUS attempt allow the retry", function()
    it("one that names the binding, or one before the password's proof was sent", function()
      assert.is_true(sasl.binding_refused({ text = "Invalid channel binding", condition = "not-authorized",
        proof_sent = false }))
      assert.is_true(sasl.binding_refused({ text = "Channel-binding mismatch", condition = "not-authorized",
        proof_sent = true }))
      assert.is_true(sasl.binding_refused({ condition = "not-authorized", proof_sent = false }))
      assert.is_true(sasl.binding_refused({ condition = "malformed-request", proof_sent = false }))
    end)

    it("never a refused proof, a disabled account, or our own failure", function()
      assert.is_false(sasl.binding_refused({ condition = "not-authorized", proof_sent = true }))
      assert.is_false(sasl.binding_refused({ text = "Invalid username or password", condition = "not-authorized",
        proof_sent = true }))
      assert.is_false(sasl.binding_refused({ condition = "account-disabled", proof_sent = false }))
      assert.is_false(sasl.binding_refused({ condition = "temporary-auth-failure", proof_sent = false }))
      assert.is_false(sasl.binding_refused(nil))
    end)
  end)

  -- lxmpp.server binds with both our types: the options end to end,
  -- where binding succeeds (ejabberd 23.01 and Prosody 0.12 cannot bind)
  describe("against lxmpp.server, which binds", function()
    local serve = require "spec.support.serve"
    local USERS = { alice = "alice-pw" }

    it("binds by default (tls-exporter on TLS 1.3) and with the type asked for", function()
      serve.run({ users = USERS }, function(_, port)
        local c = assert(serve.login(port, "alice", "alice-pw"))
        assert.equal("SCRAM-SHA-256-PLUS", c.sasl_mechanism)
        assert.equal("tls-exporter", c.channel_binding)
        assert.is_nil(c.channel_binding_refused)
        c:close()
        c = assert(serve.login(port, "alice", "alice-pw", "r", { channel_binding = "tls-server-end-point" }))
        assert.equal("SCRAM-SHA-256-PLUS", c.sasl_mechanism)
        assert.equal("tls-server-end-point", c.channel_binding)
        c:close()
        c = assert(serve.login(port, "alice", "alice-pw", "r", { channel_binding = false }))
        assert.equal("SCRAM-SHA-256", c.sasl_mechanism)
        assert.is_false(c.channel_binding)
        c:close()
      end)
    end)

    it("channel_binding = true fails before authenticating when no -PLUS is offered", function()
      serve.run({ users = USERS, channel_binding = false }, function(_, port)
        local c, msg, cond = serve.login(port, "alice", "alice-pw", "r", { channel_binding = true })
        assert.is_nil(c)
        assert.equal("invalid-mechanism", cond)
        assert.matches("offers no SCRAM %-PLUS", msg)
        c = assert(serve.login(port, "alice", "alice-pw"))      -- the default: plain SCRAM (flag y)
        assert.equal("SCRAM-SHA-256", c.sasl_mechanism)
        assert.is_false(c.channel_binding)
        c:close()
      end)
    end)
  end)

  describe("lxmpp.connect checks the options", function()
    local base = { jid = "a@example.test", password = "x" }
    local function new(extra)
      local o = {}
      for k, v in pairs(base) do o[k] = v end
      for k, v in pairs(extra) do o[k] = v end
      return require("lxmpp.client").new(o)
    end

    it("accepts nil, true, false and the two type names", function()
      for _, v in ipairs({ true, false, "tls-exporter", "tls-server-end-point" }) do
        assert.equal(v, new({ channel_binding = v }).opts.channel_binding)
      end
      assert.is_nil(new({}).opts.channel_binding)
    end)

    it("refuses other values and contradictions with mechanism", function()
      assert.has_error(function() new({ channel_binding = "tls-unique" }) end,
        "lxmpp.connect: channel_binding must be nil, true, false, \"tls-exporter\" or \"tls-server-end-point\"")
      assert.has_error(function() new({ channel_binding = 1 }) end)
      assert.has_error(function() new({ channel_binding = false, mechanism = "SCRAM-SHA-1-PLUS" }) end,
        "lxmpp.connect: mechanism SCRAM-SHA-1-PLUS binds to the channel, but channel_binding is false")
      assert.has_error(function() new({ channel_binding = true, mechanism = "SCRAM-SHA-256" }) end,
        "lxmpp.connect: channel_binding asks for binding, but mechanism SCRAM-SHA-256 does not bind")
      assert.has_error(function() new({ channel_binding = "tls-exporter", mechanism = "PLAIN" }) end,
        "lxmpp.connect: channel_binding needs a SCRAM mechanism, not PLAIN")
      -- misuse is raised at the caller, before anything connects
      assert.has_error(function() lxmpp.run(function()
        lxmpp.connect({ jid = "a@example.test", password = "x", channel_binding = "yes" })
      end) end)
    end)
  end)
end)
