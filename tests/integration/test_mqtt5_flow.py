#!/usr/bin/python3
"""MQTT 5 flow control and topic aliases: the client's Receive Maximum and Maximum Packet
Size when aviary delivers, the broker's Receive Maximum (0x93), topic aliases from the
client (valid, 0, above the maximum, unknown, per connection, max-topic-aliases) and to
the client, and max-messages-per-second as back-pressure.

Set AVIARY_TEST_PEER=mosquitto to run the standard-behaviour tests against mosquitto.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    PUBACK, PUBCOMP, PUBREC, PUBREL, check, check_equal, run_tests, unique)
from mqtt5 import (  # noqa: E402
    RECEIVE_MAXIMUM, TOPIC_ALIAS, TOPIC_ALIAS_MAXIMUM, USER_PROPERTY, aviary_only, broker,
    check_healthy, healthy_pair, mosquitto_deviates, mosquitto_differs, puback5, pubcomp5,
    publish5, pubrec5, pubrel5, v5_connect)


# ---------------------------------------------------------------------------
# Delivery to the client: its Receive Maximum and Maximum Packet Size

def test_MQTT_3_3_4_9_client_receive_maximum_bounds_messages_in_flight():
    mosquitto_deviates("with Receive Maximum 2 it sends two more PUBLISHes after the first "
                       "acknowledgement, 3 in flight (MQTT-3.3.4-9)")
    with broker() as b:
        sub = v5_connect(b.port, unique("rm2-"), receive_maximum=2)
        sub.subscribe(("rm/t", 2))
        pub = v5_connect(b.port, unique("pub-"))
        for i in range(5):
            pub.publish("rm/t", b"%d" % i, 1 + i % 2)
        first = [sub.receive(ack=False) for _ in range(2)]
        check_equal([p.payload for p in first], [b"0", b"1"], "first two messages")
        sub.expect_silence(0.7, "(more than Receive Maximum 2 unacknowledged)")
        sub.send(puback5(first[0].pid))
        third = sub.receive(ack=False, what="the third message after one PUBACK")
        check_equal(third.payload, b"2", "third payload")
        sub.expect_silence(0.5, "(window of 2 exceeded after one PUBACK)")
        # A QoS 2 message holds its slot until PUBCOMP, not PUBREC.
        check_equal(first[1].qos, 2, "QoS of the second message")
        sub.send(pubrec5(first[1].pid))
        sub.expect5(PUBREL, pid=first[1].pid, what="PUBREL")
        sub.expect_silence(0.5, "(a slot freed by PUBREC instead of PUBCOMP)")
        sub.send(pubcomp5(first[1].pid))
        sub.send(puback5(third.pid))
        rest = sub.receive_all(2, what="the last messages")
        check_equal([p.payload for p in rest], [b"3", b"4"], "last two payloads")


def test_in_flight_is_the_smaller_of_receive_maximum_and_max_inflight():
    aviary_only("max-inflight bounds delivery below the client's Receive Maximum")
    with broker("--max-inflight", "3") as b:
        sub = v5_connect(b.port, unique("rm10-"), receive_maximum=10)
        sub.subscribe(("mi/t", 1))
        pub = v5_connect(b.port, unique("pub-"))
        for i in range(6):
            pub.publish("mi/t", b"%d" % i, 1)
        got = [sub.receive(ack=False) for _ in range(3)]
        sub.expect_silence(0.7, "(more than max-inflight 3 although Receive Maximum is 10)")
        for p in got:
            sub.send(puback5(p.pid))
        check_equal([p.payload for p in sub.receive_all(3)], [b"3", b"4", b"5"], "the rest")


def test_MQTT_3_1_2_24_publish_beyond_client_maximum_packet_size_is_not_sent():
    with broker() as b:
        sub = v5_connect(b.port, unique("mps-"), maximum_packet_size=200)
        sub.subscribe(("mps/t", 1))
        pub = v5_connect(b.port, unique("pub-"))
        pub.publish("mps/t", b"x" * 300, 1)
        pub.publish("mps/t", b"y" * 300, 0)
        # The limit is on the whole packet, properties included.
        pub.publish("mps/t", b"z" * 150, 1, props=[(USER_PROPERTY, ("k" * 30, "v" * 30))])
        pub.publish("mps/t", b"small", 1)
        p = sub.receive(what="the small message after three oversized ones")
        check_equal(p.payload, b"small", "the only message delivered")
        sub.expect_silence(0.5, "after the small message")


def test_MQTT_3_1_2_25_dropped_publish_counts_as_acknowledged():
    """Receive Maximum 1: a QoS 1 message too large to send is dropped as if it had been
    acknowledged, so the next one comes although the dropped one never was."""
    mosquitto_deviates("a dropped QoS 1 message keeps its in-flight slot, so nothing more "
                       "is sent (MQTT-3.1.2-25)")
    with broker() as b:
        sub = v5_connect(b.port, unique("mps1-"), maximum_packet_size=200, receive_maximum=1)
        sub.subscribe(("mps1/t", 2))
        pub = v5_connect(b.port, unique("pub-"))
        for qos in (1, 2):
            pub.publish("mps1/t", b"x" * 300, qos)
            pub.publish("mps1/t", b"small q%d" % qos, qos)
            p = sub.receive(what="the message after a dropped QoS %d one" % qos)
            check_equal(p.payload, b"small q%d" % qos, "the message delivered")
        sub.expect_silence(0.5, "after the small messages")


# ---------------------------------------------------------------------------
# The broker's Receive Maximum

def test_MQTT_3_3_4_receive_maximum_exceeded_gets_0x93():
    """max-inflight 3: three QoS 2 PUBLISHes may wait for PUBREL; a fourth is
    DISCONNECT 0x93. QoS 1 messages, acknowledged at once, never count."""
    mosquitto_deviates("it answers the extra PUBLISH with PUBREC 0x97 instead of "
                       "DISCONNECT 0x93 (3.3.4)")
    with broker("--max-inflight", "3") as b:
        sub, pub, topic = healthy_pair(b.port)
        c = v5_connect(b.port, unique("flood-"))
        check_equal(c.connack.props.get(RECEIVE_MAXIMUM), 3, "Receive Maximum in CONNACK")
        for i in range(10):
            c.publish("rmx/t", b"q1", 1)
        for pid in (1, 2, 3):
            c.send(publish5("rmx/t", b"q2", 2, pid=100 + pid))
            rec = c.expect5(PUBREC, pid=100 + pid)
            check(rec.reason < 0x80, "PUBREC for QoS 2 message %d of 3: %r" % (pid, rec))
        c.send(pubrel5(101))
        c.expect5(PUBCOMP, pid=101, what="PUBCOMP 101")
        c.send(publish5("rmx/t", b"q2", 2, pid=104))
        c.expect5(PUBREC, pid=104, what="PUBREC for the third waiting QoS 2 message")
        c.send(publish5("rmx/t", b"one too many", 2, pid=105))
        c.expect_disconnect(0x93, what="a fourth QoS 2 PUBLISH waiting for PUBREL")
        check_healthy(sub, pub, topic)


# ---------------------------------------------------------------------------
# Topic aliases from the client

def test_MQTT_3_3_2_12_topic_alias_from_the_client():
    with broker() as b:
        sub = v5_connect(b.port, unique("sub-"))
        sub.subscribe(("ta/#", 1))
        c = v5_connect(b.port, unique("alias-"))
        maximum = c.connack.props.get(TOPIC_ALIAS_MAXIMUM)
        check_equal(maximum, 10, "Topic Alias Maximum in CONNACK")
        steps = [("ta/x", 1, b"set 1"), ("", 1, b"use 1"), ("ta/y", 10, b"set 10"),
                 ("", 10, b"use 10"), ("ta/z", 1, b"re-set 1"), ("", 1, b"use 1 again"),
                 ("", 10, b"use 10 again"), ("ta/w", None, b"no alias")]
        expect = ["ta/x", "ta/x", "ta/y", "ta/y", "ta/z", "ta/z", "ta/y", "ta/w"]
        for topic, alias, payload in steps:
            ack = c.publish(topic, payload, 1, props=[(TOPIC_ALIAS, alias)] if alias else [])
            check_equal(ack.reason, 0, "PUBACK reason for %r" % payload)
        got = [(p.resolved, p.payload) for p in sub.receive_all(len(steps))]
        check_equal(got, list(zip(expect, [s[2] for s in steps])), "delivered (topic, payload)")
        for qos in (0, 2):
            c.publish("", b"q%d" % qos, qos, props=[(TOPIC_ALIAS, 1)])
            check_equal(sub.receive().resolved, "ta/z", "topic of a QoS %d alias" % qos)


def test_topic_alias_0_is_invalid():
    mosquitto_differs("it answers DISCONNECT 0x81 Malformed Packet")
    with broker() as b:
        sub, pub, topic = healthy_pair(b.port)
        c = v5_connect(b.port, unique("a0-"))
        c.send(publish5("a0/t", b"x", 1, pid=1, props=[(TOPIC_ALIAS, 0)]))
        c.expect_disconnect(0x94, what="Topic Alias 0")
        check_healthy(sub, pub, topic)


def test_topic_alias_above_the_maximum_is_invalid():
    with broker("--max-topic-aliases", "3") as b:
        sub, pub, topic = healthy_pair(b.port)
        c = v5_connect(b.port, unique("a4-"))
        check_equal(c.connack.props.get(TOPIC_ALIAS_MAXIMUM), 3, "Topic Alias Maximum")
        check_equal(c.publish("a4/t", b"x", 1, props=[(TOPIC_ALIAS, 3)]).reason, 0x10,
                    "PUBACK for alias 3")
        c.send(publish5("a4/t", b"x", 1, pid=9, props=[(TOPIC_ALIAS, 4)]))
        c.expect_disconnect(0x94, what="Topic Alias 4 with a maximum of 3")
        check_healthy(sub, pub, topic)


def test_max_topic_aliases_0_allows_no_alias():
    with broker("--max-topic-aliases", "0") as b:
        sub, pub, topic = healthy_pair(b.port)
        c = v5_connect(b.port, unique("none-"))
        check(not c.connack.props.has(TOPIC_ALIAS_MAXIMUM),
              "Topic Alias Maximum in CONNACK with max-topic-aliases 0: %r" % c.connack)
        c.send(publish5("none/t", b"x", 1, pid=1, props=[(TOPIC_ALIAS, 1)]))
        c.expect_disconnect(0x94, what="Topic Alias 1 when none is allowed")
        check_healthy(sub, pub, topic)


def test_unknown_topic_alias_is_protocol_error():
    with broker() as b:
        sub, pub, topic = healthy_pair(b.port)
        c = v5_connect(b.port, unique("unk-"))
        c.publish("unk/t", b"x", 1, props=[(TOPIC_ALIAS, 2)])
        c.send(publish5("", b"x", 1, pid=7, props=[(TOPIC_ALIAS, 3)]))
        c.expect_disconnect(0x82, what="an empty topic with an alias never set")
        c = v5_connect(b.port, unique("none-"))
        c.send(publish5("", b"x", 0))
        c.expect_disconnect(0x82, what="an empty topic without an alias")
        check_healthy(sub, pub, topic)


def test_MQTT_3_3_2_7_topic_aliases_do_not_survive_a_reconnect():
    with broker() as b:
        sub, pub, topic = healthy_pair(b.port)
        cid = unique("re-")
        c = v5_connect(b.port, cid, clean_start=False, session_expiry=30)
        c.publish("re/t", b"x", 1, props=[(TOPIC_ALIAS, 1)])
        c.disconnect()
        back = v5_connect(b.port, cid, clean_start=False, session_expiry=30)
        check_equal(back.connack.session_present, True, "Session Present")
        back.send(publish5("", b"x", 1, pid=3, props=[(TOPIC_ALIAS, 1)]))
        back.expect_disconnect(0x82, what="an alias set on the previous connection")
        check_healthy(sub, pub, topic)


# ---------------------------------------------------------------------------
# Topic aliases to the client

def test_topic_aliases_to_the_client_for_its_first_n_topics():
    aviary_only("topic aliases sent to the client")
    with broker() as b:
        sub = v5_connect(b.port, unique("tam2-"), topic_alias_maximum=2)
        sub.subscribe(("out/#", 1))
        pub = v5_connect(b.port, unique("pub-"))
        topics = ["out/a", "out/b", "out/c"]
        for rnd in range(2):
            for t in topics:
                pub.publish(t, ("%s %d" % (t, rnd)).encode(), 1)
        got = sub.receive_all(6)
        wire = [(p.topic, p.alias, p.resolved) for p in got]
        check_equal(wire, [("out/a", 1, "out/a"), ("out/b", 2, "out/b"), ("out/c", None, "out/c"),
                           ("", 1, "out/a"), ("", 2, "out/b"), ("out/c", None, "out/c")],
                    "(topic on the wire, alias, topic) with Topic Alias Maximum 2")
        check_equal([p.payload for p in got],
                    [("%s %d" % (t, r)).encode() for r in range(2) for t in topics], "payloads")


def test_topic_aliases_to_the_client_are_bounded_by_max_topic_aliases():
    """A client that allows 65535 aliases gets at most max-topic-aliases of them: each one
    costs the broker a map entry for the life of the connection."""
    aviary_only("max-topic-aliases bounds the aliases sent to the client")
    with broker("--max-topic-aliases", "2") as b:
        sub = v5_connect(b.port, unique("tamx-"), topic_alias_maximum=65535)
        sub.subscribe(("cap/#", 1))
        pub = v5_connect(b.port, unique("pub-"))
        for t in ("cap/a", "cap/b", "cap/c"):
            pub.publish(t, b"x", 1)
        got = sub.receive_all(3)
        check_equal([(p.topic, p.alias) for p in got],
                    [("cap/a", 1), ("cap/b", 2), ("cap/c", None)],
                    "(topic on the wire, alias) with max-topic-aliases 2")


def test_MQTT_3_1_2_27_no_topic_alias_without_topic_alias_maximum():
    with broker() as b:
        subs = [v5_connect(b.port, unique("notam-")),
                v5_connect(b.port, unique("tam0-"), topic_alias_maximum=0)]
        for s in subs:
            s.subscribe(("noal/#", 1))
        pub = v5_connect(b.port, unique("pub-"))
        for i in range(3):
            pub.publish("noal/t", b"%d" % i, 1)
        for s in subs:
            got = s.receive_all(3)
            check(all(p.alias is None and p.topic == "noal/t" for p in got),
                  "a Topic Alias to a client that allows none: %r" % got)


# ---------------------------------------------------------------------------
# max-messages-per-second

def test_max_messages_per_second_slows_a_v5_client_without_a_reason_code():
    aviary_only("max-messages-per-second")
    with broker("--max-messages-per-second", "5") as b:
        sub = v5_connect(b.port, unique("sub-"))
        sub.subscribe(("rate/#", 1))
        pub = v5_connect(b.port, unique("pub-"))
        t0 = time.monotonic()
        for i in range(15):
            pub.send(publish5("rate/t", b"%d" % i, 1, pid=i + 1))
        acks = [pub.expect5(PUBACK, 10, pid=i + 1) for i in range(15)]
        check_equal([a.reason for a in acks], [0] * 15, "PUBACK reasons (no rate refusal)")
        got = [p.payload for p in sub.receive_all(15, timeout=10)]
        took = time.monotonic() - t0
        check_equal(got, [b"%d" % i for i in range(15)], "every message, in order")
        check(took >= 1.7, "15 messages at 5/s took %.2f s: not paced" % took)
        pub.ping()


if __name__ == "__main__":
    run_tests(globals())
