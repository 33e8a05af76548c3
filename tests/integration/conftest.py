"""Fixtures: a petcd process and a real etcd process, fresh per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from petcd.testing.harness import Server, etcd_server, petcd_server


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="module")
def petcd(module_tmp: Path) -> Iterator[Server]:
    s = petcd_server(module_tmp).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def etcd(module_tmp: Path) -> Iterator[Server]:
    s = etcd_server(module_tmp).start()
    yield s
    s.stop()
