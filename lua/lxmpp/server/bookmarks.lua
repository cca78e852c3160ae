-- lxmpp.server.bookmarks: one set of bookmarks per account whichever
-- protocol a client speaks (XEP-0402 §5.3, "urn:xmpp:bookmarks:1#compat").
--
-- The conferences live in the account's PEP node urn:xmpp:bookmarks:1
-- (XEP-0402 §3: one item per room, its id the room's JID, published with
-- the XEP-0223 options persist_items, max_items=max,
-- send_last_published_item=never, access_model=whitelist, so only the
-- account reads them). A client using XEP-0048 over private XML storage
-- (XEP-0049, lxmpp.server.private) reads <storage xmlns='storage:bookmarks'/>
-- made from those items, and a <storage/> it writes becomes those items:
-- rooms it lists are published, rooms it left out are retracted (with
-- notifications, so XEP-0402 clients follow). What <storage/> holds besides
-- conferences (XEP-0048 <url/> bookmarks) is kept as it was written, in
-- private storage under the same namespace.
--
-- XEP-0048 over PEP (XEP-0223; XEP-0402 §5.3 "#compat-pep"): the
-- account's PEP node storage:bookmarks is not a node of its own either. A
-- publish to it by the account becomes the same write as above (the
-- <storage/> in its one item), and reading its items gives one item,
-- "current", made as above; so the three views never disagree. Other
-- requests on that node go to PEP as they are.
--
-- A write goes through the PEP service's own publish and retract, with the
-- pubsub bounds (max_pubsub_items rooms, max_pubsub_bytes of XML); a write
-- refused there leaves every room already bookmarked in place.

local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local forms = require "lxmpp.forms"

local setmetatable, ipairs, pairs, tostring = setmetatable, ipairs, pairs, tostring

local NS = "urn:xmpp:bookmarks:1"
local NS_LEGACY = "storage:bookmarks"
local NS_PUBSUB = "http://jabber.org/protocol/pubsub"

local M = { NS = NS, NS_LEGACY = NS_LEGACY, FEATURES = { NS .. "#compat", NS .. "#compat-pep" } }

local Bookmarks = {}
Bookmarks.__index = Bookmarks
Bookmarks.NS, Bookmarks.NS_LEGACY = NS, NS_LEGACY

--- bookmarks.new(im) -> the bookmarks of the IM core's accounts.
-- Hooks the account's own requests to the storage:bookmarks node of its
-- PEP (before PEP's own handler) and its disco features.
function M.new(im)
  local self = setmetatable({ im = im, srv = im.srv }, Bookmarks)
  local srv = self.srv
  im:hook("iq/self/" .. NS_PUBSUB, function(ev)
    if not srv.pep or not self:handles_pep(ev.stanza) then return nil end
    self:pep_iq(ev.origin, ev.stanza)
    return true
  end, -5)
  im:hook("disco-info/account", function(ev)
    if ev.owner and srv.pep then for _, f in ipairs(M.FEATURES) do ev.reply:tag("feature", { var = f }):up() end end
  end)
  return self
end

local function truthy(v) return v == "true" or v == "1" end

-- XEP-0048 <conference jid=/> -> XEP-0402 <conference/> payload.
local function to_native(c)
  local out = st.stanza("conference", { xmlns = NS, name = c.attr.name,
    autojoin = truthy(c.attr.autojoin) and "true" or nil })
  local nick, password = c:get_child_text("nick"), c:get_child_text("password")
  if nick then out:text_tag("nick", nick) end
  if password then out:text_tag("password", password) end
  return out
end

-- XEP-0402 item (id, payload) -> XEP-0048 <conference jid=/>.
local function to_legacy(id, p)
  local out = st.stanza("conference", { jid = id, name = p.attr.name,
    autojoin = truthy(p.attr.autojoin) and "true" or "false" })
  local nick, password = p:get_child_text("nick"), p:get_child_text("password")
  if nick then out:text_tag("nick", nick) end
  if password then out:text_tag("password", password) end
  return out
end

-- The account's urn:xmpp:bookmarks:1 node, or nil.
function Bookmarks:node(bare)
  local service = self.srv.pep:service(bare)
  return service and service.nodes[NS], service
end

--- The XEP-0048 <storage/> of account `bare`: its conferences from PEP,
-- then what else it last wrote there.
function Bookmarks:legacy(bare)
  local out = st.stanza("storage", { xmlns = NS_LEGACY })
  local node = self:node(bare)
  for _, item in ipairs(node and node.items or {}) do
    local p = item.xml and st.parse(item.xml)
    if p and p.name == "conference" and p.attr.xmlns == NS then out:add_child(to_legacy(item.id, p)) end
  end
  local rest = self.im.private:get(jid.node(bare), NS_LEGACY)
  for child in (rest and rest:childtags() or function() end) do
    if not (child.name == "conference" and (child.attr.xmlns or NS_LEGACY) == NS_LEGACY) then
      out:add_child(child)
    end
  end
  return out
end

local PUBLISH_OPTIONS = {
  { var = "FORM_TYPE", type = "hidden", value = NS_PUBSUB .. "#publish-options" },
  { var = "pubsub#persist_items", type = "boolean", value = true },
  { var = "pubsub#max_items", value = "max" },
  { var = "pubsub#send_last_published_item", value = "never" },
  { var = "pubsub#access_model", value = "whitelist" },
}

-- Runs a pubsub request as the account itself; true, or nil, error
-- type, condition, text.
local function as_owner(self, bare, op)
  local iq = st.iq({ type = "set", from = bare, to = bare, id = "bookmarks-compat" })
    :tag("pubsub", { xmlns = NS_PUBSUB }):add_child(op)
  if op.name == "publish" then
    iq:tag("publish-options"):add_child(forms.new(PUBLISH_OPTIONS):form(nil, "submit")):up()
  end
  local reply
  local service = self.srv.pep:service(bare, true)
  service:handle_iq(iq, function(r) reply = r end)
  if reply and reply.attr.type == "result" then return true end
  local etype, cond, text = "wait", "internal-server-error", "the bookmarks could not be stored"
  if reply then etype, cond, text = reply:get_error() end
  return nil, etype or "cancel", cond or "undefined-condition", text
end

--- Stores a XEP-0048 <storage/> for account `bare`; true, or nil, error
-- type, condition, text.
function Bookmarks:store_legacy(bare, el)
  local rooms, order, rest = {}, {}, st.stanza("storage", { xmlns = NS_LEGACY })
  for child in el:childtags() do
    if child.name == "conference" and (child.attr.xmlns or NS_LEGACY) == NS_LEGACY then
      local room = child.attr.jid and jid.prep(child.attr.jid)
      if not room or jid.resource(room) or not jid.node(room) then
        return nil, "modify", "bad-request", "a conference needs the jid of a room: " .. tostring(child.attr.jid)
      end
      if not rooms[room] then order[#order + 1] = room end
      rooms[room] = child
    else
      rest:add_child(child)
    end
  end
  local max = self.srv.limits.max_pubsub_items
  if #order > max then
    return nil, "wait", "resource-constraint", ("at most %d rooms may be bookmarked"):format(max)
  end
  local ok, etype, cond, text = self.im.private:set(jid.node(bare), NS_LEGACY, #rest.tags > 0 and rest or nil)
  if not ok then return nil, etype, cond, text end
  local node = self:node(bare)
  for _, room in ipairs(order) do
    local payload = to_native(rooms[room])
    -- XEP-0402 <extensions/> (pinning, ...) have no XEP-0048 form: kept
    local old = node and node.by_id[room]
    local was = old and old.xml and st.parse(old.xml)
    local ext = was and was:get_child("extensions", NS)
    if ext then payload:add_child(ext) end
    ok, etype, cond, text = as_owner(self, bare, st.stanza("publish", { node = NS })
      :tag("item", { id = room }):add_child(payload):up())
    if not ok then return nil, etype, cond, text end
  end
  node = self:node(bare)
  local gone = {}
  for _, item in pairs(node and node.items or {}) do
    if not rooms[item.id] then gone[#gone + 1] = item.id end
  end
  for _, id in ipairs(gone) do
    ok, etype, cond, text = as_owner(self, bare, st.stanza("retract", { node = NS, notify = "true" })
      :tag("item", { id = id }):up())
    if not ok then return nil, etype, cond, text end
  end
  return true
end

---------------------------------------------------------------------------
-- XEP-0048 over PEP

local function legacy_op(q)
  if not q or q.name ~= "pubsub" or q.attr.xmlns ~= NS_PUBSUB then return nil end
  local op = q:get_child("publish") or q:get_child("items")
  return op and op.attr.node == NS_LEGACY and op or nil
end

--- Is this request of the account to its own PEP the storage:bookmarks
-- node's publish or items?
function Bookmarks.handles_pep(_, iq)
  local op = legacy_op(iq.tags[1])
  if not op then return false end
  return (op.name == "publish" and iq.attr.type == "set") or (op.name == "items" and iq.attr.type == "get")
end

--- Answers such a request of sess (see handles_pep).
function Bookmarks:pep_iq(sess, iq)
  local op = legacy_op(iq.tags[1])
  if op.name == "items" then
    local r = st.reply(iq):tag("pubsub", { xmlns = NS_PUBSUB }):tag("items", { node = NS_LEGACY })
      :tag("item", { id = "current" }):add_child(self:legacy(sess.bare))
    return sess:send(r)
  end
  local items = {}
  for it in op:childtags("item") do items[#items + 1] = it end
  local storage = #items == 1 and #items[1].tags == 1 and items[1].tags[1]
  if not storage or storage.name ~= "storage" or storage.attr.xmlns ~= NS_LEGACY then
    return sess:send(st.error_reply(iq, "modify", "bad-request",
      "publish one item holding <storage xmlns='storage:bookmarks'/>"))
  end
  local ok, etype, cond, text = self:store_legacy(sess.bare, storage)
  if not ok then return sess:send(st.error_reply(iq, etype, cond, text)) end
  return sess:send(st.reply(iq):tag("pubsub", { xmlns = NS_PUBSUB }):tag("publish", { node = NS_LEGACY })
    :tag("item", { id = items[1].attr.id or "current" }))
end

return M
