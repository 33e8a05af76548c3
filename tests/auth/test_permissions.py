"""Permission intervals: etcd 3.4's key and range checks, including its
affine byte order (empty = +infinity) and ranges that end before they start."""

from __future__ import annotations

import random
from typing import Any

from petcd.auth.permissions import Interval, IntervalSet, merge_permissions, permission_interval, permitted
from petcd.proto import auth_pb2

P = auth_pb2.Permission


def role(*perms: tuple[Any, bytes, bytes]) -> auth_pb2.Role:
    return auth_pb2.Role(name=b"r", keyPermission=[P(permType=t, key=k, range_end=e) for t, k, e in perms])


def test_permission_shapes() -> None:
    assert permission_interval(b"a", b"") == Interval(b"a", b"a\x00")
    assert permission_interval(b"a", b"\x00") == Interval(b"a", None)
    assert permission_interval(b"a", b"c") == Interval(b"a", b"c")
    assert permission_interval(b"", b"") == Interval(None, b"\x00")


def test_read_write_split() -> None:
    up = merge_permissions([role((P.READ, b"r", b""), (P.WRITE, b"w", b""), (P.READWRITE, b"b", b""))])
    assert permitted(up, b"r", b"", write=False) and not permitted(up, b"r", b"", write=True)
    assert permitted(up, b"w", b"", write=True) and not permitted(up, b"w", b"", write=False)
    assert permitted(up, b"b", b"", write=True) and permitted(up, b"b", b"", write=False)


def test_ranges_join_across_roles_and_touching_ends() -> None:
    up = merge_permissions([role((P.READ, b"a", b"c")), role((P.READ, b"c", b"e"))])
    assert permitted(up, b"a", b"e", write=False)
    assert not permitted(up, b"a", b"e\x00", write=False)
    gap = merge_permissions([role((P.READ, b"a", b"c"), (P.READ, b"c\x00", b"e"))])
    assert not permitted(gap, b"a", b"e", write=False)  # "c" itself is missing
    assert permitted(gap, b"c\x00", b"d", write=False)


def test_from_key_and_prefix() -> None:
    up = merge_permissions([role((P.READ, b"m", b"\x00"))])
    assert permitted(up, b"m", b"\x00", write=False)
    assert permitted(up, b"zz", b"", write=False)
    assert permitted(up, b"n", b"\xff\xff", write=False)
    assert not permitted(up, b"l", b"\x00", write=False)
    whole = merge_permissions([role((P.READ, b"\x00", b"\x00"))])
    assert permitted(whole, b"\x00", b"\x00", write=False)
    prefix = merge_permissions([role((P.READ, b"a/", b"a0"))])
    assert not permitted(prefix, b"a/", b"\x00", write=False)


def test_degenerate_requests_follow_etcd() -> None:
    s = IntervalSet([Interval(b"a", b"b")])
    assert s.contains_range(b"a", b"a")
    assert s.contains_range(b"a\x01", b"a")
    assert not s.contains_range(b"b", b"a")
    assert not IntervalSet([Interval(b"0", b"a")]).contains_range(b"a", b"a")


def test_reversed_request_depends_on_etcds_tree_shape() -> None:
    # recorded against etcd 3.4.23 (user u2 of the differential, seed 1):
    # [b/y, a) is refused although [a, +inf) holds b/y, because etcd's walk
    # prunes the subtree that holds [a, +inf).
    r1 = role((P.WRITE, b"a", b"b"), (P.READ, b"a", b"\x00"), (P.READWRITE, b"a/", b"a0"), (P.READ, b"a/", b""),
              (P.WRITE, b"a/", b"c"), (P.WRITE, b"b", b"c"), (P.READWRITE, b"b/y", b""), (P.READWRITE, b"c", b""),
              (P.READWRITE, b"zz", b"z{"))
    up = merge_permissions([r1])
    assert not permitted(up, b"b/y", b"a", write=False)
    assert permitted(up, b"b/y", b"", write=False)


def test_empty_key_is_infinity() -> None:
    s = IntervalSet([permission_interval(b"", b"")])
    assert not s.contains_key(b"")
    assert not s.contains_key(b"a")
    assert not IntervalSet([Interval(b"a", None)]).contains_key(b"")


def test_fast_path_agrees_with_etcds_walk() -> None:
    rng = random.Random(7)
    alphabet = [b"", b"a", b"b", b"c", b"d", b"a\x00", b"b\x00", b"\x00", b"cc"]

    def end_for(begin: bytes) -> bytes:
        return rng.choice([b"", b"\x00", *(x for x in alphabet if x > begin)])

    for _ in range(2000):
        ivs = []
        for _ in range(rng.randint(0, 5)):
            k = rng.choice([x for x in alphabet if x])
            ivs.append(permission_interval(k, end_for(k)))
        s = IntervalSet(ivs)
        assert s._proper
        for _ in range(10):
            k = rng.choice([x for x in alphabet if x])
            e = rng.choice(alphabet)
            if e:
                q = permission_interval(k, e)
                assert s.contains_range(k, e) == s._literal(q), (ivs, k, e)
            else:
                assert s.contains_key(k) == s._literal(permission_interval(k, b""), point=True), (ivs, k)


def test_reversed_permission_uses_the_literal_walk() -> None:
    # a role may hold [c, a) (etcd stores it): it overlaps nothing that
    # starts at or after c, and helps cover a range that straddles c
    s = IntervalSet([Interval(b"c", b"a")])
    assert not s._proper
    assert not s.contains_key(b"b")
    assert not s.contains_key(b"c")
