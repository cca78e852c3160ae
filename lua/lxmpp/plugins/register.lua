-- In-band registration (XEP-0077) for clients: creating an account on a
-- server that allows it, changing its password, and cancelling it.
--
--   local c, msg, cond = require("lxmpp.plugins.register").register{
--     jid = "newbot@example.org", password = "secret", fields = { email = "..." }, ... }
--       -- the same options as lxmpp.connect; registers over TLS, then logs
--       -- in as the new account and returns the connected client
--   c:change_password(new)  -> true | nil, message, condition
--   c:unregister()          -> true | nil, message, condition (the server
--                              ends the session)
--
-- Registration hooks into stream negotiation between STARTTLS and SASL,
-- only for a client made by register() and only on a TLS stream (the
-- password travels in the clear inside it), and only when the server
-- offers the iq-register stream feature.

local compat = require "lxmpp.compat"
local task = require "lxmpp.task"
local st = require "lxmpp.stanza"
local session = require "lxmpp.session"

local type, error, pairs, pcall, tostring, require = type, error, pairs, compat.pcall, tostring, require

local NS = "jabber:iq:register"
local NS_FEATURE = "http://jabber.org/features/iq-register"

local M = { xmlns = NS }

-- The answer to an IQ we sent while negotiating (stanzas come one by one
-- through client:read()).
local function exchange(client, iq)
  local id = session.new_id()
  iq.attr.id = id
  local ok, msg, cond = client:write_stanza(iq)
  if not ok then return nil, msg, cond end
  for _ = 1, 20 do
    local s
    s, msg, cond = client:read(client.opts.timeout)
    if not s then return nil, msg, cond end
    if s.name == "iq" and s.attr.id == id then
      if s.attr.type == "result" then return s end
      local _, econd, text = s:get_error()
      return nil, text or econd or "registration failed", econd or "undefined-condition"
    end
  end
  return nil, "no answer to the registration request", "timeout"
end

-- The feature step: ask for the fields, fill them in, submit.
local function register_step(client, features)
  local p = client.register
  local req = p.request
  if not req then return nil end
  if client.tls_mode ~= "none" and not client.tls_active then return nil end   -- STARTTLS first
  p.request = nil
  if not features:get_child("register", NS_FEATURE) then
    return client:fail("the server does not offer in-band registration", "feature-not-implemented")
  end
  local form, msg, cond = exchange(client, st.iq({ type = "get" }):tag("query", { xmlns = NS }):up())
  if not form then return client:fail(msg, cond) end
  local q = form:get_child("query", NS)
  if not q then return client:fail("the server sent no registration form", "bad-request") end
  if q:get_child("registered") then return client:fail("already registered", "conflict") end
  local set = st.iq({ type = "set" }):tag("query", { xmlns = NS })
  set:text_tag("username", client.node):text_tag("password", client.opts.password)
  for name, value in pairs(req.fields or {}) do
    if name ~= "username" and name ~= "password" then set:text_tag(name, value) end
  end
  -- fields the server asks for and we were not given
  for field in q:childtags() do
    local n = field.name
    if n ~= "instructions" and n ~= "x" and n ~= "username" and n ~= "password"
      and not (req.fields and req.fields[n]) and field.attr.xmlns == nil then
      return client:fail("the server also asks for '" .. n .. "' (pass it in fields)", "not-acceptable")
    end
  end
  local ok
  ok, msg, cond = exchange(client, set:up())
  if not ok then return client:fail(msg, cond) end
  return nil                       -- on to SASL, as the new account
end

--- register{...} -> client | nil, message, condition
function M.register(opts)
  if type(opts) ~= "table" then error("register: expected an options table", 2) end
  if opts.fields ~= nil and type(opts.fields) ~= "table" then error("register: fields must be a table", 2) end
  for k, v in pairs(opts.fields or {}) do
    if type(k) ~= "string" or type(v) ~= "string" then error("register: fields are name = string pairs", 2) end
  end
  local client = require "lxmpp.client"
  local ok0, c = pcall(client.new, opts)
  if not ok0 then error(tostring(c):gsub("^[^:]*:%d+: ", ""), 2) end
  if not c.node then error("register: the jid needs a local part", 2) end
  task.current("register", 1)
  c:plugin("register").request = { fields = opts.fields }
  -- (as lxmpp.connect's: lxmpp.shutdown cuts it short in any phase)
  local ok, msg, cond = require("lxmpp.session").internal.connect(c)
  if not ok then return nil, msg, cond end
  require("lxmpp.reconnect").internal.went_online(c)   -- as lxmpp.connect: reconnection and all
  c:fire_user("online", c.jid)
  return c
end

-- The plugin object, c.register (docs/api.md "Plugins"): .request, the
-- registration register{} asked for, until the negotiation made it.
M.forwards = { change_password = "change_password", unregister = "unregister" }

--- c:change_password(new) -> true | nil, message, condition
function M:change_password(new, timeout)
  if type(new) ~= "string" or new == "" then error("change_password: the password must be a non-empty string", 2) end
  local c = self.client
  local r, msg, cond = c:request(st.iq({ type = "set", to = c.domain }):tag("query", { xmlns = NS })
    :text_tag("username", c.node):text_tag("password", new), timeout)
  if not r then return nil, msg, cond end
  c.opts.password = new           -- what a reconnection logs in with
  return true
end

--- c:unregister() -> true | nil, message, condition
function M:unregister(timeout)
  local c = self.client
  local r, msg, cond = c:request(st.iq({ type = "set", to = c.domain }):tag("query", { xmlns = NS })
    :tag("remove"), timeout)
  if not r then return nil, msg, cond end
  c.closing = true                -- the server ends the stream: not a loss to recover from
  return true
end

function M.init(_, c)
  c.bus:add("features", function(features) return register_step(c, features) end, 350)
end

return M
