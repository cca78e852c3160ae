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
--
-- HTTP: persistent connections (lxmpp.http.open), each carrying one request
-- at a time, so at most `requests` (hold + 1, XEP-0124 §11) are open and a
-- session costs two TCP+TLS handshakes, not one per request. A request that
-- fails below BOSH (the connection broke, no answer in time) is sent again,
-- the same body with the same rid, which the server answers from its cache
-- if it had answered it already (XEP-0124 §14.3); after `retries` attempts
-- the link counts as lost and the stream layer's reconnection takes over.
-- Keys (XEP-0124 §15) guard sessions over plain HTTP. Closing the session
-- sends the terminate body and cancels the held poll at once; when the
-- transport closes, every connection it opened is closed and every task it
-- started ends. docs/api.md, "BOSH", has the numbers.
--
-- Ownership: the session owns its HTTP connections (self.conns) and the
-- tasks of its requests; finish() closes the one and so ends the other.

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local task = require "lxmpp.task"
local session = require "lxmpp.session"
local fifo = require "lxmpp.fifo"
local http = require "lxmpp.http"
local transport = require "lxmpp.transport"
local stream_error = require "lxmpp.stream_error"

local setmetatable, type, tostring, tonumber, pairs, ipairs, concat =
  setmetatable, type, tostring, tonumber, pairs, ipairs, table.concat

local M = {}

local NS_BOSH = "http://jabber.org/protocol/httpbind"
local NS_XBOSH = "urn:xmpp:xbosh"
local NS_CLIENT = "jabber:client"

--- Defaults (docs/api.md, "BOSH"): the wait and hold asked for at session
-- creation, the seconds an answer may take beyond `wait` before the request
-- counts as failed, how often a failed request is sent again and the first
-- pause before that (doubling), and the length of a key sequence (§15.3).
M.WAIT, M.HOLD, M.MARGIN, M.RETRIES, M.BACKOFF, M.KEYS = 60, 1, 15, 3, 0.25, 256

-- BOSH terminal conditions (XEP-0124 §17.2) that are also stream error
-- conditions (RFC 6120 §4.9.3): a terminate with one of them reaches the
-- stream as that stream error.
local AS_STREAM_ERROR = {
  ["host-gone"] = true, ["host-unknown"] = true, ["improper-addressing"] = true,
  ["internal-server-error"] = true, ["policy-violation"] = true, ["remote-connection-failed"] = true,
  ["system-shutdown"] = true, ["undefined-condition"] = true,
}

-- What a failed HTTP request ends with for good (no resending helps).
local FINAL = {
  ["tls-verify-failed"] = true, ["tls-failed"] = true, ["bad-request"] = true, ["not-acceptable"] = true,
  ["resource-constraint"] = true, ["bad-format"] = true,
}

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

-- Closes every HTTP connection and wakes every pause between attempts:
-- the tasks of the requests see the session closed and end.
local function release(self)
  local conns, sleepers, dialing = self.conns, self.sleepers, self.dialing
  self.conns, self.idle, self.sleepers, self.dialing = {}, {}, {}, {}
  -- a task cancelled in http.open closes its connection attempt at once
  for t in pairs(dialing) do task.cancel(t) end
  if self.poll_timer then
    self.poll_timer:stop()
    self.poll_timer = nil
  end
  for hc in pairs(conns) do hc:close() end
  for w, t in pairs(sleepers) do
    t:stop()
    w:wake()
  end
end

-- The end of the session (whatever ended it): "closed" once.
local function finish(self, event, msg, cond)
  if self.closed or self.ending then return end
  self.ending = true                 -- from here on nothing more is sent
  if event then queue_event(self, event, msg, cond) end
  self.closed = true
  release(self)
  emit(self, "closed")
end

-- Keys (XEP-0124 §15.3): K(1) = hex(SHA-1(seed)) ... K(n); sent from K(n)
-- down to K(1).
local function key_sequence()
  local seed = core.random(20)
  local keys = { core.sha1_hex(seed) }
  for i = 2, M.KEYS do keys[i] = core.sha1_hex(keys[i - 1]) end
  return keys
end

-- The key attributes of the next request (§15.4, §15.5).
local function next_keys(self, extra)
  if not self.keys then return end
  if not self.sid and not self.key_i then        -- the creation request
    self.key_i = #self.keys
    extra.newkey = self.keys[self.key_i]
    self.key_i = self.key_i - 1
    return
  end
  extra.key = self.keys[self.key_i]
  if self.key_i == 1 then                         -- the last of this sequence: switch
    self.keys = key_sequence()
    self.key_i = #self.keys
    extra.newkey = self.keys[self.key_i]
  end
  self.key_i = self.key_i - 1
end

local function body_of(self, rid, extra, payload)
  local parts = { "<body xmlns='", NS_BOSH, "' rid='", tostring(rid), "'" }
  if self.sid then parts[#parts + 1] = " sid='" .. core.xml_escape(self.sid) .. "'" end
  local keys = {}
  for k in pairs(extra) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do parts[#parts + 1] = (" %s='%s'"):format(k, core.xml_escape(extra[k])) end
  parts[#parts + 1] = payload ~= "" and (">" .. payload .. "</body>") or "/>"
  return concat(parts)
end

-- An answer's <body/>: its elements as events, or the end of the session.
local function answered(self, body)
  if body.attr.type == "terminate" then
    self.terminating = true          -- the server ended it: no terminate of ours follows
    local cond = body.attr.condition
    if cond and cond ~= "" then
      -- a stream error inside it says more than the BOSH condition
      local err = body:get_child("error", transport.NS_STREAMS)
      if not err and AS_STREAM_ERROR[cond] then
        err = core.parse_element(stream_error.element(cond, "the BOSH session was terminated", nil,
          transport.NS_STREAMS))
      end
      if err then queue_event(self, "stanza", err) end
      return finish(self, "read-error", "the BOSH session was terminated: " .. cond)
    end
    self.ending = true               -- the server ended it: nothing more to send
    queue_event(self, "stream-close")
    queue_event(self, "eof")
    self.closed = true
    release(self)
    return emit(self, "closed")
  end
  if not self.sid then                         -- the session creation answer (XEP-0124 §7.2)
    self.sid = body.attr.sid
    if not self.sid then return finish(self, "read-error", "the BOSH answer has no sid") end
    self.requests = math.max(1, compat.tointeger(tonumber(body.attr.requests or "")) or 2)
    self.wait = compat.tointeger(tonumber(body.attr.wait or "")) or self.wait
    self.polling = tonumber(body.attr.polling or "")
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

local pump, cancel, in_order, request

-- Handles the answers that are next in rid order (XEP-0124 §14.2); a
-- cancelled request (false) is passed over. Then what waits goes out:
-- payloads and polls, or the terminate body once fewer than `requests`
-- are under way (§11).
function in_order(self)
  while self.answers[self.next_answer] ~= nil and not self.closed do
    local b = self.answers[self.next_answer]
    self.answers[self.next_answer] = nil
    self.next_answer = self.next_answer + 1
    if b then answered(self, b) end
  end
  if self.closed then return end
  if self.terminate_payload and self.out < self.requests then
    local req = request(self, { type = "terminate" }, self.terminate_payload)
    self.terminate_payload, req.terminate = nil, true
  end
  pump(self)
end

-- A connection for the next request: a kept-alive idle one, or a new one.
local function take_conn(self)
  while #self.idle > 0 do
    local hc = table.remove(self.idle)
    if hc:usable() then return hc end
    self.conns[hc] = nil
    hc:close()
  end
  local o = self.opts
  -- (self.dialing: release() ends the tasks still connecting, which could
  -- otherwise wait for connect_timeout on a host that does not answer)
  local me = task.current("bosh")
  self.dialing[me] = true
  local hc, msg, cond = http.open(self.url, { cafile = o.cafile, insecure = o.insecure, address = o.address,
    timeout = o.connect_timeout or 15 })
  self.dialing[me] = nil
  if not hc then return nil, msg, cond end
  if self.closed then
    hc:close()
    return nil, "the BOSH session is over", "closed"
  end
  self.conns[hc] = true
  self.opened = self.opened + 1
  return hc
end

local function put_back(self, hc)
  if not self.closed and hc:usable() then
    self.idle[#self.idle + 1] = hc
  else
    self.conns[hc] = nil
    hc:close()
  end
end

-- Waits seconds, or until the session ends (release wakes it) or req is
-- cancelled.
local function pause(self, req, seconds)
  local w = task.waiter("bosh")
  local t = core.timer(seconds, w)
  self.sleepers[w], req.sleeper = t, w
  w:wait()
  t:stop()
  self.sleepers[w], req.sleeper = nil, nil
end

-- One attempt at req: the parsed <body/>, or nil, message, condition.
local function attempt(self, req)
  local hc, msg, cond = take_conn(self)
  if not hc then return nil, msg, cond end
  if req.cancelled then
    put_back(self, hc)
    return nil, "cancelled", "closed"
  end
  local reused = hc.served > 0
  req.hc, req.sent_at = hc, core.now()
  local status, headers, answer = hc:request({ method = "POST", body = req.xml,
    headers = { ["Content-Type"] = "text/xml; charset=utf-8" },
    timeout = (self.wait or M.WAIT) + self.margin, max_response = self.opts.max_response or 1048576 })
  req.hc = nil
  put_back(self, hc)
  if not status then return nil, headers, answer, reused end
  if status ~= 200 then return false, "the BOSH server answered HTTP " .. status end
  self.read = self.read + #answer
  local body = core.parse_element(answer, { max_stanza_size = self.max_stanza_size })
  if not body or body.name ~= "body" or body.attr.xmlns ~= NS_BOSH then
    return false, "the BOSH answer is not a <body/>", "bad-format"
  end
  return body
end

-- Cancels the requests under way that which(req) picks: their connections
-- close at once (their tasks end), and answers after them are no longer
-- kept waiting for theirs.
function cancel(self, which)
  for rid, req in pairs(self.outstanding) do
    if not req.cancelled and not req.done and which(req) then
      req.cancelled = true
      self.out = self.out - 1
      if self.answers[rid] == nil then self.answers[rid] = false end
      if req.hc then
        self.conns[req.hc] = nil
        req.hc:close()
      end
      if req.sleeper then req.sleeper:wake() end     -- pausing between attempts
    end
  end
end

-- The task of one request: sent, sent again while it fails below BOSH
-- (§14.3) or is answered type='error' (§17.3), then its answer handled in
-- rid order.
local function run_request(self, req)
  local tries = 0
  while true do
    if self.closed or req.cancelled then return end
    local body, msg, cond, reused = attempt(self, req)
    if self.closed or req.cancelled then return end
    -- a kept-alive connection the server closed as we wrote: once at once,
    -- on a new connection, without counting (RFC 9112 §9.3.1)
    local stale = reused and cond == "closed" and not req.stale
    if stale then req.stale = true end
    if body == false then
      return finish(self, cond == "bad-format" and "parse-error" or "read-error", msg, cond)
    end
    if body and body.attr.type ~= "error" then
      req.done = true
      -- the server takes requests in rid order: once it answered our
      -- terminate, it has had every request before it, and what it still
      -- owes us on them is not worth waiting for
      if req.terminate then cancel(self, function(r) return r.rid < req.rid end) end
      self.out = self.out - 1
      if req.poll then self.last_empty = not body.tags[1] and req.sent_at or nil end
      self.answers[req.rid] = body
      return in_order(self)
    end
    if body then msg, cond = "the BOSH server answered type='error'", "undefined-condition" end
    if not stale then
      tries = tries + 1
      -- the creation request is not sent again: a session the server made
      -- for a lost answer would be an orphan; the reconnection starts anew
      if not req.retry or FINAL[cond] or tries > self.retries then
        return finish(self, "read-error", "BOSH request failed: " .. tostring(msg))
      end
      pause(self, req, self.backoff * 2 ^ (tries - 1))
    end
  end
end

-- One request (the next rid) with these attributes and payload.
function request(self, extra, payload)
  self.rid = self.rid + 1
  local rid = self.rid
  self.next_answer = self.next_answer or rid
  next_keys(self, extra)
  -- a poll: nothing to say, only a request for the server to hold
  local req = { rid = rid, xml = body_of(self, rid, extra, payload), retry = self.sid ~= nil,
    poll = self.sid ~= nil and payload == "" and not extra.type and not extra["xmpp:restart"] }
  if not req.poll then self.last_empty = nil end
  self.out = self.out + 1
  self.outstanding[rid] = req
  task.spawn(function()
    run_request(self, req)
    self.outstanding[rid] = nil
  end)
  return req
end

-- Sends what waits (or an empty poll, so one request is always held).
function pump(self)
  if self.closed or not self.sid or self.terminating then return end
  while self.out < self.requests and (self.pending.n > 0 or self.out == 0 or self.restart_next) do
    local payload = concat(self.pending:clear())
    local extra = self.restart_next and { ["xmpp:restart"] = "true", ["xmlns:xmpp"] = NS_XBOSH,
      ["xml:lang"] = "en", to = self.domain } or {}
    local restart = self.restart_next
    if payload == "" and not restart and self.polling and self.last_empty then
      -- XEP-0124 §11: an empty poll answered empty is not followed by
      -- another one within `polling` seconds
      local left = self.last_empty + self.polling - core.now()
      if left > 0 then
        if not self.poll_timer then
          self.poll_timer = core.timer(left, { wake = function()
            self.poll_timer = nil
            pump(self)
          end })
        end
        break
      end
    end
    self.restart_next = false
    request(self, extra, payload)
    self.queued = 0
    if not restart and payload == "" then break end
  end
  if self.blocked and self.queued < self.max_queue then
    self.blocked = false
    emit(self, "drain")
  end
end

-- Terminates the session (XEP-0124 §13): the empty polls under way are
-- cancelled at once (their connections closed: the server answers them
-- with nothing we need), and the terminate body carries what still waits.
local function terminate(self)
  self.terminating = true
  cancel(self, function(r) return r.poll end)
  self.terminate_payload = concat(self.pending:clear())
  -- (when `requests` are still under way, the next answer sends it: in_order)
  task.spawn(in_order, self)        -- answers behind a cancelled poll: from the loop, not inside write
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
      request(self, { to = to, ["xml:lang"] = "en", ver = "1.11", wait = tostring(self.wait),
        hold = tostring(self.hold), ["xmpp:version"] = "1.0", ["xmlns:xmpp"] = NS_XBOSH }, "")
    else                                       -- a stream restart (XEP-0206 §5)
      self.restart_next = true
      pump(self)
    end
    return true
  end
  if bytes:sub(1, 7) == "<close " then
    if not self.terminating and self.sid then terminate(self) end
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

-- Closed without a <close/> first (a stream error, the client giving up):
-- the terminate goes out on its own connection, in a task of its own
-- bounded by a short timeout, so the server frees the session now rather
-- than after its inactivity timeout.
local function terminate_alone(self)
  self.rid = self.rid + 1
  local extra = { type = "terminate" }
  next_keys(self, extra)
  local xml = body_of(self, self.rid, extra, concat(self.pending:clear()))
  local o = self.opts
  task.spawn(function()
    http.request({ method = "POST", url = self.url, headers = { ["Content-Type"] = "text/xml; charset=utf-8" },
      body = xml, cafile = o.cafile, insecure = o.insecure, address = o.address, timeout = 5, max_response = 65536 })
  end)
end

function Session:close()
  if not self.closed and not self.ending and self.sid and not self.terminating then
    self.terminating = true
    terminate_alone(self)
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

--- t:info() -> { peer = url, queued = bytes, connections = HTTP connections
-- open now, opened = HTTP connections opened so far, requests = the limit }
function Session:info()
  local n = 0
  for _ in pairs(self.conns) do n = n + 1 end
  return { peer = self.url, queued = self.queued, connections = n, opened = self.opened, requests = self.requests }
end
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

local function positive(v, name)
  if v ~= nil and (type(v) ~= "number" or v ~= v or v < 0) then
    error("bosh.connect: " .. name .. " must be a non-negative number", 3)
  end
  return v
end

--- bosh.connect(url, opts) -> transport | nil, message, condition: a BOSH
-- transport to the endpoint at url; the session itself starts when the
-- stream layer opens its stream. opts: cafile, insecure, address (connect
-- there instead of resolving the URL's host), max_response,
-- connect_timeout, wait, hold, retries, backoff, margin (seconds beyond
-- wait), keys (true: XEP-0124 §15 keys; default: over http:// only).
function M.connect(url, opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("bosh.connect: options must be a table", 2) end
  local u, why = M.url(url)
  if not u then return nil, why, "bad-request" end
  local keys = opts.keys
  if keys == nil then keys = not u.secure end
  -- a large, unpredictable first rid (XEP-0124 §14.1 and "Unpredictable
  -- SID and RID"), from 2^20 to below 2^40: OpenSSL's generator, not
  -- math.random (unseeded on Lua 5.1 and LuaJIT: the same rid in every process)
  local v = session.random_uint(5)
  local rid = compat.tointeger(1048576 + v % (1099511627776 - 1048576))
  return setmetatable({
    url = url, opts = opts, handlers = {}, inbox = fifo.new(), pending = fifo.new(), answers = {},
    rid = rid, out = 0, requests = 2, queued = 0, read = 0, max_queue = 1048576,
    wait = compat.tointeger(positive(opts.wait, "wait")) or M.WAIT,
    hold = compat.tointeger(positive(opts.hold, "hold")) or M.HOLD,
    retries = positive(opts.retries, "retries") or M.RETRIES, backoff = positive(opts.backoff, "backoff") or M.BACKOFF,
    margin = positive(opts.margin, "margin") or M.MARGIN,
    keys = keys and key_sequence() or nil,
    conns = {}, idle = {}, sleepers = {}, dialing = {}, outstanding = {}, opened = 0,
    closed = false, encrypted = u.secure, framing = transport.websocket,
  }, Session)
end

return M
