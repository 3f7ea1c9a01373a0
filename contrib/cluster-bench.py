#!/usr/bin/python3
"""Measure what a cluster through Redis costs: fan-out, latency, and Redis alone.

Starts its own redis-server and desktop-mode aviaryd nodes on free loopback
ports for every run, and stops them by PID when the run ends.

  fanout   one publisher and SUBSCRIBERS subscribers in the one instance, QoS 0,
           MESSAGES messages of PAYLOAD bytes at a fixed RATE:
             1node     one aviaryd, no --cluster
             1cluster  one aviaryd with --cluster (every message goes through Redis)
             3cluster  three aviaryd with --cluster, the subscribers round-robin over
                       them, the publisher on node 1
           The rate counts deliveries from the first publish to the last delivery;
           CPU is utime+stime from /proc/PID/stat before and after, per delivery.
  latency  one publisher at LAT_RATE messages/s for LAT_SECONDS, the send time
           (CLOCK_MONOTONIC, ns) in the payload, taken again when a subscriber
           reads the message:
             1node     publisher and subscriber on one aviaryd, no --cluster
             1cluster  the same with --cluster (through Redis)
             3cluster  three nodes with --cluster, the publisher on node 1, one
                       subscriber on node 1 (same node) and one on node 2 (cross-node)
  redis    one redis-server alone: redis-benchmark SPUBLISH of records of each
           --record-sizes size to one channel with 3 subscribers draining it;
           messages/s and redis-server CPU per message.

Each configuration runs --repeats times in A B C A B C order. The generator
(this script: a forked publisher and the subscribers in the parent) reports its
own CPU; near 100 % of a core it, not the broker, is the limit, and the output
says so.

    contrib/cluster-bench.py [--aviaryd ./aviaryd] [--redis-server redis-server]
        [--redis-benchmark redis-benchmark] [--only fanout,latency,redis]
        [--subscribers 60] [--rate 2000] [--messages 20000] [--payload 64]
        [--lat-rate 2000] [--lat-seconds 10] [--repeats 2] [--timeout 900]
"""

import argparse
import json
import os
import resource
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"
START_TIMEOUT = 15.0
TICK = os.sysconf("SC_CLK_TCK")
FAN_TOPIC = b"bench/fan"
LAT_TOPIC = b"bench/lat"
PUB_ID = b"bench-pub"


# ---- MQTT 3.1.1, the little this needs ----

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


def publish_packet(topic, payload):
    return packet(0x30, mqtt_string(topic) + payload)


def mqtt_connect(port, client_id, topic=None, deadline=None):
    """A connected (and subscribed, with `topic`) blocking socket, CONNACK/SUBACK read."""
    s = socket.create_connection((HOST, port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out = packet(0x10, mqtt_string(b"MQTT") + bytes([4, 0x02]) + struct.pack("!H", 60) +
                 mqtt_string(client_id))
    want = 4
    if topic:
        out += packet(0x82, struct.pack("!H", 1) + mqtt_string(topic) + b"\x00")
        want += 5
    s.sendall(out)
    got = b""
    for _ in range(100):
        if len(got) >= want:
            break
        data = s.recv(want - len(got))
        if not data:
            raise SystemExit("%s: closed before CONNACK/SUBACK" % client_id.decode())
        got += data
    if got[:2] != b"\x20\x02" or got[3] != 0:
        raise SystemExit("%s: CONNACK %r" % (client_id.decode(), got[:4]))
    if topic and (got[4] != 0x90 or got[8] != 0):
        raise SystemExit("%s: SUBACK %r" % (client_id.decode(), got[4:]))
    return s


# ---- processes ----

def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def resp_command(port, *args, timeout=5.0):
    """One Redis command over a fresh connection; the reply, parsed (RESP2)."""
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
            if kind == b"+":
                return rest.decode()
            if kind == b":":
                return int(rest)
            if kind == b"-":
                raise OSError("Redis: %s" % rest.decode())
            if kind == b"$":
                n = int(rest)
                return None if n < 0 else f.read(n + 2)[:-2]
            if kind == b"*":
                return [read() for _ in range(max(int(rest), 0))]
            raise OSError("Redis sent %r" % line)
        return read()


def cpu_seconds(pid):
    """utime + stime of a process, in seconds, from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


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


class Setup:
    """redis-server (if clustered) and `nodes` aviaryd, started and stopped together."""

    def __init__(self, args, nodes, cluster):
        self.args, self.nodes, self.cluster = args, nodes, cluster
        self.work = tempfile.mkdtemp(prefix="aviary-cbench-")
        self.redis = None
        self.redis_port = None
        self.brokers = []
        self.ports = []

    def start(self):
        extra = []
        if self.cluster:
            self.redis_port = free_port()
            log = open(os.path.join(self.work, "redis.log"), "ab")
            self.redis = subprocess.Popen(
                [self.args.redis_server, "--port", str(self.redis_port), "--bind", HOST,
                 "--save", "", "--appendonly", "no", "--dir", self.work, "--daemonize", "no"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            log.close()
            wait_redis(self.redis, self.redis_port, self.work)
            extra = ["--cluster", "redis://%s:%d" % (HOST, self.redis_port)]
        for k in range(self.nodes):
            log = open(os.path.join(self.work, "node%d.log" % (k + 1)), "ab")
            p = subprocess.Popen([self.args.aviaryd, "--listen", "tcp://%s:0" % HOST,
                                  "--log-level", "warning"] + extra,
                                 stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
            log.close()
            self.brokers.append(p)
            line = p.stdout.readline().decode()
            if not line.startswith("listening on tcp://"):
                raise SystemExit("aviaryd did not start: %r" % line)
            self.ports.append(int(line.strip().rsplit(":", 1)[1]))
        if self.cluster:
            # Desktop mode's instance is followed from the start: wait until every node is in.
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                n = resp_command(self.redis_port, "PUBSUB", "SHARDNUMSUB", "aviary:{local}")[1]
                if n >= self.nodes:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit("only %d of %d nodes follow aviary:{local}" % (n, self.nodes))
                time.sleep(0.05)
        return self

    def pids(self):
        return [p.pid for p in self.brokers], self.redis.pid if self.redis else None

    def cpu(self):
        """(brokers' CPU seconds together, redis-server's or 0)."""
        return (sum(cpu_seconds(p.pid) for p in self.brokers),
                cpu_seconds(self.redis.pid) if self.redis else 0.0)

    def troubles(self):
        """What the logs say went wrong: nodes' losses of Redis, Redis's closed clients."""
        def count(name, text):
            try:
                with open(os.path.join(self.work, name), "rb") as f:
                    return f.read().count(text)
            except OSError:
                return 0
        lost = sum(count("node%d.log" % (k + 1), b"lost Redis") for k in range(self.nodes))
        closed = count("redis.log", b"output buffer limits")
        out = []
        if lost:
            out.append("nodes lost Redis %d times" % lost)
        if closed:
            out.append("redis-server closed %d clients over their output buffer limit" % closed)
        return "; ".join(out)

    def close(self):
        for p in self.brokers:
            stop(p)
        stop(self.redis)
        shutil.rmtree(self.work, True)


def wait_redis(proc, port, work):
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("redis-server exited with %s (see %s/redis.log)"
                             % (proc.returncode, work))
        try:
            if resp_command(port, "PING") == "PONG":
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit("redis-server did not answer PING within %.0f s" % START_TIMEOUT)


def self_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def forked(fn):
    """Run fn() in a child; returns (pid, read end) — its result comes as JSON on the pipe."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(rfd)
            out = json.dumps(fn()).encode()
            os.write(wfd, out)
        except BaseException as e:  # noqa: the child must never return into the parent's code
            try:
                os.write(wfd, json.dumps({"error": repr(e)}).encode())
            except OSError:
                pass
            code = 1
        finally:
            os._exit(code)
    os.close(wfd)
    return pid, rfd


def reap(pid):
    """Kill (by its PID) and reap a publisher child whose result was not read."""
    try:
        if os.waitpid(pid, os.WNOHANG) == (0, 0):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def child_result(pid, rfd, timeout):
    """The child's JSON result; the child is killed (by its PID) if it is not done in time."""
    deadline = time.monotonic() + timeout
    data = b""
    sel = selectors.DefaultSelector()
    sel.register(rfd, selectors.EVENT_READ)
    try:
        while time.monotonic() < deadline:
            if sel.select(max(0.0, deadline - time.monotonic())):
                chunk = os.read(rfd, 65536)
                if not chunk:
                    break
                data += chunk
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        sel.close()
        os.close(rfd)
        os.waitpid(pid, 0)
    if not data:
        raise SystemExit("the publisher gave no result")
    res = json.loads(data)
    if "error" in res:
        raise SystemExit("publisher: %s" % res["error"])
    return res


# ---- fan-out ----

def paced_publisher(port, topic, payloads, rate, per_message_time=False):
    """Connect, then send the packets at `rate` per second (in 1 ms batches, or one by one
    with the send time put in each payload); returns its times and its CPU."""
    def run():
        s = mqtt_connect(port, PUB_ID)
        cpu0 = self_cpu()
        start = time.monotonic_ns()
        interval = 1e9 / rate
        n = len(payloads) if not per_message_time else payloads
        i = 0
        # Bounded: every iteration sends or sleeps until a message is due.
        for _ in range(4 * n + 1000000):
            if i >= n:
                break
            now = time.monotonic_ns()
            due = int((now - start) / interval) + 1
            if due <= i:
                time.sleep((start + i * interval - now) / 1e9)
                continue
            if per_message_time:
                payload = struct.pack("!QQ", i, time.monotonic_ns()) + b"x" * 48
                s.sendall(publish_packet(topic, payload))
                i += 1
            else:
                j = min(due, n)
                s.sendall(b"".join(payloads[i:j]))
                i = j
        end = time.monotonic_ns()
        cpu = self_cpu() - cpu0
        time.sleep(0.2)
        s.close()
        return {"start_ns": start, "end_ns": end, "sent": i, "cpu": cpu}
    return forked(run)


def fanout_run(args, name):
    nodes, cluster = {"1node": (1, False), "1cluster": (1, True), "3cluster": (3, True)}[name]
    setup = Setup(args, nodes, cluster)
    subs = []
    pid = None
    try:
        setup.start()
        for k in range(args.subscribers):
            subs.append(mqtt_connect(setup.ports[k % nodes], b"bench-sub-%d" % k, FAN_TOPIC))
        payload = b"p" * args.payload
        one = publish_packet(FAN_TOPIC, payload)
        packets = [one] * args.messages
        want = len(one) * args.messages
        sel = selectors.DefaultSelector()
        got = {}
        for s in subs:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
            got[s] = 0
        buf = bytearray(1 << 20)
        time.sleep(0.3)
        b0, r0 = setup.cpu()
        g0 = self_cpu()
        pid, rfd = paced_publisher(setup.ports[0], FAN_TOPIC, packets, args.rate)
        done = 0
        last_ns = None
        quiet_since = time.monotonic()
        limit = time.monotonic() + args.messages / args.rate + 60
        # Bounded by `limit`, and by a quiet 3 s once something was expected and nothing came.
        while done < len(subs) and time.monotonic() < limit:
            events = sel.select(0.1)
            if not events and time.monotonic() - quiet_since > 3.0 and \
                    time.monotonic() > limit - 60 + 1.0:
                break
            for key, _ in events:
                s = key.fileobj
                try:
                    n = s.recv_into(buf)
                except BlockingIOError:
                    continue
                if not n:
                    raise SystemExit("a subscriber's connection closed")
                got[s] += n
                last_ns = time.monotonic_ns()
                quiet_since = time.monotonic()
                if got[s] >= want and got[s] - n < want:
                    done += 1
        g1 = self_cpu()
        b1, r1 = setup.cpu()
        pub, pid = child_result(pid, rfd, 60), None
        time.sleep(0.2)
        troubles = setup.troubles()
        delivered = sum(v // len(one) for v in got.values())
        expected = args.messages * len(subs)
        secs = (last_ns - pub["start_ns"]) / 1e9 if last_ns else float("nan")
        pub_secs = (pub["end_ns"] - pub["start_ns"]) / 1e9
        return {
            "config": name, "load": os.getloadavg()[0], "delivered": delivered,
            "expected": expected, "fraction": delivered / expected, "secs": secs,
            "rate": delivered / secs if secs else 0.0,
            "pub_rate": pub["sent"] / pub_secs if pub_secs else 0.0,
            "broker_us": (b1 - b0) * 1e6 / max(delivered, 1),
            "redis_us": (r1 - r0) * 1e6 / max(delivered, 1),
            "redis_us_msg": (r1 - r0) * 1e6 / max(pub["sent"], 1),
            "broker_cpu": (b1 - b0) / secs, "redis_cpu": (r1 - r0) / secs,
            "sub_cpu": (g1 - g0) / secs, "pub_cpu": pub["cpu"] / pub_secs,
            "troubles": troubles,
        }
    finally:
        if pid is not None:
            reap(pid)
        for s in subs:
            s.close()
        setup.close()


# ---- latency ----

class Reader:
    """A subscriber that takes each PUBLISH's send time from its payload."""

    def __init__(self, sock, label):
        self.sock, self.label = sock, label
        self.buf = b""
        self.lat = []  # (sequence, latency ns)

    def feed(self, data, now):
        self.buf += data
        # Bounded by the buffer: every turn takes one whole packet off it or stops.
        for _ in range(len(self.buf)):
            if len(self.buf) < 2:
                return
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
            if first >> 4 == 3:
                tlen = struct.unpack("!H", body[:2])[0]
                seq, sent = struct.unpack("!QQ", body[2 + tlen:2 + tlen + 16])
                self.lat.append((seq, now - sent))


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def latency_run(args, name):
    nodes, cluster = {"1node": (1, False), "1cluster": (1, True), "3cluster": (3, True)}[name]
    setup = Setup(args, nodes, cluster)
    readers = []
    pid = None
    try:
        setup.start()
        readers.append(Reader(mqtt_connect(setup.ports[0], b"bench-lat-1", LAT_TOPIC),
                              "same node"))
        if nodes > 1:
            readers.append(Reader(mqtt_connect(setup.ports[1], b"bench-lat-2", LAT_TOPIC),
                                  "cross-node (pub node 1, sub node 2)"))
        sel = selectors.DefaultSelector()
        for r in readers:
            r.sock.setblocking(False)
            sel.register(r.sock, selectors.EVENT_READ, r)
        n = int(args.lat_rate * args.lat_seconds)
        time.sleep(0.3)
        b0, r0 = setup.cpu()
        g0 = self_cpu()
        pid, rfd = paced_publisher(setup.ports[0], LAT_TOPIC, n, args.lat_rate,
                                   per_message_time=True)
        limit = time.monotonic() + args.lat_seconds + 30
        quiet = time.monotonic()
        while time.monotonic() < limit:
            if all(len(r.lat) >= n for r in readers):
                break
            events = sel.select(0.1)
            now = time.monotonic_ns()
            if not events and time.monotonic() - quiet > 3.0 and \
                    time.monotonic() > limit - 30 + 1.0:
                break
            for key, _ in events:
                try:
                    data = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                if not data:
                    raise SystemExit("a subscriber's connection closed")
                quiet = time.monotonic()
                key.data.feed(data, now)
        g1 = self_cpu()
        b1, r1 = setup.cpu()
        pub, pid = child_result(pid, rfd, 60), None
        pub_secs = (pub["end_ns"] - pub["start_ns"]) / 1e9
        out = []
        for r in readers:
            skip = args.warmup
            lat = sorted(v for seq, v in r.lat if seq >= skip)
            out.append({
                "config": name, "path": r.label, "load": os.getloadavg()[0],
                "received": len(r.lat), "sent": pub["sent"],
                "p50": percentile(lat, 50) / 1e3, "p99": percentile(lat, 99) / 1e3,
                "p999": percentile(lat, 99.9) / 1e3, "max": (lat[-1] / 1e3) if lat else float("nan"),
                "pub_rate": pub["sent"] / pub_secs if pub_secs else 0.0,
                "broker_cpu": (b1 - b0) / pub_secs, "redis_cpu": (r1 - r0) / pub_secs,
                "gen_cpu": (g1 - g0) / pub_secs + pub["cpu"] / pub_secs,
            })
        return out
    finally:
        if pid is not None:
            reap(pid)
        for r in readers:
            r.sock.close()
        setup.close()


# ---- Redis alone ----

def redis_run(args, size):
    work = tempfile.mkdtemp(prefix="aviary-cbench-redis-")
    port = free_port()
    log = open(os.path.join(work, "redis.log"), "ab")
    redis = subprocess.Popen([args.redis_server, "--port", str(port), "--bind", HOST, "--save", "",
                              "--appendonly", "no", "--dir", work, "--daemonize", "no"],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    drains = []
    bench = None
    try:
        wait_redis(redis, port, work)
        channel = b"aviary:{bench}"
        for _ in range(3):
            s = socket.create_connection((HOST, port), timeout=10)
            s.sendall(b"*2\r\n$10\r\nSSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(channel), channel))
            drains.append(s)
        deadline = time.monotonic() + START_TIMEOUT
        while resp_command(port, "PUBSUB", "SHARDNUMSUB", channel)[1] < 3:
            if time.monotonic() > deadline:
                raise SystemExit("the drains did not subscribe")
            time.sleep(0.05)
        record = b"r" * size
        # What each subscriber reads per message (RESP2 push), after the subscribe reply.
        push = b"*3\r\n$8\r\nsmessage\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
            len(channel), channel, len(record), record)
        sel = selectors.DefaultSelector()
        for s in drains:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        got = {s: 0 for s in drains}
        buf = bytearray(1 << 20)
        r0 = cpu_seconds(redis.pid)
        g0 = self_cpu()
        t0 = time.monotonic()
        bench = subprocess.Popen([args.redis_benchmark, "-h", HOST, "-p", str(port), "-c", "4",
                                  "-P", "32", "-n", str(args.redis_messages), "-q",
                                  "SPUBLISH", channel.decode(), record.decode()],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
        # Drain while redis-benchmark runs (bounded by the overall alarm and this limit).
        limit = time.monotonic() + 300
        while time.monotonic() < limit:
            for key, _ in sel.select(0.1):
                try:
                    got[key.fileobj] += key.fileobj.recv_into(buf)
                except BlockingIOError:
                    pass
            if bench.poll() is not None:
                break
        t1 = time.monotonic()
        r1 = cpu_seconds(redis.pid)
        g1 = self_cpu()
        text = bench.communicate(timeout=30)[0].decode(errors="replace")
        # The drains' bytes still in flight come within a second.
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            for key, _ in sel.select(0.05):
                try:
                    got[key.fileobj] += key.fileobj.recv_into(buf)
                except BlockingIOError:
                    pass
        secs = t1 - t0
        per = min(got.values()) // len(push)
        cmd = b"*3\r\n$8\r\nSPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
            len(channel), channel, len(record), record)
        bench_line = [line.rsplit(": ", 1)[-1] for line in
                      text.strip().replace("\r", "\n").splitlines() if line.strip()]
        return {"size": size, "messages": args.redis_messages, "secs": secs,
                "rate": args.redis_messages / secs, "delivered_each": per,
                "redis_us": (r1 - r0) * 1e6 / args.redis_messages,
                "redis_cpu": (r1 - r0) / secs, "drain_cpu": (g1 - g0) / secs,
                "in_bytes": len(cmd) + 4, "out_bytes": len(push),
                "benchmark": bench_line[-1] if bench_line else "", "load": os.getloadavg()[0]}
    finally:
        stop(bench)
        for s in drains:
            s.close()
        stop(redis)
        shutil.rmtree(work, True)


# ---- the report ----

def gen_note(cpu):
    return "  <- generator near 100 %% of a core: it may be the limit" if cpu > 0.85 else ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--aviaryd", default="./aviaryd")
    ap.add_argument("--redis-server", default="redis-server")
    ap.add_argument("--redis-benchmark", default="redis-benchmark")
    ap.add_argument("--only", default="fanout,latency,redis")
    ap.add_argument("--configs", default="1node,1cluster,3cluster")
    ap.add_argument("--subscribers", type=int, default=60)
    ap.add_argument("--rate", type=float, default=2000, help="fan-out publish rate, messages/s")
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--payload", type=int, default=64)
    ap.add_argument("--lat-rate", type=float, default=2000)
    ap.add_argument("--lat-seconds", type=float, default=10)
    ap.add_argument("--warmup", type=int, default=200,
                    help="latency: the first messages left out of the percentiles")
    ap.add_argument("--record-sizes", default="64,1024")
    ap.add_argument("--redis-messages", type=int, default=1000000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=900, help="for everything, seconds")
    args = ap.parse_args()
    if not 1 <= args.repeats <= 20 or args.subscribers < 1 or args.rate <= 0:
        ap.error("--repeats 1..20, --subscribers >= 1, --rate > 0")
    if args.payload < 1:
        ap.error("--payload >= 1")
    need = args.subscribers + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))

    def too_long(signum, frame):
        raise SystemExit("cluster-bench: over --timeout %.0f s" % args.timeout)
    signal.signal(signal.SIGALRM, too_long)
    signal.alarm(int(args.timeout))

    only = args.only.split(",")
    configs = args.configs.split(",")
    print("cluster-bench: %d cores, load %.2f %.2f %.2f" % ((os.cpu_count(),) + os.getloadavg()))
    print("How: rates count deliveries from the first publish to the last delivery; CPU is "
          "utime+stime from /proc/PID/stat before and after the run, per delivered message; "
          "latency is CLOCK_MONOTONIC at the subscriber's read minus the send time in the "
          "payload, the first %d messages left out; every run starts fresh processes." % args.warmup)
    sys.stdout.flush()

    if "fanout" in only:
        print("\nFan-out: 1 publisher, %d subscribers, QoS 0, %d messages of %d bytes at %.0f/s"
              % (args.subscribers, args.messages, args.payload, args.rate))
        print("%-9s %5s %10s %9s %11s %10s %10s %9s %9s %7s %7s %7s" % (
            "config", "load", "deliv/s", "fraction", "pub msg/s", "broker us", "redis us",
            "redis us", "brokers", "redis", "sub", "pub"))
        print("%-9s %5s %10s %9s %11s %10s %10s %9s %9s %7s %7s %7s" % (
            "", "", "", "", "", "/deliv", "/deliv", "/msg", "CPU", "CPU", "CPU", "CPU"))
        for rep in range(args.repeats):
            for name in configs:
                r = fanout_run(args, name)
                print("%-9s %5.2f %10.0f %9.4f %11.0f %10.2f %10.2f %9.1f %8.0f%% %6.0f%% %6.0f%% "
                      "%6.0f%%%s" % (
                          r["config"], r["load"], r["rate"], r["fraction"], r["pub_rate"],
                          r["broker_us"], r["redis_us"], r["redis_us_msg"],
                          100 * r["broker_cpu"], 100 * r["redis_cpu"], 100 * r["sub_cpu"],
                          100 * r["pub_cpu"], gen_note(max(r["sub_cpu"], r["pub_cpu"]))))
                if r["troubles"]:
                    print("          ^ %s" % r["troubles"])
                sys.stdout.flush()

    if "latency" in only:
        print("\nLatency: %.0f messages/s for %.0f s, %d-byte payloads with the send time, "
              "microseconds" % (args.lat_rate, args.lat_seconds, 64))
        print("%-9s %-36s %5s %9s %8s %8s %8s %8s %7s %7s %7s" % (
            "config", "path", "load", "recv/sent", "p50", "p99", "p99.9", "max", "brokers",
            "redis", "gen"))
        base = {}
        rows = []
        for rep in range(args.repeats):
            for name in configs:
                for r in latency_run(args, name):
                    rows.append(r)
                    print("%-9s %-36s %5.2f %4d/%-4d %8.0f %8.0f %8.0f %8.0f %6.0f%% %6.0f%% "
                          "%6.0f%%%s" % (
                              r["config"], r["path"], r["load"], r["received"], r["sent"],
                              r["p50"], r["p99"], r["p999"], r["max"], 100 * r["broker_cpu"],
                              100 * r["redis_cpu"], 100 * r["gen_cpu"], gen_note(r["gen_cpu"])))
                    sys.stdout.flush()
        for r in rows:
            if r["config"] == "1node":
                b = base.setdefault("n", [0, 0.0, 0.0])
                b[0] += 1
                b[1] += r["p50"]
                b[2] += r["p99"]
        if "n" in base:
            n, p50, p99 = base["n"]
            p50, p99 = p50 / n, p99 / n
            print("\nAgainst the 1node baseline (mean of its runs: p50 %.0f us, p99 %.0f us):"
                  % (p50, p99))
            for r in rows:
                if r["config"] != "1node":
                    print("  %-9s %-36s p50 %+6.0f us (x%.2f)  p99 %+6.0f us (x%.2f)" % (
                        r["config"], r["path"], r["p50"] - p50, r["p50"] / p50,
                        r["p99"] - p99, r["p99"] / p99))

    if "redis" in only:
        print("\nRedis alone: redis-benchmark SPUBLISH to one channel, 3 subscribers draining "
              "(-c 4 -P 32, %d messages)" % args.redis_messages)
        print("%6s %5s %10s %10s %9s %8s %8s %9s %10s" % (
            "record", "load", "msg/s", "redis us", "redis", "drains", "in B", "out B",
            "delivered"))
        print("%6s %5s %10s %10s %9s %8s %8s %9s %10s" % (
            "bytes", "", "", "/msg", "CPU", "CPU", "/msg", "/msg/sub", "per sub"))
        for rep in range(args.repeats):
            for size in [int(x) for x in args.record_sizes.split(",")]:
                r = redis_run(args, size)
                print("%6d %5.2f %10.0f %10.2f %8.0f%% %7.0f%% %8d %9d %10d   [%s]" % (
                    r["size"], r["load"], r["rate"], r["redis_us"], 100 * r["redis_cpu"],
                    100 * r["drain_cpu"], r["in_bytes"], r["out_bytes"], r["delivered_each"],
                    r["benchmark"]))
                sys.stdout.flush()
    signal.alarm(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
