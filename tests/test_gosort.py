"""petcd/gosort.py: Go's unstable sort, reproduced for the places where etcd's
output depends on the order it leaves equal keys in. Range sorting with ties
is checked against real etcd in tests/mvcc and the differential tests;
permission order in tests/auth."""

from __future__ import annotations

import random

from petcd.gosort import go_sort, go_sorted


def test_go_sort_sorts_and_keeps_small_runs_in_order() -> None:
    rng = random.Random(3)
    for n in [0, 1, 5, 12, 13, 40, 60, 200]:
        xs = [(rng.randint(0, 9), i) for i in range(n)]
        go_sort(xs, lambda a, b: a[0] < b[0])
        assert [x[0] for x in xs] == sorted(x[0] for x in xs)
        if n <= 12:  # insertion sort: stable
            assert xs == sorted(xs)
    desc = list(range(100, 0, -1))
    go_sort(desc, lambda a, b: a < b)
    assert desc == list(range(1, 101))



def test_go_sorted_by_key_is_go_sort_of_the_keys() -> None:
    rng = random.Random(1)
    for _ in range(500):
        items = [(rng.randint(0, rng.choice([2, 5, 50])), i) for i in range(rng.randint(0, 120))]
        asc = list(items)
        go_sort(asc, lambda a, b: a[0] < b[0])
        assert go_sorted(list(items), lambda x: x[0], descending=False) == asc
        desc = go_sorted(list(items), lambda x: x[0], descending=True)
        assert [x[0] for x in desc] == sorted((x[0] for x in items), reverse=True)
    distinct = [(k, k) for k in rng.sample(range(1000), 50)]
    assert go_sorted(distinct, lambda x: x[0], descending=True) == sorted(distinct, reverse=True)
