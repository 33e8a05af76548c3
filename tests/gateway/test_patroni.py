"""Patroni (Debian's package, PostgreSQL 15) with petcd as its etcd3 DCS,
through the JSON gateway: two members bootstrap a primary and a streaming
replica; killing the primary's Patroni hands the leadership to the replica
within the leader key's TTL."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from petcd.testing.harness import wait_for

from .patroni_cluster import PatroniMember, available

PRIMARY = ("master", "primary")
TTL = 20  # the bootstrap dcs ttl in patroni_cluster


@pytest.fixture
def patroni_root() -> Iterator[Path]:
    why = available()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    # a directory of our own (see conftest.module_tmp), that the postgres user can reach
    root = Path(tempfile.mkdtemp(prefix="petcd-patroni-"))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_patroni_bootstrap_and_failover(petcd_gw: str, patroni_root: Path) -> None:
    members = [PatroniMember(patroni_root / "pg", f"pg{i}", petcd_gw, "petcd-test") for i in range(2)]
    try:
        members[0].start()
        wait_for(lambda: members[0].role() in PRIMARY, 120, "the first member to bootstrap a primary")
        members[1].start()
        wait_for(lambda: members[1].role() == "replica", 120, "the second member to become a replica")
        st = members[1].status()
        assert st["xlog"].get("received_location", 0) > 0  # it streams from the primary

        members[0].kill_patroni()
        killed = time.monotonic()
        wait_for(lambda: members[1].role() in PRIMARY, TTL + 30, "the replica to take over")
        took = time.monotonic() - killed
        # the leader key's lease expires after TTL; Patroni acts within a loop or two
        assert took <= TTL + 10, took
    except BaseException:
        for m in members:
            print(f"--- {m.name} ---\n{m.log_tail()}")
        raise
    finally:
        for m in members:
            m.stop()
