-- lxmpp.server.service: what every service on a domain of its own (pubsub,
-- upload) does with a stanza before its own IQ handling: the sender must be
-- a valid JID (it is stored prepared), the domain's nodes and resources do
-- not exist, messages bounce, presence and IQ results and errors are
-- ignored.

local jid = require "lxmpp.jid"

local M = {}

--- service.request(srv, s, node, res) -> type, payload, xmlns for an IQ
-- get or set to the domain itself; nil when it was dealt with here.
function M.request(srv, s, node, res)
  local from = s.attr.from and jid.prep(s.attr.from)
  if not from then return nil end
  s.attr.from = from
  if node or res then
    srv:bounce(s, "cancel", "service-unavailable")
    return nil
  end
  if s.name ~= "iq" then
    if s.name == "message" then srv:bounce(s, "cancel", "service-unavailable") end
    return nil
  end
  local t = s.attr.type
  if t ~= "get" and t ~= "set" then return nil end
  local q = s.tags[1]
  return t, q, q and q.attr.xmlns
end

return M
