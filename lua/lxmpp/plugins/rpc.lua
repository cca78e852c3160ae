-- Jabber-RPC (XEP-0009): XML-RPC calls carried in IQs, both ways.
--
--   local rpc = require "lxmpp.plugins.rpc"
--   local v, msg, cond, fault_code = c:rpc_call(to, "math.sum", 1, 2, 3)
--   c:rpc_expose("math.sum", function(...) ... end, { allow = { "alice@example.org" } })
--   error(rpc.fault(4, "too many"))          -- inside an exposed function
--
-- Lua values and XML-RPC types: integer <-> int (i4; 32-bit; i8 is read
-- too), float <-> double, boolean <-> boolean, string <-> string,
-- rpc.base64(bytes) <-> base64, rpc.datetime("20240131T12:00:00" or an
-- os.time() value) <-> dateTime.iso8601, a table with only 1..n keys (or
-- rpc.array{...}) <-> array, a table with string keys (or rpc.struct{})
-- <-> struct, nil and rpc.null <-> <nil/>. Decoded <nil/> is rpc.null inside
-- arrays and structs and in a call's result (so a successful call never
-- returns nil), plain nil for an exposed function's parameters.
--
-- A value that does not fit its type (an <int> with letters or beyond 32
-- bits, a <boolean> other than 0/1, bad base64 or dateTime, an unknown
-- type, nesting deeper than 32) is refused: the call returns nil, message,
-- "bad-request"; an incoming call gets an IQ error bad-request. Faults come
-- back as nil, faultString, "rpc-fault", faultCode.

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"

local type, error, tostring, tonumber, pairs, ipairs, select, setmetatable, getmetatable, pcall, math_type =
  type, error, tostring, tonumber, pairs, ipairs, select, setmetatable, getmetatable, compat.pcall, compat.math_type
local format = string.format

local NS = "jabber:iq:rpc"
local MAX_DEPTH = 32

local M = { xmlns = NS }

--- Typed wrappers ----------------------------------------------------------

local NULL = setmetatable({}, { __name = "rpc.null", __tostring = function() return "rpc.null" end })
M.null = NULL

local Base64 = { __name = "rpc.base64" }
Base64.__index = Base64
--- rpc.base64(bytes): a value sent as <base64/>
function M.base64(bytes)
  if type(bytes) ~= "string" then error("rpc.base64: expected a string", 2) end
  return setmetatable({ bytes = bytes }, Base64)
end

local DateTime = { __name = "rpc.datetime" }
DateTime.__index = DateTime
DateTime.__tostring = function(d) return d.value end
local DT_PATTERN = "^(%d%d%d%d)%-?(%d%d)%-?(%d%d)T(%d%d):(%d%d):(%d%d)"
--- rpc.datetime(s_or_time): a dateTime.iso8601 value from its string form
-- ("20240131T12:00:00") or from an os.time() number (UTC).
function M.datetime(v)
  if math_type(v) == "integer" then
    return setmetatable({ value = os.date("!%Y%m%dT%H:%M:%S", v) }, DateTime)
  end
  if type(v) ~= "string" or not v:match(DT_PATTERN) then
    error("rpc.datetime: expected an os.time() integer or an ISO 8601 string like 20240131T12:00:00", 2)
  end
  return setmetatable({ value = v }, DateTime)
end

local Array = { __name = "rpc.array" }
local Struct = { __name = "rpc.struct" }
--- rpc.array(t), rpc.struct(t): mark a table's type (an empty one is ambiguous)
function M.array(t) return setmetatable(t or {}, Array) end
function M.struct(t) return setmetatable(t or {}, Struct) end

local Fault = { __name = "rpc.fault" }
Fault.__tostring = function(f) return format("rpc fault %d: %s", f.code, f.message) end
--- rpc.fault(code, message): raise it from an exposed function
function M.fault(code, message)
  if math_type(code) ~= "integer" then error("rpc.fault: code must be an integer", 2) end
  if type(message) ~= "string" then error("rpc.fault: message must be a string", 2) end
  return setmetatable({ code = code, message = message }, Fault)
end

--- Encoding ----------------------------------------------------------------

local encode_value

local function is_array(t)
  local n = 0
  for k in pairs(t) do
    if math_type(k) ~= "integer" or k < 1 then return false end
    n = n + 1
  end
  return n == #t
end

-- Adds <value>...</value> for v to the element el points into.
function encode_value(el, v, depth)
  if depth > MAX_DEPTH then error("rpc: values nested deeper than " .. MAX_DEPTH, 0) end
  el:tag("value")
  local t, mt = type(v), getmetatable(v)
  if v == nil or v == NULL then
    el:tag("nil"):up()
  elseif t == "boolean" then
    el:text_tag("boolean", v and "1" or "0")
  elseif math_type(v) == "integer" then
    if v >= -2147483648 and v <= 2147483647 then el:text_tag("int", compat.fmt_number(v))
    else el:text_tag("i8", compat.fmt_number(v)) end  -- (LuaJIT: "%d", not 1e+15)
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then error("rpc: cannot send " .. tostring(v), 0) end
    el:text_tag("double", format("%.17g", v))
  elseif t == "string" then
    el:text_tag("string", v)
  elseif mt == Base64 then
    el:text_tag("base64", core.base64_encode(v.bytes))
  elseif mt == DateTime then
    el:text_tag("dateTime.iso8601", v.value)
  elseif t == "table" and mt ~= Struct and (mt == Array or (next(v) ~= nil and is_array(v))) then
    el:tag("array"):tag("data")
    for i = 1, #v do encode_value(el, v[i], depth + 1) end
    el:up():up()
  elseif t == "table" and (mt == nil or mt == Struct) then
    el:tag("struct")
    local keys = {}
    for k in pairs(v) do
      if type(k) ~= "string" then error("rpc: a struct's keys must be strings (mixed table?)", 0) end
      keys[#keys + 1] = k
    end
    table.sort(keys)
    for _, k in ipairs(keys) do
      el:tag("member"):text_tag("name", k)
      encode_value(el, v[k], depth + 1)
      el:up()
    end
    el:up()
  else
    error("rpc: cannot send a " .. t, 0)
  end
  el:up()
end

-- <params> with each value; raises (misuse) on a value that cannot be sent.
local function encode_params(el, n, ...)
  el:tag("params")
  for i = 1, n do
    el:tag("param")
    encode_value(el, (select(i, ...)), 1)
    el:up()
  end
  el:up()
end

--- rpc.encode(v) -> the <value/> element
function M.encode(v)
  local holder = st.stanza("x")
  local ok, err = pcall(encode_value, holder, v, 1)
  if not ok then error(err, 2) end
  return holder.tags[1]
end

--- Decoding ----------------------------------------------------------------

local function bad(fmt, ...) error({ format(fmt, ...) }, 0) end

local decode_value

local function only_text(el, what)
  local s = el:get_text()
  if s == nil then bad("<%s> must hold text only", what) end
  return s
end

local DECODERS = {}
function DECODERS.int(el, name)
  local s = only_text(el, name):match("^%s*(.-)%s*$")
  local digits = s:match("^[+-]?0*(%d+)$")
  local n = digits and #digits <= 19 and compat.tointeger(tonumber(s))
  if not n then bad("<%s> is not an integer: %q", name, s:sub(1, 40)) end
  if name ~= "i8" and (n > 2147483647 or n < -2147483648) then bad("<%s> out of 32-bit range: %s", name, s) end
  return n
end
DECODERS.i4, DECODERS.i8 = DECODERS.int, DECODERS.int
function DECODERS.boolean(el)
  local s = only_text(el, "boolean"):match("^%s*(.-)%s*$")
  if s == "1" then return true elseif s == "0" then return false end
  bad("<boolean> must be 0 or 1, not %q", s:sub(1, 40))
end
function DECODERS.double(el)
  local s = only_text(el, "double"):match("^%s*(.-)%s*$")
  local mantissa = s:match("^([+-]?%d*%.?%d*)[eE][+-]?%d%d?%d?$") or s   -- exponents: tolerated on input
  local n = mantissa:match("^[+-]?%d*%.?%d*$") and mantissa:match("%d") and tonumber(s)
  if not n then bad("<double> is not a number: %q", s:sub(1, 40)) end
  return n + 0.0
end
function DECODERS.string(el) return only_text(el, "string") end
function DECODERS.base64(el)
  local s = only_text(el, "base64"):gsub("%s", "")
  local bytes = core.base64_decode(s)
  if not bytes then bad("<base64> is not valid base64") end
  return M.base64(bytes)
end
DECODERS["dateTime.iso8601"] = function(el)
  local s = only_text(el, "dateTime.iso8601"):match("^%s*(.-)%s*$")
  local y, mo, d, h, mi, sec = s:match(DT_PATTERN .. "$")
  if not y then y, mo, d, h, mi, sec = s:match(DT_PATTERN .. "[Z+-]") end
  if not y or tonumber(mo) > 12 or tonumber(mo) < 1 or tonumber(d) > 31 or tonumber(d) < 1
    or tonumber(h) > 24 or tonumber(mi) > 59 or tonumber(sec) > 60 then
    bad("<dateTime.iso8601> is not a date: %q", s:sub(1, 40))
  end
  return setmetatable({ value = s }, DateTime)
end
DECODERS["nil"] = function() return NULL end
function DECODERS.array(el, _, depth)
  local data = el:get_child("data")
  if not data or #el.tags ~= 1 then bad("<array> must hold one <data>") end
  local out = M.array({})
  for child in data:childtags() do
    if child.name ~= "value" then bad("<data> holds <%s>, not <value>", child.name) end
    out[#out + 1] = decode_value(child, depth + 1)
  end
  return out
end
function DECODERS.struct(el, _, depth)
  local out = M.struct({})
  for member in el:childtags() do
    if member.name ~= "member" then bad("<struct> holds <%s>, not <member>", member.name) end
    local name, value = member:get_child_text("name"), member:get_child("value")
    if not name or not value or #member.tags ~= 2 then bad("a <member> needs one <name> and one <value>") end
    out[name] = decode_value(value, depth + 1)
  end
  return out
end

function decode_value(el, depth)
  if depth > MAX_DEPTH then bad("values nested deeper than %d", MAX_DEPTH) end
  if el.name ~= "value" then bad("expected <value>, got <%s>", el.name) end
  if #el.tags == 0 then return el:get_text() end       -- no type: a string
  if #el.tags > 1 then bad("a <value> holds one typed element") end
  for _, child in ipairs(el) do
    if type(child) == "string" and child:match("%S") then bad("text beside a <value>'s typed element") end
  end
  local typed = el.tags[1]
  local dec = DECODERS[typed.name]
  if not dec then bad("unknown XML-RPC type <%s>", typed.name) end
  return dec(typed, typed.name, depth)
end

--- rpc.decode(value_element) -> value | nil, message, "bad-request"
function M.decode(el)
  if not st.is_stanza(el) then error("rpc.decode: expected a <value/> element", 2) end
  local ok, v = pcall(decode_value, el, 1)
  if not ok then
    if type(v) == "table" then return nil, v[1], "bad-request" end
    error(v, 0)
  end
  return v
end

-- The values of <params> (nil for a missing element): a packed list.
local function decode_params(params)
  local out = { n = 0 }
  if not params then return out end
  for param in params:childtags() do
    local value = param.name == "param" and param:get_child("value")
    if not value then bad("<params> must hold <param><value/></param>") end
    out.n = out.n + 1
    out[out.n] = decode_value(value, 1)
  end
  return out
end

--- rpc.parse_response(query) -> value | nil, message, condition [, fault_code]
function M.parse_response(query)
  local ok, r1, r2, r3, r4 = pcall(function()
    local resp = query and query:get_child("methodResponse")
    if not resp then bad("the reply has no <methodResponse>") end
    local fault = resp:get_child("fault")
    if fault then
      local v = fault:get_child("value")
      local s = v and decode_value(v, 1)
      if getmetatable(s) ~= Struct or math_type(s.faultCode) ~= "integer" or type(s.faultString) ~= "string" then
        bad("a malformed <fault>")
      end
      return nil, s.faultString, "rpc-fault", s.faultCode
    end
    local params = decode_params(resp:get_child("params"))
    if params.n ~= 1 then bad("a <methodResponse> carries exactly one value, not %d", params.n) end
    return params[1]
  end)
  if not ok then
    if type(r1) == "table" then return nil, r1[1], "bad-request" end
    error(r1, 0)
  end
  return r1, r2, r3, r4
end

local function fault_response(iq, code, message)
  local r = st.reply(iq):tag("query", { xmlns = NS }):tag("methodResponse"):tag("fault")
  encode_value(r, M.struct({ faultCode = code, faultString = message }), 1)
  return r
end

--- Client methods ------------------------------------------------------------

local function allowed(self, entry, from)
  local bare = from and jid.prep(from) and jid.bare(jid.prep(from))
  if not bare then return from == nil end                 -- from our own server/account
  if bare == self.bare_jid then return true end
  local allow = entry.allow
  if allow == "anyone" then return true end
  if type(allow) == "function" then return allow(bare, from) == true end
  for _, a in ipairs(allow or {}) do
    if jid.prep(a) == bare then return true end
  end
  return false
end

local function serve(self, iq)
  if iq.attr.type ~= "set" then return st.error_reply(iq, "cancel", "bad-request", "Jabber-RPC calls are iq set") end
  local call = iq.tags[1]:get_child("methodCall")
  local name = call and call:get_child_text("methodName")
  if not name then return st.error_reply(iq, "modify", "bad-request", "no <methodCall> with a <methodName>") end
  local entry = self.rpc.methods[name]
  if not entry then return fault_response(iq, -32601, "no such method: " .. name) end
  if not allowed(self, entry, iq.attr.from) then return st.error_reply(iq, "auth", "forbidden") end
  local ok, params = pcall(decode_params, call:get_child("params"))
  if not ok then
    if type(params) == "table" then return st.error_reply(iq, "modify", "bad-request", params[1]) end
    error(params, 0)
  end
  for i = 1, params.n do if params[i] == NULL then params[i] = nil end end
  local results = compat.pack(pcall(entry.fn, compat.unpack(params, 1, params.n)))
  if not results[1] then
    local e = results[2]
    if getmetatable(e) == Fault then return fault_response(iq, e.code, e.message) end
    self:log("error", "rpc method %s failed: %s", name, tostring(e))
    return fault_response(iq, -32500, "the method failed")
  end
  local reply = st.reply(iq):tag("query", { xmlns = NS }):tag("methodResponse")
  local eok, err = pcall(encode_params, reply, 1, results[2])
  if not eok then
    self:log("error", "rpc method %s returned what XML-RPC cannot carry: %s", name, tostring(err))
    return fault_response(iq, -32603, "the method returned a value XML-RPC cannot carry")
  end
  return reply
end

-- The plugin object, c.rpc (docs/api.md "Plugins"): .methods, what
-- c:rpc_expose() exposed (name -> { fn =, allow = }), .timeout the calls'.
M.forwards = { rpc_call = "call", rpc_expose = "expose" }

--- c.rpc:call(to, method, ...) -> value | nil, message, condition [, fault_code]
function M:call(to, method, ...)
  if type(to) ~= "string" or not jid.prep(to) then error("rpc_call: invalid JID " .. tostring(to), 2) end
  if type(method) ~= "string" or method == "" then error("rpc_call: method must be a non-empty string", 2) end
  local iq = st.iq({ type = "set", to = to }):tag("query", { xmlns = NS }):tag("methodCall")
    :text_tag("methodName", method)
  local ok, err = pcall(encode_params, iq, select("#", ...), ...)
  if not ok then error("rpc_call: " .. tostring(err), 2) end
  local r, msg, cond = self.client:request(iq:reset(), self.timeout)
  if not r then return nil, msg, cond end
  return M.parse_response(r:get_child("query", NS))
end

--- c.rpc:expose(name, fn [, { allow = list | fn | "anyone" }]): fn(...) answers
-- calls of `name` (nil: stop answering). By default only our own account
-- may call; allow lists bare JIDs, or is fn(bare, full) -> boolean.
function M:expose(name, fn, opts)
  if type(name) ~= "string" or name == "" then error("rpc_expose: name must be a non-empty string", 2) end
  if fn ~= nil and type(fn) ~= "function" then error("rpc_expose: fn must be a function", 2) end
  opts = opts or {}
  local allow = opts.allow
  if allow ~= nil and allow ~= "anyone" and type(allow) ~= "table" and type(allow) ~= "function" then
    error("rpc_expose: allow must be a list of JIDs, a function or \"anyone\"", 2)
  end
  self.methods[name] = fn and { fn = fn, allow = allow } or nil
end

function M:init(c)
  self.methods = {}
  c:handle_iq(NS, function(iq) return serve(c, iq) end)
end

return M
