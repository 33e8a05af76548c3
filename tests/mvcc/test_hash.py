"""HashKV: etcd's crc32c over the key bucket (values checked against real etcd 3.4.23)."""

from __future__ import annotations

import pytest

from petcd.mvcc.errors import ErrCompacted, ErrFutureRev
from petcd.mvcc.kvstore import crc32c
from tests.mvcc.conftest import Harness


def test_crc32c_known_vector() -> None:
    assert crc32c(b"123456789", 0) == 0xE3069283
    assert crc32c(b"6789", crc32c(b"12345", 0)) == 0xE3069283


def test_hash_kv_equals_etcds(h: Harness) -> None:
    # the same writes on a fresh etcd 3.4.23 gave these HashKV answers
    assert h.kv.hash_kv(0) == (1084519789, 1, -1)
    h.put(b"a", b"1")
    assert h.kv.hash_kv(0) == (2587454935, 2, -1)
    h.delete(b"a")
    assert h.kv.hash_kv(0) == (3520211144, 3, -1)
    assert h.kv.hash_kv(2) == (2587454935, 2, -1)


def test_hash_kv_errors_and_determinism(h: Harness) -> None:
    for i in range(5):
        h.put(b"k%d" % (i % 2), b"%d" % i)
    with pytest.raises(ErrFutureRev):
        h.kv.hash_kv(7)
    first = h.kv.hash_kv(4)
    assert h.kv.hash_kv(4) == first
    h.put(b"z", b"later")
    assert h.kv.hash_kv(4) == first  # later writes do not change a past revision's hash
    h.kv.compact(3)
    with pytest.raises(ErrCompacted):
        h.kv.hash_kv(3)
    assert h.kv.hash_kv(4)[2] == 3
