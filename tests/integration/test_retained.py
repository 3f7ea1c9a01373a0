#!/usr/bin/python3
"""Retained messages: set, replace, clear, delivery on subscribe, retain flag."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    Broker, check, check_equal, mosquitto_pub, mosquitto_sub, raw_connect, run_tests, unique)


def test_retained_is_sent_on_subscribe_with_retain_flag():
    with Broker() as b:
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("ret/a", b"kept", qos=1, retain=True)
        sub, _ = raw_connect(b.port, unique("sub"))
        check_equal(sub.subscribe([("ret/a", 1)]), [1], "SUBACK")
        p = sub.receive(what="the retained message after SUBSCRIBE")
        check_equal((p.topic, p.payload, p.retain, p.qos), ("ret/a", b"kept", True, 1),
                    "retained message (topic, payload, retain flag, qos)")
        sub.expect_silence(0.5, "after the retained message")


def test_retained_qos_is_minimum_of_stored_and_granted():
    with Broker() as b:
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("retq/two", b"2", qos=2, retain=True)
        pub.publish("retq/zero", b"0", qos=0, retain=True)
        pub.ping()  # the QoS 0 publish has been processed
        sub, _ = raw_connect(b.port, unique("sub"))
        sub.subscribe([("retq/two", 1)])
        p = sub.receive()
        check_equal((p.payload, p.qos, p.retain), (b"2", 1, True),
                    "retained QoS 2 message to a QoS 1 subscription")
        sub.subscribe([("retq/zero", 2)])
        p = sub.receive()
        check_equal((p.payload, p.qos, p.retain), (b"0", 0, True),
                    "retained QoS 0 message to a QoS 2 subscription")


def test_live_delivery_has_retain_flag_0():
    """MQTT-3.3.1-9: a message sent to an existing subscription has RETAIN 0."""
    with Broker() as b:
        sub, _ = raw_connect(b.port, unique("sub"))
        sub.subscribe([("live/t", 1)])
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("live/t", b"now", qos=1, retain=True)
        p = sub.receive()
        check_equal((p.payload, p.retain), (b"now", False), "live delivery (payload, retain)")
        # ...but it was stored: a new subscription gets it with RETAIN 1.
        late, _ = raw_connect(b.port, unique("late"))
        late.subscribe([("live/t", 1)])
        p = late.receive()
        check_equal((p.payload, p.retain), (b"now", True), "later subscriber (payload, retain)")


def test_retained_is_replaced():
    with Broker() as b:
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("rep/t", b"old", qos=1, retain=True)
        pub.publish("rep/t", b"new", qos=1, retain=True)
        sub, _ = raw_connect(b.port, unique("sub"))
        sub.subscribe([("rep/t", 1)])
        check_equal(sub.receive().payload, b"new", "retained payload after replacement")
        sub.expect_silence(0.7, "(the replaced retained message was also sent)")


def test_empty_retained_payload_clears():
    with Broker() as b:
        watcher, _ = raw_connect(b.port, unique("watch"))
        watcher.subscribe([("clr/t", 1)])
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("clr/t", b"something", qos=1, retain=True)
        check_equal(watcher.receive().payload, b"something", "live delivery")
        pub.publish("clr/t", b"", qos=1, retain=True)
        # MQTT-3.3.1-10/11: the empty message is delivered as normal to existing subscribers.
        p = watcher.receive(what="the empty retained message, delivered live")
        check_equal((p.payload, p.retain), (b"", False), "live delivery of the clearing message")
        sub, _ = raw_connect(b.port, unique("sub"))
        sub.subscribe([("clr/t", 1), ("clr/#", 1)])
        sub.expect_silence(1.0, "(a cleared retained message was sent on subscribe)")


def test_retained_matched_by_wildcards():
    with Broker() as b:
        pub, _ = raw_connect(b.port, unique("pub"))
        topics = ["w/a/x", "w/b/x", "w/b/y", "w/c", "other/x"]
        for t in topics:
            pub.publish(t, t.encode(), qos=1, retain=True)
        cases = [("w/+/x", {"w/a/x", "w/b/x"}), ("w/#", {"w/a/x", "w/b/x", "w/b/y", "w/c"}),
                 ("+/x", {"other/x"}), ("#", set(topics)), ("w/c/#", {"w/c"})]
        for flt, want in cases:
            sub, _ = raw_connect(b.port, unique("sub"))
            sub.subscribe([(flt, 1)])
            got = {p.topic for p in sub.receive_all(len(want))}
            check_equal(got, want, "retained topics matching %r" % flt)
            sub.expect_silence(0.5, "(more retained messages than expected for %r)" % flt)
            sub.close()


def test_retained_resent_on_resubscribe():
    """MQTT-3.8.4-3: re-subscribing replaces the subscription and re-sends retained messages."""
    with Broker() as b:
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("again/t", b"r", qos=1, retain=True)
        sub, _ = raw_connect(b.port, unique("sub"))
        sub.subscribe([("again/t", 1)])
        check_equal(sub.receive().payload, b"r", "first retained delivery")
        sub.subscribe([("again/t", 1)])
        p = sub.receive(what="the retained message again after the second SUBSCRIBE")
        check_equal((p.payload, p.retain), (b"r", True), "second retained delivery")


def test_leading_slash_is_the_same_retained_topic():
    """SPEC 3: /a/b and a/b are one topic; the topic sent follows the subscriber's filter."""
    with Broker() as b:
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("/rs/a", b"one", qos=1, retain=True)
        pub.publish("rs/a", b"two", qos=1, retain=True)  # replaces /rs/a
        plain, _ = raw_connect(b.port, unique("plain"))
        plain.subscribe([("rs/a", 1)])
        p = plain.receive()
        check_equal((p.topic, p.payload), ("rs/a", b"two"), "retained via filter rs/a")
        plain.expect_silence(0.7, "(/rs/a and rs/a kept as two retained messages)")
        slash, _ = raw_connect(b.port, unique("slash"))
        slash.subscribe([("/rs/#", 1)])
        p = slash.receive()
        check_equal((p.topic, p.payload), ("/rs/a", b"two"), "retained via filter /rs/#")
        slash.expect_silence(0.7, "after the retained message")


def test_retained_with_mosquitto_clients():
    with Broker() as b:
        mosquitto_pub(b.port, "-r", "-q", "1", "-t", "mr/t", "-m", "stay")
        sub = mosquitto_sub(b.port, "-v", "-C", "1", "-W", "10", "-t", "mr/#")
        with sub:
            sub.wait(10)
            check("mr/t stay" in sub.lines, "mosquitto_sub output %r lacks 'mr/t stay'"
                  % sub.lines)
            check(any("r1" in l and "'mr/t'" in l for l in sub.lines),
                  "mosquitto_sub -d did not report a retained PUBLISH (r1): %r" % sub.lines)
        # mosquitto_pub -r -n clears it.
        mosquitto_pub(b.port, "-r", "-n", "-t", "mr/t")
        raw, _ = raw_connect(b.port, unique("raw"))
        raw.subscribe([("mr/#", 0)])
        raw.expect_silence(0.7, "(retained message still there after mosquitto_pub -r -n)")


if __name__ == "__main__":
    run_tests(globals())
