-- lxmpp.resolve: where to connect for an XMPP domain (RFC 6120 §3.2,
-- XEP-0368), over the asynchronous resolver of csrc/dns.c.
--
-- targets(domain) asks _xmpps-client._tcp (direct TLS) and _xmpp-client._tcp
-- (STARTTLS) at once, mixes both record sets as one (XEP-0368: "all
-- priorities and weights are mixed") and orders them as RFC 2782 says; the
-- caller resolves each target with addresses() and tries them in order. Both
-- functions wait, so they are called from a task. Every state has one default
-- resolver, made on first use: the system's resolv.conf, or LXMPP_DNS_SERVERS
-- ("127.0.0.1:5353,[::1]:53"), or what configure()/set_servers() said.

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local task = require "lxmpp.task"
local session = require "lxmpp.session"

local type, error, ipairs, tostring, pcall, math_type = type, error, ipairs, tostring, compat.pcall, compat.math_type
local getenv, pack, unpack = os.getenv, compat.pack, compat.unpack

-- An integer in [lo, hi] from OpenSSL's generator (48 bits: SRV weights
-- are 16-bit, so a sum stays far below; session.random_uint): the host's
-- math.random sequence is not ours to move (a game seeds it for replays).
local function uniform(lo, hi)
  return lo + session.random_uint(6) % (hi - lo + 1)
end
local sort, remove = table.sort, table.remove

local M = {}

-- c-ares' own defaults (5 s, 4 tries, each try waiting twice as long as the
-- one before) can keep a connect waiting for over a minute
local DEFAULT_TIMEOUT, DEFAULT_TRIES = 3, 2

local settings = {}      -- servers, timeout, tries given to configure()
local default            -- the state's default resolver, once made

-- Results of core resolver queries: dispatch("dns", target, records, msg,
-- cond); a target is anything with a wake method (a waiter, lookup's slots).
task.handle("dns", function(w, ...) return w:wake(...) end)

local function make_resolver()
  local servers = settings.servers
  if servers == nil then
    servers = getenv("LXMPP_DNS_SERVERS")
    if servers == "" then servers = nil end
  end
  return core.resolver{
    servers = servers,
    timeout = settings.timeout or DEFAULT_TIMEOUT,
    tries = settings.tries or DEFAULT_TRIES,
  }
end

local function resolver_for(opts)
  if opts and opts.resolver then return opts.resolver end
  if not default then
    local r, msg, cond = make_resolver()
    if not r then return nil, msg, cond end
    default = r
  end
  return default
end

--- resolve.configure{ servers = "127.0.0.1:5399", timeout = seconds, tries = n }
-- Replaces the default resolver (at once, so a bad servers string raises
-- here). Absent fields: LXMPP_DNS_SERVERS or resolv.conf, 3 s, 2 tries.
-- Lookups still waiting on the old resolver end with an error.
function M.configure(opts)
  if type(opts) ~= "table" then error("resolve.configure: expected a table", 2) end
  local new = { servers = opts.servers, timeout = opts.timeout, tries = opts.tries }
  if new.servers ~= nil and type(new.servers) ~= "string" then
    error("resolve.configure: servers must be a string like \"127.0.0.1:53\"", 2)
  end
  local old_settings = settings
  settings = new
  local ok, r, msg = pcall(make_resolver)
  if not ok or not r then
    settings = old_settings
    error("resolve.configure: " .. tostring(ok and msg or r), 2)
  end
  if default then default:close() end
  default = r
end

--- resolve.set_servers(servers): configure() with only the servers changed;
-- nil goes back to LXMPP_DNS_SERVERS or resolv.conf.
function M.set_servers(servers)
  if servers ~= nil and type(servers) ~= "string" then
    error("resolve.set_servers: expected a string like \"127.0.0.1:53\" or nil", 2)
  end
  return M.configure{ servers = servers, timeout = settings.timeout, tries = settings.tries }
end

-- Asks r the queries { { "srv" | "addr", name }, ... } at once and waits for
-- all of them: -> { pack(records | nil, msg, cond), ... } in the same order.
-- One waiter for the group, so that a task cancelled at any point of the
-- wait (lxmpp.task.cancel: srv:stop() ending an s2s route, a cancelled
-- connect) abandons every query still out (resolver:cancel, csrc/dns.c):
-- nothing of them stays behind to keep the loop alive until c-ares times out.
local function lookup(r, queries)
  local w = task.waiter("lxmpp.resolve", 2)
  local results, slots, left = {}, {}, #queries
  local function cancel()
    for _, slot in ipairs(slots) do
      if not slot.done then
        slot.done = true
        r:cancel(slot)
      end
    end
  end
  for i, q in ipairs(queries) do
    -- the query's target: the dispatcher calls slot:wake(records, msg, cond)
    local slot = { done = false }
    function slot.wake(_, ...)
      if slot.done then return false end
      slot.done = true
      results[i] = pack(...)
      left = left - 1
      if left == 0 then w:wake() end
      return true
    end
    slots[i] = slot
    local ok, started, msg, cond = pcall(r[q[1]], r, q[2], slot)
    if not ok then
      cancel()
      error(started, 0)
    end
    if not started then slot:wake(nil, msg, cond) end
  end
  w.cancel = cancel
  w:wait()
  return results
end

-- example.org. -> example.org; IDNs to their ASCII form.
local function ascii_name(name)
  name = name:gsub("%.$", "")
  if name:find("[\128-\255]") then
    local a, msg = core.to_ascii(name)
    if not a then return nil, ("invalid domain %q: %s"):format(name, tostring(msg)) end
    name = a
  end
  return name
end

local function is_localhost(name)
  name = name:lower():gsub("%.$", "")
  return name == "localhost" or name:sub(-10) == ".localhost"
end

local function by_priority(a, b)
  if a.priority ~= b.priority then return a.priority < b.priority end
  -- RFC 2782: weight 0 first, so that they keep a small chance
  if (a.weight == 0) ~= (b.weight == 0) then return a.weight == 0 end
  local ha, hb = a.host or a.target, b.host or b.target
  if ha ~= hb then return ha < hb end
  if a.port ~= b.port then return a.port < b.port end
  return tostring(a.tls) < tostring(b.tls)
end

--- resolve.order(records [, random]) -> { { host =, port =, tls = }, ... }
-- RFC 2782 ordering: priority ascending, and within one priority repeated
-- weighted random selection. records: { target (or host) =, port =,
-- priority =, weight =, tls = }. random(lo, hi) returns an integer in
-- [lo, hi], like math.random (the default draws from OpenSSL's generator);
-- specs pass their own.
function M.order(records, random)
  random = random or uniform
  local list = {}
  for i, r in ipairs(records) do list[i] = r end
  sort(list, by_priority)
  local out, i = {}, 1
  while i <= #list do
    local group = {}
    local prio = list[i].priority
    while i <= #list and list[i].priority == prio do
      group[#group + 1] = list[i]
      i = i + 1
    end
    while #group > 0 do
      local sum, pick = 0, #group
      for _, r in ipairs(group) do sum = sum + r.weight end
      if #group == 1 then
        pick = 1
      elseif sum == 0 then
        pick = random(1, #group)
      else
        -- the first whose running sum reaches n: weight 0 entries (first)
        -- are taken only when n is 0
        local n, run = random(0, sum), 0
        for k, r in ipairs(group) do
          run = run + r.weight
          if run >= n then pick = k break end
        end
      end
      local r = remove(group, pick)
      out[#out + 1] = { host = r.host or r.target, port = r.port, tls = r.tls }
    end
  end
  return out
end

-- One SRV answer: { records = {...} } | { dot = true } | { none = true } |
-- { err = msg, cond = cond }
local function classify(records, msg, cond)
  if not records then
    if cond == "remote-server-not-found" then return { none = true } end
    return { err = msg, cond = cond }
  end
  if #records == 1 and records[1].target == "." then return { dot = true } end
  local usable = {}
  for _, r in ipairs(records) do
    if r.target ~= "." and r.port > 0 then usable[#usable + 1] = r end
  end
  if #usable == 0 then return { none = true } end
  return { records = usable }
end

local TLS_MODES = { starttls = true, direct = true, any = true, none = true }

--- resolve.targets(domain [, opts]) -> { { host =, port =, tls = }, ... }
--                                    | nil, message, condition
-- Waits (in a task). tls is "direct" (TLS from the first byte, an
-- _xmpps-client record) or "starttls" (the plain XMPP port). opts:
--   tls = nil | "any"   both services, mixed by priority and weight
--         "starttls"    (or "none") only _xmpp-client
--         "direct"      only _xmpps-client
--   host =, port =      skip DNS: that one target (port 5222, or 5223 for
--                       direct TLS)
--   random = fn         for the weighted choice (see order)
--   service = "client"  (default) _xmpp-client/_xmpps-client, fallback port
--             | "server"  _xmpp-server/_xmpps-server (RFC 6120 §3.2.1 for
--                         server-to-server, XEP-0368), fallback port 5269
--   resolver = r        a core.resolver instead of the default one
-- A service whose only record is "." is not available: nil, message,
-- "remote-server-not-found", with no fallback (RFC 2782, XEP-0368). With no
-- SRV record at all, or an xmpp-client lookup failing (SERVFAIL, ...), the
-- answer is the domain itself on 5222 (RFC 6120 §3.2.2); a timeout returns
-- nil, message, "timeout" (the A/AAAA lookup would wait as long again), and a
-- lookup ended by configure()/set_servers() nil, message, "closed".
--   local list = assert(resolve.targets("example.org"))
--   for _, t in ipairs(list) do ... resolve.addresses(t.host) ... end
function M.targets(domain, opts)
  task.current("lxmpp.resolve.targets", 1)
  if type(domain) ~= "string" or domain == "" then
    error("resolve.targets: domain must be a non-empty string", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then error("resolve.targets: opts must be a table", 2) end
  opts = opts or {}
  local svc = opts.service or "client"
  if svc ~= "client" and svc ~= "server" then
    error("resolve.targets: service must be \"client\" or \"server\"", 2)
  end
  local plain_port, direct_port = 5222, 5223
  if svc == "server" then plain_port, direct_port = 5269, 5270 end
  local mode = opts.tls or "any"
  if not TLS_MODES[mode] then
    error("resolve.targets: tls must be \"starttls\", \"direct\", \"any\" or \"none\"", 2)
  end
  local kind = mode == "direct" and "direct" or "starttls"
  if opts.host ~= nil or opts.port ~= nil then
    local port = opts.port or (kind == "direct" and direct_port or plain_port)
    if math_type(port) ~= "integer" or port < 1 or port > 65535 then
      error("resolve.targets: port must be an integer in [1, 65535]", 2)
    end
    if opts.host ~= nil and type(opts.host) ~= "string" then
      error("resolve.targets: host must be a string", 2)
    end
    return { { host = opts.host or domain, port = port, tls = kind } }
  end
  local name, bad = ascii_name(domain)
  if not name then return nil, bad, "remote-server-not-found" end
  local fallback = { { host = name, port = plain_port, tls = "starttls" } }
  if core.ip_family(name) or is_localhost(name) then
    if mode == "direct" then
      return nil, "direct TLS needs SRV records; " .. name .. " has none", "remote-server-not-found"
    end
    return fallback
  end
  local r, msg, cond = resolver_for(opts)
  if not r then return nil, msg, cond end

  -- both services at once, waited for together (lookup)
  local queries, is, ic = {}, nil, nil
  if mode ~= "starttls" and mode ~= "none" then
    queries[#queries + 1] = { "srv", "_xmpps-" .. svc .. "._tcp." .. name }
    is = #queries
  end
  if mode ~= "direct" then
    queries[#queries + 1] = { "srv", "_xmpp-" .. svc .. "._tcp." .. name }
    ic = #queries
  end
  local answers = lookup(r, queries)
  local s = is and classify(unpack(answers[is], 1, 3))
  local c = ic and classify(unpack(answers[ic], 1, 3))

  local found = {}
  for _, res in ipairs{ { s, "direct" }, { c, "starttls" } } do
    if res[1] and res[1].records then
      for _, rec in ipairs(res[1].records) do
        found[#found + 1] = { target = rec.target, port = rec.port, priority = rec.priority,
                              weight = rec.weight, tls = res[2] }
      end
    end
  end
  if #found > 0 then return M.order(found, opts.random) end

  if c and c.dot then
    return nil, "xmpp-" .. svc .. " service not available for " .. name, "remote-server-not-found"
  end
  if s and s.dot then
    -- XEP-0368: "." says SRV is in use here: no A/AAAA fallback
    if c and c.err then return nil, c.err, c.cond end
    return nil, (c and "xmpp-" or "xmpps-") .. svc .. " service not available for " .. name,
      "remote-server-not-found"
  end
  if not c then                              -- direct TLS only
    if s.err then return nil, s.err, s.cond end
    return nil, "xmpps-" .. svc .. " service not available for " .. name .. " (no SRV records)",
      "remote-server-not-found"
  end
  if c.err and (c.cond == "timeout" or c.cond == "closed") then return nil, c.err, c.cond end
  return fallback
end

--- resolve.addresses(host [, opts]) -> { "192.0.2.1", "2001:db8::1", ... }
--                                     | nil, message, condition
-- Waits (in a task) for the A and AAAA records of host, in the order to try
-- them (c-ares sorts them as RFC 6724 says). An IP address (also "[::1]") is
-- returned as it is, and "localhost" (RFC 6761) is { "127.0.0.1", "::1" },
-- neither with a query. opts.resolver: a core.resolver to ask instead.
function M.addresses(host, opts)
  task.current("lxmpp.resolve.addresses", 1)
  if type(host) ~= "string" or host == "" then
    error("resolve.addresses: host must be a non-empty string", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then error("resolve.addresses: opts must be a table", 2) end
  local literal = host:match("^%[(.*)%]$") or host
  if core.ip_family(literal) then return { literal } end
  if is_localhost(host) then return { "127.0.0.1", "::1" } end
  local name, bad = ascii_name(host)
  if not name then return nil, bad, "remote-server-not-found" end
  local r, msg, cond = resolver_for(opts)
  if not r then return nil, msg, cond end
  local list, emsg, econd = unpack(lookup(r, { { "addr", name } })[1], 1, 3)
  if not list then return nil, emsg, econd end
  local out, seen = {}, {}
  for _, ip in ipairs(list) do
    if not seen[ip] then
      seen[ip] = true
      out[#out + 1] = ip
    end
  end
  return out
end

return M
