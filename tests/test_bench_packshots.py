"""benchmarks/bench_packshots.py: which catalogue rows it scores, and its scores on a tiny catalogue whose
classes a tiny model reads by colour."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import load_benchmark, make_image, stable_seed, train_tiny

for _name in ("common", "shifts", "bench_robustness"):  # the scripts it imports, beside it
    load_benchmark(_name)
bench = load_benchmark("bench_packshots")

COLOUR = {"Dresses": (220, 30, 30), "Shirts": (30, 200, 30), "Tshirts": (30, 30, 220), "Tops": (200, 200, 0)}
# (articleType, gender, rows): Tops and Unisex are left out; Shirts has too few children's rows
ROWS = [
    ("Dresses", "Girls", 4),
    ("Dresses", "Women", 6),
    ("Tshirts", "Boys", 3),
    ("Tshirts", "Girls", 2),
    ("Tshirts", "Men", 8),
    ("Tshirts", "Unisex", 3),
    ("Shirts", "Boys", 1),
    ("Shirts", "Men", 5),
    ("Tops", "Girls", 5),
]


@pytest.fixture
def catalogue(tmp_path) -> Path:
    root = tmp_path / "cat"
    lines, k = ["id,gender,masterCategory,articleType,year"], 0
    for article, gender, n in ROWS:
        for _ in range(n):
            k += 1
            lines.append(f"{k},{gender},Apparel,{article},2012")
            make_image(root / "images" / f"{k}.jpg", COLOUR[article], seed=stable_seed("cat", k))
    (root / "images" / "1.jpg").write_bytes(
        b"\xff\xd8\xff\xe0 truncated"
    )  # a girl's dress that cannot be read
    (root / "styles.csv").write_text("\n".join(lines) + "\n")
    return root


def gender_and_class(rows):
    return dict(Counter((s.meta["gender"], c) for s, c in rows))


def test_rows_chosen(catalogue):
    from vestis.data.catalog import read_catalog

    samples = read_catalog(catalogue / "styles.csv", labels=("articleType",)).samples
    got = bench.select_rows(samples, adults_per_class=5, min_kids=2, seed=0)
    kids = gender_and_class(got["children"])
    assert kids == {("Girls", "dress"): 4, ("Boys", "t-shirt"): 3, ("Girls", "t-shirt"): 2}
    adults = gender_and_class(got["adults"])
    assert adults == {("Women", "dress"): 5, ("Men", "t-shirt"): 5}  # capped; no shirts, Unisex or Tops
    assert bench.select_rows(samples, 5, 2, seed=0) == got  # seeded
    assert bench.select_rows(samples, 5, 2, seed=1) != got
    assert bench.select_rows(samples, 5, 6, seed=0) == {"children": [], "adults": []}


def test_a_share_of_childrens_rows(catalogue):
    from vestis.data.catalog import read_catalog

    samples = read_catalog(catalogue / "styles.csv", labels=("articleType",)).samples
    every = bench.select_rows(samples, adults_per_class=5, min_kids=2, seed=0)
    half = bench.select_rows(samples, 5, 2, seed=0, kids_share=0.5)
    assert half["adults"] == every["adults"]  # the adults' rows do not depend on the share
    assert Counter(c for _, c in half["children"]) == {"dress": 2, "t-shirt": 2}  # of 4 and 5
    assert {id(s) for s, _ in half["children"]} < {id(s) for s, _ in every["children"]}
    assert bench.select_rows(samples, 5, 2, seed=0, kids_share=0.5) == half  # seeded
    with pytest.raises(ValueError, match="kids_share"):
        bench.select_rows(samples, 5, 2, seed=0, kids_share=0)


def test_group_scores():
    classes = ["dress", "shirt", "t-shirt"]
    probs = np.eye(3)[[0, 2, 2, 1, 2]]  # dress, t-shirt, t-shirt, shirt, t-shirt
    s = bench.group_scores(probs, ["dress", "dress", "t-shirt", "t-shirt", "t-shirt"], classes)
    assert s["n"] == 5 and s["top1"] == pytest.approx(3 / 5)
    assert s["recall"] == {"dress": 0.5, "t-shirt": pytest.approx(2 / 3)}
    assert s["macro_recall"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert s["read_as"] == {"dress": {"dress": 1, "t-shirt": 1}, "t-shirt": {"t-shirt": 2, "shirt": 1}}


def test_scores_a_model_on_both_groups(catalogue, tmp_path, capsys):
    photos = tmp_path / "photos"
    for split, n in (("train", 8), ("validation", 3), ("test", 3)):
        for article, c in (("Dresses", "dress"), ("Shirts", "shirt"), ("Tshirts", "t-shirt")):
            for i in range(n):
                make_image(photos / split / c / f"{i}.png", COLOUR[article], seed=stable_seed(split, c, i))
    run = tmp_path / "run"
    assert train_tiny(photos, run, tmp_path / "cache") == 0
    out = tmp_path / "r.json"
    args = ["--catalogue", str(catalogue), "--model", f"tiny={run}", "--model", f"again={run}"]
    args += ["--ensemble", "both=tiny,again", "--adults-per-class", "5"]
    assert bench.main([*args, "--min-kids", "2", "--json", str(out), "--cache", str(tmp_path / "c")]) == 0
    result = json.loads(out.read_text())
    kids, adults = result["groups"]["children"], result["groups"]["adults"]
    assert kids["unreadable"] == 1 and "1.jpg" in kids["unreadable_examples"][0]
    assert kids["n"] == 8 and kids["per_class"] == {"dress": 3, "t-shirt": 5}
    assert adults["n"] == 10 and adults["unreadable"] == 0
    tiny = kids["models"]["tiny"]
    assert tiny["top1"] == 1.0 and tiny["read_as"] == {
        "dress": {"dress": 3},
        "t-shirt": {"t-shirt": 5},
    }  # colours: trivially read
    assert result["gap"]["tiny"] == {"top1": 0.0, "macro_recall": 0.0}
    for group in (kids, adults):  # a model's ensemble with itself scores as it does
        both, alone = group["models"]["both"], group["models"]["tiny"]
        assert {k: v for k, v in alone.items() if k != "seconds"} == both
    printed = capsys.readouterr().out
    assert "| tiny | children | 8 | 1.0000 |" in printed and "tiny, children, misread as: " in printed


def test_onmodel_folder_adds_unscored_on_model_rows(catalogue, tmp_path):
    folder = load_benchmark("onmodel_folder")
    photos = tmp_path / "photos"
    for split in ("train", "validation", "test"):
        make_image(photos / split / "dress" / "p.png", COLOUR["Dresses"], seed=stable_seed(split))
    scoring = {"adults_per_class": 2, "min_kids": 2, "seed": 0}  # bench_packshots.py's settings
    out = tmp_path / "mixed"
    added = folder.build(photos, catalogue, out, per_class=3, seed=1, bench=scoring)
    assert added == {
        "adults": {"dress": 3, "t-shirt": 3}
    }  # Women's dresses, Men's t-shirts: 6 and 8, less 2 scored each
    from vestis.data.catalog import read_catalog

    bench_rows = bench.select_rows(
        read_catalog(catalogue / "styles.csv", labels=("articleType",)).samples, 2, 2, 0
    )
    scored = {Path(s.path).name for rows in bench_rows.values() for s, _ in rows}
    extra = sorted(p.name for p in (out / "train").rglob("catalogue-*"))
    assert len(extra) == 6 and not {n.removeprefix("catalogue-") for n in extra} & scored
    assert all(p.is_symlink() for p in out.rglob("*") if p.is_file())
    assert sorted(p.name for p in (out / "validation").rglob("*.png")) == ["p.png"]  # only train/ gains
    assert folder.build(photos, catalogue, tmp_path / "again", 3, 1, scoring) == added
    assert sorted(p.name for p in (tmp_path / "again" / "train").rglob("catalogue-*")) == extra  # seeded
    with pytest.raises(SystemExit, match="exists"):
        folder.build(photos, catalogue, out, 3, 1, scoring)
    # children's rows too, when the benchmark scores only a share of them
    scoring |= {"kids_share": 0.5}
    added = folder.build(photos, catalogue, tmp_path / "kids", 3, 1, scoring, kids_per_class=5)
    assert added == {"adults": {"dress": 3, "t-shirt": 3}, "children": {"dress": 2, "t-shirt": 3}}
    samples = read_catalog(catalogue / "styles.csv", labels=("articleType",)).samples
    scored = {
        Path(s.path).name for rows in bench.select_rows(samples, 2, 2, 0, 0.5).values() for s, _ in rows
    }
    extra = {p.name.removeprefix("catalogue-") for p in (tmp_path / "kids" / "train").rglob("catalogue-*")}
    assert len(extra) == 11 and not extra & scored
