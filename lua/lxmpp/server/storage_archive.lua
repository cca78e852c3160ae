-- Message archives in the server's storage (XEP-0313, server/mam.lua): one
-- archive per account, entries in arrival order, each with its archive id
-- (unique in the account, never reused), a time, the other party's JID and
-- the message's XML; queries with filters and XEP-0059 paging.
--
-- storage.lua installs the store's methods (argument checks and the paging
-- logic, written once) and the memory backend's primitives from here; the
-- SQLite backend has the same primitives in storage_sqlite.lua:
--
--   archive_add(user, id, time, with, peer, data, keep) -> true | nil, message
--   archive_seq(user, id) -> the entry's position, or nil
--   archive_count(user, f) -> entries matching f
--   archive_rows(user, f, limit, newest_first) -> { { seq=, id=, time=, with=, peer=, data= } }
--   archive_ends(user) -> { id=, time= } of the oldest entry, and of the newest, or nil (none)
--   (and account_remove drops the user's archive)
--
-- f = { with = bare JID, peer = full JID, start = t, ["end"] = t,
-- above = seq, below = seq, seqs = { seq, ... } (one of these) }, each
-- optional; positions (seq) grow with every entry, so they order an archive.

local compat = require "lxmpp.compat"
local jid = require "lxmpp.jid"
local fifo = require "lxmpp.fifo"

local type, error, ipairs, pairs = type, error, ipairs, pairs
local math_type, floor, ceil, min, max = compat.math_type, math.floor, math.ceil, math.min, math.max
local maxinteger, mininteger = compat.maxinteger, compat.mininteger

local M = {}

local function check_name(value, what)
  if type(value) ~= "string" or value == "" then
    error(("storage: %s must be a non-empty string"):format(what), 3)
  end
end

local function check_count(value, what)
  if math_type(value) ~= "integer" or value < 0 then
    error(("storage: %s must be a non-negative integer"):format(what), 3)
  end
end

--- The store's methods ------------------------------------------------------------

-- An integer of a rounded number (beyond the integers: the nearest end).
local function whole(x)
  if math_type(x) == "integer" then return x end
  return x > 0 and maxinteger or mininteger
end

-- The backend filter of a query: with/start/end as the backend compares
-- them (integer seconds), or nil when no entry can match.
local function filter(q)
  local f = {}
  if q.with ~= nil then
    local p = type(q.with) == "string" and jid.prep(q.with)
    if not p then error("storage: archive query with must be a JID", 3) end
    if jid.resource(p) then f.peer = p else f.with = p end
  end
  for _, k in ipairs({ "start", "end" }) do
    local t = q[k]
    if t ~= nil and (type(t) ~= "number" or t ~= t) then
      error(("storage: archive query %s must be a number of seconds"):format(k), 3)
    end
  end
  -- times are whole seconds: t >= 1.5 is t >= 2, t <= 1.5 is t <= 1
  if q.start then f.start = whole(ceil(q.start)) end
  if q["end"] then f["end"] = whole(floor(q["end"])) end
  return f
end

local function install_store(Store, backend)
  --- store:archive_add(user, entry [, keep [, keep_bytes]]) -> true | nil,
  -- message: adds entry = { id =, time = integer seconds, with = the other
  -- party's JID, data = the message's XML } as the newest of user's
  -- archive; with keep, the oldest entries beyond keep are dropped, and
  -- with keep_bytes, the oldest while the XML kept is more than that (the
  -- newest entry always stays).
  function Store:archive_add(user, entry, keep, keep_bytes)
    check_name(user, "user")
    if type(entry) ~= "table" then error("storage: an archive entry must be a table", 2) end
    check_name(entry.id, "archive entry id")
    if math_type(entry.time) ~= "integer" then error("storage: archive entry time must be integer seconds", 2) end
    local peer = type(entry.with) == "string" and jid.prep(entry.with)
    if not peer then error("storage: archive entry with must be a JID", 2) end
    if type(entry.data) ~= "string" then error("storage: archive entry data must be a string (XML)", 2) end
    if keep ~= nil then check_count(keep, "keep") end
    if keep_bytes ~= nil then check_count(keep_bytes, "keep_bytes") end
    return backend(self):archive_add(user, entry.id, entry.time, jid.bare(peer), peer, entry.data, keep, keep_bytes)
  end

  --- store:archive_query(user, q) -> page | nil, message, "item-not-found"
  -- q = { with =, start =, ["end"] =, after_id =, before_id =, ids =,
  -- after = id, before = id or true, max = n }: the entries matching
  -- with/start/end, coming after the entry after_id and before the entry
  -- before_id, and among the entries of the list ids (XEP-0313 §"Limiting
  -- results by id"): count of them all; at most max of them (oldest first)
  -- after the entry `after`, or the last ones before the entry `before`
  -- (true: the end; XEP-0059 paging within those matches). page = { items =
  -- { { id=, time=, with=, data= } }, count =, index = position of the
  -- first item among all matches (nil when no items), complete = no
  -- more matches in the paging direction }. Any id that is not in user's
  -- archive: nil, message, "item-not-found". Costs a lookup per id.
  function Store:archive_query(user, q)
    check_name(user, "user")
    if type(q) ~= "table" then error("storage: an archive query must be a table", 2) end
    check_count(q.max, "archive query max")
    if q.after ~= nil then check_name(q.after, "archive query after") end
    if q.before ~= nil and q.before ~= true then check_name(q.before, "archive query before") end
    if q.after_id ~= nil then check_name(q.after_id, "archive query after_id") end
    if q.before_id ~= nil then check_name(q.before_id, "archive query before_id") end
    if q.ids ~= nil then
      if type(q.ids) ~= "table" or #q.ids == 0 then
        error("storage: archive query ids must be a non-empty list of ids", 2)
      end
      for _, id in ipairs(q.ids) do check_name(id, "each of archive query ids") end
    end
    local b = backend(self)
    local f = filter(q)
    local function seq_of(id)
      local seq = b:archive_seq(user, id)
      if not seq then return nil, "no entry " .. id .. " in the archive", "item-not-found" end
      return seq
    end
    local seq, msg, cond
    if q.after_id then
      seq, msg, cond = seq_of(q.after_id)
      if not seq then return nil, msg, cond end
      f.above = seq
    end
    if q.before_id then
      seq, msg, cond = seq_of(q.before_id)
      if not seq then return nil, msg, cond end
      f.below = seq
    end
    if q.ids then
      f.seqs = {}
      for i, id in ipairs(q.ids) do
        seq, msg, cond = seq_of(id)
        if not seq then return nil, msg, cond end
        f.seqs[i] = seq
      end
    end
    local count = b:archive_count(user, f)
    local back = q.before ~= nil
    local id = q.after
    if back then id = q.before ~= true and q.before or nil end
    -- the page: the matches past the paging id (f itself stays the result set)
    local pf = {}
    for k, v in pairs(f) do pf[k] = v end
    if id then
      seq, msg, cond = seq_of(id)
      if not seq then return nil, msg, cond end
      if back then pf.below = min(seq, f.below or seq) else pf.above = max(seq, f.above or seq) end
    end
    local rows = b:archive_rows(user, pf, q.max + 1, back)
    local complete = #rows <= q.max
    rows[q.max + 1] = nil
    local items, n = {}, #rows
    for i, r in ipairs(rows) do
      items[back and n - i + 1 or i] = { id = r.id, time = r.time, with = r.peer, data = r.data }
    end
    local page = { items = items, count = count, complete = complete }
    if n > 0 then   -- the matches before the page's first item
      local before = {}
      for k, v in pairs(f) do before[k] = v end
      before.below = back and rows[n].seq or rows[1].seq
      page.index = b:archive_count(user, before)
    end
    return page
  end

  --- store:archive_has(user, id) -> true when user's archive holds the
  -- entry id (one index lookup: what a Bind2 login asks of each offline
  -- message before clearing it, server/mam.lua), else false.
  function Store:archive_has(user, id)
    check_name(user, "user")
    check_name(id, "archive id")
    return backend(self):archive_seq(user, id) ~= nil
  end

  --- store:archive_metadata(user) -> { start = { id =, time = }, ["end"] =
  -- { id =, time = } } | nil: the oldest and the newest entry of user's
  -- archive (the same one when it holds one), nil when it is empty; what
  -- XEP-0313 §"Archive metadata" and XEP-0386's <bound/> tell. Costs
  -- two lookups, whatever the archive's size.
  function Store:archive_metadata(user)
    check_name(user, "user")
    local first, last = backend(self):archive_ends(user)
    if not first then return nil end
    return { start = { id = first.id, time = first.time }, ["end"] = { id = last.id, time = last.time } }
  end
end

--- The memory backend's primitives ------------------------------------------------
-- Per user: entries in order in a list from `head` (dropped ones are
-- cleared), and ids -> entry.

-- set: f.seqs as a set (nil: no such filter)
local function matches(e, f, set)
  return (not f.with or e.with == f.with) and (not f.peer or e.peer == f.peer)
    and (not f.start or e.time >= f.start) and (not f["end"] or e.time <= f["end"])
    and (not f.above or e.seq > f.above) and (not f.below or e.seq < f.below)
    and (not set or set[e.seq] == true)
end

local function seq_set(f)
  if not f.seqs then return nil end
  local set = {}
  for _, seq in ipairs(f.seqs) do set[seq] = true end
  return set
end

local function install_memory(Memory)
  local function archive_of(self, user)
    self.archives = self.archives or {}
    local a = self.archives[user]
    if not a then
      a = { q = fifo.new(), ids = {} }      -- entries oldest first (q.bytes: their data), by id
      self.archives[user] = a
    end
    return a
  end

  function Memory:archive_add(user, id, time, with, peer, data, keep, keep_bytes)
    local a = archive_of(self, user)
    if a.ids[id] then return nil, "storage: archive id " .. id .. " is taken" end
    self.archive_seq_last = (self.archive_seq_last or 0) + 1
    local e = { seq = self.archive_seq_last, id = id, time = time, with = with, peer = peer, data = data }
    local q = a.q
    q:push(e, #data)
    a.ids[id] = e
    while q.n > 1 and ((keep and q.n > keep) or (keep_bytes and q.bytes > keep_bytes)) do
      a.ids[q:pop().id] = nil
    end
    return true
  end

  function Memory:archive_seq(user, id)
    local e = self.archives and self.archives[user] and self.archives[user].ids[id]
    return e and e.seq
  end

  function Memory:archive_count(user, f)
    local a, n = self.archives and self.archives[user], 0
    if not a then return 0 end
    local q, set = a.q, seq_set(f)
    for i = q.first, q.first + q.n - 1 do
      if matches(q[i], f, set) then n = n + 1 end
    end
    return n
  end

  function Memory:archive_rows(user, f, limit, newest_first)
    local a, out = self.archives and self.archives[user], {}
    if not a then return out end
    local q, set = a.q, seq_set(f)
    local from, to, step = q.first, q.first + q.n - 1, 1
    if newest_first then from, to, step = to, from, -1 end
    for i = from, to, step do
      if #out >= limit then break end
      local e = q[i]
      if matches(e, f, set) then
        out[#out + 1] = { seq = e.seq, id = e.id, time = e.time, with = e.with, peer = e.peer, data = e.data }
      end
    end
    return out
  end

  function Memory:archive_ends(user)
    local a = self.archives and self.archives[user]
    local q = a and a.q
    if not q or q.n == 0 then return nil end
    return q[q.first], q[q.first + q.n - 1]
  end
end

M.install_store = install_store
M.install_memory = install_memory

return M
