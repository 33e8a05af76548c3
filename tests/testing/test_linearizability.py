"""The linearizability checker: verdicts on hand-built histories and on generated ones."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import pytest

from petcd.testing.linearizability import CheckResult, CheckTimeout, HistoryError, Op, Value, check, check_key


def put(c: int, key: str, value: str, call: float, ret: float | None) -> Op:
    return Op(client=c, kind="put", key=key, value=value, call=call, ret=ret)


def get(c: int, key: str, output: Value, call: float, ret: float | None) -> Op:
    return Op(client=c, kind="get", key=key, output=output, call=call, ret=ret)


def delete(c: int, key: str, call: float, ret: float | None, output: int | None = None) -> Op:
    return Op(client=c, kind="delete", key=key, output=output, call=call, ret=ret)


def cas(c: int, key: str, expected: Value, value: str, ok: bool | None, call: float, ret: float | None) -> Op:
    return Op(client=c, kind="cas", key=key, expected=expected, value=value, output=ok, call=call, ret=ret)


# ---- histories that are linearizable ----


def test_empty_history_is_linearizable() -> None:
    assert check([]).ok


def test_sequential_history_is_linearizable() -> None:
    h = [
        get(1, "k", None, 0, 1),
        put(1, "k", "a", 2, 3),
        get(2, "k", "a", 4, 5),
        cas(1, "k", "a", "b", True, 6, 7),
        cas(2, "k", "a", "c", False, 8, 9),
        get(1, "k", "b", 10, 11),
        delete(2, "k", 12, 13, output=1),
        delete(1, "k", 14, 15, output=0),
        get(2, "k", None, 16, 17),
    ]
    res = check(h)
    assert res == CheckResult(True, None, "linearizable (1 keys)", res.steps)


@pytest.mark.parametrize("observed", [None, "a"])
def test_read_concurrent_with_write_may_see_either_value(observed: Value) -> None:
    h = [put(1, "k", "a", 0, 10), get(2, "k", observed, 2, 5)]
    assert check(h).ok


def test_overlapping_writes_may_take_effect_in_either_order() -> None:
    h = [
        put(1, "k", "a", 0, 10),
        put(2, "k", "b", 1, 9),
        get(3, "k", "a", 11, 12),  # so "b" came first even though it was invoked later
    ]
    assert check(h).ok


def test_touching_intervals_count_as_concurrent() -> None:
    # The read is invoked at the very instant the write's response arrives.
    assert check([put(1, "k", "a", 0, 5), get(2, "k", None, 5, 6)]).ok


def test_cas_chain_is_linearizable() -> None:
    h = [put(0, "k", "0", 0, 1)]
    # Three clients race to bump the counter; exactly one wins each round, losers retry.
    t = 2.0
    for round_ in range(20):
        old, new = str(round_), str(round_ + 1)
        h.append(cas(1, "k", old, new, True, t, t + 3))
        h.append(cas(2, "k", old, new, False, t + 1, t + 4))
        h.append(cas(3, "k", old, new, False, t + 2, t + 5))
        t += 6
    h.append(get(1, "k", "20", t, t + 1))
    assert check(h).ok


def test_unknown_write_that_took_effect() -> None:
    h = [
        put(1, "k", "a", 0, 1),
        put(2, "k", "b", 2, None),  # timed out
        get(1, "k", "a", 3, 4),  # not yet applied ...
        get(1, "k", "b", 10, 11),  # ... but it was, later
        get(3, "k", "b", 100, 101),
    ]
    assert check(h).ok


def test_unknown_write_that_never_took_effect() -> None:
    h = [
        put(1, "k", "a", 0, 1),
        put(2, "k", "b", 2, None),
        get(1, "k", "a", 3, 4),
        get(1, "k", "a", 1000, 1001),
    ]
    assert check(h).ok


def test_unknown_cas_and_delete_may_or_may_not_apply() -> None:
    applied = [put(1, "k", "a", 0, 1), cas(2, "k", "a", "b", None, 2, None), get(1, "k", "b", 5, 6)]
    not_applied = [put(1, "k", "a", 0, 1), cas(2, "k", "a", "b", None, 2, None), get(1, "k", "a", 5, 6)]
    deleted = [put(1, "k", "a", 0, 1), delete(2, "k", 2, None), get(1, "k", None, 5, 6)]
    assert check(applied).ok and check(not_applied).ok and check(deleted).ok


def test_read_with_unknown_outcome_constrains_nothing() -> None:
    h = [put(1, "k", "a", 0, 1), get(2, "k", "never written", 2, None)]
    assert check(h).ok


def test_initial_values_are_honoured() -> None:
    h = [get(1, "k", "seed", 0, 1)]
    assert check(h, initial={"k": "seed"}).ok
    assert not check(h).ok


# ---- histories that are not ----


def test_stale_read_after_completed_write_is_rejected() -> None:
    h = [put(1, "k", "a", 0, 1), put(1, "k", "b", 2, 3), get(2, "k", "a", 4, 5)]
    res = check(h)
    assert not res.ok
    assert res.key == "k"
    assert "get('k') -> 'a'" in res.explanation


def test_read_of_a_value_never_written_is_rejected() -> None:
    h = [put(1, "k", "a", 0, 10), get(2, "k", "z", 1, 9)]
    assert not check(h).ok


def test_two_cas_from_the_same_expected_value_cannot_both_succeed() -> None:
    h = [
        put(1, "k", "0", 0, 1),
        cas(1, "k", "0", "x", True, 2, 10),
        cas(2, "k", "0", "y", True, 3, 9),
    ]
    assert not check(h).ok


def test_lost_write_observed_then_gone_is_rejected() -> None:
    h = [
        put(1, "k", "a", 0, 1),
        put(2, "k", "b", 2, 3),
        get(3, "k", "b", 4, 5),
        get(3, "k", "a", 6, 7),  # "b" vanished
    ]
    assert not check(h).ok


def test_lost_unknown_write_observed_then_gone_is_rejected() -> None:
    h = [
        put(1, "k", "a", 0, 1),
        put(2, "k", "b", 2, None),
        get(3, "k", "b", 4, 5),
        get(3, "k", "a", 6, 7),
    ]
    assert not check(h).ok


def test_delete_count_is_checked() -> None:
    assert not check([delete(1, "k", 0, 1, output=1)]).ok
    assert check([delete(1, "k", 0, 1, output=0)]).ok


def test_failing_key_is_named_and_others_pass() -> None:
    h = [
        put(1, "a", "1", 0, 1),
        get(1, "a", "1", 2, 3),
        put(1, "b", "1", 0, 1),
        get(1, "b", None, 2, 3),
        put(1, "c", "1", 0, 1),
    ]
    res = check(h)
    assert (res.ok, res.key) == (False, "b")
    assert not bool(res)


def test_check_key_rejects_mixed_keys() -> None:
    with pytest.raises(HistoryError):
        check_key([put(1, "a", "1", 0, 1), put(1, "b", "1", 0, 1)])


@pytest.mark.parametrize(
    "bad",
    [
        Op(client=1, kind="incr", key="k", call=0, ret=1),
        Op(client=1, kind="put", key="k", value="a", call=5, ret=1),
        Op(client=1, kind="cas", key="k", value="a", output="yes", call=0, ret=1),
        Op(client=1, kind="delete", key="k", output=7, call=0, ret=1),
    ],
)
def test_malformed_ops_are_refused(bad: Op) -> None:
    with pytest.raises(HistoryError):
        check([bad])


def test_search_budget_raises_instead_of_guessing() -> None:
    # Many concurrent writes and a read of a value nobody wrote: the search must try every order.
    h = [put(c, "k", f"v{c}", 0, 100) for c in range(12)] + [get(99, "k", "nobody", 0, 100)]
    with pytest.raises(CheckTimeout):
        check(h, max_steps=1000)


# ---- generated histories ----


@dataclass(slots=True)
class _InFlight:
    op: Op
    executed: bool = False
    output: object = None


def generate(
    rng: random.Random, n_ops: int, n_clients: int, keys: list[str], p_unknown: float = 0.0
) -> list[Op]:
    """A history of a real sequential store driven by concurrent clients.

    Each operation takes effect atomically at one instant between its invocation and its
    response (so the history is linearizable by construction). A timed-out operation
    (p_unknown) may take effect at any later instant, or never.
    """
    store: dict[str, str] = {}
    written: list[str | bytes] = []
    clients: list[_InFlight | None] = [None] * n_clients
    orphans: list[Op] = []  # timed out and not yet executed
    history: list[Op] = []
    issued = 0
    t = 0

    def execute(op: Op) -> object:
        cur = store.get(op.key)
        if op.kind == "put":
            assert isinstance(op.value, str)
            store[op.key] = op.value
            return None
        if op.kind == "get":
            return cur
        if op.kind == "delete":
            return 1 if store.pop(op.key, None) is not None else 0
        if cur == op.expected:
            assert isinstance(op.value, str)
            store[op.key] = op.value
            return True
        return False

    while issued < n_ops or any(clients):
        t += 1
        if orphans and rng.random() < 0.05:
            late = orphans.pop(rng.randrange(len(orphans)))
            if rng.random() < 0.5:
                execute(late)  # the timed-out write lands late; else it is lost for good
            continue
        c = rng.randrange(n_clients)
        slot = clients[c]
        if slot is None:
            if issued >= n_ops:
                continue
            issued += 1
            key = rng.choice(keys)
            r = rng.random()
            value = f"v{issued}"
            if r < 0.35:
                op = Op(client=c, kind="put", key=key, value=value, call=t, ret=None)
            elif r < 0.75:
                op = Op(client=c, kind="get", key=key, call=t, ret=None)
            elif r < 0.82:
                op = Op(client=c, kind="delete", key=key, call=t, ret=None)
            else:
                guess = store.get(key) if rng.random() < 0.6 or not written else rng.choice(written)
                op = Op(client=c, kind="cas", key=key, expected=guess, value=value, call=t, ret=None)
            if op.value is not None:
                written.append(op.value)
            clients[c] = _InFlight(op)
        elif rng.random() < p_unknown:
            # The client gives up: the outcome is unknown to it.
            if not slot.executed:
                orphans.append(slot.op)
            history.append(slot.op)
            clients[c] = None
        elif not slot.executed:
            slot.output = execute(slot.op)
            slot.executed = True
        else:
            history.append(replace(slot.op, output=slot.output, ret=t))
            clients[c] = None
    return history


def _never_written_corruptions(history: list[Op]) -> list[int]:
    return [i for i, op in enumerate(history) if op.kind == "get" and op.ret is not None]


def _stale_corruptions(history: list[Op]) -> list[tuple[int, str | bytes]]:
    """(index of a get, a value it provably cannot read).

    Value V is provably overwritten before get g when every op that could write V has
    responded before some definite overwrite w (a put/delete, or a successful cas, of
    something else) was invoked, and w responded before g was invoked.
    """
    out: list[tuple[int, str | bytes]] = []
    for gi, g in enumerate(history):
        if g.kind != "get" or g.ret is None:
            continue
        same_key = [op for op in history if op.key == g.key]
        overwrites = [
            w
            for w in same_key
            if w.ret is not None
            and w.ret < g.call
            and (w.kind in ("put", "delete") or (w.kind == "cas" and w.output is True))
        ]
        for v in sorted({op.value for op in same_key if op.kind == "put" and op.value is not None}):
            writers = [op for op in same_key if op.kind in ("put", "cas") and op.value == v]
            for w in overwrites:
                if w.value == v:
                    continue
                if all(x.ret is not None and x.ret < w.call for x in writers):
                    out.append((gi, v))
                    break
    return out


@pytest.mark.parametrize("seed", range(40))
def test_generated_histories_are_accepted_and_corrupted_reads_rejected(seed: int) -> None:
    rng = random.Random(seed)
    p_unknown = 0.0 if seed % 2 else 0.08
    history = generate(rng, 150, rng.randint(2, 6), ["a", "b", "c"], p_unknown)
    res = check(history)
    assert res.ok, res.explanation

    gi = rng.choice(_never_written_corruptions(history))
    bad = list(history)
    bad[gi] = replace(bad[gi], output="never-written")
    res = check(bad)
    assert not res.ok and res.key == history[gi].key

    stale = _stale_corruptions(history)
    if stale:
        gi, v = stale[rng.randrange(len(stale))]
        assert history[gi].output != v
        bad = list(history)
        bad[gi] = replace(bad[gi], output=v)
        res = check(bad)
        assert not res.ok and res.key == history[gi].key, (gi, v)


def test_generator_produces_observable_stale_corruptions() -> None:
    # Guards the test above against silently never exercising the stale-read case.
    found = 0
    for seed in range(40):
        rng = random.Random(seed)
        history = generate(rng, 150, rng.randint(2, 6), ["a", "b", "c"], 0.0 if seed % 2 else 0.08)
        found += bool(_stale_corruptions(history))
    assert found >= 30


@pytest.mark.parametrize("p_unknown", [0.0, 0.05])
def test_thousands_of_ops_on_one_key_need_a_linear_search(p_unknown: float) -> None:
    history = generate(random.Random(7), 3000, 5, ["k"], p_unknown)
    # Step budgets stand in for time limits (steps are machine-independent): a fixed multiple
    # of the history's size, i.e. the search stays linear. About 0.2 s each on this machine.
    budget = 100 * len(history)
    res = check(history, max_steps=budget)
    assert res.ok and res.steps > len(history) // 2
    gets = _never_written_corruptions(history)
    # Corrupting the last read forces the search to refute every prefix of the history; with
    # unknown-outcome ops that costs more, so corrupt a read early in the history there.
    gi = gets[-1] if p_unknown == 0.0 else gets[len(gets) // 10]
    bad = list(history)
    bad[gi] = replace(bad[gi], output="never-written")
    res = check(bad, max_steps=budget)
    assert not res.ok and "never-written" in res.explanation


# ---- agreement with brute force on small random histories ----


def _brute_force(history: list[Op]) -> bool:
    """Try every subset of unknown-outcome ops and every real-time-respecting order."""
    from itertools import combinations, permutations

    known = [op for op in history if op.ret is not None]
    unknown = [op for op in history if op.ret is None and op.kind != "get"]

    def runs(order: tuple[Op, ...]) -> bool:
        for a_i, a in enumerate(order):
            for b in order[a_i + 1 :]:
                if b.ret is not None and b.ret < a.call:
                    return False  # b finished before a started, yet comes after it
        state: Value = None
        for op in order:
            if op.kind == "put":
                state = op.value
            elif op.kind == "get":
                if op.output != state:
                    return False
            elif op.kind == "delete":
                if op.output is not None and op.ret is not None and bool(op.output) != (state is not None):
                    return False
                state = None
            elif state == op.expected:
                if op.ret is not None and op.output is False:
                    return False
                state = op.value
            elif op.ret is not None and op.output is True:
                return False
        return True

    for r in range(len(unknown) + 1):
        for chosen in combinations(unknown, r):
            if any(runs(order) for order in permutations(known + list(chosen))):
                return True
    return False


def _random_small_history(rng: random.Random, n_max: int = 7) -> list[Op]:
    values = ["x", "y", "z"]
    h: list[Op] = []
    for c in range(rng.randint(2, n_max)):
        call = float(rng.randint(0, 12))
        ret: float | None = None if rng.random() < 0.3 else call + rng.randint(0, 6)
        kind = rng.choice(["put", "get", "get", "delete", "cas"])
        if kind == "put":
            h.append(put(c, "k", rng.choice(values), call, ret))
        elif kind == "get":
            h.append(get(c, "k", rng.choice([None, *values]), call, ret))
        elif kind == "delete":
            h.append(delete(c, "k", call, ret, output=rng.choice([None, 0, 1])))
        else:
            ok = None if ret is None else rng.random() < 0.5
            h.append(cas(c, "k", rng.choice([None, *values]), rng.choice(values), ok, call, ret))
    return h


def test_verdicts_agree_with_brute_force_on_small_histories() -> None:
    rng = random.Random(2024)
    verdicts = {True: 0, False: 0}
    for _ in range(1500):
        h = _random_small_history(rng)
        expected = _brute_force(h)
        assert check(h).ok == expected, h
        verdicts[expected] += 1
    assert min(verdicts.values()) > 200  # both kinds were exercised
