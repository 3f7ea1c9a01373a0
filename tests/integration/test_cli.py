#!/usr/bin/python3
"""aviaryd's command line, configuration file, listeners and SIGTERM."""

import atexit
import os
import re
import shutil
import signal
import socket
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    HOST, Broker, PahoClient, RawClient, Skip, aviaryd_path, check, check_equal, cloud_db,
    cloud_login, ctl, new_token, publish_packet, raw_connect, run, run_tests, source_dir,
    unique, wait_for)
import subprocess  # noqa: E402

# Every one-shot invocation also gets a port-0 listener, so that a daemon which
# wrongly starts serving cannot collide with anything.
ANY_PORT = ["--listen", "tcp://%s:0" % HOST]


def _aviaryd(*args, timeout=5.0):
    r = run([aviaryd_path()] + list(args), timeout=timeout)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def _config(text):
    d = tempfile.mkdtemp(prefix="aviary-conf-")
    atexit.register(shutil.rmtree, d, True)
    path = os.path.join(d, "aviary.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


def _package_version():
    with open(os.path.join(source_dir(), "configure.ac")) as f:
        m = re.search(r"AC_INIT\(\[[^\]]*\],\s*\[([^\]]+)\]", f.read())
    return m.group(1) if m else None


def test_help_exits_0():
    for opt in ("-h", "--help"):
        rc, out, err = _aviaryd(opt)
        check_equal(rc, 0, "exit status of aviaryd %s (stderr: %r)" % (opt, err[-500:]))
        text = out + err
        for word in ("listen", "max-payload", "keepalive-max", "log-level"):
            check(word in text, "aviaryd %s does not mention %r:\n%s" % (opt, word, text))


def test_version_exits_0():
    version = _package_version()
    for opt in ("-V", "--version"):
        rc, out, err = _aviaryd(opt)
        check_equal(rc, 0, "exit status of aviaryd %s" % opt)
        check(version and version in out + err,
              "aviaryd %s prints %r, not the package version %r" % (opt, out + err, version))


def test_unknown_option_exits_1():
    rc, out, err = _aviaryd(*ANY_PORT, "--no-such-option", "3")
    check_equal(rc, 1, "exit status for an unknown option (stderr %r)" % err)
    check("no-such-option" in err, "stderr does not name the unknown option: %r" % err)


def test_bad_option_values_exit_1():
    for args, name in ((["--max-payload", "12x"], "max-payload"),
                       (["--max-subscriptions", "-5"], "max-subscriptions"),
                       (["--log-level", "loudest"], "log-level"),
                       (["--listen", "carrier-pigeon://nowhere"], "listen")):
        rc, out, err = _aviaryd(*(ANY_PORT + args))
        check_equal(rc, 1, "exit status for %s (stderr %r)" % (" ".join(args), err))
        check(name in err, "stderr does not name %r for %s: %r" % (name, " ".join(args), err))


def test_inconsistent_keepalive_limits_refused():
    rc, out, err = _aviaryd(*ANY_PORT, "--keepalive-min", "10", "--keepalive-max", "5")
    check_equal(rc, 1, "exit status for --keepalive-min 10 --keepalive-max 5 (stderr %r)" % err)
    check("keepalive" in err, "stderr does not say which setting is wrong: %r" % err)


def test_bad_config_line_names_file_line_and_reason():
    path = _config("# a test configuration\n\nno-such-directive 5\nmax-payload 100\n")
    rc, out, err = _aviaryd(*ANY_PORT, "-c", path)
    check_equal(rc, 1, "exit status for an unknown directive on line 3 (stderr %r)" % err)
    check(re.search(re.escape(path) + r"(:| line |, line )3\b", err),
          "stderr does not name %s line 3: %r" % (path, err))
    check("no-such-directive" in err or "unknown" in err.lower(),
          "stderr gives no reason: %r" % err)


def test_bad_config_value_names_file_line_and_directive():
    path = _config("max-payload 100\nmax-topic-length lots\n")
    rc, out, err = _aviaryd(*ANY_PORT, "-c", path)
    check_equal(rc, 1, "exit status for a bad value on line 2 (stderr %r)" % err)
    check(re.search(re.escape(path) + r"(:| line |, line )2\b", err),
          "stderr does not name %s line 2: %r" % (path, err))
    check("max-topic-length" in err, "stderr does not name the directive: %r" % err)


def test_missing_config_file():
    path = "/nonexistent-%s/aviary.conf" % unique("d")
    rc, out, err = _aviaryd(*ANY_PORT, "-c", path)
    check_equal(rc, 1, "exit status with a missing configuration file (aviaryd(8): 1)")
    check(path in err, "stderr does not name the missing file: %r" % err)


def _payload_limit_is(b, accepted, refused):
    c, _ = raw_connect(b.port, unique("ok"))
    c.publish("cf/t", b"a" * accepted, qos=1)
    bad, _ = raw_connect(b.port, unique("big"))
    bad.send(publish_packet("cf/t", b"a" * refused, qos=1, pid=1))
    got = bad.expect_closed(5, "a %d-byte payload to be refused" % refused)
    check(not got, "a %d-byte payload was answered: %r" % (refused, got))


def test_config_file_is_applied():
    path = _config("# limits for the test\nmax-payload 100   # bytes\n\n")
    with Broker("-c", path) as b:
        _payload_limit_is(b, 100, 101)


def test_command_line_overrides_config_file():
    path = _config("max-payload 100\n")
    with Broker("-c", path, "--max-payload", "200") as b:
        _payload_limit_is(b, 200, 201)


def test_option_equals_form():
    with Broker("--max-payload=300") as b:
        _payload_limit_is(b, 300, 301)


def test_sample_configuration_file_is_valid():
    # `make install` installs the sample as aviary.conf: a cloud service. With
    # an instance and a token with an expiry (the README's first run, over
    # plain TCP) a client is accepted; an anonymous one is not.
    sample = os.path.join(source_dir(), "etc", "aviary.conf")
    if not os.path.exists(sample):
        raise Skip("no etc/aviary.conf in the source tree")
    db = cloud_db()
    ctl(db, "instance", "create", "first")
    _, secret = new_token(db, "first", "--ttl", "30d")
    with Broker("-c", sample, "--db", db) as b:
        cloud_login(b.port, "first", secret).ping()
        anon = RawClient(b.port)
        anon.connect(unique("anon"), expect_rc=5)
        anon.expect_closed()


def test_port_0_prints_the_real_port():
    with Broker() as b:
        check(b.port and b.port != 0, "listening line gives port %r" % b.port)
        check_equal(b.stdout_lines[0], "listening on tcp://%s:%d" % (HOST, b.port),
                    "first line on stdout")
        c, _ = raw_connect(b.port, unique("c"))
        c.ping()


def _free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_two_listeners_share_one_broker():
    with Broker("--listen", "tcp://%s:%d" % (HOST, _free_port())) as b:
        wait_for(lambda: len(b.tcp_ports()) >= 2, 5, what="two `listening on` lines")
        p1, p2 = b.tcp_ports()[:2]
        check(p1 != p2, "two listeners on the same port %d" % p1)
        s, _ = raw_connect(p1, unique("s"))
        s.subscribe([("two/t", 1)])
        c, _ = raw_connect(p2, unique("p"))
        c.publish("two/t", b"across", qos=1)
        check_equal(s.receive().payload, b"across", "message across two listeners")


def test_sigterm_exits_0_and_closes_clients():
    with Broker() as b:
        raw, _ = raw_connect(b.port, unique("raw"))
        paho = PahoClient(b.port, unique("paho"))
        try:
            rc, elapsed = b.terminate(5)
            check_equal(rc, 0, "exit status after SIGTERM")
            check(elapsed < 3, "aviaryd took %.1f s to exit after SIGTERM" % elapsed)
            raw.expect_closed(3, "the client connection to be closed on SIGTERM")
            check(paho.disconnected.wait(3), "the paho client did not see its connection close")
        finally:
            paho.close()


def test_explicit_listen_on_a_busy_port_exits_2():
    """The fallback to a free port is only for the default listener (aviaryd(8): status 2)."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind((HOST, 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        rc, out, err = _aviaryd("--listen", "tcp://%s:%d" % (HOST, port))
        check_equal(rc, 2, "exit status when --listen names a port in use (stderr %r)" % err)
        check(str(port) in err, "stderr does not name the busy address: %r" % err)
        check("listening on" not in out, "aviaryd printed %r" % out)
    finally:
        holder.close()


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (our child? no: the daemon's parent is init) still counts as gone.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_daemonize_prints_address_writes_pid_file_and_serves():
    """-d detaches after the listeners are open: the address is printed, the pid file names
    the daemon, it serves clients, and SIGTERM stops it and removes the pid file."""
    d = tempfile.mkdtemp(prefix="aviary-daemon-")
    atexit.register(shutil.rmtree, d, True)
    pid_file = os.path.join(d, "aviaryd.pid")
    pid = None
    try:
        rc, out, err = _aviaryd("-d", "--pid-file", pid_file, *ANY_PORT)
        check_equal(rc, 0, "exit status of aviaryd -d (stderr %r)" % err)
        m = re.search(r"listening on tcp://127\.0\.0\.1:(\d+)", out)
        check(m, "aviaryd -d did not print its address: %r" % out)
        port = int(m.group(1))
        text = wait_for(lambda: os.path.exists(pid_file) and open(pid_file).read().strip(),
                        what="the pid file")
        pid = int(text)
        check(_process_alive(pid), "the pid file names %d, which is not running" % pid)
        client, _ = raw_connect(port, client_id="daemon-check")
        client.close()
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not _process_alive(pid), what="the daemon to stop on SIGTERM")
        pid = None
        wait_for(lambda: not os.path.exists(pid_file), what="the pid file to be removed")
    finally:
        if pid is not None and _process_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_daemonize_reports_a_busy_port_before_detaching():
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind((HOST, 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        rc, out, err = _aviaryd("-d", "--listen", "tcp://%s:%d" % (HOST, port))
        check_equal(rc, 2, "exit status of aviaryd -d on a busy port (stderr %r)" % err)
    finally:
        holder.close()


def _payload_accepted(port, size):
    c, _ = raw_connect(port, unique("hup"))
    with c:
        c.send(publish_packet("hup/t", b"h" * size, qos=1, pid=1))
        try:
            c.read_packet(3)
            return True
        except Exception:
            return False


def test_sighup_reloads_limits_from_the_file():
    path = _config("max-payload 100\n")
    with Broker("-c", path) as b:
        check(not _payload_accepted(b.port, 150), "150 bytes accepted with max-payload 100")
        with open(path, "w") as f:
            f.write("max-payload 200\n")
        b.send_signal(signal.SIGHUP)
        wait_for(lambda: _payload_accepted(b.port, 150), 5,
                 what="a 150-byte payload to be accepted after max-payload 200 and SIGHUP")
        c, _ = raw_connect(b.port, unique("after"))
        c.ping()


def test_sighup_with_a_broken_file_keeps_running_config():
    path = _config("max-payload 200\n")
    with Broker("-c", path) as b:
        mark = b.log_mark()
        with open(path, "w") as f:
            f.write("max-payload 200\nthis is not a directive\n")
        b.send_signal(signal.SIGHUP)
        b.wait_log(re.escape(path), since=mark, timeout=5)
        b.check_alive()
        check(_payload_accepted(b.port, 150), "150 bytes refused after a failed reload")
        check(not _payload_accepted(b.port, 250), "250 bytes accepted after a failed reload")


def test_sigint_exits_0():
    with Broker() as b:
        c, _ = raw_connect(b.port, unique("int"))
        b.send_signal(signal.SIGINT)
        c.expect_closed(3, "the client connection to be closed on SIGINT")
        rc, _ = b.terminate(5)  # already exiting; SIGTERM again is harmless
        check_equal(rc, 0, "exit status after SIGINT")


def test_default_listener_falls_back_when_1883_is_taken():
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        try:
            holder.bind((HOST, 1883))
            holder.listen(1)
        except OSError:
            raise Skip("port 1883 is used by another program; cannot take it for the test")
        with Broker(listen=None) as b:
            check(b.port != 1883, "aviaryd says it listens on 1883, which the test holds")
            check(1883 < b.port < 1983, "fallback port %d is not a next free port after 1883"
                  % b.port)
            c, _ = raw_connect(b.port, unique("fb"))
            c.ping()
    finally:
        holder.close()


def test_default_listener_is_1883_when_free():
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind((HOST, 1883))
    except OSError:
        raise Skip("port 1883 is used by another program")
    finally:
        probe.close()
    with Broker(listen=None) as b:
        check_equal(b.port, 1883, "default TCP port")
        c, _ = raw_connect(b.port, unique("d"))
        c.ping()


# ---- issue 15: the rough edges a new operator hits ---------------------------

def _held_port():
    """A listening socket on a free loopback port: (socket, port)."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind((HOST, 0))
    holder.listen(1)
    return holder, holder.getsockname()[1]


def test_explicit_listen_on_a_busy_port_names_url_and_owner_once():
    """Issue 15, points 17 and 18: an explicit listener does not "try the next port"; the
    error names the URL and the program holding the port (this test), and is printed once."""
    holder, port = _held_port()
    try:
        for scheme in ("tcp", "http"):
            url = "%s://%s:%d" % (scheme, HOST, port)
            rc, out, err = _aviaryd("--listen", url)
            check_equal(rc, 2, "exit status for --listen %s in use (stderr %r)" % (url, err))
            check("trying" not in err, "an explicit listener talks of trying the next port: %r"
                  % err)
            check(url in err, "stderr does not name %s: %r" % (url, err))
            check("(pid %d)" % os.getpid() in err,
                  "stderr does not name the program holding the port (pid %d): %r"
                  % (os.getpid(), err))
            check_equal(err.count("cannot listen on"), 1, "times the error is on stderr (%r)" % err)
    finally:
        holder.close()


def test_start_errors_are_printed_once():
    """Issue 15, point 18: a cloud database that cannot be opened is one line on stderr."""
    d = tempfile.mkdtemp(prefix="aviary-once-")
    atexit.register(shutil.rmtree, d, True)
    rc, out, err = _aviaryd(*ANY_PORT, "--mode", "cloud", "--db", d)  # a directory
    check_equal(rc, 1, "exit status for a database that is a directory (stderr %r)" % err)
    lines = [l for l in err.splitlines() if d in l]
    check_equal(len(lines), 1, "lines naming the database on stderr (%r)" % err)


_FALLBACK_SCRIPT = (
    "import socket, subprocess, sys, os\n"
    "held = []\n"
    "for port in (1883, 1884):\n"
    "    s = socket.socket(); s.bind(('127.0.0.1', port)); s.listen(1); held.append(s)\n"
    "p = subprocess.Popen([sys.argv[1]], stdout=subprocess.PIPE, stderr=subprocess.PIPE)\n"
    "lines = [p.stdout.readline().decode().strip() for _ in range(3)]\n"
    "p.terminate(); _, err = p.communicate(timeout=10)\n"
    "print(os.getpid()); print('\\n'.join(lines)); sys.stderr.write(err.decode())\n")


def test_default_listener_fallback_warns_and_names_the_owner():
    """Issue 15, point 7: when 1883 is taken the desktop listener moves, and a warning names
    the program that holds 1883 and says that its clients talk to that program. Run in a
    network namespace of its own, so that 1883 is ours to take."""
    unshare = "/usr/bin/unshare"
    if not os.path.exists(unshare) or run([unshare, "-n", "true"], timeout=5).returncode:
        raise Skip("cannot make a network namespace here (unshare -n needs root)")
    r = subprocess.run([unshare, "-n", sys.executable, "-c", _FALLBACK_SCRIPT, aviaryd_path()],
                       capture_output=True, timeout=30)
    out, err = r.stdout.decode().split("\n"), r.stderr.decode()
    holder = int(out[0])
    check_equal(out[1:4], ["listening on tcp://127.0.0.1:1885", "listening on ws://127.0.0.1:1886",
                           "listening on http://127.0.0.1:1887"], "the listeners (log %r)" % err)
    for port, moved in ((1883, 1885), (1884, 1886)):
        m = re.search(r"\[warning\] \S+: port %d is taken by (\S+) \(pid (\d+)\), so aviaryd "
                      r"listens on port %d instead: clients that connect to port %d talk to"
                      % (port, moved, port), err)
        check(m, "no warning naming the owner of port %d: %r" % (port, err[-1500:]))
        check_equal(int(m.group(2)), holder, "the pid named as the owner of %d" % port)
    # 1885 was taken by aviaryd's own listener that moved first: no warning about itself
    check("port 1885 is taken" not in err, "aviaryd warns about its own listener: %r" % err)


def test_mosquitto_habits_get_the_aviary_spelling():
    """Issue 15, point 8."""
    cases = (
        (["-p", "1883"], "--listen tcp://127.0.0.1:1883"),
        (["--port", "8000"], "--listen tcp://127.0.0.1:8000"),
        (["--daemon"], "--daemonize"),
        (["--config-file", "/etc/mosquitto/mosquitto.conf"], "-c FILE"),
        (["--max-paylod", "1k"], "did you mean --max-payload?"),
        (["-c", _config("# mosquitto.conf\nlistener 1883\nallow_anonymous true\n")],
         "'listener': that is mosquitto's; aviary says listen tcp://0.0.0.0:1883"),
        (["-c", _config("persistence true\n")], "db PATH"),
        (["-c", _config("password_file /etc/mosquitto/passwd\n")], "password-file"),
        (["-c", _config("allow_anonymous false\n")], "mode cloud"),
    )
    for args, want in cases:
        rc, out, err = _aviaryd(*(ANY_PORT + args))
        check_equal(rc, 1, "exit status for %s (stderr %r)" % (" ".join(args), err))
        check(want in err, "aviaryd %s: stderr lacks %r: %r" % (" ".join(args), want, err))
    with Broker("--verbose", log_level=None) as b:  # mosquitto's -v, spelled long
        b.wait_log(r"\[info\]|\[notice\]", timeout=5)


def _help_text():
    rc, out, err = _aviaryd("-h")
    check_equal(rc, 0, "exit status of aviaryd -h")
    return out


def test_help_values_are_accepted():
    """Issue 15, point 14: every value -h shows for tls-client-cert and log-level starts the
    broker, and so does 'require', which an earlier -h showed."""
    text = _help_text()
    for name in ("tls-client-cert", "log-level"):
        m = re.search(r"--%s (\S+)" % name, text)
        check(m, "-h lacks --%s" % name)
        values = m.group(1).split("|")
        check(len(values) >= 3, "-h shows %r for --%s" % (m.group(1), name))
        if name == "tls-client-cert":
            values.append("require")
        for v in values:
            extra = ["--tls-ca", os.path.join(source_dir(), "README")] \
                if name == "tls-client-cert" and v != "none" else []
            with Broker("--" + name, v, *extra, log_level=None if name == "log-level" else "debug"):
                pass


def test_help_shows_the_real_defaults():
    """Issue 15, point 15: -h names the cloud default database (the one cloud mode uses) and
    every default listener of desktop mode."""
    text = _help_text()
    for url in ("tcp://127.0.0.1:1883", "ws://127.0.0.1:1884", "http://127.0.0.1:1885",
                "tcp://0.0.0.0:1883", "ws://0.0.0.0:80"):
        check(url in text, "-h does not show the default listener %s" % url)
    # A deep --prefix (make distcheck's) puts the path on a line of its own.
    m = re.search(r"--db PATH.*?cloud\s+(/\S+\.db)", text, re.S)
    check(m, "-h does not give the cloud default of --db:\n%s" % text)
    if os.path.exists(m.group(1)):
        return  # an installed database: not ours to start a broker on
    rc, out, err = _aviaryd(*ANY_PORT, "--mode", "cloud")
    check_equal(rc, 1, "exit status of cloud mode without its default database (%r)" % err)
    check(m.group(1) in err, "cloud mode does not use the -h default %s: %r" % (m.group(1), err))


def test_cloud_mode_refuses_a_missing_database():
    """Issue 15, point 13: a typo in --db must not start an empty broker; create-db yes, or
    desktop mode, creates it."""
    d = tempfile.mkdtemp(prefix="aviary-db-")
    atexit.register(shutil.rmtree, d, True)
    typo = os.path.join(d, "typo.db")
    rc, out, err = _aviaryd(*ANY_PORT, "--mode", "cloud", "--db", typo)
    check_equal(rc, 1, "exit status for a missing cloud database (stderr %r)" % err)
    check(typo in err and "does not exist" in err, "stderr does not name %s: %r" % (typo, err))
    check("aviaryctl --db %s init" % typo in err and "--create-db yes" in err,
          "stderr does not say how to create it: %r" % err)
    check(not os.path.exists(typo), "aviaryd created %s" % typo)
    with Broker("--mode", "cloud", "--db", typo, "--create-db", "yes"):
        check(os.path.exists(typo), "--create-db yes did not create %s" % typo)
    desk = os.path.join(d, "desktop.db")
    with Broker("--db", desk):
        check(os.path.exists(desk), "desktop mode did not create %s" % desk)


if __name__ == "__main__":
    run_tests(globals())
