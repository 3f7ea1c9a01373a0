#!/usr/bin/python3
"""aviary's limits as MQTT 5 reason codes, each with a Reason String naming the directive
and its value: max-client-id (CONNACK 0x85), max-topic-length (PUBACK/PUBREC 0x90,
DISCONNECT 0x90 for QoS 0), max-payload and Maximum Packet Size (DISCONNECT 0x95),
max-subscriptions (SUBACK 0x97), max-retained (PUBACK 0x97), max-connections (CONNACK
0x97). Everyone else keeps being served.

Most of these are aviary's own limits; with AVIARY_TEST_PEER=mosquitto only the Maximum
Packet Size test runs (mosquitto's max_packet_size).
"""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    PUBACK, check, check_equal, run_tests, unique)
from mqtt5 import (  # noqa: E402
    MAXIMUM_PACKET_SIZE, USER_PROPERTY, V5Client, aviary_only, broker, check_healthy,
    healthy_pair, mosquitto_deviates, publish5, v5_connect)


def _names(rs, directive, value, what):
    """The Reason String names the directive and its value."""
    check(rs, "no Reason String for %s" % what)
    check(directive in rs and re.search(r"\b%s\b" % value, rs),
          "Reason String %r for %s does not name %s %s" % (rs, what, directive, value))


def _watch_all(port):
    w = v5_connect(port, unique("all-"))
    w.subscribe(("#", 2))
    return w


def test_client_id_of_65_characters_gets_0x85_naming_max_client_id():
    aviary_only("max-client-id")
    with broker() as b:
        v5_connect(b.port, "i" * 64).ping()
        c = V5Client(b.port)
        ack = c.connect("j" * 65, expect_reason=0x85)
        _names(ack.props.reason_string, "max-client-id", 64, "a 65-character client id")
        check(re.search(r"\b65\b", ack.props.reason_string),
              "Reason String %r does not say the id had 65 characters"
              % ack.props.reason_string)
        check(not c.packets_until_closed(5, "the close after CONNACK 0x85"),
              "packets after CONNACK 0x85")
    with broker("--max-client-id", "10") as b:
        v5_connect(b.port, "0123456789").ping()
        ack = V5Client(b.port).connect("0123456789x", expect_reason=0x85)
        _names(ack.props.reason_string, "max-client-id", 10, "an 11-character client id")


def test_topic_of_129_characters_gets_0x90_naming_max_topic_length():
    aviary_only("max-topic-length")
    with broker() as b:
        w = _watch_all(b.port)
        pub = v5_connect(b.port, unique("pub-"))
        t128 = "l/" + "a" * 126
        t129 = "l/" + "a" * 127
        check_equal(pub.publish(t128, b"fits", 1).reason, 0, "PUBACK for 128 characters")
        check_equal(w.receive().resolved, t128, "message on a 128-character topic")
        for qos in (1, 2):
            ack = pub.publish(t129, b"too long", qos)
            check_equal(ack.reason, 0x90, "%s reason for a 129-character topic (%r)"
                        % (ack.name, ack))
            _names(ack.props.reason_string, "max-topic-length", 128,
                   "a 129-character topic at QoS %d" % qos)
        w.expect_silence(0.3, "(the 129-character PUBLISH was delivered)")
        pub.ping()
        c = v5_connect(b.port, unique("q0-"))
        c.send(publish5(t129, b"too long", 0))
        d = c.expect_disconnect(0x90, what="a 129-character topic at QoS 0")
        _names(d.props.reason_string, "max-topic-length", 128, "QoS 0 DISCONNECT 0x90")
        w.expect_silence(0.3, "(the 129-character QoS 0 PUBLISH was delivered)")
        pub.ping()


def test_payload_of_65537_bytes_gets_disconnect_0x95_naming_max_payload():
    aviary_only("max-payload")
    with broker() as b:
        sub, pub, topic = healthy_pair(b.port)
        w = _watch_all(b.port)
        ok = v5_connect(b.port, unique("fits-"))
        check_equal(ok.publish("pl/t", b"\xab" * 65536, 1).reason, 0,
                    "PUBACK for a 65536-byte payload")
        check_equal(len(w.receive().payload), 65536, "delivered payload size")
        for qos in (0, 1, 2):
            c = v5_connect(b.port, unique("big-"))
            c.send(publish5("pl/t", b"\xcd" * 65537, qos, pid=1))
            d = c.expect_disconnect(0x95, what="a 65537-byte payload at QoS %d" % qos)
            _names(d.props.reason_string, "max-payload", 65536, "a 65537-byte payload")
        w.expect_silence(0.3, "(a payload over max-payload was delivered)")
        check_healthy(sub, pub, topic)


def _sized_publish(total, pid):
    """A QoS 1 PUBLISH of exactly `total` bytes: a 1-byte payload, filled up with User
    Properties (each value at most 60000 bytes)."""
    def build(pad):
        props = []
        while pad > 0 or not props:
            n = min(pad, 60000)
            props.append((USER_PROPERTY, ("k", "v" * n)))
            pad -= n
        return publish5("mps/t", b"p", 1, pid=pid, props=props)
    pad = total - len(build(0))
    for _ in range(4):  # each extra property costs 5 bytes, a longer length 1-2
        pkt = build(pad)
        if len(pkt) == total:
            return pkt
        pad -= len(pkt) - total
    raise AssertionError("cannot build a %d-byte PUBLISH" % total)


def test_packet_larger_than_maximum_packet_size_gets_0x95():
    """A packet of exactly the announced Maximum Packet Size is accepted (it is the largest
    packet the broker accepts); one byte more is DISCONNECT 0x95."""
    mosquitto_deviates("it accepts packets up to 2 bytes larger than the Maximum Packet Size "
                       "it announces (3.2.2.3.6: the size counts the whole packet)")
    with broker(mosquitto_conf=["max_packet_size 2000"]) as b:
        sub, pub, topic = healthy_pair(b.port)
        c = v5_connect(b.port, unique("mps-"))
        mps = c.connack.props.get(MAXIMUM_PACKET_SIZE)
        check(mps is not None, "no Maximum Packet Size in CONNACK: %r" % c.connack)
        c.send(_sized_publish(mps, 1))
        ack = c.expect5(PUBACK, pid=1, what="PUBACK for a packet of exactly Maximum Packet "
                        "Size %d" % mps)
        check(ack.reason < 0x80, "a packet of exactly Maximum Packet Size %d was refused: %r"
              % (mps, ack))
        c.send(_sized_publish(mps + 1, 2))
        c.expect_disconnect(0x95, what="a packet of Maximum Packet Size + 1 = %d" % (mps + 1))
        check_healthy(sub, pub, topic)


def test_subscription_101_gets_suback_0x97_naming_max_subscriptions():
    aviary_only("max-subscriptions")
    with broker() as b:
        c = v5_connect(b.port, unique("subs-"))
        ack = c.subscribe([("s/%d" % i, 1) for i in range(100)])
        check_equal(ack.codes, [1] * 100, "SUBACK for 100 filters")
        ack = c.subscribe([("s/extra", 1), ("s/7", 2)])
        check_equal(ack.codes, [0x97, 2], "SUBACK for a 101st filter and a replaced one")
        _names(ack.props.reason_string, "max-subscriptions", 100, "the 101st subscription")
        c.unsubscribe("s/0")
        check_equal(c.subscribe(("s/extra", 1)).codes, [1], "SUBACK after unsubscribing one")
    with broker("--max-subscriptions", "3") as b:
        c = v5_connect(b.port, unique("subs3-"))
        ack = c.subscribe([("m/a", 0), ("m/b", 1), ("m/c", 2), ("m/d", 1), ("m/e", 0)])
        check_equal(ack.codes, [0, 1, 2, 0x97, 0x97], "SUBACK for 5 filters, limit 3")
        _names(ack.props.reason_string, "max-subscriptions", 3, "the 4th of 3 subscriptions")


def test_retained_topic_beyond_max_retained_gets_0x97():
    """QoS 1/2: PUBACK/PUBREC 0x97, not delivered, not retained. QoS 0: delivered, not
    retained. Replacing an existing retained message is allowed."""
    aviary_only("max-retained")
    with broker("--max-retained", "2") as b:
        live = v5_connect(b.port, unique("live-"))
        live.subscribe(("r/#", 1))
        pub = v5_connect(b.port, unique("pub-"))
        for t in ("r/1", "r/2"):
            check_equal(pub.publish(t, t.encode(), 1, retain=True).reason, 0, "PUBACK " + t)
        for qos in (1, 2):
            ack = pub.publish("r/3", b"r/3", qos, retain=True)
            check_equal(ack.reason, 0x97, "%s reason for a 3rd retained topic (%r)"
                        % (ack.name, ack))
            _names(ack.props.reason_string, "max-retained", 2, "a 3rd retained topic")
        pub.publish("r/4", b"r/4 q0", 0, retain=True)
        check_equal(pub.publish("r/1", b"r/1 again", 1, retain=True).reason, 0,
                    "PUBACK for replacing a retained message")
        got = [p.payload for p in live.receive_all(4)]
        check_equal(got, [b"r/1", b"r/2", b"r/4 q0", b"r/1 again"],
                    "live deliveries (the refused QoS 1/2 messages are not delivered)")
        live.expect_silence(0.3, "(a refused retained message was delivered)")
        late = v5_connect(b.port, unique("late-"))
        late.subscribe(("r/#", 1))
        got = sorted(p.payload for p in late.receive_all(2))
        check_equal(got, [b"r/1 again", b"r/2"], "retained messages")
        late.expect_silence(0.5, "(a retained message beyond max-retained 2)")


def test_max_connections_gets_connack_0x97():
    aviary_only("max-connections")
    with broker("--max-connections", "2") as b:
        first = v5_connect(b.port, unique("one-"))
        second = v5_connect(b.port, unique("two-"))
        c = V5Client(b.port)
        ack = c.connect(unique("three-"), expect_reason=0x97)
        _names(ack.props.reason_string, "max-connections", 2, "a third connection")
        check(not c.packets_until_closed(5, "the close after CONNACK 0x97"),
              "packets after CONNACK 0x97")
        first.ping()
        second.ping()


if __name__ == "__main__":
    run_tests(globals())
