-- lxmpp.forms: XEP-0004 data forms (jabber:x:data), built from and read into
-- typed Lua values.
--
--   forms.new(layout)        a form layout: layout[1..n] are fields
--                            { var=, type=, label=, desc=, required=, value=,
--                              options = { "v" | { label=, value= }, ... } },
--                            layout.title, layout.instructions optional
--   f:form([values [, type]]) the <x xmlns='jabber:x:data'/> element, of type
--                            "form" (default), "submit", "result" or "cancel";
--                            values[var] overrides each field's default value
--   f:data(x)                the typed values of a submitted form, read with
--                            the layout's field types: values, or nil,
--                            message, "bad-request"
--   forms.parse(x)           any form (one a peer sent, with the types it
--                            declares): a table forms.new accepts, plus
--                            .type, .values (var -> typed value), .form_type;
--                            or nil, message, "bad-request"
--
-- Typed values: boolean -> true/false; list-multi, jid-multi -> array of
-- strings; text-multi -> one string, lines joined with "\n"; every other
-- type -> a string. A field whose type is absent is text-single (XEP-0004
-- section 3.3), but forms.parse reads one with several values in a form
-- that is not of type "form" as list-multi (the type is inferred there).
-- jid-single and jid-multi values are prepared (jid.prep); an invalid one
-- is an error, as is a list-single or list-multi value that is not among
-- the layout's options, or a boolean that is not 0/1/true/false.

local jid = require "lxmpp.jid"
local st = require "lxmpp.stanza"

local type, error, ipairs, tostring, setmetatable, getmetatable =
  type, error, ipairs, tostring, setmetatable, getmetatable
local format, gmatch, concat = string.format, string.gmatch, table.concat

local XMLNS = "jabber:x:data"

local FIELD_TYPES = {
  boolean = "single", fixed = "single", hidden = "single",
  ["jid-multi"] = "multi", ["jid-single"] = "single",
  ["list-multi"] = "multi", ["list-single"] = "single",
  ["text-multi"] = "lines", ["text-private"] = "single", ["text-single"] = "single",
}
local FORM_TYPES = { form = true, submit = true, result = true, cancel = true }

local MAX_FIELDS = 256   -- per form read from the wire
local MAX_VALUES = 1024  -- per field read from the wire

local Form = {}
Form.__index = Form

-- The options of a field as { label=, value= } tables (a plain string is
-- both), checked.
local function check_options(options, var)
  if options == nil then return nil end
  if type(options) ~= "table" then
    error(format("lxmpp.forms: options of field '%s' must be a table", var), 4)
  end
  local list = {}
  for i, o in ipairs(options) do
    if type(o) == "string" then o = { value = o } end
    if type(o) ~= "table" or type(o.value) ~= "string" or (o.label ~= nil and type(o.label) ~= "string") then
      error(format("lxmpp.forms: option %d of field '%s' must be a string or { label=, value= }", i, var), 4)
    end
    list[i] = { label = o.label, value = o.value }
  end
  return list
end

local function new(layout)
  if type(layout) ~= "table" then
    error("lxmpp.forms: new expects a layout table, got " .. type(layout), 2)
  end
  local self = setmetatable({ title = layout.title, instructions = layout.instructions, by_var = {} }, Form)
  for i, f in ipairs(layout) do
    if type(f) ~= "table" then error(format("lxmpp.forms: field %d must be a table", i), 2) end
    local ftype = f.type or "text-single"
    if not FIELD_TYPES[ftype] then
      error(format("lxmpp.forms: field %d has unknown type '%s'", i, tostring(ftype)), 2)
    end
    if type(f.var) ~= "string" and ftype ~= "fixed" then
      error(format("lxmpp.forms: field %d (%s) needs a var", i, ftype), 2)
    end
    local field = {
      var = f.var, type = ftype, label = f.label, desc = f.desc, required = f.required == true,
      value = f.value, options = check_options(f.options, f.var or "?"), open = f.open,
    }
    self[i] = field
    if f.var then
      if self.by_var[f.var] then error(format("lxmpp.forms: duplicate field '%s'", f.var), 2) end
      self.by_var[f.var] = field
    end
  end
  return self
end

-- The <value/> strings of a typed value (raises on a value of the wrong type).
local function encode(field, v)
  local t, kind = field.type, FIELD_TYPES[field.type]
  if v == nil then return {} end
  if t == "boolean" then
    if type(v) ~= "boolean" then
      error(format("lxmpp.forms: value of boolean field '%s' must be a boolean", field.var), 4)
    end
    return { v and "1" or "0" }
  elseif kind == "multi" then
    if type(v) ~= "table" then
      error(format("lxmpp.forms: value of %s field '%s' must be an array", t, field.var), 4)
    end
    return v
  elseif kind == "lines" then
    if type(v) ~= "string" then
      error(format("lxmpp.forms: value of text-multi field '%s' must be a string", field.var), 4)
    end
    local lines = {}
    for line in gmatch(v .. "\n", "([^\n]*)\n") do lines[#lines + 1] = line end
    return lines
  end
  if type(v) == "number" then v = tostring(v) end
  if type(v) ~= "string" then
    error(format("lxmpp.forms: value of %s field '%s' must be a string", t, tostring(field.var)), 4)
  end
  return { v }
end

function Form:form(values, form_type)
  form_type = form_type or "form"
  if not FORM_TYPES[form_type] then
    error("lxmpp.forms: form type must be form, submit, result or cancel, got " .. tostring(form_type), 2)
  end
  if values ~= nil and type(values) ~= "table" then
    error("lxmpp.forms: values must be a table, got " .. type(values), 2)
  end
  values = values or {}
  local x = st.stanza("x", { xmlns = XMLNS, type = form_type })
  if form_type == "cancel" then return x end
  local full = form_type ~= "submit" -- a submission carries values only
  if full and self.title then x:text_tag("title", self.title) end
  if full and self.instructions then x:text_tag("instructions", self.instructions) end
  for _, field in ipairs(self) do
    local v = values[field.var]
    if v == nil then v = field.value end
    if full or (field.var and v ~= nil) then
      x:tag("field", { var = field.var, type = field.type, label = full and field.label or nil })
      if full and field.desc then x:text_tag("desc", field.desc) end
      if full and field.required then x:tag("required"):up() end
      for _, s in ipairs(encode(field, v)) do x:text_tag("value", s) end
      if form_type == "form" and field.options then
        for _, o in ipairs(field.options) do
          x:tag("option", { label = o.label }):text_tag("value", o.value):up()
        end
      end
      x:up()
    end
  end
  return x
end

local function bad(fmt, ...)
  return nil, format(fmt, ...), "bad-request"
end

local function is_option(field, v)
  if not field.options or field.open then return true end
  for _, o in ipairs(field.options) do
    if o.value == v then return true end
  end
  return false
end

-- The typed value of field (its type known) from its <value/> strings.
local function decode(field, raw)
  local t, kind, var = field.type, FIELD_TYPES[field.type], field.var
  if kind == "multi" then
    local list = {}
    for i, v in ipairs(raw) do
      if t == "jid-multi" then
        local p = jid.prep(v)
        if not p then return bad("field '%s': invalid JID '%s'", var, v) end
        v = p
      elseif not is_option(field, v) then
        return bad("field '%s': '%s' is not one of the options", var, v)
      end
      list[i] = v
    end
    return list
  elseif kind == "lines" then
    return concat(raw, "\n")
  end
  if #raw > 1 then return bad("field '%s' (%s) has %d values", var, t, #raw) end
  local v = raw[1]
  if t == "boolean" then
    if v == "1" or v == "true" then return true end
    if v == nil or v == "0" or v == "false" then return false end
    return bad("field '%s': '%s' is not a boolean", var, v)
  end
  if v == nil then v = "" end
  if t == "jid-single" and v ~= "" then
    local p = jid.prep(v)
    if not p then return bad("field '%s': invalid JID '%s'", var, v) end
    return p
  elseif t == "list-single" and not is_option(field, v) then
    return bad("field '%s': '%s' is not one of the options", var, v)
  end
  return v
end

-- The fields of an <x/> element in document order: { var=, type=, label=,
-- desc=, required=, raw = { value strings }, options = {...} }.
local function read_fields(x)
  if not st.is_stanza(x) or x.name ~= "x" or x.attr.xmlns ~= XMLNS then
    return bad("not a jabber:x:data form")
  end
  local fields, n = {}, 0
  for f in x:childtags("field") do
    n = n + 1
    if n > MAX_FIELDS then return bad("more than %d fields", MAX_FIELDS) end
    local ftype = f.attr.type
    if ftype ~= nil and not FIELD_TYPES[ftype] then return bad("field of unknown type '%s'", ftype) end
    local field = {
      var = f.attr.var, type = ftype, label = f.attr.label, desc = f:get_child_text("desc"),
      required = f:get_child("required") ~= nil, raw = {},
    }
    for v in f:childtags("value") do
      if #field.raw >= MAX_VALUES then return bad("more than %d values in one field", MAX_VALUES) end
      field.raw[#field.raw + 1] = v:get_text() or ""
    end
    for o in f:childtags("option") do
      field.options = field.options or {}
      if #field.options >= MAX_VALUES then return bad("more than %d options in one field", MAX_VALUES) end
      field.options[#field.options + 1] = { label = o.attr.label, value = o:get_child_text("value") or "" }
    end
    fields[n] = field
  end
  return fields
end

function Form:data(x)
  local fields, msg, cond = read_fields(x)
  if not fields then return nil, msg, cond end
  local values = {}
  for _, f in ipairs(fields) do
    local field = f.var and self.by_var[f.var]
    if field then
      if field.type == "hidden" and f.var == "FORM_TYPE" then
        if field.value ~= nil and f.raw[1] ~= field.value then
          return bad("FORM_TYPE is '%s', expected '%s'", tostring(f.raw[1]), field.value)
        end
      end
      local v, err = decode(field, f.raw)
      if v == nil then return nil, err, "bad-request" end
      values[f.var] = v
    end
  end
  return values
end

local function parse(x)
  local fields, msg, cond = read_fields(x)
  if not fields then return nil, msg, cond end
  local form_type = x.attr.type or "form"
  if not FORM_TYPES[form_type] then return bad("form of unknown type '%s'", form_type) end
  local form = {
    type = form_type, title = x:get_child_text("title"),
    instructions = x:get_child_text("instructions"), values = {},
  }
  local seen = {}
  for i, f in ipairs(fields) do
    -- XEP-0004 §3.3: in a form of type "form" a field without a type is
    -- text-single; in a "submit" or "result" form the receiver infers the
    -- type from context, and a field with several values is one of the
    -- multi types (XEP-0060's own node configuration example submits
    -- pubsub#roster_groups_allowed so): its values are kept, as an array
    -- (list-multi, open: the options are the form's maker's to check)
    if f.type == nil then f.type = (form_type ~= "form" and #f.raw > 1) and "list-multi" or "text-single" end
    if f.var == nil and f.type ~= "fixed" then return bad("field %d has no var", i) end
    if f.var then
      if seen[f.var] then return bad("duplicate field '%s'", f.var) end
      seen[f.var] = true
    end
    -- what the peer sent, typed, without checking it against its own options
    f.open = true
    local v, err = decode(f, f.raw)
    if v == nil then return nil, err, "bad-request" end
    f.value, f.raw, f.open = v, nil, nil
    if f.var then form.values[f.var] = v end
    form[i] = f
  end
  if type(form.values.FORM_TYPE) == "string" then form.form_type = form.values.FORM_TYPE end
  return form
end

-- Is x a layout forms.new made?
local function is_layout(x)
  return getmetatable(x) == Form
end

return {
  xmlns = XMLNS,
  new = new,
  parse = parse,
  is_layout = is_layout,
}
