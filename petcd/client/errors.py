"""The client's exceptions: one class per etcd error a caller may want to
catch, recognised from the status etcd (and petcd) send. Every one is an
``EtcdError``; the gRPC status code and message are kept on it."""

from __future__ import annotations

import grpc

__all__ = [
    "EtcdError",
    "Unavailable",
    "Timeout",
    "Cancelled",
    "Compacted",
    "FutureRevision",
    "EmptyKey",
    "KeyNotFound",
    "TooManyOps",
    "DuplicateKey",
    "RequestTooLarge",
    "TooManyRequests",
    "NoSpace",
    "NoLeader",
    "NotLeader",
    "LeaderChanged",
    "LeaseNotFound",
    "LeaseExists",
    "LeaseTTLTooLarge",
    "PermissionDenied",
    "AuthFailed",
    "InvalidAuthToken",
    "AuthNotEnabled",
    "UserNotFound",
    "LeaseLost",
    "ElectionNotLeader",
    "NoElectionLeader",
    "LockNotHeld",
    "STMConflictLimit",
]


class EtcdError(Exception):
    """An error from the cluster or from reaching it."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Unavailable(EtcdError):
    """No endpoint could be reached (or the one used went away mid-request)."""


class Timeout(EtcdError):
    """The request's deadline passed (etcd's "context deadline exceeded" or
    "etcdserver: request timed out")."""


class Cancelled(EtcdError):
    """The request was cancelled."""


class Compacted(EtcdError):
    """The requested revision has been compacted away. ``compact_revision``
    is the oldest revision still readable (0 when the server did not say)."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None, compact_revision: int = 0) -> None:
        super().__init__(message, code)
        self.compact_revision = compact_revision


class FutureRevision(EtcdError):
    """The requested revision is newer than the store's."""


class EmptyKey(EtcdError):
    """A request without a key."""


class KeyNotFound(EtcdError):
    """etcd's "key not found" (a put with ignore_value/ignore_lease on a missing key)."""


class TooManyOps(EtcdError):
    """A transaction with more operations than the server's --max-txn-ops."""


class DuplicateKey(EtcdError):
    """A transaction writing one key twice."""


class RequestTooLarge(EtcdError):
    """A request larger than the server's --max-request-bytes."""


class TooManyRequests(EtcdError):
    """The server is applying too far behind its commits."""


class NoSpace(EtcdError):
    """The backend quota is exhausted (the NOSPACE alarm is raised)."""


class NoLeader(EtcdError):
    """The member has no leader; the request was not proposed."""


class NotLeader(EtcdError):
    """The request needs the leader."""


class LeaderChanged(EtcdError):
    """The leader changed while the request was in flight (its outcome is unknown)."""


class LeaseNotFound(EtcdError):
    """The lease does not exist (expired or revoked)."""


class LeaseExists(EtcdError):
    """A grant with an ID already in use."""


class LeaseTTLTooLarge(EtcdError):
    """A grant with a TTL beyond etcd's maximum."""


class PermissionDenied(EtcdError):
    """The user lacks the permission for this request."""


class AuthFailed(EtcdError):
    """Wrong user name or password."""


class InvalidAuthToken(EtcdError):
    """The token expired or is unknown (the client re-authenticates by itself)."""


class AuthNotEnabled(EtcdError):
    """Authentication was requested but the cluster has it off."""


class UserNotFound(EtcdError):
    """The named user does not exist."""


class LeaseLost(EtcdError):
    """A lease this client was keeping alive expired or was revoked."""


class ElectionNotLeader(EtcdError):
    """proclaim() or resign() by a campaigner that is not the leader (any more)."""


class NoElectionLeader(EtcdError):
    """The election has no leader."""


class LockNotHeld(EtcdError):
    """The lock's key disappeared while the lock was held (its lease expired)."""


class STMConflictLimit(EtcdError):
    """An STM transaction kept conflicting past its retry limit."""


# etcd's messages (as its rpctypes spell them) -> our classes
_BY_MESSAGE: dict[str, type[EtcdError]] = {
    "etcdserver: mvcc: required revision has been compacted": Compacted,
    "etcdserver: mvcc: required revision is a future revision": FutureRevision,
    "etcdserver: key is not provided": EmptyKey,
    "etcdserver: key not found": KeyNotFound,
    "etcdserver: too many operations in txn request": TooManyOps,
    "etcdserver: duplicate key given in txn request": DuplicateKey,
    "etcdserver: request is too large": RequestTooLarge,
    "etcdserver: too many requests": TooManyRequests,
    "etcdserver: mvcc: database space exceeded": NoSpace,
    "etcdserver: no leader": NoLeader,
    "etcdserver: not leader": NotLeader,
    "etcdserver: leader changed": LeaderChanged,
    "etcdserver: request timed out": Timeout,
    "etcdserver: request timed out, possibly due to previous leader failure": Timeout,
    "etcdserver: request timed out, possibly due to connection lost": Timeout,
    "etcdserver: requested lease not found": LeaseNotFound,
    "etcdserver: lease already exists": LeaseExists,
    "etcdserver: too large lease TTL": LeaseTTLTooLarge,
    "etcdserver: permission denied": PermissionDenied,
    "etcdserver: authentication failed, invalid user ID or password": AuthFailed,
    "etcdserver: invalid auth token": InvalidAuthToken,
    "etcdserver: authentication is not enabled": AuthNotEnabled,
    "etcdserver: user name not found": UserNotFound,
    "etcdserver: user name is empty": UserNotFound,
}

_BY_CODE: dict[grpc.StatusCode, type[EtcdError]] = {
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Timeout,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
}


def from_status(code: grpc.StatusCode, message: str) -> EtcdError:
    """The exception for a gRPC status as etcd sends it."""
    cls = _BY_MESSAGE.get(message) or _BY_CODE.get(code) or EtcdError
    return cls(message, code)


def from_rpc_error(exc: grpc.RpcError) -> EtcdError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else None
    return from_status(code or grpc.StatusCode.UNKNOWN, details or str(exc))


# Details grpc gives when the request never left this process: retrying it
# cannot apply a write twice.
_NOT_SENT_MARKERS = ("failed to connect", "connection refused", "connections to all backends failing",
                     "dns resolution failed", "name resolution")


def never_sent(err: EtcdError) -> bool:
    """True when the server cannot have applied the request: the connection
    was never made, or etcd refused it before proposing (no leader)."""
    if isinstance(err, NoLeader):
        return True
    if isinstance(err, Unavailable):
        text = err.message.lower()
        return any(m in text for m in _NOT_SENT_MARKERS)
    return False
