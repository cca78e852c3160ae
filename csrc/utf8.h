/*
 * utf8.h - the one UTF-8 codec of the C core (RFC 3629): strict decoding
 * (no overlong forms, no UTF-16 surrogates, nothing above U+10FFFF, no
 * truncated sequences) and encoding of Unicode scalar values. Pure: no Lua,
 * no allocation. Used by the XML character checks (xmlchar.c), the
 * stringprep engine (prep.c) and the SASL engine (sasl.c, sasl_client.c).
 */
#ifndef LXMPP_UTF8_H
#define LXMPP_UTF8_H

#include "lx.h"

#include <stddef.h>
#include <stdint.h>

LX_HIDDEN_BEGIN

/* Decodes one UTF-8 sequence at s[0..len). Returns its length (1..4) and
 * stores the code point, or 0 for an invalid, overlong, surrogate or
 * truncated sequence (and for len == 0). U+0000 is decoded (length 1). */
size_t lx_utf8_decode(const unsigned char *s, size_t len, unsigned long *cp);

/* Encodes the scalar value cp into out (room for 4 bytes). Returns its
 * length (1..4), or 0 for a surrogate or a value above U+10FFFF. */
size_t lx_utf8_encode(unsigned long cp, char *out);

/* Decodes the whole of s[0..len), which must be strict UTF-8 without U+0000,
 * into code points. out: room for len code points, or NULL to only
 * validate; *n (when n is not NULL) gets their number. Returns NULL, or the
 * static message "invalid UTF-8" or "contains a NUL byte" for the first
 * fault. */
const char *lx_utf8_to_cps(const char *s, size_t len, uint32_t *out,
                           size_t *n);

/* Appends the UTF-8 form of the code points in[0..n) to out[*pos..cap) and
 * advances *pos. Returns 0, or -1 (*pos then unchanged, out partly written)
 * when it does not fit or a code point is U+0000 or not a scalar value. */
int lx_utf8_from_cps(const uint32_t *in, size_t n, char *out, size_t cap,
                     size_t *pos);

LX_HIDDEN_END

#endif
