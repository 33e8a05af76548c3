"""Member and cluster ids, derived exactly as etcd derives them.

Members bootstrapped from the same --initial-cluster and token compute the
same ids independently, without talking to each other; a petcd member gets
the very ids an etcd member with the same configuration would get.
"""

from __future__ import annotations

import hashlib
import struct
import time


def member_id(peer_urls: list[str], token: str, now: int | None = None) -> int:
    """A member's id: the first 8 bytes (big-endian) of the SHA-1 of its peer
    URLs, sorted and concatenated, followed by the cluster token and, for a
    member added at run time, the time in Unix seconds (as etcd does)."""
    data = "".join(sorted(peer_urls)).encode() + token.encode()
    if now is not None:
        data += str(now).encode()
    return int.from_bytes(hashlib.sha1(data).digest()[:8], "big")


def cluster_id(member_ids: list[int]) -> int:
    """The cluster's id: the first 8 bytes (big-endian) of the SHA-1 of the
    sorted member ids, each as 8 big-endian bytes."""
    ids = sorted(member_ids)
    data = struct.pack(f">{len(ids)}Q", *ids)
    return int.from_bytes(hashlib.sha1(data).digest()[:8], "big")


class RequestIds:
    """Unique request ids: the member id's low 16 bits, then a millisecond
    timestamp and a counter (etcd's idutil scheme), unique across restarts."""

    def __init__(self, member_id: int) -> None:
        self._prefix = (member_id & 0xFFFF) << 48
        self._suffix = (int(time.time() * 1000) << 8) & ((1 << 48) - 1)

    def next(self) -> int:
        self._suffix = (self._suffix + 1) & ((1 << 48) - 1)
        return self._prefix | self._suffix
