"""Data directory permissions as etcd 3.4 has them: every directory a member
creates is 0700, and an existing data dir with wider permissions is served
anyway with etcd's "check file permission" warning in the log (3.4 warns, it
does not refuse: checked against the installed etcd)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from petcd.storage.fsutil import DirPermissionError, check_dir_permission, make_private_dirs
from petcd.testing.harness import etcd_server, petcd_server, require_binary

WARNING = (
    'check file permission: directory "{}" exist, but the permission is "drwxr-xr-x". '
    'The recommended permission is "-rwx------" to prevent possible unprivileged access to the data.'
)


def _modes(root: Path) -> dict[str, int]:
    """Permission bits of root and every directory under it."""
    out = {".": stat.S_IMODE(os.stat(root).st_mode)}
    for dirpath, dirnames, _ in os.walk(root):
        for d in dirnames:
            p = Path(dirpath) / d
            out[str(p.relative_to(root))] = stat.S_IMODE(os.stat(p).st_mode)
    return out


def test_make_private_dirs_creates_parents_0700(tmp_path: Path) -> None:
    make_private_dirs(str(tmp_path / "a" / "b" / "c"))
    assert _modes(tmp_path / "a") == {".": 0o700, "b": 0o700, "b/c": 0o700}


def test_check_dir_permission_wording(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir(mode=0o700)
    check_dir_permission(str(d))  # 0700: fine
    os.chmod(d, 0o755)
    try:
        check_dir_permission(str(d))
    except DirPermissionError as e:
        assert "check file permission: " + str(e) == WARNING.format(d)
    else:
        raise AssertionError("0755 passed the check")


def test_new_member_dirs_are_private(tmp_path: Path) -> None:
    s = petcd_server(tmp_path).start()
    try:
        modes = _modes(s.data_dir)
    finally:
        s.stop()
    assert {"member", "member/wal", "member/snap"} <= set(modes), modes
    assert all(m == 0o700 for m in modes.values()), {k: oct(v) for k, v in modes.items()}


def test_wide_data_dir_warned_and_served_like_etcd(tmp_path: Path) -> None:
    require_binary("etcd")
    for kind in ("etcd", "petcd"):
        data = tmp_path / f"{kind}.data"
        data.mkdir(mode=0o755)
        os.chmod(data, 0o755)
        s = (petcd_server(tmp_path, data_dir=data) if kind == "petcd"
             else etcd_server(tmp_path, extra=["--data-dir", str(data)]))
        s.data_dir = data
        s.start()  # serving: 3.4 does not refuse
        try:
            log = s.log_path.read_text(errors="replace")
        finally:
            s.stop()
        # petcd logs JSON lines (as etcd 3.5 does), etcd 3.4 plain text
        msgs = [json.loads(line)["msg"] if line.startswith("{") else line for line in log.splitlines()]
        assert any(WARNING.format(data) in m for m in msgs), (kind, log[-2000:])
        # the existing directory is left as it was; what the member made is private
        assert stat.S_IMODE(os.stat(data).st_mode) == 0o755
        assert stat.S_IMODE(os.stat(data / "member").st_mode) == 0o700
