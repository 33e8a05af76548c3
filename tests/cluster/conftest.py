"""A three-member petcd cluster of real processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from petcd.testing.harness import Server, petcd_cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[Server]]:
    members = petcd_cluster(tmp_path, 3)
    yield members
    for m in members:
        m.stop()
