/*
 * stream_int.h - what the two files of the stream parser engine share:
 * stream.c (the public lx_stream_* API, errors, limits, feeding expat) and
 * stream_tree.c (the arenas, and the expat handlers that build the tree).
 * Internal: the interface is stream.h, and nothing outside these files
 * includes this one. None of these names leaves core.so
 * (-fvisibility=hidden); each is documented where it is defined.
 */
#ifndef LXMPP_STREAM_INT_H
#define LXMPP_STREAM_INT_H

#include "lx.h"

#include "stream.h"

#include <expat.h>

LX_HIDDEN_BEGIN


#define SEP '\1'

typedef struct level {  /* one open element of the tree being built */
  uint32_t node;
  uint32_t ns, ns_len;  /* its effective namespace (offset into str) */
} level;

struct lx_stream {
  XML_Parser xp;
  int mode;
  lx_limits lim;

  /* input handed over by lx_stream_feed; in_pos bytes went to expat */
  const char *in;
  size_t in_len, in_pos;
  int final, final_sent;
  int suspended;          /* expat suspended inside the current slice */
  int skipped_space;      /* whitespace before the document was skipped */

  /* positions in bytes since the start of the document */
  unsigned long long fed;  /* bytes given to expat */
  unsigned long long mark; /* start of the current top-level element, or the
                              end of the last stream-level token */
  unsigned long long ev_end; /* end of the token of the last event */

  unsigned depth;         /* open elements, the stream element included */
  int closed;             /* </stream:stream> seen (or element mode root) */

  /* events queued by the handlers of one token, returned in order */
  int ev[4];
  int nev, evpos;

  /* the tree (see lx_node) */
  lx_node *nodes;
  size_t nnodes, cap_nodes;
  lx_attr *attrs;
  size_t nattrs, cap_attrs;
  char *str;
  size_t nstr, cap_str;
  level *stack;           /* max_depth + 2 entries */
  uint32_t text;          /* node of the text run being appended, or LX_NONE */

  /* the stream's default namespace (stream mode), from the header */
  char *default_ns;
  size_t default_ns_len;
  int want_default_ns;

  /* idle streams (lx_stream_idle): expat is freed (xp NULL) between
   * stanzas and made again from the stream header's bytes when input comes;
   * base is the document position of the new parser's byte 0 */
  char *header;
  size_t header_len;
  unsigned long long base;
  int replaying;

  /* framed mode (RFC 7395) */
  int opened;             /* <open/> seen since the last reset */
  int top_kind;           /* the event the current message's element gives */
  int pending;            /* a fed message not parsed yet */
  int rooted;             /* expat has the virtual root (next_framed) */

  int failed;
  const char *cond;
  char msg[160];
};

/* stream.c */
void lx_stream_fail(lx_stream *s, const char *cond, const char *fmt, ...);

/* stream_tree.c */
void lx_stream_clear_tree(lx_stream *s);
int lx_stream_setup(lx_stream *s);

LX_HIDDEN_END

#endif
