"""A run's ``config.json``: the versioned, tolerant reader (migration, unknown keys, one-line errors naming
the file), data paths stored relative to the run directory, and atomic writes. No torch here.

See :mod:`vestis.models.checkpoint` for the whole format (the weights file beside it)."""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path

from vestis import __version__
from vestis.models.head_config import HeadConfig
from vestis.models.preprocess import Preprocess

FORMAT = 3  # the newest format this vestis reads and writes
# Format 3 = format 2 + optional keys that change the model's layout: a format-2 reader that does not know them
# warns "unknown key" and then builds the wrong model. A config using none of them is written as format 2, which
# the previous vestis still reads; one using any of them is written as format 3, which it refuses ("upgrade").
FORMAT_3_KEYS = ("head_types", "colour_stats")
CONFIG = "config.json"
BUNDLED = Path(__file__).resolve().parent.parent / "assets" / "default"

# Top-level keys this version writes or understands; others are warned about and ignored.
KNOWN_KEYS = frozenset(
    {
        "format",
        "vestis_version",
        "created",
        "backbone",
        "pretrained",
        "includes_backbone",
        "backbone_fingerprint",
        "head",
        "head_types",
        "colour_stats",
        "heads",
        "preprocess",
        "metrics",
        "data",
        "train_config",
        "migrated_from",
    }
)
# ``data["paths_relative_to"]``: what the relative paths in ``data`` are relative to.
RUN_DIR, CWD = "run_dir", "cwd"
_DATA_PATH_KEYS = ("source", "images")  # in data["load"]; data["source"] too

_warned: set[tuple[str, tuple[str, ...]]] = set()


class CheckpointError(ValueError):
    """A run directory's ``config.json`` or ``model.safetensors`` cannot be used; the message names the file."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file unique to this process, then rename it into place."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# -- data paths ---------------------------------------------------------------------------------------------


def _relative_to_run(path, run_dir: Path):
    """A path as the user gave it (relative to the working directory) -> relative to ``run_dir``.

    Absolute paths stay absolute (they work from anywhere); so does a path that has no relative form from the
    run directory (another drive)."""
    if path is None or str(path) == "":
        return path
    p = str(path)
    if os.path.isabs(p):
        return p
    try:
        return os.path.relpath(os.path.abspath(p), os.path.abspath(run_dir))
    except ValueError:  # another drive (Windows)
        return os.path.abspath(p)


def _store_data(data: dict | None, run_dir: Path) -> dict:
    """``data`` for config.json: its paths made relative to the run directory (the caller's dict is untouched)."""
    data = copy.deepcopy(data) if data else {}
    had_paths = False
    if data.get("source") not in (None, ""):
        data["source"] = _relative_to_run(data["source"], run_dir)
        had_paths = True
    load = data.get("load")
    if isinstance(load, dict):
        for key in _DATA_PATH_KEYS:
            if load.get(key) not in (None, ""):
                load[key] = _relative_to_run(load[key], run_dir)
                had_paths = True
    if had_paths:
        data["paths_relative_to"] = RUN_DIR
    return data


def missing_data_message(run_dir: str | Path, path: str) -> str:
    """The one-line error for a run whose recorded data cannot be found from the working directory."""
    return (
        f"{run_dir}: the run's data {path} is not found from here ({os.getcwd()}); "
        "pass --data DIR (and --images DIR for a catalogue) to evaluate on it"
    )


def resolve_data_load(run_dir: str | Path, config: dict) -> dict:
    """The run's ``data.load`` (keyword arguments of :func:`vestis.data.load_dataset`) with its paths usable
    from the current working directory.

    Format 2 stores paths relative to the run directory: they are joined onto ``run_dir``. A migrated
    format-1 config stored them relative to the training run's working directory: the run-directory-relative
    reading is tried first, then the path as given. Absolute paths are used as they are.

    Raises ValueError when the run records no data, and FileNotFoundError (suggesting ``--data``) when the
    source is not found."""
    data = config.get("data") or {}
    load = data.get("load")
    if not isinstance(load, dict) or not load.get("source"):
        raise ValueError(f"{run_dir}: the run records no data source; pass --data DIR")
    base = data.get("paths_relative_to", RUN_DIR)
    load = dict(load)
    for key in _DATA_PATH_KEYS:
        value = load.get(key)
        if value in (None, ""):
            continue
        value = str(value)
        if os.path.isabs(value):
            candidates = [value]
        else:
            from_run = os.path.normpath(os.path.join(str(run_dir), value))
            candidates = [from_run, value] if base == CWD else [from_run]
        found = next((c for c in candidates if os.path.exists(c)), None)
        if found is None:
            if key == "source":
                raise FileNotFoundError(missing_data_message(run_dir, value))
            found = candidates[0]  # a missing image folder is reported by the catalogue reader
        load[key] = found
    return load


# -- reading ----------------------------------------------------------------------------------------------


def _migrate_1_to_2(config: dict) -> dict:
    """Format 1 stored data paths relative to the working directory of the training run."""
    data = config.get("data")
    if isinstance(data, dict) and data:
        data.setdefault("paths_relative_to", CWD)
    return config


def _migrate_2_to_3(config: dict) -> dict:
    """Format 3 only adds :data:`FORMAT_3_KEYS`, optional, whose absence means what format 2 meant."""
    return config


_MIGRATIONS = {1: _migrate_1_to_2, 2: _migrate_2_to_3}  # format N -> N + 1


def written_format(config: dict) -> int:
    """The format a config is written in: the oldest that holds it (:data:`FORMAT_3_KEYS` need format 3)."""
    return 3 if any(config.get(k) for k in FORMAT_3_KEYS) else 2


def _check_heads(heads, path: Path) -> None:
    if not isinstance(heads, dict) or not heads:
        raise CheckpointError(
            f'{path}: "heads" must map each head name to its class names, got {type(heads).__name__} {heads!r:.80}'
        )
    for name, classes in heads.items():
        if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
            raise CheckpointError(
                f"{path}: head {name!r} needs a list of at least 2 class names (strings), got {classes!r:.80}"
            )
        if len(set(classes)) != len(classes):
            dupes = sorted({c for c in classes if classes.count(c) > 1})
            raise CheckpointError(f"{path}: head {name!r} lists class names twice: {dupes[:5]}")


def _check_config(config, path: Path) -> dict:
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got a {type(config).__name__}")
    fmt = config.get("format")
    if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt < 1:
        raise CheckpointError(
            f"{path}: unsupported checkpoint format {fmt!r} (this vestis reads 1..{FORMAT})"
        )
    if fmt > FORMAT:
        raise CheckpointError(
            f"{path}: written by a newer vestis (format {fmt}; this vestis {__version__} reads up to {FORMAT}); "
            "upgrade vestis"
        )
    unknown = tuple(sorted(set(config) - KNOWN_KEYS))
    if unknown:
        key = (str(path.resolve()), unknown)
        if key not in _warned:
            _warned.add(key)
            warnings.warn(f"{path}: ignoring unknown keys {list(unknown)}", stacklevel=3)
    if fmt < FORMAT:
        config["migrated_from"] = fmt
        while fmt < FORMAT:
            config = _MIGRATIONS[fmt](config)
            fmt += 1
        config["format"] = FORMAT
    for key in ("backbone", "heads", "preprocess"):
        if key not in config:
            raise CheckpointError(f"{path}: no {key!r} (not a complete vestis checkpoint)")
    if not isinstance(config["backbone"], str) or not config["backbone"]:
        raise CheckpointError(f'{path}: "backbone" must be a backbone name, got {config["backbone"]!r:.80}')
    _check_heads(config["heads"], path)
    try:
        Preprocess.from_dict(config["preprocess"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f'{path}: bad "preprocess": {e}') from None
    config.setdefault("head", {})
    try:
        _head_config(config["head"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f'{path}: bad "head": {e}') from None
    types = config.setdefault("head_types", {})  # heads configured unlike "head" (optional, FORMAT_3_KEYS)
    if not isinstance(types, dict) or set(types) - set(config["heads"]):
        raise CheckpointError(f'{path}: "head_types" must map some of the heads to a head configuration')
    for h, d in types.items():
        try:
            _head_config(d)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f'{path}: bad "head_types" entry {h!r}: {e}') from None
    for key, default in (("pretrained", True), ("includes_backbone", False)):
        config.setdefault(key, default)
        if not isinstance(config[key], bool):
            raise CheckpointError(f"{path}: {key!r} must be true or false, got {config[key]!r:.80}")
    for key in ("metrics", "data", "train_config"):
        config.setdefault(key, {})
        if not isinstance(config[key], dict):
            raise CheckpointError(f"{path}: {key!r} must be an object, got {type(config[key]).__name__}")
    return config


def _head_config(d):
    if not isinstance(d, dict):
        raise ValueError(f"expected an object, got {type(d).__name__}")
    return HeadConfig.from_dict(d)


def read_config(run_dir: str | Path) -> dict:
    """A run directory's ``config.json``, checked and migrated to the current :data:`FORMAT`.

    Raises FileNotFoundError when there is none, :class:`CheckpointError` (naming the file) when it is damaged
    or from a newer vestis."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir} is not a vestis model: no {CONFIG} (train one with `vestis train`)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: cannot be read ({type(e).__name__}: {e})") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        what = "empty" if not text.strip() else f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
        raise CheckpointError(f"{path}: {what}") from None
    return _check_config(config, path)


def resolve_model_dir(model: str | Path | None) -> Path:
    """``None`` -> the bundled default model; otherwise a run directory."""
    return BUNDLED if model in (None, "", "default") else Path(model)


def model_name(model: str | Path | None) -> str:
    """How a model is named in messages and records: 'default' for the bundled one, else the path as given."""
    return "default" if resolve_model_dir(model) == BUNDLED else str(model)


def lineage(model: str | Path | None, config: dict | None = None) -> dict:
    """What a model (``config``: its config, read when not given) was trained on, kept by the models made from it
    (a soup's members, a run's ``--init`` and teachers), whose directories may be gone or, for the bundled model,
    replaced: the data's source, fingerprint and counts, and its own soup and lineage records."""
    config = config if config is not None else read_config(resolve_model_dir(model))
    data = config.get("data") or {}
    out = {"member": model_name(model), "data": {k: data.get(k) for k in ("source", "fingerprint", "counts")}}
    stored = config.get("train_config") or {}
    for key in ("soup", "lineage"):
        if stored.get(key):
            out[key] = stored[key]
    return out
