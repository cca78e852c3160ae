/*
 * stream_lua.c - Lua binding of the stream parser engine (stream.c).
 *
 *   core.stream_parser(handlers, opts) -> parser
 *   parser:feed(bytes) -> true [, leftover] | nil, message, condition
 *   parser:reset()  parser:close()
 *   core.parse_element(xml [, opts]) -> stanza | nil, message, condition
 *
 * The engine suspends expat at each event, so this file turns the finished
 * tree into a Prosody-shaped table and calls the handler with expat idle: no
 * Lua runs inside expat, and a handler's error is caught here (lua_pcall),
 * stored, and raised only after the engine has returned (never inside expat).
 * The parser userdata owns its lx_stream; its uservalue 1 is the handlers
 * table. close() is safe twice and is also __gc/__close.
 */
#include "lx.h"
#include "core.h"
#include "luax.h"
#include "stream.h"

#include <string.h>

/* Registry key (its address) of the stanza metatable shared by the parser and
 * lxmpp.stanza; set by core.set_stanza_mt(mt). */
static const char stanza_mt_key = 0;

/* core.set_stanza_mt(mt): lxmpp.stanza hands its metatable to C once, so the
 * parser can give every element table it builds the same metatable. */
static int l_set_stanza_mt(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &stanza_mt_key);
  return 0;
}

#define PARSER_MT "lxmpp.stream_parser"

typedef struct parser {
  lx_stream *s;
  int busy;           /* inside feed(): handlers are running */
  int reset_req;      /* a handler called reset() during feed() */
  int close_req;      /* a handler called close() during feed() */
  int handler_failed; /* a handler raised an error; failed until reset */
  size_t leftover;    /* bytes of the fed buffer not parsed at reset_req */
} parser;

/* Upvalues of the closures that build trees: the key strings of build()
 * and the string cache */
#define UV_NKEYS 5

/* The string cache: element and attribute names, namespaces and short
 * attribute values repeat from stanza to stanza, and Lua would hash every
 * byte of each to intern it again. One cache per Lua state (a userdata in the
 * registry, also the fifth "key"), direct-mapped: slot i holds a string, as
 * uservalue i + 1 (which keeps it alive), with the words sc_key makes of it,
 * so a hit costs a multiply, a few word compares and a copy of the value.
 * It only holds strings Lua interns anyway (short ones: Lua's
 * LUAI_MAXSHORTLEN is 40), so what the tables hold is the same either way.
 * docs/performance.md has the measurements. */
#define SC_BITS 10
#define SC_N (1u << SC_BITS)
#define SC_MAXLEN 40

typedef struct sc_slot {
  uint64_t a, b;  /* the words sc_key made of the cached string */
  uint32_t len;   /* its length, 0 for an empty slot */
  uint32_t seen;  /* fingerprint of the last string missed here, or 0 */
  const char *p;  /* its bytes */
} sc_slot;

typedef struct strcache {
  sc_slot slot[SC_N];
} strcache;

static const char strcache_key = 0;

/* Two words of s[0..len), 0 < len <= SC_MAXLEN, that hold all of its bytes
 * when len <= 16, and the first and last 8 otherwise (namespaces share long
 * prefixes, names end differently). */
static void sc_key(const char *s, size_t len, uint64_t *a, uint64_t *b) {
  if (len >= 8) {
    memcpy(a, s, 8);
    memcpy(b, s + len - 8, 8);
  } else if (len >= 4) {
    uint32_t x, y;
    memcpy(&x, s, 4);
    memcpy(&y, s + len - 4, 4);
    *a = x;
    *b = y;
  } else {
    *a = (uint64_t)(unsigned char)s[0] |
         (uint64_t)(unsigned char)s[len / 2] << 8 |
         (uint64_t)(unsigned char)s[len - 1] << 16;
    *b = 0;
  }
}

/* What build() needs at hand: the tree, and the stack indexes of the key
 * strings "name", "attr", "tags", "xmlns" (keys .. keys + 3), of the string
 * cache (keys + 4) and of the metatable to give every element (or 0). */
typedef struct builder {
  const lx_tree *t;
  strcache *sc;
  int keys, mtidx;
} builder;

#ifdef __GNUC__
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

/* Whether x and y, both len > 16 bytes long, have the same bytes from 8 to
 * len - 8 (sc_key's words hold the rest). */
static int sc_same_middle(const char *x, const char *y, size_t len) {
  size_t o;
  uint64_t u, v;
  for (o = 8; o < len - 8; o += 8) {
    size_t at = o + 8 <= len - 8 ? o : len - 16;
    memcpy(&u, x + at, 8);
    memcpy(&v, y + at, 8);
    if (u != v) return 0;
  }
  return 1;
}

/* push_str's miss: pushes the string, and caches it if it is the second
 * string in a row to miss slot h with fingerprint fp. A string seen once
 * (an id, a time stamp) is not kept: in a generational collector, a young
 * string the cache points to survives and becomes old garbage when it is
 * replaced, which only a major collection frees. */
static NOINLINE void sc_miss(lua_State *L, const builder *b, const char *s,
                             uint32_t len, unsigned h, uint32_t fp,
                             uint64_t ka, uint64_t kb) {
  sc_slot *e = &b->sc->slot[h];
  const char *p = lua_pushlstring(L, s, len);
  if (e->seen != fp) {
    e->seen = fp;
    return;
  }
  e->p = p;
  e->a = ka;
  e->b = kb;
  e->len = len;
  e->seen = 0;
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, b->keys + 4, (int)h + 1);
}

/* Pushes s[0..len), from the cache when it is there. */
static void push_str(lua_State *L, const builder *b, uint32_t off,
                     uint32_t len) {
  const char *s = b->t->str + off;
  uint64_t ka, kb, m;
  unsigned h;
  const sc_slot *e;
  if (len - 1 >= SC_MAXLEN) {              /* not 1 .. SC_MAXLEN */
    lua_pushlstring(L, s, len);
    return;
  }
  sc_key(s, len, &ka, &kb);
  m = ((ka ^ len) * UINT64_C(0x9E3779B97F4A7C15)) ^
      (kb * UINT64_C(0xC2B2AE3D27D4EB4F));
  h = (unsigned)(m >> (64 - SC_BITS));
  e = &b->sc->slot[h];
  if (e->a == ka && e->b == kb && e->len == len &&
      (len <= 16 || sc_same_middle(e->p, s, len)))
    lua_getiuservalue(L, b->keys + 4, (int)h + 1);
  else
    sc_miss(L, b, s, len, h, (uint32_t)m | 1u, ka, kb);
}

/* Pushes the table for node idx and, recursively, its children; depth: of
 * idx below the root. Each level keeps 3 slots on the Lua stack (the element,
 * "tags", tags) and uses at most 4 more while it builds. */
static void build(lua_State *L, const builder *b, uint32_t idx,
                  unsigned depth) {
  const lx_tree *t = b->t;
  const lx_node *n = &t->nodes[idx];
  uint32_t c, i, nelem;
  int keys = b->keys;
  if (depth % 8 == 0) luaL_checkstack(L, 8 * 3 + 4, "stanza nested too deeply");

  lua_createtable(L, (int)n->nchild, 3);                  /* el */
  lua_pushvalue(L, keys);
  push_str(L, b, n->name, n->name_len);
  lua_rawset(L, -3);

  lua_pushvalue(L, keys + 1);
  lua_createtable(L, 0, (int)n->nattr + (n->ns != LX_NONE));  /* el, "attr", attr */
  for (i = 0; i < n->nattr; i++) {
    const lx_attr *a = &t->attrs[n->attr + i];
    push_str(L, b, a->key, a->key_len);
    push_str(L, b, a->val, a->val_len);
    lua_rawset(L, -3);
  }
  if (n->ns != LX_NONE) {
    lua_pushvalue(L, keys + 3);
    push_str(L, b, n->ns, n->ns_len);
    lua_rawset(L, -3);
  }
  lua_rawset(L, -3);                                        /* el */

  lua_pushvalue(L, keys + 2);
  lua_createtable(L, (int)n->nelem, 0);                     /* el, "tags", tags */
  for (c = n->first, i = 1, nelem = 1; c != LX_NONE;
       c = t->nodes[c].next, i++) {
    const lx_node *ch = &t->nodes[c];
    if (ch->is_text) {
      lua_pushlstring(L, t->str + ch->name, ch->name_len);
    } else {
      build(L, b, c, depth + 1);             /* el, "tags", tags, child */
      lua_pushvalue(L, -1);
      lua_rawseti(L, -3, nelem++);
    }
    lua_rawseti(L, -4, i);                   /* el[i] = text or child */
  }
  lua_rawset(L, -3);                                        /* el */
  if (b->mtidx) {
    lua_pushvalue(L, b->mtidx);
    lua_setmetatable(L, -2);
  }
}

/* Pushes the stanza metatable (or nil when lxmpp.stanza is not loaded). */
static int push_mt(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &stanza_mt_key) == LUA_TNIL) {
    lua_pop(L, 1);
    lua_getglobal(L, "require");                /* lxmpp.stanza sets it */
    lua_pushliteral(L, "lxmpp.stanza");
    lua_call(L, 1, 0);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &stanza_mt_key);
  }
  return lua_gettop(L);
}

static parser *check_parser(lua_State *L) {
  parser *p = luaL_checkudata(L, 1, PARSER_MT);
  if (!p->s) luaL_error(L, "stream parser is closed");
  return p;
}

static void free_parser(parser *p) {
  lx_stream_free(p->s);
  p->s = NULL;
}

static unsigned opt_uint(lua_State *L, int t, const char *k, unsigned dflt,
                         lua_Integer max) {
  lua_Integer v;
  int isnum;
  if (lua_getfield(L, t, k) == LUA_TNIL) {
    lua_pop(L, 1);
    return dflt;
  }
  v = lua_tointegerx(L, -1, &isnum);
  if (!isnum || v < 1 || v > max)
    luaL_error(L, "option %s must be an integer from 1 to %d", k, (int)max);
  lua_pop(L, 1);
  return (unsigned)v;
}

void lx_get_limits(lua_State *L, int t, lx_limits *lim) {
  lx_limits_default(lim);
  if (lua_isnoneornil(L, t)) return;
  luaL_checktype(L, t, LUA_TTABLE);
  lim->max_stanza_size = opt_uint(L, t, "max_stanza_size",
                                  (unsigned)lim->max_stanza_size, 1 << 30);
  lim->max_depth = opt_uint(L, t, "max_depth", lim->max_depth, 1024);
  lim->max_attrs = opt_uint(L, t, "max_attributes", lim->max_attrs, 1 << 20);
  lim->max_children = opt_uint(L, t, "max_children", lim->max_children, 1 << 24);
}

/* core.stream_parser(handlers, opts) */
static int l_stream_parser(lua_State *L) {
  lx_limits lim;
  parser *p;
  luaL_checktype(L, 1, LUA_TTABLE);
  lx_get_limits(L, 2, &lim);
  push_mt(L);                                 /* loads lxmpp.stanza early */
  lua_pop(L, 1);
  p = lua_newuserdatauv(L, sizeof *p, 1);
  memset(p, 0, sizeof *p);
  luaL_setmetatable(L, PARSER_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  p->s = lx_stream_new(LX_MODE_STREAM, &lim);
  if (!p->s) return luaL_error(L, "out of memory");
  return 1;
}

static int push_failure(lua_State *L, parser *p) {
  const char *cond, *msg = lx_stream_error(p->s, &cond);
  lua_pushnil(L);
  lua_pushstring(L, msg ? msg : "parser failed");
  lua_pushstring(L, cond ? cond : "undefined-condition");
  return 3;
}

/* Pushes the UV_NKEYS values build() needs: the key strings and the string
 * cache of this Lua state (made on first use). */
static void push_keys(lua_State *L) {
  lua_pushliteral(L, "name");
  lua_pushliteral(L, "attr");
  lua_pushliteral(L, "tags");
  lua_pushliteral(L, "xmlns");
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &strcache_key) == LUA_TNIL) {
    strcache *sc;
    lua_pop(L, 1);
    sc = lua_newuserdatauv(L, sizeof *sc, (int)SC_N);
    memset(sc, 0, sizeof *sc);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &strcache_key);
  }
}

int lx_push_event(lua_State *L, lx_stream *s, int ev, int keys) {
  lx_tree t;
  builder b;
  int top = lua_gettop(L);
  /* framed mode's <close/> carries attributes (see-other-uri, RFC 7395
   * §3.6.1); </stream:stream> carries nothing */
  int close_attrs = ev == LX_EV_CLOSE && lx_stream_framed(s);
  if (ev != LX_EV_OPEN && ev != LX_EV_STANZA && !close_attrs) return 0;
  luaL_checkstack(L, 12, "pushing a stanza");
  if (!keys) {
    push_keys(L);
    keys = top + 1;
  }
  lx_stream_tree(s, &t);
  b.t = &t;
  b.sc = lua_touserdata(L, keys + 4);
  b.keys = keys;
  b.mtidx = 0;
  if (ev != LX_EV_STANZA) {
    build(L, &b, 0, 0);                       /* ..., header or close */
    lua_getfield(L, -1, "attr");              /* ..., header, attr */
  } else {
    b.mtidx = push_mt(L);                     /* ..., mt */
    if (lua_isnil(L, b.mtidx)) b.mtidx = 0;
    build(L, &b, 0, 0);                       /* ..., mt, stanza */
  }
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
  return 1;
}

/* Calls handlers[key](value) with what the event carries. Stack: p ... */
static void deliver(lua_State *L, parser *p, int ev, int keys) {
  static const char *const names[] = {NULL, "stream_open", "stanza",
                                      "stream_close"};
  int top = lua_gettop(L);
  lua_getiuservalue(L, 1, 1);                 /* ..., handlers */
  if (lua_getfield(L, -1, names[ev]) == LUA_TNIL) {
    lua_settop(L, top);
    return;
  }                                           /* ..., handlers, fn */
  lua_call(L, lx_push_event(L, p->s, ev, keys), 0);
  lua_settop(L, top);
}

/* feed_loop(p, data): the event loop of feed(), run under one lua_pcall.
 * Between two lx_stream_next() calls expat is suspended and off the C stack,
 * so a handler's error unwinds through this loop only, never through expat.
 * Upvalues: the key strings used by build(). */
static int feed_loop(lua_State *L) {
  parser *p = lua_touserdata(L, 1);
  size_t len;
  const char *data = lua_tolstring(L, 2, &len);
  int keys = lua_gettop(L) + 1, i;
  for (i = 1; i <= UV_NKEYS; i++) lua_pushvalue(L, lua_upvalueindex(i));
  for (;;) {
    int ev = lx_stream_next(p->s);
    if (ev == LX_EV_MORE) break;
    if (ev == LX_EV_ERROR) return push_failure(L, p);
    deliver(L, p, ev, keys);
    if (p->reset_req || p->close_req) {
      size_t rest = p->reset_req ? p->leftover : 0;
      lua_pushboolean(L, 1);
      lua_pushlstring(L, data + len - rest, rest);
      return 2;
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* parser:feed(bytes): callbacks run, in order, before it returns. Returns
 * true; or true, leftover when a handler reset the parser (leftover: the
 * bytes after the element whose handler did it, never parsed); or nil,
 * message, condition on a violation. A handler's error is raised here, after
 * the engine returned, and leaves the parser failed until reset(). */
static int l_feed(lua_State *L) {
  parser *p = check_parser(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  int status;
  lua_settop(L, 2);
  if (p->busy) return luaL_error(L, "feed() called from one of its own handlers");
  if (p->handler_failed) {
    lua_pushnil(L);
    lua_pushliteral(L, "a handler raised an error; reset() the parser");
    lua_pushliteral(L, "undefined-condition");
    return 3;
  }
  p->busy = 1;
  p->reset_req = p->close_req = 0;
  lx_stream_feed(p->s, data, len, 0);
  lua_pushvalue(L, lua_upvalueindex(1));      /* p, data, feed_loop */
  lua_insert(L, 1);
  status = lua_pcall(L, 2, LUA_MULTRET, 0);
  p->busy = 0;
  if (status != LUA_OK && !p->reset_req && !p->close_req)
    p->handler_failed = 1;
  if (p->close_req) free_parser(p);
  if (status != LUA_OK) return lua_error(L);  /* the engine is idle now */
  return lua_gettop(L);
}

/* parser:reset(): forget the stream, for a restart. From a handler it also
 * stops the feed() in progress (see l_feed). */
static int l_reset(lua_State *L) {
  parser *p = check_parser(L);
  if (p->busy) {
    p->leftover = lx_stream_remaining(p->s);
    p->reset_req = 1;
  }
  p->handler_failed = 0;
  if (!lx_stream_reset(p->s)) return luaL_error(L, "out of memory");
  return 0;
}

static int l_close(lua_State *L) {
  parser *p = luaL_checkudata(L, 1, PARSER_MT);
  if (p->busy) p->close_req = 1;    /* freed when feed() returns */
  else free_parser(p);
  return 0;
}

/* parser:memory() -> bytes held by the engine (tree and buffered input) */
static int l_memory(lua_State *L) {
  parser *p = check_parser(L);
  lua_pushinteger(L, (lua_Integer)lx_stream_memory(p->s));
  return 1;
}

static int l_tostring(lua_State *L) {
  parser *p = luaL_checkudata(L, 1, PARSER_MT);
  lua_pushfstring(L, "lxmpp.stream_parser (%s)", p->s ? "open" : "closed");
  return 1;
}

/* core.parse_element(xml [, opts]): one complete element, or nil, message,
 * condition. Upvalue 1 is deliver's key strings' owner (the build closure). */
static int l_parse_element(lua_State *L) {
  size_t len;
  const char *xml = luaL_checklstring(L, 1, &len);
  lx_limits lim;
  lx_stream *s;
  int ev;
  lua_settop(L, 2);
  lx_get_limits(L, 2, &lim);
  if (lua_isnil(L, 2)) {
    /* no limits asked: take the whole string, as deep as lxmpp writes */
    if (lim.max_stanza_size < len) lim.max_stanza_size = len;
    lim.max_depth = LX_MAX_NEST;
    lim.max_attrs = 1u << 20;
    lim.max_children = 1u << 24;
  }
  s = lx_stream_new(LX_MODE_ELEMENT, &lim);
  if (!s) return luaL_error(L, "out of memory");
  lx_stream_feed(s, xml, len, 1);
  ev = lx_stream_next(s);
  if (ev == LX_EV_STANZA) ev = lx_stream_next(s) == LX_EV_ERROR ? LX_EV_ERROR
                                                                : LX_EV_STANZA;
  if (ev != LX_EV_STANZA) {
    const char *cond, *msg = lx_stream_error(s, &cond);
    lua_pushnil(L);
    lua_pushstring(L, msg ? msg : "no element found");
    lua_pushstring(L, cond ? cond : "not-well-formed");
    lx_stream_free(s);
    return 3;
  }
  /* build under the key-string upvalues via the builder closure */
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushlightuserdata(L, s);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    lx_stream_free(s);
    return lua_error(L);
  }
  lx_stream_free(s);
  return 1;
}

/* builder(lightuserdata stream) -> stanza: the tree of a finished element.
 * Upvalues: the key strings. */
static int build_tree(lua_State *L) {
  lx_stream *s = lua_touserdata(L, 1);
  int keys = lua_gettop(L) + 1, i;
  for (i = 1; i <= UV_NKEYS; i++) lua_pushvalue(L, lua_upvalueindex(i));
  return lx_push_event(L, s, LX_EV_STANZA, keys);
}

void lx_open_stream(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"reset", l_reset}, {"close", l_close}, {"memory", l_memory},
    {NULL, NULL}
  };
  /* module table on top */
  lua_pushcfunction(L, l_set_stanza_mt);
  lua_setfield(L, -2, "set_stanza_mt");
  lx_class(L, PARSER_MT, methods, l_close, l_close, l_tostring); /* M, mt */
  lua_getfield(L, -1, "__index");               /* M, mt, methods */
  push_keys(L);
  lua_pushcclosure(L, feed_loop, UV_NKEYS);     /* M, mt, methods, loop */
  lua_pushcclosure(L, l_feed, 1);               /* feed's upvalue: the loop */
  lua_setfield(L, -2, "feed");
  lua_pop(L, 2);                                /* M */
  lua_pushcfunction(L, l_stream_parser);
  lua_setfield(L, -2, "stream_parser");
  push_keys(L);
  lua_pushcclosure(L, build_tree, UV_NKEYS);
  lua_pushcclosure(L, l_parse_element, 1);
  lua_setfield(L, -2, "parse_element");
}
