-- Reconnection, liveness and the client's side of "never lose a message":
--
--   * a lost link is reconnected (exponential backoff with jitter and a
--     cap), resuming the XEP-0198 session before binding when it can;
--     "disconnected" (message, condition, reconnecting) and "reconnected"
--     (resumed) tell the application; presence is restored on a new session;
--     handlers live on the client and stay. No retry after not-authorized,
--     or after a conflict (another client took our resource), or close().
--   * stanzas sent while reconnecting wait in a bounded queue and go out,
--     in order, once the session is back.
--   * a link that stays silent for `keepalive` seconds is dead (half-open
--     TCP): after half of it a probe goes out (an XEP-0198 <r/>, or an
--     XEP-0199 ping), and without an answer the link is dropped.
--   * messages the server never acknowledged are sent again on the new
--     session when the old one could not be resumed (resend_unacked, on by
--     default; they keep their ids, so receivers can de-duplicate); what is
--     not sent again (other stanzas, or everything once the client gives up
--     or is closed, or with resend_unacked = false) is handed to the
--     application in the "unacked" event (kept until a handler is there).

local core = require "lxmpp.core"
local task = require "lxmpp.task"
local session = require "lxmpp.session"
local fifo = require "lxmpp.fifo"

local type, error, pairs, ipairs, math_min =
  type, error, pairs, ipairs, math.min
-- the jitter draws from OpenSSL's generator (session.random16): math.random
-- starts unseeded on Lua 5.1 and LuaJIT, so clients of many processes would
-- retry in step, and the host's own sequence is not ours to move
local random16 = session.random16

local M = {}

-- Reconnection's own steps: functions of this table, not client methods
-- (the client's public table holds only the API); client.lua and the
-- features reach them as reconnect.internal.NAME(c, ...).
local R = {}
M.internal = R
local I = session.internal

session.add_event("unacked")

-- Conditions after which trying again would fail the same way, or fight
-- another client for our resource.
local FATAL = require("lxmpp.stream_error").FATAL

local function check_number(v, name, default)
  if v == nil then return default end
  if type(v) ~= "number" or v <= 0 then error("lxmpp.connect: " .. name .. " must be a positive number", 5) end
  return v
end

function M.install(Client)
  --- Reads the reconnect, keepalive and max_queued options.
  function R.init_reconnect(self)
    local o = self.opts
    local r = o.reconnect
    if r ~= nil and r ~= true and r ~= false and type(r) ~= "table" then
      error("lxmpp.connect: reconnect must be true, false or a table", 4)
    end
    if r ~= false then
      r = type(r) == "table" and r or {}
      self.reconnect_opts = {
        delay = check_number(r.delay, "reconnect.delay", 1),
        max_delay = check_number(r.max_delay, "reconnect.max_delay", 60),
        max_attempts = r.max_attempts ~= nil and check_number(r.max_attempts, "reconnect.max_attempts") or nil,
      }
    end
    if o.keepalive ~= false then self.keepalive = check_number(o.keepalive, "keepalive", 60) end
    self.max_queued = check_number(o.max_queued, "max_queued", 10000)
    if o.resend_unacked ~= nil and type(o.resend_unacked) ~= "boolean" then
      error("lxmpp.connect: resend_unacked must be true or false", 4)
    end
    self.resend_unacked = o.resend_unacked ~= false
    self.offline = fifo.new()             -- { xml, stanza } waiting for the reconnection
    self.unacked_backlog = {}
    self.on_lost = function(msg, cond) return R.link_lost(self, msg, cond) end
  end

  ---------------------------------------------------------------------------
  -- sending

  -- c:send, its output stage (the offline queue while reconnecting) and
  -- write_now are session.lua's: the one way out of a session.

  -- Cuts the link at once and reports it lost (msg, cond): a dead link
  -- (the keepalive, the resend), or close() during the resend.
  local function cut_link(self, reason, msg, cond)
    self.closed_reason = reason
    self.conn:abort()
    I.lost(self, msg, cond)
  end

  -- How long sending what waited for the reconnection waits for a server
  -- that reads none of it: the client's keepalive (a link that makes no
  -- progress for that long is dead), or opts.timeout without one.
  local function drain_limit(self)
    return self.keepalive or self.opts.timeout or require("lxmpp.client").DEFAULT_TIMEOUT
  end

  -- Sends what waited for the reconnection, in order. It waits only while
  -- the server reads slower than we write (wait_drain); the link lost or
  -- close() meanwhile (Client:close) ends that wait at once, and what is
  -- left is reported, or waits for the next session. A server that reads
  -- nothing for drain_limit seconds has a dead link, as a silent one has
  -- (keepalive_tick): it is dropped and reconnected, and the rest goes out
  -- on the next session, still in order (before, it stayed behind in the
  -- queue while later stanzas went out).
  function R.flush_offline(self)
    self.flushing = true
    local q = self.offline
    while q.n > 0 and self.online and not self.closing do
      local item = q:peek()
      local ok, _, cond = I.write_now(self, item[1], item[2])
      if ok then
        q:pop()
      elseif cond ~= "resource-constraint" then
        break
      else
        local limit = drain_limit(self)
        local drained, _, why = self:wait_drain(limit)
        if not drained then
          if why == "timeout" and self.online and not self.closing then
            cut_link(self, "dead link", ("the server read nothing for %.1f seconds: the link is dead"):format(limit),
              "timeout")
          end
          break
        end
      end
    end
    self.flushing = false
  end

  ---------------------------------------------------------------------------
  -- what the server never got

  -- While reconnecting (the old session could not be resumed), the
  -- unacknowledged messages go first in the queue for the new session, in
  -- their order, before what was sent during the reconnection; returns what
  -- is left to report. Requests are not sent again (their callers got an
  -- error), nor presences (the last broadcast one is restored anyway).
  function R.requeue_unacked(self, stanzas)
    if not (self.resend_unacked and self.reconnecting and not self.closing) then return stanzas end
    local again, rest = {}, {}
    for _, s in ipairs(stanzas) do
      if s.name == "message" then again[#again + 1] = s else rest[#rest + 1] = s end
    end
    for i = #again, 1, -1 do
      local s = again[i]
      self.offline:push_front({ I.serialize(self, s), s })
    end
    if #again > 0 then
      self:log("info", "%d unacknowledged message(s) will be sent again on the new session", #again)
    end
    return rest
  end

  --- Hands stanzas the server did not acknowledge to the application.
  function R.report_unacked(self, stanzas, reason, condition)
    stanzas = R.requeue_unacked(self, stanzas)
    if #stanzas == 0 then return end
    self:log("warn", "%d stanza(s) not acknowledged by the server: %s", #stanzas, reason)
    if self.user:has("unacked") then
      self:fire_user("unacked", stanzas, reason, condition)
    else
      local b = self.unacked_backlog
      b[#b + 1] = { stanzas, reason, condition }
    end
  end

  -- Session:on hook: the first "unacked" handler gets what waited for one.
  function Client:on_added(event)
    if event ~= "unacked" or #self.unacked_backlog == 0 then return end
    local b = self.unacked_backlog
    self.unacked_backlog = {}
    for _, r in ipairs(b) do self:fire_user("unacked", r[1], r[2], r[3]) end
  end

  -- The session is over: report its unacknowledged and queued stanzas,
  -- fail its requests.
  function R.end_session(self, reason, condition)
    if self.sm then self.sm:abandon(reason, condition) end
    if self.offline.n > 0 then
      local out = {}
      for _, item in ipairs(self.offline:clear()) do out[#out + 1] = item[2] end
      R.report_unacked(self, out, reason .. " (never sent)", condition)
    end
    I.fail_pending(self, reason, condition)
  end

  ---------------------------------------------------------------------------
  -- losing and regaining the link

  function R.went_online(self)
    self.online = true
    R.start_keepalive(self)
  end

  -- Session:lost calls this (as on_lost); true keeps the pending requests.
  function R.link_lost(self, msg, cond)
    if not self.online then return false end
    self.online = false
    R.stop_keepalive(self)
    -- graceful: a stream error we wrote still goes out (a dead link is
    -- aborted by the keepalive before it gets here)
    if not self.closing and self.conn and not self.conn.closed then self.conn:shutdown() end
    local retry = self.reconnect_opts ~= nil and not self.closing and not FATAL[cond]
    local sm = self.sm
    if sm then sm:link_lost() end
    local keep = retry and sm ~= nil and sm:resumable()
    self.kept = {}
    if keep then
      for id in pairs(self.pending) do self.kept[id] = true end
    end
    if retry then
      self.reconnecting = true
      if sm and not keep then sm:abandon(msg, cond) end
      self.reconnect_task = task.spawn(R.reconnect_loop, self, msg, cond)
    else
      R.end_session(self, msg, cond)
    end
    self:fire_user("disconnected", msg, cond, retry)
    return keep
  end

  local function backoff(r, attempt)
    local d = math_min(r.max_delay, r.delay * 2 ^ (attempt - 1))
    return d * (0.5 + 0.5 * random16() / 65536)
  end

  -- The reconnecting task: wait, try, until back, given up, or closed.
  function R.reconnect_loop(self, msg, cond)
    local r = self.reconnect_opts
    local attempt, ok = 0, nil
    while not self.closing do
      attempt = attempt + 1
      if r.max_attempts and attempt > r.max_attempts then break end
      local w = task.waiter("reconnect")
      self.backoff_waiter = w
      local t = core.timer(backoff(r, attempt), w)
      w.cancel = function() t:stop() end
      w:wait()
      t:stop()
      self.backoff_waiter = nil
      if self.closing then break end
      if self.debug then self:log("debug", "reconnecting (attempt %d)", attempt) end
      local emsg, econd
      -- (self.establishing: close() may end the task anywhere in there)
      self.establishing = true
      ok, emsg, econd = self:establish()
      self.establishing = nil
      if ok and self.closing then self.conn:abort() end
      if ok or self.closing then break end
      msg, cond = emsg, econd
      if FATAL[cond] then break end
    end
    R.reconnect_over(self, ok, msg, cond)
  end

  -- The end of a reconnection (the loop's, or close() cutting an attempt
  -- short): back online, or the session over; close() waiters wake.
  function R.reconnect_over(self, ok, msg, cond)
    self.reconnecting = false
    if ok and not self.closing then
      R.came_back(self)
    elseif self.closing then
      R.end_session(self, "the client was closed while reconnecting", "closed")
    else
      R.end_session(self, msg, cond)
      self:fire_user("disconnected", msg, cond, false)
    end
    local ws = self.reconnect_waiters
    self.reconnect_waiters = nil
    for _, w in ipairs(ws or {}) do w:wake(true) end
  end

  function R.came_back(self)
    if not self.resumed then
      -- replies to requests sent on the old session will not come
      for id in pairs(self.kept or {}) do
        local p = self.pending[id]
        if p then
          self.pending[id] = nil
          p.waiter:wake(nil, "the session could not be resumed", "closed")
        end
      end
      local p = self.last_presence
      if p then
        I.write_now(self, p[1], p[2])
        -- the restored initial presence: the archive catch-up a Bind2
        -- bind made due starts now (features/catchup.lua)
        require("lxmpp.features.catchup").start(self)
      end
    end
    self.kept = nil
    R.went_online(self)
    R.flush_offline(self)
    -- (not when the link was lost or the client closed during the resend:
    -- "disconnected" said so already)
    if self.online and not self.closing then self:fire_user("reconnected", self.resumed) end
  end

  ---------------------------------------------------------------------------
  -- liveness

  function R.start_keepalive(self)
    local ka = self.keepalive
    if not ka then return end
    R.stop_keepalive(self)
    local conn = self.conn
    local target = {}
    function target.wake() R.keepalive_tick(self, conn, target) end
    self.ka_timer = core.timer(ka / 4, target)
  end

  function R.stop_keepalive(self)
    if self.ka_timer then
      self.ka_timer:stop()
      self.ka_timer = nil
    end
  end

  function R.keepalive_tick(self, conn, target)
    self.ka_timer = nil
    if not self.online or self.conn ~= conn or conn.closed then return end
    local ka = self.keepalive
    local idle = core.now() - (self.last_rx or 0)
    if idle >= ka then
      cut_link(self, "dead link", ("nothing from the server for %.1f seconds: the link is dead"):format(idle),
        "timeout")
      return
    end
    if idle >= ka / 2 and self.probed_rx ~= self.last_rx then
      self.probed_rx = self.last_rx
      if self.sm and self.sm.enabled then
        self.sm:request_ack()
      else
        task.spawn(function() self:ping(nil, ka) end)
      end
    end
    self.ka_timer = core.timer(ka / 4, target)
  end

  ---------------------------------------------------------------------------
  -- closing

  -- Nothing left to deliver: every stanza sent acknowledged, none waiting
  -- for the reconnection.
  local function all_acked(self)
    return self.sm:unacked() == 0 and self.offline.n == 0
  end

  --- c:wait_acked([timeout]): waits until the server has acknowledged every
  -- stanza sent so far (XEP-0198). true, or nil, message, condition.
  function Client:wait_acked(timeout)
    if timeout ~= nil and (type(timeout) ~= "number" or timeout <= 0) then
      error("wait_acked: timeout must be a positive number", 2)
    end
    if not self.sm or (self.online and not self.sm.enabled) then
      return nil, "the server does not acknowledge stanzas (no stream management)", "feature-not-implemented"
    end
    if all_acked(self) then return true end
    local deadline = core.now() + (timeout or 30)
    while core.now() < deadline do
      if self.online and not self.flushing and self.sm.enabled then
        if self.sm:wait_acked(deadline - core.now()) and self.offline.n == 0 then return true end
      else
        task.sleep(math_min(0.05, deadline - core.now()))
      end
      if all_acked(self) then return true end
      if self.closing or not (self.online or self.reconnecting) then break end
    end
    if all_acked(self) then return true end
    return nil, "stanzas still unacknowledged", "timeout"
  end

  --- c:close([timeout]): ends the session for good (no reconnection); what
  -- the server has not acknowledged by then goes to "unacked".
  function Client:close(timeout)
    self.closing = true
    -- the first lxmpp.connect under way (lxmpp.shutdown reaches the client
    -- then): cut short as a reconnection's attempt below; the connect
    -- returns nil, message, condition (session.lua I.connect)
    if I.cut_connect(self) then return true end
    if self.reconnecting then
      local w = self.backoff_waiter
      if w then w:wake() end
      if self.conn and not self.conn.closed then self.conn:abort() end
      local rt = self.reconnect_task
      -- (session.lua I.cut_establish, as for a first connection's task)
      if I.cut_establish(self, rt) then
        -- the task's ending is done in its stead
        R.reconnect_over(self, nil)
        -- the "unacked" handlers it started run before
        -- close() returns, as when the task ends the reconnection itself
        if task.running() then task.yield() end
        return true
      end
      if rt and task.alive(rt) then
        local done = task.waiter("close", 1)
        self.reconnect_waiters = self.reconnect_waiters or {}
        self.reconnect_waiters[#self.reconnect_waiters + 1] = done
        done:wait()
      end
      return true
    end
    if self.flushing and self.online then
      -- the reconnection's last phase: what waited for it is being sent,
      -- and the server reads none of it (R.flush_offline waits for it to
      -- drain). Nothing more we write can reach it, not even the end of
      -- our stream: the link is cut, the resend's wait ends, and what the
      -- server did not acknowledge goes to "unacked" (R.end_session) before
      -- close() returns, as when close() ends a reconnection
      cut_link(self, "closed by us", "the client was closed while sending what waited for the reconnection",
        "closed")
      if task.running() then task.yield() end
      return true
    end
    local sm = self.sm
    if self.online and sm and sm.enabled and sm:unacked() > 0 then
      sm:wait_acked(math_min(timeout or 10, 5))
    end
    if sm and sm.enabled and self.conn and not self.conn.closed then
      -- tell the server what we handled, so it does not treat the last
      -- stanzas it sent as lost (and store or bounce them) when we close
      self.conn:write(("<a xmlns='urn:xmpp:sm:3' h='%d'/>"):format(sm.handled))
    end
    return session.Session.close(self, timeout)
  end
  return Client
end

return M
