/*
 * luax.h - generic helpers every Lua binding of csrc/ shares (the *_lua.c
 * files, idn.c, loop.c, net.c, signal.c, dns.c). They depend on Lua only,
 * never on another file of the core, so no binding and no part of core.c
 * depends back on the files that use them.
 */
#ifndef LXMPP_LUAX_H
#define LXMPP_LUAX_H

#include "lx.h"

#include <lua.h>
#include <lauxlib.h>
#include "luacompat.h"   /* the 5.4 API on 5.1, LuaJIT and 5.3 */

LX_HIDDEN_BEGIN

/* Creates the metatable `name` for a userdata class, once: __index is a
 * table of `methods` (may be NULL), and __gc, __close, __tostring are set
 * when given. Pushes the metatable. */
void lx_class(lua_State *L, const char *name, const luaL_Reg *methods,
              lua_CFunction gc, lua_CFunction close, lua_CFunction tostring);

LX_HIDDEN_END

#endif
