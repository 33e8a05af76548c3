"""Every client method against petcd and against real etcd, from the same
fresh start: the results (revisions included) must be equal."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from petcd.client import (
    AsyncClient,
    Client,
    Compacted,
    Compare,
    EmptyKey,
    EventType,
    Filter,
    FutureRevision,
    Isolation,
    KeyValue,
    LeaseNotFound,
    NoElectionLeader,
    Op,
)
from petcd.testing.harness import Server


def _norm(x: Any, leases: dict[int, int]) -> Any:
    """Lease IDs differ between servers; number them in order of appearance."""
    if isinstance(x, KeyValue):
        lid = leases.setdefault(x.lease, len(leases)) if x.lease else 0
        return KeyValue(x.key, x.value, x.create_revision, x.mod_revision, x.version, lid)
    if isinstance(x, list | tuple):
        return type(x)(_norm(i, leases) for i in x)
    if hasattr(x, "__dataclass_fields__"):
        return type(x)(**{k: _norm(getattr(x, k), leases) for k in x.__dataclass_fields__})
    return x


def sync_scenario(endpoint: str) -> list[Any]:
    out: list[Any] = []
    with Client(endpoint, timeout=20) as c:
        out.append(c.put("a", "1"))
        out.append(c.put(b"a", b"2", prev_kv=True))
        out.append(c.put("b", "x", prev_kv=True))
        out.append(c.get("a"))
        out.append(c.get("missing"))
        out.append(c.get("a", revision=2))
        for i in range(25):
            c.put(f"dir/{i:02d}", f"v{i}")
        out.append(c.get_prefix("dir/"))
        out.append(c.get_prefix("dir/", limit=3, keys_only=True))
        out.append(c.get_range("dir/05", "dir/10"))
        out.append(list(c.iter_prefix("dir/", page_size=4)))
        out.append(list(c.iter_range("dir/03", "dir/17", page_size=5)))
        out.append(c.get_range("\0", "\0"))
        out.append(c.txn([Compare.value("a") == "2"], [Op.put("a", "3", prev_kv=True), Op.get("a")],
                         [Op.delete("a")]))
        out.append(c.txn([Compare.version("a") > 5], [Op.put("a", "no")],
                         [Op.get("dir/", prefix=True, limit=2), Op.delete("b", prev_kv=True)]))
        out.append(c.txn([Compare.create_revision("nope") == 0, Compare.mod_revision("a") < 1000,
                          Compare.value("a") != "x", Compare.lease("a") == 0],
                         [Op.txn([Compare.version("a") == 3], [Op.put("n", "1")], [])], []))
        out.append(c.delete("n"))
        out.append(c.delete("n"))
        out.append(c.delete_prefix("dir/1"))
        out.append(c.delete_range("dir/00", "dir/03"))
        with c.watch("w", prefix=True, prev_kv=True) as w:
            c.put("w/1", "a")
            c.put("w/1", "b")
            c.delete("w/1")
            out.append([next(w), next(w), next(w)])
        rev = c.get_range("\0", "\0", limit=1)[0].mod_revision if c.get_range("\0", "\0") else 0
        out.append(rev)
        with c.watch("w/", prefix=True, start_revision=1, filters=[Filter.NOPUT]) as w:
            out.append(next(w))
        with c.lease(30) as lease:
            c.put("leased", "v", lease=lease)
            c.put("leased2", "v", lease=lease.id)
            out.append(sorted(lease.keys()))
            out.append(0 < lease.ttl() <= 30)
            out.append(c.get("leased"))
        out.append(c.get("leased"))
        try:
            c.put("x", "y", lease=12345)
        except LeaseNotFound as exc:
            out.append(("LeaseNotFound", exc.message))
        try:
            c.put("", "y")
        except EmptyKey as exc:
            out.append(("EmptyKey", exc.message))
        try:
            c.get("a", revision=10_000)
        except FutureRevision as exc:
            out.append(("FutureRevision", exc.message))
        with c.lock("lk") as lk:
            out.append(lk.fencing_token > 0)
            out.append(len(c.get_prefix("lk/")))
        out.append(c.get_prefix("lk/"))
        e = c.election("el")
        try:
            e.leader()
        except NoElectionLeader:
            out.append("no leader")
        e.campaign("one")
        out.append(e.leader().value)
        e.proclaim("two")
        obs = e.observe()
        out.append(next(obs).value)
        e.resign()
        out.append(c.get_prefix("el/"))

        def move(s: Any) -> int:
            a = int(s.get("acct/a") or 100)
            s.put("acct/a", str(a - 10))
            s.put("acct/b", str(int(s.get("acct/b") or 0) + 10))
            return a

        out.append(c.stm(move))
        out.append(c.stm(move, isolation=Isolation.REPEATABLE_READ))
        out.append(c.stm(move, isolation=Isolation.READ_COMMITTED))
        out.append([kv.value for kv in c.get_prefix("acct/")])
        rev = c.put("compact-me", "1")
        c.compact(rev)
        try:
            c.get("a", revision=rev - 1)
        except Compacted as exc:
            out.append(("Compacted", exc.message))
        try:
            with c.watch("a", start_revision=2) as w:
                next(w)
        except Compacted as exc:
            out.append(("watch Compacted", exc.compact_revision))
    return out


async def async_scenario(endpoint: str) -> list[Any]:
    out: list[Any] = []
    async with AsyncClient(endpoint, timeout=20) as c:
        out.append(await c.put("a", "1"))
        out.append(await c.put("a", "2", prev_kv=True))
        out.append(await c.get("a"))
        for i in range(7):
            await c.put(f"d/{i}", str(i))
        out.append(await c.get_prefix("d/"))
        out.append(await c.get_range("d/2", "d/5"))
        out.append([kv async for kv in c.iter_prefix("d/", page_size=2)])
        out.append([kv async for kv in c.iter_range("d/1", "d/6", page_size=2)])
        out.append(await c.txn([Compare.value("a") == "2"], [Op.put("a", "3")], []))
        out.append(await c.delete("d/0"))
        out.append(await c.delete_prefix("d/"))
        async with c.watch("w", prev_kv=True) as w:
            await c.put("w", "1")
            await c.delete("w")
            got = []
            async for ev in w:
                got.append(ev)
                if ev.type is EventType.DELETE:
                    break
            out.append(got)
        async with c.lease(20) as lease:
            await c.put("l", "v", lease=lease)
            out.append(await lease.keys())
        out.append(await c.get("l"))
        async with c.lock("alk") as lk:
            out.append(lk.fencing_token > 0)
        e = c.election("ael")
        await e.campaign("v1")
        out.append((await e.leader()).value)
        await e.resign()

        async def incr(s: Any) -> None:
            s.put("ctr", str(int(await s.get("ctr") or 0) + 1))

        await c.stm(incr)
        await c.stm(incr, isolation=Isolation.REPEATABLE_READ)
        out.append(await c.get("ctr"))
    return out


def _compare(run: Callable[[str], list[Any]], petcd: Server, etcd: Server) -> None:
    a = _norm(run(petcd.endpoint), {})
    b = _norm(run(etcd.endpoint), {})
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert x == y, f"result {i} differs: petcd {x!r} etcd {y!r}"


def test_sync_client_same_results_on_petcd_and_etcd(start_server: Callable[[str], Server]) -> None:
    _compare(sync_scenario, start_server("petcd"), start_server("etcd"))


def test_async_client_same_results_on_petcd_and_etcd(start_server: Callable[[str], Server]) -> None:
    _compare(lambda ep: asyncio.run(async_scenario(ep)), start_server("petcd"), start_server("etcd"))
