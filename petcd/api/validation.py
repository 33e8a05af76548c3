"""Checks on client requests made before anything is proposed, as etcd's
v3rpc layer makes them, with etcd's errors."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from petcd.mvcc.key_range import KeyRange
from petcd.proto import rpc_pb2
from petcd.server import txn_ops
from petcd.server.errors import ErrKeyNotFound as ErrKeyNotFound  # also a txn op naming no request
from petcd.server.membership import ErrBadURLs
from petcd.server.urls import PEER_SCHEMES, URLError, parse_url


class RequestError(Exception):
    """A request refused before it reaches the server; str() is etcd's message."""

    message = "etcdserver: invalid request"

    def __init__(self) -> None:
        super().__init__(self.message)


class ErrEmptyKey(RequestError):
    message = "etcdserver: key is not provided"


class ErrValueProvided(RequestError):
    message = "etcdserver: value is provided"


class ErrLeaseProvided(RequestError):
    message = "etcdserver: lease is provided"


class ErrTooManyOps(RequestError):
    message = "etcdserver: too many operations in txn request"


class ErrDuplicateKey(RequestError):
    message = "etcdserver: duplicate key given in txn request"


class ErrInvalidSortOption(RequestError):
    message = "etcdserver: invalid sort option"


class ErrTxnTooDeep(ErrTooManyOps):
    """A txn nested deeper than petcd carries (txn_ops.MAX_TXN_DEPTH). etcd
    has no such error: with its default --max-txn-ops the op budget refuses
    such a txn first, as ours does. A kind of ErrTooManyOps, so it maps to
    the same status (InvalidArgument)."""

    message = f"etcdserver: too many operations in txn request (nested deeper than {txn_ops.MAX_TXN_DEPTH} txns)"


def check_peer_urls(urls: Iterable[str]) -> None:
    """A member's peer URLs as etcd's types.NewURLs takes them (at least one;
    each scheme://host:port with no path), and only what petcd's peer
    transport can dial (http, a port in range): a URL committed to the
    member list that the transport cannot use would fail every member that
    applies it, and again at every start."""
    urls = list(urls)
    if not urls:
        raise ErrBadURLs()
    for u in urls:
        try:
            parse_url(u, PEER_SCHEMES)
        except URLError:
            raise ErrBadURLs() from None


_SORT_TARGETS = frozenset(rpc_pb2.RangeRequest.SortTarget.values())  # built once, not per request


def check_range(r: rpc_pb2.RangeRequest) -> None:
    if not r.key:
        raise ErrEmptyKey()
    # etcd 3.4 crashes on an unknown sort target; later releases refuse it
    # with this error, and so do we. (An unknown sort order 3.4 accepts.)
    if r.sort_target not in _SORT_TARGETS:
        raise ErrInvalidSortOption()


def check_put(r: rpc_pb2.PutRequest) -> None:
    if not r.key:
        raise ErrEmptyKey()
    if r.ignore_value and r.value:
        raise ErrValueProvided()
    if r.ignore_lease and r.lease != 0:
        raise ErrLeaseProvided()


def check_delete(r: rpc_pb2.DeleteRangeRequest) -> None:
    if not r.key:
        raise ErrEmptyKey()


def check_txn(r: rpc_pb2.TxnRequest, max_txn_ops: int) -> None:
    """Op counts and keys of a txn and (recursively) of its nested txns, then
    the put/delete overlap rule on the top level's branches; a txn nested
    deeper than the applier carries is refused here, before it is proposed."""
    _check_txn_ops(r, max_txn_ops)
    if txn_ops.depth(r) > txn_ops.MAX_TXN_DEPTH:
        raise ErrTxnTooDeep()
    _collect_writes(r.success)
    _collect_writes(r.failure)


def _check_txn_ops(r: rpc_pb2.TxnRequest, max_txn_ops: int) -> None:
    opc = max(len(r.compare), len(r.success), len(r.failure))
    if opc > max_txn_ops:
        raise ErrTooManyOps()
    for c in r.compare:
        if not c.key:
            raise ErrEmptyKey()
    for op in (*r.success, *r.failure):
        _check_op(op, max_txn_ops - opc)


def _check_op(op: rpc_pb2.RequestOp, max_txn_ops: int) -> None:
    which = op.WhichOneof("request")
    if which == "request_range":
        check_range(op.request_range)
    elif which == "request_put":
        check_put(op.request_put)
    elif which == "request_delete_range":
        check_delete(op.request_delete_range)
    elif which == "request_txn":
        _check_txn_ops(op.request_txn, max_txn_ops)
    else:
        raise ErrKeyNotFound()


def _intersects(dels: list[KeyRange], key: bytes) -> bool:
    """Whether one of the deletes covers key, as etcd's txn check sees it:
    it compares range ends as plain strings, so a delete "from key on"
    (range_end b"\\0") covers no key here."""
    return any(kr.contains(key) and not kr.from_key for kr in dels)


def _collect_writes(ops: Sequence[rpc_pb2.RequestOp]) -> tuple[set[bytes], list[KeyRange]]:
    """The keys put and the ranges deleted by ops (nested txns included);
    raises ErrDuplicateKey when one write would overlap another in one txn."""
    dels: list[KeyRange] = []
    for op in ops:
        if op.WhichOneof("request") == "request_delete_range":
            d = op.request_delete_range
            dels.append(KeyRange(d.key, d.range_end))
    puts: set[bytes] = set()
    for op in ops:
        if op.WhichOneof("request") != "request_txn":
            continue
        puts_then, dels_then = _collect_writes(op.request_txn.success)
        puts_else, dels_else = _collect_writes(op.request_txn.failure)
        for k in puts_then:
            if k in puts or _intersects(dels, k):
                raise ErrDuplicateKey()
            puts.add(k)
        for k in puts_else:
            # then and else exclude each other, so the same key in both is fine
            if (k in puts and k not in puts_then) or _intersects(dels, k):
                raise ErrDuplicateKey()
            puts.add(k)
        dels.extend(dels_then)
        dels.extend(dels_else)
    for op in ops:
        if op.WhichOneof("request") != "request_put":
            continue
        k = op.request_put.key
        if k in puts or _intersects(dels, k):
            raise ErrDuplicateKey()
        puts.add(k)
    return puts, dels
