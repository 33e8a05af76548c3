"""The servers a benchmark compares: real etcd, then petcd, each with the
same flags, fresh data in a temp dir, stopped when the caller is done."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from petcd.testing.harness import Server, etcd_server, petcd_server  # noqa: E402


def each_server() -> Iterator[tuple[str, Server]]:
    """Yields ("etcd", server) then ("petcd", server), each running."""
    with tempfile.TemporaryDirectory(prefix="petcd-bench-") as tmp:
        for kind in ("etcd", "petcd"):
            d = Path(tmp) / kind
            d.mkdir()
            server = etcd_server(d) if kind == "etcd" else petcd_server(d)
            server.start()
            try:
                yield kind, server
            finally:
                server.stop()
