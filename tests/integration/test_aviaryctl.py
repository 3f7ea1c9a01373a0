#!/usr/bin/python3
"""aviaryctl(1): every command's output, text and JSON, and every error's one line.

Each test works in a database of its own in a temporary directory; no broker
runs here (tests/integration/test_cloud.py has the broker's side).
"""

import atexit
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    aviaryctl, aviaryctl_path, check, check_equal, missing, run, run_tests, unique)

SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
ID_RE = re.compile(r"^[0-9a-f]{16}$")
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
LIMITS = ["max-client-id", "max-topic-length", "max-payload", "max-subscriptions",
          "keepalive-min", "keepalive-max", "max-queued-messages", "max-inflight",
          "max-outbound-bytes", "max-connections", "max-messages-per-second", "max-retained",
          "idle-timeout", "max-topic-aliases", "max-session-expiry",
          "max-instance-messages-per-second", "max-sessions", "max-instance-bytes", "utf8-topics"]


def _dir():
    d = tempfile.mkdtemp(prefix="aviary-ctl-")
    atexit.register(shutil.rmtree, d, True)
    return d


def _db():
    return os.path.join(_dir(), "aviary.db")


def _ok(db, *args):
    """Run aviaryctl; it must succeed silently on stderr. Returns stdout."""
    rc, out, err = aviaryctl(db, *args)
    check(rc == 0, "aviaryctl %s exited %d: %s" % (" ".join(args), rc, err.strip()))
    check_equal(err, "", "stderr of aviaryctl %s" % " ".join(args))
    return out


def _json(db, *args):
    out = _ok(db, "--json", *args)
    try:
        return json.loads(out)
    except ValueError as e:
        raise AssertionError("aviaryctl --json %s printed no valid JSON (%s):\n%s"
                             % (" ".join(args), e, out))


def _fails(result, status, pattern, what):
    """`result` is (rc, out, err): exit `status`, nothing on stdout, one stderr line
    "aviaryctl: ..." matching the regular expression `pattern`."""
    rc, out, err = result
    check_equal(rc, status, "exit status for %s (stderr %r)" % (what, err))
    check_equal(out, "", "stdout for %s" % what)
    lines = err.splitlines()
    check(len(lines) == 1 and err.endswith("\n"),
          "%s: expected one line on stderr, got %r" % (what, err))
    check(lines[0].startswith("aviaryctl: "), "%s: stderr %r lacks 'aviaryctl: '" % (what, err))
    check(re.search(pattern, lines[0]), "%s: stderr %r does not match /%s/"
          % (what, lines[0], pattern))
    return lines[0]


def _fields(text):
    """'key: value' lines as a dict (the first of each key)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key not in out:
            out[key] = value
    return out


def _instance(db, *args):
    name = unique("inst")
    _ok(db, "instance", "create", name, *args)
    return name


def _token(db, instance, *args):
    tok = _json(db, "token", "create", instance, *args)
    return tok["id"], tok["secret"]


def _iso_to_unix(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def _config(text):
    path = os.path.join(_dir(), "aviary.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


def _ctl_plain(*args):
    """aviaryctl without the --db that aviaryctl() adds."""
    r = run([aviaryctl_path()] + [str(a) for a in args])
    return (r.returncode, r.stdout.decode("utf-8", "replace"),
            r.stderr.decode("utf-8", "replace"))


# ---- help ------------------------------------------------------------------

def test_help_exits_0_and_names_every_command():
    for opt in ("-h", "--help"):
        rc, out, err = _ctl_plain(opt)
        check_equal(rc, 0, "exit status of aviaryctl %s (stderr %r)" % (opt, err))
        for words in ("instance create", "instance list", "instance show", "instance delete",
                      "instance set", "plan list", "plan set", "token create", "token list",
                      "token revoke", "--json", "--db", "-c", "--ttl", "--deny-sub",
                      "max-connections"):
            check(words in out, "aviaryctl %s does not mention %r:\n%s" % (opt, words, out))


def test_help_after_a_command_exits_0():
    rc, out, err = aviaryctl(_db(), "token", "create", "--help")
    check_equal(rc, 0, "exit status of aviaryctl token create --help (stderr %r)" % err)
    check("token create" in out, "no usage printed: %r" % out)


def test_version_exits_0():
    rc, out, err = _ctl_plain("--version")
    check_equal(rc, 0, "exit status of aviaryctl --version")
    check(re.match(r"^aviaryctl \S+\n$", out), "aviaryctl --version printed %r" % out)


# ---- instances -------------------------------------------------------------

def test_instance_create_list_show_delete():
    db = _db()
    out = _ok(db, "instance", "create", "acme")
    check_equal(out, "created instance acme on plan default\n", "instance create output")
    _ok(db, "instance", "create", "globex")

    out = _ok(db, "instance", "list")
    lines = out.splitlines()
    check_equal(lines[0].split(), ["NAME", "PLAN", "TOKENS", "CREATED"], "list header")
    rows = [l.split() for l in lines[1:]]
    check_equal([r[:3] for r in rows], [["acme", "default", "0"], ["globex", "default", "0"]],
                "instance list rows")
    check(ISO_RE.match(rows[0][3]), "created %r is not ISO 8601 UTC" % rows[0][3])

    listed = _json(db, "instance", "list")
    check_equal([i["name"] for i in listed], ["acme", "globex"], "JSON instance names")
    check_equal(listed[0]["plan"], "default", "JSON plan")
    check_equal(listed[0]["tokens"], 0, "JSON token count")
    check_equal(listed[0]["limits"], {}, "JSON overrides")
    check(abs(_iso_to_unix(listed[0]["created"]) - time.time()) < 60,
          "created %r is not now" % listed[0]["created"])

    out = _ok(db, "instance", "delete", "acme", "--yes")
    check_equal(out, "deleted instance acme with its tokens\n", "instance delete output")
    check_equal([i["name"] for i in _json(db, "instance", "list")], ["globex"],
                "instances after the delete")
    check_equal(_json(db, "instance", "delete", "globex", "--yes"),
                {"name": "globex", "deleted": True},
                "JSON of instance delete")
    check_equal(_json(db, "instance", "list"), [], "JSON list of no instances")
    check_equal(_ok(db, "instance", "list"), "no instances\n", "text list of no instances")


def test_instance_create_on_a_plan():
    db = _db()
    _ok(db, "plan", "set", "gold", "max-connections", "500")
    check_equal(_json(db, "instance", "create", "acme", "--plan", "gold"),
                {"name": "acme", "plan": "gold"}, "JSON of instance create --plan")
    check_equal(_json(db, "instance", "show", "acme")["plan"], "gold", "plan of acme")


def test_instance_show_gives_each_limit_its_source():
    db = _db()
    _ok(db, "plan", "set", "gold", "max-connections", "500")
    _ok(db, "plan", "set", "gold", "max-retained", "7")
    _ok(db, "instance", "create", "acme", "--plan", "gold")
    out = _ok(db, "instance", "set", "acme", "max-retained", "9")
    check_equal(out, "instance acme: max-retained = 9\n", "instance set output")
    _ok(db, "instance", "set", "acme", "max-payload", "2k")

    shown = _json(db, "instance", "show", "acme")
    check_equal(sorted(shown["limits"]), sorted(LIMITS), "limits shown")
    check_equal(shown["limits"]["max-connections"], {"value": 500, "source": "plan"},
                "max-connections")
    check_equal(shown["limits"]["max-retained"], {"value": 9, "source": "instance"},
                "max-retained (the instance wins over its plan)")
    check_equal(shown["limits"]["max-payload"], {"value": 2048, "source": "instance"},
                "max-payload 2k")
    check_equal(shown["limits"]["max-client-id"], {"value": 64, "source": "config"},
                "max-client-id (the built-in default)")
    check_equal(shown["limits"]["idle-timeout"], {"value": 0, "source": "config"},
                "idle-timeout (plan gold does not set it)")
    check_equal((shown["name"], shown["plan"], shown["tokens"]), ("acme", "gold", 0),
                "name, plan, tokens")

    out = _ok(db, "instance", "show", "acme")
    f = _fields(out)
    check_equal((f["name"], f["plan"], f["tokens"]), ("acme", "gold", "0"), "text show fields")
    check(ISO_RE.match(f["created"]), "created %r" % f["created"])
    rows = {l.split()[0]: l.split()[1:] for l in out.splitlines() if l.startswith("  ")}
    check_equal(rows["max-connections"], ["500", "plan"], "text max-connections")
    check_equal(rows["max-retained"], ["9", "instance"], "text max-retained")
    check_equal(rows["max-inflight"], ["20", "config"], "text max-inflight")


def test_default_plan_limits():
    db = _db()
    _ok(db, "instance", "create", "acme")
    limits = _json(db, "instance", "show", "acme")["limits"]
    for name, value in (("max-connections", 100), ("max-messages-per-second", 100),
                        ("max-retained", 1000), ("idle-timeout", 3600),
                        ("max-sessions", 1000), ("max-instance-bytes", 64 * 1024 * 1024)):
        check_equal(limits[name], {"value": value, "source": "plan"}, name)


def test_plan_set_and_list():
    db = _db()
    out = _ok(db, "plan", "set", "tiny", "max-connections", "2")
    check_equal(out, "plan tiny: max-connections = 2\n", "plan set output")
    check_equal(_json(db, "plan", "set", "tiny", "max-payload", "1k"),
                {"plan": "tiny", "limit": "max-payload", "value": 1024}, "JSON of plan set")
    plans = _json(db, "plan", "list")
    check_equal(plans, [
        {"name": "default", "limits": {"idle-timeout": 3600, "max-connections": 100,
                                       "max-instance-bytes": 64 * 1024 * 1024,
                                       "max-messages-per-second": 100, "max-retained": 1000,
                                       "max-sessions": 1000}},
        {"name": "tiny", "limits": {"max-connections": 2, "max-payload": 1024}}],
        "JSON plan list")
    out = _ok(db, "plan", "list")
    check_equal(out.splitlines(), [
        "default: idle-timeout 3600, max-connections 100, max-instance-bytes 67108864, "
        "max-messages-per-second 100, max-retained 1000, max-sessions 1000",
        "tiny: max-connections 2, max-payload 1024"], "text plan list")


# ---- tokens ----------------------------------------------------------------

def test_token_create_prints_the_secret_alone_on_the_last_line():
    db = _db()
    name = _instance(db)
    before = time.time()
    out = _ok(db, "token", "create", name, "--label", "kitchen sensor", "--ttl", "2h",
              "--client-id", "device-7", "--pub", "sensors/#", "--sub", "/a/*/b")
    lines = out.splitlines()
    check(SECRET_RE.match(lines[-1]), "the last line %r is not a 43-character secret"
          % lines[-1])
    f = _fields("\n".join(lines[:-1]))
    check(ID_RE.match(f["id"]), "id %r" % f["id"])
    check_equal(f["instance"], name, "instance")
    check_equal(f["label"], "kitchen sensor", "label")
    check_equal(f["client id"], "device-7", "client id")
    check_equal(f["pub"], "sensors/#", "pub")
    check_equal(f["sub"], "a/+/b", "sub (normalised)")
    check_equal(f["deny-pub"], "none", "deny-pub")
    check_equal(f["deny-sub"], "none", "deny-sub")
    expires = _iso_to_unix(f["expires"])
    check(before + 7200 - 2 <= expires <= time.time() + 7200 + 1,
          "expires %s is not two hours from now" % f["expires"])
    check(lines[-1] not in "\n".join(lines[:-1]), "the secret appears twice")


def test_token_create_without_ttl_is_a_key():
    db = _db()
    name = _instance(db)
    f = _fields(_ok(db, "token", "create", name))
    check_equal(f["expires"], "never (key)", "expires of a key")
    check_equal(f["client id"], "any", "client id")
    check_equal((f["pub"], f["sub"]), ("any", "any"), "allow lists")
    check("label" not in f, "a label line without a label: %r" % f)


def test_token_create_json():
    db = _db()
    name = _instance(db)
    tok = _json(db, "token", "create", name, "--ttl", "90s", "--deny-pub", "x/#",
                "--deny-sub", "y/+", "--deny-sub", "z")
    check(ID_RE.match(tok["id"]), "id %r" % tok["id"])
    check(SECRET_RE.match(tok["secret"]), "secret %r" % tok["secret"])
    check_equal(tok["instance"], name, "instance")
    check_equal((tok["label"], tok["client_id"], tok["key"]), (None, None, False),
                "label, client_id, key")
    check(abs(_iso_to_unix(tok["expires"]) - (time.time() + 90)) < 3, "expires %r"
          % tok["expires"])
    check_equal((tok["pub"], tok["sub"], tok["deny_pub"], tok["deny_sub"]),
                ([], [], ["x/#"], ["y/+", "z"]), "filters")
    key = _json(db, "token", "create", name)
    check_equal((key["expires"], key["key"]), (None, True), "a key's expires and key")


def test_durations():
    db = _db()
    name = _instance(db)
    for ttl, seconds in (("90s", 90), ("15m", 900), ("2h", 7200), ("7d", 7 * 86400)):
        tok = _json(db, "token", "create", name, "--ttl", ttl)
        check(abs(_iso_to_unix(tok["expires"]) - (time.time() + seconds)) < 3,
              "--ttl %s gives expires %s" % (ttl, tok["expires"]))


def test_token_list_never_shows_the_secret():
    db = _db()
    name = _instance(db)
    first, secret1 = _token(db, name, "--label", "one", "--pub", "a/#")
    second, secret2 = _token(db, name, "--ttl", "1h", "--client-id", "dev")
    for args in (("token", "list", name), ("--json", "token", "list", name),
                 ("instance", "show", name), ("instance", "list")):
        out = _ok(db, *args)
        for secret in (secret1, secret2):
            check(secret not in out, "aviaryctl %s shows a secret:\n%s" % (" ".join(args), out))

    tokens = _json(db, "token", "list", name)
    check_equal([t["id"] for t in tokens], [first, second], "tokens, oldest first")
    check(all("secret" not in t for t in tokens), "a secret key in %r" % tokens)
    check_equal((tokens[0]["label"], tokens[0]["pub"], tokens[0]["status"], tokens[0]["key"]),
                ("one", ["a/#"], "active", True), "the first token")
    check_equal((tokens[1]["client_id"], tokens[1]["status"], tokens[1]["key"]),
                ("dev", "active", False), "the second token")
    check(ISO_RE.match(tokens[0]["created"]), "created %r" % tokens[0]["created"])

    blocks = _ok(db, "token", "list", name).split("\n\n")
    check_equal(len(blocks), 2, "text blocks")
    f = _fields(blocks[0])
    check_equal((f["id"], f["label"], f["pub"], f["status"], f["expires"]),
                (first, "one", "a/#", "active", "never (key)"), "the first text block")
    check(ISO_RE.match(f["created"]), "created %r" % f["created"])
    check_equal(_fields(blocks[1])["client id"], "dev", "client id")


def test_token_revoke_and_expiry_show_in_the_list():
    db = _db()
    name = _instance(db)
    revoked, _ = _token(db, name)
    expiring, _ = _token(db, name, "--ttl", "1s")
    live, _ = _token(db, name)
    out = _ok(db, "token", "revoke", name, revoked)
    check_equal(out, "revoked token %s of instance %s\n" % (revoked, name), "revoke output")
    check_equal(_json(db, "token", "revoke", name, revoked),
                {"instance": name, "id": revoked, "revoked": True}, "revoking twice")
    time.sleep(2.1)
    status = {t["id"]: t["status"] for t in _json(db, "token", "list", name)}
    check_equal(status, {revoked: "revoked", expiring: "expired", live: "active"}, "statuses")
    check_equal(_json(db, "instance", "show", name)["tokens"], 2,
                "tokens counted by instance show (revoked ones are not)")


def test_deleting_an_instance_deletes_its_tokens():
    db = _db()
    _token(db, _instance(db))
    name = _instance(db)
    _token(db, name)
    _ok(db, "instance", "delete", name, "--yes")
    _ok(db, "instance", "create", name)
    check_equal(_json(db, "token", "list", name), [], "tokens of a re-created instance")
    check_equal(_ok(db, "token", "list", name), "no tokens\n", "text list of no tokens")


def test_json_strings_are_escaped():
    db = _db()
    name = _instance(db)
    label = 'say "hi" \\ caf\u00e9 \u2603 \U0001f426'
    _token(db, name, "--label", label, "--client-id", 'a"b\\c')
    tok = _json(db, "token", "list", name)[0]
    check_equal(tok["label"], label, "label through JSON")
    check_equal(tok["client_id"], 'a"b\\c', "client id through JSON")


def test_json_option_after_the_command():
    db = _db()
    _ok(db, "instance", "create", "acme")
    out = _ok(db, "instance", "list", "--json")
    check_equal([i["name"] for i in json.loads(out)], ["acme"], "--json after the command")


# ---- the database and the configuration --------------------------------------

def test_config_file_db_directive():
    d = _dir()
    db = os.path.join(d, "from-conf.db")
    conf = _config("# for aviaryctl\nmode cloud\ndb %s\nmax-payload 4k\n" % db)
    rc, out, err = _ctl_plain("-c", conf, "instance", "create", "acme")
    check_equal((rc, err), (0, ""), "aviaryctl -c CONF instance create")
    check(os.path.exists(db), "the database named by the db directive was not created")
    rc, out, err = _ctl_plain("-c", conf, "--json", "instance", "show", "acme")
    check_equal(rc, 0, "aviaryctl -c CONF instance show (stderr %r)" % err)
    check_equal(json.loads(out)["limits"]["max-payload"], {"value": 4096, "source": "config"},
                "max-payload from the configuration file")
    # --db wins over the file's db
    other = os.path.join(d, "other.db")
    _ok(other, "init")
    rc, out, err = _ctl_plain("-c", conf, "--db", other, "--json", "instance", "list")
    check_equal((rc, json.loads(out)), (0, []), "--db with -c lists the other database")


def test_bad_config_file():
    path = _config("no-such-directive 1\n")
    _fails(_ctl_plain("-c", path, "instance", "list"), 1, re.escape(path) + r":1: unknown",
           "a configuration file with an unknown directive")
    missing = os.path.join(_dir(), "missing.conf")
    _fails(_ctl_plain("-c", missing, "instance", "list"), 1, re.escape(missing),
           "a missing configuration file")


def test_unreadable_database_exits_2():
    d = _dir()
    missing = os.path.join(d, "no-such-dir", "aviary.db")
    _fails(aviaryctl(missing, "instance", "create", "acme"), 2,
           r"^aviaryctl: cannot open database %s: " % re.escape(missing),
           "a database in a missing directory")
    _fails(aviaryctl(d, "instance", "list"), 2,
           r"^aviaryctl: cannot open database %s: " % re.escape(d), "a directory as database")
    junk = os.path.join(d, "junk.db")
    with open(junk, "wb") as f:
        f.write(b"this is not a database, " * 200)
    _fails(aviaryctl(junk, "instance", "list"), 2,
           r"^aviaryctl: cannot open database %s: file is not a database$" % re.escape(junk),
           "a file that is not SQLite")


def test_newer_schema_exits_2():
    try:
        import sqlite3
    except ImportError:
        missing("Python's sqlite3 module is missing")
    db = _db()
    _ok(db, "init")
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 1000")
    conn.commit()
    conn.close()
    _fails(aviaryctl(db, "instance", "list"), 2, r"schema version 1000 is newer",
           "a database of a newer aviary")


def test_parallel_writers_on_a_new_database():
    """Sixteen aviaryctl processes create the schema and write at once: each
    migration step runs once and every write waits for its turn."""
    db = _db()
    procs = [subprocess.Popen([aviaryctl_path(), "--db", db, "instance", "create", "p%d" % i],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(16)]
    try:
        for i, p in enumerate(procs):
            out, err = p.communicate(timeout=30)
            check_equal((p.returncode, err), (0, b""), "writer %d" % i)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    names = sorted(i["name"] for i in _json(db, "instance", "list"))
    check_equal(names, sorted("p%d" % i for i in range(16)), "instances")
    check_equal([p["name"] for p in _json(db, "plan", "list")], ["default"], "plans")


# ---- errors ------------------------------------------------------------------

def test_unknown_instance():
    db = _db()
    _ok(db, "init")
    for args in (("instance", "show", "nobody"), ("instance", "delete", "nobody", "--yes"),
                 ("instance", "set", "nobody", "max-connections", "3"),
                 ("token", "create", "nobody"), ("token", "list", "nobody"),
                 ("token", "revoke", "nobody", "0123456789abcdef")):
        _fails(aviaryctl(db, *args), 1, r"^aviaryctl: no instance 'nobody'$", " ".join(args))


def test_duplicate_instance():
    db = _db()
    _ok(db, "instance", "create", "acme")
    _fails(aviaryctl(db, "instance", "create", "acme"), 1,
           r"^aviaryctl: instance 'acme' exists already$", "a second instance acme")


def test_unknown_plan_and_bad_names():
    db = _db()
    _fails(aviaryctl(db, "instance", "create", "acme", "--plan", "gold"), 1,
           r"^aviaryctl: no plan 'gold'$", "an unknown plan")
    _fails(aviaryctl(db, "instance", "create", "a/b"), 1, r"bad instance name 'a/b'",
           "a name with a slash")
    _fails(aviaryctl(db, "instance", "create", "x" * 65), 1, r"bad instance name",
           "a 65-character name")
    _fails(aviaryctl(db, "instance", "create", "a\nb"), 1, r"bad instance name 'a\\x0ab'",
           "a name with a newline")
    _fails(aviaryctl(db, "plan", "set", "bad plan", "max-connections", "1"), 1,
           r"bad plan name 'bad plan'", "a plan name with a space")


def test_unknown_token():
    db = _db()
    name = _instance(db)
    _fails(aviaryctl(db, "token", "revoke", name, "0123456789abcdef"), 1,
           r"^aviaryctl: no token '0123456789abcdef' in instance '%s'$" % name,
           "an unknown token id")
    tid, _ = _token(db, _instance(db))
    _fails(aviaryctl(db, "token", "revoke", name, tid), 1, r"no token '%s'" % tid,
           "another instance's token")


def test_bad_durations():
    db = _db()
    name = _instance(db)
    for ttl in ("5x", "0s", "1.5h", "h", "10", "-1s", "2H", "1d1h", "", "99999999999d"):
        _fails(aviaryctl(db, "token", "create", name, "--ttl", ttl), 1,
               r"^aviaryctl: --ttl: bad duration '", "--ttl %r" % ttl)
    check_equal(_json(db, "token", "list", name), [], "tokens after the refusals")


def test_bad_filters():
    db = _db()
    name = _instance(db)
    for opt, flt, reason in (("--pub", "a/#/b", "wildcard"), ("--sub", "a+/b", "wildcard"),
                             ("--deny-pub", "a\tb", "character outside"),
                             ("--deny-sub", "", "empty"), ("--pub", "/", "empty"),
                             ("--sub", "x" * 65535, "longer than 65534")):
        _fails(aviaryctl(db, "token", "create", name, opt, flt), 1,
               r"^aviaryctl: %s '.*': .*%s" % (opt, reason), "%s %r" % (opt, flt[:20]))
    check_equal(_json(db, "token", "list", name), [], "tokens after the refusals")


def test_bad_label_and_client_id():
    db = _db()
    name = _instance(db)
    _fails(aviaryctl(db, "token", "create", name, "--label", "two\nlines"), 1,
           r"^aviaryctl: --label: control characters", "a label with a newline")
    _fails(aviaryctl(db, "token", "create", name, "--client-id", ""), 1,
           r"^aviaryctl: --client-id: empty", "an empty client id")


def test_unknown_limit_and_bad_values():
    db = _db()
    name = _instance(db)
    _fails(aviaryctl(db, "instance", "set", name, "max-bananas", "3"), 1,
           r"^aviaryctl: unknown limit 'max-bananas' \(known: max-client-id, ",
           "an unknown limit")
    _fails(aviaryctl(db, "plan", "set", "gold", "listen", "3"), 1,
           r"^aviaryctl: unknown limit 'listen'", "a directive that is no limit")
    _fails(aviaryctl(db, "instance", "set", name, "max-connections", "lots"), 1,
           r"^aviaryctl: max-connections: not a number: 'lots'$", "a value that is no number")
    _fails(aviaryctl(db, "instance", "set", name, "max-connections", "-5"), 1,
           r"^aviaryctl: max-connections: must not be negative", "a negative value")
    _fails(aviaryctl(db, "plan", "set", "gold", "max-inflight", "0"), 1,
           r"^aviaryctl: max-inflight: must be between 1 and 65535", "a value out of range")
    check_equal([p["name"] for p in _json(db, "plan", "list")], ["default"],
                "plans after the refusals")


def test_command_line_errors():
    db = _db()
    for args, pattern in (
            ((), r"^aviaryctl: missing command"),
            (("frob",), r"^aviaryctl: unknown command 'frob'"),
            (("instance",), r"^aviaryctl: instance: missing command \(create, list, show, "
                            r"delete, set or unset\)$"),
            (("instance", "frob"), r"^aviaryctl: unknown command 'instance frob'"),
            (("instance", "create"), r"^aviaryctl: instance create: missing NAME"),
            (("instance", "set", "acme", "max-connections"),
             r"^aviaryctl: instance set: missing VALUE"),
            (("token", "revoke", "acme"), r"^aviaryctl: token revoke: missing TOKEN_ID"),
            (("instance", "list", "extra"),
             r"^aviaryctl: instance list: unexpected argument 'extra'$"),
            (("instance", "create", "acme", "--bogus"),
             r"^aviaryctl: instance create: unknown option '--bogus'"),
            (("instance", "list", "--plan", "x"),
             r"^aviaryctl: instance list: unknown option '--plan'"),
            (("token", "create", "acme", "--ttl"), r"^aviaryctl: --ttl: missing value$"),
            (("token", "create", "acme", "--ttl", "1h", "--ttl", "2h"),
             r"^aviaryctl: --ttl given more than once$"),
            (("--frob", "instance", "list"), r"^aviaryctl: unknown option '--frob'")):
        _fails(aviaryctl(db, *args), 1, pattern, "aviaryctl %s" % " ".join(args))
    _fails(_ctl_plain("--db"), 1, r"^aviaryctl: --db: missing value$", "--db without a path")
    check(not os.path.exists(db), "a command-line error created the database")


# ---- issue 15: init, token update, plan delete, instance set plan / unset -----

def test_only_init_instance_create_and_plan_set_create_the_database():
    d = _dir()
    typo = os.path.join(d, "typo.db")
    for args in (("instance", "list"), ("instance", "show", "a"), ("plan", "list"),
                 ("token", "list", "a"), ("plan", "delete", "gold"),
                 ("instance", "unset", "a", "max-retained"),
                 ("token", "update", "a", "0123456789abcdef", "--label", "x"),
                 ("admin-key", "list"), ("instance", "delete", "a", "--yes")):
        _fails(aviaryctl(typo, *args), 2,
               r"^aviaryctl: no database at %s \(create it with 'aviaryctl init'"
               % re.escape(typo), " ".join(args))
        check(not os.path.exists(typo), "aviaryctl %s created the database" % " ".join(args))
    out = _ok(typo, "init")
    check_equal(out, "database %s ready (schema version 5)\n" % typo, "init output")
    check(os.path.exists(typo), "init made no database")
    check_equal(_json(typo, "init"), {"database": typo, "schema": 5}, "init again (JSON)")
    check_equal(_json(typo, "instance", "list"), [], "instances of a new database")
    for args in (("instance", "create", "acme"), ("plan", "set", "gold", "max-retained", "1")):
        db = os.path.join(_dir(), "new.db")
        _ok(db, *args)
        check(os.path.exists(db), "aviaryctl %s made no database" % " ".join(args))


def test_instance_show_columns_line_up():
    db = _db()
    _ok(db, "instance", "create", "acme")
    _ok(db, "instance", "set", "acme", "max-instance-bytes", "123456789012")
    rows = [l for l in _ok(db, "instance", "show", "acme").splitlines() if l.startswith("  ")]
    check_equal(len(rows), len(LIMITS), "limit rows")
    # every value ends in one column and every source starts in one column
    ends = {re.match(r"^  \S+\s+\d+", r).end() for r in rows}
    starts = {len(r) - len(r.split()[-1]) for r in rows}
    check_equal((len(ends), len(starts)), (1, 1), "columns of:\n" + "\n".join(rows))


def test_token_create_client_id_auto():
    db = _db()
    name = _instance(db)
    out = _ok(db, "token", "create", name, "--client-id", "auto", "--ttl", "1h")
    cid = _fields(out)["client id"]
    check(re.match(r"^[0-9a-f]{22}$", cid), "generated client id %r" % cid)
    check(SECRET_RE.match(out.splitlines()[-1]), "no secret on the last line:\n" + out)
    tok = _json(db, "token", "create", name, "--client-id", "auto")
    check(re.match(r"^[0-9a-f]{22}$", tok["client_id"]), "JSON client id %r" % tok["client_id"])
    check(tok["client_id"] != cid, "two generated client ids are the same")
    check(SECRET_RE.match(tok["secret"]), "JSON secret %r" % tok["secret"])
    listed = {t["id"]: t["client_id"] for t in _json(db, "token", "list", name)}
    check_equal(listed[tok["id"]], tok["client_id"], "the client id kept")


def test_token_update_changes_and_clears():
    db = _db()
    name = _instance(db)
    tid, secret = _token(db, name, "--label", "old", "--ttl", "1h", "--pub", "a/#",
                         "--deny-sub", "x/#")
    out = _ok(db, "token", "update", name, tid, "--label", "new", "--client-id", "dev-1",
              "--pub", "b/#", "--pub", "/c", "--sub", "s/#", "--allow-action", "--ttl", "2h")
    f = _fields(out)
    check_equal((f["id"], f["label"], f["client id"], f["pub"], f["sub"], f["deny-sub"],
                 f["action"], f["status"]),
                (tid, "new", "dev-1", "b/# c", "s/#", "x/#", "allowed", "active"),
                "text of token update")
    check(abs(_iso_to_unix(f["expires"]) - (time.time() + 7200)) < 5, "expires %r" % f["expires"])
    check(secret not in out, "token update shows the secret")
    tok = _json(db, "token", "update", name, tid, "--no-label", "--no-client-id", "--no-pub",
                "--no-deny-sub", "--no-allow-action", "--no-expiry")
    check_equal((tok["id"], tok["label"], tok["client_id"], tok["pub"], tok["sub"],
                 tok["deny_sub"], tok["allow_action"], tok["expires"], tok["key"]),
                (tid, None, None, [], ["s/#"], [], False, None, True), "JSON after clearing")
    check_equal(_json(db, "token", "list", name), [tok], "the list shows the update")


def test_token_update_errors():
    db = _db()
    name = _instance(db)
    tid, _ = _token(db, name)
    for args, pattern in (
            ((), r"^aviaryctl: token update: nothing to change"),
            (("--pub", "a", "--no-pub"), r"^aviaryctl: token update: --pub and --no-pub"),
            (("--ttl", "1h", "--no-expiry"), r"--ttl and --no-expiry together"),
            (("--pub", "a/#/b"), r"^aviaryctl: --pub 'a/#/b': wildcard"),
            (("--ttl", "5x"), r"^aviaryctl: --ttl: bad duration")):
        _fails(aviaryctl(db, "token", "update", name, tid, *args), 1, pattern,
               "token update %s" % " ".join(args))
    _fails(aviaryctl(db, "token", "update", name, "0123456789abcdef", "--label", "x"), 1,
           r"^aviaryctl: no token '0123456789abcdef' in instance '%s'$" % name, "unknown token")
    _fails(aviaryctl(db, "token", "update", "nobody", tid, "--label", "x"), 1,
           r"^aviaryctl: no instance 'nobody'$", "unknown instance")
    _ok(db, "token", "revoke", name, tid)
    _fails(aviaryctl(db, "token", "update", name, tid, "--label", "x"), 1,
           r"is revoked", "a revoked token")


def test_plan_delete():
    db = _db()
    _ok(db, "plan", "set", "gold", "max-connections", "5")
    _ok(db, "plan", "set", "spare", "max-connections", "5")
    _ok(db, "instance", "create", "acme", "--plan", "gold")
    _ok(db, "instance", "create", "beta", "--plan", "gold")
    _fails(aviaryctl(db, "plan", "delete", "gold"), 1,
           r"^aviaryctl: plan 'gold' is in use by 2 instances \(acme, beta\): move them",
           "a plan in use")
    _fails(aviaryctl(db, "plan", "delete", "default"), 1,
           r"^aviaryctl: the plan 'default' cannot be deleted", "the default plan")
    _fails(aviaryctl(db, "plan", "delete", "nope"), 1, r"^aviaryctl: no plan 'nope'$",
           "an unknown plan")
    check_equal(_ok(db, "plan", "delete", "spare"), "deleted plan spare\n", "plan delete")
    _ok(db, "instance", "set", "acme", "plan", "default")
    _ok(db, "instance", "set", "beta", "plan", "default")
    check_equal(_json(db, "plan", "delete", "gold"), {"plan": "gold", "deleted": True},
                "JSON of plan delete")
    check_equal([p["name"] for p in _json(db, "plan", "list")], ["default"], "plans left")
    _ok(db, "plan", "set", "gold", "max-retained", "3")
    check("max-connections" not in _json(db, "plan", "list")[1]["limits"],
          "a re-created plan kept its old limits")


def test_instance_set_plan_and_unset_limit():
    db = _db()
    _ok(db, "plan", "set", "gold", "max-connections", "500")
    _ok(db, "instance", "create", "acme")
    check_equal(_ok(db, "instance", "set", "acme", "plan", "gold"),
                "instance acme: plan = gold\n", "instance set plan")
    check_equal(_json(db, "instance", "set", "acme", "plan", "gold"),
                {"instance": "acme", "plan": "gold"}, "JSON of instance set plan")
    check_equal(_json(db, "instance", "show", "acme")["limits"]["max-connections"],
                {"value": 500, "source": "plan"}, "the new plan's limit")
    _fails(aviaryctl(db, "instance", "set", "acme", "plan", "nope"), 1,
           r"^aviaryctl: no plan 'nope'$", "an unknown plan")
    _ok(db, "instance", "set", "acme", "max-connections", "7")
    check_equal(_ok(db, "instance", "unset", "acme", "max-connections"),
                "instance acme: max-connections unset (its plan's or the configuration's value "
                "applies)\n", "instance unset")
    check_equal(_json(db, "instance", "show", "acme")["limits"]["max-connections"],
                {"value": 500, "source": "plan"}, "the plan's value again")
    check_equal(_json(db, "instance", "unset", "acme", "max-connections"),
                {"instance": "acme", "limit": "max-connections", "unset": True,
                 "was_set": False}, "unsetting twice")
    _fails(aviaryctl(db, "instance", "unset", "acme", "max-bananas"), 1,
           r"^aviaryctl: unknown limit 'max-bananas'", "an unknown limit")
    _fails(aviaryctl(db, "instance", "unset", "nobody", "max-retained"), 1,
           r"^aviaryctl: no instance 'nobody'$", "an unknown instance")


def _on_a_terminal(db, args, answer):
    """aviaryctl --db DB ARGS with a pseudo-terminal as stdin; `answer` typed at the
    prompt. Returns (exit status, what the terminal showed)."""
    import pty
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(aviaryctl_path(), [aviaryctl_path(), "--db", db] + list(args))
    shown = b""
    deadline = time.monotonic() + 10
    while b"[y/N]" not in shown and time.monotonic() < deadline:
        try:
            shown += os.read(fd, 1024)
        except OSError:
            break
    os.write(fd, answer.encode() + b"\n")
    while True:
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), shown.decode("utf-8", "replace")


def test_instance_delete_asks_on_a_terminal_and_needs_yes_without_one():
    db = _db()
    name = _instance(db)
    _token(db, name)
    _fails(aviaryctl(db, "instance", "delete", name), 1,
           r"^aviaryctl: instance delete: not deleting '%s' without confirmation: standard "
           r"input is not a terminal \(add --yes\)$" % name, "delete without a terminal")
    rc, shown = _on_a_terminal(db, ("instance", "delete", name), "n")
    check_equal(rc, 1, "exit status after answering n (%r)" % shown)
    check("Delete instance %s with its 1 token" % name in shown, "the question: %r" % shown)
    check("not deleted" in shown, "no word that nothing was deleted: %r" % shown)
    check_equal([i["name"] for i in _json(db, "instance", "list")], [name], "after n")
    rc, shown = _on_a_terminal(db, ("instance", "delete", name), "y")
    check_equal(rc, 0, "exit status after answering y (%r)" % shown)
    check("deleted instance %s" % name in shown, "the report: %r" % shown)
    check_equal(_json(db, "instance", "list"), [], "after y")


def test_as_root_the_database_belongs_to_its_directory_owner():
    if os.geteuid() != 0:
        missing("not root: cannot test switching to the database's owner")
    import pwd
    nobody = pwd.getpwnam("nobody")
    top = _dir()
    os.chmod(top, 0o755)
    d = os.path.join(top, "lib")
    os.mkdir(d, 0o750)
    os.chown(d, nobody.pw_uid, nobody.pw_gid)
    db = os.path.join(d, "aviary.db")
    _ok(db, "init")
    _ok(db, "instance", "create", "acme")
    _token(db, "acme")
    # a reader left open keeps the -wal and -shm files for the check below
    import sqlite3
    keep = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    try:
        keep.execute("SELECT count(*) FROM instances").fetchall()
        _ok(db, "instance", "create", "beta")
        for f in sorted(os.listdir(d)):
            st = os.stat(os.path.join(d, f))
            check_equal((f, st.st_uid, st.st_gid), (f, nobody.pw_uid, nobody.pw_gid),
                        "owner of %s" % f)
        check({"aviary.db", "aviary.db-wal", "aviary.db-shm"} <= set(os.listdir(d)),
              "files: %r" % os.listdir(d))
    finally:
        keep.close()
    # a root-owned directory: aviaryctl stays root
    mine = os.path.join(_dir(), "root.db")
    _ok(mine, "init")
    check_equal(os.stat(mine).st_uid, 0, "owner of a database in root's directory")


run_tests(globals())
