-- Presence subscriptions (RFC 6121 §3), XEP-0199 ping and XEP-0092 version
-- queries for clients.
--
--   c:subscribe(jid)  c:approve(jid)  c:deny(jid)  c:unsubscribe(jid)
--   c:on("subscription", function(kind, from, stanza) end)
--       kind: "subscribe" (a request), "subscribed" (approved), "unsubscribe",
--             "unsubscribed" (denied or cancelled); from: bare JID
--   c:ping(to [, timeout]) -> seconds | nil, message, condition
--   c:version(to [, timeout]) -> { name=, version=, os= } | nil, msg, cond

local core = require "lxmpp.core"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local session = require "lxmpp.session"

local type, error, tostring = type, error, tostring

local M = {}

session.add_event("subscription")

local SUBSCRIPTION = { subscribe = true, subscribed = true, unsubscribe = true, unsubscribed = true }

local function bare_of(who, fname)
  local bare = type(who) == "string" and jid.prep(who) and jid.bare(jid.prep(who))
  if not bare then error(fname .. ": invalid JID " .. tostring(who), 3) end
  return bare
end

-- The plugin object, c.presence (docs/api.md "Plugins"), has no state of
-- its own: its methods are the client's c:subscribe(), c:ping() and so on.
M.forwards = { subscribe = "subscribe", approve = "approve", deny = "deny", unsubscribe = "unsubscribe",
ping = "ping", version = "version" }
M.events = { "subscription" }

local function send_typed(self, who, typ, fname)
  return self.client:send(st.presence({ to = bare_of(who, fname), type = typ }))
end
--- ask who for a subscription to their presence
function M:subscribe(who) return send_typed(self, who, "subscribe", "subscribe") end
--- approve who's request (or pre-approve)
function M:approve(who) return send_typed(self, who, "subscribed", "approve") end
--- deny who's request, or cancel their subscription
function M:deny(who) return send_typed(self, who, "unsubscribed", "deny") end
--- stop receiving who's presence
function M:unsubscribe(who) return send_typed(self, who, "unsubscribe", "unsubscribe") end

--- c:ping(to [, timeout]) -> round trip seconds | nil, message, condition
function M:ping(to, timeout)
  if to ~= nil and type(to) ~= "string" then error("ping: to must be a JID string", 2) end
  local t0 = core.now()
  local c = self.client
  local r, msg, cond = c:request(st.iq({ type = "get", to = to or c.domain })
    :tag("ping", { xmlns = "urn:xmpp:ping" }), timeout)
  if not r then return nil, msg, cond end
  return core.now() - t0
end

--- c:version(to [, timeout]) -> { name, version, os } | nil, message, condition
function M:version(to, timeout)
  if type(to) ~= "string" then error("version: to must be a JID string", 2) end
  local r, msg, cond = self.client:request(st.iq({ type = "get", to = to })
    :tag("query", { xmlns = "jabber:iq:version" }), timeout)
  if not r then return nil, msg, cond end
  local q = r:get_child("query", "jabber:iq:version")
  if not q then return nil, "empty version reply", "bad-request" end
  return { name = q:get_child_text("name"), version = q:get_child_text("version"), os = q:get_child_text("os") }
end

function M.init(_, c)
  c.bus:add("stanza-in", function(s)
    if s.name == "presence" and SUBSCRIPTION[s.attr.type] then
      local from = s.attr.from and jid.prep(s.attr.from)
      if from then c:fire_user("subscription", s.attr.type, jid.bare(from), s) end
    end
  end)
end

return M
