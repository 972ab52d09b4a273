"""Batch planning: pure Python, no model (the planner never touches the device)."""

from __future__ import annotations

import random

import pytest

from worker.planner import BatchPlan, PlanItem, PlannerConfig, plan_batches


def _items(lengths, group=None):
    return [PlanItem(id=i, frames=n, group=group) for i, n in enumerate(lengths)]


def test_every_item_lands_in_exactly_one_pass_within_budget():
    rng = random.Random(0)
    items = _items([rng.randint(200, 2000) for _ in range(500)])
    config = PlannerConfig(frame_budget=16_384, max_batch=32)
    plans = plan_batches(items, config)
    ids = [item.id for plan in plans for item in plan.items]
    assert sorted(ids) == list(range(500))
    for plan in plans:
        assert plan.size <= 32
        assert plan.size == 1 or plan.padded_tokens <= 16_384
        assert plan.frames >= max(item.frames for item in plan.items)


def test_longest_first_groups_similar_lengths():
    items = _items([300, 1900, 310, 1950, 305, 1980])
    plans = plan_batches(items, PlannerConfig(frame_budget=6_144, max_batch=3, frame_buckets=(512, 2048)))
    assert [sorted(i.frames for i in plan.items) for plan in plans] == [[1900, 1950, 1980], [300, 305, 310]]
    assert [plan.frames for plan in plans] == [2048, 512]


def test_packs_by_frame_budget_not_by_count():
    short = plan_batches(_items([200] * 64), PlannerConfig(frame_budget=8_192, max_batch=64, frame_buckets=(256,)))
    long = plan_batches(_items([2000] * 64), PlannerConfig(frame_budget=8_192, max_batch=64, frame_buckets=(2048,)))
    assert [p.size for p in short] == [32, 32]
    assert {p.size for p in long} == {4}


def test_no_cut_to_favoured_batch_sizes():
    """29 rows that fit one pass run as one pass (a power-of-two cut made 16 + 8 + 4 + 1: four full passes)."""
    config = PlannerConfig(frame_budget=100_000, max_batch=64, frame_buckets=(512,))
    assert [p.size for p in plan_batches(_items([400] * 29), config)] == [29]
    capped = PlannerConfig(frame_budget=100_000, max_batch=8, frame_buckets=(512,))
    assert [p.size for p in plan_batches(_items([400] * 29), capped)] == [8, 8, 8, 5]


def test_groups_never_mix():
    items = _items([500] * 3, group="bf16") + [PlanItem(id=10 + i, frames=500, group="fp32") for i in range(3)]
    plans = plan_batches(items, PlannerConfig())
    assert len(plans) == 2
    assert all(len({item.group for item in plan.items}) == 1 for plan in plans)


def test_an_item_over_budget_runs_alone():
    plans = plan_batches(_items([5000, 100]), PlannerConfig(frame_budget=1_000, frame_buckets=(256, 4096)))
    assert [(p.size, p.frames) for p in plans] == [(1, 5120), (1, 256)]


def test_every_pass_is_padded_to_a_bucket_and_only_the_last_of_a_bucket_is_part_full():
    rng = random.Random(1)
    config = PlannerConfig(frame_budget=32_768, max_batch=64)
    for _ in range(20):
        items = _items([rng.randint(100, 4096) for _ in range(rng.randint(1, 200))])
        plans = plan_batches(items, config)
        assert {plan.frames for plan in plans} <= set(config.frame_buckets)
        for bucket in {plan.frames for plan in plans}:
            sizes = [plan.size for plan in plans if plan.frames == bucket]
            assert sizes == sorted(sizes, reverse=True)
            assert all(config.full(p) for p in [p for p in plans if p.frames == bucket][:-1])


def test_a_pass_holds_one_length_bucket_so_padding_stays_bounded():
    config = PlannerConfig(frame_budget=1_000_000, max_batch=64, frame_buckets=(512, 1024, 2048))
    plans = plan_batches(_items([2000, 1500, 1100, 1000, 600, 500, 100]), config)
    assert [[i.frames for i in p.items] for p in plans] == [[2000, 1500, 1100], [1000, 600], [500, 100]]
    assert all(max(i.frames for i in p.items) <= p.frames for p in plans)


def test_fill_reports_padding():
    plan = BatchPlan(tuple(_items([512, 256])), 512)
    assert plan.fill == pytest.approx(0.75)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="frame_budget and max_batch must be"):
        PlannerConfig(frame_budget=0)
    with pytest.raises(ValueError, match="frame_buckets must be positive"):
        PlannerConfig(frame_buckets=(0, 512))
