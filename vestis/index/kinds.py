"""Which Faiss index holds the vectors, and with which parameters: exact inner product (flat), HNSW, or IVF-PQ,
chosen by size ('auto') or by name, the parameters filled in and stored in the manifest, and applied again
when an index is opened or searched.

Every kind is wrapped in an ``IndexIDMap2`` (the items' ids are the Faiss ids) and compares L2-normalised
vectors by inner product (cosine similarity)."""

from __future__ import annotations

import numpy as np

KINDS = ("auto", "flat", "hnsw", "ivfpq")
AUTO_FLAT_MAX = 200_000  # 'auto' builds an exact index up to this many vectors, HNSW above
HNSW_DEFAULTS = {"M": 32, "efConstruction": 80, "efSearch": 128}
IVFPQ_NPROBE = 16  # default nprobe (at most nlist)


def faiss_module():
    """The ``faiss`` module, or a ModuleNotFoundError naming the extra that installs it."""
    try:
        import faiss
    except ModuleNotFoundError as e:  # pragma: no cover - depends on the installation
        raise ModuleNotFoundError("the index needs faiss: pip install 'vestis[index]'", name="faiss") from e
    return faiss


def ivfpq_params(dim: int, n: int, params: dict | None = None) -> dict:
    """IVF-PQ parameters for ``n`` vectors of dimension ``dim``, the given ones kept: nlist ~ 4 sqrt(n) (at
    least 39 training vectors per list), m = the largest of 64, 48, 32, ... dividing ``dim`` (sub-quantizers,
    one code of ``nbits`` each per vector), nbits = 8 (4 below 256 x 39 vectors), nprobe = min(nlist, 16)."""
    params = dict(params or {})
    nlist = int(params.get("nlist") or max(1, min(4 * int(np.sqrt(max(n, 1))), n // 39 or 1)))
    m = int(params.get("m") or next(x for x in (64, 48, 32, 16, 8, 4, 2, 1) if dim % x == 0))
    nbits = int(params.get("nbits") or (8 if n >= 256 * 39 else 4))
    return {
        "nlist": nlist,
        "m": m,
        "nbits": nbits,
        "nprobe": int(params.get("nprobe") or min(nlist, IVFPQ_NPROBE)),
    }


def ivfpq_bytes_per_vector(params: dict) -> float:
    """Memory per vector of an IVF-PQ index in the ``IndexIDMap2`` we build: the PQ code (m x nbits bits), the
    inverted list's 8-byte id and the id map's 8-byte id (centroids and codebooks are a fixed cost, not per
    vector)."""
    return params["m"] * params["nbits"] / 8 + 8 + 8


def make_faiss_index(kind: str, dim: int, n: int, params: dict | None = None):
    """-> (an empty IndexIDMap2 of ``kind``, the kind resolved from 'auto', the parameters it was made with).
    'auto': flat up to ``AUTO_FLAT_MAX`` vectors, else HNSW. Inner product on unit vectors (cosine)."""
    faiss = faiss_module()
    params = dict(params or {})
    if kind == "auto":
        kind = "flat" if n <= AUTO_FLAT_MAX else "hnsw"
    if kind == "flat":
        base, params = faiss.IndexFlatIP(dim), {}
    elif kind == "hnsw":
        params = {**HNSW_DEFAULTS, **params}
        base = faiss.IndexHNSWFlat(dim, int(params["M"]), faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efConstruction = int(params["efConstruction"])
        base.hnsw.efSearch = int(params["efSearch"])
    elif kind == "ivfpq":
        params = ivfpq_params(dim, n, params)
        if dim % params["m"]:
            raise ValueError(f"ivfpq: m={params['m']} must divide the dimension {dim}")
        quantizer = faiss.IndexFlatIP(dim)
        base = faiss.IndexIVFPQ(
            quantizer, dim, params["nlist"], params["m"], params["nbits"], faiss.METRIC_INNER_PRODUCT
        )
        base.nprobe = params["nprobe"]
        base.own_fields = True
        quantizer.this.disown()
    else:
        raise ValueError(f"unknown index kind {kind!r}; choose {', '.join(KINDS)}")
    idx = faiss.IndexIDMap2(base)
    idx.own_fields = True
    base.this.disown()
    return idx, kind, params


def min_training_vectors(kind: str, params: dict) -> int:
    """How many vectors the kind needs to train before it can hold any (0: no training)."""
    return max(params["nlist"], 2 ** params["nbits"]) if kind == "ivfpq" else 0


def apply_params(faiss_index, kind: str, params: dict) -> None:
    """Set the stored search-time parameters on an index read from disk (Faiss files do not keep them all)."""
    base = faiss_module().downcast_index(faiss_index.index)
    if kind == "hnsw":
        base.hnsw.efSearch = int(params.get("efSearch", HNSW_DEFAULTS["efSearch"]))
    elif kind == "ivfpq":
        base.nprobe = int(params.get("nprobe", IVFPQ_NPROBE))


def search_parameters(kind: str, params: dict, want: int, selector=None):
    """Faiss SearchParameters for one search of ``want`` neighbours: the stored efSearch (at least ``want``) or
    nprobe, and an optional id selector (filters, removed ids); None when nothing needs setting."""
    faiss = faiss_module()
    if kind == "hnsw":
        ef = max(int(params.get("efSearch", HNSW_DEFAULTS["efSearch"])), want)
        return faiss.SearchParametersHNSW(sel=selector, efSearch=ef)
    if kind == "ivfpq":
        return faiss.SearchParametersIVF(sel=selector, nprobe=int(params.get("nprobe", IVFPQ_NPROBE)))
    return faiss.SearchParameters(sel=selector) if selector is not None else None
