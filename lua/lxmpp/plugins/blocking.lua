-- XEP-0191 blocking command: block and unblock JIDs, read the block list,
-- and the server's pushes (accepted only from our own account, like roster
-- pushes) as "blocklist" events; c.blocklist follows them.
--
--   c:block({ "spam@example.org" })   c:unblock({ "spam@example.org" })   c:unblock()  -- all
--   local list = c:blocklist()        -- { "spam@example.org", ... }
--   c:on("blocklist", function(action, jids) end)  -- action "block" | "unblock"; jids {} = all

local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local session = require "lxmpp.session"

local type, error, ipairs, tostring, table_sort = type, error, ipairs, tostring, table.sort

local NS_BLOCKING = "urn:xmpp:blocking"
local MAX_ITEMS = 10000

local M = { NS_BLOCKING = NS_BLOCKING }

session.add_event("blocklist")

local function jids_of(el)
  local list = {}
  for it in el:childtags("item") do
    local j = it.attr.jid and jid.prep(it.attr.jid)
    if j and #list < MAX_ITEMS then list[#list + 1] = j end
  end
  return list
end

local function check_list(list, fname, allow_nil)
  if list == nil and allow_nil then return {} end
  if type(list) ~= "table" then error(fname .. ": expected a list of JIDs", 3) end
  local out = {}
  for i, j in ipairs(list) do
    local p = type(j) == "string" and jid.prep(j)
    if not p then error(fname .. ": invalid JID " .. tostring(j), 3) end
    out[i] = p
  end
  return out
end

-- The plugin object, c.blocking (docs/api.md "Plugins"): .blocked, the set
-- of blocked JIDs as the last c:blocklist() and the pushes since left it
-- (also c.blocked, as docs/api.md always named it).
M.forwards = { block = "block", unblock = "unblock", blocklist = "list" }
M.events = { "blocklist" }

local function set_blocked(self, set)
  self.blocked = set
  rawset(self.client, "blocked", set)
end

local function command(self, which, list, timeout)
  local iq = st.iq({ type = "set" }):tag(which, { xmlns = NS_BLOCKING })
  for _, j in ipairs(list) do iq:tag("item", { jid = j }):up() end
  local r, msg, cond = self.client:request(iq, timeout)
  if not r then return nil, msg, cond end
  return true
end

--- c:block(jids [, timeout]) -> true | nil, message, condition
function M:block(list, timeout)
  list = check_list(list, "block")
  if #list == 0 then error("block: the list is empty", 2) end
  return command(self, "block", list, timeout)
end

--- c:unblock([jids [, timeout]]) -> true | nil, message, condition (no list: everyone)
function M:unblock(list, timeout)
  return command(self, "unblock", check_list(list, "unblock", true), timeout)
end

--- c.blocking:list([timeout]) -> sorted list of JIDs | nil, message, condition
function M:list(timeout)
  local r, msg, cond = self.client:request(st.iq({ type = "get" }):tag("blocklist", { xmlns = NS_BLOCKING }), timeout)
  if not r then return nil, msg, cond end
  local b = r:get_child("blocklist", NS_BLOCKING)
  if not b then return nil, "the answer has no blocklist", "bad-request" end
  local list = jids_of(b)
  table_sort(list)
  set_blocked(self, {})
  for _, j in ipairs(list) do self.blocked[j] = true end
  return list
end

function M:init(c)
  c:handle_iq(NS_BLOCKING, function(iq)
    local refused = c:refuse_foreign_push(iq, "block list push")
    if refused then return refused end
    local el = iq.tags[1]
    if iq.attr.type ~= "set" or (el.name ~= "block" and el.name ~= "unblock") then
      return st.error_reply(iq, "cancel", "bad-request")
    end
    local list = jids_of(el)
    if not self.blocked or (el.name == "unblock" and #list == 0) then set_blocked(self, {}) end
    for _, j in ipairs(list) do self.blocked[j] = el.name == "block" or nil end
    c:fire_user("blocklist", el.name, list)
    return st.reply(iq)
  end)
end

return M
