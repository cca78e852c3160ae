-- XEP-0203 delayed delivery: when a stanza was really sent (offline
-- messages, MUC history, archives, forwarded copies).
--
--   local stamp, from, reason = delay.of(message)   -- Unix seconds, or nil
--   c:delay_of(message)                              -- the same, as a method

local datetime = require "lxmpp.datetime"
local st = require "lxmpp.stanza"

local error = error

local NS_DELAY = "urn:xmpp:delay"

local M = { NS_DELAY = NS_DELAY }

--- delay.of(stanza) -> stamp (Unix seconds), from, reason | nil
function M.of(stanza)
  if not st.is_stanza(stanza) then error("delay.of: expected a stanza", 2) end
  local d = stanza:get_child("delay", NS_DELAY)
  if not d then return nil end
  local stamp = datetime.parse(d.attr.stamp)
  if not stamp then return nil end
  local reason = d:get_text()
  return stamp, d.attr.from, reason ~= "" and reason or nil
end

--- delay.add(stanza, stamp, from) -> stanza with a <delay/> child
function M.add(stanza, stamp, from)
  if not st.is_stanza(stanza) then error("delay.add: expected a stanza", 2) end
  return stanza:add_direct_child(st.stanza("delay", { xmlns = NS_DELAY, stamp = datetime.format(stamp), from = from }))
end

-- The plugin object, c.delay (docs/api.md "Plugins"), has no state.
M.forwards = { delay_of = "delay_of" }

--- c:delay_of(stanza) -> stamp, from, reason | nil
function M.delay_of(_, stanza) return M.of(stanza) end

return M
