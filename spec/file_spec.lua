-- core.write_private (csrc/file.c): files of mode 0600 for the secrets
-- lxmpp keeps on disk, made without a shell: lxmpp.state_file (a client's
-- saved state, with its FAST token, written at every counted stanza) and
-- the SQLite storage's new file.
local core = require "lxmpp.core"

local function mode(path)
  local p = io.popen("stat -c %a " .. path)
  local m = p:read("*l")
  p:close()
  return m
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

describe("core.write_private", function()
  local dir
  before_each(function()
    local p = io.popen("mktemp -d")
    dir = p:read("*l")
    p:close()
  end)
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("creates a new file with mode 0600 and its bytes", function()
    local path = dir .. "/state"
    assert.is_true(core.write_private(path, "secret\0token"))
    assert.equal("600", mode(path))
    assert.equal("secret\0token", read(path))
  end)

  it("refuses a path that exists (how 'new'), leaving it as it was", function()
    local path = dir .. "/state"
    write(path, "old")
    local ok, msg, code = core.write_private(path, "new")
    assert.is_nil(ok)
    assert.matches("cannot create .*/state", msg)
    assert.equal("EEXIST", code)
    assert.equal("old", read(path))
  end)

  it("never writes through a symbolic link", function()
    local target, link = dir .. "/target", dir .. "/link"
    write(target, "keep")
    assert.truthy(os.execute("ln -s '" .. target .. "' '" .. link .. "'"))
    assert.is_nil((core.write_private(link, "x")))
    local ok, _, code = core.write_private(link, "x", "append")
    assert.is_nil(ok)
    assert.equal("ELOOP", code)
    assert.equal("keep", read(target))
  end)

  it("appends (how 'append'): creates a missing file 0600, keeps an existing file's mode", function()
    local path = dir .. "/db"
    assert.is_true(core.write_private(path, "", "append"))
    assert.equal("600", mode(path))
    assert.equal("", read(path))
    local other = dir .. "/shared"
    write(other, "a")
    os.execute("chmod 640 '" .. other .. "'")
    assert.is_true(core.write_private(other, "b", "append"))
    assert.equal("640", mode(other))
    assert.equal("ab", read(other))
  end)

  it("reports a folder that is missing, and refuses bad arguments", function()
    local ok, msg, code = core.write_private(dir .. "/no/such/file", "x")
    assert.is_nil(ok)
    assert.matches("No such file", msg)
    assert.equal("ENOENT", code)
    assert.has_error(function() core.write_private(dir .. "/f", "x", "truncate") end)
    assert.has_error(function() core.write_private(dir .. "/f", {}) end)
  end)

  it("lets lxmpp.state_file save without starting a shell", function()
    local saved_execute, saved_popen = os.execute, io.popen
    package.loaded["lxmpp.state_file"] = nil
    local forbidden = function() error("a shell was started") end
    os.execute, io.popen = forbidden, forbidden   -- luacheck: ignore 122
    local ok, err = pcall(function()
      local sf = require "lxmpp.state_file"
      local path = dir .. "/client.state"
      for i = 1, 3 do
        assert(sf.write(path, { id = "sm1", inbound = i, acked = 0, queue = {},
          fast = { token = "t", mechanism = "HT-SHA-256-NONE", expiry = 1 } }))
      end
      assert.equal(3, sf.load(path).inbound)
      assert.is_nil(read(path .. ".new"))
    end)
    os.execute, io.popen = saved_execute, saved_popen   -- luacheck: ignore 122
    package.loaded["lxmpp.state_file"] = nil
    assert(ok, err)
    assert.equal("600", mode(dir .. "/client.state"))
  end)
end)
