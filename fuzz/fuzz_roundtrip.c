/*
 * fuzz_roundtrip.c - libFuzzer target for the serializer (serialize.c) against
 * the parser (stream.c): "parse(serialize(x)) equals x" and
 * "lxmpp never emits bad XML", checked three ways on every input.
 *
 * 1. Tree round trip: the payload is parsed as one element (element mode,
 *    final). If a tree comes out, it is serialized (S1; the parser only hands
 *    out valid content, so a refusal is a bug), S1 is parsed again (it must
 *    parse), serialized again (S2): S1 and S2 must be byte-identical and the
 *    two trees equal node by node (names, namespaces, attribute multisets,
 *    text).
 * 2. Escaping: the payload is cut in two (A, B). lx_escape_attr(A) and
 *    lx_escape_text(B) must accept exactly the valid XML text
 *    (lx_xml_text_valid); when both accept, <a x='esc(A)'>esc(B)</a> must
 *    parse back to exactly A and B. Nothing may be normalized away: the
 *    escaper writes CR, TAB and LF in attribute values, and CR in text, as
 *    character references.
 * 3. Attributes: lx_write_attr(key A, value B) must either refuse or write
 *    an attribute that parses back as key A (a namespace-qualified key
 *    "uri\1local" comes back as such; the XML namespace as "xml:local") with
 *    value B; an "xmlns" key must come back as the element's namespace, and
 *    "xmlns:p" keys must be refused (xmlchar.h).
 *
 * Input layout: the 8-byte header of fuzz_stream.c, then the payload (the
 * same seeds serve both targets; shorter inputs are all payload). The cut:
 * at the first NUL byte of the payload (which is never valid XML text) when
 * there is one, else at header byte 7 * payload_length / 256.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serialize.h"
#include "stream.h"
#include "xmlchar.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HDR_LEN 8
#define NS_XML "http://www.w3.org/XML/1998/namespace"
#define NS_XML_LEN (sizeof(NS_XML) - 1)

static void fail_check(const char *what, int line) __attribute__((noreturn));
static void fail_check(const char *what, int line) {
  fprintf(stderr, "fuzz_roundtrip.c:%d: check failed: %s\n", line, what);
  __builtin_trap();
}
#define CHECK(c)                                                               \
  do {                                                                         \
    if (!(c)) fail_check(#c, __LINE__);                                        \
  } while (0)

static void dump(const char *title, const char *p, size_t len) {
  size_t i;
  fprintf(stderr, "%s (%zu bytes): ", title, len);
  for (i = 0; i < len && i < 2000; i++) {
    unsigned char ch = (unsigned char)p[i];
    if (ch >= 0x20 && ch < 0x7f) fputc(ch, stderr);
    else fprintf(stderr, "\\x%02x", ch);
  }
  fputc('\n', stderr);
}

/* ---- parsing ------------------------------------------------------------- */

/* Parses doc[0..len) as one element with the given limits; returns the
 * stream (owned by the caller) with the tree ready, or NULL when the parser
 * gave no element. *cond gets the error condition, if any. Events after the
 * element (an error for trailing junk) are not looked at: the tree is only
 * valid until the parser runs on. */
static lx_stream *parse_element(const char *doc, size_t len,
                                const lx_limits *lim, const char **cond) {
  lx_stream *s = lx_stream_new(LX_MODE_ELEMENT, lim);
  int ev;
  CHECK(s != NULL);
  *cond = NULL;
  lx_stream_feed(s, doc, len, 1);
  while ((ev = lx_stream_next(s)) != LX_EV_MORE) {
    if (ev == LX_EV_STANZA) return s;
    CHECK(ev == LX_EV_ERROR);
    lx_stream_error(s, cond);
    break;
  }
  lx_stream_free(s);
  return NULL;
}

/* ---- tree comparison ----------------------------------------------------- */

static int same_bytes(const lx_tree *ta, uint32_t a, uint32_t alen,
                      const lx_tree *tb, uint32_t b, uint32_t blen) {
  return alen == blen && memcmp(ta->str + a, tb->str + b, alen) == 0;
}

static int same_attr(const lx_tree *ta, const lx_attr *x, const lx_tree *tb,
                     const lx_attr *y) {
  return same_bytes(ta, x->key, x->key_len, tb, y->key, y->key_len) &&
         same_bytes(ta, x->val, x->val_len, tb, y->val, y->val_len);
}

/* 1 when node i of ta and node j of tb are equal subtrees: same kind, names,
 * namespaces (present or not, and the same), attribute multisets, children
 * in order. */
static int same_tree(const lx_tree *ta, uint32_t i, const lx_tree *tb,
                     uint32_t j) {
  const lx_node *x = &ta->nodes[i], *y = &tb->nodes[j];
  uint32_t k, l, c, d;
  unsigned char used[256];
  if (x->is_text != y->is_text) return 0;
  if (!same_bytes(ta, x->name, x->name_len, tb, y->name, y->name_len))
    return 0;
  if (x->is_text) return 1;
  if ((x->ns == LX_NONE) != (y->ns == LX_NONE)) return 0;
  if (x->ns != LX_NONE &&
      !same_bytes(ta, x->ns, x->ns_len, tb, y->ns, y->ns_len))
    return 0;
  if (x->nattr != y->nattr || x->nchild != y->nchild) return 0;
  CHECK(x->nattr <= sizeof used); /* the default limit is 64 */
  memset(used, 0, sizeof used);
  for (k = 0; k < x->nattr; k++) {
    const lx_attr *a = &ta->attrs[x->attr + k];
    for (l = 0; l < y->nattr; l++)
      if (!used[l] && same_attr(ta, a, tb, &tb->attrs[y->attr + l])) break;
    if (l == y->nattr) return 0;
    used[l] = 1;
  }
  for (c = x->first, d = y->first; c != LX_NONE && d != LX_NONE;
       c = ta->nodes[c].next, d = tb->nodes[d].next)
    if (!same_tree(ta, c, tb, d)) return 0;
  return c == LX_NONE && d == LX_NONE;
}

/* ---- 1. parse, serialize, parse, serialize ------------------------------- */

static void tree_roundtrip(const char *p, size_t len) {
  lx_limits lim;
  lx_stream *s1, *s2;
  lx_tree t1, t2;
  lx_buf b1 = {NULL, 0, 0}, b2 = {NULL, 0, 0};
  const char *cond;
  int r;

  lx_limits_default(&lim);
  if (!(s1 = parse_element(p, len, &lim, &cond))) return;
  lx_stream_tree(s1, &t1);
  r = lx_serialize_tree(&b1, &t1, 0);
  if (r != 1) {
    dump("input", p, len);
    fail_check("the serializer refused a tree the parser gave", __LINE__);
  }
  /* Serializing may make a stanza longer than it was (a namespace URI is
   * declared again on each element that uses it), so the second parse gets
   * room for it; depth, attributes and children do not change. */
  if (b1.len > lim.max_stanza_size) lim.max_stanza_size = b1.len;
  if (!(s2 = parse_element(b1.p, b1.len, &lim, &cond))) {
    dump("input", p, len);
    dump("serialized", b1.p, b1.len);
    fprintf(stderr, "second parse: %s\n", cond ? cond : "no element");
    fail_check("the serialization of a parsed tree does not parse", __LINE__);
  }
  lx_stream_tree(s2, &t2);
  CHECK(lx_serialize_tree(&b2, &t2, 0) == 1);
  if (b1.len != b2.len || memcmp(b1.p, b2.p, b1.len) != 0 ||
      t1.nnodes != t2.nnodes || !same_tree(&t1, 0, &t2, 0)) {
    dump("input", p, len);
    dump("serialized once", b1.p, b1.len);
    dump("serialized twice", b2.p, b2.len);
    fail_check("parse(serialize(x)) differs from x", __LINE__);
  }
  lx_buf_free(&b1);
  lx_buf_free(&b2);
  lx_stream_free(s1);
  lx_stream_free(s2);
}

/* ---- 2. escaping --------------------------------------------------------- */

static void escape_roundtrip(const char *a, size_t alen, const char *b,
                             size_t blen) {
  lx_buf doc = {NULL, 0, 0}, scratch = {NULL, 0, 0};
  lx_limits lim;
  lx_stream *s;
  lx_tree t;
  const lx_node *root;
  const char *cond;
  int ra, rb;

  /* both escapers accept exactly the valid XML text */
  CHECK(lx_escape_text(&scratch, a, alen) == lx_xml_text_valid(a, alen));
  CHECK(lx_escape_attr(&scratch, b, blen) == lx_xml_text_valid(b, blen));
  lx_buf_free(&scratch);

  CHECK(lx_buf_put(&doc, "<a x='", 6));
  ra = lx_escape_attr(&doc, a, alen);
  CHECK(ra == lx_xml_text_valid(a, alen));
  CHECK(lx_buf_put(&doc, "'>", 2));
  rb = lx_escape_text(&doc, b, blen);
  CHECK(rb == lx_xml_text_valid(b, blen));
  if (ra != 1 || rb != 1) {
    lx_buf_free(&doc);
    return;
  }
  CHECK(lx_buf_put(&doc, "</a>", 4));

  lx_limits_default(&lim);
  if (doc.len > lim.max_stanza_size) lim.max_stanza_size = doc.len;
  if (!(s = parse_element(doc.p, doc.len, &lim, &cond))) {
    dump("attribute value", a, alen);
    dump("text", b, blen);
    dump("document", doc.p, doc.len);
    fprintf(stderr, "parse: %s\n", cond ? cond : "no element");
    fail_check("escaped text does not parse", __LINE__);
  }
  lx_stream_tree(s, &t);
  root = &t.nodes[0];
  CHECK(!root->is_text && root->ns == LX_NONE && root->nattr == 1);
  CHECK(root->name_len == 1 && t.str[root->name] == 'a');
  CHECK(t.attrs[root->attr].key_len == 1 && t.str[t.attrs[root->attr].key] == 'x');
  if (t.attrs[root->attr].val_len != alen ||
      memcmp(t.str + t.attrs[root->attr].val, a, alen) != 0) {
    dump("attribute value", a, alen);
    dump("escaped document", doc.p, doc.len);
    dump("parsed back", t.str + t.attrs[root->attr].val,
         t.attrs[root->attr].val_len);
    fail_check("an escaped attribute value did not come back unchanged",
               __LINE__);
  }
  if (blen == 0) {
    CHECK(root->first == LX_NONE);
  } else {
    const lx_node *txt;
    CHECK(root->nchild == 1 && root->first != LX_NONE);
    txt = &t.nodes[root->first];
    CHECK(txt->is_text);
    if (txt->name_len != blen || memcmp(t.str + txt->name, b, blen) != 0) {
      dump("text", b, blen);
      dump("escaped document", doc.p, doc.len);
      dump("parsed back", t.str + txt->name, txt->name_len);
      fail_check("escaped text did not come back unchanged", __LINE__);
    }
  }
  lx_stream_free(s);
  lx_buf_free(&doc);
}

/* ---- 3. lx_write_attr ---------------------------------------------------- */

static int starts(const char *s, size_t len, const char *pfx) {
  size_t n = strlen(pfx);
  return len >= n && memcmp(s, pfx, n) == 0;
}

static void attr_roundtrip(const char *key, size_t klen, const char *val,
                           size_t vlen) {
  lx_buf doc = {NULL, 0, 0};
  lx_limits lim;
  lx_stream *s;
  lx_tree t;
  const lx_node *root;
  const char *cond;
  lx_nsscope sc = {NULL, 0, 0, 0};
  int r;

  CHECK(lx_buf_put(&doc, "<a", 2));
  r = lx_write_attr(&doc, key, klen, val, vlen, &sc);
  lx_nsscope_free(&sc);
  CHECK(r == 0 || r == 1);
  if (starts(key, klen, "xmlns:") && !memchr(key, '\1', klen))
    CHECK(r == 0); /* a prefix declaration (a "uri\1local" may start so) */
  if (r == 0) { /* (a refused value may leave " key='" behind: no matter) */
    lx_buf_free(&doc);
    return;
  }
  CHECK(lx_xml_attr_name_valid(key, klen) && lx_xml_text_valid(val, vlen));
  CHECK(lx_buf_put(&doc, "/>", 2));

  lx_limits_default(&lim);
  if (doc.len > lim.max_stanza_size) lim.max_stanza_size = doc.len;
  if (!(s = parse_element(doc.p, doc.len, &lim, &cond))) {
    dump("key", key, klen);
    dump("value", val, vlen);
    dump("written", doc.p, doc.len);
    fprintf(stderr, "parse: %s\n", cond ? cond : "no element");
    fail_check("lx_write_attr accepted an attribute a parser rejects",
               __LINE__);
  }
  lx_stream_tree(s, &t);
  root = &t.nodes[0];
  CHECK(!root->is_text && root->first == LX_NONE);
  if (klen == 5 && memcmp(key, "xmlns", 5) == 0) {
    /* the default namespace: the element's own, none if empty */
    CHECK(root->nattr == 0);
    if (vlen == 0) CHECK(root->ns == LX_NONE);
    else CHECK(root->ns != LX_NONE && root->ns_len == vlen &&
               memcmp(t.str + root->ns, val, vlen) == 0);
  } else {
    const lx_attr *a = &t.attrs[root->attr];
    const char *pfx = "", *k = key;
    size_t plen = 0, kl = klen;
    CHECK(root->nattr == 1 && root->ns == LX_NONE);
    if (klen > NS_XML_LEN && memcmp(key, NS_XML, NS_XML_LEN) == 0 &&
        key[NS_XML_LEN] == '\1') {
      /* the XML namespace comes back with its familiar prefix */
      pfx = "xml:";
      plen = 4;
      k = key + NS_XML_LEN + 1;
      kl = klen - NS_XML_LEN - 1;
    }
    if (a->key_len != plen + kl || memcmp(t.str + a->key, pfx, plen) != 0 ||
        memcmp(t.str + a->key + plen, k, kl) != 0 ||
        a->val_len != vlen || memcmp(t.str + a->val, val, vlen) != 0) {
      dump("key", key, klen);
      dump("value", val, vlen);
      dump("written", doc.p, doc.len);
      dump("key parsed back", t.str + a->key, a->key_len);
      dump("value parsed back", t.str + a->val, a->val_len);
      fail_check("an attribute written by lx_write_attr came back different",
                 __LINE__);
    }
  }
  lx_stream_free(s);
  lx_buf_free(&doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *p = (const char *)data;
  const char *nul;
  size_t len = size, cut;

  if (size >= HDR_LEN) {
    p += HDR_LEN;
    len -= HDR_LEN;
  }
  tree_roundtrip(p, len);

  nul = len ? memchr(p, '\0', len) : NULL;
  if (nul) cut = (size_t)(nul - p);
  else cut = size >= HDR_LEN ? (size_t)data[7] * len / 256 : len / 2;
  escape_roundtrip(p, cut, p + cut + (nul != NULL), len - cut - (nul != NULL));
  attr_roundtrip(p, cut, p + cut + (nul != NULL), len - cut - (nul != NULL));
  return 0;
}
