"""KeyRange: etcd's reading of a (key, range_end) pair, in one place.

Every etcd request that names keys does it with two byte strings, and etcd
gives range_end three meanings:

- empty: the single key ``key``;
- ``b"\\0"``: every key from ``key`` on (with key ``b"\\0"`` too: every key);
- anything else: the half-open interval ``[key, range_end)``, empty when
  range_end <= key.

Ranges, deletes, compares, watches and the txn checks all follow these
rules; they all ask this type.
"""

from __future__ import annotations

FROM_KEY = b"\0"


class KeyRange:
    """The keys a (key, range_end) pair names. Treated as immutable (never
    assigned after construction); equal to another range naming the same
    keys the same way."""

    __slots__ = ("key", "end", "single")

    key: bytes
    end: bytes | None  # None: no upper bound (range_end b"\0") or a single key
    single: bool

    def __init__(self, key: bytes, range_end: bytes = b"") -> None:
        self.key = key
        self.single = not range_end
        self.end = None if (not range_end or range_end == FROM_KEY) else range_end

    @property
    def from_key(self) -> bool:
        """True for "every key from key on" (range_end b"\\0")."""
        return not self.single and self.end is None

    @property
    def range_end(self) -> bytes:
        """The range_end that names this range on the wire."""
        if self.single:
            return b""
        return FROM_KEY if self.end is None else self.end

    def contains(self, k: bytes) -> bool:
        """Whether k is one of the keys named."""
        if self.single:
            return k == self.key
        return k >= self.key and (self.end is None or k < self.end)

    def is_empty(self) -> bool:
        """Whether no key at all is named (an interval with end <= key)."""
        return self.end is not None and self.end <= self.key

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyRange):
            return NotImplemented
        return (self.key, self.single, self.end) == (other.key, other.single, other.end)

    def __hash__(self) -> int:
        return hash((self.key, self.single, self.end))

    def __repr__(self) -> str:
        return f"KeyRange({self.key!r}, {self.range_end!r})"
