/*
 * sasl.h - the SASL engine: mechanism choice, SCRAM (RFC 5802, RFC 7677)
 * client and server, PLAIN, EXTERNAL, ANONYMOUS, strict base64, SASLprep.
 *
 * Pure C, no Lua (no lua_State): sasl_lua.c, fuzz/fuzz_sasl.c and C tests
 * drive it alike. It enforces RFC 6120 §6, RFC 5802, RFC 7677: the strongest
 * usable mechanism wins and PLAIN needs TLS; the SCRAM client checks the
 * nonce, bounds the iteration count, refuses the reserved m= attribute and
 * malformed base64, and verifies the server signature (its absence is a
 * failure); the SCRAM server keeps only salted keys, compares in constant
 * time, checks nonce, channel binding and downgrade, and answers an unknown
 * user exactly as a wrong password.
 *
 * Messages in and out are raw bytes: XMPP's base64 framing (and "=" for an
 * empty response, RFC 6120 section 6.4.2) is the caller's job.
 *
 * Secrets: passwords, salted passwords and keys are copied into memory the
 * engine owns and wipes (OPENSSL_cleanse) when it is freed; they are never
 * put in an error message. libidn's SASLprep makes temporary copies of the
 * password it frees without wiping; nothing here can change that.
 *
 * Errors: a failing call returns LX_SASL_FAIL; lx_sasl_*_error() then gives a
 * message for humans and an RFC 6120 section 6.5 SASL condition (a static
 * string): "not-authorized" (authentication itself failed, including a server
 * that cannot prove it knows the password), "malformed-request" (bad
 * syntax), "incorrect-encoding" (bad base64), "mechanism-too-weak" (too few
 * iterations), "invalid-authzid", "encryption-required" (PLAIN without TLS),
 * "credentials-expired" (cached keys no longer match the server's salt), or
 * "undefined-condition" (internal failure: the crypto library failed).
 * LX_SASL_MISUSE is a call out of order: a bug in the caller, not the peer.
 */
#ifndef LXMPP_SASL_H
#define LXMPP_SASL_H

#include "lx.h"

#include <stddef.h>

LX_HIDDEN_BEGIN

enum lx_sasl_mech {
  LX_SASL_NONE = 0,
  LX_SASL_ANONYMOUS,
  LX_SASL_PLAIN,
  LX_SASL_SCRAM_SHA_1,
  LX_SASL_SCRAM_SHA_256,
  LX_SASL_SCRAM_SHA_512,
  LX_SASL_SCRAM_SHA_1_PLUS,
  LX_SASL_SCRAM_SHA_256_PLUS,
  LX_SASL_SCRAM_SHA_512_PLUS,
  LX_SASL_EXTERNAL,
  LX_SASL_NMECH
};

enum lx_sasl_hash { LX_SASL_SHA1 = 0, LX_SASL_SHA256, LX_SASL_SHA512 };

enum lx_sasl_rc {
  LX_SASL_MISUSE = -2, /* called out of order (a caller bug) */
  LX_SASL_FAIL = -1,   /* failed; see the *_error() function; stays failed */
  LX_SASL_OK = 0,      /* done, or the next message is in *out */
  LX_SASL_NEED_CREDS,  /* server: call lx_scram_server_creds() */
  LX_SASL_SUCCESS      /* server: authenticated; *out is the server-final */
};

#define LX_SASL_MAX_HASH 64    /* bytes of a SHA-512 digest */
#define LX_SASL_MAX_SALT 128   /* longest salt accepted, in bytes */
#define LX_SASL_MAX_STR 2048   /* longest username or password, in bytes */
#define LX_SASL_MAX_MSG 8192   /* longest SCRAM message accepted */
#define LX_SASL_MIN_ITER 4096  /* default floor of the iteration count */
#define LX_SASL_MAX_ITER 1000000UL /* default ceiling (PBKDF2 blocks the loop) */
#define LX_SASL_MAX_CB 4       /* channel binding types one server checks */

/* A byte string that the engine reads and never keeps. */
typedef struct lx_sasl_str {
  const char *p;
  size_t len;
} lx_sasl_str;

/* ---- mechanisms ---------------------------------------------------------- */

const char *lx_sasl_mech_name(int mech);           /* "SCRAM-SHA-256-PLUS" */
int lx_sasl_mech_by_name(const char *name, size_t len); /* LX_SASL_NONE: unknown */
int lx_sasl_mech_hash(int mech);       /* enum lx_sasl_hash, -1 if not SCRAM */
int lx_sasl_mech_plus(int mech);       /* 1 for the -PLUS variants */
const char *lx_sasl_hash_name(int hash);           /* "SHA-1", "SHA-256", ... */
int lx_sasl_hash_by_name(const char *name, size_t len); /* -1: unknown */
size_t lx_sasl_hash_len(int hash);                 /* 20, 32, 64 */

/* What the client can do, for lx_sasl_choose(). */
typedef struct lx_sasl_caps {
  int password;     /* a plaintext password is configured */
  int keys_hash;    /* hash of cached SCRAM keys (without a password only
                       that SCRAM hash is usable), or -1 */
  int tls;          /* the stream is encrypted */
  int client_cert;  /* a client certificate is configured (EXTERNAL) */
  int anonymous;    /* ANONYMOUS explicitly requested: nothing else is used */
  const lx_sasl_str *cb_types; /* channel bindings TLS can give, best first */
  size_t ncb_types;
  const lx_sasl_str *server_cb_types; /* XEP-0440 list, when advertised */
  size_t nserver_cb_types;
  int server_cb_known; /* the server advertised XEP-0440 <sasl-channel-binding> */
} lx_sasl_caps;

typedef struct lx_sasl_choice {
  int mech;            /* LX_SASL_NONE when nothing fits */
  int cb_index;        /* index into caps->cb_types of the binding to use:
                          the -PLUS one, or for plain SCRAM the one we could
                          use (so the client sends 'y'); -1 for none */
  int offers_plus;     /* the server offers some SCRAM -PLUS mechanism */
  char reason[320];    /* when mech is LX_SASL_NONE: why, for humans */
} lx_sasl_choice;

/* Picks the strongest mechanism both sides can use, in the order
 * EXTERNAL (with a client certificate, over TLS) > SCRAM-SHA-512-PLUS >
 * SCRAM-SHA-256-PLUS > SCRAM-SHA-1-PLUS > SCRAM-SHA-512 > SCRAM-SHA-256 >
 * SCRAM-SHA-1 > PLAIN (only over TLS); ANONYMOUS only when requested, and
 * then nothing else. A -PLUS variant needs a channel binding type the
 * client has and (when XEP-0440 is advertised) the server accepts. Returns
 * out->mech. The choice is one mechanism, never a list to fall back on. */
int lx_sasl_choose(const lx_sasl_str *offered, size_t noffered,
                   const lx_sasl_caps *caps, lx_sasl_choice *out);

/* ---- SCRAM keys ---------------------------------------------------------- */

/* What a client may cache instead of the password: the keys for one
 * (hash, salt, iterations). Anyone holding them can log in as the user. */
typedef struct lx_scram_keys {
  int hash;
  unsigned char salt[LX_SASL_MAX_SALT];
  size_t salt_len;
  unsigned long iterations;
  unsigned char salted_password[LX_SASL_MAX_HASH]; /* may be unknown: */
  int have_salted;                      /* 0 when only the keys were cached */
  unsigned char client_key[LX_SASL_MAX_HASH];
  unsigned char server_key[LX_SASL_MAX_HASH];
} lx_scram_keys;

/* Fills client_key and server_key from salted_password (have_salted must
 * be set). Returns 1, or 0 when the crypto library failed. */
int lx_scram_keys_complete(lx_scram_keys *k);

/* What a server stores: no password, no key that logs in by itself. */
typedef struct lx_scram_creds {
  int hash;
  unsigned char salt[LX_SASL_MAX_SALT];
  size_t salt_len;
  unsigned long iterations;
  unsigned char stored_key[LX_SASL_MAX_HASH];
  unsigned char server_key[LX_SASL_MAX_HASH];
} lx_scram_creds;

/* Credentials from a password (SASLprep'd here). salt: NULL for 16 random
 * bytes (RAND_bytes), else 1..LX_SASL_MAX_SALT bytes (tests, migration).
 * iterations >= 1 (the Lua binding refuses fewer than LX_SASL_MIN_ITER).
 * Returns LX_SASL_OK or LX_SASL_FAIL with *err a static message. The caller
 * owns *out and should lx_sasl_wipe() it. */
int lx_scram_credentials(int hash, const char *password, size_t password_len,
                         unsigned long iterations, const unsigned char *salt,
                         size_t salt_len, lx_scram_creds *out,
                         const char **err);

/* Overwrites n bytes at p (OPENSSL_cleanse). */
void lx_sasl_wipe(void *p, size_t n);

/* ---- client -------------------------------------------------------------- */

typedef struct lx_sasl_client_opts {
  int mech;
  lx_sasl_str username;   /* SCRAM, PLAIN; SASLprep'd (as a query) here */
  lx_sasl_str password;   /* SCRAM (unless keys), PLAIN; p == NULL: none */
  const lx_scram_keys *keys; /* cached keys or NULL; copied */
  lx_sasl_str authzid;    /* EXTERNAL only (XEP-0178); empty otherwise */
  lx_sasl_str trace;      /* ANONYMOUS only (RFC 4505), may be empty */
  lx_sasl_str cb_type;    /* channel binding type we can give, or empty */
  lx_sasl_str cb_data;    /* its data (needed for -PLUS only) */
  int server_offers_plus; /* plain SCRAM: 'y' if cb_type && !this, else 'n' */
  int tls;                /* PLAIN and EXTERNAL are refused unless set */
  lx_sasl_str nonce;      /* tests only: the client nonce; empty: random */
  unsigned long min_iterations, max_iterations; /* 0: the defaults */
} lx_sasl_client_opts;

typedef struct lx_sasl_client lx_sasl_client;

/* Copies what it needs from o (the caller may wipe its password at once).
 * Returns NULL with *err and *cond set when the options are unusable (e.g.
 * SASLprep fails, PLAIN without TLS), or NULL with *cond == NULL when out of
 * memory. The caller owns the result: lx_sasl_client_free(). */
lx_sasl_client *lx_sasl_client_new(const lx_sasl_client_opts *o,
                                   const char **err, const char **cond);
void lx_sasl_client_free(lx_sasl_client *c); /* wipes; NULL is fine */

/* in == NULL: the initial response (first call only). Otherwise in[0..len)
 * is a server challenge: for SCRAM the server-first message, then possibly
 * the server-final (servers that send it as a challenge; the response is
 * empty). On LX_SASL_OK, *out / *outlen is the response: engine-owned, valid
 * until the next call or free. */
int lx_sasl_client_step(lx_sasl_client *c, const char *in, size_t len,
                        const char **out, size_t *outlen);
/* The server said <success/> with additional data in[0..len) (len 0: none).
 * LX_SASL_OK only if, for SCRAM, the server signature has been verified
 * (now or in a challenge before); any other attributes after v= are ignored
 * (RFC 5802 extensions). */
int lx_sasl_client_finish(lx_sasl_client *c, const char *in, size_t len);
const char *lx_sasl_client_error(const lx_sasl_client *c, const char **cond);
/* After a successful finish of a SCRAM exchange: the keys to cache.
 * Returns 1 and fills *out, else 0. */
int lx_sasl_client_keys(const lx_sasl_client *c, lx_scram_keys *out);

/* ---- SCRAM server -------------------------------------------------------- */

typedef struct lx_sasl_cb {
  lx_sasl_str type; /* "tls-exporter", "tls-server-end-point", ... */
  lx_sasl_str data; /* this connection's binding data for that type */
} lx_sasl_cb;

typedef struct lx_scram_server_opts {
  int mech;                 /* a SCRAM mechanism */
  int offers_plus;          /* the server advertises -PLUS mechanisms */
  const lx_sasl_cb *cb;     /* bindings this connection can check */
  size_t ncb;               /* at most LX_SASL_MAX_CB */
  lx_sasl_str secret;       /* >= 16 bytes, stable: derives the fake salt of
                               unknown users (so it stays the same per user) */
  lx_sasl_str realm;        /* authzid may be user@realm; may be empty */
  unsigned long fake_iterations; /* iterations claimed for unknown users:
                                    what real credentials use (0: 4096) */
  size_t fake_salt_len;     /* salt length for unknown users (0: 16) */
  lx_sasl_str nonce;        /* tests only: the server nonce; empty: random */
  lx_sasl_str ssdp;         /* XEP-0474: the h= value the server-first message
                               carries (base64 of the hash of what was
                               advertised); empty: none */
} lx_scram_server_opts;

typedef struct lx_scram_server lx_scram_server;

/* Copies what it needs from o. NULL with *err when the options are unusable,
 * or with *err == NULL when out of memory. lx_scram_server_free() wipes. */
lx_scram_server *lx_scram_server_new(const lx_scram_server_opts *o,
                                     const char **err);
void lx_scram_server_free(lx_scram_server *s);

/* Feeds a client message: the client-first (-> LX_SASL_NEED_CREDS), then the
 * client-final (-> LX_SASL_SUCCESS with *out the server-final "v=...", or
 * LX_SASL_FAIL). A wrong proof and an unknown user fail alike, at the final
 * step, with "not-authorized" and the same message. */
int lx_scram_server_step(lx_scram_server *s, const char *in, size_t len,
                         const char **out, size_t *outlen);
/* After LX_SASL_NEED_CREDS: the SASLprep'd username to look up (engine-owned,
 * NUL-terminated), and the hash its credentials must be for. */
const char *lx_scram_server_username(const lx_scram_server *s, size_t *len);
int lx_scram_server_hash(const lx_scram_server *s);
/* Hands over the user's credentials (copied), or NULL for an unknown user
 * (then fake ones are used, and the exchange fails only at its end).
 * Credentials for another hash count as none. Returns LX_SASL_OK with *out
 * the server-first message. */
int lx_scram_server_creds(lx_scram_server *s, const lx_scram_creds *creds,
                          const char **out, size_t *outlen);
/* Forces failure (e.g. the lookup failed): LX_SASL_FAIL from now on. */
void lx_scram_server_abort(lx_scram_server *s, const char *msg,
                           const char *cond);
const char *lx_scram_server_error(const lx_scram_server *s, const char **cond);
/* After a failure about channel binding: its RFC 5802 §7 server-error-value
 * (a static string: "unsupported-channel-binding-type" for a p= type this
 * connection cannot check, "server-does-support-channel-binding" for the
 * 'y' flag while -PLUS is offered, "channel-bindings-dont-match"); NULL for
 * every other failure, so that a wrong password and an unknown user stay
 * alike. */
const char *lx_scram_server_error_value(const lx_scram_server *s);
/* The authenticated username, only after LX_SASL_SUCCESS (else NULL). */
const char *lx_scram_server_user(const lx_scram_server *s, size_t *len);

/* ---- codecs -------------------------------------------------------------- */

/* Base64 (RFC 4648 section 4, with padding). Encoding writes exactly
 * lx_b64_encoded_len(n) bytes, no NUL. Decoding is strict: length a multiple
 * of 4, only the alphabet, '=' only as the final one or two padding
 * characters, and the unused bits of the last character zero (the canonical
 * form, so encode(decode(s)) == s). out needs room for 3 * (len / 4) bytes.
 * Returns 0, or -1 for invalid input (out then holds garbage). */
size_t lx_b64_encoded_len(size_t n);
void lx_b64_encode(const unsigned char *in, size_t n, char *out);
int lx_b64_decode(const char *in, size_t len, unsigned char *out,
                  size_t *outlen);

/* SASLprep (RFC 4013) of UTF-8 text. strict: unassigned code points are
 * refused (stored strings); otherwise allowed (queries; this is what the
 * engine uses for usernames and passwords on both sides, so that passwords
 * with characters newer than Unicode 3.2 work). Invalid UTF-8, a NUL, and
 * more than LX_SASL_MAX_STR bytes in or out are refused. On success returns NULL and
 * *out (NUL-terminated, *outlen bytes) which the caller frees with
 * lx_sasl_free_secret(); else a static message. */
const char *lx_saslprep(const char *in, size_t len, int strict, char **out,
                        size_t *outlen);
void lx_sasl_free_secret(char *p, size_t len); /* wipes, then frees */

/* Random bytes (RAND_bytes). Returns 0, or -1 when the CSPRNG failed. */
int lx_sasl_random(unsigned char *out, size_t n);

LX_HIDDEN_END

#endif
