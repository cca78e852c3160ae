-- XEP-0313 message archive management with XEP-0059 result set paging:
-- querying our own archive (or a room's, or any archive's JID) with filters,
-- one page at a time. Results are accepted only from the archive queried
-- (our own: no from, or our bare JID) and only for the query id we chose;
-- anything else is ignored, so nobody can slip messages into our history.
--
--   local page = assert(c:mam_query{ with = "juliet@example.com", max = 50 })
--   for _, m in ipairs(page.messages) do print(m.id, m.stamp, m.message:get_child_text("body")) end
--   while not page.complete do page = assert(c:mam_next(page)) ... end
--
-- XEP-0313's extended queries (only to an archive whose disco#info lists
-- urn:xmpp:mam:2#extended): after_id, before_id, ids, flip_page.

local compat = require "lxmpp.compat"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local forms = require "lxmpp.forms"
local datetime = require "lxmpp.datetime"
local delay = require "lxmpp.plugins.delay"
local session = require "lxmpp.session"

local type, error, tostring, tonumber, pairs, ipairs, math_type =
  type, error, tostring, tonumber, pairs, ipairs, compat.math_type

local NS_MAM = "urn:xmpp:mam:2"
local NS_RSM = "http://jabber.org/protocol/rsm"
local NS_FORWARD = "urn:xmpp:forward:0"

local M = { NS_MAM = NS_MAM, NS_RSM = NS_RSM }

local MAX_RESULTS = 1000     -- messages kept for one page, whatever max says

local FILTER = forms.new{
  { var = "FORM_TYPE", type = "hidden", value = NS_MAM },
  { var = "with", type = "jid-single" },
  { var = "start", type = "text-single" },
  { var = "end", type = "text-single" },
  { var = "before-id", type = "text-single" },
  { var = "after-id", type = "text-single" },
  { var = "ids", type = "list-multi" },
}

local OPTS = { to = true, with = true, start = true, ["end"] = true, max = true, after = true,
  before = true, timeout = true, after_id = true, before_id = true, ids = true, flip_page = true }

local function check(opts)
  if type(opts) ~= "table" then error("mam_query: expected an options table", 3) end
  for k in pairs(opts) do
    if not OPTS[k] then error("mam_query: unknown option " .. tostring(k), 3) end
  end
  for _, k in pairs({ "to", "with" }) do
    if opts[k] ~= nil and (type(opts[k]) ~= "string" or not jid.prep(opts[k])) then
      error("mam_query: " .. k .. " must be a JID", 3)
    end
  end
  for _, k in pairs({ "start", "end" }) do
    if opts[k] ~= nil and type(opts[k]) ~= "number" then error("mam_query: " .. k .. " must be Unix seconds", 3) end
  end
  if opts.max ~= nil and (math_type(opts.max) ~= "integer" or opts.max < 0) then
    error("mam_query: max must be a non-negative integer", 3)
  end
  if opts.after ~= nil and type(opts.after) ~= "string" then error("mam_query: after must be a string", 3) end
  if opts.before ~= nil and opts.before ~= true and type(opts.before) ~= "string" then
    error("mam_query: before must be a string, or true for the last page", 3)
  end
  for _, k in pairs({ "after_id", "before_id" }) do
    if opts[k] ~= nil and (type(opts[k]) ~= "string" or opts[k] == "") then
      error("mam_query: " .. k .. " must be a non-empty string", 3)
    end
  end
  if opts.ids ~= nil then
    local ok = type(opts.ids) == "table" and #opts.ids > 0
    for _, id in ipairs(ok and opts.ids or {}) do ok = ok and type(id) == "string" and id ~= "" end
    if not ok then error("mam_query: ids must be a non-empty list of non-empty strings", 3) end
  end
  if opts.flip_page ~= nil and type(opts.flip_page) ~= "boolean" then
    error("mam_query: flip_page must be a boolean", 3)
  end
end

-- the query element: filters as a data form, paging as an RSM set
local function build(opts, queryid)
  local values = { with = opts.with, start = opts.start and datetime.format(opts.start),
    ["end"] = opts["end"] and datetime.format(opts["end"]),
    ["after-id"] = opts.after_id, ["before-id"] = opts.before_id, ids = opts.ids }
  local q = st.stanza("query", { xmlns = NS_MAM, queryid = queryid })
  q:add_child(FILTER:form(values, "submit"))
  if opts.max or opts.after or opts.before then
    q:tag("set", { xmlns = NS_RSM })
    if opts.max then q:text_tag("max", ("%d"):format(opts.max)) end
    if opts.after then q:text_tag("after", opts.after) end
    if opts.before == true then q:tag("before"):up()
    elseif opts.before then q:text_tag("before", opts.before) end
    q:up()
  end
  if opts.flip_page then q:tag("flip-page"):up() end   -- XEP-0313 §"Flipped pages"
  return q
end

-- one archived message from a <result/>, or nil
local function read_result(result)
  local fwd = result:get_child("forwarded", NS_FORWARD)
  local m = fwd and fwd:get_child("message", "jabber:client")
  if not m or type(result.attr.id) ~= "string" then return nil end
  return { id = result.attr.id, message = m, stamp = delay.of(fwd) or delay.of(m) }
end

--- mam.read_metadata(el) -> { start = { id =, stamp = }, ["end"] = { id =, stamp = } }
-- from a <metadata xmlns='urn:xmpp:mam:2'/> (XEP-0313 §"Archive
-- metadata"; also inside Bind2's <bound/>, XEP-0386 §"Performing the
-- bind"): {} for an empty archive. stamp: Unix seconds, nil when the
-- timestamp is not an XEP-0082 date-time. nil, why for an element that
-- is not one, or a <start/> or <end/> without an id, or only one of them.
function M.read_metadata(el)
  if not (st.is_stanza(el) and el.name == "metadata" and el.attr.xmlns == NS_MAM) then
    return nil, "not an XEP-0313 <metadata/>"
  end
  local md = {}
  for _, k in ipairs({ "start", "end" }) do
    local e = el:get_child(k)
    if e then
      local id = e.attr.id
      if type(id) ~= "string" or id == "" then return nil, "<" .. k .. "/> has no id" end
      md[k] = { id = id, stamp = e.attr.timestamp and datetime.parse(e.attr.timestamp) or nil }
    end
  end
  if (md.start == nil) ~= (md["end"] == nil) then return nil, "<start/> and <end/> come together" end
  return md
end

-- The plugin object, c.mam (docs/api.md "Plugins"): .queries, the queries
-- waiting for their results (queryid -> { archive =, page = }).
M.forwards = { mam_query = "query", mam_next = "next", mam_metadata = "metadata", mam_catch_up = "catch_up" }

--- c:mam_query{ to=, with=, start=, ["end"]=, max=, after=, before=, timeout=,
-- after_id=, before_id=, ids=, flip_page= }
-- -> page { messages = { {id=, stamp=, message=} }, complete =, first =, last =, count = }
-- | nil, message, condition. messages come in the order received (newest
-- first with flip_page); first and last are what the archive's <fin/> says.
function M:query(opts)
  check(opts)
  local archive = opts.to and jid.prep(opts.to) or nil
  local queryid = session.new_id()
  local page = { messages = {}, query = opts }
  self.queries[queryid] = { archive = archive, page = page }
  local r, msg, cond = self.client:request(st.iq({ type = "set", to = archive }):add_child(build(opts, queryid)),
    opts.timeout)
  self.queries[queryid] = nil
  if not r then return nil, msg, cond end
  local fin = r:get_child("fin", NS_MAM)
  if not fin then return nil, "the archive's answer has no <fin/>", "bad-request" end
  page.complete = fin.attr.complete == "true"
  local set = fin:get_child("set", NS_RSM)
  if set then
    page.first, page.last = set:get_child_text("first"), set:get_child_text("last")
    local count = set:get_child_text("count")
    page.count = count and count:match("^%d+$") and tonumber(count) or nil
  end
  return page
end

--- c.mam:next(page) -> the following page (older ones when paging back
-- with before) | nil, message, condition; nil when page was complete
function M:next(page)
  if type(page) ~= "table" or type(page.query) ~= "table" then error("mam_next: expected a page", 2) end
  if page.complete then return nil end
  local q = {}
  for k, v in pairs(page.query) do q[k] = v end
  if q.before then
    if not page.first then return nil end
    q.before, q.after = page.first, nil
  else
    if not page.last then return nil end
    q.after = page.last
  end
  return self:query(q)
end

--- c:mam_metadata([to [, timeout]]) -> the archive's metadata, as
-- mam.read_metadata | nil, message, condition (XEP-0313 §"Archive
-- metadata": our own archive by default, or to's, a room's).
function M:metadata(to, timeout)
  if to ~= nil and (type(to) ~= "string" or not jid.prep(to)) then error("mam_metadata: to must be a JID", 2) end
  local r, msg, cond = self.client:request(st.iq({ type = "get", to = to and jid.prep(to) })
    :tag("metadata", { xmlns = NS_MAM }):up(), timeout)
  if not r then return nil, msg, cond end
  local md, why = M.read_metadata(r:get_child("metadata", NS_MAM))
  if not md then return nil, "the archive's metadata answer is malformed: " .. why, "bad-request" end
  return md
end

local CATCH_UP_OPTS = { after = true, max = true, page = true, timeout = true }

--- c:mam_catch_up([opts]) -> { messages = { {id=, stamp=, message=} }, complete =, last = }
-- | nil, message, condition: our own archive's messages after opts.after
-- (an archive id this client saw last; nil: from the oldest), up to the
-- newest one the archive held when this session was bound: c.archive_metadata,
-- from Bind2's <bound/> (XEP-0386), after a classic bind asked for
-- now (c:mam_metadata). What came after a Bind2 bind is delivered live
-- (and Bind2 cleared the offline messages the archive holds), so nothing
-- arrives twice. No query at all
-- when after is that newest id already. At most opts.max messages (1000):
-- complete is false when more remain, and last is the id to go on after;
-- opts.page: messages a query (default 100); opts.timeout: each query's.
function M:catch_up(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("mam_catch_up: expected an options table", 2) end
  for k in pairs(opts) do
    if not CATCH_UP_OPTS[k] then error("mam_catch_up: unknown option " .. tostring(k), 2) end
  end
  if opts.after ~= nil and (type(opts.after) ~= "string" or opts.after == "") then
    error("mam_catch_up: after must be an archive id", 2)
  end
  for _, k in ipairs({ "max", "page" }) do
    if opts[k] ~= nil and (math_type(opts[k]) ~= "integer" or opts[k] < 1) then
      error("mam_catch_up: " .. k .. " must be a positive integer", 2)
    end
  end
  local c = self.client
  local md = c.archive_metadata
  if not md then
    local msg, cond
    md, msg, cond = self:metadata(nil, opts.timeout)
    if not md then return nil, msg, cond end
  end
  local out = { messages = {}, complete = true, last = opts.after }
  local newest = md["end"] and md["end"].id
  if not newest or newest == opts.after then return out end     -- nothing new at bind time
  local max, size = opts.max or MAX_RESULTS, opts.page or 100
  local list = out.messages
  local page, msg, cond = self:query({ after = opts.after, max = math.min(size, max), timeout = opts.timeout })
  while page do
    for _, m in ipairs(page.messages) do
      if #list >= max then
        out.complete = false
        return out
      end
      list[#list + 1] = m
      out.last = m.id
      if m.id == newest then return out end
    end
    if page.complete or #page.messages == 0 then return out end   -- (newest gone: trimmed since)
    if #list >= max then
      out.complete = false
      return out
    end
    page, msg, cond = self:query({ after = out.last, max = math.min(size, max - #list), timeout = opts.timeout })
  end
  return nil, msg, cond
end

local function on_message(self, c, m)
  local result = m:get_child("result", NS_MAM)
  if not result then return nil end
  local pending = result.attr.queryid and self.queries[result.attr.queryid]
  if not pending then
    -- a result for no query of ours is no message of anyone's: nobody
    -- slips archived messages in (the automatic catch-up,
    -- features/catchup.lua, delivers only what it asked for)
    c:log("warn", "ignored an archive result for no query of ours (queryid %s) from %s",
      tostring(result.attr.queryid), tostring(m.attr.from))
    return true
  end
  local from = m.attr.from
  local ok
  if pending.archive and not jid.equal(pending.archive, c.bare_jid or "") then
    ok = from ~= nil and jid.equal(from, pending.archive)
  else
    -- our own archive, asked with or without `to`: the server may leave
    -- `from` out of what it sends for the account (RFC 6120 §8.1.2.1)
    ok = from == nil or jid.equal(from, c.bare_jid)
  end
  if not ok then
    c:log("warn", "ignored an archive result from %s (queried %s)", tostring(from),
      tostring(pending.archive or c.bare_jid))
    return true
  end
  local item = read_result(result)
  local list = pending.page.messages
  if item and #list < MAX_RESULTS then list[#list + 1] = item end
  return true
end

function M:init(c)
  self.queries = {}
  c:hook_child("message", NS_MAM, function(s) return on_message(self, c, s) end, 20)
end

return M
