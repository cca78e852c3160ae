/*
 * sasl.c - the SASL engine (see sasl.h): mechanism choice, SCRAM client and
 * server (RFC 5802, RFC 7677), PLAIN (RFC 4616), EXTERNAL (XEP-0178),
 * ANONYMOUS (RFC 4505), strict base64 and SASLprep (RFC 4013, via libidn).
 *
 * Ownership: every buffer here is an sbuf owned by its client or server
 * struct; sbufs never realloc (a grown buffer is copied and the old one
 * wiped) and are wiped when freed, so no secret is left in freed memory by
 * this file. Nothing is logged; error messages never contain a secret.
 *
 * Decisions worth knowing:
 *  - Parsing is strict and positional: server-first is [m=] r, s, i and then
 *    extensions; m= anywhere fails (RFC 5802 section 5.1: reserved for
 *    mandatory extensions); a known attribute twice fails; other extensions
 *    must be well-formed ("x=value") and are ignored, as the RFC grammar
 *    allows them. The same holds for the server-final after v=/e= and for
 *    the client messages the server parses.
 *  - Base64 must be canonical (unused bits zero), so a value has exactly one
 *    encoding; every real encoder produces that form.
 *  - SASLprep treats names and passwords as queries (unassigned code points
 *    allowed) on both sides, like Prosody and most clients: strict mode would
 *    refuse every character added to Unicode after 3.2.
 *  - The client gives its keys out only after it verified the server
 *    signature, so keys derived from a forged salt are never cached.
 *  - An unknown user gets a salt derived from the server secret and the name
 *    (HMAC-SHA-512), the configured iteration count and keys nothing can
 *    match; every step then costs what it costs for a real user, and the
 *    final check fails with the message a wrong password gets.
 */
#include "sasl.h"

#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stringprep.h>

#if defined(__GNUC__)
#define LX_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define LX_PRINTF(f, a)
#endif

#define NONCE_BYTES 24      /* random bytes of a nonce we make */
#define MAX_NONCE 256       /* longest nonce (either part) accepted */
#define FAKE_SALT_MAX 64    /* one HMAC-SHA-512 output */

static const char OOM[] = "out of memory";

/* ---- mechanisms ---------------------------------------------------------- */

static const struct {
  const char *name;
  int hash, plus;
} mechs[LX_SASL_NMECH] = {
  {"", -1, 0},
  {"ANONYMOUS", -1, 0},
  {"PLAIN", -1, 0},
  {"SCRAM-SHA-1", LX_SASL_SHA1, 0},
  {"SCRAM-SHA-256", LX_SASL_SHA256, 0},
  {"SCRAM-SHA-512", LX_SASL_SHA512, 0},
  {"SCRAM-SHA-1-PLUS", LX_SASL_SHA1, 1},
  {"SCRAM-SHA-256-PLUS", LX_SASL_SHA256, 1},
  {"SCRAM-SHA-512-PLUS", LX_SASL_SHA512, 1},
  {"EXTERNAL", -1, 0},
};

const char *lx_sasl_mech_name(int mech) {
  return mech > LX_SASL_NONE && mech < LX_SASL_NMECH ? mechs[mech].name : NULL;
}

int lx_sasl_mech_by_name(const char *name, size_t len) {
  int m;
  for (m = LX_SASL_NONE + 1; m < LX_SASL_NMECH; m++)
    if (strlen(mechs[m].name) == len && memcmp(mechs[m].name, name, len) == 0)
      return m;
  return LX_SASL_NONE;
}

int lx_sasl_mech_hash(int mech) {
  return mech > LX_SASL_NONE && mech < LX_SASL_NMECH ? mechs[mech].hash : -1;
}

int lx_sasl_mech_plus(int mech) {
  return mech > LX_SASL_NONE && mech < LX_SASL_NMECH ? mechs[mech].plus : 0;
}

static const char *const hash_names[] = {"SHA-1", "SHA-256", "SHA-512"};

const char *lx_sasl_hash_name(int hash) {
  return hash >= 0 && hash <= LX_SASL_SHA512 ? hash_names[hash] : NULL;
}

int lx_sasl_hash_by_name(const char *name, size_t len) {
  int h;
  for (h = 0; h <= LX_SASL_SHA512; h++)
    if (strlen(hash_names[h]) == len && memcmp(hash_names[h], name, len) == 0)
      return h;
  return -1;
}

size_t lx_sasl_hash_len(int hash) {
  switch (hash) {
  case LX_SASL_SHA1: return 20;
  case LX_SASL_SHA256: return 32;
  case LX_SASL_SHA512: return 64;
  default: return 0;
  }
}

static const EVP_MD *md_of(int hash) {
  switch (hash) {
  case LX_SASL_SHA1: return EVP_sha1();
  case LX_SASL_SHA256: return EVP_sha256();
  default: return EVP_sha512();
  }
}

/* ---- secure buffers ------------------------------------------------------ */

typedef struct sbuf {
  char *p;
  size_t len, cap; /* p[len] is always NUL once p exists */
} sbuf;

void lx_sasl_wipe(void *p, size_t n) {
  if (p && n) OPENSSL_cleanse(p, n);
}

static int sb_reserve(sbuf *b, size_t extra) {
  size_t need, ncap;
  char *np;
  if (extra > (size_t)-1 / 4 - b->len) return 0;
  need = b->len + extra + 1;
  if (need <= b->cap) return 1;
  for (ncap = b->cap ? b->cap : 64; ncap < need; ncap *= 2) {}
  np = malloc(ncap);
  if (!np) return 0;
  if (b->p) {
    memcpy(np, b->p, b->len);
    OPENSSL_cleanse(b->p, b->cap);
    free(b->p);
  }
  b->p = np;
  b->cap = ncap;
  return 1;
}

static int sb_put(sbuf *b, const void *d, size_t n) {
  if (!sb_reserve(b, n)) return 0;
  if (n) memcpy(b->p + b->len, d, n);
  b->len += n;
  b->p[b->len] = '\0';
  return 1;
}

static int sb_puts(sbuf *b, const char *s) { return sb_put(b, s, strlen(s)); }

static int sb_put_b64(sbuf *b, const unsigned char *d, size_t n) {
  size_t e = lx_b64_encoded_len(n);
  if (!sb_reserve(b, e)) return 0;
  lx_b64_encode(d, n, b->p + b->len);
  b->len += e;
  b->p[b->len] = '\0';
  return 1;
}

static void sb_clear(sbuf *b) {
  if (b->p) {
    OPENSSL_cleanse(b->p, b->cap);
    b->p[0] = '\0';
  }
  b->len = 0;
}

static void sb_free(sbuf *b) {
  if (b->p) {
    OPENSSL_cleanse(b->p, b->cap);
    free(b->p);
  }
  b->p = NULL;
  b->len = b->cap = 0;
}

/* An empty but allocated buffer, so that b->p is a valid "" to hand out. */
static int sb_empty(sbuf *b) {
  sb_clear(b);
  return sb_reserve(b, 0);
}

void lx_sasl_free_secret(char *p, size_t len) {
  if (!p) return;
  OPENSSL_cleanse(p, len + 1);
  free(p);
}

int lx_sasl_random(unsigned char *out, size_t n) {
  return n <= INT_MAX && RAND_bytes(out, (int)n) == 1 ? 0 : -1;
}

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

/* ---- UTF-8 and SASLprep -------------------------------------------------- */

/* Decodes strict UTF-8 (no overlongs, surrogates, > U+10FFFF, truncation or
 * NUL). out: room for len code points, or NULL to only validate. */
static const char *utf8_decode(const char *s, size_t len, uint32_t *out,
                               size_t *n) {
  size_t i = 0, k = 0;
  while (i < len) {
    unsigned c = (unsigned char)s[i];
    uint32_t cp, min;
    size_t need, j;
    if (c < 0x80) { cp = c; need = 0; min = 0; }
    else if (c >= 0xC2 && c <= 0xDF) { cp = c & 0x1F; need = 1; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { cp = c & 0x0F; need = 2; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { cp = c & 0x07; need = 3; min = 0x10000; }
    else return "invalid UTF-8";
    if (need > len - i - 1) return "invalid UTF-8";
    for (j = 1; j <= need; j++) {
      unsigned cc = (unsigned char)s[i + j];
      if ((cc & 0xC0) != 0x80) return "invalid UTF-8";
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return "invalid UTF-8";
    if (cp == 0) return "contains a NUL byte";
    if (out) out[k] = cp;
    k++;
    i += need + 1;
  }
  if (n) *n = k;
  return NULL;
}

static size_t utf8_encode(const uint32_t *in, size_t n, char *out) {
  size_t i, o = 0;
  for (i = 0; i < n; i++) {
    uint32_t cp = in[i];
    if (cp < 0x80) {
      out[o++] = (char)cp;
    } else if (cp < 0x800) {
      out[o++] = (char)(0xC0 | (cp >> 6));
      out[o++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out[o++] = (char)(0xE0 | (cp >> 12));
      out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
      out[o++] = (char)(0x80 | (cp & 0x3F));
    } else {
      out[o++] = (char)(0xF0 | (cp >> 18));
      out[o++] = (char)(0x80 | ((cp >> 12) & 0x3F));
      out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
      out[o++] = (char)(0x80 | (cp & 0x3F));
    }
  }
  return o;
}

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
    err = utf8_decode(in, len, work, &n);
    if (err) break;
    rc = stringprep_4i(work, &n, cap, strict ? STRINGPREP_NO_UNASSIGNED : 0,
                       profile);
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
      *outlen = utf8_encode(work, n, *out);
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
static const char *prep_into(sbuf *b, lx_sasl_str s,
                             const Stringprep_profile *profile) {
  char *p;
  size_t n;
  const char *err = prep(s.p ? s.p : "", s.p ? s.len : 0, 0, profile, &p, &n);
  if (err) return err;
  if (n == 0) err = "empty after SASLprep";
  else if (!sb_put(b, p, n)) err = OOM;
  lx_sasl_free_secret(p, n);
  return err;
}

/* ---- SCRAM primitives ---------------------------------------------------- */

static int hmac(int hash, const unsigned char *key, size_t klen,
                const void *d, size_t n, unsigned char *out) {
  unsigned int olen = 0;
  return HMAC(md_of(hash), key, (int)klen, d, n, out, &olen) != NULL &&
         olen == lx_sasl_hash_len(hash);
}

static int digest(int hash, const unsigned char *d, size_t n,
                  unsigned char *out) {
  unsigned int olen = 0;
  return EVP_Digest(d, n, out, &olen, md_of(hash), NULL) == 1 &&
         olen == lx_sasl_hash_len(hash);
}

/* SaltedPassword = Hi(password, salt, i); ClientKey, ServerKey from it. */
static int derive_keys(int hash, const char *pass, size_t plen,
                       const unsigned char *salt, size_t slen,
                       unsigned long iter, unsigned char *salted,
                       unsigned char *ckey, unsigned char *skey) {
  size_t hl = lx_sasl_hash_len(hash);
  if (iter > INT_MAX || plen > INT_MAX || slen > INT_MAX) return 0;
  if (PKCS5_PBKDF2_HMAC(pass, (int)plen, salt, (int)slen, (int)iter,
                        md_of(hash), (int)hl, salted) != 1)
    return 0;
  return hmac(hash, salted, hl, "Client Key", 10, ckey) &&
         hmac(hash, salted, hl, "Server Key", 10, skey);
}

int lx_scram_keys_complete(lx_scram_keys *k) {
  size_t hl = lx_sasl_hash_len(k->hash);
  return hl && k->have_salted &&
         hmac(k->hash, k->salted_password, hl, "Client Key", 10, k->client_key) &&
         hmac(k->hash, k->salted_password, hl, "Server Key", 10, k->server_key);
}

/* Printable ASCII except ',' (RFC 5802 "printable", the nonce alphabet). */
static int printable(const char *s, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    if (s[i] < 0x21 || s[i] > 0x7E || s[i] == ',') return 0;
  return 1;
}

/* channel binding type names: 1*(ALPHA / DIGIT / "." / "-") */
static int cb_name_ok(const char *s, size_t n) {
  size_t i;
  if (n == 0 || n > 64) return 0;
  for (i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '.' || c == '-'))
      return 0;
  }
  return 1;
}

/* One attribute "x=value" of a SCRAM message from *pos; value up to the
 * next ',' (values may be empty here; callers check). Returns 1 and
 * advances past the ',', 0 at the end, -1 when malformed. */
static int next_attr(const char *m, size_t len, size_t *pos, char *name,
                     const char **val, size_t *vlen) {
  size_t p = *pos, e;
  if (p > len) return 0;
  if (p == len) return -1; /* empty, or a trailing ',' */
  if (len - p < 2 || m[p + 1] != '=') return -1;
  if (!((m[p] >= 'a' && m[p] <= 'z') || (m[p] >= 'A' && m[p] <= 'Z')))
    return -1;
  *name = m[p];
  for (e = p + 2; e < len && m[e] != ','; e++) {}
  *val = m + p + 2;
  *vlen = e - p - 2;
  *pos = e + 1; /* past the ',', or len + 1 at the end */
  return 1;
}

/* SCRAM messages are UTF-8 without NUL, of bounded length. */
static const char *msg_check(const char *m, size_t len) {
  if (len == 0) return "empty message";
  if (len > LX_SASL_MAX_MSG) return "message too long";
  if (utf8_decode(m, len, NULL, NULL)) return "message is not UTF-8 text";
  return NULL;
}

/* Unescapes a saslname (=2C -> ',', =3D -> '='; any other '=' is invalid). */
static int unescape_name(const char *s, size_t n, sbuf *out) {
  size_t i;
  for (i = 0; i < n; i++) {
    char c = s[i];
    if (c == '=') {
      if (n - i < 3) return 0;
      if (s[i + 1] == '2' && s[i + 2] == 'C') c = ',';
      else if (s[i + 1] == '3' && s[i + 2] == 'D') c = '=';
      else return 0;
      i += 2;
    }
    if (!sb_put(out, &c, 1)) return -1;
  }
  return 1;
}

static int escape_name(const char *s, size_t n, sbuf *out) {
  size_t i;
  for (i = 0; i < n; i++) {
    int ok = s[i] == ',' ? sb_puts(out, "=2C")
           : s[i] == '=' ? sb_puts(out, "=3D")
           : sb_put(out, s + i, 1);
    if (!ok) return 0;
  }
  return 1;
}

/* A fresh nonce: 24 random bytes in base64, or the one given (tests). */
static const char *make_nonce(sbuf *out, lx_sasl_str given) {
  unsigned char r[NONCE_BYTES];
  if (given.p && given.len) {
    if (given.len > MAX_NONCE || !printable(given.p, given.len))
      return "the nonce must be printable ASCII without ','";
    return sb_put(out, given.p, given.len) ? NULL : OOM;
  }
  if (lx_sasl_random(r, sizeof r) != 0) return "the random generator failed";
  return sb_put_b64(out, r, sizeof r) ? NULL : OOM;
}

/* Appends printable ASCII of s (at most max bytes) for an error message. */
static void safe_copy(char *dst, size_t cap, const char *s, size_t n,
                      size_t max) {
  size_t i, o = strlen(dst);
  for (i = 0; i < n && i < max && o + 1 < cap; i++)
    dst[o++] = s[i] >= 0x20 && s[i] < 0x7F ? s[i] : '?';
  if (n > max && o + 3 < cap) {
    memcpy(dst + o, "...", 3);
    o += 3;
  }
  dst[o] = '\0';
}

/* ---- mechanism choice ---------------------------------------------------- */

static int str_eq(lx_sasl_str a, lx_sasl_str b) {
  return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/* The channel binding type to use: the client's first one the server
 * accepts (XEP-0440), or the client's first one when the server says
 * nothing. -1: none. */
static int pick_cb(const lx_sasl_caps *caps) {
  size_t i, j;
  if (!caps->tls || caps->ncb_types == 0) return -1;
  if (!caps->server_cb_known) return 0;
  for (i = 0; i < caps->ncb_types; i++)
    for (j = 0; j < caps->nserver_cb_types; j++)
      if (str_eq(caps->cb_types[i], caps->server_cb_types[j])) return (int)i;
  return -1;
}

static int can_scram(const lx_sasl_caps *caps, int hash) {
  return caps->password || caps->keys_hash == hash;
}

/* Why an offered mechanism cannot be used, for the reason message. */
static const char *why_not(const lx_sasl_caps *caps, int m, int cb) {
  switch (m) {
  case LX_SASL_NONE: return "not supported";
  case LX_SASL_ANONYMOUS: return "not requested";
  case LX_SASL_EXTERNAL:
    return !caps->client_cert ? "no client certificate" : "needs TLS";
  case LX_SASL_PLAIN:
    return !caps->tls ? "refused without TLS" : "no password";
  default:
    if (caps->anonymous) return "ANONYMOUS was requested";
    if (!can_scram(caps, mechs[m].hash))
      return caps->keys_hash >= 0 ? "cached keys are for another hash"
                                  : "no password";
    if (mechs[m].plus && cb < 0)
      return !caps->tls ? "channel binding needs TLS"
             : caps->ncb_types == 0 ? "no channel binding data"
                                    : "no common channel binding type";
    return "usable";
  }
}

int lx_sasl_choose(const lx_sasl_str *offered, size_t noffered,
                   const lx_sasl_caps *caps, lx_sasl_choice *out) {
  static const int order[] = {
    LX_SASL_SCRAM_SHA_512_PLUS, LX_SASL_SCRAM_SHA_256_PLUS,
    LX_SASL_SCRAM_SHA_1_PLUS, LX_SASL_SCRAM_SHA_512, LX_SASL_SCRAM_SHA_256,
    LX_SASL_SCRAM_SHA_1
  };
  int have[LX_SASL_NMECH];
  int cb = pick_cb(caps);
  size_t i;
  memset(have, 0, sizeof have);
  for (i = 0; i < noffered; i++)
    have[lx_sasl_mech_by_name(offered[i].p, offered[i].len)] = 1;
  out->mech = LX_SASL_NONE;
  out->cb_index = -1;
  out->offers_plus = have[LX_SASL_SCRAM_SHA_1_PLUS] ||
                     have[LX_SASL_SCRAM_SHA_256_PLUS] ||
                     have[LX_SASL_SCRAM_SHA_512_PLUS];
  out->reason[0] = '\0';
  if (caps->anonymous) {
    if (have[LX_SASL_ANONYMOUS]) out->mech = LX_SASL_ANONYMOUS;
    else strcpy(out->reason, "ANONYMOUS was requested but the server does "
                             "not offer it");
    return out->mech;
  }
  if (caps->client_cert && caps->tls && have[LX_SASL_EXTERNAL])
    return out->mech = LX_SASL_EXTERNAL;
  for (i = 0; i < sizeof order / sizeof order[0]; i++) {
    int m = order[i];
    if (!have[m] || !can_scram(caps, mechs[m].hash)) continue;
    if (mechs[m].plus && cb < 0) continue;
    out->mech = m;
    /* -PLUS: bind with it; plain SCRAM: 'y' only when no -PLUS is offered */
    out->cb_index = mechs[m].plus || !out->offers_plus ? cb : -1;
    return m;
  }
  if (have[LX_SASL_PLAIN] && caps->password && caps->tls)
    return out->mech = LX_SASL_PLAIN;

  if (noffered == 0) {
    strcpy(out->reason, "the server offers no SASL mechanism");
    return LX_SASL_NONE;
  }
  strcpy(out->reason, "no usable SASL mechanism:");
  for (i = 0; i < noffered; i++) {
    int m = lx_sasl_mech_by_name(offered[i].p, offered[i].len);
    const char *why = why_not(caps, m, cb);
    size_t o = strlen(out->reason);
    if (o + 80 > sizeof out->reason) {
      strcat(out->reason, " ...");
      break;
    }
    strcat(out->reason, i ? ", " : " ");
    safe_copy(out->reason, sizeof out->reason, offered[i].p, offered[i].len,
              30);
    o = strlen(out->reason);
    snprintf(out->reason + o, sizeof out->reason - o, " (%s)", why);
  }
  return LX_SASL_NONE;
}

/* ---- client -------------------------------------------------------------- */

enum { C_INIT, C_FIRST_SENT, C_FINAL_SENT, C_VERIFIED, C_DONE, C_FAILED };

struct lx_sasl_client {
  int mech, hash, state, tls;
  size_t hlen;
  sbuf user;   /* SCRAM: the escaped saslname; PLAIN: the prepared name */
  sbuf pass;   /* the prepared password, empty when only keys are given */
  sbuf extra;  /* EXTERNAL authzid, ANONYMOUS trace */
  sbuf gs2;    /* gs2 header: "n,,", "y,," or "p=<type>,," */
  sbuf cb;     /* channel binding data (-PLUS) */
  sbuf nonce;  /* our nonce */
  sbuf auth;   /* AuthMessage, built up as the exchange goes */
  sbuf out;    /* the last response */
  lx_scram_keys keys;  /* cached keys given, then the keys of this exchange */
  int have_keys;       /* keys holds cached keys (before server-first) */
  unsigned char server_sig[LX_SASL_MAX_HASH];
  unsigned long min_iter, max_iter;
  const char *cond;
  char err[256];
};

static int cfail(lx_sasl_client *c, const char *cond, const char *fmt, ...)
  LX_PRINTF(3, 4);
static int cfail(lx_sasl_client *c, const char *cond, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err, sizeof c->err, fmt, ap);
  va_end(ap);
  c->cond = cond;
  c->state = C_FAILED;
  sb_clear(&c->out);
  return LX_SASL_FAIL;
}

static int cmisuse(lx_sasl_client *c, const char *msg) {
  snprintf(c->err, sizeof c->err, "%s", msg);
  c->cond = NULL;
  return LX_SASL_MISUSE;
}

void lx_sasl_client_free(lx_sasl_client *c) {
  if (!c) return;
  sb_free(&c->user);
  sb_free(&c->pass);
  sb_free(&c->extra);
  sb_free(&c->gs2);
  sb_free(&c->cb);
  sb_free(&c->nonce);
  sb_free(&c->auth);
  sb_free(&c->out);
  OPENSSL_cleanse(c, sizeof *c);
  free(c);
}

/* Sets up the SCRAM part of a new client. Returns NULL or a message (cond
 * in *cond; OOM for out of memory). */
static const char *scram_setup(lx_sasl_client *c, const lx_sasl_client_opts *o,
                               const char **cond) {
  sbuf name = {NULL, 0, 0};
  const char *err;
  c->hash = mechs[c->mech].hash;
  c->hlen = lx_sasl_hash_len(c->hash);
  *cond = "malformed-request";
  if ((err = prep_into(&name, o->username, stringprep_saslprep)) != NULL) {
    sb_free(&name);
    return err == OOM ? OOM : "the username cannot be SASLprep'd";
  }
  if (!escape_name(name.p, name.len, &c->user)) err = OOM;
  sb_free(&name);
  if (err) return err;
  if (o->password.p) {
    err = prep_into(&c->pass, o->password, stringprep_saslprep);
    if (err) return err == OOM ? OOM : "the password cannot be SASLprep'd";
  }
  if (o->keys && o->keys->hash == c->hash && o->keys->salt_len > 0 &&
      o->keys->salt_len <= LX_SASL_MAX_SALT) {
    c->keys = *o->keys;
    c->have_keys = 1;
  }
  if (!o->password.p && !c->have_keys) {
    *cond = "credentials-expired";
    return o->keys ? "the cached keys are for another hash, and there is no "
                     "password"
                   : "no password";
  }
  if (mechs[c->mech].plus) {
    if (!cb_name_ok(o->cb_type.p, o->cb_type.len) || !o->cb_data.p ||
        o->cb_data.len == 0) {
      *cond = "undefined-condition";
      return "a -PLUS mechanism needs a channel binding type and its data";
    }
    if (!sb_puts(&c->gs2, "p=") || !sb_put(&c->gs2, o->cb_type.p, o->cb_type.len) ||
        !sb_puts(&c->gs2, ",,") || !sb_put(&c->cb, o->cb_data.p, o->cb_data.len))
      return OOM;
  } else if (o->cb_type.len > 0 && !o->server_offers_plus) {
    if (!sb_puts(&c->gs2, "y,,")) return OOM;
  } else if (!sb_puts(&c->gs2, "n,,")) {
    return OOM;
  }
  *cond = "undefined-condition";
  return make_nonce(&c->nonce, o->nonce);
}

lx_sasl_client *lx_sasl_client_new(const lx_sasl_client_opts *o,
                                   const char **err, const char **cond) {
  lx_sasl_client *c;
  const char *e = NULL;
  *err = NULL;
  *cond = "undefined-condition";
  if (o->mech <= LX_SASL_NONE || o->mech >= LX_SASL_NMECH) {
    *err = "unknown mechanism";
    return NULL;
  }
  c = calloc(1, sizeof *c);
  if (!c) {
    *err = OOM;
    *cond = NULL;
    return NULL;
  }
  c->mech = o->mech;
  c->hash = -1;
  c->tls = o->tls;
  c->min_iter = o->min_iterations ? o->min_iterations : LX_SASL_MIN_ITER;
  c->max_iter = o->max_iterations ? o->max_iterations : LX_SASL_MAX_ITER;
  if (c->max_iter > INT_MAX) c->max_iter = INT_MAX;
  if (c->min_iter > c->max_iter) {
    e = "the minimum iteration count is above the maximum";
  } else if (o->mech == LX_SASL_PLAIN || o->mech == LX_SASL_EXTERNAL) {
    if (!o->tls) {
      *cond = "encryption-required";
      e = o->mech == LX_SASL_PLAIN ? "PLAIN is refused without TLS"
                                   : "EXTERNAL needs TLS";
    } else if (o->mech == LX_SASL_PLAIN) {
      *cond = "malformed-request";
      if ((e = prep_into(&c->user, o->username, stringprep_saslprep)) != NULL)
        e = e == OOM ? OOM : "the username cannot be SASLprep'd";
      else if ((e = prep_into(&c->pass, o->password, stringprep_saslprep)))
        e = e == OOM ? OOM : "the password cannot be SASLprep'd";
    } else if (o->authzid.p && o->authzid.len) {
      *cond = "invalid-authzid";
      e = o->authzid.len > 3071 ? "authzid too long"
          : utf8_decode(o->authzid.p, o->authzid.len, NULL, NULL);
      if (!e && !sb_put(&c->extra, o->authzid.p, o->authzid.len)) e = OOM;
    }
  } else if (o->mech == LX_SASL_ANONYMOUS) {
    if (o->trace.p && o->trace.len) {
      *cond = "malformed-request";
      e = prep_into(&c->extra, o->trace, stringprep_trace);
      if (!e && c->extra.len > 255 * 4) e = "trace too long";
    }
  } else {
    e = scram_setup(c, o, cond);
  }
  if (!e && !sb_empty(&c->out)) e = OOM;
  if (e) {
    lx_sasl_client_free(c);
    *err = e;
    if (e == OOM) *cond = NULL;
    return NULL;
  }
  return c;
}

static int client_first(lx_sasl_client *c) {
  sb_clear(&c->out);
  switch (c->mech) {
  case LX_SASL_PLAIN: /* authzid NUL authcid NUL passwd (RFC 4616) */
    if (!sb_put(&c->out, "", 1) || !sb_put(&c->out, c->user.p, c->user.len) ||
        !sb_put(&c->out, "", 1) || !sb_put(&c->out, c->pass.p, c->pass.len))
      return 0;
    return 1;
  case LX_SASL_EXTERNAL:
  case LX_SASL_ANONYMOUS:
    return sb_put(&c->out, c->extra.p, c->extra.len);
  default: /* gs2-header client-first-message-bare */
    if (!sb_puts(&c->auth, "n=") || !sb_put(&c->auth, c->user.p, c->user.len) ||
        !sb_puts(&c->auth, ",r=") ||
        !sb_put(&c->auth, c->nonce.p, c->nonce.len))
      return 0;
    return sb_put(&c->out, c->gs2.p, c->gs2.len) &&
           sb_put(&c->out, c->auth.p, c->auth.len);
  }
}

/* Reads an iteration count: 1*DIGIT without a leading zero. */
static int parse_count(const char *v, size_t n, unsigned long *out) {
  size_t i;
  unsigned long x = 0;
  if (n == 0 || v[0] == '0') return 0;
  for (i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9') return 0;
    if (x > (ULONG_MAX - 9) / 10 || x > 4000000000UL) {
      *out = ULONG_MAX; /* too big: only the bound check matters */
      return 1;
    }
    x = x * 10 + (unsigned long)(v[i] - '0');
  }
  *out = x;
  return 1;
}

/* Extensions after the mandatory attributes: "x=value" each, m= refused,
 * seen[] the attributes that may not repeat. Returns NULL or a message. */
static const char *check_extensions(const char *m, size_t len, size_t pos,
                                    const char *known) {
  char name;
  const char *v;
  size_t vl;
  int r;
  while ((r = next_attr(m, len, &pos, &name, &v, &vl)) == 1) {
    if (name == 'm') return "reserved attribute m= (mandatory extension)";
    if (strchr(known, name)) return "an attribute appears twice";
    if (vl == 0) return "an extension attribute has no value";
  }
  return r < 0 ? "malformed attribute" : NULL;
}

static int server_first(lx_sasl_client *c, const char *m, size_t len) {
  unsigned char salt[LX_SASL_MAX_MSG / 4 * 3 + 3];
  unsigned char salted[LX_SASL_MAX_HASH], ckey[LX_SASL_MAX_HASH];
  unsigned char skey[LX_SASL_MAX_HASH], stored[LX_SASL_MAX_HASH];
  unsigned char sig[LX_SASL_MAX_HASH], proof[LX_SASL_MAX_HASH];
  size_t pos = 0, vl, slen = 0, rlen, i, auth_len;
  const char *v, *e, *r;
  char name;
  unsigned long iter = 0;
  int ok;

  if ((e = msg_check(m, len)) != NULL)
    return cfail(c, "malformed-request", "server-first: %s", e);
  if (next_attr(m, len, &pos, &name, &v, &vl) != 1)
    return cfail(c, "malformed-request", "server-first: malformed attribute");
  if (name == 'm')
    return cfail(c, "malformed-request", "server-first: reserved attribute m= "
                 "(a mandatory extension we do not support)");
  if (name != 'r' || vl == 0)
    return cfail(c, "malformed-request", "server-first: does not start with r=");
  r = v;
  rlen = vl;
  if (!printable(r, rlen) || rlen > 2 * MAX_NONCE)
    return cfail(c, "malformed-request", "server-first: invalid nonce");
  if (rlen <= c->nonce.len ||
      CRYPTO_memcmp(r, c->nonce.p, c->nonce.len) != 0)
    return cfail(c, "not-authorized", rlen == c->nonce.len &&
                 CRYPTO_memcmp(r, c->nonce.p, rlen) == 0
                 ? "server-first: the server added nothing to our nonce"
                 : "server-first: the nonce does not start with ours");
  if (next_attr(m, len, &pos, &name, &v, &vl) != 1 || name != 's')
    return cfail(c, "malformed-request", "server-first: missing s= (salt)");
  if (vl == 0)
    return cfail(c, "malformed-request", "server-first: empty salt");
  if (lx_b64_decode(v, vl, salt, &slen) != 0)
    return cfail(c, "incorrect-encoding", "server-first: salt is not valid "
                 "base64");
  if (slen == 0 || slen > LX_SASL_MAX_SALT)
    return cfail(c, "malformed-request", "server-first: salt of %lu bytes",
                 (unsigned long)slen);
  if (next_attr(m, len, &pos, &name, &v, &vl) != 1 || name != 'i')
    return cfail(c, "malformed-request", "server-first: missing i= (iteration "
                 "count)");
  if (!parse_count(v, vl, &iter))
    return cfail(c, "malformed-request", "server-first: the iteration count "
                 "is not a number");
  if (iter < c->min_iter)
    return cfail(c, "mechanism-too-weak", "server-first: iteration count %lu "
                 "is below the minimum %lu", iter, c->min_iter);
  if (iter > c->max_iter)
    return cfail(c, "malformed-request", "server-first: iteration count %s "
                 "is above the maximum %lu",
                 iter == ULONG_MAX ? "(huge)" : "given", c->max_iter);
  if ((e = check_extensions(m, len, pos, "rsi")) != NULL)
    return cfail(c, "malformed-request", "server-first: %s", e);

  /* the keys: cached ones when salt and count match, else from the password */
  if (c->have_keys && c->keys.iterations == iter && c->keys.salt_len == slen &&
      memcmp(c->keys.salt, salt, slen) == 0) {
    memcpy(ckey, c->keys.client_key, c->hlen);
    memcpy(skey, c->keys.server_key, c->hlen);
    if (c->keys.have_salted) memcpy(salted, c->keys.salted_password, c->hlen);
  } else if (c->pass.len == 0) {
    return cfail(c, "credentials-expired", "the cached keys do not match the "
                 "server's salt and iteration count; the password is needed");
  } else {
    if (!derive_keys(c->hash, c->pass.p, c->pass.len, salt, slen, iter,
                     salted, ckey, skey))
      return cfail(c, "undefined-condition", "key derivation failed");
    memcpy(c->keys.salted_password, salted, c->hlen);
    c->keys.have_salted = 1;
  }
  c->have_keys = 0;
  c->keys.hash = c->hash;
  memcpy(c->keys.salt, salt, slen);
  c->keys.salt_len = slen;
  c->keys.iterations = iter;
  memcpy(c->keys.client_key, ckey, c->hlen);
  memcpy(c->keys.server_key, skey, c->hlen);

  /* AuthMessage = client-first-bare "," server-first "," final-without-proof */
  sb_clear(&c->out);
  ok = sb_puts(&c->out, "c=");
  if (ok && c->cb.len) { /* base64(gs2 header + binding data) */
    sbuf cbind = {NULL, 0, 0};
    ok = sb_put(&cbind, c->gs2.p, c->gs2.len) &&
         sb_put(&cbind, c->cb.p, c->cb.len) &&
         sb_put_b64(&c->out, (unsigned char *)cbind.p, cbind.len);
    sb_free(&cbind);
  } else if (ok) {
    ok = sb_put_b64(&c->out, (unsigned char *)c->gs2.p, c->gs2.len);
  }
  ok = ok && sb_puts(&c->out, ",r=") && sb_put(&c->out, r, rlen) &&
       sb_puts(&c->auth, ",") && sb_put(&c->auth, m, len) &&
       sb_puts(&c->auth, ",") && sb_put(&c->auth, c->out.p, c->out.len);
  auth_len = c->auth.len;
  ok = ok && digest(c->hash, ckey, c->hlen, stored) &&
       hmac(c->hash, stored, c->hlen, c->auth.p, auth_len, sig) &&
       hmac(c->hash, skey, c->hlen, c->auth.p, auth_len, c->server_sig);
  for (i = 0; ok && i < c->hlen; i++) proof[i] = ckey[i] ^ sig[i];
  ok = ok && sb_puts(&c->out, ",p=") && sb_put_b64(&c->out, proof, c->hlen);
  OPENSSL_cleanse(salted, sizeof salted);
  OPENSSL_cleanse(ckey, sizeof ckey);
  OPENSSL_cleanse(skey, sizeof skey);
  OPENSSL_cleanse(stored, sizeof stored);
  OPENSSL_cleanse(sig, sizeof sig);
  OPENSSL_cleanse(proof, sizeof proof);
  if (!ok) return cfail(c, "undefined-condition", "out of memory or crypto "
                        "failure");
  c->state = C_FINAL_SENT;
  return LX_SASL_OK;
}

/* Checks a server-final: v= must be our ServerSignature. */
static int server_final(lx_sasl_client *c, const char *m, size_t len) {
  unsigned char v[LX_SASL_MAX_MSG / 4 * 3 + 3];
  size_t pos = 0, vl, dl = 0;
  const char *val, *e;
  char name;
  if (len == 0)
    return cfail(c, "not-authorized", "the server did not send its signature "
                 "(v=): it has not proved that it knows the password");
  if ((e = msg_check(m, len)) != NULL)
    return cfail(c, "malformed-request", "server-final: %s", e);
  if (next_attr(m, len, &pos, &name, &val, &vl) != 1)
    return cfail(c, "malformed-request", "server-final: malformed attribute");
  if (name == 'e') {
    char buf[80] = "";
    safe_copy(buf, sizeof buf, val, vl, 64);
    return cfail(c, "not-authorized", "server error: %s", buf);
  }
  if (name == 'm')
    return cfail(c, "malformed-request", "server-final: reserved attribute m=");
  if (name != 'v')
    return cfail(c, "not-authorized", "server-final: no v= (server signature)");
  if (vl == 0 || lx_b64_decode(val, vl, v, &dl) != 0)
    return cfail(c, "incorrect-encoding", "server-final: the signature is not "
                 "valid base64");
  if ((e = check_extensions(m, len, pos, "ve")) != NULL)
    return cfail(c, "malformed-request", "server-final: %s", e);
  if (dl != c->hlen || CRYPTO_memcmp(v, c->server_sig, c->hlen) != 0)
    return cfail(c, "not-authorized", "the server signature is wrong: the "
                 "server does not know the password, or someone is in the "
                 "middle");
  return LX_SASL_OK;
}

int lx_sasl_client_step(lx_sasl_client *c, const char *in, size_t len,
                        const char **out, size_t *outlen) {
  int scram = c->hash >= 0;
  *out = NULL;
  *outlen = 0;
  if (c->state == C_FAILED) return LX_SASL_FAIL;
  if (in == NULL) {
    if (c->state != C_INIT)
      return cmisuse(c, "step(nil) is only for the initial response");
    if (!client_first(c)) return cfail(c, "undefined-condition", "%s", OOM);
    c->state = C_FIRST_SENT;
  } else {
    switch (c->state) {
    case C_INIT: return cmisuse(c, "step() before the initial response");
    case C_DONE: return cmisuse(c, "step() after finish()");
    case C_FIRST_SENT:
      if (!scram)
        return cfail(c, "malformed-request", "unexpected challenge for %s",
                     mechs[c->mech].name);
      if (server_first(c, in, len) != LX_SASL_OK) return LX_SASL_FAIL;
      break;
    case C_FINAL_SENT: /* server-final sent as a challenge */
      if (server_final(c, in, len) != LX_SASL_OK) return LX_SASL_FAIL;
      sb_clear(&c->out);
      c->state = C_VERIFIED;
      break;
    default:
      return cfail(c, "malformed-request", "unexpected challenge after the "
                   "server signature");
    }
  }
  *out = c->out.p;
  *outlen = c->out.len;
  return LX_SASL_OK;
}

int lx_sasl_client_finish(lx_sasl_client *c, const char *in, size_t len) {
  if (c->state == C_FAILED) return LX_SASL_FAIL;
  if (c->state == C_DONE) return cmisuse(c, "finish() called twice");
  if (c->state == C_INIT) return cmisuse(c, "finish() before step()");
  if (c->hash >= 0) {
    if (c->state == C_FIRST_SENT)
      return cfail(c, "not-authorized", "success before the SCRAM exchange "
                   "was complete: the server has not proved that it knows "
                   "the password");
    if ((c->state == C_FINAL_SENT || len > 0) &&
        server_final(c, in ? in : "", in ? len : 0) != LX_SASL_OK)
      return LX_SASL_FAIL;
  }
  c->state = C_DONE;
  sb_clear(&c->out);
  sb_clear(&c->pass); /* the keys are all a reconnect needs */
  return LX_SASL_OK;
}

const char *lx_sasl_client_error(const lx_sasl_client *c, const char **cond) {
  if (cond) *cond = c->cond;
  return c->err[0] ? c->err : NULL;
}

int lx_sasl_client_keys(const lx_sasl_client *c, lx_scram_keys *out) {
  if (c->hash < 0 || c->state != C_DONE) return 0;
  *out = c->keys;
  return 1;
}

/* ---- credentials --------------------------------------------------------- */

int lx_scram_credentials(int hash, const char *password, size_t password_len,
                         unsigned long iterations, const unsigned char *salt,
                         size_t salt_len, lx_scram_creds *out,
                         const char **err) {
  unsigned char salted[LX_SASL_MAX_HASH], ckey[LX_SASL_MAX_HASH];
  sbuf pass = {NULL, 0, 0};
  lx_sasl_str pw;
  size_t hl = lx_sasl_hash_len(hash);
  int ok;
  memset(out, 0, sizeof *out);
  *err = NULL;
  if (hl == 0) return *err = "unknown hash", LX_SASL_FAIL;
  if (iterations < 1 || iterations > INT_MAX)
    return *err = "bad iteration count", LX_SASL_FAIL;
  if (salt && (salt_len == 0 || salt_len > LX_SASL_MAX_SALT))
    return *err = "bad salt length", LX_SASL_FAIL;
  pw.p = password;
  pw.len = password_len;
  if ((*err = prep_into(&pass, pw, stringprep_saslprep)) != NULL) {
    sb_free(&pass);
    if (*err != OOM) *err = "the password cannot be SASLprep'd";
    return LX_SASL_FAIL;
  }
  out->hash = hash;
  out->iterations = iterations;
  if (salt) {
    memcpy(out->salt, salt, salt_len);
    out->salt_len = salt_len;
  } else {
    out->salt_len = 16;
    if (lx_sasl_random(out->salt, out->salt_len) != 0) {
      sb_free(&pass);
      return *err = "the random generator failed", LX_SASL_FAIL;
    }
  }
  ok = derive_keys(hash, pass.p, pass.len, out->salt, out->salt_len,
                   iterations, salted, ckey, out->server_key) &&
       digest(hash, ckey, hl, out->stored_key);
  sb_free(&pass);
  OPENSSL_cleanse(salted, sizeof salted);
  OPENSSL_cleanse(ckey, sizeof ckey);
  if (!ok) {
    OPENSSL_cleanse(out, sizeof *out);
    return *err = "key derivation failed", LX_SASL_FAIL;
  }
  return LX_SASL_OK;
}

/* ---- SCRAM server -------------------------------------------------------- */

enum { S_INIT, S_NEED_CREDS, S_FIRST_SENT, S_DONE, S_FAILED };

struct lx_scram_server {
  int mech, hash, plus, offers_plus, state, fake;
  size_t hlen, ncb, fake_salt_len;
  sbuf cb_type[LX_SASL_MAX_CB], cb_data[LX_SASL_MAX_CB];
  sbuf secret, realm, given_nonce;
  unsigned long fake_iter;
  int cb_sel;      /* the binding the client chose with p=, or -1 */
  sbuf user;       /* SASLprep'd username */
  sbuf gs2;        /* the client's gs2 header, as received */
  sbuf nonce;      /* the client nonce, then client + server nonce */
  sbuf auth;       /* AuthMessage, built up */
  sbuf out;
  lx_scram_creds creds;
  const char *cond;
  char err[256];
};

static int sfail(lx_scram_server *s, const char *cond, const char *fmt, ...)
  LX_PRINTF(3, 4);
static int sfail(lx_scram_server *s, const char *cond, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->err, sizeof s->err, fmt, ap);
  va_end(ap);
  s->cond = cond;
  s->state = S_FAILED;
  sb_clear(&s->out);
  return LX_SASL_FAIL;
}

void lx_scram_server_free(lx_scram_server *s) {
  size_t i;
  if (!s) return;
  for (i = 0; i < LX_SASL_MAX_CB; i++) {
    sb_free(&s->cb_type[i]);
    sb_free(&s->cb_data[i]);
  }
  sb_free(&s->secret);
  sb_free(&s->realm);
  sb_free(&s->given_nonce);
  sb_free(&s->user);
  sb_free(&s->gs2);
  sb_free(&s->nonce);
  sb_free(&s->auth);
  sb_free(&s->out);
  OPENSSL_cleanse(s, sizeof *s);
  free(s);
}

lx_scram_server *lx_scram_server_new(const lx_scram_server_opts *o,
                                     const char **err) {
  lx_scram_server *s;
  size_t i;
  int ok = 1;
  *err = NULL;
  if (lx_sasl_mech_hash(o->mech) < 0) return *err = "not a SCRAM mechanism", NULL;
  if (o->ncb > LX_SASL_MAX_CB) return *err = "too many channel bindings", NULL;
  if (lx_sasl_mech_plus(o->mech) && o->ncb == 0)
    return *err = "a -PLUS mechanism needs channel binding data", NULL;
  if (!o->secret.p || o->secret.len < 16)
    return *err = "the server secret must have at least 16 bytes", NULL;
  if (o->fake_salt_len > FAKE_SALT_MAX)
    return *err = "fake salt length above 64", NULL;
  if (o->fake_iterations > INT_MAX)
    return *err = "bad iteration count", NULL;
  if (o->nonce.len && (o->nonce.len > MAX_NONCE || !printable(o->nonce.p, o->nonce.len)))
    return *err = "the nonce must be printable ASCII without ','", NULL;
  for (i = 0; i < o->ncb; i++)
    if (!cb_name_ok(o->cb[i].type.p, o->cb[i].type.len) || !o->cb[i].data.p ||
        o->cb[i].data.len == 0)
      return *err = "bad channel binding type or data", NULL;
  s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->mech = o->mech;
  s->hash = mechs[o->mech].hash;
  s->hlen = lx_sasl_hash_len(s->hash);
  s->plus = mechs[o->mech].plus;
  s->offers_plus = o->offers_plus || s->plus;
  s->ncb = o->ncb;
  s->cb_sel = -1;
  s->fake_iter = o->fake_iterations ? o->fake_iterations : LX_SASL_MIN_ITER;
  s->fake_salt_len = o->fake_salt_len ? o->fake_salt_len : 16;
  for (i = 0; i < o->ncb; i++)
    ok = ok && sb_put(&s->cb_type[i], o->cb[i].type.p, o->cb[i].type.len) &&
         sb_put(&s->cb_data[i], o->cb[i].data.p, o->cb[i].data.len);
  ok = ok && sb_put(&s->secret, o->secret.p, o->secret.len) &&
       sb_put(&s->realm, o->realm.p ? o->realm.p : "", o->realm.p ? o->realm.len : 0) &&
       sb_put(&s->given_nonce, o->nonce.p ? o->nonce.p : "", o->nonce.len) &&
       sb_empty(&s->out);
  if (!ok) {
    lx_scram_server_free(s);
    return NULL;
  }
  return s;
}

/* gs2-header client-first-message-bare */
static int client_first_in(lx_scram_server *s, const char *m, size_t len) {
  sbuf raw = {NULL, 0, 0}, authz = {NULL, 0, 0};
  size_t pos, vl, i, cbl = 0;
  const char *v, *e, *comma;
  char name, flag;
  lx_sasl_str rs;
  int r;

  if ((e = msg_check(m, len)) != NULL)
    return sfail(s, "malformed-request", "client-first: %s", e);
  flag = m[0];
  /* gs2-cbind-flag "," [authzid] "," */
  if ((flag == 'n' || flag == 'y') && len > 1 && m[1] == ',') {
    pos = 2;
  } else if (flag == 'p' && len > 1 && m[1] == '=' &&
             (comma = memchr(m + 2, ',', len - 2)) != NULL) {
    pos = (size_t)(comma - m) + 1;
    cbl = pos - 3;
    if (!cb_name_ok(m + 2, cbl))
      return sfail(s, "malformed-request", "client-first: bad channel "
                   "binding type name");
  } else {
    return sfail(s, "malformed-request", "client-first: bad gs2 header");
  }
  if (pos < len && m[pos] == 'a') {
    if (len - pos < 3 || m[pos + 1] != '=' ||
        (comma = memchr(m + pos, ',', len - pos)) == NULL)
      return sfail(s, "malformed-request", "client-first: bad authzid");
    v = m + pos + 2;
    vl = (size_t)(comma - v);
    r = vl ? unescape_name(v, vl, &authz) : 0;
    pos = (size_t)(comma - m) + 1;
    if (r <= 0) {
      sb_free(&authz);
      return r < 0 ? sfail(s, "undefined-condition", "%s", OOM)
                   : sfail(s, "malformed-request", "client-first: bad authzid");
    }
  } else if (pos >= len || m[pos] != ',') {
    return sfail(s, "malformed-request", "client-first: bad gs2 header");
  } else {
    pos++;
  }
  if (!sb_put(&s->gs2, m, pos)) {
    sb_free(&authz);
    return sfail(s, "undefined-condition", "%s", OOM);
  }

  /* channel binding: flag, mechanism and what this server offers agree */
  e = NULL;
  if (flag == 'p' && !s->plus)
    e = "client-first: channel binding (p=) with a mechanism without -PLUS";
  else if (flag != 'p' && s->plus)
    e = "client-first: a -PLUS mechanism without channel binding";
  if (e) {
    sb_free(&authz);
    return sfail(s, "malformed-request", "%s", e);
  }
  if (flag == 'y' && s->offers_plus) {
    sb_free(&authz);
    return sfail(s, "not-authorized", "channel binding downgrade: the client "
                 "says the server does not support channel binding, but it "
                 "does");
  }
  if (flag == 'p') {
    for (i = 0; i < s->ncb; i++)
      if (s->cb_type[i].len == cbl && memcmp(s->cb_type[i].p, m + 2, cbl) == 0)
        break;
    if (i == s->ncb) {
      sb_free(&authz);
      return sfail(s, "not-authorized", "unsupported channel binding type");
    }
    s->cb_sel = (int)i;
  }

  /* client-first-message-bare: [m=,] n=saslname, r=nonce [, extensions] */
  if (!sb_put(&s->auth, m + pos, len - pos)) {
    sb_free(&authz);
    return sfail(s, "undefined-condition", "%s", OOM);
  }
  e = NULL;
  if (next_attr(m, len, &pos, &name, &v, &vl) != 1) e = "malformed attribute";
  else if (name == 'm') e = "reserved attribute m= (mandatory extension)";
  else if (name != 'n' || vl == 0) e = "does not start with n=";
  else if ((r = unescape_name(v, vl, &raw)) <= 0) e = r < 0 ? OOM : "bad username";
  if (!e) {
    rs.p = raw.p;
    rs.len = raw.len;
    if (prep_into(&s->user, rs, stringprep_saslprep) != NULL)
      e = "the username cannot be SASLprep'd";
  }
  if (!e && (next_attr(m, len, &pos, &name, &v, &vl) != 1 || name != 'r' ||
             vl == 0 || vl > MAX_NONCE || !printable(v, vl)))
    e = "missing or invalid r= (nonce)";
  if (!e && !sb_put(&s->nonce, v, vl)) e = OOM;
  if (!e) e = check_extensions(m, len, pos, "nr");
  sb_free(&raw);
  if (e) {
    sb_free(&authz);
    return sfail(s, e == OOM ? "undefined-condition" : "malformed-request",
                 "client-first: %s", e);
  }
  /* authzid: empty, the user, or user@realm */
  if (authz.len && !(authz.len == s->user.len &&
                     memcmp(authz.p, s->user.p, authz.len) == 0) &&
      !(s->realm.len && authz.len == s->user.len + 1 + s->realm.len &&
        memcmp(authz.p, s->user.p, s->user.len) == 0 &&
        authz.p[s->user.len] == '@' &&
        memcmp(authz.p + s->user.len + 1, s->realm.p, s->realm.len) == 0)) {
    sb_free(&authz);
    return sfail(s, "invalid-authzid", "the authorization identity is not "
                 "the authenticated user");
  }
  sb_free(&authz);
  s->state = S_NEED_CREDS;
  return LX_SASL_NEED_CREDS;
}

/* Fake credentials for an unknown user: HMAC-SHA-512(secret, label, hash,
 * username); the same name always gets the same salt. */
static int fake_creds(lx_scram_server *s) {
  static const char *const labels[] = {"salt", "stored", "server"};
  unsigned char outb[3][64];
  size_t i;
  int ok = 1;
  for (i = 0; i < 3 && ok; i++) {
    sbuf d = {NULL, 0, 0};
    ok = sb_puts(&d, "lxmpp scram unknown user\n") && sb_puts(&d, labels[i]) &&
         sb_put(&d, "\n", 1) && sb_puts(&d, hash_names[s->hash]) &&
         sb_put(&d, "\n", 1) && sb_put(&d, s->user.p, s->user.len) &&
         hmac(LX_SASL_SHA512, (unsigned char *)s->secret.p, s->secret.len,
              d.p, d.len, outb[i]);
    sb_free(&d);
  }
  if (ok) {
    s->creds.hash = s->hash;
    s->creds.iterations = s->fake_iter;
    s->creds.salt_len = s->fake_salt_len;
    memcpy(s->creds.salt, outb[0], s->fake_salt_len);
    memcpy(s->creds.stored_key, outb[1], s->hlen);
    memcpy(s->creds.server_key, outb[2], s->hlen);
  }
  OPENSSL_cleanse(outb, sizeof outb);
  return ok;
}

int lx_scram_server_creds(lx_scram_server *s, const lx_scram_creds *creds,
                          const char **out, size_t *outlen) {
  char num[24];
  const char *e;
  *out = NULL;
  *outlen = 0;
  if (s->state == S_FAILED) return LX_SASL_FAIL;
  if (s->state != S_NEED_CREDS) {
    snprintf(s->err, sizeof s->err, "credentials given out of order");
    return LX_SASL_MISUSE;
  }
  /* the fake credentials are made for real users too, so that this step
   * takes the same time either way */
  if (!fake_creds(s)) return sfail(s, "undefined-condition", "crypto failure");
  s->fake = 1;
  if (creds && creds->hash == s->hash && creds->salt_len > 0 &&
      creds->salt_len <= LX_SASL_MAX_SALT && creds->iterations >= 1 &&
      creds->iterations <= INT_MAX) {
    s->creds = *creds;
    s->fake = 0;
  }
  if ((e = make_nonce(&s->nonce, s->given_nonce.len ?
                      (lx_sasl_str){s->given_nonce.p, s->given_nonce.len}
                      : (lx_sasl_str){NULL, 0})) != NULL)
    return sfail(s, "undefined-condition", "%s", e);
  snprintf(num, sizeof num, "%lu", s->creds.iterations);
  sb_clear(&s->out);
  if (!sb_puts(&s->out, "r=") || !sb_put(&s->out, s->nonce.p, s->nonce.len) ||
      !sb_puts(&s->out, ",s=") ||
      !sb_put_b64(&s->out, s->creds.salt, s->creds.salt_len) ||
      !sb_puts(&s->out, ",i=") || !sb_puts(&s->out, num) ||
      !sb_puts(&s->auth, ",") || !sb_put(&s->auth, s->out.p, s->out.len))
    return sfail(s, "undefined-condition", "%s", OOM);
  s->state = S_FIRST_SENT;
  *out = s->out.p;
  *outlen = s->out.len;
  return LX_SASL_OK;
}

/* c=binding, r=nonce [, extensions], p=proof */
static int client_final_in(lx_scram_server *s, const char *m, size_t len) {
  unsigned char dec[LX_SASL_MAX_MSG / 4 * 3 + 3];
  unsigned char proof[LX_SASL_MAX_HASH], sig[LX_SASL_MAX_HASH];
  unsigned char ckey[LX_SASL_MAX_HASH], stored[LX_SASL_MAX_HASH];
  size_t pos = 0, vl, dl = 0, plen = 0, proof_at = 0, i;
  const char *v, *e = NULL;
  char name;
  int r, ok, cb_ok, nonce_ok;
  sbuf expect = {NULL, 0, 0};

  if ((e = msg_check(m, len)) != NULL)
    return sfail(s, "malformed-request", "client-final: %s", e);
  if (next_attr(m, len, &pos, &name, &v, &vl) != 1)
    return sfail(s, "malformed-request", "client-final: malformed attribute");
  if (name == 'm')
    return sfail(s, "malformed-request", "client-final: reserved attribute m=");
  if (name != 'c' || vl == 0)
    return sfail(s, "malformed-request", "client-final: does not start with c=");
  if (lx_b64_decode(v, vl, dec, &dl) != 0)
    return sfail(s, "incorrect-encoding", "client-final: channel binding is "
                 "not valid base64");
  /* expected: the gs2 header, plus our binding data with p= */
  if (!sb_put(&expect, s->gs2.p, s->gs2.len) ||
      (s->cb_sel >= 0 && !sb_put(&expect, s->cb_data[s->cb_sel].p,
                                 s->cb_data[s->cb_sel].len))) {
    sb_free(&expect);
    return sfail(s, "undefined-condition", "%s", OOM);
  }
  cb_ok = dl == expect.len && CRYPTO_memcmp(dec, expect.p, dl) == 0;
  sb_free(&expect);
  if (!cb_ok)
    return sfail(s, "not-authorized", "channel binding does not match");
  if (next_attr(m, len, &pos, &name, &v, &vl) != 1 || name != 'r')
    return sfail(s, "malformed-request", "client-final: missing r= (nonce)");
  nonce_ok = vl == s->nonce.len && CRYPTO_memcmp(v, s->nonce.p, vl) == 0;
  if (!nonce_ok)
    return sfail(s, "not-authorized", "client-final: nonce mismatch");
  /* extensions until p=, which must be last */
  for (;;) {
    size_t at = pos;
    r = next_attr(m, len, &pos, &name, &v, &vl);
    if (r != 1) {
      e = r < 0 ? "malformed attribute" : "missing p= (proof)";
      break;
    }
    if (name == 'p') {
      if (pos <= len) e = "p= (proof) is not the last attribute";
      else if (vl == 0 || lx_b64_decode(v, vl, dec, &plen) != 0)
        return sfail(s, "incorrect-encoding", "client-final: proof is not "
                     "valid base64");
      else if (plen != s->hlen) e = "proof of the wrong length";
      proof_at = at;
      break;
    }
    if (name == 'm') e = "reserved attribute m= (mandatory extension)";
    else if (name == 'c' || name == 'r') e = "an attribute appears twice";
    else if (vl == 0) e = "an extension attribute has no value";
    if (e) break;
  }
  if (e) return sfail(s, "malformed-request", "client-final: %s", e);
  memcpy(proof, dec, s->hlen);

  /* ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage);
   * accept iff H(ClientKey) == StoredKey (constant time) and the user is
   * real. The same work happens for an unknown user. */
  ok = sb_puts(&s->auth, ",") && sb_put(&s->auth, m, proof_at - 1) &&
       hmac(s->hash, s->creds.stored_key, s->hlen, s->auth.p, s->auth.len, sig);
  for (i = 0; ok && i < s->hlen; i++) ckey[i] = proof[i] ^ sig[i];
  ok = ok && digest(s->hash, ckey, s->hlen, stored);
  if (!ok) {
    r = sfail(s, "undefined-condition", "crypto failure");
  } else {
    int match = CRYPTO_memcmp(stored, s->creds.stored_key, s->hlen) == 0;
    if (!match || s->fake) {
      r = sfail(s, "not-authorized", "authentication failed");
    } else {
      ok = hmac(s->hash, s->creds.server_key, s->hlen, s->auth.p, s->auth.len,
                sig);
      sb_clear(&s->out);
      if (!ok || !sb_puts(&s->out, "v=") || !sb_put_b64(&s->out, sig, s->hlen))
        r = sfail(s, "undefined-condition", "crypto failure");
      else {
        s->state = S_DONE;
        r = LX_SASL_SUCCESS;
      }
    }
  }
  OPENSSL_cleanse(proof, sizeof proof);
  OPENSSL_cleanse(sig, sizeof sig);
  OPENSSL_cleanse(ckey, sizeof ckey);
  OPENSSL_cleanse(stored, sizeof stored);
  OPENSSL_cleanse(dec, sizeof dec);
  return r;
}

int lx_scram_server_step(lx_scram_server *s, const char *in, size_t len,
                         const char **out, size_t *outlen) {
  int r;
  *out = NULL;
  *outlen = 0;
  if (!in) in = "";
  switch (s->state) {
  case S_FAILED: return LX_SASL_FAIL;
  case S_INIT: return client_first_in(s, in, len);
  case S_FIRST_SENT:
    r = client_final_in(s, in, len);
    if (r == LX_SASL_SUCCESS) {
      *out = s->out.p;
      *outlen = s->out.len;
    }
    return r;
  case S_NEED_CREDS:
    snprintf(s->err, sizeof s->err, "step() while credentials are awaited");
    return LX_SASL_MISUSE;
  default:
    snprintf(s->err, sizeof s->err, "step() after success");
    return LX_SASL_MISUSE;
  }
}

const char *lx_scram_server_username(const lx_scram_server *s, size_t *len) {
  if (s->state != S_NEED_CREDS && s->state != S_FIRST_SENT &&
      s->state != S_DONE)
    return NULL;
  if (len) *len = s->user.len;
  return s->user.p;
}

int lx_scram_server_hash(const lx_scram_server *s) { return s->hash; }

void lx_scram_server_abort(lx_scram_server *s, const char *msg,
                           const char *cond) {
  sfail(s, cond ? cond : "temporary-auth-failure", "%s", msg ? msg : "aborted");
}

const char *lx_scram_server_error(const lx_scram_server *s, const char **cond) {
  if (cond) *cond = s->cond;
  return s->err[0] ? s->err : NULL;
}

const char *lx_scram_server_user(const lx_scram_server *s, size_t *len) {
  if (s->state != S_DONE) return NULL;
  if (len) *len = s->user.len;
  return s->user.p;
}
