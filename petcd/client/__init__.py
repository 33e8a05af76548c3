"""petcd's Python client for etcd v3 (petcd or etcd): ``Client`` (blocking)
and ``AsyncClient`` (asyncio) with the same methods, plus etcd's lock,
election and STM recipes. One implementation (``_core``) drives both."""

from petcd.client._aio import AsyncClient, AsyncElection, AsyncLease, AsyncLock, AsyncSTM, AsyncWatch
from petcd.client._sync import STM, Client, Election, Lease, Lock, Watch
from petcd.client.errors import *  # noqa: F403 - the exception classes are part of the API
from petcd.client.errors import EtcdError
from petcd.client.types import (
    Compare,
    DeleteResult,
    Event,
    EventType,
    Filter,
    Isolation,
    KeyValue,
    Op,
    PutResult,
    RangeResult,
    TxnResult,
)

__all__ = [
    "AsyncClient", "AsyncElection", "AsyncLease", "AsyncLock", "AsyncSTM", "AsyncWatch",
    "Client", "Election", "Lease", "Lock", "STM", "Watch",
    "Compare", "DeleteResult", "Event", "EventType", "Filter", "Isolation", "KeyValue", "Op",
    "PutResult", "RangeResult", "TxnResult", "EtcdError",
]
