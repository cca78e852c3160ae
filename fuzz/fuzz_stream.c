/*
 * fuzz_stream.c - libFuzzer target for the stream parser engine (stream.c).
 *
 * docs/api.md promises that any chunking of the same bytes gives the same
 * events, stanzas and error, that a stanza is delivered the moment its last
 * byte is fed, and that memory stays bounded by the limits. This target
 * checks exactly that: every input is parsed once fed in ONE piece and once
 * fed in pseudo-random chunks, and the two event logs (event, offset where
 * its token ends, serialized tree, error condition) must be identical. Also
 * checked: no event is held back once its last byte is fed; no event follows
 * bytes that are not UTF-8 XML Chars; the event grammar; a failed stream
 * stays failed; lx_stream_memory stays under a bound from the limits alone;
 * every tree is walked against what stream.h documents, touching each byte so
 * ASan sees any read out of bounds, and must serialize. A failed check traps.
 *
 * Input layout (fuzz/make_corpus.lua writes it; fuzz_roundtrip.c reads the
 * same layout so the seeds serve both):
 *   byte 0    flags: bit 0 element mode; bit 1 small limits (bytes 1, 2);
 *             bit 2 also run the chaos pass (resets at random points, no
 *             comparison); bits 3-5 chunk size class (chunks of 1..N bytes,
 *             N = 1, 2, 4, 8, 32, 128, 1024, 65536); bit 6 final (EOF after
 *             the payload); bit 7 the chunked feed sends EOF as a separate
 *             empty feed
 *   byte 1    small limits: low nibble n: max_stanza_size = 25 * n; high
 *             nibble n: max_depth = n (n = 0: the default)
 *   byte 2    small limits: low nibble n: max_attrs = n - 1; high nibble n:
 *             max_children = n - 1 (n = 0: the default)
 *   bytes 3-4 chunking seed
 *   byte 5    n > 0: reset the stream after every n-th event, in both feeds,
 *             and go on at the end of that event's token (a STARTTLS-style
 *             restart; this checks lx_stream_remaining too)
 *   byte 6    n > 0: the payload from the split point on is repeated n + 1
 *             times (so a 4 KiB input can make a long stream; at most 64 KiB)
 *   byte 7    split point: byte7 * payload_length / 256
 *   the rest  the payload
 *
 * Build: see the Makefile (make fuzz). Define LX_FUZZ_STRICT_MESSAGES to also
 * require identical error messages, not only identical conditions.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serialize.h"
#include "stream.h"
#include "xmlchar.h"

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

#define HDR_LEN 8
#define MAX_STREAM 65536 /* bytes of the expanded payload */
#define REC_RESET 100    /* log record: the harness reset the stream */

static volatile unsigned long sink; /* keeps the byte-touching loops alive */

static void fail_check(const char *what, int line) __attribute__((noreturn));
static void fail_check(const char *what, int line) {
  fprintf(stderr, "fuzz_stream.c:%d: check failed: %s\n", line, what);
  __builtin_trap();
}
#define CHECK(c)                                                               \
  do {                                                                         \
    if (!(c)) fail_check(#c, __LINE__);                                        \
  } while (0)

/* ---- input decoding ------------------------------------------------------ */

typedef struct config {
  int mode, final, final_apart, chaos;
  unsigned chunk_max, reset_every;
  uint32_t seed;
  lx_limits lim;
} config;

static const unsigned chunk_classes[8] = {1, 2, 4, 8, 32, 128, 1024, 65536};

static void decode(const uint8_t *d, config *c) {
  lx_limits_default(&c->lim);
  c->mode = d[0] & 1 ? LX_MODE_ELEMENT : LX_MODE_STREAM;
  c->chaos = (d[0] >> 2) & 1;
  c->chunk_max = chunk_classes[(d[0] >> 3) & 7];
  c->final = (d[0] >> 6) & 1;
  c->final_apart = (d[0] >> 7) & 1;
  if (d[0] & 2) {
    if (d[1] & 15) c->lim.max_stanza_size = 25u * (d[1] & 15u);
    if (d[1] >> 4) c->lim.max_depth = d[1] >> 4;
    if (d[2] & 15) c->lim.max_attrs = (d[2] & 15u) - 1;
    if (d[2] >> 4) c->lim.max_children = (d[2] >> 4) - 1u;
  }
  c->seed = (uint32_t)d[3] | (uint32_t)d[4] << 8;
  c->reset_every = d[5];
}

/* Memory the engine may hold, from the limits alone (never from the input
 * length). Per stanza of at most M bytes: the string arena's budget is
 * 2M + 4 KiB, doubled by growth; at most about 0.4 nodes (44 bytes) and 0.2
 * attributes (16 bytes) per byte, doubled by growth; expat keeps 1 KiB of
 * context, an unfinished token (<= M + 1) and one slice (<= 16 KiB). That is
 * about 48M + 28 KiB; 64M + 32 KiB leaves room without hiding a leak that
 * grows with the stream (the repeat byte makes streams of up to 64 KiB). */
static size_t mem_bound(const lx_limits *lim) {
  return 64 * lim->max_stanza_size + 32768;
}

static uint32_t rnd(uint32_t *x) { /* xorshift32 */
  *x ^= *x << 13;
  *x ^= *x >> 17;
  *x ^= *x << 5;
  return *x;
}

/* Where chunks are fed from: each chunk is copied to the end of one block,
 * the bytes before it poisoned, and the whole block poisoned once the engine
 * is done with the chunk (LX_EV_MORE or reset), so ASan sees a read past the
 * chunk, before it (to within 7 bytes), or after it was given back, without
 * a malloc per chunk. */
typedef struct window {
  char *mem;
  size_t cap;
} window;

static void window_open(window *w, size_t cap) {
  w->cap = cap ? cap : 1;
  w->mem = malloc(w->cap);
  CHECK(w->mem != NULL);
  ASAN_POISON_MEMORY_REGION(w->mem, w->cap);
}

static const char *window_put(window *w, const unsigned char *src, size_t n) {
  char *at = w->mem + (w->cap - n);
  CHECK(n <= w->cap);
  ASAN_POISON_MEMORY_REGION(w->mem, w->cap);
  ASAN_UNPOISON_MEMORY_REGION(at, n);
  memcpy(at, src, n);
  return at;
}

static void window_drop(window *w) { ASAN_POISON_MEMORY_REGION(w->mem, w->cap); }

static void window_close(window *w) {
  ASAN_UNPOISON_MEMORY_REGION(w->mem, w->cap);
  free(w->mem);
}

/* ---- tree checks --------------------------------------------------------- */

typedef struct walker {
  const lx_tree *t;
  const lx_limits *lim;
  size_t visited;
} walker;

static void touch(const lx_tree *t, uint32_t off, uint32_t len) {
  const unsigned char *p = (const unsigned char *)t->str + off;
  unsigned long acc = 0;
  uint32_t i;
  CHECK(off != LX_NONE);
  for (i = 0; i < len; i++) acc += p[i];
  sink += acc;
}

static int same_str(const lx_tree *t, uint32_t a, uint32_t alen, uint32_t b,
                    uint32_t blen) {
  return alen == blen && memcmp(t->str + a, t->str + b, alen) == 0;
}

/* Checks node idx and its subtree: indexes in range, no cycles, strings
 * readable and valid, limits respected, counts consistent, text runs never
 * empty nor adjacent (the engine merges them), no xmlns attribute left. */
static void walk_node(walker *w, uint32_t idx, unsigned depth) {
  const lx_tree *t = w->t;
  const lx_node *n;
  uint32_t c, prev = LX_NONE, count = 0, nelem = 0, i, j;
  CHECK(idx < t->nnodes);
  CHECK(++w->visited <= t->nnodes);
  n = &t->nodes[idx];
  if (n->is_text) {
    CHECK(n->name_len > 0);
    CHECK(n->ns == LX_NONE && n->nattr == 0 && n->nchild == 0);
    CHECK(n->first == LX_NONE && n->last == LX_NONE);
    touch(t, n->name, n->name_len);
    CHECK(lx_xml_text_valid(t->str + n->name, n->name_len));
    return;
  }
  CHECK(depth <= w->lim->max_depth);
  touch(t, n->name, n->name_len);
  CHECK(lx_xml_ncname_valid(t->str + n->name, n->name_len));
  if (n->ns != LX_NONE) {
    touch(t, n->ns, n->ns_len);
    CHECK(lx_xml_text_valid(t->str + n->ns, n->ns_len));
  }
  CHECK(n->nattr <= w->lim->max_attrs);
  CHECK(n->nattr == 0 || n->attr != LX_NONE);
  for (i = 0; i < n->nattr; i++) {
    const lx_attr *a = &t->attrs[n->attr + i];
    touch(t, a->key, a->key_len);
    touch(t, a->val, a->val_len);
    CHECK(lx_xml_attr_name_valid(t->str + a->key, a->key_len));
    CHECK(!(a->key_len >= 5 && memcmp(t->str + a->key, "xmlns", 5) == 0 &&
            (a->key_len == 5 || t->str[a->key + 5] == ':')));
    CHECK(lx_xml_text_valid(t->str + a->val, a->val_len));
    for (j = 0; j < i; j++) {
      const lx_attr *b = &t->attrs[n->attr + j];
      CHECK(!same_str(t, a->key, a->key_len, b->key, b->key_len));
    }
  }
  for (c = n->first; c != LX_NONE; c = t->nodes[c].next) {
    CHECK(c < t->nnodes);
    CHECK(++count <= t->nnodes);
    CHECK(!(prev != LX_NONE && t->nodes[prev].is_text && t->nodes[c].is_text));
    if (!t->nodes[c].is_text) nelem++;
    walk_node(w, c, depth + 1);
    prev = c;
  }
  CHECK(count == n->nchild);
  CHECK(nelem == n->nelem);
  CHECK(count <= w->lim->max_children);
  CHECK(n->last == prev);
}

/* Walks the whole tree of the last event; every node must belong to it. */
static void walk_tree(const lx_stream *s, const lx_limits *lim, int ev) {
  lx_tree t;
  walker w;
  lx_stream_tree(s, &t);
  CHECK(t.nnodes >= 1 && t.nodes && t.str);
  if (ev == LX_EV_OPEN) CHECK(t.nnodes == 1); /* the header: root only */
  w.t = &t;
  w.lim = lim;
  w.visited = 0;
  walk_node(&w, 0, 1);
  CHECK(w.visited == t.nnodes);
}

/* ---- event logs ---------------------------------------------------------- */

typedef struct rec {
  int ev;           /* enum lx_event, or REC_RESET */
  size_t end;       /* payload offset where its token ends (not for ERROR) */
  size_t off, len;  /* serialized tree (OPEN, STANZA), message (ERROR) */
  const char *cond; /* ERROR: the condition */
} rec;

typedef struct evlog {
  rec *r;
  size_t n, cap;
  lx_buf text;
} evlog;

static rec *add_rec(evlog *lg, int ev, size_t end) {
  rec *r;
  if (lg->n == lg->cap) {
    size_t ncap = lg->cap ? 2 * lg->cap : 16;
    rec *nr = realloc(lg->r, ncap * sizeof *nr);
    CHECK(nr != NULL);
    lg->r = nr;
    lg->cap = ncap;
  }
  r = &lg->r[lg->n++];
  r->ev = ev;
  r->end = end;
  r->off = lg->text.len;
  r->len = 0;
  r->cond = NULL;
  return r;
}

static void free_log(evlog *lg) {
  free(lg->r);
  lx_buf_free(&lg->text);
}

static const char *ev_name(int ev) {
  switch (ev) {
  case LX_EV_MORE: return "more";
  case LX_EV_OPEN: return "open";
  case LX_EV_STANZA: return "stanza";
  case LX_EV_CLOSE: return "close";
  case LX_EV_ERROR: return "error";
  case REC_RESET: return "reset";
  default: return "?";
  }
}

static void dump_log(const char *title, const evlog *lg) {
  size_t i, j;
  fprintf(stderr, "%s: %zu records\n", title, lg->n);
  for (i = 0; i < lg->n; i++) {
    const rec *r = &lg->r[i];
    fprintf(stderr, "  %-6s end=%zu %s ", ev_name(r->ev), r->end,
            r->cond ? r->cond : "");
    for (j = 0; j < r->len && j < 400; j++) {
      unsigned char ch = (unsigned char)lg->text.p[r->off + j];
      if (ch >= 0x20 && ch < 0x7f) fputc(ch, stderr);
      else fprintf(stderr, "\\x%02x", ch);
    }
    fputc('\n', stderr);
  }
}

static int same_rec(const evlog *a, const rec *x, const evlog *b,
                    const rec *y) {
  if (x->ev != y->ev) return 0;
  if (x->ev == LX_EV_ERROR) {
    if (strcmp(x->cond, y->cond) != 0) return 0;
#ifndef LX_FUZZ_STRICT_MESSAGES
    return 1;
#endif
  } else if (x->end != y->end) {
    return 0;
  }
  return x->len == y->len &&
         memcmp(a->text.p + x->off, b->text.p + y->off, x->len) == 0;
}

static void compare_logs(const evlog *whole, const evlog *chunked) {
  size_t i;
  int same = whole->n == chunked->n;
  for (i = 0; same && i < whole->n; i++)
    same = same_rec(whole, &whole->r[i], chunked, &chunked->r[i]);
  if (!same) {
    dump_log("fed in one piece", whole);
    dump_log("fed in chunks", chunked);
    fail_check("identical results for any chunking", __LINE__);
  }
}

/* ---- one parse ----------------------------------------------------------- */

/* The event grammar of one stream (between resets): stream mode
 * OPEN STANZA* CLOSE?, element mode STANZA?, either ended by ERROR. */
typedef struct grammar {
  int opened, closed, stanzas;
} grammar;

static void check_grammar(grammar *g, int mode, int ev) {
  switch (ev) {
  case LX_EV_OPEN:
    CHECK(mode == LX_MODE_STREAM && !g->opened);
    g->opened = 1;
    break;
  case LX_EV_STANZA:
    CHECK(!g->closed);
    if (mode == LX_MODE_STREAM) CHECK(g->opened);
    else CHECK(g->stanzas == 0);
    g->stanzas++;
    break;
  case LX_EV_CLOSE:
    CHECK(mode == LX_MODE_STREAM && g->opened && !g->closed);
    g->closed = 1;
    break;
  default:
    CHECK(0 && "unknown event");
  }
}

static const char *const conditions[] = {
  "not-well-formed", "restricted-xml", "policy-violation",
  "unsupported-encoding", "invalid-namespace", "bad-format",
  "resource-constraint", NULL
};

static void record_error(lx_stream *s, evlog *lg) {
  const char *cond = NULL, *msg = lx_stream_error(s, &cond);
  rec *r;
  size_t i;
  int known = 0;
  CHECK(msg != NULL && cond != NULL);
  for (i = 0; conditions[i]; i++)
    if (strcmp(cond, conditions[i]) == 0) known = 1;
  CHECK(known);
  r = add_rec(lg, LX_EV_ERROR, 0);
  r->cond = cond;
  CHECK(lx_buf_put(&lg->text, msg, strlen(msg)));
  r->len = strlen(msg);
  /* stays failed until reset, whatever is fed */
  CHECK(lx_stream_next(s) == LX_EV_ERROR);
  lx_stream_feed(s, "<a/>", 4, 0);
  CHECK(lx_stream_next(s) == LX_EV_ERROR);
}

/* Records an OPEN or STANZA event with its tree serialized. The parser only
 * hands out valid content, so the serializer must accept every tree. */
static void record_tree(lx_stream *s, const config *c, evlog *lg, int ev,
                        size_t end) {
  lx_tree t;
  rec *r;
  walk_tree(s, &c->lim, ev);
  lx_stream_tree(s, &t);
  r = add_rec(lg, ev, end);
  CHECK(lx_serialize_tree(&lg->text, &t, 0) == 1);
  r->len = lg->text.len - r->off;
}

/* Parses p[0..len) fed in one piece (whole) or in chunks, logging every
 * event into lg. With ref (the log of the whole feed), also checks that no
 * event is held back once all its bytes have been fed. */
static void run(const config *c, const unsigned char *p, size_t len,
                int whole, evlog *lg, const evlog *ref) {
  lx_stream *s = lx_stream_new(c->mode, &c->lim);
  size_t pos = 0, start = 0, bound = mem_bound(&c->lim);
  uint32_t rng = 0x9E3779B9u ^ (c->seed * 0x10001u);
  grammar g = {0, 0, 0};
  unsigned nev = 0;
  int eof_fed = 0, failed = 0;
  size_t valid_to = 0; /* p[start..valid_to) checked to be UTF-8 XML Chars */
  window win;
  CHECK(s != NULL);
  window_open(&win, whole || c->chunk_max > len ? len : c->chunk_max);
  CHECK(lx_stream_memory(s) <= bound);
  while (!failed) {
    size_t rest = len - pos, n, reset_at = 0;
    int fin, reset = 0;
    if (rest == 0 && (eof_fed || !c->final)) break;
    n = whole || rest == 0 ? rest : 1 + rnd(&rng) % c->chunk_max;
    if (n > rest) n = rest;
    fin = c->final && n == rest && (whole || !c->final_apart || n == 0);
    lx_stream_feed(s, window_put(&win, p + pos, n), n, fin);
    for (;;) {
      int ev = lx_stream_next(s);
      size_t rem, end;
      CHECK(lx_stream_memory(s) <= bound);
      if (ev == LX_EV_MORE) break;
      if (ev == LX_EV_ERROR) {
        record_error(s, lg);
        failed = 1;
        break;
      }
      rem = lx_stream_remaining(s);
      CHECK(rem <= n);
      end = pos + n - rem;
      CHECK(end > start);
      /* Raw XML is made of Chars in UTF-8 (a BOM is U+FEFF, a Char too):
       * no event may follow bytes that are not, wherever they are. */
      if (!lx_xml_text_valid((const char *)p + valid_to, end - valid_to)) {
        fprintf(stderr, "stream bytes %zu..%zu are not UTF-8 XML Chars, yet "
                "an event ends there\n", valid_to, end);
        fail_check("an event after bytes that are not UTF-8 XML", __LINE__);
      }
      valid_to = end;
      check_grammar(&g, c->mode, ev);
      if (ev == LX_EV_CLOSE) add_rec(lg, ev, end);
      else record_tree(s, c, lg, ev, end);
      if (c->reset_every && ++nev % c->reset_every == 0) {
        CHECK(lx_stream_reset(s));
        CHECK(lx_stream_error(s, NULL) == NULL);
        add_rec(lg, REC_RESET, end);
        memset(&g, 0, sizeof g);
        reset = 1;
        reset_at = start = valid_to = end;
        break;
      }
    }
    window_drop(&win);
    if (failed) break;
    if (reset) {
      pos = reset_at;
      eof_fed = 0;
      continue;
    }
    /* MORE: every event whose bytes are all fed must have been delivered */
    if (ref && lg->n < ref->n && ref->r[lg->n].ev != LX_EV_ERROR &&
        ref->r[lg->n].end <= pos + n) {
      dump_log("fed in one piece", ref);
      dump_log("fed in chunks (so far)", lg);
      fprintf(stderr, "fed up to byte %zu\n", pos + n);
      fail_check("an event held back after its last byte was fed", __LINE__);
    }
    pos += n;
    if (fin) eof_fed = 1;
  }
  lx_stream_free(s);
  window_close(&win);
}

/* Resets at random points (mid-drain, while suspended, after errors) and
 * feeds on; nothing is compared, but trees are walked and memory bounded. */
static void chaos(const config *c, const unsigned char *p, size_t len) {
  lx_stream *s = lx_stream_new(c->mode, &c->lim);
  size_t pos = 0, bound = mem_bound(&c->lim);
  uint32_t rng = 0x2545F491u ^ (c->seed * 0x10001u);
  int failed = 0;
  window win;
  CHECK(s != NULL);
  window_open(&win, c->chunk_max > len ? len : c->chunk_max);
  while (pos < len) {
    size_t n = 1 + rnd(&rng) % c->chunk_max;
    if (n > len - pos) n = len - pos;
    lx_stream_feed(s, window_put(&win, p + pos, n), n,
                   c->final && pos + n == len);
    for (;;) {
      uint32_t r = rnd(&rng);
      int ev;
      if (r % 16 == 0) {
        CHECK(lx_stream_reset(s));
        failed = 0;
        break;
      }
      ev = lx_stream_next(s);
      CHECK(lx_stream_memory(s) <= bound);
      if (failed) CHECK(ev == LX_EV_ERROR);
      if (ev == LX_EV_MORE) break;
      if (ev == LX_EV_ERROR) {
        CHECK(lx_stream_error(s, NULL) != NULL);
        failed = 1;
        break;
      }
      CHECK(lx_stream_remaining(s) <= n);
      if (ev == LX_EV_OPEN || ev == LX_EV_STANZA) {
        lx_buf out = {NULL, 0, 0};
        lx_tree t;
        walk_tree(s, &c->lim, ev);
        lx_stream_tree(s, &t);
        CHECK(lx_serialize_tree(&out, &t, 0) == 1);
        lx_buf_free(&out);
      }
    }
    window_drop(&win);
    pos += n;
  }
  lx_stream_free(s);
  window_close(&win);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  config c;
  const uint8_t *payload = data + HDR_LEN;
  size_t plen, split, times, total, i;
  unsigned char *stream;
  evlog whole = {NULL, 0, 0, {NULL, 0, 0}};
  evlog chunked = {NULL, 0, 0, {NULL, 0, 0}};

  if (size < HDR_LEN) return 0;
  decode(data, &c);
  plen = size - HDR_LEN;
  split = (size_t)data[7] * plen / 256;
  times = (size_t)data[6] + 1;
  if (plen > split && times > (MAX_STREAM - split) / (plen - split))
    times = (MAX_STREAM - split) / (plen - split);
  if (times < 1) times = 1;
  total = split + (plen - split) * times;
  stream = malloc(total ? total : 1);
  if (!stream) return 0;
  memcpy(stream, payload, split);
  for (i = 0; i < times; i++)
    memcpy(stream + split + i * (plen - split), payload + split, plen - split);

  run(&c, stream, total, 1, &whole, NULL);
  run(&c, stream, total, 0, &chunked, &whole);
  compare_logs(&whole, &chunked);
  if (c.chaos) chaos(&c, stream, total);

  free_log(&whole);
  free_log(&chunked);
  free(stream);
  return 0;
}
