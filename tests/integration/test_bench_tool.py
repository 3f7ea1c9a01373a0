#!/usr/bin/python3
"""contrib/aviary-bench.c, the load generator of README's "Measuring it yourself".

Each scenario runs briefly (small counts, a second or two) against a real
aviaryd: over TCP, and fanin over TLS and fanout over WebSocket; noisy in
cloud mode with one login per tenant. The tool must exit 0, deliver every
message it counted as sent, and print figures that hold together. It needs
the aviary-bench binary next to aviaryd (`make check` and `make bench` build
it); without it the tests are skipped (failed with AVIARY_TEST_NO_MISSING=1).
"""

import atexit
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    HOST, Broker, aviaryd_path, check, check_equal, cloud_db, ctl, missing, new_token, run,
    run_tests, wait_for)

_dir = tempfile.mkdtemp(prefix="aviary-bench-test-")
atexit.register(shutil.rmtree, _dir, True)

# The broker's QoS 1/2 limits raised so that a fan-in's queue is not what is measured.
QOS_ARGS = ("--max-inflight", "1000", "--max-queued-messages", "100000")


def _tool():
    path = os.path.join(os.path.dirname(aviaryd_path()), "aviary-bench")
    if not os.access(path, os.X_OK):
        missing("%s is not built (make bench, or make check, builds it)" % path)
    return path


def _bench(*args, expect=0, timeout=40.0):
    """Run aviary-bench ARGS; check its exit status; return its key=value lines as a dict."""
    argv = [_tool()] + [str(a) for a in args]
    r = run(argv, timeout=timeout)
    out = r.stdout.decode("utf-8", "replace")
    err = r.stderr.decode("utf-8", "replace")
    check(r.returncode == expect, "%s: exit %d, not %d\nstdout:\n%s\nstderr:\n%s"
          % (" ".join(argv[1:]), r.returncode, expect, out, err))
    figures = dict(line.split("=", 1) for line in out.splitlines() if "=" in line
                   and not line.startswith("#"))
    if expect == 0:
        check(any(line.startswith("# how it was measured: ") for line in out.splitlines()),
              "no '# how it was measured' line in:\n" + out)
    return figures


def _num(figures, key):
    check(key in figures, "no %s= line in %r" % (key, figures))
    return float(figures[key])


def _check_latency(f, prefix=""):
    p50, p99, p999, top = (_num(f, prefix + k) for k in
                           ("lat_p50_us", "lat_p99_us", "lat_p999_us", "lat_max_us"))
    check(0 < p50 <= p99 <= p999 <= top < 10e6,
          "latency percentiles out of order or absurd: %s %s %s %s" % (p50, p99, p999, top))


def _check_flow(f, sent):
    check_equal(int(f["sent"]), sent, "messages sent")
    check_equal(f["delivered_frac"], "1.0000", "delivered fraction")
    check(_num(f, "rx_rate") > 0 and _num(f, "pub_rate") > 0, "rates: %r" % f)
    _check_latency(f)
    check_equal(f["failures"], "0", "failed connections")


def _check_cpu(f):
    check(0 <= _num(f, "broker_cpu_pct") < 400, "broker CPU: %r" % f)
    check(_num(f, "broker_rss_kb") > 1000, "broker RSS: %r" % f)


def _port(b, scheme):
    return wait_for(lambda: next((p for s, _, p in b.listeners if s == scheme), None), 5.0,
                    what="a %s listener" % scheme)


def _certificate():
    crt, key = os.path.join(_dir, "server.crt"), os.path.join(_dir, "server.key")
    if not os.path.exists(crt):
        openssl = shutil.which("openssl") or missing("the openssl command is not installed")
        r = run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
                 "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", crt], timeout=30)
        check(r.returncode == 0, "openssl req: %s" % r.stderr.decode("utf-8", "replace"))
    return crt, key


# ---------------------------------------------------------------------------
# the scenarios over TCP

def test_fanin_qos0_counts_every_delivery_and_the_broker_cpu():
    with Broker(log_level="warning") as b:
        f = _bench("fanin", "-p", b.port, "-P", 3, "-m", 2000, "--pid", b.pid)
        _check_flow(f, 6000)
        check_equal(f["pubs"], "3", "publishers")
        _check_cpu(f)
        # CPU time is counted in clock ticks (10 ms): a short run may show 0
        check(_num(f, "broker_us_per_msg") >= 0, "broker CPU per message: %r" % f)


def test_fanout_delivers_to_every_subscriber():
    with Broker(log_level="warning") as b:
        f = _bench("fanout", "-p", b.port, "-S", 4, "-m", 1000)
        _check_flow(f, 1000)
        check_equal(f["delivered"], "4000", "deliveries")


def test_qos1_and_qos2_are_acknowledged():
    with Broker(*QOS_ARGS, log_level="warning") as b:
        for scenario in ("qos1", "qos2"):
            f = _bench(scenario, "-p", b.port, "-P", 2, "-m", 500, "-w", 20)
            _check_flow(f, 1000)
            check_equal(f["acked"], "1000", "%s acknowledgements" % scenario)
            check_equal(f["ack_errors"], "0", "%s refused acknowledgements" % scenario)
            check(_num(f, "ack_rate") > 0, "ack_rate: %r" % f)


def test_latency_at_a_fixed_rate():
    with Broker(log_level="warning") as b:
        f = _bench("latency", "-p", b.port, "-r", 400, "-d", 1)
        _check_flow(f, 400)
        check_equal(f["lat_samples"], "400", "latency samples")
        # paced: 400 messages over about one second, not in a burst
        check(0.9 < _num(f, "elapsed_s") < 3, "elapsed: %r" % f)


def test_conns_reports_memory_per_connection():
    with Broker(log_level="warning") as b:
        f = _bench("conns", "-p", b.port, "-C", 300, "--hold", 0.3, "--pid", b.pid)
        check_equal(f["conns_ok"], "300", "connections made")
        check(_num(f, "connect_rate") > 0, "connect rate: %r" % f)
        check(_num(f, "rss_after_kb") >= _num(f, "rss_before_kb") > 0, "RSS: %r" % f)
        check(0 <= _num(f, "rss_per_conn_bytes") < 1e6, "RSS per connection: %r" % f)


def _tool_processes():
    """PIDs of running processes of the aviary-bench binary under test (from /proc)."""
    tool = os.path.realpath(_tool())
    pids = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and os.readlink("/proc/%s/exe" % pid) == tool:
                pids.append(int(pid))
        except OSError:
            pass  # gone meanwhile, or not ours to read
    return pids


def test_conns_during_sub_measures_the_stream_gap():
    with Broker(log_level="warning") as b:
        # the burst is made by a child process of the tool; its lines are in the output
        f = _bench("conns", "-p", b.port, "-C", 300, "--during-sub", "-r", 200, "--hold", 0.5)
        check_equal(f["conns"], "300", "connections asked for")
        check_equal(f["conns_ok"], "300", "connections made")
        check_equal(f["conns_failed"], "0", "connections failed")
        check_equal(f["concurrency"], "300", "all at once")
        check(_num(f, "connect_rate") > 0, "connect rate: %r" % f)
        check(_num(f, "stream_delivered") >= 200, "the stream ran: %r" % f)
        check(0 < _num(f, "max_gap_ms") < 10000, "max_gap_ms: %r" % f)
        check("max_send_gap_ms" in f and "max_gap_before_ms" in f, "gap figures: %r" % f)
        check_equal(f["failures"], "0", "failures")
        check_equal(_tool_processes(), [], "aviary-bench processes left running")
        # its --timeout reached while the burst process still holds its connections
        # (--hold 5): exit 3, and the burst process gone all the same
        f = _bench("conns", "-p", b.port, "-C", 300, "--during-sub", "-r", 200, "--hold", 5,
                   "-t", 3, expect=3)
        check_equal(f["timed_out"], "1", "timed_out")
        check_equal(_tool_processes(), [], "aviary-bench processes left after a timeout")


# ---------------------------------------------------------------------------
# other transports and MQTT 5.0

def test_fanin_over_tls_with_mqtt5():
    crt, key = _certificate()
    with Broker("--listen", "tls://%s:0" % HOST, "--tls-cert", crt, "--tls-key", key,
                log_level="warning") as b:
        tls = _port(b, "tls")
        f = _bench("fanin", "-p", tls, "--tls", "--cafile", crt, "--v5", "-P", 2, "-m", 1000)
        check_equal((f["transport"], f["mqtt"]), ("tls", "5.0"), "transport and version")
        _check_flow(f, 2000)
        f = _bench("conns", "-p", tls, "--tls", "-C", 50, "--hold", 0.2)
        check_equal(f["conns_ok"], "50", "TLS connections made")


def test_fanout_over_websocket():
    with Broker("--listen", "ws://%s:0" % HOST, log_level="warning") as b:
        ws = _port(b, "ws")
        f = _bench("fanout", "-p", ws, "--ws", "-S", 3, "-m", 1000, "-s", 2000)
        check_equal(f["transport"], "ws", "transport")
        _check_flow(f, 1000)
        f = _bench("latency", "-p", ws, "--ws", "--v5", "-q", 2, "-r", 200, "-d", 0.5)
        _check_flow(f, 100)


# ---------------------------------------------------------------------------
# noisy neighbour: two tenants of a cloud-mode broker

def test_noisy_steady_tenant_next_to_a_flooding_one():
    db = cloud_db()
    for name in ("steady", "flood"):
        ctl(db, "instance", "create", name)
    _, steady = new_token(db, "steady")
    _, flood = new_token(db, "flood")
    with Broker("--mode", "cloud", "--db", db, "--allow-keys-without-tls", "yes",
                log_level="warning") as b:
        f = _bench("noisy", "-p", b.port, "-u", "steady", "--password", steady,
                   "--flood-username", "flood", "--flood-password", flood, "-S", 2, "-r", 200,
                   "-d", 1, "--lead", 0.5, "--flood-pubs", 1, "--pid", b.pid)
        for phase in ("quiet_", "noisy_"):
            check_equal(f[phase + "delivered_frac"], "1.0000", phase + "delivered fraction")
            _check_latency(f, phase)
        check(_num(f, "flood_sent") > 0, "the flood ran: %r" % f)
        check(_num(f, "p99_ratio") > 0, "p99 ratio: %r" % f)
        # a wrong secret is a refused login: exit 3
        f = _bench("fanin", "-p", b.port, "-u", "steady", "--password", "wrong", "-m", 10,
                   expect=3)
        check(int(f["refused"]) >= 1, "refusal counted: %r" % f)


# ---------------------------------------------------------------------------
# what it refuses

def test_usage_errors_and_non_loopback_targets_exit_2():
    for args in (["nosuch"], ["fanin", "-q", "3"], ["fanin", "-s", "4"],
                 ["fanin", "--host", "192.0.2.1"], ["fanin", "--host", "::2"]):
        _bench(*args, expect=2)


def test_timeout_ends_the_run_with_3():
    with Broker(log_level="warning") as b:
        f = _bench("latency", "-p", b.port, "-r", 100, "-d", 30, "-t", 1, expect=3)
        check_equal(f["timed_out"], "1", "timed_out")


if __name__ == "__main__":
    run_tests(globals())
