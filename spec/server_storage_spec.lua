-- lxmpp.server.storage: one behaviour suite run against both backends
-- (memory and SQLite), then what only a file can do: persistence across
-- reopening, schema versions, file modes, and crash safety under SIGKILL.

local compat = require "lxmpp.compat"
local LUA = require "spec.support.lua_bin"
local storage = require "lxmpp.server.storage"
local codec = require "lxmpp.server.codec"
local luasql = require "luasql.sqlite3"

local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"
local WRITER = HERE .. "/support/storage_crash_writer.lua"
local writer = dofile(WRITER)

local function sh_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return (out:gsub("%s+$", ""))
end

local function tmpdir()
  return sh("mktemp -d /tmp/lxmpp-storage.XXXXXX")
end

local function rmdir(dir)
  assert(dir:match("^/tmp/lxmpp%-storage%."))
  os.execute("rm -rf " .. sh_quote(dir))
end

-- Equality that also tells 1 from 1.0, -0.0 from 0.0 and sees NaN = NaN.
local function exactly(a, b, path)
  path = path or "value"
  if type(a) ~= type(b) then return false, path .. ": " .. type(a) .. " vs " .. type(b) end
  if type(a) == "number" then
    local ta, tb = compat.math_type(a), compat.math_type(b)
    if ta ~= tb then return false, path .. ": " .. ta .. " vs " .. tb end
    if a ~= a and b ~= b then return true end
    if a ~= b or (a == 0 and 1 / a ~= 1 / b) then return false, path .. ": " .. a .. " vs " .. b end
    return true
  end
  if type(a) ~= "table" then
    if a ~= b then return false, path .. ": " .. ("%q"):format(a) .. " vs " .. ("%q"):format(b) end
    return true
  end
  for k, v in pairs(a) do
    local ok, why = exactly(v, b[k], path .. "[" .. tostring(k) .. "]")
    if not ok then return false, why end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. "[" .. tostring(k) .. "]: absent vs present" end
  end
  return true
end

local function assert_exactly(expected, actual)
  local ok, why = exactly(expected, actual)
  assert(ok, why)
end

local ALL_BYTES = {}
for i = 0, 255 do ALL_BYTES[#ALL_BYTES + 1] = string.char(i) end
ALL_BYTES = table.concat(ALL_BYTES)

local function deep(n)
  local t = { leaf = true }
  for _ = 2, n do t = { t } end
  return t
end

local VALUES = {
  { "empty string", "" },
  { "NUL", "\0" },
  { "every byte", ALL_BYTES },
  { "SQL quotes", "'; DROP TABLE kv; --\"" },
  { "long string", ("\0\1'x"):rep(50000) },
  { "zero", 0 },
  { "negative integer", -1 },
  { "largest integer", compat.maxinteger },
  { "smallest integer", compat.mininteger },
  { "integral float", 1.0 },
  { "negative zero", -0.0 },
  { "fraction", 0.1 },
  { "infinity", math.huge },
  { "minus infinity", -math.huge },
  { "NaN", 0 / 0 },
  { "tiny float", 5e-324 },
  { "true", true },
  { "false", false },
  { "empty table", {} },
  { "array", { 1, 2.0, "three", false } },
  { "nested", { a = { b = { c = "d", [1] = 1.0 } } } },
  { "mixed keys", { 1, "two", x = 3, [-5] = "neg", [compat.maxinteger] = true, ["\0key"] = "\0" } },
  { "sparse array", { [1] = "a", [3] = "c", [1000000] = "m" } },
  { "deep nesting", deep(codec.MAX_DEPTH) },
}

-- The decoder takes only complete, valid encodings (server/codec.lua):
-- what is wrong is said, nothing is half-read.
describe("storage codec", function()
  local function u32(n) return compat.string_pack("<I4", n) end
  local function str(x) return "s" .. u32(#x) .. x end

  it("decodes what it encoded, exactly", function()
    for _, case in ipairs(VALUES) do
      local ok, why = exactly(case[2], (codec.decode(codec.encode(case[2]))))
      assert(ok, case[1] .. ": " .. tostring(why))
    end
  end)

  it("refuses truncated, garbled and trailing bytes, saying what is wrong", function()
    local blob = codec.encode({ a = { 1, 2.5, "three", true, false }, b = "x" })
    for n = 1, #blob - 1 do
      local v, why = codec.decode(blob:sub(1, n))
      assert.is_nil(v, n)
      assert.equal("truncated", why, n)
    end
    local cases = {
      { "", "unknown format version" },
      { "\2T", "unknown format version" },
      { "\1x", 'unknown tag "x"' },
      { "\1T!", "trailing bytes" },
      { "\1s" .. u32(10) .. "abc", "truncated" },
      { "\1i" .. ("\0"):rep(7), "truncated" },
      { "\1d" .. ("\0"):rep(7), "truncated" },
      { "\1t" .. u32(0xffffffff), "truncated" },               -- a forged count
      { "\1t" .. u32(1) .. "T" .. "T", "bad table key" },
      { "\1t" .. u32(1) .. "d" .. compat.string_pack("<d", 1.5) .. "T", "bad table key" },
      { "\1t" .. u32(2) .. str("a") .. "T" .. str("a") .. "F", "duplicate table key" },
      { "\1" .. ("t" .. u32(1) .. str("k")):rep(codec.MAX_DEPTH + 1) .. "T", "nested too deep" },
    }
    for _, case in ipairs(cases) do
      local v, why = codec.decode(case[1])
      assert.is_nil(v, case[2])
      assert.equal(case[2], why)
    end
    assert.same({ nil, "not a string" }, { codec.decode(5) })
    -- the deepest allowed nesting still decodes
    local ok = codec.decode("\1" .. ("t" .. u32(1) .. str("k")):rep(codec.MAX_DEPTH) .. "T")
    assert.is_table(ok)
  end)
end)

local BACKENDS = {
  { name = "memory", path = function() return nil end },
  { name = "sqlite", path = function(dir) return dir .. "/store.db" end },
}

local function scram(hash)
  local core = require "lxmpp.core"
  return assert(core.sasl_credentials("pencil", hash, 4096))
end

for _, backend in ipairs(BACKENDS) do
  describe("storage (" .. backend.name .. ")", function()
    local dir, store
    before_each(function()
      dir = tmpdir()
      store = assert(storage.open(backend.path(dir)))
    end)
    after_each(function()
      store:close()
      rmdir(dir)
    end)

    it("round-trips every kind of value exactly", function()
      for _, case in ipairs(VALUES) do
        assert.is_true(store:set("values", case[1], case[2]))
        local ok, why = exactly(case[2], store:get("values", case[1]))
        assert(ok, case[1] .. ": " .. tostring(why))
      end
    end)

    it("gives copies: changing what went in or came out changes nothing stored", function()
      local value = { list = { 1, 2 }, name = "x" }
      store:set("k", "v", value)
      value.list[1], value.name = 99, "changed"
      local got = store:get("k", "v")
      assert_exactly({ list = { 1, 2 }, name = "x" }, got)
      got.list[2] = 42
      assert_exactly({ list = { 1, 2 }, name = "x" }, store:get("k", "v"))
      local roster = store:get_roster("u")
      roster.items["x@y"] = { subscription = "both", groups = {} }
      assert.same({}, store:get_roster("u").items)
    end)

    it("refuses what is not plain data, naming it, and keeps the old value", function()
      store:set("k", "v", "old")
      local cycle = {}
      cycle.self = cycle
      local refused = {
        { function() end, "function" },
        { coroutine.create(function() end), "thread" },
        { io.stdout, "userdata" },
        { { inner = { f = print } }, "value%.inner%.f" },
        { cycle, "cycle" },
        { setmetatable({}, {}), "metatable" },
        { { [true] = 1 }, "only string and integer keys" },
        { { [1.5] = 1 }, "only string and integer keys" },
        { deep(codec.MAX_DEPTH + 1), "nested deeper" },
      }
      for _, case in ipairs(refused) do
        local ok, err = pcall(store.set, store, "k", "v", case[1])
        assert.is_false(ok)
        assert.matches(case[2], err)
        assert.equal("old", store:get("k", "v"))
      end
      assert.has_error(function() store:set("k", "", 1) end)
      assert.has_error(function() store:set(1, "k", 1) end)
    end)

    it("deletes with nil and lists keys sorted, per kind", function()
      for _, k in ipairs({ "b", "a", "c\0", "c" }) do store:set("one", k, k) end
      store:set("two", "z", 1)
      assert.same({ "a", "b", "c", "c\0" }, store:keys("one"))
      store:set("one", "b", nil)
      assert.is_nil(store:get("one", "b"))
      assert.same({ "a", "c", "c\0" }, store:keys("one"))
      assert.same({ "z" }, store:keys("two"))
      assert.same({}, store:keys("none"))
    end)

    it("stores accounts as given by sasl_credentials, replaces them, lists users sorted", function()
      local record = { ["SCRAM-SHA-1"] = scram("SHA-1"), ["SCRAM-SHA-256"] = scram("SHA-256") }
      record["SCRAM-SHA-1"].salt = "\0'\"" .. record["SCRAM-SHA-1"].salt
      assert.is_nil(store:get_account("alice"))
      assert.is_true(store:set_account("alice", record))
      assert_exactly(record, store:get_account("alice"))
      local replaced = { ["SCRAM-SHA-256"] = scram("SHA-256") }
      assert.is_true(store:set_account("alice", replaced))
      assert_exactly(replaced, store:get_account("alice"))
      store:set_account("carol", replaced)
      store:set_account("bob", replaced)
      assert.same({ "alice", "bob", "carol" }, store:users())
      assert.has_error(function() store:set_account("x", { ["SCRAM-SHA-1"] = { salt = "s" } }) end)
      assert.has_error(function()
        store:set_account("x", { ["SCRAM-SHA-1"] = { salt = "s", stored_key = "a", server_key = "b", iterations = 1.5 } })
      end)
      assert.has_error(function() store:set_account("", replaced) end)
      assert.same({ "alice", "bob", "carol" }, store:users())
    end)

    it("versions the roster: every change moves ver, no change keeps it", function()
      assert.same({ ver = 0, items = {}, pending = {} }, store:get_roster("alice"))
      local function bob(subscription) return { name = "Bob", subscription = subscription, groups = { "A", "B" } } end
      assert.equal(1, store:set_roster_item("alice", "bob@x", bob("to")))
      assert.equal(1, store:set_roster_item("alice", "bob@x", bob("to")))
      assert.equal(2, store:set_roster_item("alice", "bob@x", bob("both")))
      assert.equal(3, store:set_roster_item("alice", "carol@x", { ask = "subscribe" }))
      assert.equal(4, store:set_roster_item("alice", "bob@x", nil))
      assert.equal(4, store:set_roster_item("alice", "nobody@x", nil))
      local roster = store:get_roster("alice")
      assert.equal(4, roster.ver)
      assert_exactly({ ["carol@x"] = { subscription = "none", ask = "subscribe", groups = {} } }, roster.items)
      assert.equal(0, store:get_roster("bob").ver)
    end)

    it("keeps roster items exactly, extra fields included, and refuses bad ones", function()
      local item = { name = "\0Bob'", subscription = "from", groups = { "", "g\0" }, approved = true }
      store:set_roster_item("alice", "bob@x", item)
      assert_exactly(item, store:get_roster("alice").items["bob@x"])
      for _, bad in ipairs({
        "both", { subscription = "maybe" }, { ask = "unsubscribe" }, { name = 5 },
        { groups = "g" }, { groups = { 1 } }, { groups = { "a", nil, "c" } }, { f = print },
      }) do
        assert.has_error(function() store:set_roster_item("alice", "bob@x", bad) end)
      end
      assert_exactly(item, store:get_roster("alice").items["bob@x"])
      assert.equal(1, store:get_roster("alice").ver)
    end)

    it("keeps pending subscription requests apart from the versioned items", function()
      local xml = "<presence from='bob@x' type='subscribe'><status>hi \0</status></presence>"
      store:set_roster_item("alice", "carol@x", {})
      store:set_pending("alice", "bob@x", xml)
      store:set_pending("alice", "dave@x", true)
      local roster = store:get_roster("alice")
      assert.same({ ["bob@x"] = xml, ["dave@x"] = true }, roster.pending)
      assert.equal(1, roster.ver)
      store:set_pending("alice", "bob@x", nil)
      assert.same({ ["dave@x"] = true }, store:get_roster("alice").pending)
      assert.same({}, store:get_roster("bob").pending)
      assert.has_error(function() store:set_pending("alice", "bob@x", {}) end)
    end)

    -- the lookups presence, pubsub and PEP make without the whole roster
    it("answers one contact, the size and the contacts of a subscription, through every change", function()
      local function contacts(subs)
        local list = store:roster_contacts("alice", subs)
        table.sort(list)
        return list
      end
      local SEES = { from = true, both = true }
      assert.same({ 0, 0 }, { store:roster_size("alice") })
      assert.is_nil(store:get_roster_item("alice", "bob@x"))
      store:set_roster_item("alice", "bob@x", { name = "Bob", subscription = "both", groups = { "g" } })
      store:set_roster_item("alice", "carol@x", { subscription = "to" })
      store:set_roster_item("alice", "dave@x", { subscription = "from" })
      store:set_pending("alice", "erin@x", "<presence/>")
      assert.same({ 3, 1 }, { store:roster_size("alice") })
      assert.equal(3, store:roster_version("alice"))
      assert.same({ "bob@x", "dave@x" }, contacts(SEES))
      assert.same({ "bob@x", "carol@x" }, contacts({ to = true, both = true }))
      local bob = store:get_roster_item("alice", "bob@x")
      assert_exactly({ name = "Bob", subscription = "both", groups = { "g" } }, bob)
      bob.groups[1], bob.subscription = "changed", "none"       -- a copy
      assert_exactly({ "g" }, store:get_roster_item("alice", "bob@x").groups)
      assert.same({ "bob@x", "dave@x" }, contacts(SEES))
      assert.equal("<presence/>", store:get_pending("alice", "erin@x"))
      local pending = store:get_pending_requests("alice")
      pending["erin@x"] = nil
      assert.same({ ["erin@x"] = "<presence/>" }, store:get_pending_requests("alice"))
      -- changes show at once
      store:set_roster_item("alice", "bob@x", { subscription = "to" })
      store:set_roster_item("alice", "dave@x", nil)
      store:set_pending("alice", "erin@x", nil)
      store:set_pending("alice", "frank@x", true)
      assert.same({ 2, 1 }, { store:roster_size("alice") })
      assert.equal(5, store:roster_version("alice"))
      assert.same({}, contacts(SEES))
      assert.is_nil(store:get_roster_item("alice", "dave@x"))
      assert.is_nil(store:get_pending("alice", "erin@x"))
      assert.is_true(store:get_pending("alice", "frank@x"))
      assert.has_error(function() store:roster_contacts("alice", "both") end)
      -- removing the account forgets it all
      assert.is_true(store:remove_account("alice"))
      assert.same({ 0, 0 }, { store:roster_size("alice") })
      assert.is_nil(store:get_roster_item("alice", "carol@x"))
      assert.is_true(store:roster_version("alice") > 5)
    end)

    it("keeps rosters right past the decoded cache's size", function()
      local saved = storage.ROSTER_CACHE
      storage.ROSTER_CACHE = 5
      local path = backend.path(dir) and dir .. "/small.db"
      local ok, err = pcall(function()
        local small = assert(storage.open(path))
        storage.ROSTER_CACHE = saved
        for u = 1, 6 do
          for c = 1, u do small:set_roster_item("u" .. u, "c" .. c .. "@x", { subscription = "both" }) end
        end
        for round = 1, 3 do
          for u = 1, 6 do
            -- read (evicting others), then written while cached or not
            assert.same({ u + round - 1, 0 }, { small:roster_size("u" .. u) }, "u" .. u)
            small:set_roster_item("u" .. u, "new" .. round .. "@x", { subscription = "from" })
            assert.equal(u + round, #small:roster_contacts("u" .. u, { both = true, from = true }))
          end
        end
        -- u6 alone (9 items) is larger than the whole cache, and still right
        assert.equal("from", small:get_roster_item("u6", "new3@x").subscription)
        small:set_roster_item("u6", "c1@x", nil)
        assert.is_nil(small:get_roster_item("u6", "c1@x"))
        assert.same({ 8, 0 }, { small:roster_size("u6") })
        small:close()
        if path then
          small = assert(storage.open(path))
          assert.same({ 8, 0 }, { small:roster_size("u6") })
          small:close()
        end
      end)
      storage.ROSTER_CACHE = saved
      assert(ok, err)
    end)

    it("keeps offline messages in order, with growing ids, and deletes up to an id", function()
      local ids = {}
      for i = 1, 5 do ids[i] = store:push_offline("alice", "<message>" .. i .. "\0</message>") end
      local other = store:push_offline("bob", "<message>bob</message>")
      for i = 2, 5 do assert.is_true(ids[i] > ids[i - 1]) end
      assert.is_true(other > ids[5])
      assert.equal(5, store:count_offline("alice"))
      local list = store:get_offline("alice")
      assert.equal(5, #list)
      for i, m in ipairs(list) do
        assert.same({ id = ids[i], data = "<message>" .. i .. "\0</message>" }, m)
      end
      store:delete_offline("alice", ids[3])
      assert.same({ ids[4], ids[5] }, { store:get_offline("alice")[1].id, store:get_offline("alice")[2].id })
      assert.equal(2, store:count_offline("alice"))
      assert.equal(1, store:count_offline("bob"))
      store:delete_offline("alice", ids[5])
      assert.same({}, store:get_offline("alice"))
      assert.is_true(store:push_offline("alice", "again") > other) -- ids are never reused
      assert.equal(0, store:count_offline("nobody"))
    end)

    it("drops chosen offline messages, keeping the others in order, and refuses ids that are not integers", function()
      local ids = {}
      for i = 1, 6 do ids[i] = store:push_offline("dora", "<message>" .. i .. "</message>") end
      local other = store:push_offline("erin", "<message>erin</message>")
      store:drop_offline("dora", { ids[5], ids[2], other, ids[1] + 1000 })   -- another's and unknown ids: skipped
      local left = {}
      for _, m in ipairs(store:get_offline("dora")) do left[#left + 1] = m.data end
      assert.same({ "<message>1</message>", "<message>3</message>", "<message>4</message>", "<message>6</message>" },
        left)
      assert.same({ 4, 4 * #"<message>1</message>" }, { store:count_offline("dora") })
      assert.equal(1, store:count_offline("erin"))
      assert.is_true(store:drop_offline("dora", {}))
      assert.error_matches(function() store:drop_offline("dora", ids[1]) end, "array of ids")
      assert.error_matches(function() store:drop_offline("dora", { ids[1], "2" }) end, "ids%[2%] is not an integer")
      assert.error_matches(function() store:drop_offline("dora", { 1.5 }) end, "ids%[1%] is not an integer")
      assert.equal(4, store:count_offline("dora"))
    end)

    it("counts the bytes of the offline messages it keeps", function()
      local a = store:push_offline("carol", ("a"):rep(100))
      store:push_offline("carol", ("b"):rep(50))
      assert.same({ 2, 150 }, { store:count_offline("carol") })
      store:delete_offline("carol", a)
      assert.same({ 1, 50 }, { store:count_offline("carol") })
      assert.same({ 0, 0 }, { store:count_offline("nobody-else") })
      store:remove_account("carol")
      assert.same({ 0, 0 }, { store:count_offline("carol") })
    end)

    it("removes an account with its roster, pending, offline and owned rows", function()
      local record = { ["SCRAM-SHA-256"] = scram("SHA-256") }
      for _, user in ipairs({ "alice", "bob" }) do
        store:set_account(user, record)
        store:set_roster_item(user, "carol@x", { subscription = "both" })
        store:set_pending(user, "dave@x", true)
        store:push_offline(user, "<message/>")
        store:set("vcard", user, "<vCard/>", user)
      end
      store:set("muc", "alice", { subject = "a room named alice, owned by nobody" })
      local ver = store:get_roster("alice").ver
      assert.is_true(store:remove_account("alice"))
      assert.is_nil(store:get_account("alice"))
      local roster = store:get_roster("alice")
      assert.same({}, roster.items)
      assert.same({}, roster.pending)
      assert.is_true(roster.ver > ver) -- a version never names two rosters
      assert.equal(0, store:count_offline("alice"))
      assert.is_nil(store:get("vcard", "alice"))
      assert.is_not_nil(store:get("muc", "alice"))
      assert.same({ "bob" }, store:users())
      assert_exactly(record, store:get_account("bob"))
      assert.equal(1, store:count_offline("bob"))
      assert.equal("<vCard/>", store:get("vcard", "bob"))
      assert.same({ ["dave@x"] = true }, store:get_roster("bob").pending)
      assert.is_true(store:remove_account("nobody"))
    end)

    it("forgets a row's owner when it is set again without one", function()
      store:set("private", "k", "v", "alice")
      store:set("private", "k", "v")
      store:remove_account("alice")
      assert.equal("v", store:get("private", "k"))
    end)

    it("takes user names, contacts and keys with any bytes", function()
      local user, contact = "o'hara\0\255", "x'\0@y"
      store:set_account(user, { ["SCRAM-SHA-1"] = scram("SHA-1") })
      store:set_roster_item(user, contact, { name = "'" })
      store:set_pending(user, contact, true)
      local id = store:push_offline(user, "'")
      store:set(user, contact, 1, user)
      assert.same({ user }, store:users())
      assert.same({ "'" }, { store:get_roster(user).items[contact].name })
      assert.same({ [contact] = true }, store:get_roster(user).pending)
      assert.same({ { id = id, data = "'" } }, store:get_offline(user))
      assert.same({ contact }, store:keys(user))
      assert.is_nil(store:get_account("o'hara"))
      store:remove_account(user)
      assert.same({}, store:keys(user))
    end)

    it("closes twice, and refuses to be used once closed", function()
      store:close()
      store:close()
      assert.has_error(function() store:get("k", "v") end, "storage: the store is closed")
      assert.has_error(function() store:push_offline("a", "x") end, "storage: the store is closed")
    end)
  end)
end

describe("storage (sqlite file)", function()
  local dir
  before_each(function() dir = tmpdir() end)
  after_each(function() rmdir(dir) end)

  local function raw(path, sql)
    local env = luasql.sqlite3()
    local conn = assert(env:connect(path))
    local cur = assert(conn:execute(sql))
    local value
    if type(cur) ~= "number" then
      value = cur:fetch()
      cur:close()
    end
    conn:close()
    env:close()
    return value
  end

  it("keeps everything across closing and reopening", function()
    local path = dir .. "/it's \"quoted\".db"
    local store = assert(storage.open(path))
    local record = { ["SCRAM-SHA-1"] = scram("SHA-1") }
    store:set_account("alice", record)
    store:set_roster_item("alice", "bob@x", { name = "Bob", subscription = "both", groups = { "g" } })
    store:set_pending("alice", "carol@x", "<presence type='subscribe'/>")
    local id = store:push_offline("alice", "<message>\0</message>")
    for _, case in ipairs(VALUES) do store:set("values", case[1], case[2]) end
    store:close()

    store = assert(storage.open(path))
    assert_exactly(record, store:get_account("alice"))
    assert_exactly({
      ver = 1,
      items = { ["bob@x"] = { name = "Bob", subscription = "both", groups = { "g" } } },
      pending = { ["carol@x"] = "<presence type='subscribe'/>" },
    }, store:get_roster("alice"))
    assert.same({ { id = id, data = "<message>\0</message>" } }, store:get_offline("alice"))
    for _, case in ipairs(VALUES) do assert_exactly(case[2], store:get("values", case[1])) end
    store:delete_offline("alice", id)
    assert.is_true(store:push_offline("alice", "later") > id)
    store:close()
    assert.equal("wal", raw(path, "PRAGMA journal_mode"))
  end)

  it("creates the file readable by its owner only", function()
    local path = dir .. "/private.db"
    assert(storage.open(path)):close()
    assert.equal("600", sh("stat -c %a " .. sh_quote(path)))
  end)

  it("answers nil and a message for a missing directory, a non-database, a foreign database", function()
    local store, err = storage.open(dir .. "/missing/store.db")
    assert.is_nil(store)
    assert.matches("cannot open .*missing/store%.db", err)

    local f = assert(io.open(dir .. "/text.db", "wb"))
    f:write(("this is not a database\n"):rep(100))
    f:close()
    store, err = storage.open(dir .. "/text.db")
    assert.is_nil(store)
    assert.matches("not a database", err)

    raw(dir .. "/foreign.db", "CREATE TABLE users (name TEXT)")
    store, err = storage.open(dir .. "/foreign.db")
    assert.is_nil(store)
    assert.matches("not an lxmpp store", err)

    assert.is_nil((storage.open(dir .. "/:memory:")))
    assert.has_error(function() storage.open(42) end)
  end)

  it("answers nil and a message for a write it cannot make, and changes nothing", function()
    local sqlite = require "lxmpp.server.storage_sqlite"
    local path = dir .. "/store.db"
    local saved = sqlite.BUSY_TIMEOUT_MS
    sqlite.BUSY_TIMEOUT_MS = 50
    local store = assert(storage.open(path))
    sqlite.BUSY_TIMEOUT_MS = saved
    store:set("k", "v", "old")
    store:set_roster_item("alice", "bob@x", {})
    assert.is_not_nil(store:get_roster_item("alice", "bob@x"))   -- now decoded in memory too
    local id = store:push_offline("alice", "first")
    -- another connection holds the write lock
    local env = luasql.sqlite3()
    local other = assert(env:connect(path))
    assert(other:execute("BEGIN IMMEDIATE"))
    local function refused(ok, err)
      assert.is_nil(ok)
      assert.matches("^storage: .*locked", err)
    end
    refused(store:set("k", "v", "new"))
    refused(store:set_roster_item("alice", "carol@x", {}))
    refused(store:push_offline("alice", "second"))
    refused(store:remove_account("alice"))
    -- reads go on (WAL), and show nothing changed
    assert.equal("old", store:get("k", "v"))
    assert.equal(1, store:get_roster("alice").ver)
    assert.is_nil(store:get_roster_item("alice", "carol@x"))   -- nor in the decoded copy
    assert.same({ 1, 0 }, { store:roster_size("alice") })
    assert.same({ { id = id, data = "first" } }, store:get_offline("alice"))
    assert(other:execute("ROLLBACK"))
    other:close()
    env:close()
    assert.equal(2, store:set_roster_item("alice", "carol@x", {}))
    assert.is_true(store:set("k", "v", "new"))
    store:close()
  end)

  it("refuses a file of a newer schema version", function()
    local path = dir .. "/store.db"
    assert(storage.open(path)):close()
    raw(path, "UPDATE meta SET value = value + 1 WHERE key = 'schema_version'")
    local store, err = storage.open(path)
    assert.is_nil(store)
    assert.matches("schema version 2 is newer than this lxmpp supports %(1%)", err)
  end)

  it("loses no acknowledged write when the writer is killed (SIGKILL)", function()
    local seed = tonumber(os.getenv("LXMPP_STORAGE_SEED")) or 20261124
    math.randomseed(seed)
    local path = dir .. "/crash.db"
    local acked = { o = {}, k = {}, r = {} }
    local ROUNDS = 6
    for round = 1, ROUNDS do
      local context = ("seed %d, round %d"):format(seed, round)
      local cmd = ("echo $$; LUA_PATH=%s LUA_CPATH=%s exec " .. LUA .. " %s %s %d"):format(
        sh_quote(package.path), sh_quote(package.cpath), sh_quote(WRITER), sh_quote(path), round)
      -- (its status as a last line: 5.1's popen close() gives none)
      cmd = "sh -c " .. sh_quote(cmd) .. "; echo status $?"
      local p = assert(io.popen(cmd))
      local pid = assert(compat.tointeger(tonumber(p:read("*l"))), context)
      local function record(line)
        local kind, r, i, n = line:match("^(%a) (%d+) (%d+) ?(%d*)$")
        assert(kind, context .. ": bad line " .. line)
        acked[kind][#acked[kind] + 1] = { round = tonumber(r), i = tonumber(i), n = tonumber(n) }
      end
      -- round 1 kills while the writer starts and creates the schema,
      -- the others after a random number of acknowledged writes
      local wait_for = round == 1 and 0 or math.random(1, 60)
      local read_ok, read_err = pcall(function()
        for _ = 1, wait_for do
          local line = p:read("*l")
          assert(line, context .. ": the writer stopped early")
          record(line)
        end
      end)
      if round == 1 or math.random() < 0.5 then os.execute(("sleep 0.0%d"):format(math.random(1, 9))) end
      assert(os.execute("kill -KILL " .. pid)) -- whatever happened, the writer does not outlive us
      assert(read_ok, read_err)
      local status
      for line in p:lines() do                  -- acknowledged before the kill
        status = tonumber(line:match("^status (%d+)$"))
        if not status then record(line) end
      end
      p:close()
      assert.equal(128 + 9, status, context .. ": the writer was not killed")   -- (the shell's SIGKILL status)

      assert.equal("ok", raw(path, "PRAGMA integrity_check"), context)
      local store = assert(storage.open(path))
      -- every acknowledged write is there, whole
      local offline = {}
      for _, m in ipairs(store:get_offline(writer.USER)) do offline[m.id] = m.data end
      for _, a in ipairs(acked.o) do
        assert.equal(writer.offline_xml(a.round, a.i), offline[a.n], context)
      end
      for _, a in ipairs(acked.k) do
        assert_exactly(writer.kv_value(a.round, a.i), store:get(writer.USER, writer.kv_key(a.round, a.i)))
      end
      local roster = store:get_roster(writer.USER)
      for _, a in ipairs(acked.r) do
        assert_exactly(writer.roster_item(a.round, a.i), roster.items[writer.contact(a.round, a.i)])
        assert.is_true(roster.ver >= a.n, context)
      end
      -- and whatever is there (acknowledged or not) is whole
      local count = 0
      for id, data in pairs(offline) do
        count = count + 1
        local r, i = data:match("^<message id='(%d+)%.(%d+)'>")
        assert(r, context .. ": offline message " .. id .. " is not whole")
        assert.equal(writer.offline_xml(tonumber(r), tonumber(i)), data, context)
      end
      assert.is_true(count >= #acked.o and count <= #acked.o + round, context)
      for _, key in ipairs(store:keys(writer.USER)) do
        local r, i = key:match("^(%d+)%.(%d+)$")
        assert_exactly(writer.kv_value(tonumber(r), tonumber(i)), store:get(writer.USER, key))
      end
      local items = 0
      for contact, item in pairs(roster.items) do
        items = items + 1
        local r, i = contact:match("^c(%d+)%.(%d+)@example%.org$")
        assert_exactly(writer.roster_item(tonumber(r), tonumber(i)), item)
      end
      assert.equal(items, roster.ver, context .. ": the version and the items disagree")
      store:close()
    end
    assert.is_true(#acked.o >= ROUNDS - 1)
  end)
end)
