/*
 * loop.h - the libuv loop of a Lua state and the one C -> Lua dispatcher.
 *
 * Every lua_State that loads lxmpp.core gets one lx_loop (created on first
 * use, owned by a userdata in the registry; closed with the state). libuv
 * callbacks never call Lua directly: they push their arguments and call
 * lx_dispatch(), which runs the Lua dispatcher (set by lxmpp.task) under
 * lua_pcall. A dispatcher error is stored, the loop is stopped, and the error
 * is raised by the Lua function that ran the loop, after uv_run returned
 * (C never lets Lua unwind through libuv).
 *
 * Handles follow one ownership rule: a handle lives inside
 * its userdata, the userdata is pinned in the registry from the handle's start
 * until its close callback, and its memory is only released by Lua's GC after
 * that. lx_handle_close() is safe twice.
 */
#ifndef LXMPP_LOOP_H
#define LXMPP_LOOP_H

#include "lx.h"

#include <lua.h>
#include "luacompat.h"
#include <uv.h>

LX_HIDDEN_BEGIN

/* Work run once, right before the loop next polls for I/O: how writes made
 * during one loop iteration are coalesced into one system call. */
typedef struct lx_deferred {
  struct lx_deferred *next;
  void (*run)(struct lx_deferred *d);
  int queued;
} lx_deferred;

typedef struct lx_loop {
  uv_loop_t uv;
  lua_State *main;    /* the main thread: registry work in close callbacks */
  lua_State *L;       /* the thread running uv_run now, NULL otherwise */
  int dispatcher;     /* registry ref of the Lua dispatcher */
  int err_slot;       /* registry slot, made with the loop, that keeps a
                         dispatcher error to re-raise: storing it there
                         allocates nothing, so an out-of-memory error is
                         kept too, never raised through libuv */
  int failed;         /* err_slot holds an error */
  int closing;        /* the state is closing: no more Lua calls */
  uv_timer_t step_timer; /* wakes uv_run for lxmpp.step(timeout) */
  uv_prepare_t prepare;  /* runs the deferred list */
  lx_deferred *deferred;
  void *net;          /* net_io.c's state for all connections (freed by
                         lx_net_loop_free when the loop closes) */
} lx_loop;

/* Common head of every lxmpp handle userdata. */
typedef struct lx_handle {
  lx_loop *lp;
  int self_ref;       /* pins the userdata while the handle is open */
  int closed;         /* uv_close requested */
  void (*on_close)(struct lx_handle *h); /* frees what the handle owns */
} lx_handle;

/* The state's loop, created on first call. Raises on allocation failure. */
lx_loop *lx_loop_get(lua_State *L);

/* Calls the dispatcher with the nargs values on top of lp->L's stack (they
 * are popped). Only from a libuv callback while the loop runs. Returns 1, or
 * 0 when the dispatcher raised (the error is kept and the loop stopped). */
int lx_dispatch(lx_loop *lp, int nargs);

/* Runs f under lua_pcall on lp->L with ud as a light userdata argument,
 * from a libuv callback while the loop runs: for work that allocates Lua
 * values (which may raise) before dispatching. Same error rule as
 * lx_dispatch. */
int lx_protected(lx_loop *lp, lua_CFunction f, void *ud);

void lx_defer(lx_loop *lp, lx_deferred *d);
void lx_undefer(lx_loop *lp, lx_deferred *d);

/* Pins the userdata at index idx; h is its lx_handle head. */
void lx_handle_pin(lua_State *L, int idx, lx_handle *h, lx_loop *lp);
/* Requests uv_close (once); the close callback runs h->on_close (if set)
 * and unpins. The uv handle's data field must point at h, and h must be the
 * first member of the userdata's struct. */
void lx_handle_close(lx_handle *h, uv_handle_t *uvh);
/* Pushes the userdata of an open handle (from its pin); 0 if not pinned. */
int lx_handle_push(lua_State *L, lx_handle *h);

/* Frees net_io.c's per-loop state (lx_loop.net; NULL is fine), once every
 * handle of the loop is closed. */
void lx_net_loop_free(void *state);


LX_HIDDEN_END

#endif
