"""Watch, lease, lock and election with the real etcdctl against petcd."""

from __future__ import annotations

import re
import signal

import pytest

from petcd.testing.harness import Background, Server, etcdctl, wait_for

pytestmark = pytest.mark.timeout(300)


def test_watch_prefix_with_prev_kv(petcd: Server) -> None:
    w = Background(petcd.endpoint, "watch", "--prefix", "wp/", "--prev-kv")
    try:
        wait_for(lambda: w.proc.poll() is None, 5, "watch to start")
        # a put only reaches the watcher once the watch is registered; retry
        # the first put until the watcher has printed something
        wait_for(lambda: etcdctl(petcd.endpoint, "put", "wp/a", "1") and w.lines, 30, "the watch to see a put")
        etcdctl(petcd.endpoint, "put", "wp/a", "2")
        etcdctl(petcd.endpoint, "del", "wp/a")
        etcdctl(petcd.endpoint, "put", "other", "x")  # outside the prefix
        # with --prev-kv, etcdctl prints the previous key and value before the new ones
        want = ["PUT", "wp/a", "1", "wp/a", "2", "DELETE", "wp/a", "2", "wp/a", ""]
        wait_for(lambda: w.lines[-10:] == want, 30, f"the put and delete events (have {w.lines})")
    finally:
        w.stop()
    assert "other" not in w.lines


def test_watch_from_a_past_revision_replays_history(petcd: Server) -> None:
    first = etcdctl(petcd.endpoint, "put", "wr", "v1", "-w", "json").stdout
    rev = int(re.search(r'"revision":(\d+)', first).group(1))  # type: ignore[union-attr]
    etcdctl(petcd.endpoint, "put", "wr", "v2")
    etcdctl(petcd.endpoint, "del", "wr")
    w = Background(petcd.endpoint, "watch", "wr", "--rev", str(rev))
    try:
        lines = w.wait_lines(8)
    finally:
        w.stop()
    assert lines[:8] == ["PUT", "wr", "v1", "PUT", "wr", "v2", "DELETE", "wr"]


def test_interactive_watch(petcd: Server) -> None:
    w = Background(petcd.endpoint, "watch", "-i", stdin=True)
    try:
        w.send("watch wi\n")
        wait_for(lambda: etcdctl(petcd.endpoint, "put", "wi", "x") and len(w.lines) >= 3, 30, "interactive watch")
    finally:
        w.stop()
    assert w.lines[:3] == ["PUT", "wi", "x"]


def test_lease_lifecycle(petcd: Server) -> None:
    out = etcdctl(petcd.endpoint, "lease", "grant", "60").stdout
    m = re.match(r"lease ([0-9a-f]+) granted with TTL\(60s\)", out)
    assert m, out
    lease = m.group(1)
    etcdctl(petcd.endpoint, "put", "lk1", "v", f"--lease={lease}")
    etcdctl(petcd.endpoint, "put", "lk2", "v", f"--lease={lease}")
    ttl = etcdctl(petcd.endpoint, "lease", "timetolive", lease, "--keys").stdout
    assert re.match(rf"lease {lease} granted with TTL\(60s\), remaining\((5\d|60)s\), attached keys\(\[lk1 lk2\]\)",
                    ttl), ttl
    assert etcdctl(petcd.endpoint, "lease", "keep-alive", "--once", lease).stdout.strip() == \
        f"lease {lease} keepalived with TTL(60)"
    assert lease in etcdctl(petcd.endpoint, "lease", "list").stdout
    ka = Background(petcd.endpoint, "lease", "keep-alive", lease)
    try:
        ka.wait_lines(1)
        assert ka.lines[0] == f"lease {lease} keepalived with TTL(60)"
    finally:
        ka.stop()
    assert etcdctl(petcd.endpoint, "lease", "revoke", lease).stdout.strip() == f"lease {lease} revoked"
    assert etcdctl(petcd.endpoint, "get", "lk", "--prefix").stdout == ""
    bad = etcdctl(petcd.endpoint, "lease", "timetolive", lease).stdout
    assert bad.strip() == f"lease {lease} already expired"
    err = etcdctl(petcd.endpoint, "put", "lk3", "v", f"--lease={lease}", check=False)
    assert err.returncode != 0 and "requested lease not found" in err.stderr


def test_an_expiring_lease_deletes_its_key_and_a_watcher_sees_it(petcd: Server) -> None:
    lease = etcdctl(petcd.endpoint, "lease", "grant", "2").stdout.split()[1]
    etcdctl(petcd.endpoint, "put", "expiring", "soon", f"--lease={lease}")
    w = Background(petcd.endpoint, "watch", "expiring")
    try:
        lines = w.wait_lines(2, timeout=60)
    finally:
        w.stop()
    assert lines[:2] == ["DELETE", "expiring"]
    assert etcdctl(petcd.endpoint, "get", "expiring").stdout == ""


def test_lock_gives_mutual_exclusion(petcd: Server) -> None:
    a = Background(petcd.endpoint, "lock", "the-lock")
    try:
        a.wait_lines(1)
        assert a.lines[0].startswith("the-lock/")
        b = Background(petcd.endpoint, "lock", "the-lock")
        try:
            # b waits while a holds the lock
            with pytest.raises(AssertionError):
                b.wait_lines(1, timeout=3)
            a.stop(signal.SIGINT)  # a releases the lock as it exits
            lines = b.wait_lines(1, timeout=60)
            assert lines[0].startswith("the-lock/") and lines[0] != a.lines[0]
        finally:
            b.stop()
    finally:
        a.stop()


def test_elect_elects_one_leader_and_hands_over(petcd: Server) -> None:
    p1 = Background(petcd.endpoint, "elect", "the-election", "p1")
    try:
        p1.wait_lines(2)
        assert p1.lines[1] == "p1"
        p2 = Background(petcd.endpoint, "elect", "the-election", "p2")
        observer = Background(petcd.endpoint, "elect", "-l", "the-election")
        try:
            observer.wait_lines(2)
            assert observer.lines[1] == "p1"
            with pytest.raises(AssertionError):
                p2.wait_lines(1, timeout=3)
            p1.stop(signal.SIGINT)
            assert p2.wait_lines(2, timeout=60)[1] == "p2"
            assert observer.wait_lines(4, timeout=60)[3] == "p2"
        finally:
            p2.stop()
            observer.stop()
    finally:
        p1.stop()
