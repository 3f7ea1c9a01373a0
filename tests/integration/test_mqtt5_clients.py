#!/usr/bin/python3
"""MQTT 5 features through the clients users run: python3-paho-mqtt (protocol MQTTv5) and
mosquitto_pub / mosquitto_sub / mosquitto_rr -V 5.

The wire-level checks of each feature are in the other test_mqtt5_*.py files (a raw client
sees every byte); here each feature is used the way an application uses it, so that a
broker that is right on paper but wrong for a real client library fails too.

Set AVIARY_TEST_PEER=mosquitto to run the standard-behaviour tests against mosquitto.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    Proc, check, check_equal, require_tool, run_tests, unique, wait_for)
from mqtt5 import (  # noqa: E402
    PacketTypes, Paho5Client, aviary_only, broker, is_aviary, mosquitto_pub5, mosquitto_sub5,
    paho_props)


def _mosquitto_lines(sub, prefix):
    return [line for line in sub.lines if line.startswith(prefix)]


# ---------------------------------------------------------------------------
# CONNECT and CONNACK

def test_paho_connack_announces_keep_alive_flow_and_alias_limits():
    aviary_only("aviaryd's default limits")
    with broker() as b:
        with Paho5Client(b.port, unique("ann-"), keepalive=1000) as c:
            props = c.connack[2]
            check_equal(getattr(props, "ServerKeepAlive", None), 300,
                        "Server Keep Alive for a keep-alive of 1000 s (keepalive-max 300)")
            check_equal(getattr(props, "ReceiveMaximum", None), 20, "Receive Maximum "
                        "(max-inflight)")
            check_equal(getattr(props, "TopicAliasMaximum", None), 10, "Topic Alias Maximum "
                        "(max-topic-aliases)")
            check(getattr(props, "MaximumPacketSize", 0) > 65536,
                  "Maximum Packet Size must leave room for a 64 KB payload: %r" % props)
            for name in ("RetainAvailable", "WildcardSubscriptionAvailable",
                         "SubscriptionIdentifierAvailable", "SharedSubscriptionAvailable"):
                check(getattr(props, name, 1) == 1, "%s is not 1: %r" % (name, props))


def test_paho_empty_client_id_gets_an_assigned_identifier_and_response_information():
    with broker() as b:
        asked = paho_props(PacketTypes.CONNECT, RequestResponseInformation=1)
        with Paho5Client(b.port, "", properties=asked) as c:
            props = c.connack[2]
            assigned = getattr(props, "AssignedClientIdentifier", "")
            check(assigned, "no Assigned Client Identifier for an empty client id: %r" % props)
            if is_aviary():  # a server may leave it out (mosquitto does)
                check(getattr(props, "ResponseInformation", ""),
                      "no Response Information though it was requested: %r" % props)


# ---------------------------------------------------------------------------
# Sessions and wills

def _session_client(port, cid, clean_start=False, expiry=60):
    props = paho_props(PacketTypes.CONNECT, SessionExpiryInterval=expiry)
    return Paho5Client(port, cid, clean_start=clean_start, properties=props)


def test_paho_session_expiry_clean_start_and_expiry_changed_at_disconnect():
    with broker() as b:
        cid = unique("sess-")
        first = _session_client(b.port, cid, clean_start=True)
        with first:
            check_equal(first.subscribe("ps/t", 1), [1], "SUBACK")
        mosquitto_pub5(b.port, "-t", "ps/t", "-m", "while-away", "-q", "1")

        again = _session_client(b.port, cid)
        check_equal(again.session_present, True, "Session Present when resumed in time")
        msgs = again.wait_messages(1)
        check_equal(msgs[0].payload, b"while-away", "the message queued while away")
        # Session Expiry Interval 0 on DISCONNECT ends the session at once.
        again.close(properties=paho_props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))

        third = _session_client(b.port, cid)
        with third:
            check_equal(third.session_present, False,
                        "Session Present after DISCONNECT set the expiry to 0")
        fresh = _session_client(b.port, cid, clean_start=True)
        with fresh:
            check_equal(fresh.session_present, False, "Session Present with Clean Start 1")


def test_paho_will_waits_for_its_delay_and_keeps_its_properties():
    with broker() as b:
        topic = unique("wd/")
        with Paho5Client(b.port, unique("watch-")) as watcher:
            watcher.subscribe(topic, 1)
            will_props = paho_props(PacketTypes.WILLMESSAGE, WillDelayInterval=2,
                                    ContentType="text/plain", UserProperty=[("why", "test")])
            dying = Paho5Client(
                b.port, unique("dying-"),
                properties=paho_props(PacketTypes.CONNECT, SessionExpiryInterval=30),
                will={"topic": topic, "payload": b"gone", "qos": 1, "properties": will_props})
            t0 = time.monotonic()
            dying.close(reasoncode=0x04)  # Disconnect with Will Message
            msgs = watcher.wait_messages(1, timeout=10)
            took = time.monotonic() - t0
            check(took >= 1.5, "the will came %.1f s after the close, before its delay of "
                  "2 s" % took)
            m = msgs[0]
            check_equal(m.payload, b"gone", "will payload")
            check_equal(m.prop("ContentType"), "text/plain", "the will's Content Type")
            check_equal(m.user, [("why", "test")], "the will's User Property")


# ---------------------------------------------------------------------------
# Messages

def test_mosquitto_message_expiry_counts_down_and_expired_retained_messages_go():
    with broker() as b:
        mosquitto_pub5(b.port, "-t", "mx/kept", "-m", "kept", "-r", "-q", "1",
                       "-D", "publish", "message-expiry-interval", "100")
        mosquitto_pub5(b.port, "-t", "mx/gone", "-m", "gone", "-r", "-q", "1",
                       "-D", "publish", "message-expiry-interval", "1")
        time.sleep(2.2)
        sub = mosquitto_sub5(b.port, "-t", "mx/#", "-C", "1", "-W", "5", "-F", "%t %p %E")
        with sub:
            check_equal(sub.wait(10), 0, "mosquitto_sub exit status")
            got = _mosquitto_lines(sub, "mx/")
            check_equal(len(got), 1, "retained messages left after one expired: %r" % got)
            topic, payload, left = got[0].split()
            check_equal((topic, payload), ("mx/kept", "kept"), "the unexpired message")
            check(95 <= int(left) < 100, "Message Expiry Interval left: %s of 100" % left)


def test_paho_topic_alias_from_the_client_reaches_mosquitto_sub():
    with broker() as b:
        topic = unique("ta/")
        sub = mosquitto_sub5(b.port, "-t", topic, "-C", "2", "-W", "10", "-F", "%t %p")
        with sub, Paho5Client(b.port, unique("alias-")) as c:
            c.publish(topic, b"named", 1,
                      properties=paho_props(PacketTypes.PUBLISH, TopicAlias=1))
            c.publish("", b"aliased", 1,
                      properties=paho_props(PacketTypes.PUBLISH, TopicAlias=1))
            check_equal(sub.wait(10), 0, "mosquitto_sub exit status")
            check_equal(_mosquitto_lines(sub, topic), ["%s named" % topic, "%s aliased" % topic],
                        "messages published by name, then by alias")


def test_mosquitto_sub_maximum_packet_size_is_honoured():
    with broker() as b:
        sub = mosquitto_sub5(b.port, "-t", "mp/#", "-C", "1", "-W", "10", "-F", "%t %l",
                             "-D", "connect", "maximum-packet-size", "200")
        with sub:
            mosquitto_pub5(b.port, "-t", "mp/big", "-m", "y" * 400, "-q", "1")
            mosquitto_pub5(b.port, "-t", "mp/small", "-m", "hi", "-q", "1")
            check_equal(sub.wait(10), 0, "mosquitto_sub exit status")
            check_equal(_mosquitto_lines(sub, "mp/"), ["mp/small 2"],
                        "what a client with Maximum Packet Size 200 received")


def test_mosquitto_rr_request_answered_by_a_paho_responder():
    """mosquitto_rr sends Response Topic and Correlation Data; a paho v5 responder answers
    on that topic with the same Correlation Data, and mosquitto_rr prints the answer."""
    with broker() as b:
        with Paho5Client(b.port, unique("responder-")) as responder:
            responder.subscribe("rr/req", 1)
            rr = Proc([require_tool("mosquitto_rr"), "-h", "127.0.0.1", "-p", b.port,
                       "-V", "5", "-t", "rr/req", "-e", unique("rr/resp/"), "-m", "ping",
                       "-q", "1", "-W", "10"])
            with rr:
                req = responder.wait_messages(1)[0]
                check_equal(req.payload, b"ping", "the request")
                reply_to = req.prop("ResponseTopic")
                check(reply_to and reply_to.startswith("rr/resp/"),
                      "Response Topic of the request: %r" % reply_to)
                corr = req.prop("CorrelationData")
                props = paho_props(PacketTypes.PUBLISH, CorrelationData=corr) if corr \
                    else None
                responder.publish(reply_to, b"pong", 1, properties=props)
                check_equal(rr.wait(10), 0, "mosquitto_rr exit status (stderr %r)"
                            % rr.stderr())
                check_equal(rr.lines, ["pong"], "what mosquitto_rr printed")


def test_mosquitto_shared_subscription_spreads_messages_evenly():
    with broker() as b:
        topic = unique("sh/")
        members = [mosquitto_sub5(b.port, "-t", "$share/g/" + topic, "-q", "1", "-C", "5",
                                  "-W", "10", "-F", "%p") for _ in range(2)]
        try:
            for i in range(10):
                mosquitto_pub5(b.port, "-t", topic, "-m", "m%d" % i, "-q", "1")
            got = []
            for m in members:
                check_equal(m.wait(10), 0, "shared member's exit status")
                got.append([line for line in m.lines if line.startswith("m")])
        finally:
            for m in members:
                m.close()
        check_equal([len(g) for g in got], [5, 5], "messages per member: %r" % got)
        check_equal(sorted(got[0] + got[1]), sorted("m%d" % i for i in range(10)),
                    "every message to exactly one member")


def test_mosquitto_sub_identifier_and_retain_as_published():
    with broker() as b:
        topic = unique("ra/")
        rap = mosquitto_sub5(b.port, "-t", topic, "-C", "1", "-W", "10", "-F", "%p %r %S",
                             "--retain-as-published", "-D", "subscribe",
                             "subscription-identifier", "7")
        plain = mosquitto_sub5(b.port, "-t", topic, "-C", "1", "-W", "10", "-F", "%p %r")
        with rap, plain:
            mosquitto_pub5(b.port, "-t", topic, "-m", "live", "-r", "-q", "1")
            check_equal(rap.wait(10), 0, "mosquitto_sub --retain-as-published exit status")
            check_equal(plain.wait(10), 0, "mosquitto_sub exit status")
            check_equal(_mosquitto_lines(rap, "live"), ["live 1 7"],
                        "Retain As Published keeps the flag; Subscription Identifier 7")
            check_equal(_mosquitto_lines(plain, "live"), ["live 0"],
                        "a live message to a plain subscription has no retain flag")
        mosquitto_pub5(b.port, "-t", topic, "-n", "-r", "-q", "1")


# ---------------------------------------------------------------------------
# Limits, answered with reason codes that the clients show

def test_limits_reach_paho_as_reason_codes():
    aviary_only("aviary's limits")
    with broker() as b:
        Paho5Client(b.port, "c" * 65, expect_rc=0x85).close()
        with Paho5Client(b.port, unique("subs-")) as c:
            for i in range(100):
                check_equal(c.subscribe("lim/%d" % i, 0), [0], "SUBACK %d" % (i + 1))
            check_equal(c.subscribe("lim/100", 0), [0x97], "the 101st subscription's SUBACK")
        big = Paho5Client(b.port, unique("big-"))
        try:
            big.publish("lim/big", b"z" * 65537, 0)
            wait_for(big.disconnected.is_set, 5, what="the broker to disconnect the client")
            check_equal(big.disconnect_rc, 0x95, "DISCONNECT reason for a 65537-byte payload")
            reason = getattr(big.disconnect_props, "ReasonString", "")
            check("max-payload" in reason, "Reason String %r does not name max-payload"
                  % reason)
        finally:
            big.close()


def test_limits_reach_mosquitto_pub_with_their_reason_strings():
    aviary_only("aviary's limits")
    with broker() as b:
        topic = "long/" + "x" * 130
        r = mosquitto_pub5(b.port, "-t", topic, "-m", "x", "-q", "1")
        err = r.stderr.decode("utf-8", "replace")
        check("Topic Name invalid" in err and "max-topic-length 128" in err,
              "mosquitto_pub's report of a topic over the limit: %r" % err)
        r = mosquitto_pub5(b.port, "-t", "pf/t", "-m", "\udcff", "-q", "1",
                           "-D", "publish", "payload-format-indicator", "1")
        err = r.stderr.decode("utf-8", "replace")
        check("Payload format invalid" in err,
              "mosquitto_pub's report of a payload that is not UTF-8: %r" % err)


if __name__ == "__main__":
    run_tests(globals())
