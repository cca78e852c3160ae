-- XEP-0474 (SASL SCRAM Downgrade Protection) on the embedded server: the
-- h= attribute of SCRAM's server-first message is the hash of the
-- mechanisms and XEP-0440 channel-binding types the client was shown, in
-- classic SASL and in SASL2, with SHA-1 and SHA-256, and the exchange it
-- is part of still succeeds (the proofs sign it); none with ssdp = false.
local core = require "lxmpp.core"
local serve = require "spec.support.serve"
local sasl2 = require "spec.support.sasl2"
local sasl = require "lxmpp.server.features.sasl"

local NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
local NS_CB = "urn:xmpp:sasl-cb:0"
local USERS = sasl2.USERS

-- What the features showed: the mechanisms of the profile, the XEP-0440 types (or nil).
local function advertised(f, profile)
  local list = {}
  local el = profile == "sasl2" and f:get_child("authentication", sasl2.NS) or f:get_child("mechanisms", NS_SASL)
  for m in el:childtags("mechanism") do list[#list + 1] = m:get_text() end
  local cb = f:get_child("sasl-channel-binding", NS_CB)
  local types
  if cb then
    types = {}
    for c in cb:childtags("channel-binding") do types[#types + 1] = c.attr.type end
  end
  return list, types
end

-- One SCRAM exchange in a profile: the h= value of the server-first
-- message (nil without), and the final element's name.
local function exchange(r, profile, mech)
  local c = assert(core.sasl_client({ mechanism = mech, username = "alice", password = USERS.alice, tls = true,
    server_offers_plus = true, cb_type = mech:match("PLUS") and "tls-exporter" or nil,
    cb_data = mech:match("PLUS") and r.conn:channel_binding("tls-exporter") or nil }))
  local ns = profile == "sasl2" and sasl2.NS or NS_SASL
  local first = core.base64_encode(assert(c:step()))
  if profile == "sasl2" then
    r:send("<authenticate xmlns='" .. ns .. "' mechanism='" .. mech .. "'><initial-response>" .. first ..
      "</initial-response></authenticate>")
  else
    r:send("<auth xmlns='" .. ns .. "' mechanism='" .. mech .. "'>" .. first .. "</auth>")
  end
  local ch = assert(r:stanza())
  assert.equal("challenge", ch.name)
  local sfirst = core.base64_decode(ch:get_text())
  local h = sfirst:match(",h=([^,]+)")
  r:send("<response xmlns='" .. ns .. "'>" .. core.base64_encode(assert(c:step(sfirst))) .. "</response>")
  local s = assert(r:stanza())
  return h, s.name
end

describe("embedded server: SCRAM downgrade protection (XEP-0474)", function()
  it("hashes as XEP-0474's example does", function()
    assert.equal("G6k/rBLDqgOhRRaCuuatSDFkJ08=",
      sasl.ssdp_hash({ "SCRAM-SHA-1-PLUS", "SCRAM-SHA-1" }, { "tls-server-end-point", "tls-exporter" }, "sha1"))
  end)

  for _, case in ipairs({ { "sasl", "SCRAM-SHA-256-PLUS", "sha256" }, { "sasl", "SCRAM-SHA-1", "sha1" },
    { "sasl2", "SCRAM-SHA-1-PLUS", "sha1" }, { "sasl2", "SCRAM-SHA-256", "sha256" } }) do
    local profile, mech, hash = case[1], case[2], case[3]
    it("signs what was advertised into " .. mech .. " (" .. profile .. ")", function()
      serve.run({ users = USERS }, function(_, port)
        local r, f = sasl2.open(port)
        local mechs, types = advertised(f, profile)
        assert.truthy(types)
        local h, final = exchange(r, profile, mech)
        assert.equal(sasl.ssdp_hash(mechs, types, hash), h)
        assert.equal("success", final)
        r:close()
      end)
    end)
  end

  it("leaves the channel-binding part out when no XEP-0440 types are advertised", function()
    serve.run({ users = USERS, channel_binding = false }, function(_, port)
      local r, f = sasl2.open(port)
      local mechs, types = advertised(f, "sasl")
      assert.is_nil(types)
      local h, final = exchange(r, "sasl", "SCRAM-SHA-256")
      assert.equal(sasl.ssdp_hash(mechs, nil, "sha256"), h)
      assert.equal(core.base64_encode(core.hash("sha256", table.concat({ "PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256" },
        "\30"))), h)
      assert.equal("success", final)
      r:close()
    end)
  end)

  it("sends no h= with ssdp = false", function()
    serve.run({ users = USERS, ssdp = false }, function(_, port)
      local r = sasl2.open(port)
      local h, final = exchange(r, "sasl2", "SCRAM-SHA-256")
      assert.is_nil(h)
      assert.equal("success", final)
      r:close()
    end)
  end)
end)
