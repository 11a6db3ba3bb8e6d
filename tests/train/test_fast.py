from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import make_image
from vestis.models.checkpoint import load_checkpoint
from vestis.train import TrainConfig, train
from vestis.train.losses import FocalLoss, class_weights, make_loss
from vestis.train.probe import fit_head


def _cfg(data, tmp_path, **kw):
    base = dict(
        data=str(data),
        out=str(tmp_path / "run"),
        backbone="test_tiny",
        epochs=15,
        quiet=True,
        cache_dir=str(tmp_path / "cache"),
        workers=0,
        lr=1e-2,
    )
    return TrainConfig(**{**base, **kw})


def test_fast_train_learns_and_saves(colour_folder, tmp_path):
    summary = train(_cfg(colour_folder, tmp_path))
    run = tmp_path / "run"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["heads"] == {"label": ["blue", "green", "red"]}
    assert cfg["includes_backbone"] is False and cfg["data"]["counts"] == {
        "train": 30,
        "validation": 12,
        "test": 12,
    }
    assert summary["metrics"]["validation"]["label"]["top1"] >= 0.9  # colours are trivially separable
    model, _ = load_checkpoint(run)
    assert model.classes == {"label": ["blue", "green", "red"]}
    log = json.loads((run / "train_log.json").read_text())
    assert {g["type"] for g in log["grid"]} == {"linear", "mlp"}  # head=auto tried both on validation


def test_feature_cache_reused(colour_folder, tmp_path, monkeypatch):
    train(_cfg(colour_folder, tmp_path, head="linear"))
    import vestis.engine.features as features

    def fail(*a, **k):
        raise AssertionError("images decoded again despite the cache")

    monkeypatch.setattr(features, "run_batches", fail)
    train(_cfg(colour_folder, tmp_path, head="linear", out=str(tmp_path / "run2"), loss="focal"))


def test_unreadable_images_skipped_and_reported(colour_folder, tmp_path):
    (colour_folder / "train" / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (colour_folder / "train" / "red" / "empty.jpg").write_bytes(b"")
    summary = train(_cfg(colour_folder, tmp_path, head="linear"))
    skipped = json.loads((tmp_path / "run" / "skipped.json").read_text())
    reasons = {s["item"].rsplit("/", 1)[-1]: s["reason"] for s in skipped}
    assert "empty file" in reasons["empty.jpg"] and "broken.png" in reasons
    assert summary["skipped"] == len(skipped)


def test_unsplit_folder_and_csv_multi_head(tmp_path):
    rows = ["id,colour,shape"]
    for i in range(36):
        c = ["red", "green", "blue"][i % 3]
        make_image(
            tmp_path / "cat" / "images" / f"{i}.jpg",
            {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}[c],
            seed=i,
        )
        shape = "" if i % 5 == 0 else ("round" if i % 2 else "square")  # empty: excluded from that head only
        rows.append(f"{i},{c},{shape}")
    rows.append("999,red,square")  # image missing: counted, not fatal
    (tmp_path / "cat" / "styles.csv").write_text("\n".join(rows) + "\n")
    cfg = _cfg(
        tmp_path / "cat" / "styles.csv",
        tmp_path,
        labels=["colour", "shape"],
        head="linear",
        val=0.25,
        test=0.2,
    )
    summary = train(cfg)
    model, config = load_checkpoint(tmp_path / "run")
    assert set(model.classes) == {"colour", "shape"}
    assert model.classes["shape"] == ["round", "square"]
    assert config["data"]["skipped"] >= 1 and summary["metrics"]["validation"]["colour"]["top1"] >= 0.8


def test_config_rejects_unknown_and_invalid():
    with pytest.raises(ValueError, match="unknown training options"):
        TrainConfig.from_dict({"data": "x", "epochz": 3})
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(data="x", loss="hinge")
    with pytest.raises(ValueError, match="val/test"):
        TrainConfig(data="x", val=0.6, test=0.5)


def test_fit_head_folds_standardisation():
    rng = np.random.default_rng(0)
    X = rng.normal(5.0, 3.0, (60, 1, 4)).astype(np.float32)
    y = (X[:, 0, 0] > 5).astype(int)
    from vestis.models.heads import HeadConfig

    cfg = TrainConfig(data="x", epochs=30, lr=1e-2)
    head, score, _ = fit_head(X[:40], y[:40], X[40:], y[40:], 2, HeadConfig("linear"), cfg, 1.0)
    pred = head(torch.from_numpy(X[40:, 0])).argmax(1).numpy()  # raw, unstandardised features
    assert (pred == y[40:]).mean() == pytest.approx(score) and score >= 0.85


def test_probe_path_is_warm_started_and_lands_where_cold_fits_do():
    from vestis.models.heads import HeadConfig
    from vestis.train.probe import fit_probe

    rng = np.random.default_rng(1)
    X = rng.normal(0.0, 1.0, (300, 16)).astype(np.float32)
    y = (X[:, :3] @ np.array([1.0, -2.0, 0.5]) > 0).astype(int) + (X[:, 3] > 1)
    cfg = TrainConfig(data="x", c=[1.0, 0.1, 10.0])  # fitted in increasing order, whatever the order given
    head, score, c = fit_probe(X[:200], y[:200], X[200:], y[200:], 3, HeadConfig("linear"), cfg)
    cold, cold_score, _ = fit_head(
        X[:200, None], y[:200], X[200:, None], y[200:], 3, HeadConfig("linear"), cfg, c, standardise=False
    )
    assert score == pytest.approx(cold_score, abs=0.01)
    with torch.no_grad():
        warm_p = torch.softmax(head(torch.from_numpy(X[200:])), 1)
        cold_p = torch.softmax(cold(torch.from_numpy(X[200:])), 1)
    assert (warm_p - cold_p).abs().max() < 0.02  # the same convex optimum, reached from another start


def test_losses():
    y = np.array([0, 0, 0, 1])
    w = class_weights(y, 3)
    assert w.tolist() == pytest.approx([4 / 9, 4 / 3, 0.0])
    logits, target = torch.tensor([[2.0, 0.0], [0.0, 3.0]]), torch.tensor([0, 1])
    focal0 = FocalLoss(gamma=0.0)(logits, target)
    assert focal0.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, target).item(), rel=1e-5)
    assert FocalLoss(gamma=2.0)(logits, target) < focal0  # easy examples are down-weighted
    with pytest.raises(ValueError):
        make_loss("hinge", y, 2)


def test_feature_extraction_leaves_the_model_trainable(colour_folder, tmp_path):
    """Fine-tuning extracts probe features with the model it then trains: moving that model to the device must
    not happen in inference mode (on a GPU its parameters became inference tensors that autograd refuses)."""
    from vestis.engine.features import extract_features
    from vestis.models import create_model

    model = create_model("test_tiny", heads={"label": ["a", "b"]}, pretrained=False)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    paths = sorted((colour_folder / "train" / "red").iterdir())[:4]
    feats = extract_features(model, paths, cache=False, progress=False, device=device, workers=0)
    assert feats.ok.all()
    assert not any(p.is_inference() for p in model.parameters())
    loss = model(torch.zeros(2, 3, 32, 32, device=next(model.parameters()).device))["label"].sum()
    loss.backward()  # raised "Inference tensors cannot be saved for backward" on CUDA


def test_input_size_travels_with_the_model(colour_folder, tmp_path):
    import vestis

    train(_cfg(colour_folder, tmp_path, head="linear", input_size=24))
    model, _ = load_checkpoint(tmp_path / "run")
    assert model.preprocess.input_size == 24 and model.preprocess.resize_size == 24  # test_tiny: crop_pct 1
    loaded = vestis.load(tmp_path / "run", runtime="torch")
    assert loaded.preprocess.input_size == 24
    rows = loaded.predict(str(colour_folder / "test"))
    assert rows and all(r["label"] in ("blue", "green", "red") for r in rows if "label" in r)
    with pytest.raises(ValueError, match="input_size"):
        TrainConfig(data="x", input_size=4)
