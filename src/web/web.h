/*
 * web — the broker's HTTP face: what an http:// or https:// listener serves.
 *
 *   GET  /metrics          Prometheus text: the process and every instance
 *   POST /broker/TOPIC     publish the body (?qos=N&retain=true)
 *   GET  /broker/FILTER    the retained messages that match, as JSON
 *   /admin/...             the management API (cloud mode, admin key; web/admin.c)
 *
 * Every answer is made in the core thread from the broker's own state, so
 * nothing is copied or locked. The program owns the web (and through it the
 * HTTP server) and frees it after the listeners that feed it and before the
 * broker. Core thread only.
 */
#ifndef AVIARY_WEB_H
#define AVIARY_WEB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct broker;
struct http_server;
struct jobs;

/* HTTP connections open at once, and the largest request body (a publish's payload). */
#define WEB_MAX_CONNECTIONS 256
#define WEB_MAX_BODY (1u << 20)

struct web;

/*
 * Is `key` an admin key? The program's answer (the store's admin keys);
 * until it gives one, /metrics is served on loopback listeners only.
 */
typedef bool (*web_admin_fn)(void *ctx, const char *key);

/* A web serving `b`. NULL when out of memory. */
struct web *web_new(struct broker *b);

void web_free(struct web *w);

/* SIGTERM: end the live views and idle connections; the others end after their answer. */
void web_stop(struct web *w);

void web_set_admin_check(struct web *w, web_admin_fn fn, void *ctx);

/*
 * The management API's database work goes to `jobs` (tenancy/jobs.h, the
 * program's: it outlives the web). Until this is set, /admin/ answers 404.
 */
void web_set_jobs(struct web *w, struct jobs *jobs);

/*
 * Every look at the database up to number `n` (broker_look_soon) is done and
 * its catalog applied: the management API's answers that waited for one go out.
 */
void web_looked(struct web *w, uint64_t n);

/* The HTTP server its listeners hand their connections to. */
struct http_server *web_http(struct web *w);

#endif
