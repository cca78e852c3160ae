-- A raw SASL2 (XEP-0388) client for specs of the embedded server:
--   local r, features = sasl2.open(port)       -- TLS done, features over TLS
--   local s = sasl2.auth2(r, { mechanism =, user =, password =, ua =, inline = })
--   local cond, text = sasl2.failure_of(s)
local core = require "lxmpp.core"
local serve = require "spec.support.serve"
local raw = require "spec.support.raw"

local NS2 = "urn:xmpp:sasl:2"
local NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"

local M = {}
M.NS = NS2
M.USERS = { alice = "alice-pw", bob = "bob-pw" }
M.UA = "d4f2c3a1-7b6e-4c1d-9f8a-0123456789ab"
local USERS, UA = M.USERS, M.UA


function M.open(port)
  local r = raw.connect(port)
  local f = r:negotiate_tls(serve.pki().ca)
  return r, f
end

function M.mechanisms(f)
  local a = f:get_child("authentication", NS2)
  if not a then return nil end
  local out = {}
  for m in a:childtags("mechanism") do out[#out + 1] = m:get_text() end
  return table.concat(out, " ")
end

local function ua_xml(ua)
  if ua == false then return "" end
  return "<user-agent id='" .. (ua or UA) .. "'><software>spec</software><device>loopback</device></user-agent>"
end
M.ua_xml = ua_xml

-- The condition and text of a SASL2 <failure/>.
function M.failure_of(s)
  local cond
  for t in s:childtags(nil, NS_SASL) do cond = t.name end
  return cond, s:get_child_text("text")
end

--- One SASL2 exchange on r. o: mechanism (default SCRAM-SHA-256), user,
-- password, inline (extra XML in <authenticate/>), ua (an id; false:
-- none). Returns the final element (<success/> or <failure/>; for a
-- success the server's signature is verified).
function M.auth2(r, o)
  o = o or {}
  local mech = o.mechanism or "SCRAM-SHA-256"
  local user, pw = o.user or "alice", o.password or USERS[o.user or "alice"]
  local c, first
  if mech == "PLAIN" then
    first = "\0" .. user .. "\0" .. pw
  else
    c = assert(core.sasl_client({ mechanism = mech, username = user, password = pw, tls = true,
      server_offers_plus = true }))
    first = assert(c:step())
  end
  r:send("<authenticate xmlns='" .. NS2 .. "' mechanism='" .. mech .. "'><initial-response>" ..
    core.base64_encode(first) .. "</initial-response>" .. ua_xml(o.ua) .. (o.inline or "") .. "</authenticate>")
  while true do
    local s = assert(r:stanza())
    if s.name == "success" or s.name == "failure" then
      if s.name == "success" and c then
        local ad = s:get_child_text("additional-data")
        assert(ad and c:finish(core.base64_decode(ad)), "the server's signature did not verify")
      end
      return s
    end
    assert(s.name == "challenge" and s.attr.xmlns == NS2, "unexpected " .. tostring(s.name))
    r:send("<response xmlns='" .. NS2 .. "'>" ..
      core.base64_encode(assert(c:step(core.base64_decode(s:get_text())))) .. "</response>")
  end
end


return M
