-- lxmpp.server: the embedded XMPP server (docs/server.md).
--
--   local srv = lxmpp.server{ domain = "localhost", listen = { "127.0.0.1:5222" },
--     users = { alice = "secret" } }
--   assert(srv:start())   ...   srv:stop()
--
-- This file holds the server object: options, listeners, accounts (stored
-- only as salted SCRAM keys), bound sessions, and routing by destination
-- domain to hosts: the IM core for the server's own domain (server/im.lua),
-- the MUC service, and components. Streams are in server/c2s.lua and
-- server/component.lua; everything runs from connection events, without a
-- task per connection.

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local net = require "lxmpp.net"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local throttle = require "lxmpp.server.throttle"
local events = require "lxmpp.events"

local setmetatable, type, error, tostring, pairs, ipairs, select, pcall, math_type, string_format, io =
  setmetatable, type, error, tostring, pairs, ipairs, select, compat.pcall, compat.math_type, string.format, io
local xpcall, traceback = compat.xpcall, debug.traceback

local M = {}

--- Defaults of the `limits` option (docs/server.md, "Protection").
M.DEFAULT_LIMITS = {
  max_stanza_size = 262144,     -- bytes of one stanza (policy-violation beyond)
  negotiation_timeout = 180,    -- seconds from accept to a bound resource (a person may
                                -- first accept a self-signed certificate: 2 minutes and more)
  max_unauthenticated = 1000,   -- connections not yet authenticated, in all
  max_per_ip = 100,             -- connections from one address
  max_queue = 1048576,          -- bytes handed to a connection before further writes wait for the peer to read
  max_unread = 16777216,        -- bytes waiting for a peer to read before it is cut off
  write_timeout = 60,           -- seconds without reading, while bytes wait, before a peer is cut off
  rate = 1048576,               -- bytes per second read from one connection
  sasl_attempts = 5,            -- failed authentications before the stream ends (RFC 6120 §6.4.5: 2 to 5
                                -- retries; libpurple with Cyrus SASL, Pidgin's engine on Debian, tries each
                                -- mechanism offered after a failure, up to 5 of ours, and shows a wrong
                                -- password only if the stream lasts that long: docs/server.md)
  fast_lifetime = 1209600,      -- seconds an XEP-0484 FAST token is valid (14 days; renewed past half of it)
  fast_clients = 16,            -- user-agents of one account holding FAST tokens (the one expiring first goes)
  max_resources = 16,           -- bound resources per account
  max_offline = 1000,           -- offline messages kept per account
  max_offline_bytes = 4194304,  -- bytes of XML of the offline messages kept per account
  max_pending = 1000,           -- subscription requests kept unanswered per account
  max_directed = 1000,          -- JIDs one session has sent directed presence to (and will tell when it leaves)
  max_roster = 1000,            -- contacts in one account's roster (a larger stored one still works)
  sm_timeout = 300,             -- seconds a dropped XEP-0198 session waits to be resumed
  sm_queue = 500,               -- unacknowledged stanzas out per XEP-0198 session (4x this may wait)
  sm_queue_bytes = 2097152,     -- bytes of those stanzas (4x this may wait; a hibernating session: this)
  csi_queue = 100,              -- stanzas held back for an XEP-0352 inactive client (beyond: all go out)
  csi_queue_bytes = 262144,     -- bytes of those stanzas (beyond: all go out)
  mam_max_page = 100,           -- archived messages sent for one XEP-0313 query, and ids in its 'ids' field
  mam_max_messages = 10000,     -- archived messages kept per account (the oldest go)
  mam_max_bytes = 16777216,     -- bytes of archived XML kept per account (the oldest go)
  max_pubsub_nodes = 1000,      -- nodes of the pubsub service, and of each account's PEP
  max_pubsub_user_nodes = 100,  -- nodes of the pubsub service one account created
  max_pubsub_items = 256,       -- the largest pubsub#max_items a node may have
  max_pubsub_subscriptions = 1000, -- subscribers of one pubsub node
  max_pubsub_affiliations = 1000, -- affiliations (owners, publishers, members, outcasts) of one pubsub node
  max_pubsub_bytes = 16777216,  -- bytes kept by the pubsub service, and by each account's PEP (items' XML
                                -- and ids, nodes' names, titles and affiliated JIDs)
  max_blocklist = 1000,         -- JIDs in one account's XEP-0191 block list
  max_private_bytes = 65536,    -- bytes of XEP-0049 private XML one account keeps
  max_private_items = 64,       -- namespaces one account keeps in XEP-0049 private storage
  upload_quota = 104857600,     -- bytes of files the XEP-0363 upload service keeps, in all
  upload_user_quota = 33554432, -- bytes of files it keeps for one account
  http_connections = 100,       -- HTTPS connections open to the upload service
  http_timeout = 30,            -- seconds for an HTTP request's head, or a stalled body
  http_per_ip = 10,             -- HTTPS connections open to the upload service from one address
  -- throttles (docs/server.md, "Throttles"; server/throttle.lua)
  auth_failures = 5,            -- failed logins to one account from one address before its answers wait
  auth_address_failures = 20,   -- failed logins from one address (any account) before its answers wait
  auth_delay = 1,               -- seconds of the first wait; each further failure doubles it
  auth_delay_max = 60,          -- the longest wait between two answers to one address
  auth_forget = 600,            -- seconds after its last failure that an address starts over
  max_registrations = 1,        -- in-band registrations (XEP-0077) from one address per register_interval
  register_interval = 600,      -- seconds
  -- federation (docs/server.md, "Federation (s2s)"; server/s2s.lua)
  s2s_queue = 100,              -- stanzas waiting for one remote domain's route to come up
  s2s_timeout = 30,             -- seconds for a route to connect and negotiate (remote-server-timeout beyond)
  s2s_idle = 600,               -- seconds without a stanza before a server-to-server stream closes
  s2s_routes = 1000,            -- outgoing routes ((local, remote) domain pairs) open or opening at once
  s2s_checks = 100,             -- dialback keys being verified at once (connections to authoritative servers)
  s2s_domain_checks = 10,       -- ... of them for one claimed domain
  s2s_pairs = 32,               -- (remote, local) domain pairs claimed on one incoming s2s stream (XEP-0220 §2.6)
  s2s_refused_claims = 10,      -- dialback claims refused on one incoming s2s stream (then policy-violation)
  s2s_verifies = 100,           -- <db:verify/> questions answered on one s2s stream in 60 s (then policy-violation)
}

--- User names in-band registration refuses by default (the `reserved_names`
-- option replaces the list; compared after nodeprep, so case-insensitively).
M.RESERVED_NAMES = { "admin", "administrator", "root", "postmaster", "webmaster", "hostmaster", "abuse",
  "security", "xmpp", "support", "noreply", "info" }

local LEVELS = { debug = 1, info = 2, warn = 3, error = 4 }

--- The channel-binding types the server can check, best first: what
-- `channel_binding = true` (the default) offers, each on the TLS versions
-- that define it (docs/server.md, "Channel binding").
M.CB_TYPES = { "tls-exporter", "tls-server-end-point", "tls-unique" }

--- The `channel_binding` option as a list of types in M.CB_TYPES order:
-- nil or true: all; false: none; a list: those (each a known type, at
-- least one). nil for anything else.
function M.channel_binding_types(v)
  if v == nil or v == true then return { compat.unpack(M.CB_TYPES) } end
  if v == false then return {} end
  if type(v) ~= "table" or #v == 0 then return nil end
  local want = {}
  for i, t in pairs(v) do
    if math_type(i) ~= "integer" or type(t) ~= "string" then return nil end
    want[t] = true
  end
  local out = {}
  for _, t in ipairs(M.CB_TYPES) do
    if want[t] then out[#out + 1] = t; want[t] = nil end
  end
  if next(want) then return nil end
  return out
end

local Server = {}
Server.__index = Server
M.Server = Server

-- "ip:port" or "[ipv6]:port" -> ip, port
local function parse_address(s, what)
  if type(s) ~= "string" then
    error(("lxmpp.server: %s entries must be strings like 127.0.0.1:5222"):format(what), 4)
  end
  local ip, port = s:match("^%[([%x:.]+)%]:(%d+)$")
  if not ip then ip, port = s:match("^([%d.]+):(%d+)$") end
  port = tonumber(port)
  if not ip or not port or port > 65535 then
    error(("lxmpp.server: bad %s address %q (expected IP:PORT)"):format(what, s), 4)
  end
  return { ip = ip, port = compat.tointeger(port) }
end

M.parse_address = parse_address

local function address_list(v, what, default)
  if v == nil then v = default end
  if v == nil then return {} end
  if type(v) == "string" then v = { v } end
  if type(v) ~= "table" then error(("lxmpp.server: %s must be a string or a list of strings"):format(what), 3) end
  local out = {}
  for i, a in ipairs(v) do out[i] = parse_address(a, what) end
  return out
end

local function check_type(opts, key, want)
  local v = opts[key]
  if v ~= nil and type(v) ~= want then
    error(("lxmpp.server: option %s must be a %s, got %s"):format(key, want, type(v)), 3)
  end
  return v
end

--- lxmpp.server(opts) -> server (not started: call :start()).
function M.new(opts)
  if type(opts) ~= "table" then error("lxmpp.server: expected an options table", 2) end
  local domain = check_type(opts, "domain", "string") or "localhost"
  local pdomain = jid.prep(domain)
  if not pdomain or jid.node(pdomain) or jid.resource(pdomain) then
    error(("lxmpp.server: %q is not a valid domain"):format(domain), 2)
  end
  local limits = {}
  for k, v in pairs(M.DEFAULT_LIMITS) do limits[k] = v end
  for k, v in pairs(check_type(opts, "limits", "table") or {}) do
    if M.DEFAULT_LIMITS[k] == nil then error(("lxmpp.server: unknown limit %q"):format(tostring(k)), 2) end
    if type(v) ~= "number" or v <= 0 then error(("lxmpp.server: limit %s must be a positive number"):format(k), 2) end
    limits[k] = v
  end
  local tls = check_type(opts, "tls", "table")
  if tls and (tls.cert ~= nil or tls.key ~= nil) and (type(tls.cert) ~= "string" or type(tls.key) ~= "string") then
    error("lxmpp.server: tls needs cert and key file names", 2)
  end
  if tls and tls.resumption ~= nil and type(tls.resumption) ~= "boolean" then
    error("lxmpp.server: tls.resumption must be a boolean", 2)
  end
  for name, pw in pairs(check_type(opts, "users", "table") or {}) do
    if type(name) ~= "string" or type(pw) ~= "string" then
      error("lxmpp.server: users maps names to password strings", 2)
    end
  end
  for d, secret in pairs(check_type(opts, "components", "table") or {}) do
    if type(d) ~= "string" or type(secret) ~= "string" or secret == "" then
      error("lxmpp.server: components maps domains to non-empty secrets", 2)
    end
  end
  check_type(opts, "auth", "function")
  check_type(opts, "storage", "string")
  check_type(opts, "muc", "string")
  check_type(opts, "muc_options", "table")
  check_type(opts, "pubsub", "string")
  check_type(opts, "pep", "boolean")
  check_type(opts, "archive", "boolean")
  check_type(opts, "sasl2", "boolean")
  check_type(opts, "fast", "boolean")
  check_type(opts, "ssdp", "boolean")
  check_type(opts, "csi", "boolean")
  check_type(opts, "logger", "function")
  if opts.log_level ~= nil and not LEVELS[opts.log_level] then
    error(("lxmpp.server: log_level must be debug, info, warn or error, got %s"):format(tostring(opts.log_level)), 2)
  end
  if opts.upload ~= nil then require("lxmpp.server.upload").check(opts.upload) end
  local web_opts = require("lxmpp.server.web").check(opts)
  local reserved = {}
  local rn = opts.reserved_names
  if rn == nil then rn = M.RESERVED_NAMES end
  if rn ~= false and type(rn) ~= "table" then
    error("lxmpp.server: reserved_names must be a list of names or false", 2)
  end
  for _, name in ipairs(rn or {}) do
    local node = type(name) == "string" and name ~= "" and jid.prepped_split(name .. "@" .. pdomain)
    if not node then error(("lxmpp.server: reserved name %q is not a valid user name"):format(tostring(name)), 2) end
    reserved[node] = true
  end
  local cb_types = M.channel_binding_types(opts.channel_binding)
  if not cb_types then
    error("lxmpp.server: channel_binding must be true, false or a list of " ..
      table.concat(M.CB_TYPES, ", "), 2)
  end
  local iterations = opts.iterations or 4096
  if math_type(iterations) ~= "integer" or iterations < 4096 then
    error("lxmpp.server: iterations must be an integer of at least 4096", 2)
  end
  local s2s_conf = require("lxmpp.server.s2s").check(opts, parse_address)
  local self = setmetatable({
    opts = opts,
    s2s_conf = s2s_conf,   -- nil: no federation (server/s2s.lua)
    s2s_listen = address_list(opts.s2s_listen, "s2s_listen"),
    s2s_tls_listen = address_list(opts.s2s_tls_listen, "s2s_tls_listen"),   -- XEP-0368 direct TLS
    domain = pdomain,
    limits = limits,
    listen = address_list(opts.listen, "listen", { "127.0.0.1:5222" }),
    tls_listen = address_list(opts.tls_listen, "tls_listen"),
    http_listen = address_list(opts.http, "http"),       -- WebSocket, BOSH, host-meta, static (server/web.lua)
    https_listen = address_list(opts.https, "https"),
    web_opts = web_opts,
    component_listen = address_list(opts.component_listen, "component_listen",
      next(opts.components or {}) and { "127.0.0.1:5347" } or nil),
    auth = opts.auth,
    registration = opts.registration == true,
    insecure_plaintext = opts.insecure_plaintext == true,
    sasl2 = opts.sasl2 ~= false,   -- XEP-0388, with Bind2 and inline resumption (features/sasl2.lua)
    fast = opts.sasl2 ~= false and opts.fast ~= false,   -- XEP-0484 tokens (server/fast.lua)
    ssdp = opts.ssdp ~= false,     -- XEP-0474's h= in SCRAM's server-first message (features/sasl.lua)
    csi = opts.csi ~= false,       -- XEP-0352 client state indication (server/csi.lua)
    cb_types = cb_types,   -- SCRAM -PLUS channel bindings offered, best first ({}: no -PLUS)
    iterations = iterations,
    reserved = reserved,   -- prepared user names in-band registration refuses
    -- per-address throttles (server/throttle.lua)
    auth_throttle = throttle.auth(limits), component_throttle = throttle.auth(limits),
    registrations = throttle.registrations(limits),
    -- stanzas in and out are logged at level debug (secrets redacted: lxmpp/redact.lua)
    debug = opts.debug == true or opts.log_level == "debug",
    log_level = LEVELS[opts.log_level or (opts.debug and "debug") or "warn"],
    logger = opts.logger,
    hosts = {},            -- domain -> host with :deliver(stanza, node, host, resource)
    sessions = {},         -- bare JID -> { resource -> c2s session } (read it through srv:sessions_of and co.)
    events = events.new(), -- the server's event bus (docs/server.md, "Adding a server feature")
    builtin_hooks = {},    -- ids of the handlers the server's own modules hooked at start
    streams = {},          -- every open stream -> true
    per_ip = {}, unauth = 0,
    listeners = {},
    sm_sessions = {},      -- XEP-0198 resumption id -> session
    removing = {},         -- account name -> true while remove_user runs
    started = false,
  }, Server)
  return self
end

---------------------------------------------------------------------------
-- the event bus (docs/server.md, "Adding a server feature")

--- srv:hook(name, fn [, priority]) -> id: fn(event) runs when the event
-- `name` fires, higher priorities first (the server's own handlers have
-- negative ones); a result other than nil stops the event there.
function Server:hook(name, fn, priority)
  return self.events:add(name, fn, priority)
end

--- srv:unhook(id) or srv:unhook(name, fn) -> true if that handler was there
function Server:unhook(name_or_id, fn)
  if fn == nil then return self.events:remove(name_or_id) end
  return self.events:remove_handler(name_or_id, fn)
end

-- A handler of the server's own modules: unhooked when the server stops.
function Server:hook_builtin(name, fn, priority)
  local id = self.events:add(name, fn, priority or -10)
  self.builtin_hooks[#self.builtin_hooks + 1] = id
  return id
end

--- srv:fire(name, event) -> the first non-nil handler result. A handler
-- that raises is logged; for a stanza's event (event.stanza) that handles
-- it: an iq request gets internal-server-error, anything else is dropped;
-- other events (user-removing, ...) go on with their next handlers.
function Server:fire(name, ev)
  local list = self.events.lists[name]  -- bus:list(name), inlined; never changed in place (lxmpp/events.lua)
  if not list then return nil end
  for i = 1, #list do                   -- bus:fire_guarded, inlined: routing fires several per stanza
    local ok, r = xpcall(list[i].fn, traceback, ev)
    if not ok then r = self:handler_failed(r, name, ev) end
    if r ~= nil then return r end
  end
  return nil
end

function Server:handler_failed(err, name, ev)
  self:log("error", "a handler of %s failed: %s", name, tostring(err))
  local s = type(ev) == "table" and ev.stanza
  if not s then return nil end
  if s.name == "iq" and (s.attr.type == "get" or s.attr.type == "set") then
    self:reply(ev, st.error_reply(s, "wait", "internal-server-error"))
  elseif s.name == "message" then
    -- not lost in silence: the sender learns it was not delivered
    self:bounce(s, "wait", "internal-server-error", "the server failed to handle this message")
  end
  return true
end

--- srv:reply(event, stanza): sends a reply to the stanza of event: through
-- the session it came from when the server knows it (event.origin), else
-- routed.
function Server:reply(ev, r)
  local origin = ev.origin
  if origin then return origin:send(r) end
  return self:route(r)
end

--- srv:pipe([name]) -> transport: a client stream to this server inside
-- the process, over lxmpp.transport.pipe (no socket, no TLS: nothing leaves
-- the process); the server's end is accepted like a TCP connection, limits
-- included. name: the address the server logs and counts it under
-- (default "pipe"). Give it to lxmpp.connect{ transport = ... }.
function Server:pipe(name)
  if name ~= nil and type(name) ~= "string" then error("srv:pipe: name must be a string", 2) end
  if not self.started then return nil, "the server is not started", "remote-server-not-found" end
  local client_end, server_end = require("lxmpp.transport").pipe(name or "pipe")
  self:accept(server_end, "c2s")
  return client_end
end

---------------------------------------------------------------------------
-- bound sessions, read-only: the server's code reads them only here

local NONE = setmetatable({}, { __newindex = function() error("sessions_of: the list is read-only", 2) end })

--- srv:sessions_of(bare) -> { resource -> session } of an account's bound
-- sessions (an empty table when none; never change it)
function Server:sessions_of(bare)
  return self.sessions[bare] or NONE
end

--- srv:session(full) or srv:session(bare, resource) -> the bound session or nil
function Server:session(bare, res)
  if res == nil then bare, res = jid.bare(bare), jid.resource(bare) end
  local list = bare and self.sessions[bare]
  return list and res and list[res] or nil
end

--- srv:each_session() -> an iterator over every bound session (do not bind
-- or unbind while it runs)
function Server:each_session()
  local sessions, bare, list, res = self.sessions, nil, nil, nil
  return function()
    while true do
      if list then
        local s
        res, s = next(list, res)
        if res ~= nil then return s end
      end
      bare, list = next(sessions, bare)
      if bare == nil then return nil end
      res = nil
    end
  end
end

--- srv:logs(level) -> true when srv:log writes messages of this level (so
-- that a caller can skip making one that would not be written)
function Server:logs(level)
  return (LEVELS[level] or 4) >= self.log_level
end

function Server:log(level, fmt, ...)
  if (LEVELS[level] or 4) < self.log_level then return end
  local msg = select("#", ...) > 0 and string_format(fmt, ...) or fmt
  if self.logger then return self.logger(level, msg) end
  io.stderr:write("lxmpp-server [", level, "] ", msg, "\n")
end

---------------------------------------------------------------------------
-- accounts: only salted SCRAM keys are kept (RFC 5802 §9)

local HASHES = { "SHA-1", "SHA-256" }

-- The prepared account name of a user name, or nil, message.
function Server:account_name(name)
  if type(name) ~= "string" or name == "" then return nil, "empty user name" end
  local node = jid.prepped_split(name .. "@" .. self.domain)
  if not node then return nil, ("%q is not a valid user name"):format(name) end
  return node
end

--- srv:add_user(name, password) -> true | nil, message (creates or
-- replaces). Replacing a password ends the account's sessions (see
-- set_password).
function Server:add_user(name, password)
  return self:set_password(name, password)
end

--- srv:set_password(name, password [, keep]) -> true | nil, message: sets
-- (or creates) the account's credentials, revoking its FAST tokens
-- (XEP-0484). Every stream that authenticated
-- with the old ones ends with the stream error <reset/> (RFC 6120
-- §4.9.3.16: the credentials of its security context were revoked), those
-- waiting for XEP-0198 resumption included; keep (the session that changed
-- its own password in-band, XEP-0077 §3.3) stays.
function Server:set_password(name, password, keep)
  if type(password) ~= "string" then error("set_password: password must be a string", 2) end
  local node, err = self:account_name(name)
  if not node then return nil, err end
  local rec = {}
  for _, h in ipairs(HASHES) do
    local creds, cerr = core.sasl_credentials(password, h, self.iterations)
    if not creds then return nil, "password refused: " .. tostring(cerr) end
    rec["SCRAM-" .. h] = creds
  end
  local ok, serr = self.store:set_account(node, rec)
  if not ok then return nil, serr end
  require("lxmpp.server.fast").revoke(self, node)   -- XEP-0484 tokens were given for the old one
  self:end_sessions(node, "reset", "the password was changed", keep)
  return true
end

--- srv:end_sessions(name, condition, text [, keep]): ends every stream and
-- session of an account but keep: bound sessions and streams authenticated
-- but not bound yet get the stream error `condition`, and sessions waiting
-- for XEP-0198 resumption end at once (they can no longer be resumed).
function Server:end_sessions(node, cond, text, keep)
  local bare = node .. "@" .. self.domain
  local list = {}
  for _, s in pairs(self:sessions_of(bare)) do
    if s ~= keep then list[#list + 1] = s end
  end
  for s in pairs(self.streams) do
    if s ~= keep and s.authenticated and not s.bound and s.user == node and not s.ended then
      list[#list + 1] = s
    end
  end
  for _, s in ipairs(list) do
    if s.sm then s.sm.resumable = false end
    if s.hibernation then
      self:unbind(s, text)                      -- no stream left to tell
    elseif not s.ended then
      s:close(cond, text)
    end
  end
end

--- srv:remove_user(name) -> true: the account and everything that refers
-- to it go (docs/server.md, "Removing an account"): its sessions end (those
-- waiting for XEP-0198 resumption too; what they held for it is bounced,
-- never kept), its contacts get unsubscribe/unsubscribed (RFC 6121 §3.2,
-- §3.3), it leaves every MUC affiliation and pubsub/PEP affiliation and
-- subscription, and its stored data is deleted. Nothing of it is left for
-- a later account of the same name.
function Server:remove_user(name)
  local node, err = self:account_name(name)
  if not node then return nil, err end
  local bare = node .. "@" .. self.domain
  -- from now on the account does not exist: nothing is stored for it,
  -- what comes for it bounces
  self.removing[node] = true
  local ok, rerr = pcall(function()
    -- first the sessions, while the roster still says who saw them online
    self:end_sessions(node, "not-authorized", "the account was removed")
    -- PEP, rosters, MUC, pubsub, upload (docs/server.md, "Adding a server feature")
    self:fire("user-removing", { node = node, bare = bare })
  end)
  self.store:remove_account(node)
  self:fire("user-removed", { node = node, bare = bare })
  self.removing[node] = nil
  if not ok then error(rerr, 0) end
  return true
end

--- srv:user_exists(name) -> boolean
function Server:user_exists(node)
  if self.removing[node] then return false end
  if self.auth then return true end
  return self.store:has_account(node)
end

-- SCRAM lookup: the stored keys of user for hash, or nil (unknown users
-- then get the engine's made-up salt: same shape from outside).
function Server:scram_credentials(user, hash)
  local rec = user and self.store:get_account(user)
  return rec and rec["SCRAM-" .. hash] or nil
end

--- Checks a PLAIN password against the stored SCRAM keys, in constant
-- time, and with the same work for unknown users.
function Server:check_password(user, password)
  local rec = self.store:get_account(user)
  local c = rec and (rec["SCRAM-SHA-256"] or rec["SCRAM-SHA-1"])
  local salt = c and c.salt or self.sasl_secret:sub(1, 16)
  local iter = c and c.iterations or self.iterations
  local creds = core.sasl_credentials(password, c and c.hash or "SHA-256", iter, salt)
  if not c or not creds then return false end
  return core.const_eq(creds.stored_key, c.stored_key)
end

---------------------------------------------------------------------------
-- connection accounting (server/stream.lua calls these)

-- Connections are counted per address as throttle.key gives it: an IPv6
-- peer by its /64, since one subscriber usually holds a whole /64 and could
-- otherwise open max_per_ip connections from each of its addresses.
function Server:account_open(s)
  self.streams[s] = true
  if s.outgoing then return end     -- ours (s2s_out.lua): no peer's connection to count
  s.ip_key = throttle.key(s.ip)
  self.per_ip[s.ip_key] = (self.per_ip[s.ip_key] or 0) + 1
  self.unauth = self.unauth + 1
  s.counted_unauth = true
end

function Server:account_auth(s)
  if s.counted_unauth then
    s.counted_unauth = false
    self.unauth = self.unauth - 1
  end
end

function Server:account_close(s)
  if not self.streams[s] then return end
  self.streams[s] = nil
  if s.outgoing then return end
  local n = (self.per_ip[s.ip_key] or 1) - 1
  self.per_ip[s.ip_key] = n > 0 and n or nil
  self:account_auth(s)
end

--- srv:stats() -> { streams =, unauthenticated =, sessions = }
function Server:stats()
  local n, b = 0, 0
  for _ in pairs(self.streams) do n = n + 1 end
  for _ in self:each_session() do b = b + 1 end
  return { streams = n, unauthenticated = self.unauth, sessions = b }
end

local STREAM_NS = { c2s = "jabber:client", component = "jabber:component:accept", s2s = "jabber:server" }

-- Refuses a connection over the limits: header, stream error, close.
local function refuse(self, conn, ns, text)
  local framing = conn.framing
  conn:write(framing.open(ns, { from = self.domain, version = "1.0" }))
  local xml, close = framing.error("policy-violation", text)
  conn:write(xml)
  if close then conn:write(close) end
  conn:close()
end

function Server:accept(conn, kind, direct_tls)
  local ip = conn:info().peer
  if (self.per_ip[throttle.key(ip)] or 0) >= self.limits.max_per_ip then
    self:log("warn", "refused a connection from %s: too many from that address", ip)
    if direct_tls then return conn:abort() end
    return refuse(self, conn, STREAM_NS[kind], "too many connections from your address")
  end
  if self.unauth >= self.limits.max_unauthenticated then
    self:log("warn", "refused a connection from %s: too many unauthenticated connections", ip)
    if direct_tls then return conn:abort() end
    return refuse(self, conn, STREAM_NS[kind], "too many connections, try again later")
  end
  if kind == "component" then
    return require("lxmpp.server.component").accept(self, conn, ip)
  end
  if kind == "s2s" then
    return require("lxmpp.server.s2s_in").accept(self, conn, direct_tls, ip)
  end
  return require("lxmpp.server.c2s").accept(self, conn, direct_tls, ip)
end

---------------------------------------------------------------------------
-- bound sessions

--- Ends a bound session that a new one replaces: a connected one gets
-- the stream error conflict, one waiting for XEP-0198 resumption ends (it
-- can no longer be resumed).
function Server:replace_session(old, text)
  if old.hibernation then
    old.sm.resumable = false
    self:unbind(old, text)
  else
    old:close("conflict", text)
  end
end

--- Binds resource for a c2s session; the newest connection wins a
-- conflict (the older one gets a conflict stream error).
function Server:bind(sess, res)
  local list = self.sessions[sess.bare]
  if not list then
    list = {}
    self.sessions[sess.bare] = list
  end
  local old = list[res]
  if old then self:replace_session(old, "replaced by a new connection with the same resource") end
  local n = 0
  for _ in pairs(list) do n = n + 1 end
  if n >= self.limits.max_resources then
    return nil, "resource-constraint", "too many resources bound for this account"
  end
  self.sessions[sess.bare] = list   -- the kick may have dropped an empty list
  list[res] = sess
  sess.resource, sess.full, sess.bound = res, sess.bare .. "/" .. res, true
  self:log("info", "bound %s", sess.full)
  self:fire("resource-bind", { origin = sess })
  return sess.full
end

function Server:unbind(sess, reason)
  local list = self.sessions[sess.bare]
  if list and list[sess.resource] == sess then
    list[sess.resource] = nil
    if next(list) == nil then self.sessions[sess.bare] = nil end
  end
  sess.bound = false
  self:log("info", "%s left: %s", sess.full, tostring(reason))
  self.im:session_ended(sess)
  self:fire("resource-unbind", { origin = sess, reason = reason })
  require("lxmpp.server.sm").session_over(sess)
end

---------------------------------------------------------------------------
-- routing

local split_cache, split_n = {}, 0
-- A prepared JID's parts (cached: the same addresses come back constantly).
local function split(to)
  local c = split_cache[to]
  if c then return c[1], c[2], c[3] end
  local node, host, res = jid.prepped_split(to)
  if not host then return nil end
  if split_n > 20000 then split_cache, split_n = {}, 0 end
  split_n = split_n + 1
  split_cache[to] = { node, host, res }
  return node, host, res
end
M.split = split

--- srv:route(stanza [, event]): delivers a stanza whose `from` is trusted
-- (stamped by the server or checked for a component) to its destination;
-- event: the table of its pre- event, which the route and delivery events
-- then share (as Prosody's do).
function Server:route(s, ev)
  local to = s.attr.to
  local node, host, res = split(to)
  if not host then
    return self:bounce(s, "modify", "jid-malformed", "the destination address is not a valid JID")
  end
  if ev then
    ev.node, ev.host, ev.resource, ev.bare = node, host, res, false
  else
    ev = { stanza = s, node = node, host = host, resource = res, bare = false }   -- bare: set by our IM host
  end
  if self:fire("route", ev) then return end       -- refused (XEP-0191 blocking hooks it)
  local h = self.hosts[host]
  if h then return h:deliver(s, node, host, res, ev) end
  if self.components and self.components[host] then
    return self:bounce(s, "cancel", "service-unavailable", "the component serving " .. host .. " is not connected")
  end
  if self.s2s then return self.s2s:send(s, host) end   -- a remote domain (server/s2s.lua)
  return self:bounce(s, "cancel", "remote-server-not-found", "this server does not federate")
end

--- An error reply to a routed stanza (never to an error or a result).
function Server:bounce(s, etype, cond, text)
  local t = s.attr.type
  if t == "error" or (s.name == "iq" and t == "result") or not s.attr.from then return end
  if s.name == "presence" then return end   -- presence errors are not worth a round trip
  local r = st.error_reply(s, etype, cond, text)
  if not r.attr.from then r.attr.from = self.domain end
  return self:route(r)
end

--- srv:s2s_host(domain, address): from now on, routes to the remote
-- domain connect to address ("IP:PORT"), as the s2s.hosts option says
-- (docs/server.md, "Federation (s2s)"); a route already up is kept. For
-- tests and private networks whose addresses are known only at run time.
function Server:s2s_host(domain, address)
  if not self.s2s_conf then error("s2s_host: federation is off (no s2s option)", 2) end
  local d = type(domain) == "string" and jid.prep(domain)
  if not d or jid.node(d) or jid.resource(d) then error("s2s_host: invalid domain " .. tostring(domain), 2) end
  self.s2s_conf.hosts[d] = require("lxmpp.server.s2s").host_address(address, parse_address, "s2s_host")
end

--- srv:add_host(domain, host): mounts a service (host:deliver(stanza, node,
-- domain, resource)) on a domain of its own.
function Server:add_host(domain, host)
  local d = jid.prep(domain)
  if not d then error("add_host: invalid domain " .. tostring(domain), 2) end
  if self.hosts[d] then error("add_host: " .. d .. " is already served", 2) end
  self.hosts[d] = host
  return d
end

function Server:remove_host(domain)
  self.hosts[jid.prep(domain) or domain] = nil
end

---------------------------------------------------------------------------
-- start and stop

local function listen_all(self, list, kind, direct_tls)
  for _, a in ipairs(list) do
    local l, msg, cond = net.listen(a.ip, a.port, function(conn) self:accept(conn, kind, direct_tls) end)
    if not l then return nil, msg, cond end
    local k = direct_tls and kind .. "-tls" or kind      -- c2s-tls, s2s-tls
    self.listeners[#self.listeners + 1] = { l = l, kind = k, ip = a.ip, port = l:port() }
  end
  return true
end

--- srv:start() -> true | nil, message, condition
function Server:start()
  if self.started then return true end
  local storage = require "lxmpp.server.storage"
  local store, err = storage.open(self.opts.storage)
  if not store then return nil, "storage: " .. tostring(err), "internal-server-error" end
  self.store = store
  self.sasl_secret = core.random(32)
  local ctx, msg, cond
  -- TLS session tickets (docs/server.md, "TLS session resumption"): on
  -- unless tls.resumption = false; their keys are the context's, new at
  -- each start
  local topts = self.opts.tls or {}
  local resumption = topts.resumption ~= false
  if topts.cert then
    ctx, msg, cond = core.tls_context({ mode = "server", cert = topts.cert, key = topts.key, resumption = resumption })
  else
    ctx, msg, cond = core.tls_context({ mode = "server", domain = self.domain, resumption = resumption })
  end
  if not ctx then
    self:stop()
    return nil, "TLS: " .. tostring(msg), cond
  end
  self.tls_ctx = ctx
  for name, pw in pairs(self.opts.users or {}) do
    local ok, uerr = self:add_user(name, pw)
    if not ok then
      self:stop()
      return nil, ("user %q: %s"):format(name, tostring(uerr)), "bad-request"
    end
  end
  self.im = require("lxmpp.server.im").new(self)
  self.hosts[self.domain] = self.im
  if self.opts.muc then
    self.muc = require("lxmpp.server.muc").new(self, self.opts.muc, self.opts.muc_options)
    self:add_host(self.opts.muc, self.muc)
  end
  if self.opts.pep ~= false then self.pep = require("lxmpp.server.pep").new(self) end
  if self.opts.pubsub then
    self.pubsub = require("lxmpp.server.pubsub").new_host(self, self.opts.pubsub)
    self:add_host(self.opts.pubsub, self.pubsub)
  end
  self.components = {}
  for d, secret in pairs(self.opts.components or {}) do
    local pd = jid.prep(d)
    if not pd then
      self:stop()
      return nil, ("component domain %q is not valid"):format(d), "bad-request"
    end
    self.components[pd] = { secret = secret }
  end
  local ok
  if self.s2s_conf then
    self.s2s, msg, cond = require("lxmpp.server.s2s").new(self, self.s2s_conf)
    if not self.s2s then
      self:stop()
      return nil, msg, cond
    end
  end
  ok, msg, cond = listen_all(self, self.listen, "c2s", false)
  if ok then ok, msg, cond = listen_all(self, self.tls_listen, "c2s", true) end
  if ok then ok, msg, cond = listen_all(self, self.component_listen, "component", false) end
  if ok then ok, msg, cond = listen_all(self, self.s2s_listen, "s2s", false) end
  if ok then ok, msg, cond = listen_all(self, self.s2s_tls_listen, "s2s", true) end
  if ok and self.opts.upload then   -- XEP-0363, after the XMPP listeners (addresses() order)
    self.upload, msg, cond = require("lxmpp.server.upload").start(self, self.opts.upload)
    ok = self.upload ~= nil
  end
  if ok and (#self.http_listen > 0 or #self.https_listen > 0) then
    self.web, msg, cond = require("lxmpp.server.web").start(self)
    ok = self.web ~= nil
  end
  if not ok then
    self:stop()
    return nil, msg, cond
  end
  self.started = true
  require("lxmpp.signal").track_server(self, true)   -- lxmpp.shutdown stops it
  for _, l in ipairs(self.listeners) do
    self:log("info", "listening for %s on %s port %d", l.kind, l.ip, l.port)
  end
  return true
end

--- srv:addresses() -> { { kind = "c2s"|"c2s-tls"|"component"|"s2s"|"s2s-tls"|"http"|"https", ip =, port = }, ... }
function Server:addresses()
  local out = {}
  for i, l in ipairs(self.listeners) do out[i] = { kind = l.kind, ip = l.ip, port = l.port } end
  return out
end

--- srv:stop(): stops listening, ends every stream (system-shutdown), closes
-- the storage. Safe twice.
function Server:stop()
  require("lxmpp.signal").track_server(self, false)
  for _, l in ipairs(self.listeners) do l.l:close() end
  self.listeners = {}
  local list = {}
  for s in pairs(self.streams) do list[#list + 1] = s end
  for _, s in ipairs(list) do s:close("system-shutdown", "the server is stopping") end
  local waiting = {}                         -- XEP-0198 sessions nobody resumed yet
  for s in self:each_session() do
    if s.hibernation then waiting[#waiting + 1] = s end
  end
  for _, s in ipairs(waiting) do
    s.sm.resumable = false
    self:unbind(s, "the server is stopping")  -- unacknowledged messages go offline
  end
  if self.s2s then self.s2s:close() end    -- what waited for a route bounces
  self.s2s = nil
  if self.muc and self.muc.close then self.muc:close() end
  if self.upload then self.upload:close() end
  if self.web then self.web:close() end
  self.muc, self.pep, self.upload, self.pubsub, self.web = nil, nil, nil, nil, nil
  for _, id in ipairs(self.builtin_hooks) do self.events:remove(id) end
  self.builtin_hooks = {}
  if self.tls_ctx then self.tls_ctx:close() end
  self.tls_ctx = nil
  if self.store then self.store:close() end
  self.store = nil
  self.hosts = {}
  self.started = false
  return true
end

return M
