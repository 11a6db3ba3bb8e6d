import json

import numpy as np
import pytest
from PIL import Image

from vestis.data.types import Skipped
from vestis.evaluate import compute_metrics, write_report
from vestis.evaluate.report import plot_confusion, plot_gallery


def is_png(path):
    with Image.open(path) as im:
        return im.format == "PNG" and im.size[0] > 0


@pytest.fixture
def images(tmp_path):
    paths = []
    for i, colour in enumerate(["red", "green", "blue", "yellow"]):
        p = tmp_path / "img" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.new("RGB" if i % 2 else "L", (12, 20), colour if i % 2 else 128).save(p)
        paths.append(str(p))
    bad = tmp_path / "img" / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    return paths + [str(bad), str(tmp_path / "img" / "missing.jpg")]


def test_gallery_survives_bad_images(images, tmp_path):
    items = [{"path": p, "true": "shirt", "pred": "t-shirt", "score": 0.9} for p in images]
    out = plot_gallery(items, tmp_path / "g" / "gallery.png", title="errors", cols=3)
    assert out.exists() and is_png(out)
    assert is_png(plot_gallery([], tmp_path / "empty.png"))


def test_confusion_plot_small_and_many_classes(tmp_path):
    assert is_png(plot_confusion([[3, 1], [0, 0]], ["x", "y"], tmp_path / "c2.png", title="t"))
    c = 61  # above the annotation cutoff
    cm = (np.eye(c, dtype=int) * 5 + 1).tolist()
    assert is_png(plot_confusion(cm, [f"class_{i}" for i in range(c)], tmp_path / "c61.png", normalize=False))
    with pytest.raises(ValueError):
        plot_confusion([[1, 2]], ["x", "y"], tmp_path / "bad.png")


def make_results(images):
    y = np.array([0, 1, 2, 0, 1, 2])
    probs = np.array(
        [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.1, 0.9, 0.0], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]
    )
    names = ["shirt", "jeans", "watch|strap"]
    colour_y, colour_p = np.array([0, 1, 1, 0, 1, 0]), np.tile([0.7, 0.3], (6, 1))
    return {
        "articleType": {
            "metrics": compute_metrics(y, probs, names),
            "class_names": names,
            "paths": images,
            "y_true": y,
            "probs": probs,
        },
        "base colour": {
            "class_names": ["blue", "red"],
            "paths": images,
            "y_true": colour_y,
            "probs": colour_p,
        },
    }


def test_write_report(images, tmp_path):
    out = tmp_path / "report"
    skipped = [Skipped("broken.jpg", "cannot decode image"), {"item": "row 7", "reason": "missing label"}]
    res = write_report(out, make_results(images), "test", skipped=skipped, extra={"checkpoint": "best.pt"})

    for name in [
        "metrics.json",
        "report.md",
        "confusion_articleType.png",
        "errors_articleType.png",
        "confusion_base_colour.png",
        "errors_base_colour.png",
    ]:
        assert (out / name).exists(), name
    assert is_png(out / "errors_articleType.png")

    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == res
    assert res["split"] == "test" and res["checkpoint"] == "best.pt"
    assert res["skipped"] == [
        {"item": "broken.jpg", "reason": "cannot decode image"},
        {"item": "row 7", "reason": "missing label"},
    ]
    assert set(res["heads"]) == {"articleType", "base colour"}
    assert res["heads"]["articleType"]["top1"] == pytest.approx(4 / 6)
    assert res["heads"]["base colour"]["n"] == 6  # computed when "metrics" is not given

    md = (out / "report.md").read_text()
    for needle in [
        "test",
        "broken.jpg",
        "cannot decode image",
        "missing label",
        "shirt",
        "jeans",
        "watch\\|strap",
        "](confusion_articleType.png)",
        "](errors_articleType.png)",
        "](errors_base_colour.png)",
        "macro avg",
    ]:
        assert needle in md, needle
    # most confidently wrong for articleType: index 3 (0.9, shirt -> jeans) before index 4 (0.6)
    assert md.index(images[3]) < md.index(images[4])
    assert "| 1 | " + images[3] + " | shirt | jeans | 0.9000 |" in md


def test_write_report_rejects_bad_input(images, tmp_path):
    results = make_results(images)
    with pytest.raises(ValueError, match="reserved"):
        write_report(tmp_path, results, "test", extra={"split": "oops"})
    results["articleType"]["paths"] = images[:2]
    with pytest.raises(ValueError, match="paths"):
        write_report(tmp_path, results, "test")


def test_report_shows_a_class_without_samples_as_dashes_and_null(images, tmp_path):
    results = {
        "articleType": {
            "class_names": ["shirt", "jeans", "never"],
            "paths": images[:4],
            "y_true": np.array([0, 0, 1, 1]),
            "probs": np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1]]),
        }
    }
    res = write_report(tmp_path, results, "validation")
    never = res["heads"]["articleType"]["per_class"][2]
    assert never["support"] == 0 and never["accuracy"] is None
    assert '"accuracy": null' in (tmp_path / "metrics.json").read_text()
    md = (tmp_path / "report.md").read_text()
    assert "| never | 0 | - | - | - | - |" in md
