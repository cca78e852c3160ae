-- XEP-0202 entity time: asking another entity for its time, and answering
-- with ours (UTC and this machine's offset).
--
--   local t = c:time("example.org")   -- { utc = seconds, tzo = "+01:00", offset = 3600 }
--
-- The client's plugin object is c.time (docs/api.md "Plugins"); calling it
-- as a method, c:time(to), is c.time:query(to).

local st = require "lxmpp.stanza"
local datetime = require "lxmpp.datetime"

local type, error, tonumber = type, error, tonumber

local NS_TIME = "urn:xmpp:time"

local M = {}

--- c.time:query(to [, timeout]) -> { utc =, tzo =, offset = } | nil, message, condition
function M:query(to, timeout)
  if type(to) ~= "string" then error("time: to must be a JID string", 2) end
  local r, msg, cond = self.client:request(st.iq({ type = "get", to = to }):tag("time", { xmlns = NS_TIME }), timeout)
  if not r then return nil, msg, cond end
  local t = r:get_child("time", NS_TIME)
  local utc, err = datetime.parse(t and t:get_child_text("utc") or "")
  if not utc then return nil, "bad time answer: " .. err, "bad-request" end
  local tzo = t:get_child_text("tzo") or ""
  local sign, h, m = tzo:match("^([+-])(%d%d):(%d%d)$")
  if not sign and tzo ~= "Z" then return nil, "bad time zone in the time answer: " .. tzo, "bad-request" end
  local offset = sign and (tonumber(h) * 3600 + tonumber(m) * 60) * (sign == "-" and -1 or 1) or 0
  return { utc = utc, tzo = tzo, offset = offset }
end

--- c:time(to [, timeout]): the plugin object called as a client method.
function M.__call(p, _, to, timeout) return p:query(to, timeout) end

function M.init(_, c)
  c:add_feature(NS_TIME)
  c:handle_iq(NS_TIME, function(iq)
    if iq.attr.type ~= "get" then return st.error_reply(iq, "cancel", "bad-request") end
    local now = os.time()
    return st.reply(iq):tag("time", { xmlns = NS_TIME })
      :text_tag("tzo", datetime.tzo(datetime.local_offset(now))):text_tag("utc", datetime.format(now))
  end)
end

return M
