#!/usr/bin/env python3
"""Write the seed corpus for fuzz_broker: scripted sessions of one to four clients.

Each seed is an input in fuzz_broker's script format (see the comment at the
top of fuzz_broker.c): a setup byte, then records that send bytes as a client,
half-close or drop a client, pause its reading, or fire its timer. The MQTT
packets are built here, independently of the C codec, from MQTT 3.1, 3.1.1
and 5.0; together the seeds send every packet type a client may send, in
realistic sessions, and the limits, refusals, take-overs, wills and
back-pressure paths around them.

Run from anywhere; it rewrites tests/fuzz/corpus/broker/ next to this script.
"""
import os
import struct

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "broker")

# ---- the wire format ---------------------------------------------------------

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP = 8, 9, 10, 11, 12, 13
DISCONNECT, AUTH = 14, 15


def varint(value):
    """MQTT's variable byte integer: seven bits a byte, low bits first."""
    out = bytearray()
    while True:
        digit, value = value % 128, value // 128
        out.append(digit | (0x80 if value else 0))
        if value == 0:
            return bytes(out)


def two(value):
    return struct.pack("!H", value)


def four(value):
    return struct.pack("!I", value)


def blob(data):
    """A length-prefixed field: UTF-8 text (str) or binary data (bytes)."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    return two(len(raw)) + raw


# MQTT 5 property identifiers by the type of their value.
PROP_TYPES = {
    0x01: "byte", 0x02: "four", 0x03: "text", 0x08: "text", 0x09: "blob", 0x0B: "varint",
    0x11: "four", 0x12: "text", 0x13: "two", 0x15: "text", 0x16: "blob", 0x17: "byte",
    0x18: "four", 0x19: "byte", 0x1A: "text", 0x1C: "text", 0x1F: "text", 0x21: "two",
    0x22: "two", 0x23: "two", 0x24: "byte", 0x25: "byte", 0x26: "pair", 0x27: "four",
    0x28: "byte", 0x29: "byte", 0x2A: "byte",
}


def properties(items):
    """A property block with its length; `items` is a list of (identifier, value)."""
    body = bytearray()
    for ident, value in items:
        kind = PROP_TYPES[ident]
        body += varint(ident)
        if kind == "byte":
            body.append(value)
        elif kind == "two":
            body += two(value)
        elif kind == "four":
            body += four(value)
        elif kind == "varint":
            body += varint(value)
        elif kind == "pair":
            body += blob(value[0]) + blob(value[1])
        else:
            body += blob(value)
    return varint(len(body)) + bytes(body)


def packet(kind, flags, body):
    return bytes([kind << 4 | flags]) + varint(len(body)) + bytes(body)


def connect(client_id, version=4, clean=True, keepalive=60, will=None, username=None,
            password=None, props=None, will_props=None):
    """CONNECT; `will` is (topic, payload, qos, retain)."""
    name = "MQIsdp" if version == 3 else "MQTT"
    flags = 0x02 if clean else 0
    payload = blob(client_id)
    if will:
        topic, message, qos, retain = will
        flags |= 0x04 | qos << 3 | (0x20 if retain else 0)
        if version == 5:
            payload += properties(will_props or [])
        payload += blob(topic) + blob(message)
    if username is not None:
        flags |= 0x80
        payload += blob(username)
    if password is not None:
        flags |= 0x40
        payload += blob(password)
    head = blob(name) + bytes([version, flags]) + two(keepalive)
    if version == 5:
        head += properties(props or [])
    return packet(CONNECT, 0, head + payload)


def publish(topic, payload=b"", qos=0, pid=0, retain=False, dup=False, version=4, props=None):
    flags = (0x08 if dup else 0) | qos << 1 | (0x01 if retain else 0)
    body = blob(topic)
    if qos:
        body += two(pid)
    if version == 5:
        body += properties(props or [])
    data = payload.encode() if isinstance(payload, str) else payload
    return packet(PUBLISH, flags, body + data)


def ack(kind, pid, version=4, reason=None, props=None):
    """PUBACK, PUBREC, PUBREL or PUBCOMP, with an MQTT 5 reason and properties if given."""
    body = two(pid)
    if version == 5 and (reason is not None or props):
        body += bytes([reason or 0])
        if props:
            body += properties(props)
    return packet(kind, 2 if kind == PUBREL else 0, body)


def subscribe(pid, filters, version=4, props=None):
    """SUBSCRIBE; `filters` is a list of (filter, options byte)."""
    body = two(pid)
    if version == 5:
        body += properties(props or [])
    for topic_filter, options in filters:
        body += blob(topic_filter) + bytes([options])
    return packet(SUBSCRIBE, 2, body)


def unsubscribe(pid, filters, version=4, props=None):
    body = two(pid)
    if version == 5:
        body += properties(props or [])
    for topic_filter in filters:
        body += blob(topic_filter)
    return packet(UNSUBSCRIBE, 2, body)


def pingreq():
    return packet(PINGREQ, 0, b"")


def disconnect(version=4, reason=None, props=None):
    body = b""
    if version == 5 and (reason is not None or props):
        body = bytes([reason or 0]) + (properties(props) if props else b"")
    return packet(DISCONNECT, 0, body)


def auth(reason, props=None):
    return packet(AUTH, 0, bytes([reason]) + properties(props or []))


# ---- fuzz_broker's script format -----------------------------------------------

TIGHT_WINDOWS, TIGHT_SIZES, TIGHT_OUTPUT, MAX_RETAINED, MAX_CONNECTIONS = (
    0x04, 0x08, 0x10, 0x20, 0x40)
NO_LOOP = 0x80


class Script:
    """Records for fuzz_broker: `clients` clients, limits chosen by `setup` bits."""

    def __init__(self, clients=1, setup=0):
        assert 1 <= clients <= 4
        self.out = bytearray([(clients - 1) | setup])

    def send(self, client, *packets, chunk=None, hold=False):
        """Client `client` sends `packets` in chunks of `chunk` bytes (all at once if None).

        With `hold`, the loop does not run between the chunks or after the last,
        so the bytes meet whatever the next record sends in one loop iteration.
        """
        data = b"".join(packets)
        size = chunk or max(len(data), 1)
        for start in range(0, max(len(data), 1), size):
            piece = data[start:start + size]
            self._data(client, piece, hold)
        return self

    def _data(self, client, piece, hold):
        while True:
            part, piece = piece[:0x7FFF], piece[0x7FFF:]
            op = client | (NO_LOOP if hold else 0)
            length = bytes([len(part)]) if len(part) < 0x80 else two(0x8000 | len(part))
            self.out += bytes([op]) + length + part
            if not piece:
                return

    def _op(self, client, action, extra=0):
        self.out.append(client | action << 2 | extra)
        return self

    def shutdown(self, client):
        return self._op(client, 4)

    def close(self, client):
        return self._op(client, 5)

    def toggle_read(self, client):
        return self._op(client, 6)

    def timer(self, client):
        return self._op(client, 7)

    def error(self, client):
        return self._op(client, 7, 0x20)


# ---- the seeds -------------------------------------------------------------------


def v311_connect_ping_disconnect():
    return Script(1).send(0, connect("pinger", keepalive=0), pingreq(), pingreq(), disconnect())


def v311_pubsub_qos0():
    s = Script(2)
    s.send(0, connect("sub-1"), subscribe(1, [("a/+", 0), ("b/#", 0)]))
    s.send(1, connect("pub-1"), publish("a/x", "hello"), publish("b", "level b"))
    s.send(0, unsubscribe(2, ["a/+", "not/subscribed"]))
    s.send(1, publish("a/x", "nobody hears this"), publish("b/c/d", "still heard"))
    s.send(0, disconnect())
    return s.send(1, disconnect())


def v311_qos1_two_clients():
    """Two clients subscribed to each other's topics, publishing and acknowledging at QoS 1."""
    s = Script(2)
    s.send(0, connect("node-a"), subscribe(1, [("sensors/+/temp", 1)]))
    s.send(1, connect("node-b"), subscribe(1, [("cmd/#", 1)]))
    s.send(1, publish("sensors/kitchen/temp", "21.5", qos=1, pid=10))
    s.send(0, ack(PUBACK, 1), publish("cmd/kitchen/heat", "on", qos=1, pid=5))
    s.send(1, ack(PUBACK, 1), publish("sensors/hall/temp", "19", qos=1, pid=11))
    s.send(0, ack(PUBACK, 2), disconnect())
    return s.send(1, disconnect())


def v311_qos2_flow():
    """Exactly once both ways, with a re-sent PUBLISH before PUBREL and stray PUBRELs."""
    s = Script(2)
    s.send(0, connect("q2-sub"), subscribe(3, [("q2/t", 2)]))
    s.send(1, connect("q2-pub"), publish("q2/t", "once", qos=2, pid=7))
    s.send(1, publish("q2/t", "once", qos=2, pid=7, dup=True))
    s.send(1, ack(PUBREL, 7), ack(PUBREL, 99))
    s.send(0, ack(PUBREC, 1))
    s.send(0, ack(PUBREC, 1), ack(PUBCOMP, 1), ack(PUBCOMP, 1))
    s.send(1, publish("q2/t", "twice", qos=2, pid=8), ack(PUBREL, 8))
    s.send(0, ack(PUBREC, 2), ack(PUBCOMP, 2), disconnect())
    return s.send(1, disconnect())


def v311_retained():
    s = Script(3)
    s.send(1, connect("lamp"), publish("home/lamp", "on", qos=1, pid=1, retain=True),
           publish("home/door", "closed", retain=True),
           publish("/home/window", "open", qos=2, pid=2, retain=True), ack(PUBREL, 2))
    s.send(0, connect("panel"), subscribe(1, [("home/#", 1)]))
    s.send(0, ack(PUBACK, 1), ack(PUBACK, 2), ack(PUBACK, 3))
    s.send(1, publish("home/lamp", b"", retain=True))
    s.send(2, connect("late"), subscribe(1, [("/home/+", 2), ("home/lamp", 0)]))
    s.send(2, ack(PUBREC, 1), ack(PUBCOMP, 1), ack(PUBACK, 2))
    s.send(0, subscribe(2, [("home/#", 0)]))
    return s.send(0, disconnect())


def v311_will_vanish():
    """A client with a retained QoS 1 will and credentials vanishes; its will goes out."""
    s = Script(3)
    s.send(1, connect("watcher"), subscribe(1, [("clients/+/status", 1)]))
    s.send(0, connect("dev1", will=("clients/dev1/status", "offline", 1, True),
                      username="user", password=b"s3cr\x00t"))
    s.send(0, publish("clients/dev1/status", "online", qos=1, pid=1, retain=True))
    s.send(1, ack(PUBACK, 1))
    s.close(0)
    s.send(1, ack(PUBACK, 2))
    s.send(2, connect("later"), subscribe(1, [("clients/#", 1)]), ack(PUBACK, 1))
    return s.send(2, disconnect())


def v311_will_disconnect():
    """DISCONNECT discards the will; a transport error on another client publishes its own."""
    s = Script(3)
    s.send(2, connect("watcher"), subscribe(1, [("wills/#", 2)]))
    s.send(0, connect("polite", will=("wills/polite", "gone", 2, False)), disconnect())
    s.send(1, connect("rude", will=("wills/rude", "gone", 0, False), username="u"))
    s.error(1)
    return s.send(2, pingreq(), disconnect())


def v311_takeover():
    s = Script(3)
    s.send(0, connect("dev", clean=False), subscribe(1, [("dev/in", 1)]))
    s.send(1, connect("dev", clean=False), publish("dev/in", "to myself", qos=1, pid=3))
    s.send(1, ack(PUBACK, 1))
    s.send(0, connect("dev", clean=True, will=("dev/will", "taken", 0, False)))
    s.send(2, connect("dev", clean=True))
    s.send(0, pingreq())
    return s.send(2, disconnect())


def v311_session_resume():
    """Queued messages while offline, then re-sent PUBLISH (DUP) and PUBREL on resume."""
    s = Script(2)
    s.send(0, connect("p1", clean=False, keepalive=30),
           subscribe(1, [("jobs/+", 1), ("alerts", 2)]), disconnect())
    s.send(1, connect("producer"))
    for i in range(3):
        s.send(1, publish("jobs/%d" % i, "job %d" % i, qos=1, pid=20 + i))
    s.send(1, publish("alerts", "fire", qos=2, pid=30), ack(PUBREL, 30))
    s.send(0, connect("p1", clean=False, keepalive=30))
    s.send(0, ack(PUBACK, 1), ack(PUBREC, 4))
    s.close(0)
    s.send(0, connect("p1", clean=False))
    s.send(0, ack(PUBACK, 2), ack(PUBACK, 3), ack(PUBCOMP, 4), disconnect())
    s.send(0, connect("p1", clean=True), disconnect())
    return s.send(1, disconnect())


def v31_mqisdp():
    s = Script(2)
    s.send(0, connect("v31-client", version=3, will=("v31/will", "bye", 1, False),
                      username="user", password="pass"),
           subscribe(1, [("v31/#", 1)]),
           publish("v31/a", "dup on qos 0", dup=True), publish("v31/b", "q1", qos=1, pid=2))
    s.send(0, ack(PUBACK, 1))
    s.send(1, connect("", version=3))
    s.send(1, connect("", version=4, clean=False))
    s.send(1, connect("", version=4), publish("v31/c", "from an auto id"))
    s.send(0, ack(PUBACK, 2), disconnect())
    return s


def v311_refusals():
    """Each refusal ends the connection; the next record reconnects."""
    s = Script(1)
    level6 = connect("c")
    s.send(0, level6[:8] + b"\x06" + level6[9:])  # "MQTT" at protocol level 6
    s.send(0, packet(CONNECT, 0, blob("MQTX") + b"\x04\x02\x00\x3c" + blob("c")))
    s.send(0, b"GET /mqtt HTTP/1.1\r\nHost: broker\r\n\r\n")
    s.send(0, subscribe(1, [("a", 0)]))
    s.send(0, connect("twice"), connect("twice"))
    s.send(0, connect("server-only"), packet(CONNACK, 0, b"\x00\x00"))
    s.send(0, connect("server-only"), packet(SUBACK, 0, two(1) + b"\x00"))
    s.send(0, connect("server-only"), packet(PINGRESP, 0, b""))
    s.send(0, connect("bad-flags"), packet(SUBSCRIBE, 0, two(1) + blob("a") + b"\x00"))
    s.send(0, connect("bad-length"), b"\x30\xff\xff\xff\xff\x7f")
    s.send(0, connect("too-big"), b"\x30\xff\xff\x7f")
    return s.send(0, connect("auth-in-311"), packet(AUTH, 0, b"\x00"))


def v311_bad_topics():
    s = Script(2)
    s.send(0, connect("filters"),
           subscribe(1, [("a/#/b", 0), ("a+", 0), ("sp ace", 1), ("*", 1), ("/x/*/y", 2),
                         ("#", 0), ("/", 1), ("a/" + "b" * 140, 0)]))
    s.send(1, connect("names"), publish("x/1/y", "star"), publish("/x/2/y", "slash"))
    s.send(1, publish("a/+/c", "wildcard in a name"))
    s.send(1, connect("names"), publish("caf\u00e9", "not ASCII"))
    s.send(1, connect("names"), publish("/", "only a slash"))
    return s.send(0, disconnect())


def v311_overlap_leading_slash():
    """Overlapping filters give one delivery at the highest QoS; a leading / is kept per filter."""
    s = Script(2)
    s.send(0, connect("overlap"),
           subscribe(1, [("/a/#", 1), ("a/+", 0), ("+/b", 2), ("*/*", 1), ("a/b", 0)]))
    s.send(1, connect("src"), publish("/a/b", "one", qos=2, pid=1), ack(PUBREL, 1))
    s.send(1, publish("a/b", "two", qos=1, pid=2), publish("a", "parent of a/#"))
    s.send(0, ack(PUBREC, 1), ack(PUBCOMP, 1), ack(PUBACK, 2), ack(PUBACK, 3))
    s.send(0, unsubscribe(2, ["/a/#", "+/b", "*/*", "a/b", "a/+"]))
    s.send(1, publish("a/b", "to nobody", qos=1, pid=3))
    return s.send(0, disconnect())


def v311_dollar_topics():
    s = Script(2)
    s.send(0, connect("dollar"), subscribe(1, [("#", 0), ("+/x", 0), ("$SYS/#", 1)]))
    s.send(1, connect("sys"), publish("$SYS/x", "not for #", retain=True),
           publish("x", "for #"), publish("$SYS/broker/load", "1", qos=1, pid=1))
    s.send(0, ack(PUBACK, 1), subscribe(2, [("$SYS/+", 0), ("+", 0)]))
    return s.send(0, disconnect())


def v311_tokenevents_and_unknown_acks():
    s = Script(1)
    s.send(0, connect("misc"), subscribe(1, [("[mqtt]tokenevents", 0), ("t", 1)]),
           ack(PUBACK, 1), ack(PUBREC, 2), ack(PUBCOMP, 3), ack(PUBREL, 4),
           unsubscribe(2, ["[mqtt]tokenevents"]), subscribe(3, [("t", 1), ("t", 2), ("t", 0)]))
    return s.send(0, publish("t", "own message", qos=1, pid=9), ack(PUBACK, 1), disconnect())


def v311_big_retained():
    """A payload above 4 KB is added to each output by reference, not copied."""
    big = bytes(range(256)) * 20
    s = Script(3)
    s.send(0, connect("bulk"), publish("bulk/blob", big, qos=1, pid=1, retain=True))
    s.send(1, connect("r1"), subscribe(1, [("bulk/#", 1)]), ack(PUBACK, 1))
    s.send(2, connect("r2"), subscribe(1, [("bulk/+", 0)]))
    s.send(0, publish("bulk/blob", big[:4097], retain=False))
    return s.send(1, disconnect())


def v311_bytewise():
    """One session one byte at a time: every packet arrives split at every point."""
    s = Script(2)
    s.send(1, connect("bw-sub"), subscribe(1, [("bw/#", 1)]))
    s.send(0, connect("bytewise", will=("bw/will", "w", 1, True)),
           subscribe(1, [("bw/#", 2)]), publish("bw/1", "q1", qos=1, pid=1),
           publish("bw/2", "q2", qos=2, pid=2), ack(PUBREL, 2), pingreq(), chunk=1)
    s.send(1, ack(PUBACK, 1), ack(PUBACK, 2))
    s.send(0, ack(PUBACK, 1), ack(PUBREC, 2), ack(PUBCOMP, 2), chunk=1)
    return s.close(0)


def v311_interleaved():
    """Two clients' packets split at odd points and arriving in the same loop iterations."""
    a = connect("inter-a") + subscribe(1, [("i/#", 1)]) + publish("i/a", "from a", qos=1, pid=1)
    b = connect("inter-b") + subscribe(1, [("i/a", 0)]) + publish("i/b", "from b", qos=1, pid=1)
    s = Script(2)
    step = 0
    while 7 * step < len(a) or 5 * step < len(b):
        s.send(0, a[7 * step:7 * step + 7], hold=True)
        s.send(1, b[5 * step:5 * step + 5], hold=step % 2 == 0)
        step += 1
    return s.send(0, ack(PUBACK, 1), ack(PUBACK, 2), disconnect())


def v311_backpressure():
    """A subscriber that stops reading: QoS 0 dropped, its input paused, then drained."""
    s = Script(2, TIGHT_OUTPUT)
    s.send(0, connect("slow", keepalive=45), subscribe(1, [("feed/#", 1), ("feed/q0", 0)]))
    s.toggle_read(0)
    s.send(1, connect("fast"))
    for i in range(8):
        s.send(1, publish("feed/q0", bytes([i]) * 200))
        s.send(1, publish("feed/q1", bytes([i]) * 150, qos=1, pid=i + 1))
    s.send(0, pingreq(), ack(PUBACK, 1))
    s.toggle_read(0)
    s.send(0, ack(PUBACK, 2), ack(PUBACK, 3), ack(PUBACK, 4))
    s.toggle_read(0)
    s.send(1, publish("feed/q1", b"x" * 900, qos=1, pid=20))
    s.close(0)
    return s.send(1, disconnect())


def v311_flow_window():
    """max-inflight 1 and max-queued-messages 2: a queue, then the oldest dropped."""
    s = Script(2, TIGHT_WINDOWS)
    s.send(0, connect("window", clean=False), subscribe(1, [("w/#", 1), ("x", 2), ("y", 0)]))
    s.send(1, connect("burst"))
    for i in range(5):
        s.send(1, publish("w/%d" % i, "m%d" % i, qos=1, pid=i + 1))
    s.send(0, ack(PUBACK, 1), ack(PUBACK, 2))
    s.close(0)
    s.send(1, publish("w/9", "while away", qos=1, pid=9), publish("w/10", "", qos=1, pid=10))
    s.send(0, connect("window", clean=False), ack(PUBACK, 3), ack(PUBACK, 4))
    return s.send(0, unsubscribe(2, ["w/#"]), subscribe(3, [("z", 0)]), disconnect())


def v311_tight_sizes():
    s = Script(2, TIGHT_SIZES)
    s.send(0, connect("nine-char"))
    s.send(0, connect("eight-ch"), publish("t" * 17, "topic too long"))
    s.send(0, connect("eight-ch"), publish("t" * 16, b"p" * 65))
    s.send(0, connect("eight-ch", will=("w" * 17, "x", 0, False)))
    s.send(0, connect("eight-ch", will=("w", b"x" * 65, 0, False)))
    s.send(1, connect("sub"), subscribe(1, [("s" * 17, 0), ("s" * 16, 0)]))
    s.send(0, connect("eight-ch"), publish("s" * 16, b"p" * 64, qos=1, pid=1))
    return s.send(1, ack(PUBACK, 1), disconnect())


def v311_max_retained():
    s = Script(2, MAX_RETAINED)
    s.send(0, connect("keeper"))
    for topic in ("r/1", "r/2", "r/3"):
        s.send(0, publish(topic, topic, retain=True))
    s.send(0, publish("r/1", "replaced", retain=True), publish("r/2", b"", retain=True),
           publish("r/3", "now fits", retain=True))
    s.send(1, connect("reader"), subscribe(1, [("r/#", 0)]))
    return s.send(0, disconnect())


def v311_max_connections():
    s = Script(4, MAX_CONNECTIONS)
    s.send(0, connect("one"))
    s.send(1, connect("two"))
    s.send(2, connect("three"))
    s.send(3, connect("one"))
    s.send(1, disconnect())
    s.send(2, connect("three"), pingreq())
    return s.send(3, disconnect())


def v311_timers():
    """The CONNECT deadline and the keep-alive timer, fired on purpose."""
    s = Script(3)
    s.send(0, connect("slowpoke")[:5])
    s.timer(0)
    s.send(0, b"")
    s.timer(0)
    s.send(1, connect("ka-zero", keepalive=0))
    s.timer(1)
    s.send(1, pingreq())
    s.send(2, connect("ka-big", keepalive=65535, will=("t/will", "bye", 0, True)))
    s.timer(2)
    s.error(2)
    return s.send(1, subscribe(1, [("t/#", 0)]), disconnect())


def v311_shutdown():
    """Half-close: the client stops sending but reads the answers to what it sent."""
    s = Script(2, TIGHT_OUTPUT)
    s.send(0, connect("half", will=("half/will", "w", 0, False)),
           publish("half/t", "q1", qos=1, pid=1))
    s.shutdown(0)
    s.send(0, connect("half-2"), subscribe(1, [("half/#", 0)]))
    s.toggle_read(0)
    s.send(1, connect("talker"))
    for i in range(6):
        s.send(1, publish("half/x", b"y" * 250))
    s.send(0, pingreq(), pingreq())
    s.shutdown(0)
    s.toggle_read(0)
    return s.send(1, disconnect())


def v311_subscribe_many():
    """One SUBSCRIBE with repeated filters: retained messages once per distinct filter."""
    s = Script(2)
    s.send(1, connect("seed"), publish("m/a", "ra", retain=True),
           publish("m/b", "rb", qos=1, pid=1, retain=True))
    filters = [("m/a", 0), ("m/+", 1), ("m/a", 1), ("m/#", 0), ("m/+", 0), ("/m/b", 1)]
    s.send(0, connect("many"), subscribe(4, filters + [("f/%d" % i, i % 3) for i in range(14)]))
    s.send(0, ack(PUBACK, 1), ack(PUBACK, 2), unsubscribe(5, [f for f, _ in filters]))
    return s.send(0, disconnect())


# MQTT 5 (the broker answers CONNACK 0x84 until MQTT 5 is served; the sessions
# below are what it will see from then on).

V5_USER = (0x26, ("site", "lab-3"))


def v5_connect_props_will():
    s = Script(2)
    s.send(1, connect("v5-watch", version=5), subscribe(1, [("v5/status/#", 1)], version=5))
    s.send(0, connect(
        "v5-dev", version=5, clean=False, keepalive=120,
        will=("v5/status/dev", "offline", 1, True), username="user", password=b"\x01\x02",
        props=[(0x11, 3600), (0x21, 16), (0x27, 65536), (0x22, 8), (0x19, 1), (0x17, 0),
               V5_USER, (0x26, ("site", "lab-4"))],
        will_props=[(0x18, 0), (0x01, 1), (0x02, 600), (0x03, "text/plain"),
                    (0x08, "v5/replies"), (0x09, b"\xca\xfe"), V5_USER]))
    s.send(0, pingreq())
    s.send(0, disconnect(version=5, reason=0x04,
                         props=[(0x11, 0), (0x1F, "going to sleep"), V5_USER]))
    return s.send(1, ack(PUBACK, 1, version=5), disconnect(version=5))


def v5_pubsub_qos012():
    s = Script(2)
    s.send(0, connect("v5-sub", version=5, props=[(0x21, 10)]),
           subscribe(1, [("v5/q/#", 2 | 0x04 | 0x08), ("$share/grp/v5/q/1", 1),
                         ("v5/r/+", 1 | 0x10), ("v5/r/x", 0x20)],
                     version=5, props=[(0x0B, 42), V5_USER]))
    s.send(1, connect("v5-pub", version=5, props=[(0x22, 4)]))
    s.send(1, publish("v5/q/0", "zero", version=5, props=[(0x01, 1), (0x03, "text/plain")]))
    s.send(1, publish("v5/q/1", "one", qos=1, pid=1, version=5,
                      props=[(0x02, 30), (0x08, "v5/reply"), (0x09, b"id-1"), V5_USER]))
    s.send(1, publish("v5/q/2", b"\x00\xff", qos=2, pid=2, retain=True, version=5,
                      props=[(0x23, 1)]))
    s.send(1, ack(PUBREL, 2, version=5), ack(PUBREL, 77, version=5, reason=0x92,
                                               props=[(0x1F, "unknown id")]))
    s.send(0, ack(PUBACK, 1, version=5), ack(PUBREC, 2, version=5, reason=0x00),
           ack(PUBCOMP, 2, version=5, reason=0, props=[(0x1F, "done")]),
           ack(PUBACK, 3, version=5, reason=0x10), ack(PUBREC, 4, version=5, reason=0x80))
    s.send(0, unsubscribe(2, ["v5/q/#", "$share/grp/v5/q/1", "never"], version=5,
                          props=[V5_USER]))
    s.send(0, disconnect(version=5, reason=0))
    return s.send(1, disconnect(version=5))


def v5_topic_alias():
    s = Script(2)
    s.send(0, connect("alias-sub", version=5), subscribe(1, [("alias/#", 0)], version=5))
    s.send(1, connect("alias-pub", version=5, props=[(0x22, 2)]),
           publish("alias/long/topic/name", "set", version=5, props=[(0x23, 1)]),
           publish("", "use", version=5, props=[(0x23, 1)]),
           publish("", "unknown alias", version=5, props=[(0x23, 2)]))
    return s.send(0, disconnect(version=5))


def v5_auth():
    s = Script(1)
    s.send(0, connect("v5-auth", version=5,
                      props=[(0x15, "SCRAM-SHA-256"), (0x16, b"n,,n=user,r=abc")]))
    s.send(0, auth(0x18, [(0x15, "SCRAM-SHA-256"), (0x16, b"c=biws,r=abcdef,p=proof")]))
    s.send(0, auth(0x19, [(0x15, "SCRAM-SHA-256"), (0x16, b"n,,n=user,r=xyz")]))
    s.send(0, auth(0x00, [(0x15, "SCRAM-SHA-256"), (0x1F, "ok")]))
    return s.send(0, disconnect(version=5, reason=0x00))


def v5_will_vanish_mixed():
    """An MQTT 5 client's will reaches a 3.1.1 subscriber, and 3.1.1 publishes reach MQTT 5."""
    s = Script(3)
    s.send(2, connect("old", version=4), subscribe(1, [("mixed/#", 1)]))
    s.send(1, connect("new-sub", version=5), subscribe(1, [("mixed/#", 2)], version=5))
    s.send(0, connect("new-pub", version=5, will=("mixed/will", "lost", 2, False),
                      will_props=[(0x18, 0)]),
           publish("mixed/a", "hi", qos=1, pid=1, version=5))
    s.send(2, publish("mixed/b", "from 3.1.1", qos=2, pid=4), ack(PUBREL, 4), ack(PUBACK, 1))
    s.send(1, ack(PUBREC, 1, version=5), ack(PUBCOMP, 1, version=5))
    s.close(0)
    s.send(2, ack(PUBACK, 2))
    return s.send(1, ack(PUBREC, 2, version=5), ack(PUBCOMP, 2, version=5))


def v5_session_expiry_resume():
    s = Script(2)
    s.send(0, connect("v5-p", version=5, clean=False, props=[(0x11, 300)]),
           subscribe(1, [("v5p/#", 1)], version=5), disconnect(version=5))
    s.send(1, connect("v5-src", version=5), publish("v5p/x", "queued", qos=1, pid=1, version=5))
    s.send(0, connect("v5-p", version=5, clean=False, props=[(0x11, 300)]))
    s.send(0, ack(PUBACK, 1, version=5), disconnect(version=5))
    s.send(0, connect("v5-p", version=5, clean=True))
    return s.send(0, disconnect(version=5, reason=0x8E))


SEEDS = {
    "v311-connect-ping-disconnect": v311_connect_ping_disconnect,
    "v311-pubsub-qos0": v311_pubsub_qos0,
    "v311-qos1-two-clients": v311_qos1_two_clients,
    "v311-qos2-flow": v311_qos2_flow,
    "v311-retained": v311_retained,
    "v311-will-vanish": v311_will_vanish,
    "v311-will-disconnect": v311_will_disconnect,
    "v311-takeover": v311_takeover,
    "v311-session-resume": v311_session_resume,
    "v31-mqisdp": v31_mqisdp,
    "v311-refusals": v311_refusals,
    "v311-bad-topics": v311_bad_topics,
    "v311-overlap-leading-slash": v311_overlap_leading_slash,
    "v311-dollar-topics": v311_dollar_topics,
    "v311-tokenevents-unknown-acks": v311_tokenevents_and_unknown_acks,
    "v311-big-retained": v311_big_retained,
    "v311-bytewise": v311_bytewise,
    "v311-interleaved": v311_interleaved,
    "v311-backpressure": v311_backpressure,
    "v311-flow-window": v311_flow_window,
    "v311-tight-sizes": v311_tight_sizes,
    "v311-max-retained": v311_max_retained,
    "v311-max-connections": v311_max_connections,
    "v311-timers": v311_timers,
    "v311-shutdown": v311_shutdown,
    "v311-subscribe-many": v311_subscribe_many,
    "v5-connect-props-will": v5_connect_props_will,
    "v5-pubsub-qos012": v5_pubsub_qos012,
    "v5-topic-alias": v5_topic_alias,
    "v5-auth": v5_auth,
    "v5-will-vanish-mixed": v5_will_vanish_mixed,
    "v5-session-expiry-resume": v5_session_expiry_resume,
}


def main():
    os.makedirs(CORPUS, exist_ok=True)
    for name in os.listdir(CORPUS):
        os.unlink(os.path.join(CORPUS, name))
    for name, build in SEEDS.items():
        with open(os.path.join(CORPUS, name), "wb") as f:
            f.write(bytes(build().out))


if __name__ == "__main__":
    main()
