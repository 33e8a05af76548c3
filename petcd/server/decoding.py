"""Decoding protobuf messages nested deeper than protobuf's own limit, with
a bound of our own.

The installed protobuf (upb) refuses to decode a message nested more than
about 100 levels; a Txn nests two levels (TxnRequest, RequestOp) per nested
txn, so it stops near 50 nested txns, and the InternalRaftRequest around a
proposed Txn takes one more level. etcd (Go) has no such limit and applies a
Txn of 128 nested txns with its default --max-txn-ops. So petcd decodes
deeper itself: the fields whose type can recurse (TxnRequest <-> RequestOp)
are walked in Python and everything else is merged by protobuf in one call
per run of fields, so the C decoder never sees more than its own limit.

upb's ``SetAllowOversizeProtos`` lifts the limit too, but for the whole
process and without any bound: a request of a megabyte of nesting would then
overflow the C stack. ``parse_deep`` keeps a bound, given by the caller.

Guarantees: ``parse_deep`` gives exactly the message protobuf's own decoder
gives, for every input protobuf's decoder accepts; an input nested more than
``max_depth`` levels (or malformed) raises ``DecodeError``, ``TooDeep`` for
the former; the Python work is linear in the input's size.
"""

from __future__ import annotations

from functools import cache
from typing import TypeVar

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

M = TypeVar("M", bound=Message)

# Levels protobuf's C decoder is left to decode by itself: well below its own
# limit (100), so it never refuses what we hand it.
C_DEPTH = 64


class TooDeep(DecodeError):
    """The message is nested deeper than the caller allows."""


def parse_deep(cls: type[M], data: bytes | memoryview, max_depth: int) -> M:
    """cls decoded from data, nested up to max_depth levels (the top message
    is level 1)."""
    msg = cls()
    try:
        msg.ParseFromString(data)  # type: ignore[arg-type]  # upb takes any buffer
        return msg
    except DecodeError:
        pass  # too deep for protobuf's decoder, or malformed: find out below
    msg = cls()
    _merge(msg, memoryview(data), max_depth)
    return msg


@cache
def _deep_fields(desc: Descriptor) -> dict[int, FieldDescriptor]:
    """desc's message fields (not maps) whose type can contain itself, by number."""
    return {f.number: f for f in desc.fields
            if f.message_type is not None and not f.message_type.GetOptions().map_entry
            and _recursive(f.message_type)}


@cache
def _recursive(desc: Descriptor) -> bool:
    """Whether a message of type desc can contain, at any depth, a message
    of a type it has already passed through (so its depth is unbounded)."""
    def reaches(d: Descriptor, path: frozenset[str]) -> bool:
        if d.full_name in path:
            return True
        path = path | {d.full_name}
        return any(reaches(f.message_type, path) for f in d.fields if f.message_type is not None)
    return reaches(desc, frozenset())


def _varint(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end or shift > 63:
            raise DecodeError("truncated or overlong varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _merge(msg: Message, data: memoryview, room: int) -> None:
    """Merge data into msg (at level max_depth - room + 1), descending into
    recursive fields in Python; everything else is protobuf's, and bounded:
    a chunk it gets is either short (at most C_DEPTH levels fit in it) or of
    a type that cannot recurse."""
    deep = _deep_fields(msg.DESCRIPTOR)
    end = len(data)
    pos = 0
    run = 0  # start of the fields not yet merged
    while pos < end:
        tag, p = _varint(data, pos, end)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, p = _varint(data, p, end)
        elif wire == 1:
            p += 8
        elif wire == 5:
            p += 4
        elif wire == 2:
            size, p = _varint(data, p, end)
            field = deep.get(number)
            # a chunk shorter than 2 bytes a level cannot be deeper than C_DEPTH
            if field is not None and p + size <= end and size >= 2 * C_DEPTH:
                if run < pos:
                    msg.MergeFromString(data[run:pos])  # type: ignore[arg-type]
                if room <= 1:
                    raise TooDeep("message nested too deeply")
                if field.is_repeated:
                    sub = getattr(msg, field.name).add()
                else:
                    sub = getattr(msg, field.name)
                    sub.SetInParent()
                _merge(sub, data[p:p + size], room - 1)
                run = p + size
            p += size
        else:  # groups: not in etcd's schema, and not worth decoding deep
            raise DecodeError(f"unsupported wire type {wire} in a deep message")
        if p > end:
            raise DecodeError("truncated message")
        pos = p
    if run < end:
        msg.MergeFromString(data[run:end])  # type: ignore[arg-type]


def field_bytes(data: bytes | memoryview, number: int) -> bytes | None:
    """The payload of the last length-delimited top-level field `number`
    found in data before anything malformed, or None. For reading what can
    be read of a message that does not decode as a whole (protobuf merges
    repeated occurrences of a singular field; for a request header the last
    one is enough)."""
    view = memoryview(data)
    end = len(view)
    pos = 0
    found: bytes | None = None
    try:
        while pos < end:
            tag, p = _varint(view, pos, end)
            wire = tag & 7
            if wire == 0:
                _, p = _varint(view, p, end)
            elif wire == 1:
                p += 8
            elif wire == 5:
                p += 4
            elif wire == 2:
                size, p = _varint(view, p, end)
                if p + size <= end and tag >> 3 == number:
                    found = bytes(view[p:p + size])
                p += size
            else:
                break
            pos = p
    except DecodeError:
        pass
    return found
