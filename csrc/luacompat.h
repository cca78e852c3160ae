/*
 * luacompat.h - the Lua 5.4 C API the core is written against, on Lua 5.1,
 * LuaJIT 2.1 and 5.3 too (README.md, "Lua versions"). Included by luax.h
 * right after lua.h and lauxlib.h, so every binding sees one API.
 *
 * The core is written for 5.4; on older headers this file supplies what is
 * missing as static inline functions (lxc_*) and maps the 5.4 names onto
 * them with macros. A macro defined after lua.h shadows a function of the
 * same name for the code that follows, while the definitions below still
 * call the real one (they are written before their macro).
 *
 * LuaJIT reports LUA_VERSION_NUM 501 but has some of 5.2's API (LUA_OK,
 * luaL_setfuncs, luaL_setmetatable, lua_tointegerx...): plain 5.1 is told
 * apart by LUA_OK, which LuaJIT's lua.h defines and 5.1's does not.
 *
 * Uservalues: 5.4 gives a userdata n uservalues (lua_newuserdatauv); 5.3
 * gives one value, 5.1 one table (the environment). Below 5.4, a userdata
 * made with nuv > 0 gets a table as that one value, holding the n values
 * at 1..n, so lua_getiuservalue/lua_setiuservalue keep their 5.4 meaning.
 */
#ifndef LXMPP_LUACOMPAT_H
#define LXMPP_LUACOMPAT_H

#include <lua.h>
#include <lauxlib.h>
#include <math.h>
#include <stddef.h>

#if LUA_VERSION_NUM < 501 || LUA_VERSION_NUM == 502 || LUA_VERSION_NUM > 504
#error "lxmpp.core builds with Lua 5.1, LuaJIT 2.1, Lua 5.3 or Lua 5.4"
#endif

#if LUA_VERSION_NUM == 501 && !defined(LUA_OK)
#define LXC_PLAIN51 1 /* PUC Lua 5.1, not LuaJIT */
#endif

/* ---- 5.1 and LuaJIT ---------------------------------------------------- */
#if LUA_VERSION_NUM == 501

#ifdef LXC_PLAIN51
#define LUA_OK 0

static inline void lxc_setfuncs(lua_State *L, const luaL_Reg *l, int nup) {
  luaL_checkstack(L, nup, "too many upvalues");
  for (; l->name != NULL; l++) {          /* table, up1..upn */
    int i;
    for (i = 0; i < nup; i++) lua_pushvalue(L, -nup);
    lua_pushcclosure(L, l->func, nup);
    lua_setfield(L, -(nup + 2), l->name);
  }
  lua_pop(L, nup);
}
#define luaL_setfuncs(L, l, nup) lxc_setfuncs(L, l, nup)

static inline void lxc_setmetatable(lua_State *L, const char *tname) {
  luaL_getmetatable(L, tname);
  lua_setmetatable(L, -2);
}
#define luaL_setmetatable(L, tname) lxc_setmetatable(L, tname)
#endif /* LXC_PLAIN51 */

static inline int lxc_absindex(lua_State *L, int i) {
  return (i > 0 || i <= LUA_REGISTRYINDEX) ? i : lua_gettop(L) + i + 1;
}

/* 5.3's getters return the type of the value they push */
static inline int lxc_getfield(lua_State *L, int i, const char *k) {
  lua_getfield(L, i, k);
  return lua_type(L, -1);
}
static inline int lxc_rawget(lua_State *L, int i) {
  lua_rawget(L, i);
  return lua_type(L, -1);
}
static inline int lxc_rawgeti(lua_State *L, int i, int n) {
  lua_rawgeti(L, i, n);
  return lua_type(L, -1);
}
static inline int lxc_gettable(lua_State *L, int i) {
  lua_gettable(L, i);
  return lua_type(L, -1);
}
static inline const char *lxc_pushlstring(lua_State *L, const char *s, size_t n) {
  lua_pushlstring(L, s, n);
  return lua_tostring(L, -1);
}
#define lua_getfield(L, i, k) lxc_getfield(L, i, k)
#define lua_rawget(L, i) lxc_rawget(L, i)
#define lua_rawgeti(L, i, n) lxc_rawgeti(L, i, (int)(n))
#define lua_gettable(L, i) lxc_gettable(L, i)
#define lua_pushlstring(L, s, n) lxc_pushlstring(L, s, n)

static inline int lxc_geti(lua_State *L, int i, lua_Integer n) {
  i = lxc_absindex(L, i);
  lua_pushinteger(L, n);
  return lxc_gettable(L, i);
}
#define lua_geti(L, i, n) lxc_geti(L, i, n)

static inline int lxc_rawgetp(lua_State *L, int i, const void *p) {
  i = lxc_absindex(L, i);
  lua_pushlightuserdata(L, (void *)(size_t)p);   /* (drops const for the key) */
  return lxc_rawget(L, i);
}
static inline void lxc_rawsetp(lua_State *L, int i, const void *p) {
  i = lxc_absindex(L, i);
  lua_pushlightuserdata(L, (void *)(size_t)p);   /* value, key */
  lua_insert(L, -2);                             /* key, value */
  lua_rawset(L, i);
}
#define lua_rawgetp(L, i, p) lxc_rawgetp(L, i, p)
#define lua_rawsetp(L, i, p) lxc_rawsetp(L, i, p)

#define lua_rawlen(L, i) lua_objlen(L, i)
/* (no __len on tables before 5.2, so the raw length is the length) */
#define luaL_len(L, i) ((lua_Integer)lua_objlen(L, i))
#define luaL_checkversion(L) ((void)(L))

/* Lua 5.1 keeps no main thread in its registry: a thread of our own, made
 * once per state and anchored there, serves the same purposes (a stack to
 * unref from and to call on when no Lua caller is running). Pushes it. */
#define LXC_MAIN_KEY "lxmpp.core main thread"
static inline void lxc_pushmainthread(lua_State *L) {
  if (lxc_getfield(L, LUA_REGISTRYINDEX, LXC_MAIN_KEY) == LUA_TTHREAD) return;
  lua_pop(L, 1);
  lua_newthread(L);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, LXC_MAIN_KEY);
}

/* Sized buffers: 5.1's luaL_Buffer holds LUAL_BUFFERSIZE bytes at a time,
 * so a sized buffer is a userdata left on the stack (as 5.4 leaves its box)
 * and copied into a string at the end. */
static inline char *lxc_buffinitsize(lua_State *L, luaL_Buffer *B, size_t sz) {
  luaL_buffinit(L, B);
  return (char *)lua_newuserdata(L, sz ? sz : 1);
}
static inline void lxc_pushresultsize(luaL_Buffer *B, size_t sz) {
  lua_State *L = B->L;
  lua_pushlstring(L, (const char *)lua_touserdata(L, -1), sz);
  lua_remove(L, -2);
}
#define luaL_buffinitsize(L, B, sz) lxc_buffinitsize(L, B, sz)
#define luaL_pushresultsize(B, sz) lxc_pushresultsize(B, sz)
/* luaL_prepbuffsize(B, sz) for sz <= LX_PREPBUFF_MAX */
#define luaL_prepbuffsize(B, sz) ((void)(sz), luaL_prepbuffer(B))
#define LX_PREPBUFF_MAX LUAL_BUFFERSIZE

#define LXC_GETUV(L, i) lua_getfenv(L, i)
#define LXC_SETUV(L, i) lua_setfenv(L, i)

#else /* ---- 5.3 and 5.4 ------------------------------------------------- */

static inline void lxc_pushmainthread(lua_State *L) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
}
#define LX_PREPBUFF_MAX ((size_t)-1)
#define LXC_GETUV(L, i) lua_getuservalue(L, i)
#define LXC_SETUV(L, i) lua_setuservalue(L, i)

#endif

/* ---- below 5.3: integers --------------------------------------------- */
#if LUA_VERSION_NUM < 503
/* A number is an integer when it has no fractional part and fits
 * lua_Integer (every number is a double here). */
static inline int lxc_num_is_int(lua_Number n) {
  return n == floor(n) && n >= -9007199254740992.0 && n <= 9007199254740992.0;
}
static inline int lxc_isinteger(lua_State *L, int i) {
  return lua_type(L, i) == LUA_TNUMBER && lxc_num_is_int(lua_tonumber(L, i));
}
/* 5.3's lua_tointegerx: integral numbers (and strings of them) only */
static inline lua_Integer lxc_tointegerx(lua_State *L, int i, int *isnum) {
  lua_Number n = lua_tonumber(L, i);
  int ok = (n != 0 || lua_isnumber(L, i)) && lxc_num_is_int(n);
  if (isnum) *isnum = ok;
  return ok ? (lua_Integer)n : 0;
}
/* 5.3's luaL_checkinteger: 1.5 is an error, not 1 */
static inline lua_Integer lxc_checkinteger(lua_State *L, int i) {
  int ok;
  lua_Integer v;
  luaL_checknumber(L, i);                     /* the type error first */
  v = lxc_tointegerx(L, i, &ok);
  if (!ok) luaL_argerror(L, i, "number has no integer representation");
  return v;
}
#define lua_isinteger(L, i) lxc_isinteger(L, i)
#define lua_tointegerx(L, i, isnum) lxc_tointegerx(L, i, isnum)
#define luaL_checkinteger(L, i) lxc_checkinteger(L, i)
#define luaL_optinteger(L, i, d) (lua_isnoneornil(L, i) ? (lua_Integer)(d) : lxc_checkinteger(L, i))
#endif

/* ---- below 5.4: uservalues -------------------------------------------- */
#if LUA_VERSION_NUM < 504
static inline void *lxc_newuserdatauv(lua_State *L, size_t sz, int nuv) {
  void *p = lua_newuserdata(L, sz);
  if (nuv > 0) {
    lua_createtable(L, nuv, 0);
    LXC_SETUV(L, -2);
  }
  return p;
}
/* pushes uservalue n of the userdata at i; returns its type (nil, and
 * LUA_TNONE, when the userdata has no uservalues) */
static inline int lxc_getiuservalue(lua_State *L, int i, int n) {
  LXC_GETUV(L, i);
  if (lua_type(L, -1) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_pushnil(L);
    return LUA_TNONE;
  }
  lua_rawgeti(L, -1, n);
  lua_remove(L, -2);
  return lua_type(L, -1);
}
/* pops a value into uservalue n of the userdata at i; 0 when it has none */
static inline int lxc_setiuservalue(lua_State *L, int i, int n) {
  LXC_GETUV(L, i);                              /* value, uvs */
  if (lua_type(L, -1) != LUA_TTABLE) {
    lua_pop(L, 2);
    return 0;
  }
  lua_insert(L, -2);                            /* uvs, value */
  lua_rawseti(L, -2, n);
  lua_pop(L, 1);
  return 1;
}
#define lua_newuserdatauv(L, sz, nuv) lxc_newuserdatauv(L, sz, nuv)
#define lua_getiuservalue(L, i, n) lxc_getiuservalue(L, i, n)
#define lua_setiuservalue(L, i, n) lxc_setiuservalue(L, i, n)
#endif

#endif
