"""python-etcd3 (PyPI `etcd3`) driven through its public surface, run as a program.

`python3 etcd3_driver.py ENDPOINT SCENARIO` runs one scenario against the
server at ENDPOINT (host:port) and prints a JSON transcript: one
[step, result] pair per call, where a result is the call's value reduced to
plain data or the exception it raised (class, gRPC code and message).

It runs in its own process because etcd3's generated protobuf modules are
too old for the protobuf petcd needs: they import only with
PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python, which must be set before
protobuf is first imported, and petcd's own process uses the fast one.
Values that differ between any two servers by nature (member and cluster
ids, raft terms, database sizes, hashes) are replaced with stable stand-ins
so that two transcripts compare equal when the servers behave alike.
"""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

os.environ["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"

import etcd3  # noqa: E402 - after the protobuf implementation is chosen
import grpc  # noqa: E402
from etcd3 import exceptions as exc  # noqa: E402

DEADLINE = 30.0  # seconds any wait below may take on a loaded machine
QUORUM_LOST_DEADLINE = 10.0  # a client deadline longer than etcd's request timeout (5 s + 2 elections)


def wait_for(cond: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll cond until it is truthy (the deadline is generous; never a fixed sleep)."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def error(e: BaseException) -> dict[str, Any]:
    """An exception as data: the client's class and, underneath, the gRPC status."""
    out: dict[str, Any] = {"raised": type(e).__name__}
    if not isinstance(e, grpc.RpcError):
        out["args"] = [str(a) for a in e.args]
    if isinstance(e, exc.RevisionCompactedError):
        out["compacted_revision"] = e.compacted_revision
    cause = e if isinstance(e, grpc.RpcError) else e.__context__
    if isinstance(cause, grpc.RpcError) and hasattr(cause, "code"):
        out["code"] = cause.code().name
        out["details"] = cause.details()
    return out


def meta(m: Any) -> dict[str, Any] | None:
    if m is None:
        return None
    return {"key": m.key.decode(), "create": m.create_revision, "mod": m.mod_revision,
            "version": m.version, "lease": m.lease_id}


def kv(pair: Any) -> list[Any]:
    value, m = pair
    return [None if value is None else value.decode(), meta(m)]


def event(e: Any) -> dict[str, Any]:
    return {"type": type(e).__name__, "key": e.key.decode(), "value": e.value.decode(),
            "mod": e.mod_revision, "version": e.version,
            "prev_value": e.prev_value.decode() if e.prev_value else None}


def kvpb(k: Any) -> dict[str, Any]:
    """A mvccpb.KeyValue as data."""
    return {"key": k.key.decode(), "value": k.value.decode(), "create": k.create_revision,
            "mod": k.mod_revision, "version": k.version, "lease": k.lease}


class Transcript:
    def __init__(self) -> None:
        self.steps: list[list[Any]] = []

    def call(self, name: str, fn: Callable[[], Any], shape: Callable[[Any], Any] = lambda v: v) -> Any:
        """Run one client call and record its shaped result or its exception."""
        try:
            v = fn()
        except Exception as e:  # the exception is the result being compared
            self.steps.append([name, error(e)])
            return None
        self.steps.append([name, shape(v)])
        return v

    def note(self, name: str, value: Any) -> None:
        self.steps.append([name, value])


def kv_scenario(c: etcd3.Etcd3Client, t: Transcript) -> None:
    t.call("put a", lambda: c.put("k/a", "1"), lambda r: r.header.revision)
    t.call("put b", lambda: c.put("k/b", "2"), lambda r: r.header.revision)
    t.call("put c", lambda: c.put("k/c", "3"), lambda r: r.header.revision)
    t.call("put zz", lambda: c.put("zz", "out"), lambda r: r.header.revision)
    t.call("put a prev_kv", lambda: c.put("k/a", "1b", prev_kv=True),
           lambda r: [r.header.revision, kvpb(r.prev_kv)])
    t.call("get a", lambda: c.get("k/a"), kv)
    t.call("get missing", lambda: c.get("nope"), kv)
    t.call("get a serializable", lambda: c.get("k/a", serializable=True), kv)
    t.call("get_prefix", lambda: list(c.get_prefix("k/")), lambda r: [kv(p) for p in r])
    for order in ("ascend", "descend"):
        for target in ("key", "version", "create", "mod", "value"):
            t.call(f"get_prefix sort {order} {target}",
                   lambda o=order, tg=target: list(c.get_prefix("k/", sort_order=o, sort_target=tg)),
                   lambda r: [p[1].key.decode() for p in r])
    t.call("get_prefix keys_only", lambda: list(c.get_prefix("k/", keys_only=True)),
           lambda r: [kv(p) for p in r])
    t.call("get_prefix bad sort", lambda: list(c.get_prefix("k/", sort_order="sideways")), repr)
    t.call("get_range", lambda: list(c.get_range("k/a", "k/c")), lambda r: [kv(p) for p in r])
    t.call("get_all", lambda: list(c.get_all()), lambda r: [kv(p) for p in r])
    t.call("get_all descend", lambda: list(c.get_all(sort_order="descend")), lambda r: [kv(p) for p in r])
    t.call("get_prefix_response", lambda: c.get_prefix_response("k/"),
           lambda r: [r.header.revision, r.count, r.more, [kvpb(k) for k in r.kvs]])
    t.call("put_if_not_exists existing", lambda: c.put_if_not_exists("k/a", "x"))
    t.call("put_if_not_exists new", lambda: c.put_if_not_exists("k/d", "4"))
    t.call("replace wrong", lambda: c.replace("k/d", "nope", "5"))
    t.call("replace right", lambda: c.replace("k/d", "4", "5"))
    t.call("get d", lambda: c.get("k/d"), kv)
    t.call("delete d", lambda: c.delete("k/d"))
    t.call("delete d again", lambda: c.delete("k/d"))
    t.call("delete b prev_kv", lambda: c.delete("k/b", prev_kv=True, return_response=True),
           lambda r: [r.deleted, [kvpb(k) for k in r.prev_kvs]])
    t.call("delete_prefix", lambda: c.delete_prefix("k/"), lambda r: [r.header.revision, r.deleted])
    t.call("get_prefix after", lambda: list(c.get_prefix("k/")), lambda r: [kv(p) for p in r])
    t.call("empty key put", lambda: c.put("", "v"), lambda r: r.header.revision)
    t.call("big value", lambda: c.put("big", "x" * (2 * 1024 * 1024)), lambda r: r.header.revision)


def txn_shape(r: Any) -> Any:
    """etcd3's (succeeded, responses): a range becomes its (value, metadata) pairs,
    a nested txn its own shape, anything else its response's fields."""
    succeeded, responses = r
    out: list[Any] = []
    for resp in responses:
        if isinstance(resp, list) and resp and isinstance(resp[0], tuple) and len(resp[0]) == 2 \
                and isinstance(resp[0][0], bytes | None):
            out.append([kv(p) for p in resp])
        elif isinstance(resp, list):
            out.append([str(x).replace("\n", " ") for x in resp])
        else:
            out.append(str(resp).replace("\n", " "))
    return [succeeded, out]


class LeaseCompare(etcd3.transactions.BaseCompare):
    """A compare on a key's lease: etcd3 0.12 has none of its own, but its
    BaseCompare builds the message, so the client's own path is exercised."""

    def build_compare(self, compare: Any) -> None:
        compare.target = etcd3.etcdrpc.Compare.LEASE
        compare.lease = int(self.value)


def txn_scenario(c: etcd3.Etcd3Client, t: Transcript) -> None:
    tx = c.transactions
    c.put("t/a", "1")
    c.put("t/a", "2")
    lease = c.lease(60, lease_id=0x1234)
    c.put("t/l", "leased", lease=lease)
    rev = c.get("t/a")[1].mod_revision
    create = c.get("t/a")[1].create_revision
    cases: list[tuple[str, list[Any]]] = [
        ("value ==", [tx.value("t/a") == "2"]),
        ("value !=", [tx.value("t/a") != "2"]),
        ("value >", [tx.value("t/a") > "1"]),
        ("value <", [tx.value("t/a") < "1"]),
        ("version ==", [tx.version("t/a") == 2]),
        ("version >", [tx.version("t/a") > 5]),
        ("version missing == 0", [tx.version("t/missing") == 0]),
        ("create ==", [tx.create("t/a") == create]),
        ("mod ==", [tx.mod("t/a") == rev]),
        ("mod <", [tx.mod("t/a") < rev]),
        ("lease ==", [LeaseCompare("t/l") == 0x1234]),
        ("lease == 0", [LeaseCompare("t/a") == 0]),
        ("lease != on missing key", [LeaseCompare("t/missing") != 5]),
        ("value == over a range", [tx.value("t/", range_end="t0") == "2"]),
        ("version > over a range", [tx.version("t/", range_end="t0") > 0]),
        ("mod < over an empty range", [tx.mod("t/x", range_end="t/y") < 1]),
        ("two compares", [tx.value("t/a") == "2", tx.version("t/a") == 1]),
        ("no compare", []),
    ]
    for name, compare in cases:
        t.call(f"txn {name}", lambda cm=compare, n=name: c.transaction(
            compare=cm,
            success=[tx.put("t/ok", n), tx.get("t/a")],
            failure=[tx.get("t/a"), tx.delete("t/none")]),
            txn_shape)
    t.call("txn nested", lambda: c.transaction(
        compare=[tx.value("t/a") == "2"],
        success=[tx.txn(compare=[tx.version("t/a") == 99], success=[tx.put("t/n", "s")],
                        failure=[tx.put("t/n", "f"), tx.get("t/n")])],
        failure=[]), txn_shape)
    t.call("get t/n", lambda: c.get("t/n"), kv)
    t.call("txn delete prefix in success", lambda: c.transaction(
        compare=[], success=[tx.delete("t/", range_end=etcd3.utils.increment_last_byte(b"t/"), prev_kv=True)],
        failure=[]), txn_shape)
    t.call("txn duplicate put", lambda: c.transaction(
        compare=[], success=[tx.put("t/d", "1"), tx.put("t/d", "2")], failure=[]), lambda r: r)
    t.call("txn too many ops", lambda: c.transaction(
        compare=[], success=[tx.put(f"t/m{i}", "1") for i in range(129)], failure=[]), lambda r: r)


def watch_scenario(c: etcd3.Etcd3Client, t: Transcript) -> None:
    c.put("w/seed", "0")  # rev 2
    # watch() as an iterator: events after the call, cancel ends the iterator
    it, cancel = c.watch("w/a")
    got: list[Any] = []

    def consume() -> None:
        for e in it:
            got.append(e)

    th = threading.Thread(target=consume, daemon=True)
    th.start()
    # the iterator's watch is registered before watch() returns
    c.put("w/a", "1")
    c.put("w/b", "ignored")
    c.delete("w/a")
    wait_for(lambda: len(got) >= 2, "two events on w/a")
    cancel()
    th.join(DEADLINE)
    t.note("watch events", [event(e) for e in got])
    t.note("watch iterator ended", not th.is_alive())

    # watch_prefix with prev_kv
    it, cancel = c.watch_prefix("w/", prev_kv=True)
    got2: list[Any] = []
    th = threading.Thread(target=lambda: [got2.append(e) for e in it], daemon=True)
    th.start()
    c.put("w/p", "1")
    c.put("w/p", "2")
    wait_for(lambda: len(got2) >= 2, "two events on w/")
    cancel()
    th.join(DEADLINE)
    t.note("watch_prefix prev_kv", [event(e) for e in got2])

    # start_revision in the past: the whole history of w/p from its first put
    first = c.get("w/p")[1].create_revision
    it, cancel = c.watch("w/p", start_revision=first)
    got3: list[Any] = []
    th = threading.Thread(target=lambda: [got3.append(e) for e in it], daemon=True)
    th.start()
    wait_for(lambda: len(got3) >= 2, "replayed events")
    cancel()
    th.join(DEADLINE)
    t.note("watch start_revision", [event(e) for e in got3])

    # callbacks: add_watch_callback / add_watch_prefix_callback / cancel_watch
    responses: list[Any] = []
    wid = c.add_watch_callback("w/cb", lambda r: responses.append(r))
    pid = c.add_watch_prefix_callback("w/cbp/", lambda r: responses.append(r))
    c.put("w/cb", "x")
    c.put("w/cbp/1", "y")
    wait_for(lambda: len(responses) >= 2, "two callback responses")
    t.note("callback events", sorted(
        [event(e) for r in responses if not isinstance(r, Exception) for e in r.events],
        key=lambda d: d["mod"]))
    c.cancel_watch(wid)
    c.cancel_watch(pid)
    n = len(responses)
    c.put("w/cb", "after-cancel")
    # a later watch proves the put was applied; the cancelled callback must not fire
    t.call("watch_once after cancel", lambda: c.watch_once("w/cb", timeout=DEADLINE, start_revision=1),
           event)
    t.note("no callback after cancel", len(responses) == n)

    # watch_once: an event in time, and a timeout
    t.call("watch_once timeout", lambda: c.watch_once("w/never", timeout=0.3), event)
    t.call("watch_prefix_once", lambda: c.watch_prefix_once("w/", timeout=DEADLINE, start_revision=1), event)

    # a filtered watch (no puts), progress notify accepted
    t.call("watch_once filter", lambda: c.watch_once(
        "w/", timeout=DEADLINE, range_end="w0", start_revision=1,
        filters=[etcd3.etcdrpc.WatchCreateRequest.NOPUT]), event)

    # a watch on a compacted revision surfaces the compact revision
    rev = c.put("w/c", "1").header.revision
    c.put("w/c", "2")
    c.compact(rev + 1)
    compacted: list[Any] = []
    wid = c.add_watch_callback("w/c", lambda r: compacted.append(r), start_revision=rev)
    wait_for(lambda: compacted, "the compacted watch's response")
    first_resp = compacted[0]
    t.note("watch compacted", error(first_resp) if isinstance(first_resp, Exception)
           else ["no error", [event(e) for e in first_resp.events]])
    try:
        c.cancel_watch(wid)
    except Exception as e:
        t.note("cancel compacted watch", error(e))
    t.call("watch iterator on compacted", lambda: next(iter(c.watch("w/c", start_revision=rev)[0])), event)


def lease_scenario(c: etcd3.Etcd3Client, t: Transcript) -> None:
    lease = t.call("lease grant", lambda: c.lease(60, lease_id=0xABC), lambda ls: [ls.id, ls.ttl])
    assert lease is not None
    t.call("lease duplicate id", lambda: c.lease(60, lease_id=0xABC), lambda ls: [ls.id, ls.ttl])
    c.put("l/1", "a", lease=lease)
    c.put("l/2", "b", lease=lease.id)
    t.call("lease granted_ttl", lambda: lease.granted_ttl)
    t.call("lease remaining in range", lambda: 0 < lease.remaining_ttl <= 60)
    t.call("lease keys", lambda: sorted(k.decode() for k in lease.keys))
    t.call("get_lease_info", lambda: c.get_lease_info(lease.id),
           lambda r: [r.ID, r.grantedTTL, sorted(k.decode() for k in r.keys)])
    t.call("refresh", lambda: lease.refresh(), lambda r: [[x.ID, x.TTL] for x in r])
    t.call("refresh_lease", lambda: list(c.refresh_lease(lease.id)), lambda r: [[x.ID, x.TTL] for x in r])
    t.call("get l/1 lease", lambda: c.get("l/1"), kv)
    t.call("revoke", lambda: lease.revoke())
    t.call("keys gone", lambda: list(c.get_prefix("l/")), lambda r: [kv(p) for p in r])
    t.call("revoke again", lambda: c.revoke_lease(lease.id))
    t.call("lease info revoked", lambda: c.get_lease_info(lease.id), lambda r: [r.ID, r.TTL, r.grantedTTL])
    t.call("refresh revoked", lambda: list(c.refresh_lease(lease.id)), lambda r: [[x.ID, x.TTL] for x in r])
    t.call("put with unknown lease", lambda: c.put("l/x", "a", lease=0x999))
    # expiry deletes the keys; the minimum TTL a server grants may be raised
    short = t.call("short lease", lambda: c.lease(1, lease_id=0xDEF), lambda ls: [ls.id, ls.ttl])
    assert short is not None
    c.put("l/short", "gone soon", lease=short)
    t.note("expired key deleted", wait_for(lambda: c.get("l/short") == (None, None), "lease expiry"))
    t.call("expired lease info", lambda: c.get_lease_info(short.id), lambda r: [r.ID, r.TTL])


def lock_scenario(c: etcd3.Etcd3Client, t: Transcript) -> None:
    lock = c.lock("pylock", ttl=30)
    t.call("acquire", lambda: lock.acquire(timeout=DEADLINE))
    t.call("is_acquired", lambda: lock.is_acquired())
    other = c.lock("pylock", ttl=30)
    t.call("other acquire timeout", lambda: other.acquire(timeout=0.5))
    t.call("refresh", lambda: lock.refresh(), lambda r: [[x.TTL] for x in r])
    t.call("release", lambda: lock.release())
    t.call("release again", lambda: lock.release())
    t.call("is_acquired after", lambda: lock.is_acquired())
    t.call("other acquire", lambda: other.acquire(timeout=DEADLINE))
    t.call("lock key", lambda: sorted(m.key.decode() for _, m in c.get_prefix("/locks/")))
    other.release()
    with c.lock("ctx", ttl=30) as held:
        t.call("context manager", lambda: held.is_acquired())
    t.call("context manager released", lambda: held.is_acquired())


def maintenance_scenario(c: etcd3.Etcd3Client, t: Transcript) -> None:
    for i in range(5):
        c.put(f"m/{i}", str(i))
    st = t.call("status", lambda: c.status(),
                lambda s: [s.version, s.leader is not None, s.db_size > 0, s.raft_index > 0, s.raft_term > 0])
    assert st is not None
    members = t.call("members", lambda: list(c.members),
                     lambda ms: [[m.name, list(m.peer_urls) != [], list(m.client_urls) != []] for m in ms])
    assert members
    me = members[0]
    t.call("status leader is a member", lambda: st.leader.id == me.id)
    t.call("hash", lambda: c.hash(), lambda h: isinstance(h, int))
    t.call("defragment", lambda: c.defragment(), lambda r: type(r).__name__)
    t.call("list_alarms none", lambda: list(c.list_alarms()), lambda r: [[a.alarm_type, a.member_id] for a in r])
    t.call("create_alarm", lambda: c.create_alarm(), lambda r: [[a.alarm_type, a.member_id == 0] for a in r])
    t.call("list_alarms", lambda: list(c.list_alarms()), lambda r: [[a.alarm_type, a.member_id == me.id] for a in r])
    t.call("create_alarm member", lambda: c.create_alarm(member_id=me.id),
           lambda r: [[a.alarm_type, a.member_id == me.id] for a in r])
    # etcd keeps alarms in a Go map: their order is etcd's to vary
    t.call("list_alarms member", lambda: list(c.list_alarms(member_id=me.id)),
           lambda r: sorted([a.alarm_type, a.member_id == me.id] for a in r))
    t.call("put under NOSPACE", lambda: c.put("m/x", "y"))
    t.call("disarm_alarm", lambda: c.disarm_alarm(member_id=me.id),
           lambda r: [[a.alarm_type, a.member_id == me.id] for a in r])
    t.call("list_alarms after one disarm", lambda: list(c.list_alarms()),
           lambda r: [[a.alarm_type, a.member_id] for a in r])
    t.call("disarm_alarm member 0", lambda: c.disarm_alarm(),
           lambda r: [[a.alarm_type, a.member_id] for a in r])
    t.call("list_alarms after", lambda: list(c.list_alarms()), lambda r: [[a.alarm_type] for a in r])
    t.call("put after disarm", lambda: c.put("m/x", "y"), lambda r: r.header.revision)
    buf = io.BytesIO()
    t.call("snapshot", lambda: c.snapshot(buf))
    t.note("snapshot size > 0", buf.tell() > 0)
    rev = c.put("m/c", "1").header.revision
    t.call("compact", lambda: c.compact(rev - 2), lambda r: type(r).__name__)
    t.call("compact again", lambda: c.compact(rev - 2), lambda r: type(r).__name__)
    t.call("compact future", lambda: c.compact(rev + 100), lambda r: type(r).__name__)
    t.call("compact physical", lambda: c.compact(rev, physical=True), lambda r: type(r).__name__)
    own = list(me.peer_urls)[0]

    def peers() -> list[str]:
        """Every member's peer URLs, this member's (a free port) as <self>."""
        return sorted("<self>" if u == own else u for m in c.members for u in m.peer_urls)

    # membership errors on a healthy cluster of one
    t.call("remove unknown member", lambda: c.remove_member(12345))
    t.call("update unknown member", lambda: c.update_member(12345, ["http://127.0.0.1:3"]))
    t.call("add duplicate peer url", lambda: c.add_member([list(me.peer_urls)[0]]))
    t.call("add bad url", lambda: c.add_member(["not a url"]))
    # update and remove on a learner, which needs no quorum of its own; etcd3's
    # protos predate learners, so the add sends MemberAddRequest's isLearner
    # (field 2) by hand
    add = c.channel.unary_unary("/etcdserverpb.Cluster/MemberAdd", request_serializer=lambda b: b,
                                response_deserializer=etcd3.etcdrpc.MemberAddResponse.FromString)
    req = etcd3.etcdrpc.MemberAddRequest(peerURLs=["http://127.0.0.1:4"]).SerializeToString() + b"\x10\x01"
    learner = add(req, timeout=DEADLINE).member.ID
    t.call("members with a learner", peers)
    t.call("update_member", lambda: c.update_member(learner, ["http://127.0.0.1:5"]))
    t.call("members after update", peers)
    t.call("remove_member", lambda: c.remove_member(learner))
    t.call("members after remove", peers)
    # a voter that never starts: a cluster of one may grow to two, but then
    # etcd's strict reconfiguration check refuses what would need it
    t.call("add_member", lambda: c.add_member(["http://127.0.0.1:1"]),
           lambda m: [m.name, list(m.peer_urls), list(m.client_urls)])
    t.call("members after add", peers)
    t.call("add another with quorum lost", lambda: c.add_member(["http://127.0.0.1:2"]))
    t.call("add duplicate with quorum lost", lambda: c.add_member(["http://127.0.0.1:1"]))
    t.call("remove unknown with quorum lost", lambda: c.remove_member(12345))


def errors_scenario(c: etcd3.Etcd3Client, t: Transcript) -> None:
    t.call("revoke unknown lease", lambda: c.revoke_lease(0x777))
    t.call("lease negative id", lambda: c.lease(10, lease_id=-5), lambda ls: [ls.id, ls.ttl])
    t.call("key too large", lambda: c.put("k" * (2 * 1024 * 1024), "v"), lambda r: r.header.revision)
    t.call("get range_end before key", lambda: c.get_range("b", "a"), lambda r: list(r))
    t.call("compact zero", lambda: c.compact(0), lambda r: type(r).__name__)


def auth_scenario(c: etcd3.Etcd3Client, t: Transcript) -> None:
    """Users, a role on a prefix, auth enabled through the client's own
    stubs; then what clients with and without credentials get."""
    from etcd3.etcdrpc import auth_pb2

    rpc = etcd3.etcdrpc
    auth = rpc.AuthStub(c.channel)
    auth.RoleAdd(rpc.AuthRoleAddRequest(name="root"), DEADLINE)
    auth.UserAdd(rpc.AuthUserAddRequest(name="root", password="rootpw"), DEADLINE)
    auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="root", role="root"), DEADLINE)
    auth.RoleAdd(rpc.AuthRoleAddRequest(name="r"), DEADLINE)
    auth.RoleGrantPermission(rpc.AuthRoleGrantPermissionRequest(
        name="r", perm=auth_pb2.Permission(permType=auth_pb2.Permission.READWRITE, key=b"a/", range_end=b"a0")),
        DEADLINE)
    auth.UserAdd(rpc.AuthUserAddRequest(name="alice", password="pw"), DEADLINE)
    auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="alice", role="r"), DEADLINE)
    auth.AuthEnable(rpc.AuthEnableRequest(), DEADLINE)
    host, port = c._url.rsplit(":", 1)
    t.call("no credentials put", lambda: c.put("a/x", "1"))
    t.call("no credentials get", lambda: c.get("a/x"), kv)
    t.call("wrong password", lambda: etcd3.client(host, int(port), user="alice", password="nope", timeout=DEADLINE))
    t.call("unknown user", lambda: etcd3.client(host, int(port), user="bob", password="pw", timeout=DEADLINE))
    # etcd3 sends its token as call credentials, which grpcio sends only over
    # TLS: on a plain channel every authenticated call fails in the client
    alice = etcd3.client(host, int(port), user="alice", password="pw", timeout=DEADLINE)
    t.call("alice put (plain channel)", lambda: alice.put("a/x", "1"), lambda r: r.header.revision)
    alice.close()
    root = etcd3.client(host, int(port), user="root", password="rootpw", timeout=DEADLINE)
    t.call("root disable auth", lambda: rpc.AuthStub(root.channel).AuthDisable(
        rpc.AuthDisableRequest(), DEADLINE, metadata=root.metadata), lambda r: type(r).__name__)
    root.close()
    t.call("after disable, no credentials", lambda: c.get("b/x"), kv)


def quorum_lost_scenario(c: etcd3.Etcd3Client, t: Transcript) -> None:
    """A cluster of one grown to two voters, the second never started: a
    change that needs the lost quorum waits as long as the client lets it
    (etcd bounds a membership change by the caller's deadline alone), so
    the client's own deadline, longer than etcd's request timeout of 7 s,
    is what ends it."""
    host, port = c._url.rsplit(":", 1)
    new = c.add_member(["http://127.0.0.1:1"])
    short = etcd3.client(host, int(port), timeout=QUORUM_LOST_DEADLINE)
    t.call("update_member without quorum", lambda: short.update_member(new.id, ["http://127.0.0.1:2"]))
    t.call("remove_member without quorum", lambda: short.remove_member(new.id))
    short.close()


SCENARIOS = {
    "quorum_lost": quorum_lost_scenario,
    "auth": auth_scenario,
    "kv": kv_scenario,
    "txn": txn_scenario,
    "watch": watch_scenario,
    "lease": lease_scenario,
    "lock": lock_scenario,
    "maintenance": maintenance_scenario,
    "errors": errors_scenario,
}


def unreachable() -> list[list[Any]]:
    """What the client raises when nothing listens (port 1 on loopback)."""
    t = Transcript()
    c = etcd3.client("127.0.0.1", 1, timeout=5)
    t.call("get", lambda: c.get("x"), kv)
    t.call("put", lambda: c.put("x", "y"))
    t.call("status", lambda: c.status())
    c.close()
    return t.steps


def main() -> None:
    endpoint, scenario = sys.argv[1], sys.argv[2]
    if scenario == "unreachable":
        print(json.dumps(unreachable()))
        return
    host, port = endpoint.rsplit(":", 1)
    c = etcd3.client(host, int(port), timeout=DEADLINE)
    t = Transcript()
    try:
        SCENARIOS[scenario](c, t)
    finally:
        c.close()
    print(json.dumps(t.steps))


if __name__ == "__main__":
    main()
