-- A MUC service (lxmpp.server.muc) on a fake server, for transcript-like
-- specs: route() records what the service sends, a memory store keeps
-- persistent rooms. h:send(xml) delivers a stanza and returns what was
-- routed meanwhile; the helpers build the stanzas and read the answers.
--
--   local mh = require "spec.support.muc_harness"
--   local h = mh.harness()
--   mh.configured_room(h, { whois = "anyone" })
--   local got = mh.join(h, "bob@localhost/a", "bob")
local assert = require "luassert"
local st = require "lxmpp.stanza"
local muc = require "lxmpp.server.muc"

local NS_MUC = "http://jabber.org/protocol/muc"
local NS_USER = NS_MUC .. "#user"
local NS_ADMIN = NS_MUC .. "#admin"
local NS_OWNER = NS_MUC .. "#owner"
local NS_X = "jabber:x:data"
local SERVICE = "conference.localhost"
local ROOM = "room@" .. SERVICE

local function memory_store()
  local data = {}
  local store = { data = data, sets = 0 }
  function store.get(_, kind, key)
    return data[kind] and data[kind][key]
  end
  function store:set(kind, key, value)
    self.sets = self.sets + 1
    data[kind] = data[kind] or {}
    data[kind][key] = value
  end
  function store.keys(_, kind)
    local list = {}
    for k in pairs(data[kind] or {}) do list[#list + 1] = k end
    table.sort(list)
    return list
  end
  return store
end

-- A fake server with its MUC host; h:send(xml) delivers and returns what
-- was routed meanwhile.
local function harness(opts, store)
  local h = { out = {}, logs = {}, now = 1000000000 }
  opts = opts or {}
  opts.clock = opts.clock or function () return h.now end
  h.srv = {
    domain = "localhost", store = store or memory_store(),
    route = function (_, s)
      assert(st.is_stanza(s))
      assert(s.attr.to, "routed without a 'to': " .. tostring(s))
      h.out[#h.out + 1] = st.parse(tostring(s)) -- what a peer would read
    end,
    log = function (_, level, fmt, ...) h.logs[#h.logs + 1] = level .. " " .. fmt:format(...) end,
  }
  h.host = muc.new(h.srv, SERVICE, opts)
  function h:send(s)
    if type(s) == "string" then s = assert(st.parse(s)) end
    self.out = {}
    self.host:deliver(s)
    local out = self.out
    self.out = {}
    return out
  end
  return h
end

local function user_x(s)
  return s:get_child("x", NS_USER)
end

local function codes(s)
  local set = {}
  local x = user_x(s)
  if x then
    for status in x:childtags("status") do set[status.attr.code] = true end
  end
  return set
end

local function item(s)
  local x = user_x(s)
  return x and x:get_child("item")
end

local function only(list, pred, what)
  local found = {}
  for _, s in ipairs(list) do
    if pred(s) then found[#found + 1] = s end
  end
  assert(#found == 1, ("expected one %s, got %d in:\n%s"):format(what or "stanza", #found,
    table.concat((function () local t = {} for i, s in ipairs(list) do t[i] = tostring(s) end return t end)(), "\n")))
  return found[1]
end

local function to(list, full)
  local found = {}
  for _, s in ipairs(list) do
    if s.attr.to == full then found[#found + 1] = s end
  end
  return found
end

local function error_condition(s)
  assert.equal("error", s.attr.type, tostring(s))
  local e = s:get_child("error")
  return e.tags[1].name, e.attr.type
end

local function presence(from, to_, extra)
  return ("<presence from='%s' to='%s'>%s</presence>"):format(from, to_, extra or "<x xmlns='" .. NS_MUC .. "'/>")
end

local function groupchat(from, body, room)
  return ("<message from='%s' to='%s' type='groupchat' id='g1'><body>%s</body></message>"):format(from,
    room or ROOM, body)
end

local function iq(from, typ, to_, payload, id)
  return ("<iq from='%s' to='%s' type='%s' id='%s'>%s</iq>"):format(from, to_ or ROOM, typ, id or "q1", payload)
end

local function submit(fields)
  local x = { "<x xmlns='" .. NS_X .. "' type='submit'>" }
  for var, value in pairs(fields) do
    x[#x + 1] = ("<field var='muc#roomconfig_%s'><value>%s</value></field>"):format(var, value)
  end
  x[#x + 1] = "</x>"
  return "<query xmlns='" .. NS_OWNER .. "'>" .. table.concat(x) .. "</query>"
end

local OWNER = "owner@localhost/desk"
local admin_query = "<query xmlns='" .. NS_ADMIN .. "'>"

-- A room created by owner@localhost as "boss" and configured (unlocked).
local function configured_room(h, fields, room)
  room = room or ROOM
  h:send(presence(OWNER, room .. "/boss"))
  local out = h:send(iq(OWNER, "set", room, submit(fields or {})))
  assert.equal("result", out[1].attr.type, tostring(out[1]))
  return out
end

-- Joins and returns what the joining session received.
local function join(h, full, nick, extra, room)
  local out = h:send(presence(full, (room or ROOM) .. "/" .. nick, extra))
  return to(out, full), out
end

return {
  NS_MUC = NS_MUC, NS_USER = NS_USER, NS_ADMIN = NS_ADMIN, NS_OWNER = NS_OWNER, NS_X = NS_X,
  SERVICE = SERVICE, ROOM = ROOM, OWNER = OWNER, admin_query = admin_query,
  memory_store = memory_store, harness = harness, user_x = user_x, codes = codes, item = item,
  only = only, to = to, error_condition = error_condition, presence = presence, groupchat = groupchat,
  iq = iq, submit = submit, configured_room = configured_room, join = join,
}
