#!/usr/bin/python3
"""MQTT 5 CONNECT / CONNACK and the broker's DISCONNECT: the properties aviary announces,
refusals with reason codes and reason strings, Server Keep Alive, Assigned Client
Identifier, Response Information, protocol errors around the connection (second
CONNECT, AUTH), take-over, keep-alive and idle timeouts, shutdown, and the half-close
after a DISCONNECT.

Set AVIARY_TEST_PEER=mosquitto to run the standard-behaviour tests against mosquitto.
"""

import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    CONNACK, DISCONNECT, PINGREQ_PACKET, Closed, RawClient, Timeout, check, check_equal,
    raw_connect, run_tests, unique)
from mqtt5 import (  # noqa: E402
    ASSIGNED_CLIENT_IDENTIFIER, MAXIMUM_PACKET_SIZE, MAXIMUM_QOS, RECEIVE_MAXIMUM,
    RESPONSE_INFORMATION, RETAIN_AVAILABLE, SERVER_KEEP_ALIVE,
    SESSION_EXPIRY_INTERVAL, SHARED_SUBSCRIPTION_AVAILABLE, SUBSCRIPTION_IDENTIFIER_AVAILABLE,
    TOPIC_ALIAS_MAXIMUM, WILDCARD_SUBSCRIPTION_AVAILABLE, V5Client, auth5, aviary_only, broker,
    check_healthy, connect5, decode, healthy_pair, is_aviary, mosquitto_deviates,
    mosquitto_differs, publish5, split_packets, summarize, v5_connect)


def expect_refused(port, reason, what, reason_string=None, **connect_kw):
    """CONNECT (v5) must get CONNACK `reason` with Session Present 0, then the close.

    With aviary the CONNACK must carry a Reason String (matching `reason_string`, a
    regular expression, when given). Returns the CONNACK."""
    c = V5Client(port)
    with c:
        ack = c.connect(connect_kw.pop("client_id", unique("ref-")), expect_reason=reason,
                        **connect_kw)
        rs = ack.props.reason_string
        if is_aviary():
            check(rs, "aviary's CONNACK %s for %s has no Reason String: %r" % (
                "0x%02X" % reason, what, ack))
            if reason_string:
                check(re.search(reason_string, rs, re.I),
                      "CONNACK Reason String %r for %s does not match /%s/"
                      % (rs, what, reason_string))
        rest = c.packets_until_closed(5, "the close after refusing " + what)
        check(not rest, "packets after a refusing CONNACK for %s: %r" % (what, rest))
        return ack


# ---------------------------------------------------------------------------
# CONNACK properties

def test_MQTT_3_2_2_connack_success_is_well_formed():
    """Reason 0x00, Session Present 0 for a clean start, only CONNACK properties (the
    decoder checks that), and never Maximum QoS 2 (a value other than 0/1 is a
    Protocol Error, 3.2.2.3.4)."""
    with broker() as b:
        c = v5_connect(b.port, unique("wf-"), keepalive=30)
        ack = c.connack
        check_equal(ack.session_present, False, "Session Present for Clean Start 1")
        check(ack.props.get(MAXIMUM_QOS) in (None, 0, 1),
              "Maximum QoS must be absent, 0 or 1: %r" % ack)
        check(not ack.props.has(ASSIGNED_CLIENT_IDENTIFIER),
              "Assigned Client Identifier for a client that sent an id: %r" % ack)
        check(not ack.props.has(SERVER_KEEP_ALIVE),
              "Server Keep Alive although keep-alive 30 is within the limits: %r" % ack)
        check(not ack.props.has(RESPONSE_INFORMATION),
              "Response Information without Request Response Information (MQTT-3.1.2-28)")
        rm = ack.props.get(RECEIVE_MAXIMUM)
        check(rm is None or rm > 0, "Receive Maximum 0 is a Protocol Error: %r" % ack)
        c.ping()


def test_connack_announces_aviary_defaults():
    """Design: Receive Maximum = max-inflight (20), Maximum Packet Size > 65536, Topic Alias
    Maximum = max-topic-aliases (10), Retain / Wildcard / Subscription Identifier / Shared
    Subscription Available all 1; no Session Expiry Interval when nothing was lowered."""
    aviary_only("the CONNACK properties always present")
    with broker() as b:
        c = v5_connect(b.port, unique("def-"), session_expiry=30)
        p = c.connack.props
        check_equal(p.get(RECEIVE_MAXIMUM), 20, "Receive Maximum (max-inflight 20) in %r" % p)
        mps = p.get(MAXIMUM_PACKET_SIZE)
        check(mps is not None and mps > 65536,
              "Maximum Packet Size must be present and > 65536 with max-payload 65536: %r" % p)
        check_equal(p.get(TOPIC_ALIAS_MAXIMUM), 10, "Topic Alias Maximum (default 10)")
        for pid, name in ((RETAIN_AVAILABLE, "Retain Available"),
                          (WILDCARD_SUBSCRIPTION_AVAILABLE, "Wildcard Subscription Available"),
                          (SUBSCRIPTION_IDENTIFIER_AVAILABLE,
                           "Subscription Identifiers Available"),
                          (SHARED_SUBSCRIPTION_AVAILABLE, "Shared Subscription Available")):
            check_equal(p.get(pid), 1, name)
        check(not p.has(SESSION_EXPIRY_INTERVAL),
              "Session Expiry Interval in CONNACK although 30 s was not lowered: %r" % p)
        check(not p.has(MAXIMUM_QOS), "Maximum QoS although aviary supports QoS 2: %r" % p)


def test_connack_follows_max_inflight_max_topic_aliases_and_max_payload():
    aviary_only("CONNACK properties from directives")
    with broker("--max-inflight", "5", "--max-topic-aliases", "3") as b:
        p = v5_connect(b.port).connack.props
        check_equal(p.get(RECEIVE_MAXIMUM), 5, "Receive Maximum with --max-inflight 5")
        check_equal(p.get(TOPIC_ALIAS_MAXIMUM), 3, "Topic Alias Maximum with "
                    "--max-topic-aliases 3")
        default_mps = p.get(MAXIMUM_PACKET_SIZE)
    with broker("--max-topic-aliases", "0", "--max-payload", "1000") as b:
        p = v5_connect(b.port).connack.props
        check(not p.has(TOPIC_ALIAS_MAXIMUM),
              "Topic Alias Maximum must be omitted with --max-topic-aliases 0: %r" % p)
        mps = p.get(MAXIMUM_PACKET_SIZE)
        check(mps is not None and mps > 1000 and default_mps > 65536,
              "Maximum Packet Size %r with --max-payload 1000, %r by default; expected above "
              "1000 and above 65536" % (mps, default_mps))


# ---------------------------------------------------------------------------
# Server Keep Alive

def test_MQTT_3_2_2_21_server_keep_alive_when_keep_alive_is_lowered():
    """keepalive-max 30: a request of 60 or of 0 is changed (Server Keep Alive 30); 30 and
    10 are kept (no Server Keep Alive, MQTT-3.2.2-22)."""
    with broker("--keepalive-max", "30") as b:
        for asked, expect in ((60, 30), (30, None), (10, None), (0, 30)):
            ack = v5_connect(b.port, unique("ka-"), keepalive=asked).connack
            check_equal(ack.props.get(SERVER_KEEP_ALIVE), expect,
                        "Server Keep Alive for keep-alive %d with keepalive-max 30 (%r)"
                        % (asked, ack))


def test_server_keep_alive_raised_by_keepalive_min_and_zero_becomes_keepalive_max():
    aviary_only("keepalive-min, and keep-alive 0 counted as changed")
    with broker("--keepalive-min", "5", "--keepalive-max", "300") as b:
        for asked, expect in ((2, 5), (5, None), (300, None), (301, 300), (0, 300)):
            ack = v5_connect(b.port, unique("ka-"), keepalive=asked).connack
            check_equal(ack.props.get(SERVER_KEEP_ALIVE), expect,
                        "Server Keep Alive for keep-alive %d with keepalive-min 5, "
                        "keepalive-max 300 (%r)" % (asked, ack))


def test_server_keep_alive_is_enforced_with_disconnect_0x8d():
    """Keep-alive 0 with keepalive-max 2: Server Keep Alive 2, and a silent client gets
    DISCONNECT 0x8D after about 3 s (1.5 x 2)."""
    mosquitto_differs("it closes a timed-out client without DISCONNECT, some seconds late")
    with broker("--keepalive-max", "2") as b:
        c = v5_connect(b.port, unique("silent-"), keepalive=0)
        check_equal(c.connack.props.get(SERVER_KEEP_ALIVE), 2, "Server Keep Alive")
        t0 = time.monotonic()
        c.expect_disconnect(0x8D, 8, "keep-alive timeout")
        dt = time.monotonic() - t0
        check(2.0 <= dt <= 4.5, "closed after %.2f s; Server Keep Alive 2 means about 3 s" % dt)


def test_keep_alive_traffic_keeps_a_v5_client_connected():
    with broker() as b:
        c = v5_connect(b.port, unique("chatty-"), keepalive=1)
        for _ in range(4):
            time.sleep(0.6)
            c.ping()


# ---------------------------------------------------------------------------
# Assigned Client Identifier, Response Information

def test_MQTT_3_2_2_16_empty_client_id_gets_assigned_identifier():
    """Clean Start 1 and 0 both allowed; each gets a distinct id (aviary: "auto-...")
    not used by any other session; the assigned id then works like any other."""
    with broker() as b:
        ids = []
        clients = []
        for clean in (True, False, True):
            c = V5Client(b.port)
            ack = c.connect("", clean_start=clean)
            aid = ack.props.get(ASSIGNED_CLIENT_IDENTIFIER)
            check(aid, "no Assigned Client Identifier for an empty id with Clean Start %d: %r"
                  % (clean, ack))
            check(not ack.session_present, "Session Present for a brand new assigned id")
            if is_aviary():
                check(aid.startswith("auto-"), "assigned id %r does not start with 'auto-'"
                      % aid)
            ids.append(aid)
            clients.append(c)
        check_equal(len(set(ids)), 3, "distinct assigned ids %r" % ids)
        for c in clients:
            c.ping()
        # The assigned id is a real client id: connecting with it takes the session over.
        again = v5_connect(b.port, ids[0])
        got = clients[0].packets_until_closed(3, "the take-over of assigned id %r" % ids[0])
        check(all(p.type == DISCONNECT and p.reason == 0x8E for p in got),
              "before the take-over close: %r" % got)
        again.ping()
        clients[1].ping()


def test_response_information_when_requested():
    """Request Response Information 1: "response/" + client id when the id has only topic
    characters; omitted otherwise, and always omitted without the request."""
    aviary_only("Response Information")
    with broker() as b:
        cid = "resp-" + unique("ri")[1:] + "_x.y"
        ack = v5_connect(b.port, cid, request_response_info=1).connack
        check_equal(ack.props.get(RESPONSE_INFORMATION), "response/" + cid,
                    "Response Information for client id %r" % cid)
        for odd in ("dev/1", "dev#1", "dev+1", "d\u00e9v"):
            ack = v5_connect(b.port, odd, request_response_info=1).connack
            check(not ack.props.has(RESPONSE_INFORMATION),
                  "Response Information for client id %r (not only topic characters): %r"
                  % (odd, ack))
        for rri in (0, None):
            ack = v5_connect(b.port, unique("nori-"), request_response_info=rri).connack
            check(not ack.props.has(RESPONSE_INFORMATION),
                  "Response Information with Request Response Information %r "
                  "(MQTT-3.1.2-28): %r" % (rri, ack))


# ---------------------------------------------------------------------------
# Refusals

def _unsupported(port, what, **connect_kw):
    c = RawClient(port)
    with c:
        c.send(connect5(unique("lvl-"), **connect_kw))
        ack = c.expect(CONNACK, what="CONNACK for " + what)
        check(len(ack.body) >= 2 and ack.body[1] == 0x84,
              "CONNACK for %s: expected reason 0x84, got %r" % (what, ack))
        check_equal(ack.body[0], 0, "Session Present of a refusal")
        if len(ack.body) > 2:
            rs = decode(ack).props.reason_string
            check(rs, "CONNACK 0x84 without a Reason String: %r" % decode(ack))
        rest = c.expect_closed(5, "the close after CONNACK 0x84")
        check(not rest, "packets after CONNACK 0x84: %r" % rest)


def test_MQTT_3_1_2_1_unknown_protocol_name_is_closed():
    """A name that is not MQTT's may be another protocol altogether: no CONNACK, which
    would be MQTT, just the close (MQTT 5 3.1.2.1 allows either)."""
    with broker() as b:
        for name in ("MQTX", "mqtt"):
            c = RawClient(b.port)
            with c:
                c.send(connect5(unique("name-"), protocol_name=name))
                rest = c.expect_closed(5, "the close after protocol name %r" % name)
                check(not rest, "packets for protocol name %r: %r" % (name, rest))
        v5_connect(b.port).ping()


def test_MQTT_3_1_2_2_protocol_level_6_gets_0x84():
    """A newer client: MQTT 5's CONNACK 0x84, with a Reason String (MQTT 5 3.1.2.2)."""
    mosquitto_differs("it answers a level-6 CONNECT with an MQTT 3.1.1 CONNACK 0x01")
    with broker() as b:
        for level in (6, 0x7F):
            _unsupported(b.port, "protocol level %d" % level, version=level)
        v5_connect(b.port).ping()


def test_MQTT_4_12_0_1_authentication_method_gets_0x8c():
    """aviary offers no enhanced authentication: CONNACK 0x8C and the close."""
    with broker() as b:
        sub, pub, topic = healthy_pair(b.port)
        expect_refused(b.port, 0x8C, "an Authentication Method", auth_method="SCRAM-SHA-1",
                       auth_data=b"client-first")
        expect_refused(b.port, 0x8C, "an Authentication Method without data",
                       auth_method="PLAIN")
        check_healthy(sub, pub, topic)


# ---------------------------------------------------------------------------
# Protocol errors after CONNECT

def test_MQTT_3_1_0_2_second_connect_is_protocol_error_0x82():
    mosquitto_differs("it closes without DISCONNECT (4.13.1: SHOULD send one)")
    with broker() as b:
        sub, pub, topic = healthy_pair(b.port)
        c = v5_connect(b.port, unique("twice-"))
        c.send(connect5(unique("again-")))
        c.expect_disconnect(0x82, what="a second CONNECT")
        check_healthy(sub, pub, topic)


def test_MQTT_4_12_0_7_auth_packet_is_protocol_error_0x82():
    mosquitto_differs("it closes without DISCONNECT (4.13.1: SHOULD send one)")
    with broker() as b:
        sub, pub, topic = healthy_pair(b.port)
        for reason in (0x18, 0x19, 0x00):
            c = v5_connect(b.port, unique("auth-"))
            c.send(auth5(reason))
            c.expect_disconnect(0x82, what="an AUTH packet with reason 0x%02X" % reason)
        check_healthy(sub, pub, topic)


def test_MQTT_4_13_1_malformed_packet_gets_0x81():
    """Codec errors: Property Length past the end, a property not allowed in PUBLISH,
    an unknown property identifier, a string past the packet."""
    with broker() as b:
        sub, pub, topic = healthy_pair(b.port)
        cases = [
            (b"\x30\x07\x00\x03a/b\x09x", "Property Length 9 with 1 byte left"),
            (publish5("m/x", b"p", qos=1, pid=1, props=[(0x11, 5)]),
             "Session Expiry Interval in PUBLISH"),
            (b"\x30\x08\x00\x03m/x\x02\x7f\x00", "unknown property 0x7F"),
            (b"\x30\x04\x00\x09m/", "a topic longer than the packet"),
        ]
        for data, what in cases:
            c = v5_connect(b.port, unique("mal-"))
            c.send(data)
            c.expect_disconnect(0x81, what=what)
        check_healthy(sub, pub, topic)


# ---------------------------------------------------------------------------
# DISCONNECT from the broker

def test_MQTT_3_1_4_3_session_taken_over_gets_0x8e():
    mosquitto_deviates("it closes the old connection without DISCONNECT 0x8E (MQTT-3.1.4-3)")
    with broker() as b:
        cid = unique("owner-")
        first = v5_connect(b.port, cid)
        first.ping()
        second = v5_connect(b.port, cid)
        first.expect_disconnect(0x8E, what="session taken over")
        second.ping()
        # A 3.1.1 connection taken over by a v5 one gets no DISCONNECT, just the close.
        old, _ = raw_connect(b.port, cid + "-311")
        v5_connect(b.port, cid + "-311")
        got = old.expect_closed(5, "the 3.1.1 connection to be closed by the take-over")
        check(not got, "a 3.1.1 connection was sent %r before the take-over close" % got)


def test_sigterm_sends_0x8b_to_v5_clients_only():
    mosquitto_differs("it closes connections at shutdown without DISCONNECT 0x8B")
    with broker() as b:
        v5 = v5_connect(b.port, unique("v5-"))
        v5.ping()
        old, _ = raw_connect(b.port, unique("v311-"))
        old.ping()
        rc, _ = b.terminate()
        check_equal(rc, 0, "exit status after SIGTERM")
        v5.expect_disconnect(0x8B, what="server shutting down")
        got = old.expect_closed(5, "the 3.1.1 connection to be closed at shutdown")
        check(not got, "a 3.1.1 client was sent %r at shutdown" % got)


def _drain(c, timeout):
    """Packets that arrive within `timeout` s, and whether the connection closed."""
    got = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            got.append(c.read5(max(deadline - time.monotonic(), 0.0)))
        except Timeout:
            return got, False
        except Closed:
            return got, True


def test_client_ids_are_logged_escaped_and_cut():
    """A client id is shown in the log with its control bytes and backslashes escaped, so it
    cannot forge a line, and cut with "..." to fit one; the lines of its connection and of
    its session show it alike. A plain id is shown as it is."""
    aviary_only("the log's form of a client id")
    odd = "a\nb\\c" + "\x01" * 40
    plain = unique("plain")
    with broker() as b:
        mark = b.log_mark()
        for client_id in (odd, plain):
            c = V5Client(b.port)
            c.connect(client_id, session_expiry=1)
            c.disconnect_and_wait()
        shown = r"a\\x0ab\\x5cc(?:\\x01)+\.\.\."
        b.wait_log(r"client %s: session expired" % shown, since=mark)
        b.wait_log(r"client %s: session expired" % re.escape(plain), since=mark)
        text = b.log_text(mark)
        for what in ("connected from", r"\(127\.0\.0\.1:\d+, conn \d+\): closed"):
            line = re.search(r"client (%s) %s" % (shown, what), text)
            check(line, "no line /client %s %s/ in the log:\n%s" % (shown, what, text[-3000:]))
            check(len(line.group(1)) <= 79, "the client id is shown with %d bytes, over 79: %s"
                  % (len(line.group(1)), line.group(1)))
            check(re.search(r"client %s %s" % (re.escape(plain), what), text),
                  "no line /client %s %s/ in the log" % (plain, what))
        check("a\nb" not in text, "the client id's newline reached the log")


def test_idle_timeout_gets_0x8d():
    """idle-timeout 2: a client that only pings is closed with DISCONNECT 0x8D and a
    Reason String naming idle-timeout 2; a client that publishes stays."""
    aviary_only("idle-timeout")
    with broker("--idle-timeout", "2") as b:
        idle = v5_connect(b.port, unique("idle-"))
        busy = v5_connect(b.port, unique("busy-"))
        t0 = time.monotonic()
        seen, closed = [], False
        while time.monotonic() - t0 < 5.0 and not closed:
            idle.try_send(PINGREQ_PACKET)  # pings do not count as activity
            busy.publish("idle/x", b"x")
            got, closed = _drain(idle, 0.25)
            seen += got
        check(closed, "an idle client outlived idle-timeout 2 by 3 s")
        took = time.monotonic() - t0
        discs = [p for p in seen if p.type == DISCONNECT]
        check(len(discs) == 1 and discs[0] is seen[-1],
              "expected one DISCONNECT last before the close, got %r" % seen)
        check_equal(discs[0].reason, 0x8D, "DISCONNECT reason for idle-timeout")
        rs = discs[0].props.reason_string or ""
        check("idle-timeout" in rs and re.search(r"\b2\b", rs),
              "Reason String %r does not name idle-timeout 2" % rs)
        check(took >= 1.5, "closed after %.1f s, before idle-timeout 2" % took)
        busy.ping()


def test_client_not_reading_its_output_gets_0x8d():
    """A client that keeps sending PINGREQ but never reads is paused, then closed at its
    keep-alive with DISCONNECT 0x8D, which it still finds at the end of its input."""
    aviary_only("0x8D for a client not reading its output")
    with broker("--max-outbound-bytes", "16k") as b:
        mark = b.log_mark()
        c = v5_connect(b.port, unique("deaf-"), keepalive=2)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.sock.settimeout(0.2)
        deadline = time.monotonic() + 4
        sent = 0
        while time.monotonic() < deadline and sent < 32 * 1024 * 1024:
            try:
                sent += c.sock.send(PINGREQ_PACKET * 4096)
            except socket.timeout:
                continue
            except OSError:
                break
        b.wait_log(r"not reading its output", since=mark, timeout=8)
        # Megabytes of PINGRESP wait in the kernel: read them with a large buffer.
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        c.sock.settimeout(5)
        data, how = c.read_raw_until_closed(15)
        packets, left = split_packets(data)
        check(packets, "nothing before the close (%s)" % how)
        others = [p for p in packets[:-1] if p.name != "PINGRESP"]
        check(not others and not left, "expected PINGRESPs then DISCONNECT, got %s and %d "
              "stray bytes" % (summarize(others), left))
        last = packets[-1]
        check(last.type == DISCONNECT and last.reason == 0x8D,
              "the last packet before the close is %r, not DISCONNECT 0x8D" % last)
        check(last.props.reason_string, "DISCONNECT 0x8D without a Reason String: %r" % last)


def test_disconnect_then_half_close_lets_a_writing_client_read_it():
    """After its DISCONNECT the broker half-closes and drains input for a moment: a client
    still writing gets no reset, reads the DISCONNECT, and nothing after it."""
    aviary_only("half-close and drain after DISCONNECT")
    with broker() as b:
        sub, pub, topic = healthy_pair(b.port)
        c = v5_connect(b.port, unique("writer-"))
        c.send(auth5() + PINGREQ_PACKET)
        errors = []
        t_end = time.monotonic() + 0.3
        while time.monotonic() < t_end:
            try:
                c.sock.sendall(PINGREQ_PACKET * 64)
            except OSError as e:
                errors.append(e)
                break
            time.sleep(0.01)
        check(not errors, "writing for 0.3 s after the protocol error failed: %r "
              "(the broker reset the connection instead of draining)" % errors)
        c.expect_disconnect(0x82, what="an AUTH packet followed by PINGREQs")
        check_healthy(sub, pub, topic)


if __name__ == "__main__":
    run_tests(globals())
