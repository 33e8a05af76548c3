"""Client differential tests' common part: the same client driver run
against a fresh petcd and a fresh real etcd at once, and the transcripts'
difference shown as a diff (etcd's lines first)."""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from petcd.testing.harness import Server, etcd_server, petcd_server, require_binary

T = TypeVar("T")


def start(kind: str, tmp: Path) -> Server:
    """A fresh one-member petcd or etcd ("petcd" or "etcd") in tmp/kind."""
    d = tmp / kind
    d.mkdir()
    return (petcd_server(d) if kind == "petcd" else etcd_server(d)).start()


def on_both(tmp: Path, run: Callable[[Server], T]) -> tuple[T, T]:
    """run(server) on a fresh petcd and a fresh etcd, both started and
    driven at once; (petcd's result, etcd's). Both are stopped after."""
    require_binary("etcd")
    servers: list[Server] = []
    try:
        with ThreadPoolExecutor(2) as pool:
            servers = list(pool.map(lambda kind: start(kind, tmp), ["petcd", "etcd"]))
            petcd_t, etcd_t = pool.map(run, servers)
    finally:
        for s in servers:
            s.stop()
    return petcd_t, etcd_t


def transcript_diff(etcd_t: list[Any], petcd_t: list[Any]) -> str:
    """A unified diff of two transcripts, one JSON step per line."""
    return "\n".join(difflib.unified_diff([json.dumps(s) for s in etcd_t], [json.dumps(s) for s in petcd_t],
                                          "etcd", "petcd", lineterm="", n=1))
