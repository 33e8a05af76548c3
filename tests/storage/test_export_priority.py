"""The snapshot export child (what `Maintenance.Snapshot` streams) runs below
the member: CPU niceness 19 and the idle I/O class, so the member's puts and
WAL fsyncs come first while `etcdctl snapshot save` streams a large db
(issue 14: put p99 during a 1 GB save at most 3x idle)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from petcd.api.maintenance_service import _reap, spawn_export
from petcd.storage.backend import Backend
from petcd.storage.etcd_format import EXPORT_NICE


def _nice_of(pid: int) -> int:
    # field 19 of /proc/PID/stat (after the parenthesised command name)
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_export_child_runs_at_lowest_cpu_and_idle_io_priority(tmp_path: Path) -> None:
    backend = Backend(str(tmp_path / "db"), unsafe_no_fsync=True)
    try:
        value = b"v" * 1024
        for i in range(4000):  # ~4 MB of output: more than the pipe and the child's buffer hold
            backend.put("key", b"%016d_%d" % (i, 0), value)
        backend.commit()
        proc = spawn_export(backend.path)
        try:
            # nobody reads the pipe yet, so the child is still there, blocked on it
            deadline = time.monotonic() + 60
            while _nice_of(proc.pid) != EXPORT_NICE and time.monotonic() < deadline:
                time.sleep(0.05)
            assert EXPORT_NICE == 19
            assert _nice_of(proc.pid) == 19
            io = subprocess.run(["ionice", "-p", str(proc.pid)], capture_output=True, text=True, check=True)
            assert io.stdout.strip() == "idle"
            assert proc.poll() is None
        finally:
            proc.terminate()
            _reap(proc)
    finally:
        backend.close()
