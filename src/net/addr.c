#include "net/addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>

#include "util/log.h"

const char *addr_format(const struct sockaddr *sa, socklen_t len, char *out, size_t size)
{
    char host[INET6_ADDRSTRLEN];

    snprintf(out, size, "unknown");
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        if (inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host)))
            snprintf(out, size, "%s:%u", host, (unsigned)ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host)))
            snprintf(out, size, "[%s]:%u", host, (unsigned)ntohs(in6->sin6_port));
    }
    return out;
}

int addr_listen_port(const char *url, unsigned first, bool next_free_port, addr_listen_fn listen_on,
                     void *arg)
{
    unsigned tries = next_free_port ? ADDR_PORT_TRIES : 1;
    int rc = -EADDRINUSE;

    for (unsigned i = 0; i < tries && first + i <= 65535; i++) {
        unsigned port = first + i;
        rc = listen_on(port, arg);
        if (rc == -EADDRINUSE)
            log_notice("%s: port %u is in use, trying %u", url, port, port + 1);
        else if (rc == -EAGAIN && i + 1 < tries)
            log_notice("%s: port %u is not free, trying %u", url, port, port + 1);
        else if (rc != -EAGAIN)
            return rc;
    }
    return rc;
}
