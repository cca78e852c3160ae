/*
 * luax.c - generic Lua binding helpers; see luax.h.
 */
#include "lx.h"
#include "luax.h"

void lx_class(lua_State *L, const char *name, const luaL_Reg *methods,
              lua_CFunction gc, lua_CFunction close, lua_CFunction tostring) {
  if (!luaL_newmetatable(L, name)) return;        /* mt (already made) */
  if (methods) {
    lua_newtable(L);                              /* mt, methods */
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
  }
  if (gc) {
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
  }
  if (close) {
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__close");
  }
  if (tostring) {
    lua_pushcfunction(L, tostring);
    lua_setfield(L, -2, "__tostring");
  }
}
