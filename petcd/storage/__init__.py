"""petcd's storage layer: the backend (one LMDB file of etcd's buckets), the
write-ahead log, and raft snapshot files. Nothing here knows raft's algorithm
or the server; see each module's docstring for its guarantees."""

from petcd.storage.backend import BUCKETS, Backend, BackendSnapshot
from petcd.storage.errors import (
    BackendClosedError,
    BackendError,
    BackendFileError,
    SnapError,
    StorageError,
    UnknownBucketError,
    WalClosedError,
    WalCorruptError,
    WalError,
    WalExistsError,
    WalLockedError,
    WalNotFoundError,
    WalSnapshotMismatchError,
    WalWriteError,
)
from petcd.storage.snap import Snapshotter
from petcd.storage.wal import WAL, WalContents, WalSnapshot

__all__ = [
    "BUCKETS",
    "WAL",
    "Backend",
    "BackendClosedError",
    "BackendError",
    "BackendFileError",
    "BackendSnapshot",
    "SnapError",
    "Snapshotter",
    "StorageError",
    "UnknownBucketError",
    "WalClosedError",
    "WalContents",
    "WalCorruptError",
    "WalError",
    "WalExistsError",
    "WalLockedError",
    "WalNotFoundError",
    "WalSnapshot",
    "WalSnapshotMismatchError",
    "WalWriteError",
]
