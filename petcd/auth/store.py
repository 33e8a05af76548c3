"""The auth store: users, roles, permissions, enable/disable and the auth
revision, with etcd 3.4's rules, kept in the backend's auth buckets.

What it is for: the applier calls :meth:`AuthStore.apply` for every auth
request committed through raft (inside the backend batch that also records
the applied index, so a restart replays exactly what the backend lacks);
the api layer calls the checks (:meth:`AuthStore.is_range_permitted` and
friends) and :meth:`AuthStore.auth_info_from_token` on every request, and
:meth:`AuthStore.check_password` / :meth:`AuthStore.hash_password` before
proposing Authenticate / UserAdd / UserChangePassword (bcrypt is slow: run
those two in a worker thread).

On disk, as etcd writes it (so etcd can read petcd's backend and back):

- bucket ``auth``: ``authEnabled`` = b"\\x01" / b"\\x00", ``authRevision`` =
  the revision, 8 bytes big-endian;
- bucket ``authUsers``: user name -> ``authpb.User`` (bcrypt hash, roles in
  sorted order, options);
- bucket ``authRoles``: role name -> ``authpb.Role`` (permissions sorted by key).

The auth revision starts at 1 and grows by one with every change to users,
roles or permissions and with AuthDisable (not AuthEnable, as in etcd); a
request checked under an older revision fails with ErrAuthOldRevision.

Guarantees: every error is etcd's (petcd/auth/errors.py) and is raised
before anything is written, so a failed request leaves the store as it was.
The in-memory copy of users and roles always equals the buckets; User and
Role objects are replaced, never mutated, so :meth:`check_password` may read
them from another thread. Permission sets are cached per user and dropped
on every change that can affect them.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import logging
import struct
from collections.abc import Callable
from typing import Any

import bcrypt

from petcd.auth.errors import (
    AuthError,
    ErrAuthFailed,
    ErrAuthNotEnabled,
    ErrAuthOldRevision,
    ErrInvalidAuthMgmt,
    ErrInvalidAuthToken,
    ErrNoPasswordUser,
    ErrPermissionDenied,
    ErrPermissionNotGranted,
    ErrRoleAlreadyExist,
    ErrRoleEmpty,
    ErrRoleNotFound,
    ErrRoleNotGranted,
    ErrRootRoleNotExist,
    ErrRootUserNotExist,
    ErrUserAlreadyExist,
    ErrUserEmpty,
    ErrUserNotFound,
)
from petcd.auth.permissions import UserPermissions, merge_permissions, permitted
from petcd.auth.tokens import AuthInfo, TokenProvider
from petcd.gosort import go_sort
from petcd.proto import auth_pb2, rpc_pb2
from petcd.storage.backend import Backend

log = logging.getLogger("petcd.auth")

AUTH_BUCKET = "auth"
USERS_BUCKET = "authUsers"
ROLES_BUCKET = "authRoles"
ENABLED_KEY = b"authEnabled"
REVISION_KEY = b"authRevision"
AUTH_ENABLED = b"\x01"
AUTH_DISABLED = b"\x00"
ROOT_USER = "root"
ROOT_ROLE = "root"

# Go's bcrypt: MinCost 4, MaxCost 31, DefaultCost 10; it hashes at most 72
# bytes of a password (etcd 3.4's vendored x/crypto cuts the rest silently,
# so a longer password matches on its first 72 bytes).
BCRYPT_MIN_COST = 4
BCRYPT_MAX_COST = 31
DEFAULT_BCRYPT_COST = 10
_BCRYPT_MAX_LEN = 72
_REV = struct.Struct(">Q")

# The InternalRaftRequest fields that need the root role (etcd's
# needAdminPermission); UserGet and RoleGet have their own rule.
ADMIN_REQUESTS = frozenset({
    "auth_enable", "auth_disable", "auth_user_add", "auth_user_delete", "auth_user_change_password",
    "auth_user_grant_role", "auth_user_revoke_role", "auth_role_add", "auth_role_grant_permission",
    "auth_role_revoke_permission", "auth_role_delete", "auth_user_list", "auth_role_list",
})
AUTH_REQUESTS = ADMIN_REQUESTS | {"authenticate", "auth_user_get", "auth_role_get", "auth_status"}


def hash_password(password: str, cost: int = DEFAULT_BCRYPT_COST) -> bytes:
    """A bcrypt hash of password (``$2a$``, as Go writes it)."""
    return bcrypt.hashpw(password.encode()[:_BCRYPT_MAX_LEN], bcrypt.gensalt(rounds=cost, prefix=b"2a"))


def password_matches(hashed: bytes, password: str) -> bool:
    """bcrypt check; a malformed stored hash never matches."""
    try:
        return bcrypt.checkpw(password.encode()[:_BCRYPT_MAX_LEN], hashed)
    except ValueError:
        return False


def _has_root_role(user: auth_pb2.User) -> bool:
    roles = list(user.roles)
    i = bisect.bisect_left(roles, ROOT_ROLE)
    return i < len(roles) and roles[i] == ROOT_ROLE


def _sort_perms_by_key(perms: list[auth_pb2.Permission]) -> list[auth_pb2.Permission]:
    # etcd appends, then sorts by key alone with Go's unstable sort.Sort:
    # permissions that share a key end up where Go leaves them.
    out = list(perms)
    go_sort(out, lambda a, b: a.key < b.key)
    return out


class AuthStore:
    """etcd's auth store on petcd's backend (see the module doc)."""

    def __init__(self, backend: Backend, tokens: TokenProvider, bcrypt_cost: int = DEFAULT_BCRYPT_COST) -> None:
        if not BCRYPT_MIN_COST <= bcrypt_cost <= BCRYPT_MAX_COST:
            log.warning("use default bcrypt cost %d instead of the invalid given cost %d",
                        DEFAULT_BCRYPT_COST, bcrypt_cost)
            bcrypt_cost = DEFAULT_BCRYPT_COST
        self.bcrypt_cost = bcrypt_cost
        self.tokens = tokens
        self._be = backend
        self._enabled = False
        self._revision = 0
        self._users: dict[str, auth_pb2.User] = {}
        self._roles: dict[str, auth_pb2.Role] = {}
        self._perm_cache: dict[str, UserPermissions] = {}
        self.recover(backend)
        if self._revision == 0:
            self._commit_revision()

    # --- state ------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def revision(self) -> int:
        """The auth revision (1 on a new store)."""
        return self._revision

    def recover(self, backend: Backend) -> None:
        """(Re)load everything from backend: at start, and after the backend
        was replaced by a raft snapshot."""
        self._be = backend
        self._enabled = backend.get(AUTH_BUCKET, ENABLED_KEY) == AUTH_ENABLED
        raw = backend.get(AUTH_BUCKET, REVISION_KEY)
        self._revision = _REV.unpack(raw)[0] if raw is not None and len(raw) == 8 else 0
        users: dict[str, auth_pb2.User] = {}
        for _, value in backend.items(USERS_BUCKET):
            user = auth_pb2.User.FromString(value)
            users[user.name.decode(errors="replace")] = user
        roles: dict[str, auth_pb2.Role] = {}
        for _, value in backend.items(ROLES_BUCKET):
            role = auth_pb2.Role.FromString(value)
            roles[role.name.decode(errors="replace")] = role
        self._users = users
        self._roles = roles
        self._perm_cache = {}
        if self._enabled:
            self.tokens.enable()
        else:
            self.tokens.disable()

    def _commit_revision(self) -> None:
        self._revision += 1
        self._be.put(AUTH_BUCKET, REVISION_KEY, _REV.pack(self._revision))

    def _put_user(self, user: auth_pb2.User) -> None:
        self._be.put(USERS_BUCKET, bytes(user.name), user.SerializeToString())
        self._users[user.name.decode()] = user

    def _put_role(self, role: auth_pb2.Role) -> None:
        self._be.put(ROLES_BUCKET, bytes(role.name), role.SerializeToString())
        self._roles[role.name.decode()] = role

    def user(self, name: str) -> auth_pb2.User | None:
        """The stored user (do not mutate it)."""
        return self._users.get(name)

    def role(self, name: str) -> auth_pb2.Role | None:
        """The stored role (do not mutate it)."""
        return self._roles.get(name)

    # --- the api side (before raft) ---------------------------------------

    def hash_password(self, password: str) -> str:
        """What the api puts in ``hashedPassword`` of UserAdd and
        UserChangePassword before proposing them: base64 of the bcrypt hash
        at this store's cost (slow: call from a worker thread)."""
        return base64.b64encode(hash_password(password, self.bcrypt_cost)).decode()

    def check_password(self, name: str, password: str) -> int:
        """Authenticate's password check, before raft: the auth revision it
        was checked at (if the revision moved by the time the token is
        issued, the caller checks again, as etcd does). Slow (bcrypt): call
        from a worker thread; it only reads."""
        if not self._enabled:
            raise ErrAuthNotEnabled()
        revision = self._revision
        user = self._users.get(name)
        if user is None:
            raise ErrAuthFailed()
        if user.options.no_password:
            raise ErrNoPasswordUser()
        if not password_matches(bytes(user.password), password):
            log.info("invalid password for user %r", name)
            raise ErrAuthFailed()
        return revision

    def gen_token_prefix(self) -> str:
        """The random part of a simple token, drawn by the member that got
        Authenticate and carried in the raft entry."""
        return self.tokens.gen_token_prefix()

    def auth_info_from_token(self, token: str) -> AuthInfo:
        """The user and revision a token stands for; ErrInvalidAuthToken for
        an unknown, expired or malformed one."""
        info = self.tokens.info(token, self._revision)
        if info is None:
            raise ErrInvalidAuthToken()
        return info

    # --- checks -----------------------------------------------------------

    def _user_perms(self, name: str, user: auth_pb2.User) -> UserPermissions:
        perms = self._perm_cache.get(name)
        if perms is None:
            roles = [r for r in (self._roles.get(rn) for rn in user.roles) if r is not None]
            perms = self._perm_cache[name] = merge_permissions(roles)
        return perms

    def _is_op_permitted(self, info: AuthInfo | None, key: bytes, range_end: bytes, write: bool) -> None:
        if not self._enabled:
            return
        if info is None or info.revision == 0:
            raise ErrUserEmpty()
        if info.revision < self._revision:
            log.warning("request auth revision %d is less than the store's %d", info.revision, self._revision)
            raise ErrAuthOldRevision()
        user = self._users.get(info.username)
        if user is None:
            log.error("cannot find user %r for a permission check", info.username)
            raise ErrPermissionDenied()
        if _has_root_role(user):
            return
        if not permitted(self._user_perms(info.username, user), key, range_end, write):
            raise ErrPermissionDenied()

    def is_put_permitted(self, info: AuthInfo | None, key: bytes) -> None:
        """Raise unless info may write key."""
        self._is_op_permitted(info, key, b"", True)

    def is_range_permitted(self, info: AuthInfo | None, key: bytes, range_end: bytes) -> None:
        """Raise unless info may read [key, range_end) (a key when range_end is empty)."""
        self._is_op_permitted(info, key, range_end, False)

    def is_delete_range_permitted(self, info: AuthInfo | None, key: bytes, range_end: bytes) -> None:
        """Raise unless info may write [key, range_end)."""
        self._is_op_permitted(info, key, range_end, True)

    def is_admin_permitted(self, info: AuthInfo | None) -> None:
        """Raise unless info's user holds the root role (or auth is off).
        As in etcd, the revision is not checked here."""
        if not self._enabled:
            return
        if info is None or not info.username:
            raise ErrUserEmpty()
        user = self._users.get(info.username)
        if user is None:
            raise ErrUserNotFound()
        if not _has_root_role(user):
            raise ErrPermissionDenied()

    def has_role(self, username: str, role: str) -> bool:
        user = self._users.get(username)
        return user is not None and role in user.roles

    # --- the apply side (through raft) ------------------------------------

    def apply(self, field: str, req: Any, info: AuthInfo | None, index: int = 0) -> Any:
        """Apply one committed auth request: ``field`` is its
        InternalRaftRequest field name, ``info`` the user and revision from
        the entry's header, ``index`` the entry's raft index (it names simple
        tokens). Checks the caller's rights as etcd's auth applier does, then
        runs the request; returns its response (without header)."""
        if field in ADMIN_REQUESTS:
            self.is_admin_permitted(info)
        elif field == "auth_user_get":
            try:
                self.is_admin_permitted(info)
            except AuthError:
                if info is None or req.name != info.username:
                    raise
        elif field == "auth_role_get":
            try:
                self.is_admin_permitted(info)
            except AuthError:
                if info is None or not self.has_role(info.username, req.role):
                    raise
        handler: Callable[[Any], Any] | None = getattr(self, "_apply_" + field, None)
        if handler is None:
            raise ValueError(f"not an auth request: {field}")
        if field == "authenticate":
            return self.authenticate(req.name, req.simple_token, index)
        return handler(req)

    def _apply_auth_enable(self, req: rpc_pb2.AuthEnableRequest) -> rpc_pb2.AuthEnableResponse:
        self.auth_enable()
        return rpc_pb2.AuthEnableResponse()

    def _apply_auth_disable(self, req: rpc_pb2.AuthDisableRequest) -> rpc_pb2.AuthDisableResponse:
        self.auth_disable()
        return rpc_pb2.AuthDisableResponse()

    def _apply_auth_status(self, req: rpc_pb2.AuthStatusRequest) -> rpc_pb2.AuthStatusResponse:
        return rpc_pb2.AuthStatusResponse(enabled=self._enabled, authRevision=self._revision)

    def _apply_authenticate(self, req: Any) -> rpc_pb2.AuthenticateResponse:
        raise AssertionError("dispatched in apply()")  # needs the index

    def auth_enable(self) -> None:
        """Enable auth: refused unless user root exists and holds role root.
        Does not move the revision; enabling twice is a no-op."""
        if self._enabled:
            log.info("authentication is already enabled; ignored auth enable request")
            return
        root = self._users.get(ROOT_USER)
        if root is None:
            raise ErrRootUserNotExist()
        if not _has_root_role(root):
            raise ErrRootRoleNotExist()
        self._be.put(AUTH_BUCKET, ENABLED_KEY, AUTH_ENABLED)
        self._enabled = True
        self.tokens.enable()
        self._perm_cache = {}
        log.info("enabled authentication")

    def auth_disable(self) -> None:
        """Disable auth and drop every token; moves the revision."""
        if not self._enabled:
            return
        self._be.put(AUTH_BUCKET, ENABLED_KEY, AUTH_DISABLED)
        self._commit_revision()
        self._enabled = False
        self.tokens.disable()
        log.info("disabled authentication")

    def authenticate(self, name: str, simple_token_prefix: str, index: int) -> rpc_pb2.AuthenticateResponse:
        """Issue a token (the password was checked before raft)."""
        if not self._enabled:
            raise ErrAuthNotEnabled()
        user = self._users.get(name)
        if user is None or user.options.no_password:
            raise ErrAuthFailed()
        token = self.tokens.assign(name, self._revision, simple_token_prefix, index)
        return rpc_pb2.AuthenticateResponse(token=token)

    def _hashed(self, password: str, hashed_b64: str) -> bytes:
        if hashed_b64:
            try:
                return base64.b64decode(hashed_b64, validate=True)
            except (binascii.Error, ValueError):
                log.warning("ignoring a malformed hashedPassword; hashing the password instead")
        return hash_password(password, self.bcrypt_cost)

    def _apply_auth_user_add(self, req: rpc_pb2.AuthUserAddRequest) -> rpc_pb2.AuthUserAddResponse:
        if not req.name:
            raise ErrUserEmpty()
        if req.name in self._users:
            raise ErrUserAlreadyExist()
        no_password = req.HasField("options") and req.options.no_password
        user = auth_pb2.User(name=req.name.encode())
        if not no_password:
            user.password = self._hashed(req.password, req.hashedPassword)
        # etcd stores the options message even when none was sent.
        user.options.no_password = no_password
        user.options.SetInParent()
        self._put_user(user)
        self._commit_revision()
        log.info("added a user: %s", req.name)
        return rpc_pb2.AuthUserAddResponse()

    def _apply_auth_user_delete(self, req: rpc_pb2.AuthUserDeleteRequest) -> rpc_pb2.AuthUserDeleteResponse:
        if self._enabled and req.name == ROOT_USER:
            log.error("cannot delete 'root' user while authentication is enabled")
            raise ErrInvalidAuthMgmt()
        if req.name not in self._users:
            raise ErrUserNotFound()
        self._be.delete(USERS_BUCKET, req.name.encode())
        del self._users[req.name]
        self._commit_revision()
        self._perm_cache.pop(req.name, None)
        self.tokens.invalidate_user(req.name)
        log.info("deleted a user: %s", req.name)
        return rpc_pb2.AuthUserDeleteResponse()

    def _apply_auth_user_change_password(
        self, req: rpc_pb2.AuthUserChangePasswordRequest
    ) -> rpc_pb2.AuthUserChangePasswordResponse:
        user = self._users.get(req.name)
        if user is None:
            raise ErrUserNotFound()
        updated = auth_pb2.User()
        updated.CopyFrom(user)
        updated.password = self._hashed(req.password, req.hashedPassword)
        self._put_user(updated)
        self._commit_revision()
        self._perm_cache.pop(req.name, None)
        self.tokens.invalidate_user(req.name)
        log.info("changed the password of user %s", req.name)
        return rpc_pb2.AuthUserChangePasswordResponse()

    def _apply_auth_user_grant_role(self, req: rpc_pb2.AuthUserGrantRoleRequest) -> rpc_pb2.AuthUserGrantRoleResponse:
        user = self._users.get(req.user)
        if user is None:
            raise ErrUserNotFound()
        # The root role needs no role record (etcd's bootstrap: add user
        # root, grant it root, enable).
        if req.role != ROOT_ROLE and req.role not in self._roles:
            raise ErrRoleNotFound()
        if req.role in user.roles:
            log.info("user %s already has role %s; ignored", req.user, req.role)
            return rpc_pb2.AuthUserGrantRoleResponse()
        updated = auth_pb2.User()
        updated.CopyFrom(user)
        roles = sorted([*user.roles, req.role])
        del updated.roles[:]
        updated.roles.extend(roles)
        self._put_user(updated)
        self._perm_cache.pop(req.user, None)
        self._commit_revision()
        log.info("granted role %s to user %s", req.role, req.user)
        return rpc_pb2.AuthUserGrantRoleResponse()

    def _apply_auth_user_get(self, req: rpc_pb2.AuthUserGetRequest) -> rpc_pb2.AuthUserGetResponse:
        user = self._users.get(req.name)
        if user is None:
            raise ErrUserNotFound()
        return rpc_pb2.AuthUserGetResponse(roles=list(user.roles))

    def _apply_auth_user_list(self, req: rpc_pb2.AuthUserListRequest) -> rpc_pb2.AuthUserListResponse:
        return rpc_pb2.AuthUserListResponse(users=sorted(self._users, key=str.encode))

    def _apply_auth_user_revoke_role(
        self, req: rpc_pb2.AuthUserRevokeRoleRequest
    ) -> rpc_pb2.AuthUserRevokeRoleResponse:
        if self._enabled and req.name == ROOT_USER and req.role == ROOT_ROLE:
            log.error("cannot revoke the root role from the root user while authentication is enabled")
            raise ErrInvalidAuthMgmt()
        user = self._users.get(req.name)
        if user is None:
            raise ErrUserNotFound()
        kept = [r for r in user.roles if r != req.role]
        if len(kept) == len(user.roles):
            raise ErrRoleNotGranted()
        updated = auth_pb2.User()
        updated.CopyFrom(user)
        del updated.roles[:]
        updated.roles.extend(kept)
        self._put_user(updated)
        self._perm_cache.pop(req.name, None)
        self._commit_revision()
        log.info("revoked role %s from user %s", req.role, req.name)
        return rpc_pb2.AuthUserRevokeRoleResponse()

    def _apply_auth_role_add(self, req: rpc_pb2.AuthRoleAddRequest) -> rpc_pb2.AuthRoleAddResponse:
        if not req.name:
            raise ErrRoleEmpty()
        if req.name in self._roles:
            raise ErrRoleAlreadyExist()
        self._put_role(auth_pb2.Role(name=req.name.encode()))
        self._commit_revision()
        log.info("created a role: %s", req.name)
        return rpc_pb2.AuthRoleAddResponse()

    def _apply_auth_role_get(self, req: rpc_pb2.AuthRoleGetRequest) -> rpc_pb2.AuthRoleGetResponse:
        role = self._roles.get(req.role)
        if role is None:
            raise ErrRoleNotFound()
        return rpc_pb2.AuthRoleGetResponse(perm=list(role.keyPermission))

    def _apply_auth_role_list(self, req: rpc_pb2.AuthRoleListRequest) -> rpc_pb2.AuthRoleListResponse:
        return rpc_pb2.AuthRoleListResponse(roles=sorted(self._roles, key=str.encode))

    def _apply_auth_role_delete(self, req: rpc_pb2.AuthRoleDeleteRequest) -> rpc_pb2.AuthRoleDeleteResponse:
        if self._enabled and req.role == ROOT_ROLE:
            log.error("cannot delete 'root' role while authentication is enabled")
            raise ErrInvalidAuthMgmt()
        if req.role not in self._roles:
            raise ErrRoleNotFound()
        self._be.delete(ROLES_BUCKET, req.role.encode())
        del self._roles[req.role]
        # Users lose the deleted role, so a role re-created under the same
        # name is not silently theirs again.
        for name in sorted(self._users, key=str.encode):
            user = self._users[name]
            if req.role not in user.roles:
                continue
            updated = auth_pb2.User()
            updated.CopyFrom(user)
            del updated.roles[:]
            updated.roles.extend(r for r in user.roles if r != req.role)
            self._put_user(updated)
            self._perm_cache.pop(name, None)
        self._commit_revision()
        log.info("deleted a role: %s", req.role)
        return rpc_pb2.AuthRoleDeleteResponse()

    def _apply_auth_role_grant_permission(
        self, req: rpc_pb2.AuthRoleGrantPermissionRequest
    ) -> rpc_pb2.AuthRoleGrantPermissionResponse:
        role = self._roles.get(req.name)
        if role is None:
            raise ErrRoleNotFound()
        perms = list(role.keyPermission)
        # etcd looks at the first permission whose key is >= the new key
        # only: the same (key, range_end) there changes its type in place;
        # anything else appends (so a duplicate further on can arise, as in
        # etcd).
        i = bisect.bisect_left([p.key for p in perms], req.perm.key)
        if i < len(perms) and perms[i].key == req.perm.key and perms[i].range_end == req.perm.range_end:
            changed = auth_pb2.Permission()
            changed.CopyFrom(perms[i])
            changed.permType = req.perm.permType
            perms[i] = changed
        else:
            perms.append(auth_pb2.Permission(permType=req.perm.permType, key=req.perm.key,
                                             range_end=req.perm.range_end))
            perms = _sort_perms_by_key(perms)
        self._put_role(auth_pb2.Role(name=role.name, keyPermission=perms))
        self._perm_cache = {}
        self._commit_revision()
        log.info("granted a permission on %r to role %s", req.perm.key, req.name)
        return rpc_pb2.AuthRoleGrantPermissionResponse()

    def _apply_auth_role_revoke_permission(
        self, req: rpc_pb2.AuthRoleRevokePermissionRequest
    ) -> rpc_pb2.AuthRoleRevokePermissionResponse:
        role = self._roles.get(req.role)
        if role is None:
            raise ErrRoleNotFound()
        kept = [p for p in role.keyPermission if p.key != req.key or p.range_end != req.range_end]
        if len(kept) == len(role.keyPermission):
            raise ErrPermissionNotGranted()
        self._put_role(auth_pb2.Role(name=role.name, keyPermission=kept))
        self._perm_cache = {}
        self._commit_revision()
        log.info("revoked a permission on %r from role %s", req.key, req.role)
        return rpc_pb2.AuthRoleRevokePermissionResponse()
