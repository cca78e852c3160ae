-- The embedded server with poezio (Debian's poezio 0.14, on Debian's
-- slixmpp 1.8.3, run by /usr/bin/python3): spec/support/poezio_login.py logs
-- in through poezio's own connection class with poezio's defaults, as a
-- user starting poezio would (issue 12: before tls-unique was accepted,
-- every poezio login ended in a stream error after three refused SASL
-- attempts). The certificate is verified against the suite's test CA. A
-- missing poezio fails, never skips.
local pki = require "spec.support.pki"
local proc = require "spec.support.proc"
local server = require "spec.support.serve"
local assert_clean = require "spec.support.clean"

local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec/interop"
local SCRIPT = HERE .. "/../support/poezio_login.py"
local PYTHON = "/usr/bin/python3"

local USERS = { alice = "alice-pw" }

local function login(port, password)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. dir))
  local r = proc.start({ PYTHON, SCRIPT, "--port", tostring(port), "--ca", pki.get().ca, "--dir", dir,
    "alice@example.test", password or USERS.alice }):wait(50)
  os.execute("rm -rf " .. dir)
  r.recs = {}
  for line in r.out:gmatch("[^\n]+") do
    local f = {}
    for field in (line .. "\t"):gmatch("([^\t]*)\t") do f[#f + 1] = field end
    r.recs[f[1]] = f
  end
  r.text = ("exit %s\nstdout:\n%s\nstderr:\n%s"):format(tostring(r.code), r.out, r.err)
  return r
end

describe("embedded server with poezio", function()
  setup(function()
    local ok = os.execute(pki.NO_PRELOAD .. PYTHON .. " -c 'import poezio.connection' 2>/dev/null")
    if not ok then
      error("poezio is not installed for " .. PYTHON .. ": run `make deps` (Debian package poezio)")
    end
  end)
  after_each(assert_clean)

  it("logs poezio in with its defaults, SCRAM-SHA-256-PLUS bound to the TLS 1.3 connection", function()
    server.run_logged({ users = USERS }, function(_, port, log)
      local r = login(port)
      assert.equal(0, r.code, r.text)
      assert.matches("^1%.8%.", r.recs.version[2], r.text)          -- Debian 12's slixmpp
      assert.is_nil(r.recs.stream_error, r.text)
      assert.is_nil(r.recs.auth_failed, r.text)
      assert.same({ "mech", "SCRAM-SHA-256-PLUS" }, r.recs.mech, r.text)
      assert.same({ "tls", "TLSv1.3" }, r.recs.tls, r.text)
      assert.matches("^alice@example%.test/poezio%-", r.recs.jid[2], r.text)
      assert.truthy(server.logged(log, "authenticated as alice@example%.test"))
      assert.is_nil(server.logged(log, "too many failed authentication attempts"))
    end)
  end)

  it("still ends poezio's stream after five wrong passwords (limits.sasl_attempts)", function()
    -- its -PLUS attempts now reach the password check, so each counts
    server.run_logged({ users = USERS }, function(_, port, log)
      local r = login(port, "wrong")
      assert.equal(2, r.code, r.text)
      assert.is_nil(r.recs.mech, r.text)
      assert.same({ "auth_failed", ("not-authorized,"):rep(4) .. "not-authorized" }, r.recs.auth_failed, r.text)
      assert.same({ "stream_error", "policy-violation" }, r.recs.stream_error, r.text)
      assert.truthy(server.logged(log, "too many failed authentication attempts"))
      assert.is_nil(server.logged(log, "authenticated as"))
    end)
  end)
end)
