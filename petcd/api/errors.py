"""The one place where petcd's errors become gRPC statuses, with etcd's codes
and messages (so etcdctl and client libraries recognise them).

Service handlers call ``abort_with`` from their ``except`` clause, which
raises the front end's RpcError; an RpcError passes through unchanged;
anything unknown becomes UNKNOWN with its text, and is logged.
"""

from __future__ import annotations

import logging
from typing import NoReturn

from petcd.api import validation
from petcd.auth.errors import AuthError
from petcd.http2.grpc import RpcError, StatusCode
from petcd.lease import lessor as lease_errors
from petcd.mvcc import errors as mvcc_errors
from petcd.server import errors as server_errors
from petcd.server import membership
from petcd.server.apply import ErrUnappliable

log = logging.getLogger("petcd.api")

_C = StatusCode

# exception type -> (status code, message override or None for str(exc))
_STATUS: dict[type[BaseException], tuple[StatusCode, str | None]] = {
    validation.ErrEmptyKey: (_C.INVALID_ARGUMENT, None),
    validation.ErrValueProvided: (_C.INVALID_ARGUMENT, None),
    validation.ErrLeaseProvided: (_C.INVALID_ARGUMENT, None),
    validation.ErrTooManyOps: (_C.INVALID_ARGUMENT, None),
    validation.ErrDuplicateKey: (_C.INVALID_ARGUMENT, None),
    validation.ErrInvalidSortOption: (_C.INVALID_ARGUMENT, None),
    mvcc_errors.ErrCompacted: (_C.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted"),
    mvcc_errors.ErrFutureRev: (_C.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision"),
    lease_errors.ErrLeaseNotFound: (_C.NOT_FOUND, None),
    lease_errors.ErrLeaseExists: (_C.FAILED_PRECONDITION, None),
    lease_errors.ErrLeaseTTLTooLarge: (_C.OUT_OF_RANGE, None),
    server_errors.ErrKeyNotFound: (_C.INVALID_ARGUMENT, None),
    server_errors.ErrNoLeader: (_C.UNAVAILABLE, None),
    server_errors.ErrNotLeader: (_C.FAILED_PRECONDITION, None),
    server_errors.ErrLeaderChanged: (_C.UNAVAILABLE, None),
    server_errors.ErrStopped: (_C.UNAVAILABLE, None),
    server_errors.ErrTimeout: (_C.UNAVAILABLE, None),
    server_errors.ErrTimeoutDueToLeaderFail: (_C.UNAVAILABLE, None),
    server_errors.ErrDeadlineExceeded: (_C.UNKNOWN, None),  # etcd passes context errors through
    server_errors.ErrRequestTooLarge: (_C.INVALID_ARGUMENT, None),
    server_errors.ErrTooManyRequests: (_C.RESOURCE_EXHAUSTED, None),
    server_errors.ErrNoSpace: (_C.RESOURCE_EXHAUSTED, None),
    server_errors.ErrCorrupt: (_C.DATA_LOSS, None),
    server_errors.ErrBadLeaderTransferee: (_C.FAILED_PRECONDITION, None),
    server_errors.ErrUnhealthy: (_C.UNAVAILABLE, None),
    server_errors.ErrNotSupported: (_C.UNIMPLEMENTED, None),
    server_errors.ErrTimeoutLeaderTransfer: (_C.UNAVAILABLE, None),
    server_errors.ErrNotSupportedForLearner: (_C.UNAVAILABLE, None),
    ErrUnappliable: (_C.INTERNAL, None),
    membership.ErrMemberNotFound: (_C.NOT_FOUND, None),
    membership.ErrMemberIDExists: (_C.FAILED_PRECONDITION, None),
    membership.ErrPeerURLExists: (_C.FAILED_PRECONDITION, None),
    membership.ErrMemberNotLearner: (_C.FAILED_PRECONDITION, None),
    membership.ErrLearnerNotReady: (_C.FAILED_PRECONDITION, None),
    membership.ErrTooManyLearners: (_C.FAILED_PRECONDITION, None),
    # etcd 3.4 leaves this one unmapped: clients see UNKNOWN with its text
    membership.ErrNotEnoughStartedMembers: (_C.UNKNOWN, None),
    membership.ErrBadURLs: (_C.INVALID_ARGUMENT, None),
}


def status_of(exc: BaseException) -> tuple[StatusCode, str]:
    if isinstance(exc, RpcError):
        return exc.code, exc.message
    if isinstance(exc, AuthError):
        # etcd maps most auth errors; the others reach clients as UNKNOWN
        # with the auth package's own text (petcd/auth/errors.py)
        if exc.grpc_code is None or exc.grpc_message is None:
            return _C.UNKNOWN, str(exc)
        return _C.__members__[exc.grpc_code], exc.grpc_message
    for cls in type(exc).__mro__:
        hit = _STATUS.get(cls)
        if hit is not None:
            code, message = hit
            return code, message if message is not None else str(exc)
    return _C.UNKNOWN, str(exc)


def rpc_error(exc: BaseException) -> RpcError:
    """The RpcError that answers exc."""
    if isinstance(exc, RpcError):
        return exc
    code, message = status_of(exc)
    if code == _C.UNKNOWN and not isinstance(exc, AuthError) and not any(c in _STATUS for c in type(exc).__mro__):
        log.error("unexpected error serving a request: %r", exc, exc_info=exc)
    return RpcError(code, message)


async def abort_with(context: object, exc: BaseException) -> NoReturn:
    """End the call with exc's status (context is the call's, kept so that
    handlers read the same as before)."""
    raise rpc_error(exc) from None
