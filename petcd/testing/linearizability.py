"""A linearizability checker for key-value histories (Wing & Gong's search, memoized as in Porcupine).

A history is a list of client operations, each with the time it was invoked and
the time its response arrived. The history is linearizable if every operation
can be given a single instant between its invocation and its response such that
executing the operations one at a time, in the order of those instants, against
a plain sequential key-value map yields exactly the responses the clients saw.

The model is one register per key, and operations on different keys are
independent, so the history is split per key and each part is checked alone
(P-compositionality); a history is linearizable iff every key's part is.

Per key, the search is Wing & Gong's depth-first search over a doubly linked
list of call/return events: repeatedly pick an operation whose call precedes
every pending return, apply it to the model, and remove its events from the list;
reaching a return whose operation has not been placed means the current prefix
is wrong, so undo the last choice. Lowe's memoization prunes prefixes already
seen: a configuration is the set of placed operations (a bitset) plus the model
state, and a configuration is never searched twice.

Operations whose outcome is unknown (the client timed out or lost the
connection, so the write may or may not have happened, possibly long after the
client gave up) have no return event: they may be placed at any point after their
call, or never. They are tried only after every operation with a known outcome
has been tried at a point of the search, and a configuration that differs from
an already searched one only by having placed more such optional operations is
pruned (whatever the larger one can do, the smaller one can too). That keeps a
history with many timeouts from exploding. A read whose outcome is unknown
constrains nothing and is dropped.

Guarantees: ``check`` returns ``ok=True`` exactly when a linearization exists
(the search is exhaustive), unless ``max_steps`` is given and exhausted, in
which case it raises ``CheckTimeout`` rather than guess.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

Value = str | bytes | None
"""A key's value in the model; ``None`` means the key is absent."""

KINDS = ("put", "get", "delete", "cas")

_PUT, _GET, _DELETE, _CAS = 0, 1, 2, 3
_KIND_CODE = {"put": _PUT, "get": _GET, "delete": _DELETE, "cas": _CAS}
_NO_RUN = object()  # marks "no run of optional ops ends here"


class HistoryError(ValueError):
    """The history is malformed (unknown kind, response before invocation, wrong output type...)."""


class CheckTimeout(Exception):
    """The search used up its ``max_steps`` budget before reaching an answer."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Op:
    """One client operation on one key, as a client observed it.

    kind: ``"put"`` (set ``value``), ``"get"``, ``"delete"``, or ``"cas"`` (set
    ``value`` if the key's current value equals ``expected``; ``expected=None``
    means "the key must be absent").
    output: what the client saw. get: the value read, or ``None`` for an absent
    key. cas: ``True``/``False`` (swapped or not). put: ignored. delete: ``None``
    (not checked) or the number of keys deleted (0 or 1; a bool works too).
    call: invocation time. ret: response time, or ``None`` when the outcome is
    unknown (timeout, connection lost); such an operation may have taken effect
    at any time after ``call``, or never.
    An operation that failed with a definite error (nothing happened) must be
    left out of the history.
    """

    client: int
    kind: str
    key: str
    call: float
    ret: float | None
    value: Value = None
    expected: Value = None
    output: object = None

    @property
    def unknown(self) -> bool:
        """True when the client never learned the outcome."""
        return self.ret is None

    def describe(self) -> str:
        """A one-line human description, used in failure explanations."""
        if self.kind == "put":
            body = f"put({self.key!r}, {self.value!r})"
        elif self.kind == "get":
            body = f"get({self.key!r}) -> {self.output!r}"
        elif self.kind == "delete":
            body = f"delete({self.key!r})" + ("" if self.output is None else f" -> {self.output!r}")
        else:
            body = f"cas({self.key!r}, {self.expected!r} => {self.value!r})"
            if not self.unknown:
                body += f" -> {self.output!r}"
        ret = "?" if self.ret is None else f"{self.ret:g}"
        return f"client {self.client}: {body} [{self.call:g}, {ret}]"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict. ``key`` names the first (in sorted order) key whose history is not linearizable."""

    ok: bool
    key: str | None = None
    explanation: str = ""

    def __bool__(self) -> bool:
        return self.ok


def check(
    history: Iterable[Op], *, initial: Mapping[str, Value] | None = None, max_steps: int | None = None
) -> CheckResult:
    """Decide whether ``history`` is linearizable for a key-value map.

    ``initial`` gives keys' values before the history starts (absent by default).
    ``max_steps`` bounds the search per key; ``CheckTimeout`` is raised when it is used up.
    """
    by_key: dict[str, list[Op]] = {}
    for op in history:
        by_key.setdefault(op.key, []).append(op)
    init = initial or {}
    for key in sorted(by_key):
        why = _check_one(key, by_key[key], init.get(key), max_steps)
        if why is not None:
            return CheckResult(False, key, why)
    return CheckResult(True, None, f"linearizable ({len(by_key)} keys)")


def check_key(
    ops: Iterable[Op], *, initial: Value = None, max_steps: int | None = None
) -> CheckResult:
    """Check the operations of a single key (all ``ops`` must share one key)."""
    ops = list(ops)
    keys = {op.key for op in ops}
    if len(keys) > 1:
        raise HistoryError(f"check_key given several keys: {sorted(keys)!r}")
    key = ops[0].key if ops else ""
    why = _check_one(key, ops, initial, max_steps)
    return CheckResult(why is None, None if why is None else key, why or "linearizable")


class _Node:
    """An event in the search's linked lists: an operation's call or return."""

    __slots__ = ("op", "time", "is_call", "match", "prev", "next")

    def __init__(self, op: int, time: float, is_call: bool) -> None:
        self.op = op
        self.time = time
        self.is_call = is_call
        self.match: _Node | None = None  # a known call's return event
        self.prev: _Node | None = None
        self.next: _Node | None = None


def _validate(op: Op) -> None:
    if op.kind not in _KIND_CODE:
        raise HistoryError(f"unknown op kind {op.kind!r} in {op!r}")
    if not isinstance(op.call, int | float) or math.isnan(op.call):
        raise HistoryError(f"bad call time in {op!r}")
    if op.ret is not None and (math.isnan(op.ret) or op.ret < op.call):
        raise HistoryError(f"response before invocation in {op!r}")
    if op.kind == "cas" and op.ret is not None and not isinstance(op.output, bool):
        raise HistoryError(f"cas output must be a bool: {op!r}")
    if op.kind == "delete" and op.output is not None and op.output not in (0, 1):
        raise HistoryError(f"delete output must be None, 0 or 1: {op!r}")


def _link(nodes: list[_Node]) -> _Node:
    head = _Node(-1, -math.inf, False)
    prev = head
    for n in nodes:
        prev.next = n
        n.prev = prev
        prev = n
    return head


def _check_one(key: str, raw: list[Op], initial: Value, max_steps: int | None) -> str | None:
    """Search one key's history; None when linearizable, else an explanation."""
    ops: list[Op] = []
    for op in raw:
        _validate(op)
        if op.kind == "get" and op.ret is None:
            continue  # an unanswered read constrains nothing
        ops.append(op)
    kind = [_KIND_CODE[op.kind] for op in ops]
    val = [op.value for op in ops]
    exp = [op.expected for op in ops]
    out = [op.output for op in ops]
    known = [op.ret is not None for op in ops]

    main_nodes: list[_Node] = []
    unknown_nodes: list[_Node] = []
    for i, op in enumerate(ops):
        c = _Node(i, float(op.call), True)
        if op.ret is None:
            unknown_nodes.append(c)
        else:
            r = _Node(i, float(op.ret), False)
            c.match = r
            main_nodes.append(c)
            main_nodes.append(r)
    # At equal times calls sort before returns: touching intervals count as concurrent
    # (the lenient reading, so coarse client clocks cannot produce false alarms).
    main_nodes.sort(key=lambda e: (e.time, not e.is_call, e.op))
    unknown_nodes.sort(key=lambda e: (e.time, e.op))
    head = _link(main_nodes)
    uhead = _link(unknown_nodes)
    known_left = sum(known)
    if known_left == 0:
        return None

    def apply(i: int, state: Value) -> tuple[bool, Value]:
        """The sequential model: may op i run in ``state``, and what state follows."""
        k = kind[i]
        if k == _PUT:
            return True, val[i]
        if k == _GET:
            return out[i] == state, state
        if k == _DELETE:
            o = out[i]
            return (o is None or bool(o) == (state is not None)), None
        if state == exp[i]:
            return (out[i] is not False) if known[i] else True, val[i]
        return (out[i] is not True) if known[i] else True, state

    state: Value = initial
    lin = 0  # bitset of placed operations
    # Search stack frames: (call node, state before it, pending-return time for an optional op or
    # None for a known one, base state of the run of optional ops ending here or _NO_RUN).
    stack: list[tuple[_Node, Value, float | None, object]] = []
    placed_unknown: list[int] = []
    seen: set[tuple[int, Value]] = {(0, state)}
    steps = 0
    best_depth = -1
    best: tuple[int, Value, list[int]] = (-1, None, [])

    def enter(i: int, new: Value) -> bool:
        """Whether the configuration reached by placing op i is new (and record it)."""
        nlin = lin | (1 << i)
        cfg = (nlin, new)
        if cfg in seen:
            return False
        seen.add(cfg)
        # Dominance: the same configuration minus an optional op was already searched (or is an
        # ancestor being searched); anything this one can still do, that one can too. Checking
        # the latest few optional ops catches the cases that matter and keeps this cheap.
        for u in placed_unknown[-4:]:
            if (nlin ^ (1 << u), new) in seen:
                return False
        return known[i] or (lin, new) not in seen

    # How many unplaced optional cas ops expect each value: a write of that value may be the
    # first link of a chain of optional ops.
    cas_expects: dict[Value, int] = {}
    for u in unknown_nodes:
        if kind[u.op] == _CAS:
            cas_expects[exp[u.op]] = cas_expects.get(exp[u.op], 0) + 1

    def wanted() -> tuple[set[Value], list[Value], bool]:
        """What values would let a known op that is callable now, but blocked by ``state``, run.

        Returns (exact values, "any value but one of these", "any present value").
        """
        exact: set[Value] = set()
        not_equal: list[Value] = []
        present = False
        e = head.next
        while e is not None and e.is_call:
            i = e.op
            k = kind[i]
            if k == _GET:
                if out[i] != state:
                    exact.add(out[i])  # type: ignore[arg-type]
            elif k == _CAS:
                if out[i] is True and state != exp[i]:
                    exact.add(exp[i])
                elif out[i] is False and state == exp[i]:
                    not_equal.append(exp[i])
            elif k == _DELETE and out[i] is not None and bool(out[i]) != (state is not None):
                if out[i]:
                    present = True
                else:
                    exact.add(None)
            e = e.next
        return exact, not_equal, present

    entry: _Node | None = head.next
    in_unknown = False
    r_time = 0.0
    uentry: _Node | None = None
    new: Value = None
    need: tuple[set[Value], list[Value], bool] = (set(), [], False)
    while True:
        steps += 1
        if max_steps is not None and steps > max_steps:
            raise CheckTimeout(f"key {key!r}: no verdict within {max_steps} search steps")
        if not in_unknown:
            assert entry is not None  # a known op is unplaced, so its return is still listed
            if entry.is_call:
                i = entry.op
                ok, new = apply(i, state)
                if ok and stack:
                    # Right after a run of optional ops, only a known op that could not run
                    # before that run is worth placing: otherwise the run can move after it
                    # (optional ops have no deadline), which an earlier branch already covers.
                    base = stack[-1][3]
                    if base is not _NO_RUN and apply(i, base)[0]:  # type: ignore[arg-type]
                        ok = False
                if ok and enter(i, new):
                    stack.append((entry, state, None, _NO_RUN))
                    state = new
                    lin |= 1 << i
                    ret_node = entry.match
                    assert entry.prev is not None and ret_node is not None and ret_node.prev is not None
                    entry.prev.next = entry.next
                    if entry.next is not None:
                        entry.next.prev = entry.prev
                    ret_node.prev.next = ret_node.next
                    if ret_node.next is not None:
                        ret_node.next.prev = ret_node.prev
                    known_left -= 1
                    if known_left == 0:
                        return None
                    entry = head.next
                else:
                    entry = entry.next
                continue
            # A return whose op is not placed: first try the optional (unknown-outcome) ops
            # that could have happened by now, then undo.
            depth = len(stack) - len(placed_unknown)
            if depth > best_depth:
                best_depth = depth
                best = (entry.op, state, [f[0].op for f in stack[-8:]])
            in_unknown = True
            r_time = entry.time
            uentry = uhead.next
            need = wanted()
        # Unknown phase: scan the optional ops whose call precedes the pending return. Right after
        # another optional op, a blind write (put/delete) is not worth trying: it would hide that
        # op's effect, so placing the blind write alone (keeping the other available) dominates.
        run_base: object = stack[-1][3] if stack else _NO_RUN
        after_unknown = run_base is not _NO_RUN
        # Only an op whose result unblocks a known op (or can feed an optional cas) is tried: an
        # optional op that helps nobody now can as well be placed later, or never.
        exact, not_equal, present = need
        while uentry is not None and uentry.time <= r_time:
            i = uentry.op
            if not (after_unknown and kind[i] != _CAS):
                steps += 1
                ok, new = apply(i, state)
                if (
                    ok
                    and new != state
                    and (
                        new in exact
                        or (present and new is not None)
                        or any(new != x for x in not_equal)
                        or cas_expects.get(new, 0) > 0
                    )
                    and enter(i, new)
                ):
                    break
            uentry = uentry.next
        if uentry is not None and uentry.time <= r_time:
            i = uentry.op
            stack.append((uentry, state, r_time, run_base if after_unknown else state))
            state = new
            lin |= 1 << i
            placed_unknown.append(i)
            if kind[i] == _CAS:
                cas_expects[exp[i]] -= 1
            assert uentry.prev is not None
            uentry.prev.next = uentry.next
            if uentry.next is not None:
                uentry.next.prev = uentry.prev
            in_unknown = False
            entry = head.next
            continue
        # Nothing fits before the pending return: undo the last choice.
        if not stack:
            return _explain(key, ops, initial, best_depth, best)
        node, state, rt, _ = stack.pop()
        i = node.op
        lin &= ~(1 << i)
        assert node.prev is not None
        if rt is None:
            ret_node = node.match
            assert ret_node is not None and ret_node.prev is not None
            ret_node.prev.next = ret_node
            if ret_node.next is not None:
                ret_node.next.prev = ret_node
            node.prev.next = node
            if node.next is not None:
                node.next.prev = node
            known_left += 1
            in_unknown = False
            entry = node.next
        else:
            placed_unknown.pop()
            if kind[i] == _CAS:
                cas_expects[exp[i]] += 1
            node.prev.next = node
            if node.next is not None:
                node.next.prev = node
            in_unknown = True
            r_time = rt
            uentry = node.next
            need = wanted()


def _explain(key: str, ops: list[Op], initial: Value, depth: int, best: tuple[int, Value, list[int]]) -> str:
    stuck, state, tail = best
    n_known = sum(1 for op in ops if op.ret is not None)
    lines = [
        f"key {key!r}: no linearization of its {len(ops)} operations exists "
        f"(initial value {initial!r}).",
        f"The deepest attempt placed {depth} of {n_known} completed operations; the value was then "
        f"{state!r} and this operation could not be placed before its response:",
        f"  {ops[stuck].describe()}",
    ]
    if tail:
        lines.append("The last operations placed in that attempt:")
        lines.extend(f"  {ops[i].describe()}" for i in tail)
    return "\n".join(lines)
