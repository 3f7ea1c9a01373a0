#!/usr/bin/env python3
"""Write the seed corpus for fuzz_codec: one MQTT packet per file.

The packets are built here, independently of the C encoder, so a bug in the
encoder cannot hide in the seeds. Run from anywhere; it rewrites
tests/fuzz/corpus/codec/ next to this script.
"""
import os
import struct

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "codec")


def vbi(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def u16(n):
    return struct.pack(">H", n)


def u32(n):
    return struct.pack(">I", n)


def s(text):
    data = text.encode() if isinstance(text, str) else text
    return u16(len(data)) + data


def packet(type_, flags, body):
    return bytes([type_ << 4 | flags]) + vbi(len(body)) + body


def props(*items):
    block = b"".join(items)
    return vbi(len(block)) + block


def connect(name, level, flags, payload, properties=b""):
    return packet(1, 0, s(name) + bytes([level, flags]) + u16(60) + properties + payload)


SEEDS = {
    "connect-v31-will-credentials": connect(
        "MQIsdp", 3, 0xEE, s("v31-client") + s("will/t") + s("bye") + s("user") + s("pass")),
    "connect-v311-minimal": connect("MQTT", 4, 0x02, s("c")),
    "connect-v311-will-credentials": connect(
        "MQTT", 4, 0xF6, s("client-1") + s("last/will") + s(b"\x00gone") + s("u") + s(b"p\x00w")),
    "connect-v5-will-credentials": connect(
        "MQTT", 5, 0xCE,
        s("dev") + props(b"\x18" + u32(30), b"\x01\x01", b"\x03" + s("text/plain"),
                         b"\x08" + s("reply/here"), b"\x09" + s(b"\xff"))
        + s("dev/status") + s("offline") + s("user") + s("pw"),
        properties=props(b"\x11" + u32(3600), b"\x21" + u16(20), b"\x27" + u32(1 << 20),
                         b"\x22" + u16(10), b"\x17\x01", b"\x19\x00",
                         b"\x26" + s("k") + s("v"), b"\x15" + s("SCRAM"), b"\x16" + s(b"\x01"))),
    "connect-mqtt-level6": connect("MQTT", 6, 0x02, s("c")),
    "connack-v311": packet(2, 0, b"\x01\x00"),
    "connack-v5-props": packet(
        2, 0, b"\x00\x00" + props(b"\x12" + s("auto-1"), b"\x13" + u16(120), b"\x24\x01",
                                  b"\x25\x00", b"\x28\x01", b"\x29\x01", b"\x2a\x00",
                                  b"\x1f" + s("ok"))),
    "publish-qos0": packet(3, 0x1, s("a/b") + b"hello"),
    "publish-qos1": packet(3, 0x2, s("a/b") + u16(1) + b"\x00\xff"),
    "publish-qos2-dup": packet(3, 0xC, s("sensors/1") + u16(0xFFFF) + b"{}"),
    "publish-v5-props": packet(
        3, 0x2, s("t") + u16(7) + props(b"\x01\x01", b"\x02" + u32(60), b"\x23" + u16(3),
                                        b"\x08" + s("r"), b"\x09" + s("id"), b"\x0b\x80\x01",
                                        b"\x0b\x02", b"\x26" + s("a") + s("b")) + b"payload"),
    "publish-v5-alias-empty-topic": packet(3, 0, s("") + props(b"\x23" + u16(1)) + b"x"),
    "puback": packet(4, 0, u16(1)),
    "pubrec-v5-reason-props": packet(5, 0, u16(2) + b"\x10" + props(b"\x1f" + s("none"))),
    "pubrel": packet(6, 2, u16(3)),
    "subscribe": packet(8, 2, u16(10) + s("a/+") + b"\x01" + s("#") + b"\x02"),
    "subscribe-v5-props": packet(
        8, 2, u16(11) + props(b"\x0b\x05", b"\x26" + s("x") + s("y"))
        + s("$share/g/a") + b"\x29" + s("b/#") + b"\x1e"),
    "suback": packet(9, 0, u16(10) + b"\x01\x02\x80"),
    "suback-v5": packet(9, 0, u16(11) + props() + b"\x00\xa2"),
    "unsubscribe": packet(10, 2, u16(12) + s("a/+") + s("c")),
    "unsuback-v5": packet(11, 0, u16(12) + props(b"\x1f" + s("r")) + b"\x00\x11"),
    "pingreq": packet(12, 0, b""),
    "disconnect": packet(14, 0, b""),
    "disconnect-v5-props": packet(14, 0, b"\x04" + props(b"\x11" + u32(0), b"\x1c" + s("srv"))),
    "auth-v5": packet(15, 0, b"\x18" + props(b"\x15" + s("m"), b"\x16" + s(b"\x00"))),
}


def main():
    os.makedirs(CORPUS, exist_ok=True)
    for name in os.listdir(CORPUS):
        os.unlink(os.path.join(CORPUS, name))
    for name, data in SEEDS.items():
        with open(os.path.join(CORPUS, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
