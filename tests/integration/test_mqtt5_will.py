#!/usr/bin/python3
"""MQTT 5 wills: Will Delay Interval and its bound by the Session Expiry Interval, a
resumed session cancelling the will, take-over with Clean Start 1, DISCONNECT 0x00 and
0x04, will properties.

Timings use 1-3 s intervals with at least 1 s of margin; every wait is bounded.
Set AVIARY_TEST_PEER=mosquitto to run the standard-behaviour tests against mosquitto.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    check, check_equal, run_tests, unique)
from mqtt5 import (  # noqa: E402
    CONTENT_TYPE, CORRELATION_DATA, MESSAGE_EXPIRY_INTERVAL, PAYLOAD_FORMAT_INDICATOR,
    RESPONSE_TOPIC, USER_PROPERTY, broker, mosquitto_deviates, v5_connect)


def _watcher(port, topic):
    w = v5_connect(port, unique("watch-"))
    check_equal(w.subscribe((topic, 1)).codes, [1], "watcher's SUBACK")
    return w


def _time_will(w, topic, limit, what):
    """Seconds until the will arrives on watcher `w` (fails after `limit` s)."""
    t0 = time.monotonic()
    p = w.receive(limit, what=what)
    check_equal(p.resolved, topic, "will topic")
    return time.monotonic() - t0


def test_will_delay_publishes_the_will_after_the_delay():
    with broker() as b:
        w = _watcher(b.port, "wd/will")
        c = v5_connect(b.port, unique("wd-"), session_expiry=30,
                       will={"topic": "wd/will", "payload": b"late", "delay": 2})
        c.ping()
        c.abort()
        w.expect_silence(1.4, "(the will came before its 2 s delay)")
        dt = 1.4 + _time_will(w, "wd/will", 3.0, "the will 2 s after the abort")
        check(dt <= 4.0, "the will came %.1f s after the abort (delay 2 s)" % dt)


def test_will_delay_is_cut_short_by_session_expiry():
    """min(will delay, session expiry): delay 30, expiry 1 -> the will at about 1 s."""
    with broker() as b:
        w = _watcher(b.port, "wmin/will")
        c = v5_connect(b.port, unique("wmin-"), session_expiry=1,
                       will={"topic": "wmin/will", "payload": b"x", "delay": 30})
        c.ping()
        c.abort()
        dt = _time_will(w, "wmin/will", 4.0, "the will when the 1 s session ends")
        check(0.5 <= dt <= 3.5, "the will came %.1f s after the abort; session expiry 1 s" % dt)


def test_will_delay_with_session_expiry_0_is_immediate():
    mosquitto_deviates("it waits for the whole Will Delay Interval although the session "
                       "ended at the close (3.1.3.2.2)")
    with broker() as b:
        w = _watcher(b.port, "wnow/will")
        c = v5_connect(b.port, unique("wnow-"),
                       will={"topic": "wnow/will", "payload": b"x", "delay": 30})
        c.ping()
        c.abort()
        dt = _time_will(w, "wnow/will", 3.0, "the will when the expiry-0 session ends")
        check(dt <= 1.0, "the will came %.1f s after the abort; the session ended at once" % dt)


def test_will_without_delay_is_immediate():
    with broker() as b:
        w = _watcher(b.port, "wzero/will")
        c = v5_connect(b.port, unique("wzero-"), session_expiry=30,
                       will={"topic": "wzero/will", "payload": b"x", "delay": 0})
        c.ping()
        c.abort()
        dt = _time_will(w, "wzero/will", 3.0, "the will with delay 0")
        check(dt <= 1.0, "the will with delay 0 came %.1f s after the abort" % dt)


def test_MQTT_3_1_3_9_reconnect_within_the_delay_cancels_the_will():
    with broker() as b:
        w = _watcher(b.port, "wback/will")
        cid = unique("wback-")
        c = v5_connect(b.port, cid, clean_start=False, session_expiry=30,
                       will={"topic": "wback/will", "payload": b"x", "delay": 2})
        c.abort()
        time.sleep(0.3)
        back = v5_connect(b.port, cid, clean_start=False, session_expiry=30)
        check_equal(back.connack.session_present, True, "Session Present when coming back")
        w.expect_silence(2.8, "(the will was published although the session was resumed "
                         "within the will delay)")
        back.disconnect(session_expiry=0)


def test_take_over_with_clean_start_1_ends_the_session_and_sends_the_will():
    """3.1.3.2.2 (non-normative): a new connection with Clean Start 1 ends the old session,
    so its will is sent at once, whatever the will delay."""
    mosquitto_deviates("it never publishes the will when a Clean Start 1 connection ends "
                       "the session during the will delay (3.1.3.2.2)")
    with broker() as b:
        w = _watcher(b.port, "wtake/will")
        cid = unique("wtake-")
        c = v5_connect(b.port, cid, session_expiry=30,
                       will={"topic": "wtake/will", "payload": b"x", "delay": 30})
        c.ping()
        v5_connect(b.port, cid, clean_start=True)
        dt = _time_will(w, "wtake/will", 3.0, "the will when Clean Start 1 ended the session")
        check(dt <= 1.0, "the will came %.1f s after the take-over" % dt)


def test_MQTT_3_14_4_3_disconnect_0x00_discards_the_will():
    with broker() as b:
        w = _watcher(b.port, "wnorm/will")
        c = v5_connect(b.port, unique("wnorm-"), session_expiry=1,
                       will={"topic": "wnorm/will", "payload": b"x", "delay": 0})
        c.disconnect(0x00)
        w.expect_silence(1.8, "(a will after DISCONNECT 0x00, or when the 1 s session ended)")


def test_disconnect_0x04_publishes_the_will():
    with broker() as b:
        w = _watcher(b.port, "wwith/will")
        c = v5_connect(b.port, unique("wwith-"),
                       will={"topic": "wwith/will", "payload": b"on purpose", "qos": 1})
        c.disconnect(0x04)
        p = w.receive(3, what="the will after DISCONNECT 0x04")
        check_equal(p.payload, b"on purpose", "will payload")


def test_will_properties_travel_with_the_will():
    with broker() as b:
        w = _watcher(b.port, "wprops/will")
        user = [("who", "sensor-1"), ("why", "lost"), ("who", "again")]
        wprops = [(PAYLOAD_FORMAT_INDICATOR, 1), (MESSAGE_EXPIRY_INTERVAL, 60),
                  (CONTENT_TYPE, "text/plain"), (RESPONSE_TOPIC, "wprops/reply"),
                  (CORRELATION_DATA, b"\x00\xffcorr")] + [(USER_PROPERTY, kv) for kv in user]
        c = v5_connect(b.port, unique("wprops-"),
                       will={"topic": "wprops/will", "payload": "adi\u00f3s".encode(),
                             "qos": 1, "props": wprops})
        c.abort()
        p = w.receive(3, what="the will with properties")
        check_equal(p.payload, "adi\u00f3s".encode(), "will payload")
        got = p.props
        check_equal(got.get(PAYLOAD_FORMAT_INDICATOR), 1, "Payload Format Indicator")
        check_equal(got.get(CONTENT_TYPE), "text/plain", "Content Type")
        check_equal(got.get(RESPONSE_TOPIC), "wprops/reply", "Response Topic")
        check_equal(got.get(CORRELATION_DATA), b"\x00\xffcorr", "Correlation Data")
        check_equal(got.user, user, "User Properties in order")
        mei = got.get(MESSAGE_EXPIRY_INTERVAL)
        check(mei is not None and 58 <= mei <= 60, "Message Expiry Interval %r, expected "
              "about 60" % (mei,))


if __name__ == "__main__":
    run_tests(globals())
