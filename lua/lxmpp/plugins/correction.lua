-- XEP-0308 last message correction: sending a corrected body for a message
-- we sent, and a "correction" event for others' (the application decides
-- whether `from` is who sent the message it replaces: XEP-0308 §5).
--
--   c:correct("juliet@example.com", old_id, "the right text")
--   c:on("correction", function(from, replaced_id, body, stanza) end)

local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local session = require "lxmpp.session"

local type, error, tostring = type, error, tostring

local NS_CORRECT = "urn:xmpp:message-correct:0"

local M = { NS_CORRECT = NS_CORRECT }

session.add_event("correction")

-- The plugin object, c.correction (docs/api.md "Plugins"), has no state.
M.forwards = { correct = "correct" }
M.events = { "correction" }

--- c:correct(to, id, body [, type]) -> the new message's id | nil, message, condition
function M:correct(to, id, body, typ)
  if type(to) ~= "string" or not jid.prep(to) then error("correct: invalid JID " .. tostring(to), 2) end
  if type(id) ~= "string" or id == "" then error("correct: id must be the id of the message corrected", 2) end
  if type(body) ~= "string" then error("correct: body must be a string", 2) end
  local new_id = session.new_id()
  local ok, msg, cond = self.client:send(st.message({ to = to, type = typ or "chat", id = new_id }, body)
    :tag("replace", { xmlns = NS_CORRECT, id = id }):up())
  if not ok then return nil, msg, cond end
  return new_id
end

function M.init(_, c)
  c:add_feature(NS_CORRECT)
  c:hook_child("message", NS_CORRECT, function(m)
    if m.attr.type == "error" then return end
    local r = m:get_child("replace", NS_CORRECT)
    local from = m.attr.from and jid.prep(m.attr.from)
    local body = m:get_child_text("body")
    if r and from and type(r.attr.id) == "string" and body then
      c:fire_user("correction", from, r.attr.id, body, m)
    end
  end)
end

return M
