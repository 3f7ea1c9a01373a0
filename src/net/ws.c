#include "net/ws.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <libwebsockets.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "broker/broker.h"
#include "broker/client.h"
#include "net/addr.h"
#include "net/link.h"
#include "net/tls.h"
#include "util/log.h"
#include "util/mailbox.h"

#define WS_PATH "/mqtt"
#define WS_MAX_VHOSTS 8
/* Bytes moved per step, either way; the socket buffers hold the rest. */
#define WS_CHUNK 16384

/* A new session's core end, waiting in the mailbox for the core thread. */
struct ws_handoff {
    int fd;
    struct link_meta meta;
};

/*
 * One ws:// or wss:// listener. libwebsockets keeps the vhost's name and
 * interface by pointer, not by copy, and reads them from its thread for as
 * long as the vhost lives: they live here, not on the stack of the caller.
 */
struct ws_vhost {
    struct lws_vhost *vh;
    bool tls;
    char name[16];
    char iface[sizeof(((struct config_url *)0)->host)];
};

struct ws_server {
    struct broker *broker;
    struct lws_context *ctx;
    struct ws_vhost vhosts[WS_MAX_VHOSTS];
    size_t vhost_count;
    /* The tls-* directives at start: wss:// vhosts are made, and reloaded, from these. */
    char *tls_cert, *tls_key, *tls_ca;
    enum config_client_cert client_cert;
    unsigned timeout; /* connect-timeout: seconds for the handshakes */
    pthread_t thread;
    bool thread_started;
    atomic_bool stop;         /* set by the core thread, read by the WS thread */
    atomic_bool reload_tls;   /* likewise: re-read the certificate */
    struct mailbox *handoffs; /* struct ws_handoff, from the WS thread to the core */
    struct event *handoff_ev; /* core thread: watches the mailbox */
};

/*
 * What protocol 0 knows of an accepted connection until it becomes a
 * WebSocket session (lws's opaque pointer of its wsi; WS thread only): enough
 * to say once, when it closes without becoming one, why.
 */
struct ws_pending {
    char peer[64]; /* taken at accept: at the close the socket may be gone */
    bool tls;
    bool explained; /* the reason is logged already */
};

/*
 * One WebSocket session: lws's per-session data of the mqtt protocols, WS
 * thread only. `fd` is our end of the socketpair; lws watches a duplicate of
 * it (`raw`), so that when the core closes its end and lws drops its watch,
 * what the core wrote last can still be read from `fd` and sent.
 */
struct ws_session {
    struct lws *ws;
    struct lws *raw;  /* NULL once lws has dropped its watch */
    int fd;           /* -1 once closed */
    uint8_t *pending; /* from the WebSocket, not yet taken by the socketpair */
    size_t pending_len, pending_off;
    struct link_peer addr; /* its client (link_peer_name() for the log) */
};

static struct ws_server *server_of(struct lws *wsi)
{
    return lws_context_user(lws_get_context(wsi));
}

/* The client of `wsi`; family 0 ("?") once it is gone. */
static struct link_peer peer_addr_of(struct lws *wsi)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int fd = wsi ? lws_get_socket_fd(wsi) : -1;

    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
        return (struct link_peer){0};
    return link_peer_of((struct sockaddr *)&ss, len);
}

/* "127.0.0.1:5000" or "[::1]:5000" for the client of `wsi`; "?" once it is gone. */
static const char *peer_of(struct lws *wsi, char *out, size_t size)
{
    struct link_peer p = peer_addr_of(wsi);
    snprintf(out, size, "%s", link_peer_name(&p).s);
    return out;
}

static bool vhost_is_tls(struct ws_server *ws, struct lws_vhost *vh)
{
    for (size_t i = 0; i < ws->vhost_count; i++)
        if (ws->vhosts[i].vh == vh)
            return ws->vhosts[i].tls;
    return false;
}

/* ---- the WS thread ---------------------------------------------------------- */

/* Queue the core end `fd` of a new session for the core thread, and wake it. */
static void handoff(struct ws_server *ws, int fd, const struct ws_session *s, bool tls)
{
    struct ws_handoff *h = calloc(1, sizeof(*h));

    if (!h) {
        log_error("ws: out of memory handing over a session from %s", link_peer_name(&s->addr).s);
        close(fd);
        return;
    }
    h->fd = fd;
    h->meta.transport = tls ? LINK_WSS : LINK_WS;
    h->meta.over_tls = tls;
    h->meta.peer = s->addr;
    if (mailbox_put(ws->handoffs, h) < 0) {
        log_error("ws: out of memory handing over a session from %s", link_peer_name(&s->addr).s);
        close(fd);
        free(h);
    }
}

/*
 * Give the socketpair what the WebSocket delivered: `data` first from what
 * is pending. Whatever it cannot take now waits in s->pending, and the
 * WebSocket is not read until it has drained. Returns 0, or -1 when the core
 * is gone.
 */
static int to_core(struct ws_session *s, const uint8_t *data, size_t len)
{
    if (s->fd < 0)
        return -1;
    if (!s->raw)
        return 0; /* the core has closed: its last words are still being sent */
    if (s->pending_len == 0 && len) {
        ssize_t n = write(s->fd, data, len);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        if (n > 0) {
            data += n;
            len -= (size_t)n;
        }
    }
    if (len) {
        /* lws may still hand over what it has buffered after flow control went off. */
        uint8_t *grown = realloc(s->pending, s->pending_len + len);
        if (!grown)
            return -1;
        s->pending = grown;
        memcpy(s->pending + s->pending_len, data, len);
        s->pending_len += len;
        lws_rx_flow_control(s->ws, 0);
        lws_callback_on_writable(s->raw);
    }
    return 0;
}

/* The socketpair has room again: write what is pending, then read the WebSocket again. */
static int flush_pending(struct ws_session *s)
{
    while (s->pending_off < s->pending_len) {
        ssize_t n = write(s->fd, s->pending + s->pending_off, s->pending_len - s->pending_off);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            lws_callback_on_writable(s->raw);
            return 0;
        }
        if (n <= 0)
            return -1;
        s->pending_off += (size_t)n;
    }
    free(s->pending);
    s->pending = NULL;
    s->pending_len = s->pending_off = 0;
    lws_rx_flow_control(s->ws, 1);
    return 0;
}

/*
 * The WebSocket can take a frame: send what the core wrote, one chunk at a
 * time (lws keeps what the socket does not take and holds back the next
 * writable callback until it has gone). Returns -1 to close the WebSocket:
 * after the core closed its end and everything it wrote was sent.
 */
static int to_ws(struct ws_session *s)
{
    uint8_t buf[LWS_PRE + WS_CHUNK];
    ssize_t n = s->fd >= 0 ? read(s->fd, buf + LWS_PRE, WS_CHUNK) : 0;

    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (s->raw)
            lws_rx_flow_control(s->raw, 1);
        else
            lws_callback_on_writable(s->ws); /* the core is closing: poll until EOF */
        return 0;
    }
    if (n <= 0) {
        lws_close_reason(s->ws, LWS_CLOSE_STATUS_NORMAL, NULL, 0);
        return -1;
    }
    if (lws_write(s->ws, buf + LWS_PRE, (size_t)n, LWS_WRITE_BINARY) < n)
        return -1;
    lws_callback_on_writable(s->ws); /* there may be more */
    return 0;
}

static int ws_session_open(struct ws_server *ws, struct ws_session *s, struct lws *wsi)
{
    int sv[2];

    memset(s, 0, sizeof(*s));
    s->ws = wsi;
    s->fd = -1;
    s->addr = peer_addr_of(wsi);
    free(lws_get_opaque_user_data(wsi)); /* its struct ws_pending: it is a session now */
    lws_set_opaque_user_data(wsi, NULL);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
        log_error("ws: %s: socketpair: %s", link_peer_name(&s->addr).s, strerror(errno));
        return -1;
    }
    int watched = fcntl(sv[0], F_DUPFD_CLOEXEC, 0);
    if (watched < 0) {
        log_error("ws: %s: dup: %s", link_peer_name(&s->addr).s, strerror(errno));
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    lws_sock_file_fd_type fd = {.filefd = watched};
    s->raw = lws_adopt_descriptor_vhost(lws_get_vhost(wsi), LWS_ADOPT_RAW_FILE_DESC, fd,
                                        "aviary-bridge", NULL);
    if (!s->raw) { /* lws closed `watched` */
        log_error("ws: %s: cannot watch the bridge socket", link_peer_name(&s->addr).s);
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    s->fd = sv[0];
    lws_set_opaque_user_data(s->raw, s);
    handoff(ws, sv[1], s, vhost_is_tls(ws, lws_get_vhost(wsi)));
    log_debug("ws: %s: WebSocket session opened", link_peer_name(&s->addr).s);
    return 0;
}

static void ws_session_close(struct ws_session *s)
{
    free(s->pending);
    s->pending = NULL;
    if (s->raw) {
        lws_set_opaque_user_data(s->raw, NULL);
        lws_set_timeout(s->raw, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
        s->raw = NULL;
    }
    if (s->fd >= 0) {
        close(s->fd); /* the core reads EOF: the client is gone */
        s->fd = -1;
    }
}

/*
 * A TLS handshake that fails ends with the one fatal alert we send, whatever
 * failed, so that is where it is logged: lws may fail a handshake while it
 * adopts the socket, before protocol 0 hears of the connection (no
 * ws_pending yet). A refused client certificate is named by OpenSSL's
 * verdict; OpenSSL 3.0 has no text for TLS 1.3's "certificate required".
 */
static void ws_log_handshake_failure(struct lws *wsi, SSL *ssl, int alert)
{
    struct ws_pending *p = lws_get_opaque_user_data(wsi);
    char peer[64];
    char why[160];
    long verdict = SSL_get_verify_result(ssl);

    if (verdict != X509_V_OK)
        snprintf(why, sizeof(why), "client certificate refused (%s)",
                 X509_verify_cert_error_string(verdict));
    else if ((alert & 0xff) == TLS13_AD_CERTIFICATE_REQUIRED)
        snprintf(why, sizeof(why), "no client certificate (alert sent)");
    else
        snprintf(why, sizeof(why), "%s (alert sent)", SSL_alert_desc_string_long(alert));
    log_notice("ws: %s: TLS handshake failed: %s", p ? p->peer : peer_of(wsi, peer, sizeof(peer)),
               why);
    link_note_ws_handshake_failure();
    if (p)
        p->explained = true;
}

/*
 * A request header for the log: escaped (the client wrote it, and could
 * forge a line or a terminal escape with it), or `none` when absent.
 */
static const char *header_for_log(struct lws *wsi, enum lws_token_indexes token, char *out,
                                  size_t size)
{
    char raw[128];

    if (lws_hdr_copy(wsi, raw, sizeof(raw), token) <= 0)
        snprintf(out, size, "none");
    else
        log_escape_str(raw, out, size);
    return out;
}

/* Why a connection that never became a WebSocket session was closed, unless said already. */
static void explain_close(struct lws *wsi)
{
    struct ws_pending *p = lws_get_opaque_user_data(wsi);
    char what[128];

    if (!p || p->explained)
        return;
    p->explained = true;
    link_note_ws_handshake_failure();
    if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) <= 0) {
        log_notice("ws: %s: closed before a WebSocket request: %s", p->peer,
                   p->tls ? "TLS handshake failed, or no request within connect-timeout"
                          : "no request within connect-timeout, or the client left");
    } else if (lws_hdr_total_length(wsi, WSI_TOKEN_UPGRADE) > 0) {
        log_notice("ws: %s: WebSocket upgrade refused: subprotocol %s (mqtt or mqttv3.1 "
                   "expected)",
                   p->peer, header_for_log(wsi, WSI_TOKEN_PROTOCOL, what, sizeof(what)));
    } else {
        log_notice("ws: %s: closed before its WebSocket request was complete", p->peer);
    }
}

/* The connection goes without having become a session: say why, forget it. */
static void pending_done(struct lws *wsi)
{
    explain_close(wsi);
    free(lws_get_opaque_user_data(wsi));
    lws_set_opaque_user_data(wsi, NULL);
}

/* Whether the Sec-WebSocket-Protocol list of an upgrade names one we serve. */
static bool offers_mqtt(struct lws *wsi)
{
    char list[128];

    if (lws_hdr_copy(wsi, list, sizeof(list), WSI_TOKEN_PROTOCOL) <= 0)
        return true; /* none at all: protocol 0's filter refuses it */
    for (char *save = NULL, *p = strtok_r(list, ", ", &save); p; p = strtok_r(NULL, ", ", &save))
        if (strcmp(p, "mqtt") == 0 || strcmp(p, "mqttv3.1") == 0)
            return true;
    return false;
}

static int on_mqtt(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                   size_t len)
{
    struct ws_session *s = user;
    char uri[128], shown[160], peer[64];

    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) < 0 || strcmp(uri, WS_PATH)) {
            struct ws_pending *p = lws_get_opaque_user_data(wsi);
            log_notice("ws: %s: WebSocket upgrade refused: path %s (MQTT is served on " WS_PATH ")",
                       p ? p->peer : peer_of(wsi, peer, sizeof(peer)),
                       header_for_log(wsi, WSI_TOKEN_GET_URI, shown, sizeof(shown)));
            link_note_ws_handshake_failure();
            if (p)
                p->explained = true;
            return -1;
        }
        return 0;
    case LWS_CALLBACK_ESTABLISHED:
        return ws_session_open(server_of(wsi), s, wsi);
    case LWS_CALLBACK_RECEIVE:
        if (!lws_frame_is_binary(wsi)) { /* MQTT-6.0.0-1 */
            log_notice("ws: %s: closed: a text frame (MQTT travels in binary frames)",
                       link_peer_name(&s->addr).s);
            lws_close_reason(wsi, LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE, NULL, 0);
            return -1;
        }
        return to_core(s, in, len);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return to_ws(s);
    case LWS_CALLBACK_CLOSED:
        ws_session_close(s);
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
        /* Refused after lws had bound it to us (a wrong path): not a session. */
        pending_done(wsi);
        return 0;
    default:
        return 0;
    }
}

/* Our watch on the socketpair; `user` is unused, the session is the opaque pointer. */
static int on_bridge(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len)
{
    struct ws_session *s = lws_get_opaque_user_data(wsi);

    switch (reason) {
    case LWS_CALLBACK_RAW_RX_FILE:
        if (!s)
            return -1;
        /* Read in the WebSocket's writable callback, when a frame can go out. */
        lws_rx_flow_control(wsi, 0);
        lws_callback_on_writable(s->ws);
        return 0;
    case LWS_CALLBACK_RAW_WRITEABLE_FILE:
        return s ? flush_pending(s) : -1;
    case LWS_CALLBACK_RAW_CLOSE_FILE:
        if (s) { /* the core closed its end: send what is left, then close */
            s->raw = NULL;
            lws_callback_on_writable(s->ws);
        }
        return 0;
    default:
        return 0;
    }
}

/*
 * Protocol 0 of every vhost: plain HTTP (404), upgrades without a known
 * subprotocol (refused), client certificates, and wake-ups from the core.
 */
static int on_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                   size_t len)
{
    char peer[64];

    switch (reason) {
    case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED: {
        struct ws_pending *p = calloc(1, sizeof(*p));
        if (p) { /* without it the close goes unexplained, nothing worse */
            peer_of(wsi, p->peer, sizeof(p->peer));
            p->tls = vhost_is_tls(server_of(wsi), lws_get_vhost(wsi));
            lws_set_opaque_user_data(wsi, p);
        }
        return 0;
    }
    case LWS_CALLBACK_WSI_DESTROY:
        pending_done(wsi);
        return 0;
    case LWS_CALLBACK_HTTP: {
        struct ws_pending *p = lws_get_opaque_user_data(wsi);
        char path[160];
        log_info("ws: %s: plain HTTP request for %s: 404 (MQTT is served on " WS_PATH ")",
                 p ? p->peer : peer_of(wsi, peer, sizeof(peer)),
                 log_escape_str(in ? (const char *)in : "?", path, sizeof(path)));
        if (p)
            p->explained = true;
        lws_return_http_status(wsi, HTTP_STATUS_NOT_FOUND, NULL);
        return -1;
    }
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        explain_close(wsi); /* an upgrade without subprotocol */
        return -1;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        /* lws would refuse an unknown subprotocol without a word to us: refuse it here. */
        if (offers_mqtt(wsi))
            return 0;
        explain_close(wsi);
        return -1;
    case LWS_CALLBACK_CLOSED_HTTP:
        explain_close(wsi);
        return 0;
    case LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION:
        /* lws takes 0 as "valid" whatever OpenSSL found: pass OpenSSL's verdict on
         * (the refusal is logged with the alert that follows it). */
        return len ? 0 : 1;
    case LWS_CALLBACK_SSL_INFO: { /* SSL_CB_ALERT only (ssl_info_event_mask) */
        const struct lws_ssl_info *si = in;
        SSL *ssl = lws_get_ssl(wsi);
        if (ssl && (si->where & SSL_CB_WRITE) && (si->ret >> 8) == SSL3_AL_FATAL &&
            SSL_in_init(ssl))
            ws_log_handshake_failure(wsi, ssl, si->ret);
        return 0;
    }
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED: {
        struct ws_server *ws = server_of(wsi);
        if (atomic_exchange(&ws->reload_tls, false)) {
            lws_tls_cert_updated(ws->ctx, ws->tls_cert, ws->tls_key, NULL, 0, NULL, 0);
            log_notice("ws: wss:// listeners reloaded their certificate from %s", ws->tls_cert);
        }
        return 0;
    }
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

static const struct lws_protocols protocols[] = {
    {"http", on_http, 0, 0, 0, NULL, 0},
    {"mqtt", on_mqtt, sizeof(struct ws_session), WS_CHUNK, 0, NULL, 0},
    {"mqttv3.1", on_mqtt, sizeof(struct ws_session), WS_CHUNK, 0, NULL, 0},
    {"aviary-bridge", on_bridge, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void *ws_main(void *arg)
{
    struct ws_server *ws = arg;
    while (!atomic_load(&ws->stop))
        lws_service(ws->ctx, 0);
    return NULL;
}

/* ---- the core thread -------------------------------------------------------- */

static void handoff_cb(evutil_socket_t fd, short what, void *arg)
{
    struct ws_server *ws = arg;
    struct ws_handoff *h;

    while ((h = mailbox_take(ws->handoffs))) {
        struct link_stream stream = {.fd = h->fd, .driver = ws->broker->driver};
        client_accept(ws->broker, &stream, &h->meta);
        free(h);
    }
}

/* mailbox_free()'s release: a session the core never took; the WS thread has closed its end. */
static void handoff_release(void *item)
{
    struct ws_handoff *h = item;
    close(h->fd);
    free(h);
}

static void ws_log_from_lws(int level, const char *line)
{
    char shown[512];
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n')
        n--;
    /* lws may quote what a client sent: escaped like any client data. */
    log_escape(line, n, shown, sizeof(shown));
    if (level & LLL_ERR)
        log_warning("ws: %s", shown);
    else
        log_debug("ws: %s", shown);
}

static char *dup_or_null(const char *s, bool *failed)
{
    char *copy = s ? strdup(s) : NULL;
    if (s && !copy)
        *failed = true;
    return copy;
}

struct ws_server *ws_server_new(struct broker *b, const struct config *cfg, char *err,
                                size_t errlen)
{
    struct ws_server *ws = calloc(1, sizeof(*ws));
    struct lws_context_creation_info info;
    bool oom = false;

    if (!ws) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ws->broker = b;
    ws->timeout = cfg->connect_timeout;
    ws->client_cert = cfg->tls_client_cert;
    ws->tls_cert = dup_or_null(cfg->tls_cert, &oom);
    ws->tls_key = dup_or_null(cfg->tls_key, &oom);
    ws->tls_ca = dup_or_null(cfg->tls_ca, &oom);
    atomic_init(&ws->stop, false);
    atomic_init(&ws->reload_tls, false);
    if (oom) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    lws_set_log_level(LLL_ERR, ws_log_from_lws);
    memset(&info, 0, sizeof(info));
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.user = ws;
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.timeout_secs = ws->timeout;
    if (!(ws->ctx = lws_create_context(&info))) {
        snprintf(err, errlen, "cannot create the WebSocket context");
        goto fail;
    }
    if (!(ws->handoffs = mailbox_new("ws"))) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        goto fail;
    }
    ws->handoff_ev =
        event_new(b->base, mailbox_fd(ws->handoffs), EV_READ | EV_PERSIST, handoff_cb, ws);
    if (!ws->handoff_ev || event_add(ws->handoff_ev, NULL) < 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    return ws;
fail:
    ws_server_free(ws);
    return NULL;
}

/* The TLS side of a wss:// vhost: the same policy as tls:// listeners (net/tls.h). */
static void vhost_tls_info(const struct ws_server *ws, struct lws_context_creation_info *info)
{
    info->options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info->ssl_info_event_mask = SSL_CB_ALERT;
    info->ssl_cert_filepath = ws->tls_cert;
    info->ssl_private_key_filepath = ws->tls_key;
    info->ssl_ca_filepath = ws->tls_ca;
    info->ssl_cipher_list = TLS_CIPHERS_TLS12;
    info->ssl_options_set =
        SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1 | SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION;
    /* WebSocket over HTTP/1.1 only: one code path for every browser. */
    info->alpn = "http/1.1";
    if (ws->client_cert != CONFIG_CLIENT_CERT_NONE)
        info->options |= LWS_SERVER_OPTION_REQUIRE_VALID_OPENSSL_CLIENT_CERT;
    if (ws->client_cert == CONFIG_CLIENT_CERT_OPTIONAL)
        info->options |= LWS_SERVER_OPTION_PEER_CERT_NOT_REQUIRED;
}

/*
 * Whether host:port can be bound now. Probing first keeps lws from logging a
 * bind error for every port a desktop default passes over.
 */
static bool ws_port_free(const char *host, unsigned port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res;
    char portstr[8];
    bool free_now = true;

    snprintf(portstr, sizeof(portstr), "%u", port);
    if (getaddrinfo(host, portstr, &hints, &res) != 0)
        return true; /* lws will say what is wrong with the address */
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        free_now = bind(fd, res->ai_addr, res->ai_addrlen) == 0 || errno != EADDRINUSE;
        close(fd);
    }
    freeaddrinfo(res);
    return free_now;
}

/* What ws_server_listen() asks of each port it tries. */
struct ws_listen_attempt {
    struct ws_server *ws;
    const struct config_url *url;
    struct ws_vhost *slot; /* where the vhost and the strings it points at go */
    bool tls;
    bool probe;           /* more than one port may be tried: probe each first */
    struct lws_vhost *vh; /* the vhost made */
};

/* addr_listen_fn: make the vhost of a ws:// or wss:// URL on `port`. */
static int ws_try_port(unsigned port, void *arg)
{
    struct ws_listen_attempt *a = arg;
    struct lws_context_creation_info info;
    struct ws_vhost *slot = a->slot;

    if (a->probe && !ws_port_free(a->url->host, port))
        return -EADDRINUSE;
    memset(&info, 0, sizeof(info));
    snprintf(slot->name, sizeof(slot->name), "v%zu", a->ws->vhost_count);
    snprintf(slot->iface, sizeof(slot->iface), "%s", a->url->host);
    info.vhost_name = slot->name;
    info.port = (int)port;
    info.iface = slot->iface;
    info.protocols = protocols;
    info.timeout_secs = a->ws->timeout;
    info.timeout_secs_ah_idle = a->ws->timeout;
    info.options = LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND;
    if (strchr(a->url->host, ':') == NULL)
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    if (a->tls)
        vhost_tls_info(a->ws, &info);
    a->vh = lws_create_vhost(a->ws->ctx, &info);
    /* The probe found the port free (or there was none): maybe the next one does better. */
    return a->vh ? 0 : -EAGAIN;
}

int ws_server_listen(struct ws_server *ws, const char *url, bool next_free_port, char *bound,
                     size_t boundlen, char *err, size_t errlen)
{
    struct config_url u;
    char why[128];

    if (config_url_parse(url, &u, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "%s: %s", url, why);
        return -1;
    }
    bool tls = strcmp(u.scheme, "wss") == 0;
    if (!tls && strcmp(u.scheme, "ws") != 0) {
        snprintf(err, errlen, "%s: %s:// is not served by the WebSocket listener", url, u.scheme);
        return -1;
    }
    if (ws->vhost_count == WS_MAX_VHOSTS) {
        snprintf(err, errlen, "%s: at most %d WebSocket listeners", url, WS_MAX_VHOSTS);
        return -1;
    }
    if (tls && (!ws->tls_cert || !ws->tls_key)) {
        snprintf(err, errlen, "%s: needs tls-cert and tls-key", url);
        return -1;
    }
    struct ws_vhost *slot = &ws->vhosts[ws->vhost_count];
    struct ws_listen_attempt a = {
        .ws = ws, .url = &u, .slot = slot, .tls = tls, .probe = next_free_port};
    if (addr_listen_port(url, u.port, next_free_port, ws_try_port, &a) < 0) {
        snprintf(err, errlen, "cannot listen on %s%s", url,
                 tls ? " (or tls-cert and tls-key cannot be loaded)" : ": address in use?");
        return -1;
    }
    slot->vh = a.vh;
    slot->tls = tls;
    ws->vhost_count++;
    const char *fmt = strchr(u.host, ':') ? "%s://[%s]:%d" : "%s://%s:%d";
    snprintf(bound, boundlen, fmt, u.scheme, u.host, lws_get_vhost_listen_port(a.vh));
    return 0;
}

int ws_server_start(struct ws_server *ws, char *err, size_t errlen)
{
    int rc = pthread_create(&ws->thread, NULL, ws_main, ws);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the WebSocket thread: %s", strerror(rc));
        return -1;
    }
    ws->thread_started = true;
    return 0;
}

void ws_server_reload_tls(struct ws_server *ws)
{
    bool any_tls = false;
    for (size_t i = 0; i < ws->vhost_count; i++)
        any_tls |= ws->vhosts[i].tls;
    if (!any_tls || !ws->thread_started)
        return;
    atomic_store(&ws->reload_tls, true);
    lws_cancel_service(ws->ctx);
}

void ws_server_free(struct ws_server *ws)
{
    if (!ws)
        return;
    if (ws->thread_started) {
        atomic_store(&ws->stop, true);
        lws_cancel_service(ws->ctx);
        pthread_join(ws->thread, NULL);
    }
    if (ws->ctx)
        lws_context_destroy(ws->ctx);
    if (ws->handoff_ev)
        event_free(ws->handoff_ev);
    mailbox_free(ws->handoffs, handoff_release);
    free(ws->tls_cert);
    free(ws->tls_key);
    free(ws->tls_ca);
    free(ws);
}
