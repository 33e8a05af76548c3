"""The Go load generator (bench/loadgen) as the benchmarks use it: built on
demand into a cache directory, run with a bounded duration, its result line
parsed into numbers.

The binary is cached under a name derived from a hash of its sources, so an
edit to bench/loadgen rebuilds it and an unchanged tree reuses it. The cache
is ``$PETCD_BENCH_CACHE``, else ``$XDG_CACHE_HOME/petcd-bench``, else
``~/.cache/petcd-bench``.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

LOADGEN_SRC = Path(__file__).resolve().parent / "loadgen"
BUILD_TIMEOUT = 900.0  # includes an apt-get install of Go and etcd's sources when missing
START_MARGIN = 120.0  # connecting, creating watchers, granting leases: beyond the timed part


class LoadgenError(RuntimeError):
    """The load generator could not be built, or a run failed or printed no result."""


def cache_dir() -> Path:
    """Where built load generators are kept (see the module docstring)."""
    if env := os.environ.get("PETCD_BENCH_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "petcd-bench"


def source_digest() -> str:
    """A hash over every file of bench/loadgen: the cache key of the binary."""
    h = hashlib.sha256()
    for f in sorted(p for p in LOADGEN_SRC.rglob("*") if p.is_file()):
        h.update(f.relative_to(LOADGEN_SRC).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def loadgen_binary(cache: Path | None = None) -> Path:
    """The path of a load generator built from the current sources, building
    it (with bench/loadgen/build.sh) when the cache has none."""
    target = (cache or cache_dir()) / f"loadgen-{source_digest()}"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        cp = subprocess.run(["bash", str(LOADGEN_SRC / "build.sh"), str(partial)],
                            capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        if cp.returncode != 0:
            raise LoadgenError(f"building the load generator failed ({cp.returncode}):\n{cp.stderr}{cp.stdout}")
        partial.replace(target)  # atomic: a concurrent run sees no half-written binary
    finally:
        partial.unlink(missing_ok=True)
    for old in target.parent.glob("loadgen-*"):
        if old != target and not old.name.endswith(".tmp"):
            old.unlink(missing_ok=True)  # built from sources that are gone
    return target


@dataclass(frozen=True)
class Workload:
    """One load: which op, how many workers on how many connections, and the
    figure of the result line it is judged by."""

    name: str
    op: str
    clients: int
    conns: int
    metric: str  # a key of the result line: "ops/s", "events/s" (higher is better) or "p50_ms" (lower)
    watchers: int = 0
    leases: int = 0

    @property
    def higher_is_better(self) -> bool:
        return not self.metric.endswith("_ms")


_PAIR = re.compile(r"([\w/]+)=([-\d.]+)\b")


def parse_result(line: str) -> dict[str, float]:
    """The numeric name=value pairs of a result line (op= is dropped)."""
    return {k: float(v) for k, v in _PAIR.findall(line)}


def run(binary: Path, endpoints: str, w: Workload, seconds: float, keys: int, val: int = 256,
        user: str = "") -> dict[str, float]:
    """Runs w for `seconds` against endpoints (comma-separated host:port) and
    returns its figures (as ``user``, "name:password", when given). Raises
    LoadgenError if it fails or overruns."""
    cmd = [str(binary), "-endpoints", endpoints, "-op", w.op, "-clients", str(w.clients), "-conns", str(w.conns),
           "-duration", f"{seconds}s", "-keys", str(keys), "-val", str(val)]
    if user:
        cmd += ["-user", user]
    if w.watchers:
        cmd += ["-watchers", str(w.watchers)]
    if w.leases:
        cmd += ["-leases", str(w.leases)]
    try:
        cp = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + START_MARGIN)
    except subprocess.TimeoutExpired as exc:  # subprocess.run has killed it
        raise LoadgenError(f"{w.name}: no result within {seconds + START_MARGIN:.0f}s") from exc
    lines = [ln for ln in cp.stdout.splitlines() if ln.startswith("op=")]
    if cp.returncode != 0 or not lines:
        raise LoadgenError(f"{w.name}: loadgen exited {cp.returncode}: {cp.stderr.strip()}")
    return parse_result(lines[-1])


def fill(binary: Path, endpoints: str, keys: int, val: int = 256) -> None:
    """Writes every key of the key space once, so that reads find values."""
    run(binary, endpoints, Workload("fill", "fill", 16, 4, "ops/s"), 300.0, keys, val)
