#!/usr/bin/python3
"""A real browser as an MQTT client: headless Chromium over ws://.

The test serves tests/browser/page.html and the MQTT.js browser bundle
(tests/browser/node_modules, from `npm install` there) on 127.0.0.1 itself,
opens the page in headless Chromium and has it talk MQTT over ws:// to an
aviaryd that the test started. A raw TCP client of the test is on the other
end: it receives what the page publishes and publishes what the page must
receive and echo back. Chromium's own WebSocket stack and MQTT.js are the
point: they frame and mask the way browsers do, which no Python client here
does.

Skipped when Chromium or the bundle is missing; nothing leaves 127.0.0.1.
"""

import http.server
import os
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    HOST, Broker, RawClient, TestFailure, check, check_equal, missing, run_tests,
    source_dir, unique, wait_for)
from chromium import Browser, chromium_path  # noqa: E402

BROWSER_DIR = os.path.join(source_dir(), "tests", "browser")
PAGE = os.path.join(BROWSER_DIR, "page.html")
BUNDLE = os.path.join(BROWSER_DIR, "node_modules", "mqtt", "dist", "mqtt.min.js")

# Chromium's first start (new profile, zygotes, GPU process) is slow on a
# loaded machine; after that every step is a local round trip.
START_TIMEOUT = 30.0
STEP_TIMEOUT = 10.0


def _bundle():
    """The path of the installed MQTT.js browser bundle, or missing()."""
    if not os.path.isfile(BUNDLE):
        missing("the MQTT.js bundle is not installed: run `npm install` in %s (%s missing)"
                   % (BROWSER_DIR, BUNDLE))
    return BUNDLE


def _ws_port(b):
    return wait_for(lambda: next((p for s, _, p in b.listeners if s == "ws"), None), 5.0,
                    what="the ws:// listener")


class PageServer:
    """A tiny HTTP server on 127.0.0.1 serving just the page and the bundle.

    The page posts each of its steps to /report; they are kept in `reports`
    (and every request line in `requests`) for the failure messages.
    """

    def __init__(self, bundle):
        self.files = {"/page.html": (PAGE, "text/html; charset=utf-8"),
                      "/mqtt.min.js": (bundle, "text/javascript; charset=utf-8")}
        self.reports = []
        self.requests = []
        self.httpd = None
        self.thread = None

    def __enter__(self):
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = urllib.parse.urlsplit(self.path).path
                if path not in owner.files:
                    self.send_error(404)
                    return
                name, ctype = owner.files[path]
                with open(name, "rb") as f:
                    body = f.read()
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n).decode("utf-8", "replace")
                if urllib.parse.urlsplit(self.path).path == "/report":
                    owner.reports.append(body)
                self.send_response(204)
                self.end_headers()

            def log_message(self, fmt, *args):
                # Kept for the failure message instead of noise on stderr.
                owner.requests.append(fmt % args)

        self.httpd = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.1,),
                                       daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
        return False

    def url(self, **query):
        return "http://%s:%d/page.html?%s" % (HOST, self.httpd.server_address[1],
                                               urllib.parse.urlencode(query))


def _from_page(tcp, browser, server, timeout, what):
    """The next PUBLISH the page sends to the TCP client, within `timeout` s.

    Fails at once, saying why, when Chromium exits or the page reports a failure.
    """
    deadline = time.monotonic() + timeout
    problem = None
    while problem is None:
        try:
            return tcp.receive(timeout=0.25, what=what)
        except TestFailure:
            if tcp.eof:
                problem = "the broker closed the TCP client's connection"
            elif browser.exited() is not None:
                problem = "Chromium exited with status %s" % browser.exited()
            elif any(r.startswith("failed") for r in server.reports):
                problem = "the page failed"
            elif time.monotonic() >= deadline:
                problem = "timed out after %.0f s" % timeout
    raise TestFailure("the TCP client got no %s: %s\n  page steps: %r\n  HTTP requests: %r\n"
                      "  --- Chromium stderr, last lines ---\n%s"
                      % (what, problem, server.reports, server.requests, browser.log_tail()))


def _round_trip(message, *broker_args):
    """Open the page, wait for its "ready", publish `message` to it over TCP and
    return what the page published back."""
    chromium = chromium_path()
    bundle = _bundle()
    with Broker("--listen", "ws://%s:0" % HOST, *broker_args) as b, PageServer(bundle) as server:
        base = unique("browser/")
        tcp = RawClient(b.port)
        tcp.connect(unique("tcp"))
        check_equal(tcp.subscribe([(base + "/from-page", 1)]), [1], "SUBACK of the TCP client")
        url = server.url(broker="ws://%s:%d/mqtt" % (HOST, _ws_port(b)), topic=base)
        with Browser(chromium, url) as browser:
            # Page -> TCP: the page publishes "ready" once its SUBSCRIBE is granted.
            ready = _from_page(tcp, browser, server, START_TIMEOUT, '"ready" from the page')
            check_equal((ready.topic, ready.payload), (base + "/from-page", b"ready"),
                        "the page's first message")
            # TCP -> page -> TCP: the page echoes what it received.
            tcp.publish(base + "/to-page", message, qos=1)
            reply = _from_page(tcp, browser, server, STEP_TIMEOUT, "reply from the page")
            check_equal(reply.topic, base + "/from-page", "the topic of the page's reply")
            # The page reports the message (and sets its title) after replying.
            wait_for(lambda: any(r.startswith("got: ") for r in server.reports), 5.0,
                     what="the page's report that it got the message (steps so far: %r)"
                     % server.reports)
        tcp.disconnect()
        return reply.payload, list(server.reports)


def test_browser_receives_and_answers_over_ws():
    sent = "hello browser " + unique("m")
    reply, steps = _round_trip(sent.encode())
    check(sent.encode() in reply, "the page's reply %r does not contain %r" % (reply, sent))
    check_equal(reply, b"got:" + sent.encode(), "the page's reply")
    check(any(s == "got: " + sent for s in steps),
          "the page did not report what it got: %r" % steps)


def test_browser_large_messages_both_ways():
    # Over 64 KiB: the WebSocket frames in both directions need the 64-bit
    # length form, and Chromium's masking of a large frame is exercised.
    sent = bytes(0x21 + i % 94 for i in range(100000))  # printable ASCII, mixed case
    reply, _ = _round_trip(sent, "--max-payload", "1m")
    check_equal(len(reply), len(sent) + 4, "the length of the page's reply")
    check(reply == b"got:" + sent, "the page's reply differs from the %d bytes sent"
          % len(sent))


if __name__ == "__main__":
    run_tests(globals())
