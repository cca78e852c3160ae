/*
 * prep.c - stringprep (RFC 3454) and IDNA2003 (RFC 3490) over strict UTF-8,
 * through GNU libidn; see prep.h. Pure: no Lua, no allocation.
 *
 * Flags, and why:
 *  - "strict". Stringprep (RFC 3454 section 7) distinguishes stored strings,
 *    which must not contain code points unassigned in Unicode 3.2, from
 *    queries, which may. strict passes STRINGPREP_NO_UNASSIGNED (IDNA: no
 *    IDNA_ALLOW_UNASSIGNED) and is meant for identities being created and
 *    stored (registering an account, a room, a roster item). Otherwise the
 *    string is a query, like Prosody's util.encodings and util.jid:
 *    stringprep is frozen at Unicode 3.2, so every character added since
 *    (emoji, newer letters) is "unassigned", and refusing them would leave
 *    lxmpp unable to address peers that use them (MUC nicknames are
 *    resourceparts). This is safe for comparisons: the unassigned check only
 *    prohibits, so whenever the strict form exists it is byte-for-byte the
 *    non-strict form, and both are deterministic.
 *  - ToASCII / ToUnicode always use IDNA_USE_STD3_ASCII_RULES: a JID
 *    domainpart must be a host name (RFC 7622 section 3.2), and without
 *    STD3 the ASCII space, '@', '/', '<', '_' and other non-LDH characters
 *    (which nameprep leaves alone) would pass as domain characters.
 */
#include "lx.h"
#include "prep.h"
#include "utf8.h"

#include <string.h>

#include <idna.h>

int lx_prep_cps(const char *in, size_t len, int strict,
                const Stringprep_profile *profile, uint32_t *work, size_t cap,
                size_t *n, const char **err) {
  *n = 0;
  *err = lx_utf8_to_cps(in, len, work, n);
  if (*err != NULL)
    return -1;
  return stringprep_4i(work, n, cap, strict ? STRINGPREP_NO_UNASSIGNED : 0,
                       profile);
}

/* The checks every lx_idn_* input passes before it is decoded (into
 * LX_IDN_MAX_IN code points at most). */
static const char *check_input(const char *in, size_t len) {
  if (len > LX_IDN_MAX_IN)
    return "too long";
  if (memchr(in, '\0', len) != NULL)
    return "contains a NUL byte";
  return NULL;
}

const char *lx_idn_prep(const char *in, size_t len, int strict,
                        const Stringprep_profile *profile, char *out,
                        size_t cap, size_t *outlen) {
  uint32_t work[LX_IDN_WORK];
  size_t n = 0;
  const char *err = check_input(in, len);
  int rc;
  *outlen = 0;
  if (err != NULL)
    return err;
  rc = lx_prep_cps(in, len, strict, profile, work, LX_IDN_WORK, &n, &err);
  if (rc < 0)
    return err;
  if (rc == STRINGPREP_TOO_SMALL_BUFFER)
    return "result too long";
  if (rc != STRINGPREP_OK)
    return stringprep_strerror((Stringprep_rc)rc);
  if (lx_utf8_from_cps(work, n, out, cap, outlen) != 0)
    return "result too long";
  return NULL;
}

/* The IDNA label separators (RFC 3490 section 3.1). */
static int is_dot(uint32_t cp) {
  return cp == 0x002E || cp == 0x3002 || cp == 0xFF0E || cp == 0xFF61;
}

/* Where the label starting at cps[start] ends: the next separator, or n. */
static size_t label_end(const uint32_t *cps, size_t start, size_t n) {
  while (start < n && !is_dot(cps[start]))
    start++;
  return start;
}

/* check_input, then the UTF-8 decoding into cps (LX_IDN_MAX_IN code points
 * at most): what lx_idn_to_ascii and lx_idn_to_unicode start with. */
static const char *decode_input(const char *in, size_t len, uint32_t *cps,
                                size_t *n) {
  const char *err = check_input(in, len);
  if (err == NULL)
    err = lx_utf8_to_cps(in, len, cps, n);
  return err;
}

static int idna_flags(int strict) {
  return IDNA_USE_STD3_ASCII_RULES | (strict ? 0 : IDNA_ALLOW_UNASSIGNED);
}

const char *lx_idn_to_ascii(const char *in, size_t len, int strict, char *out,
                            size_t cap, size_t *outlen) {
  uint32_t cps[LX_IDN_MAX_IN];
  char label[65]; /* 63 characters, NUL, and a spare NUL (see below) */
  size_t n = 0, start = 0, o = 0;
  int flags = idna_flags(strict);
  const char *err = decode_input(in, len, cps, &n);
  *outlen = 0;
  if (err != NULL)
    return err;
  for (;;) {
    size_t end = label_end(cps, start, n), llen, i;
    int rc, ascii = 1;
    if (end == start)
      return "empty label";
    for (i = start; i < end; i++)
      if (cps[i] > 0x7F)
        ascii = 0;
    /* libidn < 1.33 left an over-long ASCII label unterminated; refuse it
     * here, and keep a zeroed spare byte so strlen below stays in bounds. */
    if (ascii && end - start > 63)
      return "label too long";
    memset(label, 0, sizeof label);
    rc = idna_to_ascii_4i(cps + start, end - start, label, flags);
    if (rc != IDNA_SUCCESS)
      return idna_strerror((Idna_rc)rc);
    llen = strlen(label);
    if (llen < 1 || llen > 63)
      return "label too long";
    if (cap - o < llen + 1)
      return "result too long";
    if (o > 0)
      out[o++] = '.';
    memcpy(out + o, label, llen);
    o += llen;
    if (end == n)
      break;
    start = end + 1;
  }
  *outlen = o;
  return NULL;
}

const char *lx_idn_to_unicode(const char *in, size_t len, int strict,
                              char *out, size_t cap, size_t *outlen) {
  uint32_t cps[LX_IDN_MAX_IN];
  uint32_t label[LX_IDN_MAX_IN + 1];
  size_t n = 0, start = 0, o = 0;
  int flags = idna_flags(strict);
  const char *err = decode_input(in, len, cps, &n);
  *outlen = 0;
  if (err != NULL)
    return err;
  for (;;) {
    size_t end = label_end(cps, start, n);
    size_t llen = sizeof label / sizeof label[0];
    int rc;
    if (end == start)
      return "empty label";
    /* Output never exceeds the room given: the punycode decoder is bounded
     * by llen, and on failure libidn copies back the (shorter) input. */
    rc = idna_to_unicode_44i(cps + start, end - start, label, &llen, flags);
    if (rc != IDNA_SUCCESS && rc != IDNA_NO_ACE_PREFIX)
      return idna_strerror((Idna_rc)rc);
    if (llen > LX_IDN_MAX_IN)
      return "result too long";
    if (o > 0) {
      if (cap - o < 1)
        return "result too long";
      out[o++] = '.';
    }
    if (lx_utf8_from_cps(label, llen, out, cap, &o) != 0)
      return "result too long";
    if (end == n)
      break;
    start = end + 1;
  }
  *outlen = o;
  return NULL;
}
