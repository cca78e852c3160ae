/*
 * core.c - luaopen_lxmpp_core: assembles the C core from its bindings.
 * The only symbol this shared object exports (LX_API; every other name is
 * hidden, see lx.h). core.c calls the bindings' lx_open_*; nothing calls
 * back into it.
 */
#include "lx.h"
#include "core.h"

#include <signal.h>

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

LX_API int luaopen_lxmpp_core(lua_State *L);
int luaopen_lxmpp_core(lua_State *L) {
  luaL_checkversion(L);
  ignore_sigpipe();
  lua_newtable(L);
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
  lx_open_file(L);
  return 1;
}
