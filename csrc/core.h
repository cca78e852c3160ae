/*
 * core.h - the lxmpp.core Lua module: what each binding file exports.
 *
 * luaopen_lxmpp_core (core.c) creates the module table and calls each
 * lx_open_* below with that table on top of the stack; each one adds its
 * functions to it (stack effect: none) and keeps its own per-state context
 * in upvalues or the registry (no C globals). It also
 * declares the few functions one binding offers another (net.c uses
 * tls_lua.c's and stream_lua.c's). Generic helpers are in luax.h.
 */
#ifndef LXMPP_CORE_H
#define LXMPP_CORE_H

#include "lx.h"
#include "luax.h"

LX_HIDDEN_BEGIN

void lx_open_stream(lua_State *L);    /* stream_lua.c: stream_parser, parse_element, set_stanza_mt */
void lx_open_serialize(lua_State *L); /* serialize_lua.c: serialize, check_* */
void lx_open_idn(lua_State *L);       /* idn.c: nodeprep, nameprep, resourceprep, to_ascii */
void lx_open_loop(lua_State *L);      /* loop.c: the event loop, dispatcher, timers */
void lx_open_signal(lua_State *L);    /* signal.c: signal watchers, getpid, kill */
void lx_open_net(lua_State *L);       /* net.c: TCP connections and listeners */
void lx_open_tls(lua_State *L);       /* tls_lua.c: TLS contexts and sessions */
void lx_open_hash(lua_State *L);      /* hash_lua.c: digests, randomness, const_eq */
void lx_open_dns(lua_State *L);       /* dns.c: core.resolver (c-ares SRV, A/AAAA), core.ip_family */
void lx_open_sasl(lua_State *L);      /* sasl_lua.c: sasl_choose, sasl_client, sasl_server, ... */
void lx_open_file(lua_State *L);      /* file.c: write_private */

/* Deepest element nesting the serializer writes, and so the depth that
 * core.parse_element accepts by default: whatever lxmpp can write, it can
 * read back (parse(serialize(x)) == x). */
#define LX_MAX_NEST 500

struct lx_tls_ctx;
/* The TLS context of the tls_context userdata at idx (raises if it is not
 * one, or closed); *server tells its role. The context is reference counted
 * by the engine, so sessions made from it keep it alive. tls_lua.c. */
struct lx_tls_ctx *lx_tls_ctx_from_lua(lua_State *L, int idx, int *server);
struct lx_tls_ticket;
/* The TLS ticket userdata at idx, or NULL when it is nil/absent or closed
 * (raises for anything else). The caller offers it at once (lx_tls_offer
 * takes its own reference). tls_lua.c. */
struct lx_tls_ticket *lx_tls_ticket_from_lua(lua_State *L, int idx);
struct lx_tls;
/* Pushes the newest ticket of t (moved out) as a ticket userdata, or nil;
 * returns 1. tls_lua.c. */
int lx_tls_push_ticket(lua_State *L, struct lx_tls *t);

/* The parser limits of the options table at idx (nil or absent: the
 * defaults): max_stanza_size, max_depth, max_attributes, max_children, as
 * core.stream_parser takes them; raises for a value out of range.
 * stream_lua.c; net.c's conn:parse uses it too. */
struct lx_limits;
void lx_get_limits(lua_State *L, int idx, struct lx_limits *lim);

struct lx_stream;
/* Pushes what a parser event carries: the stream header's attribute table
 * (LX_EV_OPEN), the stanza (LX_EV_STANZA, with the stanza metatable), or in
 * framed mode <close/>'s attribute table (LX_EV_CLOSE, RFC 7395 §3.6.1);
 * returns how many values it pushed (0 for other events). keys: stack index
 * of the strings "name", "attr", "tags", "xmlns" and the string cache, as
 * stream_lua.c's push_keys() pushes them, or 0. stream_lua.c. */
int lx_push_event(lua_State *L, struct lx_stream *s, int ev, int keys);

LX_HIDDEN_END

#endif
