-- The SQLite backend of lxmpp.server.storage (through LuaSQL's sqlite3
-- driver, Debian's lua-sql-sqlite3).
--
-- Durability: WAL journal, synchronous=FULL, and every write runs in its own
-- transaction that has committed when the call returns, so an acknowledged
-- write survives the process being killed (and, with FULL, the machine losing
-- power). A write that fails rolls back whole.
--
-- Every string reaches SQL as a hex blob literal (X'...'): user names, keys
-- and values may hold any bytes (SCRAM keys hold NUL and quotes), and LuaSQL
-- 2.6 has no parameter binding. Integers are formatted with %d. Strings go in
-- as blobs and come back byte for byte.
--
-- A new file is created with mode 0600 (core.write_private, as plain Lua
-- cannot set a mode); SQLite gives its -wal and -shm files the same mode. An
-- existing file keeps its mode.
--
-- The schema is versioned in the meta table; a file written by a newer
-- lxmpp (a higher schema_version) is refused, not guessed at.

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local luasql = require "luasql.sqlite3"

local error, pcall, type, setmetatable, getmetatable = error, compat.pcall, type, setmetatable, getmetatable
local tostring, ipairs, math_type = tostring, ipairs, compat.math_type
local format, char = string.format, string.char
local unpack, pack, concat = compat.unpack, compat.pack, table.concat

local SCHEMA_VERSION = 1

local SCHEMA = {
  "CREATE TABLE accounts (user BLOB PRIMARY KEY, data BLOB NOT NULL)",
  "CREATE TABLE roster (user BLOB NOT NULL, contact BLOB NOT NULL, data BLOB NOT NULL,"
    .. " PRIMARY KEY (user, contact))",
  -- kept when an account is removed, so a version number never names two
  -- different rosters of one user name (RFC 6121 §2.6)
  "CREATE TABLE roster_version (user BLOB PRIMARY KEY, ver INTEGER NOT NULL)",
  "CREATE TABLE pending (user BLOB NOT NULL, contact BLOB NOT NULL, data BLOB NOT NULL,"
    .. " PRIMARY KEY (user, contact))",
  -- AUTOINCREMENT: ids are never reused, even after deletes
  "CREATE TABLE offline (id INTEGER PRIMARY KEY AUTOINCREMENT, user BLOB NOT NULL, data BLOB NOT NULL)",
  "CREATE INDEX offline_user ON offline (user, id)",
  "CREATE TABLE kv (kind BLOB NOT NULL, key BLOB NOT NULL, data BLOB NOT NULL, owner BLOB,"
    .. " PRIMARY KEY (kind, key))",
  "CREATE INDEX kv_owner ON kv (owner)",
}

-- Message archives (storage_archive.lua), created when a file lacks them
-- (IF NOT EXISTS) rather than by a schema version: an older lxmpp reading
-- the file leaves the extra table alone. seq orders an archive and is never
-- reused (AUTOINCREMENT); an archive id is unique within its user's archive.
local ARCHIVE_SCHEMA = {
  "CREATE TABLE IF NOT EXISTS archive (seq INTEGER PRIMARY KEY AUTOINCREMENT, user BLOB NOT NULL,"
    .. " id BLOB NOT NULL, time INTEGER NOT NULL, with_jid BLOB NOT NULL, peer BLOB NOT NULL,"
    .. " data BLOB NOT NULL)",
  "CREATE UNIQUE INDEX IF NOT EXISTS archive_id ON archive (user, id)",
  "CREATE INDEX IF NOT EXISTS archive_user ON archive (user, seq)",
  "CREATE INDEX IF NOT EXISTS archive_with ON archive (user, with_jid, seq)",
}

local HEX = {}
for i = 0, 255 do HEX[char(i)] = format("%02X", i) end

local function blob(s)
  return "X'" .. (s:gsub(".", HEX)) .. "'"
end

-- Errors from SQLite travel as this table inside a transaction, so that
-- they are told apart from bugs.
local DBError = {}

local function message(err)
  return "storage: " .. (tostring(err):gsub("^LuaSQL: ", ""))
end

local function fail(err)
  error(setmetatable({ message = message(err) }, DBError), 0)
end

local DB = {}
DB.__index = DB

--- Runs one statement; raises a DBError on failure. For a query, returns
-- its rows (arrays of column values); else the number of changed rows.
function DB:run(sql, ...)
  local cur, err = self.conn:execute(format(sql, ...))
  if not cur then fail(err) end
  if type(cur) == "number" then return cur end
  local rows = {}
  while true do
    local row, ferr = cur:fetch({}, "n")
    if not row then
      if ferr then fail(ferr) end
      break
    end
    rows[#rows + 1] = row
  end
  cur:close()
  return rows
end

-- The first column of the first row, or nil.
function DB:value(sql, ...)
  local row = self:run(sql, ...)[1]
  return row and row[1]
end

-- Runs fn(self, ...) in one transaction (how: "IMMEDIATE" takes the write
-- lock at once, "DEFERRED" reads a consistent snapshot). Returns fn's
-- results after COMMIT, or nil and a message after ROLLBACK when SQLite
-- failed. Bugs re-raise.
function DB:transaction(how, fn, ...)
  local began, err = self.conn:execute("BEGIN " .. how)
  if not began then return nil, message(err) end
  local res = pack(pcall(fn, self, ...))
  if res[1] then
    local ok, cerr = self.conn:execute("COMMIT")
    if ok then return unpack(res, 2, res.n) end
    res = { false, setmetatable({ message = message(cerr) }, DBError) }
  end
  self.conn:execute("ROLLBACK")
  if getmetatable(res[2]) == DBError then return nil, res[2].message end
  error(res[2], 0)
end

-- Writes: nil, message on failure. Reads: raise on failure (a failed read
-- must not look like "absent").
local function write(fn)
  return function(self, ...) return self:transaction("IMMEDIATE", fn, ...) end
end

-- A read of several statements that must agree (one snapshot).
local function snapshot(fn)
  return function(self, ...)
    local res = pack(self:transaction("DEFERRED", fn, ...))
    if res[1] == nil then error(res[2], 0) end
    return unpack(res, 1, res.n)
  end
end

local function read(fn)
  return function(self, ...)
    local res = pack(pcall(fn, self, ...))
    if res[1] then return unpack(res, 2, res.n) end
    if getmetatable(res[2]) == DBError then error(res[2].message, 0) end
    error(res[2], 0)
  end
end

--- Accounts ---------------------------------------------------------------------

DB.account_get = read(function(self, user)
  return self:value("SELECT data FROM accounts WHERE user = %s", blob(user))
end)

DB.account_set = write(function(self, user, data)
  self:run("INSERT OR REPLACE INTO accounts (user, data) VALUES (%s, %s)", blob(user), blob(data))
  return true
end)

DB.account_remove = write(function(self, user)
  local u = blob(user)
  self:run("DELETE FROM accounts WHERE user = %s", u)
  self:run("DELETE FROM roster WHERE user = %s", u)
  self:run("DELETE FROM pending WHERE user = %s", u)
  self:run("DELETE FROM offline WHERE user = %s", u)
  self:run("DELETE FROM archive WHERE user = %s", u)
  if self.archive_bytes then self.archive_bytes[u] = nil end
  self:run("DELETE FROM kv WHERE owner = %s", u)
  self:run("UPDATE roster_version SET ver = ver + 1 WHERE user = %s", u)
  return true
end)

DB.account_list = read(function(self)
  local list = {}
  for i, row in ipairs(self:run("SELECT user FROM accounts")) do list[i] = row[1] end
  return list
end)

--- Rosters ----------------------------------------------------------------------

DB.roster_load = snapshot(function(self, user)
  local u = blob(user)
  local items, pending = {}, {}
  for _, row in ipairs(self:run("SELECT contact, data FROM roster WHERE user = %s", u)) do
    items[row[1]] = row[2]
  end
  for _, row in ipairs(self:run("SELECT contact, data FROM pending WHERE user = %s", u)) do
    pending[row[1]] = row[2]
  end
  return self:value("SELECT ver FROM roster_version WHERE user = %s", u) or 0, items, pending
end)

DB.roster_set = write(function(self, user, contact, data)
  local u, c = blob(user), blob(contact)
  local old = self:value("SELECT data FROM roster WHERE user = %s AND contact = %s", u, c)
  if old == data then -- nothing changes
    return self:value("SELECT ver FROM roster_version WHERE user = %s", u) or 0
  end
  if data then
    self:run("INSERT OR REPLACE INTO roster (user, contact, data) VALUES (%s, %s, %s)", u, c, blob(data))
  else
    self:run("DELETE FROM roster WHERE user = %s AND contact = %s", u, c)
  end
  self:run("INSERT INTO roster_version (user, ver) VALUES (%s, 1)"
    .. " ON CONFLICT (user) DO UPDATE SET ver = ver + 1", u)
  return self:value("SELECT ver FROM roster_version WHERE user = %s", u)
end)

DB.pending_set = write(function(self, user, contact, data)
  local u, c = blob(user), blob(contact)
  if data then
    self:run("INSERT OR REPLACE INTO pending (user, contact, data) VALUES (%s, %s, %s)", u, c, blob(data))
  else
    self:run("DELETE FROM pending WHERE user = %s AND contact = %s", u, c)
  end
  return true
end)

--- Offline messages ---------------------------------------------------------------

DB.offline_push = write(function(self, user, xml)
  self:run("INSERT INTO offline (user, data) VALUES (%s, %s)", blob(user), blob(xml))
  return self:value("SELECT last_insert_rowid()")
end)

DB.offline_list = read(function(self, user)
  local list = {}
  for i, row in ipairs(self:run("SELECT id, data FROM offline WHERE user = %s ORDER BY id", blob(user))) do
    list[i] = { id = row[1], data = row[2] }
  end
  return list
end)

DB.offline_delete = write(function(self, user, upto)
  self:run("DELETE FROM offline WHERE user = %s AND id <= %d", blob(user), upto)
  return true
end)

-- (ids are integers: storage.lua checked them; at most MAX_DROP a statement)
local MAX_DROP = 500
DB.offline_drop = write(function(self, user, ids)
  for i = 1, #ids, MAX_DROP do
    local part = {}
    for j = i, math.min(i + MAX_DROP - 1, #ids) do part[#part + 1] = ("%d"):format(ids[j]) end
    self:run("DELETE FROM offline WHERE user = %s AND id IN (" .. table.concat(part, ",") .. ")", blob(user))
  end
  return true
end)

DB.offline_count = read(function(self, user)
  local row = self:run("SELECT count(*), coalesce(sum(length(data)), 0) FROM offline WHERE user = %s", blob(user))[1]
  return row[1], row[2]
end)

--- Message archives (storage_archive.lua) ------------------------------------------

-- The condition of an archive filter f on user's rows.
local function archive_where(user, f)
  local w = { "user = " .. blob(user) }
  if f.with then w[#w + 1] = "with_jid = " .. blob(f.with) end
  if f.peer then w[#w + 1] = "peer = " .. blob(f.peer) end
  if f.start then w[#w + 1] = format("time >= %d", f.start) end
  if f["end"] then w[#w + 1] = format("time <= %d", f["end"]) end
  if f.above then w[#w + 1] = format("seq > %d", f.above) end
  if f.below then w[#w + 1] = format("seq < %d", f.below) end
  if f.seqs then   -- positions of entries of user's (storage_archive.lua looked each up): integers
    local list = {}
    for i, seq in ipairs(f.seqs) do list[i] = format("%d", seq) end
    w[#w + 1] = "seq IN (" .. concat(list, ", ") .. ")"
  end
  return concat(w, " AND ")
end

-- The bytes of user's archive: kept per user once summed (self.archive_bytes),
-- forgotten whenever a transaction that changes them might not commit.
local function archive_bytes(self, u)
  local cache = self.archive_bytes
  if not cache then
    cache = {}
    self.archive_bytes = cache
  end
  local n = cache[u]
  if not n then n = self:value("SELECT coalesce(sum(length(data)), 0) FROM archive WHERE user = %s", u) end
  return n, cache
end

-- Drops user's entries up to seq `cut` (nil: none); the bytes they held.
local function archive_cut(self, u, cut)
  if not cut then return 0 end
  local gone = self:value("SELECT coalesce(sum(length(data)), 0) FROM archive WHERE user = %s AND seq <= %d", u, cut)
  self:run("DELETE FROM archive WHERE user = %s AND seq <= %d", u, cut)
  return gone
end

local archive_insert = write(function(self, user, id, time, with, peer, data, keep, keep_bytes)
  local u = blob(user)
  local bytes, cache = archive_bytes(self, u)
  cache[u] = nil
  self:run("INSERT INTO archive (user, id, time, with_jid, peer, data) VALUES (%s, %s, %d, %s, %s, %s)",
    u, blob(id), time, blob(with), blob(peer), blob(data))
  bytes = bytes + #data
  if keep then -- the oldest beyond keep go, in the same transaction
    bytes = bytes - archive_cut(self, u, self:value("SELECT seq FROM archive WHERE user = %s"
      .. " ORDER BY seq DESC LIMIT 1 OFFSET %d", u, keep))
  end
  if keep_bytes and bytes > keep_bytes then -- and the oldest past the budget (not the newest)
    bytes = bytes - archive_cut(self, u, self:value("SELECT seq FROM (SELECT seq, sum(length(data))"
      .. " OVER (ORDER BY seq DESC) AS total FROM archive WHERE user = %s) WHERE total > %d AND seq < ("
      .. "SELECT max(seq) FROM archive WHERE user = %s) ORDER BY seq DESC LIMIT 1", u, keep_bytes, u))
  end
  return true, bytes
end)

function DB:archive_add(user, id, time, with, peer, data, keep, keep_bytes)
  local ok, bytes = archive_insert(self, user, id, time, with, peer, data, keep, keep_bytes)
  -- known again only once committed
  if ok then self.archive_bytes[blob(user)] = bytes end
  return ok, (not ok) and bytes or nil
end

DB.archive_seq = read(function(self, user, id)
  return self:value("SELECT seq FROM archive WHERE user = %s AND id = %s", blob(user), blob(id))
end)

DB.archive_count = read(function(self, user, f)
  return self:value("SELECT count(*) FROM archive WHERE %s", archive_where(user, f))
end)

DB.archive_rows = read(function(self, user, f, limit, newest_first)
  local list = {}
  local rows = self:run("SELECT seq, id, time, with_jid, peer, data FROM archive WHERE %s ORDER BY seq %s LIMIT %d",
    archive_where(user, f), newest_first and "DESC" or "ASC", limit)
  for i, r in ipairs(rows) do
    list[i] = { seq = r[1], id = r[2], time = r[3], with = r[4], peer = r[5], data = r[6] }
  end
  return list
end)

-- One statement (one snapshot), each end found through the (user, seq) index.
DB.archive_ends = read(function(self, user)
  local u = blob(user)
  local rows = self:run("SELECT 0, id, time FROM archive WHERE seq = (SELECT min(seq) FROM archive WHERE user = %s)"
    .. " UNION ALL SELECT 1, id, time FROM archive WHERE seq = (SELECT max(seq) FROM archive WHERE user = %s)"
    .. " ORDER BY 1", u, u)
  if #rows < 2 then return nil end
  return { id = rows[1][2], time = rows[1][3] }, { id = rows[2][2], time = rows[2][3] }
end)

--- Key/value ----------------------------------------------------------------------

DB.kv_get = read(function(self, kind, key)
  return self:value("SELECT data FROM kv WHERE kind = %s AND key = %s", blob(kind), blob(key))
end)

DB.kv_set = write(function(self, kind, key, data, owner)
  if data then
    self:run("INSERT OR REPLACE INTO kv (kind, key, data, owner) VALUES (%s, %s, %s, %s)",
      blob(kind), blob(key), blob(data), owner and blob(owner) or "NULL")
  else
    self:run("DELETE FROM kv WHERE kind = %s AND key = %s", blob(kind), blob(key))
  end
  return true
end)

DB.kv_keys = read(function(self, kind)
  local list = {}
  for i, row in ipairs(self:run("SELECT key FROM kv WHERE kind = %s", blob(kind))) do list[i] = row[1] end
  return list
end)

--- Opening and closing --------------------------------------------------------------

function DB:close()
  if self.conn then self.conn:close() end
  if self.env then self.env:close() end
  self.conn, self.env = nil, nil
end

-- Creates a missing file empty with mode 0600 before SQLite opens it (an
-- existing one keeps its mode).
local function create_private(path)
  core.write_private(path, "", "append")   -- (a failure shows when SQLite opens it)
end

-- Creates the schema in a new file, checks the version of an existing one.
local function prepare(self)
  local mode = self:value("PRAGMA journal_mode = WAL")
  if mode ~= "wal" then fail("cannot use a WAL journal (journal mode " .. tostring(mode) .. ")") end
  self:run("PRAGMA synchronous = FULL")
  local ok, err = self:transaction("IMMEDIATE", function()
    local tables = self:value("SELECT count(*) FROM sqlite_master WHERE type = 'table'")
    local has_meta = self:value("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'")
    if has_meta == 0 then
      if tables > 0 then fail("a SQLite file, but not an lxmpp store") end
      self:run("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
      for _, sql in ipairs(SCHEMA) do self:run(sql) end
      self:run("INSERT INTO meta (key, value) VALUES ('schema_version', %d)", SCHEMA_VERSION)
      return true
    end
    local version = self:value("SELECT value FROM meta WHERE key = 'schema_version'")
    if math_type(version) ~= "integer" then fail("no schema version in its meta table") end
    if version > SCHEMA_VERSION then
      fail(format("schema version %d is newer than this lxmpp supports (%d)", version, SCHEMA_VERSION))
    end
    -- version < SCHEMA_VERSION: migrations go here when there is a version 2
    return true
  end)
  if ok then
    ok, err = self:transaction("IMMEDIATE", function()
      for _, sql in ipairs(ARCHIVE_SCHEMA) do self:run(sql) end
      return true
    end)
  end
  if not ok then fail((err:gsub("^storage: ", ""))) end
end

local sqlite = {
  SCHEMA_VERSION = SCHEMA_VERSION,
  -- how long a write waits for another connection's lock before failing
  BUSY_TIMEOUT_MS = 5000,
}

--- Opens (creating if missing) the store at path. Returns the backend, or
-- nil and a message.
function sqlite.open(path)
  if path == "" or path:find("\0", 1, true) or path:find(":memory:", 1, true) then
    return nil, "storage: not a usable file path: " .. format("%q", path)
  end
  create_private(path)
  local env = luasql.sqlite3()
  local conn, err = env:connect(path, sqlite.BUSY_TIMEOUT_MS)
  if not conn then
    env:close()
    return nil, "storage: cannot open " .. path .. ": " .. message(err):gsub("^storage: ", "")
  end
  local self = setmetatable({ env = env, conn = conn }, DB)
  local ok, perr = pcall(prepare, self)
  if not ok then
    self:close()
    if getmetatable(perr) ~= DBError then error(perr, 0) end
    return nil, "storage: cannot open " .. path .. ": " .. perr.message:gsub("^storage: ", "")
  end
  return self
end

return sqlite
