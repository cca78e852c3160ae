/*
 * sasl.c - the SASL engine (see sasl.h): mechanism choice, SCRAM client and
 * server (RFC 5802, RFC 7677), PLAIN (RFC 4616), EXTERNAL (XEP-0178),
 * ANONYMOUS (RFC 4505), strict base64 and SASLprep (RFC 4013, via libidn).
 * This file holds the mechanism and hash tables, the secure buffers, the
 * SCRAM primitives, mechanism choice and server credentials; saslprep.c
 * holds base64, UTF-8 and SASLprep, sasl_client.c the client, sasl_server.c
 * the SCRAM server, and sasl_int.h what these files share.
 *
 * Ownership: every buffer of the engine is an sbuf owned by its client or
 * server struct; sbufs never realloc (a grown buffer is copied and the old
 * one wiped) and are wiped when freed, so no secret is left in freed memory
 * by these files. Nothing is logged; error messages never contain a secret.
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
#include "lx.h"
#include "sasl_int.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define NONCE_BYTES 24      /* random bytes of a nonce we make */

const char lx_sasl_oom[] = "out of memory";

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

int lx_sb_put(sbuf *b, const void *d, size_t n) {
  if (!sb_reserve(b, n)) return 0;
  if (n) memcpy(b->p + b->len, d, n);
  b->len += n;
  b->p[b->len] = '\0';
  return 1;
}

int lx_sb_puts(sbuf *b, const char *s) { return lx_sb_put(b, s, strlen(s)); }

int lx_sb_put_b64(sbuf *b, const unsigned char *d, size_t n) {
  size_t e = lx_b64_encoded_len(n);
  if (!sb_reserve(b, e)) return 0;
  lx_b64_encode(d, n, b->p + b->len);
  b->len += e;
  b->p[b->len] = '\0';
  return 1;
}

void lx_sb_clear(sbuf *b) {
  if (b->p) {
    OPENSSL_cleanse(b->p, b->cap);
    b->p[0] = '\0';
  }
  b->len = 0;
}

void lx_sb_free(sbuf *b) {
  if (b->p) {
    OPENSSL_cleanse(b->p, b->cap);
    free(b->p);
  }
  b->p = NULL;
  b->len = b->cap = 0;
}

/* An empty but allocated buffer, so that b->p is a valid "" to hand out. */
int lx_sb_empty(sbuf *b) {
  lx_sb_clear(b);
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

/* ---- SCRAM primitives ---------------------------------------------------- */

int lx_sasl_hmac(int hash, const unsigned char *key, size_t klen,
                 const void *d, size_t n, unsigned char *out) {
  unsigned int olen = 0;
  return HMAC(md_of(hash), key, (int)klen, d, n, out, &olen) != NULL &&
         olen == lx_sasl_hash_len(hash);
}

int lx_sasl_digest(int hash, const unsigned char *d, size_t n,
                   unsigned char *out) {
  unsigned int olen = 0;
  return EVP_Digest(d, n, out, &olen, md_of(hash), NULL) == 1 &&
         olen == lx_sasl_hash_len(hash);
}

/* SaltedPassword = Hi(password, salt, i); ClientKey, ServerKey from it. */
int lx_sasl_derive_keys(int hash, const char *pass, size_t plen,
                        const unsigned char *salt, size_t slen,
                        unsigned long iter, unsigned char *salted,
                        unsigned char *ckey, unsigned char *skey) {
  size_t hl = lx_sasl_hash_len(hash);
  if (iter > INT_MAX || plen > INT_MAX || slen > INT_MAX) return 0;
  if (PKCS5_PBKDF2_HMAC(pass, (int)plen, salt, (int)slen, (int)iter,
                        md_of(hash), (int)hl, salted) != 1)
    return 0;
  return lx_sasl_hmac(hash, salted, hl, "Client Key", 10, ckey) &&
         lx_sasl_hmac(hash, salted, hl, "Server Key", 10, skey);
}

int lx_scram_keys_complete(lx_scram_keys *k) {
  size_t hl = lx_sasl_hash_len(k->hash);
  return hl && k->have_salted &&
         lx_sasl_hmac(k->hash, k->salted_password, hl, "Client Key", 10,
                      k->client_key) &&
         lx_sasl_hmac(k->hash, k->salted_password, hl, "Server Key", 10,
                      k->server_key);
}

/* Printable ASCII except ',' (RFC 5802 "printable", the nonce alphabet). */
int lx_sasl_printable(const char *s, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    if (s[i] < 0x21 || s[i] > 0x7E || s[i] == ',') return 0;
  return 1;
}

/* channel binding type names: 1*(ALPHA / DIGIT / "." / "-") */
int lx_sasl_cb_name_ok(const char *s, size_t n) {
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
int lx_sasl_next_attr(const char *m, size_t len, size_t *pos, char *name,
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
const char *lx_sasl_msg_check(const char *m, size_t len) {
  if (len == 0) return "empty message";
  if (len > LX_SASL_MAX_MSG) return "message too long";
  if (lx_utf8_to_cps(m, len, NULL, NULL))
    return "message is not UTF-8 text";
  return NULL;
}

/* A fresh nonce: 24 random bytes in base64, or the one given (tests). */
const char *lx_sasl_make_nonce(sbuf *out, lx_sasl_str given) {
  unsigned char r[NONCE_BYTES];
  if (given.p && given.len) {
    if (given.len > MAX_NONCE || !lx_sasl_printable(given.p, given.len))
      return "the nonce must be printable ASCII without ','";
    return lx_sb_put(out, given.p, given.len) ? NULL : OOM;
  }
  if (lx_sasl_random(r, sizeof r) != 0) return "the random generator failed";
  return lx_sb_put_b64(out, r, sizeof r) ? NULL : OOM;
}

/* Appends printable ASCII of s (at most max bytes) for an error message. */
void lx_sasl_safe_copy(char *dst, size_t cap, const char *s, size_t n,
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

/* Extensions after the mandatory attributes: "x=value" each, m= refused,
 * seen[] the attributes that may not repeat. Returns NULL or a message. */
const char *lx_sasl_check_extensions(const char *m, size_t len, size_t pos,
                                     const char *known) {
  char name;
  const char *v;
  size_t vl;
  int r;
  while ((r = lx_sasl_next_attr(m, len, &pos, &name, &v, &vl)) == 1) {
    if (name == 'm') return "reserved attribute m= (mandatory extension)";
    if (strchr(known, name)) return "an attribute appears twice";
    if (vl == 0) return "an extension attribute has no value";
  }
  return r < 0 ? "malformed attribute" : NULL;
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
    lx_sasl_safe_copy(out->reason, sizeof out->reason, offered[i].p,
                      offered[i].len, 30);
    o = strlen(out->reason);
    snprintf(out->reason + o, sizeof out->reason - o, " (%s)", why);
  }
  return LX_SASL_NONE;
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
  if ((*err = lx_sasl_prep_into(&pass, pw, stringprep_saslprep)) != NULL) {
    lx_sb_free(&pass);
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
      lx_sb_free(&pass);
      return *err = "the random generator failed", LX_SASL_FAIL;
    }
  }
  ok = lx_sasl_derive_keys(hash, pass.p, pass.len, out->salt, out->salt_len,
                   iterations, salted, ckey, out->server_key) &&
       lx_sasl_digest(hash, ckey, hl, out->stored_key);
  lx_sb_free(&pass);
  OPENSSL_cleanse(salted, sizeof salted);
  OPENSSL_cleanse(ckey, sizeof ckey);
  if (!ok) {
    OPENSSL_cleanse(out, sizeof *out);
    return *err = "key derivation failed", LX_SASL_FAIL;
  }
  return LX_SASL_OK;
}
