/*
 * net_io.c - the I/O of TCP connections (net.c makes them and holds their
 * Lua methods): a coalescing, bounded send path, and the receive path in C,
 * socket bytes -> (TLS) -> stream parser -> one dispatcher call per stream
 * event, over read buffers shared by the loop; idle connections give their
 * parser's and TLS engine's memory back.
 *
 * Ownership: as in net.c; a conn's buffers and parser are freed by its close
 * callback (lx_net_conn_freed, here).
 */
#include "lx.h"
#include "net_int.h"

#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#ifdef __linux__
#include <linux/sockios.h>  /* SIOCOUTQ */
#endif

#define READ_BUF 65536
#define SWEEP_MS 250                 /* quiet this long (or up to twice): idle */
#define POOL_N 16                    /* spare output buffers per loop (pool_put) */
#define POOL_BUF 16384               /* ... each at most this big */
#define POOL_BYTES 65536             /* ... and at most this much in all */
/* Lingering close (lx_net_drain): once our FIN is out and the peer has
 * everything we sent, it has LINGER_QUIET_MS of silence, and LINGER_TIME_MS
 * in all, to close its side (each at most the close's linger time). */
#define LINGER_QUIET_MS 2000
#define LINGER_TIME_MS 10000

/* ---- helpers ------------------------------------------------------------- */

/* Pushes "net", owner, event (owner is uservalue 1 of the conn's userdata);
 * returns 0 when the conn is no longer pinned. */
int lx_net_push_event(lua_State *L, lx_handle *h, const char *event) {
  if (!lx_handle_push(L, h)) return 0;        /* ud */
  lua_pushliteral(L, "net");
  lua_insert(L, -2);                          /* "net", ud */
  lua_getiuservalue(L, -1, 1);                /* "net", ud, owner */
  lua_remove(L, -2);
  lua_pushstring(L, event);
  return 1;
}

/* An event and its string arguments, built and dispatched under
 * lx_protected: building it allocates, and an allocation error must not
 * unwind through libuv (loop.h). These run from libuv callbacks (connect,
 * read, write, close), never from inside a Lua call. */
typedef struct net_event {
  lx_handle *h;
  const char *event;
  int nstr;                   /* strings after the event: 0 to 2 */
  const char *s[2];
  size_t len[2];
} net_event;

static int emit_protected(lua_State *L) {
  net_event *e = lua_touserdata(L, 1);
  int i;
  if (!lx_net_push_event(L, e->h, e->event)) return 0;   /* "net", owner, event */
  for (i = 0; i < e->nstr; i++) lua_pushlstring(L, e->s[i], e->len[i]);
  lx_dispatch(e->h->lp, 3 + e->nstr);
  return 0;
}

static void emit(lx_handle *h, const char *event, int nstr, const char *s0, size_t l0,
                 const char *s1, size_t l1) {
  net_event e;
  e.h = h;
  e.event = event;
  e.nstr = nstr;
  e.s[0] = s0;
  e.len[0] = l0;
  e.s[1] = s1;
  e.len[1] = l1;
  lx_protected(h->lp, emit_protected, &e);
}

void lx_net_emit(lx_handle *h, const char *event) {
  emit(h, event, 0, NULL, 0, NULL, 0);
}

void lx_net_emit_msg(lx_handle *h, const char *event, const char *msg,
                     const char *cond) {
  emit(h, event, 2, msg, strlen(msg), cond, strlen(cond));
}

/* Raw mode: one "data" event with the bytes read (plaintext under TLS). */
static void emit_data(conn *c, const char *p, size_t n) {
  emit(&c->h, "data", 1, p, n, NULL, 0);
}

static void pool_put(lx_loop *lp, char *buf, size_t cap);
static char *pool_get(lx_loop *lp, size_t *cap);

/* Gives up a growable buffer that is empty: an idle connection keeps none.
 * It goes to the loop's spare pool when that has room (the next queue to
 * fill takes it from there), else back to malloc. */
static void release(lx_loop *lp, char **buf, size_t *cap) {
  if (*buf) pool_put(lp, *buf, *cap);
  *buf = NULL;
  *cap = 0;
}

static void unlist(conn *c);
static void touched(conn *c);

void lx_net_conn_freed(lx_handle *h) {
  conn *c = (conn *)h;
  unlist(c);
  lx_undefer(h->lp, &c->flush);
  lx_stream_free(c->parser);
  c->parser = NULL;
  lx_tls_free(c->tls);
  c->tls = NULL;
  lx_ws_free(c->ws);
  c->ws = NULL;
  free(c->rest);
  c->rest = NULL;
  release(h->lp, &c->out, &c->out_cap);
  release(h->lp, &c->wbuf, &c->wbuf_cap);
  release(h->lp, &c->early, &c->early_cap);
  c->fbuf = NULL;
  c->feeding = 0;
  c->out_len = c->wbuf_len = c->early_len = 0;
  if (!h->lp->closing) lx_net_emit(h, "closed");
}

void lx_net_conn_abort(conn *c) {
  c->reading = 0;
  lx_handle_close(&c->h, (uv_handle_t *)&c->tcp);
}
/* ---- send path ------------------------------------------------------------- */

static void start_write(conn *c);

static uint64_t linger_ms(conn *c, uint64_t cap) {
  return c->close_linger < cap ? c->close_linger : cap;
}

/* Our FIN is out (uv_shutdown, SHUT_WR). A draining conn lingers until the
 * peer's EOF (lx_net_drain); any other closes now. */
static void on_shutdown(uv_shutdown_t *req, int status) {
  conn *c = req->data;
  if (c->h.closed) return;
  if (status < 0 || !c->draining || !c->close_deadline || !c->reading || c->in_done ||
      c->h.lp->closing) {
    lx_net_conn_abort(c);
    return;
  }
  c->lingering = 1;
  c->linger_quiet = uv_now(&c->h.lp->uv) + linger_ms(c, LINGER_QUIET_MS);
  touched(c);                          /* (listed already: closing) */
}

static void maybe_shutdown(conn *c) {
  if (!c->closing || c->ws_close_wait || c->writing || c->out_len || c->shut || c->h.closed) return;
  c->shut = 1;
  c->sreq.data = c;
  if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
    lx_net_conn_abort(c);
}

static void on_written(uv_write_t *req, int status) {
  conn *c = req->data;
  c->writing = 0;
  c->wbuf_len = 0;
  release(c->h.lp, &c->wbuf, &c->wbuf_cap);
  if (c->h.closed) return;
  if (status < 0) {
    lx_net_emit_msg(&c->h, "write-error", uv_strerror(status), "closed");
    lx_net_conn_abort(c);
    return;
  }
  if (c->out_len) start_write(c);
  else if (c->full) {
    c->full = 0;
    lx_net_emit(&c->h, "drain");
  }
  maybe_shutdown(c);
}

static void start_write(conn *c) {
  char *t;
  size_t tcap;
  uv_buf_t b;
  if (c->writing || !c->out_len || c->h.closed || c->connecting) return;
  /* swap the buffers: what was queued is now in flight */
  t = c->wbuf; c->wbuf = c->out; c->out = t;
  tcap = c->wbuf_cap; c->wbuf_cap = c->out_cap; c->out_cap = tcap;
  c->wbuf_len = c->out_len;
  c->out_len = 0;
  b = uv_buf_init(c->wbuf, (unsigned)c->wbuf_len);
  c->wreq.data = c;
  if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
    c->wbuf_len = 0;
    lx_net_conn_abort(c);
    return;
  }
  c->writing = 1;
  c->writes++;
  c->bytes_out += b.len;
}

static void tls_failed(conn *c);

void lx_net_run_flush(lx_deferred *d) {
  conn *c = (conn *)((char *)d - offsetof(conn, flush));
  if (!lx_net_encrypt_pending(c)) {
    tls_failed(c);
    return;
  }
  start_write(c);
  touched(c);
  maybe_shutdown(c);
}

/* Appends to a growable buffer of c (an empty one may come from the
 * loop's spare pool); 0 when out of memory. */
static int append(conn *c, char **buf, size_t *len, size_t *cap, const char *p,
                  size_t n) {
  if (!*buf) *buf = pool_get(c->h.lp, cap);
  if (*cap - *len < n) {
    size_t ncap = *cap ? *cap : 4096;
    char *nb;
    while (ncap - *len < n) ncap *= 2;
    nb = realloc(*buf, ncap);
    if (!nb) return 0;
    *buf = nb;
    *cap = ncap;
  }
  memcpy(*buf + *len, p, n);
  *len += n;
  return 1;
}

/* Moves the TLS engine's ciphertext to the output queue (not bounded: it is
 * the encryption of what was already admitted). */
int lx_net_move_ciphertext(conn *c) {
  char tmp[16384];
  size_t n;
  while (c->tls && (n = lx_tls_take(c->tls, tmp, sizeof tmp)) > 0) {
    if (!append(c, &c->out, &c->out_len, &c->out_cap, tmp, n)) return 0;
    lx_defer(c->h.lp, &c->flush);
  }
  return 1;
}

/* Encrypts the plaintext queued since the last flush. 0 on a TLS error. */
int lx_net_encrypt_pending(conn *c) {
  size_t off = 0;
  if (!c->tls || !c->tls_done || !c->early_len) return 1;
  /* in pieces of a few records, each moved out at once, so OpenSSL's
   * memory BIO never grows (and re-copies) to the size of a whole burst */
  while (off < c->early_len) {
    size_t n = c->early_len - off;
    if (n > 65536) n = 65536;
    if (lx_tls_send(c->tls, c->early + off, n) != LX_TLS_OK || !lx_net_move_ciphertext(c)) {
      c->early_len = 0;
      return 0;
    }
    off += n;
  }
  c->early_len = 0;
  release(c->h.lp, &c->early, &c->early_cap);
  return 1;
}

/* Queues bytes; 0 when they would take the queue past its bound (nothing
 * queued then, and "drain" follows once the queue is empty). A write larger
 * than the bound is taken when nothing else waits, so one big stanza (a
 * large roster) can always go out to a peer that reads. */
int lx_net_enqueue(conn *c, const char *p, size_t len) {
  size_t queued = c->out_len + c->wbuf_len + c->early_len;
  if (queued && queued + len > c->max_out) {
    c->full = 1;
    return 0;
  }
  if (c->tls) {
    /* encrypted when flushed (or when the handshake ends): the writes of one
     * loop iteration become full-size TLS records, not one per stanza */
    if (!append(c, &c->early, &c->early_len, &c->early_cap, p, len)) return 0;
    if (c->tls_done) lx_defer(c->h.lp, &c->flush);
    return 1;
  }
  if (!append(c, &c->out, &c->out_len, &c->out_cap, p, len)) return 0;
  lx_defer(c->h.lp, &c->flush);
  return 1;
}

static int mask_key(lx_loop *lp, unsigned char key[4]);

/* Queues one WebSocket frame (RFC 6455 §5.2) carrying p[0..len): its header
 * and payload together or nothing, masked with a fresh key in the client
 * role. bounded: as lx_net_enqueue (messages, pongs); else always taken
 * (close frames, a few bytes, like TLS alerts). 0 when not queued. */
int lx_net_enqueue_frame(conn *c, int opcode, const char *p, size_t len,
                         int bounded) {
  unsigned char hdr[LX_WS_MAX_HEADER], key[4];
  size_t hl, queued = c->out_len + c->wbuf_len + c->early_len, start;
  char **buf = c->tls ? &c->early : &c->out;
  size_t *blen = c->tls ? &c->early_len : &c->out_len;
  size_t *bcap = c->tls ? &c->early_cap : &c->out_cap;
  if (c->ws_client && !mask_key(c->h.lp, key)) return 0;
  hl = lx_ws_header(hdr, opcode, len, c->ws_client ? key : NULL);
  if (bounded && queued && queued + hl + len > c->max_out) {
    c->full = 1;
    return 0;
  }
  start = *blen;
  if (!append(c, buf, blen, bcap, (const char *)hdr, hl)) return 0;
  if (len && !append(c, buf, blen, bcap, p, len)) {
    *blen = start;
    return 0;
  }
  if (c->ws_client) lx_ws_mask((unsigned char *)*buf + start + hl, len, key, 0);
  if (!c->tls || c->tls_done) lx_defer(c->h.lp, &c->flush);
  return 1;
}

/* ---- receive path ---------------------------------------------------------- */

/* Runs the parser and dispatches each event, under lx_protected (ud: the
 * conn). Input was handed to the parser by on_read (lx_stream_feed); after a
 * pause() it is still there, and resume() continues it here. Lua may close,
 * pause or restart the conn during a dispatch: that takes effect before
 * another byte is parsed. */
int lx_net_feed_protected(lua_State *L) {
  conn *c = lua_touserdata(L, 1);
  int top = lua_gettop(L);
  while (c->parser && !c->h.closed && !c->paused && !c->draining) {
    int n, ev = lx_stream_next(c->parser);
    if (ev == LX_EV_MORE) {
      c->feeding = 0;
      return 0;
    }
    if (!lx_net_push_event(L, &c->h, "")) return 0;
    lua_pop(L, 1);                            /* "net", owner */
    if (ev == LX_EV_ERROR) {
      const char *cond, *msg = lx_stream_error(c->parser, &cond);
      lua_pushliteral(L, "parse-error");
      lua_pushstring(L, msg);
      lua_pushstring(L, cond);
      c->reading = 0;
      c->feeding = 0;
      c->ws_halt = 1;                         /* WebSocket: no more messages */
      uv_read_stop((uv_stream_t *)&c->tcp);
      lx_dispatch(c->h.lp, 5);
      return 0;
    }
    lua_pushstring(L, ev == LX_EV_OPEN ? "open" :
                      ev == LX_EV_STANZA ? "stanza" : "stream-close");
    n = lx_push_event(L, c->parser, ev, 0);
    c->in_dispatch = 1;
    c->reset = RESET_NONE;
    lx_dispatch(c->h.lp, 3 + n);
    c->in_dispatch = 0;
    lua_settop(L, top);
    if (c->h.closed || !c->parser || c->draining) return 0;
    if (c->reset == RESET_RESTART) {
      /* the rest of this read belongs to the new stream */
      size_t rest = lx_stream_remaining(c->parser);
      if (!lx_stream_reset(c->parser)) return 0;
      /* (WebSocket: the message was the whole input; the next one is
       * the new stream's) */
      if (!c->ws) lx_stream_feed(c->parser, c->fbuf + c->flen - rest, rest, 0);
    }
  }
  return 0;
}

/* ---- per loop: shared read buffers, idle sweeps --------------------------- */

/* Read buffers: two per loop, shared by every connection (socket bytes, and
 * TLS plaintext), so an idle connection holds none. A buffer is only read
 * within one libuv callback; when the callback ends with the parser in the
 * middle of it (the conn was paused), keep_rest() copies the unparsed end.
 *
 * Idle connections: every SWEEP_MS the conns that had no I/O for a whole
 * period give their parser's memory (lx_stream_idle) and their TLS
 * buffers (lx_tls_idle) back; busy ones keep them, so they do not pay to
 * rebuild them at every read. */
typedef struct net_loop {
  char bufs[2 * READ_BUF];
  unsigned char keys[1024];   /* WebSocket mask keys, drawn in one batch */
  size_t key_pos;
  uv_timer_t sweep;           /* data NULL: the loop itself closes it */
  int sweep_init;
  conn *active;               /* conns with I/O since they last went idle */
  /* Spare output buffers (pool_put): owned here until a queue takes one */
  char *pool[POOL_N];
  size_t pool_cap[POOL_N];
  size_t pool_n, pool_bytes;
} net_loop;
#define SOCKET_BUF 0
#define PLAIN_BUF 1

static net_loop *net_of(lx_loop *lp) {
  if (!lp->net) {
    net_loop *n = malloc(sizeof *n);
    if (!n) return NULL;
    n->sweep_init = 0;
    n->active = NULL;
    n->key_pos = sizeof n->keys;
    n->pool_n = n->pool_bytes = 0;
    lp->net = n;
  }
  return lp->net;
}

/* Output buffers (the TLS plaintext queue, the output queue, the write in
 * flight) are given up as soon as they empty, so an idle connection holds
 * none; a busy one empties and refills them several times per loop
 * iteration. Freed and malloc'ed again each time, they made glibc trim the
 * top of the heap (brk) and fault it in again, over and over (docs/
 * performance.md, issue 15), so the loop keeps a few spares: at most
 * POOL_N buffers of at most POOL_BUF bytes, POOL_BYTES in all; anything
 * else is freed at once. The pool is freed with the loop
 * (lx_net_loop_free); while the loop closes, nothing is kept. */
static void pool_put(lx_loop *lp, char *buf, size_t cap) {
  net_loop *n = lp->net;
  if (!n || lp->closing || cap > POOL_BUF || n->pool_n == POOL_N ||
      n->pool_bytes + cap > POOL_BYTES) {
    free(buf);
    return;
  }
  n->pool[n->pool_n] = buf;
  n->pool_cap[n->pool_n++] = cap;
  n->pool_bytes += cap;
}

/* A spare buffer and its size (*cap), or NULL (*cap 0) when there is none. */
static char *pool_get(lx_loop *lp, size_t *cap) {
  net_loop *n = lp->net;
  *cap = 0;
  if (!n || !n->pool_n) return NULL;
  n->pool_n--;
  n->pool_bytes -= n->pool_cap[n->pool_n];
  *cap = n->pool_cap[n->pool_n];
  return n->pool[n->pool_n];
}

size_t lx_net_spare(lx_loop *lp, size_t *bytes) {
  net_loop *n = lp->net;
  *bytes = n ? n->pool_bytes : 0;
  return n ? n->pool_n : 0;
}

void lx_net_loop_free(void *state) {
  net_loop *n = state;
  if (!n) return;
  while (n->pool_n) free(n->pool[--n->pool_n]);
  free(n);
}

/* A fresh WebSocket mask key (RFC 6455 §5.3: unpredictable, one per
 * frame): 4 bytes of a batch from OpenSSL's RAND_bytes, shared by the
 * loop's connections, so a frame does not cost a call into the RNG. */
static int mask_key(lx_loop *lp, unsigned char key[4]) {
  net_loop *n = net_of(lp);
  if (!n) return 0;
  if (n->key_pos + 4 > sizeof n->keys) {
    if (!lx_ws_random(n->keys, sizeof n->keys)) return 0;
    n->key_pos = 0;
  }
  memcpy(key, n->keys + n->key_pos, 4);
  n->key_pos += 4;
  return 1;
}

static char *shared_buf(lx_loop *lp, int which) {
  net_loop *n = net_of(lp);
  return n ? n->bufs + which * READ_BUF : NULL;
}

static void unlist(conn *c) {
  net_loop *n = c->h.lp->net;
  if (!c->listed) return;
  if (c->act_prev) c->act_prev->act_next = c->act_next;
  else n->active = c->act_next;
  if (c->act_next) c->act_next->act_prev = c->act_prev;
  c->act_next = c->act_prev = NULL;
  c->listed = 0;
}

static void go_idle(conn *c) {
  if (c->h.closed || !c->parser || c->feeding) return;
  lx_stream_idle(c->parser);
  if (c->ws) lx_ws_idle(c->ws);
  if (c->tls_done && !c->out_len && !c->early_len) lx_tls_idle(c->tls);
}

/* Bytes the kernel still holds unsent for c (Linux: SIOCOUTQ), so that a
 * closing conn's progress shows as soon as the peer reads, not only when
 * the kernel's large send buffer asks libuv for more. 0 where unknown. */
static size_t kernel_unsent(conn *c) {
#ifdef SIOCOUTQ
  uv_os_fd_t fd;
  int n = 0;
  if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0 && ioctl(fd, SIOCOUTQ, &n) == 0 && n > 0)
    return (size_t)n;
#else
  (void)c;
#endif
  return 0;
}

static void on_sweep(uv_timer_t *t) {
  net_loop *n = (net_loop *)((char *)t - offsetof(net_loop, sweep));
  conn *c, *next;
  for (c = n->active; c; c = next) {
    next = c->act_next;
    if (c->close_deadline) {                 /* closing: listed until closed */
      uint64_t now = uv_now(t->loop);
      size_t left = c->out_len + uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) +
                    kernel_unsent(c);
      if (left < c->close_left) {            /* the peer read: more time */
        c->close_left = left;
        c->close_deadline = now + c->close_linger;
        if (!c->close_deadline) c->close_deadline = 1;
        c->linger_quiet = now + linger_ms(c, LINGER_QUIET_MS);
      }
      /* lingering, everything delivered: only the peer's EOF is awaited,
       * for a bounded time whatever it sends (lx_net_drain) */
      if (c->lingering && !left && !c->linger_end) {
        c->linger_end = now + linger_ms(c, LINGER_TIME_MS);
        if (!c->linger_end) c->linger_end = 1;
      }
      if (now >= c->close_deadline) lx_net_conn_abort(c);
      else if (c->ws_close_wait && now >= c->ws_deadline) lx_net_ws_finish(c);
      else if (c->linger_end && (now >= c->linger_end || now >= c->linger_quiet))
        lx_net_conn_abort(c);
      continue;
    }
    if (c->ws_close_wait) {                  /* listed until the wait ends */
      if (uv_now(t->loop) >= c->ws_deadline) lx_net_ws_finish(c);
      continue;
    }
    if (c->recent) {
      c->recent = 0;
      continue;
    }
    unlist(c);
    go_idle(c);
  }
  if (!n->active) uv_timer_stop(t);
}

/* The conn read or wrote: it goes idle after a quiet sweep period. */
static void touched(conn *c);
void lx_net_touch(conn *c) { touched(c); }

static void touched(conn *c) {
  lx_loop *lp = c->h.lp;
  net_loop *n = net_of(lp);
  c->recent = 1;
  if (c->listed || !n || lp->closing) return;
  if (!n->sweep_init) {
    if (uv_timer_init(&lp->uv, &n->sweep) != 0) return;
    n->sweep.data = NULL;
    uv_unref((uv_handle_t *)&n->sweep);  /* never keeps the loop running */
    n->sweep_init = 1;
  }
  if (uv_is_closing((uv_handle_t *)&n->sweep)) return;
  c->act_prev = NULL;
  c->act_next = n->active;
  if (n->active) n->active->act_prev = c;
  n->active = c;
  c->listed = 1;
  if (!uv_is_active((uv_handle_t *)&n->sweep))
    uv_timer_start(&n->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
}

/* The parser will read from buf: a shared buffer, so rest is not needed. */
static void feed_from(conn *c, const char *buf, size_t len) {
  c->fbuf = buf;
  c->flen = len;
  c->feeding = 1;
  free(c->rest);
  c->rest = NULL;
  lx_stream_feed(c->parser, buf, len, 0);
}

/* At the end of a callback that fed the parser from a shared buffer: what
 * the parser has not finished moves into the conn's own rest (including the
 * bytes of a suspended parse, which a stream restart would re-feed). */
static void keep_rest(conn *c) {
  size_t n, unread;
  char *p;
  if (c->h.closed) return;
  touched(c);
  if (c->draining) return;                    /* nothing is parsed any more */
  if (c->ws) {
    lx_net_ws_keep_rest(c);
    return;
  }
  if (!c->parser || !c->feeding || c->fbuf == c->rest) return;
  n = lx_stream_remaining(c->parser);
  unread = lx_stream_unread(c->parser);
  if (!(p = malloc(n ? n : 1))) {
    c->feeding = 0;
    lx_net_emit_msg(&c->h, "read-error", "out of memory", "resource-constraint");
    if (!c->h.closed) lx_net_conn_abort(c);
    return;
  }
  memcpy(p, c->fbuf + c->flen - n, n);
  c->rest = p;
  c->fbuf = p;
  c->flen = n;
  lx_stream_rebase(c->parser, p + n - unread);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  conn *c = h->data;
  char *b = shared_buf(c->h.lp, SOCKET_BUF);
  (void)suggested;
  *buf = uv_buf_init(b, b ? READ_BUF : 0);
}

static void tls_failed(conn *c) {
  const char *cond, *msg = lx_tls_error(c->tls, &cond);
  lx_net_move_ciphertext(c);                         /* the alert, if any */
  c->reading = 0;
  uv_read_stop((uv_stream_t *)&c->tcp);
  lx_net_emit_msg(&c->h, "tls-failed", msg ? msg : "TLS failed",
           cond ? cond : "tls-failed");
  if (!c->h.closed) {
    c->closing = 1;
    lx_defer(c->h.lp, &c->flush);             /* send the alert, then close */
  }
}

/* Parses what there is: the rest of the current buffer, then (with TLS)
 * whatever plaintext the engine can give, until it needs more bytes, the
 * conn is paused or closed. */
static void pump(conn *c) {
  for (;;) {
    if (c->draining) return;                  /* closing: nothing is parsed */
    if (c->ws) {
      if (!lx_net_ws_drain(c)) return;
    } else if (c->feeding) {
      lx_protected(c->h.lp, lx_net_feed_protected, c);
      if (c->feeding || c->paused || c->h.closed || !c->parser || c->draining) return;
    }
    if (!c->tls || !c->tls_done || (!c->parser && !c->raw && !c->ws)) return;
    {
      size_t n = 0;
      int r;
      char *pbuf = shared_buf(c->h.lp, PLAIN_BUF);
      if (!pbuf) return;
      r = lx_tls_read(c->tls, pbuf, READ_BUF, &n);
      if (r == LX_TLS_OK && n > 0 && c->ws) {
        lx_net_ws_input(c, pbuf, n);
        continue;
      }
      if (r == LX_TLS_OK && n > 0 && !c->parser) {
        emit_data(c, pbuf, n);
        if (c->paused || c->h.closed || c->draining) return;
        continue;
      }
      if (r == LX_TLS_OK && n > 0) {
        feed_from(c, pbuf, n);
        continue;
      }
      lx_net_move_ciphertext(c);                     /* e.g. a TLS 1.3 key update */
      if (r == LX_TLS_CLOSED) {
        c->reading = 0;
        uv_read_stop((uv_stream_t *)&c->tcp);
        lx_net_emit(&c->h, "eof");
        if (c->ws_close_wait && !c->h.closed) lx_net_ws_finish(c);
      } else if (r == LX_TLS_ERROR) {
        tls_failed(c);
      }
      return;
    }
  }
}

/* Ciphertext arrived: advance the handshake, then pump. */
static void tls_input(conn *c, const char *p, size_t n) {
  if (!lx_tls_recv(c->tls, p, n)) {
    tls_failed(c);
    return;
  }
  if (!c->tls_done) {
    int r = lx_tls_handshake(c->tls);
    lx_net_move_ciphertext(c);
    if (r == LX_TLS_ERROR) {
      tls_failed(c);
      return;
    }
    if (r != LX_TLS_OK) return;
    c->tls_done = 1;
    if (!lx_net_encrypt_pending(c)) {                /* written during the handshake */
      tls_failed(c);
      return;
    }
    lx_net_emit(&c->h, "tls-done");
    if (c->h.closed) return;
  }
  pump(c);
}

/* A read while draining (lx_net_drain): the bytes are dropped, and only
 * hold off the quiet end of the lingering; never "progress" (that is the
 * peer reading what we sent). The peer's EOF after our FIN ends the close;
 * a read error ends it at once (nothing more of ours can arrive). */
static void drained(conn *c, ssize_t nread) {
  if (nread < 0) {
    c->in_done = 1;
    c->reading = 0;
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (c->lingering || nread != UV_EOF) lx_net_conn_abort(c);
    return;                               /* (EOF before our FIN: on_shutdown closes) */
  }
  c->bytes_in += (uint64_t)nread;
  c->linger_quiet = uv_now(&c->h.lp->uv) + linger_ms(c, LINGER_QUIET_MS);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn *c = s->data;
  if (nread == 0 || c->h.closed) return;
  if (c->draining) {
    drained(c, nread);
    return;
  }
  if (nread < 0) {
    c->in_done = 1;
    c->reading = 0;
    uv_read_stop(s);
    if (nread == UV_EOF) lx_net_emit(&c->h, "eof");
    else lx_net_emit_msg(&c->h, "read-error", uv_strerror((int)nread), "closed");
    if (c->ws_close_wait && !c->h.closed) lx_net_ws_finish(c);
    return;
  }
  c->bytes_in += (uint64_t)nread;
  if (c->tls) {
    tls_input(c, buf->base, (size_t)nread);
  } else if (c->ws) {
    lx_net_ws_input(c, buf->base, (size_t)nread);
    pump(c);
  } else if (c->parser) {
    feed_from(c, buf->base, (size_t)nread);
    pump(c);
  } else if (c->raw) {
    emit_data(c, buf->base, (size_t)nread);
  }
  keep_rest(c);
}

void lx_net_start_reading(conn *c) {
  /* WebSocket: messages wait in the socket until there is a parser for
   * them, and after it failed only close() reads on (for the close frame) */
  if (c->ws && !c->closing && (!c->parser || c->ws_halt)) return;
  if (c->draining || c->in_done) return;      /* (lx_net_drain reads then) */
  if (c->reading || c->paused || c->h.closed || c->connecting ||
      (!c->parser && !c->tls && !c->raw))
    return;
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
    c->reading = 1;
}

/* Lingering close (conn:close, after a WebSocket's closing handshake):
 * from now on what the peer sends is read into the shared socket buffer
 * and dropped (never parsed, dispatched or kept), until its EOF, a read
 * error, or the end of the close. Closing with unread bytes in our
 * receive buffer, or with more arriving, makes the kernel answer with a
 * RST, which discards what we sent and the peer has not read yet: the
 * very <stream:error/> and </stream:stream> a closing entity sends (RFC
 * 6120 §4.4, §4.9.1). So the socket stays open after our FIN (on_shutdown)
 * until the peer's EOF, as Apache's lingering_close and nginx's
 * lingering_close do, bounded: the close's linger time (the peer reading
 * nothing of what waits, close_deadline) as before, and once the peer has
 * everything, LINGER_QUIET_MS without a byte from it or LINGER_TIME_MS in
 * all (each at most that linger time), whatever it keeps sending. Reading
 * starts at once, not after the FIN: a peer blocked sending to us would
 * otherwise never read what we flush. A WebSocket whose closing handshake
 * is done does not linger. */
void lx_net_drain(conn *c) {
  c->draining = 1;
  c->feeding = 0;
  c->paused = 0;
  if (c->ws_peer_closed) {
    /* WebSocket, the peer's close frame read: it has sent all it will
     * (RFC 6455 §5.5.1) and nothing of it is left unread, so closing
     * after our FIN makes no RST; the server closes first (§7.1.1) */
    if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
    return;
  }
  if (c->reading || c->in_done || c->h.closed || c->connecting) return;
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) c->reading = 1;
}

void lx_net_run_cont(lx_deferred *d) {
  conn *c = (conn *)((char *)d - offsetof(conn, cont));
  if (c->h.closed || c->paused) return;
  pump(c);
  keep_rest(c);
  lx_net_start_reading(c);
}
