-- lxmpp.server.muc_room: one XEP-0045 room of the embedded server's MUC
-- service (lxmpp.server.muc): occupants and their presence, groupchat and
-- private messages, subject, discussion history. The muc#admin and
-- muc#owner use cases (roles, affiliations, configuration, destruction) are
-- in lxmpp.server.muc_admin, installed on the same Room class.
--
-- A room holds:
--   occupants[nick] = { nick=, bare=, role=, jids = { full JIDs, in join
--     order }, presence = { [full] = presence }, primary = full JID whose
--     presence the room shows }      (one nick may be used from several
--     sessions of one bare JID)
--   sessions[full real JID] = occupant
--   affiliations[bare JID] = "owner" | "admin" | "member" | "outcast"
--   config (see DEFAULTS), subject, subject_from (nick), history (bounded;
--   lxmpp.server.muc_history)
-- Everything is reached through the service (room.service): its srv for
-- routing and storage, its limits and clock.

local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"

local type, pairs, ipairs, setmetatable, tostring = type, pairs, ipairs, setmetatable, tostring
local remove = table.remove

local NS_MUC = "http://jabber.org/protocol/muc"
local NS_USER = NS_MUC .. "#user"

local AFFILIATION_RANK = { outcast = 0, none = 1, member = 2, admin = 3, owner = 4 }
local ROLE_RANK = { none = 0, visitor = 1, participant = 2, moderator = 3 }

-- The configuration of a new room. Types matter: restore() keeps a stored
-- value only when it has the type of the default.
local DEFAULTS = {
  name = "", description = "", persistent = false, public = true, members_only = false,
  moderated = false, password_protected = false, password = "", whois = "moderators",
  max_users = 0, -- 0: only the service's own cap
  change_subject = false, allow_pm = "anyone",
}

local Room = {}
Room.__index = Room

local function new(service, room_jid)
  local config = {}
  for k, v in pairs(DEFAULTS) do config[k] = v end
  return setmetatable({
    service = service, srv = service.srv, jid = room_jid, config = config,
    affiliations = {}, occupants = {}, sessions = {}, count = 0,
    history = {}, history_bytes = 0,
  }, Room)
end

--- Helpers ---------------------------------------------------------------

function Room:affiliation(bare)
  return self.affiliations[bare] or "none"
end

-- The role an occupant with this affiliation gets on entering.
function Room:default_role(affiliation)
  if AFFILIATION_RANK[affiliation] >= AFFILIATION_RANK.admin then return "moderator" end
  if self.config.moderated and affiliation == "none" then return "visitor" end
  return "participant"
end

function Room:occupant_jid(nick)
  return self.jid .. "/" .. nick
end

-- An error reply to `stanza` (never to an error), routed at once.
function Room:reply_error(stanza, etype, condition, text)
  if stanza.attr.type == "error" then return end
  self.srv:route(st.error_reply(stanza, etype, condition, text))
end

-- Sends a copy of `s` to every session of occupant `occ` (or only `only`).
function Room:send_to(occ, s, only)
  for _, full in ipairs(occ.jids) do
    if only == nil or only == full then
      local c = s:clone()
      c.attr.to = full
      self.srv:route(c)
    end
  end
end

function Room:broadcast(s)
  for _, occ in pairs(self.occupants) do self:send_to(occ, s) end
end

-- The service's persistent copy of the room: written when the room is
-- persistent, removed when it is not (any more).
function Room:save()
  if self.config.persistent and not self.destroyed then
    local config, affiliations = {}, {}
    for k, v in pairs(self.config) do config[k] = v end
    for k, v in pairs(self.affiliations) do affiliations[k] = v end
    self.service:store_room(self.jid, { config = config, affiliations = affiliations,
      subject = self.subject, subject_from = self.subject_from, creator = self.creator })
    self.stored = true
  elseif self.stored then
    self.service:store_room(self.jid, nil)
    self.stored = false
  end
end

-- A room as restore_room() finds it in the store; bad values are skipped.
local function restore(service, room_jid, data)
  local room = new(service, room_jid)
  if type(data.config) == "table" then
    for k, v in pairs(data.config) do
      if DEFAULTS[k] ~= nil and type(v) == type(DEFAULTS[k]) then room.config[k] = v end
    end
  end
  if type(data.affiliations) == "table" then
    for bare, a in pairs(data.affiliations) do
      if type(bare) == "string" and AFFILIATION_RANK[a] and a ~= "none" then room.affiliations[bare] = a end
    end
  end
  if type(data.subject) == "string" then room.subject = data.subject end
  if type(data.subject_from) == "string" then room.subject_from = data.subject_from end
  if type(data.creator) == "string" then room.creator = data.creator end
  room.config.persistent, room.stored = true, true
  return room
end

--- Presence --------------------------------------------------------------

-- A presence from the occupant JID of `occ`, carrying what its client sent
-- (show, status, priority, extensions) without the client's own MUC
-- elements, and the <x xmlns=muc#user/> the room adds.
--   opts: type, show_jid, self (adds 110), codes (array), nick (for 303),
--         actor (nick), reason, affiliation / role (override), destroy (an element)
function Room:presence_of(occ, opts)
  local base = opts.type ~= "unavailable" and occ.presence[occ.primary] or nil
  local p = st.presence({ from = self:occupant_jid(occ.nick), type = opts.type })
  if base then
    for _, child in ipairs(base) do
      if type(child) == "table" then p:add_direct_child(child:clone()) end
    end
  elseif opts.status then
    p:add_direct_child(opts.status:clone())
  end
  p:tag("x", { xmlns = NS_USER })
  p:tag("item", {
    affiliation = opts.affiliation or self:affiliation(occ.bare),
    role = opts.role or occ.role,
    jid = opts.show_jid and occ.primary or nil,
    nick = opts.nick,
  })
  if opts.actor then p:tag("actor", { nick = opts.actor }):up() end
  if opts.reason then p:text_tag("reason", opts.reason) end
  p:up()
  if opts.destroy then p:add_child(opts.destroy) end
  if opts.self then p:tag("status", { code = "110" }):up() end
  for _, code in ipairs(opts.codes or {}) do p:tag("status", { code = code }):up() end
  return p
end

-- May `viewer` see real JIDs?
function Room:sees_jids(viewer)
  return self.config.whois == "anyone" or viewer.role == "moderator"
end

-- Tells every occupant about `occ` (its presence, with `opts` as for
-- presence_of); occ itself gets 110 and opts.self_codes. If occ has left
-- (no longer in occupants), it still gets its own copy, on `only` session
-- if given.
function Room:broadcast_presence(occ, opts, only)
  local self_opts = {}
  for k, v in pairs(opts) do self_opts[k] = v end
  self_opts.self, self_opts.show_jid = true, true
  if opts.self_codes then
    local codes = {}
    for _, c in ipairs(opts.codes or {}) do codes[#codes + 1] = c end
    for _, c in ipairs(opts.self_codes) do codes[#codes + 1] = c end
    self_opts.codes = codes
  end
  local shown, hidden
  for _, viewer in pairs(self.occupants) do
    if viewer ~= occ then
      opts.show_jid = self:sees_jids(viewer)
      local p
      if opts.show_jid then
        shown = shown or self:presence_of(occ, opts)
        p = shown
      else
        hidden = hidden or self:presence_of(occ, opts)
        p = hidden
      end
      self:send_to(viewer, p)
    end
  end
  self:send_to(occ, self:presence_of(occ, self_opts), only)
end

-- The client's presence as the room keeps it: its children minus the MUC
-- join element and anything in the muc#user namespace.
local function strip(stanza)
  local p = st.presence({})
  for _, child in ipairs(stanza.tags) do
    local ns = child.attr.xmlns
    if ns ~= NS_MUC and ns ~= NS_USER then p:add_direct_child(child:clone()) end
  end
  return p
end

local function is_nick_visible(nick)
  return nick:find("[^ ]") ~= nil
end

-- strip(stanza), or nil when what the room would keep of it is more than
-- max_presence_bytes: the room keeps each session's presence as long as
-- the session is in, and sends it to everyone who enters.
function Room:kept_presence(stanza)
  local p = strip(stanza)
  if #tostring(p) > self.service.limits.max_presence_bytes then return nil end
  return p
end

function Room:presence_too_big(stanza)
  return self:reply_error(stanza, "modify", "policy-violation",
    ("this room keeps at most %d bytes of presence per session (max_presence_bytes)")
      :format(self.service.limits.max_presence_bytes))
end

-- Presence from `from` to room/nick (nick prepped; nil if none was given).
function Room:handle_presence(stanza, nick)
  local from, ptype = stanza.attr.from, stanza.attr.type
  local occ = self.sessions[from]
  if ptype == "unavailable" then
    if occ then self:leave(occ, from, { status = stanza:get_child("status") }) end
    return
  elseif ptype == "error" then
    -- a bounce of something we sent: the session is gone (a "ghost")
    if occ then self:leave(occ, from, { codes = { "333" } }) end
    return
  elseif ptype ~= nil then
    return -- probes and subscriptions are not joins (XEP-0045 §18.2)
  end
  if not nick then
    return self:reply_error(stanza, "modify", "jid-malformed", "a room nickname is required")
  elseif not is_nick_visible(nick) then
    return self:reply_error(stanza, "modify", "not-acceptable", "invisible nicknames are not allowed")
  end
  local kept = self:kept_presence(stanza)
  if not kept then return self:presence_too_big(stanza) end   -- an occupant keeps its last one
  if not occ then return self:join(stanza, nick, from, kept) end
  if occ.nick ~= nick then return self:change_nick(stanza, occ, nick, from, kept) end
  occ.presence[from], occ.primary = kept, from
  local x = stanza:get_child("x", NS_MUC)
  if x then -- a join from a session already in: a full resynchronisation
    return self:send_join_state(occ, from, x, {})
  end
  self:broadcast_presence(occ, {})
end

-- Why `from` (affiliation `aff`) may not enter as `nick`: etype, condition,
-- text; or nil.
function Room:join_refusal(stanza, nick, bare, aff)
  local existing = self.occupants[nick]
  local limits = self.service.limits
  if aff == "outcast" then
    return "auth", "forbidden", "you are banned from this room"
  elseif self.locked and aff ~= "owner" then
    return "cancel", "item-not-found", "this room is locked until its owner configures it"
  elseif existing and existing.bare ~= bare then
    return "cancel", "conflict", "this nickname is in use"
  elseif self.config.members_only and AFFILIATION_RANK[aff] < AFFILIATION_RANK.member then
    return "auth", "registration-required", "this room is for members only"
  end
  if self.config.password_protected then
    local x = stanza:get_child("x", NS_MUC)
    if not x or x:get_child_text("password") ~= self.config.password then
      return "auth", "not-authorized", "a password is required"
    end
  end
  if existing then
    if #existing.jids >= limits.max_sessions then
      return "wait", "resource-constraint", "too many sessions with this nickname"
    end
    return nil
  end
  local etype, cond, text = self.service:join_quota(bare)
  if etype then return etype, cond, text end
  local max = limits.max_occupants
  if self.config.max_users > 0 and self.config.max_users < max and AFFILIATION_RANK[aff] < AFFILIATION_RANK.admin then
    max = self.config.max_users
  end
  if self.count >= max then
    return "wait", "service-unavailable", "this room is full"
  end
  return nil
end

function Room:join(stanza, nick, from, kept)
  local bare = jid.bare(from)
  local aff = self:affiliation(bare)
  local etype, condition, text = self:join_refusal(stanza, nick, bare, aff)
  if etype then return self:reply_error(stanza, etype, condition, text) end
  local occ = self.occupants[nick]
  if not occ then
    occ = { nick = nick, bare = bare, role = self:default_role(aff), jids = {}, presence = {} }
    self.occupants[nick] = occ
    self.count = self.count + 1
    self.service:count_joined(bare, 1)
  end
  occ.jids[#occ.jids + 1] = from
  occ.presence[from], occ.primary = kept, from
  self.sessions[from] = occ
  local self_codes = {}
  if self.just_created then
    self.just_created = nil
    self_codes[#self_codes + 1] = "201"
  end
  self:send_join_state(occ, from, stanza:get_child("x", NS_MUC), self_codes)
end

-- What a session gets on entering: the other occupants' presence, its own
-- presence (broadcast to all, its own copy last), the history, the subject.
function Room:send_join_state(occ, from, x, self_codes)
  local see = self:sees_jids(occ)
  for _, other in pairs(self.occupants) do
    if other ~= occ then
      self:send_to(occ, self:presence_of(other, { show_jid = see }), from)
    end
  end
  if self.config.whois == "anyone" then self_codes[#self_codes + 1] = "100" end
  self:broadcast_presence(occ, { self_codes = self_codes })
  self:send_history(occ, from, x and x:get_child("history"))
  local subject = st.message({ from = self.subject_from and self:occupant_jid(self.subject_from) or self.jid,
    type = "groupchat" }):text_tag("subject", self.subject or "")
  self:send_to(occ, subject, from)
end

function Room:change_nick(stanza, occ, nick, from, kept)
  if #occ.jids > 1 then
    return self:reply_error(stanza, "modify", "not-acceptable",
      "this nickname is in use from several sessions: leave from the others first")
  elseif self.occupants[nick] then
    return self:reply_error(stanza, "cancel", "conflict", "this nickname is in use")
  end
  self:broadcast_presence(occ, { type = "unavailable", nick = nick, codes = { "303" } })
  self.occupants[occ.nick] = nil
  occ.nick = nick
  self.occupants[nick] = occ
  occ.presence[from] = kept
  self:broadcast_presence(occ, {})
end

-- Session `from` of occ leaves (opts as for presence_of: status, codes...).
function Room:leave(occ, from, opts)
  for i, full in ipairs(occ.jids) do
    if full == from then remove(occ.jids, i) break end
  end
  occ.presence[from] = nil
  self.sessions[from] = nil
  opts.type, opts.role = "unavailable", "none"
  if #occ.jids > 0 then
    -- the occupant stays: only this session is told it is out
    local p = self:presence_of(occ, { type = "unavailable", role = "none", self = true, show_jid = true })
    p.attr.to = from
    self.srv:route(p)
    if occ.primary == from then
      occ.primary = occ.jids[#occ.jids]
      self:broadcast_presence(occ, {})
    end
    return
  end
  self.occupants[occ.nick] = nil
  self.count = self.count - 1
  self.service:count_joined(occ.bare, -1)
  occ.jids = { from }
  self:broadcast_presence(occ, opts)
  occ.jids = {}
  self:maybe_dispose()
end

-- Removes occupant occ entirely (kick, ban, lost membership): everyone is
-- told, occ too; opts as for presence_of.
function Room:remove_occupant(occ, opts)
  local jids = occ.jids
  for _, full in ipairs(jids) do self.sessions[full] = nil end
  self.occupants[occ.nick] = nil
  self.count = self.count - 1
  self.service:count_joined(occ.bare, -1)
  opts.type, opts.role = "unavailable", "none"
  self:broadcast_presence(occ, opts)
  occ.jids, occ.presence = {}, {}
end

-- A temporary room ends with its last occupant.
function Room:maybe_dispose()
  if self.count == 0 and not self.config.persistent then
    self.service:remove_room(self)
  end
end

--- Messages --------------------------------------------------------------

function Room:handle_message(stanza, nick)
  local from, mtype = stanza.attr.from, stanza.attr.type
  if mtype == "error" then
    local occ = self.sessions[from]
    if occ then self:leave(occ, from, { codes = { "333" } }) end
    return
  end
  if nick then return self:private_message(stanza, nick) end
  if mtype == "groupchat" then return self:groupchat(stanza) end
  local x = stanza:get_child("x", NS_USER)
  if x and x:get_child("invite") then return self:invite(stanza, x) end
  if x and x:get_child("decline") then return self:decline(stanza, x) end
  return self:reply_error(stanza, "modify", "bad-request", "messages to the room must be of type groupchat")
end

function Room:groupchat(stanza)
  local occ = self.sessions[stanza.attr.from]
  if not occ then
    return self:reply_error(stanza, "modify", "not-acceptable", "only occupants may send messages to the room")
  elseif occ.role == "visitor" then
    return self:reply_error(stanza, "auth", "forbidden", "visitors may not speak in a moderated room")
  end
  local msg = stanza:clone()
  msg.attr.from, msg.attr.to = self:occupant_jid(occ.nick), nil
  msg:remove_children("x", NS_USER)
  if self.service.archive then self.service.archive:groupchat(self, msg, occ) end -- XEP-0313 (muc_mam)
  local subject = stanza:get_child("subject")
  if subject and not stanza:get_child("body") then
    if not (occ.role == "moderator" or (self.config.change_subject and occ.role == "participant")) then
      return self:reply_error(stanza, "auth", "forbidden", "you may not change the subject")
    end
    self.subject, self.subject_from = subject:get_text() or "", occ.nick
    self:save()
  elseif stanza:get_child("body") then
    self:add_history(msg)
  end
  self:broadcast(msg)
end

local PM_ALLOWED = {
  anyone = ROLE_RANK.visitor, participants = ROLE_RANK.participant, moderators = ROLE_RANK.moderator,
  none = ROLE_RANK.moderator + 1,
}

function Room:private_message(stanza, nick)
  local occ = self.sessions[stanza.attr.from]
  if stanza.attr.type == "groupchat" then
    return self:reply_error(stanza, "modify", "bad-request", "groupchat messages go to the room, not to an occupant")
  elseif not occ then
    return self:reply_error(stanza, "modify", "not-acceptable", "only occupants may send private messages")
  elseif ROLE_RANK[occ.role] < PM_ALLOWED[self.config.allow_pm] then
    return self:reply_error(stanza, "auth", "forbidden", "private messages are not allowed for your role")
  end
  local target = self.occupants[nick]
  if not target then
    return self:reply_error(stanza, "cancel", "item-not-found", "no occupant with this nickname")
  end
  local msg = stanza:clone()
  msg.attr.from = self:occupant_jid(occ.nick)
  msg:remove_children("x", NS_USER)
  msg:tag("x", { xmlns = NS_USER }):up()
  self:send_to(target, msg)
end

-- Mediated invitation (XEP-0045 §7.8.2): forwarded from the room, and
-- remembered (remember_invitation) so that the invitee may decline it once.
function Room:invite(stanza, x)
  local occ = self.sessions[stanza.attr.from]
  local aff = self:affiliation(jid.bare(stanza.attr.from))
  if not occ then
    return self:reply_error(stanza, "modify", "not-acceptable", "only occupants may invite")
  elseif self.config.members_only and AFFILIATION_RANK[aff] < AFFILIATION_RANK.admin then
    return self:reply_error(stanza, "auth", "forbidden", "only admins may invite to a members-only room")
  end
  local invite = x:get_child("invite")
  local to = invite.attr.to and jid.prep(invite.attr.to)
  if not to then return self:reply_error(stanza, "modify", "jid-malformed", "invalid invitee") end
  -- §7.8.2: a members-only room MAY add the invitee to the member list,
  -- and this one does (an invitation the invitee could not use is worth
  -- nothing); with max_affiliations reached the invitation is refused,
  -- as the muc#admin request adding that member would be, and not sent
  local adds = self.config.members_only and self:affiliation(jid.bare(to)) == "none"
  if adds and self:affiliation_count() >= self.service.limits.max_affiliations then
    return self:reply_error(stanza, "wait", "resource-constraint",
      "the member list is full (max_affiliations): the invitee could not enter")
  end
  local m = st.message({ from = self.jid, to = to })
  m:tag("x", { xmlns = NS_USER }):tag("invite", { from = stanza.attr.from })
  local reason = invite:get_child_text("reason")
  if reason then m:text_tag("reason", reason) end
  m:up()
  if self.config.password_protected then m:text_tag("password", self.config.password) end
  -- an admin's invitation to a members-only room makes the invitee a member
  if adds then
    self.affiliations[jid.bare(to)] = "member"
    self:save()
  end
  self:remember_invitation(jid.bare(to), stanza.attr.from)
  self.srv:route(m)
end

-- The invitations the room forwarded and nobody declined yet, oldest
-- first: { invitee = bare JID, inviter = full JID }, at most
-- limits.max_pending_invitations (the oldest forgotten first); the same
-- invitee and inviter (bare) hold one entry, the latest.
function Room:remember_invitation(invitee, inviter)
  local list = self.invitations or {}
  self.invitations = list
  local inviter_bare = jid.bare(inviter)
  for i, inv in ipairs(list) do
    if inv.invitee == invitee and jid.bare(inv.inviter) == inviter_bare then remove(list, i) break end
  end
  local max = self.service.limits.max_pending_invitations
  while #list > 0 and #list >= max do remove(list, 1) end
  if max > 0 then list[#list + 1] = { invitee = invitee, inviter = inviter } end
end

-- Takes (forgets) the pending invitation of `invitee` from `to` (the
-- inviter, bare or full; nil: the latest invitation of invitee); returns
-- it, or nil.
function Room:take_invitation(invitee, to)
  local list = self.invitations or {}
  local to_bare = to and jid.bare(to)
  for i = #list, 1, -1 do
    local inv = list[i]
    if inv.invitee == invitee and (to == nil or jid.bare(inv.inviter) == to_bare) then
      remove(list, i)
      return inv
    end
  end
end

-- A declined invitation goes back to the inviter, from the room: only from
-- an invitee the room has a pending invitation for, to that inviter, once
-- (otherwise the room's address would relay anyone's messages to anyone).
-- A decline without a 'to' goes to the inviter of the latest invitation.
function Room:decline(stanza, x)
  local decline = x:get_child("decline")
  local to = decline.attr.to
  if to then
    to = jid.prep(to)
    if not to then return self:reply_error(stanza, "modify", "jid-malformed", "invalid inviter") end
  end
  local invitee = jid.bare(stanza.attr.from)
  local inv = self:take_invitation(invitee, to)
  if not inv then
    return self:reply_error(stanza, "modify", "not-acceptable",
      "this room has no pending invitation for you" .. (to and " from " .. to or ""))
  end
  local m = st.message({ from = self.jid, to = to or inv.inviter })
  m:tag("x", { xmlns = NS_USER }):tag("decline", { from = invitee })
  local reason = decline:get_child_text("reason")
  if reason then m:text_tag("reason", reason) end
  self.srv:route(m)
end

local M = {
  new = new, restore = restore, Room = Room, DEFAULTS = DEFAULTS,
  AFFILIATION_RANK = AFFILIATION_RANK, ROLE_RANK = ROLE_RANK,
  NS_MUC = NS_MUC, NS_USER = NS_USER,
}
require("lxmpp.server.muc_history").install(Room)
require("lxmpp.server.muc_admin").install(M)
return M
