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

local codec = require "lxmpp.server.codec"

local type, error, pairs, ipairs, setmetatable = type, error, pairs, ipairs, setmetatable
local math_type = math.type
local sort = table.sort

local storage = {}

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

function Store:close()
	local b = self._backend
	self._backend = nil
	if b then b:close() end
end
Store.__close = Store.close
Store.__gc = Store.close

function Store:get_account(user)
	check_name(user, "user")
	local blob = backend(self):account_get(user)
	return blob and decode(blob, "account " .. user)
end

function Store:set_account(user, record)
	check_name(user, "user")
	check_account(record)
	return backend(self):account_set(user, codec.encode(record))
end

function Store:remove_account(user)
	check_name(user, "user")
	return backend(self):account_remove(user)
end

function Store:users()
	local list = backend(self):account_list()
	sort(list)
	return list
end

function Store:get_roster(user)
	check_name(user, "user")
	local ver, items, pending = backend(self):roster_load(user)
	local roster = { ver = ver, items = {}, pending = {} }
	for contact, blob in pairs(items) do roster.items[contact] = decode(blob, "roster item " .. contact) end
	for contact, blob in pairs(pending) do roster.pending[contact] = decode(blob, "pending " .. contact) end
	return roster
end

function Store:set_roster_item(user, contact, item)
	check_name(user, "user")
	check_name(contact, "contact")
	local blob = item ~= nil and codec.encode(roster_item(item)) or nil
	return backend(self):roster_set(user, contact, blob)
end

function Store:set_pending(user, contact, value)
	check_name(user, "user")
	check_name(contact, "contact")
	if value ~= nil and value ~= true and type(value) ~= "string" then
		error("storage: a pending request is its XML (a string), true or nil", 2)
	end
	return backend(self):pending_set(user, contact, value ~= nil and codec.encode(value) or nil)
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

function Memory:offline_delete(user, upto)
	local list, kept, bytes = self.offline[user] or {}, {}, 0
	for _, m in ipairs(list) do
		if m.id > upto then
			kept[#kept + 1] = m
			bytes = bytes + #m.data
		end
	end
	kept.bytes = bytes
	self.offline[user] = kept
	return true
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
	return setmetatable({ _backend = b }, Store)
end

return storage
