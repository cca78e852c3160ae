-- Federation of several local domains (server/s2s.lua routes keyed by
-- local and remote domain): example.test serves a MUC service and a
-- pubsub service on subdomains; their stanzas to other.test go out over
-- streams authenticated for that subdomain (SASL EXTERNAL with a
-- certificate naming it, or Server Dialback checked with the subdomain's
-- authoritative server), and other.test's users join rooms and subscribe
-- to nodes there. Raw hostile streams check what the receiving side
-- accepts in the header and in dialback.
local lxmpp = require "lxmpp"
local core = require "lxmpp.core"
local st = require "lxmpp.stanza"
local pki = require "spec.support.pki"
local raw = require "spec.support.raw"
local serve = require "spec.support.serve"
local ev = require "spec.support.events"
local slow = require "spec.support.slow"

local s2sh = require "spec.support.s2s"

local A, B = s2sh.A, s2sh.B
local MUC, PUBSUB = "muc." .. A, "pubsub." .. A
local NS_TLS, NS_SASL = s2sh.NS_TLS, s2sh.NS_SASL
local NS_DB = s2sh.NS_DB -- luacheck: ignore 211
local port_of = s2sh.port_of

-- A started server of domain with certificate certname; extra: options on
-- top. Without XEP-0288 (s2s.bidi = false), so that each server's stanzas
-- go over a stream of its own and the specs below can say which stream
-- authenticated which domain (spec/server_s2s_bidi_spec.lua has them with it).
local function start(domain, certname, extra) -- luacheck: ignore 211
  return s2sh.start(domain, certname, { bidi = false }, extra)
end

-- Runs fn(a, b): example.test (certificate ca, options ea; MUC and pubsub
-- services) and other.test (certificate cb, options eb) federating, each
-- knowing where the other's domains are.
local function two(fn, ca, ea, cb, eb)
  s2sh.two(fn, { A, ca or "multidomain", { bidi = false }, { muc = MUC, pubsub = PUBSUB }, ea },
    { B, cb or "wrongname", { bidi = false }, eb }, { MUC, PUBSUB })
end

-- an available client of srv's domain
local function login(srv, user, insecure)
  local c = s2sh.login(srv, user, insecure)
  assert(c:send_presence())
  return c
end

local T = 10 * slow.factor

-- the room's groupchat with this body, heard by c
local function hears(c, body)
  return ev.expect(c, "muc-message", function(_, m) return m.body == body end, T)
end

-- a MUC room on example.test with alice@example.test, bob@other.test and
-- alice@other.test in it: groupchat and presence reach everyone
local function muc_across(a, b)
  local alice, bob, alice_b = login(a, "alice", true), login(b, "bob", true), login(b, "alice", true)
  local rj = "lobby@" .. MUC
  local room = assert(alice:muc_join(rj, "Alice"))
  local broom = assert(bob:muc_join(rj, "Bob", { timeout = T }))
  assert.equal("owner", broom.occupants.Alice.affiliation)        -- presence of a local occupant
  local aroom = assert(alice_b:muc_join(rj, "AliceB", { timeout = T }))
  assert.truthy(aroom.occupants.Bob)                               -- of a remote one
  assert.is_true(serve.until_true(function() return broom.occupants.AliceB ~= nil end, T))
  assert.equal("bob@" .. B .. "/r", room.occupants.Bob.jid)        -- the owner sees the real JID
  lxmpp.spawn(function() lxmpp.sleep(0.05); room:say("hello from A") end)
  assert(hears(bob, "hello from A"), "bob@other.test did not get the local occupant's message")
  local heard_b = ev.collect(alice_b, "muc-message")
  lxmpp.spawn(function() lxmpp.sleep(0.05); broom:say("hello from B") end)
  assert(hears(alice, "hello from B"), "the local occupant did not get bob's message")
  assert.is_true(serve.until_true(function()
    for _, e in ipairs(heard_b) do if e[2].body == "hello from B" then return true end end
  end, T), "a remote occupant did not get another remote one's message")
  return rj
end

describe("s2s: several local domains", function()
  it("a user of another server joins a MUC room here and talks with local and remote occupants", function()
    two(function(a, b)
      muc_across(a, b)
      -- the room's stanzas went over a stream of the MUC's own, SASL
      -- EXTERNAL with a certificate naming it; the users' over the main one
      local r = assert(a.s2s:route_to(B, MUC))
      assert.is_true(r.ready)
      assert.is_true(r.out.authenticated)
      assert.equal(MUC, r.out.local_domain)
      local peers = {}
      for _, d in pairs(b.s2s.incoming) do peers[d] = true end
      assert.is_true(peers[MUC])
      -- other.test's side: its stanzas to the room went over its route to the MUC domain
      assert.is_true(b.s2s:route_to(MUC).ready)
    end)
  end)

  it("a user of another server subscribes to a pubsub node here and gets its notifications", function()
    two(function(a, b)
      local alice, bob = login(a, "alice", true), login(b, "bob", true)
      assert(alice:pubsub_create(PUBSUB, "news"))
      local sub = assert(bob:pubsub_subscribe(PUBSUB, "news"))
      assert.same({ jid = "bob@" .. B, node = "news", subscription = "subscribed" }, sub)
      local heard = ev.collect(bob, "pubsub-item")
      local entry = st.stanza("entry", { xmlns = "http://www.w3.org/2005/Atom" }):text("first")
      assert.equal("one", alice:pubsub_publish(PUBSUB, "news", entry, "one"))
      assert.is_true(serve.until_true(function() return #heard == 1 end, T))
      assert.same({ PUBSUB, "news", "one" }, { heard[1][1], heard[1][2], heard[1][3].id })
      assert.equal("first", heard[1][3].payload:get_text())
      assert.is_true(a.s2s:route_to(B, PUBSUB).out.authenticated)
    end)
  end)

  it("a component here federates: its stanzas go out for its domain, remote users' reach it", function()
    local GW = "gw." .. A
    two(function(a, b)
      b:s2s_host(GW, "127.0.0.1:" .. port_of(a, "s2s"))
      local comp = lxmpp.component({ jid = GW, secret = "s3cret", host = "127.0.0.1", port = port_of(a, "component") })
      assert(comp:connect())
      local bob = login(b, "bob", true)
      comp:send(st.message({ from = "news@" .. GW, to = "bob@" .. B .. "/r", id = "g1" }):tag("body"):text("x"):up())
      local m = serve.expect(bob, "message", function(x) return x.attr.id == "g1" end, T)
      assert(m, "bob did not get the component's message")
      assert.equal("news@" .. GW, m.attr.from)
      assert.is_true(a.s2s:route_to(B, GW).out.authenticated)
      bob:send(st.message({ to = "news@" .. GW, id = "g2" }):tag("body"):text("y"):up())
      m = serve.expect(comp, "message", function(x) return x.attr.id == "g2" end, T)
      assert(m, "the component did not get bob's answer")
      assert.equal("bob@" .. B .. "/r", m.attr.from)
      comp:close()
    end, nil, { components = { ["gw." .. A] = "s3cret" }, component_listen = "127.0.0.1:0" })
  end)

  it("also over XEP-0288 bidirectional streams (one connection per pair of domains)", function()
    local bidi = { cafile = pki.get().ca, bidi = true }
    two(function(a, b)
      muc_across(a, b)
      -- example.test's MUC answers over the stream other.test opened to it
      local r = assert(a.s2s:route_to(B, MUC))
      assert.is_true(r.bidi)
      assert.equal(MUC, r.out.local_domain)
      assert.equal(B, r.out.peer)
    end, nil, { s2s = bidi }, nil, { s2s = bidi })
  end)

  it("a stanza of a domain not served here is not relayed to another: the routes stay up", function()
    two(function(a, b)
      local alice, bob = login(a, "alice", true), login(b, "bob", true)
      alice:send(st.message({ to = "bob@" .. B .. "/r", id = "r1" }):tag("body"):text("x"):up())
      assert(serve.expect(bob, "message", function(m) return m.attr.id == "r1" end, T))
      local route = a.s2s.routes[B]
      local seen = serve.collect(bob, "message")
      a:route(st.message({ from = "mallory@third.test/x", to = "bob@" .. B .. "/r", id = "r2" }):tag("body")
        :text("relayed"):up())
      alice:send(st.message({ to = "bob@" .. B .. "/r", id = "r3" }):tag("body"):text("y"):up())
      assert.is_true(serve.until_true(function() return #seen >= 1 end, T))
      lxmpp.sleep(0.1)
      assert.same({ "r3" }, { seen[1].attr.id, seen[2] and seen[2].attr.id })
      assert.equal(route, a.s2s.routes[B])          -- the same stream: the peer saw nothing to refuse
    end)
  end)

  it("a subdomain with a certificate of its own (s2s.certs) shows it both ways: SNI and client certificate",
    function()
    local p = pki.get()
    local w = p.certs.wildcard                  -- *.example.test; tls.cert ("good") names example.test only
    two(function(a, b)
      muc_across(a, b)
      assert.is_true(a.s2s:route_to(B, MUC).out.authenticated)      -- EXTERNAL with the wildcard certificate
      assert.is_true(b.s2s:route_to(MUC).out.authenticated)         -- B verified it for muc.example.test
      assert.is_true(a.s2s.routes[B] == nil or a.s2s.routes[B].out.authenticated)
    end, "good", { s2s = { cafile = p.ca, bidi = false, certs = { [MUC] = { cert = w.cert, key = w.key } } } })
  end)

  it("s2s.certs is checked", function()
    local function refused(certs, pattern)
      local ok, err = pcall(lxmpp.server, { domain = A, s2s = { certs = certs } })
      assert.is_false(ok)
      assert.matches(pattern, tostring(err))
    end
    refused("x", "s2s.certs must be a table")
    refused({ ["a@b"] = { cert = "c", key = "k" } }, "s2s.certs: \"a@b\" is not a domain")
    refused({ [MUC] = { cert = "c" } }, "s2s.certs%[\"muc.example.test\"%] needs cert and key")
  end)

  it("a subdomain authenticates by dialback where the certificate names only the main domain", function()
    local db = { cafile = pki.get().ca, dialback = true, bidi = false }
    two(function(a, b)
      muc_across(a, b)
      local r = assert(a.s2s:route_to(B, MUC))
      assert.is_true(r.out.authenticated)
      assert.equal("ready", r.out.stage)
    end, "good", { s2s = db }, "wrongname", { s2s = db })
  end)
end)

---------------------------------------------------------------------------
-- raw hostile streams against example.test (MUC and pubsub on subdomains)

local function s2s_header(from, to)
  return s2sh.header(from, to, true)
end

-- A raw server stream claiming from, opened to `to`, through STARTTLS with
-- certificate certname; returns it, the header we got back and the
-- features after TLS.
local function raw_tls(port, from, to, certname)
  local r, f, open = s2sh.raw_tls(port, { from = from, to = to, cert = certname, db = true, check_starttls = true })
  return r, open, f
end

describe("s2s: several local domains, hostile streams", function()
  local function with_a(fn, extra)
    s2sh.one(fn, { A, "multidomain", { bidi = false }, { muc = MUC, pubsub = PUBSUB }, extra })
  end

  it("a header to any domain served here is answered from that domain; to another, host-unknown", function()
    with_a(function(_, port)
      local r, open = raw_tls(port, B, MUC, "wrongname")
      assert.equal(MUC, open.from)
      r:send("<auth xmlns='" .. NS_SASL .. "' mechanism='EXTERNAL'>=</auth>")
      assert.equal("success", assert(r:stanza()).name)
      r = raw.connect(port)
      r:send(s2s_header(B, "nowhere.test"))
      assert.equal("host-unknown", (r:stream_error()))
      -- a restart may not switch to another of our domains
      r = raw.connect(port)
      r:send(s2s_header(B, MUC))
      assert.truthy(r:next().open)
      assert(r:stanza())
      r:send("<starttls xmlns='" .. NS_TLS .. "'/>")
      assert.equal("proceed", assert(r:stanza()).name)
      local p = pki.get()
      r.conn:starttls(assert(core.tls_context({ mode = "client", cafile = p.ca })), MUC)
      assert.truthy(r:next().tls)
      r:send(s2s_header(B, PUBSUB))
      assert.equal("host-unknown", (r:stream_error()))
    end)
  end)

  it("a stanza from a domain other than the one authenticated on this stream gets invalid-from", function()
    with_a(function(_, port)
      local r = raw_tls(port, B, MUC, "wrongname")
      r:send("<auth xmlns='" .. NS_SASL .. "' mechanism='EXTERNAL'>=</auth>")
      assert.equal("success", assert(r:stanza()).name)
      r.conn:restart()
      r:send(s2s_header(B, MUC))
      assert.truthy(r:next().open)
      assert(r:stanza())
      r:send("<presence from='bob@rooms." .. B .. "/r' to='lobby@" .. MUC .. "/Bob'/>")
      assert.equal("invalid-from", (r:stream_error()))
    end)
  end)

  it("answers dialback questions for each of its domains, and a key for a domain not served here is invalid",
    function()
    with_a(function(a, port)
      local r = raw_tls(port, B, MUC, "untrusted")
      local q = "<db:verify from='" .. B .. "' to='%s' id='s-1'>%s</db:verify>"
      r:send(q:format(MUC, a.s2s:dialback_key(B, MUC, "s-1")))
      local v = assert(r:stanza())
      assert.same({ "verify", "valid", MUC, B }, { v.name, v.attr.type, v.attr.from, v.attr.to })
      r:send(q:format(PUBSUB, a.s2s:dialback_key(B, MUC, "s-1")))    -- the MUC's key, for pubsub
      assert.equal("invalid", assert(r:stanza()).attr.type)
      r:send(q:format("third.test", a.s2s:dialback_key(B, "third.test", "s-1")))   -- we are not its authority
      assert.equal("invalid", assert(r:stanza()).attr.type)
    end, { s2s = { cafile = pki.get().ca, dialback = true } })
  end)

  it("a dialback claim for a domain not served here gets type='error' item-not-found", function()
    -- (a claim for another of our domains is multiplexing, XEP-0220 §2.6:
    -- spec/server_s2s_piggyback_spec.lua)
    with_a(function(_, port)
      local r = raw_tls(port, B, MUC, "untrusted")
      r:send("<db:result from='" .. B .. "' to='nowhere.test'>" .. ("ab"):rep(32) .. "</db:result>")
      local res = assert(r:stanza())
      assert.same({ "result", "error", "nowhere.test", B }, { res.name, res.attr.type, res.attr.from, res.attr.to })
      assert.equal("item-not-found", res.tags[1].tags[1].name)
      -- not a stream error (XEP-0220 §2.2.1): the stream goes on, and a
      -- stanza before any valid pair gets not-authorized (RFC 6120 §4.9.3.12)
      assert.same({ nil, "timeout" }, { r:stanza(0.2) })
      r:send("<presence from='x@" .. B .. "/r' to='lobby@" .. MUC .. "/x'/>")
      assert.equal("not-authorized", (r:stream_error(5 * slow.factor)))
    end, { s2s = { cafile = pki.get().ca, dialback = true } })
  end)
end)
