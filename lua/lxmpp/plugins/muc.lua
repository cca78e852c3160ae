-- Multi-user chat (XEP-0045) for clients: joining rooms (nickname,
-- password, history), leaving, changing nickname, groupchat and private
-- messages, the subject, and the occupant list with roles and affiliations,
-- kept up to date from the room's presence. The moderation and owner side
-- (kick, ban, roles, affiliations, configuration, invitations) is in
-- lxmpp.plugins.muc_admin, which adds methods to the same Room class.
--
--   local room, msg, cond = c:muc_join("lobby@conference.example.org", "bot",
--     { password = nil, history = { maxstanzas = 0 }, config = nil, timeout = 30 })
--   room:say("hi")  room:private("juliet", "psst")  room:set_subject("news")
--   room:change_nick("bot2")  room:leave("bye")
--   room.occupants[nick] = { nick, role, affiliation, jid, show, status, presence }
--   c:on("muc-message", function(room, m) end)   -- m.nick, m.body, m.delayed, m.self, m.stanza
--   c:on("muc-private", function(room, m) end)
--   c:on("muc-subject", function(room, subject, nick) end)
--   c:on("muc-occupant", function(room, occupant, what, info) end)
--       what: "joined", "left", "changed", "nick" (info.old_nick); for
--       "left", info.reason = "kicked"|"banned"|... as for muc-left
--   c:on("muc-left", function(room, info) end)     -- we were removed: info.reason,
--       info.actor, info.text, info.codes (kicked, banned, affiliation,
--       members-only, shutdown, destroyed, error)
--   c:on("muc-rejoined", function(room, ok, msg, cond) end)
--   c:on("muc-error", function(room, msg, cond, stanza) end)  -- a message refused
--       (a visitor speaking in a moderated room, a subject we may not set)
--
-- Only presence and messages from a room we are in (its bare JID, or an
-- occupant JID of it) touch that room; anything else is left to the
-- ordinary "presence" and "message" events. After a reconnection that did
-- not resume the session (event "reconnected" with resumed false), every
-- joined room is joined again with the same nickname and password.

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local task = require "lxmpp.task"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local session = require "lxmpp.session"

local type, error, pairs, tostring, setmetatable = type, error, pairs, tostring, setmetatable
local math_type = compat.math_type

local NS_MUC = "http://jabber.org/protocol/muc"
local NS_USER = NS_MUC .. "#user"
local NS_DELAY = "urn:xmpp:delay"
local NS_CONFERENCE = "jabber:x:conference"

local M = { NS_MUC = NS_MUC, NS_USER = NS_USER }

-- Occupants a room object tracks (room.occupants) unless muc_join's
-- opts.max_occupants says otherwise: a room (or a server) may announce any
-- number of them. Beyond it, a new occupant's presence is not kept (a
-- warning is logged, no "muc-occupant" event); our own always is.
M.MAX_OCCUPANTS = 10000

local MUC_EVENTS = { "muc-message", "muc-private", "muc-subject", "muc-occupant", "muc-left",
  "muc-invite", "muc-decline", "muc-rejoined", "muc-error" }
for _, e in ipairs(MUC_EVENTS) do session.add_event(e) end

-- Why a departure happened, by status code (XEP-0045 §15.6).
local REASONS = {
  ["301"] = "banned", ["307"] = "kicked", ["321"] = "affiliation", ["322"] = "members-only",
  ["332"] = "shutdown", ["333"] = "error",
}

local Room = {}
Room.__index = Room
M.Room = Room

local function room_jid_of(s, fname)
  local p = type(s) == "string" and jid.prep(s)
  if not p or not jid.node(p) or jid.resource(p) then
    error(fname .. ": invalid room JID " .. tostring(s) .. " (expected room@service)", 3)
  end
  return p
end

local function check_nick(nick, fname)
  if type(nick) ~= "string" or nick == "" or not jid.prep("x@y/" .. nick) then
    error(fname .. ": invalid nickname " .. tostring(nick), 3)
  end
  return jid.resource(jid.prep("x@y/" .. nick))
end

-- The status codes of a room presence or message, as a set, and its
-- muc#user element.
local function user_x(s)
  local x = s:get_child("x", NS_USER)
  local codes = {}
  if x then
    for status in x:childtags("status") do
      if status.attr.code then codes[status.attr.code] = true end
    end
  end
  return x, codes
end

-- What a departure presence says: reason, actor, text, codes.
local function departure(x, codes)
  local info = { codes = codes }
  for code, reason in pairs(REASONS) do
    if codes[code] then info.reason = reason end
  end
  local item = x and x:get_child("item")
  if item then
    local actor = item:get_child("actor")
    info.actor = actor and (actor.attr.nick or actor.attr.jid)
    info.text = item:get_child_text("reason")
  end
  local destroy = x and x:get_child("destroy")
  if destroy then
    info.reason = "destroyed"
    info.text = destroy:get_child_text("reason")
    info.alternate = destroy.attr.jid
  end
  return info
end

-- A pending wait of the room (join, nick change, leave): one at a time.
local function begin(room, kind, nick)
  local w = task.waiter("muc " .. kind, 2)
  room.pending = { kind = kind, nick = nick, waiter = w }
  return w
end

local function finish(room, ...)
  local p = room.pending
  if not p then return end
  room.pending = nil
  p.waiter:wake(...)
end

local function wait(room, w, timeout)
  local t = core.timer(timeout or room.timeout or 30, w)
  local ok, msg, cond = w:wait()
  t:stop()
  if ok == nil and msg == nil then
    if room.pending and room.pending.waiter == w then room.pending = nil end
    return nil, "the room did not answer in time", "timeout"
  end
  return ok, msg, cond
end

-- The presence that enters the room (or, with nick_only, changes nickname).
local function join_presence(room, nick, history, nick_only)
  local p = st.presence({ to = room.jid .. "/" .. nick })
  if room.show then p:text_tag("show", room.show) end
  if room.status then p:text_tag("status", room.status) end
  if nick_only then return p end
  p:tag("x", { xmlns = NS_MUC })
  if history then
    local a = {}
    for _, k in pairs({ "maxstanzas", "maxchars", "seconds" }) do
      if history[k] ~= nil then a[k] = tostring(history[k]) end
    end
    a.since = history.since
    p:tag("history", a):up()
  end
  if room.password then p:text_tag("password", room.password) end
  return p
end

local function check_history(h)
  if h == nil then return end
  if type(h) ~= "table" then error("muc_join: history must be a table", 3) end
  for _, k in pairs({ "maxstanzas", "maxchars", "seconds" }) do
    if h[k] ~= nil and (math_type(h[k]) ~= "integer" or h[k] < 0) then
      error("muc_join: history." .. k .. " must be a non-negative integer", 3)
    end
  end
  if h.since ~= nil and (type(h.since) ~= "string" or not h.since:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d")) then
    error("muc_join: history.since must be an XEP-0082 DateTime string", 3)
  end
end

-- Sends the join presence and waits for our own presence back.
local function enter(room, history, timeout)
  local c = room.client
  local w = begin(room, "join", room.nick)
  local ok, msg, cond = c:send(join_presence(room, room.nick, history))
  if not ok then
    room.pending = nil
    return nil, msg, cond
  end
  return wait(room, w, timeout)
end

--- Room methods -------------------------------------------------------------

--- room:say(body) -> true | nil, msg, cond : a groupchat message
function Room:say(body)
  if type(body) ~= "string" then error("room:say: body must be a string", 2) end
  return self.client:send(st.message({ to = self.jid, type = "groupchat", id = session.new_id() }, body))
end

--- room:private(nick, body): a private message to an occupant
function Room:private(nick, body)
  nick = check_nick(nick, "room:private")
  if type(body) ~= "string" then error("room:private: body must be a string", 2) end
  return self.client:send(st.message({ to = self.jid .. "/" .. nick, type = "chat", id = session.new_id() }, body)
    :tag("x", { xmlns = NS_USER }):up())
end

--- room:set_subject(subject): the server answers with the subject message
-- (event muc-subject), or an error if we may not change it.
function Room:set_subject(subject)
  if type(subject) ~= "string" then error("room:set_subject: subject must be a string", 2) end
  return self.client:send(st.message({ to = self.jid, type = "groupchat", id = session.new_id() })
    :text_tag("subject", subject))
end

--- room:change_nick(nick [, timeout]) -> true | nil, message, condition
-- ("conflict" when the nickname is taken)
function Room:change_nick(nick, timeout)
  nick = check_nick(nick, "room:change_nick")
  if not self.joined then return nil, "not in the room", "not-acceptable" end
  if self.pending then return nil, "another request to the room is in progress", "resource-constraint" end
  if nick == self.nick then return true end
  local w = begin(self, "nick", nick)
  local ok, msg, cond = self.client:send(join_presence(self, nick, nil, true))
  if not ok then
    self.pending = nil
    return nil, msg, cond
  end
  return wait(self, w, timeout)
end

--- room:leave([status [, timeout]]) -> true | nil, message, condition
function Room:leave(status, timeout)
  if status ~= nil and type(status) ~= "string" then error("room:leave: status must be a string", 2) end
  local c = self.client
  if not self.joined then
    c.muc.rooms[self.jid] = nil
    return true
  end
  local w = begin(self, "leave", self.nick)
  local p = st.presence({ to = self.jid .. "/" .. self.nick, type = "unavailable" })
  if status then p:text_tag("status", status) end
  local ok, msg, cond = c:send(p)
  if ok then ok, msg, cond = wait(self, w, timeout) end
  self.pending = nil
  self.joined = false
  if c.muc.rooms[self.jid] == self then c.muc.rooms[self.jid] = nil end
  return ok, msg, cond
end

--- room:occupant(nick) -> the occupant table or nil
function Room:occupant(nick)
  return self.occupants[nick]
end

--- Incoming stanzas ----------------------------------------------------------

-- Sets (occ) or removes (nil) room.occupants[nick], counting them.
local function put_occupant(room, nick, occ)
  local had = room.occupants[nick] ~= nil
  if occ == nil and had then
    room.noccupants = room.noccupants - 1
  elseif occ ~= nil and not had then
    room.noccupants = room.noccupants + 1
  end
  room.occupants[nick] = occ
end

-- We are out of the room (kicked, banned, destroyed, ...).
local function removed(room, info)
  local c = room.client
  room.joined = false
  if c.muc.rooms[room.jid] == room then c.muc.rooms[room.jid] = nil end
  if room.pending and room.pending.kind == "leave" then
    finish(room, true)
  elseif room.pending then
    finish(room, nil, "removed from the room (" .. tostring(info.reason) .. ")", "not-allowed")
  else
    c:fire_user("muc-left", room, info)
  end
end

local function on_presence(c, room, s, nick)
  local typ = s.attr.type
  if typ == "error" then
    local p = room.pending
    if p and (nick == nil or nick == p.nick) then
      local _, cond, text = s:get_error()
      finish(room, nil, text or cond or "error", cond or "undefined-condition")
    end
    return
  end
  if not nick then return end                    -- presence from the room itself: nothing for us
  local x, codes = user_x(s)
  if not x then return end                       -- not a MUC presence: ignore
  local item = x:get_child("item")
  local is_self = codes["110"] == true
  if typ == "unavailable" then
    local occ = room.occupants[nick]
    if codes["303"] and item and item.attr.nick then
      local new = jid.prep("x@y/" .. item.attr.nick) and jid.resource(jid.prep("x@y/" .. item.attr.nick))
      if not new then return end
      put_occupant(room, nick, nil)
      if occ then
        occ.nick = new
        put_occupant(room, new, occ)
      end
      if is_self then
        room.nick = new
      elseif occ and room.joined then
        c:fire_user("muc-occupant", room, occ, "nick", { old_nick = nick })
      end
      return
    end
    put_occupant(room, nick, nil)
    if is_self then
      removed(room, departure(x, codes))
    elseif occ and room.joined then
      c:fire_user("muc-occupant", room, occ, "left", departure(x, codes))
    end
    return
  end
  if typ ~= nil then return end
  local occ, new = room.occupants[nick], false
  if not occ then
    if room.noccupants >= room.max_occupants and not is_self then
      if not room.full_warned then      -- once per join: a room could make the log grow instead
        room.full_warned = true
        c:log("warn", "%s: more than %d occupants: not keeping the state of new ones", room.jid, room.max_occupants)
      end
      return
    end
    occ, new = { nick = nick }, true
    put_occupant(room, nick, occ)
  end
  occ.role = item and item.attr.role or occ.role or "none"
  occ.affiliation = item and item.attr.affiliation or occ.affiliation or "none"
  occ.jid = item and item.attr.jid and jid.prep(item.attr.jid) or occ.jid
  occ.show = s:get_child_text("show")
  occ.status = s:get_child_text("status")
  occ.presence = s
  if is_self then
    room.self = occ
    room.nick = nick
    if codes["201"] then room.created = true end
    local p = room.pending
    if p and (p.kind == "join" or p.kind == "nick") then
      room.joined = true
      finish(room, true)
    end
  elseif room.joined then
    c:fire_user("muc-occupant", room, occ, new and "joined" or "changed")
  end
end

local function on_message(c, room, s, nick)
  local typ = s.attr.type
  if typ == "error" then
    local _, cond, text = s:get_error()
    c:fire_user("muc-error", room, text or cond or "error", cond or "undefined-condition", s)
    return
  end
  local x = s:get_child("x", NS_USER)
  if typ == "groupchat" then
    local subject = s:get_child_text("subject")
    local body = s:get_child_text("body")
    if subject and not body then
      room.subject, room.subject_by = subject, nick
      c:fire_user("muc-subject", room, subject, nick, s)
    elseif body then
      c:fire_user("muc-message", room, {
        nick = nick, body = body, stanza = s, self = nick ~= nil and nick == room.nick,
        delayed = s:get_child("delay", NS_DELAY) ~= nil,
      })
    end
  elseif nick and x then
    local body = s:get_child_text("body")
    if body then c:fire_user("muc-private", room, { nick = nick, body = body, stanza = s }) end
  elseif not nick and x and x:get_child("decline") then
    local d = x:get_child("decline")
    c:fire_user("muc-decline", room,
      { from = d.attr.from and jid.prep(d.attr.from), reason = d:get_child_text("reason") })
  end
end

-- Invitations reach us from rooms we are not in (mediated, §7.8.2) or
-- from a user (direct, XEP-0249).
local function on_invite(c, s, from)
  local x = s:get_child("x", NS_USER)
  local inv = x and x:get_child("invite")
  if inv then
    if jid.resource(from) or not jid.node(from) then return end
    c:fire_user("muc-invite", {
      room = from, from = inv.attr.from and jid.prep(inv.attr.from) or nil,
      reason = inv:get_child_text("reason"), password = x:get_child_text("password"), direct = false, stanza = s,
    })
    return true
  end
  local d = s:get_child("x", NS_CONFERENCE)
  if d then
    local room = d.attr.jid and jid.prep(d.attr.jid)
    if not room or not jid.node(room) or jid.resource(room) then return end
    c:fire_user("muc-invite", {
      room = room, from = from, reason = d.attr.reason, password = d.attr.password, direct = true, stanza = s,
    })
    return true
  end
end

local function rejoin_all(c)
  for _, room in pairs(c.muc.rooms) do
    if room.joined then
      room.joined, room.occupants, room.noccupants, room.full_warned, room.pending = false, {}, 0, nil, nil
      task.spawn(function()
        local ok, msg, cond = enter(room, room.rejoin_history or { maxstanzas = 0 })
        if not ok and c.muc.rooms[room.jid] == room then c.muc.rooms[room.jid] = nil end
        c:fire_user("muc-rejoined", room, ok == true, msg, cond)
      end)
    end
  end
end

--- The plugin object -----------------------------------------------------------

-- c.muc (docs/api.md "Plugins"): .rooms is { [room jid] = room } of the
-- rooms joined or being joined.
M.forwards = { muc_join = "join", muc_room = "room" }
M.events = MUC_EVENTS

--- c.muc:join(room_jid, nick [, opts]) -> room | nil, message, condition (c:muc_join)
function M:join(room_jid, nick, opts)
  room_jid = room_jid_of(room_jid, "muc_join")
  nick = check_nick(nick, "muc_join")
  opts = opts or {}
  if type(opts) ~= "table" then error("muc_join: opts must be a table", 2) end
  if opts.password ~= nil and type(opts.password) ~= "string" then error("muc_join: password must be a string", 2) end
  check_history(opts.history)
  local max = opts.max_occupants
  if max ~= nil and (math_type(max) ~= "integer" or max < 1) then
    error("muc_join: max_occupants must be a positive integer", 2)
  end
  if opts.config ~= nil and type(opts.config) ~= "table" and type(opts.config) ~= "boolean" then
    error("muc_join: config must be a table of values, true or false", 2)
  end
  local rooms = self.rooms
  local existing = rooms[room_jid]
  if existing then
    if existing.joined and existing.nick == nick then return existing end
    return nil, "already in " .. room_jid .. " (or joining it) as " .. tostring(existing.nick), "conflict"
  end
  local room = setmetatable({
    client = self.client, jid = room_jid, nick = nick, password = opts.password, occupants = {}, noccupants = 0,
    max_occupants = max or M.MAX_OCCUPANTS,
    joined = false, created = false, timeout = opts.timeout, show = opts.show, status = opts.status,
    rejoin_history = opts.rejoin_history,
  }, Room)
  rooms[room_jid] = room
  local ok, msg, cond = enter(room, opts.history, opts.timeout)
  if not ok then
    if rooms[room_jid] == room then rooms[room_jid] = nil end
    return nil, msg, cond
  end
  if room.created and opts.config ~= false and room.configure then
    ok, msg, cond = room:configure(type(opts.config) == "table" and opts.config or {})
    if not ok then return nil, "the room was created but not configured: " .. tostring(msg), cond end
  end
  return room
end

--- c.muc:room(room_jid) -> the joined room, or nil (c:muc_room)
function M:room(room_jid)
  local p = type(room_jid) == "string" and jid.prep(room_jid)
  return p and self.rooms[p] or nil
end

function M:init(c)
  local rooms = {}
  self.rooms = rooms
  -- what rooms we are in send us
  c.bus:add("stanza-in", function(s)
    if (s.name ~= "presence" and s.name ~= "message") or next(rooms) == nil then return end
    local from = s.attr.from and jid.prep(s.attr.from)
    if not from then return end
    local room = rooms[jid.bare(from)]
    if not room then return end
    if s.name == "presence" then on_presence(c, room, s, jid.resource(from))
    else on_message(c, room, s, jid.resource(from)) end
  end)
  -- invitations, from rooms we are not in or from users
  local last            -- a stanza with both kinds of invitation is one
  local function invite(s)
    if s == last or s.attr.type == "error" or s.attr.type == "groupchat" then return end
    last = s
    local from = s.attr.from and jid.prep(s.attr.from)
    if not from or rooms[jid.bare(from)] then return end
    on_invite(c, s, from)
  end
  c:hook_child("message", NS_USER, invite)
  c:hook_child("message", NS_CONFERENCE, invite)
  c:on("reconnected", function(resumed)
    if not resumed then rejoin_all(c) end
  end)
end

return M
