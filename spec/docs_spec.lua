-- Keeps the docs from drifting: every documented example runs, in CI.
--
-- 1. Every ```lua block of README.md and docs/api.md whose first line is
--    `-- example` runs without error, and prints exactly the lines its
--    `--> text` comments show, in order (runs of spaces and tabs compare as
--    one space, trailing ones are ignored). A block with no `-->` comment
--    only has to run. Each block runs alone, in its own environment.
-- 2. Every public name of lxmpp, lxmpp.stanza (functions, values and stanza
--    methods), lxmpp.jid and the stream parser's methods is the subject of a
--    `###` heading of docs/api.md, written `lxmpp.name`, `st.name`,
--    `s:name(`, `jid.name` or `p:name(`; no such heading names something the
--    library lacks; and the section under each heading has a runnable
--    example that uses each name it documents.
-- 3. Relative links in README.md and docs/*.md lead to files (and headings)
--    that exist.
-- 4. lxmpp-scm-1.rockspec lists every csrc/*.c and Lua module, so that the
--    installed rock has what `make build` has.

local ROOT = debug.getinfo(1, "S").source:match("^@(.*)/spec/[^/]*$") or "."

local function read(rel)
	local f = assert(io.open(ROOT .. "/" .. rel, "rb"))
	local text = f:read("a")
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
		local parts = table.pack(...)
		for i = 1, parts.n do parts[i] = tostring(parts[i]) end
		local text = table.concat(parts, "\t", 1, parts.n)
		for line in (text .. "\n"):gmatch("([^\n]*)\n") do
			printed[#printed + 1] = normalize(line)
		end
	end
	local env = setmetatable({ print = capture }, { __index = _G })
	-- padded so that error messages give the line in the Markdown file
	local code = ("\n"):rep(block.first - 1) .. table.concat(block.lines, "\n")
	local chunk = assert(load(code, "@" .. block.path, "t", env))
	chunk()
	return printed
end

local function describe_block(block)
	local where = block.path .. ":" .. block.first
	if block.heading then where = where .. " (" .. block.heading.title .. ")" end
	return where
end

local documents = {
	parse_markdown("README.md"),
	parse_markdown("docs/api.md"),
}

describe("runnable examples", function ()
	for _, doc in ipairs(documents) do
		local count = 0
		for _, block in ipairs(doc.blocks) do
			if block.runnable then
				count = count + 1
				it(describe_block(block), function ()
					local printed = run_block(block)
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

-- The public names, as they are written in headings.
local function public_names()
	local names = {}
	for k, v in pairs(lxmpp) do
		-- tables are the submodules (stanza, jid) and the internal lxmpp.core
		if type(v) ~= "table" then names["lxmpp." .. k] = true end
	end
	for k in pairs(st) do names["st." .. k] = true end
	for k, v in pairs(st.stanza_mt) do
		if type(v) == "function" and not k:match("^__") then names["s:" .. k] = true end
	end
	for k in pairs(jid) do names["jid." .. k] = true end
	local parser = lxmpp.stream_parser({})
	for k, v in pairs(getmetatable(parser).__index) do
		if type(v) == "function" then names["p:" .. k] = true end
	end
	parser:close()
	return names
end

-- Names in a heading's code spans, with the text an example must contain to
-- use each: "st.message" -> "st.message", "s:tag" -> ":tag(".
local function heading_names(title)
	local found = {}
	for span in title:gmatch("`([^`]*)`") do
		for prefix, name in span:gmatch("%f[%w_]([%a_]+)%.([%a_][%w_]*)") do
			if prefix == "lxmpp" or prefix == "st" or prefix == "jid" then
				found[prefix .. "." .. name] = prefix .. "." .. name
			end
		end
		for prefix, name in span:gmatch("%f[%w_]([sp]):([%a_][%w_]*)%(") do
			found[prefix .. ":" .. name] = ":" .. name .. "("
		end
	end
	return found
end

describe("docs/api.md", function ()
	local api = documents[2]
	local documented = {}
	for _, heading in ipairs(api.headings) do
		if heading.level == 3 then
			for name in pairs(heading_names(heading.title)) do documented[name] = heading end
		end
	end

	it("documents every public function and value", function ()
		local missing = {}
		for _, name in ipairs(sorted_keys(public_names())) do
			if not documented[name] then missing[#missing + 1] = name end
		end
		assert(#missing == 0, "not documented in docs/api.md (add a ### heading and an example): "
			.. table.concat(missing, ", "))
	end)

	it("documents nothing the library lacks", function ()
		local public, unknown = public_names(), {}
		for _, name in ipairs(sorted_keys(documented)) do
			if not public[name] then
				unknown[#unknown + 1] = name .. " (line " .. documented[name].line .. ")"
			end
		end
		assert(#unknown == 0, "docs/api.md documents what the library does not have: "
			.. table.concat(unknown, ", "))
	end)

	it("has an example using each documented name", function ()
		local lacking = {}
		for _, heading in ipairs(api.headings) do
			if heading.level == 3 then
				local code = {}
				for _, block in ipairs(heading.blocks) do
					if block.runnable then code[#code + 1] = table.concat(block.lines, "\n") end
				end
				code = table.concat(code, "\n")
				for name, use in pairs(heading_names(heading.title)) do
					if not code:find(use, 1, true) then
						lacking[#lacking + 1] = name .. " (line " .. heading.line .. ")"
					end
				end
			end
		end
		table.sort(lacking)
		assert(#lacking == 0, "no runnable example uses: " .. table.concat(lacking, ", "))
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
