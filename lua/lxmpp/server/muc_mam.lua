-- lxmpp.server.muc_mam: the archives of the MUC service's rooms (XEP-0313
-- §6, "MUC archives"; XEP-0045 rooms of lxmpp.server.muc), so that clients
-- (Gajim, Conversations, Dino) show a room's history beyond the few
-- messages of XEP-0045 §7.2.15.
--
-- What is kept: the groupchat messages a room sends its occupants, as they
-- go out (from the occupant's room JID), when they have a <body/> and no
-- XEP-0334 <no-store/> or <no-permanent-store/> hint, with the sender's real
-- bare JID in <x xmlns='http://jabber.org/protocol/muc#user'><item jid=/></x>.
-- That element is shown only to whom the room shows real JIDs (XEP-0045
-- §7.2.3 and XEP-0313 §6.1.2: everyone in a non-anonymous room, moderators,
-- admins and owners in a semi-anonymous one); others get the message
-- without it.
-- Not kept: subject changes, private messages between occupants,
-- invitations. Each kept message gets the room's XEP-0359
-- <stanza-id by='room@service'/> (one that claims to be by the room and came
-- from an occupant is dropped first: nobody can forge one).
--
-- Who may query (XEP-0313 §6.1.1): not outcasts; in a members-only room
-- only members, admins and owners; in a password-protected room only those
-- and the room's current occupants. Others get forbidden. The query goes to
-- the room's bare JID, with the forms (the #extended fields too) and paging
-- of the account archives (lxmpp.server.mam, whose query code this reuses):
-- an id of another archive is item-not-found here.
--
-- Storage: the server's message archive (storage_archive.lua) under the
-- room's bare JID (which has an '@', so never a user name); at most
-- limits.mam_max_messages per room, the oldest going first. A room that is
-- destroyed, or a temporary room that empties, loses its archive.
--
-- lxmpp.server.muc makes one per service (option archive = false: none);
-- muc_room calls :groupchat, muc_admin hands over urn:xmpp:mam:2 IQs.

local compat = require "lxmpp.compat"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local mam = require "lxmpp.server.mam"

local setmetatable, pcall, tostring = setmetatable, compat.pcall, tostring

local NS_MAM, NS_SID = mam.NS, mam.NS_SID
local NS_HINTS = "urn:xmpp:hints"
local NS_USER = "http://jabber.org/protocol/muc#user"
local RANK = { outcast = 0, none = 1, member = 2, admin = 3, owner = 4 }

local M = { NS = NS_MAM }

local Archive = {}
Archive.__index = Archive

--- muc_mam.new(service) -> the archive of the service's rooms.
function M.new(service)
  return setmetatable({ service = service, srv = service.srv }, Archive)
end

-- The user archives' code (entries, queries) of the server's IM core.
function Archive:mam()
  return self.srv.im and self.srv.im.mam
end

local function storable(msg)
  if not msg:get_child("body") then return false end
  return not (msg:get_child("no-store", NS_HINTS) or msg:get_child("no-permanent-store", NS_HINTS))
end

--- A groupchat message of room, as it goes to the occupants (from the
-- occupant JID): forged room stanza ids go; kept when worth keeping and
-- stamped with the room's id.
function Archive:groupchat(room, msg, occ)
  msg:maptags(function(c)
    if c.name == "stanza-id" and c.attr.xmlns == NS_SID and c.attr.by and jid.prep(c.attr.by) == room.jid then
      return nil
    end
    return c
  end)
  local archive = self:mam()
  if not archive or not storable(msg) then return end
  local kept = msg:clone()
  kept:remove_children("x", NS_USER)
  if occ and occ.bare then kept:tag("x", { xmlns = NS_USER }):tag("item", { jid = occ.bare }):up():up() end
  local id = archive:add(room.jid, kept, msg.attr.from)
  if id then msg:tag("stanza-id", { xmlns = NS_SID, by = room.jid, id = id }):up() end
end

--- May `from` (a full JID) read room's archive? true, or false and why.
function Archive.may_query(_, room, from)
  local aff = room:affiliation(jid.bare(from))
  local rank = RANK[aff] or RANK.none
  if rank == RANK.outcast then return false, "you are banned from this room" end
  if room.config.members_only and rank < RANK.member then
    return false, "only members may read the archive of a members-only room"
  end
  if room.config.password_protected and rank < RANK.member and not room.sessions[from] then
    return false, "only occupants may read the archive of a password-protected room"
  end
  return true
end

--- A urn:xmpp:mam:2 IQ to room's bare JID.
function Archive:iq(room, iq)
  local archive, srv = self:mam(), self.srv
  local from = iq.attr.from
  if not archive then return srv:route(st.error_reply(iq, "cancel", "service-unavailable")) end
  local ok, why = self:may_query(room, from)
  if not ok then return srv:route(st.error_reply(iq, "auth", "forbidden", why)) end
  -- real JIDs: to whom the room shows them
  local occ = room.sessions[from]
  local reveal = room.config.whois == "anyone" or (occ and occ.role == "moderator")
    or RANK[room:affiliation(jid.bare(from))] >= RANK.admin
  -- the query code answers a session: here the room answers the requester
  local peer = {
    user = room.jid, bare = room.jid, full = from,
    archive_filter = function(m)
      if not reveal then m:remove_children("x", NS_USER) end
      return m
    end,
    send = function(_, s)
      s.attr.from = s.attr.from or room.jid
      srv:route(s)
      return true
    end,
  }
  return archive:iq(peer, iq)
end

--- Features of a room's disco#info this adds.
function Archive.features(_, r)
  r:tag("feature", { var = NS_MAM }):up()
  r:tag("feature", { var = mam.NS_EXTENDED }):up()   -- XEP-0313 §"Determining support"
  r:tag("feature", { var = NS_SID }):up()
end

--- The room is gone: so is its archive.
function Archive:forget(room_jid)
  local store = self.srv.store
  if not store or not self:mam() then return end
  local ok, err = pcall(store.remove_account, store, room_jid)
  if not ok then self.srv:log("error", "muc: cannot remove the archive of %s: %s", room_jid, tostring(err)) end
end

M.Archive = Archive
return M
