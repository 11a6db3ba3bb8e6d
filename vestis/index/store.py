"""An index of L2-normalised embeddings and its items (ids, paths, content digests, metadata columns), with
what the vectors mean (the model's feature fingerprint, the layer embedded): creating one, opening and
saving it, adding and removing items, and searching it by images or vectors.

The pieces live beside it: :mod:`vestis.index.files` (the directory format, atomic writes, the checks on
opening, the writers' lock), :mod:`vestis.index.kinds` (which Faiss index and its parameters) and
:mod:`vestis.index.neighbours` (vector search under filters). The names they define that were public here
are still importable from this module."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vestis.index.files import (
    FORMAT,
    LOCK_TIMEOUT,
    MANIFEST,
    IndexConflict,
    IndexFileError,
    IndexLocked,
    check_items,
    check_target,
    generation,
    locked,
    read_directory,
    write_directory,
)
from vestis.index.kinds import (
    AUTO_FLAT_MAX,
    KINDS,
    apply_params,
    faiss_module,
    make_faiss_index,
    min_training_vectors,
)
from vestis.index.neighbours import EXACT_SUBSET_MAX, Neighbours, parse_where, unit_vectors

RESERVED = ("id", "path", "score")  # result keys a metadata column may not shadow


class ModelMismatch(ValueError):
    """Queries embedded by another model than the index's (their vectors are not comparable)."""


class Index(Neighbours):
    """An open index directory. :meth:`open` reads and checks one; :meth:`create` makes one in memory from
    vectors and items; :meth:`save` writes it (atomically). :meth:`search` answers vectors or images
    (files, folders, globs, URLs) in the ``vestis search --json`` shape."""

    def __init__(self, faiss_index, manifest: dict, items: dict, directory: Path | None = None):
        self.faiss = faiss_index
        self.manifest = manifest
        self.dir = Path(directory) if directory is not None else None
        self.ids = np.asarray(items["ids"], dtype=np.int64)
        self.paths: list[str] = list(items["paths"])
        self.digests: list[str | None] = list(items.get("digests") or [None] * len(self.ids))
        self.columns: dict[str, list] = {c: list(v) for c, v in (items.get("columns") or {}).items()}
        self._pos = {int(i): p for p, i in enumerate(self.ids.tolist())}
        self._model = None
        self._subset_vectors = None
        self._generation = generation(manifest) if directory is not None else None

    # ------------------------------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"Index({self.dir or 'in memory'}, {len(self)} items, {self.kind}, dim {self.dim})"

    @property
    def kind(self) -> str:
        return self.manifest["index"]["kind"]

    @property
    def dim(self) -> int:
        return int(self.manifest["embedding"]["dim"])

    @property
    def removed(self) -> set[int]:
        """Ids removed from an index kind that cannot delete vectors (HNSW): masked out of every search."""
        return set(self.manifest.get("removed") or [])

    def item(self, item_id: int) -> dict:
        """``{"id", "path", <metadata>}`` of one item."""
        p = self._pos.get(int(item_id))
        if p is None:
            raise KeyError(f"no item with id {item_id} in the index")
        return self._row(p)

    def _row(self, p: int) -> dict:
        row = {"id": int(self.ids[p]), "path": self.paths[p]}
        row.update({c: v[p] for c, v in self.columns.items()})
        return row

    # ------------------------------------------------------------------------------------------ creating
    @classmethod
    def create(
        cls,
        vectors: np.ndarray,
        *,
        paths: Sequence[str],
        ids: Sequence[int] | None = None,
        columns: dict[str, Sequence] | None = None,
        digests: Sequence[str | None] | None = None,
        model: dict | None = None,
        embedding: dict | None = None,
        kind: str = "auto",
        params: dict | None = None,
    ) -> Index:
        """An index of ``vectors`` (N, D), L2-normalised here. ``model``: what made the vectors (at least
        ``fingerprint``); ``embedding``: the layer, views; ``kind``: auto, flat, hnsw, ivfpq."""
        vectors = unit_vectors(vectors)
        n, d = vectors.shape
        ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        check_items(len(ids), paths, columns, digests)
        if len(np.unique(ids)) != len(ids):
            raise ValueError("item ids must be unique")
        idx, kind, params = make_faiss_index(kind, d, n, params)
        need = min_training_vectors(kind, params)
        if need:
            if n < need:
                raise ValueError(f"{kind} needs at least {need} vectors to train")
            idx.train(vectors)
        if n:
            idx.add_with_ids(vectors, ids)
        manifest = {
            "format": FORMAT,
            "model": dict(model or {}),
            "embedding": {
                "dim": d,
                "metric": "inner product of L2-normalised vectors (cosine)",
                **(embedding or {}),
            },
            "index": {"kind": kind, "params": params},
            "count": n,
            "next_id": int(ids.max()) + 1 if n else 0,
            "removed": [],
        }
        items = {
            "ids": ids.tolist(),
            "paths": [str(p) for p in paths],
            "digests": list(digests) if digests is not None else [None] * n,
            "columns": {c: [_cell(x) for x in v] for c, v in (columns or {}).items() if c not in RESERVED},
        }
        return cls(idx, manifest, items)

    # ------------------------------------------------------------------------------------------ reading
    @classmethod
    def open(cls, directory: str | Path) -> Index:
        """Read and check an index directory; :class:`IndexFileError` (one line) when it cannot be trusted."""
        idx, manifest, items, d = read_directory(directory, faiss_module())
        kind = manifest["index"].get("kind") if isinstance(manifest["index"], dict) else None
        if kind not in KINDS:
            raise IndexFileError(
                f"{d}: damaged index: unknown index kind {kind!r}; rebuild it with `vestis index build`"
            )
        out = cls(idx, manifest, items, d)
        apply_params(out.faiss, out.kind, manifest["index"].get("params") or {})
        return out

    @classmethod
    @contextlib.contextmanager
    def edit(cls, directory: str | Path, timeout: float | None = LOCK_TIMEOUT):
        """``with Index.edit("idx/") as index: index.add(...)``: the index read under the directory's writers'
        lock, held until it is saved on leaving the block (not saved if the block raises). Other writers wait
        (up to ``timeout`` seconds, then :class:`IndexLocked`), so concurrent edits never lose each other's
        items."""
        d = Path(directory)
        if not (d / MANIFEST).is_file():
            cls.open(d)  # the one-line error for a missing or foreign directory
        with locked(d, timeout, "edit"):
            index = cls.open(d)
            yield index
            index.save(timeout=timeout)

    # ------------------------------------------------------------------------------------------ writing
    def save(self, directory: str | Path | None = None, *, timeout: float | None = LOCK_TIMEOUT) -> Path:
        """Write the index into ``directory`` (default: where it was opened) atomically; returns the path.
        Saving back where it was opened after another process changed that index raises
        :class:`IndexConflict` (use :meth:`edit` for read-modify-write)."""
        d = Path(directory) if directory is not None else self.dir
        if d is None:
            raise ValueError("no directory to save the index into")
        check_target(d)
        same = self.dir is not None and d.exists() and d.resolve() == self.dir.resolve()
        from vestis import __version__

        items = {
            "ids": self.ids.tolist(),
            "paths": self.paths,
            "digests": self.digests,
            "columns": self.columns,
        }
        self.manifest.update(count=len(self.ids), columns=list(self.columns), vestis=__version__)
        write_directory(
            d,
            faiss_module().serialize_index(self.faiss).tobytes(),
            self.manifest,
            items,
            expect=self._generation if same else None,
            timeout=timeout,
        )
        self.dir = d
        self._generation = generation(self.manifest)
        return d

    # ------------------------------------------------------------------------------------------ editing
    def add(
        self,
        vectors: np.ndarray,
        *,
        paths: Sequence[str],
        ids: Sequence[int] | None = None,
        columns: dict[str, Sequence] | None = None,
        digests: Sequence[str | None] | None = None,
    ) -> list[int]:
        """Add items (new ids from ``next_id`` unless given; a given id already in the index, or removed from
        an HNSW index, is refused). Existing ids never change. Returns the new ids. Call :meth:`save` after."""
        vectors = unit_vectors(vectors)
        n = len(vectors)
        if n and vectors.shape[1] != self.dim:
            raise ValueError(f"vectors of dimension {vectors.shape[1]}, the index holds {self.dim}")
        nxt = int(self.manifest.get("next_id", 0))
        if ids is None:
            new = np.arange(nxt, nxt + n, dtype=np.int64)
        else:
            new = np.asarray(ids, dtype=np.int64)
            taken = [int(i) for i in new if int(i) in self._pos or int(i) in self.removed]
            if taken or len(np.unique(new)) != len(new):
                raise ValueError(f"ids already in the index (or repeated): {taken[:10] or 'repeated ids'}")
        check_items(n, paths, columns, digests)
        if not n:
            return []
        self.faiss.add_with_ids(vectors, new)
        old_n = len(self.ids)
        self.ids = np.concatenate([self.ids, new])
        self.paths += [str(p) for p in paths]
        self.digests += list(digests) if digests is not None else [None] * n
        columns = {c: v for c, v in (columns or {}).items() if c not in RESERVED}
        for c in set(self.columns) | set(columns):
            self.columns.setdefault(c, [None] * old_n)
            self.columns[c] += [_cell(x) for x in columns[c]] if c in columns else [None] * n
        for p, i in enumerate(new.tolist(), old_n):
            self._pos[i] = p
        self.manifest["next_id"] = max(nxt, int(new.max()) + 1)
        self._subset_vectors = None
        return new.tolist()

    def remove(self, ids: Sequence[int]) -> list[int]:
        """Remove items by id (their ids are never reused). Unknown ids raise KeyError listing them. HNSW
        cannot delete vectors: theirs stay in the Faiss file, masked out of every search."""
        ids = [int(i) for i in ids]
        unknown = [i for i in ids if i not in self._pos]
        if unknown:
            raise KeyError(f"no item with id {', '.join(map(str, unknown[:10]))} in the index")
        arr = np.unique(np.asarray(ids, dtype=np.int64))
        if self.kind == "hnsw":
            self.manifest["removed"] = sorted(self.removed | set(arr.tolist()))
        else:
            self.faiss.remove_ids(arr)
        keep = ~np.isin(self.ids, arr)
        self.ids = self.ids[keep]
        self.paths = [p for p, k in zip(self.paths, keep, strict=True) if k]
        self.digests = [p for p, k in zip(self.digests, keep, strict=True) if k]
        self.columns = {c: [x for x, k in zip(v, keep, strict=True) if k] for c, v in self.columns.items()}
        self._pos = {int(i): p for p, i in enumerate(self.ids.tolist())}
        self._subset_vectors = None
        return arr.tolist()

    def search(self, queries, k: int = 10, where=None, model=None, **options) -> list[dict]:
        """``queries`` as image files, folders, globs and URLs: one ``{"input", "results": [{"id", "path",
        "score", <metadata>}, ...]}`` or ``{"input", "error"}`` per image (the ``vestis search --json`` lines).
        As an ndarray of vectors (N, D) or (D,): one results list per row. Images are embedded by ``model`` (default: the index's own model, loaded once; another model's features
        are refused with :class:`ModelMismatch`). ``where``: ``{"gender": ["Women"]}`` or ``["gender=Women"]``."""
        from vestis.index.build import index_model, search

        if model is None and not isinstance(queries, np.ndarray):
            if self._model is None:
                self._model = index_model(self)
            model = self._model
        return search(self, queries, k, where, model, **options)

    def search_images(self, images: list, k: int = 10, where=None, model=None) -> list[dict]:
        """In-memory queries (encoded bytes or PIL images, e.g. HTTP uploads): ``{"results": [...]}`` or
        ``{"error": ...}`` each, in order."""
        from vestis.index.build import check_model, embed_images, index_model, views_of

        self.matching(where)
        if model is None:
            if self._model is None:
                self._model = index_model(self)
            model = self._model
        else:
            check_model(self, model)
        got = embed_images(model, images, views_of(self))
        ok = [i for i, (v, e) in enumerate(got) if e is None and v is not None]
        res = dict(
            zip(
                ok,
                self.search_vectors(np.stack([got[i][0] for i in ok]), k, where) if ok else [],
                strict=True,
            )
        )
        return [
            {"results": res[i]} if i in res else {"error": e or "could not be embedded"}
            for i, (_, e) in enumerate(got)
        ]


def _cell(x):
    return None if x is None else str(x)


__all__ = [
    "AUTO_FLAT_MAX",
    "EXACT_SUBSET_MAX",
    "FORMAT",
    "KINDS",
    "MANIFEST",
    "RESERVED",
    "Index",
    "IndexConflict",
    "IndexFileError",
    "IndexLocked",
    "ModelMismatch",
    "make_faiss_index",
    "parse_where",
]
