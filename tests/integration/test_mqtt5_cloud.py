#!/usr/bin/python3
"""Cloud mode with MQTT 5 clients: CONNACK 0x86 / 0x87 / 0x97, PUBACK/PUBREC 0x87 for a
topic the token may not publish, SUBACK 0x87 outside the token's sub filters and 0x80
inside a deny filter, DISCONNECT 0x98 on revocation / instance deletion and 0xA0 at token
expiry, the new limits per instance.

Each test makes its own database with aviaryctl and runs its own cloud-mode aviaryd.
All of it is aviary-specific: skipped with AVIARY_TEST_PEER=mosquitto.
"""

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    cloud_db, ctl, new_token,
    check, check_equal, run_tests, unique, wait_for)
from mqtt5 import (  # noqa: E402
    MAXIMUM_PACKET_SIZE, RECEIVE_MAXIMUM, SESSION_EXPIRY_INTERVAL, TOPIC_ALIAS_MAXIMUM,
    aviary_only, broker, cloud_login5, publish5)

APPLY_WITHIN = 2.0  # aviaryd picks up database changes within this (test_cloud.py)


_db, _ctl = cloud_db, ctl


def _instance(db, *args):
    name = unique("inst")
    _ctl(db, "instance", "create", name, *args)
    return name


_token = new_token


def _cloud(db, *args):
    return broker("--mode", "cloud", "--db", db, "--allow-keys-without-tls", *args)



def _refused(b, instance, secret, reason, what, pattern=None, **kw):
    c = cloud_login5(b.port, instance, secret, expect_reason=reason, **kw)
    rs = c.connack.props.reason_string
    check(rs, "CONNACK 0x%02X for %s without a Reason String" % (reason, what))
    if pattern:
        check(re.search(pattern, rs, re.I), "CONNACK Reason String %r for %s does not match "
              "/%s/" % (rs, what, pattern))
    check(not c.packets_until_closed(5, "the close after CONNACK 0x%02X" % reason),
          "packets after a refusing CONNACK")


# ---------------------------------------------------------------------------
# CONNACK

def test_bad_credentials_get_connack_0x86():
    aviary_only("cloud mode")
    db = _db()
    name, other = _instance(db), _instance(db)
    _, secret = _token(db, name)
    _, other_secret = _token(db, other)
    revoked_id, revoked = _token(db, name)
    _ctl(db, "token", "revoke", name, revoked_id)
    with _cloud(db) as b:
        _refused(b, name, "wrong-secret", 0x86, "a wrong secret")
        _refused(b, "nobody", secret, 0x86, "an unknown instance")
        _refused(b, name, other_secret, 0x86, "another instance's token")
        _refused(b, name, revoked, 0x86, "a revoked token")
        cloud_login5(b.port, name, secret).ping()


def test_not_authorized_gets_connack_0x87():
    """Expired token, key without TLS, token bound to another client id, will topic the
    token may not publish to."""
    aviary_only("cloud mode")
    db = _db()
    name = _instance(db)
    _, expired = _token(db, name, "--ttl", "1s")
    _, key = _token(db, name)
    _, bound = _token(db, name, "--client-id", "device-7")
    _, narrow = _token(db, name, "--ttl", "1h", "--pub", "sensors/#")
    time.sleep(1.2)
    with broker("--mode", "cloud", "--db", db) as b:  # keys need TLS here
        _refused(b, name, expired, 0x87, "an expired token", r"expired")
        _refused(b, name, key, 0x87, "a key on plain TCP", r"TLS")
    with _cloud(db) as b:
        # The client learns that its token is bound, not to what: that is the token's rule.
        _refused(b, name, bound, 0x87, "a token bound to another client id",
                 r"bound to another client id(?!.*device-7)", client_id="device-8")
        cloud_login5(b.port, name, bound, "device-7").ping()
        _refused(b, name, narrow, 0x87, "a will topic the token may not publish",
                 r"cmd/door", will={"topic": "cmd/door", "payload": b"x"})
        cloud_login5(b.port, name, narrow, will={"topic": "sensors/gone", "payload": b"x"}).ping()


def test_max_connections_gets_connack_0x97():
    aviary_only("cloud mode")
    db = _db()
    _ctl(db, "plan", "set", "tiny", "max-connections", "2")
    name = _instance(db, "--plan", "tiny")
    _, secret = _token(db, name)
    with _cloud(db) as b:
        first = cloud_login5(b.port, name, secret, "one")
        second = cloud_login5(b.port, name, secret, "two")
        second.ping()
        _refused(b, name, secret, 0x97, "a third connection", r"max-connections 2",
                 client_id="three")
        first.ping()
        second.ping()


def test_instance_limits_reach_the_connack():
    """The new directives are limits per instance too."""
    aviary_only("cloud mode")
    db = _db()
    name = _instance(db)
    for limit, value in (("max-topic-aliases", "2"), ("max-session-expiry", "5"),
                         ("max-inflight", "4"), ("max-payload", "2000")):
        _ctl(db, "instance", "set", name, limit, value)
    _, secret = _token(db, name)
    with _cloud(db) as b:
        c = cloud_login5(b.port, name, secret, session_expiry=3600)
        p = c.connack.props
        check_equal((p.get(TOPIC_ALIAS_MAXIMUM), p.get(SESSION_EXPIRY_INTERVAL),
                     p.get(RECEIVE_MAXIMUM)), (2, 5, 4),
                    "Topic Alias Maximum, Session Expiry Interval, Receive Maximum for an "
                    "instance with max-topic-aliases 2, max-session-expiry 5, max-inflight 4")
        mps = p.get(MAXIMUM_PACKET_SIZE)
        check(mps is not None and mps > 2000,
              "Maximum Packet Size %r for an instance with max-payload 2000" % (mps,))
        c.send(publish5("big/t", b"x" * 2001, 1, pid=1))
        c.expect_disconnect(0x95, what="a 2001-byte payload with max-payload 2000",
                            reason_string=r"max-payload\D*2000")


# ---------------------------------------------------------------------------
# PUBLISH and SUBSCRIBE permissions

def test_publish_not_allowed_gets_0x87_and_qos0_is_dropped():
    aviary_only("cloud mode")
    db = _db()
    name = _instance(db)
    _, full = _token(db, name)
    _, limited = _token(db, name, "--pub", "sensors/#", "--deny-pub", "sensors/secret/#")
    with _cloud(db) as b:
        watcher = cloud_login5(b.port, name, full)
        watcher.subscribe(("#", 2))
        c = cloud_login5(b.port, name, limited)
        for qos, topic in ((1, "other/x"), (2, "other/y"), (1, "sensors/secret/k"),
                           (2, "sensors/secret/k")):
            ack = c.publish(topic, b"no", qos)
            check_equal(ack.reason, 0x87, "%s reason for %r (%r)" % (ack.name, topic, ack))
            check(ack.props.reason_string, "%s 0x87 without a Reason String" % ack.name)
        c.send(publish5("other/z", b"no", 0))
        c.ping()  # QoS 0: dropped silently, the connection stays
        watcher.expect_silence(0.5, "(a PUBLISH the token may not make was delivered)")
        ack = c.publish("sensors/ok", b"yes", 1)
        check_equal(ack.reason, 0, "PUBACK reason for an allowed topic")
        check_equal(watcher.receive().payload, b"yes", "the allowed message")


def test_subscribe_outside_filters_0x87_inside_deny_0x80():
    aviary_only("cloud mode")
    db = _db()
    name = _instance(db)
    _, limited = _token(db, name, "--sub", "sensors/#", "--deny-sub", "sensors/secret/#")
    with _cloud(db) as b:
        c = cloud_login5(b.port, name, limited)
        ack = c.subscribe([("other/#", 1), ("sensors/secret/x", 1), ("sensors/#", 1),
                           ("#", 0), ("sensors/secret/#", 2), ("sensors/a/+", 2)])
        check_equal(ack.codes, [0x87, 0x80, 1, 0x87, 0x80, 2], "SUBACK reason codes")
        rs = ack.props.reason_string
        check(rs, "no Reason String on a SUBACK with refusals: %r" % ack)
        check("secret" not in rs, "the Reason String %r reveals the deny filter" % rs)


def test_max_retained_lowered_gets_0x97_saying_how_many_are_held():
    """Lowered below what the instance holds, max-retained refuses new retained topics;
    the Reason String says how many it holds (3), not the limit twice."""
    aviary_only("cloud mode")
    db = _db()
    name = _instance(db)
    _ctl(db, "instance", "set", name, "max-retained", "5")
    _, secret = _token(db, name)
    with _cloud(db) as b:
        pub = cloud_login5(b.port, name, secret)
        for t in ("r/1", "r/2", "r/3"):
            ack = pub.publish(t, t.encode(), 1, retain=True)
            check(ack.reason < 0x80, "PUBACK 0x%02X for %s under max-retained 5" % (ack.reason, t))
        _ctl(db, "instance", "set", name, "max-retained", "2")

        def refused():
            ack = pub.publish("r/4", b"r/4", 1, retain=True)
            if ack.reason < 0x80:  # the new limit is not applied yet: clear r/4 again
                pub.publish("r/4", b"", 1, retain=True)
                return None
            return ack
        ack = wait_for(refused, APPLY_WITHIN + 2, 0.1, "max-retained 2 to be applied")
        check_equal(ack.reason, 0x97, "PUBACK reason for a 4th topic over max-retained 2")
        rs = ack.props.reason_string
        check(rs and re.search(r"holds 3 retained messages \(max-retained 2\)", rs),
              "Reason String %r does not say 3 held, max-retained 2" % rs)


# ---------------------------------------------------------------------------
# DISCONNECT from the broker

def test_revoked_token_gets_disconnect_0x98():
    aviary_only("cloud mode")
    db = _db()
    name = _instance(db)
    tid, secret = _token(db, name)
    _, other = _token(db, name)
    with _cloud(db) as b:
        c = cloud_login5(b.port, name, secret)
        survivor = cloud_login5(b.port, name, other)
        t0 = time.monotonic()
        _ctl(db, "token", "revoke", name, tid)
        c.expect_disconnect(0x98, APPLY_WITHIN + 2, "token revoked")
        check(time.monotonic() - t0 <= APPLY_WITHIN + 0.5, "DISCONNECT 0x98 came %.1f s after "
              "the revoke" % (time.monotonic() - t0))
        survivor.ping()


def test_deleted_instance_gets_disconnect_0x98():
    aviary_only("cloud mode")
    db = _db()
    gone, kept = _instance(db), _instance(db)
    sg, sk = _token(db, gone)[1], _token(db, kept)[1]
    with _cloud(db) as b:
        c = cloud_login5(b.port, gone, sg)
        other = cloud_login5(b.port, kept, sk)
        _ctl(db, "instance", "delete", gone, "--yes")
        c.expect_disconnect(0x98, APPLY_WITHIN + 2, "instance deleted")
        other.ping()


def test_token_expiry_gets_disconnect_0xa0():
    aviary_only("cloud mode")
    db = _db()
    name = _instance(db)
    _, secret = _token(db, name, "--ttl", "3s")
    with _cloud(db) as b:
        c = cloud_login5(b.port, name, secret)
        t0 = time.monotonic()
        c.expect_disconnect(0xA0, 6, "token expired")
        check(time.monotonic() - t0 >= 1.5, "DISCONNECT 0xA0 %.1f s after connecting with a "
              "3 s token" % (time.monotonic() - t0))


if __name__ == "__main__":
    run_tests(globals())
