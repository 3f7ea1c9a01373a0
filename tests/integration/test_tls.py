#!/usr/bin/python3
"""TLS listeners (tls://): certificates, client certificates, reload, and the key rule.

The test makes its own certificate authorities and certificates with the
`openssl` command, in a temporary directory.
"""

import atexit
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    HOST, Broker, PahoClient, RawClient, Skip, TestFailure, aviaryctl, aviaryd_path, check,
    check_equal, connect_packet, missing, mosquitto_pub, mosquitto_sub, run, run_tests, unique,
    wait_for)

try:
    import paho.mqtt.client as mqtt
except ImportError:  # run_tests reports it
    mqtt = None

_dir = tempfile.mkdtemp(prefix="aviary-tls-")
atexit.register(shutil.rmtree, _dir, True)


def _path(name):
    return os.path.join(_dir, name)


def _openssl(*args):
    exe = shutil.which("openssl")
    if exe is None:
        missing("the openssl command is not installed (Debian: openssl)")
    r = run([exe] + list(args), timeout=30)
    if r.returncode != 0:
        raise TestFailure("openssl %s failed: %s" % (" ".join(args),
                                                     r.stderr.decode("utf-8", "replace")))


def _ca(name):
    if not os.path.exists(_path(name + ".crt")):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-subj", "/CN=aviary test %s" % name, "-keyout", _path(name + ".key"),
                 "-out", _path(name + ".crt"))
    return _path(name + ".crt")


def _cert(name, ca, server=False, expired=False):
    """A certificate `name` signed by CA `ca`; returns (cert, key) paths."""
    crt, key = _path(name + ".crt"), _path(name + ".key")
    if os.path.exists(crt):
        return crt, key
    _ca(ca)
    ext = _path(name + ".ext")
    with open(ext, "w") as f:
        if server:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                    "extendedKeyUsage=serverAuth\n")
        else:
            f.write("extendedKeyUsage=clientAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=%s" % name,
             "-keyout", key, "-out", _path(name + ".csr"))
    if not expired:
        _openssl("x509", "-req", "-in", _path(name + ".csr"), "-CA", _path(ca + ".crt"),
                  "-CAkey", _path(ca + ".key"), "-CAcreateserial", "-days", "2",
                  "-extfile", ext, "-out", crt)
        return crt, key
    # `openssl ca` can date a certificate in the past; it wants a small database.
    db = _path(name + "-ca")
    os.makedirs(db, exist_ok=True)
    open(os.path.join(db, "index.txt"), "w").close()
    conf = os.path.join(db, "ca.cnf")
    with open(conf, "w") as f:
        f.write("[ca]\ndefault_ca=d\n[d]\ndir=%s\ndatabase=$dir/index.txt\nnew_certs_dir=$dir\n"
                "serial=$dir/serial\ndefault_md=sha256\npolicy=p\ncopy_extensions=none\n"
                "[p]\ncommonName=supplied\n" % db)
    with open(os.path.join(db, "serial"), "w") as f:
        f.write("01\n")
    _openssl("ca", "-batch", "-config", conf, "-cert", _path(ca + ".crt"), "-keyfile",
             _path(ca + ".key"), "-startdate", "20200101000000Z", "-enddate",
             "20200102000000Z", "-extfile", ext, "-in", _path(name + ".csr"), "-out", crt)
    return crt, key


def _server_args(ca="ca", name="server", client_cert=None):
    crt, key = _cert(name, ca, server=True)
    args = ["--listen", "tls://%s:0" % HOST, "--tls-cert", crt, "--tls-key", key]
    if client_cert:
        args += ["--tls-ca", _ca(ca), "--tls-client-cert", client_cert]
    return args


def _tls_port(b):
    return wait_for(lambda: next((p for s, _, p in b.listeners if s == "tls"), None), 5.0,
                    what="the tls:// listener")


def _context(ca="ca", cert=None, maximum=None):
    ctx = ssl.create_default_context(cafile=_ca(ca))
    if cert:
        ctx.load_cert_chain(*_cert(cert, ca if cert != "stranger" else "otherca"))
    if maximum:
        ctx.maximum_version = maximum
    return ctx


def _tls_connect(port, ctx, client_id=None, **kw):
    """A TLS socket that sent CONNECT; returns (socket, CONNACK bytes)."""
    raw = socket.create_connection((HOST, port), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    s.sendall(connect_packet(client_id or unique("tls"), **kw))
    return s, s.recv(4)


def _check_log(b, mark, pattern, what):
    try:
        b.wait_log(pattern, since=mark, timeout=5)
    except TestFailure:
        raise TestFailure("no log line /%s/ after %s; log:\n%s"
                          % (pattern, what, b.log_text(mark)[-2000:]))


def _refused(port, ctx, what):
    """The handshake (or the first read after it, in TLS 1.3) must fail."""
    try:
        s, ack = _tls_connect(port, ctx)
        s.close()
    except (ssl.SSLError, OSError):
        return
    check(ack == b"", "%s: the broker answered %r" % (what, ack))


def test_mosquitto_clients_over_tls_and_tcp():
    ca = _ca("ca")
    with Broker(*_server_args()) as b:
        tls = _tls_port(b)
        topic = unique("tls/")
        sub = mosquitto_sub(tls, "--cafile", ca, "-t", topic, "-C", "2", "-q", "1")
        mosquitto_pub(tls, "--cafile", ca, "-t", topic, "-m", "over-tls", "-q", "1")
        mosquitto_pub(b.port, "-t", topic, "-m", "over-tcp", "-q", "1")
        for payload in ("over-tls", "over-tcp"):
            sub.wait_line(lambda l: l == payload, 5, what=payload)


def test_paho_over_tls():
    with Broker(*_server_args()) as b:
        tls = _tls_port(b)
        c = mqtt.Client(client_id=unique("paho-tls"), protocol=mqtt.MQTTv311)
        c.tls_set(ca_certs=_ca("ca"))
        got = []
        c.on_message = lambda cl, u, m: got.append(bytes(m.payload))
        c.connect(HOST, tls, 30)
        c.loop_start()
        try:
            topic = unique("ptls/")
            c.subscribe(topic, 1)
            time.sleep(0.3)
            c.publish(topic, b"round trip", 1)
            wait_for(lambda: got, 5, what="the message back over TLS")
            check_equal(got, [b"round trip"], "paho over TLS")
        finally:
            c.loop_stop()
            c.disconnect()


def test_client_certificate_required():
    _cert("client", "ca")
    _cert("expired", "ca", expired=True)
    _cert("stranger", "otherca")
    with Broker(*_server_args(client_cert="required")) as b:
        tls = _tls_port(b)
        s, ack = _tls_connect(tls, _context(cert="client"))
        check_equal(ack, b"\x20\x02\x00\x00", "CONNACK with a valid client certificate")
        s.close()
        for who, ctx, reason in [
                ("no certificate", _context(), r"TLS handshake failed: .*certificate"),
                ("an untrusted certificate", _context(cert="stranger"),
                 r"TLS handshake failed: .*certificate verify failed \(unable to get local"),
                ("an expired certificate", _context(cert="expired"),
                 r"TLS handshake failed: .*certificate verify failed \(certificate has expired")]:
            mark = b.log_mark()
            _refused(tls, ctx, who)
            _check_log(b, mark, reason, who)
        # Plain TCP on the same broker is not affected.
        RawClient(b.port).connect(unique("tcp"))


def test_client_certificate_optional():
    with Broker(*_server_args(client_cert="optional")) as b:
        tls = _tls_port(b)
        for ctx in (_context(), _context(cert="client")):
            s, ack = _tls_connect(tls, ctx)
            check_equal(ack, b"\x20\x02\x00\x00", "CONNACK with or without a certificate")
            s.close()
        _refused(tls, _context(cert="stranger"), "an untrusted certificate")


def test_old_protocols_and_garbage_refused():
    with Broker(*_server_args()) as b:
        tls = _tls_port(b)
        mark = b.log_mark()
        _refused(tls, _context(maximum=ssl.TLSVersion.TLSv1_1), "TLS 1.1")
        _check_log(b, mark, r"TLS handshake failed", "TLS 1.1")
        mark = b.log_mark()
        raw = socket.create_connection((HOST, tls), timeout=5)
        raw.sendall(connect_packet("plain"))  # MQTT without TLS
        try:
            check_equal(raw.recv(16), b"", "answer to plain MQTT on a TLS port")
        except ConnectionResetError:
            pass  # closed with unread input: a reset, as good as a close
        raw.close()
        _check_log(b, mark, r"TLS handshake failed", "plain MQTT on the TLS port")
        s, ack = _tls_connect(tls, _context())
        check_equal(ack, b"\x20\x02\x00\x00", "CONNACK afterwards")
        s.close()


def test_stalled_handshake_closed():
    with Broker(*_server_args()) as b:
        tls = _tls_port(b)
        mark = b.log_mark()
        raw = socket.create_connection((HOST, tls), timeout=15)
        t0 = time.monotonic()
        check_equal(raw.recv(16), b"", "the end of a stalled handshake")
        check(time.monotonic() - t0 > 8, "closed after %.1f s" % (time.monotonic() - t0))
        raw.close()
        _check_log(b, mark, r"TLS handshake not finished within 10 s", "a stalled handshake")


def test_sighup_reloads_certificate_keeping_connections():
    crt, key = _path("live.crt"), _path("live.key")
    for f, src in ((crt, _cert("server", "ca", server=True)[0]),
                   (key, _cert("server", "ca", server=True)[1])):
        shutil.copy(src, f)
    with Broker("--listen", "tls://%s:0" % HOST, "--tls-cert", crt, "--tls-key", key) as b:
        tls = _tls_port(b)
        old, ack = _tls_connect(tls, _context("ca"), "old")
        check_equal(ack, b"\x20\x02\x00\x00", "CONNACK before the reload")
        new_crt, new_key = _cert("server2", "ca2", server=True)
        shutil.copy(new_crt, crt)
        shutil.copy(new_key, key)
        mark = b.log_mark()
        b.send_signal(signal.SIGHUP)
        _check_log(b, mark, r"TLS certificate reloaded", "SIGHUP")
        s, ack = _tls_connect(tls, _context("ca2"), "new")
        check_equal(ack, b"\x20\x02\x00\x00", "CONNACK with the new certificate")
        s.close()
        _refused(tls, _context("ca"), "the old CA after the reload")
        old.sendall(b"\xc0\x00")  # PINGREQ on the connection made before the reload
        check_equal(old.recv(2), b"\xd0\x00", "PINGRESP on the old connection")
        old.close()
        # A broken certificate on SIGHUP keeps the current one.
        with open(crt, "w") as f:
            f.write("not a certificate\n")
        mark = b.log_mark()
        b.send_signal(signal.SIGHUP)
        _check_log(b, mark, r"TLS certificate not reloaded", "a broken certificate")
        s, ack = _tls_connect(tls, _context("ca2"))
        check_equal(ack, b"\x20\x02\x00\x00", "CONNACK after a failed reload")
        s.close()


def test_cloud_key_accepted_over_tls_only():
    d = tempfile.mkdtemp(prefix="aviary-tls-cloud-")
    atexit.register(shutil.rmtree, d, True)
    db = os.path.join(d, "aviary.db")
    for args in (["instance", "create", "acme"],):
        rc, _, err = aviaryctl(db, *args)
        check_equal(rc, 0, "aviaryctl %s (%s)" % (args, err))
    rc, out, err = aviaryctl(db, "--json", "token", "create", "acme")
    check_equal(rc, 0, "token create (%s)" % err)
    key = json.loads(out)["secret"]
    with Broker("--mode", "cloud", "--db", db, *_server_args()) as b:
        tls = _tls_port(b)
        s, ack = _tls_connect(tls, _context(), username="acme", password=key)
        check_equal(ack, b"\x20\x02\x00\x00", "CONNACK for a key over TLS")
        s.close()
        RawClient(b.port).connect(unique("k"), username="acme", password=key, expect_rc=5)


def test_tls_configuration_errors():
    crt, key = _cert("server", "ca", server=True)
    cases = [
        (["--listen", "tls://%s:0" % HOST], "needs tls-cert"),
        (["--listen", "tls://%s:0" % HOST, "--tls-cert", crt], "tls-key is missing"),
        (["--listen", "tls://%s:0" % HOST, "--tls-cert", "/nonexistent.pem", "--tls-key", key],
         "tls-cert /nonexistent.pem"),
        (["--listen", "tls://%s:0" % HOST, "--tls-cert", crt, "--tls-key",
          _cert("client", "ca")[1]], "key values mismatch"),
        (["--listen", "tls://%s:0" % HOST, "--tls-cert", crt, "--tls-key", key,
          "--tls-client-cert", "required"], "needs tls-ca"),
    ]
    for args, want in cases:
        r = run([aviaryd_path()] + args, timeout=10)
        err = r.stderr.decode("utf-8", "replace")
        check_equal(r.returncode, 1, "exit status for %s (stderr %r)" % (args, err))
        check(want in err, "stderr for %s does not say %r: %r" % (args, want, err))


def _default_listeners(*args):
    """Start a cloud-mode aviaryd without --listen in a network namespace of its own
    (its default ports are then free whatever this machine runs); return its
    `listening on` lines and its log."""
    unshare = shutil.which("unshare")
    if unshare is None or run([unshare, "-n", "true"], timeout=5).returncode != 0:
        raise Skip("cannot make a network namespace here (unshare -n needs root)")
    d = tempfile.mkdtemp(prefix="aviary-tls-defaults-")
    atexit.register(shutil.rmtree, d, True)
    log = open(os.path.join(d, "log"), "w+")
    p = subprocess.Popen([unshare, "-n", aviaryd_path(), "--mode", "cloud", "--db",
                          os.path.join(d, "a.db"), "--create-db", "yes"] + list(args),
                         stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
    try:
        lines = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "started" not in open(log.name).read():
            time.sleep(0.05)
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=10)
        lines = out.decode().splitlines()
        check_equal(p.returncode, 0, "exit status (log %r)" % open(log.name).read())
        return lines, open(log.name).read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        log.close()


def test_cloud_default_listeners():
    lines, log = _default_listeners()
    check_equal(lines, ["listening on tcp://0.0.0.0:1883", "listening on ws://0.0.0.0:80"],
                "listeners without tls-cert")
    check("tls://0.0.0.0:8883 and wss://0.0.0.0:443 not served: no tls-cert" in log,
          "no notice about TLS: %r" % log)
    crt, key = _cert("server", "ca", server=True)
    lines, _ = _default_listeners("--tls-cert", crt, "--tls-key", key)
    check_equal(lines, ["listening on tcp://0.0.0.0:1883", "listening on ws://0.0.0.0:80",
                        "listening on tls://0.0.0.0:8883", "listening on wss://0.0.0.0:443"],
                "listeners with tls-cert")


if __name__ == "__main__":
    run_tests(globals())
