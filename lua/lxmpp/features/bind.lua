-- Resource binding (RFC 6120 §7), client side: the requested resource, or
-- the server's choice; on a conflict, one retry with a fresh resource.

local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local session = require "lxmpp.session"

local NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"

local M = {}

--- bind.bound_as(client, full): the session's address is full. A client
-- without an account name of its own (SASL ANONYMOUS, a JID that is only a
-- domain) takes the bare JID the server gave it as its account from then
-- on: roster pushes (RFC 6121 §2.1.6), carbons (XEP-0280 §11) and its
-- archive are checked against client.bare_jid, which was the domain.
function M.bound_as(client, full)
  client.jid = full
  if not client.node then client.bare_jid = jid.bare(full) or client.bare_jid end
end

--- bind.foreign(client, node, domain) -> message or nil: why a JID the
-- server gave us (bind, SASL2's authorization identifier) is not ours: of
-- another account, or, with no account name of our own, of another domain.
function M.foreign(client, node, domain)
  if client.node then
    if not jid.equal(jid.join(node, domain), client.bare_jid) then return "another account's JID" end
  elseif not jid.equal(domain, client.domain) then
    return "a JID of another domain"
  end
end

local function bind(client, resource)
  local id = session.new_id()
  local iq = st.iq({ type = "set", id = id }):tag("bind", { xmlns = NS_BIND })
  if resource then iq:text_tag("resource", resource) end
  local ok, msg, cond = client:write_stanza(iq)
  if not ok then return nil, msg, cond end
  while true do
    local reply
    reply, msg, cond = client:read()
    if not reply then return nil, msg, cond end
    if reply.name == "iq" and reply.attr.id == id then
      if reply.attr.type == "result" then
        local b = reply:get_child("bind", NS_BIND)
        local full = b and b:get_child_text("jid")
        local node, domain, res = jid.split(full or "")
        if not (domain and res) then return nil, "the server bound an invalid JID", "bad-format" end
        local foreign = M.foreign(client, node, domain)
        if foreign then return nil, "the server bound " .. foreign .. " " .. full, "bad-format" end
        return full
      end
      local _, econd, etext = reply:get_error()
      return nil, etext or econd or "bind failed", econd or "undefined-condition"
    end
    -- anything else before the bind reply is not allowed yet; ignore it
  end
end

function M.negotiate(client, features)
  if client.bound or not client.authenticated then return nil end
  if not features:get_child("bind", NS_BIND) then
    return client:fail("the server does not offer resource binding", "undefined-condition")
  end
  local full, msg, cond = bind(client, client.requested_resource)
  if not full and cond == "conflict" and client.requested_resource then
    full, msg, cond = bind(client, client.requested_resource .. "-" .. session.new_id():sub(-6))
  end
  if not full then return client:fail("resource binding failed: " .. tostring(msg), cond) end
  M.bound_as(client, full)
  client.bound = true
  client.archive_metadata = nil      -- only a Bind2 <bound/> tells it (features/sasl2.lua)
  -- the server delivers the offline messages itself: no catch-up is due
  require("lxmpp.features.catchup").bound(client, false)
  return nil
end

return M
