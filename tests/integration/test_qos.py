#!/usr/bin/python3
"""QoS 0, 1 and 2 in both directions, granted and delivered QoS, in-flight window."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, Broker, PahoClient, Publish, check, check_equal,
    mosquitto_pub, mosquitto_sub, publish_packet, puback_packet, pubcomp_packet, pubrec_packet,
    pubrel_packet, raw_connect, run_tests, unique)


def test_roundtrip_every_qos_v311_and_v31():
    with Broker() as b:
        for proto in ("3.1.1", "3.1"):
            with PahoClient(b.port, unique("c"), protocol=proto) as c:
                for qos in (0, 1, 2):
                    topic = unique("rt/")
                    check_equal(c.subscribe(topic, qos), [qos],
                                "MQTT %s granted QoS for a QoS %d request" % (proto, qos))
                    payload = ("hello %s q%d" % (proto, qos)).encode()
                    c.publish(topic, payload, qos)
                    m = c.wait_messages(1, topic=topic)[0]
                    check_equal((m.payload, m.qos, m.retain), (payload, qos, False),
                                "MQTT %s QoS %d message (payload, qos, retain)" % (proto, qos))


def test_qos1_puback_both_directions():
    with Broker() as b:
        sub, _ = raw_connect(b.port, unique("sub"))
        check_equal(sub.subscribe([("q1/t", 1)]), [1], "SUBACK")
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.send(publish_packet("q1/t", b"one", qos=1, pid=7))
        ack = pub.expect(PUBACK, pid=7, what="PUBACK for packet id 7")
        check_equal((ack.flags, len(ack.body)), (0, 2), "PUBACK (flags, length)")
        p = sub.receive(ack=False)
        check_equal((p.topic, p.payload, p.qos, p.dup, p.retain), ("q1/t", b"one", 1, False,
                    False), "delivered PUBLISH (topic, payload, qos, dup, retain)")
        check(p.pid != 0, "a QoS 1 PUBLISH to the subscriber must have a non-zero packet id")
        sub.send(puback_packet(p.pid))
        sub.expect_silence(0.7, "after PUBACK (no re-delivery on a live connection)")
        sub.ping()
        pub.ping()


def test_qos2_handshake_both_directions():
    with Broker() as b:
        sub, _ = raw_connect(b.port, unique("sub"))
        check_equal(sub.subscribe([("q2/t", 2)]), [2], "SUBACK")
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.send(publish_packet("q2/t", b"two", qos=2, pid=9))
        rec = pub.expect(PUBREC, pid=9, what="PUBREC for packet id 9")
        check_equal(rec.flags, 0, "PUBREC flags")
        pub.send(pubrel_packet(9))
        comp = pub.expect(PUBCOMP, pid=9, what="PUBCOMP for packet id 9")
        check_equal(comp.flags, 0, "PUBCOMP flags")

        p = sub.receive(ack=False)
        check_equal((p.payload, p.qos, p.dup), (b"two", 2, False), "delivered (payload, qos, dup)")
        check(p.pid != 0, "a QoS 2 PUBLISH must have a non-zero packet id")
        sub.send(pubrec_packet(p.pid))
        rel = sub.expect(PUBREL, pid=p.pid, what="PUBREL after our PUBREC")
        check_equal(rel.flags, 2, "PUBREL fixed-header flags (MQTT-3.6.1-1)")
        sub.send(pubcomp_packet(p.pid))
        sub.expect_silence(0.7, "after PUBCOMP")
        sub.ping()


def test_qos2_resent_publish_is_delivered_once():
    """MQTT-4.3.3-2: a PUBLISH re-sent with the same packet id before PUBREL is one message."""
    with Broker() as b:
        sub, _ = raw_connect(b.port, unique("sub"))
        sub.subscribe([("once/t", 2)])
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.send(publish_packet("once/t", b"first", qos=2, pid=5))
        pub.expect(PUBREC, pid=5)
        pub.send(publish_packet("once/t", b"first", qos=2, pid=5, dup=True))
        pub.expect(PUBREC, pid=5, what="PUBREC for the re-sent PUBLISH")
        pub.send(pubrel_packet(5))
        pub.expect(PUBCOMP, pid=5)
        first = sub.receive()
        check_equal(first.payload, b"first", "payload")
        sub.expect_silence(1.0, "(the re-sent QoS 2 PUBLISH was delivered twice)")
        # After PUBCOMP the packet id is free again: a new PUBLISH with it is a new message.
        pub.publish("once/t", b"second", qos=2, pid=5)
        check_equal(sub.receive().payload, b"second", "payload of the next message with id 5")
        sub.expect_silence(0.5, "after the second message")


def test_pubrel_for_unknown_packet_id_gets_pubcomp():
    """MQTT-4.3.3: the receiver answers every PUBREL with a PUBCOMP of the same id."""
    with Broker() as b:
        c, _ = raw_connect(b.port, unique("c"))
        c.send(pubrel_packet(4242))
        c.expect(PUBCOMP, pid=4242, what="PUBCOMP for a PUBREL with an unknown packet id")
        c.ping()


def test_delivered_qos_is_minimum_of_publish_and_granted():
    with Broker() as b:
        subs = {}
        for sq in (0, 1, 2):
            s, _ = raw_connect(b.port, unique("sub%d-" % sq))
            check_equal(s.subscribe([("min/%d" % sq, sq)]), [sq], "granted QoS")
            subs[sq] = s
        pub, _ = raw_connect(b.port, unique("pub"))
        for sq in (0, 1, 2):
            for pq in (0, 1, 2):
                payload = b"s%dp%d" % (sq, pq)
                pub.publish("min/%d" % sq, payload, qos=pq)
                p = subs[sq].receive(what="subscription QoS %d, publish QoS %d" % (sq, pq))
                check_equal((p.payload, p.qos), (payload, min(sq, pq)),
                            "(payload, delivered QoS) for subscription QoS %d, publish QoS %d"
                            % (sq, pq))
        for s in subs.values():
            s.expect_silence(0.3, "after the QoS matrix")


def test_suback_grants_requested_qos():
    with Broker() as b:
        for version in (4, 3):
            c, _ = raw_connect(b.port, unique("c"), version=version)
            codes = c.subscribe([("g/0", 0), ("g/1", 1), ("g/2", 2), ("g/+/x", 1)])
            check_equal(codes, [0, 1, 2, 1], "SUBACK return codes (protocol level %d)" % version)


def test_overlapping_subscriptions_deliver_one_copy_at_max_qos():
    with Broker() as b:
        sub, _ = raw_connect(b.port, unique("sub"))
        codes = sub.subscribe([("ov/+", 0), ("ov/#", 2), ("ov/x", 1)])
        check_equal(codes, [0, 2, 1], "SUBACK for three overlapping filters")
        pub, _ = raw_connect(b.port, unique("pub"))
        for pq, expect_q in ((2, 2), (1, 1), (0, 0)):
            pub.publish("ov/x", b"q%d" % pq, qos=pq)
            p = sub.receive(what="message published at QoS %d" % pq)
            check_equal((p.payload, p.qos), (b"q%d" % pq, expect_q),
                        "(payload, QoS) for a QoS %d publish matching filters at QoS 0, 1, 2"
                        % pq)
            sub.expect_silence(0.7, "(a second copy for overlapping subscriptions)")
        # Only ov/+ and ov/# match ov/y: one copy, at QoS 2.
        pub.publish("ov/y", b"y", qos=2)
        p = sub.receive()
        check_equal((p.topic, p.qos), ("ov/y", 2), "(topic, QoS) matching ov/+ and ov/#")
        sub.expect_silence(0.7, "(a second copy for ov/y)")


def _burst(pub, topic, qos, count, first_pid=1):
    """Send `count` PUBLISH packets in one write, then complete their handshakes."""
    data = b"".join(publish_packet(topic, b"%d" % i, qos=qos, pid=first_pid + i if qos else None)
                    for i in range(count))
    pub.send(data)
    for i in range(count):
        pid = first_pid + i
        if qos == 1:
            pub.expect(PUBACK, pid=pid)
        elif qos == 2:
            pub.expect(PUBREC, pid=pid)
            pub.send(pubrel_packet(pid))
            pub.expect(PUBCOMP, pid=pid)


def test_order_is_preserved_for_each_qos():
    """MQTT 4.6 / SPEC 3: one client's messages arrive in the order published."""
    with Broker() as b:
        sub, _ = raw_connect(b.port, unique("sub"))
        sub.subscribe([("order/#", 2)])
        pub, _ = raw_connect(b.port, unique("pub"))
        # QoS 0 may be dropped beyond a per-connection bound (DESIGN), so keep that burst small.
        for qos, count in ((0, 15), (1, 100), (2, 100)):
            _burst(pub, "order/q%d" % qos, qos, count)
            got = sub.receive_all(count, timeout=10)
            check_equal([p.payload for p in got], [b"%d" % i for i in range(count)],
                        "QoS %d payloads in the order published" % qos)
            check(all(p.qos == qos for p in got), "every message delivered at QoS %d" % qos)


def test_subscribers_observe_one_order():
    """SPEC 3: with several publishers, every subscriber sees the same order."""
    with Broker() as b:
        subs = []
        for _ in range(2):
            s, _ = raw_connect(b.port, unique("sub"))
            s.subscribe([("one/#", 1)])
            subs.append(s)
        pubs = [raw_connect(b.port, unique("pub"))[0] for _ in range(3)]
        for i in range(40):
            for k, p in enumerate(pubs):
                p.send(publish_packet("one/p%d" % k, b"%d-%d" % (k, i), qos=1, pid=i + 1))
        for p in pubs:
            for i in range(40):
                p.expect(PUBACK, pid=i + 1)
        seen = [[(m.topic, m.payload) for m in s.receive_all(120, timeout=10)] for s in subs]
        check_equal(seen[1], seen[0], "order seen by the second subscriber vs the first")
        for k in range(3):
            mine = [pl for t, pl in seen[0] if t == "one/p%d" % k]
            check_equal(mine, [b"%d-%d" % (k, i) for i in range(40)],
                        "publisher %d's messages in its order" % k)


def test_unsubscribe_stops_delivery():
    with Broker() as b:
        sub, _ = raw_connect(b.port, unique("sub"))
        sub.subscribe([("un/a", 1), ("un/b", 1)])
        sub.unsubscribe("un/a")
        sub.unsubscribe("un/never-subscribed")  # still answered with UNSUBACK
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("un/a", b"gone", qos=1)
        pub.publish("un/b", b"kept", qos=1)
        p = sub.receive()
        check_equal((p.topic, p.payload), ("un/b", b"kept"),
                    "the only message after unsubscribing un/a")
        sub.expect_silence(0.5, "after unsubscribing")


def test_large_payload_fan_out():
    with Broker() as b:
        subs = []
        for i in range(20):
            s, _ = raw_connect(b.port, unique("fan"))
            s.subscribe([("fan/t", i % 3)])
            subs.append(s)
        payload = os.urandom(65536)
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("fan/t", payload, qos=2)
        for i, s in enumerate(subs):
            p = s.receive(what="the 64 KB message at subscriber %d" % i)
            check(p.payload == payload, "subscriber %d got a different payload (%d bytes)"
                  % (i, len(p.payload)))
            check_equal(p.qos, i % 3, "delivered QoS at subscriber %d" % i)


def test_inflight_window_bounds_unacknowledged_messages():
    with Broker("--max-inflight", "3") as b:
        sub, _ = raw_connect(b.port, unique("sub"))
        sub.subscribe([("win/t", 1)])
        pub, _ = raw_connect(b.port, unique("pub"))
        for i in range(6):
            pub.publish("win/t", b"%d" % i, qos=1)
        got = [sub.receive(ack=False) for _ in range(3)]
        check_equal([p.payload for p in got], [b"0", b"1", b"2"], "first three payloads")
        sub.expect_silence(1.0, "(more than --max-inflight 3 unacknowledged QoS 1 messages)")
        sub.send(puback_packet(got[0].pid))
        p = sub.receive(ack=False, what="the 4th message once one slot was acknowledged")
        check_equal(p.payload, b"3", "4th payload")
        sub.expect_silence(0.7, "(window of 3 exceeded after one PUBACK)")
        for q in got[1:] + [p]:
            sub.send(puback_packet(q.pid))
        rest = sub.receive_all(2)
        check_equal([q.payload for q in rest], [b"4", b"5"], "last two payloads")
        for q in rest:
            check(q.qos == 1 and not q.dup, "fresh QoS 1 delivery expected, got %r" % q)


def test_mosquitto_clients_every_qos():
    with Broker() as b:
        sub = mosquitto_sub(b.port, "-q", "2", "-v", "-C", "3", "-W", "15", "-t", "mq/#")
        with sub:
            for q in (0, 1, 2):
                mosquitto_pub(b.port, "-q", str(q), "-t", "mq/q%d" % q, "-m", "m%d" % q)
            rc = sub.wait(10)
            lines = [l for l in sub.lines if l.startswith("mq/")]
            check_equal(lines, ["mq/q0 m0", "mq/q1 m1", "mq/q2 m2"], "mosquitto_sub -v output")
            check_equal(rc, 0, "mosquitto_sub exit status")


def test_publish_to_self():
    with Broker() as b:
        c, _ = raw_connect(b.port, unique("self"))
        c.subscribe([("self/t", 1)])
        c.send(publish_packet("self/t", b"me", qos=1, pid=11))
        # The PUBACK and the delivered PUBLISH may come in either order.
        c.expect(PUBACK, pid=11)
        p = Publish(c.expect(PUBLISH))
        check_equal((p.topic, p.payload, p.qos), ("self/t", b"me", 1), "own message")


if __name__ == "__main__":
    run_tests(globals())
