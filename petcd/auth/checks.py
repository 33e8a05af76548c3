"""Which permission each request needs, as etcd 3.4 checks it.

What it is for: the server calls these with the caller's AuthInfo (from its
token, or carried in the raft entry's header) before it serves a read or
applies a write; each raises the store's error (permission denied, user
name is empty, revision of auth store is old, ...) or returns.

- Range: read on [key, range_end).
- Put: write on the key; write on every key already attached to the
  request's lease (a user who could not revoke the lease may not attach
  to it); read on the key when ``prev_kv`` is asked.
- DeleteRange: write on the range; read on it too when ``prev_kv``.
- Txn: read on every compare's range; for each op of both branches, what
  that op needs inside a txn (a put there needs write on its key only, as
  in etcd). Unlike etcd 3.4, which skips them, ops of nested txns are
  checked the same way: 3.4 lets a nested txn read and write any key.
- LeaseRevoke: write on every key attached to the lease.
- Watch: read on the watched range (at create). etcd 3.4 checks a
  from-key watch (``range_end`` b"\x00") on its first key only, which lets
  a user watch keys it may not read; petcd checks the whole range.
- Admin calls (Maintenance Hash, HashKV, Snapshot, Defragment; member
  add/remove/update/promote): the root role.

Guarantees: pure functions of the store's state and the request; nothing
is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from petcd.auth.store import AuthStore
from petcd.auth.tokens import AuthInfo
from petcd.proto import rpc_pb2

LeaseKeys = Callable[[int], Iterable[bytes]]


def check_range(store: AuthStore, info: AuthInfo | None, r: rpc_pb2.RangeRequest) -> None:
    store.is_range_permitted(info, r.key, r.range_end)


def check_put(store: AuthStore, info: AuthInfo | None, r: rpc_pb2.PutRequest, lease_keys: LeaseKeys) -> None:
    store.is_put_permitted(info, r.key)
    if r.lease:
        for key in lease_keys(r.lease):
            store.is_put_permitted(info, key)
    if r.prev_kv:
        store.is_range_permitted(info, r.key, b"")


def check_delete_range(store: AuthStore, info: AuthInfo | None, r: rpc_pb2.DeleteRangeRequest) -> None:
    store.is_delete_range_permitted(info, r.key, r.range_end)
    if r.prev_kv:
        store.is_range_permitted(info, r.key, r.range_end)


def _check_ops(store: AuthStore, info: AuthInfo | None, ops: Iterable[rpc_pb2.RequestOp]) -> None:
    for op in ops:
        which = op.WhichOneof("request")
        if which == "request_range":
            store.is_range_permitted(info, op.request_range.key, op.request_range.range_end)
        elif which == "request_put":
            store.is_put_permitted(info, op.request_put.key)
        elif which == "request_delete_range":
            d = op.request_delete_range
            if d.prev_kv:
                store.is_range_permitted(info, d.key, d.range_end)
            store.is_delete_range_permitted(info, d.key, d.range_end)
        elif which == "request_txn":
            check_txn(store, info, op.request_txn)


def check_txn(store: AuthStore, info: AuthInfo | None, r: rpc_pb2.TxnRequest) -> None:
    if not store.enabled:
        return
    for c in r.compare:
        store.is_range_permitted(info, c.key, c.range_end)
    _check_ops(store, info, r.success)
    _check_ops(store, info, r.failure)


def check_lease_revoke(store: AuthStore, info: AuthInfo | None, lease_id: int, lease_keys: LeaseKeys) -> None:
    for key in lease_keys(lease_id):
        store.is_put_permitted(info, key)


def check_watch(store: AuthStore, info: AuthInfo | None, r: rpc_pb2.WatchCreateRequest) -> None:
    # an empty key watches from the smallest key, b"\x00" (etcd). Unlike
    # etcd 3.4, which checks a from-key watch as if it were on its first key
    # only, the whole range watched is checked.
    store.is_range_permitted(info, r.key or b"\x00", r.range_end)


def check_admin(store: AuthStore, info: AuthInfo | None) -> None:
    store.is_admin_permitted(info)
