/* A small XMPP client on libstrophe (Debian's libstrophe-dev), for
 * spec/interop/server_strophe_spec.lua: a client nobody here wrote, driving
 * the embedded server.
 *
 *   strophe_client JID PASSWORD HOST PORT CAFILE PEER BODY
 *
 * Connects to HOST:PORT with TLS required, verifying the server's
 * certificate against CAFILE for the JID's domain (libstrophe's own check),
 * logs in, sends its presence, then, unless PEER is "-", sends BODY to PEER
 * and waits for one message back from PEER's bare JID. It prints one
 * tab-separated record per line:
 *
 *   mech NAME           the SASL mechanism libstrophe chose (from its log)
 *   online JID          bound, with TLS (secured 1)
 *   got FROM BODY       the reply
 *   certfail REASON     the certificate was not accepted
 *   disconnected ERROR STREAM_ERROR_TEXT
 *
 * Exit status: 0 when it did all it was asked, 1 otherwise, 2 on timeout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <strophe.h>

#define TIMEOUT_MS 20000

typedef struct {
    const char *peer;
    const char *body;
    int done;     /* everything asked for happened */
    int timeout;
} client;

/* The mechanism named in libstrophe's "SENT: <auth ... mechanism=..." line. */
static void on_log(void *userdata, xmpp_log_level_t level, const char *area, const char *msg)
{
    const char *m = strstr(msg, "<auth ");
    (void)userdata;
    (void)area;
    if (m && (m = strstr(m, "mechanism=\"")) != NULL) {
        const char *start = m + strlen("mechanism=\"");
        const char *end = strchr(start, '"');
        if (end) printf("mech\t%.*s\n", (int)(end - start), start);
    }
    if (level >= XMPP_LEVEL_WARN) fprintf(stderr, "%s: %s\n", area, msg);
    else if (getenv("STROPHE_DEBUG") && *getenv("STROPHE_DEBUG")) fprintf(stderr, "%s: %s\n", area, msg);
}

static int on_certfail(const xmpp_tlscert_t *cert, const char *const errormsg)
{
    (void)cert;
    printf("certfail\t%s\n", errormsg ? errormsg : "");
    return 0; /* never accept a certificate the CA check refused */
}

/* Length of the bare part of a JID (up to '/'). */
static size_t bare_len(const char *jid)
{
    const char *slash = strchr(jid, '/');
    return slash ? (size_t)(slash - jid) : strlen(jid);
}

static int on_message(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *userdata)
{
    client *c = userdata;
    const char *from = xmpp_stanza_get_from(stanza);
    char *body = xmpp_message_get_body(stanza);
    if (body && from && bare_len(from) == strlen(c->peer) && strncmp(from, c->peer, strlen(c->peer)) == 0) {
        printf("got\t%s\t%s\n", from, body);
        c->done = 1;
        xmpp_disconnect(conn);
    }
    if (body) xmpp_free(xmpp_conn_get_context(conn), body);
    return 1;
}

static void on_conn(xmpp_conn_t *conn, xmpp_conn_event_t status, int error,
                    xmpp_stream_error_t *stream_error, void *userdata)
{
    client *c = userdata;
    xmpp_ctx_t *ctx = xmpp_conn_get_context(conn);
    if (status == XMPP_CONN_CONNECT) {
        xmpp_stanza_t *pres = xmpp_presence_new(ctx);
        printf("online\t%s\tsecured %d\n", xmpp_conn_get_bound_jid(conn), xmpp_conn_is_secured(conn));
        xmpp_handler_add(conn, on_message, NULL, "message", NULL, c);
        xmpp_send(conn, pres);
        xmpp_stanza_release(pres);
        if (strcmp(c->peer, "-") == 0) {
            c->done = 1;
            xmpp_disconnect(conn);
        } else {
            xmpp_stanza_t *msg = xmpp_message_new(ctx, "chat", c->peer, "strophe1");
            xmpp_message_set_body(msg, c->body);
            xmpp_send(conn, msg);
            xmpp_stanza_release(msg);
        }
        return;
    }
    printf("disconnected\t%d\t%s\n", error, stream_error && stream_error->text ? stream_error->text : "");
    xmpp_stop(ctx);
}

static int on_timeout(xmpp_ctx_t *ctx, void *userdata)
{
    client *c = userdata;
    c->timeout = 1;
    xmpp_stop(ctx);
    return 0;
}

int main(int argc, char **argv)
{
    client c = {0};
    xmpp_log_t log = {on_log, NULL};
    xmpp_ctx_t *ctx;
    xmpp_conn_t *conn;
    long port;

    if (argc != 8) {
        fprintf(stderr, "usage: %s JID PASSWORD HOST PORT CAFILE PEER BODY\n", argv[0]);
        return 1;
    }
    port = strtol(argv[4], NULL, 10);
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "bad port %s\n", argv[4]);
        return 1;
    }
    c.peer = argv[6];
    c.body = argv[7];
    setvbuf(stdout, NULL, _IOLBF, 0);

    xmpp_initialize();
    ctx = xmpp_ctx_new(NULL, &log);
    conn = xmpp_conn_new(ctx);
    xmpp_conn_set_flags(conn, XMPP_CONN_FLAG_MANDATORY_TLS);
    xmpp_conn_set_jid(conn, argv[1]);
    xmpp_conn_set_pass(conn, argv[2]);
    xmpp_conn_set_cafile(conn, argv[5]);
    xmpp_conn_set_certfail_handler(conn, on_certfail);
    xmpp_global_timed_handler_add(ctx, on_timeout, TIMEOUT_MS, &c);

    if (xmpp_connect_client(conn, argv[3], (unsigned short)port, on_conn, &c) != XMPP_EOK) {
        printf("disconnected\tconnect failed\t\n");
    } else {
        xmpp_run(ctx);
    }

    xmpp_conn_release(conn);
    xmpp_ctx_free(ctx);
    xmpp_shutdown();
    if (c.timeout) return 2;
    return c.done ? 0 : 1;
}
