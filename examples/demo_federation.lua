-- lxmpp federation demo (`make demo-federation`): nothing else to install.
--
-- The network of the classic XMPP figure: two servers for two domains,
-- discovery.nasa.guv and europa.nasa.guv, routing to each other over
-- server-to-server streams (RFC 6120 §4, STARTTLS + SASL EXTERNAL with
-- certificates), and a gateway into another network (an external
-- component, XEP-0114) on discovery.nasa.guv: sms.discovery.nasa.guv, a toy
-- SMS network whose phones answer texts.
--
--   1. makes a small CA and a certificate for each domain (openssl command
--      line, in a temporary folder removed at the end);
--   2. starts both embedded servers on 127.0.0.1 (free ports) and tells each
--      where the other listens (s2s.hosts: no DNS, nothing on the machine
--      changes), and connects the gateway;
--   3. logs in one user per domain and one more on discovery, and runs a
--      scripted conversation across the domains and through the gateway
--      (from both domains: stanzas to and from the gateway's subdomain cross
--      over s2s too), printing who sends what and which server routes it
--      where;
--   4. stops everything; exits 0 when every message arrived, 1 otherwise.
--
-- Environment: LXMPP_DEMO_TIMEOUT (seconds to wait for each message, 20).

local lxmpp = require "lxmpp"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local compat = require "lxmpp.compat"

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local demo = require "demo_support"
local say = demo.say

local DISCOVERY, EUROPA = "discovery.nasa.guv", "europa.nasa.guv"
local SMS = "sms." .. DISCOVERY
local SMS_SECRET = "sms-gateway-secret"
local TIMEOUT = tonumber(os.getenv("LXMPP_DEMO_TIMEOUT") or "20") or 20

local ACCOUNTS = {
  [DISCOVERY] = { DavidBowman = "dave-pw", FrankPoole = "frank-pw" },
  [EUROPA] = { HeywoodFloyd = "floyd-pw" },
}

-- The toy SMS network behind the gateway: a phone number, who has it, and
-- how that phone answers a text.
local PHONES = {
  ["+15550100"] = { owner = "Mission Control, Houston",
    reply = function(text) return "Houston copies (" .. #text .. " characters). Try the manual override." end },
}

---------------------------------------------------------------------------
-- certificates: a CA of the demo's own, and one certificate per domain
-- naming it (and, for discovery, its gateway's subdomain), usable both as a
-- server and as a client certificate (SASL EXTERNAL between servers)

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- runs cmd; its output becomes the error when it fails. The exit status
-- is read from the output: closing a pipe reports it on Lua 5.2+ only
-- (LuaJIT and 5.1 say true whatever happened).
local function sh(cmd)
  local f = assert(io.popen("unset LD_PRELOAD; (" .. cmd .. ") 2>&1; echo \"exit status $?\"", "r"))
  local out = f:read("*a")
  f:close()
  local body, status = out:match("^(.-)exit status (%d+)\n?$")
  if status ~= "0" then error("command failed: " .. cmd .. "\n" .. (body or out), 0) end
end

local function make_pki()
  local dir = os.tmpname()
  os.remove(dir)
  sh("mkdir -m 700 " .. q(dir))
  local ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
  sh(("openssl req -x509 %s -keyout %s -out %s -days 2 -subj '/CN=lxmpp federation demo CA'"
    .. " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign")
    :format(ec, q(dir .. "/ca.key"), q(dir .. "/ca.pem")))
  local pki = { dir = dir, ca = dir .. "/ca.pem" }
  for domain, names in pairs({ [DISCOVERY] = { DISCOVERY, SMS }, [EUROPA] = { EUROPA } }) do
    local base = dir .. "/" .. domain
    local ext = assert(io.open(base .. ".ext", "w"))
    ext:write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n",
      "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:", table.concat(names, ",DNS:"), "\n")
    ext:close()
    sh(("openssl req -new %s -keyout %s -out %s -subj %s"):format(ec, q(base .. ".key"), q(base .. ".csr"),
      q("/CN=" .. domain)))
    sh(("openssl x509 -req -in %s -CA %s -CAkey %s -CAcreateserial -days 2 -out %s -extfile %s")
      :format(q(base .. ".csr"), q(pki.ca), q(dir .. "/ca.key"), q(base .. ".pem"), q(base .. ".ext")))
    pki[domain] = { cert = base .. ".pem", key = base .. ".key" }
  end
  return pki
end

---------------------------------------------------------------------------
-- the trace: what each server routes, and its federation events

local function short(addr)
  return addr and (addr:gsub("%.nasa%.guv", ".…")) or "?"
end

local function tag(srv) return ("[%s]"):format(srv.domain:match("^[^.]+")) end

-- Every message with a body this server routes (the `route` hook): where
-- it comes from and where it goes (an account here, the gateway, or
-- another server). gateway: the gateway's domain when it is served here.
local function trace(srv, gateway)
  srv:hook("route", function(ev)
    local s = ev.stanza
    if s.name ~= "message" or not s:get_child_text("body") then return end
    local from_host, to_host = jid.domain(s.attr.from or ""), ev.host
    local came
    if from_host == srv.domain then came = "from a client"
    elseif from_host == gateway then came = "from the gateway"
    else came = "arrived over s2s from " .. from_host end
    local goes
    if to_host == srv.domain then goes = "deliver to the account"
    elseif to_host == gateway then goes = "hand to the gateway " .. to_host
    else goes = "send over s2s to " .. to_host end
    say("    %-12s %s → %s: %s, %s", tag(srv), short(s.attr.from), short(s.attr.to), came, goes)
  end)
end

-- The server's own log, keeping its federation lines (routes opening and up,
-- incoming streams authenticated, an incoming stream carrying our stanzas
-- back: XEP-0288 bidi, on by default).
local function s2s_logger(name)
  return function(level, msg)
    if msg:match("^s2s") and (msg:match("route") or msg:match("authenticated") or msg:match("%(bidi%)")) then
      msg = msg:gsub("^s2sin [%d.]+ ", "incoming stream from ")
      say("    %-12s %s", "[" .. name .. "]", msg)
    elseif level == "error" or level == "warn" then
      say("    %-12s %s: %s", "[" .. name .. "]", level, msg)
    end
  end
end

---------------------------------------------------------------------------

local function port_of(srv, kind)
  for _, a in ipairs(srv:addresses()) do
    if a.kind == kind then return a.port end
  end
end

local function start_server(pki, domain, gateway, extra)
  local opts = { domain = domain, listen = "127.0.0.1:0", s2s_listen = "127.0.0.1:0",
    tls = pki[domain], s2s = { cafile = pki.ca }, users = ACCOUNTS[domain],
    log_level = "info", logger = s2s_logger(domain:match("^[^.]+")) }
  for k, v in pairs(extra or {}) do opts[k] = v end
  local srv = lxmpp.server(opts)
  local ok, err = srv:start()
  if not ok then error("cannot start the server for " .. domain .. ": " .. tostring(err), 0) end
  trace(srv, gateway)
  return srv
end

-- The gateway: texts for NUMBER@sms.discovery.nasa.guv go to that phone of
-- the toy network; its answer comes back from the same address.
local function start_gateway(srv, say_gw)
  local comp = lxmpp.component({ jid = SMS, secret = SMS_SECRET, host = "127.0.0.1",
    port = port_of(srv, "component") })
  local ok, err = comp:connect()
  if not ok then error("the gateway cannot connect: " .. tostring(err), 0) end
  comp:on("message", function(m)
    local body = m:get_child_text("body")
    if not body or m.attr.type == "error" then return end
    local number = jid.node(m.attr.to or "")
    local phone = number and PHONES[number]
    if not phone then
      return comp:send(st.error_reply(m, "cancel", "item-not-found", "no such phone number"))
    end
    say_gw("    %-12s XMPP → SMS %s (%s): %q", "[gateway]", number, phone.owner, body)
    local answer = phone.reply(body)
    say_gw("    %-12s SMS %s → XMPP %s: %q", "[gateway]", number, short(m.attr.from), answer)
    comp:send(st.message({ from = m.attr.to, to = m.attr.from, type = "chat" }):tag("body"):text(answer):up())
  end)
  return comp
end

-- A logged-in user whose incoming chat messages can be waited for.
local function user(pki, srv, node, resource)
  local address = node .. "@" .. srv.domain .. "/" .. resource
  local c, err = lxmpp.connect({ jid = address, password = ACCOUNTS[srv.domain][node],
    host = "127.0.0.1", port = port_of(srv, "c2s"), cafile = pki.ca })
  if not c then error(address .. " cannot log in: " .. tostring(err), 0) end
  local inbox, waiter = {}, nil
  c:on("message", function(m)
    if m:get_child_text("body") or m.attr.type == "error" then
      inbox[#inbox + 1] = m
      if waiter then waiter:wake() end
    end
  end)
  c:send_presence()
  local u = { c = c, jid = address, name = node }
  -- the next message, or an error after TIMEOUT seconds
  function u.next()
    if #inbox == 0 then
      waiter = lxmpp.task.waiter("demo inbox")
      local t = lxmpp.core.timer(TIMEOUT, waiter)
      waiter:wait()
      t:stop()
      waiter = nil
    end
    local m = table.remove(inbox, 1)
    if not m then error(node .. " got nothing within " .. TIMEOUT .. " seconds", 0) end
    if m.attr.type == "error" then
      local e = m:get_child("error")
      error(node .. " got an error back: " .. tostring(e and e.tags[1] and e.tags[1].name), 0)
    end
    return m
  end
  return u
end

-- One line of the conversation: from says text to the address to, and the
-- expected recipient (a user table) gets it.
local step_n = 0
local function send(from, to, text, recipient)
  step_n = step_n + 1
  say("")
  say("%d. %s → %s: %q", step_n, short(from.jid), short(to), text)
  from.c:send(st.message({ to = to, type = "chat" }):tag("body"):text(text):up())
  local m = recipient.next()
  say("   %s got from %s: %q", recipient.name, short(m.attr.from), m:get_child_text("body"))
  return m
end

-- the message m came from the address want (JIDs compare prepared: the
-- server lowercases the node, RFC 7622 §3.3)
local function expect_from(m, want)
  if m.attr.from ~= jid.prep(want) then
    error(("a message expected from %s came from %s"):format(want, tostring(m.attr.from)), 0)
  end
end

local function main(state)
  say("lxmpp %s federation demo: two servers, two domains, one gateway", lxmpp.VERSION)
  local pki = make_pki()
  state.pki = pki
  say("certificates for %s and %s (and %s) from a demo CA, in %s", DISCOVERY, EUROPA, SMS, pki.dir)

  local d = start_server(pki, DISCOVERY, SMS, { component_listen = "127.0.0.1:0",
    components = { [SMS] = SMS_SECRET } })
  state.servers[#state.servers + 1] = d
  local e = start_server(pki, EUROPA)
  state.servers[#state.servers + 1] = e
  -- each learns where the other listens for servers (instead of DNS SRV)
  d:s2s_host(EUROPA, "127.0.0.1:" .. port_of(e, "s2s"))
  e:s2s_host(DISCOVERY, "127.0.0.1:" .. port_of(d, "s2s"))
  e:s2s_host(SMS, "127.0.0.1:" .. port_of(d, "s2s"))   -- the gateway's domain is served there too
  say("%-18s clients 127.0.0.1:%d, servers 127.0.0.1:%d, components 127.0.0.1:%d", DISCOVERY,
    port_of(d, "c2s"), port_of(d, "s2s"), port_of(d, "component"))
  say("%-18s clients 127.0.0.1:%d, servers 127.0.0.1:%d", EUROPA, port_of(e, "c2s"), port_of(e, "s2s"))
  say("s2s.hosts: %s finds %s at 127.0.0.1:%d; %s finds %s and %s at 127.0.0.1:%d",
    DISCOVERY, EUROPA, port_of(e, "s2s"), EUROPA, DISCOVERY, SMS, port_of(d, "s2s"))

  state.gateway = start_gateway(d, say)
  say("gateway %s connected to %s (XEP-0114 component)", SMS, DISCOVERY)

  local dave = user(pki, d, "DavidBowman", "terminal")
  local frank = user(pki, d, "FrankPoole", "eva_pod1")
  local floyd = user(pki, e, "HeywoodFloyd", "base")
  state.users = { dave, frank, floyd }
  say("online: %s, %s, %s", dave.jid, frank.jid, floyd.jid)
  say("(… stands for .nasa.guv below)")

  local m = send(dave, floyd.jid, "Europa, this is Discovery. Do you read me?", floyd)
  expect_from(m, dave.jid)
  m = send(floyd, dave.jid, "Loud and clear, Dave. Europa base here.", dave)
  expect_from(m, floyd.jid)
  expect_from(send(frank, floyd.jid, "Frank here, from the EVA pod. Hello Europa!", floyd), frank.jid)
  m = send(frank, "+15550100@" .. SMS, "Pod bay doors stuck, please advise", frank)
  expect_from(m, "+15550100@" .. SMS)
  -- the gateway from the other domain: over s2s both ways, the answer on a
  -- route of the gateway's own domain (its certificate names it too)
  m = send(floyd, "+15550100@" .. SMS, "Europa base here: is Discovery all right?", floyd)
  expect_from(m, "+15550100@" .. SMS)

  say("")
  say("every message arrived; stopping")
end

local code = 0
lxmpp.run(function()
  local state = { servers = {} }
  -- compat.xpcall: passes state and lets main wait inside it on Lua 5.1 too
  local ok, err = compat.xpcall(main, debug.traceback, state)
  if not ok then
    say("demo FAILED: %s", tostring(err))
    code = 1
  end
  for _, u in ipairs(state.users or {}) do u.c:close() end
  if state.gateway then state.gateway:close() end
  for _, srv in ipairs(state.servers) do srv:stop() end
  if state.pki then os.execute("rm -rf " .. q(state.pki.dir)) end
  if ok then say("demo finished") end
end)
os.exit(code)
