-- Accounts and profiles: in-band registration (lua/lxmpp/plugins/register.lua),
-- vCards and avatars (lua/lxmpp/plugins/vcard.lua), against the embedded
-- server and Prosody.
local lxmpp = require "lxmpp"
local st = require "lxmpp.stanza"
local register = require "lxmpp.plugins.register"
local vcard = require "lxmpp.plugins.vcard"
local serve = require "spec.support.serve"
local prosody = require "spec.support.prosody"
local ev = require "spec.support.events"

local USERS = { alice = "alice-pw", bob = "bob-pw", carol = "carol-pw" }
local PNG = "\137PNG\r\n\26\n" .. ("\0\1\2\3"):rep(300)

local function scenarios(env)
  it("registers an account in band, changes its password and cancels it", function()
    env.run(function(server)
      local _
      local user = "dave" .. env.name
      local c, msg, cond = register.register(server.opts(user, "first-pw"))
      assert.is_truthy(c, msg)
      assert.is_nil(cond)
      assert.equal(user .. "@example.test/r", c.jid)
      c:close()
      -- the name is taken now
      local again
      again, msg, cond = register.register(server.opts(user, "other"))
      assert.is_nil(again)
      assert.is_string(msg)
      assert.equal("conflict", cond)
      c = assert(server.login(user, "first-pw"))
      assert.is_true(c:change_password("second-pw"))
      assert.equal("second-pw", c.opts.password)
      c:close()
      local old
      old, _, cond = server.login(user, "first-pw")
      assert.is_nil(old)
      assert.equal("not-authorized", cond)
      c = assert(server.login(user, "second-pw"))
      assert.is_true(c:unregister())
      assert.is_true(serve.until_true(function() return not c.online or c.conn.closed end, 5))
      c:close()
      local gone
      gone, _, cond = server.login(user, "second-pw")
      assert.is_nil(gone)
      assert.equal("not-authorized", cond)
      assert.has_error(function() register.register(server.opts(user, "x", { fields = { age = 5 } })) end)
      c = assert(server.login("alice", USERS.alice))
      assert.has_error(function() c:change_password("") end)
      c:close()
    end)
  end)

  it("stores and reads vCards, ours and others'", function()
    env.run(function(server)
      local a, b = assert(server.login("alice", USERS.alice)), assert(server.login("bob", USERS.bob))
      assert.is_true(a:vcard_set({
        fn = "Alice Example", nickname = "al", n = { given = "Alice", family = "Example" },
        email = { "alice@example.test", "al@work.example" }, tel = { "+1 555 0100" },
        org = { name = "Example Corp", unit = "Bots" }, url = "https://example.test/~alice",
        note = "writes <specs> & more", photo = { type = "image/png", data = PNG },
      }))
      for _, v in ipairs({ assert(a:vcard_get()), assert(b:vcard_get("alice@example.test/r")) }) do
        assert.equal("Alice Example", v.fn)
        assert.equal("al", v.nickname)
        assert.equal("Example", v.n.family)
        assert.same({ "alice@example.test", "al@work.example" }, v.email)
        assert.same({ "+1 555 0100" }, v.tel)
        assert.equal("Example Corp", v.org.name)         -- (Prosody keeps no ORGUNIT)
        assert.equal("writes <specs> & more", v.note)
        assert.equal("image/png", v.photo.type)
        assert.is_true(PNG == v.photo.data)
      end
      local empty = assert(b:vcard_get("carol@example.test"))
      assert.is_nil(empty.fn)
      assert.same({}, empty.email)
      assert.has_error(function() a:vcard_set({ fn = 5 }) end)
      assert.has_error(function() a:vcard_set({ photo = { data = "x" } }) end)
      assert.has_error(function() a:vcard_get("@@") end)
      a:close(); b:close()
    end)
  end)

  it("publishes an avatar after broadcast presence and announces it to the account's other resources", function()
    env.run(function(server)
      local a = assert(server.login("alice", USERS.alice))
      local a2 = assert(lxmpp.connect(server.opts("alice", USERS.alice, { jid = "alice@example.test/r2" })))
      assert(a2:send_presence())
      assert(a:send_presence())                       -- the client remembers it, to restore it on reconnection
      local announced = ev.collect(a2, "avatar")
      -- (the reconnection's copy of the presence and the avatar's must not collide)
      -- an image of its own: Prosody puts the hash of the vCard photo the other specs set
      -- in r2's own presence, and an unchanged hash is no news
      local hash = assert(a:avatar_publish(PNG .. "r2", "image/png"))
      assert.is_true(serve.until_true(function()
        for _, e in ipairs(announced) do if e[2] == hash and e[3] == a.jid then return true end end
      end, 5), "the new hash was not announced in a presence")
      a:close()
      a2:close()
    end)
  end)

  it("publishes an avatar, announces its hash in presence, and checks fetched avatars", function()
    env.run(function(server)
      local _
      local a, b = assert(server.login("alice", USERS.alice)), assert(server.login("bob", USERS.bob))
      assert(a:vcard_set({ fn = "Alice" }))
      local announced = ev.collect(b, "avatar")
      local function count(h)
        local n = 0
        for _, e in ipairs(announced) do if e[2] == h then n = n + 1 end end
        return n
      end
      assert(a:send(st.presence({ to = b.jid })))              -- no avatar yet: no hash from us
      local hash = assert(a:avatar_publish(PNG, "image/png"))
      assert.equal(vcard.sha1_hex(PNG), hash)
      assert.equal("Alice", assert(a:vcard_get()).fn)          -- the rest of the vCard is kept
      -- no broadcast presence was ever sent, so none is sent now
      assert.is_nil(ev.expect(b, "avatar", function(_, h) return h == hash end, 0.3))
      lxmpp.spawn(function() lxmpp.sleep(0.05); a:send(st.presence({ to = b.jid })) end)
      local got = ev.expect(b, "avatar", function(_, h) return h == hash end)
      assert.equal("alice@example.test", got[1])
      assert.equal(a.jid, got[3])
      local data, mime, h = b:avatar_get("alice@example.test")
      assert.is_true(data == PNG)
      assert.equal("image/png", mime)
      assert.equal(hash, h)
      -- the same hash again is no news
      assert(a:send(st.presence({ to = b.jid })))
      ev.settle(0.2)
      assert.equal(1, count(hash))
      -- a hash that does not match the vCard's photo: the fetched avatar is refused
      local wrong = ("ab"):rep(20)
      assert(a:send(st.presence({ to = b.jid }):tag("x", { xmlns = "vcard-temp:x:update" })
        :text_tag("photo", wrong):up()))
      assert.is_true(serve.until_true(function() return count(wrong) == 1 end))
      local none, msg, cond = b:avatar_get("alice@example.test")
      assert.is_nil(none)
      assert.is_string(msg)
      assert.equal("not-acceptable", cond)
      -- malformed hashes are ignored
      local before = #announced
      assert(a:send(st.presence({ to = b.jid }):tag("x", { xmlns = "vcard-temp:x:update" })
        :text_tag("photo", "not a hash"):up()))
      ev.settle(0.2)
      assert.equal(before, #announced)
      -- removing the avatar
      assert.equal("", a:avatar_publish(nil))
      lxmpp.spawn(function() lxmpp.sleep(0.05); a:send(st.presence({ to = b.jid })) end)
      got = ev.expect(b, "avatar", function(_, hh) return hh == "" end)
      assert.equal("", got[2])
      none, _, cond = b:avatar_get("alice@example.test")
      assert.is_nil(none)
      assert.equal("item-not-found", cond)
      a:close(); b:close()
    end)
  end)
end

describe("accounts on the embedded server", function()
  it("refuses to register where registration is off", function()
    serve.run({ users = USERS }, function(_, port)
      local c, msg, cond = register.register({ jid = "eve@example.test/r", password = "pw", host = "127.0.0.1",
        port = port, cafile = serve.pki().ca })
      assert.is_nil(c)
      assert.is_string(msg)
      assert.equal("feature-not-implemented", cond)
    end)
  end)
  it("never prints a password in debug mode: registration, password change, a room's password", function()
    serve.run({ users = USERS, registration = true }, function(_, port)
      local lines = {}
      local function opts(user, pw)
        return { jid = user .. "@example.test/r", password = pw, host = "127.0.0.1", port = port,
          cafile = serve.pki().ca, debug = true, logger = function(level, msg) lines[#lines + 1] = level .. " " .. msg end }
      end
      local c = assert(register.register(opts("frank", "first-Secret-1")))
      assert.is_true(c:change_password("second-Secret-2"))
      -- a room password (XEP-0045 §7.2.6), in a presence the client sends
      c:send(st.presence({ to = "room@conference.example.test/f" }):tag("x", { xmlns = "http://jabber.org/protocol/muc" })
        :text_tag("password", "room-Secret-3"))
      c:close()
      local all = table.concat(lines, "\n")
      assert.matches("OUT <iq", all, 1, true)                     -- debug mode did print stanzas
      assert.matches("<password>[redacted]</password>", all, 1, true)
      for _, secret in ipairs({ "first-Secret-1", "second-Secret-2", "room-Secret-3" }) do
        assert.is_nil(all:find(secret, 1, true), secret .. " was logged")
      end
    end)
  end)

  it("remembers at most vcard.MAX_HASHES announced avatar hashes per client, forgetting the oldest", function()
    serve.run({ users = USERS }, function(_, port)
      local saved = vcard.MAX_HASHES
      vcard.MAX_HASHES = 1
      local ok, err = pcall(function()
        local function login(user) return assert(serve.login(port, user, USERS[user])) end
        local b = login("bob")                       -- (loads vcard with the lowered bound)
        local a, c = login("alice"), login("carol")
        vcard.MAX_HASHES = saved
        local announced = ev.collect(b, "avatar")
        for i, who in ipairs({ a, c }) do
          assert(who:send(st.presence({ to = b.jid }):tag("x", { xmlns = "vcard-temp:x:update" })
            :text_tag("photo", ("%02d"):format(i):rep(20)):up()))
          assert.is_true(serve.until_true(function() return #announced == i end))
        end
        assert.equal(1, b.vcard.hashes:count())
        assert.is_nil(b.vcard.hashes:get("alice@example.test"))
        assert.equal(("02"):rep(20), b.vcard.hashes:get("carol@example.test"))
        a:close(); b:close(); c:close()
      end)
      vcard.MAX_HASHES = saved
      assert(ok, err)
    end)
  end)

  scenarios({
    name = "lx",
    run = function(fn)
      serve.run({ users = USERS, registration = true }, function(_, port)
        local function opts(user, pw, extra)
          local o = { jid = user .. "@example.test/r", password = pw, host = "127.0.0.1", port = port,
            cafile = serve.pki().ca }
          for k, v in pairs(extra or {}) do o[k] = v end
          return o
        end
        fn({ opts = opts, login = function(user, pw) return lxmpp.connect(opts(user, pw)) end })
      end)
    end,
  })
end)

describe("accounts on Prosody", function()
  local srv
  setup(function() srv = prosody.start({ users = USERS, registration = true }) end)
  teardown(function() if srv then srv:stop() end end)
  scenarios({
    name = "pr",
    run = function(fn)
      local function opts(user, pw, extra)
        local o = { jid = user .. "@example.test/r", password = pw, host = "127.0.0.1", port = srv.port, cafile = srv.ca }
        for k, v in pairs(extra or {}) do o[k] = v end
        return o
      end
      local ok, err = pcall(lxmpp.run, function()
        -- a failed assertion must not leave connections open: the loop would wait for them
        local fine, why = pcall(fn, { opts = opts, login = function(user, pw) return lxmpp.connect(opts(user, pw)) end })
        require("lxmpp.net").abort_all()
        if not fine then error(why, 0) end
      end)
      if not ok then error(err, 0) end
      require "spec.support.clean" ()
    end,
  })
end)
