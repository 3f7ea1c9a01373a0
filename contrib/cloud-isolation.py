#!/usr/bin/python3
"""Check tenant isolation at scale: many instances, many clients, the same topics.

Creates INSTANCES instances with aviaryctl in a fresh database, starts a
cloud-mode aviaryd on a free loopback port, connects CLIENTS clients to each
instance (all with the same client ids and topics in every instance), has
every client subscribe to `#` and publish MESSAGES messages to the same topic
names, and counts what each client receives: every client must receive
exactly the messages of its own instance (CLIENTS x MESSAGES) and nothing from
any other. Prints the counts and exits 0 when isolation held, 1 otherwise.

    contrib/cloud-isolation.py [--aviaryd PATH] [--aviaryctl PATH]
                               [--instances 50] [--clients 20] [--messages 5]
"""

import argparse
import os
import resource
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"
DEADLINE = 120.0  # seconds for the whole exchange; every loop below is bounded by it


def mqtt_string(b):
    return struct.pack("!H", len(b)) + b


def varint(n):
    out = b""
    while True:
        d, n = n % 128, n // 128
        out += bytes([d | (0x80 if n else 0)])
        if not n:
            return out


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def connect_packet(client_id, user, password):
    body = (mqtt_string(b"MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 60) +
            mqtt_string(client_id) + mqtt_string(user) + mqtt_string(password))
    return packet(0x10, body)


class Client:
    def __init__(self, instance, index, secret, port):
        self.instance = instance
        self.name = b"client-%d" % index  # the same ids in every instance
        self.sock = socket.create_connection((HOST, port))
        self.sock.setblocking(False)
        self.buf = b""
        self.out = connect_packet(self.name, instance.encode(), secret.encode())
        self.out += packet(0x82, struct.pack("!H", 1) + mqtt_string(b"#") + b"\x00")
        self.connacked = self.subacked = False
        self.received = {}  # instance name in the payload -> count

    def parse(self):
        while len(self.buf) >= 2:
            mult, length, i = 1, 0, 1
            while True:
                if i >= len(self.buf):
                    return
                b = self.buf[i]
                length += (b & 0x7F) * mult
                mult *= 128
                i += 1
                if not b & 0x80:
                    break
            if len(self.buf) < i + length:
                return
            first, body = self.buf[0], self.buf[i:i + length]
            self.buf = self.buf[i + length:]
            kind = first >> 4
            if kind == 2:
                if body[1] != 0:
                    raise SystemExit("%s/%s: CONNACK %d" % (self.instance, self.name, body[1]))
                self.connacked = True
            elif kind == 9:
                if body[2] != 0:
                    raise SystemExit("%s/%s: SUBACK %r" % (self.instance, self.name, body))
                self.subacked = True
            elif kind == 3:
                tlen = struct.unpack("!H", body[:2])[0]
                payload = body[2 + tlen:]
                owner = payload.split(b"|")[0].decode()
                self.received[owner] = self.received.get(owner, 0) + 1


def pump(clients, until, sel, deadline):
    while not until():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        for c in clients:
            if c.out:
                try:
                    n = c.sock.send(c.out)
                    c.out = c.out[n:]
                except BlockingIOError:
                    pass
        for key, _ in sel.select(0.05):
            c = key.data
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                raise SystemExit("%s/%s: connection closed" % (c.instance, c.name))
            c.buf += data
            c.parse()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--aviaryd", default=os.path.join(here, "..", "aviaryd"))
    ap.add_argument("--aviaryctl", default=os.path.join(here, "..", "aviaryctl"))
    ap.add_argument("--instances", type=int, default=50)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--messages", type=int, default=5)
    args = ap.parse_args()

    need = args.instances * args.clients * 2 + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))

    work = tempfile.mkdtemp(prefix="aviary-isolation-")
    db = os.path.join(work, "aviary.db")
    broker = None
    try:
        ctl = [args.aviaryctl, "--db", db]
        # A plan roomy enough for the test's own load.
        subprocess.run(ctl + ["plan", "set", "isolation", "max-connections",
                              str(args.clients)], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(ctl + ["plan", "set", "isolation", "max-messages-per-second", "0"],
                       check=True, stdout=subprocess.DEVNULL)
        secrets = {}
        for i in range(args.instances):
            name = "tenant-%02d" % i
            subprocess.run(ctl + ["instance", "create", name, "--plan", "isolation"],
                           check=True, stdout=subprocess.DEVNULL)
            out = subprocess.run(ctl + ["token", "create", name, "--ttl", "1h"], check=True,
                                 capture_output=True, text=True).stdout
            secrets[name] = out.strip().splitlines()[-1]

        broker = subprocess.Popen([args.aviaryd, "--mode", "cloud", "--db", db, "--listen",
                                   "tcp://%s:0" % HOST, "--log-level", "warning"],
                                  stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        line = broker.stdout.readline().decode()
        if not line.startswith("listening on tcp://"):
            raise SystemExit("aviaryd did not start: %r" % line)
        port = int(line.strip().rsplit(":", 1)[1])

        deadline = time.monotonic() + DEADLINE
        sel = selectors.DefaultSelector()
        clients = []
        for name, secret in secrets.items():
            for k in range(args.clients):
                c = Client(name, k, secret, port)
                sel.register(c.sock, selectors.EVENT_READ, c)
                clients.append(c)
        pump(clients, lambda: all(c.connacked and c.subacked for c in clients), sel, deadline)

        for c in clients:
            for m in range(args.messages):
                payload = b"%s|%s|%d" % (c.instance.encode(), c.name, m)
                c.out += packet(0x30, mqtt_string(b"home/temp") + payload)
        want = args.clients * args.messages
        pump(clients, lambda: all(sum(c.received.values()) >= want for c in clients), sel,
             deadline)
        time.sleep(0.5)  # anything stray arrives now
        pump(clients, lambda: True, sel, deadline)

        leaks = sum(n for c in clients for owner, n in c.received.items() if owner != c.instance)
        own = sum(c.received.get(c.instance, 0) for c in clients)
        exact = all(c.received == {c.instance: want} for c in clients)
        print("instances %d x clients %d, %d messages each: %d deliveries expected, "
              "%d delivered inside their instance, %d crossed instances"
              % (args.instances, args.clients, args.messages, len(clients) * want, own, leaks))
        print("isolation %s" % ("held" if exact and leaks == 0 else "FAILED"))
        return 0 if exact and leaks == 0 else 1
    finally:
        if broker is not None:
            broker.terminate()
            try:
                broker.wait(10)
            except subprocess.TimeoutExpired:
                broker.kill()
                broker.wait()
        shutil.rmtree(work, True)


if __name__ == "__main__":
    sys.exit(main())
