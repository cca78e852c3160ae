-- HTTP file upload (XEP-0363) for clients: asking the server's upload
-- service for a slot, then PUTting the file there over HTTPS (lxmpp.http,
-- on lxmpp's own TLS, the certificate verified against the URL's host).
--
--   local service = c:upload_service()            -- found with disco, cached
--   local slot = c:upload_slot(service, "notes.txt", #data, "text/plain")
--       -- { put = url, get = url, headers = { Authorization =, Cookie =, Expires = } }
--   local get_url, msg, cond = c:upload(data, { name = "notes.txt", content_type = "text/plain" })
--
-- A slot is checked before anything is sent: both URLs must be https, and
-- only the headers XEP-0363 allows (Authorization, Cookie, Expires) are
-- kept, and only without line breaks.

local compat = require "lxmpp.compat"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local http = require "lxmpp.http"

local type, error, tostring, pairs, ipairs, math_type = type, error, tostring, pairs, ipairs, compat.math_type

local NS = "urn:xmpp:http:upload:0"
local NS_INFO = "http://jabber.org/protocol/disco#info"
local NS_ITEMS = "http://jabber.org/protocol/disco#items"
local ALLOWED_HEADERS = { authorization = "Authorization", cookie = "Cookie", expires = "Expires" }

local M = { xmlns = NS }

-- Does `entity` offer HTTP upload? (a minimal disco#info, private to this
-- plugin); true, max_size | false.
local function offers_upload(c, entity)
  local r = c:request(st.iq({ type = "get", to = entity }):tag("query", { xmlns = NS_INFO }), c.upload.timeout)
  local q = r and r:get_child("query", NS_INFO)
  if not q then return false end
  if not q:get_child_with_attr("feature", nil, "var", NS) then return false end
  local max
  for x in q:childtags("x", "jabber:x:data") do
    local values = {}
    for f in x:childtags("field") do values[f.attr.var or ""] = f:get_child_text("value") end
    if values.FORM_TYPE == NS and values["max-file-size"] then
      max = compat.tointeger(tonumber(values["max-file-size"]))
    end
  end
  return true, max
end

local function check_slot(slot)
  local put = slot and slot:get_child("put")
  local get = slot and slot:get_child("get")
  if not put or not get or not put.attr.url or not get.attr.url then
    return nil, "the slot lacks its put or get URL"
  end
  for _, u in ipairs({ put.attr.url, get.attr.url }) do
    local parsed = http.parse_url(u)
    if not parsed or parsed.scheme ~= "https" then return nil, "the slot's URLs must be https: " .. tostring(u) end
  end
  local headers = {}
  for h in put:childtags("header") do
    local canonical = ALLOWED_HEADERS[(h.attr.name or ""):lower()]
    local value = h:get_text()
    if canonical and value then
      if value:find("[\r\n%z]") then return nil, "a slot header holds a line break" end
      headers[canonical] = value
    end
  end
  return { put = put.attr.url, get = get.attr.url, headers = headers }
end

-- The plugin object, c.upload (docs/api.md "Plugins"): .service_jid and
-- .max_size, the service found, .timeout the requests' timeout; calling it
-- as a method, c:upload(data, opts), is c.upload:put(data, opts).
M.forwards = { upload_service = "service", upload_slot = "slot" }

--- c.upload:service() -> jid, max_size | nil, message, condition
function M:service()
  if self.service_jid then return self.service_jid, self.max_size end
  local c = self.client
  local ok, max = offers_upload(c, c.domain)
  if ok then
    self.service_jid, self.max_size = c.domain, max
    return c.domain, max
  end
  local r, msg, cond = c:request(st.iq({ type = "get", to = c.domain }):tag("query", { xmlns = NS_ITEMS }),
    self.timeout)
  if not r then return nil, msg, cond end
  local q = r:get_child("query", NS_ITEMS)
  for item in (q and q:childtags("item") or function() end) do
    local entity = item.attr.jid and jid.prep(item.attr.jid)
    if entity then
      ok, max = offers_upload(c, entity)
      if ok then
        self.service_jid, self.max_size = entity, max
        return entity, max
      end
    end
  end
  return nil, "the server offers no HTTP upload service", "feature-not-implemented"
end

--- c.upload:slot(service, filename, size [, content_type]) -> slot | nil, message, condition
function M:slot(service, filename, size, content_type)
  if type(service) ~= "string" or not jid.prep(service) then error("upload_slot: invalid service JID", 2) end
  if type(filename) ~= "string" or filename == "" then error("upload_slot: filename must be a string", 2) end
  if math_type(size) ~= "integer" or size < 0 then error("upload_slot: size must be an integer", 2) end
  if content_type ~= nil and type(content_type) ~= "string" then error("upload_slot: bad content type", 2) end
  local r, msg, cond = self.client:request(st.iq({ type = "get", to = service }):tag("request",
    { xmlns = NS, filename = filename, size = tostring(size), ["content-type"] = content_type }), self.timeout)
  if not r then return nil, msg, cond end
  local slot, err = check_slot(r:get_child("slot", NS))
  if not slot then return nil, err, "bad-request" end
  return slot
end

--- c.upload:put(data, opts) -> get_url | nil, message, condition
-- opts: name (required), content_type, service, cafile, insecure,
-- address (connect there instead of resolving the URL's host), timeout
function M:put(data, opts)
  if type(data) ~= "string" then error("upload: data must be a string", 2) end
  if type(opts) ~= "table" or type(opts.name) ~= "string" then error("upload: opts.name is required", 2) end
  local service, max = opts.service, nil
  if not service then
    local found, info, why = self:service()
    if not found then return nil, info, why end
    service, max = found, info
  end
  if max and #data > max then
    return nil, ("the file is larger than the service takes (%d bytes)"):format(max), "not-acceptable"
  end
  local slot, msg, cond = self:slot(service, opts.name, #data, opts.content_type)
  if not slot then return nil, msg, cond end
  local headers = {}
  for k, v in pairs(slot.headers) do headers[k] = v end
  headers["Content-Type"] = opts.content_type or "application/octet-stream"
  local status, rheaders, body = http.request({ method = "PUT", url = slot.put, headers = headers, body = data,
    cafile = opts.cafile or self.client.opts.cafile, insecure = opts.insecure, address = opts.address,
    timeout = opts.timeout })
  if not status then return nil, rheaders, body end
  if status < 200 or status > 299 then
    return nil, ("the upload was refused: HTTP %d"):format(status),
      status == 413 and "not-acceptable" or "not-allowed"
  end
  return slot.get, slot
end

--- c:upload(data, opts): the plugin object called as a client method
function M.__call(p, _, data, opts) return p:put(data, opts) end

return M
