"""Prediction results written as JSON lines, CSV and a table."""

from __future__ import annotations

import csv
import io
import json

import pytest

from tests.predict.helpers import run
from vestis.predict import write_results


@pytest.fixture
def results(model, files, tmp_path):
    return run(model, [files["good0"], tmp_path / "missing.png", files["good1"]], top_k=2)


def test_write_json_lines(results):
    out = io.StringIO()
    assert write_results(iter(results), "json", out) == (2, 1)
    lines = out.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == results


def test_write_csv(results, tmp_path):
    path = tmp_path / "out.csv"
    out = io.StringIO()
    assert write_results(results, "json", out, csv_path=path) == (2, 1)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["input", "head", "rank", "label", "score", "error"]
    assert len(rows) == 2 * (2 + 2) + 1
    first = results[0]["predictions"]
    assert rows[0] == {
        "input": results[0]["input"],
        "head": "label",
        "rank": "1",
        "label": first["label"][0]["label"],
        "score": str(first["label"][0]["score"]),
        "error": "",
    }
    assert [r["head"] for r in rows[:4]] == ["label", "label", "colour", "colour"]
    assert [r["rank"] for r in rows[:4]] == ["1", "2", "1", "2"]
    assert rows[4] == {
        "input": results[1]["input"],
        "head": "",
        "rank": "",
        "label": "",
        "score": "",
        "error": "file not found",
    }
    assert {r["input"] for r in rows[5:]} == {results[2]["input"]}


def test_write_table(results):
    out = io.StringIO()
    assert write_results(results, "table", out) == (2, 1)
    text = out.getvalue()
    assert "ERROR: file not found" in text
    assert all(r["input"] in text for r in results)
    label = results[0]["predictions"]["label"][0]
    assert f"{label['label']} {label['score']:.1%}" in text
    lines = text.splitlines()
    assert lines[0].split() == ["input", "head", "top", "predictions"]
    # aligned: every head column starts at the same offset
    col = lines[0].index("head")
    assert all(line[col:].startswith(("label", "colour", "ERROR")) for line in lines[1:])
    with pytest.raises(ValueError, match="unknown format"):
        write_results(results, "xml", out)
