#!/usr/bin/python3
"""The live web view (issue 14) in a real browser: headless Chromium.

The test connects an MQTT client and publishes messages, opens the page that
an http:// listener of aviaryd serves at / in Chromium (driven over the
DevTools pipe), and checks what the page shows: the client, its
subscription, the retained message in the topic tree and the live tail. It
takes a screenshot and checks it too (its size, the header's colour, ink in
the panels), and keeps it as web-view.png in $AVIARY_SCREENSHOT_DIR when set.
The view's JSON and stream are checked on their own as well: logins, a
token that may not read a topic, and the admin-only list of instances.

Skipped when Chromium is missing; nothing leaves 127.0.0.1.
"""

import base64
import http.client
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    HOST, Broker, RawClient, check, check_equal, cloud_db, ctl, new_token, run_tests, unique,
    wait_for)
from chromium import DevTools, chromium_path, png_pixels  # noqa: E402

WIDTH, HEIGHT = 1280, 900
HEADER_RGB = (0x1d, 0x24, 0x30)


def _http_port(b):
    return wait_for(lambda: next((p for s, _, p in b.listeners if s == "http"), None), 5.0,
                    what="the http:// listener")


def _get(port, path, auth=None):
    c = http.client.HTTPConnection(HOST, port, timeout=10)
    c.request("GET", path, headers={"Authorization": auth} if auth else {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


def _basic(instance, secret):
    return "Basic " + base64.b64encode(("%s:%s" % (instance, secret)).encode()).decode()


def _page_text(browser, selector):
    return browser.evaluate("(document.querySelector(%s) || {}).textContent || ''"
                            % json.dumps(selector))


def _wait_page(browser, selector, wanted, timeout=15.0):
    """Wait until the page's `selector` shows `wanted`; return its text."""
    try:
        return wait_for(lambda: (lambda t: t if wanted in t else None)(_page_text(browser,
                                                                                  selector)),
                        timeout, what="%r in %s" % (wanted, selector))
    except Exception:
        raise AssertionError("the page's %s never showed %r; it shows %r\n%s"
                             % (selector, wanted, _page_text(browser, "body"),
                                browser.log_tail()))


def _check_screenshot(png):
    width, height, rows, bpp = png_pixels(png)
    check_equal((width, height), (WIDTH, HEIGHT), "the screenshot's size")
    header = tuple(rows[10][20 * bpp + 200 * bpp:20 * bpp + 200 * bpp + 3])
    check_equal(header, HEADER_RGB, "the colour of the header bar at (220, 10)")
    # The clients panel (top left) holds text: pixels darker than the panel's white.
    ink = sum(1 for y in range(90, 200) for x in range(40, 600)
              if sum(rows[y][x * bpp:x * bpp + 3]) < 300)
    check(ink > 500, "the clients panel of the screenshot looks empty (%d dark pixels)" % ink)
    keep = os.environ.get("AVIARY_SCREENSHOT_DIR")
    if keep:
        with open(os.path.join(keep, "web-view.png"), "wb") as f:
            f.write(png)


def test_page_shows_clients_topics_and_the_live_tail():
    exe = chromium_path()
    with Broker("--listen", "http://%s:0" % HOST) as b:
        port = _http_port(b)
        client_id = unique("sensor")
        sub = RawClient(b.port)
        sub.connect(client_id)
        check_equal(sub.subscribe([("home/#", 1)]), [1], "SUBACK")
        pub = RawClient(b.port)
        pub.connect(unique("pub"))
        retained = "21.5 degrees " + unique("r")
        pub.publish("home/kitchen/temp", retained.encode(), retain=True, qos=1)
        with DevTools(exe, WIDTH, HEIGHT) as browser:
            browser.open("http://%s:%d/" % (HOST, port))
            _wait_page(browser, "#clients", client_id)
            _wait_page(browser, "#clients", "home/# q1")
            _wait_page(browser, "#tree", retained)
            _wait_page(browser, "#status", "live")
            tail = "live " + unique("t")
            deadline = time.monotonic() + 15
            while tail not in _page_text(browser, "#tail") and time.monotonic() < deadline:
                pub.publish("home/hall/motion", tail.encode(), qos=1)
                time.sleep(0.3)
            _wait_page(browser, "#tail", tail, timeout=1)
            # The instance's events too: a client that comes now.
            late = RawClient(b.port)
            late_id = unique("late")
            late.connect(late_id)
            _wait_page(browser, "#tail", "connected " + late_id)
            late.disconnect()
            # A few seconds of traffic, so that the chart has a line to show.
            for i in range(40):
                if browser.evaluate("state.points.filter((p) => p.in > 0).length") >= 3:
                    break
                pub.publish("home/hall/motion", b"tick %d" % i, qos=1)
                time.sleep(0.25)
            _wait_page(browser, "#rates-now", "in/s")
            _check_screenshot(browser.screenshot())
        sub.disconnect()
        pub.disconnect()


def test_page_asks_cloud_users_to_log_in_and_shows_their_instance():
    exe = chromium_path()
    db = cloud_db()
    inst = unique("view")
    ctl(db, "instance", "create", inst)
    _, secret = new_token(db, inst, "--ttl", "1h")
    with Broker("--mode", "cloud", "--db", db, "--listen", "http://%s:0" % HOST) as b:
        port = _http_port(b)
        with DevTools(exe, WIDTH, HEIGHT) as browser:
            browser.open("http://%s:%d/" % (HOST, port))
            wait_for(lambda: browser.evaluate(
                "!document.getElementById('login').classList.contains('hidden')"), 15,
                what="the login form")
            browser.open("http://%s:%d/#instance=%s&token=%s" % (HOST, port, inst, secret))
            _wait_page(browser, "#instance-name", inst)
            _wait_page(browser, "#status", "live")


def test_snapshot_and_stream_obey_the_token():
    db = cloud_db()
    inst, other = unique("view"), unique("other")
    ctl(db, "instance", "create", inst)
    ctl(db, "instance", "create", other)
    _, full = new_token(db, inst, "--ttl", "1h")
    _, narrow = new_token(db, inst, "--ttl", "1h", "--deny-sub", "secret/#")
    with Broker("--mode", "cloud", "--db", db, "--listen", "http://%s:0" % HOST) as b:
        port = _http_port(b)
        pub = RawClient(b.port)
        pub_id = unique("p")
        pub.connect(pub_id, username=inst, password=full)
        pub.publish("open/a", b"visible", retain=True, qos=1)
        pub.publish("secret/a", b"hidden", retain=True, qos=1)
        status, body = _get(port, "/view/snapshot", _basic(inst, full))
        check_equal(status, 200, "snapshot with a good token")
        topics = {t["topic"]: t["text"] for t in json.loads(body)["topics"]}
        check_equal(topics, {"open/a": "visible", "secret/a": "hidden"}, "what a full token sees")
        full_view = json.loads(_get(port, "/view/snapshot", _basic(inst, full))[1])
        check_equal(([c["id"] for c in full_view["clients"]], full_view["clients_shown"]),
                    ([pub_id], True), "the clients a token that reads everything sees")
        status, body = _get(port, "/view/snapshot", _basic(inst, narrow))
        narrow_view = json.loads(body)
        topics = {t["topic"] for t in narrow_view["topics"]}
        check_equal(topics, {"open/a"}, "what a token denied secret/# sees")
        check_equal((narrow_view["clients"], narrow_view["clients_shown"]), ([], False),
                    "the clients (their ids, addresses, filters) a narrower token sees")
        for auth, what in ((_basic(inst, "wrong"), "a wrong secret"),
                           (_basic(other, full), "another instance's name"), (None, "nothing")):
            status, body = _get(port, "/view/snapshot", auth)
            check_equal(status, 401, "snapshot with %s" % what)
            check("error" in json.loads(body), "a JSON error for %s: %r" % (what, body))
        status, _ = _get(port, "/view/instances", _basic(inst, full))
        check_equal(status, 401, "the list of instances with a token (admin only)")
        status, _ = _get(port, "/view/nothing", _basic(inst, full))
        check_equal(status, 404, "an unknown view resource")
        c = http.client.HTTPConnection(HOST, port, timeout=10)
        c.request("HEAD", "/view/stream", headers={"Authorization": _basic(inst, full)})
        r = c.getresponse()
        check_equal((r.status, r.read()), (200, b""), "HEAD of the stream: no stream")
        c.close()
        # The stream: a narrow token's tail leaves out what it may not read.
        c = http.client.HTTPConnection(HOST, port, timeout=10)
        c.request("GET", "/view/stream", headers={"Authorization": _basic(inst, narrow)})
        r = c.getresponse()
        check_equal((r.status, r.getheader("Content-Type")), (200, "text/event-stream"),
                    "the stream's answer")
        pub.publish("secret/b", b"not for the narrow token", qos=1)
        pub.publish("open/b", b"for everyone", qos=1)
        seen = b""
        deadline = time.monotonic() + 5
        while b"for everyone" not in seen and time.monotonic() < deadline:
            seen += r.fp.read1(4096)
        check(b"for everyone" in seen, "the stream did not show open/b: %r" % seen)
        check(b"not for the narrow token" not in seen, "the stream showed secret/b: %r" % seen)
        c.close()
        pub.disconnect()


if __name__ == "__main__":
    run_tests(globals())
