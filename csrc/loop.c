/*
 * loop.c - the state's libuv loop, the C -> Lua dispatcher, and timers.
 *
 *   core.set_dispatcher(fn)      fn(kind, target, ...) for every C event
 *   core.loop_run(mode)          "once" | "nowait" -> alive
 *   core.loop_step(seconds)      one iteration waiting at most that long
 *   core.loop_alive()  core.loop_stop()  core.loop_handles()  core.now()
 *   core.timer(seconds, target)  one-shot: dispatches ("timer", target)
 *   timer:stop()                 safe twice; also its __close
 *
 * See loop.h for the ownership rules.
 */
#include "lx.h"
#include "loop.h"

#include <lauxlib.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "luax.h"

static const char loop_key = 0;
#define LOOP_MT "lxmpp.loop"
#define TIMER_MT "lxmpp.timer"

typedef struct loop_box {
  lx_loop *lp;
} loop_box;

/* ---- handles --------------------------------------------------------------- */

void lx_handle_pin(lua_State *L, int idx, lx_handle *h, lx_loop *lp) {
  h->lp = lp;
  h->closed = 0;
  h->on_close = NULL;
  lua_pushvalue(L, idx);
  h->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

static void on_handle_closed(uv_handle_t *uvh) {
  lx_handle *h = uvh->data;
  if (h->on_close) h->on_close(h);
  if (h->self_ref != LUA_NOREF) {
    /* from here on, Lua's GC may free the memory this handle lives in */
    luaL_unref(h->lp->main, LUA_REGISTRYINDEX, h->self_ref);
    h->self_ref = LUA_NOREF;
  }
}

void lx_handle_close(lx_handle *h, uv_handle_t *uvh) {
  if (h->closed) return;
  h->closed = 1;
  uvh->data = h;
  uv_close(uvh, on_handle_closed);
}

int lx_handle_push(lua_State *L, lx_handle *h) {
  if (h->self_ref == LUA_NOREF) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->self_ref);
  return 1;
}

/* ---- the loop ---------------------------------------------------------------- */

static void close_walk(uv_handle_t *uvh, void *arg) {
  (void)arg;
  if (!uv_is_closing(uvh)) {
    if (uvh->data) {
      lx_handle_close(uvh->data, uvh);
    } else {
      uv_close(uvh, NULL);     /* the loop's own step timer and prepare */
    }
  }
}

/* __gc of the loop box: the state is closing. Every handle is closed and the
 * loop run until their close callbacks are done; all handle userdata are
 * still allocated then (Lua runs every finalizer before freeing anything). */
static int loop_gc(lua_State *L) {
  loop_box *b = lua_touserdata(L, 1);
  lx_loop *lp = b->lp;
  if (!lp) return 0;
  b->lp = NULL;
  lp->closing = 1;
  uv_walk(&lp->uv, close_walk, NULL);
  /* uv_run returns at once while a uv_stop() is pending; each NOWAIT pass
   * clears it and runs close callbacks */
  while (uv_loop_close(&lp->uv) == UV_EBUSY) uv_run(&lp->uv, UV_RUN_NOWAIT);
  lx_net_loop_free(lp->net);
  free(lp);
  return 0;
}

lx_loop *lx_loop_get(lua_State *L) {
  loop_box *b;
  lx_loop *lp;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &loop_key) == LUA_TUSERDATA) {
    b = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return b->lp;
  }
  lua_pop(L, 1);
  b = lua_newuserdatauv(L, sizeof *b, 0);   /* owns lp from here on */
  b->lp = NULL;
  lx_class(L, LOOP_MT, NULL, loop_gc, NULL, NULL);
  lua_setmetatable(L, -2);
  lp = calloc(1, sizeof *lp);
  if (!lp) luaL_error(L, "out of memory");
  if (uv_loop_init(&lp->uv) != 0) {
    free(lp);
    luaL_error(L, "cannot create the event loop");
  }
  b->lp = lp;
  lxc_pushmainthread(L);   /* (luacompat.h: a thread of ours on 5.1) */
  lp->main = lua_tothread(L, -1);
  lua_pop(L, 1);
  lp->dispatcher = LUA_NOREF;
  lua_pushboolean(L, 0);
  lp->err_slot = luaL_ref(L, LUA_REGISTRYINDEX);
  lp->failed = 0;
  uv_timer_init(&lp->uv, &lp->step_timer);
  lp->step_timer.data = NULL;
  uv_unref((uv_handle_t *)&lp->step_timer); /* never keeps the loop alive */
  uv_prepare_init(&lp->uv, &lp->prepare);
  lp->prepare.data = NULL;
  uv_unref((uv_handle_t *)&lp->prepare);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &loop_key);
  return lp;
}

/* Keeps the error on top of lp->L's stack (popped) to be raised once
 * uv_run has returned, and stops the loop. */
static void keep_error(lx_loop *lp) {
  lua_rawseti(lp->L, LUA_REGISTRYINDEX, lp->err_slot);   /* an existing key */
  lp->failed = 1;
  uv_stop(&lp->uv);
}

int lx_dispatch(lx_loop *lp, int nargs) {
  lua_State *L = lp->L;
  int base;
  if (!L || lp->closing || lp->failed) {
    if (L) lua_pop(L, nargs);
    return 0;
  }
  base = lua_gettop(L) - nargs;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lp->dispatcher);
  lua_insert(L, base + 1);                  /* fn, args */
  if (lua_pcall(L, nargs, 0, 0) != LUA_OK) {
    keep_error(lp);
    return 0;
  }
  return 1;
}

int lx_protected(lx_loop *lp, lua_CFunction f, void *ud) {
  lua_State *L = lp->L;
  int r;
  if (!L || lp->closing || lp->failed) return 0;
#if LUA_VERSION_NUM == 501
  r = lua_cpcall(L, f, ud);   /* 5.1 and LuaJIT: pushing f allocates a closure */
#else
  lua_pushcfunction(L, f);    /* a light C function: nothing allocated */
  lua_pushlightuserdata(L, ud);
  r = lua_pcall(L, 1, 0, 0);
#endif
  if (r != LUA_OK) {
    keep_error(lp);
    return 0;
  }
  return 1;
}

static void on_prepare(uv_prepare_t *p) {
  lx_loop *lp = (lx_loop *)((char *)p - offsetof(lx_loop, prepare));
  while (lp->deferred) {
    lx_deferred *d = lp->deferred;
    lp->deferred = d->next;
    d->next = NULL;
    d->queued = 0;
    d->run(d);
  }
  uv_prepare_stop(p);
  uv_unref((uv_handle_t *)p);
}

void lx_defer(lx_loop *lp, lx_deferred *d) {
  if (d->queued) return;
  d->queued = 1;
  d->next = lp->deferred;
  lp->deferred = d;
  if (!lp->closing) {
    uv_ref((uv_handle_t *)&lp->prepare);     /* pending work keeps it alive */
    uv_prepare_start(&lp->prepare, on_prepare);
  }
}

void lx_undefer(lx_loop *lp, lx_deferred *d) {
  lx_deferred **pp;
  if (!d->queued) return;
  for (pp = &lp->deferred; *pp; pp = &(*pp)->next) {
    if (*pp == d) {
      *pp = d->next;
      break;
    }
  }
  d->next = NULL;
  d->queued = 0;
}

static int l_set_dispatcher(lua_State *L) {
  lx_loop *lp = lx_loop_get(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  luaL_unref(L, LUA_REGISTRYINDEX, lp->dispatcher);
  lp->dispatcher = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

/* Runs uv_run in mode with lp->L set; re-raises a dispatcher error. */
static int run(lua_State *L, lx_loop *lp, uv_run_mode mode) {
  lua_State *prev = lp->L;
  if (lp->dispatcher == LUA_NOREF)
    return luaL_error(L, "lxmpp: no dispatcher (load lxmpp.task)");
  if (prev) return luaL_error(L, "lxmpp: the loop is already running "
                              "(called from inside a callback?)");
  lp->L = L;
  uv_run(&lp->uv, mode);
  lp->L = prev;
  if (lp->failed) {
    lp->failed = 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, lp->err_slot);
    lua_pushboolean(L, 0);
    lua_rawseti(L, LUA_REGISTRYINDEX, lp->err_slot);    /* not kept alive */
    return lua_error(L);
  }
  lua_pushboolean(L, uv_loop_alive(&lp->uv));
  return 1;
}

static int l_loop_run(lua_State *L) {
  static const char *const modes[] = {"once", "nowait", NULL};
  lx_loop *lp = lx_loop_get(L);
  int m = luaL_checkoption(L, 1, "once", modes);
  return run(L, lp, m == 0 ? UV_RUN_ONCE : UV_RUN_NOWAIT);
}

static void on_step_timer(uv_timer_t *t) {
  (void)t;                                  /* only wakes uv_run up */
}

/* core.loop_step(seconds): one loop iteration that waits for an event at
 * most that long (0: never blocks). */
static int l_loop_step(lua_State *L) {
  lx_loop *lp = lx_loop_get(L);
  lua_Number secs = luaL_optnumber(L, 1, 0);
  int r;
  if (!(secs > 0)) return run(L, lp, UV_RUN_NOWAIT);
  if (secs > 86400.0 * 365) secs = 86400.0 * 365;
  uv_update_time(&lp->uv);
  uv_timer_start(&lp->step_timer, on_step_timer, (uint64_t)(secs * 1000 + 0.5), 0);
  r = run(L, lp, UV_RUN_ONCE);
  uv_timer_stop(&lp->step_timer);
  return r;
}

static int l_loop_alive(lua_State *L) {
  lua_pushboolean(L, uv_loop_alive(&lx_loop_get(L)->uv));
  return 1;
}

/* core.loop_stop(): makes a running uv_run return; outside of one there is
 * nothing to stop (and a pending stop would cut the next run short). */
static int l_loop_stop(lua_State *L) {
  lx_loop *lp = lx_loop_get(L);
  if (lp->L) uv_stop(&lp->uv);
  return 0;
}

static void count_walk(uv_handle_t *uvh, void *arg) {
  if (uvh->data && !uv_is_closing(uvh)) ++*(int *)arg;
}

/* core.loop_handles(): lxmpp handles open now (specs check none is left) */
static int l_loop_handles(lua_State *L) {
  int n = 0;
  uv_walk(&lx_loop_get(L)->uv, count_walk, &n);
  lua_pushinteger(L, n);
  return 1;
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
  return 1;
}

/* ---- timers -------------------------------------------------------------------- */

typedef struct timer {
  lx_handle h;
  uv_timer_t t;
} timer;

/* Builds and dispatches a timer's event under lx_protected (ud: the
 * timer): pushing "timer" may allocate, and an allocation error must not
 * unwind through libuv (loop.h). The timer is closed whatever happens. */
static int timer_fire(lua_State *L) {
  timer *tm = lua_touserdata(L, 1);
  if (!lx_handle_push(L, &tm->h)) return 0; /* timer */
  lua_getiuservalue(L, -1, 1);              /* timer, target */
  lua_remove(L, -2);
  lua_pushliteral(L, "timer");
  lua_insert(L, -2);                        /* "timer", target */
  lx_handle_close(&tm->h, (uv_handle_t *)&tm->t);
  lx_dispatch(tm->h.lp, 2);
  return 0;
}

static void on_timer(uv_timer_t *t) {
  timer *tm = t->data;
  lx_loop *lp = tm->h.lp;
  if (lp->L) lx_protected(lp, timer_fire, tm);
  lx_handle_close(&tm->h, (uv_handle_t *)t);  /* once: a second call does nothing */
}

/* core.timer(seconds, target) -> timer */
static int l_timer(lua_State *L) {
  lx_loop *lp = lx_loop_get(L);
  lua_Number secs = luaL_checknumber(L, 1);
  timer *tm;
  luaL_checkany(L, 2);
  if (secs != secs || secs < 0) secs = 0;
  if (secs > 86400.0 * 365 * 10) secs = 86400.0 * 365 * 10;
  tm = lua_newuserdatauv(L, sizeof *tm, 1);
  memset(tm, 0, sizeof *tm);
  tm->h.closed = 1;                         /* until it is started */
  tm->h.self_ref = LUA_NOREF;
  luaL_setmetatable(L, TIMER_MT);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  uv_timer_init(&lp->uv, &tm->t);
  tm->t.data = tm;
  lx_handle_pin(L, -1, &tm->h, lp);
  uv_update_time(&lp->uv);
  uv_timer_start(&tm->t, on_timer, (uint64_t)(secs * 1000 + 0.5), 0);
  return 1;
}

static int l_timer_stop(lua_State *L) {
  timer *tm = luaL_checkudata(L, 1, TIMER_MT);
  lx_handle_close(&tm->h, (uv_handle_t *)&tm->t);
  return 0;
}

static int l_timer_active(lua_State *L) {
  timer *tm = luaL_checkudata(L, 1, TIMER_MT);
  lua_pushboolean(L, !tm->h.closed);
  return 1;
}

void lx_open_loop(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"set_dispatcher", l_set_dispatcher}, {"loop_run", l_loop_run},
    {"loop_step", l_loop_step}, {"loop_alive", l_loop_alive},
    {"loop_stop", l_loop_stop}, {"loop_handles", l_loop_handles},
    {"now", l_now}, {"timer", l_timer}, {NULL, NULL}
  };
  static const luaL_Reg timer_methods[] = {
    {"stop", l_timer_stop}, {"active", l_timer_active}, {NULL, NULL}
  };
  lx_class(L, TIMER_MT, timer_methods, NULL, l_timer_stop, NULL);
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
}
