/*
 * utf8.c - strict UTF-8 decoding and encoding (RFC 3629 section 3 and 4).
 * Pure functions; see utf8.h.
 */
#include "lx.h"
#include "utf8.h"

#include <string.h>

size_t lx_utf8_decode(const unsigned char *s, size_t len, unsigned long *cp) {
  unsigned long c;
  size_t n, i;
  if (len == 0) return 0;
  c = s[0];
  if (c < 0x80) { *cp = c; return 1; }
  if (c < 0xC2) return 0;                 /* continuation byte or overlong */
  if (c < 0xE0) { n = 2; c &= 0x1F; }
  else if (c < 0xF0) { n = 3; c &= 0x0F; }
  else if (c < 0xF5) { n = 4; c &= 0x07; }
  else return 0;
  if (len < n) return 0;
  for (i = 1; i < n; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    c = (c << 6) | (s[i] & 0x3F);
  }
  if ((n == 3 && c < 0x800) || (n == 4 && (c < 0x10000 || c > 0x10FFFF)))
    return 0;                             /* overlong or beyond Unicode */
  if (c >= 0xD800 && c <= 0xDFFF) return 0; /* UTF-16 surrogates */
  *cp = c;
  return n;
}

size_t lx_utf8_encode(unsigned long cp, char *out) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
  if (cp < 0x10000) {
    out[0] = (char)(0xE0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  if (cp > 0x10FFFF) return 0;
  out[0] = (char)(0xF0 | (cp >> 18));
  out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  out[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

const char *lx_utf8_to_cps(const char *s, size_t len, uint32_t *out,
                           size_t *n) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0, k = 0;
  while (i < len) {
    unsigned long cp;
    size_t step = lx_utf8_decode(u + i, len - i, &cp);
    if (step == 0) return "invalid UTF-8";
    if (cp == 0) return "contains a NUL byte";
    if (out) out[k] = (uint32_t)cp;
    k++;
    i += step;
  }
  if (n) *n = k;
  return NULL;
}

int lx_utf8_from_cps(const uint32_t *in, size_t n, char *out, size_t cap,
                     size_t *pos) {
  size_t i, o = *pos;
  for (i = 0; i < n; i++) {
    char b[4];
    size_t len = in[i] == 0 ? 0 : lx_utf8_encode(in[i], b);
    if (len == 0 || cap - o < len) return -1;
    memcpy(out + o, b, len);
    o += len;
  }
  *pos = o;
  return 0;
}
