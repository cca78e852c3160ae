-- Stream management (XEP-0198), client side: a negotiation module (resume
-- before binding, enable after it) and the per-session state that outlives
-- a connection: the server's session id, the counters, and the queue of
-- stanzas the server has not acknowledged yet.
--
-- Counting, h parsing and the handled-count-too-high rule (XEP-0198 §4)
-- are lxmpp.smcore, shared with the server. After <resumed h=.../>
-- exactly the stanzas past h are sent again. When resumption fails, the stanzas the server did not acknowledge
-- go to the client's report_unacked (the "unacked" event): never dropped,
-- never sent twice behind the application's back.

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local smcore = require "lxmpp.smcore"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"

local setmetatable, type, tostring, tonumber, math_type, ipairs, error =
  setmetatable, type, tostring, tonumber, compat.math_type, ipairs, error

local NS = smcore.NS
local NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"

local M = { NS = NS }

--- sm.parse_h(s) -> integer in [0, 2^32), or nil (smcore.parse_h).
M.parse_h = smcore.parse_h

--- Does this stanza count for XEP-0198? (message, presence, iq in the
-- stream's default namespace; nonzas never do)
function M.counts(s)
  local name, ns = s.name, s.attr.xmlns
  return (name == "message" or name == "presence" or name == "iq") and (ns == nil or ns == "jabber:client")
end
local counts = M.counts

local SM = {}
SM.__index = SM

-- A saved state (SM:state): the XEP-0198 session (id absent when there is
-- none to resume), and the login's own part (features/sasl2.lua): the
-- XEP-0388 user-agent id and the XEP-0484 token; and the anchor of the
-- archive catch-up (features/catchup.lua): archive = { id =, stamp =,
-- gap = true (pinned) or nil, seen = { archive ids } (only when pinned) }.
local function copy_archive(a)
  local seen
  if a.gap and a.seen then
    seen = {}
    for i, id in ipairs(a.seen) do seen[i] = id end
  end
  return { id = a.id, stamp = a.stamp, gap = a.gap, seen = seen }
end

local function check_state(state)
  local bad = type(state) ~= "table" or (state.id ~= nil and type(state.id) ~= "string")
    or (state.id ~= nil and type(state.jid) ~= "string") or (state.jid ~= nil and type(state.jid) ~= "string")
    or math_type(state.inbound) ~= "integer" or math_type(state.acked) ~= "integer"
    or type(state.queue) ~= "table" or (state.ua_id ~= nil and type(state.ua_id) ~= "string")
  local f = type(state) == "table" and state.fast
  if f ~= nil and (type(f) ~= "table" or type(f.token) ~= "string" or type(f.mechanism) ~= "string"
      or math_type(f.expiry) ~= "integer") then
    bad = true
  end
  local a = type(state) == "table" and state.archive
  if a ~= nil and (type(a) ~= "table" or type(a.id) ~= "string" or a.id == ""
      or (a.stamp ~= nil and type(a.stamp) ~= "number") or (a.gap ~= nil and a.gap ~= true)
      or (a.seen ~= nil and (type(a.seen) ~= "table" or a.gap == nil))) then
    bad = true
  end
  for _, id in ipairs(type(a) == "table" and type(a.seen) == "table" and a.seen or {}) do
    if type(id) ~= "string" or id == "" then bad = true end
  end
  if bad then error("lxmpp.connect: stream_management.state is not a state saved by lxmpp", 4) end
  for _, x in ipairs(state.queue) do
    if type(x) ~= "string" then error("lxmpp.connect: stream_management.state.queue holds a non-string", 4) end
  end
end

--- sm.new(client, opts) -> the client's stream management state. opts is
-- the stream_management option: true, or { ack_every =, ack_delay =,
-- resume =, state =, save = }.
function M.new(client, opts)
  if type(opts) ~= "table" then opts = {} end
  if opts.save ~= nil and type(opts.save) ~= "function" then
    error("lxmpp.connect: stream_management.save must be a function", 3)
  end
  local self = setmetatable({
    client = client,
    ack_every = opts.ack_every or 10,     -- <r/> after this many stanzas
    ack_delay = opts.ack_delay or 1,      -- or when one waited this long
    want_resume = opts.resume ~= false,
    save_fn = opts.save,
    enabled = false,                      -- on the current connection
    id = nil, max = nil,                  -- the server's session, when resumable
    since_r = 0,
  }, SM)
  -- handled (the h we report), acked (the server's), q: unacknowledged stanzas (XML)
  smcore.init(self)
  local state = opts.state
  if state ~= nil then
    check_state(state)
    -- a session belongs to one account (XEP-0198 §9)
    if client.node and state.jid and not jid.equal(jid.bare(state.jid) or "", client.bare_jid) then
      error("lxmpp.connect: stream_management.state belongs to " .. state.jid .. ", not " .. client.bare_jid, 3)
    end
    if state.id then
      self.id, self.jid, self.max = state.id, state.jid, state.max
      smcore.init(self, state.inbound, state.acked)
      for _, xml in ipairs(state.queue) do smcore.sent(self, xml) end
    end
    local login = client.login
    login.ua_id = login.ua_id or state.ua_id
    local f = state.fast
    login.fast = f and { token = f.token, mechanism = f.mechanism, expiry = f.expiry } or nil
    login.saved = login.saved or state.ua_id ~= nil or f ~= nil
    local a = state.archive
    login.archive = a and copy_archive(a) or nil
  end
  return self
end

function SM:unacked() return self.q.n end

--- Can this session be resumed on a new connection?
function SM:resumable() return self.id ~= nil end

--- The state a store keeps to resume after a restart (nil: nothing to
-- keep): the XEP-0198 session, what features/sasl2.lua keeps of the
-- login (the user-agent id, the FAST token: a secret, docs/api.md), and
-- the archive catch-up's anchor (features/catchup.lua).
function SM:state()
  local login = self.client.login
  local a = login.archive
  if not self.id and not login.saved and not a then return nil end
  local f = login.fast
  local st_ = { id = self.id, jid = self.id and self.jid or nil, max = self.max,
    inbound = self.id and self.handled or 0, acked = self.id and self.acked or 0,
    queue = self.id and self.q:list() or {} }
  if login.saved then
    st_.jid = st_.jid or self.client.bare_jid
    st_.ua_id = login.ua_id
    st_.fast = f and { token = f.token, mechanism = f.mechanism, expiry = f.expiry } or nil
  end
  if a then
    st_.jid = st_.jid or self.client.bare_jid
    st_.archive = copy_archive(a)
  end
  return st_
end

function SM:save()
  local fn = self.save_fn
  if not fn then return end
  local ok, err = compat.pcall(fn, self:state())
  if not ok then self.client:log("error", "stream_management.save failed: %s", tostring(err)) end
end

-- Takes every unacknowledged stanza out of the queue, parsed back.
function SM:take_queue()
  local out = {}
  for _, xml in ipairs(self.q:clear()) do
    local s = st.parse(xml)
    if s then out[#out + 1] = s end
  end
  return out
end

--- Gives up the session: what the server did not acknowledge goes to the
-- application, the store forgets the session.
function SM:abandon(reason, condition)
  local had = self.id ~= nil or self:unacked() > 0
  self.id, self.max, self.enabled = nil, nil, false
  local lost = self:take_queue()
  smcore.init(self)
  self.since_r = 0
  if had then self:save() end
  if #lost > 0 then require("lxmpp.reconnect").internal.report_unacked(self.client, lost, reason, condition) end
end

---------------------------------------------------------------------------
-- acknowledgements

--- Applies an acknowledgement (h as the server sent it). true, or nil after
-- a stream error (bad h, or more than was sent: smcore.ack).
function SM:ack(hs)
  local acked, cond, text, extra = smcore.ack(self, hs)
  if not acked then
    self:abandon(cond == "bad-format" and "the server sent an invalid h"
      or "the server acknowledged more stanzas than were sent", cond)
    require("lxmpp.session").internal.stream_error(self.client, cond, text, extra)
    return nil
  end
  if #acked > 0 then self:save() end
  if self:unacked() == 0 then
    local ws = self.ack_waiters
    self.ack_waiters = nil
    for _, w in ipairs(ws or {}) do w:wake(true) end
  end
  return true
end

function SM:request_ack()
  self.since_r = 0
  if self.ack_timer then
    self.ack_timer:stop()
    self.ack_timer = nil
  end
  return self.client.conn:write("<r xmlns='" .. NS .. "'/>")
end

-- The idle-delay timer's target: ask for an ack if stanzas still wait.
function SM:wake()
  self.ack_timer = nil
  if self.enabled and self.since_r > 0 and self.client.conn and not self.client.conn.closed then
    self:request_ack()
  end
end

--- Sends a stanza that counts, keeping it until it is acknowledged.
-- true, or nil, message, condition (then it was neither sent nor counted).
function SM:send(xml)
  local ok, msg, cond = self.client.conn:write(xml)
  if not ok then return nil, msg, cond end
  smcore.sent(self, xml)
  self:save()
  self.since_r = self.since_r + 1
  if self.since_r >= self.ack_every then
    self:request_ack()
  elseif not self.ack_timer then
    self.ack_timer = core.timer(self.ack_delay, self)
  end
  return true
end

--- Waits until every sent stanza is acknowledged (or timeout). true or nil.
function SM:wait_acked(timeout)
  if self:unacked() == 0 then return true end
  if not self.enabled then return nil end
  local task = require "lxmpp.task"
  local w = task.waiter("wait_acked", 2)
  self.ack_waiters = self.ack_waiters or {}
  self.ack_waiters[#self.ack_waiters + 1] = w
  self:request_ack()
  local t = core.timer(timeout, w)
  local ok = w:wait()
  t:stop()
  return ok
end

--- The connection is gone: nothing is enabled on the next one until
-- resumed or enabled again.
function SM:link_lost()
  self.enabled = false
  if self.ack_timer then
    self.ack_timer:stop()
    self.ack_timer = nil
  end
  local ws = self.ack_waiters
  self.ack_waiters = nil
  for _, w in ipairs(ws or {}) do w:wake(nil) end
end

-- Incoming: the counter, and the nonzas <r/> and <a/>. Returns true for
-- what it consumed.
function SM:incoming(s)
  if s.attr.xmlns == NS then
    if not self.enabled then return true end
    if s.name == "r" then
      self.client.conn:write(("<a xmlns='%s' h='%d'/>"):format(NS, self.handled))
    elseif s.name == "a" then
      self:ack(s.attr.h)
    end
    return true
  end
  if self.enabled and counts(s) then
    smcore.handled(self)
    if self.save_fn then self:save() end
  end
  return nil
end

---------------------------------------------------------------------------
-- negotiation

local function failure_condition(s)
  local child = s:childtags(nil, NS_STANZAS)()
  return child and child.name or "undefined-condition"
end

-- Reads the answer to <enable/> or <resume/>; stanzas that come first are
-- handled as usual (they are not counted: stream management starts with
-- the answer).
local function read_answer(client)
  while true do
    local s, msg, cond = client:read()
    if not s then return nil, msg, cond end
    if s.attr.xmlns == NS and (s.name == "enabled" or s.name == "resumed" or s.name == "failed") then
      return s
    end
    if s.attr.xmlns ~= NS then require("lxmpp.session").internal.incoming(client, s) end
  end
end

--- The server's <failed/> to a resumption (here or inline in SASL2,
-- XEP-0198 §"SASL2 And BIND2 Interaction"): what it says it handled is
-- taken, the rest goes to the application; a new session is bound.
function SM:resume_failed(s)
  local fcond = failure_condition(s)
  -- a server may say how many it handled before the session ended
  if s.attr.h and self:unacked() > 0 then
    local h = smcore.parse_h(s.attr.h)
    if h and smcore.covers(self, h) then self:ack(s.attr.h) end
  end
  self:abandon("the server could not resume the session (" .. fcond .. ")", fcond)
end

--- The server's <resumed/> (here or inline in SASL2): the old session
-- goes on. nil, or client:fail's false.
function SM:resumed(s)
  local client = self.client
  if s.attr.previd ~= self.id then
    self:abandon("the server resumed another session", "bad-format")
    return client:fail("the server resumed session " .. tostring(s.attr.previd) .. ", not ours", "bad-format")
  end
  self.enabled = true
  if not self:ack(s.attr.h) then return client:fail("bad acknowledgement in <resumed/>", "bad-format") end
  require("lxmpp.features.bind").bound_as(client, self.jid)
  client.bound, client.session_done, client.resumed = true, true, true
  -- exactly what the server did not get, in order, with their old numbers
  local q = self.q
  for k = 1, q.n do client.conn:write(q:at(k)) end
  if q.n > 0 then self:request_ack() end
  return nil
end

--- The <resume/> to send (inline in SASL2's <authenticate/> too).
function SM:resume_xml()
  return ("<resume xmlns='%s' previd='%s' h='%d'/>"):format(NS, core.xml_escape(self.id), self.handled)
end

--- Before binding, on a reconnection: <resume/>.
function SM:resume(features)
  local client = self.client
  if not self.id or client.bound or not client.authenticated then return nil end
  if not features:get_child("sm", NS) then
    self:abandon("the server no longer offers stream management", "service-unavailable")
    return nil
  end
  local ok, msg, cond = client.conn:write(self:resume_xml())
  if not ok then return client:fail(msg, cond) end
  local s
  s, msg, cond = read_answer(client)
  if not s then return client:fail(msg, cond) end
  if s.name == "failed" then
    self:resume_failed(s)
    return nil                                  -- bind a new session
  end
  if s.name ~= "resumed" then return client:fail("unexpected <" .. s.name .. "/> after <resume/>", "bad-format") end
  return self:resumed(s)
end

--- The server's <enabled/> (here or inside XEP-0386's <bound/>).
function SM:enabled_by(s)
  local client = self.client
  self.enabled = true
  self.handled, self.acked, self.since_r = 0, 0, 0
  local resume = s.attr.resume == "true" or s.attr.resume == "1"
  self.id = resume and s.attr.id or nil
  self.max = tonumber(s.attr.max or "")
  self.jid = client.jid
  self:save()
end

--- After binding: <enable resume='true'/>.
function SM:enable(features)
  local client = self.client
  if self.enabled or not client.bound or client.resumed or not features:get_child("sm", NS) then return nil end
  local ok, msg, cond = client.conn:write(("<enable xmlns='%s'%s/>"):format(NS,
    self.want_resume and " resume='true'" or ""))
  if not ok then return client:fail(msg, cond) end
  local s
  s, msg, cond = read_answer(client)
  if not s then return client:fail(msg, cond) end
  if s.name ~= "enabled" then
    client:log("warn", "the server refused stream management (%s)", failure_condition(s))
    return nil
  end
  self:enabled_by(s)
  return nil
end

return M
