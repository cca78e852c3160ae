-- lxmpp.server.bosh: BOSH (XEP-0124) carrying client streams (XEP-0206)
-- to the embedded server. Each BOSH session is a transport (lxmpp.transport:
-- on, parse, write, close, ...) with the per-element framing of
-- transport.websocket, accepted with srv:accept(t, "c2s"): the one c2s
-- stream (SASL, bind, stanzas) runs over it unchanged. This file turns
-- HTTP requests (lxmpp.server.httpd's handler(req, res)) into the
-- transport's events and what the stream writes into <body/> answers.
-- Limits, defaults and what is left out: docs/server.md, "BOSH (XEP-0124,
-- XEP-0206)".
--
-- Ownership: the service owns its sessions; a session owns the answers
-- (res) it holds until it answers them or their connection goes away
-- (res:on_close). Everything runs inside HTTP events and timers, guarded:
-- a Lua error answers 500 and never reaches the loop.

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local fifo = require "lxmpp.fifo"
local jid = require "lxmpp.jid"
local transport = require "lxmpp.transport"
local throttle = require "lxmpp.server.throttle"
local httpd = require "lxmpp.server.httpd"
require "lxmpp.stanza"                     -- parsed elements get the stanza methods

local setmetatable, type, error, tostring, tonumber, pairs, ipairs, xpcall, pcall =
  setmetatable, type, error, tostring, tonumber, pairs, ipairs, compat.xpcall, compat.pcall
local concat, remove, traceback = table.concat, table.remove, debug.traceback

local M = {}

M.NS = "http://jabber.org/protocol/httpbind"
M.NS_XBOSH = "urn:xmpp:xbosh"
M.VERSION = "1.11"                         -- of XEP-0124 we follow

local NS, NS_XBOSH = M.NS, M.NS_XBOSH
local RESTART = NS_XBOSH .. "\1restart"
local XMPP_VERSION = NS_XBOSH .. "\1version"
local NS_CLIENT = "jabber:client"

--- Defaults of the `limits` option (docs/server.md, "BOSH").
M.DEFAULTS = {
  sessions = 1000,      -- BOSH sessions open, all addresses together
  per_ip = 10,          -- sessions open from one address (an IPv6 one by its /64)
  max_wait = 60,        -- seconds a request may be held (a client's larger 'wait' is lowered)
  max_hold = 1,         -- requests held at once (a client's larger 'hold' is lowered)
  inactivity = 60,      -- seconds with no request held before the session ends
  polling = 2,          -- seconds: the shortest interval between two empty requests
  max_body = 524288,    -- bytes of one request body
  cache = 8,            -- answers kept for replayed requests (at least 'requests')
}

local HEADERS = { ["Content-Type"] = "text/xml; charset=utf-8", ["Cache-Control"] = "no-store" }

-- A one-shot timer target: the dispatcher calls wake() when it fires.
local function timer_target(fn) return { wake = fn } end

-- A <body/> with attrs (a list of { name, value }, in order) around payload.
local function body(attrs, payload)
  local out = { "<body xmlns='", NS, "'" }
  for _, a in ipairs(attrs) do
    out[#out + 1] = (" %s='%s'"):format(a[1], core.xml_escape(tostring(a[2])))
  end
  if payload and payload ~= "" then
    out[#out + 1] = ">"
    out[#out + 1] = payload
    out[#out + 1] = "</body>"
  else
    out[#out + 1] = "/>"
  end
  return concat(out)
end

local function terminate_xml(cond, payload)
  local attrs = { { "type", "terminate" } }
  if cond then attrs[2] = { "condition", cond } end
  return body(attrs, payload)
end

local function send(res, xml, status)
  return res:send(status or 200, HEADERS, xml)
end

-- a rid, a wait, a hold: digits only, as a number below 2^53 (XEP-0124 §7)
local function digits(s, max)
  if type(s) ~= "string" or not s:find("^%d+$") or #s > 16 then return nil end
  local n = tonumber(s)
  if max and n > max then return nil end
  return n
end

-- A request's <body/> as a tree, or nil, message (the same bytes parse
-- the same way again: a request that waits is kept as its bytes).
local function parse_body(raw, lim)
  return core.parse_element(raw, { max_stanza_size = lim.max_body + 1, max_depth = 65 })
end

---------------------------------------------------------------------------
-- a BOSH session: a transport

local Session = {}
Session.__index = Session

local function emit(self, event, ...)
  local h = self.handlers[event]
  if h then return h(...) end
end

function Session:on(event, fn)
  if type(event) ~= "string" then error("transport:on: event must be a string", 2) end
  if fn ~= nil and type(fn) ~= "function" then error("transport:on: handler must be a function", 2) end
  self.handlers[event] = fn
  return self
end

-- What the peer sent, in rid order, goes to the stream while it reads.
-- An inbox item is { kind = "open" | "close" | "stanza" }; a stanza's is
-- its tree (el) or, while the stream does not read, its bytes (xml: see
-- shelve), parsed again when its turn comes.
function Session:deliver()
  local max = self.parse_opts and self.parse_opts.max_stanza_size
  while self.parsing and not self.closed and not self.paused and self.inbox.n > 0 do
    local item = self.inbox:pop()
    if item.kind == "open" then
      emit(self, "open", item.attr)
    elseif item.kind == "close" then
      emit(self, "stream-close")
    else
      local el, xml = item.el, item.xml
      if el then self.inbox.trees = self.inbox.trees - 1 end
      if max and #(xml or tostring(el)) > max then
        return emit(self, "parse-error", "a stanza larger than " .. max .. " bytes", "policy-violation")
      end
      if xml then
        local msg, cond
        el, msg, cond = core.parse_element(xml, { max_stanza_size = #xml, max_depth = 64 })
        if not el then return emit(self, "parse-error", msg, cond) end
      end
      emit(self, "stanza", el)
    end
  end
  if self.paused and not self.closed and not self.released and self.inbox.trees > 0 and not self:shelve() then
    self:overflow()
  end
end

-- Backpressure (docs/server.md, "BOSH": "While the stream does not
-- read"). A TCP stream that pauses its reading stops reading the socket:
-- the peer's bytes wait in the kernel, the peer's writes block. A BOSH
-- session cannot stop its client that way, so while the stream does not
-- read (a throttled login, the `rate` limit, a full output queue, an auth
-- callback) the elements that wait in the inbox are kept as their bytes,
-- not as trees (a body of small elements makes a tree many times its
-- size), within a bound of what `requests` full bodies hold; the held
-- requests are not answered early (below), so a client that keeps to its
-- `requests` cannot send more. One that sends more anyway ends with
-- policy-violation.

-- The bound on what waits in the inbox while the stream does not read:
-- elements (the body parser's children limit, 4096, per request of the
-- window) and bytes (max_body per request of the window).
function Session:inbox_bounds()
  return 4096 * self.requests, self.service.limits.max_body * self.requests
end

-- Turns the trees that wait in the inbox into their bytes; false when the
-- inbox then holds more than its bounds.
function Session:shelve()
  local inbox = self.inbox
  local max_n, max_bytes = self:inbox_bounds()
  if inbox.n > max_n then return false end
  for _ = 1, inbox.n do
    local item, size = inbox:pop()
    if item.el then
      local xml = tostring(item.el)
      item, size = { kind = "stanza", xml = xml }, #xml
      inbox.trees = inbox.trees - 1
    end
    inbox:push(item, size)
    if inbox.bytes > max_bytes then return false end
  end
  return true
end

-- The client sent more than the stream takes while it does not read.
function Session:overflow(res)
  local max_n, max_bytes = self:inbox_bounds()
  self:terminate(res, "policy-violation", ("more than %d elements or %d bytes sent while the stream "
    .. "does not read"):format(max_n, max_bytes))
end

function Session:parse(opts)
  self.parse_opts = opts or {}
  self.parsing = true
  self:schedule()
  return true
end

-- After SASL success (RFC 6120 §6.4.6) the client asks for the restart
-- with xmpp:restart='true' (XEP-0206 §5); until then one is refused.
function Session:restart()
  self.restart_allowed = true
  return true
end

-- Delivery and answers run from a zero-delay timer when the stream writes
-- outside a request (a message routed from another session): everything
-- written in the same turn of the loop leaves in one <body/>.
function Session:schedule()
  if self.scheduled or self.released then return end
  self.scheduled = true
  core.timer(0, timer_target(function()
    self.scheduled = false
    self.service:guard(function()
      self:deliver()
      self:flush()
    end)
  end))
end

-- The stream's output, framed per element (transport.websocket): the
-- stream header gives the creation answer its authid and is not sent as
-- payload; <close/> ends the session; everything else is payload.
function Session:write(bytes)
  if self.closed then return nil, "the transport is closed", "closed" end
  if bytes:find("^<open ") then
    self.authid = bytes:match(" id='([^']*)'") or self.authid
    return true
  end
  if bytes == transport.websocket.close then
    self.server_closed = true
    return true
  end
  local is_error = bytes:find("^<stream:error") ~= nil
  if is_error then
    self.stream_error = true
  elseif self.queued > 0 and self.queued + #bytes > self.max_queue then
    self.blocked = true
    return nil, "the output queue is full", "resource-constraint"
  end
  self.out[#self.out + 1] = bytes
  self.queued = self.queued + #bytes
  if not self.in_request then self:schedule() end
  return true
end

function Session:pause() self.paused = true end

function Session:resume()
  if not self.paused then return end
  self.paused = false
  self:schedule()
end

-- The session's last answer: what was written, with type='terminate'
-- (condition='remote-stream-error' when the stream ended with an error:
-- XEP-0206 §6, the error is the payload).
local function final_body(self)
  local payload = concat(self.out)
  self.out, self.queued = {}, 0
  return terminate_xml(self.final_cond or (self.stream_error and "remote-stream-error") or nil, payload)
end

-- The stream closed this transport: the last answer goes to the oldest
-- held request, or waits for the next one (until inactivity ends it).
function Session:close()
  if self.closed then return true end
  self.closed = true
  if self.inactive then self.inactive:stop(); self.inactive = nil end
  self.final = final_body(self)
  if not self.in_request then self:flush() end
  if not self.released and not self.inactive then self:arm_inactivity() end
  emit(self, "closed")
  return true
end
Session.shutdown = Session.close

-- At once: nothing more is answered but a terminate.
function Session:abort()
  if self.closed then return true end
  self.out, self.queued = {}, 0
  self.closed = true
  self.final = terminate_xml(self.final_cond or "remote-connection-failed")
  self:release()
  emit(self, "closed")
  return true
end

function Session:info() return { peer = self.ip, queued = self.queued, bosh = true } end
function Session:bytes_in() return self.read end
function Session:set_max_queue(n) self.max_queue = n end
-- BOSH has no STARTTLS (TLS is HTTPS's). The stream offers it on a
-- session that is not encrypted; a client that takes the offer has its
-- session end (tls-failed, from the loop: never inside the stream's handler).
function Session:starttls()
  core.timer(0, timer_target(function()
    if not self.closed then self.service:guard(emit, self, "tls-failed", "BOSH cannot start TLS: use HTTPS") end
  end))
  return nil
end
function Session.channel_binding() return nil end
function Session.tls_info() return nil end

-- A held request's answer. The first answer of a session is the creation
-- answer (XEP-0124 §7.2, XEP-0206 §4).
function Session:answer(h, xml)
  if h.timer then h.timer:stop(); h.timer = nil end
  h.done = true
  self.cache[h.rid] = xml
  local keep = self.service.limits.cache
  self.cache[h.rid - keep] = nil
  pcall(send, h.res, xml)          -- a client gone meanwhile is no error
end

function Session:answer_xml(h)
  local payload = concat(self.out)
  self.out, self.queued = {}, 0
  local attrs = {}
  if not self.created then
    self.created = true
    local lim = self.service.limits
    attrs = {
      { "sid", self.sid }, { "wait", self.wait }, { "requests", self.requests }, { "hold", self.hold },
      { "inactivity", lim.inactivity }, { "polling", lim.polling }, { "ver", M.VERSION },
      { "from", self.service.srv.domain }, { "xmpp:version", "1.0" }, { "xmpp:restartlogic", "true" },
      { "xmlns:xmpp", NS_XBOSH }, { "xmlns:stream", transport.NS_STREAMS },
    }
    if self.authid then attrs[#attrs + 1] = { "authid", self.authid } end
    if self.acks then attrs[#attrs + 1] = { "ack", h.rid } end
  elseif self.acks and self.rid > h.rid then
    attrs[1] = { "ack", self.rid }           -- later requests arrived meanwhile (XEP-0124 §9.1)
  end
  h.info.answered_empty = payload == ""
  return body(attrs, payload)
end

-- Answers held requests: the oldest gets what was written; once closed,
-- every held one gets the last answer.
function Session:flush()
  if self.released then return end
  local held = self.held
  if self.closed then
    while held[1] do
      local h = remove(held, 1)
      local xml = self.final
      if not self.created then
        -- the stream never got going (refused): the creation answer ends it
        self.created = true
        xml = xml:gsub("^<body ", "<body sid='" .. self.sid .. "' ", 1)
      end
      self:answer(h, xml)
      self.final_sent = true
    end
    if self.final_sent then self:release() end
    return
  end
  if #self.out > 0 and held[1] then
    local h = remove(held, 1)
    self:answer(h, self:answer_xml(h))
  end
  self:answer_beyond_hold()              -- held back while the stream did not read
  self:after_answer()
end

function Session:after_answer()
  if self.blocked and self.queued < self.max_queue then
    self.blocked = false
    emit(self, "drain")
  end
  if not self.held[1] and not self.closed then self:arm_inactivity() end
end

function Session:arm_inactivity()
  if self.inactive then self.inactive:stop() end
  local secs = self.service.limits.inactivity
  self.inactive = core.timer(secs, timer_target(function()
    self.inactive = nil
    self.service:guard(function() self:expire("the client made no request for " .. secs .. " seconds") end)
  end))
end

-- The client is gone (inactivity), or the service closes: the stream sees
-- its connection drop, and the session is forgotten.
function Session:expire(why, cond)
  if self.released then return end
  self.service.srv:log("info", "bosh %s: session %s ends: %s", self.ip, self.sid:sub(1, 8), why)
  self.final_cond = cond
  if not self.closed then
    emit(self, "eof")
    if not self.closed then self:abort() end
  end
  self:release()
end

-- Forgets the session: held requests get the last answer, timers stop.
function Session:release()
  if self.released then return end
  self.released = true
  if self.inactive then self.inactive:stop(); self.inactive = nil end
  local final = self.final or terminate_xml(self.final_cond or "remote-connection-failed")
  for _, h in ipairs(self.held) do
    if h.timer then h.timer:stop() end
    if not h.done then
      h.done = true
      pcall(send, h.res, final)
    end
  end
  for _, p in pairs(self.pending) do pcall(send, p.res, final) end
  self.held, self.pending = {}, {}
  self.service:forget(self)
end

-- Terminates with a binding error (XEP-0124 §17.2), answering res too.
function Session:terminate(res, cond, why)
  self.final_cond = cond
  self.final = terminate_xml(cond)
  if res then pcall(send, res, self.final) end
  self:expire(why, cond)
end

-- Holds res (request rid) until there is something to answer with, or
-- 'wait' seconds.
function Session:hold_request(rid, res, info)
  local h = { rid = rid, res = res, info = info }
  self.held[#self.held + 1] = h
  if self.inactive then self.inactive:stop(); self.inactive = nil end
  h.timer = core.timer(self.wait, timer_target(function()
    h.timer = nil
    self.service:guard(function()
      for i, x in ipairs(self.held) do
        if x == h then
          remove(self.held, i)
          self:answer(h, self:answer_xml(h))
          self:after_answer()
          return
        end
      end
    end)
  end))
  self:watch(h, res)
end

-- The client of a held request went away: the request is answered empty
-- at once (into the cache: a repeat of it gets that, §14.3), so what the
-- stream writes next goes to a live request. Not once a repeat took its
-- place, nor for the creation request (its answer carries the session).
function Session:watch(h, res)
  res:on_close(function()
    if h.res ~= res or not self.created then return end
    self.service:guard(function()
      for i, x in ipairs(self.held) do
        if x == h then
          remove(self.held, i)
          self:answer(h, body({}))
          if not self.closed then self:after_answer() end
          return
        end
      end
    end)
  end)
end

-- One request, in rid order: its payloads go to the stream, then it waits.
function Session:process(rid, res, b)
  self.rid = rid
  local now = core.now()
  local restart = b.attr[RESTART] == "true"
  local term = b.attr.type == "terminate"
  local empty = #b.tags == 0 and not restart and not term
  local prev = self.last
  local lim = self.service.limits
  if self.key then
    -- XEP-0124 §15.4: hex(SHA-1(key)) is the key (or newkey) before it; a
    -- request that fails is not processed and ends the session
    local key = b.attr.key
    if type(key) ~= "string" or not core.const_eq(core.sha1_hex(key), self.key) then
      return self:terminate(res, "item-not-found", "request " .. rid .. " has a wrong key")
    end
    self.key = type(b.attr.newkey) == "string" and b.attr.newkey:lower() or key:lower()   -- §15.5
    self.sent_keys[rid] = key
    self.sent_keys[rid - lim.cache - 1] = nil
  end
  -- XEP-0124 §11-§12: two empty requests closer than 'polling', the first answered empty
  if empty and prev and prev.empty and prev.answered_empty and now - prev.at < lim.polling then
    return self:terminate(res, "policy-violation",
      ("empty requests %.2f seconds apart (polling is %g)"):format(now - prev.at, lim.polling))
  end
  if restart and not self.restart_allowed then
    return self:terminate(res, "bad-request", "a restart before authentication")
  end
  -- While the stream does not read, no held request is answered early
  -- (below), so a client that keeps to 'requests' waits; one that makes
  -- more simultaneous requests is overactive (XEP-0124 §11).
  if self.paused and #self.held >= self.requests then
    return self:terminate(res, "policy-violation",
      ("more than %d simultaneous requests while the stream does not read"):format(self.requests))
  end
  local info = { empty = empty, at = now }
  self.last = info
  local inbox = self.inbox
  for _, el in ipairs(b.tags) do
    if el.attr.xmlns == NS_CLIENT then el.attr.xmlns = nil end   -- as in a jabber:client stream
    inbox:push({ kind = "stanza", el = el })
    inbox.trees = inbox.trees + 1
  end
  if restart then
    self.restart_allowed = false
    inbox:push({ kind = "open", attr = self.open_attr })
  end
  if term then inbox:push({ kind = "close" }) end
  if self.paused and not self:shelve() then return self:overflow(res) end
  self:hold_request(rid, res, info)
  self:deliver()
  self:answer_beyond_hold()
end

-- Beyond 'hold', the oldest held requests are answered now (XEP-0124 §8),
-- but not while the stream does not read: the client waits for its
-- answers then, as a TCP client's writes wait.
function Session:answer_beyond_hold()
  while #self.held > self.hold and not self.closed and not self.released and not self.paused do
    local h = remove(self.held, 1)
    self:answer(h, self:answer_xml(h))
  end
end

-- A request of this session (rid checked against the window: XEP-0124 §14.2).
function Session:request(req, res, b, rid)
  if self.encrypted and not self.service.consider_secure and not req.secure then
    return self:terminate(res, "policy-violation", "a request of an HTTPS session over plain HTTP")
  end
  self.read = self.read + #req.body
  if self.acks then
    local ack = digits(b.attr.ack)
    if ack then
      for r in pairs(self.cache) do
        if r < ack then self.cache[r] = nil end
      end
    end
  end
  if rid <= self.rid then
    -- a repeated request (its answer was lost: §14.3), with the key it had
    if self.key and b.attr.key ~= self.sent_keys[rid] then
      return self:terminate(res, "item-not-found", "request " .. rid .. " repeated with another key")
    end
    if self.cache[rid] then return send(res, self.cache[rid]) end
    for _, h in ipairs(self.held) do
      if h.rid == rid then
        local old = h.res
        h.res = res
        self:watch(h, res)
        pcall(send, old, body({}))
        return
      end
    end
    if self.closed and self.final then return send(res, self.final) end
    return self:terminate(res, "item-not-found", "request " .. rid .. " was answered and is forgotten")
  end
  if rid > self.rid + self.requests then
    return self:terminate(res, "item-not-found",
      ("request %d is beyond the window (last %d, requests %d)"):format(rid, self.rid, self.requests))
  end
  if self.closed then
    -- the stream is over: the last answer
    if self.final then
      send(res, self.final)
      self.final_sent = true
      return self:release()
    end
    return send(res, terminate_xml("item-not-found"))
  end
  if rid > self.rid + 1 then      -- out of order: it waits for the ones before it
    local p = self.pending[rid]
    if p then pcall(send, p.res, body({})) end
    -- (inactivity keeps running: a gap that is never filled ends the session);
    -- kept as its bytes, parsed again when its turn comes: a tree of small
    -- elements is many times the size of the body
    self.pending[rid] = { res = res, raw = req.body }
    return
  end
  self.in_request = true
  self:process(rid, res, b)
  while not self.released and self.pending[self.rid + 1] do
    local p = self.pending[self.rid + 1]
    self.pending[self.rid + 1] = nil
    self:process(self.rid + 1, p.res, (parse_body(p.raw, self.service.limits)))
  end
  self.in_request = false
  if not self.released then self:flush() end
end

---------------------------------------------------------------------------
-- the service

local Service = {}
Service.__index = Service

-- Runs fn(); an error is logged and goes no further (never into the loop).
function Service:guard(fn, ...)
  local ok, err = xpcall(fn, traceback, ...)
  if not ok then self.srv:log("error", "bosh: internal error: %s", tostring(err)) end
  return ok
end

function Service:forget(s)
  if self.sessions[s.sid] ~= s then return end
  self.sessions[s.sid] = nil
  self.n = self.n - 1
  local n = self.per_ip[s.ipkey] - 1
  self.per_ip[s.ipkey] = n > 0 and n or nil
end

local function new_sid()
  return (core.random(16):gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

-- A session creation request (XEP-0124 §7.1, XEP-0206 §4).
function Service:create(req, res, b, rid)
  local lim, srv = self.limits, self.srv
  local ipkey = throttle.key(req.peer or "")
  if self.closed then return send(res, terminate_xml("system-shutdown")) end
  if self.n >= lim.sessions or (self.per_ip[ipkey] or 0) >= lim.per_ip then
    srv:log("warn", "bosh: refused a session from %s: too many", tostring(req.peer))
    return send(res, terminate_xml("policy-violation"))
  end
  local to = b.attr.to and jid.prep(b.attr.to)
  if to ~= srv.domain then return send(res, terminate_xml("host-unknown")) end
  local wait = digits(b.attr.wait) or lim.max_wait
  local hold = digits(b.attr.hold) or 1
  if wait > lim.max_wait then wait = lim.max_wait end
  if hold > lim.max_hold then hold = lim.max_hold end
  local s = setmetatable({
    service = self, sid = new_sid(), ip = req.peer or "", ipkey = ipkey, handlers = {}, inbox = fifo.new(),
    out = {}, queued = 0, read = #req.body, max_queue = 1048576, closed = false,
    encrypted = self.consider_secure or req.secure == true, framing = transport.websocket,
    rid = rid, wait = wait, hold = hold, requests = hold + 1, held = {}, pending = {}, cache = {},
    acks = b.attr.ack == "1",
    -- keys (XEP-0124 §15): the key the next request's must hash to
    key = type(b.attr.newkey) == "string" and b.attr.newkey:lower() or nil, sent_keys = {},
    -- as every transport gives it: xmlns is the stream's content namespace
    open_attr = { xmlns = NS_CLIENT, to = b.attr.to, version = b.attr[XMPP_VERSION],
      ["xml:lang"] = b.attr["xml:lang"] },
  }, Session)
  s.inbox.trees = 0                        -- stanzas in it as trees (not yet shelved)
  self.sessions[s.sid] = s
  self.n = self.n + 1
  self.per_ip[ipkey] = (self.per_ip[ipkey] or 0) + 1
  s.in_request = true
  s.last = { empty = false, at = core.now() }
  s:hold_request(rid, res, s.last)
  srv:accept(s, "c2s")
  if not s.closed then
    s.inbox:push({ kind = "open", attr = s.open_attr })
    s:deliver()
  end
  s.in_request = false
  s:flush()
end

function Service:post(req, res)
  local lim = self.limits
  if #req.body > lim.max_body then
    return send(res, terminate_xml("bad-request"), 413)
  end
  local b, msg = parse_body(req.body, lim)
  if not b or b.name ~= "body" or b.attr.xmlns ~= NS then
    self.srv:log("info", "bosh %s: a bad request: %s", tostring(req.peer), tostring(msg or "not a BOSH <body/>"))
    return send(res, terminate_xml("bad-request"), 400)
  end
  local rid = digits(b.attr.rid, 9007199254740991)
  if not rid then return send(res, terminate_xml("bad-request"), 400) end
  local sid = b.attr.sid
  if sid == nil then return self:create(req, res, b, rid) end
  local s = self.sessions[sid]
  if not s then return send(res, terminate_xml("item-not-found")) end
  return s:request(req, res, b, rid)
end

-- POST is BOSH; OPTIONS (without CORS configured) says what is allowed.
function Service:dispatch(req, res)
  if req.method == "POST" then return self:post(req, res) end
  if req.method == "OPTIONS" then return res:send(204, { Allow = "POST, OPTIONS" }) end
  return res:send(405, { Allow = "POST, OPTIONS", ["Content-Type"] = "text/plain" }, "BOSH takes POST\n")
end

--- service:handle(req, res): the httpd handler of the BOSH endpoint
-- (POST, and OPTIONS: CORS preflights when the `cors` option is set).
function Service:handle(req, res)
  local ok = self:guard(self.handler, req, res)
  if not ok and not res.answered then
    pcall(res.send, res, 500, { ["Content-Type"] = "text/plain; charset=utf-8", Connection = "close" },
      "internal error\n")
  end
end

--- service:count() -> sessions open
function Service:count() return self.n end

--- service:close_all([cond]): ends every session (the streams see their
-- connections drop; held requests get a terminate with cond, default
-- "system-shutdown"); new sessions are refused from then on.
function Service:close_all(cond)
  self.closed = true
  local list = {}
  for _, s in pairs(self.sessions) do list[#list + 1] = s end
  for _, s in ipairs(list) do
    self:guard(function() s:expire("the service closes", cond or "system-shutdown") end)
  end
end

local function check_limits(given)
  local limits = {}
  for k, v in pairs(M.DEFAULTS) do limits[k] = v end
  for k, v in pairs(given or {}) do
    if M.DEFAULTS[k] == nil then error("bosh.new: unknown limit " .. tostring(k), 3) end
    if type(v) ~= "number" or v ~= v or v <= 0 then error("bosh.new: limit " .. k .. " must be positive", 3) end
    limits[k] = v
  end
  if limits.cache < limits.max_hold + 1 then limits.cache = limits.max_hold + 1 end
  return limits
end

--- bosh.new(srv, opts) -> a BOSH service for the server srv.
-- opts: limits (M.DEFAULTS), consider_secure (true: sessions count as
-- encrypted even over plain HTTP, for loopback or a TLS-terminating proxy;
-- default false: only requests that came over HTTPS), cors (httpd.cors
-- options: answer preflights and add Access-Control-Allow-Origin; default
-- none).
function M.new(srv, opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("bosh.new: options must be a table", 2) end
  if type(srv) ~= "table" then error("bosh.new: srv must be a server", 2) end
  local self = setmetatable({ srv = srv, limits = check_limits(opts.limits),
    consider_secure = opts.consider_secure == true, sessions = {}, n = 0, per_ip = {} }, Service)
  local dispatch = function(req, res) return self:dispatch(req, res) end
  self.handler = opts.cors and httpd.cors(opts.cors, dispatch) or dispatch
  return self
end

return M
