-- XEP-0030 discovery, XEP-0115 capabilities, XEP-0092/0202/0012 answers,
-- between two lxmpp clients on the embedded server: queries and answers with
-- nodes, our ver per §5 (the XEP's own examples), others' caps cached by ver
-- only when the answer hashes to it.
local lxmpp = require "lxmpp"
local st = lxmpp.stanza
local serve = require "spec.support.serve"
local caps = require "lxmpp.plugins.caps"
local disco = require "lxmpp.plugins.disco"
local listen = require "spec.support.listen"

local USERS = { alice = "alice-pw", bob = "bob-pw", mallory = "mallory-pw" }

local SIMPLE = [[<query xmlns='http://jabber.org/protocol/disco#info'>
  <identity category='client' name='Exodus 0.9.1' type='pc'/>
  <feature var='http://jabber.org/protocol/caps'/>
  <feature var='http://jabber.org/protocol/disco#info'/>
  <feature var='http://jabber.org/protocol/disco#items'/>
  <feature var='http://jabber.org/protocol/muc'/>
</query>]]

local COMPLEX = [[<query xmlns='http://jabber.org/protocol/disco#info'
    node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>
  <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>
  <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>
  <feature var='http://jabber.org/protocol/caps'/>
  <feature var='http://jabber.org/protocol/disco#info'/>
  <feature var='http://jabber.org/protocol/disco#items'/>
  <feature var='http://jabber.org/protocol/muc'/>
  <x xmlns='jabber:x:data' type='result'>
    <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>
    <field var='ip_version'><value>ipv6</value><value>ipv4</value></field>
    <field var='os'><value>Mac</value></field>
    <field var='os_version'><value>10.5.1</value></field>
    <field var='software'><value>Psi</value></field>
    <field var='software_version'><value>0.11</value></field>
  </x>
</query>]]

describe("XEP-0115 verification string", function()
  it("is the XEP's simple example (§5.2)", function()
    assert.equal("QgayPKawpkPSDYmwT/WM94uAlu0=", caps.ver(st.parse(SIMPLE)))
  end)

  it("is the XEP's complex example, extension form and all (§5.3)", function()
    local q = st.parse(COMPLEX)
    assert.equal("client/pc/el/Ψ 0.11<client/pc/en/Psi 0.11<http://jabber.org/protocol/caps<"
      .. "http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<"
      .. "http://jabber.org/protocol/muc<urn:xmpp:dataforms:softwareinfo<ip_version<ipv4<ipv6<os<Mac<"
      .. "os_version<10.5.1<software<Psi<software_version<0.11<", caps.string(q))
    assert.equal("q07IKJEyjvHSyhy//CH0CxmKi8w=", caps.ver(q))
  end)

  it("comes with the extension form read, its untyped multi-valued field included (XEP-0004 §3.3)", function()
    local info = disco.read_info(st.parse(COMPLEX))
    assert.equal(1, #info.forms)
    assert.equal("urn:xmpp:dataforms:softwareinfo", info.forms[1].form_type)
    assert.same({ "ipv6", "ipv4" }, info.forms[1].values.ip_version)
    assert.equal("Mac", info.forms[1].values.os)
  end)

  it("does not depend on the order of identities, features and forms", function()
    local shuffled = st.parse([[<query xmlns='http://jabber.org/protocol/disco#info'>
      <feature var='http://jabber.org/protocol/muc'/>
      <feature var='http://jabber.org/protocol/disco#items'/>
      <identity category='client' name='Exodus 0.9.1' type='pc'/>
      <feature var='http://jabber.org/protocol/disco#info'/>
      <feature var='http://jabber.org/protocol/caps'/></query>]])
    assert.equal("QgayPKawpkPSDYmwT/WM94uAlu0=", caps.ver(shuffled))
  end)

  it("refuses answers §5.4 says not to cache, and skips forms without a hidden FORM_TYPE", function()
    local dup_feature = st.parse(SIMPLE:gsub("</query>", "<feature var='http://jabber.org/protocol/muc'/></query>"))
    local ver, msg = caps.ver(dup_feature)
    assert.is_nil(ver)
    assert.matches("duplicate feature", msg)
    local dup_identity = st.parse(SIMPLE:gsub("</query>",
      "<identity category='client' name='Exodus 0.9.1' type='pc'/></query>"))
    assert.is_nil(caps.ver(dup_identity))
    local two_forms = COMPLEX:gsub("(<x .-</x>)", "%1%1")
    assert.matches("two extension forms", select(2, caps.ver(st.parse(two_forms))))
    local two_values = COMPLEX:gsub("<value>urn:xmpp:dataforms:softwareinfo</value>",
      "<value>urn:xmpp:dataforms:softwareinfo</value><value>urn:other</value>")
    assert.is_nil(caps.ver(st.parse(two_values)))
    -- a form whose FORM_TYPE is not hidden, or that has none, is left out
    local not_hidden = COMPLEX:gsub("var='FORM_TYPE' type='hidden'", "var='FORM_TYPE'")
    local no_form = SIMPLE:gsub("identity", "identity xml:lang='en'", 1):gsub("name='Exodus 0.9.1'", "name='Psi 0.11'")
    assert.equal(caps.string(st.parse(not_hidden)), caps.string(st.parse(COMPLEX:gsub("<x .-</x>", ""))))
    assert.truthy(caps.ver(st.parse(no_form)))
  end)
end)

describe("discovery between clients", function()
  it("answers disco#info about itself with identity, plugin features and extension forms", function()
    serve.run({ users = USERS }, function(_, port)
      local alice = assert(serve.login(port, "alice", "alice-pw", "bot"))
      local bob = assert(serve.login(port, "bob", "bob-pw"))
      alice:set_identity{ category = "client", type = "bot", name = "Dictionary" }
      alice:add_feature("urn:example:dict")
      alice:add_info_form(require("lxmpp.forms").new{
        { var = "FORM_TYPE", type = "hidden", value = "urn:xmpp:dataforms:softwareinfo" },
        { var = "software", value = "dictbot" },
      }:form(nil, "result"))
      local info = assert(bob:disco_info(alice.jid))
      assert.same({ { category = "client", type = "bot", name = "Dictionary" } }, info.identities)
      for _, f in ipairs({ "urn:example:dict", "urn:xmpp:ping", "jabber:iq:version", "urn:xmpp:time",
        "jabber:iq:last", "http://jabber.org/protocol/caps", "http://jabber.org/protocol/commands",
        "urn:xmpp:receipts", "http://jabber.org/protocol/chatstates", "urn:xmpp:sid:0",
        disco.NS_INFO, disco.NS_ITEMS }) do
        assert.is_true(info.features[f], f)
      end
      assert.equal("dictbot", info.forms[1].values.software)
      assert.same(alice:own_info().features, info.feature_list)
      alice:remove_feature("urn:example:dict")
      assert.is_nil(assert(bob:disco_info(alice.jid)).features["urn:example:dict"])
      -- the server's own info, and its items
      local server = assert(bob:disco_info())
      assert.is_true(server.features["urn:xmpp:ping"])
      assert.is_table(assert(bob:disco_items()))
      alice:close()
      bob:close()
    end)
  end)

  it("answers nodes through their handlers, item-not-found for unknown ones", function()
    serve.run({ users = USERS }, function(_, port)
      local alice = assert(serve.login(port, "alice", "alice-pw", "bot"))
      local bob = assert(serve.login(port, "bob", "bob-pw"))
      local asked
      alice:disco_node("urn:example:rooms", function(from, kind)
        asked = from
        if kind == "items" then return { { jid = "lobby@conference.example.test", name = "Lobby" } } end
        return { identities = { { category = "hierarchy", type = "branch" } }, features = { "urn:example:x" } }
      end)
      local items = assert(bob:disco_items(alice.jid, "urn:example:rooms"))
      assert.same({ { jid = "lobby@conference.example.test", name = "Lobby" } }, items)
      assert.equal(bob.jid, asked)
      local info = assert(bob:disco_info(alice.jid, "urn:example:rooms"))
      assert.equal("urn:example:rooms", info.node)
      assert.equal("branch", info.identities[1].type)
      assert.is_true(info.features["urn:example:x"])
      local r, _, cond = bob:disco_info(alice.jid, "urn:example:nothing")
      assert.is_nil(r)
      assert.equal("item-not-found", cond)
      r, _, cond = bob:disco_items(alice.jid, "urn:example:nothing")
      assert.is_nil(r)
      assert.equal("item-not-found", cond)
      -- and the caps node#ver is ourselves
      local own = assert(bob:disco_info(alice.jid, alice.caps_node .. "#" .. alice:caps_ver()))
      assert.is_true(own.features["urn:xmpp:ping"])
      assert.has_error(function() bob:disco_info(42) end)
      alice:close()
      bob:close()
    end)
  end)

  it("answers version, time and last activity (to the account and contacts only)", function()
    serve.run({ users = USERS }, function(_, port)
      local alice = assert(serve.login(port, "alice", "alice-pw", "bot", { software = { name = "dictbot",
        version = "2.0" } }))
      local alice2 = assert(serve.login(port, "alice", "alice-pw", "phone"))
      local bob = assert(serve.login(port, "bob", "bob-pw"))
      local v = assert(bob:version(alice.jid))
      assert.equal("dictbot", v.name)
      assert.equal("2.0", v.version)
      local t = assert(bob:time(alice.jid))
      assert.is_true(math.abs(t.utc - os.time()) <= 2)
      assert.matches("^[+-]%d%d:%d%d$", t.tzo)
      local server_time = assert(bob:time("example.test"))
      assert.is_true(math.abs(server_time.utc - os.time()) <= 2)
      lxmpp.sleep(2.1)
      local seconds = assert(alice2:last_activity(alice.jid))
      assert.is_true(seconds >= 2)
      alice:send_message(bob.jid, "hello")
      assert.is_true(assert(alice2:last_activity(alice.jid)) < 2)
      local r, _, cond = bob:last_activity(alice.jid)
      assert.is_nil(r)
      assert.equal("forbidden", cond)
      -- a contact with a subscription to alice may know
      alice.roster.items = { ["bob@example.test"] = { jid = "bob@example.test", subscription = "from" } }
      assert.is_number((bob:last_activity(alice.jid)))
      alice:close()
      alice2:close()
      bob:close()
    end)
  end)
end)

describe("XEP-0115 capabilities between clients", function()
  local function directed(from, to)
    assert(from:send(st.presence({ to = to.jid })))
  end

  it("sends caps in presence and caches a peer's after verifying the hash", function()
    serve.run({ users = USERS }, function(_, port)
      local alice = assert(serve.login(port, "alice", "alice-pw", "bot"))
      local bob = assert(serve.login(port, "bob", "bob-pw"))
      alice:add_feature("urn:example:caps-test-" .. tostring(os.time()))
      local got = listen(bob, "caps")
      local pres = listen(bob, "presence")
      directed(alice, bob)
      local p = pres:next()
      local c = p:get_child("c", caps.NS_CAPS)
      assert.equal("sha-1", c.attr.hash)
      assert.equal(alice:caps_ver(), c.attr.ver)
      assert.equal(alice.caps_node, c.attr.node)
      assert.equal(alice.caps.node, alice.caps_node)
      local from, info = got:next()
      assert.equal(alice.jid, from)
      assert.is_true(info.features["urn:xmpp:ping"])
      assert.equal(info, bob:caps_info(alice.jid))
      assert.equal(info, caps.cached("sha-1", alice:caps_ver()))
      -- a second announcement of the same ver is answered from the cache
      local queries = 0
      alice:on("iq", function(iq) if iq:get_child("query", disco.NS_INFO) then queries = queries + 1 end end)
      directed(alice, bob)
      assert.equal(alice.jid, (got:next()))
      assert.equal(0, queries)
      -- unavailable forgets who announced what
      assert(alice:send(st.presence({ to = bob.jid, type = "unavailable" })))
      assert.is_true(serve.until_true(function() return bob:caps_info(alice.jid) == nil end))
      alice:close()
      bob:close()
    end)
  end)

  -- mallory announces ver and answers disco#info on node#ver with `answer`
  -- (disco.info_query's tables); counts the queries she gets
  local function announce(who, ver, answer, node)
    node = node or "urn:example:" .. who.jid:match("^%w+")
    who:disco_node(node .. "#" .. ver, function() return answer end)
    assert(who:send(st.presence({ to = "bob@example.test/r" }):tag("c", { xmlns = caps.NS_CAPS, hash = "sha-1",
      node = node, ver = ver }):up()))
  end

  it("caches under a verified ver only what the hash covers: no form without a hidden FORM_TYPE (§5.4 3.6), "
    .. "no field types, labels or titles", function()
    serve.run({ users = USERS }, function(_, port)
      local mallory = assert(serve.login(port, "mallory", "mallory-pw", "m"))
      local alice = assert(serve.login(port, "alice", "alice-pw", "a"))
      local bob = assert(serve.login(port, "bob", "bob-pw"))
      local got = listen(bob, "caps")
      local unique = "urn:example:covered-" .. tostring(os.time()) .. "-" .. tostring(math.random(1e9))
      local function softwareinfo(with_extras)
        local x = st.stanza("x", { xmlns = "jabber:x:data", type = "result" })
        if with_extras then x:text_tag("title", "Trust me") end
        x:tag("field", { var = "FORM_TYPE", type = "hidden" }):text_tag("value", "urn:xmpp:dataforms:softwareinfo"):up()
        x:tag("field", { var = "software", type = with_extras and "list-multi" or nil,
          label = with_extras and "Download from evil.example" or nil }):text_tag("value", "Psi"):up()
        x:tag("field", { var = "ip_version" }):text_tag("value", "ipv6"):text_tag("value", "ipv4"):up()
        return x
      end
      local legit = { identities = { { category = "client", type = "pc", name = "Legit" } },
        features = { "http://jabber.org/protocol/caps", unique }, forms = { softwareinfo(false) } }
      local ver = assert(caps.ver(disco.info_query(legit)))
      -- mallory's answer hashes to the same ver: forms §5.4 ignores, and
      -- types, labels, a title, which the hash does not cover
      local poisoned = { identities = legit.identities, features = legit.features, forms = {
        softwareinfo(true),
        st.stanza("x", { xmlns = "jabber:x:data", type = "result" })
          :tag("field", { var = "download-url" }):text_tag("value", "https://evil.example/update.exe"):up(),
        st.stanza("x", { xmlns = "jabber:x:data", type = "result" })
          :tag("field", { var = "FORM_TYPE" }):text_tag("value", "urn:example:not-hidden"):up()
          :tag("field", { var = "download-url" }):text_tag("value", "https://evil.example/update.exe"):up(),
      } }
      assert.equal(ver, caps.ver(disco.info_query(poisoned)))
      announce(mallory, ver, poisoned)
      local from, info = got:next()
      assert.equal(mallory.jid, from)
      assert.equal(info, caps.cached("sha-1", ver))
      assert.equal(1, #info.forms)                           -- the form with a hidden FORM_TYPE only
      local form = info.forms[1]
      assert.equal("urn:xmpp:dataforms:softwareinfo", form.form_type)
      assert.is_nil(form.title)
      assert.same({ FORM_TYPE = "urn:xmpp:dataforms:softwareinfo", software = "Psi",
        ip_version = { "ipv4", "ipv6" } }, form.values)      -- S's order; "software" a plain string
      for _, f in ipairs(form) do assert.is_nil(f.label) end
      assert.same({ { category = "client", type = "pc", name = "Legit" } }, info.identities)
      assert.same({ "http://jabber.org/protocol/caps", unique }, info.feature_list)
      -- alice's legitimate announcement of that ver reads what the hash covers
      announce(alice, ver, legit)
      from, info = got:next()
      assert.equal(alice.jid, from)
      assert.equal(info, bob:caps_info(alice.jid))
      assert.equal(1, #info.forms)
      assert.is_nil(info.forms[1].values["download-url"])
      for _, c in ipairs({ mallory, alice, bob }) do c:close() end
    end)
  end)

  it("does not cache an answer whose strings could make another answer's S ('<' in them, '/' in an "
    .. "identity's category, type or lang, an empty category or type): the legitimate answer is cached later",
    function()
    serve.run({ users = USERS }, function(_, port)
      local mallory = assert(serve.login(port, "mallory", "mallory-pw", "m"))
      local alice = assert(serve.login(port, "alice", "alice-pw", "a"))
      local bob = assert(serve.login(port, "bob", "bob-pw"))
      local logged = {}
      bob.logger = function(level, msg) logged[#logged + 1] = level .. " " .. msg end
      local got = listen(bob, "caps")
      local queries = 0
      mallory:on("iq", function(iq) if iq:get_child("query", disco.NS_INFO) then queries = queries + 1 end end)
      local unique = "urn:example:lt-" .. tostring(os.time()) .. "-" .. tostring(math.random(1e9))
      local id = { category = "client", type = "pc", name = "Legit" }
      local features = { "a:feature", "http://jabber.org/protocol/caps", unique, "urn:xmpp:jingle:1",
        "urn:xmpp:omemo:2" }
      table.sort(features)
      local cases = {
        -- every feature in one, joined by '<': OMEMO and Jingle hidden
        { legit = { identities = { id }, features = features },
          poisoned = { identities = { id }, features = { table.concat(features, "<") } } },
        -- an identity posing as the feature http://jabber.org/protocol/caps (an empty type)
        -- (the first feature in S's order)
        { legit = { identities = { id }, features = { "http://jabber.org/protocol/caps", unique } },
          poisoned = { identities = { id, { category = "http:", type = "", lang = "jabber.org",
            name = "protocol/caps" } }, features = { unique } } },
        -- a '/' in an identity's lang: another name
        { legit = { identities = { { category = "client", type = "pc", name = "a/b" } }, features = { unique } },
          poisoned = { identities = { { category = "client", type = "pc", lang = "/a", name = "b" } },
            features = { unique } } },
        -- a '<' in a form's value: features become a form's
        { legit = { identities = { id }, features = { unique, "urn:xmpp:omemo:2" } },
          poisoned = { identities = { id }, features = { unique }, forms = { st.stanza("x",
            { xmlns = "jabber:x:data", type = "result" }):tag("field", { var = "FORM_TYPE", type = "hidden" })
            :text_tag("value", "urn:example:form"):up():tag("field", { var = "f" })
            :text_tag("value", "v<urn:xmpp:omemo:2"):up() } },
          -- (the legitimate answer with that form is the one whose S has the '<')
          legit_forms = true },
        -- no identity, a feature posing as one (XEP-0030 §3.1 wants an identity)
        { legit = { identities = { id }, features = { "urn:example:five", unique } },
          poisoned = { identities = {}, features = { "client/pc//Legit", "urn:example:five", unique } } },
        -- an identity and a feature that reads as another one: the feature hides it
        { legit = { identities = { id, { category = "pubsub", type = "pep" } }, features = { unique } },
          poisoned = { identities = { id }, features = { "pubsub/pep//", unique } } },
        -- the last feature posing as an empty extension form: OMEMO hidden
        { legit = { identities = { id }, features = { unique, "urn:xmpp:omemo:2" } },
          poisoned = { identities = { id }, features = { unique }, forms = { st.stanza("x",
            { xmlns = "jabber:x:data", type = "result" }):tag("field", { var = "FORM_TYPE", type = "hidden" })
            :text_tag("value", "urn:xmpp:omemo:2"):up() } } },
      }
      for i, case in ipairs(cases) do
        local ver = assert(caps.ver(disco.info_query(case.poisoned)))
        if not case.legit_forms then assert.equal(ver, caps.ver(disco.info_query(case.legit)), i) end
        announce(mallory, ver, case.poisoned, "urn:example:m" .. i)
        assert.is_true(serve.until_true(function() return queries == i end))
        lxmpp.sleep(0.1)
        assert.is_nil(caps.cached("sha-1", ver), i)
        assert.is_nil(bob:caps_info(mallory.jid), i)
        if not case.legit_forms then
          announce(alice, ver, case.legit, "urn:example:a" .. i)
          local from, info = got:next()
          assert.equal(alice.jid, from)
          assert.same(disco.read_info(disco.info_query(case.legit)).features, info.features)
          assert.same(info, caps.cached("sha-1", ver))
        end
      end
      got:none(0.1)
      local warned = 0
      for _, l in ipairs(logged) do if l:find("^warn caps from mallory.*ambiguous") then warned = warned + 1 end end
      assert.equal(#cases, warned)
      for _, c in ipairs({ mallory, alice, bob }) do c:close() end
    end)
  end)

  it("remembers at most caps.MAX_PEERS full JIDs' announcements per client; unavailable forgets one", function()
    serve.run({ users = USERS }, function(_, port)
      local saved = caps.MAX_PEERS
      caps.MAX_PEERS = 2
      local ok, err = pcall(function()
        local bob = assert(serve.login(port, "bob", "bob-pw"))
        local got = listen(bob, "caps")
        local others = {}
        for i = 1, 3 do
          others[i] = assert(serve.login(port, "alice", "alice-pw", "r" .. i))
          assert(others[i]:send(st.presence({ to = bob.jid })))
          assert.equal(others[i].jid, (got:next()))
        end
        assert.equal(2, bob.caps.of:count())
        assert.is_nil(bob:caps_info(others[1].jid))          -- the oldest, forgotten
        assert.is_table(bob:caps_info(others[2].jid))
        assert.is_table(bob:caps_info(others[3].jid))
        assert(others[3]:send(st.presence({ to = bob.jid, type = "unavailable" })))
        assert.is_true(serve.until_true(function() return bob.caps.of:count() == 1 end))
        for _, c in ipairs(others) do c:close() end
        bob:close()
      end)
      caps.MAX_PEERS = saved
      assert(ok, err)
    end)
  end)

  it("does not cache an answer that does not hash to the announced ver, nor a malformed ver", function()
    serve.run({ users = USERS }, function(_, port)
      local mallory = assert(serve.login(port, "mallory", "mallory-pw", "liar"))
      local bob = assert(serve.login(port, "bob", "bob-pw"))
      local events = 0
      bob:on("caps", function() events = events + 1 end)
      local queries = 0
      mallory:on("iq", function(iq) if iq:get_child("query", disco.NS_INFO) then queries = queries + 1 end end)
      -- a ver that names features mallory does not answer with
      local forged = st.parse(SIMPLE)
      local ver = caps.ver(forged)
      local victim_ver = "Zm9yZ2VkLXZlci0xMjM0NTY3OD0="       -- base64 of 20 bytes, not mallory's hash
      for _, v in ipairs({ victim_ver, ver }) do
        -- mallory answers on node#ver, with info that does not hash to it
        mallory:disco_node("urn:example:liar#" .. v, function() return mallory:own_info() end)
        assert(mallory:send(st.presence({ to = bob.jid }):tag("c", { xmlns = caps.NS_CAPS, hash = "sha-1",
          node = "urn:example:liar", ver = v }):up()))
      end
      assert.is_true(serve.until_true(function() return queries == 2 end))
      local answer = assert(bob:disco_info(mallory.jid, "urn:example:liar#" .. ver))   -- answered, yet
      assert.is_true(answer.features["urn:xmpp:ping"])
      lxmpp.sleep(0.2)
      assert.equal(0, events)
      assert.is_nil(caps.cached("sha-1", victim_ver))
      assert.is_nil(caps.cached("sha-1", ver))
      assert.is_nil(bob:caps_info(mallory.jid))
      -- malformed: not base64, wrong length, unknown hash: not even asked
      for _, c in ipairs({ { hash = "sha-1", ver = "not base64!" }, { hash = "sha-1", ver = "AAAA" },
        { hash = "md5", ver = victim_ver }, { ver = victim_ver } }) do
        c.xmlns, c.node = caps.NS_CAPS, "urn:example:liar"
        assert(mallory:send(st.presence({ to = bob.jid }):tag("c", c):up()))
      end
      lxmpp.sleep(0.3)
      assert.equal(3, queries)             -- two verifications and our own look
      assert.equal(0, events)
      mallory:close()
      bob:close()
    end)
  end)
end)
