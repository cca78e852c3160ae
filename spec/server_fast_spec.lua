-- XEP-0484 FAST on the embedded server, from a raw SASL2 client: the HT
-- mechanisms advertised per channel binding, a token issued on request
-- after a password login, one-round-trip logins with it (the server's
-- proof checked), tokens bound to account, user-agent and mechanism
-- (stolen, replayed and cross-account tokens fail), expiry, rotation,
-- invalidation, revocation on password change and account removal, the
-- per-account limit, persistence in SQLite, no login in TLS 0-RTT data (so
-- no `count` check), failures counted like any SASL
-- failure, and tokens never in the log.
local core = require "lxmpp.core"
local datetime = require "lxmpp.datetime"
local serve = require "spec.support.serve"
local sasl2 = require "spec.support.sasl2"

local USERS = sasl2.USERS
local NS_FAST = "urn:xmpp:fast:0"
local UA2 = "0b9e1d3c-5a7f-4e2b-8c6d-abcdefabcdef"
local CB = { ["HT-SHA-256-NONE"] = false, ["HT-SHA-256-EXPR"] = "tls-exporter",
  ["HT-SHA-256-ENDP"] = "tls-server-end-point", ["HT-SHA-256-UNIQ"] = "tls-unique" }

-- A password login (SCRAM) that asks for a token: the <token/>.
local function get_token(port, o)
  o = o or {}
  local r = sasl2.open(port)
  local s = sasl2.auth2(r, { user = o.user, ua = o.ua,
    inline = "<request-token xmlns='" .. NS_FAST .. "' mechanism='" .. (o.mechanism or "HT-SHA-256-NONE") .. "'/>" })
  assert.equal("success", s.name)
  r:close()
  return s:get_child("token", NS_FAST)
end

-- A FAST login on r (o: token, user, mechanism, ua (false: none), fast
-- (extra attributes XML of <fast/>), inline, cb_data (instead of this
-- connection's)): the <success/> or <failure/>. A success's proof is
-- checked.
local function fast_login(r, o)
  local mech = o.mechanism or "HT-SHA-256-NONE"
  local cb = ""
  if CB[mech] then cb = o.cb_data or assert(r.conn:channel_binding(CB[mech])) end
  local user = o.user or "alice"
  local ir = user .. "\0" .. core.hmac("sha256", o.token, "Initiator" .. cb)
  r:send("<authenticate xmlns='" .. sasl2.NS .. "' mechanism='" .. mech .. "'><initial-response>" ..
    core.base64_encode(ir) .. "</initial-response>" .. sasl2.ua_xml(o.ua) ..
    "<fast xmlns='" .. NS_FAST .. "'" .. (o.fast or "") .. "/>" .. (o.inline or "") .. "</authenticate>")
  local s = assert(r:stanza())
  if s.name == "success" then
    assert.equal(core.hmac("sha256", o.token, "Responder" .. cb),
      core.base64_decode(s:get_child_text("additional-data")), "the server's proof")
  end
  return s
end

local function try(port, o)
  local r = sasl2.open(port)
  local s = fast_login(r, o)
  r:close()
  return s
end

local function cond(s)
  assert.equal("failure", s.name)
  return (sasl2.failure_of(s))
end

describe("embedded server: FAST (XEP-0484)", function()
  it("advertises the HT mechanisms this connection can bind, and none with fast = false", function()
    serve.run({ users = USERS }, function(_, port)
      local r, f = sasl2.open(port)
      local fast = f:get_child("authentication", sasl2.NS):get_child("inline"):get_child("fast", NS_FAST)
      local list = {}
      for m in fast:childtags("mechanism") do list[#list + 1] = m:get_text() end
      assert.same({ "HT-SHA-256-EXPR", "HT-SHA-256-UNIQ", "HT-SHA-256-ENDP", "HT-SHA-256-NONE" }, list)
      r:close()
    end)
    serve.run({ users = USERS, fast = false }, function(_, port)
      local r, f = sasl2.open(port)
      assert.is_nil(f:get_child("authentication", sasl2.NS):get_child("inline"):get_child("fast", NS_FAST))
      local s = fast_login(r, { token = "x" })
      assert.equal("invalid-mechanism", cond(s))
      r:close()
    end)
  end)

  it("issues a token on request and logs in with it in one round trip, with Bind2", function()
    serve.run({ users = USERS }, function(_, port)
      local t = get_token(port)
      assert.truthy(#t.attr.token >= 32)
      local expiry = assert(datetime.parse(t.attr.expiry))
      assert.is_true(math.abs(expiry - (os.time() + 14 * 86400)) < 60)
      local r = sasl2.open(port)
      local s = fast_login(r, { token = t.attr.token, inline = "<bind xmlns='urn:xmpp:bind:0'><tag>f</tag></bind>" })
      assert.equal("success", s.name)
      assert.matches("^alice@example.test/f%.", s:get_child_text("authorization-identifier"))
      assert.is_nil(s:get_child("token", NS_FAST))        -- not due for rotation, not asked for
      assert.equal("features", assert(r:stanza()).name)
      r:close()
      -- and again: a token is not single-use
      assert.equal("success", try(port, { token = t.attr.token }).name)
    end)
  end)

  it("binds tokens to the channel with -EXPR and -ENDP: a proof from another connection fails", function()
    serve.run({ users = USERS, limits = { sasl_attempts = 10 } }, function(_, port)
      for _, mech in ipairs({ "HT-SHA-256-EXPR", "HT-SHA-256-ENDP", "HT-SHA-256-UNIQ" }) do
        local t = get_token(port, { mechanism = mech }).attr.token
        assert.equal("success", try(port, { token = t, mechanism = mech }).name, mech)
        if mech ~= "HT-SHA-256-ENDP" then       -- (the same certificate: the same end-point data)
          local other = sasl2.open(port)
          local s = try(port, { token = t, mechanism = mech, cb_data = other.conn:channel_binding(CB[mech]) })
          assert.equal("not-authorized", cond(s), mech)
          other:close()
        end
        -- a token is for the mechanism it was asked for
        assert.equal("not-authorized", cond(try(port, { token = t, mechanism = "HT-SHA-256-NONE" })), mech)
      end
    end)
  end)

  -- docs/performance.md, "Where a reconnection's instructions go": the
  -- stream offers the types it has (probed) and computes a type's data only
  -- when a login binds to it
  it("computes channel-binding data only for the type a login binds to", function()
    serve.run({ users = USERS }, function(_, port)
      local tokens = {       -- (one user-agent each: a new token replaces an unused one)
        ["HT-SHA-256-NONE"] = get_token(port).attr.token,
        ["HT-SHA-256-EXPR"] = get_token(port, { mechanism = "HT-SHA-256-EXPR", ua = UA2 }).attr.token,
      }
      local r = sasl2.open(port)
      local Conn = getmetatable(r.conn).__index
      local orig, computed = Conn.channel_binding, {}
      -- a probe says what the data call would give
      for _, t in ipairs({ "tls-exporter", "tls-server-end-point", "tls-unique", "tls-bogus" }) do
        assert.equal(orig(r.conn, t) ~= nil, orig(r.conn, t, true) == true, t)
      end
      r:close()
      Conn.channel_binding = function(c, t, probe)
        if not probe and c ~= r.conn then computed[#computed + 1] = t end
        return orig(c, t, probe)
      end
      local ok, err = pcall(function()
        r = sasl2.open(port)
        assert.equal("success", fast_login(r, { token = tokens["HT-SHA-256-NONE"] }).name)
        r:close()
        assert.same({}, computed)
        r = sasl2.open(port)
        assert.equal("success", fast_login(r, { token = tokens["HT-SHA-256-EXPR"], mechanism = "HT-SHA-256-EXPR",
          ua = UA2 }).name)
        r:close()
        assert.same({ "tls-exporter" }, computed)
      end)
      Conn.channel_binding = orig
      assert(ok, err)
    end)
  end)

  it("refuses stolen tokens: another account, another user-agent, none, a wrong token", function()
    serve.run({ users = USERS, limits = { sasl_attempts = 10 } }, function(_, port)
      local t = get_token(port).attr.token
      get_token(port, { user = "bob" })
      assert.equal("not-authorized", cond(try(port, { token = t, user = "bob" })))
      assert.equal("not-authorized", cond(try(port, { token = t, ua = UA2 })))
      assert.equal("not-authorized", cond(try(port, { token = t, ua = false })))
      assert.equal("not-authorized", cond(try(port, { token = t .. "x" })))
      assert.equal("not-authorized", cond(try(port, { token = t, user = "nobody" })))
      assert.equal("success", try(port, { token = t }).name)
    end)
  end)

  it("counts failed token logins against sasl_attempts, and refuses malformed ones", function()
    serve.run({ users = USERS }, function(_, port)
      local r = sasl2.open(port)
      r:send("<authenticate xmlns='" .. sasl2.NS .. "' mechanism='HT-SHA-256-NONE'/>")
      assert.equal("malformed-request", cond(assert(r:stanza())))
      r:send("<authenticate xmlns='" .. sasl2.NS .. "' mechanism='HT-SHA-256-NONE'><initial-response>" ..
        core.base64_encode("no separator") .. "</initial-response></authenticate>")
      assert.equal("malformed-request", cond(assert(r:stanza())))
      -- two malformed and three guesses: limits.sasl_attempts (5)
      for _ = 1, 3 do assert.equal("not-authorized", cond(fast_login(r, { token = "guess" }))) end
      assert.equal("policy-violation", (r:stream_error()))
    end)
  end)

  it("does not issue tokens without a user-agent id or for a mechanism not offered", function()
    serve.run({ users = USERS }, function(_, port)
      assert.is_nil(get_token(port, { ua = false }))
      assert.is_nil(get_token(port, { mechanism = "HT-SHA-512-NONE" }))
      assert.is_nil(get_token(port, { mechanism = "SCRAM-SHA-1" }))
    end)
  end)

  it("fails an expired token with credentials-expired", function()
    serve.run({ users = USERS }, function(srv, port)
      local t = get_token(port).attr.token
      local rec = srv.store:get("fast", "alice")
      for _, slot in pairs(rec) do slot.new.expiry = os.time() - 1 end
      srv.store:set("fast", "alice", rec, "alice")
      assert.equal("credentials-expired", cond(try(port, { token = t })))
      assert.is_nil(srv.store:get("fast", "alice"))        -- and it is gone
    end)
  end)

  it("rotates a token past half its life; the new one retires the old", function()
    serve.run({ users = USERS, limits = { sasl_attempts = 10 } }, function(srv, port)
      local t1 = get_token(port).attr.token
      assert.equal("success", try(port, { token = t1 }).name)   -- (t1 is now the current token)
      local rec = srv.store:get("fast", "alice")
      for _, slot in pairs(rec) do slot.current.expiry = os.time() + 3600 end
      srv.store:set("fast", "alice", rec, "alice")
      local s = try(port, { token = t1 })
      assert.equal("success", s.name)
      local t2 = assert(s:get_child("token", NS_FAST)).attr.token
      assert.not_equal(t1, t2)
      assert.equal("success", try(port, { token = t2 }).name)
      assert.equal("not-authorized", cond(try(port, { token = t1 })))
    end)
  end)

  -- XEP-0484 §"Client authenticates using FAST": 'count' exists for requests
  -- sent in TLS 0-RTT data, which an attacker can replay byte for byte; a
  -- server MUST reject a 0-RTT request without a count, or with one it has
  -- processed. Ours takes no 0-RTT data at all: the tickets it issues allow
  -- none (max_early_data 0), and RFC 8446 §4.2.10 forbids a client to send
  -- early data then, so every FAST request comes after the handshake. There
  -- a count guards nothing: the HT proof does not cover it, so whoever could
  -- replay a request could change or drop it; it is not checked.
  it("takes no FAST request in TLS 0-RTT: its tickets allow no early data, and count is not checked", function()
    local proc = require "spec.support.proc"
    local pki = require "spec.support.pki"
    local slow = require("spec.support.slow").factor
    serve.run({ users = USERS, tls_listen = "127.0.0.1:0" }, function(srv, port)
      local tls_port
      for _, a in ipairs(srv:addresses()) do if a.kind == "c2s-tls" then tls_port = a.port end end
      local t = get_token(port).attr.token
      local dir = pki.sh("mktemp -d /tmp/lxmpp-fast0rtt.XXXXXX"):gsub("%s+$", "")
      local sess, early = dir .. "/session.pem", dir .. "/early.xml"
      local f = assert(io.open(early, "w"))
      f:write("<?xml version='1.0'?><stream:stream to='example.test' xmlns='jabber:client' " ..
        "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'><authenticate xmlns='" .. sasl2.NS ..
        "' mechanism='HT-SHA-256-NONE'><initial-response>" ..
        core.base64_encode("alice\0" .. core.hmac("sha256", t, "Initiator")) .. "</initial-response>" ..
        sasl2.ua_xml() .. "<fast xmlns='" .. NS_FAST .. "' count='1'/></authenticate>")
      f:close()
      local function s_client(extra)
        local p = proc.start({ "sh", "-c", ("sleep %g | openssl s_client -connect 127.0.0.1:%d -tls1_3 " ..
          "-servername example.test -CAfile %s %s"):format(1 * slow, tls_port, pki.q(serve.pki().ca), extra) })
        local r = p:wait(20 * slow)
        assert.equal(0, r.code, r.out .. r.err)
        return r.out .. r.err
      end
      s_client("-sess_out " .. pki.q(sess))
      local text = pki.sh("openssl sess_id -in " .. pki.q(sess) .. " -noout -text")
      assert.matches("Protocol%s*: TLSv1%.3", text)
      assert.equal("0", text:match("Max Early Data: (%d+)"))
      -- a client that holds the ticket and wants to send its <authenticate/> early may not
      local out = s_client("-sess_in " .. pki.q(sess) .. " -early_data " .. pki.q(early))
      assert.matches("Reused, TLSv1%.3", out)
      assert.matches("Early data was not sent", out)
      assert.is_nil(out:find("<success", 1, true))
      os.execute(pki.NO_PRELOAD .. "rm -rf " .. pki.q(dir))
      -- after the handshake the same count twice is no replay: both log in
      assert.equal("success", try(port, { token = t, fast = " count='1'" }).name)
      assert.equal("success", try(port, { token = t, fast = " count='1'" }).name)
    end)
  end)

  it("invalidates a token on request, issuing none unless asked", function()
    serve.run({ users = USERS }, function(_, port)
      local t = get_token(port).attr.token
      local s = try(port, { token = t, fast = " invalidate='true'" })
      assert.equal("success", s.name)
      assert.is_nil(s:get_child("token", NS_FAST))
      assert.equal("not-authorized", cond(try(port, { token = t })))
    end)
  end)

  it("revokes every token of an account when its password changes or it is removed", function()
    serve.run({ users = USERS, limits = { sasl_attempts = 10 } }, function(srv, port)
      local t = get_token(port).attr.token
      assert(srv:set_password("alice", "new-pw"))
      assert.equal("not-authorized", cond(try(port, { token = t })))
      USERS.alice = "new-pw"
      local ok, err = pcall(function()
        t = get_token(port).attr.token
        assert.truthy(srv.store:get("fast", "alice"))
        assert(srv:remove_user("alice"))
        assert.is_nil(srv.store:get("fast", "alice"))
        assert(srv:add_user("alice", "new-pw"))
        assert.equal("not-authorized", cond(try(port, { token = t })))
      end)
      USERS.alice = "alice-pw"
      assert(ok, err)
    end)
  end)

  it("keeps tokens for at most fast_clients user-agents per account: the oldest goes", function()
    serve.run({ users = USERS, limits = { fast_clients = 2, sasl_attempts = 10 } }, function(_, port)
      local ids = { sasl2.UA, UA2, "11111111-2222-4333-8444-555555555555" }
      local tokens = {}
      for i, id in ipairs(ids) do tokens[i] = get_token(port, { ua = id }).attr.token end
      assert.equal("not-authorized", cond(try(port, { token = tokens[1], ua = ids[1] })))
      assert.equal("success", try(port, { token = tokens[2], ua = ids[2] }).name)
      assert.equal("success", try(port, { token = tokens[3], ua = ids[3] }).name)
    end)
  end)

  it("keeps tokens across a restart with SQLite", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    local path = dir .. "/lxmpp.db"
    local t
    serve.run({ users = USERS, storage = path }, function(_, port) t = get_token(port).attr.token end)
    serve.run({ storage = path }, function(_, port)
      assert.equal("success", try(port, { token = t }).name)
    end)
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("never logs a token or a proof", function()
    serve.run_logged({ users = USERS, log_level = "debug" }, function(_, port, log)
      local t = get_token(port).attr.token
      local r = sasl2.open(port)
      assert.equal("success", fast_login(r, { token = t, inline = "<bind xmlns='urn:xmpp:bind:0'/>" }).name)
      r:close()
      local proof = core.base64_encode("alice\0" .. core.hmac("sha256", t, "Initiator"))
      local all = table.concat(log, "\n")
      assert.truthy(all:find("authenticate", 1, true))        -- the debug log saw the exchange
      assert.is_nil(all:find(t, 1, true))
      assert.is_nil(all:find(proof, 1, true))
    end)
  end)
end)
