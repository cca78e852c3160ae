-- lxmpp.xeps: the XMPP extensions lxmpp implements, one row per XEP and
-- side, the single source of docs/xeps.md (`make docs` writes it;
-- spec/xeps_spec.lua fails when the file is stale or a row names a module
-- that does not exist).
--
--   for _, x in ipairs(require("lxmpp.xeps").list) do print(x.xep, x.name) end
--   require("lxmpp.xeps").markdown() -> the text of docs/xeps.md

local ipairs, concat, format = ipairs, table.concat, string.format

-- xep: number; version: the XEP revision implemented; status: "complete"
-- (what the side needs), "partial" (notes say what is left out) or
-- "in progress" (being written, not on main yet); modules: where it lives.
local list = {
  { xep = 4, name = "Data Forms", version = "2.13.2", side = "both", status = "complete",
    modules = { "lxmpp.forms" }, notes = "build, parse and check typed values" },
  { xep = 9, name = "Jabber-RPC", version = "2.2.1", side = "client", status = "complete",
    modules = { "lxmpp.plugins.rpc" }, notes = "calls and exposed methods, both ways" },
  { xep = 12, name = "Last Activity", version = "2.0", side = "client", status = "complete",
    modules = { "lxmpp.plugins.last" }, notes = "query; idle time answered to the account and contacts" },
  { xep = 12, name = "Last Activity", version = "2.0", side = "server", status = "partial",
    modules = { "lxmpp.server.im" }, notes = "the server's uptime" },
  { xep = 30, name = "Service Discovery", version = "2.5.0", side = "client", status = "complete",
    modules = { "lxmpp.plugins.disco" }, notes = "info and items with nodes, both ways" },
  { xep = 30, name = "Service Discovery", version = "2.5.0", side = "server", status = "complete",
    modules = { "lxmpp.server.im", "lxmpp.server.muc_admin" } },
  { xep = 45, name = "Multi-User Chat", version = "1.35.5", side = "client", status = "complete",
    modules = { "lxmpp.plugins.muc", "lxmpp.plugins.muc_admin" },
    notes = "occupant, moderator, admin and owner use cases" },
  { xep = 45, name = "Multi-User Chat", version = "1.35.5", side = "server", status = "complete",
    modules = { "lxmpp.server.muc", "lxmpp.server.muc_room", "lxmpp.server.muc_admin",
      "lxmpp.server.muc_history" } },
  { xep = 47, name = "In-Band Bytestreams", version = "2.0.1", side = "client", status = "complete",
    modules = { "lxmpp.plugins.ibb" }, notes = "flow-controlled sending; receiving behind a policy" },
  { xep = 50, name = "Ad-Hoc Commands", version = "1.3.0", side = "client", status = "complete",
    modules = { "lxmpp.plugins.commands" }, notes = "offering (multi-stage forms) and executing" },
  { xep = 54, name = "vcard-temp", version = "1.3.0", side = "client", status = "complete",
    modules = { "lxmpp.plugins.vcard" } },
  { xep = 54, name = "vcard-temp", version = "1.3.0", side = "server", status = "complete",
    modules = { "lxmpp.server.im" } },
  { xep = 59, name = "Result Set Management", version = "1.0", side = "client", status = "partial",
    modules = { "lxmpp.plugins.mam", "lxmpp.plugins.pubsub" }, notes = "paging of archive queries and pubsub items" },
  { xep = 60, name = "Publish-Subscribe", version = "1.30.0", side = "client", status = "partial",
    modules = { "lxmpp.plugins.pubsub" },
    notes = "nodes, configuration, publish/retract, subscriptions, items, notifications" },
  { xep = 60, name = "Publish-Subscribe", version = "1.30.0", side = "server", status = "partial",
    modules = { "lxmpp.server.pubsub", "lxmpp.server.pubsub_iq", "lxmpp.server.pubsub_node" },
    notes = "leaf nodes, configuration, affiliations, publish-options, notifications, items paged with"
      .. " XEP-0059; no subscription options, collections, or authorize/roster access models" },
  { xep = 77, name = "In-Band Registration", version = "2.4", side = "client", status = "complete",
    modules = { "lxmpp.plugins.register" }, notes = "register, change password, cancel" },
  { xep = 77, name = "In-Band Registration", version = "2.4", side = "server", status = "complete",
    modules = { "lxmpp.server.im" } },
  { xep = 82, name = "XMPP Date and Time Profiles", version = "1.1.1", side = "both", status = "complete",
    modules = { "lxmpp.datetime" } },
  { xep = 85, name = "Chat State Notifications", version = "2.1", side = "client", status = "complete",
    modules = { "lxmpp.plugins.chatstates" } },
  { xep = 92, name = "Software Version", version = "1.1", side = "client", status = "complete",
    modules = { "lxmpp.plugins.presence", "lxmpp.client" }, notes = "query and answer" },
  { xep = 92, name = "Software Version", version = "1.1", side = "server", status = "complete",
    modules = { "lxmpp.server.im" } },
  { xep = 114, name = "Jabber Component Protocol", version = "1.6", side = "component", status = "complete",
    modules = { "lxmpp.component" } },
  { xep = 114, name = "Jabber Component Protocol", version = "1.6", side = "server", status = "complete",
    modules = { "lxmpp.server.component" } },
  { xep = 115, name = "Entity Capabilities", version = "1.6.0", side = "client", status = "complete",
    modules = { "lxmpp.plugins.caps" }, notes = "our ver in presence; others' verified and cached by ver" },
  { xep = 128, name = "Service Discovery Extensions", version = "1.0.1", side = "client", status = "complete",
    modules = { "lxmpp.plugins.disco" } },
  { xep = 153, name = "vCard-Based Avatars", version = "1.1.1", side = "client", status = "complete",
    modules = { "lxmpp.plugins.vcard" } },
  { xep = 163, name = "Personal Eventing Protocol", version = "1.2.2", side = "client", status = "complete",
    modules = { "lxmpp.plugins.pubsub" } },
  { xep = 163, name = "Personal Eventing Protocol", version = "1.2.2", side = "server", status = "partial",
    modules = { "lxmpp.server.pep" },
    notes = "notifications go to every available resource of contacts: no +notify filtering (no caps kept)" },
  { xep = 178, name = "Best Practices for Use of SASL EXTERNAL with Certificates", version = "1.2",
    side = "client", status = "complete", modules = { "lxmpp.features.sasl" } },
  { xep = 184, name = "Message Delivery Receipts", version = "1.4.0", side = "client", status = "complete",
    modules = { "lxmpp.plugins.receipts" } },
  { xep = 191, name = "Blocking Command", version = "1.3", side = "client", status = "complete",
    modules = { "lxmpp.plugins.blocking" } },
  { xep = 191, name = "Blocking Command", version = "1.3", side = "server", status = "complete",
    modules = { "lxmpp.server.blocking" },
    notes = "stored lists, pushes, enforcement both ways, presence on (un)block" },
  { xep = 198, name = "Stream Management", version = "1.6.3", side = "client", status = "complete",
    modules = { "lxmpp.features.sm", "lxmpp.reconnect" } },
  { xep = 198, name = "Stream Management", version = "1.6.3", side = "server", status = "complete",
    modules = { "lxmpp.server.sm" } },
  { xep = 199, name = "XMPP Ping", version = "2.0.1", side = "client", status = "complete",
    modules = { "lxmpp.plugins.presence", "lxmpp.client" } },
  { xep = 199, name = "XMPP Ping", version = "2.0.1", side = "server", status = "complete",
    modules = { "lxmpp.server.im" } },
  { xep = 202, name = "Entity Time", version = "2.0", side = "client", status = "complete",
    modules = { "lxmpp.plugins.time" } },
  { xep = 202, name = "Entity Time", version = "2.0", side = "server", status = "complete",
    modules = { "lxmpp.server.im" } },
  { xep = 203, name = "Delayed Delivery", version = "2.0", side = "client", status = "complete",
    modules = { "lxmpp.plugins.delay" } },
  { xep = 203, name = "Delayed Delivery", version = "2.0", side = "server", status = "complete",
    modules = { "lxmpp.server.im", "lxmpp.server.muc_history" }, notes = "offline messages, room history" },
  { xep = 249, name = "Direct MUC Invitations", version = "1.2", side = "client", status = "complete",
    modules = { "lxmpp.plugins.muc_admin" } },
  { xep = 280, name = "Message Carbons", version = "1.0.1", side = "client", status = "complete",
    modules = { "lxmpp.plugins.carbons" }, notes = "copies accepted only from the own bare JID" },
  { xep = 280, name = "Message Carbons", version = "1.0.1", side = "server", status = "complete",
    modules = { "lxmpp.server.carbons" }, notes = "§6 rules; the private and XEP-0334 no-copy marks honoured" },
  { xep = 297, name = "Stanza Forwarding", version = "1.0", side = "client", status = "partial",
    modules = { "lxmpp.plugins.carbons", "lxmpp.plugins.mam" }, notes = "read inside carbons and archives" },
  { xep = 308, name = "Last Message Correction", version = "1.2.1", side = "client", status = "complete",
    modules = { "lxmpp.plugins.correction" } },
  { xep = 313, name = "Message Archive Management", version = "1.1.3", side = "client", status = "partial",
    modules = { "lxmpp.plugins.mam" }, notes = "queries with filters and paging; no preferences" },
  { xep = 313, name = "Message Archive Management", version = "1.1.3", side = "server", status = "partial",
    modules = { "lxmpp.server.mam", "lxmpp.server.storage_archive" },
    notes = "account archives: with/start/end, XEP-0059 paging; no #extended, no preferences" },
  { xep = 333, name = "Displayed Markers", version = "1.0.0", side = "client", status = "complete",
    modules = { "lxmpp.plugins.markers" } },
  { xep = 334, name = "Message Processing Hints", version = "1.0.0", side = "client", status = "partial",
    modules = { "lxmpp.plugins.chatstates" }, notes = "no-store on chat states" },
  { xep = 359, name = "Unique and Stable Stanza IDs", version = "0.7.0", side = "client", status = "complete",
    modules = { "lxmpp.plugins.stanzaid" }, notes = "stanza-id trusted only from the expected `by`" },
  { xep = 359, name = "Unique and Stable Stanza IDs", version = "0.7.0", side = "server", status = "complete",
    modules = { "lxmpp.server.mam" }, notes = "archive ids on delivered messages; forged ones stripped" },
  { xep = 363, name = "HTTP File Upload", version = "1.2.0", side = "client", status = "complete",
    modules = { "lxmpp.plugins.upload", "lxmpp.http" }, notes = "slot discovery and PUT over verified HTTPS" },
  { xep = 368, name = "SRV records for XMPP over TLS", version = "1.1.0", side = "client", status = "complete",
    modules = { "lxmpp.resolve", "lxmpp.client" } },
  { xep = 368, name = "SRV records for XMPP over TLS", version = "1.1.0", side = "server", status = "partial",
    modules = { "lxmpp.server" }, notes = "direct TLS listeners (tls_listen)" },
}

local function markdown()
  local out = {
    "# XMPP extensions lxmpp implements",
    "",
    "Generated from `lua/lxmpp/xeps.lua` by `make docs`; do not edit by hand",
    "(`spec/xeps_spec.lua` fails when this file is stale).",
    "",
    "| XEP | name | version | side | status | modules | notes |",
    "| --- | --- | --- | --- | --- | --- | --- |",
  }
  for _, x in ipairs(list) do
    local mods = {}
    for i, m in ipairs(x.modules) do mods[i] = "`" .. m .. "`" end
    out[#out + 1] = format("| [XEP-%04d](https://xmpp.org/extensions/xep-%04d.html) | %s | %s | %s | %s | %s | %s |",
      x.xep, x.xep, x.name, x.version, x.side, x.status, concat(mods, ", "), x.notes or "")
  end
  out[#out + 1] = ""
  return concat(out, "\n")
end

return { list = list, markdown = markdown }
