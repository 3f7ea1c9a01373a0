#!/usr/bin/python3
"""What aviaryd's desktop database (--db) keeps and costs: SIGKILL, SIGTERM, restart, throughput.

aviaryd --db PATH keeps retained messages and persistent sessions (clean
session 0) in SQLite; a writer thread commits each change at most ~50 ms after
it happens, and SIGTERM writes everything before the broker exits. This
measures that promise from the outside, with a small raw-socket MQTT 3.1.1
client (no paho), in four subcommands:

  crash-loop      A persistent subscriber session ("durable-sub", clean 0,
                  "crash/#" at QoS 1) is created and left offline. Then, CYCLES
                  times: the broker starts on the same database, a publisher
                  (clean 1) sends QoS 1 PUBLISHes "crash/x" carrying increasing
                  sequence numbers, 10 in flight, recording when each PUBACK
                  arrives; after a random 0.2-1.5 s (random.Random(SEED)) the
                  broker is killed with SIGKILL. At the end the broker starts
                  once more and "durable-sub" reads its queue (acking each
                  message) until 3 s of silence. Reported: acked, received,
                  lost (acked but never received), duplicates, how long before
                  its kill each lost message had been acknowledged
                  (lost_window_ms_*), lost per cycle, and the messages received
                  that were never acked (sent just before a kill: allowed).
  sigterm-stream  A persistent subscriber ("stream-sub", clean 0, QoS 1) stays
                  connected and acks everything, noting each sequence number
                  and DUP flag; a persistent publisher ("stream-pub", clean 0)
                  sends MESSAGES QoS 1 messages, 20 in flight. About half-way
                  (by acks) the broker gets SIGTERM (its exit status must be
                  0), is started again on the same database, both clients
                  reconnect (same ids, clean 0), the publisher re-sends what it
                  had sent but not had acked (DUP=1, same packet id) and goes on
                  to the end. Reported: lost (acked, never received: must be 0)
                  and the duplicates, each either allowed (re-delivered with
                  DUP=1, or re-sent by the publisher) or unexplained (must be
                  0).
  restart-time    On a fresh database: RETAINED retained messages on distinct
                  topics "rt/<i>" (QoS 0, 32-byte payloads, pipelined over one
                  connection), then SESSIONS persistent sessions (each
                  subscribes "s/<i>/#" at QoS 1 and disconnects; a few
                  connections in parallel). SIGTERM (stop_ms), then a new
                  broker: restart_ms (spawn to "listening on"), restore_ms (its
                  own "restored ... in N ms" log line), its VmRSS, the database
                  size; a subscriber on "rt/#" must get every retained message
                  and one session must resume with session present = 1.
  throughput      What --db costs on traffic it writes, in two workloads: "session",
                  QoS 1 messages "tp/s/x" to an online persistent subscriber
                  ("tp-sub", clean 0, "tp/s/#" at QoS 1, reading and acking
                  everything: each delivery is a queued/in-flight record that
                  the writer thread writes and then deletes), and "retained", a
                  flood of QoS 1 retained messages on "tp/r/<i % 10000>" with no
                  subscriber. One publisher (clean 1), WINDOW QoS 1 PUBLISHes in
                  flight, 64-byte payloads, MESSAGES per run. Each of ROUNDS
                  rounds starts the broker twice per workload, once without --db
                  and once with it on a fresh database, alternating the order
                  (even rounds memory first, odd ones --db first). Rate: messages
                  from the first PUBLISH to the last delivery (session) or the
                  last PUBACK (retained). Reported per run: the rate, the broker's
                  CPU (its writer thread included) and the client's, VmRSS, stop
                  time, the database size (with its -wal) just before SIGTERM and
                  after; per workload: the median rates without and with --db,
                  their ratio, the databases' sizes at the end, the median broker
                  CPU per message, and the broker's warnings and errors that
                  mention "database". A run that is not through within its share
                  of the time (at most --seconds, 45 s; all runs together get
                  --budget, 330 s) stops there, its rate counted from what got
                  through, and is a problem. One Python client drives both ends,
                  so without --db it may be the slower party: the broker CPU per
                  message shows the cost when the rate does not.

Each prints key=value lines and a final '# ...' summary line. The exit status
is 0 when the run went as promised, 1 when it did not or could not run, 2 on
a usage error.

    contrib/durability.py crash-loop [--cycles 20] [--seed N]
    contrib/durability.py sigterm-stream [--messages 10000]
    contrib/durability.py restart-time [--retained 100000] [--sessions 10000]
    contrib/durability.py throughput [--messages 200000] [--rounds 3] [--window 100]
    common options: [--aviaryd PATH] [--dir DIR] [--keep] [--max-inflight N]

The broker listens on 127.0.0.1 only, on a port it picks itself (--listen
tcp://127.0.0.1:0; it prints the port), with limits high enough that nothing is
dropped for them (--max-queued-messages 1000000, --max-retained 0,
--max-sessions 0, --max-outbound-bytes 1 GB). aviaryd is copied into a
temporary directory (under --dir, default the system's) first, so that every
start of one run uses the same build even if PATH is rebuilt meanwhile; the
databases and the broker's log (aviaryd.log, all its starts) go there too, and
the directory is removed at the end unless --keep. Every loop and wait is
bounded. Every broker started is stopped by its PID at the end, on errors and
on SIGINT/SIGTERM too; nothing else is signalled. The machine's other load
shows in the timings: run one subcommand at a time.
"""

import argparse
import atexit
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HOST = "127.0.0.1"
MAX_QUEUED = 1000000  # the broker's --max-queued-messages

# --------------------------------------------------------------------------
# MQTT 3.1.1, just enough of it

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14
NAMES = {1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 8: "SUBSCRIBE", 9: "SUBACK",
         12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT"}
KEEPALIVE = 120
PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"


def varint(n):
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(ptype, flags, body):
    return bytes([ptype << 4 | flags]) + varint(len(body)) + body


def mqtt_string(text):
    b = text.encode()
    return struct.pack("!H", len(b)) + b


def connect_packet(client_id, clean):
    body = (mqtt_string("MQTT") + bytes([4, 0x02 if clean else 0x00]) +
            struct.pack("!H", KEEPALIVE) + mqtt_string(client_id))
    return packet(CONNECT, 0, body)


def subscribe_packet(pid, topic_filter, qos):
    return packet(SUBSCRIBE, 2, struct.pack("!H", pid) + mqtt_string(topic_filter) + bytes([qos]))


def publish_packet(topic, payload, qos=0, pid=0, retain=False, dup=False):
    flags = (0x08 if dup else 0) | qos << 1 | (0x01 if retain else 0)
    body = mqtt_string(topic) + (struct.pack("!H", pid) if qos else b"") + payload
    return packet(PUBLISH, flags, body)


def puback_packet(pid):
    return b"\x40\x02" + struct.pack("!H", pid)


class Publish:
    __slots__ = ("topic", "payload", "qos", "pid", "dup", "retain")

    def __init__(self, flags, body):
        self.dup = bool(flags & 0x08)
        self.qos = (flags >> 1) & 3
        self.retain = bool(flags & 0x01)
        n = struct.unpack_from("!H", body)[0]
        self.topic = body[2:2 + n].decode(errors="replace")
        i = 2 + n
        self.pid = 0
        if self.qos:
            self.pid = struct.unpack_from("!H", body, i)[0]
            i += 2
        self.payload = body[i:]


class Closed(Exception):
    """The connection ended (EOF, reset, or a write that failed)."""


class ProtocolError(Exception):
    pass


class Client:
    """One MQTT connection over a blocking socket, read through select()."""

    def __init__(self, port, name, timeout=10.0):
        self.name = name
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0
        self.eof = False

    def fileno(self):
        return self.sock.fileno()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError as e:
            self.eof = True
            raise Closed("%s: write: %s" % (self.name, e))

    def _parse_one(self):
        buf, pos = self.buf, self.pos
        if len(buf) - pos < 2:
            return None
        n, mult, i = 0, 1, pos + 1
        while True:
            if i >= len(buf):
                return None
            b = buf[i]
            i += 1
            n += (b & 0x7f) * mult
            if not b & 0x80:
                break
            mult *= 128
            if i - pos > 4:
                raise ProtocolError("%s: bad remaining length" % self.name)
        if len(buf) - i < n:
            return None
        first = buf[pos]
        body = bytes(buf[i:i + n])
        self.pos = i + n
        return first >> 4, first & 0x0f, body

    def _parse_all(self):
        out = []
        while True:
            p = self._parse_one()
            if p is None:
                break
            out.append(p)
        if self.pos > 65536 or self.pos == len(self.buf):
            del self.buf[:self.pos]
            self.pos = 0
        return out

    def fill(self):
        """One recv() of what is there; False at EOF."""
        try:
            chunk = self.sock.recv(262144)
        except (ConnectionError, OSError):
            chunk = b""
        if not chunk:
            self.eof = True
            self.close()  # as a client does: the broker may wait for our side to close
            return False
        self.buf += chunk
        return True

    def packets(self, timeout):
        """Every complete packet buffered, else those one wait of up to
        `timeout` seconds brings: [] on time-out; Closed at EOF with none left."""
        out = self._parse_all()
        if out:
            return out
        if self.eof:
            raise Closed("%s: connection closed" % self.name)
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if ready:
            self.fill()
            out = self._parse_all()
            if not out and self.eof:
                raise Closed("%s: connection closed" % self.name)
        return out

    def expect(self, ptype, timeout=10.0):
        """The next packet, which must be of type `ptype`: its (flags, body)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self._parse_one()
            if got is not None:
                if got[0] != ptype:
                    raise ProtocolError("%s: %s instead of %s" % (
                        self.name, NAMES.get(got[0], got[0]), NAMES[ptype]))
                return got[1], got[2]
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProtocolError("%s: no %s in %g s" % (self.name, NAMES[ptype], timeout))
            if self.eof:
                raise Closed("%s: closed while waiting for %s" % (self.name, NAMES[ptype]))
            ready, _, _ = select.select([self.sock], [], [], left)
            if ready:
                self.fill()

    def connect(self, client_id, clean):
        """CONNECT; returns session present (CONNACK 0 required)."""
        self.send(connect_packet(client_id, clean))
        _, body = self.expect(CONNACK)
        if len(body) != 2 or body[1] != 0:
            raise ProtocolError("%s: CONNACK %r" % (self.name, body))
        return body[0] & 1

    def subscribe(self, topic_filter, qos, pid=1):
        """SUBSCRIBE one filter; returns the granted QoS (0x80: refused)."""
        self.send(subscribe_packet(pid, topic_filter, qos))
        _, body = self.expect(SUBACK)
        if len(body) != 3 or struct.unpack_from("!H", body)[0] != pid:
            raise ProtocolError("%s: SUBACK %r" % (self.name, body))
        return body[2]

    def disconnect(self):
        try:
            self.send(DISCONNECT_PACKET)
        except Closed:
            pass
        self.close()


def wait_readable(clients, timeout):
    live = [c for c in clients if c is not None and not c.eof]
    if not live:
        time.sleep(min(timeout, 0.05))
        return
    if any(c.pos < len(c.buf) for c in live):
        return  # something is buffered already
    select.select(live, [], [], max(0.0, timeout))


# --------------------------------------------------------------------------
# The broker: started, killed and stopped by PID only

STARTED = []  # every aviaryd of this process not yet waited for


class CouldNotRun(Exception):
    pass


class Broker:
    def __init__(self, proc, port, listen_ms, log_path, log_offset):
        self.proc, self.pid, self.port = proc, proc.pid, port
        self.listen_ms = listen_ms
        self.log_path, self.log_offset = log_path, log_offset
        self.restored = restored_line(log_path, log_offset)


def log_since(path, offset):
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def log_tail(path, offset=0, lines=25):
    return "\n".join("    " + l for l in log_since(path, offset).splitlines()[-lines:])


RESTORED = re.compile(r"restored (\d+) retained messages and (\d+) sessions \((\d+) subscriptions, "
                      r"(\d+) queued or in-flight messages\) from .* in (\d+) ms")


def restored_line(path, offset):
    """The counts of the broker's "restored ..." line since `offset` (it is logged
    before "listening on", to unbuffered standard error), or None."""
    m = RESTORED.search(log_since(path, offset))
    if not m:
        return None
    keys = ("retained", "sessions", "subscriptions", "queued", "ms")
    return dict(zip(keys, (int(x) for x in m.groups())))


def copy_aviaryd(path, workdir, wait=30.0):
    """A private copy of `path`, waiting (bounded) while it is missing or being rebuilt."""
    deadline = time.monotonic() + wait
    dest = os.path.join(workdir, "aviaryd")
    while True:
        try:
            shutil.copy2(path, dest)
            r = subprocess.run([dest, "--version"], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=10)
            if r.returncode == 0:
                return dest, r.stdout.decode(errors="replace").strip()
            why = "exit %d" % r.returncode
        except (OSError, subprocess.SubprocessError) as e:
            why = str(e)
        if time.monotonic() > deadline:
            raise CouldNotRun("no usable aviaryd at %s (%s)" % (path, why))
        time.sleep(1.0)


def start_broker(args, db, extra=()):
    """aviaryd on a port of its own, with the run's limits; db None: without --db."""
    argv = ([args.binary, "--listen", "tcp://%s:0" % HOST] + (["--db", db] if db else []) +
            ["--max-queued-messages", str(MAX_QUEUED), "--max-inflight", str(args.max_inflight),
             "--max-retained", "0", "--max-sessions", "0",
             "--max-outbound-bytes", str(1 << 30), "--log-level", "notice"] + list(extra))
    log_path = os.path.join(args.workdir, "aviaryd.log")
    with open(log_path, "ab") as log:
        log.write(("--- durability.py: %s\n" % " ".join(argv)).encode())
        log.flush()
        offset = log.tell()
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
    STARTED.append(proc)
    deadline = t0 + 30
    line = b""
    while time.monotonic() < deadline and not line.endswith(b"\n"):
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 1)
            if not chunk:
                break
            line += chunk
    listen_ms = (time.monotonic() - t0) * 1000
    text = line.decode(errors="replace").strip()
    if not text.startswith("listening on tcp://"):
        stop_process(proc)
        raise CouldNotRun("aviaryd did not start (stdout %r, exit %s); its log:\n%s"
                          % (text, proc.returncode, log_tail(log_path, offset)))
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain the rest
    return Broker(proc, int(text.rsplit(":", 1)[1]), listen_ms, log_path, offset)


def forget(proc):
    if proc in STARTED:
        STARTED.remove(proc)


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
    forget(proc)


def stop_all():
    for proc in list(STARTED):
        stop_process(proc, grace=2.0)


def terminate(b, timeout=60.0):
    """SIGTERM `b` and wait (bounded): (exit status, ms from the signal to the exit).
    A negative status is the signal that ended it; None: it had to be killed."""
    t0 = time.monotonic()
    os.kill(b.pid, signal.SIGTERM)
    try:
        status = b.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(b.pid, signal.SIGKILL)
        b.proc.wait()
        status = None
    ms = (time.monotonic() - t0) * 1000
    forget(b.proc)
    return status, ms


def kill9(b):
    """SIGKILL `b`: the time.monotonic() of the signal."""
    t = time.monotonic()
    os.kill(b.pid, signal.SIGKILL)
    return t


def reap(b, timeout=10.0):
    try:
        status = b.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        status = None
    forget(b.proc)
    return status


def vmrss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def report_log(args, problems):
    """The broker's warnings and errors over the whole run (every start): counted,
    the first few shown; a queue that was full (a message dropped for a limit)
    is a problem, since this run sets the limits so that nothing is."""
    text = log_since(os.path.join(args.workdir, "aviaryd.log"), 0)
    lines = [l for l in text.splitlines() if "[warning]" in l or "[error]" in l]
    out("broker_log_warnings", len(lines))
    for l in lines[:5]:
        out("broker_log_warning", l)
    full = sum(1 for l in lines if "queue full" in l)
    if full:
        problems.append("%d messages dropped for max-queued-messages" % full)


def restored_text(r):
    if r is None:
        return "none"
    return "%d retained, %d sessions, %d subscriptions, %d queued, %d ms" % (
        r["retained"], r["sessions"], r["subscriptions"], r["queued"], r["ms"])


def out(key, value):
    print("%s=%s" % (key, value), flush=True)


def ms_summary(values):
    if not values:
        return "-"
    v = sorted(values)
    return "min %.1f, median %.1f, max %.1f" % (v[0], v[len(v) // 2], v[-1])


def ranges(seqs, most=8):
    """'3-7,9' for [3, 4, 5, 6, 7, 9] (sorted), at most `most` ranges shown."""
    parts = []
    for s in seqs:
        if parts and parts[-1][1] == s - 1:
            parts[-1][1] = s
        else:
            parts.append([s, s])
    text = ",".join("%d-%d" % (a, b) if a != b else "%d" % a for a, b in parts[:most])
    return (text + ",...(%d ranges)" % len(parts) if len(parts) > most else text) or "-"


def pid_of(seq):
    return (seq - 1) % 65535 + 1


# --------------------------------------------------------------------------
# crash-loop

def crash_loop(args):
    rng = random.Random(args.seed)
    db = os.path.join(args.workdir, "crash.db")
    problems = []
    out("cycles", args.cycles)
    out("seed", args.seed)
    out("window", args.window)
    out("rate", "%g" % args.rate if args.rate else "unpaced")

    # The persistent session, created and left offline.
    b = start_broker(args, db)
    sub = Client(b.port, "durable-sub")
    sub.connect("durable-sub", clean=False)
    granted = sub.subscribe("crash/#", 1)
    if granted != 1:
        raise CouldNotRun("durable-sub: SUBACK granted %#x for crash/# at QoS 1" % granted)
    sub.disconnect()
    status, _ = terminate(b)
    if status != 0:
        problems.append("the first broker exited with %s on SIGTERM" % status)

    seq = 0
    sent = {}    # seq -> cycle
    acked = {}   # seq -> (cycle, time.monotonic() of the PUBACK)
    kills = {}   # cycle -> time.monotonic() of the SIGKILL
    late_acks = 0
    capped = False
    cycle_rows = []
    for cycle in range(1, args.cycles + 1):
        b = start_broker(args, db)
        if b.restored is None:
            problems.append("cycle %d: no \"restored\" line in the log" % cycle)
        delay = rng.uniform(0.2, 1.5)
        pub = Client(b.port, "crash-pub")
        pub.connect("crash-pub", clean=True)
        began = time.monotonic()
        kill_at = began + delay
        inflight = {}  # packet id -> seq
        killed = None
        n_sent = n_acked = n_late = 0
        noticed = False
        while True:
            now = time.monotonic()
            if killed is None and now >= kill_at:
                killed = kill9(b)
                kills[cycle] = killed
            if killed is not None and now - killed > 10:
                problems.append("cycle %d: the publisher saw no broken connection 10 s after "
                                "the SIGKILL" % cycle)
                break
            try:
                # Window, rate and the queue's limit permitting:
                allowed = args.window - len(inflight)
                if args.rate:
                    allowed = min(allowed, int((now - began) * args.rate) + 1 - n_sent)
                allowed = min(allowed, MAX_QUEUED - seq)
                for _ in range(max(0, allowed)):
                    seq += 1
                    sent[seq] = cycle
                    n_sent += 1
                    inflight[pid_of(seq)] = seq
                    pub.send(publish_packet("crash/x", b"%d" % seq, 1, pid_of(seq)))
                if seq >= MAX_QUEUED:
                    capped = True
                wait = 0.5 if killed is not None else min(0.5, kill_at - now)
                if args.rate and len(inflight) < args.window:
                    wait = min(wait, 0.002)
                for ptype, flags, body in pub.packets(wait):
                    t = time.monotonic()
                    if ptype != PUBACK or len(body) != 2:
                        raise ProtocolError("crash-pub: unexpected %s" % NAMES.get(ptype, ptype))
                    s = inflight.pop(struct.unpack("!H", body)[0], None)
                    if s is None:
                        raise ProtocolError("crash-pub: PUBACK for no message in flight")
                    acked[s] = (cycle, t)
                    n_acked += 1
                    if killed is not None:
                        n_late += 1  # sent before the kill, read after it
            except Closed:
                noticed = True
                break
        pub.close()
        status = reap(b)
        if status != -signal.SIGKILL:
            problems.append("cycle %d: the killed broker's status was %s" % (cycle, status))
        if not noticed:
            break
        late_acks += n_late
        cycle_rows.append((cycle, delay, n_sent, n_acked, n_late, b.listen_ms, b.restored))

    # The session comes back and reads its queue.
    b = start_broker(args, db)
    final_restored = b.restored
    sub = Client(b.port, "durable-sub")
    session_present = sub.connect("durable-sub", clean=False)
    received = []  # (seq, dup) in arrival order
    unknown = 0
    t0 = last = time.monotonic()
    deadline = t0 + args.drain_seconds
    closed = None
    while True:
        now = time.monotonic()
        if now - last >= args.silence or now >= deadline:
            break
        try:
            acks = []
            for ptype, flags, body in sub.packets(min(0.5, deadline - now)):
                if ptype != PUBLISH:
                    raise ProtocolError("durable-sub: unexpected %s" % NAMES.get(ptype, ptype))
                p = Publish(flags, body)
                if p.qos:
                    acks.append(puback_packet(p.pid))
                try:
                    received.append((int(p.payload), p.dup))
                except ValueError:
                    unknown += 1
                last = time.monotonic()
            if acks:
                sub.send(b"".join(acks))
        except Closed as e:
            closed = str(e)
            break
    drain_s = time.monotonic() - t0
    sub.disconnect()
    final_status, _ = terminate(b)
    if closed:
        problems.append("durable-sub lost its connection while reading: %s" % closed)
    if time.monotonic() >= deadline:
        problems.append("durable-sub was still receiving after %g s" % args.drain_seconds)
    if session_present != 1:
        problems.append("durable-sub came back with session present 0")
    if final_status != 0:
        problems.append("the last broker exited with %s on SIGTERM" % final_status)

    # The figures.
    got = {}
    for s, dup in received:
        got[s] = got.get(s, 0) + 1
    lost = sorted(s for s in acked if s not in got)
    duplicates = sum(n - 1 for n in got.values())
    dup_flagged = sum(1 for _, dup in received if dup)
    never_sent = sum(1 for s in got if s not in sent)
    unacked_received = sum(1 for s in got if s in sent and s not in acked)
    windows = [max(0.0, (kills[acked[s][0]] - acked[s][1]) * 1000) for s in lost]
    lost_by_cycle = {}
    for s in lost:
        lost_by_cycle[acked[s][0]] = lost_by_cycle.get(acked[s][0], 0) + 1
    late_lost = sum(1 for s in lost if acked[s][1] > kills[acked[s][0]])
    order_breaks = sum(1 for a, b2 in zip(received, received[1:]) if b2[0] < a[0])

    # A lost message followed (in its cycle) by an acked one that was kept: a hole,
    # not the tail that the writer had not committed yet.
    last_kept = {}
    for s in acked:
        if s in got:
            c = acked[s][0]
            last_kept[c] = max(last_kept.get(c, 0), s)
    holes = sum(1 for s in lost if s < last_kept.get(acked[s][0], 0))

    for cycle, delay, n_sent, n_acked, n_late, listen_ms, r in cycle_rows:
        mine = [s for s in lost if acked[s][0] == cycle]
        ms = [max(0.0, (kills[cycle] - acked[s][1]) * 1000) for s in mine]
        print("cycle=%d kill_after_ms=%.0f sent=%d acked=%d acks_read_after_kill=%d lost=%d "
              "lost_seqs=%s lost_acked_ms_before_kill=%s restart_ms=%.0f restored_queued=%s "
              "restore_ms=%s"
              % (cycle, delay * 1000, n_sent, n_acked, n_late, len(mine), ranges(mine),
                 "%.1f-%.1f" % (max(ms), min(ms)) if ms else "-", listen_ms,
                 r["queued"] if r else "?", r["ms"] if r else "?"), flush=True)
    out("final_restored", restored_text(final_restored))
    out("session_present", session_present)
    out("sent", len(sent))
    out("acked", len(acked))
    out("received", len(got))
    out("received_total", len(received))
    out("drain_s", "%.1f" % drain_s)
    out("lost", len(lost))
    out("duplicates", duplicates)
    out("received_with_dup_flag", dup_flagged)
    out("received_unacked", unacked_received)
    out("received_never_sent", never_sent + unknown)
    out("out_of_order", order_breaks)
    out("acks_read_after_kill", late_acks)
    out("lost_window_ms_max", "%.1f" % max(windows) if windows else "-")
    out("lost_window_ms", ms_summary(windows))
    out("lost_acks_read_after_kill", late_lost)
    out("lost_per_cycle", ",".join(str(lost_by_cycle.get(c, 0)) for c, *_ in cycle_rows))
    out("lost_with_later_kept", holes)
    if duplicates:
        problems.append("%d duplicates in one session's single reading of its queue" % duplicates)
    if holes:
        problems.append("%d lost messages were acked before others of their cycle that were "
                        "kept" % holes)
    if never_sent + unknown:
        problems.append("%d messages received that were never sent" % (never_sent + unknown))
    if windows and max(windows) > args.lost_window_bound:
        problems.append("a lost message had been acked %.0f ms before its kill (bound %g ms)"
                        % (max(windows), args.lost_window_bound))
    report_log(args, problems)
    if capped:
        out("capped", "publishing stopped at %d messages, the queue's limit" % MAX_QUEUED)
    if len(cycle_rows) < args.cycles:
        problems.append("only %d of %d cycles ran" % (len(cycle_rows), args.cycles))
    for p in problems:
        out("problem", p)
    print("# crash-loop: %d SIGKILLs, %d of %d acked messages lost (acked at most %s ms before "
          "the kill; bound %g ms), %d duplicates, %d unacked ones delivered anyway: %s"
          % (len(cycle_rows), len(lost), len(acked),
             "%.0f" % max(windows) if windows else "-", args.lost_window_bound, duplicates,
             unacked_received, "as promised" if not problems else "NOT as promised"), flush=True)
    return 0 if not problems else 1


# --------------------------------------------------------------------------
# sigterm-stream

def sigterm_stream(args):
    db = os.path.join(args.workdir, "stream.db")
    n = args.messages
    half = n // 2
    problems = []
    out("messages", n)
    out("window", args.window)

    b = start_broker(args, db)
    sub = Client(b.port, "stream-sub")
    sub.connect("stream-sub", clean=False)
    if sub.subscribe("stream/#", 1) != 1:
        raise CouldNotRun("stream-sub: SUBSCRIBE stream/# at QoS 1 not granted")
    pub = Client(b.port, "stream-pub")
    pub.connect("stream-pub", clean=False)

    state = {"next": 1}
    inflight = {}      # packet id -> seq, in the order sent
    acked = set()
    resent = set()
    receipts = {}      # seq -> [dup flag of each copy, in order]
    dup_first = [0]
    bad = []

    def pump(pub, sub, deadline, until):
        """Publish (window), collect PUBACKs, take and ack deliveries until
        until() or both connections closed or the deadline."""
        while not until():
            if time.monotonic() >= deadline:
                return False
            if pub is not None and not pub.eof:
                try:
                    while len(inflight) < args.window and state["next"] <= n:
                        s = state["next"]
                        state["next"] += 1
                        inflight[pid_of(s)] = s
                        pub.send(publish_packet("stream/x", b"%d" % s, 1, pid_of(s)))
                except Closed:
                    pass
            if (pub is None or pub.eof) and (sub is None or sub.eof):
                return True
            wait_readable([pub, sub], 0.2)
            if pub is not None and not pub.eof:
                try:
                    for ptype, flags, body in pub.packets(0):
                        if ptype != PUBACK or len(body) != 2:
                            raise ProtocolError("stream-pub: unexpected %s"
                                                % NAMES.get(ptype, ptype))
                        s = inflight.pop(struct.unpack("!H", body)[0], None)
                        if s is None:
                            bad.append("PUBACK for no message in flight")
                        else:
                            acked.add(s)
                except Closed:
                    pass
            if sub is not None and not sub.eof:
                try:
                    acks = []
                    for ptype, flags, body in sub.packets(0):
                        if ptype != PUBLISH:
                            raise ProtocolError("stream-sub: unexpected %s"
                                                % NAMES.get(ptype, ptype))
                        p = Publish(flags, body)
                        acks.append(puback_packet(p.pid))
                        try:
                            s = int(p.payload)
                        except ValueError:
                            bad.append("payload %r" % p.payload[:20])
                            continue
                        copies = receipts.setdefault(s, [])
                        if not copies and p.dup:
                            dup_first[0] += 1
                        copies.append(p.dup)
                    if acks:
                        sub.send(b"".join(acks))
                except Closed:
                    pass
        return True

    # Phase 1: half of them, then SIGTERM; both connections run until the broker closes them.
    deadline = time.monotonic() + args.seconds
    pump(pub, sub, deadline, lambda: len(acked) >= half)
    acked_at_sigterm = len(acked)
    sent_at_sigterm = state["next"] - 1
    received_at_sigterm = len(receipts)
    t_term = time.monotonic()
    os.kill(b.pid, signal.SIGTERM)
    pump(pub, sub, t_term + 30, lambda: False)
    closed_ms = (time.monotonic() - t_term) * 1000
    try:
        status = b.proc.wait(max(1.0, 30 - (time.monotonic() - t_term)))
    except subprocess.TimeoutExpired:
        os.kill(b.pid, signal.SIGKILL)
        b.proc.wait()
        status = None
    stop_ms = (time.monotonic() - t_term) * 1000
    forget(b.proc)
    pub.close()
    sub.close()
    acked_before_stop = len(acked)
    sent_before_stop = state["next"] - 1
    received_before_stop = len(receipts)
    unacked = sorted(inflight.values())
    if status != 0:
        problems.append("the broker exited with %s on SIGTERM" % status)

    # Phase 2: a new broker, the same sessions; the publisher re-sends what was not acked.
    b = start_broker(args, db)
    sub = Client(b.port, "stream-sub")
    sub_present = sub.connect("stream-sub", clean=False)
    pub = Client(b.port, "stream-pub")
    pub_present = pub.connect("stream-pub", clean=False)
    if sub_present != 1:
        problems.append("stream-sub came back with session present 0")
    for s in unacked:
        pub.send(publish_packet("stream/x", b"%d" % s, 1, pid_of(s), dup=True))
        resent.add(s)
    t_restart = time.monotonic()
    finished = pump(pub, sub, t_restart + args.seconds,
                    lambda: len(receipts) >= n and len(acked) >= n and not inflight)
    finish_s = time.monotonic() - t_restart
    pump(pub, sub, time.monotonic() + 0.5, lambda: False)  # trailing copies
    pub.disconnect()
    sub.disconnect()
    final_status, _ = terminate(b)
    if not finished:
        problems.append("not all delivered and acked %g s after the restart" % args.seconds)
    if final_status != 0:
        problems.append("the second broker exited with %s on SIGTERM" % final_status)

    # The figures.
    lost = sorted(s for s in acked if s not in receipts)
    missing = sorted(s for s in range(1, n + 1) if s not in receipts)
    with_dup = without_dup = allowed = unexplained = 0
    unexplained_seqs = []
    for s, copies in receipts.items():
        extra = copies[1:]
        if not extra:
            continue
        with_dup += sum(1 for d in extra if d)
        without_dup += sum(1 for d in extra if not d)
        # Each copy with DUP=1 is a re-delivery; a re-send by the publisher makes one more.
        ok = min(len(extra), sum(1 for d in copies if d) + (1 if s in resent else 0))
        allowed += ok
        if len(extra) > ok:
            unexplained += len(extra) - ok
            unexplained_seqs.append(s)
    duplicates = with_dup + without_dup
    out("acked_at_sigterm", acked_at_sigterm)
    out("sent_at_sigterm", sent_at_sigterm)
    out("received_at_sigterm", received_at_sigterm)
    out("acked_before_stop", acked_before_stop)
    out("sent_before_stop", sent_before_stop)
    out("received_before_stop", received_before_stop)
    out("sigterm_exit_status", status)
    out("connections_closed_ms", "%.0f" % closed_ms)
    out("stop_ms", "%.0f" % stop_ms)
    out("restored", restored_text(b.restored))
    out("restart_ms", "%.0f" % b.listen_ms)
    out("session_present_sub", sub_present)
    out("session_present_pub", pub_present)
    out("resent_with_dup", len(resent))
    out("acked", len(acked))
    out("received", len(receipts))
    out("finish_s", "%.1f" % finish_s)
    out("lost", len(lost))
    out("missing", len(missing))
    out("duplicates", duplicates)
    out("duplicates_with_dup_flag", with_dup)
    out("duplicates_without_dup_flag", without_dup)
    out("first_copy_with_dup_flag", dup_first[0])
    out("dup_allowed", allowed)
    out("dup_unexplained", unexplained)
    out("final_exit_status", final_status)
    if lost:
        out("lost_seqs", ranges(lost))
    if unexplained_seqs:
        out("dup_unexplained_seqs", ranges(sorted(unexplained_seqs)))
    report_log(args, problems)
    for why in bad[:5]:
        problems.append(why)
    if lost:
        problems.append("%d acked messages never delivered" % len(lost))
    if missing:
        problems.append("%d messages never delivered" % len(missing))
    if unexplained:
        problems.append("%d duplicates without DUP=1 that the publisher had not re-sent"
                        % unexplained)
    for p in problems:
        out("problem", p)
    print("# sigterm-stream: SIGTERM after %d of %d acked (exit %s, %.0f ms), %d lost, "
          "%d duplicates (%d with DUP=1, %d allowed, %d unexplained): %s"
          % (acked_before_stop, n, status, stop_ms, len(lost), duplicates, with_dup, allowed,
             unexplained, "as promised" if not problems else "NOT as promised"), flush=True)
    return 0 if not problems else 1


# --------------------------------------------------------------------------
# restart-time

def retained_payload(i):
    return (b"retained message %d " % i).ljust(32, b".")


def make_sessions(port, first, count, deadline, results):
    """Persistent sessions sess-<i> for i in [first, first + count): CONNECT clean 0,
    SUBSCRIBE s/<i>/# QoS 1, SUBACK, DISCONNECT. Counts into results."""
    ok = failed = 0
    why = None
    for i in range(first, first + count):
        if time.monotonic() > deadline:
            why = "deadline"
            break
        try:
            c = Client(port, "sess-%d" % i)
            try:
                c.send(connect_packet("sess-%d" % i, False) + subscribe_packet(1, "s/%d/#" % i, 1))
                _, connack = c.expect(CONNACK)
                _, suback = c.expect(SUBACK)
                c.send(DISCONNECT_PACKET)
            finally:
                c.close()
            if connack[1] == 0 and suback[2] == 1:
                ok += 1
            else:
                failed += 1
                why = "CONNACK %d, SUBACK %#x" % (connack[1], suback[2])
        except (OSError, Closed, ProtocolError) as e:
            failed += 1
            why = str(e)
    results.append((ok, failed, why))


def restart_time(args):
    db = os.path.join(args.workdir, "restart.db")
    n, m = args.retained, args.sessions
    problems = []
    out("retained", n)
    out("sessions", m)

    b = start_broker(args, db)
    # N retained messages, pipelined; a PINGREQ after them: its PINGRESP says all were read.
    t0 = time.monotonic()
    pub = Client(b.port, "rt-pub", timeout=60)
    pub.connect("rt-pub", clean=True)
    chunk = []
    for i in range(n):
        chunk.append(publish_packet("rt/%d" % i, retained_payload(i), retain=True))
        if len(chunk) == 2000:
            pub.send(b"".join(chunk))
            chunk = []
    pub.send(b"".join(chunk) + PINGREQ_PACKET)
    pub.expect(PINGRESP, timeout=120)
    pub.disconnect()
    retained_s = time.monotonic() - t0

    # M persistent sessions over a few parallel connections.
    t0 = time.monotonic()
    results = []
    per = (m + args.parallel - 1) // args.parallel
    threads = []
    for k in range(args.parallel):
        first, count = k * per, max(0, min(per, m - k * per))
        th = threading.Thread(target=make_sessions,
                              args=(b.port, first, count, t0 + args.seconds, results), daemon=True)
        th.start()
        threads.append(th)
    for th in threads:
        th.join(max(0.0, t0 + args.seconds + 30 - time.monotonic()))
    sessions_s = time.monotonic() - t0
    made = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    whys = [r[2] for r in results if r[2]]
    if made != m:
        problems.append("%d of %d sessions made (%d refused: %s)" % (made, m, failed,
                                                                     whys[0] if whys else "?"))

    time.sleep(1.0)
    rss_before = vmrss_kb(b.pid)
    status, stop_ms = terminate(b)
    if status != 0:
        problems.append("the first broker exited with %s on SIGTERM" % status)
    db_bytes = file_size(db)
    wal_bytes = file_size(db + "-wal")

    # The restart.
    b = start_broker(args, db)
    rss_after = vmrss_kb(b.pid)
    r = b.restored
    if r is None:
        problems.append("no \"restored ... in N ms\" line in the log")
    else:
        if r["retained"] != n:
            problems.append("restored %d retained messages, not %d" % (r["retained"], n))
        if r["sessions"] != m:
            problems.append("restored %d sessions, not %d" % (r["sessions"], m))

    # Every retained message comes back to a subscriber of rt/#.
    t0 = time.monotonic()
    sub = Client(b.port, "rt-check", timeout=60)
    sub.connect("rt-check", clean=True)
    if sub.subscribe("rt/#", 0) != 0:
        problems.append("rt-check: SUBSCRIBE rt/# not granted at QoS 0")
    topics = set()
    wrong = 0
    last = time.monotonic()
    closed = None
    while len(topics) < n:
        now = time.monotonic()
        if now - last > 3 or now - t0 > args.seconds:
            break
        try:
            for ptype, flags, body in sub.packets(0.5):
                if ptype != PUBLISH:
                    continue
                p = Publish(flags, body)
                last = time.monotonic()
                try:
                    i = int(p.topic[3:])
                except ValueError:
                    wrong += 1
                    continue
                if not p.retain or p.payload != retained_payload(i):
                    wrong += 1
                topics.add(i)
        except Closed as e:
            closed = str(e)
            break
    delivery_s = time.monotonic() - t0
    sub.disconnect()
    if len(topics) != n:
        problems.append("%d of %d retained messages delivered after the restart%s"
                        % (len(topics), n, " (%s)" % closed if closed else ""))
    if wrong:
        problems.append("%d retained messages with the wrong payload or retain flag" % wrong)

    # One session resumes, with its subscription.
    k = m // 2
    present = None
    resumed_delivery = 0
    if m:
        c = Client(b.port, "sess-%d" % k)
        present = c.connect("sess-%d" % k, clean=False)
        c.send(publish_packet("s/%d/check" % k, b"check", 1, 7))
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline and not resumed_delivery:
                for ptype, flags, body in c.packets(0.5):
                    if ptype == PUBLISH and Publish(flags, body).topic == "s/%d/check" % k:
                        p = Publish(flags, body)
                        if p.qos:
                            c.send(puback_packet(p.pid))
                        resumed_delivery = 1
        except Closed:
            pass
        c.disconnect()
        if present != 1:
            problems.append("sess-%d resumed with session present 0" % k)
        if not resumed_delivery:
            problems.append("sess-%d's subscription s/%d/# did not deliver after the restart"
                            % (k, k))
    status2, stop2_ms = terminate(b)
    if status2 != 0:
        problems.append("the restarted broker exited with %s on SIGTERM" % status2)

    out("publish_retained_s", "%.1f" % retained_s)
    out("make_sessions_s", "%.1f" % sessions_s)
    out("sessions_made", made)
    out("rss_before_stop_kb", rss_before)
    out("sigterm_exit_status", status)
    out("stop_ms", "%.0f" % stop_ms)
    out("db_bytes", db_bytes)
    out("db_wal_bytes", wal_bytes)
    out("restart_ms", "%.0f" % b.listen_ms)
    out("restore_ms", r["ms"] if r else "?")
    out("restored", restored_text(r))
    out("rss_after_restart_kb", rss_after)
    out("retained_delivered", len(topics))
    out("retained_delivery_s", "%.1f" % delivery_s)
    out("session_present", present)
    out("resumed_session_delivered", resumed_delivery)
    out("second_stop_ms", "%.0f" % stop2_ms)
    out("second_exit_status", status2)
    report_log(args, problems)
    for p in problems:
        out("problem", p)
    print("# restart-time: %d retained + %d sessions (%.1f MB database): stop %.0f ms, restart "
          "%.0f ms (restore %s ms), RSS %.1f MB after restart; %d retained back, session "
          "present %s: %s"
          % (n, m, (db_bytes + wal_bytes) / 1e6, stop_ms, b.listen_ms, r["ms"] if r else "?",
             rss_after / 1024, len(topics), present,
             "as promised" if not problems else "NOT as promised"), flush=True)
    return 0 if not problems else 1


# --------------------------------------------------------------------------
# throughput

TP_PAYLOAD = 64
TP_RETAINED_TOPICS = 10000
TP_WORKLOADS = ("session", "retained")


def tp_prefix(topic, retain):
    """A QoS 1 PUBLISH of a TP_PAYLOAD-byte payload on `topic`, up to its packet id."""
    body_len = 2 + len(topic.encode()) + 2 + TP_PAYLOAD
    return bytes([PUBLISH << 4 | 0x02 | (0x01 if retain else 0)]) + varint(body_len) + \
        mqtt_string(topic)


def tp_payload(seq):
    return (b"%d " % seq).ljust(TP_PAYLOAD, b".")


def tp_run(args, workload, with_db, tag, deadline):
    """One broker, one workload, until every message is through or `deadline`: a dict."""
    n, window = args.messages, args.window
    db = os.path.join(args.workdir, "throughput-%s.db" % tag) if with_db else None
    b = start_broker(args, db)
    sub = pub = None
    res = {"workload": workload, "db": with_db}
    try:
        if workload == "session":
            sub = Client(b.port, "tp-sub", timeout=30)
            sub.connect("tp-sub", clean=False)
            granted = sub.subscribe("tp/s/#", 1)
            if granted != 1:
                raise CouldNotRun("tp-sub: SUBACK granted %#x for tp/s/# at QoS 1" % granted)
            prefixes = [tp_prefix("tp/s/x", False)]
        else:
            prefixes = [tp_prefix("tp/r/%d" % i, True) for i in range(TP_RETAINED_TOPICS)]
        nprefix = len(prefixes)
        pub = Client(b.port, "tp-pub", timeout=30)
        pub.connect("tp-pub", clean=True)

        pack = struct.Struct("!H").pack
        inflight = {}                # packet id -> seq
        seen = bytearray(n + 1)      # session: deliveries of each seq (capped at 255)
        next_seq = 1
        acked = delivered = copies = dup_flagged = 0
        bad = []
        cpu0, client_cpu0 = cpu_s(b.pid), time.process_time()
        t_first = time.monotonic()
        t_last_ack = t_last_delivery = t_first
        while True:
            if acked >= n and (sub is None or delivered >= n):
                break
            now = time.monotonic()
            if now >= deadline:
                break
            k = min(window - len(inflight), n + 1 - next_seq)
            if k > 0:
                parts = []
                for s in range(next_seq, next_seq + k):
                    pid = (s - 1) % 65535 + 1
                    inflight[pid] = s
                    parts.append(prefixes[s % nprefix] + pack(pid) + tp_payload(s))
                next_seq += k
                pub.send(b"".join(parts))
            wait_readable([pub, sub], min(0.2, deadline - now))
            got = pub.packets(0)
            if got:
                for ptype, flags, body in got:
                    if ptype != PUBACK or len(body) != 2:
                        raise ProtocolError("tp-pub: unexpected %s" % NAMES.get(ptype, ptype))
                    if inflight.pop(struct.unpack("!H", body)[0], None) is None:
                        raise ProtocolError("tp-pub: PUBACK for no message in flight")
                    acked += 1
                t_last_ack = time.monotonic()
            if sub is not None:
                got = sub.packets(0)
                if got:
                    acks = []
                    for ptype, flags, body in got:
                        if ptype != PUBLISH:
                            raise ProtocolError("tp-sub: unexpected %s" % NAMES.get(ptype, ptype))
                        tlen = struct.unpack_from("!H", body)[0]
                        acks.append(b"\x40\x02" + body[2 + tlen:4 + tlen])
                        copies += 1
                        if flags & 0x08:
                            dup_flagged += 1
                        try:
                            s = int(body[4 + tlen:4 + tlen + 12].split(b" ", 1)[0])
                        except ValueError:
                            s = 0
                        if not 1 <= s <= n:
                            if len(bad) < 3:
                                bad.append("payload %r" % body[4 + tlen:4 + tlen + 20])
                            continue
                        if not seen[s]:
                            delivered += 1
                        if seen[s] < 255:
                            seen[s] += 1
                    sub.send(b"".join(acks))
                    t_last_delivery = time.monotonic()
        t_end = t_last_delivery if sub is not None else t_last_ack
        done = delivered if sub is not None else acked
        res["complete"] = acked >= n and (sub is None or delivered >= n)
        res["sent"] = next_seq - 1
        res["acked"] = acked
        res["delivered"] = delivered if sub is not None else None
        res["duplicates"] = copies - delivered if sub is not None else None
        res["dup_flagged"] = dup_flagged
        res["bad"] = bad
        res["seconds"] = t_end - t_first
        res["rate"] = done / res["seconds"] if done and res["seconds"] > 0 else 0.0
        res["broker_cpu_s"] = cpu_s(b.pid) - cpu0
        res["client_cpu_s"] = time.process_time() - client_cpu0
        res["rss_kb"] = vmrss_kb(b.pid)
        res["db_bytes_live"] = file_size(db) + file_size(db + "-wal") if db else None
        pub.disconnect()
        pub = None
        if sub is not None:
            sub.disconnect()
            sub = None
        status, stop_ms = terminate(b)
        res["exit_status"] = status
        res["stop_ms"] = stop_ms
        if db:
            res["db_bytes"] = file_size(db)
            res["db_wal_bytes"] = file_size(db + "-wal")
        return res
    finally:
        for c in (pub, sub):
            if c is not None:
                c.close()
        if b.proc.poll() is None or b.proc in STARTED:
            stop_process(b.proc)


def cpu_s(pid):
    """User plus system CPU seconds of process `pid` (all its threads) so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median(values):
    v = sorted(values)
    if not v:
        return 0.0
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2


def throughput(args):
    problems = []
    out("messages", args.messages)
    out("rounds", args.rounds)
    out("window", args.window)
    out("payload_bytes", TP_PAYLOAD)
    runs_total = len(TP_WORKLOADS) * args.rounds * 2
    t_start = time.monotonic()
    budget_end = t_start + args.budget
    runs_left = runs_total
    results = {w: [] for w in TP_WORKLOADS}
    for workload in TP_WORKLOADS:
        for r in range(args.rounds):
            for with_db in ((False, True) if r % 2 == 0 else (True, False)):
                now = time.monotonic()
                # An equal share of what is left of the budget, 3 s of it for starting
                # and stopping the broker; never more than --seconds.
                share = (budget_end - now) / max(1, runs_left) - 3.0
                seconds = max(2.0, min(args.seconds, share))
                tag = "%s-%d" % (workload, r)
                res = tp_run(args, workload, with_db, tag, time.monotonic() + seconds)
                runs_left -= 1
                results[workload].append(res)
                print("run workload=%s round=%d db=%s complete=%s bound_s=%.1f sent=%d acked=%d "
                      "delivered=%s "
                      "duplicates=%s seconds=%.2f rate=%.0f broker_cpu_s=%.2f client_cpu_s=%.2f "
                      "rss_kb=%d stop_ms=%.0f exit=%s%s"
                      % (workload, r, "yes" if with_db else "no",
                         "yes" if res["complete"] else "no", seconds,
                         res["sent"], res["acked"],
                         "-" if res["delivered"] is None else res["delivered"],
                         "-" if res["duplicates"] is None else res["duplicates"],
                         res["seconds"], res["rate"], res["broker_cpu_s"], res["client_cpu_s"],
                         res["rss_kb"], res["stop_ms"],
                         res["exit_status"],
                         " db_bytes_live=%d db_bytes=%d db_wal_bytes=%d"
                         % (res["db_bytes_live"], res["db_bytes"], res["db_wal_bytes"])
                         if with_db else ""), flush=True)
                if not res["complete"]:
                    problems.append("%s round %d %s: %d of %d through in %.0f s (rate from those)"
                                    % (workload, r, "db" if with_db else "memory",
                                       res["delivered"] if res["delivered"] is not None
                                       else res["acked"], args.messages, seconds))
                if res["exit_status"] != 0:
                    problems.append("%s round %d %s: exit status %s on SIGTERM"
                                    % (workload, r, "db" if with_db else "memory",
                                       res["exit_status"]))
                if res["duplicates"]:
                    problems.append("%s round %d %s: %d duplicate deliveries"
                                    % (workload, r, "db" if with_db else "memory",
                                       res["duplicates"]))
                for why in res["bad"]:
                    problems.append("%s round %d: %s" % (workload, r, why))
    summary = []
    for workload in TP_WORKLOADS:
        rs = results[workload]
        mem = median([x["rate"] for x in rs if not x["db"]])
        db = median([x["rate"] for x in rs if x["db"]])
        ratio = db / mem if mem else 0.0
        sizes = [x["db_bytes"] + x["db_wal_bytes"] for x in rs if x["db"]]
        stops = [x["stop_ms"] for x in rs if x["db"]]
        # The broker's CPU (writer thread included) per message: the rate above is also
        # the client's, which may be the slower of the two.
        us = {d: median([x["broker_cpu_s"] * 1e6 / max(1, x["acked"]) for x in rs
                         if x["db"] == d]) for d in (False, True)}
        out("%s_rate_memory_median" % workload, "%.0f" % mem)
        out("%s_rate_db_median" % workload, "%.0f" % db)
        out("%s_ratio_db_to_memory" % workload, "%.2f" % ratio)
        out("%s_db_bytes_at_end" % workload, ",".join(str(x) for x in sizes))
        out("%s_db_stop_ms" % workload, ",".join("%.0f" % x for x in stops))
        out("%s_broker_cpu_us_per_message_memory_median" % workload, "%.2f" % us[False])
        out("%s_broker_cpu_us_per_message_db_median" % workload, "%.2f" % us[True])
        summary.append("%s %.0f/s without db, %.0f/s with (x%.2f, %.1f MB; broker CPU %.1f -> "
                       "%.1f us/message)"
                       % (workload, mem, db, ratio, median(sizes) / 1e6, us[False], us[True]))
    text = log_since(os.path.join(args.workdir, "aviaryd.log"), 0)
    lines = [l for l in text.splitlines()
             if "database" in l and ("[warning]" in l or "[error]" in l)]
    out("broker_database_warnings", len(lines))
    for l in lines[:10]:
        out("broker_database_warning", l)
    report_log(args, problems)
    for p in problems:
        out("problem", p)
    out("total_s", "%.0f" % (time.monotonic() - t_start))
    print("# throughput: %d QoS 1 messages of %d bytes, window %d, %d rounds (medians): %s; "
          "%d database warnings: %s"
          % (args.messages, TP_PAYLOAD, args.window, args.rounds, "; ".join(summary), len(lines),
             "ran through" if not problems else "NOT all through"), flush=True)
    return 0 if not problems else 1


# --------------------------------------------------------------------------

def on_signal(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--aviaryd", default=os.path.join(here, "..", "aviaryd"),
                    help="the broker binary (copied first; default ./aviaryd)")
    ap.add_argument("--dir", default=None, help="where the temporary directory goes")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--max-inflight", type=int, default=100,
                    help="the broker's --max-inflight (default 100)")
    sp = ap.add_subparsers(dest="command", required=True)
    p = sp.add_parser("crash-loop", help="SIGKILL while publishing, then read the queue")
    p.add_argument("--cycles", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--window", type=int, default=10, help="QoS 1 PUBLISHes in flight")
    p.add_argument("--rate", type=float, default=20000,
                   help="messages per second at most (0: as fast as the window goes)")
    p.add_argument("--silence", type=float, default=3.0,
                   help="the final read ends after this long without a message")
    p.add_argument("--drain-seconds", type=float, default=120.0)
    p.add_argument("--lost-window-bound", type=float, default=100.0,
                   help="ms: a lost message acked longer before its kill is a failure")
    p = sp.add_parser("sigterm-stream", help="SIGTERM half-way through a QoS 1 stream")
    p.add_argument("--messages", type=int, default=10000)
    p.add_argument("--window", type=int, default=20, help="QoS 1 PUBLISHes in flight")
    p.add_argument("--seconds", type=float, default=60.0, help="bound of each half")
    p = sp.add_parser("restart-time", help="stop and start with many retained messages "
                      "and sessions")
    p.add_argument("--retained", type=int, default=100000)
    p.add_argument("--sessions", type=int, default=10000)
    p.add_argument("--parallel", type=int, default=8, help="connections making sessions")
    p.add_argument("--seconds", type=float, default=120.0, help="bound of each step")
    p = sp.add_parser("throughput", help="QoS 1 messages per second with and without --db")
    p.add_argument("--messages", type=int, default=200000, help="per run")
    p.add_argument("--rounds", type=int, default=3, help="pairs of runs per workload")
    p.add_argument("--window", type=int, default=100, help="QoS 1 PUBLISHes in flight")
    p.add_argument("--seconds", type=float, default=45.0, help="bound of each run")
    p.add_argument("--budget", type=float, default=330.0,
                   help="bound of all runs together: each gets its share of what is left")
    args = ap.parse_args()
    if getattr(args, "window", 1) < 1 or args.max_inflight < 1:
        ap.error("--window and --max-inflight must be at least 1")
    if args.command == "sigterm-stream" and args.messages < 2:
        ap.error("--messages must be at least 2")
    if args.command == "throughput" and (args.messages < 1 or args.rounds < 1):
        ap.error("--messages and --rounds must be at least 1")

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    atexit.register(stop_all)
    args.workdir = tempfile.mkdtemp(prefix="durability-", dir=args.dir)
    try:
        args.binary, version = copy_aviaryd(args.aviaryd, args.workdir)
        out("aviaryd", "%s (%s)" % (os.path.abspath(args.aviaryd), version))
        run = {"crash-loop": crash_loop, "sigterm-stream": sigterm_stream,
               "restart-time": restart_time, "throughput": throughput}[args.command]
        return run(args)
    except (CouldNotRun, ProtocolError, Closed, OSError) as e:
        print("durability: %s: could not run: %s" % (args.command, e), file=sys.stderr)
        tail = log_tail(os.path.join(args.workdir, "aviaryd.log"))
        if tail:
            print("the end of the broker's log:\n%s" % tail, file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print("durability: interrupted (%s)" % (e or "SIGINT"), file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_all()
        if args.keep:
            print("kept %s" % args.workdir, file=sys.stderr)
        else:
            shutil.rmtree(args.workdir, True)


if __name__ == "__main__":
    sys.exit(main())
