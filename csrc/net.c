/*
 * net.c - TCP connections and listeners over libuv, with the receive path
 * in C: socket bytes -> (TLS) -> stream parser -> one dispatcher call per
 * stream event, and a coalescing, bounded send path.
 *
 *   core.tcp_connect(ip, port, owner) -> conn
 *   core.tcp_listen(ip, port, owner [, backlog]) -> listener | nil, msg, cond
 *   conn:parse(opts)     attach a stream parser (limits as stream_parser)
 *   conn:write(bytes)    -> true | nil, msg, "resource-constraint"/"closed"
 *   conn:restart()       stream restart: a fresh parser; unparsed bytes of the
 *                        current read go to it
 *   conn:starttls(ctx, domain [, ticket]) -> true, discarded   (then
 *                        "tls-done"/"tls-failed"; a client offers ticket)
 *   conn:tls_info()  conn:tls_peer_is(domain)
 *   conn:channel_binding(type [, probe]) (probe: true when the type is
 *                        available, its data not computed)
 *   conn:tls_ticket() -> ticket | nil  (client: tls_lua.c's session:ticket)
 *   conn:pause() conn:resume()  conn:close([linger]) (graceful)  conn:abort()
 *                        close: queued bytes go out first; once the peer
 *                        has read none of them for linger seconds (default
 *                        30) the socket is aborted: a peer that reads
 *                        nothing cannot hold a closing connection open, a
 *                        slow one that reads is not cut; from the close on,
 *                        what the peer sends is read and dropped, and the
 *                        socket closes after the peer's EOF (a lingering
 *                        close, bounded: net_io.c, lx_net_drain)
 *   conn:bytes_in()      bytes read so far
 *   conn:raw()           no parser: each read (decrypted) is a "data" event
 *   conn:websocket{ role = "server"|"client", max_message = bytes (262144),
 *                   buffered = bytes }
 *                        WebSocket mode (RFC 6455 framing, RFC 7395 XMPP;
 *                        net_ws.c) from now on, typically after the HTTP
 *                        Upgrade was done in raw mode; buffered: the bytes
 *                        raw mode delivered past the HTTP request, decoded
 *                        first. Then parse(opts) as usual: each text message
 *                        must be one element; <open/> gives "open" (attr,
 *                        attr.xmlns "jabber:client"), <close/> "stream-close",
 *                        anything else "stanza" (jabber:client unless it
 *                        declares a namespace); a message that is not one
 *                        element "parse-error" (cond "bad-format"), one over
 *                        max_stanza_size "policy-violation". write(bytes) is
 *                        one text message (nil, msg, "bad-format" when not
 *                        UTF-8); restart() as after SASL (a new <open/>);
 *                        pings are answered in C; close() sends a close
 *                        frame (1000) and waits (5 s at most) for the peer's.
 *                        The peer's close frame: "eof" code reason, then the
 *                        socket is closed; a protocol violation: "read-error"
 *                        msg "closed" code, a close frame with that code
 *                        (1002, 1003 binary, 1007 not UTF-8, 1009 over
 *                        max_message), and the socket is closed.
 *   core.net_spare() -> buffers, bytes   the loop's spare output buffers
 *                        (net_io.c: at most 16, 64 KiB in all)
 *   conn:info() -> { peer=, port=, bytes_in=, bytes_out=, writes=, queued=,
 *                    open=, parser_idle= (the parser gave its memory back) }
 *   listener:port()  listener:close()
 *
 * Events reach Lua as dispatch("net", owner, event, ...): "connected",
 * "connect-failed" msg cond, "open" attr, "stanza" st, "stream-close",
 * "parse-error" msg cond, "data" bytes (raw mode), "eof" (WebSocket: code reason),
 * "read-error" msg (WebSocket: msg "closed" code), "write-error" msg,
 * "tls-done", "tls-failed" msg cond,
 * "drain", "closed", and for listeners "accept" conn.
 *
 * Ownership: a conn/listener userdata embeds its uv handle and is pinned from
 * creation until the close callback, which also frees its buffers and parser.
 * Every method on a closed conn fails cleanly; close() and abort() are safe
 * twice.
 *
 * This file makes conns and listeners and holds their Lua methods; the send
 * and receive paths, the per-loop read buffers and the idle sweeps are in
 * net_io.c, and what the two share is in net_int.h.
 */
#include "lx.h"
#include "net_int.h"

#include <string.h>

#define CONN_MT "lxmpp.conn"
#define LISTENER_MT "lxmpp.listener"
#define DEFAULT_MAX_OUT (4u << 20)   /* bytes queued before write() refuses */
#define DEFAULT_MAX_MESSAGE 262144   /* WebSocket: the default max_stanza_size */

typedef struct listener {
  lx_handle h;
  uv_tcp_t tcp;
} listener;

/* ---- helpers ------------------------------------------------------------- */

static conn *check_conn(lua_State *L) {
  return luaL_checkudata(L, 1, CONN_MT);
}

static int fail_closed(lua_State *L) {
  lua_pushnil(L);
  lua_pushliteral(L, "connection is closed");
  lua_pushliteral(L, "closed");
  return 3;
}

/* ---- creation ---------------------------------------------------------------- */

/* Pushes a new conn userdata with its handle initialised and pinned. */
static conn *new_conn(lua_State *L, lx_loop *lp) {
  conn *c = lua_newuserdatauv(L, sizeof *c, 1);
  memset(c, 0, sizeof *c);
  c->h.closed = 1;                       /* not open until the handle is */
  c->h.self_ref = LUA_NOREF;
  luaL_setmetatable(L, CONN_MT);
  if (uv_tcp_init(&lp->uv, &c->tcp) != 0) luaL_error(L, "cannot create a socket");
  c->tcp.data = c;
  lx_handle_pin(L, -1, &c->h, lp);
  c->h.on_close = lx_net_conn_freed;
  c->flush.run = lx_net_run_flush;
  c->cont.run = lx_net_run_cont;
  c->max_out = DEFAULT_MAX_OUT;
  uv_tcp_nodelay(&c->tcp, 1);
  return c;
}

static int parse_addr(lua_State *L, const char *ip, int port,
                      struct sockaddr_storage *ss) {
  if (port < 0 || port > 65535) return luaL_error(L, "invalid port %d", port);
  if (uv_ip4_addr(ip, port, (struct sockaddr_in *)ss) == 0) return 1;
  if (uv_ip6_addr(ip, port, (struct sockaddr_in6 *)ss) == 0) return 1;
  return 0;
}

static void on_connect(uv_connect_t *req, int status) {
  conn *c = req->data;
  c->connecting = 0;
  if (c->h.closed) return;
  if (status < 0) {
    lx_net_emit_msg(&c->h, "connect-failed", uv_strerror(status),
             status == UV_ECONNREFUSED ? "connection-refused" : "remote-connection-failed");
    lx_net_conn_abort(c);
    return;
  }
  lx_net_emit(&c->h, "connected");
  lx_net_start_reading(c);
  lx_defer(c->h.lp, &c->flush);          /* anything written while connecting */
}

/* core.tcp_connect(ip, port, owner) -> conn: the outcome is dispatched as
 * "connected" or "connect-failed". ip must be a numeric address. */
static int l_tcp_connect(lua_State *L) {
  lx_loop *lp = lx_loop_get(L);
  const char *ip = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2);
  struct sockaddr_storage ss;
  conn *c;
  int r;
  luaL_checkany(L, 3);
  if (!parse_addr(L, ip, port, &ss))
    return luaL_error(L, "tcp_connect: %s is not a numeric IP address", ip);
  c = new_conn(L, lp);                   /* ..., conn */
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, -2, 1);
  c->creq.data = c;
  r = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&ss, on_connect);
  if (r != 0) {
    lx_net_conn_abort(c);
    lua_pushnil(L);
    lua_pushstring(L, uv_strerror(r));
    lua_pushliteral(L, "remote-connection-failed");
    return 3;
  }
  c->connecting = 1;
  return 1;
}

static int accept_protected(lua_State *L) {
  listener *ls = lua_touserdata(L, 1);
  conn *c = new_conn(L, ls->h.lp);       /* ud, conn */
  if (uv_accept((uv_stream_t *)&ls->tcp, (uv_stream_t *)&c->tcp) != 0) {
    lx_net_conn_abort(c);
    return 0;
  }
  if (!lx_net_push_event(L, &ls->h, "accept")) {
    lx_net_conn_abort(c);
    return 0;
  }                                      /* ud, conn, "net", owner, "accept" */
  lua_pushvalue(L, 2);
  lx_dispatch(ls->h.lp, 4);
  return 0;
}

static void on_connection(uv_stream_t *server, int status) {
  listener *ls = server->data;
  if (status < 0 || ls->h.closed) return;
  lx_protected(ls->h.lp, accept_protected, ls);
}

/* core.tcp_listen(ip, port, owner [, backlog]) -> listener */
static int l_tcp_listen(lua_State *L) {
  lx_loop *lp = lx_loop_get(L);
  const char *ip = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2);
  int backlog = (int)luaL_optinteger(L, 4, 128);
  struct sockaddr_storage ss;
  listener *ls;
  int r;
  luaL_checkany(L, 3);
  if (!parse_addr(L, ip, port, &ss))
    return luaL_error(L, "tcp_listen: %s is not a numeric IP address", ip);
  ls = lua_newuserdatauv(L, sizeof *ls, 1);
  memset(ls, 0, sizeof *ls);
  ls->h.closed = 1;
  ls->h.self_ref = LUA_NOREF;
  luaL_setmetatable(L, LISTENER_MT);
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, -2, 1);
  if (uv_tcp_init(&lp->uv, &ls->tcp) != 0) return luaL_error(L, "cannot create a socket");
  ls->tcp.data = ls;
  lx_handle_pin(L, -1, &ls->h, lp);
  r = uv_tcp_bind(&ls->tcp, (const struct sockaddr *)&ss, 0);
  if (r == 0) r = uv_listen((uv_stream_t *)&ls->tcp, backlog, on_connection);
  if (r != 0) {
    lx_handle_close(&ls->h, (uv_handle_t *)&ls->tcp);
    lua_pushnil(L);
    lua_pushfstring(L, "cannot listen on %s port %d: %s", ip, port, uv_strerror(r));
    lua_pushliteral(L, "undefined-condition");
    return 3;
  }
  return 1;
}

/* ---- conn methods ------------------------------------------------------------- */

/* conn:parse(opts): reads stream events from now on (limits as in
 * lxmpp.stream_parser). */
static int l_parse(lua_State *L) {
  conn *c = check_conn(L);
  lx_limits lim;
  if (c->h.closed) return fail_closed(L);
  if (c->raw) return luaL_error(L, "parse: this connection is in raw mode");
  lx_get_limits(L, 2, &lim);     /* all of them, as core.stream_parser */
  if (!c->parser) {
    c->parser = lx_stream_new(c->ws ? LX_MODE_FRAMED : LX_MODE_STREAM, &lim);
    if (!c->parser) return luaL_error(L, "out of memory");
  }
  if (c->ws) lx_defer(c->h.lp, &c->cont);  /* what websocket() or TLS hold */
  lx_net_start_reading(c);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_write(lua_State *L) {
  conn *c = check_conn(L);
  size_t len;
  const char *p = luaL_checklstring(L, 2, &len);
  int r;
  if (c->h.closed || c->closing) return fail_closed(L);
  r = c->ws ? lx_net_ws_write(c, p, len) : lx_net_enqueue(c, p, len);
  if (r < 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "a WebSocket text message must be UTF-8");
    lua_pushliteral(L, "bad-format");
    return 3;
  }
  if (!r) {
    lua_pushnil(L);
    lua_pushliteral(L, "output queue full: the peer is not reading");
    lua_pushliteral(L, "resource-constraint");
    return 3;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:restart(): a stream restart (RFC 6120 §4.3.3): the parser forgets
 * the stream; bytes already read after the current stanza go to the new
 * stream. */
static int l_restart(lua_State *L) {
  conn *c = check_conn(L);
  if (c->h.closed || !c->parser) return fail_closed(L);
  if (c->in_dispatch) c->reset = RESET_RESTART;   /* feed_protected does it */
  else if (!lx_stream_reset(c->parser)) return luaL_error(L, "out of memory");
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:starttls(tls_context, peer_domain [, ticket]) -> true, discarded
 * From now on bytes are TLS (STARTTLS after <proceed/>, or direct TLS right
 * after connecting). The parser starts a fresh stream; plaintext that was
 * read but not parsed yet is dropped, never parsed as part of the encrypted
 * stream (RFC 6120 §5.4.3.3), and its size returned so the caller can treat it as
 * the attack it is. A client offers ticket to resume a session when it
 * belongs to ctx and domain (tls.h, lx_tls_offer); tls_info().resumed
 * tells whether the server took it. Outcome: "tls-done" or "tls-failed"
 * msg cond. */
static int l_starttls(lua_State *L) {
  conn *c = check_conn(L);
  int server = 0;
  lx_tls_ctx *ctx = lx_tls_ctx_from_lua(L, 2, &server);
  const char *domain = luaL_optstring(L, 3, NULL);
  lx_tls_ticket *ticket = lx_tls_ticket_from_lua(L, 4);
  size_t discarded = 0;
  if (c->h.closed || c->closing) return fail_closed(L);
  if (c->tls) return luaL_error(L, "TLS is already active on this connection");
  if (c->ws) return luaL_error(L, "starttls: this connection is in WebSocket mode");
  if (!server && (!domain || !*domain))
    return luaL_error(L, "starttls: a client needs the peer's domain");
  if (c->parser) {
    if (c->feeding) discarded = lx_stream_remaining(c->parser);
    c->feeding = 0;
    if (!lx_stream_reset(c->parser)) return luaL_error(L, "out of memory");
    if (c->in_dispatch) c->reset = RESET_NONE;  /* nothing left to refeed */
  }
  /* nothing of the plaintext stream is left to parse: a pause() taken to
   * stop at <proceed/> or <starttls/> has done its job */
  c->paused = 0;
  c->tls = lx_tls_new(ctx, server ? NULL : domain);
  if (!c->tls) return luaL_error(L, "out of memory");
  c->tls_done = 0;
  if (!server) {                              /* the client speaks first */
    if (ticket) lx_tls_offer(c->tls, ticket);
    if (lx_tls_handshake(c->tls) == LX_TLS_ERROR) {
      const char *cond, *msg = lx_tls_error(c->tls, &cond);
      lua_pushnil(L);
      lua_pushstring(L, msg ? msg : "TLS failed");
      lua_pushstring(L, cond ? cond : "tls-failed");
      return 3;
    }
    lx_net_move_ciphertext(c);
  }
  lx_net_start_reading(c);
  lua_pushboolean(L, 1);
  lua_pushinteger(L, (lua_Integer)discarded);
  return 2;
}

/* conn:tls_info() -> { version=, cipher=, alpn=, verified=, peer_subject=,
 * resumed= } or nil without TLS. */
static int l_tls_info(lua_State *L) {
  conn *c = check_conn(L);
  const char *v;
  size_t alen = 0;
  char subj[512];
  if (!c->tls || !c->tls_done) return 0;
  lua_createtable(L, 0, 6);
  if ((v = lx_tls_version(c->tls))) lua_pushstring(L, v), lua_setfield(L, -2, "version");
  if ((v = lx_tls_cipher(c->tls))) lua_pushstring(L, v), lua_setfield(L, -2, "cipher");
  if ((v = lx_tls_alpn(c->tls, &alen))) lua_pushlstring(L, v, alen), lua_setfield(L, -2, "alpn");
  lua_pushboolean(L, lx_tls_verified(c->tls));
  lua_setfield(L, -2, "verified");
  lua_pushboolean(L, lx_tls_resumed(c->tls));
  lua_setfield(L, -2, "resumed");
  if (lx_tls_peer_subject(c->tls, subj, sizeof subj))
    lua_pushstring(L, subj), lua_setfield(L, -2, "peer_subject");
  return 1;
}

/* conn:tls_peer_is(domain) -> boolean: the peer's certificate verified and
 * names domain (tls.h, lx_tls_peer_is); false without TLS. A domain with
 * an embedded NUL never matches. */
static int l_tls_peer_is(lua_State *L) {
  conn *c = check_conn(L);
  size_t len;
  const char *d = luaL_checklstring(L, 2, &len);
  lua_pushboolean(L, c->tls && c->tls_done && strlen(d) == len && lx_tls_peer_is(c->tls, d));
  return 1;
}

/* conn:tls_ticket() -> ticket | nil: the newest session ticket of this
 * client connection's verified handshake, moved out (tls.h). Through
 * tls_lua.c's session:ticket so one binding owns the userdata type. */
static int l_tls_ticket(lua_State *L) {
  conn *c = check_conn(L);
  if (!c->tls || !c->tls_done) return 0;
  return lx_tls_push_ticket(L, c->tls);
}

/* conn:channel_binding(type [, probe]) -> bytes (probe: true) | nil, message */
static int l_channel_binding(lua_State *L) {
  conn *c = check_conn(L);
  const char *type = luaL_checkstring(L, 2);
  int probe = lua_toboolean(L, 3);
  unsigned char out[LX_TLS_CB_MAX];
  size_t len = 0;
  const char *why = "no TLS on this connection";
  if (c->tls && c->tls_done &&
      lx_tls_channel_binding(c->tls, type, probe ? NULL : out, &len, &why)) {
    if (probe) lua_pushboolean(L, 1);
    else lua_pushlstring(L, (const char *)out, len);
    return 1;
  }
  lua_pushnil(L);
  lua_pushstring(L, why);
  return 2;
}

static int l_pause(lua_State *L) {
  conn *c = check_conn(L);
  if (c->h.closed || c->draining) return 0;   /* (closing: nothing is parsed) */
  c->paused = 1;
  if (c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
  return 0;
}

static int l_resume(lua_State *L) {
  conn *c = check_conn(L);
  if (c->h.closed || !c->paused) return 0;
  c->paused = 0;
  lx_defer(c->h.lp, &c->cont);           /* parse what was left, then read */
  return 0;
}

/* conn:close([linger]): graceful; queued bytes are sent first. A peer that
 * takes none of them for linger seconds (default CLOSE_LINGER_S) has the
 * socket aborted (the idle sweep of net_io.c checks the progress). From
 * the close on, what the peer sends is read and dropped, and after our FIN
 * the socket waits for the peer's (a lingering close, lx_net_drain in
 * net_io.c): closing on unread input would reset the connection and lose
 * what we sent last. */
#define CLOSE_LINGER_S 30.0
static int l_close(lua_State *L) {
  conn *c = check_conn(L);
  lua_Number linger = luaL_optnumber(L, 2, CLOSE_LINGER_S);
  if (linger != linger || linger < 0) return luaL_argerror(L, 2, "linger must be a number of seconds >= 0");
  if (linger > 86400.0) linger = 86400.0;
  if (c->h.closed || c->closing) return 0;
  c->closing = 1;
  if (!c->connecting) {
    c->close_linger = (uint64_t)(linger * 1000 + 0.5);
    c->close_deadline = uv_now(&c->h.lp->uv) + c->close_linger;
    if (!c->close_deadline) c->close_deadline = 1;  /* 0 means none */
    c->close_left = (size_t)-1;                  /* the first sweep is progress */
    lx_net_touch(c);                             /* listed for the sweep */
  }
  if (c->ws && !c->connecting && lx_net_ws_close(c)) return 0;
  if (!c->connecting) lx_net_drain(c);   /* read and drop until the peer's EOF */
  if (c->tls && c->tls_done && lx_net_encrypt_pending(c) &&
      lx_tls_shutdown(c->tls) == LX_TLS_OK)
    lx_net_move_ciphertext(c);                   /* close_notify goes out last */
  if (c->connecting) lx_net_conn_abort(c);
  else lx_defer(c->h.lp, &c->flush);   /* flush, then shutdown and close */
  return 0;
}

static int l_abort(lua_State *L) {
  conn *c = check_conn(L);
  lx_net_conn_abort(c);
  return 0;
}

static int l_set_owner(lua_State *L) {
  check_conn(L);
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, 1);
  return 0;
}

static int l_info(lua_State *L) {
  conn *c = check_conn(L);
  struct sockaddr_storage ss;
  int len = sizeof ss;
  char ip[64] = "";
  int port = 0;
  if (!c->h.closed &&
      uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
    if (ss.ss_family == AF_INET) {
      uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
      port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
      port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
  }
  lua_createtable(L, 0, 9);
  lua_pushinteger(L, (lua_Integer)c->writes);
  lua_setfield(L, -2, "writes");
  lua_pushstring(L, ip);
  lua_setfield(L, -2, "peer");
  lua_pushinteger(L, port);
  lua_setfield(L, -2, "port");
  lua_pushinteger(L, (lua_Integer)c->bytes_in);
  lua_setfield(L, -2, "bytes_in");
  lua_pushboolean(L, c->parser && lx_stream_is_idle(c->parser));
  lua_setfield(L, -2, "parser_idle");
  lua_pushinteger(L, (lua_Integer)c->bytes_out);
  lua_setfield(L, -2, "bytes_out");
  lua_pushinteger(L, (lua_Integer)(c->out_len + c->wbuf_len));
  lua_setfield(L, -2, "queued");
  lua_pushboolean(L, !c->h.closed);
  lua_setfield(L, -2, "open");
  lua_pushboolean(L, c->ws != NULL);
  lua_setfield(L, -2, "websocket");
  return 1;
}

/* conn:bytes_in() -> bytes read from the socket so far (cheap: for rate
 * limits checked on every stanza) */
static int l_bytes_in(lua_State *L) {
  conn *c = check_conn(L);
  lua_pushinteger(L, (lua_Integer)c->bytes_in);
  return 1;
}

/* conn:raw() -> true: no stream parser; every byte read (decrypted, under
 * TLS) is dispatched as a "data" event, for protocols other than XMPP on
 * lxmpp's own connections and TLS (HTTP upload, XEP-0363). */
static int l_raw(lua_State *L) {
  conn *c = check_conn(L);
  if (c->h.closed) return fail_closed(L);
  if (c->parser) return luaL_error(L, "raw: this connection parses XML");
  if (c->ws) return luaL_error(L, "raw: this connection is in WebSocket mode");
  c->raw = 1;
  lx_defer(c->h.lp, &c->cont);           /* deliver what TLS holds, then read */
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:websocket{ role = "server"|"client", max_message = bytes,
 * buffered = bytes } -> true: WebSocket mode (RFC 6455, RFC 7395; see
 * net_ws.c), typically after an HTTP Upgrade handshake done in raw mode.
 * buffered: what raw mode delivered past the handshake, decoded first.
 * Messages are parsed once parse() is called. */
static int l_websocket(lua_State *L) {
  conn *c = check_conn(L);
  const char *role, *buf = NULL;
  size_t blen = 0;
  lua_Integer max = DEFAULT_MAX_MESSAGE;
  int r;
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  if (c->h.closed || c->closing) return fail_closed(L);
  if (c->ws) return luaL_error(L, "websocket: this connection is in WebSocket mode already");
  if (c->parser) return luaL_error(L, "websocket: this connection parses XML already");
  lua_getfield(L, 2, "role");                    /* c, opts, role */
  role = lua_tostring(L, 3);
  if (role && strcmp(role, "server") == 0) r = LX_WS_SERVER;
  else if (role && strcmp(role, "client") == 0) r = LX_WS_CLIENT;
  else return luaL_error(L, "websocket: role must be \"server\" or \"client\"");
  if (lua_getfield(L, 2, "max_message") != LUA_TNIL) {
    int isnum;
    max = lua_tointegerx(L, -1, &isnum);
    if (!isnum || max < 1 || max > (1 << 30))
      return luaL_error(L, "websocket: max_message must be an integer from 1 to %d", 1 << 30);
  }
  if (lua_getfield(L, 2, "buffered") != LUA_TNIL) buf = luaL_checklstring(L, -1, &blen);
  if (!lx_net_ws_start(c, r, (size_t)max, buf, blen)) return luaL_error(L, "out of memory");
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:set_max_queue(bytes): the bound on queued output */
static int l_set_max_queue(lua_State *L) {
  conn *c = check_conn(L);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n > 0, 2, "must be positive");
  c->max_out = (size_t)n;
  return 0;
}

static int l_conn_tostring(lua_State *L) {
  conn *c = check_conn(L);
  lua_pushfstring(L, "lxmpp.conn (%s)", c->h.closed ? "closed" : "open");
  return 1;
}

/* ---- listener methods --------------------------------------------------------- */

static int l_listener_port(lua_State *L) {
  listener *ls = luaL_checkudata(L, 1, LISTENER_MT);
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (ls->h.closed ||
      uv_tcp_getsockname(&ls->tcp, (struct sockaddr *)&ss, &len) != 0)
    return 0;
  if (ss.ss_family == AF_INET)
    lua_pushinteger(L, ntohs(((struct sockaddr_in *)&ss)->sin_port));
  else
    lua_pushinteger(L, ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
  return 1;
}

static int l_listener_close(lua_State *L) {
  listener *ls = luaL_checkudata(L, 1, LISTENER_MT);
  lx_handle_close(&ls->h, (uv_handle_t *)&ls->tcp);
  return 0;
}

/* core.net_spare() -> buffers, bytes: the spare output buffers the loop
 * keeps for its connections (net_io.c, pool_put; for specs and
 * diagnostics) */
static int l_net_spare(lua_State *L) {
  size_t bytes, n = lx_net_spare(lx_loop_get(L), &bytes);
  lua_pushinteger(L, (lua_Integer)n);
  lua_pushinteger(L, (lua_Integer)bytes);
  return 2;
}

void lx_open_net(lua_State *L) {
  static const luaL_Reg conn_methods[] = {
    {"parse", l_parse}, {"write", l_write}, {"restart", l_restart},
    {"pause", l_pause}, {"resume", l_resume}, {"close", l_close},
    {"abort", l_abort}, {"info", l_info}, {"set_owner", l_set_owner},
    {"set_max_queue", l_set_max_queue}, {"starttls", l_starttls},
    {"bytes_in", l_bytes_in}, {"raw", l_raw}, {"websocket", l_websocket},
    {"tls_info", l_tls_info}, {"tls_peer_is", l_tls_peer_is}, {"channel_binding", l_channel_binding},
    {"tls_ticket", l_tls_ticket},
    {NULL, NULL}
  };
  static const luaL_Reg listener_methods[] = {
    {"port", l_listener_port}, {"close", l_listener_close}, {NULL, NULL}
  };
  /* no __gc: a conn is pinned while open and its close callback frees all */
  lx_class(L, CONN_MT, conn_methods, NULL, NULL, l_conn_tostring);
  lx_class(L, LISTENER_MT, listener_methods, NULL, NULL, NULL);
  lua_pop(L, 2);
  lua_pushcfunction(L, l_tcp_connect);
  lua_setfield(L, -2, "tcp_connect");
  lua_pushcfunction(L, l_tcp_listen);
  lua_setfield(L, -2, "tcp_listen");
  lua_pushcfunction(L, l_net_spare);
  lua_setfield(L, -2, "net_spare");
}
