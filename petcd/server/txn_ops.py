"""Questions about a txn's operations, answered over both branches and every
nested txn: which kinds of operation it may perform."""

from __future__ import annotations

from collections.abc import Iterator

from petcd.proto import rpc_pb2


def walk(t: rpc_pb2.TxnRequest) -> Iterator[rpc_pb2.RequestOp]:
    """Every operation of t, success and failure branches, nested txns included."""
    for op in (*t.success, *t.failure):
        yield op
        if op.WhichOneof("request") == "request_txn":
            yield from walk(op.request_txn)


def has_puts(t: rpc_pb2.TxnRequest) -> bool:
    return any(op.WhichOneof("request") == "request_put" for op in walk(t))


def is_read_only(t: rpc_pb2.TxnRequest) -> bool:
    return not any(op.WhichOneof("request") in ("request_put", "request_delete_range") for op in walk(t))


def is_serializable(t: rpc_pb2.TxnRequest) -> bool:
    """Whether every range in t asked for a serializable read."""
    return all(op.request_range.serializable for op in walk(t) if op.WhichOneof("request") == "request_range")
