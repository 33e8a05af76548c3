"""Auth's cost: put@64 and range-s@64 on one member without auth, then with
auth enabled and the load running as a user with a simple token (readwrite
on the load's prefix), for petcd and for real etcd; prints each figure, the
with/without ratio per server (issue 13 asks petcd for at least 0.8), and
petcd/etcd. A benchmark, never a test: figures move from run to run.

    python3 bench/auth_bench.py [--duration 10] [--keys 10000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import load  # noqa: E402
from bench.load import Workload  # noqa: E402
from bench.servers import KINDS, one_member, stop_on_sigterm  # noqa: E402
from petcd.proto import auth_pb2, rpc_pb2, rpc_pb2_grpc  # noqa: E402
from petcd.testing.harness import Server  # noqa: E402

WORKLOADS = [Workload("put64", "put", 64, 8, "ops/s"), Workload("range-s64", "range-s", 64, 8, "ops/s")]
USER = "bench:benchpw"


def enable_auth(server: Server) -> None:
    """root, and user bench with readwrite on the load's prefix; auth on."""
    auth = rpc_pb2_grpc.AuthStub(server.channel())
    R = rpc_pb2
    P = auth_pb2.Permission
    auth.UserAdd(R.AuthUserAddRequest(name="root", password="rootpw"), timeout=30)
    auth.UserGrantRole(R.AuthUserGrantRoleRequest(user="root", role="root"), timeout=30)
    auth.RoleAdd(R.AuthRoleAddRequest(name="load"), timeout=30)
    auth.RoleGrantPermission(R.AuthRoleGrantPermissionRequest(
        name="load", perm=P(permType=P.READWRITE, key=b"loadgen/", range_end=b"loadgen0")), timeout=30)
    auth.UserAdd(R.AuthUserAddRequest(name="bench", password="benchpw"), timeout=30)
    auth.UserGrantRole(R.AuthUserGrantRoleRequest(user="bench", role="load"), timeout=30)
    auth.AuthEnable(R.AuthEnableRequest(), timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per workload and setting")
    ap.add_argument("--keys", type=int, default=10_000, help="key-space size, filled first")
    ap.add_argument("--loadgen", type=Path, help="a built load generator (default: build into the cache)")
    args = ap.parse_args()
    stop_on_sigterm()
    binary = args.loadgen or load.loadgen_binary()
    figures: dict[tuple[str, str, bool], float] = {}
    with tempfile.TemporaryDirectory(prefix="petcd-auth-bench-") as tmp:
        for kind in KINDS:
            with one_member(kind, Path(tmp)) as server:
                load.fill(binary, server.endpoint, args.keys)
                for w in WORKLOADS:
                    figures[(kind, w.name, False)] = load.run(binary, server.endpoint, w, args.duration,
                                                              args.keys)["ops/s"]
                enable_auth(server)
                for w in WORKLOADS:
                    figures[(kind, w.name, True)] = load.run(binary, server.endpoint, w, args.duration, args.keys,
                                                             user=USER)["ops/s"]
    print(f"one member, {args.duration:g} s per workload; ops/s")
    print(f"{'workload':<11}{'server':<7}{'no auth':>10}{'auth':>10}{'auth/no':>9}")
    for w in WORKLOADS:
        for kind in KINDS:
            off, on = figures[(kind, w.name, False)], figures[(kind, w.name, True)]
            print(f"{w.name:<11}{kind:<7}{off:>10.0f}{on:>10.0f}{on / off:>9.2f}")
        print(f"{'':<11}{'petcd/etcd with auth':<27}"
              f"{figures[('petcd', w.name, True)] / figures[('etcd', w.name, True)]:>9.2f}")


if __name__ == "__main__":
    main()
