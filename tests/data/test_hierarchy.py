"""Label hierarchy: learned from a synthetic multi-column catalogue, counted, and decoded jointly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vestis.data.catalog import read_catalog
from vestis.data.hierarchy import consistency, consistent_decode, learn_hierarchy
from vestis.data.types import Sample

# articleType -> subCategory -> masterCategory, as in the real catalogue
TREE = {
    "Tshirts": ("Topwear", "Apparel"),
    "Shirts": ("Topwear", "Apparel"),
    "Jeans": ("Bottomwear", "Apparel"),
    "Shorts": ("Bottomwear", "Apparel"),
    "Watches": ("Watches", "Accessories"),
    "Belts": ("Belts", "Accessories"),
    "Sandals": ("Sandal", "Footwear"),
}
HEADS = ["gender", "masterCategory", "subCategory", "articleType", "season"]


def catalogue(n: int = 400, seed: int = 0, missing: float = 0.05) -> list[Sample]:
    """Seeded rows: the tree above, gender/season independent of it, some values missing."""
    rng = np.random.default_rng(seed)
    arts = sorted(TREE)
    out = []
    for i in range(n):
        a = arts[rng.integers(len(arts))]
        sub, master = TREE[a]
        labels = {
            "gender": ["Men", "Women"][rng.integers(2)],
            "masterCategory": master,
            "subCategory": sub,
            "articleType": a,
            "season": ["Summer", "Winter", "Fall"][rng.integers(3)],
        }
        for h in HEADS:
            if rng.random() < missing:
                labels[h] = None
        out.append(Sample(path=f"{i}.jpg", labels=labels, split="train"))
    return out


def test_learns_the_chain_with_its_exception():
    samples = catalogue()
    # one inconsistent row (a belt filed under Apparel): an exception, not a second combination
    samples.append(
        Sample("odd.jpg", {"articleType": "Belts", "subCategory": "Belts", "masterCategory": "Apparel"})
    )
    table = learn_hierarchy(samples, HEADS)
    assert table["chain"] == ["articleType", "subCategory", "masterCategory"]
    assert sorted(map(tuple, table["combos"])) == sorted((a, *sm) for a, sm in TREE.items())
    assert table["pairs"][1] == {
        "fine": "subCategory",
        "coarse": "masterCategory",
        "rows": table["pairs"][1]["rows"],
        "exceptions": 1,
    }
    assert table["pairs"][0]["exceptions"] == 0
    by_art = dict(zip((c[0] for c in table["combos"]), table["counts"], strict=True))
    assert by_art["Belts"] == sum(s.labels.get("articleType") == "Belts" for s in samples)
    assert json.loads(json.dumps(table)) == table  # what the model card stores


def test_no_implication_is_none_and_too_many_exceptions_break_it():
    rng = np.random.default_rng(1)
    free = [Sample(f"{i}", {"a": str(rng.integers(6)), "b": str(rng.integers(2))}) for i in range(300)]
    assert learn_hierarchy(free, ["a", "b"]) is None
    samples = catalogue(200)
    for i in range(10):  # 5 % of the rows break subCategory -> masterCategory
        samples.append(Sample(f"x{i}", {"subCategory": "Watches", "masterCategory": "Footwear"}))
    table = learn_hierarchy(samples, HEADS)
    assert len(table["chain"]) == 2  # articleType -> one of the two; subCategory -> masterCategory broke
    assert learn_hierarchy(samples, HEADS, max_exceptions=0.1)["chain"][-1] == "masterCategory"
    # a handful of rows with every value seen once implies nothing
    assert learn_hierarchy(catalogue(200)[:5], ["articleType", "masterCategory"]) is None


def test_from_a_catalogue_csv_with_missing_values(tmp_path):
    rng = np.random.default_rng(2)
    arts = sorted(TREE)
    lines = [
        "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName"
    ]
    for i in range(120):
        a = arts[i % len(arts)]
        sub, master = TREE[a]
        sub = "" if rng.random() < 0.1 else sub
        lines.append(f"{i},Men,{master},{sub},{a},Blue,Summer,2012,Casual,Item {i}")
    (tmp_path / "styles.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "images").mkdir()
    for i in range(120):
        (tmp_path / "images" / f"{i}.jpg").write_bytes(b"")
    ds = read_catalog(tmp_path / "styles.csv", labels=["articleType", "subCategory", "masterCategory"])
    assert any(s.labels["subCategory"] is None for s in ds.samples)
    table = learn_hierarchy(ds.samples, ds.heads)
    assert table["chain"] == ["articleType", "subCategory", "masterCategory"]
    assert len(table["combos"]) == len(TREE)


def _probs(rows: list[dict[str, float]], classes: list[str]) -> np.ndarray:
    p = np.full((len(rows), len(classes)), 0.01)
    for i, r in enumerate(rows):
        for c, v in r.items():
            p[i, classes.index(c)] = v
    return p / p.sum(axis=1, keepdims=True)


def test_consistent_decoding_fixes_an_inconsistent_prediction():
    table = learn_hierarchy(catalogue(), HEADS)
    classes = {
        "articleType": sorted(TREE),
        "subCategory": sorted({s for s, _ in TREE.values()}),
        "masterCategory": sorted({m for _, m in TREE.values()}),
        "gender": ["Men", "Women"],
    }
    # row 0: sure it is a watch, but master leans Apparel -> the joint answer is Watches/Watches/Accessories
    # row 1: already consistent (Jeans/Bottomwear/Apparel) and stays as it is
    probs = {
        "articleType": _probs([{"Watches": 0.9}, {"Jeans": 0.8}], classes["articleType"]),
        "subCategory": _probs(
            [{"Topwear": 0.5, "Watches": 0.4}, {"Bottomwear": 0.9}], classes["subCategory"]
        ),
        "masterCategory": _probs(
            [{"Apparel": 0.6, "Accessories": 0.35}, {"Apparel": 0.9}], classes["masterCategory"]
        ),
        "gender": _probs([{"Men": 0.7}, {"Women": 0.7}], classes["gender"]),
    }
    plain = {h: [classes[h][k] for k in p.argmax(1)] for h, p in probs.items()}
    assert consistency(plain, table)["inconsistent"] == 1
    before = {h: p.copy() for h, p in probs.items()}
    dec = consistent_decode(probs, classes, table)
    for h in probs:
        np.testing.assert_array_equal(probs[h], before[h])  # the input is left alone
        np.testing.assert_allclose(dec[h].sum(axis=1), 1.0)
    got = {h: [classes[h][k] for k in p.argmax(1)] for h, p in dec.items()}
    assert [got[h][0] for h in ("articleType", "subCategory", "masterCategory")] == [
        "Watches",
        "Watches",
        "Accessories",
    ]
    assert [got[h][1] for h in ("articleType", "subCategory", "masterCategory")] == [
        "Jeans",
        "Bottomwear",
        "Apparel",
    ]
    np.testing.assert_array_equal(dec["gender"], probs["gender"])
    result = consistency(got, table)
    assert result["inconsistent"] == 0 and result["n"] == 2


def test_decoding_random_probabilities_is_always_consistent():
    table = learn_hierarchy(catalogue(), HEADS)
    rng = np.random.default_rng(3)
    classes = {
        "articleType": sorted(TREE) + ["Caps"],  # a class the table knows nothing about: unconstrained
        "subCategory": sorted({s for s, _ in TREE.values()}),
        "masterCategory": sorted({m for _, m in TREE.values()}),
    }
    probs = {h: rng.dirichlet(np.full(len(c), 0.3), size=300) for h, c in classes.items()}
    plain = {h: [classes[h][k] for k in p.argmax(1)] for h, p in probs.items()}
    dec = consistent_decode(probs, classes, table)
    got = {h: [classes[h][k] for k in p.argmax(1)] for h, p in dec.items()}
    before, after = consistency(plain, table), consistency(got, table)
    assert before["inconsistent"] > 100 and after["inconsistent"] == 0
    assert before["pairs"]["articleType -> subCategory"] > 0
    assert "Caps" in got["articleType"]  # still reachable
    # the finest head's result is the joint posterior over the combinations: ranks agree with the product
    i = 0
    k = classes["articleType"].index(got["articleType"][i])
    assert dec["articleType"][i, k] == pytest.approx(dec["articleType"][i].max())


def test_a_table_that_does_not_apply_changes_nothing():
    classes = {"articleType": sorted(TREE), "gender": ["Men", "Women"]}
    probs = {h: np.full((2, len(c)), 1 / len(c)) for h, c in classes.items()}
    table = learn_hierarchy(catalogue(), HEADS)
    for t in (None, table):  # no table; a table with one of its heads here
        dec = consistent_decode(probs, classes, t)
        for h in probs:
            np.testing.assert_array_equal(dec[h], probs[h])
    assert consistency({"articleType": ["Jeans"]}, table)["n"] == 0
    assert consistency({"articleType": ["Jeans"], "subCategory": [None]}, table)["n"] == 0
