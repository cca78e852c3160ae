/*
 * stream.h - the XMPP stream parser engine: expat in, element trees out.
 *
 * Pure C, no Lua (no lua_State): the Lua binding (stream_lua.c), the
 * libFuzzer targets and the C tests drive it alike. It enforces the XML
 * stream rules of docs/api.md: RFC 6120 §11 restricted XML, well-formedness,
 * namespaces, UTF-8 only, and the size/depth/attribute/children limits while
 * parsing, with identical results for any chunking of the same bytes.
 *
 * Pull interface: lx_stream_feed() hands over a buffer (not copied; it must
 * stay valid until lx_stream_next() returns LX_EV_MORE or the stream is
 * reset), then lx_stream_next() is called until it returns LX_EV_MORE.
 * Each call returns at most one event; expat is suspended between events, so
 * whatever the caller does between two calls (reset the parser, drop the
 * connection) takes effect before another byte is parsed.
 */
#ifndef LXMPP_STREAM_H
#define LXMPP_STREAM_H

#include "lx.h"

#include <stddef.h>
#include <stdint.h>

LX_HIDDEN_BEGIN

#define LX_NONE UINT32_MAX
#define LX_NS_STREAMS "http://etherx.jabber.org/streams"
#define LX_NS_FRAMING "urn:ietf:params:xml:ns:xmpp-framing"
#define LX_NS_CLIENT "jabber:client"

typedef struct lx_limits {
  size_t max_stanza_size; /* bytes of one top-level element, counted as fed,
                             so an unfinished start tag counts too */
  unsigned max_depth;     /* element nesting, the stanza itself being 1 */
  unsigned max_attrs;     /* attributes per element */
  unsigned max_children;  /* child nodes (elements and text runs) per element */
} lx_limits;

void lx_limits_default(lx_limits *lim);

enum lx_mode {
  LX_MODE_STREAM = 0, /* <stream:stream> wrapping stanzas (RFC 6120 §4) */
  LX_MODE_ELEMENT = 1, /* one element is the whole document (st.parse) */
  LX_MODE_FRAMED = 2   /* RFC 7395: each fed buffer is one WebSocket message,
                          exactly one element (an XML declaration before it
                          is checked and skipped): <open/> and <close/> in
                          LX_NS_FRAMING give LX_EV_OPEN and LX_EV_CLOSE,
                          anything else LX_EV_STANZA */
};

enum lx_event {
  LX_EV_MORE = 0,   /* the fed buffer is used up: feed more */
  LX_EV_OPEN,       /* stream header: its tree (root node only) is ready */
  LX_EV_STANZA,     /* a complete top-level element: its tree is ready */
  LX_EV_CLOSE,      /* </stream:stream>; framed mode: <close/>, whose tree
                       (root node only, its attributes) is ready */
  LX_EV_ERROR       /* failed; see lx_stream_error; stays failed until reset */
};

/* One element or text run of a tree. Strings are offsets into the tree's
 * string arena (not NUL-terminated); indexes point into nodes/attrs. */
typedef struct lx_node {
  uint32_t name, name_len; /* element local name, or the text of a text run */
  uint32_t ns, ns_len;     /* namespace when it differs from the parent's
                              (becomes attr.xmlns); ns == LX_NONE otherwise */
  uint32_t attr, nattr;    /* first attribute and count */
  uint32_t first, last;    /* first and last child, LX_NONE if none */
  uint32_t next;           /* next sibling, LX_NONE at the end */
  uint32_t nchild;         /* number of children */
  uint32_t nelem;          /* how many of them are elements */
  unsigned char is_text;
} lx_node;

typedef struct lx_attr {
  uint32_t key, key_len; /* "local", "xml:lang" or "namespace\1local" */
  uint32_t val, val_len;
} lx_attr;

/* A read-only view of the last tree (the stream header after LX_EV_OPEN, the
 * element after LX_EV_STANZA, framed mode's <close/> after LX_EV_CLOSE). It
 * stays valid until the next top-level element starts, the stream is reset
 * or freed. Root is nodes[0]. */
typedef struct lx_tree {
  const lx_node *nodes;
  const lx_attr *attrs;
  const char *str;
  size_t nnodes;
} lx_tree;

typedef struct lx_stream lx_stream;

/* Returns NULL when out of memory. The caller owns the result. */
lx_stream *lx_stream_new(int mode, const lx_limits *lim);
void lx_stream_free(lx_stream *s);            /* NULL is fine */
/* Forgets everything, as for a stream restart (RFC 6120 §4.3.3): unparsed
 * input, the tree, the error. Returns 0 when out of memory (then failed).
 * In stream mode, whitespace before the next header is skipped (as before
 * the first one): only space, tab, CR and LF. */
int lx_stream_reset(lx_stream *s);

/* final = 1: no more input will follow (needed in element mode to detect an
 * incomplete document; in stream mode the transport's EOF). In framed mode
 * every call hands over one whole message (final is implied): its event,
 * or the error, comes only once all of it is parsed, so a message that is
 * not exactly one element never gives a stanza. */
void lx_stream_feed(lx_stream *s, const char *data, size_t len, int final);
int lx_stream_next(lx_stream *s);
void lx_stream_tree(const lx_stream *s, lx_tree *t);

/* Is the stream in LX_MODE_FRAMED (where LX_EV_CLOSE has a tree)? */
int lx_stream_framed(const lx_stream *s);

/* Bytes of the fed buffer after the last event returned (for a caller that
 * stops parsing at an event, e.g. STARTTLS <proceed/>). */
size_t lx_stream_remaining(const lx_stream *s);

/* Bytes of the fed buffer the engine has not taken yet (the tail of what
 * lx_stream_remaining counts), and moving them: a caller that reuses its
 * buffer copies those bytes elsewhere and hands over the copy, which must
 * then stay valid instead (same rule as lx_stream_feed). */
size_t lx_stream_unread(const lx_stream *s);

/* Between stanzas with all input parsed (stream mode): frees expat and the
 * tree arenas, which come back, as they were, with the next input. Returns
 * 1 when it did. For connections that go quiet: it costs a parser when
 * they speak again. */
int lx_stream_idle(lx_stream *s);
int lx_stream_is_idle(const lx_stream *s);
void lx_stream_rebase(lx_stream *s, const char *unread);

/* Bytes the engine holds now: its tree arenas plus the input expat keeps
 * buffered for an unfinished token. Bounded by the limits (docs/api.md). */
size_t lx_stream_memory(const lx_stream *s);

/* After LX_EV_ERROR: a message for humans and the RFC 6120 stream error
 * condition ("not-well-formed", "restricted-xml", "policy-violation", ...). */
const char *lx_stream_error(const lx_stream *s, const char **condition);

LX_HIDDEN_END

#endif
