/*
 * saslprep.c - the text side of the SASL engine (see sasl.h): strict base64
 * (canonical: unused bits zero), and SASLprep (RFC 4013) and the other
 * stringprep profiles over the stringprep engine (prep.c) and the UTF-8
 * codec (utf8.c). The decisions behind them are in the header of sasl.c.
 *
 * Ownership: prepared names and passwords are fresh strings the caller
 * frees with lx_sasl_free_secret(); every work buffer that held one is
 * wiped before it is freed.
 */
#include "lx.h"
#include "sasl_int.h"

#include <stdint.h>
#include <stdlib.h>

#include <openssl/crypto.h>

/* ---- base64 -------------------------------------------------------------- */

static const char b64_chars[] =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t lx_b64_encoded_len(size_t n) { return (n + 2) / 3 * 4; }

void lx_b64_encode(const unsigned char *in, size_t n, char *out) {
  size_t i, o = 0;
  for (i = 0; i + 2 < n; i += 3) {
    unsigned long v = (unsigned long)in[i] << 16 | (unsigned long)in[i + 1] << 8 | in[i + 2];
    out[o++] = b64_chars[v >> 18];
    out[o++] = b64_chars[(v >> 12) & 63];
    out[o++] = b64_chars[(v >> 6) & 63];
    out[o++] = b64_chars[v & 63];
  }
  if (n - i == 1) {
    out[o++] = b64_chars[in[i] >> 2];
    out[o++] = b64_chars[(in[i] & 3) << 4];
    out[o++] = '=';
    out[o++] = '=';
  } else if (n - i == 2) {
    out[o++] = b64_chars[in[i] >> 2];
    out[o++] = b64_chars[(in[i] & 3) << 4 | in[i + 1] >> 4];
    out[o++] = b64_chars[(in[i + 1] & 15) << 2];
    out[o++] = '=';
  }
}

static int b64_val(char ch) {
  unsigned char c = (unsigned char)ch;
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

int lx_b64_decode(const char *in, size_t len, unsigned char *out,
                  size_t *outlen) {
  size_t i, o = 0;
  *outlen = 0;
  if (len % 4 != 0) return -1;
  for (i = 0; i < len; i += 4) {
    int last = i + 4 == len;
    int a = b64_val(in[i]), b = b64_val(in[i + 1]), c, d;
    if (a < 0 || b < 0) return -1;
    if (last && in[i + 2] == '=') {
      if (in[i + 3] != '=' || (b & 15) != 0) return -1;
      out[o++] = (unsigned char)(a << 2 | b >> 4);
      break;
    }
    c = b64_val(in[i + 2]);
    if (c < 0) return -1;
    if (last && in[i + 3] == '=') {
      if ((c & 3) != 0) return -1;
      out[o++] = (unsigned char)(a << 2 | b >> 4);
      out[o++] = (unsigned char)((b & 15) << 4 | c >> 2);
      break;
    }
    d = b64_val(in[i + 3]);
    if (d < 0) return -1;
    out[o++] = (unsigned char)(a << 2 | b >> 4);
    out[o++] = (unsigned char)((b & 15) << 4 | c >> 2);
    out[o++] = (unsigned char)((c & 3) << 6 | d);
  }
  *outlen = o;
  return 0;
}

/* ---- SASLprep (RFC 4013, the stringprep engine of prep.c) ----------------- */

static const char *prep_error(int rc) {
  switch (rc) {
  case STRINGPREP_CONTAINS_UNASSIGNED: return "contains an unassigned code point";
  case STRINGPREP_CONTAINS_PROHIBITED: return "contains a prohibited character";
  case STRINGPREP_BIDI_BOTH_L_AND_RAL:
  case STRINGPREP_BIDI_LEADTRAIL_NOT_RAL:
  case STRINGPREP_BIDI_CONTAINS_PROHIBITED:
    return "violates the bidirectional text rules";
  case STRINGPREP_TOO_SMALL_BUFFER: return "result too long";
  case STRINGPREP_MALLOC_ERROR: return OOM;
  default: return stringprep_strerror((Stringprep_rc)rc);
  }
}

/* Runs a stringprep profile over UTF-8 text into a fresh, wiped-on-free
 * string. The work buffer holds the text too, so it is wiped. */
static const char *prep(const char *in, size_t len, int strict,
                        const Stringprep_profile *profile, char **out,
                        size_t *outlen) {
  uint32_t *work;
  size_t n = 0, cap = len + 16;
  const char *err = NULL;
  *out = NULL;
  *outlen = 0;
  if (len > LX_SASL_MAX_STR) return "too long";
  for (;;) {
    int rc;
    work = malloc(cap * sizeof *work);
    if (!work) return OOM;
    rc = lx_prep_cps(in, len, strict, profile, work, cap, &n, &err);
    if (rc < 0) break;
    if (rc == STRINGPREP_TOO_SMALL_BUFFER && cap < 18 * len + 16) {
      /* NFKC expands one code point into at most 18 */
      OPENSSL_cleanse(work, cap * sizeof *work);
      free(work);
      cap = 18 * len + 16;
      continue;
    }
    if (rc != STRINGPREP_OK) {
      err = prep_error(rc);
      break;
    }
    *out = malloc(4 * n + 1);
    if (*out) {
      if (lx_utf8_from_cps(work, n, *out, 4 * n, outlen) != 0) {
        /* not reached: libidn maps scalar values to scalar values */
        lx_sasl_free_secret(*out, 4 * n);
        *out = NULL;
        *outlen = 0;
        err = "invalid UTF-8";
        break;
      }
      (*out)[*outlen] = '\0';
      if (*outlen > LX_SASL_MAX_STR) { /* so every message stays bounded */
        lx_sasl_free_secret(*out, *outlen);
        *out = NULL;
        *outlen = 0;
        err = "result too long";
      }
      break;
    }
    err = OOM;
    break;
  }
  OPENSSL_cleanse(work, cap * sizeof *work);
  free(work);
  return err;
}

const char *lx_saslprep(const char *in, size_t len, int strict, char **out,
                        size_t *outlen) {
  return prep(in, len, strict, stringprep_saslprep, out, outlen);
}

/* Prepares s with profile into b; an empty result is refused. */
const char *lx_sasl_prep_into(sbuf *b, lx_sasl_str s,
                              const Stringprep_profile *profile) {
  char *p;
  size_t n;
  const char *err = prep(s.p ? s.p : "", s.p ? s.len : 0, 0, profile, &p, &n);
  if (err) return err;
  if (n == 0) err = "empty after SASLprep";
  else if (!lx_sb_put(b, p, n)) err = OOM;
  lx_sasl_free_secret(p, n);
  return err;
}
