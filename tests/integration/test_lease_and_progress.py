"""Leases across a restart, and watch progress notifications at the
configured interval."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from petcd.proto import rpc_pb2, rpc_pb2_grpc
from petcd.testing.harness import petcd_server, wait_for
from tests.integration.test_watch_guarantees import WatchStream

pytestmark = pytest.mark.timeout(300)


def test_leases_and_their_keys_survive_a_restart_with_a_renewed_ttl(tmp_path: Path) -> None:
    server = petcd_server(tmp_path).start()
    try:
        lease = rpc_pb2_grpc.LeaseStub(server.channel())
        g = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), timeout=30)
        server.kv().Put(rpc_pb2.PutRequest(key=b"leased", value=b"v", lease=g.ID), timeout=30)
        server.stop()
        server.start()
        lease = rpc_pb2_grpc.LeaseStub(server.channel())
        ttl = lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=g.ID, keys=True), timeout=30)
        assert ttl.grantedTTL == 30 and ttl.TTL >= 28 and list(ttl.keys) == [b"leased"]
        assert [s.ID for s in lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest(), timeout=30).leases] == [g.ID]
        lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=g.ID), timeout=30)
        assert not server.kv().Range(rpc_pb2.RangeRequest(key=b"leased"), timeout=30).kvs
        with pytest.raises(grpc.RpcError) as err:
            lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=g.ID), timeout=30)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert err.value.details() == "etcdserver: requested lease not found"
    finally:
        server.stop()


def test_progress_notifications_arrive_at_the_configured_interval(tmp_path: Path) -> None:
    server = petcd_server(tmp_path, extra=["--experimental-watch-progress-notify-interval", "1s"]).start()
    try:
        rev = server.kv().Put(rpc_pb2.PutRequest(key=b"p", value=b"v"), timeout=30).header.revision
        w = WatchStream(server.channel())
        w.requests.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"q", progress_notify=True)))

        def progress() -> list[rpc_pb2.WatchResponse]:
            with w.lock:
                return [r for r in w.responses if not r.created and not r.events and r.header.revision >= rev]

        got = wait_for(progress, 30, "a progress notification")
        assert got[0].watch_id == w.created()[0].watch_id
        # and one on request, with watch id -1 as etcd 3.4 sends it
        w.requests.put(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
        wait_for(lambda: any(r.watch_id == -1 for r in progress()), 30, "a requested progress notification")
        w.close()
    finally:
        server.stop()
