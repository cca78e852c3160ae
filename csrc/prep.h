/*
 * prep.h - the stringprep engine of the C core: stringprep (RFC 3454:
 * mapping, normalization, prohibition, bidi) with a libidn profile, and
 * IDNA2003 ToASCII / ToUnicode (RFC 3490) of whole domains, over strict
 * UTF-8 (utf8.h). One engine under SASLprep (saslprep.c) and the JID
 * profiles (idn.c, the Lua binding). Pure: no Lua.
 *
 * Ownership: nothing here allocates. libidn is called only through its
 * allocation-free interfaces (stringprep_4i, idna_to_ascii_4i,
 * idna_to_unicode_44i), which free their own temporaries before returning;
 * work buffers are the caller's (lx_prep_cps) or on the stack (lx_idn_*).
 */
#ifndef LXMPP_PREP_H
#define LXMPP_PREP_H

#include "lx.h"

#include <stddef.h>
#include <stdint.h>

#include <stringprep.h>

/* Longest input of the lx_idn_* functions, in bytes: a JID part (RFC 7622
 * section 3.1). */
#define LX_IDN_MAX_IN 1023
/* Code points of lx_idn_prep's work buffer. Mapping and NFKC may expand the
 * input; a result that does not fit is refused, not truncated. */
#define LX_IDN_WORK 4096
/* Room the lx_idn_* functions need for their result, in bytes. Anything
 * longer is not a usable JID part or domain anyway; callers check the real
 * limits. */
#define LX_IDN_MAX_OUT (4 * LX_IDN_MAX_IN)

LX_HIDDEN_BEGIN

/* Decodes in[0..len) (strict UTF-8 without NUL, lx_utf8_to_cps) into work,
 * which has room for cap >= len code points, and runs profile over it in
 * place. strict: refuse code points unassigned in Unicode 3.2, for stored
 * strings (RFC 3454 section 7); otherwise the input is a query. Returns
 * STRINGPREP_OK with work[0..*n) the prepared code points; -1 with *err the
 * UTF-8 fault ("invalid UTF-8", "contains a NUL byte"), libidn not run; or
 * libidn's Stringprep_rc (STRINGPREP_TOO_SMALL_BUFFER: cap was too small),
 * which each caller words its own way. */
int lx_prep_cps(const char *in, size_t len, int strict,
                const Stringprep_profile *profile, uint32_t *work, size_t cap,
                size_t *n, const char **err);

/* The lx_idn_* functions take UTF-8 in[0..len), at most LX_IDN_MAX_IN bytes
 * without NUL, write the UTF-8 result to out (cap bytes, LX_IDN_MAX_OUT is
 * enough for any result they accept) and set *outlen; they return NULL, or
 * a static message saying why the input was refused. */

/* profile (nodeprep, resourceprep, nameprep) of a JID part. */
const char *lx_idn_prep(const char *in, size_t len, int strict,
                        const Stringprep_profile *profile, char *out,
                        size_t cap, size_t *outlen);

/* IDNA2003 ToASCII of every label, with STD3 rules (a JID domainpart is a
 * host name, RFC 7622 section 3.2). Labels are separated by any RFC 3490
 * dot and joined with "."; an empty label (including the root label of
 * "example.com.") is refused, as is a label that is not 1..63 ASCII
 * characters once converted. strict: no IDNA_ALLOW_UNASSIGNED. */
const char *lx_idn_to_ascii(const char *in, size_t len, int strict, char *out,
                            size_t cap, size_t *outlen);

/* IDNA2003 ToUnicode of every label (STD3 rules), joined with ".". Labels
 * without the ACE prefix come back unchanged. Unlike RFC 3490 ToUnicode,
 * which returns a label it cannot convert as it was, this fails for such a
 * label, so that a bogus A-label ("xn--" plus garbage) cannot pass as a
 * domain. Not a validator otherwise: use lx_idn_to_ascii for that. */
const char *lx_idn_to_unicode(const char *in, size_t len, int strict,
                              char *out, size_t cap, size_t *outlen);

LX_HIDDEN_END

#endif
