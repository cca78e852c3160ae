/*
 * core.c - luaopen_lxmpp_core: assembles the C core from its bindings.
 * The only symbol this shared object exports (built with -fvisibility=hidden).
 */
#include "core.h"

#include <signal.h>

const char lx_stanza_mt_key = 0;

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

/* core.set_stanza_mt(mt): lxmpp.stanza hands its metatable to C once, so the
 * parser can give every element table it builds the same metatable. */
static int set_stanza_mt(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &lx_stanza_mt_key);
  return 0;
}

/* A write to a connection its peer reset must fail with EPIPE (a
 * "write-error" event), not kill the process with SIGPIPE: libuv writes
 * with write(2), and one client closing at the wrong moment would stop
 * the whole server. A handler the host application installed is kept. */
static void ignore_sigpipe(void) {
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL &&
      !(sa.sa_flags & SA_SIGINFO)) {
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
  }
}

LX_EXPORT int luaopen_lxmpp_core(lua_State *L);
int luaopen_lxmpp_core(lua_State *L) {
  luaL_checkversion(L);
  ignore_sigpipe();
  lua_newtable(L);
  lua_pushcfunction(L, set_stanza_mt);
  lua_setfield(L, -2, "set_stanza_mt");
  lx_open_stream(L);
  lx_open_serialize(L);
  lx_open_idn(L);
  lx_open_sasl(L);
  lx_open_loop(L);
  lx_open_signal(L);
  lx_open_net(L);
  lx_open_dns(L);
  lx_open_tls(L);
  lx_open_hash(L);
  return 1;
}
