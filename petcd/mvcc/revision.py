"""Revisions: how a write is named, in memory and in the backend.

A revision is (main, sub): ``main`` is the store revision of the write (one
per put, delete or write txn), ``sub`` its position inside that revision
(0, 1, 2... within a txn).

In memory a revision is one int, ``main << SUB_BITS | sub``, so that the key
index holds a single small object per revision and revisions compare in
order as plain ints.

In the backend's "key" bucket a revision is etcd's 17 bytes: 8-byte
big-endian main, ``_``, 8-byte big-endian sub, followed by ``t`` (18 bytes)
when the write is a tombstone. Byte order equals revision order, so a
bucket scan is a scan in revision order.
"""

from __future__ import annotations

import struct

SUB_BITS = 32
SUB_MASK = (1 << SUB_BITS) - 1
REV_BYTES_LEN = 17
MARKED_REV_BYTES_LEN = 18
TOMBSTONE_MARK = b"t"

_REV = struct.Struct(">QcQ")
_SEP = b"_"


def encode(main: int, sub: int = 0) -> int:
    """The in-memory form of (main, sub)."""
    return main << SUB_BITS | sub


def main_of(rev: int) -> int:
    return rev >> SUB_BITS


def sub_of(rev: int) -> int:
    return rev & SUB_MASK


def to_bytes(main: int, sub: int = 0, tombstone: bool = False) -> bytes:
    """The backend key of revision (main, sub), marked when a tombstone."""
    b = _REV.pack(main, _SEP, sub)
    return b + TOMBSTONE_MARK if tombstone else b


def encoded_to_bytes(rev: int, tombstone: bool = False) -> bytes:
    return to_bytes(rev >> SUB_BITS, rev & SUB_MASK, tombstone)


def from_bytes(b: bytes) -> tuple[int, int]:
    """(main, sub) of a backend key (marked or not)."""
    main, _, sub = _REV.unpack_from(b)
    return main, sub


def is_tombstone(b: bytes) -> bool:
    return len(b) == MARKED_REV_BYTES_LEN and b[-1:] == TOMBSTONE_MARK
