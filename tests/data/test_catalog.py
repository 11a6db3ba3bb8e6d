"""Tests for the catalogue CSV loader (synthetic files in tmp_path, plus one test on the real data)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from vestis.data.catalog import read_catalog, year_split
from vestis.data.types import DataSet, Sample

HEADER = "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName"
REAL_CSV = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "data"
    / "fashion-product-images-small"
    / "styles.csv"
)


def make(tmp_path: Path, lines: list[str], images=None, encoding: str = "utf-8") -> Path:
    """Write styles.csv (HEADER + lines) and empty images/{id}.jpg for each id in ``images``
    (default: every id that starts a data line)."""
    csv_path = tmp_path / "styles.csv"
    csv_path.write_text("\n".join([HEADER, *lines]) + "\n", encoding=encoding)
    (tmp_path / "images").mkdir(exist_ok=True)
    if images is None:
        images = [ln.split(",")[0] for ln in lines if ln.strip()]
    for ident in images:
        (tmp_path / "images" / f"{ident}.jpg").write_bytes(b"")
    return csv_path


def row(ident, article="Tshirts", season="Summer", year="2012", usage="Casual", name="Blue Tee") -> str:
    return f"{ident},Men,Apparel,Topwear,{article},Blue,{season},{year},{usage},{name}"


def by_id(ds: DataSet) -> dict[str, Sample]:
    return {s.meta["id"]: s for s in ds.samples}


def test_basic_load(tmp_path):
    csv_path = make(tmp_path, [row(1), row(2, article="Shirts")])
    ds = read_catalog(csv_path, labels=("articleType", "season"))
    assert ds.heads == ["articleType", "season"]
    assert [s.path for s in ds.samples] == [tmp_path / "images" / "1.jpg", tmp_path / "images" / "2.jpg"]
    s = ds.samples[0]
    assert s.labels == {"articleType": "Tshirts", "season": "Summer"}
    assert s.split is None
    assert s.meta["productDisplayName"] == "Blue Tee" and "articleType" not in s.meta
    assert ds.skipped == []
    assert ds.classes("articleType") == ["Shirts", "Tshirts"]


def test_extra_unquoted_commas_recovered_into_last_column(tmp_path):
    csv_path = make(tmp_path, [row(1), row(2, name="Puma Men, Blue, Tee"), row(3, name='"Quoted, fine"')])
    ds = read_catalog(csv_path)
    assert len(ds.samples) == 3 and ds.skipped == []
    assert by_id(ds)["2"].meta["productDisplayName"] == "Puma Men, Blue, Tee"
    assert by_id(ds)["3"].meta["productDisplayName"] == "Quoted, fine"
    recovered = [n for n in ds.notes if n.startswith("recovered")]
    # only the unquoted line counts (the quoted one is ordinary CSV); it starts on line 3
    assert recovered == ["recovered 1 malformed lines (extra commas joined into productDisplayName): lines 3"]


def test_short_line_skipped_and_listed(tmp_path):
    csv_path = make(tmp_path, [row(1), "2,Men,Apparel,Topwear", row(3)])
    ds = read_catalog(csv_path)
    assert sorted(by_id(ds)) == ["1", "3"]
    assert len(ds.skipped) == 1
    assert ds.skipped[0].item == "line 3"
    assert "too few fields" in ds.skipped[0].reason and "found 4" in ds.skipped[0].reason
    assert "1 rows skipped: too few fields" in ds.notes


def test_blank_lines_ignored_and_line_numbers_stay_physical(tmp_path):
    csv_path = make(tmp_path, ["", row(1), "   ", "", "9,Men"])
    ds = read_catalog(csv_path)
    assert len(ds.samples) == 1
    assert [s.item for s in ds.skipped] == ["line 6"]


def test_missing_image_counted(tmp_path):
    csv_path = make(tmp_path, [row(1), row(2), row(3)], images=["1", "3"])
    ds = read_catalog(csv_path)
    assert sorted(by_id(ds)) == ["1", "3"]
    assert [(s.item, s.reason) for s in ds.skipped] == [(str(tmp_path / "images" / "2.jpg"), "image missing")]
    assert "1 rows skipped: image missing" in ds.notes
    # without the file check the row is kept
    assert len(read_catalog(csv_path, check_files=False).samples) == 3


def test_missing_image_directory_reported(tmp_path):
    csv_path = make(tmp_path, [row(1)])
    ds = read_catalog(csv_path, images=tmp_path / "nope")
    assert ds.samples == [] and ds.skipped[0].reason == "image missing"
    assert any("does not exist" in n for n in ds.notes)


def test_empty_and_na_labels_become_none_but_row_is_kept(tmp_path):
    csv_path = make(
        tmp_path,
        [row(1, season=""), row(2, season="  ", usage="NA"), row(3, usage="N/A"), row(4, season="nan")],
    )
    ds = read_catalog(csv_path, labels=("articleType", "season", "usage"))
    s = by_id(ds)
    assert len(ds.samples) == 4
    assert [s[i].labels["season"] for i in "1234"] == [None, None, "Summer", None]
    assert [s[i].labels["usage"] for i in "1234"] == ["Casual", None, None, "Casual"]
    assert all(x.labels["articleType"] == "Tshirts" for x in ds.samples)
    assert "3 rows have no value for 'season'" in ds.notes
    assert "2 rows have no value for 'usage'" in ds.notes
    assert ds.classes("season") == ["Summer"]


def test_custom_na_values_keep_na_as_a_class_but_empty_is_still_missing(tmp_path):
    csv_path = make(tmp_path, [row(1, usage="NA"), row(2, usage=""), row(3, usage="unknown")])
    ds = read_catalog(csv_path, labels=("usage",), na_values=("unknown",))
    assert [by_id(ds)[i].labels["usage"] for i in "123"] == ["NA", None, None]


def test_missing_values_in_skipped_rows_reported_separately(tmp_path):
    csv_path = make(tmp_path, [row(1, season=""), row(2, season="")], images=["1"])
    ds = read_catalog(csv_path, labels=("season",))
    assert "1 rows have no value for 'season' (plus 1 such rows among the skipped rows)" in ds.notes


def test_duplicate_ids_keep_first(tmp_path):
    csv_path = make(tmp_path, [row(1, article="First"), row(2), row(1, article="Second"), row(1)])
    ds = read_catalog(csv_path)
    assert len(ds.samples) == 2
    assert by_id(ds)["1"].labels["articleType"] == "First"
    assert [s.item for s in ds.skipped] == ["line 4", "line 5"]
    assert all("duplicate id '1' (first on line 2)" in s.reason for s in ds.skipped)
    assert "2 rows skipped: duplicate id" in ds.notes


def test_empty_id_skipped(tmp_path):
    csv_path = make(tmp_path, [row(1), row("")], images=["1"])
    ds = read_catalog(csv_path)
    assert len(ds.samples) == 1 and ds.skipped[0].item == "line 3" and "empty id" in ds.skipped[0].reason


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"labels": ("articleType", "colour")}, "'colour'"),
        ({"id_column": "productId"}, "'productId'"),
        ({"path_column": "filename"}, "'filename'"),
        ({"pattern": "{sku}.jpg"}, "'sku'"),
    ],
)
def test_unknown_columns_raise_listing_available(tmp_path, kwargs, bad):
    csv_path = make(tmp_path, [row(1)])
    with pytest.raises(ValueError, match="available columns") as err:
        read_catalog(csv_path, **kwargs)
    assert bad in str(err.value)
    assert "baseColour" in str(err.value) and "productDisplayName" in str(err.value)


def test_path_column_relative_absolute_and_empty(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "abs.png").write_bytes(b"")
    (tmp_path / "pics" / "sub").mkdir(parents=True)
    (tmp_path / "pics" / "a.png").write_bytes(b"")
    (tmp_path / "pics" / "sub" / "b.png").write_bytes(b"")
    csv_path = tmp_path / "list.csv"
    csv_path.write_text(
        f"id,file,label\n1,a.png,x\n2,sub/b.png,y\n3,{elsewhere / 'abs.png'},z\n4,,w\n5,gone.png,v\n"
    )
    ds = read_catalog(csv_path, images=tmp_path / "pics", labels=("label",), path_column="file")
    assert [s.path for s in ds.samples] == [
        tmp_path / "pics" / "a.png",
        tmp_path / "pics" / "sub" / "b.png",
        elsewhere / "abs.png",
    ]
    assert [(s.item, s.reason.split(" (")[0]) for s in ds.skipped] == [
        ("line 5", "no image path"),
        (str(tmp_path / "pics" / "gone.png"), "image missing"),
    ]


def test_pattern_may_use_any_column(tmp_path):
    csv_path = make(tmp_path, [row(1), row(2)], images=[])
    (tmp_path / "images" / "Men").mkdir()
    (tmp_path / "images" / "Men" / "1-Tshirts.jpg").write_bytes(b"")
    ds = read_catalog(csv_path, pattern="{gender}/{id}-{articleType}.jpg")
    assert [s.path for s in ds.samples] == [tmp_path / "images" / "Men" / "1-Tshirts.jpg"]
    assert ds.skipped[0].item == str(tmp_path / "images" / "Men" / "2-Tshirts.jpg")


def test_default_image_dir_is_csv_folder_without_images_subdir(tmp_path):
    csv_path = tmp_path / "c.csv"
    csv_path.write_text("id,articleType\n7,Watches\n")
    (tmp_path / "7.jpg").write_bytes(b"")
    ds = read_catalog(csv_path)
    assert [s.path for s in ds.samples] == [tmp_path / "7.jpg"]


def test_bom_header(tmp_path):
    csv_path = make(tmp_path, [row(1)], encoding="utf-8-sig")
    assert csv_path.read_bytes().startswith(b"\xef\xbb\xbf")
    ds = read_catalog(csv_path)
    assert len(ds.samples) == 1 and ds.samples[0].meta["id"] == "1"


def test_invalid_utf8_is_replaced_and_reported(tmp_path):
    csv_path = tmp_path / "styles.csv"
    (tmp_path / "images").mkdir()
    for i in "12":
        (tmp_path / "images" / f"{i}.jpg").write_bytes(b"")
    csv_path.write_bytes((HEADER + "\n" + row(1) + "\n").encode() + row(2, name="Caf").encode() + b"\xe9\n")
    ds = read_catalog(csv_path)
    assert len(ds.samples) == 2
    assert by_id(ds)["2"].meta["productDisplayName"] == "Caf\ufffd"
    assert any("not valid UTF-8" in n for n in ds.notes)


@pytest.mark.parametrize(
    ("bad_row", "value"),
    [
        (row(3, name='"Blue Tee'), ("productDisplayName", "Blue Tee")),  # quote opens the last field
        (row(3, usage='"Casual'), ("usage", "Casual")),  # ... a middle field: the record has too few fields
        (row(3, name='Blue Tee"'), None),  # a quote inside an unquoted field is plain text in CSV
    ],
)
def test_stray_quote_does_not_swallow_the_rest_of_the_file(tmp_path, bad_row, value):
    """One unbalanced quote used to run every later line into one field: 36 rows read as 3, one skipped."""
    lines = [row(i) if i != 3 else bad_row for i in range(1, 37)]
    ds = read_catalog(make(tmp_path, lines), labels=("articleType", "usage"))
    assert sorted(int(i) for i in by_id(ds)) == list(range(1, 37)) and ds.skipped == []
    assert ds.notes[0].endswith("kept 36 samples, skipped 0")
    assert all(s.meta["productDisplayName"].strip('"') == "Blue Tee" for s in ds.samples)
    if value:
        column, expected = value
        s3 = by_id(ds)["3"]
        assert {**s3.meta, **s3.labels}[column] == expected  # the stray quote is dropped, the value kept
        note = next(n for n in ds.notes if "stray quote" in n)
        assert "unbalanced quotes on lines 4)" in note and "lines 4, 5, 6" in note  # line 4 = data row 3
        assert all(s.meta["id"] != "4" or s.labels["articleType"] == "Tshirts" for s in ds.samples)


def test_stray_quote_closed_by_a_later_quote_recovers_every_line(tmp_path):
    lines = [row(i) for i in range(1, 37)]
    lines[2] = row(3, usage='"Casual')
    lines[19] = row(20, usage='Cas"ual')  # closes the stray quote (non-strict CSV) 17 lines later
    ds = read_catalog(make(tmp_path, lines), labels=("usage",))
    assert len(ds.samples) == 36 and ds.skipped == []
    assert by_id(ds)["20"].labels["usage"] == 'Cas"ual' and by_id(ds)["21"].labels["usage"] == "Casual"


def test_stray_quote_line_that_still_does_not_fit_is_skipped_with_its_number(tmp_path):
    lines = [row(i) for i in range(1, 37)]
    lines[9] = '10,Men,"Apparel'  # a short line with an unbalanced quote
    ds = read_catalog(make(tmp_path, lines))
    assert len(ds.samples) == 35
    assert [(s.item, s.reason.split(":")[0]) for s in ds.skipped] == [("line 11", "too few fields")]


def test_quoted_multiline_fields_still_work(tmp_path):
    lines = [row(1), row(2, name='"Blue Tee, cotton\nsecond line, of the description"'), row(3)]
    ds = read_catalog(make(tmp_path, lines, images=["1", "2", "3"]))
    assert len(ds.samples) == 3 and ds.skipped == []
    assert by_id(ds)["2"].meta["productDisplayName"] == "Blue Tee, cotton\nsecond line, of the description"
    assert not any("run together" in n for n in ds.notes)
    assert any("span several lines" in n for n in ds.notes)


def test_year_split(tmp_path):
    csv_path = make(
        tmp_path, [row(1, year="2012"), row(2, year="2011"), row(3, year=""), row(4, year="20x1")]
    )
    ds = read_catalog(csv_path)
    out = year_split(ds)
    assert {s.meta["id"]: s.split for s in out.samples} == {"1": "train", "2": "test"}
    assert [s.split for s in out.split("train")] == ["train"]
    assert len(out.skipped) == 2 and all("year" in s.reason for s in out.skipped)
    assert {s.item for s in out.skipped} == {str(tmp_path / "images" / f"{i}.jpg") for i in "34"}
    assert all(s.split is None for s in ds.samples)  # input untouched
    assert out.heads == ds.heads
    # a year used as a label head works too
    out2 = year_split(read_catalog(csv_path, labels=("year",)))
    assert {s.meta["id"]: s.split for s in out2.samples} == {"1": "train", "2": "test"}
    with pytest.raises(ValueError):
        year_split(ds, rule="odd")


@pytest.mark.integration
def test_real_styles_csv():
    if not REAL_CSV.is_file():
        pytest.skip(f"real catalogue not found at {REAL_CSV}")
    t0 = time.perf_counter()
    ds = read_catalog(REAL_CSV, labels=("articleType", "season", "usage"))
    elapsed = time.perf_counter() - t0
    reasons = Counter(s.reason for s in ds.skipped)
    print(f"\nreal styles.csv: {len(ds.samples)} samples, skipped {dict(reasons)}, {elapsed:.2f}s")
    print("\n".join(ds.notes))
    assert reasons == {"image missing": 374}
    assert len(ds.samples) == 44_072
    # This copy of styles.csv has 21 rows with an empty 'season', but all 21 are among the 374 rows
    # without an image, so none of the kept samples lacks a season.
    assert sum(s.labels["season"] is None for s in ds.samples) == 0
    assert "0 rows have no value for 'season' (plus 21 such rows among the skipped rows)" in ds.notes
    unchecked = read_catalog(REAL_CSV, labels=("season",), check_files=False)
    assert len(unchecked.samples) == 44_446
    assert sum(s.labels["season"] is None for s in unchecked.samples) == 21
