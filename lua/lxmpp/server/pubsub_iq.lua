-- lxmpp.server.pubsub_iq: the XEP-0060 requests of a pubsub Service
-- (lxmpp.server.pubsub): entity use cases (create, publish, retract,
-- subscribe, unsubscribe, items with XEP-0059 paging, one's own
-- subscriptions and affiliations) and owner use cases (configure, default,
-- delete, purge, subscriptions, affiliations). Installed on the Service
-- class: service:handle_iq(iq, send).
--
-- Each handler returns the reply (or an error from pubsub.err) and,
-- optionally, a function run once the reply is sent: notifications
-- follow the result they come from.

local compat = require "lxmpp.compat"
local st = require "lxmpp.stanza"
local jid = require "lxmpp.jid"
local pubsub_node = require "lxmpp.server.pubsub_node"

local pairs, ipairs, pcall, error, select, tostring, tonumber =
  pairs, ipairs, compat.pcall, error, select, tostring, tonumber
local math_tointeger, math_min, math_max = compat.tointeger, math.min, math.max
local sort = table.sort

local NS_RSM = "http://jabber.org/protocol/rsm"
local AFFILIATIONS = { owner = true, publisher = true, member = true, outcast = true, none = true }

local function install(M)
  local Service, err, NS, NS_OWNER = M.Service, M.err, M.NS, M.NS_OWNER

  local function reply(iq, ns) return st.reply(iq):tag("pubsub", { xmlns = ns or NS }) end

  -- The node named by op's node attribute, or nil, error.
  local function find(self, op)
    local name = op.attr.node
    if not name or name == "" then
      return nil, err("modify", "bad-request", "the request names no node", "nodeid-required")
    end
    local node = self.nodes[name]
    if not node then return nil, err("cancel", "item-not-found", "no such node") end
    return node
  end

  local function owned(self, op, bare)
    local node, e = find(self, op)
    if not node then return nil, e end
    if node:affiliation(bare) ~= "owner" then
      return nil, err("auth", "forbidden", "only an owner of the node may do this")
    end
    return node
  end

  local function config_of(ps, base, max)
    local conf = ps:get_child("configure")
    local x = conf and conf:get_child("x", "jabber:x:data")
    if not x then return base end
    local c, msg, cond = pubsub_node.read_form(x, base, max)
    if not c then return nil, err("modify", cond, msg) end
    return c
  end

  local E, O = {}, {}   -- "type name" -> handler(self, iq, ps, op, bare)

  E["set create"] = function(self, iq, ps, op, bare)
    if not self:may_create(bare) then return err("auth", "forbidden", "you may not create nodes here") end
    local name = op.attr.node ~= "" and op.attr.node or nil
    local c, e = config_of(ps, pubsub_node.defaults(self.kind), self:limit("max_pubsub_items"))
    if not c then return e end
    local node
    node, e = self:create(name, bare, c)
    if not node then return e end
    if name then return st.reply(iq) end
    return reply(iq):tag("create", { node = node.name }):up()
  end

  -- The one payload of a publish, or nil, error.
  local function payload_of(op)
    local items = {}
    for it in op:childtags("item") do items[#items + 1] = it end
    if #items == 0 then return nil, err("modify", "bad-request", "publish one <item/>", "item-required") end
    if #items > 1 then return nil, err("modify", "bad-request", "publish one item at a time", "invalid-payload") end
    local item = items[1]
    if #item.tags > 1 then return nil, err("modify", "bad-request", "an item has one payload", "invalid-payload") end
    if not item.tags[1] then
      return nil, err("modify", "bad-request", "this node needs a payload", "payload-required")
    end
    return item
  end

  local function precondition(text)
    return err("cancel", "conflict", text, "precondition-not-met")
  end

  E["set publish"] = function(self, iq, ps, op, bare)
    local item, e = payload_of(op)
    if not item then return e end
    local po = ps:get_child("publish-options")
    local x = po and po:get_child("x", "jabber:x:data")
    local max = self:limit("max_pubsub_items")
    local node = self.nodes[op.attr.node or ""]
    if not node and self.kind == "pep" and op.attr.node and op.attr.node ~= "" and bare == self.owner_bare then
      local c = pubsub_node.defaults("pep")            -- XEP-0163: the node is made on first publish
      if x then
        local msg
        c, msg = pubsub_node.read_form(x, c, max)
        if not c then return precondition(msg) end
      end
      node, e = self:create(op.attr.node, bare, c)
      if not node then return e end
    elseif not node then
      return select(2, find(self, op))
    end
    local ok
    ok, e = self:can_publish(node, bare)
    if not ok then return e end
    if x then
      local c, given = pubsub_node.read_form(x, node.config, max)
      if not c then return precondition(given) end
      for k in pairs(given) do
        if c[k] ~= node.config[k] then return precondition("the node's " .. k .. " is not what you asked for") end
      end
    end
    local id = item.attr.id
    if not id or id == "" then id = self:new_id() end
    local xml, old = tostring(item.tags[1]), node.by_id[id]
    if old then
      ok, e = self:may_change_item(node, bare, old)
      if not ok then return e end
    end
    e = self:too_big(#xml + #id - (old and pubsub_node.item_bytes(old) or 0))
    if e then return e end
    local it = node:publish(id, item.tags[1], bare, xml)
    return reply(iq):tag("publish", { node = node.name }):tag("item", { id = id }):up():up(), function()
      self:notify(node, self:item_event(node, it))
    end
  end

  E["set retract"] = function(self, iq, _, op, bare)
    local node, e = find(self, op)
    if not node then return e end
    local item = op:get_child("item")
    if not item or not item.attr.id or item.attr.id == "" then
      return err("modify", "bad-request", "name the item to retract", "item-required")
    end
    local ok
    ok, e = self:can_publish(node, bare)
    if not ok then return e end
    local id = item.attr.id
    local it = node.by_id[id]
    if not it then return err("cancel", "item-not-found", "no such item") end
    ok, e = self:may_change_item(node, bare, it)
    if not ok then return e end
    node:retract(id)
    local notify = op.attr.notify == "true" or op.attr.notify == "1" or node.config.notify_retract
    return st.reply(iq), notify and function()
      self:notify(node, st.stanza("items", { node = node.name }):tag("retract", { id = id }):up())
    end
  end

  -- The JID of a (un)subscription request, which must be the requester's.
  local function own_jid(op, bare, etype, cond, app)
    local who = op.attr.jid and jid.prep(op.attr.jid)
    if not op.attr.jid then return nil, err("modify", "bad-request", "the request needs a jid", "jid-required") end
    if not who or jid.bare(who) ~= bare then
      return nil, err(etype, cond, "you may only (un)subscribe yourself", app)
    end
    return who
  end

  E["set subscribe"] = function(self, iq, ps, op, bare)
    local who, e = own_jid(op, bare, "modify", "bad-request", "invalid-jid")
    if not who then return e end
    local node
    node, e = find(self, op)
    if not node then return e end
    local ok
    ok, e = self:can_access(node, bare)
    if not ok then return e end
    if ps:get_child("options") then
      return err("cancel", "feature-not-implemented", "subscription options are not supported", nil,
        "subscription-options")
    end
    if not node.subscriptions[who] and node.nsubs >= self:limit("max_pubsub_subscriptions") then
      return err("wait", "policy-violation", "the node has too many subscribers", "too-many-subscriptions")
    end
    node:subscribe(who)
    return reply(iq):tag("subscription", { node = node.name, jid = who, subscription = "subscribed" }):up(),
      function() self:send_last(node, who, "sub") end
  end

  E["set unsubscribe"] = function(self, iq, _, op, bare)
    local who, e = own_jid(op, bare, "auth", "forbidden")
    if not who then return e end
    local node
    node, e = find(self, op)
    if not node then return e end
    if not node:unsubscribe(who) then
      return err("cancel", "unexpected-request", "you are not subscribed", "not-subscribed")
    end
    return st.reply(iq)
  end

  -- XEP-0059 over the items (oldest first): the page and its <set/>.
  local function page(list, set)
    local max = set:get_child_text("max")
    max = max and max:match("^%d+$") and math_tointeger(tonumber(max))
    if set:get_child_text("max") and not max then return nil, err("modify", "bad-request", "a malformed <max/>") end
    local first, last = 1, #list
    local after, before = set:get_child_text("after"), set:get_child("before")
    local function index(id)
      for i, it in ipairs(list) do if it.id == id then return i end end
    end
    if after then
      local i = index(after)
      if not i then return nil, err("cancel", "item-not-found", "no item " .. after) end
      first = i + 1
      if max then last = math_min(last, first + max - 1) end
    elseif before then
      local b = before:get_text()
      if b and b ~= "" then
        local i = index(b)
        if not i then return nil, err("cancel", "item-not-found", "no item " .. b) end
        last = i - 1
      end
      if max then first = math_max(1, last - max + 1) end
    elseif max then
      last = math_min(last, max)
    end
    local out = {}
    for i = first, last do out[#out + 1] = list[i] end
    local r = st.stanza("set", { xmlns = NS_RSM })
    if #out > 0 then
      r:tag("first", { index = tostring(first - 1) }):text(out[1].id):up():text_tag("last", out[#out].id)
    end
    return out, r:text_tag("count", tostring(#list))
  end

  E["get items"] = function(self, iq, ps, op, bare)
    local node, e = find(self, op)
    if not node then return e end
    local ok
    ok, e = self:can_access(node, bare)
    if not ok then return e end
    local list = node.items
    local ids = {}
    for it in op:childtags("item") do
      if it.attr.id then ids[#ids + 1] = it.attr.id end
    end
    if #ids > 0 then
      list = {}
      for _, id in ipairs(ids) do list[#list + 1] = node.by_id[id] end
    end
    local max = op.attr.max_items
    if max then
      local n = max:match("^%d+$") and math_tointeger(tonumber(max))
      if not n or n < 1 then return err("modify", "bad-request", "max_items must be a positive number") end
      local last = {}
      for i = math_max(1, #list - n + 1), #list do last[#last + 1] = list[i] end
      list = last
    end
    local set, rsm = ps:get_child("set", NS_RSM), nil
    if set then
      list, rsm = page(list, set)
      if not list then return rsm end
    end
    local r = reply(iq):tag("items", { node = node.name })
    for _, it in ipairs(list) do
      r:tag("item", { id = it.id, publisher = it.publisher })
      if it.payload then r:add_child(it.payload) end
      r:up()
    end
    r:up()
    if rsm then r:add_child(rsm) end
    return r
  end

  -- Nodes (sorted by name) that `node_name` (optional) selects.
  local function nodes_of(self, node_name)
    local names = {}
    for name in pairs(self.nodes) do
      if not node_name or name == node_name then names[#names + 1] = name end
    end
    sort(names)
    return names
  end

  E["get subscriptions"] = function(self, iq, _, op, bare)
    local r = reply(iq):tag("subscriptions")
    for _, name in ipairs(nodes_of(self, op.attr.node)) do
      local whos = {}
      for who in pairs(self.nodes[name].subscriptions) do
        if jid.bare(who) == bare then whos[#whos + 1] = who end
      end
      sort(whos)
      for _, who in ipairs(whos) do
        r:tag("subscription", { node = name, jid = who, subscription = "subscribed" }):up()
      end
    end
    return r:up()
  end

  E["get affiliations"] = function(self, iq, _, op, bare)
    local r = reply(iq):tag("affiliations")
    for _, name in ipairs(nodes_of(self, op.attr.node)) do
      local a = self.nodes[name]:affiliation(bare)
      if a ~= "none" then r:tag("affiliation", { node = name, affiliation = a }):up() end
    end
    return r:up()
  end

  local function unsupported(feature, text)
    return function() return err("cancel", "feature-not-implemented", text, nil, feature) end
  end
  E["set options"] = unsupported("subscription-options", "subscription options are not supported")
  E["get options"] = E["set options"]
  E["get default"] = E["set options"]

  --- owner use cases ---

  O["get configure"] = function(self, iq, _, op, bare)
    local node, e = owned(self, op, bare)
    if not node then return e end
    return reply(iq, NS_OWNER):tag("configure", { node = node.name })
      :add_child(pubsub_node.config_form(node.config)):up()
  end

  O["set configure"] = function(self, iq, _, op, bare)
    local node, e = owned(self, op, bare)
    if not node then return e end
    local x = op:get_child("x", "jabber:x:data")
    if not x then return err("modify", "bad-request", "the configuration form is missing") end
    if x.attr.type == "cancel" then return st.reply(iq) end
    if x.attr.type ~= "submit" then return err("modify", "bad-request", "submit the form") end
    local c, msg, cond = pubsub_node.read_form(x, node.config, self:limit("max_pubsub_items"))
    if not c then return err("modify", cond, msg) end
    e = self:too_big(node:meta_bytes(c) - node:meta_bytes())     -- a longer title
    if e then return e end
    node:set_config(c)
    return st.reply(iq), c.notify_config and function()
      self:notify(node, st.stanza("configuration", { node = node.name }))
    end
  end

  O["get default"] = function(_, iq)
    return reply(iq, NS_OWNER):tag("default")
      :add_child(pubsub_node.config_form(pubsub_node.defaults("service"))):up()
  end

  O["set delete"] = function(self, iq, _, op, bare)
    local node, e = owned(self, op, bare)
    if not node then return e end
    local redirect = op:get_child("redirect")
    return st.reply(iq), function() self:delete(node, redirect and redirect.attr.uri) end
  end

  O["set purge"] = function(self, iq, _, op, bare)
    local node, e = owned(self, op, bare)
    if not node then return e end
    node:purge()
    return st.reply(iq), function() self:notify(node, st.stanza("purge", { node = node.name })) end
  end

  O["get subscriptions"] = function(self, iq, _, op, bare)
    local node, e = owned(self, op, bare)
    if not node then return e end
    local whos = {}
    for who in pairs(node.subscriptions) do whos[#whos + 1] = who end
    sort(whos)
    local r = reply(iq, NS_OWNER):tag("subscriptions", { node = node.name })
    for _, who in ipairs(whos) do r:tag("subscription", { jid = who, subscription = "subscribed" }):up() end
    return r:up()
  end
  O["set subscriptions"] = unsupported("manage-subscriptions", "subscriptions are managed by their subscribers")

  O["get affiliations"] = function(self, iq, _, op, bare)
    local node, e = owned(self, op, bare)
    if not node then return e end
    local whos = {}
    for who in pairs(node.affiliations) do whos[#whos + 1] = who end
    sort(whos)
    local r = reply(iq, NS_OWNER):tag("affiliations", { node = node.name })
    for _, who in ipairs(whos) do r:tag("affiliation", { jid = who, affiliation = node.affiliations[who] }):up() end
    return r:up()
  end

  O["set affiliations"] = function(self, iq, _, op, bare)
    local node, e = owned(self, op, bare)
    if not node then return e end
    local changes = {}
    for a in op:childtags("affiliation") do
      local who = a.attr.jid and jid.prep(a.attr.jid)
      if not who or jid.resource(who) or not AFFILIATIONS[a.attr.affiliation] then
        return err("modify", "bad-request", "each affiliation needs a bare jid and a known affiliation")
      end
      if who == self.owner_bare and a.attr.affiliation ~= "owner" then
        return err("modify", "not-acceptable", "the account owns its PEP nodes")
      end
      changes[#changes + 1] = { who, a.attr.affiliation }
    end
    local after = {}
    for k, v in pairs(node.affiliations) do after[k] = v end
    for _, c in ipairs(changes) do after[c[1]] = c[2] ~= "none" and c[2] or nil end
    local owner, count, before = false, 0, 0
    for _, a in pairs(after) do owner, count = owner or a == "owner", count + 1 end
    if not owner then return err("modify", "not-acceptable", "a node keeps at least one owner") end
    -- limits.max_pubsub_affiliations: XEP-0060 §8.9.2.4 names no condition
    -- for a list that is too long (a matter of service policy); as for
    -- too many nodes, resource-constraint, and nothing changes. A list
    -- stored longer (the limit lowered since) may still shrink.
    for _ in pairs(node.affiliations) do before = before + 1 end
    local max = self:limit("max_pubsub_affiliations")
    if count > max and count > before then
      return err("wait", "resource-constraint",
        ("a node has at most %d affiliations here (limits.max_pubsub_affiliations)"):format(max))
    end
    e = self:too_big(node:meta_bytes(nil, after) - node:meta_bytes())
    if e then return e end
    node.affiliations = after
    for who in pairs(node.subscriptions) do              -- outcasts lose their subscriptions
      if after[jid.bare(who)] == "outcast" then node.subscriptions[who], node.nsubs = nil, node.nsubs - 1 end
    end
    node:recount()
    node:save()
    return st.reply(iq)
  end

  -- children of <pubsub/> that go with the request, not the request itself
  local COMPANION = { configure = true, ["publish-options"] = true, set = true }

  --- Answers a pubsub or pubsub#owner request to this service.
  function Service:handle_iq(iq, send)
    local ps, t = iq.tags[1], iq.attr.type
    local ns = ps and ps.name == "pubsub" and ps.attr.xmlns
    local handlers = (ns == NS and E) or (ns == NS_OWNER and O) or nil
    if not handlers then return send(st.error_reply(iq, "cancel", "service-unavailable")) end
    local op
    for child in ps:childtags() do
      if not op and (ns == NS_OWNER or not COMPANION[child.name]) then op = child end
    end
    local fn = op and handlers[t .. " " .. op.name]
    if not fn then
      return send(st.error_reply(iq, "modify", "bad-request", "not a pubsub request this service knows"))
    end
    local ok, r, after = pcall(fn, self, iq, ps, op, jid.bare(iq.attr.from))
    if not ok then
      send(st.error_reply(iq, "wait", "internal-server-error"))
      error(r, 0)
    end
    if not st.is_stanza(r) then r = M.error_reply(iq, r) end
    send(r)
    if after then after() end
  end
end

return { install = install }
