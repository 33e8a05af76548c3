"""bbolt's file format (etcd's backend file): a reader with a consistency
check, and a one-pass writer.

What it is for: snapshots that leave the cluster are bbolt files, so that
etcd's tools read petcd's snapshots and petcd reads etcd's snapshots and data
directories. The layout implemented here (all integers little-endian):

- the file is an array of pages of ``page_size`` bytes; every page starts
  with a 16-byte header: page id (u64), flags (u16: branch 0x01, leaf 0x02,
  meta 0x04, freelist 0x10), element count (u16), overflow (u32: how many
  further pages this page spans);
- pages 0 and 1 are meta pages: magic 0xED0CDAED, version 2, page size,
  flags, the root bucket (root page id, sequence), the freelist page id, the
  high-water page id (the file's logical end), the transaction id, and an
  FNV-1a 64 checksum of the meta fields before it. The valid meta page with
  the higher transaction id is the current one;
- a branch page holds elements (pos u32, key size u32, child page id u64), a
  leaf page elements (flags u32, pos u32, key size u32, value size u32);
  ``pos`` is the distance from the element to its key, the value follows the
  key. A leaf element with flag 0x01 is a nested bucket whose value is a
  bucket header (root page id u64, sequence u64); a root of 0 means the
  bucket's single leaf page follows the header inside the value ("inline");
- the freelist page lists free page ids (u64 each); a count of 0xFFFF means
  the real count is the first u64. A freelist page id of 2^64-1 means the
  file keeps no freelist.

Guarantees:

- :class:`BoltReader` never loops or crashes on a damaged file: every page
  reference is checked against the file's end, every element against its
  page, and a page seen twice in one walk is reported, all as
  :class:`BoltFormatError` with a message that says what is wrong.
- :class:`BoltWriter` takes each bucket's items in ascending key order,
  holds at most one page per tree level in memory, and writes a file that
  bbolt's own consistency check accepts (every page below the high-water
  mark is reachable exactly once; the freelist is empty).
"""

from __future__ import annotations

import functools
import mmap
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from petcd.storage.errors import StorageError

MAGIC = 0xED0CDAED
VERSION = 2
DEFAULT_PAGE_SIZE = 4096

BRANCH_PAGE = 0x01
LEAF_PAGE = 0x02
META_PAGE = 0x04
FREELIST_PAGE = 0x10
BUCKET_LEAF_FLAG = 0x01
NO_FREELIST = 0xFFFFFFFFFFFFFFFF

PAGE_HEADER = struct.Struct("<QHHI")  # id, flags, count, overflow
PAGE_HEADER_SIZE = PAGE_HEADER.size
BRANCH_ELEM = struct.Struct("<IIQ")  # pos, ksize, pgid
LEAF_ELEM = struct.Struct("<IIII")  # flags, pos, ksize, vsize
ELEM_SIZE = 16
BUCKET_HEADER = struct.Struct("<QQ")  # root, sequence
# magic, version, page size, flags, root, sequence, freelist, pgid, txid
META_FIELDS = struct.Struct("<IIIIQQQQQ")
META_CHECKSUM = struct.Struct("<Q")
META_SIZE = META_FIELDS.size + META_CHECKSUM.size

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_U64 = (1 << 64) - 1
# A B+tree deeper than this in a file of 2^64 bytes is impossible: a loop.
_MAX_DEPTH = 64
_MAX_ERRORS = 20
# bbolt inlines a bucket whose single leaf is at most a quarter page.
_INLINE_FRACTION = 4


class BoltFormatError(StorageError):
    """A file that is not a valid bbolt file; the message says why."""


def fnv64a(data: bytes) -> int:
    """FNV-1a, 64-bit: the meta page checksum."""
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & _U64
    return h


def is_bbolt(head: bytes) -> bool:
    """Whether the first bytes of a file carry bbolt's meta magic."""
    if len(head) < PAGE_HEADER_SIZE + 8:
        return False
    magic, version = struct.unpack_from("<II", head, PAGE_HEADER_SIZE)
    return magic == MAGIC and version == VERSION


@dataclass(frozen=True, slots=True)
class Meta:
    """One meta page's fields."""

    page_size: int
    flags: int
    root: int
    sequence: int
    freelist: int
    pgid: int
    txid: int


def _parse_meta(buf: bytes | mmap.mmap, off: int) -> Meta:
    """The meta at page offset off; BoltFormatError when it is invalid."""
    if off + PAGE_HEADER_SIZE + META_SIZE > len(buf):
        raise BoltFormatError("file too short for a meta page")
    _, flags, _, _ = PAGE_HEADER.unpack_from(buf, off)
    fields = META_FIELDS.unpack_from(buf, off + PAGE_HEADER_SIZE)
    magic, version, page_size, mflags, root, seq, freelist, pgid, txid = fields
    if magic != MAGIC:
        raise BoltFormatError("not a bbolt file (bad magic)")
    if version != VERSION:
        raise BoltFormatError(f"unsupported bbolt version {version}")
    if not flags & META_PAGE:
        raise BoltFormatError("meta page without the meta flag")
    (checksum,) = META_CHECKSUM.unpack_from(buf, off + PAGE_HEADER_SIZE + META_FIELDS.size)
    raw = bytes(buf[off + PAGE_HEADER_SIZE : off + PAGE_HEADER_SIZE + META_FIELDS.size])
    if fnv64a(raw) != checksum:
        raise BoltFormatError("meta page checksum mismatch")
    return Meta(page_size, mflags, root, seq, freelist, pgid, txid)


@dataclass(frozen=True, slots=True)
class _Node:
    """Where one node (page or inline page) lives: its buffer region."""

    flags: int
    count: int
    start: int  # offset of the page header in the buffer
    end: int  # one past the last byte the node may use
    pgid: int  # 0 for an inline page


class BoltReader:
    """Read-only access to a bbolt file (memory-mapped).

    ``length`` limits the file to its first bytes (a snapshot's trailer is
    not part of the db). Opening validates the meta pages and that the file
    holds every page the meta page counts.
    """

    def __init__(self, path: str, length: int | None = None) -> None:
        self.path = path
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            self.length = size if length is None else min(length, size)
            if self.length < PAGE_HEADER_SIZE + META_SIZE:
                raise BoltFormatError(f"{path}: file too short ({self.length} bytes) for a bbolt file")
            self._mm = mmap.mmap(fd, self.length, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        try:
            self.meta = self._choose_meta()
        except BaseException:
            self._mm.close()
            raise
        self.page_size = self.meta.page_size

    def _choose_meta(self) -> Meta:
        mm = self._mm
        if not is_bbolt(bytes(mm[:PAGE_HEADER_SIZE + 8])):
            raise BoltFormatError(f"{self.path}: not a bbolt file (bad magic)")
        page_size = DEFAULT_PAGE_SIZE
        metas: list[Meta] = []
        errors: list[str] = []
        try:
            m0 = _parse_meta(mm, 0)
            metas.append(m0)
            page_size = m0.page_size
        except BoltFormatError as exc:
            errors.append(f"meta page 0: {exc}")
            # an invalid first meta page may still name the page size
            (ps,) = struct.unpack_from("<I", mm, PAGE_HEADER_SIZE + 8)
            if 512 <= ps <= 1 << 16 and ps & (ps - 1) == 0:
                page_size = ps
        try:
            metas.append(_parse_meta(mm, page_size))
        except BoltFormatError as exc:
            errors.append(f"meta page 1: {exc}")
        metas = [m for m in metas if m.page_size == page_size]
        if not metas:
            raise BoltFormatError(f"{self.path}: no valid meta page ({'; '.join(errors)})")
        meta = max(metas, key=lambda m: m.txid)
        if not (512 <= meta.page_size <= 1 << 16) or meta.page_size & (meta.page_size - 1):
            raise BoltFormatError(f"{self.path}: invalid page size {meta.page_size}")
        need = meta.pgid * meta.page_size
        if meta.pgid < 3 or need > self.length:
            raise BoltFormatError(
                f"{self.path}: truncated: the meta page counts {meta.pgid} pages ({need} bytes), "
                f"the file holds {self.length} bytes"
            )
        if not 2 <= meta.root < meta.pgid:
            raise BoltFormatError(f"{self.path}: root page {meta.root} is outside the file")
        if meta.freelist != NO_FREELIST and not 2 <= meta.freelist < meta.pgid:
            raise BoltFormatError(f"{self.path}: freelist page {meta.freelist} is outside the file")
        return meta

    @property
    def size(self) -> int:
        """The db's size in bytes (high-water page times page size), as bbolt's Tx.Size."""
        return self.meta.pgid * self.meta.page_size

    def close(self) -> None:
        self._mm.close()

    def __enter__(self) -> BoltReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- pages ----------------------------------------------------------------

    def _page(self, pgid: int) -> tuple[_Node, int]:
        """The node stored at page pgid and its overflow count."""
        if not 2 <= pgid < self.meta.pgid:
            raise BoltFormatError(f"page {pgid} is outside the file (high-water mark {self.meta.pgid})")
        off = pgid * self.page_size
        hid, flags, count, overflow = PAGE_HEADER.unpack_from(self._mm, off)
        if hid != pgid:
            raise BoltFormatError(f"page {pgid}: its header says page {hid}")
        if pgid + overflow >= self.meta.pgid:
            raise BoltFormatError(f"page {pgid}: its {overflow} overflow pages run past the end of the file")
        end = off + (overflow + 1) * self.page_size
        return _Node(flags, count, off, end, pgid), overflow

    def _inline(self, value: bytes, owner: bytes) -> _Node:
        buf_len = len(value)
        if buf_len < BUCKET_HEADER.size + PAGE_HEADER_SIZE:
            raise BoltFormatError(f"bucket {owner!r}: inline bucket value too short")
        _, flags, count, _ = PAGE_HEADER.unpack_from(value, BUCKET_HEADER.size)
        return _Node(flags, count, BUCKET_HEADER.size, buf_len, 0)

    def _elements(self, buf: bytes | mmap.mmap, node: _Node) -> Iterator[tuple[bytes, bytes, int]]:
        """(key, value-or-child, flags) of a node; for a branch the second
        item is the child's page id as 8 bytes and flags is -1."""
        base = node.start + PAGE_HEADER_SIZE
        if base + node.count * ELEM_SIZE > node.end:
            raise BoltFormatError(f"page {node.pgid}: {node.count} elements do not fit in the page")
        where = f"page {node.pgid}" if node.pgid else "inline bucket page"
        if node.flags & LEAF_PAGE:
            for i in range(node.count):
                eoff = base + i * ELEM_SIZE
                flags, pos, ksize, vsize = LEAF_ELEM.unpack_from(buf, eoff)
                k0 = eoff + pos
                v1 = k0 + ksize + vsize
                if v1 > node.end:
                    raise BoltFormatError(f"{where}: element {i} points past the page")
                yield bytes(buf[k0 : k0 + ksize]), bytes(buf[k0 + ksize : v1]), flags
        elif node.flags & BRANCH_PAGE:
            for i in range(node.count):
                eoff = base + i * ELEM_SIZE
                pos, ksize, child = BRANCH_ELEM.unpack_from(buf, eoff)
                k0 = eoff + pos
                if k0 + ksize > node.end:
                    raise BoltFormatError(f"{where}: element {i} points past the page")
                yield bytes(buf[k0 : k0 + ksize]), child.to_bytes(8, "little"), -1
        else:
            raise BoltFormatError(f"{where}: flags {node.flags:#x} are neither branch nor leaf")

    def _walk(self, root: int, inline: bytes | None, owner: bytes,
              seen: set[int] | None = None) -> Iterator[tuple[bytes, bytes, int]]:
        """A bucket's leaf elements in key order (depth-first), refusing loops,
        unordered keys and pages referenced twice."""
        visited: set[int] = set() if seen is None else seen
        last: bytes | None = None
        if inline is not None:
            node = self._inline(inline, owner)
            if not node.flags & LEAF_PAGE:
                raise BoltFormatError(f"bucket {owner!r}: inline page is not a leaf")
            for k, v, f in self._elements(inline, node):
                if last is not None and k <= last:
                    raise BoltFormatError(f"bucket {owner!r}: keys out of order in its inline page")
                last = k
                yield k, v, f
            return
        stack: list[Iterator[tuple[bytes, bytes, int]]] = []

        def enter(pgid: int) -> Iterator[tuple[bytes, bytes, int]]:
            if pgid in visited:
                raise BoltFormatError(f"bucket {owner!r}: page {pgid} is referenced twice (a loop in the page tree)")
            node, overflow = self._page(pgid)
            visited.update(range(pgid, pgid + overflow + 1))
            return self._elements(self._mm, node)

        stack.append(enter(root))
        while stack:
            if len(stack) > _MAX_DEPTH:
                raise BoltFormatError(f"bucket {owner!r}: page tree deeper than {_MAX_DEPTH}")
            try:
                k, v, f = next(stack[-1])
            except StopIteration:
                stack.pop()
                continue
            if f == -1:
                stack.append(enter(int.from_bytes(v, "little")))
                continue
            if last is not None and k <= last:
                raise BoltFormatError(f"bucket {owner!r}: keys out of order ({last!r} then {k!r})")
            last = k
            yield k, v, f

    # --- buckets ----------------------------------------------------------------

    def root(self) -> Bucket:
        """The root bucket, whose elements are the top-level buckets."""
        return Bucket(self, b"", self.meta.root, None)

    def bucket(self, *path: bytes) -> Bucket | None:
        """The bucket at path (top-level name, nested names...), or None."""
        b: Bucket | None = self.root()
        for name in path:
            assert b is not None
            b = b.bucket(name)
            if b is None:
                return None
        return b

    def buckets(self) -> list[bytes]:
        """The top-level bucket names, in order."""
        return [name for name, _ in self.root().buckets()]

    def freelist(self) -> list[int]:
        """The free page ids the freelist page lists ([] when there is none)."""
        if self.meta.freelist == NO_FREELIST:
            return []
        node, _ = self._page(self.meta.freelist)
        if not node.flags & FREELIST_PAGE:
            raise BoltFormatError(f"page {node.pgid}: the meta's freelist page is not a freelist page")
        base = node.start + PAGE_HEADER_SIZE
        count = node.count
        if count == 0xFFFF:
            (count,) = struct.unpack_from("<Q", self._mm, base)
            base += 8
        if base + count * 8 > node.end:
            raise BoltFormatError(f"page {node.pgid}: freelist of {count} ids does not fit")
        return list(struct.unpack_from(f"<{count}Q", self._mm, base))

    def check(self) -> list[str]:
        """bbolt's consistency check: every page below the high-water mark is
        reachable exactly once or free, every reference is in the file, every
        node is well formed. Returns the problems found (at most a few
        dozen); [] for a sound file."""
        errors: list[str] = []
        owner: dict[int, str] = {}
        try:
            for pgid in self.freelist():
                if pgid < 2 or pgid >= self.meta.pgid:
                    errors.append(f"page {pgid}: free page outside the file")
                elif pgid in owner:
                    errors.append(f"page {pgid}: freed twice")
                owner[pgid] = "freelist"
        except BoltFormatError as exc:
            errors.append(str(exc))
        if self.meta.freelist != NO_FREELIST:
            node_fl = self.meta.freelist
            try:
                _, ov = self._page(node_fl)
                for p in range(node_fl, node_fl + ov + 1):
                    owner[p] = "freelist page"
            except BoltFormatError as exc:
                errors.append(str(exc))

        # One set for the whole walk: a page reached twice, from any bucket,
        # is an error, and a nested bucket that points back at an ancestor
        # cannot make the walk endless.
        reached: set[int] = set()

        def walk(name: bytes, root: int, inline: bytes | None, depth: int) -> None:
            if depth > _MAX_DEPTH:
                errors.append(f"bucket {name[:64]!r}: buckets nested deeper than {_MAX_DEPTH}")
                return
            try:
                for k, v, f in self._walk(root, inline, name, reached):
                    if f & BUCKET_LEAF_FLAG:
                        sub_root, sub_inline = _bucket_value(v, k)
                        walk(name + b"/" + k, sub_root, sub_inline, depth + 1)
                    if len(errors) >= _MAX_ERRORS:
                        return
            except BoltFormatError as exc:
                errors.append(str(exc))

        walk(b"", self.meta.root, None, 0)
        for p in sorted(reached):
            if p in owner:
                errors.append(f"page {p}: both reachable and {owner[p]}")
            owner[p] = "reachable"
        if self.meta.freelist != NO_FREELIST:
            for p in range(2, self.meta.pgid):
                if p not in owner:
                    errors.append(f"page {p}: unreachable unfreed")
                    if len(errors) >= _MAX_ERRORS:
                        break
        return errors[:_MAX_ERRORS]


def _bucket_value(value: bytes, name: bytes) -> tuple[int, bytes | None]:
    if len(value) < BUCKET_HEADER.size:
        raise BoltFormatError(f"bucket {name!r}: value too short for a bucket header")
    root, _ = BUCKET_HEADER.unpack_from(value)
    return root, (value if root == 0 else None)


class Bucket:
    """A bucket in a :class:`BoltReader`'s file."""

    def __init__(self, reader: BoltReader, name: bytes, root: int, inline: bytes | None) -> None:
        self.reader = reader
        self.name = name
        self._root = root
        self._inline = inline

    def entries(self) -> Iterator[tuple[bytes, bytes, int]]:
        """Every (key, value, flags) in key order; flags & BUCKET_LEAF_FLAG marks a nested bucket."""
        return self.reader._walk(self._root, self._inline, self.name)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """The plain key/value pairs (nested buckets skipped), in key order."""
        for k, v, f in self.entries():
            if not f & BUCKET_LEAF_FLAG:
                yield k, v

    def buckets(self) -> Iterator[tuple[bytes, Bucket]]:
        """The nested buckets, in key order."""
        for k, v, f in self.entries():
            if f & BUCKET_LEAF_FLAG:
                root, inline = _bucket_value(v, k)
                yield k, Bucket(self.reader, k, root, inline)

    def bucket(self, name: bytes) -> Bucket | None:
        for k, b in self.buckets():
            if k == name:
                return b
            if k > name:
                return None
        return None

    def get(self, key: bytes) -> bytes | None:
        for k, v in self.items():
            if k == key:
                return v
            if k > key:
                return None
        return None


# --- writing -------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def _u32s(n: int) -> struct.Struct:
    return struct.Struct(f"<{n}I")


def _leaf_body(items: list[tuple[bytes, bytes, int]]) -> bytes:
    n = len(items)
    heads = [0] * (4 * n)
    data: list[bytes] = []
    off = n * ELEM_SIZE  # from element i to its key: past the later elements, then the earlier data
    j = 0
    for k, v, f in items:
        lk = len(k)
        lv = len(v)
        heads[j] = f
        heads[j + 1] = off
        heads[j + 2] = lk
        heads[j + 3] = lv
        off += lk + lv - ELEM_SIZE
        j += 4
        data += (k, v)
    return _u32s(4 * n).pack(*heads) + b"".join(data)


def _branch_body(entries: list[tuple[bytes, int]]) -> bytes:
    n = len(entries)
    heads: list[int] = []
    off = n * ELEM_SIZE
    for i, (k, pgid) in enumerate(entries):
        heads += (off - i * ELEM_SIZE, len(k), pgid)
        off += len(k)
    return struct.pack("<" + "IIQ" * n, *heads) + b"".join(k for k, _ in entries)


@dataclass(slots=True)
class Nested:
    """A nested bucket given to the writer as a value: its (key, value)
    pairs in ascending key order (values may be Nested again). Set
    has_buckets when it holds nested buckets (bbolt never inlines those)."""

    items: Iterable[tuple[bytes, bytes | Nested]]
    has_buckets: bool = False


class _Tree:
    """Builds one bucket's B+tree bottom-up from items in key order, writing
    each page as soon as it is full."""

    def __init__(self, writer: BoltWriter, name: bytes) -> None:
        self.w = writer
        self.name = name
        self.leaf: list[tuple[bytes, bytes, int]] = []
        self.leaf_size = PAGE_HEADER_SIZE
        self.levels: list[list[tuple[bytes, int]]] = []
        self.level_sizes: list[int] = []
        self.last: bytes | None = None

    def add(self, key: bytes, value: bytes, flags: int = 0) -> None:
        if not key:
            raise ValueError(f"bucket {self.name!r}: empty key")
        if self.last is not None and key <= self.last:
            raise ValueError(f"bucket {self.name!r}: keys must be strictly ascending ({self.last!r} then {key!r})")
        self.last = key
        size = ELEM_SIZE + len(key) + len(value)
        if self.leaf and self.leaf_size + size > self.w.page_size:
            self._flush_leaf()
        self.leaf.append((key, value, flags))
        self.leaf_size += size

    def add_many(self, items: Iterable[tuple[bytes, bytes | Nested]], depth: int = 0) -> int:
        """add() for many pairs: the hot loop of an export. A Nested value
        becomes a nested bucket: its pages are written first (they are
        allocated while this leaf is still being filled), then its header,
        or its whole inline page, is this element's value."""
        page_size = self.w.page_size
        leaf = self.leaf
        size = self.leaf_size
        last = self.last if self.last is not None else b""
        n = 0
        try:
            for k, v in items:
                if k <= last:
                    raise ValueError(f"bucket {self.name!r}: keys must be non-empty and strictly ascending "
                                     f"({last!r} then {k!r})")
                last = k
                flags = 0
                if v.__class__ is not bytes:
                    if not isinstance(v, Nested):
                        raise TypeError(f"bucket {self.name!r}: value of {k!r} is neither bytes nor Nested")
                    if depth >= _MAX_DEPTH:
                        raise ValueError(f"bucket {self.name!r}: buckets nested deeper than {_MAX_DEPTH}")
                    sub = _Tree(self.w, k)
                    sub.add_many(v.items, depth + 1)
                    v = sub.finish(inline_ok=not v.has_buckets)
                    flags = BUCKET_LEAF_FLAG
                assert isinstance(v, bytes)
                esz = ELEM_SIZE + len(k) + len(v)
                if size + esz > page_size and leaf:
                    self.leaf_size = size
                    self._flush_leaf()
                    leaf = self.leaf
                    size = PAGE_HEADER_SIZE
                leaf.append((k, v, flags))
                size += esz
                n += 1
        finally:
            self.leaf_size = size
            if n:
                self.last = last
        return n

    def _flush_leaf(self) -> None:
        first = self.leaf[0][0]
        leaf = self.leaf
        pgid = self.w._write_page(LEAF_PAGE, len(leaf), self.leaf_size, lambda: _leaf_body(leaf))
        self.leaf = []
        self.leaf_size = PAGE_HEADER_SIZE
        self._push(0, first, pgid)

    def _push(self, level: int, key: bytes, pgid: int) -> None:
        if level == len(self.levels):
            self.levels.append([])
            self.level_sizes.append(PAGE_HEADER_SIZE)
        size = ELEM_SIZE + len(key)
        entries = self.levels[level]
        if entries and self.level_sizes[level] + size > self.w.page_size:
            self._flush_branch(level)
            entries = self.levels[level]
        entries.append((key, pgid))
        self.level_sizes[level] += size

    def _flush_branch(self, level: int) -> None:
        entries = self.levels[level]
        pgid = self.w._write_page(BRANCH_PAGE, len(entries), self.level_sizes[level], lambda: _branch_body(entries))
        self.levels[level] = []
        self.level_sizes[level] = PAGE_HEADER_SIZE
        self._push(level + 1, entries[0][0], pgid)

    def finish(self, inline_ok: bool) -> bytes:
        """Write the remaining pages; returns the bucket's value (its header,
        followed by its page when the bucket is inlined)."""
        if not self.levels:
            if inline_ok and self.leaf_size <= self.w.page_size // _INLINE_FRACTION:
                page = PAGE_HEADER.pack(0, LEAF_PAGE, len(self.leaf), 0) + _leaf_body(self.leaf)
                return BUCKET_HEADER.pack(0, 0) + page
            leaf = self.leaf
            root = self.w._write_page(LEAF_PAGE, len(leaf), self.leaf_size, lambda: _leaf_body(leaf))
            return BUCKET_HEADER.pack(root, 0)
        if self.leaf:
            self._flush_leaf()
        level = 0
        while True:
            entries = self.levels[level]
            if level == len(self.levels) - 1 and len(entries) == 1:
                return BUCKET_HEADER.pack(entries[0][1], 0)
            if entries:
                self._flush_branch(level)
            level += 1


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a writer's run put the root page and the freelist, and the
    high-water page id: all the meta pages need."""

    root: int
    freelist: int
    pgid: int


class BoltWriter:
    """Writes a bbolt file, in one of three modes:

    - to a seekable file (``f`` given, ``layout`` None): one pass; the meta
      pages, which name the root and the file's end, are written last;
    - a dry run (``f`` None): nothing is written, only :attr:`layout` is
      worked out (page bodies are never built);
    - to a stream (``f`` given with the ``layout`` of a dry run over the
      very same input): the meta pages first, then every page in order,
      never seeking, so the file can go down a pipe while it is built.

    Call :meth:`add_bucket` for each top-level bucket in ascending name
    order, then :meth:`finish`. Only the pages being filled (one per tree
    level, and per nesting level) are held in memory. Nested buckets are
    given as :class:`Nested` values; small buckets without nested ones are
    inlined as bbolt does.
    """

    def __init__(self, f: BinaryIO | None, page_size: int = DEFAULT_PAGE_SIZE, txid: int = 1, *,
                 layout: Layout | None = None) -> None:
        if page_size < 1024 or page_size & (page_size - 1):
            raise ValueError(f"invalid page size {page_size}")
        self._f = f
        self.page_size = page_size
        self.txid = txid
        self._planned = layout
        self.layout: Layout | None = None  # set by finish()
        self._next = 2
        self._root = _Tree(self, b"")
        self._finished = False
        self._zeros = bytes(page_size)
        self._start = 0
        if f is not None:
            if layout is not None:
                f.write(self._meta_pages(layout))
            else:
                self._start = f.tell()
                f.seek(self._start + 2 * page_size)

    def _meta_pages(self, layout: Layout) -> bytes:
        pages = []
        for i in (0, 1):
            fields = META_FIELDS.pack(MAGIC, VERSION, self.page_size, 0, layout.root, 0, layout.freelist,
                                      layout.pgid, self.txid)
            page = PAGE_HEADER.pack(i, META_PAGE, 0, 0) + fields + META_CHECKSUM.pack(fnv64a(fields))
            pages.append(page + bytes(self.page_size - len(page)))
        return b"".join(pages)

    def _write_page(self, flags: int, count: int, total: int, body: Callable[[], bytes]) -> int:
        """Write one page (with its overflow pages) of ``total`` bytes,
        header included; body() builds the bytes after the header."""
        pgid = self._next
        npages = -(-total // self.page_size)
        self._next += npages
        if self._f is None:
            return pgid
        data = body()
        if PAGE_HEADER_SIZE + len(data) != total:
            raise AssertionError(f"page {pgid}: planned {total} bytes, built {PAGE_HEADER_SIZE + len(data)}")
        self._f.write(PAGE_HEADER.pack(pgid, flags, count, npages - 1))
        self._f.write(data)
        pad = npages * self.page_size - total
        if pad:
            self._f.write(self._zeros[:pad] if pad <= self.page_size else bytes(pad))
        return pgid

    def add_bucket(self, name: bytes, items: Iterable[tuple[bytes, bytes | Nested]],
                   has_buckets: bool = False) -> int:
        """Write a top-level bucket from (key, value) pairs in strictly
        ascending key order (a Nested value is a nested bucket; pass
        has_buckets then); returns how many pairs it holds."""
        if self._finished:
            raise ValueError("writer is finished")
        if self._root.last is not None and name <= self._root.last:
            raise ValueError(f"buckets must be added in ascending name order ({name!r})")
        tree = _Tree(self, name)
        n = tree.add_many(items)
        self._root.add(name, tree.finish(inline_ok=not has_buckets), BUCKET_LEAF_FLAG)
        return n

    def finish(self) -> int:
        """Write the root and the (empty) freelist, then (seekable mode) the
        two meta pages; returns the file's size in bytes. The file is
        flushed, not fsync'd. A stream whose input differed from its dry
        run's raises AssertionError (its meta pages are wrong)."""
        if self._finished:
            raise ValueError("writer is finished")
        self._finished = True
        root_value = self._root.finish(inline_ok=False)
        root, _ = BUCKET_HEADER.unpack_from(root_value)
        freelist = self._write_page(FREELIST_PAGE, 0, PAGE_HEADER_SIZE, lambda: b"")
        self.layout = Layout(root, freelist, self._next)
        size = self._next * self.page_size
        if self._f is None:
            return size
        if self._planned is not None:
            if self._planned != self.layout:
                raise AssertionError(f"bbolt stream: laid out {self.layout}, planned {self._planned}")
        else:
            self._f.seek(self._start)
            self._f.write(self._meta_pages(self.layout))
            self._f.seek(self._start + size)
            self._f.truncate()
        self._f.flush()
        return size


def write_file(path: str, buckets: Iterable[tuple[bytes, Iterable[tuple[bytes, bytes]]]],
               page_size: int = DEFAULT_PAGE_SIZE) -> int:
    """Write a bbolt file at path from (bucket name, items) in name order,
    durably (fsync'd); returns its size."""
    with open(path, "wb", buffering=1 << 20) as f:
        w = BoltWriter(f, page_size)
        for name, items in buckets:
            w.add_bucket(name, items)
        size = w.finish()
        os.fsync(f.fileno())
    return size
