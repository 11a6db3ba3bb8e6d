"""``vestis data inspect PATH``: what is in a data set, and what is wrong with it.

:func:`inspect_dataset` counts samples per class and split for every head, lists what the loader skipped,
reads every image once (threads: the work is I/O) to hash it and, with ``check_images``, to decode it, and
finds exact duplicates: how many, which carry conflicting labels, and which cross splits (leakage).
:func:`format_inspection` turns the JSON-serialisable report into text for the terminal."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

from vestis.data.images import ImageError, file_digest, load_image
from vestis.data.types import SPLITS, DataSet, Sample

NO_SPLIT = "unsplit"  # the split key for samples without one
CHECK_MIN_SIZE = 224  # decode as training does (JPEG draft): every byte is still decoded
MAX_CLASSES_SHOWN = 60
MAX_CONFLICTS_SHOWN = 10
MAX_REASONS_SHOWN = 15
EXAMPLES_PER_REASON = 3
_WORKERS = 8


def _split(s: Sample) -> str:
    return s.split or NO_SPLIT


def _read(sample: Sample, check_images: bool) -> tuple[str | None, str | None]:
    """(digest, error reason) for one sample; the digest is None when the bytes are unusable."""
    try:
        data = Path(sample.path).read_bytes()
    except FileNotFoundError:
        return None, "file not found"
    except IsADirectoryError:
        return None, "is a directory"
    except OSError as e:
        return None, f"cannot read file: {e.strerror or e}"
    if not data:
        return None, "empty file"
    error = None
    if check_images:
        try:
            load_image(data, min_size=CHECK_MIN_SIZE)
        except ImageError as e:
            error = str(e)
    return file_digest(data), error


def _split_order(splits) -> list[str]:
    known = [s for s in (*SPLITS, NO_SPLIT) if s in splits]
    return known + sorted(s for s in splits if s not in known)


def inspect_dataset(ds: DataSet, check_images: bool = True, progress: bool = False) -> dict:
    """Counts, missing labels, skipped and unreadable items, duplicates and cross-split leakage.

    Returns a JSON-serialisable dict::

        {"n_samples": n, "splits": {split: n},
         "heads": {head: {"classes": {cls: {split: n}}, "missing": n}},
         "skipped": [{"item", "reason"}], "unreadable": [{"item", "reason"}],
         "duplicates": {"groups": n, "images": n,
                        "conflicting": [{"digest", "items": [{"path", "labels", "split"}]}],
                        "cross_split": n, "cross_split_pairs": {"test/train": n}}}

    Samples without a split are counted under ``"unsplit"``. Files that cannot be read (missing, empty)
    are always ``unreadable``; with ``check_images`` so is every image ``load_image`` refuses. Duplicate
    groups are sets of >= 2 samples whose files have identical, non-empty bytes (``file_digest``)."""
    samples = ds.samples
    splits = Counter(_split(s) for s in samples)
    heads: dict[str, dict] = {}
    for head in ds.heads:
        classes: dict[str, Counter] = defaultdict(Counter)
        missing = 0
        for s in samples:
            value = s.labels.get(head)
            if value is None:
                missing += 1
            else:
                classes[value][_split(s)] += 1
        heads[head] = {
            "classes": {c: dict(classes[c]) for c in sorted(classes)},
            "missing": missing,
        }

    results: list[tuple[str | None, str | None]] = []
    if samples:
        with (
            ThreadPoolExecutor(max_workers=min(_WORKERS, len(samples))) as pool,
            tqdm(
                total=len(samples),
                desc="checking images" if check_images else "hashing",
                unit="img",
                disable=not progress,
            ) as bar,
        ):
            for result in pool.map(lambda s: _read(s, check_images), samples, chunksize=16):
                results.append(result)
                bar.update()

    unreadable = [
        {"item": str(s.path), "reason": reason}
        for s, (_, reason) in zip(samples, results, strict=True)
        if reason is not None
    ]
    by_digest: dict[str, list[Sample]] = defaultdict(list)
    for s, (digest, _) in zip(samples, results, strict=True):
        if digest is not None:
            by_digest[digest].append(s)
    groups = {d: members for d, members in by_digest.items() if len(members) > 1}

    conflicting = []
    cross_split = 0
    pairs: Counter[str] = Counter()
    for digest, members in groups.items():
        if any(len({s.labels.get(h) for s in members} - {None}) > 1 for h in ds.heads):
            conflicting.append(
                {
                    "digest": digest,
                    "items": [
                        {"path": str(s.path), "labels": dict(s.labels), "split": s.split} for s in members
                    ],
                }
            )
        member_splits = _split_order({_split(s) for s in members})
        if len(member_splits) > 1:
            cross_split += 1
            for i, a in enumerate(member_splits):
                for b in member_splits[i + 1 :]:
                    pairs[f"{a}/{b}"] += 1

    return {
        "n_samples": len(samples),
        "splits": {sp: splits[sp] for sp in _split_order(splits)},
        "heads": heads,
        "skipped": [{"item": k.item, "reason": k.reason} for k in ds.skipped],
        "unreadable": unreadable,
        "duplicates": {
            "groups": len(groups),
            "images": sum(len(m) for m in groups.values()),
            "conflicting": conflicting,
            "cross_split": cross_split,
            "cross_split_pairs": dict(pairs.most_common()),
        },
    }


# ------------------------------------------------------------------------------------------ formatting


def _reason_key(reason: str) -> str:
    """Group reasons that differ only in ids, line numbers or sizes."""
    return re.sub(r"\d+", "N", re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", reason))


def _table(classes: dict[str, dict[str, int]], splits: list[str]) -> list[str]:
    totals = {c: sum(per.values()) for c, per in classes.items()}
    order = sorted(classes, key=lambda c: (-totals[c], c))
    shown = order[:MAX_CLASSES_SHOWN]
    name_w = max([len("class"), *(len(c) for c in shown)])
    cols = [*splits, "total"]
    widths = [max(len(col), 6) for col in cols]
    lines = [
        "  " + "class".ljust(name_w) + "".join(f"  {col:>{w}}" for col, w in zip(cols, widths, strict=True))
    ]
    for c in shown:
        values = [classes[c].get(sp, 0) for sp in splits] + [totals[c]]
        lines.append(
            "  " + c.ljust(name_w) + "".join(f"  {v:>{w}}" for v, w in zip(values, widths, strict=True))
        )
    if len(order) > len(shown):
        rest = order[len(shown) :]
        lines.append(f"  … {len(rest)} more classes ({sum(totals[c] for c in rest)} samples)")
    column_totals = [sum(classes[c].get(sp, 0) for c in order) for sp in splits] + [sum(totals.values())]
    lines.append(
        "  "
        + "(all)".ljust(name_w)
        + "".join(f"  {v:>{w}}" for v, w in zip(column_totals, widths, strict=True))
    )
    return lines


def _by_reason(title: str, entries: list[dict]) -> list[str]:
    if not entries:
        return [f"{title}: none"]
    groups: dict[str, list[str]] = defaultdict(list)
    for e in entries:
        groups[_reason_key(e["reason"])].append(e["item"])
    lines = [f"{title}: {len(entries)}"]
    ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    for key, items in ranked[:MAX_REASONS_SHOWN]:
        examples = ", ".join(items[:EXAMPLES_PER_REASON]) + (
            ", …" if len(items) > EXAMPLES_PER_REASON else ""
        )
        lines.append(f"  {len(items):>6}  {key}  (e.g. {examples})")
    if len(ranked) > MAX_REASONS_SHOWN:
        lines.append(f"  … {len(ranked) - MAX_REASONS_SHOWN} more reasons")
    return lines


def format_inspection(report: dict) -> str:
    """Human-readable text for a report from :func:`inspect_dataset`."""
    splits = list(report.get("splits") or {})
    if not splits:  # a report without "splits": gather them from the class counts
        found = {sp for h in report["heads"].values() for per in h["classes"].values() for sp in per}
        splits = _split_order(found)
    split_text = ", ".join(f"{sp} {n}" for sp, n in (report.get("splits") or {}).items())
    lines = [f"{report['n_samples']} samples" + (f" ({split_text})" if split_text else "")]
    for head, info in report["heads"].items():
        n_classes = len(info["classes"])
        lines.append("")
        lines.append(f"head {head!r}: {n_classes} classes, {info['missing']} samples without a value")
        if n_classes:
            lines.extend(_table(info["classes"], splits))
    lines.append("")
    lines.extend(_by_reason("skipped by the loader", report["skipped"]))
    lines.extend(_by_reason("unreadable images", report["unreadable"]))

    dup = report["duplicates"]
    lines.append("")
    if not dup["groups"]:
        lines.append("duplicates: no identical images")
        return "\n".join(lines)
    lines.append(
        f"duplicates: {dup['groups']} groups of identical images ({dup['images']} images, "
        f"{dup['images'] - dup['groups']} redundant)"
    )
    pairs = dup.get("cross_split_pairs") or {}
    pair_text = ", ".join(f"{p} {n}" for p, n in pairs.items())
    lines.append(
        f"  {dup['cross_split']} groups appear in more than one split (leakage)"
        + (f": {pair_text}" if pair_text else "")
    )
    conflicting = dup["conflicting"]
    lines.append(f"  {len(conflicting)} groups have conflicting labels")
    for group in conflicting[:MAX_CONFLICTS_SHOWN]:
        lines.append(f"  - {group['digest'][:12]}")
        for item in group["items"]:
            labels = ", ".join(f"{h}={v}" for h, v in item["labels"].items())
            lines.append(f"      {item['path']}  [{labels}]  ({item['split'] or NO_SPLIT})")
    if len(conflicting) > MAX_CONFLICTS_SHOWN:
        lines.append(f"  … {len(conflicting) - MAX_CONFLICTS_SHOWN} more conflicting groups")
    return "\n".join(lines)
