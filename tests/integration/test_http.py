#!/usr/bin/python3
"""The HTTP face (http://, https://): publish and read over HTTP, /metrics,
and the bounds of the HTTP server (src/net/http.c, src/web/).

    POST|PUT /broker/TOPIC?qos=N&retain=true   publish the body: {"delivered":N}
    GET /broker/TOPIC                          the retained payload, raw (or 404)
    GET /broker/FILTER (+, # as %23, *)        the retained messages, as JSON
    GET /metrics                               Prometheus text

Requests are made with http.client where an ordinary client will do, and by
hand over raw sockets (class Http) where the bytes on the wire matter:
pipelining, malformed and oversized requests, slow and idle clients, the
connection limit. /metrics is parsed with prometheus_client (Debian's
python3-prometheus-client); without it the metrics tests fail, they do not
skip. Certificates come from test_tls (the openssl command).
"""

import base64
import functools
import http.client
import json
import os
import re
import resource
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    HOST, Broker, PahoClient, Skip, TestFailure, check, check_equal, cloud_db, cloud_login, ctl,
    new_token, paho_roundtrip, raw_connect, run_tests, unique, wait_for)
import test_tls  # noqa: E402  (its certificates)

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # the metrics tests fail with this message
    text_string_to_metric_families = None

# The server's bounds (src/net/http.h, src/web/web.h).
HTTP_MAX_HEAD = 8192
HTTP_MAX_HEADERS = 64
HTTP_REQUEST_SEC = 10
HTTP_IDLE_SEC = 30
WEB_MAX_CONNECTIONS = 256
WEB_MAX_BODY = 1 << 20


# ---------------------------------------------------------------------------
# HTTP by hand

_open = []  # every Http made by the current test; closed when it ends


def _closes_sockets(fn):
    """Close every Http the test opened when it ends, however it ends."""
    @functools.wraps(fn)
    def wrapper():
        try:
            return fn()
        finally:
            while _open:
                _open.pop().close()
    return wrapper


class Response:
    def __init__(self, status, reason, headers, body):
        self.status, self.reason, self.headers, self.body = status, reason, headers, body

    def json(self):
        check(self.headers.get("content-type", "").startswith("application/json"),
              "Content-Type of a JSON answer: %r" % self.headers.get("content-type"))
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError as e:
            raise TestFailure("the body is not JSON (%s): %r" % (e, self.body[:300]))

    def __repr__(self):
        return "<HTTP %d %s %r %r>" % (self.status, self.reason, self.headers, self.body[:200])


class Http:
    """One HTTP/1.1 connection spoken by hand (over TLS when `ctx` is given)."""

    def __init__(self, port, ctx=None, timeout=5.0):
        raw = socket.create_connection((HOST, port), timeout=timeout)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=HOST) if ctx else raw
        except BaseException:
            raw.close()
            raise
        _open.append(self)
        self.buf = bytearray()
        self.eof = False
        self.local_port = self.sock.getsockname()[1]

    def send(self, data):
        self.sock.sendall(data)

    def try_send(self, data):
        """Send, tolerating a connection the server closed; returns success."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def _fill(self, deadline):
        """More bytes into buf: False at the end of the stream; raises socket.timeout."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
                ssl.SSLEOFError, ssl.SSLZeroReturnError):
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def response(self, timeout=5.0, head=False, what="an answer"):
        """The next response (head=True: to a HEAD request, without a body)."""
        deadline = time.monotonic() + timeout
        try:
            while b"\r\n\r\n" not in self.buf:
                if not self._fill(deadline):
                    raise TestFailure("connection closed before %s (received %r)"
                                      % (what, bytes(self.buf[:300])))
            end = self.buf.index(b"\r\n\r\n")
            lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            del self.buf[:end + 4]
            m = re.match(r"^HTTP/1\.1 (\d{3}) (.*)$", lines[0])
            check(m, "malformed status line %r in %s" % (lines[0], what))
            headers = {}
            for line in lines[1:]:
                name, colon, value = line.partition(":")
                check(colon and name == name.strip(), "malformed header line %r" % line)
                headers[name.lower()] = value.strip()
            status = int(m.group(1))
            n = 0
            if not head and status >= 200 and status not in (204, 304):
                check("content-length" in headers, "no Content-Length in %r" % lines)
                n = int(headers["content-length"])
            while len(self.buf) < n:
                if not self._fill(deadline):
                    raise TestFailure("connection closed inside the body of %s (%d of %d bytes)"
                                      % (what, len(self.buf), n))
        except socket.timeout:
            raise TestFailure("no whole response within %.1f s for %s (received %r)"
                              % (timeout, what, bytes(self.buf[:300])))
        body = bytes(self.buf[:n])
        del self.buf[:n]
        return Response(status, m.group(2), headers, body)

    def expect_closed(self, timeout=5.0, what="the server to close the connection"):
        """Wait for the end of the stream; nothing more may arrive before it."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
        except socket.timeout:
            raise TestFailure("timed out after %.1f s waiting for %s (received %r)"
                              % (timeout, what, bytes(self.buf[:300])))
        check_equal(bytes(self.buf), b"", "bytes before the close (%s)" % what)

    def request(self, method, path, body=b"", headers=(), timeout=5.0):
        """Send one request and read its answer."""
        self.send(request_bytes(method, path, body, headers))
        return self.response(timeout, head=method == "HEAD", what="%s %s" % (method, path))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def request_bytes(method, path, body=b"", headers=(), version="HTTP/1.1"):
    """A request as bytes; Content-Length is added for a body, or for POST and PUT."""
    head = ["%s %s %s" % (method, path, version), "Host: %s" % HOST]
    head += ["%s: %s" % h for h in headers]
    if body or method in ("POST", "PUT"):
        head.append("Content-Length: %d" % len(body))
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def _request(port, method, path, body=None, headers=None, ctx=None, timeout=5.0):
    """One request with http.client on a connection of its own: a Response."""
    if ctx is not None:
        conn = http.client.HTTPSConnection(HOST, port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return Response(r.status, r.reason, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def _basic(user, secret):
    return {"Authorization": "Basic " + base64.b64encode(
        ("%s:%s" % (user, secret)).encode()).decode()}


def _publish(port, topic, body, qos=None, retain=None, headers=None, ctx=None, expect=200):
    """POST a publish; check its status; returns the Response."""
    params = []
    if qos is not None:
        params.append("qos=%d" % qos)
    if retain is not None:
        params.append("retain=%s" % ("true" if retain else "false"))
    path = "/broker/" + topic + ("?" + "&".join(params) if params else "")
    r = _request(port, "POST", path, body, headers, ctx)
    check_equal(r.status, expect, "status of POST %s (%r)" % (path, r))
    return r


def _delivered(r):
    doc = r.json()
    check(isinstance(doc, dict) and set(doc) == {"delivered"}, "publish answer %r" % doc)
    return doc["delivered"]


def _port(b, scheme):
    return wait_for(lambda: next((p for s, _, p in b.listeners if s == scheme), None), 5.0,
                    what="the %s:// listener" % scheme)


def _http_broker(*extra, **kw):
    return Broker("--listen", "http://%s:0" % HOST, *extra, **kw)


def _tls_args():
    crt, key = test_tls._cert("server", "ca", server=True)
    return ["--tls-cert", crt, "--tls-key", key]


def _tls_context():
    return ssl.create_default_context(cafile=test_tls._ca("ca"))


def _check_log(b, mark, pattern, what):
    try:
        b.wait_log(pattern, since=mark, timeout=3)
    except TestFailure:
        raise TestFailure("no log line /%s/ after %s; new log lines:\n%s"
                          % (pattern, what, b.log_text(mark)[-2500:]))


def _get_json(port, filter_path, headers=None, ctx=None):
    r = _request(port, "GET", "/broker/" + filter_path, headers=headers, ctx=ctx)
    check_equal(r.status, 200, "status of GET /broker/%s (%r)" % (filter_path, r))
    doc = r.json()
    check(isinstance(doc, list), "GET /broker/%s: a JSON list, got %r" % (filter_path, doc))
    out = {}
    for item in doc:
        check(isinstance(item, dict) and set(item) == {"topic", "qos", "size", "payload"},
              "an item of GET /broker/%s: %r" % (filter_path, item))
        payload = base64.b64decode(item["payload"], validate=True)
        check_equal(item["size"], len(payload), "size of %r" % item["topic"])
        check(item["topic"] not in out, "topic %r twice in %r" % (item["topic"], doc))
        out[item["topic"]] = (payload, item["qos"])
    return out


@_closes_sockets
def test_other_sites_and_other_host_names_are_refused():
    """DNS rebinding and cross-site requests: the desktop listener is loopback's only."""
    with _http_broker() as b:
        hp = _port(b, "http")
        own = "%s:%d" % (HOST, hp)
        for host in (own, "localhost:%d" % hp, "127.0.0.2", "[::1]:%d" % hp):
            r = _request(hp, "GET", "/broker/x", headers={"Host": host})
            check_equal(r.status, 404, "Host %s (no retained message: 404) (%r)" % (host, r))
        for host in ("rebind.example:%d" % hp, "127.0.0.1.rebind.example", "localhost.example"):
            r = _request(hp, "POST", "/broker/door/open?retain=true", b"1", {"Host": host})
            check_equal(r.status, 403, "a POST with Host %s (%r)" % (host, r))
        for origin in ("http://evil.example", "null", "https://%s" % own):
            r = _request(hp, "POST", "/broker/door/open?retain=true", b"1", {"Origin": origin})
            check_equal(r.status, 403, "a POST from Origin %s (%r)" % (origin, r))
        check_equal(_request(hp, "GET", "/broker/door/open").status, 404, "nothing refused was published")
        r = _request(hp, "POST", "/broker/door/open?retain=true", b"1", {"Origin": "http://" + own})
        check_equal(r.status, 200, "a POST from the server's own page (%r)" % r)
        check_equal(_request(hp, "GET", "/broker/door/open").status, 200,
                    "only the same-site POST was published")


@_closes_sockets
def test_system_topics_are_the_brokers_over_http():
    db = cloud_db()
    a = _instance(db)
    _, secret = new_token(db, a, "--ttl", "1h", "--allow-action")
    with _cloud(db) as b:
        hp = _port(b, "http")
        for topic in ("%24action", "%24events", "%24info", "%24action/x"):
            r = _request(hp, "POST", "/broker/%s?retain=true" % topic, b'{"type":"close"}',
                         _basic(a, secret))
            check_equal(r.status, 403, "POST to %s (%r)" % (topic, r))
        check_equal(_request(hp, "GET", "/broker/%24action", headers=_basic(a, secret)).status,
                    404, "nothing was retained on $action")


@_closes_sockets
def test_http_publishers_share_max_messages_per_second():
    db = cloud_db()
    a = _instance(db)
    ctl(db, "instance", "set", a, "max-messages-per-second", "2")
    _, secret = new_token(db, a, "--ttl", "1h")
    with _cloud(db) as b:
        hp = _port(b, "http")
        statuses = []
        for i in range(10):  # each on a connection of its own: they share one bucket
            statuses.append(_request(hp, "POST", "/broker/r/%d" % i, b"x",
                                     _basic(a, secret)).status)
            if statuses[-1] == 429:
                break
        check(statuses[-1] == 429 and len(statuses) <= 5,
              "max-messages-per-second 2 over HTTP: %r" % statuses)


@_closes_sockets
def test_a_wide_read_is_bounded_in_bytes():
    with _http_broker("--max-payload", "65536") as b:
        hp = _port(b, "http")
        big = os.urandom(60000)
        c = Http(hp)
        for i in range(80):  # 4.8 MB of payloads, 6.4 MB in base64
            r = c.request("POST", "/broker/big/%d?retain=true" % i, big)
            check_equal(r.status, 200, "retained publish %d" % i)
        r = _request(hp, "GET", "/broker/big/%23", timeout=30)
        check_equal(r.status, 200, "the wide read")
        check_equal(r.headers.get("aviary-truncated"), "true", "the truncation header")
        items = r.json()
        check(40 <= len(items) < 80 and len(r.body) <= 4 << 20,
              "%d messages in %d bytes" % (len(items), len(r.body)))
        check(all(base64.b64decode(i["payload"]) == big for i in items), "the payloads")


# ---------------------------------------------------------------------------
# /metrics

def _metrics(port, ctx=None, conn=None):
    """Scrape /metrics and parse it: {(sample name, ((label, value), ...)): value}."""
    if text_string_to_metric_families is None:
        raise TestFailure("prometheus_client is not importable by %s: install Debian's "
                          "python3-prometheus-client (this test does not skip)" % sys.executable)
    if conn is not None:
        r = conn.request("GET", "/metrics")
    else:
        r = _request(port, "GET", "/metrics", ctx=ctx)
    check_equal(r.status, 200, "status of GET /metrics (%r)" % r)
    check(r.headers.get("content-type", "").startswith("text/plain; version=0.0.4"),
          "Content-Type of /metrics: %r" % r.headers.get("content-type"))
    out = {}
    try:
        for family in text_string_to_metric_families(r.body.decode("utf-8")):
            for s in family.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                check(key not in out, "sample %r twice in /metrics" % (key,))
                out[key] = s.value
    except (ValueError, TypeError) as e:
        raise TestFailure("/metrics does not parse (%s):\n%s" % (e, r.body.decode()[:3000]))
    return out


def _m(metrics, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    if key not in metrics:
        near = sorted(k for k in metrics if k[0] == name)
        raise TestFailure("no sample %s%r in /metrics (samples of that name: %r)"
                          % (name, labels, near))
    return metrics[key]


# ---------------------------------------------------------------------------
# desktop mode: publishing and reading

@_closes_sockets
def test_post_reaches_mqtt_subscribers_with_qos_and_retain():
    with _http_broker() as b:
        hp = _port(b, "http")
        topic = unique("post/")
        # The QoS 2 subscriber is a RawClient: paho reports a QoS 2 message at its PUBREL,
        # out of the order of the wire.
        sub, _ = raw_connect(b.port, unique("sub"))
        with sub, PahoClient(b.port, unique("s2")) as s2:
            check_equal(sub.subscribe([(topic, 2)]), [2], "SUBACK")
            s2.subscribe(topic, 1)
            check_equal(_delivered(_publish(hp, topic, b"q0")), 2, "delivered, QoS 0")
            check_equal(_delivered(_publish(hp, topic, b"q1", qos=1)), 2, "delivered, QoS 1")
            check_equal(_delivered(_publish(hp, topic, b"q2", qos=2, retain=False)), 2,
                        "delivered, QoS 2")
            r = _request(hp, "PUT", "/broker/%s?qos=1&retain=true" % topic, b"kept")
            check_equal(r.status, 200, "status of PUT (%r)" % r)
            check_equal(_delivered(r), 2, "delivered, PUT")
            got = [(m.topic, m.payload, m.qos, m.retain) for m in sub.receive_all(4)]
            check_equal(got, [(topic, b"q0", 0, False), (topic, b"q1", 1, False),
                              (topic, b"q2", 2, False), (topic, b"kept", 1, False)],
                        "messages at the QoS 2 subscriber, in order")
            got = [(m.payload, m.qos) for m in s2.wait_messages(4, topic=topic)]
            check_equal(got, [(b"q0", 0), (b"q1", 1), (b"q2", 1), (b"kept", 1)],
                        "messages at the QoS 1 subscriber (QoS downgraded)")
        # The retained one reaches a later subscriber, flagged retained.
        with PahoClient(b.port, unique("late")) as late:
            late.subscribe(topic, 2)
            m = late.wait_messages(1, topic=topic)[0]
            check_equal((m.payload, m.qos, m.retain), (b"kept", 1, True), "the retained message")
        # An offline persistent session counts as a delivery, and gets the message later.
        sid = unique("offline")
        with PahoClient(b.port, sid, clean_session=False) as off:
            off.subscribe(topic + "/q", 1)
        check_equal(_delivered(_publish(hp, topic + "/q", b"queued", qos=1)), 1,
                    "delivered to an offline session")
        check_equal(_delivered(_publish(hp, topic + "/q", b"lost", qos=0)), 1,
                    "delivered (QoS 0) to an offline session")
        with PahoClient(b.port, sid, clean_session=False) as off:
            check(off.session_present, "the session is back")
            got = [(m.payload, m.qos) for m in off.wait_messages(1, topic=topic + "/q")]
            check_equal(got[:1], [(b"queued", 1)], "what the offline session got")
        # Nobody subscribed: delivered 0; an empty retained publish clears, as in MQTT.
        check_equal(_delivered(_publish(hp, unique("none/"), b"x")), 0, "delivered to nobody")
        _publish(hp, topic, b"", qos=0, retain=True)
        r = _request(hp, "GET", "/broker/" + topic)
        check_equal(r.status, 404, "GET after an empty retained publish cleared it (%r)" % r)


@_closes_sockets
def test_expect_100_continue():
    with _http_broker() as b:
        hp = _port(b, "http")
        topic = unique("cont/")
        c = Http(hp)
        c.send(("POST /broker/%s?retain=true HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
                "Expect: 100-continue\r\n\r\n" % topic).encode())
        r = c.response(what="100 Continue")
        check_equal((r.status, r.body), (100, b""), "the interim answer")
        c.send(b"hello")
        r = c.response(what="the answer after the body")
        check_equal(r.status, 200, "status after the body (%r)" % r)
        check_equal(c.request("GET", "/broker/" + topic).body, b"hello", "the retained body")


@_closes_sockets
def test_get_one_topic_returns_the_raw_payload():
    with _http_broker() as b:
        hp = _port(b, "http")
        topic = unique("raw/")
        binary = bytes(range(256)) * 3
        with PahoClient(b.port, unique("pub")) as p:
            p.publish(topic, binary, qos=1, retain=True)
        r = wait_for(lambda: (lambda r: r if r.status == 200 else None)(
            _request(hp, "GET", "/broker/" + topic)), 3, what="the retained message over HTTP")
        check_equal(r.body, binary, "the raw payload")
        check_equal(r.headers.get("content-type"), "application/octet-stream", "Content-Type")
        r = _request(hp, "HEAD", "/broker/" + topic)
        check_equal((r.status, r.headers.get("content-length"), r.body),
                    (200, str(len(binary)), b""), "HEAD of the topic")
        # A topic with a leading slash is the same topic (MQTT's insignificant slash).
        check_equal(_request(hp, "GET", "/broker//" + topic).body, binary, "GET //TOPIC")
        r = _request(hp, "GET", "/broker/" + topic + "/below")
        check_equal(r.status, 404, "a topic with no retained message (%r)" % r)
        check("error" in r.json(), "a 404 says why: %r" % r.body)
        check_equal(_request(hp, "GET", "/broker/" + unique("nothing/")).status, 404,
                    "a topic never used")


@_closes_sockets
def test_get_wildcards_return_json_with_base64_payloads():
    with _http_broker() as b:
        hp = _port(b, "http")
        base = unique("wild")
        binary = bytes(range(255, -1, -1))
        want = {base + "/a": (b"alpha", 0), base + "/b": (binary, 1),
                base + "/c/d": (b"deep \"quoted\" \\ \n", 2)}
        with PahoClient(b.port, unique("pub")) as p:
            p.publish(base + "/a", b"alpha", qos=0, retain=True)
            p.publish(base + "/b", binary, qos=1, retain=True)
            p.publish(base + "x/a", b"a sibling that no filter here matches", qos=1, retain=True)
        _publish(hp, base + "/c/d", want[base + "/c/d"][0], qos=2, retain=True)
        _publish(hp, base + "/live", b"not retained", qos=1)
        wait_for(lambda: len(_get_json(hp, base + "/%23")) == 3, 3,
                 what="the three retained messages under %s/#" % base)
        level = {t: v for t, v in want.items() if t.count("/") == 1}
        check_equal(_get_json(hp, base + "/%23"), want, "GET %s/# (%%23)" % base)
        check_equal(_get_json(hp, base + "/+"), level, "GET %s/+" % base)
        check_equal(_get_json(hp, base + "/*"), level, "GET %s/* (* is +)" % base)
        check_equal(_get_json(hp, "+/c/d"), {base + "/c/d": want[base + "/c/d"]}, "GET +/c/d")
        check_equal(_get_json(hp, base + "/*/d"), {base + "/c/d": want[base + "/c/d"]},
                    "GET %s/*/d" % base)
        check_equal(_get_json(hp, base + "/nothing/%23"), {}, "a filter matching nothing")
        r = _request(hp, "GET", "/broker/%s/%%23/a" % base)
        check_equal(r.status, 400, "a # that is not last (%r)" % r)
        r = _request(hp, "GET", "/broker/%s/a+" % base)
        check_equal(r.status, 400, "a + inside a level (%r)" % r)


@_closes_sockets
def test_methods_paths_and_parameters_refused():
    with _http_broker("--utf8-topics", "0") as b:  # the cloud set: desktop takes any UTF-8
        hp = _port(b, "http")
        topic = unique("p/")
        mark = b.log_mark()
        r = _request(hp, "DELETE", "/broker/" + topic)
        check_equal(r.status, 405, "DELETE (%r)" % r)
        check("POST" in r.headers.get("allow", ""), "Allow of a 405: %r" % r.headers)
        check_equal(_request(hp, "POST", "/metrics", b"x").status, 405, "POST /metrics")
        for path in ("/nope", "/broker", "/brokerx/a", "/metrics/x", "/broker/../metrics"):
            r = _request(hp, "GET", path)
            check_equal(r.status, 404, "GET %s (%r)" % (path, r))
            check("error" in r.json(), "GET %s: a JSON error, got %r" % (path, r.body))
        for query in ("qos=3", "qos=-1", "qos=1x", "qos=", "retain=maybe", "retain=1",
                      "retain=TRUE", "colour=blue", "qos=1&retain=true&x=y"):
            r = _request(hp, "POST", "/broker/%s?%s" % (topic, query), b"no")
            check_equal(r.status, 400, "POST ?%s (%r)" % (query, r))
        for path in ("/broker/", "/broker/a/%23/b", "/broker/a%20b"):
            r = _request(hp, "GET", path)
            check_equal(r.status, 400, "GET %s (%r)" % (path, r))
        for bad in ("", "a%20b", "a/%2B", "a/%23", "a/*", "%C3%A9t%C3%A9"):
            r = _request(hp, "POST", "/broker/" + bad, b"no")
            check_equal(r.status, 400, "POST to the topic %r (%r)" % (bad, r))
        _check_log(b, mark, r"http 127\.0\.0\.1:\d+: DELETE /broker/\S+: 405", "the 405")
        # None of the refused ones was published.
        check_equal(_request(hp, "GET", "/broker/%23").json(), [], "retained after refusals")
        r = _publish(hp, topic, b"yes", qos=2, retain=True)
        check_equal(_request(hp, "GET", "/broker/" + topic).body, b"yes", "a good publish")


@_closes_sockets
def test_keep_alive_and_pipelining():
    with _http_broker() as b:
        hp = _port(b, "http")
        topic = unique("pipe/")
        c = Http(hp)
        for i in range(5):
            r = c.request("POST", "/broker/%s?retain=true" % topic, b"v%d" % i)
            check_equal((r.status, r.headers.get("connection")), (200, "keep-alive"),
                        "request %d on one connection" % i)
            check_equal(c.request("GET", "/broker/" + topic).body, b"v%d" % i,
                        "GET %d on one connection" % i)
        # Five requests in one write: answered in order.
        c.send(request_bytes("POST", "/broker/%s?retain=true" % topic, b"piped") +
               request_bytes("GET", "/broker/" + topic) +
               request_bytes("GET", "/nope") +
               request_bytes("HEAD", "/broker/" + topic) +
               request_bytes("GET", "/broker/" + topic + "?ignored=1"))
        answers = [c.response(what="pipelined answer %d" % i, head=i == 3) for i in range(5)]
        check_equal([(r.status, r.body) for r in answers[:2] + answers[4:]],
                    [(200, b'{"delivered":0}\n'), (200, b"piped"), (200, b"piped")],
                    "pipelined answers 1, 2 and 5")
        check_equal(answers[2].status, 404, "pipelined answer 3")
        check_equal((answers[3].status, answers[3].headers.get("content-length")), (200, "5"),
                    "pipelined answer 4 (HEAD)")
        # Split across writes at awkward places, then Connection: close ends it.
        whole = request_bytes("GET", "/broker/" + topic, headers=[("Connection", "close")])
        for i in range(0, len(whole), 7):
            c.send(whole[i:i + 7])
            time.sleep(0.01)
        r = c.response(what="the request sent in pieces")
        check_equal((r.status, r.body, r.headers.get("connection")), (200, b"piped", "close"),
                    "the last answer")
        c.expect_closed(3, "the close after Connection: close")
        # HTTP/1.0 closes after one answer unless it asks for keep-alive.
        d = Http(hp)
        d.send(request_bytes("GET", "/broker/" + topic, version="HTTP/1.0"))
        check_equal(d.response().body, b"piped", "an HTTP/1.0 answer")
        d.expect_closed(3, "the close after an HTTP/1.0 answer")
        e = Http(hp)
        for _ in range(2):
            e.send(request_bytes("GET", "/broker/" + topic, version="HTTP/1.0",
                                 headers=[("Connection", "keep-alive")]))
            check_equal(e.response().status, 200, "HTTP/1.0 with keep-alive")


@_closes_sockets
def test_header_names_any_case():
    with _http_broker() as b:
        hp = _port(b, "http")
        topic = unique("case/")
        c = Http(hp)
        c.send(("POST /broker/%s?retain=true HTTP/1.1\r\nhOsT: 127.0.0.1\r\ncontent-LENGTH: 3\r\n"
                "CONNECTION: Keep-Alive\r\n\r\nabc" % topic).encode())
        r = c.response()
        check_equal((r.status, r.headers.get("connection")), (200, "keep-alive"),
                    "a publish with header names in odd case (%r)" % r)
        check_equal(c.request("GET", "/broker/" + topic).body, b"abc", "its body")
        c.send(b"POST /broker/x HTTP/1.1\r\ntransfer-encoding: identity\r\n\r\n")
        check_equal(c.response().status, 411, "transfer-encoding in lower case")
        c.expect_closed(4)


@_closes_sockets
def test_wildcard_read_is_bounded_to_1000_messages():
    with _http_broker() as b:
        hp = _port(b, "http")
        base = unique("many")
        c = Http(hp)
        count = 1100
        batch = b"".join(request_bytes("POST", "/broker/%s/%d?retain=true" % (base, i),
                                       b"%d" % i) for i in range(count))
        c.send(batch)
        for i in range(count):
            r = c.response(what="publish %d of %d" % (i + 1, count))
            check_equal(r.status, 200, "pipelined publish %d" % i)
        r = c.request("GET", "/broker/%s/%%23" % base, timeout=10)
        items = r.json()
        check_equal(len(items), 1000, "messages in the answer to %s/# (%d retained)"
                    % (base, count))
        for item in items:
            n = int(item["topic"].rsplit("/", 1)[1])
            check_equal(base64.b64decode(item["payload"]), b"%d" % n, "payload of %r" % item)


@_closes_sockets
def test_pipelining_client_that_does_not_read_costs_bounded_memory():
    """A client that pipelines GETs of a 64 KiB retained message and never reads the
    answers: the server must stop reading it when its answers pile up, not buffer
    64 KiB per 30-byte request without bound."""
    with _http_broker() as b:
        hp = _port(b, "http")
        topic = unique("amp/")
        _publish(hp, topic, os.urandom(65536), retain=True)
        before = _rss_kb(b.pid)
        c = Http(hp)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        one = request_bytes("GET", "/broker/" + topic)
        sent, requests = 0, 3000
        c.sock.settimeout(2.0)
        try:
            for _ in range(requests // 100):
                c.sock.sendall(one * 100)
                sent += 100
        except socket.timeout:
            pass  # the server stopped reading: what it should do
        time.sleep(1.0)
        after = _rss_kb(b.pid)
        print("# %d GETs of a 64 KiB message sent unread (%d kB); aviaryd RSS %d kB -> %d kB"
              % (sent, sent * len(one) // 1024, before, after), flush=True)
        check(after - before < 32 * 1024 or b.sanitized(),
              "aviaryd grew by %d kB for %d pipelined GETs nobody reads (%d kB of requests)"
              % (after - before, sent, sent * len(one) // 1024))
        # Another client is served meanwhile, and the stuck one gets its answers in order.
        check_equal(_request(hp, "GET", "/broker/%23").status, 200, "another client")
        for i in range(3):
            check_equal(c.response(timeout=10, what="answer %d" % i).status, 200,
                        "answer %d to the stuck client" % i)


def _rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise TestFailure("no VmRSS for pid %d" % pid)


# ---------------------------------------------------------------------------
# cloud mode

def _cloud(db, *args, **kw):
    return Broker("--mode", "cloud", "--db", db, "--listen", "http://%s:0" % HOST, *args, **kw)


def _instance(db, *args):
    name = unique("inst")
    ctl(db, "instance", "create", name, *args)
    return name


@_closes_sockets
def test_cloud_credentials():
    db = cloud_db()
    a, other = _instance(db), _instance(db)
    _, secret = new_token(db, a, "--ttl", "1h")
    other_id, other_secret = new_token(db, other, "--ttl", "1h")
    revoked_id, revoked = new_token(db, a, "--ttl", "1h")
    ctl(db, "token", "revoke", a, revoked_id)
    with _cloud(db) as b:
        hp = _port(b, "http")
        topic = unique("cred/")
        check_equal(_delivered(_publish(hp, topic, b"ok", retain=True, headers=_basic(a, secret))),
                    0, "publish with good credentials")
        r = _request(hp, "GET", "/broker/" + topic, headers=_basic(a, secret))
        check_equal((r.status, r.body), (200, b"ok"), "read with good credentials")
        bad = [("no Authorization", {}),
               ("a wrong secret", _basic(a, secret[:-1] + ("x" if secret[-1] != "x" else "y"))),
               ("an unknown instance", _basic("nosuch" + a, secret)),
               ("another instance's token", _basic(a, other_secret)),
               ("a revoked token", _basic(a, revoked)),
               ("the instance name alone", _basic(a, "")),
               ("not base64", {"Authorization": "Basic !!!!"}),
               ("no colon", {"Authorization": "Basic " + base64.b64encode(a.encode()).decode()}),
               ("a bearer token", {"Authorization": "Bearer " + secret}),
               ("a huge header", {"Authorization": "Basic " + "QUFB" * 1500})]
        for what, headers in bad:
            for method, body in (("POST", b"no"), ("GET", None)):
                r = _request(hp, method, "/broker/" + topic, body, headers)
                check_equal(r.status, 401, "%s %s (%r)" % (method, what, r))
                check(r.headers.get("www-authenticate", "").startswith("Basic "),
                      "WWW-Authenticate with %s: %r" % (what, r.headers))
        # The other instance's token works for the other instance, which sees nothing of a's.
        r = _request(hp, "GET", "/broker/" + topic, headers=_basic(other, other_secret))
        check_equal(r.status, 404, "the other instance reading a's topic (%r)" % r)
        check_equal(_get_json(hp, "%23", headers=_basic(other, other_secret)), {},
                    "the other instance's retained messages")
        check_equal(_request(hp, "GET", "/broker/" + topic, headers=_basic(a, secret)).body,
                    b"ok", "a's retained message after the refusals")
        # A token revoked while the broker runs stops working within 2 s.
        ctl(db, "token", "revoke", other, other_id)
        wait_for(lambda: _request(hp, "GET", "/broker/t", headers=_basic(other, other_secret)
                                  ).status == 401, 2.5, what="401 for a token just revoked")


@_closes_sockets
def test_cloud_keys_need_tls_unless_allowed():
    db = cloud_db()
    a = _instance(db)
    _, key = new_token(db, a)
    _, expiring = new_token(db, a, "--ttl", "1h")
    topic = unique("key/")
    with _cloud(db) as b:
        hp = _port(b, "http")
        mark = b.log_mark()
        r = _request(hp, "POST", "/broker/" + topic, b"k", _basic(a, key))
        check_equal(r.status, 403, "a key over plain http (%r)" % r)
        check("https" in r.json().get("error", ""), "the 403 says why: %r" % r.body)
        _check_log(b, mark, r"http 127\.0\.0\.1:\d+: POST /broker/\S+: 403", "a key over http")
        check_equal(_request(hp, "GET", "/broker/%23", None, _basic(a, key)).status, 403,
                    "a key reading over plain http")
        _publish(hp, topic, b"e", retain=True, headers=_basic(a, expiring))
    with _cloud(db, "--allow-keys-without-tls") as b:
        hp = _port(b, "http")
        _publish(hp, topic, b"k", retain=True, headers=_basic(a, key))
        r = _request(hp, "GET", "/broker/" + topic, headers=_basic(a, key))
        check_equal((r.status, r.body), (200, b"k"), "a key allowed without TLS")


@_closes_sockets
def test_cloud_expired_token_refused():
    db = cloud_db()
    a = _instance(db)
    _, secret = new_token(db, a, "--ttl", "1s")
    time.sleep(1.2)
    with _cloud(db) as b:
        hp = _port(b, "http")
        r = _request(hp, "POST", "/broker/t", b"x", _basic(a, secret))
        check_equal(r.status, 401, "an expired token (%r)" % r)
        check("expired" in r.json().get("error", ""), "the 401 says why: %r" % r.body)
        check("www-authenticate" in r.headers, "WWW-Authenticate: %r" % r.headers)


@_closes_sockets
def test_cloud_token_permissions():
    db = cloud_db()
    a = _instance(db)
    _, admin = new_token(db, a, "--ttl", "1h")
    _, pub_x = new_token(db, a, "--ttl", "1h", "--pub", "x/#")
    _, no_secret = new_token(db, a, "--ttl", "1h", "--deny-sub", "secret/#")
    _, bound = new_token(db, a, "--ttl", "1h", "--client-id", "device-7")
    with _cloud(db) as b:
        hp = _port(b, "http")
        for t in ("secret/a", "secret/b/c", "public/a", "y/1"):
            _publish(hp, t, t.encode(), retain=True, headers=_basic(a, admin))
        mark = b.log_mark()
        r = _request(hp, "POST", "/broker/y/2", b"no", _basic(a, pub_x))
        check_equal(r.status, 403, "publishing outside --pub x/# (%r)" % r)
        _check_log(b, mark, r"POST /broker/y/2: 403", "a denied publish")
        _publish(hp, "x/1", b"yes", retain=True, headers=_basic(a, pub_x))
        check_equal(_request(hp, "GET", "/broker/y/1", headers=_basic(a, pub_x)).body, b"y/1",
                    "a --pub token may still read")
        for path in ("secret/a", "secret/%23", "secret/+"):
            r = _request(hp, "GET", "/broker/" + path, headers=_basic(a, no_secret))
            check_equal(r.status, 403, "--deny-sub secret/# reading %s (%r)" % (path, r))
        check_equal(_request(hp, "GET", "/broker/public/a", headers=_basic(a, no_secret)).body,
                    b"public/a", "--deny-sub secret/# reading public/a")
        r = _request(hp, "GET", "/broker/%23", headers=_basic(a, no_secret))
        if r.status != 403:
            check_equal(r.status, 200, "--deny-sub secret/# reading # (%r)" % r)
            got = sorted(i["topic"] for i in r.json())
            check_equal(got, ["public/a", "x/1", "y/1"], "what --deny-sub secret/# reads of #")
        check_equal(sorted(_get_json(hp, "%23", headers=_basic(a, admin))),
                    ["public/a", "secret/a", "secret/b/c", "x/1", "y/1"],
                    "what a token without restrictions reads of #")
        r = _request(hp, "POST", "/broker/secret/a", b"w", _basic(a, no_secret))
        check_equal(r.status, 200, "--deny-sub does not restrict publishing (%r)" % r)
        # A device credential is for its one MQTT client id; HTTP has none.
        for method in ("POST", "GET"):
            r = _request(hp, method, "/broker/x/1", b"d" if method == "POST" else None,
                         _basic(a, bound))
            check_equal(r.status, 403, "%s with a token bound to a client id (%r)" % (method, r))


@_closes_sockets
def test_cloud_rate_limit_429_spares_other_instances():
    db = cloud_db()
    slow, other = _instance(db), _instance(db)
    ctl(db, "instance", "set", slow, "max-instance-messages-per-second", "2")
    _, s_secret = new_token(db, slow, "--ttl", "1h")
    _, o_secret = new_token(db, other, "--ttl", "1h")
    with _cloud(db) as b:
        hp = _port(b, "http")
        c = Http(hp)
        statuses, limited = [], None
        for i in range(30):
            r = c.request("POST", "/broker/fast/%d" % i, b"x",
                          headers=list(_basic(slow, s_secret).items()))
            statuses.append(r.status)
            if r.status == 429:
                limited = r
                break
            check_equal(r.status, 200, "publish %d under the rate (%r)" % (i, r))
        check(limited is not None, "no 429 after %d publishes at 2/s: %r"
              % (len(statuses), statuses))
        check(2 <= len(statuses) <= 5, "429 after %d publishes at a limit of 2/s"
              % (len(statuses) - 1))
        retry = limited.headers.get("retry-after", "")
        check(retry.isdigit() and 1 <= int(retry) <= 2, "Retry-After of the 429: %r" % retry)
        check("max-instance-messages-per-second" in limited.json().get("error", ""),
              "the 429 says why: %r" % limited.body)
        # The connection stays usable, and the other instance is not slowed by it.
        t0 = time.monotonic()
        with cloud_login(b.port, other, o_secret) as sub, \
                cloud_login(b.port, other, o_secret) as pub:
            sub.subscribe([("busy/#", 1)])
            for i in range(20):
                pub.publish("busy/%d" % i, b"m%d" % i, qos=1)
            got = [p.payload for p in sub.receive_all(20)]
            check_equal(got, [b"m%d" % i for i in range(20)], "the other instance's messages")
        for _ in range(5):
            _publish(hp, "busy/http", b"h", headers=_basic(other, o_secret))
        check(time.monotonic() - t0 < 3, "the other instance took %.1f s"
              % (time.monotonic() - t0))
        time.sleep(int(retry))
        r = c.request("POST", "/broker/after", b"x", headers=list(_basic(slow, s_secret).items()))
        check_equal(r.status, 200, "a publish after Retry-After (%r)" % r)


@_closes_sockets
def test_cloud_payload_and_storage_limits():
    db = cloud_db()
    a = _instance(db)
    ctl(db, "instance", "set", a, "max-payload", "100")
    ctl(db, "instance", "set", a, "max-retained", "2")
    _, secret = new_token(db, a, "--ttl", "1h")
    auth = _basic(a, secret)
    with _cloud(db) as b:
        hp = _port(b, "http")
        r = _request(hp, "POST", "/broker/big", b"x" * 101, auth)
        check_equal(r.status, 413, "a payload over max-payload 100 (%r)" % r)
        check("max-payload" in r.json().get("error", ""), "the 413 says why: %r" % r.body)
        _publish(hp, "big", b"x" * 100, retain=True, headers=auth)
        _publish(hp, "second", b"y", retain=True, headers=auth)
        r = _request(hp, "POST", "/broker/third?retain=true", b"z", auth)
        check_equal(r.status, 507, "a third retained message at max-retained 2 (%r)" % r)
        _publish(hp, "second", b"replaced", retain=True, headers=auth)
        r = _request(hp, "POST", "/broker/a%20b", b"z", auth)
        check_equal(r.status, 400, "a bad topic (%r)" % r)
        check_equal(sorted(_get_json(hp, "%23", headers=auth).items()),
                    [("big", (b"x" * 100, 0)), ("second", (b"replaced", 0))],
                    "the retained messages")
    # max-instance-bytes: retained messages fill it, then 507.
    full = _instance(db)
    ctl(db, "instance", "set", full, "max-instance-bytes", "10k")
    _, fsecret = new_token(db, full, "--ttl", "1h")
    with _cloud(db) as b:
        hp = _port(b, "http")
        statuses = []
        for i in range(10):
            r = _request(hp, "POST", "/broker/fill/%d?retain=true" % i, b"f" * 3000,
                         _basic(full, fsecret))
            statuses.append(r.status)
            if r.status != 200:
                break
        check_equal(statuses[-1], 507, "status once 10k are held (statuses %r)" % statuses)
        check(3 <= len(statuses) <= 5, "507 after %d publishes of 3000 bytes at 10k"
              % (len(statuses) - 1))
        check("max-instance-bytes" in r.json().get("error", ""), "the 507 says why: %r" % r.body)
        m = _metrics(hp)
        check(_m(m, "aviary_instance_quota_hits_total", instance=full,
                 reason="max-instance-bytes") >= 1, "quota hits of max-instance-bytes")
        check(_m(m, "aviary_instance_held_bytes", instance=full) > 10240, "held bytes")


# ---------------------------------------------------------------------------
# malformed and oversized requests

def _big_headers(n, size=10):
    return "".join("X-Header-%d: %s\r\n" % (i, "v" * size) for i in range(n))


_MALFORMED = [
    # (what, bytes, status, the reason in the log)
    ("garbage", b"GARBAGE\r\n\r\n", 400, "malformed request line"),
    ("binary junk", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400,
     "a control character"),
    ("a lower-case method", b"get /metrics HTTP/1.1\r\n\r\n", 400, "malformed method"),
    ("no version", b"GET /metrics\r\n\r\n", 400, "malformed request line"),
    ("two spaces", b"GET  /metrics HTTP/1.1\r\n\r\n", 400, "malformed request line"),
    ("an absolute target", b"GET http://127.0.0.1/metrics HTTP/1.1\r\n\r\n", 400,
     "the target must be a path"),
    ("HTTP/2.0", b"GET /metrics HTTP/2.0\r\n\r\n", 505, "only HTTP/1.0 and HTTP/1.1"),
    ("HTTP/0.9", b"GET /metrics HTTP/0.9\r\n\r\n", 505, "only HTTP/1.0 and HTTP/1.1"),
    ("%00 in the path", b"GET /broker/a%00b HTTP/1.1\r\n\r\n", 400, "decodes to a NUL"),
    ("a NUL in a header", b"GET /metrics HTTP/1.1\r\nX-A: a\x00b\r\n\r\n", 400,
     "a control character"),
    ("a control character in a header", b"GET /metrics HTTP/1.1\r\nX-A: a\x01b\r\n\r\n", 400,
     "a control character"),
    ("DEL in a header", b"GET /metrics HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n", 400,
     "a control character"),
    ("a bare LF", b"GET /metrics HTTP/1.1\r\nX-A: a\nX-B: b\r\n\r\n", 400,
     "a control character"),
    ("a bare CR", b"GET /metrics HTTP/1.1\r\nX-A: a\rb\r\n\r\n", 400, "a control character"),
    ("a header without a colon", b"GET /metrics HTTP/1.1\r\nNoColon\r\n\r\n", 400,
     "malformed header line"),
    ("a space before the colon", b"GET /metrics HTTP/1.1\r\nX-A : b\r\n\r\n", 400,
     "malformed header name"),
    ("a folded header", b"GET /metrics HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n", 400,
     "malformed header"),
    ("Content-Length: abc", b"POST /broker/a HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400,
     "malformed Content-Length"),
    ("Content-Length: -1", b"POST /broker/a HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400,
     "malformed Content-Length"),
    ("conflicting Content-Lengths",
     b"POST /broker/a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400,
     "conflicting Content-Length"),
    ("Transfer-Encoding: chunked",
     b"POST /broker/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n", 411,
     "must come with Content-Length"),
    ("Content-Length over 1 MiB, no body",
     b"POST /broker/a HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (WEB_MAX_BODY + 1), 413,
     "larger than this server accepts"),
    ("Content-Length: 10^18", b"POST /broker/a HTTP/1.1\r\nContent-Length: 999999999999999999"
     b"\r\n\r\n", 413, "larger than this server accepts"),
    ("Content-Length: 10^19", b"POST /broker/a HTTP/1.1\r\nContent-Length: 9999999999999999999"
     b"\r\n\r\n", 400, "malformed Content-Length"),
    ("a head over 8 KiB", ("GET /metrics HTTP/1.1\r\nX-Big: %s\r\n\r\n"
                           % ("b" * HTTP_MAX_HEAD)).encode(), 431, "too long"),
    ("a head over 8 KiB that never ends", b"GET /metrics HTTP/1.1\r\nX-Big: " +
     b"b" * (HTTP_MAX_HEAD + 100), 431, "too long"),
    ("a request line over 8 KiB", b"GET /broker/" + b"a" * HTTP_MAX_HEAD + b" HTTP/1.1\r\n\r\n",
     431, "too long"),
    ("65 headers", ("GET /metrics HTTP/1.1\r\n%s\r\n"
                    % _big_headers(HTTP_MAX_HEADERS + 1)).encode(), 431, "too many header"),
    ("200 headers", ("GET /metrics HTTP/1.1\r\n%s\r\n" % _big_headers(200, 1)).encode(), 431,
     "too many header"),
]


@_closes_sockets
def test_malformed_and_oversized_requests_refused_and_logged():
    with _http_broker() as b:
        hp = _port(b, "http")
        for what, data, status, why in _MALFORMED:
            mark = b.log_mark()
            c = Http(hp)
            c.try_send(data)
            r = c.response(what="the answer to %s" % what)
            check_equal(r.status, status, "status for %s (%r)" % (what, r))
            check_equal(r.headers.get("connection"), "close", "Connection header for %s" % what)
            c.expect_closed(4, "the close after %s" % what)
            c.close()
            _check_log(b, mark, r"http 127\.0\.0\.1:%d: %d %s: .*%s"
                       % (c.local_port, status, re.escape(r.reason), re.escape(why)), what)
        # The broker still serves HTTP and MQTT.
        paho_roundtrip(b.port)
        check_equal(_request(hp, "GET", "/broker/%23").status, 200, "GET after the refusals")


@_closes_sockets
def test_limits_are_inclusive():
    """64 headers, a head of exactly 8 KiB and a body of exactly 1 MiB are served."""
    with _http_broker("--max-payload", "2m") as b:
        hp = _port(b, "http")
        c = Http(hp)
        r = c.request("GET", "/broker/%23", headers=[("X-H%d" % i, "v")
                                                     for i in range(HTTP_MAX_HEADERS - 1)])
        check_equal(r.status, 200, "64 headers (Host and 63 more)")
        head = request_bytes("GET", "/broker/%23", headers=[("X-Pad", "")])
        pad = HTTP_MAX_HEAD - len(head)
        exact = request_bytes("GET", "/broker/%23", headers=[("X-Pad", "p" * pad)])
        check_equal(len(exact), HTTP_MAX_HEAD, "length of the test's request")
        c.send(exact)
        check_equal(c.response(what="an 8192-byte head").status, 200, "an 8192-byte head")
        c.send(request_bytes("GET", "/broker/%23", headers=[("X-Pad", "p" * (pad + 1))]))
        check_equal(c.response(what="an 8193-byte head").status, 431, "an 8193-byte head")
        c.expect_closed(4)
        body = os.urandom(WEB_MAX_BODY)
        topic = unique("mib/")
        d = Http(hp)
        r = d.request("POST", "/broker/%s?retain=true" % topic, body, timeout=10)
        check_equal(r.status, 200, "a body of exactly 1 MiB (%r)" % r)
        check(d.request("GET", "/broker/" + topic, timeout=10).body == body,
              "the 1 MiB payload read back")


# ---------------------------------------------------------------------------
# slow and idle clients

@_closes_sockets
def test_slow_and_idle_clients_are_closed():
    """A request line dribbled a byte a second gets 408 about 10 s after its first byte,
    a body dribbled likewise too; a connection that sends nothing (plain, TLS without a
    handshake, TLS after one) is closed about 10 s after it opened, and one that asked
    something about 30 s after its answer. Meanwhile HTTP and MQTT clients are served."""
    with _http_broker("--listen", "https://%s:0" % HOST, *_tls_args()) as b:
        hp, sp = _port(b, "http"), _port(b, "https")
        results = {}
        stop = threading.Event()

        def dribble(name, first, rest):
            try:
                c = Http(hp, timeout=20)
                c.send(first)
                t0 = time.monotonic()
                for ch in rest:
                    if stop.wait(1.0) or not c.try_send(bytes([ch])):
                        break
                    if c.eof or select_readable(c.sock):
                        break
                r = c.response(timeout=max(0.1, t0 + 14 - time.monotonic()), what=name)
                elapsed = time.monotonic() - t0
                c.expect_closed(4, "the close after the 408 (%s)" % name)
                results[name] = (r.status, elapsed, c.local_port)
            except BaseException as e:  # reported by the main thread
                results[name] = e

        def silent(name, port, ctx, ask, bound):
            try:
                c = Http(port, ctx=ctx, timeout=20)
                if ask:
                    check_equal(c.request("GET", "/broker/%23").status, 200, "the request")
                t0 = time.monotonic()
                if ask:  # still open after the 10 s a new connection has
                    try:
                        c._fill(t0 + HTTP_REQUEST_SEC + 2)
                        raise TestFailure("closed or answered %.1f s after its answer (%r)"
                                          % (time.monotonic() - t0, bytes(c.buf)))
                    except socket.timeout:
                        pass
                c.expect_closed(max(0.1, t0 + bound + 4 - time.monotonic()),
                                "the close of a connection that says nothing")
                results[name] = ("closed", time.monotonic() - t0, c.local_port)
            except BaseException as e:
                results[name] = e

        tls = _tls_context()
        jobs = {
            "line": (dribble, ("line", b"GET /me", b"trics HTTP/1.1\r\nX-Slow: " + b"s" * 100)),
            "body": (dribble, ("body", b"POST /broker/slow HTTP/1.1\r\nContent-Length: 50\r\n"
                               b"\r\n", b"b" * 50)),
            "idle": (silent, ("idle", hp, None, False, HTTP_REQUEST_SEC)),
            "tls-no-handshake": (silent, ("tls-no-handshake", sp, None, False, HTTP_REQUEST_SEC)),
            "tls-idle": (silent, ("tls-idle", sp, tls, False, HTTP_REQUEST_SEC)),
            "kept-alive": (silent, ("kept-alive", hp, None, True, HTTP_IDLE_SEC)),
        }
        threads = [threading.Thread(target=fn, args=args, daemon=True)
                   for fn, args in jobs.values()]
        mark = b.log_mark()
        for t in threads:
            t.start()
        try:
            served = 0
            deadline = time.monotonic() + HTTP_REQUEST_SEC + 4
            while time.monotonic() < deadline and any(
                    name not in results for name in jobs if name != "kept-alive"):
                check_equal(_request(hp, "GET", "/broker/%23").status, 200,
                            "an HTTP request during the slow ones")
                check_equal(_request(sp, "GET", "/broker/%23", ctx=tls).status, 200,
                            "an HTTPS request during the slow ones")
                paho_roundtrip(b.port)
                served += 1
                time.sleep(0.3)
            for t in threads:
                t.join(max(0.1, deadline + HTTP_IDLE_SEC - HTTP_REQUEST_SEC + 4
                           - time.monotonic()))
        finally:
            stop.set()
        check(served >= 10, "only %d HTTP and MQTT round trips in ~10 s" % served)
        for name in jobs:
            res = results.get(name)
            if isinstance(res, BaseException):
                raise TestFailure("the %s client: %s" % (name, res))
            check(res is not None, "the %s client did not finish" % name)
        for name in ("line", "body"):
            status, elapsed, port = results[name]
            check_equal(status, 408, "status for a %s dribbled a byte a second" % name)
            check(HTTP_REQUEST_SEC - 1.5 <= elapsed <= HTTP_REQUEST_SEC + 2.5,
                  "408 for the %s %.1f s after its first byte, expected ~%d s"
                  % (name, elapsed, HTTP_REQUEST_SEC))
            _check_log(b, mark, r"http 127\.0\.0\.1:%d: 408 Request Timeout: the request did "
                       "not arrive in time" % port, "the 408 of the %s" % name)
        for name, bound in (("idle", HTTP_REQUEST_SEC), ("tls-no-handshake", HTTP_REQUEST_SEC),
                            ("tls-idle", HTTP_REQUEST_SEC), ("kept-alive", HTTP_IDLE_SEC)):
            _, elapsed, _ = results[name]
            check(bound - 1.5 <= elapsed <= bound + 2.5,
                  "the %s connection closed after %.1f s, expected ~%d s"
                  % (name, elapsed, bound))


def select_readable(sock):
    """Has the server said something (an early answer) on `sock`?"""
    import select
    return bool(select.select([sock], [], [], 0)[0])


# ---------------------------------------------------------------------------
# the connection limit

def _fd_limit(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                soft = line.split()[3]
                return 1 << 30 if soft == "unlimited" else int(soft)
    raise TestFailure("no Max open files in /proc/%d/limits" % pid)


@_closes_sockets
def test_connection_limit_503_then_recovery():
    want = WEB_MAX_CONNECTIONS + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            raise Skip("needs %d descriptors; the hard limit is %d" % (want, hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    with _http_broker() as b:
        hp = _port(b, "http")
        limit = _fd_limit(b.pid)
        if limit < want:
            raise Skip("aviaryd may open %d descriptors, this test needs %d" % (limit, want))
        # 256 connections, each served once and then idle (kept alive for 30 s).
        conns = []
        for i in range(WEB_MAX_CONNECTIONS):
            c = Http(hp)
            conns.append(c)
            if i < WEB_MAX_CONNECTIONS - 1:
                c.send(request_bytes("GET", "/nope"))
        for i, c in enumerate(conns[:-1]):
            check_equal(c.response(what="connection %d" % i).status, 404,
                        "the answer on connection %d" % i)
        m = _metrics(hp, conn=conns[-1])
        check_equal(_m(m, "aviary_http_connections"), WEB_MAX_CONNECTIONS,
                    "aviary_http_connections at the limit")
        refused_before = _m(m, "aviary_refusals_total", reason="http-connections")
        mark = b.log_mark()
        over = Http(hp)
        r = over.response(what="the answer to connection %d" % (WEB_MAX_CONNECTIONS + 1))
        check_equal((r.status, r.body), (503, b"too many connections"), "one connection too many")
        over.expect_closed(4, "the close after the 503")
        _check_log(b, mark, r"http 127\.0\.0\.1:%d: refused: %d connections already open"
                   % (over.local_port, WEB_MAX_CONNECTIONS), "the 503")
        # MQTT is not affected.
        paho_roundtrip(b.port)
        m = _metrics(hp, conn=conns[-1])
        check_equal(_m(m, "aviary_refusals_total", reason="http-connections"),
                    refused_before + 1, "refusals after one connection too many")
        for c in conns[:10]:
            c.close()
        conns = conns[10:]

        def served():
            c = Http(hp)
            try:
                r = c.request("GET", "/broker/%23")
            except TestFailure:
                return False
            finally:
                c.close()
            return r.status == 200

        wait_for(served, 3, what="a new connection served after 10 closed")
        try:
            wait_for(lambda: _m(_metrics(hp, conn=conns[-1]), "aviary_http_connections")
                     == WEB_MAX_CONNECTIONS - 10, 3, what="aviary_http_connections == %d"
                     % (WEB_MAX_CONNECTIONS - 10))
        except TestFailure as e:
            raise TestFailure("%s: it is %r" % (e, _m(_metrics(hp, conn=conns[-1]),
                                                      "aviary_http_connections")))


# ---------------------------------------------------------------------------
# /metrics

@_closes_sockets
def test_metrics_desktop():
    with _http_broker() as b:
        hp = _port(b, "http")
        m0 = _metrics(hp)
        check_equal(_m(m0, "aviary_connections", transport="tcp"), 0, "tcp connections at start")
        check_equal(_m(m0, "aviary_messages_received_total"), 0, "messages at start")
        check_equal(_m(m0, "aviary_instance_messages_received_total", instance="local"), 0,
                    "local messages at start")
        topic = unique("m/")
        with PahoClient(b.port, unique("a")) as sub, PahoClient(b.port, unique("b")) as pub:
            sub.subscribe(topic, 1)
            pub.publish(topic, b"1", qos=1)
            pub.publish(topic, b"2", qos=1, retain=True)
            pub.publish(topic + "/x", b"3", qos=0)
            sub.wait_messages(2, topic=topic)
            # The QoS 0 publish has no acknowledgement to wait for: wait for its count.
            wait_for(lambda: _m(_metrics(hp), "aviary_messages_received_total") == 3, 5,
                     what="aviary_messages_received_total == 3")
            m = _metrics(hp)
            for name, labels, want in [
                    ("aviary_connections", {"transport": "tcp"}, 2),
                    ("aviary_connections", {"transport": "tls"}, 0),
                    ("aviary_messages_received_total", {}, 3),
                    ("aviary_messages_sent_total", {}, 2),
                    ("aviary_retained_messages", {}, 1),
                    ("aviary_subscriptions", {}, 1),
                    ("aviary_instance_connections", {"instance": "local"}, 2),
                    ("aviary_instance_messages_received_total", {"instance": "local"}, 3),
                    ("aviary_instance_messages_sent_total", {"instance": "local"}, 2),
                    ("aviary_instance_retained_messages", {"instance": "local"}, 1),
                    ("aviary_instance_subscriptions", {"instance": "local"}, 1)]:
                check_equal(_m(m, name, **labels), want, "%s%r" % (name, labels))
            check(_m(m, "aviary_held_bytes") > 0, "aviary_held_bytes with a retained message")
            check(_m(m, "aviary_resident_memory_bytes") > 1 << 20, "resident memory")
            # A publish over HTTP counts as a message received and sent.
            check_equal(_delivered(_publish(hp, topic, b"4")), 1, "delivered over HTTP")
            sub.wait_messages(3, topic=topic)
            m2 = _metrics(hp)
            check_equal(_m(m2, "aviary_messages_received_total"), 4, "after an HTTP publish")
            check_equal(_m(m2, "aviary_instance_messages_sent_total", instance="local"), 3,
                        "local deliveries after an HTTP publish")
            check_equal(_m(m2, "aviary_http_requests_total"),
                        _m(m, "aviary_http_requests_total") + 2,
                        "HTTP requests after a scrape and a publish")
        wait_for(lambda: _m(_metrics(hp), "aviary_connections", transport="tcp") == 0, 3,
                 what="aviary_connections{transport=\"tcp\"} back to 0")
        # A refused request counts as bad, and as no answer.
        m = _metrics(hp)
        c = Http(hp)
        c.send(b"GARBAGE\r\n\r\n")
        check_equal(c.response().status, 400, "garbage")
        m2 = _metrics(hp)
        check_equal(_m(m2, "aviary_http_bad_requests_total"),
                    _m(m, "aviary_http_bad_requests_total") + 1, "bad requests after garbage")
        check_equal(_m(m2, "aviary_http_requests_total"), _m(m, "aviary_http_requests_total") + 1,
                    "requests answered after garbage (the scrape only)")


@_closes_sockets
def test_metrics_cloud_instances_are_separate():
    db = cloud_db()
    a, b_name, idle = _instance(db), _instance(db), _instance(db)
    _, sa = new_token(db, a, "--ttl", "1h")
    _, sb = new_token(db, b_name, "--ttl", "1h")
    with _cloud(db) as b:
        hp = _port(b, "http")
        ca1, ca2 = cloud_login(b.port, a, sa), cloud_login(b.port, a, sa)
        cb = cloud_login(b.port, b_name, sb)
        try:
            ca1.subscribe([("#", 1)])
            ca2.publish("t/1", b"a1", qos=1)
            ca2.publish("t/2", b"a2", qos=1, retain=True)
            ca2.publish("t/3", b"a3", qos=1, retain=True)
            cb.publish("t/1", b"b1", qos=1)
            ca1.receive_all(3)
            _publish(hp, "h/1", b"hb", retain=True, headers=_basic(b_name, sb))
            m = _metrics(hp)
            expect = {
                "aviary_instance_connections": (2, 1, 0),
                "aviary_instance_messages_received_total": (3, 2, 0),
                "aviary_instance_messages_sent_total": (3, 0, 0),
                "aviary_instance_retained_messages": (2, 1, 0),
                "aviary_instance_subscriptions": (1, 0, 0),
            }
            for name, (wa, wb, wi) in expect.items():
                got = (_m(m, name, instance=a), _m(m, name, instance=b_name),
                       _m(m, name, instance=idle))
                check_equal(got, (wa, wb, wi), "%s of (%s, %s, %s)" % (name, a, b_name, idle))
            for name, total in [("aviary_connections", 3), ("aviary_messages_received_total", 5),
                                ("aviary_messages_sent_total", 3),
                                ("aviary_retained_messages", 3), ("aviary_subscriptions", 1)]:
                labels = {"transport": "tcp"} if name == "aviary_connections" else {}
                check_equal(_m(m, name, **labels), total, "%s of the process" % name)
            check(_m(m, "aviary_instance_held_bytes", instance=a) >
                  _m(m, "aviary_instance_held_bytes", instance=idle),
                  "held bytes of an instance with retained messages")
            for inst in (a, b_name, idle):
                check_equal(_m(m, "aviary_instance_quota_hits_total", instance=inst,
                               reason="max-retained"), 0, "quota hits of %s" % inst)
        finally:
            for c in (ca1, ca2, cb):
                c.close()


@_closes_sockets
def test_metrics_over_https_and_tls_handshake_failures():
    with _http_broker("--listen", "https://%s:0" % HOST, "--listen", "tls://%s:0" % HOST,
                      *_tls_args()) as b:
        sp, tp, hp = _port(b, "https"), _port(b, "tls"), _port(b, "http")
        ctx = _tls_context()
        m0 = _metrics(sp, ctx=ctx)
        failures = _m(m0, "aviary_tls_handshake_failures_total")
        check_equal(failures, 0, "TLS handshake failures at start")
        # Plain bytes to the tls:// listener, then plain HTTP to the https:// one.
        for port, data in ((tp, b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"),
                           (sp, request_bytes("GET", "/metrics"))):
            s = socket.create_connection((HOST, port), timeout=5)
            try:
                s.sendall(data)
                try:
                    s.recv(100)
                except OSError:
                    pass
            finally:
                s.close()
            failures += 1
            wait_for(lambda: _m(_metrics(hp), "aviary_tls_handshake_failures_total") == failures,
                     3, what="aviary_tls_handshake_failures_total == %d" % failures)
        m = _metrics(sp, ctx=ctx)
        check_equal(_m(m, "aviary_tls_handshake_failures_total"), failures,
                    "failures seen over https")
        c = Http(sp, ctx=ctx)
        m1 = _metrics(sp, conn=c)
        m2 = _metrics(sp, conn=c)
        check_equal(_m(m2, "aviary_http_requests_total"),
                    _m(m1, "aviary_http_requests_total") + 1,
                    "requests after two scrapes on one https connection")


# ---------------------------------------------------------------------------
# https

@_closes_sockets
def test_https_publish_and_read():
    with Broker("--listen", "https://%s:0" % HOST, *_tls_args()) as b:
        sp = _port(b, "https")
        ctx = _tls_context()
        topic = unique("tls/")
        with PahoClient(b.port, unique("sub")) as sub:
            sub.subscribe(topic, 2)
            check_equal(_delivered(_publish(sp, topic, b"secure", qos=2, retain=True, ctx=ctx)),
                        1, "delivered over https")
            m = sub.wait_messages(1, topic=topic)[0]
            check_equal((m.payload, m.qos), (b"secure", 2), "the message from https")
        r = _request(sp, "GET", "/broker/" + topic, ctx=ctx)
        check_equal((r.status, r.body), (200, b"secure"), "GET over https")
        check_equal(_get_json(sp, topic.split("/")[0] + "/%23", ctx=ctx),
                    {topic: (b"secure", 2)}, "GET # over https")
        c = Http(sp, ctx=ctx)
        for i in range(3):
            check_equal(c.request("POST", "/broker/%s?retain=true" % topic, b"k%d" % i).status,
                        200, "keep-alive over https, request %d" % i)
        check_equal(c.request("GET", "/broker/" + topic).body, b"k2", "keep-alive over https")
        # Unverified clients work too (a test certificate).
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        check_equal(_request(sp, "GET", "/broker/" + topic, ctx=insecure).body, b"k2",
                    "GET without verification")


@_closes_sockets
def test_https_cloud_key_accepted():
    db = cloud_db()
    a = _instance(db)
    _, key = new_token(db, a)
    with _cloud(db, "--listen", "https://%s:0" % HOST, *_tls_args()) as b:
        sp, hp = _port(b, "https"), _port(b, "http")
        ctx = _tls_context()
        _publish(sp, "k/1", b"over tls", retain=True, headers=_basic(a, key), ctx=ctx)
        r = _request(sp, "GET", "/broker/k/1", headers=_basic(a, key), ctx=ctx)
        check_equal((r.status, r.body), (200, b"over tls"), "a key over https")
        check_equal(_request(hp, "GET", "/broker/k/1", headers=_basic(a, key)).status, 403,
                    "the same key over http")
        r = _request(sp, "GET", "/broker/k/1", ctx=ctx)
        check_equal(r.status, 401, "no credentials over https (%r)" % r)


if __name__ == "__main__":
    run_tests(globals())
