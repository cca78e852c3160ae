/*
 * xmlchar.h - pure checks of XML 1.0 character classes in UTF-8 text
 * (utf8.h decodes it).
 * No Lua, no allocation: used by the serializer, the stanza builders and the
 * fuzz targets alike, so "what is valid XML text" is decided in one place.
 */
#ifndef LXMPP_XMLCHAR_H
#define LXMPP_XMLCHAR_H

#include "lx.h"

#include <stddef.h>

LX_HIDDEN_BEGIN

/* XML 1.0 Char production: #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD]
 * | [#x10000-#x10FFFF]. */
int lx_xml_char(unsigned long cp);

/* 1 when s[0..len) is valid UTF-8 made only of XML Chars. */
int lx_xml_text_valid(const char *s, size_t len);

/* 1 when s[0..len) is an XML NCName (a Name without ':'). */
int lx_xml_ncname_valid(const char *s, size_t len);

/* 1 when s is an attribute key lxmpp can serialize: NCName, "xmlns",
 * "xml:NCName", or "URI\1NCName" (a namespaced attribute, Prosody's
 * convention) with URI valid non-empty text. Never "xmlns:p". */
int lx_xml_attr_name_valid(const char *s, size_t len);

LX_HIDDEN_END

#endif
