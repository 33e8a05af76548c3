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
call, or never. Left alone they make the search exponential, so they are tamed by
reductions that keep it exact:
- they are tried only after every op with a known outcome at a point, and only
  when the value they leave unblocks a callable known op (or feeds an optional
  cas); right after a run of them, only a known op that the run unblocked is
  placed (otherwise the run could as well happen later);
- optional ops with the same effect are interchangeable once invoked, so one per
  group is tried and the memo names the group's placed members canonically;
- a configuration is pruned when one with the same known ops, the same state and
  a subset of its optional ops placed was already searched (whatever the larger
  one can do the smaller one can too); puts of values nobody still looks for are
  counted rather than named, and such a value in the state becomes one token.
A read whose outcome is unknown constrains nothing and is dropped.

Cost: linear in the history for linearizable histories, even with many
timeouts (3,000 ops on one key with 5% unknown outcomes: ~0.2 s). Refuting a
history means refuting every prefix; that too is linear without unknown
outcomes, but with many of them and the anomaly late in a long single-key
history it can grow steeply, hence ``max_steps``.

Guarantees: ``check`` returns ``ok=True`` exactly when a linearization exists
(the search is exhaustive; tests compare it with brute force on small
histories), unless ``max_steps`` is given and exhausted, in which case it
raises ``CheckTimeout`` rather than guess.
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
_OPAQUE = object()  # stands for every value that no op compares against
_SKIP = object()  # "this configuration is not worth searching"


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
    steps: int = 0  # search steps spent (a machine-independent measure of the checker's work)

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
    total = 0
    for key in sorted(by_key):
        why, steps = _check_one(key, by_key[key], init.get(key), max_steps)
        total += steps
        if why is not None:
            return CheckResult(False, key, why, total)
    return CheckResult(True, None, f"linearizable ({len(by_key)} keys)", total)


def check_key(
    ops: Iterable[Op], *, initial: Value = None, max_steps: int | None = None
) -> CheckResult:
    """Check the operations of a single key (all ``ops`` must share one key)."""
    ops = list(ops)
    keys = {op.key for op in ops}
    if len(keys) > 1:
        raise HistoryError(f"check_key given several keys: {sorted(keys)!r}")
    key = ops[0].key if ops else ""
    why, steps = _check_one(key, ops, initial, max_steps)
    return CheckResult(why is None, None if why is None else key, why or "linearizable", steps)


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


def _check_one(key: str, raw: list[Op], initial: Value, max_steps: int | None) -> tuple[str | None, int]:
    """Search one key's history: (None when linearizable, else an explanation; search steps)."""
    ops: list[Op] = []
    for op in raw:
        _validate(op)
        if op.kind == "get" and op.ret is None:
            continue  # an unanswered read constrains nothing
        ops.append(op)
    known = [op.ret is not None for op in ops]
    if not any(known):
        return None, 0
    kind = [_KIND_CODE[op.kind] for op in ops]
    # Only values that some op compares against can be told apart; every other value written
    # behaves the same ("present, and not equal to anything anyone looks for"), so they all
    # become one token. That lets the memo merge configurations that differ only in such values.
    relevant: set[object] = {op.output for op in ops if op.kind == "get"}
    relevant.update(op.expected for op in ops if op.kind == "cas")

    def canon(v: Value) -> object:
        return v if v is None or v in relevant else _OPAQUE

    val = [canon(op.value) for op in ops]
    exp: list[object] = [op.expected for op in ops]
    out: list[object] = [op.output if k else None for op, k in zip(ops, known, strict=True)]
    # Which ops look for each value; once all of them are placed, the value is as good as any
    # other nobody looks for, and the state is replaced by the opaque token (more memo hits).
    lookers: dict[object, int] = {}
    for i, op in enumerate(ops):
        if op.kind == "cas" or (op.kind == "get" and op.ret is not None):
            v = op.expected if op.kind == "cas" else op.output
            lookers[v] = lookers.get(v, 0) | (1 << i)

    # Optional puts of a value that no unplaced known op looks for (and no optional cas ever
    # expects) are "dead": from then on, all such puts invoked so far are interchangeable, so
    # the memo counts how many were placed instead of which. ``dead`` is their bitset for the
    # current placed known ops, kept up to date as known lookers are placed and unplaced.
    looked_for: list[object] = [_NO_RUN] * len(ops)  # the value a known op looks for, if any
    waiting: dict[object, int] = {}  # value -> number of its known lookers not yet placed
    dead_puts: dict[object, int] = {}  # value -> bitset of optional puts writing it
    never_dead = {exp[i] for i, op in enumerate(ops) if op.kind == "cas" and op.ret is None}
    for i, op in enumerate(ops):
        if op.ret is not None and op.kind in ("get", "cas"):
            looked_for[i] = out[i] if op.kind == "get" else exp[i]
            waiting[looked_for[i]] = waiting.get(looked_for[i], 0) + 1
        elif op.ret is None and op.kind == "put" and val[i] not in never_dead:
            dead_puts[val[i]] = dead_puts.get(val[i], 0) | (1 << i)
    dead = 0
    for v, bits in dead_puts.items():
        if waiting.get(v, 0) == 0:
            dead |= bits

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
    # Optional ops with the same effect form a group and are interchangeable: every placed one
    # was invoked before the current pending return, so from then on any of them can stand in
    # for any other. Trying one per group at each point is enough, and the memo records a
    # group's placed members canonically as the first ones (in call order) of the group.
    group: list[object] = [
        ("w", None) if k == _DELETE else ("w", val[i]) if k == _PUT else ("c", exp[i], val[i])
        for i, k in enumerate(kind)
    ]
    members: dict[object, list[int]] = {}
    for u in unknown_nodes:
        members.setdefault(group[u.op], []).append(u.op)
    n_placed: dict[object, int] = dict.fromkeys(members, 0)

    def apply(i: int, state: object) -> tuple[bool, object]:
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
            return out[i] is not False, val[i]  # known: must say True; unknown (None): either
        return out[i] is not True, state

    state: object = canon(initial)
    klin = 0  # bitset of placed known operations
    ulin = 0  # canonical bitset of placed optional ops: the first n_placed[g] members of each group g
    # Search stack frames: (call node, state before it, for an optional op the pending-return
    # time and the groups already tried at that point (None for a known op), base state of the
    # run of optional ops ending at this frame or _NO_RUN).
    stack: list[tuple[_Node, object, tuple[float, set[object]] | None, object]] = []
    placed_unknown: list[int] = []
    # Memo: for each (placed known ops, state), the optional ops placed in configurations
    # already searched: (bitset of the live ones, number of dead puts).
    seen: dict[tuple[int, object], list[tuple[int, int]]] = {(0, state): [(0, 0)]}
    # How many unplaced optional cas ops expect each value: a write of that value may be the
    # first link of a chain of optional ops.
    cas_expects: dict[object, int] = {}
    for u in unknown_nodes:
        if kind[u.op] == _CAS:
            cas_expects[exp[u.op]] = cas_expects.get(exp[u.op], 0) + 1
    steps = 0
    best_depth = -1
    best: tuple[int, object, list[int]] = (-1, None, [])

    def enter(i: int, new: object) -> object:
        """The (canonical) state to move to by placing op i, or _SKIP when not worth searching.

        Placing is not worth it when a configuration with the same known ops placed, the same
        state and a subset of its optional ops placed (dead puts counted, not named) was already
        searched, or is an ancestor being searched: whatever this one can still do, that one
        can too (optional ops need never be placed), so it failed or will find the answer itself.
        """
        dm = dead
        if known[i]:
            nk = klin | (1 << i)
            nu = ulin
            w = looked_for[i]
            if w is not _NO_RUN and waiting[w] == 1:
                dm |= dead_puts.get(w, 0)
        else:
            nk = klin
            g = group[i]
            nu = ulin | (1 << members[g][n_placed[g]])
        if new is not None and new is not _OPAQUE and lookers.get(new, 0) & ~(nk | nu) == 0:
            new = _OPAQUE
        cfg = (nk, new)
        live = nu & ~dm
        n_dead = (nu & dm).bit_count()
        prior = seen.get(cfg)
        if prior is None:
            seen[cfg] = [(live, n_dead)]
            return new
        nonlocal steps
        steps += len(prior)
        for u, c in prior:
            if u & ~live == 0 and c <= n_dead:
                return _SKIP
        prior.append((live, n_dead))
        return new

    def wanted() -> tuple[set[object], list[object], bool]:
        """What values would let a known op that is callable now, but blocked by ``state``, run.

        Returns (exact values, "any value but one of these", "any present value").
        """
        exact: set[object] = set()
        not_equal: list[object] = []
        present = False
        e = head.next
        nonlocal steps
        while e is not None and e.is_call:
            steps += 1
            i = e.op
            k = kind[i]
            if k == _GET:
                if out[i] != state:
                    exact.add(out[i])
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
    tried: set[object] = set()
    uentry: _Node | None = None
    new: object = None
    need: tuple[set[object], list[object], bool] = (set(), [], False)
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
                    if base is not _NO_RUN and apply(i, base)[0]:
                        ok = False
                if ok:
                    new = enter(i, new)
                    ok = new is not _SKIP
                if ok:
                    stack.append((entry, state, None, _NO_RUN))
                    state = new
                    klin |= 1 << i
                    w = looked_for[i]
                    if w is not _NO_RUN:
                        waiting[w] -= 1
                        if waiting[w] == 0:
                            dead |= dead_puts.get(w, 0)
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
                        return None, steps
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
            tried = set()
            need = wanted()
        # Unknown phase: scan the optional ops whose call precedes the pending return. Only an
        # op whose result unblocks a known op (or can feed an optional cas) is tried: one that
        # helps nobody now can as well be placed later, or never. Right after another optional
        # op, a blind write (put/delete) is not tried either: it would hide that op's effect.
        run_base: object = stack[-1][3] if stack else _NO_RUN
        after_unknown = run_base is not _NO_RUN
        exact, not_equal, present = need
        while uentry is not None and uentry.time <= r_time:
            i = uentry.op
            g = _OPAQUE if dead >> i & 1 else group[i]
            if g not in tried and not (after_unknown and kind[i] != _CAS):
                tried.add(g)
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
                ):
                    new = enter(i, new)
                    if new is not _SKIP:
                        break
            uentry = uentry.next
        if uentry is not None and uentry.time <= r_time:
            i = uentry.op
            stack.append((uentry, state, (r_time, tried), run_base if after_unknown else state))
            state = new
            g = group[i]
            ulin |= 1 << members[g][n_placed[g]]
            n_placed[g] += 1
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
            return _explain(key, ops, initial, best_depth, best), steps
        node, state, scan, _ = stack.pop()
        i = node.op
        assert node.prev is not None
        if scan is None:
            klin &= ~(1 << i)
            w = looked_for[i]
            if w is not _NO_RUN:
                if waiting[w] == 0:
                    dead &= ~dead_puts.get(w, 0)
                waiting[w] += 1
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
            g = group[i]
            n_placed[g] -= 1
            ulin &= ~(1 << members[g][n_placed[g]])
            placed_unknown.pop()
            if kind[i] == _CAS:
                cas_expects[exp[i]] += 1
            node.prev.next = node
            if node.next is not None:
                node.next.prev = node
            in_unknown = True
            r_time, tried = scan
            uentry = node.next
            need = wanted()


def _show(v: object) -> str:
    return "<a value no read looks for>" if v is _OPAQUE else repr(v)


def _explain(key: str, ops: list[Op], initial: Value, depth: int, best: tuple[int, object, list[int]]) -> str:
    stuck, state, tail = best
    n_known = sum(1 for op in ops if op.ret is not None)
    lines = [
        f"key {key!r}: no linearization of its {len(ops)} operations exists "
        f"(initial value {initial!r}).",
        f"The deepest attempt placed {depth} of {n_known} completed operations; the value was then "
        f"{_show(state)} and this operation could not be placed before its response:",
        f"  {ops[stuck].describe()}",
    ]
    if tail:
        lines.append("The last operations placed in that attempt:")
        lines.extend(f"  {ops[i].describe()}" for i in tail)
    return "\n".join(lines)
