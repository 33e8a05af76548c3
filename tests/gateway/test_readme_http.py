"""The README's curl examples, run as printed against a petcd member (its
client URL in place of localhost:2379)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def examples() -> list[tuple[str, str]]:
    """(command, comment) for each line of the HTTP section's sh block."""
    text = README.read_text()
    section = text.split("## Over HTTP", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    out = []
    for line in block.splitlines():
        cmd, _, comment = line.partition("  #")
        out.append((cmd.strip(), comment.strip()))
    return out


def test_curl_examples(petcd_gw: str) -> None:
    hostport = petcd_gw.removeprefix("http://")
    for cmd, comment in examples():
        if cmd.endswith("&"):  # the watch: streams until stopped; covered by the watch tests
            cmd = cmd.removesuffix("&").replace("curl -s -N", "curl -s -N -m 2")
        cmd = cmd.replace("localhost:2379", hostport)
        cp = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60)
        assert cp.stdout, (cmd, cp.stderr)
        if comment.startswith("{"):  # a literal answer
            assert cp.stdout.strip() == comment.split(" (")[0], (cmd, cp.stdout)
        for quoted in re.findall(r'"(\w+)":', comment):
            assert f'"{quoted}"' in cp.stdout, (cmd, cp.stdout)
