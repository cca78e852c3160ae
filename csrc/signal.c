/*
 * signal.c - POSIX signals as events of the loop (libuv signal handles).
 *
 *   core.signal(name, target [, oneshot]) -> watcher
 *       watches a signal: each delivery dispatches ("signal", target, name)
 *       from the loop, never from the signal handler. oneshot: the kernel
 *       puts the default action back the moment the signal arrives
 *       (SA_RESETHAND, uv_signal_start_oneshot), so a second one kills the
 *       process even if Lua never gets to run again.
 *   watcher:close([restore])  stops watching; safe twice; also __close.
 *       When it was the last libuv watcher of that signal in the process,
 *       the disposition that was in effect before lxmpp watched the signal
 *       is put back (restore = false: leave the default action).
 *   watcher:active()          not closed (a oneshot that fired stays open)
 *   core.signal_name(s)  -> "int" | nil  ("INT", "SIGINT", "sigint", "int")
 *   core.signal_disposition(s) -> "default" | "ignore" | "handler"
 *   core.getpid()  core.kill(pid, s) -> true | nil, message, condition
 *
 * A watcher does not keep the loop alive (uv_unref): a program whose work
 * is done ends even though it still watches Ctrl-C. Ownership follows
 * loop.h: the userdata is pinned from start to close callback; the loop
 * closes what is still open when the state closes.
 */
#include "lx.h"
#include "loop.h"

#include <lauxlib.h>
#include <signal.h>
#include <string.h>
#include <strings.h>

#include "core.h"
#include "luax.h"

#define SIGNAL_MT "lxmpp.signal"

/* The signals a program may watch: not KILL/STOP (cannot be caught), not
 * PIPE (lxmpp ignores it, core.c), not the synchronous faults. */
static const struct { const char *name; int num; } SIGNALS[] = {
  {"hup", SIGHUP}, {"int", SIGINT}, {"quit", SIGQUIT}, {"term", SIGTERM},
  {"usr1", SIGUSR1}, {"usr2", SIGUSR2}, {"alrm", SIGALRM}, {"chld", SIGCHLD},
  {"cont", SIGCONT}, {"tstp", SIGTSTP}, {"ttin", SIGTTIN}, {"ttou", SIGTTOU},
  {"winch", SIGWINCH}, {NULL, 0}
};

static int find_signal(const char *s) {
  int i;
  if (strncasecmp(s, "sig", 3) == 0) s += 3;
  for (i = 0; SIGNALS[i].name; i++)
    if (strcasecmp(s, SIGNALS[i].name) == 0) return i;
  return -1;
}

/* The index in SIGNALS of argument idx; raises for an unknown name. */
static int check_signal(lua_State *L, int idx) {
  const char *s = luaL_checkstring(L, idx);
  int i = find_signal(s);
  if (i < 0) return luaL_argerror(L, idx, lua_pushfstring(L, "unknown signal '%s'", s));
  return i;
}

typedef struct sigwatch {
  lx_handle h;          /* first: see lx_handle_close */
  uv_signal_t s;
  int index;            /* in SIGNALS */
  int saver;            /* holds the disposition from before libuv took the signal */
  int restore;          /* put it back on close */
  struct sigaction saved;
} sigwatch;

static int same_action(const struct sigaction *a, const struct sigaction *b) {
  if ((a->sa_flags & SA_SIGINFO) != (b->sa_flags & SA_SIGINFO)) return 0;
  if (a->sa_flags & SA_SIGINFO) return a->sa_sigaction == b->sa_sigaction;
  return a->sa_handler == b->sa_handler;
}

static int is_default(const struct sigaction *a) {
  return !(a->sa_flags & SA_SIGINFO) && a->sa_handler == SIG_DFL;
}

/* uv_walk: hands the saved disposition of the closing watcher (arg) to
 * another open watcher of the same signal in this loop. */
static void pass_on(uv_handle_t *uvh, void *arg) {
  sigwatch *from = arg, *to;
  if (!from->saver || uvh->type != UV_SIGNAL || !uvh->data || uv_is_closing(uvh)) return;
  to = uvh->data;
  if (to == from || to->h.closed || to->index != from->index) return;
  to->saved = from->saved;
  to->saver = 1;
  from->saver = 0;
}

/* After libuv stopped watching (uv_close stops at once): if it let go of the
 * signal (no libuv watcher left, so the default action is back), the
 * disposition from before is put back; otherwise another lxmpp watcher of
 * this loop keeps it for later. Runs once. */
static void give_back(sigwatch *w) {
  struct sigaction cur;
  int signum = SIGNALS[w->index].num;
  if (!w->saver) return;
  if (sigaction(signum, NULL, &cur) != 0) {
    w->saver = 0;
    return;
  }
  if (is_default(&cur)) {
    w->saver = 0;
    if (w->restore) sigaction(signum, &w->saved, NULL);
  } else {
    uv_walk(&w->h.lp->uv, pass_on, w);
    w->saver = 0;
  }
}

static void on_closed(lx_handle *h) {
  give_back((sigwatch *)h);       /* when the loop closed it (state closing) */
}

/* Runs under lx_protected: pushes the event and dispatches it. */
static int deliver(lua_State *L) {
  sigwatch *w = lua_touserdata(L, 1);
  lx_loop *lp = w->h.lp;
  lua_settop(L, 0);
  if (!lx_handle_push(L, &w->h)) return 0;  /* w */
  lua_pushliteral(L, "signal");              /* w, "signal" */
  lua_getiuservalue(L, 1, 1);                /* w, "signal", target */
  lua_pushstring(L, SIGNALS[w->index].name); /* w, "signal", target, name */
  lua_remove(L, 1);
  lx_dispatch(lp, 3);
  return 0;
}

static void on_signal(uv_signal_t *s, int signum) {
  sigwatch *w = s->data;
  (void)signum;
  if (w->h.closed) return;
  lx_protected(w->h.lp, deliver, w);
}

/* core.signal(name, target [, oneshot]) -> watcher | nil, message */
static int l_signal(lua_State *L) {
  lx_loop *lp = lx_loop_get(L);
  int i = check_signal(L, 1);
  int oneshot = lua_toboolean(L, 3);
  int signum = SIGNALS[i].num, r;
  struct sigaction before, after;
  sigwatch *w;
  luaL_checkany(L, 2);
  w = lua_newuserdatauv(L, sizeof *w, 1);
  memset(w, 0, sizeof *w);
  w->h.closed = 1;                          /* until it is started */
  w->h.self_ref = LUA_NOREF;
  w->index = i;
  w->restore = 1;
  luaL_setmetatable(L, SIGNAL_MT);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  if (sigaction(signum, NULL, &before) != 0) memset(&before, 0, sizeof before);
  r = uv_signal_init(&lp->uv, &w->s);
  if (r != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "cannot watch SIG%s: %s", SIGNALS[i].name, uv_strerror(r));
    return 2;
  }
  w->s.data = w;
  lx_handle_pin(L, -1, &w->h, lp);
  w->h.on_close = on_closed;
  uv_unref((uv_handle_t *)&w->s);           /* never keeps the loop alive */
  r = oneshot ? uv_signal_start_oneshot(&w->s, on_signal, signum)
              : uv_signal_start(&w->s, on_signal, signum);
  if (r != 0) {
    lx_handle_close(&w->h, (uv_handle_t *)&w->s);
    lua_pushnil(L);
    lua_pushfstring(L, "cannot watch SIG%s: %s", SIGNALS[i].name, uv_strerror(r));
    return 2;
  }
  /* libuv replaced what was there: remember it, unless it was libuv's own
   * handler already (another watcher of this signal) */
  if (sigaction(signum, NULL, &after) == 0 && !same_action(&before, &after)) {
    w->saver = 1;
    w->saved = before;
  }
  return 1;
}

/* watcher:close([restore]) */
static int l_close(lua_State *L) {
  sigwatch *w = luaL_checkudata(L, 1, SIGNAL_MT);
  if (w->h.closed) return 0;
  if (lua_gettop(L) >= 2 && lua_isboolean(L, 2)) w->restore = lua_toboolean(L, 2);
  lx_handle_close(&w->h, (uv_handle_t *)&w->s);   /* libuv stops watching now */
  give_back(w);
  return 0;
}

static int l_gc_close(lua_State *L) {           /* __close(w, err): restores */
  sigwatch *w = luaL_checkudata(L, 1, SIGNAL_MT);
  if (w->h.closed) return 0;
  lx_handle_close(&w->h, (uv_handle_t *)&w->s);
  give_back(w);
  return 0;
}

static int l_active(lua_State *L) {
  sigwatch *w = luaL_checkudata(L, 1, SIGNAL_MT);
  lua_pushboolean(L, !w->h.closed);
  return 1;
}

static int l_signal_name(lua_State *L) {
  int i = find_signal(luaL_checkstring(L, 1));
  if (i < 0) lua_pushnil(L);
  else lua_pushstring(L, SIGNALS[i].name);
  return 1;
}

static int l_disposition(lua_State *L) {
  struct sigaction sa;
  int i = check_signal(L, 1);
  if (sigaction(SIGNALS[i].num, NULL, &sa) != 0) return luaL_error(L, "sigaction failed");
  if (is_default(&sa)) lua_pushliteral(L, "default");
  else if (!(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == SIG_IGN) lua_pushliteral(L, "ignore");
  else lua_pushliteral(L, "handler");
  return 1;
}

static int l_getpid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)uv_os_getpid());
  return 1;
}

/* core.kill(pid, name) -> true | nil, message, condition */
static int l_kill(lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  int i = check_signal(L, 2);
  int r;
  if (pid <= 0) return luaL_argerror(L, 1, "a process id (greater than 0)");
  r = uv_kill((int)pid, SIGNALS[i].num);
  if (r == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lua_pushfstring(L, "kill %d SIG%s: %s", (int)pid, SIGNALS[i].name, uv_strerror(r));
  lua_pushstring(L, r == UV_ESRCH ? "item-not-found" : r == UV_EPERM ? "forbidden" : "undefined-condition");
  return 3;
}

void lx_open_signal(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"signal", l_signal}, {"signal_name", l_signal_name},
    {"signal_disposition", l_disposition}, {"getpid", l_getpid}, {"kill", l_kill},
    {NULL, NULL}
  };
  static const luaL_Reg methods[] = {
    {"close", l_close}, {"active", l_active}, {NULL, NULL}
  };
  lx_class(L, SIGNAL_MT, methods, NULL, l_gc_close, NULL);
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
}
