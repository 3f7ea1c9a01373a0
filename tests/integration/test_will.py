#!/usr/bin/python3
"""Will messages: published when a connection is lost, never after DISCONNECT."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    CONNACK, PUBACK, Broker, RawClient, check, check_equal, connect_packet, mosquitto_sub,
    publish_packet, raw_connect, run_tests, unique)


def _watch(b, flt="will/#", qos=2):
    w, _ = raw_connect(b.port, unique("watch"))
    w.subscribe([(flt, qos)])
    return w


def test_will_on_connection_reset():
    with Broker() as b:
        w = _watch(b)
        c, _ = raw_connect(b.port, unique("dying"),
                           will={"topic": "will/reset", "payload": b"gone", "qos": 1})
        c.ping()
        c.abort()
        p = w.receive(timeout=5, what="the will after the client's connection was reset")
        check_equal((p.topic, p.payload, p.qos, p.retain), ("will/reset", b"gone", 1, False),
                    "will (topic, payload, qos, retain)")
        w.expect_silence(0.5, "after the will")


def test_will_on_close_without_disconnect():
    with Broker() as b:
        w = _watch(b)
        c, _ = raw_connect(b.port, unique("closer"),
                           will={"topic": "will/close", "payload": b"bye", "qos": 2})
        c.ping()
        c.close()
        p = w.receive(what="the will after the client closed its socket without DISCONNECT")
        check_equal((p.topic, p.payload, p.qos), ("will/close", b"bye", 2),
                    "will (topic, payload, qos)")


def test_no_will_after_disconnect():
    with Broker() as b:
        w = _watch(b)
        c, _ = raw_connect(b.port, unique("polite"),
                           will={"topic": "will/polite", "payload": b"no", "qos": 1})
        c.disconnect()
        w.expect_silence(1.5, "(a will was published after DISCONNECT)")


def test_will_when_client_process_is_killed():
    with Broker() as b:
        w = _watch(b)
        victim = mosquitto_sub(b.port, "-i", unique("victim"), "-t", "any/thing",
                               "--will-topic", "will/killed", "--will-payload", "killed",
                               "--will-qos", "1")
        with victim:
            victim.sigkill()
            p = w.receive(what="the will of a SIGKILLed mosquitto_sub")
            check_equal((p.topic, p.payload, p.qos), ("will/killed", b"killed", 1),
                        "will (topic, payload, qos)")


def test_will_retain_is_honoured():
    with Broker() as b:
        w = _watch(b)
        c, _ = raw_connect(b.port, unique("ret"),
                           will={"topic": "will/ret", "payload": b"stays", "qos": 1,
                                 "retain": True})
        c.abort()
        live = w.receive()
        check_equal((live.payload, live.retain), (b"stays", False),
                    "live delivery of a retained will (payload, retain flag)")
        late, _ = raw_connect(b.port, unique("late"))
        late.subscribe([("will/ret", 1)])
        p = late.receive(what="the retained will")
        check_equal((p.topic, p.payload, p.retain), ("will/ret", b"stays", True),
                    "retained will (topic, payload, retain flag)")


def test_will_without_retain_is_not_retained():
    with Broker() as b:
        w = _watch(b)
        c, _ = raw_connect(b.port, unique("nr"),
                           will={"topic": "will/nr", "payload": b"x", "qos": 0})
        c.abort()
        w.receive()
        late, _ = raw_connect(b.port, unique("late"))
        late.subscribe([("will/nr", 1)])
        late.expect_silence(0.7, "(a will without the retain flag was retained)")


def test_will_on_keepalive_timeout():
    with Broker() as b:
        w = _watch(b)
        c, _ = raw_connect(b.port, unique("quiet"), keepalive=1,
                           will={"topic": "will/ka", "payload": b"timeout", "qos": 1})
        t0 = time.monotonic()
        p = w.receive(timeout=6, what="the will of a client silent beyond its keep-alive")
        check_equal(p.payload, b"timeout", "will payload")
        check(time.monotonic() - t0 >= 0.9, "will published %.2f s after CONNACK, before the "
              "keep-alive of 1 s had passed" % (time.monotonic() - t0))
        c.expect_closed(2, "the silent client's connection to be closed")


def test_will_on_protocol_error():
    with Broker() as b:
        w = _watch(b)
        c, _ = raw_connect(b.port, unique("bad"),
                           will={"topic": "will/err", "payload": b"broken", "qos": 1})
        bad = bytearray(publish_packet("x/y", b"z", qos=1, pid=1))
        bad[0] |= 0x06  # QoS 3: malformed
        c.send(bytes(bad))
        c.expect_closed(5, "the connection to be closed after a PUBLISH with QoS 3")
        p = w.receive(what="the will after the broker closed a connection for a protocol error")
        check_equal(p.payload, b"broken", "will payload")


def test_will_mqtt31():
    with Broker() as b:
        w = _watch(b)
        c = RawClient(b.port)
        c.connect(unique("v31"), version=3,
                  will={"topic": "will/v31", "payload": b"old", "qos": 1})
        c.abort()
        p = w.receive(what="the will of an MQTT 3.1 client")
        check_equal((p.topic, p.payload), ("will/v31", b"old"), "will (topic, payload)")


def test_takeover_will_comes_before_what_the_new_connection_sends():
    """A device that comes back sends CONNECT and a retained "online" in one segment: the old
    connection's "offline" will is published at the take-over, so "online" is what stays."""
    with Broker() as b:
        will = {"topic": "status/dev", "payload": b"offline", "qos": 1, "retain": True}
        old, _ = raw_connect(b.port, "dev", will=will)
        old.ping()
        w = _watch(b, "status/#", qos=1)
        new = RawClient(b.port)
        new.send(connect_packet("dev", will=will) +
                 publish_packet("status/dev", b"online", qos=1, retain=True, pid=1))
        new.expect(CONNACK, what="CONNACK for the returning device")
        new.expect(PUBACK, pid=1, what="PUBACK for the retained online status")
        seen = [w.receive(what="status change %d" % i).payload for i in range(2)]
        check_equal(seen, [b"offline", b"online"], "status changes in order")
        late = _watch(b, "status/dev", qos=1)
        check_equal(late.receive(what="the retained status").payload, b"online",
                    "retained status after the take-over")
        for c in (old, new, w, late):
            c.close()


def test_no_will_when_the_broker_shuts_down():
    """SIGTERM closes every connection, but the clients did not lose theirs: no will."""
    with Broker() as b:
        c, _ = raw_connect(b.port, unique("calm"),
                           will={"topic": "will/shutdown", "payload": b"x", "qos": 1})
        c.ping()
        mark = b.log_mark()
        b.terminate()
        text = b.log_text(mark)
        check("shutting down" in text, "no shutdown in the log:\n%s" % text)
        check("publishing its will" not in text,
              "a will was published during shutdown:\n%s" % text)
        c.close()


if __name__ == "__main__":
    run_tests(globals())
