"""aviary_test -- helpers for aviary's integration tests.

The tests drive the real daemon ($AVIARYD, built by `make`) over real sockets
on 127.0.0.1 with three kinds of client: raw sockets speaking bytes built by
hand (RawClient), paho-mqtt 1.6.1 (PahoClient) and the mosquitto command-line
clients (spawn/run).

A test file defines functions named test_*, optionally setup_module() and
teardown_module(), and ends with `run_tests(globals())`. The output is TAP,
read by automake's tap-driver.sh: `ok N - name`, `not ok N - name` followed
by the reason as `# ` lines, or `ok N - name # SKIP reason`, then the plan
`1..N`; the file exits 1 when a test failed, 0 otherwise.

Every daemon and client process a test starts is registered here and killed
at exit, on SIGTERM/SIGHUP and on a per-test timeout, so a failing or killed
test never leaves an aviaryd behind. Every wait is bounded in time.

Only the Python standard library and paho-mqtt (Debian's python3-paho-mqtt,
for /usr/bin/python3) are used.
"""

import atexit
import os
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
import traceback

try:
    import paho.mqtt.client as mqtt
except ImportError:  # reported by run_tests(), which needs it
    mqtt = None

HOST = "127.0.0.1"
EXIT_SKIP = 77
EXIT_HARD_ERROR = 99

# Longest a single test may take, and the whole file (seconds).
TEST_TIMEOUT = float(os.environ.get("AVIARY_TEST_TIMEOUT", "90"))
FILE_TIMEOUT = float(os.environ.get("AVIARY_FILE_TIMEOUT", "300"))

LISTEN_RE = re.compile(r"^listening on (tcp|ws|wss|ssl|tls|mqtt|mqtts|http|https)://(\S+):(\d+)\S*\s*$")

# MQTT control packet types.
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14

TYPE_NAMES = {
    0: "RESERVED0", 1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC",
    6: "PUBREL", 7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE",
    11: "UNSUBACK", 12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT", 15: "AUTH",
}


class TestFailure(AssertionError):
    """A check failed; the message says what was expected and what happened."""


class Skip(Exception):
    """The test cannot run here (a tool is missing, a port is taken...)."""


def missing(what):
    """Skip the current test because `what` (a package the tests use) is not installed;
    with AVIARY_TEST_NO_MISSING=1 (CI, which installs every package) fail it instead, so
    that a failed installation cannot pass as skipped tests."""
    if os.environ.get("AVIARY_TEST_NO_MISSING", "") not in ("", "0"):
        raise TestFailure("%s (AVIARY_TEST_NO_MISSING is set)" % what)
    raise Skip(what)


class TestTimeout(Exception):
    """The test ran longer than TEST_TIMEOUT."""


def check(cond, message):
    """Fail the current test with `message` unless `cond` holds."""
    if not cond:
        raise TestFailure(message)


def check_equal(actual, expected, what):
    if actual != expected:
        raise TestFailure("%s: expected %r, got %r" % (what, expected, actual))


# ---------------------------------------------------------------------------
# Process bookkeeping: everything started here is stopped at exit.

_children = {}  # id(obj) -> obj with a .kill_now() method
_children_lock = threading.Lock()


def _register(obj):
    with _children_lock:
        _children[id(obj)] = obj


def _unregister(obj):
    with _children_lock:
        _children.pop(id(obj), None)


def cleanup_all(keep=()):
    """Kill every daemon and client process still registered (by its PID),
    except those whose registration keys are in `keep`."""
    with _children_lock:
        objs = [o for k, o in _children.items() if k not in keep]
        for k in list(_children):
            if k not in keep:
                del _children[k]
    for obj in objs:
        try:
            obj.kill_now()
        except Exception:  # best effort at exit; keep going for the others
            pass


def _fatal_signal(signum, frame):
    cleanup_all()
    sys.stdout.flush()
    os._exit(128 + signum)


atexit.register(cleanup_all)
for _sig in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(_sig, _fatal_signal)


def _kill_popen(proc, grace=0.0):
    """Stop one Popen we started: SIGTERM (when grace > 0), then SIGKILL."""
    if proc.poll() is not None:
        return
    if grace > 0:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(grace)
            return
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
    try:
        proc.kill()
        proc.wait(5)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        pass


# ---------------------------------------------------------------------------
# Small utilities

_unique_counter = [0]


def unique(prefix="t"):
    """A short name unique in this process: for client ids and topics."""
    _unique_counter[0] += 1
    return "%s%d-%d" % (prefix, os.getpid() % 100000, _unique_counter[0])


def wait_for(predicate, timeout=5.0, interval=0.05, what="a condition"):
    """Poll `predicate` until it returns a true value (returned) or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TestFailure("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def aviaryd_path():
    path = os.environ.get("AVIARYD", "")
    if not path:
        raise TestFailure("AVIARYD is not set (run the tests with `make check`)")
    if not os.access(path, os.X_OK):
        raise TestFailure("AVIARYD=%s is not an executable file (run `make` first)" % path)
    return path


def aviaryctl_path():
    path = os.environ.get("AVIARYCTL", "")
    if not path:
        raise TestFailure("AVIARYCTL is not set (run the tests with `make check`)")
    if not os.access(path, os.X_OK):
        raise TestFailure("AVIARYCTL=%s is not an executable file (run `make` first)" % path)
    return path


def aviaryctl(db, *args, timeout=10.0):
    """Run `aviaryctl --db DB ARGS...`; returns (exit status, stdout, stderr) as text."""
    r = run([aviaryctl_path(), "--db", db] + [str(a) for a in args], timeout=timeout)
    return (r.returncode, r.stdout.decode("utf-8", "replace"),
            r.stderr.decode("utf-8", "replace"))


def cloud_db():
    """The path of a new, empty database for a cloud-mode broker (removed at exit)."""
    d = tempfile.mkdtemp(prefix="aviary-cloud-")
    atexit.register(shutil.rmtree, d, True)
    return os.path.join(d, "aviary.db")


def ctl(db, *args):
    """Run aviaryctl on `db`, fail the test unless it succeeds; returns its stdout."""
    rc, out, err = aviaryctl(db, *args)
    check(rc == 0, "aviaryctl %s failed with %d: %s" % (" ".join(args), rc, err.strip()))
    return out


def new_token(db, instance, *args):
    """A new token of `instance` (aviaryctl token create ARGS): returns (id, secret)."""
    import json
    tok = json.loads(ctl(db, "--json", "token", "create", instance, *args))
    return tok["id"], tok["secret"]


def source_dir():
    """The project's source directory (tests/integration/../..)."""
    here = os.environ.get("TESTS_DIR") or os.path.dirname(os.path.abspath(__file__))
    return os.path.abspath(os.path.join(here, "..", ".."))


def require_tool(name):
    """Skip the current test unless the program `name` is on PATH; return its path."""
    path = shutil.which(name)
    if path is None:
        missing("%s is not installed (Debian: mosquitto-clients)" % name)
    return path


def port_is_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def sanitizer_report(text):
    """The first line of a sanitizer report in `text`, or None."""
    for line in text.splitlines():
        if ("ERROR: AddressSanitizer" in line or "ERROR: LeakSanitizer" in line
                or "runtime error:" in line or "WARNING: ThreadSanitizer" in line):
            return line.strip()
    return None


# ---------------------------------------------------------------------------
# The daemon

class Broker:
    """Run one aviaryd for the duration of a `with` block.

    Starts `$AVIARYD --listen tcp://127.0.0.1:0 --log-level debug *extra_args`
    (stderr to a log file in a temporary directory, stdout read for the
    `listening on ...` lines) and waits up to `start_timeout` seconds for the
    TCP listener. On exit it sends SIGTERM, waits 5 s, then SIGKILL, and fails
    the test if the daemon died during the test, did not stop on SIGTERM,
    exited non-zero, or a sanitizer reported an error.

    listen=None starts it without --listen (the desktop defaults). `prefix` is
    a command that runs it (e.g. ["prlimit", "--nofile=256:256", "--"]), which
    must exec aviaryd so that the PID stays the broker's.
    """

    def __init__(self, *extra_args, listen="tcp://%s:0" % HOST, log_level="debug",
                 start_timeout=10.0, prefix=()):
        self.prefix = list(prefix)
        self.extra_args = [str(a) for a in extra_args]
        self.listen = listen
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.proc = None
        self.dir = None
        self.log_path = None
        self.listeners = []     # (scheme, host, port) in the order printed
        self.stdout_lines = []  # every line the daemon printed on stdout
        self.port = None
        self.exit_status = None
        self.problems = []
        self._stdout_buf = b""
        self._stdout_thread = None
        self._log_file = None
        self._stopped = False

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def argv(self):
        args = self.prefix + [aviaryd_path()]
        if self.listen is not None:
            args += ["--listen", self.listen]
        if self.log_level is not None:
            args += ["--log-level", self.log_level]
        return args + self.extra_args

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="aviary-test-")
        self.log_path = os.path.join(self.dir, "aviaryd.log")
        self._log_file = open(self.log_path, "wb")
        argv = self.argv()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._log_file, cwd=self.dir)
        _register(self)
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + self.start_timeout
        while self.port is None:
            left = deadline - time.monotonic()
            if left <= 0:
                self._start_failed("no `listening on tcp://%s:PORT` line on stdout within %.0f s"
                                   % (HOST, self.start_timeout), argv)
            ready, _, _ = select.select([fd], [], [], min(left, 0.2))
            if not ready:
                if self.proc.poll() is not None:
                    self._start_failed("aviaryd exited with status %s before listening"
                                       % self.proc.returncode, argv)
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                self.proc.wait(2)
                self._start_failed("aviaryd closed stdout (exit status %s) before listening"
                                   % self.proc.returncode, argv)
            self._take_stdout(chunk)
        self._stdout_thread = threading.Thread(target=self._drain_stdout, daemon=True)
        self._stdout_thread.start()
        return self

    def _take_stdout(self, chunk):
        self._stdout_buf += chunk
        while b"\n" in self._stdout_buf:
            raw, self._stdout_buf = self._stdout_buf.split(b"\n", 1)
            line = raw.decode("utf-8", "replace").rstrip("\r")
            self.stdout_lines.append(line)
            m = LISTEN_RE.match(line)
            if m:
                self.listeners.append((m.group(1), m.group(2), int(m.group(3))))
                if self.port is None and m.group(1) == "tcp":
                    self.port = int(m.group(3))

    def _drain_stdout(self):
        fd = self.proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            self._take_stdout(chunk)

    def _start_failed(self, reason, argv):
        self.kill_now()
        self._close_log()
        raise TestFailure("%s\n  command: %s\n  stdout: %r\n%s"
                          % (reason, " ".join(argv), self.stdout_lines + [self._stdout_buf],
                             self.log_tail()))

    def sanitized(self):
        """True when this aviaryd runs under AddressSanitizer, whose quarantine keeps
        freed memory resident: resident-memory bounds do not apply to it."""
        try:
            with open("/proc/%d/maps" % self.pid) as f:
                return any("asan" in line for line in f)
        except OSError:
            return False

    def tcp_ports(self):
        return [p for (scheme, _, p) in self.listeners if scheme == "tcp"]

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self):
        if not self.alive():
            raise TestFailure("aviaryd is no longer running (exit status %s)\n%s"
                              % (self.proc.returncode, self.log_tail()))

    def log_text(self, since=0):
        """The daemon's stderr so far (from byte offset `since`)."""
        if self._log_file is not None:
            try:
                self._log_file.flush()
            except ValueError:
                pass
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_mark(self):
        """An offset for log_text(since=...): only what is logged from now on."""
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def wait_log(self, pattern, since=0, timeout=5.0, flags=re.I):
        """Wait until the log (from `since`) matches the regular expression `pattern`."""
        rx = re.compile(pattern, flags)
        return wait_for(lambda: rx.search(self.log_text(since)), timeout,
                        what="a log line matching /%s/" % pattern)

    def log_tail(self, lines=60):
        text = self.log_text() if self.log_path else ""
        tail = text.splitlines()[-lines:]
        return "  --- aviaryd log (%s), last %d lines ---\n%s\n  --- end of log ---" % (
            self.log_path, len(tail), "\n".join("  | " + l for l in tail))

    def send_signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def kill_now(self):
        """Emergency stop (at exit or on a signal): by PID, SIGTERM then SIGKILL."""
        if self.proc is not None:
            _kill_popen(self.proc, grace=2.0)
        _unregister(self)

    def terminate(self, timeout=5.0):
        """Send SIGTERM now and wait up to `timeout` s for the exit.

        Returns (exit status, seconds it took); the status is None when the
        daemon had to be killed. The `with` block then does not stop it again.
        """
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
            rc = self.proc.returncode
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            rc = None
        elapsed = time.monotonic() - t0
        self._finish()
        return rc, elapsed

    def stop(self, timeout=5.0):
        """SIGTERM, wait `timeout` s, SIGKILL. Records problems; returns the exit status."""
        if self._stopped:
            return self.exit_status
        if self.proc.poll() is not None:
            self.problems.append("aviaryd died during the test (exit status %s)"
                                 % self.proc.returncode)
        else:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.problems.append("aviaryd did not exit within %.0f s of SIGTERM" % timeout)
                self.proc.kill()
                self.proc.wait(5)
            else:
                if self.proc.returncode != 0:
                    self.problems.append("aviaryd exited with status %s after SIGTERM"
                                         % self.proc.returncode)
        self._finish()
        return self.exit_status

    def _finish(self):
        self._stopped = True
        self.exit_status = self.proc.returncode
        _unregister(self)
        if self._stdout_thread is not None:
            self._stdout_thread.join(2)
        self._close_log()
        report = sanitizer_report(self.log_text())
        if report:
            self.problems.append("sanitizer report in the log: " + report)

    def _close_log(self):
        if self._log_file is not None:
            try:
                self._log_file.close()
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        self.stop()
        failure = None
        if exc_type is None and self.problems:
            failure = TestFailure("; ".join(self.problems) + "\n" + self.log_tail())
        if exc_type is not None:
            for p in self.problems:
                print("  also: " + p, flush=True)
            print(self.log_tail(), flush=True)
        if os.environ.get("AVIARY_KEEP_TMP"):
            print("  (temporary directory kept: %s)" % self.dir, flush=True)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        if failure is not None:
            raise failure
        return False


# ---------------------------------------------------------------------------
# Building packets by hand (MQTT 3.1 / 3.1.1)

def varint(n):
    """The variable byte integer encoding of `n` (remaining length)."""
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def u16(n):
    return struct.pack(">H", n)


def to_bytes(s):
    return s.encode("utf-8") if isinstance(s, str) else bytes(s)


def mqtt_string(s):
    b = to_bytes(s)
    return u16(len(b)) + b


def packet(ptype, flags, body):
    """A whole control packet: fixed header (type, flags, remaining length) + body."""
    body = to_bytes(body)
    return bytes([(ptype << 4) | flags]) + varint(len(body)) + body


def connect_packet(client_id="", clean=True, keepalive=60, version=4, will=None,
                   username=None, password=None, reserved=False, protocol_name=None):
    """CONNECT. version 3 = MQTT 3.1 (MQIsdp), 4 = MQTT 3.1.1 (MQTT).

    will: dict(topic=, payload=, qos=0, retain=False).
    """
    if protocol_name is None:
        protocol_name = "MQIsdp" if version == 3 else "MQTT"
    flags = 0
    if reserved:
        flags |= 0x01
    if clean:
        flags |= 0x02
    payload = mqtt_string(client_id)
    if will is not None:
        flags |= 0x04 | ((will.get("qos", 0) & 3) << 3)
        if will.get("retain"):
            flags |= 0x20
        payload += mqtt_string(will["topic"]) + mqtt_string(will.get("payload", b""))
    if username is not None:
        flags |= 0x80
        payload += mqtt_string(username)
    if password is not None:
        flags |= 0x40
        payload += mqtt_string(password)
    body = mqtt_string(protocol_name) + bytes([version, flags]) + u16(keepalive) + payload
    return packet(CONNECT, 0, body)


def publish_packet(topic, payload=b"", qos=0, retain=False, dup=False, pid=None):
    flags = (qos & 3) << 1
    if retain:
        flags |= 0x01
    if dup:
        flags |= 0x08
    body = mqtt_string(topic)
    if qos > 0:
        body += u16(1 if pid is None else pid)
    return packet(PUBLISH, flags, body + to_bytes(payload))


def subscribe_packet(pid, filters, flags=0x02):
    """SUBSCRIBE; filters = [(filter, qos), ...]."""
    body = u16(pid) + b"".join(mqtt_string(f) + bytes([q]) for f, q in filters)
    return packet(SUBSCRIBE, flags, body)


def unsubscribe_packet(pid, filters, flags=0x02):
    return packet(UNSUBSCRIBE, flags, u16(pid) + b"".join(mqtt_string(f) for f in filters))


def puback_packet(pid):
    return packet(PUBACK, 0, u16(pid))


def pubrec_packet(pid):
    return packet(PUBREC, 0, u16(pid))


def pubrel_packet(pid):
    return packet(PUBREL, 0x02, u16(pid))


def pubcomp_packet(pid):
    return packet(PUBCOMP, 0, u16(pid))


PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"


# ---------------------------------------------------------------------------
# Reading packets

class Packet:
    """One received control packet."""

    def __init__(self, first_byte, body):
        self.type = first_byte >> 4
        self.flags = first_byte & 0x0F
        self.body = bytes(body)

    @property
    def name(self):
        return TYPE_NAMES.get(self.type, str(self.type))

    def pid(self):
        """The packet identifier of an ack/SUBACK/UNSUBACK (first two body bytes)."""
        return struct.unpack(">H", self.body[:2])[0]

    def __repr__(self):
        return "<%s flags=0x%x body=%s>" % (self.name, self.flags, self.body[:40].hex())


class Publish:
    """A decoded PUBLISH."""

    def __init__(self, pkt):
        if pkt.type != PUBLISH:
            raise TestFailure("expected a PUBLISH, got %r" % pkt)
        self.qos = (pkt.flags >> 1) & 3
        self.dup = bool(pkt.flags & 0x08)
        self.retain = bool(pkt.flags & 0x01)
        b = pkt.body
        n = struct.unpack(">H", b[:2])[0]
        self.topic = b[2:2 + n].decode("utf-8", "replace")
        pos = 2 + n
        self.pid = None
        if self.qos > 0:
            self.pid = struct.unpack(">H", b[pos:pos + 2])[0]
            pos += 2
        self.payload = b[pos:]

    def __repr__(self):
        return "<PUBLISH topic=%r qos=%d dup=%d retain=%d pid=%s payload=%r>" % (
            self.topic, self.qos, self.dup, self.retain, self.pid, self.payload[:40])


class Closed(Exception):
    """The broker closed the connection."""


class Timeout(Exception):
    """Nothing arrived in time."""


class RawClient:
    """A TCP connection to the broker with MQTT packets built and parsed by hand.

    Packets that arrive while waiting for another kind are kept in order in
    `pending` and returned by later reads.
    """

    def __init__(self, port, timeout=5.0):
        self.port = port
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pending = []
        self.eof = False
        self.next_pid = 1
        self.version = 4

    # -- bytes
    def send(self, data):
        self.sock.sendall(to_bytes(data))

    def try_send(self, data):
        """Send, but tolerate a connection the broker already closed; returns success."""
        try:
            self.sock.sendall(to_bytes(data))
            return True
        except OSError:
            return False

    def _fill(self, deadline):
        """Read more bytes into buf. False on EOF (or reset); raises Timeout."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout()
        ready, _, _ = select.select([self.sock], [], [], left)
        if not ready:
            raise Timeout()
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _parse_one(self):
        """A whole packet from buf, or None if more bytes are needed."""
        if len(self.buf) < 2:
            return None
        n, mult, i = 0, 1, 1
        while True:
            if i >= len(self.buf):
                return None
            b = self.buf[i]
            n += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
            if i > 4:
                raise TestFailure("the broker sent a remaining length longer than 4 bytes: %s"
                                  % self.buf[:8].hex())
        if len(self.buf) < i + n:
            return None
        pkt = Packet(self.buf[0], self.buf[i:i + n])
        del self.buf[:i + n]
        return pkt

    def read_packet(self, timeout=5.0):
        """The next packet. Raises Closed at end of stream, Timeout after `timeout` s."""
        if self.pending:
            return self.pending.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            pkt = self._parse_one()
            if pkt is not None:
                return pkt
            if not self._fill(deadline):
                if self.buf:
                    raise Closed("connection closed inside a packet (%s)" % self.buf[:16].hex())
                raise Closed("connection closed")

    def expect(self, ptype, timeout=5.0, pid=None, what=None):
        """Wait for a packet of `ptype` (and packet id `pid`); others are kept for later."""
        deadline = time.monotonic() + timeout
        skipped = []
        try:
            while True:
                if self.pending:
                    pkt = self.pending.pop(0)
                else:
                    pkt = self._read_wire(max(deadline - time.monotonic(), 0.0))
                if pkt.type == ptype and (pid is None or pkt.pid() == pid):
                    return pkt
                skipped.append(pkt)
        except Timeout:
            raise TestFailure("no %s%s within %.1f s%s (other packets: %r)" % (
                TYPE_NAMES[ptype], "" if pid is None else " for packet id %d" % pid, timeout,
                " (" + what + ")" if what else "", skipped))
        except Closed as e:
            raise TestFailure("connection closed while waiting for %s%s: %s (other packets: %r)"
                              % (TYPE_NAMES[ptype], " (" + what + ")" if what else "", e,
                                 skipped))
        finally:
            self.pending = skipped + self.pending

    def _read_wire(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            pkt = self._parse_one()
            if pkt is not None:
                return pkt
            if not self._fill(deadline):
                raise Closed("connection closed")

    def expect_closed(self, timeout=5.0, what="the broker to close the connection"):
        """Wait for end of stream; returns the packets that came before it."""
        got = list(self.pending)
        self.pending = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                got.append(self._read_wire(max(deadline - time.monotonic(), 0.0)))
        except Closed:
            return got
        except Timeout:
            raise TestFailure("timed out after %.1f s waiting for %s (connection still open; "
                              "received %r)" % (timeout, what, got))

    def expect_silence(self, duration=1.0, what=""):
        """Nothing arrives (and the connection stays open) for `duration` s."""
        if self.pending:
            raise TestFailure("unexpected packets %s: %r" % (what, self.pending))
        try:
            pkt = self._read_wire(duration)
        except Timeout:
            return
        except Closed:
            raise TestFailure("connection closed unexpectedly %s" % what)
        raise TestFailure("unexpected packet %s: %r" % (what, pkt))

    def is_closed(self, timeout=0.2):
        try:
            pkt = self._read_wire(timeout)
        except Closed:
            return True
        except Timeout:
            return False
        self.pending.append(pkt)
        return False

    # -- MQTT conversations
    def connect(self, client_id="", clean=True, keepalive=60, version=4, will=None,
                username=None, password=None, expect_rc=0, timeout=5.0):
        """Send CONNECT, wait for CONNACK; check its return code. Returns session present."""
        self.version = version
        self.send(connect_packet(client_id, clean, keepalive, version, will, username, password))
        pkt = self.expect(CONNACK, timeout)
        check(len(pkt.body) == 2, "CONNACK body should be 2 bytes, got %r" % pkt)
        rc = pkt.body[1]
        if expect_rc is not None:
            check_equal(rc, expect_rc, "CONNACK return code for client id %r" % client_id)
        self.connack_rc = rc
        return bool(pkt.body[0] & 0x01)

    def alloc_pid(self):
        pid = self.next_pid
        self.next_pid = pid % 65535 + 1
        return pid

    def subscribe(self, filters, timeout=5.0):
        """filters: [(filter, qos)] or a single filter string (QoS 0). Returns SUBACK codes."""
        if isinstance(filters, str):
            filters = [(filters, 0)]
        pid = self.alloc_pid()
        self.send(subscribe_packet(pid, filters))
        pkt = self.expect(SUBACK, timeout, pid=pid, what="SUBSCRIBE %r" % (filters,))
        return list(pkt.body[2:])

    def unsubscribe(self, filters, timeout=5.0):
        if isinstance(filters, str):
            filters = [filters]
        pid = self.alloc_pid()
        self.send(unsubscribe_packet(pid, filters))
        self.expect(UNSUBACK, timeout, pid=pid)

    def publish(self, topic, payload=b"", qos=0, retain=False, pid=None, timeout=5.0):
        """Publish and complete the QoS handshake (PUBACK, or PUBREC/PUBREL/PUBCOMP)."""
        if qos > 0 and pid is None:
            pid = self.alloc_pid()
        self.send(publish_packet(topic, payload, qos, retain, pid=pid))
        if qos == 1:
            self.expect(PUBACK, timeout, pid=pid, what="PUBLISH %r" % topic)
        elif qos == 2:
            self.expect(PUBREC, timeout, pid=pid, what="PUBLISH %r" % topic)
            self.send(pubrel_packet(pid))
            self.expect(PUBCOMP, timeout, pid=pid, what="PUBREL %d" % pid)
        return pid

    def receive(self, timeout=5.0, ack=True, what="a PUBLISH"):
        """The next PUBLISH; with ack=True answer it (PUBACK, or PUBREC/PUBREL/PUBCOMP)."""
        pub = Publish(self.expect(PUBLISH, timeout, what=what))
        if ack and pub.qos == 1:
            self.send(puback_packet(pub.pid))
        elif ack and pub.qos == 2:
            self.send(pubrec_packet(pub.pid))
            rel = self.expect(PUBREL, timeout, pid=pub.pid, what="after PUBREC %d" % pub.pid)
            check_equal(rel.flags, 0x2, "PUBREL fixed-header flags")
            self.send(pubcomp_packet(pub.pid))
        return pub

    def receive_all(self, count, timeout=5.0, ack=True, what="PUBLISH"):
        return [self.receive(timeout, ack, what="%s %d of %d" % (what, i + 1, count))
                for i in range(count)]

    def ping(self, timeout=5.0):
        """PINGREQ -> PINGRESP: proves the connection is alive and served."""
        self.send(PINGREQ_PACKET)
        pkt = self.expect(PINGRESP, timeout, what="the connection should still be served")
        check_equal(pkt.flags, 0, "PINGRESP flags")

    def disconnect(self):
        self.try_send(DISCONNECT_PACKET)
        self.close()

    def abort(self):
        """Drop the connection without DISCONNECT (RST, like a crashed client)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def raw_connect(port, client_id="", clean=True, keepalive=60, version=4, will=None,
                username=None, password=None):
    """A RawClient whose CONNECT was accepted; returns (client, session_present)."""
    c = RawClient(port)
    try:
        sp = c.connect(client_id, clean, keepalive, version, will, username, password)
    except BaseException:
        c.close()
        raise
    return c, sp


def cloud_login(port, instance, secret, client_id=None, **kw):
    """A RawClient logged in to a cloud broker's `instance` with token `secret` (user name
    and password), its CONNACK checked as RawClient.connect(**kw) says (expect_rc)."""
    c = RawClient(port)
    try:
        c.connect(unique("c") if client_id is None else client_id, username=instance,
                  password=secret, **kw)
    except BaseException:
        c.close()
        raise
    return c


# ---------------------------------------------------------------------------
# paho-mqtt

class Message:
    def __init__(self, msg):
        self.topic = msg.topic
        self.payload = bytes(msg.payload)
        self.qos = msg.qos
        self.retain = bool(msg.retain)
        self.dup = bool(getattr(msg, "dup", False))

    def __repr__(self):
        return "<Message %r %r qos=%d retain=%d>" % (self.topic, self.payload[:40], self.qos,
                                                     self.retain)


class PahoClient:
    """A paho-mqtt client running its network loop in a thread.

    protocol: "3.1.1" (default) or "3.1". Connects in the constructor and
    waits for CONNACK (fails unless accepted, unless expect_rc is given).
    Received messages are collected in order in `messages`. transport
    "websockets" (path ws_path) or "tcp"; tls_ca: a CA file turns on TLS.
    """

    def __init__(self, port, client_id="", clean_session=True, protocol="3.1.1", keepalive=60,
                 will=None, username=None, password=None, timeout=5.0, expect_rc=0,
                 transport="tcp", ws_path="/mqtt", tls_ca=None):
        if mqtt is None:
            raise TestFailure("paho-mqtt is not importable (Debian: python3-paho-mqtt)")
        proto = {"3.1": mqtt.MQTTv31, "3.1.1": mqtt.MQTTv311}[protocol]
        self.client_id = client_id
        self.cond = threading.Condition()
        self.messages = []
        self.connack = None  # (rc, session_present)
        self.suback = {}     # mid -> granted QoS list
        self.disconnected = threading.Event()
        self.disconnect_rc = None
        c = mqtt.Client(client_id=client_id, clean_session=clean_session, protocol=proto,
                        reconnect_on_failure=False, transport=transport)
        if transport == "websockets":
            c.ws_set_options(path=ws_path)
        if tls_ca is not None:
            c.tls_set(ca_certs=tls_ca)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_disconnect = self._on_disconnect
        if will is not None:
            c.will_set(will["topic"], will.get("payload", b""), will.get("qos", 0),
                       will.get("retain", False))
        if username is not None:
            c.username_pw_set(username, password)
        self.c = c
        c.connect(HOST, port, keepalive)
        c.loop_start()
        try:
            wait_for(lambda: self.connack is not None or self.disconnected.is_set(), timeout,
                     what="CONNACK for paho client %r" % client_id)
            if self.connack is None:
                raise TestFailure("paho client %r: connection closed before CONNACK" % client_id)
            if expect_rc is not None:
                check_equal(self.connack[0], expect_rc,
                            "CONNACK return code for paho client %r" % client_id)
        except BaseException:
            self.close()
            raise

    @property
    def session_present(self):
        return bool(self.connack[1])

    def _on_connect(self, client, userdata, flags, rc):
        with self.cond:
            self.connack = (rc, flags.get("session present", 0))
            self.cond.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append(Message(msg))
            self.cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, granted_qos):
        with self.cond:
            self.suback[mid] = list(granted_qos)
            self.cond.notify_all()

    def _on_disconnect(self, client, userdata, rc):
        self.disconnect_rc = rc
        self.disconnected.set()

    def subscribe(self, topic, qos=0, timeout=5.0):
        """Subscribe and wait for SUBACK; returns the granted QoS list."""
        rc, mid = self.c.subscribe(topic, qos)
        check(rc == 0, "paho subscribe(%r) failed locally: rc %d" % (topic, rc))
        wait_for(lambda: mid in self.suback, timeout, what="SUBACK for %r" % (topic,))
        return self.suback[mid]

    def publish(self, topic, payload=b"", qos=0, retain=False, timeout=5.0, **kw):
        """Publish; for QoS 1/2 wait until the handshake with the broker completes.
        Keywords go to paho (MQTT 5: properties=)."""
        info = self.c.publish(topic, payload, qos, retain, **kw)
        check(info.rc == 0, "paho publish(%r) failed locally: rc %d" % (topic, info.rc))
        if qos > 0:
            info.wait_for_publish(timeout)
            check(info.is_published(), "paho: QoS %d publish to %r not acknowledged within "
                  "%.1f s" % (qos, topic, timeout))
        return info

    def wait_messages(self, count, timeout=5.0, topic=None):
        """Wait until `count` messages (on `topic`, if given) arrived; returns all of them."""
        def matching():
            with self.cond:
                return [m for m in self.messages if topic is None or m.topic == topic]
        try:
            wait_for(lambda: len(matching()) >= count, timeout,
                     what="%d message(s)%s" % (count, " on %r" % topic if topic else ""))
        except TestFailure as e:
            raise TestFailure("%s; got %r" % (e, matching()))
        return matching()

    def take_messages(self):
        with self.cond:
            msgs, self.messages = self.messages, []
        return msgs

    def close(self):
        """DISCONNECT (if still connected) and stop the network thread."""
        try:
            if not self.disconnected.is_set():
                self.c.disconnect()
                self.disconnected.wait(3)
        finally:
            self.c.loop_stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def paho_roundtrip(port, topic=None, qos=1, timeout=5.0):
    """A fresh paho client subscribes, publishes to itself and receives it."""
    topic = topic or unique("rt/")
    with PahoClient(port, unique("rt")) as c:
        c.subscribe(topic, qos)
        payload = unique("payload").encode()
        c.publish(topic, payload, qos)
        msgs = c.wait_messages(1, timeout, topic)
        check_equal(msgs[0].payload, payload, "round-trip payload")


# ---------------------------------------------------------------------------
# Child processes (mosquitto clients)

class Proc:
    """A child process whose stdout lines are collected by a thread."""

    def __init__(self, args, stdin=subprocess.DEVNULL, **popen_kw):
        self.args = [str(a) for a in args]
        self.lines = []
        fd, self.stderr_path = tempfile.mkstemp(prefix="aviary-child-")
        self._err = os.fdopen(fd, "wb")
        self.proc = subprocess.Popen(self.args, stdin=stdin, stdout=subprocess.PIPE,
                                     stderr=self._err, **popen_kw)
        _register(self)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    @property
    def pid(self):
        return self.proc.pid

    def _read(self):
        for raw in self.proc.stdout:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def wait_line(self, predicate, timeout=5.0, what="a line"):
        try:
            return wait_for(lambda: next((l for l in list(self.lines) if predicate(l)), None),
                            timeout, what="%s from %s" % (what, self.args[0]))
        except TestFailure as e:
            raise TestFailure("%s; output so far: %r; stderr: %r"
                              % (e, self.lines, self.stderr()))

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait(self, timeout=5.0):
        """Wait for exit (fails after `timeout`); returns the exit status."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TestFailure("%s did not exit within %.1f s; output: %r"
                              % (" ".join(self.args), timeout, self.lines))
        self._thread.join(2)
        return rc

    def kill_now(self):
        _kill_popen(self.proc, grace=0.0)
        self.close()

    def sigkill(self):
        """SIGKILL this child (by its PID) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)

    def close(self):
        _unregister(self)
        if self.proc.poll() is None:
            _kill_popen(self.proc, grace=1.0)
        try:
            self._err.close()
        except OSError:
            pass
        try:
            os.unlink(self.stderr_path)
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def spawn(*args):
    return Proc(args)


def run(args, timeout=10.0, input=None):
    """Run a command to completion (killed after `timeout` s); returns CompletedProcess."""
    try:
        return subprocess.run([str(a) for a in args], input=input, capture_output=True,
                              timeout=timeout, stdin=None if input is not None
                              else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise TestFailure("%s did not finish within %.0f s (stdout %r, stderr %r)"
                          % (" ".join(str(a) for a in args), timeout, e.stdout, e.stderr))


def mosquitto_sub(port, *args, wait_suback=True):
    """Start mosquitto_sub -d against the broker; waits until its SUBACK arrived."""
    exe = require_tool("mosquitto_sub")
    # Its debug lines are block-buffered on a pipe; stdbuf makes them line-buffered.
    stdbuf = shutil.which("stdbuf")
    prefix = [stdbuf, "-oL"] if stdbuf else []
    p = Proc(prefix + [exe, "-h", HOST, "-p", port, "-d"] + [str(a) for a in args])
    if wait_suback:
        try:
            p.wait_line(lambda l: "received SUBACK" in l, 5.0, what="SUBACK")
        except BaseException:
            p.close()
            raise
    return p


def mosquitto_pub(port, *args, timeout=10.0):
    """Run mosquitto_pub to completion; fails unless it exits 0."""
    exe = require_tool("mosquitto_pub")
    r = run([exe, "-h", HOST, "-p", port] + list(args), timeout)
    check(r.returncode == 0, "mosquitto_pub %s exited %d: %s"
          % (" ".join(str(a) for a in args), r.returncode,
             r.stderr.decode("utf-8", "replace").strip()))
    return r


# ---------------------------------------------------------------------------
# The runner

def _on_alarm(signum, frame):
    raise TestTimeout("test took longer than %.0f s" % TEST_TIMEOUT)


def _one_line(exc):
    text = str(exc).strip() or exc.__class__.__name__
    first, _, rest = text.partition("\n")
    return first, rest


def _tap(line):
    """Print one TAP line (a result or the plan) on stdout."""
    print(line, flush=True)


def _diag(text):
    """Print `text` as TAP diagnostics: "# " before each of its lines, so that
    nothing in it (a broker log, a traceback) can be read as a TAP result."""
    for line in str(text).rstrip("\n").split("\n"):
        print(("# " + line).rstrip(), flush=False)
    sys.stdout.flush()


def run_tests(namespace):
    """Run the test_* functions of `namespace` (a module's globals()) in order and exit.

    The output is TAP for automake's tap-driver.sh: `ok N - name (T s)` or
    `not ok N - name` per test, `ok N - name # SKIP reason` for a skipped one,
    the details of a failure as `# ` lines after it, and the plan `1..N` last.
    """
    if mqtt is None:
        _tap("Bail out! paho-mqtt is not importable by %s; install python3-paho-mqtt and "
             "run with Debian's /usr/bin/python3 (configure's PYTHON3)" % sys.executable)
        sys.exit(EXIT_HARD_ERROR)
    tests = [(n, f) for n, f in list(namespace.items())
             if n.startswith("test_") and callable(f)]
    only = os.environ.get("AVIARY_TEST_ONLY")
    if only:
        tests = [(n, f) for n, f in tests if re.search(only, n)]
    signal.signal(signal.SIGALRM, _on_alarm)
    started = time.monotonic()
    passed, failed, skipped = [], [], []
    number = [0]  # the TAP test number of the last result printed

    def result(ok, name, tail=""):
        number[0] += 1
        _tap("%s %d - %s%s" % ("ok" if ok else "not ok", number[0], name, tail))

    def attempt(name, fn):
        t0 = time.monotonic()
        with _children_lock:
            before = set(_children)  # e.g. a broker shared by the whole file
        signal.setitimer(signal.ITIMER_REAL, TEST_TIMEOUT)
        try:
            fn()
        except Skip as e:
            skipped.append(name)
            first, rest = _one_line(e)
            result(True, name, " # SKIP " + first)
            if rest:
                _diag(rest)
            return True
        except BaseException as e:  # report every kind of failure, then go on
            if isinstance(e, KeyboardInterrupt):
                raise
            failed.append(name)
            first, rest = _one_line(e)
            result(False, name)
            _diag(first)
            if rest:
                _diag(rest)
            if not isinstance(e, (TestFailure, TestTimeout)):
                _diag(traceback.format_exc())
            else:
                tb = traceback.extract_tb(e.__traceback__)
                here = [fr for fr in tb if not fr.filename.endswith("aviary_test.py")]
                if here:
                    fr = here[-1]
                    _diag("  at %s:%d: %s" % (os.path.basename(fr.filename), fr.lineno,
                                              fr.line))
            sys.stdout.flush()
            return False
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            cleanup_all(keep=before)
        passed.append(name)
        result(True, name, " (%.1f s)" % (time.monotonic() - t0))
        return True

    setup = namespace.get("setup_module")
    teardown = namespace.get("teardown_module")
    ok = True
    if setup is not None:
        try:
            signal.setitimer(signal.ITIMER_REAL, TEST_TIMEOUT)
            setup()
        except BaseException as e:
            ok = False
            first, rest = _one_line(e)
            for name, _ in tests:
                failed.append(name)
                result(False, name)
                _diag("setup_module failed: %s" % first)
            if rest:
                _diag(rest)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    if ok:
        for name, fn in tests:
            if time.monotonic() - started > FILE_TIMEOUT:
                failed.append(name)
                result(False, name)
                _diag("not run, the file exceeded %.0f s" % FILE_TIMEOUT)
                continue
            attempt(name, fn)
        if teardown is not None:
            attempt("teardown_module", teardown)
    cleanup_all()
    _diag("%d passed, %d failed, %d skipped in %.1f s" % (
        len(passed), len(failed), len(skipped), time.monotonic() - started))
    if number[0]:
        _tap("1..%d" % number[0])
    else:
        _tap("1..0 # SKIP no test_* function%s" % (
            " matches AVIARY_TEST_ONLY=%s" % only if only else ""))
    # A skip is reported in the TAP stream; tap-driver.sh takes every non-zero
    # exit status (77 too) for an error.
    sys.exit(1 if failed else 0)
