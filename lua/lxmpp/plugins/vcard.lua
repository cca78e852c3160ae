-- vCards (XEP-0054, vcard-temp) and vCard-based avatars (XEP-0153) for
-- clients.
--
--   local v = c:vcard_get([jid])   -- { fn, nickname, n = { given, family, ... },
--                                  --   email = { ... }, tel = { ... }, url, bday,
--                                  --   org = { name, unit }, title, role, desc, note,
--                                  --   photo = { type, data }, raw = <vCard/> }
--   c:vcard_set{ fn = "Bot", nickname = "bot" }   -- replaces our vCard
--   c:avatar_publish(png_bytes, "image/png")       -- -> sha1 hex
--   c:avatar_get(jid) -> data, mime_type, sha1
--   c:on("avatar", function(who, sha1, from) end)  -- a contact's avatar changed
--
-- Once an avatar is published (or c.vcard.hash is set), every available
-- presence the client sends carries its hash (vcard-temp:x:update). A
-- fetched avatar is checked against the hash its owner announced.

local core = require "lxmpp.core"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local session = require "lxmpp.session"
local bounded = require "lxmpp.bounded"

local type, error, pairs, ipairs, tostring = type, error, pairs, ipairs, tostring
local format, byte = string.format, string.byte

local NS = "vcard-temp"
local NS_UPDATE = "vcard-temp:x:update"

local M = { xmlns = NS }

-- Announced avatar hashes a client remembers (c.vcard.hashes), by bare JID
-- or room occupant JID: beyond this, the one announced longest ago is
-- forgotten (a hostile server or room may announce any number). Read when
-- a client loads the plugin.
M.MAX_HASHES = 10000

session.add_event("avatar")

local TEXT = { fn = "FN", nickname = "NICKNAME", bday = "BDAY", url = "URL", title = "TITLE", role = "ROLE",
  desc = "DESC", note = "NOTE", jabberid = "JABBERID" }
local N_PARTS = { family = "FAMILY", given = "GIVEN", middle = "MIDDLE", prefix = "PREFIX", suffix = "SUFFIX" }
local ORG_PARTS = { name = "ORGNAME", unit = "ORGUNIT" }

local function sha1_hex(data)
  return (core.hash("sha1", data):gsub(".", function(c) return format("%02x", byte(c)) end))
end
M.sha1_hex = sha1_hex

-- Reads a <vCard/> into a table (see the header); never raises.
function M.parse(v)
  local out = { raw = v, email = {}, tel = {} }
  for k, el in pairs(TEXT) do out[k] = v:get_child_text(el) end
  local function parts(el, map)
    local node = v:get_child(el)
    if not node then return nil end
    local t = {}
    for k, name in pairs(map) do t[k] = node:get_child_text(name) end
    return t
  end
  out.n, out.org = parts("N", N_PARTS), parts("ORG", ORG_PARTS)
  for e in v:childtags("EMAIL") do out.email[#out.email + 1] = e:get_child_text("USERID") end
  for t in v:childtags("TEL") do out.tel[#out.tel + 1] = t:get_child_text("NUMBER") end
  local photo = v:get_child("PHOTO")
  if photo then
    local bin = photo:get_child_text("BINVAL")
    local data = bin and core.base64_decode((bin:gsub("%s", "")))
    out.photo = { type = photo:get_child_text("TYPE"), data = data, extval = photo:get_child_text("EXTVAL") }
  end
  return out
end

local function check_string(v, what)
  if v ~= nil and type(v) ~= "string" then error("vcard_set: " .. what .. " must be a string", 4) end
end

-- Builds a <vCard/> from a table (see the header); raises on misuse.
function M.build(t)
  local v = st.stanza("vCard", { xmlns = NS })
  for k, el in pairs(TEXT) do
    check_string(t[k], k)
    if t[k] then v:text_tag(el, t[k]) end
  end
  local function parts(key, el, map)
    local p = t[key]
    if p == nil then return end
    if type(p) ~= "table" then error("vcard_set: " .. key .. " must be a table", 3) end
    v:tag(el)
    for k, name in pairs(map) do
      check_string(p[k], key .. "." .. k)
      if p[k] then v:text_tag(name, p[k]) end
    end
    v:up()
  end
  parts("n", "N", N_PARTS)
  parts("org", "ORG", ORG_PARTS)
  for _, key in ipairs({ "email", "tel" }) do
    local list = t[key]
    if list ~= nil and type(list) ~= "table" then error("vcard_set: " .. key .. " must be a list of strings", 2) end
    for _, s in ipairs(list or {}) do
      check_string(s, key)
      if key == "email" then v:tag("EMAIL"):tag("INTERNET"):up():text_tag("USERID", s):up()
      else v:tag("TEL"):tag("VOICE"):up():text_tag("NUMBER", s):up() end
    end
  end
  local photo = t.photo
  if photo ~= nil then
    if type(photo) ~= "table" or type(photo.data) ~= "string" or type(photo.type) ~= "string" then
      error("vcard_set: photo must be { type = mime, data = bytes }", 2)
    end
    v:tag("PHOTO"):text_tag("TYPE", photo.type):text_tag("BINVAL", core.base64_encode(photo.data)):up()
  end
  return v
end

-- Whose vCard: an account's bare JID, or a room occupant's full JID
-- (XEP-0153 §4.1: occupants' vCards are asked of their occupant JIDs).
local function target_of(self, who, fname)
  if who == nil then return nil end
  local p = type(who) == "string" and jid.prep(who)
  if not p then error(fname .. ": invalid JID " .. tostring(who), 3) end
  if self.client.muc.rooms[jid.bare(p)] then return p end
  return jid.bare(p)
end

-- A presence's avatar hash: the 40-hex-digit SHA-1, "" (no avatar), or
-- nil (no valid announcement).
local function announced_hash(s)
  local x = s:get_child("x", NS_UPDATE)
  local photo = x and x:get_child("photo")
  if not photo then return nil end
  local h = (photo:get_text() or ""):lower()
  if h == "" or h:match("^" .. ("%x"):rep(40) .. "$") then return h end
  return nil
end

-- The plugin object, c.vcard (docs/api.md "Plugins"): .hash is our
-- avatar's hash once published, .presence our last broadcast presence, and
-- .hashes the hashes contacts and occupants announced (an lxmpp.bounded map
-- of M.MAX_HASHES: .hashes:get(jid); an occupant's goes when it leaves).
M.forwards = { vcard_get = "get", vcard_set = "set", avatar_publish = "avatar_publish", avatar_get = "avatar_get" }
M.events = { "avatar" }

--- c.vcard:get([jid]) -> vcard table | nil, message, condition
function M:get(who, timeout)
  local to = target_of(self, who, "vcard_get")
  local r, msg, cond = self.client:request(st.iq({ type = "get", to = to }):tag("vCard", { xmlns = NS }), timeout)
  if not r then return nil, msg, cond end
  local v = r:get_child("vCard", NS)
  if not v then
    -- an empty result means an empty vCard (XEP-0054 §3.1)
    if #r.tags > 0 then return nil, "no vCard in the reply", "bad-request" end
    v = st.stanza("vCard", { xmlns = NS })
  end
  return M.parse(v)
end

--- c.vcard:set(t_or_element) -> true | nil, message, condition
function M:set(t, timeout)
  local v
  if st.is_stanza(t) then
    if t.name ~= "vCard" or t.attr.xmlns ~= NS then error("vcard_set: expected a <vCard xmlns='vcard-temp'/>", 2) end
    v = t
  elseif type(t) == "table" then
    v = M.build(t)
  else
    error("vcard_set: expected a table or a <vCard/> element", 2)
  end
  local r, msg, cond = self.client:request(st.iq({ type = "set" }):add_child(v), timeout)
  if not r then return nil, msg, cond end
  return true
end

--- c.vcard:avatar_publish(data, mime) -> sha1 | nil, message, condition
-- (data nil: remove the avatar)
function M:avatar_publish(data, mime)
  if data ~= nil and type(data) ~= "string" then error("avatar_publish: data must be a string or nil", 2) end
  if data and type(mime) ~= "string" then error("avatar_publish: give the image's MIME type", 2) end
  local current, msg, cond = self:get()
  if not current then return nil, msg, cond end
  local v = current.raw:clone()
  v:remove_children("PHOTO")
  if data then v:tag("PHOTO"):text_tag("TYPE", mime):text_tag("BINVAL", core.base64_encode(data)):up() end
  local ok
  ok, msg, cond = self:set(v)
  if not ok then return nil, msg, cond end
  self.hash = data and sha1_hex(data) or ""
  if self.presence then               -- tell our contacts (XEP-0153 §3.2)
    local p = st.clone(self.presence)
    p:remove_children("x", NS_UPDATE)
    ok, msg, cond = self.client:send(p)
    if not ok then return nil, msg, cond end
  end
  return self.hash
end

--- c.vcard:avatar_get(jid) -> data, mime, sha1 | nil, message, condition
function M:avatar_get(who, timeout)
  local target = target_of(self, who, "avatar_get")
  local v, msg, cond = self:get(target, timeout)
  if not v then return nil, msg, cond end
  if not v.photo or not v.photo.data then return nil, "no avatar", "item-not-found" end
  local hash = sha1_hex(v.photo.data)
  local known = self.hashes:get(target)
  if known and known ~= "" and known ~= hash then
    return nil, "the avatar does not match the hash its owner announced", "not-acceptable"
  end
  return v.photo.data, v.photo.type, hash
end

function M:init(c)
  self.hashes = bounded.new(M.MAX_HASHES)
  -- available presence carries our avatar's hash once we have one
  c.bus:add("stanza-out", function(s)
    if s.name ~= "presence" or s.attr.type ~= nil then return end
  -- our broadcast presence, kept in the plugin object (reconnect.lua keeps its own copy)
    if s.attr.to == nil then self.presence = st.clone(s) end
    if self.hash and not s:get_child("x", NS_UPDATE) then
      s:add_direct_child(st.stanza("x", { xmlns = NS_UPDATE }):text_tag("photo", self.hash))
    end
  end)
  c.bus:add("stanza-in", function(s)
    if s.name ~= "presence" then return end
    if s.attr.type == "unavailable" then
      -- an occupant that leaves a room takes its hash along (a contact's
      -- stays: its other resources may still announce it)
      local from = s.attr.from and jid.prep(s.attr.from)
      if from and jid.resource(from) and c.muc.rooms[jid.bare(from)] then self.hashes:delete(from) end
      return
    end
    if s.attr.type ~= nil then return end
    local hash = announced_hash(s)
    local from = hash and s.attr.from and jid.prep(s.attr.from)
    if not from then return end
    local bare = jid.bare(from)
    -- occupants of a room are told apart by their occupant JIDs
    local key = c.muc.rooms[bare] and from or bare
    if self.hashes:get(key) ~= hash then
      self.hashes:put(key, hash)
      c:fire_user("avatar", key, hash, from)
    end
  end)
end

return M
