"""Errors raised by petcd's storage layer (backend, WAL, raft snapshot files).

Every error derives from :class:`StorageError`, so a caller that only wants to
know "the disk state is unusable" can catch one type.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every storage-layer error."""


# --- backend ---------------------------------------------------------------


class BackendError(StorageError):
    """The backend (the LMDB key-value file) failed."""


class BackendClosedError(BackendError):
    """The backend was used after close()."""


class UnknownBucketError(BackendError, KeyError):
    """A bucket name that the backend does not hold."""


class BackendFileError(BackendError):
    """The backend's file is unusable: a commit or write to it failed (disk
    full, I/O error, read-only file system), or it is shorter than the pages
    its last committed transaction uses (truncated). ``path`` names the file.

    After a failed commit the backend refuses every further operation: the
    state of the file and of the page cache is unknown, and retrying an fsync
    that failed can report success for data that never reached the disk. The
    server stops (as etcd does); the WAL replays what the backend lost.
    """

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


# --- WAL -------------------------------------------------------------------


class WalError(StorageError):
    """The write-ahead log failed."""


class WalExistsError(WalError):
    """WAL.create() found a WAL already in the directory."""


class WalNotFoundError(WalError):
    """WAL.open() found no WAL segment in the directory."""


class WalWriteError(WalError):
    """Writing or fsyncing a WAL file failed (disk full, I/O error, read-only
    file system). ``path`` names the file. The WAL refuses every later write."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class WalLockedError(WalError):
    """Another WAL object (this process or another) holds the directory's lock."""


class WalCorruptError(WalError):
    """Bytes that were durably written are damaged: a bad record before the
    tail, a missing segment, a broken CRC chain. The WAL refuses to open and
    never rewrites the file; an operator must look at it.

    ``path`` and ``offset`` name the file and the byte offset of the first bad
    record when one is known.
    """

    def __init__(self, message: str, path: str | None = None, offset: int | None = None) -> None:
        if path is not None:
            where = f"{path}" if offset is None else f"{path} at byte offset {offset}"
            message = f"{message} ({where})"
        message += "; refusing to use the WAL: see `petcd wal repair --help` for the ways to recover"
        super().__init__(message)
        self.path = path
        self.offset = offset


class WalSnapshotMismatchError(WalError):
    """The snapshot given to WAL.open() has a marker in the WAL with the same
    index but another term (etcd's ErrSnapshotMismatch)."""


class WalClosedError(WalError):
    """The WAL was used after close()."""


# --- raft snapshot files ----------------------------------------------------


class SnapError(StorageError):
    """Saving or loading a raft snapshot file failed."""
