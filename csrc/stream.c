/*
 * stream.c - the XMPP stream parser engine (see stream.h).
 *
 * expat does the XML work (namespaces on, encoding forced to UTF-8, reparse
 * deferral off so a stanza is complete the moment its last '>' is fed). The
 * handlers here only build a compact tree in three arenas owned by the
 * lx_stream (nodes, attributes, string bytes), enforce the limits, and, when
 * a top-level element completes, queue an event and suspend expat. The caller
 * gets the event from lx_stream_next() with expat suspended, so nothing is
 * parsed after an event until the caller asks for more.
 *
 * Limits are checked against bytes fed, and every XML_Parse call is cut so it
 * ends no later than the byte that would exceed max_stanza_size: the first
 * violation in byte order wins, whatever the chunking.
 *
 * This file holds the public API, errors and limits; the arenas and the
 * expat handlers that build the tree are in stream_tree.c, and what the two
 * share is in stream_int.h.
 */
#include "lx.h"
#include "stream_int.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLICE 16384               /* largest piece given to one XML_Parse */

void lx_limits_default(lx_limits *lim) {
  lim->max_stanza_size = 262144;
  lim->max_depth = 64;
  lim->max_attrs = 64;
  lim->max_children = 4096;
}

/* ---- errors -------------------------------------------------------------- */

void lx_stream_fail(lx_stream *s, const char *cond, const char *fmt, ...) {
  va_list ap;
  if (s->failed) return;           /* the first violation is the one reported */
  s->failed = 1;
  s->cond = cond;
  va_start(ap, fmt);
  vsnprintf(s->msg, sizeof s->msg, fmt, ap);
  va_end(ap);
  if (s->xp) XML_StopParser(s->xp, XML_FALSE);
}

static void fail_expat(lx_stream *s) {
  enum XML_Error e = XML_GetErrorCode(s->xp);
  const char *cond = "not-well-formed";
  switch (e) {
  case XML_ERROR_UNDEFINED_ENTITY:
  case XML_ERROR_RECURSIVE_ENTITY_REF:
  case XML_ERROR_BINARY_ENTITY_REF:
  case XML_ERROR_ATTRIBUTE_EXTERNAL_ENTITY_REF:
  case XML_ERROR_EXTERNAL_ENTITY_HANDLING:
  case XML_ERROR_ENTITY_DECLARED_IN_PE:
  case XML_ERROR_NOT_STANDALONE:
    cond = "restricted-xml";
    break;
  case XML_ERROR_UNKNOWN_ENCODING:
  case XML_ERROR_INCORRECT_ENCODING:
    cond = "unsupported-encoding";
    break;
  case XML_ERROR_NO_MEMORY:
    cond = "resource-constraint";
    break;
  default:
    break;
  }
  lx_stream_fail(s, cond, "%s at byte %llu", XML_ErrorString(e),
                 s->base + (unsigned long long)XML_GetCurrentByteIndex(s->xp));
}

static void reset_state(lx_stream *s) {
  s->in = NULL;
  s->in_len = s->in_pos = 0;
  s->final = s->final_sent = 0;
  s->suspended = 0;
  s->fed = s->mark = s->ev_end = 0;
  s->skipped_space = 0;
  s->depth = 0;
  s->closed = 0;
  s->nev = s->evpos = 0;
  lx_stream_clear_tree(s);
  free(s->default_ns);
  s->default_ns = NULL;
  s->default_ns_len = 0;
  s->want_default_ns = s->mode == LX_MODE_STREAM;
  free(s->header);
  s->header = NULL;
  s->header_len = 0;
  s->base = 0;
  s->replaying = 0;
  s->opened = s->top_kind = s->pending = s->rooted = 0;
  s->failed = 0;
  s->cond = NULL;
  s->msg[0] = '\0';
}

lx_stream *lx_stream_new(int mode, const lx_limits *lim) {
  lx_stream *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->mode = mode;
  if (lim) s->lim = *lim;
  else lx_limits_default(&s->lim);
  if (s->lim.max_depth < 1) s->lim.max_depth = 1;
  s->stack = calloc(s->lim.max_depth + 2, sizeof *s->stack);
  s->xp = XML_ParserCreateNS("UTF-8", SEP);
  if (!s->stack || !s->xp) {
    lx_stream_free(s);
    return NULL;
  }
  reset_state(s);
  lx_stream_setup(s);
  return s;
}

void lx_stream_free(lx_stream *s) {
  if (!s) return;
  if (s->xp) XML_ParserFree(s->xp);
  free(s->nodes);
  free(s->attrs);
  free(s->str);
  free(s->stack);
  free(s->default_ns);
  free(s->header);
  free(s);
}

int lx_stream_reset(lx_stream *s) {
  reset_state(s);
  if (!s->stack) s->stack = calloc(s->lim.max_depth + 2, sizeof *s->stack);
  if (!s->xp) s->xp = XML_ParserCreateNS("UTF-8", SEP);
  if (!s->stack || !s->xp || !XML_ParserReset(s->xp, "UTF-8")) {
    lx_stream_fail(s, "resource-constraint", "out of memory");
    return 0;
  }
  lx_stream_setup(s);
  return 1;
}

void lx_stream_feed(lx_stream *s, const char *data, size_t len, int final) {
  s->in = data;
  s->in_len = len;
  s->in_pos = 0;
  s->final = final;
  s->pending = s->mode == LX_MODE_FRAMED;
}

/* How many of the remaining input bytes the next XML_Parse may take: a
 * slice ends at the byte that would push the current element (or the bytes
 * buffered between stanzas) over max_stanza_size, so that limit is checked at
 * exactly the same byte whatever the chunking. */
static size_t slice_len(const lx_stream *s) {
  size_t n = s->in_len - s->in_pos;
  unsigned long long limit_at = s->mark + s->lim.max_stanza_size + 1;
  if (n > SLICE) n = SLICE;
  if (!s->closed && limit_at > s->fed && n > limit_at - s->fed)
    n = (size_t)(limit_at - s->fed);
  return n;
}

/* A parser for an idle stream: the stream header again, without events. */
static int wake(lx_stream *s) {
  enum XML_Status st;
  if (!s->stack) s->stack = calloc(s->lim.max_depth + 2, sizeof *s->stack);
  if (!s->stack || !(s->xp = XML_ParserCreateNS("UTF-8", SEP))) {
    lx_stream_fail(s, "resource-constraint", "out of memory");
    return 0;
  }
  lx_stream_setup(s);
  s->base = s->fed - s->header_len;
  s->replaying = 1;
  st = XML_Parse(s->xp, s->header, (int)s->header_len, 0);
  s->replaying = 0;
  if (st != XML_STATUS_OK) {
    lx_stream_fail(s, "resource-constraint", "cannot restore the idle stream parser");
    return 0;
  }
  return 1;
}

int lx_stream_idle(lx_stream *s) {
  if (s->mode == LX_MODE_FRAMED) {
    /* between messages only the virtual root is open: expat is made
     * again, with it, for the next message */
    if (!s->xp || s->pending || s->failed || s->evpos < s->nev) return 0;
    XML_ParserFree(s->xp);
    s->xp = NULL;
    s->rooted = 0;                 /* the virtual root comes back first */
    goto free_tree;
  }
  if (!s->xp || s->mode != LX_MODE_STREAM || !s->header || s->depth != 1 ||
      s->suspended || s->in_pos < s->in_len || s->failed || s->closed ||
      s->fed != s->mark || s->evpos < s->nev || s->header_len > (size_t)INT_MAX)
    return 0;
  XML_ParserFree(s->xp);
  s->xp = NULL;
free_tree:
  lx_stream_clear_tree(s);
  free(s->nodes);
  free(s->attrs);
  free(s->str);
  free(s->stack);                 /* the stream element's level is not used
                                     again: top-level elements set their own */
  s->nodes = NULL;
  s->attrs = NULL;
  s->str = NULL;
  s->stack = NULL;
  s->cap_nodes = s->cap_attrs = s->cap_str = 0;
  return 1;
}

int lx_stream_is_idle(const lx_stream *s) { return s->xp == NULL; }
int lx_stream_framed(const lx_stream *s) { return s->mode == LX_MODE_FRAMED; }

/* Whitespace before a stream's first byte (stream mode, nothing given to
 * expat yet) is skipped, so a stream may start, or restart, after the
 * space, tab, CR or LF that followed the last element of the previous one.
 * RFC 6120 §11.7 lets whitespace separate first-level elements; go-xmpp
 * (go-sendxmpp) writes "</auth>\n" and then, after SASL success, a new
 * "<?xml ...?>", which expat would refuse as a declaration not at the start
 * of its document (Prosody and ejabberd accept it). Anything else is junk
 * and still goes to expat, which fails on it; a byte order mark after the
 * whitespace fails here. Returns 1 when whitespace used up the input. */
static int skip_space(lx_stream *s) {
  while (s->in_pos < s->in_len) {
    unsigned char c = (unsigned char)s->in[s->in_pos];
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
      if (s->skipped_space && c == 0xEF)   /* a UTF-8 BOM must come first */
        lx_stream_fail(s, "not-well-formed", "a byte order mark after whitespace");
      return 0;
    }
    s->skipped_space = 1;
    s->in_pos++;
  }
  return 1;
}

static int is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Framed mode: a message's XML declaration (RFC 7395 §3.3.3 permits one,
 * NOT RECOMMENDED). The framed stream is one expat document, where a
 * declaration may not come again, so it is checked here, strictly, and
 * skipped: version 1.0, then optionally encoding UTF-8 and standalone.
 * Returns its length, or 0 with the stream failed. */
static size_t xml_decl(lx_stream *s, const char *p, size_t len) {
  static const char *const names[] = {"version", "encoding", "standalone"};
  size_t i = 5, end, k;
  int next = 0;
  for (end = 5; end + 1 < len && !(p[end] == '?' && p[end + 1] == '>'); end++) {}
  if (end + 1 >= len) goto bad;
  for (;;) {
    size_t n0, v0, nlen;
    char q;
    if (i < end && !is_space(p[i])) goto bad;
    while (i < end && is_space(p[i])) i++;
    if (i == end) break;
    for (n0 = i; i < end && p[i] >= 'a' && p[i] <= 'z'; i++) {}
    nlen = i - n0;
    while (i < end && is_space(p[i])) i++;
    if (i >= end || p[i++] != '=') goto bad;
    while (i < end && is_space(p[i])) i++;
    if (i >= end || (p[i] != '\'' && p[i] != '"')) goto bad;
    q = p[i++];
    for (v0 = i; i < end && p[i] != q; i++) {}
    if (i >= end) goto bad;
    for (k = (size_t)next; k < 3; k++)
      if (strlen(names[k]) == nlen && memcmp(p + n0, names[k], nlen) == 0) break;
    if (k == 3 || (next == 0 && k != 0)) goto bad;   /* version first, in order */
    next = (int)k + 1;
    if (k == 0 && !(i - v0 == 3 && memcmp(p + v0, "1.0", 3) == 0)) {
      lx_stream_fail(s, "not-well-formed", "XML version %.*s is not supported (1.0 only)",
                     (int)(i - v0 > 10 ? 10 : i - v0), p + v0);
      return 0;
    }
    if (k == 1) {
      static const char utf8[] = "utf-8";
      size_t j;
      for (j = 0; j < 5 && v0 + j < i; j++)
        if ((p[v0 + j] | 0x20) != utf8[j]) break;
      if (j != 5 || i - v0 != 5) {
        lx_stream_fail(s, "unsupported-encoding", "encoding %.*s is not supported (UTF-8 only)",
                       (int)(i - v0 > 20 ? 20 : i - v0), p + v0);
        return 0;
      }
    }
    if (k == 2 && !((i - v0 == 3 && memcmp(p + v0, "yes", 3) == 0) ||
                    (i - v0 == 2 && memcmp(p + v0, "no", 2) == 0)))
      goto bad;
    i++;                                   /* the closing quote */
  }
  if (next == 0) goto bad;
  return end + 2;
bad:
  lx_stream_fail(s, "not-well-formed", "a malformed XML declaration");
  return 0;
}

/* Framed mode (RFC 7395 §3.3.3): the fed buffer is one WebSocket message,
 * which must be exactly one element. The stream is one expat document
 * under a virtual root (given to expat when the stream starts, never
 * closed), so a message costs what a stanza of a TCP stream costs; each
 * message is parsed whole before its event is returned, and checked to be
 * one element with nothing but whitespace around it: a second element,
 * text, an unfinished element or token fail it, and nothing of it reaches
 * the caller. Namespace declarations stay within their element. */
static int next_framed(lx_stream *s) {
  enum XML_Status st;
  size_t len = s->in_len, skip = 0, i;
  unsigned long long start;
  if (s->evpos < s->nev) return s->ev[s->evpos++];
  s->nev = s->evpos = 0;
  if (s->failed) return LX_EV_ERROR;
  if (!s->pending) return LX_EV_MORE;
  s->pending = 0;
  s->in_pos = s->in_len;
  if (s->closed) {
    lx_stream_fail(s, "bad-format", "a message after <close/> (RFC 7395 §3.6)");
    return LX_EV_ERROR;
  }
  if (len > s->lim.max_stanza_size) {
    lx_stream_fail(s, "policy-violation", "stanza larger than %lu bytes",
                   (unsigned long)s->lim.max_stanza_size);
    return LX_EV_ERROR;
  }
  if (len == 0 || s->in[0] != '<') {
    lx_stream_fail(s, "bad-format", "a WebSocket message must start with '<' "
                   "(RFC 7395 §3.3.3)");
    return LX_EV_ERROR;
  }
  if (memchr(s->in, 0, len)) {     /* never XML; see lx_stream_next on expat */
    lx_stream_fail(s, "not-well-formed", "NUL byte in the message at byte %llu", s->fed);
    return LX_EV_ERROR;
  }
  if (!s->stack) s->stack = calloc(s->lim.max_depth + 2, sizeof *s->stack);
  if (!s->xp && (s->xp = XML_ParserCreateNS("UTF-8", SEP))) lx_stream_setup(s);
  if (!s->stack || !s->xp) {
    lx_stream_fail(s, "resource-constraint", "out of memory");
    return LX_EV_ERROR;
  }
  if (!s->rooted) {
    s->base = s->fed;
    s->depth = 0;
    if (XML_Parse(s->xp, "<r>", 3, 0) != XML_STATUS_OK || s->depth != 1) {
      lx_stream_fail(s, "resource-constraint", "cannot start the framed stream");
      return LX_EV_ERROR;
    }
    s->fed += 3;
    s->rooted = 1;
  }
  start = s->fed;
  if (len > 5 && memcmp(s->in, "<?xml", 5) == 0 && is_space(s->in[5])) {
    if (!(skip = xml_decl(s, s->in, len))) return LX_EV_ERROR;
    s->base += skip;               /* bytes expat does not see */
  }
  s->fed += skip;
  s->mark = s->fed;
  s->top_kind = 0;
  lx_stream_clear_tree(s);
  st = XML_Parse(s->xp, s->in + skip, (int)(len - skip), 0);
  s->fed += len - skip;
  if (st != XML_STATUS_OK && !s->failed) fail_expat(s);
  if (!s->failed && (s->nev != 1 || s->depth != 1))
    lx_stream_fail(s, "bad-format", "a WebSocket message must be exactly one complete "
                   "element (RFC 7395 §3.3.3): %s", s->depth > 1 ? "an unfinished element"
                   : s->nev ? "more than one" : "no complete element");
  for (i = s->failed ? len : (size_t)(s->ev_end - start); i < len; i++) {
    if (!is_space(s->in[i])) {
      lx_stream_fail(s, "bad-format", "a WebSocket message must be exactly one complete "
                     "element (RFC 7395 §3.3.3): bytes after it");
      break;
    }
  }
  if (s->failed) {
    s->nev = s->evpos = 0;
    return LX_EV_ERROR;
  }
  return s->ev[s->evpos++];
}

int lx_stream_next(lx_stream *s) {
  if (s->mode == LX_MODE_FRAMED) return next_framed(s);
  for (;;) {
    enum XML_Status st;
    if (s->evpos < s->nev) return s->ev[s->evpos++];
    s->nev = s->evpos = 0;
    if (s->failed) return LX_EV_ERROR;

    if (!s->xp && ((s->in_pos < s->in_len) || (s->final && !s->final_sent)) &&
        !wake(s))
      continue;
    if (s->suspended) {
      s->suspended = 0;
      st = XML_ResumeParser(s->xp);
    } else if (s->in_pos < s->in_len) {
      size_t n;
      const char *nul;
      int last;
      if (s->mode == LX_MODE_STREAM && s->fed == 0 && (skip_space(s) || s->failed))
        continue;                  /* all whitespace so far: wait for more */
      n = slice_len(s);
      last = s->final && s->in_pos + n == s->in_len;
      nul = memchr(s->in + s->in_pos, 0, n);
      if (s->fed == 0 && n > 0) {
        unsigned char c = (unsigned char)s->in[s->in_pos];
        /* UTF-16/32 byte order marks can't start UTF-8 XML */
        if (c == 0xFE || c == 0xFF) {
          lx_stream_fail(s, "unsupported-encoding", "the stream is not UTF-8");
          continue;
        }
      }
      /* A NUL is never XML. expat must not even see one near the start: it
       * would take "x\0" for UTF-16 whatever encoding it was told, and then
       * the result would depend on the chunking. Bytes before it are parsed
       * first, so the first violation in byte order is still the one seen. */
      if (nul) {
        if (nul == s->in + s->in_pos) {
          if (s->fed < 2)
            lx_stream_fail(s, "unsupported-encoding", "the stream is not UTF-8 (UTF-16?)");
          else
            lx_stream_fail(s, "not-well-formed", "NUL byte at byte %llu", s->fed);
          continue;
        }
        n = (size_t)(nul - (s->in + s->in_pos));
        last = 0;
      }
      st = XML_Parse(s->xp, s->in + s->in_pos, (int)n, last);
      s->in_pos += n;
      s->fed += n;
      if (last) s->final_sent = 1;
    } else if (s->final && !s->final_sent) {
      s->final_sent = 1;
      st = XML_Parse(s->xp, "", 0, 1);
    } else {
      return LX_EV_MORE;
    }

    if (st == XML_STATUS_SUSPENDED) {
      s->suspended = 1;
      continue;                    /* return the queued events */
    }
    if (st == XML_STATUS_ERROR) {
      if (!s->failed) fail_expat(s);
      s->nev = s->evpos = 0;       /* nothing of the failing token is given */
      continue;
    }
    /* the slice is parsed: check the bytes that are not yet a token */
    if (!s->closed && s->fed - s->mark > s->lim.max_stanza_size) {
      lx_stream_fail(s, "policy-violation", "stanza larger than %lu bytes",
                     (unsigned long)s->lim.max_stanza_size);
      continue;
    }
    if (s->mode == LX_MODE_ELEMENT && s->final_sent && !s->closed && !s->nev)
      lx_stream_fail(s, "not-well-formed", "no element found");
  }
}

void lx_stream_tree(const lx_stream *s, lx_tree *t) {
  t->nodes = s->nodes;
  t->attrs = s->attrs;
  t->str = s->str;
  t->nnodes = s->nnodes;
}

size_t lx_stream_remaining(const lx_stream *s) {
  size_t rest = s->in_len - s->in_pos;
  if (s->suspended && s->fed > s->ev_end) rest += (size_t)(s->fed - s->ev_end);
  return rest;
}

size_t lx_stream_unread(const lx_stream *s) { return s->in_len - s->in_pos; }

void lx_stream_rebase(lx_stream *s, const char *unread) {
  s->in = unread;
  s->in_len -= s->in_pos;
  s->in_pos = 0;
}

size_t lx_stream_memory(const lx_stream *s) {
  int offset = 0, size = 0;
  size_t n = s->cap_nodes * sizeof(lx_node) + s->cap_attrs * sizeof(lx_attr) +
             s->cap_str;
  if (s->xp && XML_GetInputContext(s->xp, &offset, &size) && size > 0)
    n += (size_t)size;
  return n;
}

const char *lx_stream_error(const lx_stream *s, const char **condition) {
  if (condition) *condition = s->failed ? s->cond : NULL;
  return s->failed ? s->msg : NULL;
}
