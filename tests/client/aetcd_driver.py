"""aetcd (PyPI `aetcd`, asyncio + grpcio) driven through its public surface, run as a program.

`python3 aetcd_driver.py ENDPOINT SCENARIO` runs one scenario against the
server at ENDPOINT (host:port) and prints a JSON transcript: one
[step, result] pair per call, where a result is the call's value reduced to
plain data or the exception it raised (the client's class, its message, and
the gRPC status underneath). It runs in a process of its own, like
etcd3_driver.py, so that a client's grpc.aio channels and threads never
share the test process; values that differ between any two servers by nature
(ids, terms, sizes, hashes) are reduced to what must hold of them.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aetcd
import grpc
from aetcd import exceptions as exc
from aetcd import rtypes

DEADLINE = 30.0  # seconds any wait below may take on a loaded machine


async def wait_for(cond: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll cond until it is truthy (a generous deadline; never a fixed sleep)."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def error(e: BaseException) -> dict[str, Any]:
    """An exception as data: the client's class, its message, the gRPC status under it."""
    out: dict[str, Any] = {"raised": type(e).__name__, "message": str(e)}
    if isinstance(e, exc.RevisionCompactedError):
        out["compacted_revision"] = e.compacted_revision
    cause = e.__cause__ or e.__context__
    if isinstance(cause, grpc.aio.AioRpcError):
        out["code"] = cause.code().name
    return out


def kvd(k: Any) -> dict[str, Any] | None:
    """An aetcd KeyValue (or a protobuf one) as data."""
    if k is None:
        return None
    return {"key": k.key.decode(), "value": k.value.decode(), "create": k.create_revision,
            "mod": k.mod_revision, "version": k.version, "lease": k.lease}


def event(e: Any) -> Any:
    if not hasattr(e, "kv"):
        return repr(e)
    return {"kind": str(getattr(e.kind, "value", e.kind)), "kv": kvd(e.kv), "prev_kv": kvd(e.prev_kv)}


def txn_shape(r: Any) -> Any:
    """aetcd's (succeeded, responses): ranges as their key-values, others as text."""
    succeeded, responses = r
    out: list[Any] = []
    for resp in responses:
        if isinstance(resp, list):
            out.append([[v.decode(), kvd(m)] if isinstance(v, bytes) else str(v) for v, m in resp]
                       if resp and isinstance(resp[0], tuple) else [str(x) for x in resp])
        else:
            out.append(str(resp).replace("\n", " "))
    return [succeeded, out]


class Transcript:
    def __init__(self) -> None:
        self.steps: list[list[Any]] = []

    async def call(self, name: str, fn: Callable[[], Awaitable[Any]],
                   shape: Callable[[Any], Any] = lambda v: v) -> Any:
        """Await one client call and record its shaped result or its exception."""
        try:
            v = await fn()
        except Exception as e:  # the exception is the result being compared
            self.steps.append([name, error(e)])
            return None
        self.steps.append([name, shape(v)])
        return v

    def note(self, name: str, value: Any) -> None:
        self.steps.append([name, value])


async def kv_scenario(c: aetcd.Client, t: Transcript) -> None:
    for k, v in ((b"k/a", b"1"), (b"k/b", b"2"), (b"k/c", b"3"), (b"zz", b"out")):
        await t.call(f"put {k!r}", lambda k=k, v=v: c.put(k, v), lambda r: r.header.revision)
    await t.call("put prev_kv", lambda: c.put(b"k/a", b"1b", prev_kv=True),
                 lambda r: [r.header.revision, kvd(r.prev_kv)])
    await t.call("get", lambda: c.get(b"k/a"), kvd)
    await t.call("get missing", lambda: c.get(b"nope"), kvd)
    await t.call("get serializable", lambda: c.get(b"k/a", serializable=True), kvd)
    await t.call("get_prefix", lambda: c.get_prefix(b"k/"), lambda r: [len(r), [kvd(k) for k in r]])
    for order in ("ascend", "descend"):
        for target in ("key", "version", "create", "mod", "value"):
            await t.call(f"get_prefix sort {order} {target}",
                         lambda o=order, tg=target: c.get_prefix(b"k/", sort_order=o, sort_target=tg),
                         lambda r: [k.key.decode() for k in r])
    await t.call("get_prefix limit", lambda: c.get_prefix(b"k/", limit=2),
                 lambda r: [len(r), r.more, r.count, [k.key.decode() for k in r]])
    await t.call("get_prefix keys_only", lambda: c.get_prefix(b"k/", keys_only=True),
                 lambda r: [kvd(k) for k in r])
    await t.call("get_prefix count_only", lambda: c.get_prefix(b"k/", count_only=True),
                 lambda r: [len(r), r.count])
    await t.call("get_range", lambda: c.get_range(b"k/a", b"k/c"), lambda r: [kvd(k) for k in r])
    await t.call("get_range mod revs", lambda: c.get_range(b"k/", b"k0", min_mod_revision=3, max_mod_revision=4),
                 lambda r: [k.key.decode() for k in r])
    await t.call("get_all", lambda: c.get_all(), lambda r: [kvd(k) for k in r])
    await t.call("get_all descend", lambda: c.get_all(sort_order="descend"), lambda r: [k.key.decode() for k in r])
    await t.call("get_prefix bad sort", lambda: c.get_prefix(b"k/", sort_order="sideways"), repr)
    await t.call("replace wrong", lambda: c.replace(b"k/c", b"nope", b"5"))
    await t.call("replace right", lambda: c.replace(b"k/c", b"3", b"5"))
    await t.call("delete", lambda: c.delete(b"k/c", prev_kv=True), lambda r: r and [r.deleted, kvd(r.prev_kv)])
    await t.call("delete missing", lambda: c.delete(b"k/c"), lambda r: r and [r.deleted])
    await t.call("delete_range", lambda: c.delete_range(b"k/a", b"k/b", prev_kv=True),
                 lambda r: [r.deleted, [kvd(k) for k in r]])
    await t.call("delete_prefix", lambda: c.delete_prefix(b"k/"), lambda r: [r.deleted, len(r)])
    await t.call("get_prefix after", lambda: c.get_prefix(b"k/"), lambda r: [kvd(k) for k in r])
    await t.call("empty key put", lambda: c.put(b"", b"v"), lambda r: r.header.revision)
    await t.call("range end before key", lambda: c.get_range(b"b", b"a"), lambda r: [kvd(k) for k in r])


async def txn_scenario(c: aetcd.Client, t: Transcript) -> None:
    tx = c.transactions
    await c.put(b"t/a", b"1")
    await c.put(b"t/a", b"2")
    got = await c.get(b"t/a")
    cases: list[tuple[str, list[Any]]] = [
        ("value ==", [tx.value(b"t/a") == b"2"]),
        ("value !=", [tx.value(b"t/a") != b"2"]),
        ("value <", [tx.value(b"t/a") < b"1"]),
        ("version >", [tx.version(b"t/a") > 1]),
        ("version missing == 0", [tx.version(b"t/missing") == 0]),
        ("create ==", [tx.create(b"t/a") == got.create_revision]),
        ("mod ==", [tx.mod(b"t/a") == got.mod_revision]),
        ("mod over a range", [tx.mod(b"t/", range_end=b"t0") > 0]),
        ("no compare", []),
    ]
    for name, compare in cases:
        await t.call(f"txn {name}", lambda cm=compare, n=name: c.transaction(
            compare=cm, success=[tx.put(b"t/ok", n.encode()), tx.get(b"t/a")],
            failure=[tx.get(b"t/a"), tx.delete(b"t/none")]), txn_shape)
    await t.call("txn nested", lambda: c.transaction(
        compare=[], success=[tx.txn(compare=[tx.version(b"t/a") == 99], success=[tx.put(b"t/n", b"s")],
                                    failure=[tx.put(b"t/n", b"f")])], failure=[]), txn_shape)
    await t.call("get t/n", lambda: c.get(b"t/n"), kvd)
    await t.call("txn duplicate put", lambda: c.transaction(
        compare=[], success=[tx.put(b"t/d", b"1"), tx.put(b"t/d", b"2")], failure=[]), txn_shape)
    await t.call("txn too many ops", lambda: c.transaction(
        compare=[], success=[tx.put(f"t/m{i}".encode(), b"1") for i in range(129)], failure=[]), txn_shape)


async def watch_scenario(c: aetcd.Client, t: Transcript) -> None:
    await c.put(b"w/seed", b"0")
    w = await c.watch(b"w/a")
    got: list[Any] = []

    async def consume(watch: Any, into: list[Any]) -> None:
        async for e in watch:
            into.append(e)

    task = asyncio.ensure_future(consume(w, got))
    await c.put(b"w/a", b"1")
    await c.put(b"w/b", b"ignored")
    await c.delete(b"w/a")
    await wait_for(lambda: len(got) >= 2, "two events on w/a")
    await w.cancel()
    await asyncio.wait_for(task, DEADLINE)
    t.note("watch events", [event(e) for e in got])

    w = await c.watch_prefix(b"w/", prev_kv=True)
    got2: list[Any] = []
    task = asyncio.ensure_future(consume(w, got2))
    await c.put(b"w/p", b"1")
    await c.put(b"w/p", b"2")
    await wait_for(lambda: len(got2) >= 2, "two events on w/")
    await w.cancel()
    await asyncio.wait_for(task, DEADLINE)
    t.note("watch_prefix prev_kv", [event(e) for e in got2])

    first = (await c.get(b"w/p")).create_revision
    w = await c.watch(b"w/p", start_revision=first)
    got3: list[Any] = []
    task = asyncio.ensure_future(consume(w, got3))
    await wait_for(lambda: len(got3) >= 2, "replayed events")
    await w.cancel()
    await asyncio.wait_for(task, DEADLINE)
    t.note("watch start_revision", [event(e) for e in got3])

    await t.call("watch_once delete kind", lambda: c.watch_once(
        b"w/", range_end=b"w0", timeout=DEADLINE, start_revision=1, kind=rtypes.EventKind.DELETE), event)
    await t.call("watch_once timeout", lambda: c.watch_once(b"w/never", timeout=0.3), event)
    await t.call("watch_prefix_once", lambda: c.watch_prefix_once(b"w/", timeout=DEADLINE, start_revision=1),
                 event)

    # a watch id of the client's choosing, and one already in use on the stream
    mine = await c.watch(b"w/id", watch_id=7)
    t.note("chosen watch_id", mine.watch_id)
    await t.call("duplicate watch_id", lambda: c.watch(b"w/id2", watch_id=7), lambda w: w.watch_id)
    # only PUTs, over every key from w/f on (range_end b"\0")
    w = await c.watch(b"w/f", range_end=b"\0", kind=rtypes.EventKind.PUT, fragment=True)
    got4: list[Any] = []
    task = asyncio.ensure_future(consume(w, got4))
    await c.put(b"w/f1", b"1")
    await c.delete(b"w/f1")
    await c.put(b"zzz", b"2")
    await wait_for(lambda: len(got4) >= 2, "two PUT events")
    await w.cancel()
    await mine.cancel()
    await asyncio.wait_for(task, DEADLINE)
    t.note("PUT-only watch to the end of the keyspace", [event(e) for e in got4])

    rev = (await c.put(b"w/c", b"1")).header.revision
    await c.put(b"w/c", b"2")
    await c.compact(rev + 1)
    await t.call("watch on a compacted revision", lambda: c.watch_once(b"w/c", timeout=DEADLINE,
                                                                       start_revision=rev), event)


async def lease_scenario(c: aetcd.Client, t: Transcript) -> None:
    lease = await t.call("lease grant", lambda: c.lease(60, lease_id=0xABC), lambda ls: [ls.id, ls.ttl])
    assert lease is not None
    await t.call("lease duplicate id", lambda: c.lease(60, lease_id=0xABC), lambda ls: [ls.id, ls.ttl])
    await c.put(b"l/1", b"a", lease=lease)
    await c.put(b"l/2", b"b", lease=lease.id)
    await t.call("granted_ttl", lambda: lease.granted_ttl())
    await t.call("remaining_ttl in range", lambda: lease.remaining_ttl(), lambda v: 0 < v <= 60)
    await t.call("keys", lambda: lease.keys(), lambda ks: sorted(k.decode() for k in ks))
    await t.call("get_lease_info no keys", lambda: c.get_lease_info(lease.id, keys=False),
                 lambda r: [r.ID, r.grantedTTL, list(r.keys)])
    await t.call("refresh", lambda: lease.refresh(), lambda r: [r.ID, r.TTL])
    await t.call("revoke", lambda: lease.revoke())
    await t.call("keys gone", lambda: c.get_prefix(b"l/"), lambda r: [kvd(k) for k in r])
    await t.call("revoke again", lambda: c.revoke_lease(lease.id))
    await t.call("lease info revoked", lambda: c.get_lease_info(lease.id), lambda r: [r.ID, r.TTL])
    await t.call("refresh revoked", lambda: c.refresh_lease(lease.id), lambda r: [r.ID, r.TTL])
    await t.call("put with unknown lease", lambda: c.put(b"l/x", b"a", lease=0x999))
    short = await t.call("short lease", lambda: c.lease(1, lease_id=0xDEF), lambda ls: [ls.id, ls.ttl])
    assert short is not None
    await c.put(b"l/short", b"gone soon", lease=short)
    end = time.monotonic() + DEADLINE
    while await c.get(b"l/short") is not None:
        assert time.monotonic() < end, "the lease never expired"
        await asyncio.sleep(0.05)
    await t.call("expired lease info", lambda: c.get_lease_info(short.id), lambda r: [r.ID, r.TTL])


async def lock_scenario(c: aetcd.Client, t: Transcript) -> None:
    lock = c.lock(b"alock", ttl=30)
    await t.call("acquire", lambda: lock.acquire(timeout=DEADLINE))
    await t.call("is_acquired", lambda: lock.is_acquired())
    other = c.lock(b"alock", ttl=30)
    await t.call("other acquire timeout", lambda: other.acquire(timeout=0.5))
    # the waiter wakes on the holder's DELETE event, watched from the revision it saw
    waiter = asyncio.ensure_future(other.acquire(timeout=DEADLINE))
    await t.call("refresh", lambda: lock.refresh(), lambda r: r.TTL)
    await t.call("release", lambda: lock.release())
    await t.call("waiter acquires", lambda: asyncio.wait_for(waiter, DEADLINE))
    await t.call("release again", lambda: lock.release())
    await t.call("other release", lambda: other.release())
    async with c.lock(b"ctx", ttl=30) as held:
        await t.call("context manager", lambda: held.is_acquired())
    await t.call("context manager released", lambda: held.is_acquired())


async def maintenance_scenario(c: aetcd.Client, t: Transcript) -> None:
    for i in range(5):
        await c.put(f"m/{i}".encode(), str(i).encode())
    st = await t.call("status", lambda: c.status(),
                      lambda s: [s.version, s.leader is not None, s.db_size > 0, s.raft_index > 0,
                                 s.raft_term > 0])
    async def member_list() -> list[Any]:
        return [m async for m in c.members()]

    members = await t.call("members", member_list,
                           lambda ms: [[m.name, len(m.peer_urls), len(m.client_urls)]
                                       for m in ms])
    assert st is not None and members
    me = members[0]
    t.note("status leader is the member", st.leader.id == me.id)
    await t.call("hash", lambda: c.hash(), lambda h: isinstance(h, int))
    await t.call("defragment", lambda: c.defragment(), lambda r: type(r).__name__)
    await t.call("create_alarm", lambda: c.create_alarm(), lambda r: [[a.alarm_type, a.member_id] for a in r])
    async def alarm_list() -> list[Any]:
        return [a async for a in c.list_alarms()]

    await t.call("list_alarms", alarm_list, lambda r: [[a.alarm_type, a.member_id == me.id] for a in r])
    await t.call("put under NOSPACE", lambda: c.put(b"m/x", b"y"))
    await t.call("disarm_alarm", lambda: c.disarm_alarm(), lambda r: [[a.alarm_type, a.member_id] for a in r])
    await t.call("disarm_alarm member", lambda: c.disarm_alarm(member_id=me.id),
                 lambda r: [[a.alarm_type, a.member_id == me.id] for a in r])
    await t.call("list_alarms after", alarm_list, lambda r: [[a.alarm_type] for a in r])
    buf = io.BytesIO()
    await t.call("snapshot", lambda: c.snapshot(buf))
    t.note("snapshot size > 0", buf.tell() > 0)
    rev = (await c.put(b"m/c", b"1")).header.revision
    await t.call("compact", lambda: c.compact(rev - 2), lambda r: type(r).__name__)
    await t.call("compact again", lambda: c.compact(rev - 2), lambda r: type(r).__name__)
    await t.call("compact future", lambda: c.compact(rev + 100), lambda r: type(r).__name__)
    await t.call("compact physical", lambda: c.compact(rev, physical=True), lambda r: type(r).__name__)
    await t.call("remove unknown member", lambda: c.remove_member(12345))
    await t.call("update unknown member", lambda: c.update_member(12345, ["http://127.0.0.1:3"]))
    await t.call("add duplicate peer url", lambda: c.add_member(list(me.peer_urls)))
    await t.call("add bad url", lambda: c.add_member(["not a url"]))
    new = await t.call("add_member", lambda: c.add_member(["http://127.0.0.1:1"]),
                       lambda m: [m.name, list(m.peer_urls), list(m.client_urls)])
    await t.call("members after add", member_list, lambda ms: sorted(len(m.peer_urls) for m in ms))
    # the new voter never starts: etcd's strict reconfiguration check refuses what needs it
    await t.call("add another with quorum lost", lambda: c.add_member(["http://127.0.0.1:2"]))
    await t.call("add duplicate with quorum lost", lambda: c.add_member(["http://127.0.0.1:1"]))
    await t.call("remove unknown with quorum lost", lambda: c.remove_member(12345))
    del new


async def auth_scenario(c: aetcd.Client, t: Transcript) -> None:
    """Users, a role on a prefix, auth enabled through the client's stubs;
    then what clients with and without credentials get (aetcd sends its
    token as metadata, so a plain channel will do)."""
    from aetcd.rpc import auth_pb2

    rpc = aetcd.rpc
    auth = rpc.AuthStub(c.channel)
    await auth.RoleAdd(rpc.AuthRoleAddRequest(name="root"), timeout=DEADLINE)
    await auth.UserAdd(rpc.AuthUserAddRequest(name="root", password="rootpw"), timeout=DEADLINE)
    await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="root", role="root"), timeout=DEADLINE)
    await auth.RoleAdd(rpc.AuthRoleAddRequest(name="r"), timeout=DEADLINE)
    await auth.RoleGrantPermission(rpc.AuthRoleGrantPermissionRequest(
        name="r", perm=auth_pb2.Permission(permType=auth_pb2.Permission.READWRITE, key=b"a/", range_end=b"a0")),
        timeout=DEADLINE)
    await auth.UserAdd(rpc.AuthUserAddRequest(name="alice", password="pw"), timeout=DEADLINE)
    await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="alice", role="r"), timeout=DEADLINE)
    await auth.AuthEnable(rpc.AuthEnableRequest(), timeout=DEADLINE)
    host, port = c._host, c._port
    await t.call("no credentials put", lambda: c.put(b"a/x", b"1"))

    async def connect(user: str, password: str) -> aetcd.Client:
        other = aetcd.Client(host, port, username=user, password=password, timeout=int(DEADLINE))
        try:
            await other.connect()
        except BaseException:
            await other.close()
            raise
        return other

    await t.call("wrong password", lambda: connect("alice", "nope"), lambda cl: "connected")
    await t.call("unknown user", lambda: connect("bob", "pw"), lambda cl: "connected")
    alice = await connect("alice", "pw")
    tx = alice.transactions
    await t.call("alice put in her prefix", lambda: alice.put(b"a/x", b"1"), lambda r: r.header.revision)
    await t.call("alice get", lambda: alice.get(b"a/x"), kvd)
    await t.call("alice put outside", lambda: alice.put(b"b/x", b"1"))
    await t.call("alice get outside", lambda: alice.get(b"b/x"), kvd)
    await t.call("alice get_all", lambda: alice.get_all(), lambda r: [kvd(k) for k in r])
    await t.call("alice delete_prefix outside", lambda: alice.delete_prefix(b"b/"))
    await t.call("alice txn outside", lambda: alice.transaction(
        compare=[tx.value(b"b/x") == b"1"], success=[], failure=[]), txn_shape)
    await t.call("alice txn inside", lambda: alice.transaction(
        compare=[tx.value(b"a/x") == b"1"], success=[tx.put(b"a/y", b"2")], failure=[]), txn_shape)
    lease = await t.call("alice lease", lambda: alice.lease(60, lease_id=0x77), lambda ls: ls.id)
    await t.call("alice leased put", lambda: alice.put(b"a/l", b"v", lease=lease), lambda r: r.header.revision)
    await t.call("alice lease info", lambda: alice.get_lease_info(0x77), lambda r: [r.ID, sorted(k.decode() for k in r.keys)])
    await t.call("alice revoke", lambda: alice.revoke_lease(0x77))
    # aetcd does not surface the refusal: the watch waits out its timeout on
    # etcd as on petcd (3 s is ample for an answer that would have come)
    await t.call("alice watch_once outside", lambda: alice.watch_once(b"b/x", timeout=3), event)
    await t.call("alice lock outside her prefix", lambda: alice.lock(b"l", ttl=10).acquire(timeout=1))
    await t.call("alice status", lambda: alice.status(), lambda s: s.version)
    await t.call("alice compact", lambda: alice.compact(1), lambda r: type(r).__name__)
    await t.call("alice hash", lambda: alice.hash(), lambda h: isinstance(h, int))
    await t.call("alice add_member", lambda: alice.add_member(["http://127.0.0.1:9"]), lambda m: m.peer_urls)
    await t.call("alice alarms", lambda: alice.create_alarm(), lambda r: [a.alarm_type for a in r])
    await t.call("alice defragment", lambda: alice.defragment(), lambda r: type(r).__name__)
    await t.call("alice snapshot", lambda: alice.snapshot(io.BytesIO()))
    await alice.close()
    root = await connect("root", "rootpw")
    await t.call("root put outside", lambda: root.put(b"b/x", b"1"), lambda r: r.header.revision)
    await t.call("root disable auth", lambda: rpc.AuthStub(root.channel).AuthDisable(
        rpc.AuthDisableRequest(), timeout=DEADLINE, metadata=root.metadata), lambda r: type(r).__name__)
    await root.close()
    await t.call("after disable, no credentials", lambda: c.get(b"b/x"), kvd)


SCENARIOS = {
    "auth": auth_scenario,
    "kv": kv_scenario,
    "txn": txn_scenario,
    "watch": watch_scenario,
    "lease": lease_scenario,
    "lock": lock_scenario,
    "maintenance": maintenance_scenario,
}


async def run(endpoint: str, scenario: str) -> list[list[Any]]:
    host, port = endpoint.rsplit(":", 1)
    t = Transcript()
    async with aetcd.Client(host, int(port), timeout=int(DEADLINE)) as c:
        await SCENARIOS[scenario](c, t)
    return t.steps


async def unreachable() -> list[list[Any]]:
    """What the client raises when nothing listens (port 1 on loopback)."""
    t = Transcript()
    c = aetcd.Client("127.0.0.1", 1, timeout=5)
    await t.call("get", lambda: c.get(b"x"), kvd)
    await t.call("put", lambda: c.put(b"x", b"y"))
    await c.close()
    return t.steps


def main() -> None:
    endpoint, scenario = sys.argv[1], sys.argv[2]
    steps = asyncio.run(unreachable() if scenario == "unreachable" else run(endpoint, scenario))
    print(json.dumps(steps))


if __name__ == "__main__":
    main()
