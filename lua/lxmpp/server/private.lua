-- lxmpp.server.private: private XML storage (XEP-0049) for the accounts of
-- the embedded server. An account keeps one XML element per namespace
-- (XEP-0049 §2: the element's name and namespace name it; a new one
-- replaces the old). Only the account itself reads and writes it; anyone
-- else gets forbidden (§3).
--
-- The XEP-0048 bookmarks element (storage:bookmarks) is not kept here but
-- handed to lxmpp.server.bookmarks, which keeps the conferences in the
-- account's urn:xmpp:bookmarks:1 PEP node (XEP-0402 §5.3, "compat"), so
-- clients of either protocol see the same bookmarks.
--
-- Bounds (docs/server.md "Protection"): limits.max_private_bytes of XML and
-- limits.max_private_items namespaces per account; a set beyond either is
-- refused with resource-constraint and changes nothing.
--
-- Storage: kind "private", key the account's user name, value a table
-- namespace -> XML text (one row per account, removed with the account).

local st = require "lxmpp.stanza"

local setmetatable, pairs, tostring, type = setmetatable, pairs, tostring, type

local M = { NS = "jabber:iq:private" }
local KIND = "private"

local Private = {}
Private.__index = Private

--- private.new(im) -> the private storage of the IM core's accounts.
-- Hooks the account's own jabber:iq:private requests (others': forbidden,
-- XEP-0049 §3) and the server's disco features.
function M.new(im)
  local self = setmetatable({ im = im, srv = im.srv }, Private)
  local srv = self.srv
  im:hook("iq/self/" .. M.NS, function(ev) self:iq(ev.origin, ev.stanza); return true end)
  im:hook("iq/bare/" .. M.NS, function(ev)
    srv:bounce(ev.stanza, "cancel", "forbidden", "private storage is its owner's alone")
    return true
  end)
  im:hook("disco-info/host", function(ev) ev.reply:tag("feature", { var = M.NS }):up() end)
  return self
end

--- The stored elements of account `user`: namespace -> XML text.
function Private:all(user)
  local t = self.srv.store:get(KIND, user)
  return type(t) == "table" and t or {}
end

--- The element stored under namespace ns for user, or nil.
function Private:get(user, ns)
  local xml = self:all(user)[ns]
  return xml and st.parse(xml) or nil
end

--- Stores el (nil: removes) under namespace ns for user; true, or nil,
-- error type, condition, text when a bound refuses it.
function Private:set(user, ns, el)
  local limits = self.srv.limits
  local t = self:all(user)
  local xml = el and tostring(el) or nil
  t[ns] = xml
  local bytes, n = 0, 0
  for _, v in pairs(t) do bytes, n = bytes + #v, n + 1 end
  if xml and n > limits.max_private_items then
    return nil, "wait", "resource-constraint",
      ("private storage holds at most %d namespaces per account"):format(limits.max_private_items)
  end
  if xml and bytes > limits.max_private_bytes then
    return nil, "wait", "resource-constraint",
      ("private storage holds at most %d bytes of XML per account"):format(limits.max_private_bytes)
  end
  local ok, err = self.srv.store:set(KIND, user, n > 0 and t or nil, user)
  if not ok then return nil, "wait", "internal-server-error", tostring(err) end
  return true
end

-- The one element of a <query/> (XEP-0049 §2.1, §2.2), or nil, error reply.
local function payload(iq, q)
  local el = q.tags[1]
  if not el or #q.tags > 1 then
    return nil, st.error_reply(iq, "modify", "not-acceptable", "the query holds exactly one element")
  end
  local ns = el.attr.xmlns
  if not ns or ns == "" or ns == M.NS or ns == "jabber:client" then
    return nil, st.error_reply(iq, "modify", "not-acceptable", "the element needs a namespace of its own")
  end
  return el
end

--- An IQ from sess to its own private storage; replies through sess.
function Private:iq(sess, iq)
  local q = iq.tags[1]
  if q.name ~= "query" then return sess:send(st.error_reply(iq, "modify", "bad-request")) end
  local el, e = payload(iq, q)
  if not el then return sess:send(e) end
  local ns = el.attr.xmlns
  local bookmarks = self.im.bookmarks
  if iq.attr.type == "get" then
    local got
    if ns == bookmarks.NS_LEGACY and self.srv.pep then
      got = bookmarks:legacy(sess.bare)
    else
      got = self:get(sess.user, ns)
    end
    local r = st.reply(iq):tag("query", { xmlns = M.NS })
    r:add_child(got or st.stanza(el.name, { xmlns = ns }))
    return sess:send(r)
  end
  local ok, etype, cond, text
  if ns == bookmarks.NS_LEGACY and self.srv.pep then
    ok, etype, cond, text = bookmarks:store_legacy(sess.bare, el)
  else
    ok, etype, cond, text = self:set(sess.user, ns, el)
  end
  if not ok then return sess:send(st.error_reply(iq, etype, cond, text)) end
  return sess:send(st.reply(iq))
end

return M
