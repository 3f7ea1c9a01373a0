#!/usr/bin/env python3
"""Back-pressure of the database writer (aviaryd(8), DURABILITY).

While another connection holds the database's write lock, the writer thread
cannot commit: what the broker keeps waits in its backlog. An instance
whose share of it passes its bound (8 MiB) has its publishers slowed -- its
PUBLISHes are not read, so their PUBACKs stop -- while another instance's
traffic goes on. Once the lock goes, the writer catches up, the publisher
is read again, and everything it was told was taken is in the database.
"""

import os
import sqlite3
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    cloud_db, cloud_login, ctl, new_token, publish_packet, Broker, check, check_equal,
    run_tests, unique, wait_for, PUBACK)

PAYLOAD = 64 * 1024
# Twice the instance's bound of 8 MiB in retained messages.
FLOOD = 256


def _cloud(db, *args):
    return Broker("--mode", "cloud", "--db", db, "--allow-keys-without-tls",
                  "--max-payload", "128k", *args)


def _instance(db):
    name = unique("inst")
    ctl(db, "instance", "create", name)
    for limit, value in (("max-messages-per-second", "0"), ("max-retained", "0"),
                         ("max-instance-bytes", "0")):
        ctl(db, "instance", "set", name, limit, value)
    return name, new_token(db, name)[1]


class Flood:
    """Send FLOOD retained QoS 1 messages without waiting; count PUBACKs as they come."""

    def __init__(self, client):
        self.client = client
        self.acked = 0
        self.lock = threading.Lock()
        self.client.sock.settimeout(60)
        self.sender = threading.Thread(target=self._send, daemon=True)
        self.sender.start()

    def _send(self):
        body = b"x" * PAYLOAD
        for i in range(FLOOD):
            try:
                self.client.send(publish_packet("flood/%d" % i, body, qos=1, retain=True,
                                                pid=i + 1))
            except OSError:
                return

    def read_acks(self, seconds):
        """Read PUBACKs for `seconds` (bounded); returns how many arrived so far."""
        deadline = time.monotonic() + seconds
        while self.acked < FLOOD and time.monotonic() < deadline:
            try:
                p = self.client.read_packet(timeout=max(0.05, deadline - time.monotonic()))
            except Exception:
                break
            if p.type == PUBACK:
                self.acked += 1
        return self.acked


def _round_trip(pub, sub, n):
    pub.publish("ping", b"%d" % n, qos=1, timeout=2.0)
    got = sub.receive(timeout=2.0)
    check_equal(got.payload, b"%d" % n, "the other instance's message")


def test_a_flooding_instance_is_slowed_while_the_writer_is_blocked_and_others_are_not():
    db = cloud_db()
    (a, sa), (b_name, sb) = _instance(db), _instance(db)
    with _cloud(db) as b:
        pub_b = cloud_login(b.port, b_name, sb)
        sub_b = cloud_login(b.port, b_name, sb)
        sub_b.subscribe([("ping", 1)])
        flooder = cloud_login(b.port, a, sa)
        # Another program holds the write lock: the writer cannot commit.
        lock = sqlite3.connect(db, timeout=10, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        try:
            mark = b.log_mark()
            flood = Flood(flooder)
            first = flood.read_acks(3.0)
            check(first < FLOOD, "all %d PUBACKs arrived while the database was locked: the "
                  "publisher was not slowed" % FLOOD)
            check(first * PAYLOAD >= 8 * 1024 * 1024 - PAYLOAD,
                  "only %d PUBACKs before the publisher was slowed: the bound is 8 MiB" % first)
            stalled = flood.read_acks(1.0)
            check_equal(stalled, first, "PUBACKs while the instance is held back")
            # The other tenant is served meanwhile.
            for n in range(5):
                _round_trip(pub_b, sub_b, n)
            b.wait_log(r"publishers are read slower", since=mark, timeout=5.0)
            b.wait_log(r"locked by another connection", since=mark, timeout=10.0)
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        # The writer catches up: the publisher is read again, to the end.
        wait_for(lambda: flood.read_acks(0.5) == FLOOD, 30.0, what="every PUBACK")
        flood.sender.join(10)
        b.check_alive()
    # Everything acknowledged is kept.
    with _cloud(db) as b:
        late = cloud_login(b.port, a, sa)
        late.subscribe([("flood/#", 1)])
        got = late.receive_all(FLOOD, timeout=20.0)
        check_equal(len(got), FLOOD, "retained messages after the restart")


if __name__ == "__main__":
    run_tests(globals())
