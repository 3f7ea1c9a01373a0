#!/usr/bin/python3
"""MQTT 5 SUBSCRIBE / UNSUBSCRIBE: subscription options (No Local, Retain As Published,
Retain Handling), Subscription Identifiers, overlapping subscriptions, SUBACK and UNSUBACK
reason codes, shared subscriptions, Request Problem Information 0 and the client's
Maximum Packet Size for reason strings.

Set AVIARY_TEST_PEER=mosquitto to run the standard-behaviour tests against mosquitto.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    SUBACK, check, check_equal, run_tests, unique)
from mqtt5 import (  # noqa: E402
    REASON_STRING, SUBSCRIPTION_IDENTIFIER, USER_PROPERTY, Paho5Client, auth5, aviary_only, broker,
    check_healthy, healthy_pair, mosquitto_deviates, mosquitto_differs, sub_options,
    subscribe5, v5_connect)


def _sids(p):
    return sorted(p.props.all(SUBSCRIPTION_IDENTIFIER))


# ---------------------------------------------------------------------------
# Subscription options

def test_MQTT_3_8_3_3_no_local():
    with broker() as b:
        me = v5_connect(b.port, unique("me-"))
        check_equal(me.subscribe(("nl/t", sub_options(1, no_local=True))).codes, [1], "SUBACK")
        other = v5_connect(b.port, unique("other-"))
        other.subscribe(("nl/t", 1))
        me.publish("nl/t", b"mine", 1)
        check_equal(other.receive().payload, b"mine", "another client's copy of my message")
        me.expect_silence(0.5, "(No Local: my own message came back)")
        other.publish("nl/t", b"theirs", 1)
        check_equal(me.receive().payload, b"theirs", "another client's message through "
                    "a No Local subscription")


def test_MQTT_3_8_4_3_resubscribe_replaces_the_options():
    mosquitto_deviates("a re-subscribe keeps the old No Local option (MQTT-3.8.4-3)")
    with broker() as b:
        me = v5_connect(b.port, unique("me-"))
        me.subscribe(("rs/t", sub_options(1, no_local=True)))
        me.publish("rs/t", b"hidden", 1)
        me.expect_silence(0.5, "(No Local: my own message came back)")
        check_equal(me.subscribe(("rs/t", sub_options(2))).codes, [2], "SUBACK")
        me.publish("rs/t", b"echo", 1)
        p = me.receive(what="own message after re-subscribing without No Local")
        check_equal((p.payload, p.qos), (b"echo", 1), "(payload, QoS)")
        me.expect_silence(0.5, "(two subscriptions after a re-subscribe)")


def test_MQTT_3_3_1_12_13_retain_as_published():
    with broker() as b:
        rap = v5_connect(b.port, unique("rap-"))
        rap.subscribe(("rap/t", sub_options(1, retain_as_published=True)))
        plain = v5_connect(b.port, unique("plain-"))
        plain.subscribe(("rap/t", sub_options(1)))
        pub = v5_connect(b.port, unique("pub-"))
        pub.publish("rap/t", b"kept", 1, retain=True)
        pub.publish("rap/t", b"live", 1)
        got = [(p.payload, p.retain) for p in rap.receive_all(2)]
        check_equal(got, [(b"kept", True), (b"live", False)],
                    "(payload, RETAIN) with Retain As Published")
        got = [(p.payload, p.retain) for p in plain.receive_all(2)]
        check_equal(got, [(b"kept", False), (b"live", False)],
                    "(payload, RETAIN) of live deliveries without Retain As Published")
        # Retained messages sent because of a subscribe carry RETAIN 1 either way.
        late = v5_connect(b.port, unique("late-"))
        late.subscribe(("rap/t", sub_options(1)))
        p = late.receive(what="the retained message on subscribe")
        check_equal((p.payload, p.retain), (b"kept", True), "retained message on subscribe")
        pub.publish("rap/t", b"", 1, retain=True)


def test_MQTT_3_3_1_9_10_11_retain_handling():
    with broker() as b:
        pub = v5_connect(b.port, unique("pub-"))
        pub.publish("rh/t", b"retained", 1, retain=True)
        c = v5_connect(b.port, unique("rh-"))
        c.subscribe(("rh/t", sub_options(1, retain_handling=0)))
        check_equal(c.receive().payload, b"retained", "Retain Handling 0, new subscription")
        c.subscribe(("rh/t", sub_options(1, retain_handling=0)))
        check_equal(c.receive().payload, b"retained", "Retain Handling 0, existing "
                    "subscription")
        c.subscribe(("rh/t", sub_options(1, retain_handling=1)))
        c.expect_silence(0.5, "(Retain Handling 1 sent retained for an existing "
                         "subscription)")
        c.subscribe(("rh/+", sub_options(1, retain_handling=1)))
        check_equal(c.receive().payload, b"retained", "Retain Handling 1, new subscription")
        c.subscribe(("rh/#", sub_options(1, retain_handling=2)))
        c.expect_silence(0.5, "(Retain Handling 2 sent a retained message)")
        # The subscriptions work for live messages all the same.
        pub.publish("rh/t", b"live", 0)
        got = sorted(p.payload for p in c.receive_all(1))
        check_equal(got, [b"live"], "live message")
        pub.publish("rh/t", b"", 1, retain=True)


def test_subscription_options_through_paho():
    with broker() as b:
        pub = v5_connect(b.port, unique("pub-"))
        pub.publish("po/t", b"old", 1, retain=True)
        with Paho5Client(b.port, unique("paho-")) as p:
            check_equal(p.subscribe("po/t", 1, no_local=True, retain_as_published=True,
                                    retain_handling=2), [1], "paho SUBACK")
            p.publish("po/t", b"self", 1)
            pub.publish("po/t", b"other", 1, retain=True)
            msgs = p.wait_messages(1)
            check_equal([(m.payload, m.retain) for m in msgs], [(b"other", True)],
                        "paho's messages (Retain Handling 2, No Local, Retain As Published)")
        pub.publish("po/t", b"", 1, retain=True)


# ---------------------------------------------------------------------------
# Subscription Identifiers

def test_subscription_identifier_is_sent_with_matching_deliveries():
    with broker() as b:
        c = v5_connect(b.port, unique("sid-"))
        check_equal(c.subscribe([("sa/#", 1), ("sb/+", 1)], sub_id=7).codes, [1, 1], "SUBACK")
        c.subscribe(("sc/x", 1))
        c.subscribe(("sd/x", 1), sub_id=268435455)
        pub = v5_connect(b.port, unique("pub-"))
        for topic, want in (("sa/1", [7]), ("sb/2", [7]), ("sc/x", []), ("sd/x", [268435455])):
            pub.publish(topic, b"x", 1)
            p = c.receive(what="message on %s" % topic)
            check_equal((p.resolved, _sids(p)), (topic, want), "Subscription Identifiers")
        # A re-subscribe replaces the identifier; without one it is gone.
        c.subscribe(("sa/#", 1), sub_id=9)
        c.subscribe(("sb/+", 1))
        for topic, want in (("sa/1", [9]), ("sb/2", [])):
            pub.publish(topic, b"x", 1)
            p = c.receive(what="message on %s after re-subscribing" % topic)
            check_equal((p.resolved, _sids(p)), (topic, want),
                        "Subscription Identifiers after re-subscribing")


def test_subscription_identifier_on_retained_messages_and_in_sessions():
    with broker() as b:
        pub = v5_connect(b.port, unique("pub-"))
        pub.publish("sr/t", b"r", 1, retain=True)
        cid = unique("sr-")
        c = v5_connect(b.port, cid, clean_start=False, session_expiry=30)
        c.subscribe(("sr/t", 1), sub_id=42)
        p = c.receive(what="the retained message")
        check_equal(_sids(p), [42], "Subscription Identifier on a retained message")
        c.disconnect()
        pub.publish("sr/t", b"queued", 1)
        back = v5_connect(b.port, cid, clean_start=False, session_expiry=30)
        p = back.receive(what="the queued message")
        check_equal((p.payload, _sids(p)), (b"queued", [42]),
                    "Subscription Identifier on a message queued for the session")
        back.disconnect(session_expiry=0)
        pub.publish("sr/t", b"", 1, retain=True)


def test_MQTT_3_3_4_2_4_overlapping_subscriptions_one_copy_with_every_identifier():
    mosquitto_differs("it sends one copy per matching subscription (MQTT-3.3.4-5)")
    with broker() as b:
        c = v5_connect(b.port, unique("ov-"))
        c.subscribe(("ov/#", 1), sub_id=1)
        c.subscribe(("ov/+", 2), sub_id=2)
        c.subscribe(("ov/x", 0))
        pub = v5_connect(b.port, unique("pub-"))
        pub.publish("ov/x", b"x", 2)
        p = c.receive()
        check_equal((p.qos, _sids(p)), (2, [1, 2]), "(QoS, Subscription Identifiers) of the "
                    "one copy")
        c.expect_silence(0.7, "(a second copy for overlapping subscriptions)")


def test_subscription_identifier_0_is_protocol_error():
    """3.8.2.1.2: "It is a Protocol Error if the Subscription Identifier has a value of 0"."""
    mosquitto_deviates("it answers DISCONNECT 0x81 Malformed Packet, not 0x82")
    with broker() as b:
        sub, pub, topic = healthy_pair(b.port)
        c = v5_connect(b.port, unique("sid0-"))
        c.send(subscribe5(1, [("z/t", 1)], sub_id=0))
        c.expect_disconnect(0x82, what="Subscription Identifier 0")
        check_healthy(sub, pub, topic)


# ---------------------------------------------------------------------------
# SUBACK / UNSUBACK reason codes

def test_suback_grants_the_requested_qos_in_order():
    with broker() as b:
        c = v5_connect(b.port, unique("g-"))
        ack = c.subscribe([("g/2", 2), ("g/0", 0), ("g/+/1", 1), ("g/#", 2)])
        check_equal(ack.codes, [2, 0, 1, 2], "SUBACK reason codes (MQTT-3.9.3-1)")


def test_suback_0x8f_for_misplaced_wildcards_and_bad_share_names():
    """0x8F for each invalid filter; the valid filters of the same SUBSCRIBE granted."""
    mosquitto_differs("it treats an invalid filter as a Malformed Packet (DISCONNECT 0x81)")
    with broker() as b:
        c = v5_connect(b.port, unique("inv-"))
        bad = ["a/#/b", "a+/b", "#a", "$share//x", "$share/a+b/x", "$share/a#/x", "$share/g",
               "$share/g/"]
        filters = [("ok/1", 1)] + [(f, 1) for f in bad] + [("ok/2", 2)]
        ack = c.subscribe(filters)
        check_equal(ack.codes, [1] + [0x8F] * len(bad) + [2],
                    "SUBACK for a good filter, %d invalid ones, a good filter" % len(bad))
        c.ping()
        pub = v5_connect(b.port, unique("pub-"))
        pub.publish("ok/2", b"still", 1)
        check_equal(c.receive().payload, b"still", "delivery through a granted filter")


def test_suback_0x8f_for_filters_aviary_refuses_with_one_reason_string():
    """Bad characters and more than max-topic-length 128: 0x8F; one Reason String for the
    SUBACK, naming the first refusal."""
    aviary_only("aviary's topic character set and max-topic-length, reason strings")
    with broker("--utf8-topics", "0") as b:  # the cloud set: desktop takes any UTF-8
        c = v5_connect(b.port, unique("inv-"))
        long_filter = "x/" + "y" * 127
        ack = c.subscribe([("ok/1", 1), ("a@b", 1), ("x/" + "y" * 126, 0), (long_filter, 2)])
        check_equal(ack.codes, [1, 0x8F, 0, 0x8F], "SUBACK for 'ok/1', 'a@b', a 128-character "
                    "filter and a 129-character one")
        check_equal(len(ack.props.all(REASON_STRING)), 1, "Reason Strings in %r" % ack)
        check("a@b" in ack.props.reason_string,
              "the Reason String %r does not name the first refused filter 'a@b'"
              % ack.props.reason_string)
        c.ping()


def test_unsuback_success_and_no_subscription_existed():
    with broker() as b:
        c = v5_connect(b.port, unique("un-"))
        c.subscribe([("un/a", 1), ("$share/g/un/b", 1)])
        ack = c.unsubscribe(["un/a", "un/never", "$share/g/un/b", "un/a"])
        check_equal(ack.codes, [0x00, 0x11, 0x00, 0x11], "UNSUBACK reason codes")
        pub = v5_connect(b.port, unique("pub-"))
        pub.publish("un/a", b"x", 1)
        pub.publish("un/b", b"x", 1)
        c.expect_silence(0.5, "(delivery after unsubscribing)")


def test_unsuback_0x8f_for_an_invalid_filter():
    mosquitto_differs("it treats an invalid filter as a Malformed Packet (DISCONNECT 0x81)")
    with broker() as b:
        c = v5_connect(b.port, unique("unbad-"))
        c.subscribe(("unbad/x", 0))
        ack = c.unsubscribe(["a/#/b", "unbad/x", "$share//y"])
        check_equal(ack.codes, [0x8F, 0x00, 0x8F], "UNSUBACK reason codes")
        c.ping()


# ---------------------------------------------------------------------------
# Shared subscriptions

def test_shared_subscription_round_robin_among_connected_members():
    with broker() as b:
        members = [v5_connect(b.port, unique("m%d-" % i)) for i in range(3)]
        for m in members:
            check_equal(m.subscribe(("$share/grp/rr/#", 1)).codes, [1], "shared SUBACK")
        plain = v5_connect(b.port, unique("plain-"))
        plain.subscribe(("rr/#", 1))
        pub = v5_connect(b.port, unique("pub-"))
        for i in range(9):
            pub.publish("rr/t", b"%d" % i, 1)
        check_equal([p.payload for p in plain.receive_all(9)], [b"%d" % i for i in range(9)],
                    "non-shared subscriber: every message")
        got = [[int(p.payload) for p in m.receive_all(3)] for m in members]
        for m in members:
            m.expect_silence(0.3, "(a member got more than its turn)")
        check_equal(sorted(sum(got, [])), list(range(9)), "each message to exactly one member")
        for g in got:
            check(g[1] - g[0] == 3 and g[2] - g[1] == 3,
                  "round robin: each member gets every third message, got %r" % got)


def test_shared_subscribe_gets_no_retained_messages():
    """4.8.2: "No Retained Messages are sent to the Session when it first subscribes"."""
    mosquitto_deviates("it sends retained messages on a shared subscribe (4.8.2)")
    with broker() as b:
        pub = v5_connect(b.port, unique("pub-"))
        pub.publish("sret/t", b"retained", 1, retain=True)
        s = v5_connect(b.port, unique("shared-"))
        s.subscribe(("$share/g/sret/t", sub_options(1, retain_handling=0)))
        s.expect_silence(0.7, "(a retained message on a shared subscribe)")
        s.subscribe(("sret/t", 1))
        check_equal(s.receive().payload, b"retained", "retained message on the non-shared "
                    "subscribe")
        pub.publish("sret/t", b"", 1, retain=True)


def test_MQTT_3_8_3_4_no_local_on_shared_is_protocol_error():
    mosquitto_deviates("it grants No Local on a shared subscription (MQTT-3.8.3-4)")
    with broker() as b:
        sub, pub, topic = healthy_pair(b.port)
        c = v5_connect(b.port, unique("nls-"))
        c.send(subscribe5(1, [("ok/t", 1), ("$share/g/nls/t", sub_options(1, no_local=True))]))
        got = c.packets_until_closed(5, "the close after No Local on $share")
        check(not any(p.type == SUBACK for p in got), "a SUBACK for No Local on $share: %r"
              % got)
        check(got and got[-1].type == 14 and got[-1].reason == 0x82,
              "expected DISCONNECT 0x82, got %r" % got)
        check_healthy(sub, pub, topic)


def test_shared_offline_member_gets_messages_only_when_none_is_connected():
    mosquitto_differs("it hands messages in turn to offline members with sessions too")
    with broker() as b:
        cid = unique("offmem-")
        off = v5_connect(b.port, cid, clean_start=False, session_expiry=60)
        off.subscribe(("$share/grp/off/t", 1))
        off.disconnect_and_wait()
        on = v5_connect(b.port, unique("onmem-"))
        on.subscribe(("$share/grp/off/t", 1))
        pub = v5_connect(b.port, unique("pub-"))
        for i in range(4):
            pub.publish("off/t", b"on%d" % i, 1)
        check_equal([p.payload for p in on.receive_all(4)], [b"on%d" % i for i in range(4)],
                    "every message to the only connected member")
        on.disconnect_and_wait()
        for i in range(2):
            pub.publish("off/t", b"off%d" % i, 1)
        back = v5_connect(b.port, cid, clean_start=False, session_expiry=60)
        check_equal([p.payload for p in back.receive_all(2)], [b"off0", b"off1"],
                    "messages queued for the offline member while no member was connected")
        back.expect_silence(0.5, "(messages sent to the connected member were queued too)")
        back.disconnect(session_expiry=0)


# ---------------------------------------------------------------------------
# Request Problem Information, Maximum Packet Size and reason strings

def _suback_with_refusal(c):
    return c.subscribe([("rpi/ok", 0), ("a/#/b", 0)])


def test_MQTT_3_1_2_29_request_problem_information_0_keeps_reason_strings_off_acks():
    aviary_only("reason strings on SUBACK and PUBACK")
    with broker("--utf8-topics", "0") as b:  # the cloud set: desktop takes any UTF-8
        normal = v5_connect(b.port, unique("rpi1-"))
        ack = _suback_with_refusal(normal)
        check(ack.props.reason_string, "no Reason String on a SUBACK with a refusal: %r" % ack)
        quiet = v5_connect(b.port, unique("rpi0-"), request_problem_info=0)
        ack = _suback_with_refusal(quiet)
        check_equal(ack.codes, [0, 0x8F], "SUBACK codes")
        check(not ack.props.has(REASON_STRING) and not ack.props.has(USER_PROPERTY),
              "Reason String / User Property on SUBACK with Request Problem Information 0: %r"
              % ack)
        pack = quiet.publish("a b", b"x", 1)
        check_equal(pack.reason, 0x90, "PUBACK reason for an invalid topic")
        check(not pack.props, "properties on PUBACK with Request Problem Information 0: %r"
              % pack)
        # CONNACK and DISCONNECT keep theirs.
        c = v5_connect(b.port, "x" * 65, request_problem_info=0, expect_reason=0x85)
        check(c.connack.props.reason_string, "CONNACK 0x85 lost its Reason String")
        d = v5_connect(b.port, unique("rpi0d-"), request_problem_info=0)
        d.send(auth5())
        d.expect_disconnect(0x82, what="AUTH with Request Problem Information 0")


def test_MQTT_3_9_2_1_reason_string_left_out_beyond_the_clients_maximum_packet_size():
    aviary_only("reason strings on SUBACK and PUBACK")
    with broker("--utf8-topics", "0") as b:  # the cloud set: desktop takes any UTF-8
        big = v5_connect(b.port, unique("mpsbig-"))
        full = _suback_with_refusal(big)
        check(full.props.reason_string, "no Reason String on a SUBACK with a refusal: %r" % full)
        pfull = big.publish("a b", b"x", 1)
        check(pfull.props.reason_string, "no Reason String on PUBACK 0x90: %r" % pfull)
        limit = min(full.size, pfull.size) - 1
        check(limit >= big.connack.size, "the reason strings are too short for this test: "
              "SUBACK %d, PUBACK %d, CONNACK %d bytes" % (full.size, pfull.size,
                                                          big.connack.size))
        # V5Client fails the test on any packet larger than the limit it announced.
        small = v5_connect(b.port, unique("mpssm-"), maximum_packet_size=limit)
        ack = _suback_with_refusal(small)
        check_equal(ack.codes, [0, 0x8F], "SUBACK codes")
        check(not ack.props.has(REASON_STRING), "Reason String kept in a SUBACK beyond "
              "Maximum Packet Size %d: %r" % (limit, ack))
        pack = small.publish("a b", b"x", 1)
        check_equal((pack.reason, list(pack.props)), (0x90, []), "PUBACK for an invalid topic "
                    "with Maximum Packet Size %d" % limit)


if __name__ == "__main__":
    run_tests(globals())
