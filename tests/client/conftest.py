"""Fixtures: fresh real servers (petcd and etcd) per test that needs them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from petcd.testing.harness import Server, etcd_server, petcd_server


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[[str], Server]]:
    """start_server("petcd" | "etcd"): a fresh running server, stopped after the test."""
    started: list[Server] = []

    def start(kind: str) -> Server:
        d = tmp_path / f"{kind}{len(started)}"
        d.mkdir()
        s = petcd_server(d) if kind == "petcd" else etcd_server(d)
        started.append(s)
        return s.start()

    yield start
    for s in started:
        s.stop()


@pytest.fixture(params=["petcd", "etcd"])
def server(request: pytest.FixtureRequest, start_server: Callable[[str], Server]) -> Server:
    """Each test using it runs against petcd and against real etcd."""
    return start_server(request.param)
