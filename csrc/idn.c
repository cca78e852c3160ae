/*
 * idn.c - lxmpp.core bindings over the stringprep engine (prep.c): the
 * RFC 6122 stringprep profiles (nodeprep, resourceprep), nameprep, and
 * IDNA2003 ToASCII / ToUnicode for whole domains. lxmpp.jid builds JID
 * preparation on these. What the flags mean, and why, is in prep.c.
 *
 * Ownership: this file allocates nothing on the heap. Every argument check
 * that can raise (types) runs first; the engine then works on the argument
 * and on stack buffers, and the result is pushed with lua_pushlstring only
 * after the engine (and so libidn) has returned, so an out-of-memory error
 * raised by Lua can neither leak memory nor unwind through libidn.
 */
#include "lx.h"
#include "core.h"
#include "prep.h"

/* Pushes nil and a message (a static string: pushing it cannot leak). */
static int fail(lua_State *L, const char *message) {
  lua_pushnil(L);
  lua_pushstring(L, message);
  return 2;
}

/* The optional "strict" argument: absent or nil means false; anything but a
 * boolean is misuse and raises. */
static int opt_strict(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx))
    return 0;
  luaL_checktype(L, idx, LUA_TBOOLEAN);
  return lua_toboolean(L, idx);
}

typedef const char *(*idn_fn)(const char *in, size_t len, int strict,
                              char *out, size_t cap, size_t *outlen);

/* Checks the arguments (s [, strict]), runs fn or profile over them and
 * pushes the result: s | nil, message. */
static int run(lua_State *L, idn_fn fn, const Stringprep_profile *profile) {
  char out[LX_IDN_MAX_OUT];
  size_t len, outlen = 0;
  const char *s, *err;
  int strict = opt_strict(L, 2);
  luaL_checktype(L, 1, LUA_TSTRING);
  s = lua_tolstring(L, 1, &len);
  err = fn ? fn(s, len, strict, out, sizeof out, &outlen)
           : lx_idn_prep(s, len, strict, profile, out, sizeof out, &outlen);
  if (err != NULL)
    return fail(L, err);
  lua_pushlstring(L, out, outlen);
  return 1;
}

/* core.nodeprep(s [, strict]): RFC 6122 Nodeprep (the localpart). */
static int l_nodeprep(lua_State *L) {
  return run(L, NULL, stringprep_xmpp_nodeprep);
}

/* core.nameprep(s [, strict]): RFC 3491 Nameprep (the domainpart). */
static int l_nameprep(lua_State *L) {
  return run(L, NULL, stringprep_nameprep);
}

/* core.resourceprep(s [, strict]): RFC 6122 Resourceprep (the resourcepart). */
static int l_resourceprep(lua_State *L) {
  return run(L, NULL, stringprep_xmpp_resourceprep);
}

/* core.to_ascii(domain [, strict]) -> ASCII domain | nil, message */
static int l_to_ascii(lua_State *L) {
  return run(L, lx_idn_to_ascii, NULL);
}

/* core.to_unicode(domain [, strict]) -> Unicode domain | nil, message */
static int l_to_unicode(lua_State *L) {
  return run(L, lx_idn_to_unicode, NULL);
}

static const luaL_Reg idn_funcs[] = {
  {"nodeprep", l_nodeprep},
  {"nameprep", l_nameprep},
  {"resourceprep", l_resourceprep},
  {"to_ascii", l_to_ascii},
  {"to_unicode", l_to_unicode},
  {NULL, NULL}
};

/* Adds the functions above to the module table on top of the stack
 * (stack effect: none). They keep no state. */
void lx_open_idn(lua_State *L) {
  luaL_setfuncs(L, idn_funcs, 0);
}
