/*
 * serialize.c - escaping, attribute writing and tree serialization (see
 * serialize.h). Every string is validated while it is copied, so a caller
 * can never get restricted or malformed XML out of here.
 */
#include "lx.h"
#include "serialize.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"
#include "xmlchar.h"

#define NS_XML "http://www.w3.org/XML/1998/namespace"
#define NS_XMLNS "http://www.w3.org/2000/xmlns/"

void lx_buf_free(lx_buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

static int reserve(lx_buf *b, size_t extra) {
  size_t ncap;
  char *np;
  if (b->cap - b->len >= extra) return 1;
  if (extra > (size_t)-1 / 2 - b->len) return 0;
  ncap = b->cap ? b->cap : 256;
  while (ncap - b->len < extra) ncap *= 2;
  np = realloc(b->p, ncap);
  if (!np) return 0;
  b->p = np;
  b->cap = ncap;
  return 1;
}

int lx_buf_put(lx_buf *b, const char *s, size_t len) {
  if (!reserve(b, len)) return 0;
  memcpy(b->p + b->len, s, len);
  b->len += len;
  return 1;
}

#define PUTS(b, lit) lx_buf_put((b), (lit), sizeof(lit) - 1)

/* Byte classes for escaping: 0 copied as is, 1 escaped everywhere, 2
 * escaped in attribute values only, 3 never allowed (C0 controls), 4 the
 * start of a multi-byte UTF-8 sequence to validate. */
static const unsigned char esc_class[256] = {
  3, 3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 3, 3, 1, 3, 3,   /* TAB LF CR */
  3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
  0, 0, 2, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0,   /* " & ' */
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0,   /* < > */
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
  4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
  4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
  4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
  4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
  4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
  4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
  4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
};

static const char *reference(unsigned char c, size_t *rlen) {
  switch (c) {
  case '&': *rlen = 5; return "&amp;";
  case '<': *rlen = 4; return "&lt;";
  case '>': *rlen = 4; return "&gt;";
  case '\r': *rlen = 5; return "&#13;";
  case '\'': *rlen = 6; return "&apos;";
  case '"': *rlen = 6; return "&quot;";
  case '\t': *rlen = 4; return "&#9;";
  default: *rlen = 5; return "&#10;";
  }
}

static int escape(lx_buf *b, const char *str, size_t len, int attr) {
  const unsigned char *s = (const unsigned char *)str;
  size_t start = b->len, i = 0, run = 0;
  if (!reserve(b, len + 16)) return -1;
  while (i < len) {
    unsigned char cls = esc_class[s[i]];
    const char *rep;
    size_t rlen;
    if (cls == 0 || (cls == 2 && !attr)) {
      i++;
      continue;
    }
    if (cls == 4) {
      unsigned long cp;
      size_t n = lx_utf8_decode(s + i, len - i, &cp);
      if (n == 0 || !lx_xml_char(cp)) goto invalid;
      i += n;
      continue;
    }
    if (cls == 3) goto invalid;
    rep = reference(s[i], &rlen);
    if (!lx_buf_put(b, str + run, i - run) || !lx_buf_put(b, rep, rlen))
      goto oom;
    run = ++i;
  }
  if (!lx_buf_put(b, str + run, i - run)) goto oom;
  return 1;
invalid:
  b->len = start;
  return 0;
oom:
  b->len = start;
  return -1;
}

int lx_escape_text(lx_buf *b, const char *s, size_t len) {
  return escape(b, s, len, 0);
}

int lx_escape_attr(lx_buf *b, const char *s, size_t len) {
  return escape(b, s, len, 1);
}

/* ` name='value'` with name written as given */
static int put_attr(lx_buf *b, const char *pfx, size_t plen, const char *name,
                    size_t nlen, const char *val, size_t vlen) {
  size_t start = b->len;
  int r = -1;
  if (PUTS(b, " ") && lx_buf_put(b, pfx, plen) && lx_buf_put(b, name, nlen) &&
      PUTS(b, "='") && (r = lx_escape_attr(b, val, vlen)) == 1 && PUTS(b, "'"))
    return 1;
  b->len = start;                  /* nothing of a refused attribute stays */
  return r == 1 ? -1 : r;
}

void lx_nsscope_free(lx_nsscope *sc) {
  free(sc->e);
  sc->e = NULL;
  sc->n = sc->cap = 0;
  sc->next_id = 0;
}

unsigned lx_nsscope_find(const lx_nsscope *sc, const char *uri, size_t len) {
  size_t i = sc->n;
  while (i-- > 0)
    if (sc->e[i].len == len && memcmp(sc->e[i].uri, uri, len) == 0)
      return sc->e[i].id;
  return 0;
}

unsigned lx_nsscope_add(lx_nsscope *sc, const char *uri, size_t len) {
  if (sc->n == sc->cap) {
    size_t ncap = sc->cap ? 2 * sc->cap : 8;
    void *ne = realloc(sc->e, ncap * sizeof *sc->e);
    if (!ne) return 0;
    sc->e = ne;
    sc->cap = ncap;
  }
  sc->e[sc->n].uri = uri;
  sc->e[sc->n].len = len;
  sc->e[sc->n].id = ++sc->next_id;
  return sc->e[sc->n++].id;
}

int lx_ns_reserved(const char *uri, size_t len) {
  return (len == sizeof(NS_XML) - 1 && memcmp(uri, NS_XML, len) == 0) ||
         (len == sizeof(NS_XMLNS) - 1 && memcmp(uri, NS_XMLNS, len) == 0);
}

int lx_write_attr(lx_buf *b, const char *key, size_t klen, const char *val,
                  size_t vlen, lx_nsscope *sc) {
  const char *sep = memchr(key, '\1', klen);
  size_t start = b->len;
  int r;
  if (!lx_xml_attr_name_valid(key, klen)) return 0;
  if (klen == 5 && memcmp(key, "xmlns", 5) == 0 && lx_ns_reserved(val, vlen))
    return 0;                   /* xmlns may not name a reserved namespace */
  if (sep) {
    size_t ulen = (size_t)(sep - key);
    const char *local = sep + 1;
    size_t llen = klen - ulen - 1;
    char pfx[24];
    int plen;
    unsigned id;
    if (ulen == sizeof(NS_XML) - 1 && memcmp(key, NS_XML, ulen) == 0)
      return put_attr(b, "xml:", 4, local, llen, val, vlen);
    if (ulen == sizeof(NS_XMLNS) - 1 && memcmp(key, NS_XMLNS, ulen) == 0)
      return 0;                               /* reserved namespace */
    /* one generated prefix per namespace, declared where first needed and
     * reused by the descendants: output stays proportional to input */
    id = lx_nsscope_find(sc, key, ulen);
    if (id) {
      plen = snprintf(pfx, sizeof pfx, "lxns%u:", id);
      return put_attr(b, pfx, (size_t)plen, local, llen, val, vlen);
    }
    if (!(id = lx_nsscope_add(sc, key, ulen))) return -1;
    plen = snprintf(pfx, sizeof pfx, "lxns%u", id);
    if ((r = put_attr(b, "xmlns:", 6, pfx, (size_t)plen, key, ulen)) == 1) {
      pfx[plen] = ':';
      r = put_attr(b, pfx, (size_t)plen + 1, local, llen, val, vlen);
    }
    if (r != 1) {
      b->len = start;
      sc->n--;                     /* the declaration was not written */
      return r;
    }
    return 1;
  }
  return put_attr(b, "", 0, key, klen, val, vlen);
}

static int tree(lx_buf *b, const lx_tree *t, uint32_t idx, lx_nsscope *sc) {
  const lx_node *n = &t->nodes[idx];
  uint32_t i, c;
  size_t mark = sc->n;
  int r;
  if (n->is_text) return lx_escape_text(b, t->str + n->name, n->name_len);
  if (!lx_xml_ncname_valid(t->str + n->name, n->name_len)) return 0;
  if (!PUTS(b, "<") || !lx_buf_put(b, t->str + n->name, n->name_len))
    return -1;
  if (n->ns != LX_NONE &&
      (r = lx_write_attr(b, "xmlns", 5, t->str + n->ns, n->ns_len, sc)) != 1)
    return r;
  for (i = 0; i < n->nattr; i++) {
    const lx_attr *a = &t->attrs[n->attr + i];
    if ((r = lx_write_attr(b, t->str + a->key, a->key_len, t->str + a->val,
                           a->val_len, sc)) != 1)
      return r;
  }
  if (n->first == LX_NONE) {
    sc->n = mark;
    return PUTS(b, "/>") ? 1 : -1;
  }
  if (!PUTS(b, ">")) return -1;
  for (c = n->first; c != LX_NONE; c = t->nodes[c].next)
    if ((r = tree(b, t, c, sc)) != 1) return r;
  sc->n = mark;                     /* its declarations end with it */
  if (!PUTS(b, "</") || !lx_buf_put(b, t->str + n->name, n->name_len) ||
      !PUTS(b, ">"))
    return -1;
  return 1;
}

int lx_serialize_tree(lx_buf *b, const lx_tree *t, uint32_t idx) {
  lx_nsscope sc = {NULL, 0, 0, 0};
  int r = tree(b, t, idx, &sc);
  lx_nsscope_free(&sc);
  return r;
}
