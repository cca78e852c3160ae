-- Scenarios the federation interop specs with real peers share
-- (spec/interop/s2s_*_spec.lua): our user romeo@OURS, the peer's juliet@PEER,
-- each a connected client of its own server. ctx: { romeo =, juliet =
-- (clients), ours = our domain, peer = the peer's domain, srv = our server
-- (in process), log = our server's log lines, T = a timeout in seconds }.
-- Each fails with what is missing.
local st = require "lxmpp.stanza"
local serve = require "spec.support.serve"
local assert = require "luassert"

local M = {}

--- The first of lines (a list of strings) that matches pattern.
function M.logged(lines, pattern)
  for _, l in ipairs(lines) do if l:find(pattern) then return l end end
  return nil
end

local function chat(to, id, body)
  return st.message({ to = to, type = "chat", id = id }):tag("body"):text(body):up()
end

--- A message each way between romeo and juliet.
function M.messages_both_ways(ctx)
  local to_juliet = serve.collect(ctx.juliet, "message")
  local to_romeo = serve.collect(ctx.romeo, "message")
  ctx.romeo:send(chat("juliet@" .. ctx.peer .. "/r", "m1", "to the peer"))
  ctx.juliet:send(chat("romeo@" .. ctx.ours .. "/r", "m2", "from the peer"))
  assert.is_true(serve.until_true(function() return #to_juliet > 0 and #to_romeo > 0 end, ctx.T),
    ("juliet got %d, romeo got %d messages"):format(#to_juliet, #to_romeo))
  assert.equal("romeo@" .. ctx.ours .. "/r", to_juliet[1].attr.from)
  assert.equal("to the peer", to_juliet[1]:get_child_text("body"))
  assert.equal("juliet@" .. ctx.peer .. "/r", to_romeo[1].attr.from)
  assert.equal("from the peer", to_romeo[1]:get_child_text("body"))
end

--- c's roster item for the bare JID who (asked of c's server).
function M.roster_item(c, who, T)
  local r = assert(c:request(st.iq({ type = "get" }):tag("query", { xmlns = "jabber:iq:roster" }):up(), T))
  for _, item in ipairs(r:get_child("query", "jabber:iq:roster").tags) do
    if item.attr.jid == who then return item end
  end
end

--- The first presence of list from `from` of type typ (nil: available).
function M.has_presence(list, from, typ)
  for _, p in ipairs(list) do
    if p.attr.from == from and p.attr.type == typ then return p end
  end
end
local has_presence = M.has_presence

--- romeo and juliet subscribe to each other (RFC 6121 §3.1): rosters
-- "both" on both sides, then a presence broadcast crosses (§4.2.2).
function M.subscriptions_both_ways(ctx)
  local juliet, romeo, T = ctx.juliet, ctx.romeo, ctx.T
  local JULIET, ROMEO = "juliet@" .. ctx.peer, "romeo@" .. ctx.ours
  local to_juliet = serve.collect(juliet, "presence")
  local to_romeo = serve.collect(romeo, "presence")
  juliet:send(st.presence())
  romeo:send(st.presence())
  romeo:send(st.presence({ to = JULIET, type = "subscribe" }))
  assert.is_true(serve.until_true(function() return has_presence(to_juliet, ROMEO, "subscribe") end, T),
    "juliet got no subscription request")
  juliet:send(st.presence({ to = ROMEO, type = "subscribed" }))
  -- her presence follows the approval (RFC 6121 §3.1.5)
  assert.is_true(serve.until_true(function() return has_presence(to_romeo, JULIET .. "/r", nil) end, T),
    "romeo did not get juliet's presence after her approval")
  juliet:send(st.presence({ to = ROMEO, type = "subscribe" }))
  assert.is_true(serve.until_true(function() return has_presence(to_romeo, JULIET, "subscribe") end, T),
    "romeo got no subscription request")
  romeo:send(st.presence({ to = JULIET, type = "subscribed" }))
  assert.is_true(serve.until_true(function() return has_presence(to_juliet, ROMEO .. "/r", nil) end, T),
    "juliet did not get romeo's presence after his approval")
  -- both rosters: both (RFC 6121 §3.4)
  assert.is_true(serve.until_true(function()
    local it = ctx.srv.store:get_roster_item("romeo", JULIET)
    return it and it.subscription == "both"
  end, T), "our roster for romeo: " .. tostring((ctx.srv.store:get_roster_item("romeo", JULIET) or {}).subscription))
  local item
  assert.is_true(serve.until_true(function()
    item = M.roster_item(juliet, ROMEO, T)
    return item and item.attr.subscription == "both"
  end, T), "the peer's roster for juliet: " .. tostring(item and item.attr.subscription))
  romeo:send(st.presence():tag("status"):text("away from Verona"):up())
  juliet:send(st.presence():tag("status"):text("on the balcony"):up())
  assert.is_true(serve.until_true(function()
    local a, b
    for _, p in ipairs(to_juliet) do if p:get_child_text("status") == "away from Verona" then a = true end end
    for _, p in ipairs(to_romeo) do if p:get_child_text("status") == "on the balcony" then b = true end end
    return a == true and b == true
  end, T), "a presence broadcast did not cross")
end

local function has(list, body)
  for _, b in ipairs(list) do if b == body then return true end end
  return false
end

--- juliet (the peer's) joins room ROOM on our MUC service (the client's
-- muc_join both sides), groupchat both ways. Returns nothing.
function M.peer_user_in_our_room(ctx, room_jid)
  local T = ctx.T
  assert(ctx.romeo:send_presence())
  assert(ctx.juliet:send_presence())
  local room = assert(ctx.romeo:muc_join(room_jid, "Romeo", { timeout = T }))
  local jroom = assert(ctx.juliet:muc_join(room_jid, "Juliet", { timeout = T }))
  assert.equal("owner", jroom.occupants.Romeo.affiliation)       -- the room's presence reached the peer
  assert.is_true(serve.until_true(function() return room.occupants.Juliet ~= nil end, T))
  assert.equal("juliet@" .. ctx.peer .. "/r", room.occupants.Juliet.jid)
  local heard = { romeo = {}, juliet = {} }
  ctx.romeo:on("muc-message", function(_, m) heard.romeo[#heard.romeo + 1] = m.body end)
  ctx.juliet:on("muc-message", function(_, m) heard.juliet[#heard.juliet + 1] = m.body end)
  room:say("by any other name")
  jroom:say("wherefore art thou")
  assert.is_true(serve.until_true(function()
    return has(heard.juliet, "by any other name") and has(heard.romeo, "wherefore art thou")
  end, T), "groupchat did not cross: romeo heard " .. table.concat(heard.romeo, "|") .. "; juliet heard "
    .. table.concat(heard.juliet, "|"))
end

--- romeo (ours) joins room_jid on the peer's MUC service after juliet made
-- it: self-presence with status 110 (XEP-0045 §7.2.2), juliet's occupant
-- presence, groupchat both ways.
function M.our_user_in_peer_room(ctx, room_jid)
  local T = ctx.T
  assert(ctx.romeo:send_presence())
  assert(ctx.juliet:send_presence())
  local jroom = assert(ctx.juliet:muc_join(room_jid, "Juliet", { timeout = T }))
  local room = assert(ctx.romeo:muc_join(room_jid, "Romeo", { timeout = T }))
  assert.truthy(room.occupants.Juliet, "romeo did not get juliet's occupant presence")
  assert.is_true(serve.until_true(function() return jroom.occupants.Romeo ~= nil end, T),
    "juliet did not see romeo join")
  local heard = { romeo = {}, juliet = {} }
  ctx.romeo:on("muc-message", function(_, m) heard.romeo[#heard.romeo + 1] = m.body end)
  ctx.juliet:on("muc-message", function(_, m) heard.juliet[#heard.juliet + 1] = m.body end)
  jroom:say("wherefore")
  room:say("call me but love")
  assert.is_true(serve.until_true(function()
    return has(heard.romeo, "wherefore") and has(heard.juliet, "call me but love")
  end, T), "groupchat did not cross: romeo heard " .. table.concat(heard.romeo, "|") .. "; juliet heard "
    .. table.concat(heard.juliet, "|"))
end

return M
