"""petcd.raft: a sans-I/O, deterministic Raft consensus core.

See raw_node.py for how an application drives it.
"""

from petcd.raft.raft import Config, ProposalDropped, ReadState
from petcd.raft.raw_node import ProgressStatus, RawNode, Ready, SoftState, Status
from petcd.raft.storage import ErrCompacted, ErrSnapOutOfDate, ErrUnavailable, MemoryStorage, StorageError
from petcd.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
    StateType,
)

__all__ = [
    "Config",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Entry",
    "EntryType",
    "ErrCompacted",
    "ErrSnapOutOfDate",
    "ErrUnavailable",
    "HardState",
    "MemoryStorage",
    "Message",
    "MessageType",
    "ProgressStatus",
    "ProposalDropped",
    "RawNode",
    "ReadState",
    "Ready",
    "Snapshot",
    "SnapshotMetadata",
    "SoftState",
    "StateType",
    "Status",
    "StorageError",
]
