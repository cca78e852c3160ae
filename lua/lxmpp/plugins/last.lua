-- XEP-0012 last activity: asking (a server's uptime, an account's last
-- logout, a client's idle time) and answering as a client: the seconds since
-- this client last sent a message with a body (or since c:mark_active()),
-- told only to the account itself and to contacts with a presence
-- subscription (RFC 6121 "from" or "both"); anyone else gets forbidden.
--
--   local seconds, status = c:last_activity("juliet@example.com")

local core = require "lxmpp.core"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"

local type, error, tonumber, math_floor = type, error, tonumber, math.floor

local NS_LAST = "jabber:iq:last"

local M = {}

-- The plugin object, c.last (docs/api.md "Plugins"): .active, when the
-- client was last active (core.now()).
M.forwards = { last_activity = "activity", mark_active = "mark_active" }

--- c.last:activity(to [, timeout]) -> seconds, status | nil, message, condition
function M:activity(to, timeout)
  if type(to) ~= "string" then error("last_activity: to must be a JID string", 2) end
  local r, msg, cond = self.client:request(st.iq({ type = "get", to = to }):tag("query", { xmlns = NS_LAST }), timeout)
  if not r then return nil, msg, cond end
  local q = r:get_child("query", NS_LAST)
  local seconds = q and q.attr.seconds and q.attr.seconds:match("^%d+$") and tonumber(q.attr.seconds)
  if not seconds then return nil, "the last activity answer has no seconds", "bad-request" end
  local status = q:get_text()
  return seconds, status ~= "" and status or nil
end

--- c:mark_active(): the user (or bot) did something now
function M:mark_active()
  self.active = core.now()
end

local function may_know(self, from)
  local bare = from and jid.bare(from)
  if not bare or jid.equal(bare, self.client.bare_jid) then return true end
  local items = self.client.roster.items
  local item = items and items[jid.prep(bare) or bare]
  return item ~= nil and (item.subscription == "from" or item.subscription == "both")
end

function M:init(c)
  self.active = core.now()
  c:add_feature(NS_LAST)
  c.bus:add("stanza-out", function(s)
    if s.name == "message" and s:get_child("body") then self.active = core.now() end
  end)
  c:handle_iq(NS_LAST, function(iq)
    if iq.attr.type ~= "get" then return st.error_reply(iq, "cancel", "bad-request") end
    if not may_know(self, iq.attr.from) then return st.error_reply(iq, "auth", "forbidden") end
    return st.reply(iq):tag("query", { xmlns = NS_LAST,
      seconds = ("%d"):format(math_floor(core.now() - self.active)) })
  end)
end

return M
