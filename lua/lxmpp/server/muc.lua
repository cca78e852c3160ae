-- lxmpp.server.muc: the embedded server's multi-user chat service (XEP-0045)
-- on one domain ("conference.localhost"). The server core mounts it:
--
--   local host = muc.new(srv, "conference.localhost" [, opts])
--   host:deliver(stanza)  -- every stanza addressed to the domain; 'from' is
--                         -- already stamped and trusted by the core
--   host:close()          -- occupants are told (status 332); persistent
--                         -- rooms are already saved
--
-- From srv it uses srv:route(stanza), srv.store (get/set/keys, kind
-- "muc_room", key the room's bare JID), srv:log(level, fmt, ...) and
-- srv.domain. opts (all optional) bound what hostile users can make it hold:
--   max_rooms (1000), max_occupants per room (1000), max_sessions per
--   nickname (10), max_history messages kept per room (20; also the default
--   sent on join), max_history_bytes per room (64 KiB of XML; so all the
--   history of all rooms takes at most 64 MiB by default), max_admin_items
--   per muc#admin request (100), max_affiliations per room (1000: members,
--   admins, owners and outcasts), max_pending_iq forwarded per room (256),
--   max_pending_invitations per room (100: forwarded invitations not yet
--   declined, the oldest forgotten first; an invitee may decline only one
--   of those, once), max_rooms_created (10: rooms one bare JID created
--   that still exist, so that one account cannot take all of max_rooms),
--   max_rooms_joined (100: occupants, nicknames in rooms, one bare JID is
--   at once), max_presence_bytes (8192: bytes of XML of the presence a
--   room keeps for each session of an occupant, after it removed the MUC
--   elements; so one bare JID makes the service keep at most
--   max_rooms_joined * max_sessions * max_presence_bytes, 8 MiB),
--   create = "local" (users of srv.domain and its subdomains may create
--   rooms) | "anyone" | function(bare_jid) -> boolean,
--   clock = function() -> seconds (os.time),
--   archive = false: no room archives (XEP-0313, lxmpp.server.muc_mam; on
--   by default)
-- The rooms themselves are lxmpp.server.muc_room.

local compat = require "lxmpp.compat"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local muc_room = require "lxmpp.server.muc_room"

local type, error, pairs, ipairs, pcall, setmetatable, tostring =
  type, error, pairs, ipairs, compat.pcall, setmetatable, tostring
local sort, os_time = table.sort, os.time

local NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
local NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
local NS_PING = "urn:xmpp:ping"
local STORE_KIND = "muc_room"

local LIMITS = {
  max_rooms = 1000, max_occupants = 1000, max_sessions = 10, max_history = 20,
  max_history_bytes = 64 * 1024, max_admin_items = 100, max_affiliations = 1000, max_pending_iq = 256,
  max_pending_invitations = 100, max_rooms_created = 10, max_rooms_joined = 100, max_presence_bytes = 8192,
}

local Host = {}
Host.__index = Host

local function new(srv, domain, opts)
  if type(srv) ~= "table" or type(srv.route) ~= "function" then
    error("lxmpp.server.muc: new expects the server object", 2)
  end
  if type(domain) ~= "string" then error("lxmpp.server.muc: domain must be a string", 2) end
  local prepped = jid.prep(domain)
  if not prepped or jid.node(prepped) or jid.resource(prepped) then
    error("lxmpp.server.muc: invalid MUC domain " .. domain, 2)
  end
  opts = opts or {}
  if type(opts) ~= "table" then error("lxmpp.server.muc: opts must be a table", 2) end
  if opts.archive ~= nil and type(opts.archive) ~= "boolean" then
    error("lxmpp.server.muc: archive must be a boolean", 2)
  end
  local limits = {}
  for k, v in pairs(LIMITS) do
    local o = opts[k]
    if o ~= nil and (compat.math_type(o) ~= "integer" or o < 0) then
      error("lxmpp.server.muc: " .. k .. " must be a non-negative integer", 2)
    end
    limits[k] = o or v
  end
  local self = setmetatable({
    srv = srv, domain = prepped, limits = limits, rooms = {}, nrooms = 0,
    created = {}, joined = {},  -- [bare JID] = rooms it created that exist; occupants it is now
    create = opts.create or "local", clock = opts.clock or os_time, ids = 0,
  }, Host)
  if opts.archive ~= false then self.archive = require("lxmpp.server.muc_mam").new(self) end
  self:restore_rooms()
  if srv.hook_builtin then   -- a removed account leaves every room (fake servers of specs have no bus)
    srv:hook_builtin("user-removing", function(ev) self:account_removed(ev.bare) end, -12)
  end
  return self
end

function Host:log(level, fmt, ...)
  if self.srv.log then self.srv:log(level, fmt, ...) end
end

--- Storage ----------------------------------------------------------------

-- Writes (data) or deletes (nil) a room's stored copy; a failing store
-- (one that raises, or returns nil, message) is logged and the room goes on
-- in memory.
function Host:store_room(room_jid, data)
  local store = self.srv.store
  if not store then return end
  local ok, res, err = pcall(store.set, store, STORE_KIND, room_jid, data)
  if not ok or (res == nil and err ~= nil) then
    self:log("error", "muc: cannot save room %s: %s", room_jid, tostring(ok and err or res))
  end
end

-- The persistent rooms of this domain; one that cannot be read is logged
-- and left in the store.
function Host:restore_rooms()
  local store = self.srv.store
  if not store then return end
  for _, key in ipairs(store:keys(STORE_KIND)) do
    local node, domain, resource = jid.prepped_split(key)
    if node and domain == self.domain and not resource then
      local ok, data = pcall(store.get, store, STORE_KIND, key)
      if ok and type(data) == "table" then
        local room = muc_room.restore(self, key, data)
        self.rooms[key] = room
        self.nrooms = self.nrooms + 1
        if room.creator then self:count_created(room.creator, 1) end
      else
        self:log("error", "muc: cannot restore room %s: %s", key, tostring(data))
      end
    end
  end
end

--- Rooms ------------------------------------------------------------------

-- Per bare JID counts (created, joined): n more or fewer; an entry at 0 goes.
local function count(t, bare, n)
  local v = (t[bare] or 0) + n
  t[bare] = v > 0 and v or nil
end

--- The rooms `bare` created that still exist change by n (max_rooms_created).
function Host:count_created(bare, n) count(self.created, bare, n) end

--- The occupants `bare` is, in all rooms, change by n (max_rooms_joined).
function Host:count_joined(bare, n) count(self.joined, bare, n) end

--- May `bare` be one more occupant? nil, or etype, condition, text.
function Host:join_quota(bare)
  if (self.joined[bare] or 0) >= self.limits.max_rooms_joined then
    return "wait", "resource-constraint",
      ("you are in %d rooms of this service already (max_rooms_joined)"):format(self.limits.max_rooms_joined)
  end
end

function Host:remove_room(room)
  if self.rooms[room.jid] == room then
    self.rooms[room.jid] = nil
    self.nrooms = self.nrooms - 1
    if room.creator then self:count_created(room.creator, -1) end
    if self.archive then self.archive:forget(room.jid) end
  end
end

--- The account `bare` was removed: occupants it left behind go, and it
-- loses its affiliation (owner, admin, member, outcast) with every room. A
-- room it was the last owner of is destroyed (XEP-0045 §10.9): a room
-- without an owner could never be configured or destroyed, and a later
-- account of the same name must not inherit it.
function Host:account_removed(bare)
  local list = {}
  for _, room in pairs(self.rooms) do list[#list + 1] = room end
  sort(list, function(a, b) return a.jid < b.jid end)
  for _, room in ipairs(list) do
    for _, occ in pairs(room.occupants) do
      if occ.bare == bare then room:remove_occupant(occ, { codes = { "321" } }) end
    end
    if room.creator == bare then             -- a later account of that name starts afresh
      room.creator = nil
      self:count_created(bare, -1)
      -- (stored too: after a restart the room would count against a new
      -- account of that name, whatever its affiliations say)
      if not room.affiliations[bare] then room:save() end
    end
    if room.affiliations[bare] then
      room.affiliations[bare] = nil
      local owned = false
      for _, a in pairs(room.affiliations) do owned = owned or a == "owner" end
      if owned then
        room:save()
      else
        room:destroy(st.stanza("destroy"):text_tag("reason", "the owner's account was removed"))
      end
    end
    if not room.destroyed then room:maybe_dispose() end
  end
end

function Host:next_id()
  self.ids = self.ids + 1
  return "muc-" .. self.ids
end

function Host:may_create(from)
  local bare = jid.bare(from)
  if self.create == "anyone" then return true end
  if type(self.create) == "function" then return self.create(bare) == true end
  local domain = jid.domain(bare)
  local main = self.srv.domain
  return main ~= nil and (domain == main or domain:sub(-#main - 1) == "." .. main)
end

local function reply_error(self, stanza, etype, condition, text)
  if stanza.attr.type == "error" then return end
  if stanza.name == "iq" and stanza.attr.type == "result" then return end
  self.srv:route(st.error_reply(stanza, etype, condition, text))
end

function Host:deliver(stanza)
  local from = stanza.attr.from and jid.prep(stanza.attr.from)
  if not from or self.closed then return end
  stanza.attr.from = from
  local node, domain, nick = jid.prepped_split(stanza.attr.to or "")
  if not domain then
    return reply_error(self, stanza, "modify", "jid-malformed", "invalid address (nickname or room name)")
  elseif domain ~= self.domain then
    return reply_error(self, stanza, "cancel", "item-not-found")
  elseif not node then
    return self:service_stanza(stanza)
  end
  local room_jid = node .. "@" .. domain
  local room = self.rooms[room_jid]
  if not room then
    if stanza.name ~= "presence" or stanza.attr.type ~= nil then
      if stanza.name == "presence" then return end -- leaving a room that is not there
      return reply_error(self, stanza, "cancel", "item-not-found", "no such room")
    elseif not nick then
      return reply_error(self, stanza, "modify", "jid-malformed", "a room nickname is required")
    elseif not self:may_create(from) then
      return reply_error(self, stanza, "cancel", "not-allowed", "you may not create rooms here")
    elseif self.nrooms >= self.limits.max_rooms then
      return reply_error(self, stanza, "wait", "resource-constraint", "too many rooms")
    elseif (self.created[jid.bare(from)] or 0) >= self.limits.max_rooms_created then
      -- one account may not take all of max_rooms (XEP-0045 §10.1.1 lets
      -- a service restrict creation; the quota is why, not a permission)
      return reply_error(self, stanza, "wait", "resource-constraint",
        ("you created %d rooms here already (max_rooms_created): destroy one first")
          :format(self.limits.max_rooms_created))
    end
    room = muc_room.new(self, room_jid)
    room.affiliations[jid.bare(from)] = "owner"
    room.creator = jid.bare(from)
    self:count_created(room.creator, 1)
    room.locked, room.just_created = true, true
    self.rooms[room_jid] = room
    self.nrooms = self.nrooms + 1
    room:handle_presence(stanza, nick)
    if room.count == 0 then self:remove_room(room) end -- refused (an invisible nick)
    return
  end
  if stanza.name == "presence" then return room:handle_presence(stanza, nick) end
  if stanza.name == "message" then return room:handle_message(stanza, nick) end
  if stanza.name == "iq" then return room:handle_iq(stanza, nick) end
end

--- The service itself -----------------------------------------------------

function Host:service_stanza(stanza)
  if stanza.name ~= "iq" then
    if stanza.name == "message" then reply_error(self, stanza, "cancel", "service-unavailable") end
    return
  end
  local itype = stanza.attr.type
  if itype ~= "get" and itype ~= "set" then return end
  local q = stanza.tags[1]
  local ns = q and q.attr.xmlns
  if itype == "get" and ns == NS_DISCO_INFO and not q.attr.node then
    local r = st.reply(stanza):query(NS_DISCO_INFO)
      :tag("identity", { category = "conference", type = "text", name = "Chatrooms" }):up()
    for _, f in ipairs({ NS_DISCO_INFO, NS_DISCO_ITEMS, "http://jabber.org/protocol/muc", NS_PING }) do
      r:tag("feature", { var = f }):up()
    end
    return self.srv:route(r)
  elseif itype == "get" and ns == NS_DISCO_ITEMS and not q.attr.node then
    local list = {}
    for room_jid, room in pairs(self.rooms) do
      if room.config.public and not room.locked then list[#list + 1] = room_jid end
    end
    sort(list)
    local r = st.reply(stanza):query(NS_DISCO_ITEMS)
    for _, room_jid in ipairs(list) do
      local name = self.rooms[room_jid].config.name
      r:tag("item", { jid = room_jid, name = name ~= "" and name or jid.node(room_jid) }):up()
    end
    return self.srv:route(r)
  elseif itype == "get" and ns == NS_PING and q.name == "ping" then
    return self.srv:route(st.reply(stanza))
  end
  reply_error(self, stanza, "cancel", "service-unavailable")
end

function Host:close()
  if self.closed then return end
  self.closed = true
  for _, room in pairs(self.rooms) do
    room:shutdown()
    if room.creator then self:count_created(room.creator, -1) end
    -- a temporary room ends here: so does its archive (XEP-0313, muc_mam)
    if self.archive and not room.config.persistent then self.archive:forget(room.jid) end
  end
  self.rooms, self.nrooms = {}, 0
end

return {
  new = new,
  Host = Host,
  xmlns_muc = muc_room.NS_MUC,
  xmlns_user = muc_room.NS_USER,
}
