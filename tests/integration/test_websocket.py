#!/usr/bin/python3
"""WebSocket listeners (ws://, wss://): MQTT over binary frames on /mqtt.

paho-mqtt's WebSocket transport, cross-transport delivery, and a raw
WebSocket client for handshakes that must be refused and for frames that
split or pack MQTT packets any way.
"""

import base64
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    HOST, PINGRESP, Broker, RawClient, Skip, aviaryd_path, check, check_equal, connect_packet,
    paho_roundtrip, publish_packet, run, run_tests, subscribe_packet, unique, wait_for)
import test_tls  # noqa: E402  (its certificates)

try:
    import paho.mqtt.client as mqtt
except ImportError:  # run_tests reports it
    mqtt = None


def _port(b, scheme):
    return wait_for(lambda: next((p for s, _, p in b.listeners if s == scheme), None), 5.0,
                    what="the %s:// listener" % scheme)


def _ws_broker(*extra):
    return Broker("--listen", "ws://%s:0" % HOST, *extra)


class Paho:
    """A paho client over ws:// or wss:// that collects what it receives."""

    def __init__(self, port, tls=False):
        self.got = []
        self.c = mqtt.Client(client_id=unique("ws"), transport="websockets")
        self.c.ws_set_options(path="/mqtt")
        if tls:
            self.c.tls_set(ca_certs=test_tls._ca("ca"))
        self.c.on_message = lambda cl, u, m: self.got.append((m.topic, bytes(m.payload)))
        self.connected = []
        self.c.on_connect = lambda cl, u, f, rc: self.connected.append(rc)
        self.c.connect(HOST, port, 30)
        self.c.loop_start()
        wait_for(lambda: self.connected, 5, what="CONNACK over WebSocket")
        check_equal(self.connected, [0], "CONNACK over WebSocket")

    def subscribe(self, topic):
        subacks = []
        self.c.on_subscribe = lambda cl, u, mid, q: subacks.append(q)
        self.c.subscribe(topic, 1)
        wait_for(lambda: subacks, 5, what="SUBACK over WebSocket")

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def _fd_count(b):
    return len(os.listdir("/proc/%d/fd" % b.pid))


class WsRaw:
    """A bare WebSocket client: handshake, masked frames, frames read one by one."""

    def __init__(self, port, path="/mqtt", protocol="mqtt", tls=None, timeout=5):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname="127.0.0.1")
        key = base64.b64encode(os.urandom(16)).decode()
        req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % (path, HOST, port, key))
        if protocol:
            req += "Sec-WebSocket-Protocol: %s\r\n" % protocol
        self.sock.sendall((req + "\r\n").encode())
        self.response = b""
        while b"\r\n\r\n" not in self.response:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.response += chunk
        head, _, self.buf = self.response.partition(b"\r\n\r\n")
        self.status = head.split(b"\r\n")[0] if head else b""

    def frame(self, data, fin=True, opcode=2):
        mask = os.urandom(4)
        first = (0x80 if fin else 0) | opcode
        n = len(data)
        if n < 126:
            head = struct.pack("!BB", first, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", first, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", first, 0x80 | 127, n)
        return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))

    def send_frames(self, frames):
        self.sock.sendall(b"".join(frames))

    def _fill(self, want, deadline):
        while len(self.buf) < want:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError("connection closed after %r" % self.buf[:64])
            self.buf += chunk

    def read_frame(self, timeout=5):
        """(opcode, payload) of the next frame from the server (never masked)."""
        deadline = time.monotonic() + timeout
        self._fill(2, deadline)
        n, head = self.buf[1] & 0x7F, 2
        if n == 126:
            self._fill(4, deadline)
            n, head = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._fill(10, deadline)
            n, head = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._fill(head + n, deadline)
        opcode, payload = self.buf[0] & 0x0F, self.buf[head:head + n]
        self.buf = self.buf[head + n:]
        return opcode, payload

    def read_payload(self, want, timeout=5):
        """Payload bytes of binary frames until `want` bytes have come."""
        out = b""
        deadline = time.monotonic() + timeout
        while len(out) < want:
            opcode, payload = self.read_frame(max(0.05, deadline - time.monotonic()))
            check_equal(opcode, 2, "opcode of a frame carrying MQTT (after %r)" % out)
            out += payload
        return out

    def read_close(self, timeout=5):
        """Skip binary frames up to the server's close frame; its status code."""
        deadline = time.monotonic() + timeout
        while True:
            opcode, payload = self.read_frame(max(0.05, deadline - time.monotonic()))
            if opcode == 8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None

    def at_eof(self, timeout=5):
        """True when the server closes the TCP connection within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(4096)
                if not chunk:
                    return True
        except (socket.timeout, ssl.SSLError):
            return False
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


def test_paho_over_ws_and_to_tcp():
    with _ws_broker() as b:
        ws = _port(b, "ws")
        p = Paho(ws)
        try:
            topic = unique("ws/")
            p.subscribe(topic + "/#")
            p.c.publish(topic + "/self", b"from-ws", 1)
            wait_for(lambda: p.got, 5, what="its own message back over WebSocket")
            tcp = RawClient(b.port)
            tcp.connect(unique("tcp"))
            tcp.subscribe([(topic + "/#", 1)])
            p.c.publish(topic + "/x", b"ws-to-tcp", 1)
            check_equal(tcp.receive().payload, b"ws-to-tcp", "TCP client receiving from WS")
            tcp.publish(topic + "/y", b"tcp-to-ws", qos=1)
            wait_for(lambda: len(p.got) >= 3, 5, what="three messages over WebSocket")
            check_equal(sorted(x[1] for x in p.got), [b"from-ws", b"tcp-to-ws", b"ws-to-tcp"],
                        "messages over WebSocket")
        finally:
            p.close()


def test_all_four_transports_on_one_broker():
    crt, key = test_tls._cert("server", "ca", server=True)
    with Broker("--listen", "tls://%s:0" % HOST, "--listen", "ws://%s:0" % HOST,
                "--listen", "wss://%s:0" % HOST, "--tls-cert", crt, "--tls-key", key) as b:
        ws, wss, tls = _port(b, "ws"), _port(b, "wss"), _port(b, "tls")
        topic = unique("all/")
        a, s = Paho(ws), Paho(wss, tls=True)
        try:
            for p in (a, s):
                p.subscribe(topic)
            tcp = RawClient(b.port)
            tcp.connect(unique("tcp"))
            tcp.subscribe([(topic, 1)])
            t, _ = test_tls._tls_connect(tls, test_tls._context(), unique("tls"))
            t.sendall(subscribe_packet(1, [(topic, 0)]))
            t.recv(5)  # SUBACK
            senders = [("ws", lambda m: a.c.publish(topic, m, 1)),
                       ("wss", lambda m: s.c.publish(topic, m, 1)),
                       ("tcp", lambda m: tcp.publish(topic, m, qos=1)),
                       ("tls", lambda m: t.sendall(publish_packet(topic, m)))]
            for name, send in senders:
                send(b"from-" + name.encode())
                time.sleep(0.1)
            want = sorted(b"from-" + n.encode() for n, _ in senders)
            for p in (a, s):
                wait_for(lambda: len(p.got) >= 4, 5, what="four messages")
                check_equal(sorted(x[1] for x in p.got), want, "over WebSocket")
            got_tcp = []
            for _ in range(4):
                got_tcp.append(tcp.receive().payload)
            check_equal(sorted(got_tcp), want, "over TCP")
            t.close()
        finally:
            a.close()
            s.close()


def test_bad_handshakes_are_refused():
    with _ws_broker() as b:
        ws = _port(b, "ws")
        for path, proto, what, logged in [
                ("/other", "mqtt", "a wrong path", r"upgrade refused: path /other"),
                ("/mqtt", None, "no subprotocol", r"upgrade refused: subprotocol none"),
                ("/mqtt", "chat", "an unknown subprotocol", r"upgrade refused: subprotocol chat")]:
            mark = b.log_mark()
            c = WsRaw(ws, path, proto)
            check(b"101" not in c.status, "%s was upgraded: %r" % (what, c.status))
            c.close()
            b.wait_log(logged, since=mark)
        mark = b.log_mark()
        s = socket.create_connection((HOST, ws), timeout=5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        check(s.recv(100).startswith(b"HTTP/1.1 404"), "a plain GET is not answered 404")
        s.close()
        b.wait_log(r"plain HTTP request for /: 404", since=mark)
        for proto in ("mqtt", "mqttv3.1"):
            c = WsRaw(ws, "/mqtt", proto)
            check(b"101" in c.status, "subprotocol %s refused: %r" % (proto, c.status))
            c.close()
        Paho(ws).close()


def test_packets_split_and_packed_across_frames():
    with _ws_broker() as b:
        ws = _port(b, "ws")
        c = WsRaw(ws)
        topic = unique("fr/")
        data = connect_packet(unique("raw")) + subscribe_packet(1, [(topic, 0)])
        # CONNECT and SUBSCRIBE in one frame.
        c.send_frames([c.frame(data)])
        check_equal(c.read_payload(4 + 5)[:4], b"\x20\x02\x00\x00", "CONNACK")
        # One PUBLISH split over three frames (a fragmented message).
        pub = publish_packet(topic, b"split-into-pieces")
        c.send_frames([c.frame(pub[:3], fin=False), c.frame(pub[3:9], fin=False, opcode=0),
                       c.frame(pub[9:], opcode=0)])
        check_equal(c.read_payload(len(pub)), pub, "the PUBLISH delivered back")
        # Two PUBLISHes, each split across separate whole messages.
        two = publish_packet(topic, b"one") + publish_packet(topic, b"two")
        c.send_frames([c.frame(two[:5]), c.frame(two[5:])])
        check_equal(c.read_payload(len(two)), two, "two PUBLISHes across two frames")
        c.close()


def test_vanishing_clients_leak_nothing():
    with _ws_broker() as b:
        ws = _port(b, "ws")
        Paho(ws).close()  # the first session's one-time costs
        time.sleep(0.3)
        before = _fd_count(b)
        for i in range(100):
            c = WsRaw(ws)
            if i % 2:
                c.send_frames([c.frame(connect_packet(unique("v")))[:5]])  # half a frame
            c.close()
        wait_for(lambda: _fd_count(b) <= before, 5,
                 what="the descriptors to return to %d (now %d)" % (before, _fd_count(b)))
        Paho(ws).close()


def test_desktop_defaults_move_to_next_free_ports():
    """Inside a network namespace of its own, with 1883 and 1884 held by the test."""
    script = (
        "import socket, subprocess, sys, time\n"
        "held = []\n"
        "for port in (1883, 1884):\n"
        "    s = socket.socket(); s.bind(('127.0.0.1', port)); s.listen(1); held.append(s)\n"
        "p = subprocess.Popen([sys.argv[1]], stdout=subprocess.PIPE, stderr=subprocess.PIPE)\n"
        "lines = [p.stdout.readline().decode().strip() for _ in range(2)]\n"
        "p.terminate(); _, err = p.communicate(timeout=10)\n"
        "print('\\n'.join(lines)); sys.stderr.write(err.decode())\n")
    unshare = "/usr/bin/unshare"
    if not os.path.exists(unshare) or run([unshare, "-n", "true"], timeout=5).returncode:
        raise Skip("cannot make a network namespace here (unshare -n needs root)")
    r = subprocess.run([unshare, "-n", sys.executable, "-c", script, aviaryd_path()],
                       capture_output=True, timeout=20)
    out, err = r.stdout.decode(), r.stderr.decode()
    check_equal(out.split(), ["listening", "on", "tcp://127.0.0.1:1885", "listening", "on",
                              "ws://127.0.0.1:1886"], "the listeners (log: %r)" % err[-800:])
    check("port 1883 is in use, trying 1884" in err
          and "ws://127.0.0.1:1884: port 1884 is in use" in err,
          "the log does not say why the ports moved: %r" % err[-800:])


def _rss_kb(b):
    with open("/proc/%d/status" % b.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % b.pid)


def test_ping_pong_and_close_from_the_client():
    with _ws_broker() as b:
        ws = _port(b, "ws")
        topic = unique("will/")
        watcher = RawClient(b.port)
        watcher.connect(unique("w"))
        watcher.subscribe([(topic, 0)])
        c = WsRaw(ws)
        c.send_frames([c.frame(connect_packet(unique("pp"), will=dict(topic=topic,
                                                                      payload=b"gone")))])
        check_equal(c.read_payload(4), b"\x20\x02\x00\x00", "CONNACK")
        c.send_frames([c.frame(b"are you there", opcode=9)])
        check_equal(c.read_frame(), (10, b"are you there"), "the pong to a ping")
        mark = b.log_mark()
        c.send_frames([c.frame(struct.pack("!H", 1000), opcode=8)])
        check_equal(c.read_close(), 1000, "status of the broker's close frame")
        check(c.at_eof(), "the TCP connection stays open after the close handshake")
        c.close()
        # A WebSocket closed without DISCONNECT is a lost connection: the will goes out.
        check_equal(watcher.receive().payload, b"gone", "the will of the closed session")
        b.wait_log(r"closed: connection lost", since=mark)


def test_close_from_the_broker_after_its_last_packet():
    with _ws_broker() as b:
        ws = _port(b, "ws")
        # Refused: the CONNACK comes first, then the close frame, then the end.
        c = WsRaw(ws)
        c.send_frames([c.frame(connect_packet("x" * 65))])
        check_equal(c.read_payload(4), b"\x20\x02\x00\x02", "CONNACK 2 for a long client id")
        check_equal(c.read_close(), 1000, "status of the close frame")
        check(c.at_eof(), "the TCP connection stays open after the close frame")
        c.close()
        # A protocol error after a CONNECT: the broker closes, the client sees a close frame.
        c = WsRaw(ws)
        c.send_frames([c.frame(connect_packet(unique("twice")) * 2)])
        check_equal(c.read_payload(4), b"\x20\x02\x00\x00", "CONNACK to the first CONNECT")
        check_equal(c.read_close(), 1000, "status of the close frame")
        c.close()
        b.wait_log(r"second CONNECT")


def test_text_frames_close_the_session():
    """MQTT-6.0.0-1: MQTT travels only in binary frames."""
    with _ws_broker() as b:
        ws = _port(b, "ws")
        c = WsRaw(ws)
        c.send_frames([c.frame(connect_packet(unique("t")))])
        check_equal(c.read_payload(4), b"\x20\x02\x00\x00", "CONNACK")
        c.send_frames([c.frame(b"\xc0\x00", opcode=1)])
        check_equal(c.read_close(), 1003, "status of the close frame after a text frame")
        c.close()
        b.wait_log(r"text frame")
        Paho(ws).close()


def test_stalled_handshakes_closed_at_connect_timeout():
    with _ws_broker("--connect-timeout", "2") as b:
        ws = _port(b, "ws")
        silent = socket.create_connection((HOST, ws), timeout=10)
        partial = socket.create_connection((HOST, ws), timeout=10)
        partial.sendall(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n")  # never finished
        t0 = time.monotonic()
        no_connect = WsRaw(ws, timeout=10)  # a WebSocket that never sends CONNECT
        check(b"101" in no_connect.status, "upgrade refused: %r" % no_connect.status)
        mark = b.log_mark()
        for what, sock in (("silent", silent), ("half a request", partial),
                           ("no CONNECT", no_connect.sock)):
            try:
                while sock.recv(4096):
                    pass
            except ConnectionResetError:
                pass
            took = time.monotonic() - t0
            check(1.5 < took < 6, "%s: closed after %.1f s with connect-timeout 2" % (what, took))
            sock.close()
        b.wait_log(r"no CONNECT within 2 s")
        b.wait_log(r"closed before a WebSocket request: no request within connect-timeout",
                   since=mark)


def test_wss_client_certificates():
    crt, key = test_tls._cert("server", "ca", server=True)
    test_tls._cert("client", "ca")
    test_tls._cert("stranger", "otherca")
    with Broker("--listen", "wss://%s:0" % HOST, "--tls-cert", crt, "--tls-key", key,
                "--tls-ca", test_tls._ca("ca"), "--tls-client-cert", "required") as b:
        wss = _port(b, "wss")
        c = WsRaw(wss, tls=test_tls._context(cert="client"))
        check(b"101" in c.status, "upgrade with a valid client certificate: %r" % c.status)
        c.send_frames([c.frame(connect_packet(unique("cc")))])
        check_equal(c.read_payload(4), b"\x20\x02\x00\x00", "CONNACK over wss://")
        c.close()
        for who, ctx, logged in (
                ("no certificate", test_tls._context(),
                 r"TLS handshake failed: no client certificate \(alert sent\)"),
                ("an untrusted certificate", test_tls._context(cert="stranger"),
                 r"TLS handshake failed: client certificate refused \(unable to get local "
                 r"issuer")):
            mark = b.log_mark()
            try:
                c = WsRaw(wss, tls=ctx)
                check(b"101" not in c.status, "%s: upgraded (%r)" % (who, c.status))
                c.close()
            except (ssl.SSLError, OSError):
                pass
            b.wait_log(logged, since=mark)
            # Said once, whether lws failed the handshake while adopting the socket or after.
            time.sleep(0.3)
            said = [line for line in b.log_text(since=mark).splitlines()
                    if "TLS handshake failed" in line]
            check_equal(len(said), 1, "log lines about the failed handshake (%s): %r"
                        % (who, said))


def test_wss_sighup_reloads_certificate():
    crt, key = test_tls._path("ws-live.crt"), test_tls._path("ws-live.key")
    old_crt, old_key = test_tls._cert("server", "ca", server=True)
    shutil.copy(old_crt, crt)
    shutil.copy(old_key, key)
    with Broker("--listen", "wss://%s:0" % HOST, "--tls-cert", crt, "--tls-key", key) as b:
        wss = _port(b, "wss")
        old = WsRaw(wss, tls=test_tls._context("ca"))
        old.send_frames([old.frame(connect_packet(unique("old")))])
        check_equal(old.read_payload(4), b"\x20\x02\x00\x00", "CONNACK before the reload")
        new_crt, new_key = test_tls._cert("server2", "ca2", server=True)
        shutil.copy(new_crt, crt)
        shutil.copy(new_key, key)
        mark = b.log_mark()
        b.send_signal(signal.SIGHUP)
        b.wait_log(r"wss:// listeners reloaded their certificate", since=mark)
        c = WsRaw(wss, tls=test_tls._context("ca2"))
        check(b"101" in c.status, "upgrade with the new certificate: %r" % c.status)
        c.close()
        try:
            WsRaw(wss, tls=test_tls._context("ca")).close()
            raise AssertionError("the old certificate is still served after SIGHUP")
        except ssl.SSLError:
            pass
        old.send_frames([old.frame(b"\xc0\x00")])  # the session from before the reload
        check_equal(old.read_payload(2), b"\xd0\x00", "PINGRESP on the old session")
        old.close()


def test_slow_websocket_reader_holds_bounded_memory():
    """A subscriber that stops reading costs max-outbound-bytes, not what is published."""
    with _ws_broker("--max-outbound-bytes", "256k") as b:
        ws = _port(b, "ws")
        topic = unique("slow/")
        slow = WsRaw(ws)
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        slow.send_frames([slow.frame(connect_packet(unique("slow")) +
                                     subscribe_packet(1, [(topic, 0)]))])
        slow.read_payload(4 + 5)  # CONNACK, SUBACK; then it reads nothing more
        pub = RawClient(b.port)
        pub.connect(unique("pub"))
        payload = b"x" * 32768
        pub.publish(topic, payload)  # the first costs one-time buffers
        time.sleep(0.5)
        before = _rss_kb(b)
        for _ in range(2000):  # 64 MB
            pub.send(publish_packet(topic, payload))
        pub.send(b"\xc0\x00")
        pub.expect(PINGRESP, timeout=30, what="PINGRESP after the flood")
        grown = _rss_kb(b) - before
        # Under AddressSanitizer freed memory waits in a quarantine of 256 MB.
        check(grown < 16 * 1024 or b.sanitized(),
              "the broker grew by %d kB for a reader that stops" % grown)
        b.wait_log(r"dropping QoS 0 messages")
        # Everyone else is still served, and the slow reader's stream is still whole.
        paho_roundtrip(b.port)
        opcode, data = slow.read_frame()
        check_equal((opcode, data[:1]), (2, b"\x30"), "the slow reader's next frame")
        slow.close()


if __name__ == "__main__":
    run_tests(globals())
