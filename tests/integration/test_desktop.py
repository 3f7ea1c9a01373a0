#!/usr/bin/python3
"""Desktop mode as people coming from Mosquitto use it (issue 15, points 6, 9, 18, 19):

- an anonymous listener beyond loopback is warned about, loudly;
- password-file admits only its users (3.1.1 and 5, wrong and missing credentials,
  SIGHUP picks up a new user, refused in cloud mode, a broken file stops the start);
- topics may hold spaces and any UTF-8 in desktop mode by default; in cloud mode only
  where a plan or an instance sets utf8-topics 1;
- the log of a 3.1.1 persistent session says its expiry is "never", not "-1 s".

The warning test binds 0.0.0.0 inside a network namespace of its own (unshare -n), so
nothing is ever exposed beyond this test.
"""

import hashlib
import os
import shutil
import select
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    HOST, Broker, RawClient, Skip, TestFailure, aviaryd_path, check, check_equal, cloud_db,
    cloud_login, ctl, new_token, run, run_tests, unique, wait_for)
from mqtt5 import V5Client  # noqa: E402

APPLY_WITHIN = 2.0  # aviaryd picks up database changes within this (test_cloud.py)
WARNING = "lets ANYONE"


def _entry(user, password, iterations=1000):
    """A password-file line, computed here independently of aviaryd and aviaryctl."""
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return "%s:pbkdf2-sha256:%d:%s:%s\n" % (user, iterations, salt.hex(), digest.hex())


def _aviaryctl(*args, input=None):
    return run([os.environ.get("AVIARYCTL", "aviaryctl")] + list(args), input=input)


def _password_file(*lines):
    d = os.path.join(os.environ.get("TMPDIR", "/tmp"), unique("pw"))
    os.makedirs(d)
    path = os.path.join(d, "passwords")
    with open(path, "w") as f:
        f.write("# users of the test\n\n" + "".join(lines))
    return path


def _start_in_netns(*args):
    """aviaryd in a network namespace of its own; returns its stderr once it listens."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        raise Skip("needs root and unshare(1) for a network namespace")
    argv = [unshare, "--net", "--", aviaryd_path(), "--log-level", "notice"] + list(args)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline()
        check(line.startswith(b"listening on"), "aviaryd did not listen: %r" % line)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    return err.decode("utf-8", "replace")


def test_anonymous_listener_beyond_loopback_warns():
    err = _start_in_netns("--listen", "tcp://0.0.0.0:0")
    check(WARNING in err and "tcp://0.0.0.0:" in err and "password-file" in err,
          "no loud warning for an anonymous listener on 0.0.0.0: %r" % err)
    pw = _password_file(_entry("alice", "secret"))
    err = _start_in_netns("--listen", "tcp://0.0.0.0:0", "--password-file", pw)
    check(WARNING not in err, "warned although password-file is set: %r" % err)


def test_loopback_listeners_do_not_warn():
    with Broker(listen="tcp://%s:0" % HOST, log_level="notice") as b:
        with Broker(listen="tcp://[::1]:0", log_level="notice") as b6:
            for broker in (b, b6):
                broker.stop()
                check(WARNING not in broker.log_text(), "a loopback listener was warned about")


def test_password_file_admits_only_its_users():
    pw = _password_file(_entry("alice", "s3cret"), _entry("bob", "hunter2 with spaces"))
    with Broker("--password-file", pw) as b:
        b.wait_log(r"password-file .*: 2 users")
        RawClient(b.port).connect("a1", username="alice", password="s3cret")
        RawClient(b.port).connect("b1", username="bob", password="hunter2 with spaces")
        RawClient(b.port).connect("n1", expect_rc=5)  # no user name: not authorized
        RawClient(b.port).connect("w1", username="alice", password="wrong", expect_rc=4)
        RawClient(b.port).connect("w2", username="alice", expect_rc=4)  # no password
        RawClient(b.port).connect("w3", username="carol", password="s3cret", expect_rc=4)
        v5 = V5Client(b.port)
        v5.connect("v5a", username="alice", password=b"s3cret")
        V5Client(b.port).connect("v5n", expect_reason=0x87)
        V5Client(b.port).connect("v5w", username="bob", password=b"nope", expect_reason=0x86)
        # The second login of the same user with the same password (the quick path).
        RawClient(b.port).connect("a2", username="alice", password="s3cret")
        RawClient(b.port).connect("w4", username="alice", password="s3cret!", expect_rc=4)


def test_password_file_reloaded_on_sighup():
    pw = _password_file(_entry("alice", "one"))
    with Broker("--password-file", pw) as b:
        RawClient(b.port).connect("c1", username="carol", password="two", expect_rc=4)
        with open(pw, "a") as f:
            f.write(_entry("carol", "two"))
        mark = b.log_mark()
        b.send_signal(signal.SIGHUP)
        b.wait_log(r"password-file .*: 2 users", since=mark)
        RawClient(b.port).connect("c2", username="carol", password="two")
        # A broken file on SIGHUP: the old users stay, the log says why.
        with open(pw, "a") as f:
            f.write("dave:plaintext\n")
        mark = b.log_mark()
        b.send_signal(signal.SIGHUP)
        b.wait_log(r"password-file not reloaded.*:5: expected USER", since=mark)
        RawClient(b.port).connect("c3", username="carol", password="two")


def test_aviaryctl_passwd_makes_users_aviaryd_admits():
    pw = os.path.join(os.path.dirname(_password_file()), "made-by-aviaryctl")
    r = _aviaryctl("passwd", pw, "alice", input=b"correct horse\n")
    check_equal(r.returncode, 0, "aviaryctl passwd (stderr %r)" % r.stderr)
    check(b"alice" in r.stdout, "aviaryctl passwd says nothing: %r" % r.stdout)
    r = _aviaryctl("--json", "passwd", pw, "bob", input=b"b0b\n")
    check_equal(r.stdout.strip(), b'{"file": "%s", "user": "bob", "action": "set"}' % pw.encode(),
                "passwd --json")
    check_equal(os.stat(pw).st_mode & 0o777, 0o600, "the password file's mode")
    with open(pw) as f:
        text = f.read()
    # Field by field: a random hex salt or hash may well contain "b0b".
    fields = [f for line in text.splitlines() for f in line.split(":")]
    check("correct horse" not in text and "b0b" not in fields, "a password in clear: %r" % text)
    for args, inp, says in ((["passwd", pw, "carol"], b"", "no password"),
                            (["passwd", pw, "carol"], b"\n", "empty password"),
                            (["passwd", pw, "a:b"], b"x\n", "':'"),
                            (["passwd", pw, "dave", "--delete"], None, "no user 'dave'")):
        r = _aviaryctl(*args, input=inp)
        check(r.returncode == 1 and says.encode() in r.stderr,
              "%r: status %d, stderr %r" % (args, r.returncode, r.stderr))
    with Broker("--password-file", pw) as b:
        RawClient(b.port).connect("a", username="alice", password="correct horse")
        RawClient(b.port).connect("b", username="bob", password="b0b")
        r = _aviaryctl("passwd", pw, "bob", "--delete")
        check_equal(r.returncode, 0, "passwd --delete (stderr %r)" % r.stderr)
        mark = b.log_mark()
        b.send_signal(signal.SIGHUP)
        b.wait_log(r"password-file .*: 1 users", since=mark)
        RawClient(b.port).connect("b2", username="bob", password="b0b", expect_rc=4)
        RawClient(b.port).connect("a2", username="alice", password="correct horse")


def _read_pty(fd, done, what, timeout=5.0):
    """Read the terminal until done(text) or its end; fail after `timeout` s."""
    seen = b""
    deadline = time.monotonic() + timeout
    while not done(seen):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TestFailure("aviaryctl printed no %s: %r" % (what, seen))
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 1024)
        except OSError:  # the other side closed: the program ended
            chunk = b""
        if not chunk:
            break
        seen += chunk
    return seen


def test_aviaryctl_passwd_asks_twice_on_a_terminal():
    import pty
    pw = os.path.join(os.path.dirname(_password_file()), "typed")
    for first, second, status in ((b"typed pw", b"typed pw", 0), (b"one", b"two", 1)):
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(os.environ.get("AVIARYCTL", "aviaryctl"),
                     ["aviaryctl", "passwd", pw, "erin"])
        out = b""
        try:
            for answer in (first, second):
                out += _read_pty(fd, lambda seen: seen.rstrip().endswith(b":"), "a prompt")
                os.write(fd, answer + b"\n")
            out += _read_pty(fd, lambda seen: False, "the end")
        finally:
            os.close(fd)
            _, raw = os.waitpid(pid, 0)
        check_equal(os.waitstatus_to_exitcode(raw), status, "passwd on a terminal (%r)" % out)
        check(first not in out, "the password was echoed: %r" % out)
    with Broker("--password-file", pw) as b:
        RawClient(b.port).connect("e", username="erin", password="typed pw")


def test_password_file_errors_stop_the_start():
    bad = _password_file("alice:pbkdf2-sha256:1000:00:11\n")
    for args, says in ((["--password-file", bad], ":3: salt and hash"),
                       (["--password-file", "/nonexistent/pw"], "/nonexistent/pw"),
                       (["--mode", "cloud", "--db", "x.db", "--password-file", bad],
                        "password-file is for desktop mode")):
        r = run([aviaryd_path(), "--listen", "tcp://%s:0" % HOST] + args, timeout=10)
        err = r.stderr.decode("utf-8", "replace")
        check(r.returncode != 0, "aviaryd started with %r" % args)
        check(says in err, "stderr does not say %r: %r" % (says, err))


def _roundtrip(port, topic, **login):
    """Subscribe to `topic`, publish to it, return what arrived (3.1.1)."""
    sub = RawClient(port)
    sub.connect(unique("s"), **login)
    codes = sub.subscribe([(topic, 0)])
    if codes != [0]:
        return "SUBACK %r" % codes
    pub = RawClient(port)
    pub.connect(unique("p"), **login)
    pub.publish(topic, b"hello")
    return sub.receive().topic


def test_utf8_topics_in_desktop_mode_by_default():
    topics = ["living room/temp", "caf\u00e9/\u00e9t\u00e9", "\u6e29\u5ea6/\u5ba4\u5185",
              "k\u00fcche/licht an!"]
    with Broker() as b:
        for t in topics:
            check_equal(_roundtrip(b.port, t), t, "a message on %r" % t)
        # Controls stay out: a 3.1.1 publisher with a tab in its topic is closed.
        c = RawClient(b.port)
        c.connect("tab")
        c.publish("a\tb", b"x")
        c.expect_closed(what="the broker to close a client whose topic holds a tab")
    with Broker("--utf8-topics", "0") as b:
        check_equal(_roundtrip(b.port, "living room/temp"), "SUBACK [128]",
                    "utf8-topics 0 in desktop mode")


def test_utf8_topics_per_plan_and_instance_in_cloud_mode():
    db = cloud_db()
    narrow = unique("narrow")
    wide = unique("wide")
    planned = unique("planned")
    plan = unique("plan")
    ctl(db, "instance", "create", narrow)
    ctl(db, "instance", "create", wide)
    ctl(db, "instance", "set", wide, "utf8-topics", "1")
    ctl(db, "plan", "set", plan, "utf8-topics", "1")
    ctl(db, "instance", "create", planned, "--plan", plan)
    secrets = {n: new_token(db, n)[1] for n in (narrow, wide, planned)}
    topic = "caf\u00e9 bar/1"
    with Broker("--mode", "cloud", "--db", db, "--allow-keys-without-tls") as b:
        for name, expected in ((narrow, "SUBACK [128]"), (wide, topic), (planned, topic)):
            got = _roundtrip(b.port, topic, username=name, password=secrets[name])
            check_equal(got, expected, "instance %s" % name)
        # The ASCII set still works everywhere.
        check_equal(_roundtrip(b.port, "a/b", username=narrow, password=secrets[narrow]),
                    "a/b", "a plain topic")
        # Switched on while the broker runs.
        ctl(db, "instance", "set", narrow, "utf8-topics", "1")
        wait_for(lambda: _roundtrip(b.port, topic, username=narrow,
                                    password=secrets[narrow]) == topic,
                 timeout=APPLY_WITHIN + 3, what="utf8-topics 1 to reach a running broker")
    r = run([os.environ.get("AVIARYCTL", "aviaryctl"), "--db", db, "instance", "set", narrow,
             "utf8-topics", "2"])
    check(r.returncode != 0 and b"between 0 and 1" in r.stderr,
          "utf8-topics 2 accepted: %r" % r.stderr)


def test_persistent_311_session_expiry_logged_as_never():
    with Broker(log_level="info") as b:
        c = RawClient(b.port)
        c.connect("persistent", clean=False)
        b.wait_log(r"client persistent connected .*session expiry never")
        check("session expiry -1" not in b.log_text(), "the log still says -1")
        c5 = V5Client(b.port)
        c5.connect("five", clean_start=True, session_expiry=30)
        b.wait_log(r"client five connected .*session expiry 30 s")


if __name__ == "__main__":
    run_tests(globals())
