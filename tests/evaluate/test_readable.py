"""Reports per attribute at many classes: summary table, top confusions, full CSV, a PNG of the frequent
classes; unseen labels and the hierarchy section from synthetic probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vestis.data.hierarchy import learn_hierarchy
from vestis.data.types import Sample
from vestis.evaluate import write_report
from vestis.evaluate.confusion import frequent_classes, read_confusion_csv, top_confusions
from vestis.evaluate.consistency import hierarchy_line, hierarchy_report, hierarchy_table
from vestis.evaluate.summary import summary_lines
from vestis.evaluate.unseen import unseen_report


def noisy(y: np.ndarray, n_classes: int, right: float, seed: int) -> np.ndarray:
    """Probabilities whose argmax is y with probability ``right`` (else a random class)."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(n_classes), size=len(y)) * 0.5
    hit = np.where(rng.random(len(y)) < right, y, rng.integers(n_classes, size=len(y)))
    p[np.arange(len(y)), hit] += 1.0
    return p / p.sum(axis=1, keepdims=True)


def test_confusion_helpers():
    cm = np.array([[5, 3, 0], [1, 4, 0], [0, 6, 2]])
    top = top_confusions(cm, ["a", "b", "c"], k=2)
    assert top == [
        {"true": "c", "pred": "b", "count": 6, "share": 0.75},
        {"true": "a", "pred": "b", "count": 3, "share": 3 / 8},
    ]
    assert frequent_classes(cm, limit=3) is None
    assert frequent_classes(cm, limit=2) == [0, 2]  # supports 8, 5, 8


def test_report_at_140_classes(tmp_path):
    rng = np.random.default_rng(0)
    C, n = 140, 3000
    names = [f"type {i:03d}" for i in range(C)]
    y = np.minimum(rng.zipf(1.3, size=n) - 1, C - 1)
    probs = noisy(y, C, 0.7, seed=1)
    colour_y = rng.integers(3, size=n)
    results = {
        "articleType": {
            "class_names": names,
            "paths": [f"{i}.jpg" for i in range(n)],
            "y_true": y,
            "probs": probs,
        },
        "gender": {
            "class_names": ["Men", "Unisex", "Women"],
            "paths": [f"{i}.jpg" for i in range(n)],
            "y_true": colour_y,
            "probs": noisy(colour_y, 3, 0.8, seed=2),
        },
    }
    res = write_report(tmp_path, results, "test")
    names_csv, cm = read_confusion_csv(tmp_path / "confusion_articleType.csv")
    assert names_csv == names and cm.tolist() == res["heads"]["articleType"]["confusion"] and cm.sum() == n
    top = res["heads"]["articleType"]["top_confusions"]
    assert len(top) == 20 and top[0]["count"] >= top[-1]["count"] > 0
    assert all(t["true"] != t["pred"] for t in top)
    md = (tmp_path / "report.md").read_text()
    assert "the 30 most frequent of 140 classes" in md and "[confusion_articleType.csv]" in md
    assert f"| {top[0]['true']} | {top[0]['pred']} | {top[0]['count']} |" in md
    assert (tmp_path / "confusion_articleType.png").stat().st_size > 1000
    assert "most frequent" not in md.split("## Head `gender`")[1]  # 3 classes: all drawn
    # the summary: first thing in the report, top-5 only with more than 5 classes
    assert md.index("## Summary") < md.index("## Head")
    s = {r["head"]: r for r in res["summary"]}
    assert (
        s["articleType"]["classes"] == 140
        and s["articleType"]["top5"] == res["heads"]["articleType"]["top_k"]["5"]
    )
    assert s["gender"]["top5"] is None and s["gender"]["top1"] == res["heads"]["gender"]["top1"]
    lines = summary_lines(res["summary"], "test")
    assert len(lines) == 2 and "top-5" in lines[0] and "top-5" not in lines[1] and "macro-F1" in lines[1]


def test_unseen_labels_are_scored_apart(tmp_path):
    classes = ["Shirts", "Tshirts", "Watches"]
    labels = ["Caps", "Caps", "Hats", "Caps"]
    probs = np.array([[0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])
    parent = {
        "head": "subCategory",
        "implied": ["Topwear", "Topwear", "Watches", "Topwear"],
        "true": ["Headwear", "Headwear", None, "Topwear"],
    }
    u = unseen_report(labels, probs, classes, known_n=16, known_correct=12, parent=parent)
    assert u["n"] == 4 and u["labels"] == {"Caps": 3, "Hats": 1}
    assert u["predicted"][0] == {"label": "Tshirts", "count": 2, "share": 0.5}
    assert u["by_label"]["Caps"] == [
        {"label": "Tshirts", "count": 2, "share": 2 / 3},
        {"label": "Shirts", "count": 1, "share": 1 / 3},
    ]
    assert u["top1_all"] == pytest.approx(12 / 20) and u["mean_confidence"] == pytest.approx(0.725)
    assert u["parent"] == {"head": "subCategory", "n": 3, "top1": pytest.approx(1 / 3)}

    y = np.array([0, 1, 2, 1])
    results = {
        "articleType": {"class_names": classes, "paths": list("abcd"), "y_true": y, "probs": np.eye(3)[y]}
    }
    res = write_report(tmp_path, results, "test", unseen={"articleType": u})
    assert res["heads"]["articleType"]["n"] == 4  # the known-class metrics stay as they are
    assert res["unseen"]["articleType"]["labels"] == {"Caps": 3, "Hats": 1}
    assert res["summary"][0]["unseen"] == 4
    md = (tmp_path / "report.md").read_text()
    assert (
        "Labels not seen in training (4 images, 2 labels)" in md
        and "| Caps | 3 | Tshirts 2, Shirts 1 |" in md
    )


def catalogue_samples(n: int, seed: int) -> list[Sample]:
    tree = [
        ("Tshirts", "Topwear", "Apparel"),
        ("Shirts", "Topwear", "Apparel"),
        ("Jeans", "Bottomwear", "Apparel"),
        ("Watches", "Watches", "Accessories"),
        ("Belts", "Belts", "Accessories"),
    ]
    rng = np.random.default_rng(seed)
    heads = ("articleType", "subCategory", "masterCategory")
    return [Sample(f"{i}", dict(zip(heads, tree[rng.integers(len(tree))], strict=True))) for i in range(n)]


def test_hierarchy_section_counts_and_consistent_decoding(tmp_path):
    train = catalogue_samples(300, seed=0)
    table = learn_hierarchy(train, ["articleType", "subCategory", "masterCategory"])
    test = catalogue_samples(400, seed=1)
    test[0].labels["masterCategory"] = None  # a missing value
    classes = {h: sorted({s.labels[h] for s in train}) for h in table["chain"]}
    truth = {h: [s.labels[h] for s in test] for h in classes}
    index = {h: {c: k for k, c in enumerate(classes[h])} for h in classes}
    # independent noisy heads: many inconsistent predictions, which joint decoding repairs
    probs = {
        h: noisy(np.array([index[h][t] if t else 0 for t in truth[h]]), len(classes[h]), 0.6, seed=k)
        for k, h in enumerate(classes)
    }
    h = hierarchy_report(table, "model card", probs, classes, truth)
    assert h["chain"] == table["chain"] and h["plain"]["n"] == 400
    assert h["plain"]["inconsistent"] > 50 and h["consistent"]["inconsistent"] == 0
    assert h["labels"]["inconsistent"] == 0
    assert h["heads"]["masterCategory"]["n"] == 399
    for head, r in h["heads"].items():
        assert r["fixed"] > r["broken"], head  # on these heads, decoding jointly helps
        assert r["consistent"]["top1"] > r["plain"]["top1"]
    assert "inconsistent" in hierarchy_line(h)
    y = np.array([index["articleType"][t] for t in truth["articleType"]])
    paths = [str(i) for i in range(400)]
    results = {
        "articleType": {
            "class_names": classes["articleType"],
            "paths": paths,
            "y_true": y,
            "probs": probs["articleType"],
        }
    }
    res = write_report(tmp_path, results, "test", hierarchy=h)
    assert json.loads((tmp_path / "metrics.json").read_text())["hierarchy"]["plain"] == h["plain"]
    assert res["summary"][0]["top1_consistent"] == h["heads"]["articleType"]["consistent"]["top1"]
    md = (tmp_path / "report.md").read_text()
    assert "## Hierarchy" in md and f"**{h['plain']['inconsistent']} of 400**" in md


def test_hierarchy_table_from_the_card_or_learned():
    stored = {"chain": ["a", "b"], "combos": [["x", "y"]]}
    assert hierarchy_table({"train_config": {"hierarchy": stored}}, ["a", "b"]) == (stored, "model card")
    assert hierarchy_table({"train_config": {"hierarchy": None}}, ["a", "b"]) == (None, "model card")
    table, source = hierarchy_table({}, ["articleType", "masterCategory"], lambda: catalogue_samples(100, 0))
    assert table["chain"] == ["articleType", "masterCategory"] and source.startswith("learned")
    with pytest.raises(ValueError):
        hierarchy_table({}, ["a", "b"])
    assert hierarchy_report(None, "model card", {}, {}, {})["chain"] == []
