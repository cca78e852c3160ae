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
 */
#include "stream.h"

#include <expat.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEP '\1'
#define SLICE 16384               /* largest piece given to one XML_Parse */
#define MAX_KEPT_HEADER 2048      /* a real header is a few hundred bytes */
#define NS_XML "http://www.w3.org/XML/1998/namespace"
#define NS_XML_LEN (sizeof(NS_XML) - 1)
#define NS_STREAMS_LEN (sizeof(LX_NS_STREAMS) - 1)

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

  int failed;
  const char *cond;
  char msg[160];
};

void lx_limits_default(lx_limits *lim) {
  lim->max_stanza_size = 262144;
  lim->max_depth = 64;
  lim->max_attrs = 64;
  lim->max_children = 4096;
}

/* ---- errors -------------------------------------------------------------- */

static void fail(lx_stream *s, const char *cond, const char *fmt, ...) {
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
  fail(s, cond, "%s at byte %llu", XML_ErrorString(e),
       s->base + (unsigned long long)XML_GetCurrentByteIndex(s->xp));
}

/* ---- arenas -------------------------------------------------------------- */

/* Grows *buf to hold need elements of size sz. Fails the stream (so expat is
 * stopped) when out of memory; returns 0 then. */
static int grow(lx_stream *s, void **buf, size_t *cap, size_t need, size_t sz) {
  size_t ncap;
  void *nb;
  if (need <= *cap) return 1;
  ncap = *cap ? *cap : 16;
  while (ncap < need) ncap *= 2;
  nb = realloc(*buf, ncap * sz);
  if (!nb) {
    fail(s, "resource-constraint", "out of memory");
    return 0;
  }
  *buf = nb;
  *cap = ncap;
  return 1;
}

/* Makes room for extra more bytes in the string arena. Tree memory is
 * bounded by a multiple of max_stanza_size (not of the stanza's own bytes),
 * so no namespace-prefix trick (a short prefix naming a long URI on every
 * element) can amplify memory beyond that; the arena never grows past that
 * budget, so whatever fits in it is within budget (put_str's fast path). */
static int reserve_str(lx_stream *s, size_t extra) {
  size_t budget = 2 * s->lim.max_stanza_size + 4096, ncap;
  char *nb;
  if (s->nstr + extra <= s->cap_str) return 1;
  if (s->nstr + extra > budget) {
    fail(s, "policy-violation", "stanza tree exceeds its memory budget");
    return 0;
  }
  ncap = s->cap_str ? s->cap_str : 16;
  while (ncap < s->nstr + extra) ncap *= 2;
  if (ncap > budget) ncap = budget;
  if (!(nb = realloc(s->str, ncap))) {
    fail(s, "resource-constraint", "out of memory");
    return 0;
  }
  s->str = nb;
  s->cap_str = ncap;
  return 1;
}

/* Appends p[0..len) to the string arena: its offset, or LX_NONE when the
 * stream failed. */
static uint32_t put_str(lx_stream *s, const char *p, size_t len) {
  uint32_t off = (uint32_t)s->nstr;
  if (len - 1 >= s->cap_str - s->nstr) {   /* empty, or no room */
    if (!reserve_str(s, len)) return LX_NONE;
    if (len == 0) return off;              /* the arena may not exist yet */
  }
  memcpy(s->str + off, p, len);
  s->nstr += len;
  return off;
}

static uint32_t new_node(lx_stream *s) {
  lx_node *n;
  if (!grow(s, (void **)&s->nodes, &s->cap_nodes, s->nnodes + 1, sizeof *n))
    return LX_NONE;
  n = &s->nodes[s->nnodes];
  memset(n, 0, sizeof *n);
  n->ns = n->first = n->last = n->next = n->attr = LX_NONE;
  return (uint32_t)s->nnodes++;
}

static void clear_tree(lx_stream *s) {
  s->nnodes = s->nattrs = s->nstr = 0;
  s->text = LX_NONE;
}

/* Appends child to the element at the top of the stack, enforcing
 * max_children. */
static int link_child(lx_stream *s, uint32_t child) {
  lx_node *p = &s->nodes[s->stack[s->depth - 1].node];
  if (p->nchild >= s->lim.max_children) {
    fail(s, "policy-violation", "more than %u children in one element",
         s->lim.max_children);
    return 0;
  }
  if (p->last == LX_NONE) p->first = child;
  else s->nodes[p->last].next = child;
  p->last = child;
  p->nchild++;
  return 1;
}

/* ---- positions and limits ------------------------------------------------ */

static unsigned long long token_end(lx_stream *s) {
  return s->base + (unsigned long long)XML_GetCurrentByteIndex(s->xp) +
         (unsigned long long)XML_GetCurrentByteCount(s->xp);
}

/* Depth of the top-level elements: 2 inside <stream:stream>, else 1. */
static unsigned top_depth(const lx_stream *s) {
  return s->mode == LX_MODE_STREAM ? 2 : 1;
}

static void queue(lx_stream *s, int ev) {
  s->ev[s->nev++] = ev;
  s->ev_end = token_end(s);
  XML_StopParser(s->xp, XML_TRUE);
}

/* ---- expat handlers ------------------------------------------------------ */

static void XMLCALL on_ns_start(void *ud, const XML_Char *prefix,
                                const XML_Char *uri) {
  lx_stream *s = ud;
  if (s->replaying) return;
  if (s->want_default_ns && prefix == NULL) {
    size_t len = uri ? strlen(uri) : 0;
    char *copy = malloc(len + 1);
    if (!copy) {
      fail(s, "resource-constraint", "out of memory");
      return;
    }
    memcpy(copy, uri ? uri : "", len + 1);
    free(s->default_ns);
    s->default_ns = copy;
    s->default_ns_len = len;
  }
}

/* Splits expat's "uri\1local" into its parts; no separator: no namespace. */
static void split_name(const char *name, const char **ns, size_t *ns_len,
                       const char **local) {
  const char *sep = strchr(name, SEP);
  if (sep) {
    *ns = name;
    *ns_len = (size_t)(sep - name);
    *local = sep + 1;
  } else {
    *ns = "";
    *ns_len = 0;
    *local = name;
  }
}

static int add_attrs(lx_stream *s, lx_node *n, const XML_Char **atts,
                     uint32_t node) {
  unsigned count = 0, i;
  for (i = 0; atts[i]; i += 2) count++;
  if (count > s->lim.max_attrs) {
    fail(s, "policy-violation", "more than %u attributes on one element",
         s->lim.max_attrs);
    return 0;
  }
  if (!count) return 1;
  if (!grow(s, (void **)&s->attrs, &s->cap_attrs, s->nattrs + count,
            sizeof(lx_attr)))
    return 0;
  n = &s->nodes[node];
  n->attr = (uint32_t)s->nattrs;
  n->nattr = count;
  for (i = 0; atts[i]; i += 2) {
    lx_attr *a = &s->attrs[s->nattrs++];
    const char *k = atts[i];
    size_t klen = strlen(k);
    if (klen > NS_XML_LEN && memcmp(k, NS_XML, NS_XML_LEN) == 0 &&
        k[NS_XML_LEN] == SEP) {
      /* xml:lang and friends keep their familiar spelling */
      const char *local = k + NS_XML_LEN + 1;
      size_t llen = strlen(local);
      if (!reserve_str(s, llen + 4)) return 0;
      a->key = (uint32_t)s->nstr;
      memcpy(s->str + s->nstr, "xml:", 4);
      memcpy(s->str + s->nstr + 4, local, llen);
      s->nstr += llen + 4;
      a->key_len = (uint32_t)(llen + 4);
    } else {
      a->key = put_str(s, k, klen);
      a->key_len = (uint32_t)klen;
    }
    a->val_len = (uint32_t)strlen(atts[i + 1]);
    a->val = put_str(s, atts[i + 1], a->val_len);
    if (a->key == LX_NONE || a->val == LX_NONE) return 0;
  }
  return 1;
}

/* Keeps the bytes of the stream header being parsed, to rebuild expat's
 * namespace context after lx_stream_idle(); without them (expat built
 * without context bytes, no memory, or a header over MAX_KEPT_HEADER, which
 * every wake-up would parse again) the stream never goes idle. */
static void keep_header(lx_stream *s) {
  int offset = 0, size = 0;
  const char *ctx = XML_GetInputContext(s->xp, &offset, &size);
  int n = XML_GetCurrentByteCount(s->xp);
  free(s->header);
  s->header = NULL;
  s->header_len = 0;
  if (!ctx || n <= 0 || n > MAX_KEPT_HEADER || offset < 0 || offset + n > size)
    return;
  if (!(s->header = malloc((size_t)n))) return;
  memcpy(s->header, ctx + offset, (size_t)n);
  s->header_len = (size_t)n;
}

static void XMLCALL on_start(void *ud, const XML_Char *name,
                             const XML_Char **atts) {
  lx_stream *s = ud;
  const char *ns, *local;
  size_t ns_len;
  uint32_t node;
  level *lv;
  lx_node *n;

  if (s->failed || s->replaying) return;
  split_name(name, &ns, &ns_len, &local);
  s->text = LX_NONE;
  if (ns_len == NS_XML_LEN && memcmp(ns, NS_XML, NS_XML_LEN) == 0) {
    /* <xml:a/> is namespace-well-formed, but no element lives there and it
     * cannot be written back (xmlns may not name this namespace) */
    fail(s, "bad-format", "an element in the reserved xml namespace");
    return;
  }

  if (s->mode == LX_MODE_STREAM && s->depth == 0) {
    /* the stream header: <stream:stream xmlns:stream='...'> */
    s->want_default_ns = 0;
    if (ns_len != NS_STREAMS_LEN || memcmp(ns, LX_NS_STREAMS, ns_len) != 0) {
      fail(s, "invalid-namespace", "stream element is not in the %s namespace",
           LX_NS_STREAMS);
      return;
    }
    if (strcmp(local, "stream") != 0) {
      fail(s, "bad-format", "root element is <%.40s>, not <stream>", local);
      return;
    }
    clear_tree(s);
    if ((node = new_node(s)) == LX_NONE) return;
    n = &s->nodes[node];
    n->name = put_str(s, local, strlen(local));
    n->name_len = (uint32_t)strlen(local);
    if (s->default_ns) {
      n->ns = put_str(s, s->default_ns, s->default_ns_len);
      n->ns_len = (uint32_t)s->default_ns_len;
    }
    if (!add_attrs(s, n, atts, node)) return;
    keep_header(s);
    lv = &s->stack[0];
    lv->node = node;
    lv->ns = n->ns == LX_NONE ? 0 : n->ns;
    lv->ns_len = n->ns == LX_NONE ? 0 : n->ns_len;
    s->depth = 1;
    queue(s, LX_EV_OPEN);
    s->mark = s->ev_end;
    return;
  }

  if (s->depth + 1 - (top_depth(s) - 1) > s->lim.max_depth) {
    fail(s, "policy-violation", "elements nested deeper than %u",
         s->lim.max_depth);
    return;
  }

  if (s->depth + 1 == top_depth(s)) {
    /* a new top-level element: its bytes count from its '<'. Its effective
     * namespace is kept in the arena for its children to compare with; it
     * becomes attr.xmlns only where it differs from the stream's default
     * namespace (element mode: wherever there is one). */
    uint32_t eff;
    int differs;
    if (s->mode == LX_MODE_STREAM && ns_len == NS_STREAMS_LEN &&
        memcmp(ns, LX_NS_STREAMS, ns_len) == 0 && strcmp(local, "stream") == 0) {
      fail(s, "bad-format", "a stream header inside the stream (a restart "
           "needs reset())");
      return;
    }
    differs = s->mode == LX_MODE_STREAM
                      ? (s->default_ns_len != ns_len ||
                         memcmp(s->default_ns ? s->default_ns : "", ns, ns_len))
                      : ns_len > 0;
    s->mark = s->base + (unsigned long long)XML_GetCurrentByteIndex(s->xp);
    clear_tree(s);
    if ((node = new_node(s)) == LX_NONE) return;
    if ((eff = put_str(s, ns, ns_len)) == LX_NONE) return;
    s->stack[s->depth].ns = eff;
    s->stack[s->depth].ns_len = (uint32_t)ns_len;
    if (differs) {
      s->nodes[node].ns = eff;
      s->nodes[node].ns_len = (uint32_t)ns_len;
    }
  } else {
    const level *parent = &s->stack[s->depth - 1];
    if ((node = new_node(s)) == LX_NONE) return;
    if (!link_child(s, node)) return;
    s->nodes[parent->node].nelem++;
    n = &s->nodes[node];
    if (parent->ns_len != ns_len ||
        memcmp(s->str + parent->ns, ns, ns_len) != 0) {
      n->ns = put_str(s, ns, ns_len);
      n->ns_len = (uint32_t)ns_len;
    }
    lv = &s->stack[s->depth];
    if (n->ns != LX_NONE) {
      lv->ns = n->ns;
      lv->ns_len = n->ns_len;
    } else {
      lv->ns = parent->ns;
      lv->ns_len = parent->ns_len;
    }
  }
  if (s->failed) return;
  n = &s->nodes[node];
  {
    size_t llen = strlen(local);
    n->name = put_str(s, local, llen);
    n->name_len = (uint32_t)llen;
    if (n->name == LX_NONE) return;
  }
  if (!add_attrs(s, n, atts, node)) return;
  s->stack[s->depth].node = node;
  s->depth++;
}

static void XMLCALL on_end(void *ud, const XML_Char *name) {
  lx_stream *s = ud;
  (void)name;
  if (s->failed) return;
  s->text = LX_NONE;
  if (s->mode == LX_MODE_STREAM && s->depth == 1) {
    s->depth = 0;
    s->closed = 1;
    queue(s, LX_EV_CLOSE);
    s->mark = s->ev_end;
    return;
  }
  s->depth--;
  if (s->depth + 1 == top_depth(s)) {
    unsigned long long end = token_end(s);
    if (end - s->mark > s->lim.max_stanza_size) {
      fail(s, "policy-violation", "stanza larger than %lu bytes",
           (unsigned long)s->lim.max_stanza_size);
      return;
    }
    if (s->mode == LX_MODE_ELEMENT) s->closed = 1;
    queue(s, LX_EV_STANZA);
    s->mark = end;
  }
}

static int all_space(const char *p, int len) {
  int i;
  for (i = 0; i < len; i++)
    if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n') return 0;
  return 1;
}

static void XMLCALL on_text(void *ud, const XML_Char *p, int len) {
  lx_stream *s = ud;
  lx_node *n;
  if (s->failed) return;
  if (s->depth < top_depth(s)) {
    /* between stanzas: whitespace keepalives only (RFC 6120 §4.6.1) */
    if (!all_space(p, len))
      fail(s, "bad-format", "text outside of any stanza");
    else
      s->mark = token_end(s);
    return;
  }
  if (s->text == LX_NONE) {
    uint32_t node = new_node(s);
    if (node == LX_NONE || !link_child(s, node)) return;
    n = &s->nodes[node];
    n->is_text = 1;
    n->name = (uint32_t)s->nstr;
    s->text = node;
  }
  /* the run's bytes are contiguous: nothing else is appended while it is open */
  if (put_str(s, p, (size_t)len) == LX_NONE) return;
  s->nodes[s->text].name_len += (uint32_t)len;
}

static void XMLCALL on_comment(void *ud, const XML_Char *data) {
  (void)data;
  fail(ud, "restricted-xml", "comments are not allowed (RFC 6120 §11.1)");
}

static void XMLCALL on_pi(void *ud, const XML_Char *target,
                          const XML_Char *data) {
  (void)target;
  (void)data;
  fail(ud, "restricted-xml",
       "processing instructions are not allowed (RFC 6120 §11.1)");
}

static void XMLCALL on_doctype(void *ud, const XML_Char *name,
                               const XML_Char *sysid, const XML_Char *pubid,
                               int has_internal_subset) {
  (void)name;
  (void)sysid;
  (void)pubid;
  (void)has_internal_subset;
  fail(ud, "restricted-xml", "DTDs are not allowed (RFC 6120 §11.1)");
}

static void XMLCALL on_entity_decl(void *ud, const XML_Char *name, int is_pe,
                                   const XML_Char *value, int value_len,
                                   const XML_Char *base, const XML_Char *sysid,
                                   const XML_Char *pubid,
                                   const XML_Char *notation) {
  (void)name; (void)is_pe; (void)value; (void)value_len; (void)base;
  (void)sysid; (void)pubid; (void)notation;
  fail(ud, "restricted-xml", "entity declarations are not allowed");
}

static void XMLCALL on_xmldecl(void *ud, const XML_Char *version,
                               const XML_Char *encoding, int standalone) {
  lx_stream *s = ud;
  (void)standalone;
  if (version && strcmp(version, "1.0") != 0) {
    fail(s, "not-well-formed", "XML version %.10s is not supported (1.0 only)",
         version);
    return;
  }
  if (encoding) {
    static const char utf8[] = "utf-8";
    size_t i;
    for (i = 0; encoding[i] && i < 5; i++)
      if ((encoding[i] | 0x20) != utf8[i]) break;
    if (i != 5 || encoding[5]) {
      fail(s, "unsupported-encoding", "encoding %.20s is not supported "
           "(UTF-8 only)", encoding);
    }
  }
}

static int setup(lx_stream *s) {
  XML_Parser xp = s->xp;
  XML_SetUserData(xp, s);
  XML_SetElementHandler(xp, on_start, on_end);
  XML_SetCharacterDataHandler(xp, on_text);
  XML_SetStartNamespaceDeclHandler(xp, on_ns_start);
  XML_SetCommentHandler(xp, on_comment);
  XML_SetProcessingInstructionHandler(xp, on_pi);
  XML_SetStartDoctypeDeclHandler(xp, on_doctype);
  XML_SetEntityDeclHandler(xp, on_entity_decl);
  XML_SetXmlDeclHandler(xp, on_xmldecl);
  XML_SetParamEntityParsing(xp, XML_PARAM_ENTITY_PARSING_NEVER);
  /* a stanza must be delivered as soon as its last byte arrives */
  XML_SetReparseDeferralEnabled(xp, XML_FALSE);
  return 1;
}

static void reset_state(lx_stream *s) {
  s->in = NULL;
  s->in_len = s->in_pos = 0;
  s->final = s->final_sent = 0;
  s->suspended = 0;
  s->fed = s->mark = s->ev_end = 0;
  s->depth = 0;
  s->closed = 0;
  s->nev = s->evpos = 0;
  clear_tree(s);
  free(s->default_ns);
  s->default_ns = NULL;
  s->default_ns_len = 0;
  s->want_default_ns = s->mode == LX_MODE_STREAM;
  free(s->header);
  s->header = NULL;
  s->header_len = 0;
  s->base = 0;
  s->replaying = 0;
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
  setup(s);
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
    fail(s, "resource-constraint", "out of memory");
    return 0;
  }
  setup(s);
  return 1;
}

void lx_stream_feed(lx_stream *s, const char *data, size_t len, int final) {
  s->in = data;
  s->in_len = len;
  s->in_pos = 0;
  s->final = final;
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
    fail(s, "resource-constraint", "out of memory");
    return 0;
  }
  setup(s);
  s->base = s->fed - s->header_len;
  s->replaying = 1;
  st = XML_Parse(s->xp, s->header, (int)s->header_len, 0);
  s->replaying = 0;
  if (st != XML_STATUS_OK) {
    fail(s, "resource-constraint", "cannot restore the idle stream parser");
    return 0;
  }
  return 1;
}

int lx_stream_idle(lx_stream *s) {
  if (!s->xp || s->mode != LX_MODE_STREAM || !s->header || s->depth != 1 ||
      s->suspended || s->in_pos < s->in_len || s->failed || s->closed ||
      s->fed != s->mark || s->evpos < s->nev || s->header_len > (size_t)INT_MAX)
    return 0;
  XML_ParserFree(s->xp);
  s->xp = NULL;
  clear_tree(s);
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

int lx_stream_next(lx_stream *s) {
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
      size_t n = slice_len(s);
      int last = s->final && s->in_pos + n == s->in_len;
      const char *nul = memchr(s->in + s->in_pos, 0, n);
      if (s->fed == 0 && n > 0) {
        unsigned char c = (unsigned char)s->in[s->in_pos];
        /* UTF-16/32 byte order marks can't start UTF-8 XML */
        if (c == 0xFE || c == 0xFF) {
          fail(s, "unsupported-encoding", "the stream is not UTF-8");
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
            fail(s, "unsupported-encoding", "the stream is not UTF-8 (UTF-16?)");
          else
            fail(s, "not-well-formed", "NUL byte at byte %llu", s->fed);
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
      fail(s, "policy-violation", "stanza larger than %lu bytes",
           (unsigned long)s->lim.max_stanza_size);
      continue;
    }
    if (s->mode == LX_MODE_ELEMENT && s->final_sent && !s->closed && !s->nev)
      fail(s, "not-well-formed", "no element found");
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
