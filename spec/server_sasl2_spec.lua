-- The embedded server's SASL2 (XEP-0388), from a raw client: the feature
-- beside classic <mechanisms/>, SCRAM and PLAIN exchanges in the new
-- profile with no stream restart, <user-agent/> checks, failures with
-- their SASL condition, <abort/>, the shared attempt limit and throttle,
-- and hostile clients (authenticate twice, after success, bad base64,
-- unknown mechanisms, responses with no exchange, task abuse).
local core = require "lxmpp.core"
local serve = require "spec.support.serve"
local raw = require "spec.support.raw"
local M = require "spec.support.sasl2"

local NS2 = M.NS
local NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
local USERS = M.USERS
local ua_xml = M.ua_xml

local function cond_of(s)
  assert.equal("failure", s.name)
  return (M.failure_of(s))
end

describe("embedded server: SASL2 (XEP-0388)", function()
  it("offers <authentication/> over TLS only, with the classic mechanisms, and keeps <mechanisms/>", function()
    serve.run({ users = USERS, insecure_plaintext = true }, function(_, port)
      local r = raw.connect(port)
      r:send(raw.header())
      local f = assert(r:stanza())
      assert.truthy(f:get_child("mechanisms", NS_SASL))     -- insecure_plaintext: classic SASL only
      assert.is_nil(f:get_child("authentication", NS2))
      r:close()
      local f2
      r, f2 = M.open(port)
      local classic = {}
      for m in f2:get_child("mechanisms", NS_SASL):childtags("mechanism") do classic[#classic + 1] = m:get_text() end
      assert.equal(table.concat(classic, " "), M.mechanisms(f2))
      assert.equal("SCRAM-SHA-256-PLUS SCRAM-SHA-1-PLUS SCRAM-SHA-256 SCRAM-SHA-1 PLAIN", M.mechanisms(f2))
      r:close()
    end)
  end)

  it("offers nothing of it with sasl2 = false", function()
    serve.run({ users = USERS, sasl2 = false }, function(_, port)
      local r, f = M.open(port)
      assert.is_nil(f:get_child("authentication", NS2))
      r:send("<authenticate xmlns='" .. NS2 .. "' mechanism='PLAIN'/>")
      assert.equal("policy-violation", (r:stream_error()))
    end)
  end)

  for _, mech in ipairs({ "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN" }) do
    it("authenticates with " .. mech .. ": a bare authorization identifier and features, no restart", function()
      serve.run({ users = USERS }, function(_, port)
        local r = M.open(port)
        local s = M.auth2(r, { mechanism = mech })
        assert.equal("success", s.name)
        assert.equal(NS2, s.attr.xmlns)
        assert.equal("alice@example.test", s:get_child_text("authorization-identifier"))
        if mech == "PLAIN" then assert.is_nil(s:get_child("additional-data")) end
        -- features follow at once, on the same stream
        local f = assert(r:stanza())
        assert.equal("features", f.name)
        assert.truthy(f:get_child("bind", "urn:ietf:params:xml:ns:xmpp-bind"))
        assert.is_nil(f:get_child("authentication", NS2))
        r:send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>x</resource></bind></iq>")
        local b = assert(r:stanza())
        assert.equal("result", b.attr.type)
        assert.equal("alice@example.test/x", b:get_child("bind", "urn:ietf:params:xml:ns:xmpp-bind"):get_child_text("jid"))
        r:close()
      end)
    end)
  end

  it("runs a SCRAM exchange without an initial response (an empty challenge first)", function()
    serve.run({ users = USERS }, function(_, port)
      local r = M.open(port)
      local c = assert(core.sasl_client({ mechanism = "SCRAM-SHA-1", username = "bob", password = "bob-pw", tls = true,
        server_offers_plus = true }))
      r:send("<authenticate xmlns='" .. NS2 .. "' mechanism='SCRAM-SHA-1'>" .. ua_xml() .. "</authenticate>")
      local ch = assert(r:stanza())
      assert.equal("challenge", ch.name)
      assert.equal("", ch:get_text() or "")
      r:send("<response xmlns='" .. NS2 .. "'>" .. core.base64_encode(assert(c:step())) .. "</response>")
      ch = assert(r:stanza())
      r:send("<response xmlns='" .. NS2 .. "'>" ..
        core.base64_encode(assert(c:step(core.base64_decode(ch:get_text())))) .. "</response>")
      local s = assert(r:stanza())
      assert.equal("success", s.name)
      assert.truthy(c:finish(core.base64_decode(s:get_child_text("additional-data"))))
      assert.equal("bob@example.test", s:get_child_text("authorization-identifier"))
      r:close()
    end)
  end)

  it("fails a wrong password with not-authorized, counting it with classic SASL's failures", function()
    serve.run({ users = USERS }, function(_, port)
      local r = M.open(port)
      assert.equal("not-authorized", cond_of(M.auth2(r, { password = "wrong" })))
      -- classic failures and SASL2 ones count together: limits.sasl_attempts (5) reached
      for _ = 1, 2 do
        r:send("<auth xmlns='" .. NS_SASL .. "' mechanism='PLAIN'>" .. core.base64_encode("\0alice\0nope") .. "</auth>")
        assert.equal("failure", assert(r:stanza()).name)
        assert.equal("not-authorized", cond_of(M.auth2(r, { mechanism = "PLAIN", password = "wrong" })))
      end
      assert.equal("policy-violation", (r:stream_error()))
    end)
  end)

  it("refuses an unknown mechanism, bad base64 and bad user-agents with failures, then still authenticates", function()
    serve.run({ users = USERS, limits = { sasl_attempts = 10 } }, function(_, port)
      local r = M.open(port)
      r:send("<authenticate xmlns='" .. NS2 .. "' mechanism='DIGEST-MD5'><initial-response>AA==</initial-response>" ..
        "</authenticate>")
      assert.equal("invalid-mechanism", cond_of(assert(r:stanza())))
      r:send("<authenticate xmlns='" .. NS2 .. "'/>")
      assert.equal("invalid-mechanism", cond_of(assert(r:stanza())))
      r:send("<authenticate xmlns='" .. NS2 .. "' mechanism='PLAIN'><initial-response>%%not base64%%" ..
        "</initial-response></authenticate>")
      assert.equal("incorrect-encoding", cond_of(assert(r:stanza())))
      -- a huge initial response that is not base64 either
      r:send("<authenticate xmlns='" .. NS2 .. "' mechanism='PLAIN'><initial-response>" .. ("!"):rep(100000) ..
        "</initial-response></authenticate>")
      assert.equal("incorrect-encoding", cond_of(assert(r:stanza())))
      for _, bad in ipairs({ "not a uuid", ("a"):rep(65), "<bad>" }) do
        local s = M.auth2(r, { ua = core.xml_escape(bad) })
        local cond, text = M.failure_of(s)
        assert.equal("malformed-request", cond)
        assert.matches("UUID", text)
      end
      local s = M.auth2(r, { ua = false, inline = "<user-agent xmlns='" .. NS2 .. "'><software>" .. ("x"):rep(257) ..
        "</software></user-agent>" })
      assert.equal("malformed-request", cond_of(s))
      s = M.auth2(r, { inline = "<user-agent xmlns='" .. NS2 .. "'/>" })   -- a second one
      assert.equal("malformed-request", cond_of(s))
      assert.equal("success", M.auth2(r).name)
      r:close()
    end)
  end)

  it("aborts an exchange with <abort/>: failure aborted, and a new exchange may start", function()
    serve.run({ users = USERS }, function(_, port)
      local r = M.open(port)
      r:send("<authenticate xmlns='" .. NS2 .. "' mechanism='SCRAM-SHA-256'/>")
      assert.equal("challenge", assert(r:stanza()).name)
      r:send("<abort xmlns='" .. NS2 .. "'/>")
      assert.equal("aborted", cond_of(assert(r:stanza())))
      assert.equal("success", M.auth2(r).name)
      r:close()
    end)
  end)

  it("answers <next/> and other elements of the namespace with a failure: no task was offered", function()
    serve.run({ users = USERS, limits = { sasl_attempts = 10 } }, function(_, port)
      local r = M.open(port)
      r:send("<next xmlns='" .. NS2 .. "' task='HOTP-EXAMPLE'/>")
      assert.equal("malformed-request", cond_of(assert(r:stanza())))
      r:send("<authenticate xmlns='" .. NS2 .. "' mechanism='SCRAM-SHA-256'/>")
      assert.equal("challenge", assert(r:stanza()).name)
      r:send("<task-data xmlns='" .. NS2 .. "'><x/></task-data>")   -- in the middle of an exchange
      assert.equal("malformed-request", cond_of(assert(r:stanza())))
      r:send("<response xmlns='" .. NS2 .. "'>AA==</response>")      -- that exchange is over
      assert.equal("policy-violation", (r:stream_error()))
    end)
  end)

  it("ends the stream on a response with no exchange, a classic response to a SASL2 exchange", function()
    serve.run({ users = USERS }, function(_, port)
      local r = M.open(port)
      r:send("<response xmlns='" .. NS2 .. "'>AA==</response>")
      assert.equal("policy-violation", (r:stream_error()))
      r = M.open(port)
      r:send("<authenticate xmlns='" .. NS2 .. "' mechanism='SCRAM-SHA-256'/>")
      assert.equal("challenge", assert(r:stanza()).name)
      r:send("<response xmlns='" .. NS_SASL .. "'>AA==</response>")
      assert.equal("policy-violation", (r:stream_error()))
    end)
  end)

  it("ends the stream on anything else during an exchange (a registration request included)", function()
    serve.run({ users = USERS, registration = true }, function(_, port)
      for _, other in ipairs({ "<iq type='get' id='r'><query xmlns='jabber:iq:register'/></iq>", "<presence/>" }) do
        local r = M.open(port)
        r:send("<authenticate xmlns='" .. NS2 .. "' mechanism='SCRAM-SHA-256'/>")
        assert.equal("challenge", assert(r:stanza()).name)
        r:send(other)
        assert.equal("not-authorized", (r:stream_error()), other)
      end
    end)
  end)

  it("ends the stream on a second <authenticate/> during an exchange or after success", function()
    serve.run({ users = USERS }, function(_, port)
      local r = M.open(port)
      r:send("<authenticate xmlns='" .. NS2 .. "' mechanism='SCRAM-SHA-256'/>")
      assert.equal("challenge", assert(r:stanza()).name)
      r:send("<authenticate xmlns='" .. NS2 .. "' mechanism='SCRAM-SHA-256'/>")
      assert.equal("policy-violation", (r:stream_error()))
      r = M.open(port)
      assert.equal("success", M.auth2(r).name)
      assert.equal("features", assert(r:stanza()).name)
      r:send("<authenticate xmlns='" .. NS2 .. "' mechanism='PLAIN'/>")
      assert.equal("policy-violation", (r:stream_error()))
      -- classic after SASL2, and SASL2 after classic
      r = M.open(port)
      assert.equal("success", M.auth2(r).name)
      r:send("<auth xmlns='" .. NS_SASL .. "' mechanism='PLAIN'>" .. core.base64_encode("\0alice\0alice-pw") .. "</auth>")
      assert.equal("policy-violation", (r:stream_error()))
      r = raw.login(port, serve.pki().ca, "alice", "alice-pw", false)
      r:send("<authenticate xmlns='" .. NS2 .. "' mechanism='PLAIN'/>")
      assert.equal("policy-violation", (r:stream_error()))
      r = M.open(port)
      r:send("<auth xmlns='" .. NS_SASL .. "' mechanism='SCRAM-SHA-256'/>")
      assert.equal("challenge", assert(r:stanza()).name)
      r:send("<authenticate xmlns='" .. NS2 .. "' mechanism='PLAIN'/>")
      assert.equal("policy-violation", (r:stream_error()))
    end)
  end)

  it("waits for the address's throttle like classic SASL (a success is held too)", function()
    serve.run({ users = USERS, limits = { auth_failures = 1, auth_delay = 0.3, sasl_attempts = 10 } }, function(_, port)
      local r = M.open(port)
      assert.equal("not-authorized", cond_of(M.auth2(r, { password = "wrong" })))
      local t0 = core.now()
      assert.equal("success", M.auth2(r).name)
      assert.is_true(core.now() - t0 >= 0.25)
      r:close()
    end)
  end)
end)

