"""`vestis evaluate` on a multi-head catalogue run (tiny backbone, synthetic CSV, year split): summary lines,
unseen test classes scored apart, the hierarchy section; `vestis predict --consistent`."""

from __future__ import annotations

import json

import pytest

import vestis
from tests.conftest import train_tiny
from tests.evaluate.catalogue import make_catalogue
from vestis.cli import main
from vestis.data import load_dataset
from vestis.data.hierarchy import learn_hierarchy
from vestis.evaluate.confusion import read_confusion_csv

HEADS = "articleType,subCategory,masterCategory,gender"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalogue")
    csv = make_catalogue(root)
    out = root / "run"
    rc = train_tiny(
        csv, out, root / "cache", "--images", str(root / "images"), "--label", HEADS, "--split", "year:even"
    )
    assert rc == 0
    return out


def test_evaluate_multi_head_catalogue(run, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "test", "--cache-dir", str(run.parent / "cache")]) == 0
    out = capsys.readouterr().out.splitlines()
    tail = out[-5:]  # one summary line per attribute, then the hierarchy line
    for line, head in zip(tail, HEADS.split(","), strict=False):
        assert line.startswith(f"test · {head}") and "top-1" in line and "macro-F1" in line
    assert "unseen in training" in tail[0] and tail[4].startswith("hierarchy articleType > subCategory")

    ev = run / "eval-test"
    m = json.loads((ev / "metrics.json").read_text())
    # 6 test rows per article type (5 known types) + 3 Caps rows the model never saw
    assert m["heads"]["articleType"]["n"] == 30 and m["heads"]["masterCategory"]["n"] == 33
    u = m["unseen"]["articleType"]
    assert u["n"] == 3 and u["labels"] == {"Caps": 3} and sum(p["count"] for p in u["predicted"]) == 3
    assert u["parent"]["head"] == "subCategory" and u["parent"]["n"] == 3
    assert m["unseen"]["subCategory"]["labels"] == {"Headwear": 3} and "masterCategory" not in m["unseen"]
    assert m["heads"]["gender"]["n"] < 33  # missing genders: not scored, counted in a note
    assert any("without a gender label" in n for n in m["notes"])

    h = m["hierarchy"]
    assert h["chain"] == ["articleType", "subCategory", "masterCategory"]
    assert h["source"] in ("model card", "learned from the run's training split")
    assert h["pairs"][1]["exceptions"] == 1  # the Belts row filed under Apparel
    assert h["plain"]["n"] == 33 and h["consistent"]["inconsistent"] == 0
    assert set(h["heads"]) == {"articleType", "subCategory", "masterCategory"}

    names, cm = read_confusion_csv(ev / "confusion_articleType.csv")
    assert cm.tolist() == m["heads"]["articleType"]["confusion"] and len(names) == 5
    md = (ev / "report.md").read_text()
    for needle in (
        "## Summary",
        "## Hierarchy",
        "Labels not seen in training (3 images, 1 labels)",
        "| Caps | 3 |",
    ):
        assert needle in md, needle


def test_evaluate_uses_the_stored_table(run, tmp_path):
    card = json.loads((run / "config.json").read_text())
    card.setdefault("train_config", {})["hierarchy"] = None  # trained, and nothing implied
    (run / "config.json").write_text(json.dumps(card))
    try:
        args = ["evaluate", str(run), "--out", str(tmp_path / "ev"), "--quiet"]
        assert main([*args, "--cache-dir", str(run.parent / "cache")]) == 0
    finally:
        del card["train_config"]["hierarchy"]
        (run / "config.json").write_text(json.dumps(card))
    h = json.loads((tmp_path / "ev" / "metrics.json").read_text())["hierarchy"]
    assert h == {"source": "model card", "chain": [], "note": "no head implies another in the training data"}


def test_predict_consistent_keeps_the_json_shape(run, capsys):
    images = sorted((run.parent / "images").glob("*.jpg"))[:12]
    args = ["predict", *map(str, images), "--model", str(run), "--json", "--workers", "0", "--top-k", "2"]
    capsys.readouterr()
    assert main(args) == 0
    plain = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    card = json.loads((run / "config.json").read_text())
    stored = (card.get("train_config") or {}).get("hierarchy")
    if not stored:  # what the trainers store: the table learned from the training split
        ds = load_dataset(
            run.parent / "styles.csv",
            images=run.parent / "images",
            labels=HEADS.split(","),
            split="year:even",
        )
        card.setdefault("train_config", {})["hierarchy"] = learn_hierarchy(
            ds.split("train"), HEADS.split(",")
        )
        with pytest.warns(UserWarning, match="no label hierarchy"):
            vestis.load(run).predict(str(images[0]), consistent=True)
        (run / "config.json").write_text(json.dumps(card))
    try:
        assert main([*args, "--consistent"]) == 0
    finally:
        if not stored:
            del card["train_config"]["hierarchy"]
            (run / "config.json").write_text(json.dumps(card))
    joint = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(plain) == len(joint) == 12
    for a, b in zip(plain, joint, strict=True):
        assert set(a) == set(b) == {"input", "predictions"} and a["input"] == b["input"]
        assert list(a["predictions"]) == list(b["predictions"]) == HEADS.split(",")
        for head in a["predictions"]:
            assert len(b["predictions"][head]) == 2 and set(b["predictions"][head][0]) == {"label", "score"}
        assert a["predictions"]["gender"] == b["predictions"]["gender"]  # outside the chain: unchanged
        top = {h: b["predictions"][h][0]["label"] for h in ("articleType", "subCategory", "masterCategory")}
        tree = {
            "Tshirts": "Topwear",
            "Shirts": "Topwear",
            "Jeans": "Bottomwear",
            "Watches": "Watches",
            "Belts": "Belts",
        }
        assert top["subCategory"] == tree[top["articleType"]]
        assert top["masterCategory"] == (
            "Apparel" if top["subCategory"] in ("Topwear", "Bottomwear") else "Accessories"
        )
