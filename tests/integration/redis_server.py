"""A redis-server of the test's own, on a free loopback port, for the cluster tests.

It keeps nothing on disk unless asked (`appendonly=True` writes an append-only
file in its directory, so that a restart keeps its keys), and it is registered
with aviary_test's clean-up, so it is killed by its PID when a test fails.
"""
import os
import shutil
import socket
import subprocess
import tempfile
import time

import aviary_test as at


def redis_server_path():
    path = shutil.which("redis-server")
    if not path:
        raise at.Skip(at.missing("redis-server (apt-get install redis-server)"))
    return path


def free_port():
    with socket.socket() as s:
        s.bind((at.HOST, 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, password=None, appendonly=False, extra_args=()):
        self.password = password
        self.appendonly = appendonly
        self.extra_args = [str(a) for a in extra_args]  # more redis-server options
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="aviary-redis-")
        self.proc = None
        self._log = None

    @property
    def url(self):
        auth = ":%s@" % self.password if self.password else ""
        return "redis://%s%s:%d" % (auth, at.HOST, self.port)

    def start(self, timeout=10.0):
        argv = [redis_server_path(), "--port", str(self.port), "--bind", at.HOST,
                "--save", "", "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "always", "--dir", self.dir, "--daemonize", "no"]
        if self.password:
            argv += ["--requirepass", self.password]
        argv += self.extra_args
        self._log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=self.dir)
        at._register(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise at.TestFailure("redis-server exited with %s: %s"
                                     % (self.proc.returncode, self.log_tail()))
            try:
                if self.cli("PING").strip() == "PONG":
                    return self
            except (OSError, subprocess.SubprocessError):
                pass
            time.sleep(0.05)
        raise at.TestFailure("redis-server did not answer PING within %.0f s" % timeout)

    def cli(self, *args, timeout=10.0):
        """Run one command with redis-cli; returns its output."""
        argv = ["redis-cli", "-h", at.HOST, "-p", str(self.port)]
        if self.password:
            argv += ["--no-auth-warning", "-a", self.password]
        out = subprocess.run(argv + [str(a) for a in args], stdin=subprocess.DEVNULL,
                             capture_output=True, timeout=timeout, check=True)
        return out.stdout.decode()

    def log_tail(self, lines=20):
        try:
            with open(os.path.join(self.dir, "redis.log"), "rb") as f:
                return b"".join(f.readlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def kill_now(self):
        if self.proc and self.proc.poll() is None:
            at._kill_popen(self.proc)

    def stop(self):
        if self.proc:
            at._kill_popen(self.proc, grace=5.0)
            at._unregister(self)
            self.proc = None
        if self._log:
            self._log.close()
            self._log = None

    def restart(self, down_for=0.0):
        """Stop it, wait `down_for` seconds, and start it again on the same port."""
        self.stop()
        time.sleep(down_for)
        return self.start()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
