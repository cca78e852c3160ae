-- lxmpp.stanza: XMPP stanzas as Prosody-shaped Lua tables.
--
-- An element is { name = "message", attr = { to = ... }, tags = { <child
-- elements> }, [1..n] = <children in document order: elements and strings> },
-- with the shared metatable `stanza_mt` (whose __index is itself, so methods
-- added to it by users show up on every stanza, as in Prosody). A builder
-- remembers where :tag() descended in `last_add` (a stack of open elements).
--
-- The namespace of an element is attr.xmlns where it differs from its
-- parent's; a child with attr.xmlns == nil is in its parent's namespace.
--
-- Every builder validates what it is given (element and attribute names,
-- attribute values, text: valid UTF-8 and XML 1.0 characters only) and raises
-- at the caller's line; lxmpp.core's serializer validates again whatever the
-- table holds when it is written, so no string ever yields bad XML.

local error = error
local type = type
local pairs = pairs
local ipairs = ipairs
local next = next
local setmetatable = setmetatable
local getmetatable = getmetatable
local s_format = string.format
local s_gsub = string.gsub
local s_byte = string.byte
local s_sub = string.sub
local s_find = string.find
local s_match = string.match
local s_rep = string.rep
local t_concat = table.concat

local core = require "lxmpp.core"
local valid_name = core.valid_name
local valid_attr_name = core.valid_attr_name
local valid_text = core.valid_text
local serialize = core.serialize
local parse_element = core.parse_element

local xmlns_stanzas = "urn:ietf:params:xml:ns:xmpp-stanzas"

local stanza_mt = { __name = "lxmpp.stanza" }
stanza_mt.__index = stanza_mt

local function is_stanza(x)
  return getmetatable(x) == stanza_mt
end

--- Validation -------------------------------------------------------------
-- Each check takes `level`: where the user's call is, seen from the check
-- itself (1 would be the check), so error(msg, level) points at user code.
-- Callers pass their own level + 1. No tail calls on these paths: a tail call
-- removes a frame and would shift the reported line.

-- Printable, bounded rendering of a rejected string for error messages.
local function show(s)
  if #s > 40 then s = s_sub(s, 1, 40) .. "..." end
  return "'" .. s_gsub(s, "[^\32-\126]", function (c)
    return s_format("\\x%02x", s_byte(c))
  end) .. "'"
end

local function check_name(name, level)
  if type(name) ~= "string" then
    error("lxmpp.stanza: element name must be a string, got " .. type(name), level)
  elseif not valid_name(name) then
    error("lxmpp.stanza: invalid element name " .. show(name) .. " (must be an XML NCName)", level)
  end
end

local function check_text(text, level, what)
  if type(text) ~= "string" then
    error("lxmpp.stanza: " .. what .. " must be a string, got " .. type(text), level)
  elseif not valid_text(text) then
    error("lxmpp.stanza: invalid UTF-8 or character not allowed in XML in " .. what, level)
  end
end

local function check_attr(attr, level)
  if attr == nil then return end
  if type(attr) ~= "table" then
    error("lxmpp.stanza: attributes must be a table, got " .. type(attr), level)
  end
  for k, v in next, attr do
    if type(k) ~= "string" then
      error("lxmpp.stanza: attribute names must be strings, got " .. type(k), level)
    elseif not valid_attr_name(k) then
      error("lxmpp.stanza: invalid attribute name " .. show(k), level)
    elseif type(v) ~= "string" then
      error("lxmpp.stanza: value of attribute " .. show(k) .. " must be a string, got " .. type(v), level)
    elseif not valid_text(v) then
      error("lxmpp.stanza: invalid UTF-8 or character not allowed in XML in value of attribute "
        .. show(k), level)
    end
  end
end

--- Construction -------------------------------------------------------------

-- The attribute table is used as given (not copied), as in Prosody.
local function new(name, attr, level)
  check_name(name, level + 1)
  check_attr(attr, level + 1)
  return setmetatable({ name = name, attr = attr or {}, tags = {} }, stanza_mt)
end

-- Appends an already validated child (element or string) to `parent`.
local function append(parent, child)
  parent[#parent + 1] = child
  if type(child) == "table" then
    local tags = parent.tags
    tags[#tags + 1] = child
  end
end

-- The element the builder currently adds to.
local function current(self)
  local last_add = self.last_add
  return last_add and last_add[#last_add] or self
end

local function open_tag(self, name, attr, level)
  local child = new(name, attr, level + 1)
  local last_add = self.last_add
  if not last_add then
    last_add = {}
    self.last_add = last_add
  end
  append(last_add[#last_add] or self, child)
  last_add[#last_add + 1] = child
end

local function close_tag(self)
  local last_add = self.last_add
  if last_add then last_add[#last_add] = nil end
end

local function add_text(self, text, level)
  if text == nil then return end
  check_text(text, level + 1, "text")
  if text ~= "" then append(current(self), text) end
end

local function stanza(name, attr)
  local s = new(name, attr, 3)
  return s
end

function stanza_mt:tag(name, attr)
  open_tag(self, name, attr, 3)
  return self
end

function stanza_mt:text(text)
  add_text(self, text, 3)
  return self
end

function stanza_mt:up()
  close_tag(self)
  return self
end

function stanza_mt:reset()
  self.last_add = nil
  return self
end

function stanza_mt:at_top()
  local last_add = self.last_add
  return last_add == nil or #last_add == 0
end

-- <name attr>text</name> where the builder is; the text is checked first so
-- a refused one leaves the builder as it was.
local function add_text_tag(self, name, text, attr, level)
  if text ~= nil then check_text(text, level + 1, "text") end
  open_tag(self, name, attr, level + 1)
  if text ~= nil and text ~= "" then append(current(self), text) end
  close_tag(self)
end

function stanza_mt:text_tag(name, text, attr)
  add_text_tag(self, name, text, attr, 3)
  return self
end

function stanza_mt:query(xmlns)
  open_tag(self, "query", { xmlns = xmlns }, 3)
  return self
end

function stanza_mt:body(text, attr)
  add_text_tag(self, "body", text, attr, 3)
  return self
end

local function check_child(child, level)
  if is_stanza(child) then return end
  if type(child) ~= "string" then
    error("lxmpp.stanza: child must be a stanza or a string, got " .. type(child), level)
  end
  check_text(child, level + 1, "text")
end

-- Adds `child` (a stanza or a string) where the builder is.
function stanza_mt:add_child(child)
  check_child(child, 3)
  if child ~= "" then append(current(self), child) end
  return self
end

-- Adds `child` to this very element, whatever the builder state.
function stanza_mt:add_direct_child(child)
  check_child(child, 3)
  if child ~= "" then append(self, child) end
  return self
end

--- Queries ----------------------------------------------------------------

-- Does `child` of an element in namespace `parent_ns` match name and xmlns?
-- xmlns == nil means "the parent's namespace": the child has no xmlns of its
-- own or repeats the parent's. Otherwise the child's namespace (its own, or
-- the parent's when it has none) must equal xmlns.
local function matches(child, parent_ns, name, xmlns)
  if name and child.name ~= name then return false end
  local ns = child.attr.xmlns
  if xmlns == nil then
    return ns == nil or ns == parent_ns
  end
  if ns == nil then ns = parent_ns end
  return ns == xmlns
end

local function get_child(self, name, xmlns)
  local parent_ns = self.attr.xmlns
  for _, child in ipairs(self.tags) do
    if matches(child, parent_ns, name, xmlns) then
      return child
    end
  end
  return nil
end
stanza_mt.get_child = get_child

-- The text of an element with no child elements ("" when empty), else nil.
local function get_text(self)
  if #self.tags == 0 then
    return t_concat(self)
  end
  return nil
end
stanza_mt.get_text = get_text

function stanza_mt:get_child_text(name, xmlns)
  local child = get_child(self, name, xmlns)
  if child then
    return get_text(child)
  end
  return nil
end

function stanza_mt:child_with_name(name)
  for _, child in ipairs(self.tags) do
    if child.name == name then return child end
  end
  return nil
end

function stanza_mt:child_with_ns(xmlns)
  local parent_ns = self.attr.xmlns
  for _, child in ipairs(self.tags) do
    if matches(child, parent_ns, nil, xmlns) then return child end
  end
  return nil
end

-- Iterator over the child elements matching name and xmlns (see matches);
-- the list is taken when the loop starts.
function stanza_mt:childtags(name, xmlns)
  local tags, parent_ns = self.tags, self.attr.xmlns
  local i, n = 0, #tags
  return function ()
    while i < n do
      i = i + 1
      local child = tags[i]
      if matches(child, parent_ns, name, xmlns) then
        return child
      end
    end
    return nil
  end
end

function stanza_mt:get_child_with_attr(name, xmlns, attr_name, attr_value, normalize)
  for child in self:childtags(name, xmlns) do
    local v = child.attr[attr_name]
    if normalize and v ~= nil then v = normalize(v) end
    if v == attr_value then return child end
  end
  return nil
end

-- Iterator over all children, elements and strings, in document order.
function stanza_mt:children()
  local i = 0
  return function (s)
    i = i + 1
    return s[i]
  end, self, nil
end

-- Calls fn(child) for each child element; the child is replaced by what fn
-- returns (a stanza), or removed when fn returns nil. Text stays in place.
-- The stanza is only changed once every call has returned, so a callback
-- that raises leaves it intact.
function stanza_mt:maptags(fn)
  local n = #self
  local children, tags = {}, {}
  for i = 1, n do
    local child = self[i]
    if type(child) == "table" then
      child = fn(child)
      if child ~= nil then
        if not is_stanza(child) then
          error("lxmpp.stanza: maptags callback must return a stanza or nil, got "
            .. type(child), 2)
        end
        tags[#tags + 1] = child
      end
    end
    children[#children + 1] = child
  end
  local self_tags = self.tags
  for i = 1, n do self[i] = children[i] end
  for i = 1, #self_tags do self_tags[i] = tags[i] end
  for i = #self_tags + 1, #tags do self_tags[i] = tags[i] end
  return self
end

-- Removes the child elements get_child(name, xmlns) would find (all of them).
function stanza_mt:remove_children(name, xmlns)
  local parent_ns = self.attr.xmlns
  return self:maptags(function (child)
    if matches(child, parent_ns, name, xmlns) then
      return nil
    end
    return child
  end)
end

-- Prosody's path syntax: steps "name" or "{xmlns}name" separated by "/"
-- (an empty name matches any), then optionally "@attr" for an attribute of
-- the element reached, or "#" after the last step for its text.
-- Examples: "body#", "{jabber:x:data}x/field@var", "@type".
function stanza_mt:find(path)
  if type(path) ~= "string" then
    error("lxmpp.stanza: find path must be a string, got " .. type(path), 2)
  end
  local node, pos, len = self, 1, #path
  while node do
    if s_sub(path, pos, pos) == "@" then
      return node.attr[s_sub(path, pos + 1)]
    end
    local xmlns
    if s_sub(path, pos, pos) == "{" then
      local close = s_find(path, "}", pos + 1, true)
      if not close then
        error("lxmpp.stanza: invalid find path " .. show(path) .. " (unclosed '{')", 2)
      end
      xmlns = s_sub(path, pos + 1, close - 1)
      if xmlns == "" then xmlns = nil end
      pos = close + 1
    end
    local name, sep, nextpos = s_match(path, "^([^@/#{]*)([/#]?)()", pos)
    if name == "" then name = nil end
    if sep == "#" then
      if nextpos <= len then
        error("lxmpp.stanza: invalid find path " .. show(path) .. " ('#' must come last)", 2)
      end
      return node:get_child_text(name, xmlns)
    end
    node = get_child(node, name, xmlns)
    if nextpos > len then
      return node
    end
    pos = nextpos
  end
  return nil
end

-- Returns error type, defined condition ("undefined-condition" if none),
-- text, and the first application-specific element, or nothing when the
-- stanza has no <error/>.
function stanza_mt:get_error()
  local error_tag = get_child(self, "error")
  if not error_tag then
    return nil, nil, nil, nil
  end
  local condition, text, extra
  for _, child in ipairs(error_tag.tags) do
    if child.attr.xmlns == xmlns_stanzas then
      if child.name == "text" then
        if not text then text = get_text(child) end
      elseif not condition then
        condition = child.name
      end
    elseif not extra then
      extra = child
    end
  end
  return error_tag.attr.type, condition or "undefined-condition", text, extra
end

--- Copies and output ------------------------------------------------------

local function copy(s, only_top)
  local attr = {}
  for k, v in pairs(s.attr) do attr[k] = v end
  local new_s = setmetatable({ name = s.name, attr = attr, tags = {} }, stanza_mt)
  if not only_top then
    for i = 1, #s do
      local child = s[i]
      if type(child) == "table" then
        child = copy(child)
      end
      append(new_s, child)
    end
  end
  return new_s
end

-- A deep copy sharing nothing with the original (builder state not copied).
local function clone(s, only_top)
  if not is_stanza(s) then
    error("lxmpp.stanza: clone expects a stanza, got " .. type(s), 2)
  end
  local c = copy(s, only_top)
  return c
end
stanza_mt.clone = clone

-- The C serializer itself, so its errors are not reported at a line here.
stanza_mt.__tostring = serialize

-- The opening tag alone, without children; `parent_ns`, when given, is left
-- out as it would be inside an element of that namespace.
local function top_tag(s, parent_ns)
  local attr = s.attr
  if parent_ns ~= nil and attr.xmlns == parent_ns then
    local a = {}
    for k, v in pairs(attr) do
      if k ~= "xmlns" then a[k] = v end
    end
    attr = a
  end
  local xml = serialize({ name = s.name, attr = attr, tags = {} })
  if s_sub(xml, -2) == "/>" then
    return s_sub(xml, 1, -3) .. ">"
  end
  return s_sub(xml, 1, -(#s.name + 4)) -- "<name ...></name>"
end
stanza_mt.top_tag = top_tag

local function escape_text(text)
  local xml = serialize({ name = "t", attr = {}, tags = {}, text })
  return s_sub(xml, 4, -5)
end

local function pretty_lines(s, lines, indent, depth, parent_ns)
  local pad = s_rep(indent, depth)
  local open = top_tag(s, parent_ns)
  local n = #s
  if n == 0 then
    lines[#lines + 1] = pad .. s_sub(open, 1, -2) .. "/>"
    return
  end
  local close = "</" .. s.name .. ">"
  if #s.tags == 0 then -- text only: kept on one line, unaltered
    lines[#lines + 1] = pad .. open .. escape_text(t_concat(s)) .. close
    return
  end
  lines[#lines + 1] = pad .. open
  local ns = s.attr.xmlns
  if ns == nil then ns = parent_ns end
  for i = 1, n do
    local child = s[i]
    if type(child) == "table" then
      pretty_lines(child, lines, indent, depth + 1, ns)
    elseif s_find(child, "%S") then
      lines[#lines + 1] = pad .. indent .. escape_text(child)
    end
  end
  lines[#lines + 1] = pad .. close
end

-- An indented rendering for humans (logs, debugging): one element per line,
-- text-only elements on one line. Not for the wire: it adds whitespace.
function stanza_mt:pretty(indent)
  if indent == nil then indent = "  " end
  local lines = {}
  pretty_lines(self, lines, indent, 0, nil)
  return t_concat(lines, "\n")
end

--- Stanza constructors ----------------------------------------------------

local function message(attr, body)
  local s = new("message", attr, 3)
  if body ~= nil then
    add_text_tag(s, "body", body, nil, 3)
  end
  return s
end

local function presence(attr)
  local s = new("presence", attr, 3)
  return s
end

local iq_types = { get = true, set = true, result = true, error = true }

local function iq(attr)
  -- Unlike Prosody, the id may be left out: sessions give every iq they send
  -- (and request()) a fresh, unguessable one.
  if type(attr) ~= "table" then
    error("lxmpp.stanza: iq stanzas require an attribute table with a type", 2)
  elseif attr.type == nil then
    error("lxmpp.stanza: iq stanzas require a type attribute", 2)
  elseif not iq_types[attr.type] then
    error("lxmpp.stanza: iq type must be get, set, result or error, got "
      .. (type(attr.type) == "string" and show(attr.type) or type(attr.type)), 2)
  end
  local s = new("iq", attr, 3)
  return s
end

local function make_reply(orig, level, fname)
  if not is_stanza(orig) then
    error("lxmpp.stanza: " .. fname .. " expects a stanza, got " .. type(orig), level)
  end
  local a = orig.attr
  local s = new(orig.name, {
    to = a.from,
    from = a.to,
    id = a.id,
    type = orig.name == "iq" and "result" or a.type,
  }, level + 1)
  return s
end

-- A reply: to/from swapped, same id, type "result" for an iq.
local function reply(orig)
  local s = make_reply(orig, 3, "reply")
  return s
end

local error_types = { auth = true, cancel = true, continue = true, modify = true, wait = true }

-- error_reply(stanza, type, condition, text, by), or error_reply(stanza, err)
-- with err a table { type =, condition =, text =, extra =, context = { by = } }
-- as Prosody's util.error makes. Returns the error stanza with the builder
-- inside <error/>, so application-specific elements can be added.
local function error_reply(orig, error_type, condition, text, by)
  local s = make_reply(orig, 3, "error_reply")
  if orig.attr.type == "error" then
    error("lxmpp.stanza: error_reply to a stanza of type error (it must not be answered)", 2)
  end
  local extra
  if type(error_type) == "table" then
    local e = error_type
    if type(e.extra) == "table" then extra = e.extra end
    if type(e.context) == "table" and type(e.context.by) == "string" then by = e.context.by end
    error_type, condition, text = e.type, e.condition, e.text
  end
  if not error_types[error_type] then
    error("lxmpp.stanza: error type must be auth, cancel, continue, modify or wait, got "
      .. (type(error_type) == "string" and show(error_type) or type(error_type)), 2)
  end
  if type(condition) ~= "string" then
    error("lxmpp.stanza: error condition must be a string, got " .. type(condition), 2)
  end
  if by == s.attr.from then by = nil end
  s.attr.type = "error"
  open_tag(s, "error", { type = error_type, by = by }, 3)
  open_tag(s, condition, { xmlns = xmlns_stanzas }, 3)
  if extra and condition == "gone" and type(extra.uri) == "string" then
    add_text(s, extra.uri, 3)
  end
  close_tag(s)
  if text ~= nil then
    add_text_tag(s, "text", text, { xmlns = xmlns_stanzas }, 3)
  end
  if extra then
    if is_stanza(extra.tag) then
      append(current(s), extra.tag)
    elseif type(extra.namespace) == "string" and type(extra.condition) == "string" then
      open_tag(s, extra.condition, { xmlns = extra.namespace }, 3)
      close_tag(s)
    end
  end
  return s
end

-- One complete element from a string: a stanza, or nil, message, condition.
local function parse(xml)
  if type(xml) ~= "string" then
    error("lxmpp.stanza: parse expects a string, got " .. type(xml), 2)
  end
  return parse_element(xml)
end

core.set_stanza_mt(stanza_mt)

return {
  stanza_mt = stanza_mt,
  xmlns_stanzas = xmlns_stanzas,
  stanza = stanza,
  message = message,
  presence = presence,
  iq = iq,
  reply = reply,
  error_reply = error_reply,
  is_stanza = is_stanza,
  clone = clone,
  parse = parse,
}
