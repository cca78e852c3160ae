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
  { xep = 48, name = "Bookmarks", version = "1.2", side = "server", status = "complete",
    modules = { "lxmpp.server.bookmarks" },
    notes = "in private storage and in PEP, one set with XEP-0402's node" },
  { xep = 49, name = "Private XML Storage", version = "1.2", side = "server", status = "complete",
    modules = { "lxmpp.server.private" }, notes = "bounded per account" },
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
    modules = { "lxmpp.server.register" } },
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
    modules = { "lxmpp.plugins.caps" },
    notes = "our ver in presence; others' verified and cached by ver (only what the hash covers)" },
  { xep = 124, name = "Bidirectional-streams Over Synchronous HTTP (BOSH)", version = "1.11.2", side = "client",
    status = "partial", modules = { "lxmpp.bosh" },
    notes = "sessions, answers in rid order, one held request; no key sequences, pause or request retries" },
  { xep = 124, name = "Bidirectional-streams Over Synchronous HTTP (BOSH)", version = "1.11.2", side = "server",
    status = "partial", modules = { "lxmpp.server.bosh" },
    notes = "sessions, rid window and replays, wait/hold, polling and inactivity limits; no key sequences or pause" },
  { xep = 128, name = "Service Discovery Extensions", version = "1.0.1", side = "client", status = "complete",
    modules = { "lxmpp.plugins.disco" } },
  { xep = 153, name = "vCard-Based Avatars", version = "1.1.1", side = "client", status = "complete",
    modules = { "lxmpp.plugins.vcard" } },
  { xep = 156, name = "Discovering Alternative XMPP Connection Methods", version = "1.4.0", side = "client",
    status = "partial", modules = { "lxmpp.websocket" }, notes = "the WebSocket link of host-meta, over HTTPS only" },
  { xep = 156, name = "Discovering Alternative XMPP Connection Methods", version = "1.4.0", side = "server",
    status = "partial", modules = { "lxmpp.server.web" },
    notes = "host-meta and host-meta.json over HTTP; no DNS TXT" },
  { xep = 163, name = "Personal Eventing Protocol", version = "1.2.2", side = "client", status = "complete",
    modules = { "lxmpp.plugins.pubsub" } },
  { xep = 163, name = "Personal Eventing Protocol", version = "1.2.2", side = "server", status = "partial",
    modules = { "lxmpp.server.pep" },
    notes = "notifications go to every available resource of contacts: no +notify filtering (no caps kept)" },
  { xep = 178, name = "Best Practices for Use of SASL EXTERNAL with Certificates", version = "1.2",
    side = "client", status = "complete", modules = { "lxmpp.features.sasl" } },
  { xep = 178, name = "Best Practices for Use of SASL EXTERNAL with Certificates", version = "1.2",
    side = "server", status = "complete", modules = { "lxmpp.server.s2s_in", "lxmpp.server.s2s_out" },
    notes = "server-to-server: offered only for a certificate that verified and names the stream's from domain;"
      .. " empty authzid; refused (§3), dialback over the same stream when offered and s2s.dialback" },
  { xep = 184, name = "Message Delivery Receipts", version = "1.4.0", side = "client", status = "complete",
    modules = { "lxmpp.plugins.receipts" }, notes = "answered to those allowed to see our presence" },
  { xep = 185, name = "Dialback Key Generation and Validation", version = "1.0", side = "server",
    status = "complete", modules = { "lxmpp.server.s2s" },
    notes = "HMAC-SHA256 keys from a secret drawn at each start" },
  { xep = 191, name = "Blocking Command", version = "1.3", side = "client", status = "complete",
    modules = { "lxmpp.plugins.blocking" } },
  { xep = 191, name = "Blocking Command", version = "1.3", side = "server", status = "complete",
    modules = { "lxmpp.server.blocking" },
    notes = "stored lists, pushes, enforcement both ways, presence on (un)block" },
  { xep = 198, name = "Stream Management", version = "1.6.3", side = "client", status = "complete",
    modules = { "lxmpp.features.sm", "lxmpp.reconnect" } },
  { xep = 198, name = "Stream Management", version = "1.6.3", side = "server", status = "complete",
    modules = { "lxmpp.server.sm" }, notes = "also inline in SASL2 and Bind2 (resume, enable)" },
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
  { xep = 206, name = "XMPP Over BOSH", version = "1.4", side = "client", status = "complete",
    modules = { "lxmpp.bosh" },
    notes = "restarts, SASL, binding and stream management over a BOSH session; over https://, SASL2 with " ..
      "Bind2 and FAST, no restart" },
  { xep = 206, name = "XMPP Over BOSH", version = "1.4", side = "server", status = "complete",
    modules = { "lxmpp.server.bosh" },
    notes = "restarts, SASL and binding over BOSH sessions; SASL2 with Bind2 and FAST (no restart) on " ..
      "encrypted ones; stream errors as terminate" },
  { xep = 220, name = "Server Dialback", version = "1.1.2", side = "server", status = "partial",
    modules = { "lxmpp.server.s2s", "lxmpp.server.s2s_in", "lxmpp.server.s2s_out" },
    notes = "opt-in (`s2s.dialback`), over TLS only; keys checked over a connection of their own;"
      .. " receiving side accepts several domain pairs per stream (§2.6 multiplexing, `s2s_pairs`), each"
      .. " answered for itself (§2.4 errors) and the stream kept open after a refusal (closed after an invalid one"
      .. " with no other pair, §2.2.1)"
      .. " (`s2s_refused_claims` bounds them); the initiating side multiplexes another local domain over an"
      .. " authenticated stream when offered `<errors/>`, else a stream per pair; a `type='error'` answer"
      .. " returns queued stanzas with remote-server-timeout (§2.4), resource-constraint getting one new"
      .. " connection first, as does `type='invalid'` for a multiplexed pair (one retry); `<db:verify/>`"
      .. " questions bounded per stream (`s2s_verifies`); never without TLS" },
  { xep = 223, name = "Persistent Storage of Private Data via PubSub", version = "1.1", side = "server",
    status = "complete", modules = { "lxmpp.server.pep", "lxmpp.server.bookmarks" },
    notes = "whitelist nodes from publish-options" },
  { xep = 249, name = "Direct MUC Invitations", version = "1.2", side = "client", status = "complete",
    modules = { "lxmpp.plugins.muc_admin" } },
  { xep = 280, name = "Message Carbons", version = "1.0.1", side = "client", status = "complete",
    modules = { "lxmpp.plugins.carbons" }, notes = "copies accepted only from the own bare JID" },
  { xep = 280, name = "Message Carbons", version = "1.0.1", side = "server", status = "complete",
    modules = { "lxmpp.server.carbons" }, notes = "§6 rules; the private and XEP-0334 no-copy marks honoured" },
  { xep = 288, name = "Bidirectional Server-to-Server Connections", version = "1.0.1", side = "server",
    status = "complete", modules = { "lxmpp.server.s2s", "lxmpp.server.s2s_in", "lxmpp.server.s2s_out" },
    notes = "offered and used by default (`s2s.bidi`); one local domain per stream" },
  { xep = 297, name = "Stanza Forwarding", version = "1.0", side = "client", status = "partial",
    modules = { "lxmpp.plugins.carbons", "lxmpp.plugins.mam" }, notes = "read inside carbons and archives" },
  { xep = 308, name = "Last Message Correction", version = "1.2.1", side = "client", status = "complete",
    modules = { "lxmpp.plugins.correction" } },
  { xep = 313, name = "Message Archive Management", version = "1.1.3", side = "client", status = "partial",
    modules = { "lxmpp.plugins.mam", "lxmpp.features.sasl2", "lxmpp.features.catchup" },
    notes = "queries with filters and paging, #extended fields (after/before id, ids, flipped pages); archive " ..
      "metadata (IQ, and Bind2's `<bound/>`); catch-up to the archive's state at the bind; after a Bind2 bind, " ..
      "an automatic catch-up from the last archive id seen, delivered as `\"message\"` events with a delay, " ..
      "one that does not finish pinning its anchor for the next login " ..
      "(`mam_catch_up = false` turns it off); results only for our query id; no preferences" },
  { xep = 313, name = "Message Archive Management", version = "1.1.3", side = "server", status = "partial",
    modules = { "lxmpp.server.mam", "lxmpp.server.muc_mam", "lxmpp.server.storage_archive" },
    notes = "account and room archives: with/start/end, XEP-0059 paging; #extended (before-id, after-id, ids, " ..
      "flipped pages); archive metadata (IQ, and in Bind2's `<bound/>`); no preferences" },
  { xep = 333, name = "Displayed Markers", version = "1.0.0", side = "client", status = "complete",
    modules = { "lxmpp.plugins.markers" } },
  { xep = 334, name = "Message Processing Hints", version = "1.0.0", side = "client", status = "partial",
    modules = { "lxmpp.plugins.chatstates" }, notes = "no-store on chat states" },
  { xep = 344, name = "Impact of TLS and DNSSEC on Dialback", version = "0.4", side = "server", status = "partial",
    modules = { "lxmpp.server.s2s_in", "lxmpp.server.s2s_out" },
    notes = "dialback over TLS only; §2.4 dialback without dialback (a verified certificate naming the claimed"
      .. " domain makes a claim valid without the authoritative server); no §2.6 same-certificate shortcut, no"
      .. " DNSSEC" },
  { xep = 352, name = "Client State Indication", version = "1.0.0", side = "client", status = "complete",
    modules = { "lxmpp.plugins.csi" },
    notes = "c:set_active when offered (stream features or Bind2's inline list); said again after a reconnection, " ..
      "inside the Bind2 request when the server lists CSI there" },
  { xep = 352, name = "Client State Indication", version = "1.0.0", side = "server", status = "complete",
    modules = { "lxmpp.server.csi", "lxmpp.server.features.csi" },
    notes = "presence (newest per sender) and chat states/receipts/markers held while inactive, in a bounded " ..
      "queue; the rest at once, in order; XEP-0198 counts only what was sent; inline in Bind2; `csi = false`" },
  { xep = 359, name = "Unique and Stable Stanza IDs", version = "0.7.0", side = "client", status = "complete",
    modules = { "lxmpp.plugins.stanzaid", "lxmpp.features.catchup" },
    notes = "stanza-id trusted only from the expected `by`; our archive's ids are the catch-up's anchor" },
  { xep = 359, name = "Unique and Stable Stanza IDs", version = "0.7.0", side = "server", status = "complete",
    modules = { "lxmpp.server.mam", "lxmpp.server.muc_mam" },
    notes = "archive ids on delivered messages, by accounts and rooms; forged ones stripped" },
  { xep = 363, name = "HTTP File Upload", version = "1.2.0", side = "client", status = "complete",
    modules = { "lxmpp.plugins.upload", "lxmpp.http" }, notes = "slot discovery and PUT over verified HTTPS" },
  { xep = 363, name = "HTTP File Upload", version = "1.2.0", side = "server", status = "complete",
    modules = { "lxmpp.server.upload", "lxmpp.server.http_files" },
    notes = "`upload` subdomain; HTTPS on the server's certificate; one-use expiring slots; quotas" },
  { xep = 368, name = "SRV records for XMPP over TLS", version = "1.1.0", side = "client", status = "complete",
    modules = { "lxmpp.resolve", "lxmpp.client" } },
  { xep = 368, name = "SRV records for XMPP over TLS", version = "1.1.0", side = "server", status = "partial",
    modules = { "lxmpp.server", "lxmpp.server.s2s" },
    notes = "direct TLS listeners (tls_listen, s2s_tls_listen, ALPN xmpp-server); s2s routes follow"
      .. " _xmpps-server records, mixed with _xmpp-server ones by priority and weight (RFC 2782)" },
  { xep = 386, name = "Bind 2", version = "1.1.0", side = "client", status = "partial",
    modules = { "lxmpp.features.sasl2", "lxmpp.features.catchup" },
    notes = "when no resource is asked for and the client has an archive anchor to catch up from, else the " ..
      "classic bind after SASL2 (or `bind2 = true`: the resource is the tag); inline XEP-0198 enable, " ..
      "carbons (when they were on) and XEP-0352 inactive (when set); c.jid from the authorization identifier; " ..
      "XEP-0313 metadata of `<bound/>` read (`c.archive_metadata`): the end of the automatic catch-up of the " ..
      "offline messages the bind cleared, and of `c:mam_catch_up`" },
  { xep = 386, name = "Bind 2", version = "1.1.0", side = "server", status = "complete",
    modules = { "lxmpp.server.features.sasl2", "lxmpp.server.features.bind", "lxmpp.server.mam" },
    notes = "resource from the tag and the user-agent id; inline carbons, XEP-0198 enable and XEP-0352 " ..
      "inactive; XEP-0313 archive metadata in `<bound/>`; the offline messages the archive holds cleared unsent" },
  { xep = 388, name = "Extensible SASL Profile", version = "1.0.4", side = "client", status = "partial",
    modules = { "lxmpp.features.sasl2", "lxmpp.features.sasl" },
    notes = "when offered over TLS (`sasl2 = false` turns it off); the classic mechanism and channel-binding " ..
      "choice; a user-agent id kept in the saved state; XEP-0198 resumption inline; no tasks" },
  { xep = 388, name = "Extensible SASL Profile", version = "1.0.4", side = "server", status = "partial",
    modules = { "lxmpp.server.features.sasl2", "lxmpp.server.features.sasl" },
    notes = "over TLS, the classic mechanisms and limits; Bind2, XEP-0198 resumption and FAST inline; no tasks" },
  { xep = 402, name = "PEP Native Bookmarks", version = "1.2.0", side = "server", status = "complete",
    modules = { "lxmpp.server.bookmarks", "lxmpp.server.pep" },
    notes = "#compat and #compat-pep: XEP-0048 in private storage and PEP kept as the same set" },
  { xep = 440, name = "SASL Channel-Binding Type Capability", version = "1.0.0", side = "both",
    status = "complete", modules = { "lxmpp.server.c2s", "lxmpp.features.sasl" },
    notes = "server: the -PLUS types of each connection (tls-exporter, tls-server-end-point, tls-unique); " ..
      "client: binds with the best advertised type; `channel_binding` on both" },
  { xep = 474, name = "SASL SCRAM Downgrade Protection", version = "0.5.0", side = "both", status = "complete",
    modules = { "lxmpp.server.features.sasl", "lxmpp.features.sasl" },
    notes = "server: h= in every SCRAM exchange, classic SASL and SASL2; `ssdp`; client: an h= that does not " ..
      "match the advertised mechanisms and types aborts the login" },
  { xep = 484, name = "Fast Authentication Streamlining Tokens", version = "0.2.0", side = "server",
    status = "partial", modules = { "lxmpp.server.fast", "lxmpp.server.features.sasl2" },
    notes = "HT-SHA-256-NONE/-ENDP/-UNIQ/-EXPR; rotation, invalidation, revocation on password change; " ..
      "no TLS 0-RTT (tickets allow no early data), hence no `count` check" },
  { xep = 484, name = "Fast Authentication Streamlining Tokens", version = "0.2.0", side = "client",
    status = "partial", modules = { "lxmpp.features.sasl2", "lxmpp.state_file" },
    notes = "HT-SHA-256-EXPR/-ENDP/-NONE; token kept in the saved state (`lxmpp.state_file`: mode 0600), used on " ..
      "reconnection and at the next start, rotated; a refused token is forgotten and the password used; " ..
      "`fast = false`; no TLS 0-RTT" },
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
