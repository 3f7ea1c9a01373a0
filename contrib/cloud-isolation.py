#!/usr/bin/python3
"""Check tenant isolation at scale: many instances, many clients, the same topics.

Creates INSTANCES instances with aviaryctl in a fresh database, starts a
cloud-mode aviaryd on a free loopback port, connects CLIENTS clients to each
instance (all with the same client ids and topics in every instance), has
every client subscribe to `#` and publish MESSAGES messages to the same topic
names, and counts what each client receives: every client must receive
exactly the messages of its own instance (CLIENTS x MESSAGES) and nothing from
any other. Prints the counts and exits 0 when isolation held, 1 otherwise.

With --nodes N (N > 1) it starts a redis-server of its own on a free loopback
port and N aviaryd nodes joined to it (--cluster: the catalog made here is
uploaded with `aviaryctl --cluster URL init --from DB`, each node keeps its own database),
spreads the clients round-robin over the nodes, waits until every node follows
every instance's channel, and also checks the one order: every client of an
instance must see the instance's messages in the same order. It counts
deliveries, duplicates, missing messages, messages from other instances and
clients whose order differs from their instance's first client's.

    contrib/cloud-isolation.py [--aviaryd PATH] [--aviaryctl PATH]
                               [--instances 50] [--clients 20] [--messages 5]
                               [--nodes 1] [--redis-server redis-server]
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
START_TIMEOUT = 15.0  # seconds for redis-server and each node to come up


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def resp_command(port, *args, timeout=5.0):
    """One Redis command over a fresh connection; returns the reply, parsed (RESP2)."""
    req = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        req += b"$%d\r\n%s\r\n" % (len(a), a)
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(req)
        f = s.makefile("rb")

        def read():
            line = f.readline()
            if not line.endswith(b"\r\n"):
                raise OSError("Redis closed the connection")
            kind, rest = line[:1], line[1:-2]
            if kind in (b"+", b":"):
                return int(rest) if kind == b":" else rest.decode()
            if kind == b"-":
                raise OSError("Redis: %s" % rest.decode())
            if kind == b"$":
                n = int(rest)
                return None if n < 0 else f.read(n + 2)[:-2]
            if kind == b"*":
                return [read() for _ in range(max(int(rest), 0))]
            raise OSError("Redis sent %r" % line)
        return read()


def start_redis(path, work):
    """A redis-server on a free loopback port, keeping nothing on disk; (Popen, port)."""
    port = free_port()
    log = open(os.path.join(work, "redis.log"), "ab")
    proc = subprocess.Popen([path, "--port", str(port), "--bind", HOST, "--save", "",
                             "--appendonly", "no", "--dir", work, "--daemonize", "no"],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("redis-server exited with %s (see %s/redis.log)"
                             % (proc.returncode, work))
        try:
            if resp_command(port, "PING") == "PONG":
                return proc, port
        except OSError:
            pass
        time.sleep(0.05)
    stop(proc)
    raise SystemExit("redis-server did not answer PING within %.0f s" % START_TIMEOUT)


def stop(proc):
    """End a process this script started, by its PID: TERM, then KILL after 10 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_followed(redis_port, want):
    """Until each channel has as many subscribers as `want` says (a node has one link).

    A cloud-mode node takes an instance up at its first login and starts following
    its channel then; the CONNACK does not wait for that, so a client could miss what
    other nodes publish meanwhile. The test publishes only once all nodes follow."""
    channels = sorted(want)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        reply = resp_command(redis_port, "PUBSUB", "SHARDNUMSUB", *channels)
        got = dict(zip(reply[0::2], reply[1::2]))
        if all(got.get(ch.encode(), 0) >= n for ch, n in want.items()):
            return
        time.sleep(0.1)
    raise SystemExit("the nodes did not all follow the %d instances' channels within %.0f s"
                     % (len(channels), START_TIMEOUT))


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
        self.seen = []  # the payloads of this instance's messages, in the order they came

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
                if owner == self.instance:
                    self.seen.append(payload)


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
    ap.add_argument("--nodes", type=int, default=1,
                    help="aviaryd nodes; more than 1: a cluster through a redis-server of its own")
    ap.add_argument("--redis-server", default="redis-server")
    args = ap.parse_args()
    if not 1 <= args.nodes <= 16:
        ap.error("--nodes: 1 to 16")

    need = args.instances * args.clients * 2 + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))

    work = tempfile.mkdtemp(prefix="aviary-isolation-")
    db = os.path.join(work, "aviary.db")
    brokers, redis = [], None
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

        cluster = []
        if args.nodes > 1:
            redis, redis_port = start_redis(args.redis_server, work)
            cluster = ["--cluster", "redis://%s:%d" % (HOST, redis_port)]
            subprocess.run([args.aviaryctl] + cluster + ["init", "--from", db], check=True,
                           stdout=subprocess.DEVNULL)
        ports = []
        for k in range(args.nodes):
            node_db = db if args.nodes == 1 else os.path.join(work, "node-%d.db" % k)
            broker = subprocess.Popen([args.aviaryd, "--mode", "cloud", "--db", node_db, "--listen",
                                       "tcp://%s:0" % HOST, "--log-level", "warning"] + cluster,
                                      stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
            brokers.append(broker)
            line = broker.stdout.readline().decode()
            if not line.startswith("listening on tcp://"):
                raise SystemExit("aviaryd did not start: %r" % line)
            ports.append(int(line.strip().rsplit(":", 1)[1]))

        deadline = time.monotonic() + DEADLINE
        sel = selectors.DefaultSelector()
        clients = []
        for name, secret in secrets.items():
            for k in range(args.clients):
                c = Client(name, k, secret, ports[len(clients) % len(ports)])
                sel.register(c.sock, selectors.EVENT_READ, c)
                clients.append(c)
        pump(clients, lambda: all(c.connacked and c.subacked for c in clients), sel, deadline)
        if args.nodes > 1:
            wait_followed(redis_port, {"aviary:{%s}" % name: len({c.sock.getpeername()[1]
                                       for c in clients if c.instance == name})
                                       for name in secrets})

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
        # Every message an instance's clients published, once in each of its clients' streams.
        sent = {name: {b"%s|client-%d|%d" % (name.encode(), k, m) for k in range(args.clients)
                       for m in range(args.messages)} for name in secrets}
        duplicates = sum(len(c.seen) - len(set(c.seen)) for c in clients)
        missing = sum(len(sent[c.instance] - set(c.seen)) for c in clients)
        first = {}
        mismatches, shown = 0, 0
        for c in clients:
            ref = first.setdefault(c.instance, c)
            if c.seen != ref.seen:
                mismatches += 1
                if shown < 5:
                    shown += 1
                    at = next((i for i, (a, b) in enumerate(zip(c.seen, ref.seen)) if a != b),
                              min(len(c.seen), len(ref.seen)))
                    print("order: %s/%s differs from %s/%s at message %d"
                          % (c.instance, c.name.decode(), ref.instance, ref.name.decode(), at))
        print("nodes %d, instances %d x clients %d, %d messages each: %d deliveries expected, "
              "%d delivered inside their instance, %d crossed instances"
              % (args.nodes, args.instances, args.clients, args.messages, len(clients) * want,
                 own, leaks))
        print("delivered %d, duplicates %d, missing %d, cross-instance %d, order mismatches %d "
              "(clients whose order differs from their instance's first client's)"
              % (own, duplicates, missing, leaks, mismatches))
        ok = exact and leaks == 0 and duplicates == 0 and missing == 0 and mismatches == 0
        print("isolation %s, one order per instance %s"
              % ("held" if exact and leaks == 0 else "FAILED",
                 "held" if mismatches == 0 else "FAILED"))
        return 0 if ok else 1
    finally:
        for broker in brokers:
            stop(broker)
        stop(redis)
        shutil.rmtree(work, True)


if __name__ == "__main__":
    sys.exit(main())
