#!/usr/bin/python3
"""System topics (SPEC 8): $events, $info and $action of each instance.

$events carries one JSON event per message (connected, disconnected, subscribed,
unsubscribed, published, refused, dropped), capped at 100 a second per instance;
$info is a summary sent at once (RETAIN 1) and every 5 s; $action closes a client for a
token with the action permission (aviaryctl token create --allow-action). Tokens decide
who may read them, "#" never matches them, and only the broker publishes to them.

Each test runs its own aviaryd (cloud mode with a database made by aviaryctl, or
desktop mode) on 127.0.0.1. All of it is aviary-specific.
"""

import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    PINGREQ_PACKET, PINGRESP, Broker, check, check_equal, cloud_db, cloud_login, ctl,
    new_token, publish_packet, raw_connect, run_tests, unique)
from mqtt5 import DISCONNECT, cloud_login5, publish5, v5_connect  # noqa: E402

EVENTS, INFO, ACTION = "$events", "$info", "$action"
EVENTS_PER_SECOND = 100   # SYSTOPIC_EVENTS_PER_SECOND: the cap and its burst
INFO_INTERVAL = 5.0       # SYSTOPIC_INFO_INTERVAL_SEC
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

NOT_AUTHORIZED, NO_MATCHING_SUBSCRIBERS, PAYLOAD_FORMAT_INVALID = 0x87, 0x10, 0x99
ADMINISTRATIVE_ACTION = 0x98


def _instance(db, *args):
    name = unique("inst")
    ctl(db, "instance", "create", name, *args)
    return name


def _cloud(db):
    return Broker("--mode", "cloud", "--db", db, "--allow-keys-without-tls")


def _event(pub):
    check_equal(pub.topic, EVENTS, "topic of an event")
    try:
        ev = json.loads(pub.payload.decode("utf-8"))
    except ValueError as e:
        raise AssertionError("an event that is not JSON (%s): %r" % (e, pub.payload))
    check(isinstance(ev.get("type"), str), "an event without a type: %r" % ev)
    check(TIME_RE.match(ev.get("time", "")), "an event without an ISO 8601 time: %r" % ev)
    return ev


def _events_until(sub, done, timeout=5.0, what="events"):
    """Events from `sub` (subscribed to $events) until done(events) is true."""
    got = []
    deadline = time.monotonic() + timeout
    while not done(got):
        left = deadline - time.monotonic()
        check(left > 0, "timed out waiting for %s; got %r" % (what, got))
        try:
            got.append(_event(sub.receive(left, what=what)))
        except AssertionError as e:
            raise AssertionError("%s; events so far: %r" % (e, got))
    return got


def _find(events, **want):
    """The first event whose members have the values in `want`, or None."""
    for ev in events:
        if all(ev.get(k) == v for k, v in want.items()):
            return ev
    return None


def _has(**want):
    return lambda events: _find(events, **want) is not None


def _watch(port, instance=None, secret=None, filters=(EVENTS,)):
    """An MQTT 5 client subscribed to `filters` (granted, QoS 0)."""
    if instance is None:
        c = v5_connect(port, unique("watch"))
    else:
        c = cloud_login5(port, instance, secret, unique("watch"))
    ack = c.subscribe([(f, 0) for f in filters])
    check_equal(ack.codes, [0] * len(filters), "SUBACK for %r" % (filters,))
    return c


# ---------------------------------------------------------------------------
# $events

def test_events_tell_what_happens_in_the_instance():
    """A scripted client: connect, subscribe, publish, a refused publish and subscribe,
    unsubscribe, a connection over max-connections, disconnect; one event each."""
    db = cloud_db()
    ctl(db, "plan", "set", "three", "max-connections", "3")
    name = _instance(db, "--plan", "three")
    _, key = new_token(db, name)
    _, narrow = new_token(db, name, "--pub", "sensors/#", "--sub", "sensors/#")
    with _cloud(db) as b:
        w = _watch(b.port, name, key)
        dev = cloud_login(b.port, name, narrow, "dev-1")
        ev = _events_until(w, _has(type="connected", client_id="dev-1"))[-1]
        check_equal(ev["transport"], "tcp", "connected: transport")
        check_equal(ev["protocol"], "3.1.1", "connected: protocol")
        check(re.match(r"^127\.0\.0\.1:\d+$", ev.get("peer", "")), "connected: peer %r" % ev)

        check_equal(dev.subscribe([("sensors/#", 1)]), [1], "SUBACK for sensors/#")
        ev = _events_until(w, _has(type="subscribed", client_id="dev-1"))[-1]
        check_equal((ev["filter"], ev["qos"]), ("sensors/#", 1), "subscribed: filter and QoS")

        dev.publish("sensors/t", b"21.5", qos=1, retain=True)
        dev.receive()  # its own subscription
        ev = _events_until(w, _has(type="published", client_id="dev-1"))[-1]
        check_equal((ev["topic"], ev["size"], ev["qos"], ev["retain"]),
                    ("sensors/t", 4, 1, True), "published: topic, size, QoS, retain")

        dev.publish("cmd/door", b"open", qos=1)  # MQTT 3.1.1 acknowledges, delivers nothing
        ev = _events_until(w, _has(type="refused", client_id="dev-1"))[-1]
        check_equal((ev["request"], ev["rule"], ev["topic"]), ("publish", "token", "cmd/door"),
                    "refused publish: request, rule, topic")

        check_equal(dev.subscribe([("cmd/#", 0)]), [0x80], "SUBACK for cmd/#")
        ev = _events_until(w, _has(type="refused", request="subscribe"))[-1]
        check_equal((ev["rule"], ev["topic"]), ("token", "cmd/#"), "refused subscribe")

        dev.unsubscribe("sensors/#")
        ev = _events_until(w, _has(type="unsubscribed", client_id="dev-1"))[-1]
        check_equal(ev["filter"], "sensors/#", "unsubscribed: filter")

        other = cloud_login(b.port, name, key, "dev-2")  # the third connection
        c = cloud_login(b.port, name, key, "dev-3", expect_rc=3)
        c.close()
        ev = _events_until(w, _has(type="refused", request="connect"))[-1]
        check_equal((ev["client_id"], ev["rule"]), ("dev-3", "max-connections"),
                    "refused connect: client id and rule")
        check("max-connections 3" in ev["reason"], "refused connect: reason %r" % ev)

        dev.disconnect()
        ev = _events_until(w, _has(type="disconnected", client_id="dev-1"))[-1]
        check("DISCONNECT" in ev["reason"], "disconnected: reason %r" % ev)
        other.ping()
        # Publishing events is no published event: nothing more comes.
        w.expect_silence(0.5, "after the script")


def test_events_stay_in_their_instance():
    db = cloud_db()
    names = [_instance(db), _instance(db)]
    keys = [new_token(db, n)[1] for n in names]
    with _cloud(db) as b:
        watchers = [_watch(b.port, n, k) for n, k in zip(names, keys)]
        for w in watchers:  # each its own "subscribed"
            _events_until(w, _has(type="subscribed"))
        c = cloud_login(b.port, names[1], keys[1], "only-in-b")
        c.publish("x/y", b"1", qos=1)
        got = _events_until(watchers[1], _has(type="published", client_id="only-in-b"))
        check(_find(got, type="connected", client_id="only-in-b"), "B's connected: %r" % got)
        watchers[0].expect_silence(1.0, "in instance A while B's client works")


def test_a_token_without_permission_sees_no_events():
    db = cloud_db()
    name = _instance(db)
    _, key = new_token(db, name)
    _, sensors = new_token(db, name, "--sub", "sensors/#")
    _, hash_only = new_token(db, name, "--sub", "#")
    _, denied = new_token(db, name, "--deny-sub", "$events")
    with _cloud(db) as b:
        w = _watch(b.port, name, key)
        _events_until(w, _has(type="subscribed"))
        for secret, what in ((sensors, "sub sensors/#"), (hash_only, "sub #"),
                             (denied, "deny-sub $events")):
            c = cloud_login(b.port, name, secret)
            check_equal(c.subscribe([(EVENTS, 0)]), [0x80],
                        "SUBACK for $events with a token of %s" % what)
            if secret != denied:
                check_equal(c.subscribe([(INFO, 0)]), [0x80],
                            "SUBACK for $info with a token of %s" % what)
            c5 = cloud_login5(b.port, name, secret)
            codes = c5.subscribe([(EVENTS, 0)]).codes
            check(codes[0] >= 0x80, "MQTT 5 SUBACK for $events with %s: %r" % (what, codes))
            c.publish("sensors/a", b"x", qos=1)
            c.expect_silence(0.3, "with a token of %s" % what)
        # The watcher saw it all happen: their refusals are events too.
        got = _events_until(w, _has(type="refused", request="subscribe", topic=INFO))
        check(_find(got, rule="token", topic=EVENTS), "refusals of $events: %r" % got)


def test_hash_receives_no_system_topic():
    """A filter starting with # or + never matches $events or $info (MQTT-4.7.2-1)."""
    with Broker() as b:
        all_c, _ = raw_connect(b.port, unique("all"))
        check_equal(all_c.subscribe([("#", 0), ("+", 0), ("+/#", 0)]), [0, 0, 0], "SUBACK")
        w = _watch(b.port, filters=(EVENTS, INFO))
        info = w.receive(what="$info at once")
        check_equal(info.topic, INFO, "first message to the watcher")
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("a/b", b"hello", qos=1)
        got = all_c.receive(what="a/b on #")
        check_equal((got.topic, got.payload), ("a/b", b"hello"), "what # receives")
        _events_until(w, _has(type="published", topic="a/b"))
        all_c.expect_silence(0.5, "on #, +, +/# (system topics)")


def test_events_are_capped_and_drops_are_counted():
    """A flood of 1000 PUBLISHes: at most the burst plus 100 a second become events, and
    a "dropped" event counts the rest."""
    with Broker() as b:
        w = _watch(b.port)
        _events_until(w, _has(type="subscribed"))
        pub, _ = raw_connect(b.port, unique("flood"))
        n = 1000
        started = time.monotonic()
        pub.send(b"".join(publish_packet("flood/%d" % (i % 10), b"x") for i in range(n)))
        pub.send(PINGREQ_PACKET)
        pub.expect(PINGRESP, 10.0, what="PINGRESP after the flood")
        events = []
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            try:
                p = w.receive(max(deadline - time.monotonic(), 0.01))
            except AssertionError as e:
                if not re.search(r"timed out|no PUBLISH within", str(e)):
                    raise
                break  # nothing more within the time left
            events.append(_event(p))
        elapsed = time.monotonic() - started
        published = [e for e in events if e["type"] == "published"]
        dropped = [e for e in events if e["type"] == "dropped"]
        bound = EVENTS_PER_SECOND + EVENTS_PER_SECOND * elapsed + 5
        check(len(events) <= bound, "%d events in %.1f s, more than the cap allows (%d)"
              % (len(events), elapsed, bound))
        check(len(published) < n, "every one of %d PUBLISHes became an event" % n)
        check(dropped, "no dropped event after %d events over the cap; got %d events"
              % (n - len(published), len(events)))
        counted = sum(e["count"] for e in dropped)
        check(len(published) + counted >= n, "%d published events and %d dropped do not "
              "account for %d PUBLISHes" % (len(published), counted, n))
        pub.ping()


# ---------------------------------------------------------------------------
# $info

def test_info_summarises_the_instance():
    db = cloud_db()
    ctl(db, "plan", "set", "small", "max-connections", "5")
    ctl(db, "plan", "set", "small", "max-retained", "10")
    ctl(db, "plan", "set", "small", "max-sessions", "3")
    name = _instance(db, "--plan", "small")
    _, key = new_token(db, name)
    with _cloud(db) as b:
        setup = cloud_login(b.port, name, key, "setup")
        setup.publish("kept/a", b"abc", qos=1, retain=True)
        setup.publish("kept/b", b"hello", qos=1, retain=True)
        durable = cloud_login(b.port, name, key, "durable", clean=False)
        check_equal(durable.subscribe([("kept/#", 1), ("other", 0)]), [1, 0], "SUBACK")
        durable.receive_all(2)
        everything = cloud_login(b.port, name, key, "everything")
        check_equal(everything.subscribe([("#", 0)]), [0], "SUBACK for #")
        w = cloud_login5(b.port, name, key, "watcher")
        w.subscribe([(INFO, 0)])
        first = w.receive(what="$info at once")
        check_equal((first.resolved, first.retain), (INFO, True), "$info at once: topic, RETAIN")
        info = json.loads(first.payload)
        check_equal(info["type"], "info", "type")
        check_equal(info["instance"], name, "instance")
        check_equal(info["connections"], 4, "connections")
        check_equal(info["sessions"], {"total": 4, "persistent": 1}, "sessions")
        check_equal(info["subscriptions"], 4, "subscriptions (kept/#, other, #, $info)")
        check_equal(info["retained"], {"messages": 2, "bytes": 8}, "retained")
        limits = info["limits"]
        check_equal(limits["max-connections"], {"limit": 5, "used": 4}, "max-connections")
        check_equal(limits["max-retained"], {"limit": 10, "used": 2}, "max-retained")
        check_equal(limits["max-sessions"], {"limit": 3, "used": 1}, "max-sessions")
        check_equal(limits["max-subscriptions"]["used"], 2, "max-subscriptions used")
        check_equal(limits["max-payload"], {"limit": 65536}, "max-payload")
        check_equal(info["rates"]["interval"], 5, "rates: interval")
        # Traffic shows in the rates of a later summary, sent without RETAIN.
        for i in range(20):
            setup.publish("load/%d" % i, b"0123456789", qos=1)
        seen = []
        for _ in range(2):  # the load may straddle the end of an interval
            later = w.receive(INFO_INTERVAL + 2, what="a periodic $info")
            check_equal((later.resolved, later.retain), (INFO, False), "periodic $info")
            seen.append(json.loads(later.payload)["rates"])
            if seen[-1]["messages_in"] > 0:
                break
        rates = seen[-1]
        check(rates["messages_in"] > 0 and rates["bytes_in"] > 0 and rates["messages_out"] > 0,
              "rates after 20 PUBLISHes: %r" % seen)
        got = everything.receive_all(22)  # the 2 retained messages and the load
        check(all(not m.topic.startswith("$") for m in got), "# received %r" % got)
        everything.expect_silence(0.3, "on # (it must not receive $info)")


# ---------------------------------------------------------------------------
# $action

def test_action_closes_a_client_with_the_permission_only():
    db = cloud_db()
    name = _instance(db)
    _, key = new_token(db, name)
    _, actor = new_token(db, name, "--allow-action")
    _, no_pub = new_token(db, name, "--allow-action", "--deny-pub", "$action")
    out = ctl(db, "--json", "token", "list", name)
    check_equal(sorted(t["allow_action"] for t in json.loads(out)), [False, True, True],
                "allow_action in token list --json")
    with _cloud(db) as b:
        w = _watch(b.port, name, key)
        victim5 = cloud_login5(b.port, name, key, "victim-5")
        victim3 = cloud_login(b.port, name, key, "victim-3")
        close = json.dumps({"type": "close", "client_id": "victim-5"}).encode()
        for secret, what in ((key, "without --allow-action"), (no_pub, "--deny-pub $action")):
            c = cloud_login5(b.port, name, secret)
            ack = c.publish(ACTION, close, qos=1)
            check_equal(ack.reason, NOT_AUTHORIZED, "PUBACK for $action %s" % what)
            victim5.ping()
        ev = _events_until(w, _has(type="refused", topic=ACTION))[-1]
        check_equal(ev["request"], "publish", "refused $action: request")

        c = cloud_login5(b.port, name, actor, "admin")
        ack = c.publish(ACTION, close, qos=1)
        check_equal(ack.reason, 0, "PUBACK for a $action close")
        victim5.expect_disconnect(ADMINISTRATIVE_ACTION, what="closed through $action",
                                  reason_string=r"\$action")
        ev = _events_until(w, _has(type="disconnected", client_id="victim-5"))[-1]
        check("$action" in ev["reason"] and "admin" in ev["reason"], "reason %r" % ev)

        c.publish(ACTION, b'{"type":"close","client_id":"victim-3"}', qos=0)
        check(not victim3.expect_closed(5.0, "the close of an MQTT 3.1.1 client"),
              "packets before the close of an MQTT 3.1.1 client")
        ack = c.publish(ACTION, b'{"type":"close","client_id":"nobody"}', qos=1)
        check_equal(ack.reason, NO_MATCHING_SUBSCRIBERS, "PUBACK for an unknown client id")
        c.ping()


def test_malformed_action_payloads_change_nothing():
    """Desktop mode: everybody may act, but only well-formed actions do anything."""
    bad = [b"", b"close", b"{", b"[]", b'{"type":"close"}', b'{"type":"open","client_id":"x"}',
           b'{"type":"close","client_id":{"a":1}}', b'{"type":"close","client_id":7}',
           b'{"type":"close","client_id":"x","client_id":"y"}', b"\xff\xfe\x00",
           b'{"type":"close","client_id":"' + b"x" * 20000 + b'"}']
    with Broker() as b:
        target = v5_connect(b.port, "target")
        w = _watch(b.port)
        c = v5_connect(b.port, "prankster")
        mark = b.log_mark()
        for payload in bad:
            ack = c.publish(ACTION, payload, qos=1)
            check(ack.reason in (PAYLOAD_FORMAT_INVALID, NO_MATCHING_SUBSCRIBERS),
                  "PUBACK for $action %r: %r" % (payload[:40], ack))
            c.publish(ACTION, payload, qos=0)
        b.wait_log(r"\$action (close )?ignored", since=mark)
        target.ping()
        c.ping()
        # Nobody but the broker publishes to $events or $info.
        for topic in (EVENTS, INFO, EVENTS + "/x"):
            ack = c.publish(topic, b'{"type":"forged"}', qos=1)
            check_equal(ack.reason, NOT_AUTHORIZED, "PUBACK for a PUBLISH to %s" % topic)
        got = _events_until(w, _has(type="refused", topic=EVENTS + "/x"))
        check(not _find(got, type="forged"), "a forged event reached $events: %r" % got)
        b.check_alive()
        target.send(publish5(ACTION, b'{"type":"close","client_id":"target"}', qos=0))
        d = target.packets_until_closed(5.0, "target closing itself through $action")
        check(d and d[-1].type == DISCONNECT and d[-1].reason == ADMINISTRATIVE_ACTION,
              "a client closing itself gets DISCONNECT 0x98: %r" % d)


run_tests(globals())
