/*
 * addr — what every listener does with addresses and ports, whatever it
 * serves: write a socket address for the log, and find a port to listen on.
 * No state; any thread.
 */
#ifndef AVIARY_ADDR_H
#define AVIARY_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* How many ports from the asked one a listener with `next_free_port` tries. */
#define ADDR_PORT_TRIES 100

/*
 * Write `sa` (`len` bytes) to `out` as "127.0.0.1:5000" or "[::1]:5000";
 * any other family, or a length too short for its family, as "unknown".
 * Returns `out`.
 */
const char *addr_format(const struct sockaddr *sa, socklen_t len, char *out, size_t size);

/*
 * Who holds the listening TCP socket on `port` (any address), from /proc:
 * "mosquitto (pid 812)" when its descriptors are readable, "a program of user
 * mosquitto" when only /proc/net/tcp says, else "another program". For
 * messages only: the answer may be stale by the time it is read. Returns `out`.
 */
const char *addr_port_owner(unsigned port, char *out, size_t size);

/*
 * One attempt at listening on `port`, for addr_listen_port(). Returns 0 once
 * listening; -EADDRINUSE when the port is taken (try the next); -EAGAIN when
 * it failed on this port in a way the next one might not; any other negative
 * value to give up.
 */
typedef int (*addr_listen_fn)(unsigned port, void *arg);

/*
 * Call `listen_on` for `first`, then, with `next_free_port`, for the following
 * ports up to ADDR_PORT_TRIES in all (and never past 65535) while it says the
 * port was taken (-EADDRINUSE) or failed there (-EAGAIN). Each move is logged
 * with `url` ("URL: port 1883 is in use, trying 1884"), only when a try
 * follows; listening on another port than a taken `first` is a warning that
 * names the program holding `first` (addr_port_owner()), since its clients
 * meet that program. Port 0 (the kernel chooses) is one attempt like any
 * other. Returns what the last call returned: 0 once listening.
 */
int addr_listen_port(const char *url, unsigned first, bool next_free_port, addr_listen_fn listen_on,
                     void *arg);

#endif
