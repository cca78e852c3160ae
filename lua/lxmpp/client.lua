-- lxmpp.client: lxmpp.connect{...}, an XMPP client session (RFC 6120/6121).
--
-- connect() resolves the server (SRV, XEP-0368), connects, and negotiates
-- the stream through the feature modules in lua/lxmpp/features/ (STARTTLS,
-- SASL, resource binding, legacy session), each hooked on the client's
-- ordered event bus under "features"; stream management (features/sm.lua)
-- resumes before binding and enables after it. It returns once the session
-- is bound. Once online, a lost link is reconnected (lua/lxmpp/reconnect.lua).
-- opts.timeout (DEFAULT_TIMEOUT) bounds the whole of it (TCP, TLS, SASL,
-- binding), however the server dribbles its bytes: every wait on the way
-- gets only the time left (Client:time_left).
--
-- Internal: c:start_tls, c:read, c:time_left and c:fail are what the feature
-- modules negotiate with, c:establish what reconnect.lua and register.lua
-- connect with, Client.add_setup the per-client hook of a plugin that is not
-- an object; none is API (docs/api.md "Plugins"). The rest of
-- the negotiation (opening the stream, the candidates, one attempt) is local
-- to this file.

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local task = require "lxmpp.task"
local net = require "lxmpp.net"
local session = require "lxmpp.session"
local reconnect = require "lxmpp.reconnect"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"

local setmetatable, getmetatable, rawget, rawset, type, error, tostring, tonumber, pairs, ipairs, require =
  setmetatable, getmetatable, rawget, rawset, type, error, tostring, tonumber, pairs, ipairs, require

local M = {}

local Client = setmetatable({}, { __index = session.Session })
Client.__index = Client
M.Client = Client

M.NS_CLIENT = "jabber:client"

-- The feature modules, in the order they hook in (higher priority first);
-- fn names the module's function when it is not negotiate, and `sm` marks
-- the stream management steps (they call the client's sm state).
M.features = {
  { name = "starttls", priority = 400 },
  { name = "sasl2", priority = 320 },   -- XEP-0388 when offered (and Bind2, FAST, inline resumption)
  { name = "sasl", priority = 300 },
  { name = "sm", priority = 250, fn = "resume", sm = true },   -- before binding
  { name = "bind", priority = 200 },
  { name = "session", priority = 100 },
  { name = "sm", priority = 50, fn = "enable", sm = true },
}

local TLS_MODES = { starttls = true, direct = true, none = true }
local DEFAULT_TIMEOUT = 60   -- seconds to establish a session (opts.timeout)
M.DEFAULT_TIMEOUT = DEFAULT_TIMEOUT

local function is_loopback(host)
  return host == "localhost" or host == "::1" or (type(host) == "string" and host:match("^127%.") ~= nil)
end

local check_plugins, install_plugins   -- below, with the plugin registry

local function check_opts(opts)
  if type(opts) ~= "table" then error("lxmpp.connect: expected an options table", 3) end
  if type(opts.jid) ~= "string" then error("lxmpp.connect: jid must be a string", 3) end
  local node, domain, resource = jid.split(opts.jid)
  if not domain then error("lxmpp.connect: invalid jid '" .. opts.jid .. "'", 3) end
  local mech = opts.mechanism
  if mech ~= "ANONYMOUS" and mech ~= "EXTERNAL" then
    if not node then error("lxmpp.connect: the jid needs a local part (user@domain)", 3) end
    local sm_o = opts.stream_management
    local token = type(sm_o) == "table" and type(sm_o.state) == "table" and sm_o.state.fast
    -- (a saved XEP-0484 token may stand in for it: features/sasl2.lua)
    if type(opts.password) ~= "string" and not (opts.password == nil and token and opts.fast ~= false) then
      error("lxmpp.connect: password must be a string", 3)
    end
  end
  local tls = opts.tls or "starttls"
  if not TLS_MODES[tls] then error("lxmpp.connect: tls must be \"starttls\", \"direct\" or \"none\"", 3) end
  local url_host = type(opts.url) == "string" and opts.url:match("^%a+://%[?([^/%]:]+)")
  if tls == "none" and not is_loopback(opts.host or url_host) then
    error("lxmpp.connect: tls = \"none\" is only allowed with a loopback host (tests)", 3)
  end
  if opts.host ~= nil and type(opts.host) ~= "string" then error("lxmpp.connect: host must be a string", 3) end
  if opts.port ~= nil and (compat.math_type(opts.port) ~= "integer" or opts.port < 1 or opts.port > 65535) then
    error("lxmpp.connect: port must be an integer from 1 to 65535", 3)
  end
  for _, k in ipairs({ "timeout", "connect_timeout" }) do
    local v = opts[k]
    if v ~= nil and (type(v) ~= "number" or v <= 0) then
      error("lxmpp.connect: " .. k .. " must be a positive number", 3)
    end
  end
  if opts.cafile ~= nil and type(opts.cafile) ~= "string" then error("lxmpp.connect: cafile must be a path", 3) end
  local mss = opts.max_stanza_size     -- (the stream parser's limit: 1 to 2^30)
  if mss ~= nil and (compat.math_type(mss) ~= "integer" or mss < 1 or mss > 1073741824) then
    error("lxmpp.connect: max_stanza_size must be an integer from 1 to 2^30", 3)
  end
  if opts.tls_resumption ~= nil and type(opts.tls_resumption) ~= "boolean" then
    error("lxmpp.connect: tls_resumption must be a boolean", 3)
  end
  if mech ~= nil and type(mech) ~= "string" then error("lxmpp.connect: mechanism must be a string", 3) end
  if mech == "EXTERNAL" and type(opts.cert) ~= "string" then
    error("lxmpp.connect: mechanism EXTERNAL needs cert (and key) files", 3)
  end
  if opts.transport ~= nil and type(opts.transport) ~= "function" then
    error("lxmpp.connect: transport must be a function returning a connected transport", 3)
  end
  if opts.url ~= nil then
    local ok = require("lxmpp.websocket").url(opts.url) or require("lxmpp.bosh").url(opts.url)
    if not ok then
      error("lxmpp.connect: url: not a ws://, wss://, http:// or https:// URL: " .. tostring(opts.url), 3)
    end
    if opts.transport then error("lxmpp.connect: url and transport exclude each other", 3) end
  end
  if opts.bosh_keys ~= nil and type(opts.bosh_keys) ~= "boolean" then
    error("lxmpp.connect: bosh_keys must be a boolean", 3)
  end
  if opts.bosh ~= nil and type(opts.bosh) ~= "table" then error("lxmpp.connect: bosh must be a table", 3) end
  if opts.discover ~= nil then
    if opts.discover ~= true and opts.discover ~= false then error("lxmpp.connect: discover must be a boolean", 3) end
    if opts.discover and (opts.url or opts.transport) then
      error("lxmpp.connect: discover finds the url itself: give neither url nor transport", 3)
    end
  end
  for _, k in ipairs({ "sasl2", "fast", "bind2", "mam_catch_up" }) do
    if opts[k] ~= nil and type(opts[k]) ~= "boolean" then error("lxmpp.connect: " .. k .. " must be a boolean", 3) end
  end
  local ua = opts.user_agent
  if ua ~= nil then
    if type(ua) ~= "table" then error("lxmpp.connect: user_agent must be a table", 3) end
    for _, k in ipairs({ "id", "software", "device" }) do
      if ua[k] ~= nil and type(ua[k]) ~= "string" then
        error("lxmpp.connect: user_agent." .. k .. " must be a string", 3)
      end
    end
    if ua.id and not (#ua.id <= 64 and ua.id:match("^[%x%-]+$")) then
      error("lxmpp.connect: user_agent.id must be a UUID (XEP-0388)", 3)
    end
  end
  check_plugins(opts.plugins)
  local bad = require("lxmpp.features.sasl").check_options(opts.channel_binding, mech)
  if bad then error("lxmpp.connect: " .. bad, 3) end
  return node, domain, resource, tls
end

--- Creates a client object (not connected). Most users call lxmpp.connect.
function M.new(opts)
  local node, domain, resource, tls = check_opts(opts)
  local self = session.new({ default_ns = M.NS_CLIENT, logger = opts.logger, debug = opts.debug })
  setmetatable(self, Client)
  self.opts = opts
  self.node, self.domain = node, domain
  self.requested_resource = resource or opts.resource
  self.bare_jid = node and jid.join(node, domain) or domain
  self.tls_mode = tls
  -- what a login keeps between connections (features/sasl2.lua; saved
  -- with the stream management state)
  self.login = { ua_id = opts.user_agent and opts.user_agent.id and opts.user_agent.id:lower() }
  if opts.stream_management ~= false then
    local sm = require("lxmpp.features.sm").new(self, opts.stream_management)
    self.sm = sm
    self.bus:add("stanza-in", function(s) return sm:incoming(s) end, 1000)
  end
  for _, f in ipairs(M.features) do
    local mod = require("lxmpp.features." .. f.name)
    if not f.sm then
      self.bus:add("features", function(features) return mod.negotiate(self, features) end, f.priority)
    elseif self.sm then
      local fn, sm = f.fn, self.sm
      self.bus:add("features", function(features) return sm[fn](sm, features) end, f.priority)
    end
  end
  -- the archive catch-up after a Bind2 login (features/catchup.lua)
  require("lxmpp.features.catchup").init(self)
  reconnect.internal.init_reconnect(self)
  -- answered by every client (XEP-0199, XEP-0092)
  install_plugins(self)
  self:handle_iq("urn:xmpp:ping", function(iq) return st.reply(iq) end)
  self:handle_iq("jabber:iq:version", function(iq)
    local sw = opts.software or {}
    return st.reply(iq):tag("query", { xmlns = "jabber:iq:version" })
      :text_tag("name", sw.name or "lxmpp"):text_tag("version", sw.version or require("lxmpp").VERSION)
  end)
  return self
end

---------------------------------------------------------------------------
-- Plugins (docs/api.md "Plugins"): each client has one object per plugin,
-- its own state and handlers, reached as c.NAME or c:plugin(NAME). A
-- client gets a stub per registered plugin; the stub turns into the loaded
-- object (same table) the first time it is used, so plugins nobody uses
-- install no handlers. The default set loads with the client: what must
-- answer the server or a contact from the start.

local registry = {}          -- name -> plugin module
local event_owner = {}       -- user event -> the plugin that fires it
local classes = {}           -- module -> metatable of its loaded objects

M.DEFAULT_PLUGINS = {
  "roster", "presence", "muc", "ibb", "vcard", "disco", "caps", "time", "last", "commands", "receipts",
  "chatstates", "stanzaid", "correction", "markers", "carbons",
}
local is_default = {}
for _, name in ipairs(M.DEFAULT_PLUGINS) do is_default[name] = true end

-- Fields a client has itself (lua/lxmpp/session.lua, this file,
-- reconnect.lua, the features): no plugin may take these names.
local RESERVED = {}
for name in ([[opts node domain requested_resource bare_jid tls_mode sm bus conn jid user child_hooks
  iq_handlers pending queue qn logger debug default_ns stream_id stream_attr stream_features negotiating
  tls_active authenticated bound session_done resumed neg_error deadline redirect see_other_host lost_reason
  see_other_uri ws_url ws_secure
  online closing closed_reason close_waiter remote_closed drain_waiters reader inbound offline ofirst olast
  flushing kept keepalive ka_timer last_rx probed_rx max_queued resend_unacked unacked_backlog on_lost
  last_presence reconnect_opts reconnect_task reconnect_waiters reconnecting establishing backoff_waiter sasl_mechanism
  connect_task connect_waiter
  scram_keys channel_binding channel_binding_refused told_binding_refused plugins setups login next_features
  blocked caps_node tls_ctxs tls_resume tls_key archive_metadata catchup catchup_seen catchup_order]]):gmatch("%S+") do
  RESERVED[name] = true
end

local function class_of(mod)
  local mt = classes[mod]
  if not mt then
    mt = { __index = mod, __call = mod.__call }
    classes[mod] = mt
  end
  return mt
end

local STUB = {}
local function load(p)
  local mod = registry[rawget(p, "name")]
  setmetatable(p, class_of(mod))         -- first: init may call the plugin's own methods
  if mod.init then mod.init(p, rawget(p, "client")) end
  return p
end
STUB.__index = function(p, k) return load(p)[k] end
STUB.__newindex = function(p, k, v) rawset(load(p), k, v) end
STUB.__call = function(p, ...) return load(p)(...) end

--- c:plugin(name) -> the client's object of that plugin, loaded if it was not.
function Client:plugin(name)
  if type(name) ~= "string" or not registry[name] then
    error("plugin: no plugin named '" .. tostring(name) .. "' (lxmpp.register_plugin adds one)", 2)
  end
  local p = rawget(self, name)
  if p == nil then                       -- registered after this client was made
    p = setmetatable({ client = self, name = name }, STUB)
    rawset(self, name, p)
  end
  if getmetatable(p) == STUB then load(p) end
  return p
end

--- Client:plugin_loaded(name): whether the client loaded that plugin.
function Client:plugin_loaded(name)
  local p = rawget(self, name)
  return p ~= nil and registry[name] ~= nil and getmetatable(p) ~= STUB
end

-- Subscribing to a plugin's event loads the plugin: its handlers fire it.
function Client:on(event, fn)
  local owner = event_owner[event]
  if owner then self:plugin(owner) end
  return session.Session.on(self, event, fn)
end

-- What happens to every new client, in order: functions (a plugin not yet
-- turned into an object adds its per-client part with Client.add_setup(fn))
-- and plugin names (the client's stub, loaded when in the default set).
Client.setups = {}

--- Client.add_setup(fn): fn(client) runs for every client made from now on.
function Client.add_setup(fn)
  Client.setups[#Client.setups + 1] = fn
end

local function forward(name, cname, meth)
  Client[cname] = function(self, ...)
    local p = self[name]
    return p[meth](p, ...)
  end
end

--- lxmpp.register_plugin(name, module): module.init(p, client) runs when a
-- client loads the plugin (p.client, p.name are set; p's methods are the
-- module's functions); module.events lists the user events it fires
-- (c:on of one loads it); module.forwards = { client_method = "method" }
-- adds c:client_method(...) calling p:method(...).
function M.register_plugin(name, mod)
  if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") then
    error("register_plugin: the name must be a Lua identifier", 2)
  end
  if type(mod) ~= "table" then error("register_plugin: expected a module table", 2) end
  if registry[name] then error("register_plugin: a plugin named '" .. name .. "' exists", 2) end
  if RESERVED[name] or Client[name] ~= nil then
    error("register_plugin: '" .. name .. "' is a client field or method", 2)
  end
  for cname in pairs(mod.forwards or {}) do
    if Client[cname] ~= nil then error("register_plugin: c:" .. cname .. " exists", 2) end
  end
  registry[name] = mod
  for _, ev in ipairs(mod.events or {}) do
    session.add_event(ev)
    event_owner[ev] = event_owner[ev] or name
  end
  for cname, meth in pairs(mod.forwards or {}) do forward(name, cname, meth) end
  Client.setups[#Client.setups + 1] = name
end

function check_plugins(list)
  if list == nil then return end
  if type(list) ~= "table" then error("lxmpp.connect: plugins must be a list of names", 4) end
  for _, name in ipairs(list) do
    if not registry[name] then
      error("lxmpp.connect: no plugin named '" .. tostring(name) .. "' (lxmpp.register_plugin adds one)", 4)
    end
  end
end

function install_plugins(self)
  local wanted = {}
  for _, name in ipairs(self.opts.plugins or {}) do wanted[name] = true end
  for _, s in ipairs(Client.setups) do
    if type(s) == "function" then
      s(self)
    else
      if rawget(self, s) ~= nil then error("lxmpp: plugin '" .. s .. "' collides with a client field", 3) end
      local p = setmetatable({ client = self, name = s }, STUB)
      rawset(self, s, p)
      if is_default[s] or wanted[s] then load(p) end
    end
  end
end

-- The plugins lxmpp comes with, in the order they load (discovery and
-- capabilities before the XEP plugins that register features there). Those
-- that add to what the client sends hook "stanza-out", the first stage of
-- c:send (session.lua).
for _, name in ipairs({
  "roster", "presence", "muc", "muc_admin", "rpc", "ibb", "register", "vcard", "pubsub", "upload",
  "disco", "caps", "time", "last", "delay", "commands", "receipts", "chatstates", "stanzaid",
  "correction", "markers", "carbons", "mam", "blocking", "csi",
}) do
  local mod = require("lxmpp.plugins." .. name)
  if mod.install then mod.install(Client) else M.register_plugin(name, mod) end
end

---------------------------------------------------------------------------
-- TLS

-- TLS session resumption (docs/api.md, "TLS session resumption"): the
-- client keeps its TLS contexts (one for STARTTLS, one for direct TLS with
-- ALPN) and the newest session ticket of its last verified handshake, in
-- memory only, with the address, port, TLS mode and domain it came from;
-- the ticket is offered once, to a connection with the same four (the C
-- engine also refuses it for another context or domain), and replaced by
-- the ticket of that connection. opts.tls_resumption = false: neither.
local function resumption(self) return self.opts.tls_resumption ~= false end

-- A kept context serves while the options it was made from stay the same;
-- when they change (another cafile, insecure, client certificate), the
-- next handshake gets a new context, and the ticket of the old one is not
-- offered to it (the engine refuses a ticket of another context).
local function tls_context(self, direct)
  local kind = direct and "direct" or "starttls"
  local o = self.opts
  local made_of = ("%s\0%s\0%s\0%s\0%s"):format(tostring(o.cafile), tostring(o.insecure == true),
    tostring(o.cert), tostring(o.key), tostring(resumption(self)))
  local ctxs = self.tls_ctxs or {}
  local kept = ctxs[kind]
  if kept and kept.made_of == made_of then return kept.ctx end
  local ctx, msg, cond = core.tls_context({
    mode = "client", cafile = o.cafile, insecure = o.insecure == true,
    alpn = direct and "xmpp-client" or nil,
    cert = o.cert, key = o.key,     -- SASL EXTERNAL (XEP-0178)
    resumption = resumption(self),
  })
  if not ctx then return nil, msg, cond end
  if kept then kept.ctx:close() end
  ctxs[kind] = { ctx = ctx, made_of = made_of }
  self.tls_ctxs = ctxs
  return ctx
end

-- Drops the kept ticket and contexts (close; they are freed at once).
local function forget_tls(self)
  local r, ctxs = self.tls_resume, self.tls_ctxs
  self.tls_resume, self.tls_ctxs, self.tls_key = nil, nil, nil
  if r then r.ticket:close() end
  for _, kept in pairs(ctxs or {}) do kept.ctx:close() end
end

-- After a session is established: keep the ticket its TLS handshake gave
-- (a TLS 1.3 ticket comes after the handshake, long before negotiation
-- ends), replacing the one kept before.
local function keep_ticket(self)
  local key, conn = self.tls_key, self.conn
  self.tls_key = nil
  if not key or not resumption(self) or not conn or not conn.tls_ticket then return end
  local ticket = conn:tls_ticket()
  if not ticket then return end
  local old = self.tls_resume
  self.tls_resume = { key = key, ticket = ticket }
  if old then old.ticket:close() end
end

--- Switches the connection to TLS and waits for the handshake.
function Client:start_tls(direct)
  local ctx, msg, cond = tls_context(self, direct)
  if not ctx then return nil, msg, cond end
  local w = task.waiter("start_tls", 1)
  local conn = self.conn
  conn:on("tls-done", function() w:wake(true) end)
  conn:on("tls-failed", function(m, c) w:wake(nil, m, c) end)
  -- SNI and the identity to verify: the JID's domain, in A-labels
  local sni = core.to_ascii(self.domain) or self.domain
  local ticket
  self.tls_key = nil
  if resumption(self) and self.conn.tls_ticket then
    local i = self.conn:info() or {}
    self.tls_key = ("%s %s %s %s"):format(tostring(i.peer), tostring(i.port), direct and "direct" or "starttls", sni)
    local r = self.tls_resume
    self.tls_resume = nil                  -- offered once at most (RFC 8446 appendix C.4)
    if r and r.key == self.tls_key then ticket = r.ticket elseif r then r.ticket:close() end
  end
  local ok, discarded = self.conn:starttls(ctx, sni, ticket)
  if ticket then ticket:close() end        -- the handshake holds its own reference
  if not ok then return nil, discarded, "tls-failed" end
  if discarded and discarded > 0 then
    -- plaintext pipelined after <proceed/>: a man in the middle
    self.conn:abort()
    return nil, ("%d bytes of plaintext arrived after <proceed/>: refused"):format(discarded), "tls-failed"
  end
  local left = self:time_left() or self.opts.timeout or DEFAULT_TIMEOUT
  if left <= 0 then
    self.conn:on("tls-done", nil)
    self.conn:on("tls-failed", nil)
    return nil, "TLS handshake timed out", "timeout"
  end
  local t = core.timer(left, w)
  -- the link lost meanwhile (the server closing it, c:close() aborting
  -- it) ends the wait too: session.lua's I.lost wakes the reader
  self.reader = w
  -- a cancelled task (a cancelled lxmpp.connect, c:close() during a
  -- reconnection) leaves no timer and no half-made TLS connection behind
  w.cancel = function()
    t:stop()
    if self.reader == w then self.reader = nil end
    conn:abort()
  end
  local done, emsg, econd = w:wait()
  t:stop()
  if self.reader == w then self.reader = nil end
  conn:on("tls-done", nil)
  conn:on("tls-failed", nil)
  if done == nil and emsg == nil then
    local lost = self.lost_reason
    if lost then return nil, lost[1], lost[2] end
    return nil, "TLS handshake timed out", "timeout"
  end
  if not done then return nil, emsg, econd end
  self.tls_active = true
  if self.debug then
    local info = self.conn:tls_info() or {}
    self:log("debug", "TLS %s %s, certificate %s%s", tostring(info.version), tostring(info.cipher),
      info.verified and "verified" or "NOT verified (insecure)", info.resumed and ", session resumed" or "")
  end
  return true
end

--- c:tls_info() -> { version=, cipher=, alpn=, verified=, peer_subject=,
-- resumed= } of the current connection's TLS, or nil without TLS.
function Client:tls_info()
  local conn = self.conn
  if not conn or not conn.tls_info then return nil end
  return conn:tls_info()
end

---------------------------------------------------------------------------
-- negotiation

--- Seconds left before the deadline of establish() (opts.timeout), or nil
-- outside it.
function Client:time_left()
  return self.deadline and self.deadline - core.now()
end

--- Session:read, never waiting past the deadline of establish(): what the
-- features read while negotiating.
function Client:read(timeout)
  local left = self:time_left()
  if left then
    if left <= 0 then return nil, "the session was not established in time", "timeout" end
    if timeout == nil or timeout > left then timeout = left end
  end
  return session.Session.read(self, timeout)
end

--- Opens the stream and reads the server's header and features.
local function open(self)
  local attr = { to = self.domain, version = "1.0", ["xml:lang"] = "en" }
  if self.tls_active and self.node then attr.from = self.bare_jid end
  local ok, msg, cond = session.internal.open_stream(self, attr)
  if not ok then return nil, msg, cond end
  local header
  header, msg, cond = self:read()
  if not header then return nil, msg, cond end
  if not header.open then return nil, "expected a stream header", "bad-format" end
  local a = header.open
  local bad, why = self.conn.framing.check_open(a, M.NS_CLIENT)
  if bad then return nil, "the server's stream header: " .. why, bad end
  local major = tonumber((a.version or "0"):match("^(%d+)%."))
  if not major or major < 1 then return nil, "the server does not speak XMPP 1.0", "unsupported-version" end
  self.stream_id = a.id
  local features
  features, msg, cond = self:read()
  if not features then return nil, msg, cond end
  if features.name ~= "features" or features.attr.xmlns ~= session.NS_STREAMS then
    return nil, "expected <stream:features>, got <" .. tostring(features.name) .. ">", "bad-format"
  end
  return features
end

--- Runs the whole negotiation on a connected conn. true or nil, msg, cond.
local function negotiate(self)
  self.negotiating = true
  self.tls_active = self.conn.encrypted == true      -- protected below the stream (lxmpp.transport)
  self.authenticated = false
  self.bound = false
  self.session_done = false
  self.resumed = false
  if self.tls_mode == "direct" then
    local ok, msg, cond = self:start_tls(true)
    if not ok then return nil, msg, cond end
  end
  for _ = 1, 10 do                       -- restarts: TLS, SASL (and a margin)
    -- features that came without a restart (after a SASL2 success,
    -- XEP-0388 §2.6.1), or those of a new stream
    local features = self.next_features
    self.next_features = nil
    if not features then
      local msg, cond
      features, msg, cond = open(self)
      if not features then return nil, msg, cond end
    end
    self.stream_features = features
    -- each feature returns "restart", "features" (self.next_features are
    -- to be negotiated on the same stream), or false (via client:fail) to
    -- end the negotiation; one that has nothing (more) to do returns
    -- nothing and the next one runs
    local r = self.bus:fire("features", features)
    if r == false then return nil, self.neg_error[1], self.neg_error[2] end
    if r ~= "restart" and r ~= "features" then
      if not self.bound then return nil, "the server offered no way to bind a resource", "undefined-condition" end
      session.internal.finish_negotiation(self)
      return true
    end
    if r == "restart" then self.conn:restart() end
  end
  return nil, "too many stream restarts", "policy-violation"
end

-- Fails the negotiation from a feature: fire() stops at a non-nil result,
-- so failures are returned as false plus the reason kept on the client.
function Client:fail(msg, cond)
  self.neg_error = { msg, cond }
  return false
end

---------------------------------------------------------------------------
-- connecting

-- Candidates: explicit host/port, or DNS SRV with the A/AAAA fallback.
local function candidates(self)
  local o = self.opts
  if self.redirect then
    return { { host = self.redirect.host, port = self.redirect.port, tls = self.tls_mode } }
  end
  if o.host then
    local port = o.port or (self.tls_mode == "direct" and 5223 or 5222)
    return { { host = o.host, port = port, tls = self.tls_mode } }
  end
  local resolve = require "lxmpp.resolve"
  return resolve.targets(self.domain, { tls = self.tls_mode ~= "none" and self.tls_mode or "starttls" })
end

local function addresses(host)
  if host:match("^%d+%.%d+%.%d+%.%d+$") or host:find(":", 1, true) then return { host } end
  return require("lxmpp.resolve").addresses(host)
end

local establish_once

-- A WebSocket redirect that waits (RFC 7395 §3.6.1: <close
-- see-other-uri='...'/>, met during this attempt or ending the session
-- before): nil when there is none; true when it is taken (self.ws_url, the
-- endpoint from now on, reconnections included); false, message when it is
-- refused: not ws:// or wss://, from wss:// down to ws://, or one more than
-- websocket.MAX_REDIRECTS in a row.
local function take_ws_redirect(self, hops)
  local uri = self.see_other_uri
  if not uri then return nil end
  self.see_other_uri = nil
  local ws = require "lxmpp.websocket"
  local why = ws.check_redirect(uri, self.ws_secure)
  if not why and hops >= ws.MAX_REDIRECTS then
    why = ("more than %d WebSocket redirects in a row (RFC 7395 §3.6.1): not following the one to %s"):format(
      ws.MAX_REDIRECTS, uri)
  end
  if why then return false, why end
  if self.debug then self:log("debug", "following see-other-uri to %s", uri) end
  self.ws_url = uri
  return true
end

--- Connects and negotiates, following one see-other-host redirect (RFC
-- 6120 §4.9.3.19) with the same TLS policy: the certificate must still
-- show the JID's domain; over WebSocket, see-other-uri redirects (RFC 7395
-- §3.6.1, take_ws_redirect). true, or nil, message, condition.
function Client:establish()
  self.deadline = core.now() + (self.opts.timeout or DEFAULT_TIMEOUT)
  local ok, msg, cond
  local hops = 0
  repeat
    local taken, why = take_ws_redirect(self, hops)
    if taken == false then
      ok, msg, cond = nil, why, "see-other-host"
      break
    end
    if taken then hops = hops + 1 end
    ok, msg, cond = establish_once(self)
  until ok or not (cond == "see-other-host" and self.see_other_uri)
  local target = not ok and cond == "see-other-host" and self.see_other_host
  if target then
    self.see_other_host = nil
    local host, port = target:match("^%[(.+)%]:(%d+)$")
    if not host then host, port = target:match("^([^:]+):(%d+)$") end
    host = host or target
    if self.tls_mode == "none" and not is_loopback(host) then
      -- the loopback-only rule of tls = "none" (check_opts) holds for
      -- where a server sends us too
      ok, msg = nil, ("not following see-other-host to %s: tls = \"none\" is only allowed with a loopback host")
        :format(target)
    else
      if self.debug then self:log("debug", "following see-other-host to %s", target) end
      self.redirect = { host = host, port = compat.tointeger(tonumber(port or "")) or
        (self.tls_mode == "direct" and 5223 or 5222) }
      ok, msg, cond = establish_once(self)
      self.redirect = nil
    end
  end
  self.deadline = nil
  return ok, msg, cond
end

-- One attempt over the transport that opts.transport() returns (no DNS, no
-- TCP: an in-process pipe to an embedded server, srv:pipe()).
local function establish_over(self, t)
  local good, why = require("lxmpp.transport").check(t)
  if not good then return nil, "opts.transport: " .. why, "bad-request" end
  self.lost_reason = nil
  session.internal.attach(self, t, { max_stanza_size = self.opts.max_stanza_size })
  self.neg_error = nil
  local nok, nmsg, ncond = negotiate(self)
  if nok then return true end
  if self.neg_error then nmsg, ncond = self.neg_error[1], self.neg_error[2] end
  self.negotiating = false
  t:abort()
  return nil, nmsg, ncond
end

function establish_once(self)
  local o = self.opts
  local url = self.ws_url or o.url    -- ws_url: where a see-other-uri sent us
  if o.discover and not self.ws_url then   -- XEP-0156: the domain names its WebSocket endpoint
    local left = self:time_left()
    local per = o.connect_timeout or 15
    local dmsg, dcond
    url, dmsg, dcond = require("lxmpp.websocket").discover(self.domain, { cafile = o.cafile, insecure = o.insecure,
      address = o.host, port = o.port, timeout = per < left and per or left })
    if not url then return nil, dmsg, dcond end
  end
  if url and require("lxmpp.bosh").url(url) then   -- BOSH (XEP-0206): http(s):// names the endpoint
    local bo = { cafile = o.cafile, insecure = o.insecure, address = o.host, connect_timeout = o.connect_timeout,
      keys = o.bosh_keys }
    for k, v in pairs(o.bosh or {}) do bo[k] = v end
    return establish_over(self, require("lxmpp.bosh").connect(url, bo))
  end
  if url then                  -- XMPP over WebSocket (RFC 7395): the URL names the endpoint
    local left = self:time_left()
    local per = o.connect_timeout or 15
    local ws = require "lxmpp.websocket"
    -- the security context redirects may not go below (RFC 7395 §3.6.1);
    -- a redirect's host is its own (o.host was the original's address)
    if not self.ws_url then self.ws_secure = ws.url(url).secure end
    local t, wmsg, wcond = ws.connect(url, { cafile = o.cafile, insecure = o.insecure,
      address = not self.ws_url and o.host or nil, timeout = per < left and per or left,
      max_message = o.max_stanza_size })
    if not t then return nil, wmsg, wcond end
    return establish_over(self, t)
  end
  if o.transport then
    local t, tmsg, tcond = o.transport()
    if not t then return nil, tmsg or "opts.transport gave no transport", tcond or "remote-server-not-found" end
    return establish_over(self, t)
  end
  local list, msg, cond = candidates(self)
  if not list then return nil, msg, cond end
  local last_msg, last_cond = "no server to connect to", "remote-server-not-found"
  for _, cand in ipairs(list) do
    local ips, amsg, acond = addresses(cand.host)
    if not ips then
      last_msg, last_cond = amsg, acond
    else
      for _, ip in ipairs(ips) do
        local left = self:time_left()
        if left <= 0 then return nil, "the session was not established in time", "timeout" end
        local per = self.opts.connect_timeout or 15
        local conn, cmsg, ccond = net.connect(ip, cand.port, per < left and per or left)
        if not conn then
          last_msg, last_cond = cmsg, ccond
        else
          self.lost_reason = nil
          session.internal.attach(self, conn, { max_stanza_size = self.opts.max_stanza_size })
          self.tls_mode = cand.tls or self.tls_mode
          self.neg_error = nil
          local ok, nmsg, ncond = negotiate(self)
          if ok then
            keep_ticket(self)
            return true
          end
          if self.neg_error then nmsg, ncond = self.neg_error[1], self.neg_error[2] end
          self.negotiating = false
          conn:abort()
          -- these would fail the same way on every server of the domain
          if require("lxmpp.stream_error").FATAL[ncond] then
            return nil, nmsg, ncond
          end
          last_msg, last_cond = nmsg, ncond
        end
      end
    end
  end
  return nil, last_msg, last_cond
end

--- lxmpp.connect{...} -> client | nil, message, condition (docs/api.md)
function M.connect(opts)
  local self = M.new(opts)
  task.current("lxmpp.connect", 1)
  -- (in a task of its own, which close() and lxmpp.shutdown cut short)
  local ok, msg, cond = session.internal.connect(self)
  if not ok then return nil, msg, cond end
  reconnect.internal.went_online(self)
  self:fire_user("online", self.jid)
  return self
end

--- Session:fire_user, where a live message's "stanza" and "message"
-- events may wait for the archive catch-up of a Bind2 login, or not be
-- delivered again (features/catchup.lua): session.lua's routing fires a
-- message's "stanza" right before its "message", so the "message" call
-- fires both, held and deduplicated together.
function Client:fire_user(event, ...)
  if event == "message" then
    return require("lxmpp.features.catchup").message(self, (...), session.Session.fire_user)
  end
  if event == "stanza" and (...).name == "message" then return end
  return session.Session.fire_user(self, event, ...)
end
-- a catch-up that did not finish (features/catchup.lua): id, why
session.add_event("catch-up-incomplete")

-- Reconnection, liveness, the offline queue and close (lua/lxmpp/reconnect.lua)
reconnect.install(Client)

-- close() also forgets the TLS ticket and contexts (see forget_tls)
local close = Client.close
local function closed(self, ...)
  forget_tls(self)
  return ...
end
function Client:close(...) return closed(self, close(self, ...)) end

---------------------------------------------------------------------------
-- IM conveniences (RFC 6121)

--- c:send_message(to, body, type): type defaults to "chat".
function Client:send_message(to, body, typ)
  if type(to) ~= "string" then error("send_message: to must be a JID string", 2) end
  if type(body) ~= "string" then error("send_message: body must be a string", 2) end
  return self:send(st.message({ to = to, type = typ or "chat", id = session.new_id() }, body))
end

--- c:send_presence(attr_or_nil): initial/available presence, or directed/typed.
-- attr may carry show, status and priority besides stanza attributes.
function Client:send_presence(attr)
  if attr ~= nil and type(attr) ~= "table" then error("send_presence: expected a table or nil", 2) end
  local a, show, status, priority = {}, nil, nil, nil
  for k, v in pairs(attr or {}) do
    if k == "show" then show = v
    elseif k == "status" then status = v
    elseif k == "priority" then priority = v
    else a[k] = v end
  end
  local p = st.presence(a)
  if show then p:text_tag("show", show) end
  if status then p:text_tag("status", status) end
  if priority then p:text_tag("priority", tostring(priority)) end
  return self:send(p)
end

return M
