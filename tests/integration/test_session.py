#!/usr/bin/python3
"""Sessions: clean session 0 and 1, offline queues, re-delivery with DUP, take-over."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    PUBLISH, PUBREL, Broker, PahoClient, Publish, check, check_equal, mosquitto_pub,
    mosquitto_sub, pubcomp_packet, puback_packet, pubrec_packet, raw_connect, run_tests,
    unique)


def test_first_persistent_connect_has_no_session():
    with Broker() as b:
        c, sp = raw_connect(b.port, unique("new"), clean=False)
        check_equal(sp, False, "CONNACK session present on the first clean-session-0 connect")
        c.ping()


def test_persistent_session_keeps_subscriptions_and_queues_qos1_qos2():
    with Broker() as b:
        cid = unique("persist")
        s, _ = raw_connect(b.port, cid, clean=False)
        check_equal(s.subscribe([("ps/#", 2)]), [2], "SUBACK")
        s.disconnect()
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("ps/one", b"q1", qos=1)
        pub.publish("ps/two", b"q2", qos=2)
        s, sp = raw_connect(b.port, cid, clean=False)
        check_equal(sp, True, "CONNACK session present when resuming")
        got = s.receive_all(2, what="messages queued while offline")
        check_equal([(p.topic, p.payload, p.qos) for p in got],
                    [("ps/one", b"q1", 1), ("ps/two", b"q2", 2)],
                    "queued messages (topic, payload, qos) in order")
        # The subscription is still there without a new SUBSCRIBE.
        pub.publish("ps/three", b"live", qos=1)
        check_equal(s.receive().payload, b"live", "live message on the kept subscription")
        s.expect_silence(0.5, "after the live message")


def test_offline_queue_is_bounded_oldest_dropped():
    with Broker("--max-queued-messages", "5") as b:
        cid = unique("bounded")
        s, _ = raw_connect(b.port, cid, clean=False)
        s.subscribe([("qb/t", 1)])
        s.disconnect()
        pub, _ = raw_connect(b.port, unique("pub"))
        for i in range(8):
            pub.publish("qb/t", b"%d" % i, qos=1)
        s, sp = raw_connect(b.port, cid, clean=False)
        check_equal(sp, True, "session present")
        got = s.receive_all(5, what="the 5 newest queued messages")
        check_equal([p.payload for p in got], [b"3", b"4", b"5", b"6", b"7"],
                    "queued payloads with --max-queued-messages 5 after 8 publishes")
        s.expect_silence(1.0, "(more than --max-queued-messages were queued)")


def test_unacknowledged_qos1_resent_with_dup_on_resume():
    with Broker() as b:
        cid = unique("dup1")
        s, _ = raw_connect(b.port, cid, clean=False)
        s.subscribe([("dup/t", 1)])
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("dup/t", b"again", qos=1)
        first = s.receive(ack=False)
        check_equal(first.dup, False, "DUP on the first delivery")
        s.close()  # without PUBACK
        s, sp = raw_connect(b.port, cid, clean=False)
        check_equal(sp, True, "session present")
        p = s.receive(ack=False, what="the unacknowledged QoS 1 message re-sent on resume")
        check_equal((p.pid, p.dup, p.qos, p.topic, p.payload),
                    (first.pid, True, 1, "dup/t", b"again"),
                    "re-sent PUBLISH (packet id, DUP, qos, topic, payload)")
        s.send(puback_packet(p.pid))
        s.expect_silence(0.5, "after PUBACK of the re-sent message")
        s.disconnect()
        s, _ = raw_connect(b.port, cid, clean=False)
        s.expect_silence(1.0, "(an acknowledged message was re-sent on the next resume)")


def test_unacknowledged_qos2_publish_resent_with_dup_on_resume():
    with Broker() as b:
        cid = unique("dup2")
        s, _ = raw_connect(b.port, cid, clean=False)
        s.subscribe([("dup2/t", 2)])
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("dup2/t", b"twice?", qos=2)
        first = s.receive(ack=False)
        s.abort()  # no PUBREC
        s, sp = raw_connect(b.port, cid, clean=False)
        check_equal(sp, True, "session present")
        p = s.receive(ack=False, what="the unacknowledged QoS 2 PUBLISH re-sent on resume")
        check_equal((p.pid, p.dup, p.qos, p.payload), (first.pid, True, 2, b"twice?"),
                    "re-sent PUBLISH (packet id, DUP, qos, payload)")
        s.send(pubrec_packet(p.pid))
        rel = s.expect(PUBREL, pid=p.pid)
        check_equal(rel.flags, 2, "PUBREL flags")
        s.send(pubcomp_packet(p.pid))
        s.expect_silence(0.5, "after PUBCOMP")


def test_unacknowledged_pubrel_resent_on_resume():
    """MQTT-4.4.0-1: PUBREL packets not yet completed are re-sent, not the PUBLISH."""
    with Broker() as b:
        cid = unique("rel")
        s, _ = raw_connect(b.port, cid, clean=False)
        s.subscribe([("rel/t", 2)])
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("rel/t", b"half", qos=2)
        first = s.receive(ack=False)
        s.send(pubrec_packet(first.pid))
        s.expect(PUBREL, pid=first.pid)
        s.close()  # no PUBCOMP
        s, sp = raw_connect(b.port, cid, clean=False)
        check_equal(sp, True, "session present")
        pkt = s.read_packet(5)
        check(pkt.type == PUBREL and pkt.pid() == first.pid,
              "expected PUBREL for packet id %d on resume, got %r%s"
              % (first.pid, pkt, " = %r" % Publish(pkt) if pkt.type == PUBLISH else ""))
        check_equal(pkt.flags, 2, "PUBREL flags")
        s.send(pubcomp_packet(first.pid))
        s.expect_silence(0.7, "(message delivered again after PUBREC)")


def test_resume_respects_inflight_window_and_order():
    with Broker("--max-inflight", "2") as b:
        cid = unique("window")
        s, _ = raw_connect(b.port, cid, clean=False)
        s.subscribe([("rw/t", 1)])
        s.disconnect()
        pub, _ = raw_connect(b.port, unique("pub"))
        for i in range(6):
            pub.publish("rw/t", b"%d" % i, qos=1)
        s, sp = raw_connect(b.port, cid, clean=False)
        check_equal(sp, True, "session present")
        first = [s.receive(ack=False) for _ in range(2)]
        check_equal([p.payload for p in first], [b"0", b"1"], "first two queued payloads")
        s.expect_silence(0.7, "(more than --max-inflight 2 sent before any PUBACK)")
        for p in first:
            s.send(puback_packet(p.pid))
        rest = s.receive_all(4)
        check_equal([p.payload for p in rest], [b"2", b"3", b"4", b"5"],
                    "the rest of the queue, in order")


def test_unsubscribe_is_kept_in_persistent_session():
    with Broker() as b:
        cid = unique("unsub")
        s, _ = raw_connect(b.port, cid, clean=False)
        s.subscribe([("us/a", 1), ("us/b", 1)])
        s.unsubscribe("us/a")
        s.disconnect()
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("us/a", b"a", qos=1)
        pub.publish("us/b", b"b", qos=1)
        s, _ = raw_connect(b.port, cid, clean=False)
        p = s.receive()
        check_equal((p.topic, p.payload), ("us/b", b"b"), "the only queued message")
        s.expect_silence(0.7, "(a message for an unsubscribed filter was queued)")


def test_clean_session_discards_old_session():
    with Broker() as b:
        cid = unique("clean")
        s, _ = raw_connect(b.port, cid, clean=False)
        s.subscribe([("cs/t", 1)])
        s.disconnect()
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("cs/t", b"queued", qos=1)
        s, sp = raw_connect(b.port, cid, clean=True)
        check_equal(sp, False, "session present with clean session 1")
        s.expect_silence(0.7, "(the old session's queued message was delivered)")
        pub.publish("cs/t", b"after", qos=1)
        s.expect_silence(0.7, "(the old session's subscription is still active)")
        s.disconnect()
        s, sp = raw_connect(b.port, cid, clean=False)
        check_equal(sp, False, "session present after a clean-session-1 connection ended")
        s.expect_silence(0.7, "(a discarded session's messages were delivered)")


def test_takeover_closes_the_first_connection():
    """MQTT-3.1.4-2: a CONNECT with a connected client's id disconnects the existing one."""
    with Broker() as b:
        cid = unique("same")
        first, _ = raw_connect(b.port, cid)
        second, _ = raw_connect(b.port, cid)
        first.expect_closed(3, "the first connection to be closed by the take-over")
        second.ping()
        second.subscribe([("to/t", 0)])


def test_takeover_publishes_the_first_connections_will():
    """MQTT-3.1.2-8: the will is published when a connection closes without DISCONNECT,
    and a take-over closes the first connection that way."""
    with Broker() as b:
        w, _ = raw_connect(b.port, unique("watch"))
        w.subscribe([("tw/#", 1)])
        cid = unique("willing")
        first, _ = raw_connect(b.port, cid,
                               will={"topic": "tw/first", "payload": b"taken", "qos": 1})
        second, _ = raw_connect(b.port, cid)
        first.expect_closed(3, "the first connection to be closed by the take-over")
        p = w.receive(what="the first connection's will after the take-over")
        check_equal((p.topic, p.payload), ("tw/first", b"taken"), "will (topic, payload)")
        second.ping()


def test_takeover_resumes_persistent_session():
    with Broker() as b:
        cid = unique("resume")
        first, _ = raw_connect(b.port, cid, clean=False)
        first.subscribe([("tr/t", 1)])
        second, sp = raw_connect(b.port, cid, clean=False)
        check_equal(sp, True, "session present when taking over a persistent session")
        first.expect_closed(3, "the first connection to be closed")
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("tr/t", b"to second", qos=1)
        check_equal(second.receive().payload, b"to second", "message on the taken-over session")


def test_paho_session_present_flag():
    with Broker() as b:
        cid = unique("paho")
        with PahoClient(b.port, cid, clean_session=False) as c:
            check_equal(c.session_present, False, "first connect: session present")
            c.subscribe("pp/t", 1)
        with PahoClient(b.port, unique("pub")) as pub:
            pub.publish("pp/t", b"while away", qos=1)
        with PahoClient(b.port, cid, clean_session=False) as c:
            check_equal(c.session_present, True, "second connect: session present")
            m = c.wait_messages(1)[0]
            check_equal((m.topic, m.payload, m.qos), ("pp/t", b"while away", 1),
                        "queued message (topic, payload, qos)")


def test_mosquitto_sub_persistent_session():
    with Broker() as b:
        cid = unique("msub")
        first = mosquitto_sub(b.port, "-c", "-i", cid, "-q", "1", "-t", "mp/t", "-E")
        with first:
            check_equal(first.wait(5), 0, "mosquitto_sub -E exit status")
        mosquitto_pub(b.port, "-q", "1", "-t", "mp/t", "-m", "offline")
        again = mosquitto_sub(b.port, "-c", "-i", cid, "-q", "1", "-t", "mp/t", "-v",
                              "-C", "1", "-W", "10", wait_suback=False)
        with again:
            again.wait(10)
            check("mp/t offline" in again.lines,
                  "mosquitto_sub -c did not receive the message queued while it was away: %r"
                  % again.lines)


if __name__ == "__main__":
    run_tests(globals())
