-- Keeps the docs from drifting: every documented example runs, in CI.
--
-- 1. Every ```lua block of README.md and docs/api.md whose first line is
--    `-- example` runs without error, and prints exactly the lines its
--    `--> text` comments show, in order (runs of spaces and tabs compare as
--    one space, trailing ones are ignored). A block with no `-->` comment
--    only has to run. Each block runs alone, in its own environment, and
--    fails if it has not finished within EXAMPLE_SECONDS (a hang becomes a
--    failure naming the block, not a stuck suite). Examples are portable
--    (Lua 5.1, LuaJIT, 5.3, 5.4: README.md, "Lua versions"), except a block
--    whose first line is `-- example (Lua 5.4)`, which shows what only 5.4
--    has (`<close>`): under any other Lua it is checked to compile with
--    luac5.4 and not with the running Lua (the test says so in its name).
-- 2. Every public name of lxmpp, lxmpp.stanza (functions, values and stanza
--    methods), lxmpp.jid, the stream parser, the client and its plugins, the
--    component, the server object, lxmpp.forms and lxmpp.server.storage is
--    the subject of a `###` heading of docs/api.md, whose code spans are
--    signatures (see public_names); no such heading names something the
--    library lacks; and the section under each heading has a runnable
--    example that uses each name it documents.
-- 3. types/ (LuaLS stubs) is what tools/gen-stubs.lua makes of those
--    headings, and every heading's signatures parse.
-- 4. Relative links in README.md and docs/*.md lead to files (and headings)
--    that exist.
-- 5. lxmpp-scm-1.rockspec lists every csrc/*.c and Lua module, so that the
--    installed rock has what `make build` has.

local compat = require "lxmpp.compat"
local ROOT = debug.getinfo(1, "S").source:match("^@(.*)/spec/[^/]*$") or "."

local function read(rel)
  local f = assert(io.open(ROOT .. "/" .. rel, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

local function file_exists(rel)
  local f = io.open(ROOT .. "/" .. rel, "rb")
  if f then f:close() end
  return f ~= nil
end

--- Markdown ---------------------------------------------------------------------

-- GitHub's anchor for a heading: lowercased, punctuation dropped, spaces
-- turned into hyphens.
local function slug(heading)
  return (heading:lower():gsub("[^%w%-_ \128-\255]", ""):gsub(" ", "-"))
end

-- The document's headings and fenced code blocks, in order. Each block
-- remembers the heading it sits under.
local function parse_markdown(path)
  local text = read(path)
  local headings, blocks = {}, {}
  local heading, block
  local n = 0
  for line in text:gmatch("([^\n]*)\n?") do
    n = n + 1
    if block then
      if line:match("^```%s*$") then
        blocks[#blocks + 1] = block
        block = nil
      else
        block.lines[#block.lines + 1] = line
      end
    else
      local lang = line:match("^```(%S*)")
      local level, title = line:match("^(#+)%s+(.-)%s*$")
      if lang then
        block = { path = path, lang = lang, first = n + 1, lines = {}, heading = heading }
      elseif level then
        heading = { level = #level, title = title, line = n, blocks = {} }
        headings[#headings + 1] = heading
      end
    end
  end
  assert(block == nil, path .. ": a code block is not closed")
  for _, b in ipairs(blocks) do
    b.runnable = b.lang == "lua" and (b.lines[1] or ""):match("^%-%- example") ~= nil
    b.lua54_only = b.runnable and b.lines[1]:match("^%-%- example %(Lua 5%.4%)") ~= nil
    if b.heading then table.insert(b.heading.blocks, b) end
  end
  return { path = path, text = text, headings = headings, blocks = blocks }
end

--- Running examples --------------------------------------------------------------

local function normalize(line)
  return (line:gsub("[ \t]+", " "):gsub(" $", ""))
end

-- The comment of one line of Lua, or nil: the text after the first "--"
-- that is not inside a quoted string. (Examples keep long strings and
-- long comments off the lines that carry `-->`.)
local function line_comment(line)
  local i, quote = 1, nil
  while i <= #line do
    local c = line:sub(i, i)
    if quote then
      if c == "\\" then
        i = i + 1
      elseif c == quote then
        quote = nil
      end
    elseif c == "'" or c == '"' then
      quote = c
    elseif line:sub(i, i + 1) == "--" then
      return line:sub(i + 2)
    end
    i = i + 1
  end
  return nil
end

-- The lines a block says it prints: its `--> text` comments, in order.
local function expected_output(block)
  local lines = {}
  for _, line in ipairs(block.lines) do
    local out = (line_comment(line) or ""):match("^>(.*)$")
    if out then lines[#lines + 1] = normalize(out:gsub("^ ", "")) end
  end
  return lines
end

-- Runs the block; returns the lines it printed, or raises its error with the
-- line numbers of the Markdown file.
local function run_block(block)
  local printed = {}
  local function capture(...)
    local parts = compat.pack(...)
    for i = 1, parts.n do parts[i] = tostring(parts[i]) end
    local text = table.concat(parts, "\t", 1, parts.n)
    for line in (text .. "\n"):gmatch("([^\n]*)\n") do
      printed[#printed + 1] = normalize(line)
    end
  end
  local env = setmetatable({ print = capture }, { __index = _G })
  -- padded so that error messages give the line in the Markdown file
  local code = ("\n"):rep(block.first - 1) .. table.concat(block.lines, "\n")
  local chunk = assert(compat.load(code, "@" .. block.path, "t", env))
  chunk()
  return printed
end

local function describe_block(block)
  local where = block.path .. ":" .. block.first
  if block.heading then where = where .. " (" .. block.heading.title .. ")" end
  return where
end

-- How long one example may take (the longest takes about a second;
-- Valgrind runs tens of times slower).
local EXAMPLE_SECONDS = 30 * require("spec.support.slow").factor

-- An alarm for a running example: a process that sends this one SIGWINCH
-- after `seconds` (SIGWINCH, because its default action is to ignore it: an
-- alarm arriving late, after the watcher is gone, does nothing). lxmpp's
-- signal watcher wakes a loop blocked waiting for an event no peer will
-- send. Returns the alarm's process group, for stop_alarm.
local function start_alarm(seconds)
  local pid = require("lxmpp.core").getpid()
  -- (it says its process group itself once it has one: the group must exist
  -- before stop_alarm can end it)
  -- (without the sanitizer preload `make check` gives busted)
  local p = assert(io.popen(("unset LD_PRELOAD; setsid sh -c 'echo $$; exec >/dev/null 2>&1; sleep %d; kill -WINCH %d'"
    .. " </dev/null 2>/dev/null &"):format(seconds, pid)))
  local group = assert(tonumber(p:read("*l")))
  p:close()
  return group
end

local function stop_alarm(group)
  os.execute(("kill -TERM -%d 2>/dev/null"):format(group))   -- (dash's kill takes no "--")
end

-- Ends what an example left running (a server, connections, tasks: an
-- example that failed half-way), so the next one's lxmpp.run does not wait
-- on them forever. Returns what was left.
local function clean_up()
  local lxmpp = require "lxmpp"
  local core = require "lxmpp.core"
  collectgarbage()
  local tasks, handles = lxmpp.task.count(), core.loop_handles()
  if tasks > 0 or handles > 0 then
    lxmpp.run(function () lxmpp.shutdown(1) end)
    lxmpp.task.cancel_all()
    require("lxmpp.net").abort_all()
    for _ = 1, 50 do if not lxmpp.step(0.01) then break end end
  end
  return tasks, handles
end

-- run_block under the alarm: an example that hangs fails after
-- EXAMPLE_SECONDS (lxmpp.shutdown ends its run) instead of stopping the suite.
local function run_block_guarded(block)
  local lxmpp = require "lxmpp"
  local timed_out = false
  local watcher = lxmpp.on_signal("winch", function ()
    timed_out = true
    lxmpp.shutdown(1)
  end)
  local alarm = start_alarm(EXAMPLE_SECONDS)
  local ok, printed = pcall(run_block, block)
  stop_alarm(alarm)
  watcher:stop()
  local tasks, handles = clean_up()
  if timed_out then
    error(("did not finish within %d s (a hang)"):format(EXAMPLE_SECONDS), 0)
  end
  if not ok then error(printed, 0) end
  assert(tasks == 0 and handles == 0,
    ("left %d task(s) and %d handle(s) behind"):format(tasks, handles))
  return printed
end

-- Compiles a block with luac5.4: for the blocks marked `-- example (Lua 5.4)`
-- under another Lua. Returns true, or false and luac's message.
local function compiles_on_54(block)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(table.concat(block.lines, "\n"), "\n")
  f:close()
  local p = assert(io.popen("luac5.4 -p -- '" .. path .. "' 2>&1; echo \"exit $?\""))
  local out = p:read("*a")
  p:close()
  os.remove(path)
  local status = out:match("exit (%d+)%s*$")
  return status == "0", out
end

local documents = {
  parse_markdown("README.md"),
  parse_markdown("docs/api.md"),
}

describe("runnable examples", function ()
  for _, doc in ipairs(documents) do
    local count = 0
    for _, block in ipairs(doc.blocks) do
      if block.lua54_only and _VERSION ~= "Lua 5.4" then
        count = count + 1
        it(describe_block(block) .. " is Lua 5.4 only: compiles with luac5.4, not with this Lua", function ()
          local ok, msg = compiles_on_54(block)
          assert(ok, "luac5.4: " .. msg)
          local chunk = compat.load(table.concat(block.lines, "\n"), "=example", "t", {})
          assert(chunk == nil, "it compiles on " .. _VERSION .. ": drop the (Lua 5.4) mark and run it everywhere")
        end)
      elseif block.runnable then
        count = count + 1
        it(describe_block(block), function ()
          local printed = run_block_guarded(block)
          local expected = expected_output(block)
          if #expected > 0 then
            assert.same(expected, printed)
          end
        end)
      end
    end
    it(doc.path .. " has runnable examples", function ()
      assert.is_true(count > 0)
    end)
  end
end)

--- Coverage of the API -----------------------------------------------------------

local lxmpp = require "lxmpp"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"

local function sorted_keys(set)
  local list = {}
  for k in pairs(set) do list[#list + 1] = k end
  table.sort(list)
  return list
end

-- The parser of headings and the stub generator (tools/gen-stubs.lua): the
-- same code reads the signatures here and writes types/.
local gen = assert(loadfile(ROOT .. "/tools/gen-stubs.lua"))("tools.gen-stubs")

-- Methods of the client and its session that are not public API (docs/api.md,
-- "Plugins": what the stream features and plugins call, and may change). The
-- session's and reconnection's own steps are not methods at all
-- (session.internal, reconnect.internal).
local CLIENT_INTERNAL = {}
for name in ([[
	start_tls read fail time_left establish add_setup on_added
	hook_child from_own_account refuse_foreign_push fire_user write_stanza log
]]):gmatch("%S+") do CLIENT_INTERNAL[name] = true end

-- Methods of the server object that its own parts (c2s, components, the
-- services in lua/lxmpp/server/) call: not for a host application.
-- hook_builtin hooks a handler of the server's own modules (default priority
-- -10, unhooked at stop; an application uses srv:hook), handler_failed is
-- srv:fire's answer to a handler that raised.
local SERVER_INTERNAL = {}
for name in ([[
	accept bind unbind route log logs account_name account_open account_auth account_close
	check_password scram_credentials user_exists end_sessions add_host remove_host
	hook_builtin handler_failed replace_session
]]):gmatch("%S+") do SERVER_INTERNAL[name] = true end

-- Functions of plugin modules that the plugins use themselves: steps of a
-- documented function (caps.string of caps.ver, rpc.parse_response of
-- c:rpc_call, disco's readers of c:disco_info) or helpers for specs.
local PLUGIN_INTERNAL = {}
for name in ([[
	caps.cached caps.string disco.read_info disco.info_query rpc.parse_response
]]):gmatch("%S+") do PLUGIN_INTERNAL[name] = true end

-- Public names with no heading yet: this list only shrinks (a name documented
-- comes off it; a new public function gets a heading, not a place here).
local NOT_YET_DOCUMENTED = {}

local function functions_of(t, out, prefix, skip)
  for k, v in pairs(t) do
    if type(v) == "function" and not k:match("^__") and not (skip and skip[k]) then out[prefix .. k] = true end
  end
end

-- The public names, as they are written in headings: `lxmpp.name`,
-- `st.name`, `s:name(`, `jid.name`, `p:name(`, `c:name(`, `comp:name(`,
-- `srv:name(`, `forms.name`, `f:name(`, `storage.name`, `store:name(`,
-- `transport.name`, and
-- plugin functions `c.NAME:name(` or `NAME.name` (both are the name
-- NAME.name). Methods clients and components share are `c:` ones.
local function public_names()
  local names = {}
  for k, v in pairs(lxmpp) do
    -- tables are the submodules (stanza, jid, task) and the internal lxmpp.core
    if type(v) ~= "table" then names["lxmpp." .. k] = true end
  end
  for k in pairs(st) do names["st." .. k] = true end
  for k, v in pairs(st.stanza_mt) do
    if type(v) == "function" and not k:match("^__") then names["s:" .. k] = true end
  end
  for k in pairs(jid) do names["jid." .. k] = true end
  local parser = lxmpp.stream_parser({})
  functions_of(getmetatable(parser).__index, names, "p:")
  parser:close()

  local client = require "lxmpp.client"
  local plugins = gen.plugins()
  local forwarded = {}                         -- NAME.method, also reached as c:forward
  for _, name in ipairs(plugins) do
    local mod = require("lxmpp.plugins." .. name)
    for _, meth in pairs(mod.forwards or {}) do forwarded[name .. "." .. meth] = true end
    if mod.__call then names["c:" .. name] = true end           -- c:time(to)
    for k, v in pairs(mod) do
      local full = name .. "." .. k
      if type(v) == "function" and not k:match("^__") and k ~= "init" and not forwarded[full]
        and not PLUGIN_INTERNAL[full] then
        names[full] = true
      end
    end
  end
  functions_of(client.Client, names, "c:", CLIENT_INTERNAL)
  functions_of(require("lxmpp.session").Session, names, "c:", CLIENT_INTERNAL)
  functions_of(require("lxmpp.component").Component, names, "comp:")
  functions_of(require("lxmpp.server").Server, names, "srv:", SERVER_INTERNAL)

  local forms = require "lxmpp.forms"
  for k in pairs(forms) do names["forms." .. k] = true end
  functions_of(getmetatable(forms.new{ { var = "x" } }).__index, names, "f:")
  local storage = require "lxmpp.server.storage"
  for k in pairs(storage) do names["storage." .. k] = true end
  functions_of(require "lxmpp.transport", names, "transport.")
  local store = assert(storage.open(nil))
  functions_of(getmetatable(store).__index, names, "store:")
  store:close()
  return names, forwarded
end

-- Taken before any example runs: lxmpp.register_plugin in an example adds
-- client methods (c:fortune_ask) that are not lxmpp's.
local PUBLIC, FORWARDED = public_names()

describe("docs/api.md", function ()
  local api = documents[2]
  local headings, parse_errors = gen.headings(api.text)
  local documented = {}
  for _, heading in ipairs(headings) do
    for _, sig in ipairs(heading.sigs) do documented[sig.key] = heading end
  end

  it("has headings whose code spans are signatures", function ()
    assert(#parse_errors == 0, "cannot parse: " .. table.concat(parse_errors, "; "))
  end)

  it("documents every public function and value", function ()
    local missing, stale = {}, {}
    for _, name in ipairs(sorted_keys(PUBLIC)) do
      if not documented[name] and not NOT_YET_DOCUMENTED[name] then missing[#missing + 1] = name end
    end
    for _, name in ipairs(sorted_keys(NOT_YET_DOCUMENTED)) do
      if documented[name] then stale[#stale + 1] = name end
    end
    assert(#missing == 0, "not documented in docs/api.md (add a ### heading and an example): "
      .. table.concat(missing, ", "))
    assert(#stale == 0, "documented now, take off NOT_YET_DOCUMENTED: " .. table.concat(stale, ", "))
  end)

  it("documents nothing the library lacks", function ()
    local unknown = {}
    for _, name in ipairs(sorted_keys(documented)) do
      if not PUBLIC[name] and not FORWARDED[name] then
        unknown[#unknown + 1] = name .. " (line " .. documented[name].line .. ")"
      end
    end
    assert(#unknown == 0, "docs/api.md documents what the library does not have: "
      .. table.concat(unknown, ", "))
  end)

  it("has an example using each documented name", function ()
    local blocks_at = {}
    for _, heading in ipairs(api.headings) do blocks_at[heading.line] = heading.blocks end
    local lacking = {}
    for _, heading in ipairs(headings) do
      local code = {}
      for _, block in ipairs(blocks_at[heading.line] or {}) do
        if block.runnable then code[#code + 1] = table.concat(block.lines, "\n") end
      end
      code = table.concat(code, "\n")
      for _, sig in ipairs(heading.sigs) do
        -- c:vcard_set{...} uses c:vcard_set( too
        local brace = sig.use:match("%($") and sig.use:gsub("%($", "{")
        if not code:find(sig.use, 1, true) and not (brace and code:find(brace, 1, true)) then
          lacking[#lacking + 1] = sig.key .. " (line " .. heading.line .. ")"
        end
      end
    end
    table.sort(lacking)
    assert(#lacking == 0, "no runnable example uses: " .. table.concat(lacking, ", "))
  end)
end)

--- LuaLS stubs --------------------------------------------------------------------

-- types/ is what tools/gen-stubs.lua makes of the headings now (`make docs`
-- rewrites it): the editors' completion cannot drift from the reference.
describe("types/", function ()
  it("is what tools/gen-stubs.lua generates from docs/api.md", function ()
    local files, errors = gen.generate(read("docs/api.md"))
    assert(files, "docs/api.md: " .. table.concat(errors or {}, "; "))
    local stale = {}
    for _, path in ipairs(sorted_keys(files)) do
      if not file_exists(path) or read(path) ~= files[path] then stale[#stale + 1] = path end
    end
    local ls = io.popen('cd "' .. ROOT .. '" && find types -name "*.lua"')
    for path in ls:lines() do
      if not files[path] then stale[#stale + 1] = path .. " (not generated)" end
    end
    ls:close()
    assert(#stale == 0, "out of date, run `make docs`: " .. table.concat(stale, ", "))
  end)

  it(".luarc.json points editors at types/", function ()
    assert.truthy(read(".luarc.json"):find('"types"', 1, true))
  end)
end)

--- Links -------------------------------------------------------------------------

describe("links", function ()
  local paths = { "README.md" }
  local ls = io.popen('ls "' .. ROOT .. '/docs"')
  for name in ls:lines() do
    if name:match("%.md$") then paths[#paths + 1] = "docs/" .. name end
  end
  ls:close()

  local anchors = {}
  local function anchors_of(path)
    if not anchors[path] then
      local set = {}
      for _, heading in ipairs(parse_markdown(path).headings) do set[slug(heading.title)] = true end
      anchors[path] = set
    end
    return anchors[path]
  end

  for _, path in ipairs(paths) do
    it("in " .. path .. " lead somewhere", function ()
      local dir = path:match("^(.*)/") or ""
      local broken = {}
      local text = read(path):gsub("```.-```", "") -- not inside code blocks
      for target in text:gmatch("%]%(([^)%s]+)%)") do
        if not target:match("^%a[%w+.-]*:") then -- not http:, mailto:, ...
          local file, anchor = target:match("^([^#]*)#?(.*)$")
          local rel = file == "" and path or ((dir ~= "" and dir .. "/" or "") .. file)
          rel = rel:gsub("/%./", "/"):gsub("^%./", "")
          while rel:find("[^/]+/%.%./") do rel = rel:gsub("[^/]+/%.%./", "", 1) end
          if not file_exists(rel) then
            broken[#broken + 1] = target
          elseif anchor ~= "" and rel:match("%.md$") and not anchors_of(rel)[anchor] then
            broken[#broken + 1] = target .. " (no such heading)"
          end
        end
      end
      assert(#broken == 0, path .. ": broken links: " .. table.concat(broken, ", "))
    end)
  end
end)

--- The rock -------------------------------------------------------------------

-- The rockspec lists its files explicitly (no globbing in the builtin
-- backend): every C source and Lua module must be in it, or the installed
-- rock lacks them while `make` (which globs) works.
describe("lxmpp-scm-1.rockspec", function ()
  local function list(command)
    local files = {}
    local p = io.popen(command)
    for line in p:lines() do files[#files + 1] = line end
    p:close()
    table.sort(files)
    return files
  end

  local rockspec = {}
  assert(loadfile(ROOT .. "/lxmpp-scm-1.rockspec", "t", rockspec))()
  local listed = {}
  for module, spec in pairs(rockspec.build.modules) do
    if type(spec) == "string" then
      listed[spec] = module
    else
      for _, source in ipairs(spec.sources) do listed[source] = module end
    end
  end

  -- The files git tracks (work in progress, not yet added, is not held
  -- against the rockspec); every file outside a git checkout.
  local function files(pattern, fallback)
    local tracked = list('git -C "' .. ROOT .. '" ls-files -- "' .. pattern .. '" 2>/dev/null')
    if #tracked > 0 then return tracked end
    return list('cd "' .. ROOT .. '" && ' .. fallback)
  end

  it("builds every csrc/*.c into lxmpp.core", function ()
    local missing = {}
    for _, file in ipairs(files("csrc/*.c", "ls csrc/*.c")) do
      if listed[file] ~= "lxmpp.core" then missing[#missing + 1] = file end
    end
    assert(#missing == 0, "not in the sources of lxmpp.core: " .. table.concat(missing, ", "))
  end)

  it("installs every Lua module under its name", function ()
    local wrong = {}
    for _, file in ipairs(files("lua/*.lua", 'find lua -name "*.lua"')) do
      local module = file:gsub("^lua/", ""):gsub("/init%.lua$", ""):gsub("%.lua$", ""):gsub("/", ".")
      if listed[file] ~= module then wrong[#wrong + 1] = file .. " as " .. module end
    end
    assert(#wrong == 0, "not in build.modules: " .. table.concat(wrong, ", "))
  end)

  it("lists only files that exist", function ()
    local absent = {}
    for file in pairs(listed) do
      if not file_exists(file) then absent[#absent + 1] = file end
    end
    table.sort(absent)
    assert(#absent == 0, "listed but absent: " .. table.concat(absent, ", "))
    assert.is_true(file_exists(rockspec.build.install.bin.lxmpp))
  end)
end)
