"""Near-duplicate search over 64-bit perceptual hashes by multi-index hashing (Norouzi, Punjani and
Fleet, "Fast search in Hamming space with multi-index hashing", CVPR 2012), in vectorised NumPy.
No step compares all pairs.

Method
- Identical hashes first: the search runs over `np.unique(hashes)`; every two items with the same
  hash are a pair at distance 0, and a pair of distinct hashes stands for every pair of their items.
- Pigeonhole: split the 64 bits into m blocks and give block i a radius r_i with
  sum(r_i + 1) > distance. If popcount(a ^ b) <= distance, some block differs in at most r_i bits
  (else the blocks alone would differ in at least sum(r_i + 1) bits).
- Per block: the distinct hashes sorted by the block's value, and a table from a value to its run in
  that order: dense arrays over all 2**b values (bincount offsets) while no bigger than the keys to
  look up nor 2**23 entries, else `np.searchsorted` on the sorted values. For every flip mask e with
  popcount(e) <= r_i each hash looks up the run of value ^ e, and the candidates found are verified
  with `np.bitwise_count` on the full 64 bits.
- Each pair exactly once: within a block a pair of values v < v ^ e is looked up only from v (the
  masks are grouped by their highest bit, and only the hashes with that bit clear look them up), a
  bucket's own pairs only towards later positions; across blocks a pair is kept only from the first
  block where its block distance is within that block's radius.
- Bounded memory: the candidates of each step are counted per look-up first and expanded in slices
  of at most `max_candidates` (split by cumulative sum, `_spans`); so are the item pairs of distinct
  hashes with several items. A step holds about 2**20 keys: masks are batched when hashes are few.

Block choice (cost model, `plan`)
With U distinct uniform hashes, a block of b bits and radius r has M = sum_{k<=r} C(b, k) masks;
each mask looks up U/2 keys and finds U/2 * U/2**b candidates. In units of one key look-up (about
8 ns on the 2-core machine the constants were fitted on, from timed forced plans), a candidate costs
2 (expansion, two gathers, xor, popcount), a mask 250 (built in Python), a NumPy step 2e4:

    cost = sum_i M_i * (U/2 * (1 + 2 * U / 2**b_i) + 250) + 2e4 * steps

The plan of least cost over m = 2 .. distance+1 blocks wins (widths 64 // m, the first 64 % m one
bit wider; radii as equal as sum(r_i + 1) = distance + 1 allows, the larger on the first blocks).
For distance 8 and U = 1,000,000: m = 2 (32 bits, r = 4) has 82,898 masks, 4.1e10 look-ups;
m = 3 (22, 21, 21 bits, r = 2) 718 masks, 3.6e8 look-ups and 1.4e8 candidates (5.6 s measured);
m = 4 (16 bits, r = 2, 1, 1, 1) 188 masks, 9.4e7 look-ups but 1.4e9 candidates (24 s): so 3 blocks
of 21-22 bits at radius 2. Small sets take many narrow blocks and few steps instead (2,000 hashes
at distance 8: 9 blocks of 7-8 bits, radius 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

BITS = 64
MAX_DISTANCE = 32
# The cost model, in key look-ups (about 8 ns each here): fitted to timings of forced plans on 2 cores.
KEY_COST = 1.0  # one key looked up: xor, table gathers, hits
CANDIDATE_COST = 2.0  # one candidate verified: expansion, two gathers, xor, popcount
MASK_COST = 250.0  # one flip mask built in Python
STEP_COST = 2e4  # NumPy's fixed cost per step
STEP_KEYS = 1 << 20  # keys per step: masks are batched when there are fewer hashes than this
FOLD_EDGES = 1 << 20  # components: edges held before they are folded into a spanning forest
DENSE_MAX = 1 << 23  # a block's table is dense up to this many entries (int32 starts, mostly uint8 counts: 40 MB)

Pairs = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Block:
    """Bits shift .. shift + width of a hash, searched within `radius` flipped bits."""

    shift: int
    width: int
    radius: int

    @property
    def bits(self) -> np.uint64:
        return np.uint64(((1 << self.width) - 1) << self.shift)

    def values(self, hashes: np.ndarray) -> np.ndarray:
        return ((hashes >> np.uint64(self.shift)) & np.uint64((1 << self.width) - 1)).astype(np.uint32)

    def mask_groups(self) -> Iterator[tuple[int, np.ndarray]]:
        """(top, masks): the nonzero flip masks of popcount <= radius, grouped by their highest bit."""
        for top in range(self.width if self.radius else 0):
            yield top, np.uint32(1 << top) | _flips(top, self.radius - 1)

    @property
    def mask_count(self) -> int:
        return _flip_count(self.width, self.radius)

    def group_sizes(self) -> list[int]:
        """How many masks `mask_groups` yields per highest bit."""
        return [_flip_count(top, self.radius - 1) for top in range(self.width if self.radius else 0)]


def _flip_count(width: int, radius: int) -> int:
    return sum(math.comb(width, k) for k in range(radius + 1))


def _flips(width: int, radius: int) -> np.ndarray:
    """Every mask of `width` bits with popcount <= radius."""
    return np.array(
        [sum(1 << bit for bit in bits) for k in range(radius + 1) for bits in combinations(range(width), k)],
        dtype=np.uint32,
    )


def near_pairs(hashes: np.ndarray, distance: int, max_candidates: int = 1 << 22) -> Iterator[Pairs]:
    """Chunks (i, j, d) of int64 arrays: every pair of items i < j with popcount(hashes[i] ^ hashes[j])
    = d <= distance, each exactly once over all chunks, with at most `max_candidates` candidate pairs
    held at a time."""
    if not isinstance(hashes, np.ndarray) or hashes.dtype != np.uint64 or hashes.ndim != 1:
        raise ValueError(
            f"hashes must be a 1-D uint64 array, got {getattr(hashes, 'dtype', type(hashes).__name__)} "
            f"of shape {getattr(hashes, 'shape', None)}"
        )
    if not 0 <= distance <= MAX_DISTANCE:
        raise ValueError(f"distance must be 0..{MAX_DISTANCE}, got {distance}")
    if max_candidates < 1:
        raise ValueError(f"max_candidates must be at least 1, got {max_candidates}")
    return _near_pairs(hashes, distance, max_candidates)


def _near_pairs(hashes: np.ndarray, distance: int, limit: int) -> Iterator[Pairs]:
    unique, inverse = np.unique(hashes, return_inverse=True)
    groups = _Groups.of(inverse, len(unique))
    yield from groups.equal_pairs(limit)
    if distance == 0 or len(unique) < 2:
        return
    blocks = plan(len(unique), distance)
    for k in range(len(blocks)):
        for ui, uj, d in _block_pairs(unique, blocks, k, distance, limit):
            yield from groups.item_pairs(ui, uj, d, limit)


def plan(count: int, distance: int) -> tuple[Block, ...]:
    """The blocks of least modelled cost for `count` distinct hashes and `distance` >= 1."""
    return min((even_blocks(m, distance) for m in range(2, distance + 2)), key=lambda blocks: _cost(blocks, count))


def even_blocks(m: int, distance: int) -> tuple[Block, ...]:
    """m blocks of 64 // m or one more bits, radii as equal as sum(radius + 1) = distance + 1 allows."""
    widths = [BITS // m + (i < BITS % m) for i in range(m)]
    radii = [(distance + 1) // m - 1 + (i < (distance + 1) % m) for i in range(m)]
    shifts = np.cumsum([0, *widths[:-1]])
    return tuple(Block(int(s), w, r) for s, w, r in zip(shifts, widths, radii))


def _cost(blocks: tuple[Block, ...], count: int) -> float:
    """Modelled work of a search over `count` uniform distinct hashes, in key look-ups (see the module doc)."""
    batch = max(1, STEP_KEYS // max(1, count // 2))
    cost = 0.0
    for block in blocks:
        masks = block.mask_count
        steps = 1 + sum(math.ceil(size / batch) for size in block.group_sizes())
        cost += masks * (count / 2 * (KEY_COST + count / 2**block.width * CANDIDATE_COST) + MASK_COST)
        cost += steps * STEP_COST
    return cost


def _block_pairs(unique: np.ndarray, blocks: tuple[Block, ...], k: int, distance: int, limit: int) -> Iterator[Pairs]:
    """(ui, uj, d): the pairs of distinct hashes within `distance` whose first block within its radius is k."""
    order = np.argsort(blocks[k].values(unique), kind="stable")
    ordered = unique[order]
    for queries, lo, count in _lookups(blocks[k].values(ordered), blocks[k]):
        for rows, offsets in _spans(count, limit):
            yield from _verified(ordered, order, queries[rows], lo[rows] + offsets, blocks[:k], distance)


def _lookups(values: np.ndarray, block: Block) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(queries, lo, count): positions in the sorted `values` and the runs lo .. lo + count of positions
    within the block's radius of them, each pair of positions once: a bucket's own pairs from the
    earlier position, a pair of values v < v ^ e from v (bit `top` of v clear)."""
    positions = np.arange(len(values))
    yield positions, positions + 1, np.searchsorted(values, values, "right") - positions - 1
    if block.radius == 0:
        return
    dense = 2**block.width <= min(DENSE_MAX, block.mask_count * len(values) // 2)
    lookup = _dense_lookup(values, block.width) if dense else _sorted_lookup(values)
    for top, masks in block.mask_groups():
        queries = np.flatnonzero((values & np.uint32(1 << top)) == 0)
        looked_up = values[queries, None]
        batch = max(1, STEP_KEYS // max(1, len(queries)))
        for start in range(0, len(masks), batch):
            keys = looked_up ^ masks[None, start : start + batch]
            hits, lo, count = lookup(keys.ravel())
            yield queries[hits // keys.shape[1]], lo, count


def _dense_lookup(values: np.ndarray, width: int) -> Callable[[np.ndarray], tuple[np.ndarray, ...]]:
    """keys -> (hits, lo, count) for the keys present, from arrays over every value of the block."""
    counts = np.bincount(values, minlength=1 << width)
    starts = (np.cumsum(counts) - counts).astype(np.int32 if len(values) < 2**31 else np.int64)
    counts = counts.astype(np.min_scalar_type(counts.max()))  # uint8 mostly: a smaller table, fewer cache misses

    def lookup(keys: np.ndarray) -> tuple[np.ndarray, ...]:
        count = counts[keys]
        hits = np.flatnonzero(count != 0)
        return hits, starts[keys[hits]], count[hits]

    return lookup


def _sorted_lookup(values: np.ndarray) -> Callable[[np.ndarray], tuple[np.ndarray, ...]]:
    """keys -> (hits, lo, count) for the keys present, by binary search: for blocks too wide for a table."""

    def lookup(keys: np.ndarray) -> tuple[np.ndarray, ...]:
        lo = np.searchsorted(values, keys, "left")
        count = np.searchsorted(values, keys, "right") - lo
        hits = np.flatnonzero(count != 0)
        return hits, lo[hits], count[hits]

    return lookup


def _verified(
    ordered: np.ndarray, order: np.ndarray, a: np.ndarray, b: np.ndarray, earlier: tuple[Block, ...], distance: int
) -> Iterator[Pairs]:
    """The candidate pairs (positions a, b in `ordered`) within `distance` and within no earlier block's radius."""
    x = ordered[a] ^ ordered[b]
    d = np.bitwise_count(x)
    near = np.flatnonzero(d <= distance)
    if not near.size:
        return
    x = x[near]
    keep = np.ones(len(near), dtype=bool)
    for block in earlier:
        keep &= np.bitwise_count(x & block.bits) > block.radius
    near = near[keep]
    if near.size:
        yield order[a[near]], order[b[near]], d[near].astype(np.int64)


def _spans(counts: np.ndarray, limit: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(rows, offsets) covering every (row, offset < counts[row]) in order, at most `limit` at a time."""
    ends = np.cumsum(counts, dtype=np.int64)
    total = int(ends[-1]) if len(ends) else 0
    starts = ends - counts
    for a in range(0, total, limit):
        b = min(a + limit, total)
        first = int(np.searchsorted(ends, a, "right"))
        last = int(np.searchsorted(ends, b - 1, "right")) + 1
        taken = np.minimum(ends[first:last], b) - np.maximum(starts[first:last], a)
        rows = np.repeat(np.arange(first, last), taken)
        yield rows, np.arange(a, b) - starts[rows]


@dataclass(frozen=True)
class _Groups:
    """The items of each distinct hash: items[start[u] : start[u] + count[u]], ascending."""

    items: np.ndarray
    start: np.ndarray
    count: np.ndarray

    @classmethod
    def of(cls, inverse: np.ndarray, unique: int) -> _Groups:
        count = np.bincount(inverse, minlength=unique)
        return cls(np.argsort(inverse, kind="stable"), np.cumsum(count) - count, count)

    def equal_pairs(self, limit: int) -> Iterator[Pairs]:
        """Every pair of items with the same hash, at distance 0."""
        ends = np.repeat(self.start + self.count, self.count)
        for rows, offsets in _spans(ends - np.arange(len(self.items)) - 1, limit):
            yield self.items[rows], self.items[rows + 1 + offsets], np.zeros(len(rows), dtype=np.int64)

    def item_pairs(self, ui: np.ndarray, uj: np.ndarray, d: np.ndarray, limit: int) -> Iterator[Pairs]:
        """Every pair of items of the distinct-hash pairs (ui, uj) at distances d."""
        partners = self.count[uj]
        for rows, offsets in _spans(self.count[ui] * partners, limit):
            a = self.items[self.start[ui[rows]] + offsets // partners[rows]]
            b = self.items[self.start[uj[rows]] + offsets % partners[rows]]
            yield np.minimum(a, b), np.maximum(a, b), d[rows]


def components(n: int, pairs: Iterable[Pairs]) -> np.ndarray:
    """A group label per item of `n`: connected components of the pairs, numbered in order of each
    group's first item. Edges are folded into a spanning forest (at most n - 1 edges) whenever
    more than max(n, FOLD_EDGES) have arrived, so memory stays O(n + one chunk)."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    forest = np.zeros((2, 0), dtype=np.int64)
    held: list[np.ndarray] = []
    size = 0
    for i, j, _ in pairs:
        held.append(np.stack([i, j]))
        size += len(i)
        if size > max(n, FOLD_EDGES):
            forest = _forest(_labels(n, [forest, *held]))
            held, size = [], 0
    return _labels(n, [forest, *held])


def _labels(n: int, edges: list[np.ndarray]) -> np.ndarray:
    """Component labels numbered in order of each component's first item."""
    i, j = np.concatenate(edges, axis=1)
    graph = coo_array((np.ones(len(i), dtype=np.float32), (i, j)), shape=(n, n))
    labels = connected_components(graph, directed=False)[1]
    _, first = np.unique(labels, return_index=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[labels]


def _forest(labels: np.ndarray) -> np.ndarray:
    """Edges from each item to its group's first item: the same components in at most n - 1 edges."""
    _, first = np.unique(labels, return_index=True)
    nodes = np.arange(len(labels))
    roots = first[labels]
    linked = roots != nodes
    return np.stack([nodes[linked], roots[linked]])
