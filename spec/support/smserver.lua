-- A scripted XMPP server for the stream management and reconnection specs,
-- on lxmpp's own net layer (plain TCP on loopback, so tls = "none"): SASL
-- ANONYMOUS, resource binding and XEP-0198 (enable, resume, <r/>, <a/>),
-- with hooks to misbehave. It records what the client did, one line per
-- event, prefixed with the connection's number ("2 resume h=3").
--
--   local srv = smserver.start{ ... hooks ... }
--   srv.port  srv.log  srv:session()  srv:push(stanza)  srv:kill()  srv:close()
--
-- Hooks (all optional): ack(h) -> the h to put in <a/> (a string), or false
-- to not answer <r/>; count(stanza) -> false to "lose" a stanza (not counted
-- as handled); resumed(sess, previd) -> XML to answer <resume/> with;
-- stanza(conn, s) for anything else; refuse_auth; refuse (accept and close
-- at once); stream_error (sent right after binding); no_sm; no_resume;
-- stop_reading(n) -> true: connection n reads nothing more once stream
-- management is enabled (a server that stalls while the client resends);
-- stall(step, n) -> true: connection n never answers that step of the
-- login ("auth", "bind"); no_close_reply: the client's </stream:stream> is
-- noted ("close") and never answered (a peer that holds a close up);
-- bind_jid(resource, n) -> the full JID to bind (default anon@example.test/resource).

local compat = require "lxmpp.compat"
local net = require "lxmpp.net"
local st = require "lxmpp.stanza"

local NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
local NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
local NS_SM = "urn:xmpp:sm:3"
local HEADER = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' " ..
  "xmlns:stream='http://etherx.jabber.org/streams' from='example.test' id='c%d' version='1.0'>"
local MOD = 4294967296

local M = {}
local started = setmetatable({}, { __mode = "k" })   -- servers not closed yet

local Server = {}
Server.__index = Server

function Server:note(n, fmt, ...)
  self.log[#self.log + 1] = n .. " " .. fmt:format(...)
end

--- The lines of the log that match a pattern.
function Server:grep(pattern)
  local out = {}
  for _, l in ipairs(self.log) do if l:match(pattern) then out[#out + 1] = l end end
  return out
end

--- The current (last enabled or resumed) SM session.
function Server:session() return self.current end

--- Sends a stanza to the client, counted and kept until acknowledged.
function Server:push(s)
  local sess = self.current
  sess.out = (sess.out + 1) % MOD
  sess.outq[#sess.outq + 1] = tostring(s)
  if sess.conn and not sess.conn.closed then sess.conn:write(tostring(s)) end
end

function Server:kill()
  for conn in pairs(self.conns) do if not conn.closed then conn:abort() end end
end

function Server:close()
  self:kill()
  if self.listener then self.listener:close() end
  self.listener = nil
  started[self] = nil
end

local function ack_out(sess, hs)
  local h = tonumber(hs)
  local n = (h - sess.acked) % MOD
  for _ = 1, n do table.remove(sess.outq, 1) end
  sess.acked = h
end

function Server:on_stanza(conn, n, state, s)
  local o = self.opts
  if s.name == "auth" then
    self:note(n, "auth %s", s.attr.mechanism)
    if o.stall and o.stall("auth", n) then return end
    if o.refuse_auth then
      conn:write("<failure xmlns='" .. NS_SASL .. "'><not-authorized/></failure>")
      return
    end
    state.authed = true
    conn:write("<success xmlns='" .. NS_SASL .. "'/>")
    conn:restart()
  elseif s.name == "iq" and s:get_child("bind", NS_BIND) then
    local res = s:get_child("bind", NS_BIND):get_child_text("resource") or "r"
    self:note(n, "bind %s", res)
    if o.stall and o.stall("bind", n) then return end
    state.jid = (o.bind_jid and o.bind_jid(res, n)) or "anon@example.test/" .. res
    conn:send(st.reply(s):tag("bind", { xmlns = NS_BIND }):text_tag("jid", state.jid))
    if o.stream_error then
      conn:write("<stream:error><" .. o.stream_error .. " xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" ..
        "</stream:error></stream:stream>")
      conn:close()
    end
  elseif s.attr.xmlns == NS_SM then
    local sess = state.sess
    if s.name == "enable" then
      self.nsess = self.nsess + 1
      sess = { id = "sm" .. self.nsess, handled = 0, out = 0, acked = 0, outq = {}, conn = conn, jid = state.jid }
      self.sessions[sess.id], state.sess, self.current = sess, sess, sess
      self:note(n, "enable resume=%s", tostring(s.attr.resume))
      conn:write(("<enabled xmlns='%s' id='%s'%s/>"):format(NS_SM, sess.id, o.no_resume and "" or " resume='true'"))
      if o.stop_reading and o.stop_reading(n) then
        self:note(n, "stops reading")
        conn:pause()
      end
    elseif s.name == "resume" then
      self:note(n, "resume previd=%s h=%s", tostring(s.attr.previd), tostring(s.attr.h))
      sess = self.sessions[s.attr.previd]
      local custom = o.resumed and o.resumed(sess, s.attr.previd)
      if custom then
        conn:write(custom)
        if custom:find("<failed") then return end
      elseif not sess then
        conn:write("<failed xmlns='" .. NS_SM .. "'>" ..
          "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>")
        return
      else
        conn:write(("<resumed xmlns='%s' previd='%s' h='%d'/>"):format(NS_SM, sess.id, sess.handled))
      end
      if not sess then return end
      if sess.conn and sess.conn ~= conn and not sess.conn.closed then sess.conn:abort() end
      sess.conn, state.sess, self.current = conn, sess, sess
      ack_out(sess, s.attr.h)
      for _, xml in ipairs(sess.outq) do conn:write(xml) end
    elseif s.name == "r" and sess then
      local h = tostring(sess.handled)
      if o.ack then h = o.ack(h) end
      self:note(n, "r")
      if h then conn:write(("<a xmlns='%s' h='%s'/>"):format(NS_SM, h)) end
    elseif s.name == "a" and sess then
      self:note(n, "a h=%s", s.attr.h)
      ack_out(sess, s.attr.h)
    end
  elseif s.name == "message" or s.name == "iq" or s.name == "presence" then
    local sess = state.sess
    local body = s:get_child_text("body")
    local counted = not (o.count and o.count(s) == false)
    if sess and counted then sess.handled = (sess.handled + 1) % MOD end
    self:note(n, "%s %s%s", s.name, body or s.attr.type or "", counted and "" or " (lost)")
    if o.stanza then o.stanza(conn, s) end
  elseif s.name == "error" then
    self:note(n, "stream-error %s", tostring(s.tags[1] and s.tags[1].name))
    local extra = s:get_child(nil, NS_SM)
    if extra then
      self:note(n, "stream-error-extra %s h=%s send-count=%s", extra.name, tostring(extra.attr.h),
        tostring(extra.attr["send-count"]))
    end
  end
end

function Server:accept(conn)
  self.nconn = self.nconn + 1
  local n = self.nconn
  self.conns[conn] = true
  self.attempts[#self.attempts + 1] = require("lxmpp.core").now()
  if self.opts.refuse then
    conn:abort()
    return
  end
  local state = {}
  conn:on("open", function()
    conn:write(HEADER:format(n))
    if not state.authed then
      conn:write("<stream:features><mechanisms xmlns='" .. NS_SASL .. "'><mechanism>ANONYMOUS</mechanism>" ..
        "</mechanisms></stream:features>")
    else
      conn:write("<stream:features><bind xmlns='" .. NS_BIND .. "'/>" ..
        (self.opts.no_sm and "" or ("<sm xmlns='" .. NS_SM .. "'/>")) .. "</stream:features>")
    end
  end)
  conn:on("stanza", function(s) self:on_stanza(conn, n, state, s) end)
  conn:on("stream-close", function()
    self:note(n, "close")
    if self.opts.no_close_reply then return end
    conn:write("</stream:stream>")
    conn:close()
  end)
  conn:on("eof", function() conn:abort() end)
  conn:on("read-error", function() conn:abort() end)
  conn:on("closed", function() self.conns[conn] = nil end)
  conn:parse()
end

--- smserver.wait_for(cond, seconds): polls (in a task) until cond() is
-- true; false when it is not after that long.
-- (scaled by spec/support/slow.lua under Valgrind).
function M.wait_for(cond, seconds)
  local lxmpp = require "lxmpp"
  local deadline = lxmpp.core.now() + seconds * require("spec.support.slow").factor
  while not cond() do
    if lxmpp.core.now() > deadline then return false end
    lxmpp.sleep(0.01)
  end
  return true
end

--- smserver.start(opts) -> server (listening on 127.0.0.1)
function M.start(opts)
  local self = setmetatable({ opts = opts or {}, log = {}, conns = {}, sessions = {}, nsess = 0, nconn = 0,
    attempts = {} }, Server)
  started[self] = true
  self.listener = assert(net.listen("127.0.0.1", 0, function(conn) self:accept(conn) end))
  self.port = self.listener:port()
  return self
end

--- Client options for this server (ANONYMOUS over loopback), plus extra.
function Server:client_opts(extra)
  local o = { jid = "example.test/r", mechanism = "ANONYMOUS", host = "127.0.0.1", port = self.port,
    tls = "none", reconnect = { delay = 0.01, max_delay = 0.05 }, logger = function() end }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

--- smserver.run(fn): lxmpp.run(fn), its error raised as it is.
-- A spec that fails inside fn must fail, not hang: its clients would
-- reconnect to a server still listening and keep lxmpp.run from returning.
-- So on an error the clients are killed and the servers closed before
-- the error is raised.
function M.run(fn)
  local failure
  local ok, err = pcall(require("lxmpp").run, function()
    local fok, ferr = compat.xpcall(fn, debug.traceback)   -- (compat: fn waits, on 5.1 too)
    if not fok then
      failure = ferr
      require("spec.support.clients").kill_all()
      for srv in pairs(started) do srv:close() end
      require("lxmpp.net").abort_all()
    end
  end)
  if failure then error(failure, 0) end
  if not ok then error(err, 0) end
end

--- smserver.cleanup(): after each spec, ends every client it left and
-- what it left on disk.
function M.cleanup()
  require("spec.support.clients").kill_all()
  require("spec.support.clean")()
end

return M
