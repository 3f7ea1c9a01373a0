"""mqtt5 -- MQTT 5.0 for aviary's integration tests.

What is here:
- packet builders: connect5, publish5, subscribe5, unsubscribe5, puback5 / pubrec5 /
  pubrel5 / pubcomp5, disconnect5, auth5; properties are lists of (id, value) pairs,
  encoded in the order given, with no check of what the packet allows (so a test can
  send a duplicate or a misplaced property on purpose). Raw(b"...") puts bytes on the
  wire as they are.
- decode(): any v5 packet the broker sends -> V5Packet with the reason code(s) and the
  properties as a list of (id, value) in wire order. It checks what the spec says the
  broker may send (property allowed in that packet, no duplicate single-valued property,
  well-formed lengths) and fails the test otherwise.
- V5Client: a raw socket client in the spirit of aviary_test.RawClient (it is one).
- Paho5Client: paho-mqtt 1.6.1 with protocol=MQTTv5 and a network thread.
- broker(): the broker under test. Normally aviaryd (aviary_test.Broker); with
  AVIARY_TEST_PEER=mosquitto, Debian's mosquitto 2.0.11 with a generated configuration
  on a free port, to check the tests' logic against another MQTT 5 broker. Tests of
  aviary-only behaviour call aviary_only(); places where mosquitto does not follow the
  spec call mosquitto_deviates().
"""

import os
import select
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time

import aviary_test
from aviary_test import (
    HOST, CONNACK, CONNECT, DISCONNECT, PINGREQ_PACKET, PINGRESP, PUBACK, PUBCOMP, PUBLISH, PUBREC,
    PUBREL, SUBACK, SUBSCRIBE, UNSUBACK, UNSUBSCRIBE, Broker, Closed, PahoClient, RawClient, Skip,
    TestFailure, Timeout, check, check_equal, mqtt_string, packet, to_bytes, u16, unique,
    varint, wait_for)

try:
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from paho.mqtt.subscribeoptions import SubscribeOptions
except ImportError:  # run_tests() reports it
    mqtt = PacketTypes = Properties = SubscribeOptions = None

AUTH = 15

# ---------------------------------------------------------------------------
# Properties (MQTT 5.0 section 2.2.2.2)

PAYLOAD_FORMAT_INDICATOR = 0x01
MESSAGE_EXPIRY_INTERVAL = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_IDENTIFIER = 0x0B
SESSION_EXPIRY_INTERVAL = 0x11
ASSIGNED_CLIENT_IDENTIFIER = 0x12
SERVER_KEEP_ALIVE = 0x13
AUTHENTICATION_METHOD = 0x15
AUTHENTICATION_DATA = 0x16
REQUEST_PROBLEM_INFORMATION = 0x17
WILL_DELAY_INTERVAL = 0x18
REQUEST_RESPONSE_INFORMATION = 0x19
RESPONSE_INFORMATION = 0x1A
SERVER_REFERENCE = 0x1C
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
SHARED_SUBSCRIPTION_AVAILABLE = 0x2A

WILL = "Will"  # the Will Properties are a "packet" of their own for the table below
_ACKS = (PUBACK, PUBREC, PUBREL, PUBCOMP)
_WITH_REASON = (CONNACK,) + _ACKS + (SUBACK, UNSUBACK, DISCONNECT, AUTH)
_ALL = (CONNECT, CONNACK, PUBLISH, WILL) + _ACKS + (SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK,
                                                    DISCONNECT, AUTH)

# id -> (name, data type, packets it may appear in)
PROPERTIES = {
    0x01: ("Payload Format Indicator", "byte", (PUBLISH, WILL)),
    0x02: ("Message Expiry Interval", "u32", (PUBLISH, WILL)),
    0x03: ("Content Type", "str", (PUBLISH, WILL)),
    0x08: ("Response Topic", "str", (PUBLISH, WILL)),
    0x09: ("Correlation Data", "bin", (PUBLISH, WILL)),
    0x0B: ("Subscription Identifier", "varint", (PUBLISH, SUBSCRIBE)),
    0x11: ("Session Expiry Interval", "u32", (CONNECT, CONNACK, DISCONNECT)),
    0x12: ("Assigned Client Identifier", "str", (CONNACK,)),
    0x13: ("Server Keep Alive", "u16", (CONNACK,)),
    0x15: ("Authentication Method", "str", (CONNECT, CONNACK, AUTH)),
    0x16: ("Authentication Data", "bin", (CONNECT, CONNACK, AUTH)),
    0x17: ("Request Problem Information", "byte", (CONNECT,)),
    0x18: ("Will Delay Interval", "u32", (WILL,)),
    0x19: ("Request Response Information", "byte", (CONNECT,)),
    0x1A: ("Response Information", "str", (CONNACK,)),
    0x1C: ("Server Reference", "str", (CONNACK, DISCONNECT)),
    0x1F: ("Reason String", "str", _WITH_REASON),
    0x21: ("Receive Maximum", "u16", (CONNECT, CONNACK)),
    0x22: ("Topic Alias Maximum", "u16", (CONNECT, CONNACK)),
    0x23: ("Topic Alias", "u16", (PUBLISH,)),
    0x24: ("Maximum QoS", "byte", (CONNACK,)),
    0x25: ("Retain Available", "byte", (CONNACK,)),
    0x26: ("User Property", "pair", _ALL),
    0x27: ("Maximum Packet Size", "u32", (CONNECT, CONNACK)),
    0x28: ("Wildcard Subscription Available", "byte", (CONNACK,)),
    0x29: ("Subscription Identifier Available", "byte", (CONNACK,)),
    0x2A: ("Shared Subscription Available", "byte", (CONNACK,)),
}

# Reason codes, for messages.
REASON_NAMES = {
    0x00: "Success", 0x01: "Granted QoS 1", 0x02: "Granted QoS 2",
    0x04: "Disconnect with Will Message", 0x10: "No matching subscribers",
    0x11: "No subscription existed", 0x18: "Continue authentication", 0x19: "Re-authenticate",
    0x80: "Unspecified error", 0x81: "Malformed Packet", 0x82: "Protocol Error",
    0x83: "Implementation specific error", 0x84: "Unsupported Protocol Version",
    0x85: "Client Identifier not valid", 0x86: "Bad User Name or Password",
    0x87: "Not authorized", 0x88: "Server unavailable", 0x89: "Server busy", 0x8A: "Banned",
    0x8B: "Server shutting down", 0x8C: "Bad authentication method",
    0x8D: "Keep Alive timeout", 0x8E: "Session taken over", 0x8F: "Topic Filter invalid",
    0x90: "Topic Name invalid", 0x91: "Packet Identifier in use",
    0x92: "Packet Identifier not found", 0x93: "Receive Maximum exceeded",
    0x94: "Topic Alias invalid", 0x95: "Packet too large", 0x96: "Message rate too high",
    0x97: "Quota exceeded", 0x98: "Administrative action", 0x99: "Payload format invalid",
    0x9A: "Retain not supported", 0x9B: "QoS not supported", 0x9C: "Use another server",
    0x9D: "Server moved", 0x9E: "Shared Subscriptions not supported",
    0x9F: "Connection rate exceeded", 0xA0: "Maximum connect time",
    0xA1: "Subscription Identifiers not supported",
    0xA2: "Wildcard Subscriptions not supported",
}


def reason_name(code):
    return "0x%02X %s" % (code, REASON_NAMES.get(code, "(unknown)"))


def prop_name(pid):
    return PROPERTIES.get(pid, ("property 0x%02X" % pid,))[0]


class Raw:
    """Bytes put on the wire as they are (for malformed values)."""

    def __init__(self, data):
        self.data = bytes(data)

    def __repr__(self):
        return "Raw(%s)" % self.data.hex()


def encode_value(ptype, value):
    if isinstance(value, Raw):
        return value.data
    if ptype == "byte":
        return bytes([value])
    if ptype == "u16":
        return struct.pack(">H", value)
    if ptype == "u32":
        return struct.pack(">I", value)
    if ptype == "varint":
        return varint(value)
    if ptype in ("str", "bin"):
        return mqtt_string(value)
    if ptype == "pair":
        k, v = value
        return mqtt_string(k) + mqtt_string(v)
    raise ValueError("unknown property type %r" % ptype)


def encode_properties(props):
    """Property Length + properties. props: [(id, value)]; an id not in the table
    needs a Raw value. Raw bytes in place of the whole list are sent as they are."""
    if isinstance(props, Raw):
        return props.data
    body = b""
    for pid, value in props or ():
        ptype = PROPERTIES[pid][1] if pid in PROPERTIES else None
        if ptype is None and not isinstance(value, Raw):
            raise ValueError("property 0x%02X needs a Raw value" % pid)
        body += varint(pid) + encode_value(ptype, value)
    return varint(len(body)) + body


class MalformedError(Exception):
    """The broker sent something that cannot be parsed as MQTT 5."""


def _read_varint(data, pos):
    value, mult = 0, 1
    for i in range(4):
        if pos >= len(data):
            raise MalformedError("variable byte integer runs past the end")
        b = data[pos]
        pos += 1
        value += (b & 0x7F) * mult
        if not b & 0x80:
            if i > 0 and b == 0:
                raise MalformedError("variable byte integer not in its shortest form")
            return value, pos
        mult *= 128
    raise MalformedError("variable byte integer longer than 4 bytes")


def _read_u16(data, pos):
    if pos + 2 > len(data):
        raise MalformedError("two byte integer runs past the end")
    return struct.unpack(">H", data[pos:pos + 2])[0], pos + 2


def _read_bin(data, pos):
    n, pos = _read_u16(data, pos)
    if pos + n > len(data):
        raise MalformedError("string/binary of %d bytes runs past the end" % n)
    return bytes(data[pos:pos + n]), pos + n


def _read_str(data, pos):
    raw, pos = _read_bin(data, pos)
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedError("ill-formed UTF-8 in a string: %r" % raw)
    if "\x00" in s:
        raise MalformedError("U+0000 in a string: %r" % s)
    return s, pos


def parse_properties(data, pos=0, where=None):
    """Parse Property Length + properties at data[pos:].

    Returns (Props, position after them). where: the packet type (or WILL) to check
    each property against; None checks nothing."""
    length, pos = _read_varint(data, pos)
    end = pos + length
    if end > len(data):
        raise MalformedError("Property Length %d runs past the end of the packet" % length)
    props = Props()
    while pos < end:
        pid, pos = _read_varint(data, pos)
        if pid not in PROPERTIES:
            raise MalformedError("unknown property identifier 0x%02X" % pid)
        name, ptype, allowed = PROPERTIES[pid]
        sub = data[:end]
        if ptype == "byte":
            if pos + 1 > end:
                raise MalformedError("%s runs past the properties" % name)
            value, pos = sub[pos], pos + 1
        elif ptype == "u16":
            value, pos = _read_u16(sub, pos)
        elif ptype == "u32":
            if pos + 4 > end:
                raise MalformedError("%s runs past the properties" % name)
            value, pos = struct.unpack(">I", sub[pos:pos + 4])[0], pos + 4
        elif ptype == "varint":
            value, pos = _read_varint(sub, pos)
        elif ptype == "str":
            value, pos = _read_str(sub, pos)
        elif ptype == "bin":
            value, pos = _read_bin(sub, pos)
        else:
            k, pos = _read_str(sub, pos)
            v, pos = _read_str(sub, pos)
            value = (k, v)
        if where is not None:
            if where not in allowed:
                raise MalformedError("%s (0x%02X) is not allowed in %s" % (
                    name, pid, where if where == WILL else aviary_test.TYPE_NAMES[where]))
            multi = pid == USER_PROPERTY or (pid == SUBSCRIPTION_IDENTIFIER and where == PUBLISH)
            if not multi and props.has(pid):
                raise MalformedError("%s (0x%02X) appears twice (a Protocol Error)" % (name, pid))
        props.append((pid, value))
    if pos != end:
        raise MalformedError("properties end inside a property")
    return props, end


class Props(list):
    """Properties as received: a list of (id, value) in wire order."""

    def has(self, pid):
        return any(p == pid for p, _ in self)

    def get(self, pid, default=None):
        for p, v in self:
            if p == pid:
                return v
        return default

    def all(self, pid):
        return [v for p, v in self if p == pid]

    def ids(self):
        return [p for p, _ in self]

    @property
    def user(self):
        return self.all(USER_PROPERTY)

    @property
    def reason_string(self):
        return self.get(REASON_STRING)

    def __repr__(self):
        return "[%s]" % ", ".join("%s=%r" % (prop_name(p), v) for p, v in self)


# ---------------------------------------------------------------------------
# Builders

def connect5(client_id="", clean_start=True, keepalive=60, props=(), will=None, username=None,
             password=None, protocol_name="MQTT", version=5, session_expiry=None,
             receive_maximum=None, maximum_packet_size=None, topic_alias_maximum=None,
             request_response_info=None, request_problem_info=None, user_props=(),
             auth_method=None, auth_data=None):
    """CONNECT with protocol level `version` (5 unless told otherwise).

    will: dict(topic=, payload=b"", qos=0, retain=False, props=[...], delay=None).
    The keyword properties are added after `props`, in the order of the signature."""
    props = list(props) if not isinstance(props, Raw) else props
    if not isinstance(props, Raw):
        for pid, value in ((SESSION_EXPIRY_INTERVAL, session_expiry),
                           (RECEIVE_MAXIMUM, receive_maximum),
                           (MAXIMUM_PACKET_SIZE, maximum_packet_size),
                           (TOPIC_ALIAS_MAXIMUM, topic_alias_maximum),
                           (REQUEST_RESPONSE_INFORMATION, request_response_info),
                           (REQUEST_PROBLEM_INFORMATION, request_problem_info)):
            if value is not None:
                props.append((pid, value))
        props += [(USER_PROPERTY, kv) for kv in user_props]
        if auth_method is not None:
            props.append((AUTHENTICATION_METHOD, auth_method))
        if auth_data is not None:
            props.append((AUTHENTICATION_DATA, auth_data))
    flags = 0x02 if clean_start else 0
    payload = mqtt_string(client_id)
    if will is not None:
        flags |= 0x04 | ((will.get("qos", 0) & 3) << 3)
        if will.get("retain"):
            flags |= 0x20
        wprops = list(will.get("props", ()))
        if will.get("delay") is not None:
            wprops.insert(0, (WILL_DELAY_INTERVAL, will["delay"]))
        payload += (encode_properties(wprops) + mqtt_string(will["topic"])
                    + mqtt_string(will.get("payload", b"")))
    if username is not None:
        flags |= 0x80
        payload += mqtt_string(username)
    if password is not None:
        flags |= 0x40
        payload += mqtt_string(password)
    body = mqtt_string(protocol_name) + bytes([version, flags]) + u16(keepalive)
    if version == 5:
        body += encode_properties(props)
    return packet(CONNECT, 0, body + payload)


def publish5(topic, payload=b"", qos=0, retain=False, dup=False, pid=None, props=()):
    flags = ((qos & 3) << 1) | (0x01 if retain else 0) | (0x08 if dup else 0)
    body = mqtt_string(topic)
    if qos > 0:
        body += u16(1 if pid is None else pid)
    return packet(PUBLISH, flags, body + encode_properties(props) + to_bytes(payload))


def sub_options(qos=0, no_local=False, retain_as_published=False, retain_handling=0):
    """The Subscription Options byte (3.8.3.1)."""
    return ((qos & 3) | (0x04 if no_local else 0) | (0x08 if retain_as_published else 0)
            | ((retain_handling & 3) << 4))


def subscribe5(pid, filters, props=(), sub_id=None, flags=0x02):
    """SUBSCRIBE; filters = [(filter, options byte)] (see sub_options) or [filter]."""
    props = list(props)
    if sub_id is not None:
        props.insert(0, (SUBSCRIPTION_IDENTIFIER, sub_id))
    payload = b""
    for f in filters:
        if isinstance(f, str):
            f = (f, 0)
        payload += mqtt_string(f[0]) + bytes([f[1]])
    return packet(SUBSCRIBE, flags, u16(pid) + encode_properties(props) + payload)


def unsubscribe5(pid, filters, props=()):
    return packet(UNSUBSCRIBE, 0x02, u16(pid) + encode_properties(props)
                  + b"".join(mqtt_string(f) for f in filters))


def _ack(ptype, flags, pid, reason=0, props=(), short=True):
    """PUBACK/PUBREC/PUBREL/PUBCOMP; the 2-byte form when reason 0 and no properties."""
    body = u16(pid)
    if reason or props or not short:
        body += bytes([reason])
        if props or not short:
            body += encode_properties(props)
    return packet(ptype, flags, body)


def puback5(pid, reason=0, props=(), short=True):
    return _ack(PUBACK, 0, pid, reason, props, short)


def pubrec5(pid, reason=0, props=(), short=True):
    return _ack(PUBREC, 0, pid, reason, props, short)


def pubrel5(pid, reason=0, props=(), short=True):
    return _ack(PUBREL, 0x02, pid, reason, props, short)


def pubcomp5(pid, reason=0, props=(), short=True):
    return _ack(PUBCOMP, 0, pid, reason, props, short)


def disconnect5(reason=0, props=(), session_expiry=None):
    props = list(props)
    if session_expiry is not None:
        props.insert(0, (SESSION_EXPIRY_INTERVAL, session_expiry))
    if reason == 0 and not props:
        return packet(DISCONNECT, 0, b"")
    return packet(DISCONNECT, 0, bytes([reason]) + encode_properties(props))


def auth5(reason=0x18, props=()):
    return packet(AUTH, 0, bytes([reason]) + encode_properties(props))


# ---------------------------------------------------------------------------
# Decoding what the broker sends

class V5Packet:
    """A decoded v5 packet from the broker.

    type, flags, size (bytes on the wire), props (Props), reason (one reason code, for
    CONNACK / acks / DISCONNECT / AUTH), codes (SUBACK / UNSUBACK), pid, and for CONNACK
    session_present, for PUBLISH topic, qos, dup, retain, payload, alias."""

    def __init__(self, pkt):
        self.type = pkt.type
        self.flags = pkt.flags
        self.body = pkt.body
        self.size = 1 + len(varint(len(pkt.body))) + len(pkt.body)
        self.props = Props()
        self.reason = None
        self.codes = None
        self.pid = None
        try:
            self._decode()
        except MalformedError as e:
            raise TestFailure("the broker sent a malformed %s: %s (body %s)"
                              % (self.name, e, self.body[:64].hex()))

    @property
    def name(self):
        return aviary_test.TYPE_NAMES.get(self.type, str(self.type))

    def _decode(self):
        b, t = self.body, self.type
        if t == CONNACK:
            if len(b) < 3:
                raise MalformedError("a v5 CONNACK has at least 3 bytes, got %d" % len(b))
            if b[0] & 0xFE:
                raise MalformedError("reserved Connect Acknowledge Flags set: 0x%02x" % b[0])
            self.session_present = bool(b[0] & 1)
            self.reason = b[1]
            self.props, end = parse_properties(b, 2, CONNACK)
            self._end(end)
        elif t == PUBLISH:
            self.qos = (self.flags >> 1) & 3
            self.dup = bool(self.flags & 0x08)
            self.retain = bool(self.flags & 0x01)
            if self.qos == 3:
                raise MalformedError("PUBLISH with QoS 3")
            self.topic, pos = _read_str(b, 0)
            if self.qos:
                self.pid, pos = _read_u16(b, pos)
                if self.pid == 0:
                    raise MalformedError("QoS %d PUBLISH with packet id 0" % self.qos)
            self.props, pos = parse_properties(b, pos, PUBLISH)
            self.payload = bytes(b[pos:])
            self.alias = self.props.get(TOPIC_ALIAS)
            if self.alias == 0:
                raise MalformedError("Topic Alias 0 (MQTT-3.3.2-8)")
            for sid in self.props.all(SUBSCRIPTION_IDENTIFIER):
                if sid == 0:
                    raise MalformedError("Subscription Identifier 0")
        elif t in _ACKS:
            want = 2 if t == PUBREL else 0
            if self.flags != want:
                raise MalformedError("%s with flags 0x%x" % (self.name, self.flags))
            self.pid, pos = _read_u16(b, 0)
            self.reason = 0
            if len(b) > 2:
                self.reason = b[2]
            if len(b) > 3:
                self.props, end = parse_properties(b, 3, t)
                self._end(end)
        elif t in (SUBACK, UNSUBACK):
            self.pid, pos = _read_u16(b, 0)
            self.props, pos = parse_properties(b, pos, t)
            self.codes = list(b[pos:])
            if not self.codes:
                raise MalformedError("%s without reason codes" % self.name)
        elif t in (DISCONNECT, AUTH):
            self.reason = b[0] if b else 0
            if len(b) > 1:
                self.props, end = parse_properties(b, 1, t)
                self._end(end)
            if t == DISCONNECT and self.props.has(SESSION_EXPIRY_INTERVAL):
                raise MalformedError("the Server sent Session Expiry Interval on DISCONNECT "
                                     "(MQTT-3.14.2-2)")
        elif t == PINGRESP:
            if b:
                raise MalformedError("PINGRESP with a body")
        else:
            raise MalformedError("a broker does not send %s" % self.name)

    def _end(self, end):
        if end != len(self.body):
            raise MalformedError("%d bytes after the properties" % (len(self.body) - end))

    def __repr__(self):
        parts = [self.name]
        if self.type == PUBLISH:
            parts.append("topic=%r qos=%d retain=%d dup=%d pid=%s payload=%r" % (
                self.topic, self.qos, self.retain, self.dup, self.pid, self.payload[:40]))
        elif self.pid is not None:
            parts.append("pid=%d" % self.pid)
        if self.reason is not None:
            parts.append("reason=" + reason_name(self.reason))
        if self.codes is not None:
            parts.append("codes=[%s]" % ", ".join("0x%02X" % c for c in self.codes))
        if self.type == CONNACK:
            parts.append("session_present=%d" % self.session_present)
        if self.props:
            parts.append("props=%r" % (self.props,))
        return "<%s>" % " ".join(parts)


def decode(pkt):
    return V5Packet(pkt)


def split_packets(data):
    """Whole packets in `data` (bytes), decoded, and the number of bytes left over."""
    out = []
    pos = 0
    n = len(data)
    while pos + 2 <= n:
        length, mult, i = 0, 1, pos + 1
        while True:
            if i >= n:
                return out, n - pos
            b = data[i]
            length += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
            if i - pos > 4:
                raise TestFailure("remaining length longer than 4 bytes at offset %d" % pos)
        if i + length > n:
            break
        out.append(decode(aviary_test.Packet(data[pos], data[i:i + length])))
        pos = i + length
    return out, n - pos


def summarize(packets, keep=4):
    """A short description of a list of packets (the first and last few)."""
    packets = list(packets)
    if len(packets) <= 2 * keep:
        return repr(packets)
    return "%d packets: %r ... %r" % (len(packets), packets[:keep], packets[-keep:])


def _shorten(text, limit=3000):
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    return text[:limit // 2] + " [... %d characters ...] " % cut + text[-limit // 2:]


# ---------------------------------------------------------------------------
# The raw v5 client

class V5Client(RawClient):
    """A raw MQTT 5 connection. Every read goes through decode(): the broker's packets
    are checked for well-formedness and returned as V5Packet.

    Topic aliases the broker sends are resolved per connection: received PUBLISH
    packets get `.resolved` (the topic name after alias lookup)."""

    def __init__(self, port, timeout=5.0):
        super().__init__(port, timeout)
        self.version = 5
        self.connack = None
        self.aliases_in = {}
        self.max_packet_size = None  # what we announced, to check the broker keeps to it
        self.connect_props = {}      # what our CONNECT said (Topic Alias Maximum...)

    # -- reading
    def read5(self, timeout=5.0):
        return self._check_in(decode(self.read_packet(timeout)))

    def _check_in(self, p):
        if self.max_packet_size is not None and p.size > self.max_packet_size:
            raise TestFailure("the broker sent a %d-byte %s past our Maximum Packet Size %d "
                              "(MQTT-3.1.2-24): %r" % (p.size, p.name, self.max_packet_size, p))
        if p.type == PUBLISH:
            if p.alias is not None:
                limit = self.connect_props.get(TOPIC_ALIAS_MAXIMUM, 0)
                if p.alias > limit:
                    raise TestFailure("the broker sent Topic Alias %d, above our Topic Alias "
                                      "Maximum %d (MQTT-3.1.2-26/27): %r" % (p.alias, limit, p))
                if p.topic:
                    self.aliases_in[p.alias] = p.topic
                elif p.alias not in self.aliases_in:
                    raise TestFailure("the broker used Topic Alias %d before setting it: %r"
                                      % (p.alias, p))
                p.resolved = p.topic or self.aliases_in[p.alias]
            else:
                if not p.topic:
                    raise TestFailure("PUBLISH with an empty topic and no alias: %r" % p)
                p.resolved = p.topic
        return p

    def expect5(self, ptype, timeout=5.0, pid=None, what=None):
        """The next packet of `ptype` (and `pid`), decoded; others are kept for later."""
        try:
            pkt = self.expect(ptype, timeout, pid, what)
        except TestFailure as e:
            raise TestFailure(_shorten(str(e)))
        return self._check_in(decode(pkt))

    def packets_until_closed(self, timeout=5.0, what="the broker to close the connection"):
        """Every packet until the broker closes the connection (decoded)."""
        got = [self._check_in(decode(p)) for p in self.pending]
        self.pending = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                got.append(self._check_in(decode(
                    self._read_wire(max(deadline - time.monotonic(), 0.0)))))
        except Closed:
            return got
        except Timeout:
            raise TestFailure("timed out after %.1f s waiting for %s (connection still open; "
                              "received %s)" % (timeout, what, summarize(got)))

    def read_raw_until_closed(self, timeout=10.0):
        """All bytes until end of stream, fast (for megabytes of small packets).
        Returns (bytes, how): how is "eof" or "reset"."""
        data = bytearray(self.buf)
        self.buf = bytearray()
        if self.pending:
            raise TestFailure("read_raw_until_closed with packets pending: %s"
                              % summarize(self.pending))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TestFailure("the connection was still open after %.1f s (%d bytes read)"
                                  % (timeout, len(data)))
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                continue
            try:
                chunk = self.sock.recv(1 << 20)
            except (ConnectionResetError, ConnectionAbortedError):
                self.eof = True
                return bytes(data), "reset"
            if not chunk:
                self.eof = True
                return bytes(data), "eof"
            data += chunk

    # -- conversations
    def connect(self, client_id="", clean_start=True, keepalive=60, expect_reason=0,
                timeout=5.0, **kw):
        """CONNECT v5 (keywords as for connect5); check the CONNACK's reason code (unless
        expect_reason is None). Returns the decoded CONNACK (also in self.connack)."""
        self.connect_props = {}
        for key, pid in (("topic_alias_maximum", TOPIC_ALIAS_MAXIMUM),
                         ("maximum_packet_size", MAXIMUM_PACKET_SIZE),
                         ("receive_maximum", RECEIVE_MAXIMUM),
                         ("request_problem_info", REQUEST_PROBLEM_INFORMATION)):
            if kw.get(key) is not None:
                self.connect_props[pid] = kw[key]
        self.max_packet_size = kw.get("maximum_packet_size")
        self.send(connect5(client_id, clean_start, keepalive, **kw))
        ack = self.expect5(CONNACK, timeout, what="CONNACK for client id %r" % client_id)
        if expect_reason is not None:
            check(ack.reason == expect_reason, "CONNACK for client id %r: expected %s, got %r"
                  % (client_id, reason_name(expect_reason), ack))
        if ack.reason >= 0x80:
            check(not ack.session_present, "a refusing CONNACK with Session Present 1 "
                  "(MQTT-3.2.2-6): %r" % ack)
        self.connack = ack
        return ack

    def subscribe(self, filters, sub_id=None, props=(), timeout=5.0):
        """filters: [(filter, options byte)] or [filter] or one filter. Returns the SUBACK."""
        if isinstance(filters, (str, tuple)):
            filters = [filters]
        pid = self.alloc_pid()
        self.send(subscribe5(pid, filters, props, sub_id))
        ack = self.expect5(SUBACK, timeout, pid=pid, what="SUBSCRIBE %r" % (filters,))
        check_equal(len(ack.codes), len(filters), "number of SUBACK reason codes "
                    "(MQTT-3.8.4-6) in %r" % ack)
        return ack

    def unsubscribe(self, filters, props=(), timeout=5.0):
        if isinstance(filters, str):
            filters = [filters]
        pid = self.alloc_pid()
        self.send(unsubscribe5(pid, filters, props))
        ack = self.expect5(UNSUBACK, timeout, pid=pid, what="UNSUBSCRIBE %r" % (filters,))
        check_equal(len(ack.codes), len(filters), "number of UNSUBACK reason codes in %r" % ack)
        return ack

    def publish(self, topic, payload=b"", qos=0, retain=False, props=(), pid=None, timeout=5.0):
        """Publish; for QoS 1 returns the PUBACK, for QoS 2 the PUBREC (and completes the
        PUBREL/PUBCOMP exchange when the PUBREC reason is below 0x80), None for QoS 0."""
        if qos > 0 and pid is None:
            pid = self.alloc_pid()
        self.send(publish5(topic, payload, qos, retain, pid=pid, props=props))
        if qos == 1:
            return self.expect5(PUBACK, timeout, pid=pid, what="PUBLISH %r" % topic)
        if qos == 2:
            rec = self.expect5(PUBREC, timeout, pid=pid, what="PUBLISH %r" % topic)
            if rec.reason < 0x80:
                self.send(pubrel5(pid))
                comp = self.expect5(PUBCOMP, timeout, pid=pid, what="PUBREL %d" % pid)
                check_equal(comp.reason, 0, "PUBCOMP reason code for packet id %d" % pid)
            return rec
        return None

    def receive(self, timeout=5.0, ack=True, what="a PUBLISH"):
        """The next PUBLISH (decoded); with ack=True answer it (PUBACK or PUBREC/PUBREL/
        PUBCOMP, reason 0)."""
        p = self.expect5(PUBLISH, timeout, what=what)
        if ack and p.qos == 1:
            self.send(puback5(p.pid))
        elif ack and p.qos == 2:
            self.send(pubrec5(p.pid))
            rel = self.expect5(PUBREL, timeout, pid=p.pid, what="after PUBREC %d" % p.pid)
            check_equal(rel.reason, 0, "PUBREL reason code")
            self.send(pubcomp5(p.pid))
        return p

    def ping(self, timeout=5.0):
        self.send(PINGREQ_PACKET)
        self.expect5(PINGRESP, timeout, what="the connection should still be served")

    def expect_disconnect(self, reason, timeout=5.0, what="", reason_string=None):
        """The broker sends DISCONNECT `reason` and closes the connection.

        Nothing but PUBLISH/acks may come before it; nothing after it (MQTT-3.14.4-1).
        reason_string: None = with aviary, a Reason String must be present (the design
        gives every DISCONNECT one); a regex = it must be present and match; False = no
        check. Returns the DISCONNECT."""
        import re
        label = "DISCONNECT %s%s" % (reason_name(reason), " (" + what + ")" if what else "")
        got = self.packets_until_closed(timeout, "the broker to send %s and close" % label)
        discs = [p for p in got if p.type == DISCONNECT]
        check(discs, "expected %s before the close, got %r" % (label, got))
        d = discs[0]
        check(d is got[-1], "packets after the broker's DISCONNECT (MQTT-3.14.4-1): %r" % got)
        check(d.reason == reason, "expected %s, got %r (all packets: %r)" % (label, d, got))
        rs = d.props.reason_string
        if reason_string is None and is_aviary():
            check(rs, "aviary's %s has no Reason String: %r" % (label, d))
        elif reason_string:
            check(rs and re.search(reason_string, rs, re.I),
                  "%s: Reason String %r does not match /%s/" % (label, rs, reason_string))
        return d

    def disconnect(self, reason=0, props=(), session_expiry=None):
        self.try_send(disconnect5(reason, props, session_expiry))
        self.close()

    def disconnect_and_wait(self, reason=0, props=(), session_expiry=None, timeout=5.0):
        """DISCONNECT, then wait for the broker's close: it has processed the DISCONNECT
        before anything another connection sends from now on."""
        self.try_send(disconnect5(reason, props, session_expiry))
        rest = self.expect_closed(timeout, "the close after DISCONNECT")
        check(not rest, "packets after DISCONNECT: %s" % summarize(rest))
        self.close()


def v5_connect(port, client_id=None, **kw):
    """A V5Client whose CONNECT was accepted (unless expect_reason says otherwise)."""
    c = V5Client(port)
    try:
        c.connect(unique("c5-") if client_id is None else client_id, **kw)
    except BaseException:
        c.close()
        raise
    return c


def cloud_login5(port, instance, secret, client_id=None, **kw):
    """v5_connect() to a cloud broker's `instance` with token `secret` (user name and
    password); expect_reason and the CONNECT's properties go in `kw`."""
    return v5_connect(port, client_id, username=instance, password=secret, **kw)


# ---------------------------------------------------------------------------
# paho-mqtt with MQTT 5

class Paho5Message:
    def __init__(self, msg):
        self.topic = msg.topic
        self.payload = bytes(msg.payload)
        self.qos = msg.qos
        self.retain = bool(msg.retain)
        props = getattr(msg, "properties", None)
        self.properties = props
        self.user = list(getattr(props, "UserProperty", []) or []) if props else []

    def prop(self, name, default=None):
        return getattr(self.properties, name, default) if self.properties else default

    def __repr__(self):
        return "<Paho5Message %r %r qos=%d retain=%d props=%s>" % (
            self.topic, self.payload[:40], self.qos, self.retain, self.properties)


def paho_props(packet_type, **values):
    """paho Properties for `packet_type` (PacketTypes.CONNECT, PUBLISH, ...):
    paho_props(PacketTypes.PUBLISH, MessageExpiryInterval=5, UserProperty=[("a", "b")])."""
    p = Properties(packet_type)
    for k, v in values.items():
        setattr(p, k, v)
    return p


class Paho5Client(PahoClient):
    """paho-mqtt 1.6.1 speaking MQTT 5, its network loop in a thread. Connects in the
    constructor and waits for CONNACK (fails unless its reason is expect_rc).
    transport "websockets" (path ws_path) or "tcp"; tls_ca: a CA file turns on TLS.
    publish(), wait_messages() and the rest are PahoClient's."""

    def __init__(self, port, client_id="", clean_start=True, keepalive=60, properties=None,
                 will=None, username=None, password=None, timeout=5.0, expect_rc=0,
                 transport="tcp", ws_path="/mqtt", tls_ca=None):
        if mqtt is None:
            raise TestFailure("paho-mqtt is not importable (Debian: python3-paho-mqtt)")
        self.client_id = client_id
        self.cond = threading.Condition()
        self.messages = []
        self.connack = None  # (reason code int, session present, properties)
        self.suback = {}
        self.unsuback = {}
        self.disconnected = threading.Event()
        self.disconnect_rc = None
        self.disconnect_props = None
        c = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv5, reconnect_on_failure=False,
                        transport=transport)
        if transport == "websockets":
            c.ws_set_options(path=ws_path)
        if tls_ca is not None:
            c.tls_set(ca_certs=tls_ca)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_unsubscribe = self._on_unsubscribe
        c.on_disconnect = self._on_disconnect
        if will is not None:
            c.will_set(will["topic"], will.get("payload", b""), will.get("qos", 0),
                       will.get("retain", False), properties=will.get("properties"))
        if username is not None:
            c.username_pw_set(username, password)
        self.c = c
        c.connect(HOST, port, keepalive, clean_start=clean_start, properties=properties)
        c.loop_start()
        try:
            wait_for(lambda: self.connack is not None or self.disconnected.is_set(), timeout,
                     what="CONNACK for paho v5 client %r" % client_id)
            if self.connack is None:
                raise TestFailure("paho v5 client %r: connection closed before CONNACK"
                                  % client_id)
            if expect_rc is not None:
                check_equal(self.connack[0], expect_rc,
                            "CONNACK reason code for paho v5 client %r" % client_id)
        except BaseException:
            self.close()
            raise

    def _on_connect(self, client, userdata, flags, reason, properties):
        with self.cond:
            rc = reason if isinstance(reason, int) else reason.value
            self.connack = (rc, flags.get("session present", 0), properties)
            self.cond.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append(Paho5Message(msg))
            self.cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self.cond:
            self.suback[mid] = [r.value for r in reason_codes]
            self.cond.notify_all()

    def _on_unsubscribe(self, client, userdata, mid, properties, reason_codes):
        with self.cond:
            codes = reason_codes if isinstance(reason_codes, list) else [reason_codes]
            self.unsuback[mid] = [getattr(r, "value", r) for r in codes]
            self.cond.notify_all()

    def _on_disconnect(self, client, userdata, rc, properties=None):
        self.disconnect_rc = rc if isinstance(rc, int) else rc.value
        self.disconnect_props = properties
        self.disconnected.set()

    def subscribe(self, topic, qos=0, no_local=False, retain_as_published=False,
                  retain_handling=0, properties=None, timeout=5.0):
        """Subscribe one filter and wait for SUBACK; returns its reason codes."""
        opts = SubscribeOptions(qos=qos, noLocal=no_local, retainAsPublished=retain_as_published,
                                retainHandling=retain_handling)
        rc, mid = self.c.subscribe(topic, options=opts, properties=properties)
        check(rc == 0, "paho v5 subscribe(%r) failed locally: rc %d" % (topic, rc))
        wait_for(lambda: mid in self.suback, timeout, what="SUBACK for %r" % (topic,))
        return self.suback[mid]

    def close(self, reasoncode=None, properties=None):
        try:
            if not self.disconnected.is_set():
                if reasoncode is None:
                    self.c.disconnect(properties=properties)
                else:
                    from paho.mqtt.reasoncodes import ReasonCodes
                    self.c.disconnect(ReasonCodes(PacketTypes.DISCONNECT, identifier=reasoncode),
                                      properties)
                self.disconnected.wait(3)
        finally:
            self.c.loop_stop()


# ---------------------------------------------------------------------------
# The broker under test: aviaryd, or mosquitto as a reference peer

PEER = os.environ.get("AVIARY_TEST_PEER", "aviary").strip().lower() or "aviary"
if PEER not in ("aviary", "mosquitto"):
    raise SystemExit("AVIARY_TEST_PEER must be 'aviary' or 'mosquitto', not %r" % PEER)
MOSQUITTO = os.environ.get("MOSQUITTO", "/usr/sbin/mosquitto")


def is_aviary():
    return PEER == "aviary"


def aviary_only(why):
    """Skip the current test when the peer is not aviary: `why` names the aviary-specific
    behaviour it checks."""
    if not is_aviary():
        raise Skip("aviary-specific (%s)" % why)


# AVIARY_TEST_PEER_STRICT=1 runs the tests mosquitto_deviates()/mosquitto_differs() would
# skip, to see how mosquitto fails them.
STRICT = os.environ.get("AVIARY_TEST_PEER_STRICT", "") not in ("", "0")


def mosquitto_deviates(why):
    """Skip under mosquitto where it does not do what the MQTT 5 spec requires."""
    if PEER == "mosquitto" and not STRICT:
        raise Skip("mosquitto 2.0.11 deviates from MQTT 5: %s" % why)


def mosquitto_differs(why):
    """Skip under mosquitto where it makes another choice the spec allows."""
    if PEER == "mosquitto" and not STRICT:
        raise Skip("mosquitto 2.0.11 makes another allowed choice: %s" % why)


# aviaryd directive -> mosquitto.conf line (value appended). Others have no equivalent.
_MOSQUITTO_EQUIV = {
    "--max-inflight": "max_inflight_messages",
    "--max-queued-messages": "max_queued_messages",
    "--keepalive-max": "max_keepalive",
    "--max-topic-aliases": "max_topic_alias",
}


def _free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, 0))
        return s.getsockname()[1]
    finally:
        s.close()


class MosquittoBroker(Broker):
    """mosquitto with a generated configuration, behind the Broker interface: `port`,
    the log (stderr and stdout), SIGTERM at the end, killed by PID through aviary_test's
    registry. Listens on 127.0.0.1 on a port picked here (never 1883)."""

    def __init__(self, *extra_args, conf=(), start_timeout=10.0):
        super().__init__(start_timeout=start_timeout)
        self.conf_lines = list(conf)
        args = [str(a) for a in extra_args]
        i = 0
        while i < len(args):
            name = args[i]
            value = None
            if "=" in name:
                name, value = name.split("=", 1)
            elif i + 1 < len(args):
                value = args[i + 1]
                i += 1
            i += 1
            if name not in _MOSQUITTO_EQUIV:
                raise Skip("mosquitto has no equivalent of aviaryd's %s" % name)
            self.conf_lines.append("%s %s" % (_MOSQUITTO_EQUIV[name], value))

    def argv(self):
        return [MOSQUITTO, "-c", os.path.join(self.dir, "mosquitto.conf")]

    def start(self):
        if not os.access(MOSQUITTO, os.X_OK):
            raise Skip("AVIARY_TEST_PEER=mosquitto but %s is not installed" % MOSQUITTO)
        self.dir = tempfile.mkdtemp(prefix="aviary-test-mosq-")
        os.chmod(self.dir, 0o755)
        self.log_path = os.path.join(self.dir, "mosquitto.log")
        last = None
        for _ in range(3):
            port = _free_port()
            with open(os.path.join(self.dir, "mosquitto.conf"), "w") as f:
                f.write("# generated by tests/integration/mqtt5.py\n"
                        "listener %d %s\nallow_anonymous true\npersistence false\n"
                        "log_dest stderr\nlog_type all\nconnection_messages true\n"
                        "log_timestamp true\n" % (port, HOST))
                for line in self.conf_lines:
                    f.write(line + "\n")
            self._log_file = open(self.log_path, "ab")
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                         stdout=self._log_file, stderr=self._log_file,
                                         cwd=self.dir)
            aviary_test._register(self)
            deadline = time.monotonic() + self.start_timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    socket.create_connection((HOST, port), timeout=0.5).close()
                    self.port = port
                    self.listeners = [("tcp", HOST, port)]
                    return self
                except OSError:
                    time.sleep(0.05)
            last = "mosquitto exited with %s" % self.proc.poll()
            self.kill_now()
            self._close_log()
        tail = self.log_tail()
        if not os.environ.get("AVIARY_KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)
        raise TestFailure("mosquitto did not start listening (%s)\n%s" % (last, tail))


def broker(*args, mosquitto_conf=(), **kw):
    """The broker under test with aviaryd directives `args` (a `with` object).

    Under AVIARY_TEST_PEER=mosquitto the directives are translated where mosquitto has
    an equivalent (else the test is skipped) and `mosquitto_conf` lines are added."""
    if is_aviary():
        return Broker(*args, **kw)
    if any(str(a) == "--mode" for a in args):
        raise Skip("aviary-specific (cloud mode)")
    return MosquittoBroker(*args, conf=mosquitto_conf,
                           start_timeout=kw.get("start_timeout", 10.0))


def mosquitto_clients_v5(port, tool, *args, timeout=10.0):
    """Run mosquitto_pub/mosquitto_rr to completion with -V 5; fails unless it exits 0."""
    exe = aviary_test.require_tool(tool)
    r = aviary_test.run([exe, "-h", HOST, "-p", port, "-V", "5"] + [str(a) for a in args],
                        timeout)
    check(r.returncode == 0, "%s -V 5 %s exited %d: %s" % (
        tool, " ".join(str(a) for a in args), r.returncode,
        r.stderr.decode("utf-8", "replace").strip()))
    return r


def mosquitto_sub5(port, *args, wait_suback=True):
    """mosquitto_sub -V 5 -d ...; waits for its SUBACK."""
    return aviary_test.mosquitto_sub(port, "-V", "5", *args, wait_suback=wait_suback)


def mosquitto_pub5(port, *args, timeout=10.0):
    return mosquitto_clients_v5(port, "mosquitto_pub", *args, timeout=timeout)


# ---------------------------------------------------------------------------
# Small helpers for the tests

def healthy_pair(port, topic=None):
    """A subscriber and a publisher (both v5) on one topic, already proven to work.
    Returns (sub, pub, topic); check_healthy() proves they still do."""
    topic = topic or unique("healthy/")
    sub = v5_connect(port, unique("hsub-"))
    check_equal(sub.subscribe((topic, 1)).codes, [1], "healthy subscriber's SUBACK")
    pub = v5_connect(port, unique("hpub-"))
    check_healthy(sub, pub, topic)
    return sub, pub, topic


def check_healthy(sub, pub, topic):
    """The healthy pair still works: a QoS 1 message goes through, nothing else arrived."""
    payload = unique("alive").encode()
    ack = pub.publish(topic, payload, qos=1)
    check(ack.reason == 0, "healthy publisher's PUBACK: %r" % ack)
    p = sub.receive(what="the healthy subscriber's message")
    check_equal((p.resolved, p.payload), (topic, payload), "healthy subscriber's message")
    sub.expect_silence(0.2, "on the healthy subscriber")
