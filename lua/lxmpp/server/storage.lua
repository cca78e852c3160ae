-- The embedded server's storage: accounts, rosters, pending subscription
-- requests, offline messages, message archives (storage_archive.lua), and a
-- key/value space for other server parts (MUC rooms, vCards, private XML).
--
--   local store = assert(storage.open(nil))        -- memory
--   local store = assert(storage.open("x.sqlite")) -- SQLite file (storage_sqlite.lua)
--
-- This file checks arguments, encodes values (codec.lua) and holds the memory
-- backend; a backend only keeps encoded bytes. So both backends accept and
-- refuse exactly the same values, and what a caller gets back is always a
-- fresh copy: changing it never changes the store.
--
-- Errors: misuse (bad arguments, a value that cannot be stored, a closed
-- store) raises. A write the backend could not make returns nil, message and
-- changes nothing. Reads raise when the backend fails or a stored value is
-- corrupt, so a failure is never mistaken for "absent".
--
-- A mutating call has committed when it returns (for SQLite: on disk).
--
-- Rosters are kept decoded in memory once read (at most ROSTER_CACHE items
-- and pending requests in all, the rosters read first forgotten first), and
-- each roster write through the store updates that copy: the server asks
-- about one contact (a subscription check, a pubsub access check) or about
-- the contacts with a given subscription (a presence broadcast) without
-- decoding the whole roster each time (docs/server.md, "Rosters"). So
-- only one store at a time may write the rosters of a SQLite file.

local compat = require "lxmpp.compat"
local codec = require "lxmpp.server.codec"
local bounded = require "lxmpp.bounded"

local type, error, pairs, ipairs, setmetatable = type, error, pairs, ipairs, setmetatable
local math_type = compat.math_type
local sort = table.sort

local storage = {}

-- Roster items and pending requests kept decoded, in all, by a store
-- opened from now on.
storage.ROSTER_CACHE = 100000

--- Argument checks ------------------------------------------------------------

local function check_name(value, what)
  if type(value) ~= "string" or value == "" then
    error(("storage: %s must be a non-empty string"):format(what), 3)
  end
end

local SUBSCRIPTIONS = { none = true, to = true, from = true, both = true }

-- A roster item, with the defaults filled in (subscription "none", no
-- groups). Other fields are kept as they are.
local function roster_item(item)
  if type(item) ~= "table" then error("storage: a roster item must be a table or nil", 3) end
  local copy = {}
  for k, v in pairs(item) do copy[k] = v end
  copy.subscription = copy.subscription or "none"
  copy.groups = copy.groups or {}
  if not SUBSCRIPTIONS[copy.subscription] then
    error("storage: roster item subscription must be none, to, from or both", 3)
  end
  if copy.ask ~= nil and copy.ask ~= "subscribe" then
    error('storage: roster item ask must be "subscribe" or nil', 3)
  end
  if copy.name ~= nil and type(copy.name) ~= "string" then
    error("storage: roster item name must be a string or nil", 3)
  end
  if type(copy.groups) ~= "table" then error("storage: roster item groups must be an array of strings", 3) end
  local n = 0
  for _ in pairs(copy.groups) do n = n + 1 end
  for i = 1, n do
    if type(copy.groups[i]) ~= "string" then
      error("storage: roster item groups must be an array of strings", 3)
    end
  end
  return copy
end

local SCRAM_FIELDS = { salt = "string", stored_key = "string", server_key = "string" }

local function check_account(record)
  if type(record) ~= "table" then error("storage: an account record must be a table", 3) end
  for mech, cred in pairs(record) do
    if type(mech) ~= "string" or type(cred) ~= "table" then
      error("storage: an account record maps mechanism names to credential tables", 3)
    end
    for field, kind in pairs(SCRAM_FIELDS) do
      if type(cred[field]) ~= kind then
        error(("storage: account credentials for %s lack %s"):format(mech, field), 3)
      end
    end
    if math_type(cred.iterations) ~= "integer" or cred.iterations < 1 then
      error(("storage: account credentials for %s need an integer iteration count"):format(mech), 3)
    end
  end
end

local function decode(blob, what)
  local value, err = codec.decode(blob)
  if value == nil then error(("storage: corrupt %s (%s)"):format(what, err), 3) end
  return value
end

--- The store --------------------------------------------------------------------

local Store = {}
Store.__index = Store

local function backend(self)
  local b = self._backend
  if not b then error("storage: the store is closed", 3) end
  return b
end

-- The roster cache. Each cached roster is { ver =, items = { contact ->
-- item }, pending = { contact -> request }, n = #items, np = #pending } of
-- decoded values that never leave this file: callers get copies (or strings).

-- A copy of a decoded value (plain data: the codec allows no cycles).
local function copy(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for k, x in pairs(v) do c[k] = copy(x) end
  return c
end

local function weight(r) return r.n + r.np + 1 end

-- The cached roster of user, read (and cached) when missing.
local function roster(self, user)
  local b, cache = backend(self), self._rosters
  local r = cache:get(user)
  if r then return r end
  local ver, items, pending = b:roster_load(user)
  r = { ver = ver, items = {}, pending = {}, n = 0, np = 0 }
  for contact, blob in pairs(items) do
    r.items[contact], r.n = decode(blob, "roster item " .. contact), r.n + 1
  end
  for contact, blob in pairs(pending) do
    r.pending[contact], r.np = decode(blob, "pending " .. contact), r.np + 1
  end
  -- room for it: the oldest go (one larger than the whole cache is still kept, alone)
  while cache:count() > 0 and self._cached + weight(r) > self._cache_max do
    local old = cache:oldest()
    self._cached = self._cached - weight(cache:get(old))
    cache:delete(old)
  end
  cache:put(user, r)
  self._cached = self._cached + weight(r)
  return r
end

-- Forgets user's cached roster (its account is being removed).
local function forget(self, user)
  local r = self._rosters:get(user)
  if r then
    self._cached = self._cached - weight(r)
    self._rosters:delete(user)
  end
end

function Store:close()
  local b = self._backend
  self._backend = nil
  self._rosters, self._cached = bounded.new(self._cache_max + 1), 0
  if b then b:close() end
end
Store.__close = Store.close
Store.__gc = Store.close

function Store:get_account(user)
  check_name(user, "user")
  local blob = backend(self):account_get(user)
  return blob and decode(blob, "account " .. user)
end

-- Whether the account exists, without decoding its record (the server asks
-- this for every archived message: decoding SCRAM keys each time cost more
-- than routing the message).
function Store:has_account(user)
  check_name(user, "user")
  return backend(self):account_get(user) ~= nil
end

function Store:set_account(user, record)
  check_name(user, "user")
  check_account(record)
  return backend(self):account_set(user, codec.encode(record))
end

function Store:remove_account(user)
  check_name(user, "user")
  local b = backend(self)
  forget(self, user)
  return b:account_remove(user)
end

function Store:users()
  local list = backend(self):account_list()
  sort(list)
  return list
end

--- Rosters ----------------------------------------------------------------------

--- The whole roster of user: { ver =, items = { contact -> item },
-- pending = { contact -> request } } (a copy).
function Store:get_roster(user)
  check_name(user, "user")
  local r = roster(self, user)
  return { ver = r.ver, items = copy(r.items), pending = copy(r.pending) }
end

--- One roster item of user (a copy), or nil.
function Store:get_roster_item(user, contact)
  check_name(user, "user")
  check_name(contact, "contact")
  return copy(roster(self, user).items[contact])
end

--- The pending subscription request of contact to user (its XML or
-- true), or nil.
function Store:get_pending(user, contact)
  check_name(user, "user")
  check_name(contact, "contact")
  return roster(self, user).pending[contact]
end

--- The version of user's roster (RFC 6121 §2.6).
function Store:roster_version(user)
  check_name(user, "user")
  return roster(self, user).ver
end

--- How many items user's roster holds, and how many requests wait.
function Store:roster_size(user)
  check_name(user, "user")
  local r = roster(self, user)
  return r.n, r.np
end

--- The contacts of user whose subscription is one of `subs` (a set, like
-- { from = true, both = true }): a list of bare JIDs, in no given order.
function Store:roster_contacts(user, subs)
  check_name(user, "user")
  if type(subs) ~= "table" then error("storage: roster_contacts needs a set of subscription states", 2) end
  local list = {}
  for contact, item in pairs(roster(self, user).items) do
    if subs[item.subscription] then list[#list + 1] = contact end
  end
  return list
end

--- The pending subscription requests of user: { contact -> request } (a copy).
function Store:get_pending_requests(user)
  check_name(user, "user")
  return copy(roster(self, user).pending)
end

function Store:set_roster_item(user, contact, item)
  check_name(user, "user")
  check_name(contact, "contact")
  local blob = item ~= nil and codec.encode(roster_item(item)) or nil
  local ver, err = backend(self):roster_set(user, contact, blob)
  if not ver then return nil, err end
  local r = self._rosters:get(user)
  if r then
    local had = r.items[contact] ~= nil
    r.items[contact], r.ver = blob and decode(blob, "roster item " .. contact), ver
    local delta = (blob and 1 or 0) - (had and 1 or 0)
    r.n, self._cached = r.n + delta, self._cached + delta
  end
  return ver
end

function Store:set_pending(user, contact, value)
  check_name(user, "user")
  check_name(contact, "contact")
  if value ~= nil and value ~= true and type(value) ~= "string" then
    error("storage: a pending request is its XML (a string), true or nil", 2)
  end
  local ok, err = backend(self):pending_set(user, contact, value ~= nil and codec.encode(value) or nil)
  if not ok then return nil, err end
  local r = self._rosters:get(user)
  if r then
    local had = r.pending[contact] ~= nil
    r.pending[contact] = value
    local delta = (value ~= nil and 1 or 0) - (had and 1 or 0)
    r.np, self._cached = r.np + delta, self._cached + delta
  end
  return ok
end

function Store:push_offline(user, xml)
  check_name(user, "user")
  if type(xml) ~= "string" then error("storage: an offline message is a string (its XML)", 2) end
  return backend(self):offline_push(user, xml)
end

function Store:get_offline(user)
  check_name(user, "user")
  return backend(self):offline_list(user)
end

function Store:delete_offline(user, upto)
  check_name(user, "user")
  if math_type(upto) ~= "integer" then error("storage: delete_offline needs an integer id", 2) end
  return backend(self):offline_delete(user, upto)
end

--- store:drop_offline(user, ids) -> true: deletes the offline messages
-- whose ids are in the array ids (others stay, in order; unknown ids are
-- skipped). Bind2 drops those the archive holds (server/mam.lua).
function Store:drop_offline(user, ids)
  check_name(user, "user")
  if type(ids) ~= "table" then error("storage: drop_offline needs an array of ids", 2) end
  for i, id in ipairs(ids) do
    if math_type(id) ~= "integer" then error("storage: drop_offline: ids[" .. i .. "] is not an integer", 2) end
  end
  if #ids == 0 then return true end
  return backend(self):offline_drop(user, ids)
end

--- store:count_offline(user) -> messages, bytes of their XML
function Store:count_offline(user)
  check_name(user, "user")
  return backend(self):offline_count(user)
end

function Store:get(kind, key)
  check_name(kind, "kind")
  check_name(key, "key")
  local blob = backend(self):kv_get(kind, key)
  return blob and decode(blob, kind .. " " .. key)
end

--- Stores value under (kind, key); nil deletes. owner (optional, a
-- username) ties the row to an account: remove_account(owner) deletes it.
function Store:set(kind, key, value, owner)
  check_name(kind, "kind")
  check_name(key, "key")
  if owner ~= nil then check_name(owner, "owner") end
  return backend(self):kv_set(kind, key, value ~= nil and codec.encode(value) or nil, owner)
end

function Store:keys(kind)
  check_name(kind, "kind")
  local list = backend(self):kv_keys(kind)
  sort(list)
  return list
end

require("lxmpp.server.storage_archive").install_store(Store, backend)

--- The memory backend -------------------------------------------------------------
-- Plain tables of encoded bytes. Offline ids come from one counter, so they
-- only grow, as in SQLite.

local Memory = {}
Memory.__index = Memory

local function per_user(map, user)
  local t = map[user]
  if not t then
    t = {}
    map[user] = t
  end
  return t
end

local function memory()
  return setmetatable({
    accounts = {}, rosters = {}, versions = {}, pending = {}, offline = {},
    kv = {}, owners = {}, last_id = 0,
  }, Memory)
end

function Memory.close() end

function Memory:account_get(user) return self.accounts[user] end

function Memory:account_set(user, blob)
  self.accounts[user] = blob
  return true
end

function Memory:account_remove(user)
  self.accounts[user], self.rosters[user] = nil, nil
  -- the version counter stays (and moves): a version number never names
  -- two different rosters of one user name (RFC 6121 §2.6)
  if self.versions[user] then self.versions[user] = self.versions[user] + 1 end
  self.pending[user], self.offline[user] = nil, nil
  if self.archives then self.archives[user] = nil end
  for kind, rows in pairs(self.kv) do
    local owners = self.owners[kind]
    for key in pairs(rows) do
      if owners[key] == user then rows[key], owners[key] = nil, nil end
    end
  end
  return true
end

function Memory:account_list()
  local list = {}
  for user in pairs(self.accounts) do list[#list + 1] = user end
  return list
end

function Memory:roster_load(user)
  local items, pending = {}, {}
  for contact, blob in pairs(self.rosters[user] or {}) do items[contact] = blob end
  for contact, blob in pairs(self.pending[user] or {}) do pending[contact] = blob end
  return self.versions[user] or 0, items, pending
end

function Memory:roster_set(user, contact, blob)
  local items = per_user(self.rosters, user)
  local ver = self.versions[user] or 0
  if items[contact] == blob then return ver end -- nothing changes
  items[contact] = blob
  self.versions[user] = ver + 1
  return ver + 1
end

function Memory:pending_set(user, contact, blob)
  per_user(self.pending, user)[contact] = blob
  return true
end

function Memory:offline_push(user, xml)
  self.last_id = self.last_id + 1
  local list = per_user(self.offline, user)
  list[#list + 1] = { id = self.last_id, data = xml }
  list.bytes = (list.bytes or 0) + #xml
  return self.last_id
end

function Memory:offline_list(user)
  local out = {}
  for i, m in ipairs(self.offline[user] or {}) do out[i] = { id = m.id, data = m.data } end
  return out
end

-- Keeps the user's offline messages for which keep(m) holds, in order.
local function keep_offline(self, user, keep)
  local list, kept, bytes = self.offline[user] or {}, {}, 0
  for _, m in ipairs(list) do
    if keep(m) then
      kept[#kept + 1] = m
      bytes = bytes + #m.data
    end
  end
  kept.bytes = bytes
  self.offline[user] = kept
  return true
end

function Memory:offline_delete(user, upto)
  return keep_offline(self, user, function(m) return m.id > upto end)
end

function Memory:offline_drop(user, ids)
  local gone = {}
  for _, id in ipairs(ids) do gone[id] = true end
  return keep_offline(self, user, function(m) return not gone[m.id] end)
end

function Memory:offline_count(user)
  local list = self.offline[user]
  if not list then return 0, 0 end
  return #list, list.bytes or 0
end

function Memory:kv_get(kind, key)
  return (self.kv[kind] or {})[key]
end

function Memory:kv_set(kind, key, blob, owner)
  per_user(self.kv, kind)[key] = blob
  per_user(self.owners, kind)[key] = blob and owner or nil
  return true
end

function Memory:kv_keys(kind)
  local list = {}
  for key in pairs(self.kv[kind] or {}) do list[#list + 1] = key end
  return list
end

require("lxmpp.server.storage_archive").install_memory(Memory)

--- Opening ------------------------------------------------------------------------

--- Opens a store: path nil for memory, else the path of a SQLite file
-- (created when missing). Returns the store, or nil and a message.
function storage.open(path)
  if path ~= nil and type(path) ~= "string" then
    error("storage: path must be a string or nil", 2)
  end
  local b, err
  if path == nil then
    b = memory()
  else
    b, err = require("lxmpp.server.storage_sqlite").open(path)
    if not b then return nil, err end
  end
  -- at most ROSTER_CACHE + 1 rosters: each weighs at least 1
  local max = storage.ROSTER_CACHE
  return setmetatable({ _backend = b, _rosters = bounded.new(max + 1), _cached = 0, _cache_max = max }, Store)
end

return storage
