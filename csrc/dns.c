/*
 * dns.c - asynchronous DNS queries (c-ares) driven by the state's libuv loop.
 *
 *   core.resolver{ servers = "127.0.0.1:5399,[::1]:53", timeout = seconds,
 *                  tries = n }         -> resolver | nil, message, condition
 *                  (no servers: the system's resolv.conf)
 *   resolver:srv(name, target)         SRV query           -> true
 *   resolver:addr(name, target)        A and AAAA together -> true
 *   resolver:cancel(target)            abandons target's queries -> how many
 *   resolver:close()                   safe twice; also __gc and __close
 *   core.ip_family(s)                  -> 4 | 6 | nil: is s a numeric address
 *
 * srv and addr return nil, message, "closed" on a closed resolver. Results
 * reach Lua as dispatch("dns", target, records) where records is an array of
 * { target =, port =, priority =, weight = } (srv) or of address strings
 * (addr), or as dispatch("dns", target, nil, message, condition) with the
 * condition "remote-server-not-found" (NXDOMAIN, no data), "timeout", or
 * "undefined-condition" (server failure, no server reachable, ...). Queries
 * outstanding when the resolver is closed complete with "resolver closed",
 * condition "closed".
 *
 * cancel(target) abandons every query started with that target (compared
 * with rawequal): none of them is dispatched, the target is dropped at once,
 * and a query already finished but not yet dispatched is freed. c-ares has no
 * per-query cancel (ares_cancel ends every query of a channel), so an
 * abandoned query that c-ares still holds stays there, marked, while other
 * queries are out (they keep the loop alive anyway); as soon as every query
 * c-ares holds is abandoned, ares_cancel ends them all (their callbacks free
 * them) and, with no query left, c-ares closes its sockets: their watchers
 * and the timer close, and nothing of the abandoned lookups keeps the loop
 * alive. The channel itself stays open for later queries. (Alternatives
 * rejected: a channel per lookup costs a resolv.conf read and sockets per
 * query; destroying and re-making the shared channel would need its options
 * kept and would end the other tasks' queries.)
 *
 * Search domains are never appended: the names asked are fully qualified.
 *
 * Ownership. c-ares calls back from inside its own functions, so its
 * callbacks never enter Lua: a finished query is put on the resolver's done
 * list, and the list is dispatched (under lx_protected) from a libuv
 * callback after c-ares has returned. Queries finished synchronously (answers
 * from /etc/hosts, bad names, close()) wait for the next loop iteration: a
 * 0 ms timer. The resolver userdata owns the ares_channel; its query targets
 * live in its uservalue (a table id -> target). It holds libuv handles only
 * while it has work: a timer for c-ares timeouts and one poll per c-ares
 * socket, each a malloc'ed watcher with an lx_handle head, always closed here
 * (their close callback frees them). While it has queries, results or
 * watchers, the resolver is pinned in the registry; idle, it is an ordinary
 * object that __gc closes. At lua_close, Lua finalizes in reverse creation
 * order, so a resolver's __gc (which closes every watcher) always runs before
 * the loop's, whose uv_run then completes those closes.
 */
#include "lx.h"
#include "core.h"
#include "luax.h"
#include "loop.h"

#include <sys/select.h>              /* fd_set and struct timeval, for ares.h */
#include <sys/time.h>

#include <ares.h>
#include <ares_nameser.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define RESOLVER_MT "lxmpp.resolver"


typedef struct watcher watcher;
typedef struct query query;

typedef struct resolver {
  lx_loop *lp;
  ares_channel ch;      /* NULL once closed */
  int pin;              /* registry ref while busy, else LUA_NOREF */
  int pending;          /* queries c-ares still holds */
  int abandoned;        /* of those, how many cancel() abandoned */
  int nwatch;           /* watchers not yet through their close callback */
  int busy;             /* inside a callback or flush: never unpin */
  unsigned next_id;
  watcher *polls;       /* one per c-ares socket */
  watcher *timer;       /* NULL while there is nothing to time */
  query *done;          /* finished, not yet dispatched, in order */
  query **done_tail;
  query *out;           /* the queries c-ares holds (pending of them) */
} resolver;

struct watcher {
  lx_handle h;          /* first member: loop.c may see it (loop.h) */
  union {
    uv_handle_t handle;
    uv_poll_t poll;
    uv_timer_t timer;
  } u;
  resolver *r;
  ares_socket_t fd;
  watcher *next;
};

enum { Q_SRV, Q_ADDR };

struct query {
  resolver *r;
  query *next;          /* on r->done */
  query *onext;         /* on r->out while c-ares holds it */
  int kind, status;
  int abandoned;        /* cancel()ed: freed, never dispatched */
  lua_Integer id;       /* key of the target in the uservalue table */
  struct ares_srv_reply *srv;
  struct ares_addrinfo *ai;
  char name[];
};

/* ---- pinning ------------------------------------------------------------- */

static void pin(lua_State *L, int idx, resolver *r) {
  if (r->pin != LUA_NOREF) return;
  lua_pushvalue(L, idx);
  r->pin = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Unpins once nothing refers to the resolver from C any more. Its memory may
 * be collected after this: callers touch r no further. */
static void maybe_unpin(resolver *r) {
  if (r->pin == LUA_NOREF || r->busy || r->pending || r->done || r->nwatch)
    return;
  luaL_unref(r->lp->main, LUA_REGISTRYINDEX, r->pin);
  r->pin = LUA_NOREF;
}

/* ---- watchers ------------------------------------------------------------ */

static void watcher_closed(uv_handle_t *uvh) {
  watcher *w = uvh->data;
  resolver *r = w->r;
  free(w);
  r->nwatch--;
  maybe_unpin(r);
}

/* Only reached if loop.c's close_walk closed a watcher (see the header: it
 * cannot, the resolver's __gc closes them first). loop.c reads the head after
 * this hook, so the memory stays; the resolver just forgets the watcher. */
static void watcher_orphaned(lx_handle *h) {
  watcher *w = (watcher *)h, **pw;
  resolver *r = w->r;
  if (r->timer == w) r->timer = NULL;
  for (pw = &r->polls; *pw; pw = &(*pw)->next) {
    if (*pw == w) {
      *pw = w->next;
      break;
    }
  }
  r->nwatch--;
}

static watcher *watcher_new(resolver *r) {
  watcher *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  w->h.lp = r->lp;
  w->h.self_ref = LUA_NOREF;
  w->h.on_close = watcher_orphaned;
  w->r = r;
  w->fd = ARES_SOCKET_BAD;
  return w;
}

static void watcher_close(watcher *w) {
  if (w->h.closed) return;
  w->h.closed = 1;
  uv_close(&w->u.handle, watcher_closed);
}

/* ---- driving c-ares ------------------------------------------------------- */

static void on_timer(uv_timer_t *t);

/* Arms the timer for what comes next: 0 ms when results wait for dispatch,
 * c-ares' next timeout while queries are out; closes it when idle. */
static void update_timer(resolver *r) {
  struct timeval tv, *tvp = NULL;
  uint64_t ms;
  if (r->done) {
    ms = 0;
  } else if (r->ch && r->pending && (tvp = ares_timeout(r->ch, NULL, &tv))) {
    ms = (uint64_t)tvp->tv_sec * 1000 + ((uint64_t)tvp->tv_usec + 999) / 1000;
  } else {
    if (r->timer) watcher_close(r->timer);
    r->timer = NULL;
    return;
  }
  if (!r->timer) {
    watcher *w = watcher_new(r);
    if (!w) return;           /* out of memory: sockets still drive c-ares */
    uv_timer_init(&r->lp->uv, &w->u.timer);
    w->u.timer.data = w;
    r->timer = w;
    r->nwatch++;
  }
  uv_update_time(&r->lp->uv);
  uv_timer_start(&r->timer->u.timer, on_timer, ms, 0);
}

static const char *message(int status) {
  return status == ARES_EDESTRUCTION ? "resolver closed" : ares_strerror(status);
}

static const char *condition(int status) {
  switch (status) {
  case ARES_ENOTFOUND: case ARES_ENODATA: return "remote-server-not-found";
  case ARES_ETIMEOUT: return "timeout";
  case ARES_EDESTRUCTION: return "closed";
  default: return "undefined-condition";
  }
}

/* Builds and dispatches one result, under lx_protected (ud: the query).
 * Stack: "dns", target, records | "dns", target, nil, message, condition */
static int push_result(lua_State *L) {
  query *q = lua_touserdata(L, 1);
  resolver *r = q->r;
  int nargs = 3, i = 0;
  lua_pushliteral(L, "dns");
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->pin);    /* "dns", ud */
  lua_getiuservalue(L, -1, 1);                  /* "dns", ud, targets */
  lua_rawgeti(L, -1, q->id);                    /* "dns", ud, targets, target */
  lua_pushnil(L);
  lua_rawseti(L, -3, q->id);
  lua_replace(L, -3);                           /* "dns", target, targets */
  lua_pop(L, 1);                                /* "dns", target */
  if (q->status != ARES_SUCCESS) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", q->name, message(q->status));
    lua_pushstring(L, condition(q->status));
    nargs = 5;
  } else if (q->kind == Q_SRV) {
    struct ares_srv_reply *s;
    lua_newtable(L);
    for (s = q->srv; s; s = s->next) {
      lua_createtable(L, 0, 4);
      lua_pushstring(L, s->host[0] ? s->host : ".");   /* c-ares: root is "" */
      lua_setfield(L, -2, "target");
      lua_pushinteger(L, s->port);
      lua_setfield(L, -2, "port");
      lua_pushinteger(L, s->priority);
      lua_setfield(L, -2, "priority");
      lua_pushinteger(L, s->weight);
      lua_setfield(L, -2, "weight");
      lua_rawseti(L, -2, ++i);
    }
  } else {
    struct ares_addrinfo_node *n;
    lua_newtable(L);
    for (n = q->ai->nodes; n; n = n->ai_next) {
      char ip[64];
      int rc = -1;
      if (n->ai_family == AF_INET)
        rc = uv_ip4_name((const struct sockaddr_in *)n->ai_addr, ip, sizeof ip);
      else if (n->ai_family == AF_INET6)
        rc = uv_ip6_name((const struct sockaddr_in6 *)n->ai_addr, ip, sizeof ip);
      if (rc != 0) continue;
      lua_pushstring(L, ip);
      lua_rawseti(L, -2, ++i);
    }
  }
  lx_dispatch(r->lp, nargs);
  return 0;
}

/* Drops the target of a result that could not be dispatched (the loop is
 * failing). Cannot raise: assigning nil to an existing key allocates nothing. */
static void forget_target(resolver *r, lua_Integer id) {
  lua_State *L = r->lp->L ? r->lp->L : r->lp->main;
  if (r->lp->closing || r->pin == LUA_NOREF) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->pin);
  lua_getiuservalue(L, -1, 1);
  lua_pushnil(L);
  lua_rawseti(L, -2, id);
  lua_pop(L, 2);
}

static void query_free(query *q) {
  if (q->srv) ares_free_data(q->srv);
  if (q->ai) ares_freeaddrinfo(q->ai);
  free(q);
}

/* Dispatches every finished query, in order. Lua may start queries or close
 * the resolver meanwhile: what that finishes is dispatched here too. */
static void flush(resolver *r) {
  query *q;
  r->busy++;
  while ((q = r->done) != NULL) {
    r->done = q->next;
    if (!r->done) r->done_tail = &r->done;
    if (!lx_protected(r->lp, push_result, q)) forget_target(r, q->id);
    query_free(q);
  }
  r->busy--;
}

/* When every query c-ares still holds is abandoned, ends them all: their
 * callbacks free them, and c-ares, left with no query, closes its sockets
 * (their watchers close). No Lua runs. */
static void drop_abandoned(resolver *r) {
  if (!r->ch || !r->pending || r->pending != r->abandoned) return;
  r->busy++;
  ares_cancel(r->ch);
  r->busy--;
}

/* The common tail of the libuv callbacks: c-ares first, then Lua. */
static void process(resolver *r, ares_socket_t rfd, ares_socket_t wfd) {
  r->busy++;
  if (r->ch) ares_process_fd(r->ch, rfd, wfd);
  drop_abandoned(r);
  flush(r);
  drop_abandoned(r);            /* Lua may have cancelled during the flush */
  r->busy--;
  update_timer(r);
  maybe_unpin(r);
}

static void on_timer(uv_timer_t *t) {
  watcher *w = t->data;
  process(w->r, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
}

static void on_poll(uv_poll_t *p, int status, int events) {
  watcher *w = p->data;
  ares_socket_t fd = w->fd;
  /* on a poll error, let c-ares find the socket's error itself */
  process(w->r, (status < 0 || (events & UV_READABLE)) ? fd : ARES_SOCKET_BAD,
          (status < 0 || (events & UV_WRITABLE)) ? fd : ARES_SOCKET_BAD);
}

/* ARES_OPT_SOCK_STATE_CB: c-ares opened, wants to watch, or is closing fd
 * (it calls this before it closes the socket). */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable) {
  resolver *r = data;
  watcher *w, **pw;
  int events = (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);
  for (pw = &r->polls; (w = *pw) != NULL; pw = &w->next)
    if (w->fd == fd) break;
  if (!events) {
    if (w) {
      *pw = w->next;
      watcher_close(w);
    }
    return;
  }
  if (!w) {
    w = watcher_new(r);
    if (!w) return;           /* out of memory: the query will time out */
    if (uv_poll_init_socket(&r->lp->uv, &w->u.poll, fd) != 0) {
      free(w);                /* libuv fails before registering the handle */
      return;
    }
    w->u.poll.data = w;
    w->fd = fd;
    w->next = r->polls;
    r->polls = w;
    r->nwatch++;
  }
  uv_poll_start(&w->u.poll, events, on_poll);
}

/* ---- query callbacks (inside c-ares: no Lua) ------------------------------ */

static void query_free(query *q);

static void finish(query *q, int status) {
  resolver *r = q->r;
  query **pq;
  for (pq = &r->out; *pq; pq = &(*pq)->onext) {
    if (*pq == q) {
      *pq = q->onext;
      break;
    }
  }
  r->pending--;
  if (q->abandoned) {           /* its target is gone: nothing to dispatch */
    r->abandoned--;
    query_free(q);
    return;
  }
  q->status = status;
  q->next = NULL;
  *r->done_tail = q;
  r->done_tail = &q->next;
}

static void on_srv(void *arg, int status, int timeouts, unsigned char *abuf, int alen) {
  query *q = arg;
  (void)timeouts;
  if (status == ARES_SUCCESS) status = ares_parse_srv_reply(abuf, alen, &q->srv);
  finish(q, status);
}

static void on_addr(void *arg, int status, int timeouts, struct ares_addrinfo *res) {
  query *q = arg;
  (void)timeouts;
  q->ai = res;
  if (status == ARES_SUCCESS && (!res || !res->nodes)) status = ARES_ENODATA;
  finish(q, status);
}

/* ---- the resolver object ------------------------------------------------- */

static resolver *check_resolver(lua_State *L) {
  return luaL_checkudata(L, 1, RESOLVER_MT);
}

/* Destroys the channel: c-ares finishes every outstanding query with
 * ARES_EDESTRUCTION (onto the done list) and closes its sockets (their
 * watchers close). No Lua runs. */
static void shutdown_channel(resolver *r) {
  ares_channel ch = r->ch;
  if (!ch) return;
  r->ch = NULL;
  r->busy++;
  ares_destroy(ch);
  r->busy--;
}

/* resolver:srv(name, target) / resolver:addr(name, target) */
static int start_query(lua_State *L, int kind) {
  resolver *r = check_resolver(L);
  size_t len;
  const char *name = luaL_checklstring(L, 2, &len);
  query *q;
  luaL_argcheck(L, strlen(name) == len, 2, "name contains a zero byte");
  luaL_argcheck(L, !lua_isnoneornil(L, 3), 3, "target expected");
  if (!r->ch) {
    lua_pushnil(L);
    lua_pushliteral(L, "resolver is closed");
    lua_pushliteral(L, "closed");
    return 3;
  }
  /* everything that can raise comes before c-ares holds the query */
  pin(L, 1, r);
  lua_getiuservalue(L, 1, 1);                   /* targets */
  lua_pushvalue(L, 3);
  lua_rawseti(L, -2, (lua_Integer)++r->next_id);
  q = malloc(sizeof *q + len + 1);
  if (!q) {
    lua_pushnil(L);
    lua_rawseti(L, -2, (lua_Integer)r->next_id);
    maybe_unpin(r);
    return luaL_error(L, "out of memory");
  }
  memset(q, 0, sizeof *q);
  memcpy(q->name, name, len + 1);
  q->r = r;
  q->kind = kind;
  q->id = (lua_Integer)r->next_id;
  q->onext = r->out;
  r->out = q;
  r->pending++;
  if (kind == Q_SRV) {
    ares_query(r->ch, q->name, C_IN, T_SRV, on_srv, q);
  } else {
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    ares_getaddrinfo(r->ch, q->name, NULL, &hints, on_addr, q);
  }
  update_timer(r);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_srv(lua_State *L) { return start_query(L, Q_SRV); }
static int l_addr(lua_State *L) { return start_query(L, Q_ADDR); }

/* Abandons the query with that id, wherever it is: held by c-ares (marked;
 * drop_abandoned ends it once nothing else is out) or finished and waiting
 * for dispatch (freed now). */
static void abandon(resolver *r, lua_Integer id) {
  query *q, **pq;
  for (q = r->out; q; q = q->onext) {
    if (q->id == id && !q->abandoned) {
      q->abandoned = 1;
      r->abandoned++;
      return;
    }
  }
  for (pq = &r->done; (q = *pq) != NULL; pq = &q->next) {
    if (q->id == id) {
      *pq = q->next;
      if (r->done_tail == &q->next) r->done_tail = pq;
      query_free(q);
      return;
    }
  }
}

/* resolver:cancel(target) -> n: abandons every query started with target
 * (rawequal); none of them is dispatched. Safe on a closed resolver, for a
 * target already answered, and twice (then 0). */
static int l_cancel(lua_State *L) {
  resolver *r = check_resolver(L);
  lua_Integer n = 0;
  luaL_argcheck(L, !lua_isnoneornil(L, 2), 2, "target expected");
  lua_settop(L, 2);
  lua_getiuservalue(L, 1, 1);                   /* 3: targets */
  lua_pushnil(L);
  while (lua_next(L, 3)) {                      /* 4: id, 5: target */
    if (lua_rawequal(L, 5, 2)) {
      lua_Integer id = lua_tointeger(L, 4);
      abandon(r, id);
      lua_pop(L, 1);
      /* assigning nil to an existing field during lua_next is allowed */
      lua_pushvalue(L, 4);
      lua_pushnil(L);
      lua_rawset(L, 3);
      n++;
    } else {
      lua_pop(L, 1);
    }
  }
  drop_abandoned(r);
  update_timer(r);
  maybe_unpin(r);
  lua_pushinteger(L, n);
  return 1;
}

/* resolver:close(): outstanding queries are dispatched with an error at the
 * next loop iteration. Safe twice. */
static int l_close(lua_State *L) {
  resolver *r = check_resolver(L);
  shutdown_channel(r);
  update_timer(r);
  maybe_unpin(r);
  return 0;
}

/* __gc: unreachable, so idle (nothing pinned it), or the state is closing:
 * then nothing can be dispatched any more, and everything is released. */
static int l_gc(lua_State *L) {
  resolver *r = lua_touserdata(L, 1);
  watcher *w;
  shutdown_channel(r);
  while (r->done) {
    query *q = r->done;
    r->done = q->next;
    query_free(q);
  }
  r->done_tail = &r->done;
  if (r->timer) watcher_close(r->timer);
  r->timer = NULL;
  while ((w = r->polls) != NULL) {   /* none: ares_destroy closed them */
    r->polls = w->next;
    watcher_close(w);
  }
  if (r->pin != LUA_NOREF) {
    luaL_unref(L, LUA_REGISTRYINDEX, r->pin);
    r->pin = LUA_NOREF;
  }
  return 0;
}

static int l_tostring(lua_State *L) {
  resolver *r = check_resolver(L);
  lua_pushfstring(L, "lxmpp.resolver (%s)", r->ch ? "open" : "closed");
  return 1;
}

/* Reads the options table at index 1 into o and *servers. */
static int read_options(lua_State *L, struct ares_options *o, const char **servers) {
  int mask = 0;
  *servers = NULL;
  if (lua_isnoneornil(L, 1)) return 0;
  luaL_checktype(L, 1, LUA_TTABLE);
  if (lua_getfield(L, 1, "servers") != LUA_TNIL) {   /* stays on the stack */
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "resolver: servers must be a string like \"127.0.0.1:53\"");
    *servers = lua_tostring(L, -1);
  }
  if (lua_getfield(L, 1, "timeout") != LUA_TNIL) {
    lua_Number t = lua_tonumber(L, -1);
    if (!lua_isnumber(L, -1) || !(t > 0) || t > 3600)
      luaL_error(L, "resolver: timeout must be a number of seconds (0, 3600]");
    o->timeout = (int)(t * 1000 + 0.5);
    if (o->timeout < 1) o->timeout = 1;
    mask |= ARES_OPT_TIMEOUTMS;
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 1, "tries") != LUA_TNIL) {
    lua_Integer n = lua_tointeger(L, -1);
    if (!lua_isinteger(L, -1) || n < 1 || n > 100)
      luaL_error(L, "resolver: tries must be an integer in [1, 100]");
    o->tries = (int)n;
    mask |= ARES_OPT_TRIES;
  }
  lua_pop(L, 1);
  return mask;
}

/* core.resolver(opts) -> resolver | nil, message, condition */
static int l_resolver(lua_State *L) {
  lx_loop *lp = lx_loop_get(L);
  struct ares_options o;
  const char *servers;
  resolver *r;
  int mask, rc;
  memset(&o, 0, sizeof o);
  mask = read_options(L, &o, &servers) | ARES_OPT_SOCK_STATE_CB | ARES_OPT_DOMAINS;
  r = lua_newuserdatauv(L, sizeof *r, 1);
  memset(r, 0, sizeof *r);
  r->lp = lp;
  r->pin = LUA_NOREF;
  r->done_tail = &r->done;
  luaL_setmetatable(L, RESOLVER_MT);            /* __gc copes with ch == NULL */
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1);
  o.sock_state_cb = on_sock_state;
  o.sock_state_cb_data = r;
  o.domains = NULL;                             /* no search domains */
  o.ndomains = 0;
  rc = ares_init_options(&r->ch, &o, mask);
  if (rc != ARES_SUCCESS) {
    r->ch = NULL;
    lua_pushnil(L);
    lua_pushfstring(L, "cannot create a DNS resolver: %s", ares_strerror(rc));
    lua_pushliteral(L, "undefined-condition");
    return 3;
  }
  if (servers && (rc = ares_set_servers_ports_csv(r->ch, servers)) != ARES_SUCCESS) {
    shutdown_channel(r);
    return luaL_error(L, "resolver: bad servers \"%s\" (%s)", servers, ares_strerror(rc));
  }
  return 1;
}

/* core.ip_family(s) -> 4 | 6 | nil: whether s is a numeric IP address */
static int l_ip_family(lua_State *L) {
  const char *s = luaL_checkstring(L, 1);
  unsigned char buf[sizeof(struct in6_addr)];
  if (uv_inet_pton(AF_INET, s, buf) == 0) lua_pushinteger(L, 4);
  else if (uv_inet_pton(AF_INET6, s, buf) == 0) lua_pushinteger(L, 6);
  else lua_pushnil(L);
  return 1;
}

void lx_open_dns(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"srv", l_srv}, {"addr", l_addr}, {"cancel", l_cancel}, {"close", l_close},
    {NULL, NULL}
  };
  lx_class(L, RESOLVER_MT, methods, l_gc, l_close, l_tostring);
  lua_pop(L, 1);
  lua_pushcfunction(L, l_resolver);
  lua_setfield(L, -2, "resolver");
  lua_pushcfunction(L, l_ip_family);
  lua_setfield(L, -2, "ip_family");
}
