"""The index: build / add / remove / search / filters on seeded synthetic embeddings (no model), the directory
format's checks (damaged, truncated, mismatched), and the model refusal."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("faiss")

from vestis.index import Index, IndexFileError, ModelMismatch, parse_where  # noqa: E402
from vestis.index.build import check_model  # noqa: E402

D = 32


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((6, D))
    label = rng.integers(0, 6, n)
    x = centres[label] + 0.3 * rng.standard_normal((n, D))
    cols = {
        "articleType": [f"type{v}" for v in label],
        "gender": ["Women" if i % 3 == 0 else "Men" for i in range(n)],
    }
    return x.astype(np.float32), cols


def _index(kind="flat", n=300, params=None):
    x, cols = _data(n)
    ids = np.arange(1000, 1000 + n)
    idx = Index.create(
        x,
        paths=[f"img/{i}.jpg" for i in ids],
        ids=ids,
        columns=cols,
        digests=[f"d{i}" for i in ids],
        model={"fingerprint": "fp-test"},
        kind=kind,
        params=params,
    )
    return idx, x


def _exact(x, q, k, allowed=None):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    s = qn @ xn.T
    if allowed is not None:
        s[:, ~allowed] = -np.inf
    return np.argsort(-s, axis=1)[:, :k]


def test_flat_search_is_exact_and_shaped(tmp_path):
    idx, x = _index()
    q = x[:5] + 0.01
    res = idx.search_vectors(q, k=7)
    want = _exact(x, q, 7)
    assert [[r["id"] - 1000 for r in rows] for rows in res] == want.tolist()
    r = res[0][0]
    assert list(r)[:3] == ["id", "path", "score"] and r["articleType"].startswith("type") and "gender" in r
    assert isinstance(r["id"], int) and isinstance(r["score"], float)
    assert all(a["score"] >= b["score"] for a, b in zip(res[0], res[0][1:], strict=False))
    # a numpy array to Index.search gives one results list per row, as search_vectors (the server's path)
    assert idx.search(q, k=7) == res


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_filters_return_k_when_k_match(kind):
    params = {"nlist": 8, "m": 8, "nbits": 4, "nprobe": 1} if kind == "ivfpq" else None
    idx, x = _index(kind, n=400, params=params)
    # a selective filter: only 12 women of type0 exist; k=10 must come back, all matching
    cond = {"gender": ["Women"], "articleType": ["type0"]}
    matching = idx.matching(cond)
    assert len(matching) >= 10
    res = idx.search_vectors(x[:3], k=10, where=["gender=Women", "articleType=type0"])
    for rows in res:
        assert len(rows) == 10
        assert all(r["gender"] == "Women" and r["articleType"] == "type0" for r in rows)
    # fewer matching than k: all of them
    res = idx.search_vectors(x[:1], k=10, where={"id": ["1000", "1001"]})
    assert sorted(r["id"] for r in res[0]) == [1000, 1001]
    # either value
    res = idx.search_vectors(x[:2], k=20, where=["articleType=type1|type2"])
    assert all(r["articleType"] in ("type1", "type2") for rows in res for r in rows) and len(res[0]) == 20


def test_filter_on_flat_is_exact():
    idx, x = _index()
    allowed = np.array([g == "Women" for g in idx.columns["gender"]])
    res = idx.search_vectors(x[:4], k=5, where=["gender=Women"])
    assert [[r["id"] - 1000 for r in rows] for rows in res] == _exact(x, x[:4], 5, allowed).tolist()


def test_parse_where():
    assert parse_where(["gender=Women", "articleType=Tops|Tshirts"]) == {
        "gender": ["Women"],
        "articleType": ["Tops", "Tshirts"],
    }
    assert parse_where({"gender": "Men|Boys"}) == {"gender": ["Men", "Boys"]}
    with pytest.raises(ValueError, match="COLUMN=VALUE"):
        parse_where(["gender"])
    idx, _ = _index(n=50)
    with pytest.raises(ValueError, match="no column 'colour'"):
        idx.matching(["colour=red"])


def test_save_open_add_remove_keep_ids_stable(tmp_path):
    idx, x = _index(n=100)
    idx.save(tmp_path / "idx")
    idx = Index.open(tmp_path / "idx")
    assert len(idx) == 100 and idx.kind == "flat" and idx.manifest["model"]["fingerprint"] == "fp-test"
    before = idx.item(1050)
    new = idx.add(
        x[:3] * -1, paths=["a.jpg", "b.jpg", "c.jpg"], columns={"gender": ["Men"] * 3, "shop": ["x"] * 3}
    )
    assert new == [1100, 1101, 1102]
    idx.save()
    idx = Index.open(tmp_path / "idx")
    assert idx.item(1050) == {**before, "shop": None}
    assert idx.item(1101)["shop"] == "x" and idx.item(1101)["articleType"] is None
    assert idx.search_vectors(-x[1:2], k=1)[0][0]["id"] == 1101
    assert idx.remove([1101, 1000]) == [1000, 1101]
    idx.save()
    idx = Index.open(tmp_path / "idx")
    assert len(idx) == 101
    got = {r["id"] for rows in idx.search_vectors(np.concatenate([x[:1], -x[1:2]]), k=101) for r in rows}
    assert 1000 not in got and 1101 not in got
    assert idx.item(1050) == {**before, "shop": None}
    # removed ids are not reused; given ids that exist are refused
    assert idx.add(x[:1], paths=["d.jpg"]) == [1103]
    with pytest.raises(ValueError, match="already in the index"):
        idx.add(x[:1], paths=["e.jpg"], ids=[1050])
    with pytest.raises(KeyError, match="no item with id 5"):
        idx.remove([5])
    # only one generation of data files is left behind
    names = sorted(p.name for p in (tmp_path / "idx").iterdir() if not p.name.startswith("."))
    assert len(names) == 3 and "index.json" in names


def test_hnsw_remove_masks_and_survives_reopen(tmp_path):
    idx, x = _index("hnsw", n=200)
    assert idx.manifest["index"]["params"]["M"] == 32
    idx.remove([1000, 1001])
    idx.save(tmp_path / "h")
    idx = Index.open(tmp_path / "h")
    assert idx.manifest["removed"] == [1000, 1001] and len(idx) == 198
    res = idx.search_vectors(x[:2], k=5)
    assert all(r["id"] not in (1000, 1001) for rows in res for r in rows) and all(len(r) == 5 for r in res)
    with pytest.raises(ValueError, match="already in the index"):
        idx.add(x[:1], paths=["z.jpg"], ids=[1000])


def test_auto_and_approximate_recall():
    idx, x = _index("auto", n=200)
    assert idx.kind == "flat"
    idx, x = _index("hnsw", n=2000)
    q = x[:50] + 0.05
    got = np.array([[r["id"] - 1000 for r in rows] for rows in idx.search_vectors(q, k=10)])
    want = _exact(x, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want, strict=True)])
    assert recall > 0.9


def _saved(tmp_path, n=50):
    idx, x = _index(n=n)
    d = idx.save(tmp_path / "idx")
    return d, json.loads((d / "index.json").read_text())


def test_damaged_indexes_give_one_line_errors(tmp_path):
    d, manifest = _saved(tmp_path)
    faiss_file = d / manifest["files"]["index"]["name"]
    items_file = d / manifest["files"]["items"]["name"]
    data, items = faiss_file.read_bytes(), items_file.read_bytes()

    def err() -> str:
        with pytest.raises(IndexFileError) as e:
            Index.open(d)
        assert "\n" not in str(e.value) and str(d) in str(e.value)
        return str(e.value)

    faiss_file.write_bytes(data[: len(data) // 2])
    assert "truncated" in err()
    mid = len(data) // 2
    faiss_file.write_bytes(data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :])
    assert "checksum" in err()
    faiss_file.write_bytes(data)
    items_file.unlink()
    assert "missing" in err()
    items_file.write_bytes(items)
    Index.open(d)  # whole again
    (d / "index.json").write_text("{not json")
    assert "damaged manifest" in err()
    (d / "index.json").write_text(json.dumps({**manifest, "format": 99}))
    assert "newer vestis" in err()
    (d / "index.json").write_text(json.dumps({**manifest, "count": 49}))
    assert "49 items" in err()
    (d / "index.json").write_text(json.dumps({**manifest, "embedding": {"dim": 8}}))
    assert "dimension" in err()
    # a damaged Faiss file whose checksum was "fixed" still gives an error, not a crash
    junk = b"garbage" * 100
    import hashlib

    faiss_file.write_bytes(junk)
    files = {
        **manifest["files"],
        "index": {"name": faiss_file.name, "bytes": len(junk), "sha1": hashlib.sha1(junk).hexdigest()},
    }
    (d / "index.json").write_text(json.dumps({**manifest, "files": files}))
    assert "not a readable Faiss index" in err()
    with pytest.raises(IndexFileError, match="no such index"):
        Index.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexFileError, match="not a vestis index"):
        Index.open(tmp_path / "empty")


def test_save_refuses_a_foreign_directory_and_dimension_mismatch(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    idx, x = _index(n=20)
    with pytest.raises(ValueError, match="not a vestis index"):
        idx.save(tmp_path / "other")
    with pytest.raises(ValueError, match="dimension"):
        idx.search_vectors(np.ones((1, D + 1), np.float32))


class _FakeRunner:
    def __init__(self, fp, dim=D):
        self.fingerprint, self.num_features, self.precision = fp, dim, "fp32"


class _FakeModel:
    def __init__(self, fp, dim=D):
        self.runner, self.embedding_dim, self.source, self.card = _FakeRunner(fp, dim), dim, "other", {}


def test_another_models_queries_are_refused():
    idx, _ = _index(n=20)
    check_model(idx, _FakeModel("fp-test"))
    with pytest.raises(ModelMismatch, match="rebuild the index"):
        check_model(idx, _FakeModel("fp-other"))
    with pytest.raises(ModelMismatch):
        idx.search(["a.jpg"], model=_FakeModel("fp-other"))
