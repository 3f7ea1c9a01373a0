#!/usr/bin/python3
"""Cloud mode (SPEC 4-5): instances, tokens, permissions and plan limits.

Each test makes its own database with aviaryctl and runs its own cloud-mode
aviaryd on it; changes made with aviaryctl while the broker runs must reach
it within 2 s.
"""

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    cloud_db, cloud_login, ctl, new_token,
    PINGREQ_PACKET, Broker, check, check_equal, RawClient, run_tests, unique,
    wait_for, aviaryd_path, run, HOST)

# aviaryd notices a change in the database within this (the bound).
APPLY_WITHIN = 2.0


_db, _ctl = cloud_db, ctl


def _instance(db, name=None, *args):
    name = name or unique("inst")
    _ctl(db, "instance", "create", name, *args)
    return name


_token = new_token


def _cloud(db, *args, **kw):
    return Broker("--mode", "cloud", "--db", db, *args, **kw)



def _check_log(b, mark, pattern, what):
    def found():
        return re.search(pattern, b.log_text(mark), re.I)
    try:
        wait_for(found, 2.0, what="a log line /%s/" % pattern)
    except Exception:
        text = b.log_text(mark)
        check(False, "no log line mentioning /%s/ after %s; new log lines:\n%s"
              % (pattern, what, "\n".join("  | " + l for l in text.splitlines()[-20:])))


def _payloads(client, count, timeout=5.0):
    return [p.payload for p in client.receive_all(count, timeout)]


# ---------------------------------------------------------------------------
# isolation

def test_instances_are_isolated():
    db = _db()
    names = [_instance(db), _instance(db)]
    secrets = [_token(db, n)[1] for n in names]
    with _cloud(db, "--allow-keys-without-tls") as b:
        subs = [cloud_login(b.port, n, s, "sensor-1") for n, s in zip(names, secrets)]
        for s in subs:
            check_equal(s.subscribe([("#", 1)]), [1], "SUBACK for #")
        pubs = [cloud_login(b.port, n, s, "sensor-2") for n, s in zip(names, secrets)]
        for i, p in enumerate(pubs):
            p.publish("home/temp", b"from-%d" % i, qos=1)
            p.publish("home/kept", b"kept-%d" % i, qos=1, retain=True)
        for i, s in enumerate(subs):
            got = sorted(_payloads(s, 2))
            check_equal(got, sorted([b"from-%d" % i, b"kept-%d" % i]),
                        "messages seen by instance %d's # subscriber" % i)
            s.expect_silence(0.3, "messages from the other instance")
        # Retained messages and client ids live inside the instance too.
        for i, (n, sec) in enumerate(zip(names, secrets)):
            late = cloud_login(b.port, n, sec, "late")
            late.subscribe([("home/#", 0)])
            check_equal(_payloads(late, 1), [b"kept-%d" % i], "retained in instance %d" % i)
            late.expect_silence(0.3, "the other instance's retained message")
            late.close()
        # The same client id in the other instance is no take-over.
        for s in subs:
            s.ping()


def test_wills_stay_in_their_instance():
    db = _db()
    a, b_name = _instance(db), _instance(db)
    sa, sb = _token(db, a)[1], _token(db, b_name)[1]
    with _cloud(db, "--allow-keys-without-tls") as b:
        wa = cloud_login(b.port, a, sa)
        wa.subscribe([("#", 0)])
        wb = cloud_login(b.port, b_name, sb)
        wb.subscribe([("#", 0)])
        dying = cloud_login(b.port, a, sa, will={"topic": "gone", "payload": b"bye"})
        dying.abort()
        check_equal(_payloads(wa, 1), [b"bye"], "the will in its own instance")
        wb.expect_silence(0.5, "another instance's will")


# ---------------------------------------------------------------------------
# credentials

def test_refused_credentials_get_connack_4_or_5_and_a_reason():
    db = _db()
    name, other = _instance(db), _instance(db)
    _, secret = _token(db, name)
    _, other_secret = _token(db, other)
    revoked_id, revoked_secret = _token(db, name)
    _ctl(db, "token", "revoke", name, revoked_id)
    with _cloud(db, "--allow-keys-without-tls") as b:
        cases = [
            (dict(), 5, r"needs a user name"),
            (dict(username=name), 5, r"needs a user name"),
            (dict(username="nobody", password=secret), 4, r"no instance 'nobody'"),
            (dict(username=name, password="wrong"), 4, r"no live token.*unknown or revoked"),
            (dict(username=name, password=other_secret), 4, r"belongs to another instance"),
            (dict(username=name, password=revoked_secret), 4, r"unknown or revoked"),
        ]
        for creds, code, pattern in cases:
            mark = b.log_mark()
            c = RawClient(b.port)
            c.connect(unique("c"), expect_rc=code, **creds)
            c.expect_closed(5, "the close after CONNACK %d" % code)
            c.close()
            _check_log(b, mark, r"CONNACK %d: .*%s" % (code, pattern), "credentials %r" % creds)
        cloud_login(b.port, name, secret).ping()


def test_expired_token_is_refused():
    db = _db()
    name = _instance(db)
    _, secret = _token(db, name, "--ttl", "1s")
    time.sleep(1.2)
    with _cloud(db) as b:
        mark = b.log_mark()
        cloud_login(b.port, name, secret, expect_rc=5).expect_closed()
        _check_log(b, mark, r"CONNACK 5: .*has expired", "an expired token")


def test_key_needs_tls_unless_allowed():
    db = _db()
    name = _instance(db)
    _, key = _token(db, name)
    _, expiring = _token(db, name, "--ttl", "1h")
    with _cloud(db) as b:
        mark = b.log_mark()
        cloud_login(b.port, name, key, expect_rc=5).expect_closed()
        _check_log(b, mark, r"CONNACK 5: .*keys need TLS", "a key on plain TCP")
        cloud_login(b.port, name, expiring).ping()
    with _cloud(db, "--allow-keys-without-tls") as b:
        cloud_login(b.port, name, key).ping()


def test_token_bound_to_a_client_id():
    db = _db()
    name = _instance(db)
    _, secret = _token(db, name, "--client-id", "device-7")
    with _cloud(db, "--allow-keys-without-tls") as b:
        cloud_login(b.port, name, secret, "device-7").ping()
        mark = b.log_mark()
        cloud_login(b.port, name, secret, "device-8", expect_rc=5).expect_closed()
        _check_log(b, mark, r"CONNACK 5: .*bound to client id 'device-7', not 'device-8'",
                   "a bound token with another client id")


# ---------------------------------------------------------------------------
# expiry, revocation, deletion while connected

def test_expiry_warning_then_close():
    db = _db()
    name = _instance(db)
    _, secret = _token(db, name, "--ttl", "4s")
    with _cloud(db, "--token-warning", "2") as b:
        c = cloud_login(b.port, name, secret)
        t0 = time.monotonic()
        check_equal(c.subscribe([("[mqtt]tokenevents", 0)]), [0], "SUBACK for tokenevents")
        p = c.receive(5, what="expirywarning")
        warned = time.monotonic() - t0
        check_equal((p.topic, p.payload), ("[mqtt]tokenevents", b"expirywarning"),
                    "the warning")
        check_equal(len(p.payload), 13, "payload length")
        check(0.5 < warned < 3.5, "the warning came %.1f s after connecting, "
              "expected about 2 s (4 s TTL, 2 s lead)" % warned)
        mark = b.log_mark()
        c.expect_closed(4, "the close at expiry (and no second warning)")
        check(time.monotonic() - t0 > 2.5, "closed %.1f s after connecting, before expiry"
              % (time.monotonic() - t0))
        _check_log(b, mark, r"token \w+ expired", "expiry")


def test_expiry_warning_after_late_subscribe():
    """A client that subscribes after the warning's time gets it then, once."""
    db = _db()
    name = _instance(db)
    _, secret = _token(db, name, "--ttl", "5s")
    with _cloud(db, "--token-warning", "30") as b:
        c = cloud_login(b.port, name, secret)
        c.expect_silence(0.3, "a warning before subscribing")
        c.subscribe([("[mqtt]tokenevents", 0)])
        check_equal(c.receive(2, what="expirywarning").payload, b"expirywarning", "warning")
        c.subscribe([("[mqtt]tokenevents", 0)])
        c.expect_silence(0.5, "a second warning")


def test_revoke_closes_live_connection_within_2s():
    db = _db()
    name = _instance(db)
    tid, secret = _token(db, name)
    _, other = _token(db, name)
    with _cloud(db, "--allow-keys-without-tls") as b:
        c = cloud_login(b.port, name, secret)
        survivor = cloud_login(b.port, name, other)
        mark = b.log_mark()
        t0 = time.monotonic()
        _ctl(db, "token", "revoke", name, tid)
        c.expect_closed(APPLY_WITHIN + 1, "the close after revoking its token")
        took = time.monotonic() - t0
        check(took <= APPLY_WITHIN, "closed %.2f s after the revoke (limit %.0f s)"
              % (took, APPLY_WITHIN))
        _check_log(b, mark, r"token %s was revoked" % tid, "revoke")
        survivor.ping()
        cloud_login(b.port, name, secret, expect_rc=4).expect_closed()


def test_instance_delete_closes_its_connections():
    db = _db()
    gone, kept = _instance(db), _instance(db)
    sg, sk = _token(db, gone)[1], _token(db, kept)[1]
    with _cloud(db, "--allow-keys-without-tls") as b:
        c = cloud_login(b.port, gone, sg, will={"topic": "w", "payload": b"x"})
        c.subscribe([("#", 1)])
        other = cloud_login(b.port, kept, sk)
        other.subscribe([("#", 1)])
        mark = b.log_mark()
        _ctl(db, "instance", "delete", gone, "--yes")
        c.expect_closed(APPLY_WITHIN + 1, "the close after deleting its instance")
        _check_log(b, mark, r"instance %s was deleted" % gone, "instance delete")
        other.expect_silence(0.3, "the deleted instance's will")
        cloud_login(b.port, gone, sg, expect_rc=4).expect_closed()
        other.ping()


# ---------------------------------------------------------------------------
# permissions

def test_publish_permissions():
    db = _db()
    name = _instance(db)
    _, full = _token(db, name)
    _, limited = _token(db, name, "--pub", "sensors/#", "--deny-pub", "sensors/secret/#")
    with _cloud(db, "--allow-keys-without-tls") as b:
        watcher = cloud_login(b.port, name, full)
        watcher.subscribe([("#", 1)])
        c = cloud_login(b.port, name, limited)
        mark = b.log_mark()
        c.publish("other/x", b"no", qos=1)          # outside the allow list: acked, dropped
        c.publish("sensors/secret/k", b"no", qos=1)  # inside a deny: dropped
        c.publish("/sensors/ok", b"yes", qos=1)     # the leading '/' changes nothing
        check_equal(_payloads(watcher, 1), [b"yes"], "what the watcher received")
        watcher.expect_silence(0.3, "a PUBLISH the token did not allow")
        c.ping()
        _check_log(b, mark, r"PUBLISH to 'other/x' not allowed by token", "a denied PUBLISH")


def test_subscribe_permissions_and_delivery_check():
    db = _db()
    name = _instance(db)
    _, full = _token(db, name)
    _, limited = _token(db, name, "--sub", "sensors/#", "--deny-sub", "sensors/secret/#")
    with _cloud(db, "--allow-keys-without-tls") as b:
        pub = cloud_login(b.port, name, full)
        pub.publish("sensors/secret/r", b"hidden-retained", qos=1, retain=True)
        pub.publish("sensors/open/r", b"open-retained", qos=1, retain=True)
        c = cloud_login(b.port, name, limited)
        mark = b.log_mark()
        codes = c.subscribe([("other/#", 1), ("sensors/secret/x", 1), ("#", 1),
                             ("sensors/#", 1)])
        check_equal(codes, [0x80, 0x80, 0x80, 1], "SUBACK codes")
        _check_log(b, mark, r"not allowed by token", "a refused SUBSCRIBE")
        check_equal(_payloads(c, 1), [b"open-retained"], "retained messages granted")
        pub.publish("sensors/secret/x", b"hidden", qos=1)
        pub.publish("sensors/a", b"visible", qos=1)
        check_equal(_payloads(c, 1), [b"visible"], "live messages through sensors/#")
        c.expect_silence(0.3, "a message on a denied topic")


# ---------------------------------------------------------------------------
# plan limits, each at its edge

def test_max_connections_per_instance():
    db = _db()
    _ctl(db, "plan", "set", "tiny", "max-connections", "2")
    name = _instance(db, None, "--plan", "tiny")
    _, secret = _token(db, name)
    with _cloud(db, "--allow-keys-without-tls") as b:
        first = cloud_login(b.port, name, secret, "one")
        second = cloud_login(b.port, name, secret, "two")
        second.ping()
        mark = b.log_mark()
        cloud_login(b.port, name, secret, "three", expect_rc=3).expect_closed()
        _check_log(b, mark, r"CONNACK 3: .*max-connections 2", "the third connection")
        # A take-over replaces a connection: allowed at the limit.
        again = cloud_login(b.port, name, secret, "one")
        first.expect_closed(3, "the taken-over connection")
        again.ping()
        second.ping()
        # Raising the limit on the running broker lets a third one in.
        _ctl(db, "instance", "set", name, "max-connections", "3")
        wait_for(lambda: _try_login(b, name, secret, "three") == 0, APPLY_WITHIN + 1,
                 what="the raised max-connections to apply")


def _try_login(b, name, secret, client_id):
    c = RawClient(b.port)
    try:
        c.connect(client_id, username=name, password=secret, expect_rc=None)
        return c.connack_rc
    finally:
        c.close()


def test_messages_per_second_slows_without_loss():
    db = _db()
    name = _instance(db)
    _ctl(db, "instance", "set", name, "max-messages-per-second", "5")
    _, secret = _token(db, name)
    with _cloud(db, "--allow-keys-without-tls") as b:
        sub = cloud_login(b.port, name, secret)
        sub.subscribe([("rate/#", 0)])
        pub = cloud_login(b.port, name, secret)
        t0 = time.monotonic()
        for i in range(15):
            pub.publish("rate/x", b"%d" % i, qos=0)
        got = _payloads(sub, 15, timeout=10)
        took = time.monotonic() - t0
        check_equal(got, [b"%d" % i for i in range(15)], "every message, in order")
        # A full bucket (5) passes at once; the other 10 come at 5 per second.
        check(took >= 1.7, "15 messages at 5/s arrived in %.2f s: not paced" % took)
        pub.ping()


def test_queued_messages_per_offline_session():
    db = _db()
    name = _instance(db)
    _ctl(db, "instance", "set", name, "max-queued-messages", "3")
    _, secret = _token(db, name)
    with _cloud(db, "--allow-keys-without-tls") as b:
        c = cloud_login(b.port, name, secret, "offline", clean=False)
        c.subscribe([("q/#", 1)])
        c.disconnect()
        pub = cloud_login(b.port, name, secret)
        for i in range(5):
            pub.publish("q/x", b"%d" % i, qos=1)
        back = cloud_login(b.port, name, secret, "offline", clean=False)
        check_equal(_payloads(back, 3), [b"2", b"3", b"4"], "the newest 3 of 5")
        back.expect_silence(0.3, "more than max-queued-messages")


def test_max_retained_per_instance():
    db = _db()
    name = _instance(db)
    _ctl(db, "instance", "set", name, "max-retained", "2")
    _, secret = _token(db, name)
    with _cloud(db, "--allow-keys-without-tls") as b:
        pub = cloud_login(b.port, name, secret)
        live = cloud_login(b.port, name, secret)
        live.subscribe([("r/#", 0)])
        mark = b.log_mark()
        for t in ("r/1", "r/2", "r/3"):
            pub.publish(t, t.encode(), qos=1, retain=True)
        check_equal(_payloads(live, 3), [b"r/1", b"r/2", b"r/3"], "live delivery of all 3")
        _check_log(b, mark, r"max-retained.*'r/3' delivered but not retained", "a 3rd topic")
        pub.publish("r/1", b"r/1 again", qos=1, retain=True)  # replacing is allowed
        late = cloud_login(b.port, name, secret)
        late.subscribe([("r/#", 0)])
        check_equal(sorted(_payloads(late, 2)), [b"r/1 again", b"r/2"], "retained")
        late.expect_silence(0.3, "a third retained message")


def test_idle_timeout():
    db = _db()
    name = _instance(db)
    _ctl(db, "instance", "set", name, "idle-timeout", "2")
    _, secret = _token(db, name)
    with _cloud(db, "--allow-keys-without-tls") as b:
        idle = cloud_login(b.port, name, secret)
        busy = cloud_login(b.port, name, secret)
        # Only receives: a connection sent messages is not idle (a dashboard, a logger).
        listener = cloud_login(b.port, name, secret)
        listener.subscribe([("x", 0)])
        mark = b.log_mark()
        t0 = time.monotonic()
        closed_after = None
        received = 0
        while time.monotonic() - t0 < 6.0:
            if closed_after is None:
                idle.try_send(PINGREQ_PACKET)  # pings keep a connection alive, not busy
                if idle.is_closed(0.05):
                    closed_after = time.monotonic() - t0
            busy.publish("x", b"x")
            time.sleep(0.25)
            received += len(_payloads(listener, 1))
        check(closed_after is not None, "an idle connection outlived idle-timeout 2 by 4 s")
        check(closed_after >= 1.5, "closed after %.1f s, before idle-timeout 2" % closed_after)
        _check_log(b, mark, r"idle.*idle-timeout", "the idle close")
        busy.ping()
        listener.ping()  # still open after three idle-timeouts of only receiving
        check(received >= 20, "the listener received %d messages in 6 s" % received)


def test_cloud_start_fails_clearly_without_database():
    r = run([aviaryd_path(), "--mode", "cloud", "--db", "/nonexistent/dir/a.db",
             "--listen", "tcp://%s:0" % HOST], timeout=5)
    err = r.stderr.decode("utf-8", "replace")
    check_equal(r.returncode, 1, "exit status (stderr %r)" % err)
    check("/nonexistent/dir/a.db" in err and "cloud mode" in err,
          "stderr does not say which database failed: %r" % err)


def test_will_topic_needs_publish_permission():
    db = _db()
    name = _instance(db)
    _, admin = _token(db, name)
    _, narrow = _token(db, name, "--pub", "sensors/#", "--deny-pub", "cmd/#")
    with _cloud(db, "--allow-keys-without-tls") as b:
        watcher = cloud_login(b.port, name, admin)
        watcher.subscribe([("cmd/#", 0)])
        mark = b.log_mark()
        d = cloud_login(b.port, name, narrow, "device", expect_rc=5,
                        will={"topic": "cmd/door/open", "payload": b"forged", "retain": True})
        d.expect_closed()
        _check_log(b, mark, r"CONNACK 5: .*may not publish the will topic 'cmd/door/open'",
                   "a will outside the token's permissions")
        watcher.expect_silence(0.5, "the refused client's will")
        ok = cloud_login(b.port, name, narrow, "device",
                         will={"topic": "sensors/gone", "payload": b"x"})
        ok.ping()


def test_resumed_session_gets_only_what_the_new_token_may_read():
    db = _db()
    name = _instance(db)
    _, full = _token(db, name)
    _, narrow = _token(db, name, "--deny-sub", "secret/#")
    with _cloud(db, "--allow-keys-without-tls") as b:
        c = cloud_login(b.port, name, full, "dev", clean=False)
        c.subscribe([("#", 1)])
        c.disconnect()
        pub = cloud_login(b.port, name, full)
        pub.publish("secret/x", b"must-not-leak", qos=1)
        pub.publish("open/x", b"fine", qos=1)
        back = cloud_login(b.port, name, narrow, "dev", clean=False)
        check_equal(_payloads(back, 1), [b"fine"], "queued messages after resuming")
        back.expect_silence(0.3, "a queued message the new token may not read")


def test_recreated_instance_starts_empty():
    db = _db()
    name = _instance(db)
    _, old = _token(db, name)
    with _cloud(db, "--allow-keys-without-tls") as b:
        c = cloud_login(b.port, name, old, "persist", clean=False)
        c.subscribe([("a/#", 1)])
        c.publish("a/r", b"old-tenant-secret", qos=1, retain=True)
        c.disconnect()
        # Both in one go, faster than the broker polls: only the serial tells them apart.
        _ctl(db, "instance", "delete", name, "--yes")
        _ctl(db, "instance", "create", name)
        _, new = _token(db, name)
        time.sleep(APPLY_WITHIN)
        fresh = RawClient(b.port)
        present = fresh.connect("persist", clean=False, username=name, password=new)
        check(not present, "the re-created instance resumed the old tenant's session")
        fresh.subscribe([("a/#", 1)])
        fresh.expect_silence(0.5, "the old tenant's retained message")


def test_deny_hash_covers_dollar_topics():
    db = _db()
    name = _instance(db)
    _, admin = _token(db, name)
    _, ro = _token(db, name, "--deny-pub", "#", "--deny-sub", "#")
    with _cloud(db, "--allow-keys-without-tls") as b:
        a = cloud_login(b.port, name, admin)
        a.subscribe([("$ctl/#", 0)])
        r = cloud_login(b.port, name, ro)
        check_equal(r.subscribe([("$ctl/#", 0), ("x/#", 0)]), [0x80, 0x80], "SUBACK codes")
        r.publish("$ctl/reboot", b"denied", qos=1)
        a.expect_silence(0.5, "a $ topic published under --deny-pub #")


if __name__ == "__main__":
    run_tests(globals())
