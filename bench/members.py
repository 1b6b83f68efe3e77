"""Who the load talks about: member ids and the skewed (Zipf-like) or uniform choice among them.

Seeding, the HTTP load generator and the direct SQL ceiling all import this module so that they agree on
member ids and on the distribution.
"""

from __future__ import annotations

import bisect
import itertools
import random

HOT_MEMBER = "hot-0000001"
"""A dedicated member with a very large balance: the target of the hot-member run."""

YCSB_ZIPF_S = 0.99
"""Default Zipf exponent (the YCSB "zipfian" constant): with 100,000 members the most active member gets
~7.8% of the traffic, the top 1% of members ~60%, and a long tail the rest."""


def member_ref(index: int) -> str:
    """External member id of the index-th seeded member (1-based)."""
    return f"m{index:07d}"


class MemberPicker:
    """Draws member indexes in 1..n, Zipf(s) over a fixed random permutation (so the hot members are not
    the first ids), or uniformly. Deterministic for a given seed."""

    def __init__(self, n: int, *, uniform: bool = False, s: float = YCSB_ZIPF_S, seed: int = 1) -> None:
        self.n = n
        self.uniform = uniform
        self.rng = random.Random(seed)
        self._cdf: list[float] = []
        self._perm: list[int] = []
        if not uniform:
            weights = (1.0 / (rank**s) for rank in range(1, n + 1))
            cdf = list(itertools.accumulate(weights))
            total = cdf[-1]
            self._cdf = [c / total for c in cdf]
            perm = list(range(1, n + 1))
            random.Random(12345).shuffle(perm)  # the same permutation in every process
            self._perm = perm

    def index(self) -> int:
        if self.uniform:
            return self.rng.randint(1, self.n)
        rank = bisect.bisect_left(self._cdf, self.rng.random())
        return self._perm[min(rank, self.n - 1)]

    def ref(self) -> str:
        return member_ref(self.index())

    def top_share(self, k: int) -> float:
        """Share of the draws that go to the k most active members (0 for uniform: not meaningful)."""
        if self.uniform:
            return k / self.n
        return self._cdf[min(k, self.n) - 1]
