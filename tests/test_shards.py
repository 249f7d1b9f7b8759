"""Shards: contiguous, even ranges that cover a batch once; small batches are not sharded."""

from __future__ import annotations

import itertools

import pytest

from prefect_pollers.batch.shards import Sharding, split


@pytest.mark.parametrize(("total", "shards"), [(40_000, 4), (10, 3), (5, 8), (1, 1)])
def test_shards_cover_every_item_once_in_order_and_evenly(total, shards):
    ranges = split(total, shards)
    assert [r.index for r in ranges] == list(range(len(ranges)))
    assert ranges[0].start == 0 and ranges[-1].stop == total
    assert all(a.stop == b.start for a, b in itertools.pairwise(ranges))
    sizes = [r.stop - r.start for r in ranges]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    assert all(r.count == len(ranges) <= shards for r in ranges)
    items = list(range(total))
    assert [i for r in ranges for i in r.take(items)] == items


def test_only_batches_over_the_threshold_are_sharded():
    sharding = Sharding(deployment="batch-scans/shard", shards=4, threshold=100)
    assert not sharding.applies_to(100) and sharding.applies_to(101)
    assert not Sharding(deployment="batch-scans/shard", shards=1, threshold=1).applies_to(50)
