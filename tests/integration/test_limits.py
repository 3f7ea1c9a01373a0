#!/usr/bin/python3
"""Limits (SPEC 5): topic length and characters, payload size, subscriptions, keep-alive.

Every violation has a defined answer (SUBACK 0x80 or a closed connection) and a
log line saying why; everyone else keeps being served.
"""

import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    PINGREQ_PACKET, PINGRESP, Broker, check, check_equal, mqtt_string, paho_roundtrip,
    publish_packet, raw_connect, run_tests, unique, varint)


def _topic(length, prefix="l/"):
    return prefix + "a" * (length - len(prefix))


def _check_log(b, mark, pattern, what):
    text = b.log_text(mark)
    check(re.search(pattern, text, re.I),
          "no log line mentioning /%s/ after %s; new log lines:\n%s"
          % (pattern, what, "\n".join("  | " + l for l in text.splitlines()[-20:])))


def _expect_refused_publish(b, topic, payload=b"x", what=""):
    """A QoS 1 PUBLISH that must close the connection and never be acknowledged."""
    watcher, _ = raw_connect(b.port, unique("watch"))
    watcher.subscribe([("#", 1)])
    mark = b.log_mark()
    c, _ = raw_connect(b.port, unique("bad"))
    c.send(publish_packet(topic, payload, qos=1, pid=1))
    got = c.expect_closed(5, "the connection to be closed after %s" % what)
    check(not got, "%s was answered before the close: %r" % (what, got))
    watcher.expect_silence(0.3, "(the refused PUBLISH was delivered: %s)" % what)
    watcher.close()
    return mark


def test_filter_longer_than_max_topic_length_refused():
    with Broker() as b:
        c, _ = raw_connect(b.port, unique("c"))
        codes = c.subscribe([(_topic(128), 1), (_topic(129), 1), ("ok/x", 2)])
        check_equal(codes, [1, 0x80, 2], "SUBACK for filters of 128 and 129 characters and ok/x")
        c.ping()


def test_max_topic_length_option():
    with Broker("--max-topic-length", "10") as b:
        c, _ = raw_connect(b.port, unique("c"))
        codes = c.subscribe([(_topic(10), 0), (_topic(11), 0)])
        check_equal(codes, [0, 0x80], "SUBACK for filters of 10 and 11 characters (limit 10)")
        c.publish(_topic(10), b"fits", qos=1)
        mark = _expect_refused_publish(b, _topic(11), what="a PUBLISH to an 11-character topic")
        _check_log(b, mark, "topic", "a topic over --max-topic-length")


def test_publish_topic_longer_than_limit_closes():
    with Broker() as b:
        sub, _ = raw_connect(b.port, unique("sub"))
        sub.subscribe([(_topic(128), 1)])
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish(_topic(128), b"fits", qos=1)
        check_equal(sub.receive().payload, b"fits", "message on a 128-character topic")
        mark = _expect_refused_publish(b, _topic(129), what="a PUBLISH to a 129-character topic")
        _check_log(b, mark, "topic", "a PUBLISH to a 129-character topic")
        pub.ping()
        paho_roundtrip(b.port)


def test_publish_topic_with_bad_character_closes():
    with Broker("--utf8-topics", "0") as b:  # the cloud default (desktop's is 1)
        for topic in ("a b", "caf\u00e9", "a@b", "x/y!"):
            mark = _expect_refused_publish(b, topic, what="a PUBLISH to %r" % topic)
            _check_log(b, mark, "topic", "a PUBLISH to %r" % topic)
        paho_roundtrip(b.port)


def test_payload_of_exactly_max_payload_is_accepted():
    with Broker() as b:
        sub, _ = raw_connect(b.port, unique("sub"))
        sub.subscribe([("pl/t", 1)])
        pub, _ = raw_connect(b.port, unique("pub"))
        payload = bytes(range(256)) * 256
        check_equal(len(payload), 65536, "payload size")
        pub.publish("pl/t", payload, qos=1)
        p = sub.receive()
        check(p.payload == payload, "the 65536-byte payload arrived changed (%d bytes)"
              % len(p.payload))


def test_payload_over_max_payload_closes():
    with Broker() as b:
        mark = _expect_refused_publish(b, "pl/big", b"x" * 65537,
                                       what="a PUBLISH with a 65537-byte payload")
        _check_log(b, mark, "payload|too (big|large)|size", "a 65537-byte payload")
        paho_roundtrip(b.port)


def test_max_payload_option():
    with Broker("--max-payload", "1000") as b:
        c, _ = raw_connect(b.port, unique("c"))
        c.publish("mp/t", b"y" * 1000, qos=1)
        mark = _expect_refused_publish(b, "mp/t", b"y" * 1001,
                                       what="a 1001-byte payload with --max-payload 1000")
        _check_log(b, mark, "payload|too (big|large)|size", "a 1001-byte payload")
        c.ping()


def test_huge_remaining_length_is_refused_before_the_data():
    """A length from the wire is checked before it is trusted: no waiting for 200 MB."""
    with Broker() as b:
        c, _ = raw_connect(b.port, unique("huge"))
        body_start = mqtt_string("h/t") + b"\x00\x01" + b"x" * 100
        c.send(b"\x32" + varint(200 * 1000 * 1000) + body_start)
        got = c.expect_closed(5, "the connection to be closed after a PUBLISH header "
                              "announcing 200 MB")
        check(not got, "answered with %r" % got)
        paho_roundtrip(b.port)


def test_max_subscriptions_default_100():
    with Broker() as b:
        c, _ = raw_connect(b.port, unique("c"))
        codes = c.subscribe([("s/%d" % i, 1) for i in range(100)])
        check_equal(codes, [1] * 100, "SUBACK for 100 filters")
        codes = c.subscribe([("s/extra", 1)])
        check_equal(codes, [0x80], "SUBACK for the 101st subscription")
        codes = c.subscribe([("s/7", 2)])
        check_equal(codes, [2], "SUBACK when replacing an existing subscription at the limit")
        c.unsubscribe("s/0")
        codes = c.subscribe([("s/extra", 1)])
        check_equal(codes, [1], "SUBACK after unsubscribing one of 100")
        other, _ = raw_connect(b.port, unique("other"))
        check_equal(other.subscribe([("s/extra", 0)]), [0],
                    "another connection's subscription (the limit is per connection)")


def test_max_subscriptions_option_within_one_subscribe():
    with Broker("--max-subscriptions", "3") as b:
        c, _ = raw_connect(b.port, unique("c"))
        codes = c.subscribe([("m/a", 0), ("m/b", 1), ("m/c", 2), ("m/d", 1), ("m/e", 0)])
        check_equal(codes, [0, 1, 2, 0x80, 0x80], "SUBACK for 5 filters with --max-subscriptions 3")
        pub, _ = raw_connect(b.port, unique("pub"))
        pub.publish("m/d", b"no", qos=1)
        pub.publish("m/c", b"yes", qos=1)
        p = c.receive()
        check_equal((p.topic, p.payload), ("m/c", b"yes"), "the only message delivered")


def test_slow_reader_does_not_hold_up_others():
    """SPEC 7: a subscriber that stops reading must not stall the broker for anyone else."""
    with Broker() as b:
        slow, _ = raw_connect(b.port, unique("slow"))
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.subscribe([("slow/t", 0)])
        pub, _ = raw_connect(b.port, unique("pub"))
        chunk = publish_packet("slow/t", b"z" * 60000)
        for _ in range(500):  # about 30 MB that the slow subscriber never reads
            pub.send(chunk)
        pub.ping(10)
        t0 = time.monotonic()
        paho_roundtrip(b.port)
        check(time.monotonic() - t0 < 5, "a round trip took %.1f s while a subscriber was "
              "not reading" % (time.monotonic() - t0))
        slow.close()


def test_max_outbound_bytes_drops_qos0_to_a_slow_reader_and_says_so():
    """Past max-outbound-bytes of pending output, QoS 0 to that client is dropped and
    logged; the broker's memory for it stays bounded and everyone else is served."""
    with Broker("--max-outbound-bytes", "64k") as b:
        mark = b.log_mark()
        slow, _ = raw_connect(b.port, unique("slow"))
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.subscribe([("slow/t", 0)])
        pub, _ = raw_connect(b.port, unique("pub"))
        chunk = publish_packet("slow/t", b"z" * 30000)
        for _ in range(200):  # about 6 MB that the slow subscriber never reads
            pub.send(chunk)
        pub.ping(10)
        _check_log(b, mark, r"max-outbound-bytes", "output piled up for a slow reader")
        paho_roundtrip(b.port)
        slow.close()


def test_lone_slash_topic_is_empty_and_refused():
    """"/" is empty once its insignificant slash is dropped: a PUBLISH to it closes the
    connection (an empty topic cannot be sent on), and a SUBSCRIBE to it gets 0x80."""
    with Broker() as b:
        w, _ = raw_connect(b.port, unique("all"))
        w.subscribe([("#", 0)])
        s, _ = raw_connect(b.port, unique("slash-sub"))
        codes = s.subscribe([("/", 0), ("ok/+", 0)])
        check_equal(codes, [0x80, 0], "SUBACK for '/' and a valid filter")
        mark = b.log_mark()
        p, _ = raw_connect(b.port, unique("slash-pub"))
        p.send(publish_packet("/", b"x", qos=1, pid=1))
        p.expect_closed(what="the broker to close a PUBLISH to '/'")
        _check_log(b, mark, r"empty topic", "a PUBLISH to '/'")
        w.ping()
        w.expect_silence(0.3, "no message with an empty topic reaches '#'")
        paho_roundtrip(b.port)


def test_keepalive_counts_whole_packets_not_bytes():
    """Trickling the bytes of a packet that never completes does not keep a client alive."""
    with Broker() as b:
        c, _ = raw_connect(b.port, unique("trickle"), keepalive=2)
        partial = publish_packet("t/x", b"y" * 100)[:-1]
        t0 = time.monotonic()
        for byte in partial[:6]:
            if not c.try_send(bytes([byte])):
                break
            time.sleep(0.8)
        c.expect_closed(3, "the broker to close a client that sent no whole packet")
        dt = time.monotonic() - t0
        check(dt < 5.5, "closed after %.1f s; keep-alive 2 s allows 3 s" % dt)


def test_client_that_never_reads_is_paused_then_closed():
    """A client that sends PINGREQ after PINGREQ and never reads the answers makes the
    broker stop reading it at max-outbound-bytes, then close it at the keep-alive."""
    with Broker("--max-outbound-bytes", "16k") as b:
        mark = b.log_mark()
        c, _ = raw_connect(b.port, unique("deaf"), keepalive=2)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.sock.settimeout(0.2)
        sent = 0
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and sent < 50 * 1024 * 1024:
            try:
                sent += c.sock.send(PINGREQ_PACKET * 4096)
            except socket.timeout:
                continue
            except OSError:
                break
        _check_log(b, mark, r"not reading its input", "a client that does not read")
        _check_log(b, mark, r"not reading its output", "a client that never read")
        paho_roundtrip(b.port)
        c.close()


def _time_to_close(c, limit):
    t0 = time.monotonic()
    c.expect_closed(limit, "the broker to close a silent connection")
    return time.monotonic() - t0


def test_keepalive_closes_silent_client_after_one_and_a_half_times():
    with Broker() as b:
        mark = b.log_mark()
        c, _ = raw_connect(b.port, unique("silent"), keepalive=2)
        dt = _time_to_close(c, 8)
        check(2.0 <= dt <= 4.5, "a silent client with keep-alive 2 s was closed after %.2f s "
              "(expected about 3 s: 1.5 x keep-alive, not before 2 s)" % dt)
        _check_log(b, mark, r"keep.?alive|timed? ?out|idle", "a keep-alive timeout")


def test_keepalive_traffic_keeps_connection_open():
    with Broker() as b:
        c, _ = raw_connect(b.port, unique("chatty"), keepalive=2)
        for i in range(5):
            time.sleep(1.0)
            if i % 2:
                c.send(PINGREQ_PACKET)
                c.expect(PINGRESP, 2, what="keep-alive %d s, packet every 1 s" % 2)
            else:
                c.publish("ka/t", b"alive", qos=1)
        c.ping()


def test_keepalive_zero_is_held_to_keepalive_max():
    with Broker("--keepalive-max", "2") as b:
        c, _ = raw_connect(b.port, unique("zero"), keepalive=0)
        dt = _time_to_close(c, 8)
        check(2.0 <= dt <= 4.5, "keep-alive 0 with --keepalive-max 2: closed after %.2f s "
              "(expected about 3 s)" % dt)


def test_keepalive_above_max_is_lowered():
    with Broker("--keepalive-max", "2") as b:
        c, _ = raw_connect(b.port, unique("long"), keepalive=600)
        dt = _time_to_close(c, 8)
        check(2.0 <= dt <= 4.5, "keep-alive 600 with --keepalive-max 2: closed after %.2f s "
              "(expected about 3 s)" % dt)


def test_keepalive_below_min_is_raised():
    with Broker("--keepalive-min", "3", "--keepalive-max", "10") as b:
        c, _ = raw_connect(b.port, unique("short"), keepalive=1)
        dt = _time_to_close(c, 9)
        check(3.0 <= dt <= 6.5, "keep-alive 1 with --keepalive-min 3: closed after %.2f s "
              "(expected about 4.5 s: 1.5 x 3)" % dt)


if __name__ == "__main__":
    run_tests(globals())
