"""Questions about a txn's operations, answered over both branches and every
nested txn: which kinds of operation it may perform."""

from __future__ import annotations

from collections.abc import Iterator

from petcd.proto import rpc_pb2

# The deepest txn petcd carries: TxnRequests nested in one another, the top
# one included. etcd's op budget (each nested level spends at least one of
# --max-txn-ops) stops a chain at 128 levels with the default budget; with a
# larger budget etcd goes on, but a Python applier cannot recurse without
# bound, so deeper txns are refused before they are proposed.
MAX_TXN_DEPTH = 256

# The nesting depth in protobuf messages that every request petcd accepts
# fits in: a txn level is two messages (TxnRequest, RequestOp), plus the
# InternalRaftRequest around it and the leaf request, with room to spare.
MAX_MESSAGE_DEPTH = 2 * MAX_TXN_DEPTH + 16


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


def depth(t: rpc_pb2.TxnRequest) -> int:
    """How many TxnRequests deep t goes (1: no nested txn). Iterative, so a
    txn too deep for Python's recursion limit still gets an answer."""
    deepest = 0
    stack = [(t, 1)]
    while stack:
        cur, d = stack.pop()
        deepest = max(deepest, d)
        for op in (*cur.success, *cur.failure):
            if op.WhichOneof("request") == "request_txn":
                stack.append((op.request_txn, d + 1))
    return deepest
