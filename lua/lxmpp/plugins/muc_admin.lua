-- Multi-user chat (XEP-0045) moderation, administration and ownership for
-- clients, as methods of the rooms lxmpp.plugins.muc joins, plus
-- invitations (mediated, XEP-0045 §7.8.2, and direct, XEP-0249).
--
--   room:kick(nick [, reason])               role none          (§8.2)
--   room:set_role(nick, role [, reason])     visitor/participant/moderator
--   room:ban(jid [, reason])                 affiliation outcast (§9.1)
--   room:set_affiliation(jid, affiliation [, reason])
--   room:affiliations(affiliation) -> { { jid=, affiliation=, nick=, reason= }, ... }
--   room:get_config() -> form (lxmpp.forms.parse)
--   room:configure(values) -> true         ({} or nil: an instant room)
--   room:destroy([reason [, alternate]])
--   room:invite(jid [, reason])              mediated by the room
--   c:muc_decline(room_jid, inviter [, reason])
--   c:muc_invite(jid, room_jid [, { reason=, password= }])   direct (XEP-0249)
-- Each request returns true (or its result), or nil, message, condition.

local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local forms = require "lxmpp.forms"
local session = require "lxmpp.session"
local muc = require "lxmpp.plugins.muc"

local type, error, tostring, pairs, ipairs = type, error, tostring, pairs, ipairs

local NS_ADMIN = muc.NS_MUC .. "#admin"
local NS_OWNER = muc.NS_MUC .. "#owner"
local NS_USER = muc.NS_USER
local NS_CONFERENCE = "jabber:x:conference"
local FORM_TYPE = muc.NS_MUC .. "#roomconfig"

local ROLES = { none = true, visitor = true, participant = true, moderator = true }
local AFFILIATIONS = { none = true, outcast = true, member = true, admin = true, owner = true }

local Room = muc.Room
local M = {}

local function check_reason(reason, fname)
  if reason ~= nil and type(reason) ~= "string" then error(fname .. ": reason must be a string", 3) end
end

local function user_jid(who, fname)
  local p = type(who) == "string" and jid.prep(who)
  if not p then error(fname .. ": invalid JID " .. tostring(who), 3) end
  return p
end

-- One muc#admin item set; true or nil, message, condition.
local function admin_set(room, attr, reason, timeout)
  local iq = st.iq({ type = "set", to = room.jid }):tag("query", { xmlns = NS_ADMIN }):tag("item", attr)
  if reason then iq:text_tag("reason", reason) end
  local r, msg, cond = room.client:request(iq, timeout or room.timeout)
  if not r then return nil, msg, cond end
  return true
end

--- room:set_role(nick, role [, reason]) -> true | nil, message, condition
function Room:set_role(nick, role, reason)
  if type(nick) ~= "string" or nick == "" then error("room:set_role: nick must be a string", 2) end
  if not ROLES[role] then error("room:set_role: role must be none, visitor, participant or moderator", 2) end
  check_reason(reason, "room:set_role")
  return admin_set(self, { nick = nick, role = role }, reason)
end

--- room:kick(nick [, reason]) -> true | nil, message, condition
function Room:kick(nick, reason)
  if type(nick) ~= "string" or nick == "" then error("room:kick: nick must be a string", 2) end
  check_reason(reason, "room:kick")
  return admin_set(self, { nick = nick, role = "none" }, reason)
end

--- room:set_affiliation(jid, affiliation [, reason]) -> true | nil, message, condition
function Room:set_affiliation(who, affiliation, reason)
  who = user_jid(who, "room:set_affiliation")
  if not AFFILIATIONS[affiliation] then
    error("room:set_affiliation: affiliation must be none, outcast, member, admin or owner", 2)
  end
  check_reason(reason, "room:set_affiliation")
  return admin_set(self, { jid = jid.bare(who), affiliation = affiliation }, reason)
end

--- room:ban(jid [, reason]) -> true | nil, message, condition
function Room:ban(who, reason)
  who = user_jid(who, "room:ban")
  check_reason(reason, "room:ban")
  return admin_set(self, { jid = jid.bare(who), affiliation = "outcast" }, reason)
end

--- room:affiliations(affiliation) -> list | nil, message, condition
function Room:affiliations(affiliation)
  if not AFFILIATIONS[affiliation] or affiliation == "none" then
    error("room:affiliations: affiliation must be outcast, member, admin or owner", 2)
  end
  local r, msg, cond = self.client:request(st.iq({ type = "get", to = self.jid })
    :tag("query", { xmlns = NS_ADMIN }):tag("item", { affiliation = affiliation }), self.timeout)
  if not r then return nil, msg, cond end
  local q = r:get_child("query", NS_ADMIN)
  if not q then return nil, "the room's answer has no muc#admin query", "bad-request" end
  local list = {}
  for item in q:childtags("item") do
    local j = item.attr.jid and jid.prep(item.attr.jid)
    if j then
      list[#list + 1] = { jid = j, affiliation = item.attr.affiliation or affiliation, nick = item.attr.nick,
        reason = item:get_child_text("reason") }
    end
  end
  table.sort(list, function(a, b) return a.jid < b.jid end)
  return list
end

--- room:get_config() -> form | nil, message, condition
function Room:get_config()
  local r, msg, cond = self.client:request(st.iq({ type = "get", to = self.jid })
    :tag("query", { xmlns = NS_OWNER }), self.timeout)
  if not r then return nil, msg, cond end
  local q = r:get_child("query", NS_OWNER)
  local x = q and q:get_child("x", forms.xmlns)
  if not x then return nil, "the room sent no configuration form", "bad-request" end
  return forms.parse(x)
end

--- room:configure(values) -> true | nil, message, condition. Empty values
-- (or nil) accept the room's defaults (an instant room, §10.1.2);
-- otherwise the room's form is fetched, filled in and submitted; a var the
-- form lacks is an error ("bad-request") and nothing is submitted.
function Room:configure(values)
  if values ~= nil and type(values) ~= "table" then error("room:configure: values must be a table", 2) end
  local x
  if values == nil or next(values) == nil then
    x = st.stanza("x", { xmlns = forms.xmlns, type = "submit" })
  else
    local form, msg, cond = self:get_config()
    if not form then return nil, msg, cond end
    if form.form_type and form.form_type ~= FORM_TYPE then
      return nil, "the room's form is " .. form.form_type .. ", not " .. FORM_TYPE, "bad-request"
    end
    local layout = forms.new(form)
    for var in pairs(values) do
      if not layout.by_var[var] then return nil, "the room has no setting " .. tostring(var), "bad-request" end
    end
    x = layout:form(values, "submit")
  end
  local r, msg, cond = self.client:request(st.iq({ type = "set", to = self.jid })
    :tag("query", { xmlns = NS_OWNER }):add_child(x), self.timeout)
  if not r then return nil, msg, cond end
  return true
end

--- room:destroy([reason [, alternate]]) -> true | nil, message, condition
function Room:destroy(reason, alternate)
  check_reason(reason, "room:destroy")
  local d = { jid = alternate and user_jid(alternate, "room:destroy") or nil }
  local iq = st.iq({ type = "set", to = self.jid }):tag("query", { xmlns = NS_OWNER }):tag("destroy", d)
  if reason then iq:text_tag("reason", reason) end
  local r, msg, cond = self.client:request(iq, self.timeout)
  if not r then return nil, msg, cond end
  self.joined = false
  if self.client.muc.rooms[self.jid] == self then self.client.muc.rooms[self.jid] = nil end
  return true
end

--- room:invite(jid [, reason]): a mediated invitation, sent through the room
function Room:invite(who, reason)
  who = user_jid(who, "room:invite")
  check_reason(reason, "room:invite")
  local m = st.message({ to = self.jid, id = session.new_id() }):tag("x", { xmlns = NS_USER })
    :tag("invite", { to = who })
  if reason then m:text_tag("reason", reason) end
  return self.client:send(m)
end

local function decline(c, room_jid, inviter, reason)
  local m = st.message({ to = room_jid, id = session.new_id() }):tag("x", { xmlns = NS_USER })
    :tag("decline", { to = inviter })
  if reason then m:text_tag("reason", reason) end
  return c:send(m)
end

-- The plugin object, c.muc_admin (docs/api.md "Plugins"), has no state: the
-- moderation methods are the rooms' (above), invitations the client's.
M.forwards = { muc_invite = "invite", muc_decline = "decline" }

--- c.muc_admin:invite(jid, room_jid [, opts]): a direct invitation (XEP-0249)
function M:invite(who, room_jid, opts)
  who = user_jid(who, "muc_invite")
  local room = type(room_jid) == "string" and jid.prep(room_jid)
  if not room or not jid.node(room) or jid.resource(room) then
    error("muc_invite: invalid room JID " .. tostring(room_jid), 2)
  end
  opts = opts or {}
  for _, k in ipairs({ "reason", "password" }) do
    if opts[k] ~= nil and type(opts[k]) ~= "string" then error("muc_invite: " .. k .. " must be a string", 2) end
  end
  return self.client:send(st.message({ to = who, id = session.new_id() })
    :tag("x", { xmlns = NS_CONFERENCE, jid = room, reason = opts.reason, password = opts.password }))
end

--- c.muc_admin:decline(room_jid, inviter [, reason]): refuses a mediated invitation
function M:decline(room_jid, inviter, reason)
  local room = type(room_jid) == "string" and jid.prep(room_jid)
  if not room or not jid.node(room) then error("muc_decline: invalid room JID " .. tostring(room_jid), 2) end
  check_reason(reason, "muc_decline")
  return decline(self.client, room, user_jid(inviter, "muc_decline"), reason)
end

return M
