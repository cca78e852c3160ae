/*
 * sasl_int.h - what the files of the SASL engine share: sasl.c (mechanisms,
 * secure buffers, SCRAM primitives, choice, credentials), saslprep.c
 * (base64, SASLprep), sasl_client.c and sasl_server.c. Internal:
 * the interface is sasl.h, and nothing outside these files includes this
 * one. None of these names leaves core.so (-fvisibility=hidden); each is
 * documented where it is defined.
 */
#ifndef LXMPP_SASL_INT_H
#define LXMPP_SASL_INT_H

#include "lx.h"
#include "prep.h"
#include "sasl.h"
#include "utf8.h"

#include <stddef.h>
#include <stdint.h>

#include <stringprep.h>

LX_HIDDEN_BEGIN

#if defined(__GNUC__)
#define LX_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define LX_PRINTF(f, a)
#endif

#define MAX_NONCE 256       /* longest nonce (either part) accepted */

/* The one "out of memory" message (sasl.c). Callers tell it from other
 * errors by address (err == OOM), so every file must use this array. */
extern const char lx_sasl_oom[];
#define OOM lx_sasl_oom

/* ---- secure buffers (sasl.c) --------------------------------------------- */

typedef struct sbuf {
  char *p;
  size_t len, cap; /* p[len] is always NUL once p exists */
} sbuf;

int lx_sb_put(sbuf *b, const void *d, size_t n);
int lx_sb_puts(sbuf *b, const char *s);
int lx_sb_put_b64(sbuf *b, const unsigned char *d, size_t n);
void lx_sb_clear(sbuf *b);
void lx_sb_free(sbuf *b);
int lx_sb_empty(sbuf *b);

/* ---- SASLprep (saslprep.c; UTF-8 checks are utf8.h's) -------------------- */

const char *lx_sasl_prep_into(sbuf *b, lx_sasl_str s,
                              const Stringprep_profile *profile);

/* ---- SCRAM primitives (sasl.c) ------------------------------------------- */

int lx_sasl_hmac(int hash, const unsigned char *key, size_t klen,
                 const void *d, size_t n, unsigned char *out);
int lx_sasl_digest(int hash, const unsigned char *d, size_t n,
                   unsigned char *out);
int lx_sasl_derive_keys(int hash, const char *pass, size_t plen,
                        const unsigned char *salt, size_t slen,
                        unsigned long iter, unsigned char *salted,
                        unsigned char *ckey, unsigned char *skey);
int lx_sasl_printable(const char *s, size_t n);
int lx_sasl_cb_name_ok(const char *s, size_t n);
int lx_sasl_next_attr(const char *m, size_t len, size_t *pos, char *name,
                      const char **val, size_t *vlen);
const char *lx_sasl_msg_check(const char *m, size_t len);
const char *lx_sasl_check_extensions(const char *m, size_t len, size_t pos,
                                     const char *known);
const char *lx_sasl_make_nonce(sbuf *out, lx_sasl_str given);
void lx_sasl_safe_copy(char *dst, size_t cap, const char *s, size_t n,
                       size_t max);

LX_HIDDEN_END

#endif
