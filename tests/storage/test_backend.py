"""Backend: buckets, batch visibility, consistent index, defrag, snapshot, map growth."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from petcd.storage.backend import BUCKETS, Backend
from petcd.storage.errors import BackendClosedError, BackendError, BackendFileError, UnknownBucketError


def k(i: int) -> bytes:
    return i.to_bytes(8, "big")


def restore(snap_path: Path, b: Backend) -> Backend:
    """Write b's snapshot to snap_path and open it as a backend."""
    snap = b.snapshot()
    try:
        with open(snap_path, "wb") as f:
            while chunk := snap.read(100_000):
                f.write(chunk)
            assert f.tell() == snap.size
    finally:
        snap.close()
    return Backend(str(snap_path))


@pytest.fixture
def backend(tmp_path: Path):
    b = Backend(str(tmp_path / "member" / "snap" / "db"), unsafe_no_fsync=True)
    yield b
    b.close()


def test_buckets_are_separate_and_put_get_delete_work(backend: Backend) -> None:
    for name in BUCKETS:
        backend.put(name, b"k", name.encode())
    for name in BUCKETS:
        assert backend.get(name, b"k") == name.encode()
    backend.delete("lease", b"k")
    backend.delete("lease", b"absent")  # deleting a missing key is not an error
    assert backend.get("lease", b"k") is None
    assert backend.get("auth", b"k") == b"auth"


def test_reads_see_the_uncommitted_batch(backend: Backend) -> None:
    backend.put("key", b"a", b"1")
    backend.commit()
    backend.put("key", b"b", b"2")
    backend.delete("key", b"a")
    assert backend.get("key", b"b") == b"2"
    assert backend.get("key", b"a") is None
    assert list(backend.items("key")) == [(b"b", b"2")]
    assert list(backend.range("key", b"a", b"c")) == [(b"b", b"2")]


def test_range_is_half_open_sorted_and_end_none_reaches_the_last_key(backend: Backend) -> None:
    for i in reversed(range(1000)):
        backend.put("key", k(i), str(i).encode())
    got = [int.from_bytes(key, "big") for key, _ in backend.range("key", k(10), k(900))]
    assert got == list(range(10, 900))
    assert [int.from_bytes(key, "big") for key, _ in backend.range("key", k(995), None)] == [995, 996, 997, 998, 999]
    assert list(backend.range("key", k(5000), None)) == []
    assert list(backend.range("key", k(3), k(3))) == []
    assert len(list(backend.items("key"))) == 1000
    assert list(backend.items("meta")) == []


def test_delete_range_removes_exactly_the_range_and_counts(backend: Backend) -> None:
    for i in range(100):
        backend.put("key", k(i), b"v")
    assert backend.delete_range("key", k(20), k(30)) == 10
    assert backend.delete_range("key", k(20), k(30)) == 0
    assert backend.delete_range("key", k(95), k(10_000)) == 5
    left = [int.from_bytes(key, "big") for key, _ in backend.items("key")]
    assert left == [*range(20), *range(30, 95)]


def test_iteration_survives_writes_and_commits_between_items(backend: Backend) -> None:
    for i in range(0, 10_000, 2):
        backend.put("key", k(i), b"old")
    backend.commit()
    seen = []
    for n, (key, _) in enumerate(backend.items("key")):
        seen.append(int.from_bytes(key, "big"))
        backend.delete("key", key)  # the caller mutates while iterating
        if n % 997 == 0:
            backend.commit()
    assert seen == list(range(0, 10_000, 2))
    assert list(backend.items("key")) == []


def test_consistent_index_round_trips_across_close_and_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    b = Backend(path)
    assert b.consistent_index() == (0, 0)
    b.put("key", b"x", b"y")
    b.set_consistent_index(12345, 7)
    assert b.consistent_index() == (12345, 7)
    b.close()  # close commits the open batch
    b = Backend(path)
    try:
        assert b.consistent_index() == (12345, 7)
        assert b.get("key", b"x") == b"y"
        assert b.get("meta", b"consistent_index") == (12345).to_bytes(8, "big") + (7).to_bytes(8, "big")
    finally:
        b.close()


def test_the_consistent_index_is_written_once_per_batch(tmp_path: Path) -> None:
    """The applier sets the index after every entry; the backend writes
    only the last value into the batch, when it commits (commit or
    commit_if_due, also for a batch holding nothing else) or when the meta
    bucket is read, so it always lands with the data it describes."""
    b = Backend(str(tmp_path / "db"), batch_interval=0.0, unsafe_no_fsync=True)
    try:
        writes: list[bytes] = []
        real_run = b._run

        def counting_run(op: tuple) -> int:  # type: ignore[type-arg]
            writes.append(op[2])
            return real_run(op)

        b._run = counting_run  # type: ignore[method-assign]
        for i in range(1, 11):
            b.put("key", k(i), b"v")
            b.set_consistent_index(i, 2)
        assert writes.count(b"consistent_index") == 0
        assert b.consistent_index() == (10, 2)  # a read of the meta bucket writes it first
        assert writes.count(b"consistent_index") == 1
        b.set_consistent_index(11, 2)  # an entry with nothing to write (a leader's no-op)
        assert list(b.items("meta")) == [(b"consistent_index", (11).to_bytes(8, "big") + (2).to_bytes(8, "big"))]
        b.set_consistent_index(12, 3)
        b.commit_if_due()
        r = restore(tmp_path / "s", b)  # committed, though the batch held only the index
        assert r.consistent_index() == (12, 3) and r.get("key", k(10)) == b"v"
        r.close()
        assert writes.count(b"consistent_index") == 3
    finally:
        b.close()


def test_commit_if_due_commits_at_batch_limit_only(tmp_path: Path) -> None:
    b = Backend(str(tmp_path / "db"), batch_interval=3600.0, batch_limit=10, unsafe_no_fsync=True)
    try:
        for i in range(9):
            b.put("key", k(i), b"v")
        b.commit_if_due()
        r = restore(tmp_path / "s1", b)  # a snapshot holds only committed data
        assert list(r.items("key")) == []
        r.close()
        b.put("key", k(9), b"v")
        b.commit_if_due()
        r = restore(tmp_path / "s2", b)
        assert len(list(r.items("key"))) == 10
        r.close()
    finally:
        b.close()


def test_commit_if_due_commits_once_the_interval_elapsed(tmp_path: Path) -> None:
    b = Backend(str(tmp_path / "db"), batch_interval=0.0, unsafe_no_fsync=True)
    try:
        b.put("key", b"a", b"1")
        b.commit_if_due()
        r = restore(tmp_path / "s", b)
        assert r.get("key", b"a") == b"1"
        r.close()
    finally:
        b.close()


def test_defrag_keeps_the_data_and_shrinks_the_file_after_deletes(tmp_path: Path) -> None:
    b = Backend(str(tmp_path / "db"), unsafe_no_fsync=True)
    try:
        for i in range(5000):
            b.put("key", k(i), os.urandom(1000))
        b.put("lease", b"l", b"lease")
        b.commit()
        assert b.delete_range("key", k(0), k(4900)) == 4900
        b.put("key", b"pending", b"uncommitted before defrag")
        before = dict(b.items("key"))
        h = b.hash()
        size_before = b.size()
        assert b.size_in_use() < size_before // 4
        b.defrag()
        assert dict(b.items("key")) == before
        assert b.get("lease", b"l") == b"lease"
        assert b.hash() == h
        assert b.size() < size_before // 4
        b.put("key", b"after", b"defrag")  # still writable
        b.commit()
    finally:
        b.close()
    b = Backend(str(tmp_path / "db"))
    try:
        assert b.get("key", b"after") == b"defrag"
        assert len(list(b.items("key"))) == 102
    finally:
        b.close()


def test_snapshot_bytes_open_as_a_backend_with_the_same_data(tmp_path: Path, backend: Backend) -> None:
    for i in range(3000):
        backend.put("key", k(i), os.urandom(100))
    backend.put("members", b"m1", b"{}")
    backend.set_consistent_index(77, 3)
    backend.commit()
    r = restore(tmp_path / "restored.db", backend)
    try:
        assert r.hash() == backend.hash()
        assert r.consistent_index() == (77, 3)
        assert list(r.items("key")) == list(backend.items("key"))
    finally:
        r.close()


def test_snapshot_in_a_worker_thread_does_not_wait_for_the_open_batch(tmp_path: Path, backend: Backend) -> None:
    backend.put("key", b"committed", b"1")
    backend.commit()
    backend.put("key", b"pending", b"2")  # the batch write txn stays open
    result: dict[str, object] = {}

    def worker() -> None:
        try:
            result["snap"] = backend.snapshot()
        except BaseException as exc:  # pragma: no cover - reported below
            result["error"] = exc

    t = threading.Thread(target=worker)
    t.start()
    t.join(timeout=30)
    assert not t.is_alive(), "snapshot() blocked on the open batch"
    assert "error" not in result
    snap = result["snap"]
    data = b""
    while chunk := snap.read(4096):  # type: ignore[attr-defined]
        data += chunk
    snap.close()  # type: ignore[attr-defined]
    (tmp_path / "copy.db").write_bytes(data)
    r = Backend(str(tmp_path / "copy.db"))
    try:
        assert r.get("key", b"committed") == b"1"
        assert r.get("key", b"pending") is None
    finally:
        r.close()
    # The temp copy was never left in the directory.
    assert [p for p in os.listdir(os.path.dirname(backend.path)) if ".snapshot-" in p] == []


def test_map_grows_from_1mib_to_20mib_of_writes_in_one_batch_and_across_batches(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    b = Backend(path, initial_map_size=1 << 20, unsafe_no_fsync=True)
    value = b"v" * 4000
    try:
        for i in range(5200):  # ~20 MiB in a single batch: forces replay on MapFullError
            b.put("key", k(i), value)
        assert b.get("key", k(0)) == value
        b.commit()
        for i in range(5200, 10_400):  # and ~20 MiB more over many commits
            b.put("key", k(i), value)
            if i % 500 == 0:
                b.commit()
        b.put("key", b"huge", os.urandom(8 << 20))  # a single value bigger than the map ever was
        b.commit()
    finally:
        b.close()
    b = Backend(path, initial_map_size=1 << 20)
    try:
        assert len(list(b.items("key"))) == 10_401
        assert b.get("key", k(10_399)) == value
        assert b.size() > 40 << 20
    finally:
        b.close()


def test_hash_depends_on_contents_only(tmp_path: Path) -> None:
    a = Backend(str(tmp_path / "a"), unsafe_no_fsync=True)
    b = Backend(str(tmp_path / "b"), unsafe_no_fsync=True)
    try:
        for i in range(100):
            a.put("key", k(i), b"v")
        for i in reversed(range(100)):
            b.put("key", k(i), b"v")
        assert a.hash() == b.hash()
        b.put("auth", b"x", b"")
        assert a.hash() != b.hash()
    finally:
        a.close()
        b.close()


def test_unknown_bucket_and_use_after_close_raise(tmp_path: Path) -> None:
    b = Backend(str(tmp_path / "db"))
    with pytest.raises(UnknownBucketError):
        b.put("nope", b"k", b"v")
    b.put("key", b"k", b"v")
    b.close()
    b.close()  # idempotent
    with pytest.raises(BackendClosedError):
        b.get("key", b"k")
    with pytest.raises(BackendClosedError):
        b.snapshot()


def test_a_key_lmdb_rejects_raises_backend_error_and_keeps_the_batch(backend: Backend) -> None:
    backend.put("key", b"a", b"1")
    with pytest.raises(BackendError):
        backend.put("key", b"x" * 600, b"v")
    with pytest.raises(BackendError):
        backend.put("key", b"", b"v")
    assert backend.get("key", b"") is None
    assert backend.get("key", b"a") == b"1"
    backend.commit()
    assert list(backend.items("key")) == [(b"a", b"1")]


def test_opening_a_file_that_is_not_a_backend_raises_backend_error(tmp_path: Path) -> None:
    (tmp_path / "garbage").write_bytes(b"not lmdb" * 1000)
    with pytest.raises(BackendError, match="garbage"):
        Backend(str(tmp_path / "garbage"))


def test_snapshots_in_a_worker_thread_while_the_map_grows(tmp_path: Path) -> None:
    b = Backend(str(tmp_path / "db"), initial_map_size=1 << 20, unsafe_no_fsync=True)
    stop = threading.Event()
    sizes: list[int] = []
    errors: list[BaseException] = []

    def snapshotter() -> None:
        try:
            while not stop.is_set():
                with b.snapshot() as snap:
                    n = 0
                    while chunk := snap.read(1 << 20):
                        n += len(chunk)
                    sizes.append(n)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=snapshotter)
    t.start()
    try:
        for i in range(3000):
            b.put("key", k(i), os.urandom(3000))
            if i % 100 == 99:
                b.commit()
    finally:
        stop.set()
        t.join(timeout=60)
    assert not t.is_alive() and not errors
    assert len(sizes) >= 1
    b.commit()
    r = restore(tmp_path / "final", b)
    try:
        assert r.hash() == b.hash()
    finally:
        r.close()
        b.close()


# --- disk failures and damaged files (issue 9, defects 3 and 8) -------------------

_REPO = Path(__file__).resolve().parents[2]


def _run_py(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(_REPO)}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, env=env, cwd=str(_REPO)
    )


_FAILED_COMMIT = """
import os, resource, signal, sys
from petcd.storage.backend import Backend
from petcd.storage.errors import BackendFileError
path = sys.argv[1]
b = Backend(path)
b.put("key", b"committed", b"1")
b.commit()
size = os.stat(path).st_size
# A real OS error on the file's writes: the file may not grow past its size.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
for i in range(2000):
    b.put("key", b"k%06d" % i, b"v" * 1000)
try:
    b.commit()
except BackendFileError as exc:
    print("COMMIT", exc.path, "|", exc)
else:
    print("COMMIT succeeded")
for name, op in [("put", lambda: b.put("key", b"after", b"x")), ("get", lambda: b.get("key", b"committed")),
                 ("commit", b.commit), ("commit_if_due", b.commit_if_due)]:
    try:
        op()
    except BackendFileError as exc:
        print(name.upper(), "refused", exc.path)
    else:
        print(name.upper(), "accepted")
b.close()
print("CLOSED")
"""


def test_a_failed_commit_names_the_file_and_the_backend_refuses_everything_after_it(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    r = _run_py(_FAILED_COMMIT, path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"COMMIT {path} | backend: committing to {path} failed:"), r.stdout
    assert "bytes free on its file system" in lines[0]
    assert lines[1:] == [f"{op} refused {path}" for op in ("PUT", "GET", "COMMIT", "COMMIT_IF_DUE")] + ["CLOSED"]
    # What was committed before the failure is intact; nothing of the failed batch is.
    with Backend(path) as b:
        assert b.get("key", b"committed") == b"1"
        assert b.get("key", b"k000000") is None


_OPEN_AND_READ = """
import sys
from petcd.storage.backend import Backend
from petcd.storage.errors import BackendFileError
try:
    b = Backend(sys.argv[1])
    n = sum(1 for _ in b.items("key"))
except BackendFileError as exc:
    print("REFUSED", exc.path, "|", exc)
    sys.exit(3)
print("READ", n)
"""


@pytest.mark.parametrize("keep", ["half", "one meta page and a bit"])
def test_a_truncated_db_is_refused_on_open_naming_the_file_instead_of_sigbus(tmp_path: Path, keep: str) -> None:
    path = str(tmp_path / "db")
    with Backend(path) as b:
        for i in range(3000):
            b.put("key", k(i), b"v" * 200)
    size = os.stat(path).st_size
    os.truncate(path, size // 2 if keep == "half" else 4096 + 100)
    r = _run_py(_OPEN_AND_READ, path)
    # Before the fix the process died of SIGBUS (-7) without a word.
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    assert r.stdout.startswith(f"REFUSED {path} | backend: {path} is truncated"), r.stdout


def test_a_db_truncated_under_a_live_backend_is_reported_by_commit_if_due(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    b = Backend(path, unsafe_no_fsync=True)
    for i in range(3000):
        b.put("key", k(i), b"v" * 200)
    b.commit()
    b.commit_if_due()  # an intact file passes
    os.truncate(path, os.stat(path).st_size // 3)
    # (No read here: a read of a missing page is the SIGBUS this check exists to pre-empt.)
    with pytest.raises(BackendFileError, match="was truncated under the running member") as info:
        b.commit_if_due()
    assert info.value.path == path
    with pytest.raises(BackendFileError):
        b.put("key", b"x", b"y")
    b.close()


_TRIMMED_OPENS = """
import sys
from petcd.storage.backend import Backend
b = Backend(sys.argv[1])
print(b.hash())
b.put("lease", b"after", b"trim")
b.commit()
assert b.get("lease", b"after") == b"trim"
b.close()
"""


def test_the_truncation_check_knows_which_pages_are_used(tmp_path: Path) -> None:
    """A file may legitimately end before LMDB's last allocated page (pages
    allocated and freed in one transaction are never written): cut right
    after the last page its trees use, it opens and reads whole (no false
    alarm, no SIGBUS); one page shorter, it is refused."""
    from petcd.storage import backend as backend_mod

    path = str(tmp_path / "db")
    with Backend(path) as b:
        for i in range(500):
            b.put("lease", k(i), b"l" * (30 if i % 100 else 9000))  # kept; some on overflow pages
        b.commit()
        for _ in range(2):  # pages allocated at the end, then freed: the last used page drops
            for i in range(3000):
                b.put("key", k(i), b"v" * (100 if i % 50 else 20_000))
            b.commit()
            b.delete_range("key", k(0), k(3000))
            b.commit()
        expected = b.hash()
    with open(path, "rb") as f:
        found = backend_mod._newest_meta(f.fileno())
        assert found is not None
        psize, meta = found
        used = backend_mod._last_used_page(f.fileno(), psize, meta, os.stat(path).st_size)
    last_pg = int.from_bytes(meta[136:144], "little")
    assert 2 < used < last_pg - 100  # the case the walk is for
    # A commit extends the file over LMDB's last allocated page, so the next
    # open takes the quick path.
    assert os.stat(path).st_size == (last_pg + 1) * psize
    shorter = str(tmp_path / "shorter")
    shutil.copyfile(path, shorter)
    os.truncate(shorter, used * psize)
    with pytest.raises(BackendFileError, match=f"uses page {used} "):
        Backend(shorter)
    os.truncate(path, (used + 1) * psize)
    r = _run_py(_TRIMMED_OPENS, path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(expected)]


def _mixed_batch(b: Backend, seed: int) -> None:
    """One batch of puts with deletes among them: LMDB allocates pages at
    the end of the file and frees some of them again before the commit, and
    never writes those, so the file ends before LMDB's last page number."""
    rng = random.Random(seed)
    for i in range(3000):
        b.put("key", rng.randbytes(rng.randint(1, 60)), rng.randbytes(rng.choice([10, 100, 1000, 5000])))
        if i % 3 == 0:
            b.delete_range("key", rng.randbytes(2), rng.randbytes(2) + b"\xff")
    b.commit()


def test_a_healthy_db_that_ends_before_lmdbs_last_page_is_not_called_truncated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "db")
    # As after a crash right after LMDB's commit, before the backend extends the file.
    monkeypatch.setattr(Backend, "_cover_last_page", lambda self: None)
    with Backend(path, unsafe_no_fsync=True) as b:
        _mixed_batch(b, 0)
        need = (int(b._env.info()["last_pgno"]) + 1) * b._psize
        expected = b.hash()
    assert os.stat(path).st_size < need  # the situation under test
    monkeypatch.undo()
    r = _run_py(_OPEN_AND_READ, path)  # a SIGBUS here would mean a used page was missing
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    with Backend(path) as b:
        assert b.hash() == expected


def test_mixed_batches_never_raise_a_false_truncation_alarm_on_a_running_backend(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    with Backend(path, unsafe_no_fsync=True, batch_interval=0.0) as b:
        for seed in range(5):
            _mixed_batch(b, seed)
            b.commit_if_due()
            assert os.stat(path).st_size >= (int(b._env.info()["last_pgno"]) + 1) * b._psize
    Backend(path).close()


_FAILED_COPIES = """
import os, resource, signal, sys
from petcd.storage.backend import Backend
from petcd.storage.errors import BackendError
path = sys.argv[1]
b = Backend(path)
for i in range(3000):
    b.put("key", i.to_bytes(8, "big"), b"v" * 300)
b.commit()
print(b.hash())
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))  # the copies cannot be written
for name, op in [("defrag", b.defrag), ("snapshot", b.snapshot)]:
    try:
        op()
    except BackendError as exc:
        print(name.upper(), exc)
print(b.hash())  # the backend in use is intact and still serves
"""


def test_a_defrag_or_snapshot_that_cannot_write_its_copy_names_the_file_and_changes_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    r = _run_py(_FAILED_COPIES, path)
    assert r.returncode == 0, r.stderr
    before, defrag, snapshot, after = r.stdout.splitlines()
    assert defrag.startswith(f"DEFRAG backend: defragmenting {path} failed writing the copy {path}.defrag-"), defrag
    assert snapshot.startswith(f"SNAPSHOT backend: snapshot of {path} failed writing a copy in {tmp_path}"), snapshot
    assert "bytes free on its file system" in defrag and "bytes free on its file system" in snapshot
    assert before == after
    assert sorted(os.listdir(tmp_path)) == ["db", "db-lock"]  # no copy left behind
    with Backend(path) as b:
        assert str(b.hash()) == before


def test_defrag_in_a_thread_keeps_writes_made_while_it_copies(tmp_path: Path) -> None:
    """start_defrag, a copy in a worker thread, finish_defrag: writes made
    while the copy runs (committed or not, puts, deletes, range deletes)
    are all there after the swap, reads work throughout, and the result
    survives a reopen."""
    b = Backend(str(tmp_path / "db"), unsafe_no_fsync=True)
    try:
        for i in range(3000):
            b.put("key", k(i), os.urandom(500))
        b.put("lease", b"l", b"lease")
        b.commit()
        b.delete_range("key", k(0), k(2000))
        b.put("key", b"open-batch", b"not committed when the copy starts")
        copy = b.start_defrag()
        assert b.defragmenting
        worker = threading.Thread(target=copy.run)
        worker.start()
        # the owning thread keeps writing, committing and reading meanwhile
        b.put("key", k(2500), b"overwritten during the copy")
        b.delete("key", k(2501))
        b.commit()
        b.delete_range("key", k(2600), k(2700))
        b.put("members", b"m", b"during")
        assert b.get("key", k(2500)) == b"overwritten during the copy"
        assert len(list(b.items("key"))) == 1000 - 1 - 100 + 1
        worker.join()
        expected = {name: dict(b.items(name)) for name in ("key", "lease", "members")}
        h = b.hash()
        assert b.finish_defrag(copy)
        assert not b.defragmenting
        assert {name: dict(b.items(name)) for name in ("key", "lease", "members")} == expected
        assert b.hash() == h
        b.commit()
    finally:
        b.close()
    r = Backend(str(tmp_path / "db"))
    try:
        assert r.hash() == h
        assert r.get("key", b"open-batch") == b"not committed when the copy starts"
        assert r.get("key", k(2501)) is None
    finally:
        r.close()
    assert sorted(os.listdir(tmp_path)) == ["db", "db-lock"]  # no copy left behind


def test_abort_defrag_leaves_the_backend_as_it_was(tmp_path: Path) -> None:
    b = Backend(str(tmp_path / "db"), unsafe_no_fsync=True)
    try:
        b.put("key", b"a", b"1")
        b.commit()
        copy = b.start_defrag()
        b.put("key", b"b", b"2")
        b.abort_defrag(copy)
        assert not b.defragmenting
        b.commit()
        assert dict(b.items("key")) == {b"a": b"1", b"b": b"2"}
    finally:
        b.close()
    assert sorted(os.listdir(tmp_path)) == ["db", "db-lock"]
