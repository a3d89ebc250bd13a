"""The fetch stage: the chosen source's `fetch`, made safe around it.

- one writer per output folder (`exclusive`); temporary files a killed run left are deleted;
- `<out>/.incomplete` marks the folder until its manifest is written, so survey and prepare refuse
  a fetch that was killed or failed instead of reading part of a dataset;
- no usable image at all is an error; mostly skipped items are a warning naming the reasons and
  the params that decide them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pipeline.core.dataset import INCOMPLETE, MANIFEST, MANIFEST_DIR
from pipeline.core.errors import DataError
from pipeline.core.files import exclusive, write_text
from pipeline.fetch.manifest import FetchResult
from pipeline.fetch.params import FetchParams
from pipeline.fetch.sources import SOURCES

# What decides each reason a fetched item is skipped for: named in the warning when most are.
REASON_PARAMS = {
    "too small": "fetch.download.min_side",
    "too many pixels": "fetch.download.max_pixels",
    "too large": "fetch.download.max_bytes (fetch.folder.max_file_bytes, fetch.<archive source>.max_member_bytes)",
}


def fetch(cfg: FetchParams, out: Path) -> FetchResult:
    """Fetch `cfg.source` into `out` (a source module may define `check(out, params)`, run before
    anything is written)."""
    params = cfg.section(cfg.source)
    module = SOURCES[cfg.source].load()
    if hasattr(module, "check"):
        module.check(out, params)
    with exclusive(out, "fetch"):
        out.mkdir(parents=True, exist_ok=True)
        for leftover in out.rglob(".*.tmp"):
            leftover.unlink(missing_ok=True)
        write_text(out / INCOMPLETE, "a fetch is writing this folder, or was stopped before it finished\n")
        result = module.fetch(out, params, cfg)
        (out / INCOMPLETE).unlink()
    return _judged(result)


def _judged(result: FetchResult) -> FetchResult:
    """Zero usable images is an error; more items skipped or failed than kept, a warning."""
    ok = result.counts.get("success", 0)
    bad = sum(n for status, n in result.counts.items() if status not in ("success", "duplicate"))
    if ok and bad <= ok:
        return result
    top = sorted(result.reasons.items(), key=lambda item: -item[1])[:3]
    reasons = ", ".join(
        f"{n} {kind}" + (f" (set by {REASON_PARAMS[kind]})" if kind in REASON_PARAMS else "") for kind, n in top
    )
    sharded = (result.out / MANIFEST_DIR).is_dir() and not (result.out / MANIFEST).exists()
    manifest = result.out / (MANIFEST_DIR if sharded else MANIFEST)
    summary = f"{bad} of {ok + bad} items were not usable: {reasons}; every item and its reason: {manifest}"
    if not ok:
        listed = summary if bad else "; ".join(result.warnings) or "the source listed no item"
        raise DataError(f"no usable image fetched: {listed}")
    return replace(result, warnings=[*result.warnings, f"most items were not usable, {summary}"])
