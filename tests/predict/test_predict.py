"""Prediction from files, folders and globs: the JSON contract, order, bad inputs, views, ensembles."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from tests.predict.helpers import HEADS, R, check_error, check_prediction, png_bytes, run
from vestis.models import create_model
from vestis.predict import PredictConfig, expand_inputs, predict_images


def test_result_shapes(model, files):
    ok, bad = run(model, [files["good0"], files["corrupt"]], top_k=2)
    check_prediction(ok, top_k=2)
    assert ok["input"] == str(files["good0"])
    check_error(bad)
    assert bad["input"] == str(files["corrupt"])


def test_top_k_is_capped_per_head(model, files):
    (r,) = run(model, [files["good1"]], top_k=10)
    check_prediction(r, top_k=10)
    assert [len(v) for v in r["predictions"].values()] == [3, 2]
    (r,) = run(model, [files["good1"]], top_k=1)
    assert [len(v) for v in r["predictions"].values()] == [1, 1]


def test_expand_inputs(files, tmp_path):
    got = expand_inputs(
        [
            str(files["folder"]),
            str(files["empty_dir"]),
            str(tmp_path / "good*.png"),
            str(tmp_path / "*.nothing"),
            str(tmp_path / "missing.png"),
            "https://example.com/x.jpg",
            str(files["text"]),
        ]
    )
    assert got == [
        (str(files["folder"] / "b.png"), None),
        (str(files["folder"] / "sub" / "a.jpg"), None),
        (str(files["empty_dir"]), "no images in this folder"),
        *[(str(files[f"good{n}"]), None) for n in range(4)],
        (str(tmp_path / "*.nothing"), "no file matches this pattern"),
        (str(tmp_path / "missing.png"), "file not found"),
        ("https://example.com/x.jpg", None),
        (str(files["text"]), None),  # named explicitly: tried, and fails as an image later
    ]


def test_order_kept_and_bad_inputs_never_stop_the_batch(model, files, tmp_path):
    inputs = [
        files["good0"],
        files["corrupt"],
        files["empty"],
        files["good1"],
        files["text"],
        tmp_path / "missing.png",
        files["folder"],
        files["empty_dir"],
        tmp_path / "good[23].png",
        tmp_path / "*.nothing",
        files["good0"],
    ]
    results = run(model, inputs, batch_size=2, top_k=3)  # errors land inside several batches
    expected_inputs = [
        str(files["good0"]),
        str(files["corrupt"]),
        str(files["empty"]),
        str(files["good1"]),
        str(files["text"]),
        str(tmp_path / "missing.png"),
        str(files["folder"] / "b.png"),
        str(files["folder"] / "sub" / "a.jpg"),
        str(files["empty_dir"]),
        str(files["good2"]),
        str(files["good3"]),
        str(tmp_path / "*.nothing"),
        str(files["good0"]),
    ]
    assert [r["input"] for r in results] == expected_inputs
    errors = {r["input"]: r["error"] for r in results if "error" in r}
    assert set(errors) == {str(files[k]) for k in ("corrupt", "empty", "text", "empty_dir")} | {
        str(tmp_path / "missing.png"),
        str(tmp_path / "*.nothing"),
    }
    assert errors[str(files["empty"])] == "empty file"
    assert errors[str(files["text"])].startswith("not an image")
    assert errors[str(tmp_path / "missing.png")] == "file not found"
    for r in results:
        check_prediction(r, 3) if "predictions" in r else check_error(r)
    # each prediction belongs to its own input: equal to predicting that file alone
    for r in results:
        if "predictions" in r:
            assert run(model, [r["input"]])[0] == r
    assert results[0] == results[-1]
    assert results[0]["predictions"] != results[3]["predictions"]  # distinct images are told apart


def test_worker_processes_keep_order(model, files):
    inputs = [files["good3"], files["empty"], files["good1"], files["good2"], files["corrupt"]]
    serial = run(model, inputs, batch_size=2)
    assert run(model, inputs, batch_size=2, workers=1) == serial


def test_tta_keeps_the_shape_and_averages_the_flip(model, files, tmp_path):
    plain = run(model, [files["good0"], files["corrupt"]])
    tta = run(model, [files["good0"], files["corrupt"]], tta=True)
    check_prediction(tta[0], 3)
    check_error(tta[1])
    assert [set(r) for r in tta] == [set(r) for r in plain]
    flipped = tmp_path / "flipped.png"
    Image.open(files["good0"]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped)
    (mirror,) = run(model, [flipped])

    def probs(r):
        return {(h, p["label"]): p["score"] for h, ps in r["predictions"].items() for p in ps}

    a, b, t = probs(plain[0]), probs(mirror), probs(tta[0])
    assert t != a
    for key in t:
        assert t[key] == pytest.approx((a[key] + b[key]) / 2, abs=1e-4)


def test_predict_images_in_memory(model, files):
    data = files["good0"].read_bytes()
    rgba = Image.open(io.BytesIO(png_bytes(5, mode="RGBA")))
    out = predict_images(R(model), [data, b"garbage", Image.open(io.BytesIO(data)), rgba, b""], top_k=2)
    assert [set(r) for r in out] == [{"predictions"}, {"error"}, {"predictions"}, {"predictions"}, {"error"}]
    for r in (out[0], out[2], out[3]):
        check_prediction({"input": "", **r}, top_k=2)
    assert out[0] == out[2]  # bytes and the decoded image give the same answer
    assert out[0]["predictions"] == run(model, [files["good0"]], top_k=2)[0]["predictions"]
    assert out[4] == {"error": "empty file"}
    assert [set(r) for r in predict_images(R(model), [data], tta=True)] == [{"predictions"}]
    assert predict_images(R(model), []) == []


# --- URLs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"top_k": 0},
        {"batch_size": 0},
        {"timeout": 0},
        {"timeout": -1.0},
        {"max_bytes": 0},
        {"workers": -1},
    ],
)
def test_config_validation(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        PredictConfig(**kw)
    PredictConfig()  # defaults are valid


def test_ensemble_averages_member_probabilities(model, files):
    from vestis.models import Preprocess
    from vestis.models.ensemble import Ensemble

    torch.manual_seed(1)
    other = create_model("test_tiny", heads=HEADS).eval()
    other.preprocess = Preprocess(input_size=40, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=1.0)
    ens = Ensemble([model, other]).eval()
    assert ens.classes == HEADS
    inputs = [files["good0"], files["corrupt"], files["good1"]]
    out = run(ens, inputs, top_k=3)
    check_prediction(out[0], 3)
    check_error(out[1])
    check_prediction(out[2], 3)

    def probs(r):
        return {(h, p["label"]): p["score"] for h, ps in r["predictions"].items() for p in ps}

    for i in (0, 2):
        a, b, e = (probs(run(m, [inputs[i]], top_k=3)[0]) for m in (model, other, ens))
        assert a != b
        for key in e:
            assert e[key] == pytest.approx((a[key] + b[key]) / 2, abs=2e-6)
    assert run(ens, inputs, top_k=3, workers=1, batch_size=2) == out  # worker processes, several batches
    assert run(ens, inputs, top_k=3, tta=True)[0] != out[0]
    mem = predict_images(R(ens), [files["good0"].read_bytes(), b"x"], top_k=3)
    assert mem[0]["predictions"] == out[0]["predictions"] and set(mem[1]) == {"error"}

    with pytest.raises(ValueError, match="heads or classes differ"):
        Ensemble([model, create_model("test_tiny", heads={"label": ["a", "b"]})])
    with pytest.raises(ValueError, match="at least two"):
        Ensemble([model])
