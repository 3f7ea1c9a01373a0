#!/usr/bin/python3
"""The catalog of a cluster (issue 16): instances, plans, tokens and admin keys
kept in Redis, written by `aviaryctl --cluster URL` and by the management API,
followed by every aviaryd node started with `--cluster URL`.

Each test runs its own redis-server (redis_server.RedisServer, on a free
loopback port) and its own nodes, each with a database file of its own.
"""

import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    HOST, Broker, check, check_equal, cloud_db, cloud_login, ctl, new_token, run, run_tests,
    unique, wait_for, aviaryctl_path, aviaryd_path)
from mqtt5 import cloud_login5  # noqa: E402
from redis_server import RedisServer, free_port  # noqa: E402
from test_admin_api import Api  # noqa: E402
from test_tls import _ca, _cert  # noqa: E402

REVOKED_WITHIN = 1.5  # the watcher polls Redis every 0.5 s; a node closes within that


def cctl(url, *args, env=None, timeout=20.0):
    """aviaryctl --cluster URL ARGS: (exit status, stdout, stderr) as text."""
    r = subprocess.run([aviaryctl_path(), "--cluster", url] + [str(a) for a in args],
                       capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def cok(url, *args):
    rc, out, err = cctl(url, *args)
    check(rc == 0, "aviaryctl --cluster %s failed with %d: %s" % (" ".join(args), rc, err.strip()))
    return out


def ctoken(url, instance, *args):
    tok = json.loads(cok(url, "--json", "token", "create", instance, *args))
    return tok["id"], tok["secret"]


def version(redis):
    return int(redis.cli("GET", "aviary:catalog:version").strip() or 0)


def node(redis, *args, url=None):
    """A cloud-mode aviaryd of the cluster, on a database file of its own."""
    return Broker("--mode", "cloud", "--cluster", url or redis.url, "--db", cloud_db(),
                  "--allow-keys-without-tls", *args)


def start_failure(*args):
    """Run aviaryd expecting it to refuse to start: (exit status, its log)."""
    r = run([aviaryd_path(), "--listen", "tcp://%s:0" % HOST] + list(args), timeout=20.0)
    return r.returncode, (r.stdout + r.stderr).decode("utf-8", "replace")


def test_init_creates_the_catalog_once():
    with RedisServer() as r:
        rc, _, err = cctl(r.url, "instance", "list")
        check_equal(rc, 2, "instance list before init (stderr %r)" % err)
        check("aviaryctl --cluster URL init" in err, "no hint at init: %r" % err)
        out = cok(r.url, "init")
        check_equal(out, "catalog in Redis at %s ready (schema version 5)\n" % r.url, "init")
        check_equal(version(r), 1, "version after init")
        check_equal(json.loads(cok(r.url, "--json", "init")), {"cluster": r.url, "schema": 5},
                    "init again (JSON)")
        check_equal(version(r), 1, "init again changes nothing")
        cok(r.url, "instance", "list")  # read-only commands never write
        cok(r.url, "plan", "list")
        check_equal(version(r), 1, "version after reading")
        cok(r.url, "instance", "create", "acme")
        check_equal(version(r), 2, "version after a change")
        rc, _, err = cctl(r.url, "instance", "create", "acme")
        check_equal(rc, 1, "creating it twice (stderr %r)" % err)
        check_equal(version(r), 2, "a refused change writes nothing")


def test_a_token_made_by_aviaryctl_works_at_once_on_two_nodes():
    with RedisServer() as r:
        cok(r.url, "init")
        with node(r) as n1, node(r) as n2:
            name = unique("inst")
            cok(r.url, "instance", "create", name)
            _, secret = ctoken(r.url, name)
            # no wait: a login that misses makes the node look at Redis at once
            for b in (n1, n2):
                c = cloud_login(b.port, name, secret)
                c.ping()
                c.close()
            # and a second token for an instance the nodes know already
            _, second = ctoken(r.url, name, "--ttl", "1h")
            for b in (n1, n2):
                cloud_login(b.port, name, second).close()


def test_a_revoked_token_closes_its_connections_on_every_node():
    with RedisServer() as r:
        cok(r.url, "init")
        cok(r.url, "instance", "create", "acme")
        tid, secret = ctoken(r.url, "acme")
        _, other = ctoken(r.url, "acme")
        with node(r) as n1, node(r) as n2:
            clients = [cloud_login5(b.port, "acme", secret) for b in (n1, n2)]
            survivors = [cloud_login(b.port, "acme", other) for b in (n1, n2)]
            began = time.monotonic()
            cok(r.url, "token", "revoke", "acme", tid)
            for c in clients:
                c.expect_disconnect(0x98, REVOKED_WITHIN + 1.0, "token revoked on the cluster")
            took = time.monotonic() - began
            check(took < REVOKED_WITHIN, "closed only after %.2f s" % took)
            print("# closed on both nodes %.2f s after aviaryctl started" % took)
            for b in (n1, n2):
                cloud_login(b.port, "acme", secret, expect_rc=4).close()
            for s in survivors:
                s.ping()


def test_init_from_uploads_an_existing_database():
    db = cloud_db()
    ctl(db, "instance", "create", "old")
    _, secret = new_token(db, "old")
    key = json.loads(ctl(db, "--json", "admin-key", "create", "--label", "ops"))
    with RedisServer() as r:
        out = json.loads(cok(r.url, "--json", "init", "--from", db))
        check_equal(out, {"cluster": r.url, "from": db, "schema": 5}, "init --from")
        check_equal(version(r), 1, "version after the upload")
        listed = json.loads(cok(r.url, "--json", "instance", "list"))
        check_equal([i["name"] for i in listed], ["old"], "instances uploaded")
        keys = json.loads(cok(r.url, "--json", "admin-key", "list"))
        check_equal([k["id"] for k in keys], [key["id"]], "admin keys uploaded")
        # never over a catalog that is there
        rc, _, err = cctl(r.url, "init", "--from", db)
        check_equal(rc, 1, "a second upload (stderr %r)" % err)
        check("holds a catalog already" in err, "message: %r" % err)
        with node(r) as n:
            cloud_login(n.port, "old", secret).ping()
        # backup: the catalog as an SQLite file, which aviaryctl --db reads
        copy = os.path.join(os.path.dirname(cloud_db()), "copy.db")
        cok(r.url, "backup", copy)
        check_equal(os.stat(copy).st_mode & 0o777, 0o600, "the copy's mode")
        listed = json.loads(ctl(copy, "--json", "instance", "list"))
        check_equal([i["name"] for i in listed], ["old"], "instances in the backup")
    rc, _, err = run_plain_init_from(db)
    check_equal(rc, 1, "init --from without --cluster (stderr %r)" % err)


def run_plain_init_from(db):
    r = run([aviaryctl_path(), "--db", db, "init", "--from", db])
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def test_concurrent_writers_all_land():
    with RedisServer() as r:
        cok(r.url, "init")
        names = ["w%d" % i for i in range(10)]
        procs = [subprocess.Popen([aviaryctl_path(), "--cluster", r.url, "instance", "create", n],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL) for n in names]
        for p, n in zip(procs, names):
            out, err = p.communicate(timeout=30)
            check(p.returncode == 0, "instance create %s: %d %r" % (n, p.returncode, err))
        listed = json.loads(cok(r.url, "--json", "instance", "list"))
        check_equal(sorted(i["name"] for i in listed), names, "every instance landed")
        check_equal(version(r), 1 + len(names), "one version per change")


def test_redis_down_or_empty_at_start_is_a_clear_error():
    port = free_port()
    url = "redis://:hidden@%s:%d" % (HOST, port)
    rc, log = start_failure("--mode", "cloud", "--cluster", url, "--db", cloud_db())
    check_equal(rc, 1, "exit status without Redis (log %r)" % log)
    check("cannot connect to Redis at redis://:***@%s:%d" % (HOST, port) in log,
          "no clear message: %r" % log)
    check("hidden" not in log, "the password shows: %r" % log)
    with RedisServer() as r:
        rc, log = start_failure("--mode", "cloud", "--cluster", r.url, "--db", cloud_db())
        check_equal(rc, 1, "exit status with an empty Redis (log %r)" % log)
        check("aviaryctl --cluster URL init" in log, "no hint at init: %r" % log)
    rc, log = start_failure("--mode", "cloud", "--cluster", "http://%s:1" % HOST)
    check_equal(rc, 1, "exit status of a bad URL (log %r)" % log)
    check("cluster:" in log, "the directive is not named: %r" % log)


def test_a_node_rides_out_a_redis_restart():
    with RedisServer(appendonly=True) as r:
        cok(r.url, "init")
        cok(r.url, "instance", "create", "acme")
        _, secret = ctoken(r.url, "acme")
        with node(r) as n:
            c = cloud_login(n.port, "acme", secret)
            mark = n.log_mark()
            r.stop()
            n.wait_log(r"catalog: Redis at redis://%s:%d unreachable: .*keeping the catalog of "
                       r"version 3" % (re.escape(HOST), r.port), mark, timeout=5.0)
            c.ping()  # connected clients go on
            cloud_login(n.port, "acme", secret).close()  # and the catalog in force too
            time.sleep(1.2)
            check_equal(len(re.findall("unreachable", n.log_text(mark))), 1,
                        "the warning is logged once")
            mark = n.log_mark()
            r.start()
            n.wait_log(r"catalog: Redis at .* answers again", mark, timeout=5.0)
            _, fresh = ctoken(r.url, "acme")
            cloud_login(n.port, "acme", fresh).ping()
            c.ping()


def test_a_wrong_password_is_a_clear_error():
    with RedisServer(password="right-one") as r:
        bad = "redis://:not-this@%s:%d" % (HOST, r.port)
        rc, _, err = cctl(bad, "init")
        check_equal(rc, 2, "exit status (stderr %r)" % err)
        check("redis://:***@%s:%d" % (HOST, r.port) in err and "WRONGPASS" in err,
              "message: %r" % err)
        check("not-this" not in err, "the password shows: %r" % err)
        rc, log = start_failure("--mode", "cloud", "--cluster", bad, "--db", cloud_db())
        check_equal(rc, 1, "aviaryd's exit status (log %r)" % log)
        check("WRONGPASS" in log, "aviaryd's message: %r" % log)
        # AUTH with a user (the ACL form) and SELECT of a database other than 0
        url = "redis://default:right-one@%s:%d/2" % (HOST, r.port)
        cok(url, "init")
        cok(url, "instance", "create", "acme")
        _, secret = ctoken(url, "acme")
        check_equal(r.cli("-n", "2", "GET", "aviary:catalog:version").strip(), "3",
                    "the version in database 2")
        check_equal(r.cli("EXISTS", "aviary:catalog:version").strip(), "0", "nothing in 0")
        with node(r, url=url) as n:
            cloud_login(n.port, "acme", secret).ping()


def test_aviaryctl_without_redis_exits_2_naming_the_url():
    port = free_port()
    url = "redis://user:pw@%s:%d/3" % (HOST, port)
    rc, out, err = cctl(url, "instance", "list")
    check_equal((rc, out), (2, ""), "exit status and output (stderr %r)" % err)
    check("cannot connect to Redis at redis://user:***@%s:%d/3" % (HOST, port) in err,
          "message: %r" % err)
    # AVIARY_CLUSTER when there is no --cluster
    env = dict(os.environ, AVIARY_CLUSTER=url)
    r = subprocess.run([aviaryctl_path(), "instance", "create", "x"], capture_output=True,
                       env=env, timeout=20, stdin=subprocess.DEVNULL)
    check_equal(r.returncode, 2, "exit status with AVIARY_CLUSTER (stderr %r)" % r.stderr)
    check(b"cannot connect to Redis at redis://user:***@" in r.stderr, "message: %r" % r.stderr)
    with RedisServer() as red:
        env = dict(os.environ, AVIARY_CLUSTER=red.url)
        r = subprocess.run([aviaryctl_path(), "init"], capture_output=True, env=env, timeout=20,
                           stdin=subprocess.DEVNULL)
        check_equal(r.returncode, 0, "init through AVIARY_CLUSTER (stderr %r)" % r.stderr)
        check_equal(version(red), 1, "the catalog is in Redis")
        # the cluster directive of -c, as aviaryd reads it
        conf = os.path.join(os.path.dirname(cloud_db()), "aviary.conf")
        with open(conf, "w") as f:
            f.write("mode cloud\ncluster %s\n" % red.url)
        r = run([aviaryctl_path(), "-c", conf, "instance", "create", "fromconf"])
        check_equal(r.returncode, 0, "instance create with -c (stderr %r)" % r.stderr)
        check("fromconf" in cok(red.url, "instance", "list"), "the instance is in Redis")
        # --db and --cluster name two catalogs
        rc, _, err = cctl(red.url, "--db", cloud_db(), "instance", "list")
        check_equal(rc, 1, "--cluster with --db (stderr %r)" % err)


def test_a_token_made_through_the_api_on_one_node_works_on_the_other():
    with RedisServer() as r:
        cok(r.url, "init")
        key = json.loads(cok(r.url, "--json", "admin-key", "create", "--label", "ops"))
        with node(r, "--listen", "http://%s:0" % HOST) as n1, node(r) as n2:
            api = Api(n1, key["secret"])
            api.ok("POST", "/admin/instances", {"name": "acme"}, 201)
            tok = api.ok("POST", "/admin/instances/acme/tokens", {"ttl": "1h"}, 201)
            for b in (n1, n2):
                cloud_login(b.port, "acme", tok["secret"]).ping()
            listed = json.loads(cok(r.url, "--json", "token", "list", "acme"))
            check_equal([t["id"] for t in listed], [tok["id"]], "the token is in Redis")
            # a revocation through the API is in force on node 1 at its answer
            c = cloud_login5(n1.port, "acme", tok["secret"])
            api.ok("DELETE", "/admin/instances/acme/tokens/" + tok["id"])
            c.expect_disconnect(0x98, 1.0, "token revoked through the API")
            # an admin key revoked on the cluster is refused by the node within a poll
            cok(r.url, "admin-key", "revoke", key["id"])
            wait_for(lambda: api.call("GET", "/admin/instances")[0] == 401, 1.5,
                     what="the revoked admin key refused")
            api.key = json.loads(cok(r.url, "--json", "admin-key", "create"))["secret"]
            api.ok("GET", "/admin/instances")  # a new key: a miss makes the node look at once
            # an API write with Redis gone is refused, not lost
            r.stop()
            got, _, parsed = api.call("POST", "/admin/instances", {"name": "late"})
            check_equal(got, 503, "status of a write without Redis (%r)" % parsed)
            check("Redis" in parsed.get("error", ""), "error: %r" % parsed)


def test_a_node_keeps_its_retained_messages_across_a_restart():
    with RedisServer() as r:
        cok(r.url, "init")
        cok(r.url, "instance", "create", "acme")
        _, secret = ctoken(r.url, "acme")
        db = cloud_db()
        args = ("--mode", "cloud", "--cluster", r.url, "--db", db, "--allow-keys-without-tls")
        with Broker(*args) as b:
            c = cloud_login(b.port, "acme", secret)
            c.publish("kept/topic", b"still here", qos=1, retain=True)
            c.close()
        with Broker(*args) as b:
            c = cloud_login(b.port, "acme", secret)
            c.subscribe([("kept/#", 1)])
            p = c.receive(what="the retained message the node kept")
            check_equal((p.topic, p.payload, p.retain), ("kept/topic", b"still here", True),
                        "the retained message kept by the node (topic, payload, retain)")

def test_rediss_checks_the_server_certificate():
    crt, key = _cert("redis", "redis-ca", server=True)  # for IP:127.0.0.1 and DNS:localhost
    ca, other_ca = _ca("redis-ca"), _ca("other-ca")
    tls_port = free_port()
    with RedisServer(extra_args=["--tls-port", tls_port, "--tls-cert-file", crt,
                                 "--tls-key-file", key, "--tls-ca-cert-file", ca,
                                 "--tls-auth-clients", "no"]) as r:
        url = "rediss://%s:%d" % (HOST, tls_port)
        for args, what in (((), "the system's CAs"), (("--cluster-ca", other_ca), "another CA")):
            rc, _, err = cctl(url, *args, "init")
            check_equal(rc, 2, "init over TLS with %s (stderr %r)" % (what, err))
            check("TLS handshake failed" in err and url in err, "message: %r" % err)
        rc, _, err = cctl(url, "--cluster-ca", os.path.join(os.path.dirname(ca), "none.crt"),
                          "init")
        check_equal(rc, 2, "a CA file that is not there (stderr %r)" % err)
        cok(url, "--cluster-ca", ca, "init")
        cok(url, "--cluster-ca", ca, "instance", "create", "acme")
        # by name: the certificate's DNS name is checked (and SNI sent)
        secret = json.loads(cok("rediss://localhost:%d" % tls_port, "--cluster-ca", ca, "--json",
                                "token", "create", "acme"))["secret"]
        check_equal(version(r), 3, "the catalog written over TLS")
        with node(r, "--cluster-ca", ca, url=url) as n:
            cloud_login(n.port, "acme", secret).ping()


if __name__ == "__main__":
    run_tests(globals())
