#!/usr/bin/python3
"""Open and close many WebSocket MQTT sessions; report the broker's descriptors and RSS.

Starts aviaryd with a ws:// listener on a free loopback port, measures its open
file descriptors (/proc/PID/fd) and resident memory (VmRSS) after a warm-up,
runs CYCLES sessions (WebSocket handshake, MQTT CONNECT, CONNACK, DISCONNECT,
close), and measures again. Bounded by --cycles and --seconds.

    contrib/ws-cycles.py [--aviaryd PATH] [--cycles 10000] [--seconds 300]
"""

import argparse
import base64
import os
import socket
import struct
import subprocess
import sys
import time

HOST = "127.0.0.1"


def frame(data):
    mask = os.urandom(4)
    return (struct.pack("!BB", 0x82, 0x80 | len(data)) + mask +
            bytes(b ^ mask[i % 4] for i, b in enumerate(data)))


def connect_packet(client_id):
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack("!H", len(cid)) + cid
    return bytes([0x10, len(body)]) + body


def session(port, n):
    s = socket.create_connection((HOST, port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /mqtt HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Protocol: mqtt\r\n\r\n" % (HOST, key)).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("cycle %d: closed during the handshake" % n)
        buf += chunk
    if b" 101 " not in buf.split(b"\r\n")[0]:
        raise SystemExit("cycle %d: handshake refused: %r" % (n, buf[:80]))
    buf = buf.split(b"\r\n\r\n", 1)[1]
    s.sendall(frame(connect_packet("cycle-%d" % n)))
    while len(buf) < 6:  # a 2-byte frame header and the 4-byte CONNACK
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("cycle %d: closed before CONNACK" % n)
        buf += chunk
    if buf[2:6] != b"\x20\x02\x00\x00":
        raise SystemExit("cycle %d: no CONNACK 0: %r" % (n, buf))
    s.sendall(frame(b"\xe0\x00"))  # DISCONNECT
    s.close()


def measure(pid):
    fds = len(os.listdir("/proc/%d/fd" % pid))
    with open("/proc/%d/status" % pid) as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    return fds, rss


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--aviaryd", default=os.path.join(here, "..", "aviaryd"))
    ap.add_argument("--cycles", type=int, default=10000)
    ap.add_argument("--seconds", type=float, default=300)
    args = ap.parse_args()

    broker = subprocess.Popen([args.aviaryd, "--listen", "ws://%s:0" % HOST, "--listen",
                               "tcp://%s:0" % HOST, "--log-level", "warning"],
                              stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        port = None
        for _ in range(2):
            line = broker.stdout.readline().decode().strip()
            if line.startswith("listening on ws://"):
                port = int(line.rsplit(":", 1)[1])
        if port is None:
            raise SystemExit("aviaryd did not report a ws:// listener")
        for n in range(100):  # warm-up: one-time allocations
            session(port, n)
        time.sleep(0.5)
        fds0, rss0 = measure(broker.pid)
        t0 = time.monotonic()
        done = 0
        while done < args.cycles and time.monotonic() - t0 < args.seconds:
            session(port, done)
            done += 1
        time.sleep(1.0)  # the last closes reach the core thread
        fds1, rss1 = measure(broker.pid)
        print("%d WebSocket sessions in %.1f s" % (done, time.monotonic() - t0))
        print("descriptors: %d before, %d after" % (fds0, fds1))
        print("VmRSS: %d kB before, %d kB after" % (rss0, rss1))
        # Where they started: the same descriptors, and no more than 1 MB of heap.
        return 0 if done == args.cycles and fds1 <= fds0 and rss1 - rss0 <= 1024 else 1
    finally:
        broker.terminate()
        try:
            broker.wait(10)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait()


if __name__ == "__main__":
    sys.exit(main())
