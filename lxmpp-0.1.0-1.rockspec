-- The lxmpp 0.1.0 rock, built from the git tag v0.1.0 (lxmpp.VERSION).
-- Its build, dependencies and install are those of lxmpp-scm-1.rockspec
-- (spec/house_spec.lua checks they stay the same). From a checkout:
-- luarocks --lua-version=5.4 make lxmpp-0.1.0-1.rockspec
-- (Debian packages for the C libraries: libexpat1-dev libssl-dev libuv1-dev
-- libc-ares-dev libidn-dev; `make deps` installs them).
rockspec_format = "3.0"
package = "lxmpp"
version = "0.1.0-1"

source = {
   url = "git+https://github.com/lxmpp/lxmpp.git",
   tag = "v0.1.0",
}

description = {
   summary = "XMPP for Lua 5.4 with a C core: bots, components, servers",
   detailed = [[
lxmpp parses XML streams (expat), runs TLS (OpenSSL), computes SASL and moves
bytes (libuv) in C, and gives Lua a coroutine-friendly API on top: Prosody-
shaped stanzas, stringprepped JIDs, a hardened streaming parser.
]],
   labels = { "xmpp", "jabber", "chat", "xml" },
   license = "MIT",
}

-- luasql-sqlite3 (LuaSQL's SQLite driver, Debian's lua-sql-sqlite3) is
-- needed only by the embedded server's file storage
-- (lxmpp.server.storage_sqlite, loaded when storage.open is given a path);
-- clients, components and a server on memory storage never load it. LuaRocks
-- has no optional dependencies, so it is declared here: building it needs
-- SQLite's headers (libsqlite3-dev). lxmpp-scm-1.rockspec declares the same.
dependencies = {
   "lua >= 5.1, < 5.5",   -- 5.1, LuaJIT 2.1, 5.3, 5.4 (not 5.2: csrc/luacompat.h)
   "luasql-sqlite3 >= 2.6",
   "luafilesystem >= 1.8",   -- the HTTP listener's static folder refuses symbolic links with it
}

external_dependencies = {
   EXPAT = { header = "expat.h", library = "expat" },
   OPENSSL = { header = "openssl/ssl.h", library = "ssl" }, -- and crypto, below
   LIBUV = { header = "uv.h", library = "uv" },
   CARES = { header = "ares.h", library = "cares" },
   IDN = { header = "stringprep.h", library = "idn" },
}

build = {
   type = "builtin",
   modules = {
      ["lxmpp.core"] = {
         -- every csrc/*.c, listed explicitly: add new C files here too
         -- (spec/docs_spec.lua fails when one is missing)
         sources = {
            "csrc/core.c",
            "csrc/dns.c",
            "csrc/file.c",
            "csrc/hash_lua.c",
            "csrc/idn.c",
            "csrc/loop.c",
            "csrc/luax.c",
            "csrc/net.c",
            "csrc/net_io.c",
            "csrc/net_ws.c",
            "csrc/prep.c",
            "csrc/sasl.c",
            "csrc/sasl_client.c",
            "csrc/sasl_lua.c",
            "csrc/sasl_server.c",
            "csrc/saslprep.c",
            "csrc/serialize.c",
            "csrc/serialize_lua.c",
            "csrc/signal.c",
            "csrc/stream.c",
            "csrc/stream_lua.c",
            "csrc/stream_tree.c",
            "csrc/tls.c",
            "csrc/tls_lua.c",
            "csrc/utf8.c",
            "csrc/ws.c",
            "csrc/xmlchar.c",
         },
         defines = { "_POSIX_C_SOURCE=200809L" },
         incdirs = {
            "csrc",
            "$(EXPAT_INCDIR)", "$(OPENSSL_INCDIR)", "$(LIBUV_INCDIR)",
            "$(CARES_INCDIR)", "$(IDN_INCDIR)",
         },
         libdirs = {
            "$(EXPAT_LIBDIR)", "$(OPENSSL_LIBDIR)", "$(LIBUV_LIBDIR)",
            "$(CARES_LIBDIR)", "$(IDN_LIBDIR)",
         },
         libraries = { "expat", "ssl", "crypto", "uv", "cares", "idn" },
      },
      ["lxmpp"] = "lua/lxmpp/init.lua",
      ["lxmpp.stanza"] = "lua/lxmpp/stanza.lua",
      ["lxmpp.jid"] = "lua/lxmpp/jid.lua",
      ["lxmpp.bounded"] = "lua/lxmpp/bounded.lua",
      ["lxmpp.compat"] = "lua/lxmpp/compat.lua",
      ["lxmpp.fifo"] = "lua/lxmpp/fifo.lua",
      ["lxmpp.smcore"] = "lua/lxmpp/smcore.lua",
      ["lxmpp.stream_error"] = "lua/lxmpp/stream_error.lua",
      ["lxmpp.transport"] = "lua/lxmpp/transport.lua",
      ["lxmpp.websocket"] = "lua/lxmpp/websocket.lua",
      ["lxmpp.bosh"] = "lua/lxmpp/bosh.lua",
      ["lxmpp.signal"] = "lua/lxmpp/signal.lua",
      ["lxmpp.state_file"] = "lua/lxmpp/state_file.lua",
      ["lxmpp.task"] = "lua/lxmpp/task.lua",
      ["lxmpp.net"] = "lua/lxmpp/net.lua",
      ["lxmpp.events"] = "lua/lxmpp/events.lua",
      ["lxmpp.session"] = "lua/lxmpp/session.lua",
      ["lxmpp.redact"] = "lua/lxmpp/redact.lua",
      ["lxmpp.resolve"] = "lua/lxmpp/resolve.lua",
      ["lxmpp.client"] = "lua/lxmpp/client.lua",
      ["lxmpp.component"] = "lua/lxmpp/component.lua",
      ["lxmpp.features.starttls"] = "lua/lxmpp/features/starttls.lua",
      ["lxmpp.features.sm"] = "lua/lxmpp/features/sm.lua",
      ["lxmpp.reconnect"] = "lua/lxmpp/reconnect.lua",
      ["lxmpp.features.sasl"] = "lua/lxmpp/features/sasl.lua",
      ["lxmpp.features.sasl2"] = "lua/lxmpp/features/sasl2.lua",
      ["lxmpp.features.bind"] = "lua/lxmpp/features/bind.lua",
      ["lxmpp.features.catchup"] = "lua/lxmpp/features/catchup.lua",
      ["lxmpp.features.session"] = "lua/lxmpp/features/session.lua",
      ["lxmpp.plugins.roster"] = "lua/lxmpp/plugins/roster.lua",
      ["lxmpp.plugins.presence"] = "lua/lxmpp/plugins/presence.lua",
      ["lxmpp.plugins.muc"] = "lua/lxmpp/plugins/muc.lua",
      ["lxmpp.plugins.muc_admin"] = "lua/lxmpp/plugins/muc_admin.lua",
      ["lxmpp.plugins.rpc"] = "lua/lxmpp/plugins/rpc.lua",
      ["lxmpp.plugins.ibb"] = "lua/lxmpp/plugins/ibb.lua",
      ["lxmpp.plugins.register"] = "lua/lxmpp/plugins/register.lua",
      ["lxmpp.plugins.vcard"] = "lua/lxmpp/plugins/vcard.lua",
      ["lxmpp.plugins.pubsub"] = "lua/lxmpp/plugins/pubsub.lua",
      ["lxmpp.plugins.upload"] = "lua/lxmpp/plugins/upload.lua",
      ["lxmpp.http"] = "lua/lxmpp/http.lua",
      ["lxmpp.plugins.disco"] = "lua/lxmpp/plugins/disco.lua",
      ["lxmpp.plugins.caps"] = "lua/lxmpp/plugins/caps.lua",
      ["lxmpp.plugins.time"] = "lua/lxmpp/plugins/time.lua",
      ["lxmpp.plugins.last"] = "lua/lxmpp/plugins/last.lua",
      ["lxmpp.plugins.delay"] = "lua/lxmpp/plugins/delay.lua",
      ["lxmpp.plugins.commands"] = "lua/lxmpp/plugins/commands.lua",
      ["lxmpp.plugins.receipts"] = "lua/lxmpp/plugins/receipts.lua",
      ["lxmpp.plugins.chatstates"] = "lua/lxmpp/plugins/chatstates.lua",
      ["lxmpp.plugins.stanzaid"] = "lua/lxmpp/plugins/stanzaid.lua",
      ["lxmpp.plugins.correction"] = "lua/lxmpp/plugins/correction.lua",
      ["lxmpp.plugins.csi"] = "lua/lxmpp/plugins/csi.lua",
      ["lxmpp.plugins.markers"] = "lua/lxmpp/plugins/markers.lua",
      ["lxmpp.plugins.carbons"] = "lua/lxmpp/plugins/carbons.lua",
      ["lxmpp.plugins.mam"] = "lua/lxmpp/plugins/mam.lua",
      ["lxmpp.plugins.blocking"] = "lua/lxmpp/plugins/blocking.lua",
      ["lxmpp.datetime"] = "lua/lxmpp/datetime.lua",
      ["lxmpp.xeps"] = "lua/lxmpp/xeps.lua",
      ["lxmpp.server"] = "lua/lxmpp/server/init.lua",
      ["lxmpp.server.c2s"] = "lua/lxmpp/server/c2s.lua",
      ["lxmpp.server.component"] = "lua/lxmpp/server/component.lua",
      ["lxmpp.server.s2s"] = "lua/lxmpp/server/s2s.lua",
      ["lxmpp.server.s2s_in"] = "lua/lxmpp/server/s2s_in.lua",
      ["lxmpp.server.s2s_out"] = "lua/lxmpp/server/s2s_out.lua",
      ["lxmpp.server.im"] = "lua/lxmpp/server/im.lua",
      ["lxmpp.server.register"] = "lua/lxmpp/server/register.lua",
      ["lxmpp.server.presence"] = "lua/lxmpp/server/presence.lua",
      ["lxmpp.server.sm"] = "lua/lxmpp/server/sm.lua",
      ["lxmpp.server.csi"] = "lua/lxmpp/server/csi.lua",
      ["lxmpp.server.carbons"] = "lua/lxmpp/server/carbons.lua",
      ["lxmpp.server.blocking"] = "lua/lxmpp/server/blocking.lua",
      ["lxmpp.server.stream"] = "lua/lxmpp/server/stream.lua",
      ["lxmpp.server.throttle"] = "lua/lxmpp/server/throttle.lua",
      ["lxmpp.server.features.starttls"] = "lua/lxmpp/server/features/starttls.lua",
      ["lxmpp.server.features.sasl"] = "lua/lxmpp/server/features/sasl.lua",
      ["lxmpp.server.features.sasl2"] = "lua/lxmpp/server/features/sasl2.lua",
      ["lxmpp.server.features.register"] = "lua/lxmpp/server/features/register.lua",
      ["lxmpp.server.features.bind"] = "lua/lxmpp/server/features/bind.lua",
      ["lxmpp.server.features.sm"] = "lua/lxmpp/server/features/sm.lua",
      ["lxmpp.server.features.csi"] = "lua/lxmpp/server/features/csi.lua",
      ["lxmpp.server.httpd"] = "lua/lxmpp/server/httpd.lua",
      ["lxmpp.server.web"] = "lua/lxmpp/server/web.lua",
      ["lxmpp.server.websocket"] = "lua/lxmpp/server/websocket.lua",
      ["lxmpp.server.bosh"] = "lua/lxmpp/server/bosh.lua",
      ["lxmpp.server.storage"] = "lua/lxmpp/server/storage.lua",
      ["lxmpp.server.storage_sqlite"] = "lua/lxmpp/server/storage_sqlite.lua",
      ["lxmpp.server.storage_archive"] = "lua/lxmpp/server/storage_archive.lua",
      ["lxmpp.server.mam"] = "lua/lxmpp/server/mam.lua",
      ["lxmpp.server.codec"] = "lua/lxmpp/server/codec.lua",
      ["lxmpp.forms"] = "lua/lxmpp/forms.lua",
      ["lxmpp.server.muc"] = "lua/lxmpp/server/muc.lua",
      ["lxmpp.server.muc_room"] = "lua/lxmpp/server/muc_room.lua",
      ["lxmpp.server.muc_admin"] = "lua/lxmpp/server/muc_admin.lua",
      ["lxmpp.server.muc_history"] = "lua/lxmpp/server/muc_history.lua",
      ["lxmpp.server.pubsub"] = "lua/lxmpp/server/pubsub.lua",
      ["lxmpp.server.service"] = "lua/lxmpp/server/service.lua",
      ["lxmpp.server.pubsub_iq"] = "lua/lxmpp/server/pubsub_iq.lua",
      ["lxmpp.server.pubsub_node"] = "lua/lxmpp/server/pubsub_node.lua",
      ["lxmpp.server.pep"] = "lua/lxmpp/server/pep.lua",
      ["lxmpp.server.private"] = "lua/lxmpp/server/private.lua",
      ["lxmpp.server.bookmarks"] = "lua/lxmpp/server/bookmarks.lua",
      ["lxmpp.server.muc_mam"] = "lua/lxmpp/server/muc_mam.lua",
      ["lxmpp.server.fast"] = "lua/lxmpp/server/fast.lua",
      ["lxmpp.server.upload"] = "lua/lxmpp/server/upload.lua",
      ["lxmpp.server.http_files"] = "lua/lxmpp/server/http_files.lua",
   },
   install = {
      bin = { lxmpp = "bin/lxmpp" },
   },
}
