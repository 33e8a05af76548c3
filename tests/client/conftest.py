"""Fixtures: fresh real servers (petcd and etcd) per test that needs them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from petcd.testing.harness import Server, etcd_server, petcd_server


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """start_server("petcd" | "etcd", extra_args): a fresh running server, stopped after the test."""
    started: list[Server] = []

    def start(kind: str, extra: list[str] | None = None) -> Server:
        d = tmp_path / f"{kind}{len(started)}"
        d.mkdir()
        s = petcd_server(d, extra=extra) if kind == "petcd" else etcd_server(d, extra=extra)
        started.append(s)
        return s.start()

    yield start
    for s in started:
        s.stop()


@pytest.fixture(params=["petcd", "etcd"])
def server(request: pytest.FixtureRequest, start_server: Callable[..., Server]) -> Server:
    """Each test using it runs against petcd and against real etcd."""
    return start_server(request.param)
