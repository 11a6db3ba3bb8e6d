"""The index on a sample of the shared catalogue with the bundled model (marked `integration`; skipped when
../shared is absent)."""

from __future__ import annotations

import csv
import json

import pytest

from tests.conftest import PRODUCTS, need
from vestis.cli import main

pytestmark = pytest.mark.integration
pytest.importorskip("faiss")


def test_index_a_catalogue_sample(tmp_path, capsys):
    root = need(PRODUCTS)
    with open(root / "styles.csv", newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [r for r in reader if len(r) == len(header) and (root / "images" / f"{r[0]}.jpg").is_file()][
            :500
        ]
    sample = tmp_path / "sample.csv"
    with open(sample, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    idx = tmp_path / "idx"
    assert (
        main(["index", "build", str(sample), "--images", str(root / "images"), "--out", str(idx), "--quiet"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["items"] == 500 and report["dim"] == 1280 and report["kind"] == "flat"
    query = root / "images" / f"{rows[0][0]}.jpg"
    assert (
        main(["search", str(idx), str(query), "--k", "5", "--json", "--where", f"gender={rows[0][1]}"]) == 0
    )
    line = json.loads(capsys.readouterr().out)
    results = line["results"]
    assert len(results) == 5 and results[0]["id"] == int(rows[0][0]) and results[0]["score"] > 0.999
    assert all(r["gender"] == rows[0][1] for r in results) and results[0]["articleType"] == rows[0][4]
    assert main(["index", "evaluate", str(idx), "--label", "articleType", "--json", "--queries", "0"]) == 0
    quality = json.loads(capsys.readouterr().out)
    assert quality["queries"] >= 450 and quality["precision@10"] > 0.4  # measured 0.48 (500 items)
