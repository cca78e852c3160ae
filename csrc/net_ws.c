/*
 * net_ws.c - WebSocket mode of TCP connections (conn:websocket, net.c):
 * RFC 6455 frames between the socket (or TLS) and the stream parser in
 * framed mode (RFC 7395), all in C, so a WebSocket stream still costs one
 * Lua call per stanza.
 *
 * Receive: socket bytes -> (TLS) -> the framing engine (ws.c) -> each text
 * message is handed whole to the parser (LX_MODE_FRAMED), whose event is
 * dispatched as on a TCP stream ("open", "stanza", "stream-close",
 * "parse-error"). Pings are answered here, pongs dropped. A peer's close
 * frame is answered (the status code echoed) and dispatched as "eof" code
 * reason, and the TCP connection then closed (RFC 6455 §5.5.1); a protocol
 * violation closes with its status code (1002, 1003, 1007, 1009) after a
 * "read-error" msg "closed" code (RFC 6455 §7.1.7).
 *
 * Send: conn:write(bytes) is one text message (lx_net_enqueue_frame);
 * conn:close() sends a close frame (1000) and keeps reading, dropping data,
 * until the peer's close frame, its EOF or CLOSE_WAIT_MS (checked by the
 * idle sweep of net_io.c), and only then closes TLS and the socket, which
 * lingers as any closing TCP conn does (net_io.c, lx_net_drain).
 *
 * Input buffering follows net_io.c: the engine reads the shared buffer of
 * the current callback, and what it has not decoded when the callback ends
 * moves to the conn's own rest (lx_net_ws_keep_rest). Messages live in the
 * engine's own reassembly buffer, so the parser never reads a shared one.
 */
#include "lx.h"
#include "net_int.h"

#include <stdlib.h>
#include <string.h>

#define CLOSE_WAIT_MS 5000    /* close(): how long the peer has to answer */

/* Switches c to WebSocket mode; buffered: bytes already read past the HTTP
 * handshake (raw mode gave them to Lua), decoded first. 0 when out of
 * memory. Reading waits for parse(). */
int lx_net_ws_start(conn *c, int role, size_t max_message, const char *buffered,
                    size_t len) {
  if (!(c->ws = lx_ws_new(role, max_message))) return 0;
  c->ws_client = role == LX_WS_CLIENT;
  c->raw = 0;
  if (c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
  if (len) {
    char *p = malloc(len);
    if (!p) return 0;
    memcpy(p, buffered, len);
    free(c->rest);
    c->rest = p;
    c->fbuf = p;
    c->flen = len;
    lx_ws_feed(c->ws, p, len);
  }
  return 1;
}

static void oom(conn *c) {
  lx_net_emit_msg(&c->h, "read-error", "out of memory", "resource-constraint");
  if (!c->h.closed) lx_net_conn_abort(c);
}

/* New bytes for the engine (a shared buffer). Whatever it had not decoded
 * yet goes first (only when reading went on past a stop; normally the
 * engine has used up its input before more is read). */
void lx_net_ws_input(conn *c, const char *p, size_t n) {
  size_t un = lx_ws_unread(c->ws);
  if (un) {
    char *nb = malloc(un + n);
    if (!nb) {
      oom(c);
      return;
    }
    memcpy(nb, lx_ws_unread_ptr(c->ws), un);
    memcpy(nb + un, p, n);
    free(c->rest);
    c->rest = nb;
    p = nb;
    n += un;
  } else {
    free(c->rest);
    c->rest = NULL;
  }
  c->fbuf = p;
  c->flen = n;
  lx_ws_feed(c->ws, p, n);
}

/* At the end of a callback: the engine's unread input moves to rest. */
void lx_net_ws_keep_rest(conn *c) {
  size_t un = lx_ws_unread(c->ws);
  char *p;
  if (!un || c->fbuf == c->rest) return;
  if (!(p = malloc(un))) {
    oom(c);
    return;
  }
  memcpy(p, lx_ws_unread_ptr(c->ws), un);
  free(c->rest);
  c->rest = p;
  c->fbuf = p;
  c->flen = un;
  lx_ws_rebase(c->ws, p);
}

static void send_close(conn *c, unsigned code, const char *reason) {
  unsigned char pl[LX_WS_MAX_CONTROL];
  size_t n = lx_ws_close_payload(pl, code, reason);
  lx_net_enqueue_frame(c, LX_WS_OP_CLOSE, (const char *)pl, n, 0);
  c->ws_sent_close = 1;
}

static void stop_reading(conn *c) {
  if (c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
}

/* The closing handshake is over (or given up): close TLS, then the socket
 * once the output is flushed. */
void lx_net_ws_finish(conn *c) {
  c->ws_close_wait = 0;
  c->closing = 1;
  c->feeding = 0;
  /* a close with its bound (conn:close) lingers as a TCP one does,
   * reading and dropping until the peer's EOF (net_io.c, lx_net_drain) */
  if (c->close_deadline) lx_net_drain(c);
  else stop_reading(c);
  if (c->h.closed) return;
  if (c->tls && c->tls_done && lx_net_encrypt_pending(c) &&
      lx_tls_shutdown(c->tls) == LX_TLS_OK)
    lx_net_move_ciphertext(c);
  lx_defer(c->h.lp, &c->flush);
}

/* Dispatches event with a string and an integer (and an optional string). */
static void emit3(conn *c, const char *event, const char *s1, size_t n1,
                  const char *s2, lua_Integer code) {
  lua_State *L = c->h.lp->L;
  int n = 4;
  if (!L || !lx_net_push_event(L, &c->h, event)) return;
  if (s2) {
    lua_pushlstring(L, s1, n1);
    lua_pushstring(L, s2);
    lua_pushinteger(L, code);
    n = 6;
  } else {
    lua_pushinteger(L, code);
    lua_pushlstring(L, s1, n1);
    n = 5;
  }
  lx_dispatch(c->h.lp, n);
}

/* The peer's close frame: answered, then "eof" code reason, and the TCP
 * connection closed (the server closes first, RFC 6455 §7.1.1; a client
 * that got the server's close frame has nothing left to wait for). */
static void peer_closed(conn *c) {
  unsigned code = lx_ws_close_code(c->ws);
  size_t rlen;
  const char *reason = lx_ws_payload(c->ws, &rlen);
  stop_reading(c);
  c->ws_peer_closed = 1;        /* (no lingering needed: lx_net_drain) */
  if (!c->ws_sent_close) send_close(c, code == LX_WS_NO_STATUS ? LX_WS_NORMAL : code, NULL);
  if (c->ws_close_wait) {
    lx_net_ws_finish(c);
    return;
  }
  emit3(c, "eof", reason, rlen, NULL, (lua_Integer)code);
  if (!c->h.closed && !c->closing) lx_net_ws_finish(c);
}

/* A protocol violation: close with its status code (RFC 6455 §7.1.7). */
static void failed(conn *c) {
  unsigned code;
  const char *msg = lx_ws_error(c->ws, &code);
  stop_reading(c);
  if (!c->ws_sent_close) send_close(c, code, msg);
  if (c->ws_close_wait) {
    lx_net_ws_finish(c);
    return;
  }
  emit3(c, "read-error", msg, strlen(msg), "closed", (lua_Integer)code);
  if (!c->h.closed && !c->closing) lx_net_ws_finish(c);
}

/* Decodes and dispatches what the engine holds. Returns 1 when it needs
 * more input, 0 when the conn stopped (paused, closed, no parser, failed,
 * the peer closed). While closing, messages and pings are dropped: only
 * the peer's close frame is awaited. */
int lx_net_ws_drain(conn *c) {
  for (;;) {
    size_t len;
    const char *p;
    if (c->feeding) {
      lx_protected(c->h.lp, lx_net_feed_protected, c);
      if (c->feeding || c->h.closed || !c->parser) return 0;
    }
    if (c->h.closed) return 0;
    if (!c->closing && (c->paused || !c->parser || c->ws_halt)) return 0;
    switch (lx_ws_next(c->ws)) {
    case LX_WS_MORE:
      return 1;
    case LX_WS_TEXT:
      if (c->closing) continue;
      p = lx_ws_payload(c->ws, &len);
      lx_stream_feed(c->parser, p, len, 1);
      c->feeding = 1;
      continue;
    case LX_WS_PING:
      /* the same payload back; dropped when the output queue is full (a
       * peer that pings without reading gets nothing queued for it) */
      p = lx_ws_payload(c->ws, &len);
      if (!c->closing) lx_net_enqueue_frame(c, LX_WS_OP_PONG, p, len, 1);
      continue;
    case LX_WS_PONG:
      continue;
    case LX_WS_CLOSE:
      peer_closed(c);
      return 0;
    default:
      failed(c);
      return 0;
    }
  }
}

/* conn:write in WebSocket mode: bytes as one text message. 1 queued, 0
 * queue full, -1 not UTF-8 (RFC 6455 §5.6). */
int lx_net_ws_write(conn *c, const char *p, size_t len) {
  if (!lx_ws_utf8_valid(p, len)) return -1;
  return lx_net_enqueue_frame(c, LX_WS_OP_TEXT, p, len, 1);
}

/* conn:close in WebSocket mode (c->closing just set): sends the close
 * frame and waits for the peer's. Returns 0 when there is nothing to wait
 * for (our close frame went out already): close as a TCP conn does. */
int lx_net_ws_close(conn *c) {
  if (c->ws_sent_close) return 0;
  send_close(c, LX_WS_NORMAL, NULL);
  c->ws_close_wait = 1;
  c->ws_deadline = uv_now(&c->h.lp->uv) + CLOSE_WAIT_MS;
  c->feeding = 0;                  /* the rest of a paused message is dropped */
  c->paused = 0;
  lx_net_touch(c);                 /* the idle sweep enforces the deadline */
  lx_defer(c->h.lp, &c->cont);     /* decode what is buffered, then read */
  return 1;
}
