-- The SASL engine (csrc/sasl.c) through its binding (csrc/sasl_lua.c): the
-- RFC 5802 / RFC 7677 test vectors, every SCRAM check of RFC 5802 §5, §9
-- on both sides, mechanism choice, SASLprep (RFC 4013) and strict base64.

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"

local b64, unb64 = core.base64_encode, core.base64_decode

-- RFC 5802 section 5 (SCRAM-SHA-1) and RFC 7677 section 3 (SCRAM-SHA-256)
local RFC5802 = {
  mechanism = "SCRAM-SHA-1", hash = "SHA-1",
  cnonce = "fyko+d2lbbFgONRv9qkxdawL", snonce = "3rfcNHYJY1ZVvWVs7j", salt = "QSXCR+Q6sek8bf92",
  client_first = "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
  server_first = "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
  client_final = "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
  server_final = "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
}
local RFC7677 = {
  mechanism = "SCRAM-SHA-256", hash = "SHA-256",
  cnonce = "rOprNGfwEbeRWgbNEkqO", snonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0", salt = "W22ZaJ0SNY7soEsUEjb6gQ==",
  client_first = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
  server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
  client_final = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    .. "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
  server_final = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
}

local SECRET = "0123456789abcdef-server-secret"

-- A client in the RFC 5802 example, past its first message.
local function rfc_client(extra)
  local opts = { mechanism = "SCRAM-SHA-1", username = "user", password = "pencil", nonce = RFC5802.cnonce }
  for k, v in pairs(extra or {}) do opts[k] = v end
  local c = assert(core.sasl_client(opts))
  assert.equal(RFC5802.client_first, c:step())
  return c
end

-- A client that has sent the RFC 5802 client-final, waiting for the server-final.
local function rfc_client_final()
  local c = rfc_client()
  assert.equal(RFC5802.client_final, c:step(RFC5802.server_first))
  return c
end

local function expect_fail(cond, pattern, ok, msg, got_cond)
  assert.is_nil(ok)
  assert.is_string(msg)
  assert.equal(cond, got_cond)
  if pattern then assert.matches(pattern, msg) end
end

-- A server for user "user" (password "pencil") or, with users, for those.
local function make_server(opts, users)
  users = users or { user = "pencil" }
  local mech = opts.mechanism
  local hash = mech:match("^SCRAM%-(SHA%-%d+)")
  local store = {}
  for name, pw in pairs(users) do store[name] = assert(core.sasl_credentials(pw, hash, 4096)) end
  local o = { secret = SECRET, lookup = function(u) return store[u] end }
  for k, v in pairs(opts) do o[k] = v end
  return core.sasl_server(o)
end

-- Runs a whole exchange; returns a log of what each side said.
local function exchange(copts, sopts, users)
  local log = {}
  local c = assert(core.sasl_client(copts))
  local s = make_server(sopts, users)
  local first = assert(c:step())
  local sfirst, msg, cond = s:step(first)
  if not sfirst then log.server_error = { msg, cond, step = 1 }; return log, c, s end
  log.server_first = sfirst
  local cfinal, cmsg, ccond = c:step(sfirst)
  if not cfinal then log.client_error = { cmsg, ccond }; return log, c, s end
  local sfinal, done_or_msg, scond = s:step(cfinal)
  if not sfinal then log.server_error = { done_or_msg, scond, step = 2 }; return log, c, s end
  assert.is_true(done_or_msg)
  log.server_final = sfinal
  log.ok, log.msg, log.cond = c:finish(sfinal)
  return log, c, s
end

describe("base64", function()
  -- RFC 4648 section 10
  local vectors = {
    { "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
    { "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
  }
  for _, v in ipairs(vectors) do
    it(("encodes and decodes %q"):format(v[1]), function()
      assert.equal(v[2], b64(v[1]))
      assert.equal(v[1], unb64(v[2]))
    end)
  end

  it("round-trips every byte value", function()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    all = table.concat(all)
    for n = 0, 6 do
      local s = all:sub(1, 250 + n)
      assert.equal(s, unb64(b64(s)))
    end
  end)

  local invalid = {
    "Zg", "Zg=", "Zm9vY", "Zm9v=",         -- length not a multiple of 4
    "Zh==", "Zm9=",                          -- unused bits set (not canonical)
    "Zg==Zg==", "Z===", "====", "Zg=a",      -- padding not at the end
    "Zm 9", "Zm9v\n", " Zm9v", "Zm9v\0\0\0\0", -- whitespace, NUL
    "Zm-v", "Zm_v", "Zm9v!!!!", "\195\169Zm9",  -- other alphabets, non-ASCII
  }
  for _, s in ipairs(invalid) do
    it(("refuses %q"):format(s), function()
      local r, msg = unb64(s)
      assert.is_nil(r)
      assert.equal("invalid base64", msg)
    end)
  end

  it("raises on a non-string", function()
    assert.has_error(function() unb64({}) end)
  end)
end)

describe("saslprep", function()
  -- RFC 4013 section 3, and a few more
  local ok = {
    { "I\194\173X", "IX", "soft hyphen mapped to nothing" },
    { "user", "user", "no transformation" },
    { "USER", "USER", "case preserved" },
    { "\194\170", "a", "NFKC: feminine ordinal" },
    { "\226\133\168", "IX", "NFKC: roman numeral nine" },
    { "a\194\160b", "a b", "non-ASCII space mapped to space" },
    { "pass\239\184\143word", "password", "variation selector mapped to nothing" },
    { "a\226\128\141b", "ab", "zero width joiner mapped to nothing" },
    { "\240\159\152\128", "\240\159\152\128", "unassigned in Unicode 3.2: allowed in queries" },
  }
  for _, case in ipairs(ok) do
    it(case[3], function()
      assert.equal(case[2], core.saslprep(case[1]))
    end)
  end

  local bad = {
    { "\007", "prohibited", "control character (RFC 4013 example 6)" },
    { "\216\1671", "bidirectional", "RandALCat then a digit (RFC 4013 example 7)" },
    { "a\239\191\190b", "prohibited", "non-character" },
    { "\192\128", "UTF%-8", "overlong NUL" },
    { "\237\160\128", "UTF%-8", "surrogate" },
    { "\255", "UTF%-8", "not UTF-8" },
    { "a\0b", "NUL", "NUL byte" },
  }
  for _, case in ipairs(bad) do
    it("refuses: " .. case[3], function()
      local r, msg = core.saslprep(case[1])
      assert.is_nil(r)
      assert.matches(case[2], msg)
    end)
  end

  it("refuses unassigned code points in strict (stored string) mode", function()
    local r, msg = core.saslprep("\240\159\152\128", true)
    assert.is_nil(r)
    assert.matches("unassigned", msg)
    assert.equal("IX", core.saslprep("I\194\173X", true))
  end)

  it("refuses more than 2048 bytes in or out", function()
    assert.equal(2048, #core.saslprep(("a"):rep(2048)))
    assert.is_nil(core.saslprep(("a"):rep(2049)))
    -- U+FDFA: one code point that NFKC turns into 18
    local three = core.saslprep(("\239\183\186"):rep(3))
    assert.equal(54, compat.utf8_len(three))
    assert.equal(3 * core.saslprep("\239\183\186"):len(), #three)
    local r, msg = core.saslprep(("\239\183\186"):rep(600))
    assert.is_nil(r)
    assert.equal("result too long", msg)
  end)
end)

describe("sasl_choose", function()
  local ALL = { "PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512",
                "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-512-PLUS", "EXTERNAL", "ANONYMOUS" }
  local TLS = { password = true, tls = true }
  local CB = { password = true, tls = true, cb_types = { "tls-exporter", "tls-server-end-point" } }
  -- name, offered, caps, expected mechanism (or nil), expected cb type, reason pattern
  local cases = {
    { "strongest of all: SCRAM-SHA-512-PLUS", ALL, CB, "SCRAM-SHA-512-PLUS", "tls-exporter" },
    { "-PLUS beats a stronger hash", { "SCRAM-SHA-1-PLUS", "SCRAM-SHA-512" }, CB, "SCRAM-SHA-1-PLUS", "tls-exporter" },
    { "no binding data: best plain SCRAM", { "SCRAM-SHA-1-PLUS", "SCRAM-SHA-512" }, TLS, "SCRAM-SHA-512" },
    { "SHA-256 over SHA-1", { "SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN" }, TLS, "SCRAM-SHA-256" },
    { "SCRAM over PLAIN", { "PLAIN", "SCRAM-SHA-1" }, TLS, "SCRAM-SHA-1" },
    { "PLAIN over TLS", { "PLAIN" }, TLS, "PLAIN" },
    { "PLAIN never without TLS", { "PLAIN" }, { password = true }, nil, nil, "PLAIN %(refused without TLS%)" },
    { "SCRAM without TLS", { "PLAIN", "SCRAM-SHA-1" }, { password = true }, "SCRAM-SHA-1" },
    { "-PLUS needs TLS", { "SCRAM-SHA-256-PLUS" }, { password = true, cb_types = { "tls-exporter" } }, nil, nil,
      "channel binding needs TLS" },
    { "server offers no -PLUS: plain SCRAM, binding known (sends y)",
      { "SCRAM-SHA-256", "PLAIN" }, CB, "SCRAM-SHA-256", "tls-exporter" },
    { "XEP-0440: the binding both sides have",
      { "SCRAM-SHA-256-PLUS" }, { password = true, tls = true, cb_types = { "tls-exporter", "tls-server-end-point" },
                                  server_cb_types = { "tls-server-end-point" } },
      "SCRAM-SHA-256-PLUS", "tls-server-end-point" },
    { "XEP-0440: no common binding type, plain SCRAM with n",
      { "SCRAM-SHA-256-PLUS", "SCRAM-SHA-256" },
      { password = true, tls = true, cb_types = { "tls-exporter" }, server_cb_types = { "tls-unique" } },
      "SCRAM-SHA-256", nil },
    { "EXTERNAL with a client certificate wins",
      ALL, { password = true, tls = true, client_cert = true, cb_types = { "tls-exporter" } }, "EXTERNAL" },
    { "EXTERNAL not offered: password mechanisms", { "SCRAM-SHA-256", "PLAIN" },
      { password = true, tls = true, client_cert = true }, "SCRAM-SHA-256" },
    { "EXTERNAL without a certificate", { "EXTERNAL" }, TLS, nil, nil, "EXTERNAL %(no client certificate%)" },
    { "ANONYMOUS only when requested", { "ANONYMOUS" }, TLS, nil, nil, "ANONYMOUS %(not requested%)" },
    { "ANONYMOUS requested: nothing else", ALL, { password = true, tls = true, anonymous = true }, "ANONYMOUS" },
    { "ANONYMOUS requested but not offered", { "SCRAM-SHA-1" }, { anonymous = true }, nil, nil,
      "ANONYMOUS was requested" },
    { "cached SHA-256 keys, no password", { "SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN" },
      { keys_hash = "SHA-256", tls = true }, "SCRAM-SHA-256" },
    { "cached keys for another hash", { "SCRAM-SHA-512" }, { keys_hash = "SHA-1", tls = true }, nil, nil,
      "cached keys are for another hash" },
    { "no password at all", { "SCRAM-SHA-1", "PLAIN" }, { tls = true }, nil, nil, "SCRAM%-SHA%-1 %(no password%)" },
    { "nothing offered", {}, TLS, nil, nil, "offers no SASL mechanism" },
    { "unknown mechanisms named", { "X-OAUTH2", "DIGEST-MD5" }, TLS, nil, nil,
      "X%-OAUTH2 %(not supported%), DIGEST%-MD5 %(not supported%)" },
    { "names are case-sensitive", { "scram-sha-1" }, TLS, nil, nil, "scram%-sha%-1 %(not supported%)" },
  }
  for _, case in ipairs(cases) do
    it(case[1], function()
      local n = select("#", core.sasl_choose(case[2], case[3]))
      local mech, cb_or_reason = core.sasl_choose(case[2], case[3])
      assert.equal(case[4], mech)
      if case[4] then
        assert.equal(3, n) -- one mechanism, never a list to fall back on
        assert.equal(case[5], cb_or_reason)
      else
        assert.equal(2, n)
        assert.matches(case[6], cb_or_reason)
      end
    end)
  end

  it("reports whether the server offers -PLUS", function()
    assert.is_true(select(3, core.sasl_choose({ "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS" }, TLS)))
    assert.is_false(select(3, core.sasl_choose({ "SCRAM-SHA-1" }, TLS)))
  end)

  it("never picks PLAIN without TLS, EXTERNAL without a certificate, ANONYMOUS unasked", function()
    local bools = { false, true }
    local count = 0
    for mask = 1, compat.lshift(1, #ALL) - 1 do
      local offered = {}
      for i, m in ipairs(ALL) do if compat.band(mask, compat.lshift(1, i - 1)) ~= 0 then offered[#offered + 1] = m end end
      for _, tls in ipairs(bools) do
        for _, cert in ipairs(bools) do
          for _, cb in ipairs(bools) do
            local caps = { password = true, tls = tls, client_cert = cert, cb_types = cb and { "tls-exporter" } or nil }
            local mech = core.sasl_choose(offered, caps)
            if mech == "PLAIN" then assert.is_true(tls) end
            if mech == "EXTERNAL" then assert.is_true(cert and tls) end
            assert.is_not.equal("ANONYMOUS", mech)
            if mech and mech:match("PLUS$") then assert.is_true(tls and cb) end
            count = count + 1
          end
        end
      end
    end
    assert.equal((compat.lshift(1, #ALL) - 1) * 8, count)
  end)

  it("raises on misuse", function()
    assert.has_error(function() core.sasl_choose("PLAIN", {}) end)
    assert.has_error(function() core.sasl_choose({ 1 }, {}) end)
    assert.has_error(function() core.sasl_choose({}, { keys_hash = "MD5" }) end)
  end)
end)

describe("SCRAM client", function()
  for _, v in ipairs({ RFC5802, RFC7677 }) do
    it(v.mechanism .. ": the RFC example, message for message", function()
      local c = assert(core.sasl_client{ mechanism = v.mechanism, username = "user", password = "pencil",
                                         nonce = v.cnonce })
      assert.equal(v.client_first, c:step())
      assert.equal(v.client_final, c:step(v.server_first))
      assert.is_true(c:finish(v.server_final))
      local k = c:keys()
      assert.equal(v.hash, k.hash)
      assert.equal(unb64(v.salt), k.salt)
      assert.equal(4096, k.iterations)
      assert.equal(#k.client_key, #k.salted_password)
    end)

    it(v.mechanism .. ": cached keys replace the password", function()
      local c = assert(core.sasl_client{ mechanism = v.mechanism, username = "user", password = "pencil",
                                         nonce = v.cnonce })
      c:step()
      c:step(v.server_first)
      assert.is_true(c:finish(v.server_final))
      local keys = c:keys()
      local only_keys = { hash = keys.hash, salt = keys.salt, iterations = keys.iterations,
                          client_key = keys.client_key, server_key = keys.server_key }
      for _, k in ipairs({ keys, only_keys }) do
        local c2 = assert(core.sasl_client{ mechanism = v.mechanism, username = "user", keys = k, nonce = v.cnonce })
        assert.equal(v.client_first, c2:step())
        assert.equal(v.client_final, c2:step(v.server_first))
        assert.is_true(c2:finish(v.server_final))
      end
    end)
  end

  it("cached keys for another salt: credentials-expired without a password", function()
    local c = rfc_client_final()
    assert.is_true(c:finish(RFC5802.server_final))
    local keys = c:keys()
    local c2 = assert(core.sasl_client{ mechanism = "SCRAM-SHA-1", username = "user", keys = keys,
                                        nonce = RFC5802.cnonce })
    c2:step()
    expect_fail("credentials-expired", "password is needed",
                c2:step((RFC5802.server_first:gsub("s=QSXCR", "s=QSXCX"))))
    -- with the password too, a new salt simply costs a PBKDF2
    local c3 = assert(core.sasl_client{ mechanism = "SCRAM-SHA-1", username = "user", keys = keys,
                                        password = "pencil", nonce = RFC5802.cnonce })
    c3:step()
    assert.matches("^c=biws,r=", c3:step((RFC5802.server_first:gsub("s=QSXCR", "s=QSXCX"))))
  end)

  it("accepts the server-final as a challenge, answering with an empty response", function()
    local c = rfc_client_final()
    assert.equal("", c:step(RFC5802.server_final))
    assert.is_true(c:finish())
    assert.is_table(c:keys())
  end)

  it("gives keys only once the server signature is verified", function()
    local c = rfc_client_final()
    assert.is_nil(c:keys())
    assert.is_nil(c:finish("v=" .. b64(("x"):rep(20))))
    assert.is_nil(c:keys())
  end)

  it("escapes ',' and '=' in the username and SASLpreps it", function()
    local c = assert(core.sasl_client{ mechanism = "SCRAM-SHA-1", username = "a,b=c\194\173", password = "p",
                                       nonce = "abc" })
    assert.equal("n,,n=a=2Cb=3Dc,r=abc", c:step())
  end)

  it("makes a random 24-byte nonce", function()
    local c1 = assert(core.sasl_client{ mechanism = "SCRAM-SHA-1", username = "u", password = "p" })
    local c2 = assert(core.sasl_client{ mechanism = "SCRAM-SHA-1", username = "u", password = "p" })
    local n1, n2 = c1:step():match("r=(.*)$"), c2:step():match("r=(.*)$")
    assert.equal(24, #unb64(n1))
    assert.is_not.equal(n1, n2)
  end)

  describe("gs2 header", function()
    it("n when we cannot bind", function()
      local c = assert(core.sasl_client{ mechanism = "SCRAM-SHA-1", username = "user", password = "pencil",
                                         nonce = RFC5802.cnonce })
      assert.matches("^n,,", c:step())
    end)
    it("y when we could bind but the server offers no -PLUS", function()
      local c = assert(core.sasl_client{ mechanism = "SCRAM-SHA-1", username = "user", password = "pencil",
                                         nonce = RFC5802.cnonce, cb_type = "tls-exporter", cb_data = "x" })
      assert.equal("y,,n=user,r=" .. RFC5802.cnonce, c:step())
      assert.matches("^c=eSws,", c:step(RFC5802.server_first))
    end)
    it("n when we could bind and the server offers -PLUS (for other types or hashes)", function()
      local c = assert(core.sasl_client{ mechanism = "SCRAM-SHA-1", username = "user", password = "pencil",
                                         nonce = RFC5802.cnonce, cb_type = "tls-exporter", server_offers_plus = true })
      assert.matches("^n,,", c:step())
    end)
    it("p=<type> with -PLUS, and c= carries the binding data", function()
      local c = assert(core.sasl_client{ mechanism = "SCRAM-SHA-1-PLUS", username = "user", password = "pencil",
                                         nonce = RFC5802.cnonce, cb_type = "tls-exporter", cb_data = "\1\2\3" })
      assert.equal("p=tls-exporter,,n=user,r=" .. RFC5802.cnonce, c:step())
      local final = c:step(RFC5802.server_first)
      assert.equal("p=tls-exporter,,\1\2\3", unb64(final:match("^c=([^,]+),")))
    end)
    it("-PLUS without binding data is misuse", function()
      assert.has_error(function()
        core.sasl_client{ mechanism = "SCRAM-SHA-1-PLUS", username = "user", password = "pencil" }
      end)
    end)
  end)

  describe("refuses a hostile server-first", function()
    local N = RFC5802.cnonce
    local S = ",s=QSXCR+Q6sek8bf92"
    local cases = {
      { "a nonce not extending ours", "r=XXko+d2lbbFgONRv9qkxdawL3rfc" .. S .. ",i=4096", "not-authorized",
        "does not start with ours" },
      { "our nonce cut short", "r=fyko+d2lbbFgONRv9qkxdaw" .. S .. ",i=4096", "not-authorized", "does not start" },
      { "a nonce equal to ours", "r=" .. N .. S .. ",i=4096", "not-authorized", "added nothing" },
      { "a nonce with a space", "r=" .. N .. "a b" .. S .. ",i=4096", "malformed-request", "invalid nonce" },
      { "i=4095", "r=" .. N .. "x" .. S .. ",i=4095", "mechanism-too-weak", "4095 is below the minimum 4096" },
      { "i=1", "r=" .. N .. "x" .. S .. ",i=1", "mechanism-too-weak", "below the minimum" },
      { "i=99999999999", "r=" .. N .. "x" .. S .. ",i=99999999999", "malformed-request", "above the maximum" },
      { "i=1000001", "r=" .. N .. "x" .. S .. ",i=1000001", "malformed-request", "above the maximum 1000000" },
      { "i=abc", "r=" .. N .. "x" .. S .. ",i=abc", "malformed-request", "not a number" },
      { "i=04096", "r=" .. N .. "x" .. S .. ",i=04096", "malformed-request", "not a number" },
      { "i=-4096", "r=" .. N .. "x" .. S .. ",i=-4096", "malformed-request", "not a number" },
      { "i=+4096", "r=" .. N .. "x" .. S .. ",i=+4096", "malformed-request", "not a number" },
      { "i=4096.0", "r=" .. N .. "x" .. S .. ",i=4096.0", "malformed-request", "not a number" },
      { "empty i", "r=" .. N .. "x" .. S .. ",i=", "malformed-request", "not a number" },
      { "missing i", "r=" .. N .. "x" .. S, "malformed-request", "missing i=" },
      { "missing s", "r=" .. N .. "x,i=4096", "malformed-request", "missing s=" },
      { "empty s", "r=" .. N .. "x,s=,i=4096", "malformed-request", "empty salt" },
      { "s not base64 (length)", "r=" .. N .. "x,s=QSXCR+Q6sek8bf9,i=4096", "incorrect-encoding", "salt" },
      { "s not base64 (character)", "r=" .. N .. "x,s=QSXCR+Q6sek8bf9!,i=4096", "incorrect-encoding", "salt" },
      { "s not canonical base64", "r=" .. N .. "x,s=Zh==,i=4096", "incorrect-encoding", "salt" },
      { "reserved m= first", "m=ext,r=" .. N .. "x" .. S .. ",i=4096", "malformed-request", "reserved" },
      { "reserved m= as an extension", "r=" .. N .. "x" .. S .. ",i=4096,m=ext", "malformed-request", "reserved" },
      { "attributes out of order", "s=QSXCR+Q6sek8bf92,r=" .. N .. "x,i=4096", "malformed-request", "start with r=" },
      { "r= twice", "r=" .. N .. "x" .. S .. ",i=4096,r=" .. N .. "y", "malformed-request", "twice" },
      { "a trailing comma", "r=" .. N .. "x" .. S .. ",i=4096,", "malformed-request", "malformed" },
      { "an attribute without '='", "r=" .. N .. "x" .. S .. ",i=4096,junk", "malformed-request", "malformed" },
      { "an error instead", "e=other-error", "malformed-request", "start with r=" },
      { "an empty message", "", "malformed-request", "empty" },
      { "a NUL byte", "r=" .. N .. "x\0" .. S .. ",i=4096", "malformed-request", "UTF%-8" },
      { "invalid UTF-8", "r=" .. N .. "x" .. S .. ",i=4096,x=\255", "malformed-request", "UTF%-8" },
      { "a huge message", "r=" .. N .. ("x"):rep(9000) .. S .. ",i=4096", "malformed-request", "too long" },
    }
    for _, case in ipairs(cases) do
      it(case[1], function()
        local c = rfc_client()
        expect_fail(case[3], case[4], c:step(case[2]))
        -- and it stays failed
        expect_fail(case[3], case[4], c:step(RFC5802.server_first))
        expect_fail(case[3], case[4], c:finish(RFC5802.server_final))
      end)
    end

    it("ignores well-formed extensions after i=", function()
      local c = rfc_client()
      assert.matches("^c=biws,r=" .. N:gsub("%p", "%%%0") .. "x,p=",
                     c:step("r=" .. N .. "x" .. S .. ",i=4096,x=extension"))
    end)

    it("has configurable iteration bounds, never below 4096", function()
      local c = rfc_client{ max_iterations = 5000 }
      expect_fail("malformed-request", "above the maximum 5000", c:step("r=" .. N .. "x" .. S .. ",i=5001"))
      c = rfc_client{ min_iterations = 10000 }
      expect_fail("mechanism-too-weak", "below the minimum 10000", c:step(RFC5802.server_first))
      assert.has_error(function() rfc_client{ min_iterations = 4095 } end)
      assert.has_error(function() rfc_client{ min_iterations = 8192, max_iterations = 4096 } end)
    end)
  end)

  describe("refuses a hostile server-final", function()
    local right = RFC5802.server_final
    local cases = {
      { "a wrong v=", "v=" .. b64(("\0"):rep(20)), "not-authorized", "server signature is wrong" },
      { "a truncated v=", "v=" .. b64(unb64(right:sub(3)):sub(1, 19)), "not-authorized", "signature is wrong" },
      { "v= with bad base64", "v=rmF9pqV8S7suAoZWja4dJRkFsKQ", "incorrect-encoding", "base64" },
      { "v= with a bad character", "v=rmF9pqV8S7suAoZWja4dJRkFsK*=", "incorrect-encoding", "base64" },
      { "an empty v=", "v=", "incorrect-encoding", "base64" },
      { "no v= (missing)", "", "not-authorized", "did not send its signature" },
      { "e=invalid-proof", "e=invalid-proof", "not-authorized", "server error: invalid%-proof" },
      { "e= with control characters", "e=bad\1\2", "not-authorized", "server error: bad%?%?" },
      { "reserved m= first", "m=x," .. right, "malformed-request", "reserved" },
      { "reserved m= after v=", right .. ",m=x", "malformed-request", "reserved" },
      { "something else", "x=1", "not-authorized", "no v=" },
      { "v= twice", right .. "," .. right, "malformed-request", "twice" },
    }
    for _, case in ipairs(cases) do
      it(case[1] .. " (in <success/>)", function()
        local c = rfc_client_final()
        expect_fail(case[3], case[4], c:finish(case[2]))
        expect_fail(case[3], case[4], c:finish(right)) -- no second chance
        assert.is_nil(c:keys())
      end)
      if case[2] ~= "" then
        it(case[1] .. " (as a challenge)", function()
          local c = rfc_client_final()
          expect_fail(case[3], case[4], c:step(case[2]))
          expect_fail(case[3], case[4], c:finish())
        end)
      end
    end

    it("a success without data before the final message is a failure", function()
      local c = rfc_client_final()
      expect_fail("not-authorized", "did not send its signature", c:finish())
    end)

    it("a success right after client-first (no proof exchanged) is a failure", function()
      local c = rfc_client()
      expect_fail("not-authorized", "before the SCRAM exchange was complete", c:finish(RFC5802.server_final))
    end)

    it("ignores well-formed extensions after v=", function()
      local c = rfc_client_final()
      assert.is_true(c:finish(right .. ",x=extension"))
    end)

    it("after verification in a challenge, success data must verify too", function()
      local c = rfc_client_final()
      assert.equal("", c:step(right))
      expect_fail("not-authorized", "signature is wrong", c:finish("v=" .. b64(("\0"):rep(20))))
      c = rfc_client_final()
      assert.equal("", c:step(right))
      assert.is_true(c:finish(right))
    end)
  end)

  it("raises on calls out of order", function()
    local c = rfc_client()
    assert.has_error(function() c:step() end, "sasl client: step(nil) is only for the initial response")
    c = assert(core.sasl_client{ mechanism = "SCRAM-SHA-1", username = "u", password = "p" })
    assert.has_error(function() c:step("r=x") end)
    assert.has_error(function() c:finish() end)
    c = rfc_client_final()
    assert.is_true(c:finish(RFC5802.server_final))
    assert.has_error(function() c:finish(RFC5802.server_final) end)
    c:close()
    c:close()
    assert.has_error(function() c:step() end, "sasl client is closed")
  end)

  it("refuses unusable options with a condition", function()
    expect_fail("malformed-request", "username", core.sasl_client{ mechanism = "SCRAM-SHA-1", username = "\7",
                                                                    password = "p" })
    expect_fail("malformed-request", "password", core.sasl_client{ mechanism = "SCRAM-SHA-1", username = "u",
                                                                    password = "a\0b" })
    expect_fail("malformed-request", "password", core.sasl_client{ mechanism = "SCRAM-SHA-1", username = "u",
                                                                    password = "" })
    expect_fail("credentials-expired", "no password", core.sasl_client{ mechanism = "SCRAM-SHA-1", username = "u" })
    assert.has_error(function() core.sasl_client{ mechanism = "DIGEST-MD5", username = "u", password = "p" } end)
    assert.has_error(function() core.sasl_client{ mechanism = "SCRAM-SHA-1", password = "p" } end)
    assert.has_error(function() core.sasl_client{ mechanism = "SCRAM-SHA-1", username = 1, password = "p" } end)
  end)
end)

describe("PLAIN, EXTERNAL, ANONYMOUS clients", function()
  it("PLAIN: empty authzid, SASLprep'd name and password, NUL separated", function()
    local c = assert(core.sasl_client{ mechanism = "PLAIN", username = "I\194\173X", password = "\226\133\168",
                                       tls = true })
    assert.equal("\0IX\0IX", c:step())
    assert.is_true(c:finish())
    assert.is_nil(c:keys())
  end)

  it("PLAIN is refused without TLS", function()
    expect_fail("encryption-required", "PLAIN is refused without TLS",
                core.sasl_client{ mechanism = "PLAIN", username = "user", password = "pencil" })
  end)

  it("PLAIN refuses a prohibited password and an empty one", function()
    expect_fail("malformed-request", "password",
                core.sasl_client{ mechanism = "PLAIN", username = "user", password = "pen\7cil", tls = true })
    expect_fail("malformed-request", "password",
                core.sasl_client{ mechanism = "PLAIN", username = "user", password = "", tls = true })
  end)

  it("PLAIN fails on a challenge", function()
    local c = assert(core.sasl_client{ mechanism = "PLAIN", username = "user", password = "pencil", tls = true })
    c:step()
    expect_fail("malformed-request", "unexpected challenge", c:step("more?"))
  end)

  it("EXTERNAL: an empty response (sent as '='), or the authzid", function()
    local c = assert(core.sasl_client{ mechanism = "EXTERNAL", tls = true })
    assert.equal("", c:step())
    assert.is_true(c:finish())
    c = assert(core.sasl_client{ mechanism = "EXTERNAL", tls = true, authzid = "juliet@example.com" })
    assert.equal("juliet@example.com", c:step())
    expect_fail("encryption-required", "EXTERNAL needs TLS", core.sasl_client{ mechanism = "EXTERNAL" })
  end)

  it("ANONYMOUS: empty, or a trace", function()
    local c = assert(core.sasl_client{ mechanism = "ANONYMOUS" })
    assert.equal("", c:step())
    assert.is_true(c:finish())
    c = assert(core.sasl_client{ mechanism = "ANONYMOUS", trace = "sirhc" })
    assert.equal("sirhc", c:step())
    expect_fail("malformed-request", "prohibited", core.sasl_client{ mechanism = "ANONYMOUS", trace = "a\7" })
  end)
end)

describe("sasl_credentials", function()
  it("derives salted keys, never the password", function()
    for hash, len in pairs({ ["SHA-1"] = 20, ["SHA-256"] = 32, ["SHA-512"] = 64 }) do
      local cr = assert(core.sasl_credentials("pencil", hash, 4096))
      assert.equal(hash, cr.hash)
      assert.equal(16, #cr.salt)
      assert.equal(4096, cr.iterations)
      assert.equal(len, #cr.stored_key)
      assert.equal(len, #cr.server_key)
      assert.is_nil(cr.password)
      assert.is_nil(cr.client_key)
      local cr2 = core.sasl_credentials("pencil", hash, 4096)
      assert.is_not.equal(cr.salt, cr2.salt)
      assert.is_not.equal(cr.stored_key, cr2.stored_key)
    end
  end)

  it("with a given salt, the same password gives the same keys (after SASLprep)", function()
    local salt = unb64(RFC5802.salt)
    local a = core.sasl_credentials("IX", "SHA-256", 4096, salt)
    local b = core.sasl_credentials("I\194\173X", "SHA-256", 4096, salt)
    assert.equal(a.stored_key, b.stored_key)
    assert.equal(a.server_key, b.server_key)
  end)

  it("refuses fewer than 4096 iterations and bad arguments", function()
    assert.has_error(function() core.sasl_credentials("p", "SHA-256", 4095) end)
    assert.has_error(function() core.sasl_credentials("p", "MD5", 4096) end)
    assert.has_error(function() core.sasl_credentials("p", "SHA-256", 4096, "") end)
    local r, msg = core.sasl_credentials("p\7", "SHA-256", 4096)
    assert.is_nil(r)
    assert.matches("SASLprep", msg)
  end)
end)

describe("SCRAM server", function()
  for _, v in ipairs({ RFC5802, RFC7677 }) do
    it(v.mechanism .. ": the RFC example, message for message", function()
      local creds = assert(core.sasl_credentials("pencil", v.hash, 4096, unb64(v.salt)))
      local looked_up
      local s = core.sasl_server{
        mechanism = v.mechanism, secret = SECRET, nonce = v.snonce,
        lookup = function(user, hash) looked_up = { user, hash }; return creds end,
      }
      assert.is_nil(s:username())
      local first, done = s:step(v.client_first)
      assert.equal(v.server_first, first)
      assert.is_false(done)
      assert.same({ "user", v.hash }, looked_up)
      assert.is_nil(s:username())
      local final
      final, done = s:step(v.client_final)
      assert.equal(v.server_final, final)
      assert.is_true(done)
      assert.equal("user", s:username())
      assert.has_error(function() s:step(v.client_final) end)
    end)
  end

  for _, mech in ipairs({ "SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512" }) do
    it(mech .. ": client and server engines agree", function()
      local log, c = exchange({ mechanism = mech, username = "user", password = "pencil" }, { mechanism = mech })
      assert.is_true(log.ok)
      assert.matches("^v=", log.server_final)
      -- reconnecting with the cached keys only
      local keys = c:keys()
      log = exchange({ mechanism = mech, username = "user", keys = keys },
                     { mechanism = mech })
      assert.is_nil(log.ok) -- a new random salt on the server: the keys no longer fit
      assert.equal("credentials-expired", log.client_error[2])
    end)
  end

  it("SCRAM-SHA-512: reconnecting with cached keys needs no password", function()
    local creds = assert(core.sasl_credentials("pencil", "SHA-512", 4096))
    local function server()
      return core.sasl_server{ mechanism = "SCRAM-SHA-512", secret = SECRET, lookup = function() return creds end }
    end
    local c = assert(core.sasl_client{ mechanism = "SCRAM-SHA-512", username = "user", password = "pencil" })
    local s = server()
    local sf = s:step(c:step())
    local final = s:step(c:step(sf))
    assert.is_true(c:finish(final))
    local c2 = assert(core.sasl_client{ mechanism = "SCRAM-SHA-512", username = "user", keys = c:keys() })
    local s2 = server()
    sf = s2:step(c2:step())
    final = s2:step(c2:step(sf))
    assert.is_true(c2:finish(final))
  end)

  it("a password with non-ASCII characters, SASLprep'd on both sides", function()
    local log = exchange({ mechanism = "SCRAM-SHA-256", username = "user", password = "I\194\173X" },
                         { mechanism = "SCRAM-SHA-256" }, { user = "\226\133\168" })
    assert.is_true(log.ok)
  end)

  describe("channel binding (-PLUS)", function()
    for _, mech in ipairs({ "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-512-PLUS" }) do
      it(mech .. " with matching binding data succeeds", function()
        local log = exchange({ mechanism = mech, username = "user", password = "pencil",
                               cb_type = "tls-exporter", cb_data = "\0exporter-bytes\255" },
                             { mechanism = mech, cb_type = "tls-exporter", cb_data = "\0exporter-bytes\255" })
        assert.is_true(log.ok)
      end)
      it(mech .. " with other binding data (a man in the middle) fails", function()
        local log = exchange({ mechanism = mech, username = "user", password = "pencil",
                               cb_type = "tls-exporter", cb_data = "client-side-tls" },
                             { mechanism = mech, cb_type = "tls-exporter", cb_data = "server-side-tls" })
        assert.is_nil(log.ok)
        assert.same({ "channel binding does not match", "not-authorized", step = 2 }, log.server_error)
      end)
    end

    it("an unsupported binding type fails at the first step", function()
      local log = exchange({ mechanism = "SCRAM-SHA-256-PLUS", username = "user", password = "pencil",
                             cb_type = "tls-server-end-point", cb_data = "x" },
                           { mechanism = "SCRAM-SHA-256-PLUS", cb_type = "tls-exporter", cb_data = "x" })
      assert.same({ "unsupported channel binding type", "not-authorized", step = 1 }, log.server_error)
    end)

    it("a server may check several binding types", function()
      local log = exchange({ mechanism = "SCRAM-SHA-256-PLUS", username = "user", password = "pencil",
                             cb_type = "tls-server-end-point", cb_data = "cert-hash" },
                           { mechanism = "SCRAM-SHA-256-PLUS",
                             cb = { ["tls-exporter"] = "ekm", ["tls-server-end-point"] = "cert-hash" } })
      assert.is_true(log.ok)
    end)

    it("refuses the downgrade: 'y' when the server offers -PLUS", function()
      local copts = { mechanism = "SCRAM-SHA-256", username = "user", password = "pencil",
                      cb_type = "tls-exporter", cb_data = "x" }
      local log = exchange(copts, { mechanism = "SCRAM-SHA-256", offers_plus = true })
      assert.equal("not-authorized", log.server_error[2])
      assert.matches("downgrade", log.server_error[1])
      assert.equal(1, log.server_error.step)
      -- and where the server really offers no -PLUS, 'y' is fine
      log = exchange(copts, { mechanism = "SCRAM-SHA-256", offers_plus = false })
      assert.is_true(log.ok)
    end)

    it("refuses gs2 'p' with a mechanism without -PLUS", function()
      local s = make_server{ mechanism = "SCRAM-SHA-256", offers_plus = true }
      expect_fail("malformed-request", "without %-PLUS", s:step("p=tls-exporter,,n=user,r=abc"))
    end)

    it("refuses a -PLUS mechanism without binding ('n' or 'y')", function()
      for _, flag in ipairs({ "n", "y" }) do
        local s = make_server{ mechanism = "SCRAM-SHA-256-PLUS", cb_type = "tls-exporter", cb_data = "x" }
        expect_fail("malformed-request", "without channel binding", s:step(flag .. ",,n=user,r=abc"))
      end
    end)

    it("refuses c= that does not repeat the gs2 header", function()
      local s = make_server{ mechanism = "SCRAM-SHA-1", nonce = "srv" }
      local first = s:step("y,,n=user,r=abc")
      assert.equal("r=abcsrv", first:match("^(r=[^,]+)"))
      expect_fail("not-authorized", "channel binding does not match",
                  s:step("c=biws,r=abcsrv,p=" .. b64(("x"):rep(20))))
    end)
  end)

  describe("unknown user and wrong password look the same", function()
    local store = { alice = core.sasl_credentials("secret", "SHA-256", 4096) }
    local function attempt(user, password)
      local c = assert(core.sasl_client{ mechanism = "SCRAM-SHA-256", username = user, password = password })
      local s = core.sasl_server{ mechanism = "SCRAM-SHA-256", secret = SECRET,
                                  lookup = function(u) return store[u] end }
      local first, done = s:step(c:step())
      assert.is_false(done)
      local salt, iter = first:match("^r=[^,]+,s=([^,]+),i=(%d+)$")
      local r = compat.pack(s:step(c:step(first)))
      return { salt = unb64(salt), iter = tonumber(iter), result = r, server = s }
    end

    it("same condition, same message, same server-first shape", function()
      local wrong = attempt("alice", "guess")
      local unknown = attempt("mallory", "guess")
      assert.same({ n = 3, nil, "authentication failed", "not-authorized" }, wrong.result)
      assert.same(wrong.result, unknown.result)
      assert.equal(#wrong.salt, #unknown.salt)
      assert.equal(16, #unknown.salt)
      assert.equal(wrong.iter, unknown.iter)
      assert.is_nil(unknown.server:username())
      assert.is_nil(wrong.server:username())
    end)

    it("an unknown user's salt is stable, like a real one's", function()
      assert.equal(attempt("mallory", "a").salt, attempt("mallory", "b").salt)
      assert.is_not.equal(attempt("mallory", "a").salt, attempt("eve", "a").salt)
      assert.equal(attempt("alice", "a").salt, attempt("alice", "b").salt)
    end)

    it("without a secret option, the state's own secret keeps it stable", function()
      local function salt_of(user)
        local s = core.sasl_server{ mechanism = "SCRAM-SHA-1", lookup = function() return nil end }
        return s:step("n,,n=" .. user .. ",r=abc"):match("s=([^,]+)")
      end
      assert.equal(salt_of("mallory"), salt_of("mallory"))
      assert.is_not.equal(salt_of("mallory"), salt_of("eve"))
    end)

    it("the fake iteration count follows the iterations option", function()
      local s = core.sasl_server{ mechanism = "SCRAM-SHA-1", secret = SECRET, iterations = 10000,
                                  lookup = function() return nil end }
      assert.matches(",i=10000$", (s:step("n,,n=nobody,r=abc")))
    end)

    it("even the right proof for the fake keys cannot succeed", function()
      -- whatever the client sends, an unknown user fails at the last step
      local s = make_server({ mechanism = "SCRAM-SHA-1", nonce = "srv" }, {})
      local first = s:step("n,,n=user,r=abc")
      assert.equal("r=abcsrv", first:match("^(r=[^,]+)"))
      expect_fail("not-authorized", "^authentication failed$", s:step("c=biws,r=abcsrv,p=" .. b64(("\0"):rep(20))))
    end)

    it("credentials for another hash count as none", function()
      local sha1 = core.sasl_credentials("pencil", "SHA-1", 4096)
      local s = core.sasl_server{ mechanism = "SCRAM-SHA-256", secret = SECRET, lookup = function() return sha1 end }
      local c = assert(core.sasl_client{ mechanism = "SCRAM-SHA-256", username = "user", password = "pencil" })
      local first = s:step(c:step())
      expect_fail("not-authorized", "^authentication failed$", s:step(c:step(first)))
    end)
  end)

  describe("refuses a hostile client", function()
    local function server_after_first(first)
      local s = make_server{ mechanism = "SCRAM-SHA-1", nonce = "srv", realm = "example.org" }
      local sf, msg, cond = s:step(first or "n,,n=user,r=abc")
      assert(sf, msg, cond)
      return s, sf
    end

    local client_first_cases = {
      { "a bad gs2 flag", "x,,n=user,r=abc", "malformed-request", "gs2 header" },
      { "a missing gs2 header", "n=user,r=abc", "malformed-request", "gs2 header" },
      { "an empty message", "", "malformed-request", "empty" },
      { "reserved m=", "n,,m=x,n=user,r=abc", "malformed-request", "reserved" },
      { "m= as an extension", "n,,n=user,r=abc,m=x", "malformed-request", "reserved" },
      { "a missing nonce", "n,,n=user", "malformed-request", "r=" },
      { "an empty nonce", "n,,n=user,r=", "malformed-request", "r=" },
      { "a nonce with a space", "n,,n=user,r=a b", "malformed-request", "r=" },
      { "an empty username", "n,,n=,r=abc", "malformed-request", "n=" },
      { "a bad escape in the username", "n,,n=a=2Xb,r=abc", "malformed-request", "bad username" },
      { "a prohibited username", "n,,n=a\7b,r=abc", "malformed-request", "SASLprep" },
      { "an authzid for someone else", "n,a=admin,n=user,r=abc", "invalid-authzid", "authorization identity" },
      { "an authzid at another realm", "n,a=user@evil.example,n=user,r=abc", "invalid-authzid", "identity" },
      { "an empty a=", "n,a=,n=user,r=abc", "malformed-request", "authzid" },
      { "a bad binding type name", "p=tls exporter,,n=user,r=abc", "malformed-request", "binding type" },
      { "invalid UTF-8", "n,,n=\255,r=abc", "malformed-request", "UTF%-8" },
    }
    for _, case in ipairs(client_first_cases) do
      it("client-first: " .. case[1], function()
        local s = make_server{ mechanism = "SCRAM-SHA-1", realm = "example.org" }
        expect_fail(case[3], case[4], s:step(case[2]))
        expect_fail(case[3], case[4], s:step("n,,n=user,r=abc")) -- stays failed
      end)
    end

    it("client-first: accepts authzid equal to the user, or user@realm", function()
      assert.is_string(select(2, server_after_first("n,a=user,n=user,r=abc")))
      assert.is_string(select(2, server_after_first("n,a=user@example.org,n=user,r=abc")))
    end)

    it("looks up the unescaped, SASLprep'd username", function()
      local seen
      local s = core.sasl_server{ mechanism = "SCRAM-SHA-1", secret = SECRET,
                                  lookup = function(u) seen = u end }
      s:step("n,,n=a=2Cb=3D\194\173c,r=abc")
      assert.equal("a,b=c", seen)
    end)

    local P = ",p=" .. b64(("\0"):rep(20))
    local client_final_cases = {
      { "a nonce that is not the combined one", "c=biws,r=abc" .. P, "not-authorized", "nonce mismatch" },
      { "a longer nonce", "c=biws,r=abcsrvx" .. P, "not-authorized", "nonce mismatch" },
      { "c= for another gs2 header", "c=eSws,r=abcsrv" .. P, "not-authorized", "channel binding" },
      { "c= not base64", "c=biw,r=abcsrv" .. P, "incorrect-encoding", "base64" },
      { "p= not base64", "c=biws,r=abcsrv,p=AAAA*", "incorrect-encoding", "proof" },
      { "p= of the wrong length", "c=biws,r=abcsrv,p=" .. b64("short"), "malformed-request", "length" },
      { "p= not last", "c=biws,r=abcsrv" .. P .. ",x=1", "malformed-request", "not the last" },
      { "no p=", "c=biws,r=abcsrv", "malformed-request", "missing p=" },
      { "reserved m=", "c=biws,r=abcsrv,m=x" .. P, "malformed-request", "reserved" },
      { "r= first", "r=abcsrv,c=biws" .. P, "malformed-request", "c=" },
      { "a wrong proof", "c=biws,r=abcsrv" .. P, "not-authorized", "^authentication failed$" },
    }
    for _, case in ipairs(client_final_cases) do
      it("client-final: " .. case[1], function()
        local s = server_after_first()
        expect_fail(case[3], case[4], s:step(case[2]))
        assert.is_nil(s:username())
      end)
    end

    it("parses extensions between r= and p= (and the proof covers them)", function()
      local c = assert(core.sasl_client{ mechanism = "SCRAM-SHA-1", username = "user", password = "pencil",
                                         nonce = "abc" })
      c:step()
      local s, sf = server_after_first()
      local final = c:step(sf)
      -- the proof covers the message without p=, so an extension changes it: the server must fail the proof
      local with_ext = final:gsub(",p=", ",x=ext,p=")
      expect_fail("not-authorized", "^authentication failed$", s:step(with_ext))
    end)
  end)

  describe("the lookup function", function()
    it("an error in it is raised, and the exchange stays failed", function()
      local s = core.sasl_server{ mechanism = "SCRAM-SHA-1", secret = SECRET,
                                  lookup = function() error("database down") end }
      assert.has_error(function() s:step("n,,n=user,r=abc") end)
      expect_fail("temporary-auth-failure", "lookup failed", s:step("c=biws,r=abc,p=AAAA"))
    end)

    it("a malformed result is misuse", function()
      local s = core.sasl_server{ mechanism = "SCRAM-SHA-1", secret = SECRET,
                                  lookup = function() return { salt = "x" } end }
      assert.has_error(function() s:step("n,,n=user,r=abc") end)
    end)

    it("cannot re-enter the server", function()
      local s
      s = core.sasl_server{ mechanism = "SCRAM-SHA-1", secret = SECRET,
                            lookup = function() s:step("x") end }
      assert.has_error(function() s:step("n,,n=user,r=abc") end)
    end)
  end)

  it("raises on misuse", function()
    local lookup = function() end
    assert.has_error(function() core.sasl_server{ mechanism = "PLAIN", lookup = lookup } end)
    assert.has_error(function() core.sasl_server{ mechanism = "SCRAM-SHA-1" } end)
    assert.has_error(function() core.sasl_server{ mechanism = "SCRAM-SHA-1", lookup = lookup, secret = "short" } end)
    assert.has_error(function() core.sasl_server{ mechanism = "SCRAM-SHA-1-PLUS", lookup = lookup } end)
    assert.has_error(function() core.sasl_server{ mechanism = "SCRAM-SHA-1", lookup = lookup, iterations = 100 } end)
    local s = core.sasl_server{ mechanism = "SCRAM-SHA-1", lookup = lookup }
    s:close()
    s:close()
    assert.has_error(function() s:step("n,,n=user,r=abc") end, "sasl server is closed")
  end)
end)
