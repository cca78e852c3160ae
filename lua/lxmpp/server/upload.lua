-- lxmpp.server.upload: HTTP file upload (XEP-0363) for the embedded
-- server. The service lives on a domain of its own (option
-- `upload = "upload.localhost"`, or a table: see M.check), answers
-- disco#info (identity store/file, the max-file-size form) and hands
-- slots to the server's own users; the files themselves go over HTTPS to
-- lxmpp.server.http_files, which asks this service about slots and files.
--
-- A slot is a 128-bit random token and the file name; its URL is
-- BASE/upload/TOKEN/NAME for both PUT and GET. A slot expires after
-- `slot_timeout` seconds and takes one PUT. Sizes are reserved when a slot
-- is handed out, so the quotas (limits.upload_quota in all,
-- limits.upload_user_quota per account) hold whatever the uploads do.
-- Files are kept in memory, or under `storage_dir` named by their token
-- only (never by anything a client wrote), their list in the server's
-- storage (so with `storage` set they survive restarts).

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local http = require "lxmpp.http"
local service = require "lxmpp.server.service"

local type, error, tostring, tonumber, pairs, ipairs, setmetatable, math_type, io, os =
  type, error, tostring, tonumber, pairs, ipairs, setmetatable, compat.math_type, io, os

local M = {}
local NS = "urn:xmpp:http:upload:0"
local NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
local NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
M.NS = NS

M.DEFAULTS = { listen = "127.0.0.1:5281", max_size = 10485760, slot_timeout = 300, expire = 604800 }
local MAX_PENDING = 64          -- unused slots one account may hold
local KIND = "upload_files"     -- the storage kv space of stored files' metadata

---------------------------------------------------------------------------
-- options

-- Raises at the level of the caller of lxmpp.server (check <- new <- user).
local function fail(fmt, ...) error("lxmpp.server: upload " .. fmt:format(...), 4) end

local function positive(o, key, integer)
  local v = o[key]
  if v == nil then return end
  if type(v) ~= "number" or v <= 0 or (integer and math_type(v) ~= "integer") then
    fail("option %s must be a positive %s", key, integer and "integer" or "number")
  end
end

--- upload.check(opt): validates the `upload` option (a domain, or a table
-- { domain =, listen =, url =, max_size =, slot_timeout =, expire =,
-- storage_dir = }; expire: seconds a file is kept, false for ever);
-- raises with a clear message.
function M.check(opt)
  if type(opt) == "string" then opt = { domain = opt } end
  if type(opt) ~= "table" then fail("must be a domain or a table of options") end
  for k in pairs(opt) do
    if k ~= "domain" and M.DEFAULTS[k] == nil and k ~= "url" and k ~= "storage_dir" then
      fail("has no option %q", tostring(k))
    end
  end
  local d = type(opt.domain) == "string" and jid.prep(opt.domain)
  if not d or jid.node(d) or jid.resource(d) then fail("domain %q is not a valid domain", tostring(opt.domain)) end
  if opt.listen ~= nil then require("lxmpp.server").parse_address(opt.listen, "upload listen") end
  if opt.url ~= nil then
    local u = type(opt.url) == "string" and http.parse_url(opt.url)
    if not u or u.scheme ~= "https" or u.path ~= "/" or not opt.url:match("^[^?#]*$") then
      fail("url must be an https base such as https://upload.example.org:5281 (no path)")
    end
  end
  positive(opt, "max_size", true)
  positive(opt, "slot_timeout", false)
  if opt.expire ~= false then positive(opt, "expire", false) end
  if opt.storage_dir ~= nil and (type(opt.storage_dir) ~= "string" or opt.storage_dir == "") then
    fail("storage_dir must be a directory name")
  end
  return opt
end

---------------------------------------------------------------------------
-- the service

local Service = {}
Service.__index = Service
M.Service = Service

local function hex(bytes) return (bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

-- Percent-encodes everything but RFC 3986 unreserved characters.
local function url_encode(s)
  return (s:gsub("[^%w%-._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end
M.url_encode = url_encode

--- A file name we hand slots for: UTF-8, 1 to 255 bytes, no path
-- separators, no control characters, not "." or "..".
function M.valid_filename(name)
  return type(name) == "string" and #name >= 1 and #name <= 255 and compat.utf8_len(name) ~= nil
    and not name:find("[%c/\\\127]") and name ~= "." and name ~= ".."
end

--- A media type: type/subtype, then parameters in printable ASCII.
function M.valid_content_type(ct)
  return type(ct) == "string" and #ct <= 255 and
    (ct:match("^[%w!#$&^_.+-]+/[%w!#$&^_.+-]+$") or ct:match("^[%w!#$&^_.+-]+/[%w!#$&^_.+-]+%s*;[ -~]*$")) ~= nil
end

local function file_path(self, token) return self.dir .. "/" .. token end

--- upload.start(srv, opt) -> service | nil, message, condition: mounts the
-- host and starts the HTTPS listener (on the server's TLS context).
function M.start(srv, opt)
  opt = M.check(opt)
  local d = jid.prep(opt.domain)
  if srv.hosts[d] then return nil, "upload: " .. d .. " is already served", "conflict" end
  local self = setmetatable({ srv = srv, domain = d, limits = srv.limits,
    max_size = opt.max_size or M.DEFAULTS.max_size, slot_timeout = opt.slot_timeout or M.DEFAULTS.slot_timeout,
    dir = opt.storage_dir, slots = {}, files = {}, used = 0, used_by = {}, pending_by = {},
    expire = opt.expire == nil and M.DEFAULTS.expire or opt.expire,
    now = core.now, clock = os.time,     -- slots' and files' clocks (specs set them)
    next_sweep = 0 }, Service)
  if self.dir then
    local probe = file_path(self, ".lxmpp-probe")
    local f, ferr = io.open(probe, "wb")
    if not f then return nil, "upload: storage_dir is not writable: " .. tostring(ferr), "internal-server-error" end
    f:close()
    os.remove(probe)
    for _, token in pairs(srv.store:keys(KIND)) do  -- what an earlier run stored
      local meta = srv.store:get(KIND, token)
      local ok = io.open(file_path(self, token), "rb")
      if ok then
        ok:close()
        self:account(token, meta)
      else
        srv.store:set(KIND, token, nil)
      end
    end
  end
  local a = require("lxmpp.server").parse_address(opt.listen or M.DEFAULTS.listen, "upload listen")
  local l, msg, cond = require("lxmpp.server.http_files").listen(self, a.ip, a.port)
  if not l then return nil, "upload: " .. tostring(msg), cond end
  self.listener = l
  srv.listeners[#srv.listeners + 1] = { l = l, kind = "upload", ip = a.ip, port = l:port() }
  self.base = opt.url and opt.url:gsub("/$", "") or ("https://%s:%d"):format(srv.domain, l:port())
  srv:add_host(d, self)
  srv:hook_builtin("user-removing", function(ev) self:forget_owner(ev.bare) end, -14)  -- its files go
  return self
end

-- Counts a stored file against the quotas.
function Service:account(token, meta)
  self.files[token] = meta
  self.used = self.used + meta.size
  self.used_by[meta.owner] = (self.used_by[meta.owner] or 0) + meta.size
end

-- Deletes a stored file (memory, disk, storage) and its share of the quotas.
function Service:delete_file(token)
  local meta = self.files[token]
  if not meta then return end
  self.files[token] = nil
  self.used = self.used - meta.size
  local left = (self.used_by[meta.owner] or 0) - meta.size
  self.used_by[meta.owner] = left > 0 and left or nil
  if self.dir then
    os.remove(file_path(self, token))
    self.srv.store:set(KIND, token, nil)
  end
end

local function expired(self, meta)
  return self.expire and meta.time + self.expire <= self.clock()
end

--- Forgets an account's files and slots (the account is removed). A slot
-- whose PUT is under way is dropped too and marked: the PUT's end stores
-- nothing (410), so no file and no quota outlive the account, and a later
-- account of the same name starts with none.
function Service:forget_owner(owner)
  for token, meta in pairs(self.files) do
    if meta.owner == owner then self:delete_file(token) end
  end
  for token, slot in pairs(self.slots) do
    if slot.owner == owner then
      if slot.busy then slot.removed = true end
      self:drop_slot(token)
    end
  end
end

--- Stops the HTTP side: open transfers are cut; memory is given back.
function Service:close()
  if self.listener then self.listener:close() end
  self.listener = nil
  if self.http then self.http:close_all() end
  self.srv:remove_host(self.domain)
  self.slots, self.files = {}, {}
end

-- Drops expired slots (at most once a second), giving back their
-- reservation, and deletes expired files.
function Service:sweep(now)
  if now < self.next_sweep then return end
  self.next_sweep = now + 1
  for token, slot in pairs(self.slots) do
    if slot.expires <= now and not slot.busy then self:drop_slot(token) end
  end
  for token, meta in pairs(self.files) do
    if expired(self, meta) then self:delete_file(token) end
  end
end

function Service:drop_slot(token)
  local slot = self.slots[token]
  if not slot then return end
  self.slots[token] = nil
  local p = self.pending_by[slot.owner]
  p.bytes, p.n = p.bytes - slot.size, p.n - 1
  if p.n == 0 then self.pending_by[slot.owner] = nil end
end

function Service:reserved()
  local n = 0
  for _, p in pairs(self.pending_by) do n = n + p.bytes end
  return n
end

local function file_too_large(iq, max)
  local r = st.error_reply(iq, "modify", "not-acceptable", ("the file is larger than %d bytes"):format(max))
  r:get_child("error"):tag("file-too-large", { xmlns = NS }):text_tag("max-file-size", tostring(max))
  return r
end

--- The answer to a slot request (an IQ get whose `from` the server stamped).
function Service:slot_request(iq, req)
  local from = iq.attr.from
  local node, host = jid.split(from)
  if not node or host ~= self.srv.domain then
    return st.error_reply(iq, "cancel", "not-allowed", "only users of " .. self.srv.domain .. " may upload")
  end
  local owner = node .. "@" .. host
  local name, size_s, ct = req.attr.filename, req.attr.size, req.attr["content-type"]
  if not M.valid_filename(name) then
    return st.error_reply(iq, "modify", "bad-request", "the file name is empty, too long or has a path in it")
  end
  local size = type(size_s) == "string" and #size_s <= 15 and size_s:match("^%d+$")
    and compat.tointeger(tonumber(size_s))
  if not size then return st.error_reply(iq, "modify", "bad-request", "the size must be a number of bytes") end
  if ct ~= nil and not M.valid_content_type(ct) then
    return st.error_reply(iq, "modify", "bad-request", "the content type is not a media type")
  end
  if size > self.max_size then return file_too_large(iq, self.max_size) end
  local now = self.now()
  self:sweep(now)
  local p = self.pending_by[owner] or { bytes = 0, n = 0 }
  if p.n >= MAX_PENDING then
    return st.error_reply(iq, "wait", "resource-constraint", "too many unused slots: upload or wait for them to expire")
  end
  if (self.used_by[owner] or 0) + p.bytes + size > self.limits.upload_user_quota then
    return st.error_reply(iq, "wait", "resource-constraint", "your upload quota is used up")
  end
  if self.used + self:reserved() + size > self.limits.upload_quota then
    return st.error_reply(iq, "wait", "resource-constraint", "the upload service is full")
  end
  local token = hex(core.random(16))
  self.slots[token] = { token = token, name = name, size = size, ctype = ct, owner = owner,
    expires = now + self.slot_timeout }
  p.bytes, p.n = p.bytes + size, p.n + 1
  self.pending_by[owner] = p
  local url = self.base .. "/upload/" .. token .. "/" .. url_encode(name)
  self.srv:log("info", "upload: slot for %s (%d bytes) to %s", owner, size, from)
  return st.reply(iq):tag("slot", { xmlns = NS }):tag("put", { url = url }):up():tag("get", { url = url }):up()
end

--- A slot that takes a PUT now, or nil.
function Service:usable_slot(token, name)
  local slot = self.slots[token]
  if not slot or slot.busy or slot.name ~= name then return nil end
  if slot.expires <= self.now() then
    self:drop_slot(token)
    return nil
  end
  return slot
end

--- Stores a slot's file: true | nil, HTTP status, text. The slot is used up.
function Service:store(slot, data, ctype)
  if slot.removed then
    self.srv:log("info", "upload: a PUT for %s ended after the account was removed: not stored", slot.owner)
    return nil, 410, "the account this slot was handed to was removed"
  end
  local meta = { name = slot.name, size = #data, type = ctype, owner = slot.owner, time = self.clock() }
  self:drop_slot(slot.token)
  if self.dir then
    local path = file_path(self, slot.token)
    local f = io.open(path .. ".part", "wb")
    local ok = f and f:write(data)
    ok = f and f:close() and ok
    if not ok or not os.rename(path .. ".part", path) then
      os.remove(path .. ".part")
      self.srv:log("error", "upload: cannot write %s", path)
      return nil, 500
    end
    local stored = self.srv.store:set(KIND, slot.token, meta)
    if not stored then
      os.remove(path)
      return nil, 500
    end
  else
    meta.data = data
  end
  self:account(slot.token, meta)
  self.srv:log("info", "upload: %s stored %d bytes as %s", slot.owner, #data, slot.token)
  return true
end

--- A stored file: meta, bytes | nil.
function Service:file(token, name)
  local meta = self.files[token]
  if not meta or meta.name ~= name then return nil end
  if expired(self, meta) then
    self:delete_file(token)
    return nil
  end
  if meta.data then return meta, meta.data end
  local f = io.open(file_path(self, token), "rb")
  local data = f and f:read("*a")
  if f then f:close() end
  if not data then return nil end
  return meta, data
end

---------------------------------------------------------------------------
-- the XMPP side

local function disco_info(self, iq)
  if iq.tags[1].attr.node then return st.error_reply(iq, "cancel", "item-not-found") end
  local r = st.reply(iq):tag("query", { xmlns = NS_DISCO_INFO })
    :tag("identity", { category = "store", type = "file", name = "HTTP File Upload" }):up()
  for _, f in ipairs({ NS_DISCO_INFO, NS_DISCO_ITEMS, NS }) do r:tag("feature", { var = f }):up() end
  r:tag("x", { xmlns = "jabber:x:data", type = "result" })
    :tag("field", { var = "FORM_TYPE", type = "hidden" }):text_tag("value", NS):up()
    :tag("field", { var = "max-file-size" }):text_tag("value", tostring(self.max_size)):up()
  return r
end

--- host:deliver: IQs to the service's domain; messages to it bounce.
function Service:deliver(s, node, _, res)
  local t, q, ns = service.request(self.srv, s, node, res)
  if not t then return end
  local r
  if t == "get" and ns == NS_DISCO_INFO then r = disco_info(self, s)
  elseif t == "get" and ns == NS_DISCO_ITEMS and not q.attr.node then
    r = st.reply(s):tag("query", { xmlns = NS_DISCO_ITEMS })
  elseif t == "get" and ns == "urn:xmpp:ping" then r = st.reply(s)
  elseif t == "get" and ns == NS and q.name == "request" then r = self:slot_request(s, q)
  else r = st.error_reply(s, "cancel", "service-unavailable") end
  return self.srv:route(r)
end

return M
