-- lxmpp.server.mam: the message archive of each account (XEP-0313, with
-- XEP-0059 paging) and the XEP-0359 stanza ids that name its entries.
--
-- What is kept: one-to-one messages of type chat or normal with a body, in
-- the sender's archive (when the sender is our user) and in the
-- recipient's (when the recipient is our account), once each: a message to
-- oneself is kept once. Not kept: groupchat, headline and error messages,
-- messages without a body (chat states, receipts), and those with an
-- XEP-0334 <no-store/> or <no-permanent-store/> hint. An account keeps at
-- most limits.mam_max_messages entries (the oldest go first).
--
-- Every message for one of our accounts first loses any <stanza-id/> that
-- claims to be by that account (XEP-0359 §4: nobody can forge one); a kept
-- message then gets ours, <stanza-id by='user@domain' id='archive id'/>, the
-- id being random and unguessable.
--
-- Only the account itself queries its archive (anyone else: forbidden).
-- Queries may use XEP-0313's extended fields (urn:xmpp:mam:2#extended:
-- before-id, after-id, ids, <flip-page/>); an 'ids' list holds at most
-- limits.mam_max_page ids (a page could not hold more).
-- The IM core (server/im.lua) calls :outgoing, :incoming and :iq.

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local forms = require "lxmpp.forms"
local datetime = require "lxmpp.datetime"
local session = require "lxmpp.session"

local setmetatable, ipairs, tonumber, tostring, type, os_time, floor, min =
  setmetatable, ipairs, tonumber, tostring, type, os.time, math.floor, math.min

local NS_MAM = "urn:xmpp:mam:2"
local NS_EXTENDED = NS_MAM .. "#extended"
local NS_SID = "urn:xmpp:sid:0"
local NS_RSM = "http://jabber.org/protocol/rsm"
local NS_FORWARD = "urn:xmpp:forward:0"
local NS_DELAY = "urn:xmpp:delay"
local NS_HINTS = "urn:xmpp:hints"
local NS_VALIDATE = "http://jabber.org/protocol/xdata-validate"

-- XEP-0313 §"Determining support": an archive that takes before-id,
-- after-id, ids, <flip-page/> and metadata requests says #extended too
local M = { NS = NS_MAM, NS_SID = NS_SID, NS_EXTENDED = NS_EXTENDED, FEATURES = { NS_MAM, NS_EXTENDED, NS_SID } }

-- The query form: what a client may filter on (XEP-0313 §"Filtering
-- results"; before-id, after-id and ids: §"Limiting results by id").
local FILTER = forms.new{
  { var = "FORM_TYPE", type = "hidden", value = NS_MAM },
  { var = "with", type = "jid-single" },
  { var = "start", type = "text-single" },
  { var = "end", type = "text-single" },
  { var = "before-id", type = "text-single" },
  { var = "after-id", type = "text-single" },
  { var = "ids", type = "list-multi", open = true },
}

-- The form a get returns: 'ids' is open to any value, which XEP-0313
-- §"Retrieving form fields" says with an XEP-0122 <validate><open/>.
local function query_form()
  local x = FILTER:form(nil, "form")
  for f in x:childtags("field") do
    if f.attr.var == "ids" then
      f:tag("validate", { xmlns = NS_VALIDATE, datatype = "xs:string" }):tag("open"):up():up()
    end
  end
  return x
end

local Archive = {}
Archive.__index = Archive

--- mam.new(im [, enabled]) -> the archive service of the IM core (enabled
-- false: the object without its hooks, for muc_mam's queries). clock() gives the
-- time of an entry (whole seconds; os.time).
-- Hooks (docs/server.md, "Adding a server feature"): messages our users
-- send (pre-message/*) and receive (message/full, message/bare), the
-- account's own urn:xmpp:mam:2 requests, disco features.
function M.new(im, enabled)
  local self = setmetatable({ im = im, srv = im.srv, clock = os_time, enabled = enabled ~= false }, Archive)
  local srv = self.srv
  -- archive = false: no account archives (rooms keep theirs, muc_mam.lua,
  -- which uses this object's query code); MAM requests get service-unavailable
  if enabled == false then return self end
  local function outgoing(ev) self:outgoing(ev.origin, ev.stanza) end
  for _, kind in ipairs({ "full", "bare", "host" }) do im:hook("pre-message/" .. kind, outgoing, -10) end
  local function incoming(ev)
    local node, bare = ev.node, ev.bare
    self:incoming(ev.stanza, node, bare, not im:offline_full(node, bare, ev.resource))
  end
  im:hook("message/full", incoming, -10)
  im:hook("message/bare", incoming, -10)
  im:hook("iq/self/" .. NS_MAM, function(ev) self:iq(ev.origin, ev.stanza); return true end)
  im:hook("iq/bare/" .. NS_MAM, function(ev)
    srv:bounce(ev.stanza, "auth", "forbidden", "only its owner may read an archive")
    return true
  end)
  -- XEP-0313 §6.1: clients (profanity) look for MAM on the server as well
  -- as on the account; the archive itself is the account's
  im:hook("disco-info/host", function(ev)
    ev.reply:tag("feature", { var = NS_MAM }):up():tag("feature", { var = NS_EXTENDED }):up()
  end)
  im:hook("disco-info/account", function(ev)   -- the archive is the owner's alone
    if ev.owner then for _, f in ipairs(M.FEATURES) do ev.reply:tag("feature", { var = f }):up() end end
  end)
  return self
end

-- Should message s be kept?
local function storable(s)
  local t = s.attr.type or "normal"
  if t ~= "chat" and t ~= "normal" then return false end
  if not s:get_child("body") then return false end
  return not (s:get_child("no-store", NS_HINTS) or s:get_child("no-permanent-store", NS_HINTS))
end

-- Archive ids: 24 random hex digits (unique, unguessable), from random
-- bytes drawn 21 ids at a time: a draw per message cost more than the rest
-- of archiving it.
local ID_SIZE = 12                                      -- random bytes an id
local ID_HEX = ("%02x"):rep(ID_SIZE)
local POOL_BYTES = compat.idiv(256, ID_SIZE) * ID_SIZE  -- core.random gives at most 256 bytes a call
local pool, pool_pos = "", 1
local function new_archive_id()
  if pool_pos > #pool then pool, pool_pos = core.random(POOL_BYTES), 1 end
  local p = pool_pos
  pool_pos = p + ID_SIZE
  return ID_HEX:format(pool:byte(p, p + ID_SIZE - 1))
end

-- Keeps s in node's archive, peer being the other party; the id, or nil
-- (logged) when the store refused it.
function Archive:add(node, s, peer)
  local copy = st.clone(s)
  copy.attr.xmlns = "jabber:client"
  local id = new_archive_id()
  local ok, err = self.srv.store:archive_add(node, { id = id, time = floor(self.clock()), with = peer,
    data = tostring(copy) }, floor(self.srv.limits.mam_max_messages), floor(self.srv.limits.mam_max_bytes))
  if not ok then
    self.srv:log("warn", "could not archive a message for %s: %s", node, tostring(err))
    return nil
  end
  return id
end

--- A message our user sent (sess's account): kept in the sender's archive;
-- one to the account itself is kept when it arrives. One the sender's own
-- block list refuses (XEP-0191 §3.3: not-acceptable, never routed) is not
-- kept: the archive holds what was sent, not what was tried.
function Archive:outgoing(sess, s)
  if not storable(s) then return end
  local to = s.attr.to and jid.prep(s.attr.to)
  if not to or jid.bare(to) == sess.bare then return end
  if self.im.blocking and self.im.blocking:blocks_outbound(sess.user, to) then return end
  self:add(sess.user, s, to)
end

--- A message routed to our account node (bare JID `bare`), before delivery:
-- forged stanza ids go, a message worth keeping is kept and stamped.
function Archive:incoming(s, node, bare, keep)
  s:maptags(function(c)
    if c.name == "stanza-id" and c.attr.xmlns == NS_SID and c.attr.by and jid.prep(c.attr.by) == bare then
      return nil
    end
    return c
  end)
  if keep == false or not storable(s) or not self.srv:user_exists(node) then return end
  local peer = s.attr.from and jid.prep(s.attr.from)
  if not peer then return end
  local id = self:add(node, s, peer)
  if id then s:add_direct_child(st.stanza("stanza-id", { xmlns = NS_SID, by = bare, id = id })) end
end

---------------------------------------------------------------------------
-- queries

local function fail(iq, etype, cond, text)
  return nil, st.error_reply(iq, etype, cond, text)
end

-- The filters of a query's data form: { with =, start =, ["end"] =,
-- before_id =, after_id =, ids = } or nil, error reply. An empty field is
-- no filter (some clients send back the whole form); an 'ids' list holds
-- at most max_ids ids, none of them empty.
local function read_form(iq, x, max_ids)
  if not x then return {} end
  -- the fields are typed by FILTER, not by what the client says (XEP-0004
  -- §3.3: a submitted form's types come from context; XEP-0313's own
  -- example sends 'ids' untyped, which forms.parse would take for
  -- text-single)
  local vars, form_type = {}, nil
  for f in x:childtags("field") do
    local var = f.attr.var
    if var == nil or vars[var] then return fail(iq, "modify", "bad-request", "each field needs a var of its own") end
    vars[var] = true
    if var == "FORM_TYPE" then form_type = f:get_child_text("value") end
  end
  if form_type ~= NS_MAM then
    return fail(iq, "modify", "bad-request", "the form's FORM_TYPE must be " .. NS_MAM)
  end
  for f in x:childtags("field") do
    if not FILTER.by_var[f.attr.var] then
      return fail(iq, "cancel", "feature-not-implemented", "no filter named " .. f.attr.var)
    end
  end
  local values, err = FILTER:data(x)
  if not values then return fail(iq, "modify", "bad-request", err) end
  local q = {}
  if values.with ~= nil and values.with ~= "" then q.with = values.with end
  for _, k in ipairs({ "start", "end" }) do
    local v = values[k]
    if v ~= nil and v ~= "" then
      local t = datetime.parse(v)
      if not t then return fail(iq, "modify", "bad-request", "'" .. k .. "' is not an XEP-0082 date-time") end
      q[k] = t
    end
  end
  -- XEP-0313 §"Limiting results by id" (the store says item-not-found for an id not in the archive)
  if values["before-id"] ~= nil and values["before-id"] ~= "" then q.before_id = values["before-id"] end
  if values["after-id"] ~= nil and values["after-id"] ~= "" then q.after_id = values["after-id"] end
  local list = values.ids
  if list and #list > 0 then
    if #list > max_ids then
      return fail(iq, "modify", "policy-violation", ("at most %d ids in one query"):format(max_ids))
    end
    for _, id in ipairs(list) do
      if id == "" then return fail(iq, "modify", "bad-request", "an empty id in 'ids'") end
    end
    q.ids = list
  end
  return q
end

-- XEP-0059 paging into q: max (capped by the server), after, before.
local function read_set(iq, set, q, cap)
  q.max = cap
  if not set then return q end
  local max = set:get_child_text("max")
  if max then
    if not max:match("^%d+$") then return fail(iq, "modify", "bad-request", "<max/> must be a number") end
    q.max = min(tonumber(max), cap)
  end
  if set:get_child("index") then
    return fail(iq, "cancel", "feature-not-implemented", "paging by <index/> is not supported")
  end
  local after = set:get_child("after")
  if after then
    q.after = after:get_text()
    if not q.after or q.after == "" then return fail(iq, "modify", "bad-request", "<after/> needs an id") end
  end
  local before = set:get_child("before")
  if before then
    local id = before:get_text()
    q.before = (id == nil or id == "") and true or id
  end
  return q
end

-- The result message of one archive entry, or nil when it cannot be read.
local function result(sess, queryid, item)
  local m = st.parse(item.data)
  if not m then return nil end
  if sess.archive_filter then m = sess.archive_filter(m) end   -- a room's: muc_mam
  local r = st.message({ from = sess.bare, to = sess.full, id = session.new_id() })
    :tag("result", { xmlns = NS_MAM, queryid = queryid, id = item.id })
    :tag("forwarded", { xmlns = NS_FORWARD })
    :tag("delay", { xmlns = NS_DELAY, stamp = datetime.format(item.time) }):up()
  r:add_child(m)
  return r
end

-- Answers a query of sess's own archive: the results, then <fin/>.
function Archive:query(sess, iq, qel)
  local cap = floor(self.srv.limits.mam_max_page)
  local q, err = read_form(iq, qel:get_child("x", forms.xmlns), cap)
  if q then q, err = read_set(iq, qel:get_child("set", NS_RSM), q, cap) end
  if not q then return sess:send(err) end
  local page, msg, cond = self.srv.store:archive_query(sess.user, q)
  if not page then return sess:send(st.error_reply(iq, "cancel", cond, msg)) end
  -- results go out at once: at most half the output queue's bytes per page
  local budget, out = self.srv.limits.max_queue / 2, {}
  local items, n = page.items, #page.items
  local from, to, step = 1, n, 1
  if q.before then from, to, step = n, 1, -1 end    -- paging back: the newest of the page count
  for i = from, to, step do
    local r = result(sess, qel.attr.queryid, items[i])
    if r then
      local bytes = #tostring(r)
      if #out > 0 and bytes > budget then
        page.complete = false
        break
      end
      budget = budget - bytes
      out[#out + 1] = { r = r, item = items[i], pos = i }
    else
      self.srv:log("warn", "archive entry %s of %s is not XML; skipped", items[i].id, sess.user)
    end
  end
  if q.before then   -- back in chronological order
    for i = 1, compat.idiv(#out, 2) do out[i], out[#out - i + 1] = out[#out - i + 1], out[i] end
  end
  -- XEP-0313 §"Flipped pages": the same page, sent newest first (<first/>
  -- and <last/> still name its oldest and newest)
  if qel:get_child("flip-page") then
    for i = #out, 1, -1 do sess:send(out[i].r) end
  else
    for _, o in ipairs(out) do sess:send(o.r) end
  end
  local fin = st.reply(iq):tag("fin", { xmlns = NS_MAM, complete = page.complete and "true" or "false" })
    :tag("set", { xmlns = NS_RSM })
  if #out > 0 then
    fin:text_tag("first", out[1].item.id, { index = ("%d"):format(page.index + out[1].pos - 1) })
      :text_tag("last", out[#out].item.id)
  end
  fin:text_tag("count", ("%d"):format(page.count))
  return sess:send(fin)
end

--- archive:metadata(user) -> the <metadata xmlns='urn:xmpp:mam:2'/> of
-- user's archive (an account, or a room's JID): <start/> and <end/> with
-- the id and XEP-0082 time of its oldest and newest entry, or empty when
-- it has none (XEP-0313 §"Archive metadata"). Also what Bind2 puts in
-- <bound/> (XEP-0386 §"Performing the bind"; server/features/sasl2.lua).
function Archive:metadata(user)
  local el = st.stanza("metadata", { xmlns = NS_MAM })
  local md = self.srv.store:archive_metadata(user)
  if md then
    el:tag("start", { id = md.start.id, timestamp = datetime.format(md.start.time) }):up()
      :tag("end", { id = md["end"].id, timestamp = datetime.format(md["end"].time) }):up()
  end
  return el
end

--- archive:drop_offline(user, bare) -> how many: forgets, unsent, the
-- offline messages of user's account (bare JID `bare`) that its archive
-- holds, for a Bind2 login (XEP-0386 §"Performing the bind": the server
-- clears them "as they will be provided by MAM"). Those are the ones
-- with our <stanza-id by=bare/> whose entry the archive still holds:
-- :incoming stamps a message it kept before the IM core stores it
-- offline, and strips any other claiming that `by`; an entry may have
-- gone since (limits.mam_max_messages drops the oldest). The rest (what
-- was not archived: a bodiless invitation, a <no-store/> hint, a store
-- failure; what the archive no longer has) stays for the session's
-- initial presence. Without account archives nothing is dropped.
function Archive:drop_offline(user, bare)
  if not self.enabled then return 0 end
  local store, ids = self.srv.store, {}
  for _, m in ipairs(store:get_offline(user)) do
    local s = m.data:find(NS_SID, 1, true) and st.parse(m.data)
    if s then
      for c in s:childtags("stanza-id", NS_SID) do
        local id = c.attr.id
        if c.attr.by == bare and type(id) == "string" and id ~= "" then
          if store:archive_has(user, id) then ids[#ids + 1] = m.id end
          break
        end
      end
    end
  end
  if #ids > 0 then store:drop_offline(user, ids) end
  return #ids
end

--- An IQ from sess to its own archive (urn:xmpp:mam:2): a query, its form
-- (get), or the archive's metadata (XEP-0313 §"Archive metadata": get).
function Archive:iq(sess, iq)
  local q = iq.tags[1]
  if q.name == "metadata" then
    if iq.attr.type ~= "get" then
      return sess:send(st.error_reply(iq, "modify", "bad-request", "archive metadata is read with type get"))
    end
    return sess:send(st.reply(iq):add_child(self:metadata(sess.user)))
  end
  if q.name ~= "query" then
    return sess:send(st.error_reply(iq, "cancel", "feature-not-implemented"))
  end
  if iq.attr.type == "get" then          -- the fields a query may use
    return sess:send(st.reply(iq):tag("query", { xmlns = NS_MAM }):add_child(query_form()))
  end
  return self:query(sess, iq, q)
end

return M
