#!/usr/bin/python3
"""One cloud-mode aviaryd, four transports: tcp://, tls://, ws:// and wss://.

Makes a throw-away database (one instance, one token) and a test certificate
authority with the `openssl` command, starts aviaryd in cloud mode with all
four listeners on free loopback ports, connects one paho-mqtt client over each
(MQTT 3.1.1 over TCP and WebSocket, MQTT 5 over TLS and secure WebSocket), has
every client publish one message, and prints who received what: a 4 x 4 table
that must be full. Exits 0 when it is.

    contrib/four-transports.py [--aviaryd PATH] [--aviaryctl PATH]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import paho.mqtt.client as mqtt

HOST = "127.0.0.1"
TRANSPORTS = ("tcp", "tls", "ws", "wss")


def make_certificates(d):
    def openssl(*args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True)
    ca_key, ca = os.path.join(d, "ca.key"), os.path.join(d, "ca.crt")
    key, csr, crt = (os.path.join(d, n) for n in ("server.key", "server.csr", "server.crt"))
    ext = os.path.join(d, "server.ext")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
            "/CN=four-transports CA", "-keyout", ca_key, "-out", ca)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", key,
            "-out", csr)
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
            "-days", "1", "-extfile", ext, "-out", crt)
    return ca, crt, key


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--aviaryd", default=os.path.join(here, "..", "aviaryd"))
    ap.add_argument("--aviaryctl", default=os.path.join(here, "..", "aviaryctl"))
    args = ap.parse_args()

    d = tempfile.mkdtemp(prefix="four-transports-")
    broker = None
    clients = {}
    try:
        ca, crt, key = make_certificates(d)
        db = os.path.join(d, "aviary.db")
        ctl = [args.aviaryctl, "--db", db]
        subprocess.run(ctl + ["instance", "create", "demo"], check=True, capture_output=True)
        out = subprocess.run(ctl + ["token", "create", "demo", "--ttl", "1h"], check=True,
                             capture_output=True, text=True).stdout
        secret = out.strip().splitlines()[-1]
        listen = []
        for scheme in TRANSPORTS:
            listen += ["--listen", "%s://%s:0" % (scheme, HOST)]
        broker = subprocess.Popen([args.aviaryd, "--mode", "cloud", "--db", db,
                                   "--tls-cert", crt, "--tls-key", key] + listen,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  stdin=subprocess.DEVNULL, text=True)
        ports = {}
        while len(ports) < len(TRANSPORTS):
            line = broker.stdout.readline()
            if not line:
                raise SystemExit("aviaryd exited before listening")
            print(line.rstrip())
            scheme, _, rest = line.split()[-1].partition("://")
            ports[scheme] = int(rest.rsplit(":", 1)[1])

        received = {t: [] for t in TRANSPORTS}
        for t in TRANSPORTS:
            v5 = t in ("tls", "wss")
            c = mqtt.Client(client_id="over-" + t,
                            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                            transport="websockets" if t.startswith("ws") else "tcp")
            if t.startswith("ws"):
                c.ws_set_options(path="/mqtt")
            if t in ("tls", "wss"):
                c.tls_set(ca_certs=ca)
            c.username_pw_set("demo", secret)
            c.on_message = (lambda t: lambda cl, u, m: received[t].append(m.payload.decode()))(t)
            c.connect(HOST, ports[t], 30)
            c.loop_start()
            c.subscribe("demo/#", 1)
            clients[t] = c
        time.sleep(1.0)
        for t, c in clients.items():
            c.publish("demo/" + t, "from " + t, qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(len(v) < 4 for v in received.values()):
            time.sleep(0.1)

        print("\n%-10s %s" % ("received", "  ".join("%-8s" % ("from " + t) for t in TRANSPORTS)))
        full = True
        for t in TRANSPORTS:
            row = ["yes" if "from " + s in received[t] else "NO" for s in TRANSPORTS]
            full &= all(r == "yes" for r in row)
            print("%-10s %s" % ("over " + t, "  ".join("%-8s" % r for r in row)))
        print("\n%s" % ("every message reached every transport" if full else "MISSING MESSAGES"))
        return 0 if full else 1
    finally:
        for c in clients.values():
            c.loop_stop()
            c.disconnect()
        if broker:
            broker.terminate()
            try:
                broker.wait(10)
            except subprocess.TimeoutExpired:
                broker.kill()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
