-- XEP-0085 chat state notifications: sending ours (a message with only the
-- state, not stored in archives) and a "chat-state" event for others'.
--
--   c:send_chat_state("juliet@example.com", "composing")
--   c:on("chat-state", function(from, state, stanza) end)

local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local session = require "lxmpp.session"

local type, error, tostring = type, error, tostring

local NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
local STATES = { active = true, composing = true, paused = true, inactive = true, gone = true }

local M = { NS_CHATSTATES = NS_CHATSTATES }

session.add_event("chat-state")

-- The plugin object, c.chatstates (docs/api.md "Plugins"), has no state.
M.forwards = { send_chat_state = "send" }
M.events = { "chat-state" }

--- c.chatstates:send(to, state [, type]) -> true | nil, message, condition
function M:send(to, state, typ)
  if type(to) ~= "string" or not jid.prep(to) then error("send_chat_state: invalid JID " .. tostring(to), 2) end
  if not STATES[state] then
    error("send_chat_state: state must be active, composing, paused, inactive or gone", 2)
  end
  return self.client:send(st.message({ to = to, type = typ or "chat", id = session.new_id() })
    :tag(state, { xmlns = NS_CHATSTATES }):up()
    :tag("no-store", { xmlns = "urn:xmpp:hints" }):up())
end

function M.init(_, c)
  c:add_feature(NS_CHATSTATES)
  c:hook_child("message", NS_CHATSTATES, function(m)
    if m.attr.type == "error" then return end
    local from = m.attr.from and jid.prep(m.attr.from)
    if not from then return end
    for child in m:childtags(nil, NS_CHATSTATES) do
      if STATES[child.name] then
        c:fire_user("chat-state", from, child.name, m)
        return
      end
    end
  end)
end

return M
