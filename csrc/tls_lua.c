/*
 * tls_lua.c - Lua binding of the TLS engine (tls.c).
 *
 *   core.tls_context{ mode=, cafile=, insecure=, cert=, key=, alpn=, domain=,
 *                     sni=, max_version=, no_ems=, resumption= } -> ctx | nil,
 *                     message, "tls-failed"   (max_version "1.2" and no_ems =
 *                     true, no TLS 1.2 extended master secret: for tests;
 *                     resumption = false: no tickets issued or kept)
 *   ctx:session([peer_domain [, ticket]]) -> session (a client offers ticket
 *                     when it belongs to this context and domain)
 *   ctx:close()
 *   session:ticket() -> ticket | nil   (client: the newest ticket of a
 *                     verified handshake, moved out; see tls.h)
 *   ticket:close()    (also __gc/__close; safe twice)
 *   session:recv(ciphertext) -> true | nil, message, condition
 *   session:handshake() -> "done" | "want" | nil, message, condition
 *   session:send(plaintext) -> true | nil, message, condition
 *   session:read() -> plaintext ("" if none), closed | nil, message, condition
 *   session:take() -> ciphertext to send ("" if none)
 *   session:shutdown() -> true when close_notify was queued (take() it)
 *   session:info() -> {version=, cipher=, alpn=, verified=, peer_subject=,
 *                      server_name=, resumed=}
 *   session:channel_binding(type) -> bytes | nil, message
 *   session:close()
 *
 * No Lua runs inside OpenSSL: every engine call returns before anything here
 * can raise. Each userdata owns its C object (freed by close(), which is safe
 * twice and is also __gc/__close); a session's uservalue 1 is its context
 * userdata, and the engine's reference count keeps the C context alive too.
 * Misuse raises; expected failures return nil, message, condition.
 */
#include "lx.h"
#include "core.h"
#include "luax.h"
#include "tls.h"

#include <string.h>

#define CTX_MT "lxmpp.tls_context"
#define SESSION_MT "lxmpp.tls_session"
#define TICKET_MT "lxmpp.tls_ticket"
/* (at most what luaL_prepbuffsize gives at once: luacompat.h) */
#define READ_CHUNK (16384 < LX_PREPBUFF_MAX ? 16384 : LX_PREPBUFF_MAX)

typedef struct lctx {
  lx_tls_ctx *c;
  int server;
} lctx;

typedef struct lsession {
  lx_tls *t;
} lsession;

typedef struct lticket {
  lx_tls_ticket *k;
} lticket;

static lctx *check_ctx(lua_State *L, int idx) {
  lctx *u = luaL_checkudata(L, idx, CTX_MT);
  if (!u->c) luaL_error(L, "TLS context is closed");
  return u;
}

/* For other bindings (net.c's starttls): the engine context of the
 * tls_context userdata at idx; raises if it is not one or is closed. The
 * caller's sessions take their own engine reference (lx_tls_new), so they
 * need not pin the userdata. */
struct lx_tls_ctx *lx_tls_ctx_from_lua(lua_State *L, int idx, int *server) {
  lctx *u = check_ctx(L, idx);
  if (server) *server = u->server;
  return u->c;
}

/* For net.c's starttls too: the ticket at idx, NULL when that argument is
 * nil/absent or the ticket is closed; raises when it is something else. */
struct lx_tls_ticket *lx_tls_ticket_from_lua(lua_State *L, int idx) {
  lticket *u;
  if (lua_isnoneornil(L, idx)) return NULL;
  u = luaL_checkudata(L, idx, TICKET_MT);
  return u->k;
}

static lx_tls *check_session(lua_State *L) {
  lsession *s = luaL_checkudata(L, 1, SESSION_MT);
  if (!s->t) luaL_error(L, "TLS session is closed");
  return s->t;
}

/* opts[k] as a string (left on the stack, so it stays alive) or NULL. */
static const char *opt_string(lua_State *L, const char *k) {
  size_t n;
  const char *v;
  if (lua_getfield(L, 1, k) == LUA_TNIL) return NULL;
  if (lua_type(L, -1) != LUA_TSTRING)
    luaL_error(L, "option %s must be a string", k);
  v = lua_tolstring(L, -1, &n);
  if (strlen(v) != n) luaL_error(L, "option %s contains a zero byte", k);
  return v;
}

static int opt_bool(lua_State *L, const char *k) {
  int t = lua_getfield(L, 1, k), v = lua_toboolean(L, -1);
  if (t != LUA_TNIL && t != LUA_TBOOLEAN)
    luaL_error(L, "option %s must be a boolean", k);
  lua_pop(L, 1);
  return v;
}

/* One ALPN protocol name at index idx: 1 to 255 bytes, no comma. */
static void check_alpn_name(lua_State *L, int idx) {
  size_t len;
  const char *p = lua_tolstring(L, idx, &len);
  if (lua_type(L, idx) != LUA_TSTRING || len == 0 || len > 255 ||
      strlen(p) != len || strchr(p, ','))
    luaL_error(L, "option alpn: bad protocol name");
}

/* opts.alpn: a string or a list of strings -> "a,b" (left on the stack). */
static const char *opt_alpn(lua_State *L) {
  luaL_Buffer b;
  lua_Integer i, n;
  int t = lua_getfield(L, 1, "alpn"), list = lua_gettop(L);
  if (t == LUA_TNIL) return NULL;
  if (t == LUA_TSTRING) {
    check_alpn_name(L, list);
    return lua_tostring(L, list);
  }
  if (t != LUA_TTABLE) luaL_error(L, "option alpn must be a string or a list");
  n = luaL_len(L, list);
  if (n < 1) luaL_error(L, "option alpn is an empty list");
  luaL_buffinit(L, &b);                       /* ..., list, [buffer] */
  for (i = 1; i <= n; i++) {
    if (i > 1) luaL_addchar(&b, ',');
    lua_geti(L, list, i);                     /* ..., list, [buffer], name */
    check_alpn_name(L, -1);
    luaL_addvalue(&b);                        /* ..., list, [buffer] */
  }
  luaL_pushresult(&b);                        /* ..., list, "a,b" */
  return lua_tostring(L, -1);
}

/* sni = { [name] = { cert =, key = } }: added to u->c; 0 + err on failure. */
static int add_sni(lua_State *L, lctx *u, char *err, size_t errlen) {
  if (lua_getfield(L, 1, "sni") == LUA_TNIL) return 1;
  luaL_checktype(L, -1, LUA_TTABLE);          /* ..., sni */
  lua_pushnil(L);
  while (lua_next(L, -2)) {                   /* ..., sni, name, entry */
    const char *cert, *key;
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TTABLE)
      luaL_error(L, "option sni must map names to {cert=, key=}");
    lua_getfield(L, -1, "cert");
    lua_getfield(L, -2, "key");               /* ..., name, entry, cert, key */
    if (lua_type(L, -2) != LUA_TSTRING ||
        (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING))
      luaL_error(L, "option sni: each entry needs cert= (and key=) file names");
    cert = lua_tostring(L, -2);
    key = lua_tostring(L, -1);                /* NULL: the key is in cert */
    if (!lx_tls_ctx_add_sni(u->c, lua_tostring(L, -4), cert, key, err, errlen))
      return 0;
    lua_pop(L, 3);                            /* ..., sni, name */
  }
  return 1;
}

static int push_failure(lua_State *L, const char *msg, const char *cond) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  lua_pushstring(L, cond);
  return 3;
}

/* core.tls_context(opts) */
static int l_tls_context(lua_State *L) {
  lx_tls_opts o;
  lctx *u;
  char err[LX_TLS_ERR_MAX];
  const char *mode, *maxv;
  int has_sni, ud;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  luaL_checkstack(L, 16, NULL);
  lx_tls_opts_default(&o);
  mode = opt_string(L, "mode");
  if (mode && strcmp(mode, "server") == 0) o.server = 1;
  else if (mode && strcmp(mode, "client") != 0)
    return luaL_error(L, "option mode must be \"client\" or \"server\"");
  o.cafile = opt_string(L, "cafile");
  o.cert = opt_string(L, "cert");
  o.key = opt_string(L, "key");
  o.domain = opt_string(L, "domain");
  o.insecure = opt_bool(L, "insecure");
  o.no_ems = opt_bool(L, "no_ems");
  lua_getfield(L, 1, "resumption");
  o.no_resumption = lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1);
  if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TBOOLEAN)
    return luaL_error(L, "option resumption must be a boolean");
  lua_pop(L, 1);
  o.alpn = opt_alpn(L);
  maxv = opt_string(L, "max_version");
  if (maxv && strcmp(maxv, "1.2") == 0) o.max_version = LX_TLS_1_2;
  else if (maxv && strcmp(maxv, "1.3") == 0) o.max_version = LX_TLS_1_3;
  else if (maxv) return luaL_error(L, "option max_version must be \"1.2\" or \"1.3\"");
  has_sni = lua_getfield(L, 1, "sni") != LUA_TNIL;
  lua_pop(L, 1);
  if (o.key && !o.cert) return luaL_error(L, "option key needs cert");
  if (has_sni && !o.server) return luaL_error(L, "option sni is for servers");
  if (o.server && !o.cert && !o.domain && !has_sni)
    return luaL_error(L, "a server context needs cert, domain or sni");

  u = lua_newuserdatauv(L, sizeof *u, 0);
  u->c = NULL;
  u->server = o.server;
  luaL_setmetatable(L, CTX_MT);
  ud = lua_gettop(L);
  u->c = lx_tls_ctx_new(&o, err, sizeof err);  /* owned by u from here */
  if (!u->c) return push_failure(L, err, "tls-failed");
  if (!add_sni(L, u, err, sizeof err)) {
    lx_tls_ctx_free(u->c);
    u->c = NULL;
    return push_failure(L, err, "tls-failed");
  }
  lua_settop(L, ud);
  return 1;
}

/* ctx:session([peer_domain [, ticket]]) -> session; uservalue 1 is ctx */
static int l_session(lua_State *L) {
  lctx *u = check_ctx(L, 1);
  size_t n = 0;
  const char *d = luaL_optlstring(L, 2, NULL, &n);
  lx_tls_ticket *k = lx_tls_ticket_from_lua(L, 3);
  lsession *s;
  if (!u->server && (!d || n == 0))
    return luaL_argerror(L, 2, "a client session needs the peer's domain");
  if (d && strlen(d) != n) return luaL_argerror(L, 2, "domain contains a zero byte");
  s = lua_newuserdatauv(L, sizeof *s, 1);
  s->t = NULL;
  luaL_setmetatable(L, SESSION_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  s->t = lx_tls_new(u->c, d);
  if (!s->t)
    return luaL_error(L, "cannot start TLS for \"%s\" (bad domain or out of memory)",
                      d ? d : "");
  if (k) lx_tls_offer(s->t, k);     /* refused when it is not for this one */
  return 1;
}

/* Pushes t's newest ticket, moved out, as a ticket userdata, or nil. The C
 * ticket is taken out only once the userdata that will own it exists, so
 * nothing leaks if that raises. For net.c's conn:tls_ticket too. */
int lx_tls_push_ticket(lua_State *L, struct lx_tls *t) {
  lticket *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->k = NULL;
  luaL_setmetatable(L, TICKET_MT);
  if (!(u->k = lx_tls_ticket_take(t))) lua_pushnil(L);
  return 1;
}

/* session:ticket() -> ticket | nil */
static int l_ticket(lua_State *L) { return lx_tls_push_ticket(L, check_session(L)); }

static int l_ticket_close(lua_State *L) {
  lticket *u = luaL_checkudata(L, 1, TICKET_MT);
  lx_tls_ticket_free(u->k);
  u->k = NULL;
  return 0;
}

static int l_ticket_tostring(lua_State *L) {
  lticket *u = luaL_checkudata(L, 1, TICKET_MT);
  lua_pushstring(L, u->k ? "lxmpp.tls_ticket" : "lxmpp.tls_ticket (closed)");
  return 1;
}

static int l_ctx_close(lua_State *L) {
  lctx *u = luaL_checkudata(L, 1, CTX_MT);
  lx_tls_ctx_free(u->c);        /* sessions keep their own reference */
  u->c = NULL;
  return 0;
}

static int session_failure(lua_State *L, lx_tls *t) {
  const char *cond, *msg = lx_tls_error(t, &cond);
  return push_failure(L, msg ? msg : "TLS failed", cond ? cond : "tls-failed");
}

static int l_recv(lua_State *L) {
  lx_tls *t = check_session(L);
  size_t n;
  const char *data = luaL_checklstring(L, 2, &n);
  if (!lx_tls_recv(t, data, n) || lx_tls_error(t, NULL)) return session_failure(L, t);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_handshake(lua_State *L) {
  lx_tls *t = check_session(L);
  switch (lx_tls_handshake(t)) {
  case LX_TLS_OK: lua_pushliteral(L, "done"); return 1;
  case LX_TLS_WANT: lua_pushliteral(L, "want"); return 1;
  default: return session_failure(L, t);
  }
}

static int l_send(lua_State *L) {
  lx_tls *t = check_session(L);
  size_t n;
  const char *data = luaL_checklstring(L, 2, &n);
  if (lx_tls_error(t, NULL)) return session_failure(L, t);
  if (!lx_tls_handshake_done(t)) return luaL_error(L, "TLS handshake not finished");
  if (lx_tls_send(t, data, n) != LX_TLS_OK) return session_failure(L, t);
  lua_pushboolean(L, 1);
  return 1;
}

/* read() -> all plaintext available now, and whether the peer closed. Data
 * decrypted before a failure is returned first; the failure comes next. */
static int l_read(lua_State *L) {
  lx_tls *t = check_session(L);
  luaL_Buffer b;
  size_t n;
  int st;
  luaL_buffinit(L, &b);
  do {
    char *p = luaL_prepbuffsize(&b, READ_CHUNK);
    st = lx_tls_read(t, p, READ_CHUNK, &n);
    luaL_addsize(&b, n);
  } while (st == LX_TLS_OK);
  luaL_pushresult(&b);
  if (st == LX_TLS_ERROR && lua_rawlen(L, -1) == 0) return session_failure(L, t);
  lua_pushboolean(L, st == LX_TLS_CLOSED);
  return 2;
}

static int l_take(lua_State *L) {
  lx_tls *t = check_session(L);
  size_t want = lx_tls_pending(t);
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, want);
  luaL_pushresultsize(&b, lx_tls_take(t, p, want));
  return 1;
}

static int l_shutdown(lua_State *L) {
  lua_pushboolean(L, lx_tls_shutdown(check_session(L)) == LX_TLS_OK);
  return 1;
}

static void set_string(lua_State *L, const char *k, const char *v) {
  if (!v) return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

static int l_info(lua_State *L) {
  lx_tls *t = check_session(L);
  char subject[1024];
  size_t n;
  const char *alpn = lx_tls_alpn(t, &n);
  lua_createtable(L, 0, 6);
  set_string(L, "version", lx_tls_version(t));
  set_string(L, "cipher", lx_tls_cipher(t));
  set_string(L, "server_name", lx_tls_server_name(t));
  if (alpn) {
    lua_pushlstring(L, alpn, n);
    lua_setfield(L, -2, "alpn");
  }
  if (lx_tls_peer_subject(t, subject, sizeof subject))
    set_string(L, "peer_subject", subject);
  lua_pushboolean(L, lx_tls_verified(t));
  lua_setfield(L, -2, "verified");
  lua_pushboolean(L, lx_tls_resumed(t));
  lua_setfield(L, -2, "resumed");
  return 1;
}

static int l_channel_binding(lua_State *L) {
  lx_tls *t = check_session(L);
  const char *type = luaL_checkstring(L, 2), *why;
  unsigned char out[LX_TLS_CB_MAX];
  size_t n;
  if (!lx_tls_channel_binding(t, type, out, &n, &why)) {
    lua_pushnil(L);
    lua_pushstring(L, why);
    return 2;
  }
  lua_pushlstring(L, (const char *)out, n);
  return 1;
}

static int l_session_close(lua_State *L) {
  lsession *s = luaL_checkudata(L, 1, SESSION_MT);
  lx_tls_free(s->t);
  s->t = NULL;
  return 0;
}

static int l_ctx_tostring(lua_State *L) {
  lctx *u = luaL_checkudata(L, 1, CTX_MT);
  lua_pushfstring(L, "lxmpp.tls_context (%s, %s)", u->server ? "server" : "client",
                  u->c ? "open" : "closed");
  return 1;
}

static int l_session_tostring(lua_State *L) {
  lsession *s = luaL_checkudata(L, 1, SESSION_MT);
  lua_pushfstring(L, "lxmpp.tls_session (%s)", !s->t ? "closed"
                  : lx_tls_error(s->t, NULL) ? "failed"
                  : lx_tls_handshake_done(s->t) ? "established" : "handshaking");
  return 1;
}

/* Creates metatable `name` with methods as __index and close as
 * __gc/__close. Stack: M -> M. */
void lx_open_tls(lua_State *L) {
  static const luaL_Reg ctx_methods[] = {
    {"session", l_session}, {"close", l_ctx_close}, {NULL, NULL}
  };
  static const luaL_Reg session_methods[] = {
    {"recv", l_recv}, {"handshake", l_handshake}, {"send", l_send},
    {"read", l_read}, {"take", l_take}, {"shutdown", l_shutdown},
    {"info", l_info}, {"channel_binding", l_channel_binding},
    {"ticket", l_ticket}, {"close", l_session_close}, {NULL, NULL}
  };
  static const luaL_Reg ticket_methods[] = {
    {"close", l_ticket_close}, {NULL, NULL}
  };
  /* module table on top */
  lx_class(L, CTX_MT, ctx_methods, l_ctx_close, l_ctx_close, l_ctx_tostring);
  lua_pop(L, 1);
  lx_class(L, SESSION_MT, session_methods, l_session_close, l_session_close,
           l_session_tostring);
  lua_pop(L, 1);
  lx_class(L, TICKET_MT, ticket_methods, l_ticket_close, l_ticket_close,
           l_ticket_tostring);
  lua_pop(L, 1);
  lua_pushcfunction(L, l_tls_context);
  lua_setfield(L, -2, "tls_context");
}
