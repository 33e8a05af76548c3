"""Go 1.19's ``sort.Sort`` (pattern-defeating quicksort), element for
element, for the places where etcd's output depends on it.

What it is for: ``sort.Sort`` is not stable, so wherever etcd 3.4 sorts
items with equal keys, the order it leaves them in is whatever Go's
algorithm makes of the input: a Range sorted by a target with ties (many
keys with the same version, say) lists the tied keys in that order, and a
role's permissions, sorted by key alone, keep permissions that share a key
in that order (which ``role get`` shows, and which decides whether a later
grant changes a permission in place or adds one). Debian's etcd 3.4.23 is
built with Go 1.19; this module repeats that algorithm's comparisons and
swaps (insertion sort up to 12 elements, otherwise pdqsort with its pivot
choice, pattern breaking and heapsort fallback), so petcd leaves the same
order. It imports nothing of petcd, so every layer may use it.

Guarantees: ``go_sort(xs, less)`` sorts xs in place by ``less`` (a strict
order) with exactly the permutation Go 1.19 produces for the same input;
``go_sorted(items, key, descending)`` is the same for a sort by key
(descending as through ``sort.Reverse``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_MASK64 = (1 << 64) - 1
_UNKNOWN, _INCREASING, _DECREASING = 0, 1, 2


class _Sorter:
    def __init__(self, xs: list[T], less: Callable[[T, T], bool]) -> None:
        self.xs: list[object] = xs  # type: ignore[assignment]
        self._less = less

    def less(self, i: int, j: int) -> bool:
        return bool(self._less(self.xs[i], self.xs[j]))  # type: ignore[arg-type]

    def swap(self, i: int, j: int) -> None:
        xs = self.xs
        xs[i], xs[j] = xs[j], xs[i]

    def insertion(self, a: int, b: int) -> None:
        for i in range(a + 1, b):
            j = i
            while j > a and self.less(j, j - 1):
                self.swap(j, j - 1)
                j -= 1

    def sift_down(self, lo: int, hi: int, first: int) -> None:
        root = lo
        while True:
            child = 2 * root + 1
            if child >= hi:
                return
            if child + 1 < hi and self.less(first + child, first + child + 1):
                child += 1
            if not self.less(first + root, first + child):
                return
            self.swap(first + root, first + child)
            root = child

    def heap(self, a: int, b: int) -> None:
        first, hi = a, b - a
        for i in range((hi - 1) // 2, -1, -1):
            self.sift_down(i, hi, first)
        for i in range(hi - 1, -1, -1):
            self.swap(first, first + i)
            self.sift_down(0, i, first)

    def pdq(self, a: int, b: int, limit: int) -> None:
        was_balanced = True
        was_partitioned = True
        while True:
            length = b - a
            if length <= 12:
                self.insertion(a, b)
                return
            if limit == 0:
                self.heap(a, b)
                return
            if not was_balanced:
                self.break_patterns(a, b)
                limit -= 1
            pivot, hint = self.choose_pivot(a, b)
            if hint == _DECREASING:
                self.reverse(a, b)
                pivot = (b - 1) - (pivot - a)
                hint = _INCREASING
            if was_balanced and was_partitioned and hint == _INCREASING and self.partial_insertion(a, b):
                return
            if a > 0 and not self.less(a - 1, pivot):
                a = self.partition_equal(a, b, pivot)
                continue
            mid, was_partitioned = self.partition(a, b, pivot)
            left, right = mid - a, b - mid
            threshold = length // 8
            if left < right:
                was_balanced = left >= threshold
                self.pdq(a, mid, limit)
                a = mid + 1
            else:
                was_balanced = right >= threshold
                self.pdq(mid + 1, b, limit)
                b = mid

    def partition(self, a: int, b: int, pivot: int) -> tuple[int, bool]:
        self.swap(a, pivot)
        i, j = a + 1, b - 1
        while i <= j and self.less(i, a):
            i += 1
        while i <= j and not self.less(j, a):
            j -= 1
        if i > j:
            self.swap(j, a)
            return j, True
        self.swap(i, j)
        i += 1
        j -= 1
        while True:
            while i <= j and self.less(i, a):
                i += 1
            while i <= j and not self.less(j, a):
                j -= 1
            if i > j:
                break
            self.swap(i, j)
            i += 1
            j -= 1
        self.swap(j, a)
        return j, False

    def partition_equal(self, a: int, b: int, pivot: int) -> int:
        self.swap(a, pivot)
        i, j = a + 1, b - 1
        while True:
            while i <= j and not self.less(a, i):
                i += 1
            while i <= j and self.less(a, j):
                j -= 1
            if i > j:
                return i
            self.swap(i, j)
            i += 1
            j -= 1

    def partial_insertion(self, a: int, b: int) -> bool:
        max_steps, shortest_shifting = 5, 50
        i = a + 1
        for _ in range(max_steps):
            while i < b and not self.less(i, i - 1):
                i += 1
            if i == b:
                return True
            if b - a < shortest_shifting:
                return False
            self.swap(i, i - 1)
            if i - a >= 2:
                j = i - 1
                while j >= 1:
                    if not self.less(j, j - 1):
                        break
                    self.swap(j, j - 1)
                    j -= 1
            if b - i >= 2:
                j = i + 1
                while j < b:
                    if not self.less(j, j - 1):
                        break
                    self.swap(j, j - 1)
                    j += 1
        return False

    def break_patterns(self, a: int, b: int) -> None:
        length = b - a
        if length < 8:
            return
        state = length
        modulus = 1 << length.bit_length()
        for idx in range(a + (length // 4) * 2 - 1, a + (length // 4) * 2 + 2):
            # Go 1.19's xorshift (13, 17, 5) on a uint64
            state ^= (state << 13) & _MASK64
            state ^= state >> 17
            state ^= (state << 5) & _MASK64
            other = state & (modulus - 1)
            if other >= length:
                other -= length
            self.swap(idx, a + other)

    def choose_pivot(self, a: int, b: int) -> tuple[int, int]:
        n = b - a
        swaps = [0]
        i, j, k = a + n // 4, a + n // 4 * 2, a + n // 4 * 3
        if n >= 8:
            if n >= 50:
                i = self.median(i - 1, i, i + 1, swaps)
                j = self.median(j - 1, j, j + 1, swaps)
                k = self.median(k - 1, k, k + 1, swaps)
            j = self.median(i, j, k, swaps)
        if swaps[0] == 0:
            return j, _INCREASING
        if swaps[0] == 12:
            return j, _DECREASING
        return j, _UNKNOWN

    def order2(self, a: int, b: int, swaps: list[int]) -> tuple[int, int]:
        if self.less(b, a):
            swaps[0] += 1
            return b, a
        return a, b

    def median(self, a: int, b: int, c: int, swaps: list[int]) -> int:
        a, b = self.order2(a, b, swaps)
        b, c = self.order2(b, c, swaps)
        a, b = self.order2(a, b, swaps)
        return b

    def reverse(self, a: int, b: int) -> None:
        i, j = a, b - 1
        while i < j:
            self.swap(i, j)
            i += 1
            j -= 1


def go_sort(xs: list[T], less: Callable[[T, T], bool]) -> None:
    """Sort xs in place exactly as Go 1.19's sort.Sort would."""
    n = len(xs)
    if n > 1:
        _Sorter(xs, less).pdq(0, n, n.bit_length())


def go_sorted(items: list[T], key: Callable[[T], Any], descending: bool) -> list[T]:
    """items sorted by key in the order Go's sort.Sort leaves them (through
    sort.Reverse when descending). With all keys distinct every sort agrees,
    and Python's sort is used."""
    keys = [key(it) for it in items]
    if len(set(keys)) == len(keys):
        return sorted(items, key=key, reverse=descending)
    pairs = list(zip(keys, range(len(items)), strict=True))
    if descending:
        go_sort(pairs, lambda a, b: bool(b[0] < a[0]))
    else:
        go_sort(pairs, lambda a, b: bool(a[0] < b[0]))
    return [items[i] for _, i in pairs]
