"""--client-cert-auth: without a token, the common name of the client's
verified certificate is the user (etcd's AuthInfoFromTLS); a token, when
given, wins."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
import pytest

from petcd.proto import auth_pb2, rpc_pb2, rpc_pb2_grpc
from petcd.testing.certs import CA
from petcd.testing.harness import Server, free_port

R = rpc_pb2
P = auth_pb2.Permission


def test_certificate_common_name_is_the_user(tmp_path: Path) -> None:
    ca = CA(tmp_path / "pki")
    server_cert, alice = ca.issue("petcd", file_name="server"), ca.issue("alice", file_name="alice")
    tls_port, plain_port, peer = free_port(), free_port(), f"http://127.0.0.1:{free_port()}"
    https, http = f"https://127.0.0.1:{tls_port}", f"http://127.0.0.1:{plain_port}"
    args = [
        sys.executable, "-m", "petcd", "--name", "t", "--data-dir", str(tmp_path / "t.petcd"),
        "--listen-client-urls", f"{https},{http}", "--advertise-client-urls", https,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", f"t={peer}",
        "--cert-file", str(server_cert.cert), "--key-file", str(server_cert.key),
        "--trusted-ca-file", str(server_cert.ca), "--client-cert-auth", "--bcrypt-cost", "4",
    ]
    server = Server("petcd", args, tmp_path / "t.petcd", http, tmp_path / "t.log").start()
    tls = grpc.secure_channel(f"127.0.0.1:{tls_port}", grpc.ssl_channel_credentials(
        root_certificates=alice.ca.read_bytes(), private_key=alice.key.read_bytes(),
        certificate_chain=alice.cert.read_bytes()))
    try:
        auth = rpc_pb2_grpc.AuthStub(server.channel())
        auth.UserAdd(R.AuthUserAddRequest(name="root", password="rootpw"), timeout=30)
        auth.UserGrantRole(R.AuthUserGrantRoleRequest(user="root", role="root"), timeout=30)
        auth.RoleAdd(R.AuthRoleAddRequest(name="ra"), timeout=30)
        auth.RoleGrantPermission(R.AuthRoleGrantPermissionRequest(
            name="ra", perm=P(permType=P.READWRITE, key=b"a/", range_end=b"a0")), timeout=30)
        auth.UserAdd(R.AuthUserAddRequest(name="alice", password="apw"), timeout=30)
        auth.UserGrantRole(R.AuthUserGrantRoleRequest(user="alice", role="ra"), timeout=30)
        auth.AuthEnable(R.AuthEnableRequest(), timeout=30)
        kv = rpc_pb2_grpc.KVStub(tls)
        kv.Put(R.PutRequest(key=b"a/1", value=b"v"), timeout=30)  # as alice, by her certificate
        assert kv.Range(R.RangeRequest(key=b"a/1"), timeout=30).count == 1
        with pytest.raises(grpc.RpcError) as ei:
            kv.Put(R.PutRequest(key=b"b", value=b"v"), timeout=30)
        assert ei.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # over plain http there is no certificate: no user
        with pytest.raises(grpc.RpcError) as ei2:
            rpc_pb2_grpc.KVStub(server.channel()).Put(R.PutRequest(key=b"a/2", value=b"v"), timeout=30)
        assert ei2.value.details() == "etcdserver: user name is empty"
        # a token wins over the certificate
        root = auth.Authenticate(R.AuthenticateRequest(name="root", password="rootpw"), timeout=30).token
        kv.Put(R.PutRequest(key=b"b", value=b"v"), metadata=[("token", root)], timeout=30)
    finally:
        tls.close()
        server.stop()
