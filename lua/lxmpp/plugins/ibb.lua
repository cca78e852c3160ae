-- In-band bytestreams (XEP-0047) for clients: sending bytes (a file) to
-- another entity in base64 chunks carried by IQs, each chunk sent only
-- after the previous one was acknowledged (flow control), and receiving
-- them, with every chunk checked (its session, its sender, its sequence
-- number, its size, its base64) and the whole checked against the size and
-- SHA-256 the sender announced.
--
--   local ok, sha256, cond = c:ibb_send(to, data, { name = "notes.txt", block_size = 4096 })
--   c:ibb_receive(function(offer) return offer.from == "alice@example.org/r" end, { max_size = 1 << 24 })
--   c:on("ibb-received", function(t) end)   -- t.from, t.sid, t.data, t.file, t.sha256
--   c:on("ibb-failed", function(t, message, condition) end)
--
-- The announcement rides in the <open/> element as XEP-0234's <file/>
-- (name, size, an XEP-0300 sha-256 hash); peers that do not know it ignore
-- it, and a stream without it is accepted without the check. Nothing is
-- received unless ibb_receive installed a policy that accepts the offer.

local compat = require "lxmpp.compat"
local core = require "lxmpp.core"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local session = require "lxmpp.session"

local type, error, tostring, tonumber, pcall, ipairs, pairs, math_type =
  type, error, tostring, tonumber, compat.pcall, ipairs, pairs, compat.math_type
local format, byte, concat = string.format, string.byte, table.concat

local NS = "http://jabber.org/protocol/ibb"
local NS_FILE = "urn:xmpp:jingle:apps:file-transfer:5"
local NS_HASHES = "urn:xmpp:hashes:2"
local MAX_BLOCK = 65535

local M = { xmlns = NS }

session.add_event("ibb-received")
session.add_event("ibb-failed")

local function hex(bytes)
  return (bytes:gsub(".", function(c) return format("%02x", byte(c)) end))
end

--- ibb.sha256(data) -> hex digest
function M.sha256(data) return hex(core.hash("sha256", data)) end

--- Sending -------------------------------------------------------------------

local function open_element(sid, block_size, data, opts)
  local iq = st.stanza("open", { xmlns = NS, sid = sid, ["block-size"] = tostring(block_size), stanza = "iq" })
  iq:tag("file", { xmlns = NS_FILE })
  if opts.name then iq:text_tag("name", opts.name) end
  iq:text_tag("size", tostring(#data))
  iq:text_tag("hash", core.base64_encode(core.hash("sha256", data)), { xmlns = NS_HASHES, algo = "sha-256" })
  iq:up()
  return iq
end

local function send_iq(self, to, payload, timeout)
  return self:request(st.iq({ type = "set", to = to }):add_child(payload), timeout)
end

local function ibb_send(self, to, data, opts)
  local block = opts.block_size or 4096
  local sid = opts.sid or session.new_id()
  local timeout = opts.timeout
  local r, msg, cond = send_iq(self, to, open_element(sid, block, data, opts), timeout)
  if not r then return nil, msg, cond end
  local seq = 0
  for i = 1, #data, block do
    local chunk = data:sub(i, i + block - 1)
    r, msg, cond = send_iq(self, to, st.stanza("data", { xmlns = NS, sid = sid, seq = tostring(seq) })
      :text(core.base64_encode(chunk)), timeout)
    if not r then
      -- the stream is over either way; tell the peer if it can still hear
      if cond == "timeout" then send_iq(self, to, st.stanza("close", { xmlns = NS, sid = sid }), 5) end
      return nil, msg, cond
    end
    seq = (seq + 1) % 65536
    if opts.progress then opts.progress(i + #chunk - 1, #data) end
  end
  r, msg, cond = send_iq(self, to, st.stanza("close", { xmlns = NS, sid = sid }), timeout)
  if not r then return nil, msg, cond end
  return true, M.sha256(data)
end

--- Receiving -----------------------------------------------------------------

-- The XEP-0234 <file/> of an <open/>: name, size, sha256 (hex), or nil.
local function read_file_meta(open)
  local f = open:get_child("file", NS_FILE)
  if not f then return nil end
  local meta = { name = f:get_child_text("name") }
  local size = f:get_child_text("size")
  if size then
    meta.size = size:match("^%d+$") and compat.tointeger(tonumber(size))
    if not meta.size then return nil, "bad <size/> in the file description" end
  end
  for h in f:childtags("hash", NS_HASHES) do
    if h.attr.algo == "sha-256" then
      local raw = core.base64_decode((h:get_text() or ""):gsub("%s", ""))
      if not raw or #raw ~= 32 then return nil, "bad sha-256 hash in the file description" end
      meta.sha256 = hex(raw)
    end
  end
  return meta
end

-- Who sent a request: its prepared from, or, with none, our server (RFC
-- 6120 §8.1.2.1). A from that is no JID never gets here: see M:init.
local function sender(self, iq)
  if iq.attr.from == nil then return self.domain end
  return jid.prep(iq.attr.from)
end

local function fail(self, t, msg, cond)
  self.ibb.sessions[t.key] = nil
  self:fire_user("ibb-failed", t, msg, cond)
end

local function on_open(self, iq, open)
  local from = sender(self, iq)
  local sid = open.attr.sid
  local block = tonumber(open.attr["block-size"] or "")
  if not sid or sid == "" or #sid > 128 then return st.error_reply(iq, "modify", "bad-request", "a sid is needed") end
  if not block or math_type(block) ~= "integer" or block < 1 then
    return st.error_reply(iq, "modify", "bad-request", "bad block-size")
  end
  local opts = self.ibb.opts
  if not self.ibb.policy then return st.error_reply(iq, "cancel", "not-acceptable", "streams are refused") end
  if block > (opts.max_block_size or MAX_BLOCK) then return st.error_reply(iq, "modify", "resource-constraint") end
  if (open.attr.stanza or "iq") ~= "iq" then
    return st.error_reply(iq, "cancel", "feature-not-implemented", "only IQ-carried streams (flow controlled)")
  end
  local key = from .. "\0" .. sid
  if self.ibb.sessions[key] then return st.error_reply(iq, "cancel", "conflict", "this sid is in use") end
  local open_streams = 0
  for _ in pairs(self.ibb.sessions) do open_streams = open_streams + 1 end
  if open_streams >= (opts.max_streams or 8) then
    return st.error_reply(iq, "wait", "resource-constraint", "too many streams at once")
  end
  local meta, merr = read_file_meta(open)
  if merr then return st.error_reply(iq, "modify", "bad-request", merr) end
  local max = opts.max_size or 16 * 1024 * 1024
  if meta and meta.size and meta.size > max then
    return st.error_reply(iq, "modify", "resource-constraint", "too large")
  end
  local offer = { from = from, sid = sid, block_size = block, file = meta }
  local ok, accept = pcall(self.ibb.policy, offer)
  if not ok then
    self:log("error", "ibb_receive policy failed: %s", tostring(accept))
    return st.error_reply(iq, "wait", "internal-server-error")
  end
  if accept ~= true then return st.error_reply(iq, "cancel", "not-acceptable", "the stream was refused") end
  self.ibb.sessions[key] = { key = key, from = from, sid = sid, block_size = block, file = meta,
    seq = 0, parts = {}, size = 0, max = max }
  return st.reply(iq)
end

local function on_data(self, iq, data)
  local from = sender(self, iq)
  local key = from .. "\0" .. (data.attr.sid or "")
  local t = self.ibb.sessions[key]
  if not t then return st.error_reply(iq, "cancel", "item-not-found", "no such stream") end
  local seq = data.attr.seq and data.attr.seq:match("^%d+$") and compat.tointeger(tonumber(data.attr.seq))
  if seq ~= t.seq then
    fail(self, t, ("chunk %s arrived where %d was due"):format(tostring(data.attr.seq), t.seq), "unexpected-request")
    return st.error_reply(iq, "cancel", "unexpected-request", "out of sequence")
  end
  local text = data:get_text()
  local chunk = text and core.base64_decode((text:gsub("%s", "")))
  if not chunk then
    fail(self, t, "a chunk is not base64", "bad-request")
    return st.error_reply(iq, "cancel", "bad-request", "not base64")
  end
  if #chunk > t.block_size then
    fail(self, t, "a chunk is larger than the block size", "policy-violation")
    return st.error_reply(iq, "modify", "policy-violation", "larger than the block size")
  end
  if t.size + #chunk > t.max or (t.file and t.file.size and t.size + #chunk > t.file.size) then
    fail(self, t, "more data than announced or allowed", "resource-constraint")
    return st.error_reply(iq, "cancel", "resource-constraint", "too much data")
  end
  t.parts[#t.parts + 1] = chunk
  t.size = t.size + #chunk
  t.seq = (t.seq + 1) % 65536
  return st.reply(iq)
end

local function on_close(self, iq, close)
  local from = sender(self, iq)
  local key = from .. "\0" .. (close.attr.sid or "")
  local t = self.ibb.sessions[key]
  if not t then return st.error_reply(iq, "cancel", "item-not-found", "no such stream") end
  self.ibb.sessions[key] = nil
  local data = concat(t.parts)
  t.parts = nil
  local result = { from = t.from, sid = t.sid, file = t.file, data = data, sha256 = M.sha256(data) }
  if t.file and t.file.size and t.file.size ~= #data then
    self:fire_user("ibb-failed", result, ("%d bytes arrived, %d were announced"):format(#data, t.file.size),
      "not-acceptable")
  elseif t.file and t.file.sha256 and t.file.sha256 ~= result.sha256 then
    self:fire_user("ibb-failed", result, "the data does not match its sha-256 hash", "not-acceptable")
  else
    self:fire_user("ibb-received", result)
  end
  return st.reply(iq)
end

-- The plugin object, c.ibb (docs/api.md "Plugins"): .policy and .opts (set
-- by c:ibb_receive), .sessions the streams being received (key -> stream).
M.forwards = { ibb_send = "send", ibb_receive = "receive" }
M.events = { "ibb-received", "ibb-failed" }

--- c.ibb:send(to, data [, opts]) -> true, sha256_hex | nil, message, condition
function M:send(to, data, opts)
  if type(to) ~= "string" or not jid.prep(to) then error("ibb_send: invalid JID " .. tostring(to), 2) end
  if type(data) ~= "string" then error("ibb_send: data must be a string", 2) end
  opts = opts or {}
  if type(opts) ~= "table" then error("ibb_send: opts must be a table", 2) end
  local b = opts.block_size
  if b ~= nil and (math_type(b) ~= "integer" or b < 1 or b > MAX_BLOCK) then
    error("ibb_send: block_size must be an integer from 1 to 65535", 2)
  end
  if opts.name ~= nil and type(opts.name) ~= "string" then error("ibb_send: name must be a string", 2) end
  if opts.progress ~= nil and type(opts.progress) ~= "function" then
    error("ibb_send: progress must be a function", 2)
  end
  return ibb_send(self.client, jid.prep(to), data, opts)
end

--- c.ibb:receive(policy [, { max_size =, max_block_size =, max_streams = }]): policy(offer)
-- -> true accepts a stream (offer.from, .sid, .block_size, .file); nil
-- refuses every stream again.
function M:receive(policy, opts)
  if policy ~= nil and type(policy) ~= "function" then error("ibb_receive: policy must be a function", 2) end
  opts = opts or {}
  if type(opts) ~= "table" then error("ibb_receive: opts must be a table", 2) end
  for _, k in ipairs({ "max_size", "max_block_size", "max_streams" }) do
    if opts[k] ~= nil and (math_type(opts[k]) ~= "integer" or opts[k] < 1) then
      error("ibb_receive: " .. k .. " must be a positive integer", 2)
    end
  end
  self.policy, self.opts = policy, opts
end

function M:init(c)
  self.sessions, self.opts = {}, {}
  -- A request whose from is not a JID is nobody's stream, and certainly not
  -- our server's: dropped before anything answers it (a reply would go to
  -- an address that is none).
  c:hook_child("iq", NS, function(iq)
    if iq.attr.from ~= nil and not jid.prep(iq.attr.from) then
      c:log("warn", "dropped an in-band bytestream request from an invalid JID %s", tostring(iq.attr.from))
      return true
    end
  end)
  c:handle_iq(NS, function(iq)
    if iq.attr.type ~= "set" then return st.error_reply(iq, "cancel", "bad-request") end
    local el = iq.tags[1]
    if el.name == "open" then return on_open(c, iq, el)
    elseif el.name == "data" then return on_data(c, iq, el)
    elseif el.name == "close" then return on_close(c, iq, el) end
    return st.error_reply(iq, "cancel", "bad-request")
  end)
end

return M
