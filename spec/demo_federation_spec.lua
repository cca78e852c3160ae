-- `make demo-federation` (examples/demo_federation.lua), run as a user runs
-- it: its own CA and certificates, two servers routing to each other over
-- s2s, the SMS gateway reached from both domains (its subdomain federating),
-- every message of the conversation arriving, exit 0;
-- and exit 1 with a clear line when something fails (openssl refusing here).
local LUA = require "spec.support.lua_bin"
local sh = require "spec.support.sh"
local slow = require "spec.support.slow"

local ROOT = debug.getinfo(1, "S").source:match("^@(.*)/spec/") or "."
local SCRIPT = ROOT .. "/examples/demo_federation.lua"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function run(env)
  local wait = math.ceil(20 * slow.factor)
  return sh.popen_read(("%s LXMPP_DEMO_TIMEOUT=%d timeout %d %s %s 2>&1"):format(env or "", wait,
    6 * wait, LUA, q(SCRIPT)))
end

describe("make demo-federation (examples/demo_federation.lua)", function()
  it("routes the conversation across both domains and through the gateway, and says where", function()
    local out, code = run()
    assert.equal(0, code, out)
    local dir = out:match("from a demo CA, in (%S+)")
    assert.truthy(dir, out)
    assert.is_nil(io.open(dir .. "/ca.pem"), "the demo's certificates were left behind in " .. dir)
    -- the route comes up with certificates; europa answers over the same
    -- connection (XEP-0288 bidi, on by default on both servers)
    assert.matches("%[discovery%]  s2s: route from discovery%.nasa%.guv to europa%.nasa%.guv is up", out)
    assert.matches("%[europa%]     incoming stream from discovery%.nasa%.guv: authenticated by certificate", out)
    assert.matches("%[europa%]     s2s: the stream from discovery%.nasa%.guv carries our stanzas from "
      .. "europa%.nasa%.guv too %(bidi%)", out)
    -- each leg, as the servers saw it and as the recipient got it
    assert.matches("davidbowman@discovery%.…/terminal → HeywoodFloyd@europa%.…/base: from a client, "
      .. "send over s2s to europa%.nasa%.guv", out)
    assert.matches("arrived over s2s from discovery%.nasa%.guv, deliver to the account", out)
    assert.matches("HeywoodFloyd got from davidbowman@discovery%.…/terminal: \"Europa, this is Discovery", out)
    assert.matches("DavidBowman got from heywoodfloyd@europa%.…/base: \"Loud and clear", out)
    assert.matches("hand to the gateway sms%.discovery%.nasa%.guv", out)
    assert.matches("%[gateway%]    XMPP → SMS %+15550100", out)
    assert.matches("FrankPoole got from %+15550100@sms%.discovery%.…: \"Houston copies", out)
    -- the gateway from the other domain: both ways over s2s, the answer on
    -- a route of the gateway's own domain (over europa's
    -- connection: XEP-0288 bidi)
    assert.matches("heywoodfloyd@europa%.…/base → %+15550100@sms%.discovery%.…: arrived over s2s from "
      .. "europa%.nasa%.guv, hand to the gateway sms%.discovery%.nasa%.guv", out)
    assert.matches("%[europa%]     s2s: route from europa%.nasa%.guv to sms%.discovery%.nasa%.guv is up", out)
    assert.matches("%[discovery%]  s2s: the stream from europa%.nasa%.guv carries our stanzas from "
      .. "sms%.discovery%.nasa%.guv too %(bidi%)", out)
    assert.matches("arrived over s2s from sms%.discovery%.nasa%.guv, deliver to the account", out)
    assert.matches("HeywoodFloyd got from %+15550100@sms%.discovery%.…: \"Houston copies", out)
    assert.matches("demo finished\n$", out)
    assert.not_matches("FAILED", out)
  end)

  it("exits 1 and says why when a step fails", function()
    local bin = os.tmpname()
    os.remove(bin)
    assert(os.execute("mkdir " .. q(bin)))
    local f = assert(io.open(bin .. "/openssl", "w"))
    f:write("#!/bin/sh\necho 'openssl: refused for the test' >&2\nexit 1\n")
    f:close()
    assert(os.execute("chmod +x " .. q(bin .. "/openssl")))
    local out, code = run("PATH=" .. q(bin) .. ":\"$PATH\"")
    os.execute("rm -rf " .. q(bin))
    assert.equal(1, code, out)
    assert.matches("demo FAILED: command failed: openssl", out)
    assert.matches("openssl: refused for the test", out)
    assert.not_matches("demo finished", out)
  end)
end)
