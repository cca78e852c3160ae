/*
 * ws.h - the WebSocket framing engine (RFC 6455 §5): an incremental
 * decoder for what a peer sends, and the encoder of what we send.
 *
 * Pure C, no Lua (no lua_State): the connection code (net_ws.c), the
 * libFuzzer target (fuzz/fuzz_ws.c) and C tests drive it alike. It carries
 * XMPP (RFC 7395), so it takes text messages only: binary frames are
 * refused (1003), every text message must be UTF-8 (1007), and no
 * extension is negotiated, so any RSV bit is a protocol error (1002).
 *
 * Pull interface, like the stream parser's (stream.h): lx_ws_feed() hands
 * over a buffer (not copied; it must stay valid until lx_ws_next() returns
 * LX_WS_MORE, or be moved with lx_ws_rebase), then lx_ws_next() is called
 * until it returns LX_WS_MORE. Each call returns at most one event and
 * consumes no byte past the frame that produced it, so whatever the caller
 * does between two calls (parse the message, stop reading) takes effect
 * before another frame is decoded. Any chunking of the same bytes gives the
 * same events.
 */
#ifndef LXMPP_WS_H
#define LXMPP_WS_H

#include "lx.h"

#include <stddef.h>
#include <stdint.h>

LX_HIDDEN_BEGIN

enum lx_ws_role {
  LX_WS_SERVER = 0, /* peers are clients: their frames must be masked */
  LX_WS_CLIENT = 1  /* the peer is a server: its frames must not be */
};

enum lx_ws_event {
  LX_WS_MORE = 0, /* the fed buffer is used up: feed more */
  LX_WS_TEXT,     /* a complete text message (reassembled, unmasked, UTF-8) */
  LX_WS_PING,     /* a ping: answer with a pong carrying the same payload */
  LX_WS_PONG,     /* a pong (solicited or not): nothing to do */
  LX_WS_CLOSE,    /* the peer's close frame; nothing is decoded after it */
  LX_WS_ERROR     /* the peer broke the protocol; see lx_ws_error */
};

/* Close status codes (RFC 6455 §7.4.1) the engine uses. */
#define LX_WS_NORMAL 1000
#define LX_WS_PROTOCOL_ERROR 1002
#define LX_WS_UNSUPPORTED 1003
#define LX_WS_NO_STATUS 1005     /* a close frame without a code (never sent) */
#define LX_WS_INVALID_DATA 1007
#define LX_WS_TOO_BIG 1009

#define LX_WS_OP_TEXT 0x1
#define LX_WS_OP_CLOSE 0x8
#define LX_WS_OP_PING 0x9
#define LX_WS_OP_PONG 0xA

#define LX_WS_MAX_HEADER 14      /* 2 + 8 (64-bit length) + 4 (mask key) */
#define LX_WS_MAX_CONTROL 125    /* payload of a control frame */

typedef struct lx_ws lx_ws;

/* A decoder for one connection; max_message bounds a reassembled message
 * (what a larger one gets: close 1009). NULL when out of memory. The
 * caller owns the result. */
lx_ws *lx_ws_new(int role, size_t max_message);
void lx_ws_free(lx_ws *w);                  /* NULL is fine */

void lx_ws_feed(lx_ws *w, const char *data, size_t len);
int lx_ws_next(lx_ws *w);

/* The payload of the last event: the message (LX_WS_TEXT), the ping or
 * pong payload, the close frame's reason (UTF-8, may be empty). Valid until
 * the next lx_ws_next() or lx_ws_idle(). */
const char *lx_ws_payload(const lx_ws *w, size_t *len);

/* The status code of the peer's close frame (LX_WS_NO_STATUS without one). */
unsigned lx_ws_close_code(const lx_ws *w);

/* After LX_WS_ERROR: a message for humans, and the status code to close
 * with (1002, 1003, 1007 or 1009). */
const char *lx_ws_error(const lx_ws *w, unsigned *code);

/* Bytes of the fed buffer not decoded yet, and moving them (the caller
 * copies them elsewhere and hands the copy over; same rule as feed). */
size_t lx_ws_unread(const lx_ws *w);
const char *lx_ws_unread_ptr(const lx_ws *w);
void lx_ws_rebase(lx_ws *w, const char *unread);

/* Between messages: frees the reassembly buffer (a quiet connection holds
 * none). Returns 1 when it did. */
int lx_ws_idle(lx_ws *w);

/* Bytes the decoder holds (its reassembly buffer). */
size_t lx_ws_memory(const lx_ws *w);

/* ---- encoder -------------------------------------------------------------- */

/* Writes the header of one unfragmented frame (FIN set) carrying len
 * payload bytes into out (LX_WS_MAX_HEADER bytes of room) and returns its
 * length. key (the client role, RFC 6455 §5.3): the frame's mask key, a
 * fresh one from lx_ws_random for every frame, written into the header;
 * the caller masks the payload with lx_ws_mask. NULL: unmasked. */
size_t lx_ws_header(unsigned char *out, int opcode, uint64_t len,
                    const unsigned char *key);

/* n bytes from OpenSSL's RAND_bytes (mask keys are drawn in batches from
 * them); 0 when no randomness is available. */
int lx_ws_random(unsigned char *p, size_t n);

/* XORs p[0..len) with the mask key, starting at payload offset off
 * (RFC 6455 §5.3); masking twice unmasks. */
void lx_ws_mask(unsigned char *p, size_t len, const unsigned char key[4],
                uint64_t off);

/* The payload of a close frame: the code, then as much of reason as fits
 * in a control frame without cutting a UTF-8 sequence. out: room for
 * LX_WS_MAX_CONTROL bytes. Returns its length. */
size_t lx_ws_close_payload(unsigned char *out, unsigned code, const char *reason);

/* Whether p[0..len) is UTF-8 (RFC 3629; U+0000 included, as in RFC 6455). */
int lx_ws_utf8_valid(const char *p, size_t len);

LX_HIDDEN_END

#endif
