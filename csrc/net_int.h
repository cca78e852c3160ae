/*
 * net_int.h - what the two files of the TCP connections share: net.c
 * (creation, and the conn and listener methods of the Lua binding) and
 * net_io.c (the send and receive paths, the per-loop read buffers and idle
 * sweeps). Internal: nothing else includes this file, and none of these
 * names leaves core.so (-fvisibility=hidden); each is documented where it
 * is defined.
 */
#ifndef LXMPP_NET_INT_H
#define LXMPP_NET_INT_H

#include "lx.h"

#include "core.h"
#include "loop.h"
#include "stream.h"
#include "tls.h"
#include "ws.h"

LX_HIDDEN_BEGIN

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
  lx_ws *ws;                  /* WebSocket mode (net_ws.c); NULL otherwise */
  int ws_client;              /* our role is the client: we mask */
  int ws_sent_close;          /* our close frame is queued */
  int ws_close_wait;          /* close(): waiting for the peer's close frame */
  int ws_halt;                /* the parser failed: decode no more messages */
  int ws_peer_closed;         /* the peer's close frame arrived */
  uint64_t ws_deadline;       /* end of that wait (uv_now, ms) */
  uint64_t close_deadline;    /* close(): aborted at this uv_now (ms) if still
                                 open and the peer read nothing since; 0: none */
  uint64_t close_linger;      /* close(): ms without progress before that */
  size_t close_left;          /* close(): bytes unsent at the last progress */
  int draining;               /* closing: what the peer sends is read and
                                 dropped, never parsed (lx_net_drain) */
  int in_done;                /* the peer's EOF or a read error was seen */
  int lingering;              /* draining, our FIN sent: waiting for the
                                 peer's EOF (lx_net_drain) */
  uint64_t linger_quiet;      /* lingering: closed at this uv_now unless the
                                 peer sends or reads more before */
  uint64_t linger_end;        /* lingering: closed at this uv_now whatever the
                                 peer sends (0: not everything delivered yet) */
  uint64_t bytes_in, bytes_out, writes;
  uv_connect_t creq;
  uv_write_t wreq;
  uv_shutdown_t sreq;
} conn;

/* ---- events (net_io.c) -------------------------------------------------- */

int lx_net_push_event(lua_State *L, lx_handle *h, const char *event);
void lx_net_emit(lx_handle *h, const char *event);
void lx_net_emit_msg(lx_handle *h, const char *event, const char *msg,
                     const char *cond);
void lx_net_conn_freed(lx_handle *h);
void lx_net_conn_abort(conn *c);

/* ---- send path (net_io.c) ----------------------------------------------- */

void lx_net_run_flush(lx_deferred *d);
int lx_net_move_ciphertext(conn *c);
int lx_net_encrypt_pending(conn *c);
int lx_net_enqueue(conn *c, const char *p, size_t len);
int lx_net_enqueue_frame(conn *c, int opcode, const char *p, size_t len,
                         int bounded);
/* The loop's spare output buffers: how many, and their bytes (*bytes). */
size_t lx_net_spare(lx_loop *lp, size_t *bytes);

/* ---- receive path (net_io.c) -------------------------------------------- */

void lx_net_start_reading(conn *c);
void lx_net_run_cont(lx_deferred *d);
int lx_net_feed_protected(lua_State *L);
void lx_net_touch(conn *c);
void lx_net_drain(conn *c);

/* ---- WebSocket mode (net_ws.c) ---------------------------------------- */

int lx_net_ws_start(conn *c, int role, size_t max_message, const char *buffered,
                    size_t len);
void lx_net_ws_input(conn *c, const char *p, size_t n);
int lx_net_ws_drain(conn *c);
void lx_net_ws_keep_rest(conn *c);
int lx_net_ws_write(conn *c, const char *p, size_t len);
int lx_net_ws_close(conn *c);
void lx_net_ws_finish(conn *c);

LX_HIDDEN_END

#endif
