-- XEP-0333 displayed markers (1.0.0): once c:set_markable(true), messages
-- with a body we send are markable (off by default: a bot rarely wants a
-- "displayed" message back for each of its answers); c:mark_displayed tells a sender we displayed one of theirs (in
-- a room also without <markable/>, as §4 allows); a "marker" event reports
-- others' markers (also the received and acknowledged ones older versions
-- sent). 1.0.0 has no disco feature: <markable/> is the opt-in.
--
--   c:set_markable(true)
--   c:mark_displayed(message_from_them)
--   c:on("marker", function(kind, id, from, stanza) end)

local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local session = require "lxmpp.session"

local type, error, ipairs = type, error, ipairs

local NS_MARKERS = "urn:xmpp:chat-markers:0"
local KINDS = { received = true, displayed = true, acknowledged = true }

local M = { NS_MARKERS = NS_MARKERS }

session.add_event("marker")

-- The plugin object, c.markers (docs/api.md "Plugins"): .markable, what
-- c:set_markable() set.
M.forwards = { set_markable = "set_markable", mark_displayed = "mark_displayed" }
M.events = { "marker" }

--- c:set_markable(on): whether the messages with a body we send are
-- markable (default false)
function M:set_markable(on)
  if type(on) ~= "boolean" then error("set_markable: expected a boolean", 2) end
  self.markable = on
end

--- c:mark_displayed(message) -> true | nil, message, condition
-- message: a message we received and displayed
function M:mark_displayed(message)
  if not st.is_stanza(message) or message.name ~= "message" then
    error("mark_displayed: expected a message stanza", 2)
  end
  local from, id = message.attr.from, message.attr.id
  if not from or not id then return nil, "the message has no sender or no id", "bad-request" end
  local typ = message.attr.type == "groupchat" and "groupchat" or "chat"
  if typ ~= "groupchat" and not message:get_child("markable", NS_MARKERS) then
    return nil, "the message is not markable", "not-acceptable"
  end
  local to = typ == "groupchat" and jid.bare(from) or from
  local c = self.client
  if typ == "groupchat" then id = c:stanza_id(message, to) or id end
  return c:send(st.message({ to = to, type = typ, id = session.new_id() })
    :tag("displayed", { xmlns = NS_MARKERS, id = id }):up())
end

function M:init(c)
  c.bus:add("stanza-out", function(s)
    if self.markable and s.name == "message" and s.attr.type ~= "error" and s:get_child("body")
        and not s:get_child("markable", NS_MARKERS) then
      s:add_direct_child(st.stanza("markable", { xmlns = NS_MARKERS }))
    end
  end)
  c:hook_child("message", NS_MARKERS, function(m)
    if m.attr.type == "error" then return end
    for _, child in ipairs(m.tags) do
      if child.attr.xmlns == NS_MARKERS and KINDS[child.name] and type(child.attr.id) == "string" then
        local from = m.attr.from and jid.prep(m.attr.from)
        if from then c:fire_user("marker", child.name, child.attr.id, from, m) end
        return
      end
    end
  end)
end

return M
