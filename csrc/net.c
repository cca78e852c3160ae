/*
 * net.c - TCP connections and listeners over libuv, with the receive path
 * in C: socket bytes -> (TLS) -> stream parser -> one dispatcher call per
 * stream event, and a coalescing, bounded send path.
 *
 *   core.tcp_connect(ip, port, owner) -> conn
 *   core.tcp_listen(ip, port, owner [, backlog]) -> listener | nil, msg, cond
 *   conn:parse(opts)     attach a stream parser (limits as stream_parser)
 *   conn:write(bytes)    -> true | nil, msg, "resource-constraint"/"closed"
 *   conn:restart()       stream restart: a fresh parser; unparsed bytes of the
 *                        current read go to it
 *   conn:starttls(ctx, domain) -> true, discarded   (then "tls-done"/"tls-failed")
 *   conn:tls_info()  conn:channel_binding(type)
 *   conn:pause() conn:resume()  conn:close() (graceful)  conn:abort()
 *   conn:bytes_in()      bytes read so far
 *   conn:raw()           no parser: each read (decrypted) is a "data" event
 *   conn:info() -> { peer=, port=, bytes_in=, bytes_out=, writes=, queued=,
 *                    open=, parser_idle= (the parser gave its memory back) }
 *   listener:port()  listener:close()
 *
 * Events reach Lua as dispatch("net", owner, event, ...): "connected",
 * "connect-failed" msg cond, "open" attr, "stanza" st, "stream-close",
 * "parse-error" msg cond, "data" bytes (raw mode), "eof", "read-error" msg, "write-error" msg,
 * "tls-done", "tls-failed" msg cond,
 * "drain", "closed", and for listeners "accept" conn.
 *
 * Ownership: a conn/listener userdata embeds its uv handle and is pinned from
 * creation until the close callback, which also frees its buffers and parser.
 * Every method on a closed conn fails cleanly; close() and abort() are safe
 * twice.
 */
#include "core.h"
#include "loop.h"
#include "stream.h"
#include "tls.h"

#include <stdlib.h>
#include <string.h>

#define CONN_MT "lxmpp.conn"
#define LISTENER_MT "lxmpp.listener"
#define READ_BUF 65536
#define DEFAULT_MAX_OUT (4u << 20)   /* bytes queued before write() refuses */
#define SWEEP_MS 250                 /* quiet this long (or up to twice): idle */

enum { RESET_NONE = 0, RESET_RESTART = 1 };

typedef struct conn {
  lx_handle h;                /* first member (loop.h) */
  uv_tcp_t tcp;
  lx_deferred flush;          /* coalesces writes of one loop iteration */
  lx_deferred cont;           /* resume(): parse what a pause() left */
  lx_stream *parser;          /* NULL until parse() */
  const char *fbuf;           /* what the parser is reading: a shared buffer
                                 (during a read callback) or rest */
  size_t flen;
  int feeding;                /* the parser has not finished fbuf yet */
  int raw;                    /* raw(): bytes go to Lua as "data", no parser */
  char *rest;                 /* own copy of fbuf's unparsed end, kept when a
                                 callback ends mid-buffer (paused, closed) */
  struct conn *act_next, *act_prev; /* in the loop's list of active conns */
  int listed, recent;         /* in that list; had I/O since the last sweep */
  lx_tls *tls;                /* NULL: plaintext */
  int tls_done;               /* handshake finished */
  char *early;                /* plaintext not encrypted yet (TLS) */
  size_t early_len, early_cap;
  char *out;                  /* bytes not yet handed to libuv */
  size_t out_len, out_cap;
  char *wbuf;                 /* bytes of the write in flight */
  size_t wbuf_len, wbuf_cap;
  size_t max_out;
  int writing, connecting, reading, paused, closing, shut, full;
  int reset;                  /* RESET_* requested by Lua during dispatch */
  int in_dispatch;
  uint64_t bytes_in, bytes_out, writes;
  uv_connect_t creq;
  uv_write_t wreq;
  uv_shutdown_t sreq;
} conn;

typedef struct listener {
  lx_handle h;
  uv_tcp_t tcp;
} listener;

/* ---- helpers ------------------------------------------------------------- */

static conn *check_conn(lua_State *L) {
  return luaL_checkudata(L, 1, CONN_MT);
}

static int fail_closed(lua_State *L) {
  lua_pushnil(L);
  lua_pushliteral(L, "connection is closed");
  lua_pushliteral(L, "closed");
  return 3;
}

/* Pushes "net", owner, event (owner is uservalue 1 of the conn's userdata);
 * returns 0 when the conn is no longer pinned. */
static int push_event(lua_State *L, lx_handle *h, const char *event) {
  if (!lx_handle_push(L, h)) return 0;        /* ud */
  lua_pushliteral(L, "net");
  lua_insert(L, -2);                          /* "net", ud */
  lua_getiuservalue(L, -1, 1);                /* "net", ud, owner */
  lua_remove(L, -2);
  lua_pushstring(L, event);
  return 1;
}

static void emit(lx_handle *h, const char *event) {
  lua_State *L = h->lp->L;
  if (L && push_event(L, h, event)) lx_dispatch(h->lp, 3);
}

static void emit_msg(lx_handle *h, const char *event, const char *msg,
                     const char *cond) {
  lua_State *L = h->lp->L;
  if (L && push_event(L, h, event)) {
    lua_pushstring(L, msg);
    lua_pushstring(L, cond);
    lx_dispatch(h->lp, 5);
  }
}

/* Raw mode: one "data" event with the bytes read (plaintext under TLS). */
static void emit_data(conn *c, const char *p, size_t n) {
  lua_State *L = c->h.lp->L;
  if (L && push_event(L, &c->h, "data")) {
    lua_pushlstring(L, p, n);
    lx_dispatch(c->h.lp, 4);
  }
}

/* Frees a growable buffer that is empty: an idle connection keeps none. */
static void release(char **buf, size_t *cap) {
  free(*buf);
  *buf = NULL;
  *cap = 0;
}

static void unlist(conn *c);
static void touched(conn *c);

static void conn_freed(lx_handle *h) {
  conn *c = (conn *)h;
  unlist(c);
  lx_undefer(h->lp, &c->flush);
  lx_stream_free(c->parser);
  c->parser = NULL;
  lx_tls_free(c->tls);
  c->tls = NULL;
  free(c->rest);
  free(c->out);
  free(c->wbuf);
  free(c->early);
  c->rest = c->out = c->wbuf = c->early = NULL;
  c->fbuf = NULL;
  c->feeding = 0;
  c->out_len = c->wbuf_len = 0;
  if (!h->lp->closing) emit(h, "closed");
}

static void conn_abort(conn *c) {
  c->reading = 0;
  lx_handle_close(&c->h, (uv_handle_t *)&c->tcp);
}

/* ---- send path ------------------------------------------------------------- */

static void start_write(conn *c);

static void on_shutdown(uv_shutdown_t *req, int status) {
  conn *c = req->data;
  (void)status;
  conn_abort(c);
}

static void maybe_shutdown(conn *c) {
  if (!c->closing || c->writing || c->out_len || c->shut || c->h.closed) return;
  c->shut = 1;
  c->sreq.data = c;
  if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
    conn_abort(c);
}

static void on_written(uv_write_t *req, int status) {
  conn *c = req->data;
  c->writing = 0;
  c->wbuf_len = 0;
  release(&c->wbuf, &c->wbuf_cap);
  if (c->h.closed) return;
  if (status < 0) {
    emit_msg(&c->h, "write-error", uv_strerror(status), "closed");
    conn_abort(c);
    return;
  }
  if (c->out_len) start_write(c);
  else if (c->full) {
    c->full = 0;
    emit(&c->h, "drain");
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
    conn_abort(c);
    return;
  }
  c->writing = 1;
  c->writes++;
  c->bytes_out += b.len;
}

static void tls_failed(conn *c);
static int encrypt_pending(conn *c);

static void run_flush(lx_deferred *d) {
  conn *c = (conn *)((char *)d - offsetof(conn, flush));
  if (!encrypt_pending(c)) {
    tls_failed(c);
    return;
  }
  start_write(c);
  touched(c);
  maybe_shutdown(c);
}

/* Appends to a growable buffer; 0 when out of memory. */
static int append(char **buf, size_t *len, size_t *cap, const char *p,
                  size_t n) {
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
static int move_ciphertext(conn *c) {
  char tmp[16384];
  size_t n;
  while (c->tls && (n = lx_tls_take(c->tls, tmp, sizeof tmp)) > 0) {
    if (!append(&c->out, &c->out_len, &c->out_cap, tmp, n)) return 0;
    lx_defer(c->h.lp, &c->flush);
  }
  return 1;
}

/* Encrypts the plaintext queued since the last flush. 0 on a TLS error. */
static int encrypt_pending(conn *c) {
  size_t off = 0;
  if (!c->tls || !c->tls_done || !c->early_len) return 1;
  /* in pieces of a few records, each moved out at once, so OpenSSL's
   * memory BIO never grows (and re-copies) to the size of a whole burst */
  while (off < c->early_len) {
    size_t n = c->early_len - off;
    if (n > 65536) n = 65536;
    if (lx_tls_send(c->tls, c->early + off, n) != LX_TLS_OK || !move_ciphertext(c)) {
      c->early_len = 0;
      return 0;
    }
    off += n;
  }
  c->early_len = 0;
  release(&c->early, &c->early_cap);
  return 1;
}

/* Queues bytes; 0 when the bound is reached (nothing queued then). */
static int enqueue(conn *c, const char *p, size_t len) {
  if (c->out_len + c->wbuf_len + c->early_len + len > c->max_out) {
    c->full = 1;
    return 0;
  }
  if (c->tls) {
    /* encrypted when flushed (or when the handshake ends): the writes of one
     * loop iteration become full-size TLS records, not one per stanza */
    if (!append(&c->early, &c->early_len, &c->early_cap, p, len)) return 0;
    if (c->tls_done) lx_defer(c->h.lp, &c->flush);
    return 1;
  }
  if (!append(&c->out, &c->out_len, &c->out_cap, p, len)) return 0;
  lx_defer(c->h.lp, &c->flush);
  return 1;
}

static int l_write(lua_State *L) {
  conn *c = check_conn(L);
  size_t len;
  const char *p = luaL_checklstring(L, 2, &len);
  if (c->h.closed || c->closing) return fail_closed(L);
  if (!enqueue(c, p, len)) {
    lua_pushnil(L);
    lua_pushliteral(L, "output queue full: the peer is not reading");
    lua_pushliteral(L, "resource-constraint");
    return 3;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- receive path ---------------------------------------------------------- */

/* Runs the parser and dispatches each event, under lx_protected (ud: the
 * conn). Input was handed to the parser by on_read (lx_stream_feed); after a
 * pause() it is still there, and resume() continues it here. Lua may close,
 * pause or restart the conn during a dispatch: that takes effect before
 * another byte is parsed. */
static int feed_protected(lua_State *L) {
  conn *c = lua_touserdata(L, 1);
  int top = lua_gettop(L);
  while (c->parser && !c->h.closed && !c->paused) {
    int n, ev = lx_stream_next(c->parser);
    if (ev == LX_EV_MORE) {
      c->feeding = 0;
      return 0;
    }
    if (!push_event(L, &c->h, "")) return 0;
    lua_pop(L, 1);                            /* "net", owner */
    if (ev == LX_EV_ERROR) {
      const char *cond, *msg = lx_stream_error(c->parser, &cond);
      lua_pushliteral(L, "parse-error");
      lua_pushstring(L, msg);
      lua_pushstring(L, cond);
      c->reading = 0;
      c->feeding = 0;
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
    if (c->h.closed || !c->parser) return 0;
    if (c->reset == RESET_RESTART) {
      /* the rest of this read belongs to the new stream */
      size_t rest = lx_stream_remaining(c->parser);
      if (!lx_stream_reset(c->parser)) return 0;
      lx_stream_feed(c->parser, c->fbuf + c->flen - rest, rest, 0);
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
  uv_timer_t sweep;           /* data NULL: the loop itself closes it */
  int sweep_init;
  conn *active;               /* conns with I/O since they last went idle */
} net_loop;
#define SOCKET_BUF 0
#define PLAIN_BUF 1

static net_loop *net_of(lx_loop *lp) {
  if (!lp->net) {
    net_loop *n = malloc(sizeof *n);
    if (!n) return NULL;
    n->sweep_init = 0;
    n->active = NULL;
    lp->net = n;
  }
  return lp->net;
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
  if (c->tls_done && !c->out_len && !c->early_len) lx_tls_idle(c->tls);
}

static void on_sweep(uv_timer_t *t) {
  net_loop *n = (net_loop *)((char *)t - offsetof(net_loop, sweep));
  conn *c, *next;
  for (c = n->active; c; c = next) {
    next = c->act_next;
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
  if (!c->parser || !c->feeding || c->fbuf == c->rest) return;
  n = lx_stream_remaining(c->parser);
  unread = lx_stream_unread(c->parser);
  if (!(p = malloc(n ? n : 1))) {
    c->feeding = 0;
    emit_msg(&c->h, "read-error", "out of memory", "resource-constraint");
    if (!c->h.closed) conn_abort(c);
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
  move_ciphertext(c);                         /* the alert, if any */
  c->reading = 0;
  uv_read_stop((uv_stream_t *)&c->tcp);
  emit_msg(&c->h, "tls-failed", msg ? msg : "TLS failed",
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
    if (c->feeding) {
      lx_protected(c->h.lp, feed_protected, c);
      if (c->feeding || c->paused || c->h.closed || !c->parser) return;
    }
    if (!c->tls || !c->tls_done || (!c->parser && !c->raw)) return;
    {
      size_t n = 0;
      int r;
      char *pbuf = shared_buf(c->h.lp, PLAIN_BUF);
      if (!pbuf) return;
      r = lx_tls_read(c->tls, pbuf, READ_BUF, &n);
      if (r == LX_TLS_OK && n > 0 && !c->parser) {
        emit_data(c, pbuf, n);
        if (c->paused || c->h.closed) return;
        continue;
      }
      if (r == LX_TLS_OK && n > 0) {
        feed_from(c, pbuf, n);
        continue;
      }
      move_ciphertext(c);                     /* e.g. a TLS 1.3 key update */
      if (r == LX_TLS_CLOSED) {
        c->reading = 0;
        uv_read_stop((uv_stream_t *)&c->tcp);
        emit(&c->h, "eof");
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
    move_ciphertext(c);
    if (r == LX_TLS_ERROR) {
      tls_failed(c);
      return;
    }
    if (r != LX_TLS_OK) return;
    c->tls_done = 1;
    if (!encrypt_pending(c)) {                /* written during the handshake */
      tls_failed(c);
      return;
    }
    emit(&c->h, "tls-done");
    if (c->h.closed) return;
  }
  pump(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn *c = s->data;
  if (nread == 0 || c->h.closed) return;
  if (nread < 0) {
    c->reading = 0;
    uv_read_stop(s);
    if (nread == UV_EOF) emit(&c->h, "eof");
    else emit_msg(&c->h, "read-error", uv_strerror((int)nread), "closed");
    return;
  }
  c->bytes_in += (uint64_t)nread;
  if (c->tls) {
    tls_input(c, buf->base, (size_t)nread);
  } else if (c->parser) {
    feed_from(c, buf->base, (size_t)nread);
    pump(c);
  } else if (c->raw) {
    emit_data(c, buf->base, (size_t)nread);
  }
  keep_rest(c);
}

static void start_reading(conn *c) {
  if (c->reading || c->paused || c->h.closed || c->connecting ||
      (!c->parser && !c->tls && !c->raw))
    return;
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
    c->reading = 1;
}

static void run_cont(lx_deferred *d) {
  conn *c = (conn *)((char *)d - offsetof(conn, cont));
  if (c->h.closed || c->paused) return;
  pump(c);
  keep_rest(c);
  start_reading(c);
}

/* ---- creation ---------------------------------------------------------------- */

/* Pushes a new conn userdata with its handle initialised and pinned. */
static conn *new_conn(lua_State *L, lx_loop *lp) {
  conn *c = lua_newuserdatauv(L, sizeof *c, 1);
  memset(c, 0, sizeof *c);
  c->h.closed = 1;                       /* not open until the handle is */
  c->h.self_ref = LUA_NOREF;
  luaL_setmetatable(L, CONN_MT);
  if (uv_tcp_init(&lp->uv, &c->tcp) != 0) luaL_error(L, "cannot create a socket");
  c->tcp.data = c;
  lx_handle_pin(L, -1, &c->h, lp);
  c->h.on_close = conn_freed;
  c->flush.run = run_flush;
  c->cont.run = run_cont;
  c->max_out = DEFAULT_MAX_OUT;
  uv_tcp_nodelay(&c->tcp, 1);
  return c;
}

static int parse_addr(lua_State *L, const char *ip, int port,
                      struct sockaddr_storage *ss) {
  if (port < 0 || port > 65535) return luaL_error(L, "invalid port %d", port);
  if (uv_ip4_addr(ip, port, (struct sockaddr_in *)ss) == 0) return 1;
  if (uv_ip6_addr(ip, port, (struct sockaddr_in6 *)ss) == 0) return 1;
  return 0;
}

static void on_connect(uv_connect_t *req, int status) {
  conn *c = req->data;
  c->connecting = 0;
  if (c->h.closed) return;
  if (status < 0) {
    emit_msg(&c->h, "connect-failed", uv_strerror(status),
             status == UV_ECONNREFUSED ? "connection-refused" : "remote-connection-failed");
    conn_abort(c);
    return;
  }
  emit(&c->h, "connected");
  start_reading(c);
  lx_defer(c->h.lp, &c->flush);          /* anything written while connecting */
}

/* core.tcp_connect(ip, port, owner) -> conn: the outcome is dispatched as
 * "connected" or "connect-failed". ip must be a numeric address. */
static int l_tcp_connect(lua_State *L) {
  lx_loop *lp = lx_loop_get(L);
  const char *ip = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2);
  struct sockaddr_storage ss;
  conn *c;
  int r;
  luaL_checkany(L, 3);
  if (!parse_addr(L, ip, port, &ss))
    return luaL_error(L, "tcp_connect: %s is not a numeric IP address", ip);
  c = new_conn(L, lp);                   /* ..., conn */
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, -2, 1);
  c->creq.data = c;
  r = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&ss, on_connect);
  if (r != 0) {
    conn_abort(c);
    lua_pushnil(L);
    lua_pushstring(L, uv_strerror(r));
    lua_pushliteral(L, "remote-connection-failed");
    return 3;
  }
  c->connecting = 1;
  return 1;
}

static int accept_protected(lua_State *L) {
  listener *ls = lua_touserdata(L, 1);
  conn *c = new_conn(L, ls->h.lp);       /* ud, conn */
  if (uv_accept((uv_stream_t *)&ls->tcp, (uv_stream_t *)&c->tcp) != 0) {
    conn_abort(c);
    return 0;
  }
  if (!push_event(L, &ls->h, "accept")) {
    conn_abort(c);
    return 0;
  }                                      /* ud, conn, "net", owner, "accept" */
  lua_pushvalue(L, 2);
  lx_dispatch(ls->h.lp, 4);
  return 0;
}

static void on_connection(uv_stream_t *server, int status) {
  listener *ls = server->data;
  if (status < 0 || ls->h.closed) return;
  lx_protected(ls->h.lp, accept_protected, ls);
}

/* core.tcp_listen(ip, port, owner [, backlog]) -> listener */
static int l_tcp_listen(lua_State *L) {
  lx_loop *lp = lx_loop_get(L);
  const char *ip = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2);
  int backlog = (int)luaL_optinteger(L, 4, 128);
  struct sockaddr_storage ss;
  listener *ls;
  int r;
  luaL_checkany(L, 3);
  if (!parse_addr(L, ip, port, &ss))
    return luaL_error(L, "tcp_listen: %s is not a numeric IP address", ip);
  ls = lua_newuserdatauv(L, sizeof *ls, 1);
  memset(ls, 0, sizeof *ls);
  ls->h.closed = 1;
  ls->h.self_ref = LUA_NOREF;
  luaL_setmetatable(L, LISTENER_MT);
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, -2, 1);
  if (uv_tcp_init(&lp->uv, &ls->tcp) != 0) return luaL_error(L, "cannot create a socket");
  ls->tcp.data = ls;
  lx_handle_pin(L, -1, &ls->h, lp);
  r = uv_tcp_bind(&ls->tcp, (const struct sockaddr *)&ss, 0);
  if (r == 0) r = uv_listen((uv_stream_t *)&ls->tcp, backlog, on_connection);
  if (r != 0) {
    lx_handle_close(&ls->h, (uv_handle_t *)&ls->tcp);
    lua_pushnil(L);
    lua_pushfstring(L, "cannot listen on %s port %d: %s", ip, port, uv_strerror(r));
    lua_pushliteral(L, "undefined-condition");
    return 3;
  }
  return 1;
}

/* ---- conn methods ------------------------------------------------------------- */

/* conn:parse(opts): reads stream events from now on (limits as in
 * lxmpp.stream_parser). */
static int l_parse(lua_State *L) {
  conn *c = check_conn(L);
  lx_limits lim;
  if (c->h.closed) return fail_closed(L);
  if (c->raw) return luaL_error(L, "parse: this connection is in raw mode");
  lx_limits_default(&lim);
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "max_stanza_size");
    if (lua_isinteger(L, -1) && lua_tointeger(L, -1) > 0)
      lim.max_stanza_size = (size_t)lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  if (!c->parser) {
    c->parser = lx_stream_new(LX_MODE_STREAM, &lim);
    if (!c->parser) return luaL_error(L, "out of memory");
  }
  start_reading(c);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:restart(): a stream restart (RFC 6120 §4.3.3): the parser forgets
 * the stream; bytes already read after the current stanza go to the new
 * stream. */
static int l_restart(lua_State *L) {
  conn *c = check_conn(L);
  if (c->h.closed || !c->parser) return fail_closed(L);
  if (c->in_dispatch) c->reset = RESET_RESTART;   /* feed_protected does it */
  else if (!lx_stream_reset(c->parser)) return luaL_error(L, "out of memory");
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:starttls(tls_context, peer_domain) -> true, discarded
 * From now on bytes are TLS (STARTTLS after <proceed/>, or direct TLS right
 * after connecting). The parser starts a fresh stream; plaintext that was
 * read but not parsed yet is dropped, never parsed as part of the encrypted
 * stream (SECURITY.md), and its size returned so the caller can treat it as
 * the attack it is. Outcome: "tls-done" or "tls-failed" msg cond. */
static int l_starttls(lua_State *L) {
  conn *c = check_conn(L);
  int server = 0;
  lx_tls_ctx *ctx = lx_tls_ctx_from_lua(L, 2, &server);
  const char *domain = luaL_optstring(L, 3, NULL);
  size_t discarded = 0;
  if (c->h.closed || c->closing) return fail_closed(L);
  if (c->tls) return luaL_error(L, "TLS is already active on this connection");
  if (!server && (!domain || !*domain))
    return luaL_error(L, "starttls: a client needs the peer's domain");
  if (c->parser) {
    if (c->feeding) discarded = lx_stream_remaining(c->parser);
    c->feeding = 0;
    if (!lx_stream_reset(c->parser)) return luaL_error(L, "out of memory");
    if (c->in_dispatch) c->reset = RESET_NONE;  /* nothing left to refeed */
  }
  /* nothing of the plaintext stream is left to parse: a pause() taken to
   * stop at <proceed/> or <starttls/> has done its job */
  c->paused = 0;
  c->tls = lx_tls_new(ctx, server ? NULL : domain);
  if (!c->tls) return luaL_error(L, "out of memory");
  c->tls_done = 0;
  if (!server) {                              /* the client speaks first */
    if (lx_tls_handshake(c->tls) == LX_TLS_ERROR) {
      const char *cond, *msg = lx_tls_error(c->tls, &cond);
      lua_pushnil(L);
      lua_pushstring(L, msg ? msg : "TLS failed");
      lua_pushstring(L, cond ? cond : "tls-failed");
      return 3;
    }
    move_ciphertext(c);
  }
  start_reading(c);
  lua_pushboolean(L, 1);
  lua_pushinteger(L, (lua_Integer)discarded);
  return 2;
}

/* conn:tls_info() -> { version=, cipher=, alpn=, verified=, peer_subject= }
 * or nil without TLS. */
static int l_tls_info(lua_State *L) {
  conn *c = check_conn(L);
  const char *v;
  size_t alen = 0;
  char subj[512];
  if (!c->tls || !c->tls_done) return 0;
  lua_createtable(L, 0, 5);
  if ((v = lx_tls_version(c->tls))) lua_pushstring(L, v), lua_setfield(L, -2, "version");
  if ((v = lx_tls_cipher(c->tls))) lua_pushstring(L, v), lua_setfield(L, -2, "cipher");
  if ((v = lx_tls_alpn(c->tls, &alen))) lua_pushlstring(L, v, alen), lua_setfield(L, -2, "alpn");
  lua_pushboolean(L, lx_tls_verified(c->tls));
  lua_setfield(L, -2, "verified");
  if (lx_tls_peer_subject(c->tls, subj, sizeof subj))
    lua_pushstring(L, subj), lua_setfield(L, -2, "peer_subject");
  return 1;
}

/* conn:channel_binding(type) -> bytes | nil, message */
static int l_channel_binding(lua_State *L) {
  conn *c = check_conn(L);
  const char *type = luaL_checkstring(L, 2);
  unsigned char out[LX_TLS_CB_MAX];
  size_t len = 0;
  const char *why = "no TLS on this connection";
  if (c->tls && c->tls_done &&
      lx_tls_channel_binding(c->tls, type, out, &len, &why)) {
    lua_pushlstring(L, (const char *)out, len);
    return 1;
  }
  lua_pushnil(L);
  lua_pushstring(L, why);
  return 2;
}

static int l_pause(lua_State *L) {
  conn *c = check_conn(L);
  if (c->h.closed) return 0;
  c->paused = 1;
  if (c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
  return 0;
}

static int l_resume(lua_State *L) {
  conn *c = check_conn(L);
  if (c->h.closed || !c->paused) return 0;
  c->paused = 0;
  lx_defer(c->h.lp, &c->cont);           /* parse what was left, then read */
  return 0;
}

/* conn:close(): graceful; queued bytes are sent first. */
static int l_close(lua_State *L) {
  conn *c = check_conn(L);
  if (c->h.closed || c->closing) return 0;
  c->closing = 1;
  if (c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
  if (c->tls && c->tls_done && encrypt_pending(c) &&
      lx_tls_shutdown(c->tls) == LX_TLS_OK)
    move_ciphertext(c);                   /* close_notify goes out last */
  if (c->connecting) conn_abort(c);
  else lx_defer(c->h.lp, &c->flush);   /* flush, then shutdown and close */
  return 0;
}

static int l_abort(lua_State *L) {
  conn *c = check_conn(L);
  conn_abort(c);
  return 0;
}

static int l_set_owner(lua_State *L) {
  check_conn(L);
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, 1);
  return 0;
}

static int l_info(lua_State *L) {
  conn *c = check_conn(L);
  struct sockaddr_storage ss;
  int len = sizeof ss;
  char ip[64] = "";
  int port = 0;
  if (!c->h.closed &&
      uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
    if (ss.ss_family == AF_INET) {
      uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
      port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
      port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
  }
  lua_createtable(L, 0, 8);
  lua_pushinteger(L, (lua_Integer)c->writes);
  lua_setfield(L, -2, "writes");
  lua_pushstring(L, ip);
  lua_setfield(L, -2, "peer");
  lua_pushinteger(L, port);
  lua_setfield(L, -2, "port");
  lua_pushinteger(L, (lua_Integer)c->bytes_in);
  lua_setfield(L, -2, "bytes_in");
  lua_pushboolean(L, c->parser && lx_stream_is_idle(c->parser));
  lua_setfield(L, -2, "parser_idle");
  lua_pushinteger(L, (lua_Integer)c->bytes_out);
  lua_setfield(L, -2, "bytes_out");
  lua_pushinteger(L, (lua_Integer)(c->out_len + c->wbuf_len));
  lua_setfield(L, -2, "queued");
  lua_pushboolean(L, !c->h.closed);
  lua_setfield(L, -2, "open");
  return 1;
}

/* conn:bytes_in() -> bytes read from the socket so far (cheap: for rate
 * limits checked on every stanza) */
static int l_bytes_in(lua_State *L) {
  conn *c = check_conn(L);
  lua_pushinteger(L, (lua_Integer)c->bytes_in);
  return 1;
}

/* conn:raw() -> true: no stream parser; every byte read (decrypted, under
 * TLS) is dispatched as a "data" event, for protocols other than XMPP on
 * lxmpp's own connections and TLS (HTTP upload, XEP-0363). */
static int l_raw(lua_State *L) {
  conn *c = check_conn(L);
  if (c->h.closed) return fail_closed(L);
  if (c->parser) return luaL_error(L, "raw: this connection parses XML");
  c->raw = 1;
  lx_defer(c->h.lp, &c->cont);           /* deliver what TLS holds, then read */
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:set_max_queue(bytes): the bound on queued output */
static int l_set_max_queue(lua_State *L) {
  conn *c = check_conn(L);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n > 0, 2, "must be positive");
  c->max_out = (size_t)n;
  return 0;
}

static int l_conn_tostring(lua_State *L) {
  conn *c = check_conn(L);
  lua_pushfstring(L, "lxmpp.conn (%s)", c->h.closed ? "closed" : "open");
  return 1;
}

/* ---- listener methods --------------------------------------------------------- */

static int l_listener_port(lua_State *L) {
  listener *ls = luaL_checkudata(L, 1, LISTENER_MT);
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (ls->h.closed ||
      uv_tcp_getsockname(&ls->tcp, (struct sockaddr *)&ss, &len) != 0)
    return 0;
  if (ss.ss_family == AF_INET)
    lua_pushinteger(L, ntohs(((struct sockaddr_in *)&ss)->sin_port));
  else
    lua_pushinteger(L, ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
  return 1;
}

static int l_listener_close(lua_State *L) {
  listener *ls = luaL_checkudata(L, 1, LISTENER_MT);
  lx_handle_close(&ls->h, (uv_handle_t *)&ls->tcp);
  return 0;
}

void lx_open_net(lua_State *L) {
  static const luaL_Reg conn_methods[] = {
    {"parse", l_parse}, {"write", l_write}, {"restart", l_restart},
    {"pause", l_pause}, {"resume", l_resume}, {"close", l_close},
    {"abort", l_abort}, {"info", l_info}, {"set_owner", l_set_owner},
    {"set_max_queue", l_set_max_queue}, {"starttls", l_starttls},
    {"bytes_in", l_bytes_in}, {"raw", l_raw},
    {"tls_info", l_tls_info}, {"channel_binding", l_channel_binding},
    {NULL, NULL}
  };
  static const luaL_Reg listener_methods[] = {
    {"port", l_listener_port}, {"close", l_listener_close}, {NULL, NULL}
  };
  /* no __gc: a conn is pinned while open and its close callback frees all */
  lx_class(L, CONN_MT, conn_methods, NULL, NULL, l_conn_tostring);
  lx_class(L, LISTENER_MT, listener_methods, NULL, NULL, NULL);
  lua_pop(L, 2);
  lua_pushcfunction(L, l_tcp_connect);
  lua_setfield(L, -2, "tcp_connect");
  lua_pushcfunction(L, l_tcp_listen);
  lua_setfield(L, -2, "tcp_listen");
}
