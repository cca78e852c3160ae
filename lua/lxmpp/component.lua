-- lxmpp.component: an external component (XEP-0114), the way gateways and
-- services attach to a server: a TCP stream in the jabber:component:accept
-- namespace, authenticated by <handshake/> = hex(SHA-1(stream id .. secret)).
-- After the handshake it offers what a client does: on, send, request,
-- handle_iq, close.

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local task = require "lxmpp.task"
local net = require "lxmpp.net"
local session = require "lxmpp.session"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"

local setmetatable, type, error, tostring = setmetatable, type, error, tostring

local M = {}
M.NS_COMPONENT = "jabber:component:accept"

local Component = setmetatable({}, { __index = session.Session })
Component.__index = Component
M.Component = Component

--- lxmpp.component{ jid =, secret =, host =, port = } -> component (not yet
-- connected; call :connect()).
function M.new(opts)
  if type(opts) ~= "table" then error("lxmpp.component: expected an options table", 2) end
  if type(opts.jid) ~= "string" then error("lxmpp.component: jid must be a string", 2) end
  local node, domain, resource = jid.split(opts.jid)
  if not domain or node or resource then
    error("lxmpp.component: jid must be a bare domain like gateway.example.org", 2)
  end
  if type(opts.secret) ~= "string" then error("lxmpp.component: secret must be a string", 2) end
  if type(opts.host) ~= "string" then error("lxmpp.component: host must be an IP address", 2) end
  if compat.math_type(opts.port) ~= "integer" then error("lxmpp.component: port must be an integer", 2) end
  local self = session.new({ default_ns = M.NS_COMPONENT, logger = opts.logger, debug = opts.debug })
  setmetatable(self, Component)
  self.opts = opts
  self.domain = jid.prep(domain) or domain
  self.jid = self.domain
  self.bare_jid = self.domain
  self:handle_iq("urn:xmpp:ping", function(iq) return st.reply(iq) end)
  return self
end

-- One connection attempt: TCP, the stream header, the handshake.
local function establish(self)
  local conn, msg, cond = net.connect(self.opts.host, self.opts.port, self.opts.connect_timeout or 15)
  if not conn then return nil, msg, cond end
  self.lost_reason = nil
  session.internal.attach(self, conn, { max_stanza_size = self.opts.max_stanza_size })
  self.negotiating = true
  local ok
  ok, msg, cond = session.internal.open_stream(self, { to = self.domain })
  local header
  if ok then header, msg, cond = self:read(self.opts.timeout) end
  if header and not header.open then header, msg, cond = nil, "expected a stream header", "bad-format" end
  if header then
    local bad, why = conn.framing.check_open(header.open, M.NS_COMPONENT)
    if bad then header, msg, cond = nil, "the server's stream header: " .. why, bad end
  end
  if header and not header.open.id then header, msg, cond = nil, "the server sent no stream id", "bad-format" end
  if header then
    local digest = core.sha1_hex(header.open.id .. self.opts.secret)
    -- the secret never appears in logs: only its digest is sent
    ok, msg, cond = self:send(st.stanza("handshake"):text(digest))
    local reply
    if ok then reply, msg, cond = self:read(self.opts.timeout) end
    if reply then
      if reply.name == "handshake" then
        self.negotiating = false
        self.on_lost = function(lmsg, lcond) self:fire_user("disconnected", lmsg, lcond) end
        conn:resume()
        return true
      end
      msg, cond = "unexpected <" .. tostring(reply.name) .. "> instead of <handshake/>", "bad-format"
    end
  end
  self.negotiating = false
  conn:abort()
  return nil, msg, cond
end

--- comp:connect() -> true | nil, message, condition (waits, in a task).
-- The attempt runs in a task of its own (session.lua I.connect), so that
-- comp:close(), and so lxmpp.shutdown(), cuts it short in any phase; while
-- a shutdown is under way it is refused ("system-shutdown").
function Component:connect()
  task.current("component:connect", 1)
  self.closing = nil          -- (a gateway may connect again after a close)
  local ok, msg, cond = session.internal.connect(self, establish)
  if not ok then return nil, msg, cond end
  -- (here, not in the attempt's task: a handler that closes the component
  -- at once closes a component that is online, not an attempt)
  self:fire_user("online", self.jid)
  return true
end

--- comp:close(): ends the stream cleanly; a comp:connect() under way
-- returns nil, message, "closed" (or "system-shutdown") at once.
function Component:close(timeout)
  self.closing = true
  if session.internal.cut_connect(self) then return true end
  return session.Session.close(self, timeout)
end

return M
