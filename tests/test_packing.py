"""Packing requests into provider batches: every item in exactly one pack, no pack over a limit."""

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefect_pollers.batch.packing import Pack, Sized, pack

sizes = st.lists(st.integers(min_value=1, max_value=500), max_size=300)


@given(sizes=sizes, max_requests=st.integers(1, 50), max_bytes=st.integers(500, 5_000))
def test_every_request_is_in_exactly_one_pack_and_no_pack_is_over_a_limit(
    sizes: list[int], max_requests: int, max_bytes: int
) -> None:
    requests = [Sized(f"k{i}", size) for i, size in enumerate(sizes)]
    packs = pack(requests, max_requests=max_requests, max_bytes=max_bytes)
    assert [key for p in packs for key in p.keys] == [r.key for r in requests]
    for p in packs:
        assert 1 <= len(p.keys) <= max_requests
        assert p.size <= max_bytes
        assert p.size == sum(sizes[int(key[1:])] for key in p.keys)
    # A pack is cut only when the next request would not fit.
    for before, after in itertools.pairwise(packs):
        first = sizes[int(after.keys[0][1:])]
        assert len(before.keys) == max_requests or before.size + first > max_bytes


@given(sizes=sizes, max_requests=st.integers(1, 50))
def test_the_same_requests_and_limits_give_the_same_packs(
    sizes: list[int], max_requests: int
) -> None:
    requests = [Sized(f"k{i}", size) for i, size in enumerate(sizes)]
    first = pack(requests, max_requests=max_requests, max_bytes=5_000)
    assert first == pack(list(requests), max_requests=max_requests, max_bytes=5_000)
    assert len({p.digest() for p in first}) == len(first)


def test_a_request_over_the_byte_limit_alone_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'big' takes 11 bytes"):
        pack([Sized("a", 1), Sized("big", 11)], max_requests=5, max_bytes=10)


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        pack([Sized("a", 1)], max_requests=0, max_bytes=10)


def test_the_digest_names_the_keys_in_order() -> None:
    assert Pack(("a", "b"), 2).digest() != Pack(("b", "a"), 2).digest()
    assert pack([], max_requests=1, max_bytes=1) == []
