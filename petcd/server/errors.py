"""The server's own failures, each with etcd's message.

The api layer maps every one of these to a gRPC status (petcd/api/errors.py);
nothing here knows about gRPC.
"""

from __future__ import annotations


class ServerError(Exception):
    """Base of the errors the server raises to clients; str() is etcd's message."""

    message = "etcdserver: unknown error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.message)


class ErrKeyNotFound(ServerError):
    """A request names a key that must exist and does not (a put with
    ignore_value or ignore_lease), or a txn op names no request at all:
    etcd answers both with this error."""

    message = "etcdserver: key not found"


class ErrNoLeader(ServerError):
    message = "etcdserver: no leader"


class ErrNotLeader(ServerError):
    message = "etcdserver: not leader"


class ErrLeaderChanged(ServerError):
    message = "etcdserver: leader changed"


class ErrStopped(ServerError):
    message = "etcdserver: server stopped"


class ErrTimeout(ServerError):
    message = "etcdserver: request timed out"


class ErrTimeoutDueToLeaderFail(ServerError):
    message = "etcdserver: request timed out, possibly due to previous leader failure"


class ErrDeadlineExceeded(ServerError):
    """Go's context.DeadlineExceeded: what etcd answers when raft took no
    proposal (no leader) within the request timeout. etcd's v3rpc passes
    context errors through unmapped, so clients see UNKNOWN with this text."""

    message = "context deadline exceeded"


class ErrRequestTooLarge(ServerError):
    message = "etcdserver: request is too large"


class ErrTooManyRequests(ServerError):
    message = "etcdserver: too many requests"


class ErrNoSpace(ServerError):
    message = "etcdserver: mvcc: database space exceeded"


class ErrCorrupt(ServerError):
    message = "etcdserver: corrupt cluster"


class ErrBadLeaderTransferee(ServerError):
    message = "etcdserver: bad leader transferee"


class ErrUnhealthy(ServerError):
    message = "etcdserver: unhealthy cluster"


class ErrNotSupported(ServerError):
    """An etcd RPC petcd does not implement yet; the message names it."""

    message = "petcd: not supported yet"


class ErrBadSnapshot(ServerError):
    """A snapshot file that is not whole (checksum mismatch, truncated)."""

    message = "snapshot file integrity check failed"


class ErrTimeoutLeaderTransfer(ServerError):
    message = "etcdserver: request timed out, leader transfer took too long"


class ErrNotSupportedForLearner(ServerError):
    message = "etcdserver: rpc not supported for learner"
