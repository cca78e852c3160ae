-- lxmpp.server.c2s: one client stream of the embedded server, from the
-- stream header to a bound resource (RFC 6120 §4–§7), then stanzas handed
-- to the IM core with a `from` the server stamps. Nothing is routed before
-- a resource is bound.
--
-- Negotiation is a chain of feature files, in lua/lxmpp/server/features/
-- (M.FEATURES, in the order <stream:features/> lists them): STARTTLS, SASL,
-- SASL2 (with Bind2, inline resumption and FAST), in-band registration, resource binding, stream management,
-- client state indication. Each has
--   offer(stream) -> the XML it adds to <stream:features/> at this stage,
--                    or nil
--   handlers      [key] = fn(stream, element) for the elements it takes,
--                 keyed "<namespace> <name>", "iq <payload namespace>", or
--                 "<namespace>" for every element of a namespace; fn
--                 returns false when the element is not for it at this
--                 stage (the stream then ends as RFC 6120 asks)
--
-- A stanza's way in: the transport's "stanza" event -> C2S:on_stanza ->
-- (bound) IM:from_client, lua/lxmpp/server/im.lua, which fires the
-- server's events and routes. Its way out: a session's send, here (client
-- state indication first, server/csi.lua, which may hold it back; then
-- stream management), then Stream:write in lua/lxmpp/server/stream.lua.

local jid = require "lxmpp.jid"
local stream = require "lxmpp.server.stream"
local sm = require "lxmpp.server.sm"
local csi = require "lxmpp.server.csi"
local redact = require "lxmpp.redact"

local setmetatable, ipairs, pairs, type = setmetatable, ipairs, pairs, type

local M = {}

local NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
M.NS_SASL = NS_SASL

local C2S = setmetatable({}, { __index = stream.Stream })
C2S.__index = C2S
M.C2S = C2S

--- The negotiation chain (see above): feature modules, in order.
M.FEATURES = {
  require "lxmpp.server.features.starttls",
  require "lxmpp.server.features.sasl",
  require "lxmpp.server.features.sasl2",
  require "lxmpp.server.features.register",
  require "lxmpp.server.features.bind",
  (require "lxmpp.server.features.sm"),   -- (one value: require also returns the path)
  (require "lxmpp.server.features.csi"),
}

-- key -> handler, from the chain (the first feature to claim a key has it)
local handlers = {}
for _, f in ipairs(M.FEATURES) do
  for key, fn in pairs(f.handlers) do
    if handlers[key] == nil then handlers[key] = fn end
  end
end

-- The transport's events for a client stream: the stream's, and TLS done.
local EVENTS = {}
for event, fn in pairs(stream.EVENTS) do EVENTS[event] = fn end
EVENTS["tls-done"] = function(self)
  self.secure = true
  self.starting_tls = false
  self.mechs, self.fast_mechs = nil, nil   -- over TLS: PLAIN, -PLUS and bound HT mechanisms become possible
end
C2S.conn_events = EVENTS

--- c2s.accept(srv, conn, direct_tls [, peer]): a new client stream on an accepted
-- transport (direct_tls: XEP-0368, TLS from the first byte; a transport
-- that is encrypted below the stream needs no STARTTLS); peer: the
-- transport's conn:info().peer, when srv:accept read it already.
function M.accept(srv, conn, direct_tls, peer)
  local self = setmetatable({ kind = "c2s", secure = conn.encrypted == true, sasl_failures = 0, cb_refusals = 0 }, C2S)
  stream.Stream.init(self, srv, conn, "jabber:client", peer)
  conn:parse({ max_stanza_size = srv.limits.max_stanza_size })
  if direct_tls then
    self.starting_tls = true
    conn:starttls(srv.tls_ctx)
  end
  return self
end

---------------------------------------------------------------------------
-- the stream header and features

function C2S:on_open(attr)
  if self.ended then return end
  -- web.see_other_uri: this endpoint only sends clients on (RFC 7395 §3.6.1)
  local elsewhere = self.conn.see_other_uri
  if elsewhere then return self:redirect(elsewhere) end
  local bad, why = self.framing.check_open(attr, "jabber:client")
  if bad then return self:stream_error(bad, why) end
  if attr.version ~= "1.0" then
    return self:stream_error("unsupported-version", "only XMPP 1.0 streams are served")
  end
  local to = attr.to and jid.prep(attr.to)
  if to ~= self.srv.domain then
    return self:stream_error("host-unknown", "this server serves " .. self.srv.domain)
  end
  self.lang = attr["xml:lang"]
  self:send_header({ from = self.srv.domain, version = "1.0", ["xml:lang"] = "en" })
  self:write(self:features())
end

-- What the chain offers at this stage of the negotiation.
function C2S:features()
  local f, n, chain = { self.framing.features }, 1, M.FEATURES
  for i = 1, #chain do
    local xml = chain[i].offer(self)
    if xml then n = n + 1; f[n] = xml end
  end
  f[n + 1] = "</stream:features>"
  return table.concat(f)
end

-- The chain's handler for a top-level element, if any.
local function handler_of(el, ns)
  if el.name == "iq" and (ns == nil or ns == "jabber:client") then
    local child = el.tags[1]
    return child and handlers["iq " .. (child.attr.xmlns or "")]
  end
  return handlers[(ns or "") .. " " .. el.name] or handlers[ns or ""]
end

---------------------------------------------------------------------------
-- stanzas

function C2S:on_stanza(s)
  if self.ended then return end
  self:check_rate()
  local ns, name = s.attr.xmlns, s.name
  if self.srv.debug then self:log("debug", "IN %s", redact.text(s)) end
  if ns == stream.NS_STREAMS and name == "error" then
    return self:finish("the client sent a stream error")
  end
  local stanza = (ns == nil or ns == "jabber:client") and (name == "message" or name == "presence" or name == "iq")
  if self.bound then
    if stanza then
      local from = s.attr.from
      if from and from ~= self.full then
        local p = jid.prep(from)
        if p ~= self.full and p ~= self.bare then
          return self:stream_error("invalid-from", "the from address is not this session's")
        end
      end
      s.attr.from = self.full
      if self.sm then sm.inbound(self) end
      return self.srv.im:from_client(self, s)
    end
    local h = handler_of(s, ns)
    if h and h(self, s) ~= false then return end
    -- stanza/<xmlns>:<name>: other top-level elements, for the host application
    if self.srv:fire("stanza/" .. (ns or "") .. ":" .. name, { origin = self, stanza = s }) then return end
    return self:stream_error("unsupported-stanza-type", "<" .. name .. "/> is not a stanza")
  end
  local h = handler_of(s, ns)
  if h and h(self, s) ~= false then return end
  if stanza then
    return self:stream_error("not-authorized", "authenticate and bind a resource first")
  end
  return self:stream_error("unsupported-stanza-type", "<" .. name .. "/> is not expected here")
end

-- What client state indication held back becomes stream management's
-- unsent stanzas (csi.lua, sm.unsent).
local function unsent_of(self)
  if not (self.sm and self.bound) then return nil end
  return function(stanza, bytes) sm.unsent(self, stanza, bytes) end
end

function C2S:on_end(reason)
  if type(self.sasl) == "userdata" then self.sasl:close() end
  self.sasl = nil
  if self.csi then csi.stream_ended(self, unsent_of(self)) end
  if self.bound and not sm.stream_ended(self) then self.srv:unbind(self, reason) end
end

--- True while what was sent waits: unread by the peer, or held back by
-- stream management until acknowledgements make room.
function C2S:congested()
  return stream.Stream.congested(self) or (self.sm ~= nil and self.sm.held.n > 0)
end

-- A stanza past client state indication: stream management, then the
-- stream (xml: its serialization, when it was made already).
local function send_now(self, stanza, xml)
  if self.sm then
    xml = xml or self:serialize(stanza)        -- once: its size counts against the SM queue's bytes
    local now = sm.outbound(self, stanza, #xml)
    if not now then return nil end
    if now == "held" or self.ended then return true end
    return stream.Stream.send(self, stanza, xml)
  end
  return stream.Stream.send(self, stanza, xml)
end

--- Sends a stanza: held back while the client said it is inactive and
-- the stanza can wait (XEP-0352, server/csi.lua); with stream management
-- it is also kept until the client acknowledges it (and queued while the
-- session hibernates).
function C2S:send(stanza)
  local held = self.held_out          -- a SASL2 <success/> is being made (features/sasl2.lua)
  if held then
    held[#held + 1] = stanza
    return true
  end
  if self.csi and not self.ended and csi.hold(self, stanza, send_now) then return true end
  return send_now(self, stanza)
end

--- s:set_active(active): the client's state (XEP-0352 <active/>,
-- <inactive/>, or Bind2's inline <inactive/>); becoming active sends what
-- was held back, in order, at once (§5.1).
function C2S:set_active(active)
  if self.ended then return end
  csi.set(self, active, send_now)
end

return M
