-- Roster management (RFC 6121 §2) for clients: get (with versioning when
-- the server offers it), set, remove, and roster pushes -- accepted only
-- from the account itself (no from, or our bare JID), as
-- RFC 6121 §2.1.6 requires; a push from anyone else is refused and ignored.
--
--   local items = assert(c:roster_get())        -- { [bare jid] = item }
--   c:roster_set("juliet@example.com", "Juliet", { "Friends" })
--   c:roster_remove("juliet@example.com")
--   c:on("roster", function(item) ... end)      -- a push, item.subscription
--                                                -- == "remove" when removed

local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local session = require "lxmpp.session"

local type, error, ipairs, tostring = type, error, ipairs, tostring

local NS_ROSTER = "jabber:iq:roster"
local NS_ROSTERVER = "urn:xmpp:features:rosterver"

local M = {}

session.add_event("roster")

local function parse_item(item)
  local groups = {}
  for g in item:childtags("group") do groups[#groups + 1] = g:get_text() end
  table.sort(groups)      -- a set on the server: give it a stable order
  local bare = jid.prep(item.attr.jid or "")
  if not bare then return nil end
  return {
    jid = bare, name = item.attr.name, subscription = item.attr.subscription or "none",
    ask = item.attr.ask, approved = item.attr.approved == "true", groups = groups,
  }
end

-- The plugin object, c.roster (docs/api.md "Plugins"): .items is the
-- roster, { [bare jid] = item }, as the last get and the pushes since left
-- it (nil before the first), .ver its version.
M.forwards = { roster_get = "get", roster_set = "set", roster_remove = "remove" }
M.events = { "roster" }

--- c.roster:get([timeout]) -> items | nil, message, condition (c:roster_get)
function M:get(timeout)
  local c = self.client
  local q = { xmlns = NS_ROSTER }
  local versioning = c.stream_features and c.stream_features:get_child("ver", NS_ROSTERVER)
  if versioning then q.ver = self.ver or "" end
  local r, msg, cond = c:request(st.iq({ type = "get" }):tag("query", q), timeout)
  if not r then return nil, msg, cond end
  local query = r:get_child("query", NS_ROSTER)
  if not query then
    -- versioning: an empty result means our copy is current
    if versioning and self.items then return self.items end
    query = st.stanza("query", { xmlns = NS_ROSTER })
  end
  local items = {}
  for it in query:childtags("item") do
    local item = parse_item(it)
    if item then items[item.jid] = item end
  end
  self.items = items
  self.ver = query.attr.ver
  return items
end

local function set_item(self, attr, groups, timeout)
  local iq = st.iq({ type = "set" }):tag("query", { xmlns = NS_ROSTER }):tag("item", attr)
  for _, g in ipairs(groups or {}) do
    if type(g) ~= "string" then error("roster_set: groups must be strings", 3) end
    iq:text_tag("group", g)
  end
  local r, msg, cond = self.client:request(iq, timeout)
  if not r then return nil, msg, cond end
  return true
end

--- c.roster:set(jid, name, groups [, timeout]) -> true | nil, message, condition (c:roster_set)
function M:set(who, name, groups, timeout)
  local bare = type(who) == "string" and jid.prep(who)
  if not bare then error("roster_set: invalid JID " .. tostring(who), 2) end
  if name ~= nil and type(name) ~= "string" then error("roster_set: name must be a string", 2) end
  if groups ~= nil and type(groups) ~= "table" then error("roster_set: groups must be a list", 2) end
  return set_item(self, { jid = bare, name = name }, groups, timeout)
end

--- c.roster:remove(jid [, timeout]) -> true | nil, message, condition (c:roster_remove)
function M:remove(who, timeout)
  local bare = type(who) == "string" and jid.prep(who)
  if not bare then error("roster_remove: invalid JID " .. tostring(who), 2) end
  return set_item(self, { jid = bare, subscription = "remove" }, nil, timeout)
end

-- roster pushes
function M:init(c)
  c:handle_iq(NS_ROSTER, function(iq)
    local refused = c:refuse_foreign_push(iq, "roster push")
    if refused then return refused end
    if iq.attr.type ~= "set" then return st.error_reply(iq, "cancel", "bad-request") end
    local query = iq.tags[1]
    local items = {}
    for it in query:childtags("item") do items[#items + 1] = it end
    if #items ~= 1 then return st.error_reply(iq, "modify", "bad-request") end  -- RFC 6121 §2.1.6
    local item = parse_item(items[1])
    if not item then return st.error_reply(iq, "modify", "bad-request") end
    self.items = self.items or {}
    if item.subscription == "remove" then self.items[item.jid] = nil else self.items[item.jid] = item end
    if query.attr.ver then self.ver = query.attr.ver end
    c:fire_user("roster", item)
    return st.reply(iq)
  end)
end

return M
