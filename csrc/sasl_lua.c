/*
 * sasl_lua.c - Lua binding of the SASL engine (sasl.c).
 *
 *   core.sasl_choose(offered, caps) -> name, cb_type|nil, offers_plus
 *                                    | nil, reason
 *   core.sasl_client(opts) -> client | nil, message, condition
 *     client:step(challenge|nil) -> response | nil, message, condition
 *     client:finish(success_data|nil) -> true | nil, message, condition
 *     client:keys() -> table | nil       client:close()
 *   core.sasl_credentials(password, hash, iterations [, salt])
 *                                    -> creds | nil, message
 *   core.sasl_server(opts) -> server
 *     server:step(client_message) -> challenge, false | final, true
 *                                  | nil, message, condition [, server_error]
 *     server:username() -> name | nil    server:close()
 *   core.base64_encode(s)  core.base64_decode(s) -> s | nil, message
 *   core.saslprep(s [, strict]) -> s | nil, message
 *
 * Messages are raw bytes; base64 for XMPP (and "=" for an empty response)
 * is the caller's. Expected failures return nil, message, condition; wrong
 * argument types and calls out of order raise.
 *
 * Ownership: a client/server userdata owns its engine (freed, and wiped, by
 * close(), which is safe twice and is also __gc/__close); the engine is made
 * only after every option has been read, so nothing leaks when reading an
 * option raises. A server's uservalue 1 is its lookup function, called only
 * between two engine calls (the engine is idle), under lua_pcall: an error
 * in it fails the exchange and is raised after (never through C). Passwords
 * given as Lua strings live on in Lua's memory until collected, out of our
 * reach; cache client:keys() instead of the password where possible.
 */
#include "lx.h"
#include "core.h"
#include "luax.h"
#include "sasl.h"

#include <string.h>

#define CLIENT_MT "lxmpp.sasl_client"
#define SERVER_MT "lxmpp.sasl_server"
#define BOX_MT "lxmpp.sasl_secret"
#define MAX_LIST 64 /* entries read from a list argument */

/* Registry key (its address) of this state's random server secret, used when
 * sasl_server gets none: stable for the life of the Lua state. */
static const char secret_key = 0;

typedef struct client_ud {
  lx_sasl_client *c;
} client_ud;

typedef struct server_ud {
  lx_scram_server *s;
  int busy; /* the lookup function is running */
} server_ud;

/* ---- option helpers (all may raise; nothing is allocated yet) ------------ */

/* t[k] as a string (absent: p == NULL); anything else raises. The string
 * stays on the stack, so the pointer is valid until the caller returns. */
static lx_sasl_str opt_str(lua_State *L, int t, const char *k) {
  lx_sasl_str s = {NULL, 0};
  int ty = lua_getfield(L, t, k);
  if (ty == LUA_TNIL) {
    lua_pop(L, 1);
    return s;
  }
  if (ty != LUA_TSTRING) luaL_error(L, "option %s must be a string", k);
  s.p = lua_tolstring(L, -1, &s.len);
  return s;
}

static int opt_bool(lua_State *L, int t, const char *k) {
  int v, ty = lua_getfield(L, t, k);
  if (ty != LUA_TNIL && ty != LUA_TBOOLEAN)
    luaL_error(L, "option %s must be a boolean", k);
  v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

static unsigned long opt_count(lua_State *L, int t, const char *k,
                               unsigned long dflt) {
  lua_Integer v;
  int isnum;
  if (lua_getfield(L, t, k) == LUA_TNIL) {
    lua_pop(L, 1);
    return dflt;
  }
  v = lua_tointegerx(L, -1, &isnum);
  if (!isnum || v < LX_SASL_MIN_ITER || v > 0x7fffffff)
    luaL_error(L, "option %s must be an integer from %d to 2^31-1", k,
               LX_SASL_MIN_ITER);
  lua_pop(L, 1);
  return (unsigned long)v;
}

/* Reads list t[k] (or the value at t itself when k is NULL) into out. */
static size_t opt_list(lua_State *L, int t, const char *k, lx_sasl_str *out,
                       int *present) {
  size_t n = 0;
  lua_Integer i;
  int idx;
  if (k) lua_getfield(L, t, k);
  else lua_pushvalue(L, t);
  idx = lua_gettop(L);
  *present = !lua_isnil(L, idx);
  if (!*present) return 0;
  if (!lua_istable(L, idx)) luaL_error(L, "%s must be a list of strings",
                                       k ? k : "offered");
  for (i = 1; n < MAX_LIST; i++) {
    int ty = lua_rawgeti(L, idx, i);
    if (ty == LUA_TNIL) {
      lua_pop(L, 1);
      break;
    }
    if (ty != LUA_TSTRING)
      luaL_error(L, "%s must be a list of strings", k ? k : "offered");
    out[n].p = lua_tolstring(L, -1, &out[n].len); /* kept by the table */
    lua_pop(L, 1);
    n++;
  }
  return n; /* the list stays on the stack */
}

static int check_hash(lua_State *L, int idx) {
  size_t len;
  const char *h = luaL_checklstring(L, idx, &len);
  int hash = lx_sasl_hash_by_name(h, len);
  if (hash < 0) luaL_argerror(L, idx, "hash must be SHA-1, SHA-256 or SHA-512");
  return hash;
}

static void set_str(lua_State *L, const char *k, const void *p, size_t n) {
  lua_pushlstring(L, (const char *)p, n);
  lua_setfield(L, -2, k);
}

/* ---- sasl_choose --------------------------------------------------------- */

/* core.sasl_choose(offered, caps): the one mechanism to use (never a list:
 * after it fails there is no fallback), the channel binding type to use
 * with it (for -PLUS; for plain SCRAM the one that makes the client send
 * 'y'), and whether the server offers -PLUS (pass that to sasl_client). */
static int l_choose(lua_State *L) {
  lx_sasl_str offered[MAX_LIST], cbt[MAX_LIST], scbt[MAX_LIST];
  lx_sasl_caps caps;
  lx_sasl_choice ch;
  lx_sasl_str kh;
  int present;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  memset(&caps, 0, sizeof caps);
  caps.password = opt_bool(L, 2, "password");
  caps.tls = opt_bool(L, 2, "tls");
  caps.client_cert = opt_bool(L, 2, "client_cert");
  caps.anonymous = opt_bool(L, 2, "anonymous");
  kh = opt_str(L, 2, "keys_hash");
  caps.keys_hash = kh.p ? lx_sasl_hash_by_name(kh.p, kh.len) : -1;
  if (kh.p && caps.keys_hash < 0)
    return luaL_error(L, "keys_hash must be SHA-1, SHA-256 or SHA-512");
  caps.ncb_types = opt_list(L, 2, "cb_types", cbt, &present);
  caps.cb_types = cbt;
  caps.nserver_cb_types = opt_list(L, 2, "server_cb_types", scbt, &present);
  caps.server_cb_types = scbt;
  caps.server_cb_known = present;
  lx_sasl_choose(offered, opt_list(L, 1, NULL, offered, &present), &caps, &ch);
  if (ch.mech == LX_SASL_NONE) {
    lua_pushnil(L);
    lua_pushstring(L, ch.reason);
    return 2;
  }
  lua_pushstring(L, lx_sasl_mech_name(ch.mech));
  if (ch.cb_index >= 0)
    lua_pushlstring(L, cbt[ch.cb_index].p, cbt[ch.cb_index].len);
  else
    lua_pushnil(L);
  lua_pushboolean(L, ch.offers_plus);
  return 3;
}

/* ---- sasl_client --------------------------------------------------------- */

static client_ud *check_client(lua_State *L) {
  client_ud *u = luaL_checkudata(L, 1, CLIENT_MT);
  if (!u->c) luaL_error(L, "sasl client is closed");
  return u;
}

/* nil, message, condition from the client's error */
static int client_failure(lua_State *L, lx_sasl_client *c, int rc) {
  const char *cond, *msg = lx_sasl_client_error(c, &cond);
  if (rc == LX_SASL_MISUSE) return luaL_error(L, "sasl client: %s", msg);
  lua_pushnil(L);
  lua_pushstring(L, msg ? msg : "authentication failed");
  lua_pushstring(L, cond ? cond : "undefined-condition");
  return 3;
}

/* Reads opts.keys (a table from client:keys()) into *k. */
static int read_keys(lua_State *L, int t, lx_scram_keys *k) {
  lx_sasl_str salt, sp, ck, sk, h;
  size_t hl;
  int keys;
  memset(k, 0, sizeof *k);
  if (lua_getfield(L, t, "keys") == LUA_TNIL) return 0;
  if (!lua_istable(L, -1)) return luaL_error(L, "option keys must be a table");
  keys = lua_gettop(L);
  h = opt_str(L, keys, "hash");
  k->hash = h.p ? lx_sasl_hash_by_name(h.p, h.len) : -1;
  hl = lx_sasl_hash_len(k->hash);
  salt = opt_str(L, keys, "salt");
  sp = opt_str(L, keys, "salted_password");
  ck = opt_str(L, keys, "client_key");
  sk = opt_str(L, keys, "server_key");
  k->iterations = opt_count(L, keys, "iterations", 0);
  if (hl == 0 || !salt.p || salt.len == 0 || salt.len > LX_SASL_MAX_SALT ||
      k->iterations == 0)
    return luaL_error(L, "keys need hash, salt and iterations");
  memcpy(k->salt, salt.p, salt.len);
  k->salt_len = salt.len;
  if (sp.p && sp.len == hl) {
    memcpy(k->salted_password, sp.p, hl);
    k->have_salted = 1;
    if (!lx_scram_keys_complete(k)) return luaL_error(L, "crypto failure");
  } else if (ck.p && sk.p && ck.len == hl && sk.len == hl) {
    memcpy(k->client_key, ck.p, hl);
    memcpy(k->server_key, sk.p, hl);
  } else {
    return luaL_error(L, "keys need salted_password, or client_key and "
                         "server_key, of the hash's length");
  }
  return 1;
}

/* core.sasl_client{ mechanism=, username=, password=, keys=, authzid=,
 * trace=, cb_type=, cb_data=, server_offers_plus=, tls=, nonce=,
 * min_iterations=, max_iterations= } */
static int l_client(lua_State *L) {
  lx_sasl_client_opts o;
  lx_scram_keys keys;
  lx_sasl_str mech;
  client_ud *u;
  const char *err, *cond;
  int have_keys;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  memset(&o, 0, sizeof o);
  mech = opt_str(L, 1, "mechanism");
  if (!mech.p) return luaL_error(L, "option mechanism is required");
  o.mech = lx_sasl_mech_by_name(mech.p, mech.len);
  if (o.mech == LX_SASL_NONE)
    return luaL_error(L, "unsupported mechanism %s", mech.p);
  o.username = opt_str(L, 1, "username");
  o.password = opt_str(L, 1, "password");
  o.authzid = opt_str(L, 1, "authzid");
  o.trace = opt_str(L, 1, "trace");
  o.cb_type = opt_str(L, 1, "cb_type");
  o.cb_data = opt_str(L, 1, "cb_data");
  o.nonce = opt_str(L, 1, "nonce");
  o.server_offers_plus = opt_bool(L, 1, "server_offers_plus");
  o.tls = opt_bool(L, 1, "tls");
  o.min_iterations = opt_count(L, 1, "min_iterations", LX_SASL_MIN_ITER);
  o.max_iterations = opt_count(L, 1, "max_iterations", LX_SASL_MAX_ITER);
  if (o.min_iterations > o.max_iterations)
    return luaL_error(L, "min_iterations is above max_iterations");
  have_keys = read_keys(L, 1, &keys);
  o.keys = have_keys ? &keys : NULL;
  if ((o.mech == LX_SASL_PLAIN || lx_sasl_mech_hash(o.mech) >= 0) && !o.username.p) {
    lx_sasl_wipe(&keys, sizeof keys);
    return luaL_error(L, "option username is required for %s", mech.p);
  }
  if (lx_sasl_mech_plus(o.mech) && (!o.cb_type.p || !o.cb_data.p)) {
    lx_sasl_wipe(&keys, sizeof keys);
    return luaL_error(L, "%s needs cb_type and cb_data", mech.p);
  }
  u = lua_newuserdatauv(L, sizeof *u, 0);
  u->c = NULL;
  luaL_setmetatable(L, CLIENT_MT);
  u->c = lx_sasl_client_new(&o, &err, &cond);
  lx_sasl_wipe(&keys, sizeof keys);
  if (!u->c) {
    if (!cond) return luaL_error(L, "out of memory");
    lua_pushnil(L);
    lua_pushstring(L, err);
    lua_pushstring(L, cond);
    return 3;
  }
  return 1;
}

/* client:step(challenge) -> response; step(nil) (or no argument) gives the
 * initial response. */
static int l_client_step(lua_State *L) {
  client_ud *u = check_client(L);
  size_t len = 0;
  const char *in = luaL_optlstring(L, 2, NULL, &len), *out;
  size_t outlen;
  int rc = lx_sasl_client_step(u->c, in, len, &out, &outlen);
  if (rc != LX_SASL_OK) return client_failure(L, u->c, rc);
  lua_pushlstring(L, out, outlen);
  return 1;
}

/* client:finish(data): the server said <success/> (data: its additional
 * data, nil or "" for none). True only when the server proved itself. */
static int l_client_finish(lua_State *L) {
  client_ud *u = check_client(L);
  size_t len = 0;
  const char *in = luaL_optlstring(L, 2, NULL, &len);
  int rc = lx_sasl_client_finish(u->c, in, len);
  if (rc != LX_SASL_OK) return client_failure(L, u->c, rc);
  lua_pushboolean(L, 1);
  return 1;
}

/* client:keys() -> {hash, salt, iterations, salted_password?, client_key,
 * server_key} after a verified SCRAM exchange, else nil. Give the table
 * back as sasl_client{keys=...} to log in again without PBKDF2 or the
 * password. It logs in as the user: store it like a password. */
static int l_client_keys(lua_State *L) {
  client_ud *u = check_client(L);
  lx_scram_keys k;
  size_t hl;
  if (!lx_sasl_client_keys(u->c, &k)) {
    lua_pushnil(L);
    return 1;
  }
  hl = lx_sasl_hash_len(k.hash);
  lua_createtable(L, 0, 6);
  lua_pushstring(L, lx_sasl_hash_name(k.hash));
  lua_setfield(L, -2, "hash");
  set_str(L, "salt", k.salt, k.salt_len);
  lua_pushinteger(L, (lua_Integer)k.iterations);
  lua_setfield(L, -2, "iterations");
  if (k.have_salted) set_str(L, "salted_password", k.salted_password, hl);
  set_str(L, "client_key", k.client_key, hl);
  set_str(L, "server_key", k.server_key, hl);
  lx_sasl_wipe(&k, sizeof k);
  return 1;
}

static int l_client_close(lua_State *L) {
  client_ud *u = luaL_checkudata(L, 1, CLIENT_MT);
  lx_sasl_client_free(u->c);
  u->c = NULL;
  return 0;
}

/* ---- credentials --------------------------------------------------------- */

/* core.sasl_credentials(password, hash, iterations [, salt]) -> {hash, salt,
 * iterations, stored_key, server_key} (binary strings), or nil, message
 * when the password cannot be SASLprep'd. iterations: default 4096. */
static int l_credentials(lua_State *L) {
  size_t plen, slen = 0;
  const char *pw = luaL_checklstring(L, 1, &plen), *err;
  int hash = check_hash(L, 2);
  lua_Integer iter = luaL_optinteger(L, 3, LX_SASL_MIN_ITER);
  const char *salt = luaL_optlstring(L, 4, NULL, &slen);
  lx_scram_creds cr;
  size_t hl = lx_sasl_hash_len(hash);
  if (iter < LX_SASL_MIN_ITER || iter > 0x7fffffff)
    return luaL_argerror(L, 3, "iterations must be from 4096 to 2^31-1");
  if (salt && (slen == 0 || slen > LX_SASL_MAX_SALT))
    return luaL_argerror(L, 4, "salt must have 1 to 128 bytes");
  lua_createtable(L, 0, 5); /* made first: pushing cannot fail after */
  if (lx_scram_credentials(hash, pw, plen, (unsigned long)iter,
                           (const unsigned char *)salt, slen, &cr, &err) !=
      LX_SASL_OK) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushstring(L, lx_sasl_hash_name(hash));
  lua_setfield(L, -2, "hash");
  set_str(L, "salt", cr.salt, cr.salt_len);
  lua_pushinteger(L, iter);
  lua_setfield(L, -2, "iterations");
  set_str(L, "stored_key", cr.stored_key, hl);
  set_str(L, "server_key", cr.server_key, hl);
  lx_sasl_wipe(&cr, sizeof cr);
  return 1;
}

/* ---- sasl_server --------------------------------------------------------- */

static server_ud *check_server(lua_State *L) {
  server_ud *u = luaL_checkudata(L, 1, SERVER_MT);
  if (!u->s) luaL_error(L, "sasl server is closed");
  return u;
}

/* Pushes this state's server secret, making it on first use. */
static void push_secret(lua_State *L) {
  unsigned char r[32];
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &secret_key) == LUA_TSTRING) return;
  lua_pop(L, 1);
  if (lx_sasl_random(r, sizeof r) != 0)
    luaL_error(L, "the random generator failed");
  lua_pushlstring(L, (const char *)r, sizeof r);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &secret_key);
}

/* core.sasl_server{ mechanism=, lookup=function(username, hash) return creds
 * or nil end, cb_type=, cb_data= (or cb = {[type] = data, ...}),
 * offers_plus=, secret=, realm=, iterations=, nonce=, ssdp= }. Misuse raises.
 * ssdp: XEP-0474's h= value for the server-first message.
 * iterations: what your credentials use (unknown users claim it too). */
static int l_server(lua_State *L) {
  lx_scram_server_opts o;
  lx_sasl_cb cb[LX_SASL_MAX_CB];
  lx_sasl_str mech, t, d;
  server_ud *u;
  const char *err;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  memset(&o, 0, sizeof o);
  mech = opt_str(L, 1, "mechanism");
  if (!mech.p) return luaL_error(L, "option mechanism is required");
  o.mech = lx_sasl_mech_by_name(mech.p, mech.len);
  if (lx_sasl_mech_hash(o.mech) < 0)
    return luaL_error(L, "sasl_server supports SCRAM mechanisms, not %s", mech.p);
  if (lua_getfield(L, 1, "lookup") != LUA_TFUNCTION)
    return luaL_error(L, "option lookup must be a function");
  lua_pop(L, 1);
  t = opt_str(L, 1, "cb_type");
  d = opt_str(L, 1, "cb_data");
  if (t.p && d.p) {
    cb[0].type = t;
    cb[0].data = d;
    o.ncb = 1;
  } else if (t.p || d.p) {
    return luaL_error(L, "cb_type and cb_data go together");
  }
  if (lua_getfield(L, 1, "cb") == LUA_TTABLE) { /* stays on the stack */
    int tb = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, tb)) {
      if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "option cb maps type names to data strings");
      if (o.ncb == LX_SASL_MAX_CB)
        return luaL_error(L, "at most %d channel bindings", LX_SASL_MAX_CB);
      cb[o.ncb].type.p = lua_tolstring(L, -2, &cb[o.ncb].type.len);
      cb[o.ncb].data.p = lua_tolstring(L, -1, &cb[o.ncb].data.len);
      o.ncb++;
      lua_pop(L, 1);
    }
  } else if (!lua_isnil(L, -1)) {
    return luaL_error(L, "option cb must be a table");
  }
  o.cb = cb;
  o.offers_plus = opt_bool(L, 1, "offers_plus");
  o.realm = opt_str(L, 1, "realm");
  o.nonce = opt_str(L, 1, "nonce");
  o.ssdp = opt_str(L, 1, "ssdp");
  o.fake_iterations = opt_count(L, 1, "iterations", LX_SASL_MIN_ITER);
  o.secret = opt_str(L, 1, "secret");
  if (!o.secret.p) {
    push_secret(L);
    o.secret.p = lua_tolstring(L, -1, &o.secret.len);
  }
  u = lua_newuserdatauv(L, sizeof *u, 1);
  u->s = NULL;
  u->busy = 0;
  luaL_setmetatable(L, SERVER_MT);
  lua_getfield(L, 1, "lookup");
  lua_setiuservalue(L, -2, 1);
  u->s = lx_scram_server_new(&o, &err);
  if (!u->s) return luaL_error(L, "sasl_server: %s", err ? err : "out of memory");
  return 1;
}

/* Reads the lookup result at idx into *cr (fields as sasl_credentials
 * makes them). Returns 0 for nil/false (unknown user). */
static int read_creds(lua_State *L, int idx, lx_scram_creds *cr) {
  lx_sasl_str h, salt, st, sk;
  lua_Integer iter;
  int isnum;
  size_t hl;
  if (!lua_toboolean(L, idx)) return 0;
  if (!lua_istable(L, idx)) luaL_error(L, "lookup must return a table or nil");
  h = opt_str(L, idx, "hash");
  salt = opt_str(L, idx, "salt");
  st = opt_str(L, idx, "stored_key");
  sk = opt_str(L, idx, "server_key");
  lua_getfield(L, idx, "iterations");
  iter = lua_tointegerx(L, -1, &isnum);
  cr->hash = h.p ? lx_sasl_hash_by_name(h.p, h.len) : cr->hash;
  hl = lx_sasl_hash_len(cr->hash);
  if (!isnum || iter < 1 || iter > 0x7fffffff || !salt.p || salt.len == 0 ||
      salt.len > LX_SASL_MAX_SALT || !st.p || !sk.p || hl == 0)
    luaL_error(L, "credentials need salt, iterations, stored_key, server_key");
  if (st.len != hl || sk.len != hl) return 0; /* for another hash: none */
  memcpy(cr->salt, salt.p, salt.len);
  cr->salt_len = salt.len;
  cr->iterations = (unsigned long)iter;
  memcpy(cr->stored_key, st.p, hl);
  memcpy(cr->server_key, sk.p, hl);
  return 1;
}

/* Run under lua_pcall: lookup(username, hash) and the reading of what it
 * returns. Stack: creds*, have*, lookup, username, hash. */
static int call_lookup(lua_State *L) {
  lx_scram_creds *cr = lua_touserdata(L, 1);
  int *have = lua_touserdata(L, 2);
  lua_call(L, 2, 1);                        /* creds*, have*, result */
  *have = read_creds(L, 3, cr);
  return 0;
}

/* server:step(message) -> challenge, false | server-final, true (send it in
 * <success/>) | nil, message, condition [, server_error: the RFC 5802
 * server-error-value of a channel binding failure]. */
static int l_server_step(lua_State *L) {
  server_ud *u = check_server(L);
  size_t len, outlen, ulen;
  const char *in = luaL_checklstring(L, 2, &len), *out, *user;
  lx_scram_creds cr;
  int rc, have = 0, status;
  lua_settop(L, 2);
  if (u->busy) return luaL_error(L, "sasl server: step() from its own lookup");
  rc = lx_scram_server_step(u->s, in, len, &out, &outlen);
  if (rc == LX_SASL_NEED_CREDS) {
    memset(&cr, 0, sizeof cr);
    cr.hash = lx_scram_server_hash(u->s);
    user = lx_scram_server_username(u->s, &ulen);
    lua_pushcfunction(L, call_lookup);
    lua_pushlightuserdata(L, &cr);
    lua_pushlightuserdata(L, &have);
    lua_getiuservalue(L, 1, 1);
    lua_pushlstring(L, user, ulen);
    lua_pushstring(L, lx_sasl_hash_name(cr.hash));
    u->busy = 1;                   /* s, msg, call_lookup, cr, have, fn, u, h */
    status = lua_pcall(L, 5, 0, 0);
    u->busy = 0;
    if (status != LUA_OK) {        /* s, msg, err */
      lx_sasl_wipe(&cr, sizeof cr);
      if (u->s) lx_scram_server_abort(u->s, "credential lookup failed",
                                      "temporary-auth-failure");
      return lua_error(L);
    }
    if (!u->s) return luaL_error(L, "sasl server closed by its lookup");
    rc = lx_scram_server_creds(u->s, have ? &cr : NULL, &out, &outlen);
    lx_sasl_wipe(&cr, sizeof cr);
    if (rc == LX_SASL_OK) {
      lua_pushlstring(L, out, outlen);
      lua_pushboolean(L, 0);
      return 2;
    }
  }
  if (rc == LX_SASL_SUCCESS) {
    lua_pushlstring(L, out, outlen);
    lua_pushboolean(L, 1);
    return 2;
  } else {
    const char *cond, *msg = lx_scram_server_error(u->s, &cond);
    if (rc == LX_SASL_MISUSE) return luaL_error(L, "sasl server: %s", msg);
    lua_pushnil(L);
    lua_pushstring(L, msg ? msg : "authentication failed");
    lua_pushstring(L, cond ? cond : "undefined-condition");
    if ((msg = lx_scram_server_error_value(u->s)) != NULL) {
      lua_pushstring(L, msg);
      return 4;
    }
    return 3;
  }
}

/* server:username() -> the authenticated (SASLprep'd) username, or nil
 * before success. */
static int l_server_username(lua_State *L) {
  server_ud *u = check_server(L);
  size_t len;
  const char *user = lx_scram_server_user(u->s, &len);
  if (user) lua_pushlstring(L, user, len);
  else lua_pushnil(L);
  return 1;
}

static int l_server_close(lua_State *L) {
  server_ud *u = luaL_checkudata(L, 1, SERVER_MT);
  lx_scram_server_free(u->s);
  u->s = NULL;
  return 0;
}

/* ---- codecs -------------------------------------------------------------- */

static int l_b64_encode(lua_State *L) {
  size_t len, n;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
  luaL_Buffer b;
  char *p;
  if (len > ((size_t)-1 / 4) * 3 - 3) return luaL_error(L, "string too long");
  n = lx_b64_encoded_len(len);
  p = luaL_buffinitsize(L, &b, n);
  lx_b64_encode(s, len, p);
  luaL_pushresultsize(&b, n);
  return 1;
}

/* base64_decode(s) -> bytes | nil, message (strict: see sasl.h) */
static int l_b64_decode(lua_State *L) {
  size_t len, n = 0;
  const char *s = luaL_checklstring(L, 1, &len);
  luaL_Buffer b;
  unsigned char *p = (unsigned char *)luaL_buffinitsize(L, &b, len / 4 * 3 + 1);
  if (lx_b64_decode(s, len, p, &n) != 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "invalid base64");
    return 2;
  }
  luaL_pushresultsize(&b, n);
  return 1;
}

/* A C string holding a secret, owned by a userdata until it is pushed:
 * if pushing raises, __gc still wipes and frees it (owned first). */
typedef struct secret_box {
  char *p;
  size_t len;
} secret_box;

static int l_box_gc(lua_State *L) {
  secret_box *b = luaL_checkudata(L, 1, BOX_MT);
  lx_sasl_free_secret(b->p, b->len);
  b->p = NULL;
  return 0;
}

/* saslprep(s [, strict]) -> prepared | nil, message. strict: refuse
 * unassigned code points (for stored strings). */
static int l_saslprep(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len), *err;
  int strict = lua_toboolean(L, 2);
  secret_box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->p = NULL;
  b->len = 0;
  luaL_setmetatable(L, BOX_MT);
  err = lx_saslprep(s, len, strict, &b->p, &b->len);
  if (err) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushlstring(L, b->p, b->len);
  lx_sasl_free_secret(b->p, b->len);
  b->p = NULL;
  return 1;
}

/* Adds the functions above to the module table on top of the stack (stack
 * effect: none); the metatables go to the registry. */
void lx_open_sasl(lua_State *L) {
  static const luaL_Reg client_methods[] = {
    {"step", l_client_step}, {"finish", l_client_finish},
    {"keys", l_client_keys}, {"close", l_client_close}, {NULL, NULL}
  };
  static const luaL_Reg server_methods[] = {
    {"step", l_server_step}, {"username", l_server_username},
    {"close", l_server_close}, {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"sasl_choose", l_choose}, {"sasl_client", l_client},
    {"sasl_credentials", l_credentials}, {"sasl_server", l_server},
    {"base64_encode", l_b64_encode}, {"base64_decode", l_b64_decode},
    {"saslprep", l_saslprep}, {NULL, NULL}
  };
  /* module table on top */
  lx_class(L, CLIENT_MT, client_methods, l_client_close, l_client_close, NULL);
  lx_class(L, SERVER_MT, server_methods, l_server_close, l_server_close, NULL);
  lx_class(L, BOX_MT, NULL, l_box_gc, NULL, NULL);
  lua_pop(L, 3);                               /* M */
  luaL_setfuncs(L, funcs, 0);
}
