"""`petcd migrate --data-dir D`: convert a stopped etcd member's data
directory into petcd's, in place, after a backup copy.

What it keeps: the member's and the cluster's ids (from etcd's WAL
metadata), the membership (from the db's members bucket), the raft term and
vote, every key with its history, leases, alarms, auth buckets and the
compaction revisions (the db, converted from bbolt to petcd's LMDB file),
the applied index, and the raft entries etcd's WAL holds beyond it. So a
member (or, one by one while all are stopped, a whole cluster) switches
binaries on its own data.

Guarantees:

- Nothing is changed until everything has been read and checked: a data
  dir that is not etcd's, a db that fails bbolt's consistency check, a WAL
  that cannot be decoded, or a db that etcd still holds open (etcd locks it)
  is refused untouched.
- The backup (``D.etcd-backup`` unless --backup-dir says otherwise) is a
  complete, fsync'd copy of D made before the first change; the new
  ``member`` directory is built beside the old one and swapped in by rename.

etcd's WAL format, as read here: segments ``%016x-%016x.wal`` in name
order; each record is an 8-byte little-endian length word (the low 56 bits
the length; when the top bit is set, bits 56-58 count padding bytes after
the record) followed by a walpb.Record (type 1, crc 2, data 3). Record types:
1 metadata (etcdserverpb.Metadata: NodeID 1, ClusterID 2), 2 raftpb.Entry,
3 raftpb.HardState, 4 crc, 5 walpb.Snapshot (index 1, term 2). The crc of
each record is crc32c chained over the data of the records before it.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import sys
from dataclasses import dataclass, field

from petcd.mvcc.kvstore import crc32c
from petcd.proto import raft_pb2
from petcd.raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata
from petcd.storage import bbolt
from petcd.storage.backend import Backend
from petcd.storage.etcd_datadir import etcd_evidence
from petcd.storage.etcd_format import TERM_KEY, import_bbolt

_METADATA, _ENTRY, _STATE, _CRC, _SNAPSHOT = 1, 2, 3, 4, 5


class MigrateError(Exception):
    """The data dir cannot be migrated; nothing in it was changed."""


# ---- etcd's WAL ---------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise MigrateError("etcd WAL: malformed varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> dict[int, int | bytes]:
    """A protobuf message's scalar and bytes fields (the last of each number)."""
    out: dict[int, int | bytes] = {}
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            out[num], pos = _varint(buf, pos)
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise MigrateError("etcd WAL: truncated field")
            out[num] = buf[pos : pos + n]
            pos += n
        elif wire == 1:
            out[num] = int.from_bytes(buf[pos : pos + 8], "little")
            pos += 8
        elif wire == 5:
            out[num] = int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        else:
            raise MigrateError(f"etcd WAL: unsupported wire type {wire}")
    return out


def _int(f: dict[int, int | bytes], n: int) -> int:
    v = f.get(n, 0)
    return v if isinstance(v, int) else 0


def _bytes(f: dict[int, int | bytes], n: int) -> bytes:
    v = f.get(n, b"")
    return v if isinstance(v, bytes) else b""


@dataclass
class EtcdWal:
    """What an etcd member's WAL says: who it is, its raft state, its log."""

    member_id: int = 0
    cluster_id: int = 0
    hard_state: HardState = field(default_factory=HardState)
    entries: dict[int, Entry] = field(default_factory=dict)
    snapshots: dict[int, int] = field(default_factory=dict)  # index -> term


def read_etcd_wal(wal_dir: str) -> EtcdWal:
    """Decode every segment (read-only), checking the crc chain; a zero
    length word ends a segment (its preallocated tail)."""
    names = sorted(n for n in os.listdir(wal_dir) if n.endswith(".wal"))
    if not names:
        raise MigrateError(f"{wal_dir}: no WAL segments")
    out = EtcdWal()
    crc = 0
    last_index = 0
    for name in names:
        path = os.path.join(wal_dir, name)
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos + 8 <= len(data):
            word = int.from_bytes(data[pos : pos + 8], "little")
            if word == 0:
                break
            length = word & ((1 << 56) - 1)
            pad = (word >> 56) & 0x7 if word >> 63 else 0
            start = pos + 8
            if start + length > len(data):
                raise MigrateError(f"etcd WAL {path}: record at {pos} runs past the end (torn write?)")
            rec = _fields(data[start : start + length])
            pos = start + length + pad
            rtype, rcrc, rdata = _int(rec, 1), _int(rec, 2), _bytes(rec, 3)
            if rtype == _CRC:
                if crc and rcrc != crc:
                    raise MigrateError(f"etcd WAL {path}: crc chain broken")
                crc = rcrc
                continue
            crc = crc32c(rdata, crc)
            if rcrc != crc:
                raise MigrateError(f"etcd WAL {path}: record at {pos} fails its crc check")
            if rtype == _METADATA:
                md = _fields(rdata)
                out.member_id, out.cluster_id = _int(md, 1), _int(md, 2)
            elif rtype == _ENTRY:
                e = raft_pb2.Entry.FromString(rdata)
                if e.Index <= last_index:  # a newer leader overwrote the tail
                    for i in [i for i in out.entries if i >= e.Index]:
                        del out.entries[i]
                out.entries[e.Index] = Entry(term=e.Term, index=e.Index, type=EntryType(int(e.Type)), data=e.Data)
                last_index = e.Index
            elif rtype == _STATE:
                hs = raft_pb2.HardState.FromString(rdata)
                if hs.term or hs.vote or hs.commit:
                    out.hard_state = HardState(term=hs.term, vote=hs.vote, commit=hs.commit)
            elif rtype == _SNAPSHOT:
                sn = _fields(rdata)
                out.snapshots[_int(sn, 1)] = _int(sn, 2)
    if not out.member_id:
        raise MigrateError(f"{wal_dir}: the WAL has no metadata record (member and cluster ids)")
    return out


# ---- the migration ---------------------------------------------------------------------


@dataclass(slots=True)
class MigrateResult:
    data_dir: str
    backup_dir: str
    member_id: int
    cluster_id: int
    index: int
    term: int
    keys: int


def _refuse_if_locked(path: str) -> None:
    """etcd holds an exclusive flock on its db while it runs."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MigrateError(f"{path} is locked: etcd is still running on this data dir; stop it first") from None
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _fsync_tree(root: str) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(dirpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def migrate(data_dir: str, backup_dir: str = "") -> MigrateResult:
    """Convert etcd's data dir in place (see the module docstring)."""
    data_dir = os.path.abspath(data_dir)
    member = os.path.join(data_dir, "member")
    db_path = os.path.join(member, "snap", "db")
    wal_dir = os.path.join(member, "wal")
    evidence = etcd_evidence(db_path, wal_dir)
    if not evidence or not os.path.isfile(db_path):
        raise MigrateError(f"data-dir {data_dir!r} is not an etcd 3.4/3.5 data dir (member/snap/db + member/wal)")
    backup_dir = os.path.abspath(backup_dir or data_dir.rstrip("/") + ".etcd-backup")
    if os.path.exists(backup_dir):
        raise MigrateError(f"backup dir {backup_dir!r} already exists; move it away or pass --backup-dir")
    _refuse_if_locked(db_path)

    # Read and check everything before the first change.
    wal = read_etcd_wal(wal_dir)
    try:
        reader = bbolt.BoltReader(db_path)
    except bbolt.BoltFormatError as exc:
        raise MigrateError(f"{db_path}: {exc}") from None
    with reader:
        errors = reader.check()
        if errors:
            raise MigrateError(f"{db_path} fails bbolt's consistency check: {'; '.join(errors[:5])}")
        meta = reader.bucket(b"meta")
        ci_raw = meta.get(b"consistent_index") if meta else None
        if ci_raw is None or len(ci_raw) < 8:
            raise MigrateError(f"{db_path}: no consistent index in the meta bucket")
        index = int.from_bytes(ci_raw[:8], "big")
        term_raw = meta.get(TERM_KEY) if meta else None
        members_bucket = reader.bucket(b"members")
        members = [json.loads(v) for _, v in members_bucket.items()] if members_bucket else []
    if index in wal.entries:
        term = wal.entries[index].term
    elif index in wal.snapshots:
        term = wal.snapshots[index]
    elif term_raw is not None and len(term_raw) >= 8:
        term = int.from_bytes(term_raw[:8], "big")
    else:
        raise MigrateError(f"the term of the applied index {index} is in neither the WAL nor the db")
    voters = sorted(int(m["id"]) for m in members if not m.get("isLearner"))
    learners = sorted(int(m["id"]) for m in members if m.get("isLearner"))
    if wal.member_id not in voters + learners:
        raise MigrateError(f"member {wal.member_id:x} is not in the db's members bucket")

    # The backup, complete and durable, before the first change.
    shutil.copytree(data_dir, backup_dir, symlinks=True)
    _fsync_tree(backup_dir)

    from petcd.server.raft_storage import RaftStorage, WalIdentity

    staging = os.path.join(data_dir, "member.petcd-migrating")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(os.path.join(staging, "snap"))
    with bbolt.BoltReader(db_path) as reader:
        backend = Backend(os.path.join(staging, "snap", "db"))
        try:
            keys = import_bbolt(reader, backend)
            backend.set_consistent_index(index, term)
            backend.commit()
        finally:
            backend.close()
    storage = RaftStorage.create(os.path.join(staging, "wal"), os.path.join(staging, "snap"),
                                 WalIdentity(wal.member_id, wal.cluster_id))
    try:
        hs = wal.hard_state
        snap = Snapshot(data=b"", metadata=SnapshotMetadata(ConfState(voters=voters, learners=learners),
                                                            index=index, term=term))
        later = [wal.entries[i] for i in sorted(wal.entries) if i > index]
        storage.persist(HardState(term=max(hs.term, term), vote=hs.vote, commit=max(hs.commit, index)), later, snap)
    finally:
        storage.close()
    _fsync_tree(staging)
    old = os.path.join(data_dir, "member.etcd-migrated")
    os.rename(member, old)
    os.rename(staging, member)
    fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    shutil.rmtree(old)
    return MigrateResult(data_dir, backup_dir, wal.member_id, wal.cluster_id, index, term, keys)


def main(args: list[str]) -> int:
    """`petcd migrate ...`; returns the exit status."""
    p = argparse.ArgumentParser(prog="petcd migrate", allow_abbrev=False,
                                description="Convert a stopped etcd member's data dir to petcd's, in place, "
                                            "after a backup copy.")
    p.add_argument("--data-dir", required=True, help="the etcd member's data directory")
    p.add_argument("--backup-dir", default="", help="where the backup copy goes (default <data-dir>.etcd-backup)")
    try:
        ns = p.parse_args(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        r = migrate(ns.data_dir, ns.backup_dir)
    except (MigrateError, OSError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print(f"migrated {r.data_dir}: member {r.member_id:x} of cluster {r.cluster_id:x}, applied index {r.index} "
          f"(term {r.term}), {r.keys} db entries; etcd's original is in {r.backup_dir}")
    return 0
