#!/usr/bin/python3
"""MQTT 5 PUBLISH: properties passed through (order kept), Message Expiry Interval as the
remaining time, expired messages dropped (queued and retained), retained messages keep
their properties, Payload Format Indicator checks, PUBACK/PUBREC reason codes (0x10,
0x90, 0x99), and the protocol errors and malformed properties of a client's PUBLISH.

Set AVIARY_TEST_PEER=mosquitto to run the standard-behaviour tests against mosquitto.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    PUBCOMP, check, check_equal, run_tests, unique)
from mqtt5 import (  # noqa: E402
    CONTENT_TYPE, CORRELATION_DATA, MESSAGE_EXPIRY_INTERVAL, PAYLOAD_FORMAT_INDICATOR,
    PacketTypes, Paho5Client, RESPONSE_TOPIC, SESSION_EXPIRY_INTERVAL,
    SUBSCRIPTION_IDENTIFIER, TOPIC_ALIAS, USER_PROPERTY, WILL_DELAY_INTERVAL, aviary_only,
    broker, check_healthy, healthy_pair, mosquitto_deviates, mosquitto_differs,
    mosquitto_pub5, mosquitto_sub5, paho_props, puback5, publish5, pubrel5, v5_connect)

USER = [("b", "2"), ("a", "1"), ("b", "3"), ("caf\u00e9", "cr\u00e8me"), ("empty", "")]
ALL_PROPS = ([(PAYLOAD_FORMAT_INDICATOR, 1), (CONTENT_TYPE, "application/json"),
              (RESPONSE_TOPIC, "reply/to/me"), (CORRELATION_DATA, b"\x00\x01\xfe\xff")]
             + [(USER_PROPERTY, kv) for kv in USER])


def _check_passthrough(p, what):
    got = p.props
    check_equal(got.get(PAYLOAD_FORMAT_INDICATOR), 1, "Payload Format Indicator " + what)
    check_equal(got.get(CONTENT_TYPE), "application/json", "Content Type " + what)
    check_equal(got.get(RESPONSE_TOPIC), "reply/to/me", "Response Topic " + what)
    check_equal(got.get(CORRELATION_DATA), b"\x00\x01\xfe\xff", "Correlation Data " + what)
    check_equal(got.user, USER, "User Properties, in order, " + what + " (MQTT-3.3.2-17/18)")


def _watch_all(port):
    """A subscriber to '#' that must see nothing of a refused PUBLISH."""
    w = v5_connect(port, unique("all-"))
    w.subscribe(("#", 2))
    return w


def _offline_subscriber(port, topic):
    cid = unique("off-")
    c = v5_connect(port, cid, clean_start=False, session_expiry=60)
    check_equal(c.subscribe((topic, 1)).codes, [1], "SUBACK")
    c.disconnect()
    return cid


# ---------------------------------------------------------------------------
# Properties

def test_MQTT_3_3_2_properties_pass_through_unaltered_in_order():
    with broker() as b:
        sub = v5_connect(b.port, unique("sub-"))
        sub.subscribe(("pp/#", 2))
        pub = v5_connect(b.port, unique("pub-"))
        for qos in (0, 1, 2):
            payload = ('{"qos": %d}' % qos).encode()
            ack = pub.publish("pp/q%d" % qos, payload, qos, props=ALL_PROPS)
            if ack is not None:
                check_equal(ack.reason, 0, "ack reason with a subscriber (%r)" % ack)
                check(not ack.props, "properties on a successful ack: %r" % ack)
            p = sub.receive(what="QoS %d message with properties" % qos)
            check_equal((p.resolved, p.payload, p.qos), ("pp/q%d" % qos, payload, qos),
                        "(topic, payload, qos)")
            _check_passthrough(p, "at QoS %d" % qos)
            check(not p.props.has(MESSAGE_EXPIRY_INTERVAL),
                  "Message Expiry Interval on a message published without one: %r" % p)


def test_message_without_properties_arrives_without_properties():
    with broker() as b:
        sub = v5_connect(b.port, unique("sub-"))
        sub.subscribe(("bare/t", 1))
        pub = v5_connect(b.port, unique("pub-"))
        pub.publish("bare/t", b"plain", 1)
        p = sub.receive()
        check_equal((p.payload, list(p.props)), (b"plain", []), "(payload, properties)")


def test_MQTT_3_3_2_6_message_expiry_is_sent_as_the_remaining_time():
    with broker() as b:
        sub = v5_connect(b.port, unique("live-"))
        sub.subscribe(("mei/t", 1))
        cid = _offline_subscriber(b.port, "mei/t")
        pub = v5_connect(b.port, unique("pub-"))
        pub.publish("mei/t", b"ten", 1, props=[(MESSAGE_EXPIRY_INTERVAL, 10)])
        live = sub.receive()
        check(live.props.get(MESSAGE_EXPIRY_INTERVAL) in (9, 10),
              "Message Expiry Interval on live delivery: %r, expected 10" % live)
        time.sleep(2.2)
        back = v5_connect(b.port, cid, clean_start=False, session_expiry=60)
        p = back.receive(what="the queued message")
        left = p.props.get(MESSAGE_EXPIRY_INTERVAL)
        check(left is not None and 6 <= left <= 8,
              "Message Expiry Interval after 2.2 s in the queue: %r, expected 10 - 2 = 8 "
              "(or 7)" % (left,))
        back.disconnect(session_expiry=0)


def test_MQTT_3_3_2_5_expired_message_is_dropped_from_the_queue():
    with broker() as b:
        cid = _offline_subscriber(b.port, "exp/t")
        pub = v5_connect(b.port, unique("pub-"))
        pub.publish("exp/t", b"short-lived", 1, props=[(MESSAGE_EXPIRY_INTERVAL, 1)])
        pub.publish("exp/t", b"long-lived", 1, props=[(MESSAGE_EXPIRY_INTERVAL, 60)])
        pub.publish("exp/t", b"immortal", 1)
        time.sleep(2.5)
        back = v5_connect(b.port, cid, clean_start=False, session_expiry=60)
        got = [p.payload for p in back.receive_all(2)]
        check_equal(got, [b"long-lived", b"immortal"], "queued messages after 2.5 s")
        back.expect_silence(0.5, "(a message expired 1.5 s ago was delivered)")
        back.disconnect(session_expiry=0)


def test_expired_message_waiting_for_the_window_is_dropped():
    """The client's Receive Maximum 1 keeps a message waiting; it expires there."""
    mosquitto_deviates("once a queued message has expired, the messages behind it are not "
                       "sent either (they stay stuck after the PUBACK)")
    with broker() as b:
        sub = v5_connect(b.port, unique("slow-"), receive_maximum=1)
        sub.subscribe(("win/t", 1))
        pub = v5_connect(b.port, unique("pub-"))
        pub.publish("win/t", b"first", 1)
        pub.publish("win/t", b"expiring", 1, props=[(MESSAGE_EXPIRY_INTERVAL, 1)])
        pub.publish("win/t", b"last", 1)
        first = sub.receive(ack=False)
        check_equal(first.payload, b"first", "first message")
        sub.expect_silence(2.5, "(more than Receive Maximum 1 in flight)")
        sub.send(puback5(first.pid))
        p = sub.receive()
        check_equal(p.payload, b"last", "the message after the expired one")
        sub.expect_silence(0.5, "(the expired message came after all)")


def test_expired_retained_message_is_not_sent():
    with broker() as b:
        pub = v5_connect(b.port, unique("pub-"))
        pub.publish("rexp/t", b"brief", 1, retain=True, props=[(MESSAGE_EXPIRY_INTERVAL, 1)])
        early = v5_connect(b.port, unique("early-"))
        early.subscribe(("rexp/t", 1))
        p = early.receive(what="the retained message before it expired")
        check_equal((p.payload, p.retain), (b"brief", True), "(payload, retain)")
        check(p.props.get(MESSAGE_EXPIRY_INTERVAL) in (0, 1),
              "Message Expiry Interval of the retained message: %r" % p)
        time.sleep(2.5)
        late = v5_connect(b.port, unique("late-"))
        late.subscribe(("rexp/t", 1))
        late.expect_silence(0.7, "(an expired retained message was sent)")


def test_retained_message_keeps_its_properties():
    with broker() as b:
        pub = v5_connect(b.port, unique("pub-"))
        pub.publish("rprops/t", b'{"kept": 1}', 1, retain=True,
                    props=ALL_PROPS + [(MESSAGE_EXPIRY_INTERVAL, 100)])
        late = v5_connect(b.port, unique("late-"))
        late.subscribe(("rprops/#", 1))
        p = late.receive(what="the retained message")
        check_equal((p.resolved, p.payload, p.retain), ("rprops/t", b'{"kept": 1}', True),
                    "(topic, payload, retain)")
        _check_passthrough(p, "of a retained message")
        left = p.props.get(MESSAGE_EXPIRY_INTERVAL)
        check(left is not None and 98 <= left <= 100,
              "Message Expiry Interval of the retained message: %r" % (left,))
        pub.publish("rprops/t", b"", 1, retain=True)


# ---------------------------------------------------------------------------
# PUBACK / PUBREC reason codes

def test_no_matching_subscribers_gets_puback_0x10_without_properties():
    with broker() as b:
        pub = v5_connect(b.port, unique("pub-"))
        ack = pub.publish(unique("nobody/"), b"x", 1)
        check_equal(ack.reason, 0x10, "PUBACK reason with no subscriber (%r)" % ack)
        check(not ack.props, "properties on PUBACK 0x10: %r" % ack)
        sub = v5_connect(b.port, unique("sub-"))
        sub.subscribe(("somebody/+", 0))
        ack = pub.publish("somebody/here", b"x", 1)
        check_equal((ack.reason, list(ack.props)), (0, []), "PUBACK with a subscriber")
        # A shared subscription is a match too.
        sub.subscribe(("$share/g/shared/t", 0))
        ack = pub.publish("shared/t", b"x", 1)
        check_equal(ack.reason, 0, "PUBACK reason with a shared subscriber")


def test_no_matching_subscribers_gets_pubrec_0x10():
    mosquitto_differs("it sends PUBREC 0x00 when nobody subscribes")
    with broker() as b:
        pub = v5_connect(b.port, unique("pub-"))
        rec = pub.publish(unique("nobody/"), b"x", 2)
        check_equal(rec.reason, 0x10, "PUBREC reason with no subscriber (%r)" % rec)
        check(not rec.props, "properties on PUBREC 0x10: %r" % rec)
        pub.ping()


def test_payload_format_invalid_qos1_and_qos2_get_0x99():
    """Payload Format Indicator 1 with bytes that are not UTF-8: PUBACK/PUBREC 0x99, not
    delivered, the connection stays."""
    mosquitto_differs("it does not check payloads announced as UTF-8 (the spec allows both)")
    with broker() as b:
        w = _watch_all(b.port)
        pub = v5_connect(b.port, unique("pub-"))
        for qos, bad in ((1, b"\xff\xfe"), (2, b"ok \xc3\x28"), (1, b"\xed\xa0\x80")):
            ack = pub.publish("pfi/t", bad, qos, props=[(PAYLOAD_FORMAT_INDICATOR, 1)])
            check_equal(ack.reason, 0x99, "%s reason for non-UTF-8 payload %r (%r)"
                        % (ack.name, bad, ack))
        w.expect_silence(0.5, "(a payload that is not UTF-8 was delivered)")
        ack = pub.publish("pfi/t", "fine \u2713".encode(), 1,
                          props=[(PAYLOAD_FORMAT_INDICATOR, 1)])
        check_equal(ack.reason, 0, "PUBACK for valid UTF-8")
        check_equal(w.receive().payload, "fine \u2713".encode(), "valid UTF-8 payload")
        # Indicator 0: any bytes.
        ack = pub.publish("pfi/t", b"\xff", 1, props=[(PAYLOAD_FORMAT_INDICATOR, 0)])
        check_equal(ack.reason, 0, "PUBACK for bytes with Payload Format Indicator 0")
        check_equal(w.receive().payload, b"\xff", "binary payload")


def test_payload_format_invalid_qos0_gets_disconnect_0x99():
    mosquitto_differs("it does not check payloads announced as UTF-8 (the spec allows both)")
    with broker() as b:
        sub, pub, topic = healthy_pair(b.port)
        w = _watch_all(b.port)
        c = v5_connect(b.port, unique("pfi0-"))
        c.send(publish5("pfi0/t", b"\xc0\xaf", 0, props=[(PAYLOAD_FORMAT_INDICATOR, 1)]))
        c.expect_disconnect(0x99, what="QoS 0 payload that is not UTF-8")
        w.expect_silence(0.3, "(the invalid payload was delivered)")
        check_healthy(sub, pub, topic)


def test_topic_name_invalid_qos1_and_qos2_get_0x90_with_a_reason():
    """Topics aviary does not accept (bad characters, too long) get PUBACK/PUBREC 0x90
    with a Reason String; nothing is delivered; the connection stays open."""
    aviary_only("aviary's topic character set and max-topic-length")
    with broker("--utf8-topics", "0") as b:  # the cloud set: desktop takes any UTF-8
        w = _watch_all(b.port)
        pub = v5_connect(b.port, unique("pub-"))
        for qos, topic in ((1, "a b"), (2, "a@b"), (1, "caf\u00e9"), (2, "t/" + "x" * 127)):
            ack = pub.publish(topic, b"x", qos)
            check_equal(ack.reason, 0x90, "%s reason for topic %r (%r)" % (ack.name, topic, ack))
            check(ack.props.reason_string, "%s 0x90 without a Reason String" % ack.name)
        w.expect_silence(0.5, "(a PUBLISH with an invalid topic was delivered)")
        pub.ping()
        ack = pub.publish("ok/topic", b"x", 1)
        check_equal(ack.reason, 0, "PUBACK for a valid topic afterwards")


def test_topic_name_invalid_qos0_gets_disconnect_0x90():
    aviary_only("aviary's topic character set")
    with broker("--utf8-topics", "0") as b:  # the cloud set: desktop takes any UTF-8
        sub, pub, topic = healthy_pair(b.port)
        w = _watch_all(b.port)
        c = v5_connect(b.port, unique("bad0-"))
        c.send(publish5("a b", b"x", 0))
        c.expect_disconnect(0x90, what="QoS 0 PUBLISH to 'a b'")
        w.expect_silence(0.3, "(a PUBLISH with an invalid topic was delivered)")
        check_healthy(sub, pub, topic)


def test_pubrel_for_an_unknown_packet_id_gets_pubcomp_0x92():
    mosquitto_differs("it answers PUBCOMP 0x00")
    with broker() as b:
        c = v5_connect(b.port, unique("rel-"))
        c.send(pubrel5(4242))
        comp = c.expect5(PUBCOMP, pid=4242, what="PUBCOMP for an unknown packet id")
        check_equal(comp.reason, 0x92, "PUBCOMP reason for an unknown packet id (%r)" % comp)
        c.ping()


# ---------------------------------------------------------------------------
# Protocol errors and malformed properties in a client's PUBLISH

def test_MQTT_3_3_4_6_subscription_identifier_in_publish_is_protocol_error():
    mosquitto_deviates("it accepts a Subscription Identifier in a client's PUBLISH "
                       "(MQTT-3.3.4-6)")
    with broker() as b:
        sub, pub, topic = healthy_pair(b.port)
        w = _watch_all(b.port)
        for qos in (0, 1):
            c = v5_connect(b.port, unique("sid-"))
            c.send(publish5("sid/t", b"x", qos, pid=1, props=[(SUBSCRIPTION_IDENTIFIER, 5)]))
            c.expect_disconnect(0x82, what="Subscription Identifier in a QoS %d PUBLISH" % qos)
        w.expect_silence(0.3, "(the refused PUBLISH was delivered)")
        check_healthy(sub, pub, topic)


def test_duplicate_property_is_protocol_error():
    mosquitto_differs("it closes without DISCONNECT (4.13.1: SHOULD send one)")
    with broker() as b:
        sub, pub, topic = healthy_pair(b.port)
        w = _watch_all(b.port)
        for props in ([(MESSAGE_EXPIRY_INTERVAL, 5), (MESSAGE_EXPIRY_INTERVAL, 6)],
                      [(CONTENT_TYPE, "a"), (USER_PROPERTY, ("k", "v")), (CONTENT_TYPE, "b")],
                      [(PAYLOAD_FORMAT_INDICATOR, 0), (PAYLOAD_FORMAT_INDICATOR, 0)],
                      [(TOPIC_ALIAS, 1), (TOPIC_ALIAS, 1)]):
            c = v5_connect(b.port, unique("dup-"))
            c.send(publish5("dup/t", b"x", 1, pid=1, props=props))
            c.expect_disconnect(0x82, what="duplicate property %r" % (props,))
        w.expect_silence(0.3, "(a PUBLISH with a duplicate property was delivered)")
        check_healthy(sub, pub, topic)


def test_property_not_allowed_in_publish_is_malformed():
    """2.2.2.2: an identifier not valid for the packet type makes a Malformed Packet."""
    with broker() as b:
        sub, pub, topic = healthy_pair(b.port)
        w = _watch_all(b.port)
        for props, what in (([(SESSION_EXPIRY_INTERVAL, 5)], "Session Expiry Interval"),
                            ([(WILL_DELAY_INTERVAL, 5)], "Will Delay Interval"),
                            ([(0x21, 10)], "Receive Maximum")):
            c = v5_connect(b.port, unique("na-"))
            c.send(publish5("na/t", b"x", 1, pid=1, props=props))
            c.expect_disconnect(0x81, what=what + " in PUBLISH")
        w.expect_silence(0.3, "(a PUBLISH with a misplaced property was delivered)")
        check_healthy(sub, pub, topic)


# ---------------------------------------------------------------------------
# Real clients

def test_paho_v5_properties_reach_a_raw_subscriber_and_back():
    with broker() as b:
        raw = v5_connect(b.port, unique("raw-"))
        raw.subscribe(("paho5/#", 1))
        with Paho5Client(b.port, unique("p5-")) as p:
            check_equal(p.subscribe("paho5/back", 1), [1], "paho SUBACK")
            props = paho_props(PacketTypes.PUBLISH, PayloadFormatIndicator=1,
                               ContentType="application/json", ResponseTopic="reply/to/me",
                               CorrelationData=b"\x00\x01\xfe\xff", UserProperty=USER)
            p.publish("paho5/out", b"{}", 1, properties=props)
            m = raw.receive(what="paho's message")
            check_equal((m.resolved, m.payload), ("paho5/out", b"{}"), "(topic, payload)")
            _check_passthrough(m, "from paho")
            raw.publish("paho5/back", b"back", 1, props=ALL_PROPS)
            got = p.wait_messages(1)[0]
            check_equal(got.payload, b"back", "payload at paho")
            check_equal((got.prop("ContentType"), got.prop("ResponseTopic"),
                         bytes(got.prop("CorrelationData")), got.prop("PayloadFormatIndicator")),
                        ("application/json", "reply/to/me", b"\x00\x01\xfe\xff", 1),
                        "properties at paho")
            check_equal([tuple(kv) for kv in got.user], USER, "User Properties at paho")


def test_mosquitto_pub_properties_reach_mosquitto_sub():
    with broker() as b:
        sub = mosquitto_sub5(b.port, "-t", "mq5/#", "-C", "1", "-W", "10",
                             "-F", "%t|%p|%C|%R|%D|%F|%P|%E")
        with sub:
            mosquitto_pub5(b.port, "-t", "mq5/x", "-m", "hello", "-q", "1",
                           "-D", "publish", "content-type", "text/plain",
                           "-D", "publish", "response-topic", "mq5/reply",
                           "-D", "publish", "correlation-data", "c0rr",
                           "-D", "publish", "payload-format-indicator", "1",
                           "-D", "publish", "user-property", "k1", "v1",
                           "-D", "publish", "user-property", "k2", "v2",
                           "-D", "publish", "message-expiry-interval", "30")
            check_equal(sub.wait(10), 0, "mosquitto_sub exit status")
            lines = [l for l in sub.lines if l.startswith("mq5/")]
            check(len(lines) == 1, "mosquitto_sub output: %r" % sub.lines)
            f = lines[0].split("|")
            check_equal(f[:6], ["mq5/x", "hello", "text/plain", "mq5/reply", "c0rr", "1"],
                        "topic, payload, content type, response topic, correlation, format")
            check("k1:v1" in f[6] and "k2:v2" in f[6] and f[6].index("k1") < f[6].index("k2"),
                  "user properties %r" % f[6])
            check(f[7] in ("29", "30"), "message expiry interval %r" % f[7])


if __name__ == "__main__":
    run_tests(globals())
