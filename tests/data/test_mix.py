"""vestis.data.mix and `vestis data mix`: a folder plus a catalogue's images mapped onto its classes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_colour_folder, make_image, stable_seed
from vestis.cli import main
from vestis.data import load_dataset
from vestis.data.catalog import read_catalog
from vestis.data.mix import add_rows, catalogue_pools, mix, parse_mapping, parse_where

COLOUR = {"dress": (220, 30, 30), "t-shirt": (30, 30, 220)}
# (id, articleType, gender): 5 is missing on disk, 6 is a class the mapping leaves out
ROWS = [
    (1, "Dresses", "Women"),
    (2, "Dresses", "Girls"),
    (3, "Tshirts", "Men"),
    (4, "Tshirts", "Boys"),
    (5, "Tshirts", "Men"),
    (6, "Tops", "Women"),
    (7, "Tshirts", "Men"),
]


@pytest.fixture
def photos(tmp_path) -> Path:
    return make_colour_folder(tmp_path / "photos", COLOUR, {"train": 2, "validation": 1, "test": 1})


@pytest.fixture
def catalogue(tmp_path) -> Path:
    root = tmp_path / "cat"
    lines = ["id,gender,articleType,year"]
    for i, article, gender in ROWS:
        lines.append(f"{i},{gender},{article},2012")
        if i != 5:
            colour = COLOUR["dress" if article == "Dresses" else "t-shirt"]
            make_image(root / "images" / f"{i}.jpg", colour, seed=stable_seed("cat", i))
    (root / "styles.csv").write_text("\n".join(lines) + "\nbroken,\n")
    return root / "styles.csv"


def test_parse_mapping_and_where(tmp_path):
    assert parse_mapping("Tshirts=t-shirt, Track Pants = pants;Jeans=pants") == {
        "Tshirts": "t-shirt",
        "Track Pants": "pants",
        "Jeans": "pants",
    }
    f = tmp_path / "map.json"
    long = ",".join(f"Type{k}=class{k}" for k in range(40))  # longer than a file name may be
    assert len(parse_mapping(long)) == 40
    f.write_text(json.dumps({"Dresses": "dress"}))
    assert parse_mapping(str(f)) == {"Dresses": "dress"}
    for bad in ("Tshirts", "Tshirts=", "=dress", ""):
        with pytest.raises(ValueError, match="mapping"):
            parse_mapping(bad)
    f.write_text("[1, 2]")
    with pytest.raises(ValueError, match="map.json"):
        parse_mapping(str(f))
    assert parse_where(["gender=Men, Women", "year=2012"]) == {"gender": ("Men", "Women"), "year": ("2012",)}
    with pytest.raises(ValueError, match="COLUMN=VALUE"):
        parse_where(["gender"])


def test_pools_filter_map_and_hold_out(catalogue):
    samples = read_catalog(catalogue).samples
    mapping = {"Dresses": "dress", "Tshirts": "t-shirt"}
    pools = catalogue_pools(samples, mapping, "articleType")
    assert {c: [Path(s.path).stem for s in rows] for c, rows in pools.items()} == {
        "dress": ["1", "2"],
        "t-shirt": ["3", "4", "7"],  # 5 has no image, Tops is not mapped
    }
    adults = catalogue_pools(
        samples, mapping, "articleType", {"gender": ("Men", "Women")}, [pools["t-shirt"][2].path]
    )
    assert {c: [Path(s.path).stem for s in rows] for c, rows in adults.items()} == {
        "dress": ["1"],
        "t-shirt": ["3"],
    }


def test_add_rows_is_seeded_and_capped(catalogue, tmp_path):
    pools = catalogue_pools(read_catalog(catalogue).samples, {"Tshirts": "t-shirt"}, "articleType")
    names = []
    for run in ("a", "b", "c"):
        assert add_rows(tmp_path / run, pools, per_class=2, seed=0 if run != "c" else 5) == {"t-shirt": 2}
        names.append(sorted(p.name for p in (tmp_path / run / "t-shirt").iterdir()))
    assert names[0] == names[1] and len(names[0]) == 2
    assert add_rows(tmp_path / "a", pools, per_class=None, seed=0) == {"t-shirt": 3}  # a name taken: renamed
    assert len(list((tmp_path / "a" / "t-shirt").iterdir())) == 5


def test_mix_keeps_every_split_and_adds_to_train(photos, catalogue, tmp_path):
    out = tmp_path / "mixed"
    report = mix(
        photos, catalogue, out, {"Dresses": "dress", "Tshirts": "t-shirt"}, where={"gender": ("Men",)}
    )
    assert report["added"] == {"t-shirt": 2} and report["available"] == {"t-shirt": 2}
    assert (
        report["unmapped"] == {"Tops": 1} and report["skipped_rows"] == 2 and report["unmatched"] == []
    )  # a missing image, a short line
    ds = load_dataset(out)
    assert len(ds.split("train")) == 6 and len(ds.split("validation")) == 2 and len(ds.split("test")) == 2
    names = sorted(p.name for p in (out / "train" / "t-shirt").iterdir())
    assert names == ["catalogue-3.jpg", "catalogue-7.jpg", "t-shirt0.png", "t-shirt1.png"]
    assert all(p.is_symlink() for p in out.rglob("*") if p.is_file())
    with pytest.raises(FileExistsError, match="exists"):
        mix(photos, catalogue, out, {"Dresses": "dress"})
    copied = mix(photos, catalogue, tmp_path / "copied", {"Dresses": "dress"}, copy=True, per_class=1, seed=3)
    assert copied["added"] == {"dress": 1}
    assert not any(p.is_symlink() for p in (tmp_path / "copied").rglob("*"))


def test_mix_errors_name_the_problem(photos, catalogue, tmp_path):
    with pytest.raises(ValueError, match=r"onto skirt: not a class of .*\(dress, t-shirt\)"):
        mix(photos, catalogue, tmp_path / "a", {"Skirts": "skirt"})
    with pytest.raises(ValueError, match="--where colour: no such column"):
        mix(photos, catalogue, tmp_path / "b", {"Dresses": "dress"}, where={"colour": ("Red",)})
    with pytest.raises(
        ValueError, match=r"no catalogue row matches .*articleType values: Tshirts, Dresses, Tops"
    ):
        mix(photos, catalogue, tmp_path / "d", {"Tshirt": "t-shirt"})
    with pytest.raises(ValueError, match="per_class"):
        mix(photos, catalogue, tmp_path / "c", {"Dresses": "dress"}, per_class=0)
    assert not any((tmp_path / d).exists() for d in "abcd")  # nothing written before the check


def test_cli(photos, catalogue, tmp_path, capsys):
    out = tmp_path / "mixed"
    args = [
        "data",
        "mix",
        str(photos),
        str(catalogue),
        "--map",
        "Dresses=dress,Tshirts=t-shirt",
        "--out",
        str(out),
    ]
    assert main([*args, "--where", "gender=Women,Men", "--per-class", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["added"] == {"dress": 1, "t-shirt": 1}
    assert (
        main([*args[:-1], str(tmp_path / "again"), "--map", "Dresses=dress,Tshirts=t-shirt,Jeans=dress"]) == 0
    )
    printed = capsys.readouterr().out
    assert "mapped, but no row holds: Jeans" in printed
    held = tmp_path / "held-out.txt"
    held.write_text("# my test rows\n3\n7.jpg\n" + str(catalogue.parent / "images" / "1.jpg") + "\n")
    assert main([*args[:-1], str(tmp_path / "held"), "--exclude", str(held), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)  # by id, by file name, by path
    assert report["added"] == {"dress": 1, "t-shirt": 1} and report["held_out"] == 3
    assert sorted(p.name for p in (tmp_path / "held").rglob("catalogue-*")) == [
        "catalogue-2.jpg",
        "catalogue-4.jpg",
    ]
    assert (
        "5 catalogue images added" in printed and "not mapped: 1 values, most frequent: Tops (1)" in printed
    )
    assert main([*args[:-1], str(tmp_path / "bad"), "--map", "Skirts=skirt"]) == 2
    assert "not a class of" in capsys.readouterr().err
    missing = tmp_path / "no-such-list.txt"
    assert main([*args[:-1], str(tmp_path / "gone"), "--exclude", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "no-such-list.txt" in err and len(err.strip().splitlines()) == 1  # one line, no traceback
    assert not (tmp_path / "gone").exists()


def test_mix_into_a_folder_without_splits(catalogue, tmp_path):
    flat = tmp_path / "flat"
    for cls, colour in COLOUR.items():
        make_image(flat / cls / "a.png", colour, seed=stable_seed("flat", cls))
    report = mix(flat, catalogue, tmp_path / "out", {"Dresses": "dress"})
    assert report["added"] == {"dress": 2}
    assert sorted(p.name for p in (tmp_path / "out" / "dress").iterdir()) == [
        "a.png",
        "catalogue-1.jpg",
        "catalogue-2.jpg",
    ]
    assert {s.split for s in load_dataset(tmp_path / "out", val=0, test=0).samples} == {"train"}


def test_mix_finds_the_training_folder_by_its_name_and_leaves_nothing_half_done(catalogue, tmp_path):
    root = make_colour_folder(tmp_path / "named", COLOUR, {"training": 1, "val": 1})
    out = tmp_path / "out"
    (tmp_path / ".out.partial" / "junk").mkdir(parents=True)  # what an interrupted run left
    mix(root, catalogue, out, {"Dresses": "dress"})
    assert sorted(p.name for p in (out / "training" / "dress").iterdir())[:2] == [
        "catalogue-1.jpg",
        "catalogue-2.jpg",
    ]
    assert sorted(p.name for p in out.iterdir()) == ["training", "val"]
    assert not (tmp_path / ".out.partial").exists()
    with pytest.raises(ValueError, match="inside"):
        mix(root, catalogue, root / "mixed", {"Dresses": "dress"})
