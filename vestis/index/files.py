"""The index directory on disk: its layout, atomic writes, the checks made on opening, and the writers' lock.

Layout of ``idx/`` (one *generation* of files at a time)::

    index.json              the manifest: format, model, embedding, index kind and parameters, counts,
                            and the name, size and SHA-1 of each data file of the current generation
    index-GEN.faiss         faiss.write_index of an IndexIDMap2 (ids are the items' ids)
    items-GEN.json          {"ids": [...], "paths": [...], "digests": [...], "columns": {col: [...]}}
    .lock                   the writers' lock (holder's pid and command while held)

A write puts a new generation's data files beside the old ones (written to a temporary name, fsynced, renamed),
then replaces ``index.json`` atomically, then deletes the old generation: a reader sees the old index or the
new one, never a mixture, and a crash mid-write leaves the old index readable. A reader that loses the race
with a writer (the generation it read the manifest of was deleted under it) reads the new manifest again.
Opening checks every file (present, size, SHA-1, Faiss readable, counts and dimensions agree) and raises
:class:`IndexFileError`, a one-line ValueError naming the directory, instead of crashing or answering wrongly.

Writers take ``.lock`` (``fcntl.flock``, exclusive) for the whole read-modify-write (:func:`locked`, used by
``Index.edit``), so two ``vestis index add`` on one index queue instead of losing each other's items; a
save of an index that another writer changed since it was read is refused (:class:`IndexConflict`)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

FORMAT = 1
MANIFEST = "index.json"
LOCK = ".lock"
LOCK_TIMEOUT = 600.0  # seconds a writer waits for another one by default


class IndexFileError(ValueError):
    """A missing, damaged, truncated or inconsistent index directory (one line, naming it)."""


class IndexLocked(TimeoutError):
    """Another process held the index's writer lock for longer than we were willing to wait."""


class IndexConflict(ValueError):
    """The index changed on disk (another writer) between reading it and saving it: saving would lose that
    writer's changes."""


def write_atomic(path: Path, data: bytes) -> dict:
    """Write ``data`` to a temporary name beside ``path``, fsync, rename; -> its manifest entry."""
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"name": path.name, "bytes": len(data), "sha1": hashlib.sha1(data).hexdigest()}


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def data_files(d: Path) -> set[str]:
    """Names of every generation's data files in ``d``."""
    return {p.name for p in d.iterdir() if p.name.startswith(("index-", "items-"))}


def generation(manifest: dict | None) -> str | None:
    """The current generation's Faiss file name (changes with every save), or None."""
    files = (manifest or {}).get("files")
    entry = files.get("index") if isinstance(files, dict) else None
    return entry.get("name") if isinstance(entry, dict) else None


def check_items(n: int, paths, columns, digests) -> None:
    if len(paths) != n:
        raise ValueError(f"{len(paths)} paths for {n} items")
    if digests is not None and len(digests) != n:
        raise ValueError(f"{len(digests)} digests for {n} items")
    for c, v in (columns or {}).items():
        if len(v) != n:
            raise ValueError(f"column {c!r} has {len(v)} values for {n} items")


# ---------------------------------------------------------------------------------------------- the lock
_held = threading.local()  # directories whose lock this thread holds (the lock is re-entrant per thread)


@contextlib.contextmanager
def locked(d: Path, timeout: float | None = LOCK_TIMEOUT, what: str = "write"):
    """Hold the writers' lock of index directory ``d`` (which must exist). Waits for another holder, saying so
    once on stderr, up to ``timeout`` seconds (None: for ever; 0: not at all), then raises
    :class:`IndexLocked` naming the holder. Re-entrant within a thread (``Index.edit`` then ``save``)."""
    d = Path(d)
    key = os.path.realpath(d)
    held = _held.__dict__.setdefault("dirs", set())
    if key in held:
        yield
        return
    f = open(d / LOCK, "a+", encoding="utf-8")  # noqa: SIM115 - closed below; "a+": never truncate a holder's note
    try:
        start, said = time.monotonic(), False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            waited = time.monotonic() - start
            if timeout is not None and waited >= timeout:
                raise IndexLocked(
                    f"{d}: another process is writing this index ({_holder(d)}); gave up after waiting "
                    f"{waited:.1f} s (--lock-timeout); try again when it is done"
                ) from None
            if not said and timeout != 0:
                print(f"{d}: waiting for another process writing this index ({_holder(d)})", file=sys.stderr)
                said = True
            time.sleep(0.05)
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "what": what, "since": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        f.flush()
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
            with contextlib.suppress(OSError):
                f.seek(0)
                f.truncate()
                f.flush()
            fcntl.flock(f, fcntl.LOCK_UN)
    finally:
        f.close()


def _holder(d: Path) -> str:
    try:
        note = json.loads((d / LOCK).read_text(encoding="utf-8"))
        return f"pid {note['pid']}, {note['what']} since {note['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


# ---------------------------------------------------------------------------------------------- reading
def read_directory(directory: str | Path, faiss) -> tuple[object, dict, dict, Path]:
    """Read and check an index directory: -> (the Faiss index, the manifest, the items, the directory).
    :class:`IndexFileError` (one line) when it cannot be trusted. A generation deleted by a writer while it
    was being read is retried with the new manifest."""
    d = Path(directory)
    if not d.is_dir():
        raise IndexFileError(f"{d}: no such index directory" + (" (it is a file)" if d.exists() else ""))
    mpath = d / MANIFEST
    for attempt in range(5):
        if not mpath.is_file():
            raise IndexFileError(
                f"{d}: not a vestis index (no {MANIFEST}); build one with `vestis index build`"
            )
        raw = mpath.read_bytes()
        try:
            return (*_read_generation(d, raw, faiss), d)
        except IndexFileError:
            with contextlib.suppress(OSError):
                if mpath.read_bytes() != raw and attempt < 4:  # a writer replaced the generation meanwhile
                    continue
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _read_generation(d: Path, raw: bytes, faiss) -> tuple[object, dict, dict]:
    mpath = d / MANIFEST
    try:
        manifest = json.loads(raw.decode("utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError) as e:
        raise IndexFileError(f"{mpath}: damaged manifest ({str(e)[:80]}); rebuild the index") from None

    def bad(what: str) -> IndexFileError:
        return IndexFileError(f"{d}: damaged index: {what}; rebuild it with `vestis index build`")

    fmt = manifest.get("format")
    if not isinstance(fmt, int):
        raise bad("the manifest has no format")
    if fmt > FORMAT:
        raise IndexFileError(
            f"{d}: written by a newer vestis (index format {fmt}); upgrade vestis to read it"
        )
    try:
        files = manifest["files"]
        dim = int(manifest["embedding"]["dim"])
        manifest["index"]["kind"]  # noqa: B018 - present, checked by the caller
        count = int(manifest["count"])
    except (KeyError, TypeError, ValueError) as e:
        raise bad(f"the manifest lacks {e}") from None
    data = {}  # each file read once: the bytes checked are the bytes parsed (a writer may delete it meanwhile)
    for key in ("index", "items"):
        entry = files.get(key) if isinstance(files, dict) else None
        if not isinstance(entry, dict) or not {"name", "bytes", "sha1"} <= set(entry):
            raise bad(f"the manifest does not describe its {key} file")
        name = Path(str(entry["name"])).name
        try:
            data[key] = (d / name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise bad(f"{name} is missing") from None
        if len(data[key]) != entry["bytes"]:
            raise bad(f"{name} has {len(data[key])} bytes, expected {entry['bytes']} (truncated?)")
        if hashlib.sha1(data[key]).hexdigest() != entry["sha1"]:
            raise bad(f"{name} does not match its checksum (damaged or modified)")
        data[key + "_name"] = name
    try:
        items = json.loads(data["items"].decode("utf-8"))
        ids = items["ids"]
        if not (
            isinstance(ids, list) and isinstance(items["paths"], list) and len(items["paths"]) == len(ids)
        ):
            raise ValueError("ids and paths differ in length")
        check_items(len(ids), items["paths"], items.get("columns"), items.get("digests"))
    except (ValueError, KeyError, TypeError) as e:
        raise bad(f"{data['items_name']}: {str(e)[:100]}") from None
    try:
        idx = faiss.deserialize_index(np.frombuffer(data.pop("index"), dtype=np.uint8))
    except Exception as e:  # faiss raises RuntimeError on damaged files
        raise bad(
            f"{data['index_name']} is not a readable Faiss index ({str(e).splitlines()[0][:80]})"
        ) from None
    removed = manifest.get("removed") or []
    if len(ids) != count or idx.ntotal != count + len(removed):
        raise bad(
            f"{count} items in the manifest, {len(ids)} in the items file, {idx.ntotal} vectors in Faiss"
        )
    if idx.d != dim:
        raise bad(f"Faiss vectors have dimension {idx.d}, the manifest says {dim}")
    return idx, manifest, items


# ---------------------------------------------------------------------------------------------- writing
def check_target(d: Path) -> None:
    """A directory an index may be written into: new, empty, or an index already."""
    if d.exists() and not d.is_dir():
        raise ValueError(f"{d} is a file; give a directory for the index")
    if d.is_dir() and any(p.name != LOCK for p in d.iterdir()) and not (d / MANIFEST).exists():
        raise ValueError(f"{d} is not empty and not a vestis index; choose a new directory")


def write_directory(
    d: Path,
    index_bytes: bytes,
    manifest: dict,
    items: dict,
    *,
    expect: str | None = None,
    timeout=LOCK_TIMEOUT,
) -> dict:
    """Write a new generation into ``d`` under the writers' lock and make it current; -> the manifest written
    (``manifest`` is updated in place). ``expect``: the generation the data was read from; if the directory's
    current generation is another one, a writer changed it meanwhile and :class:`IndexConflict` is raised."""
    check_target(d)
    d.mkdir(parents=True, exist_ok=True)
    with locked(d, timeout):
        if expect is not None:
            now = None
            with contextlib.suppress(OSError, ValueError):
                now = generation(json.loads((d / MANIFEST).read_text(encoding="utf-8")))
            if now != expect:
                raise IndexConflict(
                    f"{d}: another process changed this index since it was opened; open it again and "
                    "redo the change (Index.edit holds the lock across read-modify-write)"
                )
        gen = f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}"
        files = {
            "index": write_atomic(d / f"index-{gen}.faiss", index_bytes),
            "items": write_atomic(d / f"items-{gen}.json", json.dumps(items, ensure_ascii=False).encode()),
        }
        old = data_files(d)
        manifest.update(files=files, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
        manifest.setdefault("created", manifest["updated"])
        write_atomic(d / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False).encode())
        fsync_dir(d)
        for name in old - {f["name"] for f in files.values()}:
            (d / name).unlink(missing_ok=True)
    return manifest
