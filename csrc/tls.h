/*
 * tls.h - the TLS engine: OpenSSL over two memory BIOs, a pure byte transform.
 *
 * Pure C, no Lua (no lua_State): the binding (tls_lua.c), fuzz targets and
 * C tests drive it alike. It never owns a socket: the caller moves
 * ciphertext between the network and the engine, so STARTTLS on an existing
 * connection and direct TLS (XEP-0368) are the same thing, and no byte read
 * before the handshake is lost or misread.
 *
 *   network --recv()--> [ SSL ] --read()--> plaintext
 *   network <--take()-- [ SSL ] <--send()-- plaintext
 *
 * RFC 6120 §5 and RFC 7590 TLS rules live here: TLS 1.2 at least, renegotiation
 * refused (a peer that tries fails the session), SNI and identity are the
 * peer's XMPP domain (RFC 6125 DNS-ID without partial wildcards, or an
 * id-on-xmppAddr SAN equal to the domain, RFC 6120 §13.7.1.4), the chain is
 * verified against the system store or a CA file, and only `insecure`
 * continues past a bad certificate. Nothing secret is ever logged.
 *
 * Ownership: a context is reference counted; the creator holds one reference
 * (dropped by lx_tls_ctx_free) and every session holds one, so a context
 * outlives its sessions whatever order they are freed in. A session owns its
 * SSL and both BIOs. Every *_free accepts NULL. A context and its sessions
 * belong to one thread at a time (the reference count is not atomic).
 */
#ifndef LXMPP_TLS_H
#define LXMPP_TLS_H

#include "lx.h"

#include <stddef.h>

LX_HIDDEN_BEGIN

typedef struct lx_tls_ctx lx_tls_ctx;
typedef struct lx_tls lx_tls;
typedef struct lx_tls_ticket lx_tls_ticket;

enum lx_tls_status {
  LX_TLS_ERROR = -1, /* failed: see lx_tls_error(); the session stays failed */
  LX_TLS_OK = 0,     /* done (handshake) or data produced (read) */
  LX_TLS_WANT = 1,   /* send what lx_tls_take() gives, then recv() more */
  LX_TLS_CLOSED = 2  /* read: the peer sent close_notify; no more data */
};

enum lx_tls_version { LX_TLS_ANY = 0, LX_TLS_1_2 = 12, LX_TLS_1_3 = 13 };

/* Room for any channel binding (the largest digest, SHA-512). */
#define LX_TLS_CB_MAX 64
/* Room for an error message, with the terminating NUL. */
#define LX_TLS_ERR_MAX 256

typedef struct lx_tls_opts {
  int server;             /* 0: client, 1: server */
  const char *cafile;     /* PEM trust anchors. Client: NULL means the system
                             store. Server: when set, clients are asked for an
                             optional certificate (SASL EXTERNAL), verified
                             against it; a bad one does not fail the
                             handshake, lx_tls_verified() tells */
  int insecure;           /* client: do not fail the handshake on a bad
                             certificate (lx_tls_verified() still tells) */
  const char *cert;       /* PEM certificate chain file (leaf first); server:
                             the default certificate; client: optional */
  const char *key;        /* PEM private key file; NULL: read from cert */
  const char *alpn;       /* comma-separated ALPN protocols ("xmpp-client");
                             client: offered; server: accepted; NULL: none */
  const char *domain;     /* server without cert: a self-signed EC P-256
                             certificate is made in memory for this domain
                             (development only) */
  int max_version;        /* enum lx_tls_version; LX_TLS_ANY normally (tests
                             force LX_TLS_1_2) */
  int no_ems;             /* tests only: refuse the TLS 1.2 extended master
                             secret (RFC 7627), so tls-unique is refused */
  int no_resumption;      /* server: issue no session tickets (resumption is
                             on by default: RFC 8446 §4.6.1 stateless
                             tickets, one per handshake, valid
                             LX_TLS_TICKET_LIFETIME, no 0-RTT data); client:
                             keep no ticket (lx_tls_ticket_take gives NULL) */
} lx_tls_opts;

/* Seconds a session ticket stays valid (server lifetime hint and the age
 * after which the server refuses it). */
#define LX_TLS_TICKET_LIFETIME 7200

/* Zeroes o: client, system store, secure, no ALPN, highest version. */
void lx_tls_opts_default(lx_tls_opts *o);

/* A new context; the caller owns one reference. NULL on failure (unreadable
 * or mismatched files, bad options, out of memory) with a message in err
 * (errlen bytes, NUL-terminated; LX_TLS_ERR_MAX is enough). */
lx_tls_ctx *lx_tls_ctx_new(const lx_tls_opts *o, char *err, size_t errlen);

/* Server: serve cert/key (PEM files; key NULL: in cert) to clients whose SNI
 * is `name` (ASCII, compared case-insensitively). Clients without SNI or with
 * another name get the default certificate; when there is none, the
 * handshake fails. Returns 1, or 0 with a message in err. The files are read
 * now; sessions already created see the new entry too. */
int lx_tls_ctx_add_sni(lx_tls_ctx *c, const char *name, const char *cert,
                       const char *key, char *err, size_t errlen);

/* Drops the caller's reference; the context is freed when no session uses
 * it any more. NULL is fine. */
void lx_tls_ctx_free(lx_tls_ctx *c);

/* A new session of context c (which it references). Client: peer_domain is
 * the XMPP domain of the JID (ASCII/A-labels): the SNI and the identity the
 * certificate must show; never an IP or an SRV target. An IP literal domain
 * sends no SNI and is matched against IP SANs. Server: peer_domain is ignored
 * (may be NULL). Returns NULL when out of memory or, for a client, when
 * peer_domain is NULL or empty. The caller owns the result. */
lx_tls *lx_tls_new(lx_tls_ctx *c, const char *peer_domain);
void lx_tls_free(lx_tls *t); /* NULL is fine; no close_notify is sent */

/* Hands over ciphertext received from the peer (copied). Returns 1, or 0 when
 * out of memory (the session is then failed). */
int lx_tls_recv(lx_tls *t, const void *data, size_t len);

/* Drives the handshake with what was received: LX_TLS_OK when it is done
 * (and on every later call), LX_TLS_WANT, or LX_TLS_ERROR. After any call,
 * send what lx_tls_take() gives (a failed handshake leaves its alert there). */
int lx_tls_handshake(lx_tls *t);
int lx_tls_handshake_done(const lx_tls *t);

/* Encrypts len bytes into the outgoing buffer: LX_TLS_OK or LX_TLS_ERROR.
 * Only after the handshake is done: sending earlier fails the session. */
int lx_tls_send(lx_tls *t, const void *data, size_t len);

/* Decrypts into buf (cap > 0 bytes): LX_TLS_OK with *n > 0 bytes, LX_TLS_WANT
 * (*n = 0: nothing more yet), LX_TLS_CLOSED, or LX_TLS_ERROR. Before the
 * handshake is done it returns LX_TLS_WANT and decrypts nothing: whatever the
 * peer pushed before the handshake completed is never application data.
 * Reading may produce ciphertext too (a TLS 1.3 key update answer, an
 * alert): send what lx_tls_take() gives afterwards. */
int lx_tls_read(lx_tls *t, void *buf, size_t cap, size_t *n);

/* Ciphertext waiting to be sent, and taking it out: lx_tls_take copies up to
 * cap bytes into buf and removes them; returns how many. Works in every state
 * (a failed session may still hold its alert). */
size_t lx_tls_pending(const lx_tls *t);
size_t lx_tls_take(lx_tls *t, void *buf, size_t cap);

/* Nothing buffered either way: gives back the memory the ciphertext buffers
 * grew to (fresh, empty memory BIOs). For a connection between reads. */
void lx_tls_idle(lx_tls *t);

/* Queues close_notify (then take() it and close the transport). Returns
 * LX_TLS_OK, or LX_TLS_ERROR if the session failed or never finished the
 * handshake. */
int lx_tls_shutdown(lx_tls *t);

/* After LX_TLS_ERROR: a message for humans ("certificate verification
 * failed: certificate has expired") and the condition, "tls-verify-failed"
 * (the peer's certificate was refused) or "tls-failed". NULL if not failed. */
const char *lx_tls_error(const lx_tls *t, const char **condition);

/* Queries. Strings are owned by the session (or static) and valid until it
 * is freed; NULL when not known (yet). */
const char *lx_tls_version(const lx_tls *t);     /* "TLSv1.3" */
const char *lx_tls_cipher(const lx_tls *t);      /* "TLS_AES_256_GCM_SHA384" */
const char *lx_tls_alpn(const lx_tls *t, size_t *len); /* not NUL-terminated */
const char *lx_tls_server_name(const lx_tls *t); /* SNI sent or received */
/* 1 when the peer showed a certificate whose chain and identity verified
 * (even with insecure set), 0 otherwise. */
int lx_tls_verified(const lx_tls *t);
/* 1 when the peer's certificate verified (lx_tls_verified) and its
 * identity is domain (ASCII/A-labels): an id-on-xmppAddr SAN equal to it,
 * or a DNS-ID (RFC 6125 §6.4, no partial wildcards, the CN only when the
 * certificate has no SAN), as a client checks the server it connects to.
 * For a server checking a client certificate against the domain the peer
 * claims (server-to-server SASL EXTERNAL, RFC 6120 §13.7.1.2, XEP-0178). */
int lx_tls_peer_is(const lx_tls *t, const char *domain);
/* The peer certificate's subject (RFC 2253) into buf; 0 if no certificate. */
int lx_tls_peer_subject(const lx_tls *t, char *buf, size_t cap);

/* Session resumption, client side. A ticket is what a server gave to
 * resume a session later (TLS 1.3 NewSessionTicket, RFC 8446 §4.6.1, or a
 * TLS 1.2 ticket, RFC 5077): secret, opaque, never logged. It is kept only
 * from a handshake whose certificate chain and identity verified, and is
 * bound to the context and the peer domain of that handshake: offered to a
 * session of another context (other CA file, insecure flag, client
 * certificate) or another domain it is refused, so a resumed session always
 * stands for a certificate that was verified for this very name.
 *
 * lx_tls_ticket_take moves the newest ticket out of t (the caller owns it;
 * NULL when there is none: not verified, resumption off, none received
 * yet; a TLS 1.3 ticket arrives after the handshake, with the first data).
 * lx_tls_offer, on a client session before its first lx_tls_handshake,
 * offers k (which stays the caller's; t takes its own reference): 1 when
 * offered, 0 when refused as above. lx_tls_ticket_free accepts NULL. */
lx_tls_ticket *lx_tls_ticket_take(lx_tls *t);
int lx_tls_offer(lx_tls *t, const lx_tls_ticket *k);
void lx_tls_ticket_free(lx_tls_ticket *k);
/* 1 when the finished handshake resumed a session (no certificate was sent;
 * the identity is the one verified when the ticket was issued). */
int lx_tls_resumed(const lx_tls *t);

/* Channel binding data for SCRAM-PLUS, into out (LX_TLS_CB_MAX bytes), *len
 * set. type: "tls-exporter" (RFC 9266: 32 bytes of the exporter with label
 * "EXPORTER-Channel-Binding" and an empty context; TLS 1.3 only),
 * "tls-server-end-point" (RFC 5929: hash of the server certificate, SHA-256
 * when it is signed with MD5 or SHA-1, else its signature hash) or
 * "tls-unique" (RFC 5929: the first Finished message; on TLS 1.2 only with
 * the extended master secret and never on a resumed session, whose
 * Finished messages the triple handshake attack can make equal on two
 * connections; on TLS 1.3, where no RFC defines it, the client Finished as
 * OpenSSL clients give it, full handshakes only). Returns 1, or 0 with *why
 * set to a static message (the session is not failed). out NULL: a probe,
 * the same checks without the exporter or the certificate's hash (*len is
 * the length the data would have): a server offers the types with it and
 * computes the data only when an exchange binds to one. */
int lx_tls_channel_binding(lx_tls *t, const char *type, unsigned char *out,
                           size_t *len, const char **why);

LX_HIDDEN_END

#endif
