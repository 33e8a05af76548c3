"""A large backend written directly (not through a member), for the tests that
defragment one: the defrag-keeps-leader cluster test and the loop-lag test."""

from __future__ import annotations

import os
from pathlib import Path

from petcd.mvcc.kvstore import KVStore
from petcd.storage.backend import Backend

VALUE = 1 << 20  # 1 MiB values: the db is mostly overflow pages, written fast


def fill_backend(path: Path, megabytes: int) -> None:
    """Write megabytes keys big/00000.. of 1 MiB into a stopped member's backend, through
    the mvcc store so the member rebuilds its key index from them on start. The content
    is a function of the key alone (value i starts with i as 4 big-endian bytes), so
    members filled alike hold the same keys at the same revisions."""
    backend = Backend(str(path), unsafe_no_fsync=True)
    try:
        kv = KVStore(backend)
        for i in range(megabytes):
            w = kv.write()
            w.put(b"big/%05d" % i, i.to_bytes(4, "big") * (VALUE // 4), 0)
            w.end()
            if i % 64 == 63:
                backend.commit()
        backend.commit()
    finally:
        backend.close()
    os.sync()  # the member starts on a settled disk, not a writeback storm
