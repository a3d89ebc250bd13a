"""audit_search: the near-duplicate search and grouping (`pipeline.core.hamming`) over N synthetic
64-bit hashes with planted near copies, in a fresh process, so that its time and peak RSS are its own.

Run:  python -m benchmarks.audit_search     1,000,000 hashes at distance 8, about 10 s on 2 cores

The hashes are uniform random uint64, generated 100,000 at a time into one preallocated array (8 MB
for a million). Then `planted` of them become near copies of others: random disjoint pairs of
positions, the later one set to the earlier one with 1..distance random bits flipped. The timed part
is `near_pairs` + `components` over all of them; every pair found is checked against the planted
ones (all must be found). Targets (issue 20): 1,000,000 hashes at distance 8 within 2 minutes and
1 GB peak RSS (the child's VmHWM, interpreter and imports included) on this 2-core machine.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.measure import measure

CHUNK = 100_000  # hashes generated at a time


def hashes_with_copies(n: int, distance: int, planted: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """N hashes and the planted pairs (source, copy) as codes source * n + copy, source < copy."""
    rng = np.random.default_rng(seed)
    hashes = np.empty(n, dtype=np.uint64)
    for start in range(0, n, CHUNK):
        hashes[start : start + CHUNK] = rng.integers(0, 2**64, size=min(CHUNK, n - start), dtype=np.uint64)
    source, copy = np.sort(rng.choice(n, size=(planted, 2), replace=False), axis=1).T
    flipped = rng.random((planted, 64)).argsort(axis=1) < rng.integers(1, distance + 1, size=(planted, 1))
    masks = np.bitwise_or.reduce(np.where(flipped, np.uint64(1) << np.arange(64, dtype=np.uint64), 0), axis=1)
    hashes[copy] = hashes[source] ^ masks.astype(np.uint64)
    return hashes, source * n + copy


def _search(n: int, distance: int, planted: int, seed: int) -> dict:
    """Runs in the child: build the hashes, then time the search and grouping alone."""
    from pipeline.core.hamming import components, near_pairs

    hashes, wanted = hashes_with_copies(n, distance, planted, seed)
    found = np.zeros(len(wanted), dtype=bool)
    pairs = 0

    def counted(chunks):
        nonlocal pairs
        for i, j, d in chunks:
            pairs += len(i)
            found[np.isin(wanted, i * n + j)] = True
            yield i, j, d

    start = time.perf_counter()
    components(n, counted(near_pairs(hashes, distance)))
    return {"seconds": time.perf_counter() - start, "pairs": pairs, "planted_found": int(found.sum())}


def search(n: int = 1_000_000, distance: int = 8, planted: int = 1000, seed: int = 0) -> dict:
    """{"hashes", "seconds" (the search and grouping), "peak_rss_mb" (the child's), "pairs",
    "planted", "planted_found"} of one run in a fresh process."""
    m = measure(_search, n, distance, planted, seed)
    result = m["result"]
    return {
        "hashes": n,
        "seconds": result["seconds"],
        "peak_rss_mb": m["peak_rss_mb"],
        "pairs": result["pairs"],
        "planted": planted,
        "planted_found": result["planted_found"],
    }


if __name__ == "__main__":
    print(search())
