"""The audit stage: what is wrong with data that decodes fine.

    report = audit(root, cfg)                                  # duplicates, leakage, balance
    report = audit(root, cfg, prepared=data, model=keras_file) # and label issues
    run(root, cfg, prepared, model, out=json_file, plots=folder)

- **Duplicate groups** (pipeline.prepare.duplicates): one pass over the bytes, a task per group of
  items on the engine, gives each stored item its SHA-256 and 64-bit difference hash; a group joins
  items with the same bytes (`exact`) or hashes within `audit.near_distance` bits (`near`). Items
  that fetch already found to be the same bytes as a stored one (manifest status `duplicate`) join
  their owner's group, so the same photo fetched under two classes shows. A group is `cross_class`
  when its members carry more than one class (at least one label is wrong) and `leakage` when it has
  both training and validation members (the split of the prepared data, with `--prepared`; else the
  split the source fixed).
- **Label issues** (pipeline.audit.labels), with `--prepared` and `--model`: validation items
  flagged by cleanlab from the model's out-of-sample probabilities, best candidate first.
- **Balance**: items per class and share, and for a fetched dataset each class's statuses and
  failure reasons from the manifest.
- Thumbnails of the top `audit.top` groups and candidates (`plots/audit/*.png`, pipeline.audit.sheets).

The report (`reports/audit.json`) is derived from the files only: the same inputs give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.audit.labels import label_issues
from pipeline.audit.params import AuditParams
from pipeline.audit.sheets import DUPLICATES, LABEL_ISSUES, MAX_MEMBERS, write_groups_png, write_issues_png
from pipeline.core.dataset import layout, read_manifest
from pipeline.core.errors import ConfigError, ImageError, InputError
from pipeline.core.files import printable, write_json
from pipeline.core.images import load
from pipeline.core.prepared import INDEX, read_meta
from pipeline.prepare.duplicates import duplicate_groups, item_hashes
from pipeline.prepare.items import Items, list_items

THUMB = (96, 96)


@dataclass(frozen=True)
class Audit:
    report: dict
    thumbs: dict[str, list] = field(default_factory=dict)  # "groups" / "issues": what the sheets draw


def audit(
    root: Path, cfg: AuditParams, prepared: Path | None = None, model: Path | None = None, thumbnails: bool = False
) -> Audit:
    """The audit of the fetched dataset at `root` (see the module docstring); with `thumbnails`, the
    images of the top groups and candidates too (read only then)."""
    if (prepared is None) != (model is None):
        raise ConfigError(
            "--prepared and --model go together: label issues need the prepared data and the model trained on it"
        )
    items = list_items(root)
    frame = items.frame
    manifest = read_manifest(root)
    splits = _splits(items, prepared) if prepared is not None else frame["split"].to_numpy(object)
    hashes = item_hashes(items, frame, cfg, near=True)
    group = duplicate_groups(hashes, cfg.near_distance)
    groups, drawn = _groups(frame, hashes, group, splits, manifest)
    issues, val_images = label_issues(model, prepared) if model is not None else ([], None)
    errors = hashes["error"].to_numpy(object)
    unreadable = [{"path": printable(p), "reason": r} for p, r in items.skipped] + [
        {"path": printable(p), "reason": e} for p, e in zip(frame["path"], errors) if e
    ]
    report = {
        "dataset": {
            "root": root.as_posix(),
            "source": items.source,
            "layout": layout(root),
            "items": len(frame),
            "prepared": prepared.as_posix() if prepared is not None else None,
            "model": model.as_posix() if model is not None else None,
        },
        "hash": {"method": "dhash", "bits": 64, "near_distance": cfg.near_distance},
        "summary": {
            "duplicate_groups": len(groups),
            "exact_groups": sum(g["kind"] == "exact" for g in groups),
            "near_groups": sum(g["kind"] == "near" for g in groups),
            "cross_class_groups": sum(g["cross_class"] for g in groups),
            "leakage_groups": sum(g["leakage"] for g in groups),
            "items_in_groups": sum(len(g["members"]) for g in groups),
            "label_issues": len(issues),
            "unreadable": len(unreadable),
        },
        "balance": _balance(items, manifest),
        "duplicate_groups": groups,
        "label_issues": [{k: v for k, v in issue.items() if k != "row"} for issue in issues],
        "label_issues_computed": model is not None,
        "unreadable": unreadable,
    }
    if not thumbnails:
        return Audit(report)
    thumbs = {
        "groups": _group_thumbs(items, groups[: cfg.top], drawn, cfg.max_file_bytes),
        "issues": [
            (_rgb(val_images[i["row"]]), f"given {i['given']}\nsuggested {i['suggested']}, {i['score']:.2f}")
            for i in issues[: cfg.top]
        ],
    }
    return Audit(report, thumbs)


def run(
    root: Path,
    cfg: AuditParams,
    prepared: Path | None = None,
    model: Path | None = None,
    out: Path | None = None,
    plots: Path | None = None,
) -> Audit:
    """`audit`, then its report to `out` and its thumbnails to `plots` (each where given)."""
    result = audit(root, cfg, prepared, model, thumbnails=plots is not None)
    if out is not None:
        write_json(out, result.report)
    if plots is not None:
        write_groups_png(result.thumbs["groups"], plots / DUPLICATES, "Duplicate groups, conflicts and leaks first")
        if model is not None:
            write_issues_png(result.thumbs["issues"], plots / LABEL_ISSUES, "Label-issue candidates, best first")
        else:
            write_issues_png(
                [], plots / LABEL_ISSUES, "Label issues", empty="Not computed: needs --prepared and --model"
            )
    return result


def _splits(items: Items, prepared: Path) -> np.ndarray:
    """Each item's split in the prepared data (train / val; "" for an item prepare left out)."""
    meta = read_meta(prepared)
    if meta.get("manifest_sha256") != items.digest:
        raise InputError(
            f"{prepared} was prepared from another dataset or an older fetch of {items.root}: "
            "run `pipeline prepare` on it again (or `dvc repro`)"
        )
    index = pd.read_csv(prepared / INDEX, dtype={"path": str, "split": str}, keep_default_na=False)
    where = dict(zip(index["path"], index["split"]))
    return np.array([where.get(printable(path), "") for path in items.frame["path"]], dtype=object)


def _groups(
    frame: pd.DataFrame, hashes: pd.DataFrame, group: np.ndarray, splits: np.ndarray, manifest: pd.DataFrame | None
) -> tuple[list[dict], list[list[int]]]:
    """The duplicate groups, conflicts and leaks first, then by size; and for each, the item row
    whose image shows each member."""
    digests, values = hashes["sha256"].to_numpy(object), hashes["dhash"].to_numpy(np.uint64)
    members: dict[int, list[tuple[int, dict]]] = {}
    for row in np.flatnonzero(group >= 0):
        members.setdefault(int(group[row]), []).append((int(row), _member(frame, row, splits[row])))
    if manifest is not None:  # the same bytes fetched again (kept once, as their owner's item)
        errors = hashes["error"].to_numpy(object)
        owner = {d: row for row, (d, e) in enumerate(zip(digests, errors)) if d and not e}
        fresh = int(group.max()) + 1 if len(group) else 0
        dups = manifest[(manifest["status"] == "duplicate") & manifest["sha256"].isin(owner.keys())]
        for path, cls, url, digest in dups[["path", "class", "url", "sha256"]].itertuples(index=False):
            row = owner[digest]
            if group[row] < 0:
                group[row], fresh = fresh, fresh + 1
                members[int(group[row])] = [(row, _member(frame, row, splits[row]))]
            member = {"path": printable(path), "class": cls, "split": "", "url": printable(url)}
            members[int(group[row])].append((row, member))
    out, drawn = [], []
    for entries in members.values():
        rows = [row for row, _ in entries]
        first = rows[0]
        for row, member in entries:
            member["distance"] = int(np.bitwise_count(values[row] ^ values[first]))
        classes = {member["class"] for _, member in entries}
        in_splits = {member["split"] for _, member in entries}
        out.append(
            {
                "kind": "exact" if len({digests[row] for row in rows}) == 1 else "near",
                "cross_class": len(classes) > 1,
                "leakage": {"train", "val"} <= in_splits,
                "max_distance": max(member["distance"] for _, member in entries),
                "members": [member for _, member in entries],
            }
        )
        drawn.append(rows)
    order = sorted(
        range(len(out)),
        key=lambda i: (not out[i]["cross_class"], not out[i]["leakage"], -len(out[i]["members"]), drawn[i][0]),
    )
    return [out[i] for i in order], [drawn[i] for i in order]


def _member(frame: pd.DataFrame, row: int, split: str) -> dict:
    return {"path": printable(frame["path"].iat[row]), "class": str(frame["class"].iat[row]), "split": str(split)}


def _balance(items: Items, manifest: pd.DataFrame | None) -> list[dict]:
    """Items per class (and share), and from a manifest each class's statuses and commonest reasons
    (one pass over the manifest, grouped: a million rows of a thousand classes is seconds)."""
    counts = items.frame["class"].value_counts()
    total = max(1, len(items.frame))
    classes = list(items.classes) + sorted(set(counts.index) - set(items.classes))
    if manifest is not None:
        statuses = manifest.groupby(["class", "status"]).size()
        failed = manifest[~manifest["status"].isin(["success", "duplicate"])]
        kinds = failed.groupby([failed["class"], failed["error_message"].str.split(":", n=1).str[0]]).size()
    rows = []
    for cls in classes:
        row = {"class": cls, "items": int(counts.get(cls, 0)), "share": round(int(counts.get(cls, 0)) / total, 4)}
        if manifest is not None:
            mine = statuses[cls] if cls in statuses.index.get_level_values(0) else pd.Series(dtype=int)
            row["statuses"] = {str(k): int(v) for k, v in mine.sort_index().items()}
            reasons = kinds[cls] if cls in kinds.index.get_level_values(0) else pd.Series(dtype=int)
            top = sorted(((str(k), int(v)) for k, v in reasons.items()), key=lambda kv: (-kv[1], kv[0]))[:5]
            row["reasons"] = dict(top)
        rows.append(row)
    return rows


def _group_thumbs(items: Items, groups: list[dict], drawn: list[list[int]], max_bytes: int) -> list:
    """Per group, (thumbnail, caption) of its first MAX_MEMBERS members, each image read once (the
    other members count only: the sheet says "+N more")."""
    wanted = sorted({row for rows in drawn[: len(groups)] for row in rows[:MAX_MEMBERS]})
    images = {}
    for name, rows in items.groups(items.frame.iloc[wanted]):
        at = rows.index.to_numpy()
        for position, data in items.reader.images(name, rows["member"].tolist(), max_bytes):
            try:
                if isinstance(data, ImageError):
                    raise data
                images[int(at[position])] = load(data, THUMB, "pad")
            except ImageError:
                images[int(at[position])] = np.full((*THUMB, 3), 128, np.uint8)
    sheets = []
    for group, rows in zip(groups, drawn):
        cells = []
        for row, member in list(zip(rows, group["members"]))[:MAX_MEMBERS]:
            split = f" / {member['split']}" if member["split"] else ""
            cells.append((images[row], f"{member['class']}{split}\nd={member['distance']}"))
        sheets.append(cells + [(None, "")] * (len(group["members"]) - len(cells)))
    return sheets


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    return np.repeat(image, 3, axis=2) if image.shape[-1] == 1 else image
