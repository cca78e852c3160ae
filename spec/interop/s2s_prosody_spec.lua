-- Federation with a real Prosody 0.12 (Debian's package) on loopback, both
-- directions: the embedded server serves other.test, Prosody example.test.
-- We find Prosody through s2s.hosts; Prosody finds us through DNS: it runs
-- in a private mount namespace whose resolv.conf names a loopback address
-- where spec/support/dnsd answers _xmpp-server._tcp.other.test with our
-- s2s port (spec/support/prosody.lua, option dns; root and unshare -m,
-- else the spec fails). Prosody's configuration is its defaults except
-- what the setup needs (ports, hosts, certificates, s2s_secure_auth).
--
-- Two setups:
-- * certificates: both servers have certificates of the suite's CA and
--   trust it; Prosody has s2s_secure_auth = true, so only SASL EXTERNAL
--   (RFC 6120 §6.3.4, XEP-0178) will do, both ways.
-- * dialback (XEP-0220): Prosody's certificate is self-signed (it does not
--   verify for us), Prosody does not trust the suite's CA (ours does not
--   verify for it), s2s_secure_auth = false; we enable s2s.dialback.
-- Covered: messages both ways (also with `lxmpp serve --config`), presence
-- subscriptions both ways, our user in Prosody's MUC, a Prosody user in
-- our MUC (a route of the MUC domain's own: MULTIDOMAIN).
local lxmpp = require "lxmpp"
local net = require "lxmpp.net"
local st = require "lxmpp.stanza"
local pki = require "spec.support.pki"
local prosody = require "spec.support.prosody"
local serve = require "spec.support.serve"
local clean = require "spec.support.clean"
local slow = require "spec.support.slow"
local free_port = require "spec.support.free_port"
local proc = require "spec.support.proc"
local interop = require "spec.support.s2s_interop"

local A, B = "other.test", "example.test"     -- ours, Prosody's
local MUC = "conference." .. B     -- Prosody's MUC component
local OUR_MUC = "rooms." .. A        -- ours
local T = 10 * slow.factor

local logged, has_presence = interop.logged, interop.has_presence

-- Our server as `lxmpp serve --config FILE` (bin/lxmpp) started with opts:
-- returns the process and its c2s port.
local function start_cli(opts)
  local path = os.tmpname()
  local function lua(v)
    if type(v) == "string" then return ("%q"):format(v) end
    if type(v) ~= "table" then return tostring(v) end
    local parts = {}
    for k, x in pairs(v) do parts[#parts + 1] = "[" .. lua(k) .. "] = " .. lua(x) end
    return "{ " .. table.concat(parts, ", ") .. " }"
  end
  local f = assert(io.open(path, "w"))
  f:write("return ", lua(opts), "\n")
  f:close()
  local cli = proc.lua({ proc.ROOT .. "/bin/lxmpp", "serve", "--config", path })
  local port, out = cli:wait_output("listening: c2s 127%.0%.0%.1:(%d+)")
  local ready = port and cli:wait_output("ready")
  os.remove(path)
  if not ready then
    local r = cli:wait(1)
    error("lxmpp serve did not start:\n" .. tostring(out) .. r.out .. r.err, 0)
  end
  return cli, tonumber(port)
end

-- federate(mode, fn[, cli]): Prosody and the embedded server federating in mode
-- "certs" or "dialback"; fn(ctx) with ctx.juliet (a Prosody account),
-- ctx.romeo (ours), ctx.srv, ctx.pro, ctx.log (our server's log lines).
-- With cli, our server is `lxmpp serve` in a process of its own (ctx.srv
-- is nil; its log is returned once it stopped). Returns Prosody's log and
-- ours (a string). Prosody's and our logs end the message of a failure.
local function federate(mode, fn, cli)
  local p = pki.get()
  local our_s2s = free_port()
  local zone = {
    ["_xmpp-server._tcp." .. A] = { SRV = { { 0, 0, our_s2s, "xmpp." .. A } } },
    ["_xmpp-server._tcp." .. OUR_MUC] = { SRV = { { 0, 0, our_s2s, "xmpp." .. A } } },
    ["xmpp." .. A] = { A = { "127.0.0.1" } },
  }
  local wildcard = p.certs.wildcard     -- *.example.test: the MUC's own name
  local s2s_opts = mode == "certs" and true or { secure_auth = false, suite_ca = false, cert = "selfsigned" }
  local pro = prosody.start({ users = { juliet = "juliet-pw" }, s2s = s2s_opts, dns = zone,
    components = { { MUC, "muc", "ssl = { certificate = " .. ("%q"):format(wildcard.cert) .. ", key = "
      .. ("%q"):format(wildcard.key) .. " }" } } })
  local log = {}
  local ok, err = pcall(lxmpp.run, function()
    -- other.test and *.other.test (our MUC); for dialback, Prosody does not trust the CA
    local cert = p.certs.othermulti
    local opts = { domain = A, muc = OUR_MUC, listen = "127.0.0.1:0", s2s_listen = "127.0.0.1:" .. our_s2s,
      log_level = "info", tls = { cert = cert.cert, key = cert.key }, users = { romeo = "romeo-pw" },
      s2s = { cafile = p.ca, dialback = mode == "dialback", hosts = {
        [B] = "127.0.0.1:" .. pro.s2s_port, [MUC] = "127.0.0.1:" .. pro.s2s_port } } }
    local srv, port
    if cli then
      cli, port = start_cli(opts)
    else
      opts.logger = function(level, msg) log[#log + 1] = level .. " " .. msg end
      srv = lxmpp.server(opts)
      assert(srv:start())
      port = srv:addresses()[1].port
    end
    local inner_ok, inner_err = pcall(function()
      local juliet = assert(lxmpp.connect({ jid = "juliet@" .. B .. "/r", password = "juliet-pw",
        host = "127.0.0.1", port = pro.port, cafile = pro.ca }))
      local romeo = assert(lxmpp.connect({ jid = "romeo@" .. A .. "/r", password = "romeo-pw",
        host = "127.0.0.1", port = port, cafile = p.ca }))
      fn({ juliet = juliet, romeo = romeo, srv = srv, pro = pro, log = log, ours = A, peer = B, T = T })
    end)
    require("spec.support.clients").kill_all()
    net.abort_all()
    if srv then srv:stop() end
    if cli then
      cli:signal("INT")
      local r = cli:wait(10 * slow.factor)
      for line in (r.out .. r.err):gmatch("[^\n]+") do log[#log + 1] = line end
      if inner_ok then
        inner_ok = r.code == 0
        inner_err = "lxmpp serve did not stop cleanly (exit " .. tostring(r.code) .. ")"
      end
    end
    lxmpp.sleep(0.05)
    if not inner_ok then error(inner_err, 0) end
  end)
  if cli and type(cli) == "table" then cli:kill(); cli:cleanup() end
  local plog = pro:log()
  pro:stop()
  if not ok then
    error(tostring(err) .. "\nour log:\n" .. table.concat(log, "\n"):sub(-4000)
      .. "\nprosody log:\n" .. plog:sub(-8000), 0)
  end
  clean()
  return plog, table.concat(log, "\n")
end

local messages_both_ways, subscriptions_both_ways = interop.messages_both_ways, interop.subscriptions_both_ways

-- A Prosody user joins a room on our MUC service (rooms.other.test): the
-- room's stanzas go to Prosody over a route of the MUC's own (its own
-- stream, authenticated for rooms.other.test), Prosody's over a stream it
-- opens to rooms.other.test (found through DNS). Groupchat both ways.
local function prosody_user_in_our_room(ctx)
  interop.peer_user_in_our_room(ctx, "capulet@" .. OUR_MUC)
  -- the MUC's own route, and Prosody's stream to the MUC domain
  local r = assert(ctx.srv.s2s:route_to(B, OUR_MUC))
  assert.is_true(r.ready and r.out.authenticated)
  assert.equal(OUR_MUC, r.out.local_domain)
  assert.truthy(logged(ctx.log, "route from rooms%.other%.test to example%.test is up"))
  local to_muc
  for s, d in pairs(ctx.srv.s2s.incoming) do
    if d == B and s.local_domain == OUR_MUC then to_muc = true end
  end
  assert.is_true(to_muc, "no incoming stream from " .. B .. " to " .. OUR_MUC)
end

describe("s2s interop with Prosody", function()
  describe("with certificates of the suite's CA (Prosody: s2s_secure_auth)", function()
    it("carries messages both ways, authenticated with SASL EXTERNAL both ways", function()
      local plog = federate("certs", function(ctx)
        messages_both_ways(ctx)
        assert.truthy(logged(ctx.log, "s2sin .* " .. B .. ": authenticated by certificate"),
          "Prosody did not authenticate to us with EXTERNAL")
        assert.is_nil(logged(ctx.log, "dialback"))
      end)
      -- our certificate was checked and EXTERNAL used to authenticate us
      assert.truthy(plog:find("Offering SASL EXTERNAL", 1, true), "Prosody offered no EXTERNAL")
      assert.truthy(plog:find("Initiating SASL EXTERNAL", 1, true) or plog:find("SASL EXTERNAL with", 1, true),
        "Prosody did not use EXTERNAL toward us")
    end)

    it("federates `lxmpp serve --config` (s2s options in the file) with Prosody: messages both ways", function()
      local plog, ours = federate("certs", messages_both_ways, true)
      assert.truthy(ours:find("s2sin [^\n]* " .. B .. ": authenticated by certificate"), ours)
      assert.truthy(plog:find("Initiating SASL EXTERNAL with " .. A, 1, true))
    end)

    it("carries presence subscriptions both ways: rosters on both sides, then presence", function()
      federate("certs", subscriptions_both_ways)
    end)

    it("lets our user join a room on Prosody's MUC and get its presence and groupchat", function()
      federate("certs", function(ctx)
        local juliet, romeo = ctx.juliet, ctx.romeo
        local ROOM = "verona@" .. MUC
        local NS_MUC = "http://jabber.org/protocol/muc"
        -- juliet makes the room (an instant room, XEP-0045 §10.1.2)
        local to_juliet = serve.collect(juliet, "presence")
        juliet:send(st.presence({ to = ROOM .. "/juliet" }):tag("x", { xmlns = NS_MUC }):up())
        assert.is_true(serve.until_true(function() return has_presence(to_juliet, ROOM .. "/juliet", nil) end, T))
        assert(juliet:request(st.iq({ type = "set", to = ROOM }):tag("query", { xmlns = NS_MUC .. "#owner" })
          :tag("x", { xmlns = "jabber:x:data", type = "submit" }):up():up(), T))
        -- romeo, on our server, joins over federation
        local to_romeo = serve.collect(romeo, "presence")
        local msgs = serve.collect(romeo, "message")
        romeo:send(st.presence({ to = ROOM .. "/romeo" }):tag("x", { xmlns = NS_MUC }):up())
        assert.is_true(serve.until_true(function() return has_presence(to_romeo, ROOM .. "/romeo", nil) end, T),
          "romeo got no self-presence from the room")
        assert.truthy(has_presence(to_romeo, ROOM .. "/juliet", nil), "romeo did not get juliet's occupant presence")
        local self_p = has_presence(to_romeo, ROOM .. "/romeo", nil)
        local codes = {}
        for s in self_p:get_child("x", NS_MUC .. "#user"):childtags("status") do
          codes[s.attr.code] = true
        end
        assert.is_true(codes["110"], "the self-presence carries status 110 (XEP-0045 §7.2.2)")
        juliet:send(st.message({ to = ROOM, type = "groupchat", id = "g1" }):tag("body"):text("wherefore"):up())
        assert.is_true(serve.until_true(function()
          for _, m in ipairs(msgs) do
            if m.attr.type == "groupchat" and m:get_child_text("body") == "wherefore" then
              return m.attr.from == ROOM .. "/juliet"
            end
          end
        end, T), "romeo did not get the groupchat message")
      end)
    end)

    it("lets a Prosody user join a room on our MUC service (its own route, EXTERNAL for the MUC domain)", function()
      local plog = federate("certs", function(ctx)
        prosody_user_in_our_room(ctx)
        assert.is_nil(logged(ctx.log, "dialback"))
      end)
      assert.truthy(plog:find("Initiating SASL EXTERNAL with " .. OUR_MUC, 1, true)
        or plog:find("example.test->" .. OUR_MUC .. " complete", 1, true), "Prosody did not reach our MUC domain")
    end)
  end)

  describe("with dialback (certificates that do not verify; Prosody: s2s_secure_auth = false)", function()
    it("carries messages both ways, authenticated by dialback both ways", function()
      local plog = federate("dialback", function(ctx)
        messages_both_ways(ctx)
        assert.truthy(logged(ctx.log, "s2sin .* " .. B .. ": authenticated by dialback"),
          "Prosody did not authenticate to us by dialback")
        assert.truthy(logged(ctx.log, "s2sout " .. B .. ": authenticated by dialback"),
          "we did not authenticate to Prosody by dialback")
        assert.is_nil(logged(ctx.log, "authenticated by certificate"))
      end)
      -- Prosody's side of it: it sent a key, and answered our question about it
      assert.is_nil(plog:find("SASL EXTERNAL", 1, true), "EXTERNAL was offered or used")
      assert.truthy(plog:find("Initiating dialback", 1, true), "Prosody did not use dialback toward us")
      assert.truthy(plog:find("verified dialback key... it is valid", 1, true),
        "Prosody did not check our db:verify question")
    end)

    it("carries presence subscriptions both ways, over streams authenticated by dialback", function()
      federate("dialback", function(ctx)
        subscriptions_both_ways(ctx)
        assert.truthy(logged(ctx.log, "s2sout " .. B .. ": authenticated by dialback"))
        assert.is_nil(logged(ctx.log, "authenticated by certificate"))
      end)
    end)

    it("lets a Prosody user join a room on our MUC service, the MUC domain authenticated by dialback", function()
      federate("dialback", function(ctx)
        prosody_user_in_our_room(ctx)
        assert.truthy(logged(ctx.log, "s2sout " .. B .. ": authenticated by dialback"))
        assert.is_nil(logged(ctx.log, "authenticated by certificate"))
      end)
    end)
  end)
end)
