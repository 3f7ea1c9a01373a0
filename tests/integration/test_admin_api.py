#!/usr/bin/python3
"""The management API under /admin/ (issue 14): instances, plans, tokens and live
clients over HTTP with an admin key made by `aviaryctl admin-key create`.

Each test runs its own cloud-mode aviaryd on its own database with a tcp:// and an
http:// listener on 127.0.0.1 and speaks HTTP with http.client. What the API changes
must be in force when the answer arrives: a token it creates is accepted by the
CONNECT sent next, a token it revokes is closed and refused.
"""

import http.client
import json
import os
import socket
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    HOST, Broker, RawClient, check, check_equal, cloud_db, cloud_login, ctl, run, run_tests,
    unique, wait_for, missing)
from mqtt5 import cloud_login5  # noqa: E402

import shutil  # noqa: E402
import tempfile  # noqa: E402
import atexit  # noqa: E402


def _admin_key(db, label="tests"):
    ctl(db, "init")  # only init, instance create and plan set make a new database
    return json.loads(ctl(db, "--json", "admin-key", "create", "--label", label))


def _cloud(db, *args, http="http://%s:0" % HOST):
    return Broker("--mode", "cloud", "--db", db, "--listen", http, "--allow-keys-without-tls",
                  *args)


def _http_port(b, scheme="http"):
    return wait_for(lambda: next((p for s, _, p in b.listeners if s == scheme), None), 5.0,
                    what="the %s:// listener" % scheme)


class Api:
    """One broker's management API with one key."""

    def __init__(self, b, key, scheme="http", context=None):
        self.port = _http_port(b, scheme)
        self.key = key
        self.scheme = scheme
        self.context = context

    def call(self, method, path, body=None, key="", raw=None, headers=None):
        """(status, headers, parsed JSON or None). key="" uses the API's key, None none."""
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(HOST, self.port, timeout=10, context=self.context)
        else:
            conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
        hdrs = dict(headers or {})
        key = self.key if key == "" else key
        if key is not None:
            hdrs["Authorization"] = "Bearer " + key
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else None)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            r = conn.getresponse()
            text = r.read()
            hdr = {k.lower(): v for k, v in r.getheaders()}
        finally:
            conn.close()
        parsed = None
        if text and hdr.get("content-type", "").startswith("application/json"):
            parsed = json.loads(text.decode("utf-8"))
        return r.status, hdr, parsed

    def ok(self, method, path, body=None, status=200):
        got, _, parsed = self.call(method, path, body)
        check(got == status, "%s %s: expected %d, got %d %r" % (method, path, status, got,
                                                                parsed))
        return parsed

    def error(self, method, path, status, body=None, key="", raw=None, contains=None):
        got, hdr, parsed = self.call(method, path, body, key=key, raw=raw)
        check(got == status, "%s %s: expected %d, got %d %r" % (method, path, status, got,
                                                                parsed))
        check(isinstance(parsed, dict) and isinstance(parsed.get("error"), str)
              and parsed["error"], "%s %s: no {\"error\": ...} body: %r" % (method, path, parsed))
        if contains:
            check(contains in parsed["error"], "%s %s: error %r does not mention %r"
                  % (method, path, parsed["error"], contains))
        return hdr, parsed["error"]


def _setup(*args, **kw):
    db = cloud_db()
    key = _admin_key(db)
    b = _cloud(db, *args, **kw)
    return db, key, b


# ---------------------------------------------------------------------------
# the key

# Every resource, with a method it serves and a body it takes.
ENDPOINTS = [
    ("GET", "/admin/instances", None),
    ("POST", "/admin/instances", {"name": "x1"}),
    ("GET", "/admin/instances/acme", None),
    ("PATCH", "/admin/instances/acme", {"limits": {"max-connections": 9}}),
    ("DELETE", "/admin/instances/acme", None),
    ("GET", "/admin/instances/acme/tokens", None),
    ("POST", "/admin/instances/acme/tokens", {}),
    ("DELETE", "/admin/instances/acme/tokens/0123456789abcdef", None),
    ("GET", "/admin/instances/acme/clients", None),
    ("DELETE", "/admin/instances/acme/clients/someone", None),
    ("GET", "/admin/plans", None),
    ("PUT", "/admin/plans/gold/limits/max-payload", {"value": 1000}),
]


def test_every_endpoint_wants_a_good_key():
    db, key, b = _setup()
    ctl(db, "instance", "create", "acme")
    with b:
        api = Api(b, key["secret"])
        for method, path, body in ENDPOINTS:
            hdr, _ = api.error(method, path, 401, body, key=None, contains="admin key")
            check_equal(hdr.get("www-authenticate"), 'Bearer realm="aviary"',
                        "WWW-Authenticate of %s %s without a key" % (method, path))
            hdr, _ = api.error(method, path, 401, body, key="not-a-key",
                               contains="not one")
            check("www-authenticate" in hdr, "WWW-Authenticate with a wrong key")
        # and with the key, none is refused for it
        for method, path, body in ENDPOINTS[:-3] + ENDPOINTS[-2:]:
            status, _, parsed = api.call(method, path, body)
            check(status not in (401, 403), "%s %s with a good key: %d %r"
                  % (method, path, status, parsed))


def test_a_key_made_while_running_works_at_once_and_a_revoked_one_not():
    db, key, b = _setup()
    with b:
        api = Api(b, key["secret"])
        api.ok("GET", "/admin/plans")
        fresh = _admin_key(db, "fresh")
        check_equal(api.call("GET", "/admin/plans", key=fresh["secret"])[0], 200,
                    "a key made by aviaryctl just before")
        ctl(db, "admin-key", "revoke", fresh["id"])
        wait_for(lambda: api.call("GET", "/admin/plans", key=fresh["secret"])[0] == 401, 3.0,
                 what="the revoked admin key to be refused")
        api.ok("GET", "/admin/plans")


def test_desktop_mode_has_no_management_api():
    with Broker("--listen", "http://%s:0" % HOST) as b:
        api = Api(b, "whatever")
        api.error("GET", "/admin/instances", 404, contains="cloud mode only")


# ---------------------------------------------------------------------------
# instances and plans

def test_instances_create_list_show_patch_delete():
    db, key, b = _setup()
    with b:
        api = Api(b, key["secret"])
        check_equal(api.ok("GET", "/admin/instances"), [], "instances of a new database")
        check_equal(api.ok("POST", "/admin/instances", {"name": "acme"}, 201),
                    {"name": "acme", "plan": "default"}, "created")
        api.error("POST", "/admin/instances", 409, {"name": "acme"}, contains="exists already")
        api.error("POST", "/admin/instances", 404, {"name": "b", "plan": "nope"},
                  contains="no plan 'nope'")
        api.error("POST", "/admin/instances", 400, {"name": "bad name"}, contains="bad instance")
        listed = api.ok("GET", "/admin/instances")
        check_equal([i["name"] for i in listed], ["acme"], "listed")
        # the same objects as aviaryctl --json
        check_equal(listed, json.loads(ctl(db, "--json", "instance", "list")), "vs aviaryctl")
        shown = api.ok("GET", "/admin/instances/acme")
        check_equal(shown, json.loads(ctl(db, "--json", "instance", "show", "acme")),
                    "GET vs aviaryctl instance show")
        api.ok("PUT", "/admin/plans/gold/limits/max-payload", {"value": "2k"})
        patched = api.ok("PATCH", "/admin/instances/acme",
                         {"plan": "gold", "limits": {"max-connections": 7}})
        check_equal(patched["plan"], "gold", "plan after PATCH")
        check_equal(patched["limits"]["max-connections"], {"value": 7, "source": "instance"},
                    "max-connections after PATCH")
        check_equal(patched["limits"]["max-payload"], {"value": 2048, "source": "plan"},
                    "max-payload from the plan")
        plans = {p["name"]: p["limits"] for p in api.ok("GET", "/admin/plans")}
        check_equal(plans["gold"], {"max-payload": 2048}, "gold's limits")
        check_equal(api.ok("DELETE", "/admin/instances/acme"), {"name": "acme", "deleted": True},
                    "deleted")
        api.error("GET", "/admin/instances/acme", 404, contains="no instance 'acme'")
        api.error("DELETE", "/admin/instances/acme", 404)


def test_bad_bodies_are_400_with_a_message():
    db, key, b = _setup()
    ctl(db, "instance", "create", "acme")
    with b:
        api = Api(b, key["secret"])
        cases = [
            (b'{"name": "x"', "malformed JSON: offset 12"),
            (b'{"name": "x",}', "malformed JSON"),
            (b'["x"]', "must be a JSON object, not an array"),
            (b'{"name": 5}', "name: expected a string, got a number"),
            (b'{"name": "x", "colour": "red"}', 'unknown field "colour"'),
            (b'{"name": "a\\u0000b"}', "U+0000"),
            (b'{}', "name: missing"),
            (b'{"name": "\xff"}', "not valid UTF-8"),
        ]
        for raw, words in cases:
            api.error("POST", "/admin/instances", 400, raw=raw, contains=words)
        token_cases = [
            ({"ttl": "soon"}, "ttl: bad duration 'soon'"),
            ({"ttl": -5}, "ttl: expected a duration"),
            ({"ttl": 0}, "bad duration '0s'"),
            ({"label": "a\tb"}, "label: control characters are not allowed"),
            ({"client_id": ""}, "client_id: empty"),
            ({"pub": "a/b"}, "pub: expected an array"),
            ({"sub": [1]}, "sub[0]: expected a string"),
            ({"deny_sub": ["a/#/b"]}, "deny_sub 'a/#/b':"),
            ({"expires": 5}, 'unknown field "expires"'),
            ({"allow_action": "yes"}, "allow_action: expected true or false"),
        ]
        for body, words in token_cases:
            api.error("POST", "/admin/instances/acme/tokens", 400, body, contains=words)
        api.error("PATCH", "/admin/instances/acme", 400, {}, contains="nothing to change")
        api.error("PATCH", "/admin/instances/acme", 400, {"limits": {"max-conns": 5}},
                  contains="unknown limit 'max-conns'")
        api.error("PATCH", "/admin/instances/acme", 400, {"limits": {"max-connections": -1}},
                  contains="limits.max-connections")
        api.error("PATCH", "/admin/instances/acme", 400, {"limits": []},
                  contains="limits: expected an object")
        api.error("PUT", "/admin/plans/gold/limits/max-payload", 400, {"value": "lots"},
                  contains="max-payload")
        api.error("PUT", "/admin/plans/gold/limits/max-payload", 400, {},
                  contains="value: missing")
        # nothing of the refused requests was made
        check_equal([t for t in api.ok("GET", "/admin/instances/acme/tokens")], [],
                    "tokens after refusals")


def test_oversized_body_is_413():
    db, key, b = _setup()
    with b:
        port = _http_port(b)
        s = socket.create_connection((HOST, port), timeout=10)
        try:
            s.sendall(b"POST /admin/instances HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                      + key["secret"].encode() + b"\r\nContent-Length: 2000000\r\n\r\n")
            data = b""
            deadline = time.monotonic() + 10
            while b"\r\n\r\n" not in data and time.monotonic() < deadline:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        finally:
            s.close()
        check(data.startswith(b"HTTP/1.1 413"), "answer to a 2 MB body: %r" % data[:200])


def test_404_and_405():
    db, key, b = _setup()
    ctl(db, "instance", "create", "acme")
    with b:
        api = Api(b, key["secret"])
        for path in ("/admin", "/admin/", "/admin/nothing", "/admin/instances/acme/secrets",
                     "/admin/instances//tokens", "/admin/plans/gold"):
            api.error("GET", path, 404, contains="no such resource")
        api.error("GET", "/admin/instances/nope/tokens", 404, contains="no instance 'nope'")
        api.error("GET", "/admin/instances/nope/clients", 404, contains="no instance 'nope'")
        api.error("DELETE", "/admin/instances/acme/tokens/0123456789abcdef", 404,
                  contains="no token")
        for method, path, allow in (("PUT", "/admin/instances", "GET, POST"),
                                    ("POST", "/admin/instances/acme", "GET, DELETE, PATCH"),
                                    ("GET", "/admin/instances/acme/tokens/abc", "DELETE"),
                                    ("POST", "/admin/plans", "GET"),
                                    ("GET", "/admin/plans/gold/limits/max-payload", "PUT"),
                                    ("POST", "/admin/instances/acme/clients", "GET"),
                                    ("GET", "/admin/instances/acme/clients/x", "DELETE")):
            hdr, _ = api.error(method, path, 405)
            check_equal(hdr.get("allow"), allow, "Allow of %s %s" % (method, path))


# ---------------------------------------------------------------------------
# in force before the answer

def test_token_made_by_the_api_is_accepted_by_the_next_connect():
    db, key, b = _setup()
    with b:
        api = Api(b, key["secret"])
        api.ok("POST", "/admin/instances", {"name": "acme"}, 201)
        for i in range(5):
            tok = api.ok("POST", "/admin/instances/acme/tokens",
                         {"label": "device %d" % i, "ttl": "1h", "client_id": "dev-%d" % i,
                          "pub": ["sensors/#"], "deny_sub": ["secret/#"]}, 201)
            check(len(tok["secret"]) == 43 and tok["key"] is False, "token %r" % tok)
            check_equal(tok["client_id"], "dev-%d" % i, "client id")
            c = cloud_login(b.port, "acme", tok["secret"], "dev-%d" % i)
            c.ping()
            c.close()
        listed = api.ok("GET", "/admin/instances/acme/tokens")
        check_equal(len(listed), 5, "tokens listed")
        check("secret" not in listed[0], "a listing shows no secret")
        check_equal(listed[0]["status"], "active", "status")
        # an instance made through the API is there for the next CONNECT as well
        api.ok("POST", "/admin/instances", {"name": "fresh"}, 201)
        key2 = api.ok("POST", "/admin/instances/fresh/tokens", {}, 201)
        check(key2["key"] is True and key2["expires"] is None, "a token without ttl is a key")
        check_equal(key2["allow_action"], False, "allow_action by default")
        cloud_login(b.port, "fresh", key2["secret"]).close()
        # the $action permission, as aviaryctl's --allow-action grants it
        actor = api.ok("POST", "/admin/instances/fresh/tokens", {"allow_action": True}, 201)
        check_equal(actor["allow_action"], True, "allow_action asked for")
        listed = api.ok("GET", "/admin/instances/fresh/tokens")
        check_equal(sorted(t["allow_action"] for t in listed), [False, True],
                    "allow_action in the listing")


def test_revoke_through_the_api_closes_and_refuses():
    db, key, b = _setup()
    ctl(db, "instance", "create", "acme")
    with b:
        api = Api(b, key["secret"])
        tok = api.ok("POST", "/admin/instances/acme/tokens", {"ttl": "10m"}, 201)
        other = api.ok("POST", "/admin/instances/acme/tokens", {"ttl": "10m"}, 201)
        c = cloud_login5(b.port, "acme", tok["secret"])
        survivor = cloud_login(b.port, "acme", other["secret"])
        check_equal(api.ok("DELETE", "/admin/instances/acme/tokens/" + tok["id"]),
                    {"instance": "acme", "id": tok["id"], "revoked": True}, "revoked")
        # in force at the answer: the connection is closed already or at once
        c.expect_disconnect(0x98, 2.0, "token revoked through the API")
        cloud_login(b.port, "acme", tok["secret"], expect_rc=4).close()  # bad user name or password
        survivor.ping()
        listed = {t["id"]: t["status"] for t in api.ok("GET", "/admin/instances/acme/tokens")}
        check_equal(listed[tok["id"]], "revoked", "status after revoke")


def test_limits_set_through_the_api_take_effect():
    db, key, b = _setup()
    ctl(db, "instance", "create", "acme")
    with b:
        api = Api(b, key["secret"])
        tok = api.ok("POST", "/admin/instances/acme/tokens", {}, 201)
        api.ok("PATCH", "/admin/instances/acme", {"limits": {"max-connections": 1}})
        first = cloud_login(b.port, "acme", tok["secret"])
        # the second is over max-connections: CONNACK 3 (server unavailable) in 3.1.1
        second = RawClient(b.port)
        second.connect(unique("c"), username="acme", password=tok["secret"], expect_rc=None)
        check(second.connack_rc != 0, "a second connection over max-connections 1 was accepted")
        second.close()
        first.close()
        api.ok("PATCH", "/admin/instances/acme", {"limits": {"max-connections": 10}})
        cs = [cloud_login(b.port, "acme", tok["secret"]) for _ in range(2)]
        for c in cs:
            c.close()


# ---------------------------------------------------------------------------
# live clients

def test_list_clients_and_close_one():
    db, key, b = _setup()
    ctl(db, "instance", "create", "acme")
    with b:
        api = Api(b, key["secret"])
        tok = api.ok("POST", "/admin/instances/acme/tokens", {}, 201)
        check_equal(api.ok("GET", "/admin/instances/acme/clients"), [], "no clients yet")
        v5 = cloud_login5(b.port, "acme", tok["secret"], client_id="five")
        v4 = cloud_login(b.port, "acme", tok["secret"], "four/with/slashes")
        clients = {c["client_id"]: c for c in api.ok("GET", "/admin/instances/acme/clients")}
        check_equal(sorted(clients), ["five", "four/with/slashes"], "clients listed")
        check_equal(clients["five"]["protocol"], 5, "protocol of the MQTT 5 client")
        check_equal(clients["four/with/slashes"]["protocol"], 4, "protocol of the 3.1.1 one")
        check_equal(clients["five"]["token"], tok["id"], "token of a client")
        check_equal(clients["five"]["transport"], "tcp", "transport")
        check(clients["five"]["peer"].startswith("127.0.0.1:"), "peer %r" % clients["five"])
        check_equal(api.ok("DELETE", "/admin/instances/acme/clients/five"),
                    {"instance": "acme", "client_id": "five", "closed": True}, "closed")
        v5.expect_disconnect(0x98, 2.0, "closed through the API")
        api.ok("DELETE", "/admin/instances/acme/clients/four/with/slashes")
        v4.expect_closed(2.0, "the 3.1.1 client to be closed")
        api.error("DELETE", "/admin/instances/acme/clients/five", 404, contains="no client")
        wait_for(lambda: api.ok("GET", "/admin/instances/acme/clients") == [], 3.0,
                 what="the closed clients to leave the list")


# ---------------------------------------------------------------------------
# transports: https, and /metrics with the key

_tls_dir = tempfile.mkdtemp(prefix="aviary-admin-tls-")
atexit.register(shutil.rmtree, _tls_dir, True)


def _self_signed():
    exe = shutil.which("openssl")
    if exe is None:
        missing("the openssl command is not installed (Debian: openssl)")
    crt, key = os.path.join(_tls_dir, "s.crt"), os.path.join(_tls_dir, "s.key")
    if not os.path.exists(crt):
        r = run([exe, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                 "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key,
                 "-out", crt], timeout=30)
        check(r.returncode == 0, "openssl: %r" % r.stderr)
    return crt, key


def test_admin_key_over_https_and_for_metrics():
    crt, tkey = _self_signed()
    db = cloud_db()
    key = _admin_key(db)
    with Broker("--mode", "cloud", "--db", db, "--listen", "https://%s:0" % HOST,
                "--tls-cert", crt, "--tls-key", tkey) as b:
        ctx = ssl.create_default_context(cafile=crt)
        api = Api(b, key["secret"], scheme="https", context=ctx)
        api.ok("POST", "/admin/instances", {"name": "acme"}, 201)
        api.error("GET", "/admin/plans", 401, key="wrong")
        status, _, _ = api.call("GET", "/metrics")
        check_equal(status, 200, "GET /metrics with the admin key over https")


if __name__ == "__main__":
    run_tests(globals())
