"""Counters the gateway keeps about itself: what it processed, refused and shed, and why.

Bad input must be counted, not just logged, so an operator can see a misbehaving
device from the numbers; ``snapshot`` is what the periodic health log line prints.
"""

from __future__ import annotations

from collections import Counter


class Metrics:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()  # reason -> count

    def inc(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] += n
        self.counts["dropped"] += n

    def snapshot(self) -> dict[str, int]:
        out = dict(self.counts)
        out.update({f"dropped.{k}": v for k, v in self.dropped.items()})
        return out
