#include "net/addr.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/*
 * The socket inode of a listening TCP socket on `port` in /proc/net/tcp or
 * tcp6 (`path`), with its owner's uid; 0 when there is none or no such file.
 */
static unsigned long listening_inode(const char *path, unsigned port, unsigned long *uid)
{
    FILE *f = fopen(path, "r");
    char line[512];
    unsigned long inode = 0;

    if (!f)
        return 0;
    while (!inode && fgets(line, sizeof(line), f)) {
        unsigned lport, state;
        unsigned long u, ino;
        /* sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode */
        if (sscanf(line,
                   " %*u: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%*x %x %*x:%*x %*x:%*x %*x %lu %*u %lu",
                   &lport, &state, &u, &ino) == 4 &&
            lport == port && state == 0x0A /* TCP_LISTEN */ && ino != 0) {
            inode = ino;
            *uid = u;
        }
    }
    fclose(f);
    return inode;
}

/* Does process `pid` hold the socket `inode`? Only if we may read its descriptors. */
static bool holds_socket(const char *pid, unsigned long inode)
{
    char dir[300], link[64], want[48];
    DIR *fds;
    struct dirent *e;
    bool found = false;

    snprintf(dir, sizeof(dir), "/proc/%s/fd", pid);
    snprintf(want, sizeof(want), "socket:[%lu]", inode);
    if (!(fds = opendir(dir)))
        return false;
    while (!found && (e = readdir(fds))) {
        char path[600];
        ssize_t n;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        n = readlink(path, link, sizeof(link) - 1);
        if (n > 0) {
            link[n] = '\0';
            found = strcmp(link, want) == 0;
        }
    }
    closedir(fds);
    return found;
}

/* "NAME (pid N)" of the process holding socket `inode`, when /proc lets us see it. */
static bool socket_process(unsigned long inode, char *out, size_t size, long *pid)
{
    DIR *proc = opendir("/proc");
    struct dirent *e;
    bool found = false;

    if (!proc)
        return false;
    while (!found && (e = readdir(proc))) {
        char path[300], comm[64] = "";
        FILE *f;
        if (!isdigit((unsigned char)e->d_name[0]) || !holds_socket(e->d_name, inode))
            continue;
        snprintf(path, sizeof(path), "/proc/%s/comm", e->d_name);
        if ((f = fopen(path, "r"))) {
            if (fgets(comm, sizeof(comm), f))
                comm[strcspn(comm, "\n")] = '\0';
            fclose(f);
        }
        snprintf(out, size, "%s (pid %s)", comm[0] ? comm : "a program", e->d_name);
        *pid = strtol(e->d_name, NULL, 10);
        found = true;
    }
    closedir(proc);
    return found;
}

/* addr_port_owner(), and the owner's pid in *pid when known (else 0). */
static const char *port_owner(unsigned port, char *out, size_t size, long *pid)
{
    unsigned long uid = 0;
    unsigned long inode = listening_inode("/proc/net/tcp", port, &uid);

    if (!inode)
        inode = listening_inode("/proc/net/tcp6", port, &uid);
    *pid = 0;
    snprintf(out, size, "another program");
    if (!inode || socket_process(inode, out, size, pid))
        return out;
    /* Not ours to look into: at least whose it is. */
    struct passwd pw, *found = NULL;
    char buf[1024];
    if (getpwuid_r((uid_t)uid, &pw, buf, sizeof(buf), &found) == 0 && found)
        snprintf(out, size, "a program of user %s", found->pw_name);
    else
        snprintf(out, size, "a program of uid %lu", uid);
    return out;
}

const char *addr_port_owner(unsigned port, char *out, size_t size)
{
    long pid;
    return port_owner(port, out, size, &pid);
}

int addr_listen_port(const char *url, unsigned first, bool next_free_port, addr_listen_fn listen_on,
                     void *arg)
{
    unsigned tries = next_free_port ? ADDR_PORT_TRIES : 1;
    int rc = -EADDRINUSE;
    char owner[160] = "";
    long owner_pid = 0;

    for (unsigned i = 0; i < tries && first + i <= 65535; i++) {
        unsigned port = first + i;
        rc = listen_on(port, arg);
        /* Not when it is one of our own listeners, which moved first. */
        if (rc == 0 && i > 0 && owner[0] && owner_pid != (long)getpid())
            log_warning("%s: port %u is taken by %s, so aviaryd listens on port %u instead: "
                        "clients that connect to port %u talk to %s, not to aviaryd",
                        url, first, owner, port, first, owner);
        if (rc == 0 || (rc != -EADDRINUSE && rc != -EAGAIN) || i + 1 >= tries ||
            first + i + 1 > 65535)
            return rc;
        if (rc == -EADDRINUSE && i == 0)
            port_owner(port, owner, sizeof(owner), &owner_pid);
        if (rc == -EADDRINUSE)
            log_notice("%s: port %u is in use, trying %u", url, port, port + 1);
        else
            log_notice("%s: port %u is not free, trying %u", url, port, port + 1);
    }
    return rc;
}
