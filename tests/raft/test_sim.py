"""The cluster simulator: many seeds of faults with the safety checks on,
determinism, and proof that the checks can fail."""

from __future__ import annotations

import logging

import pytest

from petcd.raft import Entry
from petcd.raft.sim import SafetyViolation, Simulation, main, run_seed

CHUNK = 25


@pytest.fixture(autouse=True)
def _quiet_raft() -> None:
    logging.getLogger("petcd.raft").setLevel(logging.ERROR)


@pytest.mark.parametrize("chunk", range(12))
def test_seeds_keep_every_safety_property_and_recover(chunk: int) -> None:
    # 12 chunks of 25 seeds: 300 seeds, 3 and 5 nodes alternating
    for seed in range(chunk * CHUNK, (chunk + 1) * CHUNK):
        run_seed(seed, nodes=3 if seed % 2 == 0 else 5, steps=3000)


def test_the_same_seed_replays_the_same_run() -> None:
    a = run_seed(1234, nodes=5, steps=1500)
    b = run_seed(1234, nodes=5, steps=1500)
    assert a.trace == b.trace and a.applied == b.applied and a.leaders == b.leaders
    assert len(a.applied) > 10  # the run did make progress


def test_the_checks_catch_a_broken_invariant() -> None:
    sim = Simulation(1, 3, 10)
    node1, node2 = sim.nodes[1], sim.nodes[2]
    sim._check_applied(node1, Entry(term=1, index=7, data=b"x"))
    with pytest.raises(SafetyViolation, match="state machine safety"):
        sim._check_applied(node2, Entry(term=1, index=7, data=b"y"))
    sim._check_log_entry(node1, Entry(term=2, index=9, data=b"a"), node1.durable)
    with pytest.raises(SafetyViolation, match="log matching"):
        sim._check_log_entry(node2, Entry(term=2, index=9, data=b"b"), node2.durable)
    sim.leaders[5] = 3
    node1.raw.raft.term = 5  # type: ignore[union-attr]
    node1.raw.raft.state = node1.raw.raft.state.Leader  # type: ignore[union-attr]
    with pytest.raises(SafetyViolation, match="election safety"):
        sim.check()


def test_the_checks_catch_a_lost_committed_proposal() -> None:
    sim = run_seed(3, nodes=3, steps=400)
    node = max(sim.nodes.values(), key=lambda n: len(n.applied))
    assert node.applied, "the run committed proposals"
    sim.check_state_machine(node)
    lost = min(node.applied)
    del node.applied[lost]
    with pytest.raises(SafetyViolation, match=rf"lacks committed proposals at \[{lost}\]"):
        sim.check_state_machine(node)


def test_the_command_line_runs_seeds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "2", "--start", "7", "--steps", "500"]) == 0
    assert "2/2 seeds passed" in capsys.readouterr().out
