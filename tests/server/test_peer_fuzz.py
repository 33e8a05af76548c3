"""The peer port under hostile input: a seeded fuzzer against a real 3-member cluster.

It speaks petcd's peer wire format (petcd/server/transport.py) over real
sockets: raft messages of every type, built with plausible values for this
cluster (its member and cluster ids, its current term and index) and then
mutated, with fields at their extremes (0, 2**31, 2**32, 2**63, 2**64-1,
just past the current term...), message and entry types out of range, entry
lists too long or inconsistent, snapshots with impossible metadata or data
that is no backend, contexts past the size limits, corrupted and truncated
frames, lying length prefixes, and handshakes that are wrong in every field.

After the run: every member is alive, accepts writes and serves linearizable
reads, and restarts cleanly; its WAL holds a hard state whose term is sane
(at most raft's MAX_TERM) and a log whose terms and indexes are in order.

What the fuzzer does not send: a message a real member could have sent, with
content the cluster would then replicate (a well-formed append of new
entries at the current term and log position, a proposal of a membership
change or of bytes the applier cannot decode). Like etcd's, petcd's peer port
trusts its members; those are forgeries, not malformed input, and peer TLS or
a private network is what keeps them out. So every MsgApp gets at least one
impossibility (a log term above its term; entries that do not follow its
index), and proposals carry no-op entries only. Heartbeats may carry any
commit: raft commits no further than a follower has matched with its leader.

The seed is fixed (PETCD_FUZZ_SEED to change it); the run lasts
PETCD_FUZZ_SECONDS (8 by default).
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from petcd.proto import raft_pb2, rpc_pb2
from petcd.raft import Message, MessageType
from petcd.raft.bounds import MAX_INDEX, MAX_TERM, MAX_TERM_STEP, UINT64_MAX
from petcd.server.transport import MAGIC, MEMBERS_MAGIC
from petcd.storage.wal import WAL
from petcd.testing.harness import Server, petcd_cluster, wait_for

FUZZ_SECONDS = float(os.environ.get("PETCD_FUZZ_SECONDS", "8"))
SEED = int(os.environ.get("PETCD_FUZZ_SEED", "20261201"))
MT = MessageType
_HANDSHAKE = struct.Struct(">10sQQQ")
_LEN = struct.Struct(">I")
_LMDB_HEAD = bytes.fromhex("00000000000000000000080000000000dec0efbe01000000")  # an LMDB meta page's start
EXTREMES = [0, 1, 2, 0x7F, 0x80, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53, 2**62, MAX_TERM - 1, MAX_TERM,
            MAX_TERM + 1, UINT64_MAX - 1, UINT64_MAX]


@dataclass
class ClusterInfo:
    """What the fuzzer knows of the cluster it attacks, as any peer on the network could."""

    cluster_id: int
    ids: list[int]
    ports: list[int]
    term: int
    index: int
    members: list[Server]

    def status(self, i: int) -> rpc_pb2.StatusResponse:
        return _status(self.members[i])


@dataclass
class Stats:
    connections: int = 0
    frames: int = 0
    refused: int = 0  # connections the member closed on us (or reset)
    kinds: dict[str, int] = field(default_factory=dict)


def _peer_port(s: Server) -> int:
    return int(s.args[s.args.index("--listen-peer-urls") + 1].rsplit(":", 1)[1])


def _status(s: Server) -> rpc_pb2.StatusResponse:
    return s.maintenance().Status(rpc_pb2.StatusRequest(), timeout=5)


def _cluster_info(members: list[Server]) -> ClusterInfo:
    st = [_status(m) for m in members]
    return ClusterInfo(st[0].header.cluster_id, [s.header.member_id for s in st], [_peer_port(m) for m in members],
                       max(s.raftTerm for s in st), max(s.raftIndex for s in st), members)


class Fuzzer:
    """Builds hostile frames for one cluster from a seeded generator (no clock, no global randomness)."""

    def __init__(self, rng: random.Random, info: ClusterInfo) -> None:
        self.rng = rng
        self.info = info

    def near(self, value: int) -> int:
        """A value for a numeric field: an extreme, or something close to a plausible value."""
        r = self.rng
        choice = r.random()
        if choice < 0.45:
            return r.choice(EXTREMES)
        if choice < 0.55:
            return r.getrandbits(64)
        if choice < 0.65:
            return min(UINT64_MAX, value + r.choice([MAX_TERM_STEP, MAX_TERM_STEP + 1, 2**40]))
        return min(UINT64_MAX, max(0, value + r.randint(-3, 3)))

    def base(self, kind: int, target: int, sender: int) -> raft_pb2.Message:
        """A plausible message of type kind from sender to target."""
        r, info = self.rng, self.info
        term = info.term + r.choice([0, 0, 1])
        index = max(0, info.index + r.randint(-3, 3))
        m = raft_pb2.Message(type=kind, to=info.ids[target], term=term, logTerm=term, index=index,  # type: ignore[arg-type]
                             commit=index)
        setattr(m, "from", sender)
        if kind == MT.MsgApp:
            for k in range(r.choice([0, 1, 3, 20])):
                m.entries.add(Term=term, Index=index + 1 + k)
        elif kind == MT.MsgProp:
            m.term = 0
            m.entries.add(Data=b"")
        elif kind in (MT.MsgReadIndex, MT.MsgReadIndexResp):
            m.entries.add(Data=r.randbytes(8))
            if kind == MT.MsgReadIndex:
                m.term = 0
        elif kind == MT.MsgSnap:
            m.snapshot.metadata.index = index + r.randint(1, 1000)
            m.snapshot.metadata.term = term
            m.snapshot.metadata.conf_state.voters.extend(info.ids)
            data = r.choice([b"", r.randbytes(r.choice([10, 5000, 70_000])), _LMDB_HEAD + r.randbytes(20_000)])
            m.snapshot.data = data
        elif kind == MT.MsgAppResp:
            m.reject = r.random() < 0.3
            m.rejectHint = index
        elif kind in (MT.MsgHeartbeat, MT.MsgHeartbeatResp):
            m.context = r.choice([b"", r.randbytes(8)])
        elif kind in (MT.MsgVote, MT.MsgPreVote):
            m.context = r.choice([b"", b"CampaignTransfer"])
        return m

    def mutate(self, m: raft_pb2.Message) -> None:
        """One to four mutations, each of one field or list."""
        r = self.rng
        for _ in range(r.randint(1, 4)):
            what = r.randrange(12)
            if what == 0:
                m.term = self.near(m.term)
            elif what == 1:
                m.logTerm = self.near(m.logTerm)
            elif what == 2:
                m.index = self.near(m.index)
            elif what == 3:
                m.commit = self.near(m.commit)
            elif what == 4:
                m.rejectHint = self.near(m.rejectHint)
                m.reject = not m.reject
            elif what == 5:
                m.vote = self.near(m.vote)
            elif what == 6:  # a type out of range, or another real one
                m.type = r.choice([19, 20, 63, 127, 128, 255, 2**31 - 1, -1, r.randrange(19)])  # type: ignore[assignment]
            elif what == 7:  # entries: many, or with extreme fields, or of an unknown type
                n = r.choice([1, 2, 500, 3000])
                for k in range(n if len(m.entries) < 3000 else 0):
                    m.entries.add(Term=m.term, Index=min(UINT64_MAX, m.index + len(m.entries) + 1 + k))
                e = m.entries[r.randrange(len(m.entries))]
                sub = r.randrange(4)
                if sub == 0:
                    e.Term = self.near(e.Term)
                elif sub == 1:
                    e.Index = self.near(e.Index)
                elif sub == 2:
                    e.Type = r.choice([3, 7, 127, 128, 2**31 - 1, -5])  # type: ignore[assignment]
                else:
                    e.Term = 0
            elif what == 8:  # a snapshot where none belongs, or a snapshot's metadata at its extremes
                md = m.snapshot.metadata
                sub = r.randrange(4)
                if sub == 0:
                    md.index = self.near(md.index)
                elif sub == 1:
                    md.term = self.near(md.term)
                elif sub == 2:
                    md.conf_state.voters.extend(r.choice([[0], [UINT64_MAX], list(range(1, 5000))]))
                else:
                    del md.conf_state.voters[:]
            elif what == 9:  # contexts from empty to past the control-frame limit
                m.context = r.randbytes(r.choice([0, 1, 17, 70_000]))
            elif what == 10:
                m.to = self.near(m.to) if r.random() < 0.5 else self.info.ids[r.randrange(len(self.info.ids))]
            else:
                setattr(m, "from", self.near(getattr(m, "from")))

    def guard(self, m: raft_pb2.Message) -> None:
        """Make every MsgApp impossible, so it cannot be a forgery the cluster would replicate or commit:
        one whose (index, log term) happened to match a member's log would commit that member's tail."""
        if m.type == MT.MsgApp:
            m.logTerm = min(UINT64_MAX, m.term + 1)  # above its own term (a term past MAX_TERM is impossible anyway)
            if len(m.entries):
                last = m.entries[-1]
                last.Index = min(UINT64_MAX, last.Index + 2) if last.Index < UINT64_MAX else 0
        if m.type == MT.MsgProp:
            for e in m.entries:
                e.Type = 0  # type: ignore[assignment]  # no membership change, ever
                # Undecodable (wire type 7 does not exist): the applier must apply it as an error on
                # every member; random bytes could decode into a valid request (an alarm, say).
                e.Data = b"\xff" + self.rng.randbytes(self.rng.choice([0, 1, 16, 300]))

    def frame(self, target: int, sender: int, corrupt: bool) -> tuple[str, bytes]:
        """One frame (length prefix included) for the connection from sender to target, and its kind:
        a well-framed raft message with mutated fields, or (corrupt) bytes damaged on the wire."""
        r = self.rng
        kind = r.choice([t for t in range(19)])
        m = self.base(kind, target, sender)
        if r.random() < 0.9:
            self.mutate(m)
        self.guard(m)
        try:
            body = m.SerializeToString()
        except ValueError:  # a value protobuf cannot encode: send the unmutated message instead
            body = self.base(kind, target, sender).SerializeToString()
        label = MT(kind).name
        roll = r.random()
        if not corrupt or roll < 0.3:
            return label, _LEN.pack(len(body)) + body
        if roll < 0.45 and body:  # flipped bytes
            b = bytearray(body)
            for _ in range(r.randint(1, 8)):
                b[r.randrange(len(b))] ^= 1 << r.randrange(8)
            return "flipped", _LEN.pack(len(b)) + bytes(b)
        if roll < 0.6:  # truncated, length prefix honest
            cut = body[: r.randrange(len(body) + 1)]
            return "truncated", _LEN.pack(len(cut)) + cut
        if roll < 0.7:  # length prefix lies
            lie = r.choice([0, 1, len(body) + 1, len(body) * 2 + 7, 0xFFFF_FFFF, 0x7FFF_FFFF, 1 << 24])
            return "lying-length", _LEN.pack(lie & 0xFFFF_FFFF) + body
        if roll < 0.85:  # an unknown field, an overlong varint, or trailing garbage
            extra = r.choice([b"\xf8\x06\x01", b"\x08" + b"\xff" * 11, r.randbytes(r.randint(1, 64))])
            return "garbage-tail", _LEN.pack(len(body) + len(extra)) + body + extra
        junk = r.randbytes(r.randint(0, 300))
        return "random", _LEN.pack(len(junk)) + junk

    def handshake(self, target: int, sender: int) -> tuple[str, bytes]:
        r, info = self.rng, self.info
        good = _HANDSHAKE.pack(MAGIC, info.cluster_id, sender, info.ids[target])
        roll = r.random()
        if roll < 0.90:
            return "ok", good
        choices = [
            ("wrong-cluster", _HANDSHAKE.pack(MAGIC, self.near(info.cluster_id) ^ 1, sender, info.ids[target])),
            ("wrong-member", _HANDSHAKE.pack(MAGIC, info.cluster_id, sender, self.near(info.ids[target]) ^ 1)),
            ("from-zero", _HANDSHAKE.pack(MAGIC, info.cluster_id, 0, info.ids[target])),
            ("from-itself", _HANDSHAKE.pack(MAGIC, info.cluster_id, info.ids[target], info.ids[target])),
            ("bad-magic", b"PETCDRAFT9" + good[10:]),
            ("short", good[: r.randrange(len(good))]),
            ("members", MEMBERS_MAGIC),
        ]
        return r.choice(choices)


def _send(port: int, payload: bytes) -> bool:
    """Write payload to the peer port and hang up; False if the member cut us off first."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(0.5)
            try:
                while s.recv(65536):
                    pass
            except TimeoutError:
                pass
        return True
    except OSError:
        return False


def fuzz(info: ClusterInfo, seconds: float, seed: int) -> Stats:
    """Send hostile connections to the members, round-robin, for `seconds`."""
    rng = random.Random(seed)
    fz = Fuzzer(rng, info)
    stats = Stats()
    deadline = time.monotonic() + seconds
    n = len(info.ids)
    k = 0
    while time.monotonic() < deadline:
        target = k % n
        k += 1
        others = [info.ids[i] for i in range(n) if i != target]
        sender = rng.choice(others) if rng.random() < 0.9 else rng.getrandbits(64) | 1
        hs_kind, payload = fz.handshake(target, sender)
        frames = []
        corrupt = rng.random() < 0.3  # else every frame is well-formed on the wire and reaches raft's checks
        for _ in range(rng.choice([1, 1, 3, 10, 30])):
            kind, fr = fz.frame(target, sender, corrupt)
            stats.kinds[kind] = stats.kinds.get(kind, 0) + 1
            frames.append(fr)
        stats.frames += len(frames)
        stats.kinds["handshake-" + hs_kind] = stats.kinds.get("handshake-" + hs_kind, 0) + 1
        if not _send(info.ports[target], payload + b"".join(frames)):
            stats.refused += 1
        stats.connections += 1
        if k % 50 == 0:  # follow the term, which forged elections move, so "plausible" stays plausible
            with contextlib.suppress(grpc.RpcError):
                st = info.status(rng.randrange(n))
                info.term, info.index = max(info.term, st.raftTerm), max(info.index, st.raftIndex)
    return stats


# ---- checks ---------------------------------------------------------------------------------------

def _put(s: Server, key: bytes, value: bytes) -> bool:
    try:
        s.kv().Put(rpc_pb2.PutRequest(key=key, value=value), timeout=5)
        return True
    except grpc.RpcError:
        return False


def _get(s: Server, key: bytes) -> bytes | None:
    resp = s.kv().Range(rpc_pb2.RangeRequest(key=key), timeout=5)  # linearizable: a read index round
    return resp.kvs[0].value if resp.kvs else None


def _reads(s: Server, key: bytes, value: bytes) -> bool:
    return _get(s, key) == value


def check_serving(members: list[Server], tag: str, timeout: float = 90.0) -> None:
    """Every member accepts a put, and every member reads every put back linearizably."""
    for i, m in enumerate(members):
        assert m.proc is not None and m.proc.poll() is None, f"member {i} died:\n{m.log_tail()}"
        key, value = f"fuzz/{tag}/{i}".encode(), f"v-{tag}-{i}".encode()
        wait_for(functools.partial(_put, m, key, value), timeout, f"a put through member {i}")
        for j, reader in enumerate(members):
            wait_for(functools.partial(_reads, reader, key, value), timeout, f"member {j} to read {key!r} linearizably")


def check_wal(m: Server) -> None:
    """The WAL of a stopped member: a sane hard state, and a log in order under it."""
    wal = WAL.open(str(m.data_dir / "member" / "wal"), None)
    try:
        contents = wal.read_all()
    finally:
        wal.close()
    hs = contents.hard_state
    assert 0 < hs.term <= MAX_TERM, f"hard state term {hs.term}"
    prev_term = 0
    for k, e in enumerate(contents.entries):
        assert e.index == contents.entries[0].index + k, f"entry {e.index} out of order"
        assert prev_term <= e.term <= hs.term, f"entry {e.index} has term {e.term} (hard state term {hs.term})"
        assert e.index <= MAX_INDEX
        prev_term = e.term
    last = contents.entries[-1].index if contents.entries else contents.snapshot.index
    assert hs.commit <= last, f"commit {hs.commit} past the last entry {last}"


def restart_each(members: list[Server]) -> None:
    """Stop each member in turn, check its WAL, start it again; it must rejoin and serve."""
    for i, m in enumerate(members):
        code = m.stop()
        assert code == 0, f"member {i} exited with {code} on SIGTERM:\n{m.log_tail()}"
        check_wal(m)
        m.start()
        check_serving(members, f"restart-{i}")


def assert_no_crash_in_logs(members: list[Server]) -> None:
    for i, m in enumerate(members):
        text = m.log_path.read_text(errors="replace")
        for bad in ('"level":"fatal"', "node loop failed", "Traceback"):
            assert bad not in text, f"member {i} logged {bad!r}:\n{m.log_tail()}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    members = petcd_cluster(tmp_path_factory.mktemp("peerfuzz"), 3)
    try:
        yield members
    finally:
        for m in members:
            m.kill()


def _frame(msg: Message) -> bytes:
    body = msg.to_bytes()
    return _LEN.pack(len(body)) + body


def test_a_term_of_2_64_minus_1_on_the_peer_port_kills_nobody(cluster: list[Server]) -> None:
    """Regression: one message with term 2**64-1 made a member adopt it; its next
    campaign's term + 1 did not fit and killed its node loop, on every restart,
    and the leader that heard the term from it died the same way."""
    info = _cluster_info(cluster)
    for t, port in enumerate(info.ports):
        sender = info.ids[(t + 1) % 3]
        to = info.ids[t]
        msgs = [Message(type=kind, to=to, from_=sender, term=UINT64_MAX, log_term=UINT64_MAX, index=info.index,
                        commit=info.index)
                for kind in (MT.MsgHeartbeat, MT.MsgApp, MT.MsgVote, MT.MsgPreVote, MT.MsgAppResp, MT.MsgTimeoutNow)]
        assert _send(port, _HANDSHAKE.pack(MAGIC, info.cluster_id, sender, to) + b"".join(map(_frame, msgs)))
    time.sleep(3)  # several election timeouts: time for the poisoned term to spread, had it been taken
    check_serving(cluster, "term-max")
    for i, m in enumerate(cluster):
        assert _status(m).raftTerm <= MAX_TERM, f"member {i} took the term"
    restart_each(cluster)
    assert_no_crash_in_logs(cluster)


def test_a_snapshot_that_is_no_backend_kills_nobody(cluster: list[Server]) -> None:
    """Found by the fuzzer: a MsgSnap in the leader's name, at the current term and past
    every member's commit, whose data is no backend (garbage, an LMDB page header and
    then garbage, nothing at all). raft took it and wrote it to the WAL, the backend
    would not open, and the member stopped, on every restart."""
    info = _cluster_info(cluster)
    lead = _status(cluster[0]).leader
    rng = random.Random(SEED)
    for t, port in enumerate(info.ports):
        if info.ids[t] == lead:
            continue
        frames = b""
        for data in (rng.randbytes(5000), _LMDB_HEAD + rng.randbytes(20_000), b""):
            snap = raft_pb2.Message(type=MT.MsgSnap, to=info.ids[t], term=info.term)  # type: ignore[arg-type]
            setattr(snap, "from", lead)
            snap.snapshot.data = data
            snap.snapshot.metadata.index = info.index + 100
            snap.snapshot.metadata.term = info.term
            snap.snapshot.metadata.conf_state.voters.extend(info.ids)
            body = snap.SerializeToString()
            frames += _LEN.pack(len(body)) + body
        assert _send(port, _HANDSHAKE.pack(MAGIC, info.cluster_id, lead, info.ids[t]) + frames)
    check_serving(cluster, "bad-snapshot")
    for i, m in enumerate(cluster):
        assert _status(m).raftIndex < info.index + 100, f"member {i} took the snapshot"
    restart_each(cluster)
    assert_no_crash_in_logs(cluster)


def _rss_mb(s: Server) -> float:
    assert s.proc is not None
    for line in Path(f"/proc/{s.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_peer_port_fuzz(cluster: list[Server]) -> None:
    info = _cluster_info(cluster)
    rss_before = [_rss_mb(m) for m in cluster]
    writes = {"ok": 0, "failed": 0}
    stop = threading.Event()

    def writer() -> None:  # client traffic during the run, so the fuzz meets a cluster at work
        k = 0
        while not stop.is_set():
            if _put(cluster[k % 3], b"fuzz/during", b"%d" % k):
                writes["ok"] += 1
            else:
                writes["failed"] += 1
            k += 1
            stop.wait(0.05)

    th = threading.Thread(target=writer, daemon=True)
    th.start()
    try:
        stats = fuzz(info, FUZZ_SECONDS, SEED)
    finally:
        stop.set()
        th.join(30)
    print(f"peer fuzz: seed {SEED}, {FUZZ_SECONDS:.0f} s, {stats.connections} connections, {stats.frames} frames, "
          f"{stats.refused} cut off; client puts during the run: {writes}; kinds: {sorted(stats.kinds.items())}")
    rss_after = [_rss_mb(m) for m in cluster]
    print(f"member RSS before/after the run (MB): {[f'{a:.0f}/{b:.0f}' for a, b in zip(rss_before, rss_after, strict=True)]}")
    assert stats.connections > 0
    for i, (a, b) in enumerate(zip(rss_before, rss_after, strict=True)):
        # hostile frames are refused before they are buffered or parsed whole: memory stays near where it was
        assert b < a + 300, f"member {i} grew from {a:.0f} MB to {b:.0f} MB"
    check_serving(cluster, "after-fuzz")
    for i, m in enumerate(cluster):
        assert _status(m).raftTerm <= MAX_TERM, f"member {i} is at term {_status(m).raftTerm}"
    restart_each(cluster)
    assert_no_crash_in_logs(cluster)
