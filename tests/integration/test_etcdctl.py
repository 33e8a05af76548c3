"""The real etcdctl against petcd, with real etcd as the oracle: every
command runs against both, in the same order, and the outputs must match
(after removing what legitimately differs: cluster and member ids, raft
terms, database sizes)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from petcd.testing.harness import Server, etcdctl

pytestmark = pytest.mark.timeout(300)

_IDS = ("cluster_id", "member_id", "raft_term")


def _normalize(out: str) -> str:
    """Strip the fields that differ between any two clusters."""
    try:
        doc = json.loads(out)
    except ValueError:
        return out
    return json.dumps(_strip(doc), sort_keys=True)


def _strip(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _strip(v) for k, v in doc.items() if k not in _IDS}
    if isinstance(doc, list):
        return [_strip(v) for v in doc]
    return doc


class Both:
    def __init__(self, petcd: Server, etcd: Server) -> None:
        self.p = petcd
        self.e = etcd

    def run(self, *args: str, stdin: str | None = None) -> str:
        """Run on both; same exit status, same (normalized) output; petcd's output."""
        cp = etcdctl(self.p.endpoint, *args, stdin=stdin, check=False)
        ce = etcdctl(self.e.endpoint, *args, stdin=stdin, check=False)
        assert cp.returncode == ce.returncode, (args, cp.stderr, ce.stderr)
        assert _normalize(cp.stdout) == _normalize(ce.stdout), (args, cp.stdout, ce.stdout)
        if ce.returncode != 0:
            assert _errline(cp.stderr) == _errline(ce.stderr), (args, cp.stderr, ce.stderr)
        return cp.stdout


def _errline(stderr: str) -> str:
    # etcdctl prefixes errors with a timestamp on some paths
    lines = [re.sub(r"^\{.*?\}\s*", "", ln) for ln in stderr.strip().splitlines() if "Error" in ln]
    return lines[-1] if lines else stderr.strip()


@pytest.fixture(scope="module")
def both(petcd: Server, etcd: Server) -> Both:
    return Both(petcd, etcd)


def test_put_and_get_with_every_option(both: Both) -> None:
    for k, v in [("a", "1"), ("b", "22"), ("b/1", "x"), ("b/2", "yy"), ("c", "3"), ("b/1", "x2"), ("d", "0")]:
        assert both.run("put", k, v).strip() == "OK"
    both.run("get", "a")
    both.run("get", "b", "--prefix")
    both.run("get", "b", "--from-key")
    both.run("get", "b", "--prefix", "--limit", "2")
    for target in ("KEY", "VERSION", "CREATE", "MODIFY", "VALUE"):
        for order in ("ASCEND", "DESCEND"):
            both.run("get", "a", "--from-key", "--sort-by", target, "--order", order, "--limit", "3")
    both.run("get", "b", "--prefix", "--keys-only")
    both.run("get", "b", "--prefix", "--print-value-only")
    both.run("get", "a", "--from-key", "-w", "json")
    both.run("get", "b/1", "--rev", "4", "-w", "json")
    both.run("get", "zzz-missing")
    out = both.run("put", "a", "new", "--prev-kv")
    assert "1" in out


def test_get_errors_match(both: Both) -> None:
    both.run("get", "a", "--rev", "100000")  # a future revision
    both.run("get", "")  # no key


def test_delete_with_prefix_prev_kv_and_from_key(both: Both) -> None:
    for k in ("del/1", "del/2", "del/3", "dz"):
        both.run("put", k, "v")
    assert both.run("del", "del/", "--prefix", "--prev-kv").startswith("3")
    both.run("del", "nothing-here")
    both.run("put", "zz1", "v")
    both.run("del", "zz", "--from-key")
    both.run("get", "", "--from-key", "-w", "json")


def test_interactive_txn(both: Both) -> None:
    both.run("put", "t/key", "old")
    txn = 'value("t/key") = "old"\n\nput t/key new\nget t/key\n\nput t/other failed\n\n'
    out = both.run("txn", stdin=txn)
    assert "SUCCESS" in out
    out = both.run("txn", stdin=txn)
    assert "FAILURE" in out
    both.run("txn", "-w", "json", stdin='mod("t/key") > "0"\n\nget t/key\n\n\n')


def test_compaction_and_reads_below_it(both: Both) -> None:
    for i in range(5):
        both.run("put", "comp", str(i))
    status = json.loads(both.run("get", "comp", "-w", "json"))
    rev = status["header"]["revision"]
    assert both.run("compaction", str(rev - 2)).strip() == f"compacted revision {rev - 2}"
    both.run("get", "comp", "--rev", str(rev - 3))  # compacted: same error on both
    both.run("get", "comp", "--rev", str(rev - 2), "-w", "json")
    both.run("compaction", str(rev - 3))  # already compacted
    both.run("compaction", "--physical", str(rev - 1))


def test_endpoint_status_health_member_list_alarms_defrag(petcd: Server, both: Both) -> None:
    st = json.loads(etcdctl(petcd.endpoint, "endpoint", "status", "-w", "json").stdout)[0]["Status"]
    assert st["version"] == "3.4.23"
    assert st["leader"] == st["header"]["member_id"] and st["raftIndex"] > 0 and st["dbSize"] > 0
    assert st["raftTerm"] >= 2
    table = etcdctl(petcd.endpoint, "endpoint", "status", "-w", "table").stdout
    assert petcd.endpoint in table and "3.4.23" in table
    assert "is healthy" in etcdctl(petcd.endpoint, "endpoint", "health").stderr + \
        etcdctl(petcd.endpoint, "endpoint", "health").stdout
    health = json.loads(etcdctl(petcd.endpoint, "endpoint", "health", "-w", "json").stdout)
    assert health[0]["health"] is True
    members = json.loads(etcdctl(petcd.endpoint, "member", "list", "-w", "json").stdout)["members"]
    assert [m["name"] for m in members] == ["default"] and members[0]["clientURLs"] == [petcd.client_url]
    both.run("alarm", "list")
    out = etcdctl(petcd.endpoint, "defrag").stdout
    assert "Finished defragmenting etcd member" in out
    both.run("get", "a", "--from-key", "--keys-only")  # nothing lost by the defrag
