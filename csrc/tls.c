/*
 * tls.c - the TLS engine (see tls.h): OpenSSL 3 over two memory BIOs.
 *
 * Verification happens inside OpenSSL's own chain check: cert_verify_cb()
 * wraps X509_verify_cert() to add what OpenSSL does not know about XMPP (an
 * id-on-xmppAddr SAN equal to the domain is an identity too, RFC 6120
 * §13.7.1.4; no CN fallback once any SAN is present, RFC 6125 §6.4.4).
 * Renegotiation is refused twice: SSL_OP_NO_RENEGOTIATION makes OpenSSL
 * decline, and msg_cb() notices the attempt so the session fails loudly
 * instead of carrying on with a peer that misbehaves.
 *
 * Resumption (tls.h): a server issues one stateless ticket per handshake,
 * sealed with the keys OpenSSL draws at random for each SSL_CTX (a server
 * context's tickets die with it; srv:stop()/start() makes new keys), and
 * keeps no session cache. A client keeps the newest ticket of a verified
 * handshake (new_ticket()), tied to its context and peer domain.
 */
#include "lx.h"
#include "tls.h"

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A certificate served to clients that ask for `name` by SNI. */
typedef struct sni_entry {
  char *name;
  X509 *cert;
  EVP_PKEY *key;
  STACK_OF(X509) *chain;
} sni_entry;

struct lx_tls_ctx {
  SSL_CTX *ssl;
  int refs;               /* the creator's and one per session */
  int server;
  int has_cert;           /* a default certificate is loaded */
  unsigned char *alpn;    /* ALPN list in wire format (length-prefixed) */
  size_t alpn_len;
  sni_entry *sni;
  size_t nsni;
};

/* A client's ticket: the session, and what it may be offered to. */
struct lx_tls_ticket {
  SSL_SESSION *sess;      /* one reference */
  lx_tls_ctx *ctx;        /* referenced: the pointer stays unique */
  char *domain;
};

struct lx_tls {
  lx_tls_ctx *ctx;        /* referenced */
  SSL *ssl;               /* owns rbio and wbio */
  BIO *rbio, *wbio;       /* ciphertext in (from the peer) and out */
  char *domain;           /* client: the identity to verify */
  SSL_SESSION *ticket;    /* client: the newest ticket kept (one reference) */
  int done;               /* the handshake finished */
  int peer_closed;        /* close_notify received */
  int reneg;              /* the peer tried to renegotiate */
  int failed;
  const char *cond;
  char err[LX_TLS_ERR_MAX];
};

static void fmt(char *buf, size_t n, const char *f, ...) {
  va_list ap;
  if (!buf || !n) return;
  va_start(ap, f);
  vsnprintf(buf, n, f, ap);
  va_end(ap);
}

/* The reason of the oldest queued OpenSSL error, then an empty queue. */
static const char *ossl_reason(const char *dflt) {
  unsigned long e = ERR_get_error();
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  ERR_clear_error();
  return r ? r : dflt;
}

/* Never prompt for a passphrase on the terminal: encrypted keys fail. */
static int no_password(char *buf, int size, int rw, void *u) {
  (void)buf; (void)size; (void)rw; (void)u;
  return -1;
}

/* ---- certificates ---- */

/* Reads a PEM chain (leaf first) and its key; the caller owns the results. */
static int load_pair(const char *certfile, const char *keyfile, X509 **x,
                     EVP_PKEY **pk, STACK_OF(X509) **chain, char *err,
                     size_t errlen) {
  BIO *b;
  X509 *ca;
  *x = NULL, *pk = NULL, *chain = NULL;
  if (!(b = BIO_new_file(certfile, "r"))) {
    fmt(err, errlen, "cannot read certificate file %s: %s", certfile,
        ossl_reason("cannot open"));
    return 0;
  }
  *x = PEM_read_bio_X509(b, NULL, no_password, NULL);
  *chain = sk_X509_new_null();
  while (*x && *chain && (ca = PEM_read_bio_X509(b, NULL, no_password, NULL)))
    if (!sk_X509_push(*chain, ca)) X509_free(ca);
  BIO_free(b);
  ERR_clear_error();                 /* the end of the file is an "error" */
  if (!*x || !*chain) {
    fmt(err, errlen, "no certificate in %s", certfile);
    goto fail;
  }
  if (!keyfile) keyfile = certfile;
  if ((b = BIO_new_file(keyfile, "r")) != NULL) {
    *pk = PEM_read_bio_PrivateKey(b, NULL, no_password, NULL);
    BIO_free(b);
  }
  if (!*pk) {
    fmt(err, errlen, "cannot read private key file %s: %s", keyfile,
        ossl_reason("no key found"));
    goto fail;
  }
  if (!X509_check_private_key(*x, *pk)) {
    fmt(err, errlen, "certificate %s and key %s do not match", certfile,
        keyfile);
    goto fail;
  }
  return 1;
fail:
  ERR_clear_error();
  X509_free(*x);
  EVP_PKEY_free(*pk);
  sk_X509_pop_free(*chain, X509_free);
  *x = NULL, *pk = NULL, *chain = NULL;
  return 0;
}

/* A self-signed EC P-256 certificate for domain, valid for a year, with the
 * domain as its DNS SAN (and CN when it fits), installed in ctx. */
static int self_signed(SSL_CTX *ctx, const char *domain, char *err,
                       size_t errlen) {
  EVP_PKEY *pk = NULL;
  X509 *x = NULL;
  BIGNUM *bn = NULL;
  GENERAL_NAMES *gens = NULL;
  GENERAL_NAME *g = NULL;
  ASN1_IA5STRING *ia5 = NULL;
  X509_NAME *name;
  const char *p;
  int ok = 0;
  for (p = domain; *p; p++)
    if (*p <= ' ' || *p > '~') break;
  if (!*domain || *p) {
    fmt(err, errlen, "domain for a self-signed certificate must be ASCII");
    return 0;
  }
  if (!(pk = EVP_EC_gen("P-256")) || !(x = X509_new()) || !(bn = BN_new()) ||
      !(gens = GENERAL_NAMES_new()) || !(g = GENERAL_NAME_new()) ||
      !(ia5 = ASN1_IA5STRING_new()))
    goto done;
  if (!ASN1_STRING_set(ia5, domain, -1)) goto done;
  GENERAL_NAME_set0_value(g, GEN_DNS, ia5);
  ia5 = NULL;                                       /* g owns it */
  if (!sk_GENERAL_NAME_push(gens, g)) goto done;
  g = NULL;                                         /* gens owns it */
  name = X509_get_subject_name(x);
  if (!X509_set_version(x, 2) || !BN_rand(bn, 63, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
      !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) ||
      !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
      !X509_gmtime_adj(X509_getm_notAfter(x), 365L * 24 * 3600) ||
      !X509_set_pubkey(x, pk) ||
      (strlen(domain) <= 64 &&
       !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                   (const unsigned char *)domain, -1, -1, 0)) ||
      !X509_set_issuer_name(x, name) ||
      !X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) ||
      !X509_sign(x, pk, EVP_sha256()) ||
      !SSL_CTX_use_cert_and_key(ctx, x, pk, NULL, 1))
    goto done;
  ok = 1;
done:
  if (!ok)
    fmt(err, errlen, "cannot make a self-signed certificate: %s",
        ossl_reason("out of memory"));
  ASN1_IA5STRING_free(ia5);
  GENERAL_NAME_free(g);
  GENERAL_NAMES_free(gens);
  BN_free(bn);
  X509_free(x);
  EVP_PKEY_free(pk);
  return ok;
}

/* 1 when x has an id-on-xmppAddr SAN equal (ASCII case-insensitively) to
 * domain: a bare-domain JID is an XMPP service identity (RFC 6120). */
static int has_xmppaddr(X509 *x, const char *domain) {
  GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
  size_t n = strlen(domain);
  int i, found = 0;
  for (i = 0; gens && i < sk_GENERAL_NAME_num(gens) && !found; i++) {
    const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
    const ASN1_TYPE *v;
    if (g->type != GEN_OTHERNAME ||
        OBJ_obj2nid(g->d.otherName->type_id) != NID_XmppAddr)
      continue;
    v = g->d.otherName->value;
    if (v && v->type == V_ASN1_UTF8STRING &&
        (size_t)ASN1_STRING_length(v->value.utf8string) == n &&
        strncasecmp((const char *)ASN1_STRING_get0_data(v->value.utf8string),
                    domain, n) == 0)
      found = 1;                   /* an embedded NUL never compares equal */
  }
  GENERAL_NAMES_free(gens);
  return found;
}

/* OpenSSL's chain verification with XMPP's identity rules added. The
 * X509_STORE_CTX holds a copy of the session's verify parameters, so changing
 * them here affects this one verification only. */
static int cert_verify_cb(X509_STORE_CTX *xs, void *arg) {
  SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
  lx_tls *t = ssl ? SSL_get_app_data(ssl) : NULL;
  X509 *leaf = X509_STORE_CTX_get0_cert(xs);
  X509_VERIFY_PARAM *p = X509_STORE_CTX_get0_param(xs);
  (void)arg;
  if (t && t->domain && leaf) {
    if (has_xmppaddr(leaf, t->domain)) {
      X509_VERIFY_PARAM_set1_host(p, NULL, 0);    /* identity established */
      X509_VERIFY_PARAM_set1_ip(p, NULL, 0);
    } else if (X509_get_ext_by_NID(leaf, NID_subject_alt_name, -1) >= 0) {
      X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS |
                                             X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
    }
    ERR_clear_error();
  }
  return X509_verify_cert(xs);
}

/* Server asking for optional client certificates: the result is recorded
 * (lx_tls_verified), never fatal; SASL EXTERNAL decides what it means. */
static int accept_any(int ok, X509_STORE_CTX *xs) {
  (void)ok; (void)xs;
  return 1;
}

/* ---- context callbacks ---- */

/* Sees every handshake message; after the first handshake of a TLS <= 1.2
 * session, a HelloRequest or ClientHello is a renegotiation attempt. (TLS
 * 1.3 has no renegotiation; its post-handshake messages are fine.) */
static void msg_cb(int write_p, int version, int content_type, const void *buf,
                   size_t len, SSL *ssl, void *arg) {
  lx_tls *t = SSL_get_app_data(ssl);
  const unsigned char *m = buf;
  (void)version; (void)arg;
  if (!t || write_p || !t->done || content_type != SSL3_RT_HANDSHAKE || len < 1 ||
      SSL_version(ssl) >= TLS1_3_VERSION)
    return;
  if (m[0] == SSL3_MT_HELLO_REQUEST || m[0] == SSL3_MT_CLIENT_HELLO) t->reneg = 1;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg) {
  lx_tls_ctx *c = arg;
  unsigned char *sel;
  (void)ssl;
  if (SSL_select_next_proto(&sel, outlen, c->alpn, (unsigned)c->alpn_len, in,
                            inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;    /* no common protocol: carry on without */
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

static int sni_select(SSL *ssl, int *alert, void *arg) {
  lx_tls_ctx *c = arg;
  const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  size_t i;
  for (i = 0; name && i < c->nsni; i++) {
    sni_entry *e = &c->sni[i];
    if (strcasecmp(name, e->name) != 0) continue;
    if (SSL_use_cert_and_key(ssl, e->cert, e->key, e->chain, 1)) return SSL_TLSEXT_ERR_OK;
    *alert = SSL_AD_INTERNAL_ERROR;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  if (c->has_cert) return SSL_TLSEXT_ERR_OK;
  *alert = SSL_AD_UNRECOGNIZED_NAME;
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* "a,b" -> "\1a\1b"; NULL if a name is empty or longer than 255 bytes. */
static unsigned char *alpn_wire(const char *list, size_t *wlen) {
  size_t n = strlen(list), i, start = 0, o = 0;
  unsigned char *w = malloc(n + 1);
  for (i = 0; w && i <= n; i++) {
    if (i < n && list[i] != ',') continue;
    if (i == start || i - start > 255) {
      free(w);
      return NULL;
    }
    w[o++] = (unsigned char)(i - start);
    memcpy(w + o, list + start, i - start);
    o += i - start;
    start = i + 1;
  }
  *wlen = o;
  return w;
}

/* Client: OpenSSL got a session that can be resumed (a TLS 1.3 ticket
 * after the handshake, or a TLS 1.2 session at its end). Kept, replacing the
 * previous one, only when the peer's chain and identity verified. Returns 1
 * when we took the reference. */
static int new_ticket(SSL *ssl, SSL_SESSION *sess) {
  lx_tls *t = SSL_get_app_data(ssl);
  if (!t || t->failed || !SSL_SESSION_is_resumable(sess) ||
      !SSL_get0_peer_certificate(ssl) || SSL_get_verify_result(ssl) != X509_V_OK)
    return 0;
  SSL_SESSION_free(t->ticket);
  t->ticket = sess;
  return 1;
}

/* ---- context ---- */

void lx_tls_opts_default(lx_tls_opts *o) { memset(o, 0, sizeof *o); }

static void ctx_unref(lx_tls_ctx *c) {
  size_t i;
  if (!c || --c->refs > 0) return;
  SSL_CTX_free(c->ssl);
  for (i = 0; i < c->nsni; i++) {
    free(c->sni[i].name);
    X509_free(c->sni[i].cert);
    EVP_PKEY_free(c->sni[i].key);
    sk_X509_pop_free(c->sni[i].chain, X509_free);
  }
  free(c->sni);
  free(c->alpn);
  free(c);
}

void lx_tls_ctx_free(lx_tls_ctx *c) { ctx_unref(c); }

lx_tls_ctx *lx_tls_ctx_new(const lx_tls_opts *o, char *err, size_t errlen) {
  lx_tls_ctx *c = calloc(1, sizeof *c);
  X509 *x;
  EVP_PKEY *pk;
  STACK_OF(X509) *chain;
  ERR_clear_error();
  if (!c || !(c->ssl = SSL_CTX_new(o->server ? TLS_server_method()
                                             : TLS_client_method()))) {
    fmt(err, errlen, "cannot create a TLS context: %s", ossl_reason("out of memory"));
    free(c);
    return NULL;
  }
  c->refs = 1;
  c->server = o->server;
  SSL_CTX_set_min_proto_version(c->ssl, TLS1_2_VERSION);
  if (o->max_version == LX_TLS_1_2) SSL_CTX_set_max_proto_version(c->ssl, TLS1_2_VERSION);
  if (o->no_ems) SSL_CTX_set_options(c->ssl, SSL_OP_NO_EXTENDED_MASTER_SECRET);
  SSL_CTX_set_options(c->ssl, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  /* never a server-side session cache: resumption is by stateless tickets
   * only, so a stream holds no state once it is freed */
  SSL_CTX_set_session_cache_mode(c->ssl, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_max_early_data(c->ssl, 0);          /* no 0-RTT: replayable */
  if (o->no_resumption) {
    SSL_CTX_set_options(c->ssl, SSL_OP_NO_TICKET);
    if (o->server) SSL_CTX_set_num_tickets(c->ssl, 0);
  } else if (o->server) {
    /* one ticket per handshake (a client resumes its latest only); the
     * session id context makes resumption possible with client
     * certificates requested (cafile) */
    SSL_CTX_set_num_tickets(c->ssl, 1);
    SSL_CTX_set_timeout(c->ssl, LX_TLS_TICKET_LIFETIME);
    SSL_CTX_set_session_id_context(c->ssl, (const unsigned char *)"lxmpp", 5);
  } else {
    SSL_CTX_set_session_cache_mode(c->ssl, SSL_SESS_CACHE_CLIENT |
                                               SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(c->ssl, new_ticket);
  }
  SSL_CTX_set_mode(c->ssl, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_default_passwd_cb(c->ssl, no_password);
  SSL_CTX_set_msg_callback(c->ssl, msg_cb);
  SSL_CTX_set_cert_verify_callback(c->ssl, cert_verify_cb, NULL);

  if (!o->server || o->cafile) {
    if (o->cafile ? !SSL_CTX_load_verify_locations(c->ssl, o->cafile, NULL)
                  : !SSL_CTX_set_default_verify_paths(c->ssl)) {
      fmt(err, errlen, "cannot load CA file %s: %s",
          o->cafile ? o->cafile : "(system)", ossl_reason("unreadable"));
      goto fail;
    }
    if (o->server) SSL_CTX_set_verify(c->ssl, SSL_VERIFY_PEER, accept_any);
    else SSL_CTX_set_verify(c->ssl, o->insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
  }
  if (o->alpn) {
    if (!(c->alpn = alpn_wire(o->alpn, &c->alpn_len))) {
      fmt(err, errlen, "bad ALPN protocol list \"%s\"", o->alpn);
      goto fail;
    }
    if (o->server) SSL_CTX_set_alpn_select_cb(c->ssl, alpn_select, c);
    else if (SSL_CTX_set_alpn_protos(c->ssl, c->alpn, (unsigned)c->alpn_len) != 0) {
      fmt(err, errlen, "cannot set ALPN: %s", ossl_reason("out of memory"));
      goto fail;
    }
  }
  if (o->cert) {
    if (!load_pair(o->cert, o->key, &x, &pk, &chain, err, errlen)) goto fail;
    c->has_cert = SSL_CTX_use_cert_and_key(c->ssl, x, pk, chain, 1);
    X509_free(x);
    EVP_PKEY_free(pk);
    sk_X509_pop_free(chain, X509_free);
    if (!c->has_cert) {
      fmt(err, errlen, "cannot use certificate %s: %s", o->cert, ossl_reason("refused"));
      goto fail;
    }
  } else if (o->server && o->domain) {
    if (!self_signed(c->ssl, o->domain, err, errlen)) goto fail;
    c->has_cert = 1;
  }
  if (o->server) {
    SSL_CTX_set_tlsext_servername_callback(c->ssl, sni_select);
    SSL_CTX_set_tlsext_servername_arg(c->ssl, c);
  }
  return c;
fail:
  ctx_unref(c);
  return NULL;
}

int lx_tls_ctx_add_sni(lx_tls_ctx *c, const char *name, const char *cert,
                       const char *key, char *err, size_t errlen) {
  sni_entry e, *grown;
  if (!c->server) {
    fmt(err, errlen, "SNI certificates are for server contexts");
    return 0;
  }
  ERR_clear_error();
  if (!load_pair(cert, key, &e.cert, &e.key, &e.chain, err, errlen)) return 0;
  e.name = strdup(name);
  grown = e.name ? realloc(c->sni, (c->nsni + 1) * sizeof *c->sni) : NULL;
  if (!grown) {
    fmt(err, errlen, "out of memory");
    free(e.name);
    X509_free(e.cert);
    EVP_PKEY_free(e.key);
    sk_X509_pop_free(e.chain, X509_free);
    return 0;
  }
  c->sni = grown;
  c->sni[c->nsni++] = e;
  return 1;
}

/* ---- session ---- */

lx_tls *lx_tls_new(lx_tls_ctx *c, const char *peer_domain) {
  lx_tls *t;
  if (!c->server && (!peer_domain || !*peer_domain)) return NULL;
  ERR_clear_error();
  if (!(t = calloc(1, sizeof *t))) return NULL;
  if (!(t->ssl = SSL_new(c->ssl))) goto fail;
  t->rbio = BIO_new(BIO_s_mem());
  t->wbio = BIO_new(BIO_s_mem());
  if (!t->rbio || !t->wbio) {
    BIO_free(t->rbio);
    BIO_free(t->wbio);
    goto fail;
  }
  BIO_set_mem_eof_return(t->rbio, -1);  /* empty means "wait", not EOF */
  SSL_set_bio(t->ssl, t->rbio, t->wbio);  /* ssl owns both now */
  SSL_set_app_data(t->ssl, t);
  if (c->server) {
    SSL_set_accept_state(t->ssl);
  } else {
    X509_VERIFY_PARAM *p = SSL_get0_param(t->ssl);
    char ip[64];
    size_t n = strlen(peer_domain);
    if (!(t->domain = strdup(peer_domain))) goto fail;
    SSL_set_connect_state(t->ssl);
    X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (peer_domain[0] == '[' && peer_domain[n - 1] == ']' && n - 2 < sizeof ip) {
      memcpy(ip, peer_domain + 1, n - 2);        /* an IPv6 literal domain */
      ip[n - 2] = '\0';
    } else {
      fmt(ip, sizeof ip, "%s", n < sizeof ip ? peer_domain : "");
    }
    if (X509_VERIFY_PARAM_set1_ip_asc(p, ip)) {
      /* an IP literal: no SNI (RFC 6066 §3), matched against IP SANs */
    } else if (!SSL_set_tlsext_host_name(t->ssl, peer_domain) ||
               !X509_VERIFY_PARAM_set1_host(p, peer_domain, 0)) {
      goto fail;
    }
    ERR_clear_error();
  }
  t->ctx = c;
  c->refs++;
  return t;
fail:
  ERR_clear_error();
  SSL_free(t->ssl);
  free(t->domain);
  free(t);
  return NULL;
}

void lx_tls_free(lx_tls *t) {
  if (!t) return;
  SSL_SESSION_free(t->ticket);
  SSL_free(t->ssl);
  free(t->domain);
  ctx_unref(t->ctx);
  free(t);
}

static int fail(lx_tls *t, const char *cond, const char *f, ...) {
  va_list ap;
  if (t->failed) return LX_TLS_ERROR;      /* keep the first reason */
  va_start(ap, f);
  vsnprintf(t->err, sizeof t->err, f, ap);
  va_end(ap);
  t->failed = 1;
  t->cond = cond;
  return LX_TLS_ERROR;
}

static int fail_reneg(lx_tls *t) {
  ERR_clear_error();
  return fail(t, "tls-failed", "TLS failed: the peer tried to renegotiate "
                               "(refused)");
}

/* Turns the result rc of an SSL_* call into a status, failing the session
 * with the reason OpenSSL queued (a refused certificate is told apart). */
static int result(lx_tls *t, int rc, const char *what) {
  int e = SSL_get_error(t->ssl, rc);
  unsigned long q, first = 0;
  int verify = 0;
  long vr;
  const char *reason;
  if (t->reneg) return fail_reneg(t);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return LX_TLS_WANT;
  if (e == SSL_ERROR_ZERO_RETURN) return LX_TLS_CLOSED;
  while ((q = ERR_get_error()) != 0) {
    if (!first) first = q;
    if (ERR_GET_LIB(q) == ERR_LIB_SSL &&
        ERR_GET_REASON(q) == SSL_R_CERTIFICATE_VERIFY_FAILED)
      verify = 1;
  }
  vr = SSL_get_verify_result(t->ssl);
  if (verify && vr != X509_V_OK)
    return fail(t, "tls-verify-failed", "certificate verification failed%s%s: %s",
                t->domain ? " for " : "", t->domain ? t->domain : "",
                X509_verify_cert_error_string(vr));
  reason = first ? ERR_reason_error_string(first) : NULL;
  if (!reason) reason = e == SSL_ERROR_SYSCALL ? "unexpected end of data" : "unknown error";
  return fail(t, "tls-failed", "%s: %s", what, reason);
}

int lx_tls_recv(lx_tls *t, const void *data, size_t len) {
  size_t w = 0;
  if (len == 0) return 1;
  if (BIO_write_ex(t->rbio, data, len, &w) && w == len) return 1;
  ERR_clear_error();
  fail(t, "tls-failed", "TLS failed: out of memory");
  return 0;
}

int lx_tls_handshake(lx_tls *t) {
  int rc;
  if (t->failed) return LX_TLS_ERROR;
  if (t->done) return LX_TLS_OK;
  ERR_clear_error();
  rc = SSL_do_handshake(t->ssl);
  if (rc == 1) {
    t->done = 1;
    return LX_TLS_OK;
  }
  rc = result(t, rc, "TLS handshake failed");
  return rc == LX_TLS_CLOSED ? fail(t, "tls-failed", "TLS handshake failed: "
                                    "the peer closed the session") : rc;
}

int lx_tls_handshake_done(const lx_tls *t) { return t->done; }

int lx_tls_send(lx_tls *t, const void *data, size_t len) {
  size_t w = 0;
  if (t->failed) return LX_TLS_ERROR;
  if (!t->done) return fail(t, "tls-failed", "TLS send before the handshake finished");
  if (len == 0) return LX_TLS_OK;
  ERR_clear_error();
  if (SSL_write_ex(t->ssl, data, len, &w) == 1 && w == len) return LX_TLS_OK;
  return fail(t, "tls-failed", "TLS send failed: %s", ossl_reason("unknown error"));
}

int lx_tls_read(lx_tls *t, void *buf, size_t cap, size_t *n) {
  int rc;
  *n = 0;
  if (t->failed) return LX_TLS_ERROR;
  if (!t->done) return LX_TLS_WANT;
  if (t->peer_closed) return LX_TLS_CLOSED;
  ERR_clear_error();
  rc = SSL_read_ex(t->ssl, buf, cap, n);
  if (t->reneg) {
    *n = 0;
    return fail_reneg(t);
  }
  if (rc == 1) return LX_TLS_OK;
  *n = 0;
  rc = result(t, rc, "TLS failed");
  if (rc == LX_TLS_CLOSED) t->peer_closed = 1;
  return rc;
}

size_t lx_tls_pending(const lx_tls *t) { return BIO_ctrl_pending(t->wbio); }

size_t lx_tls_take(lx_tls *t, void *buf, size_t cap) {
  size_t n = 0;
  if (cap == 0 || BIO_ctrl_pending(t->wbio) == 0) return 0;
  if (!BIO_read_ex(t->wbio, buf, cap, &n)) n = 0;
  return n;
}

/* A memory BIO that holds no bytes but memory: replaced by an empty one. */
static BIO *fresh_bio(BIO *b) {
  BUF_MEM *m = NULL;
  BIO *n;
  if (BIO_ctrl_pending(b) != 0) return NULL;
  BIO_get_mem_ptr(b, &m);
  if (!m || m->max == 0) return NULL;
  if (!(n = BIO_new(BIO_s_mem()))) {
    ERR_clear_error();
    return NULL;
  }
  BIO_set_mem_eof_return(n, -1);        /* as lx_tls_new's */
  return n;
}

void lx_tls_idle(lx_tls *t) {
  BIO *b;
  if (!t || t->failed || !t->done) return;
  if ((b = fresh_bio(t->rbio))) {
    SSL_set0_rbio(t->ssl, b);             /* frees the old one */
    t->rbio = b;
  }
  if ((b = fresh_bio(t->wbio))) {
    SSL_set0_wbio(t->ssl, b);
    t->wbio = b;
  }
}

int lx_tls_shutdown(lx_tls *t) {
  if (t->failed || !t->done) return LX_TLS_ERROR;
  ERR_clear_error();
  if (SSL_shutdown(t->ssl) >= 0) return LX_TLS_OK;
  ERR_clear_error();
  return LX_TLS_ERROR;
}

const char *lx_tls_error(const lx_tls *t, const char **condition) {
  if (condition) *condition = t->failed ? t->cond : NULL;
  return t->failed ? t->err : NULL;
}

/* ---- resumption ---- */

lx_tls_ticket *lx_tls_ticket_take(lx_tls *t) {
  lx_tls_ticket *k;
  SSL_SESSION *s = SSL_get0_session(t->ssl);
  /* a resumed TLS 1.2 session gets no new ticket (RFC 5077 §3.1: the
   * server may renew it, OpenSSL does when its key changed): the one it
   * resumed may be offered again */
  if (!t->ticket && t->done && !t->failed && t->domain && s && SSL_session_reused(t->ssl) &&
      SSL_version(t->ssl) < TLS1_3_VERSION && SSL_SESSION_is_resumable(s) &&
      lx_tls_verified(t) && (s = SSL_get1_session(t->ssl)) != NULL)
    t->ticket = s;
  if (!t->ticket || t->failed || !t->domain) return NULL;
  if (!(k = calloc(1, sizeof *k)) || !(k->domain = strdup(t->domain))) {
    free(k);
    return NULL;
  }
  /* a copy: OpenSSL marks the session t uses not resumable when t is freed
   * without close_notify (a dropped connection, the very case resumption
   * is for), which no TLS version since 1.1 asks for (RFC 4346 §7.2.1) */
  if (!(k->sess = SSL_SESSION_dup(t->ticket))) {
    ERR_clear_error();
    free(k->domain);
    free(k);
    return NULL;
  }
  SSL_SESSION_free(t->ticket);
  t->ticket = NULL;
  k->ctx = t->ctx;
  k->ctx->refs++;
  return k;
}

int lx_tls_offer(lx_tls *t, const lx_tls_ticket *k) {
  if (!k || t->ctx->server || t->ctx != k->ctx || !t->domain ||
      strcasecmp(t->domain, k->domain) != 0 || t->done || t->failed ||
      !SSL_in_before(t->ssl))
    return 0;
  if (SSL_set_session(t->ssl, k->sess) != 1) {   /* takes its own reference */
    ERR_clear_error();
    return 0;
  }
  return 1;
}

void lx_tls_ticket_free(lx_tls_ticket *k) {
  if (!k) return;
  SSL_SESSION_free(k->sess);
  free(k->domain);
  ctx_unref(k->ctx);
  free(k);
}

int lx_tls_resumed(const lx_tls *t) {
  return t->done && !t->failed && SSL_session_reused(t->ssl);
}

/* ---- queries ---- */

const char *lx_tls_version(const lx_tls *t) {
  return t->done ? SSL_get_version(t->ssl) : NULL;
}

const char *lx_tls_cipher(const lx_tls *t) {
  return t->done ? SSL_get_cipher_name(t->ssl) : NULL;
}

const char *lx_tls_alpn(const lx_tls *t, size_t *len) {
  const unsigned char *p = NULL;
  unsigned n = 0;
  SSL_get0_alpn_selected(t->ssl, &p, &n);
  *len = n;
  return n ? (const char *)p : NULL;
}

const char *lx_tls_server_name(const lx_tls *t) {
  return SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
}

int lx_tls_verified(const lx_tls *t) {
  return t->done && !t->failed && SSL_get0_peer_certificate(t->ssl) &&
         SSL_get_verify_result(t->ssl) == X509_V_OK;
}

int lx_tls_peer_is(const lx_tls *t, const char *domain) {
  X509 *x;
  unsigned flags = X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS;
  int ok;
  if (!domain || !*domain || !lx_tls_verified(t)) return 0;
  x = SSL_get0_peer_certificate(t->ssl);
  if (has_xmppaddr(x, domain)) return 1;
  /* as cert_verify_cb: no CN fallback once any SAN is present */
  if (X509_get_ext_by_NID(x, NID_subject_alt_name, -1) >= 0)
    flags |= X509_CHECK_FLAG_NEVER_CHECK_SUBJECT;
  ok = X509_check_host(x, domain, strlen(domain), flags, NULL) == 1;
  ERR_clear_error();
  return ok;
}

int lx_tls_peer_subject(const lx_tls *t, char *buf, size_t cap) {
  X509 *x = SSL_get0_peer_certificate(t->ssl);
  BIO *b;
  int n;
  if (!x || cap == 0 || !(b = BIO_new(BIO_s_mem()))) return 0;
  X509_NAME_print_ex(b, X509_get_subject_name(x), 0,
                     XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
  n = BIO_read(b, buf, (int)(cap - 1 > 0x7fffffff ? 0x7fffffff : cap - 1));
  buf[n > 0 ? n : 0] = '\0';
  BIO_free(b);
  ERR_clear_error();
  return 1;
}

int lx_tls_channel_binding(lx_tls *t, const char *type, unsigned char *out,
                           size_t *len, const char **why) {
  static const char label[] = "EXPORTER-Channel-Binding";
  *len = 0;
  *why = NULL;
  if (!t->done || t->failed) {
    *why = "no channel binding: the TLS handshake is not finished";
    return 0;
  }
  ERR_clear_error();
  if (strcmp(type, "tls-exporter") == 0) {
    if (SSL_version(t->ssl) < TLS1_3_VERSION) {
      *why = "tls-exporter is only defined here for TLS 1.3 (RFC 9266)";
      return 0;
    }
    if (out && !SSL_export_keying_material(t->ssl, out, 32, label, sizeof label - 1,
                                           NULL, 0, 1)) {
      ERR_clear_error();
      *why = "tls-exporter: the keying material exporter failed";
      return 0;
    }
    *len = 32;
    return 1;
  }
  if (strcmp(type, "tls-server-end-point") == 0) {
    /* RFC 5929 §4.1: the server's certificate, whichever side we are */
    X509 *x = t->ctx->server ? SSL_get_certificate(t->ssl)
                             : SSL_get0_peer_certificate(t->ssl);
    int mdnid = NID_undef;
    unsigned n = 0;
    const EVP_MD *md;
    if (!x) {
      *why = "tls-server-end-point: no server certificate";
      return 0;
    }
    if (!X509_get_signature_info(x, &mdnid, NULL, NULL, NULL) || mdnid == NID_undef) {
      ERR_clear_error();
      *why = "tls-server-end-point is undefined for this certificate's "
             "signature algorithm";
      return 0;
    }
    if (mdnid == NID_md5 || mdnid == NID_sha1) mdnid = NID_sha256;
    md = EVP_get_digestbynid(mdnid);
    if (md && !out) n = (unsigned)EVP_MD_get_size(md);        /* a probe */
    if (!md || (out && !X509_digest(x, md, out, &n)) || n > LX_TLS_CB_MAX) {
      ERR_clear_error();
      *why = "tls-server-end-point: cannot hash the certificate";
      return 0;
    }
    *len = n;
    return 1;
  }
  if (strcmp(type, "tls-unique") == 0) {
    /* RFC 5929 §3.1: the first Finished message of the latest (here: the
     * only, renegotiation is refused) handshake: the client's in a full
     * TLS 1.2 handshake. On TLS 1.2 only with the extended master secret
     * (RFC 7627), without which the triple handshake attack can give two
     * connections the same value, and never on a resumed session. TLS 1.3
     * leaves it undefined (RFC 9266 §1, RFC 8446 appendix C.5); there we
     * give the client Finished, the value OpenSSL's SSL_get_finished(),
     * and so CPython and the clients built on them, give a TLS 1.3 client.
     * docs/server.md ("Channel binding") says why that is safe to accept. */
    int ours;
    size_t n;
    unsigned char fin[LX_TLS_CB_MAX];
    if (!out) out = fin;                     /* a probe: the same checks */
    if (SSL_version(t->ssl) >= TLS1_3_VERSION) {
      if (SSL_session_reused(t->ssl)) {   /* a PSK transcript has no certificate */
        *why = "tls-unique on TLS 1.3 is given for full handshakes only";
        return 0;
      }
    } else {
      if (SSL_get_extms_support(t->ssl) != 1) {
        *why = "tls-unique on TLS 1.2 needs the extended master secret "
               "(RFC 7627)";
        return 0;
      }
      if (SSL_session_reused(t->ssl)) {
        /* the triple handshake attack (RFC 7627 §1) resumes one session
         * on two connections so that their Finished messages match */
        *why = "tls-unique is refused on a resumed TLS 1.2 session";
        return 0;
      }
    }
    ours = !t->ctx->server;      /* a full handshake: the client's */
    n = ours ? SSL_get_finished(t->ssl, out, LX_TLS_CB_MAX)
             : SSL_get_peer_finished(t->ssl, out, LX_TLS_CB_MAX);
    if (n == 0 || n > LX_TLS_CB_MAX) {
      *why = "tls-unique: no Finished message";
      return 0;
    }
    *len = n;
    return 1;
  }
  *why = "unsupported channel binding type (tls-exporter, tls-server-end-point, "
         "tls-unique)";
  return 0;
}
