-- The embedded server's SASL channel binding, byte by byte (RFC 5802, RFC
-- 5929, RFC 9266, XEP-0440; docs/server.md, "Channel binding"): the types
-- advertised per TLS version and per the channel_binding option, SCRAM
-- -PLUS bound with each type (tls-unique on TLS 1.2 with the extended
-- master secret, and on TLS 1.3 as the client Finished), an unsupported
-- type answered with RFC 5802's server-error value without costing a try,
-- and the 'y' flag refused whenever -PLUS is offered, even after a
-- refused type.
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local serve = require "spec.support.serve"
local raw = require "spec.support.raw"

local NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
local NS_SASL_CB = "urn:xmpp:sasl-cb:0"
local USERS = { alice = "alice-pw" }

-- A raw stream over TLS (tls: extra tls_context options, e.g. max_version);
-- returns it and the features offered over TLS.
local function open(port, tls)
  local r = raw.connect(port)
  r:send(raw.header())
  assert(r:stanza().name == "features")
  r:send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
  assert(r:stanza().name == "proceed")
  local o = { mode = "client", cafile = serve.pki().ca }
  for k, v in pairs(tls or {}) do o[k] = v end
  r.conn:starttls(assert(core.tls_context(o)), "example.test")
  local ev = r:next()
  assert(ev and ev.tls, "TLS did not complete")
  r:send(raw.header())
  local f = assert(r:stanza())
  assert(f.name == "features")
  return r, f
end

local function mechanisms(f)
  local out = {}
  for m in f:get_child("mechanisms", NS_SASL):childtags("mechanism") do out[#out + 1] = m:get_text() end
  return table.concat(out, " ")
end

-- The XEP-0440 types advertised, in order ("" for none, nil without the element).
local function cb_types(f)
  local e = f:get_child("sasl-channel-binding", NS_SASL_CB)
  if not e then return nil end
  local out = {}
  for c in e:childtags("channel-binding") do out[#out + 1] = c.attr.type end
  return table.concat(out, " ")
end

-- One SCRAM exchange on r. o: mechanism (default SCRAM-SHA-256-PLUS),
-- cb_type, cb_data (default: this connection's data for cb_type; false:
-- none), password, server_offers_plus (the 'y' flag when false and cb_type
-- is set). Returns "success", or "failure", condition, text.
local function scram(r, o)
  local mech = o.mechanism or "SCRAM-SHA-256-PLUS"
  local data = o.cb_data
  if data == nil and o.cb_type then data = r.conn:channel_binding(o.cb_type) or "no-data" end
  local c = assert(core.sasl_client({
    mechanism = mech, username = "alice", password = o.password or USERS.alice,
    cb_type = o.cb_type, cb_data = data or nil, tls = true,
    server_offers_plus = o.server_offers_plus ~= false,
  }))
  r:send("<auth xmlns='" .. NS_SASL .. "' mechanism='" .. mech .. "'>" ..
    core.base64_encode(assert(c:step())) .. "</auth>")
  while true do
    local s = assert(r:stanza())
    if s.name == "failure" then
      local cond
      for t in s:childtags() do if t.name ~= "text" then cond = t.name end end
      return "failure", cond, s:get_child_text("text")
    elseif s.name == "success" then
      assert(c:finish(core.base64_decode(s:get_text() or "")), "the server's signature did not verify")
      return "success"
    end
    assert(s.name == "challenge", "unexpected " .. tostring(s.name))
    r:send("<response xmlns='" .. NS_SASL .. "'>" ..
      core.base64_encode(assert(c:step(core.base64_decode(s:get_text())))) .. "</response>")
  end
end

describe("embedded server: SASL channel binding", function()
  it("advertises its -PLUS types with XEP-0440, per TLS version", function()
    serve.run({ users = USERS }, function(_, port)
      local r, f = open(port)
      assert.equal("TLSv1.3", r.conn:tls_info().version)
      assert.equal("SCRAM-SHA-256-PLUS SCRAM-SHA-1-PLUS SCRAM-SHA-256 SCRAM-SHA-1 PLAIN", mechanisms(f))
      assert.equal("tls-exporter tls-server-end-point tls-unique", cb_types(f))
      r:close()
      -- tls-exporter is TLS 1.3's (RFC 9266)
      r, f = open(port, { max_version = "1.2" })
      assert.equal("TLSv1.2", r.conn:tls_info().version)
      assert.equal("tls-server-end-point tls-unique", cb_types(f))
      r:close()
      -- no tls-unique on TLS 1.2 without the extended master secret (RFC 7627)
      r, f = open(port, { max_version = "1.2", no_ems = true })
      assert.equal("tls-server-end-point", cb_types(f))
      assert.equal("failure", (scram(r, { cb_type = "tls-unique", cb_data = "x" })))
      r:close()
    end)
  end)

  it("binds SCRAM-PLUS with tls-unique on TLS 1.2 and 1.3, and with its other types", function()
    serve.run({ users = USERS }, function(_, port)
      for _, v in ipairs({ "1.2", "1.3" }) do
        local r = open(port, { max_version = v })
        local fin = assert(r.conn:channel_binding("tls-unique"))
        -- TLS 1.2: the 12-byte verify_data; TLS 1.3: as long as the suite's hash
        local sha384 = r.conn:tls_info().cipher:match("SHA384")
        assert.equal(v == "1.2" and 12 or sha384 and 48 or 32, #fin)
        assert.equal("success", scram(r, { cb_type = "tls-unique" }), "TLS " .. v)
        r:close()
      end
      for _, t in ipairs({ "tls-exporter", "tls-server-end-point" }) do
        local r = open(port)
        assert.equal("success", scram(r, { mechanism = "SCRAM-SHA-1-PLUS", cb_type = t }), t)
        r:close()
      end
    end)
  end)

  it("refuses binding data of another connection: channel-bindings-dont-match", function()
    serve.run({ users = USERS }, function(_, port)
      for _, v in ipairs({ "1.2", "1.3" }) do
        local other = open(port, { max_version = v })
        local r = open(port, { max_version = v })
        local res, cond, text = scram(r, { cb_type = "tls-unique",
          cb_data = assert(other.conn:channel_binding("tls-unique")) })
        assert.same({ "failure", "not-authorized", "channel-bindings-dont-match" }, { res, cond, text })
        other:close()
        r:close()
      end
    end)
  end)

  it("answers an unsupported type with unsupported-channel-binding-type, costing no try", function()
    serve.run({ users = USERS }, function(_, port)
      local r = open(port)
      -- one refusal per -PLUS mechanism offered is forgiven ...
      for _, m in ipairs({ "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS" }) do
        local res, cond, text = scram(r, { mechanism = m, cb_type = "tls-bogus", cb_data = "x" })
        assert.same({ "failure", "not-authorized", "unsupported-channel-binding-type" }, { res, cond, text })
      end
      -- ... so two wrong passwords later, a third try still gets in
      for _ = 1, 2 do
        local res, cond, text = scram(r, { cb_type = "tls-exporter", password = "wrong" })
        assert.same({ "failure", "not-authorized" }, { res, cond })
        assert.is_nil(text)
      end
      assert.equal("success", scram(r, { cb_type = "tls-exporter" }))
      r:close()
      -- the forgiveness is bounded: past it, refusals count as failures
      -- (two forgiven, then limits.sasl_attempts, 5)
      r = open(port)
      for _ = 1, 6 do
        assert.equal("failure", (scram(r, { cb_type = "tls-bogus", cb_data = "x" })))
      end
      r:send("<auth xmlns='" .. NS_SASL .. "' mechanism='SCRAM-SHA-256-PLUS'>" ..
        core.base64_encode("p=tls-bogus,,n=alice,r=abcdefgh") .. "</auth>")
      assert.equal("failure", assert(r:stanza()).name)
      assert.equal("policy-violation", (r:stream_error()))
      r:close()
    end)
  end)

  it("refuses 'y' while -PLUS is offered (RFC 5802 §6), even after a refused type", function()
    serve.run({ users = USERS }, function(_, port)
      local r = open(port)
      local res, cond, text = scram(r, { mechanism = "SCRAM-SHA-256", cb_type = "tls-exporter",
        server_offers_plus = false })
      assert.same({ "failure", "not-authorized", "server-does-support-channel-binding" }, { res, cond, text })
      -- what stock slixmpp 1.8.3 does when its type is refused; a man in
      -- the middle could cause that refusal itself, so 'y' stays a downgrade
      assert.equal("unsupported-channel-binding-type",
        select(3, scram(r, { cb_type = "tls-bogus", cb_data = "x" })))
      res, cond, text = scram(r, { mechanism = "SCRAM-SHA-256", cb_type = "tls-exporter",
        server_offers_plus = false })
      assert.same({ "failure", "not-authorized", "server-does-support-channel-binding" }, { res, cond, text })
      -- 'n' (a client that cannot bind) is no downgrade
      assert.equal("success", scram(r, { mechanism = "SCRAM-SHA-256" }))
      r:close()
    end)
  end)

  it("offers no -PLUS and no XEP-0440 with channel_binding = false, and then takes 'y'", function()
    serve.run({ users = USERS, channel_binding = false }, function(_, port)
      local r, f = open(port)
      assert.equal("SCRAM-SHA-256 SCRAM-SHA-1 PLAIN", mechanisms(f))
      assert.is_nil(cb_types(f))
      assert.equal("success", scram(r, { mechanism = "SCRAM-SHA-256", cb_type = "tls-exporter",
        server_offers_plus = false }))
      r:close()
    end)
  end)

  it("restricts the types to a channel_binding list", function()
    serve.run({ users = USERS, channel_binding = { "tls-unique", "tls-server-end-point" } }, function(_, port)
      local r, f = open(port)
      assert.equal("SCRAM-SHA-256-PLUS SCRAM-SHA-1-PLUS SCRAM-SHA-256 SCRAM-SHA-1 PLAIN", mechanisms(f))
      assert.equal("tls-server-end-point tls-unique", cb_types(f))   -- best first, whatever the order given
      assert.equal("unsupported-channel-binding-type", select(3, scram(r, { cb_type = "tls-exporter" })))
      assert.equal("success", scram(r, { cb_type = "tls-server-end-point" }))
      r:close()
    end)
    -- a list of types this TLS connection does not define: no -PLUS at all
    serve.run({ users = USERS, channel_binding = { "tls-exporter" } }, function(_, port)
      local r, f = open(port, { max_version = "1.2" })
      assert.equal("SCRAM-SHA-256 SCRAM-SHA-1 PLAIN", mechanisms(f))
      assert.is_nil(cb_types(f))
      r:close()
    end)
  end)

  it("checks the channel_binding option", function()
    for _, bad in ipairs({ "yes", {}, { "tls-bogus" }, { "tls-unique", 3 }, { x = "tls-unique" } }) do
      assert.has_error(function() lxmpp.server({ domain = "example.test", channel_binding = bad }) end,
        "lxmpp.server: channel_binding must be true, false or a list of tls-exporter, tls-server-end-point, tls-unique")
    end
  end)
end)

describe("embedded server: failed logins before the stream ends", function()
  local function plain(r, password)
    r:send("<auth xmlns='" .. NS_SASL .. "' mechanism='PLAIN'>" ..
      core.base64_encode("\0alice\0" .. password) .. "</auth>")
    local s = assert(r:stanza())
    if s.name == "success" then return "success" end
    assert.equal("failure", s.name)
    assert.truthy(s:get_child("not-authorized"))
    return "failure"
  end

  -- libpurple with Cyrus SASL (Pidgin's engine as Debian builds it) answers
  -- a failure by trying the next mechanism offered, with the same password,
  -- and its list loses "SCRAM-SHA-256" out of "SCRAM-SHA-256-PLUS" first:
  -- SCRAM-SHA-256 twice, SCRAM-SHA-1 twice, then PLAIN. It shows the user
  -- "Incorrect username or password" only when it has run out; a stream
  -- ended before that is a policy-violation network error, which Pidgin
  -- retries (spec/interop/server_purple_spec.lua).
  it("lasts through libpurple's five attempts with a wrong password (limits.sasl_attempts = 5)", function()
    -- (the address's throttle, which would delay the second stream's answers, out of the way)
    serve.run({ users = USERS, limits = { auth_failures = 100, auth_address_failures = 100 } }, function(_, port)
      local r = open(port)
      for _, m in ipairs({ "SCRAM-SHA-256", "SCRAM-SHA-256", "SCRAM-SHA-1", "SCRAM-SHA-1" }) do
        assert.same({ "failure", "not-authorized" }, { scram(r, { mechanism = m, password = "wrong" }) })
      end
      assert.equal("failure", plain(r, "wrong"))
      -- the fifth failure ends it, as RFC 6120 §6.4.5 says
      assert.equal("policy-violation", (r:stream_error()))
      r:close()
      -- and after four the right password still gets in
      r = open(port)
      for _ = 1, 4 do assert.equal("failure", plain(r, "wrong")) end
      assert.equal("success", scram(r, { mechanism = "SCRAM-SHA-256" }))
      r:close()
    end)
  end)
end)
