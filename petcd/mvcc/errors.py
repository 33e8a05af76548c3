"""Errors of the mvcc layer, with etcd's messages (the api layer maps each
to etcd's gRPC status)."""

from __future__ import annotations


class MvccError(Exception):
    """Base of every mvcc error; ``message`` is etcd's text for it."""

    message = "mvcc: error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message if message is not None else self.message)


class ErrCompacted(MvccError):
    """The requested revision is older than the compact revision."""

    message = "mvcc: required revision has been compacted"


class ErrFutureRev(MvccError):
    """The requested revision is newer than the store's current revision."""

    message = "mvcc: required revision is a future revision"


class ErrCorruptStore(MvccError):
    """The backend holds something the store cannot have written."""

    message = "mvcc: corrupt store"
