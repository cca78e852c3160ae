/*
 * sasl_server.c - the SCRAM server of the SASL engine (see sasl.h;
 * RFC 5802, RFC 7677): channel binding and downgrade checks, constant-time
 * proof checks, and fake credentials for an unknown user, so that it is
 * answered exactly as a wrong password. The parsing rules and the other
 * decisions are in the header of sasl.c.
 *
 * Ownership: everything a server exchange holds (its secret, the user's
 * credentials) is in the sbufs and arrays of its struct, wiped by
 * lx_scram_server_free().
 */
#include "lx.h"
#include "sasl_int.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#define FAKE_SALT_MAX 64    /* one HMAC-SHA-512 output */

/* ---- SCRAM server -------------------------------------------------------- */

enum { S_INIT, S_NEED_CREDS, S_FIRST_SENT, S_DONE, S_FAILED };

struct lx_scram_server {
  int mech, hash, plus, offers_plus, state, fake;
  size_t hlen, ncb, fake_salt_len;
  sbuf cb_type[LX_SASL_MAX_CB], cb_data[LX_SASL_MAX_CB];
  sbuf secret, realm, given_nonce, ssdp;
  unsigned long fake_iter;
  int cb_sel;      /* the binding the client chose with p=, or -1 */
  sbuf user;       /* SASLprep'd username */
  sbuf gs2;        /* the client's gs2 header, as received */
  sbuf nonce;      /* the client nonce, then client + server nonce */
  sbuf auth;       /* AuthMessage, built up */
  sbuf out;
  lx_scram_creds creds;
  const char *cond;
  const char *server_error; /* RFC 5802 §7 server-error-value, or NULL */
  char err[256];
};

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
    if (!lx_sb_put(out, &c, 1)) return -1;
  }
  return 1;
}

static int sfail(lx_scram_server *s, const char *cond, const char *fmt, ...)
  LX_PRINTF(3, 4);
static int sfail(lx_scram_server *s, const char *cond, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->err, sizeof s->err, fmt, ap);
  va_end(ap);
  s->cond = cond;
  s->server_error = NULL;
  s->state = S_FAILED;
  lx_sb_clear(&s->out);
  return LX_SASL_FAIL;
}

void lx_scram_server_free(lx_scram_server *s) {
  size_t i;
  if (!s) return;
  for (i = 0; i < LX_SASL_MAX_CB; i++) {
    lx_sb_free(&s->cb_type[i]);
    lx_sb_free(&s->cb_data[i]);
  }
  lx_sb_free(&s->secret);
  lx_sb_free(&s->realm);
  lx_sb_free(&s->given_nonce);
  lx_sb_free(&s->ssdp);
  lx_sb_free(&s->user);
  lx_sb_free(&s->gs2);
  lx_sb_free(&s->nonce);
  lx_sb_free(&s->auth);
  lx_sb_free(&s->out);
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
  if (o->nonce.len && (o->nonce.len > MAX_NONCE ||
                       !lx_sasl_printable(o->nonce.p, o->nonce.len)))
    return *err = "the nonce must be printable ASCII without ','", NULL;
  if (o->ssdp.len && (o->ssdp.len > MAX_NONCE ||
                      !lx_sasl_printable(o->ssdp.p, o->ssdp.len)))
    return *err = "the ssdp value must be printable ASCII without ','", NULL;
  for (i = 0; i < o->ncb; i++)
    if (!lx_sasl_cb_name_ok(o->cb[i].type.p, o->cb[i].type.len) ||
        !o->cb[i].data.p || o->cb[i].data.len == 0)
      return *err = "bad channel binding type or data", NULL;
  s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->mech = o->mech;
  s->hash = lx_sasl_mech_hash(o->mech);
  s->hlen = lx_sasl_hash_len(s->hash);
  s->plus = lx_sasl_mech_plus(o->mech);
  s->offers_plus = o->offers_plus || s->plus;
  s->ncb = o->ncb;
  s->cb_sel = -1;
  s->fake_iter = o->fake_iterations ? o->fake_iterations : LX_SASL_MIN_ITER;
  s->fake_salt_len = o->fake_salt_len ? o->fake_salt_len : 16;
  for (i = 0; i < o->ncb; i++)
    ok = ok && lx_sb_put(&s->cb_type[i], o->cb[i].type.p, o->cb[i].type.len) &&
         lx_sb_put(&s->cb_data[i], o->cb[i].data.p, o->cb[i].data.len);
  ok = ok && lx_sb_put(&s->secret, o->secret.p, o->secret.len) &&
       lx_sb_put(&s->realm, o->realm.p ? o->realm.p : "", o->realm.p ? o->realm.len : 0) &&
       lx_sb_put(&s->given_nonce, o->nonce.p ? o->nonce.p : "", o->nonce.len) &&
       lx_sb_put(&s->ssdp, o->ssdp.p ? o->ssdp.p : "", o->ssdp.len) &&
       lx_sb_empty(&s->out);
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

  if ((e = lx_sasl_msg_check(m, len)) != NULL)
    return sfail(s, "malformed-request", "client-first: %s", e);
  flag = m[0];
  /* gs2-cbind-flag "," [authzid] "," */
  if ((flag == 'n' || flag == 'y') && len > 1 && m[1] == ',') {
    pos = 2;
  } else if (flag == 'p' && len > 1 && m[1] == '=' &&
             (comma = memchr(m + 2, ',', len - 2)) != NULL) {
    pos = (size_t)(comma - m) + 1;
    cbl = pos - 3;
    if (!lx_sasl_cb_name_ok(m + 2, cbl))
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
      lx_sb_free(&authz);
      return r < 0 ? sfail(s, "undefined-condition", "%s", OOM)
                   : sfail(s, "malformed-request", "client-first: bad authzid");
    }
  } else if (pos >= len || m[pos] != ',') {
    return sfail(s, "malformed-request", "client-first: bad gs2 header");
  } else {
    pos++;
  }
  if (!lx_sb_put(&s->gs2, m, pos)) {
    lx_sb_free(&authz);
    return sfail(s, "undefined-condition", "%s", OOM);
  }

  /* channel binding: flag, mechanism and what this server offers agree */
  e = NULL;
  if (flag == 'p' && !s->plus)
    e = "client-first: channel binding (p=) with a mechanism without -PLUS";
  else if (flag != 'p' && s->plus)
    e = "client-first: a -PLUS mechanism without channel binding";
  if (e) {
    lx_sb_free(&authz);
    return sfail(s, "malformed-request", "%s", e);
  }
  /* RFC 5802 §6: 'y' says "I can bind, but you offered no -PLUS"; a
   * server that offered it must fail, as a man in the middle stripped it */
  if (flag == 'y' && s->offers_plus) {
    lx_sb_free(&authz);
    sfail(s, "not-authorized", "channel binding downgrade: the client "
          "says the server does not support channel binding, but it does");
    s->server_error = "server-does-support-channel-binding";
    return LX_SASL_FAIL;
  }
  if (flag == 'p') {
    for (i = 0; i < s->ncb; i++)
      if (s->cb_type[i].len == cbl && memcmp(s->cb_type[i].p, m + 2, cbl) == 0)
        break;
    if (i == s->ncb) {
      lx_sb_free(&authz);
      sfail(s, "not-authorized", "unsupported channel binding type");
      s->server_error = "unsupported-channel-binding-type";
      return LX_SASL_FAIL;
    }
    s->cb_sel = (int)i;
  }

  /* client-first-message-bare: [m=,] n=saslname, r=nonce [, extensions] */
  if (!lx_sb_put(&s->auth, m + pos, len - pos)) {
    lx_sb_free(&authz);
    return sfail(s, "undefined-condition", "%s", OOM);
  }
  e = NULL;
  if (lx_sasl_next_attr(m, len, &pos, &name, &v, &vl) != 1)
    e = "malformed attribute";
  else if (name == 'm') e = "reserved attribute m= (mandatory extension)";
  else if (name != 'n' || vl == 0) e = "does not start with n=";
  else if ((r = unescape_name(v, vl, &raw)) <= 0) e = r < 0 ? OOM : "bad username";
  if (!e) {
    rs.p = raw.p;
    rs.len = raw.len;
    if (lx_sasl_prep_into(&s->user, rs, stringprep_saslprep) != NULL)
      e = "the username cannot be SASLprep'd";
  }
  if (!e && (lx_sasl_next_attr(m, len, &pos, &name, &v, &vl) != 1 ||
             name != 'r' || vl == 0 || vl > MAX_NONCE ||
             !lx_sasl_printable(v, vl)))
    e = "missing or invalid r= (nonce)";
  if (!e && !lx_sb_put(&s->nonce, v, vl)) e = OOM;
  if (!e) e = lx_sasl_check_extensions(m, len, pos, "nr");
  lx_sb_free(&raw);
  if (e) {
    lx_sb_free(&authz);
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
    lx_sb_free(&authz);
    return sfail(s, "invalid-authzid", "the authorization identity is not "
                 "the authenticated user");
  }
  lx_sb_free(&authz);
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
    ok = lx_sb_puts(&d, "lxmpp scram unknown user\n") &&
         lx_sb_puts(&d, labels[i]) &&
         lx_sb_put(&d, "\n", 1) && lx_sb_puts(&d, lx_sasl_hash_name(s->hash)) &&
         lx_sb_put(&d, "\n", 1) && lx_sb_put(&d, s->user.p, s->user.len) &&
         lx_sasl_hmac(LX_SASL_SHA512, (unsigned char *)s->secret.p,
                      s->secret.len, d.p, d.len, outb[i]);
    lx_sb_free(&d);
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
  if ((e = lx_sasl_make_nonce(&s->nonce, s->given_nonce.len ?
                      (lx_sasl_str){s->given_nonce.p, s->given_nonce.len}
                      : (lx_sasl_str){NULL, 0})) != NULL)
    return sfail(s, "undefined-condition", "%s", e);
  snprintf(num, sizeof num, "%lu", s->creds.iterations);
  lx_sb_clear(&s->out);
  if (!lx_sb_puts(&s->out, "r=") ||
      !lx_sb_put(&s->out, s->nonce.p, s->nonce.len) ||
      !lx_sb_puts(&s->out, ",s=") ||
      !lx_sb_put_b64(&s->out, s->creds.salt, s->creds.salt_len) ||
      !lx_sb_puts(&s->out, ",i=") || !lx_sb_puts(&s->out, num) ||
      /* XEP-0474: inside the AuthMessage, so the proofs sign it */
      (s->ssdp.len && (!lx_sb_puts(&s->out, ",h=") ||
                       !lx_sb_put(&s->out, s->ssdp.p, s->ssdp.len))) ||
      !lx_sb_puts(&s->auth, ",") || !lx_sb_put(&s->auth, s->out.p, s->out.len))
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

  if ((e = lx_sasl_msg_check(m, len)) != NULL)
    return sfail(s, "malformed-request", "client-final: %s", e);
  if (lx_sasl_next_attr(m, len, &pos, &name, &v, &vl) != 1)
    return sfail(s, "malformed-request", "client-final: malformed attribute");
  if (name == 'm')
    return sfail(s, "malformed-request", "client-final: reserved attribute m=");
  if (name != 'c' || vl == 0)
    return sfail(s, "malformed-request", "client-final: does not start with c=");
  if (lx_b64_decode(v, vl, dec, &dl) != 0)
    return sfail(s, "incorrect-encoding", "client-final: channel binding is "
                 "not valid base64");
  /* expected: the gs2 header, plus our binding data with p= */
  if (!lx_sb_put(&expect, s->gs2.p, s->gs2.len) ||
      (s->cb_sel >= 0 && !lx_sb_put(&expect, s->cb_data[s->cb_sel].p,
                                 s->cb_data[s->cb_sel].len))) {
    lx_sb_free(&expect);
    return sfail(s, "undefined-condition", "%s", OOM);
  }
  cb_ok = dl == expect.len && CRYPTO_memcmp(dec, expect.p, dl) == 0;
  lx_sb_free(&expect);
  if (!cb_ok) {
    sfail(s, "not-authorized", "channel binding does not match");
    s->server_error = "channel-bindings-dont-match";
    return LX_SASL_FAIL;
  }
  if (lx_sasl_next_attr(m, len, &pos, &name, &v, &vl) != 1 || name != 'r')
    return sfail(s, "malformed-request", "client-final: missing r= (nonce)");
  nonce_ok = vl == s->nonce.len && CRYPTO_memcmp(v, s->nonce.p, vl) == 0;
  if (!nonce_ok)
    return sfail(s, "not-authorized", "client-final: nonce mismatch");
  /* extensions until p=, which must be last */
  for (;;) {
    size_t at = pos;
    r = lx_sasl_next_attr(m, len, &pos, &name, &v, &vl);
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
  ok = lx_sb_puts(&s->auth, ",") && lx_sb_put(&s->auth, m, proof_at - 1) &&
       lx_sasl_hmac(s->hash, s->creds.stored_key, s->hlen, s->auth.p,
                    s->auth.len, sig);
  for (i = 0; ok && i < s->hlen; i++) ckey[i] = proof[i] ^ sig[i];
  ok = ok && lx_sasl_digest(s->hash, ckey, s->hlen, stored);
  if (!ok) {
    r = sfail(s, "undefined-condition", "crypto failure");
  } else {
    int match = CRYPTO_memcmp(stored, s->creds.stored_key, s->hlen) == 0;
    if (!match || s->fake) {
      r = sfail(s, "not-authorized", "authentication failed");
    } else {
      ok = lx_sasl_hmac(s->hash, s->creds.server_key, s->hlen, s->auth.p,
                        s->auth.len, sig);
      lx_sb_clear(&s->out);
      if (!ok || !lx_sb_puts(&s->out, "v=") ||
          !lx_sb_put_b64(&s->out, sig, s->hlen))
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

const char *lx_scram_server_error_value(const lx_scram_server *s) {
  return s->state == S_FAILED ? s->server_error : NULL;
}

const char *lx_scram_server_user(const lx_scram_server *s, size_t *len) {
  if (s->state != S_DONE) return NULL;
  if (len) *len = s->user.len;
  return s->user.p;
}
