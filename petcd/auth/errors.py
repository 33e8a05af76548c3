"""The auth store's errors, each with etcd 3.4's two texts.

etcd's auth package has its own messages (``auth: ...``); its gRPC layer maps
most of them to an ``etcdserver: ...`` status with a code. Some paths of
etcd 3.4 return the auth error unmapped (the Maintenance calls, Authenticate
for a no-password user), which clients see as UNKNOWN with the ``auth:``
text. So every error here carries both: ``str(exc)`` is the auth text,
``grpc_code``/``grpc_message`` the mapped status (None where etcd maps
nothing). The code is a ``grpc.StatusCode`` member's name, so this module
needs no gRPC; petcd/api/errors.py turns it into a status.
"""

from __future__ import annotations


class AuthError(Exception):
    """Base of the auth store's errors; str() is etcd's auth-package text."""

    message = "auth: unknown error"
    grpc_code: str | None = None
    grpc_message: str | None = None

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.message)


class ErrRootUserNotExist(AuthError):
    message = "auth: root user does not exist"
    grpc_code = "FAILED_PRECONDITION"
    grpc_message = "etcdserver: root user does not exist"


class ErrRootRoleNotExist(AuthError):
    message = "auth: root user does not have root role"
    grpc_code = "FAILED_PRECONDITION"
    grpc_message = "etcdserver: root user does not have root role"


class ErrUserAlreadyExist(AuthError):
    message = "auth: user already exists"
    grpc_code = "FAILED_PRECONDITION"
    grpc_message = "etcdserver: user name already exists"


class ErrUserEmpty(AuthError):
    message = "auth: user name is empty"
    grpc_code = "INVALID_ARGUMENT"
    grpc_message = "etcdserver: user name is empty"


class ErrUserNotFound(AuthError):
    message = "auth: user not found"
    grpc_code = "FAILED_PRECONDITION"
    grpc_message = "etcdserver: user name not found"


class ErrRoleAlreadyExist(AuthError):
    message = "auth: role already exists"
    grpc_code = "FAILED_PRECONDITION"
    grpc_message = "etcdserver: role name already exists"


class ErrRoleNotFound(AuthError):
    message = "auth: role not found"
    grpc_code = "FAILED_PRECONDITION"
    grpc_message = "etcdserver: role name not found"


class ErrRoleEmpty(AuthError):
    message = "auth: role name is empty"
    grpc_code = "INVALID_ARGUMENT"
    grpc_message = "etcdserver: role name is empty"


class ErrAuthFailed(AuthError):
    message = "auth: authentication failed, invalid user ID or password"
    grpc_code = "INVALID_ARGUMENT"
    grpc_message = "etcdserver: authentication failed, invalid user ID or password"


class ErrNoPasswordUser(AuthError):
    """Authenticate for a user added with ``no_password``: etcd 3.4 maps
    nothing, so clients see UNKNOWN with this text."""

    message = "auth: authentication failed, password was given for no password user"


class ErrPermissionDenied(AuthError):
    message = "auth: permission denied"
    grpc_code = "PERMISSION_DENIED"
    grpc_message = "etcdserver: permission denied"


class ErrRoleNotGranted(AuthError):
    message = "auth: role is not granted to the user"
    grpc_code = "FAILED_PRECONDITION"
    grpc_message = "etcdserver: role is not granted to the user"


class ErrPermissionNotGranted(AuthError):
    message = "auth: permission is not granted to the role"
    grpc_code = "FAILED_PRECONDITION"
    grpc_message = "etcdserver: permission is not granted to the role"


class ErrAuthNotEnabled(AuthError):
    message = "auth: authentication is not enabled"
    grpc_code = "FAILED_PRECONDITION"
    grpc_message = "etcdserver: authentication is not enabled"


class ErrAuthOldRevision(AuthError):
    """The request was checked under an auth revision older than the
    store's: etcd clients retry it with a fresh token."""

    message = "auth: revision in header is old"
    grpc_code = "INVALID_ARGUMENT"
    grpc_message = "etcdserver: revision of auth store is old"


class ErrInvalidAuthToken(AuthError):
    message = "auth: invalid auth token"
    grpc_code = "UNAUTHENTICATED"
    grpc_message = "etcdserver: invalid auth token"


class ErrInvalidAuthOpts(AuthError):
    """A ``--auth-token`` value etcd refuses at start."""

    message = "auth: invalid auth options"


class ErrInvalidAuthMgmt(AuthError):
    """Deleting the root user or role, or revoking root's root role, while
    auth is enabled."""

    message = "auth: invalid auth management"
    grpc_code = "INVALID_ARGUMENT"
    grpc_message = "etcdserver: invalid auth management"


class ErrInvalidAuthMethod(AuthError):
    message = "auth: invalid auth signature"


class ErrMissingKey(AuthError):
    message = "auth: missing key data"


class ErrKeyMismatch(AuthError):
    message = "auth: public and private keys don't match"


class ErrVerifyOnly(AuthError):
    message = "auth: token signing attempted with verify-only key"
