"""Load a product catalogue CSV (e.g. Fashion Product Images ``styles.csv``) into a :class:`DataSet`.

Every repair and every dropped row is reported: repaired lines in ``DataSet.notes``, dropped rows in
``DataSet.skipped`` (one entry each, with the line number or image path and the reason) plus a per-reason
count in ``notes``. Nothing is dropped silently.
"""

from __future__ import annotations

import csv
import os
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from vestis.data.types import DataSet, Sample, Skipped

DEFAULT_NA_VALUES = ("", "NA", "N/A", "nan", "None")

# Category keys used for the per-reason summary in ``notes``.
_TOO_FEW = "too few fields"
_UNPARSEABLE = "unparseable line"
_NO_ID = "empty id"
_DUPLICATE = "duplicate id"
_NO_PATH = "no image path"
_BAD_PATTERN = "image name could not be built"
_MISSING = "image missing"

_SHOW_LINES = 10  # how many line numbers a note lists before "..."


def _line_list(lines: list[int]) -> str:
    shown = ", ".join(str(n) for n in lines[:_SHOW_LINES])
    return shown + (", ..." if len(lines) > _SHOW_LINES else "")


class _Parse:
    """Everything one pass over the CSV text produced."""

    def __init__(self) -> None:
        self.header: list[str] = []
        self.rows: list[tuple[int, dict[str, str]]] = []  # (first physical line, values)
        self.skipped: list[tuple[int, str, str]] = []  # (line, category, reason)
        self.recovered: list[int] = []
        self.multiline: list[int] = []
        self.stray: list[int] = []  # lines re-read one by one out of a record a stray quote had swallowed
        self.literal: list[int] = []  # ... of which these had unbalanced quotes themselves

    def add(self, line: int, row: list[str]) -> None:
        n = len(self.header)
        if len(row) < n:
            self.skipped.append((line, _TOO_FEW, f"{_TOO_FEW}: expected {n}, found {len(row)}"))
            return
        if len(row) > n:
            row = row[: n - 1] + [",".join(row[n - 1 :])]
            self.recovered.append(line)
        self.rows.append((line, dict(zip(self.header, (v.strip() for v in row), strict=True))))


def _read_line(text: str) -> tuple[list[str] | None, bool]:
    """One physical line on its own -> (fields, whether it needed the fallback). Strict CSV first; a line whose
    quotes do not balance (or with text after a closing quote) is split at every comma instead, and quotes at
    either end of a field are dropped (``"Blue`` -> ``Blue``; quotes inside a field are kept as text).
    None when even that fails."""
    try:
        return next(csv.reader([text], strict=True), []), False
    except csv.Error:
        pass
    try:
        return [f.strip().strip('"') for f in next(csv.reader([text], quoting=csv.QUOTE_NONE), [])], True
    except csv.Error:  # a NUL byte, a field over the csv size limit
        return None, True


def _swallowed(row: list[str], physical: list[str], n: int) -> bool:
    """Whether a record that spans several physical lines is a stray quote's doing rather than a quoted
    newline: its field count is wrong, or most of its continuation lines read as complete rows by themselves."""
    if len(row) != n:
        return True
    rest = [ln for ln in physical[1:] if ln.strip()]
    full = sum(len(_read_line(ln)[0] or ()) >= n for ln in rest)
    return bool(rest) and 2 * full >= len(rest)


def _parse(stream: TextIO, on_header) -> _Parse:
    out = _Parse()
    lines = list(stream)  # physical lines, endings kept (newline="": \n, \r\n or \r), as csv counts them
    reader = csv.reader(lines)
    prev_end = 0

    def line_by_line(first: int, last: int) -> None:
        for number in range(first, last + 1):
            text = lines[number - 1]
            if not text.strip():
                continue
            row, literal = _read_line(text)
            if row is None:
                out.skipped.append((number, _UNPARSEABLE, _UNPARSEABLE))
                continue
            out.stray.append(number)
            if literal:
                out.literal.append(number)
            out.add(number, row)

    while True:
        start = prev_end + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            prev_end = reader.line_num
            if out.header:  # e.g. a stray quote swallowing more than the csv field size limit
                line_by_line(start, prev_end)
            else:
                out.skipped.append((start, _UNPARSEABLE, f"{_UNPARSEABLE}: {exc}"))
            continue
        prev_end = reader.line_num
        if not row or all(not v.strip() for v in row):
            continue  # blank line
        if not out.header:
            out.header = [h.strip().lstrip("\ufeff") for h in row]
            on_header(out.header)
            continue
        if prev_end > start:
            if _swallowed(row, lines[start - 1 : prev_end], len(out.header)):
                line_by_line(start, prev_end)
                continue
            out.multiline.append(start)
        out.add(start, row)
    return out


def _check_header(header: list[str], needed: Iterable[tuple[str, str]]) -> None:
    dupes = sorted(h for h, c in Counter(header).items() if c > 1)
    if dupes:
        raise ValueError(f"duplicate column names in header: {dupes}; columns: {header}")
    for what, col in needed:
        if col not in header:
            raise ValueError(f"{what} column {col!r} not in the catalogue; available columns: {header}")


def _list_dir(directory: Path) -> set[str] | None:
    try:
        with os.scandir(directory) as it:
            return {e.name for e in it if e.is_file()}
    except (FileNotFoundError, NotADirectoryError):
        return None


def read_catalog(
    csv_path: str | Path,
    images: str | Path | None = None,
    labels: Sequence[str] = ("articleType",),
    id_column: str = "id",
    path_column: str | None = None,
    pattern: str = "{id}.jpg",
    na_values: Sequence[str] = DEFAULT_NA_VALUES,
    check_files: bool = True,
) -> DataSet:
    """Read a catalogue CSV into a :class:`DataSet`.

    images: directory the image paths are relative to (default: ``images/`` next to the CSV if it exists,
    else the CSV's folder). If ``path_column`` is given, each row's image path is that column (relative to
    ``images``, or absolute); otherwise the file name is ``pattern.format(**row)`` (any column may be used).

    Returns samples with ``labels={head: value or None}`` (None when the value is empty, whitespace or one of
    ``na_values``; such rows are kept for the other heads), ``meta`` = every non-label column as ``str``.

    Repairs and drops, all reported:
    * lines with more fields than the header (unquoted commas in the last column) are recovered by joining
      the extra fields back into the last column; fewer fields or unparseable → skipped (``"line N"``);
    * a stray (unbalanced) quote, which in CSV runs the following lines into one field, is detected (the
      record spans several lines and has the wrong field count, or its lines read as complete rows on their
      own): those lines are re-read one by one (the faulty line split at every comma, its stray quotes
      dropped) and listed in notes; rows that still do not fit are skipped with their line numbers;
      legitimately quoted multi-line fields are kept;
    * empty id, duplicate id (the first is kept), missing image (``check_files``) → skipped;
    * blank lines are ignored; a UTF-8 BOM is tolerated; invalid UTF-8 is decoded with replacement chars.

    Raises ValueError (listing the available columns) for an unknown label/id/path/pattern column.
    """
    csv_path = Path(csv_path)
    labels = list(labels)
    if images is None:
        images = csv_path.parent / "images" if (csv_path.parent / "images").is_dir() else csv_path.parent
    images = Path(images)
    na = {v.strip() for v in na_values} | {""}

    needed = [("id", id_column)] + [("label", c) for c in labels]
    if path_column is not None:
        needed.append(("path", path_column))
    else:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
        except ValueError as exc:
            raise ValueError(f"bad image name pattern {pattern!r}: {exc}") from exc
        for f in fields:
            # "{id}" -> "id"; "{id!s:>6}" and "{x[0]}" / "{x.y}" -> the base name
            base = f.split(".")[0].split("[")[0]
            if not base or base.isdigit():
                raise ValueError(f"image name pattern {pattern!r} must use named columns, e.g. '{{id}}.jpg'")
            needed.append(("pattern", base))

    def on_header(header: list[str]) -> None:
        _check_header(header, needed)

    notes: list[str] = []
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as f:
            parsed = _parse(f, on_header)
    except UnicodeDecodeError as exc:
        with open(csv_path, encoding="utf-8-sig", errors="replace", newline="") as f:
            parsed = _parse(f, on_header)
        notes.append(
            f"{csv_path.name} is not valid UTF-8 ({exc.reason}); undecodable bytes were replaced with U+FFFD"
        )
    if not parsed.header:
        raise ValueError(f"{csv_path} is empty (no header line)")

    listing: set[str] | None = None
    if check_files:
        listing = _list_dir(images)
        if listing is None:
            notes.append(f"image directory {images} does not exist")
            listing = set()

    skipped: list[Skipped] = [Skipped(f"line {n}", reason) for n, _, reason in parsed.skipped]
    reasons: Counter[str] = Counter(cat for _, cat, _ in parsed.skipped)
    missing_kept: Counter[str] = Counter()
    missing_dropped: Counter[str] = Counter()
    seen: dict[str, int] = {}
    samples: list[Sample] = []

    def drop(item: str, category: str, reason: str, values: dict[str, str]) -> None:
        skipped.append(Skipped(item, reason))
        reasons[category] += 1
        for head in labels:
            if values[head] in na:
                missing_dropped[head] += 1

    for line, values in parsed.rows:
        ident = values[id_column]
        if not ident:
            drop(f"line {line}", _NO_ID, f"{_NO_ID} (column {id_column!r})", values)
            continue
        if ident in seen:
            drop(f"line {line}", _DUPLICATE, f"{_DUPLICATE} {ident!r} (first on line {seen[ident]})", values)
            continue
        seen[ident] = line
        if path_column is not None:
            name = values[path_column]
            if not name:
                drop(f"line {line}", _NO_PATH, f"{_NO_PATH} (column {path_column!r} is empty)", values)
                continue
        else:
            try:
                name = pattern.format(**values)
            except (KeyError, IndexError, AttributeError, ValueError) as exc:
                drop(f"line {line}", _BAD_PATTERN, f"{_BAD_PATTERN} from {pattern!r}: {exc!r}", values)
                continue
        path = images / name  # an absolute ``name`` replaces ``images``
        if listing is not None:
            in_dir = path.parent == images and path.name == name
            if not (name in listing if in_dir else path.is_file()):
                drop(str(path), _MISSING, _MISSING, values)
                continue
        sample_labels: dict[str, str | None] = {}
        for head in labels:
            value = values[head]
            if value in na:
                sample_labels[head] = None
                missing_kept[head] += 1
            else:
                sample_labels[head] = value
        meta = {k: v for k, v in values.items() if k not in sample_labels}
        samples.append(Sample(path=path, labels=sample_labels, meta=meta))

    total = len(parsed.rows) + len(parsed.skipped)
    notes.insert(
        0, f"read {total} data lines from {csv_path}: kept {len(samples)} samples, skipped {len(skipped)}"
    )
    if parsed.recovered:
        notes.append(
            f"recovered {len(parsed.recovered)} malformed lines (extra commas joined into "
            f"{parsed.header[-1]}): lines {_line_list(parsed.recovered)}"
        )
    if parsed.stray:
        faulty = f" (unbalanced quotes on lines {_line_list(parsed.literal)})" if parsed.literal else ""
        notes.append(
            f"recovered {len(parsed.stray)} lines that a stray quote had run together into one record{faulty}, "
            f"re-read one by one: lines {_line_list(parsed.stray)}"
        )
    if parsed.multiline:
        notes.append(
            f"{len(parsed.multiline)} records span several lines (quoted newlines; check for a stray quote): "
            f"lines {_line_list(parsed.multiline)}"
        )
    for category, count in reasons.most_common():
        notes.append(f"{count} rows skipped: {category}")
    for head in labels:
        if missing_kept[head] or missing_dropped[head]:
            note = f"{missing_kept[head]} rows have no value for {head!r}"
            if missing_dropped[head]:
                note += f" (plus {missing_dropped[head]} such rows among the skipped rows)"
            notes.append(note)
    return DataSet(samples=samples, heads=labels, skipped=skipped, notes=notes)


def year_split(ds: DataSet, column: str = "year", rule: str = "even") -> DataSet:
    """Split by year: even years → "train", odd years → "test" (rule "even").

    The year is read from the sample's labels or meta; samples without an integer year are skipped (reported).
    Returns a new DataSet; ``ds`` is left unchanged.
    """
    if rule != "even":
        raise ValueError(f"unknown year split rule {rule!r}; known: 'even'")
    samples: list[Sample] = []
    skipped: list[Skipped] = []
    for s in ds.samples:
        raw = s.labels.get(column) if column in s.labels else s.meta.get(column)
        try:
            year = int(str(raw).strip())
        except ValueError:
            skipped.append(Skipped(str(s.path), f"no integer {column!r} value for year_split (got {raw!r})"))
            continue
        samples.append(replace(s, split="train" if year % 2 == 0 else "test"))
    counts = Counter(s.split for s in samples)
    notes = [
        f"year_split on {column!r}: {counts['train']} train (even years), {counts['test']} test (odd years)"
    ]
    if skipped:
        notes.append(f"{len(skipped)} rows skipped: no integer {column!r}")
    return DataSet(
        samples=samples, heads=list(ds.heads), skipped=ds.skipped + skipped, notes=ds.notes + notes
    )
