-- LuaLS stubs (types/) from the one source of the API reference: the `###`
-- headings of docs/api.md. A heading's code spans are signatures
-- (`c:roster_get([timeout])`, `lxmpp.connect{...}`, `st.iq(attr)`); the first
-- sentence of the paragraph under it is the description.
--
--   lua5.4 tools/gen-stubs.lua [ROOT]   writes ROOT/types/*.lua (`make docs`)
--   require "tools.gen-stubs"          the parser and generator, for spec/docs_spec.lua
--
-- Which class a method goes to (lxmpp.Session for what clients and components
-- share, the plugin objects behind c:NAME forwards) is read from the library.

local G = {}

-- The prefixes a signature may start with, and the class or module each names.
G.PREFIXES = {
  lxmpp = { module = "lxmpp" },
  st = { module = "lxmpp.stanza" },
  jid = { module = "lxmpp.jid" },
  forms = { module = "lxmpp.forms" },
  storage = { module = "lxmpp.server.storage" },
  transport = { module = "lxmpp.transport" },
  s = { class = "lxmpp.Stanza" },
  p = { class = "lxmpp.StreamParser" },
  c = { class = "lxmpp.Client" },
  comp = { class = "lxmpp.Component" },
  srv = { class = "lxmpp.Server" },
  f = { class = "lxmpp.Form" },
  store = { class = "lxmpp.Store" },
}

-- The client plugins lxmpp comes with: the modules of lua/lxmpp/plugins/
-- that lxmpp.register_plugin registers (not those that install themselves
-- into the client class).
function G.plugins()
  local dir = assert(package.searchpath("lxmpp.client", package.path)):gsub("client%.lua$", "plugins")
  local list = {}
  local ls = io.popen('ls "' .. dir .. '"')
  for file in ls:lines() do
    local name = file:match("^([%a_][%w_]*)%.lua$")
    if name and not require("lxmpp.plugins." .. name).install then list[#list + 1] = name end
  end
  ls:close()
  table.sort(list)
  return list
end

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

-- "(a, b [, c [, d]])" -> { {name = "a"}, ..., {name = "c", optional = true} }
-- or nil, why.
local function parse_params(list)
  local inner = list:sub(2, -2)
  local params, depth, current, optional = {}, 0, "", false
  local function finish()
    local name = trim(current)
    if name == "" then
      if #params > 0 or inner:match("%S") then return "an empty parameter" end
      return nil
    end
    if not (name:match("^[%a_][%w_]*$") or name == "...") then return "'" .. name .. "' is not a parameter name" end
    params[#params + 1] = { name = name, optional = optional }
    current, optional = "", false
  end
  for i = 1, #inner do
    local ch = inner:sub(i, i)
    if ch == "[" then
      depth = depth + 1
    elseif ch == "]" then
      depth = depth - 1
      if depth < 0 then return nil, "unbalanced ]" end
    elseif ch == "," then
      local why = finish()
      if why then return nil, why end
    else
      if current:match("^%s*$") and ch:match("%S") then optional = depth > 0 end
      current = current .. ch
    end
  end
  if depth ~= 0 then return nil, "unbalanced [" end
  local why = finish()
  if why then return nil, why end
  return params
end

-- One code span of a heading: a signature table, nil when the span does not
-- start with a known prefix (`tostring(s)`, `room:say(body)`), or false, why.
function G.parse_signature(span)
  local plugin, method, rest = span:match("^c%.([%a_][%w_]*):([%a_][%w_]*)(.*)$")
  local sig
  if plugin then
    sig = { prefix = "c", plugin = plugin, sep = ":", name = method, key = plugin .. "." .. method,
      use = plugin .. ":" .. method .. "(" }
  else
    local prefix, sep, name
    prefix, sep, name, rest = span:match("^([%a_][%w_]*)([.:])([%a_][%w_]*)(.*)$")
    if not prefix then return nil end
    local known = G.PREFIXES[prefix]
    if known and (sep == ":") == (known.class ~= nil) then
      sig = { prefix = prefix, sep = sep, name = name, key = prefix .. sep .. name,
        use = sep == ":" and ":" .. name .. "(" or prefix .. "." .. name }
    elseif sep == "." and G.plugin_set()[prefix] then    -- a plugin module's function: rpc.encode
      sig = { prefix = prefix, plugin = prefix, sep = ".", name = name, key = prefix .. "." .. name,
        use = prefix .. "." .. name }
    else
      return nil
    end
  end
  if rest == "" then
    if sig.sep == ":" then return false, "`" .. span .. "`: a method without a parameter list" end
    sig.field = true
  elseif rest == "{...}" or rest:match("^%b{}$") then
    sig.params = { { name = "opts", table = true } }
    sig.use = sig.use:gsub("%($", "")
  elseif rest:match("^%b()$") then
    local params, why = parse_params(rest)
    if not params then return false, "`" .. span .. "`: " .. why end
    sig.params = params
  else
    return false, "`" .. span .. "`: cannot read '" .. rest .. "' as a parameter list"
  end
  return sig
end

local plugin_set_cache
function G.plugin_set()
  if not plugin_set_cache then
    plugin_set_cache = {}
    for _, name in ipairs(G.plugins()) do plugin_set_cache[name] = true end
  end
  return plugin_set_cache
end

-- A description: the first sentence of the paragraph under the heading,
-- on one line, links reduced to their text.
local function describe(lines, i)
  while lines[i] and lines[i]:match("^%s*$") do i = i + 1 end
  local para = {}
  while lines[i] and not lines[i]:match("^%s*$") and not lines[i]:match("^```") and not lines[i]:match("^#")
    and not lines[i]:match("^|") do
    para[#para + 1] = trim(lines[i])
    i = i + 1
  end
  local text = table.concat(para, " "):gsub("%[([^%]]*)%]%b()", "%1")
  -- a full stop after a word, a code span or a bracket, before a capital or a code span
  return text:match("^(.-[%w`%)\"]%.)%s+[%u`]") or text
end

-- The `###` headings of a Markdown text (outside code blocks), each with its
-- line, title, signatures and description; errors lists what cannot be parsed.
function G.headings(text)
  local lines = {}
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  local headings, errors, fence = {}, {}, false
  for i, line in ipairs(lines) do
    if line:match("^```") then
      fence = not fence
    elseif not fence then
      local title = line:match("^###%s+(.-)%s*$")
      if title then
        local h = { line = i, title = title, sigs = {}, description = describe(lines, i + 1) }
        for span in title:gmatch("`([^`]*)`") do
          local sig, why = G.parse_signature(span)
          if sig then
            sig.heading = h
            h.sigs[#h.sigs + 1] = sig
          elseif sig == false then
            errors[#errors + 1] = "line " .. i .. ": " .. why
          end
        end
        headings[#headings + 1] = h
      end
    end
  end
  return headings, errors
end

--- Stubs ------------------------------------------------------------------------

local TYPES = {
  timeout = "number", seconds = "number", port = "number", indent = "number",
  fn = "function", handler = "function",
  attr = "table", opts = "table", options = "table", layout = "table", values = "table", config = "table",
  stanza = "lxmpp.Stanza", s = "lxmpp.Stanza", iq = "lxmpp.Stanza", message = "lxmpp.Stanza",
  child = "lxmpp.Stanza", x = "lxmpp.Stanza", payload = "lxmpp.Stanza", query = "lxmpp.Stanza",
  xml = "string", name = "string", xmlns = "string", text = "string", body = "string", node = "string",
  service = "string", to = "string", nick = "string", reason = "string", path = "string", bytes = "string",
  data = "string", mime = "string", filename = "string", var = "string", room_jid = "string",
}

-- What the constructors return (the rest return `any ...`).
local RETURNS = {
  ["lxmpp.connect"] = "lxmpp.Client?", ["lxmpp.server"] = "lxmpp.Server", ["lxmpp.component"] = "lxmpp.Component",
  ["lxmpp.stream_parser"] = "lxmpp.StreamParser", ["forms.new"] = "lxmpp.Form", ["storage.open"] = "lxmpp.Store?",
  ["st.stanza"] = "lxmpp.Stanza", ["st.message"] = "lxmpp.Stanza", ["st.presence"] = "lxmpp.Stanza",
  ["st.iq"] = "lxmpp.Stanza", ["st.reply"] = "lxmpp.Stanza", ["st.error_reply"] = "lxmpp.Stanza",
  ["st.parse"] = "lxmpp.Stanza?", ["st.clone"] = "lxmpp.Stanza", ["s:clone"] = "lxmpp.Stanza",
  ["s:tag"] = "lxmpp.Stanza", ["s:text"] = "lxmpp.Stanza", ["s:up"] = "lxmpp.Stanza",
  ["s:reset"] = "lxmpp.Stanza", ["s:text_tag"] = "lxmpp.Stanza", ["s:query"] = "lxmpp.Stanza",
  ["s:body"] = "lxmpp.Stanza", ["s:add_child"] = "lxmpp.Stanza", ["s:add_direct_child"] = "lxmpp.Stanza",
  ["s:get_child"] = "lxmpp.Stanza?", ["s:get_child_text"] = "string?", ["s:get_text"] = "string",
  ["s:pretty"] = "string", ["s:top_tag"] = "string", ["c:plugin"] = "table", ["c:plugin_loaded"] = "boolean",
}

local function emit_function(out, owner, sig)
  local desc = sig.heading.description
  if desc ~= "" then out[#out + 1] = "--- " .. desc end
  if sig.field then
    out[#out + 1] = owner .. "." .. sig.name .. " = nil ---@type any"
    return
  end
  local names = {}
  for _, p in ipairs(sig.params) do
    local ty = p.table and "table" or TYPES[p.name] or "any"
    if p.name == "..." then
      out[#out + 1] = "---@param ... any"
    else
      out[#out + 1] = "---@param " .. p.name .. (p.optional and "? " or " ") .. ty
    end
    names[#names + 1] = p.name
  end
  out[#out + 1] = "---@return " .. (RETURNS[sig.key] or "any ...")
  out[#out + 1] = "function " .. owner .. sig.sep .. sig.name .. "(" .. table.concat(names, ", ") .. ") end"
end

local function var_of(class) return (class:gsub("[%.]", "_")) end

-- The stub files, { [relative path] = text }, for the headings of api.md.
function G.generate(text)
  local headings, errors = G.headings(text)
  if #errors > 0 then return nil, errors end
  local session = require("lxmpp.session").Session
  local plugin_mods = {}
  for _, name in ipairs(G.plugins()) do plugin_mods[name] = require("lxmpp.plugins." .. name) end
  local forward_of = {}                        -- c:forward -> { plugin, method }
  for name, mod in pairs(plugin_mods) do
    for cname, meth in pairs(mod.forwards or {}) do forward_of[cname] = { name, meth } end
  end

  -- owner (class or module) -> list of { sig, as = name override, sep }
  local members, seen = {}, {}
  local function add(owner, sig, override)
    local key = owner .. (override and override.sep or sig.sep) .. (override and override.name or sig.name)
    if seen[key] then return end
    seen[key] = true
    members[owner] = members[owner] or {}
    local copy = setmetatable(override or {}, { __index = sig })
    table.insert(members[owner], copy)
  end
  for _, h in ipairs(headings) do
    for _, sig in ipairs(h.sigs) do
      if sig.plugin then
        add("lxmpp.plugin." .. sig.plugin, sig)
      elseif sig.prefix == "c" and session[sig.name] then
        add("lxmpp.Session", sig)
      else
        local pre = G.PREFIXES[sig.prefix]
        local fw = sig.prefix == "c" and forward_of[sig.name]
        if sig.prefix == "c" and plugin_mods[sig.name] then      -- c:time(to): a callable plugin object
          add("lxmpp.plugin." .. sig.name, sig, { name = "__call", sep = ":", call = true })
        else
          add(pre.class or pre.module, sig)
        end
        if fw then add("lxmpp.plugin." .. fw[1], sig, { name = fw[2], sep = ":" }) end
      end
    end
  end

  local function section(out, owner, header)
    for _, line in ipairs(header) do out[#out + 1] = line end
    out[#out + 1] = "local " .. var_of(owner) .. " = {}"
    local list = members[owner] or {}
    table.sort(list, function (a, b) return a.name < b.name end)
    for _, m in ipairs(list) do
      if not m.call then
        out[#out + 1] = ""
        emit_function(out, var_of(owner), m)
      end
    end
    out[#out + 1] = ""
  end

  local files = {}
  local function file(path, parts)
    files[path] = "---@meta\n-- Generated by tools/gen-stubs.lua from the ### headings of docs/api.md"
      .. " (`make docs`); do not edit.\n\n" .. table.concat(parts, "\n")
  end

  -- lxmpp and its objects
  local out = {}
  section(out, "lxmpp", { "---@class lxmpp", "---@field stanza lxmpp.stanza", "---@field jid lxmpp.jid" })
  section(out, "lxmpp.Session", { "--- What clients and components share.", "---@class lxmpp.Session" })
  local client_header = { "---@class lxmpp.Client: lxmpp.Session", "---@field jid string the bound full JID" }
  local names = G.plugins()
  table.sort(names)
  for _, name in ipairs(names) do
    local call = (members["lxmpp.plugin." .. name] or {})
    local callable
    for _, m in ipairs(call) do if m.call then callable = m end end
    local ty = "lxmpp.plugin." .. name
    if callable then
      local ps = {}
      for _, p in ipairs(callable.params) do
        local pname = p.name == "..." and "..." or p.name .. (p.optional and "?" or "")
        ps[#ps + 1] = pname .. ": " .. (TYPES[p.name] or "any")
      end
      ty = ty .. "|fun(self: lxmpp.Client, " .. table.concat(ps, ", ") .. "): any"
    end
    client_header[#client_header + 1] = "---@field " .. name .. " " .. ty
  end
  section(out, "lxmpp.Client", client_header)
  section(out, "lxmpp.Component", { "---@class lxmpp.Component: lxmpp.Session" })
  section(out, "lxmpp.Server", { "---@class lxmpp.Server" })
  section(out, "lxmpp.StreamParser", { "---@class lxmpp.StreamParser" })
  for _, name in ipairs(names) do
    section(out, "lxmpp.plugin." .. name, { "--- The client's " .. name .. " plugin object (c." .. name .. ").",
      "---@class lxmpp.plugin." .. name, "---@field client lxmpp.Client", "---@field name string" })
  end
  out[#out + 1] = "return lxmpp"
  file("types/lxmpp.lua", out)

  out = {}
  section(out, "lxmpp.stanza", { "---@class lxmpp.stanza" })
  section(out, "lxmpp.Stanza", { "---@class lxmpp.Stanza", "---@field name string",
    "---@field attr table<string, string>", "---@field tags lxmpp.Stanza[]" })
  out[#out + 1] = "return lxmpp_stanza"
  file("types/lxmpp/stanza.lua", out)

  out = {}
  section(out, "lxmpp.jid", { "---@class lxmpp.jid" })
  out[#out + 1] = "return lxmpp_jid"
  file("types/lxmpp/jid.lua", out)

  out = {}
  section(out, "lxmpp.forms", { "---@class lxmpp.forms" })
  section(out, "lxmpp.Form", { "---@class lxmpp.Form" })
  out[#out + 1] = "return lxmpp_forms"
  file("types/lxmpp/forms.lua", out)

  out = {}
  section(out, "lxmpp.server.storage", { "---@class lxmpp.server.storage" })
  section(out, "lxmpp.Store", { "---@class lxmpp.Store" })
  out[#out + 1] = "return lxmpp_server_storage"
  file("types/lxmpp/server/storage.lua", out)
  return files
end

local function main(root)
  root = root or "."
  local f = assert(io.open(root .. "/docs/api.md", "rb"))
  local text = f:read("*a")
  f:close()
  local files, errors = G.generate(text)
  if not files then
    io.stderr:write("docs/api.md: headings that are not signatures:\n  ", table.concat(errors, "\n  "), "\n")
    os.exit(1)
  end
  for path, body in pairs(files) do
    os.execute('mkdir -p "' .. root .. "/" .. path:match("^(.*)/") .. '"')
    local out = assert(io.open(root .. "/" .. path, "wb"))
    out:write(body)
    out:close()
  end
end

-- run as a script, or loaded as a library (loadfile(path)("tools.gen-stubs"))
local arg1 = ...
if arg1 ~= "tools.gen-stubs" then main(arg1) end
return G
