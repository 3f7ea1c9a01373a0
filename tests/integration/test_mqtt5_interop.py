#!/usr/bin/python3
"""MQTT 5 next to MQTT 3.1.1: messages from 3.1.1 publishers reach v5 subscribers without
properties, messages (and wills, retained messages) from v5 publishers with properties
reach 3.1.1 subscribers with the payload intact and no property bytes; paho-mqtt and the
mosquitto clients in both versions on one broker; MQTT 5 over ws://, wss:// and tls://.

Set AVIARY_TEST_PEER=mosquitto to run these against mosquitto.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    HOST, PUBLISH, PUBREL, PahoClient, Publish, Skip, check, check_equal, mosquitto_pub,
    mosquitto_sub, puback_packet, pubcomp_packet, pubrec_packet, raw_connect, run_tests, unique,
    wait_for)
from mqtt5 import (  # noqa: E402
    CONTENT_TYPE, CORRELATION_DATA, MESSAGE_EXPIRY_INTERVAL, PAYLOAD_FORMAT_INDICATOR,
    SUBSCRIPTION_IDENTIFIER, TOPIC_ALIAS, TOPIC_ALIAS_MAXIMUM, USER_PROPERTY, PacketTypes,
    Paho5Client, RESPONSE_TOPIC, V5Client, auth5, broker, is_aviary, mosquitto_pub5,
    mosquitto_sub5, paho_props, v5_connect)
import test_tls  # noqa: E402  (its certificates)

PROPS = [(PAYLOAD_FORMAT_INDICATOR, 1), (MESSAGE_EXPIRY_INTERVAL, 300),
         (CONTENT_TYPE, "text/plain"), (RESPONSE_TOPIC, "x/reply"),
         (CORRELATION_DATA, b"\x01\x02"), (USER_PROPERTY, ("k", "v")),
         (USER_PROPERTY, ("k2", "v2"))]


def _exact_311_publish(pkt, topic, payload, qos):
    """A 3.1.1 PUBLISH body is exactly topic, packet id (QoS > 0), payload: no property
    bytes may slip in."""
    p = Publish(pkt)
    check_equal((p.topic, p.payload, p.qos), (topic, payload, qos),
                "3.1.1 delivery (topic, payload, qos)")
    expect_len = 2 + len(topic.encode()) + (2 if qos else 0) + len(payload)
    check_equal(len(pkt.body), expect_len, "length of the 3.1.1 PUBLISH body (property bytes "
                "would make it longer)")
    return p


def _take_311(c, topic, payload, qos, what):
    """The next PUBLISH at 3.1.1 client `c`, checked byte for byte, then acknowledged."""
    p = _exact_311_publish(c.expect(PUBLISH, what=what), topic, payload, qos)
    if qos == 1:
        c.send(puback_packet(p.pid))
    elif qos == 2:
        c.send(pubrec_packet(p.pid))
        c.expect(PUBREL, pid=p.pid, what="PUBREL")
        c.send(pubcomp_packet(p.pid))
    return p


def test_mqtt311_publisher_to_v5_subscriber_no_properties():
    with broker() as b:
        sub = v5_connect(b.port, unique("v5sub-"))
        sub.subscribe(("i4/#", 2))
        pub, _ = raw_connect(b.port, unique("v4pub-"))
        for qos in (0, 1, 2):
            payload = b"from 3.1.1 at QoS %d \x00\xff" % qos
            pub.publish("i4/q%d" % qos, payload, qos)
            p = sub.receive(what="the 3.1.1 message at QoS %d" % qos)
            check_equal((p.resolved, p.payload, p.qos), ("i4/q%d" % qos, payload, qos),
                        "(topic, payload, qos) at the v5 subscriber")
            check_equal(list(p.props), [], "properties of a message from a 3.1.1 publisher")
        pub.publish("i4/r", b"retained from 3.1.1", 1, retain=True)
        sub.receive()
        late = v5_connect(b.port, unique("late-"))
        late.subscribe(("i4/r", 1))
        p = late.receive(what="the retained 3.1.1 message")
        check_equal((p.payload, p.retain, list(p.props)), (b"retained from 3.1.1", True, []),
                    "(payload, retain, properties) of a retained 3.1.1 message")
        pub.publish("i4/r", b"", 1, retain=True)


def test_v5_publisher_with_properties_to_mqtt311_subscriber():
    with broker() as b:
        old, _ = raw_connect(b.port, unique("v4sub-"))
        old.subscribe([("i5/#", 2)])
        v5sub = v5_connect(b.port, unique("v5sub-"))
        v5sub.subscribe(("i5/#", 2))
        pub = v5_connect(b.port, unique("v5pub-"))
        for qos in (0, 1, 2):
            payload = ("v5 q%d \u2713" % qos).encode()
            pub.publish("i5/q%d" % qos, payload, qos, props=PROPS)
            _take_311(old, "i5/q%d" % qos, payload, qos, "the v5 message at QoS %d" % qos)
            check_equal(v5sub.receive().props.user, [("k", "v"), ("k2", "v2")],
                        "the v5 subscriber still gets the User Properties")
        # With a topic alias from the publisher, the 3.1.1 subscriber sees the full topic.
        pub.publish("i5/alias", b"aliased", 1, props=[(TOPIC_ALIAS, 1)])
        pub.publish("", b"via alias", 1, props=[(TOPIC_ALIAS, 1)])
        for payload in (b"aliased", b"via alias"):
            _take_311(old, "i5/alias", payload, 1, "the message sent with a topic alias")
        # Retained with properties, to a 3.1.1 subscriber arriving later.
        pub.publish("i5/r", b"kept", 1, retain=True, props=PROPS)
        late, _ = raw_connect(b.port, unique("v4late-"))
        late.subscribe([("i5/r", 0)])
        p = _take_311(late, "i5/r", b"kept", 0, "the retained v5 message")
        check(p.retain, "RETAIN flag on the retained message")
        pub.publish("i5/r", b"", 1, retain=True)


def test_v5_will_with_properties_to_mqtt311_subscriber():
    with broker() as b:
        old, _ = raw_connect(b.port, unique("v4w-"))
        old.subscribe([("iw/will", 1)])
        c = v5_connect(b.port, unique("dying-"),
                       will={"topic": "iw/will", "payload": b"bye", "qos": 1, "props": PROPS})
        c.abort()
        _take_311(old, "iw/will", b"bye", 1, "the v5 will")


def test_paho_v5_and_paho_311_exchange_messages():
    with broker() as b:
        with Paho5Client(b.port, unique("p5-")) as p5, PahoClient(b.port, unique("p4-")) as p4:
            check_equal(p5.subscribe("pp/from4", 1), [1], "paho v5 SUBACK")
            check_equal(p4.subscribe("pp/from5", 1), [1], "paho 3.1.1 SUBACK")
            props = paho_props(PacketTypes.PUBLISH, UserProperty=[("a", "b")],
                               ContentType="text/plain")
            p5.publish("pp/from5", b"five", 1, properties=props)
            p4.publish("pp/from4", b"four", 1)
            check_equal(p4.wait_messages(1)[0].payload, b"five", "paho 3.1.1 got v5's message")
            m = p5.wait_messages(1)[0]
            check_equal(m.payload, b"four", "paho v5 got 3.1.1's message")
            check(m.prop("ContentType") is None and not m.user,
                  "properties on a message from a 3.1.1 publisher: %r" % m)


def test_mosquitto_clients_v5_and_311_on_one_broker():
    with broker() as b:
        s5 = mosquitto_sub5(b.port, "-t", "mc/#", "-C", "2", "-W", "10", "-F", "%t %p %C")
        s4 = mosquitto_sub(b.port, "-t", "mc/#", "-C", "2", "-W", "10", "-v")
        with s5, s4:
            mosquitto_pub5(b.port, "-t", "mc/v5", "-m", "five", "-q", "1",
                           "-D", "publish", "content-type", "text/x")
            mosquitto_pub(b.port, "-t", "mc/v4", "-m", "four", "-q", "1")
            check_equal(s5.wait(10), 0, "mosquitto_sub -V 5 exit status")
            check_equal(s4.wait(10), 0, "mosquitto_sub (3.1.1) exit status")
            got5 = [l for l in s5.lines if l.startswith("mc/")]
            got4 = [l for l in s4.lines if l.startswith("mc/")]
            check_equal(got5, ["mc/v5 five text/x", "mc/v4 four "],
                        "mosquitto_sub -V 5 -F '%t %p %C' output")
            check_equal(got4, ["mc/v5 five", "mc/v4 four"], "mosquitto_sub -v output")


def test_mosquitto_sub_v5_persistent_session_with_session_expiry():
    """mosquitto_sub -V 5 -c -x 30 keeps its session; a message published while it is
    away arrives when it comes back."""
    with broker() as b:
        cid = unique("msx-")
        first = mosquitto_sub5(b.port, "-i", cid, "-c", "-x", "30", "-q", "1", "-t", "ms/t",
                               "-E")
        with first:
            check_equal(first.wait(10), 0, "mosquitto_sub -E exit status")
        mosquitto_pub5(b.port, "-t", "ms/t", "-m", "while-away", "-q", "1")
        # The queued message may come (and -C 1 end it) before the SUBACK.
        again = mosquitto_sub5(b.port, "-i", cid, "-c", "-x", "30", "-q", "1", "-t", "ms/t",
                               "-C", "1", "-W", "10", wait_suback=False)
        with again:
            check_equal(again.wait(10), 0, "mosquitto_sub exit status")
            check("while-away" in again.lines, "queued message not received: %r"
                  % again.lines)


def test_mqtt5_on_every_transport():
    """paho v5 over ws://, wss:// and tls://, a raw v5 client over TCP and TLS: the same
    CONNACK properties, properties and Subscription Identifiers carried, and a protocol
    error over TLS answered with DISCONNECT 0x82."""
    if not is_aviary():
        raise Skip("the mosquitto peer is set up with a TCP listener only")
    crt, key = test_tls._cert("server", "ca", server=True)
    with broker("--listen", "tls://%s:0" % HOST, "--listen", "ws://%s:0" % HOST,
                "--listen", "wss://%s:0" % HOST, "--tls-cert", crt, "--tls-key", key) as b:
        ports = {scheme: wait_for(lambda: next((p for s, _, p in b.listeners if s == scheme),
                                               None), 5.0, what="the %s:// listener" % scheme)
                 for scheme in ("ws", "wss", "tls")}
        tcp = v5_connect(b.port, unique("tcp5-"))
        tcp.subscribe(("tr/in/#", 1), sub_id=5)
        tam = tcp.connack.props.get(TOPIC_ALIAS_MAXIMUM)
        clients = [("ws", dict(transport="websockets")),
                   ("wss", dict(transport="websockets", tls_ca=test_tls._ca("ca"))),
                   ("tls", dict(tls_ca=test_tls._ca("ca")))]
        for name, kw in clients:
            with Paho5Client(ports[name], unique("p5%s-" % name), **kw) as p:
                check_equal(getattr(p.connack[2], "TopicAliasMaximum", None), tam,
                            "Topic Alias Maximum in the CONNACK over %s" % name)
                check_equal(p.subscribe("tr/out/%s" % name, 1), [1], "SUBACK over " + name)
                p.publish("tr/in/%s" % name, b"over " + name.encode(), 1,
                          properties=paho_props(PacketTypes.PUBLISH,
                                                UserProperty=[("via", name)]))
                m = tcp.receive(what="the message from paho over %s" % name)
                check_equal((m.resolved, m.payload, m.props.user,
                             m.props.all(SUBSCRIPTION_IDENTIFIER)),
                            ("tr/in/%s" % name, b"over " + name.encode(), [("via", name)], [5]),
                            "(topic, payload, User Properties, Subscription Identifiers) of "
                            "the message over %s" % name)
                tcp.publish("tr/out/%s" % name, b"back", 1, props=[(CONTENT_TYPE, "x/y")])
                got = p.wait_messages(1)[0]
                check_equal((got.payload, got.prop("ContentType")), (b"back", "x/y"),
                            "message with Content Type to paho over %s" % name)
        c = V5Client(ports["tls"])
        c.sock = test_tls._context().wrap_socket(c.sock, server_hostname="127.0.0.1")
        c.connect(unique("rawtls-"))
        c.ping()
        c.send(auth5())
        c.expect_disconnect(0x82, what="an AUTH packet over TLS")
        tcp.ping()


if __name__ == "__main__":
    run_tests(globals())
