"""Near-duplicate search by multi-index hashing: the same pairs as brute force, each once, in bounded
chunks; connected components of the pairs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core import hamming
from pipeline.core.hamming import components, even_blocks, near_pairs, plan

DISTANCES = [0, 1, 8, 12, 32]


def brute_force(hashes: np.ndarray, distance: int) -> set[tuple[int, int, int]]:
    d = np.bitwise_count(hashes[:, None] ^ hashes[None, :]).astype(np.int64)
    i, j = np.nonzero(np.triu(d <= distance, k=1))
    return set(zip(i.tolist(), j.tolist(), d[i, j].tolist()))


def found(hashes: np.ndarray, distance: int, max_candidates: int = 1 << 22) -> list[tuple[int, int, int]]:
    """Every pair reported, in order, after checking each chunk's types and bounds."""
    pairs = []
    for i, j, d in near_pairs(hashes, distance, max_candidates):
        assert i.dtype == j.dtype == d.dtype == np.int64
        assert len(i) == len(j) == len(d) and 0 < len(i) <= max_candidates
        assert (i < j).all()
        pairs += zip(i.tolist(), j.tolist(), d.tolist())
    return pairs


def planted(seed: int, n: int, distance: int, identical: float) -> np.ndarray:
    """Uniform hashes, a third of them replaced by near copies of earlier ones (0 .. distance + 2 bits
    flipped) and a share `identical` by exact copies of a few."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    for item in rng.integers(1, n, size=n // 3) if n > 1 else []:
        flips = rng.choice(64, size=rng.integers(0, distance + 3), replace=False)
        hashes[item] = hashes[rng.integers(0, item)] ^ np.uint64(sum(1 << int(bit) for bit in flips))
    copies = rng.random(n) < identical
    hashes[copies] = rng.choice(hashes[: max(1, n // 10)], size=int(copies.sum()))
    return hashes


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 120),
    distance=st.sampled_from(DISTANCES),
    identical=st.sampled_from([0.0, 0.3, 0.9]),
)
def test_every_pair_within_the_distance_exactly_once(seed, n, distance, identical):
    hashes = planted(seed, n, distance, identical)
    pairs = found(hashes, distance)
    assert len(pairs) == len(set(pairs))
    assert set(pairs) == brute_force(hashes, distance)


@settings(max_examples=25, deadline=None)
@given(
    bits=st.lists(st.sets(st.integers(0, 63), max_size=7), max_size=40),
    distance=st.sampled_from(DISTANCES),
)
def test_crowded_neighbourhoods(bits, distance):
    """Hashes of a few set bits each: many pairs at every distance, in every block."""
    hashes = np.array([sum(1 << bit for bit in b) for b in bits], dtype=np.uint64)
    pairs = found(hashes, distance)
    assert len(pairs) == len(set(pairs)) and set(pairs) == brute_force(hashes, distance)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 50), distance=st.sampled_from(DISTANCES))
def test_a_tiny_candidate_budget_gives_the_same_pairs(seed, n, distance):
    hashes = planted(seed, n, distance, identical=0.3)
    tiny = found(hashes, distance, max_candidates=7)
    assert len(tiny) == len(set(tiny)) and set(tiny) == set(found(hashes, distance))


@pytest.mark.parametrize("distance, m", [(4, m) for m in range(2, 6)] + [(8, m) for m in range(3, 10)])
@pytest.mark.parametrize("step_keys", [64, 1 << 20])
def test_every_block_count_finds_the_same_pairs(monkeypatch, distance, m, step_keys):
    """Whatever the plan: wide blocks (binary search), narrow ones (dense tables), radius 0 (no masks),
    one mask per step or many."""
    monkeypatch.setattr(hamming, "plan", lambda count, d: even_blocks(m, d))
    monkeypatch.setattr(hamming, "STEP_KEYS", step_keys)
    hashes = planted(m, 400, distance, identical=0.2)
    pairs = found(hashes, distance)
    assert len(pairs) == len(set(pairs)) and set(pairs) == brute_force(hashes, distance)


@pytest.mark.parametrize("distance", DISTANCES)
def test_empty_single_and_two_hashes(distance):
    assert found(np.zeros(0, dtype=np.uint64), distance) == []
    assert found(np.array([7], dtype=np.uint64), distance) == []
    near = np.array([0, (1 << distance) - 1], dtype=np.uint64)  # exactly `distance` bits apart
    assert found(near, distance) == [(0, 1, distance)]
    far = np.array([0, (1 << (distance + 1)) - 1], dtype=np.uint64)
    assert found(far, distance) == []


def test_identical_hashes_pair_up_in_bounded_chunks():
    hashes = np.array([5] * 30 + [6] + [5] * 20, dtype=np.uint64)  # 6 is 2 bits from 5
    pairs = found(hashes, 2, max_candidates=7)
    fives = [i for i, h in enumerate(hashes.tolist()) if h == 5]
    expected = {(i, j, 0) for k, i in enumerate(fives) for j in fives[k + 1 :]}
    expected |= {(min(i, 30), max(i, 30), 2) for i in fives}
    assert len(pairs) == len(expected) == 51 * 50 // 2 and set(pairs) == expected


def test_planted_copies_among_many_hashes_are_found():
    rng = np.random.default_rng(1)
    hashes = rng.integers(0, 2**64, size=50_000, dtype=np.uint64)
    sources = rng.choice(25_000, size=200, replace=False)
    copies = 25_000 + np.arange(200)
    for source, copy in zip(sources, copies):
        flips = rng.choice(64, size=rng.integers(1, 9), replace=False)
        hashes[copy] = hashes[source] ^ np.uint64(sum(1 << int(bit) for bit in flips))
    pairs = found(hashes, 8)
    assert {(int(s), int(c)) for s, c in zip(sources, copies)} <= {(i, j) for i, j, _ in pairs}
    assert all(d == int(hashes[i] ^ hashes[j]).bit_count() <= 8 for i, j, d in pairs)


@pytest.mark.parametrize("distance", [-1, 33, 64])
def test_a_distance_out_of_range_is_refused(distance):
    with pytest.raises(ValueError, match=f"got {distance}"):
        near_pairs(np.zeros(3, dtype=np.uint64), distance)


@pytest.mark.parametrize("hashes", [np.zeros(3, dtype=np.int64), np.zeros((2, 2), dtype=np.uint64), [1, 2]])
def test_hashes_must_be_a_flat_uint64_array(hashes):
    with pytest.raises(ValueError, match="1-D uint64"):
        near_pairs(hashes, 4)


def test_the_default_plan_is_three_blocks_of_radius_two():
    blocks = plan(1_000_000, 8)
    assert [(b.width, b.radius) for b in blocks] == [(22, 2), (21, 2), (21, 2)]


@pytest.mark.parametrize("count", [2, 300, 20_000, 1_000_000])
@pytest.mark.parametrize("distance", [1, 2, 5, 8, 12, 20, 32])
def test_every_plan_covers_64_bits_and_the_pigeonhole_bound(count, distance):
    blocks = plan(count, distance)
    assert sum(b.width for b in blocks) == 64 and sum(b.radius + 1 for b in blocks) == distance + 1
    assert [b.shift for b in blocks] == list(np.cumsum([0] + [b.width for b in blocks[:-1]]))


def test_components_of_a_chain():
    a = 0
    b = a ^ 0b111  # 3 bits from a
    c = b ^ 0b111000  # 3 bits from b, 6 from a
    far = 2**64 - 1
    hashes = np.array([far, c, a, far ^ 1, b, 0x0F0F_0F0F_0F0F_0F00], dtype=np.uint64)
    assert sorted((i, j) for i, j, _ in found(hashes, 4)) == [(0, 3), (1, 4), (2, 4)]
    labels = components(len(hashes), near_pairs(hashes, 4))
    assert labels.tolist() == [0, 1, 1, 0, 1, 2]


def test_components_without_pairs_and_of_nothing():
    assert components(3, []).tolist() == [0, 1, 2]
    assert components(0, []).tolist() == []


def test_components_fold_edges_into_a_forest(monkeypatch):
    hashes = planted(3, 200, 8, identical=0.5)
    whole = components(len(hashes), near_pairs(hashes, 8))
    monkeypatch.setattr(hamming, "FOLD_EDGES", 1)  # fold whenever more than n edges are held
    assert components(len(hashes), near_pairs(hashes, 8, max_candidates=7)).tolist() == whole.tolist()
    assert whole[0] == 0 and (np.diff(np.maximum.accumulate(whole)) <= 1).all()  # numbered by first item
