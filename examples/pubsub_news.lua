-- A publish-subscribe (XEP-0060) news feed: one process publishes
-- headlines to a node, others subscribe and print each as it arrives.
--
--   LXMPP_PUBSUB=pubsub.example.org LXMPP_NODE=news LXMPP_PUBLISH="hello|second headline" \
--     lua5.4 examples/pubsub_news.lua publisher@example.org secret [HOST [PORT]]
--   LXMPP_PUBSUB=pubsub.example.org LXMPP_NODE=news [LXMPP_COUNT=2] \
--     lua5.4 examples/pubsub_news.lua reader@example.org secret [HOST [PORT]]
--
-- The publisher creates the node if it is missing; "|" separates headlines.
-- Without LXMPP_PUBSUB the account's own PEP service (XEP-0163) is used.
--
-- lxmpp's embedded server has a pubsub service to try it on:
--   bin/lxmpp serve --pubsub pubsub.localhost --user publisher:secret --user reader:secret
--   LXMPP_INSECURE=1 LXMPP_PUBSUB=pubsub.localhost LXMPP_PUBLISH="hello" \
--     lua5.4 examples/pubsub_news.lua publisher@localhost secret 127.0.0.1

package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local lxmpp = require "lxmpp"
local st = require "lxmpp.stanza"
local common = require "common"

local NS = "urn:example:headline"
local opts = common.options(arg)
local service = os.getenv("LXMPP_PUBSUB")
local node = os.getenv("LXMPP_NODE") or "news"
local headlines = os.getenv("LXMPP_PUBLISH")
local count = tonumber(os.getenv("LXMPP_COUNT") or "")

lxmpp.run(function()
  local c, message, condition = lxmpp.connect(opts)
  if not c then
    common.say("cannot connect: %s (%s)", message, condition)
    os.exit(1)
  end
  c:send_presence()

  if headlines then
    if service then
      local made, msg, cond = c:pubsub_create(service, node, { ["pubsub#title"] = "Headlines" })
      if made then common.say("created node %s", node)
      elseif cond ~= "conflict" then common.say("cannot create %s: %s (%s)", node, msg, cond) end
    end
    for text in headlines:gmatch("[^|]+") do
      local id, msg, cond = c:pubsub_publish(service, node, st.stanza("headline", { xmlns = NS }):text(text))
      if id then common.say("published %s: %s", id, text)
      else common.say("cannot publish: %s (%s)", msg, cond) end
    end
    c:close()
    return
  end

  local sub, msg, cond = c:pubsub_subscribe(service or c.bare_jid, node)
  if not sub then
    common.say("cannot subscribe to %s: %s (%s)", node, msg, cond)
    c:close()
    os.exit(1)
  end
  common.say("subscribed to %s on %s (%s)", node, service or c.bare_jid, sub.subscription)
  local seen = 0
  c:on("pubsub-item", function(from, n, item)
    local payload = item.payload
    if n ~= node or (service and from ~= service) or not payload or payload.attr.xmlns ~= NS then return end
    common.say("headline %s: %s", item.id, payload:get_text() or "")
    seen = seen + 1
    if count and seen >= count then
      c:pubsub_unsubscribe(service or c.bare_jid, node)
      c:close()
    end
  end)
end)
