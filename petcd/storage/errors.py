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


# --- WAL -------------------------------------------------------------------


class WalError(StorageError):
    """The write-ahead log failed."""


class WalExistsError(WalError):
    """WAL.create() found a WAL already in the directory."""


class WalNotFoundError(WalError):
    """WAL.open() found no WAL segment in the directory."""


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
