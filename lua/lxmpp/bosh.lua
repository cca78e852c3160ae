-- lxmpp.bosh: the client side of BOSH (XEP-0124, XEP-0206): an XMPP stream
-- carried by HTTP requests, as a transport (lxmpp.transport) under the one
-- stream layer, for networks where only HTTP gets through.
--
-- The stream layer writes as over WebSocket (transport.websocket framing):
-- <open/> starts the BOSH session (the first time) or restarts the stream
-- (xmpp:restart, XEP-0206 §5), <close/> terminates it, anything else is
-- payload for the next request. One request is always held by the server
-- (the long poll); payload goes out at once in another request while fewer
-- than the session's `requests` are on the way. What the server answers is
-- delivered element by element, in rid order, as events of this transport.
-- Each request is its own HTTPS exchange (lxmpp.http), verified as any.

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local task = require "lxmpp.task"
local fifo = require "lxmpp.fifo"
local transport = require "lxmpp.transport"

local setmetatable, type, tostring, tonumber, pcall, pairs, ipairs, concat =
  setmetatable, type, tostring, tonumber, compat.pcall, pairs, ipairs, table.concat

local M = {}

local NS_BOSH = "http://jabber.org/protocol/httpbind"
local NS_XBOSH = "urn:xmpp:xbosh"
local NS_CLIENT = "jabber:client"
M.WAIT, M.HOLD = 60, 1

local Session = {}
Session.__index = Session

local function emit(self, event, ...)
  local h = self.handlers[event]
  if h then return h(...) end
end

-- Delivers what the server sent, one event at a time, while not paused.
local function deliver(self)
  while not self.paused and not self.closed and self.inbox.n > 0 do
    local ev = self.inbox:pop()
    emit(self, ev[1], ev[2], ev[3])
  end
end

local function queue_event(self, event, a, b)
  self.inbox:push({ event, a, b })
  deliver(self)
end

-- The end of the session (whatever ended it): "closed" once.
local function finish(self, event, msg, cond)
  if self.closed or self.ending then return end
  self.ending = true                 -- from here on nothing more is sent
  if event then queue_event(self, event, msg, cond) end
  self.closed = true
  emit(self, "closed")
end

local function body_of(self, rid, extra, payload)
  local parts = { "<body xmlns='", NS_BOSH, "' rid='", tostring(rid), "'" }
  if self.sid then parts[#parts + 1] = " sid='" .. core.xml_escape(self.sid) .. "'" end
  for k, v in pairs(extra or {}) do parts[#parts + 1] = (" %s='%s'"):format(k, core.xml_escape(v)) end
  parts[#parts + 1] = payload and (">" .. payload .. "</body>") or "/>"
  return concat(parts)
end

-- An answer's <body/>: its elements as events, or the end of the session.
local function answered(self, body)
  if body.attr.type == "terminate" then
    local cond = body.attr.condition
    if cond and cond ~= "" then
      -- a stream error inside it says more than the BOSH condition
      local err = body:get_child("error", transport.NS_STREAMS)
      if err then queue_event(self, "stanza", err) end
      return finish(self, "read-error", "the BOSH session was terminated: " .. cond)
    end
    self.ending = true               -- the server ended it: nothing more to send
    queue_event(self, "stream-close")
    queue_event(self, "eof")
    self.closed = true
    return emit(self, "closed")
  end
  if not self.sid then                         -- the session creation answer (XEP-0124 §7.2)
    self.sid = body.attr.sid
    if not self.sid then return finish(self, "read-error", "the BOSH answer has no sid") end
    self.requests = math.max(2, compat.tointeger(tonumber(body.attr.requests or "")) or 2)
    self.open_attr = { xmlns = NS_CLIENT, id = body.attr.authid, from = body.attr.from,
      version = body.attr["urn:xmpp:xbosh\1version"] or "1.0" }
  end
  if self.opening then
    self.opening = false
    queue_event(self, "open", self.open_attr)
  end
  for _, el in ipairs(body.tags) do
    if el.attr.xmlns == NS_CLIENT then el.attr.xmlns = nil end
    queue_event(self, "stanza", el)
  end
end

local pump

-- One request (the next rid) with these attributes and payload. Answers are
-- handled in rid order, whatever order they arrive in (XEP-0124 §14.2).
local function request(self, extra, payload)
  self.rid = self.rid + 1
  local rid = self.rid
  self.next_answer = self.next_answer or rid
  local xml = body_of(self, rid, extra, payload)
  self.out = self.out + 1
  task.spawn(function()
    local status, headers, answer = require("lxmpp.http").request({ method = "POST", url = self.url,
      headers = { ["Content-Type"] = "text/xml; charset=utf-8" }, body = xml, cafile = self.opts.cafile,
      insecure = self.opts.insecure, address = self.opts.address, timeout = M.WAIT + 30,
      max_response = self.opts.max_response or 1048576 })
    self.out = self.out - 1
    if self.closed then return end
    if not status then return finish(self, "read-error", "BOSH request failed: " .. tostring(headers)) end
    if status ~= 200 then return finish(self, "read-error", "the BOSH server answered HTTP " .. status) end
    self.read = self.read + #answer
    local body = core.parse_element(answer, { max_stanza_size = self.max_stanza_size })
    if not body or body.name ~= "body" or body.attr.xmlns ~= NS_BOSH then
      return finish(self, "parse-error", "the BOSH answer is not a <body/>", "bad-format")
    end
    self.answers[rid] = body
    while self.answers[self.next_answer] and not self.closed do
      local b = self.answers[self.next_answer]
      self.answers[self.next_answer] = nil
      self.next_answer = self.next_answer + 1
      answered(self, b)
    end
    if not self.closed then pump(self) end
  end)
end

-- Sends what waits (or an empty poll, so one request is always held).
function pump(self)
  if self.closed or not self.sid or self.terminating then return end
  while self.out < self.requests and (self.pending.n > 0 or self.out == 0 or self.restart_next) do
    local payload = concat(self.pending:clear())
    local extra = self.restart_next and { ["xmpp:restart"] = "true", ["xmlns:xmpp"] = NS_XBOSH,
      ["xml:lang"] = "en", to = self.domain } or nil
    self.restart_next = false
    request(self, extra, payload)
    self.queued = 0
    if not extra and payload == "" then break end
  end
  if self.blocked and self.queued < self.max_queue then
    self.blocked = false
    emit(self, "drain")
  end
end

function Session:on(event, fn)
  self.handlers[event] = fn
  return self
end

function Session:parse(opts)
  self.max_stanza_size = opts and opts.max_stanza_size
  return true
end

function Session.restart() return true end

function Session:write(bytes)
  if self.closed or self.ending then return nil, "the BOSH session is over", "closed" end
  if bytes:sub(1, 6) == "<open " then
    local to = bytes:match(" to='([^']*)'")
    self.opening = true
    if not self.sid then                       -- the session creation request (XEP-0124 §7.1, XEP-0206 §4)
      self.domain = to
      request(self, { to = to, ["xml:lang"] = "en", ver = "1.11", wait = tostring(M.WAIT),
        hold = tostring(M.HOLD), ["xmpp:version"] = "1.0", ["xmlns:xmpp"] = NS_XBOSH })
    else                                       -- a stream restart (XEP-0206 §5)
      self.restart_next = true
      pump(self)
    end
    return true
  end
  if bytes:sub(1, 7) == "<close " then
    self.terminating = true
    request(self, { type = "terminate" }, concat(self.pending:clear()))
    return true
  end
  if self.queued > 0 and self.queued + #bytes > self.max_queue then
    self.blocked = true
    return nil, "the output queue is full", "resource-constraint"
  end
  self.pending:push(bytes)
  self.queued = self.queued + #bytes
  pump(self)
  return true
end

function Session:pause() self.paused = true end

function Session:resume()
  self.paused = false
  deliver(self)
end

function Session:close()
  if not self.closed and not self.ending and self.sid and not self.terminating then
    self.terminating = true
    request(self, { type = "terminate" }, concat(self.pending:clear()))
  end
  finish(self, nil)
  return true
end
Session.shutdown = Session.close

function Session:abort()
  self.inbox = fifo.new()
  finish(self, nil)
  return true
end

function Session:info() return { peer = self.url, queued = self.queued } end
function Session:bytes_in() return self.read end
function Session:set_max_queue(n) self.max_queue = n end
function Session.starttls() return nil, "BOSH has no STARTTLS: use an https:// URL", "feature-not-implemented" end
function Session.channel_binding() return nil end
function Session.tls_info() return nil end

--- bosh.url(url) -> { secure = bool } | nil, message: an http(s):// URL of a
-- BOSH endpoint (plain http only to a loopback address, as lxmpp.http).
function M.url(url)
  if type(url) ~= "string" then return nil, "the URL is not a string" end
  local scheme = url:match("^(%a+)://[^/]")
  scheme = scheme and scheme:lower()
  if scheme ~= "http" and scheme ~= "https" then return nil, "not an http:// or https:// URL: " .. url end
  return { secure = scheme == "https" }
end

--- bosh.connect(url, opts) -> transport | nil, message, condition: a BOSH
-- transport to the endpoint at url; the session itself starts when the
-- stream layer opens its stream. opts: cafile, insecure, address (connect
-- there instead of resolving the URL's host), max_response.
function M.connect(url, opts)
  local u, why = M.url(url)
  if not u then return nil, why, "bad-request" end
  local ok, rid = pcall(function() return math.random(1, 2 ^ 40) end)
  return setmetatable({
    url = url, opts = opts or {}, handlers = {}, inbox = fifo.new(), pending = fifo.new(), answers = {},
    rid = ok and rid or 4096, out = 0, requests = 2, queued = 0, read = 0, max_queue = 1048576,
    closed = false, encrypted = u.secure, framing = transport.websocket,
  }, Session)
end

return M
