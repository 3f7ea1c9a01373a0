#!/usr/bin/python3
"""Credentials an operator manages, seen from a running cloud-mode aviaryd:
the token in the user name (INSTANCE:SECRET with an empty or absent password)
over MQTT 3.1.1 and 5 with hand-made, mosquitto and paho clients, and
`aviaryctl token update` reaching connected and new clients.

Each test makes its own database with aviaryctl and runs its own aviaryd.
"""

import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    Broker, PahoClient, RawClient, check, check_equal, cloud_db, cloud_login, ctl,
    mosquitto_pub, mosquitto_sub, new_token, run_tests, unique, wait_for)
from mqtt5 import v5_connect  # noqa: E402

APPLY_WITHIN = 2.0  # aviaryd picks up database changes within this (test_cloud.py)


def _instance(db):
    name = unique("inst")
    ctl(db, "instance", "create", name)
    return name


def _cloud(db):
    return Broker("--mode", "cloud", "--db", db, "--allow-keys-without-tls")


def _log_shows(b, mark, pattern, what):
    try:
        wait_for(lambda: re.search(pattern, b.log_text(mark), re.I), 3.0, what=what)
    except Exception:
        check(False, "no log line /%s/ (%s); new lines:\n%s"
              % (pattern, what, b.log_text(mark)[-2000:]))


def _raw(port, version, username, password=None, expect_rc=0):
    c = RawClient(port)
    c.connect(unique("c"), version=version, username=username, password=password,
              expect_rc=expect_rc)
    return c


# ---- the token in the user name --------------------------------------------

def test_token_in_the_user_name_mqtt_311():
    db = cloud_db()
    name = _instance(db)
    _, secret = new_token(db, name)
    with _cloud(db) as b:
        for password in (None, b""):
            c = _raw(b.port, 4, "%s:%s" % (name, secret), password)
            c.subscribe([("t/#", 1)])
            c.ping()
            c.close()
        # the usual form still works beside it
        cloud_login(b.port, name, secret).ping()


def test_token_in_the_user_name_mqtt_5():
    db = cloud_db()
    name = _instance(db)
    _, secret = new_token(db, name)
    with _cloud(db) as b:
        for password in (None, b""):
            c = v5_connect(b.port, username="%s:%s" % (name, secret), password=password)
            c.ping()
            c.close()


def test_token_in_the_user_name_refused_when_wrong():
    db = cloud_db()
    name, other = _instance(db), _instance(db)
    _, secret = new_token(db, name)
    _, other_secret = new_token(db, other)
    with _cloud(db) as b:
        for user, pattern in (("%s:%s" % (name, "x" * 43), r"no live token.*unknown"),
                              ("nobody:%s" % secret, r"no instance 'nobody'"),
                              ("%s:%s" % (name, other_secret), r"another instance"),
                              ("%s:" % name, r"no live token")):
            mark = b.log_mark()
            _raw(b.port, 4, user, None, expect_rc=4).expect_closed(5, "close after CONNACK 4")
            _log_shows(b, mark, r"CONNACK 4: .*%s" % pattern, "refusing %r" % user[:20])
            check(secret not in b.log_text(mark) and other_secret not in b.log_text(mark),
                  "a secret from the user name reached the log")
        c = v5_connect(b.port, username="%s:%s" % (name, "y" * 43), expect_reason=0x86)
        c.close()
        # no colon, no password: no secret at all
        _raw(b.port, 4, name, None, expect_rc=5).expect_closed(5, "close after CONNACK 5")
        # a password given: the user name is the instance, whole, and refused; the log
        # shows what precedes the colon only
        mark = b.log_mark()
        _raw(b.port, 4, "%s:%s" % (name, secret), "junk", expect_rc=4).close()
        _log_shows(b, mark, r"no instance '%s:<not shown>'" % name, "a colon and a password")
        check(secret not in b.log_text(mark), "a secret from the user name reached the log")


def test_token_in_the_user_name_with_mosquitto_clients():
    db = cloud_db()
    name = _instance(db)
    _, secret = new_token(db, name)
    user = "%s:%s" % (name, secret)
    with _cloud(db) as b:
        for version in ("mqttv311", "mqttv5"):
            topic = "m/%s" % version
            sub = mosquitto_sub(b.port, "-V", version, "-u", user, "-t", topic, "-C", "1")
            try:
                mosquitto_pub(b.port, "-V", version, "-u", user, "-t", topic, "-m", "hello")
                line = sub.wait_line(lambda l: l.strip() == "hello", 5.0, what="the message")
                check_equal(line.strip(), "hello", "what mosquitto_sub received (%s)" % version)
            finally:
                sub.close()


def test_token_in_the_user_name_with_paho():
    db = cloud_db()
    name = _instance(db)
    _, secret = new_token(db, name)
    with _cloud(db) as b:
        c = PahoClient(b.port, client_id=unique("paho"), username="%s:%s" % (name, secret))
        c.close()
        c = PahoClient(b.port, client_id=unique("paho"), username="%s:%s" % (name, "z" * 43),
                       expect_rc=4)
        c.close()


def test_http_basic_takes_the_same_two_forms():
    import base64
    import http.client
    db = cloud_db()
    name = _instance(db)
    _, secret = new_token(db, name)
    with Broker("--mode", "cloud", "--db", db, "--allow-keys-without-tls",
                "--listen", "http://127.0.0.1:0") as b:
        port = wait_for(lambda: next((p for s, _, p in b.listeners if s == "http"), None), 5.0,
                        what="the http:// listener")

        def post(credentials):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                auth = base64.b64encode(credentials.encode()).decode()
                conn.request("POST", "/broker/t", body=b"x",
                             headers={"Authorization": "Basic " + auth})
                r = conn.getresponse()
                r.read()
                return r.status
            finally:
                conn.close()
        for credentials, status in (("%s:%s" % (name, secret), 200),
                                    ("%s:%s:" % (name, secret), 200),
                                    ("%s:%s:" % (name, "x" * 43), 401),
                                    ("%s:%s::" % (name, secret), 401)):
            check_equal(post(credentials), status, "POST with Basic %r" % credentials[:12])


# ---- token update on a running broker ---------------------------------------

def test_narrowing_a_token_closes_its_clients_and_binds_new_ones():
    db = cloud_db()
    name = _instance(db)
    tid, secret = new_token(db, name, "--pub", "a/#")
    _, watcher_secret = new_token(db, name)
    with _cloud(db) as b:
        watcher = cloud_login(b.port, name, watcher_secret)
        watcher.subscribe([("#", 1)])
        c = cloud_login(b.port, name, secret)
        mark = b.log_mark()
        t0 = time.monotonic()
        ctl(db, "token", "update", name, tid, "--pub", "b/#")
        c.expect_closed(APPLY_WITHIN + 1, "the close after narrowing its token")
        check(time.monotonic() - t0 <= APPLY_WITHIN + 0.5, "closed too late")
        _log_shows(b, mark, r"token %s was changed" % tid, "token update")
        watcher.ping()  # other tokens' clients stay
        c = cloud_login(b.port, name, secret)
        c.publish("a/x", b"old rule", qos=1)
        c.publish("b/x", b"new rule", qos=1)
        got = [p.payload for p in watcher.receive_all(1, 5.0)]
        check_equal(got, [b"new rule"], "what the new rules let through")
        watcher.expect_silence(0.3, "a message the updated token no longer allows")


def test_label_change_keeps_clients_and_client_id_binding_applies():
    db = cloud_db()
    name = _instance(db)
    tid, secret = new_token(db, name, "--ttl", "1h")
    with _cloud(db) as b:
        c = cloud_login(b.port, name, secret)
        ctl(db, "token", "update", name, tid, "--label", "renamed")
        time.sleep(APPLY_WITHIN + 0.5)
        c.ping()  # a label is no rule: still connected
        bound = json.loads(ctl(db, "--json", "token", "update", name, tid, "--client-id",
                               "auto"))["client_id"]
        c.expect_closed(APPLY_WITHIN + 1, "the close after binding its token")
        cloud_login(b.port, name, secret, client_id="someone-else", expect_rc=5).close()
        cloud_login(b.port, name, secret, client_id=bound).ping()
        ctl(db, "token", "update", name, tid, "--no-client-id")
        wait_for(lambda: _login_ok(b.port, name, secret, "anyone"), APPLY_WITHIN + 1,
                 what="a login with any client id after --no-client-id")


def _login_ok(port, name, secret, client_id):
    c = RawClient(port)
    try:
        c.connect(client_id, username=name, password=secret, expect_rc=None)
        return c.connack_rc == 0
    finally:
        c.close()


def test_shortened_expiry_applies_to_a_connected_client():
    db = cloud_db()
    name = _instance(db)
    tid, secret = new_token(db, name, "--ttl", "1h")
    with _cloud(db) as b:
        c = cloud_login(b.port, name, secret)
        ctl(db, "token", "update", name, tid, "--ttl", "2s")
        c.expect_closed(APPLY_WITHIN + 1, "the close after shortening its token")
        time.sleep(2.5)
        cloud_login(b.port, name, secret, expect_rc=5).close()


run_tests(globals())
