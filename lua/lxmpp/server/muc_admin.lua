-- lxmpp.server.muc_admin: the iq side of a XEP-0045 room: service
-- discovery, the muc#admin use cases (kick, voice, moderator, ban,
-- membership, admin and owner lists), the muc#owner use cases (the
-- muc#roomconfig form, instant rooms, destruction), and iqs to occupant
-- JIDs (XEP-0410 self-ping; others forwarded to the occupant's real JID
-- under a room-chosen id, so neither side learns the other's real JID).
-- install(M) adds these methods to lxmpp.server.muc_room's Room class.

local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local forms = require "lxmpp.forms"

local pairs, ipairs, tostring, tonumber = pairs, ipairs, tostring, tonumber
local sort = table.sort

local NS_ADMIN = "http://jabber.org/protocol/muc#admin"
local NS_OWNER = "http://jabber.org/protocol/muc#owner"
local NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
local NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
local NS_PING = "urn:xmpp:ping"

local FORM_TYPE = "http://jabber.org/protocol/muc#roomconfig"
local F = "muc#roomconfig_"

-- Form field -> config key.
local FIELDS = {
  [F .. "roomname"] = "name", [F .. "roomdesc"] = "description",
  [F .. "persistentroom"] = "persistent", [F .. "publicroom"] = "public",
  [F .. "membersonly"] = "members_only", [F .. "moderatedroom"] = "moderated",
  [F .. "passwordprotectedroom"] = "password_protected", [F .. "roomsecret"] = "password",
  [F .. "whois"] = "whois", [F .. "changesubject"] = "change_subject", [F .. "allowpm"] = "allow_pm",
}

local config_form = forms.new{
  title = "Room configuration",
  instructions = "Submit this form to configure the room (an empty submission keeps the defaults).",
  { var = "FORM_TYPE", type = "hidden", value = FORM_TYPE },
  { var = F .. "roomname", type = "text-single", label = "Room name" },
  { var = F .. "roomdesc", type = "text-single", label = "Description" },
  { var = F .. "persistentroom", type = "boolean", label = "Keep the room when the last occupant leaves" },
  { var = F .. "publicroom", type = "boolean", label = "List the room in the service's directory" },
  { var = F .. "membersonly", type = "boolean", label = "Only members may enter" },
  { var = F .. "moderatedroom", type = "boolean", label = "Only participants with voice may speak" },
  { var = F .. "passwordprotectedroom", type = "boolean", label = "A password is required to enter" },
  { var = F .. "roomsecret", type = "text-private", label = "Password" },
  { var = F .. "whois", type = "list-single", label = "Who may discover occupants' real JIDs",
    options = { { label = "Moderators only", value = "moderators" }, { label = "Anyone", value = "anyone" } } },
  { var = F .. "maxusers", type = "list-single", label = "Maximum number of occupants", open = true,
    options = { "10", "20", "30", "50", "100", { label = "No limit", value = "none" } } },
  { var = F .. "changesubject", type = "boolean", label = "Participants may change the subject" },
  { var = F .. "allowpm", type = "list-single", label = "Who may send private messages",
    options = { { label = "Anyone", value = "anyone" }, { label = "Participants", value = "participants" },
      { label = "Moderators", value = "moderators" }, { label = "Nobody", value = "none" } } },
}

local function install(M)
  local Room, ARANK, RRANK, NS_USER = M.Room, M.AFFILIATION_RANK, M.ROLE_RANK, M.NS_USER

  function Room:handle_iq(stanza, nick)
    local itype = stanza.attr.type
    if nick then return self:occupant_iq(stanza, nick) end
    if itype ~= "get" and itype ~= "set" then return end
    local q = stanza.tags[1]
    local ns = q and q.attr.xmlns
    local from_bare = jid.bare(stanza.attr.from)
    if self.locked and self:affiliation(from_bare) ~= "owner" then
      return self:reply_error(stanza, "cancel", "item-not-found", "this room is locked")
    end
    if itype == "get" and ns == NS_DISCO_INFO and not q.attr.node then return self:disco_info(stanza) end
    if itype == "get" and ns == NS_DISCO_ITEMS and not q.attr.node then return self:disco_items(stanza) end
    if itype == "get" and ns == NS_PING and q.name == "ping" then return self.srv:route(st.reply(stanza)) end
    if ns == "urn:xmpp:mam:2" and self.service.archive then return self.service.archive:iq(self, stanza) end
    if ns == NS_ADMIN and q.name == "query" then
      if itype == "get" then return self:admin_get(stanza, q) end
      return self:admin_set(stanza, q)
    end
    if ns == NS_OWNER and q.name == "query" then
      if self:affiliation(from_bare) ~= "owner" then
        return self:reply_error(stanza, "auth", "forbidden", "only owners may configure the room")
      end
      if itype == "get" then
        return self.srv:route(st.reply(stanza):query(NS_OWNER):add_child(self:config_x()))
      end
      return self:owner_set(stanza, q)
    end
    return self:reply_error(stanza, "cancel", "service-unavailable")
  end

  --- Discovery -------------------------------------------------------

  function Room:disco_info(stanza)
    local c = self.config
    local r = st.reply(stanza):query(NS_DISCO_INFO)
    r:tag("identity", { category = "conference", type = "text",
      name = c.name ~= "" and c.name or jid.node(self.jid) }):up()
    for _, f in ipairs({
      NS_DISCO_INFO, "http://jabber.org/protocol/muc", NS_PING,
      c.persistent and "muc_persistent" or "muc_temporary",
      c.public and "muc_public" or "muc_hidden",
      c.members_only and "muc_membersonly" or "muc_open",
      c.moderated and "muc_moderated" or "muc_unmoderated",
      c.whois == "anyone" and "muc_nonanonymous" or "muc_semianonymous",
      c.password_protected and "muc_passwordprotected" or "muc_unsecured",
    }) do
      r:tag("feature", { var = f }):up()
    end
    if self.service.archive then self.service.archive:features(r) end -- XEP-0313 (muc_mam)
    r:add_child(forms.new{
      { var = "FORM_TYPE", type = "hidden", value = "http://jabber.org/protocol/muc#roominfo" },
      { var = "muc#roominfo_description", label = "Description", value = c.description },
      { var = "muc#roominfo_occupants", label = "Number of occupants", value = tostring(self.count) },
      { var = "muc#roominfo_subject", label = "Subject", value = self.subject or "" },
      { var = "muc#roominfo_changesubject", type = "boolean", label = "Occupants may change the subject",
        value = c.change_subject },
      { var = F .. "roomname", label = "Room name", value = c.name },
    }:form(nil, "result"))
    self.srv:route(r)
  end

  -- The occupants, to occupants only (their nicknames are not public).
  function Room:disco_items(stanza)
    local r = st.reply(stanza):query(NS_DISCO_ITEMS)
    if self.sessions[stanza.attr.from] then
      local nicks = {}
      for nick in pairs(self.occupants) do nicks[#nicks + 1] = nick end
      sort(nicks)
      for _, nick in ipairs(nicks) do
        r:tag("item", { jid = self:occupant_jid(nick), name = nick }):up()
      end
    end
    self.srv:route(r)
  end

  --- Roles and affiliations ------------------------------------------

  -- May `from` read the list of `aff`? Admins and owners may read any;
  -- in a non-anonymous members-only room every occupant and every member
  -- may read the member list (XEP-0045 §9.5: real JIDs are no secret
  -- there, and it helps members see who else belongs).
  function Room:may_list(aff, from)
    local asker_aff = self:affiliation(jid.bare(from))
    if ARANK[asker_aff] >= ARANK.admin then return true end
    local c = self.config
    return aff == "member" and c.members_only and c.whois == "anyone"
      and (ARANK[asker_aff] >= ARANK.member or self.sessions[from] ~= nil)
  end

  -- muc#admin get: the occupants with a role (moderators may ask), or the
  -- JIDs with an affiliation (admins and owners may ask; see may_list).
  function Room:admin_get(stanza, q)
    local item = q:get_child("item")
    local role, aff = item and item.attr.role, item and item.attr.affiliation
    local asker = self.sessions[stanza.attr.from]
    local r = st.reply(stanza):query(NS_ADMIN)
    if role and RRANK[role] and role ~= "none" then
      if not asker or asker.role ~= "moderator" then
        return self:reply_error(stanza, "auth", "forbidden", "only moderators may list roles")
      end
      for _, occ in pairs(self.occupants) do
        if occ.role == role then
          r:tag("item", { nick = occ.nick, role = role, jid = occ.primary,
            affiliation = self:affiliation(occ.bare) }):up()
        end
      end
    elseif aff and ARANK[aff] and aff ~= "none" then
      if not self:may_list(aff, stanza.attr.from) then
        return self:reply_error(stanza, "auth", "forbidden", "only admins and owners may list affiliations")
      end
      local list = {}
      for bare, a in pairs(self.affiliations) do
        if a == aff then list[#list + 1] = bare end
      end
      sort(list)
      for _, bare in ipairs(list) do r:tag("item", { jid = bare, affiliation = aff }):up() end
    else
      return self:reply_error(stanza, "modify", "bad-request", "ask for one role or one affiliation")
    end
    self.srv:route(r)
  end

  -- Checks one role change; returns a function applying it, or nil, etype,
  -- condition, text.
  function Room:check_role(item, actor)
    if not actor or actor.role ~= "moderator" then
      return nil, "auth", "forbidden", "only moderators may change roles"
    end
    local role, nick = item.attr.role, item.attr.nick
    if not RRANK[role] then return nil, "modify", "bad-request", "unknown role " .. tostring(role) end
    if not nick then return nil, "modify", "bad-request", "a role change needs a nick" end
    local _, _, prepped = jid.prepped_split(self.jid .. "/" .. nick)
    local target = prepped and self.occupants[prepped]
    if not target then return nil, "cancel", "item-not-found", "no occupant with this nickname" end
    local actor_aff, target_aff = self:affiliation(actor.bare), self:affiliation(target.bare)
    if ARANK[target_aff] > ARANK[actor_aff] then
      return nil, "cancel", "not-allowed", "you may not change the role of someone with a higher affiliation"
    end
    -- §8.4: a moderator MUST NOT revoke voice from a user whose affiliation
    -- is at or above its own (kicking, §8.2, only from a higher one)
    if role == "visitor" and ARANK[target_aff] >= ARANK[actor_aff] then
      return nil, "cancel", "not-allowed", "you may not revoke voice from someone of your affiliation or above"
    end
    if (role == "moderator" or target.role == "moderator") and ARANK[actor_aff] < ARANK.admin then
      return nil, "cancel", "not-allowed", "only admins and owners may grant or revoke moderator status"
    end
    if ARANK[target_aff] >= ARANK.admin and role ~= "moderator" and role ~= "none" then
      return nil, "cancel", "not-allowed", "admins and owners are always moderators"
    end
    local reason = item:get_child_text("reason")
    return function ()
      if self.occupants[target.nick] ~= target then return end -- gone meanwhile
      if role == "none" then
        self:remove_occupant(target, { codes = { "307" }, actor = actor.nick, reason = reason })
      else
        target.role = role
        self:broadcast_presence(target, { actor = actor.nick, reason = reason })
      end
    end
  end

  -- What an actor of affiliation `actor_aff` may do to `target_bare`.
  local function affiliation_refusal(actor_aff, target_aff, aff)
    if actor_aff == "owner" then return nil end
    if actor_aff ~= "admin" then
      return "auth", "forbidden", "only admins and owners may change affiliations"
    elseif ARANK[aff] >= ARANK.admin then
      return "auth", "forbidden", "only owners may grant admin or owner status"
    elseif ARANK[target_aff] >= ARANK.admin then
      return "cancel", "not-allowed", "only owners may change an admin's or owner's affiliation"
    end
    return nil
  end

  local function check_affiliation(item, actor_aff, planned)
    local aff = item.attr.affiliation
    if not ARANK[aff] then return nil, "modify", "bad-request", "unknown affiliation " .. tostring(aff) end
    if not item.attr.jid then return nil, "modify", "bad-request", "an affiliation change needs a jid" end
    local prepped = jid.prep(item.attr.jid)
    if not prepped then return nil, "modify", "jid-malformed", "invalid jid " .. item.attr.jid end
    local bare = jid.bare(prepped)
    local etype, cond, text = affiliation_refusal(actor_aff, planned[bare] or "none", aff)
    if etype then return nil, etype, cond, text end
    planned[bare] = aff ~= "none" and aff or nil
    return bare, aff, item:get_child_text("reason")
  end

  -- Sets bare's affiliation and brings its occupants in line.
  function Room:set_affiliation(bare, aff, actor_nick, reason)
    local old = self:affiliation(bare)
    self.affiliations[bare] = aff ~= "none" and aff or nil
    for _, occ in pairs(self.occupants) do
      if occ.bare == bare then
        if aff == "outcast" then
          self:remove_occupant(occ, { codes = { "301" }, actor = actor_nick, reason = reason })
        elseif self.config.members_only and ARANK[aff] < ARANK.member then
          self:remove_occupant(occ, { codes = { "321" }, actor = actor_nick, reason = reason })
        else
          if ARANK[aff] >= ARANK.admin then
            occ.role = "moderator"
          elseif ARANK[old] >= ARANK.admin or occ.role == "visitor" then
            occ.role = self:default_role(aff)
          end
          self:broadcast_presence(occ, { actor = actor_nick, reason = reason })
        end
      end
    end
  end

  function Room:affiliation_count()
    local n = 0
    for _ in pairs(self.affiliations) do n = n + 1 end
    return n
  end

  -- muc#admin set: every item is checked before any is applied.
  function Room:admin_set(stanza, q)
    local from = stanza.attr.from
    local actor = self.sessions[from]
    local actor_aff = self:affiliation(jid.bare(from))
    local planned, role_changes, aff_changes = {}, {}, {}
    for bare, a in pairs(self.affiliations) do planned[bare] = a end
    local n = 0
    for item in q:childtags("item") do
      n = n + 1
      if n > self.service.limits.max_admin_items then
        return self:reply_error(stanza, "modify", "policy-violation", "too many items in one request")
      end
      local a, b, c, d
      if item.attr.role and item.attr.affiliation then
        return self:reply_error(stanza, "modify", "bad-request", "change a role or an affiliation, not both")
      elseif item.attr.role then
        a, b, c, d = self:check_role(item, actor)
        role_changes[#role_changes + 1] = a
      else
        local target = item.attr.jid and jid.prep(item.attr.jid)
        if item.attr.affiliation == "outcast" and target and jid.bare(target) == jid.bare(from) and
            ARANK[actor_aff] >= ARANK.admin then
          -- §9.1: an admin or owner who tries to ban himself MUST get conflict
          return self:reply_error(stanza, "cancel", "conflict", "you may not ban yourself")
        end
        a, b, c, d = check_affiliation(item, actor_aff, planned)
        if a then aff_changes[#aff_changes + 1] = { a, b, c } end
      end
      if not a then return self:reply_error(stanza, b, c, d) end
    end
    if n == 0 then return self:reply_error(stanza, "modify", "bad-request", "no item") end
    if #aff_changes > 0 then
      local owners, count = false, 0
      for _, a in pairs(planned) do
        owners, count = owners or a == "owner", count + 1
      end
      if not owners then
        return self:reply_error(stanza, "cancel", "conflict", "a room needs at least one owner")
      elseif count > self.service.limits.max_affiliations and count > self:affiliation_count() then
        return self:reply_error(stanza, "wait", "resource-constraint", "too many affiliations in this room")
      end
    end
    local actor_nick = actor and actor.nick
    for _, change in ipairs(aff_changes) do
      self:set_affiliation(change[1], change[2], actor_nick, change[3])
    end
    for _, apply in ipairs(role_changes) do apply() end
    if #aff_changes > 0 then self:save() end
    self.srv:route(st.reply(stanza))
    if self.count == 0 then self:maybe_dispose() end
  end

  --- Configuration and destruction -----------------------------------

  function Room:config_x()
    local c, values = self.config, {}
    for var, key in pairs(FIELDS) do values[var] = c[key] end
    values[F .. "maxusers"] = c.max_users > 0 and tostring(c.max_users) or "none"
    return config_form:form(values)
  end

  -- The new configuration from a submitted form: config, or nil, etype,
  -- condition, text. Fields left out keep their value.
  function Room:read_config(x)
    local values, msg = config_form:data(x)
    if not values then return nil, "modify", "bad-request", msg end
    local c = {}
    for k, v in pairs(self.config) do c[k] = v end
    for var, key in pairs(FIELDS) do
      if values[var] ~= nil then c[key] = values[var] end
    end
    local maxusers = values[F .. "maxusers"]
    if maxusers then
      local n = maxusers == "none" and 0 or (maxusers:match("^%d+$") and tonumber(maxusers))
      if not n or n > self.service.limits.max_occupants then
        return nil, "modify", "not-acceptable", "maxusers must be 'none' or a number up to "
          .. self.service.limits.max_occupants
      end
      c.max_users = n
    end
    if values[F .. "passwordprotectedroom"] == nil and values[F .. "roomsecret"] ~= nil then
      c.password_protected = c.password ~= ""
    end
    if c.password_protected and c.password == "" then
      return nil, "modify", "not-acceptable", "a password-protected room needs a password"
    elseif not c.password_protected then
      c.password = ""
    end
    return c
  end

  function Room:owner_set(stanza, q)
    local destroy = q:get_child("destroy")
    if destroy then
      self:destroy(destroy)
      return self.srv:route(st.reply(stanza))
    end
    local x = q:get_child("x", forms.xmlns)
    if not x then return self:reply_error(stanza, "modify", "bad-request", "expected a form or <destroy/>") end
    if x.attr.type == "cancel" then
      self.srv:route(st.reply(stanza))
      -- cancelling the initial configuration abandons the new room
      if self.locked then self:destroy(nil) end
      return
    elseif x.attr.type ~= "submit" then
      return self:reply_error(stanza, "modify", "bad-request", "the form must be of type submit or cancel")
    end
    local c, etype, cond, text = self:read_config(x)
    if not c then return self:reply_error(stanza, etype, cond, text) end
    local old = self.config
    self.config, self.locked = c, nil
    self.srv:route(st.reply(stanza))
    local changed = false
    for k, v in pairs(c) do changed = changed or old[k] ~= v end
    if c.members_only and not old.members_only then
      for _, occ in pairs(self.occupants) do
        if ARANK[self:affiliation(occ.bare)] < ARANK.member then
          self:remove_occupant(occ, { codes = { "322" } })
        end
      end
    end
    -- XEP-0045 §10.2.1: a change of anonymity is announced (172/173),
    -- and any change with 104 so clients fetch the form again; the first
    -- configuration of a new room counts too: its owner is in it, and a
    -- room made non-anonymous from the default must say so.
    if changed then
      local notice = st.message({ from = self.jid, type = "groupchat" }):tag("x", { xmlns = NS_USER })
      if c.whois ~= old.whois then notice:tag("status", { code = c.whois == "anyone" and "172" or "173" }):up() end
      notice:tag("status", { code = "104" }):up()
      self:broadcast(notice:up())
    end
    self:save()
    self:maybe_dispose()
  end

  -- Every occupant gets one unavailable presence carrying <destroy/>
  -- (element: the owner's <destroy/> with jid, reason, password, or nil).
  function Room:destroy(element)
    local d = st.stanza("destroy", { jid = element and element.attr.jid and jid.prep(element.attr.jid) or nil })
    local reason = element and element:get_child_text("reason")
    if reason then d:text_tag("reason", reason) end
    local password = element and element:get_child_text("password")
    if password then d:text_tag("password", password) end
    self:evict({ destroy = d })
    self.destroyed = true
    self:save()
    self.service:remove_room(self)
  end

  -- Sends each occupant (alone) its unavailable presence, then empties the room.
  function Room:evict(opts)
    opts.type, opts.role, opts.affiliation, opts.self, opts.show_jid = "unavailable", "none", "none", true, true
    for _, occ in pairs(self.occupants) do
      self:send_to(occ, self:presence_of(occ, opts))
      self.service:count_joined(occ.bare, -1)
    end
    self.occupants, self.sessions, self.count = {}, {}, 0
  end

  -- The service shuts down (XEP-0045 §11.2, status 332).
  function Room:shutdown()
    self:evict({ codes = { "332" } })
  end

  --- Iqs to occupants ------------------------------------------------

  function Room:occupant_iq(stanza, nick)
    local from, itype, id = stanza.attr.from, stanza.attr.type, stanza.attr.id
    local sender, target = self.sessions[from], self.occupants[nick]
    local pending = self.pending_iq
    if itype == "result" or itype == "error" then
      -- an answer from an occupant's real JID to a forwarded request
      local p = pending and id and pending[id]
      if p and p.responder == from and p.requester_nick == nick then
        pending[id] = nil
        self.pending_count = self.pending_count - 1
        local r = stanza:clone()
        r.attr.from, r.attr.to, r.attr.id = self:occupant_jid(p.target_nick), p.requester, p.id
        self.srv:route(r)
      end
      return
    end
    if not sender then
      return self:reply_error(stanza, "modify", "not-acceptable", "only occupants may send iqs to occupants")
    elseif not target then
      return self:reply_error(stanza, "cancel", "item-not-found", "no occupant with this nickname")
    end
    local q = stanza.tags[1]
    if target == sender and q and q.name == "ping" and q.attr.xmlns == NS_PING then
      return self.srv:route(st.reply(stanza)) -- XEP-0410: still joined
    end
    local now = self.service.clock()
    if not pending then pending = {}; self.pending_iq = pending; self.pending_count = 0 end
    if self.pending_count >= self.service.limits.max_pending_iq then
      for k, p in pairs(pending) do -- forget requests nobody answered
        if now - p.time > 60 then pending[k] = nil; self.pending_count = self.pending_count - 1 end
      end
      if self.pending_count >= self.service.limits.max_pending_iq then
        return self:reply_error(stanza, "wait", "resource-constraint", "too many requests in flight")
      end
    end
    local new_id = self.service:next_id()
    pending[new_id] = { requester = from, id = id, responder = target.primary, requester_nick = sender.nick,
      target_nick = target.nick, time = now }
    self.pending_count = self.pending_count + 1
    local fwd = stanza:clone()
    fwd.attr.from, fwd.attr.to, fwd.attr.id = self:occupant_jid(sender.nick), target.primary, new_id
    self.srv:route(fwd)
  end
end

return { install = install }
