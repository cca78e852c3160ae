/*
 * serialize.h - XML output: a growable byte buffer, escaping that validates
 * as it copies, and the serializer of parser trees. Pure C, no Lua: the Lua
 * stanza serializer (serialize_lua.c) and the fuzz targets share it, so there
 * is one definition of how lxmpp writes XML.
 */
#ifndef LXMPP_SERIALIZE_H
#define LXMPP_SERIALIZE_H

#include "lx.h"

#include <stddef.h>
#include "stream.h"

LX_HIDDEN_BEGIN

typedef struct lx_buf {
  char *p;
  size_t len, cap;
} lx_buf;

void lx_buf_free(lx_buf *b);
/* Appends; returns 0 when out of memory (the buffer is unchanged then). */
int lx_buf_put(lx_buf *b, const char *s, size_t len);

/* Append s escaped for element content ('&', '<', '>' and CR as references,
 * so the text survives a parse unchanged) or for a single-quoted attribute
 * value (also quotes, TAB, LF, CR). Return 1, 0 when s is not valid UTF-8 or
 * holds a character XML does not allow (nothing is appended then), or -1
 * when out of memory. */
int lx_escape_text(lx_buf *b, const char *s, size_t len);
int lx_escape_attr(lx_buf *b, const char *s, size_t len);

/* The namespace prefixes declared around the element being written, so a
 * namespaced attribute's namespace is declared once, where first needed, and
 * reused below (keeps output proportional to input). uri points into the
 * caller's strings, which must outlive the serialization. */
typedef struct lx_nsscope {
  struct { const char *uri; size_t len; unsigned id; } *e;
  size_t n, cap;
  unsigned next_id;
} lx_nsscope;
void lx_nsscope_free(lx_nsscope *sc);
/* The generated prefix id ("lxnsID") bound to uri in scope, or 0. */
unsigned lx_nsscope_find(const lx_nsscope *sc, const char *uri, size_t len);
/* Binds uri to a new prefix id and returns it; 0 when out of memory. */
unsigned lx_nsscope_add(lx_nsscope *sc, const char *uri, size_t len);

/* 1 when uri is the xml or xmlns namespace, which no xmlns may name. */
int lx_ns_reserved(const char *uri, size_t len);

/* Appends one attribute ` key='value'` for a key as the parser and stanzas
 * spell it ("local", "xmlns", "xml:lang", "uri\1local"; the last with a
 * generated prefix from sc). The caller saves sc->n before an element's
 * attributes and restores it after the element's end. Returns 1, 0 for an
 * invalid key or value, -1 when out of memory. */
int lx_write_attr(lx_buf *b, const char *key, size_t klen, const char *val,
                  size_t vlen, lx_nsscope *sc);

/* Serializes node idx of a parser tree, writing xmlns only where it changes.
 * Returns 1, 0 for invalid content, -1 when out of memory. */
int lx_serialize_tree(lx_buf *b, const lx_tree *t, uint32_t idx);

LX_HIDDEN_END

#endif
