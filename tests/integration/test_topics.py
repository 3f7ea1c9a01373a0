#!/usr/bin/python3
"""Topic rules (SPEC 3): wildcards, `*`, the leading slash, `$` topics, characters."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    Broker, Closed, TestFailure, Timeout, check, check_equal, mosquitto_pub, mosquitto_sub,
    publish_packet, raw_connect, run_tests, unique)


def _subscriber(b, flt, qos=0):
    s, _ = raw_connect(b.port, unique("sub"))
    check_equal(s.subscribe([(flt, qos)]), [qos], "SUBACK for %r" % flt)
    return s


def _topics_received(s, sentinel="zz/end"):
    """Topics received until the sentinel message (published last by the caller)."""
    topics = []
    for _ in range(50):
        p = s.receive(what="messages up to the sentinel %r" % sentinel)
        if p.topic.lstrip("/") == sentinel:
            return topics
        topics.append(p.topic)
    raise AssertionError("no sentinel among 50 messages: %r" % topics)


def test_plus_and_hash_matching():
    with Broker() as b:
        cases = {
            "a/+/c": {"a/b/c"},
            "a/#": {"a", "a/b", "a/b/c", "a/b/c/d"},
            "+": {"a", "x"},
            "+/+": {"a/b", "x/y"},
            "a/b/+/d": {"a/b/c/d"},
            "#": {"a", "a/b", "a/b/c", "a/b/c/d", "x", "x/y", "zz/end"},
        }
        subs = {flt: _subscriber(b, flt) for flt in cases}
        for flt in subs:
            subs[flt].subscribe([("zz/end", 0)])
        pub, _ = raw_connect(b.port, unique("pub"))
        for t in ("a", "a/b", "a/b/c", "a/b/c/d", "x", "x/y"):
            pub.publish(t, t.encode(), qos=1)
        pub.publish("zz/end", b"", qos=1)
        for flt, want in cases.items():
            got = set(_topics_received(subs[flt]))
            want = want - {"zz/end"}
            check_equal(got, want, "topics received through filter %r" % flt)


def test_dollar_topics_not_matched_by_leading_wildcards():
    """MQTT-4.7.2-1 and SPEC 1: `#`, `+/...` (and `*/...`) do not match `$` topics."""
    with Broker() as b:
        hash_ = _subscriber(b, "#")
        plus = _subscriber(b, "+/x")
        plus_hash = _subscriber(b, "+/#")
        star = _subscriber(b, "*/x")
        dollar = _subscriber(b, "$foo/#")
        sys_ = _subscriber(b, "$SYS/#")
        for s in (plus, star, dollar, sys_):
            s.subscribe([("zz/end", 0)])
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("$foo", b"1", qos=1)
        pub.publish("$foo/x", b"2", qos=1)
        pub.publish("normal/x", b"3", qos=1)
        # A client may or may not be allowed to publish under $SYS; either way a `#`
        # subscriber must not see it. Use a separate connection so a refusal is harmless.
        sysc, _ = raw_connect(b.port, unique("sys"))
        sysc.send(publish_packet("$SYS/x", b"4", qos=1, pid=1))
        try:
            sysc.read_packet(3)
        except (Closed, Timeout):
            pass
        pub.publish("zz/end", b"", qos=1)
        check_equal(_topics_received(hash_), ["normal/x"], "topics received through '#'")
        check_equal(_topics_received(plus), ["normal/x"], "topics received through '+/x'")
        check_equal(_topics_received(plus_hash), ["normal/x"], "topics received through '+/#'")
        check_equal(_topics_received(star), ["normal/x"], "topics received through '*/x'")
        check_equal(_topics_received(dollar), ["$foo", "$foo/x"],
                    "topics received through '$foo/#'")
        got_sys = _topics_received(sys_)
        check(got_sys in ([], ["$SYS/x"]), "'$SYS/#' received %r" % got_sys)


def test_star_wildcard_and_leading_slash_with_mosquitto_clients():
    """SPEC 3, exactly: `*/temp` gets /kitchen/temp as kitchen/temp, `/#` as /kitchen/temp."""
    with Broker() as b:
        star = mosquitto_sub(b.port, "-v", "-C", "1", "-W", "10", "-t", "*/temp")
        with star:
            slash = mosquitto_sub(b.port, "-v", "-C", "1", "-W", "10", "-t", "/#")
            with slash:
                mosquitto_pub(b.port, "-t", "/kitchen/temp", "-m", "21")
                star.wait(10)
                slash.wait(10)
                star_msgs = [l for l in star.lines if not l.startswith(("Client ", "Subscribed"))]
                slash_msgs = [l for l in slash.lines
                              if not l.startswith(("Client ", "Subscribed"))]
                check_equal(star_msgs, ["kitchen/temp 21"], "mosquitto_sub -t '*/temp' -v output")
                check_equal(slash_msgs, ["/kitchen/temp 21"], "mosquitto_sub -t '/#' -v output")


def test_star_is_plus_for_raw_clients():
    with Broker() as b:
        s = _subscriber(b, "st/*/c", 1)
        s.subscribe([("zz/end", 0)])
        pub, _ = raw_connect(b.port, unique("pub"))
        for t in ("st/b/c", "st/b/c/d", "st/c", "st/x/c"):
            pub.publish(t, b"", qos=1)
        pub.publish("zz/end", b"", qos=1)
        check_equal(_topics_received(s), ["st/b/c", "st/x/c"], "topics through 'st/*/c'")


def test_star_only_as_a_whole_level():
    with Broker() as b:
        c, _ = raw_connect(b.port, unique("c"))
        codes = c.subscribe([("a*/b", 1), ("ok/*", 1), ("a/*b", 1), ("ok2/#", 1)])
        check_equal(codes, [0x80, 1, 0x80, 1],
                    "SUBACK for 'a*/b', 'ok/*', 'a/*b', 'ok2/#' (a '*' inside a level is refused)")
        c.ping()


def test_leading_slash_is_insignificant():
    """SPEC 3: /a/b and a/b are one topic; the subscriber's filter decides the slash."""
    with Broker() as b:
        plain = _subscriber(b, "ls/t")
        slash = _subscriber(b, "/ls/t")
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("/ls/t", b"from-slash", qos=1)
        pub.publish("ls/t", b"from-plain", qos=1)
        got = [(p.topic, p.payload) for p in plain.receive_all(2)]
        check_equal(got, [("ls/t", b"from-slash"), ("ls/t", b"from-plain")],
                    "messages through filter 'ls/t'")
        got = [(p.topic, p.payload) for p in slash.receive_all(2)]
        check_equal(got, [("/ls/t", b"from-slash"), ("/ls/t", b"from-plain")],
                    "messages through filter '/ls/t'")
        plain.expect_silence(0.3, "after two messages")
        slash.expect_silence(0.3, "after two messages")


def test_allowed_characters_round_trip():
    with Broker() as b:
        topic = "AZaz09/.,:;-_$/x"
        s = _subscriber(b, topic, 1)
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish(topic, b"chars", qos=1)
        p = s.receive()
        check_equal((p.topic, p.payload), (topic, b"chars"), "message on a topic of every "
                    "allowed character")


def test_filters_with_bad_characters_refused_others_granted():
    with Broker("--utf8-topics", "0") as b:  # the cloud default (desktop's is 1)
        c, _ = raw_connect(b.port, unique("c"))
        bad = ["a b", "caf\u00e9", "a@b", "a!b", "p%q", "(x)", "a\"b"]
        filters = [("good/1", 1)] + [(f, 1) for f in bad] + [("good/2", 2)]
        codes = c.subscribe(filters)
        check_equal(codes, [1] + [0x80] * len(bad) + [2],
                    "SUBACK for a good filter, %d filters with bad characters, a good filter"
                    % len(bad))
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("good/2", b"still", qos=1)
        p = c.receive()
        check_equal((p.topic, p.payload), ("good/2", b"still"), "delivery on the granted filter")


def test_misplaced_wildcards_are_never_granted():
    """MQTT-4.7.1-2/3: `#` last and alone in its level, `+` alone in its level. The broker
    may answer SUBACK 0x80 or close the connection; it must not grant the filter."""
    with Broker() as b:
        for flt in ("a/#/b", "a#", "#a", "a/b+", "+a/b", "a/++"):
            c, _ = raw_connect(b.port, unique("wc"))
            try:
                codes = c.subscribe([(flt, 1)])
            except TestFailure:
                check(c.is_closed(1), "no SUBACK and no close for filter %r" % flt)
                continue
            check_equal(codes, [0x80], "SUBACK for the invalid filter %r" % flt)
            c.close()


def test_publish_wildcard_in_topic_name_closes():
    """MQTT-3.3.2-2: a topic name must not contain wildcards (`*` included, SPEC 3)."""
    with Broker() as b:
        for topic in ("a/+", "a/#", "a/*"):
            c, _ = raw_connect(b.port, unique("c"))
            c.send(publish_packet(topic, b"x", qos=1, pid=3))
            got = c.expect_closed(5, "the connection closed after PUBLISH to %r" % topic)
            check(not got, "PUBLISH to %r was answered with %r before the close" % (topic, got))


def test_mqtt31_and_mqtt311_share_topics():
    with Broker() as b:
        old, _ = raw_connect(b.port, unique("old"), version=3)
        old.subscribe([("mix/#", 1)])
        new, _ = raw_connect(b.port, unique("new"), version=4)
        new.subscribe([("mix/#", 1)])
        new.publish("mix/a", b"from 3.1.1", qos=1)
        old.publish("mix/b", b"from 3.1", qos=1)
        for c, name in ((old, "3.1"), (new, "3.1.1")):
            got = [(p.topic, p.payload) for p in c.receive_all(2)]
            check_equal(got, [("mix/a", b"from 3.1.1"), ("mix/b", b"from 3.1")],
                        "messages received by the MQTT %s client" % name)


if __name__ == "__main__":
    run_tests(globals())
