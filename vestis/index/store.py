"""The index directory: a Faiss index of L2-normalised embeddings, its items (ids, paths, content digests,
metadata columns) and what the vectors mean (the model's feature fingerprint, the layer embedded).

Layout of ``idx/`` (one *generation* of files at a time)::

    index.json              the manifest: format, model, embedding, index kind and parameters, counts,
                            and the name, size and SHA-1 of each data file of the current generation
    index-GEN.faiss         faiss.write_index of an IndexIDMap2 (ids are the items' ids)
    items-GEN.json          {"ids": [...], "paths": [...], "digests": [...], "columns": {col: [...]}}

A write puts a new generation's data files beside the old ones (written to a temporary name, fsynced, renamed),
then replaces ``index.json`` atomically, then deletes the old generation: a reader sees the old index or the
new one, never a mixture, and a crash mid-write leaves the old index readable. Opening checks every file
(present, size, SHA-1, Faiss readable, counts and dimensions agree) and raises :class:`IndexFileError`, a
one-line ValueError naming the directory, instead of crashing or answering wrongly."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

FORMAT = 1
MANIFEST = "index.json"
KINDS = ("auto", "flat", "hnsw", "ivfpq")
AUTO_FLAT_MAX = 200_000  # 'auto' builds an exact index up to this many vectors, HNSW above
EXACT_SUBSET_MAX = 50_000  # a filter matching at most this many items is searched exactly on that subset
RESERVED = ("id", "path", "score")  # result keys a metadata column may not shadow


class IndexFileError(ValueError):
    """A missing, damaged, truncated or inconsistent index directory (one line, naming it)."""


class ModelMismatch(ValueError):
    """Queries embedded by another model than the index's (their vectors are not comparable)."""


def _faiss():
    try:
        import faiss
    except ModuleNotFoundError as e:  # pragma: no cover - depends on the installation
        raise ModuleNotFoundError("the index needs faiss: pip install 'vestis[index]'", name="faiss") from e
    return faiss


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _write_atomic(path: Path, data: bytes) -> dict:
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


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def parse_where(where) -> dict[str, list[str]]:
    """``["gender=Women", "articleType=Tshirts|Tops"]`` (or a dict ``{col: value or [values]}``) ->
    ``{col: [values]}``; several conditions must all hold, a condition's values are alternatives."""
    if not where:
        return {}
    if isinstance(where, dict):  # {col: value, "a|b" or [values]}
        return {
            str(k): [str(x) for x in v] if isinstance(v, (list, tuple, set)) else str(v).split("|")
            for k, v in where.items()
        }
    out: dict[str, list[str]] = {}
    for cond in [where] if isinstance(where, str) else where:
        col, sep, values = str(cond).partition("=")
        if not sep or not col.strip():
            raise ValueError(f"--where {cond!r}: expected COLUMN=VALUE (or COLUMN=A|B)")
        out.setdefault(col.strip(), []).extend(v.strip() for v in values.split("|"))
    return out


def make_faiss_index(kind: str, dim: int, n: int, params: dict | None = None):
    """-> (an empty IndexIDMap2 of ``kind``, the parameters it was made with). 'auto': flat up to
    ``AUTO_FLAT_MAX`` vectors, else HNSW. Inner product on unit vectors (cosine similarity)."""
    faiss = _faiss()
    params = dict(params or {})
    if kind == "auto":
        kind = "flat" if n <= AUTO_FLAT_MAX else "hnsw"
    if kind == "flat":
        base, params = faiss.IndexFlatIP(dim), {}
    elif kind == "hnsw":
        params = {"M": 32, "efConstruction": 80, "efSearch": 128, **params}
        base = faiss.IndexHNSWFlat(dim, int(params["M"]), faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efConstruction = int(params["efConstruction"])
        base.hnsw.efSearch = int(params["efSearch"])
    elif kind == "ivfpq":
        nlist = int(params.get("nlist") or max(1, min(4 * int(np.sqrt(max(n, 1))), n // 39 or 1)))
        m = int(params.get("m") or next(x for x in (64, 48, 32, 16, 8, 4, 2, 1) if dim % x == 0))
        nbits = int(params.get("nbits") or (8 if n >= 256 * 39 else 4))
        params = {
            "nlist": nlist,
            "m": m,
            "nbits": nbits,
            "nprobe": int(params.get("nprobe") or min(nlist, 16)),
        }
        if dim % m:
            raise ValueError(f"ivfpq: m={m} must divide the dimension {dim}")
        quantizer = faiss.IndexFlatIP(dim)
        base = faiss.IndexIVFPQ(quantizer, dim, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
        base.nprobe = params["nprobe"]
        base.own_fields = True
        quantizer.this.disown()
    else:
        raise ValueError(f"unknown index kind {kind!r}; choose {', '.join(KINDS)}")
    idx = faiss.IndexIDMap2(base)
    idx.own_fields = True
    base.this.disown()
    return idx, kind, params


class Index:
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
        vectors = _unit(vectors)
        n, d = vectors.shape
        ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        _check_items(len(ids), paths, columns, digests)
        if len(np.unique(ids)) != len(ids):
            raise ValueError("item ids must be unique")
        idx, kind, params = make_faiss_index(kind, d, n, params)
        if kind == "ivfpq":
            if n < params["nlist"] or n < 2 ** params["nbits"]:
                raise ValueError(
                    f"ivfpq needs at least {max(params['nlist'], 2 ** params['nbits'])} vectors to train"
                )
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
        faiss = _faiss()
        d = Path(directory)
        if not d.is_dir():
            raise IndexFileError(f"{d}: no such index directory" + (" (it is a file)" if d.exists() else ""))
        mpath = d / MANIFEST
        if not mpath.is_file():
            raise IndexFileError(
                f"{d}: not a vestis index (no {MANIFEST}); build one with `vestis index build`"
            )
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
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
            kind = manifest["index"]["kind"]
            count = int(manifest["count"])
        except (KeyError, TypeError, ValueError) as e:
            raise bad(f"the manifest lacks {e}") from None
        paths = {}
        for key in ("index", "items"):
            entry = files.get(key) if isinstance(files, dict) else None
            if not isinstance(entry, dict) or not {"name", "bytes", "sha1"} <= set(entry):
                raise bad(f"the manifest does not describe its {key} file")
            p = d / Path(str(entry["name"])).name
            if not p.is_file():
                raise bad(f"{p.name} is missing")
            size = p.stat().st_size
            if size != entry["bytes"]:
                raise bad(f"{p.name} has {size} bytes, expected {entry['bytes']} (truncated?)")
            if _sha1(p) != entry["sha1"]:
                raise bad(f"{p.name} does not match its checksum (damaged or modified)")
            paths[key] = p
        try:
            items = json.loads(paths["items"].read_text(encoding="utf-8"))
            ids = items["ids"]
            if not (
                isinstance(ids, list) and isinstance(items["paths"], list) and len(items["paths"]) == len(ids)
            ):
                raise ValueError("ids and paths differ in length")
            _check_items(len(ids), items["paths"], items.get("columns"), items.get("digests"))
        except (ValueError, KeyError, TypeError) as e:
            raise bad(f"{paths['items'].name}: {str(e)[:100]}") from None
        try:
            idx = faiss.read_index(str(paths["index"]))
        except Exception as e:  # faiss raises RuntimeError on damaged files
            raise bad(
                f"{paths['index'].name} is not a readable Faiss index ({str(e).splitlines()[0][:80]})"
            ) from None
        removed = manifest.get("removed") or []
        if len(ids) != count or idx.ntotal != count + len(removed):
            raise bad(
                f"{count} items in the manifest, {len(ids)} in the items file, {idx.ntotal} vectors in Faiss"
            )
        if idx.d != dim:
            raise bad(f"Faiss vectors have dimension {idx.d}, the manifest says {dim}")
        if kind not in KINDS:
            raise bad(f"unknown index kind {kind!r}")
        out = cls(idx, manifest, items, d)
        out._apply_params()
        return out

    def _apply_params(self) -> None:
        faiss = _faiss()
        base = faiss.downcast_index(self.faiss.index)
        params = self.manifest["index"].get("params") or {}
        if self.kind == "hnsw":
            base.hnsw.efSearch = int(params.get("efSearch", 128))
        elif self.kind == "ivfpq":
            base.nprobe = int(params.get("nprobe", 16))

    # ------------------------------------------------------------------------------------------ writing
    def save(self, directory: str | Path | None = None) -> Path:
        """Write the index into ``directory`` (default: where it was opened) atomically; returns the path."""
        faiss = _faiss()
        d = Path(directory) if directory is not None else self.dir
        if d is None:
            raise ValueError("no directory to save the index into")
        if d.exists() and not d.is_dir():
            raise ValueError(f"{d} is a file; give a directory for the index")
        if d.is_dir() and any(d.iterdir()) and not (d / MANIFEST).exists():
            raise ValueError(f"{d} is not empty and not a vestis index; choose a new directory")
        d.mkdir(parents=True, exist_ok=True)
        with _locked(d):
            gen = f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}"
            items = {
                "ids": self.ids.tolist(),
                "paths": self.paths,
                "digests": self.digests,
                "columns": self.columns,
            }
            files = {
                "index": _write_atomic(d / f"index-{gen}.faiss", faiss.serialize_index(self.faiss).tobytes()),
                "items": _write_atomic(
                    d / f"items-{gen}.json", json.dumps(items, ensure_ascii=False).encode()
                ),
            }
            old = _current_files(d)
            self.manifest.update(
                files=files,
                count=len(self.ids),
                columns=list(self.columns),
                updated=time.strftime("%Y-%m-%dT%H:%M:%S"),
            )
            self.manifest.setdefault("created", self.manifest["updated"])
            from vestis import __version__

            self.manifest["vestis"] = __version__
            _write_atomic(d / MANIFEST, json.dumps(self.manifest, indent=1, ensure_ascii=False).encode())
            _fsync_dir(d)
            for name in old - {f["name"] for f in files.values()}:
                (d / name).unlink(missing_ok=True)
        self.dir = d
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
        vectors = _unit(vectors)
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
        _check_items(n, paths, columns, digests)
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

    # ------------------------------------------------------------------------------------------ searching
    def matching(self, where) -> np.ndarray | None:
        """Positions of the items a filter keeps (None: no filter). Unknown columns are errors."""
        cond = parse_where(where)
        if not cond:
            return None
        keep = np.ones(len(self.ids), bool)
        for col, values in cond.items():
            if col == "id":
                keep &= np.isin(self.ids, [int(v) for v in values])
                continue
            if col not in self.columns:
                known = ", ".join(sorted(self.columns)) or "none"
                raise ValueError(f"--where: no column {col!r} in the index (columns: {known})")
            wanted = set(values)
            keep &= np.fromiter((x in wanted for x in self.columns[col]), bool, len(self.ids))
        return np.flatnonzero(keep)

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

    def search_vectors(self, vectors: np.ndarray, k: int = 10, where=None, exclude=None) -> list[list[dict]]:
        """The ``k`` most similar items to each query vector (cosine), best first, as result rows
        ``{"id", "path", "score", <metadata>}``. ``where``: a filter (:func:`parse_where`); k results come
        back whenever k items match. ``exclude``: per query, ids to leave out (e.g. the query itself)."""
        scores, pos = self.search_positions(vectors, k, where, exclude)
        out = []
        for srow, prow in zip(scores, pos, strict=True):
            out.append(
                [
                    {**self._row(p), "score": round(float(s), 6)}
                    for s, p in zip(srow, prow, strict=True)
                    if p >= 0
                ]
            )
        # keep the documented key order: id, path, score, metadata
        return [[{"id": r["id"], "path": r["path"], "score": r["score"], **r} for r in rows] for rows in out]

    def search_positions(
        self, vectors, k: int = 10, where=None, exclude=None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, positions) (Q, k) of the nearest items; position -1 where fewer than k items qualify."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = _unit(np.atleast_2d(np.asarray(vectors, dtype=np.float32)))
        if q.shape[1] != self.dim:
            raise ValueError(f"query vectors of dimension {q.shape[1]}; the index holds dimension {self.dim}")
        allowed = self.matching(where)
        n_allowed = len(self.ids) if allowed is None else len(allowed)
        extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
        want = min(k + extra, n_allowed)
        scores = np.full((len(q), want), -np.inf, np.float32)
        ids = np.full((len(q), want), -1, np.int64)
        if want:
            if self.kind == "flat":  # exact, under the filter too
                scores, ids = self._faiss_search(q, want, allowed)
            elif allowed is not None and n_allowed <= EXACT_SUBSET_MAX:  # a small subset: exact is cheap
                scores, ids = self._exact_subset(q, want, allowed)
            else:
                scores, ids = self._faiss_search(q, want, allowed)
                short = np.flatnonzero((ids >= 0).sum(1) < want)
                if len(short):  # the approximate search found too few under the filter: go wider, exactly
                    sub = allowed if allowed is not None else np.arange(len(self.ids))
                    scores[short], ids[short] = self._exact_subset(q[short], want, sub)
        pos = np.array(
            [[self._pos.get(int(i), -1) if i >= 0 else -1 for i in row] for row in ids], np.int64
        ).reshape(len(q), -1)
        if exclude is not None:
            out_s, out_p = np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
            for r, ex in enumerate(exclude):
                ex = {self._pos.get(int(i), -1) for i in ex}
                keep = [(s, p) for s, p in zip(scores[r], pos[r], strict=True) if p >= 0 and p not in ex][:k]
                for c, (s, p) in enumerate(keep):
                    out_s[r, c], out_p[r, c] = s, p
            return out_s, out_p
        return scores[:, :k], pos[:, :k]

    def _faiss_search(self, q, want, allowed):
        faiss = _faiss()
        removed = self.removed
        sel = None
        if allowed is not None:
            sel = faiss.IDSelectorBatch(self.ids[allowed])
        elif removed:
            sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.fromiter(removed, np.int64)))
        params = None
        p = self.manifest["index"].get("params") or {}
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=max(int(p.get("efSearch", 128)), want))
        elif self.kind == "ivfpq":
            params = faiss.SearchParametersIVF(sel=sel, nprobe=int(p.get("nprobe", 16)))
        elif sel is not None:
            params = faiss.SearchParameters(sel=sel)
        scores, ids = self.faiss.search(q, want, params=params)
        return scores, ids

    def _exact_subset(self, q, want, allowed: np.ndarray):
        """Exact inner products against the items at positions ``allowed`` (vectors read back from Faiss)."""
        vecs = self._vectors(allowed)
        sims = q @ vecs.T
        top = np.argsort(-sims, axis=1, kind="stable")[:, :want]
        return np.take_along_axis(sims, top, 1).astype(np.float32), self.ids[allowed][top]

    def _vectors(self, positions: np.ndarray) -> np.ndarray:
        faiss = _faiss()
        if self._subset_vectors is None:
            base = faiss.downcast_index(self.faiss.index)
            if self.kind == "ivfpq":
                base.make_direct_map()
            fid = faiss.vector_to_array(self.faiss.id_map)
            self._subset_vectors = (base, {int(i): j for j, i in enumerate(fid.tolist())})
        base, where = self._subset_vectors
        internal = np.array([where[int(i)] for i in self.ids[positions]], np.int64)
        return base.reconstruct_batch(internal) if len(internal) else np.zeros((0, self.dim), np.float32)

    def vectors(self) -> np.ndarray:
        """All item vectors (N, D) in item order (approximate for IVF-PQ)."""
        return self._vectors(np.arange(len(self.ids)))


def _current_files(d: Path) -> set[str]:
    return {p.name for p in d.iterdir() if p.name.startswith(("index-", "items-"))}


@contextlib.contextmanager
def _locked(d: Path):
    """One writer at a time per index directory (an advisory lock on ``d/.lock``)."""
    with open(d / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected vectors of shape (N, D), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("vectors contain NaN or infinity")
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(n, 1e-12), dtype=np.float32)


def _cell(x):
    return None if x is None else str(x)


def _check_items(n: int, paths, columns, digests) -> None:
    if len(paths) != n:
        raise ValueError(f"{len(paths)} paths for {n} items")
    if digests is not None and len(digests) != n:
        raise ValueError(f"{len(digests)} digests for {n} items")
    for c, v in (columns or {}).items():
        if len(v) != n:
            raise ValueError(f"column {c!r} has {len(v)} values for {n} items")
