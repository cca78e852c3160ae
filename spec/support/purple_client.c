/*
 * A headless XMPP client on libpurple (Pidgin's engine, Debian's
 * libpurple-dev 2.14), for spec/interop/server_purple_spec.lua, which
 * compiles it into build/ with pkg-config and drives it line by line.
 *
 *   purple_client JID PASSWORD HOST PORT CAFILE
 *
 * JID may carry a resource. libpurple runs on GLib's main loop (the
 * event-loop UI ops below), with a profile of its own in a temporary
 * directory (purple_util_set_user_dir) removed at exit: no accounts.xml or
 * blist.xml of anybody else is read, and the password is never written
 * there (remember_password off). LXMPP_PURPLE_DEBUG=1 sends libpurple's
 * debug log to stderr in its "safe" mode, which writes "password removed"
 * for the payload of <auth/> (PLAIN would carry the password there);
 * otherwise it is off.
 *
 * Trusting the suite's CA: libpurple verifies a server's certificate with
 * its x509 "tls_cached" verifier. Its "ca" pool reads only the system
 * directories (/etc/ssl/certs and /usr/share/purple/ca-certs), never the
 * profile; certificates/x509/tls_peers in the profile holds server
 * certificates a user accepted, and one found there is taken on its
 * fingerprint alone, without chain or name checks. So the CA file goes
 * into the "ca" pool through the certificate API
 * (purple_certificate_pool_store), which makes NSS trust it as a CA for
 * this process: the chain and the host name are then checked as for any
 * public server. A prompt libpurple raises (an unknown CA, a name
 * mismatch) is printed and declined, as a careful user would.
 *
 * DNS: the account has no connect server set, as a real one: libpurple
 * looks up the SRV record _xmpp-client._tcp.DOMAIN and checks the
 * certificate for DOMAIN. This client answers that lookup itself (the
 * DNS UI ops) with HOST and PORT, which must be a numeric address
 * (libpurple takes those without a lookup); every other name lookup
 * libpurple starts (the STUN SRV record it asks for after the server's
 * disco#info) is answered "not found" and printed, so nothing leaves the
 * loopback interface.
 *
 * Output, one record a line, fields separated by tabs (a tab, newline or
 * backslash inside a field is written \t, \n, \\):
 *   trusted-ca SUBJECT         connected FULLJID (signed on)
 *   buddy-added JID ALIAS GROUP
 *   presence JID STATUS-ID MESSAGE        (a contact's status changed)
 *   im FROM TEXT               sent-im TO TEXT
 *   authorize-request JID ON-LIST MESSAGE   request-add JID   notify-added JID
 *   userinfo JID TEXT          notify TYPE TITLE PRIMARY SECONDARY
 *   request KIND TITLE PRIMARY SECONDARY, then declined TITLE   (a prompt)
 *   dns HOST | dns-srv QUERY   (lookups asked for)
 *   connection-error REASON TEXT           disconnected
 *   roster JID ALIAS GROUP ... roster-end   (the "roster" command)
 *   chat-joined ROOM           chat-user ROOM NICK     chat ROOM NICK TEXT
 *   ok COMMAND                 error TEXT              bye
 * Commands on stdin, one a line, words separated by spaces, the last
 * argument taking the rest of the line:
 *   send JID TEXT        add JID [GROUP]     authorize JID     deny JID
 *   info JID             roster              quit
 *   join ROOM@SERVICE NICK                   say ROOM@SERVICE TEXT
 * The client ends with status 0 after quit (or end of input), 1 after a
 * connection error, 2 on bad usage or when LXMPP_PURPLE_TIMEOUT seconds
 * (default 60) pass.
 */
#define _XOPEN_SOURCE 700   /* nftw */
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>
#include <purple.h>

#define UI_ID "lxmpp-purple-spec"

static GMainLoop *loop;
static PurpleAccount *account;
static int exit_code = 0;
static gboolean signed_on = FALSE;
static char *profile_dir;

/* authorization requests waiting for "authorize"/"deny" */
typedef struct {
  char *who;
  PurpleAccountRequestAuthorizationCb authorize_cb, deny_cb;
  void *user_data;
} AuthRequest;
static GList *auth_requests;

/* ---- output ---------------------------------------------------------- */

static void put_field(const char *s) {
  for (; s && *s; s++) {
    switch (*s) {
    case '\t': fputs("\\t", stdout); break;
    case '\n': fputs("\\n", stdout); break;
    case '\\': fputs("\\\\", stdout); break;
    case '\r': break;
    default: putchar(*s);
    }
  }
}

/* record(kind, field, ..., NULL): one line on stdout */
static void record(const char *kind, ...) {
  va_list ap;
  const char *f;
  fputs(kind, stdout);
  va_start(ap, kind);
  while ((f = va_arg(ap, const char *)) != NULL) {
    putchar('\t');
    put_field(f);
  }
  va_end(ap);
  putchar('\n');
  fflush(stdout);
}

/* HTML that libpurple hands the UI, as the text a person would read */
static char *plain(const char *html) {
  char *stripped = purple_markup_strip_html(html ? html : "");
  char *text = purple_unescape_html(stripped);
  g_free(stripped);
  return text;
}

static void finish(int code) {
  if (code > exit_code) exit_code = code;
  if (loop && g_main_loop_is_running(loop)) g_main_loop_quit(loop);
}

/* ---- the event loop: GLib's main loop -------------------------------- */

typedef struct {
  PurpleInputFunction func;
  gpointer data;
} IoWatch;

static gboolean io_ready(GIOChannel *ch, GIOCondition cond, gpointer data) {
  IoWatch *w = data;
  PurpleInputCondition pc = 0;
  if (cond & (G_IO_IN | G_IO_HUP | G_IO_ERR)) pc |= PURPLE_INPUT_READ;
  if (cond & (G_IO_OUT | G_IO_HUP | G_IO_ERR | G_IO_NVAL)) pc |= PURPLE_INPUT_WRITE;
  w->func(w->data, g_io_channel_unix_get_fd(ch), pc);
  return TRUE;
}

static guint input_add(int fd, PurpleInputCondition cond, PurpleInputFunction func, gpointer data) {
  IoWatch *w = g_new0(IoWatch, 1);
  GIOCondition gc = 0;
  GIOChannel *ch;
  guint id;
  w->func = func;
  w->data = data;
  if (cond & PURPLE_INPUT_READ) gc |= G_IO_IN | G_IO_HUP | G_IO_ERR;
  if (cond & PURPLE_INPUT_WRITE) gc |= G_IO_OUT | G_IO_HUP | G_IO_ERR | G_IO_NVAL;
  ch = g_io_channel_unix_new(fd);
  id = g_io_add_watch_full(ch, G_PRIORITY_DEFAULT, gc, io_ready, w, g_free);
  g_io_channel_unref(ch);
  return id;
}

static PurpleEventLoopUiOps eventloop_ops = {
  .timeout_add = g_timeout_add,
  .timeout_remove = g_source_remove,
  .input_add = input_add,
  .input_remove = g_source_remove,
  .input_get_error = NULL,
  .timeout_add_seconds = g_timeout_add_seconds,
};

/* ---- core: preferences before the subsystems read them --------------- */

static void prefs_init(void) {
  /* no UPnP or NAT-PMP discovery (multicast and the default gateway):
     purple_network_init starts it when either is on */
  purple_prefs_add_none("/purple/network");
  purple_prefs_add_bool("/purple/network/auto_ip", FALSE);
  purple_prefs_add_bool("/purple/network/map_ports", FALSE);
  purple_prefs_add_string("/purple/network/public_ip", "127.0.0.1");
  /* no conversation logs in the profile */
  purple_prefs_add_none("/purple/logging");
  purple_prefs_add_bool("/purple/logging/log_ims", FALSE);
  purple_prefs_add_bool("/purple/logging/log_chats", FALSE);
  purple_prefs_add_bool("/purple/logging/log_system", FALSE);
}

static void debug_print(PurpleDebugLevel level, const char *category, const char *text) {
  (void)level;
  fprintf(stderr, "%s: %s", category ? category : "-", text);
}

static gboolean debug_enabled(PurpleDebugLevel level, const char *category) {
  (void)level;
  (void)category;
  return TRUE;
}

static PurpleDebugUiOps debug_ops = {
  .print = debug_print,
  .is_enabled = debug_enabled,
};

/* ---- DNS: numeric addresses only -------------------------------------- */

static gboolean dns_resolve(PurpleDnsQueryData *q, PurpleDnsQueryResolvedCallback resolved,
                            PurpleDnsQueryFailedCallback failed) {
  (void)resolved;
  record("dns", purple_dnsquery_get_host(q), NULL);
  failed(q, "name lookups are refused by this harness");
  return TRUE;
}

static PurpleDnsQueryUiOps dns_ops = {
  .resolve_host = dns_resolve,
};

/* The one SRV record there is: _xmpp-client._tcp.DOMAIN names HOST and
   PORT. Answers come from the main loop: the caller has not yet stored
   the query it gets back when resolve() runs. */
static char *srv_name, *srv_host;
static int srv_port;

typedef struct {
  PurpleSrvTxtQueryData *q;
  PurpleSrvTxtQueryResolvedCallback resolved;
  PurpleSrvTxtQueryFailedCallback failed;
  guint source;
} SrvPending;
static GList *srv_pending;

static gboolean srv_answer(gpointer data) {
  SrvPending *p = data;
  char *name = purple_srv_txt_query_get_query(p->q);
  srv_pending = g_list_remove(srv_pending, p);
  /* each callback destroys p->q */
  if (purple_srv_txt_query_get_type(p->q) == PurpleDnsTypeSrv && purple_strequal(name, srv_name)) {
    PurpleSrvResponse *r = g_new0(PurpleSrvResponse, 1);
    g_strlcpy(r->hostname, srv_host, sizeof r->hostname);
    r->port = srv_port;
    p->resolved(p->q, g_list_append(NULL, r));
  } else {
    p->failed(p->q, "no such record (this harness answers one SRV query)");
  }
  g_free(p);
  return FALSE;
}

static gboolean srv_resolve(PurpleSrvTxtQueryData *q, PurpleSrvTxtQueryResolvedCallback resolved,
                            PurpleSrvTxtQueryFailedCallback failed) {
  SrvPending *p = g_new0(SrvPending, 1);
  record("dns-srv", purple_srv_txt_query_get_query(q), NULL);
  p->q = q;
  p->resolved = resolved;
  p->failed = failed;
  p->source = g_idle_add(srv_answer, p);
  srv_pending = g_list_prepend(srv_pending, p);
  return TRUE;
}

static void srv_destroy(PurpleSrvTxtQueryData *q) {
  GList *l;
  for (l = srv_pending; l; l = l->next) {
    SrvPending *p = l->data;
    if (p->q == q) {
      g_source_remove(p->source);
      srv_pending = g_list_delete_link(srv_pending, l);
      g_free(p);
      return;
    }
  }
}

static PurpleSrvTxtQueryUiOps srv_ops = {
  .resolve = srv_resolve,
  .destroy = srv_destroy,
};

/* ---- accounts: subscription requests ---------------------------------- */

static void notify_added(PurpleAccount *a, const char *who, const char *id, const char *alias,
                         const char *msg) {
  (void)a; (void)id; (void)alias; (void)msg;
  record("notify-added", who, NULL);
}

static void request_add(PurpleAccount *a, const char *who, const char *id, const char *alias,
                        const char *msg) {
  (void)a; (void)id; (void)alias; (void)msg;
  record("request-add", who, NULL);
}

static void *request_authorize(PurpleAccount *a, const char *who, const char *id, const char *alias,
                               const char *msg, gboolean on_list,
                               PurpleAccountRequestAuthorizationCb authorize_cb,
                               PurpleAccountRequestAuthorizationCb deny_cb, void *user_data) {
  AuthRequest *r = g_new0(AuthRequest, 1);
  (void)a; (void)id; (void)alias;
  r->who = g_strdup(who);
  r->authorize_cb = authorize_cb;
  r->deny_cb = deny_cb;
  r->user_data = user_data;
  auth_requests = g_list_append(auth_requests, r);
  record("authorize-request", who, on_list ? "on-list" : "not-on-list", msg ? msg : "", NULL);
  return r;
}

static void close_account_request(void *handle) {
  AuthRequest *r = handle;
  if (g_list_find(auth_requests, r)) {
    auth_requests = g_list_remove(auth_requests, r);
    g_free(r->who);
    g_free(r);
  }
}

static PurpleAccountUiOps account_ops = {
  .notify_added = notify_added,
  .request_add = request_add,
  .request_authorize = request_authorize,
  .close_account_request = close_account_request,
};

/* ---- connection ------------------------------------------------------- */

static const char *reason_name(PurpleConnectionError reason) {
  switch (reason) {
  case PURPLE_CONNECTION_ERROR_NETWORK_ERROR: return "network-error";
  case PURPLE_CONNECTION_ERROR_INVALID_USERNAME: return "invalid-username";
  case PURPLE_CONNECTION_ERROR_AUTHENTICATION_FAILED: return "authentication-failed";
  case PURPLE_CONNECTION_ERROR_AUTHENTICATION_IMPOSSIBLE: return "authentication-impossible";
  case PURPLE_CONNECTION_ERROR_NO_SSL_SUPPORT: return "no-ssl-support";
  case PURPLE_CONNECTION_ERROR_ENCRYPTION_ERROR: return "encryption-error";
  case PURPLE_CONNECTION_ERROR_NAME_IN_USE: return "name-in-use";
  case PURPLE_CONNECTION_ERROR_INVALID_SETTINGS: return "invalid-settings";
  case PURPLE_CONNECTION_ERROR_CERT_NOT_PROVIDED: return "cert-not-provided";
  case PURPLE_CONNECTION_ERROR_CERT_UNTRUSTED: return "cert-untrusted";
  case PURPLE_CONNECTION_ERROR_CERT_EXPIRED: return "cert-expired";
  case PURPLE_CONNECTION_ERROR_CERT_NOT_ACTIVATED: return "cert-not-activated";
  case PURPLE_CONNECTION_ERROR_CERT_HOSTNAME_MISMATCH: return "cert-hostname-mismatch";
  case PURPLE_CONNECTION_ERROR_CERT_FINGERPRINT_MISMATCH: return "cert-fingerprint-mismatch";
  case PURPLE_CONNECTION_ERROR_CERT_SELF_SIGNED: return "cert-self-signed";
  case PURPLE_CONNECTION_ERROR_CERT_OTHER_ERROR: return "cert-other-error";
  default: return "other-error";
  }
}

static void report_disconnect_reason(PurpleConnection *gc, PurpleConnectionError reason, const char *text) {
  (void)gc;
  record("connection-error", reason_name(reason), text ? text : "", NULL);
  finish(1);
}

static PurpleConnectionUiOps connection_ops = {
  .report_disconnect_reason = report_disconnect_reason,
};

/* ---- notifications and prompts ---------------------------------------- */

static void *notify_message(PurpleNotifyMsgType type, const char *title, const char *primary,
                            const char *secondary) {
  const char *t = type == PURPLE_NOTIFY_MSG_ERROR ? "error"
    : type == PURPLE_NOTIFY_MSG_WARNING ? "warning" : "info";
  record("notify", t, title ? title : "", primary ? primary : "", secondary ? secondary : "", NULL);
  return NULL;
}

static void *notify_userinfo(PurpleConnection *gc, const char *who, PurpleNotifyUserInfo *info) {
  char *text = purple_notify_user_info_get_text_with_newline(info, "\n");
  char *p = plain(text);
  (void)gc;
  record("userinfo", who, p, NULL);
  g_free(p);
  g_free(text);
  return NULL;
}

static PurpleNotifyUiOps notify_ops = {
  .notify_message = notify_message,
  .notify_userinfo = notify_userinfo,
};

/* A prompt's actions come as (label, callback) pairs; the one labelled as
   a refusal is taken. */
static void *request_action(const char *title, const char *primary, const char *secondary,
                            int default_action, PurpleAccount *a, const char *who,
                            PurpleConversation *conv, void *user_data, size_t count, va_list actions) {
  static const char *const refusals[] = { "Reject", "_Reject", "No", "_No", "Cancel", "_Cancel", NULL };
  PurpleRequestActionCb chosen = NULL;
  int chosen_index = -1;
  size_t i;
  (void)default_action; (void)a; (void)who; (void)conv;
  record("request", "action", title ? title : "", primary ? primary : "", secondary ? secondary : "", NULL);
  for (i = 0; i < count; i++) {
    const char *label = va_arg(actions, const char *);
    PurpleRequestActionCb cb = va_arg(actions, PurpleRequestActionCb);
    int k;
    for (k = 0; refusals[k]; k++)
      if (chosen == NULL && label && strcmp(label, refusals[k]) == 0) {
        chosen = cb;
        chosen_index = (int)i;
      }
  }
  if (chosen == NULL) {
    record("error", "a prompt without a refusal to choose", NULL);
    finish(2);
    return NULL;
  }
  record("declined", title ? title : "", NULL);
  chosen(user_data, chosen_index);
  return NULL;
}

static void *request_input(const char *title, const char *primary, const char *secondary,
                           const char *default_value, gboolean multiline, gboolean masked, gchar *hint,
                           const char *ok_text, GCallback ok_cb, const char *cancel_text,
                           GCallback cancel_cb, PurpleAccount *a, const char *who,
                           PurpleConversation *conv, void *user_data) {
  (void)default_value; (void)multiline; (void)masked; (void)hint; (void)ok_text; (void)ok_cb;
  (void)cancel_text; (void)a; (void)who; (void)conv;
  record("request", "input", title ? title : "", primary ? primary : "", secondary ? secondary : "", NULL);
  if (cancel_cb) ((PurpleRequestInputCb)cancel_cb)(user_data, NULL);
  return NULL;
}

static void *request_fields(const char *title, const char *primary, const char *secondary,
                            PurpleRequestFields *fields, const char *ok_text, GCallback ok_cb,
                            const char *cancel_text, GCallback cancel_cb, PurpleAccount *a,
                            const char *who, PurpleConversation *conv, void *user_data) {
  (void)ok_text; (void)ok_cb; (void)cancel_text; (void)a; (void)who; (void)conv;
  record("request", "fields", title ? title : "", primary ? primary : "", secondary ? secondary : "", NULL);
  if (cancel_cb) ((PurpleRequestFieldsCb)cancel_cb)(user_data, fields);
  return NULL;
}

static PurpleRequestUiOps request_ops = {
  .request_input = request_input,
  .request_action = request_action,
  .request_fields = request_fields,
};

/* ---- signals ---------------------------------------------------------- */

static void on_signed_on(PurpleConnection *gc) {
  signed_on = TRUE;
  record("connected", purple_connection_get_display_name(gc), NULL);
}

static void on_signed_off(PurpleConnection *gc) {
  (void)gc;
  record("disconnected", NULL);
}

static const char *buddy_group(PurpleBuddy *b) {
  PurpleGroup *g = purple_buddy_get_group(b);
  return g ? purple_group_get_name(g) : "";
}

static void on_buddy_added(PurpleBuddy *b) {
  const char *alias = purple_buddy_get_alias_only(b);
  record("buddy-added", purple_buddy_get_name(b), alias ? alias : "", buddy_group(b), NULL);
}

static void print_presence(PurpleBuddy *b) {
  PurpleStatus *st = purple_presence_get_active_status(purple_buddy_get_presence(b));
  const char *msg = st ? purple_status_get_attr_string(st, "message") : NULL;
  char *text = plain(msg);
  record("presence", purple_buddy_get_name(b), st ? purple_status_get_id(st) : "", text, NULL);
  g_free(text);
}

static void on_buddy_status(PurpleBuddy *b, PurpleStatus *old, PurpleStatus *now) {
  (void)old; (void)now;
  print_presence(b);
}

static void on_buddy_signed(PurpleBuddy *b) {
  print_presence(b);
}

static void on_received_im(PurpleAccount *a, char *sender, char *message, PurpleConversation *conv,
                           PurpleMessageFlags flags) {
  char *text = plain(message);
  (void)a; (void)conv; (void)flags;
  record("im", sender, text, NULL);
  g_free(text);
}

static void on_sent_im(PurpleAccount *a, const char *to, const char *message) {
  char *text = plain(message);
  (void)a;
  record("sent-im", to, text, NULL);
  g_free(text);
}

static void on_chat_joined(PurpleConversation *conv) {
  record("chat-joined", purple_conversation_get_name(conv), NULL);
}

static void on_chat_buddy_joined(PurpleConversation *conv, const char *name, PurpleConvChatBuddyFlags flags,
                                 gboolean new_arrival) {
  (void)flags; (void)new_arrival;
  record("chat-user", purple_conversation_get_name(conv), name, NULL);
}

static void on_received_chat(PurpleAccount *a, char *sender, char *message, PurpleConversation *conv,
                             PurpleMessageFlags flags) {
  char *text = plain(message);
  (void)a; (void)flags;
  record("chat", purple_conversation_get_name(conv), sender, text, NULL);
  g_free(text);
}

static void ui_init(void) {
  static int handle;
  purple_accounts_set_ui_ops(&account_ops);
  purple_connections_set_ui_ops(&connection_ops);
  purple_notify_set_ui_ops(&notify_ops);
  purple_request_set_ui_ops(&request_ops);
  purple_dnsquery_set_ui_ops(&dns_ops);
  purple_srv_txt_query_set_ui_ops(&srv_ops);
  purple_signal_connect(purple_connections_get_handle(), "signed-on", &handle,
                        PURPLE_CALLBACK(on_signed_on), NULL);
  purple_signal_connect(purple_connections_get_handle(), "signed-off", &handle,
                        PURPLE_CALLBACK(on_signed_off), NULL);
  purple_signal_connect(purple_blist_get_handle(), "buddy-added", &handle,
                        PURPLE_CALLBACK(on_buddy_added), NULL);
  purple_signal_connect(purple_blist_get_handle(), "buddy-status-changed", &handle,
                        PURPLE_CALLBACK(on_buddy_status), NULL);
  purple_signal_connect(purple_blist_get_handle(), "buddy-signed-on", &handle,
                        PURPLE_CALLBACK(on_buddy_signed), NULL);
  purple_signal_connect(purple_blist_get_handle(), "buddy-signed-off", &handle,
                        PURPLE_CALLBACK(on_buddy_signed), NULL);
  purple_signal_connect(purple_conversations_get_handle(), "received-im-msg", &handle,
                        PURPLE_CALLBACK(on_received_im), NULL);
  purple_signal_connect(purple_conversations_get_handle(), "sent-im-msg", &handle,
                        PURPLE_CALLBACK(on_sent_im), NULL);
  purple_signal_connect(purple_conversations_get_handle(), "chat-joined", &handle,
                        PURPLE_CALLBACK(on_chat_joined), NULL);
  purple_signal_connect(purple_conversations_get_handle(), "chat-buddy-joined", &handle,
                        PURPLE_CALLBACK(on_chat_buddy_joined), NULL);
  purple_signal_connect(purple_conversations_get_handle(), "received-chat-msg", &handle,
                        PURPLE_CALLBACK(on_received_chat), NULL);
}

static PurpleCoreUiOps core_ops = {
  .ui_prefs_init = prefs_init,
  .ui_init = ui_init,
};

/* ---- commands --------------------------------------------------------- */

static PurpleConnection *online(const char *cmd) {
  PurpleConnection *gc = purple_account_get_connection(account);
  if (!signed_on || gc == NULL) {
    record("error", cmd, "not signed on", NULL);
    return NULL;
  }
  return gc;
}

static void cmd_send(const char *who, const char *text) {
  PurpleConversation *conv;
  char *html;
  if (!online("send")) return;
  conv = purple_find_conversation_with_account(PURPLE_CONV_TYPE_IM, who, account);
  if (conv == NULL) conv = purple_conversation_new(PURPLE_CONV_TYPE_IM, account, who);
  /* what a person types is text: libpurple sends HTML */
  html = g_markup_escape_text(text, -1);
  purple_conv_im_send(PURPLE_CONV_IM(conv), html);
  g_free(html);
  record("ok", "send", NULL);
}

static void cmd_add(const char *who, const char *group_name) {
  PurpleGroup *group = NULL;
  PurpleBuddy *b;
  if (!online("add")) return;
  if (group_name && *group_name) {
    group = purple_find_group(group_name);
    if (group == NULL) {
      group = purple_group_new(group_name);
      purple_blist_add_group(group, NULL);
    }
  }
  b = purple_buddy_new(account, who, NULL);
  purple_blist_add_buddy(b, NULL, group, NULL);
  purple_account_add_buddy(account, b);   /* roster set and subscribe */
  record("ok", "add", NULL);
}

static void cmd_answer(const char *who, gboolean yes) {
  GList *l;
  for (l = auth_requests; l; l = l->next) {
    AuthRequest *r = l->data;
    if (purple_strequal(r->who, who)) {
      auth_requests = g_list_delete_link(auth_requests, l);
      (yes ? r->authorize_cb : r->deny_cb)(r->user_data);
      g_free(r->who);
      g_free(r);
      record("ok", yes ? "authorize" : "deny", NULL);
      return;
    }
  }
  record("error", yes ? "authorize" : "deny", "no request from that JID", NULL);
}

/* join ROOM@SERVICE NICK: the fields Pidgin's "Join a Chat" dialog fills */
static void cmd_join(const char *room_jid, const char *nick) {
  PurpleConnection *gc = online("join");
  GHashTable *components;
  const char *at = strchr(room_jid, '@');
  if (!gc) return;
  if (at == NULL || nick == NULL || *nick == '\0') {
    record("error", "join", "usage: join ROOM@SERVICE NICK", NULL);
    return;
  }
  components = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  g_hash_table_replace(components, g_strdup("room"), g_strndup(room_jid, (gsize)(at - room_jid)));
  g_hash_table_replace(components, g_strdup("server"), g_strdup(at + 1));
  g_hash_table_replace(components, g_strdup("handle"), g_strdup(nick));
  serv_join_chat(gc, components);
  g_hash_table_destroy(components);
  record("ok", "join", NULL);
}

/* say ROOM@SERVICE TEXT: a groupchat message in a joined room */
static void cmd_say(const char *room_jid, const char *text) {
  PurpleConversation *conv;
  char *html;
  if (!online("say")) return;
  conv = purple_find_conversation_with_account(PURPLE_CONV_TYPE_CHAT, room_jid, account);
  if (conv == NULL) {
    record("error", "say", "not in that room", NULL);
    return;
  }
  html = g_markup_escape_text(text, -1);
  purple_conv_chat_send(PURPLE_CONV_CHAT(conv), html);
  g_free(html);
  record("ok", "say", NULL);
}

static void cmd_roster(void) {
  GSList *buddies = purple_find_buddies(account, NULL), *l;
  for (l = buddies; l; l = l->next) {
    PurpleBuddy *b = l->data;
    const char *alias = purple_buddy_get_alias_only(b);
    record("roster", purple_buddy_get_name(b), alias ? alias : "", buddy_group(b), NULL);
  }
  g_slist_free(buddies);
  record("roster-end", NULL);
}

static void command(char *line) {
  char *cmd = line, *arg, *rest = NULL;
  g_strstrip(line);
  if (*line == '\0') return;
  arg = strchr(cmd, ' ');
  if (arg) {
    *arg++ = '\0';
    while (*arg == ' ') arg++;
    rest = strchr(arg, ' ');
    if (rest) {
      *rest++ = '\0';
      while (*rest == ' ') rest++;
    }
  }
  if (strcmp(cmd, "quit") == 0) {
    finish(0);
  } else if (strcmp(cmd, "roster") == 0) {
    if (online("roster")) cmd_roster();
  } else if (arg == NULL || *arg == '\0') {
    record("error", cmd, "unknown command or missing JID", NULL);
  } else if (strcmp(cmd, "send") == 0) {
    cmd_send(arg, rest ? rest : "");
  } else if (strcmp(cmd, "add") == 0) {
    cmd_add(arg, rest);
  } else if (strcmp(cmd, "authorize") == 0) {
    cmd_answer(arg, TRUE);
  } else if (strcmp(cmd, "deny") == 0) {
    cmd_answer(arg, FALSE);
  } else if (strcmp(cmd, "join") == 0) {
    cmd_join(arg, rest);
  } else if (strcmp(cmd, "say") == 0) {
    cmd_say(arg, rest ? rest : "");
  } else if (strcmp(cmd, "info") == 0) {
    PurpleConnection *gc = online("info");
    if (gc) {
      serv_get_info(gc, arg);
      record("ok", "info", NULL);
    }
  } else {
    record("error", cmd, "unknown command", NULL);
  }
}

static gboolean stdin_ready(GIOChannel *ch, GIOCondition cond, gpointer data) {
  char *line = NULL;
  gsize len;
  GIOStatus st;
  (void)cond; (void)data;
  st = g_io_channel_read_line(ch, &line, &len, NULL, NULL);
  if (st == G_IO_STATUS_NORMAL) {
    command(line);
    g_free(line);
    return TRUE;
  }
  g_free(line);
  if (st == G_IO_STATUS_AGAIN) return TRUE;
  finish(0);   /* end of input: as quit */
  return FALSE;
}

static gboolean timed_out(gpointer data) {
  (void)data;
  record("error", "timeout", NULL);
  finish(2);
  return FALSE;
}

/* ---- the profile directory and the CA --------------------------------- */

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb; (void)flag; (void)ftw;
  return remove(path);
}

static void remove_profile(void) {
  if (profile_dir) nftw(profile_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int trust_ca(const char *cafile) {
  PurpleCertificateScheme *x509;
  PurpleCertificatePool *ca;
  GSList *certs, *l;
  int n = 0;
  if (!purple_ssl_is_supported()) {   /* loads the SSL plugin (NSS), which brings the x509 scheme */
    record("error", "libpurple has no SSL plugin", NULL);
    return -1;
  }
  x509 = purple_certificate_find_scheme("x509");
  ca = purple_certificate_find_pool("x509", "ca");
  if (x509 == NULL || ca == NULL) {
    record("error", "libpurple has no x509 scheme or CA pool", NULL);
    return -1;
  }
  certs = purple_certificates_import(x509, cafile);
  for (l = certs; l; l = l->next) {
    PurpleCertificate *crt = l->data;
    char *id = purple_certificate_get_unique_id(crt);
    char *subject = purple_certificate_get_subject_name(crt);
    if (purple_certificate_pool_store(ca, id, crt)) {
      record("trusted-ca", subject ? subject : id, NULL);
      n++;
    }
    g_free(id);
    g_free(subject);
    purple_certificate_destroy(crt);
  }
  g_slist_free(certs);
  if (n == 0) {
    record("error", "no CA certificate could be loaded", cafile, NULL);
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  const char *timeout_env = getenv("LXMPP_PURPLE_TIMEOUT");
  int timeout = timeout_env ? atoi(timeout_env) : 60;
  GError *err = NULL;
  GIOChannel *in;
  PurpleSavedStatus *status;
  char *domain;

  if (argc != 6) {
    fprintf(stderr, "usage: %s JID PASSWORD HOST PORT CAFILE\n", argv[0]);
    return 2;
  }
  if (timeout <= 0) timeout = 60;

  profile_dir = g_dir_make_tmp("lxmpp-purple-XXXXXX", &err);
  if (profile_dir == NULL) {
    record("error", "temporary profile", err ? err->message : "", NULL);
    return 2;
  }
  purple_util_set_user_dir(profile_dir);

  /* (the UI ops print whatever the enabled flag says: set only when asked) */
  purple_debug_set_enabled(FALSE);
  purple_debug_set_unsafe(FALSE);
  if (g_strcmp0(getenv("LXMPP_PURPLE_DEBUG"), "1") == 0) purple_debug_set_ui_ops(&debug_ops);
  purple_core_set_ui_ops(&core_ops);
  purple_eventloop_set_ui_ops(&eventloop_ops);
  loop = g_main_loop_new(NULL, FALSE);

  if (!purple_core_init(UI_ID)) {
    record("error", "purple_core_init failed", NULL);
    remove_profile();
    return 2;
  }
  purple_set_blist(purple_blist_new());

  if (trust_ca(argv[5]) != 0) {
    purple_core_quit();
    remove_profile();
    return 2;
  }

  /* no connect server: libpurple looks up the JID's domain's SRV record,
     as for a real account, and checks the certificate for that domain */
  domain = strchr(argv[1], '@');
  domain = g_strndup(domain ? domain + 1 : argv[1], strcspn(domain ? domain + 1 : argv[1], "/"));
  srv_name = g_strconcat("_xmpp-client._tcp.", domain, NULL);
  g_free(domain);
  srv_host = argv[3];
  srv_port = atoi(argv[4]);

  account = purple_account_new(argv[1], "prpl-jabber");
  purple_account_set_remember_password(account, FALSE);
  purple_account_set_password(account, argv[2]);
  purple_accounts_add(account);

  in = g_io_channel_unix_new(0);
  g_io_add_watch(in, G_IO_IN | G_IO_HUP | G_IO_ERR, stdin_ready, NULL);
  g_io_channel_unref(in);
  g_timeout_add_seconds((guint)timeout, timed_out, NULL);

  /* signing on, as Pidgin does: the account enabled, the status available */
  purple_account_set_enabled(account, UI_ID, TRUE);
  status = purple_savedstatus_new(NULL, PURPLE_STATUS_AVAILABLE);
  purple_savedstatus_set_message(status, "libpurple here");
  purple_savedstatus_activate(status);

  g_main_loop_run(loop);

  if (purple_account_is_connected(account) || purple_account_is_connecting(account))
    purple_account_disconnect(account);
  purple_core_quit();
  g_main_loop_unref(loop);
  remove_profile();
  g_free(profile_dir);
  record("bye", NULL);
  return exit_code;
}
