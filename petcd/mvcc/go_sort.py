"""Go's sort.Sort, reproduced: the order etcd leaves equal sort keys in.

What it is for: a Range sorted by a target with ties (many keys with the
same version, say) must list the tied keys in the order etcd does, and Go's
sort.Sort is not stable, so that order is whatever Go 1.19's
pattern-defeating quicksort (etcd 3.4.23's toolchain) makes of the input.
``go_sort`` gives exactly that order; with no ties it is Python's sort.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def go_sort(items: list[Any], key: Callable[[Any], Any], descending: bool) -> list[Any]:
    """items sorted by key, in exactly the order etcd's Go sort.Sort
    (pattern-defeating quicksort, not stable) leaves them, so that equal
    sort keys come out in etcd's order too. With all keys distinct every
    sort agrees, and Python's sort is used."""
    keys = [key(it) for it in items]
    if len(set(keys)) == len(keys):
        return sorted(items, key=key, reverse=descending)
    order = _GoSorter(keys, descending).sort()
    return [items[i] for i in order]


class _GoSorter:
    """Go 1.19's sort.Sort over a list of sort keys (descending: through
    sort.Reverse), tracking where each original position ends up. The
    algorithm's every comparison and swap is reproduced, since with equal
    keys the outcome depends on them."""

    _MAX_INSERTION = 12

    def __init__(self, keys: list[Any], descending: bool) -> None:
        self.k = keys
        self.p = list(range(len(keys)))
        self.desc = descending

    def less(self, i: int, j: int) -> bool:
        k = self.k
        return bool(k[j] < k[i]) if self.desc else bool(k[i] < k[j])

    def swap(self, i: int, j: int) -> None:
        k, p = self.k, self.p
        k[i], k[j] = k[j], k[i]
        p[i], p[j] = p[j], p[i]

    def sort(self) -> list[int]:
        n = len(self.k)
        if n > 1:
            self._pdqsort(0, n, n.bit_length())
        return self.p

    def _insertion(self, a: int, b: int) -> None:
        for i in range(a + 1, b):
            j = i
            while j > a and self.less(j, j - 1):
                self.swap(j, j - 1)
                j -= 1

    def _sift_down(self, lo: int, hi: int, first: int) -> None:
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

    def _heap(self, a: int, b: int) -> None:
        first, hi = a, b - a
        for i in range((hi - 1) // 2, -1, -1):
            self._sift_down(i, hi, first)
        for i in range(hi - 1, -1, -1):
            self.swap(first, first + i)
            self._sift_down(0, i, first)

    def _pdqsort(self, a: int, b: int, limit: int) -> None:
        was_balanced = True
        was_partitioned = True
        while True:
            length = b - a
            if length <= self._MAX_INSERTION:
                self._insertion(a, b)
                return
            if limit == 0:
                self._heap(a, b)
                return
            if not was_balanced:
                self._break_patterns(a, b)
                limit -= 1
            pivot, hint = self._choose_pivot(a, b)
            if hint == _DECREASING:
                self._reverse(a, b)
                pivot = (b - 1) - (pivot - a)
                hint = _INCREASING
            if was_balanced and was_partitioned and hint == _INCREASING:
                if self._partial_insertion(a, b):
                    return
            if a > 0 and not self.less(a - 1, pivot):
                a = self._partition_equal(a, b, pivot)
                continue
            mid, already = self._partition(a, b, pivot)
            was_partitioned = already
            left, right = mid - a, b - mid
            threshold = length // 8
            if left < right:
                was_balanced = left >= threshold
                self._pdqsort(a, mid, limit)
                a = mid + 1
            else:
                was_balanced = right >= threshold
                self._pdqsort(mid + 1, b, limit)
                b = mid

    def _partition(self, a: int, b: int, pivot: int) -> tuple[int, bool]:
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

    def _partition_equal(self, a: int, b: int, pivot: int) -> int:
        self.swap(a, pivot)
        i, j = a + 1, b - 1
        while True:
            while i <= j and not self.less(a, i):
                i += 1
            while i <= j and self.less(a, j):
                j -= 1
            if i > j:
                break
            self.swap(i, j)
            i += 1
            j -= 1
        return i

    def _partial_insertion(self, a: int, b: int) -> bool:
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

    def _break_patterns(self, a: int, b: int) -> None:
        length = b - a
        if length >= 8:
            r = length
            modulus = 1 << length.bit_length()
            idx = a + (length // 4) * 2 - 1
            for i in range(3):
                r ^= (r << 13) & _U64  # Go 1.19's xorshift (later Go versions changed the shifts)
                r ^= r >> 17
                r ^= (r << 5) & _U64
                other = r & (modulus - 1)
                if other >= length:
                    other -= length
                self.swap(idx + i, a + other)

    def _choose_pivot(self, a: int, b: int) -> tuple[int, int]:
        n = b - a
        swaps = [0]
        i, j, k = a + n // 4 * 1, a + n // 4 * 2, a + n // 4 * 3
        if n >= 8:
            if n >= 50:
                i = self._median(i - 1, i, i + 1, swaps)
                j = self._median(j - 1, j, j + 1, swaps)
                k = self._median(k - 1, k, k + 1, swaps)
            j = self._median(i, j, k, swaps)
        if swaps[0] == 0:
            return j, _INCREASING
        if swaps[0] == 12:
            return j, _DECREASING
        return j, _UNKNOWN

    def _order2(self, a: int, b: int, swaps: list[int]) -> tuple[int, int]:
        if self.less(b, a):
            swaps[0] += 1
            return b, a
        return a, b

    def _median(self, a: int, b: int, c: int, swaps: list[int]) -> int:
        a, b = self._order2(a, b, swaps)
        b, c = self._order2(b, c, swaps)
        a, b = self._order2(a, b, swaps)
        return b

    def _reverse(self, a: int, b: int) -> None:
        i, j = a, b - 1
        while i < j:
            self.swap(i, j)
            i += 1
            j -= 1


_U64 = (1 << 64) - 1
_UNKNOWN, _INCREASING, _DECREASING = 0, 1, 2
