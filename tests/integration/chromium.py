"""Headless Chromium for the tests: started on a URL, or driven over the
DevTools protocol through a pipe (no WebSocket client needed), and always
killed by its PID with its helper processes, its fresh profile removed.

Nothing it opens leaves 127.0.0.1: no proxy, no QUIC, no background fetches.
"""

import base64
import json
import os
import select
import shutil
import struct
import tempfile
import time
import zlib

from aviary_test import Proc, TestFailure, missing, wait_for

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--no-proxy-server", "--disable-quic", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-breakpad",
         # The page's console messages and errors go to stderr (Proc keeps it).
         "--enable-logging=stderr", "--log-level=0"]


def chromium_path():
    """The Chromium to run ($AVIARY_CHROMIUM, else chromium on PATH), or missing()."""
    exe = os.environ.get("AVIARY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(exe, os.X_OK):
        missing("Chromium is not installed (Debian: chromium); looked for %s" % exe)
    return exe


def _stat(pid):
    """(state, parent PID) of a process from /proc, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1])
    except (OSError, ValueError, IndexError):
        return None


def _running(pid):
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def _descendants(pid):
    """The PIDs of every process below `pid` now (Chromium's helpers)."""
    children = {}
    for name in os.listdir("/proc"):
        st = _stat(int(name)) if name.isdigit() else None
        if st is not None:
            children.setdefault(st[1], []).append(int(name))
    found, unvisited = [], [pid]
    while unvisited:
        for child in children.get(unvisited.pop(), []):
            found.append(child)
            unvisited.append(child)
    return found


class Browser:
    """Headless Chromium run through aviary_test.Proc, so that it is registered
    and killed by its PID at the end of the test or at exit (its helper
    processes go with it), with a fresh profile removed afterwards."""

    def __init__(self, exe, url, *extra, **popen_kw):
        self.profile = tempfile.mkdtemp(prefix="aviary-chromium-")
        self.proc = Proc([exe] + FLAGS + ["--user-data-dir=" + self.profile] + list(extra)
                         + [url], **popen_kw)

    def exited(self):
        return self.proc.proc.poll()

    def log_tail(self, lines=15):
        # D-Bus complaints are expected in a container and say nothing.
        kept = [l for l in self.proc.stderr().splitlines() if "dbus" not in l.lower()]
        return "\n".join("  | " + l for l in kept[-lines:])

    def close(self):
        helpers = _descendants(self.proc.pid)
        self.proc.close()
        # The helpers (network service, zygotes) outlive the browser process by
        # a moment and write to the profile as they go: let them finish first.
        try:
            wait_for(lambda: not any(_running(p) for p in helpers), 5.0,
                     what="Chromium's helper processes to exit")
        except TestFailure:
            pass  # they are on their way out; the profile may be left in /tmp
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class DevTools(Browser):
    """Chromium driven over --remote-debugging-pipe: the protocol's JSON
    messages, each ended by a NUL byte, on the child's descriptors 3 (ours to
    it) and 4 (its to us)."""

    def __init__(self, exe, width=1280, height=900):
        to_child, self._to = os.pipe()
        self._from, from_child = os.pipe()

        def arrange():
            # Onto 3 and 4 by way of high numbers, in case they are 3 or 4 already.
            a, b = os.dup(to_child), os.dup(from_child)
            a, b = os.dup2(a, 100), os.dup2(b, 101)
            os.dup2(a, 3)
            os.dup2(b, 4)

        super().__init__(exe, "about:blank", "--remote-debugging-pipe",
                         "--window-size=%d,%d" % (width, height),
                         preexec_fn=arrange, pass_fds=(3, 4))
        os.close(to_child)
        os.close(from_child)
        self.size = (width, height)
        self._buf = b""
        self._next_id = 0
        self.session = None

    def close(self):
        for fd in (self._to, self._from):
            try:
                os.close(fd)
            except OSError:
                pass
        super().close()

    def _read_message(self, deadline):
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.exited() is not None:
                raise TestFailure("no answer from Chromium (exit status %s)\n%s"
                                  % (self.exited(), self.log_tail()))
            ready, _, _ = select.select([self._from], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(self._from, 65536)
                if not chunk:
                    raise TestFailure("Chromium closed its DevTools pipe\n" + self.log_tail())
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method, timeout=15.0, **params):
        """Send one command (to the attached page once attached); return its result."""
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self._to, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise TestFailure("DevTools %s: %s" % (method, reply["error"]))
                return reply.get("result", {})

    def open(self, url):
        """Attach to the page and navigate it to `url`."""
        pages = [t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page"]
        if not pages:
            pages = [{"targetId": self.call("Target.createTarget", url="about:blank")["targetId"]}]
        self.session = self.call("Target.attachToTarget", targetId=pages[0]["targetId"],
                                 flatten=True)["sessionId"]
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=self.size[0], height=self.size[1],
                  deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url=url)

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def screenshot(self):
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])


def _unfilter(raw, width, height, bpp):
    """The pixel rows of a decompressed PNG image (filters of RFC 2083 undone)."""
    stride = width * bpp
    rows, prev, pos = [], bytearray(stride), 0
    for _ in range(height):
        kind, line = raw[pos], bytearray(raw[pos + 1:pos + 1 + stride])
        pos += 1 + stride
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, corner = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + pred) & 255
        rows.append(line)
        prev = line
    return rows


def png_pixels(data):
    """(width, height, rows of bytes, bytes per pixel) of an 8-bit RGB or RGBA PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise TestFailure("not a PNG")
    pos, idat, width, height, bpp = 8, b"", 0, 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            if depth != 8 or colour not in (2, 6):
                raise TestFailure("PNG colour type %d depth %d not handled" % (colour, depth))
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, _unfilter(zlib.decompress(idat), width, height, bpp), bpp
