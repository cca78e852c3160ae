/*
 * serialize_lua.c - stanza tables to XML, and the validity checks the
 * stanza builders use.
 *
 *   core.serialize(stanza [, ns]) -> string   (raises on anything that isn't XML)
 *     ns: the namespace of the top element when its attr has no xmlns,
 *     declared on it (a stanza as its own document: RFC 7395 §3.3.3,
 *     XEP-0206 §8); its children inherit it as usual
 *   core.valid_name(s)  core.valid_attr_name(s)  core.valid_text(s) -> boolean
 *   core.xml_escape(s) -> s escaped for text and attribute values
 *
 * The walk reads tables raw (no metamethods run), so no Lua code runs while
 * the output buffer is being filled. That buffer belongs to a userdata kept
 * as an upvalue and reused across calls; a raised error leaves it owned.
 */
#include "lx.h"
#include "core.h"
#include "serialize.h"
#include "xmlchar.h"

#include <string.h>

#define KEEP_BUF 65536  /* a bigger buffer is released after use */

/* upvalues of serialize: the buffer, then interned key strings */
enum { UV_BUF = 1, UV_NAME, UV_ATTR, UV_XMLNS };

/* The reused output state, owned by a userdata upvalue. */
typedef struct out_state {
  lx_buf b;
  lx_nsscope sc;
} out_state;

typedef struct walk {
  lua_State *L;
  lx_buf *b;
  lx_nsscope *sc;
  int depth;
  /* Namespace amplification (output stays proportional to input):
   * xmlns is written where an element's namespace differs from its
   * parent's, so a stanza alternating long namespaces down its tree would
   * repeat them. Past NS_BUDGET bytes of such declarations the walk stops
   * (overflow) and starts again hoisting: every namespace is then declared
   * once, as a prefix on the top element. */
  size_t nsbytes;
  int overflow, hoist;
  const char *top_ns;
  size_t top_len;
  const char *dflt;           /* the top element's namespace when it has none */
  size_t dflt_len;
} walk;

#define NS_BUDGET 16384

static out_state *get_state(lua_State *L) {
  out_state *o = lua_touserdata(L, lua_upvalueindex(UV_BUF));
  o->b.len = 0;
  o->sc.n = 0;
  o->sc.next_id = 0;
  return o;
}

static lx_buf *get_buf(lua_State *L) {
  return &get_state(L)->b;
}

static int buf_gc(lua_State *L) {
  out_state *o = lua_touserdata(L, 1);
  lx_buf_free(&o->b);
  lx_nsscope_free(&o->sc);
  return 0;
}

static void check(walk *w, int r, const char *what, const char *name) {
  if (r == 1) return;
  if (r < 0) luaL_error(w->L, "out of memory");
  luaL_error(w->L, "cannot serialize %s of <%s>: invalid UTF-8, a character "
             "not allowed in XML, or an invalid name", what, name);
}

static int same_ns(const char *a, size_t alen, const char *b, size_t blen) {
  return a == b || (a && b && alen == blen && memcmp(a, b, alen) == 0);
}

/* The element table at idx: its name (checked), and its explicit xmlns
 * (NULL if none), leaving name, attr (or nil) on the stack. */
static const char *element_head(walk *w, int el, size_t *nlen, const char **ns,
                                size_t *nslen) {
  lua_State *L = w->L;
  const char *name;
  lua_pushvalue(L, lua_upvalueindex(UV_NAME));
  if (lua_rawget(L, el) != LUA_TSTRING)
    luaL_error(L, "cannot serialize: element without a string name");
  name = lua_tolstring(L, -1, nlen);
  if (!lx_xml_ncname_valid(name, *nlen))
    luaL_error(L, "cannot serialize: invalid element name");
  *ns = NULL;
  *nslen = 0;
  lua_pushvalue(L, lua_upvalueindex(UV_ATTR));
  if (lua_rawget(L, el) == LUA_TTABLE) {
    lua_pushvalue(L, lua_upvalueindex(UV_XMLNS));
    if (lua_rawget(L, -2) == LUA_TSTRING) {
      *ns = lua_tolstring(L, -1, nslen);       /* reachable via attr */
    } else if (!lua_isnil(L, -1)) {
      luaL_error(L, "cannot serialize: xmlns of <%s> is not a string", name);
    }
    lua_pop(L, 1);
  } else if (!lua_isnil(L, -1)) {
    luaL_error(L, "cannot serialize: attr of <%s> is not a table", name);
  }
  if (!*ns && w->depth == 1 && w->dflt) {
    *ns = w->dflt;
    *nslen = w->dflt_len;
  }
  return name;
}

/* Hoisting, first step: binds every namespace an element below the top
 * uses (other than the top's) to a prefix, in tree order. */
static void collect(walk *w, const char *parent_ns, size_t parent_len) {
  lua_State *L = w->L;
  int el = lua_gettop(L);
  size_t nlen, nslen;
  const char *ns;
  lua_Integer i, n;
  if (++w->depth > LX_MAX_NEST)
    luaL_error(L, "stanza nested too deeply (or a cycle)");
  luaL_checkstack(L, 8, "stanza nested too deeply");
  element_head(w, el, &nlen, &ns, &nslen);
  if (!ns) {
    ns = parent_ns;
    nslen = parent_len;
  }
  if (w->depth > 1 && ns && !same_ns(ns, nslen, w->top_ns, w->top_len) &&
      !lx_nsscope_find(w->sc, ns, nslen)) {
    if (lx_ns_reserved(ns, nslen))
      luaL_error(L, "cannot serialize xmlns: a reserved namespace");
    if (!lx_nsscope_add(w->sc, ns, nslen)) luaL_error(L, "out of memory");
  }
  n = (lua_Integer)lua_rawlen(L, el);
  for (i = 1; i <= n; i++) {
    if (lua_rawgeti(L, el, i) == LUA_TTABLE) collect(w, ns, nslen);
    lua_pop(L, 1);
  }
  lua_settop(L, el);
  w->depth--;
}

/* "<" or "</", then the element's name, with its hoisted prefix if any. */
static void put_name(walk *w, const char *open, unsigned id, const char *name,
                     size_t nlen) {
  char pfx[24];
  int plen = id ? snprintf(pfx, sizeof pfx, "lxns%u:", id) : 0;
  if (!lx_buf_put(w->b, open, strlen(open)) ||
      !lx_buf_put(w->b, pfx, (size_t)plen) || !lx_buf_put(w->b, name, nlen))
    luaL_error(w->L, "out of memory");
}

/* Serializes the stanza table at the top of the stack (left there).
 * parent_ns: the namespace its children inherit around it (NULL at the
 * top). */
static void ser(walk *w, const char *parent_ns, size_t parent_len) {
  lua_State *L = w->L;
  int el = lua_gettop(L), at;
  size_t nlen, nslen = 0;
  const char *name, *ns = NULL;
  lua_Integer i, n;
  size_t mark = w->sc->n;
  unsigned id = 0;

  if (++w->depth > LX_MAX_NEST)      /* a cycle, or abuse: C stacks end */
    luaL_error(L, "stanza nested too deeply (or a cycle)");
  luaL_checkstack(L, 8, "stanza nested too deeply");
  name = element_head(w, el, &nlen, &ns, &nslen);   /* el, name, attr */
  at = lua_istable(L, -1) ? lua_gettop(L) : 0;
  if (w->hoist && w->depth > 1) {
    const char *logical = ns ? ns : parent_ns;
    size_t llen = ns ? nslen : parent_len;
    if (logical && !same_ns(logical, llen, w->top_ns, w->top_len))
      id = lx_nsscope_find(w->sc, logical, llen);
  }
  put_name(w, "<", id, name, nlen);
  if (w->hoist && w->depth == 1) {
    size_t k;
    if (ns) check(w, lx_write_attr(w->b, "xmlns", 5, ns, nslen, w->sc), "xmlns", name);
    for (k = 0; k < w->sc->n; k++) {            /* every hoisted prefix */
      char pfx[32];
      int plen = snprintf(pfx, sizeof pfx, " xmlns:lxns%u='", w->sc->e[k].id);
      if (!lx_buf_put(w->b, pfx, (size_t)plen)) luaL_error(L, "out of memory");
      check(w, lx_escape_attr(w->b, w->sc->e[k].uri, w->sc->e[k].len), "xmlns", name);
      if (!lx_buf_put(w->b, "'", 1)) luaL_error(L, "out of memory");
    }
    mark = w->sc->n;
  } else if (!w->hoist && ns &&
             (!parent_ns || parent_len != nslen || memcmp(parent_ns, ns, nslen))) {
    check(w, lx_write_attr(w->b, "xmlns", 5, ns, nslen, w->sc), "xmlns", name);
    w->nsbytes += nslen;
    if (w->nsbytes > NS_BUDGET) w->overflow = 1;
  }
  if (at) {
    lua_pushnil(L);
    while (lua_next(L, at)) {                  /* el, name, attr, k, v */
      size_t klen, vlen;
      const char *k, *v;
      if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "cannot serialize: attributes of <%s> must be strings", name);
      k = lua_tolstring(L, -2, &klen);
      v = lua_tolstring(L, -1, &vlen);
      if (!(klen == 5 && memcmp(k, "xmlns", 5) == 0)) {
        /* the xml: spelling and the namespaced spelling of one attribute */
        if (klen > 4 && memcmp(k, "xml:", 4) == 0) {
          lua_pushfstring(L, "http://www.w3.org/XML/1998/namespace\1%s", k + 4);
          if (lua_rawget(L, at) != LUA_TNIL)
            luaL_error(L, "cannot serialize: duplicate attribute %s", k);
          lua_pop(L, 1);
        }
        check(w, lx_write_attr(w->b, k, klen, v, vlen, w->sc), "an attribute",
              name);
      }
      lua_pop(L, 1);
    }
  }
  if (!ns) {
    ns = parent_ns;
    nslen = parent_len;
  }

  n = (lua_Integer)lua_rawlen(L, el);
  if (n == 0) {
    check(w, lx_buf_put(w->b, "/>", 2) ? 1 : -1, "", name);
  } else {
    check(w, lx_buf_put(w->b, ">", 1) ? 1 : -1, "", name);
    for (i = 1; i <= n && !w->overflow; i++) {
      int t = lua_rawgeti(L, el, i);
      if (t == LUA_TSTRING) {
        size_t tlen;
        const char *txt = lua_tolstring(L, -1, &tlen);
        check(w, lx_escape_text(w->b, txt, tlen), "the text", name);
      } else if (t == LUA_TTABLE) {
        ser(w, ns, nslen);
      } else {
        luaL_error(L, "cannot serialize: child %d of <%s> is a %s", (int)i,
                   name, luaL_typename(L, -1));
      }
      lua_pop(L, 1);
    }
    put_name(w, "</", id, name, nlen);
    if (!lx_buf_put(w->b, ">", 1)) luaL_error(L, "out of memory");
  }
  lua_settop(L, el);
  w->sc->n = mark;                   /* its prefix declarations end with it */
  w->depth--;
}

static int l_serialize(lua_State *L) {
  walk w;
  out_state *o;
  size_t dlen = 0;
  const char *dflt;
  luaL_checktype(L, 1, LUA_TTABLE);
  dflt = luaL_optlstring(L, 2, NULL, &dlen);
  lua_settop(L, 2);                  /* dflt stays reachable at index 2 */
  o = get_state(L);
  memset(&w, 0, sizeof w);
  w.L = L;
  w.b = &o->b;
  w.sc = &o->sc;
  w.dflt = dflt;
  w.dflt_len = dlen;
  lua_pushvalue(L, 1);
  ser(&w, NULL, 0);
  if (w.overflow) {                  /* namespaces would repeat: hoist them */
    size_t nslen;
    o = get_state(L);
    w.hoist = 1;
    w.overflow = 0;
    w.depth = 1;                     /* as the top element (w.dflt applies) */
    element_head(&w, 3, &nslen, &w.top_ns, &w.top_len);
    w.depth = 0;
    lua_settop(L, 3);
    collect(&w, NULL, 0);
    ser(&w, NULL, 0);
  }
  lua_pushlstring(L, w.b->p, w.b->len);
  if (w.b->cap > KEEP_BUF) lx_buf_free(w.b);
  return 1;
}

static int l_valid_name(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_pushboolean(L, lx_xml_ncname_valid(s, len));
  return 1;
}

static int l_valid_attr_name(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_pushboolean(L, lx_xml_attr_name_valid(s, len));
  return 1;
}

static int l_valid_text(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_pushboolean(L, lx_xml_text_valid(s, len));
  return 1;
}

static int l_xml_escape(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lx_buf *b = get_buf(L);
  int r = lx_escape_attr(b, s, len);
  if (r < 0) return luaL_error(L, "out of memory");
  if (r == 0) return luaL_error(L, "invalid UTF-8 or a character not allowed in XML");
  lua_pushlstring(L, b->p, b->len);
  if (b->cap > KEEP_BUF) lx_buf_free(b);
  return 1;
}

void lx_open_serialize(lua_State *L) {
  out_state *o;
  /* module table on top */
  o = lua_newuserdatauv(L, sizeof *o, 0);      /* M, state */
  memset(o, 0, sizeof *o);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, buf_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_pushliteral(L, "name");
  lua_pushliteral(L, "attr");
  lua_pushliteral(L, "xmlns");
  lua_pushcclosure(L, l_serialize, 4);
  lua_setfield(L, -3, "serialize");
  lua_pushcclosure(L, l_xml_escape, 1);        /* M */
  lua_setfield(L, -2, "xml_escape");
  lua_pushcfunction(L, l_valid_name);
  lua_setfield(L, -2, "valid_name");
  lua_pushcfunction(L, l_valid_attr_name);
  lua_setfield(L, -2, "valid_attr_name");
  lua_pushcfunction(L, l_valid_text);
  lua_setfield(L, -2, "valid_text");
}
