"""The README's "From Python" examples, run as they are written: each
python block against a fresh in-process member (its endpoint in place of
127.0.0.1:2379), and the pytest example through pytester."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from petcd.embed import Member

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]


def _blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## From Python", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


BLOCKS = _blocks()
SCRIPTS = [b for b in BLOCKS if not b.startswith("# test_")]
TESTS = [b for b in BLOCKS if b.startswith("# test_")]


def test_the_section_has_every_use_case() -> None:
    joined = "\n".join(BLOCKS)
    for needle in ("lease=lease", "watch(", "election(", "fencing_token", "stm(", "AsyncClient",
                   "petcd_client", "Member("):
        assert needle in joined
    assert len(SCRIPTS) >= 7 and len(TESTS) == 1


@pytest.fixture
def member() -> Iterator[Member]:
    with Member(unsafe_no_fsync=True) as m:
        yield m


@pytest.mark.parametrize("index", range(len(SCRIPTS)))
def test_example_runs(index: int, member: Member, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(SCRIPTS[index].replace("127.0.0.1:2379", member.endpoint))
    cp = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert cp.returncode == 0, cp.stderr


def test_pytest_example(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import entry_points

    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(test_inventory=TESTS[0])
    installed = any(ep.value == "petcd.embed.pytest_plugin" for ep in entry_points(group="pytest11"))
    args = [] if installed else ["-p", "petcd.embed.pytest_plugin"]
    pytester.runpytest_subprocess(*args, "-p", "no:cacheprovider").assert_outcomes(passed=2)
