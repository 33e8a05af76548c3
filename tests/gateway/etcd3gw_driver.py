"""OpenStack's etcd3gw (PyPI) driven through its public surface: a transcript.

``run(url)`` runs every scenario against the JSON gateway at url (a fresh
server) and returns a JSON-able transcript: one [step, result] pair per
call, where a result is the call's value reduced to plain data or the
exception it raised (etcd3gw's class, and the gateway's error body it
carries). test_etcd3gw.py runs it against petcd and real etcd at once and
compares.

Values that differ between any two servers by nature are replaced with
stable stand-ins: lease ids (etcd draws them from its member id and the
clock), the lock's uuid, member and cluster ids, raft terms, database sizes
and URLs.
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from base64 import b64encode
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import etcd3gw

DEADLINE = 30.0  # seconds any wait below may take on a loaded machine
SHORT = 1.0  # seconds a watch_once waits where nothing is to come


class Transcript:
    """The steps so far, and the stand-ins handed out for ids."""

    def __init__(self) -> None:
        self.steps: list[list[Any]] = []
        self.names: dict[str, str] = {}

    def name(self, value: Any, kind: str = "lease") -> Any:
        """The stand-in for an id: the same for the same id in both transcripts."""
        if value in (None, 0, "0"):
            return value
        key = str(value)
        if key not in self.names:
            self.names[key] = f"{kind}#{sum(v.startswith(kind) for v in self.names.values()) + 1}"
        return self.names[key]

    def scrub(self, v: Any) -> Any:
        """A gateway answer with what differs by nature replaced."""
        if isinstance(v, dict):
            out: dict[str, Any] = {}
            for k, x in v.items():
                if k == "header":
                    out[k] = {"revision": x.get("revision")}  # ids and raft term differ by nature
                elif k in ("ID", "lease"):
                    out[k] = self.name(x)
                else:
                    out[k] = self.scrub(x)
            return out
        if isinstance(v, list):
            return [self.scrub(x) for x in v]
        if isinstance(v, bytes):
            v = v.decode("utf-8", "backslashreplace")
        if isinstance(v, str):
            for raw, stand_in in self.names.items():
                v = v.replace(raw, stand_in)
            return v
        return v

    def error(self, e: BaseException) -> dict[str, Any]:
        out: dict[str, Any] = {"raised": type(e).__name__, "args": [self.scrub(str(a)) for a in e.args]}
        detail = getattr(e, "detail_text", None)
        if detail is not None:
            try:
                out["detail"] = self.scrub(json.loads(detail))
            except ValueError:
                out["detail"] = self.scrub(detail)
        return out

    def call(self, step: str, fn: Callable[[], Any], shape: Callable[[Any], Any] | None = None) -> Any:
        """Run one client call and record its shaped result or its exception."""
        try:
            v = fn()
        except Exception as e:  # the exception is the result being compared
            self.steps.append([step, self.error(e)])
            return None
        self.steps.append([step, self.scrub(shape(v) if shape else v)])
        return v

    def note(self, step: str, value: Any) -> None:
        self.steps.append([step, self.scrub(value)])


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


def b64(s: str) -> str:
    return b64encode(s.encode()).decode()


def values_meta(pairs: Any) -> list[Any]:
    return [[v, m] for v, m in pairs]


def kv_scenario(c: etcd3gw.Etcd3Client, t: Transcript) -> None:
    for k, v in [("k/a", "1"), ("k/b", "22"), ("k/c", "3"), ("zz", "out")]:
        t.call(f"put {k}", lambda k=k, v=v: c.put(k, v))
    t.call("put a again", lambda: c.put("k/a", "1b"))
    t.call("put empty key", lambda: c.put("", "x"))
    t.call("get", lambda: c.get("k/a"))
    t.call("get missing", lambda: c.get("nope"))
    t.call("get metadata", lambda: c.get("k/a", metadata=True), values_meta)
    t.call("get range_end", lambda: c.get("k/a", range_end="k/c"))
    t.call("get limit", lambda: c.get("k/", range_end="k0", limit=2))
    t.call("get revision", lambda: c.get("k/a", revision=2))
    t.call("get future revision", lambda: c.get("k/a", revision=1000))
    t.call("get keys_only", lambda: c.get("k/a", metadata=True, keys_only=True), values_meta)
    t.call("get count_only", lambda: c.get("k/", range_end="k0", count_only=True))
    t.call("get serializable", lambda: c.get("k/a", serializable=True))
    t.call("get min_mod_revision", lambda: c.get("k/", range_end="k0", min_mod_revision=4))
    t.call("get max_create_revision", lambda: c.get("k/", range_end="k0", max_create_revision=3))
    for order in ("ascend", "descend"):
        for target in ("key", "version", "create", "mod", "value"):
            t.call(f"get_prefix sort {order} {target}",
                   lambda o=order, tg=target: c.get_prefix("k/", sort_order=o, sort_target=tg),
                   lambda r: [m["key"] for _, m in r])
    for target in ("version", "create", "mod", "value"):  # no order with a target: etcd sorts ascending
        t.call(f"get_prefix sort target {target} only", lambda tg=target: c.get_prefix("k/", sort_target=tg),
               lambda r: [m["key"] for _, m in r])
    t.call("get_prefix descend only", lambda: c.get_prefix("k/", sort_order="descend"),
           lambda r: [m["key"] for _, m in r])
    t.call("get_prefix", lambda: c.get_prefix("k/"), values_meta)
    t.call("get_all", lambda: c.get_all(), values_meta)
    t.call("get_all descend", lambda: c.get_all(sort_order="descend"), lambda r: [m["key"] for _, m in r])
    t.call("create existing", lambda: c.create("k/a", "x"))
    t.call("create new", lambda: c.create("k/d", "4"))
    t.call("replace wrong", lambda: c.replace("k/d", "nope", "5"))
    t.call("replace right", lambda: c.replace("k/d", "4", "5"))
    t.call("replace missing", lambda: c.replace("k/none", "", "5"))
    t.call("delete", lambda: c.delete("k/d"))
    t.call("delete again", lambda: c.delete("k/d"))
    t.call("delete prev_kv", lambda: c.delete("k/c", prev_kv=True))
    t.call("delete_prefix", lambda: c.delete_prefix("k/"))
    t.call("delete_prefix again", lambda: c.delete_prefix("k/"))
    t.call("get_prefix after", lambda: c.get_prefix("k/"), values_meta)
    t.call("put binary value", lambda: c.put("k/bin", b"\xff\x00\xfe"))
    t.call("get binary value", lambda: c.get("k/bin"), lambda r: [v.hex() for v in r])
    t.call("put unicode key", lambda: c.put("k/\u00e9", "\u00fc"))
    t.call("get unicode key", lambda: c.get("k/\u00e9", metadata=True), values_meta)
    t.call("put empty value", lambda: c.put("k/empty", ""))
    t.call("get empty value", lambda: c.get("k/empty", metadata=True), values_meta)
    with warnings.catch_warnings():  # etcd3gw warns that it passes an unknown argument on as is
        warnings.simplefilter("ignore", DeprecationWarning)
        t.call("get unknown argument", lambda: c.get("k/empty", nonsense=1))
    t.call("delete range_end", lambda: c.delete("k/", range_end="k0", prev_kv=True))
    t.call("raw range bad sort", lambda: c.post(c.get_url("/kv/range"), json={"key": b64("k"), "sort_order": 7}))
    t.call("raw range negative limit", lambda: c.post(c.get_url("/kv/range"), json={"key": b64("k"), "limit": -1}))
    t.call("raw put value not base64", lambda: c.post(c.get_url("/kv/put"), json={"key": b64("k"), "value": "?"}))
    t.call("raw compact", lambda: c.post(c.get_url("/kv/compaction"), json={"revision": 3}))
    t.call("get compacted", lambda: c.get("zz", revision=2))
    t.call("raw compact again", lambda: c.post(c.get_url("/kv/compaction"), json={"revision": 3}))


def txn_scenario(c: etcd3gw.Etcd3Client, t: Transcript) -> None:
    c.put("t/x", "1")
    c.put("t/y", "2")
    t.call("txn value equal", lambda: c.transaction({
        "compare": [{"key": b64("t/x"), "result": "EQUAL", "target": "VALUE", "value": b64("1")}],
        "success": [{"request_put": {"key": b64("t/x"), "value": b64("2"), "prev_kv": True}},
                    {"request_range": {"key": b64("t/y")}}],
        "failure": [{"request_range": {"key": b64("t/x")}}]}))
    t.call("txn value equal again", lambda: c.transaction({
        "compare": [{"key": b64("t/x"), "result": "EQUAL", "target": "VALUE", "value": b64("1")}],
        "success": [{"request_put": {"key": b64("t/x"), "value": b64("3")}}],
        "failure": [{"request_range": {"key": b64("t/x")}},
                    {"request_delete_range": {"key": b64("t/y"), "prev_kv": True}}]}))
    t.call("txn version greater", lambda: c.transaction({
        "compare": [{"key": b64("t/x"), "result": "GREATER", "target": "VERSION", "version": 1},
                    {"key": b64("t/x"), "result": "LESS", "target": "MOD", "mod_revision": 100}],
        "success": [{"request_range": {"key": b64("t/"), "range_end": b64("t0")}}]}))
    t.call("txn create zero", lambda: c.transaction({
        "compare": [{"key": b64("t/new"), "result": "EQUAL", "target": "CREATE", "create_revision": 0}],
        "success": [{"request_put": {"key": b64("t/new"), "value": b64("n")}}]}))
    t.call("txn not equal", lambda: c.transaction({
        "compare": [{"key": b64("t/new"), "result": "NOT_EQUAL", "target": "VALUE", "value": b64("n")}],
        "success": [], "failure": []}))
    t.call("txn nested", lambda: c.transaction({
        "compare": [],
        "success": [{"request_txn": {"compare": [], "success": [{"request_range": {"key": b64("t/x")}}]}}]}))
    t.call("txn duplicate put", lambda: c.transaction({
        "compare": [], "success": [{"request_put": {"key": b64("t/d"), "value": b64("1")}},
                                   {"request_put": {"key": b64("t/d"), "value": b64("2")}}]}))
    t.call("txn too many ops", lambda: c.transaction({
        "compare": [], "success": [{"request_put": {"key": b64(f"t/m{i}"), "value": b64("v")}}
                                   for i in range(129)]}))
    t.call("txn bad json", lambda: c.transaction({"compare": "nope"}))
    t.call("txn empty", lambda: c.transaction({}))
    t.call("txn range options", lambda: c.transaction({
        "compare": [], "success": [
            {"request_range": {"key": b64("t/"), "range_end": b64("t0"), "limit": 1, "sort_order": "DESCEND",
                               "sort_target": "KEY"}},
            {"request_range": {"key": b64("t/"), "range_end": b64("t0"), "keys_only": True}},
            {"request_range": {"key": b64("t/"), "range_end": b64("t0"), "count_only": True}},
            {"request_range": {"key": b64("t/none")}},
            {"request_delete_range": {"key": b64("t/none"), "prev_kv": True}},
            {"request_put": {"key": b64("t/x"), "value": b64("9"), "prev_kv": True, "ignore_lease": True}}]}))
    t.call("txn compare range_end", lambda: c.transaction({
        "compare": [{"key": b64("t/"), "range_end": b64("t0"), "result": "GREATER", "target": "CREATE",
                     "create_revision": 0}],
        "success": [{"request_range": {"key": b64("t/x")}}]}))
    t.call("txn compare lease", lambda: c.transaction({
        "compare": [{"key": b64("t/x"), "result": "EQUAL", "target": "LEASE", "lease": 0}], "success": []}))
    t.call("txn compare missing key", lambda: c.transaction({
        "compare": [{"key": b64("t/none"), "result": "EQUAL", "target": "VALUE", "value": ""}], "success": []}))
    t.call("txn compare bad target", lambda: c.transaction({
        "compare": [{"key": b64("t/x"), "result": "EQUAL", "target": "NOPE"}], "success": []}))
    t.call("txn ignore_value missing", lambda: c.transaction({
        "compare": [], "success": [{"request_put": {"key": b64("t/none"), "ignore_value": True}}]}))
    t.call("txn missing lease", lambda: c.transaction({
        "compare": [], "success": [{"request_put": {"key": b64("t/l"), "value": b64("1"), "lease": 12345}}]}))


def lease_scenario(c: etcd3gw.Etcd3Client, t: Transcript) -> None:
    lease = t.call("grant", lambda: c.lease(ttl=30), lambda r: t.name(r.id))
    assert lease is not None
    t.call("put with lease", lambda: c.put("l/a", "1", lease=lease))
    t.call("put with lease 2", lambda: c.put("l/b", "2", lease=lease))
    t.call("get leased", lambda: c.get("l/a", metadata=True), values_meta)
    t.call("ttl", lambda: lease.ttl(), lambda r: 25 < r <= 30)
    t.call("refresh", lambda: lease.refresh())
    # etcd lists a lease's keys from a Go map, in no fixed order: sorted here
    t.call("keys", lambda: sorted(lease.keys()))
    t.call("raw leases", lambda: c.post(c.get_url("/lease/leases"), json={}))
    t.call("raw grant duplicate", lambda: c.post(c.get_url("/lease/grant"), json={"TTL": 30, "ID": lease.id}))
    t.call("revoke", lambda: lease.revoke())
    t.call("keys gone", lambda: c.get_prefix("l/"))
    t.call("revoke again", lambda: lease.revoke())
    t.call("ttl revoked", lambda: lease.ttl())
    t.call("refresh revoked", lambda: lease.refresh())
    t.call("keys revoked", lambda: lease.keys())
    t.call("put with revoked lease", lambda: c.put("l/c", "1", lease=lease))
    t.call("grant ttl 0", lambda: c.lease(ttl=0), lambda r: [t.name(r.id), r.ttl()])
    t.call("grant too large ttl", lambda: c.lease(ttl=9_000_000_001), lambda r: t.name(r.id))


def lock_scenario(c: etcd3gw.Etcd3Client, t: Transcript) -> None:
    lock = c.lock("gw-lock", ttl=30)
    t.call("acquire", lock.acquire)
    t.names[lock.uuid] = "uuid#1"
    t.call("is_acquired", lock.is_acquired)
    t.call("lock key", lambda: c.get("/locks/gw-lock", metadata=True), values_meta)
    other = c.lock("gw-lock", ttl=30)
    t.names[other.uuid] = "uuid#2"
    t.call("other acquire", other.acquire)
    t.call("other is_acquired", other.is_acquired)
    t.call("refresh", lock.refresh)
    t.call("release", lock.release)
    t.call("release again", lock.release)
    t.call("other acquire after release", other.acquire)
    t.call("other release", other.release)
    fresh = c.lock("never", ttl=30)
    t.call("refresh before acquire", fresh.refresh)
    with c.lock("ctx", ttl=30) as held:
        t.names[held.uuid] = "uuid#3"
        t.note("context manager holds", held.is_acquired())
    t.note("context manager released", held.is_acquired())


def watch_scenario(c: etcd3gw.Etcd3Client, t: Transcript) -> None:
    t.call("put before", lambda: c.put("w/a", "0"))
    events, cancel = c.watch_prefix("w/", prev_kv=True)
    got: list[Any] = []

    def consume() -> None:
        for ev in events:
            got.append(ev)

    th = threading.Thread(target=consume, daemon=True)
    th.start()
    try:
        # the watch is created asynchronously: it sees the history from the
        # revision after "put before" once it is there
        rev = int(c.get("w/a", metadata=True)[0][1]["mod_revision"])
        start_events, start_cancel = c.watch_prefix("w/", start_revision=rev + 1, prev_kv=True)
        replay: list[Any] = []
        th2 = threading.Thread(target=lambda: replay.extend(e for e in start_events), daemon=True)
        th2.start()
        t.call("put a", lambda: c.put("w/a", "1"))
        t.call("put b", lambda: c.put("w/b", "2"))
        t.call("delete a", lambda: c.delete("w/a"))
        t.call("put outside", lambda: c.put("x", "1"))
        t.call("from start_revision", lambda: wait_for(lambda: len(replay) >= 3 and replay[:3], "three events"))
        start_cancel()
        th2.join(10)
    finally:
        cancel()
        th.join(10)
    t.note("prefix watch saw some", bool(got))
    filt_events, filt_cancel = c.watch("w/b", filters=["NOPUT"], start_revision=rev)
    filt: list[Any] = []
    th3 = threading.Thread(target=lambda: filt.extend(e for e in filt_events), daemon=True)
    th3.start()
    t.call("delete b", lambda: c.delete("w/b"))
    t.call("filtered NOPUT", lambda: wait_for(lambda: filt[:1], "the delete"))
    filt_cancel()
    th3.join(10)
    t.call("watch_once past", lambda: c.watch_once("w/a", timeout=DEADLINE, start_revision=rev))
    # etcd3gw's watch_prefix_once encodes range_end twice (base64 of base64),
    # so the range it asks for is empty and it waits out its timeout
    t.call("watch_prefix_once past", lambda: c.watch_prefix_once("w/", timeout=SHORT, start_revision=rev + 2))
    t.call("watch_once timeout", lambda: c.watch_once("w/none", timeout=SHORT))
    # a watch from a compacted revision is cancelled: etcd3gw passes over the
    # cancel and waits out its timeout
    t.call("compact", lambda: c.post(c.get_url("/kv/compaction"), json={"revision": rev}))
    t.call("watch_once compacted", lambda: c.watch_once("w/a", timeout=SHORT, start_revision=rev - 1))
    # a burst of writes, each its own response on the watch stream: etcd3gw
    # reads one JSON object per HTTP chunk, so a server that put two in one
    # chunk would break it
    # (from the next revision, so that no write need wait for the watch)
    start = int(c.status()["header"]["revision"]) + 1
    burst_events, burst_cancel = c.watch_prefix("burst/", prev_kv=True, start_revision=start)
    burst: list[Any] = []
    th5 = threading.Thread(target=lambda: burst.extend(e for e in burst_events), daemon=True)
    th5.start()
    try:
        writers = [threading.Thread(target=lambda i=i: [c.put(f"burst/{i}", str(j)) for j in range(10)])
                   for i in range(1, 6)]
        for w in writers:
            w.start()
        for w in writers:
            w.join(DEADLINE)
        t.call("burst seen", lambda: wait_for(lambda: len(burst) >= 50 and len(burst), "fifty events"))
    finally:
        burst_cancel()
        th5.join(10)
    t.call("burst thread done", lambda: not th5.is_alive())
    c.delete_prefix("burst/")
    # watch_once while a writer puts: from the next revision, so that the
    # put is seen whether the watch is in place before it or not
    now = int(c.status()["header"]["revision"])
    result: list[Any] = []
    th4 = threading.Thread(target=lambda: result.append(c.watch_once("w/live", timeout=DEADLINE,
                                                                     start_revision=now + 1)), daemon=True)
    th4.start()
    t.call("put live", lambda: c.put("w/live", "v"))
    th4.join(DEADLINE)
    t.note("watch_once live", result)


def by_id(members: list[dict[str, Any]]) -> bool:
    """Whether members are in the order of their IDs (as uint64s)."""
    ids = [int(m["ID"]) for m in members]
    return ids == sorted(ids)


def maintenance_scenario(c: etcd3gw.Etcd3Client, t: Transcript) -> None:
    t.call("status", c.status, lambda r: {
        "version": r["version"], "revision": r["header"]["revision"],
        "is_leader": r["leader"] == r["header"]["member_id"], "fields": sorted(r)})
    t.call("members", c.members, lambda ms: [{"fields": sorted(m), "name": bool(m.get("name")),
                                             "peerURLs": len(m["peerURLs"]), "clientURLs": len(m["clientURLs"])}
                                            for m in ms])
    t.call("raw alarm list", lambda: c.post(c.get_url("/maintenance/alarm"), json={"action": "GET"}))
    t.call("raw member remove unknown", lambda: c.post(c.get_url("/cluster/member/remove"), json={"ID": 12345}))
    t.call("raw unknown path", lambda: c.post(c.get_url("/kv/nope"), json={}))
    added = t.call("raw add learner", lambda: c.post(c.get_url("/cluster/member/add"),
                                                      json={"peerURLs": ["http://127.0.0.1:1"], "isLearner": True}),
                   lambda r: {"member": sorted(r["member"]), "learner": r["member"].get("isLearner"),
                              "members": sorted([sorted(m) for m in r["members"]]),
                              "by id": by_id(r["members"])})
    # members come sorted by ID, which each server draws at random: the
    # order is compared as "sorted by ID", the fields member by member
    t.call("members with learner", c.members, lambda ms: [sorted([sorted(m) for m in ms]), by_id(ms)])
    if added:
        t.call("raw promote learner", lambda: c.post(c.get_url("/cluster/member/promote"),
                                                     json={"ID": added["member"]["ID"]}))
        t.call("raw remove learner", lambda: c.post(c.get_url("/cluster/member/remove"),
                                                    json={"ID": added["member"]["ID"]}),
               lambda r: [sorted(m) for m in r["members"]])


def large_scenario(c: etcd3gw.Etcd3Client, t: Transcript) -> None:
    """Values near etcd's limits through the gateway (its loopback gRPC client
    takes responses of any size)."""
    mib = 1024 * 1024
    t.call("put 1 MiB", lambda: c.put("big/a", "x" * mib))
    t.call("put just over 1.5 MiB", lambda: c.put("big/b", "x" * (3 * mib // 2)))
    t.call("put over 2 MiB", lambda: c.put("big/c", "x" * (21 * mib // 10)))
    for k in "fghi":
        t.call(f"put 1.2 MiB {k}", lambda k=k: c.put(f"big/{k}", "x" * (12 * mib // 10)))
    t.call("get over 4 MiB", lambda: c.get_prefix("big/"), lambda r: [[len(v), m["key"]] for v, m in r])
    t.call("delete", lambda: c.delete_prefix("big/"))


def auth_scenario(c: etcd3gw.Etcd3Client, t: Transcript) -> None:
    """etcd3gw has no auth of its own; its users hand it a requests session
    carrying the token the gateway's /auth/authenticate gave them."""
    import requests

    def post(path: str, body: dict[str, Any], client: etcd3gw.Etcd3Client = c) -> Any:
        return client.post(client.get_url(path), json=body)

    t.call("user add root", lambda: post("/auth/user/add", {"name": "root", "password": "rootpw"}))
    t.call("grant root", lambda: post("/auth/user/grant", {"user": "root", "role": "root"}))
    t.call("user add alice", lambda: post("/auth/user/add", {"name": "alice", "password": "alicepw"}))
    t.call("role add", lambda: post("/auth/role/add", {"name": "reader"}))
    t.call("role grant", lambda: post("/auth/role/grant", {
        "name": "reader", "perm": {"permType": "READ", "key": b64("pub/"), "range_end": b64("pub0")}}))
    t.call("grant alice", lambda: post("/auth/user/grant", {"user": "alice", "role": "reader"}))
    t.call("user list", lambda: post("/auth/user/list", {}))
    t.call("role get", lambda: post("/auth/role/get", {"role": "reader"}))
    c.put("pub/a", "1")
    t.call("enable", lambda: post("/auth/enable", {}))
    t.call("get without token", lambda: c.get("pub/a"))
    t.call("authenticate wrong", lambda: post("/auth/authenticate", {"name": "alice", "password": "nope"}))
    token = c.post(c.get_url("/auth/authenticate"), json={"name": "alice", "password": "alicepw"})["token"]
    root_token = c.post(c.get_url("/auth/authenticate"), json={"name": "root", "password": "rootpw"})["token"]
    parts = urlsplit(c.base_url)
    assert parts.hostname is not None and parts.port is not None

    def client_with(tok: str) -> etcd3gw.Etcd3Client:
        session = requests.Session()
        session.headers["Authorization"] = tok
        return etcd3gw.client(host=parts.hostname, port=parts.port, timeout=DEADLINE, session=session)

    alice, root, bad = client_with(token), client_with(root_token), client_with("not-a-token")
    t.call("alice get inside", lambda: alice.get("pub/a"))
    t.call("alice get outside", lambda: alice.get("priv/a"))
    t.call("alice put inside", lambda: alice.put("pub/a", "2"))
    t.call("alice txn outside", lambda: alice.transaction({
        "compare": [], "success": [{"request_range": {"key": b64("priv/a")}}]}))
    t.call("alice lease", lambda: alice.lease(ttl=30), lambda r: t.name(r.id))
    t.call("alice lock", lambda: alice.lock("l", ttl=30).acquire())
    t.call("alice watch_once outside", lambda: alice.watch_once("priv/a", timeout=SHORT))
    t.call("alice user list", lambda: post("/auth/user/list", {}, alice))
    t.call("bad token get", lambda: bad.get("pub/a"))
    t.call("root put", lambda: root.put("priv/a", "r"))
    t.call("root status", lambda: root.status(), lambda r: r["version"])
    t.call("root disable", lambda: post("/auth/disable", {}, root))
    t.call("get after disable", lambda: c.get("priv/a"))


SCENARIOS = {"kv": kv_scenario, "large": large_scenario, "txn": txn_scenario, "lease": lease_scenario, "lock": lock_scenario,
             "watch": watch_scenario, "maintenance": maintenance_scenario, "auth": auth_scenario}


def run(url: str) -> dict[str, list[list[Any]]]:
    """Every scenario's transcript against the gateway at url, one after another."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    out: dict[str, list[list[Any]]] = {}
    for name, scenario in SCENARIOS.items():
        c = etcd3gw.client(host=parts.hostname, port=parts.port, timeout=DEADLINE)
        t = Transcript()
        try:
            scenario(c, t)
        except Exception as e:  # a scenario that breaks shows as a step, with its own assertion below
            t.steps.append(["scenario failed", t.error(e)])
        out[name] = t.steps
    return out

