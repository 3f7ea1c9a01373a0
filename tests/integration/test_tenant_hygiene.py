#!/usr/bin/python3
"""Tenant hygiene (issue 11, points 7-12): what one tenant may learn or break beyond its
own permissions, and the protocol details found on the way.

- 7: refusals for permissions say "not authorized" and name no token id and no rule
  (SUBACK, PUBACK/PUBREC, CONNACK Reason Strings); the log keeps the details.
- 8: an Assigned Client Identifier is "auto-" + 24 random hex digits, no counter in it.
- 9: WebSocket request data is logged escaped; a token secret sent as the user name is
  not logged.
- 10: the database aviaryctl or aviaryd creates is 0600 whatever the umask; the systemd
  unit sets UMask=0077.
- 11: a token (or instance) made by aviaryctl works for a CONNECT sent the moment
  aviaryctl exits, 100 times out of 100.
- 12: MQTT 3.1 DUP on PUBREL/SUBSCRIBE/UNSUBSCRIBE; an ack of the wrong type for a packet
  id in flight is a protocol error [MQTT-4.8.0-1]; a small Maximum Packet Size still gets
  the Assigned Client Identifier and Server Keep Alive [MQTT-3.1.3-7, MQTT-3.2.2-22].

Each test starts its own broker (and database); all of it is aviary-specific.
"""

import base64
import os
import re
import socket
import stat
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    CONNACK, HOST, PUBACK, PUBCOMP, PUBREC, PUBREL, SUBACK, UNSUBACK, Broker, RawClient,
    Publish, PUBLISH, TestFailure, aviaryctl, check, check_equal, cloud_db, connect_packet, ctl,
    new_token, publish_packet, puback_packet, pubcomp_packet, run_tests, source_dir,
    subscribe_packet, u16, unique, unsubscribe_packet, varint, wait_for)
from mqtt5 import (  # noqa: E402
    ASSIGNED_CLIENT_IDENTIFIER, MAXIMUM_PACKET_SIZE, PROPERTIES, REASON_STRING,
    RECEIVE_MAXIMUM, RETAIN_AVAILABLE, SERVER_KEEP_ALIVE, SESSION_EXPIRY_INTERVAL,
    SHARED_SUBSCRIPTION_AVAILABLE, STRICT, SUBSCRIPTION_IDENTIFIER_AVAILABLE,
    TOPIC_ALIAS_MAXIMUM, USER_PROPERTY, WILDCARD_SUBSCRIPTION_AVAILABLE, V5Client, _read_varint,
    aviary_only, broker, cloud_login5, connect5, encode_properties, is_aviary, puback5,
    pubcomp5, publish5, summarize, v5_connect)

# Properties the broker may drop from a CONNACK that does not fit the client's Maximum
# Packet Size (SPEC 12 (c)): the optional texts, then what only repeats a default.
DROPPABLE = (REASON_STRING, USER_PROPERTY, RETAIN_AVAILABLE, WILDCARD_SUBSCRIPTION_AVAILABLE,
             SUBSCRIPTION_IDENTIFIER_AVAILABLE, SHARED_SUBSCRIPTION_AVAILABLE,
             TOPIC_ALIAS_MAXIMUM)

ASSIGNED_ID_RE = re.compile(r"^auto-[0-9a-f]{24}$")


def _instance(db, *args):
    name = unique("inst")
    ctl(db, "instance", "create", name, *args)
    return name


def _cloud(db, *args, **kw):
    return Broker("--mode", "cloud", "--db", db, *args, **kw)



def _check_discreet(rs, token_id, what, rules=()):
    """A Reason String of a permission refusal: present, says "not authorized", and names
    neither the token nor a rule."""
    check(rs, "no Reason String on %s" % what)
    check("not authorized" in rs.lower(),
          "the Reason String %r of %s does not say 'not authorized'" % (rs, what))
    check(token_id not in rs, "the Reason String %r of %s names the token id %s"
          % (rs, what, token_id))
    check("deny" not in rs.lower(), "the Reason String %r of %s names a deny rule" % (rs, what))
    for rule in rules:
        check(rule not in rs, "the Reason String %r of %s names the rule %r" % (rs, what, rule))


def _refused5(b, instance, secret, reason, what, token_id, rules=(), **kw):
    c = cloud_login5(b.port, instance, secret, expect_reason=reason, **kw)
    rs = c.connack.props.reason_string
    rest = c.packets_until_closed(5, "the close after CONNACK 0x%02X for %s" % (reason, what))
    check(not rest, "packets after a refusing CONNACK for %s: %s" % (what, summarize(rest)))
    _check_discreet(rs, token_id, "CONNACK 0x%02X for %s" % (reason, what), rules)


# ---------------------------------------------------------------------------
# 7. Reason Strings of permission refusals name no token and no rule

def test_suback_refusal_reason_string_names_no_token_and_no_rule():
    """SPEC 7: a SUBSCRIBE inside a deny-sub filter (SUBACK 0x80) and one outside the token's
    sub filters (0x87) get a Reason String that says "not authorized" and names neither
    the token id nor the rule ("deny", the filter). Before, it read "not allowed by token
    <id> (a deny-sub filter)", which tells a tenant what the plain code is meant to hide.
    The log keeps the details (the token id)."""
    aviary_only("cloud mode")
    db = cloud_db()
    name = _instance(db)
    tid, secret = new_token(db, name, "--sub", "sensors/#", "--deny-sub", "sensors/secret/#")
    with _cloud(db, "--allow-keys-without-tls", "yes") as b:
        c = cloud_login5(b.port, name, secret)
        mark = b.log_mark()
        ack = c.subscribe(("sensors/secret/x", 1))
        check_equal(ack.codes, [0x80], "SUBACK reason code inside a deny-sub filter")
        _check_discreet(ack.props.reason_string, tid, "SUBACK 0x80 (a deny-sub filter)",
                        rules=("sensors/secret/#",))
        b.wait_log(re.escape(tid), since=mark, timeout=2)
        ack = c.subscribe(("other/#", 1))
        check_equal(ack.codes, [0x87], "SUBACK reason code outside the sub filters")
        _check_discreet(ack.props.reason_string, tid, "SUBACK 0x87 (outside the sub filters)",
                        rules=("sensors/#",))
        c.ping()


def test_puback_and_pubrec_refusal_reason_string_names_no_token():
    """SPEC 7: a QoS 1 / QoS 2 PUBLISH the token may not make gets PUBACK / PUBREC 0x87
    whose Reason String says "not authorized" without the token id or the rule (before:
    "token <id> may not publish to this topic")."""
    aviary_only("cloud mode")
    db = cloud_db()
    name = _instance(db)
    tid, secret = new_token(db, name, "--pub", "sensors/#", "--deny-pub", "sensors/secret/#")
    with _cloud(db, "--allow-keys-without-tls", "yes") as b:
        c = cloud_login5(b.port, name, secret)
        for qos, topic in ((1, "sensors/secret/k"), (2, "sensors/secret/k"), (1, "other/x"),
                           (2, "other/y")):
            ack = c.publish(topic, b"no", qos)
            check_equal(ack.reason, 0x87, "%s reason for %r (%r)" % (ack.name, topic, ack))
            _check_discreet(ack.props.reason_string, tid,
                            "%s 0x87 for %r" % (ack.name, topic),
                            rules=("sensors/secret/#", "sensors/#"))
        c.ping()


def test_connack_refusal_reason_string_names_no_token():
    """SPEC 7: CONNACK 0x87 for a token bound to another client id, for a key on a
    listener without TLS and for a will topic the token may not publish: the Reason
    String says "not authorized" and names no token id (before: "token <id> is bound
    to ...", "token <id> is a key ...", "token <id> may not publish the will topic")."""
    aviary_only("cloud mode")
    db = cloud_db()
    name = _instance(db)
    bound_id, bound = new_token(db, name, "--client-id", "device-7")
    key_id, key = new_token(db, name)
    narrow_id, narrow = new_token(db, name, "--ttl", "1h", "--pub", "sensors/#",
                                  "--deny-pub", "cmd/#")
    with _cloud(db) as b:  # keys need TLS here
        _refused5(b, name, key, 0x87, "a key on plain TCP", key_id)
    with _cloud(db, "--allow-keys-without-tls", "yes") as b:
        _refused5(b, name, bound, 0x87, "a token bound to another client id", bound_id,
                  client_id="device-8")
        _refused5(b, name, narrow, 0x87, "a will topic the token may not publish", narrow_id,
                  will={"topic": "cmd/door", "payload": b"x"}, rules=("cmd/#",))
        cloud_login5(b.port, name, bound, "device-7").ping()


# ---------------------------------------------------------------------------
# 8. Assigned Client Identifiers are random

def _conn_number(b, port, since):
    """The number the broker gave the connection from local port `port` (debug log)."""
    m = b.wait_log(r"conn (\d+): accepted from 127\.0\.0\.1:%d\b" % port, since=since,
                   timeout=3)
    return int(m.group(1))


def test_assigned_client_identifier_is_random_and_has_no_counter():
    """SPEC 8: an MQTT 5 client with an empty client id gets "auto-" + 24 lowercase hex
    digits, random: nothing in it is the broker-wide connection number (which told a
    client of one instance how many connections other instances open). Before, it was
    "auto-<8 random hex><the connection number in hex>"."""
    aviary_only("the Assigned Client Identifier's form")
    with Broker() as b:
        seen = []
        for _ in range(5):
            mark = b.log_mark()
            c = V5Client(b.port)
            with c:
                ack = c.connect("")
                aid = ack.props.get(ASSIGNED_CLIENT_IDENTIFIER)
                n = _conn_number(b, c.sock.getsockname()[1], mark)
                c.ping()
            seen.append((aid, n))
            check(aid and ASSIGNED_ID_RE.match(aid),
                  "Assigned Client Identifier %r (connection %d) is not auto- followed by 24 "
                  "lowercase hex digits" % (aid, n))
        check_equal(len(set(a for a, _ in seen)), len(seen), "distinct assigned ids in %r"
                    % seen)
        # One random id ends in its connection's number by chance 1 time in 16 or more;
        # five in a row mean a counter.
        counted = [(a, n) for a, n in seen
                   if a.endswith("%x" % n) or a.endswith("%d" % n)]
        check(len(counted) < len(seen), "every assigned id ends with its connection number "
              "(a counter): %r" % seen)


# ---------------------------------------------------------------------------
# 9. Logs: request data escaped, secrets not logged

def _ws_port(b):
    return wait_for(lambda: next((p for s, _, p in b.listeners if s == "ws"), None), 5.0,
                    what="the ws:// listener")


def _http(port, request):
    """Send one raw HTTP request, read the answer until the close (or 3 s)."""
    s = socket.create_connection((HOST, port), timeout=3)
    try:
        s.sendall(request)
        out = b""
        while True:
            try:
                chunk = s.recv(4096)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def _upgrade(path, protocol, port):
    key = base64.b64encode(os.urandom(16))
    return (b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " % port + key
            + b"\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: " + protocol
            + b"\r\n\r\n")


def _raw_log(b):
    b.log_text()  # flushes
    with open(b.log_path, "rb") as f:
        return f.read()


def test_websocket_request_data_is_logged_escaped():
    """SPEC 9: a WebSocket upgrade whose path holds ESC (a wrong path, refused), one whose
    Sec-WebSocket-Protocol holds ESC (an unknown subprotocol, refused) and a plain HTTP
    GET whose path holds ESC (404) are each logged, but with no raw control byte: a
    client must not be able to write terminal escapes (or forge lines) into the log.
    Before, lws's values went to the log as they came."""
    aviary_only("aviary's log")
    with Broker("--listen", "ws://%s:0" % HOST) as b:
        ws = _ws_port(b)
        cases = [
            (_upgrade(b"/mqtt\x1b[31mPATHMARK", b"mqtt", ws), b"PATHMARK",
             "an upgrade with ESC in its path"),
            (_upgrade(b"/mqtt", b"chat\x1b[31mPROTOMARK", ws), b"PROTOMARK",
             "an upgrade with ESC in Sec-WebSocket-Protocol"),
            (b"GET /x\x1b[32mHTTPMARK HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTPMARK",
             "a plain HTTP GET with ESC in its path"),
        ]
        for request, marker, what in cases:
            answer = _http(ws, request)
            check(b" 101 " not in answer.split(b"\r\n")[0], "%s was upgraded: %r"
                  % (what, answer[:80]))
            try:
                wait_for(lambda: marker in _raw_log(b), 3.0, what="%s in the log" % what)
            except TestFailure:
                raise TestFailure("%s is not logged at all (SPEC 9: logged escaped)\n%s"
                                  % (what, b.log_tail(20)))
        raw = _raw_log(b)
        bad = [l for l in raw.split(b"\n") if re.search(rb"[\x00-\x08\x0b-\x1f\x7f]", l)]
        check(not bad, "raw control bytes in the log: %r" % bad)


def test_token_secret_sent_as_user_name_is_not_logged():
    """SPEC 9: a CONNECT (MQTT 3.1.1 and 5) whose user name is a live token's secret (a
    client that put the secret in the wrong field) is refused, and the secret does not
    reach the log, not even in part (before: "no instance '<secret>'")."""
    aviary_only("cloud mode")
    db = cloud_db()
    name = _instance(db)
    _, secret = new_token(db, name, "--ttl", "1h")
    with _cloud(db) as b:
        mark = b.log_mark()
        c = RawClient(b.port)
        with c:
            c.connect(unique("c"), username=secret, password="whatever", expect_rc=None)
            check(c.connack_rc != 0, "a CONNECT with the secret as user name was accepted")
            c.expect_closed(5, "the close after CONNACK %d" % c.connack_rc)
        v5 = V5Client(b.port)
        with v5:
            ack = v5.connect(unique("c"), username=secret, password="whatever",
                             expect_reason=None)
            check(ack.reason >= 0x80, "an MQTT 5 CONNECT with the secret as user name was "
                  "accepted: %r" % ack)
            v5.packets_until_closed(5, "the close after a refusing CONNACK")
        try:  # the refusals are logged before the close; give the lines a moment
            wait_for(lambda: b.log_text(mark).count("CONNACK") >= 2, 1.0,
                     what="both refusals in the log")
        except TestFailure:
            pass  # logged in other words: what matters is what is not there
        log = b.log_text(mark)
        pieces = [secret[i:i + 10] for i in range(0, len(secret) - 9)]
        leaked = [p for p in pieces if p in log]
        check(not leaked, "the token secret (or part of it, %r) is in the log:\n%s"
              % (leaked[:1], "\n".join("  | " + l for l in log.splitlines()
                                       if any(p in l for p in leaked))))
        cloud_login5(b.port, name, secret).ping()


# ---------------------------------------------------------------------------
# 10. The database is created 0600

class _Umask:
    """os.umask(mask) inside a `with` block (inherited by the children started in it)."""

    def __init__(self, mask):
        self.mask = mask

    def __enter__(self):
        self.old = os.umask(self.mask)

    def __exit__(self, *exc):
        os.umask(self.old)
        return False


def _check_private(path, what):
    """`path` and its -wal/-shm files (those present) have no group or other bits."""
    for p in (path, path + "-wal", path + "-shm"):
        if p != path and not os.path.exists(p):
            continue
        mode = stat.S_IMODE(os.stat(p).st_mode)
        check(mode & 0o077 == 0, "%s: %s has mode %04o; expected 0600 (no group or other "
              "bits) with the umask at 022" % (what, os.path.basename(p), mode))


def test_aviaryctl_creates_the_database_0600():
    """SPEC 10: `aviaryctl --db NEW instance create x` with umask 022 creates NEW (and its
    -wal/-shm files if any) readable by its owner only: it holds the tokens' hashes and
    every instance's limits. Before, the file came out 0644."""
    aviary_only("aviaryctl")
    db = cloud_db()
    check(not os.path.exists(db), "%s exists before the test" % db)
    with _Umask(0o022):
        rc, out, err = aviaryctl(db, "instance", "create", "x")
    check_equal(rc, 0, "aviaryctl instance create exit status (stderr %r)" % err)
    check(os.path.exists(db), "aviaryctl did not create %s" % db)
    _check_private(db, "the database aviaryctl created")


def test_aviaryd_creates_the_database_0600():
    """SPEC 10: aviaryd in cloud mode on a database path that does not exist yet, started
    with umask 022: if it creates the database, the file and its -wal/-shm files are
    0600 (checked while it runs, when the -wal/-shm files exist). A daemon that refuses
    to create one passes."""
    aviary_only("aviaryd's database")
    db = cloud_db()
    b = _cloud(db, "--allow-keys-without-tls", "yes", "--create-db", "yes")
    with _Umask(0o022):
        try:
            b.start()
        except TestFailure:
            if os.path.exists(db):
                raise
            return  # it does not create databases: nothing to check
    try:
        check(os.path.exists(db), "aviaryd started in cloud mode without creating %s" % db)
        _check_private(db, "the database aviaryd created")
    except BaseException as e:
        b.__exit__(type(e), e, e.__traceback__)
        raise
    b.__exit__(None, None, None)


def test_systemd_unit_sets_umask_0077():
    """SPEC 10: etc/aviaryd.service.in sets `UMask=0077` in [Service], so that whatever
    aviaryd creates (the database, its -wal/-shm) is private even where the code forgets."""
    path = os.path.join(source_dir(), "etc", "aviaryd.service.in")
    section = None
    found = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line
            elif line == "UMask=0077":
                found = section
    check_equal(found, "[Service]", "the section of a `UMask=0077` line in %s" % path)


# ---------------------------------------------------------------------------
# 11. A change made by aviaryctl is in force the moment aviaryctl exits

LOOP_SECONDS = 60.0  # bound of each loop below (100 x aviaryctl + CONNECT)


def _connack_rc(port, instance, secret):
    c = RawClient(port)
    try:
        c.connect(unique("now"), username=instance, password=secret, expect_rc=None)
        return c.connack_rc
    finally:
        c.close()


def _loop(b, count, make):
    """`count` times: make() (aviaryctl, returns (instance, secret)), then at once a
    CONNECT; fails unless every CONNACK is 0."""
    refused = []
    deadline = time.monotonic() + LOOP_SECONDS
    done = 0
    for i in range(count):
        if time.monotonic() > deadline:
            break
        instance, secret = make(i)
        rc = _connack_rc(b.port, instance, secret)
        done += 1
        if rc != 0:
            refused.append((i, rc))
    check(not refused, "%d of %d CONNECTs sent the moment aviaryctl exited were refused "
          "(iteration, CONNACK): %r" % (len(refused), done, refused[:10]))
    check_equal(done, count, "iterations done within %.0f s" % LOOP_SECONDS)


def test_token_created_by_aviaryctl_works_at_once_100_times():
    """SPEC 11: `aviaryctl token create INST` then, with no pause, a CONNECT with its secret:
    CONNACK 0 100 times out of 100 (the broker re-reads the database on a login miss;
    before, it saw the token only at its next poll, up to 0.5 s later: CONNACK 4)."""
    aviary_only("cloud mode")
    db = cloud_db()
    name = _instance(db)
    with _cloud(db, "--allow-keys-without-tls", "yes", log_level="info") as b:
        _loop(b, 100, lambda i: (name, new_token(db, name)[1]))
        b.check_alive()


def test_instance_created_by_aviaryctl_works_at_once():
    """SPEC 11: `aviaryctl instance create` + `aviaryctl token create` then at once a
    CONNECT to the new instance: CONNACK 0 every time (20 new instances)."""
    aviary_only("cloud mode")
    db = cloud_db()
    with _cloud(db, "--allow-keys-without-tls", "yes", "--create-db", "yes",
                log_level="info") as b:
        def make(i):
            name = _instance(db)
            return name, new_token(db, name)[1]
        _loop(b, 20, make)
        b.check_alive()


def test_login_misses_share_a_look_and_stay_refused():
    """SPEC 11, the error paths: 30 CONNECTs with wrong secrets at once, half of them
    dropped by their clients while they wait for the broker's fresh look at the database.
    Every one still connected gets CONNACK 4 within a second (one look serves them all,
    and a second miss is final), a good login is served meanwhile, and the broker
    stops cleanly on SIGTERM with logins still waiting."""
    aviary_only("cloud mode")
    db = cloud_db()
    name = _instance(db)
    secret = new_token(db, name)[1]
    with _cloud(db, "--allow-keys-without-tls", "yes") as b:
        waiting = []
        for i in range(30):
            c = RawClient(b.port)
            c.send(connect_packet(unique("miss"), username=name, password="wrong-%d" % i))
            waiting.append(c)
        for c in waiting[::2]:
            c.abort()
        cloud_login5(b.port, name, secret).ping()
        t0 = time.monotonic()
        for c in waiting[1::2]:
            ack = c.expect(CONNACK, 2.0, what="CONNACK to a login that missed twice")
            check_equal(ack.body[1], 4, "CONNACK code for a wrong secret")
            c.close()
        check(time.monotonic() - t0 < 1.0, "15 refusals took %.2f s: more than one look each?"
              % (time.monotonic() - t0))
        late = [RawClient(b.port) for _ in range(5)]
        for i, c in enumerate(late):
            c.send(connect_packet(unique("late"), username=name, password="late-%d" % i))
        rc, _ = b.terminate()
        for c in late:
            c.close()
        check_equal(rc, 0, "exit status on SIGTERM with logins waiting")


# ---------------------------------------------------------------------------
# 12 (a). MQTT 3.1: DUP on PUBREL, SUBSCRIBE, UNSUBSCRIBE

def test_MQTT_3_1_dup_on_pubrel_subscribe_unsubscribe_is_accepted():
    """SPEC 12 (a), MQTT 3.1 section 2.1: a 3.1 client (MQIsdp, level 3) retrying PUBREL
    (0x6A), SUBSCRIBE (0x8A) or UNSUBSCRIBE (0xAA) sets DUP; the broker answers PUBCOMP /
    SUBACK / UNSUBACK and keeps the connection, so the QoS 2 exchange completes. 3.1.1
    and 5.0 keep the strict flags check [MQTT-2.2.2-1]: a PUBREL 0x6A closes them.
    Before, the 3.1 client was closed as malformed."""
    with broker() as b:
        # 3.1.1 and 5.0: still closed.
        for version in (4, 5):
            if version == 4:
                c = RawClient(b.port)
                c.connect(unique("v311-"), version=4)
            else:
                c = v5_connect(b.port, unique("v5-"))
            with c:
                c.send(publish_packet("dup/t", b"x", qos=2, pid=7) if version == 4
                       else publish5("dup/t", b"x", qos=2, pid=7))
                c.expect(PUBREC, pid=7, what="QoS 2 PUBLISH")
                c.send(b"\x6a\x02" + u16(7))
                got = c.expect_closed(5, "the close after a PUBREL with DUP (version %d)"
                                      % version)
                check(not any(p.type == PUBCOMP for p in got),
                      "PUBCOMP to a PUBREL with DUP from a version %d client: %r"
                      % (version, got))
        # 3.1: accepted.
        sub = RawClient(b.port)
        sub.connect(unique("s"))
        sub.subscribe([("dup/#", 2)])
        c = RawClient(b.port)
        with c, sub:
            c.connect(unique("v31-"), version=3)
            c.send(publish_packet("dup/q2", b"exactly-once", qos=2, pid=9))
            c.expect(PUBREC, pid=9, what="the 3.1 client's QoS 2 PUBLISH")
            c.send(b"\x6a\x02" + u16(9))
            comp = c.expect(PUBCOMP, pid=9, what="a 3.1 PUBREL with DUP (0x6A)")
            check_equal(comp.flags, 0, "PUBCOMP flags")
            check_equal(sub.receive(what="the 3.1 client's QoS 2 message").payload,
                        b"exactly-once", "the message delivered")
            c.send(subscribe_packet(10, [("dup/s", 1)], flags=0x0A))
            ack = c.expect(SUBACK, pid=10, what="a 3.1 SUBSCRIBE with DUP (0x8A)")
            check_equal(list(ack.body[2:]), [1], "SUBACK codes")
            c.send(unsubscribe_packet(11, ["dup/s"], flags=0x0A))
            c.expect(UNSUBACK, pid=11, what="a 3.1 UNSUBSCRIBE with DUP (0xAA)")
            c.ping()
            sub.expect_silence(0.2, "(a second copy of the QoS 2 message)")


# ---------------------------------------------------------------------------
# 12 (b). An ack of the wrong type for a packet id in flight is a protocol error

NOT_IN_FLIGHT = 0x7777


def _wrong_ack(b, version, msg_qos, wrong):
    """A subscriber of protocol `version` (4 or 5) gets a QoS `msg_qos` message and
    answers it with `wrong` (PUBACK or PUBCOMP). First the same ack for an id not in
    flight: ignored, the connection is still served. Then the connection must close
    (MQTT 5: DISCONNECT 0x82 Protocol Error first)."""
    topic = unique("ack/")
    if version == 4:
        sub = RawClient(b.port)
        sub.connect(unique("sub-"))
        check_equal(sub.subscribe([(topic, 2)]), [2], "SUBACK")
        pub = RawClient(b.port)
        pub.connect(unique("pub-"))
    else:
        sub = v5_connect(b.port, unique("sub5-"))
        check_equal(sub.subscribe((topic, 2)).codes, [2], "SUBACK")
        pub = v5_connect(b.port, unique("pub5-"))
    with sub, pub:
        pub.publish(topic, b"m", qos=msg_qos)
        what = "the QoS %d message" % msg_qos
        p = (Publish(sub.expect(PUBLISH, what=what)) if version == 4
             else sub.expect5(PUBLISH, what=what))
        check_equal(p.qos, msg_qos, "QoS of the delivered message")
        stray = NOT_IN_FLIGHT if p.pid != NOT_IN_FLIGHT else NOT_IN_FLIGHT + 1
        name = {PUBACK: "PUBACK", PUBCOMP: "PUBCOMP"}[wrong]
        make = {(4, PUBACK): puback_packet, (4, PUBCOMP): pubcomp_packet,
                (5, PUBACK): puback5, (5, PUBCOMP): pubcomp5}[(version, wrong)]
        sub.send(make(stray))
        sub.ping()  # an ack for an id not in flight is ignored
        what = "%s for a QoS %d message in flight (MQTT %s)" % (
            name, msg_qos, "3.1.1" if version == 4 else "5")
        sub.send(make(p.pid))
        if version == 5 and (is_aviary() or STRICT):
            sub.expect_disconnect(0x82, what=what, reason_string=False)
        else:  # 3.1.1; and mosquitto 2.0.11 closes a v5 client without DISCONNECT 0x82
            got = sub.expect_closed(5, "the close after " + what)
            check(not any(x.type in (PUBREL, PUBLISH) for x in got),
                  "the broker went on with the exchange after %s: %r" % (what, got))
        pub.ping()


def test_MQTT_4_8_0_1_pubcomp_to_a_qos1_message_is_a_protocol_error():
    """SPEC 12 (b): PUBCOMP answering a QoS 1 message in flight closes the connection
    (MQTT 5: DISCONNECT 0x82 first); a PUBCOMP for an id not in flight is ignored.
    Before, the wrong ack was ignored and the message stayed unacknowledged."""
    with broker() as b:
        _wrong_ack(b, 4, 1, PUBCOMP)
        _wrong_ack(b, 5, 1, PUBCOMP)


def test_MQTT_4_8_0_1_puback_to_a_qos2_message_is_a_protocol_error():
    """SPEC 12 (b): PUBACK answering a QoS 2 message in flight closes the connection
    (MQTT 5: DISCONNECT 0x82 first); a PUBACK for an id not in flight is ignored."""
    with broker() as b:
        _wrong_ack(b, 4, 2, PUBACK)
        _wrong_ack(b, 5, 2, PUBACK)


def test_MQTT_4_8_0_1_pubcomp_before_pubrec_is_a_protocol_error():
    """SPEC 12 (b): PUBCOMP answering a QoS 2 message before any PUBREC closes the
    connection (MQTT 5: DISCONNECT 0x82 first); a PUBCOMP for an id not in flight is
    ignored."""
    with broker() as b:
        _wrong_ack(b, 4, 2, PUBCOMP)
        _wrong_ack(b, 5, 2, PUBCOMP)


# ---------------------------------------------------------------------------
# 12 (c). A small Maximum Packet Size keeps the CONNACK's required properties

def _props_size(props):
    """Bytes of the property list `props` ([(id, value)]) on the wire, without its
    Property Length."""
    return _read_varint(encode_properties(list(props)), 0)[0]


def _connack_size(props):
    """Bytes on the wire of a CONNACK carrying `props`."""
    plen = _props_size(props)
    body = 2 + len(varint(plen)) + plen
    return 1 + len(varint(body)) + body


def _full_connack(b):
    c = V5Client(b.port)
    with c:
        ack = c.connect("", keepalive=0)
        c.ping()
    check_equal(_connack_size(ack.props), ack.size, "the CONNACK's size as computed here")
    for pid in (ASSIGNED_CLIENT_IDENTIFIER, SERVER_KEEP_ALIVE):
        check(ack.props.has(pid), "no %s in the CONNACK to an empty client id with keep-alive "
              "0: %r" % (PROPERTIES[pid][0], ack))
    kept = [(p, v) for p, v in ack.props if p not in DROPPABLE]
    return ack, kept


def test_MQTT_3_2_2_22_small_maximum_packet_size_keeps_assigned_id_and_server_keep_alive():
    """SPEC 12 (c), [MQTT-3.1.3-7], [MQTT-3.2.2-22]: an MQTT 5 client with an empty client
    id, keep-alive 0 and a Maximum Packet Size a few bytes above the CONNACK without its
    droppable properties (Reason String, User Properties, the four "... Available", Topic
    Alias Maximum) but below the full CONNACK still gets the Assigned Client Identifier
    and the Server Keep Alive (and Session Expiry Interval, Receive Maximum, Maximum
    Packet Size where the full CONNACK has them), within its limit. The sizes come from
    a first CONNACK without the limit. Before, every property was stripped."""
    aviary_only("which CONNACK properties aviary drops first")
    with Broker() as b:
        full, kept = _full_connack(b)
        limit = _connack_size(kept) + 3
        check(limit < full.size, "cannot test: the full CONNACK (%d bytes) is not larger than "
              "its required part + 3 (%d): %r" % (full.size, limit, full))
        c = V5Client(b.port)  # checks that nothing larger than `limit` arrives
        with c:
            ack = c.connect("", keepalive=0, maximum_packet_size=limit)
            check(ack.size <= limit, "CONNACK of %d bytes past Maximum Packet Size %d"
                  % (ack.size, limit))
            aid = ack.props.get(ASSIGNED_CLIENT_IDENTIFIER)
            check(aid, "no Assigned Client Identifier in the CONNACK to an empty client id "
                  "with Maximum Packet Size %d (full CONNACK: %d bytes): %r"
                  % (limit, full.size, ack))
            check_equal(ack.props.get(SERVER_KEEP_ALIVE), full.props.get(SERVER_KEEP_ALIVE),
                        "Server Keep Alive with Maximum Packet Size %d (CONNACK %r)"
                        % (limit, ack))
            for pid in (SESSION_EXPIRY_INTERVAL, RECEIVE_MAXIMUM, MAXIMUM_PACKET_SIZE):
                if full.props.has(pid):
                    check_equal(ack.props.get(pid), full.props.get(pid),
                                "%s with Maximum Packet Size %d (CONNACK %r)"
                                % (PROPERTIES[pid][0], limit, ack))
            c.ping()
            # The assigned id is the session's: a second client with it takes it over.
            again = v5_connect(b.port, aid)
            with again:
                got = c.packets_until_closed(3, "the take-over of assigned id %r" % aid)
                check(all(p.reason == 0x8E for p in got), "before the take-over close: %r"
                      % got)
                again.ping()


def test_connack_that_cannot_fit_maximum_packet_size_closes_without_connack():
    """SPEC 12 (c): when even the CONNACK with only its required properties (Assigned Client
    Identifier, Server Keep Alive, ...) exceeds the client's Maximum Packet Size, the
    broker closes the connection without a CONNACK. Before, it sent a CONNACK stripped of
    every property, leaving the client without its client id."""
    aviary_only("what aviary does with a CONNACK that cannot fit")
    with Broker() as b:
        full, kept = _full_connack(b)
        limit = _connack_size(kept) - 4
        c = V5Client(b.port)
        with c:
            c.send(connect5("", keepalive=0, maximum_packet_size=limit))
            c.max_packet_size = limit
            got = c.packets_until_closed(5, "the close of a client whose Maximum Packet Size "
                                         "%d is below the required CONNACK" % limit)
            check(not got, "packets to a client whose Maximum Packet Size %d is below the "
                  "required CONNACK (%d bytes): %s" % (limit, limit + 4, summarize(got)))
        v5_connect(b.port).ping()


if __name__ == "__main__":
    run_tests(globals())
