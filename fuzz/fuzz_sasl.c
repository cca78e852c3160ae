/*
 * fuzz_sasl.c - libFuzzer target for the SASL engine (sasl.c).
 *
 * What the peer controls is parsed here: the server-first and server-final
 * messages a SCRAM client reads (each hash, with and without channel
 * binding), the client-first and client-final a SCRAM server reads, and
 * base64. Beyond "no crash, no leak, no UB" (ASan/UBSan), each mode checks
 * what sasl.h promises, and a failed check traps:
 *  - a failure has a message and one of the documented conditions (never
 *    "undefined-condition", which only the crypto library or malloc cause),
 *    and the engine stays failed;
 *  - a client gives out keys only after a verified finish; a server never
 *    lets an unknown user in, and names only the user it authenticated;
 *  - base64: decode accepts only the canonical form (encode(decode(s)) == s)
 *    and decode(encode(b)) == b;
 *  - round trip: a client and a server engine with fuzzed names, passwords
 *    and channel binding data succeed exactly when the SASLprep'd passwords
 *    and the binding data agree and no message was tampered with in transit
 *    (one byte of any of the four, XORed); a tampered server-final is
 *    refused by the client;
 *  - mechanism choice: never PLAIN without TLS, EXTERNAL without a
 *    certificate, ANONYMOUS unasked, -PLUS without binding, or a mechanism
 *    the server did not offer.
 *
 * PBKDF2 is kept cheap by giving the engine an iteration range of 1..8 (the
 * C API allows it; the Lua binding never goes below 4096), so the fuzzer
 * reaches the key derivation and everything after it at full speed.
 *
 * Input layout:
 *   byte 0    mode: 0 SCRAM client, 1 SCRAM server, 2 base64, 3 round trip,
 *             4 SASLprep, 5 mechanism choice (byte 0 modulo 6)
 *   byte 1    flags: bits 0-1 hash (SHA-1, SHA-256, SHA-512, SHA-512),
 *             bit 2 a -PLUS mechanism, bit 3 the server offers -PLUS /
 *             the client knows a binding type, bits 4-5 use the message
 *             templates below, bit 6 finish() instead of a challenge,
 *             bit 7 a second variant (see each mode)
 *   the rest  the payload, split into parts at each 0xFF byte (never valid
 *             in a SCRAM message: UTF-8)
 * Templates (so the fuzzer starts past the nonce checks): the client mode
 * prefixes part 1 with "r=" and our nonce; the server mode sends
 * "n,,n=user,r=abc" as client-first and prefixes part 2 with
 * "c=biws,r=abcsrv".
 *
 * Build: see the Makefile (make fuzz).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sasl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_PARTS 6
#define CNONCE "fyko+d2lbbFgONRv9qkxdawL"
#define SNONCE "srv"
#define SECRET "fuzz-secret-0123456789"

static void fail_check(const char *what, int line) __attribute__((noreturn));
static void fail_check(const char *what, int line) {
  fprintf(stderr, "fuzz_sasl.c:%d: check failed: %s\n", line, what);
  __builtin_trap();
}
#define CHECK(c)                                                               \
  do {                                                                         \
    if (!(c)) fail_check(#c, __LINE__);                                        \
  } while (0)

static volatile unsigned long sink;

typedef struct part {
  const char *p;
  size_t len;
} part;

/* Splits d[0..n) at 0xFF bytes into at most MAX_PARTS parts. */
static size_t split(const uint8_t *d, size_t n, part *parts) {
  size_t np = 0, start = 0, i;
  for (i = 0; i <= n && np < MAX_PARTS; i++) {
    if (i == n || d[i] == 0xFF) {
      parts[np].p = (const char *)d + start;
      parts[np].len = i - start;
      np++;
      start = i + 1;
    }
  }
  for (i = np; i < MAX_PARTS; i++) {
    parts[i].p = "";
    parts[i].len = 0;
  }
  return np;
}

static size_t msg_len; /* length of the last dup_msg() */

/* An exact heap copy (no NUL after it), so ASan sees any read past the
 * message; its length goes to msg_len. */
static char *dup_msg(const char *prefix, const part *p) {
  size_t pl = prefix ? strlen(prefix) : 0;
  char *m = malloc(pl + p->len ? pl + p->len : 1);
  CHECK(m != NULL);
  msg_len = pl + p->len;
  if (pl) memcpy(m, prefix, pl);
  if (p->len) memcpy(m + pl, p->p, p->len);
  return m;
}

static void touch(const char *p, size_t n) {
  unsigned long acc = 0;
  size_t i;
  for (i = 0; i < n; i++) acc += (unsigned char)p[i];
  sink += acc;
}

static void check_cond(const char *msg, const char *cond) {
  static const char *const known[] = {
    "not-authorized", "malformed-request", "incorrect-encoding",
    "mechanism-too-weak", "invalid-authzid", "encryption-required",
    "credentials-expired", "temporary-auth-failure", NULL
  };
  size_t i;
  CHECK(msg != NULL && cond != NULL);
  touch(msg, strlen(msg));
  for (i = 0; known[i]; i++)
    if (strcmp(cond, known[i]) == 0) return;
  fprintf(stderr, "condition %s: %s\n", cond, msg);
  fail_check("a documented condition", __LINE__);
}

static const int scram_mechs[2][3] = {
  {LX_SASL_SCRAM_SHA_1, LX_SASL_SCRAM_SHA_256, LX_SASL_SCRAM_SHA_512},
  {LX_SASL_SCRAM_SHA_1_PLUS, LX_SASL_SCRAM_SHA_256_PLUS,
   LX_SASL_SCRAM_SHA_512_PLUS}
};

static int mech_of(uint8_t flags) {
  int h = flags & 3;
  return scram_mechs[(flags >> 2) & 1][h == 3 ? 2 : h];
}

static lx_sasl_str str(const char *p, size_t n) {
  lx_sasl_str s;
  s.p = p;
  s.len = n;
  return s;
}

/* ---- mode 0: a SCRAM client against a fuzzed server ---------------------- */

static void client_fail_check(lx_sasl_client *c) {
  const char *cond, *msg = lx_sasl_client_error(c, &cond);
  const char *out;
  size_t outlen;
  lx_scram_keys k;
  check_cond(msg, cond);
  CHECK(lx_sasl_client_step(c, "x", 1, &out, &outlen) == LX_SASL_FAIL);
  CHECK(lx_sasl_client_finish(c, "", 0) == LX_SASL_FAIL);
  CHECK(!lx_sasl_client_keys(c, &k));
}

static void fuzz_client(uint8_t flags, const part *parts) {
  lx_sasl_client_opts o;
  lx_sasl_client *c;
  const char *err, *cond, *out;
  size_t outlen;
  char *m;
  int rc;
  lx_scram_keys k;
  memset(&o, 0, sizeof o);
  o.mech = mech_of(flags);
  o.username = str("user", 4);
  o.password = str("pencil", 6);
  o.nonce = str(CNONCE, strlen(CNONCE));
  o.min_iterations = 1;
  o.max_iterations = 8;
  if (lx_sasl_mech_plus(o.mech) || (flags & 8)) {
    o.cb_type = str("tls-exporter", 12);
    o.cb_data = str("\1\2\3binding", 10);
  }
  o.server_offers_plus = (flags >> 7) & 1;
  c = lx_sasl_client_new(&o, &err, &cond);
  CHECK(c != NULL);
  CHECK(lx_sasl_client_step(c, NULL, 0, &out, &outlen) == LX_SASL_OK);
  CHECK(outlen > 0 && out[outlen] == '\0');
  touch(out, outlen);
  CHECK(!lx_sasl_client_keys(c, &k));

  /* a NUL in the payload ends the message here, so the fuzzer can append
   * junk freely (the exact length, NUL bytes included, is tried below) */
  {
    part p0 = parts[0];
    const char *nul = memchr(p0.p, '\0', p0.len);
    if (nul) p0.len = (size_t)(nul - p0.p);
    m = dup_msg(flags & 16 ? "r=" CNONCE : NULL, &p0);
  }
  rc = lx_sasl_client_step(c, m, msg_len, &out, &outlen);
  free(m);
  if (rc == LX_SASL_OK) {
    CHECK(outlen > 5 && memcmp(out, "c=", 2) == 0 && out[outlen] == '\0');
    CHECK(strstr(out, ",p=") != NULL);
    touch(out, outlen);
    m = dup_msg(NULL, &parts[1]);
    if (flags & 64) {
      rc = lx_sasl_client_finish(c, m, parts[1].len);
    } else {
      rc = lx_sasl_client_step(c, m, parts[1].len, &out, &outlen);
      if (rc == LX_SASL_OK) {
        CHECK(outlen == 0);
        rc = lx_sasl_client_finish(c, parts[2].len ? parts[2].p : NULL,
                                   parts[2].len);
      }
    }
    free(m);
    /* a forged signature cannot pass: only 2^-160 luck would do it */
    CHECK(rc == LX_SASL_FAIL);
  } else {
    CHECK(rc == LX_SASL_FAIL);
  }
  client_fail_check(c);
  lx_sasl_client_free(c);

  /* the same server-first with its exact length (NUL bytes included) */
  c = lx_sasl_client_new(&o, &err, &cond);
  CHECK(c != NULL);
  CHECK(lx_sasl_client_step(c, NULL, 0, &out, &outlen) == LX_SASL_OK);
  m = dup_msg(NULL, &parts[0]);
  rc = lx_sasl_client_step(c, m, parts[0].len, &out, &outlen);
  free(m);
  if (rc == LX_SASL_FAIL) client_fail_check(c);
  else CHECK(rc == LX_SASL_OK && memchr(parts[0].p, '\0', parts[0].len) == NULL);
  lx_sasl_client_free(c);
}

/* ---- mode 1: a SCRAM server against a fuzzed client ---------------------- */

static lx_scram_creds creds_cache[3];
static int creds_made[3];

static const lx_scram_creds *user_creds(int hash) {
  const char *err;
  if (!creds_made[hash]) {
    CHECK(lx_scram_credentials(hash, "pencil", 6, 1,
                               (const unsigned char *)"saltsaltsaltsalt", 16,
                               &creds_cache[hash], &err) == LX_SASL_OK);
    creds_made[hash] = 1;
  }
  return &creds_cache[hash];
}

static void fuzz_server(uint8_t flags, const part *parts) {
  lx_scram_server_opts o;
  lx_sasl_cb cb[2];
  lx_scram_server *s;
  const char *err, *out, *user, *cond, *msg;
  size_t outlen, ulen;
  char *m;
  int rc, real = 0;
  memset(&o, 0, sizeof o);
  o.mech = mech_of(flags);
  o.offers_plus = (flags >> 3) & 1;
  cb[0].type = str("tls-exporter", 12);
  cb[0].data = str("\1\2\3binding", 10);
  cb[1].type = str("tls-server-end-point", 20);
  cb[1].data = str("certhash", 8);
  o.cb = cb;
  o.ncb = flags & 128 ? 2 : 1;
  o.secret = str(SECRET, strlen(SECRET));
  o.realm = str("example.org", 11);
  o.nonce = str(SNONCE, 3);
  s = lx_scram_server_new(&o, &err);
  CHECK(s != NULL);
  /* the template may be followed by fuzzed extensions (part 6) */
  m = flags & 32 ? dup_msg("n,,n=user,r=abc", &parts[5]) : dup_msg(NULL, &parts[0]);
  rc = lx_scram_server_step(s, m, msg_len, &out, &outlen);
  free(m);
  if (rc == LX_SASL_NEED_CREDS) {
    int hash = lx_scram_server_hash(s);
    user = lx_scram_server_username(s, &ulen);
    CHECK(user != NULL && ulen > 0 && user[ulen] == '\0');
    touch(user, ulen);
    CHECK(lx_scram_server_user(s, &ulen) == NULL); /* not authenticated yet */
    real = ulen == 4 && memcmp(user, "user", 4) == 0;
    rc = lx_scram_server_creds(s, real ? user_creds(flags & 64 ? (hash + 1) % 3
                                                               : hash)
                                       : NULL, &out, &outlen);
    if (flags & 64) real = 0; /* credentials for another hash: none */
    CHECK(rc == LX_SASL_OK);
    CHECK(outlen > 0 && memcmp(out, "r=", 2) == 0);
    touch(out, outlen);
    m = dup_msg(flags & 16 ? "c=biws,r=abc" SNONCE : NULL, &parts[1]);
    rc = lx_scram_server_step(s, m, msg_len, &out, &outlen);
    free(m);
    if (rc == LX_SASL_SUCCESS) {
      CHECK(real); /* never an unknown user */
      user = lx_scram_server_user(s, &ulen);
      CHECK(user != NULL && ulen == 4);
      CHECK(outlen > 2 && memcmp(out, "v=", 2) == 0);
      lx_scram_server_free(s);
      return;
    }
  }
  CHECK(rc == LX_SASL_FAIL);
  msg = lx_scram_server_error(s, &cond);
  check_cond(msg, cond);
  CHECK(lx_scram_server_user(s, &ulen) == NULL);
  CHECK(lx_scram_server_step(s, "n,,n=user,r=abc", 15, &out, &outlen) ==
        LX_SASL_FAIL);
  lx_scram_server_free(s);
}

/* ---- mode 2: base64 ------------------------------------------------------ */

static void fuzz_base64(const uint8_t *d, size_t n) {
  unsigned char *dec = malloc(n / 4 * 3 + 1);
  char *enc = malloc(lx_b64_encoded_len(n) + 1);
  unsigned char *back = malloc(n + 3);
  size_t dl = 0, bl = 0;
  char *in = malloc(n ? n : 1); /* exact: ASan sees over-reads */
  CHECK(dec && enc && back && in);
  memcpy(in, d, n);
  if (lx_b64_decode(in, n, dec, &dl) == 0) {
    CHECK(dl <= n / 4 * 3);
    lx_b64_encode(dec, dl, enc);
    CHECK(lx_b64_encoded_len(dl) == n && memcmp(enc, in, n) == 0);
  }
  lx_b64_encode(d, n, enc);
  CHECK(lx_b64_decode(enc, lx_b64_encoded_len(n), back, &bl) == 0);
  CHECK(bl == n && memcmp(back, d, n) == 0);
  free(dec);
  free(enc);
  free(back);
  free(in);
}

/* ---- mode 3: client and server engines together -------------------------- */

static int same_prep(const part *a, const part *b) {
  char *pa, *pb;
  size_t la, lb;
  int same;
  if (lx_saslprep(a->p, a->len, 0, &pa, &la)) return -1;
  if (lx_saslprep(b->p, b->len, 0, &pb, &lb)) {
    lx_sasl_free_secret(pa, la);
    return -1;
  }
  same = la == lb && memcmp(pa, pb, la) == 0 && la > 0;
  lx_sasl_free_secret(pa, la);
  lx_sasl_free_secret(pb, lb);
  return same;
}

/* Part 6 may tamper with one message in transit: byte 0 picks it (0
 * client-first, 1 server-first, 2 client-final, 3 server-final), bytes 1-2
 * the position, byte 3 what to XOR there (0 counts as 1). */
typedef struct tamper {
  int which;
  size_t pos;
  unsigned char x;
} tamper;

/* A heap copy of a message on its way, tampered with if it is the one. */
static char *in_transit(const tamper *t, int which, const char *m, size_t len) {
  part p;
  char *c;
  p.p = m;
  p.len = len;
  c = dup_msg(NULL, &p);
  if (t->which == which && len > 0) c[t->pos % len] ^= (char)t->x;
  return c;
}

static void fuzz_roundtrip(uint8_t flags, const part *parts) {
  lx_sasl_client_opts co;
  lx_scram_server_opts so;
  lx_sasl_client *c;
  lx_scram_server *s;
  lx_scram_creds cr;
  lx_sasl_cb cb;
  tamper t = {-1, 0, 1};
  const char *err, *cond, *out, *sout, *user;
  size_t outlen, soutlen, ulen;
  int rc, same_pw, expect, have_creds;
  char *m;
  memset(&co, 0, sizeof co);
  memset(&so, 0, sizeof so);
  if (parts[5].len >= 4) {
    const unsigned char *b = (const unsigned char *)parts[5].p;
    t.which = b[0] % 4;
    t.pos = (size_t)b[1] << 8 | b[2];
    t.x = b[3] ? b[3] : 1;
  }
  co.mech = so.mech = mech_of(flags);
  co.username = str(parts[0].p, parts[0].len);
  co.password = str(parts[1].p, parts[1].len);
  co.min_iterations = 1;
  co.max_iterations = 8;
  co.server_offers_plus = so.offers_plus = (flags >> 3) & 1;
  if (lx_sasl_mech_plus(co.mech) || (flags & 128)) {
    co.cb_type = str("tls-exporter", 12);
    co.cb_data = parts[3].len ? str(parts[3].p, parts[3].len) : str("x", 1);
  }
  cb.type = str("tls-exporter", 12);
  cb.data = parts[4].len ? str(parts[4].p, parts[4].len) : str("x", 1);
  so.cb = &cb;
  so.ncb = 1;
  so.secret = str(SECRET, strlen(SECRET));
  so.fake_iterations = 1 + (flags >> 4 & 3); /* as the real credentials */
  if (flags & 64) /* XEP-0474's h=: the client takes it as an extension */
    so.ssdp = str("G6k/rBLDqgOhRRaCuuatSDFkJ08=", 28);
  same_pw = same_prep(&parts[1], &parts[2]);
  have_creds = lx_scram_credentials(lx_sasl_mech_hash(co.mech), parts[2].p,
                                    parts[2].len, so.fake_iterations,
                                    NULL, 0, &cr, &err) == LX_SASL_OK;
  c = lx_sasl_client_new(&co, &err, &cond);
  if (!c) {
    CHECK(cond != NULL);
    check_cond(err, cond);
    return;
  }
  s = lx_scram_server_new(&so, &err);
  CHECK(s != NULL);

  /* client-first: whatever the client engine sends, the server engine
   * accepts, and sees the name the client SASLprep'd (so SASLprep'ing it
   * twice changes nothing) */
  CHECK(lx_sasl_client_step(c, NULL, 0, &out, &outlen) == LX_SASL_OK);
  m = in_transit(&t, 0, out, outlen);
  rc = lx_scram_server_step(s, m, outlen, &sout, &soutlen);
  free(m);
  if (t.which != 0) {
    char *prepped;
    size_t pl;
    CHECK(rc == LX_SASL_NEED_CREDS);
    user = lx_scram_server_username(s, &ulen);
    CHECK(lx_saslprep(parts[0].p, parts[0].len, 0, &prepped, &pl) == NULL);
    CHECK(pl == ulen && memcmp(prepped, user, ulen) == 0);
    lx_sasl_free_secret(prepped, pl);
  }
  if (rc != LX_SASL_NEED_CREDS) goto failed;
  rc = lx_scram_server_creds(s, have_creds ? &cr : NULL, &sout, &soutlen);
  CHECK(rc == LX_SASL_OK);

  /* server-first */
  m = in_transit(&t, 1, sout, soutlen);
  rc = lx_sasl_client_step(c, m, soutlen, &out, &outlen);
  free(m);
  if (t.which < 0 || t.which > 1) CHECK(rc == LX_SASL_OK);
  if (rc != LX_SASL_OK) {
    const char *msg = lx_sasl_client_error(c, &cond);
    check_cond(msg, cond);
    goto done;
  }

  /* client-final: success exactly when passwords and bindings agree */
  m = in_transit(&t, 2, out, outlen);
  rc = lx_scram_server_step(s, m, outlen, &sout, &soutlen);
  free(m);
  expect = have_creds && same_pw == 1 && (t.which < 0 || t.which == 3) &&
           (!lx_sasl_mech_plus(co.mech) ||
            (co.cb_data.len == cb.data.len &&
             memcmp(co.cb_data.p, cb.data.p, cb.data.len) == 0));
  if (expect != (rc == LX_SASL_SUCCESS)) {
    fprintf(stderr, "expected %s, got rc %d (tampered: %d)\n",
            expect ? "success" : "failure", rc, t.which);
    fail_check("success exactly when passwords and bindings agree", __LINE__);
  }
  if (rc != LX_SASL_SUCCESS) {
    if (t.which < 0) { /* wrong password, unknown user or binding */
      lx_scram_server_error(s, &cond);
      CHECK(cond != NULL && strcmp(cond, "not-authorized") == 0);
    }
    goto failed;
  }

  /* server-final: the client accepts it exactly when it is untouched */
  m = in_transit(&t, 3, sout, soutlen);
  rc = lx_sasl_client_finish(c, m, soutlen);
  free(m);
  if (t.which == 3) {
    const char *msg = lx_sasl_client_error(c, &cond);
    lx_scram_keys k;
    CHECK(rc == LX_SASL_FAIL);
    check_cond(msg, cond);
    CHECK(!lx_sasl_client_keys(c, &k));
  } else {
    lx_scram_keys k;
    CHECK(rc == LX_SASL_OK);
    CHECK(lx_sasl_client_keys(c, &k) && k.iterations == cr.iterations);
    lx_sasl_wipe(&k, sizeof k);
  }
  goto done;

failed:
  CHECK(rc == LX_SASL_FAIL);
  {
    const char *msg = lx_scram_server_error(s, &cond);
    check_cond(msg, cond);
    CHECK(lx_scram_server_user(s, &ulen) == NULL);
  }
done:
  lx_sasl_wipe(&cr, sizeof cr);
  lx_sasl_client_free(c);
  lx_scram_server_free(s);
}

/* ---- mode 4: SASLprep ---------------------------------------------------- */

static void fuzz_saslprep(uint8_t flags, const uint8_t *d, size_t n) {
  char *out;
  size_t len;
  char *in = malloc(n ? n : 1); /* exact: ASan sees over-reads */
  CHECK(in != NULL);
  memcpy(in, d, n);
  if (lx_saslprep(in, n, flags & 1, &out, &len) == NULL) {
    CHECK(out != NULL && out[len] == '\0' && strlen(out) == len);
    lx_sasl_free_secret(out, len);
  }
  free(in);
}

/* ---- mode 5: mechanism choice -------------------------------------------- */

static void fuzz_choose(uint8_t flags, const part *parts, size_t nparts) {
  lx_sasl_str offered[64], cbt[2], scbt[1];
  size_t n = 0, i, start = 0;
  lx_sasl_caps caps;
  lx_sasl_choice ch;
  const part *p = &parts[0];
  for (i = 0; i <= p->len && n < 64; i++)
    if (i == p->len || p->p[i] == ',') {
      offered[n++] = str(p->p + start, i - start);
      start = i + 1;
    }
  memset(&caps, 0, sizeof caps);
  caps.password = flags & 1;
  caps.tls = (flags >> 1) & 1;
  caps.client_cert = (flags >> 2) & 1;
  caps.anonymous = (flags >> 3) & 1;
  caps.keys_hash = flags & 16 ? (flags >> 5) % 3 : -1;
  cbt[0] = str("tls-exporter", 12);
  cbt[1] = str("tls-server-end-point", 20);
  caps.cb_types = cbt;
  caps.ncb_types = flags & 128 ? 2 : 0;
  if (nparts > 1) {
    scbt[0] = str(parts[1].p, parts[1].len);
    caps.server_cb_types = scbt;
    caps.nserver_cb_types = 1;
    caps.server_cb_known = 1;
  }
  lx_sasl_choose(offered, n, &caps, &ch);
  if (ch.mech == LX_SASL_NONE) {
    CHECK(ch.reason[0] != '\0' && strlen(ch.reason) < sizeof ch.reason);
    return;
  }
  for (i = 0; i < n; i++)
    if (lx_sasl_mech_by_name(offered[i].p, offered[i].len) == ch.mech) break;
  CHECK(i < n);
  if (ch.mech == LX_SASL_PLAIN) CHECK(caps.tls && caps.password);
  if (ch.mech == LX_SASL_EXTERNAL) CHECK(caps.tls && caps.client_cert);
  CHECK((ch.mech == LX_SASL_ANONYMOUS) == (caps.anonymous != 0));
  if (lx_sasl_mech_plus(ch.mech))
    CHECK(caps.tls && ch.cb_index >= 0 && (size_t)ch.cb_index < caps.ncb_types);
  if (lx_sasl_mech_hash(ch.mech) >= 0)
    CHECK(caps.password || caps.keys_hash == lx_sasl_mech_hash(ch.mech));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  part parts[MAX_PARTS];
  size_t np;
  uint8_t flags;
  if (size < 2 || size > 16384) return 0;
  flags = data[1];
  np = split(data + 2, size - 2, parts);
  switch (data[0] % 6) {
  case 0: fuzz_client(flags, parts); break;
  case 1: fuzz_server(flags, parts); break;
  case 2: fuzz_base64(data + 2, size - 2); break;
  case 3: fuzz_roundtrip(flags, parts); break;
  case 4: fuzz_saslprep(flags, data + 2, size - 2); break;
  default: fuzz_choose(flags, parts, np); break;
  }
  return 0;
}
