/*
 * sasl_client.c - the client side of the SASL engine (see sasl.h): SCRAM
 * (RFC 5802, RFC 7677) with channel binding and cached keys, PLAIN
 * (RFC 4616), EXTERNAL (XEP-0178) and ANONYMOUS (RFC 4505). The parsing
 * rules and the other decisions are in the header of sasl.c.
 *
 * Ownership: everything a client holds is in the sbufs and key arrays of
 * its struct, wiped by lx_sasl_client_free(); lx_sasl_client_finish() wipes
 * the password early, as the keys are all a reconnect needs.
 */
#include "lx.h"
#include "sasl_int.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

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
  lx_sb_clear(&c->out);
  return LX_SASL_FAIL;
}

static int cmisuse(lx_sasl_client *c, const char *msg) {
  snprintf(c->err, sizeof c->err, "%s", msg);
  c->cond = NULL;
  return LX_SASL_MISUSE;
}

void lx_sasl_client_free(lx_sasl_client *c) {
  if (!c) return;
  lx_sb_free(&c->user);
  lx_sb_free(&c->pass);
  lx_sb_free(&c->extra);
  lx_sb_free(&c->gs2);
  lx_sb_free(&c->cb);
  lx_sb_free(&c->nonce);
  lx_sb_free(&c->auth);
  lx_sb_free(&c->out);
  OPENSSL_cleanse(c, sizeof *c);
  free(c);
}

static int escape_name(const char *s, size_t n, sbuf *out) {
  size_t i;
  for (i = 0; i < n; i++) {
    int ok = s[i] == ',' ? lx_sb_puts(out, "=2C")
           : s[i] == '=' ? lx_sb_puts(out, "=3D")
           : lx_sb_put(out, s + i, 1);
    if (!ok) return 0;
  }
  return 1;
}

/* Sets up the SCRAM part of a new client. Returns NULL or a message (cond
 * in *cond; OOM for out of memory). */
static const char *scram_setup(lx_sasl_client *c, const lx_sasl_client_opts *o,
                               const char **cond) {
  sbuf name = {NULL, 0, 0};
  const char *err;
  c->hash = lx_sasl_mech_hash(c->mech);
  c->hlen = lx_sasl_hash_len(c->hash);
  *cond = "malformed-request";
  if ((err = lx_sasl_prep_into(&name, o->username, stringprep_saslprep)) !=
      NULL) {
    lx_sb_free(&name);
    return err == OOM ? OOM : "the username cannot be SASLprep'd";
  }
  if (!escape_name(name.p, name.len, &c->user)) err = OOM;
  lx_sb_free(&name);
  if (err) return err;
  if (o->password.p) {
    err = lx_sasl_prep_into(&c->pass, o->password, stringprep_saslprep);
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
  if (lx_sasl_mech_plus(c->mech)) {
    if (!lx_sasl_cb_name_ok(o->cb_type.p, o->cb_type.len) || !o->cb_data.p ||
        o->cb_data.len == 0) {
      *cond = "undefined-condition";
      return "a -PLUS mechanism needs a channel binding type and its data";
    }
    if (!lx_sb_puts(&c->gs2, "p=") ||
        !lx_sb_put(&c->gs2, o->cb_type.p, o->cb_type.len) ||
        !lx_sb_puts(&c->gs2, ",,") ||
        !lx_sb_put(&c->cb, o->cb_data.p, o->cb_data.len))
      return OOM;
  } else if (o->cb_type.len > 0 && !o->server_offers_plus) {
    if (!lx_sb_puts(&c->gs2, "y,,")) return OOM;
  } else if (!lx_sb_puts(&c->gs2, "n,,")) {
    return OOM;
  }
  *cond = "undefined-condition";
  return lx_sasl_make_nonce(&c->nonce, o->nonce);
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
      if ((e = lx_sasl_prep_into(&c->user, o->username,
                                 stringprep_saslprep)) != NULL)
        e = e == OOM ? OOM : "the username cannot be SASLprep'd";
      else if ((e = lx_sasl_prep_into(&c->pass, o->password,
                                      stringprep_saslprep)))
        e = e == OOM ? OOM : "the password cannot be SASLprep'd";
    } else if (o->authzid.p && o->authzid.len) {
      *cond = "invalid-authzid";
      e = o->authzid.len > 3071 ? "authzid too long"
          : lx_utf8_to_cps(o->authzid.p, o->authzid.len, NULL, NULL);
      if (!e && !lx_sb_put(&c->extra, o->authzid.p, o->authzid.len)) e = OOM;
    }
  } else if (o->mech == LX_SASL_ANONYMOUS) {
    if (o->trace.p && o->trace.len) {
      *cond = "malformed-request";
      e = lx_sasl_prep_into(&c->extra, o->trace, stringprep_trace);
      if (!e && c->extra.len > 255 * 4) e = "trace too long";
    }
  } else {
    e = scram_setup(c, o, cond);
  }
  if (!e && !lx_sb_empty(&c->out)) e = OOM;
  if (e) {
    lx_sasl_client_free(c);
    *err = e;
    if (e == OOM) *cond = NULL;
    return NULL;
  }
  return c;
}

static int client_first(lx_sasl_client *c) {
  lx_sb_clear(&c->out);
  switch (c->mech) {
  case LX_SASL_PLAIN: /* authzid NUL authcid NUL passwd (RFC 4616) */
    if (!lx_sb_put(&c->out, "", 1) ||
        !lx_sb_put(&c->out, c->user.p, c->user.len) ||
        !lx_sb_put(&c->out, "", 1) ||
        !lx_sb_put(&c->out, c->pass.p, c->pass.len))
      return 0;
    return 1;
  case LX_SASL_EXTERNAL:
  case LX_SASL_ANONYMOUS:
    return lx_sb_put(&c->out, c->extra.p, c->extra.len);
  default: /* gs2-header client-first-message-bare */
    if (!lx_sb_puts(&c->auth, "n=") ||
        !lx_sb_put(&c->auth, c->user.p, c->user.len) ||
        !lx_sb_puts(&c->auth, ",r=") ||
        !lx_sb_put(&c->auth, c->nonce.p, c->nonce.len))
      return 0;
    return lx_sb_put(&c->out, c->gs2.p, c->gs2.len) &&
           lx_sb_put(&c->out, c->auth.p, c->auth.len);
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

  if ((e = lx_sasl_msg_check(m, len)) != NULL)
    return cfail(c, "malformed-request", "server-first: %s", e);
  if (lx_sasl_next_attr(m, len, &pos, &name, &v, &vl) != 1)
    return cfail(c, "malformed-request", "server-first: malformed attribute");
  if (name == 'm')
    return cfail(c, "malformed-request", "server-first: reserved attribute m= "
                 "(a mandatory extension we do not support)");
  if (name != 'r' || vl == 0)
    return cfail(c, "malformed-request", "server-first: does not start with r=");
  r = v;
  rlen = vl;
  if (!lx_sasl_printable(r, rlen) || rlen > 2 * MAX_NONCE)
    return cfail(c, "malformed-request", "server-first: invalid nonce");
  if (rlen <= c->nonce.len ||
      CRYPTO_memcmp(r, c->nonce.p, c->nonce.len) != 0)
    return cfail(c, "not-authorized", rlen == c->nonce.len &&
                 CRYPTO_memcmp(r, c->nonce.p, rlen) == 0
                 ? "server-first: the server added nothing to our nonce"
                 : "server-first: the nonce does not start with ours");
  if (lx_sasl_next_attr(m, len, &pos, &name, &v, &vl) != 1 || name != 's')
    return cfail(c, "malformed-request", "server-first: missing s= (salt)");
  if (vl == 0)
    return cfail(c, "malformed-request", "server-first: empty salt");
  if (lx_b64_decode(v, vl, salt, &slen) != 0)
    return cfail(c, "incorrect-encoding", "server-first: salt is not valid "
                 "base64");
  if (slen == 0 || slen > LX_SASL_MAX_SALT)
    return cfail(c, "malformed-request", "server-first: salt of %lu bytes",
                 (unsigned long)slen);
  if (lx_sasl_next_attr(m, len, &pos, &name, &v, &vl) != 1 || name != 'i')
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
  if ((e = lx_sasl_check_extensions(m, len, pos, "rsi")) != NULL)
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
    if (!lx_sasl_derive_keys(c->hash, c->pass.p, c->pass.len, salt, slen, iter,
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
  lx_sb_clear(&c->out);
  ok = lx_sb_puts(&c->out, "c=");
  if (ok && c->cb.len) { /* base64(gs2 header + binding data) */
    sbuf cbind = {NULL, 0, 0};
    ok = lx_sb_put(&cbind, c->gs2.p, c->gs2.len) &&
         lx_sb_put(&cbind, c->cb.p, c->cb.len) &&
         lx_sb_put_b64(&c->out, (unsigned char *)cbind.p, cbind.len);
    lx_sb_free(&cbind);
  } else if (ok) {
    ok = lx_sb_put_b64(&c->out, (unsigned char *)c->gs2.p, c->gs2.len);
  }
  ok = ok && lx_sb_puts(&c->out, ",r=") && lx_sb_put(&c->out, r, rlen) &&
       lx_sb_puts(&c->auth, ",") && lx_sb_put(&c->auth, m, len) &&
       lx_sb_puts(&c->auth, ",") && lx_sb_put(&c->auth, c->out.p, c->out.len);
  auth_len = c->auth.len;
  ok = ok && lx_sasl_digest(c->hash, ckey, c->hlen, stored) &&
       lx_sasl_hmac(c->hash, stored, c->hlen, c->auth.p, auth_len, sig) &&
       lx_sasl_hmac(c->hash, skey, c->hlen, c->auth.p, auth_len, c->server_sig);
  for (i = 0; ok && i < c->hlen; i++) proof[i] = ckey[i] ^ sig[i];
  ok = ok && lx_sb_puts(&c->out, ",p=") &&
       lx_sb_put_b64(&c->out, proof, c->hlen);
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
  if ((e = lx_sasl_msg_check(m, len)) != NULL)
    return cfail(c, "malformed-request", "server-final: %s", e);
  if (lx_sasl_next_attr(m, len, &pos, &name, &val, &vl) != 1)
    return cfail(c, "malformed-request", "server-final: malformed attribute");
  if (name == 'e') {
    char buf[80] = "";
    lx_sasl_safe_copy(buf, sizeof buf, val, vl, 64);
    return cfail(c, "not-authorized", "server error: %s", buf);
  }
  if (name == 'm')
    return cfail(c, "malformed-request", "server-final: reserved attribute m=");
  if (name != 'v')
    return cfail(c, "not-authorized", "server-final: no v= (server signature)");
  if (vl == 0 || lx_b64_decode(val, vl, v, &dl) != 0)
    return cfail(c, "incorrect-encoding", "server-final: the signature is not "
                 "valid base64");
  if ((e = lx_sasl_check_extensions(m, len, pos, "ve")) != NULL)
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
                     lx_sasl_mech_name(c->mech));
      if (server_first(c, in, len) != LX_SASL_OK) return LX_SASL_FAIL;
      break;
    case C_FINAL_SENT: /* server-final sent as a challenge */
      if (server_final(c, in, len) != LX_SASL_OK) return LX_SASL_FAIL;
      lx_sb_clear(&c->out);
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
  lx_sb_clear(&c->out);
  lx_sb_clear(&c->pass); /* the keys are all a reconnect needs */
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
