"""Protobuf's base-128 varint, for the places that write protobuf bytes by
hand instead of through a message (the watch fan-out encoder, the peer
wire's snapshot frame header). Imports nothing, so every layer may use it."""

from __future__ import annotations


def varint(n: int) -> bytes:
    """n as protobuf writes an int64/uint64 field: a negative int64 takes ten bytes."""
    if n < 0:
        n += 1 << 64
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
