-- The house habits that are files rather than code: the two rockspecs agree
-- and install the whole tree, the code and docs cite only documents that
-- ship with it, tools/fix-indent.lua converts indentation without touching
-- long strings, and .busted's default run leaves nothing out of `make test`.

local ROOT = debug.getinfo(1, "S").source:match("^@(.*)/spec/[^/]*$") or "."

local compat = require "lxmpp.compat"
local LUA = require "spec.support.lua_bin"
local sh = require "spec.support.sh"
local pki = require "spec.support.pki"

local function read(rel)
  return pki.read_file(ROOT .. "/" .. rel)
end

-- the sorted lines a shell command prints, run in the checkout's root
-- (without the sanitizer preload of `make check`, as pki.sh runs them)
local function in_root(command)
  local out = {}
  for line in pki.sh('cd "' .. ROOT .. '" && { ' .. command .. '; true; }'):gmatch("[^\n]+") do
    out[#out + 1] = line
  end
  table.sort(out)
  return out
end

local function load_rockspec(name)
  local env = {}
  assert(compat.loadfile(ROOT .. "/" .. name, "t", env))()
  return env
end

-- a value as canonical text, keys sorted, so two tables compare as strings
local function canon(v)
  if type(v) ~= "table" then return ("%q"):format(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function (a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = canon(k) .. "=" .. canon(v[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

--- The rockspecs -------------------------------------------------------------------

describe("the rockspecs", function ()
  local scm = load_rockspec("lxmpp-scm-1.rockspec")
  local version = require("lxmpp").VERSION
  local release_name = "lxmpp-" .. version .. "-1.rockspec"
  local release = load_rockspec(release_name)

  it("include a release rockspec for lxmpp.VERSION, built from its tag", function ()
    assert.equal(version .. "-1", release.version)
    assert.equal("v" .. version, release.source.tag)
    assert.equal("scm-1", scm.version)
  end)

  it("name the real repository", function ()
    for _, r in ipairs({ scm, release }) do
      assert.equal("git+https://github.com/lxmpp/lxmpp.git", r.source.url)
    end
  end)

  it("build, install and depend alike", function ()
    assert.equal(canon(scm.build), canon(release.build))
    assert.equal(canon(scm.dependencies), canon(release.dependencies))
    assert.equal(canon(scm.external_dependencies), canon(release.external_dependencies))
    assert.equal(canon(scm.description), canon(release.description))
  end)

  it("declare the rock of the SQLite driver the server's storage loads", function ()
    -- storage_sqlite.lua loads LuaSQL's driver; its rock is luasql-sqlite3
    assert.truthy(read("lua/lxmpp/server/storage_sqlite.lua"):find('require "luasql.sqlite3"', 1, true))
    for _, r in ipairs({ scm, release }) do
      local found = false
      for _, dep in ipairs(r.dependencies) do
        if dep:match("^luasql%-sqlite3[%s<>=~]") or dep == "luasql-sqlite3" then found = true end
      end
      assert.is_true(found, "luasql-sqlite3 not in the dependencies of " .. r.version)
    end
  end)

  it("install every lua/lxmpp/**.lua and build every csrc/*.c (release)", function ()
    local listed, sources = {}, {}
    for module, spec in pairs(release.build.modules) do
      if type(spec) == "string" then
        listed[spec] = module
      else
        for _, s in ipairs(spec.sources) do sources[#sources + 1] = s end
      end
    end
    table.sort(sources)
    assert.same(in_root("ls csrc/*.c"), sources)
    local wrong = {}
    for _, file in ipairs(in_root('find lua/lxmpp -name "*.lua"')) do
      local module = file:gsub("^lua/", ""):gsub("/init%.lua$", ""):gsub("%.lua$", ""):gsub("/", ".")
      if listed[file] ~= module then wrong[#wrong + 1] = file end
    end
    assert(#wrong == 0, "not installed by " .. release_name .. ": " .. table.concat(wrong, ", "))
  end)
end)

--- Citations ----------------------------------------------------------------------

-- The design notes the project was written from are not in the repository,
-- so nothing in it may send a reader there; the names are built here so that
-- this file does not cite them either.
describe("citations", function ()
  local NOTES = { "SECURITY", "STYLE", "API", "DESIGN" }

  it("name only documents in the repository", function ()
    local where = "lua csrc spec bench examples docs fuzz bin tools Makefile README.md CHANGELOG.md .busted"
    local hits = {}
    for _, name in ipairs(NOTES) do
      local found = in_root("grep -rnI -- '\\b" .. name .. "\\.md' " .. where)
      for _, hit in ipairs(found) do hits[#hits + 1] = hit end
    end
    assert(#hits == 0, "cites a document that is not in the repository:\n" .. table.concat(hits, "\n"))
  end)
end)

--- tools/fix-indent.lua -----------------------------------------------------------

describe("tools/fix-indent.lua", function ()
  local fix = assert(loadfile(ROOT .. "/tools/fix-indent.lua"))("fix-indent")

  it("turns each leading tab into two spaces, and only leading ones", function ()
    local out, n = fix.convert("local t = {\n\tx = 1,\t-- a\ttab\n\t\ty = '\t',\n \tz = 3,\n}\n")
    assert.equal("local t = {\n  x = 1,\t-- a\ttab\n    y = '\t',\n   z = 3,\n}\n", out)
    assert.equal(3, n)
  end)

  it("leaves the lines of long strings and long comments alone", function ()
    local src = table.concat({
      "local s = [[",
      "\tinside",
      "]] .. [==[",
      "\tinside ]] still",
      "]==]",
      "--[[",
      "\tcomment",
      "]]",
      "\tafter()",
      "local q = \"a\\",
      "\tcontinued\"",
      "-- [[ not long",
      "\tcode()",
      "",
    }, "\n")
    local out, n = fix.convert(src)
    local expected = src:gsub("\n\tafter", "\n  after"):gsub("\n\tcode", "\n  code")
    assert.equal(expected, out)
    assert.equal(2, n)
  end)

  it("keeps a file without tabs byte for byte, final newline or not", function ()
    for _, src in ipairs({ "", "x = 1", "x = 1\n", "a\n\n  b\n" }) do
      local out, n = fix.convert(src)
      assert.equal(src, out)
      assert.equal(0, n)
    end
  end)

  it("--check lists files with leading tabs and exits 1; converting fixes them", function ()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute(pki.NO_PRELOAD .. "mkdir -p '" .. dir .. "'"))
    local f = assert(io.open(dir .. "/a.lua", "wb"))
    f:write("if x then\n\ty()\nend\n")
    f:close()
    local lua = pki.NO_PRELOAD .. LUA .. " '" .. ROOT .. "/tools/fix-indent.lua'"
    local listed, code = sh.popen_read(lua .. " --check '" .. dir .. "' 2>/dev/null")
    assert.equal(1, code)
    assert.truthy(listed:find("a.lua", 1, true))
    assert.is_true(sh.execute(lua .. " '" .. dir .. "' >/dev/null"))
    assert.is_true(sh.execute(lua .. " --check '" .. dir .. "' >/dev/null"))
    local g = assert(io.open(dir .. "/a.lua", "rb"))
    assert.equal("if x then\n  y()\nend\n", g:read("*a"))
    g:close()
    os.execute(pki.NO_PRELOAD .. "rm -rf '" .. dir .. "'")
  end)
end)

--- .busted --------------------------------------------------------------------------

describe(".busted", function ()
  -- .busted as busted loads it from the checkout's root, with LUA_CPATH set
  -- to `cpath` (nil: unset)
  local function tasks(cpath, rock_tree)
    local env = setmetatable({
      io = setmetatable({
        popen = function (cmd, ...) return io.popen('cd "' .. ROOT .. '" && ' .. cmd, ...) end,
      }, { __index = io }),
      os = setmetatable({
        getenv = function (name)
          if name == "LUA_CPATH" then return cpath end
          if name == "LXMPP_ROCK_TREE" then return rock_tree end
          return os.getenv(name)
        end,
      }, { __index = os }),
    }, { __index = _G })
    return assert(compat.loadfile(ROOT .. "/.busted", "t", env))()
  end

  local t = tasks(os.getenv("LUA_CPATH"))

  it("excludes nothing by tag or pattern in any task (make test names spec)", function ()
    for name, task in pairs(t) do
      for _, key in ipairs({ "tags", "t", "exclude-tags", "pattern", "p", "exclude-pattern", "lua" }) do
        assert.is_nil(task[key], name .. " sets " .. key)
      end
    end
  end)

  it("runs fast specs by default, and its tasks together cover the whole of spec/", function ()
    local default = t.default.ROOT
    assert.truthy(#default > 10)
    local seen, union = {}, {}
    local function add(list)
      for _, f in ipairs(list) do
        if not seen[f] then seen[f] = true; union[#union + 1] = f end
      end
    end
    for _, f in ipairs(default) do
      assert.falsy(f:find("^spec/interop/") or f:find("^spec/server_"), f)
    end
    add(default)
    add(t.server.ROOT)
    add(t.slow.ROOT)
    add(in_root('find spec/interop -name "*_spec.lua"'))
    table.sort(union)
    assert.same(in_root('find spec -name "*_spec.lua"'), union)
    assert.same({ "spec/interop" }, t.interop.ROOT)
    assert.same({ "spec" }, t.all.ROOT)
    for _, f in ipairs(t.slow.ROOT) do
      local h = io.open(ROOT .. "/" .. f)
      assert.truthy(h, f .. " is listed as slow but does not exist")
      h:close()
    end
  end)

  it("finds ./lua and ./build, unless LUA_CPATH names a build directory already", function ()
    -- (the Makefile's build directory for the Lua running this: make LUA=...)
    local build = ({ ["Lua 5.4"] = "./build/?.so", ["Lua 5.3"] = "./build-lua5.3/?.so",
      ["Lua 5.1"] = rawget(_G, "jit") and "./build-luajit/?.so" or "./build-lua5.1/?.so" })[_VERSION]
    for _, cpath in ipairs({ false, "/usr/lib/x86_64-linux-gnu/lua/5.4/?.so;;" }) do
      local all = tasks(cpath or nil)._all
      assert.truthy(all.lpath:find("./lua/?.lua", 1, true))
      assert.equal(build, all.cpath)
    end
    -- what make test, make check, make compat-expat and make LUA=... set
    for _, dir in ipairs({ "build", "build-asan", "build-compat", "build-luajit", "build-lua5.1", "build-lua5.3" }) do
      local all = tasks("/src/lxmpp/" .. dir .. "/?.so;;")._all
      assert.truthy(all.lpath:find("./lua/?.lua", 1, true))
      assert.is_nil(all.cpath, dir)
    end
  end)

  it("adds neither ./lua nor ./build when the specs test an installed rock (tools/test-rocks)", function ()
    local all = tasks("/tmp/tree/lib/lua/5.4/?.so;;", "/tmp/tree")._all
    assert.is_nil(all.lpath)
    assert.is_nil(all.cpath)
  end)

  -- tools/test-rocks sets LXMPP_ROCK_TREE to the tree luarocks installed the
  -- rock into: then every lxmpp module must come from there, else from ./lua
  -- and the Makefile's build directory
  it("loads lxmpp from the installed rock under tools/test-rocks, else from the checkout", function ()
    local tree = os.getenv("LXMPP_ROCK_TREE")
    local function searchpath(name, path)   -- (Lua 5.1 has no package.searchpath)
      for template in path:gmatch("[^;]+") do
        local file = template:gsub("%?", (name:gsub("%.", "/")))
        local h = io.open(file)
        if h then h:close() return file end
      end
    end
    local lua_file = searchpath("lxmpp", package.path)
    local core_file = searchpath("lxmpp.core", package.cpath)
    assert.truthy(lua_file and core_file)
    local function under(path, dir)
      return path:sub(1, #dir + 1) == dir .. "/" or path:sub(1, #dir + 3) == "./" .. dir .. "/"
    end
    if tree and tree ~= "" then
      assert.truthy(under(lua_file, tree), lua_file)
      assert.truthy(under(core_file, tree), core_file)
      -- what the specs loaded is that rock's, not the checkout's
      assert.equal(lua_file, debug.getinfo(require("lxmpp").server, "S").source:sub(2))
    else
      assert.truthy(lua_file:find("lua/lxmpp/init.lua", 1, true), lua_file)
      assert.truthy(core_file:find("/build[%w%-%.]*/lxmpp/core%.so$"), core_file)
    end
  end)
end)
