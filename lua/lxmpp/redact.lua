-- lxmpp.redact: the text of a stanza for a debug log (the server's
-- log_level "debug" and `lxmpp serve --log-level debug`; the client's
-- connect{ debug = true }), with secrets taken out (secrets are never
-- logged):
--   - SASL elements (RFC 6120 §6.4: <auth/>, <response/>, <challenge/>,
--     <success/>; XEP-0388's too) show only their name and size;
--   - a component's <handshake/> (XEP-0114 §3) likewise;
--   - the text of every <password/> element (XEP-0077 registration and
--     password change, XEP-0045 room passwords, XEP-0048/0402 bookmarks)
--     and the values of data form fields named "password" (XEP-0077 §6
--     forms, muc#roomconfig_roomsecret) become "[redacted]".
-- The stanza itself is never changed: a copy is made when something goes.

local tostring, ipairs, type = tostring, ipairs, type

local M = { MARK = "[redacted]" }

local NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
local NS_SASL2 = "urn:xmpp:sasl:2"      -- XEP-0388 (its <authenticate/> may carry a FAST proof)
local SECRET_FIELDS = { password = true, ["muc#roomconfig_roomsecret"] = true }

-- Does el (or anything in it) hold a secret?
local function has_secret(el)
  if el.name == "password" then return true end
  if el.name == "field" and SECRET_FIELDS[el.attr.var] then return true end
  for _, child in ipairs(el.tags) do
    if has_secret(child) then return true end
  end
  return false
end

-- Removes the secrets of a copy, in place.
local function scrub(el)
  if el.name == "password" or (el.name == "field" and SECRET_FIELDS[el.attr.var]) then
    local is_field = el.name == "field"
    for i = #el, 1, -1 do
      local c = el[i]
      if type(c) == "string" or not is_field or c.name == "value" then el[i] = nil end
    end
    el.tags = {}
    for i = 1, #el do if type(el[i]) == "table" then el.tags[#el.tags + 1] = el[i] end end
    if is_field then
      el:tag("value"):text(M.MARK):up()
    else
      el:text(M.MARK)
    end
    return
  end
  for _, child in ipairs(el.tags) do scrub(child) end
end

--- redact.text(s) -> the text to log for stanza or top-level element s.
function M.text(s)
  local ns = s.attr.xmlns
  if ns == NS_SASL or ns == NS_SASL2 or (s.name == "handshake" and (ns == nil or ns == "jabber:component:accept")) then
    return ("<%s xmlns='%s'/> %s (%d bytes)"):format(s.name, ns or "jabber:component:accept", M.MARK,
      #(s:get_text() or ""))
  end
  if not has_secret(s) then return tostring(s) end
  local c = s:clone()
  scrub(c)
  return tostring(c)
end

return M
