/*
 * client — the reading side of a client connection: the top of broker/.
 *
 * Takes a connected bufferevent from a listener, frames whole MQTT packets
 * out of its input, refuses the malformed and the oversized before
 * buffering them, paces PUBLISHes to the message rates, stops reading while
 * the client does not read its output (back-pressure), and hands each
 * packet to its handler (handlers.h). A handler that fails says so by its
 * return code, and the connection is closed here, in one place. Core thread
 * only.
 */
#ifndef AVIARY_CLIENT_H
#define AVIARY_CLIENT_H

struct broker;
struct conn;
struct link_meta;
struct link_stream;

/*
 * A new connection over `stream` (taken, also on failure) from the listener
 * that knows `meta`. Returns its conn, or NULL when out of memory.
 */
struct conn *client_accept(struct broker *b, const struct link_stream *stream,
                           const struct link_meta *meta);

/* Take the input again after a login wait and handle what is buffered (the CONNECT). */
void client_read_again(struct conn *c);

/* The database writer caught up: a publisher it held back is read again. */
void client_keep_resume(struct conn *c);

/* The cluster's stream caught up: a publisher it held back is read again. */
void client_cluster_resume(struct conn *c);

#endif
