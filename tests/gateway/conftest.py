"""Fixtures: a petcd member whose client port serves the JSON gateway over
HTTP/1.1 next to gRPC, and real etcd 3.4 (the oracle)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from petcd.testing.harness import Server, etcd_server, petcd_server


@pytest.fixture(scope="module")
def module_tmp() -> Iterator[Path]:
    # Not pytest's tmp_path_factory: every pytest session (other suites on
    # the same machine too) prunes all but the three newest basetemp dirs,
    # under a test that runs long enough (Patroni's).
    d = Path(tempfile.mkdtemp(prefix="petcd-gateway-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def petcd_gw(module_tmp: Path) -> Iterator[str]:
    """The URL of a petcd member's client port (gRPC and HTTP/1.1)."""
    s = petcd_server(module_tmp).start()
    yield s.client_url
    s.stop()


@pytest.fixture(scope="module")
def etcd(module_tmp: Path) -> Iterator[Server]:
    s = etcd_server(module_tmp).start()
    yield s
    s.stop()
