#!/usr/bin/python3
"""Durability: what aviaryd keeps in its database (--db) across a restart.

Retained messages (with their MQTT 5 properties and remaining expiry) and persistent
sessions (MQTT 3.1.1 clean session 0, MQTT 5 Session Expiry > 0: subscriptions with
their options and identifiers, shared subscriptions, queued and in-flight messages,
QoS 2 packet ids awaiting PUBREL, a pending delayed will) survive a SIGTERM restart,
and a kill -9 after a quiet second. Expiry intervals count the downtime. A database
that cannot be opened stops aviaryd with a clear error; one of schema version 2
(data/schema-v2.sql) is migrated; aviaryctl backup copies a busy broker's database;
cloud instances keep their state apart. Without --db, desktop mode says once that it
keeps everything in memory only.

Each test makes its own database in a temporary directory and runs its own aviaryd
processes on it, one after the other; a restart listens on a new port. Every wait is
bounded.
"""

import atexit
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    DISCONNECT_PACKET, HOST, PUBCOMP, PUBLISH, PUBREC, PUBREL, Broker, Proc, RawClient, Skip,
    TestFailure, Timeout, Closed, Publish, aviaryctl, aviaryd_path, check, check_equal,
    cloud_db, ctl, new_token, puback_packet, pubcomp_packet, publish_packet, pubrec_packet,
    pubrel_packet, raw_connect, run_tests, sanitizer_report, unique, wait_for, connect_packet,
    subscribe_packet)
from mqtt5 import (  # noqa: E402
    CONTENT_TYPE, CORRELATION_DATA, MESSAGE_EXPIRY_INTERVAL, PAYLOAD_FORMAT_INDICATOR,
    RESPONSE_TOPIC, SUBSCRIPTION_IDENTIFIER, USER_PROPERTY, sub_options, v5_connect)

# The line desktop mode logs at start without --db.
MEMORY_ONLY = "retained messages and sessions are kept in memory only; --db PATH keeps them"

# The schema version this aviaryd writes (PRAGMA user_version).
SCHEMA_VERSION = 5  # store.h STORE_SCHEMA_VERSION: 4 added allow_action, 5 admin_keys

# data/schema-v2.sql: a cloud database of schema version 2 and its tokens' secrets.
V2_FIXTURE = "schema-v2.sql"
V2_SECRETS = {
    "demo": "i2g7iaBn0RV2m-VgBmNn4JPu0a7beqVrbpVnWRZO5wY",
    "demo-filtered": "uZJmUgVqFLPZIfHA5sY4KR9TK7exbcDKgvNJPFEIznk",
    "legacy": "ZlB33V-RfOlb1h6Fnimh2V0iMF-GCWS-WzY38sHC4hs",
}

# A change reaches the database at most 50 ms after it happens, in a commit made at
# least every 100 ms: a backup started this long after a PUBACK must hold its message.
BACKUP_GRACE = 0.15

# Cloud mode applies aviaryctl's changes to a running broker within this (test_cloud.py).
APPLY_WITHIN = 2.0


# ---------------------------------------------------------------------------
# helpers

def _dir():
    d = tempfile.mkdtemp(prefix="aviary-durable-")
    atexit.register(shutil.rmtree, d, True)
    return d


def _db():
    """The path of a database that does not exist yet, in a new directory."""
    return os.path.join(_dir(), "aviary.db")


def _desktop(db, *args, **kw):
    return Broker("--db", db, *args, **kw)


def _cloud(db, *args, **kw):
    return Broker("--mode", "cloud", "--db", db, "--allow-keys-without-tls=yes", *args, **kw)


def _stop(b, what="the restart"):
    """SIGTERM the broker and wait for it; it must exit 0 (and, under ASan, cleanly)."""
    rc, took = b.terminate(10.0)
    check(rc == 0, "aviaryd exited with status %s after SIGTERM (%s), %.1f s\n%s"
          % (rc, what, took, b.log_tail()))
    check(not b.problems, "; ".join(b.problems) + "\n" + b.log_tail())


def _kill9(b):
    """SIGKILL the broker (by its PID) and reap it; the `with` block then leaves it be."""
    os.kill(b.pid, signal.SIGKILL)
    b.proc.wait(5)
    b._finish()


def _bye(c):
    """MQTT 3.1.1 DISCONNECT, then wait for the broker's close: it has processed the
    DISCONNECT before anything another connection sends from now on."""
    c.send(DISCONNECT_PACKET)
    c.expect_closed(5, "the close after DISCONNECT")
    c.close()


def _sleep_until(t):
    left = t - time.monotonic()
    if left > 0:
        time.sleep(left)


def _poll_publish(c, timeout):
    """The next PUBLISH on `c` (answered), or None when none comes within `timeout` s."""
    try:
        return c.receive(timeout)
    except TestFailure as e:
        if str(e).startswith("no PUBLISH within"):
            return None
        raise


def _gather(c, count, limit):
    """Payloads of up to `count` PUBLISH packets on `c` (answered), within `limit` s."""
    got = []
    deadline = time.monotonic() + limit
    while len(got) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        p = _poll_publish(c, left)
        if p is None:
            break
        got.append(p.payload)
    return got


def _read_qos0(c, quiet=1.0, limit=10.0, max_count=10000):
    """QoS 0 PUBLISH packets on raw client `c` until nothing comes for `quiet` s."""
    got = []
    deadline = time.monotonic() + limit
    while len(got) < max_count and time.monotonic() < deadline:
        try:
            pkt = c.read_packet(quiet)
        except Timeout:
            break
        except Closed as e:
            raise TestFailure("connection closed while reading retained messages: %s" % e)
        if pkt.type == PUBLISH:
            got.append(Publish(pkt))
    return got


def _user_version(db):
    import sqlite3
    conn = sqlite3.connect(db, timeout=5)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def _login(port, instance, secret, client_id, clean=True, expect_rc=0):
    """A RawClient logged in to `instance` of a cloud broker; returns (client, session
    present)."""
    c = RawClient(port)
    try:
        sp = c.connect(client_id, clean, username=instance, password=secret,
                       expect_rc=expect_rc)
    except BaseException:
        c.close()
        raise
    return c, sp


def _refused(port, instance, secret):
    """True when the broker refuses a login to `instance` (CONNACK 4 or 5)."""
    c = RawClient(port)
    try:
        c.connect(unique("probe"), username=instance, password=secret, expect_rc=None)
        return c.connack_rc in (4, 5)
    finally:
        c.close()


# ---------------------------------------------------------------------------
# retained messages

def test_retained_messages_survive_a_restart_with_their_properties():
    db = _db()
    props = [(PAYLOAD_FORMAT_INDICATOR, 1), (MESSAGE_EXPIRY_INTERVAL, 600),
             (CONTENT_TYPE, "text/plain"), (RESPONSE_TOPIC, "r/reply"),
             (CORRELATION_DATA, b"\x00\x01corr"),
             (USER_PROPERTY, ("k", "v1")), (USER_PROPERTY, ("k", "v2")),
             (USER_PROPERTY, ("other", "x"))]
    with _desktop(db) as b:
        pub = v5_connect(b.port, unique("rpub-"))
        pub.publish("r/zero", b"qos0", 0, retain=True)
        pub.publish("r/props", "h\u00e9llo".encode(), 1, retain=True, props=props)
        pub.publish("r/two/deep", b"qos2", 2, retain=True)
        pub.publish("r/over", b"old", 1, retain=True)
        pub.publish("r/over", b"new", 1, retain=True)
        pub.publish("r/cleared", b"soon gone", 1, retain=True)
        pub.publish("r/cleared", b"", 1, retain=True)
        pub.publish("r/cleared0", b"soon gone", 1, retain=True)
        pub.publish("r/cleared0", b"", 0, retain=True)
        v3, _ = raw_connect(b.port, unique("rpub3"))
        v3.publish("r/v3", b"from 3.1.1", qos=1, retain=True)
        pub.ping()  # the QoS 0 messages before it have been handled
        v3.ping()
        _stop(b)  # at once: what SIGTERM finds unwritten is written before the exit
    expected = {"r/zero": (b"qos0", 0), "r/props": ("h\u00e9llo".encode(), 1),
                "r/two/deep": (b"qos2", 2), "r/over": (b"new", 1), "r/v3": (b"from 3.1.1", 1)}
    for round_ in (1, 2):
        with _desktop(db) as b:
            s = v5_connect(b.port, unique("rsub-"))
            ack = s.subscribe(("r/#", 2))
            check_equal(ack.codes, [2], "SUBACK")
            got = {}
            for _ in range(len(expected)):
                p = s.receive(what="the retained messages after restart %d" % round_)
                check(p.retain, "retained message %r after restart %d without the RETAIN flag"
                      % (p, round_))
                check(p.resolved not in got, "retained message for %r twice: %r"
                      % (p.resolved, p))
                got[p.resolved] = p
            s.expect_silence(0.7, "(more retained messages than kept; a cleared one back?)")
            check_equal({t: (p.payload, p.qos) for t, p in got.items()}, expected,
                        "retained topics -> (payload, QoS) after restart %d" % round_)
            pp = got["r/props"].props
            check_equal(pp.get(PAYLOAD_FORMAT_INDICATOR), 1, "Payload Format Indicator")
            check_equal(pp.get(CONTENT_TYPE), "text/plain", "Content Type")
            check_equal(pp.get(RESPONSE_TOPIC), "r/reply", "Response Topic")
            check_equal(pp.get(CORRELATION_DATA), b"\x00\x01corr", "Correlation Data")
            check_equal(pp.user, [("k", "v1"), ("k", "v2"), ("other", "x")],
                        "User Properties, in order")
            mei = pp.get(MESSAGE_EXPIRY_INTERVAL)
            check(mei is not None and 570 <= mei <= 600,
                  "Message Expiry Interval after restart %d: %r, expected a little under 600"
                  % (round_, mei))
            for t in ("r/zero", "r/two/deep", "r/over", "r/v3"):
                check(not got[t].props.has(MESSAGE_EXPIRY_INTERVAL),
                      "%r got a Message Expiry Interval it was published without: %r"
                      % (t, got[t]))
            _stop(b, "restart %d" % round_)


# ---------------------------------------------------------------------------
# persistent sessions

def test_mqtt311_session_queue_survives_a_restart_in_order():
    db = _db()
    cid = unique("q311-")
    with _desktop(db) as b:
        s, sp = raw_connect(b.port, cid, clean=False)
        check_equal(sp, False, "session present on the first connect")
        check_equal(s.subscribe([("ps1/#", 1), ("ps2/#", 2)]), [1, 2], "SUBACK")
        _bye(s)
        pub, _ = raw_connect(b.port, unique("pub"))
        for i in range(20):
            pub.publish("ps1/t", b"q1-%d" % i, qos=1)
            pub.publish("ps2/t", b"q2-%d" % i, qos=2)
        _stop(b)
    with _desktop(db) as b:
        s, sp = raw_connect(b.port, cid, clean=False)
        check_equal(sp, True, "CONNACK session present after the restart")
        got = s.receive_all(40, what="queued message")
        want = []
        for i in range(20):
            want += [("ps1/t", b"q1-%d" % i, 1), ("ps2/t", b"q2-%d" % i, 2)]
        check_equal([(p.topic, p.payload, p.qos) for p in got], want,
                    "queued messages (topic, payload, QoS) in order")
        check(not any(p.dup for p in got), "DUP set on a message never sent before: %r"
              % [p for p in got if p.dup])
        s.expect_silence(1.0, "(a queued message came twice)")
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("ps2/live", b"live", qos=1)
        p = s.receive(what="a live message through the kept subscription")
        check_equal((p.topic, p.payload, p.qos), ("ps2/live", b"live", 1), "live message")


def test_inflight_qos1_is_resent_with_dup_and_the_same_packet_id():
    db = _db()
    cid = unique("infl-")
    with _desktop(db) as b:
        s, _ = raw_connect(b.port, cid, clean=False)
        s.subscribe([("inf/t", 1)])
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("inf/t", b"held", qos=1)
        first = s.receive(ack=False, what="the PUBLISH left unacknowledged")
        check_equal(first.dup, False, "DUP on the first delivery")
        _stop(b)  # the subscriber is still connected, its PUBACK never sent
        s.close()
    with _desktop(db) as b:
        s, sp = raw_connect(b.port, cid, clean=False)
        check_equal(sp, True, "CONNACK session present after the restart")
        p = s.receive(ack=False, what="the unacknowledged message re-sent after the restart")
        check_equal((p.topic, p.payload, p.qos, p.dup, p.pid),
                    ("inf/t", b"held", 1, True, first.pid),
                    "re-sent PUBLISH (topic, payload, QoS, DUP, packet id)")
        s.send(puback_packet(p.pid))
        s.expect_silence(0.7, "after PUBACK of the re-sent message")
        _bye(s)
        _stop(b)
    with _desktop(db) as b:
        s, sp = raw_connect(b.port, cid, clean=False)
        check_equal(sp, True, "CONNACK session present after the second restart")
        s.expect_silence(1.0, "(a message acknowledged before the restart was sent again)")


def test_qos2_packet_id_awaiting_pubrel_survives_a_restart():
    """PUBREC sent, PUBREL not yet received: after the restart the PUBREL gets PUBCOMP,
    a re-sent PUBLISH (DUP) of the same packet id is not a new message, and every
    subscriber gets the message exactly once across the restart."""
    db = _db()
    pub_id, live_id, off_id = unique("q2p-"), unique("q2live-"), unique("q2off-")
    with _desktop(db) as b:
        live, _ = raw_connect(b.port, live_id, clean=False)
        live.subscribe([("q2in/#", 2)])
        off, _ = raw_connect(b.port, off_id, clean=False)
        off.subscribe([("q2in/#", 2)])
        _bye(off)
        pub, _ = raw_connect(b.port, pub_id, clean=False)
        pub.send(publish_packet("q2in/a", b"seven", qos=2, pid=7))
        pub.expect(PUBREC, pid=7, what="PUBLISH packet id 7")
        pub.send(publish_packet("q2in/b", b"eight", qos=2, pid=8))
        pub.expect(PUBREC, pid=8, what="PUBLISH packet id 8")
        # aviary delivers a QoS 2 message at PUBLISH time; delivery at PUBREL would do too:
        # what counts is once across the restart.
        live_got = _gather(live, 2, 1.5)
        _stop(b)  # the publisher is still connected, without PUBREL for 7 and 8
        for c in (pub, live):
            c.close()
    with _desktop(db) as b:
        pub, sp = raw_connect(b.port, pub_id, clean=False)
        check_equal(sp, True, "publisher's CONNACK session present after the restart")
        pub.send(pubrel_packet(7))
        comp = pub.expect(PUBCOMP, pid=7, what="the PUBREL for packet id 7 after the restart")
        check_equal(comp.flags, 0, "PUBCOMP flags")
        # Packet id 8 as if its PUBREC had been lost: the PUBLISH again, with DUP.
        pub.send(publish_packet("q2in/b", b"eight", qos=2, dup=True, pid=8))
        pub.expect(PUBREC, pid=8, what="the re-sent PUBLISH with packet id 8")
        pub.send(pubrel_packet(8))
        pub.expect(PUBCOMP, pid=8, what="PUBREL 8")
        pub.expect_silence(0.3, "after PUBCOMP 8")
        live, sp = raw_connect(b.port, live_id, clean=False)
        check_equal(sp, True, "connected subscriber's session present")
        live_got += _gather(live, 2 - len(live_got), 3.0)
        live.expect_silence(1.0, "(the connected subscriber got a message again; before the "
                            "restart it had %r)" % live_got)
        check_equal(sorted(live_got), [b"eight", b"seven"],
                    "the connected subscriber's messages, before and after the restart")
        off, sp = raw_connect(b.port, off_id, clean=False)
        check_equal(sp, True, "offline subscriber's session present")
        got = _gather(off, 2, 3.0)
        off.expect_silence(1.0, "(a QoS 2 message delivered twice to the offline subscriber)")
        check_equal(sorted(got), [b"eight", b"seven"], "the offline subscriber's messages")
        # A new message may now use packet id 7 again.
        pub.publish("q2in/c", b"again", qos=2, pid=7)
        for c in (live, off):
            p = c.receive(what="a new message with the freed packet id 7")
            check_equal(p.payload, b"again", "payload of the new message")


def test_outgoing_qos2_past_pubrec_resends_pubrel_after_a_restart():
    db = _db()
    cid = unique("rel-")
    with _desktop(db) as b:
        s, _ = raw_connect(b.port, cid, clean=False)
        s.subscribe([("q2out/t", 2)])
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("q2out/t", b"half", qos=2)
        first = s.receive(ack=False)
        check_equal(first.qos, 2, "QoS of the delivery")
        s.send(pubrec_packet(first.pid))
        rel = s.expect(PUBREL, pid=first.pid, what="PUBREL after our PUBREC")
        check_equal(rel.flags, 2, "PUBREL flags")
        _stop(b)  # no PUBCOMP
        s.close()
    with _desktop(db) as b:
        s, sp = raw_connect(b.port, cid, clean=False)
        check_equal(sp, True, "CONNACK session present after the restart")
        pkt = s.read_packet(5)
        check(pkt.type == PUBREL and pkt.pid() == first.pid,
              "expected PUBREL for packet id %d after the restart, got %r%s"
              % (first.pid, pkt, " = %r" % Publish(pkt) if pkt.type == PUBLISH else ""))
        check_equal(pkt.flags, 2, "PUBREL flags")
        s.send(pubcomp_packet(first.pid))
        s.expect_silence(1.0, "(the message was delivered again after PUBREC)")
        _bye(s)
        _stop(b)
    with _desktop(db) as b:
        s, sp = raw_connect(b.port, cid, clean=False)
        check_equal(sp, True, "CONNACK session present after the second restart")
        s.expect_silence(1.0, "(PUBREL or the message again after PUBCOMP)")


def test_subscription_options_and_identifiers_survive_a_restart():
    db = _db()
    cid = unique("opts-")
    with _desktop(db) as b:
        s = v5_connect(b.port, cid, session_expiry=300)
        check_equal(s.subscribe(("so/id/#", sub_options(1)), sub_id=42).codes, [1], "SUBACK")
        check_equal(s.subscribe(("so/nl/#", sub_options(1, no_local=True))).codes, [1],
                    "SUBACK (No Local)")
        check_equal(s.subscribe(("so/rap/#", sub_options(1, retain_as_published=True)),
                                sub_id=7).codes, [1], "SUBACK (Retain As Published)")
        check_equal(s.subscribe(("so/plain/#", sub_options(0))).codes, [0], "SUBACK (QoS 0)")
        s.disconnect_and_wait()
        _stop(b)
    with _desktop(db) as b:
        s = v5_connect(b.port, cid, clean_start=False, session_expiry=300)
        check_equal(s.connack.session_present, True, "Session Present after the restart")
        pub = v5_connect(b.port, unique("pub-"))
        pub.publish("so/id/x", b"a", 1)
        p = s.receive(what="a message through the subscription with identifier 42")
        check_equal((p.resolved, p.payload, p.qos), ("so/id/x", b"a", 1), "message")
        check_equal(p.props.all(SUBSCRIPTION_IDENTIFIER), [42], "Subscription Identifiers")
        s.publish("so/nl/x", b"mine", 1)
        pub.publish("so/nl/x", b"theirs", 1)
        p = s.receive(what="another client's message through the No Local subscription")
        check_equal(p.payload, b"theirs", "first message through the No Local subscription "
                    "(its own message came back?)")
        check(not p.props.has(SUBSCRIPTION_IDENTIFIER), "a Subscription Identifier on a "
              "subscription made without one: %r" % p)
        pub.publish("so/rap/x", b"rap", 1, retain=True)
        p = s.receive(what="a retained publish through Retain As Published")
        check_equal((p.payload, p.retain), (b"rap", True), "(payload, RETAIN) with Retain As "
                    "Published")
        check_equal(p.props.all(SUBSCRIPTION_IDENTIFIER), [7], "Subscription Identifiers")
        pub.publish("so/plain/x", b"plain", 1, retain=True)
        p = s.receive(what="a retained publish through the plain QoS 0 subscription")
        check_equal((p.payload, p.retain, p.qos), (b"plain", False, 0),
                    "(payload, RETAIN, QoS) without Retain As Published, granted QoS 0")
        s.expect_silence(0.5, "after the four messages")


def test_shared_subscription_members_survive_a_restart():
    db = _db()
    ids = [unique("shm%d-" % i) for i in range(2)]
    with _desktop(db) as b:
        for cid in ids:
            m = v5_connect(b.port, cid, session_expiry=300)
            check_equal(m.subscribe(("$share/g/sh/t", 1)).codes, [1], "shared SUBACK")
            m.disconnect_and_wait()
        pub = v5_connect(b.port, unique("pub-"))
        for i in range(10):
            pub.publish("sh/t", b"%d" % i, 1)
        _stop(b)
    with _desktop(db) as b:
        members = []
        for cid in ids:
            m = v5_connect(b.port, cid, clean_start=False, session_expiry=300)
            check_equal(m.connack.session_present, True, "member %s's Session Present" % cid)
            members.append(m)

        def collect(count, what):
            got = [[] for _ in members]
            deadline = time.monotonic() + 8.0
            while sum(len(g) for g in got) < count and time.monotonic() < deadline:
                for i, m in enumerate(members):
                    p = _poll_publish(m, 0.1)
                    if p is not None:
                        got[i].append(int(p.payload))
            for m in members:
                m.expect_silence(0.5, "(%s: a member got more)" % what)
            return got

        got = collect(10, "queued")
        check_equal(sorted(got[0] + got[1]), list(range(10)),
                    "the 10 messages queued for the group, across both members (per member: "
                    "%r)" % (got,))
        pub = v5_connect(b.port, unique("pub-"))
        for i in range(10, 14):
            pub.publish("sh/t", b"%d" % i, 1)
        got = collect(4, "live")
        check_equal(sorted(got[0] + got[1]), list(range(10, 14)),
                    "live messages through the kept shared subscription (per member: %r)"
                    % (got,))


def test_delayed_will_is_published_after_the_restart_counting_downtime():
    db = _db()
    watcher_id = unique("wwatch-")
    with _desktop(db) as b:
        w = v5_connect(b.port, watcher_id, session_expiry=300)
        check_equal(w.subscribe(("dw/will", 1)).codes, [1], "watcher's SUBACK")
        w.disconnect_and_wait()
        early = v5_connect(b.port, unique("wearly-"))
        early.subscribe(("dw/will", 1))
        c = v5_connect(b.port, unique("wdying-"), session_expiry=300,
                       will={"topic": "dw/will", "payload": b"late", "qos": 1, "delay": 5})
        c.ping()
        t_drop = time.monotonic()
        c.abort()
        early.expect_silence(0.4, "(the will came before its 5 s delay)")
        _stop(b)
        before = early.packets_until_closed(5, "the close at shutdown")
        check(not any(p.type == PUBLISH for p in before),
              "the delayed will was published at shutdown: %r" % before)
    # Down for 2 s: the will is due 5 s after the drop, about 2.5 s after the restart;
    # not counting the downtime would put it 4.5 s or more after the restart.
    _sleep_until(t_drop + 2.5)
    with _desktop(db) as b:
        w = v5_connect(b.port, watcher_id, clean_start=False, session_expiry=300)
        check_equal(w.connack.session_present, True, "watcher's Session Present")
        p = w.receive(max(t_drop + 10.0 - time.monotonic(), 0.5),
                      what="the delayed will, within 10 s of the drop")
        dt = time.monotonic() - t_drop
        check_equal((p.resolved, p.payload), ("dw/will", b"late"), "the will")
        check(4.5 <= dt <= 6.3, "the will came %.1f s after the drop; its delay is 5 s and "
              "the broker was down from 0.4 s to about 2.5 s after the drop (the downtime "
              "counts)" % dt)
        w.expect_silence(1.0, "(the will came twice)")


def test_a_published_wills_expiry_counts_from_its_publication_across_a_restart():
    db = _db()
    watcher_id = unique("wexp-")
    with _desktop(db) as b:
        w = v5_connect(b.port, watcher_id, session_expiry=300)
        check_equal(w.subscribe(("we/#", 1)).codes, [1], "watcher's SUBACK")
        w.disconnect_and_wait()
        # A will that lives 3 s once published, and one that lives 600 s: both published
        # (after their 1 s delay) while the broker runs, and queued for the watcher.
        for topic, expiry in (("we/short", 3), ("we/long", 600)):
            c = v5_connect(b.port, unique("wexpd-"), session_expiry=300,
                           will={"topic": topic, "payload": b"w", "qos": 1, "delay": 1,
                                 "props": [(MESSAGE_EXPIRY_INTERVAL, expiry)]})
            c.ping()
            c.abort()
        time.sleep(1.6)
        _stop(b)
    time.sleep(3.0)  # the short one's 3 s have passed by the restart
    with _desktop(db) as b:
        w = v5_connect(b.port, watcher_id, clean_start=False, session_expiry=300)
        check_equal(w.connack.session_present, True, "watcher's Session Present")
        p = w.receive(5.0, what="the long-lived will")
        check_equal(p.resolved, "we/long", "the will still alive")
        w.expect_silence(1.0, "(the will whose expiry passed during the downtime)")


BIG_COUNT = 1200


def test_stop_with_unread_output_of_kept_messages_exits_cleanly():
    """Output a slow client has not read still holds kept messages when the event base
    frees it, after the broker: the keeper and the accounts must outlive it."""
    db = _db()
    body = b"x" * 10000
    with _desktop(db, "--max-outbound-bytes", "40k") as b:
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect((HOST, b.port))
        slow.sendall(connect_packet(unique("slow-")) + subscribe_packet(1, [("big/#", 0)]))
        pub, _ = raw_connect(b.port, unique("bigpub-"))
        # More than the kernel's socket buffers take: output stays queued in the broker.
        for i in range(BIG_COUNT):
            pub.publish("big/%d" % i, body, qos=1, retain=True)
        _stop(b, "the stop with unread output")
        slow.close()
    with _desktop(db, "--max-queued-messages", str(2 * BIG_COUNT)) as b:
        late, _ = raw_connect(b.port, unique("late-"))
        late.subscribe([("big/#", 1)])
        got = late.receive_all(BIG_COUNT, timeout=30.0)
        check_equal(len(got), BIG_COUNT, "retained messages kept")


def test_message_expiry_counts_the_downtime():
    db = _db()
    cid = unique("mx-")
    with _desktop(db) as b:
        s = v5_connect(b.port, cid, session_expiry=300)
        s.subscribe(("mx/t", 1))
        s.disconnect_and_wait()
        pub = v5_connect(b.port, unique("pub-"))
        pub.publish("mx/t", b"short", 1, props=[(MESSAGE_EXPIRY_INTERVAL, 3)])
        pub.publish("mx/t", b"long", 1, props=[(MESSAGE_EXPIRY_INTERVAL, 600)])
        pub.publish("mx/r1", b"gone", 1, retain=True, props=[(MESSAGE_EXPIRY_INTERVAL, 3)])
        pub.publish("mx/r2", b"stays", 1, retain=True, props=[(MESSAGE_EXPIRY_INTERVAL, 600)])
        t_pub = time.monotonic()
        _stop(b)
    _sleep_until(t_pub + 4.0)
    with _desktop(db) as b:
        s = v5_connect(b.port, cid, clean_start=False, session_expiry=300)
        check_equal(s.connack.session_present, True, "Session Present after the restart")
        p = s.receive(what="the queued message with 600 s expiry")
        check_equal(p.payload, b"long", "the only queued message left (the 3 s one expired "
                    "while the broker was down)")
        mei = p.props.get(MESSAGE_EXPIRY_INTERVAL)
        check(mei is not None and 560 <= mei <= 597, "Message Expiry Interval %r after more "
              "than 4 s (the downtime counts): expected 596 or a little less" % (mei,))
        s.expect_silence(0.7, "(an expired queued message was delivered)")
        r = v5_connect(b.port, unique("mxr-"))
        r.subscribe([("mx/r1", 1), ("mx/r2", 1)])
        p = r.receive(what="the retained message with 600 s expiry")
        check_equal((p.resolved, p.payload, p.retain), ("mx/r2", b"stays", True),
                    "the only retained message left")
        mei = p.props.get(MESSAGE_EXPIRY_INTERVAL)
        check(mei is not None and 560 <= mei <= 597, "retained Message Expiry Interval %r "
              "after more than 4 s: expected 596 or a little less" % (mei,))
        r.expect_silence(0.7, "(an expired retained message was delivered)")


def test_session_expiry_counts_the_downtime():
    db = _db()
    short_id, long_id = unique("se2-"), unique("se600-")
    with _desktop(db) as b:
        for cid, expiry in ((short_id, 2), (long_id, 600)):
            c = v5_connect(b.port, cid, session_expiry=expiry)
            c.subscribe(("se/t", 1))
            c.disconnect_and_wait()
        t_off = time.monotonic()
        _stop(b)
    _sleep_until(t_off + 3.0)
    with _desktop(db) as b:
        short = v5_connect(b.port, short_id, clean_start=False, session_expiry=2)
        check_equal(short.connack.session_present, False,
                    "Session Present for a 2 s session offline for 3 s (downtime counts)")
        keep = v5_connect(b.port, long_id, clean_start=False, session_expiry=600)
        check_equal(keep.connack.session_present, True, "Session Present for a 600 s session")
        pub = v5_connect(b.port, unique("pub-"))
        pub.publish("se/t", b"after", 1)
        check_equal(keep.receive().payload, b"after", "message through the kept session")
        short.expect_silence(0.5, "(the expired session's subscription is still there)")


def test_kill_9_after_a_quiet_second_loses_nothing_acknowledged():
    db = _db()
    cid = unique("k9-")
    with _desktop(db) as b:
        s, _ = raw_connect(b.port, cid, clean=False)
        s.subscribe([("k9/t", 1)])
        _bye(s)
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("k9/kept", b"retained", qos=1, retain=True)
        for i in range(50):
            pub.publish("k9/t", b"%d" % i, qos=1)
        time.sleep(1.0)
        _kill9(b)
    with _desktop(db) as b:
        s, sp = raw_connect(b.port, cid, clean=False)
        check_equal(sp, True, "CONNACK session present after kill -9")
        got = s.receive_all(50, what="queued message after kill -9")
        check_equal([p.payload for p in got], [b"%d" % i for i in range(50)],
                    "the 50 acknowledged messages, in order")
        s.expect_silence(0.7, "(more than the 50 messages)")
        r, _ = raw_connect(b.port, unique("k9r"))
        r.subscribe([("k9/kept", 0)])
        p = r.receive(what="the retained message after kill -9")
        check_equal((p.payload, p.retain), (b"retained", True), "retained message")


# ---------------------------------------------------------------------------
# databases that cannot be used

def _start_fails(args, path, what, program=None, prefix=()):
    """aviaryd (or `program`, run after `prefix`) with `args` must exit 1 at start, naming
    `path` on stderr, without a crash (and without listening: if it does, it is stopped)."""
    argv = list(prefix) + [program or aviaryd_path(), "--listen", "tcp://%s:0" % HOST] + list(args)
    p = Proc(argv)
    try:
        deadline = time.monotonic() + 10.0
        while (p.proc.poll() is None and time.monotonic() < deadline
               and not any("listening on" in line for line in list(p.lines))):
            time.sleep(0.05)
        listening = [line for line in list(p.lines) if "listening on" in line]
        if p.proc.poll() is None:
            p.sigkill()
            raise TestFailure("aviaryd started with %s (%s)\n  stderr: %s"
                              % (what, listening or "no exit within 10 s", p.stderr().strip()))
        rc = p.wait(5.0)
        err = p.stderr()
    finally:
        p.close()
    check(rc >= 0, "aviaryd died of signal %d with %s\n  stderr: %s" % (-rc, what, err.strip()))
    report = sanitizer_report(err) or ("AddressSanitizer" in err and "AddressSanitizer")
    check(not report, "sanitizer report with %s: %s" % (what, report))
    check_equal(rc, 1, "aviaryd's exit status with %s (stderr: %r)" % (what, err.strip()[-500:]))
    check(path in err, "aviaryd's error for %s does not name %s: %r" % (what, path, err.strip()))
    check(re.search(r"database", err, re.I), "aviaryd's error for %s does not say "
          "'database': %r" % (what, err.strip()))
    check(not listening, "aviaryd listened with %s: %r" % (what, listening))


def test_unusable_database_stops_aviaryd_with_a_clear_error():
    d = _dir()
    garbage = bytes((i * 151 + 7) % 256 for i in range(4096))
    corrupt = os.path.join(d, "corrupt.db")
    with open(corrupt, "wb") as f:
        f.write(garbage)
    nowhere = os.path.join(d, "no-such-dir", "aviary.db")
    failures = []
    for mode in ("desktop", "cloud"):
        for path, what in ((corrupt, "a file of 4096 bytes of garbage"),
                           (nowhere, "a database in a missing directory")):
            try:
                _start_fails(["--mode", mode, "--db", path], path,
                             "%s (%s mode)" % (what, mode))
            except TestFailure as e:
                failures.append(str(e))
        with open(corrupt, "rb") as f:
            if f.read() != garbage:
                failures.append("aviaryd (%s mode) changed the file that is not a database"
                                % mode)
        if os.path.exists(os.path.dirname(nowhere)):
            failures.append("aviaryd (%s mode) made the missing directory" % mode)
    check(not failures, "\n".join(failures))


def _unprivileged(d):
    """Root writes read-only files: as root, aviaryd runs as nobody (setpriv), from a copy
    in `d`, which nobody can reach (the build directory may be under /root)."""
    if os.geteuid() != 0:
        return None, ()
    setpriv = shutil.which("setpriv")
    if not setpriv:
        raise Skip("running as root without setpriv to run aviaryd as nobody")
    program = os.path.join(d, "aviaryd")
    shutil.copy(aviaryd_path(), program)
    os.chmod(program, 0o755)
    for p in (os.path.dirname(d), d):
        os.chmod(p, os.stat(p).st_mode | 0o755)
    return program, (setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--")


def test_read_only_database_stops_aviaryd_with_a_clear_error():
    d = _dir()
    db = os.path.join(d, "aviary.db")
    with _desktop(db) as b:
        pub, _ = raw_connect(b.port, unique("ro"))
        pub.publish("ro/t", b"x", qos=1, retain=True)
        _stop(b)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.unlink(db + suffix)
    program, prefix = _unprivileged(d)
    os.chmod(db, 0o444)
    os.chmod(d, 0o555)
    try:
        _start_fails(["--db", db], db, "a read-only database", program, prefix)
    finally:
        os.chmod(d, 0o755)
        os.chmod(db, 0o644)


# ---------------------------------------------------------------------------
# schema migration

def test_schema_v2_database_is_migrated():
    import sqlite3
    here = os.environ.get("TESTS_DIR") or os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "data", V2_FIXTURE)) as f:
        script = f.read()
    db = _db()
    conn = sqlite3.connect(db)
    try:
        conn.executescript(script)
        conn.commit()
    finally:
        conn.close()
    check_equal(_user_version(db), 2, "user_version of the fixture database")
    with _cloud(db) as b:
        pubs = {}
        for inst in ("demo", "legacy"):
            c, _ = _login(b.port, inst, V2_SECRETS[inst], unique("v2-"))
            c.publish("fx/kept", b"kept-" + inst.encode(), qos=1, retain=True)
            pubs[inst] = c
        f, _ = _login(b.port, "demo", V2_SECRETS["demo-filtered"], unique("v2f-"))
        check_equal(f.subscribe([("other/#", 1), ("sensors/#", 1)]), [0x80, 1],
                    "SUBACK for a token limited to sensors/# (its filters kept)")
        _stop(b)
    check_equal(_user_version(db), SCHEMA_VERSION, "user_version after aviaryd opened it")
    out = ctl(db, "instance", "list")
    check("demo" in out and "legacy" in out, "aviaryctl instance list on the migrated "
          "database: %r" % out)
    with _cloud(db) as b:
        for inst in ("demo", "legacy"):
            c, _ = _login(b.port, inst, V2_SECRETS[inst], unique("v2-"))
            c.subscribe([("fx/#", 1)])
            p = c.receive(what="instance %s's retained message after the restart" % inst)
            check_equal((p.topic, p.payload, p.retain), ("fx/kept", b"kept-" + inst.encode(),
                                                         True),
                        "instance %s's retained message" % inst)
            c.expect_silence(0.5, "(the other instance's retained message)")


# ---------------------------------------------------------------------------
# cloud mode

def _cloud_state(port, names, secrets, tag):
    """In each instance: a retained message and a persistent session "dev" (offline,
    subscribed to cl/q) with one message queued, all carrying `tag`."""
    for n in names:
        c, _ = _login(port, n, secrets[n], "dev", clean=False)
        c.subscribe([("cl/q", 1)])
        _bye(c)
        p, _ = _login(port, n, secrets[n], unique("clp"))
        p.publish("cl/kept", ("%s-%s-retained" % (n, tag)).encode(), qos=1, retain=True)
        p.publish("cl/q", ("%s-%s-queued" % (n, tag)).encode(), qos=1)
        _bye(p)


def _check_cloud_state(port, n, secret, tag):
    c, sp = _login(port, n, secret, "dev", clean=False)
    check_equal(sp, True, "instance %s: session present for 'dev'" % n)
    p = c.receive(what="instance %s's queued message" % n)
    check_equal(p.payload, ("%s-%s-queued" % (n, tag)).encode(),
                "instance %s's queued message" % n)
    c.expect_silence(0.5, "(instance %s's 'dev' got another message)" % n)
    _bye(c)
    r, _ = _login(port, n, secret, unique("clr"))
    r.subscribe([("cl/#", 1)])
    p = r.receive(what="instance %s's retained message" % n)
    check_equal((p.payload, p.retain), (("%s-%s-retained" % (n, tag)).encode(), True),
                "instance %s's retained message" % n)
    r.expect_silence(0.5, "(another instance's retained message)")
    _bye(r)


def test_cloud_instances_keep_their_own_state_and_deletion_forgets_it():
    db = cloud_db()
    a, b_name = unique("insta"), unique("instb")
    secrets = {}
    for n in (a, b_name):
        ctl(db, "instance", "create", n)
        secrets[n] = new_token(db, n)[1]
    with _cloud(db) as b:
        _cloud_state(b.port, (a, b_name), secrets, "1")
        _stop(b)
    with _cloud(db) as b:
        for n in (a, b_name):
            _check_cloud_state(b.port, n, secrets[n], "1")
        _cloud_state(b.port, (a, b_name), secrets, "2")
        ctl(db, "instance", "delete", a, "--yes")
        wait_for(lambda: _refused(b.port, a, secrets[a]), APPLY_WITHIN + 1.0, 0.2,
                 what="the running broker to refuse the deleted instance %s" % a)
        _stop(b)
    with _cloud(db) as b:
        check(_refused(b.port, a, secrets[a]), "a login to the deleted instance was accepted "
              "after the restart")
        _check_cloud_state(b.port, b_name, secrets[b_name], "2")
        _stop(b)
    ctl(db, "instance", "create", a)
    secrets[a] = new_token(db, a)[1]
    with _cloud(db) as b:
        c, sp = _login(b.port, a, secrets[a], "dev", clean=False)
        check_equal(sp, False, "session present for 'dev' in the re-created instance %s" % a)
        c.subscribe([("cl/#", 1)])
        c.expect_silence(1.0, "(the re-created instance got the deleted one's retained or "
                         "queued messages)")
        _bye(c)
        # The other instance's session was resumed (and emptied) above; it is still there.
        c, sp = _login(b.port, b_name, secrets[b_name], "dev", clean=False)
        check_equal(sp, True, "session present for 'dev' in instance %s" % b_name)
        c.expect_silence(0.5, "(instance %s's 'dev' got a message again)" % b_name)
        r, _ = _login(b.port, b_name, secrets[b_name], unique("clr"))
        r.subscribe([("cl/kept", 0)])
        p = r.receive(what="instance %s's retained message" % b_name)
        check_equal(p.payload, ("%s-2-retained" % b_name).encode(), "retained message")


# ---------------------------------------------------------------------------
# backup

class _BusyPublisher(threading.Thread):
    """Publishes retained QoS 1 messages round the topics, payload = sequence number,
    until stopped, `limit` messages or `seconds` s. acks[topic]: [(seq, time of PUBACK)]."""

    def __init__(self, port, topics, limit=30000, seconds=15.0):
        super().__init__(daemon=True)
        self.port, self.topics, self.limit, self.seconds = port, topics, limit, seconds
        self.lock = threading.Lock()
        self.acks = {t: [] for t in topics}
        self.count = 0
        self.error = None
        self.halt = threading.Event()

    def run(self):
        c = None
        try:
            c, _ = raw_connect(self.port, unique("busy"))
            deadline = time.monotonic() + self.seconds
            seq = 0
            while not self.halt.is_set() and seq < self.limit and time.monotonic() < deadline:
                topic = self.topics[seq % len(self.topics)]
                c.publish(topic, b"%d" % seq, qos=1, retain=True)
                t = time.monotonic()
                with self.lock:
                    self.acks[topic].append((seq, t))
                    self.count += 1
                seq += 1
            c.disconnect()
        except BaseException as e:  # reported by the test
            self.error = e
            if c is not None:
                c.close()

    def acked_before(self, t):
        """topic -> the last sequence number acknowledged at or before `t`."""
        with self.lock:
            out = {}
            for topic, acks in self.acks.items():
                seqs = [s for s, at in acks if at <= t]
                if seqs:
                    out[topic] = seqs[-1]
            return out


def _retained_values(port, prefix, count):
    r, _ = raw_connect(port, unique("bkr"))
    r.subscribe([(prefix + "#", 0)])
    got = _read_qos0(r, quiet=1.0, limit=15.0, max_count=count * 2)
    r.disconnect()
    values = {}
    for p in got:
        check(p.retain, "a live message on a broker nobody publishes to: %r" % p)
        check(p.topic not in values, "retained message for %r twice" % p.topic)
        values[p.topic] = int(p.payload)
    return values


def test_backup_of_a_busy_broker_is_consistent_and_restores():
    d = _dir()
    db = os.path.join(d, "aviary.db")
    backup = os.path.join(d, "backup.db")
    topics = ["bk/%d" % i for i in range(50)]
    with _desktop(db) as b:
        busy = _BusyPublisher(b.port, topics)
        t_start = time.monotonic()
        busy.start()
        try:
            wait_for(lambda: (busy.count >= 500 and time.monotonic() - t_start >= 0.7)
                     or busy.error or not busy.is_alive(), 10.0,
                     what="the publisher to have 500 messages acknowledged")
            check(busy.error is None, "publisher failed: %s" % busy.error)
            t_backup = time.monotonic()
            rc, out, err = aviaryctl(db, "backup", backup, timeout=30.0)
            t_done = time.monotonic()
            check(busy.is_alive() and busy.error is None,
                  "the publisher stopped during the backup: %s" % busy.error)
        finally:
            busy.halt.set()
            busy.join(10)
        check(not busy.is_alive(), "the publisher thread did not stop")
        check(busy.error is None, "publisher failed: %s" % busy.error)
        check_equal(rc, 0, "aviaryctl backup's exit status (stderr %r)" % err.strip())
        check(os.path.isfile(backup), "aviaryctl backup made no %s" % backup)
        must = busy.acked_before(t_backup - BACKUP_GRACE)
        last = busy.acked_before(time.monotonic())
        check(len(must) == len(topics), "only %d topics published to before the backup"
              % len(must))
        _stop(b, "after the backup")
    for suffix in ("-wal", "-shm"):
        check(not os.path.exists(backup + suffix), "the backup left %s%s behind"
              % (backup, suffix))
    copy = os.path.join(_dir(), "aviary.db")
    shutil.copyfile(backup, copy)
    with _desktop(copy) as b:
        values = _retained_values(b.port, "bk/", len(topics))
    check_equal(sorted(values), sorted(topics), "topics with a retained message in the backup")
    stale = {t: (values[t], must[t]) for t in topics if values[t] < must[t]}
    check(not stale, "the backup (made in %.2f s) lacks messages acknowledged %.2f s or more "
          "before it started: topic -> (value in the backup, last acknowledged): %r"
          % (t_done - t_backup, BACKUP_GRACE, stale))
    # How long before the backup started the oldest acknowledged message it lacks was
    # acknowledged (the writer's lag): below BACKUP_GRACE, or the check above failed.
    lags = [t_backup - at for t in topics for seq, at in busy.acks[t]
            if values[t] < seq and at <= t_backup]
    if lags:
        print("# note: the backup lacks %d message(s) acknowledged before it started, at "
              "most %.0f ms before" % (len(lags), 1000 * max(lags)), flush=True)
    for t in topics:
        check(values[t] % len(topics) == topics.index(t) and values[t] <= last[t],
              "the backup's value %d for %r was never acknowledged on that topic (last %d)"
              % (values[t], t, last[t]))
    # The restore: broker stopped (above), the backup copied over the database, its
    # -wal and -shm removed, the broker started.
    shutil.copyfile(backup, db)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.unlink(db + suffix)
    with _desktop(db) as b:
        restored = _retained_values(b.port, "bk/", len(topics))
    check_equal(restored, values, "retained messages after restoring the backup")


# ---------------------------------------------------------------------------
# desktop mode without --db

def test_desktop_without_db_says_once_that_it_keeps_nothing():
    with Broker() as b:
        b.wait_log(re.escape(MEMORY_ONLY), timeout=3.0)
        s, _ = raw_connect(b.port, unique("mem"), clean=False)
        s.subscribe([("mem/t", 1)])
        _bye(s)
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("mem/t", b"x", qos=1, retain=True)
        pub.publish("mem/t", b"", qos=1, retain=True)
        pub.ping()
        check_equal(b.log_text().count(MEMORY_ONLY), 1,
                    "times the log says '%s'" % MEMORY_ONLY)
    with _desktop(_db()) as b:
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("mem/t", b"x", qos=1, retain=True)
        pub.ping()
        check(MEMORY_ONLY not in b.log_text(), "with --db the log says '%s'" % MEMORY_ONLY)


if __name__ == "__main__":
    run_tests(globals())
