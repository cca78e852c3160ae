/*
 * xmlchar.c - XML 1.0 (Fifth Edition) character classes over UTF-8 text
 * (decoded by utf8.c). Pure functions; see xmlchar.h.
 */
#include "lx.h"
#include "xmlchar.h"
#include "utf8.h"

#include <expat.h>
#include <string.h>

int lx_xml_char(unsigned long cp) {
  if (cp < 0x20) return cp == 0x9 || cp == 0xA || cp == 0xD;
  if (cp <= 0xD7FF) return 1;
  if (cp < 0xE000) return 0;
  if (cp <= 0xFFFD) return 1;
  return cp >= 0x10000 && cp <= 0x10FFFF;
}

int lx_xml_text_valid(const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  while (i < len) {
    unsigned long cp;
    size_t n;
    if (s[i] >= 0x20 && s[i] < 0x80) { i++; continue; } /* ASCII fast path */
    n = lx_utf8_decode(s + i, len - i, &cp);
    if (n == 0 || !lx_xml_char(cp)) return 0;
    i += n;
  }
  return 1;
}

/* NameStartChar without ':' (XML 1.0 Fifth Edition, production [4]). */
static int name_start(unsigned long c) {
  if (c < 0x80)
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  return (c >= 0xC0 && c <= 0xD6) || (c >= 0xD8 && c <= 0xF6) ||
         (c >= 0xF8 && c <= 0x2FF) || (c >= 0x370 && c <= 0x37D) ||
         (c >= 0x37F && c <= 0x1FFF) || (c >= 0x200C && c <= 0x200D) ||
         (c >= 0x2070 && c <= 0x218F) || (c >= 0x2C00 && c <= 0x2FEF) ||
         (c >= 0x3001 && c <= 0xD7FF) || (c >= 0xF900 && c <= 0xFDCF) ||
         (c >= 0xFDF0 && c <= 0xFFFD) || (c >= 0x10000 && c <= 0xEFFFF);
}

/* NameChar without ':' (production [4a]). */
static int name_char(unsigned long c) {
  if (name_start(c)) return 1;
  if (c < 0x80) return c == '-' || c == '.' || (c >= '0' && c <= '9');
  return c == 0xB7 || (c >= 0x300 && c <= 0x36F) ||
         (c >= 0x203F && c <= 0x2040);
}

/* expat follows the name tables of XML 1.0 4th edition, which allow fewer
 * non-ASCII characters than the 5th; a name lxmpp writes must be one expat
 * (and so lxmpp, and Prosody) reads back. Rare (non-ASCII names), so asking
 * expat itself costs nothing on the common path. */
static int expat_reads_name(const char *s, size_t len) {
  XML_Parser p = XML_ParserCreate("UTF-8");
  int ok;
  if (!p) return 0;
  ok = XML_Parse(p, "<", 1, 0) == XML_STATUS_OK &&
       XML_Parse(p, s, (int)len, 0) == XML_STATUS_OK &&
       XML_Parse(p, "/>", 2, 1) == XML_STATUS_OK;
  XML_ParserFree(p);
  return ok;
}

int lx_xml_ncname_valid(const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  int ascii = 1;
  if (len == 0 || len > 65536) return 0;
  while (i < len) {
    unsigned long cp;
    size_t n = lx_utf8_decode(s + i, len - i, &cp);
    if (n == 0) return 0;
    if (i == 0 ? !name_start(cp) : !name_char(cp)) return 0;
    if (cp >= 0x80) ascii = 0;
    i += n;
  }
  return ascii || expat_reads_name(str, len);
}

int lx_xml_attr_name_valid(const char *s, size_t len) {
  const char *sep = memchr(s, '\1', len);
  if (sep) {
    size_t urilen = (size_t)(sep - s);
    return urilen > 0 && lx_xml_text_valid(s, urilen) &&
           lx_xml_ncname_valid(sep + 1, len - urilen - 1);
  }
  if (len == 5 && memcmp(s, "xmlns", 5) == 0) return 1;
  /* Prefix declarations (xmlns:p) are refused: elements carry their
   * namespace in xmlns and attributes as "uri\1local", so a declaration
   * would be lost on the next parse and break parse(serialize(x)) == x. */
  if (len >= 6 && memcmp(s, "xmlns:", 6) == 0) return 0;
  if (len > 4 && memcmp(s, "xml:", 4) == 0)
    return lx_xml_ncname_valid(s + 4, len - 4);
  return lx_xml_ncname_valid(s, len);
}
