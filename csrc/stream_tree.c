/*
 * stream_tree.c - the tree side of the stream parser engine (stream.c holds
 * its public API): the three arenas owned by the lx_stream (nodes,
 * attributes, string bytes) and the expat handlers that fill them, enforce
 * the limits, and, when a top-level element completes, queue an event and
 * suspend expat.
 */
#include "lx.h"
#include "stream_int.h"

#include <stdlib.h>
#include <string.h>

/*
 * Reparse deferral (expat 2.6.0, and distributions' backports of it to older
 * versions) holds a large token back until more bytes arrive, which would
 * delay a stanza whose last byte has already come. Expat without the feature
 * has neither the deferral nor this function, and its expat.h may lack the
 * declaration: declared here and referenced weakly, the address is NULL at
 * run time when the loaded libexpat lacks the function, so the core builds
 * and runs against any expat from 2.2 on (the compat-expat make target
 * compiles it against a header without the declaration).
 */
#pragma weak XML_SetReparseDeferralEnabled
XML_Bool XML_SetReparseDeferralEnabled(XML_Parser parser, XML_Bool enabled);


#define MAX_KEPT_HEADER 2048      /* a real header is a few hundred bytes */
#define NS_XML "http://www.w3.org/XML/1998/namespace"
#define NS_XML_LEN (sizeof(NS_XML) - 1)
#define NS_STREAMS_LEN (sizeof(LX_NS_STREAMS) - 1)

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
    lx_stream_fail(s, "resource-constraint", "out of memory");
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
    lx_stream_fail(s, "policy-violation", "stanza tree exceeds its memory budget");
    return 0;
  }
  ncap = s->cap_str ? s->cap_str : 16;
  while (ncap < s->nstr + extra) ncap *= 2;
  if (ncap > budget) ncap = budget;
  if (!(nb = realloc(s->str, ncap))) {
    lx_stream_fail(s, "resource-constraint", "out of memory");
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

void lx_stream_clear_tree(lx_stream *s) {
  s->nnodes = s->nattrs = s->nstr = 0;
  s->text = LX_NONE;
}

/* Appends child to the element at the top of the stack, enforcing
 * max_children. */
static int link_child(lx_stream *s, uint32_t child) {
  lx_node *p = &s->nodes[s->stack[s->depth - 1].node];
  if (p->nchild >= s->lim.max_children) {
    lx_stream_fail(s, "policy-violation", "more than %u children in one element",
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

/* Depth of the top-level elements: 2 inside <stream:stream> or the framed
 * stream's virtual root, 1 in element mode. */
static unsigned top_depth(const lx_stream *s) {
  return s->mode == LX_MODE_ELEMENT ? 1 : 2;  /* framed: under a virtual root */
}

static int add_attrs(lx_stream *s, lx_node *n, const XML_Char **atts,
                     uint32_t node);

static void queue(lx_stream *s, int ev) {
  s->ev[s->nev++] = ev;
  s->ev_end = token_end(s);
  /* framed mode parses the whole message before giving its event */
  if (s->mode != LX_MODE_FRAMED) XML_StopParser(s->xp, XML_TRUE);
}

#define NS_FRAMING_LEN (sizeof(LX_NS_FRAMING) - 1)
#define NS_CLIENT_LEN (sizeof(LX_NS_CLIENT) - 1)

/* Framed mode (RFC 7395 §3.3): the root element of a message. <open/> and
 * <close/> in the framing namespace stand for the stream header and its
 * end; <open/>'s node is built like a stream header's, its namespace
 * jabber:client (what the stanzas of the stream default to), so the caller
 * sees the same attributes as from <stream:stream xmlns='jabber:client'>.
 * <close/> keeps its attributes too (bounded like any element's), for its
 * see-other-uri (RFC 7395 §3.6.1), and may come before <open/>: a server
 * that redirects answers the client's <open/> with it.
 * Returns 1 when the element is a stanza (the caller builds it). */
static int framed_root(lx_stream *s, const char *ns, size_t ns_len,
                       const char *local, const XML_Char **atts) {
  int framing = ns_len == NS_FRAMING_LEN && memcmp(ns, LX_NS_FRAMING, ns_len) == 0;
  int is_open = strcmp(local, "open") == 0, is_close = strcmp(local, "close") == 0;
  uint32_t node;
  lx_node *n;
  if (framing && (is_open || is_close)) {
    if (is_open && s->opened) {
      lx_stream_fail(s, "bad-format", "<open/> inside the stream (a restart needs reset())");
      return 0;
    }
    if ((node = new_node(s)) == LX_NONE) return 0;
    n = &s->nodes[node];
    n->name = put_str(s, local, strlen(local));
    n->name_len = (uint32_t)strlen(local);
    if (is_open) {
      n->ns = put_str(s, LX_NS_CLIENT, NS_CLIENT_LEN);
      n->ns_len = (uint32_t)NS_CLIENT_LEN;
    }
    if (!add_attrs(s, &s->nodes[node], atts, node)) return 0;
    if (is_open) s->opened = 1;
    s->stack[1].node = node;
    s->stack[1].ns = s->stack[1].ns_len = 0;
    s->top_kind = is_open ? LX_EV_OPEN : LX_EV_CLOSE;
    s->depth = 2;
    return 0;
  }
  if (!s->opened) {
    if (!framing && (is_open || strcmp(local, "stream") == 0))
      lx_stream_fail(s, "invalid-namespace", "<%s/> is not in the %s namespace "
                     "(RFC 7395 §3.3.2)", local, LX_NS_FRAMING);
    else
      lx_stream_fail(s, "bad-format", "the stream must start with <open/> (RFC 7395 §3.4)");
    return 0;
  }
  if (framing) {
    lx_stream_fail(s, "bad-format", "<%.40s/> is not an element of the framing namespace",
                   local);
    return 0;
  }
  s->top_kind = LX_EV_STANZA;
  return 1;
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
      lx_stream_fail(s, "resource-constraint", "out of memory");
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
    lx_stream_fail(s, "policy-violation", "more than %u attributes on one element",
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
    lx_stream_fail(s, "bad-format", "an element in the reserved xml namespace");
    return;
  }

  if (s->mode == LX_MODE_STREAM && s->depth == 0) {
    /* the stream header: <stream:stream xmlns:stream='...'> */
    s->want_default_ns = 0;
    if (ns_len != NS_STREAMS_LEN || memcmp(ns, LX_NS_STREAMS, ns_len) != 0) {
      lx_stream_fail(s, "invalid-namespace", "stream element is not in the %s namespace",
                     LX_NS_STREAMS);
      return;
    }
    if (strcmp(local, "stream") != 0) {
      lx_stream_fail(s, "bad-format", "root element is <%.40s>, not <stream>", local);
      return;
    }
    lx_stream_clear_tree(s);
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

  if (s->mode == LX_MODE_FRAMED) {
    if (s->depth == 0) {            /* the virtual root (next_framed) */
      s->stack[0].node = 0;
      s->stack[0].ns = s->stack[0].ns_len = 0;
      s->depth = 1;
      return;
    }
    if (s->depth == 1) {
      if (s->top_kind) {
        lx_stream_fail(s, "bad-format", "a WebSocket message must be exactly one "
                       "complete element (RFC 7395 §3.3.3): more than one");
        return;
      }
      if (!framed_root(s, ns, ns_len, local, atts)) return;
    } else if (s->top_kind != LX_EV_STANZA) {
      lx_stream_fail(s, "bad-format", "<open/> and <close/> have no children");
      return;
    }
  }

  if (s->depth + 1 - (top_depth(s) - 1) > s->lim.max_depth) {
    lx_stream_fail(s, "policy-violation", "elements nested deeper than %u",
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
      lx_stream_fail(s, "bad-format", "a stream header inside the stream (a restart "
                     "needs reset())");
      return;
    }
    if (s->mode == LX_MODE_STREAM)
      differs = s->default_ns_len != ns_len ||
                memcmp(s->default_ns ? s->default_ns : "", ns, ns_len);
    else if (s->mode == LX_MODE_FRAMED)   /* jabber:client unless declared */
      differs = ns_len > 0 && (ns_len != NS_CLIENT_LEN ||
                               memcmp(ns, LX_NS_CLIENT, ns_len) != 0);
    else
      differs = ns_len > 0;
    s->mark = s->base + (unsigned long long)XML_GetCurrentByteIndex(s->xp);
    lx_stream_clear_tree(s);
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
  if (s->mode == LX_MODE_FRAMED && s->depth == 2 && s->top_kind != LX_EV_STANZA) {
    s->depth = 1;
    if (s->top_kind == LX_EV_CLOSE) s->closed = 1;
    queue(s, s->top_kind);
    return;
  }
  s->depth--;
  if (s->depth + 1 == top_depth(s)) {
    unsigned long long end = token_end(s);
    if (end - s->mark > s->lim.max_stanza_size) {
      lx_stream_fail(s, "policy-violation", "stanza larger than %lu bytes",
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
    if (all_space(p, len))
      s->mark = token_end(s);
    else if (s->mode == LX_MODE_FRAMED)
      lx_stream_fail(s, "bad-format", "a WebSocket message must be exactly one complete "
                     "element (RFC 7395 §3.3.3): text outside it");
    else
      lx_stream_fail(s, "bad-format", "text outside of any stanza");
    return;
  }
  if (s->mode == LX_MODE_FRAMED && s->top_kind != LX_EV_STANZA) {
    if (!all_space(p, len))
      lx_stream_fail(s, "bad-format", "<open/> and <close/> have no text");
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
  lx_stream_fail(ud, "restricted-xml", "comments are not allowed (RFC 6120 §11.1)");
}

static void XMLCALL on_pi(void *ud, const XML_Char *target,
                          const XML_Char *data) {
  (void)target;
  (void)data;
  lx_stream_fail(ud, "restricted-xml",
                 "processing instructions are not allowed (RFC 6120 §11.1)");
}

static void XMLCALL on_doctype(void *ud, const XML_Char *name,
                               const XML_Char *sysid, const XML_Char *pubid,
                               int has_internal_subset) {
  (void)name;
  (void)sysid;
  (void)pubid;
  (void)has_internal_subset;
  lx_stream_fail(ud, "restricted-xml", "DTDs are not allowed (RFC 6120 §11.1)");
}

static void XMLCALL on_entity_decl(void *ud, const XML_Char *name, int is_pe,
                                   const XML_Char *value, int value_len,
                                   const XML_Char *base, const XML_Char *sysid,
                                   const XML_Char *pubid,
                                   const XML_Char *notation) {
  (void)name; (void)is_pe; (void)value; (void)value_len; (void)base;
  (void)sysid; (void)pubid; (void)notation;
  lx_stream_fail(ud, "restricted-xml", "entity declarations are not allowed");
}

static void XMLCALL on_xmldecl(void *ud, const XML_Char *version,
                               const XML_Char *encoding, int standalone) {
  lx_stream *s = ud;
  (void)standalone;
  if (version && strcmp(version, "1.0") != 0) {
    lx_stream_fail(s, "not-well-formed", "XML version %.10s is not supported (1.0 only)",
                   version);
    return;
  }
  if (encoding) {
    static const char utf8[] = "utf-8";
    size_t i;
    for (i = 0; encoding[i] && i < 5; i++)
      if ((encoding[i] | 0x20) != utf8[i]) break;
    if (i != 5 || encoding[5]) {
      lx_stream_fail(s, "unsupported-encoding", "encoding %.20s is not supported "
                     "(UTF-8 only)", encoding);
    }
  }
}

int lx_stream_setup(lx_stream *s) {
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
  if (XML_SetReparseDeferralEnabled) XML_SetReparseDeferralEnabled(xp, XML_FALSE);
  return 1;
}
