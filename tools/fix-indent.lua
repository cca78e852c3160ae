#!/usr/bin/env lua5.4
-- Converts the leading tabs of the Lua sources to two spaces per tab (the
-- house indentation, .editorconfig), or with --check lists the files that
-- still have some and exits 1.
--
--   lua5.4 tools/fix-indent.lua [--check] [path ...]
--
-- Without paths it walks lua/, spec/, bench/ and examples/ (every *.lua) and
-- bin/lxmpp, from the current directory (the checkout's root). Only the
-- whitespace before a line's first other character changes, and never on a
-- line that begins inside a long string or long comment ([[ ]], [==[ ]==],
-- --[[ ]]): there the tabs are content. A small scanner follows short
-- strings, comments and long brackets to know where each line begins.

local DEFAULT_ROOTS = { "lua", "spec", "bench", "examples" }
local DEFAULT_FILES = { "bin/lxmpp" }
local INDENT = "  "

-- For each line of `src`, true when that line begins inside a long bracket
-- (string or comment). `src` is a whole Lua chunk.
local function lines_in_long_brackets(src)
  local inside = {}
  local line = 1
  local i, n = 1, #src
  local long_close -- the "]==]" that ends the long bracket we are in, if any
  inside[1] = false
  while i <= n do
    local c = src:sub(i, i)
    if c == "\n" then
      line = line + 1
      inside[line] = long_close ~= nil
      i = i + 1
    elseif long_close then
      local j = src:find(long_close, i, true)
      if not j then
        -- unterminated: the rest of the file is inside
        for _ in src:sub(i):gmatch("\n") do
          line = line + 1
          inside[line] = true
        end
        break
      end
      for _ in src:sub(i, j - 1):gmatch("\n") do
        line = line + 1
        inside[line] = true
      end
      i = j + #long_close
      long_close = nil
    elseif c == "-" and src:sub(i + 1, i + 1) == "-" then
      local eq = src:match("^%[(=*)%[", i + 2)
      if eq then
        long_close = "]" .. eq .. "]"
        i = i + 4 + #eq
      else
        local j = src:find("\n", i, true)
        i = j or n + 1
      end
    elseif c == "[" and src:match("^%[=*%[", i) then
      local eq = src:match("^%[(=*)%[", i)
      long_close = "]" .. eq .. "]"
      i = i + 2 + #eq
    elseif c == '"' or c == "'" then
      -- a short string ends at its unescaped quote or at the line's end
      -- (an error in Lua, but no reason to lose our place); "\z" and a
      -- backslash-newline continue it onto the next line
      local j = i + 1
      while j <= n do
        local d = src:sub(j, j)
        if d == "\\" then
          local e = src:sub(j + 1, j + 1)
          j = j + 2
          if e == "\n" then
            line = line + 1
            inside[line] = true
          elseif e == "z" then
            while src:find("^%s", j) do
              if src:sub(j, j) == "\n" then
                line = line + 1
                inside[line] = true
              end
              j = j + 1
            end
          end
        elseif d == c then
          break
        elseif d == "\n" then
          j = j - 1
          break
        else
          j = j + 1
        end
      end
      i = j + 1
    else
      i = i + 1
    end
  end
  return inside
end

-- Returns the converted text and how many lines changed.
local function convert(src)
  local inside = lines_in_long_brackets(src)
  local out, changed, line = {}, 0, 0
  for text, nl in src:gmatch("([^\n]*)(\n?)") do
    if text == "" and nl == "" then break end
    line = line + 1
    local lead, rest = text:match("^([ \t]*)(.*)$")
    if not inside[line] and lead:find("\t", 1, true) then
      lead = lead:gsub("\t", INDENT)
      changed = changed + 1
    end
    out[#out + 1] = lead .. rest .. nl
  end
  return table.concat(out), changed
end

local function read(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  assert(f:write(s))
  assert(f:close())
end

-- every *.lua below `root` (through find: Lua has no directory listing)
local function lua_files(root, into)
  local p = io.popen("find " .. root .. " -type f -name '*.lua' 2>/dev/null | LC_ALL=C sort")
  for path in p:lines() do into[#into + 1] = path end
  p:close()
end

local function main(args)
  local check = false
  local paths = {}
  for _, a in ipairs(args) do
    if a == "--check" then check = true
    elseif a == "-h" or a == "--help" then
      print("usage: lua5.4 tools/fix-indent.lua [--check] [path ...]")
      return 0
    else
      -- a folder gives its *.lua files, a *.lua file itself; anything else
      -- (bin/lxmpp) is taken as a file
      local before = #paths
      lua_files(a, paths)
      if #paths == before then paths[#paths + 1] = a end
    end
  end
  if #args == 0 or (#args == 1 and check) then
    for _, root in ipairs(DEFAULT_ROOTS) do lua_files(root, paths) end
    for _, f in ipairs(DEFAULT_FILES) do paths[#paths + 1] = f end
  end
  local bad = 0
  for _, path in ipairs(paths) do
    local src, err = read(path)
    if not src then
      io.stderr:write("fix-indent: ", err, "\n")
      return 2
    end
    local fixed, changed = convert(src)
    if changed > 0 then
      bad = bad + 1
      if check then
        print(("%s: %d line(s) indented with tabs"):format(path, changed))
      else
        write(path, fixed)
        print(("%s: %d line(s) converted"):format(path, changed))
      end
    end
  end
  if check and bad > 0 then
    io.stderr:write(("fix-indent: %d file(s) with leading tabs; run lua5.4 tools/fix-indent.lua\n"):format(bad))
    return 1
  end
  return 0
end

-- loaded as a module (by its spec) it gives its functions; run, it does its work
if ... == "tools.fix-indent" or ... == "fix-indent" then
  return { convert = convert, lines_in_long_brackets = lines_in_long_brackets }
end
os.exit(main({ ... }))
