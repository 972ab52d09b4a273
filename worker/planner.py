"""Batch planning: which items run together in one sampling pass.

Pure Python with no torch, so it is tested on CPU without a model and shared by the producer (grouping segments into
``synthesize_batch`` messages) and the worker (packing passes). Items are packed by a frame budget, longest first, and
only items of one length bucket share a pass, so a pass pads each row by at most its bucket's width. A pass holds as
many items as the budget allows: there is no cut to favoured batch sizes (the compiled DiT takes any size).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)  # the caller's handle of an item

# Frame buckets: a pass is padded to at most the next bucket (here ≤ 25% padding) and only items of one bucket share a
# pass. Finer buckets mean less padding but more shapes to compile and record at warm-up.
DEFAULT_FRAME_BUCKETS: tuple[int, ...] = (256, 384, 512, 640, 768, 1024, 1280, 1536, 2048, 2560, 3072, 4096)
OVERFLOW_GRANULE = 512


@dataclass(frozen=True)
class PlanItem(Generic[K]):
    """One unit of work as the planner sees it."""

    id: K  # the caller's handle, returned untouched in the plan
    frames: int  # mel frames this item needs (reference plus generated)
    group: Hashable = None  # items run together only within a group (same precision, steps, sway)


@dataclass(frozen=True)
class BatchPlan(Generic[K]):
    """One sampling pass: its items, longest first, and its bucket (the longest length its rows may pad to)."""

    items: tuple[PlanItem[K], ...]
    frames: int  # the bucket: a bucket length, or a multiple of OVERFLOW_GRANULE past the last bucket
    group: Hashable = None

    @property
    def size(self) -> int:
        return len(self.items)

    @property
    def padded_tokens(self) -> int:
        return self.size * self.frames

    @property
    def longest(self) -> int:
        return max(item.frames for item in self.items)

    @property
    def fill(self) -> float:
        """Share of the pass that carries real frames when rows are padded to the longest (1.0: no padding)."""
        return sum(item.frames for item in self.items) / (self.size * self.longest)


@dataclass(frozen=True)
class PlannerConfig:
    """How passes are packed. ``frame_budget`` bounds ``rows × bucket frames`` per pass (CFG doubles it on device)."""

    frame_budget: int = 32_768
    max_batch: int = 64
    frame_buckets: tuple[int, ...] = DEFAULT_FRAME_BUCKETS

    def __post_init__(self) -> None:
        if self.frame_budget < 1 or self.max_batch < 1:
            raise ValueError(f"frame_budget and max_batch must be ≥ 1, got {self.frame_budget}, {self.max_batch}")
        if not self.frame_buckets or any(b < 1 for b in self.frame_buckets):
            raise ValueError(f"frame_buckets must be positive, got {self.frame_buckets}")
        object.__setattr__(self, "frame_buckets", tuple(sorted(set(self.frame_buckets))))

    def bucket_frames(self, frames: int) -> int:
        for bucket in self.frame_buckets:
            if frames <= bucket:
                return bucket
        return math.ceil(frames / OVERFLOW_GRANULE) * OVERFLOW_GRANULE

    def fits(self, size: int, frames: int) -> bool:
        return size <= self.max_batch and size * self.bucket_frames(frames) <= self.frame_budget

    def full(self, plan: BatchPlan[Any]) -> bool:
        """No further item of its bucket could join this pass."""
        return not self.fits(plan.size + 1, plan.frames)


def plan_batches(items: Iterable[PlanItem[K]], config: PlannerConfig) -> list[BatchPlan[K]]:
    """Pack items into passes: per group, longest first, items of one frame bucket per pass, as many as the budget
    allows.

    An item too long for the budget on its own still runs, alone.
    """
    by_group: dict[Hashable, list[PlanItem[K]]] = {}
    for item in items:
        if item.frames < 1:
            raise ValueError(f"item {item.id!r} has {item.frames} frames; at least 1 is needed")
        by_group.setdefault(item.group, []).append(item)

    plans: list[BatchPlan[K]] = []
    for group, members in by_group.items():
        queue = sorted(members, key=lambda item: -item.frames)
        while queue:
            take = _fill_count(queue, config)
            batch, queue = queue[:take], queue[take:]
            plans.append(BatchPlan(tuple(batch), config.bucket_frames(batch[0].frames), group))
    return plans


def _fill_count(queue: Sequence[PlanItem[Any]], config: PlannerConfig) -> int:
    """How many items from the head of a longest-first queue form the next pass: same bucket, within budget."""
    longest = queue[0].frames  # the head is the longest, so it sets the padded length
    bucket = config.bucket_frames(longest)
    count = 1
    while (count < len(queue) and config.fits(count + 1, longest)
           and config.bucket_frames(queue[count].frames) == bucket):
        count += 1
    return count
