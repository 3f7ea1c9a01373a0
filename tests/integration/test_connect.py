#!/usr/bin/python3
"""CONNECT: protocol levels, client identifiers, the first and second packet, credentials."""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    CONNACK, DISCONNECT_PACKET, PINGREQ_PACKET, Broker, PahoClient, RawClient, check,
    check_equal, connect_packet, mosquitto_pub, mosquitto_sub, publish_packet, raw_connect,
    run_tests, subscribe_packet, unique)


def _refused(port, expect_code, what, **connect_args):
    """CONNECT must get CONNACK `expect_code`, then the connection is closed."""
    c = RawClient(port)
    with c:
        c.send(connect_packet(**connect_args))
        pkt = c.expect(CONNACK, 5, what=what)
        check_equal(pkt.body[1], expect_code, "CONNACK return code for " + what)
        check_equal(pkt.body[0], 0, "CONNACK session present for " + what)
        rest = c.expect_closed(5, "the broker to close the connection after refusing " + what)
        check(not rest, "packets after a refusing CONNACK: %r" % rest)


def test_mqtt311_and_mqtt31_accepted():
    with Broker() as b:
        for version in (4, 3):
            c = RawClient(b.port)
            c.send(connect_packet(unique("v%d-" % version), version=version))
            pkt = c.expect(CONNACK)
            check_equal(pkt.body, b"\x00\x00", "CONNACK body for protocol level %d" % version)
            c.ping()
            c.disconnect()


def test_unknown_protocol_level_refused_with_code_1():
    """MQTT-3.1.2-2: an unsupported level gets CONNACK 0x01 and the connection is closed.
    A level above 5 comes from a newer client: it gets MQTT 5's 0x84 (test_mqtt5_connect)."""
    with Broker() as b:
        for level in (2, 1, 0):
            _refused(b.port, 1, "protocol level %d" % level, client_id=unique("lvl"),
                     version=level, protocol_name="MQTT")


def test_client_id_of_64_accepted_65_refused():
    with Broker() as b:
        c, _ = raw_connect(b.port, "i" * 64)
        c.ping()
        mark = b.log_mark()
        _refused(b.port, 2, "a 65-character client id", client_id="j" * 65)
        text = b.log_text(mark)
        check(re.search(r"client.?id|identifier", text, re.I),
              "the refusal of a 65-character client id is not logged with its reason:\n%s"
              % text[-2000:])


def test_max_client_id_option():
    with Broker("--max-client-id", "10") as b:
        c, _ = raw_connect(b.port, "0123456789")
        c.ping()
        _refused(b.port, 2, "an 11-character client id with --max-client-id 10",
                 client_id="0123456789x")


def test_empty_client_id_with_clean_session_gets_its_own_id():
    with Broker() as b:
        a, _ = raw_connect(b.port, "", clean=True)
        c, _ = raw_connect(b.port, "", clean=True)
        # Two anonymous clients must not take each other over.
        a.ping()
        c.ping()
        a.subscribe([("anon/t", 1)])
        c.publish("anon/t", b"hi", qos=1)
        check_equal(a.receive().payload, b"hi", "message between two empty-id clients")
        with PahoClient(b.port, "") as p:
            p.subscribe("anon/p", 0)
            p.publish("anon/p", b"paho", 0)
            check_equal(p.wait_messages(1)[0].payload, b"paho", "paho with an empty client id")


def test_empty_client_id_with_persistent_session_refused():
    """MQTT-3.1.3-8: zero-byte client id with clean session 0 gets CONNACK 0x02."""
    with Broker() as b:
        _refused(b.port, 2, "an empty client id with clean session 0", client_id="",
                 clean=False)


def test_first_packet_not_connect_closes():
    """MQTT-3.1.0-1: the first packet must be CONNECT."""
    with Broker() as b:
        w, _ = raw_connect(b.port, unique("watch"))
        w.subscribe([("first/#", 1)])
        for data, what in ((PINGREQ_PACKET, "PINGREQ"),
                           (subscribe_packet(1, [("first/x", 0)]), "SUBSCRIBE"),
                           (publish_packet("first/x", b"sneaky", qos=1, pid=1), "PUBLISH")):
            c = RawClient(b.port)
            with c:
                c.send(data)
                got = c.expect_closed(5, "the broker to close a connection that began with "
                                      + what)
                check(not got, "a connection that began with %s was answered: %r" % (what, got))
        w.expect_silence(0.5, "(a PUBLISH sent before CONNECT was delivered)")


def test_second_connect_closes():
    """MQTT-3.1.0-2: a second CONNECT is a protocol violation."""
    with Broker() as b:
        c, _ = raw_connect(b.port, unique("twice"))
        c.send(connect_packet(unique("again")))
        got = c.expect_closed(5, "the broker to close a connection that sent CONNECT twice")
        check(not any(p.type == CONNACK for p in got),
              "a second CONNECT was answered with CONNACK: %r" % got)


def test_credentials_ignored_in_desktop_mode():
    with Broker() as b:
        c, _ = raw_connect(b.port, unique("cred"), username="someone", password="anything")
        c.ping()
        c, _ = raw_connect(b.port, unique("user"), username="only-a-user")
        c.ping()
        with PahoClient(b.port, unique("pc"), username="u", password="p") as p:
            p.subscribe("cred/t", 1)
            mosquitto_pub(b.port, "-u", "x", "-P", "y", "-q", "1", "-t", "cred/t", "-m", "ok")
            check_equal(p.wait_messages(1)[0].payload, b"ok", "message from mosquitto_pub -u -P")


def test_disconnect_closes_connection():
    with Broker() as b:
        c, _ = raw_connect(b.port, unique("bye"))
        c.send(DISCONNECT_PACKET)
        got = c.expect_closed(5, "the broker to close the connection after DISCONNECT")
        check(not got, "packets after DISCONNECT: %r" % got)


def test_pingreq_gets_pingresp():
    with Broker() as b:
        for version in (4, 3):
            c, _ = raw_connect(b.port, unique("ping"), version=version)
            for _ in range(3):
                c.ping()


def test_mosquitto_clients_connect_v311_and_v31():
    with Broker() as b:
        for v in ("mqttv311", "mqttv31"):
            sub = mosquitto_sub(b.port, "-V", v, "-C", "1", "-W", "10", "-t", "mv/" + v)
            with sub:
                mosquitto_pub(b.port, "-V", v, "-t", "mv/" + v, "-m", v)
                sub.wait(10)
                check(v in sub.lines, "mosquitto_sub -V %s output %r" % (v, sub.lines))


if __name__ == "__main__":
    run_tests(globals())
