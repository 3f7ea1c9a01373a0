#!/usr/bin/python3
"""MQTT 5 sessions: Session Expiry Interval (CONNECT and DISCONNECT), Clean Start, Session
Present, max-session-expiry, MQTT 3.1.1 persistent sessions.

Timings use 1-3 s intervals with at least 1 s of margin; every wait is bounded.
Set AVIARY_TEST_PEER=mosquitto to run the standard-behaviour tests against mosquitto.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    check, check_equal, raw_connect, run_tests, unique)
from mqtt5 import (  # noqa: E402
    SESSION_EXPIRY_INTERVAL, aviary_only, broker, disconnect5, v5_connect)


def _persistent(port, cid, sei, filters=(), **kw):
    """Connect `cid` with Clean Start 0 and Session Expiry Interval `sei`; subscribe."""
    c = v5_connect(port, cid, clean_start=False, session_expiry=sei, **kw)
    for f in filters:
        c.subscribe(f)
    return c


def _watcher(port, topic):
    w = v5_connect(port, unique("watch-"))
    check_equal(w.subscribe((topic, 1)).codes, [1], "watcher's SUBACK")
    return w


# ---------------------------------------------------------------------------
# Session Expiry Interval

def test_MQTT_3_1_2_11_2_session_expiry_0_ends_session_at_close_even_with_clean_start_0():
    with broker() as b:
        cid = unique("sei0-")
        c = v5_connect(b.port, cid, clean_start=False)  # no Session Expiry Interval: 0
        c.subscribe(("sei0/t", 1))
        c.disconnect()
        again = v5_connect(b.port, cid, clean_start=False)
        check_equal(again.connack.session_present, False,
                    "Session Present after a session with expiry 0 was closed")
        pub = v5_connect(b.port)
        pub.publish("sei0/t", b"lost", qos=1)
        again.expect_silence(0.5, "(the subscription of an ended session still delivers)")


def test_session_expiry_keeps_session_for_its_interval_then_ends_it():
    """Expiry 2 s: a reconnect after 0.5 s resumes (Session Present 1, queued message);
    one 3.5 s after the next disconnect finds nothing."""
    with broker() as b:
        cid = unique("sei2-")
        c = _persistent(b.port, cid, 2, [("sei2/t", 1)])
        c.disconnect()
        pub = v5_connect(b.port)
        pub.publish("sei2/t", b"queued", qos=1)
        time.sleep(0.5)
        back = _persistent(b.port, cid, 2)
        check_equal(back.connack.session_present, True, "Session Present 0.5 s into a 2 s "
                    "expiry")
        check_equal(back.receive().payload, b"queued", "message queued while offline")
        back.disconnect()
        time.sleep(3.5)
        late = _persistent(b.port, cid, 2)
        check_equal(late.connack.session_present, False, "Session Present 3.5 s after a "
                    "disconnect with expiry 2 s")
        pub.publish("sei2/t", b"after", qos=1)
        late.expect_silence(0.5, "(an expired session's subscription still delivers)")


def test_session_expiry_is_measured_from_the_disconnect():
    with broker() as b:
        cid = unique("from-")
        c = _persistent(b.port, cid, 1, [("from/t", 1)])
        time.sleep(2.5)  # connected longer than the expiry: nothing expires while connected
        c.ping()
        c.disconnect()
        back = _persistent(b.port, cid, 1)
        check_equal(back.connack.session_present, True,
                    "Session Present right after disconnecting (expiry 1 s, connected 2.5 s)")


def test_session_expiry_ffffffff_does_not_expire():
    with broker() as b:
        cid = unique("forever-")
        c = _persistent(b.port, cid, 0xFFFFFFFF, [("forever/t", 1)])
        c.disconnect()
        time.sleep(1.5)
        back = _persistent(b.port, cid, 0xFFFFFFFF)
        check_equal(back.connack.session_present, True, "Session Present with expiry 0xFFFFFFFF")
        check(not back.connack.props.has(SESSION_EXPIRY_INTERVAL),
              "Session Expiry Interval in CONNACK although nothing was lowered: %r"
              % back.connack)
        back.disconnect(session_expiry=0)


def test_MQTT_3_1_2_4_clean_start_1_discards_the_session():
    with broker() as b:
        cid = unique("clean-")
        c = _persistent(b.port, cid, 60, [("clean/old", 1)])
        c.disconnect()
        fresh = v5_connect(b.port, cid, clean_start=True, session_expiry=60)
        check_equal(fresh.connack.session_present, False, "Session Present with Clean Start 1 "
                    "(MQTT-3.2.2-2)")
        pub = v5_connect(b.port)
        pub.publish("clean/old", b"x", qos=1)
        fresh.expect_silence(0.5, "(the discarded session's subscription delivered)")
        fresh.disconnect()
        # The new session (expiry 60) exists, without the old subscription.
        back = _persistent(b.port, cid, 60)
        check_equal(back.connack.session_present, True, "Session Present for the session "
                    "started by Clean Start 1 with expiry 60")
        pub.publish("clean/old", b"y", qos=1)
        back.expect_silence(0.5, "(the discarded subscription came back)")
        back.disconnect(session_expiry=0)


def test_MQTT_3_2_2_3_session_present_exactly_when_resumed():
    with broker() as b:
        cid = unique("sp-")
        first = _persistent(b.port, cid, 30)
        check_equal(first.connack.session_present, False, "Session Present for a new session")
        first.disconnect()
        second = _persistent(b.port, cid, 30)
        check_equal(second.connack.session_present, True, "Session Present when resuming")
        second.disconnect()
        third = v5_connect(b.port, cid, clean_start=True, session_expiry=30)
        check_equal(third.connack.session_present, False, "Session Present with Clean Start 1")
        third.disconnect(session_expiry=0)


# ---------------------------------------------------------------------------
# Session Expiry Interval on DISCONNECT

def test_disconnect_can_end_the_session_with_expiry_0():
    with broker() as b:
        cid = unique("dis0-")
        c = _persistent(b.port, cid, 60, [("dis0/t", 1)])
        c.disconnect(session_expiry=0)
        back = _persistent(b.port, cid, 60)
        check_equal(back.connack.session_present, False,
                    "Session Present after DISCONNECT with Session Expiry Interval 0")
        back.disconnect(session_expiry=0)


def test_disconnect_can_lengthen_the_session_expiry():
    with broker() as b:
        cid = unique("dislong-")
        c = _persistent(b.port, cid, 1, [("dislong/t", 1)])
        c.disconnect(session_expiry=60)
        time.sleep(2.2)
        back = _persistent(b.port, cid, 60)
        check_equal(back.connack.session_present, True, "Session Present 2.2 s after a "
                    "DISCONNECT that raised the expiry from 1 s to 60 s")
        back.disconnect(session_expiry=0)


def test_disconnect_can_shorten_the_session_expiry():
    with broker() as b:
        cid = unique("disshort-")
        c = _persistent(b.port, cid, 60, [("disshort/t", 1)])
        c.disconnect(session_expiry=1)
        time.sleep(2.5)
        back = _persistent(b.port, cid, 60)
        check_equal(back.connack.session_present, False, "Session Present 2.5 s after a "
                    "DISCONNECT that lowered the expiry to 1 s")
        back.disconnect(session_expiry=0)


def test_MQTT_3_14_2_2_expiry_on_disconnect_after_0_is_protocol_error_and_sends_will():
    """CONNECT without expiry, DISCONNECT with expiry 10: DISCONNECT 0x82 from the broker,
    and the will is published, since that DISCONNECT was not a valid one."""
    with broker() as b:
        w = _watcher(b.port, "bad-dis/will")
        c = v5_connect(b.port, unique("bad-dis-"),
                       will={"topic": "bad-dis/will", "payload": b"gone", "qos": 1})
        c.send(disconnect5(0, session_expiry=10))
        c.expect_disconnect(0x82, what="Session Expiry Interval 0 -> 10 on DISCONNECT")
        p = w.receive(3, what="the will after an invalid DISCONNECT")
        check_equal(p.payload, b"gone", "will payload")


# ---------------------------------------------------------------------------
# max-session-expiry, MQTT 3.1.1 sessions

def test_max_session_expiry_lowers_the_grant_and_says_so():
    aviary_only("max-session-expiry")
    with broker("--max-session-expiry", "2") as b:
        for asked, granted in ((0xFFFFFFFF, 2), (100, 2), (3, 2), (2, None), (1, None)):
            c = v5_connect(b.port, unique("cap-"), session_expiry=asked)
            check_equal(c.connack.props.get(SESSION_EXPIRY_INTERVAL), granted,
                        "CONNACK Session Expiry Interval for a request of %d with "
                        "max-session-expiry 2 (%r)" % (asked, c.connack))
            c.disconnect(session_expiry=0 if granted is None else None)
        cid = unique("capped-")
        c = _persistent(b.port, cid, 0xFFFFFFFF, [("capped/t", 1)])
        c.disconnect()
        time.sleep(0.5)
        back = _persistent(b.port, cid, 0xFFFFFFFF)
        check_equal(back.connack.session_present, True, "Session Present 0.5 s after")
        back.disconnect()
        time.sleep(3.2)
        late = _persistent(b.port, cid, 0xFFFFFFFF)
        check_equal(late.connack.session_present, False,
                    "Session Present 3.2 s after, with the expiry held to 2 s")


def test_mqtt311_persistent_session_never_expires_unless_capped():
    aviary_only("max-session-expiry for MQTT 3.1.1 clean session 0")
    with broker() as b:
        cid = unique("v311-")
        c, sp = raw_connect(b.port, cid, clean=False)
        c.disconnect()
        time.sleep(1.5)
        c, sp = raw_connect(b.port, cid, clean=False)
        check_equal(sp, True, "3.1.1 session present 1.5 s later without a cap")
        c.disconnect()
    with broker("--max-session-expiry", "1") as b:
        cid = unique("v311c-")
        c, sp = raw_connect(b.port, cid, clean=False)
        c.subscribe([("v311c/t", 1)])
        c.disconnect()
        time.sleep(2.5)
        c, sp = raw_connect(b.port, cid, clean=False)
        check_equal(sp, False, "3.1.1 session present 2.5 s later with max-session-expiry 1")
        # A 3.1.1 clean session is expiry 0: nothing kept at all.
        cid2 = unique("v311x-")
        c2, _ = raw_connect(b.port, cid2, clean=True)
        c2.disconnect()
        c2, sp = raw_connect(b.port, cid2, clean=False)
        check_equal(sp, False, "session present after a 3.1.1 clean session")


if __name__ == "__main__":
    run_tests(globals())
