#!/usr/bin/python3
"""The noisy-neighbour benchmark: can one tenant hurt another? (issue 11)

Tenant A abuses the broker in every way issue 11 lists, all at once, while
tenant B runs a steady, measured load (contrib/tenant-load.c: 100 QoS 1
subscribers, one publisher at 1,000 messages/s, 64-byte payloads, 10 s). The
same load of B is first run alone (the quiet run), then next to A (the noisy
run); each run gets a fresh aviaryd. It prints B's figures for both, the
broker's resident memory, and how they compare with the issue's bar.

    python3 contrib/noisy-neighbour.py --build /tmp/b
    python3 contrib/noisy-neighbour.py --aviaryd ./aviaryd --aviaryctl ./aviaryctl \\
        --rounds 3 --max-memory 256m

It starts its own aviaryd (cloud mode, a temporary database, a free port on
127.0.0.1, --max-memory, --allow-keys-without-tls yes), creates instances A
and B with aviaryctl on one plan with cloud-style limits (PLAN_LIMITS below,
including issue 11's max-sessions and max-instance-bytes; B's own message
rates are raised to fit its load), and compiles tenant-load.c with cc into a
temporary directory unless --tenant-load names a binary. The broker gets the
last CPU to itself and every other process the others (--no-pin: no pinning),
so that B measures how the broker shares its core between tenants rather
than how the machine shares its cores. Everything it starts
is stopped by PID at the end, on errors and on SIGINT/SIGTERM too, and its
temporary directory is removed (--keep keeps it, with the broker logs).

Tenant A (noisy run only; each attack one process at nice +19, so that A's
seven generators share a CPU with B's load generator without starving it:
what B measures is then the broker, not its own generator waiting for a CPU;
each bounded in count, and stopped when B's run ends):
  sessions   thousands of persistent sessions: CONNECT clean 0 with a new
             client id, SUBSCRIBE '#' at QoS 1, DISCONNECT;
  filler     64 KB QoS 1 messages from several connections, to fill the
             queues of those sessions;
  takeover   many retained messages of 4 KB, then one client id taken over
             again and again: each new connection subscribes to '#' and never
             reads, the old ones are held open unread;
  share      persistent sessions subscribing to $share/<60,000-character
             group>/x (refused by the new broker; the old one grants them);
  wills      CONNECT with a 64 KB retained QoS 2 will, then drop the socket;
  retained   a retained flood over many topics, 4 to 64 KB payloads;
  flood      QoS 0 publishing at full speed from several connections.
A's clients take refusals (CONNACK non-zero, SUBACK 0x80, a closed
connection) in their stride and go on with the next attempt; what A was
refused is counted and printed. A starts --attack-lead seconds (3) before B
connects, so B's clients must get in next to an A that has already done its
worst; --attack-lead 0 starts both together (B is in before A's memory
grows). Meanwhile B also opens one new connection every 200 ms (a probe):
refusals of those are printed beside the bar.

The figures:
  B p50/p99/max    latency of B's deliveries (publisher's send time to the
                   subscriber's read, same clock), quiet and noisy;
  B delivered      fraction of (acknowledged message x subscriber) deliveries
                   made; lost_qos1 counts acknowledged messages a subscriber
                   never got (the broker promised them); "B could not run"
                   means B's clients were refused at the start (0 delivered);
  late sends       B's messages sent over 10 ms after their time slot (B's
                   window of 100 unacknowledged messages was full);
  max RSS          the broker's VmRSS, sampled every 100 ms from
                   /proc/PID/status, the largest seen in the run, also as a
                   ratio to --max-memory;
  broker CPU       the broker's CPU time over the run's wall time (100% = one
                   core; aviaryd has one core thread): near 100% the broker
                   is saturated and any work A causes shows in B's latency;
  verdict          the issue's bar: B's noisy p99 within 2x of its quiet p99,
                   no QoS 1 message of B lost, RSS under 1.5 x max-memory.
With --rounds N each run is repeated N times and medians are reported
(losses and RSS: the worst round). The verdict is printed, not turned into
the exit status: the exit status is 0 when the benchmark ran, 1 when it could
not (no broker, aviaryctl failed, B's quiet run could not connect), 2 on a
usage error. If B cannot even connect during the noisy run, that is a
result (B was refused service), not a failure to run.

The machine needs two cores at least. B's p99 varies from run to run on a
small or shared machine (B alone keeps the broker busy most of a core): use
--rounds 3 for a verdict, and compare builds on the same machine, one after
the other. Keep max-instance-bytes well below --max-memory: max-memory is
process-wide, and past it every tenant's new connections are refused.
"""

import argparse
import json
import os
import random
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

HOST = "127.0.0.1"

# The plan both tenants are on: cloud-style limits. The last two are issue
# 11's; a build that does not know them is run without them (and says so).
PLAN_LIMITS = [
    ("max-connections", "200"),
    ("max-messages-per-second", "100"),
    ("max-instance-messages-per-second", "500"),
    ("max-retained", "1000"),
    ("max-sessions", "1000"),
    ("max-instance-bytes", "64m"),
]
NEW_LIMITS = ("max-sessions", "max-instance-bytes")
MAX_MEMORY = "256m"
INSTANCE_A, INSTANCE_B = "tenant-a", "tenant-b"

# How much A does at most, per attack (each also stops when B's run ends).
BOUNDS = {
    "sessions": 5000,          # persistent sessions created
    "sessions_batch": 25,      # connections opened at once
    "filler": 100000,          # 64 KB messages published
    "filler_connections": 4,
    "takeovers": 2000,         # take-over connections
    "takeover_retained": 1000, # 4 KB retained messages seeded first
    "takeover_hold": 64,       # unread connections held open at once
    "share_sessions": 200,     # persistent sessions with long $share filters
    "share_filters": 20,       # per session
    "share_group_length": 60000,
    "wills": 10000,            # connections dropped with a will
    "retained": 20000,         # retained messages published
    "retained_topics": 5000,
    "flood": 2000000,          # QoS 0 messages
    "flood_connections": 4,
}
# What A's counts call a refusal, beside refused_*: the broker closed the
# connection, or did not answer within 3 s.
CUT_OFF = ("publisher_closed", "closed_or_failed", "timeout")
ATTACKS = ("sessions", "filler", "takeover", "share", "wills", "retained", "flood")


# --------------------------------------------------------------------------
# MQTT 3.1.1 packets, by hand

def varint(n):
    out = bytearray()
    while True:
        n, d = divmod(n, 128)
        out.append(d | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_string(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def connect_packet(client_id, user, secret, clean=True, will=None, keepalive=60):
    flags = 0xC0 | (0x02 if clean else 0)
    payload = mqtt_string(client_id)
    if will:
        flags |= 0x04 | (will["qos"] << 3) | (0x20 if will.get("retain") else 0)
        payload += mqtt_string(will["topic"]) + mqtt_string(will["payload"])
    payload += mqtt_string(user) + mqtt_string(secret)
    return packet(0x10, mqtt_string("MQTT") + bytes([4, flags]) +
                  struct.pack("!H", keepalive) + payload)


def subscribe_packet(pid, topic_filter, qos=1):
    return packet(0x82, struct.pack("!H", pid) + mqtt_string(topic_filter) + bytes([qos]))


def publish_packet(topic, payload, qos=0, retain=False, pid=1):
    body = mqtt_string(topic) + (struct.pack("!H", pid) if qos else b"") + payload
    return packet(0x30 | (qos << 1) | (1 if retain else 0), body)


DISCONNECT = b"\xe0\x00"


def split_packets(buf):
    """Whole packets at the start of buf: ([(first byte, body)], bytes used)."""
    out, pos = [], 0
    while pos + 2 <= len(buf):
        length, mult, i = 0, 1, pos + 1
        while True:
            if i >= len(buf) or i > pos + 4:
                return out, pos
            length += (buf[i] & 0x7F) * mult
            mult *= 128
            i += 1
            if not buf[i - 1] & 0x80:
                break
        if i + length > len(buf):
            break
        out.append((buf[pos], bytes(buf[i:i + length])))
        pos = i + length
    return out, pos


# --------------------------------------------------------------------------
# Tenant A: the attacks. Each runs in its own process (--attack-worker KIND).

class Refused(Exception):
    """The broker said no: CONNACK non-zero or SUBACK 0x80."""


class Attack:
    """What one attack process knows and counts."""

    def __init__(self, kind, port, user, secret, seconds):
        self.kind, self.port, self.user, self.secret = kind, port, user, secret
        self.deadline = time.monotonic() + seconds
        self.stop = False
        self.counts = {}
        self.tag = "%s%d" % (kind[:3], os.getpid())
        self.rng = random.Random(os.getpid())

    def count(self, what, n=1):
        self.counts[what] = self.counts.get(what, 0) + n

    def running(self):
        return not self.stop and time.monotonic() < self.deadline

    def recv_exactly(self, sock, n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed by the broker")
            data += chunk
        return data

    def connect(self, client_id, clean=True, will=None, extra=b"", timeout=3.0):
        """A connection whose CONNACK said 0 (blocking, with a time-out);
        `extra` is sent along with the CONNECT."""
        sock = socket.create_connection((HOST, self.port), timeout=timeout)
        try:
            sock.sendall(connect_packet(client_id, self.user, self.secret, clean, will) + extra)
            connack = self.recv_exactly(sock, 4)
            if connack[0] != 0x20 or connack[3] != 0:
                self.count("refused_connack_%d" % connack[3])
                raise Refused("CONNACK %d" % connack[3])
            self.count("connected")
            return sock
        except BaseException:
            sock.close()
            raise

    def read_session_start(self, sock):
        """CONNACK and SUBACK of a connection that sent CONNECT and SUBSCRIBE
        at once, counting what was refused; then DISCONNECT."""
        connack = self.recv_exactly(sock, 4)
        if connack[0] != 0x20 or connack[3] != 0:
            self.count("refused_connack_%d" % connack[3])
            return
        self.count("connected")
        self.read_subacks(sock, 1)
        sock.sendall(DISCONNECT)

    def read_subacks(self, sock, n):
        """Reads n SUBACKs (skipping other packets); counts the refusals."""
        buf, seen = b"", 0
        while seen < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the broker")
            buf += chunk
            packets, used = split_packets(buf)
            buf = buf[used:]
            for first, body in packets:
                if first == 0x90:
                    seen += 1
                    self.count("subscribed" if body[2] != 0x80 else "refused_suback")

    def attempt(self, fn, *args):
        """One attempt of an attack loop: refusals and closed connections are
        counted, and the loop goes on with the next attempt."""
        try:
            fn(*args)
        except Refused:
            pass
        except (OSError, ConnectionError) as e:
            self.count("timeout" if isinstance(e, socket.timeout) else "closed_or_failed")
            time.sleep(0.01)


def attack_sessions(a):
    """Thousands of persistent sessions: clean 0, new ids, '#' at QoS 1, then
    DISCONNECT; a batch of connections at a time (CONNECT and SUBSCRIBE in
    one write each, then the answers), so that the sessions pile up fast."""
    def batch(first, last):
        socks = []
        for i in range(first, last):
            try:
                sock = socket.create_connection((HOST, a.port), timeout=3.0)
                sock.sendall(connect_packet("%s-%d" % (a.tag, i), a.user, a.secret, False) +
                             subscribe_packet(1, "#"))
                socks.append(sock)
            except OSError:
                a.count("closed_or_failed")
        for sock in socks:
            with sock:
                if a.running():
                    a.attempt(a.read_session_start, sock)
    size = BOUNDS["sessions_batch"]
    for first in range(0, BOUNDS["sessions"], size):
        if not a.running():
            break
        batch(first, min(first + size, BOUNDS["sessions"]))


def attack_takeover(a):
    """4 KB retained messages, then take-overs of one client id, each new
    connection subscribing to '#' and never reading."""
    blob = bytes(4096)
    publish_loop(a, 5, BOUNDS["takeover_retained"], lambda i: publish_packet(
        "keep/%d" % i, blob, qos=1, retain=True, pid=1), qos=1, max_seconds=3.0)
    held = []

    def one():
        sock = a.connect("%s-victim" % a.tag, extra=subscribe_packet(1, "#"))
        # The SUBACK's code only (or the first bytes of a retained message):
        # from then on this connection is never read.
        head = a.recv_exactly(sock, 5)
        if head[0] == 0x90 and head[4] == 0x80:
            a.count("refused_suback")
        held.append(sock)
        if len(held) > BOUNDS["takeover_hold"]:
            held.pop(0).close()
    for _ in range(BOUNDS["takeovers"]):
        if not a.running():
            break
        a.attempt(one)
    for sock in held:
        sock.close()


def attack_share(a):
    """Persistent sessions holding $share/<very long group>/x filters."""
    def one(i):
        sock = a.connect("%s-%d" % (a.tag, i), clean=False)
        with sock:
            subs = b""
            for j in range(BOUNDS["share_filters"]):
                group = ("g%d-%d-" % (i, j)).ljust(BOUNDS["share_group_length"], "x")
                subs += subscribe_packet(j + 1, "$share/%s/x" % group)
            sock.sendall(subs)
            a.read_subacks(sock, BOUNDS["share_filters"])
            sock.sendall(DISCONNECT)
    for i in range(BOUNDS["share_sessions"]):
        if not a.running():
            break
        a.attempt(one, i)


def attack_wills(a):
    """CONNECT with a 64 KB retained QoS 2 will, then drop the socket."""
    payload = bytes(65536 - 64)

    def one(i):
        will = {"topic": "will/%d" % (i % 5000), "payload": payload, "qos": 2, "retain": True}
        sock = a.connect("%s-%d" % (a.tag, i), will=will)
        sock.close()  # no DISCONNECT: the will is due
    for i in range(BOUNDS["wills"]):
        if not a.running():
            break
        a.attempt(one, i)


def attack_filler(a):
    """64 KB QoS 1 messages to fill the queues of A's offline sessions."""
    blob = bytes(65536 - 64)
    publish_loop(a, BOUNDS["filler_connections"], BOUNDS["filler"],
                 lambda i: publish_packet("fill/%d" % (i % 16), blob, qos=1, pid=1), qos=1)


def attack_retained(a):
    """A retained flood: many topics, 4 to 64 KB."""
    topics, rng = BOUNDS["retained_topics"], a.rng
    publish_loop(a, 2, BOUNDS["retained"], lambda i: publish_packet(
        "ret/%d" % rng.randrange(topics), bytes(rng.randrange(4096, 65536 - 64)),
        qos=1, retain=True, pid=1), qos=1)


def attack_flood(a):
    """QoS 0 PUBLISH as fast as the broker takes them."""
    blob = bytes(1024)
    publish_loop(a, BOUNDS["flood_connections"], BOUNDS["flood"],
                 lambda i: publish_packet("flood/%d" % (i % 64), blob), qos=0)


class Publisher:
    """One non-blocking publishing connection of A, re-opened when closed."""

    def __init__(self, a, client_id):
        self.a, self.client_id = a, client_id
        self.sock, self.out, self.inb = None, bytearray(), bytearray()
        self.inflight, self.pid, self.retry_at = 0, 0, 0.0

    def open(self):
        try:
            self.sock = self.a.connect(self.client_id)
            self.sock.setblocking(False)
            self.out, self.inb, self.inflight = bytearray(), bytearray(), 0
        except Refused:
            self.retry_at = time.monotonic() + 0.05
        except OSError:
            self.a.count("closed_or_failed")
            self.retry_at = time.monotonic() + 0.05

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None
            self.retry_at = time.monotonic() + 0.05

    def next_pid(self):
        self.pid = self.pid % 65535 + 1
        return self.pid

    def on_readable(self):
        try:
            data = self.sock.recv(262144)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.a.count("publisher_closed")
            self.close()
            return
        self.inb += data
        packets, used = split_packets(self.inb)
        del self.inb[:used]
        acks = sum(1 for first, _ in packets if first >> 4 == 4)
        self.inflight -= acks
        self.a.count("acked", acks)

    def flush(self):
        try:
            n = self.sock.send(self.out)
            del self.out[:n]
        except BlockingIOError:
            pass
        except OSError:
            self.a.count("publisher_closed")
            self.close()


def publish_loop(a, connections, bound, make, qos, window=20, max_seconds=None):
    """Publishes make(i) for i < bound from `connections` connections, QoS 1
    with `window` unacknowledged each, QoS 0 as fast as the sockets take."""
    pubs = [Publisher(a, "%s-pub%d" % (a.tag, k)) for k in range(connections)]
    end = time.monotonic() + max_seconds if max_seconds else None
    i = 0
    while a.running() and i < bound and (end is None or time.monotonic() < end):
        for p in pubs:
            if p.sock is None and time.monotonic() >= p.retry_at:
                p.open()
            while p.sock and i < bound and (
                    p.inflight < window if qos else len(p.out) < 262144):
                pkt = bytearray(make(i))
                if qos:
                    pkt = renumber(pkt, p.next_pid())  # make() used packet id 1
                    p.inflight += 1
                p.out += pkt
                i += 1
                a.count("published" if qos else "written")
        live = [p for p in pubs if p.sock]
        if not live:
            time.sleep(0.05)
            continue
        readable, writable, _ = select.select(
            [p.sock for p in live], [p.sock for p in live if p.out], [], 0.05)
        for p in live:
            if p.sock in writable:
                p.flush()
            if p.sock and p.sock in readable:
                p.on_readable()
    for p in pubs:
        p.close()


def renumber(pkt, pid):
    """Sets the packet id of a QoS 1/2 PUBLISH built by publish_packet."""
    i = 1
    while pkt[i] & 0x80:
        i += 1
    i += 1                                   # past the remaining length
    tlen = struct.unpack_from("!H", pkt, i)[0]
    struct.pack_into("!H", pkt, i + 2 + tlen, pid)
    return pkt


ATTACK_FUNCTIONS = {"sessions": attack_sessions, "filler": attack_filler,
                    "takeover": attack_takeover, "share": attack_share,
                    "wills": attack_wills, "retained": attack_retained, "flood": attack_flood}


def attack_worker(args):
    """The body of one attack process: runs until its bound, its time-out or
    SIGTERM, then prints its counts as one JSON line."""
    try:
        os.nice(args.attack_nice)
    except OSError:
        pass
    a = Attack(args.attack_worker, args.port, INSTANCE_A, os.environ["NOISY_SECRET"],
               args.attack_seconds)

    def on_term(signum, frame):
        a.stop = True
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides
    report = {"kind": a.kind, "counts": a.counts}
    try:
        ATTACK_FUNCTIONS[a.kind](a)
    except Exception as e:
        report["error"] = repr(e)
        raise
    finally:
        print(json.dumps(report), flush=True)
    return 0


# --------------------------------------------------------------------------
# The driver: processes, broker, aviaryctl, runs, report

class CouldNotRun(Exception):
    pass


STARTED = []  # every Popen of this process, stopped by PID at the end


def start_process(argv, **kw):
    proc = subprocess.Popen(argv, **kw)
    STARTED.append(proc)
    return proc


def stop_process(proc, grace=5.0):
    """SIGTERM, then SIGKILL after `grace` seconds, by PID."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    if proc in STARTED:
        STARTED.remove(proc)


def stop_all():
    for proc in list(STARTED):
        stop_process(proc, grace=2.0)


def on_signal(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


def aviaryctl(args, db, *words):
    r = subprocess.run([args.aviaryctl, "--db", db] + list(words),
                       capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout, r.stderr.strip()


def must_ctl(args, db, *words):
    rc, out, err = aviaryctl(args, db, *words)
    if rc != 0:
        raise CouldNotRun("aviaryctl %s: exit %d: %s" % (" ".join(words), rc, err))
    return out


def set_up_tenants(args, db):
    """Plan, instances A and B, one key each. Returns (secrets, unknown limits)."""
    unknown = []
    for name, value in args.plan:
        rc, _, err = aviaryctl(args, db, "plan", "set", "noisy", name, value)
        if rc != 0:
            if name not in NEW_LIMITS:
                raise CouldNotRun("aviaryctl plan set noisy %s %s: %s" % (name, value, err))
            unknown.append(name)
    secrets = {}
    for inst in (INSTANCE_A, INSTANCE_B):
        must_ctl(args, db, "instance", "create", inst, "--plan", "noisy")
        token = json.loads(must_ctl(args, db, "--json", "token", "create", inst,
                                    "--label", "noisy-neighbour"))
        secrets[inst] = token["secret"]
    # B's own load must fit its limits: twice its publishing rate.
    for name in ("max-messages-per-second", "max-instance-messages-per-second"):
        must_ctl(args, db, "instance", "set", INSTANCE_B, name, str(2 * args.rate))
    return secrets, unknown


def start_broker(args, db, log_path):
    argv = [args.aviaryd, "--mode", "cloud", "--db", db, "--listen", "tcp://%s:0" % HOST,
            "--max-memory", args.max_memory, "--allow-keys-without-tls", "yes",
            "--log-level", "notice"]
    log = open(log_path, "wb")
    try:
        proc = start_process(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=log)
    finally:
        log.close()
    deadline = time.monotonic() + 10
    line = b""
    while time.monotonic() < deadline and not line.endswith(b"\n"):
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 1)
            if not chunk:
                break
            line += chunk
    text = line.decode(errors="replace").strip()
    if not text.startswith("listening on tcp://"):
        stop_process(proc)
        raise CouldNotRun("aviaryd did not start (%r); see %s" % (text, log_path))
    threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()
    if args.broker_cpu is not None:
        os.sched_setaffinity(proc.pid, {args.broker_cpu})
    return proc, int(text.rsplit(":", 1)[1])


def pin_cpus(args):
    """With --pin (the default on two cores or more) the broker gets the last CPU to
    itself and every other process of the run (this driver, B's load, A's attacks, which
    inherit it) the others, as the side-by-side benchmark does: what B measures is then
    the broker sharing its core between tenants, not the machine sharing its cores."""
    cpus = sorted(os.sched_getaffinity(0))
    if not args.pin or len(cpus) < 2:
        args.broker_cpu = None
        return
    args.broker_cpu = cpus[-1]
    os.sched_setaffinity(0, set(cpus[:-1]))


def parse_bytes(text):
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower()
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


class RssSampler(threading.Thread):
    """VmRSS of a process every 100 ms, and the CPU time it used; kills it
    past a safety cap."""

    def __init__(self, proc, cap):
        super().__init__(daemon=True)
        self.proc, self.cap = proc, cap
        self.max_rss = 0
        self.capped = False
        self.done = threading.Event()
        self.started = time.monotonic()
        self.cpu_seconds = 0.0

    def sample_cpu(self):
        """utime + stime of the process, in seconds (0 once it is gone)."""
        if self.proc.poll() is not None:
            return 0.0
        try:
            with open("/proc/%d/stat" % self.proc.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0

    def cpu_share(self):
        """CPU time used over the wall time sampled: 1.0 = one core busy."""
        return self.cpu_seconds / max(1e-9, time.monotonic() - self.started)

    def sample(self):
        if self.proc.poll() is not None:
            return 0  # gone (and reaped): its PID may be another process's now
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def run(self):
        while not self.done.wait(0.1):
            rss = self.sample()
            self.max_rss = max(self.max_rss, rss)
            self.cpu_seconds = max(self.cpu_seconds, self.sample_cpu())
            if self.cap and rss > self.cap:
                self.capped = True
                self.proc.kill()

    def stop(self):
        self.max_rss = max(self.max_rss, self.sample())
        self.done.set()
        self.join()


class ConnectProbe(threading.Thread):
    """B opens a new connection every 200 ms while its load runs (CONNECT,
    CONNACK, DISCONNECT): whatever A does, B's new clients must get in."""

    def __init__(self, port, secret):
        super().__init__(daemon=True)
        self.port, self.secret = port, secret
        self.tried, self.refused = 0, {}
        self.done = threading.Event()

    def probe(self):
        with socket.create_connection((HOST, self.port), timeout=3.0) as sock:
            sock.sendall(connect_packet("probe-b", INSTANCE_B, self.secret))
            connack = b""
            while len(connack) < 4:
                chunk = sock.recv(4 - len(connack))
                if not chunk:
                    return "closed"
                connack += chunk
            sock.sendall(DISCONNECT)
            return "connack %d" % connack[3] if connack[3] else None

    def run(self):
        while not self.done.wait(0.2):
            self.tried += 1
            try:
                why = self.probe()
            except OSError as e:
                why = "timeout" if isinstance(e, socket.timeout) else "connect failed"
            if why:
                self.refused[why] = self.refused.get(why, 0) + 1

    def stop(self):
        self.done.set()
        self.join()


def start_attack(args, port, secret, seconds, workdir):
    procs = []
    env = dict(os.environ, NOISY_SECRET=secret)
    for kind in args.attacks:
        err = open(os.path.join(workdir, "attack-%s.err" % kind), "ab")
        try:
            procs.append((kind, start_process(
                [sys.executable, os.path.abspath(__file__), "--attack-worker", kind,
                 "--port", str(port), "--attack-seconds", str(seconds),
                 "--attack-nice", str(args.attack_nice)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, env=env)))
        finally:
            err.close()
    return procs


def stop_attack(procs, workdir):
    """SIGTERM to every attack process; their counts, summed."""
    for _, proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
    totals, problems = {}, []
    for kind, proc in procs:
        try:
            out, _ = proc.communicate(timeout=8)
        except subprocess.TimeoutExpired:
            out = b""
        stop_process(proc, grace=1.0)
        try:
            report = json.loads(out.decode().strip().splitlines()[-1])
            counts = report["counts"]
            if "error" in report:
                problems.append("%s: stopped by %s" % (kind, report["error"]))
        except (ValueError, IndexError, KeyError):
            counts = {}
            with open(os.path.join(workdir, "attack-%s.err" % kind), "rb") as f:
                tail = f.read().decode(errors="replace").strip().splitlines()[-1:]
            problems.append("%s: no counts (%s)" % (kind, tail[0] if tail else "no output"))
        for what, n in counts.items():
            totals.setdefault(kind, {})[what] = n
    return totals, problems


def run_tenant_b(args, binary, port, secret):
    argv = [binary, "--host", HOST, "--port", str(port), "--user", INSTANCE_B,
            "--subscribers", str(args.subscribers), "--rate", str(args.rate),
            "--duration", str(args.duration), "--payload", str(args.payload),
            "--qos", str(args.qos), "--topic", "bench/b"]
    proc = start_process(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=dict(os.environ,
                                                          TENANT_LOAD_PASSWORD=secret))
    try:
        out, err = proc.communicate(timeout=args.duration + 60)
    except subprocess.TimeoutExpired:
        stop_process(proc)
        return {"error": "tenant-load did not finish in time"}
    if proc in STARTED:
        STARTED.remove(proc)
    if proc.returncode != 0:
        return {"error": "tenant-load exit %d: %s" % (proc.returncode,
                                                      err.decode(errors="replace").strip())}
    figures = {}
    for line in out.decode().splitlines():
        key, _, value = line.partition("=")
        try:
            figures[key] = int(value) if value.isdigit() else float(value)
        except ValueError:
            pass
    return figures


def one_run(args, binary, db, secrets, workdir, label, noisy):
    """A fresh broker, B's load (next to A's attack when noisy), the figures."""
    log_path = os.path.join(workdir, "aviaryd-%s.log" % label)
    broker, port = start_broker(args, db, log_path)
    sampler = RssSampler(broker, parse_bytes(args.rss_cap))
    sampler.start()
    attack, result = [], {}
    try:
        if noisy:
            attack = start_attack(args, port, secrets[INSTANCE_A],
                                  args.attack_lead + args.duration + 30, workdir)
            time.sleep(args.attack_lead)
        probe = ConnectProbe(port, secrets[INSTANCE_B])
        probe.start()
        try:
            started = time.monotonic()
            result["b"] = run_tenant_b(args, binary, port, secrets[INSTANCE_B])
            if noisy and "error" in result["b"]:
                # B was turned away: A goes on for B's time all the same,
                # for the memory figure and B's connection probes.
                time.sleep(max(0.0, started + args.duration - time.monotonic()))
        finally:
            probe.stop()
        result["probe"] = (probe.tried, probe.refused)
        if attack:
            result["attack"], result["attack_problems"] = stop_attack(attack, workdir)
    finally:
        for _, proc in attack:
            stop_process(proc, grace=1.0)
        sampler.stop()
        sampler.cpu_seconds = max(sampler.cpu_seconds, sampler.sample_cpu())
        result["broker_exit"] = broker.poll()
        stop_process(broker, grace=10.0)
    result["max_rss"] = sampler.max_rss
    result["broker_cpu"] = sampler.cpu_share()
    result["loadavg"] = os.getloadavg()[0]
    result["rss_capped"] = sampler.capped
    # Issue 11 logs one "instance X: quota exceeded: ..." line per instance and
    # reason at most every 10 s; a closed or refused client's own log line
    # may name the reason too.
    instance_lines = client_lines = 0
    with open(log_path, "rb") as f:
        for line in f:
            text = line.decode(errors="replace").lower()
            if "quota exceeded" in text:
                if "] instance " in text:
                    instance_lines += 1
                else:
                    client_lines += 1
    result["quota_lines"] = (instance_lines, client_lines)
    return result


def compile_tenant_load(workdir):
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tenant-load.c")
    binary = os.path.join(workdir, "tenant-load")
    cc = os.environ.get("CC", "cc")
    r = subprocess.run([cc, "-std=gnu11", "-O2", "-Wall", "-Wextra", "-o", binary, source],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise CouldNotRun("cannot compile %s:\n%s" % (source, r.stderr))
    return binary


# --------------------------------------------------------------------------
# Report

def fmt_b(b):
    if "error" in b:
        return "B could not run: %s" % b["error"]
    return ("B: sent %d acked %d, delivered %d/%d (%.4f), lost_qos1 %d, dup %d, "
            "p50 %.0f us, p99 %.0f us, max %.0f us, late sends %d, reconnects %d, refused %d"
            % (b["sent"], b["acked"], b["delivered"], b["deliveries_expected"],
               b["delivered_frac"], b["lost_qos1"], b["dup"], b["lat_p50_us"],
               b["lat_p99_us"], b["lat_max_us"], b["late"], b["reconnects"], b["refused"]))


def print_run(label, r, max_memory):
    print("[%s] %s" % (label, fmt_b(r["b"])))
    extra = ""
    if r["rss_capped"]:
        extra = " (KILLED at the --rss-cap safety cap)"
    elif r["broker_exit"] is not None:
        extra = " (the broker EXITED during the run, status %s)" % r["broker_exit"]
    print("[%s] broker CPU %.0f%% of one core over the run; machine load average %.2f"
          % (label, 100 * r["broker_cpu"], r["loadavg"]))
    tried, refused = r["probe"]
    print("[%s] B's new connections (one per 200 ms): %d tried, %d refused%s"
          % (label, tried, sum(refused.values()),
             " (%s)" % ", ".join("%s: %d" % kv for kv in sorted(refused.items()))
             if refused else ""))
    print("[%s] broker max RSS %.1f MB = %.2f x max-memory%s; 'quota exceeded' in the log: "
          "%d instance lines, %d client lines"
          % ((label, r["max_rss"] / 2**20, r["max_rss"] / max_memory, extra) + r["quota_lines"]))
    if "attack" in r:
        parts = []
        for kind in sorted(r["attack"]):
            c = r["attack"][kind]
            parts.append("%s {%s}" % (kind, ", ".join("%s %d" % kv for kv in sorted(c.items()))))
        print("[%s] A: %s" % (label, "; ".join(parts)))
        refused = sum(n for c in r["attack"].values() for k, n in c.items()
                      if k.startswith("refused") or k in CUT_OFF)
        print("[%s] A refused or cut off %d times in all" % (label, refused))
        for p in r["attack_problems"]:
            print("[%s] A attack problem: %s" % (label, p))
    sys.stdout.flush()


def median_of(runs, key):
    values = [r["b"][key] for r in runs if key in r["b"]]
    return statistics.median(values) if values else None


def summary(args, quiet, noisy, max_memory, unknown):
    print("\n== summary (%d round%s; medians) ==" % (args.rounds, "s" if args.rounds > 1 else ""))
    if unknown:
        print("note: this build does not know %s: run WITHOUT those limits"
              % " and ".join(unknown))
    q50, q99 = median_of(quiet, "lat_p50_us"), median_of(quiet, "lat_p99_us")
    n50, n99 = median_of(noisy, "lat_p50_us"), median_of(noisy, "lat_p99_us")
    failed = [r["b"]["error"] for r in noisy if "error" in r["b"]]
    frac = [r["b"].get("delivered_frac", 0.0) for r in noisy]
    lost = [r["b"]["lost_qos1"] for r in noisy if "lost_qos1" in r["b"]]
    rss = max(r["max_rss"] for r in noisy + quiet)
    rss_noisy = max(r["max_rss"] for r in noisy)
    print("B p50: quiet %.0f us, noisy %s" % (q50, "%.0f us" % n50 if n50 is not None else "n/a"))
    if n99 is not None:
        ratio = n99 / q99 if q99 else float("inf")
        print("B p99: quiet %.0f us, noisy %.0f us: noisy/quiet = %.2f" % (q99, n99, ratio))
    else:
        ratio = None
        print("B p99: quiet %.0f us, noisy n/a (B did not run)" % q99)
    print("B delivered fraction (noisy): %.4f (median; worst %.4f)"
          % (statistics.median(frac), min(frac)))
    print("B lost_qos1 (noisy): %s" % (", ".join("%d" % n for n in lost) or "n/a"))
    probes = [sum(r["probe"][1].values()) for r in noisy]
    print("B's new connections refused (noisy): %s of %s"
          % (", ".join("%d" % n for n in probes), ", ".join("%d" % r["probe"][0] for r in noisy)))
    if failed:
        print("B refused service in %d noisy run(s): %s" % (len(failed), failed[0]))
    print("broker max RSS: noisy %.1f MB = %.2f x max-memory (%s); quiet %.1f MB"
          % (rss_noisy / 2**20, rss_noisy / max_memory, args.max_memory,
             max(r["max_rss"] for r in quiet) / 2**20))
    if any(r["rss_capped"] for r in noisy):
        print("broker was killed at the safety cap (%s): its real peak is higher"
              % args.rss_cap)
    print("\n== against issue 11's bar ==")
    p99_ok = ratio is not None and ratio <= 2.0
    lost_ok = not failed and lost and max(lost) == 0
    rss_ok = rss < 1.5 * max_memory and not any(r["rss_capped"] for r in noisy)
    print("p99 noisy within 2x of quiet:        %s (%s)"
          % ("yes" if p99_ok else "NO", "%.2fx" % ratio if ratio is not None else "n/a"))
    print("no QoS 1 message of B lost:           %s (lost %s, delivered %.4f)"
          % ("yes" if lost_ok else "NO", max(lost) if lost else "n/a", min(frac)))
    print("RSS under 1.5 x max-memory:           %s (%.2fx)"
          % ("yes" if rss_ok else "NO", rss / max_memory))
    print("verdict: %s" % ("within the bar" if p99_ok and lost_ok and rss_ok
                           else "NOT within the bar"))
    print("(beside the bar: B's new connections refused during the noisy run: %d)"
          % sum(probes))


# --------------------------------------------------------------------------

def parse_args(argv):
    doc = __doc__.split("\n")
    ap = argparse.ArgumentParser(
        prog="noisy-neighbour.py", description="\n".join(doc[:1] + doc[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=".",
                    help="build directory holding aviaryd and aviaryctl (default .)")
    ap.add_argument("--aviaryd", help="aviaryd to run (default BUILD/aviaryd)")
    ap.add_argument("--aviaryctl", help="aviaryctl to use (default BUILD/aviaryctl)")
    ap.add_argument("--tenant-load", help="tenant-load binary (default: compile "
                    "contrib/tenant-load.c with cc into a temporary directory)")
    ap.add_argument("--max-memory", default=MAX_MEMORY,
                    help="the broker's --max-memory (default %s)" % MAX_MEMORY)
    ap.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                    help="set or override a plan limit (repeatable); the plan: %s"
                    % ", ".join("%s %s" % kv for kv in PLAN_LIMITS))
    ap.add_argument("--rounds", type=int, default=1,
                    help="quiet and noisy runs each, medians reported (default 1)")
    ap.add_argument("--duration", type=float, default=10.0,
                    help="B's publishing time per run, s (default 10)")
    ap.add_argument("--subscribers", type=int, default=100, help="B's subscribers (100)")
    ap.add_argument("--rate", type=int, default=1000, help="B's messages/s (1000)")
    ap.add_argument("--payload", type=int, default=64, help="B's payload bytes (64)")
    ap.add_argument("--qos", type=int, default=1, choices=(0, 1, 2), help="B's QoS (1)")
    ap.add_argument("--attacks", default=",".join(ATTACKS),
                    help="A's attacks, comma-separated (default all: %s)" % ",".join(ATTACKS))
    ap.add_argument("--attack-lead", type=float, default=3.0,
                    help="seconds A attacks before B starts (default 3)")
    ap.add_argument("--attack-nice", type=int, default=19,
                    help="niceness of A's processes (default 19)")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="do not give the broker a CPU of its own (default: it gets the "
                    "last one, everything else the others)")
    ap.add_argument("--rss-cap", default="4g",
                    help="kill the broker if its RSS passes this, to spare the machine "
                    "(default 4g; 0: never)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory (broker logs, database)")
    # Internal: one attack process.
    ap.add_argument("--attack-worker", choices=ATTACKS, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--attack-seconds", type=float, default=60.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.attack_worker:
        return args
    args.aviaryd = args.aviaryd or os.path.join(args.build, "aviaryd")
    args.aviaryctl = args.aviaryctl or os.path.join(args.build, "aviaryctl")
    for path in (args.aviaryd, args.aviaryctl):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            ap.error("%s is not an executable file (see --build, --aviaryd, --aviaryctl)"
                     % path)
    args.attacks = [a for a in args.attacks.split(",") if a]
    for a in args.attacks:
        if a not in ATTACKS:
            ap.error("unknown attack %r (known: %s)" % (a, ", ".join(ATTACKS)))
    plan = dict(PLAN_LIMITS)
    for item in args.limit:
        name, eq, value = item.partition("=")
        if not eq or not name or not value:
            ap.error("--limit wants NAME=VALUE, not %r" % item)
        plan[name] = value
    args.plan = list(plan.items())
    if args.rounds < 1 or args.duration <= 0 or args.subscribers < 1 or args.rate < 1:
        ap.error("--rounds, --duration, --subscribers and --rate must be positive")
    try:
        args.max_memory_bytes = parse_bytes(args.max_memory)
        parse_bytes(args.rss_cap)
    except ValueError:
        ap.error("--max-memory and --rss-cap take BYTES with an optional k, m or g")
    if args.max_memory_bytes <= 0:
        ap.error("--max-memory must be positive")
    return args


def main(argv):
    args = parse_args(argv)
    if args.attack_worker:
        return attack_worker(args)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    pin_cpus(args)
    workdir = tempfile.mkdtemp(prefix="noisy-neighbour-")
    try:
        binary = args.tenant_load or compile_tenant_load(workdir)
        db = os.path.join(workdir, "aviary.db")
        secrets, unknown = set_up_tenants(args, db)
        print("aviaryd %s, max-memory %s; plan: %s; B: %d subscribers, %d msg/s, %g s, "
              "%d B payload, QoS %d; A: %s (nice %d, %g s lead)"
              % (args.aviaryd, args.max_memory,
                 ", ".join("%s %s%s" % (n, v, " (unknown here)" if n in unknown else "")
                           for n, v in args.plan),
                 args.subscribers, args.rate, args.duration, args.payload, args.qos,
                 ",".join(args.attacks), args.attack_nice, args.attack_lead))
        sys.stdout.flush()
        quiet, noisy = [], []
        for k in range(args.rounds):
            for label, is_noisy, runs in (("quiet", False, quiet), ("noisy", True, noisy)):
                r = one_run(args, binary, db, secrets, workdir, "%s%d" % (label, k + 1),
                            is_noisy)
                if not is_noisy and "error" in r["b"]:
                    raise CouldNotRun("B's quiet run failed: %s" % r["b"]["error"])
                print_run("%s %d" % (label, k + 1), r, args.max_memory_bytes)
                runs.append(r)
        summary(args, quiet, noisy, args.max_memory_bytes, unknown)
        return 0
    except CouldNotRun as e:
        print("noisy-neighbour: could not run: %s" % e, file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print("noisy-neighbour: interrupted (%s)" % (e or "SIGINT"), file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_all()
        if args.keep:
            print("kept %s" % workdir, file=sys.stderr)
        else:
            shutil.rmtree(workdir, True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
