"""Recognising an etcd (3.4/3.5) data directory, so petcd never writes to one.

What it is for: a user who points petcd at the data directory an etcd member
left behind must get a clear refusal before petcd opens, locks, renames or
creates anything there (petcd cannot run on etcd's WAL, and a half-opened
directory is worse than an untouched one). The check only reads: it opens
files read-only and looks at their first bytes.

An etcd data directory is recognised by either of its two stores:

- ``member/snap/db`` is a bbolt file (petcd's backend is an LMDB file);
- ``member/wal/*.wal`` segments that do not start with petcd's WAL frame
  magic (etcd's start with a little-endian record length).
"""

from __future__ import annotations

import os

from petcd.storage import bbolt
from petcd.storage.errors import StorageError
from petcd.storage.wal import MAGIC as PETCD_WAL_MAGIC


class EtcdDataDirError(StorageError):
    """The data directory belongs to etcd; nothing in it was changed."""


def _first_bytes(path: str, n: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOATIME", 0))
    except PermissionError:  # O_NOATIME needs ownership; plain read-only then
        fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, n, 0)
    finally:
        os.close(fd)


def etcd_evidence(db_path: str, wal_dir: str) -> list[str]:
    """What marks these paths as etcd's ([] when nothing does)."""
    found: list[str] = []
    try:
        if os.path.isfile(db_path) and bbolt.is_bbolt(_first_bytes(db_path, 64)):
            found.append(f"{db_path} is a bbolt (etcd) backend file")
    except OSError:
        pass
    try:
        names = sorted(n for n in os.listdir(wal_dir) if n.endswith(".wal"))
    except OSError:
        names = []
    for name in names:
        try:
            head = _first_bytes(os.path.join(wal_dir, name), len(PETCD_WAL_MAGIC))
        except OSError:
            continue
        if head and head != PETCD_WAL_MAGIC and head.strip(b"\0"):
            found.append(f"{wal_dir} holds etcd's WAL ({name})")
            break
    return found


def refuse_etcd_data_dir(data_dir: str, db_path: str, wal_dir: str) -> None:
    """Raise EtcdDataDirError, before anything is touched, when data_dir is
    an etcd member's data directory."""
    found = etcd_evidence(db_path, wal_dir)
    if found:
        raise EtcdDataDirError(
            f"data-dir {data_dir!r} belongs to etcd ({'; '.join(found)}); petcd cannot run on it and has "
            f"changed nothing in it. To move this member to petcd: stop etcd, then run "
            f"`petcd migrate --data-dir {data_dir}` (it keeps a backup copy first), or restore a snapshot "
            f"saved with `etcdctl snapshot save` using `petcd snapshot restore` into a new data dir."
        )
