#!/usr/bin/python3
"""Malformed input over raw sockets: the bad connection is closed, nothing else is hurt.

One broker serves the whole file. A paho "witness" client stays connected
throughout and, after every bad client, must still publish and receive its
own message; a raw "bystander" connection must still answer PINGREQ.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    CONNACK, Broker, PahoClient, RawClient, check, check_equal, connect_packet, mqtt_string,
    packet, publish_packet, raw_connect, run_tests, subscribe_packet, u16, unique)

STATE = {}


def setup_module():
    b = Broker()
    b.start()
    STATE["broker"] = b
    w = PahoClient(b.port, unique("witness"))
    w.subscribe("witness/#", 1)
    STATE["witness"] = w
    STATE["bystander"], _ = raw_connect(b.port, unique("bystander"))
    STATE["count"] = 0


def teardown_module():
    STATE["witness"].close()
    STATE["bystander"].disconnect()
    b = STATE["broker"]
    b.stop()
    check(not b.problems, "; ".join(b.problems) + "\n" + b.log_tail())


def _others_still_served():
    b = STATE["broker"]
    b.check_alive()
    STATE["bystander"].ping()
    w = STATE["witness"]
    STATE["count"] += 1
    payload = b"alive-%d" % STATE["count"]
    w.publish("witness/t", payload, qos=1)
    got = w.wait_messages(STATE["count"], topic="witness/t")
    check_equal(got[-1].payload, payload, "the witness client's own message")


def _closed_after(data, connect=True, what="", version=4):
    """Open a connection (CONNECT first unless connect=False), send `data`, expect a close."""
    b = STATE["broker"]
    if connect:
        c, _ = raw_connect(b.port, unique("bad"), version=version)
    else:
        c = RawClient(b.port)
    with c:
        c.try_send(data)
        got = c.expect_closed(5, "the broker to close the connection after " + what)
    _others_still_served()
    return got


def _closed_without_answer(data, connect=True, what=""):
    got = _closed_after(data, connect, what)
    check(not got, "the broker answered %s with %r before closing" % (what, got))


def test_remaining_length_of_five_bytes():
    _closed_without_answer(b"\x30\xff\xff\xff\xff\x01" + b"\x00" * 8,
                           what="a remaining length encoded in 5 bytes")


def test_remaining_length_beyond_the_data_then_close():
    b = STATE["broker"]
    c, _ = raw_connect(b.port, unique("short"))
    with c:
        # Announces 100 bytes, sends 10, then half-closes: the packet never completes.
        c.send(b"\x30" + bytes([100]) + mqtt_string("t/x") + b"abcde")
        c.sock.shutdown(1)
        got = c.expect_closed(5, "the broker to close a connection that ended inside a packet")
        check(not got, "answered a truncated packet with %r" % got)
    _others_still_served()


def test_subscribe_with_reserved_flags_0():
    """MQTT-3.8.1-1: SUBSCRIBE's fixed-header flags must be 0010."""
    _closed_without_answer(subscribe_packet(1, [("x/y", 0)], flags=0x0),
                           what="a SUBSCRIBE with flags 0000")


def test_pubrel_with_reserved_flags_0():
    """MQTT-3.6.1-1: PUBREL's fixed-header flags must be 0010."""
    _closed_without_answer(packet(6, 0x0, u16(1)), what="a PUBREL with flags 0000")


def test_pingreq_with_flags_set():
    _closed_without_answer(b"\xc1\x00", what="a PINGREQ with flags 0001")


def test_string_longer_than_the_packet():
    # Topic length says 200 bytes; the packet has 5 bytes in all.
    _closed_without_answer(b"\x30\x05\x00\xc8abc", what="a topic length beyond the packet")


def test_invalid_utf8_in_topic():
    """MQTT-1.5.3-1: ill-formed UTF-8 closes the connection."""
    _closed_without_answer(publish_packet(b"a/\xc3\x28", b"x", qos=1, pid=1),
                           what="a topic with ill-formed UTF-8 (C3 28)")


def test_overlong_utf8_in_topic():
    _closed_without_answer(publish_packet(b"a/\xc0\xaf", b"x", qos=1, pid=1),
                           what="a topic with an overlong UTF-8 encoding (C0 AF)")


def test_invalid_utf8_in_subscribe_filter():
    _closed_without_answer(subscribe_packet(1, [(b"ok", 0), (b"f/\xff", 0)]),
                           what="a filter with ill-formed UTF-8 (FF)")


def test_nul_character_in_topic():
    """MQTT-1.5.3-2: U+0000 in a string closes the connection."""
    _closed_without_answer(publish_packet(b"a/\x00b", b"x", qos=1, pid=1),
                           what="a topic containing U+0000")


def test_publish_qos1_with_packet_id_0():
    """MQTT-2.3.1-1: a QoS 1 PUBLISH needs a non-zero packet identifier."""
    _closed_without_answer(publish_packet("p/z", b"x", qos=1, pid=0),
                           what="a QoS 1 PUBLISH with packet id 0")


def test_subscribe_with_no_filter():
    """MQTT-3.8.3-3: a SUBSCRIBE carries at least one filter."""
    _closed_without_answer(b"\x82\x02\x00\x01", what="a SUBSCRIBE without a filter")


def test_unsubscribe_with_no_filter():
    """MQTT-3.10.3-2: an UNSUBSCRIBE carries at least one filter."""
    _closed_without_answer(b"\xa2\x02\x00\x01", what="an UNSUBSCRIBE without a filter")


def test_subscribe_with_bad_requested_qos():
    """MQTT-3.8.3-4: requested QoS 3 (or reserved bits) is malformed."""
    _closed_without_answer(subscribe_packet(1, [("q/x", 3)]),
                           what="a SUBSCRIBE requesting QoS 3")


def test_publish_qos3():
    """MQTT-3.3.1-4: QoS 3 is malformed."""
    data = bytearray(publish_packet("q/3", b"x", qos=1, pid=1))
    data[0] |= 0x06
    _closed_without_answer(bytes(data), what="a PUBLISH with QoS 3")


def test_connect_with_reserved_flag_set():
    """MQTT-3.1.2-3: the reserved CONNECT flag must be 0."""
    got = _closed_after(connect_packet(unique("res"), reserved=True), connect=False,
                        what="a CONNECT with the reserved flag set")
    check(not any(p.type == CONNACK and p.body[1:] == b"\x00" for p in got),
          "a CONNECT with the reserved flag was accepted: %r" % got)


def test_connect_will_qos_without_will_flag():
    """MQTT-3.1.2-13: without the will flag, will QoS must be 0."""
    data = bytearray(connect_packet(unique("wq")))
    data[9] |= 0x08  # connect flags: will QoS 1, will flag 0
    got = _closed_after(bytes(data), connect=False,
                        what="a CONNECT with will QoS 1 but no will flag")
    check(not any(p.type == CONNACK and p.body[1:] == b"\x00" for p in got),
          "accepted: %r" % got)


def test_connect_will_qos_3():
    """MQTT-3.1.2-14: will QoS 3 is malformed."""
    data = bytearray(connect_packet(unique("w3"), will={"topic": "w/t", "payload": b""}))
    data[9] |= 0x18
    got = _closed_after(bytes(data), connect=False, what="a CONNECT with will QoS 3")
    check(not any(p.type == CONNACK and p.body[1:] == b"\x00" for p in got),
          "accepted: %r" % got)


def test_connect_password_without_username():
    """MQTT-3.1.2-22: the password flag requires the user name flag (3.1.1)."""
    data = bytearray(connect_packet(unique("pw")))
    data[9] |= 0x40
    data += mqtt_string("secret")
    data[1] += 8
    got = _closed_after(bytes(data), connect=False,
                        what="a CONNECT with a password but no user name")
    check(not any(p.type == CONNACK and p.body[1:] == b"\x00" for p in got),
          "accepted: %r" % got)


def test_garbage_first_byte():
    _closed_without_answer(b"\x00\x00", connect=False, what="a first byte of 0x00")


def test_garbage_lone_first_byte():
    """0x47 cannot begin a CONNECT: the connection is bad from its first byte on."""
    _closed_without_answer(b"\x47", connect=False, what="a lone first byte 0x47")


def test_garbage_stream_first():
    _closed_without_answer(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", connect=False,
                           what="an HTTP request on the MQTT port")


def test_reserved_packet_type_after_connect():
    _closed_without_answer(b"\x00\x00", what="packet type 0 after CONNECT")
    _closed_without_answer(b"\xf0\x00", what="packet type 15 (AUTH) on MQTT 3.1.1")


def test_connack_from_client():
    _closed_without_answer(b"\x20\x02\x00\x00", what="a CONNACK sent by a client")


def test_truncated_connect():
    b = STATE["broker"]
    c = RawClient(b.port)
    with c:
        full = connect_packet(unique("tc"))
        # Remaining length one byte shorter than the body: the client id string overruns.
        c.send(bytes([full[0], full[1] - 1]) + full[2:-1])
        got = c.expect_closed(5, "the broker to close after a CONNECT whose client id "
                              "overruns the packet")
        check(not any(p.type == CONNACK and p.body[1:] == b"\x00" for p in got),
              "accepted: %r" % got)
    _others_still_served()


def test_many_bad_clients_at_once():
    b = STATE["broker"]
    bad = [RawClient(b.port) for _ in range(20)]
    try:
        for i, c in enumerate(bad):
            c.send(connect_packet(unique("m")) if i % 2 else b"\xff" * 64)
        for i, c in enumerate(bad):
            if i % 2:
                c.expect(CONNACK)
                c.send(b"\x36\x00")
            c.expect_closed(5, "bad client %d to be closed" % i)
    finally:
        for c in bad:
            c.close()
    _others_still_served()


if __name__ == "__main__":
    run_tests(globals())
