"""The client's data: what reads and watches return, and the comparison
and operation vocabulary of transactions. Keys and values are accepted as
``str`` (UTF-8) or ``bytes`` and always returned as ``bytes``."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from petcd.proto import kv_pb2, rpc_pb2

Bytes = Union[str, bytes]  # noqa: UP007 - used at run time in isinstance-free annotations


def to_bytes(value: Bytes) -> bytes:
    """bytes from str (UTF-8) or bytes; anything else is a TypeError."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"keys and values are str or bytes, not {type(value).__name__}")


def prefix_end(prefix: bytes) -> bytes:
    """The range end that selects every key starting with prefix (etcd's
    GetPrefixRangeEnd): the prefix with its last byte below 0xff incremented,
    or b"\\0" (to the end of the keyspace) when there is none."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


@dataclass(slots=True)
class KeyValue:
    """One key's state at a revision."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_pb(cls, p: kv_pb2.KeyValue) -> KeyValue:
        return cls(p.key, p.value, p.create_revision, p.mod_revision, p.version, p.lease)


class EventType(enum.IntEnum):
    PUT = 0
    DELETE = 1


class Filter(enum.IntEnum):
    """Event types a watch asks the server to leave out."""

    NOPUT = 0
    NODELETE = 1


@dataclass(slots=True)
class Event:
    """A change seen by a watch. ``prev_kv`` is set when the watch asked for it."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None

    @classmethod
    def from_pb(cls, e: kv_pb2.Event) -> Event:
        return cls(
            EventType.DELETE if e.type else EventType.PUT,
            KeyValue.from_pb(e.kv),
            KeyValue.from_pb(e.prev_kv) if e.HasField("prev_kv") else None,
        )


@dataclass(slots=True)
class PutResult:
    """The answer to a put inside a transaction (``Client.put`` returns the revision)."""

    revision: int
    prev_kv: KeyValue | None = None


@dataclass(slots=True)
class RangeResult:
    """The answer to a get inside a transaction."""

    kvs: list[KeyValue]
    count: int
    more: bool


@dataclass(slots=True)
class DeleteResult:
    """The answer to a delete inside a transaction."""

    deleted: int
    prev_kvs: list[KeyValue] = field(default_factory=list)


@dataclass(slots=True)
class TxnResult:
    """``succeeded`` tells which branch ran; ``responses`` has one entry per
    operation of that branch: PutResult, RangeResult, DeleteResult or TxnResult."""

    succeeded: bool
    responses: list[PutResult | RangeResult | DeleteResult | TxnResult]
    revision: int = 0


_RESULT = rpc_pb2.Compare.CompareResult
_TARGET = rpc_pb2.Compare.CompareTarget


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction: build with ``Compare.value(k) == v``,
    ``Compare.version(k) > 2``, ``Compare.create_revision(k) == 0``,
    ``Compare.mod_revision(k) < r``, ``Compare.lease(k) == id``."""

    target: int
    key: bytes
    result: int
    operand: Any
    range_end: bytes = b""

    @staticmethod
    def value(key: Bytes, *, range_end: Bytes = b"") -> _Target:
        return _Target(_TARGET.VALUE, to_bytes(key), to_bytes(range_end))

    @staticmethod
    def version(key: Bytes, *, range_end: Bytes = b"") -> _Target:
        return _Target(_TARGET.VERSION, to_bytes(key), to_bytes(range_end))

    @staticmethod
    def create_revision(key: Bytes, *, range_end: Bytes = b"") -> _Target:
        return _Target(_TARGET.CREATE, to_bytes(key), to_bytes(range_end))

    @staticmethod
    def mod_revision(key: Bytes, *, range_end: Bytes = b"") -> _Target:
        return _Target(_TARGET.MOD, to_bytes(key), to_bytes(range_end))

    @staticmethod
    def lease(key: Bytes, *, range_end: Bytes = b"") -> _Target:
        return _Target(_TARGET.LEASE, to_bytes(key), to_bytes(range_end))

    def to_pb(self) -> rpc_pb2.Compare:
        c = rpc_pb2.Compare(result=self.result, target=self.target,  # type: ignore[arg-type]
                            key=self.key, range_end=self.range_end)
        if self.target == _TARGET.VALUE:
            c.value = to_bytes(self.operand)
        elif self.target == _TARGET.VERSION:
            c.version = int(self.operand)
        elif self.target == _TARGET.CREATE:
            c.create_revision = int(self.operand)
        elif self.target == _TARGET.MOD:
            c.mod_revision = int(self.operand)
        else:
            c.lease = int(self.operand)
        return c


@dataclass(frozen=True, slots=True)
class _Target:
    """The left side of a comparison; an operator makes the Compare."""

    target: int
    key: bytes
    range_end: bytes

    def _cmp(self, result: int, other: Any) -> Compare:
        return Compare(self.target, self.key, result, other, self.range_end)

    def __eq__(self, other: Any) -> Compare:  # type: ignore[override]
        return self._cmp(_RESULT.EQUAL, other)

    def __ne__(self, other: Any) -> Compare:  # type: ignore[override]
        return self._cmp(_RESULT.NOT_EQUAL, other)

    def __lt__(self, other: Any) -> Compare:
        return self._cmp(_RESULT.LESS, other)

    def __gt__(self, other: Any) -> Compare:
        return self._cmp(_RESULT.GREATER, other)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of a transaction branch: ``Op.put``, ``Op.get``,
    ``Op.delete`` or a nested ``Op.txn``."""

    request: rpc_pb2.RequestOp

    @staticmethod
    def put(key: Bytes, value: Bytes, *, lease: int = 0, prev_kv: bool = False) -> Op:
        return Op(rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
            key=to_bytes(key), value=to_bytes(value), lease=lease, prev_kv=prev_kv)))

    @staticmethod
    def get(key: Bytes, *, range_end: Bytes = b"", prefix: bool = False, limit: int = 0,
            revision: int = 0, keys_only: bool = False, count_only: bool = False) -> Op:
        k = to_bytes(key)
        end = prefix_end(k) if prefix else to_bytes(range_end)
        return Op(rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(
            key=k, range_end=end, limit=limit, revision=revision, keys_only=keys_only, count_only=count_only)))

    @staticmethod
    def delete(key: Bytes, *, range_end: Bytes = b"", prefix: bool = False, prev_kv: bool = False) -> Op:
        k = to_bytes(key)
        end = prefix_end(k) if prefix else to_bytes(range_end)
        return Op(rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(
            key=k, range_end=end, prev_kv=prev_kv)))

    @staticmethod
    def txn(compare: Sequence[Compare] = (), success: Sequence[Op] = (), failure: Sequence[Op] = ()) -> Op:
        return Op(rpc_pb2.RequestOp(request_txn=txn_request(compare, success, failure)))


def txn_request(compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]) -> rpc_pb2.TxnRequest:
    return rpc_pb2.TxnRequest(
        compare=[c.to_pb() for c in compare],
        success=[o.request for o in success],
        failure=[o.request for o in failure],
    )


def txn_result(r: rpc_pb2.TxnResponse) -> TxnResult:
    out: list[PutResult | RangeResult | DeleteResult | TxnResult] = []
    for op in r.responses:
        which = op.WhichOneof("response")
        if which == "response_put":
            p = op.response_put
            out.append(PutResult(p.header.revision, KeyValue.from_pb(p.prev_kv) if p.HasField("prev_kv") else None))
        elif which == "response_range":
            g = op.response_range
            out.append(RangeResult([KeyValue.from_pb(kv) for kv in g.kvs], g.count, g.more))
        elif which == "response_delete_range":
            d = op.response_delete_range
            out.append(DeleteResult(d.deleted, [KeyValue.from_pb(kv) for kv in d.prev_kvs]))
        else:
            out.append(txn_result(op.response_txn))
    return TxnResult(r.succeeded, out, r.header.revision)


class Isolation(enum.Enum):
    """STM isolation levels (etcd's concurrency package)."""

    SERIALIZABLE = "serializable"  # every read at the first read's revision; write set checked too
    REPEATABLE_READ = "repeatable_read"  # reads remembered; commit fails if any changed
    READ_COMMITTED = "read_committed"  # no read checks: commits whatever it read
