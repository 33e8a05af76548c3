"""Auth on real petcd members: users, roles and permissions survive a
restart and reach every member of a cluster (also one that catches up from
a snapshot); a simple token issued by one member works on the others; JWT
tokens; leases with keys still expire under auth."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from petcd.proto import auth_pb2, rpc_pb2, rpc_pb2_grpc
from petcd.testing.harness import Server, petcd_cluster, petcd_server, wait_for

R = rpc_pb2
P = auth_pb2.Permission


def stubs(m: Server) -> tuple[rpc_pb2_grpc.AuthStub, rpc_pb2_grpc.KVStub, rpc_pb2_grpc.LeaseStub]:
    ch = m.channel()
    return rpc_pb2_grpc.AuthStub(ch), rpc_pb2_grpc.KVStub(ch), rpc_pb2_grpc.LeaseStub(ch)


def login(m: Server, user: str, password: str) -> list[tuple[str, str]]:
    auth, _, _ = stubs(m)
    return [("token", auth.Authenticate(R.AuthenticateRequest(name=user, password=password), timeout=20).token)]


def setup_auth(m: Server) -> None:
    """root, and user alice with readwrite on prefix a/; auth on."""
    auth, _, _ = stubs(m)
    auth.UserAdd(R.AuthUserAddRequest(name="root", password="rootpw"), timeout=20)
    auth.UserGrantRole(R.AuthUserGrantRoleRequest(user="root", role="root"), timeout=20)
    auth.RoleAdd(R.AuthRoleAddRequest(name="ra"), timeout=20)
    auth.RoleGrantPermission(R.AuthRoleGrantPermissionRequest(
        name="ra", perm=P(permType=P.READWRITE, key=b"a/", range_end=b"a0")), timeout=20)
    auth.UserAdd(R.AuthUserAddRequest(name="alice", password="apw"), timeout=20)
    auth.UserGrantRole(R.AuthUserGrantRoleRequest(user="alice", role="ra"), timeout=20)
    auth.AuthEnable(R.AuthEnableRequest(), timeout=20)


def denied(fn: object, *args: object, **kw: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as ei:
        fn(*args, **kw)  # type: ignore[operator]
    return ei.value.code()  # type: ignore[no-any-return]


def test_auth_survives_restart(tmp_path: Path) -> None:
    m = petcd_server(tmp_path, extra=["--bcrypt-cost", "4"]).start()
    try:
        setup_auth(m)
        _, kv, _ = stubs(m)
        kv.Put(R.PutRequest(key=b"a/1", value=b"v"), metadata=login(m, "alice", "apw"), timeout=20)
    finally:
        assert m.stop() == 0
    m = petcd_server(tmp_path, extra=["--bcrypt-cost", "4"], data_dir=m.data_dir).start()
    try:
        auth, kv, _ = stubs(m)
        alice = login(m, "alice", "apw")
        assert kv.Range(R.RangeRequest(key=b"a/1"), metadata=alice, timeout=20).kvs[0].value == b"v"
        assert denied(kv.Put, R.PutRequest(key=b"b", value=b"v"), metadata=alice, timeout=20) \
            == grpc.StatusCode.PERMISSION_DENIED
        assert denied(kv.Range, R.RangeRequest(key=b"a/1"), timeout=20) == grpc.StatusCode.INVALID_ARGUMENT
        root = login(m, "root", "rootpw")
        assert list(auth.UserList(R.AuthUserListRequest(), metadata=root, timeout=20).users) == ["alice", "root"]
        # a removed permission takes effect on the next request
        auth.RoleRevokePermission(R.AuthRoleRevokePermissionRequest(role="ra", key=b"a/", range_end=b"a0"),
                                  metadata=root, timeout=20)
        assert denied(kv.Range, R.RangeRequest(key=b"a/1"), metadata=alice, timeout=20) \
            == grpc.StatusCode.PERMISSION_DENIED
    finally:
        m.stop()


def test_cluster_tokens_snapshot_catch_up_and_lease_expiry(tmp_path: Path) -> None:
    # a small snapshot count, so a member that was down catches up from a snapshot
    members = petcd_cluster(tmp_path, 3, extra=["--bcrypt-cost", "4", "--snapshot-count", "20"])
    try:
        setup_auth(members[0])
        # a token issued through member 0 works on the others at once
        alice = login(members[0], "alice", "apw")
        for m in members[1:]:
            _, kv, _ = stubs(m)
            kv.Put(R.PutRequest(key=b"a/x", value=m.endpoint.encode()), metadata=alice, timeout=20)
        # member 2 misses many auth changes and catches up
        members[2].stop()
        auth0, kv0, lease0 = stubs(members[0])
        root = login(members[0], "root", "rootpw")
        for i in range(40):
            auth0.RoleAdd(R.AuthRoleAddRequest(name=f"extra{i}"), metadata=root, timeout=20)
        auth0.UserAdd(R.AuthUserAddRequest(name="bob", password="bpw"), metadata=root, timeout=20)
        auth0.UserGrantRole(R.AuthUserGrantRoleRequest(user="bob", role="ra"), metadata=root, timeout=20)
        members[2].start()
        _, kv2, _ = stubs(members[2])

        def bob_reads() -> bool:
            kv2.Range(R.RangeRequest(key=b"a/x", serializable=True), metadata=login(members[2], "bob", "bpw"),
                      timeout=5)
            return True

        wait_for(bob_reads, 60, "the restarted member to know bob")
        roles = auth0.RoleList(R.AuthRoleListRequest(), metadata=root, timeout=20).roles
        auth2, _, _ = stubs(members[2])
        assert list(auth2.RoleList(R.AuthRoleListRequest(), metadata=login(members[2], "root", "rootpw"),
                                   timeout=20).roles) == list(roles)
        # a lease holding alice's key expires although nobody may revoke it but its writer or root
        lease = lease0.LeaseGrant(R.LeaseGrantRequest(TTL=2), metadata=alice, timeout=20).ID
        kv0.Put(R.PutRequest(key=b"a/lease", value=b"v", lease=lease), metadata=alice, timeout=20)
        time.sleep(2)
        wait_for(lambda: kv0.Range(R.RangeRequest(key=b"a/lease"), metadata=root, timeout=5).count == 0,
                 60, "the lease to expire and its key to go")
    finally:
        for m in members:
            m.stop()


def test_jwt_tokens(tmp_path: Path) -> None:
    key = rsa.generate_private_key(65537, 2048)
    priv, pub = tmp_path / "jwt.key", tmp_path / "jwt.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    spec = f"jwt,pub-key={pub},priv-key={priv},sign-method=RS256,ttl=10m"
    m = petcd_server(tmp_path, extra=["--bcrypt-cost", "4", "--auth-token", spec]).start()
    try:
        setup_auth(m)
        auth, kv, _ = stubs(m)
        alice = login(m, "alice", "apw")
        assert alice[0][1].count(".") == 2  # header.claims.signature
        kv.Put(R.PutRequest(key=b"a/j", value=b"v"), metadata=alice, timeout=20)
        tampered = [("token", alice[0][1][:-6] + "AAAAAA")]
        assert denied(kv.Put, R.PutRequest(key=b"a/j", value=b"v"), metadata=tampered, timeout=20) \
            == grpc.StatusCode.UNAUTHENTICATED
        # any auth change makes a JWT's revision old: the client must log in again
        root = login(m, "root", "rootpw")
        auth.RoleAdd(R.AuthRoleAddRequest(name="later"), metadata=root, timeout=20)
        with pytest.raises(grpc.RpcError) as ei:
            kv.Put(R.PutRequest(key=b"a/j", value=b"v"), metadata=alice, timeout=20)
        assert (ei.value.code(), ei.value.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: revision of auth store is old")
        kv.Put(R.PutRequest(key=b"a/j", value=b"v2"), metadata=login(m, "alice", "apw"), timeout=20)
    finally:
        m.stop()
