"""`vestis index build/add/remove/evaluate`, `vestis search` and `vestis audit` on tiny images with the tiny
test backbone (seconds)."""

from __future__ import annotations

import csv
import json
import shutil
import threading
from pathlib import Path

import pytest

pytest.importorskip("faiss")
pytest.importorskip("sklearn")

from tests.conftest import COLOURS, make_image, stable_seed  # noqa: E402
from vestis.cli import main  # noqa: E402
from vestis.data.images import file_digest  # noqa: E402
from vestis.index import Index  # noqa: E402
from vestis.index.files import locked  # noqa: E402

MODEL = "backbone:test_tiny"


@pytest.fixture
def catalogue(tmp_path) -> Path:
    """cat.csv + images/: 36 items of 3 colour classes; 101 is a byte copy of 100 with another label, 135 is a
    red image labelled blue."""
    rows = [["id", "gender", "articleType", "productDisplayName"]]
    names = list(COLOURS)
    for i in range(36):
        c = names[i % 3]
        make_image(tmp_path / "images" / f"{100 + i}.jpg", COLOURS[c], seed=stable_seed("cat", i))
        rows.append([str(100 + i), "Women" if i % 2 else "Men", c, f"{c} thing {i}"])
    shutil.copy(tmp_path / "images" / "100.jpg", tmp_path / "images" / "101.jpg")  # 100 is red, 101 green
    make_image(tmp_path / "images" / "135.jpg", COLOURS["red"], seed=1)
    rows[-1][2] = "blue"
    with open(tmp_path / "cat.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return tmp_path / "cat.csv"


def _build(catalogue, tmp_path, *extra) -> Path:
    out = tmp_path / "idx"
    args = ["index", "build", str(catalogue), "--model", MODEL, "--out", str(out), "--quiet"]
    assert main([*args, "--cache-dir", str(tmp_path / "cache"), *extra]) == 0
    return out


def test_build_search_json_filters_and_bad_inputs(catalogue, tmp_path, capsys):
    idx = _build(catalogue, tmp_path)
    report = json.loads(capsys.readouterr().out)
    assert report["items"] == 36 and report["kind"] == "flat" and report["model"]["source"] == MODEL
    manifest = json.loads((idx / "index.json").read_text())
    assert manifest["embedding"]["layer"].startswith("pooled backbone features")
    assert manifest["model"]["fingerprint"] and manifest["model"]["backbone"] == "test_tiny"
    img = tmp_path / "images"
    code = main(
        [
            "search",
            str(idx),
            str(img / "102.jpg"),
            str(tmp_path / "missing.jpg"),
            "--k",
            "4",
            "--where",
            "gender=Men",
            "--json",
        ]
    )
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert code == 1 and len(lines) == 2
    assert lines[0]["input"] == str(img / "102.jpg") and len(lines[0]["results"]) == 4
    r = lines[0]["results"][0]
    assert (
        list(r)[:3] == ["id", "path", "score"]
        and r["id"] == 102
        and r["score"] == pytest.approx(1.0, abs=1e-4)
    )
    assert all(x["gender"] == "Men" for x in lines[0]["results"])
    assert set(r) == {"id", "path", "score", "gender", "articleType", "productDisplayName"}
    assert lines[1] == {"input": str(tmp_path / "missing.jpg"), "error": "file not found"}
    # a folder and a glob: one query per image; the table by default
    assert main(["search", str(idx), str(img), "--k", "2", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 36
    assert (
        main(["search", str(idx), str(img / "10*.jpg"), "--k", "2", "--where", "articleType=red|blue"]) == 0
    )
    table = capsys.readouterr().out
    assert "score" in table and "articleType" in table and "green" not in table.replace("green thing", "")
    assert main(["search", str(idx), str(img / "102.jpg"), "--where", "colour=red"]) == 2
    assert "no column 'colour'" in capsys.readouterr().err


def test_add_remove_keep_ids_and_evaluate(catalogue, tmp_path, capsys):
    idx = _build(catalogue, tmp_path)
    capsys.readouterr()
    new = tmp_path / "new"
    for i in range(3):
        make_image(new / "shop" / f"n{i}.png", COLOURS["blue"], seed=stable_seed("new", i))
    (new / "broken.jpg").write_bytes(b"not an image")
    assert main(["index", "add", str(idx), str(new), "--cache-dir", str(tmp_path / "cache"), "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["added"] == 3 and out["ids"] == [136, 137, 138] and out["items"] == 39 and out["skipped"] == 1
    index = Index.open(idx)
    assert index.item(137)["folder"] == "shop" and index.item(103)["articleType"] == "red"
    assert str(new / "broken.jpg") not in index.paths and len(index.digests) == len(index.paths) == 39
    for path, digest in zip(index.paths, index.digests, strict=True):  # built and added: each its own file's
        assert digest == file_digest(Path(path).read_bytes()), path
    assert main(["index", "remove", str(idx), "137", "100"]) == 0
    assert json.loads(capsys.readouterr().out) == {"removed": 2, "ids": [100, 137], "items": 37}
    assert main(["index", "remove", str(idx), "99999"]) == 2
    assert "no item with id 99999" in capsys.readouterr().err
    index = Index.open(idx)
    assert index.item(103)["articleType"] == "red" and len(index) == 37
    held, release = threading.Event(), threading.Event()

    def hold():  # another writer holding the index (another thread: another lock holder)
        with locked(idx, what="index add"):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(30)
    try:
        assert main(["index", "remove", str(idx), "103", "--lock-timeout", "0"]) == 2
    finally:
        release.set()
        holder.join(30)
    err = capsys.readouterr().err
    assert "another process is writing this index (pid" in err and len(err.strip().splitlines()) == 1
    assert 103 in Index.open(idx).ids.tolist()
    args = ["index", "evaluate", str(idx), "--label", "articleType", "--k", "5", "--json"]
    assert main([*args, "--compare", MODEL, "--cache-dir", str(tmp_path / "cache")]) == 0
    row, same = (json.loads(x) for x in capsys.readouterr().out.splitlines())
    assert same["model"] == MODEL and {k: v for k, v in same.items() if k != "model"} == {
        k: v for k, v in row.items() if k != "model"
    }  # the same model re-embedding the same items: the same figures on the same queries
    assert (
        row["queries"] == 35 and row["precision@5"] > 0.8 and 0 < row["recall@5"] <= 1 and row["mAP@5"] > 0.8
    )


def test_search_refuses_another_model_and_a_damaged_index(catalogue, tmp_path, capsys):
    idx = _build(catalogue, tmp_path)
    capsys.readouterr()
    q = str(tmp_path / "images" / "102.jpg")
    assert main(["search", str(idx), q, "--model", "backbone:test_tiny"]) == 0
    capsys.readouterr()
    manifest = json.loads((idx / "index.json").read_text())
    manifest["model"]["fingerprint"] = "0123456789abcdef"
    (idx / "index.json").write_text(json.dumps(manifest))
    assert main(["search", str(idx), q]) == 2
    err = capsys.readouterr().err
    assert "computes other features" in err and len(err.strip().splitlines()) == 1
    data = next(idx.glob("index-*.faiss"))
    data.write_bytes(data.read_bytes()[:100])
    assert main(["search", str(idx), q]) == 2
    err = capsys.readouterr().err
    assert "truncated" in err and len(err.strip().splitlines()) == 1
    assert main(["index", "build", str(catalogue), "--out", str(catalogue)]) == 2


def test_audit_finds_duplicates_conflicts_and_the_mislabelled_item(catalogue, tmp_path, capsys):
    out = tmp_path / "audit"
    code = main(
        [
            "audit",
            str(catalogue),
            "--label",
            "articleType",
            "--model",
            MODEL,
            "--out",
            str(out),
            "--folds",
            "3",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--quiet",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["exact_duplicate_groups"] == 1 and summary["exact_groups_with_conflicting_labels"] == 1
    for name in ("exact_duplicates", "near_duplicates", "label_conflicts", "label_errors", "outliers"):
        assert (out / f"{name}.csv").is_file()
    with open(out / "exact_duplicates.csv") as f:
        assert sorted(r["id"] for r in csv.DictReader(f)) == ["100", "101"]
    with open(out / "label_errors.csv") as f:
        errors = list(csv.DictReader(f))
    assert errors and "135" in [r["id"] for r in errors[:3]]
    top = next(r for r in errors if r["id"] == "135")
    assert top["given"] == "blue" and top["suggested"] == "red" and float(top["margin"]) > 0
    page = (out / "index.html").read_text()
    assert "data:image/jpeg;base64," in page and "Likely label errors" in page
