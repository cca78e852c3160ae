-- XEP-0359 unique and stable stanza ids: after c:set_origin_id(true), an
-- <origin-id/> on every message we send (the message's id; off by default,
-- as the XEP leaves it to the client and a bot seldom needs it), and reading the <stanza-id/> an archive or a room
-- stamped, trusted only when its `by` is the entity we expect (our own
-- account by default; a MUC room's JID for its messages): anyone can put a
-- stanza-id in a message they send.
--
--   local id = c:stanza_id(message [, by])

local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local session = require "lxmpp.session"

local type, error = type, error

local NS_SID = "urn:xmpp:sid:0"

local M = { NS_SID = NS_SID }

-- The plugin object, c.stanzaid (docs/api.md "Plugins"): .origin_ids,
-- what c:set_origin_id() set.
M.forwards = { stanza_id = "stanza_id", set_origin_id = "set_origin_id", origin_id = "origin_id" }

--- c:stanza_id(stanza [, by]) -> the id `by` (default: our bare JID) assigned, or nil
function M:stanza_id(stanza, by)
  if not st.is_stanza(stanza) then error("stanza_id: expected a stanza", 2) end
  if by ~= nil and type(by) ~= "string" then error("stanza_id: by must be a JID string", 2) end
  by = by or self.client.bare_jid
  for s in stanza:childtags("stanza-id", NS_SID) do
    if s.attr.by and jid.equal(s.attr.by, by) and type(s.attr.id) == "string" and s.attr.id ~= "" then
      return s.attr.id
    end
  end
  return nil
end

--- c:set_origin_id(on): whether the messages we send carry an origin-id
function M:set_origin_id(on)
  if type(on) ~= "boolean" then error("set_origin_id: expected a boolean", 2) end
  self.origin_ids = on
end

--- c:origin_id(stanza) -> the sender's origin-id, or nil
function M.origin_id(_, stanza)
  if not st.is_stanza(stanza) then error("origin_id: expected a stanza", 2) end
  local o = stanza:get_child("origin-id", NS_SID)
  return o and o.attr.id or nil
end

function M:init(c)
  c:add_feature(NS_SID)
  c.bus:add("stanza-out", function(s)
    if self.origin_ids and s.name == "message" and s.attr.type ~= "error"
        and not s:get_child("origin-id", NS_SID) then
      if not s.attr.id then s.attr.id = session.new_id() end
      s:add_direct_child(st.stanza("origin-id", { xmlns = NS_SID, id = s.attr.id }))
    end
  end)
end

return M
