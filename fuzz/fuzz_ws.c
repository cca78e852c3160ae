/*
 * fuzz_ws.c - libFuzzer target for the WebSocket framing engine (ws.c).
 *
 * ws.h promises that any chunking of the same bytes gives the same events,
 * that no event is returned past the frame that makes it, and that memory
 * stays bounded by max_message. This target decodes every input once fed
 * in ONE piece and once in pseudo-random chunks (moving the undecoded bytes
 * to a fresh buffer at random points, as net_ws.c does when a read callback
 * ends), and the two event logs must be identical. Also checked: a text
 * message is UTF-8 and at most max_message bytes, a control payload at most
 * 125, an error carries one of the codes ws.h names and stays, nothing is
 * decoded after a close frame, and what the encoder writes (lx_ws_header,
 * lx_ws_mask, lx_ws_close_payload) decodes back to what was encoded. The
 * text messages of the whole feed also go through the stream parser in
 * framed mode (RFC 7395), as net_ws.c hands them over: one event or an
 * error per message, <open/> first (or <close/>, with its attributes
 * bounded), and memory bounded by the limits. A
 * failed check traps.
 *
 * Input layout (fuzz/make_corpus.lua writes seeds in it):
 *   byte 0    bit 0: client role (the peer must not mask); bits 1-3: chunk
 *             size class (chunks of 1..N bytes, N = 1, 2, 3, 7, 16, 64,
 *             512, 65536)
 *   byte 1    max_message: 64 * byte1, 0 = 65536; odd: the framed parser's
 *             max_stanza_size is 200 (else the default)
 *   bytes 2-3 chunking seed
 *   the rest  the bytes a peer sends
 *
 * Build: see the Makefile (make fuzz).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stream.h"
#include "ws.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/asan_interface.h>
#endif
#endif
#ifndef ASAN_POISON_MEMORY_REGION
#define ASAN_POISON_MEMORY_REGION(p, n) ((void)(p), (void)(n))
#define ASAN_UNPOISON_MEMORY_REGION(p, n) ((void)(p), (void)(n))
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HDR_LEN 4

static void fail_check(const char *what, int line) __attribute__((noreturn));
static void fail_check(const char *what, int line) {
  fprintf(stderr, "fuzz_ws.c:%d: check failed: %s\n", line, what);
  __builtin_trap();
}
#define CHECK(c)                                                               \
  do {                                                                         \
    if (!(c)) fail_check(#c, __LINE__);                                        \
  } while (0)

static const size_t chunk_classes[8] = {1, 2, 3, 7, 16, 64, 512, 65536};

static uint32_t rnd(uint32_t *x) { /* xorshift32 */
  *x ^= *x << 13;
  *x ^= *x >> 17;
  *x ^= *x << 5;
  return *x;
}

/* ---- event logs ------------------------------------------------------------ */

typedef struct evlog {
  unsigned char *p;   /* records: event, code (2 bytes), length (4), bytes */
  size_t len, cap;
} evlog;

static void put(evlog *lg, const void *p, size_t n) {
  if (lg->cap - lg->len < n) {
    size_t ncap = lg->cap ? lg->cap : 256;
    unsigned char *np;
    while (ncap - lg->len < n) ncap *= 2;
    np = realloc(lg->p, ncap);
    CHECK(np != NULL);
    lg->p = np;
    lg->cap = ncap;
  }
  if (n) memcpy(lg->p + lg->len, p, n);
  lg->len += n;
}

static void record(evlog *lg, int ev, unsigned code, const char *p, size_t n) {
  unsigned char h[7];
  h[0] = (unsigned char)ev;
  h[1] = (unsigned char)(code >> 8);
  h[2] = (unsigned char)code;
  h[3] = (unsigned char)(n >> 24);
  h[4] = (unsigned char)(n >> 16);
  h[5] = (unsigned char)(n >> 8);
  h[6] = (unsigned char)n;
  put(lg, h, sizeof h);
  put(lg, p, n);
}

/* Checks one event and logs it; returns 0 at the end of the input's
 * meaning (an error or a close frame). */
static int check_event(lx_ws *w, int ev, size_t max_message, evlog *lg) {
  size_t n = 0;
  const char *p;
  unsigned code = 0;
  CHECK(lx_ws_memory(w) <= max_message);
  switch (ev) {
  case LX_WS_TEXT:
    p = lx_ws_payload(w, &n);
    CHECK(n <= max_message);
    CHECK(lx_ws_utf8_valid(p, n));
    record(lg, ev, 0, p, n);
    return 1;
  case LX_WS_PING:
  case LX_WS_PONG:
    p = lx_ws_payload(w, &n);
    CHECK(n <= LX_WS_MAX_CONTROL);
    record(lg, ev, 0, p, n);
    return 1;
  case LX_WS_CLOSE:
    p = lx_ws_payload(w, &n);
    code = lx_ws_close_code(w);
    CHECK(n <= LX_WS_MAX_CONTROL - 2);
    CHECK(lx_ws_utf8_valid(p, n));
    CHECK(code == LX_WS_NO_STATUS ? n == 0 : code >= 1000 && code < 5000);
    record(lg, ev, code, p, n);
    CHECK(lx_ws_next(w) == LX_WS_MORE);       /* nothing after a close */
    CHECK(lx_ws_unread(w) == 0);
    return 0;
  case LX_WS_ERROR:
    p = lx_ws_error(w, &code);
    CHECK(p != NULL);
    CHECK(code == LX_WS_PROTOCOL_ERROR || code == LX_WS_UNSUPPORTED ||
          code == LX_WS_INVALID_DATA || code == LX_WS_TOO_BIG);
    record(lg, ev, code, NULL, 0);
    CHECK(lx_ws_next(w) == LX_WS_ERROR);      /* stays failed */
    return 0;
  default:
    fail_check("unknown event", __LINE__);
  }
}

/* A text message through the framed parser, as net_ws.c feeds it. */
typedef struct framed {
  lx_stream *s;
  lx_limits lim;
  int failed, opened, closed;
} framed;

static void parse_message(framed *f, const char *p, size_t n) {
  int ev, ev2;
  if (f->failed) return;
  lx_stream_feed(f->s, p, n, 1);
  ev = lx_stream_next(f->s);
  CHECK(lx_stream_memory(f->s) <= 64 * f->lim.max_stanza_size + 32768);
  if (ev == LX_EV_ERROR) {
    const char *cond;
    CHECK(lx_stream_error(f->s, &cond) != NULL && cond != NULL);
    f->failed = 1;
    return;
  }
  CHECK(ev != LX_EV_MORE);                    /* every message gives something */
  CHECK(!f->closed);
  if (ev == LX_EV_OPEN) {
    CHECK(!f->opened);
    f->opened = 1;
  } else if (ev == LX_EV_CLOSE) {             /* may come first (RFC 7395 §3.6.1) */
    lx_tree t;
    lx_stream_tree(f->s, &t);
    CHECK(t.nnodes == 1 && t.nodes[0].nattr <= f->lim.max_attrs);
    f->closed = 1;
  } else {
    CHECK(f->opened);
  }
  CHECK(n <= f->lim.max_stanza_size);
  ev2 = lx_stream_next(f->s);
  CHECK(ev2 == LX_EV_MORE);                   /* one event per message */
  if (ev == LX_EV_STANZA && (n & 3) == 0) {   /* sometimes: a stream restart */
    CHECK(lx_stream_reset(f->s));
    f->opened = 0;
  }
  if ((n & 7) == 1) lx_stream_idle(f->s);
}

/* Decodes p[0..len) fed whole or in chunks; each chunk is copied to the end
 * of a poisoned block, so ASan sees a read outside it or after it was
 * given back. */
static void run(int role, size_t max_message, const unsigned char *p,
                size_t len, size_t chunk_max, uint32_t seed, evlog *lg,
                framed *f) {
  lx_ws *w = lx_ws_new(role, max_message);
  uint32_t rng = 0x9E3779B9u ^ (seed * 0x10001u);
  size_t pos = 0, cap = chunk_max < len ? chunk_max : len;
  char *block = malloc(cap ? cap : 1), *moved = NULL;
  int going = 1;
  CHECK(w != NULL && block != NULL);
  ASAN_POISON_MEMORY_REGION(block, cap ? cap : 1);
  while (going && pos < len) {
    size_t n = chunk_max >= len ? len : 1 + rnd(&rng) % chunk_max;
    char *at;
    if (n > len - pos) n = len - pos;
    at = block + (cap - n);
    ASAN_UNPOISON_MEMORY_REGION(at, n);
    memcpy(at, p + pos, n);
    lx_ws_feed(w, at, n);
    for (;;) {
      int ev = lx_ws_next(w);
      if (ev == LX_WS_MORE) {
        CHECK(lx_ws_unread(w) == 0);
        break;
      }
      if (!check_event(w, ev, max_message, lg)) {
        going = 0;
        break;
      }
      if (f && ev == LX_WS_TEXT) {
        size_t n;
        const char *m = lx_ws_payload(w, &n);
        parse_message(f, m, n);
      }
      if (rnd(&rng) % 4 == 0 && lx_ws_unread(w)) {
        /* the caller keeps the rest in a buffer of its own */
        size_t un = lx_ws_unread(w);
        char *m = malloc(un);
        CHECK(m != NULL);
        memcpy(m, lx_ws_unread_ptr(w), un);
        ASAN_POISON_MEMORY_REGION(block, cap);
        lx_ws_rebase(w, m);
        free(moved);
        moved = m;
      }
      if (rnd(&rng) % 8 == 0) lx_ws_idle(w);
    }
    ASAN_POISON_MEMORY_REGION(block, cap ? cap : 1);
    free(moved);
    moved = NULL;
    pos += n;
  }
  ASAN_UNPOISON_MEMORY_REGION(block, cap ? cap : 1);
  free(block);
  free(moved);
  lx_ws_free(w);
}

/* ---- encoder round trip ---------------------------------------------------- */

/* Encodes pieces of p as frames (text when UTF-8, else ping of at most 125
 * bytes), masked as the role requires with keys from the seed, then a close
 * frame; decoding must give them back. */
static void round_trip(int role, const unsigned char *p, size_t len,
                       uint32_t seed) {
  unsigned char *buf = malloc(len + 64 * LX_WS_MAX_HEADER + 256);
  size_t blen = 0, pos = 0, npieces = 0, i;
  size_t starts[64], lens[64];
  int ops[64];
  uint32_t rng = seed | 1u;
  lx_ws *w = lx_ws_new(role, len + 1);
  CHECK(buf != NULL && w != NULL);
  while (pos < len && npieces < 63) {
    size_t n = 1 + rnd(&rng) % (len - pos);
    unsigned char hdr[LX_WS_MAX_HEADER], key[4];
    size_t hl;
    int op = LX_WS_OP_TEXT;
    if (!lx_ws_utf8_valid((const char *)p + pos, n)) {
      op = LX_WS_OP_PING;
      if (n > LX_WS_MAX_CONTROL) n = LX_WS_MAX_CONTROL;
    }
    {
      uint32_t k = rnd(&rng);
      memcpy(key, &k, 4);
    }
    /* a client's frame (to our server role) is masked */
    hl = lx_ws_header(hdr, op, n, role == LX_WS_SERVER ? key : NULL);
    CHECK(hl >= 2 && hl <= LX_WS_MAX_HEADER);
    memcpy(buf + blen, hdr, hl);
    memcpy(buf + blen + hl, p + pos, n);
    if (role == LX_WS_SERVER) lx_ws_mask(buf + blen + hl, n, key, 0);
    starts[npieces] = pos;
    lens[npieces] = n;
    ops[npieces++] = op;
    blen += hl + n;
    pos += n;
  }
  {
    unsigned char pl[LX_WS_MAX_CONTROL], hdr[LX_WS_MAX_HEADER], key[4];
    char reason[200];
    size_t rn = len < sizeof reason - 1 ? len : sizeof reason - 1, n, hl;
    memcpy(reason, p, rn);
    reason[rn] = '\0';
    if (!lx_ws_utf8_valid(reason, strlen(reason))) reason[0] = '\0';
    n = lx_ws_close_payload(pl, 1000 + (unsigned)(seed % 4), reason);
    CHECK(n >= 2 && n <= LX_WS_MAX_CONTROL);
    memset(key, 0x5A, 4);
    hl = lx_ws_header(hdr, LX_WS_OP_CLOSE, n, role == LX_WS_SERVER ? key : NULL);
    memcpy(buf + blen, hdr, hl);
    memcpy(buf + blen + hl, pl, n);
    if (role == LX_WS_SERVER) lx_ws_mask(buf + blen + hl, n, key, 0);
    blen += hl + n;
  }
  lx_ws_feed(w, (const char *)buf, blen);
  for (i = 0; i < npieces; i++) {
    size_t n;
    const char *q;
    int ev = lx_ws_next(w);
    CHECK(ev == (ops[i] == LX_WS_OP_TEXT ? LX_WS_TEXT : LX_WS_PING));
    q = lx_ws_payload(w, &n);
    CHECK(n == lens[i] && memcmp(q, p + starts[i], n) == 0);
  }
  CHECK(lx_ws_next(w) == LX_WS_CLOSE);
  CHECK(lx_ws_close_code(w) == 1000 + seed % 4);
  {
    size_t n;
    const char *q = lx_ws_payload(w, &n);
    /* the reason comes back whole, or cut at a UTF-8 boundary */
    CHECK(lx_ws_utf8_valid(q, n));
  }
  lx_ws_free(w);
  free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  evlog whole = {NULL, 0, 0}, chunked = {NULL, 0, 0};
  framed f;
  int role;
  size_t max_message, chunk_max, plen;
  uint32_t seed;
  const unsigned char *payload;
  if (size < HDR_LEN) return 0;
  role = data[0] & 1 ? LX_WS_CLIENT : LX_WS_SERVER;
  chunk_max = chunk_classes[(data[0] >> 1) & 7];
  max_message = data[1] ? 64u * data[1] : 65536u;
  seed = (uint32_t)data[2] | (uint32_t)data[3] << 8;
  payload = data + HDR_LEN;
  plen = size - HDR_LEN;

  memset(&f, 0, sizeof f);
  lx_limits_default(&f.lim);
  if (data[1] & 1) f.lim.max_stanza_size = 200;
  f.s = lx_stream_new(LX_MODE_FRAMED, &f.lim);
  if (!f.s) return 0;
  run(role, max_message, payload, plen, plen ? plen : 1, seed, &whole, &f);
  lx_stream_free(f.s);
  run(role, max_message, payload, plen, chunk_max, seed, &chunked, NULL);
  if (whole.len != chunked.len ||
      (whole.len && memcmp(whole.p, chunked.p, whole.len) != 0))
    fail_check("identical events for any chunking", __LINE__);
  free(whole.p);
  free(chunked.p);

  round_trip(role, payload, plen, seed);
  return 0;
}
