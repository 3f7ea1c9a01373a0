#!/usr/bin/python3
"""What a Prometheus scrape costs the broker (issue 14).

Two measurements against one cloud-mode aviaryd with many instances:

  scrape   time GET /metrics --scrapes times (median and max, and the size),
           with every instance of the catalog in it;
  fanout   a fan-out benchmark (mqttbench fanout: one publisher, --subs
           subscribers, QoS 0) in one instance, run --rounds times without
           and with a scraper that GETs /metrics every --interval seconds
           (A B A B ...), and the ratio of the median delivery rates.

    python3 contrib/metrics-load.py --aviaryd ./aviaryd --aviaryctl ./aviaryctl \\
        --mqttbench /tmp/bench/mqttbench --instances 1000 --rounds 5

It makes a temporary database with aviaryctl (--instances instances; with
--live N, the first N get a token and one MQTT client that stays connected,
so that their figures are not all zero), starts aviaryd on free ports of
127.0.0.1 (tcp:// and http://, cloud mode, --allow-keys-without-tls yes),
and stops it by PID at the end, also on errors and on SIGINT/SIGTERM. The
broker is pinned to the last CPU and the load to the others when taskset is
there (--no-pin: no pinning). mqttbench is the load generator of the shared
benchmark kit (make it there first).
"""

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

STARTED = []


def stop_all():
    for p in STARTED:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def on_signal(signum, frame):
    stop_all()
    sys.exit(128 + signum)


def ctl(args, db, *words):
    out = subprocess.run([args.aviaryctl, "--db", db] + list(words), check=True,
                         capture_output=True, text=True, timeout=30)
    return out.stdout


def make_db(args, tmp):
    db = os.path.join(tmp, "metrics.db")
    names = ["inst%05d" % i for i in range(args.instances)]
    ctl(args, db, "instance", "create", names[0])
    ctl(args, db, "instance", "set", names[0], "max-messages-per-second", "0")
    ctl(args, db, "instance", "set", names[0], "max-instance-messages-per-second", "0")
    # The fan-out's subscribers and publisher, past the default plan's 100 connections.
    ctl(args, db, "instance", "set", names[0], "max-connections", str(args.subs + 10))
    # A few at a time: each aviaryctl is a process of its own.
    running = []
    for n in names[1:]:
        running.append(subprocess.Popen([args.aviaryctl, "--db", db, "instance", "create", n],
                                        stdout=subprocess.DEVNULL))
        if len(running) == 4:
            if running.pop(0).wait(60) != 0:
                raise SystemExit("aviaryctl instance create failed")
    for p in running:
        if p.wait(60) != 0:
            raise SystemExit("aviaryctl instance create failed")
    secrets = {}
    for n in names[:max(1, args.live)]:
        secrets[n] = json.loads(ctl(args, db, "token", "create", n, "--json"))["secret"]
    return db, names, secrets


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pin(args, cpus):
    if args.no_pin or not shutil.which("taskset") or os.cpu_count() < 2:
        return []
    return ["taskset", "-c", cpus]


def start_broker(args, db, tmp):
    tcp, web = free_port(), free_port()
    last = str(os.cpu_count() - 1)
    log = open(os.path.join(tmp, "aviaryd.log"), "w")
    cmd = pin(args, last) + [args.aviaryd, "--mode", "cloud", "--db", db,
                             "--allow-keys-without-tls", "yes", "--log-level", "warning",
                             "--listen", "tcp://127.0.0.1:%d" % tcp,
                             "--listen", "http://127.0.0.1:%d" % web]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    STARTED.append(p)
    for _ in range(2):
        line = p.stdout.readline()
        if not line.startswith("listening on"):
            raise SystemExit("aviaryd did not start: %r (log in %s)" % (line, tmp))
    return p, tcp, web


def mqtt_connect(port, instance, secret, client_id):
    """A raw MQTT 3.1.1 CONNECT; returns the socket once CONNACK says yes."""
    def s(b):
        return len(b).to_bytes(2, "big") + b
    body = s(b"MQTT") + bytes([4, 0xC2]) + (60).to_bytes(2, "big")
    body += s(client_id.encode()) + s(instance.encode()) + s(secret.encode())
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(bytes([0x10, len(body)]) + body if len(body) < 128 else
                 bytes([0x10, (len(body) & 127) | 128, len(body) >> 7]) + body)
    ack = sock.recv(4)
    if len(ack) < 4 or ack[3] != 0:
        raise SystemExit("CONNECT to %s refused: %r" % (instance, ack))
    return sock


def scrape(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    t0 = time.monotonic()
    c.request("GET", "/metrics")
    r = c.getresponse()
    body = r.read()
    elapsed = time.monotonic() - t0
    c.close()
    if r.status != 200:
        raise SystemExit("GET /metrics: %d %s" % (r.status, body[:200]))
    return elapsed, body


def measure_scrape(args, port, names):
    times, size = [], 0
    for _ in range(args.scrapes):
        t, body = scrape(port)
        times.append(t)
        size = len(body)
    series = len(re.findall(rb'^aviary_instance_connections\{', body, re.M))
    if series != len(names):
        raise SystemExit("/metrics has %d instances, expected %d" % (series, len(names)))
    print("scrape: %d instances, %d bytes, median %.1f ms, max %.1f ms (%d scrapes)"
          % (series, size, statistics.median(times) * 1000, max(times) * 1000, args.scrapes))


class Scraper(threading.Thread):
    def __init__(self, port, interval):
        super().__init__(daemon=True)
        self.port, self.interval = port, interval
        self.stop = threading.Event()
        self.times = []

    def run(self):
        while not self.stop.is_set():
            t, _ = scrape(self.port)
            self.times.append(t)
            self.stop.wait(self.interval)


def fanout(args, port, instance, secret, broker_pid):
    cmd = pin(args, "0-%d" % max(0, os.cpu_count() - 2)) + [
        args.mqttbench, "fanout", "-p", str(port), "-S", str(args.subs), "-m",
        str(args.messages), "-s", "64", "-u", instance, "--password", secret,
        "--pid", str(broker_pid), "--quiet", "-t", "60"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    kv = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    if "rx_rate" not in kv:
        raise SystemExit("mqttbench gave no rx_rate: %s %s" % (out.stdout[-500:], out.stderr[-500:]))
    return float(kv["rx_rate"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--aviaryd", required=True)
    ap.add_argument("--aviaryctl", required=True)
    ap.add_argument("--mqttbench", required=True)
    ap.add_argument("--instances", type=int, default=1000)
    ap.add_argument("--live", type=int, default=100,
                    help="instances with a connected client (default 100)")
    ap.add_argument("--scrapes", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--subs", type=int, default=100)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--interval", type=float, default=1.0,
                    help="seconds between scrapes during the fan-out (default 1)")
    ap.add_argument("--skip-fanout", action="store_true")
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    tmp = tempfile.mkdtemp(prefix="aviary-metrics-")
    try:
        t0 = time.monotonic()
        db, names, secrets = make_db(args, tmp)
        print("database: %d instances, %d tokens in %.0f s" % (len(names), len(secrets),
                                                                time.monotonic() - t0))
        broker, tcp, web = start_broker(args, db, tmp)
        clients = [mqtt_connect(tcp, n, secrets[n], "live-%s" % n) for n in names[:args.live]]
        measure_scrape(args, web, names)
        if not args.skip_fanout:
            plain, scraped, scrape_times = [], [], []
            for r in range(args.rounds):
                plain.append(fanout(args, tcp, names[0], secrets[names[0]], broker.pid))
                s = Scraper(web, args.interval)
                s.start()
                scraped.append(fanout(args, tcp, names[0], secrets[names[0]], broker.pid))
                s.stop.set()
                s.join(30)
                scrape_times += s.times
                print("round %d: without scraping %.0f msg/s, with %.0f msg/s (%d scrapes)"
                      % (r + 1, plain[-1], scraped[-1], len(s.times)))
            a, b = statistics.median(plain), statistics.median(scraped)
            print("fanout: median without %.0f msg/s, with %.0f msg/s, ratio %.3f; "
                  "scrapes during it: median %.1f ms, max %.1f ms"
                  % (a, b, b / a, statistics.median(scrape_times) * 1000,
                     max(scrape_times) * 1000))
        for c in clients:
            c.close()
    finally:
        stop_all()
        if args.keep:
            print("kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
