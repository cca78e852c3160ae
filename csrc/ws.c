/*
 * ws.c - the WebSocket framing engine (see ws.h): RFC 6455 §5 frames in,
 * whole text messages out, and frame headers for what we send.
 *
 * The decoder is a two-state machine (reading a header, reading a payload)
 * that checks every rule of §5.2-§5.5 the moment the byte that breaks it
 * arrives: RSV bits (no extension is ever negotiated, §5.2), reserved
 * opcodes, masking by role (§5.1: a server fails unmasked frames, a client
 * masked ones), minimal length encoding and the 64-bit length's top bit
 * (§5.2), control frames of at most 125 bytes and never fragmented (§5.5),
 * continuation frames only inside a message and data frames never inside
 * one (§5.4), the message bound (checked on each frame header, before its
 * payload is read: 1009), binary messages (1003: RFC 7395 §3.2 carries
 * XMPP in text messages), UTF-8 of text messages and close reasons (§8.1:
 * 1007) and close status codes (§7.4). Payload bytes are unmasked straight
 * into the reassembly buffer, which grows with the bytes that actually
 * arrive (a header announcing a large frame reserves nothing).
 */
#include "lx.h"
#include "ws.h"
#include "utf8.h"

#include <openssl/rand.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEEP_BUF 16384   /* a reassembly buffer up to this size is reused */

enum { ST_HEADER = 0, ST_PAYLOAD };

struct lx_ws {
  int role;
  size_t max_message;

  const unsigned char *in;  /* fed buffer: in_pos bytes decoded */
  size_t in_len, in_pos;

  int state;
  unsigned char hdr[LX_WS_MAX_HEADER];
  size_t hdr_have, hdr_need;
  int fin, opcode, masked;
  unsigned char key[4];
  uint64_t plen, pgot;      /* payload length of the frame, bytes read */

  char *msg;                /* the message being reassembled */
  size_t msg_len, msg_cap;
  int in_message;           /* a fragmented message awaits continuations */
  int delivered;            /* msg holds the last LX_WS_TEXT's message */

  unsigned char ctl[LX_WS_MAX_CONTROL];
  size_t ctl_len;

  const char *ev_p;         /* payload of the last event */
  size_t ev_len;
  unsigned close_code;

  int failed, closed;
  unsigned err_code;
  char err[160];
};

lx_ws *lx_ws_new(int role, size_t max_message) {
  lx_ws *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  w->role = role;
  w->max_message = max_message;
  w->hdr_need = 2;
  w->close_code = LX_WS_NO_STATUS;
  return w;
}

void lx_ws_free(lx_ws *w) {
  if (!w) return;
  free(w->msg);
  free(w);
}

void lx_ws_feed(lx_ws *w, const char *data, size_t len) {
  w->in = (const unsigned char *)data;
  w->in_len = len;
  w->in_pos = 0;
}

static int fail(lx_ws *w, unsigned code, const char *fmt, ...) {
  va_list ap;
  w->failed = 1;
  w->err_code = code;
  va_start(ap, fmt);
  vsnprintf(w->err, sizeof w->err, fmt, ap);
  va_end(ap);
  w->in_pos = w->in_len;            /* nothing after the violation counts */
  return LX_WS_ERROR;
}

/* ---- UTF-8 and masking ----------------------------------------------------- */

int lx_ws_utf8_valid(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  while (i < len) {
    unsigned long cp;
    size_t n;
    if (len - i >= 8) {               /* ASCII runs, a word at a time */
      uint64_t x;
      memcpy(&x, p + i, 8);
      if (!(x & UINT64_C(0x8080808080808080))) {
        i += 8;
        continue;
      }
    }
    if (p[i] < 0x80) {
      i++;
      continue;
    }
    if (!(n = lx_utf8_decode(p + i, len - i, &cp))) return 0;
    i += n;
  }
  return 1;
}

void lx_ws_mask(unsigned char *p, size_t len, const unsigned char key[4],
                uint64_t off) {
  unsigned char k[8];
  size_t i = 0, j;
  for (j = 0; j < 8; j++) k[j] = key[(off + j) & 3];
  if (len >= 8) {
    uint64_t kw, x;
    memcpy(&kw, k, 8);
    for (; i + 8 <= len; i += 8) {
      memcpy(&x, p + i, 8);
      x ^= kw;
      memcpy(p + i, &x, 8);
    }
  }
  for (; i < len; i++) p[i] ^= k[i & 7];
}

/* ---- decoder -------------------------------------------------------------- */

/* The first two header bytes are in: checks what they alone decide and
 * sets how long the header is. */
static int check_start(lx_ws *w) {
  unsigned b0 = w->hdr[0], b1 = w->hdr[1], len7 = b1 & 0x7F;
  w->fin = (b0 & 0x80) != 0;
  w->opcode = (int)(b0 & 0x0F);
  w->masked = (b1 & 0x80) != 0;
  if (b0 & 0x70)
    return fail(w, LX_WS_PROTOCOL_ERROR, "RSV bits set without a negotiated extension "
                "(RFC 6455 §5.2)");
  switch (w->opcode) {
  case 0x0:
    if (!w->in_message)
      return fail(w, LX_WS_PROTOCOL_ERROR, "a continuation frame outside a message "
                  "(RFC 6455 §5.4)");
    break;
  case LX_WS_OP_TEXT:
    if (w->in_message)
      return fail(w, LX_WS_PROTOCOL_ERROR, "a new message inside a fragmented one "
                  "(RFC 6455 §5.4)");
    break;
  case 0x2:
    return fail(w, LX_WS_UNSUPPORTED, "a binary frame: XMPP is carried in text "
                "messages (RFC 7395 §3.2)");
  case LX_WS_OP_CLOSE:
  case LX_WS_OP_PING:
  case LX_WS_OP_PONG:
    if (!w->fin)
      return fail(w, LX_WS_PROTOCOL_ERROR, "a fragmented control frame (RFC 6455 §5.5)");
    if (len7 > LX_WS_MAX_CONTROL)
      return fail(w, LX_WS_PROTOCOL_ERROR, "a control frame longer than 125 bytes "
                  "(RFC 6455 §5.5)");
    break;
  default:
    return fail(w, LX_WS_PROTOCOL_ERROR, "reserved opcode 0x%X (RFC 6455 §5.2)",
                (unsigned)w->opcode);
  }
  if (w->role == LX_WS_SERVER && !w->masked)
    return fail(w, LX_WS_PROTOCOL_ERROR, "an unmasked frame from a client (RFC 6455 §5.1)");
  if (w->role == LX_WS_CLIENT && w->masked)
    return fail(w, LX_WS_PROTOCOL_ERROR, "a masked frame from a server (RFC 6455 §5.1)");
  w->hdr_need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + (w->masked ? 4 : 0);
  return LX_WS_MORE;
}

/* The whole header is in: the payload length, its encoding, the bound. */
static int check_header(lx_ws *w) {
  unsigned len7 = w->hdr[1] & 0x7F;
  size_t at = 2, i;
  uint64_t n = len7;
  if (len7 == 126) {
    n = (uint64_t)w->hdr[2] << 8 | w->hdr[3];
    at = 4;
    if (n < 126)
      return fail(w, LX_WS_PROTOCOL_ERROR, "a 16-bit length for %u bytes (RFC 6455 §5.2: "
                  "the minimal encoding must be used)", (unsigned)n);
  } else if (len7 == 127) {
    n = 0;
    for (i = 0; i < 8; i++) n = n << 8 | w->hdr[2 + i];
    at = 10;
    if (n >> 63)
      return fail(w, LX_WS_PROTOCOL_ERROR, "a 64-bit length with its top bit set "
                  "(RFC 6455 §5.2)");
    if (n < 65536)
      return fail(w, LX_WS_PROTOCOL_ERROR, "a 64-bit length for %llu bytes (RFC 6455 §5.2: "
                  "the minimal encoding must be used)", (unsigned long long)n);
  }
  if (w->masked) memcpy(w->key, w->hdr + at, 4);
  w->plen = n;
  w->pgot = 0;
  if (w->opcode < LX_WS_OP_CLOSE) {
    if (w->opcode == LX_WS_OP_TEXT) {
      w->in_message = 1;
      w->msg_len = 0;
    }
    if (n > w->max_message - w->msg_len)
      return fail(w, LX_WS_TOO_BIG, "a message larger than %lu bytes",
                  (unsigned long)w->max_message);
  } else {
    w->ctl_len = 0;
  }
  w->state = ST_PAYLOAD;
  return LX_WS_MORE;
}

/* Room for n more message bytes (n <= what max_message leaves). */
static int reserve(lx_ws *w, size_t n) {
  size_t need = w->msg_len + n, ncap;
  char *nb;
  if (need <= w->msg_cap) return 1;
  ncap = w->msg_cap ? w->msg_cap : 1024;
  while (ncap < need) ncap *= 2;
  if (ncap > w->max_message) ncap = w->max_message;
  if (ncap < need) ncap = need;
  if (!(nb = realloc(w->msg, ncap))) return 0;
  w->msg = nb;
  w->msg_cap = ncap;
  return 1;
}

static int valid_close_code(unsigned c) {
  /* §7.4.1 and the IANA registry: 1004-1006 and 1015 are never sent */
  if (c >= 1000 && c <= 1014) return c != 1004 && c != 1005 && c != 1006;
  return c >= 3000 && c <= 4999;
}

/* The frame's payload is complete. */
static int frame_done(lx_ws *w) {
  w->state = ST_HEADER;
  w->hdr_have = 0;
  w->hdr_need = 2;
  switch (w->opcode) {
  case LX_WS_OP_PING:
  case LX_WS_OP_PONG:
    w->ev_p = (const char *)w->ctl;
    w->ev_len = w->ctl_len;
    return w->opcode == LX_WS_OP_PING ? LX_WS_PING : LX_WS_PONG;
  case LX_WS_OP_CLOSE:
    if (w->ctl_len == 1)
      return fail(w, LX_WS_PROTOCOL_ERROR, "a close frame with a 1-byte payload "
                  "(RFC 6455 §5.5.1)");
    w->ev_p = "";
    w->ev_len = 0;
    if (w->ctl_len >= 2) {
      unsigned code = (unsigned)w->ctl[0] << 8 | w->ctl[1];
      if (!valid_close_code(code))
        return fail(w, LX_WS_PROTOCOL_ERROR, "close status code %u is not one a peer "
                    "may send (RFC 6455 §7.4)", code);
      if (!lx_ws_utf8_valid((const char *)w->ctl + 2, w->ctl_len - 2))
        return fail(w, LX_WS_INVALID_DATA, "a close reason that is not UTF-8 "
                    "(RFC 6455 §5.5.1)");
      w->close_code = code;
      w->ev_p = (const char *)w->ctl + 2;
      w->ev_len = w->ctl_len - 2;
    }
    w->closed = 1;
    w->in_pos = w->in_len;          /* nothing follows a close frame */
    return LX_WS_CLOSE;
  default:
    if (!w->fin) return LX_WS_MORE;  /* continuations follow */
    w->in_message = 0;
    if (!lx_ws_utf8_valid(w->msg, w->msg_len))
      return fail(w, LX_WS_INVALID_DATA, "a text message that is not UTF-8 "
                  "(RFC 6455 §8.1)");
    w->delivered = 1;
    w->ev_p = w->msg ? w->msg : "";
    w->ev_len = w->msg_len;
    return LX_WS_TEXT;
  }
}

int lx_ws_next(lx_ws *w) {
  if (w->failed) return LX_WS_ERROR;
  if (w->delivered) {               /* the caller is done with that message */
    w->delivered = 0;
    w->msg_len = 0;
    if (w->msg_cap > KEEP_BUF) lx_ws_idle(w);
  }
  if (w->closed) {
    w->in_pos = w->in_len;
    return LX_WS_MORE;
  }
  for (;;) {
    size_t avail = w->in_len - w->in_pos;
    if (w->state == ST_HEADER) {
      int r;
      size_t n;
      if (!avail) return LX_WS_MORE;
      n = w->hdr_need - w->hdr_have;
      if (n > avail) n = avail;
      memcpy(w->hdr + w->hdr_have, w->in + w->in_pos, n);
      w->in_pos += n;
      w->hdr_have += n;
      if (w->hdr_have < w->hdr_need) continue;
      if (w->hdr_have == 2) {
        if ((r = check_start(w)) != LX_WS_MORE) return r;
        if (w->hdr_need > 2) continue;
      }
      if ((r = check_header(w)) != LX_WS_MORE) return r;
      if (w->plen == 0 && (r = frame_done(w)) != LX_WS_MORE) return r;
    } else {
      uint64_t left = w->plen - w->pgot;
      size_t n = left < avail ? (size_t)left : avail;
      unsigned char *dst;
      int r;
      if (!n) return LX_WS_MORE;
      if (w->opcode >= LX_WS_OP_CLOSE) {
        dst = w->ctl + w->ctl_len;
        w->ctl_len += n;
      } else {
        if (!reserve(w, n))
          return fail(w, LX_WS_TOO_BIG, "out of memory for a %lu-byte message",
                      (unsigned long)(w->msg_len + n));
        dst = (unsigned char *)w->msg + w->msg_len;
        w->msg_len += n;
      }
      memcpy(dst, w->in + w->in_pos, n);
      if (w->masked) lx_ws_mask(dst, n, w->key, w->pgot);
      w->in_pos += n;
      w->pgot += n;
      if (w->pgot == w->plen && (r = frame_done(w)) != LX_WS_MORE) return r;
    }
  }
}

const char *lx_ws_payload(const lx_ws *w, size_t *len) {
  if (len) *len = w->ev_len;
  return w->ev_p;
}

unsigned lx_ws_close_code(const lx_ws *w) { return w->close_code; }

const char *lx_ws_error(const lx_ws *w, unsigned *code) {
  if (code) *code = w->failed ? w->err_code : 0;
  return w->failed ? w->err : NULL;
}

size_t lx_ws_unread(const lx_ws *w) { return w->in_len - w->in_pos; }

const char *lx_ws_unread_ptr(const lx_ws *w) {
  return (const char *)w->in + w->in_pos;
}

void lx_ws_rebase(lx_ws *w, const char *unread) {
  w->in = (const unsigned char *)unread;
  w->in_len -= w->in_pos;
  w->in_pos = 0;
}

int lx_ws_idle(lx_ws *w) {
  if (!w->msg || w->in_message || w->delivered) return 0;
  free(w->msg);
  w->msg = NULL;
  w->msg_cap = w->msg_len = 0;
  return 1;
}

size_t lx_ws_memory(const lx_ws *w) { return w->msg_cap; }

/* ---- encoder -------------------------------------------------------------- */

size_t lx_ws_header(unsigned char *out, int opcode, uint64_t len,
                    const unsigned char *key) {
  size_t n = 2, i;
  out[0] = (unsigned char)(0x80 | (opcode & 0x0F));
  if (len < 126) {
    out[1] = (unsigned char)len;
  } else if (len < 65536) {
    out[1] = 126;
    out[2] = (unsigned char)(len >> 8);
    out[3] = (unsigned char)len;
    n = 4;
  } else {
    out[1] = 127;
    for (i = 0; i < 8; i++) out[2 + i] = (unsigned char)(len >> (56 - 8 * i));
    n = 10;
  }
  if (key) {
    out[1] |= 0x80;
    memcpy(out + n, key, 4);
    n += 4;
  }
  return n;
}

int lx_ws_random(unsigned char *p, size_t n) {
  return n <= 0x7FFFFFFF && RAND_bytes(p, (int)n) == 1;
}

size_t lx_ws_close_payload(unsigned char *out, unsigned code, const char *reason) {
  size_t n = reason ? strlen(reason) : 0;
  out[0] = (unsigned char)(code >> 8);
  out[1] = (unsigned char)code;
  if (n > LX_WS_MAX_CONTROL - 2) {
    n = LX_WS_MAX_CONTROL - 2;
    /* never cut a UTF-8 sequence: back up to the start of the last one */
    while (n > 0 && ((unsigned char)reason[n] & 0xC0) == 0x80) n--;
  }
  if (n) memcpy(out + 2, reason, n);
  return 2 + n;
}
