"""`petcd snapshot restore` and `petcd snapshot status` (etcdutl's commands).

A snapshot file is a db file followed by the 32-byte SHA-256 of its bytes,
as `etcdctl snapshot save` writes it. The db is either etcd's format (a
bbolt file: what etcd saves, and what petcd's Maintenance.Snapshot streams)
or petcd's own (the LMDB backend file, as found in a petcd data dir at
member/snap/db). The trailer is recognised as etcd recognises it: the file
size is 32 more than a multiple of 512 (db files are whole pages). A db file
copied out of a data directory has no trailer and needs --skip-hash-check to
be restored. A file that is neither format, is shorter than its own meta
page says (truncated), fails bbolt's consistency check or its trailer's
sha256 is refused with a message that names which.

`status` prints what etcd prints for the same data: crc32c over every
bucket's name and pairs (a petcd file is hashed as the bbolt file petcd
would export from it), the newest revision, the number of pairs, the size.

Restore builds a new member's data directory from it: the db (a bbolt file
converted into petcd's backend) with the cluster's membership replaced by
the one given on the command line, the consistent index set to the raft
index the new log starts from, and a WAL and raft snapshot that put every
restored member at that index, term 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from petcd.mvcc.kvstore import crc32c
from petcd.raft.types import ConfState, HardState, Snapshot, SnapshotMetadata
from petcd.server import ids
from petcd.server.config import ConfigError, ServerConfig
from petcd.server.membership import MEMBERS_BUCKET, Member
from petcd.storage import bbolt
from petcd.storage.backend import Backend
from petcd.storage.etcd_format import etcd_buckets, import_bbolt

log = logging.getLogger("petcd.snapshot")

HASH_SIZE = 32  # sha256
_COPY_CHUNK = 1 << 20

MEMBERS_REMOVED_BUCKET = "members_removed"


class SnapshotError(Exception):
    """A snapshot that cannot be restored or read, or a data dir in the way."""


@dataclass(slots=True)
class SnapshotStatus:
    """What `snapshot status` reports (etcd's snapshot.Status)."""

    hash: int
    revision: int
    total_key: int
    total_size: int

    def to_json(self) -> str:
        return json.dumps(
            {"hash": self.hash, "revision": self.revision, "totalKey": self.total_key, "totalSize": self.total_size},
            separators=(",", ":"),
        )


@dataclass(slots=True)
class RestoreResult:
    """The identity of the restored member and the raft index its log starts at."""

    data_dir: str
    member_id: int
    cluster_id: int
    index: int


# ---- reading the file -------------------------------------------------------------

BBOLT = "bbolt"
LMDB = "lmdb"
_LMDB_MAGIC = 0xBEEFC0DE
# LMDB's meta page (64-bit build): after the 16-byte page header, the magic
# (u32); the page size sits in the free-page db's md_pad (offset 40), the last
# page number and the txn id at offsets 136 and 144.
_LMDB_PSIZE_AT = 40
_LMDB_LAST_PG_AT = 136


def _head(path: str, n: int = 2 * 65536 + 256) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError as exc:
        raise SnapshotError(f"cannot open snapshot file {path!r}: {exc.strerror or exc}") from None


def _lmdb_length(head: bytes) -> int | None:
    """The bytes an LMDB file's newest meta page says it holds, or None
    when the head is not LMDB's."""
    if len(head) < 160 or struct.unpack_from("<I", head, 16)[0] != _LMDB_MAGIC:
        return None
    psize = struct.unpack_from("<I", head, _LMDB_PSIZE_AT)[0]
    if not 512 <= psize <= 65536 or psize & (psize - 1):
        return None
    best = (-1, 0)
    for off in (0, psize):
        if off + 160 <= len(head) and struct.unpack_from("<I", head, off + 16)[0] == _LMDB_MAGIC:
            last_pg, txnid = struct.unpack_from("<QQ", head, off + _LMDB_LAST_PG_AT)
            best = max(best, (txnid, (last_pg + 1) * psize))
    return best[1] if best[0] >= 0 else None


def _kind(path: str, head: bytes) -> str:
    if bbolt.is_bbolt(head):
        return BBOLT
    if _lmdb_length(head) is not None:
        return LMDB
    raise SnapshotError(
        f"snapshot file {path!r} is not a snapshot: neither an etcd (bbolt) nor a petcd (LMDB) db file")


def _open_snapshot(path: str, skip_hash_check: bool, *, require_hash: bool = True) -> tuple[str, int]:
    """The file's format and the length of its db part, after checking that
    the db is whole and (when there is a trailer and skip_hash_check is
    false) that the trailer's sha256 matches. Each refusal says which check
    failed: not a db file, truncated, or a checksum."""
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise SnapshotError(f"cannot open snapshot file {path!r}: {exc.strerror or exc}") from None
    head = _head(path)
    kind = _kind(path, head)
    has_hash = size % 512 == HASH_SIZE
    db_len = size - HASH_SIZE if has_hash else size
    if kind == BBOLT:
        try:
            bbolt.BoltReader(path, db_len).close()
        except bbolt.BoltFormatError as exc:
            raise SnapshotError(f"snapshot file integrity check failed: {exc}") from None
    else:
        need = _lmdb_length(head) or 0
        if need > db_len:
            raise SnapshotError(
                f"snapshot file integrity check failed: {path}: truncated: the db's meta page counts "
                f"{need} bytes, the file holds {db_len}")
    if not has_hash:
        if require_hash and not skip_hash_check:
            raise SnapshotError("snapshot missing hash but --skip-hash-check=false")
        return kind, size
    if skip_hash_check:
        return kind, db_len
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        remaining = db_len
        while remaining > 0:
            chunk = f.read(min(_COPY_CHUNK, remaining))
            if not chunk:
                raise SnapshotError(f"snapshot file {path!r} shrank while being read")
            digest.update(chunk)
            remaining -= len(chunk)
        expected = f.read(HASH_SIZE)
    got = digest.digest()
    if expected != got:
        raise SnapshotError(
            f"snapshot file integrity check failed: expected sha256 {expected.hex()}, got {got.hex()}"
        )
    return kind, db_len


def _copy_prefix(src: str, dst: str, length: int) -> None:
    """Copy the first ``length`` bytes of src into a new file dst, durably."""
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        _copy_stream(fin, fout, length)
        fout.flush()
        os.fsync(fout.fileno())


def _copy_stream(fin: BinaryIO, fout: BinaryIO, length: int) -> None:
    remaining = length
    while remaining > 0:
        chunk = fin.read(min(_COPY_CHUNK, remaining))
        if not chunk:
            raise SnapshotError("snapshot file shrank while being read")
        fout.write(chunk)
        remaining -= len(chunk)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- status -----------------------------------------------------------------------


def _etcd_status(buckets: Iterable[tuple[bytes, Iterable[tuple[bytes, bytes]]]], size: int) -> SnapshotStatus:
    """etcd's snapshot status over buckets in bbolt order: crc32c of every
    bucket's name and pairs, the newest revision of the key bucket, the
    number of pairs."""
    h = 0
    total = 0
    revision = 0
    for name, items in buckets:
        h = crc32c(name, h)
        last = b""
        for k, v in items:
            h = crc32c(v, crc32c(k, h))
            total += 1
            last = k
        if name == b"key" and len(last) >= 8:
            revision = int.from_bytes(last[:8], "big")
    return SnapshotStatus(hash=h, revision=revision, total_key=total, total_size=size)


def status(path: str) -> SnapshotStatus:
    """Describe a snapshot file without changing it, as etcd does: the hash
    of all buckets, the newest revision in the key bucket, the number of
    entries in all buckets ("total keys") and the db's size. A petcd (LMDB)
    file is described as the bbolt file petcd would export from it, so both
    give the same numbers for the same data (the size excepted)."""
    kind, db_len = _open_snapshot(path, skip_hash_check=False, require_hash=False)
    if kind == BBOLT:
        with bbolt.BoltReader(path, db_len) as reader:
            errors = reader.check()
            if errors:
                raise SnapshotError(
                    f"snapshot file integrity check failed. {len(errors)} errors found.\n" + "\n".join(errors))
            root = reader.root()
            buckets = ((name, b.items()) for name, b in root.buckets())
            return _etcd_status(buckets, reader.size)
    with tempfile.TemporaryDirectory(prefix="petcd-snapshot-status-") as tmp:
        db_path = os.path.join(tmp, "db")
        _copy_prefix(path, db_path, db_len)  # the Backend may write on open; the original stays untouched
        try:
            backend = Backend(db_path, unsafe_no_fsync=True)
        except Exception as exc:
            raise SnapshotError(f"snapshot file integrity check failed: cannot open it as a db: {exc}") from None
        try:
            return _etcd_status(etcd_buckets(backend.items), db_len)
        finally:
            backend.close()


def humanize_bytes(n: int) -> str:
    """go-humanize's Bytes (SI units), which etcdctl uses for TOTAL SIZE."""
    if n < 10:
        return f"{n} B"
    sizes = ["B", "kB", "MB", "GB", "TB", "PB", "EB"]
    e = math.floor(math.log(n) / math.log(1000))
    val = math.floor(n / 1000**e * 10 + 0.5) / 10
    return f"{val:.1f} {sizes[e]}" if val < 10 else f"{val:.0f} {sizes[e]}"


def format_status(st: SnapshotStatus, write_out: str) -> str:
    """etcdctl's snapshot status output in the simple, json, table or fields format."""
    row = [f"{st.hash:x}", str(st.revision), str(st.total_key), humanize_bytes(st.total_size)]
    if write_out == "json":
        return st.to_json()
    if write_out == "fields":
        return (f'"Hash" : {st.hash}\n"Revision" : {st.revision}\n'
                f'"Keys" : {st.total_key}\n"Size" : {st.total_size}')
    if write_out == "table":
        return _table(["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"], row)
    return ", ".join(row)


def _table(header: list[str], row: list[str]) -> str:
    widths = [max(len(h), len(c)) for h, c in zip(header, row, strict=True)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def center(text: str, w: int) -> str:
        gap = w - len(text)
        return " " * (gap // 2) + text + " " * (gap - gap // 2)

    def cell(text: str, w: int) -> str:
        # numbers right-aligned, text left-aligned, as etcdctl's table writer does
        return text.rjust(w) if text.replace(".", "", 1).isdigit() else text.ljust(w)

    head = "| " + " | ".join(center(h, w) for h, w in zip(header, widths, strict=True)) + " |"
    body = "| " + " | ".join(cell(c, w) for c, w in zip(row, widths, strict=True)) + " |"
    return "\n".join([rule, head, rule, body, rule])


# ---- restore ----------------------------------------------------------------------


def restore(
    path: str,
    data_dir: str = "",
    *,
    name: str = "default",
    initial_cluster: str = "",
    initial_cluster_token: str = "etcd-cluster",
    initial_advertise_peer_urls: list[str] | None = None,
    skip_hash_check: bool = False,
) -> RestoreResult:
    """Create a member's data directory from a snapshot file.

    Refuses a snapshot whose SHA-256 trailer does not match, and a data dir
    that already exists with something in it. On failure nothing is left
    behind that was not there before.
    """
    cfg = ServerConfig(
        name=name,
        data_dir=data_dir,
        initial_cluster=initial_cluster,
        initial_cluster_token=initial_cluster_token,
        initial_advertise_peer_urls=list(initial_advertise_peer_urls or ["http://localhost:2380"]),
    )
    try:
        cfg.validate(bootstrapping=True)
    except ConfigError as exc:
        raise SnapshotError(str(exc)) from None
    data_dir = cfg.data_dir
    if os.path.exists(data_dir) and (not os.path.isdir(data_dir) or os.listdir(data_dir)):
        raise SnapshotError(f'data-dir "{data_dir}" exists')
    kind, db_len = _open_snapshot(path, skip_hash_check)

    cluster = cfg.initial_cluster_map()
    members = {ids.member_id(urls, cfg.initial_cluster_token): (n, urls) for n, urls in cluster.items()}
    local_id = ids.member_id(cluster[cfg.name], cfg.initial_cluster_token)
    cid = ids.cluster_id(list(members))
    index = len(members)  # etcd: one ConfChange entry per member, all committed, at term 1

    created = not os.path.exists(data_dir)
    log.info("restoring snapshot", extra={"fields": {
        "path": path, "data-dir": data_dir, "wal-dir": cfg.wal_dir(), "snap-dir": cfg.snap_dir()}})
    try:
        os.makedirs(cfg.snap_dir(), exist_ok=True)
        if kind == BBOLT:
            _import_bbolt(path, db_len, cfg.backend_path())
        else:
            _copy_prefix(path, cfg.backend_path(), db_len)
        _fsync_dir(cfg.snap_dir())
        _rewrite_membership(cfg.backend_path(), members, index)
        _write_raft_state(cfg, local_id, cid, sorted(members), index)
    except BaseException:
        # leave the data dir as it was: absent, or empty
        if created:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            shutil.rmtree(cfg.member_dir(), ignore_errors=True)
        raise
    log.info("restored snapshot", extra={"fields": {
        "path": path, "data-dir": data_dir, "member-id": f"{local_id:x}", "cluster-id": f"{cid:x}"}})
    return RestoreResult(data_dir=data_dir, member_id=local_id, cluster_id=cid, index=index)


def _import_bbolt(path: str, db_len: int, db_path: str) -> None:
    """A petcd backend at db_path holding the bbolt file's buckets."""
    with bbolt.BoltReader(path, db_len) as reader:
        errors = reader.check()
        if errors:
            raise SnapshotError(
                f"snapshot file integrity check failed. {len(errors)} errors found.\n" + "\n".join(errors))
        backend = Backend(db_path)
        try:
            import_bbolt(reader, backend)
        except bbolt.BoltFormatError as exc:
            raise SnapshotError(f"snapshot file integrity check failed: {exc}") from None
        finally:
            backend.close()


def _rewrite_membership(db_path: str, members: dict[int, tuple[str, list[str]]], index: int) -> None:
    try:
        backend = Backend(db_path)
    except Exception as exc:
        raise SnapshotError(f"snapshot file integrity check failed: cannot open it as a db: {exc}") from None
    try:
        for bucket in (MEMBERS_BUCKET, MEMBERS_REMOVED_BUCKET):
            for k in [k for k, _ in backend.items(bucket)]:
                backend.delete(bucket, k)
        for mid, (name, urls) in members.items():
            backend.put(MEMBERS_BUCKET, f"{mid:x}".encode(), Member(mid, name, list(urls)).to_json())
        backend.set_consistent_index(index, 1)
        backend.commit()
    finally:
        backend.close()


def _write_raft_state(cfg: ServerConfig, local_id: int, cid: int, voters: list[int], index: int) -> None:
    # imported here: only restore needs the WAL code, not status or the CLI
    from petcd.server.raft_storage import RaftStorage, WalIdentity

    storage = RaftStorage.create(cfg.wal_dir(), cfg.snap_dir(), WalIdentity(local_id, cid))
    try:
        snap = Snapshot(data=b"", metadata=SnapshotMetadata(ConfState(voters=voters), index=index, term=1))
        storage.persist(HardState(term=1, vote=0, commit=index), [], snap)
    finally:
        storage.close()


# ---- command line -------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="petcd snapshot", allow_abbrev=False,
                                description="Restore a data directory from a snapshot, or describe one.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("restore", allow_abbrev=False, help="restore a member's data directory from a snapshot")
    r.add_argument("file")
    r.add_argument("--data-dir", default="", help="path to the data directory (default <name>.petcd)")
    r.add_argument("--wal-dir", default="", help="only the default, <data-dir>/member/wal, is supported yet")
    r.add_argument("--name", default="default", help="human-readable name for this member")
    r.add_argument("--initial-cluster", default="", help="initial cluster configuration for restore bootstrap")
    r.add_argument("--initial-cluster-token", default="etcd-cluster",
                   help="initial cluster token for the cluster during restore bootstrap")
    r.add_argument("--initial-advertise-peer-urls", default="http://localhost:2380",
                   help="list of this member's peer URLs to advertise to the rest of the cluster")
    r.add_argument("--skip-hash-check", action="store_true",
                   help="ignore snapshot integrity hash value (required if copied from data directory)")
    s = sub.add_parser("status", allow_abbrev=False, help="print the snapshot's hash, revision, keys and size")
    s.add_argument("file")
    s.add_argument("-w", "--write-out", default="simple", choices=["simple", "json", "table", "fields"])
    return p


def main(args: list[str]) -> int:
    """`petcd snapshot ...`; returns the exit status (2 for usage errors)."""
    # a boolean flag also takes =true/=false, as etcdutl's (cobra's) do
    args = [a for a in args if a not in ("--skip-hash-check=false", "--skip-hash-check=0")]
    args = ["--skip-hash-check" if a in ("--skip-hash-check=true", "--skip-hash-check=1") else a for a in args]
    try:
        ns = _parser().parse_args(args)
    except SystemExit as exc:  # argparse has printed the usage error or help
        return int(exc.code or 0)
    if not logging.getLogger().handlers:
        from petcd.cli.logging_setup import setup_logging

        setup_logging("info", ["stderr"])
    try:
        if ns.command == "status":
            print(format_status(status(ns.file), ns.write_out))
            return 0
        if ns.wal_dir:
            default_wal = ServerConfig(name=ns.name, data_dir=ns.data_dir).wal_dir()
            if os.path.abspath(ns.wal_dir) != os.path.abspath(default_wal):
                print("petcd: flag --wal-dir is not supported yet (only its default, <data-dir>/member/wal)",
                      file=sys.stderr)
                return 2
        urls = [u.strip() for u in ns.initial_advertise_peer_urls.split(",") if u.strip()]
        restore(ns.file, ns.data_dir, name=ns.name, initial_cluster=ns.initial_cluster,
                initial_cluster_token=ns.initial_cluster_token, initial_advertise_peer_urls=urls,
                skip_hash_check=ns.skip_hash_check)
        return 0
    except (SnapshotError, OSError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
