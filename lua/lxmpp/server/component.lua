-- lxmpp.server.component: the XEP-0114 listener of the embedded server.
-- A component opens a jabber:component:accept stream to its domain,
-- proves the shared secret with <handshake/> = hex(SHA-1(stream id ..
-- secret)), and from then on the domain is routed to it. It may only send
-- from its own domain (XEP-0114); one connection per domain.

local core = require "lxmpp.core"
local jid = require "lxmpp.jid"
local stream = require "lxmpp.server.stream"
local redact = require "lxmpp.redact"
local throttle = require "lxmpp.server.throttle"

local setmetatable = setmetatable

local M = {}
local NS = "jabber:component:accept"

local Comp = setmetatable({}, { __index = stream.Stream })
Comp.__index = Comp

-- peer: conn:info().peer, as srv:accept read it
function M.accept(srv, conn, peer)
  local self = setmetatable({ kind = "component" }, Comp)
  stream.Stream.init(self, srv, conn, NS, peer)
  conn:parse({ max_stanza_size = srv.limits.max_stanza_size })
  return self
end

function Comp:on_open(attr)
  if self.ended then return end
  if attr.xmlns ~= NS then
    return self:stream_error("invalid-namespace", "the stream namespace must be " .. NS)
  end
  local d = attr.to and jid.prep(attr.to)
  local c = d and self.srv.components[d]
  if not c then return self:stream_error("host-unknown", "no component is configured for that domain") end
  self.domain, self.secret = d, c.secret
  self:send_header({ from = d })
end

function Comp:on_stanza(s)
  if self.ended then return end
  self:check_rate()
  if self.srv.debug then self:log("debug", "IN %s", redact.text(s)) end
  local name, ns = s.name, s.attr.xmlns
  if ns == stream.NS_STREAMS and name == "error" then return self:finish("the component sent a stream error") end
  if not self.authenticated then
    if name ~= "handshake" or not self.domain then
      return self:stream_error("not-authorized", "send <handshake/> first")
    end
    if self.held_handshake then
      return self:stream_error("not-authorized", "one handshake at a time")
    end
    local expected = core.sha1_hex(self.stream_id .. self.secret)
    local ok = core.const_eq((s:get_text() or ""):lower(), expected)
    -- the answer waits while this address has failed too often
    -- (server/throttle.lua, docs/server.md "Throttles"), right or wrong
    local at = self.srv.component_throttle:verdict(throttle.key(self.ip), self.domain, not ok, core.now())
    self.held_handshake = true
    return self:answer_at(at, ok and self.handshake_done or function()
      self:stream_error("not-authorized", "wrong handshake")
    end)
  end
  if (ns ~= nil and ns ~= NS) or (name ~= "message" and name ~= "presence" and name ~= "iq") then
    return self:stream_error("unsupported-stanza-type", "<" .. name .. "/> is not a stanza")
  end
  local from = s.attr.from and jid.prep(s.attr.from)
  if not from or jid.domain(from) ~= self.domain then
    return self:stream_error("invalid-from", "a component sends from its own domain only")
  end
  s.attr.from = from
  if not s.attr.to then return self:bounce(s, "modify", "bad-request", "a stanza from a component needs 'to'") end
  return self.srv:route(s)
end

-- The right secret: the domain is routed here from now on.
function Comp:handshake_done()
  local current = self.srv.hosts[self.domain]
  if current then
    return self:stream_error("conflict", "that domain is already connected or served")
  end
  self.authenticated = true
  self.srv:account_auth(self)
  self.srv.hosts[self.domain] = self
  self:set_ready()
  self:log("info", "component %s connected", self.domain)
  return self:write("<handshake/>")
end

--- The host interface: stanzas routed to the component's domain.
function Comp:deliver(s) return self:send(s) end

function Comp:on_end()
  if self.domain and self.srv.hosts[self.domain] == self then
    self.srv.hosts[self.domain] = nil
    self:log("info", "component %s disconnected", self.domain)
  end
end

return M
