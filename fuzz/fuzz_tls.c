/*
 * fuzz_tls.c - libFuzzer target for the TLS engine (csrc/tls.c).
 *
 * The input is what a hostile peer sends: its first byte picks the side
 * (even: our server, odd: our client) and how the rest is cut into
 * lx_tls_recv() calls; the rest is fed as the peer's TLS records. After each
 * chunk the engine is driven the way net_io.c drives it (handshake, read,
 * take the ciphertext it produced). It must never crash, leak or read out
 * of bounds, whatever the records say. The server context makes its own
 * self-signed certificate in memory (lx_tls_opts.domain), so the target
 * needs no files; the client context is insecure (no trust store lookups).
 * Both have resumption on (the default): the server issues tickets, the
 * client parses them (and keeps none: nothing is verified).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "tls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lx_tls_ctx *server_ctx, *client_ctx;

static void init(void) {
  lx_tls_opts o;
  char err[LX_TLS_ERR_MAX];
  lx_tls_opts_default(&o);
  o.server = 1;
  o.domain = "fuzz.example";
  o.alpn = "xmpp-client";
  server_ctx = lx_tls_ctx_new(&o, err, sizeof err);
  lx_tls_opts_default(&o);
  o.insecure = 1;
  o.alpn = "xmpp-client";
  client_ctx = lx_tls_ctx_new(&o, err, sizeof err);
  if (!server_ctx || !client_ctx) abort();
}

static void drain(lx_tls *t) {
  char out[4096];
  while (lx_tls_pending(t) > 0 && lx_tls_take(t, out, sizeof out) > 0) {}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lx_tls *t;
  size_t pos = 1, chunk;
  int failed = 0;
  if (!server_ctx) init();
  if (size < 1) return 0;
  t = lx_tls_new(data[0] & 1 ? client_ctx : server_ctx, "fuzz.example");
  if (!t) return 0;
  chunk = (size_t)(data[0] >> 1) * 16 + 1; /* 1..2033 bytes per recv */
  drain(t);
  if (lx_tls_handshake(t) == LX_TLS_ERROR) failed = 1; /* client hello */
  drain(t);
  while (pos < size && !failed) {
    size_t n = size - pos < chunk ? size - pos : chunk;
    if (!lx_tls_recv(t, data + pos, n)) break;
    pos += n;
    if (!lx_tls_handshake_done(t)) {
      int rc = lx_tls_handshake(t);
      if (rc == LX_TLS_ERROR) failed = 1;
    }
    if (!failed && lx_tls_handshake_done(t)) {
      char buf[1024];
      size_t got = 0;
      int rc;
      while ((rc = lx_tls_read(t, buf, sizeof buf, &got)) == LX_TLS_OK) {
        if (lx_tls_send(t, buf, got) != LX_TLS_OK) break; /* echo */
      }
      if (rc == LX_TLS_ERROR || rc == LX_TLS_CLOSED) failed = 1;
    }
    drain(t);
    lx_tls_idle(t);
  }
  if (failed) {
    const char *cond = NULL;
    (void)lx_tls_error(t, &cond);
  } else if (lx_tls_handshake_done(t)) {
    lx_tls_shutdown(t);
  }
  drain(t);
  /* a ticket the hostile server sent: an unverified handshake keeps none,
   * but take/offer/free must cope whatever state t is in */
  {
    lx_tls_ticket *k = lx_tls_ticket_take(t);
    lx_tls *t2 = k ? lx_tls_new(client_ctx, "fuzz.example") : NULL;
    if (t2) lx_tls_offer(t2, k);
    lx_tls_free(t2);
    lx_tls_ticket_free(k);
  }
  lx_tls_free(t);
  return 0;
}
