"""Searching an index by vectors: the k nearest items by cosine similarity, under metadata filters
(``--where col=value``), leaving out given ids, and still k results whenever k items qualify.

Filters become a Faiss id selector. The exact (flat) index is exact under the filter too; for the
approximate kinds a filter that keeps at most ``EXACT_SUBSET_MAX`` items is searched exactly on that subset
(vectors read back from Faiss), and a wider one falls back to an exact search for the queries the
approximate search could not fill."""

from __future__ import annotations

import numpy as np

from vestis.index.kinds import faiss_module, search_parameters

EXACT_SUBSET_MAX = 50_000  # a filter matching at most this many items is searched exactly on that subset


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


def unit_vectors(x) -> np.ndarray:
    """(N, D) float32, C-contiguous, each row scaled to length 1 (NaN and infinity refused)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected vectors of shape (N, D), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("vectors contain NaN or infinity")
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(n, 1e-12), dtype=np.float32)


class Neighbours:
    """The vector-search half of :class:`vestis.index.Index` (it supplies ``faiss``, ``manifest``, ``ids``,
    ``columns``, ``kind``, ``dim``, ``removed``, ``_pos``, ``_row`` and ``_subset_vectors``)."""

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

    def search_vectors(self, vectors: np.ndarray, k: int = 10, where=None, exclude=None) -> list[list[dict]]:
        """The ``k`` most similar items to each query vector (cosine), best first, as result rows
        ``{"id", "path", "score", <metadata>}``. ``where``: a filter (:func:`parse_where`); k results come
        back whenever k items match. ``exclude``: per query, ids to leave out (e.g. the query itself)."""
        scores, pos = self.search_positions(vectors, k, where, exclude)
        out = []
        for srow, prow in zip(scores, pos, strict=True):
            rows = [
                {**self._row(p), "score": round(float(s), 6)}
                for s, p in zip(srow, prow, strict=True)
                if p >= 0
            ]
            # the documented key order: id, path, score, metadata
            out.append([{"id": r["id"], "path": r["path"], "score": r["score"], **r} for r in rows])
        return out

    def search_positions(
        self, vectors, k: int = 10, where=None, exclude=None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, positions) (Q, k) of the nearest items; position -1 where fewer than k items qualify."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = unit_vectors(np.atleast_2d(np.asarray(vectors, dtype=np.float32)))
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
        faiss = faiss_module()
        removed = self.removed
        sel = None
        if allowed is not None:
            sel = faiss.IDSelectorBatch(self.ids[allowed])
        elif removed:
            sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.fromiter(removed, np.int64)))
        params = search_parameters(self.kind, self.manifest["index"].get("params") or {}, want, sel)
        return self.faiss.search(q, want, params=params)

    def _exact_subset(self, q, want, allowed: np.ndarray):
        """Exact inner products against the items at positions ``allowed`` (vectors read back from Faiss)."""
        vecs = self._vectors(allowed)
        sims = q @ vecs.T
        top = np.argsort(-sims, axis=1, kind="stable")[:, :want]
        return np.take_along_axis(sims, top, 1).astype(np.float32), self.ids[allowed][top]

    def _vectors(self, positions: np.ndarray) -> np.ndarray:
        faiss = faiss_module()
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
