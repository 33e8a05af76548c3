"""`petcd wal repair --data-dir DIR [--dry-run]`: the last-resort repair of a
member whose WAL is corrupt (the member refuses to start and names the
segment and byte offset of the damage).

Prefer, in this order:
1. a member of a cluster with a healthy quorum: replace it (`etcdctl member
   remove <id>`, move its data dir aside, `etcdctl member add`, start it with
   --initial-cluster-state existing): it gets everything from the leader;
2. a single member: `petcd snapshot restore` from the newest `etcdctl
   snapshot save` file (writes after the snapshot are lost);
3. this command. It cuts the WAL at the first damaged record and keeps
   everything before it; the damaged segment and every later one are moved
   (not deleted) into <wal dir>.broken-<UTC time> (to undo, move them
   back). It is lossy: the entries from the damage on are dropped, and so
   are any term and vote recorded there, so a repaired member could vote
   twice in one term: repair a member of a cluster only while its peers are
   up and past that term. It refuses, changing nothing, when the db already
   applied entries beyond the cut. (Details: "Repairing a corrupt WAL" in
   petcd/storage/wal.py.)

Exit status: 0 when the WAL is intact or was repaired (or, with --dry-run,
when the report was printed); 1 when it cannot be repaired (nothing is
changed then); 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from petcd.storage.backend import Backend
from petcd.storage.errors import StorageError
from petcd.storage.etcd_datadir import refuse_etcd_data_dir
from petcd.storage.snap import Snapshotter
from petcd.storage.wal import WAL, WalSnapshot, find_damage, repair, undo_repair


def _paths(data_dir: str) -> tuple[str, str, str]:
    member = os.path.join(data_dir, "member")
    snap_dir = os.path.join(member, "snap")
    return os.path.join(member, "wal"), snap_dir, os.path.join(snap_dir, "db")


def _wal_snapshot(snap_dir: str) -> WalSnapshot | None:
    if not os.path.isdir(snap_dir):
        return None
    snap = Snapshotter(snap_dir).load()
    if snap is None:
        return None
    md = snap.metadata
    return WalSnapshot(index=md.index, term=md.term, conf_state=md.conf_state)


def _backend_index(db_path: str) -> int:
    if not os.path.exists(db_path):
        return 0
    with Backend(db_path) as b:
        return b.consistent_index()[0]


def main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(prog="petcd wal", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    rp = sub.add_parser("repair", help="cut a corrupt WAL at its first damaged record (lossy; see --help)",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    rp.add_argument("--data-dir", required=True, help="the member's data directory (as given to petcd)")
    rp.add_argument("--dry-run", action="store_true", help="only report the damage; change nothing")
    args = ap.parse_args(list(argv))
    wal_dir, snap_dir, db_path = _paths(args.data_dir)
    try:
        refuse_etcd_data_dir(args.data_dir, db_path, wal_dir)  # etcd's WAL is not petcd's to cut
        if not WAL.exists(wal_dir):
            print(f"petcd wal repair: no WAL in {wal_dir}", file=sys.stderr)
            return 1
        snap = _wal_snapshot(snap_dir)
        if args.dry_run:
            damage = find_damage(wal_dir, snap)
            if damage is None:
                print(f"{wal_dir}: intact, nothing to repair")
            else:
                print(f"{wal_dir}: corrupt: {damage}")
                print(f"repair would cut {damage.path} at byte {damage.offset or 0} and move it and every later "
                      f"segment into {wal_dir}.broken-<UTC time>")
            return 0
        result = repair(wal_dir, snap)
        if result is None:
            print(f"{wal_dir}: intact, nothing to repair")
            return 0
        applied = _backend_index(db_path)
        if applied > result.last_index:
            undo_repair(result)
            print(
                f"petcd wal repair: refused, nothing changed: the backend {db_path} has applied entries up to "
                f"{applied}, beyond the last entry ({result.last_index}) before the damage, so the member could "
                f"not catch up with its own database. Restore it from a snapshot or replace it. ({result.problem})",
                file=sys.stderr,
            )
            return 1
    except StorageError as exc:
        print(f"petcd wal repair: {exc}", file=sys.stderr)
        return 1
    print(f"cut {result.damaged} at byte {result.offset}: {result.problem}")
    print(f"moved the original segments into {result.backup_dir}: "
          + ", ".join(os.path.basename(p) for p in result.moved))
    hs = result.hard_state
    print(f"the WAL now ends at entry {result.last_index} (term {hs.term}, vote {hs.vote:x}, commit {hs.commit})")
    return 0
